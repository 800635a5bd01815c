//! The journal's own SQL: the file (open, checks, migrations of the journal and of every
//! domain's tables), inbound items, the outbox, the audit log and durability.
//!
//! `Store` owns one SQLite connection. In the daemon exactly one `Store` writes (the journal
//! writer thread); the CLI opens its own for `dlq` and `journal stats`, relying on WAL and a busy
//! timeout to share the file. Domains keep their SQL in their own `store.rs` and run it through
//! [`Tx`](super::Tx); nothing else opens SQLite.

use super::chain::{self, AuditRow, Head};
use super::lease::{Leases, Ledger};
use super::{
    DeadLetter, DestinationStats, JournalError, NewItem, OutboxRow, Receipt, RetryPolicy, RowTexts,
    Stats, StoredItem,
};
use rusqlite::config::DbConfig;
use rusqlite::types::{FromSqlError, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};
use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `PRAGMA application_id` of a clinic-gateway journal ("CGJ1"), so a foreign SQLite file is
/// refused instead of being migrated into.
const APPLICATION_ID: i32 = 0x43474a31;

/// The journal's own migrations; its `user_version` is how many have been applied. Versions 2
/// to 7 created domain tables, which their domains now own: their steps live in the domains'
/// [`Schema`]s, which name the legacy version each step corresponds to, and are empty here.
/// Version 8 records each domain's own version in `schema_domain`. Version 9 chains the audit
/// log (`prev_hash`, `hash`); the rows it finds are sealed in id order by [`chain_existing`].
/// Version 10 indexes only the rows still to be sent, in flight or dead: a delivered row, the
/// bulk of the table, leaves every state index. In-flight and dead rows are few and keyed by id
/// alone: an index seek that compares an integer costs a tenth of one that compares the
/// destination's name first, and each row is claimed and marked once per delivery. Version 11
/// drops the in-flight index: rows in flight are held in the writer's memory, not marked in the
/// table, so the rows a journal of version 10 left so are put back in line (their attempt
/// still counted), and every delivered mark no longer asks whether to drop a row from it.
/// Version 12 cuts the delivered mark's work by a sixth. A delivered row's state is 1 (in
/// flight's old number, free since 11), not 2: SQLite stores 0 and 1 in no bytes and 2 in one,
/// so a row marked delivered keeps its size and is rewritten in place, where a record a byte
/// longer was cut out of its page and put back. And the pending rows are indexed by their
/// destination's number (`outbox_destination`), not its name: the mark finds each row's entry
/// to drop comparing an integer where it compared the name's bytes.
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
    "",
    "",
    "",
    "",
    "",
    "",
    r#"
CREATE TABLE schema_domain (
    domain  TEXT    PRIMARY KEY,
    version INTEGER NOT NULL
);
"#,
    r#"
ALTER TABLE audit ADD COLUMN prev_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN hash TEXT NOT NULL DEFAULT '';
"#,
    r#"
DROP INDEX outbox_by_state;
CREATE INDEX outbox_pending ON outbox(destination, id) WHERE state = 0;
CREATE INDEX outbox_in_flight ON outbox(id) WHERE state = 1;
CREATE INDEX outbox_dead ON outbox(id) WHERE state = 3;
"#,
    r#"
UPDATE outbox SET state = 0,
    next_attempt_at = CAST(unixepoch('subsec') * 1000 AS INTEGER),
    updated_at = CAST(unixepoch('subsec') * 1000 AS INTEGER)
  WHERE state = 1;
DROP INDEX outbox_in_flight;
"#,
    r#"
CREATE TABLE outbox_destination (
    no   INTEGER PRIMARY KEY,
    name TEXT    NOT NULL UNIQUE
);
INSERT INTO outbox_destination (name) SELECT DISTINCT destination FROM outbox ORDER BY destination;
ALTER TABLE outbox ADD COLUMN destination_no INTEGER NOT NULL DEFAULT 0;
DROP INDEX outbox_pending;
UPDATE outbox SET state = CASE state WHEN 2 THEN 1 ELSE state END,
    destination_no = (SELECT no FROM outbox_destination WHERE name = outbox.destination);
CREATE INDEX outbox_pending ON outbox(destination_no, id) WHERE state = 0;
"#,
];

/// Statements kept prepared: more than the distinct statements the domains run (about 200).
const STATEMENT_CACHE: usize = 512;

/// The version whose migration seals the audit rows written before the chain existed.
const AUDIT_CHAINED: usize = 9;

/// The first version at which domains keep their own migrations.
const DOMAINS_SINCE: i64 = 8;

/// A domain's tables: its migrations in order, applied once each inside the journal's file.
#[derive(Debug)]
pub struct Schema {
    /// The domain's name in `schema_domain`.
    pub domain: &'static str,
    /// Its migrations, in order.
    pub steps: &'static [&'static str],
    /// `(legacy journal version, steps)`: a journal at that version from before domains kept
    /// their own migrations already holds this many of the domain's steps.
    pub legacy: &'static [(i64, usize)],
}

