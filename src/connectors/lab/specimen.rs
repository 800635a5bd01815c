//! Lab orders and specimens, pure: the FHIR ServiceRequests and Specimens an item carries
//! (mapped from ORM^O01 / OML^O21 / OML^O33 / OUL^R22, whose SPM segments become Specimens)
//! read into orders and specimen states, the order in which states may follow each other, and
//! the estimated waits of a queue. No I/O and no clock: the store applies the decisions.

use crate::connectors::hl7v2::mapping::SPECIMEN_REJECT_EXTENSION;
use serde_json::Value;

/// Where a specimen is. Ordered by progress: a state never goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SpecimenState {
    /// Taken from the patient (SPM-17, a collection time).
    Collected,
    /// Collected and on its way to the lab (sent with its order, OML^O33).
    InTransit,
    /// At the lab (SPM-18, a received time; or reported on by the lab, OUL^R22).
    Received,
    /// Its results were reported (OBR-25 of the same message, or a final result of its order).
    Resulted,
    /// Refused by the lab (SPM-21, a reject reason): the order needs a new specimen.
    Rejected,
}

impl SpecimenState {
    pub fn as_str(self) -> &'static str {
        match self {
            SpecimenState::Collected => "collected",
            SpecimenState::InTransit => "in_transit",
            SpecimenState::Received => "received",
            SpecimenState::Resulted => "resulted",
            SpecimenState::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<SpecimenState> {
        [
            SpecimenState::Collected,
            SpecimenState::InTransit,
            SpecimenState::Received,
            SpecimenState::Resulted,
            SpecimenState::Rejected,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }

    /// Whether a specimen in `self` moves to `to`: forward only, and nothing after it was
    /// resulted or rejected (a recollection is a new specimen with its own id).
    pub fn moves_to(self, to: SpecimenState) -> bool {
        !matches!(self, SpecimenState::Resulted | SpecimenState::Rejected) && to > self
    }
}

/// What in an item says a specimen is in a state.
#[derive(Debug, Clone, Copy)]
enum Evidence {
    /// The Specimen is `unsatisfactory` (a reject reason was sent).
    Unsatisfactory,
    /// The item reports results: a DiagnosticReport beside it that is final, corrected,
    /// preliminary or partial, or its order completed.
    Reported,
    /// The Specimen has a `receivedTime`.
    ReceivedTime,
    /// The item is of this journal kind.
    Message(&'static str),
    /// The Specimen has a collection time.
    CollectedTime,
}

/// A specimen's state from what its item says, the first row that holds winning. A Specimen
/// none of them describes (ordered, not collected yet) is not tracked.
const STATES: &[(Evidence, SpecimenState)] = &[
    (Evidence::Unsatisfactory, SpecimenState::Rejected),
    (Evidence::Reported, SpecimenState::Resulted),
    (Evidence::ReceivedTime, SpecimenState::Received),
    (
        Evidence::Message("hl7.oul.specimen_result"),
        SpecimenState::Received,
    ),
    (
        Evidence::Message("hl7.oml.specimen_order"),
        SpecimenState::InTransit,
    ),
    (Evidence::CollectedTime, SpecimenState::Collected),
];

/// The patient an order or specimen is for, as entries carry it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Patient {
    /// The reference entries carry (PID-3's first identifier).
    pub patient_ref: Option<String>,
    /// The EHR's Patient id (polled resources).
    pub patient_id: Option<String>,
}

/// A lab order read from a ServiceRequest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// The placer's order id (ORC-2 / OBR-2), else the filler's; a polled ServiceRequest
    /// without identifiers is `ServiceRequest/<id>`.
    pub id: String,
    pub patient: Patient,
    /// The test ordered (OBR-4.1).
    pub code: Option<String>,
    /// Revoked, completed or entered in error: nothing to collect any more.
    pub closed: bool,
}

/// A specimen update read from a Specimen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecimenUpdate {
    /// The placer's specimen id (SPM-2.1), else the filler's; a polled Specimen without
    /// identifiers is `Specimen/<id>`.
    pub id: String,
    /// The order it was taken for (its id, or its reference when polled).
    pub order: Option<String>,
    pub patient: Patient,
    pub state: SpecimenState,
    /// Its type code (SPM-4.1).
    pub type_code: Option<String>,
    /// Why the lab refused it (SPM-21.1, table 0490).
    pub reject_reason: Option<String>,
    /// Its condition (SPM-24.1, table 0493).
    pub condition: Option<String>,
}

