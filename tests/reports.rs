//! Billing code suggestions and the reports against the real daemon: a day of check-ins,
//! calls, no-shows and visits driven through the API, its suggestions received by the Python
//! `hl7` MLLP receiver as DFT^P03 (or created in the FHIR test server as planned ChargeItems),
//! and the reports' exact figures in JSON and CSV, for managers and admins only; the paid
//! figures from a co-pay taken through a real processor (`localstripe`).

mod common;

use common::fhir_server::{FhirServer, MRN};
use common::hl7_peer::{self, Receiver};
use common::stripe::{self, Stripe};
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

/// The code table and fee schedule both tests use.
const BILLING: &str = "fee_schedule = { office-visit = 12000, flu-shot = 2500 }\n\n\
    [[connectors.billing.rule]]\nappointment_type = \"office-visit\"\nnew_patient = false\n\
    codes = [\"HCPCS:G0463\", \"ICD10:Z00.00\"]\n\n\
    [[connectors.billing.rule]]\nappointment_type = \"flu-shot\"\nprocedure = \"flu-vaccine\"\n\
    codes = [\"HCPCS:G0008\", \"HCPCS:Q2035\", \"ICD10:Z23\"]\n";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// A client of the gateway presenting an API key.
struct Client<'a> {
    gw: &'a Gateway,
    key: String,
}

impl Client<'_> {
    fn get(&self, path: &str) -> (u16, String) {
        let mut r = agent()
            .get(self.gw.url(path))
            .header("authorization", format!("Bearer {}", self.key))
            .call()
            .expect("GET");
        (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        )
    }

    fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).expect("json")
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let mut r = agent()
            .post(self.gw.url(path))
            .header("authorization", format!("Bearer {}", self.key))
            .send_json(body)
            .expect("POST");
        (
            r.status().as_u16(),
            r.body_mut().read_json().unwrap_or(Value::Null),
        )
    }

    fn check_in(&self, patient: &str, appointment: Option<&str>) -> i64 {
        let (status, body) = self.post(
            "/api/v1/queues/general/check-in",
            &json!({ "patient_ref": patient, "appointment_ref": appointment }),
        );
        assert_eq!(status, 201, "{body}");
        body["entry"]["id"].as_i64().expect("entry id")
    }

    fn act(&self, entry: i64, action: &str, body: Value) {
        let (status, answer) = self.post(&format!("/api/v1/queue-entries/{entry}/{action}"), &body);
        assert_eq!(status, 200, "{action}: {answer}");
    }

    fn facts(&self, entry: i64, facts: Value) -> (u16, Value) {
        self.post(&format!("/api/v1/queue-entries/{entry}/visit"), &facts)
    }
}

/// Adds a key with the CLI; the key as printed.
fn add_key(gw: &Gateway, name: &str, scope: &str) -> String {
    let out = gw.cli(&["key", "add", name, "--scope", scope]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "key add: {text}");
    text.lines()
        .find_map(|l| l.strip_prefix("key (shown once; give it to the client):"))
        .unwrap_or_else(|| panic!("a key in {text}"))
        .trim()
        .to_string()
}