impl Schema {
    /// How many of the steps a journal of legacy version `version` (below 8) already holds.
    fn legacy_steps(&self, version: i64) -> usize {
        self.legacy
            .iter()
            .filter(|(v, _)| *v <= version)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0)
    }
}

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// What the operator is told whenever an existing journal cannot be used.
const LEFT_UNTOUCHED: &str = "the file is left untouched: move it aside and restore it from backup, or start with an empty journal";

/// Name of a stored outbox state: 0 pending, 1 delivered, 3 dead (2 was delivered until
/// version 12).
fn state_name(v: i64) -> &'static str {
    match v {
        0 => "pending",
        1 => "delivered",
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
    path: PathBuf,
    /// Kept for [`reader`](Self::reader)'s connection to an encrypted journal.
    key: Option<String>,
    /// The rows in flight, held by this connection's claims.
    leases: Leases,
    numbers: Numbers,
}

/// The destinations' numbers (`outbox_destination`) committed, by name: an append writes its
/// rows' destination number from here rather than looking it up. Only committed numbers are
/// kept: a number made in a batch, or in a request's savepoint, that rolls back is gone with
/// it. A batch that makes a number, or finds one not kept here, has the table read again
/// before the next batch begins, when all it holds is committed.
#[derive(Debug)]
pub struct Numbers {
    known: Vec<(Box<str>, i64)>,
    stale: Cell<bool>,
}

impl Default for Numbers {
    fn default() -> Numbers {
        Numbers {
            known: Vec::new(),
            stale: Cell::new(true),
        }
    }
}

impl Numbers {
    fn refresh(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        if self.stale.replace(false) {
            self.known = conn
                .prepare_cached("SELECT name, no FROM outbox_destination")?
                .query_map([], |r| Ok((r.get::<_, String>(0)?.into(), r.get(1)?)))?
                .collect::<Result<_, _>>()?;
        }
        Ok(())
    }

    /// `destination`'s number, made if it has none.
    fn of(&self, conn: &Connection, destination: &str) -> rusqlite::Result<i64> {
        if let Some((_, no)) = self.known.iter().find(|(name, _)| &**name == destination) {
            return Ok(*no);
        }
        self.stale.set(true);
        let found = conn
            .prepare_cached("SELECT no FROM outbox_destination WHERE name = ?1")?
            .query_row([destination], |r| r.get(0))
            .optional()?;
        match found {
            Some(no) => Ok(no),
            None => {
                conn.prepare_cached("INSERT INTO outbox_destination (name) VALUES (?1)")?
                    .execute([destination])?;
                Ok(conn.last_insert_rowid())
            }
        }
    }
}

