//! BACnet/IP device actors against a bacpypes3 device (`tests/peers/bacnet_device.py`) on
//! loopback: the device at 127.0.0.2, the gateway bound to 127.0.0.3, each test on its own
//! UDP port so that tests run in parallel. The actor runs in-process under a real supervisor
//! and journal writer; assertions go through `GetValues`, `GetPriorityArray`, the
//! supervisor's health, the journal's overrides and audit, and the events the cloud would get.

mod common;

use clinic_gateway::devices::ListOverrides;
use clinic_gateway::devices::Value;
use clinic_gateway::devices::bacnet::{
    BacnetError, BacnetSlot, BacnetSpawn, BacnetWrite, GetPriorityArray, GetValues, Reading,
};
use clinic_gateway::journal::{self, ListAudit};
use clinic_gateway::supervisor::{HealthState, StopChild};
use common::bacnet_sim::Device;
use common::free_port;
use common::spine::{Spine, device_config};
use std::time::{Duration, Instant};

/// The supervisor's name for the device every test configures.
const AHU: &str = "bacnet:ahu";

impl Spine {
    /// Starts the one device of a `[[devices.bacnet]]` table the way the daemon does.
    async fn start_device(&self, table: &str) -> BacnetSlot {
        let device = device_config(table)
            .devices
            .bacnet
            .into_iter()
            .next()
            .expect("a device");
        let name = format!("bacnet:{}", device.name);
        let spawn = BacnetSpawn::new(device, self.journal.clone());
        let slot = spawn.slot();
        self.start_child(name, spawn).await;
        slot
    }

    async fn overrides(&self) -> Vec<(String, u8, serde_json::Value)> {
        let list = ListOverrides {
            device: "ahu".into(),
        };
        journal::ask(&self.journal, list)
            .await
            .expect("overrides")
            .into_iter()
            .map(|o| (o.object, o.priority, o.value))
            .collect()
    }

    async fn stop_device(&self) {
        self.supervisor
            .send(StopChild(AHU.into()))
            .await
            .expect("stop child");
    }
}

/// A device table for the simulator on `port`; `extra` adds keys (after the device's own).
fn table(port: u16, address: bool, extra: &str, objects: &str) -> String {
    let address = if address {
        format!("address = \"127.0.0.2:{port}\"\n")
    } else {
        String::new()
    };
    format!(
        "[[devices.bacnet]]\nname = \"ahu\"\ndevice_instance = 599\n{address}bind = \"127.0.0.3:{port}\"\n\
         broadcast = \"127.255.255.255:{port}\"\ntimeout_ms = 300\nretries = 1\npoll_interval_ms = 200\n{extra}\n{objects}"
    )
}

const OBJECTS: &str = "\
[[devices.bacnet.objects]]\nname = \"setpoint\"\ntype = \"analog-value\"\ninstance = 1\nwritable = true\n\
[[devices.bacnet.objects]]\nname = \"co2\"\ntype = \"analog-input\"\ninstance = 1\n\
[[devices.bacnet.objects]]\nname = \"zone_temp\"\ntype = \"analog-input\"\ninstance = 2\n\
[[devices.bacnet.objects]]\nname = \"fan\"\ntype = \"binary-output\"\ninstance = 1\nwritable = true\n";

async fn values(slot: &BacnetSlot) -> Vec<Reading> {
    slot.addr()
        .expect("the actor was started")
        .send(GetValues)
        .await
        .expect("values")
}

/// Waits until the device's values satisfy `done`.
async fn wait_values(slot: &BacnetSlot, done: impl Fn(&[Reading]) -> bool) -> Vec<Reading> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = values(slot).await;
        if done(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "values never as expected: {r:?}");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

fn value_of(readings: &[Reading], name: &str) -> Option<Value> {
    readings
        .iter()
        .find(|r| r.name == name)
        .and_then(|r| r.value)
}

async fn write(slot: &BacnetSlot, object: &str, value: Option<Value>) -> Result<(), BacnetError> {
    let w = BacnetWrite {
        object: object.into(),
        value,
        by: "test:staff".into(),
    };
    slot.addr().expect("started").send(w).await.expect("write")
}

