//! The durable journal: everything that enters or leaves the gateway is committed here first.
//!
//! One writer thread owns the SQLite connection and applies requests in group-commit batches:
//! whatever is queued when it wakes (up to `journal.max_batch`) goes into one transaction, and
//! each requester is answered only after that transaction commits. The [`JournalWriter`] actor
//! is the typed front door; it forwards each request to the thread and hands back the receipt.
//!
//! **Invariant:** nothing is acknowledged to a sender before the commit that holds it returns.
//! **Invariant:** pending, in-flight and dead rows are never deleted; only delivered rows are
//! pruned.
//! **Invariant:** every audit record is sealed on the hash of the one before it in the
//! transaction that writes it (see [`chain`]); a committed audit record is never changed or
//! deleted.

pub mod chain;
pub mod config;
mod lease;
pub mod store;

use crate::metrics::METRICS;
use actix::prelude::*;
pub use lease::RowMap;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use std::any::{Any, TypeId};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
pub use store::{AuditFilter, ItemFilter, OpenOptions, Schema, Store, from_json, to_json};
use tokio::sync::{Notify, mpsc, oneshot};

/// Why the journal could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error(
        "journal {path} has schema version {found}, newer than this build supports ({supported}); install a clinic-gateway at least as new as the one that wrote it"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// The configured size limit is reached; the item was not accepted.
    #[error(
        "journal full: {used} bytes used of {limit} allowed; the item was not accepted, retry later"
    )]
    Full { used: u64, limit: u64 },
    /// The disk under the journal has no room; the item was not accepted.
    #[error("journal disk full: the item was not accepted, retry later")]
    DiskFull,
    #[error("journal storage error: {0}")]
    Sqlite(String),
    #[error("journal data is inconsistent: {0}")]
    Corrupt(String),
    /// The request is not allowed in the current state (e.g. completing a cancelled entry).
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    NotFound(String),
    #[error("journal writer has stopped")]
    Closed,
}

impl JournalError {
    /// True when the batch holding the failed request must be rolled back as a whole (the
    /// storage failed), false when only this request is refused.
    fn aborts_batch(&self) -> bool {
        matches!(self, Self::Sqlite(_) | Self::DiskFull | Self::Corrupt(_))
    }

    /// True when the sender should try again later (the item was not accepted, nothing is
    /// wrong with it).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Full { .. } | Self::DiskFull | Self::Closed | Self::Sqlite(_)
        )
    }
}

impl From<rusqlite::Error> for JournalError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => JournalError::DiskFull,
            _ => JournalError::Sqlite(e.to_string()),
        }
    }
}

/// An item entering the gateway, with the destinations it must reach.
#[derive(Debug, Clone, PartialEq)]
pub struct NewItem {
    /// Who sent it (e.g. `hl7:LAB`, `api`, `gateway`).
    pub source: String,
    /// The sender's id for it (e.g. MSH-10); a resend of the same id is answered, not re-processed.
    pub source_id: Option<String>,
    /// Event kind, used in topics (e.g. `gateway.started`).
    pub kind: String,
    /// Ordering key: items with the same key reach each destination in order.
    pub key: String,
    /// Payload schema name and version (e.g. `clinic-gateway/actor-state@1`).
    pub schema: String,
    /// The payload as JSON bytes.
    pub payload: Vec<u8>,
    /// The answer given to the sender, stored so a resend gets the same answer.
    pub reply: Option<Vec<u8>>,
    /// When it happened, in ms since the epoch; default: when committed.
    pub occurred_at: Option<i64>,
    pub destinations: Vec<String>,
}

impl NewItem {
    /// An event the gateway raises itself (no sender's id, nothing to answer): `payload` under
    /// the schema `clinic-gateway/{kind}@1`, occurring when committed unless set.
    pub fn event(
        source: impl Into<String>,
        kind: &str,
        key: impl Into<String>,
        payload: &serde_json::Value,
        destinations: &[&str],
    ) -> NewItem {
        NewItem {
            source: source.into(),
            source_id: None,
            kind: kind.into(),
            key: key.into(),
            schema: format!("clinic-gateway/{kind}@1"),
            payload: payload.to_string().into_bytes(),
            reply: None,
            occurred_at: None,
            destinations: destinations.iter().map(|d| d.to_string()).collect(),
        }
    }
}

/// Proof that an item is committed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Receipt {
    pub inbound_id: i64,
    pub event_id: uuid::Uuid,
    /// The same `(source, source_id)` was committed before; this is that first receipt.
    pub duplicate: bool,
    #[serde(skip)]
    pub reply: Option<Vec<u8>>,
}

/// An outbox row handed to a connector for delivery. Its four texts share one allocation: a
/// drain claims thousands of rows a second on the writer's thread and frees them on the
/// deliverer's, and an allocation per text was a tenth of the writer's work per event.
#[derive(Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    /// This attempt's number, from 1.
    pub attempts: u32,
    pub payload: Vec<u8>,
    pub occurred_at: i64,
    /// `key`, `event_id`, `kind` and `schema`, one after another.
    texts: Box<str>,
    /// Where `key`, `event_id` and `kind` end in `texts`.
    ends: [usize; 3],
}

/// The texts of an [`OutboxRow`], borrowed while it is built.
pub struct RowTexts<'a> {
    pub key: &'a str,
    pub event_id: &'a str,
    pub kind: &'a str,
    pub schema: &'a str,
}

impl OutboxRow {
    pub fn new(
        id: i64,
        attempts: u32,
        texts: RowTexts<'_>,
        payload: Vec<u8>,
        occurred_at: i64,
    ) -> OutboxRow {
        let RowTexts {
            key,
            event_id,
            kind,
            schema,
        } = texts;
        let mut all = String::with_capacity(key.len() + event_id.len() + kind.len() + schema.len());
        let mut ends = [0; 3];
        for (end, text) in ends.iter_mut().zip([key, event_id, kind]) {
            all.push_str(text);
            *end = all.len();
        }
        all.push_str(schema);
        OutboxRow {
            id,
            attempts,
            payload,
            occurred_at,
            texts: all.into_boxed_str(),
            ends,
        }
    }

    /// The key whose rows go out in order.
    pub fn key(&self) -> &str {
        &self.texts[..self.ends[0]]
    }

