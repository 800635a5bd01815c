//! Patient messaging against real peers on loopback: email through aiosmtpd (plain, STARTTLS
//! with AUTH, implicit TLS with AUTH), exactly once across a gateway restart with messages
//! pending; refusals recorded on the notification; SMS through Kannel's `sendsms` in front of
//! the scripted SMSC (npm `smpp`), its delivery receipts coming back to the gateway.

mod common;

use common::smsc::{Kannel, SENDSMS_PASSWORD, SENDSMS_USER, Smsc};
use common::smtp::{Security, SmtpServer, messages_in};
use common::{Certs, Gateway, config_text, free_port, post, wait_for};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const TEMPLATES: &str = r#"
[messaging.templates.you_are_next.en]
sms = "Ticket {ticket}: you are next."
subject = "Ticket {ticket}: you are next"
email = "Ticket {ticket} ({queue}) at {facility}: you are next. Please stay near the board."
[messaging.templates.you_are_next.de]
sms = "Nummer {ticket}: Sie sind als Nächste dran."
subject = "Nummer {ticket}"
email = "Nummer {ticket}: Sie sind als Nächste dran."
"#;

/// `[messaging]` with one SMTP provider (`smtp`: its inline table) and fast outbox retries.
fn email_config(smtp: &str) -> String {
    format!(
        "[destinations.messaging]\nbackoff_initial_ms = 200\nbackoff_max_ms = 500\nmax_attempts = 1000\n\n\
[messaging]\nchannels = [\"email\"]\n\n\
[[messaging.providers]]\nname = \"mail\"\nsmtp = {smtp}\n{TEMPLATES}"
    )
}

fn check_in(gw: &Gateway, body: Value) -> Value {
    let (status, answer) = post(&gw.url("/api/v1/queues/general/check-in"), &body);
    assert_eq!(status, 201, "{answer}");
    answer
}

fn call_next(gw: &Gateway) -> Value {
    let (status, answer) = post(&gw.url("/api/v1/queues/general/call-next"), &json!({}));
    assert_eq!(status, 200, "{answer}");
    answer
}

fn notifications(gw: &Gateway) -> Vec<Value> {
    gw.get_json("/api/v1/notifications")
        .as_array()
        .cloned()
        .expect("a list")
}

/// The notification of `ticket`, once it has one in `status`.
fn wait_status(gw: &Gateway, ticket: &str, status: &str) -> Value {
    wait_for(
        &format!("{ticket}'s notification to become {status}"),
        Duration::from_secs(30),
        || {
            notifications(gw)
                .into_iter()
                .find(|n| n["ticket"] == ticket && n["status"] == status)
        },
    )
}

fn message_ids(maildir: &Path) -> Vec<String> {
    messages_in(maildir)
        .iter()
        .filter_map(|m| {
            m.lines()
                .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
                .map(|l| l[11..].trim().to_string())
        })
        .collect()
}

#[test]
fn you_are_next_reaches_the_patient_by_email_once_and_refusals_say_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let smtp = SmtpServer::start(dir.path(), free_port(), Security::Plain, None);
    let mut gw = Gateway::new(
        dir.path(),
        &email_config(&format!(
            "{{ host = \"127.0.0.1\", port = {}, security = \"none\", from = \"clinic@example.org\" }}",
            smtp.port
        )),
    );
    gw.start();
    check_in(&gw, json!({ "request_id": "k-1" }));
    check_in(
        &gw,
        json!({ "request_id": "k-2", "contact": { "email": "pat@example.org", "language": "de" } }),
    );
    check_in(
        &gw,
        json!({ "request_id": "k-3", "contact": { "email": "not an address" } }),
    );
    check_in(
        &gw,
        json!({ "request_id": "k-4", "contact": { "email": "out@example.org", "opted_out": true } }),
    );
    // G-001 is called: G-002 is next, and told so in German.
    assert_eq!(call_next(&gw)["entry"]["ticket"], "G-001");
    let told = wait_status(&gw, "G-002", "delivered");
    assert_eq!(told["kind"], "you_are_next");
    assert_eq!(told["attempts"][0]["provider"], "mail");
    assert_eq!(told["attempts"][0]["channel"], "email");
    let mail = wait_for("the email", Duration::from_secs(10), || {
        smtp.messages().pop()
    });
    assert!(mail.contains("Nummer G-002"), "{mail}");
    assert!(mail.contains("To: pat@example.org"), "{mail}");
    // G-002 is called: G-003's address is malformed, which is recorded and stops nothing.
    call_next(&gw);
    let refused = wait_status(&gw, "G-003", "refused");
    assert_eq!(refused["reason"], "malformed email address");
    call_next(&gw);
    let opted_out = wait_status(&gw, "G-004", "refused");
    assert_eq!(opted_out["reason"], "the patient opted out of messages");
    // Calling again leaves nobody waiting; the API never shows an address.
    let listed = serde_json::to_string(&notifications(&gw)).expect("json");
    assert!(!listed.contains("example.org"), "{listed}");
    assert_eq!(smtp.messages().len(), 1);
    // The cloud hears the receipt by ids only.
    let events = common::journal_events(&gw, "notification.delivered");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["status"], "delivered");
    assert!(!events[0].to_string().contains("example.org"));
}

