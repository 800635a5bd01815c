//! Patient messaging against real peers on loopback: email through aiosmtpd (plain, STARTTLS
//! with AUTH, implicit TLS with AUTH), exactly once across a gateway restart with messages
//! pending; refusals recorded on the notification; SMS through Kannel's `sendsms` in front of
//! the scripted SMSC (npm `smpp`), its delivery receipts coming back to the gateway.

mod common;

use common::fhir_server::{FhirServer, MRN};
use common::hl7_peer::mllp_send;
use common::sipp::Sipp;
use common::smsc::{Kannel, SENDSMS_PASSWORD, SENDSMS_USER, Smsc};
use common::smtp::{Security, SmtpServer, messages_in};
use common::voice::{ACCOUNT as VOICE_ACCOUNT, TOKEN as VOICE_TOKEN, VoiceApi};
use common::{Certs, Gateway, config_text, free_port, post, wait_for};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const TEMPLATES: &str = r#"
[messaging.templates.you_are_next.en]
sms = "Ticket {ticket}: you are next."
subject = "Ticket {ticket}: you are next"
email = "Ticket {ticket} ({queue}) at {facility}: you are next. Please stay near the board."
voice = "This is {facility}. Ticket {ticket}: you are next."
[messaging.templates.appointment_cancelled.en]
sms = "Ticket {ticket}: your appointment today is cancelled."
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
    wait_status_within(gw, ticket, status, Duration::from_secs(30))
}

