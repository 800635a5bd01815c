use super::*;
use std::path::Path;

fn item(key: &str, source_id: Option<&str>) -> NewItem {
    NewItem {
        source: "test".into(),
        source_id: source_id.map(str::to_string),
        kind: "test.event".into(),
        key: key.into(),
        schema: "test@1".into(),
        payload: br#"{"n":1}"#.to_vec(),
        reply: Some(b"ACK".to_vec()),
        occurred_at: None,
        destinations: vec!["cloud".into()],
    }
}

fn open(path: &Path) -> Store {
    Store::open(
        path,
        &OpenOptions {
            create: true,
            verify: true,
            key: None,
        },
    )
    .expect("open")
}

fn refusal(path: &Path) -> JournalError {
    Store::open(
        path,
        &OpenOptions {
            create: true,
            verify: true,
            key: None,
        },
    )
    .err()
    .expect("refused")
}

fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial: Duration::from_millis(1000),
        max: Duration::from_millis(8000),
    }
}

/// Appends `keys` in order and returns the outbox ids.
fn check_append(store: &mut Store, keys: &[&str]) -> Vec<i64> {
    store
        .with_batch(|b| {
            keys.iter()
                .map(|k| b.append(&item(k, None), 1_000).map(|r| r.inbound_id))
                .collect()
        })
        .expect("append")
}

fn claimed_keys(store: &mut Store, now: i64) -> Vec<(i64, String)> {
    store
        .with_batch(|b| b.claim("cloud", 100, now))
        .expect("claim")
        .into_iter()
        .map(|r| (r.id, r.key))
        .collect()
}

#[test]
fn key_waits_while_its_head_retries_and_other_keys_flow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(&dir.path().join("j.db"));
    check_append(&mut s, &["a", "b", "a", "b"]);
    let first = claimed_keys(&mut s, 1_000);
    assert_eq!(first.len(), 4);
    // The first "a" fails; the rest were delivered except the second "a" which is put back.
    s.with_batch(|b| {
        b.delivered(&[2, 4], 1_001)?;
        b.failed(&[1, 3], "broker gone", &policy(5), 1_001)
    })
    .expect("settle");
    // Both "a" rows wait; a new "b" and a new "c" flow.
    check_append(&mut s, &["b", "c", "a"]);
    let next = claimed_keys(&mut s, 1_002);
    assert_eq!(
        next.iter().map(|(_, k)| k.as_str()).collect::<Vec<_>>(),
        ["b", "c"]
    );
    // After the backoff (at most `max`), the "a" rows come in their original order.
    let later = claimed_keys(&mut s, 1_001 + 10_000);
    assert_eq!(
        later.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [1, 3, 7]
    );
}

#[test]
fn dead_letter_after_max_attempts_and_replay_is_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(&dir.path().join("j.db"));
    check_append(&mut s, &["k"]);
    let mut now = 1_000;
    for attempt in 1..=3 {
        let rows = s.with_batch(|b| b.claim("cloud", 10, now)).expect("claim");
        assert_eq!(rows.len(), 1, "attempt {attempt}");
        assert_eq!(rows[0].attempts, attempt);
        s.with_batch(|b| b.failed(&[rows[0].id], "refused", &policy(3), now))
            .expect("fail");
        now += 100_000;
    }
    let dead = s
        .with_batch(|b| b.dead_letters(Some("cloud"), 10))
        .expect("dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_error, "refused");
    assert_eq!(dead[0].attempts, 3);
    // A dead head no longer holds its key back.
    check_append(&mut s, &["k"]);
    assert_eq!(claimed_keys(&mut s, now), [(2, "k".to_string())]);
    let n = s
        .with_batch(|b| b.replay("cloud", Some(dead[0].id), "cli:test", now))
        .expect("replay");
    assert_eq!(n, 1);
    assert_eq!(claimed_keys(&mut s, now), [(1, "k".to_string())]);
    let audit = s.with_batch(|b| b.audit_log(10)).expect("audit");
    assert_eq!(audit[0].actor, "cli:test");
    assert_eq!(audit[0].action, "dlq-replay");
    assert!(audit[0].detail.contains("row 1"), "{audit:?}");
}