async fn priority_8(slot: &BacnetSlot, object: &str) -> Option<Value> {
    let read = GetPriorityArray {
        object: object.into(),
    };
    let array = slot
        .addr()
        .expect("started")
        .send(read)
        .await
        .expect("send")
        .expect("priority array");
    assert_eq!(array.len(), 16, "{array:?}");
    array[7]
}

#[actix_rt::test]
async fn discovers_the_device_by_broadcast_and_reads_values_with_units() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _device = Device::start(port);
    let spine = Spine::start(dir.path());
    let slot = spine.start_device(&table(port, false, "", OBJECTS)).await;
    let readings = wait_values(&slot, |r| r.iter().all(|r| r.value.is_some())).await;
    let get = |name: &str| readings.iter().find(|r| r.name == name).expect("reading");
    assert_eq!(get("co2").value, Some(Value::Number(612.0)));
    assert_eq!(get("co2").units.as_deref(), Some("parts-per-million"));
    assert_eq!(get("co2").object, "analog-input,1");
    assert_eq!(get("zone_temp").value, Some(Value::Number(21.5)));
    assert_eq!(get("zone_temp").units.as_deref(), Some("degrees-celsius"));
    assert_eq!(get("setpoint").value, Some(Value::Number(21.0)));
    assert_eq!(get("fan").value, Some(Value::Bool(false)));
    assert_eq!(get("fan").units, None);
    spine.wait_health(AHU, HealthState::Healthy, |_| true).await;
    let events = spine.cloud_events("device.reading").await;
    let first = events.first().expect("a reading event");
    assert_eq!(first["device"], "ahu");
    let co2 = first["readings"]
        .as_array()
        .expect("readings")
        .iter()
        .find(|r| r["name"] == "co2")
        .expect("co2 in the event");
    assert_eq!(co2["value"], 612.0);
    assert_eq!(co2["unit"], "parts-per-million");
    // Unchanged values are not journaled again before the heartbeat: two more polls read them
    // (each poll's events are committed before the next poll starts) and add no event.
    for _ in 0..2 {
        let read = values(&slot).await[0].read_at;
        wait_values(&slot, |r| r[0].read_at > read).await;
    }
    assert!(spine.cloud_events("device.reading").await.is_empty());
    spine.stop().await;
}

#[actix_rt::test]
async fn writes_at_priority_8_then_relinquishes_to_the_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _device = Device::start(port);
    let spine = Spine::start(dir.path());
    let slot = spine.start_device(&table(port, true, "", OBJECTS)).await;
    wait_values(&slot, |r| r.iter().all(|r| r.value.is_some())).await;

    write(&slot, "setpoint", Some(Value::Number(23.5)))
        .await
        .expect("write");
    assert_eq!(
        priority_8(&slot, "setpoint").await,
        Some(Value::Number(23.5))
    );
    wait_values(&slot, |r| {
        value_of(r, "setpoint") == Some(Value::Number(23.5))
    })
    .await;
    assert_eq!(
        spine.overrides().await,
        vec![("analog-value,1".to_string(), 8, serde_json::json!(23.5))]
    );
    write(&slot, "fan", Some(Value::Bool(true)))
        .await
        .expect("fan on");
    wait_values(&slot, |r| value_of(r, "fan") == Some(Value::Bool(true))).await;

    write(&slot, "setpoint", None).await.expect("relinquish");
    assert_eq!(priority_8(&slot, "setpoint").await, None);
    wait_values(&slot, |r| {
        value_of(r, "setpoint") == Some(Value::Number(21.0))
    })
    .await;
    write(&slot, "fan", None).await.expect("relinquish fan");
    wait_values(&slot, |r| value_of(r, "fan") == Some(Value::Bool(false))).await;
    assert!(spine.overrides().await.is_empty());

    let refused = write(&slot, "co2", Some(Value::Number(1.0))).await;
    assert!(
        matches!(refused, Err(BacnetError::NotWritable { .. })),
        "{refused:?}"
    );
    let wrong = write(&slot, "fan", Some(Value::Number(1.0))).await;
    assert!(
        matches!(wrong, Err(BacnetError::Encode { .. })),
        "{wrong:?}"
    );

    let audit = journal::ask(&spine.journal, ListAudit::newest(10))
        .await
        .expect("audit");
    let writes: Vec<_> = audit
        .iter()
        .filter(|a| a.action == "device-write")
        .collect();
    assert_eq!(writes.len(), 4, "{audit:?}");
    assert!(writes.iter().all(|a| a.actor == "test:staff"));
    let outcomes = spine.cloud_events("device.write").await;
    assert_eq!(outcomes.len(), 4, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| o["ok"] == true), "{outcomes:?}");
    spine.stop().await;
}

