use crate::journal::{Extensions, JournalError, OpenOptions, Store};
use std::path::Path;

fn open(path: &Path) -> Store {
    Store::open(
        path,
        &OpenOptions {
            create: true,
            verify: true,
            key: None,
        },
        &[&super::SCHEMA],
    )
    .expect("open")
}

fn fhir_patient(version: &str, phone: &str) -> crate::connectors::fhir::model::Patient {
    crate::connectors::fhir::protocol::decode_patient(serde_json::json!({
        "resourceType": "Patient", "id": "p1",
        "meta": { "versionId": version, "lastUpdated": "2026-11-24T10:00:00Z" },
        "identifier": [{ "system": "urn:mrn", "value": "M1" }],
        "name": [{ "family": "Doe", "given": ["Jane"] }],
        "telecom": [{ "system": "phone", "value": phone }],
        "birthDate": "1980-02-03"
    }))
    .expect("patient")
}

#[test]
fn a_polled_change_meeting_an_undelivered_local_one_is_kept_as_a_conflict() {
    use crate::connectors::fhir::protocol::{Fields, Seen};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&dir.path().join("j.db"));
    let phone = |v: &str| Fields::from([("phone".to_string(), Some(v.to_string()))]);
    store
        .with_batch(|b| {
            // Polls follow only cached patients.
            assert_eq!(
                super::fhir_seen(
                    &mut b.work(&Extensions::default()),
                    &fhir_patient("v1", "0"),
                    None,
                    false,
                    1
                )?,
                Seen::Ignored
            );
            assert_eq!(
                super::fhir_seen(
                    &mut b.work(&Extensions::default()),
                    &fhir_patient("v1", "0"),
                    Some("M1"),
                    true,
                    1
                )?,
                Seen::New
            );
            assert_eq!(
                super::fhir_seen(
                    &mut b.work(&Extensions::default()),
                    &fhir_patient("v1", "0"),
                    None,
                    false,
                    2
                )?,
                Seen::Unchanged
            );
            assert!(super::fhir_edit(
                &mut b.work(&Extensions::default()),
                "p1",
                &phone("1"),
                "desk",
                3
            )?);
            assert!(
                !super::fhir_edit(
                    &mut b.work(&Extensions::default()),
                    "p1",
                    &phone("1"),
                    "desk",
                    3
                )?,
                "no change, nothing sent"
            );
            // The EHR made the same change: settled without a conflict.
            assert_eq!(
                super::fhir_seen(
                    &mut b.work(&Extensions::default()),
                    &fhir_patient("v2", "1"),
                    None,
                    false,
                    4
                )?,
                Seen::Updated
            );
            let cached =
                super::fhir_patient(&mut b.work(&Extensions::default()), "p1")?.expect("cached");
            assert_eq!(
                (cached.version_id.as_deref(), cached.local),
                (Some("v2"), None)
            );
            // A different change on each side: both kept.
            assert!(super::fhir_edit(
                &mut b.work(&Extensions::default()),
                "p1",
                &phone("2"),
                "desk",
                5
            )?);
            let Seen::Conflict(id) = super::fhir_seen(
                &mut b.work(&Extensions::default()),
                &fhir_patient("v3", "3"),
                None,
                false,
                6,
            )?
            else {
                panic!("expected a conflict");
            };
            let open = super::fhir_conflicts(&mut b.work(&Extensions::default()), false)?;
            assert_eq!((open.len(), open[0].id), (1, id));
            assert_eq!(open[0].fields, ["phone"]);
            assert!(matches!(
                super::fhir_edit(
                    &mut b.work(&Extensions::default()),
                    "p1",
                    &phone("4"),
                    "desk",
                    7
                ),
                Err(JournalError::Rejected(_))
            ));
            let cached =
                super::fhir_patient(&mut b.work(&Extensions::default()), "p1")?.expect("cached");
            assert_eq!(cached.local, None, "the local change waits in the conflict");
            assert_eq!(
                super::fhir_find(&mut b.work(&Extensions::default()), Some("M1"), None, None)?
                    .len(),
                1
            );
            assert_eq!(
                super::fhir_find(
                    &mut b.work(&Extensions::default()),
                    None,
                    Some("DOE"),
                    Some("1980-02-03")
                )?
                .len(),
                1
            );
            Ok(())
        })
        .expect("batch");
}

#[test]
fn a_newer_ehr_version_reaches_the_open_entries_showing_the_patient() {
    use crate::connectors::fhir::requests::FhirSeen;
    use crate::journal::Work;
    use crate::queue::{CheckIn, Priority};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(
        &dir.path().join("j.db"),
        &OpenOptions {
            create: true,
            verify: true,
            key: None,
        },
        &[
            &super::SCHEMA,
            &crate::queue::store::SCHEMA,
            &crate::notices::store::SCHEMA,
        ],
    )
    .expect("open");
    let ext = Extensions::default();
    let first = fhir_patient("1", "555-0100");
    let demographics = crate::connectors::fhir::protocol::demographics(&first, "urn:mrn", "ehr");
    let check_in = CheckIn {
        patient_ref: Some("M1".into()),
        appointment_ref: None,
        priority: Priority::Normal,
        priority_reason: None,
        request_id: None,
        printer: None,
        contact: None,
        patient: None,
        demographics: Some(demographics),
        unknown_to_ehr: false,
    };
    store
        .with_batch(|b| {
            super::fhir_seen(&mut b.work(&ext), &first, Some("M1"), true, 1)?;
            crate::queue::store::queue_check_in(&mut b.work(&ext), "general", &check_in, None, 2)
        })
        .expect("cached and checked in");
    let renamed = crate::connectors::fhir::protocol::decode_patient(serde_json::json!({
        "resourceType": "Patient", "id": "p1",
        "meta": { "versionId": "2", "lastUpdated": "2026-11-24T11:00:00Z" },
        "identifier": [{ "system": "urn:mrn", "value": "M1" }],
        "name": [{ "family": "Roe", "given": ["Jane"] }],
        "birthDate": "1980-02-03"
    }))
    .expect("patient");
    let seen = store
        .with_batch(|b| {
            FhirSeen {
                patient: Box::new(renamed.clone()),
                identifier: Some("M1".into()),
                insert: false,
            }
            .run(&mut b.work(&ext))
        })
        .expect("seen");
    assert_eq!(seen, crate::connectors::fhir::protocol::Seen::Updated);
    let entries = store
        .with_batch(|b| crate::queue::store::queue_list(&mut b.work(&ext), None, None))
        .expect("list");
    let shown = entries[0].demographics.as_ref().expect("demographics");
    assert_eq!(shown.family.as_deref(), Some("Roe"));
    assert_eq!(shown.identifier.as_deref(), Some("M1"));
}
