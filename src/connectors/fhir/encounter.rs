//! The visit as the EHR sees it: a FHIR `Encounter` per queue entry, opened when the patient is
//! called (`arrived`), moved to `in-progress` when they are in a room and `cancelled` when a
//! called patient leaves unseen, so that the chart is open for the provider. Pure: the journal
//! writer commits an [`EncounterNotice`] with the queue change that causes it (`ehr-fhir`
//! outbox, kind [`KIND`]); the connector turns it into a create or an update.
//!
//! The EHR finishes the visit: an Encounter it marks `finished` (found through our identifier or
//! the entry's appointment) completes the queue entry ([`finished_visit`]).

use crate::journal::NewItem;
use crate::queue::{Action, Entry, EntryState, FromEhr, Hook};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The outbox row kind of an Encounter change.
pub const KIND: &str = "fhir.encounter";
/// The identifier system of the Encounters the gateway opens; the value is
/// `<facility>/<queue entry id>`, so a retried create finds the first one.
pub const IDENTIFIER_SYSTEM: &str = "urn:clinic-gateway:queue-entry";
const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

/// What the EHR is told about one entry's visit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncounterNotice {
    pub entry: i64,
    /// `<facility>/<entry>`, the Encounter's identifier in [`IDENTIFIER_SYSTEM`].
    pub identifier: String,
    /// The EHR's Patient id.
    pub patient_id: String,
    /// The EHR's Appointment id, when the entry came from one.
    pub appointment_id: Option<String>,
    /// `arrived`, `in-progress` or `cancelled`.
    pub status: String,
    pub room: Option<String>,
    /// When the patient was called (the visit's start), ms since the epoch.
    pub called_at: i64,
}

/// The queue hook that opens and moves the visit's Encounter (`[connectors.fhir] on_call =
/// "encounter"`), with the facility id for its identifier.
#[derive(Debug, Clone)]
pub struct VisitNotice {
    pub facility: String,
}

impl Hook for VisitNotice {
    fn on_action(&self, entry: &Entry, action: &Action, now: i64) -> Option<NewItem> {
        notice(entry, action, &self.facility, now)
    }
}

/// The notice a queue change sends the EHR, if any: a call (`arrived`), a room (`in-progress`),
/// or a called patient who left, did not show or was cancelled (`cancelled`). Entries without
/// an EHR patient (no demographics) have no chart to open.
pub fn notice(entry: &Entry, action: &Action, facility: &str, now: i64) -> Option<NewItem> {
    let patient_id = entry.demographics.as_ref()?.patient_id.clone();
    let status = match (action, entry.state) {
        (Action::Call { .. }, EntryState::Called) => "arrived",
        (Action::AssignRoom { .. }, EntryState::InRoom) => "in-progress",
        (Action::Reroute { .. }, EntryState::Called) => "arrived",
        (Action::Reroute { .. }, EntryState::InRoom) => "in-progress",
        (Action::NoShow | Action::Left | Action::Cancel, _) if entry.called_at.is_some() => {
            "cancelled"
        }
        _ => return None,
    };
    let n = EncounterNotice {
        entry: entry.id,
        identifier: format!("{facility}/{}", entry.id),
        patient_id,
        appointment_id: entry
            .appointment_ref
            .as_deref()
            .and_then(|r| r.strip_prefix("Appointment/"))
            .map(str::to_string),
        status: status.into(),
        room: entry.room.clone(),
        called_at: entry.called_at.unwrap_or(now),
    };
    Some(NewItem {
        source: "queue".into(),
        source_id: None,
        kind: KIND.into(),
        // One entry's notices reach the EHR in order (arrived before in-progress).
        key: format!("fhir:Encounter/{}", n.identifier),
        schema: format!("clinic-gateway/{KIND}@1"),
        payload: serde_json::to_vec(&n).ok()?,
        reply: None,
        occurred_at: Some(now),
        destinations: vec![super::DESTINATION.into()],
    })
}