#[actix_rt::test]
async fn cov_notifications_bring_changes_between_polls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut device = Device::start(port);
    let spine = Spine::start(dir.path());
    // Polling far apart: within the test, only a notification can bring the change.
    let objects = "[[devices.bacnet.objects]]\nname = \"zone_temp\"\ntype = \"analog-input\"\ninstance = 2\nmode = \"cov\"\n";
    let t = table(port, true, "", objects)
        .replace("poll_interval_ms = 200", "poll_interval_ms = 600000");
    let slot = spine.start_device(&t).await;
    wait_values(&slot, |r| r[0].value.is_some() && r[0].cov).await;
    spine.wait_health(AHU, HealthState::Healthy, |_| true).await;
    spine.cloud_events("device.reading").await;
    device.set("analog-input,2", 23.0);
    let r = wait_values(&slot, |r| r[0].value == Some(Value::Number(23.0))).await;
    assert!(r[0].cov, "{r:?}");
    let events = spine.cloud_events("device.reading").await;
    assert!(
        events.iter().any(|e| e["readings"][0]["value"] == 23.0),
        "{events:?}"
    );
    spine.stop().await;
}

#[actix_rt::test]
async fn an_unknown_object_is_named_in_its_error_while_the_rest_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _device = Device::start(port);
    let spine = Spine::start(dir.path());
    let objects = format!(
        "{OBJECTS}[[devices.bacnet.objects]]\nname = \"missing\"\ntype = \"analog-input\"\ninstance = 99\n"
    );
    let slot = spine.start_device(&table(port, true, "", &objects)).await;
    let h = spine
        .wait_health(AHU, HealthState::Degraded, |h| h.last_error.is_some())
        .await;
    let error = h.last_error.expect("error");
    assert!(
        error.contains("analog-input,99 (missing), present-value")
            && error.contains("unknown-object"),
        "{error}"
    );
    let r = wait_values(&slot, |r| value_of(r, "co2").is_some()).await;
    let missing = r.iter().find(|r| r.name == "missing").expect("missing");
    assert!(
        missing.value.is_none() && missing.error.is_some(),
        "{missing:?}"
    );
    spine.stop().await;
}

#[actix_rt::test]
async fn reads_property_by_property_when_read_multiple_is_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _device = Device::start(port);
    let spine = Spine::start(dir.path());
    let slot = spine
        .start_device(&table(port, true, "read_multiple = false", OBJECTS))
        .await;
    let r = wait_values(&slot, |r| r.iter().all(|r| r.value.is_some())).await;
    let co2 = r.iter().find(|r| r.name == "co2").expect("co2");
    assert_eq!(co2.value, Some(Value::Number(612.0)));
    assert_eq!(co2.units.as_deref(), Some("parts-per-million"));
    spine.wait_health(AHU, HealthState::Healthy, |_| true).await;
    spine.stop().await;
}

#[actix_rt::test]
async fn cov_subscriptions_are_renewed_before_they_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut device = Device::start(port);
    let spine = Spine::start(dir.path());
    let objects = "[[devices.bacnet.objects]]\nname = \"zone_temp\"\ntype = \"analog-input\"\ninstance = 2\nmode = \"cov\"\n";
    let t = table(port, true, "cov_lifetime_s = 10", objects)
        .replace("poll_interval_ms = 200", "poll_interval_ms = 600000");
    let slot = spine.start_device(&t).await;
    wait_values(&slot, |r| r[0].value.is_some() && r[0].cov).await;
    // Past the first lifetime: without a renewal the device has dropped the subscription.
    actix_rt::time::sleep(Duration::from_secs(12)).await;
    device.set("analog-input,2", 24.0);
    let r = wait_values(&slot, |r| r[0].value == Some(Value::Number(24.0))).await;
    assert!(r[0].cov, "{r:?}");
    spine.stop().await;
}

