//! The cloud relay against a real Mosquitto on loopback.

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

/// How long every posted event may take to reach the consumer.
const ARRIVAL: Duration = Duration::from_secs(90);
/// How long a command's reply may take.
const REPLY: Duration = Duration::from_secs(20);

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

fn publish(broker: &Broker, topic: &str, payload: &str) {
    let ok = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port.to_string(),
            "-t",
            topic,
            "-m",
            payload,
            "-q",
            "1",
        ])
        .status()
        .expect("mosquitto_pub")
        .success();
    assert!(ok);
}

/// A relayed gateway whose relay is online (an event went through), carrying out a
/// `fault-stall` of `ms` sent under `request_id`.
#[cfg(feature = "fault-hooks")]
fn stalling(dir: &std::path::Path, request_id: &str, ms: u64) -> (Broker, Consumer, Gateway) {
    let (broker, consumer, gw) = relayed_gateway(dir, "clinic/test-clinic/#", "");
    stall(&broker, &consumer, &gw, request_id, ms);
    (broker, consumer, gw)
}

/// Waits until the relay is online, then until a `fault-stall` of `ms` sent under
/// `request_id` is under way.
#[cfg(feature = "fault-hooks")]
fn stall(broker: &Broker, consumer: &Consumer, gw: &Gateway, request_id: &str, ms: u64) {
    assert_eq!(
        gw.post_event(&numbered_event(0, "test.seq", "patient-0")).0,
        202
    );
    wait_all(consumer, &BTreeSet::from([0]), ARRIVAL);
    publish(
        broker,
        "clinic/test-clinic/commands/fault-stall",
        &format!(r#"{{"request_id":"{request_id}","ms":{ms}}}"#),
    );
    wait_for("the stall under way", Duration::from_secs(20), || {
        gw.log_text()
            .contains("cloud command under way")
            .then_some(())
    });
}

/// As [`relayed_gateway`], the relay reaching the broker through an [`Uplink`].
fn uplinked(
    dir: &std::path::Path,
    filter: &str,
    extra: &str,
) -> (Broker, Consumer, Uplink, Gateway) {
    let broker = Broker::start(&dir.join("broker"));
    let consumer = Consumer::start(&broker, filter);
    let uplink = Uplink::start(broker.port);
    let mut gw = Gateway::new(dir, &format!("{}{extra}", relay_table_on(uplink.port)));
    gw.start();
    (broker, consumer, uplink, gw)
}

/// Cuts the uplink and waits until the relay has seen it go.
fn cut(uplink: &mut Uplink, gw: &Gateway) {
    uplink.cut();
    wait_for(
        "the relay to see the link gone",
        Duration::from_secs(20),
        || (relay_state(gw).0 == "degraded").then_some(()),
    );
}

/// Waits until the relay has taken `n` commands (kept them, or answered them at once).
#[cfg(feature = "fault-hooks")]
fn wait_commands_taken(gw: &Gateway, n: usize) {
    let line = format!("clinic_gateway_commands_received_total {n}\n");
    wait_for(
        "the relay to take the commands",
        Duration::from_secs(20),
        || {
            let metrics = ureq::get(&gw.url("/metrics"))
                .call()
                .ok()?
                .body_mut()
                .read_to_string()
                .ok()?;
            metrics.contains(&line).then_some(())
        },
    );
}

#[test]
fn relay_drains_in_key_order_after_broker_restart() {
    drains_in_key_order_after_broker_restart("");
}

#[test]
fn relay_drains_in_key_order_after_broker_restart_over_mqtt_5() {
    drains_in_key_order_after_broker_restart("protocol = \"5\"\n");
}

/// 600 events of three keys, a third of them posted while the broker is down, all arrive in
/// each key's order; `relay_extra` is added to `[relay]`.
fn drains_in_key_order_after_broker_restart(relay_extra: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut broker, consumer, gw) =
        relayed_gateway(dir.path(), "clinic/test-clinic/events/#", relay_extra);
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
    broker.stop();
    // Events keep coming while the cloud is unreachable; they are acknowledged from the journal.
    post_range(200..400);
    wait_for(
        "the relay to notice the broker is gone",
        Duration::from_secs(20),
        || (relay_state(&gw).0 == "degraded").then_some(()),
    );
    let (_, error) = relay_state(&gw);
    assert!(!error.is_empty(), "a degraded relay says why");
    post_range(400..500);
    broker.restart();
    post_range(500..600);
    let events = wait_all(&consumer, &posted, ARRIVAL);
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
        Duration::from_secs(20),
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

/// A connection lost with two windows claimed (the broker frozen, nothing acknowledged, then
/// the uplink cut) is the connection's failure, not the rows': they go back in line at once
/// with their attempts given back. Only the oldest written and unanswered (the one a broker
/// closing on a publish would have closed on) counts one. With one attempt allowed and a
/// ten-minute backoff, that row alone may become a dead letter; every other event arrives once
/// the uplink is back, and the dead one when replayed.
#[test]
fn a_lost_connection_costs_its_rows_in_flight_no_attempt_but_the_one_it_dropped_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, consumer, mut uplink, gw) = uplinked(
        dir.path(),
        "clinic/test-clinic/events/#",
        "inflight_window = 20\n[destinations.cloud]\nmax_attempts = 1\nbackoff_initial_ms = 600000\nbackoff_max_ms = 600000\n",
    );
    let healthy = |gw: &Gateway| (relay_state(gw).0 == "healthy").then_some(());
    wait_for("the relay to connect", Duration::from_secs(20), || {
        healthy(&gw)
    });
    broker.freeze();
    let keys = ["patient-1", "patient-2", "patient-3"];
    for i in 0..100 {
        let (status, body) = gw.post_event(&numbered_event(i, "test.seq", keys[i % 3]));
        assert_eq!(status, 202, "{body}");
    }
    let in_flight = |gw: &Gateway| {
        gw.get_json("/api/v1/backlog")["destinations"]["cloud"]["in_flight"]
            .as_u64()
            .unwrap_or(0)
    };
    // More than a window claimed: part of it never left the gateway.
    wait_for("two windows in flight", Duration::from_secs(20), || {
        (in_flight(&gw) > 20).then_some(())
    });
    cut(&mut uplink, &gw);
    broker.thaw();
    uplink.restore();
    let posted: BTreeSet<u64> = (0..100).collect();
    wait_for("every event but at most one", ARRIVAL, || {
        let seen: BTreeSet<u64> = consumer.events().iter().filter_map(n_of).collect();
        (posted.difference(&seen).count() <= 1).then_some(())
    });
    let dead = dead_letters(&gw);
    let dead = dead.as_array().expect("dead letters");
    assert!(dead.len() <= 1, "only the row dropped on counts: {dead:?}");
    if let Some(row) = dead.first() {
        let id = row["id"].to_string();
        let out = gw.cli(&["dlq", "replay", "--destination", "cloud", "--id", &id]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    wait_all(&consumer, &posted, ARRIVAL);
    wait_for(
        "the relay to be healthy again",
        Duration::from_secs(20),
        || healthy(&gw),
    );
}

#[test]
fn acked_items_survive_kill_9_and_reach_the_consumer_once_per_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, consumer, mut gw) =
        relayed_gateway(dir.path(), "clinic/test-clinic/events/#", "");
    let url = gw.url("/api/v1/events");
    let acked = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::<u64, String>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (acked, stop, url) = (acked.clone(), stop.clone(), url.clone());
        std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && i < 20_000 {
                let (status, body) = post(
                    &url,
                    &numbered_event(i, "test.seq", &format!("patient-{}", i % 7)),
                );
                if status == 202 {
                    acked
                        .lock()
                        .expect("lock")
                        .insert(i as u64, body["event_id"].as_str().unwrap_or("").into());
                }
                i += 1;
            }
        })
    };
    wait_for(
        "a few hundred acknowledged items",
        Duration::from_secs(60),
        || (acked.lock().expect("lock").len() >= 400).then_some(()),
    );
    gw.kill9();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    producer.join().expect("producer");
    let acked = acked.lock().expect("lock").clone();
    gw.start();
    // A resend of an acknowledged id after the crash is recognised, not processed again.
    let (&last, last_event) = acked.iter().next_back().expect("some acked");
    let (status, body) = gw.post_event(&numbered_event(
        last as usize,
        "test.seq",
        &format!("patient-{}", last % 7),
    ));
    assert_eq!(status, 202);
    assert_eq!(body["duplicate"], true);
    assert_eq!(body["event_id"].as_str(), Some(last_event.as_str()));

    let expected: BTreeSet<u64> = acked.keys().copied().collect();
    let events = wait_all(&consumer, &expected, ARRIVAL);
    let mut ids_per_n: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for e in &events {
        if let Some(n) = n_of(e) {
            ids_per_n
                .entry(n)
                .or_default()
                .insert(e["id"].as_str().unwrap_or("").into());
        }
    }
    for (n, event_id) in &acked {
        let ids = &ids_per_n[n];
        assert_eq!(
            ids.len(),
            1,
            "item {n} was processed more than once: {ids:?}"
        );
        assert!(
            ids.contains(event_id),
            "item {n} arrived under another event id"
        );
    }
    let distinct: BTreeSet<&String> = ids_per_n.values().flatten().collect();
    assert_eq!(distinct.len(), ids_per_n.len(), "one event id per item");
}