/// A connection to the journal at `path` as every one of the gateway's is set up: the key of an
/// encrypted journal applied, a wait of up to 5 s for a lock, and plans that never read a bound
/// value. Without the last SQLite marks a statement to be planned again when a parameter it
/// read is rebound (a `LIMIT ?n`, or `column = ?n` that a scan it weighed would filter on), and
/// rusqlite's statement cache clears the bindings of every statement it takes back, which
/// expires such a statement: about a third of the queries (the outbox claim, an entry's latest
/// inquiry, a session's lookup, the waiting list) were parsed and planned again on every use.
/// Their plans are the same either way: no table is analysed, so no plan depends on a value.
fn connect(path: &Path, flags: OpenFlags, key: Option<&str>) -> Result<Connection, JournalError> {
    let conn = Connection::open_with_flags(path, flags).map_err(|e| io_err(path, e))?;
    if let Some(key) = key {
        apply_key(&conn, key).map_err(|e| io_err(path, e))?;
    }
    conn.busy_timeout(Duration::from_secs(5))
        .and_then(|()| conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true))
        .map_err(|e| io_err(path, e))?;
    Ok(conn)
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> JournalError {
    JournalError::Open {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

impl Store {
    /// A new journal (`j.db` in `dir`) holding `domains`, for unit tests.
    #[cfg(test)]
    pub fn scratch(dir: &Path, domains: &[&Schema]) -> Store {
        let options = OpenOptions {
            create: true,
            verify: true,
            key: None,
        };
        Store::open(&dir.join("j.db"), &options, domains).expect("a new journal")
    }

    /// Opens (or, with `create`, creates) the journal, checks that it is intact and ours, and
    /// applies pending migrations, the journal's and then each domain's in `domains`. Never
    /// recreates a file it cannot read.
    pub fn open(
        path: &Path,
        opts: &OpenOptions,
        domains: &[&Schema],
    ) -> Result<Store, JournalError> {
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
        let conn = connect(path, flags, opts.key.as_deref())?;
        let corrupt = |e: rusqlite::Error| {
            io_err(
                path,
                format!("not a readable clinic-gateway journal ({e}); {LEFT_UNTOUCHED}"),
            )
        };
        // Every domain runs its SQL through this one connection: rusqlite's default of 16 cached
        // statements made the writer parse most of them again on every use.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
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
        // A 4 MiB page cache holds the hot ends of the indexes that appends touch; a larger one
        // only fills with pages the OS caches anyway and holds the daemon's memory above its
        // budget on a small gateway.
        // Temporary storage in memory: each request runs in a savepoint, and a savepoint's
        // journal of the pages it changed went to a temporary file (one write call per page)
        // once a batch's requests had changed 64 KiB.
        conn.execute_batch(
            "PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF; PRAGMA cache_size=-4096; PRAGMA temp_store=MEMORY;",
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
            path: path.to_path_buf(),
            key: opts.key.clone(),
            leases: Leases::default(),
            numbers: Numbers::default(),
        };
        store
            .migrate(version)
            .map_err(|e| io_err(path, format!("migration failed: {e}")))?;
        for domain in domains {
            store.migrate_domain(path, domain, version)?;
        }
        Ok(store)
    }

    /// Brings one domain's tables up to date. A journal that was at a legacy version (below 8)
    /// when opened already holds the steps that version had.
    fn migrate_domain(
        &mut self,
        path: &Path,
        schema: &Schema,
        opened_at: i64,
    ) -> Result<(), JournalError> {
        let failed = |e: rusqlite::Error| {
            io_err(
                path,
                format!("migration of the {} tables failed: {e}", schema.domain),
            )
        };
        let recorded: Option<i64> = self
            .conn
            .query_row(
                "SELECT version FROM schema_domain WHERE domain = ?1",
                [schema.domain],
                |r| r.get(0),
            )
            .optional()
            .map_err(failed)?;
        let have = match recorded {
            Some(v) => v,
            None if opened_at > 0 && opened_at < DOMAINS_SINCE => {
                schema.legacy_steps(opened_at) as i64
            }
            None => 0,
        };
        if have > schema.steps.len() as i64 {
            return Err(JournalError::TooNew {
                path: path.to_path_buf(),
                found: have,
                supported: schema.steps.len() as i64,
            });
        }
        let tx = self.conn.transaction().map_err(failed)?;
        for sql in &schema.steps[have as usize..] {
            tx.execute_batch(sql).map_err(failed)?;
        }
        tx.execute(
            "INSERT INTO schema_domain (domain, version) VALUES (?1, ?2)
             ON CONFLICT (domain) DO UPDATE SET version = ?2",
            params![schema.domain, schema.steps.len() as i64],
        )
        .map_err(failed)?;
        tx.commit().map_err(failed)
    }

    fn migrate(&mut self, from: i64) -> rusqlite::Result<()> {
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            if i + 1 == AUDIT_CHAINED {
                chain_existing(&tx)?;
            }
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// A read-only connection to the same journal, for reads that must not hold up the writer:
    /// the backlog's counts walk every pending row (about 90 ms with a million of them).
    pub fn reader(&self) -> Result<Store, JournalError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        Ok(Store {
            conn: connect(&self.path, flags, self.key.as_deref())?,
            path: self.path.clone(),
            key: self.key.clone(),
            leases: Leases::default(),
            numbers: Numbers::default(),
        })
    }

    /// Bytes the journal's live pages occupy (free pages left by pruning are reused first).
    pub fn used_bytes(&self) -> Result<u64, JournalError> {
        let (pages, free, size) = page_counts(&self.conn)?;
        Ok(((pages - free).max(0) * size) as u64)
    }

    /// Starts a transaction for one group-commit batch.
    pub fn begin(&mut self) -> Result<Batch<'_>, JournalError> {
        let Store {
            conn,
            leases,
            numbers,
            ..
        } = self;
        numbers.refresh(conn)?;
        Ok(Batch {
            tx: conn.transaction()?,
            ledger: Ledger::new(leases),
            numbers,
        })
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

/// Seals every audit row in id order, each on the one before, as if they had been written
/// chained: the chain vouches for these rows only from the migration on.
fn chain_existing(conn: &Connection) -> rusqlite::Result<()> {
    let rows: Vec<(i64, i64, String, String, String)> = conn
        .prepare("SELECT id, at, actor, action, detail FROM audit ORDER BY id")?
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut update = conn.prepare("UPDATE audit SET prev_hash = ?2, hash = ?3 WHERE id = ?1")?;
    let mut prev = chain::GENESIS.to_string();
    for (id, at, actor, action, detail) in rows {
        let hash = chain::seal(&prev, id, at, &actor, &action, &detail);
        update.execute(params![id, prev, hash])?;
        prev = hash;
    }
    Ok(())
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

/// The reads of rows by state. Each names its state with `=`, so that it reads that state's
/// partial index and never walks the delivered rows, the bulk of the table.
/// A destination's pending rows from just above a claim's mark, with what the relay and the
/// connectors send of their items.
pub(super) const PENDING_AFTER: &str =
    "SELECT o.id, o.key, o.attempts, i.event_id, i.kind, i.schema, i.payload, i.occurred_at
   FROM outbox o JOIN inbound i ON i.id = o.inbound_id
  WHERE o.state = 0 AND o.id > ?2
    AND o.destination_no = (SELECT no FROM outbox_destination WHERE name = ?1)
  ORDER BY o.id";
/// The keys of a destination whose earliest pending row waits for its retry. Not `DISTINCT`:
/// the caller's set drops repeats, and `DISTINCT` built a temporary b-tree on every claim.
pub(super) const WAITING_KEYS: &str = "SELECT key FROM outbox
  WHERE state = 0 AND attempts > 0 AND destination = ?1 AND next_attempt_at > ?2";
pub(super) const DEAD_LETTERS: &str =
    "SELECT o.id, o.destination, o.key, o.attempts, o.last_error, o.updated_at, i.kind, i.event_id
   FROM outbox o JOIN inbound i ON i.id = o.inbound_id
  WHERE o.state = 3 AND (?1 IS NULL OR o.destination = ?1)
  ORDER BY o.id DESC LIMIT ?2";
/// The oldest pending row is the first queued, whose item's arrival takes two index seeks:
/// `min(updated_at)` over every pending row read each of them from the table (with a million
/// rows waiting, 275 ms where counting them takes 90).
/// The pending rows are counted by destination number, in the index's order, and named after.
pub(super) const STATE_COUNTS: &str = "SELECT d.name, 0, c.n,
        (SELECT i.received_at FROM outbox p JOIN inbound i ON i.id = p.inbound_id
          WHERE p.state = 0 AND p.destination_no = c.no ORDER BY p.id LIMIT 1)
   FROM (SELECT destination_no AS no, count(*) AS n FROM outbox WHERE state = 0
          GROUP BY destination_no) c
   JOIN outbox_destination d ON d.no = c.no
 UNION ALL
 SELECT destination, 3, count(*), min(updated_at) FROM outbox WHERE state = 3 GROUP BY destination";

/// `ids` as the runs of consecutive ids they form, `(first, last)`, ascending. A connector
/// drains a destination in id order, so the rows it marks are mostly one run: one statement
/// marks them all, where one per row cost about a fifth of the row's work again.
fn runs(mut ids: Vec<i64>) -> impl Iterator<Item = (i64, i64)> {
    ids.sort_unstable();
    ids.dedup();
    let mut ids = ids.into_iter().peekable();
    std::iter::from_fn(move || {
        let first = ids.next()?;
        let mut last = first;
        while ids.next_if_eq(&(last + 1)).is_some() {
            last += 1;
        }
        Some((first, last))
    })
}

/// One request's savepoint in a batch: released by [`commit`](Self::commit), rolled back when
/// dropped. Its statements stay prepared, where rusqlite's own savepoint parsed them again for
/// every request (a tenth of a check-in's work in the writer).
pub struct Savepoint<'c> {
    conn: &'c Connection,
    numbers: &'c Numbers,
    open: bool,
}

impl<'c> Savepoint<'c> {
    /// The destinations' numbers, for a domain's appends inside the savepoint.
    pub fn numbers(&self) -> &'c Numbers {
        self.numbers
    }

    pub fn commit(mut self) -> Result<(), JournalError> {
        self.open = false;
        self.conn.prepare_cached("RELEASE work")?.execute([])?;
        Ok(())
    }
}

impl std::ops::Deref for Savepoint<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Savepoint<'_> {
    fn drop(&mut self) {
        if self.open {
            // Only failing storage fails these, and the batch's commit meets it as well.
            for sql in ["ROLLBACK TO work", "RELEASE work"] {
                if let Err(e) = self
                    .conn
                    .prepare_cached(sql)
                    .and_then(|mut s| s.execute([]))
                {
                    tracing::error!(error = %e, "cannot undo a refused request");
                }
            }
        }
    }
}

/// One open transaction: the writer applies a whole batch of requests in one of these. The
/// rows it holds in flight or lets go are as they were if it rolls back.
pub struct Batch<'c> {
    tx: Transaction<'c>,
    ledger: Ledger<'c>,
    numbers: &'c Numbers,
}

