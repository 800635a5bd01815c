//! The occupancy actor in-process against a real Mosquitto on loopback: sensors published with
//! `mosquitto_pub`, state read with `GetOccupancy`, events read back from the journal, health
//! from the supervisor.

mod common;

use actix::Addr;
use clinic_gateway::config::Config;
use clinic_gateway::devices::occupancy::protocol::{Occupancy, RoomReading};
use clinic_gateway::devices::occupancy::{NAME, OccupancyHandle, OccupancySpawn};
use clinic_gateway::journal::{self, Claim, JournalWriter};
use clinic_gateway::supervisor::HealthState;
use common::spine::{Spine, eventually};
use common::{Broker, Certs};
use serde_json::{Value, json};
use std::path::Path;

/// Waits until the state satisfies `ok`; answers it.
async fn wait_state(
    handle: &OccupancyHandle,
    what: &str,
    ok: impl Fn(&Occupancy) -> bool,
) -> Occupancy {
    eventually(what, || async { handle.get().await.ok().filter(|o| ok(o)) }).await
}

fn room(o: &Occupancy, name: &str) -> Option<RoomReading> {
    o.rooms
        .iter()
        .find(|r| r.name == name)
        .and_then(|r| r.state)
}

fn reading(occupied: bool, people: Option<u32>) -> Option<RoomReading> {
    Some(RoomReading { occupied, people })
}

/// (people, occupied rooms, rooms) of an area.
fn area(o: &Occupancy, name: &str) -> Option<(u32, u32, u32)> {
    let a = o.areas.iter().find(|a| a.name == name)?;
    Some((a.totals.people, a.totals.occupied_rooms, a.totals.rooms))
}

fn malformed(o: &Occupancy, sensor: &str) -> u64 {
    o.sensors
        .iter()
        .find(|s| s.name == sensor)
        .map_or(0, |s| s.malformed)
}

/// Publishes raw bytes at QoS 1 (through a file, so that any byte goes through unchanged).
async fn publish(broker: &Broker, dir: &Path, topic: &str, payload: &[u8]) {
    publish_with(broker, dir, topic, payload, &[]).await
}

/// [`publish`] with extra `mosquitto_pub` arguments (TLS files).
async fn publish_with(broker: &Broker, dir: &Path, topic: &str, payload: &[u8], extra: &[String]) {
    let file = dir.join("payload.bin");
    std::fs::write(&file, payload).expect("payload file");
    let port = broker.port.to_string();
    let ok = tokio::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-t", topic, "-f"])
        .arg(&file)
        .args(extra)
        .status()
        .await
        .expect("mosquitto_pub must be installed (scripts/test-deps.sh)")
        .success();
    assert!(ok, "mosquitto_pub to {topic}");
}

/// A plain `[devices.occupancy.broker]` table with fast reconnects.
fn plain_broker(broker: &Broker) -> String {
    format!(
        "[devices.occupancy.broker]\nhost = \"127.0.0.1\"\nport = {}\nkeep_alive_secs = 5\n\
         reconnect_initial_ms = 100\nreconnect_max_ms = 500\n",
        broker.port
    )
}

/// Writes and loads a gateway config: three rooms in two areas, four sensors (one silent),
/// short delays, and `broker_table` as the broker.
fn load_config(dir: &Path, broker_table: &str) -> Config {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config_text(dir, broker_table)).expect("config");
    clinic_gateway::config::load(&path).expect("valid config")
}

fn config_text(dir: &Path, broker_table: &str) -> String {
    format!(
        r#"[gateway]
facility_id = "test-clinic"
data_dir = "{data}"

[devices.occupancy]
occupied_delay_s = 0.2
vacancy_delay_s = 2.0
count_delay_s = 0.2
stale_after_s = 1.0
max_payload_bytes = 1024

{broker_table}
[[devices.occupancy.rooms]]
name = "exam-1"
area = "wait-a"
[[devices.occupancy.rooms]]
name = "exam-2"
area = "wait-a"
[[devices.occupancy.rooms]]
name = "lobby"
area = "wait-b"

[[devices.occupancy.sensors]]
name = "pir-1"
kind = "occupancy"
room = "exam-1"
[[devices.occupancy.sensors]]
name = "counter-2"
kind = "counter"
room = "exam-2"
[[devices.occupancy.sensors]]
name = "lobby-fp2"
kind = "counter"
room = "lobby"
topic = "site/lobby/fp2"
pointer = "/presence/people"
[[devices.occupancy.sensors]]
name = "pir-spare"
kind = "occupancy"
room = "lobby"
"#,
        data = dir.join("data").display()
    )
}

/// Starts the occupancy actor of `config` under `name`; answers its handle.
async fn start_occupancy(spine: &Spine, config: &Config, name: &str) -> OccupancyHandle {
    let occupancy = config.devices.occupancy.as_ref().expect("occupancy table");
    let spawn = OccupancySpawn::new(config, occupancy, &spine.journal).expect("spawn");
    let handle = spawn.handle.clone();
    spine.start_child(name.into(), spawn).await;
    handle
}

