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

pub mod store;

use crate::connectors::fhir::model::Patient;
use crate::connectors::fhir::protocol::{CachedPatient, Conflict, Fields, Seen, Side};
use crate::metrics::METRICS;
use actix::prelude::*;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};
pub use store::{OpenOptions, Store};
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

/// An outbox row handed to a connector for delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub key: String,
    /// This attempt's number, from 1.
    pub attempts: u32,
    pub event_id: String,
    pub kind: String,
    pub schema: String,
    pub payload: Vec<u8>,
    pub occurred_at: i64,
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

/// Something staff should see on the status page (a priority an EHR flag changed, a queue
/// running past its slots), until someone acknowledges it. No patient data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notice {
    pub id: i64,
    pub at: i64,
    pub kind: String,
    pub text: String,
    pub acknowledged_at: Option<i64>,
    pub acknowledged_by: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DestinationStats {
    pub pending: u64,
    pub in_flight: u64,
    pub dead: u64,
    /// Last update of the oldest pending row (ms since the epoch).
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

impl From<&crate::config::DestinationConfig> for RetryPolicy {
    fn from(d: &crate::config::DestinationConfig) -> Self {
        RetryPolicy {
            max_attempts: d.max_attempts,
            initial: Duration::from_millis(d.backoff_initial_ms),
            max: Duration::from_millis(d.backoff_max_ms),
        }
    }
}

/// Writer settings that a config reload may change.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub max_bytes: u64,
    pub retention: Duration,
    pub max_batch: usize,
    pub policies: BTreeMap<String, RetryPolicy>,
    /// Announce calls from the queue to the EHR (`[connectors.hl7v2_out] on_call`), with the
    /// facility id for MSH-4.
    pub call_notice: Option<(crate::connectors::hl7v2::notice::CallTrigger, String)>,
    /// Open and move the visit's FHIR Encounter with calls, rooms and unseen exits
    /// (`[connectors.fhir] on_call = "encounter"`), with the facility id for its identifier.
    pub encounter_notice: Option<String>,
    /// What check-ins register in the EHR (`[connectors.fhir.registration]`).
    pub registration: Option<crate::connectors::fhir::registration::Policy>,
    /// The clinic's time zone (`[gateway] timezone`): the day of ticket numbers.
    pub zone: jiff::tz::TimeZone,
}

impl Settings {
    pub fn from_config(c: &crate::config::Config) -> Self {
        Settings {
            max_bytes: c.journal.max_bytes,
            retention: Duration::from_secs(c.journal.retention_hours * 3600),
            max_batch: c.journal.max_batch,
            policies: c
                .destinations
                .iter()
                .map(|(k, v)| (k.clone(), v.into()))
                .collect(),
            call_notice: c
                .connectors
                .hl7v2_out
                .as_ref()
                .and_then(|o| o.on_call)
                .map(|t| (t, c.gateway.facility_id.clone())),
            encounter_notice: c
                .connectors
                .fhir
                .as_ref()
                .and_then(|f| f.on_call)
                .map(|_| c.gateway.facility_id.clone()),
            registration: crate::connectors::fhir::registration::Policy::from_config(c),
            zone: crate::clock::zone(c.gateway.timezone.as_deref())
                .unwrap_or(jiff::tz::TimeZone::UTC),
        }
    }

    fn policy(&self, destination: &str) -> RetryPolicy {
        self.policies
            .get(destination)
            .cloned()
            .unwrap_or_else(|| (&crate::config::DestinationConfig::default()).into())
    }
}

