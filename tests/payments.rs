//! Payments against two real processors (`localstripe`, tests/common/stripe.rs) and the Python
//! `hl7` MLLP receiver as the PMS: the front desk asks for a co-pay, the patient pays (or is
//! declined) at the processor, webhooks and polls confirm it, the PMS gets one DFT^P03; a
//! restart between a create and its commit adopts the intent made; staff let a patient pay
//! later, cancel intents left open at a processor and see payments taken twice.

mod common;

use common::fhir_server::{FhirServer, MRN};
use common::hl7_peer::Receiver;
use common::stripe::{self, Stripe};
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const SECRET_A: &str = "whsec_alpha";
const SECRET_B: &str = "whsec_bravo";

/// The amount whose create the fault hook holds before its intent is recorded.
const HELD_CENTS: &str = "1234";

/// The gateway with processors `a` then `b`, and the PMS's MLLP receiver.
fn gateway(dir: &std::path::Path, a: &Stripe, b: &Stripe, pms: u16) -> Gateway {
    std::fs::write(dir.join("stripe.key"), format!("{}\n", stripe::KEY)).expect("key file");
    std::fs::write(dir.join("a.whsec"), SECRET_A).expect("secret file");
    std::fs::write(dir.join("b.whsec"), SECRET_B).expect("secret file");
    let mut gw = Gateway::new(
        dir,
        &format!(
            "[connectors.hl7v2_out]\nhost = \"127.0.0.1\"\nport = {pms}\nreconnect_initial_ms = 100\nreconnect_max_ms = 200\n\n\
             [connectors.payments]\npms = \"hl7v2\"\npoll_after_ms = 3000\npoll_every_ms = 1000\n\
             breaker_failures = 1\nbreaker_open_s = 2\n\n\
             [[connectors.payments.processor]]\nname = \"a\"\nkind = \"stripe\"\nbase_url = \"{}\"\n\
             secret_key_file = \"stripe.key\"\nwebhook_secret_file = \"a.whsec\"\ntimeout_ms = 2000\n\n\
             [[connectors.payments.processor]]\nname = \"b\"\nkind = \"stripe\"\nbase_url = \"{}\"\n\
             secret_key_file = \"stripe.key\"\nwebhook_secret_file = \"b.whsec\"\ntimeout_ms = 2000\n\n\
             [destinations.payments]\nbackoff_initial_ms = 200\nbackoff_max_ms = 400\n",
            a.url(),
            b.url()
        ),
    )
    .env("CLINIC_GATEWAY_FAULT_HOLD_INTENT", HELD_CENTS);
    gw.start();
    gw
}

/// The intents processor `stripe` holds for the payment `reference`.
fn intents_of(stripe: &Stripe, reference: &str) -> Vec<Value> {
    let list = stripe.get("/v1/payment_intents?limit=100");
    list["data"]
        .as_array()
        .expect("intents")
        .iter()
        .filter(|i| i["metadata"]["payment"] == reference)
        .cloned()
        .collect()
}

/// The intent left behind at `processor` for payment `payment`, once it is in `state`.
fn left_behind(gw: &Gateway, processor: &str, payment: &Value, state: &str) -> Value {
    wait_for(
        &format!("an intent {state} at {processor}"),
        Duration::from_secs(30),
        || {
            let list = gw.get_json("/api/v1/payments/left-open");
            list["intents"].as_array().and_then(|l| {
                l.iter()
                    .find(|i| {
                        i["processor"] == processor
                            && i["payment_id"] == payment["id"]
                            && i["state"] == state
                    })
                    .cloned()
            })
        },
    )
}

/// Freezes `a` while a payment is asked on `entry`: its create times out and `b` takes it;
/// thawed, `a` makes the intent late. Answers the payment, once that intent is left open.
fn failover_with_a_late_intent(gw: &Gateway, a: &Stripe, entry: i64) -> (Value, Value) {
    a.pause();
    let (status, body) = post(
        &gw.url(&format!("/api/v1/queue-entries/{entry}/payments")),
        &json!({ "amount_cents": 2000, "currency": "usd", "method": "hosted" }),
    );
    a.resume();
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["payment"]["processor"], "b", "failed over: {body}");
    let payment = body["payment"].clone();
    let late = left_behind(gw, "a", &payment, "left_open");
    (payment, late)
}

fn check_in(gw: &Gateway, patient: &str) -> i64 {
    let (status, body) = post(
        &gw.url("/api/v1/queues/general/check-in"),
        &json!({ "patient_ref": patient }),
    );
    assert_eq!(status, 201, "{body}");
    body["entry"]["id"].as_i64().expect("entry id")
}

