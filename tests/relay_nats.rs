//! The cloud relay against a real NATS server (JetStream and its MQTT listener) on loopback:
//! MQTT 3.1.1, QoS 1, as a clinic group's cloud runs it.

mod common;

use common::nats::Nats;
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// How long every posted event may take to reach the consumer.
const ARRIVAL: Duration = Duration::from_secs(120);
/// How long a command's reply may take.
const REPLY: Duration = Duration::from_secs(60);
/// A phase of the poison-row test under contract 1 (see there).
const PHASE: Duration = Duration::from_secs(180);

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
/// Under contract 1 every reconnection adds dotted rows of its own (the relay's state
/// changes), each costing three drops, so the first phase is given minutes on a loaded machine.
#[test]
fn a_refused_topic_is_dead_lettered_and_arrives_after_the_move_to_contract_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = Nats::start(&dir.path().join("nats"));
    let consumer = Consumer::on_port(nats.port, "clinic/#", &[]);
    let gw = gateway(dir.path(), &relay_to(nats.port, ""));
    // A kind without a dot has a contract 1 topic NATS takes: it flows past the poison rows.
    assert_eq!(
        gw.post_event(&numbered_event(1, "testseq", "patient-1")).0,
        202
    );
    wait_for("the event without a dot", PHASE, || {
        consumer
            .events()
            .iter()
            .any(|e| n_of(e) == Some(1))
            .then_some(())
    });
    let started = wait_for("gateway.started to be dead-lettered", PHASE, || {
        dead_letters(&gw)
            .into_iter()
            .find(|d| d["kind"] == "gateway.started")
    });
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

    // Staff move the gateway to contract 2 and reload (SIGHUP: under contract 1 every dotted
    // event, the relay's own state changes among them, closes the connection again, so a
    // command's reply may be lost with it); the cloud then replays the dead letters.
    let text = std::fs::read_to_string(&gw.config)
        .expect("config")
        .replace(
            "keep_alive_secs = 5\n",
            "keep_alive_secs = 5\ncontract = 2\n",
        );
    std::fs::write(&gw.config, text).expect("write config");
    gw.signal("HUP");
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
    let (topic, r) = wait_reply(&consumer, Some("replay-1"), 0, REPLY);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(topic, "clinic/v2/test-clinic/replies/dlq-replay");
    let arrived = wait_for("the replayed gateway.started", PHASE, || {
        consumer
            .snapshot()
            .into_iter()
            .find(|m| m.topic == "clinic/v2/test-clinic/events/gateway/started")
    });
    let e: Value = serde_json::from_str(&arrived.payload).expect("envelope");
    assert_eq!(e["kind"], "gateway.started");
    assert_eq!(e["id"], started["event_id"]);
    wait_for("no dead letter left", PHASE, || {
        dead_letters(&gw).is_empty().then_some(())
    });
    assert_eq!(relay_state(&gw), "healthy");
}

/// Each key's events arrived in order (first arrivals), `per_key` of each.
fn assert_key_order(events: &[Value], keys: &[&str], per_key: usize) {
    for key in keys {
        let mut first_seen = Vec::new();
        let mut seen = BTreeSet::new();
        for e in events.iter().filter(|e| e["key"] == *key) {
            let n = n_of(e).expect("n");
            if seen.insert(n) {
                first_seen.push(n);
            }
        }
        let mut sorted = first_seen.clone();
        sorted.sort_unstable();
        assert_eq!(first_seen, sorted, "events of {key} arrived out of order");
        assert_eq!(first_seen.len(), per_key, "{key}");
    }
}

#[test]
fn relay_drains_to_nats_in_key_order_after_a_server_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nats = Nats::start(&dir.path().join("nats"));
    let consumer = Consumer::on_port(nats.port, "clinic/v2/test-clinic/events/#", &[]);
    let gw = gateway(dir.path(), &relay_to(nats.port, "contract = 2\n"));
    let keys = ["patient-1", "patient-2", "patient-3"];
    let mut posted = BTreeSet::new();
    let mut post_range = |range: std::ops::Range<usize>| {
        for i in range {
            let (status, body) = gw.post_event(&numbered_event(i, "queue.checked_in", keys[i % 3]));
            assert_eq!(status, 202, "{body}");
            posted.insert(i as u64);
        }
    };
    post_range(0..150);
    // The server is stopped once these arrived: what this test shows is the relay holding and
    // then draining what it could not send, not the server's handling of its own shutdown.
    wait_all(&consumer, &(0..150).collect(), ARRIVAL);
    nats.stop();
    post_range(150..300);
    wait_for(
        "the relay to notice the server is gone",
        Duration::from_secs(30),
        || (relay_state(&gw) == "degraded").then_some(()),
    );
    nats.restart();
    post_range(300..450);
    let events = wait_all(&consumer, &posted, ARRIVAL);
    assert_key_order(&events, &keys, 150);
    assert!(
        consumer
            .snapshot()
            .iter()
            .filter(|m| m.payload.contains("\"queue.checked_in\""))
            .all(|m| m.topic == "clinic/v2/test-clinic/events/queue/checked_in"),
        "contract 2 topics"
    );
    wait_for(
        "the relay to be healthy again",
        Duration::from_secs(30),
        || (relay_state(&gw) == "healthy").then_some(()),
    );
    let backlog = gw.get_json("/api/v1/backlog");
    let dead = &backlog["destinations"]["cloud"]["dead"];
    assert_eq!(dead.as_u64().unwrap_or(0), 0, "{backlog}");
}