#[test]
fn a_day_of_visits_gives_exact_reports_and_one_suggestion_per_visit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pms_port = free_port();
    let pms = Receiver::start(dir.path(), pms_port);
    let ehr_port = free_port();
    let processor = Stripe::start();
    std::fs::write(dir.path().join("stripe.key"), stripe::KEY).expect("key file");
    std::fs::write(dir.path().join("stripe.whsec"), "whsec_reports").expect("secret file");
    // The payment is not posted to the PMS (`pms = "none"`): its DFTs are the suggestions'.
    let mut gw = Gateway::new(
        dir.path(),
        &format!(
            "[access]\nenabled = true\n\n\
             [connectors.hl7v2]\nlisten = \"127.0.0.1:{ehr_port}\"\n\n\
             [connectors.hl7v2_out]\nhost = \"127.0.0.1\"\nport = {pms_port}\nreconnect_initial_ms = 100\nreconnect_max_ms = 200\n\n\
             [connectors.payments]\npms = \"none\"\npoll_after_ms = 1000\npoll_every_ms = 1000\n\n\
             [[connectors.payments.processor]]\nname = \"a\"\nkind = \"stripe\"\nbase_url = \"{}\"\n\
             secret_key_file = \"stripe.key\"\nwebhook_secret_file = \"stripe.whsec\"\n\n\
             [connectors.billing]\npms = \"hl7v2\"\n{BILLING}",
            processor.url()
        ),
    );
    gw.start();
    let desk = Client {
        gw: &gw,
        key: add_key(&gw, "desk", "admin"),
    };
    let front = Client {
        gw: &gw,
        key: add_key(&gw, "front", "front_desk"),
    };
    let manager = Client {
        gw: &gw,
        key: add_key(&gw, "manager", "manager"),
    };

    // The day: two visits coded, one of an unknown type, two no-shows (one typed), a walk-in
    // who left.
    let office = desk.check_in("MRN-1", Some("A1"));
    let flu = desk.check_in("MRN-2", Some("A2"));
    let missed = desk.check_in("MRN-3", Some("A3"));
    let missed_untyped = desk.check_in("MRN-4", Some("A4"));
    let walk_in = desk.check_in("MRN-5", None);
    let unknown = desk.check_in("MRN-6", Some("A6"));
    let discharged = desk.check_in("MRN-7", Some("A7"));
    let (status, body) = desk.facts(
        office,
        json!({ "appointment_type": "office-visit", "new_patient": false }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["visit"]["status"], "recorded",
        "not complete yet: {body}"
    );
    desk.facts(missed, json!({ "appointment_type": "office-visit" }));
    desk.facts(unknown, json!({ "appointment_type": "tattoo" }));
    desk.facts(discharged, json!({ "appointment_type": "office-visit" }));
    // The front desk takes the office visit's co-pay; the patient pays at the processor and
    // the poll confirms it.
    let (status, body) = front.post(
        &format!("/api/v1/queue-entries/{office}/payments"),
        &json!({ "amount_cents": 3000, "currency": "usd", "method": "terminal" }),
    );
    assert_eq!(status, 201, "{body}");
    let intent = body["payment"]["intent"].as_str().expect("intent");
    assert_eq!(processor.pay(intent, "4242424242424242"), 200);
    wait_for("the co-pay confirmed", Duration::from_secs(30), || {
        let p = front.get_json(&format!("/api/v1/queue-entries/{office}/payments"));
        (p["entry_payment"] == "paid").then_some(())
    });
    desk.act(office, "call", json!({}));
    desk.act(office, "assign-room", json!({ "room": "3" }));
    desk.act(office, "complete", json!({}));
    desk.act(flu, "call", json!({}));
    desk.act(flu, "complete", json!({}));
    // Facts recorded on a completed visit code it at once.
    let (status, body) = desk.facts(
        flu,
        json!({ "appointment_type": "flu-shot", "procedures": ["flu-vaccine"] }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["visit"]["status"], "suggested", "{body}");
    desk.act(missed, "no-show", json!({}));
    desk.act(missed_untyped, "no-show", json!({}));
    desk.act(walk_in, "left", json!({}));
    desk.act(unknown, "call", json!({}));
    // The unknown type is refused; the visit still completes.
    desk.act(unknown, "complete", json!({}));

    // The EHR ends MRN-7's visit (ADT^A03, sent twice): coded like a visit staff complete.
    desk.act(discharged, "call", json!({}));
    let a03 = "MSH|^~\\&|HIS|HOSP|EDGE|CLINIC|20261124150100||ADT^A03^ADT_A03|D-1|P|2.5.1\n\
EVN|A03|20261124150100\n\
PID|1||MRN-7^^^HOSP^MR||ROE^RICHARD\n\
PV1|1|O\n";
    wait_for("the MLLP listener", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", ehr_port)).ok()
    });
    for _ in 0..2 {
        let acks = hl7_peer::mllp_send(dir.path(), ehr_port, a03);
        assert!(acks[0].contains("MSA|AA|D-1"), "{acks:?}");
    }
    let coded = desk.get_json(&format!("/api/v1/queue-entries/{discharged}/visit"));
    assert_eq!(coded["visit"]["status"], "suggested", "{coded}");

    let visit = desk.get_json(&format!("/api/v1/queue-entries/{office}/visit"));
    assert_eq!(visit["visit"]["status"], "suggested", "{visit}");
    assert_eq!(visit["visit"]["fee_cents"], 12000, "{visit}");
    let refused = desk.get_json(&format!("/api/v1/queue-entries/{unknown}/visit"));
    assert_eq!(refused["visit"]["status"], "refused", "{refused}");
    assert_eq!(
        refused["visit"]["reason"],
        "appointment type \"tattoo\" is not in the billing table"
    );
    let entries = desk.get_json("/api/v1/queues?queue=general&closed_since=0");
    let state = |id: i64| {
        entries
            .as_array()
            .expect("entries")
            .iter()
            .find(|e| e["id"] == id)
            .map(|e| e["state"].clone())
    };
    assert_eq!(state(unknown), Some(json!("done")), "{entries}");
    let notices = desk.get_json("/api/v1/notices");
    assert!(
        notices
            .as_array()
            .expect("notices")
            .iter()
            .any(|n| n["kind"] == "billing.refused"
                && n["text"].as_str().is_some_and(|t| t.contains("tattoo"))),
        "{notices}"
    );
    let (_, metrics) = desk.get("/metrics");
    assert!(
        metrics.contains("clinic_gateway_billing_refused_total 1"),
        "{metrics}"
    );
    // A resend of the facts changes nothing: the visit is coded once.
    let (status, body) = desk.facts(
        office,
        json!({ "appointment_type": "flu-shot", "procedures": ["flu-vaccine"] }),
    );
    assert_eq!(status, 409, "{body}");

    // The PMS receives one DFT^P03 per coded visit, each a suggestion.
    let controls = [
        format!("SUG{office}"),
        format!("SUG{flu}"),
        format!("SUG{discharged}"),
    ];
    wait_for(
        "both suggestions at the PMS",
        Duration::from_secs(30),
        || {
            let got = pms.received();
            controls.iter().all(|c| got.contains(c)).then_some(())
        },
    );
    let messages = pms.messages();
    let office_dft = messages
        .iter()
        .find(|m| m.contains(&format!("|SUG{office}|")))
        .expect("the office visit's DFT");
    let ft1: Vec<&str> = office_dft
        .split(['\r', '\n'])
        .find(|s| s.starts_with("FT1"))
        .expect("FT1")
        .split('|')
        .collect();
    assert_eq!(ft1[6], "SUG", "a suggestion, not a charge: {office_dft}");
    assert_eq!(ft1[25], "G0463^^HCPCS", "{office_dft}");
    assert_eq!(ft1[19], "Z00.00^^I10", "{office_dft}");
    let flu_dft = messages
        .iter()
        .find(|m| m.contains(&format!("|SUG{flu}|")))
        .expect("the flu shot's DFT");
    assert_eq!(
        flu_dft.matches("\rFT1|").count() + flu_dft.matches("\nFT1|").count(),
        2,
        "{flu_dft}"
    );
    let dfts = journal_items(&gw, &["--kind", "hl7.outbound.dft_p03"]);
    assert_eq!(dfts.len(), 3, "one per coded visit: {dfts:?}");
    for c in &controls {
        assert_eq!(pms.received().iter().filter(|r| *r == c).count(), 1, "{c}");
    }

    // After a hard restart the visits are still coded: a resend is refused, nothing is added.
    let keys = [desk.key, front.key, manager.key];
    gw.kill9();
    gw.start();
    let [desk, front, manager] = keys.map(|key| Client { gw: &gw, key });
    let (status, body) = desk.facts(flu, json!({ "appointment_type": "flu-shot" }));
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        journal_items(&gw, &["--kind", "hl7.outbound.dft_p03"]).len(),
        3
    );

    // Reports: exact figures, JSON and CSV, no patient in them.
    let no_shows = manager.get_json("/api/v1/reports/no-shows?period=day");
    let rows = no_shows["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{no_shows}");
    assert_eq!(rows[0]["queue"], "general");
    assert_eq!(
        (
            &rows[0]["no_shows"],
            &rows[0]["untyped"],
            &rows[0]["cost_cents"]
        ),
        (&json!(2), &json!(1), &json!(12000)),
        "{no_shows}"
    );
    let today = rows[0]["period"].as_str().expect("period").to_string();
    let (status, csv) = manager.get("/api/v1/reports/appointments?period=month&format=csv");
    assert_eq!(status, 200, "{csv}");
    assert_eq!(
        csv,
        format!(
            "period,queue,booked,insured,seen,billed,no_shows\r\n{},general,6,0,4,3,2\r\n",
            &today[..7]
        )
    );
    let (_, csv) = manager.get(&format!(
        "/api/v1/reports/revenue?from={today}&to={today}&format=csv"
    ));
    assert_eq!(
        csv,
        format!(
            "period,appointment_type,visits,suggested,billed_cents,paid_cents\r\n\
             {today},flu-shot,1,1,2500,0\r\n{today},office-visit,2,2,24000,3000\r\n{today},tattoo,1,0,0,0\r\n"
        )
    );
    let revenue = manager.get_json(&format!("/api/v1/reports/revenue?from={today}&to={today}"));
    let office_row = revenue["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["appointment_type"] == "office-visit")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (&office_row["billed_cents"], &office_row["paid_cents"]),
        (&json!(24000), &json!(3000)),
        "{revenue}"
    );
    let efficiency = manager.get_json("/api/v1/reports/queue-efficiency?period=week&queue=general");
    let row = &efficiency["rows"][0];
    assert_eq!(
        (
            &row["arrived"],
            &row["seen"],
            &row["left_without_being_seen"]
        ),
        (&json!(7), &json!(4), &json!(1)),
        "{efficiency}"
    );
    assert!(
        row["wait_p50_s"]
            .as_f64()
            .is_some_and(|p50| p50 <= row["wait_p90_s"].as_f64().unwrap_or(-1.0)),
        "{efficiency}"
    );
    assert!(
        row["visits_per_room_hour"]
            .as_f64()
            .is_some_and(|v| v > 0.0),
        "the visit in room 3: {efficiency}"
    );
    let empty = manager.get_json("/api/v1/reports/no-shows?queue=lab");
    assert_eq!(empty["rows"], json!([]), "{empty}");
    let (status, page) = manager.get("/reports?period=week");
    assert_eq!(status, 200, "{page}");
    assert_eq!(page.matches("<svg").count(), 4, "{page}");
    for text in [&page, &csv, &no_shows.to_string(), &efficiency.to_string()] {
        assert!(!text.contains("MRN-"), "no patient in a report: {text}");
        assert!(!text.contains("G-00"), "no ticket in a report: {text}");
    }
    let (status, body) = manager.get("/api/v1/reports/nonsense");
    assert_eq!(status, 404, "{body}");
    let (status, body) = manager.get("/api/v1/reports/no-shows?period=year");
    assert_eq!(status, 400, "{body}");

    // The front desk may not see them; a manager may not run the queue.
    for path in [
        "/api/v1/reports/no-shows",
        "/api/v1/reports/revenue",
        "/reports",
    ] {
        let (status, body) = front.get(path);
        assert_eq!(status, 403, "{path}: {body}");
    }
    let (status, _) = manager.get("/api/v1/queues");
    assert_eq!(status, 403);
}

