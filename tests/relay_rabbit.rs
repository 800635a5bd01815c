//! The cloud relay against RabbitMQ's MQTT plugin on loopback (Debian's `rabbitmq-server`),
//! topic contract 1: the scenarios of `tests/relay.rs` on the other broker clinic groups run.
//!
//! The test that stops the broker has a node of its own; the others share one node per test
//! binary, each in a virtual host of its own.

mod common;

use common::rabbit::{Rabbit, Vhost, credentials};
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// How long every posted event may take to reach the consumer.
const ARRIVAL: Duration = Duration::from_secs(90);
/// How long a command's reply may take.
const REPLY: Duration = Duration::from_secs(30);

fn relay_state(gw: &Gateway) -> (String, String) {
    let actors = gw.get_json("/api/v1/actors");
    // A relay being replaced (a reload) is not listed until its successor starts.
    let Some(relay) = actors
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == "cloud-relay").cloned())
    else {
        return ("not listed".into(), String::new());
    };
    (
        relay["state"].as_str().unwrap_or("").into(),
        relay["last_error"].as_str().unwrap_or("").into(),
    )
}

/// A QoS 1 publish into `vhost`, as the cloud sends a command.
fn publish(node: &Rabbit, vhost: &Vhost, topic: &str, payload: &str) {
    let ok = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &node.port.to_string()])
        .args(vhost.login())
        .args(["-t", topic, "-m", payload, "-q", "1"])
        .status()
        .expect("mosquitto_pub")
        .success();
    assert!(ok);
}

/// A consumer in `vhost` with a persistent QoS 1 session, and a gateway relaying to the node's
/// plain listener in the same virtual host.
fn relayed_gateway(
    dir: &Path,
    node: &Rabbit,
    vhost: &Vhost,
    filter: &str,
    relay_extra: &str,
) -> (Consumer, Gateway) {
    let consumer = Consumer::on_port(node.port, filter, &vhost.login());
    let relay = format!("{}{relay_extra}", node.relay_table(dir, vhost));
    let mut gw = Gateway::new(dir, &relay);
    gw.start();
    (consumer, gw)
}

#[test]
fn relay_drains_in_key_order_after_rabbitmq_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Rabbit::start(&dir.path().join("rabbit"));
    let vhost = node.vhost();
    let (consumer, gw) =
        relayed_gateway(dir.path(), &node, &vhost, "clinic/test-clinic/events/#", "");
    let keys = ["patient-1", "patient-2", "patient-3"];
    let mut posted = BTreeSet::new();
    let mut post_range = |range: std::ops::Range<usize>| {
        for i in range {
            let (status, body) = gw.post_event(&numbered_event(i, "test.seq", keys[i % 3]));
            assert_eq!(status, 202, "{body}");
            posted.insert(i as u64);
        }
    };
    post_range(0..200);
    node.stop();
    post_range(200..400);
    wait_for(
        "the relay to notice the broker is gone",
        Duration::from_secs(30),
        || (relay_state(&gw).0 == "degraded").then_some(()),
    );
    let (_, error) = relay_state(&gw);
    assert!(!error.is_empty(), "a degraded relay says why");
    post_range(400..500);
    // The consumer's quorum queue outlives the node's restart, so what the relay publishes
    // before mosquitto_sub reconnects waits for it there.
    node.restart();
    post_range(500..600);
    let events = wait_all(&consumer, &posted, ARRIVAL);
    let queues = node.ctl(&[
        "list_queues",
        "-q",
        "-p",
        &vhost.name,
        "name",
        "type",
        "durable",
    ]);
    assert!(
        queues
            .lines()
            .any(|l| l.starts_with("mqtt-subscription-consumer-")
                && l.contains("quorum")
                && l.contains("true")),
        "the consumer's session is a durable quorum queue: {queues}"
    );
    for key in keys {
        let mut first_seen = Vec::new();
        let mut seen = BTreeSet::new();
        for e in events.iter().filter(|e| e["key"] == key) {
            let n = n_of(e).expect("n");
            if seen.insert(n) {
                first_seen.push(n);
            }
        }
        let mut sorted = first_seen.clone();
        sorted.sort_unstable();
        assert_eq!(first_seen, sorted, "events of {key} arrived out of order");
        assert_eq!(first_seen.len(), 200);
    }
    wait_for(
        "the relay to be healthy again",
        Duration::from_secs(30),
        || (relay_state(&gw).0 == "healthy").then_some(()),
    );
    let backlog = gw.get_json("/api/v1/backlog");
    assert_eq!(
        backlog["destinations"]["cloud"]["dead"]
            .as_u64()
            .unwrap_or(0),
        0,
        "{backlog}"
    );
}