#[test]
fn resend_of_a_source_id_gets_the_first_receipt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(&dir.path().join("j.db"));
    let (a, b) = s
        .with_batch(|b| {
            Ok((
                b.append(&item("p1", Some("MSG1")), 1)?,
                b.append(&item("p1", Some("MSG1")), 2)?,
            ))
        })
        .expect("append");
    assert!(!a.duplicate);
    assert!(b.duplicate);
    assert_eq!(a.event_id, b.event_id);
    assert_eq!(b.reply.as_deref(), Some(&b"ACK"[..]));
    assert_eq!(claimed_keys(&mut s, 10).len(), 1, "processed once");
}

#[test]
fn in_flight_rows_are_put_back_after_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let mut s = open(&path);
    check_append(&mut s, &["a", "b"]);
    assert_eq!(claimed_keys(&mut s, 1_000).len(), 2);
    drop(s);
    let mut s = open(&path);
    assert_eq!(s.recover_in_flight(1_001).expect("recover"), 2);
    assert_eq!(claimed_keys(&mut s, 1_001).len(), 2);
}

#[test]
fn pruning_keeps_everything_not_delivered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(&dir.path().join("j.db"));
    check_append(&mut s, &["a", "b", "c"]);
    claimed_keys(&mut s, 1_000);
    s.with_batch(|b| {
        b.delivered(&[1], 1_000)?;
        b.failed(&[2], "x", &policy(1), 1_000)
    })
    .expect("settle");
    let pruned = s.with_batch(|b| b.prune(5_000, 100)).expect("prune");
    assert_eq!(pruned, 2, "the delivered outbox row and its inbound item");
    let mut states = Vec::new();
    for id in 1..=3 {
        states.push(s.with_batch(|b| b.row_state(id)).expect("state"));
    }
    assert_eq!(states, [None, Some("dead"), Some("in_flight")]);
}

#[test]
fn newer_schema_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    drop(open(&path));
    let c = rusqlite::Connection::open(&path).expect("raw open");
    c.pragma_update(None, "user_version", 99).expect("bump");
    drop(c);
    let err = refusal(&path);
    assert!(
        matches!(err, JournalError::TooNew { found: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("newer than this build supports"));
}

#[test]
fn foreign_or_garbage_files_are_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).expect("write");
    let err = refusal(&garbage);
    assert!(err.to_string().contains("left untouched"), "{err}");
    assert_eq!(std::fs::read(&garbage).expect("read"), vec![0x5a; 8192]);

    let foreign = dir.path().join("foreign.db");
    let c = rusqlite::Connection::open(&foreign).expect("raw open");
    c.execute_batch("CREATE TABLE patients (id INTEGER)")
        .expect("create");
    drop(c);
    let err = refusal(&foreign);
    assert!(
        err.to_string().contains("not a clinic-gateway journal"),
        "{err}"
    );
}

#[test]
fn writer_refuses_appends_when_full_and_keeps_what_it_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let store = open(&path);
    let settings = Settings {
        max_bytes: 256 * 1024,
        retention: Duration::from_secs(3600),
        max_batch: 64,
        policies: BTreeMap::new(),
        call_notice: None,
        encounter_notice: None,
        registration: None,
        zone: jiff::tz::TimeZone::UTC,
    };
    let acked = actix::System::new().block_on(async move {
        let (addr, _thread) = JournalWriter::start(store, settings).expect("start");
        let mut acked = 0u64;
        let mut refusal = None;
        for i in 0..10_000 {
            let mut it = item("k", Some(&format!("id-{i}")));
            it.payload = vec![b'x'; 512];
            match ask(&addr, Append(it)).await {
                Ok(_) => acked += 1,
                Err(e) => {
                    refusal = Some(e);
                    break;
                }
            }
        }
        let e = refusal.expect("the journal filled up");
        assert!(matches!(e, JournalError::Full { .. }), "{e}");
        assert!(e.to_string().contains("not accepted"));
        ask(&addr, Close).await.expect("close");
        acked
    });
    let mut s = open(&path);
    let stats = s.with_batch(|b| b.stats()).expect("stats");
    assert_eq!(
        stats.destinations["cloud"].pending, acked,
        "every acknowledged item is kept"
    );
}