#[test]
fn relay_reaches_nats_over_mutual_tls_and_answers_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cdir = dir.path().join("certs");
    std::fs::create_dir_all(&cdir).expect("mkdir");
    let certs = Certs::generate(&cdir);
    let nats = Nats::start_tls(&dir.path().join("nats"), &certs);
    let file = |name: &str| certs.path(name).display().to_string();
    let tls_args = [
        "--cafile",
        &file("ca.crt"),
        "--cert",
        &file("client.crt"),
        "--key",
        &file("client.key"),
    ];
    let consumer = Consumer::on_port(nats.port, "clinic/v2/test-clinic/#", &tls_args);
    let relay = format!(
        "[relay]\nhost = \"localhost\"\nport = {}\nreconnect_initial_ms = 100\nreconnect_max_ms = 500\ncontract = 2\n\
         [relay.tls]\nca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
        nats.port,
        file("ca.crt"),
        file("client.crt"),
        file("client.key")
    );
    let gw = gateway(dir.path(), &relay);
    assert_eq!(
        gw.post_event(&numbered_event(7, "queue.called", "patient-1"))
            .0,
        202
    );
    wait_all(&consumer, &BTreeSet::from([7]), ARRIVAL);

    let command = |name: &str, payload: &str| {
        let ok = Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &nats.port.to_string(),
                "-V",
                "mqttv311",
            ])
            .args(["-t", &format!("clinic/v2/test-clinic/commands/{name}")])
            .args(["-m", payload, "-q", "1"])
            .args(tls_args)
            .status()
            .expect("mosquitto_pub")
            .success();
        assert!(ok);
    };
    command(
        "dlq-replay",
        r#"{"request_id":"tls-1","destination":"cloud","all":true}"#,
    );
    let (topic, r) = wait_reply(&consumer, Some("tls-1"), 0, REPLY);
    assert_eq!(topic, "clinic/v2/test-clinic/replies/dlq-replay");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["result"]["replayed"], 0);
    command("reload-config", r#"{"request_id":"tls-2","force":true}"#);
    let (_, r) = wait_reply(&consumer, Some("tls-2"), 0, REPLY);
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["error"].as_str().unwrap_or("").contains("unknown field"),
        "{r}"
    );
    assert!(
        consumer
            .snapshot()
            .iter()
            .any(|m| m.topic == "clinic/v2/test-clinic/status" && m.payload == "online"),
        "the retained status"
    );
}

/// A two-node NATS cluster with JetStream replicas 2: the node the relay publishes to is killed
/// mid-drain. The relay turns to the other node (`relay.hosts`), which refuses sessions while its
/// streams have no quorum (two replicas need both nodes); every event waits in the journal, none
/// is dead-lettered, and all of them arrive once the node is back. Key order is not asserted
/// here: NATS redelivers a message its consumer had in hand when the node died after the ones
/// behind it (JetStream's redelivery after its ack wait), which no publisher can prevent.
#[test]
fn a_cluster_node_killed_mid_drain_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut a, b) = Nats::cluster(&dir.path().join("nats"));
    let consumer = Consumer::on_port(b.port, "clinic/v2/test-clinic/events/#", &[]);
    let gw = gateway(
        dir.path(),
        &relay_to(
            a.port,
            &format!("contract = 2\nhosts = [\"127.0.0.1:{}\"]\n", b.port),
        ),
    );
    let keys = ["patient-1", "patient-2", "patient-3", "patient-4"];
    let url = gw.url("/api/v1/events");
    let total = 800;
    let producer = std::thread::spawn(move || {
        for i in 0..total {
            let (status, body) = post(&url, &numbered_event(i, "queue.called", keys[i % 4]));
            assert_eq!(status, 202, "{body}");
        }
    });
    wait_for("part of the drain", Duration::from_secs(60), || {
        (consumer.events().len() >= 100).then_some(())
    });
    a.kill();
    producer.join().expect("producer");
    wait_for(
        "the relay to turn to the other node",
        Duration::from_secs(60),
        || b.log().contains("clinic-gateway-test-clinic").then_some(()),
    );
    let held = gw.get_json("/api/v1/backlog")["destinations"]["cloud"].clone();
    assert_eq!(held["dead"].as_u64().unwrap_or(0), 0, "{held}");
    a.restart();
    let expected: BTreeSet<u64> = (0..total as u64).collect();
    wait_all(&consumer, &expected, ARRIVAL);
    let backlog = gw.get_json("/api/v1/backlog");
    let dead = &backlog["destinations"]["cloud"]["dead"];
    assert_eq!(dead.as_u64().unwrap_or(0), 0, "{backlog}");
}