/// The notification of `ticket`, once it has one in `status`, failing after `limit`.
fn wait_status_within(gw: &Gateway, ticket: &str, status: &str, limit: Duration) -> Value {
    wait_for(
        &format!("{ticket}'s notification to become {status}"),
        limit,
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
params = {{ username = \"{SENDSMS_USER}\", password = \"{{password}}\", to = \"{{to}}\", text = \"{{text}}\", charset = \"UTF-8\", coding = \"2\", dlr-mask = \"19\", dlr-url = \"{{dlr_url}}\", validity = \"{{validity_min}}\" }}\nvalidity_s = 60\n\
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
    // Kannel turned the gateway's one minute of validity into each submit's validity_period
    // (an absolute time, to the second).
    let validity = validities(&smsc);
    assert_eq!(validity.len(), 2, "{validity:?}");
    for (id, seconds) in &validity {
        let seconds: i64 = seconds.parse().expect("seconds");
        assert!((55..=60).contains(&seconds), "{id}: {seconds}");
    }
}

/// A `[[messaging.providers]]` table of an SMPP provider binding as `gateway:smpp-pw`, with
/// `extra` lines (a price, a receipt watch).
fn smpp_provider(name: &str, priority: usize, port: u16, extra: &str) -> String {
    smpp_provider_with(name, priority, port, extra, ", window = 4")
}

/// [`smpp_provider`] with these keys ending its `smpp` table (`, window = 2`).
fn smpp_provider_with(name: &str, priority: usize, port: u16, extra: &str, smpp: &str) -> String {
    format!(
        "[[messaging.providers]]\nname = \"{name}\"\npriority = {priority}\ntimeout_ms = 3000\n{extra}\n\
smpp = {{ host = \"127.0.0.1\", port = {port}, system_id = \"gateway\", password_file = \"smpp.password\", source = \"Clinic\", enquire_link_s = 5{smpp} }}\n\n"
    )
}

/// A started gateway whose `[messaging]` section is `head` (channels, routing) and then
/// `providers`, with fast outbox retries; `head` may use `{web}` for the gateway's own port.
fn messaging_gateway(dir: &Path, head: &str, providers: &str) -> Gateway {
    messaging_gateway_after(dir, "", head, providers)
}

/// [`messaging_gateway`] with the sections `before` (a connector) ahead of messaging's.
fn messaging_gateway_after(dir: &Path, before: &str, head: &str, providers: &str) -> Gateway {
    std::fs::write(dir.join("smpp.password"), "smpp-pw\n").expect("pw");
    let mut gw = Gateway::new(dir, "");
    let head = head.replace("{web}", &gw.web.to_string());
    let extra = format!(
        "{before}\n[destinations.messaging]\nbackoff_initial_ms = 200\nbackoff_max_ms = 500\nmax_attempts = 1000\n\n\
[messaging]\n{head}\n\n{providers}{TEMPLATES}"
    );
    std::fs::write(&gw.config, config_text(dir, gw.web, &extra)).expect("config");
    gw.start();
    gw
}

/// SMPP providers, each `(name, SMSC port)` in priority order.
fn smpp_gateway(dir: &Path, smscs: &[(&str, u16)]) -> Gateway {
    let providers: String = smscs
        .iter()
        .enumerate()
        .map(|(i, (name, port))| {
            smpp_provider(name, i, *port, &format!("price_per_segment = 0.0{}", i + 4))
        })
        .collect();
    messaging_gateway(dir, "channels = [\"sms\"]", &providers)
}

/// The providers of a notification's attempts with their status, in order.
fn attempts(n: &Value) -> Vec<(String, String)> {
    n["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| {
            (
                a["provider"].as_str().unwrap_or_default().to_string(),
                a["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
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

#[test]
fn a_provider_whose_receipts_stop_is_opened_and_later_messages_go_to_the_next() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut primary = Smsc::start(free_port(), "gateway:smpp-pw", 0);
    let secondary = Smsc::start(free_port(), "gateway:smpp-pw", 0);
    primary.command("receipts none");
    let providers = smpp_provider(
        "primary",
        0,
        primary.port,
        "receipt_watch = { messages = 2, seconds = 1 }\nbreaker_open_s = 600",
    ) + &smpp_provider("secondary", 1, secondary.port, "");
    let gw = messaging_gateway(dir.path(), "channels = [\"sms\"]", &providers);
    check_in_phones(&gw, 4);
    // The primary takes two messages and sends no receipt for either.
    for ticket in ["G-002", "G-003"] {
        call_next(&gw);
        let sent = wait_status(&gw, ticket, "sent");
        assert_eq!(attempts(&sent), pairs(&[("primary", "sent")]));
    }
    wait_for(
        "the primary's breaker to open",
        Duration::from_secs(30),
        || {
            gw.log_text()
                .contains("circuit opened: receipts stopped arriving")
                .then_some(())
        },
    );
    for ticket in ["G-004", "G-005"] {
        call_next(&gw);
        let told = wait_status(&gw, ticket, "delivered");
        assert_eq!(attempts(&told), pairs(&[("secondary", "delivered")]));
    }
    assert_eq!(primary.submitted().len(), 2);
    assert_eq!(secondary.submitted().len(), 2);
}

/// The `validity <id> <seconds>` lines of an SMSC: what each submit's validity_period said.
fn validities(smsc: &Smsc) -> Vec<(String, String)> {
    smsc.lines()
        .iter()
        .filter_map(|l| {
            let (id, seconds) = l.strip_prefix("validity ")?.split_once(' ')?;
            Some((id.to_string(), seconds.to_string()))
        })
        .collect()
}

#[test]
fn messages_a_silent_smsc_took_are_sent_once_through_the_next_when_their_validity_ends_also_across_a_kill9()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut primary = Smsc::start(free_port(), "gateway:smpp-pw", 0);
    let secondary = Smsc::start(free_port(), "gateway:smpp-pw", 0);
    // The primary takes messages and keeps their receipts back (until `release`).
    primary.command("receipts held");
    let providers = smpp_provider_with(
        "primary",
        0,
        primary.port,
        "receipt_watch = { messages = 2, seconds = 1 }\nbreaker_open_s = 600",
        ", window = 4, validity_s = 5",
    ) + &smpp_provider("secondary", 1, secondary.port, "");
    let mut gw = messaging_gateway(dir.path(), "channels = [\"sms\"]", &providers);
    check_in_phones(&gw, 3);
    for ticket in ["G-002", "G-003"] {
        call_next(&gw);
        let sent = wait_status(&gw, ticket, "sent");
        assert_eq!(attempts(&sent), pairs(&[("primary", "sent")]));
    }
    // No receipt within their validity: the secondary delivers each, within the limit.
    for ticket in ["G-002", "G-003"] {
        let told = wait_status_within(&gw, ticket, "delivered", Duration::from_secs(120));
        assert_eq!(
            attempts(&told),
            pairs(&[("primary", "lapsed"), ("secondary", "delivered")])
        );
        let took = told["updated_at"].as_i64().expect("updated_at")
            - told["created_at"].as_i64().expect("created_at");
        assert!(took < 120_000, "failover took {took} ms");
    }
    // The primary's late receipts are recorded on its attempts and send nothing again.
    primary.command("release");
    for ticket in ["G-002", "G-003"] {
        let told = wait_for(
            &format!("the late receipt of {ticket}"),
            Duration::from_secs(30),
            || {
                notifications(&gw).into_iter().find(|n| {
                    n["ticket"] == ticket
                        && attempts(n)
                            == pairs(&[("primary", "delivered"), ("secondary", "delivered")])
                })
            },
        );
        assert_eq!(told["status"], "delivered");
    }
    assert_eq!(
        common::journal_events(&gw, "notification.delivered").len(),
        2
    );
    // A message waiting for its receipt outlives a kill -9: its deadline is in the journal.
    // (A restart closes the primary's breaker, so it takes the next message again.)
    primary.command("receipts none");
    gw.kill9();
    gw.start();
    call_next(&gw);
    wait_status(&gw, "G-004", "sent");
    gw.kill9();
    gw.start();
    let told = wait_status_within(&gw, "G-004", "delivered", Duration::from_secs(120));
    assert_eq!(
        attempts(&told),
        pairs(&[("primary", "lapsed"), ("secondary", "delivered")])
    );
    let to = |smsc: &Smsc, number: &str| smsc.submitted().iter().filter(|s| s.1 == number).count();
    for number in ["41795550002", "41795550003", "41795550004"] {
        assert_eq!(to(&primary, number), 1, "{number}");
        assert_eq!(to(&secondary, number), 1, "{number}");
    }
    // Each submit told the primary how long it may try: 5 s (a second may pass in between).
    let validity = validities(&primary);
    assert_eq!(validity.len(), 3, "{validity:?}");
    for (id, seconds) in &validity {
        assert!(["4", "5"].contains(&seconds.as_str()), "{id}: {seconds}");
    }
}

#[test]
fn failed_and_expired_receipts_fail_over_to_the_next_provider_then_channel_within_two_minutes_and_across_a_restart()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut primary = Smsc::start(free_port(), "gateway:smpp-pw", 0);
    let mut secondary = Smsc::start(free_port(), "gateway:smpp-pw", 0);
    let smtp = SmtpServer::start(dir.path(), free_port(), Security::Plain, None);
    primary.command("receipts failed");
    let providers = smpp_provider("primary", 0, primary.port, "")
        + &smpp_provider("secondary", 1, secondary.port, "")
        + &format!(
            "[[messaging.providers]]\nname = \"mail\"\nsmtp = {{ host = \"127.0.0.1\", port = {}, security = \"none\", from = \"clinic@example.org\" }}\n\n",
            smtp.port
        );
    let mut gw = messaging_gateway(dir.path(), "channels = [\"sms\", \"email\"]", &providers);
    check_in(&gw, json!({ "request_id": "k-1" }));
    for n in 2..=3 {
        check_in(
            &gw,
            json!({ "request_id": format!("k-{n}"), "contact": { "phone": format!("+41 79 555 00 0{n}"), "email": format!("p{n}@example.org") } }),
        );
    }
    check_in(
        &gw,
        json!({ "request_id": "k-4", "contact": { "phone": "+41 79 555 00 04" } }),
    );
    // The primary's receipt says failed: the secondary delivers it.
    call_next(&gw);
    let told = wait_status_within(&gw, "G-002", "delivered", Duration::from_secs(120));
    assert_eq!(
        attempts(&told),
        pairs(&[("primary", "failed"), ("secondary", "delivered")])
    );
    // Both SMSCs fail it now: the next channel of the patient's preference delivers it.
    secondary.command("receipts expired");
    call_next(&gw);
    let told = wait_status_within(&gw, "G-003", "delivered", Duration::from_secs(120));
    assert_eq!(
        attempts(&told),
        pairs(&[
            ("primary", "failed"),
            ("secondary", "expired"),
            ("mail", "delivered")
        ])
    );
    let took = told["updated_at"].as_i64().expect("updated_at")
        - told["created_at"].as_i64().expect("created_at");
    assert!(took < 120_000, "failover took {took} ms");
    // Each provider was asked once for each notification.
    let to = |smsc: &Smsc, number: &str| smsc.submitted().iter().filter(|s| s.1 == number).count();
    for number in ["41795550002", "41795550003"] {
        assert_eq!(to(&primary, number), 1, "{number}");
        assert_eq!(to(&secondary, number), 1, "{number}");
    }
    let mail = smtp.messages();
    assert_eq!(mail.len(), 1);
    assert!(mail[0].contains("To: p3@example.org"), "{}", mail[0]);
    // The cloud hears one final outcome per notification.
    assert_eq!(common::journal_events(&gw, "notification.failed").len(), 0);
    assert_eq!(
        common::journal_events(&gw, "notification.delivered").len(),
        2
    );
    // A failover that cannot go on yet (the secondary is down) outlives a gateway restart.
    secondary.stop();
    call_next(&gw);
    wait_for(
        "G-004 to wait for the secondary",
        Duration::from_secs(30),
        || {
            notifications(&gw).into_iter().find(|n| {
                n["ticket"] == "G-004"
                    && n["status"] == "queued"
                    && attempts(n).contains(&("secondary".to_string(), "error".to_string()))
            })
        },
    );
    gw.kill9();
    let secondary = Smsc::start(secondary.port, "gateway:smpp-pw", 0);
    gw.start();
    let told = wait_status_within(&gw, "G-004", "delivered", Duration::from_secs(120));
    let taken: Vec<(String, String)> = attempts(&told)
        .into_iter()
        .filter(|(_, status)| status != "error")
        .collect();
    assert_eq!(
        taken,
        pairs(&[("primary", "failed"), ("secondary", "delivered")])
    );
    assert_eq!(to(&primary, "41795550004"), 1);
    assert_eq!(to(&secondary, "41795550004"), 1);
}

#[test]
fn the_cheapest_provider_above_the_delivery_rate_floor_goes_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dear = Smsc::start(free_port(), "gateway:smpp-pw", 0);
    let mut cheap = Smsc::start(free_port(), "gateway:smpp-pw", 0);
    let providers = smpp_provider("dear", 0, dear.port, "price_per_segment = 0.05")
        + &smpp_provider("cheap", 1, cheap.port, "price_per_segment = 0.01");
    let gw = messaging_gateway(
        dir.path(),
        "channels = [\"sms\"]\nrouting = { prefer = \"cheapest\", delivery_rate_floor = 0.9 }",
        &providers,
    );
    check_in_phones(&gw, 5);
    // Without delivery figures the priority decides.
    call_next(&gw);
    let told = wait_status(&gw, "G-002", "delivered");
    assert_eq!(attempts(&told), pairs(&[("dear", "delivered")]));
    // The dear one is down: the cheap one delivers, and so has a delivery rate.
    dear.stop();
    call_next(&gw);
    let told = wait_status(&gw, "G-003", "delivered");
    assert_eq!(
        attempts(&told),
        pairs(&[("dear", "error"), ("cheap", "delivered")])
    );
    // At 100 % it is above the floor and cheaper: it goes first.
    call_next(&gw);
    let told = wait_status(&gw, "G-004", "delivered");
    assert_eq!(attempts(&told), pairs(&[("cheap", "delivered")]));
    // The dear one is back; the cheap one's receipts now fail.
    dear = Smsc::start(dear.port, "gateway:smpp-pw", 0);
    cheap.command("receipts failed");
    wait_for(
        "the gateway to bind to the dear SMSC again",
        Duration::from_secs(30),
        || {
            dear.lines()
                .contains(&"bind transceiver gateway".to_string())
                .then_some(())
        },
    );
    call_next(&gw);
    let told = wait_status(&gw, "G-005", "delivered");
    assert_eq!(
        attempts(&told),
        pairs(&[("cheap", "failed"), ("dear", "delivered")])
    );
    // Two of three delivered is below the floor: the dear one goes first again.
    call_next(&gw);
    let told = wait_status(&gw, "G-006", "delivered");
    assert_eq!(attempts(&told), pairs(&[("dear", "delivered")]));
    let costs = gw.get_json("/api/v1/messaging/costs");
    let cheap_rate = costs["total"]
        .as_array()
        .expect("total")
        .iter()
        .find(|f| f["provider"] == "cheap")
        .map(|f| f["delivery_rate"].clone());
    let rate = cheap_rate.and_then(|r| r.as_f64()).expect("a rate");
    assert!((rate - 2.0 / 3.0).abs() < 1e-9, "{rate}");
}

#[test]
fn patients_who_prefer_voice_are_called_and_a_busy_line_falls_back_to_sms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut voice = VoiceApi::start(free_port());
    let smsc = Smsc::start(free_port(), "gateway:smpp-pw", 0);
    std::fs::write(dir.path().join("voice.token"), format!("{VOICE_TOKEN}\n")).expect("token");
    let providers = format!(
        "[[messaging.providers]]\nname = \"calls\"\nprice_per_minute = 0.12\n\
[messaging.providers.http]\nchannel = \"voice\"\nurl = \"{url}\"\nmethod = \"post_form\"\n\
username = \"{VOICE_ACCOUNT}\"\npassword_file = \"voice.token\"\nid_pointer = \"/sid\"\n\
params = {{ To = \"{{to}}\", From = \"+41440000000\", Text = \"{{text}}\", StatusCallback = \"{{dlr_url}}\" }}\n\n",
        url = voice.calls_url()
    ) + &smpp_provider("smsc", 0, smsc.port, "");
    let gw = messaging_gateway(
        dir.path(),
        "channels = [\"sms\"]\nreceipt_base_url = \"http://127.0.0.1:{web}\"",
        &providers,
    );
    check_in(&gw, json!({ "request_id": "k-1" }));
    for n in 2..=3 {
        check_in(
            &gw,
            json!({ "request_id": format!("k-{n}"), "contact": { "phone": format!("+41 79 555 00 0{n}"), "channels": ["voice", "sms"] } }),
        );
    }
    // The call is answered: its status callback is the receipt.
    call_next(&gw);
    let told = wait_status(&gw, "G-002", "delivered");
    assert_eq!(attempts(&told), pairs(&[("calls", "delivered")]));
    assert_eq!(told["attempts"][0]["channel"], "voice");
    // 75 s: two started minutes.
    assert_eq!(told["attempts"][0]["cost"], 0.24);
    let calls = voice.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].1, "+41795550002");
    assert_eq!(
        calls[0].2,
        "This is test-clinic. Ticket G-002: you are next."
    );
    // The line is busy: the patient's next channel, SMS, tells them.
    voice.command("status busy");
    call_next(&gw);
    let told = wait_status(&gw, "G-003", "delivered");
    assert_eq!(
        attempts(&told),
        pairs(&[("calls", "failed"), ("smsc", "delivered")])
    );
    assert_eq!(told["attempts"][0]["cost"], 0.0, "no minute of a busy line");
    assert_eq!(voice.calls().len(), 2);
    let texts: Vec<(String, String)> = smsc.submitted().into_iter().map(|s| (s.1, s.2)).collect();
    assert_eq!(
        texts,
        [(
            "41795550003".to_string(),
            "Ticket G-003: you are next.".to_string()
        )]
    );
}

