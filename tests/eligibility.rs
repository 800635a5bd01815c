//! Eligibility: X12 005010X279A1 checked by an independent parser (PyPI `linuxforhealth-x12`),
//! and the gateway asking a payer's CAQH CORE endpoint (spyne, tests/peers/x12/core_peer.py)
//! about queue entries, as the front desk does.

mod common;

use common::*;
use serde_json::{Value, json};
use std::process::Child;
use std::sync::mpsc;
use std::time::Duration;

use clinic_gateway::connectors::practice::eligibility::{self, Inquiry, Member, Status};
use clinic_gateway::connectors::practice::x12::Envelope;

fn envelope(control: u32) -> Envelope {
    Envelope {
        sender: ("ZZ".into(), "CLINIC01".into()),
        receiver: ("ZZ".into(), "PAYER01".into()),
        application_sender: "CLINIC01".into(),
        application_receiver: "PAYER01".into(),
        control,
        date: "20261202".into(),
        time: "0915".into(),
        production: false,
    }
}

fn inquiry(trace: &str, member: Member, service_types: &[&str]) -> Inquiry {
    Inquiry {
        payer_name: "ACME HEALTH".into(),
        payer_id: "60054".into(),
        provider_name: "MAIN STREET CLINIC".into(),
        provider_npi: "1234567893".into(),
        member,
        service_date: "20261202".into(),
        service_types: service_types.iter().map(|s| s.to_string()).collect(),
        trace: trace.into(),
        originator: "9CLINIC001".into(),
    }
}

fn member(last: &str, first: &str, id: &str, gender: Option<&str>) -> Member {
    Member {
        last_name: last.into(),
        first_name: first.into(),
        member_id: id.into(),
        birth_date: "19800101".into(),
        gender: gender.map(str::to_string),
    }
}

#[test]
fn every_270_the_gateway_writes_passes_the_independent_parser() {
    let cases = [
        inquiry(
            "T1",
            member("DOE", "JANE", "W123456789", Some("F")),
            &["30"],
        ),
        inquiry(
            "T2",
            member("O'NEIL-SMITH", "Ann Marie", "XZ9", None),
            &["30", "98", "UC"],
        ),
        inquiry("T3", member("Núñez", "José", "A1B2C3", Some("M")), &[]),
    ];
    for (n, q) in cases.iter().enumerate() {
        let text = eligibility::request(q, &envelope(100 + n as u32)).expect("270 written");
        let read = common::x12::check_270(&text)
            .unwrap_or_else(|e| panic!("the parser refused the 270 {text}: {e}"));
        assert_eq!(read["trace"], q.trace.as_str());
        assert_eq!(read["member_id"], q.member.member_id.as_str());
        let types: Vec<&str> = if q.service_types.is_empty() {
            vec!["30"]
        } else {
            q.service_types.iter().map(String::as_str).collect()
        };
        assert_eq!(read["service_types"], serde_json::json!(types));
    }
}

#[test]
fn the_271s_the_independent_library_writes_are_read_as_meant() {
    let active =
        eligibility::read(common::x12::emit_271("active", "T9").as_bytes(), "T9").expect("a value");
    assert_eq!(active.status, Status::Active);
    assert_eq!(active.copay, Some(2500));
    assert_eq!(active.deductible_remaining, Some(25050));
    assert_eq!(active.plan.as_deref(), Some("GOLD PPO"));

    let inactive = eligibility::read(common::x12::emit_271("inactive", "T9").as_bytes(), "T9")
        .expect("a value");
    assert_eq!(
        inactive.status,
        Status::Inactive("coverage is inactive".into())
    );

    let wrong = eligibility::read(common::x12::emit_271("member_id", "T9").as_bytes(), "T9")
        .expect("a value");
    let Status::Rejected(r) = wrong.status else {
        panic!("a 2100C AAA is a rejection: {wrong:?}")
    };
    assert_eq!(r[0].reason, "invalid or missing member id");
    assert!(r[0].retry);

    let down = eligibility::read(common::x12::emit_271("payer_down", "T9").as_bytes(), "T9")
        .expect("a value");
    let Status::Rejected(r) = down.status else {
        panic!("a 2000A AAA is a rejection: {down:?}")
    };
    assert_eq!((r[0].place.as_str(), r[0].code.as_str()), ("2000A", "42"));

    let other = eligibility::read(common::x12::emit_271("active", "T8").as_bytes(), "T9");
    assert!(other.is_err(), "an answer to another inquiry is refused");
}

