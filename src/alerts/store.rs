//! The alerts table and every SQL statement on it: raising (once per origin, entry, kind and
//! code), listing, acknowledging (audited) and escalating. Functions run inside the journal
//! writer's transaction ([`Tx`]); nothing here opens SQLite.

use super::{Alert, NewAlert};
use crate::journal::{JournalError, NewItem, Schema, Tx};
use rusqlite::{OptionalExtension, params};

/// The alerts' migrations.
pub const SCHEMA: Schema = Schema {
    domain: "alerts",
    steps: &[
        r#"
CREATE TABLE clinical_alert (
    id              INTEGER PRIMARY KEY,
    kind            TEXT    NOT NULL,
    origin          TEXT    NOT NULL,
    entry_id        INTEGER NOT NULL,
    ticket          TEXT    NOT NULL,
    queue           TEXT    NOT NULL,
    code            TEXT    NOT NULL,
    reason          TEXT    NOT NULL,
    raised_at       INTEGER NOT NULL,
    level           INTEGER NOT NULL DEFAULT 0,
    escalated_to    TEXT,
    escalated_at    INTEGER,
    acknowledged_at INTEGER,
    acknowledged_by TEXT
);
CREATE UNIQUE INDEX clinical_alert_once ON clinical_alert(kind, origin, entry_id, code);
CREATE INDEX clinical_alert_open ON clinical_alert(raised_at) WHERE acknowledged_at IS NULL;
"#,
        // A critical result for a patient not in the queue alerts too: entry, ticket and queue
        // become optional (SQLite changes a column's NOT NULL only by copying the table).
        r#"
CREATE TABLE clinical_alert_v2 (
    id              INTEGER PRIMARY KEY,
    kind            TEXT    NOT NULL,
    origin          TEXT    NOT NULL,
    entry_id        INTEGER,
    ticket          TEXT,
    queue           TEXT,
    code            TEXT    NOT NULL,
    reason          TEXT    NOT NULL,
    raised_at       INTEGER NOT NULL,
    level           INTEGER NOT NULL DEFAULT 0,
    escalated_to    TEXT,
    escalated_at    INTEGER,
    acknowledged_at INTEGER,
    acknowledged_by TEXT
);
INSERT INTO clinical_alert_v2 SELECT * FROM clinical_alert;
DROP TABLE clinical_alert;
ALTER TABLE clinical_alert_v2 RENAME TO clinical_alert;
CREATE UNIQUE INDEX clinical_alert_once ON clinical_alert(kind, origin, COALESCE(entry_id, 0), code);
CREATE INDEX clinical_alert_open ON clinical_alert(raised_at) WHERE acknowledged_at IS NULL;
"#,
    ],
    legacy: &[],
};

/// The level of an alert escalated to the second staff group.
pub const LEVEL_GROUP: i64 = 1;
/// The level of an alert escalated to the cloud as well; the last.
pub const LEVEL_CLOUD: i64 = 2;

/// Raises an alert for staff; answers its id, or `None` when the same origin raised it for
/// the entry already (a repeated poll).
pub fn raise(tx: &mut Tx<'_>, a: &NewAlert, now: i64) -> Result<Option<i64>, JournalError> {
    let added = tx
        .sql()
        .prepare_cached(
            "INSERT OR IGNORE INTO clinical_alert (kind, origin, entry_id, ticket, queue, code, reason, raised_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            a.kind,
            a.origin,
            a.entry.as_ref().map(|e| e.id),
            a.entry.as_ref().map(|e| &e.ticket),
            a.entry.as_ref().map(|e| &e.queue),
            a.code,
            a.reason,
            now
        ])?;
    Ok((added == 1).then(|| tx.sql().last_insert_rowid()))
}

const COLUMNS: &str = "id, kind, entry_id, ticket, queue, code, reason, raised_at, level, escalated_to, escalated_at, acknowledged_at, acknowledged_by, origin";

fn alert_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Alert> {
    Ok(Alert {
        id: r.get(0)?,
        kind: r.get(1)?,
        entry: r.get(2)?,
        ticket: r.get(3)?,
        queue: r.get(4)?,
        code: r.get(5)?,
        reason: r.get(6)?,
        raised_at: r.get(7)?,
        level: r.get(8)?,
        escalated_to: r.get(9)?,
        escalated_at: r.get(10)?,
        acknowledged_at: r.get(11)?,
        acknowledged_by: r.get(12)?,
        origin: r.get(13)?,
    })
}

