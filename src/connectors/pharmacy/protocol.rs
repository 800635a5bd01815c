//! Prescriptions, pure: the FHIR MedicationRequest / MedicationDispense an item carries
//! (mapped from RDE^O11 / RDS^O13, or polled) read into a prescription's state, the order in
//! which states may follow each other, and the pickup estimate; the issues the pharmacy or
//! EHR detected (DetectedIssue, an RDE's alert segments per the configured rules) and the
//! allergies (AllergyIntolerance) a prescription's codes are matched against. No I/O, no
//! clock.

use super::config::AlertRule;
use crate::connectors::hl7v2::mapping::IAM_SYSTEM;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a prescription is. Ordered by progress: a state never goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RxState {
    /// Ordered (`MedicationRequest` active; RDE with ORC-1 `NW`).
    Ordered,
    /// The pharmacy is preparing it (`MedicationDispense` `preparation`; ORC-5 `IP`).
    InPreparation,
    /// Ready for pickup (`in-progress`; an RDS without an order status).
    Ready,
    /// Picked up (`completed`; ORC-5 `CM`).
    PickedUp,
    /// Cancelled or stopped at any point.
    Cancelled,
}

impl RxState {
    pub fn as_str(self) -> &'static str {
        match self {
            RxState::Ordered => "ordered",
            RxState::InPreparation => "in_preparation",
            RxState::Ready => "ready",
            RxState::PickedUp => "picked_up",
            RxState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<RxState> {
        [
            RxState::Ordered,
            RxState::InPreparation,
            RxState::Ready,
            RxState::PickedUp,
            RxState::Cancelled,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }

    /// Whether a prescription in `self` moves to `to`: forward only, and nothing after it was
    /// picked up or cancelled (a late or repeated message changes nothing).
    pub fn moves_to(self, to: RxState) -> bool {
        !matches!(self, RxState::PickedUp | RxState::Cancelled) && to > self
    }
}

/// One prescription update read from a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxUpdate {
    /// The order id (placer's ORC-2, else filler's ORC-3).
    pub order: String,
    /// The patient, as entries carry it.
    pub patient_ref: Option<String>,
    /// The EHR's Patient id (polled resources).
    pub patient_id: Option<String>,
    pub state: RxState,
    /// The pharmacy's estimate of when it is ready (`whenPrepared`), as sent.
    pub ready_estimate: Option<String>,
    /// The medication's codes (a request's: what allergies are matched against).
    pub codes: Vec<Code>,
}

/// A coded concept's coding: the system when sent, and the code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Code {
    pub system: Option<String>,
    pub code: String,
}