fn instant(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// How far along the visit a status is; `None` for the end states nothing moves on from.
fn rank(status: &str) -> Option<u8> {
    match status {
        "planned" => Some(0),
        "arrived" => Some(1),
        "triaged" => Some(2),
        "in-progress" | "onleave" => Some(3),
        "cancelled" => Some(4),
        _ => None,
    }
}

fn tag(system: &str) -> Value {
    json!({ "system": system, "code": "clinic-gateway" })
}

/// The search that finds the Encounter a notice concerns (conditional create).
pub fn search(n: &EncounterNotice) -> String {
    format!("identifier={IDENTIFIER_SYSTEM}|{}", n.identifier)
}

/// A new Encounter for a notice, tagged as the gateway's write.
pub fn create(n: &EncounterNotice, tag_system: &str) -> Value {
    let mut e = json!({
        "resourceType": "Encounter",
        "meta": { "tag": [tag(tag_system)] },
        "identifier": [{ "system": IDENTIFIER_SYSTEM, "value": n.identifier }],
        "status": n.status,
        "class": { "system": ACT_CODE, "code": "AMB", "display": "ambulatory" },
        "subject": { "reference": format!("Patient/{}", n.patient_id) },
        "period": { "start": instant(n.called_at) },
    });
    if let Some(a) = &n.appointment_id {
        e["appointment"] = json!([{ "reference": format!("Appointment/{a}") }]);
    }
    if let Some(room) = &n.room {
        e["location"] = json!([{ "location": { "display": room }, "status": "active" }]);
    }
    e
}

/// The EHR's Encounter moved on to the notice's status, or `None` when it is there or further
/// already (the EHR, or a later notice, moved it on; a visit never goes back), or ended.
/// Everything else in it is kept; the previous status goes to `statusHistory`.
pub fn advance(current: &Value, n: &EncounterNotice, tag_system: &str, now: i64) -> Option<Value> {
    let from = current["status"].as_str().unwrap_or_default();
    let (have, want) = (rank(from)?, rank(&n.status)?);
    let moves_on = if n.status == "cancelled" {
        have < rank("in-progress")?
    } else {
        want > have
    };
    if !moves_on {
        return None;
    }
    let mut e = current.clone();
    let at = instant(now);
    let start = e["period"]["start"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| instant(n.called_at));
    let history = json!({ "status": from, "period": { "start": start, "end": at } });
    match e["statusHistory"].as_array_mut() {
        Some(h) => h.push(history),
        None => e["statusHistory"] = json!([history]),
    }
    e["status"] = json!(n.status);
    if let Some(room) = &n.room {
        e["location"] = json!([{ "location": { "display": room }, "status": "active" }]);
    }
    let tags = &mut e["meta"]["tag"];
    if !tags
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t["system"] == tag_system))
    {
        match tags.as_array_mut() {
            Some(t) => t.push(tag(tag_system)),
            None => *tags = json!([tag(tag_system)]),
        }
    }
    Some(e)
}