#[test]
fn a_check_in_commits_its_ticket_with_the_wait_ahead_and_peek_leaves_it_pending() {
    use crate::queue::{CheckIn, Priority, TicketJob, TicketOrder};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&dir.path().join("j.db"));
    let order = TicketOrder {
        printer: "kiosk-1".into(),
        minutes_per_patient: 5,
    };
    let check_in = |priority: Priority, request_id: &str| CheckIn {
        patient_ref: Some("MRN-1".into()),
        appointment_ref: None,
        priority,
        priority_reason: (priority > Priority::Normal).then(|| "pain".to_string()),
        request_id: Some(request_id.into()),
        printer: None,
        patient: None,
        demographics: None,
        unknown_to_ehr: false,
    };
    store
        .with_batch(|b| {
            b.queue_check_in(
                "general",
                &check_in(Priority::Normal, "a"),
                Some(&order),
                10,
            )?;
            b.queue_check_in(
                "general",
                &check_in(Priority::Normal, "b"),
                Some(&order),
                20,
            )?;
            b.queue_check_in(
                "general",
                &check_in(Priority::Urgent, "c"),
                Some(&order),
                30,
            )?;
            // A retried request prints nothing again.
            b.queue_check_in(
                "general",
                &check_in(Priority::Normal, "b"),
                Some(&order),
                40,
            )?;
            b.queue_check_in("lab", &check_in(Priority::Normal, "d"), None, 50)
        })
        .expect("check-ins");
    let peeked = store
        .with_batch(|b| b.peek("printer:kiosk-1", 10, 100))
        .expect("peek");
    let jobs: Vec<TicketJob> = peeked
        .iter()
        .map(|r| serde_json::from_slice(&r.payload).expect("job"))
        .collect();
    let summary: Vec<(&str, u32, u32)> = jobs
        .iter()
        .map(|j| (j.ticket.as_str(), j.waiting_ahead, j.estimated_wait_min))
        .collect();
    assert_eq!(summary, [("G-001", 0, 0), ("G-002", 1, 5), ("G-003", 0, 0)]);
    assert!(
        peeked
            .iter()
            .all(|r| r.key == "printer:kiosk-1" && r.kind == "printer.ticket")
    );
    assert!(!String::from_utf8_lossy(&peeked[0].payload).contains("MRN"));
    let claimed = store
        .with_batch(|b| b.claim("printer:kiosk-1", 10, 100))
        .expect("claim");
    assert_eq!(claimed.len(), 3, "peek took nothing");
}

