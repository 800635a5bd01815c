//! Kiosk ticket printers against a test printer (`tests/peers/escpos_printer.py`) on a socat
//! pty pair: it captures every byte and answers `DLE EOT n` from a control file the test
//! rewrites (paper end, cover open, no answer, line noise). The actor runs in-process under a
//! real supervisor and journal writer, and once inside the daemon for check-in over HTTP.

mod common;

use clinic_gateway::devices::printer::{self, PrinterSpawn};
use clinic_gateway::journal::{self, Append, GetStats, ListDead, NewItem};
use clinic_gateway::queue::QueueCheckIn;
use clinic_gateway::queue::{CheckIn, Priority, TicketJob, TicketOrder};
use clinic_gateway::supervisor::HealthState;
use common::printer::TestPrinter;
use common::spine::{Spine, device_config, eventually};
use common::wait_for;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// The supervisor's name for the printer every test configures.
const KIOSK: &str = "printer:kiosk-1";

// Async, so it lives beside the actix tests rather than with the printer.
impl TestPrinter {
    /// Waits until the printer has read its status at least `polls` more times (three or four
    /// requests each): proof that the actor went round its loop without printing.
    async fn wait_polls(&self, polls: usize) {
        let start = self.status_requests();
        until("status polls", || {
            self.status_requests() >= start + polls * 3
        })
        .await;
    }
}

impl Spine {
    /// Starts the printer of a `[[devices.printer]]` table the way the daemon does.
    async fn start_printer(&self, table: &str) {
        for p in device_config(table).devices.printer {
            let name = printer::destination(&p.name);
            let spawn = PrinterSpawn::new(p, self.journal.clone());
            self.start_child(name, spawn).await;
        }
    }

    /// Checks a patient in with a ticket for kiosk-1, in the check-in's own transaction.
    async fn check_in(&self, queue: &str, patient: &str) -> String {
        let msg = QueueCheckIn {
            queue: queue.into(),
            check_in: CheckIn {
                patient_ref: Some(patient.into()),
                appointment_ref: None,
                priority: Priority::Normal,
                priority_reason: None,
                request_id: None,
                printer: None,
                contact: None,
                patient: None,
                demographics: None,
                unknown_to_ehr: false,
            },
            ticket: Some(TicketOrder {
                printer: "kiosk-1".into(),
                minutes_per_patient: 10,
            }),
        };
        journal::ask(&self.journal, msg)
            .await
            .expect("check-in")
            .0
            .ticket
    }

    /// Collects cloud events of `kind` until one satisfies `want`.
    async fn wait_event(
        &self,
        kind: &str,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            for e in self.cloud_events(kind).await {
                if want(&e) {
                    return e;
                }
                seen.push(e);
            }
            assert!(
                Instant::now() < deadline,
                "no matching {kind} event: {seen:?}"
            );
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Pending + in-flight tickets of kiosk-1.
    async fn waiting_tickets(&self) -> u64 {
        let stats = journal::ask(&self.journal, GetStats).await.expect("stats");
        stats
            .destinations
            .get("printer:kiosk-1")
            .map_or(0, |d| d.pending + d.in_flight)
    }
}

fn table(tty: &Path, extra: &str) -> String {
    format!(
        "[[devices.printer]]\nname = \"kiosk-1\"\nserial = \"{}\"\nclinic_name = \"Praxis Dr. Müller – Zürich\"\n\
         status_poll_ms = 200\nstatus_timeout_ms = 300\n{extra}",
        tty.display()
    )
}

/// Waits (polling) until `f` holds, in an async test.
async fn until(what: &str, f: impl Fn() -> bool) {
    eventually(what, || async { f().then_some(()) }).await
}

#[actix_rt::test]
async fn a_ticket_is_printed_as_these_exact_escpos_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tp = TestPrinter::start(dir.path());
    tp.ready();
    let spine = Spine::start(dir.path());
    spine
        .start_printer(&table(
            tp.tty(),
            "code_page = \"pc858\"\nutc_offset_min = 60\nfail_after_s = 1000000000\n\
             check_in_url = \"https://clinic.example/checkin?t={ticket}&q={queue}&e={entry}\"\n\
             [devices.printer.queue_labels]\nbilling = \"Caisse (€) - Kasse\"\n",
        ))
        .await;
    spine
        .wait_health(KIOSK, HealthState::Healthy, |_| true)
        .await;

