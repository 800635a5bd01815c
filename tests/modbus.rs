//! Modbus device actors against the pymodbus simulator (`tests/peers/modbus_sim.py`), over TCP
//! on loopback and over RTU on a socat pty pair. The actor runs in-process under a real
//! supervisor and journal writer; assertions go through `GetReadings`, the supervisor's health
//! and the events the journal would hand to the cloud.

mod common;

use clinic_gateway::devices::modbus::protocol::Value;
use clinic_gateway::devices::modbus::{
    ActorSlot, GetReadings, ModbusError, ModbusSpawn, Reading, Write,
};
use clinic_gateway::journal::{self, ListAudit};
use clinic_gateway::supervisor::HealthState;
use common::modbus_sim::{Sim, write_map};
use common::spine::{Spine, device_config};
use common::{PtyPair, free_port};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

impl Spine {
    /// Starts the devices of `[[devices.modbus]]` TOML the way the daemon does; returns each
    /// device's actor slot by name.
    async fn start_devices(&self, devices_toml: &str) -> BTreeMap<String, ActorSlot> {
        let mut slots = BTreeMap::new();
        for device in device_config(devices_toml).devices.modbus {
            let name = device.name.clone();
            let spawn = ModbusSpawn::new(device, self.journal.clone());
            slots.insert(name.clone(), spawn.slot());
            self.start_child(format!("modbus:{name}"), spawn).await;
        }
        slots
    }
}

async fn readings(slot: &ActorSlot) -> Vec<Reading> {
    slot.addr()
        .expect("the actor was started")
        .send(GetReadings)
        .await
        .expect("readings")
}

/// Waits until the device's readings satisfy `done`.
async fn wait_readings(slot: &ActorSlot, done: impl Fn(&[Reading]) -> bool) -> Vec<Reading> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = readings(slot).await;
        if done(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "readings never as expected: {r:?}"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every register of the device has a value read after `after` (ms).
async fn wait_values(slot: &ActorSlot, after: i64) -> Vec<Reading> {
    wait_readings(slot, |r| {
        r.iter().all(|r| r.read_at.is_some_and(|t| t > after))
    })
    .await
}

fn value_of<'a>(readings: &'a [Reading], name: &str) -> &'a Reading {
    readings
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no reading {name}: {readings:?}"))
}

/// A register of the table-driven type test: how the simulator stores it and what the
/// gateway must read back.
struct Case {
    name: &'static str,
    table: &'static str,
    data_type: &'static str,
    word_order: &'static str,
    byte_order: &'static str,
    raw: serde_json::Value,
    /// Extra TOML for the register (scale, offset).
    extra: &'static str,
    expected: Value,
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let orders = [
        ("big", "big"),
        ("little", "big"),
        ("big", "little"),
        ("little", "little"),
    ];
    let mut add = |name, table, data_type, (word_order, byte_order), raw, extra, expected| {
        cases.push(Case {
            name,
            table,
            data_type,
            word_order,
            byte_order,
            raw,
            extra,
            expected,
        })
    };
    add(
        "u16_be",
        "holding",
        "u16",
        orders[0],
        json!(4660),
        "",
        Value::Number(4660.0),
    );
    add(
        "u16_le",
        "input",
        "u16",
        orders[2],
        json!(4660),
        "",
        Value::Number(4660.0),
    );
    add(
        "i16_be",
        "holding",
        "i16",
        orders[0],
        json!(-123),
        "",
        Value::Number(-123.0),
    );
    add(
        "i16_le",
        "input",
        "i16",
        orders[2],
        json!(-123),
        "",
        Value::Number(-123.0),
    );
    let names32 = [
        ["u32_abcd", "u32_cdab", "u32_badc", "u32_dcba"],
        ["i32_abcd", "i32_cdab", "i32_badc", "i32_dcba"],
        ["f32_abcd", "f32_cdab", "f32_badc", "f32_dcba"],
    ];
    for (i, order) in orders.into_iter().enumerate() {
        add(
            names32[0][i],
            "holding",
            "u32",
            order,
            json!(305_419_896u32),
            "",
            Value::Number(305_419_896.0),
        );
        add(
            names32[1][i],
            "input",
            "i32",
            order,
            json!(-70_000),
            "",
            Value::Number(-70_000.0),
        );
        add(
            names32[2][i],
            "holding",
            "f32",
            order,
            json!(-1234.75),
            "",
            Value::Number(-1234.75),
        );
    }
    add(
        "temp_scaled",
        "input",
        "i16",
        orders[0],
        json!(615),
        "scale = 0.5\noffset = -40.0\n",
        Value::Number(267.5),
    );
    add(
        "alarm_coil",
        "coil",
        "bool",
        orders[0],
        json!(true),
        "",
        Value::Bool(true),
    );
    add(
        "door_input",
        "discrete_input",
        "bool",
        orders[0],
        json!(false),
        "",
        Value::Bool(false),
    );
    add(
        "fan_on",
        "holding",
        "bool",
        orders[0],
        json!(1),
        "",
        Value::Bool(true),
    );
    cases
}

