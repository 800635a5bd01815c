//! Registering at the kiosk what the EHR does not know yet (facility settings,
//! `[connectors.fhir.registration]`): a patient the EHR answered it has no record of becomes a
//! new `Patient`, and a walk-in (an entry without an appointment) gets an `Appointment`, so the
//! visit exists in the schedule. Pure: the journal writer commits a [`Registration`] with the
//! check-in (or with the patient's link to the entry) in the `ehr-fhir` outbox; the connector
//! creates the resource conditionally on our identifier (a retry finds the first) and links it
//! back to the entry.

use crate::journal::NewItem;
use crate::queue::{CheckIn, Entry, Hook, PatientSearch};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The outbox row kinds.
pub const NEW_PATIENT: &str = "fhir.new_patient";
pub const WALK_IN: &str = "fhir.walk_in";
/// The identifier system of what the gateway registers; the value is `<facility>/<entry>`.
pub const IDENTIFIER_SYSTEM: &str = "urn:clinic-gateway:registration";
const APPOINTMENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v2-0276";

/// What the journal writer registers, from `[connectors.fhir.registration]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The gateway's facility id (in the identifiers).
    pub facility: String,
    pub create_patients: bool,
    /// The length of walk-in Appointments; `None`: none are created.
    pub walk_in_minutes: Option<u32>,
}

impl Policy {
    pub fn new(facility: &str, r: &super::config::RegistrationConfig) -> Policy {
        Policy {
            facility: facility.to_string(),
            create_patients: r.create_patients,
            walk_in_minutes: r.walk_in_appointments.then_some(r.walk_in_minutes),
        }
    }
}

impl Hook for Policy {
    /// What a new check-in registers: the unknown patient, or the walk-in's visit.
    fn on_check_in(&self, entry: &Entry, check_in: &CheckIn, now: i64) -> Option<NewItem> {
        match (&check_in.patient, check_in.unknown_to_ehr) {
            (Some(name), true) if self.create_patients && entry.demographics.is_none() => {
                new_patient(entry, name, &self.facility, now)
            }
            _ => self.on_patient(entry, now),
        }
    }

    /// What an entry that has (just got) its EHR patient registers: the walk-in's visit.
    fn on_patient(&self, entry: &Entry, now: i64) -> Option<NewItem> {
        walk_in(entry, self.walk_in_minutes?, &self.facility, now)
    }
}

/// What the EHR is asked to create for one queue entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub entry: i64,
    /// `<facility>/<entry>`, in [`IDENTIFIER_SYSTEM`].
    pub identifier: String,
    pub queue: String,
    #[serde(flatten)]
    pub what: What,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "create", rename_all = "snake_case")]
pub enum What {
    /// A Patient from the name and birth date given at the kiosk.
    Patient { name: PatientSearch },
    /// The walk-in's Appointment: arrived now, for `minutes`.
    Appointment {
        patient_id: String,
        start_ms: i64,
        minutes: u32,
    },
}

fn item(r: &Registration, kind: &str, now: i64) -> Option<NewItem> {
    Some(NewItem {
        source: "queue".into(),
        source_id: None,
        kind: kind.into(),
        // One entry's registrations reach the EHR in order: the patient before their visit.
        key: format!("fhir:registration/{}", r.identifier),
        schema: format!("clinic-gateway/{kind}@1"),
        payload: serde_json::to_vec(r).ok()?,
        reply: None,
        occurred_at: Some(now),
        destinations: vec![super::DESTINATION.into()],
    })
}

/// The new Patient for an entry whose patient the EHR does not know, named at check-in.
fn new_patient(entry: &Entry, name: &PatientSearch, facility: &str, now: i64) -> Option<NewItem> {
    let r = Registration {
        entry: entry.id,
        identifier: format!("{facility}/{}", entry.id),
        queue: entry.queue.clone(),
        what: What::Patient { name: name.clone() },
    };
    item(&r, NEW_PATIENT, now)
}

/// The walk-in Appointment of an entry that has an EHR patient and no appointment.
fn walk_in(entry: &Entry, minutes: u32, facility: &str, now: i64) -> Option<NewItem> {
    if entry.appointment_ref.is_some() || !entry.state.is_open() {
        return None;
    }
    let r = Registration {
        entry: entry.id,
        identifier: format!("{facility}/{}", entry.id),
        queue: entry.queue.clone(),
        what: What::Appointment {
            patient_id: entry.demographics.as_ref()?.patient_id.clone(),
            start_ms: entry.arrived_at,
            minutes,
        },
    };
    item(&r, WALK_IN, now)
}