/// The payer's CORE endpoint, killed on drop; its stderr tells which 270s it checked.
struct Payer {
    port: u16,
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Payer {
    fn start(password: &str) -> Payer {
        let port = free_port();
        let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/peers/x12/.venv/bin/python");
        let mut cmd = std::process::Command::new(python);
        cmd.arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/x12/core_peer.py"),
        )
        .arg(port.to_string())
        .arg(password);
        let (child, lines) = start_until_ready(&mut cmd, "the payer's CORE endpoint", "ready");
        Payer {
            port,
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for the peer to report a line starting with `prefix`; returns it.
    fn saw(&mut self, prefix: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(l) = self.seen.iter().find(|l| l.starts_with(prefix)) {
                return l.clone();
            }
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!(
                    "the payer never reported {prefix:?}; it said {:?}",
                    self.seen
                ),
            }
        }
    }
}

impl Drop for Payer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gateway(dir: &std::path::Path, payer: &Payer, extra: &str) -> Gateway {
    std::fs::write(dir.join("payer.secret"), "s3cret\n").expect("password file");
    let mut gw = Gateway::new(
        dir,
        &format!(
            "[connectors.eligibility]\nurl = \"http://127.0.0.1:{}/\"\nusername = \"clinic\"\n\
             password_file = \"payer.secret\"\nsender_id = \"CLINIC01\"\nreceiver_id = \"PAYER01\"\n\
             provider_name = \"MAIN STREET CLINIC\"\nprovider_npi = \"1234567893\"\n\
             originator = \"9CLINIC001\"\nservice_types = [\"30\", \"98\"]\n{extra}\n\
             [[connectors.eligibility.payer]]\nname = \"acme\"\npayer_name = \"ACME HEALTH\"\npayer_id = \"60054\"\n\n\
             [destinations.eligibility]\nbackoff_initial_ms = 200\nbackoff_max_ms = 400\nmax_attempts = 1000\n",
            payer.port
        ),
    );
    gw.start();
    gw
}

fn check_in(gw: &Gateway) -> i64 {
    let (status, body) = post(&gw.url("/api/v1/queues/general/check-in"), &json!({}));
    assert_eq!(status, 201, "{body}");
    body["entry"]["id"].as_i64().expect("entry id")
}

fn ask(gw: &Gateway, entry: i64, member_id: &str) -> (u16, Value) {
    post(
        &gw.url(&format!("/api/v1/queue-entries/{entry}/eligibility")),
        &json!({ "member_id": member_id, "last_name": "DOE", "first_name": "JANE", "birth_date": "1980-01-01" }),
    )
}

/// The entry's eligibility once it is no longer `pending` (and, with `cause`, has that cause).
fn settled(gw: &Gateway, entry: i64, cause: Option<&str>) -> Value {
    wait_for("the eligibility answer", Duration::from_secs(30), || {
        let e = gw.get_json(&format!("/api/v1/queue-entries/{entry}/eligibility"));
        let done = e["status"] != "pending" && cause.is_none_or(|c| e["cause"] == c);
        done.then_some(e)
    })
}

