//! Waits longer than the booked slots: when a patient of a queue has waited longer than their
//! appointment's slot (or the configured slot length when there is no appointment), the
//! schedule no longer matches the clinic's pace. The gateway then posts one suggestion to the
//! EHR's scheduling staff (a FHIR `Task`, or a `Communication`) and a notice on the status page,
//! once per overrun: the queue has to come back within its slots before it is raised again.
//! Pure: the connector measures, the journal commits the notice with the outbox row.

use super::config::Suggest;
use crate::queue::{Entry, EntryState};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};

/// The outbox row kind (`ehr-fhir`, and the cloud) of a suggestion.
pub const KIND: &str = "queue.wait_exceeds_slot";
/// The identifier system of the suggestions, so that a retried create finds the first.
pub const IDENTIFIER_SYSTEM: &str = "urn:clinic-gateway:notice";

/// A queue whose longest-waiting patient has waited past their slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overrun {
    pub queue: String,
    /// The ticket of the patient furthest past their slot.
    pub ticket: String,
    pub waited_min: i64,
    pub slot_min: i64,
    /// Patients waiting in the queue now.
    pub waiting: usize,
    /// That patient's appointment (`Appointment/<id>`), when the entry came from one.
    pub appointment_ref: Option<String>,
}

/// Per queue with waiting patients: the overrun, if any. `slots` holds appointment lengths in
/// seconds by reference; `default_slot_s` stands in for entries without one. `now` and the
/// entries' times are ms since the epoch.
pub fn measure(
    entries: &[Entry],
    slots: &HashMap<String, i64>,
    default_slot_s: i64,
    now: i64,
) -> BTreeMap<String, Option<Overrun>> {
    let mut out: BTreeMap<String, Option<Overrun>> = BTreeMap::new();
    let mut worst: BTreeMap<&str, i64> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.state == EntryState::Waiting) {
        let waiting = entries
            .iter()
            .filter(|o| o.queue == e.queue && o.state == EntryState::Waiting)
            .count();
        let slot_s = e
            .appointment_ref
            .as_ref()
            .and_then(|r| slots.get(r))
            .copied()
            .unwrap_or(default_slot_s);
        let waited_s = (now - e.arrived_at) / 1000;
        let slot = out.entry(e.queue.clone()).or_default();
        let past = waited_s - slot_s;
        if past <= 0 || worst.get(e.queue.as_str()).is_some_and(|w| *w >= past) {
            continue;
        }
        worst.insert(&e.queue, past);
        *slot = Some(Overrun {
            queue: e.queue.clone(),
            ticket: e.ticket.clone(),
            waited_min: waited_s / 60,
            slot_min: (slot_s + 59) / 60,
            waiting,
            appointment_ref: e.appointment_ref.clone(),
        });
    }
    out
}

/// The text of the notice and of the suggestion: tickets and queues only.
pub fn text(o: &Overrun) -> String {
    format!(
        "Queue {}: {} has waited {} min, longer than the booked {} min slot ({} waiting); \
         consider rescheduling later appointments or extending slots",
        o.queue, o.ticket, o.waited_min, o.slot_min, o.waiting
    )
}

/// The suggestion for the EHR's scheduling staff, tagged as the gateway's write; `identifier`
/// is unique per overrun, `owner` (a reference, e.g. `Group/scheduling`) who should act.
pub fn suggestion(
    o: &Overrun,
    how: Suggest,
    identifier: &str,
    owner: Option<&str>,
    tag_system: &str,
    at: &str,
) -> Value {
    let mut r = json!({
        "meta": { "tag": [{ "system": tag_system, "code": "clinic-gateway" }] },
        "identifier": [{ "system": IDENTIFIER_SYSTEM, "value": identifier }],
        "priority": "routine",
    });
    let appointment = o
        .appointment_ref
        .as_deref()
        .filter(|r| r.starts_with("Appointment/"))
        .map(|r| json!({ "reference": r }));
    match how {
        Suggest::Task => {
            r["resourceType"] = json!("Task");
            r["status"] = json!("requested");
            r["intent"] = json!("proposal");
            r["code"] = json!({ "text": "Review today's schedule: waits exceed the booked slots" });
            r["description"] = json!(text(o));
            r["authoredOn"] = json!(at);
            if let Some(a) = appointment {
                r["focus"] = a;
            }
            if let Some(owner) = owner {
                r["owner"] = json!({ "reference": owner });
            }
        }
        Suggest::Communication => {
            r["resourceType"] = json!("Communication");
            r["status"] = json!("completed");
            r["category"] = json!([{ "text": "scheduling" }]);
            r["sent"] = json!(at);
            r["payload"] = json!([{ "contentString": text(o) }]);
            if let Some(a) = appointment {
                r["about"] = json!([a]);
            }
            if let Some(owner) = owner {
                r["recipient"] = json!([{ "reference": owner }]);
            }
        }
    }
    r
}