/// A gateway taking appointment cancellations from the EHR over MLLP, sending SMS through
/// `smsc` with `provider_extra` and `head` under `[messaging]`; answers it and its MLLP port.
fn cancelling_gateway(dir: &Path, smsc: &Smsc, head: &str, provider_extra: &str) -> (Gateway, u16) {
    let port = free_port();
    let before = format!(
        "[connectors.hl7v2]\nlisten = \"127.0.0.1:{port}\"\n\n[connectors.hl7v2.appointments]\nqueue = \"general\"\n"
    );
    let providers = smpp_provider("smsc", 0, smsc.port, provider_extra);
    let gw = messaging_gateway_after(dir, &before, head, &providers);
    wait_for("the MLLP listener", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    (gw, port)
}

/// Checks in G-001 without contact details, G-002 with a phone, and then `booked` patients
/// with phones and appointments `F-3`, `F-4`, ... (tickets G-003 on).
fn check_in_booked(gw: &Gateway, booked: usize) {
    check_in(gw, json!({ "request_id": "k-1" }));
    for n in 2..=booked + 2 {
        let mut body = json!({ "request_id": format!("k-{n}"), "contact": { "phone": format!("+41 79 555 00 {n:02}") } });
        if n > 2 {
            body["appointment_ref"] = json!(format!("F-{n}"));
        }
        check_in(gw, body);
    }
}

/// The EHR cancels appointments `F-<n>` for each `n` in `numbers`, in one MLLP session.
fn cancel_appointments(dir: &Path, port: u16, numbers: std::ops::RangeInclusive<usize>) {
    let text: String = numbers
        .clone()
        .map(|n| {
            format!(
                "MSH|^~\\&|SCHED|HOSP|EDGE|CLINIC|20261202090000||SIU^S15^SIU_S12|CANCEL-{n}|P|2.5\n\
SCH|P-{n}|F-{n}|||||||15|min|||||||||||||||Cancelled\nPID|1||MRN-{n}^^^HOSP^MR||DOE^JOHN\n"
            )
        })
        .collect();
    let acks = mllp_send(dir, port, &text);
    assert_eq!(acks.len(), numbers.count(), "{acks:?}");
    assert!(acks.iter().all(|a| a.contains("MSA|AA|")), "{acks:?}");
}

#[test]
fn under_a_rate_limit_you_are_next_overtakes_a_backlog_of_cancellations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut smsc = Smsc::start(free_port(), "gateway:smpp-pw", 0);
    let (gw, port) = cancelling_gateway(
        dir.path(),
        &smsc,
        "channels = [\"sms\"]",
        "max_per_second = 2",
    );
    check_in_booked(&gw, 16);
    // Sixteen cancellations make a backlog the provider's limit drains in eight seconds.
    cancel_appointments(dir.path(), port, 3..=18);
    wait_for(
        "the backlog to start draining",
        Duration::from_secs(30),
        || (!smsc.submitted().is_empty()).then_some(()),
    );
    call_next(&gw);
    let told = wait_status(&gw, "G-002", "delivered");
    assert_eq!(told["kind"], "you_are_next");
    for n in 3..=18 {
        let cancelled = wait_status(&gw, &format!("G-{n:03}"), "delivered");
        assert_eq!(cancelled["kind"], "appointment_cancelled");
    }
    let order: Vec<String> = smsc.submitted().into_iter().map(|s| s.1).collect();
    assert_eq!(order.len(), 17, "{order:?}");
    let urgent_at = order
        .iter()
        .position(|to| to == "41795550002")
        .expect("you are next");
    // It waits at most for the bulk notices already taken in hand, not for the backlog.
    assert!(
        urgent_at < 12,
        "\"you are next\" waited behind {urgent_at} cancellations: {order:?}"
    );
    // Two a second with one second's worth at once: a submit_sm and the second after it are
    // at least 500 ms apart (less the jitter between the gateway's clock and the SMSC's).
    smsc.command("span 2");
    let span = smsc
        .lines()
        .iter()
        .find_map(|l| l.strip_prefix("span ")?.parse::<i64>().ok())
        .expect("a span");
    assert!(span >= 450, "three submit_sm within {span} ms");
}