    // A job as a check-in commits it, issued 2026-11-24T17:40:00Z.
    let job = TicketJob {
        entry: 7,
        ticket: "B-007".into(),
        queue: "billing".into(),
        waiting_ahead: 2,
        estimated_wait_min: 20,
    };
    let item = NewItem {
        source: "queue".into(),
        source_id: None,
        kind: printer::TICKET_KIND.into(),
        key: "printer:kiosk-1".into(),
        schema: "clinic-gateway/printer.ticket@1".into(),
        payload: serde_json::to_vec(&job).expect("json"),
        reply: None,
        occurred_at: Some(1_795_542_000_000),
        destinations: vec!["printer:kiosk-1".into()],
    };
    journal::ask(&spine.journal, Append(item))
        .await
        .expect("append");

    let mut expected: Vec<u8> = vec![0x1B, b'@', 0x1B, b't', 19, 0x1B, b'a', 1];
    // Bold clinic name: ü is 0x81 in PC858; the en dash is not in it and prints as '?'.
    expected.extend(b"\x1bE\x01Praxis Dr. M\x81ller ? Z\x81rich\n\x1bE\x00");
    // The number at four times width and height; ASCII '-' stays 0x2D.
    expected.extend(b"\x1d!\x33B-007\n\x1d!\x00");
    // The queue label with the euro sign at 0xD5, the local time, the wait.
    expected.extend(b"Caisse (\xd5) - Kasse\n2026-11-24 18:40\nEstimated wait: about 20 min\n");
    // QR: model 2, module 6, error correction M, store 52 bytes (pL = 55), print.
    expected.extend(b"\x1d(k\x04\x001A2\x00\x1d(k\x03\x001C\x06\x1d(k\x03\x001E1\x1d(k\x37\x001P0");
    expected.extend(b"https://clinic.example/checkin?t=B-007&q=billing&e=7");
    expected.extend(b"\x1d(k\x03\x001Q0\n");
    // Feed three lines, feed to the cutter and cut.
    expected.extend(b"\x1bd\x03\x1dVB\x00");

    until("the ticket on paper", || {
        tp.printed().len() >= expected.len()
    })
    .await;
    assert_eq!(tp.printed(), expected, "{:?}", tp.printed_text());
    let mut left = u64::MAX;
    for _ in 0..500 {
        left = spine.waiting_tickets().await;
        if left == 0 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, 0, "the printed ticket is delivered");
    spine.stop().await;
}

#[actix_rt::test]
async fn paper_out_holds_tickets_then_prints_them_in_order_when_paper_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tp = TestPrinter::start(dir.path());
    tp.paper_end();
    let spine = Spine::start(dir.path());
    spine.start_printer(&table(tp.tty(), "")).await;

    spine
        .wait_health(KIOSK, HealthState::Degraded, |h| {
            h.last_error.as_deref() == Some("printer kiosk-1: paper end")
        })
        .await;
    let status = spine
        .wait_event("printer.status", |e| e["condition"] == "paper end")
        .await;
    assert_eq!(status["printer"], "kiosk-1");
    assert_eq!(status["printable"], false);

    let first = spine.check_in("general", "MRN-1").await;
    let second = spine.check_in("general", "MRN-2").await;
    assert_eq!((first.as_str(), second.as_str()), ("G-001", "G-002"));
    tp.wait_polls(3).await;
    assert!(
        !tp.printed_text().contains("G-00"),
        "nothing prints without paper"
    );
    assert_eq!(
        spine.waiting_tickets().await,
        2,
        "both tickets wait in the journal"
    );

    tp.ready();
    spine
        .wait_health(KIOSK, HealthState::Healthy, |_| true)
        .await;
    spine
        .wait_event("printer.status", |e| e["condition"] == "ready")
        .await;
    until("both tickets printed", || {
        tp.printed_text().contains("G-002")
    })
    .await;
    let text = tp.printed_text();
    let (a, b) = (text.find("G-001"), text.find("G-002"));
    assert!(a.is_some() && a < b, "printed in check-in order: {text:?}");
    assert!(text.contains("Estimated wait: you are next"), "{text:?}");
    assert!(text.contains("Estimated wait: about 10 min"), "{text:?}");
    assert!(!text.contains("MRN"), "no patient data on the ticket");
    spine.stop().await;
}

