//! Facility rules end to end, with the daemon binary: people counted by an MQTT sensor on a real
//! Mosquitto drive a ventilation setting on the pymodbus simulator (read back with pymodbus' own
//! client), and rooms held by staff or the cloud reroute patients and refuse calls.

mod common;

use common::bacnet_sim::Device;
use common::modbus_sim::Sim;
use common::{
    Broker, Consumer, Gateway, audit_log, check_config, free_port, post, relay_table, wait_for,
};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

/// Publishes one retained-less QoS 1 message on the test broker.
fn publish(broker: &Broker, topic: &str, payload: &str) {
    let ok = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-t", topic, "-m", payload, "-q", "1"])
        .status()
        .expect("mosquitto_pub must be installed (scripts/test-deps.sh)")
        .success();
    assert!(ok, "mosquitto_pub to {topic}");
}

/// Occupancy sensors on `broker`, a Modbus air handler on `sim_port`, three rooms, one rule.
fn facility_config(broker: &Broker, sim_port: u16) -> String {
    format!(
        r#"{relay}
[devices.occupancy]
occupied_delay_s = 0
vacancy_delay_s = 0
count_delay_s = 0

[devices.occupancy.broker]
host = "127.0.0.1"
port = {broker}
reconnect_initial_ms = 100
reconnect_max_ms = 500

[[devices.occupancy.rooms]]
name = "waiting-room-a"
area = "waiting-a"

[[devices.occupancy.rooms]]
name = "exam-2"
area = "clinical"

[[devices.occupancy.sensors]]
name = "waiting-a-counter"
kind = "counter"
room = "waiting-room-a"

[[devices.occupancy.sensors]]
name = "exam-2-motion"
kind = "occupancy"
room = "exam-2"

[[devices.modbus]]
name = "ahu"
host = "127.0.0.1"
port = {sim_port}
poll_interval_ms = 200
reconnect_initial_ms = 100
reconnect_max_ms = 500

[[devices.modbus.registers]]
name = "ventilation"
function = "holding"
address = 1
unit = "%"

[facility]
evaluate_interval_ms = 200

[[facility.rooms]]
name = "exam-1"
queues = ["general"]

[[facility.rooms]]
name = "exam-2"
queues = ["general"]

[[facility.rooms]]
name = "lab-1"
queues = ["lab"]

[[facility.rules]]
name = "waiting-a-crowding"

[[facility.rules.when]]
area = "waiting-a"
above = 10
below = 6

[facility.rules.then]
device = "ahu"
point = "ventilation"
value = 100
normal = 30
"#,
        relay = relay_table(broker),
        broker = broker.port,
    )
}

fn start(dir: &std::path::Path) -> (Broker, Sim, Gateway, Consumer) {
    let broker = Broker::start(dir);
    let map = json!({"unit": 1, "values": [
        {"table": "holding", "address": 1, "type": "u16", "value": 0}]});
    let sim = Sim::tcp(dir, free_port(), &map);
    let consumer = Consumer::start(&broker, "clinic/test-clinic/#");
    let mut gateway = Gateway::new(dir, &facility_config(&broker, sim.port));
    gateway.start();
    (broker, sim, gateway, consumer)
}

/// The details of the device writes audited as rule `actor`'s, oldest first.
fn device_writes(gateway: &Gateway, actor: &str) -> Vec<String> {
    audit_log(gateway)
        .into_iter()
        .rev()
        .filter(|(action, by, _)| action == "device-write" && by == actor)
        .map(|(_, _, detail)| detail)
        .collect()
}

fn rule(gateway: &Gateway) -> Value {
    gateway.get_json("/api/v1/rooms")["rules"][0].clone()
}

fn room(gateway: &Gateway, name: &str) -> Value {
    let rooms = gateway.get_json("/api/v1/rooms");
    rooms["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("room {name} not listed: {rooms}"))
}

/// The payloads of cloud events of `kind` received so far.
fn events_of(consumer: &Consumer, kind: &str) -> Vec<Value> {
    consumer
        .events()
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| e["payload"].clone())
        .collect()
}

fn wait_register(sim: &Sim, value: u16) {
    wait_for(
        &format!("the ventilation register to hold {value}"),
        Duration::from_secs(20),
        || (sim.read_holding(1, 1) == [value]).then_some(()),
    );
}