#[test]
fn pending_emails_survive_a_gateway_restart_and_arrive_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut gw = Gateway::new(
        dir.path(),
        &email_config(&format!(
            "{{ host = \"127.0.0.1\", port = {port}, security = \"none\", from = \"clinic@example.org\" }}\ntimeout_ms = 2000"
        )),
    );
    gw.start();
    for n in 1..=4 {
        check_in(
            &gw,
            json!({ "request_id": format!("k-{n}"), "contact": { "email": format!("p{n}@example.org") } }),
        );
    }
    // Three calls make G-002, G-003 and G-004 next in turn; no SMTP server listens yet.
    for _ in 0..3 {
        call_next(&gw);
    }
    wait_for("three failed attempts", Duration::from_secs(30), || {
        let n = notifications(&gw);
        (n.len() == 3
            && n.iter().all(|n| {
                n["status"] == "queued" && n["attempts"].as_array().is_some_and(|a| !a.is_empty())
            }))
        .then_some(())
    });
    gw.kill9();
    let smtp = SmtpServer::start(dir.path(), port, Security::Plain, None);
    gw.start();
    for ticket in ["G-002", "G-003", "G-004"] {
        wait_status(&gw, ticket, "delivered");
    }
    // Nothing of messaging is left in the outbox: no resend can follow.
    wait_for("an empty messaging outbox", Duration::from_secs(10), || {
        let backlog = gw.get_json("/api/v1/backlog");
        // A destination without rows is left out of the list.
        let m = &backlog["destinations"]["messaging"];
        let count = |state: &str| m[state].as_u64().unwrap_or(0);
        (count("pending") == 0 && count("in_flight") == 0).then_some(())
    });
    let mut ids = message_ids(&smtp.maildir);
    assert_eq!(ids.len(), 3, "{ids:?}");
    ids.dedup();
    assert_eq!(ids.len(), 3, "one message per notification");
}

/// Sends through an SMTP server that wants TLS (`security`) and AUTH, with the CA and the
/// password in their own files.
fn email_over_tls_with_auth(implicit: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::generate(dir.path());
    let (cert, key) = (certs.path("server.crt"), certs.path("server.key"));
    let security = if implicit {
        Security::Implicit(&cert, &key)
    } else {
        Security::Starttls(&cert, &key)
    };
    let smtp = SmtpServer::start(dir.path(), free_port(), security, Some("clinic:s3cret"));
    std::fs::write(dir.path().join("smtp.password"), "s3cret\n").expect("password");
    let mut gw = Gateway::new(
        dir.path(),
        &email_config(&format!(
            "{{ host = \"localhost\", port = {}, security = \"{}\", ca_file = \"{}\", username = \"clinic\", password_file = \"smtp.password\", from = \"clinic@example.org\" }}",
            smtp.port,
            if implicit { "tls" } else { "starttls" },
            certs.path("ca.crt").display()
        )),
    );
    gw.start();
    check_in(&gw, json!({ "request_id": "k-1" }));
    check_in(
        &gw,
        json!({ "request_id": "k-2", "contact": { "email": "pat@example.org" } }),
    );
    call_next(&gw);
    wait_status(&gw, "G-002", "delivered");
    let mail = smtp.messages();
    assert_eq!(mail.len(), 1);
    assert!(
        mail[0].contains("Ticket G-002 (general) at test-clinic"),
        "{}",
        mail[0]
    );
    let auth: Vec<String> = smtp
        .lines
        .try_iter()
        .filter(|l| l.starts_with("auth "))
        .collect();
    assert!(
        auth.iter().all(|l| l.ends_with(" ok")) && !auth.is_empty(),
        "{auth:?}"
    );
}

