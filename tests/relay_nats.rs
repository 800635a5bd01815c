//! The cloud relay against a real NATS server (JetStream and its MQTT listener) on loopback:
//! MQTT 3.1.1, QoS 1, as a clinic group's cloud runs it.

mod common;

use common::nats::Nats;
use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn event(i: usize, kind: &str, key: &str) -> Value {
    json!({ "source": "kiosk-1", "id": format!("e{i}"), "kind": kind, "key": key, "payload": { "n": i } })
}

fn n_of(e: &Value) -> Option<u64> {
    e["payload"]["n"].as_u64()
}

/// The `[relay]` table for a plain NATS MQTT listener, with fast reconnects.
fn relay_to(port: u16, extra: &str) -> String {
    format!(
        "[relay]\nhost = \"127.0.0.1\"\nport = {port}\nreconnect_initial_ms = 100\nreconnect_max_ms = 500\nkeep_alive_secs = 5\n{extra}"
    )
}

fn gateway(dir: &Path, relay: &str) -> Gateway {
    let gdir = dir.join("gateway");
    std::fs::create_dir_all(&gdir).expect("mkdir");
    let mut gw = Gateway::new(&gdir, relay);
    gw.start();
    gw
}

fn relay_state(gw: &Gateway) -> String {
    gw.get_json("/api/v1/actors")
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == "cloud-relay").cloned())
        .map(|r| r["state"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

/// Publishes a command the way the cloud does, QoS 1, MQTT 3.1.1.
fn publish(port: u16, topic: &str, payload: &str) {
    let ok = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "mqttv311"])
        .args(["-t", topic, "-m", payload, "-q", "1"])
        .status()
        .expect("mosquitto_pub")
        .success();
    assert!(ok);
}

fn wait_reply(consumer: &Consumer, request_id: &str) -> (String, Value) {
    wait_for("a command reply", Duration::from_secs(30), || {
        consumer.snapshot().into_iter().find_map(|m| {
            let r: Value = serde_json::from_str(&m.payload).ok()?;
            (m.topic.contains("/replies/") && r["request_id"] == request_id).then_some((m.topic, r))
        })
    })
}

fn dead_letters(gw: &Gateway) -> Vec<Value> {
    let out = gw.cli(&["dlq", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .expect("dlq JSON")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// NATS closes the connection on a contract 1 topic with a '.' in it. The row is recognised as
/// poison after three such drops and dead-lettered with the reason, the rest of the backlog
/// flows past it, and once the gateway is moved to contract 2 the replayed row arrives.
#[test]
fn a_refused_topic_is_dead_lettered_and_arrives_after_the_move_to_contract_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = Nats::start(&dir.path().join("nats"));
    let consumer = Consumer::start_on(nats.port, "clinic/#", &[]);
    let gw = gateway(dir.path(), &relay_to(nats.port, ""));
    // A kind without a dot has a contract 1 topic NATS takes: it flows past the poison rows.
    assert_eq!(gw.post_event(&event(1, "testseq", "patient-1")).0, 202);
    wait_for("the event without a dot", Duration::from_secs(60), || {
        consumer
            .events()
            .iter()
            .any(|e| n_of(e) == Some(1))
            .then_some(())
    });
    let started = wait_for(
        "gateway.started to be dead-lettered",
        Duration::from_secs(60),
        || {
            dead_letters(&gw)
                .into_iter()
                .find(|d| d["kind"] == "gateway.started")
        },
    );
    let reason = started["last_error"].as_str().unwrap_or("");
    assert!(
        reason.contains("the broker closed the connection after this publish 3 times"),
        "{started}"
    );
    assert!(
        nats.log()
            .contains("characters ' ' and '.' not supported for MQTT topics"),
        "the broker refused the topic"
    );
    let backlog = gw.get_json("/api/v1/backlog");
    assert!(
        backlog["destinations"]["cloud"]["dead"].as_u64() >= Some(1),
        "{backlog}"
    );
    assert!(
        consumer
            .events()
            .iter()
            .all(|e| e["kind"] != "gateway.started"),
        "nothing under a refused topic arrived"
    );

    // Staff move the gateway to contract 2 and reload; the cloud replays the dead letters.
    let text = std::fs::read_to_string(&gw.config)
        .expect("config")
        .replace(
            "keep_alive_secs = 5\n",
            "keep_alive_secs = 5\ncontract = 2\n",
        );
    std::fs::write(&gw.config, text).expect("write config");
    publish(
        nats.port,
        "clinic/test-clinic/commands/reload-config",
        r#"{"request_id":"reload-1"}"#,
    );
    let (topic, r) = wait_reply(&consumer, "reload-1");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(topic, "clinic/test-clinic/replies/reload-config");
    wait_for("the contract 2 relay", Duration::from_secs(30), || {
        consumer
            .snapshot()
            .iter()
            .any(|m| m.topic == "clinic/v2/test-clinic/status" && m.payload == "online")
            .then_some(())
    });
    publish(
        nats.port,
        "clinic/v2/test-clinic/commands/dlq-replay",
        r#"{"request_id":"replay-1","destination":"cloud","all":true}"#,
    );
    let (topic, r) = wait_reply(&consumer, "replay-1");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(topic, "clinic/v2/test-clinic/replies/dlq-replay");
    let arrived = wait_for(
        "the replayed gateway.started",
        Duration::from_secs(60),
        || {
            consumer
                .snapshot()
                .into_iter()
                .find(|m| m.topic == "clinic/v2/test-clinic/events/gateway/started")
        },
    );
    let e: Value = serde_json::from_str(&arrived.payload).expect("envelope");
    assert_eq!(e["kind"], "gateway.started");
    assert_eq!(e["id"], started["event_id"]);
    wait_for("no dead letter left", Duration::from_secs(60), || {
        dead_letters(&gw).is_empty().then_some(())
    });
    assert_eq!(relay_state(&gw), "healthy");
}