#[test]
fn dead_letter_is_replayed_by_cloud_command_after_a_config_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, consumer, gw) = relayed_gateway(
        dir.path(),
        "clinic/test-clinic/#",
        "max_message_bytes = 512\n",
    );
    let big = json!({ "source": "lab", "id": "big-1", "kind": "test.big", "key": "patient-9", "payload": { "n": 1000, "blob": "x".repeat(2000) } });
    assert_eq!(gw.post_event(&big).0, 202);
    assert_eq!(
        gw.post_event(&numbered_event(1, "test.seq", "patient-9")).0,
        202
    );
    assert_eq!(
        gw.post_event(&numbered_event(2, "test.seq", "patient-8")).0,
        202
    );
    // The oversized head is dead-lettered at once; its key and the others keep flowing.
    wait_all(&consumer, &BTreeSet::from([1, 2]), ARRIVAL);
    let out = gw.cli(&["dlq", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dead: Value = serde_json::from_slice(&out.stdout).expect("dlq JSON");
    assert_eq!(dead.as_array().map(Vec::len), Some(1), "{dead}");
    assert_eq!(dead[0]["kind"], "test.big");
    assert!(
        dead[0]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("max_message_bytes"),
        "{dead}"
    );
    let row = dead[0]["id"].as_i64().expect("row id");

    // Bad commands are refused with a reply and audited.
    let topic = |name: &str| format!("clinic/test-clinic/commands/{name}");
    publish(
        &broker,
        &topic("dlq-replay"),
        r#"{"request_id":"bad-1","destination":"cloud"}"#,
    );
    let r = wait_reply(&consumer, Some("bad-1"), 0, REPLY).1;
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap_or("").contains("\"id\""), "{r}");
    publish(&broker, &topic("reload-config"), "not json");
    let r = wait_reply(&consumer, None, 0, REPLY).1;
    assert_eq!(r["ok"], false);
    assert!(
        r["error"].as_str().unwrap_or("").contains("not JSON"),
        "{r}"
    );

    // Staff raise the limit; the cloud reloads the config and replays the dead letter.
    let text = std::fs::read_to_string(&gw.config)
        .expect("config")
        .replace("max_message_bytes = 512", "max_message_bytes = 65536");
    std::fs::write(&gw.config, text).expect("write config");
    publish(
        &broker,
        &topic("reload-config"),
        r#"{"request_id":"reload-1"}"#,
    );
    let r = wait_reply(&consumer, Some("reload-1"), 0, REPLY).1;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["result"]["applied"], json!(["relay"]));
    wait_for("the new relay", Duration::from_secs(20), || {
        (relay_state(&gw).0 == "healthy").then_some(())
    });
    publish(
        &broker,
        &topic("dlq-replay"),
        &format!(r#"{{"request_id":"replay-1","destination":"cloud","id":{row}}}"#),
    );
    let r = wait_reply(&consumer, Some("replay-1"), 0, REPLY).1;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["result"]["replayed"], 1);
    wait_all(&consumer, &BTreeSet::from([1000]), ARRIVAL);

    let audit = audit_log(&gw);
    for expected in [
        ("cloud:replay-1", "dlq-replay"),
        ("gateway", "config-reload"),
        ("cloud", "command-refused"),
        ("cloud", "command"),
    ] {
        assert!(
            audit
                .iter()
                .any(|(action, actor, _)| actor == expected.0 && action == expected.1),
            "audit lacks {expected:?}: {audit:?}"
        );
    }
}