#[test]
fn overrides_are_remembered_per_slot_and_survive_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let o = |object: &str, priority: u8, value: f64, set_at: i64| DeviceOverride {
        device: "ahu".into(),
        object: object.into(),
        priority,
        value: serde_json::json!(value),
        by: "rule:test".into(),
        set_at,
    };
    let mut s = open(&path);
    s.with_batch(|b| {
        b.set_override(&o("analog-value,1", 8, 23.5, 1))?;
        b.set_override(&o("analog-value,1", 8, 24.0, 2))?;
        b.set_override(&o("analog-value,1", 10, 19.0, 3))
    })
    .expect("set");
    drop(s);
    let mut s = open(&path);
    let list = s.with_batch(|b| b.overrides("ahu")).expect("list");
    assert_eq!(
        list,
        [
            o("analog-value,1", 8, 24.0, 2),
            o("analog-value,1", 10, 19.0, 3)
        ]
    );
    let cleared = s
        .with_batch(|b| {
            Ok((
                b.clear_override("ahu", "analog-value,1", 8)?,
                b.clear_override("ahu", "analog-value,1", 8)?,
            ))
        })
        .expect("clear");
    assert_eq!(cleared, (true, false));
    assert!(
        s.with_batch(|b| b.overrides("other"))
            .expect("list")
            .is_empty()
    );
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
                b.fhir_seen(&fhir_patient("v1", "0"), None, false, 1)?,
                Seen::Ignored
            );
            assert_eq!(
                b.fhir_seen(&fhir_patient("v1", "0"), Some("M1"), true, 1)?,
                Seen::New
            );
            assert_eq!(
                b.fhir_seen(&fhir_patient("v1", "0"), None, false, 2)?,
                Seen::Unchanged
            );
            assert!(b.fhir_edit("p1", &phone("1"), "desk", 3)?);
            assert!(
                !b.fhir_edit("p1", &phone("1"), "desk", 3)?,
                "no change, nothing sent"
            );
            // The EHR made the same change: settled without a conflict.
            assert_eq!(
                b.fhir_seen(&fhir_patient("v2", "1"), None, false, 4)?,
                Seen::Updated
            );
            let cached = b.fhir_patient("p1")?.expect("cached");
            assert_eq!(
                (cached.version_id.as_deref(), cached.local),
                (Some("v2"), None)
            );
            // A different change on each side: both kept.
            assert!(b.fhir_edit("p1", &phone("2"), "desk", 5)?);
            let Seen::Conflict(id) = b.fhir_seen(&fhir_patient("v3", "3"), None, false, 6)? else {
                panic!("expected a conflict");
            };
            let open = b.fhir_conflicts(false)?;
            assert_eq!((open.len(), open[0].id), (1, id));
            assert_eq!(open[0].fields, ["phone"]);
            assert!(matches!(
                b.fhir_edit("p1", &phone("4"), "desk", 7),
                Err(JournalError::Rejected(_))
            ));
            let cached = b.fhir_patient("p1")?.expect("cached");
            assert_eq!(cached.local, None, "the local change waits in the conflict");
            assert_eq!(b.fhir_find(Some("M1"), None, None)?.len(), 1);
            assert_eq!(b.fhir_find(None, Some("DOE"), Some("1980-02-03"))?.len(), 1);
            Ok(())
        })
        .expect("batch");
}