#[actix_rt::test]
async fn a_ticket_past_fail_after_is_dead_lettered_and_reported_and_never_printed_late() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tp = TestPrinter::start(dir.path());
    tp.set(json!({ "answer": false }));
    let spine = Spine::start(dir.path());
    spine
        .start_printer(&table(tp.tty(), "fail_after_s = 1\n"))
        .await;
    let h = spine
        .wait_health(KIOSK, HealthState::Degraded, |_| true)
        .await;
    assert_eq!(
        h.last_error.as_deref(),
        Some("printer kiosk-1: offline (no answer to status within 300 ms)")
    );
    spine
        .wait_event("printer.status", |e| e["condition"] == "offline")
        .await;

    let ticket = spine.check_in("general", "MRN-77").await;
    let failed = spine
        .wait_event("printer.ticket_failed", |e| e["ticket"] == ticket.as_str())
        .await;
    assert_eq!(failed["queue"], "general");
    assert_eq!(failed["printer"], "kiosk-1");
    assert!(
        !failed.to_string().contains("MRN"),
        "no patient data: {failed}"
    );
    let dead = journal::ask(
        &spine.journal,
        ListDead {
            destination: Some("printer:kiosk-1".into()),
            limit: 10,
        },
    )
    .await
    .expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        dead[0].last_error,
        "ticket G-001 (general) not printed within 1 s of check-in; printer kiosk-1: offline; write it by hand"
    );
    assert_eq!(spine.waiting_tickets().await, 0);

    // The printer comes back: the ticket staff already wrote by hand is not printed too.
    tp.ready();
    spine
        .wait_health(KIOSK, HealthState::Healthy, |_| true)
        .await;
    tp.wait_polls(2).await;
    assert!(!tp.printed_text().contains("G-001"));
    spine.stop().await;
}

#[actix_rt::test]
async fn noise_and_unreadable_answers_from_the_printer_do_not_stop_the_actor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tp = TestPrinter::start(dir.path());
    // Bytes that cannot be status answers before every answer.
    tp.set(json!({ "answer": true, "noise": "ff00a5c3e1" }));
    let spine = Spine::start(dir.path());
    spine.start_printer(&table(tp.tty(), "")).await;
    spine
        .wait_health(KIOSK, HealthState::Healthy, |_| true)
        .await;
    spine.check_in("general", "MRN-1").await;
    until("the ticket printed", || tp.printed_text().contains("G-001")).await;

    // Only garbage instead of answers: as good as no answer.
    tp.set(json!({ "answer": true, "status": { "1": 0xFF, "2": 0x00, "3": 0xFF, "4": 0x81 } }));
    let h = spine
        .wait_health(KIOSK, HealthState::Degraded, |_| true)
        .await;
    assert!(
        h.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("printer kiosk-1: offline")),
        "{h:?}"
    );
    spine.check_in("general", "MRN-2").await;
    tp.wait_polls(2).await;
    assert!(!tp.printed_text().contains("G-002"));

    tp.ready();
    spine
        .wait_health(KIOSK, HealthState::Healthy, |_| true)
        .await;
    until("the held ticket printed", || {
        tp.printed_text().contains("G-002")
    })
    .await;
    assert_eq!(
        spine.health(KIOSK).await.restarts,
        0,
        "the actor never failed"
    );
    spine.stop().await;
}