#[test]
fn relay_uses_mutual_tls_and_reports_an_untrusted_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cdir = dir.path().join("certs");
    let bdir = dir.path().join("broker");
    std::fs::create_dir_all(&cdir).expect("mkdir");
    let certs = Certs::generate(&cdir);
    let broker = Broker::start_tls(&bdir, &certs, true);
    let consumer = Consumer::start_with(
        &broker,
        "clinic/test-clinic/events/#",
        &[
            "--cafile",
            &certs.path("ca.crt").display().to_string(),
            "--cert",
            &certs.path("client.crt").display().to_string(),
            "--key",
            &certs.path("client.key").display().to_string(),
        ],
    );
    let tls = |ca: &str| {
        format!(
            "[relay]\nhost = \"localhost\"\nport = {}\nreconnect_initial_ms = 100\nreconnect_max_ms = 500\n[relay.tls]\nca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
            broker.port,
            certs.path(ca).display(),
            certs.path("client.crt").display(),
            certs.path("client.key").display()
        )
    };
    let gdir = dir.path().join("good");
    std::fs::create_dir_all(&gdir).expect("mkdir");
    let mut gw = Gateway::new(&gdir, &tls("ca.crt"));
    gw.start();
    assert_eq!(
        gw.post_event(&numbered_event(7, "test.seq", "patient-1")).0,
        202
    );
    wait_all(&consumer, &BTreeSet::from([7]), ARRIVAL);

    let bad_dir = dir.path().join("bad");
    std::fs::create_dir_all(&bad_dir).expect("mkdir");
    let mut bad = Gateway::new(&bad_dir, &tls("other-ca.crt"));
    bad.start();
    assert_eq!(
        bad.post_event(&numbered_event(8, "test.seq", "patient-1"))
            .0,
        202
    );
    let error = wait_for(
        "the relay to refuse the broker",
        Duration::from_secs(20),
        || {
            let (state, error) = relay_state(&bad);
            (state == "degraded").then_some(error)
        },
    );
    assert!(
        error.to_lowercase().contains("certificate") || error.contains("UnknownIssuer"),
        "{error}"
    );
    // The event is still held, unacknowledged, and the consumer is live: an event through the
    // trusted gateway after the refusal arrives while 8 never does.
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

