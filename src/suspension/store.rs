//! The suspended integrations table: which integration an admin has to re-authorize, and why.
//! Functions run inside the journal writer's transaction ([`Tx`]).

use crate::journal::{JournalError, Schema, Tx};
use rusqlite::{OptionalExtension, params};

/// The suspension table's migrations.
pub const SCHEMA: Schema = Schema {
    domain: "suspension",
    steps: &[r#"
CREATE TABLE integration_suspension (
    name   TEXT    PRIMARY KEY,
    reason TEXT    NOT NULL,
    by     TEXT    NOT NULL,
    at     INTEGER NOT NULL
);
"#],
    legacy: &[],
};

/// Suspends `name`; false if it was suspended already (the first reason is kept).
pub fn suspend(
    tx: &mut Tx<'_>,
    name: &str,
    reason: &str,
    by: &str,
    now: i64,
) -> Result<bool, JournalError> {
    let added = tx
        .sql()
        .prepare_cached(
            "INSERT INTO integration_suspension (name, reason, by, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO NOTHING",
        )?
        .execute(params![name, reason, by, now])?;
    Ok(added == 1)
}

/// Lifts the suspension of `name`; false if it was not suspended.
pub fn resume(tx: &mut Tx<'_>, name: &str) -> Result<bool, JournalError> {
    let removed = tx
        .sql()
        .prepare_cached("DELETE FROM integration_suspension WHERE name = ?1")?
        .execute(params![name])?;
    Ok(removed == 1)
}

/// Why `name` is suspended, if it is.
pub fn reason(tx: &mut Tx<'_>, name: &str) -> Result<Option<String>, JournalError> {
    Ok(tx
        .sql()
        .prepare_cached("SELECT reason FROM integration_suspension WHERE name = ?1")?
        .query_row(params![name], |r| r.get(0))
        .optional()?)
}