impl Batch<'_> {
    pub fn commit(self) -> Result<(), JournalError> {
        let Batch { tx, ledger, .. } = self;
        tx.commit()?;
        ledger.keep();
        Ok(())
    }

    /// Commits an inbound item (see [`append`]).
    pub fn append(&mut self, item: &NewItem, now: i64) -> Result<Receipt, JournalError> {
        append(&self.tx, self.numbers, item, now)
    }

    /// A domain's view of this transaction, for work run outside the writer (the CLI, tests).
    pub fn work<'b>(&'b self, extensions: &'b super::Extensions) -> super::Tx<'b> {
        super::Tx::new(&self.tx, self.numbers, 0, extensions)
    }

    /// A domain's view of this transaction at `now` on the reader's connection, for read-only
    /// work.
    pub(super) fn reading<'b>(
        &'b self,
        now: i64,
        extensions: &'b super::Extensions,
    ) -> super::Tx<'b> {
        super::Tx::new(&self.tx, self.numbers, now, extensions)
    }

    /// A savepoint for one domain's work: rolled back alone if the work fails.
    pub fn savepoint(&mut self) -> Result<Savepoint<'_>, JournalError> {
        self.tx.prepare_cached("SAVEPOINT work")?.execute([])?;
        Ok(Savepoint {
            conn: &self.tx,
            numbers: self.numbers,
            open: true,
        })
    }

    /// The rows [`claim`](Self::claim) would take now, left pending.
    pub fn peek(
        &mut self,
        destination: &str,
        limit: usize,
        now: i64,
    ) -> Result<Vec<OutboxRow>, JournalError> {
        let (rows, _) = self.deliverable(destination, limit, now)?;
        Ok(rows)
    }

    /// Hands out up to `limit` rows of `destination`, oldest first, held in flight until they
    /// are settled, skipping every key whose earliest pending row waits for a retry: a key's
    /// rows go out in order, other keys flow meanwhile. Each row's `attempts` counts the
    /// attempt it is handed out for.
    pub fn claim(
        &mut self,
        destination: &str,
        limit: usize,
        now: i64,
    ) -> Result<Vec<OutboxRow>, JournalError> {
        let (mut rows, after) = self.deliverable(destination, limit, now)?;
        for row in &mut rows {
            row.attempts += 1;
        }
        self.ledger
            .take(destination, rows.iter().map(|r| r.id).collect(), after);
        Ok(rows)
    }

    /// Up to `limit` pending rows of `destination` that a claim may hand out now, and the mark
    /// below which every such row is then held: the row before the first one skipped for its
    /// key's retry, else the last row read.
    fn deliverable(
        &mut self,
        destination: &str,
        limit: usize,
        now: i64,
    ) -> Result<(Vec<OutboxRow>, i64), JournalError> {
        // Only a claim reads a mark, so only a claim asks whether another connection committed.
        self.ledger.saw(
            self.tx
                .prepare_cached("PRAGMA data_version")?
                .query_row([], |r| r.get(0))?,
        );
        let waiting: HashSet<String> = self
            .tx
            .prepare_cached(WAITING_KEYS)?
            .query_map(params![destination, now], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let from = self.ledger.after(destination);
        let mut read = self.tx.prepare_cached(PENDING_AFTER)?;
        let mut pending = read.query(params![destination, from])?;
        let (mut rows, mut last, mut skipped) = (Vec::with_capacity(limit.min(1024)), from, None);
        while rows.len() < limit {
            let Some(r) = pending.next()? else { break };
            let id: i64 = r.get(0)?;
            last = id;
            if self.ledger.holds(id) {
                continue;
            }
            let key = text(r, 1)?;
            if !waiting.is_empty() && waiting.contains(key) {
                skipped.get_or_insert(id);
                continue;
            }
            let texts = RowTexts {
                key,
                event_id: text(r, 3)?,
                kind: text(r, 4)?,
                schema: text(r, 5)?,
            };
            let payload = blob(r, 6)?.to_vec();
            rows.push(OutboxRow::new(id, r.get(2)?, texts, payload, r.get(7)?));
        }
        Ok((rows, skipped.map_or(last, |id| id - 1)))
    }

    /// Marks rows in flight delivered. Rows not in flight (e.g. dead-lettered and replayed
    /// meanwhile) are left.
    pub fn delivered(&mut self, ids: &[i64], now: i64) -> Result<usize, JournalError> {
        // `OR FAIL`: nothing set here can break a constraint, and `ABORT`'s statement journal
        // copied each page the mark touched before changing it. A storage error still rolls
        // back the whole batch.
        let mut update = self.tx.prepare_cached(
            "UPDATE OR FAIL outbox SET state = 1, last_error = NULL, updated_at = ?3 WHERE id BETWEEN ?1 AND ?2 AND state = 0",
        )?;
        let held: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| self.ledger.holds(*id))
            .collect();
        let mut n = 0;
        for (first, last) in runs(held.clone()) {
            n += update.execute(params![first, last, now])?;
        }
        self.ledger.release(&held);
        Ok(n)
    }

    /// Records a failed attempt for rows in flight: back in line after a backoff, or dead once
    /// the destination's attempts are used up. Returns (retrying, dead).
    pub fn failed(
        &mut self,
        ids: &[i64],
        error: &str,
        policy: &RetryPolicy,
        now: i64,
    ) -> Result<(usize, usize), JournalError> {
        let mut get = self
            .tx
            .prepare_cached("SELECT attempts FROM outbox WHERE id = ?1 AND state = 0")?;
        let mut retry = self.tx.prepare_cached(
            "UPDATE outbox SET attempts = ?2, next_attempt_at = ?3, last_error = ?4, updated_at = ?5 WHERE id = ?1",
        )?;
        let mut dead = self.tx.prepare_cached(
            "UPDATE outbox SET state = 3, attempts = ?2, last_error = ?3, updated_at = ?4 WHERE id = ?1",
        )?;
        let (mut n_retry, mut n_dead) = (0, 0);
        for &id in ids {
            if !self.ledger.holds(id) {
                continue;
            }
            let Some(before) = get.query_row([id], |r| r.get::<_, u32>(0)).optional()? else {
                continue;
            };
            // The attempt that failed, as its claim counted it.
            let attempts = before + 1;
            if attempts >= policy.max_attempts {
                dead.execute(params![id, attempts, error, now])?;
                self.ledger.release(&[id]);
                n_dead += 1;
            } else {
                let delay = policy.backoff(attempts).as_millis() as i64;
                retry.execute(params![id, attempts, now + delay, error, now])?;
                self.ledger.give_back(id);
                n_retry += 1;
            }
        }
        Ok((n_retry, n_dead))
    }

    /// A lost connection's rows in flight of `destination` back in line: `blamed` as a
    /// [`failed`](Self::failed) attempt, the others due at once, their attempt not counted.
    /// Returns (retrying, dead), the rows given back among those retrying.
    pub fn interrupted(
        &mut self,
        destination: &str,
        blamed: Option<i64>,
        error: &str,
        policy: &RetryPolicy,
        now: i64,
    ) -> Result<(usize, usize), JournalError> {
        let (retrying, dead) = match blamed {
            Some(id) => self.failed(&[id], error, policy, now)?,
            None => (0, 0),
        };
        // All of them let go at once, and the next claim reads again from the oldest.
        let held = self.ledger.held(destination);
        self.ledger.release(&held);
        if let Some(first) = held.first() {
            self.ledger.lower(destination, first - 1);
        }
        Ok((retrying + held.len(), dead))
    }

    /// Every row of a destination in flight, oldest first (what a lost connection leaves behind).
    pub fn in_flight(&mut self, destination: &str) -> Result<Vec<i64>, JournalError> {
        Ok(self.ledger.held(destination))
    }

    /// Dead letters, newest first, optionally of one destination.
    pub fn dead_letters(
        &mut self,
        destination: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, JournalError> {
        dead_letters(&self.tx, destination, limit)
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
        // Dead rows are never held: what was replayed lies below the mark of a claim that
        // stepped over it.
        self.ledger.lower(destination, id.map_or(0, |id| id - 1));
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
        audit(&self.tx, actor, action, detail, now)
    }
    /// Up to `limit` audit records with an id above `after`, oldest first, with their hashes.
    pub fn audit_rows(&mut self, after: i64, limit: usize) -> Result<Vec<AuditRow>, JournalError> {
        audit_rows(&self.tx, &AuditFilter::after(after), limit, 0)
    }

    /// Row counts per destination and state, and the journal's totals, reported against the
    /// size limit `max_bytes`. The table counts rows in flight as pending: `in_flight` says how
    /// many of each destination's the writer holds.
    pub fn stats(
        &mut self,
        max_bytes: u64,
        in_flight: &BTreeMap<String, u64>,
    ) -> Result<Stats, JournalError> {
        #[cfg(feature = "fault-hooks")]
        let _held = super::STATS_HELD.lock();
        let mut destinations: BTreeMap<String, DestinationStats> = BTreeMap::new();
        let mut q = self.tx.prepare_cached(STATE_COUNTS)?;
        let mut rows = q.query([])?;
        while let Some(r) = rows.next()? {
            let d = destinations.entry(r.get(0)?).or_default();
            let n = r.get::<_, i64>(2)? as u64;
            match r.get::<_, i64>(1)? {
                0 => {
                    d.pending = n;
                    d.oldest_pending_at = r.get(3)?;
                }
                _ => d.dead = n,
            }
        }
        drop(rows);
        drop(q);
        for (destination, &held) in in_flight {
            let d = destinations.entry(destination.clone()).or_default();
            d.pending = d.pending.saturating_sub(held);
            d.in_flight += held;
        }
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
            max_bytes,
        })
    }

    /// Deletes delivered rows committed before `cutoff`, and inbound items left with no outbox
    /// row, at most `limit` of each. Pending, in-flight and dead rows are never pruned.
    pub fn prune(&mut self, cutoff: i64, limit: usize) -> Result<usize, JournalError> {
        let outbox = self.tx.execute(
            "DELETE FROM outbox WHERE id IN (
                 SELECT id FROM outbox WHERE state = 1 AND updated_at < ?1 ORDER BY id LIMIT ?2)",
            params![cutoff, limit as i64],
        )?;
        if outbox > 0 {
            // The newest rows gone, their ids may be given again, to rows below a mark.
            self.ledger.lower_all(0);
        }
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

    /// Inbound items, oldest first, of one kind and/or one source id (the CLI's `journal items`,
    /// for support: what the gateway committed).
    pub fn items(
        &mut self,
        kind: Option<&str>,
        source_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredItem>, JournalError> {
        let filter = ItemFilter {
            kind,
            source_id,
            ..ItemFilter::ALL
        };
        items(&self.tx, &filter, limit)
    }

    /// State name of one outbox row, for tests and the CLI.
    pub fn row_state(&mut self, id: i64) -> Result<Option<&'static str>, JournalError> {
        Ok(self
            .tx
            .query_row("SELECT state FROM outbox WHERE id = ?1", [id], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .map(|state| match state {
                0 if self.ledger.holds(id) => "in_flight",
                state => state_name(state),
            }))
    }

    /// Rows in flight per destination, as this batch leaves them.
    pub fn held(&self) -> BTreeMap<String, u64> {
        self.ledger.counts()
    }
}

