//! The gateway's records as FHIR R4 resources, pure: a queue entry's visit as an `Encounter`,
//! a booking as an `Appointment`, a cached EHR `Patient`, a priority `Flag`, a scheduling
//! suggestion as a `Task`, and an audit
//! record as an `AuditEvent` (IHE Basic Audit Log Patterns). Each comes with the values it is
//! searched by ([`Indexed`]).

use super::search::Indexed;
use crate::connectors::fhir::Suggestion;
use crate::connectors::fhir::config::Suggest;
use crate::connectors::fhir::encounter::IDENTIFIER_SYSTEM;
use crate::connectors::fhir::waits;
use crate::journal::chain::AuditRow;
use crate::queue::store::{BookingRow, FlagRow};
use crate::queue::{Entry, EntryState};
use serde_json::{Value, json};

const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

/// An instant as FHIR's `instant`/`dateTime` (UTC, milliseconds).
pub fn instant(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
}

/// The patient id of a reference `Patient/<id>`, or of a bare id.
fn patient_id(reference: &str) -> Option<String> {
    let id = reference.strip_prefix("Patient/").unwrap_or(reference);
    (!id.is_empty() && !id.contains('/')).then(|| id.to_string())
}

/// R4 `Encounter.status` of a queue entry's state: a checked-in patient has arrived.
fn encounter_status(state: EntryState) -> &'static str {
    match state {
        EntryState::Waiting | EntryState::Called => "arrived",
        EntryState::InRoom => "in-progress",
        EntryState::Done => "finished",
        EntryState::NoShow | EntryState::Cancelled | EntryState::Left => "cancelled",
    }
}

/// The visit of a queue entry, with `facility` in its identifier as the FHIR connector gives
/// it to the EHR, so that both name the same visit.
pub fn encounter(e: &Entry, facility: &str) -> Indexed {
    let patient = e
        .demographics
        .as_ref()
        .map(|d| d.patient_id.clone())
        .or_else(|| e.patient_ref.as_deref().and_then(patient_id));
    let updated = [e.called_at, e.in_room_at, e.closed_at]
        .into_iter()
        .flatten()
        .fold(e.arrived_at, i64::max);
    let status = encounter_status(e.state);
    let mut r = json!({
        "resourceType": "Encounter",
        "id": e.id.to_string(),
        "meta": { "lastUpdated": instant(updated) },
        "identifier": [{ "system": IDENTIFIER_SYSTEM, "value": format!("{facility}/{}", e.id) }],
        "status": status,
        "class": { "system": ACT_CODE, "code": "AMB", "display": "ambulatory" },
        "period": { "start": instant(e.arrived_at) },
    });
    if let Some(end) = e.closed_at {
        r["period"]["end"] = json!(instant(end));
    }
    if let Some(p) = &patient {
        r["subject"] = json!({ "reference": format!("Patient/{p}") });
    }
    if let Some(a) = e
        .appointment_ref
        .as_deref()
        .filter(|a| a.starts_with("Appointment/"))
    {
        r["appointment"] = json!([{ "reference": a }]);
    }
    if let Some(room) = &e.room {
        r["location"] = json!([{ "location": { "display": room }, "status": "active" }]);
    }
    Indexed {
        id: e.id.to_string(),
        patient,
        date: Some(e.arrived_at),
        status: Some(status.into()),
        last_updated: updated,
        resource: r,
    }
}

/// A booking as the `Appointment` it came from, as far as the gateway knows it: booked, for
/// its patient, at its start; `None` for a reference that is not an Appointment's.
pub fn appointment(b: &BookingRow) -> Option<Indexed> {
    let id = b.appointment_ref.strip_prefix("Appointment/")?.to_string();
    let patient = patient_id(&b.patient_ref);
    let mut participant = json!({ "status": "accepted" });
    if let Some(p) = &patient {
        participant["actor"] = json!({ "reference": format!("Patient/{p}") });
    }
    let r = json!({
        "resourceType": "Appointment",
        "id": id,
        "meta": { "lastUpdated": instant(b.updated_at) },
        "status": "booked",
        "serviceType": [{ "text": b.queue }],
        "start": instant(b.starts_at),
        // R4 requires an end of a booked Appointment (app-3); the queue keeps only the start,
        // so the end repeats it and the comment says so rather than inventing a slot.
        "end": instant(b.starts_at),
        "comment": "The gateway keeps the booked start only; end repeats it.",
        "participant": [participant],
    });
    Some(Indexed {
        id,
        patient,
        date: Some(b.starts_at),
        status: Some("booked".into()),
        last_updated: b.updated_at,
        resource: r,
    })
}

/// A cached EHR Patient, as last synced with the EHR.
pub fn patient(id: &str, synced: Value, updated_at: i64) -> Indexed {
    let mut r = synced;
    r["resourceType"] = json!("Patient");
    r["id"] = json!(id);
    r["meta"] = json!({ "lastUpdated": instant(updated_at) });
    Indexed {
        id: id.to_string(),
        patient: Some(id.to_string()),
        date: None,
        status: None,
        last_updated: updated_at,
        resource: r,
    }
}

