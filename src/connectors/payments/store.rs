//! The payment table: one row per co-pay or balance asked for a queue entry, with the
//! processor's ids and tokens and where it stands. Amounts are the clinic's; no card number,
//! holder or expiry is ever written here (the processor's hosted page or terminal takes them).

use crate::journal::{JournalError, Schema, Tx};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

/// The payments connector's migrations.
pub const SCHEMA: Schema = Schema {
    domain: "payments",
    steps: &[
        r#"
CREATE TABLE payment (
    id            INTEGER PRIMARY KEY,
    ref           TEXT    NOT NULL UNIQUE,
    entry_id      INTEGER NOT NULL,
    amount_cents  INTEGER NOT NULL,
    currency      TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    processor     TEXT,
    intent        TEXT,
    client_secret TEXT,
    cause         TEXT,
    requested_at  INTEGER NOT NULL,
    requested_by  TEXT    NOT NULL,
    updated_at    INTEGER NOT NULL,
    poll_at       INTEGER,
    confirmed_at  INTEGER
);
CREATE INDEX payment_entry ON payment(entry_id, id);
CREATE UNIQUE INDEX payment_intent ON payment(processor, intent);
CREATE INDEX payment_poll ON payment(poll_at) WHERE status = 'open';
"#,
        r#"
ALTER TABLE payment ADD COLUMN owed_at INTEGER;
ALTER TABLE payment ADD COLUMN owed_by TEXT;
CREATE TABLE payment_attempt (
    key        TEXT    PRIMARY KEY,
    payment_id INTEGER NOT NULL,
    processor  TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    intent     TEXT,
    asked_at   INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX payment_attempt_payment ON payment_attempt(payment_id);
CREATE INDEX payment_attempt_state ON payment_attempt(state, asked_at);
CREATE UNIQUE INDEX payment_attempt_intent ON payment_attempt(processor, intent);
"#,
        r#"
ALTER TABLE payment ADD COLUMN settled_by INTEGER;
"#,
    ],
    legacy: &[],
};

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Journaled; no processor has an intent for it yet.
    Requested,
    /// A processor holds its intent; the patient has not paid yet.
    Open,
    /// Paid: the entry is `paid` and the PMS was told once.
    Confirmed,
    /// Declined, canceled, not paid in time, or no processor could take it: the entry is
    /// `payment_pending`, in its place.
    Failed,
    /// Failed, and staff chose "pay later": the amount is owed; the visit goes on.
    Owed,
    /// Owed, then paid by a later payment of the entry (`settled_by`).
    Settled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Requested => "requested",
            Status::Open => "open",
            Status::Confirmed => "confirmed",
            Status::Failed => "failed",
            Status::Owed => "owed",
            Status::Settled => "settled",
        }
    }

    fn parse(s: &str) -> Status {
        match s {
            "open" => Status::Open,
            "confirmed" => Status::Confirmed,
            "failed" => Status::Failed,
            "owed" => Status::Owed,
            "settled" => Status::Settled,
            _ => Status::Requested,
        }
    }
}

/// One payment as staff see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Payment {
    pub id: i64,
    #[serde(rename = "ref")]
    pub reference: String,
    pub entry_id: i64,
    pub amount_cents: i64,
    pub currency: String,
    pub method: String,
    pub status: Status,
    pub processor: Option<String>,
    pub intent: Option<String>,
    /// What the hosted page or terminal takes to collect this intent.
    pub client_secret: Option<String>,
    /// Why it failed: `declined:<code>`, `canceled`, `expired`, `refused`, `unavailable`.
    pub cause: Option<String>,
    pub requested_at: i64,
    pub requested_by: String,
    pub updated_at: i64,
    pub confirmed_at: Option<i64>,
    /// When staff chose "pay later", and who.
    pub owed_at: Option<i64>,
    pub owed_by: Option<String>,
    /// The later payment that paid what this one owed.
    pub settled_by: Option<i64>,
}

const COLUMNS: &str =
    "id, ref, entry_id, amount_cents, currency, method, status, processor, intent,
                       client_secret, cause, requested_at, requested_by, updated_at, confirmed_at,
                       owed_at, owed_by, settled_by";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Payment> {
    Ok(Payment {
        id: r.get(0)?,
        reference: r.get(1)?,
        entry_id: r.get(2)?,
        amount_cents: r.get(3)?,
        currency: r.get(4)?,
        method: r.get(5)?,
        status: Status::parse(&r.get::<_, String>(6)?),
        processor: r.get(7)?,
        intent: r.get(8)?,
        client_secret: r.get(9)?,
        cause: r.get(10)?,
        requested_at: r.get(11)?,
        requested_by: r.get(12)?,
        updated_at: r.get(13)?,
        confirmed_at: r.get(14)?,
        owed_at: r.get(15)?,
        owed_by: r.get(16)?,
        settled_by: r.get(17)?,
    })
}