/// Woken after a commit that made rows of a destination deliverable (new items, replays), so its
/// connector need not poll.
pub fn outbox_signal(destination: &str) -> Arc<Notify> {
    static SIGNALS: LazyLock<Mutex<HashMap<String, Arc<Notify>>>> = LazyLock::new(Default::default);
    let mut signals = SIGNALS.lock().unwrap_or_else(|p| p.into_inner());
    signals.entry(destination.to_string()).or_default().clone()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

type Reply<T> = oneshot::Sender<Result<T, JournalError>>;

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
#[derive(Debug)]
pub struct ListDead {
    pub destination: Option<String>,
    pub limit: usize,
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
/// Queue a patient (see [`Store`]'s `queue_check_in`).
#[derive(Debug)]
pub struct QueueCheckIn {
    pub queue: String,
    pub check_in: crate::queue::CheckIn,
    /// A ticket to print, committed in the same transaction as the check-in.
    pub ticket: Option<crate::queue::TicketOrder>,
}
/// Call the next waiting patient of a queue.
#[derive(Debug)]
pub struct QueueCallNext {
    pub queue: String,
    pub room: Option<String>,
}
/// A staff action on one entry.
#[derive(Debug)]
pub struct QueueAct {
    pub id: i64,
    pub action: crate::queue::Action,
}
/// Entries in queue order; closed ones too when `closed_since` is given.
#[derive(Debug)]
pub struct QueueList {
    pub queue: Option<String>,
    pub closed_since: Option<i64>,
}

/// An item from the EHR with what it does to the queue, committed together; a resend of the
/// same source id gets the first receipt and changes nothing.
#[derive(Debug)]
pub struct EhrInbound {
    pub item: NewItem,
    pub effects: Vec<crate::queue::FromEhr>,
}

/// Takes a room out of service (`hold`) or puts it back (`None`); audited with `by`.
#[derive(Debug)]
pub struct SetRoomHold {
    pub room: String,
    pub hold: Option<(crate::facility::Hold, Option<String>)>,
    pub by: String,
}
/// Every room currently held out of service.
#[derive(Debug)]
pub struct ListRoomHolds;
/// One cached FHIR Patient by id.
#[derive(Debug)]
pub struct FhirGet {
    pub id: String,
}
/// Cached FHIR Patients by identifier, or by family name and birth date.
#[derive(Debug)]
pub struct FhirFind {
    pub identifier: Option<String>,
    pub family: Option<String>,
    pub birth_date: Option<String>,
}
/// A Patient version read from the EHR (see [`Store`]'s `fhir_seen`).
#[derive(Debug)]
pub struct FhirSeen {
    pub patient: Box<Patient>,
    pub identifier: Option<String>,
    pub insert: bool,
}
/// A local demographic change to a cached Patient, for delivery to the EHR.
#[derive(Debug)]
pub struct FhirEdit {
    pub id: String,
    pub changes: Fields,
    pub by: String,
}
/// The EHR stored our update `sent` as `stored`.
#[derive(Debug)]
pub struct FhirWritten {
    pub sent: Box<Patient>,
    pub stored: Box<Patient>,
}
#[derive(Debug)]
pub struct FhirConflicts {
    pub all: bool,
}
/// Resolve a conflict with a choice per field; audited with `by`.
#[derive(Debug)]
pub struct FhirResolve {
    pub id: i64,
    pub choices: BTreeMap<String, Side>,
    pub by: String,
}
/// Staff notices, newest first: the open ones, or `all`.
#[derive(Debug)]
pub struct ListNotices {
    pub all: bool,
    pub limit: usize,
}

/// Links an entry to what the EHR registered for it: the new Patient's demographics, or the
/// walk-in's Appointment (`Appointment/<id>`).
#[derive(Debug)]
pub struct QueueLink {
    pub entry: i64,
    pub demographics: Option<crate::queue::Demographics>,
    pub appointment_ref: Option<String>,
}

/// Raises a notice for staff, with the item that tells others (cloud, EHR) and a FHIR
/// connector state to set, all in one transaction.
#[derive(Debug)]
pub struct RaiseNotice {
    pub kind: String,
    pub text: String,
    pub item: Option<NewItem>,
    pub state: Option<(String, String)>,
}

/// The EHR flags that raise an open queue entry now: (flag id, patient id).
#[derive(Debug)]
pub struct RaisingFlags;

/// Marks a notice seen, audited with `by`.
#[derive(Debug)]
pub struct AckNotice {
    pub id: i64,
    pub by: String,
}

/// Read (`set: None`) or write a persistent value of the FHIR connector.
#[derive(Debug)]
pub struct FhirState {
    pub key: String,
    pub set: Option<String>,
}

/// The most recent audit records, newest first.
#[derive(Debug)]
pub struct ListAudit {
    pub limit: usize,
}

/// A value the gateway holds in a building device's priority array, remembered so that no
/// override outlives the gateway's knowledge of it (see the BACnet actor's `on_start`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceOverride {
    pub device: String,
    /// The point as the device's protocol names it (e.g. `analog-value,1`).
    pub object: String,
    pub priority: u8,
    /// The value written (JSON: a number or a bool).
    pub value: serde_json::Value,
    /// Who asked for it.
    pub by: String,
    /// When it was written (ms since the epoch).
    pub set_at: i64,
}

/// Remember an override (before it is written to the device).
#[derive(Debug)]
pub struct SetOverride(pub DeviceOverride);
/// Forget the override of one priority slot (after it was relinquished); answers whether
/// there was one.
#[derive(Debug)]
pub struct ClearOverride {
    pub device: String,
    pub object: String,
    pub priority: u8,
}
/// The overrides remembered for one device.
#[derive(Debug)]
pub struct ListOverrides {
    pub device: String,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub detail: String,
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
    ListDead => ListDead: Vec<DeadLetter>,
    Replay => Replay: usize,
    GetStats => Stats: Stats,
    AuditRecord => Audit: (),
    ListAudit => ListAudit: Vec<AuditEntry>,
    SetOverride => SetOverride: (),
    ClearOverride => ClearOverride: bool,
    ListOverrides => ListOverrides: Vec<DeviceOverride>,
    QueueCheckIn => QueueCheckIn: (crate::queue::Entry, bool),
    QueueCallNext => QueueCallNext: Option<crate::queue::Entry>,
    QueueAct => QueueAct: crate::queue::Entry,
    QueueList => QueueList: Vec<crate::queue::Entry>,
    EhrInbound => EhrInbound: Receipt,
    SetRoomHold => SetRoomHold: Option<crate::facility::RoomHold>,
    ListRoomHolds => ListRoomHolds: Vec<crate::facility::RoomHold>,
    FhirGet => FhirGet: Option<CachedPatient>,
    FhirFind => FhirFind: Vec<CachedPatient>,
    FhirSeen => FhirSeen: Seen,
    FhirEdit => FhirEdit: bool,
    FhirWritten => FhirWritten: (),
    FhirConflicts => FhirConflicts: Vec<Conflict>,
    FhirResolve => FhirResolve: (Conflict, bool),
    FhirState => FhirState: Option<String>,
    ListNotices => ListNotices: Vec<Notice>,
    AckNotice => AckNotice: (),
    RaiseNotice => RaiseNotice: (),
    QueueLink => QueueLink: crate::queue::Entry,
    RaisingFlags => RaisingFlags: Vec<(String, String)>,
    Ping => Ping: (),
    Reconfigure => Reconfigure: (),
    Close => Close: (),
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
    type Result = ResponseFuture<Result<R::Output, JournalError>>;

    fn handle(&mut self, msg: R, _: &mut Context<Self>) -> Self::Result {
        let tx = self.tx.clone();
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            tx.send(msg.into_command(reply))
                .await
                .map_err(|_| JournalError::Closed)?;
            rx.await.map_err(|_| JournalError::Closed)?
        })
    }
}