/// A cloud command that takes seconds runs beside the connection: a backlog posted while it is
/// under way drains before its reply, and a command received after it is answered after it.
#[cfg(feature = "fault-hooks")]
#[test]
fn a_slow_command_does_not_hold_back_the_backlog() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, consumer, gw) = stalling(dir.path(), "slow-1", 20_000);
    let topic = |name: &str| format!("clinic/test-clinic/commands/{name}");
    publish(
        &broker,
        &topic("dlq-replay"),
        r#"{"request_id":"after-1","destination":"cloud","all":true}"#,
    );
    let backlog: BTreeSet<u64> = (1..=200).collect();
    for &n in &backlog {
        let (status, body) = gw.post_event(&numbered_event(
            n as usize,
            "test.seq",
            &format!("patient-{}", n % 5),
        ));
        assert_eq!(status, 202, "{body}");
    }
    wait_all(&consumer, &backlog, ARRIVAL);
    let replies = |c: &Consumer| {
        c.snapshot()
            .into_iter()
            .filter(|m| m.topic.contains("/replies/"))
            .map(|m| serde_json::from_str::<Value>(&m.payload).expect("reply JSON"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        replies(&consumer),
        Vec::<Value>::new(),
        "the backlog drained while the slow command was still under way"
    );
    let answered = wait_for("both replies", Duration::from_secs(60), || {
        let r = replies(&consumer);
        (r.len() >= 2).then_some(r)
    });
    assert_eq!(answered[0]["request_id"], "slow-1", "{answered:?}");
    assert_eq!(answered[0]["ok"], true, "{answered:?}");
    assert_eq!(answered[1]["request_id"], "after-1", "{answered:?}");
    assert_eq!(answered[1]["ok"], true, "{answered:?}");
}

/// A command is kept before the broker is told it arrived: one taken while another ran is
/// carried out after a kill -9; the one that was running is answered that its outcome is
/// unknown, not run again; and a command sent again under its `request_id` is answered with
/// the kept reply, not run twice.
#[cfg(feature = "fault-hooks")]
#[test]
fn a_command_acknowledged_before_a_kill_9_is_carried_out_after_it_and_once_per_request_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, consumer, mut gw) = stalling(dir.path(), "stall-1", 600_000);
    let topic = |name: &str| format!("clinic/test-clinic/commands/{name}");
    let suspend =
        r#"{"request_id":"suspend-1","integration":"fhir","reason":"a leaked certificate"}"#;
    publish(&broker, &topic("suspend-integration"), suspend);
    wait_commands_taken(&gw, 2);
    gw.kill9();
    gw.start();

    let first = wait_reply(&consumer, Some("suspend-1"), 0, REPLY).1;
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first["result"]["already"], false, "{first}");
    let stall = wait_reply(&consumer, Some("stall-1"), 0, REPLY).1;
    assert_eq!(stall["ok"], false, "{stall}");
    assert!(
        stall["error"].as_str().unwrap_or("").contains("unknown"),
        "{stall}"
    );
    publish(&broker, &topic("suspend-integration"), suspend);
    let again = wait_reply(&consumer, Some("suspend-1"), 1, REPLY).1;
    assert_eq!(again, first, "answered with the kept reply, not run again");
    publish(
        &broker,
        &topic("dlq-replay"),
        r#"{"request_id":"suspend-1","destination":"cloud","all":true}"#,
    );
    let reused = wait_reply(&consumer, Some("suspend-1"), 2, REPLY).1;
    assert_eq!(reused["ok"], false, "{reused}");
    assert!(
        reused["error"]
            .as_str()
            .unwrap_or("")
            .contains("earlier suspend-integration"),
        "{reused}"
    );
    let runs = audit_log(&gw)
        .into_iter()
        .filter(|(action, _, detail)| action == "command" && detail.contains("suspend-1"))
        .count();
    assert_eq!(runs, 1, "suspend-1 carried out once");
}