/// Which audit records a read covers: those with an id above `after` (and equal to `id`, if
/// given) recorded within `[from, until)` ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditFilter {
    pub after: i64,
    pub id: Option<i64>,
    pub from: i64,
    pub until: i64,
}

impl AuditFilter {
    /// Every record.
    pub const ALL: AuditFilter = AuditFilter {
        after: i64::MIN,
        id: None,
        from: i64::MIN,
        until: i64::MAX,
    };

    /// Every record after the one with id `after`: the chain's walk, a page at a time.
    pub fn after(after: i64) -> AuditFilter {
        AuditFilter {
            after,
            ..AuditFilter::ALL
        }
    }
}

/// The audit chain's last record and length, as stored (not verified).
pub(super) fn audit_head(conn: &Connection) -> Result<Head, JournalError> {
    let count = conn.query_row("SELECT count(*) FROM audit", [], |r| r.get::<_, i64>(0))? as u64;
    let last = conn
        .query_row(
            "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(match last {
        Some((last_id, hash)) => Head {
            last_id,
            hash,
            count,
        },
        None => Head::empty(),
    })
}

/// Dead letters, newest first, optionally of one destination.
pub(super) fn dead_letters(
    conn: &Connection,
    destination: Option<&str>,
    limit: usize,
) -> Result<Vec<DeadLetter>, JournalError> {
    let rows = conn
        .prepare_cached(DEAD_LETTERS)?
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

/// Up to `limit` audit records of `filter` from the `offset`th, oldest first, with their
/// hashes. Paged by id in SQL: the audit only grows.
pub(super) fn audit_rows(
    conn: &Connection,
    filter: &AuditFilter,
    limit: usize,
    offset: usize,
) -> Result<Vec<AuditRow>, JournalError> {
    let rows = conn
        .prepare_cached(
            "SELECT id, at, actor, action, detail, prev_hash, hash FROM audit
              WHERE id > ?1 AND (?2 IS NULL OR id = ?2) AND at >= ?3 AND at < ?4
              ORDER BY id LIMIT ?5 OFFSET ?6",
        )?
        .query_map(
            params![
                filter.after,
                filter.id,
                filter.from,
                filter.until,
                sql_count(limit),
                sql_count(offset)
            ],
            |r| {
                Ok(AuditRow {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    detail: r.get(4)?,
                    prev_hash: r.get(5)?,
                    hash: r.get(6)?,
                })
            },
        )?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// How many audit records `filter` covers.
pub(super) fn audit_count(conn: &Connection, filter: &AuditFilter) -> Result<usize, JournalError> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM audit
              WHERE id > ?1 AND (?2 IS NULL OR id = ?2) AND at >= ?3 AND at < ?4",
        )?
        .query_row(
            params![filter.after, filter.id, filter.from, filter.until],
            |r| r.get(0),
        )?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Which inbound items a read covers; [`ItemFilter::ALL`] admits every one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemFilter<'a> {
    pub kind: Option<&'a str>,
    pub source_id: Option<&'a str>,
    pub id: Option<i64>,
    /// Committed within this range (ms).
    pub received_at: Range<i64>,
}