    /// The inbound item's event id.
    pub fn event_id(&self) -> &str {
        &self.texts[self.ends[0]..self.ends[1]]
    }

    pub fn kind(&self) -> &str {
        &self.texts[self.ends[1]..self.ends[2]]
    }

    /// The payload's schema name and version.
    pub fn schema(&self) -> &str {
        &self.texts[self.ends[2]..]
    }
}

impl std::fmt::Debug for OutboxRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRow")
            .field("id", &self.id)
            .field("key", &self.key())
            .field("attempts", &self.attempts)
            .field("event_id", &self.event_id())
            .field("kind", &self.kind())
            .field("schema", &self.schema())
            .field("payload", &self.payload)
            .field("occurred_at", &self.occurred_at)
            .finish()
    }
}

/// An inbound item as the journal keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredItem {
    pub id: i64,
    pub event_id: String,
    pub source: String,
    pub source_id: Option<String>,
    pub kind: String,
    pub key: String,
    pub payload: Vec<u8>,
    pub received_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub destination: String,
    pub key: String,
    pub kind: String,
    pub event_id: String,
    pub attempts: u32,
    pub last_error: String,
    pub dead_since: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DestinationStats {
    pub pending: u64,
    pub in_flight: u64,
    pub dead: u64,
    /// When the item of the oldest pending row (the first queued) arrived, ms since the epoch:
    /// how long the destination has gone without it, retries and dead time included.
    pub oldest_pending_at: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub destinations: BTreeMap<String, DestinationStats>,
    pub inbound_items: u64,
    pub used_bytes: u64,
    pub file_bytes: u64,
    pub max_bytes: u64,
    pub schema_version: i64,
}

/// Retry schedule of one destination.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// Delay before the attempt after `attempts` failed ones: doubling from `initial`, capped at
    /// `max`, then spread over its upper half so that rows failed together do not retry together.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
        let capped = exp.min(self.max);
        let half = capped / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }
}

impl From<&config::DestinationConfig> for RetryPolicy {
    fn from(d: &config::DestinationConfig) -> Self {
        RetryPolicy {
            max_attempts: d.max_attempts,
            initial: Duration::from_millis(d.backoff_initial_ms),
            max: Duration::from_millis(d.backoff_max_ms),
        }
    }
}

/// Writer settings that a config reload may change.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_bytes: u64,
    pub retention: Duration,
    pub max_batch: usize,
    pub policies: BTreeMap<String, RetryPolicy>,
    /// The domains' own settings, read by their work on the writer thread (e.g. the queue's
    /// time zone and what a queue change tells the EHR).
    pub extensions: Extensions,
}

impl Settings {
    fn policy(&self, destination: &str) -> RetryPolicy {
        self.policies
            .get(destination)
            .cloned()
            .unwrap_or_else(|| (&config::DestinationConfig::default()).into())
    }
}

/// The domains' settings kept by the writer, one value per type: the journal carries them
/// without knowing them, and a domain's work reads its own with [`Tx::extension`].
#[derive(Clone, Default)]
pub struct Extensions(HashMap<TypeId, Arc<dyn Any + Send + Sync>>);

impl Extensions {
    /// Sets (or replaces) the value of type `T`.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) {
        self.0.insert(TypeId::of::<T>(), Arc::new(value));
    }

    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.0.get(&TypeId::of::<T>())?.downcast_ref()
    }
}

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Extensions({} values)", self.0.len())
    }
}

/// A domain's work, run on the writer thread inside the batch's transaction: its SQL (through
/// [`Tx::sql`]) and the items it appends commit together with the rest of the batch, and its
/// requester is answered only after that commit. A failed work item is rolled back alone (a
/// savepoint), unless storage itself failed, which rolls back the whole batch.
///
/// A type becomes a journal request with [`journal_work!`](crate::journal_work).
pub trait Work: Send + 'static {
    type Output: Send + 'static;
    /// True when the work commits new inbound items, so that the journal's size limit applies
    /// to it as to [`Append`].
    const LIMITED: bool = false;
    /// True when the work only reads. It then runs on the journal's read-only connection, on
    /// its own thread, once the batch that carried it has committed (so it sees everything
    /// sent before it): a report over a year of visits or a staff page's list then holds up no
    /// check-in's commit. Such work that writes fails, the connection being read-only.
    const READ_ONLY: bool = false;
    /// True when a read-only work may take long (a report over months of visits). It then runs
    /// on a second reader thread, beside the backlog's counts, so that no board list waits
    /// behind it.
    const LONG: bool = false;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError>;
}

/// Makes domain [`Work`] types journal requests, sent like any other with [`ask`].
#[macro_export]
macro_rules! journal_work {
    ($($work:ty),* $(,)?) => {
        $(
            impl actix::Message for $work {
                type Result = Result<<$work as $crate::journal::Work>::Output, $crate::journal::JournalError>;
            }
            impl $crate::journal::Request for $work {
                type Output = <$work as $crate::journal::Work>::Output;
                fn into_command(self, reply: $crate::journal::Reply<Self::Output>) -> $crate::journal::Command {
                    $crate::journal::Command::Work($crate::journal::Job::new(self, reply))
                }
            }
        )*
    };
}

/// A domain's work with its reply, on its way to the writer thread.
pub struct Job(Box<dyn Runnable>);

