//! The lab's tables: the reportable results received per patient (codes and status, never
//! values: the journal keeps the message itself), the appointment types that require results,
//! lab orders and specimens tracked on queue entries, and the delays added to entries.
//! Functions run inside the journal writer's transaction ([`Tx`]); nothing here opens SQLite.

use super::protocol::{LabResult, Subject};
use super::specimen::{SpecimenState, SpecimenUpdate};
use crate::journal::{JournalError, NewItem, Schema, Tx};
use crate::journal::{from_json, to_json};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use std::collections::HashMap;

/// The lab's migrations.
pub const SCHEMA: Schema = Schema {
    domain: "lab",
    steps: &[
        r#"
CREATE TABLE lab_result (
    id          INTEGER PRIMARY KEY,
    source      TEXT    NOT NULL,
    source_id   TEXT,
    patient_ref TEXT,
    patient_id  TEXT,
    code        TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX lab_result_patient_ref ON lab_result(patient_ref, code) WHERE patient_ref IS NOT NULL;
CREATE INDEX lab_result_patient_id ON lab_result(patient_id, code) WHERE patient_id IS NOT NULL;
"#,
        r#"
CREATE TABLE lab_appointment_type (
    appointment_ref TEXT    PRIMARY KEY,
    types           TEXT    NOT NULL,
    updated_at      INTEGER NOT NULL
);
"#,
        // pending_since: when a specimen became due (the order, or a rejection asking for a
        // recollection), NULL once one is collected or the order closed; overdue_at: when that
        // collection was found running long (once per pending stretch).
        r#"
CREATE TABLE lab_order (
    order_id      TEXT    PRIMARY KEY,
    entry_id      INTEGER NOT NULL,
    code          TEXT,
    pending_since INTEGER,
    overdue_at    INTEGER,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX lab_order_pending ON lab_order(pending_since) WHERE pending_since IS NOT NULL AND overdue_at IS NULL;
CREATE TABLE lab_specimen (
    specimen_id   TEXT    PRIMARY KEY,
    entry_id      INTEGER NOT NULL,
    order_id      TEXT,
    state         TEXT    NOT NULL,
    type_code     TEXT,
    reject_reason TEXT,
    condition     TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX lab_specimen_entry ON lab_specimen(entry_id);
CREATE INDEX lab_specimen_order ON lab_specimen(order_id);
CREATE TABLE lab_wait (
    entry_id   INTEGER PRIMARY KEY,
    extra_min  INTEGER NOT NULL DEFAULT 0,
    unsent_min INTEGER NOT NULL DEFAULT 0
);
"#,
    ],
    legacy: &[],
};

/// Records the reportable results of one item for a patient: which tests, in which status,
/// from which message.
pub fn record_results(
    tx: &mut Tx<'_>,
    item: &NewItem,
    subject: &Subject,
    results: &[LabResult],
    now: i64,
) -> Result<(), JournalError> {
    for r in results.iter().filter(|r| r.status.is_reportable()) {
        tx.sql()
            .prepare_cached(
                "INSERT INTO lab_result (source, source_id, patient_ref, patient_id, code, status, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                item.source,
                item.source_id,
                subject.patient_ref,
                subject.patient_id,
                r.code,
                r.status.as_str(),
                now
            ])?;
    }
    Ok(())
}

/// Remembers an appointment's type codes under each of its ids (a later message replaces
/// them), so that an entry carrying any of them can be checked for the results it requires.
pub fn remember_types(
    tx: &mut Tx<'_>,
    refs: &[String],
    types: &[String],
    now: i64,
) -> Result<(), JournalError> {
    let types = to_json(&types)?;
    for r in refs {
        tx.sql()
            .prepare_cached(
                "INSERT INTO lab_appointment_type (appointment_ref, types, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (appointment_ref) DO UPDATE SET types = ?2, updated_at = ?3",
            )?
            .execute(params![r, types, now])?;
    }
    Ok(())
}

/// The type codes remembered for an appointment id.
pub fn types_of(tx: &mut Tx<'_>, appointment_ref: &str) -> Result<Vec<String>, JournalError> {
    let text: Option<String> = tx
        .sql()
        .prepare_cached("SELECT types FROM lab_appointment_type WHERE appointment_ref = ?1")?
        .query_row([appointment_ref], |r| r.get(0))
        .optional()?;
    text.map(|t| from_json(0, &t).map_err(JournalError::from))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// The tests with a reportable result for a patient received since `since` (Unix ms).
pub fn received_codes(
    tx: &mut Tx<'_>,
    patient_ref: Option<&str>,
    patient_id: Option<&str>,
    since: i64,
) -> Result<Vec<String>, JournalError> {
    let rows = tx
        .sql()
        .prepare_cached(
            "SELECT DISTINCT code FROM lab_result
              WHERE received_at >= ?3
                AND ((?1 IS NOT NULL AND patient_ref = ?1) OR (?2 IS NOT NULL AND patient_id = ?2))",
        )?
        .query_map(params![patient_ref, patient_id, since], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// A tracked order's entry and whether it still waits for a specimen.
pub fn order(tx: &mut Tx<'_>, order: &str) -> Result<Option<(i64, bool)>, JournalError> {
    let found = tx
        .sql()
        .prepare_cached(
            "SELECT entry_id, pending_since IS NOT NULL FROM lab_order WHERE order_id = ?1",
        )?
        .query_row([order], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(found)
}

/// Starts tracking an order on an entry: `pending` when it waits for its specimen from now.
pub fn track_order(
    tx: &mut Tx<'_>,
    order: &str,
    entry: i64,
    code: Option<&str>,
    pending: bool,
    now: i64,
) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached(
            "INSERT INTO lab_order (order_id, entry_id, code, pending_since, created_at, updated_at)
             VALUES (?1, ?2, ?3, CASE WHEN ?4 THEN ?5 END, ?5, ?5)",
        )?
        .execute(params![order, entry, code, pending, now])?;
    Ok(())
}

/// An order waits for a specimen from now (`true`: a rejection asks for a recollection) or
/// no longer (`false`: one was collected, or the order closed).
pub fn set_pending(
    tx: &mut Tx<'_>,
    order: &str,
    pending: bool,
    now: i64,
) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached(
            "UPDATE lab_order SET pending_since = CASE WHEN ?2 THEN ?3 END, overdue_at = NULL,
                    updated_at = ?3
              WHERE order_id = ?1",
        )?
        .execute(params![order, pending, now])?;
    Ok(())
}

/// The orders of open entries whose specimen has been pending since `before` or earlier and
/// that were not found running long yet: (order, entry id, pending since).
pub fn overdue_orders(
    tx: &mut Tx<'_>,
    before: i64,
) -> Result<Vec<(String, i64, i64)>, JournalError> {
    let rows = tx
        .sql()
        .prepare_cached(
            "SELECT o.order_id, o.entry_id, o.pending_since FROM lab_order o
               JOIN queue_entry e ON e.id = o.entry_id
              WHERE o.pending_since IS NOT NULL AND o.overdue_at IS NULL AND o.pending_since <= ?1
                AND e.state IN ('waiting', 'called', 'in_room')
              ORDER BY o.pending_since, o.order_id",
        )?
        .query_map([before], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Marks an order's pending collection as found running long.
pub fn mark_overdue(tx: &mut Tx<'_>, order: &str, now: i64) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached(
            "UPDATE lab_order SET overdue_at = ?2, updated_at = ?2 WHERE order_id = ?1",
        )?
        .execute(params![order, now])?;
    Ok(())
}

/// A tracked specimen's entry and state.
pub fn specimen(tx: &mut Tx<'_>, id: &str) -> Result<Option<(i64, SpecimenState)>, JournalError> {
    let found: Option<(i64, String)> = tx
        .sql()
        .prepare_cached("SELECT entry_id, state FROM lab_specimen WHERE specimen_id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(found.and_then(|(entry, s)| SpecimenState::parse(&s).map(|state| (entry, state))))
}

/// Writes a specimen's state (and what the update says of it) on an entry, tracking it from
/// now when it is new.
pub fn save_specimen(
    tx: &mut Tx<'_>,
    update: &SpecimenUpdate,
    entry: i64,
    now: i64,
) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached(
            "INSERT INTO lab_specimen (specimen_id, entry_id, order_id, state, type_code, reject_reason, condition, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
             ON CONFLICT (specimen_id) DO UPDATE SET state = ?4,
                    order_id = COALESCE(?3, order_id), type_code = COALESCE(?5, type_code),
                    reject_reason = COALESCE(?6, reject_reason), condition = COALESCE(?7, condition),
                    updated_at = ?8",
        )?
        .execute(params![
            update.id,
            entry,
            update.order,
            update.state.as_str(),
            update.type_code,
            update.reject_reason,
            update.condition,
            now
        ])?;
    Ok(())
}

/// The specimens of an order not resulted or rejected yet.
pub fn open_specimens_of_order(
    tx: &mut Tx<'_>,
    order: &str,
) -> Result<Vec<(String, i64, SpecimenState)>, JournalError> {
    let rows: Vec<(String, i64, String)> = tx
        .sql()
        .prepare_cached(
            "SELECT specimen_id, entry_id, state FROM lab_specimen
              WHERE order_id = ?1 AND state NOT IN ('resulted', 'rejected') ORDER BY specimen_id",
        )?
        .query_map([order], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, entry, s)| SpecimenState::parse(&s).map(|state| (id, entry, state)))
        .collect())
}

/// A tracked specimen as clinical staff see it: ids, codes and its state, never a result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpecimenRow {
    pub specimen: String,
    pub order: Option<String>,
    /// The queue entry's id.
    pub entry: i64,
    pub ticket: String,
    pub queue: String,
    pub state: String,
    pub type_code: Option<String>,
    pub reject_reason: Option<String>,
    pub condition: Option<String>,
    /// Minutes delays added to the entry's expected time.
    pub entry_delay_min: u32,
    pub updated_at: i64,
}

/// The specimens of the open queue entries, by entry and then oldest first.
pub fn specimens_of_open_entries(tx: &mut Tx<'_>) -> Result<Vec<SpecimenRow>, JournalError> {
    let rows = tx
        .sql()
        .prepare_cached(
            "SELECT s.specimen_id, s.order_id, s.entry_id, e.ticket, e.queue, s.state, s.type_code,
                    s.reject_reason, s.condition, COALESCE(w.extra_min, 0), s.updated_at
               FROM lab_specimen s JOIN queue_entry e ON e.id = s.entry_id
               LEFT JOIN lab_wait w ON w.entry_id = s.entry_id
              WHERE e.state IN ('waiting', 'called', 'in_room')
              ORDER BY s.entry_id, s.created_at, s.specimen_id",
        )?
        .query_map([], |r| {
            Ok(SpecimenRow {
                specimen: r.get(0)?,
                order: r.get(1)?,
                entry: r.get(2)?,
                ticket: r.get(3)?,
                queue: r.get(4)?,
                state: r.get(5)?,
                type_code: r.get(6)?,
                reject_reason: r.get(7)?,
                condition: r.get(8)?,
                entry_delay_min: r.get(9)?,
                updated_at: r.get(10)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The minutes delays added to each entry's expected time, by entry id (entries without any
/// are absent).
pub fn delays(tx: &mut Tx<'_>) -> Result<HashMap<i64, u32>, JournalError> {
    let rows = tx
        .sql()
        .prepare_cached("SELECT entry_id, extra_min FROM lab_wait WHERE extra_min > 0")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Adds `minutes` to an entry's expected time.
pub fn add_delay(tx: &mut Tx<'_>, entry: i64, minutes: u32) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached(
            "INSERT INTO lab_wait (entry_id, extra_min) VALUES (?1, ?2)
             ON CONFLICT (entry_id) DO UPDATE SET extra_min = extra_min + ?2",
        )?
        .execute(params![entry, minutes])?;
    Ok(())
}

/// Adds `minutes` to how far an entry's estimated wait moved since its patient was last told;
/// answers the sum.
pub fn add_unsent(tx: &mut Tx<'_>, entry: i64, minutes: u32) -> Result<u32, JournalError> {
    let sum = tx
        .sql()
        .prepare_cached(
            "INSERT INTO lab_wait (entry_id, unsent_min) VALUES (?1, ?2)
             ON CONFLICT (entry_id) DO UPDATE SET unsent_min = unsent_min + ?2
             RETURNING unsent_min",
        )?
        .query_row(params![entry, minutes], |r| r.get(0))?;
    Ok(sum)
}

/// The patient of an entry was told how far their wait moved.
pub fn told(tx: &mut Tx<'_>, entry: i64) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached("UPDATE lab_wait SET unsent_min = 0 WHERE entry_id = ?1")?
        .execute([entry])?;
    Ok(())
}
