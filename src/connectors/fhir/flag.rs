//! EHR `Flag`s as queue priority: an active flag on a patient (fall risk, infection control,
//! a behavioural warning...) raises their open entries to the configured priority, and a flag
//! that is no longer active lets them return to the priority asked at check-in. Pure: the
//! journal applies [`effect`] in the transaction that records the Flag's version.

use super::config::FlagsConfig;
use crate::queue::{FromEhr, Priority};
use serde_json::Value;

/// The text staff see as the priority's reason: the code's text, else a coding's display or
/// code.
fn reason(flag: &Value) -> String {
    let code = &flag["code"];
    let text = code["text"].as_str().or_else(|| {
        code["coding"].as_array()?.iter().find_map(|c| {
            c["display"]
                .as_str()
                .or_else(|| c["code"].as_str())
                .filter(|s| !s.is_empty())
        })
    });
    format!("EHR flag: {}", text.unwrap_or("unnamed"))
}

/// Whether the flag holds at `now` (an RFC 3339 instant): `active` and its period, if any,
/// not ended.
fn holds(flag: &Value, now: &str) -> bool {
    // RFC 3339 instants in UTC compare as text when they have the same shape; a date-only
    // end (`2026-11-24`) holds through that day.
    let ended = flag["period"]["end"]
        .as_str()
        .is_some_and(|end| match end.len() {
            10 => end < &now[..10],
            _ => end < now,
        });
    flag["status"] == "active" && !ended
}

/// What a Flag version does to the queue: `None` when it names no patient (a flag on a
/// location or a group is not a patient's priority).
pub fn effect(flag: &Value, config: &FlagsConfig, now: &str) -> Option<FromEhr> {
    let flag_id = flag["id"].as_str()?.to_string();
    let patient_id = flag["subject"]["reference"]
        .as_str()?
        .strip_prefix("Patient/")?
        .to_string();
    let urgent = flag["code"]["coding"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["code"].as_str())
        .any(|c| config.urgent_codes.iter().any(|u| u == c));
    let priority = if urgent {
        Priority::Urgent
    } else {
        config.priority
    };
    let raise = holds(flag, now).then(|| (priority, reason(flag)));
    Some(FromEhr::Flag {
        flag_id,
        patient_id,
        raise,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> FlagsConfig {
        FlagsConfig {
            priority: Priority::Elevated,
            urgent_codes: vec!["infection".into()],
            poll_interval_s: 30,
        }
    }

    fn flag(status: &str) -> Value {
        json!({ "resourceType": "Flag", "id": "f1", "status": status,
            "code": { "coding": [{ "system": "urn:x", "code": "fall", "display": "Fall risk" }] },
            "subject": { "reference": "Patient/p1" } })
    }

    const NOW: &str = "2026-11-24T10:00:00Z";

    #[test]
    fn active_flags_raise_and_others_release() {
        let raise = |f: &Value| match effect(f, &config(), NOW) {
            Some(FromEhr::Flag {
                raise, patient_id, ..
            }) => {
                assert_eq!(patient_id, "p1");
                raise
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            raise(&flag("active")),
            Some((Priority::Elevated, "EHR flag: Fall risk".into()))
        );
        assert_eq!(raise(&flag("inactive")), None);
        assert_eq!(raise(&flag("entered-in-error")), None);
        let mut ended = flag("active");
        ended["period"] = json!({ "start": "2026-01-01", "end": "2026-11-23" });
        assert_eq!(raise(&ended), None, "ended yesterday");
        ended["period"]["end"] = json!("2026-11-24");
        assert!(raise(&ended).is_some(), "holds through its last day");
        ended["period"]["end"] = json!("2026-11-24T09:59:59Z");
        assert_eq!(raise(&ended), None, "ended a second ago");
        let mut urgent = flag("active");
        urgent["code"] = json!({ "text": "Isolate", "coding": [{ "code": "infection" }] });
        assert_eq!(
            raise(&urgent),
            Some((Priority::Urgent, "EHR flag: Isolate".into()))
        );
    }

    #[test]
    fn flags_without_a_patient_change_nothing() {
        let mut f = flag("active");
        f["subject"] = json!({ "reference": "Location/l1" });
        assert_eq!(effect(&f, &config(), NOW), None);
        f["subject"] = json!({});
        assert_eq!(effect(&f, &config(), NOW), None);
    }
}