#[test]
fn check_in_over_http_prints_a_ticket_and_the_preview_shows_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tp = TestPrinter::start(dir.path());
    tp.ready();
    let mut gw = common::Gateway::new(
        dir.path(),
        &format!(
            "{}default_for = [\"general\"]\nminutes_per_patient = 7\n\
             [devices.printer.queue_labels]\ngeneral = \"Médecine générale\"\n",
            table(tp.tty(), "")
        ),
    );
    gw.start();
    wait_for("the printer healthy", Duration::from_secs(20), || {
        let actors = gw.get_json("/api/v1/actors");
        actors
            .as_array()?
            .iter()
            .any(|a| a["name"] == "printer:kiosk-1" && a["state"] == "healthy")
            .then_some(())
    });

    let url = |q: &str| gw.url(&format!("/api/v1/queues/{q}/check-in"));
    let (status, body) = common::post(&url("general"), &json!({ "patient_ref": "MRN-1" }));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["printer"], "kiosk-1", "the queue's default printer");
    let (status, body) = common::post(&url("general"), &json!({ "patient_ref": "MRN-2" }));
    assert_eq!(status, 201, "{body}");
    let (status, body) = common::post(&url("lab"), &json!({ "printer": "kiosk-1" }));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["entry"]["ticket"], "L-001");
    let (status, body) = common::post(&url("lab"), &json!({}));
    assert_eq!(status, 201);
    assert_eq!(
        body["printer"],
        serde_json::Value::Null,
        "lab has no default printer"
    );
    let (status, body) = common::post(&url("lab"), &json!({ "printer": "kiosk-9" }));
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap_or("").contains("\"printer\""),
        "{body}"
    );

    wait_for("three tickets printed", Duration::from_secs(20), || {
        let t = tp.printed_text();
        (t.contains("G-001") && t.contains("G-002") && t.contains("L-001")).then_some(())
    });
    let printed = tp.printed();
    assert!(
        printed
            .windows(b"M\x82decine g\x82n\x82rale".len())
            .any(|w| w == b"M\x82decine g\x82n\x82rale"),
        "the queue label in PC858"
    );
    let text = tp.printed_text();
    assert!(
        text.contains("Estimated wait: about 7 min"),
        "G-002 has one patient ahead: {text:?}"
    );
    assert!(
        !text.contains("L-002"),
        "a check-in without a printer prints nothing"
    );

    let status_page = gw.get_text("/");
    assert!(
        status_page.contains("href=\"/printers/kiosk-1/preview\""),
        "linked from the status page"
    );
    let page = gw.get_text("/printers/kiosk-1/preview");
    assert!(
        page.contains("Praxis Dr. Müller ? Zürich"),
        "as the code page prints it"
    );
    assert!(page.contains("G-042") && page.contains("Médecine générale"));
    assert!(page.contains("Estimated wait: about 21 min"));
    assert!(!page.contains("MRN"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let missing = agent
        .get(&gw.url("/printers/nope/preview"))
        .call()
        .expect("answer");
    assert_eq!(missing.status().as_u16(), 404);
}

#[actix_rt::test]
async fn a_missing_serial_port_is_offline_and_its_tickets_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spine = Spine::start(dir.path());
    let missing = dir.path().join("no-such-tty");
    spine.start_printer(&table(&missing, "")).await;
    let h = spine
        .wait_health(KIOSK, HealthState::Degraded, |_| true)
        .await;
    let error = h.last_error.unwrap_or_default();
    assert!(
        error.starts_with("printer kiosk-1: offline (cannot open ")
            && error.contains("no-such-tty"),
        "{error}"
    );
    spine.check_in("general", "MRN-1").await;
    spine
        .wait_event("printer.status", |e| e["condition"] == "offline")
        .await;
    assert_eq!(spine.waiting_tickets().await, 1, "the ticket waits");
    assert_eq!(spine.health(KIOSK).await.restarts, 0);
    spine.stop().await;
}
