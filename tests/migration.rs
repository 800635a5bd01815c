//! A journal written before each domain owned its tables (schema 7) opens with this build and
//! every row it held is found again through the journal's and the domains' requests.

use clinic_gateway::connectors::fhir::requests::{FhirConflicts, FhirGet, FhirState};
use clinic_gateway::devices::ListOverrides;
use clinic_gateway::facility::ListRoomHolds;
use clinic_gateway::journal::chain;
use clinic_gateway::journal::{
    self, Claim, GetAuditHead, GetStats, JournalWriter, ListAudit, ListDead, NewItem, OpenOptions,
    Settings, Store,
};
use clinic_gateway::notices::ListNotices;
use clinic_gateway::queue::{EhrInbound, EntryState, FromEhr, QueueList, RaisingFlags};
use std::collections::BTreeMap;
use std::time::Duration;

fn schema7_journal(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).expect("create");
    conn.execute_batch(include_str!("fixtures/journal-schema7.sql"))
        .expect("schema 7 fixture");
}

#[actix_rt::test]
async fn a_schema_7_journal_migrates_forward_and_keeps_every_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.db");
    schema7_journal(&path);
    let store = Store::open(
        &path,
        &OpenOptions {
            create: false,
            verify: true,
            key: None,
        },
        &clinic_gateway::daemon::wiring::schemas(),
    )
    .expect("a schema 7 journal opens");
    let settings = Settings {
        max_bytes: 1 << 30,
        retention: Duration::from_secs(3600),
        max_batch: 64,
        policies: BTreeMap::new(),
        extensions: Default::default(),
    };
    let (j, _writer) = JournalWriter::start(store, settings).expect("writer");

    let stats = journal::ask(&j, GetStats).await.expect("stats");
    assert_eq!(stats.inbound_items, 3);
    assert_eq!(stats.schema_version, journal::store::SCHEMA_VERSION);
    // The pending row and the one in flight when the old build stopped are both deliverable.
    let cloud = journal::ask(
        &j,
        Claim {
            destination: "cloud".into(),
            limit: 10,
        },
    )
    .await
    .expect("claim cloud");
    assert_eq!(cloud.iter().map(|r| r.id).collect::<Vec<_>>(), [1]);
    let mllp = journal::ask(
        &j,
        Claim {
            destination: "ehr-mllp".into(),
            limit: 10,
        },
    )
    .await
    .expect("claim ehr-mllp");
    assert_eq!(mllp.iter().map(|r| r.id).collect::<Vec<_>>(), [3]);
    let dead = journal::ask(
        &j,
        ListDead {
            destination: None,
            limit: 10,
        },
    )
    .await
    .expect("dead letters");
    assert_eq!(
        dead.iter()
            .map(|d| (d.id, d.last_error.as_str()))
            .collect::<Vec<_>>(),
        [(2, "broker refused")]
    );
    let audit = journal::ask(&j, ListAudit::newest(10))
        .await
        .expect("audit");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "queue.call");
    // The record from before the chain existed is sealed as its first link.
    let head = journal::ask(&j, GetAuditHead).await.expect("audit head");
    assert_eq!((head.last_id, head.count), (1, 1));
    assert_eq!(
        head.hash,
        chain::seal(
            chain::GENESIS,
            1,
            4000,
            "web:frontdesk",
            "queue.call",
            "entry=1"
        )
    );

    let entries = journal::ask(
        &j,
        QueueList {
            queue: None,
            closed_since: None,
        },
    )
    .await
    .expect("queue");
    let summary: Vec<_> = entries
        .iter()
        .map(|e| (e.ticket.as_str(), e.state, e.room.as_deref()))
        .collect();
    assert_eq!(
        summary,
        [
            ("G-002", EntryState::Called, Some("Room 3")),
            ("G-001", EntryState::Waiting, None)
        ]
    );
    let demographics = entries[1].demographics.as_ref().expect("demographics");
    assert_eq!(demographics.family.as_deref(), Some("Doe"));

    let notices = journal::ask(
        &j,
        ListNotices {
            all: true,
            limit: 10,
        },
    )
    .await
    .expect("notices");
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].kind, "queue.flagged");

    let holds = journal::ask(&j, ListRoomHolds).await.expect("holds");
    assert_eq!(holds.len(), 1);
    assert_eq!(holds[0].room, "Room 4");

    let overrides = journal::ask(
        &j,
        ListOverrides {
            device: "ahu-1".into(),
        },
    )
    .await
    .expect("overrides");
    assert_eq!(overrides.len(), 1);
    assert_eq!(overrides[0].value, serde_json::json!(21.5));

    let cached = journal::ask(&j, FhirGet { id: "p1".into() })
        .await
        .expect("fhir get")
        .expect("cached patient");
    assert_eq!(cached.version_id.as_deref(), Some("3"));
    let conflicts = journal::ask(&j, FhirConflicts { all: true })
        .await
        .expect("conflicts");
    assert_eq!(conflicts.len(), 1);
    let cursor = journal::ask(
        &j,
        FhirState {
            key: "patients_cursor".into(),
            set: None,
        },
    )
    .await
    .expect("state");
    assert_eq!(cursor.as_deref(), Some("2026-11-30T10:00:00Z"));
    // The flag raises no open entry of its patient (none is queued), so it is not listed...
    assert!(
        journal::ask(&j, RaisingFlags)
            .await
            .expect("flags")
            .is_empty()
    );

    // ...and the remembered booking is there: the patient's arrival queues it.
    let arrival = NewItem {
        source: "hl7:ADT^CLINIC".into(),
        source_id: Some("A04-1".into()),
        kind: "hl7.adt".into(),
        key: "patient:MRN-3".into(),
        schema: "hl7v2".into(),
        payload: b"{}".to_vec(),
        reply: None,
        occurred_at: None,
        destinations: vec![],
    };
    journal::ask(
        &j,
        EhrInbound {
            item: arrival,
            effects: vec![FromEhr::Arrived {
                patient_ref: "MRN-3".into(),
                today: "2026-11-30".into(),
            }],
            resources: Vec::new(),
        },
    )
    .await
    .expect("arrival");
    let entries = journal::ask(
        &j,
        QueueList {
            queue: Some("general".into()),
            closed_since: None,
        },
    )
    .await
    .expect("queue");
    assert!(
        entries
            .iter()
            .any(|e| e.appointment_ref.as_deref() == Some("A-9")
                && e.patient_ref.as_deref() == Some("MRN-3")),
        "the booking remembered by schema 7 is queued on arrival"
    );
}
