//! What the FHIR API reads from the journal, as [`Indexed`] resources: queue entries (through
//! the queue's own query), bookings, cached Patients, flags, scheduling suggestions and the
//! audit. Read-only: the API
//! never changes a table; the queue, the FHIR connector and the journal own theirs and their
//! migrations, and these statements follow them.

use super::resources::{self, Booking, FlagRow};
use super::search::{Indexed, Range};
use crate::journal::chain::AuditRow;
use crate::journal::{JournalError, Tx};
use rusqlite::params;

/// Every resource of `resource_type` the gateway holds (the audit aside, see [`audit_page`]).
pub fn all(
    tx: &mut Tx<'_>,
    resource_type: &str,
    facility: &str,
) -> Result<Vec<Indexed>, JournalError> {
    Ok(match resource_type {
        "Encounter" => crate::queue::store::queue_list(tx, None, Some(i64::MIN))?
            .iter()
            .map(|e| resources::encounter(e, facility))
            .collect(),
        "Appointment" => bookings(tx)?
            .iter()
            .filter_map(resources::appointment)
            .collect(),
        "Patient" => patients(tx)?,
        "Flag" => flags(tx)?.iter().map(resources::flag).collect(),
        "Task" => tasks(tx)?,
        _ => Vec::new(),
    })
}

/// The resource of `resource_type` with this id, if there is one (the audit aside).
pub fn one(
    tx: &mut Tx<'_>,
    resource_type: &str,
    id: &str,
    facility: &str,
) -> Result<Option<Indexed>, JournalError> {
    if resource_type == "Encounter" {
        // The queue's own lookup by key: the entries are the largest of these tables.
        let Ok(entry_id) = id.parse::<i64>() else {
            return Ok(None);
        };
        return match crate::queue::store::queue_entry(tx, entry_id) {
            Ok(e) => Ok(Some(resources::encounter(&e, facility))),
            Err(JournalError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        };
    }
    Ok(all(tx, resource_type, facility)?
        .into_iter()
        .find(|r| r.id == id))
}

fn bookings(tx: &mut Tx<'_>) -> Result<Vec<Booking>, JournalError> {
    let rows = tx
        .sql()
        .prepare_cached(
            "SELECT appointment_ref, patient_ref, starts_at, queue, updated_at
               FROM appointment_booking ORDER BY appointment_ref",
        )?
        .query_map([], |r| {
            Ok(Booking {
                appointment_ref: r.get(0)?,
                patient_ref: r.get(1)?,
                starts_at: r.get(2)?,
                queue: r.get(3)?,
                updated_at: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The cached Patients as last synced with the EHR; a row whose copy is not JSON is left out
/// (the connector's own reader refuses it too).
fn patients(tx: &mut Tx<'_>) -> Result<Vec<Indexed>, JournalError> {
    let rows: Vec<(String, String, i64)> = tx
        .sql()
        .prepare_cached("SELECT id, synced, updated_at FROM fhir_patient ORDER BY id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, synced, at)| {
            let synced = serde_json::from_str(&synced).ok()?;
            Some(resources::patient(&id, synced, at))
        })
        .collect())
}

fn flags(tx: &mut Tx<'_>) -> Result<Vec<FlagRow>, JournalError> {
    let rows = tx
        .sql()
        .prepare_cached(
            "SELECT id, patient_id, priority IS NOT NULL, reason, updated_at
               FROM fhir_flag ORDER BY id",
        )?
        .query_map([], |r| {
            Ok(FlagRow {
                id: r.get(0)?,
                patient_id: r.get(1)?,
                raises_priority: r.get(2)?,
                reason: r.get(3)?,
                updated_at: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The scheduling suggestions the FHIR connector committed (the journal's inbound items of
/// their kind); one whose payload is unreadable is left out, as the connector leaves it.
fn tasks(tx: &mut Tx<'_>) -> Result<Vec<Indexed>, JournalError> {
    let rows: Vec<(i64, Vec<u8>, i64)> = tx
        .sql()
        .prepare_cached("SELECT id, payload, received_at FROM inbound WHERE kind = ?1 ORDER BY id")?
        .query_map([crate::connectors::fhir::waits::KIND], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, payload, at)| {
            let s = serde_json::from_slice(&payload).ok()?;
            resources::task(id, &s, at)
        })
        .collect())
}

/// Audit records recorded within `at` (and with the id `id`, if given), oldest first: how
/// many there are, and `limit` of them from `offset`. Paged in SQL: the audit only grows.
pub fn audit_page(
    tx: &mut Tx<'_>,
    id: Option<i64>,
    at: Range,
    limit: usize,
    offset: usize,
) -> Result<(usize, Vec<AuditRow>), JournalError> {
    let total: i64 = tx
        .sql()
        .prepare_cached(
            "SELECT count(*) FROM audit WHERE (?1 IS NULL OR id = ?1) AND at >= ?2 AND at < ?3",
        )?
        .query_row(params![id, at.from, at.until], |r| r.get(0))?;
    let rows = tx
        .sql()
        .prepare_cached(
            "SELECT id, at, actor, action, detail, prev_hash, hash FROM audit
              WHERE (?1 IS NULL OR id = ?1) AND at >= ?2 AND at < ?3
              ORDER BY id LIMIT ?4 OFFSET ?5",
        )?
        .query_map(
            params![id, at.from, at.until, limit as i64, offset as i64],
            |r| {
                Ok(AuditRow {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    detail: r.get(4)?,
                    prev_hash: r.get(5)?,
                    hash: r.get(6)?,
                })
            },
        )?
        .collect::<Result<_, _>>()?;
    Ok((total.max(0) as usize, rows))
}