#[test]
fn the_front_desk_sees_active_coverage_with_the_copay_and_nothing_of_the_member_leaves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut payer = Payer::start("s3cret");
    let gw = gateway(dir.path(), &payer, "");
    let entry = check_in(&gw);
    let (status, asked) = ask(&gw, entry, "ACTIVE-W123456789");
    assert_eq!(status, 202, "{asked}");
    assert_eq!(asked["status"], "pending");
    payer.saw("270 ok ACTIVE-W123456789");
    let e = settled(&gw, entry, None);
    assert_eq!(e["status"], "verified", "{e}");
    assert_eq!(e["copay"], 2500);
    assert_eq!(e["deductible_remaining"], 25050);
    assert_eq!(e["plan"], "GOLD PPO");
    let board = gw.get_text("/");
    assert!(board.contains("verified</span>, co-pay 25.00"), "{board}");

    let events = wait_for("the eligibility event", Duration::from_secs(10), || {
        let ev = journal_events(&gw, "eligibility.checked");
        (!ev.is_empty()).then_some(ev)
    });
    assert_eq!(events[0]["status"], "verified");
    assert_eq!(events[0]["entry"], entry);
    let leaked = |text: &str| {
        ["W123456789", "DOE", "JANE", "19800101"]
            .iter()
            .any(|p| text.contains(p))
    };
    assert!(!leaked(&events[0].to_string()), "{}", events[0]);
    assert!(!leaked(&e.to_string()), "{e}");
    assert!(!leaked(&gw.log_text()), "the log names the member");
    assert!(!leaked(&board), "the board names the member");
}

#[test]
fn a_rejection_or_inactive_plan_tells_the_front_desk_why_and_an_override_is_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut payer = Payer::start("s3cret");
    let gw = gateway(dir.path(), &payer, "");
    let wrong_id = check_in(&gw);
    ask(&gw, wrong_id, "BADID-1");
    payer.saw("270 ok BADID-1");
    let e = settled(&gw, wrong_id, None);
    assert_eq!(
        (e["status"].as_str(), e["cause"].as_str()),
        (Some("not_verified"), Some("rejected")),
        "{e}"
    );
    assert_eq!(
        e["reasons"],
        json!(["invalid or missing member id (correct and resubmit)"])
    );
    assert_eq!(e["retry"], true);
    let notices = notice_texts(&gw);
    assert!(
        notices
            .iter()
            .any(|n| n.contains("G-001") && n.contains("invalid or missing member id")),
        "{notices:?}"
    );

    let inactive = check_in(&gw);
    ask(&gw, inactive, "INACTIVE-7");
    let e = settled(&gw, inactive, None);
    assert_eq!(
        (e["status"].as_str(), e["cause"].as_str()),
        (Some("not_verified"), Some("inactive")),
        "{e}"
    );

    let url = gw.url(&format!(
        "/api/v1/queue-entries/{inactive}/eligibility/override"
    ));
    let (status, refused) = post(&url, &json!({ "reason": "ok" }));
    assert_eq!(
        status, 409,
        "an override needs a documented reason: {refused}"
    );
    let (status, done) = post(
        &url,
        &json!({ "reason": "self-pay agreed at the desk", "by": "maria" }),
    );
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "overridden");
    assert_eq!(done["override_by"], "api:maria");
    let audit = audit_log(&gw);
    assert!(
        audit
            .iter()
            .any(|(action, actor, detail)| action == "eligibility.overridden"
                && actor == "api:maria"
                && detail.contains("self-pay agreed")),
        "{audit:?}"
    );
    // The queue is untouched: both patients still wait in arrival order.
    let (status, called) = post(&gw.url("/api/v1/queues/general/call-next"), &json!({}));
    assert_eq!(status, 200, "{called}");
    assert_eq!(called["entry"]["ticket"], "G-001");
}