#[test]
fn the_deliverer_keeps_up_to_the_window_of_submits_outstanding_and_never_more() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Each submit_sm waits 300 ms for its answer, so several are outstanding at once.
    let mut smsc = Smsc::start(free_port(), "gateway:smpp-pw", 300);
    let port = free_port();
    let before = format!(
        "[connectors.hl7v2]\nlisten = \"127.0.0.1:{port}\"\n\n[connectors.hl7v2.appointments]\nqueue = \"general\"\n"
    );
    let providers = smpp_provider_with("smsc", 0, smsc.port, "", ", window = 2");
    let gw = messaging_gateway_after(dir.path(), &before, "channels = [\"sms\"]", &providers);
    wait_for("the MLLP listener", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    check_in_booked(&gw, 8);
    cancel_appointments(dir.path(), port, 3..=10);
    for n in 3..=10 {
        wait_status(&gw, &format!("G-{n:03}"), "delivered");
    }
    assert_eq!(smsc.submitted().len(), 8);
    smsc.command("window");
    let widest = smsc
        .lines()
        .iter()
        .find_map(|l| l.strip_prefix("window ")?.parse::<u32>().ok())
        .expect("the widest window");
    assert_eq!(widest, 2, "the most submit_sm outstanding at once");
}

#[test]
fn quiet_hours_hold_cancellations_but_not_you_are_next() {
    let dir = tempfile::tempdir().expect("tempdir");
    let smsc = Smsc::start(free_port(), "gateway:smpp-pw", 0);
    // Quiet from two hours ago to two hours ahead, in the clinic's (UTC) day.
    let minute = |offset: i64| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        let m = (now / 60 + offset).rem_euclid(24 * 60);
        format!("{:02}:{:02}", m / 60, m % 60)
    };
    let head = format!(
        "channels = [\"sms\"]\nquiet_hours = {{ from = \"{}\", to = \"{}\" }}",
        minute(-120),
        minute(120)
    );
    let (gw, port) = cancelling_gateway(dir.path(), &smsc, &head, "");
    check_in_booked(&gw, 1);
    cancel_appointments(dir.path(), port, 3..=3);
    let held = wait_status(&gw, "G-003", "held");
    assert_eq!(held["kind"], "appointment_cancelled");
    call_next(&gw);
    wait_status(&gw, "G-002", "delivered");
    // The cancellation is still held once "you are next", made after it, was delivered.
    wait_status(&gw, "G-003", "held");
    let to: Vec<String> = smsc.submitted().into_iter().map(|s| s.1).collect();
    assert_eq!(to, ["41795550002"]);
}