/// Asks for a co-pay of 25.00 on `entry`; answers the payment once a processor holds it.
fn ask(gw: &Gateway, entry: i64) -> Value {
    let (status, body) = post(
        &gw.url(&format!("/api/v1/queue-entries/{entry}/payments")),
        &json!({ "amount_cents": 2500, "currency": "usd", "method": "hosted" }),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["payment"]["status"], "open", "{body}");
    assert!(
        body["payment"]["client_secret"]
            .as_str()
            .is_some_and(|s| s.contains("_secret_")),
        "{body}"
    );
    body["payment"].clone()
}

fn payments(gw: &Gateway, entry: i64) -> Value {
    gw.get_json(&format!("/api/v1/queue-entries/{entry}/payments"))
}

/// The entry's payment standing once it is `standing`.
fn wait_standing(gw: &Gateway, entry: i64, standing: &str) -> Value {
    wait_for(standing, Duration::from_secs(30), || {
        let p = payments(gw, entry);
        (p["entry_payment"] == standing).then_some(p)
    })
}

/// The DFTs the PMS received for `payment`.
fn dfts(pms: &Receiver, payment: &Value) -> usize {
    let control = format!("PAY{}", payment["id"]);
    pms.received().iter().filter(|c| **c == control).count()
}

fn queue_order(gw: &Gateway) -> Vec<i64> {
    gw.get_json("/api/v1/queues?queue=general")
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["id"].as_i64())
        .collect()
}