#[test]
fn a_coded_visit_reaches_a_fhir_pms_as_planned_charge_items_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FhirServer::start(dir.path(), &[]);
    let mut gw = Gateway::new(
        dir.path(),
        &format!(
            "[connectors.fhir]\nbase_url = \"{}\"\nidentifier_system = \"{MRN}\"\nrequest_timeout_ms = 2000\n\n\
             [destinations.ehr-fhir]\nbackoff_initial_ms = 100\nbackoff_max_ms = 400\n\n\
             [connectors.billing]\npms = \"fhir\"\n{BILLING}",
            server.base()
        ),
    );
    gw.start();
    let (status, body) = post(
        &gw.url("/api/v1/queues/general/check-in"),
        &json!({ "patient_ref": "MRN-900" }),
    );
    assert_eq!(status, 201, "{body}");
    let entry = body["entry"]["id"].as_i64().expect("entry");
    let facts = json!({ "appointment_type": "flu-shot", "procedures": ["flu-vaccine"] });
    let url = gw.url(&format!("/api/v1/queue-entries/{entry}/visit"));
    assert_eq!(post(&url, &facts).0, 200);
    for action in ["call", "complete"] {
        let (status, body) = post(
            &gw.url(&format!("/api/v1/queue-entries/{entry}/{action}")),
            &json!({}),
        );
        assert_eq!(status, 200, "{body}");
    }
    // Sent again: refused, nothing more leaves.
    assert_eq!(post(&url, &facts).0, 409);
    let search = "/ChargeItem?identifier=urn:clinic-gateway:charge|";
    let items = wait_for(
        "both ChargeItems in the PMS",
        Duration::from_secs(30),
        || {
            let found: Vec<Value> = (1..=2)
                .filter_map(|n| {
                    let bundle = server.call("GET", &format!("{search}SUG{entry}-{n}"), None);
                    bundle["entry"][0]["resource"].is_object().then_some(bundle)
                })
                .collect();
            (found.len() == 2).then_some(found)
        },
    );
    for bundle in &items {
        assert_eq!(
            bundle["entry"].as_array().map(Vec::len),
            Some(1),
            "{bundle}"
        );
        let r = &bundle["entry"][0]["resource"];
        assert_eq!(r["status"], "planned", "{r}");
        assert_eq!(
            r["subject"]["identifier"],
            json!({ "system": MRN, "value": "MRN-900" })
        );
        assert_eq!(r["reason"][0]["coding"][0]["code"], "Z23", "{r}");
    }
    let codes: Vec<&Value> = items
        .iter()
        .map(|b| &b["entry"][0]["resource"]["code"]["coding"][0]["code"])
        .collect();
    assert_eq!(codes, [&json!("G0008"), &json!("Q2035")]);
    let rows = wait_for("the charges' outbox rows", Duration::from_secs(30), || {
        let items = journal_items(&gw, &["--kind", "fhir.create"]);
        (items.len() == 2).then_some(items)
    });
    assert_eq!(rows.len(), 2);
}