impl Job {
    pub fn new<W: Work>(work: W, reply: Reply<W::Output>) -> Job {
        Job(Box::new(Pending { work, reply }))
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

trait Runnable: Send {
    fn limited(&self) -> bool;
    fn read_only(&self) -> bool;
    fn long(&self) -> bool;
    /// Runs the work; answers what to do once the batch's fate is known, and whether the work
    /// itself succeeded.
    fn run(self: Box<Self>, tx: &mut Tx<'_>) -> (Done, Result<(), JournalError>);
    fn fail(self: Box<Self>, e: &JournalError);
}

/// A work run later (see [`Tx::later`]): nobody waits on it, so its failure is logged.
struct Later<W>(W);

impl<W: Work<Output = ()>> Runnable for Later<W> {
    fn limited(&self) -> bool {
        W::LIMITED
    }

    fn read_only(&self) -> bool {
        false
    }

    fn long(&self) -> bool {
        false
    }

    fn run(self: Box<Self>, tx: &mut Tx<'_>) -> (Done, Result<(), JournalError>) {
        let result = self.0.run(tx);
        if let Err(e) = &result {
            tracing::warn!(error = %e, work = std::any::type_name::<W>(), "work put off by the writer failed; it is tried again when its domain next starts");
        }
        let done: Done = Box::new(|batch_error| {
            if let Some(e) = batch_error {
                tracing::warn!(error = %e, work = std::any::type_name::<W>(), "work put off by the writer was rolled back with its batch; it is tried again when its domain next starts");
            }
        });
        (done, result)
    }

    fn fail(self: Box<Self>, e: &JournalError) {
        tracing::warn!(error = %e, work = std::any::type_name::<W>(), "work put off by the writer was refused; it is tried again when its domain next starts");
    }
}

struct Pending<W: Work> {
    work: W,
    reply: Reply<W::Output>,
}

impl<W: Work> Runnable for Pending<W> {
    fn limited(&self) -> bool {
        W::LIMITED
    }

    fn read_only(&self) -> bool {
        W::READ_ONLY
    }

    fn long(&self) -> bool {
        W::READ_ONLY && W::LONG
    }

    fn run(self: Box<Self>, tx: &mut Tx<'_>) -> (Done, Result<(), JournalError>) {
        let result = self.work.run(tx);
        let outcome = match &result {
            Ok(_) => Ok(()),
            Err(e) => Err(e.clone()),
        };
        (done(self.reply, result), outcome)
    }

    fn fail(self: Box<Self>, e: &JournalError) {
        let _ = self.reply.send(Err(e.clone()));
    }
}

/// What a domain's work sees of the batch's transaction.
pub struct Tx<'t> {
    conn: &'t rusqlite::Connection,
    numbers: &'t store::Numbers,
    now: i64,
    woken: BTreeSet<String>,
    appended: u64,
    extensions: &'t Extensions,
    later: Vec<Job>,
}

impl<'t> Tx<'t> {
    fn new(
        conn: &'t rusqlite::Connection,
        numbers: &'t store::Numbers,
        now: i64,
        extensions: &'t Extensions,
    ) -> Tx<'t> {
        Tx {
            conn,
            numbers,
            now,
            woken: BTreeSet::new(),
            appended: 0,
            extensions,
            later: Vec::new(),
        }
    }

    /// The connection, inside the batch's transaction, for the domain's own SQL.
    pub fn sql(&self) -> &rusqlite::Connection {
        self.conn
    }

    /// The batch's time (ms since the epoch).
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Commits an item with its outbox rows, as [`Append`] does (a resend of the same source
    /// id gets the first receipt); its destinations are woken after the commit.
    pub fn append(&mut self, item: &NewItem, now: i64) -> Result<Receipt, JournalError> {
        let receipt = store::append(self.conn, self.numbers, item, now)?;
        if !receipt.duplicate {
            self.appended += 1;
            self.woken.extend(item.destinations.iter().cloned());
        }
        Ok(receipt)
    }

    /// Commits an event that happened at `now` (see [`NewItem::event`]).
    pub fn raise(&mut self, event: NewItem, now: i64) -> Result<Receipt, JournalError> {
        self.append(
            &NewItem {
                occurred_at: Some(now),
                ..event
            },
            now,
        )
    }

    /// Appends an audit record.
    pub fn audit(
        &mut self,
        actor: &str,
        action: &str,
        detail: &str,
        now: i64,
    ) -> Result<(), JournalError> {
        store::audit(self.conn, actor, action, detail, now)
    }

    /// The audit records `filter` covers: how many there are, and `limit` of them from the
    /// `offset`th, oldest first (the FHIR API's AuditEvents).
    pub fn audit_page(
        &self,
        filter: &AuditFilter,
        limit: usize,
        offset: usize,
    ) -> Result<(usize, Vec<chain::AuditRow>), JournalError> {
        let total = store::audit_count(self.conn, filter)?;
        Ok((total, store::audit_rows(self.conn, filter, limit, offset)?))
    }

    /// Every inbound item `filter` admits, oldest first (what a domain committed, read back).
    pub fn items(&self, filter: &ItemFilter<'_>) -> Result<Vec<StoredItem>, JournalError> {
        store::items(self.conn, filter, usize::MAX)
    }

    /// Wakes a destination's connector after the commit (rows it delivers changed).
    pub fn wake(&mut self, destination: &str) {
        self.woken.insert(destination.to_string());
    }

    /// Runs `work` in a batch of its own once this one has committed and the writer is free
    /// (see `LATER_IDLE`), or it has waited `LATER_LATEST`: what follows
    /// from a request without its requester waiting on it (an inquiry a check-in's card makes)
    /// then holds up no other request. It is not kept: the domain keeps in this transaction
    /// what the work needs, and has it done again at its next start should the gateway stop
    /// first; dropped with this work if it fails, or with the batch if it is rolled back. A
    /// read-only work's later work is ignored.
    pub fn later<W: Work<Output = ()>>(&mut self, work: W) {
        self.later.push(Job(Box::new(Later(work))));
    }

    /// The domain's settings of type `T`, if the wiring gave the writer one.
    pub fn extension<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.extensions.get()
    }
}

/// The signal of a destination, woken after each commit that made its rows deliverable (new
/// items, replays), so that its connector need not poll. A journal that has stopped answers a
/// signal that never fires.
pub async fn signal(journal: &Addr<JournalWriter>, destination: &str) -> Arc<Notify> {
    let subscribe = Subscribe {
        destination: destination.to_string(),
    };
    ask(journal, subscribe).await.unwrap_or_default()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Where the writer thread sends a request's answer.
pub type Reply<T> = oneshot::Sender<Result<T, JournalError>>;

/// Commit an inbound item; answered with its [`Receipt`] once durable.
#[derive(Debug)]
pub struct Append(pub NewItem);
/// Take up to `limit` deliverable rows of a destination (they become in-flight).
#[derive(Debug)]
pub struct Claim {
    pub destination: String,
    pub limit: usize,
}
/// Up to `limit` rows of a destination that `Claim` would hand out now, left pending: a look
/// at what waits without taking it.
#[derive(Debug)]
pub struct Peek {
    pub destination: String,
    pub limit: usize,
}
/// These in-flight rows reached their destination.
#[derive(Debug)]
pub struct Delivered(pub Vec<i64>);
/// These in-flight rows failed (`ids: None`: every in-flight row of the destination).
#[derive(Debug)]
pub struct Failed {
    pub destination: String,
    pub ids: Option<Vec<i64>>,
    pub error: String,
    /// Retrying cannot help (the destination refused the item itself): dead letter at once.
    pub permanent: bool,
}
/// A deliverer's connection was lost: every in-flight row of `destination` goes back in line
/// at once, its claim's attempt given back (the connection failed, not the row), except
/// `blamed`, which counts the attempt like a [`Failed`] row: the oldest row written on the
/// connection and not confirmed, the one a peer closing the connection on a bad row closed on.
#[derive(Debug)]
pub struct Interrupted {
    pub destination: String,
    pub blamed: Option<i64>,
    pub error: String,
}
/// Dead letters, newest first, optionally of one destination.
#[derive(Debug)]
pub struct ListDead {
    pub destination: Option<String>,
    pub limit: usize,
}

crate::journal_work!(ListDead);

impl Work for ListDead {
    type Output = Vec<DeadLetter>;
    const READ_ONLY: bool = true;
    fn run(self, tx: &mut Tx<'_>) -> Result<Vec<DeadLetter>, JournalError> {
        store::dead_letters(tx.conn, self.destination.as_deref(), self.limit)
    }
}
/// Put dead letters back in line (one row, or all of a destination); audited with `by`.
#[derive(Debug)]
pub struct Replay {
    pub destination: String,
    pub id: Option<i64>,
    pub by: String,
}
#[derive(Debug)]
pub struct GetStats;
#[derive(Debug)]
pub struct AuditRecord {
    pub actor: String,
    pub action: String,
    pub detail: String,
}
/// Audit records with their ids and hashes: the `limit` most recent, newest first, or with
/// `after` the `limit` following record `after`, oldest first (a reader pulling the chain a
/// page at a time and checking each `prev_hash`).
#[derive(Debug)]
pub struct ListAudit {
    pub after: Option<i64>,
    pub limit: usize,
}

impl ListAudit {
    /// The `limit` most recent records, newest first.
    pub fn newest(limit: usize) -> ListAudit {
        ListAudit { after: None, limit }
    }
}

crate::journal_work!(ListAudit);

impl Work for ListAudit {
    type Output = Vec<chain::AuditRow>;
    const READ_ONLY: bool = true;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        match self.after {
            Some(after) => Ok(tx.audit_page(&AuditFilter::after(after), self.limit, 0)?.1),
            None => {
                let total = tx.audit_page(&AuditFilter::ALL, 0, 0)?.0;
                let offset = total.saturating_sub(self.limit);
                let (_, mut rows) = tx.audit_page(&AuditFilter::ALL, self.limit, offset)?;
                rows.reverse();
                Ok(rows)
            }
        }
    }
}

/// The audit chain's last record and length (see [`chain::Head`]), for publishing.
#[derive(Debug)]
pub struct GetAuditHead;

crate::journal_work!(GetAuditHead);

impl Work for GetAuditHead {
    type Output = chain::Head;
    const READ_ONLY: bool = true;
    fn run(self, tx: &mut Tx<'_>) -> Result<chain::Head, JournalError> {
        store::audit_head(tx.conn)
    }
}

/// The wake-up signal of a destination (see [`signal`]).
#[derive(Debug)]
pub struct Subscribe {
    pub destination: String,
}

/// Answered once the writer has gone round its loop: proof of life for the watchdog.
#[derive(Debug)]
pub struct Ping;
#[derive(Debug)]
pub struct Reconfigure(pub Settings);
/// Finish queued work, checkpoint the WAL and stop the writer thread.
#[derive(Debug)]
pub struct Close;

/// A journal request: an actix message answered by the writer thread.
pub trait Request: Message<Result = Result<Self::Output, JournalError>> + Send + 'static {
    type Output: Send + 'static;
    fn into_command(self, reply: Reply<Self::Output>) -> Command;
}