#[test]
fn copays_are_confirmed_once_declines_keep_the_place_and_a_hung_or_dead_processor_fails_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, mut b) = (Stripe::start(), Stripe::start());
    let pms_port = free_port();
    let pms = Receiver::start(dir.path(), pms_port);
    let mut gw = gateway(dir.path(), &a, &b, pms_port);
    let hook = |name: &str| gw.url(&format!("/api/v1/payments/webhook/{name}"));
    // Two webhook endpoints to the same URL: every event of `a` is delivered twice.
    a.webhook("gateway", &hook("a"), SECRET_A);
    a.webhook("gateway-again", &hook("a"), SECRET_A);
    b.webhook("gateway", &hook("b"), SECRET_B);

    // Approved: confirmed by the webhook, the entry paid, the PMS told once.
    let first = check_in(&gw, "MRN-100");
    let paid = ask(&gw, first);
    assert_eq!(paid["processor"], "a");
    let intent = paid["intent"].as_str().expect("intent").to_string();
    assert_eq!(a.pay(&intent, "4242424242424242"), 200);
    let p = wait_standing(&gw, first, "paid");
    assert_eq!(p["payments"][0]["status"], "confirmed", "{p}");
    wait_for(
        "both deliveries of the event",
        Duration::from_secs(30),
        || {
            (a.logged("webhook \"payment_intent.succeeded\" successfully delivered") >= 2)
                .then_some(())
        },
    );
    wait_for("the DFT^P03 at the PMS", Duration::from_secs(30), || {
        (dfts(&pms, &paid) > 0).then_some(())
    });
    let dft = pms
        .messages()
        .into_iter()
        .find(|m| m.contains("DFT^P03"))
        .expect("the DFT");
    assert!(dft.contains("PID|1||MRN-100"), "{dft}");
    assert!(dft.contains("|PY|") && dft.contains("25.00&USD"), "{dft}");
    assert!(dft.contains(&intent), "{dft}");
    let confirmed = journal_events(&gw, "payment.confirmed");
    assert_eq!(confirmed.len(), 1, "{confirmed:?}");
    assert_eq!(confirmed[0]["entry"], first);
    assert!(
        confirmed[0].get("amount_cents").is_none(),
        "{}",
        confirmed[0]
    );

    // A webhook with a bad signature: 400, audited, counted, nothing changed.
    let second = check_in(&gw, "MRN-200");
    let open = ask(&gw, second);
    let forged = json!({
        "id": "evt_forged", "object": "event", "type": "payment_intent.succeeded",
        "created": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs(),
        "data": { "object": { "id": open["intent"], "object": "payment_intent", "status": "succeeded" } }
    });
    let t = forged["created"].as_u64().expect("t");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let refused = agent
        .post(&hook("a"))
        .header("Stripe-Signature", &format!("t={t},v1={}", "ab".repeat(32)))
        .header("Content-Type", "application/json")
        .send(forged.to_string())
        .expect("webhook answered");
    assert_eq!(refused.status().as_u16(), 400);
    let audited = audit_log(&gw);
    assert!(
        audited
            .iter()
            .any(|(action, _, detail)| action == "payment.webhook_refused"
                && detail.contains("no v1 signature matches")),
        "{audited:?}"
    );
    assert!(
        gw.get_text("/metrics")
            .contains("clinic_gateway_payment_webhooks_refused_total 1")
    );
    assert_eq!(payments(&gw, second)["entry_payment"], "awaiting_payment");

    // Declined at the processor: the entry keeps its place, marked payment_pending.
    let before = queue_order(&gw);
    let declined = open["intent"].as_str().expect("intent");
    assert_eq!(a.pay(declined, "4000000000000341"), 402);
    let p = wait_standing(&gw, second, "payment_pending");
    assert_eq!(p["payments"][0]["cause"], "declined:card_declined", "{p}");
    assert_eq!(
        p["alternatives"],
        json!(["another_processor", "another_method", "pay_later"])
    );
    assert_eq!(queue_order(&gw), before, "a failed payment moves no one");
    let board = gw.get_text("/");
    assert!(
        board.contains("payment pending</span> declined:card_declined"),
        "{board}"
    );
    assert!(
        notice_texts(&gw)
            .iter()
            .any(|n| n.contains("payment not completed") && n.contains("keeps their place")),
        "{:?}",
        notice_texts(&gw)
    );
    let failed = journal_events(&gw, "payment.failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["entry"], second);

    // Pay later: the entry leaves payment_pending, the balance is owed, audited, announced.
    let later = format!(
        "/api/v1/queue-entries/{second}/payments/{}/pay-later",
        open["id"]
    );
    let (status, body) = post(&gw.url(&later), &json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entry_payment"], "owed", "{body}");
    assert_eq!(body["owed_cents"], json!({ "usd": 2500 }), "{body}");
    let p = payments(&gw, second);
    assert_eq!(
        (&p["entry_payment"], &p["owed_cents"], &p["alternatives"]),
        (&json!("owed"), &json!({ "usd": 2500 }), &json!([])),
        "{p}"
    );
    assert!(
        gw.get_text("/").contains("owes</span> 25.00 USD"),
        "the board shows what is owed"
    );
    assert!(
        audit_log(&gw)
            .iter()
            .any(|(action, _, detail)| action == "payment.pay_later"
                && detail.contains(&format!("\"payment\":{}", open["id"]))),
        "{:?}",
        audit_log(&gw)
    );
    let owed = journal_events(&gw, "payment.owed");
    assert_eq!(owed.len(), 1, "{owed:?}");
    assert_eq!(owed[0]["entry"], second);
    let (status, body) = post(&gw.url(&later), &json!({}));
    assert_eq!(status, 409, "only a failed payment: {body}");
    assert_eq!(queue_order(&gw), before, "paying later moves no one");
    // Later the patient pays the balance: it settles what was owed, once.
    let balance = ask(&gw, second);
    let intent = balance["intent"].as_str().expect("intent");
    assert_eq!(a.pay(intent, "4242424242424242"), 200);
    let p = wait_standing(&gw, second, "paid");
    assert_eq!(p["owed_cents"], json!({}), "{p}");
    let settled = p["payments"]
        .as_array()
        .and_then(|l| l.iter().find(|x| x["id"] == open["id"]))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (&settled["status"], &settled["settled_by"]),
        (&json!("settled"), &balance["id"]),
        "{p}"
    );

    // The restart: the gateway is killed with a payment open, the patient pays meanwhile (the
    // webhook finds no one), and the poll after the restart confirms it, once.
    let third = check_in(&gw, "MRN-300");
    let in_flight = ask(&gw, third);
    gw.kill9();
    let intent3 = in_flight["intent"].as_str().expect("intent");
    assert_eq!(a.pay(intent3, "4242424242424242"), 200);
    wait_for(
        "the webhook to miss the gateway",
        Duration::from_secs(30),
        || (a.logged("webhook \"payment_intent.succeeded\" failed") >= 2).then_some(()),
    );
    gw.start();
    wait_standing(&gw, third, "paid");
    wait_for(
        "the DFT of the restarted payment",
        Duration::from_secs(30),
        || (dfts(&pms, &in_flight) > 0).then_some(()),
    );

    // Killed after the processor made the intent and before the gateway recorded it:
    // localstripe ignores Idempotency-Key, so the intent is found by its metadata and
    // adopted after the restart, never made twice; the payment confirms once.
    let held = check_in(&gw, "MRN-350");
    let (status, body) = post(
        &gw.url(&format!("/api/v1/queue-entries/{held}/payments")),
        &json!({ "amount_cents": HELD_CENTS.parse::<i64>().expect("cents"), "currency": "usd", "method": "hosted" }),
    );
    assert_eq!(status, 202, "held before the intent is recorded: {body}");
    let reference = body["payment"]["ref"].as_str().expect("ref").to_string();
    wait_for("the create held", Duration::from_secs(30), || {
        gw.log_text()
            .contains("fault hook: intent held before its commit")
            .then_some(())
    });
    assert_eq!(intents_of(&a, &reference).len(), 1, "made before the kill");
    gw.kill9();
    gw.start();
    let p = wait_for("the intent adopted", Duration::from_secs(30), || {
        let p = payments(&gw, held);
        (p["payments"][0]["status"] == "open").then_some(p)
    });
    let made = intents_of(&a, &reference);
    assert_eq!(made.len(), 1, "one intent at the processor: {made:?}");
    assert_eq!(p["payments"][0]["intent"], made[0]["id"], "{p}");
    assert!(gw.log_text().contains("found after a restart, adopted"));
    let adopted = p["payments"][0].clone();
    let intent = adopted["intent"].as_str().expect("intent");
    assert_eq!(a.pay(intent, "4242424242424242"), 200);
    wait_standing(&gw, held, "paid");
    wait_for(
        "the DFT of the adopted intent",
        Duration::from_secs(30),
        || (dfts(&pms, &adopted) > 0).then_some(()),
    );

    // Processor `a` hangs (frozen): its create times out, its breaker opens, `b` takes the
    // payment within the same request; `a`, thawed, makes the intent late: looked up, it is
    // left open there. The patient pays it after all: the payment is confirmed through it, and
    // `b`'s intent is the one left open, which staff cancel.
    let fifth = check_in(&gw, "MRN-500");
    let (on_b, late) = failover_with_a_late_intent(&gw, &a, fifth);
    assert!(
        gw.log_text().contains("payment processor unavailable"),
        "the timeout is logged"
    );
    let late_intent = late["intent"].as_str().expect("the late intent");
    assert_eq!(late["entry_id"], fifth, "{late}");
    assert_eq!(a.pay(late_intent, "4242424242424242"), 200);
    let p = wait_standing(&gw, fifth, "paid");
    assert_eq!(
        (&p["payments"][0]["processor"], &p["payments"][0]["intent"]),
        (&json!("a"), &json!(late_intent)),
        "{p}"
    );
    let left = left_behind(&gw, "b", &on_b, "left_open");
    assert_eq!(left["intent"], on_b["intent"], "{left}");
    let key = left["key"].as_str().expect("key");
    // The front desk sees it on the page, with the button that cancels it there.
    let page = gw.get_text("/");
    let section = page
        .split("<h2>Payments to set right</h2>")
        .nth(1)
        .unwrap_or_else(|| panic!("no payments to set right on the page: {page}"));
    assert!(
        section.contains(left["ticket"].as_str().expect("ticket")),
        "{section}"
    );
    assert!(
        section.contains(&format!("name=key value=\"{key}\"")),
        "{section}"
    );
    let status = ureq::post(&gw.url("/payments/cancel"))
        .send_form([("key", key)])
        .expect("the page's cancel form")
        .status();
    assert_eq!(status, 200, "back on the page");
    wait_for(
        "the canceled intent off the list",
        Duration::from_secs(30),
        || {
            let list = gw.get_json("/api/v1/payments/left-open");
            let listed = list["intents"]
                .as_array()
                .is_some_and(|l| l.iter().any(|i| i["key"] == key));
            (!listed).then_some(())
        },
    );
    // Canceled once: asked again by the API, there is nothing left open to cancel.
    let (status, body) = post(
        &gw.url(&format!("/api/v1/payments/left-open/{key}/cancel")),
        &json!({}),
    );
    assert_eq!(status, 409, "{body}");
    let at_b = b.get(&format!(
        "/v1/payment_intents/{}",
        on_b["intent"].as_str().expect("intent")
    ));
    assert_eq!(at_b["status"], "canceled", "{at_b}");
    assert!(
        audit_log(&gw)
            .iter()
            .any(|(action, _, detail)| action == "payment.cancel_left_open"
                && detail.contains(on_b["intent"].as_str().expect("intent"))),
        "{:?}",
        audit_log(&gw)
    );
    wait_for(
        "the DFT of the late intent",
        Duration::from_secs(30),
        || (dfts(&pms, &on_b) > 0).then_some(()),
    );

    // Again, but the patient pays `b`'s intent first, then `a`'s late one as well: the
    // payment is confirmed once, and staff see the second payment to refund.
    let sixth = check_in(&gw, "MRN-600");
    let (on_b, late) = failover_with_a_late_intent(&gw, &a, sixth);
    assert_eq!(
        b.pay(on_b["intent"].as_str().expect("intent"), "4242424242424242"),
        200
    );
    wait_standing(&gw, sixth, "paid");
    assert_eq!(
        a.pay(late["intent"].as_str().expect("intent"), "4242424242424242"),
        200
    );
    let twice = left_behind(&gw, "a", &on_b, "paid_twice");
    assert_eq!(twice["intent"], late["intent"], "{twice}");
    assert!(
        gw.get_text("/")
            .contains("paid twice: refund it at the processor"),
        "the front desk sees the payment to refund"
    );
    assert!(
        notice_texts(&gw)
            .iter()
            .any(|n| n.contains("paid twice")
                && n.contains(late["intent"].as_str().expect("intent"))),
        "{:?}",
        notice_texts(&gw)
    );
    let p = payments(&gw, sixth);
    assert_eq!(
        p["payments"][0]["intent"], on_b["intent"],
        "confirmed once: {p}"
    );
    assert_eq!(journal_events(&gw, "payment.paid_twice").len(), 1);

    // Processor `b` dies mid-payment: the patient at its terminal has not paid, its polls
    // fail and its breaker opens; asked again (`b` first), the payment fails over to `a`.
    let fourth = check_in(&gw, "MRN-400");
    let on_b = |gw: &Gateway| {
        post(
            &gw.url(&format!("/api/v1/queue-entries/{fourth}/payments")),
            &json!({ "amount_cents": 1500, "currency": "usd", "method": "terminal", "processor": "b" }),
        )
    };
    let (status, body) = on_b(&gw);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["payment"]["processor"], "b", "{body}");
    b.kill();
    wait_for("b's breaker to open", Duration::from_secs(30), || {
        let actors = gw.get_json("/api/v1/actors");
        let payments = actors
            .as_array()
            .expect("actors")
            .iter()
            .find(|c| c["name"] == "payments")
            .cloned()
            .unwrap_or_default();
        (payments["state"] == "degraded"
            && payments["last_error"]
                .as_str()
                .is_some_and(|e| e.ends_with(" b")))
        .then_some(())
    });
    let (status, body) = on_b(&gw);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["payment"]["processor"], "a", "failed over: {body}");
    let intent4 = body["payment"]["intent"].as_str().expect("intent");
    assert_eq!(a.pay(intent4, "4242424242424242"), 200);
    let p = wait_standing(&gw, fourth, "paid");
    assert_eq!(
        p["payments"][1]["status"], "open",
        "b's intent is left unpaid: {p}"
    );

    // Every DFT once, whatever came twice; no card data or patient in the cloud events.
    for p in [&paid, &in_flight, &adopted] {
        assert_eq!(dfts(&pms, p), 1, "{:?}", pms.received());
    }
    assert_eq!(journal_events(&gw, "payment.confirmed").len(), 7);
    let cloud = format!(
        "{:?}{:?}{:?}{:?}",
        journal_events(&gw, "payment.confirmed"),
        journal_events(&gw, "payment.failed"),
        journal_events(&gw, "payment.owed"),
        journal_events(&gw, "payment.paid_twice")
    );
    for leak in ["MRN-", "amount", "_secret_"] {
        assert!(!cloud.contains(leak), "{leak} in {cloud}");
    }
    assert!(
        !gw.log_text().contains("_secret_"),
        "a client secret in the log"
    );
}