/// What an Encounter read from the EHR does to the queue: `finished` completes the entry it
/// belongs to (ours through the identifier, or the entry of its appointment); `cancelled` by
/// the EHR cancels it. Other statuses, and our own cancellations, change nothing.
pub fn finished_visit(e: &Value, facility: &str, tag_system: &str) -> Option<FromEhr> {
    let finished = match e["status"].as_str()? {
        "finished" => true,
        "cancelled" => false,
        _ => return None,
    };
    let ours = e["meta"]["tag"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t["system"] == tag_system));
    if !finished && ours {
        return None;
    }
    let prefix = format!("{facility}/");
    let entries: Vec<i64> = e["identifier"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["system"] == IDENTIFIER_SYSTEM)
        .filter_map(|i| i["value"].as_str()?.strip_prefix(&prefix)?.parse().ok())
        .collect();
    let appointment_refs: Vec<String> = e["appointment"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["reference"].as_str())
        .filter(|r| r.starts_with("Appointment/"))
        .map(str::to_string)
        .collect();
    if entries.is_empty() && appointment_refs.is_empty() {
        return None;
    }
    Some(FromEhr::Visit {
        finished,
        entries,
        appointment_refs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Demographics, Priority};

    fn entry(state: EntryState) -> Entry {
        Entry {
            id: 7,
            queue: "general".into(),
            ticket: "G-007".into(),
            patient_ref: Some("MRN1".into()),
            appointment_ref: Some("Appointment/ap1".into()),
            priority: Priority::Normal,
            priority_reason: None,
            state,
            room: Some("Room 3".into()),
            arrived_at: 1_000,
            called_at: Some(1_700_000_000_000),
            in_room_at: None,
            closed_at: None,
            awaiting_results: false,
            demographics: Some(Demographics {
                patient_id: "p1".into(),
                identifier: Some("MRN1".into()),
                family: None,
                given: None,
                birth_date: None,
                gender: None,
                source: "ehr".into(),
            }),
        }
    }

    fn notice_of(e: &Entry, a: &Action) -> Option<EncounterNotice> {
        notice(e, a, "clinic-1", 5).map(|i| serde_json::from_slice(&i.payload).expect("json"))
    }

    #[test]
    fn calls_rooms_and_unseen_exits_become_notices() {
        let call = Action::Call { room: None };
        let n = notice_of(&entry(EntryState::Called), &call).expect("call");
        assert_eq!(n.status, "arrived");
        assert_eq!(n.identifier, "clinic-1/7");
        assert_eq!(n.appointment_id.as_deref(), Some("ap1"));
        let room = Action::AssignRoom { room: "3".into() };
        assert_eq!(
            notice_of(&entry(EntryState::InRoom), &room).map(|n| n.status),
            Some("in-progress".into())
        );
        assert_eq!(
            notice_of(&entry(EntryState::Left), &Action::Left).map(|n| n.status),
            Some("cancelled".into())
        );
        assert_eq!(notice_of(&entry(EntryState::Done), &Action::Complete), None);
        let mut waiting = entry(EntryState::Cancelled);
        waiting.called_at = None;
        assert_eq!(notice_of(&waiting, &Action::Cancel), None, "never called");
        let mut walk_in = entry(EntryState::Called);
        walk_in.demographics = None;
        assert_eq!(notice_of(&walk_in, &call), None, "no chart to open");
    }

    #[test]
    fn an_encounter_only_moves_forward_and_keeps_what_the_ehr_wrote() {
        let n = notice_of(
            &entry(EntryState::InRoom),
            &Action::AssignRoom { room: "3".into() },
        )
        .expect("notice");
        let mut current = create(
            &EncounterNotice {
                status: "arrived".into(),
                ..n.clone()
            },
            "urn:tag",
        );
        current["serviceType"] = json!({ "text": "kept" });
        let moved = advance(&current, &n, "urn:tag", 1_700_000_060_000).expect("moves on");
        assert_eq!(moved["status"], "in-progress");
        assert_eq!(moved["serviceType"]["text"], "kept");
        assert_eq!(moved["statusHistory"][0]["status"], "arrived");
        assert_eq!(
            moved["meta"]["tag"].as_array().map(Vec::len),
            Some(1),
            "tagged once"
        );
        assert_eq!(advance(&moved, &n, "urn:tag", 0), None, "already there");
        let back = EncounterNotice {
            status: "arrived".into(),
            ..n.clone()
        };
        assert_eq!(advance(&moved, &back, "urn:tag", 0), None, "never back");
        let cancel = EncounterNotice {
            status: "cancelled".into(),
            ..n.clone()
        };
        assert_eq!(advance(&moved, &cancel, "urn:tag", 0), None, "seen already");
        assert!(advance(&current, &cancel, "urn:tag", 0).is_some());
        let finished = json!({ "resourceType": "Encounter", "status": "finished" });
        assert_eq!(advance(&finished, &n, "urn:tag", 0), None);
    }

    #[test]
    fn finished_encounters_name_their_entry_or_appointment() {
        let n =
            notice_of(&entry(EntryState::Called), &Action::Call { room: None }).expect("notice");
        let mut e = create(&n, "urn:tag");
        assert_eq!(finished_visit(&e, "clinic-1", "urn:tag"), None, "arrived");
        e["status"] = json!("finished");
        assert_eq!(
            finished_visit(&e, "clinic-1", "urn:tag"),
            Some(FromEhr::Visit {
                finished: true,
                entries: vec![7],
                appointment_refs: vec!["Appointment/ap1".into()],
            })
        );
        let other = finished_visit(&e, "clinic-2", "urn:tag").expect("appointment");
        assert!(matches!(other, FromEhr::Visit { ref entries, .. } if entries.is_empty()));
        e["status"] = json!("cancelled");
        assert_eq!(finished_visit(&e, "clinic-1", "urn:tag"), None, "our own");
        let theirs = json!({ "resourceType": "Encounter", "status": "cancelled",
            "appointment": [{ "reference": "Appointment/ap9" }] });
        assert!(matches!(
            finished_visit(&theirs, "clinic-1", "urn:tag"),
            Some(FromEhr::Visit {
                finished: false,
                ..
            })
        ));
        let unlinked = json!({ "resourceType": "Encounter", "status": "finished" });
        assert_eq!(finished_visit(&unlinked, "clinic-1", "urn:tag"), None);
    }
}
