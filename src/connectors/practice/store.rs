//! The eligibility table: one row per inquiry about a queue entry, its status as the front
//! desk sees it and the payer's answer in words. The member's details travel in the
//! inquiry's outbox row; this table keeps no member id, name or birth date. The inquiry a
//! check-in's card makes waits in `eligibility_due`, details and all, from the check-in's
//! commit until the journal's writer is free to make it an outbox row and an eligibility row.

use crate::journal::{JournalError, Schema, Tx, from_json, to_json};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// The practice connectors' migrations.
pub const SCHEMA: Schema = Schema {
    domain: "practice",
    steps: &[
        r#"
CREATE TABLE eligibility (
    id              INTEGER PRIMARY KEY,
    entry_id        INTEGER NOT NULL,
    trace           TEXT    NOT NULL UNIQUE,
    payer           TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    detail          TEXT    NOT NULL,
    requested_at    INTEGER NOT NULL,
    requested_by    TEXT    NOT NULL,
    answered_at     INTEGER,
    override_by     TEXT,
    override_reason TEXT,
    override_at     INTEGER
);
CREATE INDEX eligibility_entry ON eligibility(entry_id, id);
"#,
        r#"
CREATE TABLE billing_visit (
    entry_id     INTEGER PRIMARY KEY,
    facts        TEXT    NOT NULL,
    recorded_at  INTEGER NOT NULL,
    recorded_by  TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    codes        TEXT,
    fee_cents    INTEGER,
    reason       TEXT,
    coded_at     INTEGER
);
"#,
        r#"
CREATE TABLE eligibility_due (
    entry_id     INTEGER PRIMARY KEY,
    payer        TEXT    NOT NULL,
    requested_at INTEGER NOT NULL,
    requested_by TEXT    NOT NULL,
    job          TEXT    NOT NULL
);
"#,
    ],
    legacy: &[],
};

/// Where an entry's insurance stands, as the board shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Asked, no answer yet (or the payer is being asked again).
    Pending,
    /// Active coverage.
    Verified,
    /// Inactive coverage, a rejection, no answer in time or an answer that could not be read:
    /// `cause` and `reason` say which.
    NotVerified,
    /// Staff let the visit go ahead without verification, with a documented reason.
    Overridden,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Verified => "verified",
            Status::NotVerified => "not_verified",
            Status::Overridden => "overridden",
        }
    }

    fn parse(s: &str) -> Status {
        match s {
            "verified" => Status::Verified,
            "not_verified" => Status::NotVerified,
            "overridden" => Status::Overridden,
            _ => Status::Pending,
        }
    }
}

/// What the payer's answer said, in the front desk's terms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Detail {
    /// `inactive`, `rejected`, `no_answer` or `unreadable` when not verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Why, in words (the rejection's reason and follow-up, or the error).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// Whether asking again (corrected, or later) may succeed.
    #[serde(default)]
    pub retry: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Cents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copay: Option<i64>,
    /// Cents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deductible_remaining: Option<i64>,
}

/// One inquiry as staff see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Eligibility {
    pub entry_id: i64,
    pub payer: String,
    pub status: Status,
    #[serde(flatten)]
    pub detail: Detail,
    pub requested_at: i64,
    pub requested_by: String,
    pub answered_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub override_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub override_reason: Option<String>,
}

const COLUMNS: &str = "entry_id, payer, status, detail, requested_at, requested_by, answered_at,
                       override_by, override_reason";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Eligibility> {
    Ok(Eligibility {
        entry_id: r.get(0)?,
        payer: r.get(1)?,
        status: Status::parse(&r.get::<_, String>(2)?),
        detail: from_json(3, &r.get::<_, String>(3)?)?,
        requested_at: r.get(4)?,
        requested_by: r.get(5)?,
        answered_at: r.get(6)?,
        override_by: r.get(7)?,
        override_reason: r.get(8)?,
    })
}

/// Records a new inquiry about `entry_id`, pending, under `trace`.
pub fn request(
    tx: &mut Tx<'_>,
    entry_id: i64,
    payer: &str,
    trace: &str,
    by: &str,
    now: i64,
) -> Result<Eligibility, JournalError> {
    tx.sql()
        .prepare_cached(
            "INSERT INTO eligibility (entry_id, trace, payer, status, detail, requested_at, requested_by)
             VALUES (?1, ?2, ?3, 'pending', '{}', ?4, ?5)",
        )?
        .execute(params![entry_id, trace, payer, now, by])?;
    Ok(pending(entry_id, payer, now, by))
}

/// An inquiry kept until the writer is free to journal it (see [`due`]).
pub struct Due {
    pub entry_id: i64,
    pub requested_at: i64,
    pub requested_by: String,
    /// The inquiry as its outbox row will carry it, the member's details included.
    pub job: String,
}