/// The simulator map and the `[[devices.modbus.registers]]` TOML for `cases`, one register
/// every 4 addresses of its table.
fn map_and_registers(cases: &[Case], unit: u8) -> (serde_json::Value, String) {
    let mut values = Vec::new();
    let mut toml = String::new();
    for (i, c) in cases.iter().enumerate() {
        let address = i * 4;
        values.push(json!({
            "table": c.table, "address": address, "type": c.data_type, "value": c.raw,
            "word_order": c.word_order, "byte_order": c.byte_order,
        }));
        let function = c.table;
        toml.push_str(&format!(
            "[[devices.modbus.registers]]\nname = \"{}\"\nfunction = \"{function}\"\naddress = {address}\ntype = \"{}\"\nunit = \"u{i}\"\n{}",
            c.name, c.data_type, c.extra
        ));
        if c.data_type != "bool" {
            toml.push_str(&format!("byte_order = \"{}\"\n", c.byte_order));
        }
        if matches!(c.data_type, "u32" | "i32" | "f32") {
            toml.push_str(&format!("word_order = \"{}\"\n", c.word_order));
        }
    }
    (json!({ "unit": unit, "values": values }), toml)
}

/// A device with CO2 612 ppm in input register 0 and a setpoint 1000 in holding register 0.
fn co2_map() -> serde_json::Value {
    json!({"unit": 1, "values": [
        {"table": "input", "address": 0, "type": "u16", "value": 612},
        {"table": "holding", "address": 0, "type": "u16", "value": 1000}]})
}

fn run(test: impl std::future::Future<Output = ()>) {
    actix::System::new().block_on(test);
}

#[test]
fn tcp_device_reads_every_type_in_every_order_and_journals_one_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = cases();
    let (map, registers) = map_and_registers(&cases, 1);
    let sim = Sim::tcp(dir.path(), free_port(), &map);
    let port = sim.port;
    run(async {
        let spine = Spine::start(dir.path());
        let slots = spine
            .start_devices(&format!(
                "[[devices.modbus]]\nname = \"plant\"\nhost = \"127.0.0.1\"\nport = {port}\npoll_interval_ms = 100\ntimeout_ms = 500\n{registers}"
            ))
            .await;
        let got = wait_values(&slots["plant"], 0).await;
        for c in &cases {
            let r = value_of(&got, c.name);
            assert_eq!(r.value, Some(c.expected), "{}: {r:?}", c.name);
            assert_eq!(r.error, None, "{}", c.name);
        }
        spine
            .wait_health("modbus:plant", HealthState::Healthy, |_| true)
            .await;
        // The values never change: one event, holding every reading with its unit.
        let events = spine.cloud_events("device.reading").await;
        assert_eq!(events.len(), 1, "{events:?}");
        let e = &events[0];
        assert_eq!(e["device"], "plant");
        assert!(e["ts"].as_i64().is_some_and(|t| t > 0), "{e}");
        let readings = e["readings"].as_array().expect("readings");
        assert_eq!(readings.len(), cases.len());
        assert_eq!(
            readings[0],
            json!({"name": "u16_be", "value": 4660.0, "unit": "u0"})
        );
        let alarm = readings
            .iter()
            .find(|r| r["name"] == "alarm_coil")
            .expect("coil");
        assert_eq!(alarm["value"], true);
        spine.stop().await;
    });
}