#[test]
fn a_due_appointment_is_queued_once_and_takes_its_priority_changes() {
    use crate::queue::{EntryState, FromEhr, Priority};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&dir.path().join("j.db"));
    let due = |appointment_ref: &str| FromEhr::AppointmentDue {
        queue: "general".into(),
        appointment_ref: appointment_ref.into(),
        appointment_refs: vec![appointment_ref.into(), format!("placer-{appointment_ref}")],
        patient_ref: "MRN-1".into(),
        priority: Priority::Normal,
        priority_reason: None,
    };
    let priority = |p: Priority, reason: Option<&str>| FromEhr::AppointmentPriority {
        appointment_refs: vec!["placer-F-1".into(), "F-1".into()],
        priority: p,
        reason: reason.map(str::to_string),
    };
    let stat = priority(Priority::Urgent, Some("appointment priority: stat"));
    let message = |control: &str| item("patient:MRN-1", Some(control));
    let (open, cancelled) = store
        .with_batch(|b| {
            b.ehr_inbound(&message("S12-1"), &[due("F-1")], 10)?;
            // The same booking from a second message: already queued.
            b.ehr_inbound(&message("S12-2"), &[due("F-1")], 20)?;
            b.ehr_inbound(&message("S14-1"), std::slice::from_ref(&stat), 30)?;
            // The same change again: nothing to change.
            b.ehr_inbound(&message("S14-2"), &[stat], 40)?;
            b.ehr_inbound(&message("S12-3"), &[due("F-2")], 50)?;
            b.ehr_inbound(
                &message("S15-1"),
                &[FromEhr::Cancelled {
                    appointment_refs: vec!["F-2".into()],
                }],
                60,
            )?;
            // Booked again after its cancellation: the request id was used; not queued anew.
            b.ehr_inbound(&message("S12-4"), &[due("F-2")], 70)?;
            Ok((b.queue_list(None, None)?, b.queue_list(None, Some(0))?))
        })
        .expect("effects");
    assert_eq!(open.len(), 1, "{open:?}");
    let e = &open[0];
    assert_eq!(
        (
            e.queue.as_str(),
            e.appointment_ref.as_deref(),
            e.patient_ref.as_deref(),
            e.priority,
            e.priority_reason.as_deref()
        ),
        (
            "general",
            Some("F-1"),
            Some("MRN-1"),
            Priority::Urgent,
            Some("appointment priority: stat")
        )
    );
    assert_eq!(cancelled.len(), 2);
    assert_eq!(cancelled[1].appointment_ref.as_deref(), Some("F-2"));
    assert_eq!(cancelled[1].state, EntryState::Cancelled);
    let lowered = store
        .with_batch(|b| {
            b.ehr_inbound(&message("S14-3"), &[priority(Priority::Normal, None)], 80)?;
            b.queue_list(None, None)
        })
        .expect("lowered");
    assert_eq!(
        (lowered[0].priority, lowered[0].priority_reason.as_deref()),
        (Priority::Normal, None)
    );
    let kinds: Vec<String> = store
        .with_batch(|b| b.peek("cloud", 100, 100))
        .expect("events")
        .into_iter()
        .map(|r| r.kind)
        .filter(|k| k.starts_with("queue."))
        .collect();
    assert_eq!(
        kinds,
        [
            "queue.checked_in",
            "queue.priority_changed",
            "queue.checked_in",
            "queue.cancelled",
            "queue.priority_changed"
        ]
    );
}

