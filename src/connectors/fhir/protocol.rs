//! Pure FHIR logic: decoding the EHR's answers, the demographic fields the gateway may change,
//! comparing versions, conflict resolution and the loop-prevention tag. No I/O.
//!
//! A demographic change is described field by field ([`FIELDS`]); everything else in a Patient
//! is carried untouched from the version it was applied to.

use super::config::CheckInWhen;
use super::model::{
    Appointment, Bundle, Coding, ContactPoint, HumanName, Meta, OperationOutcome, Patient,
};
use crate::queue::Demographics;
use serde_json::Value;
use std::collections::BTreeMap;

/// The demographic fields a local change or a conflict resolution may set.
pub const FIELDS: &[&str] = &["family", "given", "birth_date", "gender", "phone"];

/// Values of demographic fields by name (`None`: the field is absent).
pub type Fields = BTreeMap<String, Option<String>>;

/// Why an answer from the EHR is not what was asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("expected a {expected}, got {got:?}")]
    WrongType { expected: &'static str, got: String },
    #[error("a {0} without an id")]
    NoId(&'static str),
    /// It does not conform to FHIR R4 (`what`: its type and id); nothing of it is applied.
    #[error("{what}: {invalid}")]
    Invalid {
        what: String,
        invalid: super::validate::Invalid,
    },
}

/// The resource if it conforms to FHIR R4, else why not, naming it.
pub fn conform(v: &Value) -> Result<(), DecodeError> {
    super::validate::validate(v).map_err(|invalid| DecodeError::Invalid {
        what: format!(
            "{}/{}",
            resource_type(v),
            v["id"].as_str().unwrap_or("(no id)")
        ),
        invalid,
    })
}

fn resource_type(v: &Value) -> String {
    v.get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A Patient (read, update or search entry) from its JSON.
pub fn decode_patient(v: Value) -> Result<Patient, DecodeError> {
    let got = resource_type(&v);
    if got != "Patient" {
        return Err(DecodeError::WrongType {
            expected: "Patient",
            got,
        });
    }
    conform(&v)?;
    let p: Patient = serde_json::from_value(v).map_err(|e| DecodeError::Json(e.to_string()))?;
    if p.id.as_deref().is_none_or(str::is_empty) {
        return Err(DecodeError::NoId("Patient"));
    }
    Ok(p)
}

/// A resource of type `kind` with an id, from an answer's bytes.
pub fn decode_resource(bytes: &[u8], kind: &'static str) -> Result<Value, DecodeError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string()))?;
    let got = resource_type(&v);
    if got != kind {
        return Err(DecodeError::WrongType {
            expected: kind,
            got,
        });
    }
    if v["id"].as_str().is_none_or(str::is_empty) {
        return Err(DecodeError::NoId(kind));
    }
    conform(&v)?;
    Ok(v)
}

/// The journal item of a resource version read from the EHR (an Encounter, a Flag): its type,
/// id, version and status only (no patient data), journaled once per version so that a version
/// read again by a later poll changes nothing.
pub fn received(resource: &Value) -> crate::journal::NewItem {
    let kind = resource["resourceType"].as_str().unwrap_or_default();
    let id = resource["id"].as_str().unwrap_or_default();
    let version = resource["meta"]["versionId"].as_str().unwrap_or_default();
    let payload = serde_json::json!({ "id": id, "version": version, "status": resource["status"] });
    let event = format!("fhir.{}_changed", kind.to_ascii_lowercase());
    crate::journal::NewItem {
        source: format!("fhir:{kind}"),
        source_id: Some(format!("{id}/{version}")),
        schema: format!("clinic-gateway/{event}@1"),
        kind: event,
        key: format!("fhir:{kind}/{id}"),
        payload: payload.to_string().into_bytes(),
        reply: None,
        occurred_at: None,
        destinations: Vec::new(),
    }
}

/// A search result page: its Patients (entries of other types, e.g. an OperationOutcome with
/// warnings, are skipped) and the URL of the next page.
pub fn decode_bundle(bytes: &[u8]) -> Result<(Vec<Value>, Option<String>), DecodeError> {
    let b: Bundle = serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string()))?;
    if b.resource_type != "Bundle" {
        return Err(DecodeError::WrongType {
            expected: "Bundle",
            got: b.resource_type,
        });
    }
    let next = b.next().map(str::to_string);
    Ok((
        b.entry.into_iter().filter_map(|e| e.resource).collect(),
        next,
    ))
}