#[test]
fn unmapped_address_names_illegal_data_address_and_other_registers_still_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let map = co2_map();
    let sim = Sim::tcp(dir.path(), free_port(), &map);
    let port = sim.port;
    run(async {
        let spine = Spine::start(dir.path());
        let slots = spine
            .start_devices(&format!(
                "[[devices.modbus]]\nname = \"room-4\"\nhost = \"127.0.0.1\"\nport = {port}\npoll_interval_ms = 100\n\
                 [[devices.modbus.registers]]\nname = \"co2\"\nfunction = \"input\"\naddress = 0\nunit = \"ppm\"\n\
                 [[devices.modbus.registers]]\nname = \"setpoint\"\nfunction = \"holding\"\naddress = 50\n\
                 [[devices.modbus.registers]]\nname = \"humidity\"\nfunction = \"input\"\naddress = 1\n"
            ))
            .await;
        let h = spine
            .wait_health("modbus:room-4", HealthState::Degraded, |h| {
                h.last_error.is_some()
            })
            .await;
        let error = h.last_error.expect("error");
        let setpoint_error = "modbus device room-4: register setpoint (holding register 50): the device answered exception 0x02 (illegal data address)";
        assert_eq!(error, format!("{setpoint_error} (and 1 more)"));
        // co2 and humidity are adjacent and read as one block, which the device refuses for
        // humidity's sake; read alone, co2 still reads and the error names humidity.
        let r = readings(&slots["room-4"]).await;
        assert_eq!(value_of(&r, "co2").value, Some(Value::Number(612.0)));
        assert_eq!(value_of(&r, "setpoint").value, None);
        assert_eq!(
            value_of(&r, "setpoint").error.as_deref(),
            Some(setpoint_error)
        );
        assert_eq!(
            value_of(&r, "humidity").error.as_deref(),
            Some(
                "modbus device room-4: register humidity (input register 1): the device answered exception 0x02 (illegal data address)"
            )
        );
        // The readable register is still journaled.
        let events = spine.cloud_events("device.reading").await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            events[0]["readings"],
            json!([{"name": "co2", "value": 612.0, "unit": "ppm"}])
        );
        spine.stop().await;
    });
}

#[test]
fn rtu_device_on_a_pty_pair_reads_with_its_serial_settings_and_unit_id() {
    // Parity and data bits other than 8N are refused by a Linux pty (tcsetattr: EINVAL), so
    // only baud and stop bits can be set on both ends here.
    let dir = tempfile::tempdir().expect("tempdir");
    let pty = PtyPair::start(dir.path(), "rtu");
    let map = json!({"unit": 7, "values": [
        {"table": "input", "address": 0, "type": "u16", "value": 612},
        {"table": "holding", "address": 10, "type": "f32", "value": 21.5, "word_order": "little"},
        {"table": "coil", "address": 3, "type": "bool", "value": true}]});
    let _sim = Sim::start(
        0,
        &[
            "--rtu".into(),
            pty.device.display().to_string(),
            "--baud".into(),
            "19200".into(),
            "--stopbits".into(),
            "2".into(),
            "--map".into(),
            write_map(dir.path(), &map),
        ],
    );
    run(async {
        let spine = Spine::start(dir.path());
        let slots = spine
            .start_devices(&format!(
                "[[devices.modbus]]\nname = \"ahu\"\nserial = \"{}\"\nbaud = 19200\nstop_bits = 2\nunit_id = 7\npoll_interval_ms = 100\ntimeout_ms = 500\n\
                 [[devices.modbus.registers]]\nname = \"co2\"\nfunction = \"input\"\naddress = 0\n\
                 [[devices.modbus.registers]]\nname = \"supply_temp\"\nfunction = \"holding\"\naddress = 10\ntype = \"f32\"\nword_order = \"little\"\n\
                 [[devices.modbus.registers]]\nname = \"filter_alarm\"\nfunction = \"coil\"\naddress = 3\n",
                pty.gateway.display()
            ))
            .await;
        let r = wait_values(&slots["ahu"], 0).await;
        assert_eq!(value_of(&r, "co2").value, Some(Value::Number(612.0)));
        assert_eq!(value_of(&r, "supply_temp").value, Some(Value::Number(21.5)));
        assert_eq!(value_of(&r, "filter_alarm").value, Some(Value::Bool(true)));
        spine
            .wait_health("modbus:ahu", HealthState::Healthy, |_| true)
            .await;
        assert_eq!(spine.cloud_events("device.reading").await.len(), 1);
        spine.stop().await;
    });
}