/// A flag the EHR raised on a patient that the queue acts on (a priority), active while it
/// raises one.
pub fn flag(f: &FlagRow) -> Indexed {
    let status = if f.raises_priority {
        "active"
    } else {
        "inactive"
    };
    let r = json!({
        "resourceType": "Flag",
        "id": f.id,
        "meta": { "lastUpdated": instant(f.updated_at) },
        "status": status,
        "code": { "text": f.reason },
        "subject": { "reference": format!("Patient/{}", f.patient_id) },
    });
    Indexed {
        id: f.id.clone(),
        patient: Some(f.patient_id.clone()),
        date: None,
        status: Some(status.into()),
        last_updated: f.updated_at,
        resource: r,
    }
}

/// A scheduling suggestion the gateway raised (a queue's waits past its booked slots) as the
/// `Task` it sends the EHR; `None` when the connector sends such suggestions as
/// Communications instead. `id` is the journal's item id, `at` when it was committed.
pub fn task(id: i64, s: &Suggestion, at: i64) -> Option<Indexed> {
    if s.suggest != Suggest::Task {
        return None;
    }
    let mut r = waits::suggestion(
        &s.overrun,
        Suggest::Task,
        &s.identifier,
        s.owner.as_deref(),
        "",
        &s.at,
    );
    r["id"] = json!(id.to_string());
    // The API's own meta: the EHR's write tag means nothing to other readers.
    r["meta"] = json!({ "lastUpdated": instant(at) });
    Some(Indexed {
        id: id.to_string(),
        patient: None,
        date: None,
        status: r["status"].as_str().map(str::to_string),
        last_updated: at,
        resource: r,
    })
}

const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const AUDIT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const RESTFUL: &str = "http://hl7.org/fhir/restful-interaction";
/// The extension carrying the record's place in the audit's SHA-256 chain.
pub const CHAIN_EXTENSION: &str = "urn:clinic-gateway:audit-chain";

/// An audit record's IHE BALP type, subtype and action: a refusal is a DICOM security alert,
/// a login a DICOM user authentication, a FHIR API access a RESTful `read`/`search-type`,
/// anything else an application activity.
fn audit_codes(action: &str) -> (Value, Value, &'static str, &'static str) {
    let dcm =
        |code: &str, display: &str| json!({ "system": DCM, "code": code, "display": display });
    let rest = |code: &str| {
        let kind = json!({ "system": AUDIT_TYPE, "code": "rest", "display": "RESTful Operation" });
        (kind, json!({ "system": RESTFUL, "code": code }))
    };
    match action {
        "fhir.read" => {
            let (t, s) = rest("read");
            (t, s, "R", "0")
        }
        "fhir.search" => {
            let (t, s) = rest("search-type");
            (t, s, "E", "0")
        }
        "access.login" | "access.logout" => (
            dcm("110114", "User Authentication"),
            if action == "access.login" {
                dcm("110122", "Login")
            } else {
                dcm("110123", "Logout")
            },
            "E",
            "0",
        ),
        a if a.ends_with("_refused") || a == "access.refused" => (
            dcm("110113", "Security Alert"),
            json!({ "system": "urn:clinic-gateway:audit-action", "code": a }),
            "E",
            "4",
        ),
        a => (
            dcm("110100", "Application Activity"),
            json!({ "system": "urn:clinic-gateway:audit-action", "code": a }),
            "E",
            "0",
        ),
    }
}

