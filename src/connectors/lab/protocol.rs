//! Lab results, pure: the FHIR Observations an item carries (mapped from an ORU^R01's OBX
//! segments, or polled) read into results per patient, and what the configured rules make of
//! them. No I/O and no clock: the store applies the decisions.

use super::config::LabConfig;
use crate::queue::Priority;
use serde_json::Value;

/// Where a result is in its life (FHIR observation-status, from OBX-11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultStatus {
    /// `final` (OBX-11 `F`).
    Final,
    /// `corrected` (OBX-11 `C`): a final result replaced.
    Corrected,
    /// `preliminary` (OBX-11 `P`): not to be acted on yet.
    Preliminary,
    /// Anything else (registered, cancelled, entered in error, absent).
    Other,
}

impl ResultStatus {
    fn of(status: &str) -> ResultStatus {
        match status {
            "final" | "amended" => ResultStatus::Final,
            "corrected" => ResultStatus::Corrected,
            "preliminary" => ResultStatus::Preliminary,
            _ => ResultStatus::Other,
        }
    }

    /// A final or corrected result: the only ones the gateway acts on.
    pub fn is_reportable(self) -> bool {
        matches!(self, ResultStatus::Final | ResultStatus::Corrected)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ResultStatus::Final => "final",
            ResultStatus::Corrected => "corrected",
            ResultStatus::Preliminary => "preliminary",
            ResultStatus::Other => "other",
        }
    }
}

/// The patient a result is about: the identifier entries carry (`Observation.subject`'s
/// identifier, PID-3 in v2) or the EHR's Patient id (`subject.reference`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Subject {
    pub patient_ref: Option<String>,
    pub patient_id: Option<String>,
}

/// One result (an Observation, or a DiagnosticReport as a whole), without its value's text:
/// what the rules need.
#[derive(Debug, Clone, PartialEq)]
pub struct LabResult {
    /// The test code (LOINC when the lab sends it).
    pub code: String,
    pub status: ResultStatus,
    /// Interpretation codes (OBX-8): `H`, `HH`, `LL`, `AA`, ...
    pub flags: Vec<String>,
    /// The numeric value, when the result has one.
    pub value: Option<f64>,
}

/// The Observations and DiagnosticReports among `resources`, grouped by patient in the order
/// first seen; one without a code or a patient is left out (nothing could act on it). A report
/// counts as one result of its own code (the panel's), without flags or value: its
/// Observations, read on their own, carry those.
pub fn results(resources: &[Value]) -> Vec<(Subject, Vec<LabResult>)> {
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let mut out: Vec<(Subject, Vec<LabResult>)> = Vec::new();
    for o in resources.iter().filter(|r| {
        matches!(
            r["resourceType"].as_str(),
            Some("Observation" | "DiagnosticReport")
        )
    }) {
        let subject = Subject {
            patient_ref: text(&o["subject"]["identifier"]["value"]),
            patient_id: o["subject"]["reference"]
                .as_str()
                .and_then(|r| r.strip_prefix("Patient/"))
                .filter(|id| !id.is_empty())
                .map(str::to_string),
        };
        let Some(code) = text(&o["code"]["coding"][0]["code"]) else {
            continue;
        };
        if subject.patient_ref.is_none() && subject.patient_id.is_none() {
            continue;
        }
        let flags = o["interpretation"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|i| i["coding"].as_array().into_iter().flatten())
            .filter_map(|c| text(&c["code"]))
            .collect();
        let result = LabResult {
            code,
            status: ResultStatus::of(o["status"].as_str().unwrap_or_default()),
            flags,
            value: o["valueQuantity"]["value"].as_f64(),
        };
        match out.iter_mut().find(|(s, _)| *s == subject) {
            Some((_, list)) => list.push(result),
            None => out.push((subject, vec![result])),
        }
    }
    out
}

/// The priority a queue rule raises an entry of `queue` to for these results, with the test
/// code that made it: the highest of the rules matching a reportable result.
pub fn raise(config: &LabConfig, queue: &str, results: &[LabResult]) -> Option<(Priority, String)> {
    config
        .priority
        .iter()
        .filter(|rule| rule.queue == queue)
        .filter_map(|rule| {
            results
                .iter()
                .filter(|r| r.status.is_reportable())
                .find(|r| rule.codes.contains(&r.code))
                .map(|r| (rule.priority, r.code.clone()))
        })
        .max_by_key(|(p, _)| *p)
}