#[test]
fn missing_serial_port_keeps_the_device_degraded_and_retrying() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(async {
        let spine = Spine::start(dir.path());
        spine
            .start_devices(&format!(
                "[[devices.modbus]]\nname = \"usb\"\nserial = \"{}\"\nreconnect_initial_ms = 50\nreconnect_max_ms = 100\n\
                 [[devices.modbus.registers]]\nname = \"co2\"\nfunction = \"input\"\naddress = 0\n",
                dir.path().join("ttyUSB9").display()
            ))
            .await;
        let h = spine
            .wait_health("modbus:usb", HealthState::Degraded, |h| {
                h.last_error.is_some()
            })
            .await;
        let error = h.last_error.expect("error");
        assert!(
            error.starts_with("modbus device usb: cannot open "),
            "{error}"
        );
        assert!(error.contains("ttyUSB9"), "{error}");
        // Never handed back to the supervisor as an exit: no restarts.
        assert_eq!(h.restarts, 0);
        spine.stop().await;
    });
}

#[test]
fn killed_peer_degrades_the_device_and_its_return_heals_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let map = co2_map();
    let mut sim = Some(Sim::tcp(dir.path(), free_port(), &map));
    let port = sim.as_ref().map_or(0, |s| s.port);
    run(async {
        let spine = Spine::start(dir.path());
        let slots = spine
            .start_devices(&format!(
                "[[devices.modbus]]\nname = \"env\"\nhost = \"127.0.0.1\"\nport = {port}\npoll_interval_ms = 100\ntimeout_ms = 300\n\
                 reconnect_initial_ms = 50\nreconnect_max_ms = 200\n\
                 [[devices.modbus.registers]]\nname = \"co2\"\nfunction = \"input\"\naddress = 0\n\
                 [[devices.modbus.registers]]\nname = \"setpoint\"\nfunction = \"holding\"\naddress = 0\n"
            ))
            .await;
        spine
            .wait_health("modbus:env", HealthState::Healthy, |_| true)
            .await;
        drop(sim.take());
        let h = spine
            .wait_health("modbus:env", HealthState::Degraded, |h| {
                h.last_error.is_some()
            })
            .await;
        assert!(
            h.last_error
                .as_deref()
                .is_some_and(|e| e.starts_with("modbus device env: ")),
            "{h:?}"
        );
        let r = readings(&slots["env"]).await;
        assert_eq!(
            value_of(&r, "co2").value,
            Some(Value::Number(612.0)),
            "the last value is kept"
        );
        assert!(value_of(&r, "co2").error.is_some(), "{r:?}");
        let write = Write {
            register: "setpoint".into(),
            value: Value::Number(900.0),
            by: "test:staff".into(),
        };
        let refused = slots["env"].addr().expect("actor").send(write).await;
        assert!(
            matches!(refused, Ok(Err(ModbusError::NotConnected))),
            "{refused:?}"
        );
        sim = Some(Sim::tcp(dir.path(), port, &map));
        let h = spine
            .wait_health("modbus:env", HealthState::Healthy, |_| true)
            .await;
        assert_eq!(h.last_error, None);
        assert_eq!(h.restarts, 0, "the actor retried by itself");
        let r = wait_values(&slots["env"], journal::now_ms()).await;
        assert_eq!(value_of(&r, "co2").error, None);
        spine.stop().await;
    });
    drop(sim);
}