/// An Appointment from its JSON.
pub fn decode_appointment(v: Value) -> Result<Appointment, DecodeError> {
    let got = resource_type(&v);
    if got != "Appointment" {
        return Err(DecodeError::WrongType {
            expected: "Appointment",
            got,
        });
    }
    conform(&v)?;
    let a: Appointment = serde_json::from_value(v).map_err(|e| DecodeError::Json(e.to_string()))?;
    if a.id.as_deref().is_none_or(str::is_empty) {
        return Err(DecodeError::NoId("Appointment"));
    }
    Ok(a)
}

/// What an appointment of today means for the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppointmentStep {
    /// Queue the patient (`Patient/<id>` → the id), once.
    Queue { patient_id: String },
    /// Close the appointment's open entry, and why.
    Close(Closing),
    /// Not (yet) for the queue.
    Wait,
}

/// Why an appointment's entry closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closing {
    /// Cancelled, entered in error, or gone from the EHR.
    Cancelled,
    NoShow,
    /// Moved to another day (the new start).
    Moved(Option<String>),
}

/// The queue's part in an appointment seen on `today` (`YYYY-MM-DD`, the clinic's day at
/// `utc_offset_min`). One on a later day was moved away; one on an earlier day is past (its
/// entry, if any, is left to staff rather than reported to the patient as a move).
pub fn appointment_step(
    a: &Appointment,
    today: &str,
    utc_offset_min: i32,
    when: CheckInWhen,
) -> AppointmentStep {
    let day = a
        .start
        .as_deref()
        .and_then(|s| crate::queue::schedule::day_of(s, utc_offset_min));
    match a.status.as_str() {
        "cancelled" | "entered-in-error" => return AppointmentStep::Close(Closing::Cancelled),
        "noshow" => return AppointmentStep::Close(Closing::NoShow),
        _ => {}
    }
    match day.as_deref() {
        Some(d) if d > today => return AppointmentStep::Close(Closing::Moved(a.start.clone())),
        Some(d) if d < today => return AppointmentStep::Wait,
        _ => {}
    }
    let due = match a.status.as_str() {
        "arrived" | "checked-in" => true,
        "booked" | "pending" => when == CheckInWhen::Booked,
        _ => false,
    };
    let patient = a.participant.iter().find_map(|p| {
        p.actor
            .as_ref()?
            .reference
            .as_deref()?
            .strip_prefix("Patient/")
            .map(str::to_string)
    });
    match (due, patient) {
        (true, Some(patient_id)) => AppointmentStep::Queue { patient_id },
        _ => AppointmentStep::Wait,
    }
}

/// The EHR's explanation of a refusal, if the body is an OperationOutcome.
pub fn outcome_summary(bytes: &[u8]) -> Option<String> {
    let o: OperationOutcome = serde_json::from_slice(bytes).ok()?;
    (o.resource_type == "OperationOutcome").then(|| o.summary())
}

/// A search parameter value with FHIR's special characters (`\` `,` `$` `|`) escaped, so a typed
/// identifier or name cannot turn into several values or a system.
pub fn search_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '\\' | ',' | '$' | '|') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Patients of a search page, and why the entries that are not usable Patients were refused.
pub fn patients(entries: Vec<Value>) -> (Vec<Patient>, Vec<DecodeError>) {
    let mut refused = Vec::new();
    let found = entries
        .into_iter()
        .filter(|e| resource_type(e) == "Patient")
        .filter_map(|e| decode_patient(e).map_err(|e| refused.push(e)).ok())
        .collect();
    (found, refused)
}