fn text(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

fn patient(r: &Value) -> Option<Patient> {
    let found = Patient {
        patient_ref: text(&r["subject"]["identifier"]["value"]),
        patient_id: r["subject"]["reference"]
            .as_str()
            .and_then(|s| s.strip_prefix("Patient/"))
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    };
    (found.patient_ref.is_some() || found.patient_id.is_some()).then_some(found)
}

/// A resource's first identifier value, else (a resource polled from a FHIR server without
/// business identifiers) `<type>/<id>`, as other resources reference it.
fn first_id(r: &Value) -> Option<String> {
    r["identifier"]
        .as_array()
        .and_then(|ids| ids.iter().find_map(|i| text(&i["value"])))
        .or_else(|| {
            let kind = r["resourceType"].as_str()?;
            text(&r["id"]).map(|id| format!("{kind}/{id}"))
        })
}

/// The lab orders among `resources`; one without an id or a patient is left out.
pub fn orders(resources: &[Value]) -> Vec<Order> {
    resources
        .iter()
        .filter(|r| r["resourceType"] == "ServiceRequest")
        .filter_map(|r| {
            Some(Order {
                id: first_id(r)?,
                patient: patient(r)?,
                code: text(&r["code"]["coding"][0]["code"]),
                closed: matches!(
                    r["status"].as_str(),
                    Some("revoked" | "completed" | "entered-in-error")
                ),
            })
        })
        .collect()
}

/// The specimens among the `resources` of an item of journal kind `kind`, each with the state
/// the item puts it in; one without an id or a patient, or in none of the states, is left out.
pub fn specimens(kind: &str, resources: &[Value]) -> Vec<SpecimenUpdate> {
    let reported = resources.iter().any(|r| {
        (r["resourceType"] == "DiagnosticReport"
            && matches!(
                r["status"].as_str(),
                Some("final" | "corrected" | "preliminary" | "partial")
            ))
            || (r["resourceType"] == "ServiceRequest" && r["status"] == "completed")
    });
    resources
        .iter()
        .filter(|r| r["resourceType"] == "Specimen")
        .filter_map(|r| {
            let holds = |e: &Evidence| match e {
                Evidence::Unsatisfactory => r["status"] == "unsatisfactory",
                Evidence::Reported => reported,
                Evidence::ReceivedTime => text(&r["receivedTime"]).is_some(),
                Evidence::Message(k) => *k == kind,
                Evidence::CollectedTime => {
                    text(&r["collection"]["collectedDateTime"]).is_some()
                        || text(&r["collection"]["collectedPeriod"]["start"]).is_some()
                }
            };
            let state = STATES.iter().find(|(e, _)| holds(e)).map(|(_, s)| *s)?;
            let reject_reason = r["extension"].as_array().and_then(|exts| {
                exts.iter()
                    .filter(|e| e["url"] == SPECIMEN_REJECT_EXTENSION)
                    .find_map(|e| text(&e["valueCodeableConcept"]["coding"][0]["code"]))
            });
            Some(SpecimenUpdate {
                id: first_id(r)?,
                order: r["request"].as_array().and_then(|refs| {
                    refs.iter().find_map(|q| {
                        text(&q["identifier"]["value"]).or_else(|| text(&q["reference"]))
                    })
                }),
                patient: patient(r)?,
                state,
                type_code: text(&r["type"]["coding"][0]["code"]),
                reject_reason,
                condition: text(&r["condition"][0]["coding"][0]["code"]),
            })
        })
        .collect()
}

/// The orders whose results `resources` report as final or corrected (a DiagnosticReport's
/// ids): their tracked specimens are resulted.
pub fn resulted_orders(resources: &[Value]) -> Vec<String> {
    resources
        .iter()
        .filter(|r| {
            r["resourceType"] == "DiagnosticReport"
                && matches!(r["status"].as_str(), Some("final" | "corrected"))
        })
        .flat_map(|r| {
            r["identifier"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| text(&i["value"]))
        })
        .collect()
}

/// One open entry of a queue as the estimate sees it, in queue order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Waiting to be called (else called or in a room: ahead of every waiting one).
    pub waiting: bool,
    /// The minutes delays added to its own expected time.
    pub extra_min: u32,
}

/// The order in which a queue's entries (given in queue order) are seen, as indices: those
/// called or in a room first, then the waiting ones in their order.
pub fn service_order(slots: &[Slot]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..slots.len()).collect();
    order.sort_by_key(|&i| slots[i].waiting);
    order
}