#[test]
fn unchanged_values_are_journaled_once_and_changes_every_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let map = json!({"unit": 1, "values": [
        {"table": "input", "address": 0, "type": "u16", "value": 612},
        {"table": "input", "address": 1, "type": "u32", "value": 0, "tick_ms": 250}]});
    let sim = Sim::tcp(dir.path(), free_port(), &map);
    let port = sim.port;
    run(async {
        let spine = Spine::start(dir.path());
        let device = |name: &str, address: u16, data_type: &str| {
            format!(
                "[[devices.modbus]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {port}\npoll_interval_ms = 100\nheartbeat_s = 3600\n\
                 [[devices.modbus.registers]]\nname = \"v\"\nfunction = \"input\"\naddress = {address}\ntype = \"{data_type}\"\n"
            )
        };
        let slots = spine
            .start_devices(&(device("still", 0, "u16") + &device("ticking", 1, "u32")))
            .await;
        // Ten polls of each device.
        let mut last = 0;
        for _ in 0..10 {
            last = wait_values(&slots["still"], last).await[0]
                .read_at
                .expect("read");
            wait_values(&slots["ticking"], last).await;
        }
        let events = spine.cloud_events("device.reading").await;
        let of = |device: &str| -> Vec<serde_json::Value> {
            events
                .iter()
                .filter(|e| e["device"] == device)
                .map(|e| e["readings"][0]["value"].clone())
                .collect()
        };
        assert_eq!(of("still"), [json!(612.0)]);
        let ticks = of("ticking");
        // Ten polls at 100 ms see at least three values of a register that changes every
        // 250 ms, and each value is journaled exactly once.
        assert!(ticks.len() >= 3, "{ticks:?}");
        let mut distinct = ticks.clone();
        distinct.dedup();
        assert_eq!(distinct, ticks, "an unchanged value was journaled twice");
        spine.stop().await;
    });
}

