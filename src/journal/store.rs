//! Every SQL statement of the gateway, each behind a documented function.
//!
//! `Store` owns one SQLite connection. In the daemon exactly one `Store` writes (the journal
//! writer thread); the CLI opens its own for `dlq` and `journal stats`, relying on WAL and a busy
//! timeout to share the file. Nothing outside this module builds SQL.

use super::{
    AuditEntry, DeadLetter, DestinationStats, DeviceOverride, JournalError, NewItem, Notice,
    OutboxRow, Receipt, RetryPolicy, Stats,
};
use crate::connectors::fhir::model::Patient;
use crate::connectors::fhir::protocol::{
    self as fhir, CachedPatient, Conflict, Fields, Seen, Side,
};
use crate::facility::{Hold, RoomHold};
use crate::queue::{
    self, Action, Booking, CheckIn, Demographics, Entry, EntryState, FromEhr, Priority, TicketJob,
    TicketOrder,
};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// `PRAGMA application_id` of a clinic-gateway journal ("CGJ1"), so a foreign SQLite file is
/// refused instead of being migrated into.
const APPLICATION_ID: i32 = 0x43474a31;

/// Schema migrations; the journal's `user_version` is how many have been applied.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE inbound (
    id          INTEGER PRIMARY KEY,
    event_id    TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    source_id   TEXT,
    kind        TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    schema      TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    reply       BLOB,
    occurred_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX inbound_source_id ON inbound(source, source_id) WHERE source_id IS NOT NULL;
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    inbound_id      INTEGER NOT NULL,
    destination     TEXT    NOT NULL,
    key             TEXT    NOT NULL,
    state           INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX outbox_by_state ON outbox(state, destination, id);
CREATE INDEX outbox_waiting ON outbox(destination, next_attempt_at) WHERE state = 0 AND attempts > 0;
CREATE INDEX outbox_inbound ON outbox(inbound_id);
CREATE TABLE audit (
    id     INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    detail TEXT    NOT NULL
);
"#,
    r#"
CREATE TABLE queue_entry (
    id              INTEGER PRIMARY KEY,
    queue           TEXT    NOT NULL,
    ticket          TEXT    NOT NULL,
    patient_ref     TEXT,
    appointment_ref TEXT,
    priority        INTEGER NOT NULL,
    priority_reason TEXT,
    state           TEXT    NOT NULL,
    room            TEXT,
    request_id      TEXT,
    arrived_at      INTEGER NOT NULL,
    called_at       INTEGER,
    in_room_at      INTEGER,
    closed_at       INTEGER,
    updated_at      INTEGER NOT NULL
);
CREATE UNIQUE INDEX queue_entry_request ON queue_entry(queue, request_id) WHERE request_id IS NOT NULL;
CREATE INDEX queue_entry_open ON queue_entry(queue, state, priority DESC, arrived_at);
CREATE TABLE queue_counter (
    queue TEXT    NOT NULL,
    day   TEXT    NOT NULL,
    next  INTEGER NOT NULL,
    PRIMARY KEY (queue, day)
);
"#,
    r#"
CREATE TABLE room_hold (
    room   TEXT    PRIMARY KEY,
    hold   TEXT    NOT NULL,
    reason TEXT,
    by     TEXT    NOT NULL,
    at     INTEGER NOT NULL
);
"#,
    r#"
CREATE TABLE device_override (
    device   TEXT    NOT NULL,
    object   TEXT    NOT NULL,
    priority INTEGER NOT NULL,
    value    TEXT    NOT NULL,
    by       TEXT    NOT NULL,
    set_at   INTEGER NOT NULL,
    PRIMARY KEY (device, object, priority)
);
"#,
    r#"