#[test]
fn a_bad_billing_table_is_refused_naming_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    let text = config_text(
        dir.path(),
        free_port(),
        "[connectors.billing]\ntransaction_type = \"CG\"\n\n\
         [[connectors.billing.rule]]\nappointment_type = \"office-visit\"\ncodes = [\"HCPCS:G0463\"]\n\n\
         [[connectors.billing.rule]]\nappointment_type = \"flu-shot\"\ncodes = [\"LOINC:1234-5\"]\n",
    );
    std::fs::write(&path, &text).expect("write");
    let line = |needle: &str| {
        text.lines()
            .position(|l| l.starts_with(needle))
            .map(|i| i + 1)
            .expect("line")
    };
    let (code, stderr) = check_config(&path);
    assert_eq!(code, Some(2), "{stderr}");
    let file = path.display();
    for expected in [
        format!(
            "{file}:{}: connectors.billing.pms: \"hl7v2\" needs",
            line("[connectors.billing]")
        ),
        format!(
            "{file}:{}: connectors.billing.transaction_type: \"CG\" posts",
            line("transaction_type")
        ),
        format!(
            "{file}:{}: connectors.billing.rule[1].codes: \"LOINC:1234-5\" is not",
            line("codes = [\"LOINC")
        ),
    ] {
        assert!(stderr.contains(&expected), "{expected} in {stderr}");
    }
}