#[test]
fn an_arrival_queues_the_remembered_booking_of_today_once() {
    use crate::queue::{Action, Booking, Entry, EntryState, FromEhr, Priority};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&dir.path().join("j.db"));
    let booked = |filler: &str, patient: &str, day: &str, starts_at: i64| {
        FromEhr::Booked(Booking {
            queue: "general".into(),
            appointment_ref: filler.into(),
            appointment_refs: vec![filler.into(), format!("placer-{filler}")],
            patient_ref: patient.into(),
            day: day.into(),
            starts_at,
            priority: None,
        })
    };
    let arrived = |patient: &str| FromEhr::Arrived {
        patient_ref: patient.into(),
        today: "2026-11-24".into(),
    };
    let refs = |filler: &str| vec![format!("placer-{filler}"), filler.to_string()];
    let message = |control: &str| item("patient:any", Some(control));
    let summary = |e: &Entry| {
        (
            e.appointment_ref.clone().unwrap_or_default(),
            e.patient_ref.clone().unwrap_or_default(),
            e.state,
            e.priority,
        )
    };
    let (first, open) = store
        .with_batch(|b| {
            // MRN-1: 10:00 (stat from an S14 without a start) and 09:00 today.
            b.ehr_inbound(
                &message("S12-1"),
                &[booked("F-1", "MRN-1", "2026-11-24", 1000)],
                1,
            )?;
            b.ehr_inbound(
                &message("S14-1"),
                &[FromEhr::AppointmentPriority {
                    appointment_refs: refs("F-1"),
                    priority: Priority::Urgent,
                    reason: Some("appointment priority: stat".into()),
                }],
                2,
            )?;
            b.ehr_inbound(
                &message("S12-2"),
                &[booked("F-2", "MRN-1", "2026-11-24", 900)],
                3,
            )?;
            // MRN-2 tomorrow; MRN-3 today, cancelled (by its placer id); MRN-4 today, moved
            // to tomorrow; MRN-5 yesterday, moved to today; MRN-6 today, not attended.
            b.ehr_inbound(
                &message("S12-3"),
                &[booked("F-3", "MRN-2", "2026-11-25", 900)],
                4,
            )?;
            b.ehr_inbound(
                &message("S12-4"),
                &[booked("F-4", "MRN-3", "2026-11-24", 900)],
                5,
            )?;
            b.ehr_inbound(
                &message("S15-4"),
                &[FromEhr::Cancelled {
                    appointment_refs: vec!["placer-F-4".into()],
                }],
                6,
            )?;
            b.ehr_inbound(
                &message("S12-5"),
                &[booked("F-5", "MRN-4", "2026-11-24", 900)],
                7,
            )?;
            b.ehr_inbound(
                &message("S13-5"),
                &[
                    FromEhr::Moved {
                        appointment_refs: refs("F-5"),
                        start: Some("2026-11-25".into()),
                    },
                    booked("F-5", "MRN-4", "2026-11-25", 900),
                ],
                8,
            )?;
            b.ehr_inbound(
                &message("S12-6"),
                &[booked("F-6", "MRN-5", "2026-11-23", 900)],
                9,
            )?;
            b.ehr_inbound(
                &message("S13-6"),
                &[booked("F-6", "MRN-5", "2026-11-24", 950)],
                10,
            )?;
            b.ehr_inbound(
                &message("S12-7"),
                &[booked("F-7", "MRN-6", "2026-11-24", 900)],
                11,
            )?;
            b.ehr_inbound(
                &message("S26-7"),
                &[FromEhr::NoShow {
                    appointment_refs: refs("F-7"),
                }],
                12,
            )?;
            for (control, patient) in [
                ("A04-1", "MRN-1"),
                // The same arrival under a new control id, and an admit: MRN-1 is queued.
                ("A04-2", "MRN-1"),
                ("A01-1", "MRN-1"),
                ("A04-3", "MRN-2"),
                ("A04-4", "MRN-3"),
                ("A04-5", "MRN-4"),
                ("A04-6", "MRN-5"),
                ("A04-7", "MRN-6"),
                ("A04-8", "MRN-9"),
            ] {
                b.ehr_inbound(&message(control), &[arrived(patient)], 20)?;
            }
            let first = b.queue_list(None, None)?;
            // MRN-1's 09:00 visit ends; they register again for the 10:00 one, twice.
            b.queue_act(first[0].id, &Action::AssignRoom { room: "1".into() }, 30)?;
            b.queue_act(first[0].id, &Action::Complete, 31)?;
            b.ehr_inbound(&message("A04-9"), &[arrived("MRN-1")], 40)?;
            b.ehr_inbound(&message("A04-10"), &[arrived("MRN-1")], 41)?;
            // MRN-5 is in the queue for its only booking: nothing more.
            b.ehr_inbound(&message("A04-11"), &[arrived("MRN-5")], 42)?;
            Ok((first, b.queue_list(None, None)?))
        })
        .expect("effects");
    let first: Vec<_> = first.iter().map(summary).collect();
    assert_eq!(
        first,
        [
            (
                "F-2".into(),
                "MRN-1".into(),
                EntryState::Waiting,
                Priority::Normal
            ),
            (
                "F-6".into(),
                "MRN-5".into(),
                EntryState::Waiting,
                Priority::Normal
            ),
        ]
    );
    let open: Vec<_> = open.iter().map(summary).collect();
    assert_eq!(
        open,
        [
            (
                "F-1".into(),
                "MRN-1".into(),
                EntryState::Waiting,
                Priority::Urgent
            ),
            (
                "F-6".into(),
                "MRN-5".into(),
                EntryState::Waiting,
                Priority::Normal
            ),
        ]
    );
    let kinds: Vec<String> = store
        .with_batch(|b| b.peek("cloud", 100, 100))
        .expect("events")
        .into_iter()
        .map(|r| r.kind)
        .filter(|k| k.starts_with("queue."))
        .collect();
    assert_eq!(
        kinds,
        [
            "queue.checked_in",
            "queue.checked_in",
            "queue.in_room",
            "queue.done",
            "queue.checked_in"
        ]
    );
    // The next day's arrivals find what was booked or moved to it.
    let tomorrow = store
        .with_batch(|b| {
            let arrive = |patient: &str| FromEhr::Arrived {
                patient_ref: patient.into(),
                today: "2026-11-25".into(),
            };
            b.ehr_inbound(&message("A04-12"), &[arrive("MRN-4")], 50)?;
            b.ehr_inbound(&message("A04-13"), &[arrive("MRN-2")], 51)?;
            b.queue_list(None, None)
        })
        .expect("tomorrow");
    let tomorrow: Vec<_> = tomorrow.iter().map(summary).skip(2).collect();
    assert_eq!(
        tomorrow,
        [
            (
                "F-5".into(),
                "MRN-4".into(),
                EntryState::Waiting,
                Priority::Normal
            ),
            (
                "F-3".into(),
                "MRN-2".into(),
                EntryState::Waiting,
                Priority::Normal
            ),
        ]
    );
}