/// Declares every request once: its `Command` variant (what the writer thread receives), its
/// actix message, and how a failed batch answers it.
macro_rules! requests {
    ($($msg:ident => $variant:ident : $out:ty),* $(,)?) => {
        /// What the writer thread receives.
        #[derive(Debug)]
        pub enum Command {
            $($variant($msg, Reply<$out>),)*
            /// A domain's work (see [`Work`]).
            Work(Job),
        }
        $(
            impl Message for $msg {
                type Result = Result<$out, JournalError>;
            }
            impl Request for $msg {
                type Output = $out;
                fn into_command(self, reply: Reply<$out>) -> Command {
                    Command::$variant(self, reply)
                }
            }
        )*
        fn fail(command: Command, e: &JournalError) {
            match command {
                $(Command::$variant(_, r) => drop(r.send(Err(e.clone()))),)*
                Command::Work(job) => job.0.fail(e),
            }
        }
    };
}

requests! {
    Append => Append: Receipt,
    Claim => Claim: Vec<OutboxRow>,
    Peek => Peek: Vec<OutboxRow>,
    Delivered => Delivered: usize,
    Failed => Failed: (usize, usize),
    Interrupted => Interrupted: (usize, usize),
    Replay => Replay: usize,
    GetStats => Stats: Stats,
    AuditRecord => Audit: (),
    Subscribe => Subscribe: Arc<Notify>,
    Ping => Ping: (),
    Reconfigure => Reconfigure: (),
    Close => Close: (),
}

impl Command {
    /// Whether the request may write: one that only reads (or subscribes, or pings) leaves the
    /// writer free for work put off ([`Tx::later`]).
    fn writes(&self) -> bool {
        match self {
            Command::Stats(..) | Command::Peek(..) | Command::Subscribe(..) | Command::Ping(..) => {
                false
            }
            Command::Work(job) => !job.0.read_only(),
            _ => true,
        }
    }
}

/// The actor every other part of the gateway sends journal requests to.
pub struct JournalWriter {
    tx: mpsc::Sender<Command>,
}

impl Actor for JournalWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Producers wait on the writer's channel, not on the mailbox; a small mailbox would
        // serialise them before they could be batched together.
        ctx.set_mailbox_capacity(65_536);
    }
}