#[test]
fn contact_details_language_and_opt_out_come_from_the_ehrs_patient() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fhir = FhirServer::start(dir.path(), &[]);
    let smsc = Smsc::start(free_port(), "gateway:smpp-pw", 0);
    const OPT_OUT: &str = "urn:clinic:no-messages";
    let patient = |mrn: &str, extra: Value| {
        let mut p = json!({
            "resourceType": "Patient",
            "identifier": [{ "system": MRN, "value": mrn }],
            "name": [{ "family": "Doe", "given": ["Kim"] }],
            "birthDate": "1980-02-03",
            "telecom": [
                { "system": "phone", "value": "+41 79 555 00 91", "rank": 2 },
                { "system": "phone", "value": "+41 79 555 00 90", "use": "old", "rank": 1 },
                { "system": "sms", "value": "+41 79 555 00 92", "rank": 1 }
            ],
            "communication": [
                { "language": { "coding": [{ "code": "fr" }] } },
                { "language": { "coding": [{ "code": "de" }] }, "preferred": true }
            ]
        });
        if let (Some(p), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
            p.extend(extra.clone());
        }
        fhir.call("POST", "/Patient", Some(p))
    };
    patient("M1", json!({}));
    patient(
        "M2",
        json!({ "extension": [{ "url": OPT_OUT, "valueBoolean": true }] }),
    );
    let before = format!(
        "[connectors.fhir]\nbase_url = \"{}\"\nidentifier_system = \"{MRN}\"\nlookup_timeout_ms = 2000\nrequest_timeout_ms = 2000\nconnect_timeout_ms = 500\n",
        fhir.base()
    );
    let gw = messaging_gateway_after(
        dir.path(),
        &before,
        &format!("channels = [\"sms\"]\nopt_out_extension = \"{OPT_OUT}\""),
        &smpp_provider("smsc", 0, smsc.port, ""),
    );
    check_in(&gw, json!({ "request_id": "k-1" }));
    for (n, mrn) in [(2, "M1"), (3, "M2")] {
        let entry = check_in(
            &gw,
            json!({ "request_id": format!("k-{n}"), "patient_ref": mrn }),
        );
        assert_eq!(entry["entry"]["demographics"]["source"], "ehr", "{entry}");
    }
    // The best-ranked current number, in the patient's preferred language.
    call_next(&gw);
    wait_status(&gw, "G-002", "delivered");
    let sent: Vec<(String, String)> = smsc.submitted().into_iter().map(|s| (s.1, s.2)).collect();
    assert_eq!(
        sent,
        [(
            "41795550092".to_string(),
            "Nummer G-002: Sie sind als Nächste dran.".to_string()
        )]
    );
    // The EHR says this patient is not to be messaged.
    call_next(&gw);
    let refused = wait_status(&gw, "G-003", "refused");
    assert_eq!(refused["reason"], "the patient opted out of messages");
    assert_eq!(smsc.submitted().len(), 1);
}