/// A reply is kept before it is published and sent again at the next start until the broker
/// acknowledges it: one finished while the broker was down, its gateway then killed, still
/// reaches the cloud.
#[cfg(feature = "fault-hooks")]
#[test]
fn a_reply_the_broker_never_acknowledged_is_sent_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut broker, consumer, mut gw) = stalling(dir.path(), "slow-1", 3000);
    broker.stop();
    wait_for("the stall done", Duration::from_secs(20), || {
        gw.log_text()
            .contains("cloud command done; reply kept")
            .then_some(())
    });
    gw.kill9();
    broker.restart();
    gw.start();
    let r = wait_reply(&consumer, Some("slow-1"), 0, REPLY).1;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["result"]["stalled_ms"], 3000, "{r}");
}

/// A reply published on a connection that is then lost (the uplink frozen, so that it never
/// reaches the broker, then cut) is sent again on the next connection, without a restart.
#[cfg(feature = "fault-hooks")]
#[test]
fn a_reply_lost_with_its_connection_is_sent_on_the_next_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, consumer, mut uplink, gw) = uplinked(dir.path(), "clinic/test-clinic/#", "");
    stall(&broker, &consumer, &gw, "slow-3", 1500);
    uplink.freeze();
    wait_for("the reply published", Duration::from_secs(20), || {
        gw.log_text()
            .contains("cloud command reply published")
            .then_some(())
    });
    cut(&mut uplink, &gw);
    uplink.restore();
    let r = wait_reply(&consumer, Some("slow-3"), 0, REPLY).1;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["result"]["stalled_ms"], 1500, "{r}");
}