impl Code {
    /// The same code, in the same system when both name one: exact matches only, as no
    /// open terminology maps drugs to allergy classes the gateway could trust.
    pub fn matches(&self, other: &Code) -> bool {
        self.code == other.code
            && match (&self.system, &other.system) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// The codings of a CodeableConcept that carry a code.
fn codes(concept: &Value) -> Vec<Code> {
    concept["coding"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some(Code {
                system: c["system"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
                code: c["code"].as_str().filter(|s| !s.is_empty())?.to_string(),
            })
        })
        .collect()
}

/// The EHR's Patient id a reference names (`Patient/<id>`).
fn patient_id(reference: &Value) -> Option<String> {
    reference["reference"]
        .as_str()
        .and_then(|s| s.strip_prefix("Patient/"))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The prescription updates among `resources`; one without an order id or a patient, or with
/// a status that says nothing about its progress (on hold, unknown), is left out.
pub fn updates(resources: &[Value]) -> Vec<RxUpdate> {
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    resources
        .iter()
        .filter_map(|r| {
            let status = r["status"].as_str();
            let state = match (r["resourceType"].as_str()?, status) {
                ("MedicationRequest", Some("active" | "draft") | None) => RxState::Ordered,
                ("MedicationDispense", Some("preparation")) => RxState::InPreparation,
                ("MedicationDispense", Some("in-progress") | None) => RxState::Ready,
                ("MedicationDispense", Some("completed")) => RxState::PickedUp,
                (
                    "MedicationRequest" | "MedicationDispense",
                    Some("cancelled" | "stopped" | "declined" | "entered-in-error"),
                ) => RxState::Cancelled,
                _ => return None,
            };
            // A polled request is known by its reference, which its dispenses name as their
            // authorizing prescription; a mapped HL7 one (no id) by its order number, which
            // its RDS carries too.
            let identifier = || {
                r["identifier"]
                    .as_array()?
                    .iter()
                    .find_map(|i| text(&i["value"]))
            };
            let order = match r["resourceType"].as_str() {
                Some("MedicationRequest") => text(&r["id"])
                    .map(|id| format!("MedicationRequest/{id}"))
                    .or_else(identifier),
                _ => text(&r["authorizingPrescription"][0]["reference"]).or_else(identifier),
            }?;
            let patient_ref = text(&r["subject"]["identifier"]["value"]);
            let patient_id = patient_id(&r["subject"]);
            if patient_ref.is_none() && patient_id.is_none() {
                return None;
            }
            Some(RxUpdate {
                order,
                patient_ref,
                patient_id,
                state,
                ready_estimate: text(&r["whenPrepared"]),
                codes: codes(&r["medicationCodeableConcept"]),
            })
        })
        .collect()
}

/// An issue the pharmacy or EHR detected for a patient (a FHIR DetectedIssue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// `DetectedIssue/<id>`: its versions raise one alert.
    pub origin: String,
    pub patient_id: String,
    /// The issue's type (`DRG` drug interaction, `ALGY` allergy, ...), never its text.
    pub code: String,
    /// `severity:high`, or `detected` without one.
    pub reason: String,
}

/// The standing DetectedIssues among `resources` with a patient; a cancelled or erroneous one
/// is left out.
pub fn issues(resources: &[Value]) -> Vec<Issue> {
    resources
        .iter()
        .filter(|r| r["resourceType"] == "DetectedIssue")
        .filter(|r| !matches!(r["status"].as_str(), Some("cancelled" | "entered-in-error")))
        .filter_map(|r| {
            let id = r["id"].as_str().filter(|s| !s.is_empty())?;
            Some(Issue {
                origin: format!("DetectedIssue/{id}"),
                patient_id: patient_id(&r["patient"])?,
                code: codes(&r["code"])
                    .into_iter()
                    .next()
                    .map(|c| c.code)
                    .unwrap_or_default(),
                reason: match r["severity"].as_str() {
                    Some(s) => format!("severity:{s}"),
                    None => "detected".into(),
                },
            })
        })
        .collect()
}

/// Who an allergy belongs to: the EHR's Patient (FHIR), or the identifier an HL7 v2 message
/// names the patient by (PID-3), as queue entries keep it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Patient {
    Id(String),
    Ref(String),
}

impl Patient {
    /// As the allergy table keeps it: a FHIR id as it is, an identifier after `ref:`, which no
    /// FHIR id can contain.
    pub fn key(&self) -> String {
        match self {
            Patient::Id(id) => id.clone(),
            Patient::Ref(identifier) => format!("ref:{identifier}"),
        }
    }
}

/// A patient's allergy or intolerance, as its codes (never its text or reactions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allergy {
    /// `AllergyIntolerance/<id>`, or for an HL7 v2 AL1 (which has no id)
    /// `AL1/<patient identifier>/<system>|<code>`, or for an IAM
    /// `IAM/<patient identifier>/<IAM-7, or system|code>`.
    pub origin: String,
    pub patient: Patient,
    /// Whether it is to be matched: clinically active and not refuted.
    pub active: bool,
    pub codes: Vec<Code>,
}

impl Allergy {
    /// Read from an HL7 v2 message, whose AL1s are the patient's whole list.
    pub fn from_v2(&self) -> bool {
        self.origin.starts_with(V2_ORIGIN)
    }
}