impl<R: Request> Handler<R> for JournalWriter {
    type Result = Forward<R>;

    fn handle(&mut self, msg: R, _: &mut Context<Self>) -> Forward<R> {
        Forward {
            msg,
            writer: self.tx.clone(),
        }
    }
}

/// A request on its way to the writer thread, which answers the requester directly through
/// the mailbox's own reply channel: no task and no second channel per request.
pub struct Forward<R> {
    msg: R,
    writer: mpsc::Sender<Command>,
}

impl<R: Request> actix::dev::MessageResponse<JournalWriter, R> for Forward<R> {
    fn handle(
        self,
        _: &mut Context<JournalWriter>,
        reply: Option<actix::dev::OneshotSender<R::Result>>,
    ) {
        // A request sent without waiting for its answer (`do_send`) still needs somewhere to
        // put it.
        let reply = reply.unwrap_or_else(|| oneshot::channel().0);
        match self.writer.try_send(self.msg.into_command(reply)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(command)) => {
                let writer = self.writer;
                actix::spawn(async move {
                    if let Err(mpsc::error::SendError(command)) = writer.send(command).await {
                        fail(command, &JournalError::Closed);
                    }
                });
            }
            Err(mpsc::error::TrySendError::Closed(command)) => fail(command, &JournalError::Closed),
        }
    }
}

/// Puts every row of `destination` that is in flight back in line as a failed attempt (the
/// attempt counts, its backoff applies), saying `why`. A deliverer calls it when it starts
/// (rows in flight then were left by a run that ended mid-delivery, e.g. by a panic) and when
/// its connection is lost before the peer confirmed them. A journal that cannot take the
/// request is logged: the rows stay in flight until the next start puts them back.
pub async fn put_back_in_flight(journal: &Addr<JournalWriter>, destination: &str, why: String) {
    let back = Failed {
        destination: destination.into(),
        ids: None,
        error: why,
        permanent: false,
    };
    if let Err(e) = ask(journal, back).await {
        tracing::error!(%destination, error = %e, "cannot put in-flight rows back in line");
    }
}

/// Sends a request and flattens the mailbox error into [`JournalError::Closed`].
pub async fn ask<R: Request>(addr: &Addr<JournalWriter>, msg: R) -> Result<R::Output, JournalError>
where
    JournalWriter: Handler<R>,
{
    addr.send(msg).await.map_err(|_| JournalError::Closed)?
}

/// How a connector's attempt at one outbox row ended.
#[derive(Debug)]
pub enum Settle {
    Delivered,
    /// Kept for another try after the destination's backoff.
    Retry(String),
    /// Dead-lettered: sending it again as it is cannot help (staff can replay it).
    Refused(String),
}

/// Records how the attempt at row `id` of `destination` ended.
pub async fn settle(
    addr: &Addr<JournalWriter>,
    destination: &str,
    id: i64,
    settle: Settle,
) -> Result<(), JournalError> {
    let failed = |error: String, permanent: bool| Failed {
        destination: destination.into(),
        ids: Some(vec![id]),
        error,
        permanent,
    };
    match settle {
        Settle::Delivered => ask(addr, Delivered(vec![id])).await.map(|_| ()),
        Settle::Retry(error) => ask(addr, failed(error, false)).await.map(|_| ()),
        Settle::Refused(error) => ask(addr, failed(error, true)).await.map(|_| ()),
    }
}

impl JournalWriter {
    /// Starts the writer thread on an opened store and the actor in front of it. The returned
    /// handle finishes after [`Close`] (or once every sender is gone).
    pub fn start(
        store: Store,
        settings: Settings,
    ) -> Result<(Addr<JournalWriter>, std::thread::JoinHandle<()>), JournalError> {
        let readers = match store
            .reader()
            .and_then(|quick| Ok((quick, store.reader()?)))
        {
            Ok((quick, long)) => Some(Readers {
                quick: reader(quick, "journal-reader")?,
                long: reader(long, "journal-long")?,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "no read-only connection: the writer answers reads itself");
                None
            }
        };
        let (tx, rx) = mpsc::channel(65_536);
        let thread = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || Writer::new(store, settings, readers).run(rx))
            .map_err(|e| JournalError::Sqlite(format!("cannot start the writer thread: {e}")))?;
        Ok((JournalWriter { tx }.start(), thread))
    }
}

/// What a reader thread answers: the backlog's counts (with the size limit they are
/// reported against), or a read-only [`Work`] with the domains' settings it reads.
enum Read {
    /// The counts, their size limit and the rows the writer holds in flight.
    Stats(Reply<Stats>, u64, BTreeMap<String, u64>),
    Work(Job, Arc<Extensions>),
}

/// A thread that answers reads on its own read-only connection, so that counting a large
/// backlog or reading a report never holds up a commit.
struct Reader {
    queue: std::sync::mpsc::Sender<Read>,
    thread: std::thread::JoinHandle<()>,
}

impl Read {
    fn refuse(self, e: &JournalError) {
        match self {
            Read::Stats(reply, ..) => drop(reply.send(Err(e.clone()))),
            Read::Work(job, _) => job.0.fail(e),
        }
    }
}

impl Reader {
    /// Answers what is queued and closes its connection, so that the writer's is the last one
    /// open and a clean stop leaves no write-ahead log beside the journal.
    fn close(self) {
        drop(self.queue);
        let _ = self.thread.join();
    }
}

/// The quick reads (the board's lists, a staff page's), and the long ones beside them: the
/// backlog's counts (a million rows waiting while the cloud is away take a tenth of a second
/// and more to count) and [`Work::LONG`] reports.
struct Readers {
    quick: Reader,
    long: Reader,
}

impl Readers {
    fn close(self) {
        self.quick.close();
        self.long.close();
    }
}

fn reader(mut connection: Store, name: &str) -> Result<Reader, JournalError> {
    let (queue, rx) = std::sync::mpsc::channel::<Read>();
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            for read in rx {
                // A read that panics fails alone (its requester is told the journal closed);
                // the thread and its connection go on to the next.
                unless_panicked(|| match read {
                    Read::Stats(reply, max_bytes, in_flight) => {
                        let _ =
                            reply.send(connection.with_batch(|b| b.stats(max_bytes, &in_flight)));
                    }
                    Read::Work(job, extensions) => read_work(&mut connection, job, &extensions),
                });
            }
        })
        .map_err(|e| JournalError::Sqlite(format!("cannot start the reader thread: {e}")))?;
    Ok(Reader { queue, thread })
}