/// RabbitMQ takes contract 1's dotted kinds, but it maps MQTT's `/` to AMQP's `.` and back, so
/// a `.` in a kind reaches MQTT subscribers as a level separator: `events/test.seq` arrives as
/// `events/test/seq`, which a filter `events/+` does not match. The envelope's `kind` is
/// unchanged, and the status topic is retained.
#[test]
fn rabbitmq_delivers_dotted_kinds_as_topic_levels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Rabbit::shared();
    let vhost = node.vhost();
    let (consumer, gw) = relayed_gateway(dir.path(), node, &vhost, "clinic/test-clinic/#", "");
    let levels = Consumer::on_port(node.port, "clinic/test-clinic/events/+", &vhost.login());
    assert_eq!(
        gw.post_event(&numbered_event(1, "test.seq", "patient-1")).0,
        202
    );
    wait_all(&consumer, &BTreeSet::from([1]), ARRIVAL);
    let topics: BTreeSet<String> = consumer
        .snapshot()
        .into_iter()
        .filter(|m| m.payload.contains("\"test.seq\""))
        .map(|m| m.topic)
        .collect();
    assert_eq!(
        topics,
        BTreeSet::from(["clinic/test-clinic/events/test/seq".to_string()])
    );
    let envelope = consumer
        .events()
        .into_iter()
        .find(|e| n_of(e) == Some(1))
        .expect("event 1");
    assert_eq!(envelope["kind"], "test.seq", "{envelope}");

    // A consumer arriving late still learns the gateway is online from the retained status.
    let late = Consumer::on_port(node.port, "clinic/test-clinic/status", &vhost.login());
    wait_for("the retained status", Duration::from_secs(20), || {
        late.snapshot()
            .iter()
            .any(|m| m.topic == "clinic/test-clinic/status" && m.payload == "online")
            .then_some(())
    });
    assert!(
        levels.events().is_empty(),
        "a one-level filter matched a dotted kind"
    );
}

#[test]
fn cloud_commands_come_down_and_replies_go_up_through_rabbitmq() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Rabbit::shared();
    let vhost = node.vhost();
    let (consumer, gw) = relayed_gateway(
        dir.path(),
        node,
        &vhost,
        "clinic/test-clinic/#",
        "max_message_bytes = 512\n",
    );
    let big = json!({ "source": "lab", "id": "big-1", "kind": "test.big", "key": "patient-9", "payload": { "n": 1000, "blob": "x".repeat(2000) } });
    assert_eq!(gw.post_event(&big).0, 202);
    assert_eq!(
        gw.post_event(&numbered_event(1, "test.seq", "patient-9")).0,
        202
    );
    wait_all(&consumer, &BTreeSet::from([1]), ARRIVAL);
    let out = gw.cli(&["dlq", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dead: Value = serde_json::from_slice(&out.stdout).expect("dlq JSON");
    assert_eq!(dead.as_array().map(Vec::len), Some(1), "{dead}");
    let row = dead[0]["id"].as_i64().expect("row id");

    let topic = |name: &str| format!("clinic/test-clinic/commands/{name}");
    publish(
        node,
        &vhost,
        &topic("dlq-replay"),
        r#"{"request_id":"bad-1","destination":"cloud"}"#,
    );
    let r = wait_reply(&consumer, Some("bad-1"), 0, REPLY).1;
    assert_eq!(r["ok"], false, "{r}");

    let text = std::fs::read_to_string(&gw.config)
        .expect("config")
        .replace("max_message_bytes = 512", "max_message_bytes = 65536");
    std::fs::write(&gw.config, text).expect("write config");
    publish(
        node,
        &vhost,
        &topic("reload-config"),
        r#"{"request_id":"reload-1"}"#,
    );
    let r = wait_reply(&consumer, Some("reload-1"), 0, REPLY).1;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["result"]["applied"], json!(["relay"]));
    // Healthy only once the broker acknowledged the command subscription.
    wait_for("the new relay", Duration::from_secs(30), || {
        (relay_state(&gw).0 == "healthy").then_some(())
    });
    publish(
        node,
        &vhost,
        &topic("dlq-replay"),
        &format!(r#"{{"request_id":"replay-1","destination":"cloud","id":{row}}}"#),
    );
    let r = wait_reply(&consumer, Some("replay-1"), 0, REPLY).1;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["result"]["replayed"], 1);
    wait_all(&consumer, &BTreeSet::from([1000]), ARRIVAL);
}