/// Seconds between two RFC 3339 date-times (with `Z` or an offset), e.g. an Appointment's
/// `start` and `end`; `None` when either is not one.
pub fn seconds_between(start: &str, end: &str) -> Option<i64> {
    Some(epoch_s(end)? - epoch_s(start)?)
}

/// Seconds since the epoch of `YYYY-MM-DDThh:mm:ss[.fff](Z|±hh:mm)`.
fn epoch_s(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let zone = t[19..].trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let offset = match zone.as_bytes().first()? {
        b'Z' => 0,
        sign @ (b'+' | b'-') => {
            let h: i64 = zone.get(1..3)?.parse().ok()?;
            let m: i64 = zone.get(4..6)?.parse().ok()?;
            if *sign == b'+' {
                h * 3600 + m * 60
            } else {
                -(h * 3600 + m * 60)
            }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm), March-based years.
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss - offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Priority;

    fn entry(id: i64, queue: &str, arrived_s: i64, appointment: Option<&str>) -> Entry {
        Entry {
            id,
            queue: queue.into(),
            ticket: format!("G-{id:03}"),
            patient_ref: None,
            appointment_ref: appointment.map(str::to_string),
            priority: Priority::Normal,
            priority_reason: None,
            state: EntryState::Waiting,
            room: None,
            arrived_at: arrived_s * 1000,
            called_at: None,
            in_room_at: None,
            closed_at: None,
            awaiting_results: false,
            demographics: None,
        }
    }

    #[test]
    fn the_patient_furthest_past_their_slot_names_the_overrun() {
        let slots = HashMap::from([("Appointment/a".to_string(), 600)]);
        let mut called = entry(9, "general", 0, None);
        called.state = EntryState::Called;
        let entries = [
            entry(1, "general", 1_000, Some("Appointment/a")), // 30 min, slot 10: 20 past
            entry(2, "general", 0, None),                      // 46 min, slot 15: 31 past
            entry(3, "lab", 2_500, None),                      // 5 min: within
            called,
        ];
        let m = measure(&entries, &slots, 900, 2_800_000);
        assert_eq!(m.len(), 2);
        assert_eq!(m["lab"], None);
        let o = m["general"].clone().expect("over");
        assert_eq!(
            (o.ticket.as_str(), o.waited_min, o.slot_min),
            ("G-002", 46, 15)
        );
        assert_eq!(o.waiting, 2, "the called patient does not wait");
        assert_eq!(
            text(&o),
            "Queue general: G-002 has waited 46 min, longer than the booked 15 min slot \
             (2 waiting); consider rescheduling later appointments or extending slots"
        );
        let m = measure(&entries[..1], &slots, 900, 1_500_000);
        assert_eq!(m["general"], None, "8 min of a 10 min slot");
    }

    #[test]
    fn suggestions_are_valid_r4_tasks_or_communications() {
        let o = Overrun {
            queue: "general".into(),
            ticket: "G-001".into(),
            waited_min: 20,
            slot_min: 15,
            waiting: 3,
            appointment_ref: Some("Appointment/a".into()),
        };
        let at = "2026-11-24T10:00:00Z";
        let task = suggestion(&o, Suggest::Task, "c/1", Some("Group/s"), "urn:t", at);
        assert_eq!(super::super::validate::validate(&task), Ok(()));
        assert_eq!(task["focus"]["reference"], "Appointment/a");
        assert_eq!(task["owner"]["reference"], "Group/s");
        let c = suggestion(&o, Suggest::Communication, "c/1", None, "urn:t", at);
        assert_eq!(super::super::validate::validate(&c), Ok(()));
        assert_eq!(c["about"][0]["reference"], "Appointment/a");
        assert_eq!(c["payload"][0]["contentString"], text(&o));
    }

    #[test]
    fn slot_lengths_come_from_start_and_end_with_offsets() {
        let s = |a, b| seconds_between(a, b);
        assert_eq!(s("2026-11-24T09:00:00Z", "2026-11-24T09:15:00Z"), Some(900));
        assert_eq!(
            s("2026-11-24T09:00:00+01:00", "2026-11-24T08:20:00Z"),
            Some(1200)
        );
        assert_eq!(
            s("2026-02-28T23:50:00.000-05:00", "2026-03-01T05:10:00Z"),
            Some(1200)
        );
        assert_eq!(s("2026-11-24", "2026-11-24T09:15:00Z"), None);
        assert_eq!(s("2026-11-24T09:00:00", "2026-11-24T09:15:00Z"), None);
        assert_eq!(epoch_s("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(epoch_s("2000-03-01T00:00:00Z"), Some(951_868_800));
    }
}