#[test]
fn a_sip_call_plays_the_prompt_to_the_callee_and_a_busy_line_falls_back_to_sms() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The callee's audio goes here: the RTP packets as they arrive.
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").expect("RTP sink");
    let rtp_port = sink.local_addr().expect("addr").port();
    let packets: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>> = Default::default();
    let kept = packets.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok(n) = sink.recv(&mut buf) {
            kept.lock().expect("lock").push(buf[..n].to_vec());
        }
    });
    // 0.4 s of G.711 µ-law: twenty 20 ms packets.
    let prompt: Vec<u8> = (0..3200).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("next.ulaw"), &prompt).expect("prompt");
    let sip_port = free_port();
    let mut callee = Sipp::start(dir.path(), "answer", sip_port, rtp_port);
    let smsc = Smsc::start(free_port(), "gateway:smpp-pw", 0);
    let providers = format!(
        "[[messaging.providers]]\nname = \"pbx\"\ntimeout_ms = 5000\n\
sip = {{ host = \"127.0.0.1\", port = {sip_port}, from_user = \"clinic\", prompts = {{ you_are_next = \"next.ulaw\" }} }}\n\n"
    ) + &smpp_provider("smsc", 0, smsc.port, "");
    let gw = messaging_gateway(dir.path(), "channels = [\"sms\"]", &providers);
    check_in(&gw, json!({ "request_id": "k-1" }));
    for n in 2..=3 {
        check_in(
            &gw,
            json!({ "request_id": format!("k-{n}"), "contact": { "phone": format!("+41 79 555 00 0{n}"), "channels": ["voice", "sms"] } }),
        );
    }
    call_next(&gw);
    let told = wait_status(&gw, "G-002", "delivered");
    assert_eq!(attempts(&told), pairs(&[("pbx", "delivered")]));
    assert!(callee.wait_exit().success(), "{}", callee.messages());
    let trace = callee.messages();
    for step in [
        "INVITE sip:+41795550002@127.0.0.1:",
        "SIP/2.0 200 OK",
        "ACK sip:+41795550002@",
        "BYE sip:+41795550002@",
    ] {
        assert!(trace.contains(step), "{step} missing: {trace}");
    }
    // The whole prompt reached the callee's audio port, in order, as PCMU.
    let got = wait_for("the prompt's 20 packets", Duration::from_secs(10), || {
        let p = packets.lock().expect("lock").clone();
        (p.len() >= 20).then_some(p)
    });
    assert_eq!(got.len(), 20);
    assert!(
        got.iter().all(|p| p[0] == 0x80 && p[1] & 0x7f == 0),
        "PCMU, RTP version 2"
    );
    let sequence = |p: &Vec<u8>| u16::from_be_bytes([p[2], p[3]]);
    assert!(
        got.windows(2)
            .all(|w| sequence(&w[1]) == sequence(&w[0]).wrapping_add(1))
    );
    let audio: Vec<u8> = got.iter().flat_map(|p| p[12..].to_vec()).collect();
    assert_eq!(audio, prompt);
    // The line is busy: the patient's next channel tells them.
    let mut busy = Sipp::start(dir.path(), "busy", sip_port, rtp_port);
    call_next(&gw);
    let told = wait_status(&gw, "G-003", "delivered");
    assert_eq!(
        attempts(&told),
        pairs(&[("pbx", "refused"), ("smsc", "delivered")])
    );
    assert_eq!(told["attempts"][0]["error"], "SIP 486 Busy Here");
    assert!(busy.wait_exit().success(), "{}", busy.messages());
    assert_eq!(smsc.submitted().len(), 1);
}

