//! Facility device actors: one supervised actor per configured device. Each turns readings and
//! state changes into journal events for the cloud.
//!
//! **Invariant:** device actors never touch SQLite or MQTT-to-cloud directly: they send
//! `Append` to the journal writer and report health to the supervisor.

use crate::config::Config;
use crate::journal::{JournalWriter, NewItem};
use crate::supervisor::Spawn;
use actix::Addr;
use serde::Deserialize;

/// Every `[[devices.<kind>]]` table of the configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DevicesConfig {}

impl DevicesConfig {
    /// Reports every problem as (dotted key with `[index]` for arrays, message).
    pub fn validate(&self, _config: &Config, _bad: &mut dyn FnMut(&str, String)) {}
}

/// A device child: its supervisor name and how to start it.
pub type DeviceChild = (String, Box<dyn Spawn>);

/// One supervised child per configured device.
pub fn spawns(
    _config: &Config,
    _journal: &Addr<JournalWriter>,
) -> Result<Vec<DeviceChild>, String> {
    Ok(Vec::new())
}

/// An event from a device for the cloud, keyed by the device so that its events stay in order.
pub fn device_event(device: &str, kind: &str, payload: serde_json::Value) -> NewItem {
    NewItem {
        source: format!("device:{device}"),
        source_id: None,
        kind: kind.into(),
        key: format!("device:{device}"),
        schema: format!("clinic-gateway/{kind}@1"),
        payload: payload.to_string().into_bytes(),
        reply: None,
        occurred_at: None,
        destinations: vec![crate::CLOUD.into()],
    }
}
