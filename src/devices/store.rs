//! The priority-array slots a device actor holds in a building device (`device_override`),
//! remembered so that no override outlives the gateway's knowledge of it. Functions run inside
//! the journal writer's transaction ([`Tx`]).

use crate::journal::{JournalError, Schema, Tx};
use rusqlite::params;
use serde::Serialize;

/// A value the gateway holds in a building device's priority array.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceOverride {
    pub device: String,
    /// The point as the device's protocol names it (e.g. `analog-value,1`).
    pub object: String,
    pub priority: u8,
    /// The value written (JSON: a number or a bool).
    pub value: serde_json::Value,
    /// Who asked for it.
    pub by: String,
    /// When it was written (ms since the epoch).
    pub set_at: i64,
}

/// The devices' migrations. Step 1 was the journal's schema version 4 before each domain owned
/// its tables.
pub const SCHEMA: Schema = Schema {
    domain: "devices",
    steps: &[r#"
CREATE TABLE device_override (
    device   TEXT    NOT NULL,
    object   TEXT    NOT NULL,
    priority INTEGER NOT NULL,
    value    TEXT    NOT NULL,
    by       TEXT    NOT NULL,
    set_at   INTEGER NOT NULL,
    PRIMARY KEY (device, object, priority)
);
"#],
    legacy: &[(4, 1)],
};

/// Remembers that the gateway holds `object` of `device` at `priority` with `value` (JSON),
/// replacing what was remembered for that slot.
pub fn set_override(tx: &mut Tx<'_>, o: &DeviceOverride) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached(
            "INSERT OR REPLACE INTO device_override (device, object, priority, value, by, set_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            o.device,
            o.object,
            o.priority,
            o.value.to_string(),
            o.by,
            o.set_at
        ])?;
    Ok(())
}

/// Forgets the override of one priority slot; true if there was one.
pub fn clear_override(
    tx: &mut Tx<'_>,
    device: &str,
    object: &str,
    priority: u8,
) -> Result<bool, JournalError> {
    let n = tx
        .sql()
        .prepare_cached(
            "DELETE FROM device_override WHERE device = ?1 AND object = ?2 AND priority = ?3",
        )?
        .execute(params![device, object, priority])?;
    Ok(n > 0)
}

/// The overrides remembered for `device`, oldest first.
pub fn overrides(tx: &mut Tx<'_>, device: &str) -> Result<Vec<DeviceOverride>, JournalError> {
    let rows = tx
        .sql()
        .prepare_cached(
            "SELECT device, object, priority, value, by, set_at FROM device_override
              WHERE device = ?1 ORDER BY set_at, object, priority",
        )?
        .query_map([device], |r| {
            let value: String = r.get(3)?;
            Ok(DeviceOverride {
                device: r.get(0)?,
                object: r.get(1)?,
                priority: r.get(2)?,
                // Written by `set_override` from a JSON value; unreadable text (a hand-edited
                // row) still names the slot, which is what relinquishing needs.
                value: serde_json::from_str(&value).unwrap_or(serde_json::Value::Null),
                by: r.get(4)?,
                set_at: r.get(5)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests;