#[actix_rt::test]
async fn a_refused_cov_subscription_falls_back_to_polling() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut device = Device::start_with(port, &["--no-cov", "analog-input,2"]);
    let spine = Spine::start(dir.path());
    let objects = "[[devices.bacnet.objects]]\nname = \"zone_temp\"\ntype = \"analog-input\"\ninstance = 2\nmode = \"cov\"\n";
    let slot = spine.start_device(&table(port, true, "", objects)).await;
    let r = wait_values(&slot, |r| r[0].value == Some(Value::Number(21.5))).await;
    assert!(!r[0].cov, "{r:?}");
    // Polled, and not degraded for it: the object is read in full.
    spine.wait_health(AHU, HealthState::Healthy, |_| true).await;
    device.set("analog-input,2", 22.0);
    wait_values(&slot, |r| r[0].value == Some(Value::Number(22.0))).await;
    spine.stop().await;
}

#[actix_rt::test]
async fn a_device_gone_is_degraded_with_the_object_named_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let device = Device::start(port);
    let spine = Spine::start(dir.path());
    let slot = spine.start_device(&table(port, true, "", OBJECTS)).await;
    spine.wait_health(AHU, HealthState::Healthy, |_| true).await;
    drop(device);
    let h = spine
        .wait_health(AHU, HealthState::Degraded, |h| {
            h.last_error
                .as_deref()
                .is_some_and(|e| e.contains("no answer"))
        })
        .await;
    let error = h.last_error.expect("error");
    assert!(
        error.starts_with("bacnet device ahu: device ahu, "),
        "{error}"
    );
    assert!(error.contains("analog-input,1 (co2)"), "{error}");
    assert!(error.contains("present-value"), "{error}");
    let readings = values(&slot).await;
    assert!(readings.iter().all(|r| r.error.is_some()), "{readings:?}");
    assert!(
        write(&slot, "setpoint", Some(Value::Number(22.0)))
            .await
            .is_err(),
        "a write to a gone device fails"
    );

    let _device = Device::start(port);
    spine.wait_health(AHU, HealthState::Healthy, |_| true).await;
    let r = wait_values(&slot, |r| r.iter().all(|r| r.error.is_none())).await;
    assert_eq!(value_of(&r, "co2"), Some(Value::Number(612.0)));
    spine.stop().await;
}

#[actix_rt::test]
async fn an_override_left_by_a_stopped_gateway_is_relinquished_on_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _device = Device::start(port);
    let spine = Spine::start(dir.path());
    let t = table(port, true, "", OBJECTS);
    let slot = spine.start_device(&t).await;
    wait_values(&slot, |r| r.iter().all(|r| r.value.is_some())).await;
    write(&slot, "setpoint", Some(Value::Number(24.0)))
        .await
        .expect("write");
    spine.stop_device().await;
    assert_eq!(spine.overrides().await.len(), 1);

    let slot = spine.start_device(&t).await;
    wait_values(&slot, |r| {
        value_of(r, "setpoint") == Some(Value::Number(21.0))
    })
    .await;
    assert_eq!(priority_8(&slot, "setpoint").await, None);
    assert!(spine.overrides().await.is_empty());
    let audit = journal::ask(&spine.journal, ListAudit::newest(10))
        .await
        .expect("audit");
    assert!(
        audit.iter().any(|a| a.actor == "gateway:start-relinquish"),
        "{audit:?}"
    );
    spine.stop().await;
}

#[actix_rt::test]
async fn an_override_is_reasserted_on_start_when_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let device = Device::start(port);
    let spine = Spine::start(dir.path());
    let t = table(port, true, "on_start = \"reassert\"", OBJECTS);
    let slot = spine.start_device(&t).await;
    wait_values(&slot, |r| r.iter().all(|r| r.value.is_some())).await;
    write(&slot, "setpoint", Some(Value::Number(24.0)))
        .await
        .expect("write");
    spine.stop_device().await;
    // A fresh device (a controller restarted meanwhile) holds nothing at priority 8.
    drop(device);
    let _device = Device::start(port);

    let slot = spine.start_device(&t).await;
    wait_values(&slot, |r| {
        value_of(r, "setpoint") == Some(Value::Number(24.0))
    })
    .await;
    assert_eq!(
        priority_8(&slot, "setpoint").await,
        Some(Value::Number(24.0))
    );
    assert_eq!(spine.overrides().await.len(), 1);
    spine.stop().await;
}