#[test]
fn a_payer_that_cannot_answer_now_is_asked_again_until_it_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut payer = Payer::start("s3cret");
    let gw = gateway(dir.path(), &payer, "");
    let entry = check_in(&gw);
    ask(&gw, entry, "DOWNONCE-5");
    let e = settled(&gw, entry, Some("no_answer"));
    assert_eq!(
        e["reasons"],
        json!(["the payer cannot respond now (resubmission allowed)"])
    );
    payer.saw("270 ok DOWNONCE-5");
    let e = wait_for("the second answer", Duration::from_secs(30), || {
        let e = gw.get_json(&format!("/api/v1/queue-entries/{entry}/eligibility"));
        (e["status"] == "verified").then_some(e)
    });
    assert_eq!(e["copay"], 2500);
}

#[test]
fn slow_unreadable_and_lying_answers_and_a_refused_password_are_told_and_the_queue_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut payer = Payer::start("s3cret");
    let gw = gateway(dir.path(), &payer, "timeout_ms = 5000");
    let slow = check_in(&gw);
    let garbage = check_in(&gw);
    let liar = check_in(&gw);
    ask(&gw, slow, "SLOW-1");
    ask(&gw, garbage, "GARBAGE-1");
    ask(&gw, liar, "LIAR-1");
    let e = settled(&gw, slow, Some("no_answer"));
    assert_eq!(e["reasons"], json!(["the payer did not answer within 5 s"]));
    let e = settled(&gw, garbage, None);
    assert_eq!(e["cause"], "unreadable", "{e}");
    assert!(
        e["reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains("does not start with ISA")),
        "{e}"
    );
    let e = settled(&gw, liar, None);
    assert_eq!(e["cause"], "unreadable", "{e}");
    assert!(
        e["reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains("answers inquiry SOMEONE-ELSE")),
        "{e}"
    );
    // An unreadable answer is a dead letter staff can see and replay; the queue is not held.
    let dead = gw.get_json("/api/v1/dlq?destination=eligibility");
    assert_eq!(dead.as_array().map(Vec::len), Some(2), "{dead}");
    let (status, called) = post(&gw.url("/api/v1/queues/general/call-next"), &json!({}));
    assert_eq!(status, 200, "{called}");
    payer.saw("270 ok SLOW-1");
    drop(gw);

    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = Payer::start("another-password");
    let gw = gateway(dir.path(), &wrong, "");
    let entry = check_in(&gw);
    ask(&gw, entry, "ACTIVE-2");
    let e = settled(&gw, entry, None);
    assert_eq!(e["cause"], "unreadable", "{e}");
    assert!(
        e["reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains("Unauthorized")),
        "{e}"
    );
}

#[test]
fn an_inquiry_the_payer_is_slow_to_answer_holds_up_no_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut payer = Payer::start("s3cret");
    let gw = gateway(dir.path(), &payer, "timeout_ms = 60000");
    let slow = check_in(&gw);
    ask(&gw, slow, "SLOW-1");
    payer.saw("270 ok SLOW-1");
    // Asked while the slow one is out: answered (and the next after it) without waiting for it.
    for n in 1..=2 {
        let entry = check_in(&gw);
        ask(&gw, entry, &format!("ACTIVE-{n}"));
        let e = settled(&gw, entry, None);
        assert_eq!(e["status"], "verified", "{e}");
    }
    let e = gw.get_json(&format!("/api/v1/queue-entries/{slow}/eligibility"));
    assert_eq!(e["status"], "pending", "{e}");
}

#[test]
fn a_request_without_what_the_payer_needs_or_for_an_unknown_entry_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let payer = Payer::start("s3cret");
    let gw = gateway(dir.path(), &payer, "");
    let entry = check_in(&gw);
    let url = gw.url(&format!("/api/v1/queue-entries/{entry}/eligibility"));
    let (status, e) = post(&url, &json!({ "member_id": "X1" }));
    assert_eq!(status, 409, "{e}");
    assert!(
        e["error"]
            .as_str()
            .is_some_and(|m| m.contains("\"last_name\" is required")),
        "{e}"
    );
    let (status, e) = post(
        &url,
        &json!({ "member_id": "X*1", "last_name": "DOE", "first_name": "J", "birth_date": "1980-01-01" }),
    );
    assert_eq!(status, 409, "{e}");
    let (status, e) = post(
        &url,
        &json!({ "member_id": "X1", "last_name": "DOE", "first_name": "J", "birth_date": "1980-02-30" }),
    );
    assert_eq!(status, 409, "{e}");
    let (status, e) = post(&url, &json!({ "member_id": "X1", "payer": "nobody" }));
    assert_eq!(status, 400, "{e}");
    let (status, e) = ask(&gw, 999, "ACTIVE-1");
    assert_eq!(status, 404, "{e}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        config_text(
            dir.path(),
            free_port(),
            "[connectors.eligibility]\nurl = \"http://example.com/\"\nusername = \"c\"\npassword_file = \"payer.secret\"\n\
             sender_id = \"C\"\nreceiver_id = \"P\"\nprovider_name = \"X\"\nprovider_npi = \"1234567890\"\n\
             originator = \"9CLINIC001\"\n[[connectors.eligibility.payer]]\nname = \"a\"\npayer_name = \"A\"\npayer_id = \"1\"\n",
        ),
    )
    .expect("write");
    let (code, text) = check_config(&bad);
    assert_ne!(code, Some(0));
    assert!(
        text.contains("connectors.eligibility.url: must be https://"),
        "{text}"
    );
    assert!(
        text.contains("connectors.eligibility.provider_npi: not an NPI"),
        "{text}"
    );
}

