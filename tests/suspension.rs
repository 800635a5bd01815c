//! Suspending an integration against the real daemon, a real broker and a real HL7 receiver:
//! the cloud's `suspend-integration` stops the MLLP sender, its rows stay queued across a
//! restart, staff and the cloud are told, and once an admin resumes it every row is delivered
//! in order.

mod common;

use common::fhir_server::{FhirServer, MRN};
use common::hl7_peer::{Receiver, a08};
use common::*;
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

fn actor_state(gw: &Gateway, name: &str) -> Option<String> {
    gw.get_json("/api/v1/actors")
        .as_array()?
        .iter()
        .find(|a| a["name"] == name)
        .and_then(|a| a["state"].as_str().map(str::to_string))
}

fn wait_state(gw: &Gateway, name: &str, state: &str) {
    wait_for(&format!("{name} {state}"), Duration::from_secs(30), || {
        (actor_state(gw, name).as_deref() == Some(state)).then_some(())
    });
}

fn pending(gw: &Gateway) -> u64 {
    gw.get_json("/api/v1/backlog")["destinations"]["ehr-mllp"]["pending"]
        .as_u64()
        .unwrap_or(0)
}

fn publish(broker: &Broker, topic: &str, payload: &str) {
    let ok = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-t", topic, "-m", payload, "-q", "1"])
        .status()
        .expect("mosquitto_pub")
        .success();
    assert!(ok, "published {topic}");
}

