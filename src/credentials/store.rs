//! The credentials table: what staff and the cloud were last told about each credential's
//! expiry, so that a restart does not tell them again. Functions run inside the journal
//! writer's transaction ([`Tx`]).

use super::protocol::Standing;
use crate::journal::{JournalError, Schema, Tx};
use rusqlite::{OptionalExtension, params};

/// The credentials table's migrations.
pub const SCHEMA: Schema = Schema {
    domain: "credentials",
    steps: &[r#"
CREATE TABLE credential_alert (
    name      TEXT    PRIMARY KEY,
    not_after INTEGER NOT NULL,
    standing  TEXT    NOT NULL,
    at        INTEGER NOT NULL
);
"#],
    legacy: &[],
};

/// The expiry and standing last told for the credential `name`.
pub fn told(tx: &mut Tx<'_>, name: &str) -> Result<Option<(i64, Standing)>, JournalError> {
    let row: Option<(i64, String)> = tx
        .sql()
        .prepare_cached("SELECT not_after, standing FROM credential_alert WHERE name = ?1")?
        .query_row(params![name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(row.and_then(|(at, s)| Standing::parse(&s).map(|s| (at, s))))
}

/// Records that `standing` of the credential `name` valid until `not_after` was told.
pub fn record(
    tx: &mut Tx<'_>,
    name: &str,
    not_after: i64,
    standing: Standing,
    now: i64,
) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached(
            "INSERT INTO credential_alert (name, not_after, standing, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO UPDATE SET not_after = ?2, standing = ?3, at = ?4",
        )?
        .execute(params![name, not_after, standing.as_str(), now])?;
    Ok(())
}
