//! Patient messaging's tables and every SQL statement on them: the contact details a check-in
//! gave, the notifications (one per `patient.notification` event) with the routes planned for
//! them or the reason they were refused, and the attempts made through each provider with
//! their receipts and costs.
//!
//! Each function runs inside the journal writer's transaction ([`Tx`]), so a notification, its
//! rows here and its outbox row commit together. Nothing here opens SQLite.

use super::protocol::{Reach, Route};
use crate::journal::{JournalError, NewItem, Schema, Tx, from_json, to_json};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

/// The outbox destination of notifications waiting to be sent: "you are next" and results
/// (see [`is_urgent`]).
pub const DESTINATION: &str = "messaging";
/// The outbox destination of the other notifications (appointment changes, delays,
/// reminders), sent when no urgent one waits.
pub const BULK_DESTINATION: &str = "messaging-bulk";

/// Whether a notification kind goes before the bulk: the patient is in the waiting room
/// (`you_are_next`) or waits for a result.
pub fn is_urgent(kind: &str) -> bool {
    matches!(
        kind,
        "you_are_next" | "lab_results_ready" | "medication_ready"
    )
}

/// Messaging's migrations.
pub const SCHEMA: Schema = Schema {
    domain: "messaging",
    steps: &[
        r#"
CREATE TABLE msg_contact (
    entry_id   INTEGER PRIMARY KEY,
    reach      TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE msg_notification (
    id          INTEGER PRIMARY KEY,
    event_id    TEXT    NOT NULL UNIQUE,
    entry_id    INTEGER NOT NULL,
    ticket      TEXT    NOT NULL,
    queue       TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    reason      TEXT,
    routes      TEXT    NOT NULL,
    not_before  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX msg_notification_entry ON msg_notification(entry_id);
CREATE INDEX msg_notification_held ON msg_notification(not_before) WHERE status = 'held';
CREATE TABLE msg_attempt (
    id              INTEGER PRIMARY KEY,
    notification_id INTEGER NOT NULL REFERENCES msg_notification(id),
    route           INTEGER NOT NULL,
    channel         TEXT    NOT NULL,
    provider        TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    error           TEXT,
    provider_ref    TEXT,
    segments        INTEGER NOT NULL,
    cost            REAL    NOT NULL,
    sent_at         INTEGER NOT NULL,
    receipt_at      INTEGER
);
CREATE INDEX msg_attempt_notification ON msg_attempt(notification_id);
CREATE UNIQUE INDEX msg_attempt_ref ON msg_attempt(provider, provider_ref) WHERE provider_ref IS NOT NULL;
CREATE INDEX msg_attempt_sent ON msg_attempt(sent_at);
CREATE TABLE msg_early_receipt (
    provider     TEXT    NOT NULL,
    provider_ref TEXT    NOT NULL,
    receipt      TEXT    NOT NULL,
    received_at  INTEGER NOT NULL,
    PRIMARY KEY (provider, provider_ref)
);
"#,
        // A provider's message ids are not unique for ever (an SMSC restarted may count
        // from its start again): a receipt names the newest attempt with its id. What a
        // provider took that still waits for its receipt, for the receipt watch. A call's
        // price per minute, billed by the duration its receipt gives.
        r#"
DROP INDEX msg_attempt_ref;
CREATE INDEX msg_attempt_ref ON msg_attempt(provider, provider_ref) WHERE provider_ref IS NOT NULL;
CREATE INDEX msg_attempt_provider ON msg_attempt(provider, status, sent_at);
ALTER TABLE msg_attempt ADD COLUMN minute_price REAL NOT NULL DEFAULT 0;
"#,
        // When a message a provider took can no longer reach the handset (its validity
        // over): with no receipt by then, the next provider sends it.
        r#"
ALTER TABLE msg_attempt ADD COLUMN valid_until INTEGER;
CREATE INDEX msg_attempt_lapse ON msg_attempt(valid_until) WHERE status = 'sent' AND valid_until IS NOT NULL;
"#,
        // A call's receipt that overtook its attempt keeps the call's length with it.
        r#"
ALTER TABLE msg_early_receipt ADD COLUMN minutes INTEGER;
"#,
    ],
    legacy: &[],
};

/// Keeps the contact details a check-in gave for its entry.
pub fn keep_contact(
    tx: &mut Tx<'_>,
    entry_id: i64,
    reach: &Reach,
    now: i64,
) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached(
            "INSERT INTO msg_contact (entry_id, reach, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (entry_id) DO UPDATE SET reach = excluded.reach",
        )?
        .execute(params![entry_id, to_json(reach)?, now])?;
    Ok(())
}

/// The contact details a check-in gave for an entry.
pub fn contact(tx: &mut Tx<'_>, entry_id: i64) -> Result<Option<Reach>, JournalError> {
    tx.sql()
        .prepare_cached("SELECT reach FROM msg_contact WHERE entry_id = ?1")?
        .query_row([entry_id], |r| r.get::<_, String>(0))
        .optional()?
        .map(|t| from_json(0, &t).map_err(JournalError::from))
        .transpose()
}

/// Where a notification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for quiet hours to end.
    Held,
    /// In the outbox, to be sent.
    Queued,
    /// A provider took it; no receipt yet.
    Sent,
    Delivered,
    /// Every route failed, or the receipt said so.
    Failed,
    /// The provider gave up delivering it.
    Expired,
    /// Nothing was sent: no usable contact, opted out, a template error.
    Refused,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Held => "held",
            Status::Queued => "queued",
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Failed => "failed",
            Status::Expired => "expired",
            Status::Refused => "refused",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        [
            Status::Held,
            Status::Queued,
            Status::Sent,
            Status::Delivered,
            Status::Failed,
            Status::Expired,
            Status::Refused,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// A notification as first recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification<'a> {
    pub event_id: &'a str,
    pub entry_id: i64,
    pub ticket: &'a str,
    pub queue: &'a str,
    pub kind: &'a str,
    /// The routes to try, or why nothing is sent.
    pub plan: Result<Vec<Route>, String>,
    /// Not sent before this time (ms): quiet hours.
    pub not_before: i64,
}

/// Records a notification once per event id (a second one changes nothing), refused with its
/// reason, held for quiet hours, or queued with its outbox row.
pub fn record_notification(
    tx: &mut Tx<'_>,
    n: &NewNotification<'_>,
    now: i64,
) -> Result<Option<i64>, JournalError> {
    let (status, reason, routes) = match &n.plan {
        Err(why) => (Status::Refused, Some(why.as_str()), to_json(&())?),
        Ok(routes) if n.not_before > now => (Status::Held, None, to_json(routes)?),
        Ok(routes) => (Status::Queued, None, to_json(routes)?),
    };
    let id: Option<i64> = tx
        .sql()
        .prepare_cached(
            "INSERT INTO msg_notification (event_id, entry_id, ticket, queue, kind, status, reason, routes, not_before, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)
             ON CONFLICT (event_id) DO NOTHING RETURNING id",
        )?
        .query_row(
            params![
                n.event_id,
                n.entry_id,
                n.ticket,
                n.queue,
                n.kind,
                status.as_str(),
                reason,
                routes,
                n.not_before,
                now
            ],
            |r| r.get(0),
        )
        .optional()?;
    if let (Some(id), Status::Queued) = (id, status) {
        enqueue(tx, id, n.kind, None, now)?;
    }
    Ok(id)
}

/// The outbox row that has a notification sent; its key is the notification's own, so one
/// that cannot be sent holds up no other.
/// `after`: the attempt whose failed receipt sends it again, which makes the row new.
fn enqueue(
    tx: &mut Tx<'_>,
    id: i64,
    kind: &str,
    after: Option<i64>,
    now: i64,
) -> Result<(), JournalError> {
    let destination = if is_urgent(kind) {
        DESTINATION
    } else {
        BULK_DESTINATION
    };
    let item = NewItem {
        source: "messaging".into(),
        source_id: Some(match after {
            None => format!("notification:{id}"),
            Some(attempt) => format!("notification:{id}:after:{attempt}"),
        }),
        kind: "messaging.send".into(),
        key: format!("notification:{id}"),
        schema: "clinic-gateway/messaging.send@1".into(),
        payload: to_json(&serde_json::json!({ "notification": id }))?.into_bytes(),
        reply: None,
        occurred_at: Some(now),
        destinations: vec![destination.into()],
    };
    tx.append(&item, now).map(|_| ())
}

/// Queues the held notifications whose quiet hours are over; how many.
pub fn release_held(tx: &mut Tx<'_>, now: i64) -> Result<usize, JournalError> {
    let due: Vec<(i64, String)> = tx
        .sql()
        .prepare_cached(
            "UPDATE msg_notification SET status = 'queued', updated_at = ?1
              WHERE status = 'held' AND not_before <= ?1 RETURNING id, kind",
        )?
        .query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, kind) in &due {
        enqueue(tx, *id, kind, None, now)?;
    }
    Ok(due.len())
}