/// The estimated wait, in minutes, of each entry of a queue given in queue order: each entry
/// ahead in [`service_order`] counts `minutes_per` plus its own delays.
pub fn waits(slots: &[Slot], minutes_per: u32) -> Vec<u32> {
    let mut out = vec![0; slots.len()];
    let mut ahead = 0u32;
    for i in service_order(slots) {
        out[i] = ahead;
        ahead = ahead.saturating_add(minutes_per.saturating_add(slots[i].extra_min));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::hl7v2::mapping;
    use serde_json::json;

    fn check(kind: &str, v2: &str) -> (Vec<Order>, Vec<SpecimenUpdate>) {
        let resources = mapping::map(&hl7_2::parse(v2).expect("parse"));
        (orders(&resources), specimens(kind, &resources))
    }

    const PID: &str = "PID|1||MRN-1^^^HOSP^MR||Doe^John";

    #[test]
    fn orders_specimens_and_their_states_come_from_the_message() {
        let (orders, specimens) = check(
            "hl7.orm.order",
            &format!(
                "MSH|^~\\&|EHR|H|LIS|L|2026||ORM^O01|M1|P|2.5.1\r{PID}\rORC|NW|O-1|F-1||SC\rOBR|1|O-1|F-1|2345-7^Glucose^LN"
            ),
        );
        assert_eq!(
            orders,
            [Order {
                id: "O-1".into(),
                patient: Patient {
                    patient_ref: Some("MRN-1".into()),
                    patient_id: None
                },
                code: Some("2345-7".into()),
                closed: false,
            }]
        );
        assert!(specimens.is_empty(), "nothing collected yet");

        let spm = |fields: &str| format!("SPM|1|S-1||BLD^Whole blood^HL70487{fields}");
        let state = |kind: &str, spm: &str, more: &str| {
            let message = match kind {
                "hl7.oul.specimen_result" => "OUL^R22",
                _ => "OML^O33",
            };
            let (_, s) = check(
                kind,
                &format!(
                    "MSH|^~\\&|LIS|L|EHR|H|2026||{message}|M2|P|2.5.1\r{PID}\r{spm}\rORC|SC|O-1\rOBR|1|O-1||2345-7^Glucose^LN{more}"
                ),
            );
            s.first()
                .map(|s| (s.state, s.order.clone(), s.reject_reason.clone()))
        };
        let collected = spm("|||||||||||||20261124090000+0100");
        assert_eq!(
            state("hl7.oml.order", &collected, ""),
            Some((SpecimenState::Collected, Some("O-1".into()), None))
        );
        assert_eq!(
            state("hl7.oml.specimen_order", &collected, "").map(|s| s.0),
            Some(SpecimenState::InTransit)
        );
        let received = spm("|||||||||||||20261124090000+0100|20261124093000+0100");
        assert_eq!(
            state("hl7.oml.specimen_order", &received, "").map(|s| s.0),
            Some(SpecimenState::Received)
        );
        let reported = format!("{}F", "|".repeat(21));
        assert_eq!(
            state("hl7.oul.specimen_result", &received, &reported).map(|s| s.0),
            Some(SpecimenState::Resulted)
        );
        let rejected = spm("|||||||||||||20261124090000+0100||||RH^Hemolysis^HL70490|||HEM");
        assert_eq!(
            state("hl7.oul.specimen_result", &rejected, &reported),
            Some((
                SpecimenState::Rejected,
                Some("O-1".into()),
                Some("RH".into())
            )),
            "a rejection outranks the rest"
        );
        let (_, s) = check(
            "hl7.oul.specimen_result",
            &format!("MSH|^~\\&|LIS|L|EHR|H|2026||OUL^R22|M3|P|2.5.1\r{PID}\r{rejected}"),
        );
        assert_eq!(s[0].condition.as_deref(), Some("HEM"));
        assert_eq!(s[0].type_code.as_deref(), Some("BLD"));
    }

    #[test]
    fn polled_resources_without_identifiers_link_by_reference() {
        let order = json!({
            "resourceType": "ServiceRequest", "id": "sr-1", "status": "revoked",
            "intent": "order", "subject": {"reference": "Patient/p-1"}
        });
        let polled = json!({
            "resourceType": "Specimen", "id": "sp-1", "status": "unsatisfactory",
            "subject": {"reference": "Patient/p-1"},
            "request": [{"reference": "ServiceRequest/sr-1"}],
            "extension": [{
                "url": SPECIMEN_REJECT_EXTENSION,
                "valueCodeableConcept": {"coding": [{"code": "QS"}]}
            }]
        });
        let found = orders(&[order]);
        assert_eq!(found[0].id, "ServiceRequest/sr-1");
        assert!(found[0].closed);
        assert_eq!(found[0].patient.patient_id.as_deref(), Some("p-1"));
        let s = specimens("fhir.specimen_changed", &[polled]).remove(0);
        assert_eq!(
            (
                s.id.as_str(),
                s.order.as_deref(),
                s.state,
                s.reject_reason.as_deref()
            ),
            (
                "Specimen/sp-1",
                Some("ServiceRequest/sr-1"),
                SpecimenState::Rejected,
                Some("QS")
            )
        );
    }

    #[test]
    fn states_move_forward_only_and_stop_when_resulted_or_rejected() {
        use SpecimenState::*;
        assert!(Collected.moves_to(InTransit));
        assert!(Collected.moves_to(Resulted), "a step may be skipped");
        assert!(!Received.moves_to(InTransit), "a late message");
        assert!(Received.moves_to(Rejected));
        assert!(
            !Rejected.moves_to(Collected),
            "a recollection is a new specimen"
        );
        assert!(!Resulted.moves_to(Rejected));
        assert_eq!(SpecimenState::parse("in_transit"), Some(InTransit));
    }

    #[test]
    fn waits_count_the_entries_ahead_and_their_delays_with_the_called_first() {
        let slot = |waiting, extra_min| Slot { waiting, extra_min };
        assert_eq!(
            waits(
                &[slot(true, 15), slot(false, 0), slot(true, 0), slot(true, 0)],
                10
            ),
            [10, 0, 35, 45]
        );
        assert_eq!(
            service_order(&[slot(true, 0), slot(false, 0), slot(true, 0)]),
            [1, 0, 2]
        );
        assert!(waits(&[], 10).is_empty());
    }
}
