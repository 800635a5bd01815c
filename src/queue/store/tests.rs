use crate::journal::{Extensions, NewItem, OpenOptions, Store};
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
        &[&super::SCHEMA, &crate::notices::store::SCHEMA],
    )
    .expect("open")
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
        contact: None,
        patient: None,
        demographics: None,
        unknown_to_ehr: false,
    };
    store
        .with_batch(|b| {
            super::queue_check_in(
                &mut b.work(&Extensions::default()),
                "general",
                &check_in(Priority::Normal, "a"),
                Some(&order),
                10,
            )?;
            super::queue_check_in(
                &mut b.work(&Extensions::default()),
                "general",
                &check_in(Priority::Normal, "b"),
                Some(&order),
                20,
            )?;
            super::queue_check_in(
                &mut b.work(&Extensions::default()),
                "general",
                &check_in(Priority::Urgent, "c"),
                Some(&order),
                30,
            )?;
            // A retried request prints nothing again.
            super::queue_check_in(
                &mut b.work(&Extensions::default()),
                "general",
                &check_in(Priority::Normal, "b"),
                Some(&order),
                40,
            )?;
            super::queue_check_in(
                &mut b.work(&Extensions::default()),
                "lab",
                &check_in(Priority::Normal, "d"),
                None,
                50,
            )
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
            .all(|r| r.key() == "printer:kiosk-1" && r.kind() == "printer.ticket")
    );
    assert!(!String::from_utf8_lossy(&peeked[0].payload).contains("MRN"));
    let claimed = store
        .with_batch(|b| b.claim("printer:kiosk-1", 10, 100))
        .expect("claim");
    assert_eq!(claimed.len(), 3, "peek took nothing");
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
            super::ehr_inbound(
                &mut b.work(&Extensions::default()),
                &message("S12-1"),
                &[due("F-1")],
                10,
            )?;
            // The same booking from a second message: already queued.
            super::ehr_inbound(
                &mut b.work(&Extensions::default()),
                &message("S12-2"),
                &[due("F-1")],
                20,
            )?;
            super::ehr_inbound(
                &mut b.work(&Extensions::default()),
                &message("S14-1"),
                std::slice::from_ref(&stat),
                30,
            )?;
            // The same change again: nothing to change.
            super::ehr_inbound(
                &mut b.work(&Extensions::default()),
                &message("S14-2"),
                &[stat],
                40,
            )?;
            super::ehr_inbound(
                &mut b.work(&Extensions::default()),
                &message("S12-3"),
                &[due("F-2")],
                50,
            )?;
            super::ehr_inbound(
                &mut b.work(&Extensions::default()),
                &message("S15-1"),
                &[FromEhr::Cancelled {
                    appointment_refs: vec!["F-2".into()],
                }],
                60,
            )?;
            // Booked again after its cancellation: the request id was used; not queued anew.
            super::ehr_inbound(
                &mut b.work(&Extensions::default()),
                &message("S12-4"),
                &[due("F-2")],
                70,
            )?;
            Ok((
                super::queue_list(&mut b.work(&Extensions::default()), None, None)?,
                super::queue_list(&mut b.work(&Extensions::default()), None, Some(0))?,
            ))
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
            super::ehr_inbound(
                &mut b.work(&Extensions::default()),
                &message("S14-3"),
                &[priority(Priority::Normal, None)],
                80,
            )?;
            super::queue_list(&mut b.work(&Extensions::default()), None, None)
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
        .map(|r| r.kind().to_string())
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
            super::ehr_inbound(
                &mut b.work(&Extensions::default()),
                &message("S12-1"),
                &[booked("F-1", "MRN-1", "2026-11-24", 1000)],
                1,
            )?;
            super::ehr_inbound(
                &mut b.work(&Extensions::default()),
                &message("S14-1"),
                &[FromEhr::AppointmentPriority {
                    appointment_refs: refs("F-1"),
                    priority: Priority::Urgent,
                    reason: Some("appointment priority: stat".into()),
                }],
                2,
            )?;
            super::ehr_inbound(
                &mut b.work(&Extensions::default()),
                &message("S12-2"),
                &[booked("F-2", "MRN-1", "2026-11-24", 900)],
                3,
            )?;
            // MRN-2 tomorrow; MRN-3 today, cancelled (by its placer id); MRN-4 today, moved
            // to tomorrow; MRN-5 yesterday, moved to today; MRN-6 today, not attended.
            super::ehr_inbound(
                &mut b.work(&Extensions::default()),
                &message("S12-3"),
                &[booked("F-3", "MRN-2", "2026-11-25", 900)],
                4,
            )?;
            super::ehr_inbound(
                &mut b.work(&Extensions::default()),
                &message("S12-4"),
                &[booked("F-4", "MRN-3", "2026-11-24", 900)],
                5,
            )?;
            super::ehr_inbound(
                &mut b.work(&Extensions::default()),
                &message("S15-4"),
                &[FromEhr::Cancelled {
                    appointment_refs: vec!["placer-F-4".into()],
                }],
                6,
            )?;
            super::ehr_inbound(
                &mut b.work(&Extensions::default()),
                &message("S12-5"),
                &[booked("F-5", "MRN-4", "2026-11-24", 900)],
                7,
            )?;
            super::ehr_inbound(
                &mut b.work(&Extensions::default()),
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
            super::ehr_inbound(
                &mut b.work(&Extensions::default()),
                &message("S12-6"),
                &[booked("F-6", "MRN-5", "2026-11-23", 900)],
                9,
            )?;
            super::ehr_inbound(
                &mut b.work(&Extensions::default()),
                &message("S13-6"),
                &[booked("F-6", "MRN-5", "2026-11-24", 950)],
                10,
            )?;
            super::ehr_inbound(
                &mut b.work(&Extensions::default()),
                &message("S12-7"),
                &[booked("F-7", "MRN-6", "2026-11-24", 900)],
                11,
            )?;
            super::ehr_inbound(
                &mut b.work(&Extensions::default()),
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
                super::ehr_inbound(
                    &mut b.work(&Extensions::default()),
                    &message(control),
                    &[arrived(patient)],
                    20,
                )?;
            }
            let first = super::queue_list(&mut b.work(&Extensions::default()), None, None)?;
            // MRN-1's 09:00 visit ends; they register again for the 10:00 one, twice.
            super::queue_act(
                &mut b.work(&Extensions::default()),
                first[0].id,
                &Action::AssignRoom { room: "1".into() },
                30,
            )?;
            super::queue_act(
                &mut b.work(&Extensions::default()),
                first[0].id,
                &Action::Complete,
                31,
            )?;
            super::ehr_inbound(
                &mut b.work(&Extensions::default()),
                &message("A04-9"),
                &[arrived("MRN-1")],
                40,
            )?;
            super::ehr_inbound(
                &mut b.work(&Extensions::default()),
                &message("A04-10"),
                &[arrived("MRN-1")],
                41,
            )?;
            // MRN-5 is in the queue for its only booking: nothing more.
            super::ehr_inbound(
                &mut b.work(&Extensions::default()),
                &message("A04-11"),
                &[arrived("MRN-5")],
                42,
            )?;
            Ok((
                first,
                super::queue_list(&mut b.work(&Extensions::default()), None, None)?,
            ))
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
        .map(|r| r.kind().to_string())
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
            super::ehr_inbound(
                &mut b.work(&Extensions::default()),
                &message("A04-12"),
                &[arrive("MRN-4")],
                50,
            )?;
            super::ehr_inbound(
                &mut b.work(&Extensions::default()),
                &message("A04-13"),
                &[arrive("MRN-2")],
                51,
            )?;
            super::queue_list(&mut b.work(&Extensions::default()), None, None)
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
    let mut la = Extensions::default();
    la.insert(crate::queue::Settings {
        zone: crate::clock::zone(Some("America/Los_Angeles")).expect("zone"),
        hooks: Vec::new(),
        inbound: Vec::new(),
        tx_hooks: Vec::new(),
    });
    let walk_in = || CheckIn {
        patient_ref: None,
        appointment_ref: None,
        priority: Priority::Normal,
        priority_reason: None,
        request_id: None,
        printer: None,
        contact: None,
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
                .with_batch(|b| {
                    super::queue_check_in(&mut b.work(&la), "general", &walk_in(), None, *now)
                })
                .expect("check-in")
                .0
                .ticket
        })
        .collect();
    assert_eq!(tickets, ["G-001", "G-002", "G-001"]);
}