/// During a migration (`contract = 2` with `serve_contract_1`) each event goes out under both
/// contracts' topics, and a command is answered under the contract it came in on.
#[test]
fn the_migration_serves_contract_2_and_contract_1_side_by_side() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, consumer, gw) = relayed_gateway(
        dir.path(),
        "clinic/#",
        "contract = 2\nserve_contract_1 = true\n",
    );
    assert_eq!(
        gw.post_event(&numbered_event(1, "test.seq", "patient-1")).0,
        202
    );
    let topics = wait_for(
        "the event under both topics",
        Duration::from_secs(20),
        || {
            let topics: BTreeSet<String> = consumer
                .snapshot()
                .into_iter()
                .filter(|m| m.payload.contains("\"test.seq\""))
                .map(|m| m.topic)
                .collect();
            (topics.len() == 2).then_some(topics)
        },
    );
    assert_eq!(
        topics,
        BTreeSet::from([
            "clinic/test-clinic/events/test.seq".to_string(),
            "clinic/v2/test-clinic/events/test/seq".to_string()
        ])
    );
    for m in consumer
        .snapshot()
        .iter()
        .filter(|m| m.topic.contains("/events/test"))
    {
        let e: Value = serde_json::from_str(&m.payload).expect("envelope");
        assert_eq!(e["kind"], "test.seq", "the envelope keeps the dots");
    }
    for (topic, request_id) in [
        ("clinic/test-clinic/commands/dlq-replay", "v1-1"),
        ("clinic/v2/test-clinic/commands/dlq-replay", "v2-1"),
    ] {
        publish(
            &broker,
            topic,
            &format!(r#"{{"request_id":"{request_id}","destination":"cloud","all":true}}"#),
        );
    }
    let reply_topic = |request_id: &str| {
        wait_for("a command reply", Duration::from_secs(20), || {
            consumer
                .snapshot()
                .into_iter()
                .find(|m| m.topic.contains("/replies/") && m.payload.contains(request_id))
                .map(|m| m.topic)
        })
    };
    assert_eq!(reply_topic("v1-1"), "clinic/test-clinic/replies/dlq-replay");
    assert_eq!(
        reply_topic("v2-1"),
        "clinic/v2/test-clinic/replies/dlq-replay"
    );
    let status: BTreeSet<String> = consumer
        .snapshot()
        .into_iter()
        .filter(|m| m.topic.ends_with("/status") && m.payload == "online")
        .map(|m| m.topic)
        .collect();
    assert_eq!(status.len(), 2, "{status:?}");
    let backlog = gw.get_json("/api/v1/backlog");
    let dead = &backlog["destinations"]["cloud"]["dead"];
    assert_eq!(dead.as_u64().unwrap_or(0), 0, "{backlog}");
}