#[test]
fn email_goes_over_starttls_with_auth() {
    email_over_tls_with_auth(false);
}

#[test]
fn email_goes_over_implicit_tls_with_auth() {
    email_over_tls_with_auth(true);
}

/// A gateway whose SMS goes through Kannel's `sendsms` (provider `kannel`), receipts coming
/// back to its own endpoint.
fn kannel_gateway(dir: &Path, kannel: &Kannel) -> Gateway {
    std::fs::write(
        dir.join("sendsms.password"),
        format!("{SENDSMS_PASSWORD}\n"),
    )
    .expect("pw");
    let mut gw = Gateway::new(dir, "");
    let extra = format!(
        "[destinations.messaging]\nbackoff_initial_ms = 200\nbackoff_max_ms = 500\nmax_attempts = 1000\n\n\
[messaging]\nchannels = [\"sms\"]\nreceipt_base_url = \"http://127.0.0.1:{web}\"\n\n\
[[messaging.providers]]\nname = \"kannel\"\nprice_per_segment = 0.05\n\
[messaging.providers.http]\nurl = \"http://127.0.0.1:{port}/cgi-bin/sendsms\"\npassword_file = \"sendsms.password\"\n\
params = {{ username = \"{SENDSMS_USER}\", password = \"{{password}}\", to = \"{{to}}\", text = \"{{text}}\", charset = \"UTF-8\", coding = \"2\", dlr-mask = \"19\", dlr-url = \"{{dlr_url}}\" }}\n\
{TEMPLATES}",
        web = gw.web,
        port = kannel.sendsms_port,
    );
    std::fs::write(&gw.config, config_text(dir, gw.web, &extra)).expect("config");
    gw.start();
    gw
}

#[test]
fn sms_through_kannel_is_delivered_or_expired_as_the_smscs_receipt_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut smsc = Smsc::start(free_port(), "kannel:kannelpw", 0);
    let kannel = Kannel::start(dir.path(), &smsc);
    let gw = kannel_gateway(dir.path(), &kannel);
    check_in(&gw, json!({ "request_id": "k-1" }));
    for n in 2..=3 {
        check_in(
            &gw,
            json!({ "request_id": format!("k-{n}"), "contact": { "phone": format!("+41 79 123 45 6{n}"), "language": "de" } }),
        );
    }
    call_next(&gw);
    let told = wait_status(&gw, "G-002", "delivered");
    assert_eq!(told["attempts"][0]["provider"], "kannel");
    assert_eq!(told["attempts"][0]["status"], "delivered");
    assert_eq!(told["attempts"][0]["segments"], 1);
    let submitted = smsc.submitted();
    assert_eq!(submitted.len(), 1, "{submitted:?}");
    assert!(submitted[0].1.ends_with("41791234562"), "{submitted:?}");
    // The SMSC now lets messages expire: the receipt says so, and so does the notification.
    smsc.command("receipts expired");
    call_next(&gw);
    let expired = wait_status(&gw, "G-003", "expired");
    assert_eq!(expired["reason"], "receipt: expired");
    let failed = common::journal_events(&gw, "notification.failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["status"], "expired");
    assert_eq!(smsc.submitted().len(), 2);
}

/// `[[messaging.providers]]` tables of SMPP providers, each `(name, SMSC port)` in priority
/// order, binding as `gateway:smpp-pw`.
fn smpp_gateway(dir: &Path, smscs: &[(&str, u16)]) -> Gateway {
    std::fs::write(dir.join("smpp.password"), "smpp-pw\n").expect("pw");
    let mut providers = String::new();
    for (i, (name, port)) in smscs.iter().enumerate() {
        providers.push_str(&format!(
            "[[messaging.providers]]\nname = \"{name}\"\npriority = {i}\ntimeout_ms = 3000\nprice_per_segment = 0.0{}\n\
smpp = {{ host = \"127.0.0.1\", port = {port}, system_id = \"gateway\", password_file = \"smpp.password\", source = \"Clinic\", window = 4, enquire_link_s = 5 }}\n\n",
            i + 4
        ));
    }
    let extra = format!(
        "[destinations.messaging]\nbackoff_initial_ms = 200\nbackoff_max_ms = 500\nmax_attempts = 1000\n\n\
[messaging]\nchannels = [\"sms\"]\n\n{providers}{TEMPLATES}"
    );
    let mut gw = Gateway::new(dir, &extra);
    gw.start();
    gw
}