impl ItemFilter<'_> {
    pub const ALL: ItemFilter<'static> = ItemFilter {
        kind: None,
        source_id: None,
        id: None,
        received_at: i64::MIN..i64::MAX,
    };
}

/// Up to `limit` inbound items `filter` admits, oldest first.
pub(super) fn items(
    conn: &Connection,
    filter: &ItemFilter<'_>,
    limit: usize,
) -> Result<Vec<StoredItem>, JournalError> {
    let rows = conn
        .prepare_cached(
            "SELECT id, event_id, source, source_id, kind, key, payload, received_at FROM inbound
              WHERE (?1 IS NULL OR kind = ?1) AND (?2 IS NULL OR source_id = ?2)
                AND (?3 IS NULL OR id = ?3) AND received_at >= ?4 AND received_at < ?5
              ORDER BY id LIMIT ?6",
        )?
        .query_map(
            params![
                filter.kind,
                filter.source_id,
                filter.id,
                filter.received_at.start,
                filter.received_at.end,
                sql_count(limit)
            ],
            |r| {
                Ok(StoredItem {
                    id: r.get(0)?,
                    event_id: r.get(1)?,
                    source: r.get(2)?,
                    source_id: r.get(3)?,
                    kind: r.get(4)?,
                    key: r.get(5)?,
                    payload: r.get(6)?,
                    received_at: r.get(7)?,
                })
            },
        )?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// A `LIMIT` or `OFFSET` value; `usize::MAX` (no limit) does not fit SQLite's integer.
fn sql_count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Commits an inbound item and one pending outbox row per destination, or, when the same
/// `(source, source_id)` was committed before, returns that first receipt unchanged.
pub(super) fn append(
    conn: &Connection,
    numbers: &Numbers,
    item: &NewItem,
    now: i64,
) -> Result<Receipt, JournalError> {
    let event_id = uuid::Uuid::now_v7();
    // Insert first and look up only on conflict: a resend is rare, a lookup per item is not.
    let inserted = conn
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
        return first_receipt(conn, item);
    }
    let inbound_id = conn.last_insert_rowid();
    let mut insert = conn.prepare_cached(
        "INSERT INTO outbox (inbound_id, destination, destination_no, key, state, next_attempt_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5)",
    )?;
    for destination in &item.destinations {
        let no = numbers.of(conn, destination)?;
        insert.execute(params![inbound_id, destination, no, item.key, now])?;
    }
    Ok(Receipt {
        inbound_id,
        event_id,
        duplicate: false,
        reply: item.reply.clone(),
    })
}