ALTER TABLE queue_entry ADD COLUMN demographics TEXT;
CREATE TABLE fhir_patient (
    id          TEXT    PRIMARY KEY,
    identifier  TEXT,
    family_key  TEXT,
    birth_date  TEXT,
    version_id  TEXT,
    synced      TEXT    NOT NULL,
    local       TEXT,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX fhir_patient_identifier ON fhir_patient(identifier);
CREATE INDEX fhir_patient_name ON fhir_patient(family_key, birth_date);
CREATE TABLE fhir_conflict (
    id          INTEGER PRIMARY KEY,
    patient_id  TEXT    NOT NULL,
    local       TEXT    NOT NULL,
    remote      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    resolved_at INTEGER,
    resolution  TEXT
);
CREATE UNIQUE INDEX fhir_conflict_open ON fhir_conflict(patient_id) WHERE resolved_at IS NULL;
CREATE TABLE fhir_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#,
    r#"
ALTER TABLE queue_entry ADD COLUMN base_priority INTEGER;
ALTER TABLE queue_entry ADD COLUMN base_reason TEXT;
CREATE TABLE fhir_flag (
    id         TEXT    PRIMARY KEY,
    patient_id TEXT    NOT NULL,
    priority   INTEGER,
    reason     TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX fhir_flag_patient ON fhir_flag(patient_id) WHERE priority IS NOT NULL;
CREATE TABLE staff_notice (
    id              INTEGER PRIMARY KEY,
    at              INTEGER NOT NULL,
    kind            TEXT    NOT NULL,
    text            TEXT    NOT NULL,
    acknowledged_at INTEGER,
    acknowledged_by TEXT
);
CREATE INDEX staff_notice_open ON staff_notice(at) WHERE acknowledged_at IS NULL;
"#,
    r#"
CREATE TABLE appointment_booking (
    appointment_ref  TEXT    PRIMARY KEY,
    appointment_refs TEXT    NOT NULL,
    patient_ref      TEXT    NOT NULL,
    day              TEXT    NOT NULL,
    starts_at        INTEGER NOT NULL,
    queue            TEXT    NOT NULL,
    priority         INTEGER NOT NULL,
    priority_reason  TEXT,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX appointment_booking_patient ON appointment_booking(patient_ref, day, starts_at);
CREATE INDEX appointment_booking_day ON appointment_booking(day);
"#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// What the operator is told whenever an existing journal cannot be used.
const LEFT_UNTOUCHED: &str = "the file is left untouched: move it aside and restore it from backup, or start with an empty journal";

/// Name of a stored outbox state: 0 pending, 1 in flight, 2 delivered, 3 dead.
fn state_name(v: i64) -> &'static str {
    match v {
        0 => "pending",
        1 => "in_flight",
        2 => "delivered",
        _ => "dead",
    }
}

/// How a journal file is opened.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Key for an encrypted (SQLCipher) journal.
    pub key: Option<String>,
    /// Run `PRAGMA quick_check` before use (the daemon does; the CLI skips it).
    pub verify: bool,
    /// Create the file when it does not exist (only the daemon does).
    pub create: bool,
}

pub struct Store {
    conn: Connection,
    /// The clinic's time zone: a day's ticket numbers start again at its midnight.
    zone: jiff::tz::TimeZone,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> JournalError {
    JournalError::Open {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

impl Store {
    /// Opens (or, with `create`, creates) the journal, checks that it is intact and ours, and
    /// applies pending migrations. Never recreates a file it cannot read.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Store, JournalError> {
        let exists = path.exists();
        if !exists {
            let wal = path.with_extension("db-wal");
            if wal.exists() {
                return Err(io_err(
                    path,
                    format!(
                        "the file is missing but its write-ahead log {} exists",
                        wal.display()
                    ),
                ));
            }
            if !opts.create {
                return Err(io_err(path, "no journal at this path"));
            }
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| io_err(path, e))?;
            }
        }
        let flags = if exists {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let conn = Connection::open_with_flags(path, flags).map_err(|e| io_err(path, e))?;
        if let Some(key) = &opts.key {
            apply_key(&conn, key).map_err(|e| io_err(path, e))?;
        }
        let corrupt = |e: rusqlite::Error| {
            io_err(
                path,
                format!("not a readable clinic-gateway journal ({e}); {LEFT_UNTOUCHED}"),
            )
        };
        conn.busy_timeout(Duration::from_secs(5)).map_err(corrupt)?;
        // WAL lets the CLI and status readers run beside the single writer. FULL syncs the WAL on
        // every commit: an acknowledgement follows a commit that survives power loss. NORMAL
        // would only lose the last commits on power loss, but those were already acknowledged.
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(corrupt)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(io_err(
                path,
                format!("cannot switch to WAL mode (got {mode})"),
            ));
        }
        conn.execute_batch(
            "PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF; PRAGMA cache_size=-16384;",
        )
        .map_err(corrupt)?;
        if exists && opts.verify {
            let result: String = conn
                .query_row("PRAGMA quick_check", [], |r| r.get(0))
                .map_err(corrupt)?;
            if result != "ok" {
                return Err(io_err(
                    path,
                    format!("integrity check failed ({result}); {LEFT_UNTOUCHED}"),
                ));
            }
        }
        let app_id: i32 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(corrupt)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(corrupt)?;
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(corrupt)?;
        if app_id != APPLICATION_ID && (app_id != 0 || tables != 0) {
            return Err(io_err(
                path,
                "this SQLite file is not a clinic-gateway journal",
            ));
        }
        if version > SCHEMA_VERSION {
            return Err(JournalError::TooNew {
                path: path.to_path_buf(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        let mut store = Store {
            conn,
            zone: jiff::tz::TimeZone::UTC,
        };
        store
            .migrate(version)
            .map_err(|e| io_err(path, format!("migration failed: {e}")))?;
        Ok(store)
    }

    fn migrate(&mut self, from: i64) -> rusqlite::Result<()> {
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Bytes the journal's live pages occupy (free pages left by pruning are reused first).
    pub fn used_bytes(&self) -> Result<u64, JournalError> {
        let (pages, free, size) = page_counts(&self.conn)?;
        Ok(((pages - free).max(0) * size) as u64)
    }

    /// Starts a transaction for one group-commit batch.
    pub fn begin(&mut self) -> Result<Batch<'_>, JournalError> {
        Ok(Batch {
            tx: self.conn.transaction()?,
            zone: self.zone.clone(),
        })
    }

    /// Makes `zone` the clinic's (the day of ticket numbers).
    pub fn set_zone(&mut self, zone: jiff::tz::TimeZone) {
        self.zone = zone;
    }

    /// Makes every in-flight row pending again: after a crash nothing is in flight any more.
    /// The attempt that was under way stays counted.
    pub fn recover_in_flight(&mut self, now: i64) -> Result<usize, JournalError> {
        Ok(self.conn.execute(
            "UPDATE outbox SET state = 0, next_attempt_at = ?1, updated_at = ?1 WHERE state = 1",
            [now],
        )?)
    }

    /// Copies the write-ahead log into the main file and empties it, for a clean shutdown.
    pub fn checkpoint(&self) -> Result<(), JournalError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Runs `f` in its own transaction (for CLI operations outside the writer thread).
    pub fn with_batch<T>(
        &mut self,
        f: impl FnOnce(&mut Batch<'_>) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let mut batch = self.begin()?;
        let out = f(&mut batch)?;
        batch.commit()?;
        Ok(out)
    }
}

/// The file's pages, free pages and page size. Asked before every batch of appends: prepared
/// once, the pragmas are read at each step; cast, as SQLCipher answers `page_size` as text.
fn page_counts(conn: &Connection) -> rusqlite::Result<(i64, i64, i64)> {
    conn.prepare_cached(
        "SELECT CAST((SELECT page_count FROM pragma_page_count) AS INTEGER),
                CAST((SELECT freelist_count FROM pragma_freelist_count) AS INTEGER),
                CAST((SELECT page_size FROM pragma_page_size) AS INTEGER)",
    )?
    .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
}

#[cfg(not(feature = "sqlcipher"))]
fn apply_key(_conn: &Connection, _key: &str) -> Result<(), String> {
    Err("journal.key_file is set but this build has no SQLCipher support".into())
}

#[cfg(feature = "sqlcipher")]
fn apply_key(conn: &Connection, key: &str) -> Result<(), String> {
    conn.pragma_update(None, "key", key)
        .map_err(|e| e.to_string())
}

/// One open transaction: the writer applies a whole batch of requests in one of these.
pub struct Batch<'c> {
    tx: Transaction<'c>,
    zone: jiff::tz::TimeZone,
}

impl Batch<'_> {
    pub fn commit(self) -> Result<(), JournalError> {
        Ok(self.tx.commit()?)
    }

    /// Commits an inbound item and one pending outbox row per destination, or, when the same
    /// `(source, source_id)` was committed before, returns that first receipt unchanged.
    pub fn append(&mut self, item: &NewItem, now: i64) -> Result<Receipt, JournalError> {
        let event_id = uuid::Uuid::now_v7();
        // Insert first and look up only on conflict: a resend is rare, a lookup per item is not.
        let inserted = self
            .tx
            .prepare_cached(
                "INSERT INTO inbound (event_id, source, source_id, kind, key, schema, payload, reply, occurred_at, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                event_id.to_string(),
                item.source,
                item.source_id,
                item.kind,
                item.key,
                item.schema,
                item.payload,
                item.reply,
                item.occurred_at.unwrap_or(now),
                now
            ])?;
        if inserted == 0 {
            return self.first_receipt(item);
        }
        let inbound_id = self.tx.last_insert_rowid();
        let mut insert = self.tx.prepare_cached(
            "INSERT INTO outbox (inbound_id, destination, key, state, next_attempt_at, updated_at)
             VALUES (?1, ?2, ?3, 0, ?4, ?4)",
        )?;
        for destination in &item.destinations {
            insert.execute(params![inbound_id, destination, item.key, now])?;
        }
        Ok(Receipt {
            inbound_id,
            event_id,
            duplicate: false,
            reply: item.reply.clone(),
        })
    }

    /// The receipt of the item committed first under the same `(source, source_id)`.
    fn first_receipt(&mut self, item: &NewItem) -> Result<Receipt, JournalError> {
        let (id, event_id, reply) = self
            .tx
            .prepare_cached(
                "SELECT id, event_id, reply FROM inbound WHERE source = ?1 AND source_id = ?2",
            )?
            .query_row(params![item.source, item.source_id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<Vec<u8>>>(2)?,
                ))
            })?;
        Ok(Receipt {
            inbound_id: id,
            event_id: event_id
                .parse()
                .map_err(|_| JournalError::Corrupt(format!("inbound {id} has a bad event id")))?,
            duplicate: true,
            reply,
        })
    }

    /// The rows [`claim`](Self::claim) would take now, left pending.
    pub fn peek(
        &mut self,
        destination: &str,
        limit: usize,
        now: i64,
    ) -> Result<Vec<OutboxRow>, JournalError> {
        let rows = self
            .tx
            .prepare_cached(
                "SELECT o.id, o.key, o.attempts, i.event_id, i.kind, i.schema, i.payload, i.occurred_at
                   FROM outbox o JOIN inbound i ON i.id = o.inbound_id
                  WHERE o.state = 0 AND o.destination = ?1
                    AND o.key NOT IN (SELECT key FROM outbox
                                       WHERE state = 0 AND attempts > 0 AND destination = ?1 AND next_attempt_at > ?2)
                  ORDER BY o.id LIMIT ?3",
            )?
            .query_map(params![destination, now, limit as i64], |r| {
                Ok(OutboxRow {
                    id: r.get(0)?,
                    key: r.get(1)?,
                    attempts: r.get::<_, u32>(2)?,
                    event_id: r.get(3)?,
                    kind: r.get(4)?,
                    schema: r.get(5)?,
                    payload: r.get(6)?,
                    occurred_at: r.get(7)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Moves up to `limit` rows of `destination` to in-flight, oldest first, skipping every key
    /// whose earliest pending row waits for a retry: a key's rows go out in order, other keys
    /// flow meanwhile.
    pub fn claim(
        &mut self,
        destination: &str,
        limit: usize,
        now: i64,
    ) -> Result<Vec<OutboxRow>, JournalError> {
        let mut rows = self.peek(destination, limit, now)?;
        let mut update = self.tx.prepare_cached(
            "UPDATE outbox SET state = 1, attempts = attempts + 1, updated_at = ?2 WHERE id = ?1",
        )?;
        for row in &mut rows {
            update.execute(params![row.id, now])?;
            // This attempt's number, as the row now counts it.
            row.attempts += 1;
        }
        Ok(rows)
    }

    /// Marks in-flight rows delivered. Rows not in flight (e.g. replayed meanwhile) are left.
    pub fn delivered(&mut self, ids: &[i64], now: i64) -> Result<usize, JournalError> {
        let mut update = self
            .tx
            .prepare_cached("UPDATE outbox SET state = 2, last_error = NULL, updated_at = ?2 WHERE id = ?1 AND state = 1")?;
        let mut n = 0;
        for id in ids {
            n += update.execute(params![id, now])?;
        }
        Ok(n)
    }

    /// Records a failed attempt for in-flight rows: back to pending after a backoff, or dead
    /// once the destination's attempts are used up. Returns (retrying, dead).
    pub fn failed(
        &mut self,
        ids: &[i64],
        error: &str,
        policy: &RetryPolicy,
        now: i64,
    ) -> Result<(usize, usize), JournalError> {
        let mut get = self
            .tx
            .prepare_cached("SELECT attempts FROM outbox WHERE id = ?1 AND state = 1")?;
        let mut retry = self.tx.prepare_cached(
            "UPDATE outbox SET state = 0, next_attempt_at = ?2, last_error = ?3, updated_at = ?4 WHERE id = ?1",
        )?;
        let mut dead = self.tx.prepare_cached(
            "UPDATE outbox SET state = 3, last_error = ?2, updated_at = ?3 WHERE id = ?1",
        )?;
        let (mut n_retry, mut n_dead) = (0, 0);
        for id in ids {
            let Some(attempts) = get.query_row([id], |r| r.get::<_, u32>(0)).optional()? else {
                continue;
            };
            if attempts >= policy.max_attempts {
                dead.execute(params![id, error, now])?;
                n_dead += 1;
            } else {
                let delay = policy.backoff(attempts).as_millis() as i64;
                retry.execute(params![id, now + delay, error, now])?;
                n_retry += 1;
            }
        }
        Ok((n_retry, n_dead))
    }

    /// Every in-flight row of a destination, oldest first (what a lost connection leaves behind).
    pub fn in_flight(&mut self, destination: &str) -> Result<Vec<i64>, JournalError> {
        let ids = self
            .tx
            .prepare_cached(
                "SELECT id FROM outbox WHERE state = 1 AND destination = ?1 ORDER BY id",
            )?
            .query_map([destination], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(ids)
    }

    /// Dead letters, newest first, optionally of one destination.
    pub fn dead_letters(
        &mut self,
        destination: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, JournalError> {
        let rows = self
            .tx
            .prepare_cached(
                "SELECT o.id, o.destination, o.key, o.attempts, o.last_error, o.updated_at, i.kind, i.event_id
                   FROM outbox o JOIN inbound i ON i.id = o.inbound_id
                  WHERE o.state = 3 AND (?1 IS NULL OR o.destination = ?1)
                  ORDER BY o.id DESC LIMIT ?2",
            )?
            .query_map(params![destination, limit as i64], |r| {
                Ok(DeadLetter {
                    id: r.get(0)?,
                    destination: r.get(1)?,
                    key: r.get(2)?,
                    attempts: r.get(3)?,
                    last_error: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                    dead_since: r.get(5)?,
                    kind: r.get(6)?,
                    event_id: r.get(7)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Puts dead letters back in line with fresh attempts: one row, or every dead row of a
    /// destination. Each replay is audited with who asked. Returns the rows replayed.
    pub fn replay(
        &mut self,
        destination: &str,
        id: Option<i64>,
        by: &str,
        now: i64,
    ) -> Result<usize, JournalError> {
        let n = match id {
            Some(id) => self.tx.execute(
                "UPDATE outbox SET state = 0, attempts = 0, next_attempt_at = ?3, updated_at = ?3
                  WHERE id = ?1 AND destination = ?2 AND state = 3",
                params![id, destination, now],
            )?,
            None => self.tx.execute(
                "UPDATE outbox SET state = 0, attempts = 0, next_attempt_at = ?2, updated_at = ?2
                  WHERE destination = ?1 AND state = 3",
                params![destination, now],
            )?,
        };
        let what = match id {
            Some(id) => format!("row {id}"),
            None => "all".to_string(),
        };
        self.audit(
            by,
            "dlq-replay",
            &format!("destination={destination} {what} replayed={n}"),
            now,
        )?;
        Ok(n)
    }

    /// Appends an audit record.
    pub fn audit(
        &mut self,
        actor: &str,
        action: &str,
        detail: &str,
        now: i64,
    ) -> Result<(), JournalError> {
        self.tx
            .prepare_cached(
                "INSERT INTO audit (at, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![now, actor, action, detail])?;
        Ok(())
    }

    /// The most recent audit records, newest first.
    pub fn audit_log(&mut self, limit: usize) -> Result<Vec<AuditEntry>, JournalError> {
        let rows = self
            .tx
            .prepare_cached(
                "SELECT at, actor, action, detail FROM audit ORDER BY id DESC LIMIT ?1",
            )?
            .query_map([limit as i64], |r| {
                Ok(AuditEntry {
                    at: r.get(0)?,
                    actor: r.get(1)?,
                    action: r.get(2)?,
                    detail: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Remembers that the gateway holds `object` of `device` at `priority` with `value` (JSON),
    /// replacing what was remembered for that slot.
    pub fn set_override(&mut self, o: &DeviceOverride) -> Result<(), JournalError> {
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO device_override (device, object, priority, value, by, set_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                o.device,
                o.object,
                o.priority,
                o.value.to_string(),
                o.by,
                o.set_at
            ])?;
        Ok(())
    }

    /// Forgets the override of one priority slot; true if there was one.
    pub fn clear_override(
        &mut self,
        device: &str,
        object: &str,
        priority: u8,
    ) -> Result<bool, JournalError> {
        let n = self
            .tx
            .prepare_cached(
                "DELETE FROM device_override WHERE device = ?1 AND object = ?2 AND priority = ?3",
            )?
            .execute(params![device, object, priority])?;
        Ok(n > 0)
    }

    /// The overrides remembered for `device`, oldest first.
    pub fn overrides(&mut self, device: &str) -> Result<Vec<DeviceOverride>, JournalError> {
        let rows = self
            .tx
            .prepare_cached(
                "SELECT device, object, priority, value, by, set_at FROM device_override
                  WHERE device = ?1 ORDER BY set_at, object, priority",
            )?
            .query_map([device], |r| {
                let value: String = r.get(3)?;
                Ok(DeviceOverride {
                    device: r.get(0)?,
                    object: r.get(1)?,
                    priority: r.get(2)?,
                    // Written by `set_override` from a JSON value; unreadable text (a hand-edited
                    // row) still names the slot, which is what relinquishing needs.
                    value: serde_json::from_str(&value).unwrap_or(serde_json::Value::Null),
                    by: r.get(4)?,
                    set_at: r.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Row counts per destination and state, and the journal's totals.
    pub fn stats(&mut self) -> Result<Stats, JournalError> {
        let mut destinations: BTreeMap<String, DestinationStats> = BTreeMap::new();
        let mut q = self.tx.prepare_cached(
            "SELECT destination, state, count(*), min(updated_at) FROM outbox WHERE state IN (0, 1, 3) GROUP BY destination, state",
        )?;
        let mut rows = q.query([])?;
        while let Some(r) = rows.next()? {
            let d = destinations.entry(r.get(0)?).or_default();
            let n = r.get::<_, i64>(2)? as u64;
            match r.get::<_, i64>(1)? {
                0 => {
                    d.pending = n;
                    d.oldest_pending_at = r.get(3)?;
                }
                1 => d.in_flight = n,
                _ => d.dead = n,
            }
        }
        drop(rows);
        drop(q);
        let inbound = self
            .tx
            .query_row("SELECT count(*) FROM inbound", [], |r| r.get::<_, i64>(0))?
            as u64;
        let (pages, free, size) = page_counts(&self.tx)?;
        Ok(Stats {
            destinations,
            inbound_items: inbound,
            used_bytes: ((pages - free).max(0) * size) as u64,
            file_bytes: (pages * size) as u64,
            schema_version: SCHEMA_VERSION,
            max_bytes: 0,
        })
    }

    /// Deletes delivered rows committed before `cutoff`, and inbound items left with no outbox
    /// row, at most `limit` of each. Pending, in-flight and dead rows are never pruned.
    pub fn prune(&mut self, cutoff: i64, limit: usize) -> Result<usize, JournalError> {
        let outbox = self.tx.execute(
            "DELETE FROM outbox WHERE id IN (
                 SELECT id FROM outbox WHERE state = 2 AND updated_at < ?1 ORDER BY id LIMIT ?2)",
            params![cutoff, limit as i64],
        )?;
        let inbound = self.tx.execute(
            "DELETE FROM inbound WHERE id IN (
                 SELECT i.id FROM inbound i
                  WHERE i.received_at < ?1
                    AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.inbound_id = i.id)
                  ORDER BY i.id LIMIT ?2)",
            params![cutoff, limit as i64],
        )?;
        Ok(outbox + inbound)
    }

    /// Queues a patient: the next ticket of the day in `queue`, at the end of its priority band,
    /// with a `queue.checked_in` event for the cloud in the same transaction, and with `ticket`
    /// its print job for the printer's outbox too. A check-in whose `request_id` was seen before
    /// in this queue returns that entry (`true`) instead, and prints nothing again.
    pub fn queue_check_in(
        &mut self,
        queue_name: &str,
        c: &CheckIn,
        ticket: Option<&TicketOrder>,
        now: i64,
    ) -> Result<(Entry, bool), JournalError> {
        if let Some(request_id) = &c.request_id {
            let found = self
                .tx
                .prepare_cached(&format!(
                    "SELECT {ENTRY_COLUMNS} FROM queue_entry WHERE queue = ?1 AND request_id = ?2"
                ))?
                .query_row(params![queue_name, request_id], entry_from_row)
                .optional()?;
            if let Some(entry) = found {
                return Ok((entry, true));
            }
        }
        let day = crate::clock::day_in(&self.zone, now);
        let n: i64 = self
            .tx
            .prepare_cached(
                "INSERT INTO queue_counter (queue, day, next) VALUES (?1, ?2, 1)
             ON CONFLICT (queue, day) DO UPDATE SET next = next + 1 RETURNING next",
            )?
            .query_row(params![queue_name, day], |r| r.get(0))?;
        // An active EHR flag of the patient raises the priority asked for; the asked one stays
        // as the base the entry returns to when the flag goes.
        let flag = match &c.demographics {
            Some(d) => self.flag_priority(&d.patient_id)?,
            None => None,
        };
        let (priority, reason) = match &flag {
            Some((p, why)) if *p > c.priority => (*p, Some(why.clone())),
            _ => (c.priority, c.priority_reason.clone()),
        };
        self.tx
            .prepare_cached(
                "INSERT INTO queue_entry (queue, ticket, patient_ref, appointment_ref, priority, priority_reason, state, request_id, arrived_at, updated_at, demographics, base_priority, base_reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'waiting', ?7, ?8, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                queue_name,
                queue::ticket_label(queue_name, n),
                c.patient_ref,
                c.appointment_ref,
                priority as i64,
                reason,
                c.request_id,
                now,
                c.demographics.as_ref().map(to_json).transpose()?,
                c.priority as i64,
                c.priority_reason,
            ])?;
        let entry = self.queue_entry(self.tx.last_insert_rowid())?;
        self.queue_event("queue.checked_in", &entry, now)?;
        if priority > c.priority {
            let text = format!(
                "{} ({}): checked in at {} priority because of an EHR flag",
                entry.ticket,
                entry.queue,
                priority.as_str()
            );
            self.notice("queue.flagged", &text, now)?;
        }
        if let Some(order) = ticket {
            self.queue_ticket(&entry, order, now)?;
        }
        Ok((entry, false))
    }

    /// Commits the print job of a new entry's ticket for `printer:<name>`, keyed by the printer
    /// so that its tickets print in check-in order. The estimated wait counts the entries
    /// waiting ahead of this one in call order (priority, then arrival).
    fn queue_ticket(
        &mut self,
        entry: &Entry,
        order: &TicketOrder,
        now: i64,
    ) -> Result<(), JournalError> {
        let ahead: u32 = self
            .tx
            .prepare_cached(
                "SELECT count(*) FROM queue_entry
                  WHERE queue = ?1 AND state = 'waiting' AND id != ?2
                    AND (priority > ?3 OR (priority = ?3 AND (arrived_at < ?4 OR (arrived_at = ?4 AND id < ?2))))",
            )?
            .query_row(
                params![entry.queue, entry.id, entry.priority as i64, entry.arrived_at],
                |r| r.get(0),
            )?;
        let job = TicketJob {
            entry: entry.id,
            ticket: entry.ticket.clone(),
            queue: entry.queue.clone(),
            waiting_ahead: ahead,
            estimated_wait_min: ahead.saturating_mul(order.minutes_per_patient),
        };
        let destination = crate::devices::printer::destination(&order.printer);
        let item = NewItem {
            source: "queue".into(),
            source_id: None,
            kind: crate::devices::printer::TICKET_KIND.into(),
            key: destination.clone(),
            schema: format!("clinic-gateway/{}@1", crate::devices::printer::TICKET_KIND),
            payload: serde_json::to_vec(&job).map_err(|e| JournalError::Corrupt(e.to_string()))?,
            reply: None,
            occurred_at: Some(now),
            destinations: vec![destination],
        };
        self.append(&item, now).map(|_| ())
    }

    fn queue_entry(&mut self, id: i64) -> Result<Entry, JournalError> {
        self.tx
            .prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM queue_entry WHERE id = ?1"
            ))?
            .query_row([id], entry_from_row)
            .optional()?
            .ok_or_else(|| JournalError::NotFound(format!("no queue entry {id}")))
    }

    /// The cloud event of a queue change, keyed by queue so a queue's changes stay in order.
    /// Demographics stay on site: the cloud gets the patient reference only.
    fn queue_event(&mut self, kind: &str, entry: &Entry, now: i64) -> Result<(), JournalError> {
        let entry = &Entry {
            demographics: None,
            ..entry.clone()
        };
        let item = NewItem {
            source: "queue".into(),
            source_id: None,
            kind: kind.into(),
            key: format!("queue:{}", entry.queue),
            schema: format!("clinic-gateway/{kind}@1"),
            payload: serde_json::to_vec(entry).map_err(|e| JournalError::Corrupt(e.to_string()))?,
            reply: None,
            occurred_at: Some(now),
            destinations: vec![crate::CLOUD.into()],
        };
        self.append(&item, now).map(|_| ())
    }

    /// Applies a staff action to an entry, if its state allows it.
    pub fn queue_act(&mut self, id: i64, action: &Action, now: i64) -> Result<Entry, JournalError> {
        let entry = self.queue_entry(id)?;
        let to = queue::transition(entry.state, action)
            .map_err(|e| JournalError::Rejected(e.to_string()))?;
        let room = match action {
            Action::Call { room } => room.clone().or(entry.room.clone()),
            Action::AssignRoom { room } => Some(room.clone()),
            Action::Reroute { room } => room.clone(),
            _ => entry.room.clone(),
        };
        self.tx.prepare_cached(
            "UPDATE queue_entry SET state = ?2, room = ?3, updated_at = ?4,
                 called_at  = CASE WHEN ?2 = 'called'  THEN ?4 ELSE called_at END,
                 in_room_at = CASE WHEN ?2 = 'in_room' THEN ?4 ELSE in_room_at END,
                 closed_at  = CASE WHEN ?2 IN ('done', 'no_show', 'cancelled', 'left') THEN ?4 ELSE closed_at END
             WHERE id = ?1",
        )?
        .execute(params![id, to.as_str(), room, now])?;
        let entry = self.queue_entry(id)?;
        self.queue_event(action.event_kind(), &entry, now)?;
        Ok(entry)
    }

    /// Calls the first waiting patient of a queue (priority, then arrival), if any.
    pub fn queue_call_next(
        &mut self,
        queue_name: &str,
        room: Option<String>,
        now: i64,
    ) -> Result<Option<Entry>, JournalError> {
        self.queue_first_waiting(queue_name)?
            .map(|e| self.queue_act(e.id, &Action::Call { room }, now))
            .transpose()
    }

    /// The entry a call would take next: the first waiting one by priority, then arrival.
    fn queue_first_waiting(&mut self, queue_name: &str) -> Result<Option<Entry>, JournalError> {
        let found = self
            .tx
            .prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM queue_entry WHERE queue = ?1 AND state = 'waiting'
                  ORDER BY priority DESC, arrived_at, id LIMIT 1"
            ))?
            .query_row([queue_name], entry_from_row)
            .optional()?;
        Ok(found)
    }

    /// Entries in queue order (priority, then arrival): every open one, or also the closed ones
    /// of the last `closed_since` ms.
    pub fn queue_list(
        &mut self,
        queue_name: Option<&str>,
        closed_since: Option<i64>,
    ) -> Result<Vec<Entry>, JournalError> {
        let rows = self
            .tx
            .prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM queue_entry
                  WHERE (?1 IS NULL OR queue = ?1)
                    AND (state IN ('waiting', 'called', 'in_room') OR (?2 IS NOT NULL AND closed_at >= ?2))
                  ORDER BY queue, priority DESC, arrived_at, id"
            ))?
            .query_map(params![queue_name, closed_since], entry_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Commits an item from the EHR and, unless it is a resend, applies its effects on the
    /// queue in the same transaction.
    pub fn ehr_inbound(
        &mut self,
        item: &NewItem,
        effects: &[FromEhr],
        now: i64,
    ) -> Result<Receipt, JournalError> {
        let receipt = self.append(item, now)?;
        if !receipt.duplicate {
            for effect in effects {
                self.queue_from_ehr(effect, now)?;
            }
        }
        Ok(receipt)
    }

    /// Applies one EHR effect to the open entries it concerns (entries whose state it does not
    /// change are left alone), or as a new entry for an appointment that is due; keeps the
    /// bookings remembered for an arrival in step (`appointment_booking`).
    fn queue_from_ehr(&mut self, effect: &FromEhr, now: i64) -> Result<(), JournalError> {
        match effect {
            FromEhr::Flag {
                flag_id,
                patient_id,
                raise,
            } => return self.queue_flag(flag_id, patient_id, raise.as_ref(), now),
            FromEhr::Booked(booking) => return self.remember_booking(booking, now),
            FromEhr::Arrived { patient_ref, today } => {
                return match self.arrival(patient_ref, today)? {
                    Some(due) => self.queue_from_ehr(&due, now),
                    None => Ok(()),
                };
            }
            FromEhr::Cancelled { appointment_refs }
            | FromEhr::Moved {
                appointment_refs, ..
            }
            | FromEhr::NoShow { appointment_refs } => self.forget_booking(appointment_refs)?,
            FromEhr::AppointmentPriority {
                appointment_refs,
                priority,
                reason,
            } => self.booking_priority(appointment_refs, *priority, reason.as_deref(), now)?,
            _ => {}
        }
        let open = self.queue_list(None, None)?;
        let of_appointment = |e: &Entry, refs: &[String]| {
            e.appointment_ref.as_ref().is_some_and(|r| refs.contains(r))
        };
        if let FromEhr::AppointmentDue {
            queue,
            appointment_ref,
            appointment_refs,
            patient_ref,
            priority,
            priority_reason,
        } = effect
        {
            if open.iter().any(|e| of_appointment(e, appointment_refs)) {
                return Ok(());
            }
            let check_in = CheckIn {
                patient_ref: Some(patient_ref.clone()),
                appointment_ref: Some(appointment_ref.clone()),
                priority: *priority,
                priority_reason: priority_reason.clone(),
                // A later booking message for the appointment then finds this entry, even once
                // it is closed, and queues nothing.
                request_id: Some(format!("appointment:{appointment_ref}")),
                patient: None,
                demographics: None,
                unknown_to_ehr: false,
                printer: None,
            };
            // No ticket is printed: neither a booking nor the registration desk's arrival comes
            // from a kiosk.
            return self.queue_check_in(queue, &check_in, None, now).map(|_| ());
        }
        let concerned = |e: &Entry| match effect {
            FromEhr::Cancelled { appointment_refs }
            | FromEhr::Moved {
                appointment_refs, ..
            }
            | FromEhr::NoShow { appointment_refs }
            | FromEhr::AppointmentPriority {
                appointment_refs, ..
            } => of_appointment(e, appointment_refs),
            FromEhr::Discharged { patient_ref } | FromEhr::VisitCancelled { patient_ref } => {
                e.patient_ref.as_deref() == Some(patient_ref.as_str())
            }
            FromEhr::Merged { from, .. } => e.patient_ref.as_deref() == Some(from.as_str()),
            FromEhr::Flag { .. }
            | FromEhr::AppointmentDue { .. }
            | FromEhr::Booked(_)
            | FromEhr::Arrived { .. } => false,
            FromEhr::Visit {
                entries,
                appointment_refs,
                ..
            } => {
                entries.contains(&e.id)
                    || e.appointment_ref
                        .as_ref()
                        .is_some_and(|r| appointment_refs.contains(r))
            }
        };
        for entry in open.into_iter().filter(concerned) {
            if let FromEhr::Merged { to, .. } = effect {
                self.tx
                    .prepare_cached(
                        "UPDATE queue_entry SET patient_ref = ?2, updated_at = ?3 WHERE id = ?1",
                    )?
                    .execute(params![entry.id, to, now])?;
                let merged = self.queue_entry(entry.id)?;
                self.queue_event("queue.patient_merged", &merged, now)?;
            } else if let FromEhr::AppointmentPriority {
                priority, reason, ..
            } = effect
            {
                self.queue_base_priority(&entry, *priority, reason.as_deref(), now)?;
            } else if let Some(action) = effect.action(entry.state) {
                let done = self.queue_act(entry.id, &action, now)?;
                match effect {
                    FromEhr::Visit { .. } if action == Action::Complete => {
                        self.queue_next_prepared(&done, now)?
                    }
                    FromEhr::Cancelled { .. } => {
                        self.patient_notification(&done, "appointment_cancelled", None, now)?
                    }
                    FromEhr::Moved { start, .. } => self.patient_notification(
                        &done,
                        "appointment_rescheduled",
                        start.as_deref(),
                        now,
                    )?,
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Remembers a booking that waits for the patient's arrival, replacing what was remembered
    /// under any of its ids (a move changes its day and start) and keeping the remembered
    /// priority when the message carried none.
    fn remember_booking(&mut self, b: &Booking, now: i64) -> Result<(), JournalError> {
        let refs = to_json(&b.appointment_refs)?;
        let kept: Option<(i64, Option<String>)> = self
            .tx
            .prepare_cached(
                "SELECT priority, priority_reason FROM appointment_booking b
                  WHERE EXISTS (SELECT 1 FROM json_each(b.appointment_refs) a, json_each(?1) r WHERE a.value = r.value)
                  ORDER BY priority DESC LIMIT 1",
            )?
            .query_row([&refs], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (priority, reason) = match (&b.priority, kept) {
            (Some((p, reason)), _) => (*p as i64, reason.clone()),
            (None, Some(kept)) => kept,
            (None, None) => (Priority::Normal as i64, None),
        };
        self.forget_booking(&b.appointment_refs)?;
        self.tx
            .prepare_cached(
                "INSERT INTO appointment_booking (appointment_ref, appointment_refs, patient_ref, day, starts_at, queue, priority, priority_reason, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                b.appointment_ref,
                refs,
                b.patient_ref,
                b.day,
                b.starts_at,
                b.queue,
                priority,
                reason,
                now
            ])?;
        Ok(())
    }

    /// Forgets the remembered booking of an appointment (any of its ids): cancelled, not
    /// attended, or moved (a later `Booked` remembers its new day).
    fn forget_booking(&mut self, appointment_refs: &[String]) -> Result<(), JournalError> {
        self.tx
            .prepare_cached(
                "DELETE FROM appointment_booking
                  WHERE EXISTS (SELECT 1 FROM json_each(appointment_refs) a, json_each(?1) r WHERE a.value = r.value)",
            )?
            .execute([to_json(&appointment_refs)?])?;
        Ok(())
    }

    /// Gives a remembered booking (any of its ids) the priority its appointment now carries.
    fn booking_priority(
        &mut self,
        appointment_refs: &[String],
        priority: Priority,
        reason: Option<&str>,
        now: i64,
    ) -> Result<(), JournalError> {
        self.tx
            .prepare_cached(
                "UPDATE appointment_booking SET priority = ?2, priority_reason = ?3, updated_at = ?4
                  WHERE EXISTS (SELECT 1 FROM json_each(appointment_refs) a, json_each(?1) r WHERE a.value = r.value)",
            )?
            .execute(params![
                to_json(&appointment_refs)?,
                priority as i64,
                reason,
                now
            ])?;
        Ok(())
    }

    /// What the patient's arrival on `today` queues: of their remembered bookings of that day,
    /// the first by start (then by when it was remembered) that was never queued (request id
    /// unused), as [`FromEhr::AppointmentDue`]. Nothing while an open entry carries one of
    /// them: a repeated arrival (a resend under a new control id) must not queue the day's
    /// next booking too. Bookings of earlier days, which nobody can arrive for any more, are
    /// forgotten on the way.
    fn arrival(&mut self, patient_ref: &str, today: &str) -> Result<Option<FromEhr>, JournalError> {
        self.tx
            .prepare_cached("DELETE FROM appointment_booking WHERE day < ?1")?
            .execute([today])?;
        let bookings: Vec<(bool, bool, FromEhr)> = self
            .tx
            .prepare_cached(
                "SELECT b.appointment_ref, b.appointment_refs, b.queue, b.priority, b.priority_reason,
                        EXISTS (SELECT 1 FROM queue_entry e, json_each(b.appointment_refs) a
                                 WHERE e.state IN ('waiting', 'called', 'in_room') AND e.appointment_ref = a.value),
                        EXISTS (SELECT 1 FROM queue_entry e
                                 WHERE e.queue = b.queue AND e.request_id = 'appointment:' || b.appointment_ref)
                   FROM appointment_booking b WHERE b.patient_ref = ?1 AND b.day = ?2
                  ORDER BY b.starts_at, b.rowid",
            )?
            .query_map([patient_ref, today], |r| {
                let due = FromEhr::AppointmentDue {
                    appointment_ref: r.get(0)?,
                    appointment_refs: from_json(1, &r.get::<_, String>(1)?)?,
                    queue: r.get(2)?,
                    patient_ref: patient_ref.to_string(),
                    priority: Priority::from_i64(r.get(3)?),
                    priority_reason: r.get(4)?,
                };
                Ok((r.get(5)?, r.get(6)?, due))
            })?
            .collect::<Result<_, _>>()?;
        if bookings.iter().any(|(in_queue, _, _)| *in_queue) {
            return Ok(None);
        }
        Ok(bookings
            .into_iter()
            .find(|(_, queued_once, _)| !queued_once)
            .map(|(_, _, due)| due))
    }

    /// Records an EHR flag of a patient (`raise: None` once it is no longer active) and sets
    /// the priority of the patient's open entries: the highest of what was asked at check-in
    /// and the patient's active flags. Each change is an event and a staff notice.
    fn queue_flag(
        &mut self,
        flag_id: &str,
        patient_id: &str,
        raise: Option<&(Priority, String)>,
        now: i64,
    ) -> Result<(), JournalError> {
        self.tx
            .prepare_cached(
                "INSERT INTO fhir_flag (id, patient_id, priority, reason, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET patient_id = ?2, priority = ?3, reason = ?4, updated_at = ?5",
            )?
            .execute(params![
                flag_id,
                patient_id,
                raise.map(|(p, _)| *p as i64),
                raise.map(|(_, r)| r.as_str()).unwrap_or(""),
                now
            ])?;
        self.queue_apply_flags(patient_id, now)
    }

    /// Sets the priority of a patient's open entries from their active EHR flags: the highest
    /// of what was asked at check-in and the flags. Each change is an event and a staff notice.
    fn queue_apply_flags(&mut self, patient_id: &str, now: i64) -> Result<(), JournalError> {
        let flag = self.flag_priority(patient_id)?;
        let entries: Vec<(i64, Priority, Option<String>)> = self
            .tx
            .prepare_cached(
                "SELECT id, COALESCE(base_priority, priority), CASE WHEN base_priority IS NULL THEN priority_reason ELSE base_reason END
                   FROM queue_entry
                  WHERE state IN ('waiting', 'called', 'in_room') AND json_extract(demographics, '$.patient_id') = ?1",
            )?
            .query_map([patient_id], |r| {
                Ok((r.get(0)?, Priority::from_i64(r.get(1)?), r.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        for (id, base, base_reason) in entries {
            let before = self.queue_entry(id)?;
            let (priority, reason) = match &flag {
                Some((p, why)) if *p > base => (*p, Some(why.clone())),
                _ => (base, base_reason),
            };
            if (priority, &reason) == (before.priority, &before.priority_reason) {
                continue;
            }
            self.queue_write_priority(id, priority, reason.as_deref(), None, now)?;
            let entry = self.queue_entry(id)?;
            self.queue_event("queue.priority_changed", &entry, now)?;
            let why = if flag.as_ref().is_some_and(|(p, _)| *p > base) {
                "because of an EHR flag"
            } else {
                "as the EHR flag was removed"
            };
            let text = format!(
                "{} ({}): priority {} to {} {why}",
                entry.ticket,
                entry.queue,
                if priority > before.priority {
                    "raised"
                } else {
                    "lowered"
                },
                priority.as_str()
            );
            self.notice("queue.flagged", &text, now)?;
        }
        Ok(())
    }

    /// Links an entry to what the EHR registered for it: the patient (demographics, and the
    /// patient reference when the entry had none) or the walk-in's appointment; a
    /// `queue.linked` event tells the cloud (no demographics).
    pub fn queue_link(
        &mut self,
        id: i64,
        demographics: Option<Demographics>,
        appointment_ref: Option<String>,
        now: i64,
    ) -> Result<Entry, JournalError> {
        let before = self.queue_entry(id)?;
        let patient_ref = before
            .patient_ref
            .clone()
            .or_else(|| demographics.as_ref().and_then(|d| d.identifier.clone()));
        self.tx
            .prepare_cached(
                "UPDATE queue_entry SET demographics = COALESCE(?2, demographics), patient_ref = ?3,
                        appointment_ref = COALESCE(?4, appointment_ref), updated_at = ?5 WHERE id = ?1",
            )?
            .execute(params![
                id,
                demographics.as_ref().map(to_json).transpose()?,
                patient_ref,
                appointment_ref,
                now
            ])?;
        let entry = self.queue_entry(id)?;
        if entry != before {
            self.queue_event("queue.linked", &entry, now)?;
        }
        // Flags the patient already has reach an entry linked late (checked in offline).
        match (&before.demographics, &entry.demographics) {
            (None, Some(d)) => {
                let patient_id = d.patient_id.clone();
                self.queue_apply_flags(&patient_id, now)?;
                self.queue_entry(id)
            }
            _ => Ok(entry),
        }
    }

    /// Gives an open entry the priority it returns to when no EHR flag raises it (the
    /// appointment's), and so its priority: the higher of that and the patient's active flags.
    /// A change of the priority is a `queue.priority_changed` event.
    fn queue_base_priority(
        &mut self,
        entry: &Entry,
        base: Priority,
        base_reason: Option<&str>,
        now: i64,
    ) -> Result<(), JournalError> {
        let flag = match &entry.demographics {
            Some(d) => self.flag_priority(&d.patient_id)?,
            None => None,
        };
        let (priority, reason) = match flag {
            Some((p, why)) if p > base => (p, Some(why)),
            _ => (base, base_reason.map(str::to_string)),
        };
        self.queue_write_priority(
            entry.id,
            priority,
            reason.as_deref(),
            Some((base, base_reason)),
            now,
        )?;
        if (priority, &reason) != (entry.priority, &entry.priority_reason) {
            let changed = self.queue_entry(entry.id)?;
            self.queue_event("queue.priority_changed", &changed, now)?;
        }
        Ok(())
    }

    /// Writes an entry's priority with its reason and, given `base`, the priority (and reason)
    /// it returns to when no EHR flag raises it.
    fn queue_write_priority(
        &mut self,
        id: i64,
        priority: Priority,
        reason: Option<&str>,
        base: Option<(Priority, Option<&str>)>,
        now: i64,
    ) -> Result<(), JournalError> {
        self.tx
            .prepare_cached(
                "UPDATE queue_entry SET priority = ?2, priority_reason = ?3, updated_at = ?4,
                        base_priority = CASE WHEN ?5 THEN ?6 ELSE base_priority END,
                        base_reason   = CASE WHEN ?5 THEN ?7 ELSE base_reason END
                  WHERE id = ?1",
            )?
            .execute(params![
                id,
                priority as i64,
                reason,
                now,
                base.is_some(),
                base.map(|(p, _)| p as i64),
                base.and_then(|(_, r)| r),
            ])?;
        Ok(())
    }

    /// The active EHR flags of patients with an open entry: (flag id, patient id).
    pub fn raising_flags(&mut self) -> Result<Vec<(String, String)>, JournalError> {
        let rows = self
            .tx
            .prepare_cached(
                "SELECT f.id, f.patient_id FROM fhir_flag f
                  WHERE f.priority IS NOT NULL AND EXISTS (
                        SELECT 1 FROM queue_entry e
                         WHERE e.state IN ('waiting', 'called', 'in_room')
                           AND json_extract(e.demographics, '$.patient_id') = f.patient_id)
                  ORDER BY f.id",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// The highest active EHR flag of a patient, with its reason.
    fn flag_priority(
        &mut self,
        patient_id: &str,
    ) -> Result<Option<(Priority, String)>, JournalError> {
        let found = self
            .tx
            .prepare_cached(
                "SELECT priority, reason FROM fhir_flag WHERE patient_id = ?1 AND priority IS NOT NULL
                  ORDER BY priority DESC, updated_at DESC LIMIT 1",
            )?
            .query_row([patient_id], |r| Ok((Priority::from_i64(r.get(0)?), r.get(1)?)))
            .optional()?;
        Ok(found)
    }

    /// A notice for staff, shown on the status page until acknowledged. Tickets and queues
    /// only: the page carries no patient data.
    pub fn notice(&mut self, kind: &str, text: &str, now: i64) -> Result<(), JournalError> {
        self.tx
            .prepare_cached("INSERT INTO staff_notice (at, kind, text) VALUES (?1, ?2, ?3)")?
            .execute(params![now, kind, text])?;
        Ok(())
    }

    /// Notices, newest first: the open ones, or also the acknowledged ones.
    pub fn notices(&mut self, all: bool, limit: usize) -> Result<Vec<Notice>, JournalError> {
        let rows = self
            .tx
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
    pub fn acknowledge(&mut self, id: i64, by: &str, now: i64) -> Result<(), JournalError> {
        let changed = self
            .tx
            .prepare_cached(
                "UPDATE staff_notice SET acknowledged_at = ?2, acknowledged_by = ?3
                  WHERE id = ?1 AND acknowledged_at IS NULL",
            )?
            .execute(params![id, now, by])?;
        if changed == 0 {
            return Err(JournalError::NotFound(format!("no open notice {id}")));
        }
        let detail = serde_json::json!({ "notice": id }).to_string();
        self.audit(by, "notice.acknowledged", &detail, now)
    }

    /// A patient to be told that their appointment changed (`reason`; `start`: the new one),
    /// for the notification providers behind the cloud: who (the patient reference and the
    /// EHR's Patient id) and which ticket, queue and appointment, no demographics.
    fn patient_notification(
        &mut self,
        entry: &Entry,
        reason: &str,
        start: Option<&str>,
        now: i64,
    ) -> Result<(), JournalError> {
        let payload = serde_json::json!({
            "reason": reason,
            "entry": entry.id,
            "ticket": entry.ticket,
            "queue": entry.queue,
            "patient_ref": entry.patient_ref,
            "patient_id": entry.demographics.as_ref().map(|d| &d.patient_id),
            "appointment_ref": entry.appointment_ref,
            "new_start": start,
        });
        let who = entry
            .patient_ref
            .clone()
            .unwrap_or_else(|| format!("entry-{}", entry.id));
        let item = NewItem {
            source: "queue".into(),
            source_id: None,
            kind: "patient.notification".into(),
            key: format!("patient:{who}"),
            schema: "clinic-gateway/patient.notification@1".into(),
            payload: to_json(&payload)?.into_bytes(),
            reply: None,
            occurred_at: Some(now),
            destinations: vec![crate::CLOUD.into()],
        };
        self.append(&item, now).map(|_| ())
    }

    /// After the EHR finished a visit: the queue's next patient (call order), announced with
    /// the room that came free so staff screens can prepare the call. Tickets only.
    fn queue_next_prepared(&mut self, done: &Entry, now: i64) -> Result<(), JournalError> {
        let next = self.queue_first_waiting(&done.queue)?;
        let payload = serde_json::json!({
            "queue": done.queue,
            "room": done.room,
            "finished": { "id": done.id, "ticket": done.ticket },
            "next": next.map(|n| serde_json::json!({ "id": n.id, "ticket": n.ticket })),
        });
        let item = NewItem {
            source: "queue".into(),
            source_id: None,
            kind: "queue.next_prepared".into(),
            key: format!("queue:{}", done.queue),
            schema: "clinic-gateway/queue.next_prepared@1".into(),
            payload: to_json(&payload)?.into_bytes(),
            reply: None,
            occurred_at: Some(now),
            destinations: vec![crate::CLOUD.into()],
        };
        self.append(&item, now).map(|_| ())
    }

    /// Takes a room out of service or puts it back (`hold` = `None`), audited with `by`, with a
    /// `facility.room_hold` event for the cloud in the same transaction.
    pub fn set_room_hold(
        &mut self,
        room: &str,
        hold: Option<(Hold, Option<String>)>,
        by: &str,
        now: i64,
    ) -> Result<Option<RoomHold>, JournalError> {
        let held = match &hold {
            Some((h, reason)) => {
                self.tx
                    .prepare_cached(
                        "INSERT INTO room_hold (room, hold, reason, by, at) VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (room) DO UPDATE SET hold = ?2, reason = ?3, by = ?4, at = ?5",
                    )?
                    .execute(params![room, h.as_str(), reason, by, now])?;
                Some(RoomHold {
                    room: room.into(),
                    hold: *h,
                    reason: reason.clone(),
                    by: by.into(),
                    at: now,
                })
            }
            None => {
                self.tx
                    .prepare_cached("DELETE FROM room_hold WHERE room = ?1")?
                    .execute([room])?;
                None
            }
        };
        let state = held.as_ref().map_or("in_service", |h| h.hold.as_str());
        let reason = held.as_ref().and_then(|h| h.reason.as_deref());
        self.audit(
            by,
            "room-hold",
            &format!(
                "room {room}: {state}{}",
                reason.map(|r| format!(" ({r})")).unwrap_or_default()
            ),
            now,
        )?;
        let item = NewItem {
            source: "facility".into(),
            source_id: None,
            kind: "facility.room_hold".into(),
            key: format!("room:{room}"),
            schema: "clinic-gateway/facility.room_hold@1".into(),
            payload:
                serde_json::json!({ "room": room, "state": state, "reason": reason, "by": by })
                    .to_string()
                    .into_bytes(),
            reply: None,
            occurred_at: Some(now),
            destinations: vec![crate::CLOUD.into()],
        };
        self.append(&item, now)?;
        Ok(held)
    }

    /// Every room staff or the cloud took out of service, by room name.
    pub fn room_holds(&mut self) -> Result<Vec<RoomHold>, JournalError> {
        let rows = self
            .tx
            .prepare_cached("SELECT room, hold, reason, by, at FROM room_hold ORDER BY room")?
            .query_map([], |r| {
                let hold: String = r.get(1)?;
                Ok(RoomHold {
                    room: r.get(0)?,
                    hold: Hold::parse(&hold).ok_or_else(|| {
                        rusqlite::Error::FromSqlConversionFailure(
                            1,
                            rusqlite::types::Type::Text,
                            format!("unknown room hold {hold:?}").into(),
                        )
                    })?,
                    reason: r.get(2)?,
                    by: r.get(3)?,
                    at: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// One cached Patient by its EHR id.
    pub fn fhir_patient(&mut self, id: &str) -> Result<Option<CachedPatient>, JournalError> {
        Ok(self
            .tx
            .prepare_cached(&format!(
                "SELECT {PATIENT_COLUMNS} FROM fhir_patient WHERE id = ?1"
            ))?
            .query_row([id], cached_from_row)
            .optional()?)
    }

    /// Cached Patients with this identifier value, or else with this family name (any case)
    /// and birth date: the offline lookup of a check-in.
    pub fn fhir_find(
        &mut self,
        identifier: Option<&str>,
        family: Option<&str>,
        birth_date: Option<&str>,
    ) -> Result<Vec<CachedPatient>, JournalError> {
        let rows = self
            .tx
            .prepare_cached(&format!(
                "SELECT {PATIENT_COLUMNS} FROM fhir_patient
                  WHERE (?1 IS NOT NULL AND identifier = ?1)
                     OR (?1 IS NULL AND family_key = lower(?2) AND birth_date = ?3)
                  ORDER BY id LIMIT 10"
            ))?
            .query_map(params![identifier, family, birth_date], cached_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn fhir_store(
        &mut self,
        id: &str,
        identifier: Option<&str>,
        synced: &Patient,
        local: Option<&Patient>,
        now: i64,
    ) -> Result<(), JournalError> {
        let shown = local.unwrap_or(synced);
        let f = fhir::fields(shown);
        let family = f.get("family").cloned().flatten().map(|v| v.to_lowercase());
        self.tx
            .prepare_cached(
                "INSERT INTO fhir_patient (id, identifier, family_key, birth_date, version_id, synced, local, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (id) DO UPDATE SET identifier = ?2, family_key = ?3, birth_date = ?4,
                    version_id = ?5, synced = ?6, local = ?7, updated_at = ?8",
            )?
            .execute(params![
                id,
                identifier,
                family,
                f.get("birth_date").cloned().flatten(),
                synced.version_id(),
                to_json(synced)?,
                local.map(to_json).transpose()?,
                now
            ])?;
        Ok(())
    }

    /// Takes in a version read from the EHR. A patient not cached is added only with `insert`
    /// (lookups add, polls only follow known patients). A newer version replaces the synced
    /// one; if a local change is still undelivered and differs from it, both are kept as a
    /// conflict (audited) and the local change leaves the delivery path until resolved.
    pub fn fhir_seen(
        &mut self,
        remote: &Patient,
        identifier: Option<&str>,
        insert: bool,
        now: i64,
    ) -> Result<Seen, JournalError> {
        let id = remote.id.as_deref().unwrap_or_default();
        let Some(cached) = self.fhir_patient(id)? else {
            if !insert {
                return Ok(Seen::Ignored);
            }
            self.fhir_store(id, identifier, remote, None, now)?;
            return Ok(Seen::New);
        };
        if cached.version_id.is_some() && cached.version_id.as_deref() == remote.version_id() {
            return Ok(Seen::Unchanged);
        }
        let identifier = identifier.map(str::to_string).or(cached.identifier.clone());
        match cached.local {
            Some(local) if !fhir::same_content(&local, remote) => {
                let open: Option<i64> = self
                    .tx
                    .prepare_cached(
                        "SELECT id FROM fhir_conflict WHERE patient_id = ?1 AND resolved_at IS NULL",
                    )?
                    .query_row([id], |r| r.get(0))
                    .optional()?;
                let conflict = match open {
                    Some(c) => {
                        self.tx
                            .prepare_cached("UPDATE fhir_conflict SET remote = ?2 WHERE id = ?1")?
                            .execute(params![c, to_json(remote)?])?;
                        c
                    }
                    None => {
                        self.tx
                            .prepare_cached(
                                "INSERT INTO fhir_conflict (patient_id, local, remote, created_at) VALUES (?1, ?2, ?3, ?4)",
                            )?
                            .execute(params![id, to_json(&local)?, to_json(remote)?, now])?;
                        self.tx.last_insert_rowid()
                    }
                };
                self.fhir_store(id, identifier.as_deref(), remote, None, now)?;
                let detail = serde_json::json!({
                    "patient_id": id,
                    "conflict": conflict,
                    "fields": fhir::differing_fields(&local, remote),
                });
                self.audit("fhir", "fhir.conflict", &detail.to_string(), now)?;
                Ok(Seen::Conflict(conflict))
            }
            _ => {
                self.fhir_store(id, identifier.as_deref(), remote, None, now)?;
                Ok(Seen::Updated)
            }
        }
    }

    /// A local demographic change: kept as the patient's local version and handed to the
    /// `ehr-fhir` outbox (keyed by patient, so changes to one patient go in order), audited with
    /// `by` and the field names. A change that leaves the data as it is sends nothing (`false`).
    /// Refused while the patient has an open conflict.
    pub fn fhir_edit(
        &mut self,
        id: &str,
        changes: &Fields,
        by: &str,
        now: i64,
    ) -> Result<bool, JournalError> {
        let cached = self
            .fhir_patient(id)?
            .ok_or_else(|| JournalError::NotFound(format!("no cached Patient {id}")))?;
        let open: i64 = self.tx.query_row(
            "SELECT count(*) FROM fhir_conflict WHERE patient_id = ?1 AND resolved_at IS NULL",
            [id],
            |r| r.get(0),
        )?;
        if open > 0 {
            return Err(JournalError::Rejected(format!(
                "Patient {id} has an open conflict; resolve it first"
            )));
        }
        self.fhir_change(&cached, changes, by, "fhir.local_change", now)
    }

    fn fhir_change(
        &mut self,
        cached: &CachedPatient,
        changes: &Fields,
        by: &str,
        action: &str,
        now: i64,
    ) -> Result<bool, JournalError> {
        let changed = fhir::apply(cached.current(), changes);
        if fhir::same_content(&changed, cached.current()) {
            return Ok(false);
        }
        let local = (!fhir::same_content(&changed, &cached.synced)).then_some(&changed);
        self.fhir_store(
            &cached.id,
            cached.identifier.as_deref(),
            &cached.synced,
            local,
            now,
        )?;
        let detail = serde_json::json!({
            "patient_id": cached.id,
            "fields": changes.keys().collect::<Vec<_>>(),
        });
        self.audit(by, action, &detail.to_string(), now)?;
        let item = NewItem {
            source: "fhir".into(),
            source_id: None,
            kind: "fhir.patient_update".into(),
            key: format!("fhir:Patient/{}", cached.id),
            schema: "clinic-gateway/fhir.patient_update@1".into(),
            payload: to_json(&serde_json::json!({ "patient_id": cached.id }))?.into_bytes(),
            reply: None,
            occurred_at: Some(now),
            destinations: vec![crate::connectors::fhir::DESTINATION.into()],
        };
        self.append(&item, now)?;
        Ok(true)
    }

    /// The EHR stored `stored` for our update `sent`: it becomes the synced version, and the
    /// local change is settled unless a newer one was made meanwhile.
    pub fn fhir_written(
        &mut self,
        sent: &Patient,
        stored: &Patient,
        now: i64,
    ) -> Result<(), JournalError> {
        let id = stored.id.as_deref().unwrap_or_default();
        let Some(cached) = self.fhir_patient(id)? else {
            return Ok(());
        };
        let local = cached
            .local
            .as_ref()
            .filter(|l| !fhir::same_content(l, sent) && !fhir::same_content(l, stored));
        self.fhir_store(id, cached.identifier.as_deref(), stored, local, now)
    }

    /// Conflicts, newest first: open ones only, or all.
    pub fn fhir_conflicts(&mut self, all: bool) -> Result<Vec<Conflict>, JournalError> {
        let rows = self
            .tx
            .prepare_cached(&format!(
                "SELECT {CONFLICT_COLUMNS} FROM fhir_conflict
                  WHERE ?1 OR resolved_at IS NULL ORDER BY id DESC LIMIT 500"
            ))?
            .query_map([all], conflict_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Resolves an open conflict with a choice per differing field. The chosen values are
    /// applied to the patient's synced version and sent like a local change (unless that
    /// changes nothing); the choice is recorded and audited.
    pub fn fhir_resolve(
        &mut self,
        id: i64,
        choices: &BTreeMap<String, Side>,
        by: &str,
        now: i64,
    ) -> Result<(Conflict, bool), JournalError> {
        let conflict = self
            .tx
            .prepare_cached(&format!(
                "SELECT {CONFLICT_COLUMNS} FROM fhir_conflict WHERE id = ?1"
            ))?
            .query_row([id], conflict_from_row)
            .optional()?
            .ok_or_else(|| JournalError::NotFound(format!("no conflict {id}")))?;
        if conflict.resolved_at.is_some() {
            return Err(JournalError::Rejected(format!(
                "conflict {id} is already resolved"
            )));
        }
        let values = fhir::resolution(&conflict.local, &conflict.remote, choices)
            .map_err(|e| JournalError::Rejected(e.to_string()))?;
        self.tx
            .prepare_cached(
                "UPDATE fhir_conflict SET resolved_at = ?2, resolution = ?3 WHERE id = ?1",
            )?
            .execute(params![id, now, to_json(choices)?])?;
        let cached = self.fhir_patient(&conflict.patient_id)?.ok_or_else(|| {
            JournalError::NotFound(format!("no cached Patient {}", conflict.patient_id))
        })?;
        let detail = serde_json::json!({ "conflict": id, "patient_id": conflict.patient_id, "choices": choices });
        self.audit(by, "fhir.conflict_resolved", &detail.to_string(), now)?;
        let sent = !values.is_empty()
            && self.fhir_change(&cached, &values, by, "fhir.resolution_write", now)?;
        let mut conflict = conflict;
        conflict.resolved_at = Some(now);
        conflict.resolution = Some(choices.clone());
        Ok((conflict, sent))
    }

    /// A small persistent value of the FHIR connector (e.g. its poll cursor).
    pub fn fhir_state(&mut self, key: &str) -> Result<Option<String>, JournalError> {
        Ok(self
            .tx
            .prepare_cached("SELECT value FROM fhir_state WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    pub fn set_fhir_state(&mut self, key: &str, value: &str) -> Result<(), JournalError> {
        self.tx
            .prepare_cached(
                "INSERT INTO fhir_state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
            )?
            .execute(params![key, value])?;
        Ok(())
    }

    /// State name of one outbox row, for tests and the CLI.
    pub fn row_state(&mut self, id: i64) -> Result<Option<&'static str>, JournalError> {
        Ok(self
            .tx
            .query_row("SELECT state FROM outbox WHERE id = ?1", [id], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .map(state_name))
    }
}

/// Columns read by [`entry_from_row`], in its order.
const ENTRY_COLUMNS: &str = "id, queue, ticket, patient_ref, appointment_ref, priority, priority_reason, state, room, arrived_at, called_at, in_room_at, closed_at, demographics";

fn entry_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    let state: String = r.get(7)?;
    Ok(Entry {
        id: r.get(0)?,
        queue: r.get(1)?,
        ticket: r.get(2)?,
        patient_ref: r.get(3)?,
        appointment_ref: r.get(4)?,
        priority: Priority::from_i64(r.get(5)?),
        priority_reason: r.get(6)?,
        state: EntryState::parse(&state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                7,
                rusqlite::types::Type::Text,
                format!("unknown queue state {state:?}").into(),
            )
        })?,
        room: r.get(8)?,
        arrived_at: r.get(9)?,
        called_at: r.get(10)?,
        in_room_at: r.get(11)?,
        closed_at: r.get(12)?,
        demographics: r
            .get::<_, Option<String>>(13)?
            .map(|t| from_json::<Demographics>(13, &t))
            .transpose()?,
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, JournalError> {
    serde_json::to_string(v).map_err(|e| JournalError::Corrupt(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(column: usize, text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, e.into())
    })
}

/// Columns read by [`cached_from_row`], in its order.
const PATIENT_COLUMNS: &str = "id, version_id, synced, local, identifier";

fn cached_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CachedPatient> {
    Ok(CachedPatient {
        id: r.get(0)?,
        version_id: r.get(1)?,
        synced: from_json(2, &r.get::<_, String>(2)?)?,
        local: r
            .get::<_, Option<String>>(3)?
            .map(|t| from_json(3, &t))
            .transpose()?,
        identifier: r.get(4)?,
    })
}

/// Columns read by [`conflict_from_row`], in its order.
const CONFLICT_COLUMNS: &str = "id, patient_id, local, remote, created_at, resolved_at, resolution";

fn conflict_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Conflict> {
    let local: Patient = from_json(2, &r.get::<_, String>(2)?)?;
    let remote: Patient = from_json(3, &r.get::<_, String>(3)?)?;
    Ok(Conflict {
        id: r.get(0)?,
        patient_id: r.get(1)?,
        fields: fhir::differing_fields(&local, &remote),
        local,
        remote,
        created_at: r.get(4)?,
        resolved_at: r.get(5)?,
        resolution: r
            .get::<_, Option<String>>(6)?
            .map(|t| from_json(6, &t))
            .transpose()?,
    })
}