/// The earliest time a held notification may be sent.
pub fn next_release(tx: &mut Tx<'_>) -> Result<Option<i64>, JournalError> {
    Ok(tx
        .sql()
        .prepare_cached("SELECT min(not_before) FROM msg_notification WHERE status = 'held'")?
        .query_row([], |r| r.get(0))?)
}

/// A notification to send, with the attempts made so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub id: i64,
    pub event_id: String,
    pub entry_id: i64,
    pub kind: String,
    pub status: Status,
    pub routes: Vec<Route>,
    pub attempts: Vec<Attempt>,
}

/// One try through one provider.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    pub id: i64,
    /// Index into the notification's routes.
    pub route: usize,
    pub channel: String,
    pub provider: String,
    /// `sent`, `delivered`, `failed`, `expired`; `lapsed` (its validity passed with no
    /// receipt: sent again elsewhere; a late receipt still replaces it); `error` (the provider
    /// was unavailable) or `refused` (it refused this message).
    pub status: String,
    pub error: Option<String>,
    pub segments: u32,
    pub cost: f64,
    pub sent_at: i64,
    pub receipt_at: Option<i64>,
}

/// The entry (the patient's place in a queue) of each of these notifications that exists.
pub fn entries_of(
    tx: &mut Tx<'_>,
    ids: &[i64],
) -> Result<std::collections::BTreeMap<i64, i64>, JournalError> {
    let mut found = std::collections::BTreeMap::new();
    for id in ids {
        let entry: Option<i64> = tx
            .sql()
            .prepare_cached("SELECT entry_id FROM msg_notification WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        if let Some(entry) = entry {
            found.insert(*id, entry);
        }
    }
    Ok(found)
}