#[test]
fn relay_uses_mutual_tls_with_rabbitmq_and_reports_an_untrusted_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Rabbit::shared();
    let certs = Rabbit::shared_certs();
    let vhost = node.vhost();
    let tls_port = node.tls_port.expect("the shared node listens for TLS");
    let (ca, cert, key) = (
        certs.path("ca.crt").display().to_string(),
        certs.path("client.crt").display().to_string(),
        certs.path("client.key").display().to_string(),
    );
    let mut extra = vec!["--cafile", &ca, "--cert", &cert, "--key", &key];
    extra.extend(vhost.login());
    let consumer = Consumer::on_port(tls_port, "clinic/test-clinic/events/#", &extra);
    let tls = |dir: &Path, ca: &str| {
        format!(
            "[relay]\nhost = \"localhost\"\nport = {tls_port}\nreconnect_initial_ms = 100\nreconnect_max_ms = 500\n{}[relay.tls]\nca_file = \"{}\"\nclient_cert_file = \"{cert}\"\nclient_key_file = \"{key}\"\n",
            credentials(dir, &vhost),
            certs.path(ca).display(),
        )
    };
    let gdir = dir.path().join("good");
    std::fs::create_dir_all(&gdir).expect("mkdir");
    let mut gw = Gateway::new(&gdir, &tls(&gdir, "ca.crt"));
    gw.start();
    assert_eq!(
        gw.post_event(&numbered_event(7, "test.seq", "patient-1")).0,
        202
    );
    wait_all(&consumer, &BTreeSet::from([7]), ARRIVAL);

    let bad_dir = dir.path().join("bad");
    std::fs::create_dir_all(&bad_dir).expect("mkdir");
    let mut bad = Gateway::new(&bad_dir, &tls(&bad_dir, "other-ca.crt"));
    bad.start();
    assert_eq!(
        bad.post_event(&numbered_event(8, "test.seq", "patient-1"))
            .0,
        202
    );
    let error = wait_for(
        "the relay to refuse the broker",
        Duration::from_secs(30),
        || {
            let (state, error) = relay_state(&bad);
            (state == "degraded").then_some(error)
        },
    );
    assert!(
        error.to_lowercase().contains("certificate") || error.contains("UnknownIssuer"),
        "{error}"
    );
    let held = bad.get_json("/api/v1/backlog")["destinations"]["cloud"].clone();
    assert!(held["pending"].as_u64() >= Some(1), "{held}");
    assert_eq!(held["dead"], 0, "{held}");
    assert_eq!(
        gw.post_event(&numbered_event(9, "test.seq", "patient-1")).0,
        202
    );
    wait_all(&consumer, &BTreeSet::from([7, 9]), ARRIVAL);
    assert!(
        consumer.events().iter().all(|e| n_of(e) != Some(8)),
        "nothing goes to an untrusted broker"
    );
}