/// Runs one request, catching a panic (a bug in it) so that it fails alone: `None` once the
/// panic is logged. Its reply, dropped while unwinding, tells its requester the journal closed.
fn unless_panicked<T>(request: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(request)) {
        Ok(answer) => Some(answer),
        Err(panic) => {
            let message = crate::supervisor::link::panic_message(panic.as_ref());
            tracing::error!(%message, "a journal request panicked; it alone was refused");
            None
        }
    }
}

/// Runs a read-only work in one read transaction, so that all it reads is one moment's.
fn read_work(connection: &mut Store, job: Job, extensions: &Extensions) {
    let mut job = Some(job);
    let ran = connection.with_batch(|b| {
        let job = job.take().expect("taken once");
        Ok(job.0.run(&mut b.reading(now_ms(), extensions)).0)
    });
    match (ran, job) {
        (Ok(done), _) => done(None),
        (Err(e), Some(job)) => job.0.fail(&e),
        // The read ran; only ending its transaction failed, which changes nothing it read.
        (Err(e), None) => tracing::warn!(error = %e, "a read's transaction did not end cleanly"),
    }
}

/// Hands `read` to the reader once the batch has committed, so that it reads everything
/// sent before it; a batch rolled back refuses it with the batch's error.
fn after_commit(reader: &Reader, read: Read) -> Done {
    let queue = reader.queue.clone();
    Box::new(
        move |batch_error: Option<&JournalError>| match batch_error {
            Some(e) => read.refuse(e),
            None => {
                if let Err(std::sync::mpsc::SendError(read)) = queue.send(read) {
                    read.refuse(&JournalError::Closed);
                }
            }
        },
    )
}

/// Held by a test to keep the backlog's counts from being read while it shows that the writer
/// goes on meanwhile.
#[cfg(feature = "fault-hooks")]
pub static STATS_HELD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Set by a test to keep work put off ([`Tx::later`]) from running, so that it can stop the
/// gateway before it does.
#[cfg(feature = "fault-hooks")]
pub static LATER_HELD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(feature = "fault-hooks")]
fn later_held() -> bool {
    LATER_HELD.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(not(feature = "fault-hooks"))]
fn later_held() -> bool {
    false
}

/// Called once the batch's fate is known: `Some(error)` when the whole batch was rolled back.
type Done = Box<dyn FnOnce(Option<&JournalError>) + Send>;

fn done<T: Send + 'static>(reply: Reply<T>, result: Result<T, JournalError>) -> Done {
    Box::new(move |batch_error| {
        let _ = reply.send(match batch_error {
            Some(e) => Err(e.clone()),
            None => result,
        });
    })
}

struct Writer {
    store: Store,
    settings: Settings,
    last_prune: Instant,
    /// Each destination's wake-up signal (see [`signal`]).
    signals: HashMap<String, Arc<Notify>>,
    readers: Option<Readers>,
    /// The domains' settings as read-only work reads them, shared with the reader threads.
    extensions: Arc<Extensions>,
    /// Work put off by committed requests (see [`Tx::later`]), oldest first, with when.
    later: VecDeque<(Instant, Job)>,
}

/// A batch waits for its siblings only after a batch of at least this many requests (a lone
/// requester is never held back), only while they keep coming (none for `GATHER_QUIET` ends
/// the wait), and never longer than `GATHER_MAX`.
const GATHER_SIBLINGS: usize = 8;
const GATHER_QUIET: Duration = Duration::from_micros(50);
const GATHER_MAX: Duration = Duration::from_micros(200);

/// Work put off ([`Tx::later`]) runs when no request is waiting, but not during a burst of
/// requests that write: `GATHER_SIBLINGS` of them within `LATER_IDLE` start one, and it lasts
/// until `LATER_IDLE` has passed without one (a burst of check-ins at the door reaches the
/// writer in batches of every size, with gaps, while the web server parses the rest; reads do
/// not count). Or once it has itself waited `LATER_LATEST` under a steady load, then taking
/// turns with requests. `LATER_BATCH` of it at a time, so that a request arriving meanwhile
/// waits for little.
const LATER_IDLE: Duration = Duration::from_millis(10);
const LATER_LATEST: Duration = Duration::from_millis(250);
const LATER_BATCH: usize = 16;

/// The writing requests of the last `LATER_IDLE`, counted to tell a burst from lone requesters
/// (see `LATER_IDLE`).
#[derive(Default)]
struct Writes {
    since: Option<Instant>,
    count: usize,
}

impl Writes {
    /// Counts a batch's `n` writing requests, taken at `now`; answers the end of the burst they
    /// make or carry on (`quiet`: the current burst's end, if not past), if they do.
    fn seen(&mut self, n: usize, now: Instant, quiet: Instant) -> Option<Instant> {
        if n == 0 {
            return None;
        }
        if now < quiet {
            return Some(now + LATER_IDLE);
        }
        match self.since {
            Some(since) if now - since < LATER_IDLE => self.count += n,
            _ => (self.since, self.count) = (Some(now), n),
        }
        (self.count >= GATHER_SIBLINGS).then_some(now + LATER_IDLE)
    }
}

/// How often delivered rows past retention are pruned, and how many per pass.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
const PRUNE_LIMIT: usize = 50_000;