#[test]
fn a_suspended_sender_keeps_its_rows_across_a_restart_and_delivers_them_in_order_once_resumed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let receiver = Receiver::start(dir.path(), port);
    let broker = Broker::start(&dir.path().join("broker"));
    let consumer = Consumer::start(&broker, "clinic/test-clinic/#");
    let extra = format!(
        "{}\n[connectors.hl7v2_out]\nhost = \"127.0.0.1\"\nport = {port}\nack_timeout_ms = 500\nreconnect_initial_ms = 100\nreconnect_max_ms = 200\n",
        relay_table(&broker)
    );
    let mut gw = Gateway::new(dir.path(), &extra);
    gw.start();
    let outbound = gw.url("/api/v1/hl7/outbound");
    assert_eq!(post(&outbound, &a08("OUT-1")).0, 202);
    wait_for("OUT-1 delivered", Duration::from_secs(30), || {
        (receiver.received() == ["OUT-1"]).then_some(())
    });

    publish(
        &broker,
        "clinic/test-clinic/commands/suspend-integration",
        r#"{"request_id":"sec-1","integration":"hl7v2-sender","reason":"the EHR reports a leaked certificate"}"#,
    );
    let reply = wait_for("the command's reply", Duration::from_secs(30), || {
        consumer
            .snapshot()
            .into_iter()
            .find(|m| m.topic == "clinic/test-clinic/replies/suspend-integration")
    });
    let reply: Value = serde_json::from_str(&reply.payload).expect("JSON reply");
    assert_eq!(reply["ok"], true, "{reply}");
    wait_state(&gw, "hl7v2-sender", "suspended");

    for control in ["OUT-2", "OUT-3", "OUT-4"] {
        assert_eq!(post(&outbound, &a08(control)).0, 202);
    }
    assert_eq!(pending(&gw), 3);

    // The suspension is in the journal: a restart keeps it, and keeps the rows.
    gw.kill9();
    gw.start();
    wait_state(&gw, "hl7v2-sender", "suspended");
    assert_eq!(pending(&gw), 3);
    assert_eq!(receiver.received(), ["OUT-1"]);
    let notices = notice_texts(&gw);
    assert!(
        notices
            .iter()
            .any(|n| n.contains("hl7v2-sender is suspended")),
        "{notices:?}"
    );
    let event = wait_for("integration.suspended", Duration::from_secs(30), || {
        consumer
            .events()
            .into_iter()
            .find(|e| e["kind"] == "integration.suspended")
    });
    assert_eq!(event["key"], "integration:hl7v2-sender");
    assert_eq!(event["payload"]["by"], "cloud:sec-1");

    let out = gw.cli(&["integration", "resume", "hl7v2-sender"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("every row delivered", Duration::from_secs(30), || {
        (receiver.received() == ["OUT-1", "OUT-2", "OUT-3", "OUT-4"]).then_some(())
    });
    wait_state(&gw, "hl7v2-sender", "healthy");
    assert!(
        !gw.cli(&["integration", "resume", "hl7v2-sender"])
            .status
            .success(),
        "resuming what is not suspended is refused"
    );
    let audited: Vec<(String, String)> = audit_log(&gw)
        .into_iter()
        .filter(|(action, _, _)| action.starts_with("integration."))
        .map(|(action, actor, _)| (action, actor))
        .collect();
    assert_eq!(audited.len(), 2, "{audited:?}");
    assert_eq!(audited[0].0, "integration.resumed");
    assert_eq!(
        audited[1],
        ("integration.suspended".into(), "cloud:sec-1".into())
    );
}

/// Connects to the listener and reads until it closes the connection; the bytes it sent.
fn refused_connection(port: u16) -> usize {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    buf.len()
}

#[test]
fn a_listener_refusing_senders_too_fast_suspends_itself_until_resumed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let extra = format!(
        "[connectors.hl7v2]\nlisten = \"127.0.0.1:{port}\"\nsuspend_after_refusals = 3\nrefusal_window_s = 600\n\n[[connectors.hl7v2.allow]]\naddress = \"10.0.0.0/8\"\n"
    );
    let mut gw = Gateway::new(dir.path(), &extra);
    gw.start();
    wait_state(&gw, "hl7v2-mllp", "healthy");
    for _ in 0..3 {
        assert_eq!(refused_connection(port), 0, "closed unanswered");
    }
    wait_state(&gw, "hl7v2-mllp", "suspended");
    let suspended = wait_for("the suspension audited", Duration::from_secs(30), || {
        audit_log(&gw)
            .into_iter()
            .find(|(action, _, _)| action == "integration.suspended")
    });
    assert_eq!(suspended.1, "hl7v2-mllp");
    assert!(
        notice_texts(&gw)
            .iter()
            .any(|n| n.contains("hl7v2-mllp is suspended")),
        "{:?}",
        notice_texts(&gw)
    );

    let out = gw.cli(&["integration", "resume", "hl7v2-mllp"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The next connection is served again (and refused by the allow-list, the first of three).
    assert_eq!(refused_connection(port), 0);
    wait_state(&gw, "hl7v2-mllp", "healthy");
}

#[test]
fn a_refusal_count_of_nothing_is_reported_with_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::new(
        dir.path(),
        "[connectors.hl7v2]\nlisten = \"127.0.0.1:0\"\nsuspend_after_refusals = 0\n",
    );
    let (code, stderr) = check_config(&gw.config);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:12: connectors.hl7v2.suspend_after_refusals: must be at least 1",
            gw.config.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_suspended_fhir_connector_holds_its_updates_until_resumed_through_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FhirServer::start(dir.path(), &[]);
    let jane = server.create_patient("M1", "Doe", "Jane", "1980-02-03");
    let id = jane["id"].as_str().expect("id").to_string();
    let broker = Broker::start(&dir.path().join("broker"));
    let consumer = Consumer::start(&broker, "clinic/test-clinic/#");
    let extra = format!(
        "{}\n[connectors.fhir]\nbase_url = \"{}\"\nidentifier_system = \"{MRN}\"\npoll_interval_s = 1\nrequest_timeout_ms = 2000\nconnect_timeout_ms = 500\n\n[destinations.ehr-fhir]\nbackoff_initial_ms = 100\nbackoff_max_ms = 400\n",
        relay_table(&broker),
        server.base()
    );
    let mut gw = Gateway::new(dir.path(), &extra);
    gw.start();
    let (status, body) = post(
        &gw.url("/api/v1/queues/general/check-in"),
        &json!({ "patient_ref": "M1" }),
    );
    assert_eq!(status, 201, "{body}");
    wait_state(&gw, "fhir", "healthy");

    publish(
        &broker,
        "clinic/test-clinic/commands/suspend-integration",
        r#"{"request_id":"sec-2","integration":"fhir"}"#,
    );
    wait_for("the command's reply", Duration::from_secs(30), || {
        consumer
            .snapshot()
            .into_iter()
            .find(|m| m.topic == "clinic/test-clinic/replies/suspend-integration")
    });
    wait_state(&gw, "fhir", "suspended");
    let (status, body) = post(
        &gw.url(&format!("/api/v1/fhir/patients/{id}/demographics")),
        &json!({ "fields": { "phone": "+41 44 000 00 00" }, "by": "desk-1" }),
    );
    assert_eq!(status, 202, "{body}");
    let backlog = gw.get_json("/api/v1/backlog");
    assert_eq!(
        backlog["destinations"]["ehr-fhir"]["pending"], 1,
        "{backlog}"
    );
    assert!(
        !server.log().iter().any(|l| l.starts_with("PUT")),
        "{:?}",
        server.log()
    );

    let (status, body) = post(&gw.url("/api/v1/integrations/fhir/resume"), &json!({}));
    assert_eq!(status, 200, "{body}");
    wait_for(
        "the update to reach the EHR",
        Duration::from_secs(30),
        || {
            let p = server.call("GET", &format!("/Patient/{id}"), None);
            (p["telecom"][0]["value"] == "+41 44 000 00 00").then_some(())
        },
    );
    wait_state(&gw, "fhir", "healthy");
    let (status, _) = post(&gw.url("/api/v1/integrations/fhir/resume"), &json!({}));
    assert_eq!(status, 404, "not suspended any more");
}

#[test]
fn only_an_admin_resumes_a_suspended_integration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let extra = format!(
        "[access]\nenabled = true\n\n[connectors.hl7v2]\nlisten = \"127.0.0.1:{port}\"\nsuspend_after_refusals = 1\n\n[[connectors.hl7v2.allow]]\naddress = \"10.0.0.0/8\"\n"
    );
    let mut gw = Gateway::new(dir.path(), &extra);
    gw.start();
    let key = |name: &str, scope: &str| {
        let out = gw.cli(&["key", "add", name, "--scope", scope]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("key (shown once; give it to the client):"))
            .expect("a key")
            .trim()
            .to_string()
    };
    let (admin, desk) = (key("ops-console", "admin"), key("kiosk", "queue"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let auth = |key: &str| format!("Bearer {key}");
    let answer = |r: Result<ureq::http::Response<ureq::Body>, ureq::Error>| {
        let mut r = r.expect("request");
        let status = r.status().as_u16();
        (
            status,
            r.body_mut().read_json::<Value>().unwrap_or(Value::Null),
        )
    };
    let get = |path: &str, key: &str| {
        answer(
            agent
                .get(gw.url(path))
                .header("authorization", auth(key))
                .call(),
        )
    };
    let post_with = |path: &str, key: &str| {
        answer(
            agent
                .post(gw.url(path))
                .header("authorization", auth(key))
                .send_json(json!({})),
        )
    };
    assert_eq!(refused_connection(port), 0);
    wait_for("the listener suspended", Duration::from_secs(30), || {
        let (_, actors) = get("/api/v1/actors", &admin);
        actors
            .as_array()?
            .iter()
            .any(|a| a["name"] == "hl7v2-mllp" && a["state"] == "suspended")
            .then_some(())
    });
    let resume = "/api/v1/integrations/hl7v2-mllp/resume";
    assert_eq!(post_with(resume, &desk).0, 403);
    assert_eq!(
        post_with(resume, &admin),
        (200, json!({ "resumed": "hl7v2-mllp" }))
    );
    let (_, rows) = get("/api/v1/audit?limit=50", &admin);
    let resumed = rows
        .as_array()
        .and_then(|r| r.iter().find(|r| r["action"] == "integration.resumed"))
        .cloned()
        .expect("the resumption audited");
    assert_eq!(resumed["actor"], "key:ops-console");
}
