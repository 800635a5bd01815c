//! Facility device actors: one supervised actor per configured device. Each turns readings and
//! state changes into journal events for the cloud.
//!
//! **Invariant:** device actors never touch SQLite or MQTT-to-cloud directly: they send
//! `Append` to the journal writer and report health to the supervisor.

pub mod bacnet;
pub mod config;
pub mod modbus;
pub mod occupancy;
pub mod printer;
pub mod requests;
pub mod store;
pub mod value;

pub use config::DevicesConfig;
pub use requests::{ClearOverride, ListOverrides, SetOverride};
pub use store::DeviceOverride;
pub use value::Value;

use crate::journal::{self, Append, AuditRecord, JournalError, JournalWriter, NewItem};
use actix::Addr;
use std::collections::BTreeMap;
use std::future::Future;

/// How other actors reach the running devices: their slots, by device name.
#[derive(Clone, Default)]
pub struct Handles {
    pub occupancy: Option<occupancy::OccupancyHandle>,
    pub modbus: BTreeMap<String, modbus::ActorSlot>,
    pub bacnet: BTreeMap<String, bacnet::BacnetSlot>,
}

impl Handles {
    /// The latest good value of a device point (a bool as 0 or 1); `None` while it is unknown
    /// or its last read failed.
    pub async fn point(&self, device: &str, point: &str) -> Option<f64> {
        let value = if let Some(slot) = self.modbus.get(device) {
            let readings = slot.addr()?.send(modbus::GetReadings).await.ok()?;
            let r = readings.into_iter().find(|r| r.name == point)?;
            r.error.is_none().then_some(r.value).flatten()
        } else {
            let readings = self
                .bacnet
                .get(device)?
                .addr()?
                .send(bacnet::GetValues)
                .await
                .ok()?;
            let r = readings.into_iter().find(|r| r.name == point)?;
            r.error.is_none().then_some(r.value).flatten()
        };
        match value? {
            Value::Number(n) => Some(n),
            Value::Bool(b) => Some(f64::from(u8::from(b))),
        }
    }

    /// Writes `value` to a device point as `by`, audited (see [`audited`]); `None` gives the
    /// point back to the building's own control (a BACnet relinquish).
    pub async fn write(
        &self,
        device: &str,
        point: &str,
        value: Option<Value>,
        by: &str,
    ) -> Result<(), String> {
        let not_running = || format!("device {device} is not running");
        let stopped = |_| format!("device {device} stopped");
        if let Some(slot) = self.modbus.get(device) {
            let value = value.ok_or_else(|| {
                format!("{device} {point}: Modbus has no priority array to relinquish")
            })?;
            let write = modbus::Write {
                register: point.into(),
                value,
                by: by.into(),
            };
            let actor = slot.addr().ok_or_else(not_running)?;
            return actor
                .send(write)
                .await
                .map_err(stopped)?
                .map_err(|e| format!("{device}: {e}"));
        }
        let actor = self
            .bacnet
            .get(device)
            .and_then(|s| s.addr())
            .ok_or_else(not_running)?;
        let write = bacnet::BacnetWrite {
            object: point.into(),
            value,
            by: by.into(),
        };
        actor
            .send(write)
            .await
            .map_err(stopped)?
            .map_err(|e| format!("{device}: {e}"))
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
    let source = format!("device:{device}");
    NewItem::event(source.clone(), kind, source, &payload, &[crate::CLOUD])
}

/// Decides which readings become events: values that differ from the last event's, or the
/// first reading after `heartbeat_ms` without an event (proof that the device still reads).
#[derive(Debug, Clone, Default)]
pub struct Reporter {
    /// `None` before the first event.
    last: Option<(i64, BTreeMap<String, Value>)>,
}

impl Reporter {
    /// True when `values` read at `now_ms` should be journaled. An empty poll never is.
    /// `heartbeat_ms == 0` journals every poll.
    pub fn should_report(
        &self,
        values: &BTreeMap<String, Value>,
        now_ms: i64,
        heartbeat_ms: u64,
    ) -> bool {
        if values.is_empty() {
            return false;
        }
        match &self.last {
            None => true,
            Some((at, last)) => last != values || now_ms.saturating_sub(*at) >= heartbeat_ms as i64,
        }
    }

    /// Records that `values` were journaled at `now_ms` (only after the journal committed them,
    /// so that a refused event is tried again on the next poll).
    pub fn reported(&mut self, values: BTreeMap<String, Value>, now_ms: i64) {
        self.last = Some((now_ms, values));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reporter_reports_changes_and_heartbeats_only() {
        let values = |v: f64| BTreeMap::from([("co2".to_string(), Value::Number(v))]);
        let mut r = Reporter::default();
        assert!(!r.should_report(&BTreeMap::new(), 0, 1000), "empty poll");
        assert!(r.should_report(&values(612.0), 0, 1000), "first poll");
        r.reported(values(612.0), 0);
        assert!(!r.should_report(&values(612.0), 999, 1000), "unchanged");
        assert!(r.should_report(&values(613.0), 500, 1000), "changed");
        assert!(r.should_report(&values(612.0), 1000, 1000), "heartbeat");
        assert!(
            r.should_report(&values(612.0), 1, 0),
            "heartbeat 0: every poll"
        );
        let more = BTreeMap::from([
            ("co2".to_string(), Value::Number(612.0)),
            ("fan".to_string(), Value::Bool(true)),
        ]);
        assert!(r.should_report(&more, 10, 1000), "a register read again");
    }
}