#[test]
fn ticket_numbers_start_again_at_the_clinics_midnight_not_utcs() {
    use crate::queue::{CheckIn, Priority};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&dir.path().join("j.db"));
    store.set_zone(crate::clock::zone(Some("America/Los_Angeles")).expect("zone"));
    let walk_in = || CheckIn {
        patient_ref: None,
        appointment_ref: None,
        priority: Priority::Normal,
        priority_reason: None,
        request_id: None,
        printer: None,
        patient: None,
        demographics: None,
        unknown_to_ehr: false,
    };
    // 09:00 and 17:30 in Los Angeles on 2026-01-05 (17:00Z and 01:30Z the next UTC day), then
    // 08:00 on the 6th.
    let at = [1_767_632_400_000, 1_767_663_000_000, 1_767_715_200_000];
    let tickets: Vec<String> = at
        .iter()
        .map(|now| {
            store
                .with_batch(|b| b.queue_check_in("general", &walk_in(), None, *now))
                .expect("check-in")
                .0
                .ticket
        })
        .collect();
    assert_eq!(tickets, ["G-001", "G-002", "G-001"]);
}

#[cfg(not(feature = "sqlcipher"))]
#[test]
fn a_key_without_a_sqlcipher_build_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opened = Store::open(
        &dir.path().join("j.db"),
        &OpenOptions {
            create: true,
            verify: true,
            key: Some("secret".into()),
        },
    );
    let e = opened.err().expect("a plain build refuses a key");
    assert!(e.to_string().contains("no SQLCipher support"), "{e}");
}

/// Patient data at rest: with a SQLCipher build the journal file is unreadable without its key.
#[cfg(feature = "sqlcipher")]
#[test]
fn an_encrypted_journal_opens_only_with_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.db");
    let keyed = |key: Option<&str>, create: bool| {
        Store::open(
            &path,
            &OpenOptions {
                create,
                verify: true,
                key: key.map(str::to_string),
            },
        )
    };
    {
        let mut store = keyed(Some("right"), true).expect("create encrypted");
        let mut secret = item("patient-1", Some("m1"));
        secret.payload = br#"{"family":"Nguyen-Secret"}"#.to_vec();
        store.with_batch(|b| b.append(&secret, 1)).expect("append");
        store.checkpoint().expect("checkpoint");
    }
    let bytes = std::fs::read(&path).expect("read file");
    assert!(
        !bytes.windows(13).any(|w| w == b"Nguyen-Secret"),
        "no plaintext on disk"
    );
    let mut store = keyed(Some("right"), false).expect("reopen with the key");
    let stats = store.with_batch(|b| b.stats()).expect("stats");
    assert_eq!(stats.destinations["cloud"].pending, 1);
    drop(store);
    for wrong in [None, Some("wrong")] {
        let e = keyed(wrong, false).err().expect("refused");
        assert!(
            e.to_string()
                .contains("not a readable clinic-gateway journal"),
            "{e}"
        );
    }
}