/// The value of the patient's identifier in `system`.
pub fn identifier(p: &Patient, system: &str) -> Option<String> {
    p.identifier
        .iter()
        .find(|i| i.system.as_deref() == Some(system))
        .and_then(|i| i.value.clone())
}

/// The current values of the demographic fields.
pub fn fields(p: &Patient) -> Fields {
    let name = p.name.first();
    let given = name.map(|n| n.given.join(" ")).filter(|g| !g.is_empty());
    let phone = p
        .telecom
        .iter()
        .find(|t| t.system.as_deref() == Some("phone"))
        .and_then(|t| t.value.clone());
    BTreeMap::from([
        ("family".into(), name.and_then(|n| n.family.clone())),
        ("given".into(), given),
        ("birth_date".into(), p.birth_date.clone()),
        ("gender".into(), p.gender.clone()),
        ("phone".into(), phone),
    ])
}

/// Why a field change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

/// Checks a set of field changes: known fields with plausible values.
pub fn check_fields(changes: &Fields) -> Result<(), FieldError> {
    let err = |field: &str, reason: &str| FieldError {
        field: field.into(),
        reason: reason.into(),
    };
    if changes.is_empty() {
        return Err(err("fields", "at least one field to change"));
    }
    for (field, value) in changes {
        if !FIELDS.contains(&field.as_str()) {
            return Err(err(
                field,
                &format!("not a field; one of {}", FIELDS.join(", ")),
            ));
        }
        let Some(v) = value else { continue };
        if v.trim().is_empty() || v.len() > 128 || v.chars().any(char::is_control) {
            return Err(err(field, "1 to 128 printable characters, or null"));
        }
        match field.as_str() {
            "birth_date" if !crate::queue::valid_date(v) => {
                return Err(err(field, "YYYY-MM-DD"));
            }
            "gender" if !["male", "female", "other", "unknown"].contains(&v.as_str()) => {
                return Err(err(field, "male, female, other or unknown"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `p` with the given fields set (checked by [`check_fields`]); everything else is kept.
pub fn apply(p: &Patient, changes: &Fields) -> Patient {
    let mut out = p.clone();
    for (field, value) in changes {
        match field.as_str() {
            "family" | "given" => {
                if out.name.is_empty() {
                    out.name.push(HumanName::default());
                }
                let name = &mut out.name[0];
                if field == "family" {
                    name.family = value.clone();
                } else {
                    name.given = value
                        .as_deref()
                        .map(|g| g.split_whitespace().map(str::to_string).collect())
                        .unwrap_or_default();
                }
            }
            "birth_date" => out.birth_date = value.clone(),
            "gender" => out.gender = value.clone(),
            "phone" => {
                let at = out
                    .telecom
                    .iter()
                    .position(|t| t.system.as_deref() == Some("phone"));
                match (at, value) {
                    (Some(i), Some(v)) => out.telecom[i].value = Some(v.clone()),
                    (Some(i), None) => {
                        out.telecom.remove(i);
                    }
                    (None, Some(v)) => out.telecom.push(ContactPoint {
                        system: Some("phone".into()),
                        value: Some(v.clone()),
                        ..Default::default()
                    }),
                    (None, None) => {}
                }
            }
            _ => {}
        }
    }
    out
}

/// The resource without its server-kept metadata (version, time, tags): what a write changes.
fn content(p: &Patient) -> Patient {
    let mut c = p.clone();
    c.meta = c.meta.map(|m| Meta {
        version_id: None,
        last_updated: None,
        tag: Vec::new(),
        extra: m.extra,
    });
    if c.meta.as_ref().is_some_and(|m| m.extra.is_empty()) {
        c.meta = None;
    }
    c
}

/// True when the two versions hold the same data: an update between them changes nothing.
pub fn same_content(a: &Patient, b: &Patient) -> bool {
    content(a) == content(b)
}

/// The demographic fields whose values differ between two versions.
pub fn differing_fields(a: &Patient, b: &Patient) -> Vec<String> {
    let (fa, fb) = (fields(a), fields(b));
    fa.into_iter()
        .filter(|(k, v)| fb.get(k) != Some(v))
        .map(|(k, _)| k)
        .collect()
}

/// `p` marked as written by this gateway (`meta.tag` with our system), for the PUT.
pub fn tagged(p: &Patient, system: &str) -> Patient {
    let mut out = p.clone();
    let meta = out.meta.get_or_insert_with(Meta::default);
    if !meta.tag.iter().any(|t| t.system.as_deref() == Some(system)) {
        meta.tag.push(Coding {
            system: Some(system.into()),
            code: Some("clinic-gateway".into()),
            ..Default::default()
        });
    }
    out
}

/// True when this version carries our write tag.
pub fn is_ours(p: &Patient, system: &str) -> bool {
    p.meta
        .as_ref()
        .is_some_and(|m| m.tag.iter().any(|t| t.system.as_deref() == Some(system)))
}

/// Which side a conflicting field takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Local,
    Remote,
}

/// The field values a resolution sets: each conflicting field from the side chosen for it.
/// Every field that differs between the two versions needs a choice; choices for fields that
/// do not differ are refused so a typo is not silently ignored.
pub fn resolution(
    local: &Patient,
    remote: &Patient,
    choices: &BTreeMap<String, Side>,
) -> Result<Fields, FieldError> {
    let differing = differing_fields(local, remote);
    if let Some(extra) = choices.keys().find(|k| !differing.contains(k)) {
        return Err(FieldError {
            field: extra.clone(),
            reason: format!("not in conflict; conflicting: {}", differing.join(", ")),
        });
    }
    let (lf, rf) = (fields(local), fields(remote));
    differing
        .iter()
        .map(|f| match choices.get(f) {
            Some(Side::Local) => Ok((f.clone(), lf.get(f).cloned().flatten())),
            Some(Side::Remote) => Ok((f.clone(), rf.get(f).cloned().flatten())),
            None => Err(FieldError {
                field: f.clone(),
                reason: "needs a choice: local or remote".into(),
            }),
        })
        .collect()
}

/// A Patient as the gateway keeps it: the last version synced with the EHR and, while a local
/// change waits for delivery, that changed version.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CachedPatient {
    pub id: String,
    /// The patient's identifier in the configured system.
    pub identifier: Option<String>,
    /// The EHR's `meta.versionId` of `synced`: the `If-Match` of the next update.
    pub version_id: Option<String>,
    pub synced: Patient,
    /// The local change not yet accepted by the EHR.
    pub local: Option<Patient>,
}

impl CachedPatient {
    /// The version a check-in shows: the local change if there is one.
    pub fn current(&self) -> &Patient {
        self.local.as_ref().unwrap_or(&self.synced)
    }
}

/// What a version read from the EHR did to the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not cached before; now it is.
    New,
    /// Not cached, and only patients already cached are followed.
    Ignored,
    /// The cache already holds this version (for instance the echo of our own write).
    Unchanged,
    /// A newer version replaced the synced one.
    Updated,
    /// The EHR changed a patient with an undelivered local change: a conflict record keeps both.
    Conflict(i64),
}

/// Both versions of a patient changed on both sides, kept until staff choose per field.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Conflict {
    pub id: i64,
    pub patient_id: String,
    /// The demographic fields that differ between the two versions.
    pub fields: Vec<String>,
    pub local: Patient,
    pub remote: Patient,
    pub created_at: i64,
    pub resolved_at: Option<i64>,
    /// The choice per field, once resolved.
    pub resolution: Option<BTreeMap<String, Side>>,
}

/// What a check-in shows of a patient.
pub fn demographics(p: &Patient, system: &str, source: &str) -> Demographics {
    let f = fields(p);
    let get = |k: &str| f.get(k).cloned().flatten();
    Demographics {
        patient_id: p.id.clone().unwrap_or_default(),
        identifier: identifier(p, system),
        family: get("family"),
        given: get("given"),
        birth_date: get("birth_date"),
        gender: get("gender"),
        source: source.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patient(v: Value) -> Patient {
        decode_patient(v).expect("patient")
    }

    fn doe() -> Patient {
        patient(json!({
            "resourceType": "Patient", "id": "p1",
            "meta": { "versionId": "v1", "lastUpdated": "2026-11-24T10:00:00Z", "source": "ehr" },
            "identifier": [{ "system": "urn:mrn", "value": "M1" }],
            "name": [{ "use": "official", "family": "Doe", "given": ["Jane", "Q"] }],
            "telecom": [{ "system": "email", "value": "j@x" }],
            "birthDate": "1980-02-03",
            "extension": [{ "url": "urn:ext", "valueString": "kept" }],
            "contact": [{ "name": { "family": "Roe" } }]
        }))
    }

    #[test]
    fn unknown_elements_survive_a_round_trip() {
        let p = doe();
        let back = serde_json::to_value(apply(&p, &Fields::new())).expect("json");
        assert_eq!(back["extension"][0]["valueString"], "kept");
        assert_eq!(back["contact"][0]["name"]["family"], "Roe");
        assert_eq!(back["name"][0]["use"], "official");
        assert_eq!(back["meta"]["source"], "ehr");
    }

    #[test]
    fn fields_are_read_and_set() {
        let p = doe();
        let f = fields(&p);
        assert_eq!(f["given"].as_deref(), Some("Jane Q"));
        assert_eq!(f["phone"], None);
        let changes = Fields::from([
            ("phone".into(), Some("+41 1".into())),
            ("given".into(), Some("Janet".into())),
        ]);
        check_fields(&changes).expect("valid");
        let q = apply(&p, &changes);
        assert_eq!(fields(&q)["phone"].as_deref(), Some("+41 1"));
        assert_eq!(q.name[0].given, ["Janet"]);
        assert_eq!(q.telecom.len(), 2, "the email stays");
        assert_eq!(differing_fields(&p, &q), ["given", "phone"]);
        assert!(!same_content(&p, &q));
        let back = apply(&q, &Fields::from([("phone".into(), None)]));
        assert_eq!(back.telecom.len(), 1);
    }

    #[test]
    fn bad_field_changes_name_the_field() {
        let bad = |k: &str, v: &str| {
            check_fields(&Fields::from([(k.into(), Some(v.into()))]))
                .expect_err(k)
                .field
        };
        assert_eq!(bad("birth_date", "1980-2-3"), "birth_date");
        assert_eq!(bad("gender", "f"), "gender");
        assert_eq!(bad("nickname", "x"), "nickname");
        assert!(check_fields(&Fields::new()).is_err());
    }

    #[test]
    fn metadata_and_tags_are_not_content() {
        let p = doe();
        let mut q = tagged(&p, "urn:gw");
        q.meta.as_mut().expect("meta").version_id = Some("v2".into());
        assert!(same_content(&p, &q));
        assert!(is_ours(&q, "urn:gw"));
        assert!(!is_ours(&p, "urn:gw"));
        assert_eq!(tagged(&q, "urn:gw").meta.expect("meta").tag.len(), 1);
    }

    #[test]
    fn a_resolution_needs_a_choice_per_conflicting_field() {
        let base = doe();
        let local = apply(&base, &Fields::from([("phone".into(), Some("1".into()))]));
        let remote = apply(&base, &Fields::from([("phone".into(), Some("2".into()))]));
        let none = resolution(&local, &remote, &BTreeMap::new()).expect_err("choice");
        assert_eq!(none.field, "phone");
        let extra = BTreeMap::from([
            ("phone".into(), Side::Local),
            ("family".into(), Side::Remote),
        ]);
        assert_eq!(
            resolution(&local, &remote, &extra)
                .expect_err("extra")
                .field,
            "family"
        );
        let pick = BTreeMap::from([("phone".into(), Side::Local)]);
        assert_eq!(
            resolution(&local, &remote, &pick).expect("resolved"),
            Fields::from([("phone".into(), Some("1".into()))])
        );
    }

    #[test]
    fn appointments_map_to_queue_steps() {
        let appt = |status: &str, start: &str| {
            decode_appointment(json!({
                "resourceType": "Appointment", "id": "a1", "status": status, "start": start,
                "end": start.replace(":00Z", ":20Z"),
                "participant": [{ "actor": { "reference": "Practitioner/d" }, "status": "accepted" },
                                { "actor": { "reference": "Patient/p1" }, "status": "accepted" }]
            }))
            .expect("appointment")
        };
        let day = "2026-11-24";
        let queue = AppointmentStep::Queue {
            patient_id: "p1".into(),
        };
        let at = "2026-11-24T09:30:00Z";
        let (arrived, booked) = (CheckInWhen::Arrived, CheckInWhen::Booked);
        let step = |a: &Appointment, offset: i32, when| appointment_step(a, day, offset, when);
        assert_eq!(step(&appt("arrived", at), 0, arrived), queue);
        assert_eq!(step(&appt("booked", at), 0, arrived), AppointmentStep::Wait);
        assert_eq!(step(&appt("booked", at), 0, booked), queue);
        let tomorrow = "2026-11-25T09:30:00Z";
        assert_eq!(
            step(&appt("booked", tomorrow), 0, booked),
            AppointmentStep::Close(Closing::Moved(Some(tomorrow.into())))
        );
        assert_eq!(
            step(&appt("booked", "2026-11-23T09:30:00Z"), 0, booked),
            AppointmentStep::Wait,
            "past: left to staff, not a move"
        );
        // 23:30 UTC on the 23rd is already the 24th at UTC+1.
        let late = "2026-11-23T23:30:00Z";
        assert_eq!(step(&appt("booked", late), 60, booked), queue);
        assert_eq!(
            step(&appt("noshow", at), 0, booked),
            AppointmentStep::Close(Closing::NoShow)
        );
        assert!(decode_appointment(json!({ "resourceType": "Appointment" })).is_err());
    }

    #[test]
    fn answers_are_decoded_or_refused() {
        let page = json!({ "resourceType": "Bundle", "type": "searchset",
            "link": [{ "relation": "next", "url": "http://h/Patient?_offset=2" }],
            "entry": [{ "resource": { "resourceType": "Patient", "id": "a" } },
                      { "resource": { "resourceType": "Patient" } },
                      { "resource": { "resourceType": "Patient", "id": "b", "gender": "x" } },
                      { "resource": { "resourceType": "OperationOutcome", "issue": [] } }] });
        let (entries, next) = decode_bundle(page.to_string().as_bytes()).expect("bundle");
        assert_eq!(next.as_deref(), Some("http://h/Patient?_offset=2"));
        let (found, refused) = patients(entries);
        assert_eq!(found.len(), 1);
        let why: Vec<String> = refused.iter().map(ToString::to_string).collect();
        assert_eq!(why.len(), 2, "{why:?}");
        assert_eq!(why[0], "a Patient without an id");
        assert!(
            why[1].starts_with("Patient/b: Patient is not valid FHIR R4: Patient.gender: \"x\""),
            "{why:?}"
        );
        assert!(decode_bundle(b"{").is_err());
        assert!(decode_bundle(br#"{"resourceType":"Patient"}"#).is_err());
        assert!(
            decode_patient(json!({"resourceType": "Patient", "name": "x", "id": "a"})).is_err()
        );
        let oo = br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"processing","details":{"text":"Precondition Failed"}}]}"#;
        assert_eq!(
            outcome_summary(oo).as_deref(),
            Some("error processing: Precondition Failed")
        );
        assert_eq!(search_escape(r"a,b|c$d\e"), r"a\,b\|c\$d\\e");
        let d = demographics(&doe(), "urn:mrn", "ehr");
        assert_eq!(d.identifier.as_deref(), Some("M1"));
        assert_eq!(d.family.as_deref(), Some("Doe"));
    }
}