/// What a new payment asks for.
pub struct New<'a> {
    pub reference: &'a str,
    pub entry_id: i64,
    pub amount_cents: i64,
    pub currency: &'a str,
    pub method: &'a str,
    pub by: &'a str,
}

/// Records a new payment, `requested`.
pub fn request(tx: &mut Tx<'_>, p: &New<'_>, now: i64) -> Result<Payment, JournalError> {
    tx.sql()
        .prepare_cached(
            "INSERT INTO payment (ref, entry_id, amount_cents, currency, method, status,
                                  requested_at, requested_by, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'requested', ?6, ?7, ?6)",
        )?
        .execute(params![
            p.reference,
            p.entry_id,
            p.amount_cents,
            p.currency,
            p.method,
            now,
            p.by
        ])?;
    by_ref(tx, p.reference)?.ok_or_else(|| JournalError::NotFound(p.reference.to_string()))
}

/// The payment `reference`.
pub fn by_ref(tx: &mut Tx<'_>, reference: &str) -> Result<Option<Payment>, JournalError> {
    let row = tx
        .sql()
        .prepare_cached(&format!("SELECT {COLUMNS} FROM payment WHERE ref = ?1"))?
        .query_row([reference], from_row)
        .optional()?;
    Ok(row)
}

/// The payment whose intent `intent` the processor `processor` holds.
pub fn by_intent(
    tx: &mut Tx<'_>,
    processor: &str,
    intent: &str,
) -> Result<Option<Payment>, JournalError> {
    let row = tx
        .sql()
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM payment WHERE processor = ?1 AND intent = ?2"
        ))?
        .query_row([processor, intent], from_row)
        .optional()?;
    Ok(row)
}

/// A requested payment's intent, `open` from now and asked about at `poll_at` if no webhook
/// confirms it first; false when the payment already had one (a create sent again after a
/// restart keeps the first).
pub fn opened(
    tx: &mut Tx<'_>,
    reference: &str,
    processor: &str,
    intent: &str,
    client_secret: Option<&str>,
    poll_at: i64,
    now: i64,
) -> Result<bool, JournalError> {
    let n = tx
        .sql()
        .prepare_cached(
            "UPDATE payment SET status = 'open', processor = ?2, intent = ?3, client_secret = ?4,
                    poll_at = ?5, updated_at = ?6
              WHERE ref = ?1 AND status = 'requested'",
        )?
        .execute(params![
            reference,
            processor,
            intent,
            client_secret,
            poll_at,
            now
        ])?;
    Ok(n == 1)
}

/// A failed payment staff let the patient pay later: `owed`; false when it is not failed.
pub fn owe(tx: &mut Tx<'_>, id: i64, by: &str, now: i64) -> Result<bool, JournalError> {
    let n = tx
        .sql()
        .prepare_cached(
            "UPDATE payment SET status = 'owed', owed_at = ?2, owed_by = ?3, updated_at = ?2
              WHERE id = ?1 AND status = 'failed'",
        )?
        .execute(params![id, now, by])?;
    Ok(n == 1)
}