/// Alerts, newest first: the open (unacknowledged) ones, or all.
pub fn alerts(tx: &mut Tx<'_>, all: bool, limit: usize) -> Result<Vec<Alert>, JournalError> {
    let rows = tx
        .sql()
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM clinical_alert WHERE ?1 OR acknowledged_at IS NULL
              ORDER BY raised_at DESC, id DESC LIMIT ?2"
        ))?
        .query_map(params![all, limit as i64], alert_from_row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

fn alert(tx: &mut Tx<'_>, id: i64) -> Result<Option<Alert>, JournalError> {
    Ok(tx
        .sql()
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM clinical_alert WHERE id = ?1"
        ))?
        .query_row([id], alert_from_row)
        .optional()?)
}

/// Acknowledges an open alert, audited with `by`; an unknown or acknowledged one is refused.
pub fn acknowledge(tx: &mut Tx<'_>, id: i64, by: &str, now: i64) -> Result<Alert, JournalError> {
    let changed = tx
        .sql()
        .prepare_cached(
            "UPDATE clinical_alert SET acknowledged_at = ?2, acknowledged_by = ?3
              WHERE id = ?1 AND acknowledged_at IS NULL",
        )?
        .execute(params![id, now, by])?;
    if changed == 0 {
        return Err(JournalError::NotFound(format!("no open alert {id}")));
    }
    let a = alert(tx, id)?.ok_or_else(|| JournalError::NotFound(format!("no alert {id}")))?;
    let detail = serde_json::json!({
        "alert": a.id, "kind": a.kind, "entry": a.entry, "ticket": a.ticket, "level": a.level,
    });
    tx.audit(by, "alert.acknowledged", &detail.to_string(), now)?;
    Ok(a)
}

/// Escalates every open alert whose time ran out: `ack_within_ms` after it was raised to
/// `group` (a staff notice, audited), as long again after that to the cloud (an
/// `alert.escalated` event with ids and codes only). The times are computed from the journal,
/// so a restart keeps them. Answers the alerts escalated.
pub fn escalate_due(
    tx: &mut Tx<'_>,
    ack_within_ms: i64,
    group: &str,
    now: i64,
) -> Result<Vec<Alert>, JournalError> {
    let due: Vec<Alert> = tx
        .sql()
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM clinical_alert
              WHERE acknowledged_at IS NULL AND level < ?3 AND raised_at + (level + 1) * ?1 <= ?2
              ORDER BY raised_at, id"
        ))?
        .query_map(params![ack_within_ms, now, LEVEL_CLOUD], alert_from_row)?
        .collect::<Result<_, _>>()?;
    let mut escalated = Vec::new();
    for a in due {
        let level = a.level + 1;
        let to = if level == LEVEL_GROUP { group } else { "cloud" };
        tx.sql()
            .prepare_cached(
                "UPDATE clinical_alert SET level = ?2, escalated_at = ?3,
                        escalated_to = CASE WHEN ?2 = 1 THEN ?4 ELSE escalated_to END
                  WHERE id = ?1",
            )?
            .execute(params![a.id, level, now, group])?;
        let detail = serde_json::json!({ "alert": a.id, "level": level, "to": to });
        tx.audit("alerts", "alert.escalated", &detail.to_string(), now)?;
        if level == LEVEL_GROUP {
            let text = format!(
                "{}: alert {} not acknowledged in time; escalated to {group}",
                about(&a),
                a.id
            );
            crate::notices::store::notice(tx, "alert.escalated", &text, now)?;
        } else {
            escalated_event(tx, &a, now)?;
        }
        if let Some(after) = alert(tx, a.id)? {
            escalated.push(after);
        }
    }
    Ok(escalated)
}

/// Whom an alert is about, for a staff notice: `G-001 (general)`, or the message that raised
/// it for a patient not in the queue.
fn about(a: &Alert) -> String {
    match (&a.ticket, &a.queue) {
        (Some(ticket), Some(queue)) => format!("{ticket} ({queue})"),
        _ => format!("not queued ({})", a.origin),
    }
}

/// The cloud's `alert.escalated`: ids and codes, never a value.
fn escalated_event(tx: &mut Tx<'_>, a: &Alert, now: i64) -> Result<(), JournalError> {
    let payload = serde_json::json!({
        "alert": a.id,
        "kind": a.kind,
        "code": a.code,
        "entry": a.entry,
        "ticket": a.ticket,
        "queue": a.queue,
        "raised_at": a.raised_at,
        "escalated_to": a.escalated_to,
    });
    let key = format!("alert:{}", a.id);
    let event = NewItem::event("alerts", "alert.escalated", key, &payload, &[crate::CLOUD]);
    tx.raise(event, now).map(|_| ())
}