/// The origin prefix of the allergies an HL7 v2 message lists.
pub const V2_ORIGIN: &str = "AL1/";

/// The origin prefix of the allergies HL7 v2 IAM segments add, change or delete one by one.
const IAM_ORIGIN: &str = "IAM/";

/// The AllergyIntolerances among `resources` with a patient, and an id or (mapped from an
/// AL1) a code.
pub fn allergies(resources: &[Value]) -> Vec<Allergy> {
    resources
        .iter()
        .filter(|r| r["resourceType"] == "AllergyIntolerance")
        .filter_map(|r| {
            let codes = codes(&r["code"]);
            let (origin, patient) = match r["id"].as_str().filter(|s| !s.is_empty()) {
                Some(id) => (
                    format!("AllergyIntolerance/{id}"),
                    Patient::Id(patient_id(&r["patient"])?),
                ),
                None => {
                    let identifier = r["patient"]["identifier"]["value"]
                        .as_str()
                        .filter(|s| !s.is_empty())?;
                    let first = codes.first()?;
                    let system = first.system.as_deref().unwrap_or_default();
                    let by_code = format!("{system}|{}", first.code);
                    // An IAM names one allergy of the list, by its unique identifier when the
                    // sender gives one; an AL1 is one line of the whole list.
                    let origin = if r["identifier"][0]["system"] == IAM_SYSTEM {
                        let id = r["identifier"][0]["value"]
                            .as_str()
                            .filter(|s| !s.is_empty());
                        format!("{IAM_ORIGIN}{identifier}/{}", id.unwrap_or(&by_code))
                    } else {
                        format!("{V2_ORIGIN}{identifier}/{by_code}")
                    };
                    (origin, Patient::Ref(identifier.to_string()))
                }
            };
            let status = |key: &str| self::codes(&r[key]).into_iter().next().map(|c| c.code);
            // R4 (ait-1): a clinical status is present unless the allergy is entered in error;
            // an absent one is not taken as active.
            let active = status("clinicalStatus").as_deref() == Some("active")
                && !matches!(
                    status("verificationStatus").as_deref(),
                    Some("refuted" | "entered-in-error")
                );
            Some(Allergy {
                origin,
                patient,
                active,
                codes,
            })
        })
        .collect()
}

/// The first of `medication`'s codes one of `allergy` matches.
pub fn allergic<'a>(medication: &'a [Code], allergy: &[Code]) -> Option<&'a Code> {
    medication
        .iter()
        .find(|m| allergy.iter().any(|a| a.matches(m)))
}

/// The first alert rule an HL7 v2 message matches, as the alert's reason (`hl7:ZAL-2`): a
/// segment of the rule's id whose field holds its text (any non-empty value when it has none).
/// The field's text itself goes nowhere.
pub fn rule_hit(frame: &[u8], rules: &[AlertRule]) -> Option<String> {
    let text = std::str::from_utf8(frame).ok()?;
    let separator = text.strip_prefix("MSH")?.chars().next()?;
    let segments: Vec<Vec<&str>> = text
        .split(['\r', '\n'])
        .map(|s| s.split(separator).collect())
        .collect();
    rules.iter().find_map(|rule| {
        let wanted = rule.matches.to_lowercase();
        segments
            .iter()
            .filter(|s| s.first() == Some(&rule.segment.as_str()))
            .filter_map(|s| s.get(rule.field))
            .any(|v| !v.is_empty() && v.to_lowercase().contains(&wanted))
            .then(|| format!("hl7:{}-{}", rule.segment, rule.field))
    })
}