#[test]
fn a_card_kept_by_a_check_in_is_asked_about_after_a_kill_9_before_the_writer_got_to_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut payer = Payer::start("s3cret");
    let mut gw = gateway(dir.path(), &payer, "");
    let (status, body) = post(&gw.url("/api/v1/faults/journal/hold-later"), &json!({}));
    assert_eq!(status, 202, "{body}");
    let card = json!({ "coverage": { "member_id": "ACTIVE-77", "last_name": "DOE", "first_name": "JANE", "birth_date": "1980-01-01" } });
    let (status, body) = post(&gw.url("/api/v1/queues/general/check-in"), &card);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["eligibility"]["status"], "pending", "{body}");
    let entry = body["entry"]["id"].as_i64().expect("entry id");
    let kept = gw.get_json(&format!("/api/v1/queue-entries/{entry}/eligibility"));
    assert_eq!(kept["status"], "pending", "{kept}");
    assert_eq!(kept["requested_by"], "check-in", "{kept}");
    gw.kill9();
    gw.start();
    payer.saw("270 ok ACTIVE-77");
    let e = settled(&gw, entry, None);
    assert_eq!(e["status"], "verified", "{e}");
    assert_eq!(
        e["requested_at"], kept["requested_at"],
        "asked as at the check-in"
    );
}

#[test]
fn a_card_shown_at_check_in_is_asked_about_and_the_patient_is_queued_whatever_it_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut payer = Payer::start("s3cret");
    let gw = gateway(dir.path(), &payer, "");
    let card = json!({ "coverage": { "member_id": "ACTIVE-88", "last_name": "DOE", "first_name": "JANE", "birth_date": "1980-01-01" } });
    let (status, body) = post(&gw.url("/api/v1/queues/general/check-in"), &card);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["eligibility"]["status"], "pending", "{body}");
    let entry = body["entry"]["id"].as_i64().expect("entry id");
    payer.saw("270 ok ACTIVE-88");
    assert_eq!(settled(&gw, entry, None)["status"], "verified");

    // A card without what the payer needs still queues the patient, and says what is missing.
    let (status, body) = post(
        &gw.url("/api/v1/queues/general/check-in"),
        &json!({ "coverage": { "member_id": "ACTIVE-89" } }),
    );
    assert_eq!(status, 201, "{body}");
    assert!(
        body["eligibility"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("\"last_name\" is required")),
        "{body}"
    );
    assert_eq!(body["entry"]["ticket"], "G-002");
    let (status, body) = post(
        &gw.url("/api/v1/queues/general/check-in"),
        &json!({ "coverage": { "member": "ACTIVE-89" } }),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("coverage: unknown field `member`")),
        "{body}"
    );
}