/// Every occupancy event journaled for the cloud so far, in order, as (kind, payload).
async fn occupancy_events(journal: &Addr<JournalWriter>) -> Vec<(String, Value)> {
    let claim = Claim {
        destination: "cloud".into(),
        limit: 10_000,
    };
    let rows = journal::ask(journal, claim).await.expect("claim");
    rows.into_iter()
        .filter(|r| r.kind().starts_with("occupancy."))
        .map(|r| {
            assert_eq!(r.key(), "device:occupancy");
            let payload = serde_json::from_slice(&r.payload).expect("payload is JSON");
            (r.kind().to_string(), payload)
        })
        .collect()
}

#[test]
fn occupancy_follows_sensors_ignores_malformed_payloads_and_resubscribes_after_broker_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path().to_path_buf();
    let mut broker = Broker::start(&dir.join("broker"));
    let config = load_config(&dir, &plain_broker(&broker));

    actix::System::new().block_on(async move {
        let spine = Spine::start(&dir);
        // The daemon's path: one child named `occupancy` for the table.
        let children = clinic_gateway::daemon::wiring::devices(&config, &spine.journal, &Default::default()).expect("spawns");
        let names: Vec<&str> = children.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, [NAME]);
        let handle = start_occupancy(&spine, &config, NAME).await;
        spine.wait_health(NAME, HealthState::Healthy, |_| true).await;

        // Valid readings: each room's first reading counts at once.
        publish(&broker, &dir, "zigbee2mqtt/pir-1", br#"{"occupancy":true,"battery":90}"#).await;
        publish(&broker, &dir, "zigbee2mqtt/counter-2", br#"{"count":3}"#).await;
        publish(&broker, &dir, "site/lobby/fp2", br#"{"presence":{"people":2}}"#).await;
        let o = wait_state(&handle, "every room reported", |o| {
            o.rooms.iter().all(|r| r.state.is_some())
        })
        .await;
        assert_eq!(room(&o, "exam-1"), reading(true, None));
        assert_eq!(room(&o, "exam-2"), reading(true, Some(3)));
        assert_eq!(room(&o, "lobby"), reading(true, Some(2)));
        assert_eq!(area(&o, "wait-a"), Some((3, 2, 2)));
        assert_eq!(area(&o, "wait-b"), Some((2, 1, 1)));
        assert!(o.rooms.iter().all(|r| r.since_ms.is_some()), "{o:?}");

        // Malformed payloads are counted per sensor and change nothing. The oversized one says
        // "vacant": had it been read, exam-1 would go vacant below before the flicker test.
        let huge = format!(r#"{{"occupancy":false,"pad":"{}"}}"#, "x".repeat(4096));
        let bad: [(&str, &[u8]); 6] = [
            ("zigbee2mqtt/pir-1", b"\xff\xfe\x00\x01 garbage"),
            ("zigbee2mqtt/pir-1", br#"{"occupancy":"yes"}"#),
            ("zigbee2mqtt/pir-1", huge.as_bytes()),
            ("zigbee2mqtt/counter-2", br#"{"people":4}"#),
            ("zigbee2mqtt/counter-2", br#"{"count":-2}"#),
            ("site/lobby/fp2", b"plain text"),
        ];
        for (topic, payload) in bad {
            publish(&broker, &dir, topic, payload).await;
        }
        let o = wait_state(&handle, "every malformed payload counted", |o| {
            malformed(o, "pir-1") == 3
                && malformed(o, "counter-2") == 2
                && malformed(o, "lobby-fp2") == 1
        })
        .await;
        let problem = |name: &str| {
            o.sensors
                .iter()
                .find(|s| s.name == name)
                .and_then(|s| s.last_problem.clone())
        };
        let too_large = format!(
            "payload of {} bytes exceeds max_payload_bytes (1024)",
            huge.len()
        );
        assert_eq!(problem("pir-1"), Some(too_large));
        assert_eq!(
            problem("counter-2").as_deref(),
            Some("value at the pointer is a negative or fractional number, expected a count (an integer from 0 to 4294967295)")
        );
        assert_eq!(malformed(&o, "pir-spare"), 0);
        assert_eq!(room(&o, "exam-1"), reading(true, None));

        // Vacant for less than vacancy_delay_s is flicker; then vacant for good.
        publish(&broker, &dir, "zigbee2mqtt/pir-1", br#"{"occupancy":false}"#).await;
        publish(&broker, &dir, "zigbee2mqtt/pir-1", br#"{"occupancy":true}"#).await;
        publish(&broker, &dir, "zigbee2mqtt/pir-1", br#"{"occupancy":false}"#).await;
        publish(&broker, &dir, "zigbee2mqtt/counter-2", br#"{"count":5}"#).await;
        let o = wait_state(&handle, "exam-1 vacant and exam-2 at 5", |o| {
            room(o, "exam-1") == reading(false, None) && room(o, "exam-2") == reading(true, Some(5))
        })
        .await;
        assert_eq!(area(&o, "wait-a"), Some((5, 1, 2)));

        // Every change was journaled, in order, with names and numbers only.
        let events = occupancy_events(&spine.journal).await;
        let rooms = |name: &str| -> Vec<Value> {
            events
                .iter()
                .filter(|(kind, p)| kind == "occupancy.room" && p["room"] == name)
                .map(|(_, p)| json!([p["occupied"], p["people"]]))
                .collect()
        };
        assert_eq!(rooms("exam-1"), [json!([true, null]), json!([false, null])]);
        assert_eq!(rooms("exam-2"), [json!([true, 3]), json!([true, 5])]);
        assert_eq!(rooms("lobby"), [json!([true, 2])]);
        let areas: Vec<&Value> = events
            .iter()
            .filter(|(kind, _)| kind == "occupancy.area")
            .map(|(_, p)| p)
            .collect();
        assert_eq!(
            areas.last().copied(),
            Some(&json!({ "scope": "area", "area": "wait-a", "people": 5, "occupied_rooms": 1, "rooms": 2 }))
        );
        for (_, p) in &events {
            let text = p.to_string();
            assert!(!text.contains("battery") && !text.contains("xxxx"), "{text}");
        }

        // Broker gone: degraded with a reason; back: healthy, subscribed again.
        broker.stop();
        let error = spine.wait_health(NAME, HealthState::Degraded, |_| true).await.last_error;
        assert!(error.is_some_and(|e| !e.is_empty()), "a degraded actor says why");
        broker.restart();
        spine.wait_health(NAME, HealthState::Healthy, |_| true).await;
        publish(&broker, &dir, "zigbee2mqtt/counter-2", br#"{"count":1}"#).await;
        let o = wait_state(&handle, "exam-2 at 1 after the restart", |o| {
            room(o, "exam-2") == reading(true, Some(1))
        })
        .await;

        // pir-spare never sent anything: stale once stale_after_s has passed since start-up.
        let spare = o
            .sensors
            .iter()
            .find(|s| s.name == "pir-spare")
            .expect("pir-spare");
        assert!(spare.stale && spare.last_seen_ms.is_none(), "{spare:?}");
        let counter = o.sensors.iter().find(|s| s.name == "counter-2").expect("counter-2");
        assert!(counter.last_seen_ms.is_some_and(|ms| ms > 0), "{counter:?}");

        let journal = spine.journal.clone();
        spine.stop().await;
        assert!(handle.get().await.is_err(), "a stopped actor is not asked");
        let _ = journal::ask(&journal, journal::Close).await;
    });
}

#[test]
fn occupancy_uses_mutual_tls_and_reports_an_untrusted_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path().to_path_buf();
    let (cdir, bdir) = (dir.join("certs"), dir.join("broker"));
    std::fs::create_dir_all(&cdir).expect("mkdir");
    let certs = Certs::generate(&cdir);
    let broker = Broker::start_tls(&bdir, &certs, true);
    let path = |name: &str| certs.path(name).display().to_string();
    let tls_broker = |ca: &str| {
        format!(
            "{}[devices.occupancy.broker.tls]\nca_file = \"{}\"\nclient_cert_file = \"{}\"\n\
             client_key_file = \"{}\"\n",
            plain_broker(&broker),
            path(ca),
            path("client.crt"),
            path("client.key")
        )
    };
    let (good_dir, bad_dir) = (dir.join("good"), dir.join("bad"));
    std::fs::create_dir_all(&good_dir).expect("mkdir");
    std::fs::create_dir_all(&bad_dir).expect("mkdir");
    let good = load_config(&good_dir, &tls_broker("ca.crt"));
    let mut bad = load_config(&bad_dir, &tls_broker("other-ca.crt"));
    // Two clients on one broker need two ids.
    if let Some(o) = bad.devices.occupancy.as_mut() {
        o.broker.client_id = Some("occupancy-untrusting".into());
    }
    let tls_args = [
        "--cafile".to_string(),
        path("ca.crt"),
        "--cert".into(),
        path("client.crt"),
        "--key".into(),
        path("client.key"),
    ];

    actix::System::new().block_on(async move {
        let spine = Spine::start(&dir);
        let handle = start_occupancy(&spine, &good, NAME).await;
        start_occupancy(&spine, &bad, "occupancy-bad").await;
        spine
            .wait_health(NAME, HealthState::Healthy, |_| true)
            .await;
        let error = spine
            .wait_health("occupancy-bad", HealthState::Degraded, |_| true)
            .await
            .last_error
            .unwrap_or_default();
        assert!(
            error.to_lowercase().contains("certificate") || error.contains("UnknownIssuer"),
            "{error}"
        );
        let payload = br#"{"occupancy":true}"#;
        publish_with(&broker, &dir, "zigbee2mqtt/pir-1", payload, &tls_args).await;
        wait_state(&handle, "exam-1 occupied over TLS", |o| {
            room(o, "exam-1") == reading(true, None)
        })
        .await;
        let journal = spine.journal.clone();
        spine.stop().await;
        let _ = journal::ask(&journal, journal::Close).await;
    });
}