/// What `paid` (just confirmed) settles of its entry's owed payments in its currency: the
/// oldest first, as many as its amount covers whole. Answers their ids.
pub fn settle_owed(tx: &mut Tx<'_>, paid: &Payment, now: i64) -> Result<Vec<i64>, JournalError> {
    let owed: Vec<(i64, i64)> = tx
        .sql()
        .prepare_cached(
            "SELECT id, amount_cents FROM payment
              WHERE entry_id = ?1 AND currency = ?2 AND status = 'owed' AND id < ?3
              ORDER BY id",
        )?
        .query_map(params![paid.entry_id, paid.currency, paid.id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut left = paid.amount_cents;
    let mut settled = Vec::new();
    for (id, amount) in owed {
        if amount > left {
            break;
        }
        left -= amount;
        tx.sql()
            .prepare_cached(
                "UPDATE payment SET status = 'settled', settled_by = ?2, updated_at = ?3 WHERE id = ?1",
            )?
            .execute(params![id, paid.id, now])?;
        settled.push(id);
    }
    Ok(settled)
}

/// The payment `id`.
pub fn by_id(tx: &mut Tx<'_>, id: i64) -> Result<Option<Payment>, JournalError> {
    let row = tx
        .sql()
        .prepare_cached(&format!("SELECT {COLUMNS} FROM payment WHERE id = ?1"))?
        .query_row([id], from_row)
        .optional()?;
    Ok(row)
}

/// A not yet confirmed payment takes another intent of its own that was paid (an attempt
/// at a processor that answered late), so that its confirmation names the money taken.
pub fn take_intent(
    tx: &mut Tx<'_>,
    id: i64,
    processor: &str,
    intent: &str,
    now: i64,
) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached(
            "UPDATE payment SET processor = ?2, intent = ?3, updated_at = ?4
              WHERE id = ?1 AND status <> 'confirmed'",
        )?
        .execute(params![id, processor, intent, now])?;
    Ok(())
}

/// Moves a payment to `status` (with `cause` when failed); false when it already was there
/// or is confirmed (a confirmation is final), or owed and told it failed (again), so that a
/// repeated outcome changes nothing.
pub fn settle(
    tx: &mut Tx<'_>,
    id: i64,
    status: Status,
    cause: Option<&str>,
    now: i64,
) -> Result<bool, JournalError> {
    let n = tx
        .sql()
        .prepare_cached(
            "UPDATE payment SET status = ?2, cause = ?3, updated_at = ?4, poll_at = NULL,
                    confirmed_at = CASE WHEN ?2 = 'confirmed' THEN ?4 END
              WHERE id = ?1 AND status NOT IN ('confirmed', ?2)
                AND NOT (status = 'owed' AND ?2 = 'failed')",
        )?
        .execute(params![id, status.as_str(), cause, now])?;
    Ok(n == 1)
}

/// Asks about an open payment again at `at`.
pub fn poll_later(tx: &mut Tx<'_>, id: i64, at: i64) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached("UPDATE payment SET poll_at = ?2 WHERE id = ?1 AND status = 'open'")?
        .execute(params![id, at])?;
    Ok(())
}

/// Open payments due to be asked about at `now`, oldest due first.
pub fn due(tx: &mut Tx<'_>, now: i64, limit: usize) -> Result<Vec<Payment>, JournalError> {
    let mut stmt = tx.sql().prepare_cached(&format!(
        "SELECT {COLUMNS} FROM payment WHERE status = 'open' AND poll_at <= ?1
          ORDER BY poll_at LIMIT ?2"
    ))?;
    let rows = stmt
        .query_map(params![now, limit as i64], from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// An entry's payments, newest first.
pub fn of_entry(tx: &mut Tx<'_>, entry_id: i64) -> Result<Vec<Payment>, JournalError> {
    let mut stmt = tx.sql().prepare_cached(&format!(
        "SELECT {COLUMNS} FROM payment WHERE entry_id = ?1 ORDER BY id DESC"
    ))?;
    let rows = stmt
        .query_map([entry_id], from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The latest payment of each of these entries that has one, for the board.
pub fn latest_of(tx: &mut Tx<'_>, entry_ids: &[i64]) -> Result<Vec<Payment>, JournalError> {
    let mut out = Vec::new();
    for &id in entry_ids {
        if let Some(p) = of_entry(tx, id)?.into_iter().next() {
            out.push(p);
        }
    }
    Ok(out)
}

/// Where one create sent to a processor stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptState {
    /// Sent; what the processor did was never recorded (no answer, or a restart came first).
    Asked,
    /// Its intent is the payment's.
    Held,
    /// The processor made no intent for it (looked up and not found, or refused).
    None,
    /// The processor made an intent for it that is not the payment's: left open there.
    LeftOpen,
    /// Staff had that intent canceled at the processor.
    Canceled,
    /// That intent was paid while the payment was paid through another: money to refund.
    PaidTwice,
}

impl AttemptState {
    fn as_str(self) -> &'static str {
        match self {
            AttemptState::Asked => "asked",
            AttemptState::Held => "held",
            AttemptState::None => "none",
            AttemptState::LeftOpen => "left_open",
            AttemptState::Canceled => "canceled",
            AttemptState::PaidTwice => "paid_twice",
        }
    }

    fn parse(s: &str) -> AttemptState {
        match s {
            "held" => AttemptState::Held,
            "none" => AttemptState::None,
            "left_open" => AttemptState::LeftOpen,
            "canceled" => AttemptState::Canceled,
            "paid_twice" => AttemptState::PaidTwice,
            _ => AttemptState::Asked,
        }
    }
}

/// One create of a payment's intent at one processor, by its idempotency key (which the
/// intent's metadata carries as `attempt`, so that it can be found again without the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub key: String,
    pub payment_id: i64,
    pub processor: String,
    pub state: AttemptState,
    pub intent: Option<String>,
    pub asked_at: i64,
    pub updated_at: i64,
}

const ATTEMPT_COLUMNS: &str = "key, payment_id, processor, state, intent, asked_at, updated_at";

fn attempt_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Attempt> {
    Ok(Attempt {
        key: r.get(0)?,
        payment_id: r.get(1)?,
        processor: r.get(2)?,
        state: AttemptState::parse(&r.get::<_, String>(3)?),
        intent: r.get(4)?,
        asked_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

/// Records a create about to be sent; a create sent again under the same key keeps the
/// first record, asked again if the processor had made nothing for it.
pub fn asked(
    tx: &mut Tx<'_>,
    key: &str,
    payment_id: i64,
    processor: &str,
    now: i64,
) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached(
            "INSERT INTO payment_attempt (key, payment_id, processor, state, asked_at, updated_at)
             VALUES (?1, ?2, ?3, 'asked', ?4, ?4)
             ON CONFLICT(key) DO UPDATE SET state = 'asked', updated_at = ?4 WHERE state = 'none'",
        )?
        .execute(params![key, payment_id, processor, now])?;
    Ok(())
}

/// What became of attempt `key` (with the intent the processor made for it, if any).
pub fn attempt_is(
    tx: &mut Tx<'_>,
    key: &str,
    state: AttemptState,
    intent: Option<&str>,
    now: i64,
) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached(
            "UPDATE payment_attempt SET state = ?2, intent = COALESCE(?3, intent), updated_at = ?4
              WHERE key = ?1",
        )?
        .execute(params![key, state.as_str(), intent, now])?;
    Ok(())
}

/// The attempt `key`.
pub fn attempt(tx: &mut Tx<'_>, key: &str) -> Result<Option<Attempt>, JournalError> {
    let row = tx
        .sql()
        .prepare_cached(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM payment_attempt WHERE key = ?1"
        ))?
        .query_row([key], attempt_row)
        .optional()?;
    Ok(row)
}

/// The attempt whose intent `intent` the processor `processor` made.
pub fn attempt_of_intent(
    tx: &mut Tx<'_>,
    processor: &str,
    intent: &str,
) -> Result<Option<Attempt>, JournalError> {
    let row = tx
        .sql()
        .prepare_cached(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM payment_attempt WHERE processor = ?1 AND intent = ?2"
        ))?
        .query_row([processor, intent], attempt_row)
        .optional()?;
    Ok(row)
}

/// A payment's attempts whose outcome was never recorded, oldest first.
pub fn unanswered(tx: &mut Tx<'_>, payment_id: i64) -> Result<Vec<Attempt>, JournalError> {
    let mut stmt = tx.sql().prepare_cached(&format!(
        "SELECT {ATTEMPT_COLUMNS} FROM payment_attempt WHERE payment_id = ?1 AND state = 'asked'
          ORDER BY asked_at, key"
    ))?;
    let rows = stmt
        .query_map([payment_id], attempt_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Unanswered attempts asked before `before` whose payment went on without them (it holds
/// another intent or ended), to look up at their processors.
pub fn unanswered_behind(
    tx: &mut Tx<'_>,
    before: i64,
    limit: usize,
) -> Result<Vec<Attempt>, JournalError> {
    let mut stmt = tx.sql().prepare_cached(
        "SELECT a.key, a.payment_id, a.processor, a.state, a.intent, a.asked_at, a.updated_at
           FROM payment_attempt a JOIN payment p ON p.id = a.payment_id
          WHERE a.state = 'asked' AND a.asked_at < ?1 AND p.status <> 'requested'
          ORDER BY a.asked_at LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![before, limit as i64], attempt_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Intents left open at a processor, and those paid twice, newest first.
pub fn left_behind(tx: &mut Tx<'_>) -> Result<Vec<Attempt>, JournalError> {
    let mut stmt = tx.sql().prepare_cached(&format!(
        "SELECT {ATTEMPT_COLUMNS} FROM payment_attempt
          WHERE state IN ('left_open', 'paid_twice') ORDER BY updated_at DESC, key"
    ))?;
    let rows = stmt
        .query_map([], attempt_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