/// Sends a request and flattens the mailbox error into [`JournalError::Closed`].
pub async fn ask<R: Request>(addr: &Addr<JournalWriter>, msg: R) -> Result<R::Output, JournalError>
where
    JournalWriter: Handler<R>,
{
    addr.send(msg).await.map_err(|_| JournalError::Closed)?
}

impl JournalWriter {
    /// Starts the writer thread on an opened store and the actor in front of it. The returned
    /// handle finishes after [`Close`] (or once every sender is gone).
    pub fn start(
        mut store: Store,
        settings: Settings,
    ) -> Result<(Addr<JournalWriter>, std::thread::JoinHandle<()>), JournalError> {
        let recovered = store.recover_in_flight(now_ms())?;
        if recovered > 0 {
            tracing::info!(
                rows = recovered,
                "in-flight rows from the last run put back in line"
            );
        }
        let (tx, rx) = mpsc::channel(65_536);
        let thread = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || Writer::new(store, settings).run(rx))
            .map_err(|e| JournalError::Sqlite(format!("cannot start the writer thread: {e}")))?;
        Ok((JournalWriter { tx }.start(), thread))
    }
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
}

/// How often delivered rows past retention are pruned, and how many per pass.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
const PRUNE_LIMIT: usize = 50_000;

impl Writer {
    fn new(mut store: Store, settings: Settings) -> Self {
        store.set_zone(settings.zone.clone());
        Writer {
            store,
            settings,
            last_prune: Instant::now(),
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(self.settings.max_batch);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < self.settings.max_batch {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            let closing = self.execute(&mut batch);
            if let Some(reply) = closing {
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
        let _ = self.store.checkpoint();
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
        let refused = if batch
            .iter()
            .any(|c| matches!(c, Command::Append(..) | Command::EhrInbound(..)))
        {
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
        let mut store_zone = None;
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
                    if let Ok((retry, dead)) = &r {
                        counts.retries += *retry as u64;
                        counts.dead += *dead as u64;
                    }
                    abort = r.as_ref().err().filter(|e| e.aborts_batch()).cloned();
                    done(reply, r)
                }
                Command::ListDead(ListDead { destination, limit }, reply) => {
                    let r = tx.dead_letters(destination.as_deref(), limit);
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
                Command::Stats(GetStats, reply) => {
                    let r = tx.stats().map(|mut s| {
                        s.max_bytes = self.settings.max_bytes;
                        s
                    });
                    done(reply, r)
                }
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
                Command::ListAudit(ListAudit { limit }, reply) => {
                    let r = tx.audit_log(limit);
                    done(reply, r)
                }
                Command::SetOverride(SetOverride(o), reply) => {
                    let r = tx.set_override(&o);
                    abort = r.as_ref().err().filter(|e| e.aborts_batch()).cloned();
                    done(reply, r)
                }
                Command::ClearOverride(
                    ClearOverride {
                        device,
                        object,
                        priority,
                    },
                    reply,
                ) => {
                    let r = tx.clear_override(&device, &object, priority);
                    abort = r.as_ref().err().filter(|e| e.aborts_batch()).cloned();
                    done(reply, r)
                }
                Command::ListOverrides(ListOverrides { device }, reply) => {
                    let r = tx.overrides(&device);
                    done(reply, r)
                }
                Command::QueueCheckIn(
                    QueueCheckIn {
                        queue,
                        check_in,
                        ticket,
                    },
                    reply,
                ) => {
                    let r = tx
                        .queue_check_in(&queue, &check_in, ticket.as_ref(), now)
                        .and_then(|(entry, duplicate)| {
                            let register = self.settings.registration.as_ref();
                            match register.and_then(|p| p.on_check_in(&entry, &check_in, now)) {
                                Some(item) if !duplicate => {
                                    tx.append(&item, now)?;
                                    woken.extend(item.destinations);
                                }
                                _ => {}
                            }
                            Ok((entry, duplicate))
                        });
                    if matches!(r, Ok((_, false))) {
                        woken.insert(crate::CLOUD.into());
                        if let Some(t) = &ticket {
                            woken.insert(crate::devices::printer::destination(&t.printer));
                        }
                    }
                    abort = r.as_ref().err().filter(|e| e.aborts_batch()).cloned();
                    done(reply, r)
                }
                Command::QueueCallNext(QueueCallNext { queue, room }, reply) => {
                    let call = crate::queue::Action::Call { room: room.clone() };
                    let r = tx.queue_call_next(&queue, room, now).and_then(|e| {
                        e.map(|e| announce(&mut tx, &self.settings, e, &call, now, &mut woken))
                            .transpose()
                    });
                    woken.insert(crate::CLOUD.into());
                    abort = r.as_ref().err().filter(|e| e.aborts_batch()).cloned();
                    done(reply, r)
                }
                Command::QueueAct(QueueAct { id, action }, reply) => {
                    let r = tx.queue_act(id, &action, now).and_then(|e| {
                        announce(&mut tx, &self.settings, e, &action, now, &mut woken)
                    });
                    woken.insert(crate::CLOUD.into());
                    abort = r.as_ref().err().filter(|e| e.aborts_batch()).cloned();
                    done(reply, r)
                }
                Command::QueueList(
                    QueueList {
                        queue,
                        closed_since,
                    },
                    reply,
                ) => {
                    let r = tx.queue_list(queue.as_deref(), closed_since);
                    done(reply, r)
                }
                Command::EhrInbound(EhrInbound { item, effects }, reply) => {
                    let r = match &refused {
                        Some(e) => Err(e.clone()),
                        None => tx.ehr_inbound(&item, &effects, now),
                    };
                    if let Ok(receipt) = &r
                        && !receipt.duplicate
                    {
                        appended += 1;
                        woken.extend(item.destinations.iter().cloned());
                        woken.insert(crate::CLOUD.into());
                    }
                    abort = r.as_ref().err().filter(|e| e.aborts_batch()).cloned();
                    done(reply, r)
                }
                Command::FhirGet(FhirGet { id }, reply) => done(reply, tx.fhir_patient(&id)),
                Command::FhirFind(
                    FhirFind {
                        identifier,
                        family,
                        birth_date,
                    },
                    reply,
                ) => done(
                    reply,
                    tx.fhir_find(
                        identifier.as_deref(),
                        family.as_deref(),
                        birth_date.as_deref(),
                    ),
                ),
                Command::FhirSeen(
                    FhirSeen {
                        patient,
                        identifier,
                        insert,
                    },
                    reply,
                ) => {
                    let r = tx.fhir_seen(&patient, identifier.as_deref(), insert, now);
                    abort = r.as_ref().err().filter(|e| e.aborts_batch()).cloned();
                    done(reply, r)
                }
                Command::FhirEdit(FhirEdit { id, changes, by }, reply) => {
                    let r = tx.fhir_edit(&id, &changes, &by, now);
                    if matches!(r, Ok(true)) {
                        woken.insert(crate::connectors::fhir::DESTINATION.into());
                    }
                    abort = r.as_ref().err().filter(|e| e.aborts_batch()).cloned();
                    done(reply, r)
                }
                Command::SetRoomHold(SetRoomHold { room, hold, by }, reply) => {
                    let r = tx.set_room_hold(&room, hold, &by, now);
                    woken.insert(crate::CLOUD.into());
                    abort = r.as_ref().err().filter(|e| e.aborts_batch()).cloned();
                    done(reply, r)
                }
                Command::ListRoomHolds(ListRoomHolds, reply) => done(reply, tx.room_holds()),
                Command::FhirWritten(FhirWritten { sent, stored }, reply) => {
                    let r = tx.fhir_written(&sent, &stored, now);
                    abort = r.as_ref().err().filter(|e| e.aborts_batch()).cloned();
                    done(reply, r)
                }
                Command::FhirConflicts(FhirConflicts { all }, reply) => {
                    done(reply, tx.fhir_conflicts(all))
                }
                Command::FhirResolve(FhirResolve { id, choices, by }, reply) => {
                    let r = tx.fhir_resolve(id, &choices, &by, now);
                    if matches!(r, Ok((_, true))) {
                        woken.insert(crate::connectors::fhir::DESTINATION.into());
                    }
                    abort = r.as_ref().err().filter(|e| e.aborts_batch()).cloned();
                    done(reply, r)
                }
                Command::FhirState(FhirState { key, set }, reply) => {
                    let r = match set {
                        Some(v) => tx.set_fhir_state(&key, &v).map(|()| Some(v)),
                        None => tx.fhir_state(&key),
                    };
                    abort = r.as_ref().err().filter(|e| e.aborts_batch()).cloned();
                    done(reply, r)
                }
                Command::ListNotices(ListNotices { all, limit }, reply) => {
                    done(reply, tx.notices(all, limit))
                }
                Command::RaiseNotice(
                    RaiseNotice {
                        kind,
                        text,
                        item,
                        state,
                    },
                    reply,
                ) => {
                    let r = tx.notice(&kind, &text, now).and_then(|()| {
                        if let Some(item) = &item {
                            tx.append(item, now)?;
                            appended += 1;
                            woken.extend(item.destinations.iter().cloned());
                        }
                        match &state {
                            Some((k, v)) => tx.set_fhir_state(k, v),
                            None => Ok(()),
                        }
                    });
                    abort = r.as_ref().err().filter(|e| e.aborts_batch()).cloned();
                    done(reply, r)
                }
                Command::QueueLink(
                    QueueLink {
                        entry,
                        demographics,
                        appointment_ref,
                    },
                    reply,
                ) => {
                    let patient = demographics.is_some();
                    let r = tx
                        .queue_link(entry, demographics, appointment_ref, now)
                        .and_then(|e| {
                            // A walk-in whose patient the EHR just registered gets its visit.
                            let register = self.settings.registration.as_ref();
                            if let Some(item) = register
                                .filter(|_| patient)
                                .and_then(|p| p.on_patient(&e, now))
                            {
                                tx.append(&item, now)?;
                                woken.extend(item.destinations);
                            }
                            Ok(e)
                        });
                    woken.insert(crate::CLOUD.into());
                    abort = r.as_ref().err().filter(|e| e.aborts_batch()).cloned();
                    done(reply, r)
                }
                Command::RaisingFlags(RaisingFlags, reply) => done(reply, tx.raising_flags()),
                Command::AckNotice(AckNotice { id, by }, reply) => {
                    let r = tx.acknowledge(id, &by, now);
                    abort = r.as_ref().err().filter(|e| e.aborts_batch()).cloned();
                    done(reply, r)
                }
                Command::Ping(Ping, reply) => done(reply, Ok(())),
                Command::Reconfigure(Reconfigure(settings), reply) => {
                    store_zone = Some(settings.zone.clone());
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
        if let Some(zone) = store_zone {
            self.store.set_zone(zone);
        }
        match &outcome {
            None => {
                METRICS.commit_latency.observe(started.elapsed());
                METRICS.journal_appends.add(appended);
                METRICS.deliveries.add(counts.delivered);
                METRICS.retries.add(counts.retries);
                METRICS.dead_letters.add(counts.dead);
                for destination in &woken {
                    outbox_signal(destination).notify_one();
                }
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

/// Tells the EHR about a queue change, as configured, in the change's own transaction: the ADT
/// of a call (`ehr-mllp`) and the visit's Encounter notice (`ehr-fhir`). Answers the entry.
fn announce(
    tx: &mut store::Batch<'_>,
    settings: &Settings,
    entry: crate::queue::Entry,
    action: &crate::queue::Action,
    now: i64,
    woken: &mut BTreeSet<String>,
) -> Result<crate::queue::Entry, JournalError> {
    let hl7 = match action {
        crate::queue::Action::Call { .. } => settings
            .call_notice
            .as_ref()
            .and_then(|(t, f)| crate::connectors::hl7v2::notice::called(&entry, *t, f, now)),
        _ => None,
    };
    let fhir = settings.encounter_notice.as_ref().and_then(|facility| {
        crate::connectors::fhir::encounter::notice(&entry, action, facility, now)
    });
    for item in hl7.into_iter().chain(fhir) {
        tx.append(&item, now)?;
        woken.extend(item.destinations);
    }
    Ok(entry)
}

#[derive(Default)]
struct Outcome {
    delivered: u64,
    retries: u64,
    dead: u64,
}

#[cfg(test)]
mod tests;