fn instant(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The resource type and body to create, tagged as the gateway's write.
pub fn resource(r: &Registration, tag_system: &str) -> (&'static str, Value) {
    let meta = json!({ "tag": [{ "system": tag_system, "code": "clinic-gateway" }] });
    let identifier = json!([{ "use": "temp", "system": IDENTIFIER_SYSTEM, "value": r.identifier }]);
    match &r.what {
        What::Patient { name } => {
            let mut n = json!({ "use": "official", "family": name.family });
            if let Some(g) = &name.given {
                n["given"] = json!([g]);
            }
            let p = json!({
                "resourceType": "Patient", "meta": meta, "identifier": identifier,
                "active": true, "name": [n], "birthDate": name.birth_date,
            });
            ("Patient", p)
        }
        What::Appointment {
            patient_id,
            start_ms,
            minutes,
        } => {
            let end = start_ms + i64::from(*minutes) * 60_000;
            let a = json!({
                "resourceType": "Appointment", "meta": meta, "identifier": identifier,
                "status": "arrived",
                "appointmentType": { "coding": [{ "system": APPOINTMENT_TYPE, "code": "WALKIN", "display": "A previously unscheduled walk-in visit" }] },
                "serviceType": [{ "text": r.queue }],
                "start": instant(*start_ms), "end": instant(end), "minutesDuration": minutes,
                "participant": [{ "actor": { "reference": format!("Patient/{patient_id}") }, "status": "accepted" }],
            });
            ("Appointment", a)
        }
    }
}

/// The search that finds what a registration created before (conditional create).
pub fn search(r: &Registration) -> String {
    format!("identifier={IDENTIFIER_SYSTEM}|{}", r.identifier)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Demographics, EntryState, Priority};

    fn entry() -> Entry {
        Entry {
            id: 4,
            queue: "general".into(),
            ticket: "G-004".into(),
            patient_ref: None,
            appointment_ref: None,
            priority: Priority::Normal,
            priority_reason: None,
            state: EntryState::Waiting,
            room: None,
            arrived_at: 1_764_000_000_000,
            called_at: None,
            in_room_at: None,
            closed_at: None,
            awaiting_results: false,
            demographics: None,
        }
    }

    fn registration(i: &NewItem) -> Registration {
        serde_json::from_slice(&i.payload).expect("payload")
    }

    #[test]
    fn walk_ins_with_an_ehr_patient_get_a_valid_appointment() {
        let mut e = entry();
        assert_eq!(walk_in(&e, 15, "c", 0), None, "no EHR patient yet");
        e.demographics = Some(Demographics {
            patient_id: "p9".into(),
            identifier: None,
            family: None,
            given: None,
            birth_date: None,
            gender: None,
            source: "ehr".into(),
        });
        let item = walk_in(&e, 15, "c", 0).expect("walk-in");
        assert_eq!(item.kind, WALK_IN);
        let r = registration(&item);
        let (kind, a) = resource(&r, "urn:t");
        assert_eq!(kind, "Appointment");
        assert_eq!(super::super::validate::validate(&a), Ok(()));
        assert_eq!(a["participant"][0]["actor"]["reference"], "Patient/p9");
        assert_eq!(a["end"], "2025-11-24T16:15:00Z");
        assert_eq!(search(&r), "identifier=urn:clinic-gateway:registration|c/4");
        e.appointment_ref = Some("Appointment/a".into());
        assert_eq!(walk_in(&e, 15, "c", 0), None, "booked already");
    }

    #[test]
    fn unknown_patients_become_valid_patients() {
        let name = PatientSearch {
            family: "Nguyen".into(),
            given: Some("An".into()),
            birth_date: "1990-01-02".into(),
        };
        let r = registration(&new_patient(&entry(), &name, "c", 0).expect("item"));
        let (kind, p) = resource(&r, "urn:t");
        assert_eq!(kind, "Patient");
        assert_eq!(super::super::validate::validate(&p), Ok(()));
        assert_eq!(p["name"][0]["given"][0], "An");
        assert_eq!(p["birthDate"], "1990-01-02");
    }
}
