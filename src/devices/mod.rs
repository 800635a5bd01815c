//! Facility device actors: one supervised actor per configured device. Each turns readings and
//! state changes into journal events for the cloud.
//!
//! **Invariant:** device actors never touch SQLite or MQTT-to-cloud directly: they send
//! `Append` to the journal writer and report health to the supervisor.

pub mod modbus;
pub mod occupancy;
pub mod printer;

use crate::config::Config;
use crate::journal::{self, Append, AuditRecord, JournalError, JournalWriter, NewItem};
use crate::supervisor::Spawn;
use actix::Addr;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;

/// Every `[[devices.<kind>]]` table of the configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DevicesConfig {
    /// Room occupancy sensors on a local MQTT broker (`[devices.occupancy]`).
    #[serde(default)]
    pub occupancy: Option<crate::devices::occupancy::config::OccupancyConfig>,
    /// Modbus TCP and RTU sensors, one `[[devices.modbus]]` table each.
    #[serde(default)]
    pub modbus: Vec<crate::devices::modbus::config::ModbusDevice>,
    /// ESC/POS kiosk ticket printers on serial ports, one `[[devices.printer]]` table each.
    #[serde(default)]
    pub printer: Vec<crate::devices::printer::config::PrinterConfig>,
}

impl DevicesConfig {
    /// Reports every problem as (dotted key with `[index]` for arrays, message).
    pub fn validate(&self, config: &Config, bad: &mut dyn FnMut(&str, String)) {
        if let Some(o) = &self.occupancy {
            o.validate(config, bad);
        }
        modbus::config::validate(&self.modbus, bad);
        printer::config::validate(&self.printer, bad);
    }
}

/// A device child: its supervisor name and how to start it.
pub type DeviceChild = (String, Box<dyn Spawn>);

/// One supervised child per configured device, and the facility rules over them (which reach
/// the devices through their slots, and are reached through `facility`).
pub fn spawns(
    config: &Config,
    journal: &Addr<JournalWriter>,
    facility: &crate::facility::FacilitySlot,
) -> Result<Vec<DeviceChild>, String> {
    let mut children: Vec<DeviceChild> = Vec::new();
    let mut handles = Handles::default();
    if let Some(o) = &config.devices.occupancy {
        let spawn =
            occupancy::OccupancySpawn::new(config, o, journal).map_err(|e| e.to_string())?;
        handles.occupancy = Some(spawn.handle.clone());
        children.push((occupancy::NAME.into(), Box::new(spawn)));
    }
    for device in &config.devices.modbus {
        let spawn = modbus::ModbusSpawn::new(device.clone(), journal.clone());
        handles.modbus.insert(device.name.clone(), spawn.slot());
        children.push((format!("modbus:{}", device.name), Box::new(spawn)));
    }
    for p in &config.devices.printer {
        let spawn = printer::PrinterSpawn::new(p.clone(), journal.clone());
        children.push((printer::destination(&p.name), Box::new(spawn)));
    }
    if !config.facility.is_empty() {
        let spawn = crate::facility::FacilitySpawn::new(
            config.facility.clone(),
            handles,
            journal.clone(),
            facility.clone(),
        );
        children.push((crate::facility::NAME.into(), Box::new(spawn)));
    }
    Ok(children)
}

/// A value written to a device point.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Setting {
    Bool(bool),
    Number(f64),
}

/// How other actors reach the running devices: their slots, by device name.
#[derive(Clone, Default)]
pub struct Handles {
    pub occupancy: Option<occupancy::OccupancyHandle>,
    pub modbus: BTreeMap<String, modbus::ActorSlot>,
}

impl Handles {
    /// The latest good value of a device point (a bool as 0 or 1); `None` while it is unknown
    /// or its last read failed.
    pub async fn point(&self, device: &str, point: &str) -> Option<f64> {
        let actor = self.modbus.get(device)?.addr()?;
        let readings = actor.send(modbus::GetReadings).await.ok()?;
        let r = readings.into_iter().find(|r| r.name == point)?;
        if r.error.is_some() {
            return None;
        }
        match r.value? {
            modbus::protocol::Value::Number(n) => Some(n),
            modbus::protocol::Value::Bool(b) => Some(f64::from(u8::from(b))),
        }
    }

    /// Writes `value` to a device point as `by`, audited (see [`audited`]); `None` gives the
    /// point back to the building's own control (a BACnet relinquish).
    pub async fn write(
        &self,
        device: &str,
        point: &str,
        value: Option<Setting>,
        by: &str,
    ) -> Result<(), String> {
        let actor = self
            .modbus
            .get(device)
            .and_then(|s| s.addr())
            .ok_or_else(|| format!("device {device} is not running"))?;
        let value = match value {
            Some(Setting::Number(n)) => modbus::protocol::Value::Number(n),
            Some(Setting::Bool(b)) => modbus::protocol::Value::Bool(b),
            None => {
                return Err(format!(
                    "{device} {point}: Modbus has no priority array to relinquish"
                ));
            }
        };
        let write = modbus::Write {
            register: point.into(),
            value,
            by: by.into(),
        };
        match actor.send(write).await {
            Ok(r) => r.map_err(|e| format!("{device}: {e}")),
            Err(_) => Err(format!("device {device} stopped")),
        }
    }
}

/// A write to a building system: who asked, and what is set to which value.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceWrite {
    /// Who asked (e.g. `rule:crowding-waiting-a`, `api:staff`), recorded in the audit.
    pub by: String,
    pub device: String,
    /// The point written (register, object/property) as the device's configuration names it.
    pub point: String,
    pub value: serde_json::Value,
}

/// Runs `write` as an audited write to a building system. The audit record is committed before
/// anything goes on the wire, so a write the gateway made is never missing from the audit (even
/// if it crashes before the answer); if it cannot be committed, nothing is written. The outcome
/// follows as a `device.write` event for the cloud.
pub async fn audited<E>(
    journal: &Addr<JournalWriter>,
    w: DeviceWrite,
    write: impl Future<Output = Result<(), E>>,
) -> Result<(), E>
where
    E: std::fmt::Display + From<JournalError>,
{
    let audit = AuditRecord {
        actor: w.by.clone(),
        action: "device-write".into(),
        detail: format!("{} {} = {}", w.device, w.point, w.value),
    };
    journal::ask(journal, audit).await?;
    let result = write.await;
    let payload = serde_json::json!({
        "point": w.point,
        "value": w.value,
        "by": w.by,
        "ok": result.is_ok(),
        "error": result.as_ref().err().map(ToString::to_string),
    });
    // The write is done (or failed) either way: a refused outcome event must not turn a
    // successful write into an error, so it is only logged.
    if let Err(e) = journal::ask(
        journal,
        Append(device_event(&w.device, "device.write", payload)),
    )
    .await
    {
        tracing::warn!(device = %w.device, point = %w.point, error = %e, "device write outcome not journaled");
    }
    result
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
