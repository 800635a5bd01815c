//! `[[devices.bacnet]]`: one BACnet/IP device per table, with the objects read from it.
//!
//! Parsed by serde and checked once by [`validate`]; the actor only ever sees a device that
//! passed it.

use super::protocol::ObjectKind;
use crate::settings::check_name;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

/// One BACnet/IP device: how to find it, how to talk to it, and what to read.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BacnetDevice {
    /// Unique device name: the supervisor names the actor `bacnet:<name>` and every event
    /// carries it. Letters, digits, `-` and `_`.
    pub name: String,
    /// The device object's instance number (0 to 4194302), as its I-Am announces it.
    pub device_instance: u32,
    /// The device's `ip:port`. Without it the device is found by Who-Is to `broadcast`.
    #[serde(default)]
    pub address: Option<SocketAddr>,
    /// Local `ip:port` the gateway's socket binds. BACnet devices answer to the port a request
    /// came from, and COV notifications go to it. Bind a specific address: `0.0.0.0:47808`
    /// collides with any other BACnet stack on the same host.
    #[serde(default = "default_bind")]
    pub bind: SocketAddr,
    /// Where Who-Is goes when `address` is not set: the subnet's broadcast address and the
    /// BACnet port (e.g. `192.168.1.255:47808`).
    #[serde(default = "default_broadcast")]
    pub broadcast: SocketAddr,
    /// Priority (1 to 16) of the gateway's writes in the objects' priority arrays. 8 is
    /// "manual operator"; lower numbers override more.
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// How long one request waits for its answer before it is sent again.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How many times a request is sent again after a timeout before it fails.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Time between two reads of the `poll` objects (and between discovery attempts while the
    /// device is unknown), at least 100.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Lifetime asked for each COV subscription, 10 to 86400 seconds; renewed at half of it.
    #[serde(default = "default_cov_lifetime_s")]
    pub cov_lifetime_s: u32,
    /// Read a poll's objects with one ReadPropertyMultiple; when the device does not support
    /// it (or `false`), one ReadProperty per property.
    #[serde(default = "default_read_multiple")]
    pub read_multiple: bool,
    /// What to do at start with overrides the gateway left in effect before it stopped:
    /// `relinquish` (default) or `reassert`.
    #[serde(default)]
    pub on_start: OnStart,
    /// Readings equal to the last event's are journaled only when this many seconds passed
    /// since that event; 0 journals every poll.
    #[serde(default = "default_heartbeat_s")]
    pub heartbeat_s: u64,
    /// What to read, one entry per object.
    pub objects: Vec<BacnetObject>,
}

/// One object of the device.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BacnetObject {
    /// Name of the reading in events, values and writes (e.g. `zone_temp`); unique per device.
    pub name: String,
    /// Object type: `analog-input`, `analog-output`, `analog-value`, `binary-input`,
    /// `binary-output`, `binary-value`, `multi-state-input`, `multi-state-output` or
    /// `multi-state-value`.
    #[serde(rename = "type")]
    pub kind: ObjectKind,
    /// Object instance number (0 to 4194302).
    pub instance: u32,
    /// `poll` (read every `poll_interval_ms`) or `cov` (SubscribeCOV; polled when the device
    /// refuses the subscription).
    #[serde(default)]
    pub mode: Mode,
    /// Whether the gateway may write the object's present value (outputs and values only).
    #[serde(default)]
    pub writable: bool,
}

/// How an object's value reaches the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Read every poll interval.
    #[default]
    Poll,
    /// Change-of-value notifications from the device.
    Cov,
}

/// What becomes of the gateway's own overrides when it starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStart {
    /// Write Null at the override's priority: the building's own control takes over again.
    #[default]
    Relinquish,
    /// Write the remembered value again: for overrides that must hold across restarts.
    Reassert,
}

fn default_bind() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 47808))
}
fn default_broadcast() -> SocketAddr {
    SocketAddr::from(([255, 255, 255, 255], 47808))
}
fn default_priority() -> u8 {
    8
}
fn default_timeout_ms() -> u64 {
    3_000
}
fn default_retries() -> u32 {
    2
}
fn default_poll_interval_ms() -> u64 {
    10_000
}
fn default_cov_lifetime_s() -> u32 {
    300
}
fn default_read_multiple() -> bool {
    true
}
fn default_heartbeat_s() -> u64 {
    300
}

/// The highest object and device instance number (22 bits, 4194303 means "unconfigured").
pub const MAX_INSTANCE: u32 = 4_194_302;

impl BacnetDevice {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// The longest one request can take with all its retries.
    pub fn request_budget(&self) -> Duration {
        self.timeout()
            .saturating_mul(self.retries.saturating_add(1))
    }

    /// When a COV subscription is renewed: at half its lifetime, so that one lost renewal
    /// still leaves time for the next.
    pub fn cov_renewal(&self) -> Duration {
        Duration::from_secs(u64::from(self.cov_lifetime_s) / 2)
    }

    pub fn object(&self, name: &str) -> Option<(usize, &BacnetObject)> {
        self.objects
            .iter()
            .enumerate()
            .find(|(_, o)| o.name == name)
    }
}