/// Why a result is critical, as a code (`flag:HH`, `limit:low`, `limit:high`), or `None`. Only
/// reportable results count: a preliminary critical value waits for its final one.
pub fn critical(config: &LabConfig, result: &LabResult) -> Option<String> {
    if !result.status.is_reportable() {
        return None;
    }
    if let Some(flag) = result
        .flags
        .iter()
        .find(|f| config.critical_flags.contains(f))
    {
        return Some(format!("flag:{flag}"));
    }
    let value = result.value?;
    config
        .critical
        .iter()
        .filter(|l| l.code == result.code)
        .find_map(|l| {
            if l.low.is_some_and(|low| value < low) {
                Some("limit:low".to_string())
            } else if l.high.is_some_and(|high| value > high) {
                Some("limit:high".to_string())
            } else {
                None
            }
        })
}

/// The identifiers and type codes of the Appointments among `resources` (SCH-1/SCH-2 and
/// SCH-8/SCH-7 mapped; a FHIR Appointment's `appointmentType` and `serviceType`).
pub fn appointment_types(resources: &[Value]) -> Vec<(Vec<String>, Vec<String>)> {
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    resources
        .iter()
        .filter(|r| r["resourceType"] == "Appointment")
        .filter_map(|a| {
            let refs: Vec<String> = list(&a["identifier"])
                .iter()
                .filter_map(|i| text(&i["value"]))
                .chain(text(&a["id"]).map(|id| format!("Appointment/{id}")))
                .collect();
            let mut concepts = vec![a["appointmentType"].clone()];
            concepts.extend(list(&a["serviceType"]));
            concepts.extend(list(&a["reasonCode"]));
            let types: Vec<String> = concepts
                .iter()
                .flat_map(|c| list(&c["coding"]))
                .filter_map(|c| text(&c["code"]))
                .collect();
            (!refs.is_empty() && !types.is_empty()).then_some((refs, types))
        })
        .collect()
}