#[test]
fn writes_reach_the_device_and_are_read_back_and_bad_writes_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let map = json!({"unit": 1, "values": [
        {"table": "holding", "address": 0, "type": "i16", "value": 210},
        {"table": "holding", "address": 2, "type": "f32", "value": 0.0, "word_order": "little"},
        {"table": "coil", "address": 0, "type": "bool", "value": false},
        {"table": "input", "address": 0, "type": "u16", "value": 612}]});
    let sim = Sim::tcp(dir.path(), free_port(), &map);
    let port = sim.port;
    run(async {
        let spine = Spine::start(dir.path());
        let slots = spine
            .start_devices(&format!(
                "[[devices.modbus]]\nname = \"ahu\"\nhost = \"127.0.0.1\"\nport = {port}\npoll_interval_ms = 100\n\
                 [[devices.modbus.registers]]\nname = \"setpoint\"\nfunction = \"holding\"\naddress = 0\ntype = \"i16\"\nscale = 0.1\n\
                 [[devices.modbus.registers]]\nname = \"flow\"\nfunction = \"holding\"\naddress = 2\ntype = \"f32\"\nword_order = \"little\"\n\
                 [[devices.modbus.registers]]\nname = \"fan\"\nfunction = \"coil\"\naddress = 0\n\
                 [[devices.modbus.registers]]\nname = \"co2\"\nfunction = \"input\"\naddress = 0\n\
                 [[devices.modbus.registers]]\nname = \"spare\"\nfunction = \"holding\"\naddress = 40\n"
            ))
            .await;
        let slot = &slots["ahu"];
        spine
            .wait_health("modbus:ahu", HealthState::Degraded, |h| {
                h.last_error.is_some()
            })
            .await;
        let actor = slot.addr().expect("actor");
        let write = |register: &str, value| Write {
            register: register.into(),
            value,
            by: "test:staff".into(),
        };
        for (register, value) in [
            ("setpoint", Value::Number(-22.5)),
            ("flow", Value::Number(-1234.75)),
            ("fan", Value::Bool(true)),
        ] {
            let done = actor.send(write(register, value)).await.expect("mailbox");
            assert!(done.is_ok(), "{register}: {done:?}");
        }
        let written = journal::now_ms();
        let r = wait_readings(slot, |r| {
            r[..3]
                .iter()
                .all(|r| r.read_at.is_some_and(|t| t > written))
        })
        .await;
        let setpoint = value_of(&r, "setpoint").value;
        assert!(
            matches!(setpoint, Some(Value::Number(v)) if (v + 22.5).abs() < 1e-9),
            "{setpoint:?}"
        );
        assert_eq!(value_of(&r, "flow").value, Some(Value::Number(-1234.75)));
        assert_eq!(value_of(&r, "fan").value, Some(Value::Bool(true)));
        let audit = journal::ask(&spine.journal, ListAudit::newest(10))
            .await
            .expect("audit");
        let audited: Vec<_> = audit
            .iter()
            .rev()
            .map(|a| (a.actor.as_str(), a.action.as_str(), a.detail.as_str()))
            .collect();
        assert_eq!(
            audited,
            [
                ("test:staff", "device-write", "ahu setpoint = -22.5"),
                ("test:staff", "device-write", "ahu flow = -1234.75"),
                ("test:staff", "device-write", "ahu fan = true"),
            ]
        );
        let outcomes = spine.cloud_events("device.write").await;
        assert_eq!(
            outcomes,
            [
                json!({"point": "setpoint", "value": -22.5, "by": "test:staff", "ok": true, "error": null}),
                json!({"point": "flow", "value": -1234.75, "by": "test:staff", "ok": true, "error": null}),
                json!({"point": "fan", "value": true, "by": "test:staff", "ok": true, "error": null}),
            ]
        );

        let refused = |r: Result<Result<(), ModbusError>, _>| {
            r.expect("mailbox").expect_err("refused").to_string()
        };
        let e = refused(actor.send(write("co2", Value::Number(1.0))).await);
        assert_eq!(
            e,
            "register co2: input registers and discrete inputs are read-only"
        );
        let e = refused(actor.send(write("setpoint", Value::Number(4000.0))).await);
        assert_eq!(
            e,
            "register setpoint (holding register 0): raw value 40000 does not fit I16"
        );
        let e = refused(actor.send(write("nope", Value::Number(1.0))).await);
        assert_eq!(e, "register nope: no register of this device has that name");
        // pymodbus 3.11 refuses a write to an address its immutable map lacks with exception 4.
        let e = refused(actor.send(write("spare", Value::Number(1.0))).await);
        assert_eq!(
            e,
            "register spare (holding register 40): the device answered exception 0x04 (server device failure)"
        );
        // Refused before the wire: not audited. Refused by the device: audited, outcome reported.
        let audit = journal::ask(&spine.journal, ListAudit::newest(10))
            .await
            .expect("audit");
        assert_eq!(audit.len(), 4, "{audit:?}");
        assert_eq!(audit[0].detail, "ahu spare = 1.0");
        let outcomes = spine.cloud_events("device.write").await;
        assert_eq!(outcomes.len(), 1, "{outcomes:?}");
        assert_eq!(outcomes[0]["ok"], json!(false));
        assert!(
            outcomes[0]["error"]
                .as_str()
                .is_some_and(|e| e.contains("exception 0x04")),
            "{outcomes:?}"
        );
        spine.stop().await;
    });
}