impl Writer {
    fn new(store: Store, mut settings: Settings, readers: Option<Readers>) -> Self {
        let extensions = Arc::new(std::mem::take(&mut settings.extensions));
        Writer {
            store,
            settings,
            last_prune: Instant::now(),
            signals: HashMap::new(),
            readers,
            extensions,
            later: VecDeque::new(),
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(self.settings.max_batch);
        let mut last = 0;
        let waiting = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "the journal writer cannot time its waits");
                return;
            }
        };
        // When work put off may run for want of requests (the end of the last burst), and
        // whether the last batch was work put off: under a steady load such batches take turns
        // with requests.
        let (mut quiet, mut put_off) = (Instant::now(), false);
        let mut writes = Writes::default();
        loop {
            let now = Instant::now();
            let first = match self.later.front().filter(|_| !later_held()) {
                None => rx.blocking_recv(),
                Some((since, _)) => {
                    let latest = *since + LATER_LATEST;
                    if (latest <= now || quiet <= now)
                        && (rx.is_empty() || (latest <= now && !put_off))
                    {
                        self.run_later(&mut batch);
                        put_off = true;
                        continue;
                    }
                    if quiet <= now || latest <= now {
                        // Requests are waiting, and theirs is the turn.
                        rx.blocking_recv()
                    } else if let Ok(next) = rx.try_recv() {
                        Some(next)
                    } else {
                        let until = quiet.min(latest).into();
                        let next = async { tokio::time::timeout_at(until, rx.recv()).await };
                        match waiting.block_on(next) {
                            Ok(next) => next,
                            Err(_) => {
                                self.run_later(&mut batch);
                                put_off = true;
                                continue;
                            }
                        }
                    }
                }
            };
            put_off = false;
            let Some(first) = first else { break };
            batch.push(first);
            self.gather(&mut rx, &mut batch, last);
            last = batch.len();
            let writing = batch.iter().filter(|c| c.writes()).count();
            if let Some(until) = writes.seen(writing, Instant::now(), quiet) {
                quiet = until;
            }
            let closing = self.execute(&mut batch);
            if let Some(reply) = closing {
                self.close_readers();
                if let Err(e) = self.store.checkpoint() {
                    tracing::warn!(error = %e, "final WAL checkpoint failed; the WAL is replayed at next start");
                }
                let _ = reply.send(Ok(()));
                return;
            }
            if self.last_prune.elapsed() >= PRUNE_EVERY {
                self.prune(now_ms() - self.settings.retention.as_millis() as i64);
            }
        }
        self.close_readers();
        let _ = self.store.checkpoint();
    }

    /// Runs the oldest work put off, a batch of it.
    fn run_later(&mut self, batch: &mut Vec<Command>) {
        let n = self.later.len().min(LATER_BATCH);
        batch.extend(self.later.drain(..n).map(|(_, job)| Command::Work(job)));
        self.execute(batch);
    }

    fn close_readers(&mut self) {
        if let Some(readers) = self.readers.take() {
            readers.close();
        }
    }

    /// Takes what is queued behind the first request. When the last batch showed concurrent
    /// requesters, goes on taking requests while they keep arriving (until as many as last
    /// time are in, none came for [`GATHER_QUIET`], or [`GATHER_MAX`] passed): the first
    /// request wakes this thread while its siblings are still on their way, and committing it
    /// alone would make them all wait for the next fsync.
    fn gather(&self, rx: &mut mpsc::Receiver<Command>, batch: &mut Vec<Command>, last: usize) {
        let max = self.settings.max_batch;
        let start = Instant::now();
        let mut arrived = start;
        loop {
            let before = batch.len();
            while batch.len() < max {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            if batch.len() > before {
                arrived = now;
            }
            if last < GATHER_SIBLINGS
                || batch.len() >= last.min(max)
                || now - arrived >= GATHER_QUIET
                || now - start >= GATHER_MAX
            {
                return;
            }
            std::thread::yield_now();
        }
    }

    fn prune(&mut self, cutoff: i64) {
        self.last_prune = Instant::now();
        match self.store.with_batch(|b| b.prune(cutoff, PRUNE_LIMIT)) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "pruned delivered rows"),
            Err(e) => tracing::warn!(error = %e, "pruning failed"),
        }
    }

    /// Space check for a batch holding appends: when the limit is reached, delivered rows are
    /// pruned early (oldest first) before anything is refused.
    fn refusal(&mut self) -> Option<JournalError> {
        let limit = self.settings.max_bytes;
        let used = match self.store.used_bytes() {
            Ok(u) => u,
            Err(e) => return Some(e),
        };
        if used < limit {
            return None;
        }
        self.prune(now_ms());
        match self.store.used_bytes() {
            Ok(used) if used >= limit => Some(JournalError::Full { used, limit }),
            Ok(_) => None,
            Err(e) => Some(e),
        }
    }

    /// Applies one batch in one transaction and answers everyone after the commit. Returns the
    /// reply of a `Close` request, if the batch held one.
    fn execute(&mut self, batch: &mut Vec<Command>) -> Option<Reply<()>> {
        let now = now_ms();
        let refused = if batch.iter().any(|c| match c {
            Command::Append(..) => true,
            Command::Work(job) => job.0.limited(),
            _ => false,
        }) {
            self.refusal()
        } else {
            None
        };
        let started = Instant::now();
        let mut dones: Vec<Done> = Vec::with_capacity(batch.len());
        let mut closing = None;
        let mut abort: Option<JournalError> = None;
        let mut appended = 0u64;
        let mut counts = Outcome::default();
        let mut woken: BTreeSet<String> = BTreeSet::new();
        let mut later: Vec<Job> = Vec::new();
        let mut tx = match self.store.begin() {
            Ok(tx) => tx,
            Err(e) => {
                for c in batch.drain(..) {
                    fail(c, &e);
                }
                return None;
            }
        };
        for command in batch.drain(..) {
            if abort.is_some() {
                dones.push(Box::new(move |e| {
                    if let Some(e) = e {
                        fail(command, e)
                    }
                }));
                continue;
            }
            let d = match command {
                Command::Append(Append(item), reply) => {
                    let r = match &refused {
                        Some(e) => Err(e.clone()),
                        None => tx.append(&item, now).inspect(|r| {
                            if !r.duplicate {
                                appended += 1;
                                woken.extend(item.destinations.iter().cloned());
                            }
                        }),
                    };
                    if let (Err(e), None) = (&r, &refused)
                        && e.aborts_batch()
                    {
                        abort = Some(e.clone());
                    }
                    done(reply, r)
                }
                Command::Claim(Claim { destination, limit }, reply) => {
                    let r = tx.claim(&destination, limit, now);
                    abort = r.as_ref().err().filter(|e| e.aborts_batch()).cloned();
                    done(reply, r)
                }
                Command::Peek(Peek { destination, limit }, reply) => {
                    let r = tx.peek(&destination, limit, now);
                    done(reply, r)
                }
                Command::Delivered(Delivered(ids), reply) => {
                    let r = tx.delivered(&ids, now);
                    if let Ok(n) = &r {
                        counts.delivered += *n as u64;
                    }
                    abort = r.as_ref().err().filter(|e| e.aborts_batch()).cloned();
                    done(reply, r)
                }
                Command::Failed(
                    Failed {
                        destination,
                        ids,
                        error,
                        permanent,
                    },
                    reply,
                ) => {
                    let mut policy = self.settings.policy(&destination);
                    if permanent {
                        policy.max_attempts = 0;
                    }
                    let r = match ids {
                        Some(ids) => tx.failed(&ids, &error, &policy, now),
                        None => tx
                            .in_flight(&destination)
                            .and_then(|ids| tx.failed(&ids, &error, &policy, now)),
                    };
                    counts.settled(&r);
                    abort = r.as_ref().err().filter(|e| e.aborts_batch()).cloned();
                    done(reply, r)
                }
                Command::Interrupted(
                    Interrupted {
                        destination,
                        blamed,
                        error,
                    },
                    reply,
                ) => {
                    let policy = self.settings.policy(&destination);
                    let r = tx.interrupted(&destination, blamed, &error, &policy, now);
                    counts.settled(&r);
                    abort = r.as_ref().err().filter(|e| e.aborts_batch()).cloned();
                    done(reply, r)
                }
                Command::Replay(
                    Replay {
                        destination,
                        id,
                        by,
                    },
                    reply,
                ) => {
                    let r = tx.replay(&destination, id, &by, now);
                    woken.insert(destination);
                    abort = r.as_ref().err().filter(|e| e.aborts_batch()).cloned();
                    done(reply, r)
                }
                // Asked of the reader once this batch has committed, so that the counts take
                // in every request sent before them.
                Command::Stats(GetStats, reply) => match &self.readers {
                    Some(readers) => {
                        let read = Read::Stats(reply, self.settings.max_bytes, tx.held());
                        after_commit(&readers.long, read)
                    }
                    None => {
                        let held = tx.held();
                        let r = tx.stats(self.settings.max_bytes, &held);
                        done(reply, r)
                    }
                },
                Command::Audit(
                    AuditRecord {
                        actor,
                        action,
                        detail,
                    },
                    reply,
                ) => {
                    let r = tx.audit(&actor, &action, &detail, now);
                    abort = r.as_ref().err().filter(|e| e.aborts_batch()).cloned();
                    done(reply, r)
                }
                Command::Work(job) => {
                    if job.0.read_only()
                        && let Some(readers) = &self.readers
                    {
                        let reader = if job.0.long() {
                            &readers.long
                        } else {
                            &readers.quick
                        };
                        dones.push(after_commit(
                            reader,
                            Read::Work(job, self.extensions.clone()),
                        ));
                        continue;
                    }
                    if job.0.limited()
                        && let Some(e) = &refused
                    {
                        let e = e.clone();
                        dones.push(Box::new(move |_| job.0.fail(&e)));
                        continue;
                    }
                    let savepoint = match tx.savepoint() {
                        Ok(sp) => sp,
                        Err(e) => {
                            abort = Some(e.clone());
                            dones.push(Box::new(move |_| job.0.fail(&e)));
                            continue;
                        }
                    };
                    let mut work = Tx::new(&savepoint, savepoint.numbers(), now, &self.extensions);
                    // A work that panics (a bug) is refused alone, like one that failed: its
                    // requester is told the journal closed, its savepoint is rolled back, and
                    // the rest of the batch and every later request go on.
                    let (d, result) =
                        unless_panicked(|| job.0.run(&mut work)).unwrap_or_else(|| {
                            let done: Done = Box::new(|_| {});
                            (
                                done,
                                Err(JournalError::Rejected("the request panicked".into())),
                            )
                        });
                    let (work_woken, work_appended, work_later) =
                        (work.woken, work.appended, work.later);
                    match result {
                        Ok(()) => match savepoint.commit() {
                            Ok(()) => {
                                woken.extend(work_woken);
                                appended += work_appended;
                                later.extend(work_later);
                            }
                            Err(e) => abort = Some(e),
                        },
                        Err(e) => {
                            // The work's own changes are undone; the rest of the batch stands
                            // unless storage itself failed.
                            drop(savepoint);
                            if e.aborts_batch() {
                                abort = Some(e);
                            }
                        }
                    }
                    d
                }
                Command::Subscribe(Subscribe { destination }, reply) => {
                    let signal = self.signals.entry(destination).or_default().clone();
                    done(reply, Ok(signal))
                }
                Command::Ping(Ping, reply) => done(reply, Ok(())),
                Command::Reconfigure(Reconfigure(mut settings), reply) => {
                    self.extensions = Arc::new(std::mem::take(&mut settings.extensions));
                    self.settings = settings;
                    done(reply, Ok(()))
                }
                Command::Close(Close, reply) => {
                    closing = Some(reply);
                    continue;
                }
            };
            dones.push(d);
        }
        let outcome = match abort {
            Some(e) => {
                drop(tx);
                Some(e)
            }
            None => tx.commit().err(),
        };
        match &outcome {
            None => {
                METRICS.commit_latency.observe(started.elapsed());
                METRICS.journal_appends.add(appended);
                METRICS.deliveries.add(counts.delivered);
                METRICS.retries.add(counts.retries);
                METRICS.dead_letters.add(counts.dead);
                for destination in woken {
                    self.signals.entry(destination).or_default().notify_one();
                }
                let since = Instant::now();
                self.later.extend(later.into_iter().map(|j| (since, j)));
            }
            Some(e) => {
                tracing::error!(error = %e, "journal batch rolled back; every request in it was refused")
            }
        }
        for d in dones {
            d(outcome.as_ref());
        }
        closing
    }
}

#[derive(Default)]
struct Outcome {
    delivered: u64,
    retries: u64,
    dead: u64,
}

impl Outcome {
    /// Counts what a failed or interrupted delivery did: (rows retrying, rows dead).
    fn settled(&mut self, r: &Result<(usize, usize), JournalError>) {
        if let Ok((retry, dead)) = r {
            self.retries += *retry as u64;
            self.dead += *dead as u64;
        }
    }
}

#[cfg(test)]
mod tests;