/// A payer added to the configuration and reloaded (SIGHUP) can be named by a card at
/// check-in at once, without a restart: the desk reads the payers as reloaded, as the
/// connector asking them does. The reload is logged once the connector on the older
/// configuration has stopped: before, it could claim the check-in's inquiry first and refuse
/// it ("payer \"beta\" is no longer configured"), once in about twenty runs.
#[test]
fn a_payer_added_by_a_reload_is_asked_about_at_check_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut payer = Payer::start("s3cret");
    let gw = gateway(dir.path(), &payer, "");
    let check_in = |member: &str| {
        let card = json!({ "coverage": { "payer": "beta", "member_id": member, "last_name": "DOE", "first_name": "JANE", "birth_date": "1980-01-01" } });
        let (status, body) = post(&gw.url("/api/v1/queues/general/check-in"), &card);
        assert_eq!(status, 201, "{body}");
        body
    };
    let body = check_in("ACTIVE-90");
    assert_eq!(
        body["eligibility"]["error"], "\"coverage.payer\": not a configured payer",
        "{body}"
    );
    let config = std::fs::read_to_string(&gw.config).expect("config");
    std::fs::write(
        &gw.config,
        format!(
            "{config}\n[[connectors.eligibility.payer]]\nname = \"beta\"\npayer_name = \"BETA CARE\"\npayer_id = \"60055\"\n"
        ),
    )
    .expect("config");
    gw.signal("HUP");
    wait_for("the reload", Duration::from_secs(20), || {
        gw.log_text()
            .contains("configuration reloaded")
            .then_some(())
    });
    let body = check_in("ACTIVE-91");
    assert_eq!(body["eligibility"]["status"], "pending", "{body}");
    assert_eq!(body["eligibility"]["payer"], "beta", "{body}");
    payer.saw("270 ok ACTIVE-91");
    let entry = body["entry"]["id"].as_i64().expect("entry id");
    assert_eq!(settled(&gw, entry, None)["status"], "verified");
}

#[test]
fn the_cores_mime_multipart_form_asks_and_reads_as_the_soap_one_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut payer = Payer::start("s3cret");
    let gw = gateway(dir.path(), &payer, "form = \"mime\"");
    let active = check_in(&gw);
    let wrong = check_in(&gw);
    ask(&gw, active, "ACTIVE-MIME");
    ask(&gw, wrong, "BADID-MIME");
    payer.saw("270 ok ACTIVE-MIME");
    let e = settled(&gw, active, None);
    assert_eq!(
        (e["status"].as_str(), e["copay"].as_i64()),
        (Some("verified"), Some(2500)),
        "{e}"
    );
    let e = settled(&gw, wrong, None);
    assert_eq!(
        e["reasons"],
        json!(["invalid or missing member id (correct and resubmit)"]),
        "{e}"
    );
}