#[test]
fn crowding_raises_ventilation_with_hysteresis_and_lowers_it_when_the_area_empties() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, sim, gateway, consumer) = start(dir.path());

    // At start the rule is off and its normal setting is asserted on the device.
    wait_register(&sim, 30);
    assert_eq!(rule(&gateway)["applied"], json!(false));

    publish(&broker, "zigbee2mqtt/waiting-a-counter", r#"{"count": 12}"#);
    wait_register(&sim, 100);
    wait_for("the rule to show active", Duration::from_secs(10), || {
        (rule(&gateway)["applied"] == json!(true)).then_some(())
    });

    // Between the thresholds the rule holds: the count is seen, the setting stays.
    publish(&broker, "zigbee2mqtt/waiting-a-counter", r#"{"count": 8}"#);
    wait_for("the area count of 8", Duration::from_secs(10), || {
        events_of(&consumer, "occupancy.area")
            .iter()
            .any(|p| p["area"] == "waiting-a" && p["people"] == 8)
            .then_some(())
    });
    // The rule evaluated 8 and stays active, so it has no setting to write.
    wait_for("the rule to evaluate 8", Duration::from_secs(10), || {
        (rule(&gateway)["inputs"][0] == json!(8.0)).then_some(())
    });
    assert_eq!(rule(&gateway)["applied"], json!(true));
    assert_eq!(
        sim.read_holding(1, 1),
        [100],
        "hysteresis: 8 is above `below`"
    );
    assert_eq!(rule(&gateway)["active"], json!(true));

    publish(&broker, "zigbee2mqtt/waiting-a-counter", r#"{"count": 4}"#);
    wait_register(&sim, 30);

    // Every write was audited as the rule's, and its outcome and each turn reached the cloud.
    let writes = device_writes(&gateway, "rule:waiting-a-crowding");
    assert_eq!(
        writes,
        [
            "ahu ventilation = 30.0",
            "ahu ventilation = 100.0",
            "ahu ventilation = 30.0"
        ]
    );
    wait_for("the rule's events", Duration::from_secs(10), || {
        let turns: Vec<Value> = events_of(&consumer, "facility.rule")
            .iter()
            .map(|p| p["active"].clone())
            .collect();
        let writes = events_of(&consumer, "device.write")
            .iter()
            .filter(|p| p["point"] == "ventilation" && p["ok"] == true)
            .count();
        (turns == [json!(true), json!(false)] && writes == 3).then_some(())
    });
}

#[test]
fn held_rooms_reroute_patients_refuse_calls_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, _sim, mut gateway, consumer) = start(dir.path());
    let check_in = |n: usize| {
        let (status, body) = post(
            &gateway.url("/api/v1/queues/general/check-in"),
            &json!({ "patient_ref": format!("patient-{n}") }),
        );
        assert_eq!(status, 201, "{body}");
        body["entry"]["id"].as_i64().expect("id")
    };
    let call_next = || {
        let (status, body) = post(&gateway.url("/api/v1/queues/general/call-next"), &json!({}));
        assert_eq!(status, 200, "{body}");
        body["entry"].clone()
    };
    let ids: Vec<i64> = (1..=3).map(check_in).collect();

    // The first free room serving the queue is offered; an occupied one is not.
    assert_eq!(call_next()["room"], "exam-1");
    publish(
        &broker,
        "zigbee2mqtt/exam-2-motion",
        r#"{"occupancy": true}"#,
    );
    wait_for("exam-2 to show occupied", Duration::from_secs(10), || {
        (room(&gateway, "exam-2")["status"] == "occupied").then_some(())
    });
    assert_eq!(call_next()["room"], Value::Null, "no room free");
    publish(
        &broker,
        "zigbee2mqtt/exam-2-motion",
        r#"{"occupancy": false}"#,
    );
    wait_for("exam-2 to show available", Duration::from_secs(10), || {
        (room(&gateway, "exam-2")["status"] == "available").then_some(())
    });

    // A spill in exam-1: the patient called there is sent to exam-2.
    let (status, body) = post(
        &gateway.url("/api/v1/rooms/exam-1/state"),
        &json!({ "state": "needs_cleaning", "reason": "spill", "by": "nurse-ana" }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "needs_cleaning");
    let entries = gateway.get_json("/api/v1/queues?queue=general");
    let first = entries
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["id"] == ids[0])
        .cloned()
        .expect("first patient");
    assert_eq!(first["room"], "exam-2", "{entries}");
    assert_eq!(first["state"], "called");
    wait_for("the reroute event", Duration::from_secs(10), || {
        events_of(&consumer, "queue.rerouted")
            .iter()
            .any(|p| p["id"] == ids[0] && p["room"] == "exam-2")
            .then_some(())
    });

    // The status page shows it to staff, with who held it and why.
    let page = gateway.get_text("/");
    assert!(
        page.contains("<td>exam-1</td><td><span class=\"badge degraded\">needs cleaning</span></td><td>spill <span class=muted>by api:nurse-ana"),
        "{page}"
    );

    // Nobody is called to a held room; unknown rooms and states are refused.
    let (status, body) = post(
        &gateway.url(&format!("/api/v1/queue-entries/{}/call", ids[2])),
        &json!({ "room": "exam-1" }),
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "room exam-1 is needs cleaning");
    let (status, body) = post(
        &gateway.url("/api/v1/rooms/exam-9/state"),
        &json!({ "state": "out_of_service" }),
    );
    assert_eq!(status, 404, "{body}");
    let (status, body) = post(
        &gateway.url("/api/v1/rooms/exam-1/state"),
        &json!({ "state": "dirty" }),
    );
    assert_eq!(status, 400, "{body}");

    // The cloud puts exam-1 back in service; the command is answered and audited.
    publish(
        &broker,
        "clinic/test-clinic/commands/room-state",
        r#"{"request_id": "r-77", "room": "exam-1", "state": "in_service"}"#,
    );
    wait_for("the command's reply", Duration::from_secs(10), || {
        consumer
            .snapshot()
            .iter()
            .filter(|m| m.topic == "clinic/test-clinic/replies/room-state")
            .map(|m| serde_json::from_str::<Value>(&m.payload).expect("reply is JSON"))
            .find(|r| r["request_id"] == "r-77")
    });
    assert_eq!(room(&gateway, "exam-1")["status"], "available");
    let audit = gateway.get_json("/api/v1/audit?limit=100");
    let holds: Vec<(&str, &str)> = audit
        .as_array()
        .expect("audit")
        .iter()
        .rev()
        .filter(|a| a["action"] == "room-hold")
        .map(|a| {
            (
                a["actor"].as_str().expect("actor"),
                a["detail"].as_str().expect("detail"),
            )
        })
        .collect();
    assert_eq!(
        holds,
        [
            ("api:nurse-ana", "room exam-1: needs_cleaning (spill)"),
            ("cloud:r-77", "room exam-1: in_service"),
        ]
    );

    // A hold is kept in the journal across a restart.
    let (status, _) = post(
        &gateway.url("/api/v1/rooms/lab-1/state"),
        &json!({ "state": "out_of_service", "reason": "centrifuge broken" }),
    );
    assert_eq!(status, 200);
    gateway.signal("TERM");
    assert_eq!(gateway.wait(Duration::from_secs(15)), Some(0));
    gateway.start();
    wait_for("lab-1 held after restart", Duration::from_secs(10), || {
        let r = room(&gateway, "lab-1");
        (r["status"] == "out_of_service" && r["hold"]["reason"] == "centrifuge broken")
            .then_some(())
    });
}