/// Reports every problem of the `[[devices.bacnet]]` tables as (key, message).
pub fn validate(devices: &[BacnetDevice], bad: &mut dyn FnMut(&str, String)) {
    let mut names = BTreeSet::new();
    let mut binds = BTreeSet::new();
    for (i, d) in devices.iter().enumerate() {
        let key = |field: &str| format!("devices.bacnet[{i}].{field}");
        check_name(&d.name, &key("name"), &mut names, "BACnet device", bad);
        if d.device_instance > MAX_INSTANCE {
            bad(
                &key("device_instance"),
                format!("must be 0 to {MAX_INSTANCE}"),
            );
        }
        if d.bind.port() == 0 {
            bad(
                &key("bind"),
                "needs a port: devices answer and send COV notifications to it".into(),
            );
        }
        // Two actors on one socket would take each other's answers.
        if !binds.insert(d.bind) {
            bad(
                &key("bind"),
                format!("{} is already bound by another BACnet device", d.bind),
            );
        }
        if let Some(a) = d.address
            && (a.port() == 0 || a.ip().is_unspecified())
        {
            bad(&key("address"), "must be a device's ip:port".into());
        }
        if d.address.is_none() && d.broadcast.port() == 0 {
            bad(&key("broadcast"), "needs the BACnet port".into());
        }
        if !(1..=16).contains(&d.priority) {
            bad(&key("priority"), "must be 1 to 16".into());
        }
        if d.timeout_ms == 0 {
            bad(&key("timeout_ms"), "must be at least 1".into());
        }
        if d.retries > 10 {
            bad(&key("retries"), "must be at most 10".into());
        }
        if d.poll_interval_ms < 100 {
            bad(&key("poll_interval_ms"), "must be at least 100".into());
        }
        if !(10..=86_400).contains(&d.cov_lifetime_s) {
            bad(&key("cov_lifetime_s"), "must be 10 to 86400".into());
        }
        if d.objects.is_empty() {
            bad(&key("objects"), "needs at least one object".into());
        }
        let mut object_names = BTreeSet::new();
        let mut ids = BTreeSet::new();
        for (j, o) in d.objects.iter().enumerate() {
            let key = |field: &str| format!("devices.bacnet[{i}].objects[{j}].{field}");
            check_name(
                &o.name,
                &key("name"),
                &mut object_names,
                "object of this device",
                bad,
            );
            if o.instance > MAX_INSTANCE {
                bad(&key("instance"), format!("must be 0 to {MAX_INSTANCE}"));
            } else if !ids.insert((o.kind, o.instance)) {
                bad(
                    &key("instance"),
                    format!("{} {} is configured twice", o.kind.as_str(), o.instance),
                );
            }
            if o.writable && !o.kind.commandable() {
                bad(
                    &key("writable"),
                    format!("an {} cannot be written", o.kind.as_str()),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BacnetDevice;
    use crate::settings;

    /// The `[[devices.bacnet]]` tables of `devices`, checked; their problems as `key: message`.
    fn check(devices: &str) -> Vec<String> {
        match settings::section::<Vec<BacnetDevice>>(devices, "devices.bacnet") {
            Ok(d) => settings::keyed(settings::collect(|bad| super::validate(&d, bad))),
            Err(e) => vec![e],
        }
    }

    fn read(devices: &str) -> Vec<BacnetDevice> {
        settings::section(devices, "devices.bacnet").expect("valid")
    }

    const OBJ: &str =
        "[[devices.bacnet.objects]]\nname = \"sp\"\ntype = \"analog-value\"\ninstance = 1\n";

    #[test]
    fn a_valid_device_gets_defaults() {
        let devices = read(&format!(
            "[[devices.bacnet]]\nname = \"ahu\"\ndevice_instance = 599\n{OBJ}"
        ));
        let d = &devices[0];
        assert_eq!(d.priority, 8);
        assert_eq!(d.bind.to_string(), "0.0.0.0:47808");
        assert_eq!(d.broadcast.to_string(), "255.255.255.255:47808");
        assert_eq!(d.on_start, super::OnStart::Relinquish);
        assert_eq!(d.objects[0].mode, super::Mode::Poll);
    }

    #[test]
    fn every_problem_is_named_by_its_key() {
        let problems = check(&format!(
            "[[devices.bacnet]]\nname = \"a\"\ndevice_instance = 4194303\npriority = 0\nbind = \"127.0.0.3:0\"\ncov_lifetime_s = 5\n{OBJ}\
             [[devices.bacnet.objects]]\nname = \"sp\"\ntype = \"analog-input\"\ninstance = 1\nwritable = true\n\
             [[devices.bacnet.objects]]\nname = \"x\"\ntype = \"analog-value\"\ninstance = 1\n\
             [[devices.bacnet]]\nname = \"b\"\ndevice_instance = 1\npriority = 17\nbind = \"127.0.0.3:0\"\n{OBJ}"
        ));
        let expected = [
            "devices.bacnet[0].device_instance: must be 0 to 4194302",
            "devices.bacnet[0].bind: needs a port: devices answer and send COV notifications to it",
            "devices.bacnet[0].priority: must be 1 to 16",
            "devices.bacnet[0].cov_lifetime_s: must be 10 to 86400",
            "devices.bacnet[0].objects[1].name: another object of this device is already named \"sp\"",
            "devices.bacnet[0].objects[1].writable: an analog-input cannot be written",
            "devices.bacnet[0].objects[2].instance: analog-value 1 is configured twice",
            "devices.bacnet[1].bind: needs a port: devices answer and send COV notifications to it",
            "devices.bacnet[1].bind: 127.0.0.3:0 is already bound by another BACnet device",
            "devices.bacnet[1].priority: must be 1 to 16",
        ];
        assert_eq!(problems, expected);
        let unknown = check(
            "[[devices.bacnet]]\nname = \"a\"\ndevice_instance = 1\n[[devices.bacnet.objects]]\nname = \"x\"\ntype = \"calendar\"\ninstance = 1\n",
        );
        assert!(
            unknown[0].contains("unknown variant `calendar`"),
            "{unknown:?}"
        );
    }
}