#[test]
fn a_bad_payments_table_is_refused_naming_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("stripe.key"), stripe::KEY).expect("key file");
    let path = dir.path().join("bad.toml");
    let text = config_text(
        dir.path(),
        free_port(),
        "[connectors.payments]\npoll_every_ms = 5\n\n\
         [[connectors.payments.processor]]\nname = \"a\"\nkind = \"stripe\"\nbase_url = \"https://api.example\"\n\
         secret_key_file = \"stripe.key\"\nwebhook_secret_file = \"stripe.key\"\n\n\
         [[connectors.payments.processor]]\nname = \"a\"\nkind = \"stripe\"\nbase_url = \"http://example.com\"\n\
         secret_key_file = \"stripe.key\"\nwebhook_secret_file = \"missing.whsec\"\n",
    );
    std::fs::write(&path, &text).expect("write");
    let line = |needle: &str| {
        text.lines()
            .enumerate()
            .filter(|(_, l)| l.starts_with(needle))
            .map(|(i, _)| i + 1)
            .last()
            .expect("line")
    };
    let (code, stderr) = check_config(&path);
    assert_eq!(code, Some(2), "{stderr}");
    let file = path.display();
    for expected in [
        format!(
            "{file}:{}: connectors.payments.pms: \"hl7v2\" needs",
            line("[connectors.payments]")
        ),
        format!(
            "{file}:{}: connectors.payments.poll_every_ms:",
            line("poll_every_ms")
        ),
        format!(
            "{file}:{}: connectors.payments.processor[1].name: processor \"a\" is named twice",
            line("name = \"a\"")
        ),
        format!(
            "{file}:{}: connectors.payments.processor[1].base_url: must be https://",
            line("base_url = \"http://")
        ),
        format!(
            "{file}:{}: connectors.payments.processor[1].webhook_secret_file:",
            line("webhook_secret_file = \"missing")
        ),
    ] {
        assert!(stderr.contains(&expected), "{expected} in {stderr}");
    }
}