#[test]
fn facility_config_mistakes_name_their_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let text = facility_config(&broker, 5020)
        .replace("below = 6", "below = 16")
        .replace("point = \"ventilation\"\nvalue", "point = \"nope\"\nvalue");
    let gateway = Gateway::new(dir.path(), &text);
    let written = std::fs::read_to_string(&gateway.config).expect("config");
    let line_of = |needle: &str| {
        1 + written
            .lines()
            .position(|l| l.trim() == needle)
            .unwrap_or_else(|| panic!("{needle} not in the config"))
    };
    let (code, stderr) = check_config(&gateway.config);
    assert_eq!(code, Some(2), "{stderr}");
    let file = gateway.config.display();
    for expected in [
        format!(
            "{file}:{}: facility.rules[0].when[0].below: must be below `above`",
            line_of("below = 16")
        ),
        format!(
            "{file}:{}: facility.rules[0].then.point: device \"ahu\" has no register named \"nope\"",
            line_of("point = \"nope\"")
        ),
    ] {
        assert!(stderr.contains(&expected), "{expected}\n{stderr}");
    }
}

#[test]
fn crowding_writes_a_bacnet_setpoint_at_its_priority_and_relinquishes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let port = free_port();
    let mut device = Device::start(port);
    let config = format!(
        r#"
[devices.occupancy]
occupied_delay_s = 0
vacancy_delay_s = 0
count_delay_s = 0

[devices.occupancy.broker]
host = "127.0.0.1"
port = {broker}

[[devices.occupancy.rooms]]
name = "waiting-room-a"
area = "waiting-a"

[[devices.occupancy.sensors]]
name = "waiting-a-counter"
kind = "counter"
room = "waiting-room-a"

[[devices.bacnet]]
name = "ahu"
device_instance = 599
address = "127.0.0.2:{port}"
bind = "127.0.0.3:{port}"
broadcast = "127.255.255.255:{port}"
priority = 10
timeout_ms = 300
retries = 1
poll_interval_ms = 200

[[devices.bacnet.objects]]
name = "setpoint"
type = "analog-value"
instance = 1
writable = true

[facility]
evaluate_interval_ms = 200

[[facility.rules]]
name = "waiting-a-cooling"

[[facility.rules.when]]
area = "waiting-a"
above = 10
below = 6

[facility.rules.then]
device = "ahu"
point = "setpoint"
value = 18.5
"#,
        broker = broker.port,
    );
    let mut gateway = Gateway::new(dir.path(), &config);
    gateway.start();
    let holds = |device: &mut Device| device.show("analog-value,1");
    // At start the rule is off: its priority slot is relinquished (empty), the default rules.
    wait_for(
        "the rule's first relinquish",
        Duration::from_secs(20),
        || (rule(&gateway)["applied"] == json!(false)).then_some(()),
    );
    let (value, slots) = holds(&mut device);
    assert_eq!((value.as_str(), slots[9].as_deref()), ("21.0", None));

    publish(&broker, "zigbee2mqtt/waiting-a-counter", r#"{"count": 12}"#);
    wait_for("18.5 at priority 10", Duration::from_secs(20), || {
        let (value, slots) = holds(&mut device);
        (value == "18.5" && slots[9].as_deref() == Some("18.5")).then_some(())
    });
    let (_, slots) = holds(&mut device);
    assert_eq!(
        slots.iter().filter(|s| s.is_some()).count(),
        1,
        "only the configured priority is written: {slots:?}"
    );

    publish(&broker, "zigbee2mqtt/waiting-a-counter", r#"{"count": 3}"#);
    wait_for("the relinquish", Duration::from_secs(20), || {
        let (value, slots) = holds(&mut device);
        (value == "21.0" && slots.iter().all(Option::is_none)).then_some(())
    });
    let writes = device_writes(&gateway, "rule:waiting-a-cooling");
    assert_eq!(
        writes,
        [
            "ahu setpoint (analog-value,1) @10 = null",
            "ahu setpoint (analog-value,1) @10 = 18.5",
            "ahu setpoint (analog-value,1) @10 = null"
        ]
    );
}

#[test]
fn a_device_reading_past_its_threshold_drives_a_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    // CO2 holds at 990 until the test says, then climbs by 1 ppm every 100 ms: the rule turns
    // on once it reads 1000.
    let rise = dir.path().join("co2-rises");
    let map = json!({"unit": 1, "values": [
        {"table": "input", "address": 0, "type": "u16", "value": 990, "tick_ms": 100,
         "start_file": rise},
        {"table": "holding", "address": 1, "type": "u16", "value": 0}]});
    let sim = Sim::tcp(dir.path(), free_port(), &map);
    let config = format!(
        r#"
[[devices.modbus]]
name = "room-3-env"
host = "127.0.0.1"
port = {port}
poll_interval_ms = 100

[[devices.modbus.registers]]
name = "co2"
function = "input"
address = 0
unit = "ppm"

[[devices.modbus.registers]]
name = "ventilation"
function = "holding"
address = 1

[facility]
evaluate_interval_ms = 100

[[facility.rules]]
name = "room-3-air"

[[facility.rules.when]]
device = "room-3-env"
point = "co2"
above = 1000
below = 800

[facility.rules.then]
device = "room-3-env"
point = "ventilation"
value = 100
normal = 20
"#,
        port = sim.port
    );
    let mut gateway = Gateway::new(dir.path(), &config);
    gateway.start();
    wait_register(&sim, 20);
    std::fs::write(&rise, "").expect("the CO2's start");
    wait_register(&sim, 100);
    wait_for("the rule's audited write", Duration::from_secs(10), || {
        let audit = gateway.get_json("/api/v1/audit?limit=100");
        audit
            .as_array()
            .expect("audit")
            .iter()
            .any(|a| {
                a["actor"] == "rule:room-3-air" && a["detail"] == "room-3-env ventilation = 100.0"
            })
            .then_some(())
    });
    assert_eq!(rule(&gateway)["active"], json!(true));
}
