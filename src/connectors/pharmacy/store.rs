//! The pharmacy's table: each tracked prescription, by order id, with the queue entry it
//! belongs to and its state (never the drug). Functions run inside the journal writer's
//! transaction ([`Tx`]); nothing here opens SQLite.

use super::protocol::RxState;
use crate::journal::{JournalError, Schema, Tx};
use rusqlite::{OptionalExtension, params};

/// The pharmacy's migrations.
pub const SCHEMA: Schema = Schema {
    domain: "pharmacy",
    steps: &[r#"
CREATE TABLE prescription (
    order_id    TEXT    PRIMARY KEY,
    entry_id    INTEGER NOT NULL,
    state       TEXT    NOT NULL,
    pickup_at   INTEGER,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX prescription_entry ON prescription(entry_id);
CREATE INDEX prescription_ready ON prescription(state) WHERE state = 'ready';
"#],
    legacy: &[],
};

/// A tracked prescription's entry and state.
pub fn prescription(tx: &mut Tx<'_>, order: &str) -> Result<Option<(i64, RxState)>, JournalError> {
    let found: Option<(i64, String)> = tx
        .sql()
        .prepare_cached("SELECT entry_id, state FROM prescription WHERE order_id = ?1")?
        .query_row([order], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(found.and_then(|(entry, s)| RxState::parse(&s).map(|state| (entry, state))))
}

/// Starts tracking a prescription on an entry.
pub fn track(
    tx: &mut Tx<'_>,
    order: &str,
    entry: i64,
    state: RxState,
    now: i64,
) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached(
            "INSERT INTO prescription (order_id, entry_id, state, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?4)",
        )?
        .execute(params![order, entry, state.as_str(), now])?;
    Ok(())
}

/// Moves a tracked prescription to `state`, with its pickup time once ready.
pub fn move_to(
    tx: &mut Tx<'_>,
    order: &str,
    state: RxState,
    pickup_at: Option<i64>,
    now: i64,
) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached(
            "UPDATE prescription SET state = ?2, pickup_at = COALESCE(?3, pickup_at), updated_at = ?4
              WHERE order_id = ?1",
        )?
        .execute(params![order, state.as_str(), pickup_at, now])?;
    Ok(())
}

/// How many prescriptions wait at the pickup counter (ready, not picked up), other than
/// `order`.
pub fn ready_waiting(tx: &mut Tx<'_>, order: &str) -> Result<u32, JournalError> {
    let n: i64 = tx
        .sql()
        .prepare_cached(
            "SELECT COUNT(*) FROM prescription WHERE state = 'ready' AND order_id != ?1",
        )?
        .query_row([order], |r| r.get(0))?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// The state of every prescription of the open queue entries, by entry, oldest first: what
/// the board shows (no drugs).
pub fn on_open_entries(tx: &mut Tx<'_>) -> Result<Vec<(i64, String)>, JournalError> {
    let rows = tx
        .sql()
        .prepare_cached(
            "SELECT p.entry_id, p.state FROM prescription p JOIN queue_entry e ON e.id = p.entry_id
              WHERE e.state IN ('waiting', 'called', 'in_room')
              ORDER BY p.entry_id, p.created_at, p.order_id",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}