fn publish_v5(broker: &Broker, topic: &str) -> String {
    let out = Command::new("mosquitto_pub")
        .args(["-V", "mqttv5", "-d", "-h", "127.0.0.1", "-p"])
        .arg(broker.port.to_string())
        .args(["-t", topic, "-m", "probe", "-q", "1"])
        .output()
        .expect("mosquitto_pub");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dead_letters(gw: &Gateway) -> Value {
    let out = gw.cli(&["dlq", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("dlq JSON")
}

/// MQTT 5: a topic the broker's ACL denies gets PUBACK 0x87. That row alone becomes a dead
/// letter saying "not authorized", the connection stays up and later events (of its key too)
/// arrive; once the ACL allows the topic, the replayed row arrives.
#[test]
fn a_publish_refused_by_mqtt_5_reason_code_is_dead_lettered_alone_and_replays_once_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acl = dir.path().join("acl");
    let denied = "topic readwrite #\ntopic deny clinic/test-clinic/events/test.blocked\ntopic deny probe/denied\n";
    std::fs::write(&acl, denied).expect("acl");
    // Mosquitto 2.0.11 with `max_queued_messages 0` (unlimited, the test brokers' setting)
    // closes the connection right after its PUBACK 0x87; with a limit it keeps it.
    let broker = Broker::start_with(
        &dir.path().join("broker"),
        &format!("acl_file {}\nmax_queued_messages 100000\n", acl.display()),
    );
    assert!(
        publish_v5(&broker, "probe/denied").contains("RC:135"),
        "the ACL denies"
    );
    let consumer = Consumer::start(&broker, "clinic/test-clinic/#");
    let mut gw = Gateway::new(
        dir.path(),
        &format!("{}protocol = \"5\"\n", relay_table(&broker)),
    );
    gw.start();
    let blocked = json!({ "source": "lab", "id": "blocked-1", "kind": "test.blocked", "key": "patient-1", "payload": { "n": 1000 } });
    assert_eq!(
        gw.post_event(&numbered_event(1, "test.seq", "patient-1")).0,
        202
    );
    assert_eq!(gw.post_event(&blocked).0, 202);
    assert_eq!(
        gw.post_event(&numbered_event(2, "test.seq", "patient-1")).0,
        202
    );
    assert_eq!(
        gw.post_event(&numbered_event(3, "test.seq", "patient-2")).0,
        202
    );
    wait_all(&consumer, &BTreeSet::from([1, 2, 3]), ARRIVAL);
    let dead = wait_for(
        "the refused row's dead letter",
        Duration::from_secs(20),
        || {
            let dead = dead_letters(&gw);
            (dead.as_array().map(Vec::len) == Some(1)).then_some(dead)
        },
    );
    assert_eq!(dead[0]["kind"], "test.blocked", "{dead}");
    let reason = dead[0]["last_error"].as_str().unwrap_or("");
    assert!(reason.contains("not authorized"), "{reason}");
    assert!(reason.contains("0x87"), "{reason}");
    assert_eq!(
        relay_state(&gw).0,
        "healthy",
        "a refusal is not a lost connection"
    );
    let connects = ureq::get(&gw.url("/metrics"))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("metrics text");
    assert!(
        connects.contains("clinic_gateway_relay_connects_total 1\n"),
        "one connection throughout: {connects}"
    );

    // The operator fixes the ACL; the broker reads it again on SIGHUP.
    std::fs::write(&acl, "topic readwrite #\n").expect("acl");
    broker.reload();
    wait_for(
        "the broker to allow the topic",
        Duration::from_secs(20),
        || {
            publish_v5(&broker, "probe/denied")
                .contains("RC:16")
                .then_some(())
        },
    );
    let row = dead[0]["id"].as_i64().expect("row id");
    publish(
        &broker,
        "clinic/test-clinic/commands/dlq-replay",
        &format!(r#"{{"request_id":"replay-1","destination":"cloud","id":{row}}}"#),
    );
    let r = wait_reply(&consumer, Some("replay-1"), 0, REPLY).1;
    assert_eq!(r["ok"], true, "{r}");
    wait_all(&consumer, &BTreeSet::from([1000]), ARRIVAL);
    assert_eq!(dead_letters(&gw), json!([]));
}

/// MQTT 5: each event carries its CloudEvents attributes as user properties beside the
/// unchanged JSON body, and an event of a kind with a message expiry is not delivered to a
/// subscriber that was offline longer than that, while one without expiry is.
#[test]
fn mqtt_5_events_carry_cloud_event_attributes_and_expire_for_an_offline_subscriber() {
    let dir = tempfile::tempdir().expect("tempdir");
    let filter = "clinic/v2/test-clinic/events/#";
    let (broker, consumer, gw) = relayed_gateway(
        dir.path(),
        filter,
        "protocol = \"5\"\ncontract = 2\nmessage_expiry_by_kind = { \"test.short\" = 1 }\n",
    );
    let offline = Consumer5::start(broker.port, "offline-v5", filter);
    let live = Consumer5::start(broker.port, "live-v5", filter);
    assert_eq!(
        gw.post_event(&numbered_event(1, "test.seq", "patient-1")).0,
        202
    );
    let received = wait_for(
        "the event at the MQTT 5 consumer",
        Duration::from_secs(20),
        || {
            live.snapshot()
                .into_iter()
                .find(|m| m.topic.contains("/events/"))
        },
    );
    let envelope: Value =
        serde_json::from_str(&received.payload).expect("the body is the envelope");
    assert_eq!(n_of(&envelope), Some(1));
    let props: BTreeMap<String, String> = received.user_properties.iter().cloned().collect();
    assert_eq!(
        props,
        BTreeMap::from([
            ("ce_specversion".to_string(), "1.0".to_string()),
            (
                "ce_id".to_string(),
                envelope["id"].as_str().expect("id").to_string()
            ),
            ("ce_type".to_string(), "test.seq".to_string()),
            ("ce_source".to_string(), "test-clinic".to_string()),
            (
                "ce_time".to_string(),
                envelope["occurred_at"].as_str().expect("time").to_string()
            ),
        ])
    );
    assert_eq!(received.message_expiry, None, "test.seq has no expiry");
    wait_for(
        "the offline consumer's copy",
        Duration::from_secs(20),
        || {
            offline
                .snapshot()
                .iter()
                .any(|m| m.topic.contains("/events/"))
                .then_some(())
        },
    );
    drop(offline);

    // Posted while that subscriber is away: one expiring after a second, one not expiring.
    let short = json!({ "source": "kiosk-1", "id": "short-1", "kind": "test.short", "key": "patient-1", "payload": { "n": 2 } });
    assert_eq!(gw.post_event(&short).0, 202);
    let short_at = wait_for(
        "the expiring event at the live consumer",
        Duration::from_secs(20),
        || {
            live.snapshot()
                .into_iter()
                .find(|m| m.topic.ends_with("/events/test/short"))
        },
    );
    assert_eq!(
        short_at.message_expiry,
        Some(1),
        "sent with its kind's expiry"
    );
    let broker_took_it = std::time::Instant::now();
    // Mosquitto drops a message whose expiry second has passed; the marker goes out after that.
    wait_for("the expiry to run out", Duration::from_secs(10), || {
        (broker_took_it.elapsed() > Duration::from_millis(2500)).then_some(())
    });
    assert_eq!(
        gw.post_event(&numbered_event(3, "test.seq", "patient-1")).0,
        202
    );
    wait_all(&consumer, &BTreeSet::from([1, 2, 3]), ARRIVAL);
    let back = Consumer5::start(broker.port, "offline-v5", filter);
    wait_for(
        "the marker at the returning consumer",
        Duration::from_secs(20),
        || {
            back.snapshot()
                .iter()
                .any(|m| m.payload.contains("\"n\":3"))
                .then_some(())
        },
    );
    assert!(
        back.snapshot()
            .iter()
            .all(|m| !m.topic.ends_with("/events/test/short")),
        "the expired event was not delivered: {:?}",
        back.snapshot()
    );
}

/// MQTT 5 with `session_expiry_secs`: the broker keeps the relay's command subscription while
/// the gateway is down, and a command sent meanwhile is carried out and answered after restart.
#[test]
fn commands_sent_while_the_gateway_is_down_arrive_after_restart_with_a_session_expiry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, consumer, mut gw) = relayed_gateway(
        dir.path(),
        "clinic/test-clinic/#",
        "protocol = \"5\"\nsession_expiry_secs = 600\n",
    );
    // An event through means the relay's session and subscription are in place.
    assert_eq!(
        gw.post_event(&numbered_event(1, "test.seq", "patient-1")).0,
        202
    );
    wait_all(&consumer, &BTreeSet::from([1]), ARRIVAL);
    let topic = "clinic/test-clinic/commands/dlq-replay";
    publish(
        &broker,
        topic,
        r#"{"request_id":"before-1","destination":"cloud","all":true}"#,
    );
    assert_eq!(
        wait_reply(&consumer, Some("before-1"), 0, REPLY).1["ok"],
        true
    );
    gw.signal("TERM");
    gw.wait(Duration::from_secs(20));
    publish(
        &broker,
        topic,
        r#"{"request_id":"while-down-1","destination":"cloud","all":true}"#,
    );
    gw.start();
    let r = wait_reply(&consumer, Some("while-down-1"), 0, REPLY).1;
    assert_eq!(r["ok"], true, "{r}");
}

/// MQTT 5 settings under MQTT 3.1.1, a zero expiry and an unknown protocol are refused at
/// start-up, each naming its file, line and key.
#[test]
fn mqtt_5_settings_are_refused_without_protocol_5() {
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |relay: &str| {
        let path = dir.path().join("gateway.toml");
        std::fs::write(
            &path,
            config_text(
                dir.path(),
                free_port(),
                &format!("[relay]\nhost = \"h\"\n{relay}"),
            ),
        )
        .expect("config");
        let (code, out) = check_config(&path);
        assert_ne!(code, Some(0), "{out}");
        (path.display().to_string(), out)
    };
    let (file, out) = check("session_expiry_secs = 60\nmessage_expiry_secs = 30\n");
    assert!(
        out.contains(&format!(
            "{file}:12: relay.session_expiry_secs: needs relay.protocol = \"5\""
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{file}:13: relay.message_expiry_secs: needs relay.protocol = \"5\""
        )),
        "{out}"
    );
    let (file, out) = check("protocol = \"5\"\nmessage_expiry_secs = 0\n");
    assert!(
        out.contains(&format!(
            "{file}:13: relay.message_expiry_secs: must be at least 1"
        )),
        "{out}"
    );
    let (file, out) = check("protocol = \"4\"\n");
    assert!(
        out.contains(&format!("{file}:12: relay.protocol: ")),
        "{out}"
    );
    assert!(
        out.contains("3.1.1"),
        "the refusal names the versions: {out}"
    );
}