#[test]
fn a_confirmed_payment_reaches_a_fhir_pms_as_one_payment_notice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FhirServer::start(dir.path(), &[]);
    let processor = Stripe::start();
    std::fs::write(dir.path().join("stripe.key"), stripe::KEY).expect("key file");
    std::fs::write(dir.path().join("a.whsec"), SECRET_A).expect("secret file");
    let mut gw = Gateway::new(
        dir.path(),
        &format!(
            "[connectors.fhir]\nbase_url = \"{}\"\nidentifier_system = \"{MRN}\"\nrequest_timeout_ms = 2000\n\n\
             [destinations.ehr-fhir]\nbackoff_initial_ms = 100\nbackoff_max_ms = 400\n\n\
             [connectors.payments]\npms = \"fhir\"\npoll_after_ms = 1000\npoll_every_ms = 1000\n\n\
             [[connectors.payments.processor]]\nname = \"a\"\nkind = \"stripe\"\nbase_url = \"{}\"\n\
             secret_key_file = \"stripe.key\"\nwebhook_secret_file = \"a.whsec\"\n",
            server.base(),
            processor.url()
        ),
    );
    gw.start();
    // Delivered twice; the poll may come first: one PaymentNotice whatever arrives.
    let hook = gw.url("/api/v1/payments/webhook/a");
    processor.webhook("gateway", &hook, SECRET_A);
    processor.webhook("gateway-again", &hook, SECRET_A);
    let entry = check_in(&gw, "MRN-900");
    let payment = ask(&gw, entry);
    let intent = payment["intent"].as_str().expect("intent");
    assert_eq!(processor.pay(intent, "4242424242424242"), 200);
    wait_standing(&gw, entry, "paid");
    wait_for(
        "both deliveries of the event",
        Duration::from_secs(30),
        || {
            (processor.logged("webhook \"payment_intent.succeeded\" successfully delivered") >= 2)
                .then_some(())
        },
    );
    let search = format!(
        "/PaymentNotice?identifier=urn:clinic-gateway:payment|PAY{}",
        payment["id"]
    );
    let notices = wait_for(
        "the PaymentNotice in the PMS",
        Duration::from_secs(30),
        || {
            let bundle = server.call("GET", &search, None);
            bundle["entry"]
                .as_array()
                .filter(|e| !e.is_empty())
                .cloned()
        },
    );
    assert_eq!(notices.len(), 1, "{notices:?}");
    let n = &notices[0]["resource"];
    assert_eq!(n["amount"]["value"].as_f64(), Some(25.0), "{n}");
    assert_eq!(n["amount"]["currency"], "USD", "{n}");
    assert_eq!(n["payment"]["identifier"]["value"], intent, "{n}");
    assert_eq!(
        n["request"]["identifier"],
        json!({ "system": MRN, "value": "MRN-900" })
    );
    let row = wait_for(
        "the notice's outbox row delivered",
        Duration::from_secs(30),
        || {
            let items = journal_items(&gw, &["--kind", "fhir.create"]);
            (items.len() == 1).then_some(items)
        },
    );
    assert_eq!(row.len(), 1, "one notice, whatever came twice");
}