/// Checks in `n` patients with phone numbers after one without (tickets G-002 on are told).
fn check_in_phones(gw: &Gateway, n: usize) {
    check_in(gw, json!({ "request_id": "k-1" }));
    for i in 2..=n + 1 {
        check_in(
            gw,
            json!({ "request_id": format!("k-{i}"), "contact": { "phone": format!("+41 79 555 00 {i:02}") } }),
        );
    }
}

#[test]
fn sms_over_smpp_is_submitted_once_through_throttling_and_its_receipt_delivers_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut smsc = Smsc::start(free_port(), "gateway:smpp-pw", 0);
    let gw = smpp_gateway(dir.path(), &[("smsc-a", smsc.port)]);
    check_in_phones(&gw, 2);
    call_next(&gw);
    let told = wait_status(&gw, "G-002", "delivered");
    assert_eq!(told["attempts"][0]["provider"], "smsc-a");
    let submitted = smsc.submitted();
    assert_eq!(submitted.len(), 1, "{submitted:?}");
    assert_eq!(submitted[0].1, "41795550002");
    assert_eq!(submitted[0].2, "Ticket G-002: you are next.");
    assert!(
        smsc.lines()
            .contains(&"bind transceiver gateway".to_string())
    );
    // The SMSC throttles the next two submits: the message waits and goes once.
    smsc.command("throttle 2");
    call_next(&gw);
    let told = wait_status(&gw, "G-003", "delivered");
    let errors: Vec<&Value> = told["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .filter(|a| a["status"] == "error")
        .collect();
    assert_eq!(errors.len(), 2, "{told}");
    assert!(
        errors[0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("throttled")
    );
    let to_g3 = smsc
        .submitted()
        .iter()
        .filter(|s| s.1 == "41795550003")
        .count();
    assert_eq!(to_g3, 1);
    assert_eq!(
        smsc.lines()
            .iter()
            .filter(|l| l.starts_with("throttled "))
            .count(),
        2
    );
}

#[test]
fn notifications_fail_over_to_the_next_smsc_when_the_primary_stops_and_none_is_sent_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut primary = Smsc::start(free_port(), "gateway:smpp-pw", 0);
    let secondary = Smsc::start(free_port(), "gateway:smpp-pw", 0);
    let mut gw = smpp_gateway(
        dir.path(),
        &[("primary", primary.port), ("secondary", secondary.port)],
    );
    check_in_phones(&gw, 6);
    call_next(&gw);
    wait_status(&gw, "G-002", "delivered");
    assert_eq!(primary.submitted().len(), 1);
    // The primary goes away mid-run: the next ones go through the secondary.
    primary.stop();
    call_next(&gw);
    call_next(&gw);
    for ticket in ["G-003", "G-004"] {
        let told = wait_status(&gw, ticket, "delivered");
        let taken: Vec<&Value> = told["attempts"]
            .as_array()
            .expect("attempts")
            .iter()
            .filter(|a| a["status"] == "delivered")
            .collect();
        assert_eq!(taken.len(), 1, "{told}");
        assert_eq!(taken[0]["provider"], "secondary", "{told}");
    }
    // A restart with notifications waiting loses none and sends none twice.
    gw.kill9();
    gw.start();
    call_next(&gw);
    call_next(&gw);
    for ticket in ["G-005", "G-006"] {
        wait_status(&gw, ticket, "delivered");
    }
    let mut numbers: Vec<String> = primary
        .submitted()
        .into_iter()
        .chain(secondary.submitted())
        .map(|s| s.1)
        .collect();
    numbers.sort();
    let all = numbers.len();
    numbers.dedup();
    assert_eq!(all, numbers.len(), "a number got two messages: {numbers:?}");
    assert_eq!(all, 5, "{numbers:?}");
}