/// An audit record as an `AuditEvent`: who (the actor as the agent's `who.display`, the
/// gateway as the reporting source), what (the patients its detail names, as entities), and
/// its link in the chain (the record's and the previous record's SHA-256, as an extension).
pub fn audit_event(row: &AuditRow, facility: &str) -> Indexed {
    let (kind, subtype, action, outcome) = audit_codes(&row.action);
    let detail: Value = serde_json::from_str(&row.detail).unwrap_or(Value::Null);
    let mut patients: Vec<String> = Vec::new();
    if let Some(p) = detail.get("patient").and_then(Value::as_str) {
        patients.extend(patient_id(p));
    }
    if let Some(list) = detail.get("patients").and_then(Value::as_array) {
        patients.extend(list.iter().filter_map(Value::as_str).filter_map(patient_id));
    }
    patients.sort();
    patients.dedup();
    let mut entities: Vec<Value> = patients
        .iter()
        .map(|p| {
            json!({
                "what": { "reference": format!("Patient/{p}") },
                "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                          "code": "1", "display": "Person" },
                "role": { "system": "http://terminology.hl7.org/CodeSystem/object-role",
                          "code": "1", "display": "Patient" },
            })
        })
        .collect();
    entities.push(json!({
        "what": { "identifier": { "system": "urn:clinic-gateway:audit", "value": row.id.to_string() } },
        "detail": [{ "type": "detail", "valueString": row.detail }],
    }));
    let r = json!({
        "resourceType": "AuditEvent",
        "id": row.id.to_string(),
        "meta": { "lastUpdated": instant(row.at) },
        "extension": [{
            "url": CHAIN_EXTENSION,
            "extension": [
                { "url": "hash", "valueString": row.hash },
                { "url": "previous", "valueString": row.prev_hash },
            ],
        }],
        "type": kind,
        "subtype": [subtype],
        "action": action,
        "recorded": instant(row.at),
        "outcome": outcome,
        "agent": [{
            "type": { "coding": [{ "system": DCM, "code": "110153", "display": "Source Role ID" }] },
            "who": { "display": row.actor },
            "requestor": true,
        }],
        "source": {
            "site": facility,
            "observer": { "display": format!("clinic-gateway {facility}") },
            "type": [{ "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                       "code": "4", "display": "Application Server" }],
        },
        "entity": entities,
    });
    Indexed {
        id: row.id.to_string(),
        patient: patients.into_iter().next(),
        date: Some(row.at),
        status: None,
        last_updated: row.at,
        resource: r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::fhir::validate::validate;
    use crate::queue::{Demographics, Priority};

    fn check(r: &Indexed) {
        if let Err(e) = validate(&r.resource) {
            panic!("{e}: {}", r.resource);
        }
    }

    #[test]
    fn every_mapped_resource_is_valid_r4() {
        let entry = Entry {
            id: 7,
            queue: "gp".into(),
            ticket: "A-007".into(),
            patient_ref: None,
            appointment_ref: Some("Appointment/a-1".into()),
            priority: Priority::Normal,
            priority_reason: None,
            state: EntryState::InRoom,
            room: Some("3".into()),
            arrived_at: 1_796_169_600_000,
            called_at: Some(1_796_169_700_000),
            in_room_at: Some(1_796_169_800_000),
            closed_at: None,
            awaiting_results: false,
            demographics: Some(Demographics {
                patient_id: "p-1".into(),
                identifier: None,
                family: None,
                given: None,
                birth_date: None,
                gender: None,
                source: "ehr".into(),
            }),
        };
        let e = encounter(&entry, "clinic");
        check(&e);
        assert_eq!(
            (e.patient.as_deref(), e.status.as_deref(), e.last_updated),
            (Some("p-1"), Some("in-progress"), 1_796_169_800_000)
        );
        assert_eq!(
            e.resource["meta"]["lastUpdated"],
            "2026-12-02T00:03:20.000Z"
        );
        let b = BookingRow {
            appointment_ref: "Appointment/a-1".into(),
            patient_ref: "Patient/p-1".into(),
            starts_at: 1_796_169_600_000,
            queue: "gp".into(),
            updated_at: 1,
        };
        check(&appointment(&b).expect("an appointment"));
        let p = patient(
            "p-1",
            json!({ "resourceType": "Patient", "gender": "female" }),
            5,
        );
        check(&p);
        let suggestion = Suggestion {
            overrun: waits::Overrun {
                queue: "gp".into(),
                ticket: "A-003".into(),
                waited_min: 40,
                slot_min: 15,
                waiting: 4,
                appointment_ref: None,
            },
            identifier: "clinic/gp/1".into(),
            suggest: Suggest::Task,
            owner: Some("Group/scheduling".into()),
            at: "2026-12-02T09:00:00Z".into(),
        };
        let t = task(4, &suggestion, 5).expect("a Task");
        check(&t);
        assert_eq!(t.status.as_deref(), Some("requested"));
        check(&flag(&FlagRow {
            id: "f-1".into(),
            patient_id: "p-1".into(),
            raises_priority: true,
            reason: "wheelchair".into(),
            updated_at: 9,
        }));
    }

    #[test]
    fn an_audit_record_is_a_valid_audit_event_naming_its_patients_and_chain() {
        let row = AuditRow {
            id: 12,
            at: 1_796_169_600_000,
            actor: "client:ehr".into(),
            action: "fhir.search".into(),
            detail: json!({ "patients": ["Patient/p-1", "Patient/p-2"] }).to_string(),
            prev_hash: "ab".repeat(32),
            hash: "cd".repeat(32),
        };
        let a = audit_event(&row, "clinic");
        check(&a);
        let r = &a.resource;
        assert_eq!(r["subtype"][0]["code"], "search-type");
        assert_eq!(r["entity"][1]["what"]["reference"], "Patient/p-2");
        assert_eq!(
            r["extension"][0]["extension"][0]["valueString"],
            "cd".repeat(32)
        );
        let refused = AuditRow {
            action: "access.token_refused".into(),
            detail: "{}".into(),
            ..row
        };
        let a = audit_event(&refused, "clinic");
        check(&a);
        assert_eq!(
            (
                a.resource["type"]["code"].as_str(),
                a.resource["outcome"].as_str()
            ),
            (Some("110113"), Some("4"))
        );
    }
}