/// The tests an appointment of `types` requires that are not among `received`, in the order
/// configured.
pub fn missing(config: &LabConfig, types: &[String], received: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for rule in config
        .required
        .iter()
        .filter(|r| types.contains(&r.appointment_type))
    {
        for code in &rule.codes {
            if !received.contains(code) && !out.contains(code) {
                out.push(code.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::lab::config::{CriticalLimit, PriorityRule};
    use serde_json::json;

    fn observation(code: &str, status: &str, flag: Option<&str>, value: f64) -> Value {
        let mut o = json!({
            "resourceType": "Observation",
            "status": status,
            "code": {"coding": [{"code": code, "system": "http://loinc.org"}]},
            "valueQuantity": {"value": value},
            "subject": {"identifier": {"value": "MRN-1"}},
        });
        if let Some(f) = flag {
            o["interpretation"] = json!([{"coding": [{"code": f}]}]);
        }
        o
    }

    fn check(resources: &[Value]) -> Vec<(Subject, Vec<LabResult>)> {
        results(resources)
    }

    #[test]
    fn a_diagnostic_report_is_one_result_of_its_panel_code_without_value() {
        let report = |status: &str| {
            json!({
                "resourceType": "DiagnosticReport", "status": status,
                "code": {"coding": [{"system": "http://loinc.org", "code": "24323-8"}]},
                "subject": {"reference": "Patient/abc"},
                "conclusion": "Within normal limits",
            })
        };
        let got = check(&[report("final")]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.patient_id.as_deref(), Some("abc"));
        assert_eq!(
            got[0].1,
            [LabResult {
                code: "24323-8".into(),
                status: ResultStatus::Final,
                flags: Vec::new(),
                value: None,
            }]
        );
        assert!(!check(&[report("partial")])[0].1[0].status.is_reportable());
        assert!(check(&[report("corrected")])[0].1[0].status.is_reportable());
    }

    #[test]
    fn observations_are_read_per_patient_with_status_flags_and_value() {
        let polled = json!({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"code": "2823-3"}]},
            "subject": {"reference": "Patient/abc"},
        });
        let got = check(&[
            json!({"resourceType": "Patient"}),
            observation("2345-7", "final", Some("H"), 7.4),
            observation("2823-3", "preliminary", None, 4.0),
            polled,
            json!({"resourceType": "Observation", "status": "final", "subject": {"reference": "Patient/abc"}}),
        ]);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0.patient_ref.as_deref(), Some("MRN-1"));
        assert_eq!(
            got[0].1[0],
            LabResult {
                code: "2345-7".into(),
                status: ResultStatus::Final,
                flags: vec!["H".into()],
                value: Some(7.4)
            }
        );
        assert_eq!(got[0].1[1].status, ResultStatus::Preliminary);
        assert_eq!(got[1].0.patient_id.as_deref(), Some("abc"));
        assert_eq!(
            got[1].1.len(),
            1,
            "an Observation without a code is left out"
        );
    }

    #[test]
    fn a_rule_raises_its_queue_for_a_reportable_result_of_its_codes_only() {
        let config = LabConfig {
            priority: vec![
                PriorityRule {
                    queue: "general".into(),
                    codes: vec!["2345-7".into()],
                    priority: Priority::Elevated,
                },
                PriorityRule {
                    queue: "general".into(),
                    codes: vec!["2823-3".into()],
                    priority: Priority::Urgent,
                },
            ],
            ..LabConfig::default()
        };
        let read = |o: Value| check(&[o]).remove(0).1;
        let glucose = read(observation("2345-7", "corrected", None, 7.4));
        assert_eq!(
            raise(&config, "general", &glucose),
            Some((Priority::Elevated, "2345-7".into()))
        );
        assert_eq!(raise(&config, "lab", &glucose), None, "another queue");
        let preliminary = read(observation("2823-3", "preliminary", None, 4.0));
        assert_eq!(raise(&config, "general", &preliminary), None);
        let both = [glucose, read(observation("2823-3", "final", None, 4.0))].concat();
        assert_eq!(
            raise(&config, "general", &both),
            Some((Priority::Urgent, "2823-3".into())),
            "the highest rule wins"
        );
    }

    #[test]
    fn critical_by_configured_flag_or_by_limit_and_only_when_reportable() {
        let config = LabConfig {
            critical: vec![CriticalLimit {
                code: "2823-3".into(),
                low: Some(2.8),
                high: Some(6.2),
            }],
            ..LabConfig::default()
        };
        let read = |o: Value| check(&[o]).remove(0).1.remove(0);
        let verdict = |code: &str, status: &str, flag: Option<&str>, value: f64| {
            critical(&config, &read(observation(code, status, flag, value)))
        };
        assert_eq!(
            verdict("2345-7", "final", Some("HH"), 30.0).as_deref(),
            Some("flag:HH")
        );
        assert_eq!(
            verdict("2345-7", "final", Some("H"), 30.0),
            None,
            "H is not critical"
        );
        assert_eq!(
            verdict("2823-3", "corrected", None, 6.9).as_deref(),
            Some("limit:high")
        );
        assert_eq!(
            verdict("2823-3", "final", None, 2.1).as_deref(),
            Some("limit:low")
        );
        assert_eq!(verdict("2823-3", "final", None, 4.0), None);
        assert_eq!(verdict("2823-3", "preliminary", Some("LL"), 2.1), None);
    }

    #[test]
    fn an_appointments_types_require_the_tests_not_received_yet() {
        use crate::connectors::lab::config::RequiredResults;
        let siu = json!({
            "resourceType": "Appointment",
            "identifier": [{"value": "P-1"}, {"value": "F-1"}],
            "appointmentType": {"coding": [{"code": "DIAB-FU"}]},
            "reasonCode": [{"coding": [{"code": "FOLLOWUP"}]}],
        });
        let polled = json!({"resourceType": "Appointment", "id": "a1", "serviceType": [{"coding": [{"code": "ANTICOAG"}]}]});
        let found = appointment_types(&[
            siu,
            polled,
            json!({"resourceType": "Appointment", "id": "x"}),
        ]);
        assert_eq!(
            found,
            [
                (
                    vec!["P-1".into(), "F-1".into()],
                    vec!["DIAB-FU".into(), "FOLLOWUP".into()]
                ),
                (vec!["Appointment/a1".into()], vec!["ANTICOAG".into()])
            ]
        );
        let config = LabConfig {
            required: vec![
                RequiredResults {
                    appointment_type: "DIAB-FU".into(),
                    codes: vec!["4548-4".into(), "2345-7".into()],
                },
                RequiredResults {
                    appointment_type: "FOLLOWUP".into(),
                    codes: vec!["2345-7".into()],
                },
            ],
            ..LabConfig::default()
        };
        let types = found[0].1.clone();
        assert_eq!(missing(&config, &types, &[]), ["4548-4", "2345-7"]);
        assert_eq!(missing(&config, &types, &["2345-7".into()]), ["4548-4"]);
        assert!(missing(&config, &types, &["2345-7".into(), "4548-4".into()]).is_empty());
        assert!(missing(&config, &["OTHER".into()], &[]).is_empty());
    }
}