/// When a ready prescription may be picked up, in Unix ms: the pharmacy's estimate when it
/// sent one in the future, else after the `waiting_before` prescriptions ready before it, at
/// `minutes_per` minutes each.
pub fn pickup_at(estimate_ms: Option<i64>, waiting_before: u32, minutes_per: u32, now: i64) -> i64 {
    match estimate_ms {
        Some(at) if at > now => at,
        _ => now + i64::from(waiting_before) * i64::from(minutes_per) * 60_000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(resource: Value) -> Option<RxUpdate> {
        updates(&[resource]).pop()
    }

    #[test]
    fn orders_and_dispenses_become_states_of_their_order() {
        let rx = |kind: &str, status: Option<&str>| {
            let mut r = json!({
                "resourceType": kind,
                "identifier": [{"value": "ORD-1"}, {"value": "F-1"}],
                "subject": {"identifier": {"value": "MRN-1"}},
                "whenPrepared": "2026-11-24T15:00:00+01:00",
            });
            if let Some(s) = status {
                r["status"] = json!(s);
            }
            check(r).map(|u| (u.order, u.state))
        };
        let state = |kind, status| rx(kind, status).map(|(_, s)| s);
        assert_eq!(
            rx("MedicationRequest", Some("active")),
            Some(("ORD-1".into(), RxState::Ordered))
        );
        assert_eq!(
            state("MedicationRequest", Some("cancelled")),
            Some(RxState::Cancelled)
        );
        assert_eq!(state("MedicationRequest", Some("on-hold")), None);
        assert_eq!(
            state("MedicationDispense", Some("preparation")),
            Some(RxState::InPreparation)
        );
        assert_eq!(state("MedicationDispense", None), Some(RxState::Ready));
        assert_eq!(
            state("MedicationDispense", Some("in-progress")),
            Some(RxState::Ready)
        );
        assert_eq!(
            state("MedicationDispense", Some("completed")),
            Some(RxState::PickedUp)
        );
        assert_eq!(state("Observation", Some("final")), None);
        assert!(
            check(json!({"resourceType": "MedicationRequest", "identifier": [{"value": "O"}]}))
                .is_none(),
            "no patient"
        );
    }

    #[test]
    fn states_move_forward_only_and_stop_when_closed() {
        use RxState::*;
        assert!(Ordered.moves_to(InPreparation));
        assert!(Ordered.moves_to(Ready), "a step may be skipped");
        assert!(!Ready.moves_to(InPreparation), "a late message");
        assert!(!Ready.moves_to(Ready));
        assert!(Ready.moves_to(Cancelled));
        assert!(!PickedUp.moves_to(Cancelled));
        assert!(!Cancelled.moves_to(Ready));
        assert_eq!(RxState::parse("in_preparation"), Some(InPreparation));
    }

    #[test]
    fn polled_requests_are_known_by_reference_and_their_dispenses_name_it() {
        let request = check(json!({
            "resourceType": "MedicationRequest", "id": "m1", "status": "active",
            "identifier": [{"value": "ORD-9"}],
            "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "7980"}]},
            "subject": {"reference": "Patient/p1"},
        }))
        .expect("a request");
        assert_eq!(request.order, "MedicationRequest/m1");
        assert_eq!(request.patient_id.as_deref(), Some("p1"));
        assert_eq!(request.codes[0].code, "7980");
        let dispense = check(json!({
            "resourceType": "MedicationDispense", "id": "d1", "status": "completed",
            "authorizingPrescription": [{"reference": "MedicationRequest/m1"}],
            "subject": {"reference": "Patient/p1"},
        }))
        .expect("a dispense");
        assert_eq!(
            (dispense.order.as_str(), dispense.state),
            ("MedicationRequest/m1", RxState::PickedUp)
        );
    }

    #[test]
    fn issues_and_allergies_keep_codes_only_and_match_exactly() {
        let issue = |status: &str| {
            issues(&[json!({
                "resourceType": "DetectedIssue", "id": "i1", "status": status,
                "code": {"coding": [{"code": "DRG"}], "text": "Warfarin and aspirin"},
                "severity": "high", "patient": {"reference": "Patient/p1"},
                "detail": "Warfarin and aspirin: bleeding risk",
            })])
        };
        let found = issue("final");
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].code.as_str(), found[0].reason.as_str()),
            ("DRG", "severity:high")
        );
        assert!(issue("cancelled").is_empty());
        let allergy = |clinical: &str, verification: &str| {
            allergies(&[json!({
                "resourceType": "AllergyIntolerance", "id": "a1",
                "clinicalStatus": {"coding": [{"code": clinical}]},
                "verificationStatus": {"coding": [{"code": verification}]},
                "code": {"coding": [{"system": "rx", "code": "7980"}]},
                "patient": {"reference": "Patient/p1"},
            })])
            .pop()
            .expect("an allergy")
        };
        assert!(allergy("active", "confirmed").active);
        assert!(!allergy("resolved", "confirmed").active);
        assert!(!allergy("active", "refuted").active);
        let code = |system: Option<&str>, code: &str| Code {
            system: system.map(str::to_string),
            code: code.into(),
        };
        let known = allergy("active", "confirmed").codes;
        assert!(allergic(&[code(Some("rx"), "7980")], &known).is_some());
        assert!(
            allergic(&[code(None, "7980")], &known).is_some(),
            "no system"
        );
        assert!(allergic(&[code(Some("ndc"), "7980")], &known).is_none());
        assert!(allergic(&[code(Some("rx"), "798")], &known).is_none());
        assert_eq!(
            allergy("active", "confirmed").patient.key(),
            "p1",
            "a FHIR allergy is the EHR patient's"
        );
    }

    #[test]
    fn a_mapped_al1_is_known_by_its_patients_identifier_and_its_code() {
        let mapped = |code: Value| {
            allergies(&[json!({
                "resourceType": "AllergyIntolerance",
                "clinicalStatus": {"coding": [{"code": "active"}]},
                "code": code,
                "patient": {"identifier": {"value": "MRN-1"}},
            })])
        };
        let found = mapped(json!({"coding": [{"system": "rx", "code": "7980"}]}));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].origin, "AL1/MRN-1/rx|7980");
        assert_eq!(found[0].patient, Patient::Ref("MRN-1".into()));
        assert_eq!(found[0].patient.key(), "ref:MRN-1");
        assert!(found[0].active && found[0].from_v2());
        assert!(mapped(json!(null)).is_empty(), "no code: nothing to match");
    }

    #[test]
    fn alert_rules_match_a_segments_field_and_say_which() {
        let rule = |segment: &str, field: usize, matches: &str| AlertRule {
            segment: segment.into(),
            field,
            matches: matches.into(),
        };
        let rde = b"MSH|^~\\&|PH|H|GW|C|2026||RDE^O11|M1|P|2.5.1\rPID|1||MRN-1\r\
                    ORC|NW|RX-1\rNTE|1||Drug INTERACTION with warfarin\rZAL|1|\r";
        let hit = |rules: &[AlertRule]| rule_hit(rde, rules);
        assert_eq!(
            hit(&[rule("NTE", 3, "interaction")]).as_deref(),
            Some("hl7:NTE-3")
        );
        assert_eq!(hit(&[rule("NTE", 3, "allergy")]), None);
        assert_eq!(hit(&[rule("ZAL", 2, "")]), None, "an empty field");
        assert_eq!(
            hit(&[rule("ZAL", 2, ""), rule("NTE", 3, "")]).as_deref(),
            Some("hl7:NTE-3")
        );
        assert_eq!(rule_hit(b"not hl7", &[rule("NTE", 3, "")]), None);
    }

    #[test]
    fn pickup_is_the_pharmacys_estimate_else_the_counters_backlog() {
        let now = 1_000_000;
        assert_eq!(pickup_at(Some(now + 60_000), 3, 5, now), now + 60_000);
        assert_eq!(
            pickup_at(Some(now - 1), 3, 5, now),
            now + 15 * 60_000,
            "a past estimate"
        );
        assert_eq!(pickup_at(None, 0, 5, now), now);
    }
}