/// Column `i` of `row` as text, borrowed from the statement: a claim copies it once, into the
/// row's one allocation for its texts.
fn text<'r>(row: &'r rusqlite::Row<'_>, i: usize) -> rusqlite::Result<&'r str> {
    let value = row.get_ref(i)?;
    value.as_str().map_err(|e| column_error(row, i, value, e))
}

/// Column `i` of `row` as a blob, borrowed from the statement.
fn blob<'r>(row: &'r rusqlite::Row<'_>, i: usize) -> rusqlite::Result<&'r [u8]> {
    let value = row.get_ref(i)?;
    value.as_blob().map_err(|e| column_error(row, i, value, e))
}

/// What rusqlite's own `Row::get` says of a column it cannot convert (its `From` for these
/// errors knows neither the column nor its type).
fn column_error(
    row: &rusqlite::Row<'_>,
    i: usize,
    value: ValueRef<'_>,
    e: FromSqlError,
) -> rusqlite::Error {
    match e {
        FromSqlError::InvalidType => rusqlite::Error::InvalidColumnType(
            i,
            row.as_ref().column_name(i).unwrap_or_default().to_string(),
            value.data_type(),
        ),
        FromSqlError::Utf8Error(e) => rusqlite::Error::Utf8Error(i, e),
        e => rusqlite::Error::FromSqlConversionFailure(i, value.data_type(), Box::new(e)),
    }
}