/// A notification and its attempts, for the deliverer.
pub fn pending(tx: &mut Tx<'_>, id: i64) -> Result<Option<Pending>, JournalError> {
    let row: Option<(String, i64, String, String, String)> = tx
        .sql()
        .prepare_cached(
            "SELECT event_id, entry_id, kind, status, routes FROM msg_notification WHERE id = ?1",
        )?
        .query_row([id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some((event_id, entry_id, kind, status, routes)) = row else {
        return Ok(None);
    };
    let status = Status::parse(&status)
        .ok_or_else(|| JournalError::Sqlite(format!("unknown notification status {status:?}")))?;
    // A refused notification has no routes (`null`).
    let routes: Option<Vec<Route>> = from_json(4, &routes)?;
    Ok(Some(Pending {
        id,
        event_id,
        entry_id,
        kind,
        status,
        routes: routes.unwrap_or_default(),
        attempts: attempts(tx, id)?,
    }))
}

fn attempts(tx: &mut Tx<'_>, notification: i64) -> Result<Vec<Attempt>, JournalError> {
    let rows = tx
        .sql()
        .prepare_cached(
            "SELECT id, route, channel, provider, status, error, segments, cost, sent_at, receipt_at
               FROM msg_attempt WHERE notification_id = ?1 ORDER BY id",
        )?
        .query_map([notification], |r| {
            Ok(Attempt {
                id: r.get(0)?,
                route: r.get::<_, i64>(1)? as usize,
                channel: r.get(2)?,
                provider: r.get(3)?,
                status: r.get(4)?,
                error: r.get(5)?,
                segments: r.get::<_, i64>(6)? as u32,
                cost: r.get(7)?,
                sent_at: r.get(8)?,
                receipt_at: r.get(9)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub notification: i64,
    pub route: usize,
    pub channel: &'static str,
    pub provider: String,
    /// `Ok(provider's id)`: taken.
    pub result: Result<Option<String>, super::SendError>,
    pub segments: u32,
    /// What taking it costs: a call counts one minute until its receipt gives its length.
    pub cost: f64,
    /// A call's price per minute.
    pub minute_price: f64,
    /// How long (ms) the provider may try to deliver a message it took, when its receipts
    /// tell the gateway the outcome (see [`lapse_overdue`]).
    pub validity_ms: Option<i64>,
}

/// How long after a message's validity its receipt may still be on its way: only then is it
/// given up on.
pub const LAPSE_GRACE_MS: i64 = 5_000;

/// Records an attempt; a taken one makes the notification `sent` (or `delivered` for a
/// channel without receipts, `delivered_on_take`).
pub fn record_attempt(
    tx: &mut Tx<'_>,
    o: &Outcome,
    delivered_on_take: bool,
    now: i64,
) -> Result<(), JournalError> {
    use super::SendError;
    let (status, error, provider_ref) = match &o.result {
        Ok(r) if delivered_on_take => ("delivered", None, r.clone()),
        Ok(r) => ("sent", None, r.clone()),
        Err(SendError::Refused(e)) => ("refused", Some(e.as_str()), None),
        Err(SendError::Unavailable(e)) => ("error", Some(e.as_str()), None),
    };
    tx.sql()
        .prepare_cached(
            "INSERT INTO msg_attempt (notification_id, route, channel, provider, status, error, provider_ref, segments, cost, sent_at, receipt_at, minute_price, valid_until)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, CASE WHEN ?5 = 'delivered' THEN ?10 END, ?11,
                     CASE WHEN ?5 = 'sent' THEN ?10 + ?12 END)",
        )?
        .execute(params![
            o.notification,
            o.route as i64,
            o.channel,
            o.provider,
            status,
            error,
            provider_ref,
            o.segments as i64,
            if o.result.is_ok() { o.cost } else { 0.0 },
            now,
            o.minute_price,
            o.validity_ms
        ])?;
    match &o.result {
        Ok(_) if delivered_on_take => set_status(tx, o.notification, Status::Delivered, None, now),
        Ok(r) => {
            set_status(tx, o.notification, Status::Sent, None, now)?;
            // An SMSC may send the receipt right behind its answer, so it can reach the
            // journal before this attempt did: it waited for it.
            let by_id = ReceiptFor::Notification(o.notification);
            let keys = r
                .iter()
                .map(|r| ReceiptFor::ProviderRef(r.clone()))
                .chain([by_id]);
            for of in keys {
                if let Some((receipt, minutes)) = take_early_receipt(tx, &o.provider, &of)? {
                    apply_receipt(tx, &o.provider, &of, receipt, minutes, now)?;
                    break;
                }
            }
            Ok(())
        }
        Err(_) => Ok(()),
    }
}

/// A receipt that came before its attempt was recorded, taken out, with the call's length in
/// started minutes when it gave one.
fn take_early_receipt(
    tx: &mut Tx<'_>,
    provider: &str,
    of: &ReceiptFor,
) -> Result<Option<(super::protocol::Receipt, Option<u32>)>, JournalError> {
    let provider_ref = early_key(of);
    let found: Option<(String, Option<u32>)> = tx
        .sql()
        .prepare_cached(
            "DELETE FROM msg_early_receipt WHERE provider = ?1 AND provider_ref = ?2
             RETURNING receipt, minutes",
        )?
        .query_row(params![provider, provider_ref], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    Ok(found.and_then(|(r, minutes)| Some((super::protocol::Receipt::parse(&r)?, minutes))))
}

/// The key an early receipt is kept under.
fn early_key(of: &ReceiptFor) -> String {
    match of {
        ReceiptFor::ProviderRef(r) => r.clone(),
        ReceiptFor::Notification(id) => format!("notification:{id}"),
    }
}

/// Applies a delivery receipt from `provider` to the attempt it names ([`apply_receipt`]) or,
/// when none waits for it (its attempt may not be recorded yet: the receipt overtook it), keeps
/// it for that attempt; answers whether it applied.
pub fn receive(
    tx: &mut Tx<'_>,
    provider: &str,
    of: &ReceiptFor,
    receipt: super::protocol::Receipt,
    minutes: Option<u32>,
    now: i64,
) -> Result<bool, JournalError> {
    let applied = apply_receipt(tx, provider, of, receipt, minutes, now)?;
    if !applied {
        keep_early_receipt(tx, provider, of, receipt, minutes, now)?;
    }
    Ok(applied)
}

/// Keeps a receipt that names no attempt yet, and a call's `minutes`, for [`record_attempt`].
/// Ones older than a day are dropped then: a confused provider cannot fill the table.
fn keep_early_receipt(
    tx: &mut Tx<'_>,
    provider: &str,
    of: &ReceiptFor,
    receipt: super::protocol::Receipt,
    minutes: Option<u32>,
    now: i64,
) -> Result<(), JournalError> {
    let provider_ref = early_key(of);
    tx.sql()
        .prepare_cached("DELETE FROM msg_early_receipt WHERE received_at < ?1")?
        .execute([now - 86_400_000])?;
    tx.sql()
        .prepare_cached(
            "INSERT INTO msg_early_receipt (provider, provider_ref, receipt, received_at, minutes)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            provider,
            provider_ref,
            receipt.as_str(),
            now,
            minutes
        ])?;
    Ok(())
}

/// How a receipt names the message it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptFor {
    /// The gateway's notification id (Kannel's `dlr-url`).
    Notification(i64),
    /// The provider's own id of the message (an SMPP `message_id`, a Twilio `MessageSid`).
    ProviderRef(String),
}

/// Applies a delivery receipt from `provider` to the attempt it names, if that attempt still
/// waits for one: the attempt and its notification become delivered, failed or expired (with
/// the cloud event). A call's receipt gives its `minutes`, which set its cost. A repeated
/// receipt changes nothing; answers whether it applied.
///
/// A receipt for a `lapsed` attempt (sent again elsewhere since) is recorded on that attempt
/// only: it sends nothing again. If it says delivered, the patient got the message, so the
/// notification is delivered unless it already was. Once a notification is delivered, no
/// receipt of another attempt changes it.
fn apply_receipt(
    tx: &mut Tx<'_>,
    provider: &str,
    of: &ReceiptFor,
    receipt: super::protocol::Receipt,
    minutes: Option<u32>,
    now: i64,
) -> Result<bool, JournalError> {
    let (by_id, by_ref) = match of {
        ReceiptFor::Notification(id) => (Some(*id), None),
        ReceiptFor::ProviderRef(r) => (None, Some(r.as_str())),
    };
    // The attempt's status before the receipt: `RETURNING` gives the new row only.
    let found: Option<(i64, i64, String)> = tx
        .sql()
        .prepare_cached(
            "SELECT id, notification_id, status FROM msg_attempt
              WHERE provider = ?1 AND status IN ('sent', 'lapsed')
                AND (notification_id = ?2 OR provider_ref = ?3)
              ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![provider, by_id, by_ref], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((attempt, notification, was)) = found else {
        return Ok(false);
    };
    tx.sql()
        .prepare_cached("UPDATE msg_attempt SET status = ?2, receipt_at = ?3 WHERE id = ?1")?
        .execute(params![attempt, receipt.as_str(), now])?;
    if let Some(minutes) = minutes {
        // The one minute counted when the call was placed becomes the call's length.
        tx.sql()
            .prepare_cached(
                "UPDATE msg_attempt SET cost = cost + (?2 - 1) * minute_price WHERE id = ?1",
            )?
            .execute(params![attempt, i64::from(minutes)])?;
    }
    let status: String = tx
        .sql()
        .prepare_cached("SELECT status FROM msg_notification WHERE id = ?1")?
        .query_row([notification], |r| r.get(0))?;
    if status == Status::Delivered.as_str() {
        return Ok(true);
    }
    if receipt == super::protocol::Receipt::Delivered {
        set_status(tx, notification, Status::Delivered, None, now)?;
        return Ok(true);
    }
    if was == "lapsed" {
        // Its failover already went (or goes) to the next provider.
        return Ok(true);
    }
    // The message reached no one: the deliverer tries the providers and routes not tried
    // yet, and fails the notification when none is left.
    let reason = format!("receipt: {} through {provider}", receipt.as_str());
    set_status(tx, notification, Status::Queued, Some(&reason), now)?;
    let kind: String = tx
        .sql()
        .prepare_cached("SELECT kind FROM msg_notification WHERE id = ?1")?
        .query_row([notification], |r| r.get(0))?;
    enqueue(tx, notification, &kind, Some(attempt), now)?;
    Ok(true)
}

/// The notifications of the attempts whose validity (and grace) is over at `now` with no
/// receipt: each attempt becomes `lapsed` and its notification goes back in line for the
/// providers and routes not tried yet, as an expired receipt would put it. Computed from the
/// stored times, so a restart loses no deadline. Answers how many.
pub fn lapse_overdue(tx: &mut Tx<'_>, now: i64) -> Result<usize, JournalError> {
    let lapsed: Vec<(i64, i64, String)> = tx
        .sql()
        .prepare_cached(
            "UPDATE msg_attempt SET status = 'lapsed', error = 'no receipt within its validity'
              WHERE status = 'sent' AND valid_until IS NOT NULL AND valid_until <= ?2 - ?1
              RETURNING id, notification_id, provider",
        )?
        .query_map(params![LAPSE_GRACE_MS, now], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    for (attempt, notification, provider) in &lapsed {
        let kind: Option<String> = tx
            .sql()
            .prepare_cached("SELECT kind FROM msg_notification WHERE id = ?1 AND status = 'sent'")?
            .query_row([notification], |r| r.get(0))
            .optional()?;
        let Some(kind) = kind else {
            continue;
        };
        let reason = format!("no receipt within its validity through {provider}");
        set_status(tx, *notification, Status::Queued, Some(&reason), now)?;
        enqueue(tx, *notification, &kind, Some(*attempt), now)?;
    }
    Ok(lapsed.len())
}

/// How many messages `provider` took that wait for their receipt (or lapsed without one)
/// with no receipt from it since the oldest of them was taken, and when that oldest was
/// taken.
pub fn awaiting_receipts(
    tx: &mut Tx<'_>,
    provider: &str,
) -> Result<(u32, Option<i64>), JournalError> {
    Ok(tx
        .sql()
        .prepare_cached(
            "SELECT count(*), min(sent_at) FROM msg_attempt
              WHERE provider = ?1 AND status IN ('sent', 'lapsed')
                AND sent_at > coalesce((SELECT max(receipt_at) FROM msg_attempt
                                         WHERE provider = ?1 AND receipt_at IS NOT NULL), 0)",
        )?
        .query_row([provider], |r| Ok((r.get::<_, i64>(0)? as u32, r.get(1)?)))?)
}

/// Each provider's delivery rate since `since` (ms): delivered among the messages with a
/// final receipt; a provider without any has none.
pub fn delivery_rates(
    tx: &mut Tx<'_>,
    since: i64,
) -> Result<std::collections::BTreeMap<String, f64>, JournalError> {
    let rows = tx
        .sql()
        .prepare_cached(
            "SELECT provider, sum(status = 'delivered'), sum(status IN ('delivered', 'failed', 'expired', 'lapsed'))
               FROM msg_attempt WHERE sent_at >= ?1 GROUP BY provider",
        )?
        .query_map([since], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows
        .into_iter()
        .filter(|(_, _, finals)| *finals > 0)
        .map(|(p, delivered, finals)| (p, delivered as f64 / finals as f64))
        .collect())
}

/// A notification that no route can carry ends `failed` or `expired`, with its reason.
pub fn fail_notification(
    tx: &mut Tx<'_>,
    id: i64,
    status: Status,
    reason: &str,
    now: i64,
) -> Result<(), JournalError> {
    set_status(tx, id, status, Some(reason), now)
}

/// Sets a notification's status, and tells the cloud when it is final (delivered, failed,
/// expired): ids and codes only. A delivered one stays delivered: a late receipt of a message
/// sent again may have said so while its resend was under way.
fn set_status(
    tx: &mut Tx<'_>,
    id: i64,
    status: Status,
    reason: Option<&str>,
    now: i64,
) -> Result<(), JournalError> {
    let row: Option<(String, i64)> = tx
        .sql()
        .prepare_cached(
            "UPDATE msg_notification SET status = ?2, reason = coalesce(?3, reason), updated_at = ?4
              WHERE id = ?1 AND status <> 'delivered' RETURNING event_id, entry_id",
        )?
        .query_row(params![id, status.as_str(), reason, now], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let kind = match status {
        Status::Delivered => "notification.delivered",
        Status::Failed | Status::Expired => "notification.failed",
        _ => return Ok(()),
    };
    let Some((event_id, entry)) = row else {
        return Ok(());
    };
    let item = NewItem {
        source: "messaging".into(),
        source_id: Some(format!("{kind}:{id}")),
        kind: kind.into(),
        key: format!("notification:{id}"),
        schema: format!("clinic-gateway/{kind}@1"),
        payload: to_json(&serde_json::json!({
            "notification": id,
            "event_id": event_id,
            "entry": entry,
            "status": status.as_str(),
        }))?
        .into_bytes(),
        reply: None,
        occurred_at: Some(now),
        destinations: vec![crate::CLOUD.into()],
    };
    tx.append(&item, now).map(|_| ())
}

/// A notification as staff see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotificationView {
    pub id: i64,
    pub entry: i64,
    pub ticket: String,
    pub queue: String,
    pub kind: String,
    pub status: String,
    pub reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Each attempt's channel and provider tell staff how the patient was reached; the
    /// number or address itself is never shown.
    pub attempts: Vec<Attempt>,
}

/// The newest notifications (of one ticket, when given), up to `limit`.
pub fn notifications(
    tx: &mut Tx<'_>,
    ticket: Option<&str>,
    limit: usize,
) -> Result<Vec<NotificationView>, JournalError> {
    type Row = (
        i64,
        i64,
        String,
        String,
        String,
        String,
        Option<String>,
        i64,
        i64,
    );
    let rows: Vec<Row> = tx
        .sql()
        .prepare_cached(
            "SELECT id, entry_id, ticket, queue, kind, status, reason, created_at, updated_at
               FROM msg_notification WHERE (?1 IS NULL OR ticket = ?1) ORDER BY id DESC LIMIT ?2",
        )?
        .query_map(params![ticket, limit as i64], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, entry, ticket, queue, kind, status, reason, created_at, updated_at) in rows {
        out.push(NotificationView {
            id,
            entry,
            ticket,
            queue,
            kind,
            status,
            reason,
            created_at,
            updated_at,
            attempts: attempts(tx, id)?,
        });
    }
    Ok(out)
}

/// What providers took since `since` (ms), for cost analytics.
pub fn taken_since(
    tx: &mut Tx<'_>,
    since: i64,
) -> Result<Vec<super::protocol::Taken>, JournalError> {
    let rows = tx
        .sql()
        .prepare_cached(
            "SELECT provider, channel, sent_at, segments, cost,
                    CASE status WHEN 'lapsed' THEN 'expired' ELSE status END, receipt_at - sent_at
               FROM msg_attempt
              WHERE sent_at >= ?1 AND status IN ('sent', 'delivered', 'failed', 'expired', 'lapsed')
              ORDER BY sent_at",
        )?
        .query_map([since], |r| {
            let status: String = r.get(5)?;
            let latency: Option<i64> = r.get(6)?;
            Ok(super::protocol::Taken {
                provider: r.get(0)?,
                channel: r.get(1)?,
                sent_at: r.get(2)?,
                segments: r.get::<_, i64>(3)? as u32,
                cost: r.get(4)?,
                latency_ms: latency.filter(|_| status == "delivered"),
                status,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Extensions, Store};
    use crate::messaging::protocol::Receipt;

    #[test]
    fn a_busy_calls_receipt_that_overtook_its_attempt_still_makes_the_call_cost_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::scratch(dir.path(), &[&SCHEMA]);
        let attempt = |ref_: &str, id: i64| Outcome {
            notification: id,
            route: 0,
            channel: "voice",
            provider: "calls".into(),
            result: Ok(Some(ref_.into())),
            segments: 1,
            cost: 0.12,
            minute_price: 0.12,
            validity_ms: None,
        };
        let extensions = Extensions::default();
        let costs = store
            .with_batch(|b| {
                let tx = &mut b.work(&extensions);
                for id in [1, 2] {
                    tx.sql().execute(
                        "INSERT INTO msg_notification (id, event_id, entry_id, ticket, queue, kind, status, routes, not_before, created_at, updated_at)
                         VALUES (?1, ?1, ?1, 'G-1', 'general', 'next', 'queued', '[]', 0, 0, 0)",
                        [id],
                    )?;
                }
                // The line was busy, and the receipt came before the attempt was recorded;
                // the second call lasted 75 s, its receipt just as early.
                let (busy, long) = (ReceiptFor::ProviderRef("CA1".into()), ReceiptFor::ProviderRef("CA2".into()));
                receive(tx, "calls", &busy, Receipt::Failed, Some(0), 10)?;
                receive(tx, "calls", &long, Receipt::Delivered, Some(2), 10)?;
                record_attempt(tx, &attempt("CA1", 1), false, 20)?;
                record_attempt(tx, &attempt("CA2", 2), false, 20)?;
                tx.sql()
                    .prepare("SELECT status, cost FROM msg_attempt ORDER BY id")?
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(JournalError::from)
            })
            .expect("transaction");
        assert_eq!(
            costs,
            [("failed".to_string(), 0.0), ("delivered".to_string(), 0.24)]
        );
    }
}