#[test]
fn bookings_and_flags_are_read_back_through_the_filters_readers_give() {
    use super::{BookingFilter, FlagFilter};
    use crate::queue::{Booking, Priority};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&dir.path().join("j.db"));
    let booking = |filler: &str, patient: &str, starts_at: i64| Booking {
        queue: "general".into(),
        appointment_ref: filler.into(),
        appointment_refs: vec![filler.into()],
        patient_ref: patient.into(),
        day: "2026-11-24".into(),
        starts_at,
        priority: None,
    };
    let (bookings, flags) = store
        .with_batch(|b| {
            let extensions = Extensions::default();
            let mut work = b.work(&extensions);
            let tx = &mut work;
            super::remember_booking(tx, &booking("Appointment/a1", "Patient/p1", 100), 10)?;
            super::remember_booking(tx, &booking("Appointment/a2", "p1", 200), 20)?;
            super::remember_booking(tx, &booking("Appointment/a3", "Patient/p2", 300), 30)?;
            let urgent = (Priority::Urgent, "fall risk".to_string());
            super::queue_flag(tx, "f1", "p1", Some(&urgent), 10)?;
            super::queue_flag(tx, "f2", "p2", None, 20)?;
            let mut refs = |filter: &BookingFilter<'_>| {
                super::bookings(tx, filter).map(|rows| {
                    rows.into_iter()
                        .map(|b| b.appointment_ref)
                        .collect::<Vec<_>>()
                })
            };
            let by_patient = BookingFilter {
                patient_id: Some("p1"),
                ..BookingFilter::ALL
            };
            let by_id_and_start = BookingFilter {
                appointment_ref: Some("Appointment/a2"),
                starts_at: Some(150..250),
                ..BookingFilter::ALL
            };
            let by_update = BookingFilter {
                updated_at: 20..31,
                ..BookingFilter::ALL
            };
            let bookings = (
                refs(&BookingFilter::ALL)?,
                refs(&by_patient)?,
                refs(&by_id_and_start)?,
                refs(&by_update)?,
            );
            let tx = &mut work;
            let p2 = FlagFilter {
                patient_id: Some("p2"),
                ..FlagFilter::ALL
            };
            let flags = (
                super::flags(tx, &FlagFilter::ALL)?.len(),
                super::flags(tx, &p2)?,
            );
            Ok((bookings, flags))
        })
        .expect("read");
    let all = ["Appointment/a1", "Appointment/a2", "Appointment/a3"];
    assert_eq!(bookings.0, all);
    assert_eq!(bookings.1, all[..2]);
    assert_eq!(bookings.2, all[1..2]);
    assert_eq!(bookings.3, all[1..]);
    assert_eq!(flags.0, 2);
    assert_eq!(
        flags.1,
        [super::FlagRow {
            id: "f2".into(),
            patient_id: "p2".into(),
            raises_priority: false,
            reason: String::new(),
            updated_at: 20,
        }]
    );
}