/// Keeps the first inquiry about the entry `entry_id`, which the check-in that made the entry
/// asked, until the writer is free to journal it ([`take_due`]); meanwhile it shows pending.
pub fn due(tx: &mut Tx<'_>, due: &Due, payer: &str) -> Result<Eligibility, JournalError> {
    tx.sql()
        .prepare_cached(
            "INSERT INTO eligibility_due (entry_id, payer, requested_at, requested_by, job)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            due.entry_id,
            payer,
            due.requested_at,
            due.requested_by,
            due.job
        ])?;
    Ok(pending(
        due.entry_id,
        payer,
        due.requested_at,
        &due.requested_by,
    ))
}

/// Takes the kept inquiry about `entry` (every kept one when None), oldest first.
pub fn take_due(tx: &mut Tx<'_>, entry: Option<i64>) -> Result<Vec<Due>, JournalError> {
    let mut taken = tx
        .sql()
        .prepare_cached(
            "DELETE FROM eligibility_due WHERE ?1 IS NULL OR entry_id = ?1
             RETURNING entry_id, requested_at, requested_by, job",
        )?
        .query_map([entry], |r| {
            Ok(Due {
                entry_id: r.get(0)?,
                requested_at: r.get(1)?,
                requested_by: r.get(2)?,
                job: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<Due>>>()?;
    // RETURNING gives no order.
    taken.sort_by_key(|d| d.entry_id);
    Ok(taken)
}

fn pending(entry_id: i64, payer: &str, requested_at: i64, by: &str) -> Eligibility {
    Eligibility {
        entry_id,
        payer: payer.to_string(),
        status: Status::Pending,
        detail: Detail::default(),
        requested_at,
        requested_by: by.to_string(),
        answered_at: None,
        override_by: None,
        override_reason: None,
    }
}

/// Records the answer to the inquiry `trace`; returns the entry it was about and its status
/// before, or None when no such inquiry is waiting (answered before, or overridden meanwhile:
/// the answer is then kept out).
pub fn answered(
    tx: &mut Tx<'_>,
    trace: &str,
    status: Status,
    detail: &Detail,
    now: i64,
) -> Result<Option<(i64, Status)>, JournalError> {
    let waiting: Option<(i64, String)> = tx
        .sql()
        .prepare_cached(
            "SELECT entry_id, status FROM eligibility
              WHERE trace = ?1 AND status IN ('pending', 'not_verified')",
        )?
        .query_row([trace], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((entry, before)) = waiting else {
        return Ok(None);
    };
    tx.sql()
        .prepare_cached(
            "UPDATE eligibility SET status = ?2, detail = ?3, answered_at = ?4 WHERE trace = ?1",
        )?
        .execute(params![trace, status.as_str(), to_json(detail)?, now])?;
    Ok(Some((entry, Status::parse(&before))))
}

/// Marks the entry's latest inquiry overridden by `by` for `reason`; None when the entry has
/// no inquiry.
pub fn override_latest(
    tx: &mut Tx<'_>,
    entry_id: i64,
    reason: &str,
    by: &str,
    now: i64,
) -> Result<Option<Eligibility>, JournalError> {
    let changed = tx
        .sql()
        .prepare_cached(
            "UPDATE eligibility SET status = 'overridden', override_by = ?2, override_reason = ?3,
                    override_at = ?4
              WHERE id = (SELECT max(id) FROM eligibility WHERE entry_id = ?1)",
        )?
        .execute(params![entry_id, by, reason, now])?;
    if changed == 0 {
        return Ok(None);
    }
    latest(tx, entry_id)
}

/// The entry's latest inquiry: one still kept ([`due`]) is its first and only one.
pub fn latest(tx: &mut Tx<'_>, entry_id: i64) -> Result<Option<Eligibility>, JournalError> {
    let kept = tx
        .sql()
        .prepare_cached(
            "SELECT payer, requested_at, requested_by FROM eligibility_due WHERE entry_id = ?1",
        )?
        .query_row([entry_id], |r| {
            Ok(pending(
                entry_id,
                &r.get::<_, String>(0)?,
                r.get(1)?,
                &r.get::<_, String>(2)?,
            ))
        })
        .optional()?;
    if kept.is_some() {
        return Ok(kept);
    }
    let row = tx
        .sql()
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM eligibility WHERE entry_id = ?1 ORDER BY id DESC LIMIT 1"
        ))?
        .query_row([entry_id], from_row)
        .optional()?;
    Ok(row)
}

/// The latest inquiry of every entry that has one among `entry_ids`, for the board.
pub fn latest_of(tx: &mut Tx<'_>, entry_ids: &[i64]) -> Result<Vec<Eligibility>, JournalError> {
    let mut out = Vec::new();
    for &id in entry_ids {
        if let Some(e) = latest(tx, id)? {
            out.push(e);
        }
    }
    Ok(out)
}

/// Where a visit's coding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisitStatus {
    /// Facts recorded; the visit is not complete yet.
    Recorded,
    /// Codes suggested and sent to the PMS as a suggestion.
    Suggested,
    /// The table gave no codes (`reason` says why); staff were told.
    Refused,
}

impl VisitStatus {
    fn parse(s: &str) -> VisitStatus {
        match s {
            "suggested" => VisitStatus::Suggested,
            "refused" => VisitStatus::Refused,
            _ => VisitStatus::Recorded,
        }
    }
}

/// A visit's facts for its coding, and what the table made of them. No patient data: the
/// appointment type, the procedures' table names and codes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Visit {
    pub entry_id: i64,
    pub facts: super::visit::Facts,
    pub recorded_at: i64,
    pub recorded_by: String,
    pub status: VisitStatus,
    pub codes: Vec<super::visit::Code>,
    /// The fee schedule's amount of the appointment type, once suggested.
    pub fee_cents: Option<i64>,
    pub reason: Option<String>,
    pub coded_at: Option<i64>,
}

const VISIT_COLUMNS: &str =
    "entry_id, facts, recorded_at, recorded_by, status, codes, fee_cents, reason, coded_at";

fn visit_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Visit> {
    let codes: Option<String> = r.get(5)?;
    Ok(Visit {
        entry_id: r.get(0)?,
        facts: from_json(1, &r.get::<_, String>(1)?)?,
        recorded_at: r.get(2)?,
        recorded_by: r.get(3)?,
        status: VisitStatus::parse(&r.get::<_, String>(4)?),
        codes: codes
            .map(|c| from_json(5, &c))
            .transpose()?
            .unwrap_or_default(),
        fee_cents: r.get(6)?,
        reason: r.get(7)?,
        coded_at: r.get(8)?,
    })
}

/// Records (or replaces) a visit's facts; false when the visit is coded already, which a
/// recording never changes.
pub fn record_visit(
    tx: &mut Tx<'_>,
    entry_id: i64,
    facts: &super::visit::Facts,
    by: &str,
    now: i64,
) -> Result<bool, JournalError> {
    let n = tx
        .sql()
        .prepare_cached(
            "INSERT INTO billing_visit (entry_id, facts, recorded_at, recorded_by, status)
             VALUES (?1, ?2, ?3, ?4, 'recorded')
             ON CONFLICT (entry_id) DO UPDATE SET facts = ?2, recorded_at = ?3, recorded_by = ?4
              WHERE status = 'recorded'",
        )?
        .execute(params![entry_id, to_json(facts)?, now, by])?;
    Ok(n == 1)
}

/// The visit of entry `entry_id`, if facts were recorded.
pub fn visit(tx: &mut Tx<'_>, entry_id: i64) -> Result<Option<Visit>, JournalError> {
    let row = tx
        .sql()
        .prepare_cached(&format!(
            "SELECT {VISIT_COLUMNS} FROM billing_visit WHERE entry_id = ?1"
        ))?
        .query_row([entry_id], visit_from_row)
        .optional()?;
    Ok(row)
}

/// The visits of these entries that have one.
pub fn visits_of(tx: &mut Tx<'_>, entry_ids: &[i64]) -> Result<Vec<Visit>, JournalError> {
    let mut out = Vec::new();
    for &id in entry_ids {
        if let Some(v) = visit(tx, id)? {
            out.push(v);
        }
    }
    Ok(out)
}

/// A recorded visit's suggested codes.
pub fn visit_suggested(
    tx: &mut Tx<'_>,
    entry_id: i64,
    codes: &[super::visit::Code],
    fee_cents: Option<i64>,
    now: i64,
) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached(
            "UPDATE billing_visit SET status = 'suggested', codes = ?2, fee_cents = ?3,
                    coded_at = ?4
              WHERE entry_id = ?1 AND status = 'recorded'",
        )?
        .execute(params![entry_id, to_json(&codes)?, fee_cents, now])?;
    Ok(())
}

/// A recorded visit the table gave no codes, and why.
pub fn visit_refused(
    tx: &mut Tx<'_>,
    entry_id: i64,
    reason: &str,
    now: i64,
) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached(
            "UPDATE billing_visit SET status = 'refused', reason = ?2, coded_at = ?3
              WHERE entry_id = ?1 AND status = 'recorded'",
        )?
        .execute(params![entry_id, reason, now])?;
    Ok(())
}
