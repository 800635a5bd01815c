//! The staff notices table: what staff should see on the status page until someone
//! acknowledges it. Functions run inside the journal writer's transaction ([`Tx`]).

use super::Notice;
use crate::journal::{JournalError, Schema, Tx};
use rusqlite::params;

/// The notices' migrations. Step 1 was part of the journal's schema version 6 before each
/// domain owned its tables.
pub const SCHEMA: Schema = Schema {
    domain: "notices",
    steps: &[r#"
CREATE TABLE staff_notice (
    id              INTEGER PRIMARY KEY,
    at              INTEGER NOT NULL,
    kind            TEXT    NOT NULL,
    text            TEXT    NOT NULL,
    acknowledged_at INTEGER,
    acknowledged_by TEXT
);
CREATE INDEX staff_notice_open ON staff_notice(at) WHERE acknowledged_at IS NULL;
"#],
    legacy: &[(6, 1)],
};

/// A notice for staff, shown on the status page until acknowledged. Tickets and queues
/// only: the page carries no patient data.
pub fn notice(tx: &mut Tx<'_>, kind: &str, text: &str, now: i64) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached("INSERT INTO staff_notice (at, kind, text) VALUES (?1, ?2, ?3)")?
        .execute(params![now, kind, text])?;
    Ok(())
}

/// Notices, newest first: the open ones, or also the acknowledged ones.
pub fn notices(tx: &mut Tx<'_>, all: bool, limit: usize) -> Result<Vec<Notice>, JournalError> {
    let rows = tx
        .sql()
        .prepare_cached(
            "SELECT id, at, kind, text, acknowledged_at, acknowledged_by FROM staff_notice
              WHERE ?1 OR acknowledged_at IS NULL ORDER BY at DESC, id DESC LIMIT ?2",
        )?
        .query_map(params![all, limit as i64], |r| {
            Ok(Notice {
                id: r.get(0)?,
                at: r.get(1)?,
                kind: r.get(2)?,
                text: r.get(3)?,
                acknowledged_at: r.get(4)?,
                acknowledged_by: r.get(5)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Marks a notice seen by `by`, audited; acknowledging twice is refused.
pub fn acknowledge(tx: &mut Tx<'_>, id: i64, by: &str, now: i64) -> Result<(), JournalError> {
    let changed = tx
        .sql()
        .prepare_cached(
            "UPDATE staff_notice SET acknowledged_at = ?2, acknowledged_by = ?3
              WHERE id = ?1 AND acknowledged_at IS NULL",
        )?
        .execute(params![id, now, by])?;
    if changed == 0 {
        return Err(JournalError::NotFound(format!("no open notice {id}")));
    }
    let detail = serde_json::json!({ "notice": id }).to_string();
    tx.audit(by, "notice.acknowledged", &detail, now)
}