#[test]
fn entries_are_read_back_through_the_filters_readers_give() {
    use super::EntryFilter;
    use crate::queue::{CheckIn, Priority};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(&dir.path().join("j.db"));
    let check_in = |patient: &str, request_id: &str| CheckIn {
        patient_ref: Some(patient.into()),
        appointment_ref: None,
        priority: Priority::Normal,
        priority_reason: None,
        request_id: Some(request_id.into()),
        printer: None,
        contact: None,
        patient: None,
        demographics: None,
        unknown_to_ehr: false,
    };
    let found = store
        .with_batch(|b| {
            let extensions = Extensions::default();
            let mut work = b.work(&extensions);
            let tx = &mut work;
            let mut ids = Vec::new();
            for (patient, at) in [("Patient/p1", 10), ("p1", 20), ("Patient/p2", 30)] {
                let (e, _) =
                    super::queue_check_in(tx, "general", &check_in(patient, patient), None, at)?;
                ids.push(e.id);
            }
            let mut arrivals = |filter: &EntryFilter<'_>| {
                super::queue_entries(tx, filter)
                    .map(|es| es.into_iter().map(|e| e.arrived_at).collect::<Vec<_>>())
            };
            Ok((
                arrivals(&EntryFilter::OPEN)?,
                arrivals(&EntryFilter {
                    patient_id: Some("p1"),
                    ..EntryFilter::OPEN
                })?,
                arrivals(&EntryFilter {
                    id: Some(ids[2]),
                    ..EntryFilter::OPEN
                })?,
                arrivals(&EntryFilter {
                    arrived_at: Some(15..25),
                    ..EntryFilter::OPEN
                })?,
                arrivals(&EntryFilter {
                    last_step_at: 25..i64::MAX,
                    ..EntryFilter::OPEN
                })?,
            ))
        })
        .expect("read");
    assert_eq!(
        found,
        (vec![10, 20, 30], vec![10, 20], vec![30], vec![20], vec![30])
    );
}