#[test]
fn a_ready_prescription_tells_the_patient_when_to_pick_it_up_in_the_clinics_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let smtp = SmtpServer::start(dir.path(), free_port(), Security::Plain, None);
    let port = free_port();
    let before = format!(
        "[connectors.hl7v2]\nlisten = \"127.0.0.1:{port}\"\n\n[connectors.pharmacy]\nminutes_per_prescription = 10\n"
    );
    let providers = format!(
        "[[messaging.providers]]\nname = \"mail\"\nsmtp = {{ host = \"127.0.0.1\", port = {}, security = \"none\", from = \"clinic@example.org\" }}\n\n\
[messaging.templates.medication_ready.en]\nsubject = \"Ticket {{ticket}}\"\n\
email = \"Ticket {{ticket}}: your prescription can be picked up from {{pickup_at}}.\"\n\n",
        smtp.port
    );
    let gw = messaging_gateway_after(dir.path(), &before, "channels = [\"email\"]", &providers);
    wait_for("the MLLP listener", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    check_in(
        &gw,
        json!({ "patient_ref": "MRN-1", "contact": { "email": "p1@example.org" } }),
    );
    // The pharmacy says when it will be ready (RXD-3, 15:40 in the clinic's zone, UTC here).
    let messages = "MSH|^~\\&|PHARM|HOSP|EDGE|CLINIC|20261124150000||RDE^O11^RDE_O11|R-1|P|2.5.1\n\
PID|1||MRN-1^^^CLINIC^MR||POE^PAT\nORC|NW|RX-1|F-RX-1\nRXE|1^BID|00093-7180^Drug^NDC|10||mg\n\
MSH|^~\\&|PHARM|HOSP|EDGE|CLINIC|20261124151000||RDS^O13^RDS_O13|R-2|P|2.5.1\n\
PID|1||MRN-1^^^CLINIC^MR||POE^PAT\nORC|RE|RX-1|F-RX-1||\nRXD|1|00093-7180^Drug^NDC|20991124154000+0000|30|TAB\n";
    let acks = mllp_send(dir.path(), port, messages);
    assert!(acks.iter().all(|a| a.contains("MSA|AA|")), "{acks:?}");
    wait_status(&gw, "G-001", "delivered");
    let mail = smtp.messages();
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert!(
        mail[0].contains("your prescription can be picked up from 15:40."),
        "{}",
        mail[0]
    );
}