/// The receipt of the item committed first under the same `(source, source_id)`.
fn first_receipt(conn: &Connection, item: &NewItem) -> Result<Receipt, JournalError> {
    let (id, event_id, reply) = conn
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

/// Appends an audit record sealed on the one before it.
///
/// The previous hash is read back inside the same transaction rather than kept in memory: a
/// batch, or one work's savepoint, that rolls back takes its records with it, and the next
/// record must chain on what was committed. Inserting first takes the write lock, so no other
/// writer (the CLI) can add a record between the read and the seal.
pub(super) fn audit(
    conn: &Connection,
    actor: &str,
    action: &str,
    detail: &str,
    now: i64,
) -> Result<(), JournalError> {
    conn.prepare_cached(
        "INSERT INTO audit (at, actor, action, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, '', '')",
    )?
    .execute(params![now, actor, action, detail])?;
    let id = conn.last_insert_rowid();
    let prev: String = conn
        .prepare_cached("SELECT hash FROM audit WHERE id < ?1 ORDER BY id DESC LIMIT 1")?
        .query_row([id], |r| r.get(0))
        .optional()?
        .unwrap_or_else(|| chain::GENESIS.to_string());
    let hash = chain::seal(&prev, id, now, actor, action, detail);
    conn.prepare_cached("UPDATE audit SET prev_hash = ?2, hash = ?3 WHERE id = ?1")?
        .execute(params![id, prev, hash])?;
    Ok(())
}

/// A value as the JSON text of a column.
pub fn to_json<T: serde::Serialize>(v: &T) -> Result<String, JournalError> {
    serde_json::to_string(v).map_err(|e| JournalError::Corrupt(e.to_string()))
}

/// A JSON column read back; a bad one is a conversion error naming the column.
pub fn from_json<T: serde::de::DeserializeOwned>(column: usize, text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, e.into())
    })
}