/// The payer behind a FHIR PMS that stores but does not decide (the FHIR test server): it
/// reads each new CoverageEligibilityRequest and creates the CoverageEligibilityResponse
/// pointing back at it, by the member id's first word as the CORE peer does (ACTIVE, INACTIVE,
/// BADID: an `error.code` X12 72; SILENT: nothing; LATE: nothing until `late` is set).
struct FhirPayer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    late: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FhirPayer {
    fn start(base: String, token: &str) -> FhirPayer {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let late = std::sync::Arc::new(AtomicBool::new(false));
        let (stop2, late2, auth) = (stop.clone(), late.clone(), format!("Bearer {token}"));
        let thread = std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let mut answered = std::collections::BTreeSet::new();
            while !stop2.load(Ordering::Relaxed) {
                let page: Value = agent
                    .get(&format!("{base}/CoverageEligibilityRequest?_count=200"))
                    .header("Authorization", &auth)
                    .call()
                    .expect("search requests")
                    .body_mut()
                    .read_json()
                    .expect("a Bundle");
                for entry in page["entry"].as_array().into_iter().flatten() {
                    let request = &entry["resource"];
                    let id = request["id"].as_str().expect("an id").to_string();
                    let member = request["contained"]
                        .as_array()
                        .and_then(|c| c.iter().find(|r| r["resourceType"] == "Coverage"))
                        .and_then(|c| c["subscriberId"].as_str())
                        .unwrap_or_default()
                        .to_string();
                    let scenario = member.split('-').next().unwrap_or_default();
                    let waiting = scenario == "SILENT"
                        || (scenario == "LATE" && !late2.load(Ordering::Relaxed));
                    if answered.contains(&id) || waiting {
                        continue;
                    }
                    let mut response = json!({
                        "resourceType": "CoverageEligibilityResponse", "status": "active",
                        "purpose": ["validation", "benefits"],
                        "patient": {"display": "the member"},
                        "created": "2026-12-02T09:15:00Z",
                        "request": {"reference": format!("CoverageEligibilityRequest/{id}")},
                        "outcome": "complete",
                        "insurer": {"display": "ACME HEALTH"},
                    });
                    let money = |v: f64| json!({ "value": v, "currency": "USD" });
                    match scenario {
                        "INACTIVE" => {
                            response["insurance"] =
                                json!([{ "coverage": {"display": "GOLD PPO"}, "inforce": false }])
                        }
                        "BADID" => {
                            response["outcome"] = json!("error");
                            response["error"] = json!([{ "code": { "coding": [{
                                "system": "https://x12.org/codes/reject-reason-codes", "code": "72"
                            }] } }]);
                        }
                        _ => {
                            response["insurance"] = json!([{
                                "coverage": {"display": "GOLD PPO"}, "inforce": true,
                                "item": [
                                    {"category": {"coding": [{"code": "30"}]}, "benefit": [
                                        {"type": {"coding": [{"code": "copay"}]}, "allowedMoney": money(40.0)},
                                        {"type": {"coding": [{"code": "deductible"}]}, "allowedMoney": money(1500.0), "usedMoney": money(1249.5)}
                                    ]},
                                    {"category": {"coding": [{"code": "98"}]}, "network": {"coding": [{"code": "in"}]}, "benefit": [
                                        {"type": {"coding": [{"code": "copay"}]}, "allowedMoney": money(25.0)}
                                    ]}
                                ]
                            }])
                        }
                    }
                    let status = agent
                        .post(&format!("{base}/CoverageEligibilityResponse"))
                        .header("Authorization", &auth)
                        .header("Content-Type", "application/fhir+json")
                        .send(response.to_string())
                        .expect("create the response")
                        .status()
                        .as_u16();
                    assert_eq!(status, 201, "the FHIR server refused the payer's response");
                    answered.insert(id);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        FhirPayer {
            stop,
            late,
            thread: Some(thread),
        }
    }
}

impl Drop for FhirPayer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn the_fhir_form_asks_a_pms_and_reads_the_payers_response_to_its_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A JWT whose `exp` has passed ({"alg":"none"}.{"exp":1700000000}), which this PMS still
    // takes: the gateway's credentials watcher tells staff all the same.
    let token = "eyJhbGciOiJub25lIn0.eyJleHAiOjE3MDAwMDAwMDB9.";
    let fhir = common::fhir_server::FhirServer::start(dir.path(), &[("FHIR_BEARER_TOKEN", token)]);
    let payer = FhirPayer::start(fhir.base(), token);
    std::fs::write(dir.path().join("pms.token"), format!("{token}\n")).expect("token file");
    let mut gw = Gateway::new(
        dir.path(),
        &format!(
            "[connectors.eligibility]\nform = \"fhir\"\nurl = \"{}\"\n\
             provider_name = \"MAIN STREET CLINIC\"\nprovider_npi = \"1234567893\"\n\
             service_types = [\"30\", \"98\"]\ntimeout_ms = 3000\n\
             [connectors.eligibility.auth]\nkind = \"bearer\"\ntoken_file = \"pms.token\"\n\
             [[connectors.eligibility.payer]]\nname = \"acme\"\npayer_name = \"ACME HEALTH\"\npayer_id = \"60054\"\n\n\
             [destinations.eligibility]\nbackoff_initial_ms = 200\nbackoff_max_ms = 400\nmax_attempts = 1000\n",
            fhir.base()
        ),
    );
    gw.start();
    let active = check_in(&gw);
    let inactive = check_in(&gw);
    let wrong = check_in(&gw);
    let late = check_in(&gw);
    for (entry, member) in [
        (active, "ACTIVE-W123456789"),
        (inactive, "INACTIVE-7"),
        (wrong, "BADID-1"),
        (late, "LATE-1"),
    ] {
        let (status, asked) = ask(&gw, entry, member);
        assert_eq!(status, 202, "{asked}");
    }
    let e = settled(&gw, active, None);
    assert_eq!(
        (
            e["status"].as_str(),
            e["copay"].as_i64(),
            e["deductible_remaining"].as_i64()
        ),
        (Some("verified"), Some(2500), Some(25050)),
        "{e}"
    );
    assert_eq!(e["plan"], "GOLD PPO");
    let e = settled(&gw, inactive, None);
    assert_eq!(
        (e["status"].as_str(), e["cause"].as_str()),
        (Some("not_verified"), Some("inactive")),
        "{e}"
    );
    let e = settled(&gw, wrong, None);
    assert_eq!(e["cause"], "rejected", "{e}");
    assert_eq!(e["reasons"], json!(["invalid or missing member id"]));
    assert_eq!(e["retry"], true);

    // A payer that has not answered in time is asked again: the request is found by its
    // identifier, not made twice, and its late response is read.
    let e = settled(&gw, late, Some("no_answer"));
    assert_eq!(e["reasons"], json!(["the payer did not answer within 3 s"]));
    payer.late.store(true, std::sync::atomic::Ordering::Relaxed);
    let e = wait_for("the late answer", Duration::from_secs(30), || {
        let e = gw.get_json(&format!("/api/v1/queue-entries/{late}/eligibility"));
        (e["status"] == "verified").then_some(e)
    });
    assert_eq!(e["copay"], 2500);
    let requests = fhir.call("GET", "/CoverageEligibilityRequest?_count=200", None);
    let sent: Vec<&Value> = requests["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| &e["resource"])
        .collect();
    assert_eq!(sent.len(), 4, "one request per inquiry: {requests}");
    assert!(
        sent.iter()
            .all(|r| r["purpose"] == json!(["validation", "benefits"])),
        "{requests}"
    );
    let leaked = |text: &str| {
        ["W123456789", "DOE", "JANE"]
            .iter()
            .any(|p| text.contains(p))
    };
    assert!(!leaked(&gw.log_text()), "the log names the member");
    wait_for(
        "the expired token's notice",
        Duration::from_secs(10),
        || {
            notice_texts(&gw)
                .iter()
                .any(|n| n.contains("bearer token in connectors.eligibility.auth.token_file"))
                .then_some(())
        },
    );

    // Credentials the PMS refuses are told, and the inquiry waits for staff in the dead letters.
    std::fs::write(dir.path().join("pms.token"), "stale\n").expect("token file");
    let refused = check_in(&gw);
    ask(&gw, refused, "ACTIVE-2");
    let e = settled(&gw, refused, None);
    assert_eq!(e["cause"], "unreadable", "{e}");
    assert!(
        e["reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains("the payer refused our credentials")),
        "{e}"
    );
    let (status, called) = post(&gw.url("/api/v1/queues/general/call-next"), &json!({}));
    assert_eq!(status, 200, "{called}");
    drop(payer);
}
