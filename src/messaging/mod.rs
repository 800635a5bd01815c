//! Patient messaging: the gateway itself tells patients about their queue and appointments
//! (`you_are_next`, `appointment_cancelled`, `appointment_rescheduled`, and what other parts
//! notify) by SMS, email or voice, through several providers per channel.
//!
//! A queue notification becomes a row here in the transaction that commits its
//! `patient.notification` event ([`Notifier`], a queue [`TxHook`]): the routes planned from
//! the patient's contact details (the check-in's, else the EHR's cached Patient) and the
//! templates, or the reason nothing is sent. A planned one is an outbox row of destination
//! [`DESTINATION`] until a provider took it; the supervised [`DelivererSpawn`] sends it
//! through the first provider of its first route that takes it, then the next ones, and
//! records every attempt. Quiet hours hold a message in its row until they end.
//!
//! A failed or expired receipt puts the notification back in line, in the receipt's
//! transaction, for the providers and routes that have not taken it yet; so does a message
//! with no receipt once the validity its provider was told has passed (`LapseOverdue`, from
//! the stored times). Claimed rows go side by side, one patient's in order, so that an SMPP
//! link's window fills. Providers whose
//! receipts stop arriving (`receipt_watch`) are opened like failing ones; `prefer = "cheapest"`
//! orders a channel's providers by price above a delivery-rate floor; `max_per_second` is a
//! token bucket per provider. Voice goes through HTTP call APIs or SIP (`sip_call`).
//!
//! **Invariant:** one notification per event id, and a notification a provider took is never
//! handed to another unless its receipt said it failed or expired, or its validity passed
//! with no receipt; a provider is asked at most once per route; a resent outbox row whose
//! notification was sent is only marked done; a delivered notification stays delivered.
//! **Invariant:** no phone number, address or message text reaches a log or a cloud event.

pub mod config;
pub mod http;
pub mod protocol;
pub mod sip;
pub mod sip_call;
pub mod smpp;
pub mod smpp_link;
pub mod smtp;
pub mod store;

use crate::connectors::fhir::store::{PatientFilter, synced_patients};
use crate::journal::{self, Claim, Delivered, Failed, JournalError, JournalWriter, OutboxRow, Tx};
use crate::queue::{CheckIn, Entry, Notification, TxHook};
use crate::supervisor::{HealthState, Running, Spawn, Supervisor, link};
use actix::Addr;
use config::{Channel, MessagingConfig, ProviderKind};
use protocol::{Fields, Plan, Reach};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
pub use store::{BULK_DESTINATION, DESTINATION};
use tokio::sync::watch;

/// The supervisor's name for the deliverer.
pub const NAME: &str = "messaging";

/// Why a provider did not take a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The provider cannot be reached or failed: another provider, or a later try, may work.
    #[error("{0}")]
    Unavailable(String),
    /// The provider refused this message (its address, its content): this route is done.
    #[error("{0}")]
    Refused(String),
}

/// Turns queue notifications into messages, on the journal writer's thread.
pub struct Notifier {
    pub config: Arc<MessagingConfig>,
    pub zone: jiff::tz::TimeZone,
    pub facility: String,
}

impl TxHook for Notifier {
    fn on_check_in(
        &self,
        tx: &mut Tx<'_>,
        entry: &Entry,
        check_in: &CheckIn,
    ) -> Result<(), JournalError> {
        match &check_in.contact {
            Some(c) => store::keep_contact(tx, entry.id, &Reach::from_check_in(c), tx.now()),
            None => Ok(()),
        }
    }

    fn on_notification(&self, tx: &mut Tx<'_>, n: &Notification<'_>) -> Result<(), JournalError> {
        let now = tx.now();
        let reach = match store::contact(tx, n.entry.id)? {
            Some(r) => r,
            None => self.ehr_reach(tx, n.entry)?,
        };
        let extra = |key: &str| n.extra.iter().find(|(k, _)| *k == key).map(|(_, v)| v);
        let minutes = |key: &str| extra(key).and_then(|v| v.as_i64()).map(|m| m.to_string());
        let fields = Fields {
            ticket: &n.entry.ticket,
            queue: &n.entry.queue,
            new_start: n.new_start,
            facility: &self.facility,
            wait_min: minutes("estimated_wait_min"),
            delay_min: minutes("delayed_by_min"),
            pickup_at: extra("estimated_pickup_at")
                .and_then(|v| v.as_str()?.parse::<jiff::Timestamp>().ok())
                .map(|t| t.to_zoned(self.zone.clone()).strftime("%H:%M").to_string()),
        };
        let plan = match protocol::plan(&self.config, &reach, n.reason, &fields) {
            Plan::Send(routes) => Ok(routes),
            Plan::Refused(why) => Err(why),
        };
        let not_before = if protocol::waits_for_quiet_hours(n.reason) {
            protocol::not_before(self.config.quiet_hours.as_ref(), &self.zone, now)
        } else {
            now
        };
        if let Err(why) = &plan {
            // The reason is about the patient's details in general terms, never the details.
            tracing::info!(entry = n.entry.id, kind = n.reason, reason = %why, "notification refused");
        }
        let recorded = store::NewNotification {
            event_id: n.event_id,
            entry_id: n.entry.id,
            ticket: &n.entry.ticket,
            queue: &n.entry.queue,
            kind: n.reason,
            plan,
            not_before,
        };
        store::record_notification(tx, &recorded, now).map(|_| ())
    }
}

impl Notifier {
    /// The patient's details as the EHR's cached Patient has them, if the entry names one.
    fn ehr_reach(&self, tx: &mut Tx<'_>, entry: &Entry) -> Result<Reach, JournalError> {
        let Some(d) = &entry.demographics else {
            return Ok(Reach::default());
        };
        let filter = PatientFilter {
            id: Some(&d.patient_id),
            ..PatientFilter::ALL
        };
        Ok(synced_patients(tx, &filter)?
            .first()
            .map(|p| Reach::from_patient(&p.synced, self.config.opt_out_extension.as_deref()))
            .unwrap_or_default())
    }
}

/// A notification and its attempts (see [`store::pending`]).
#[derive(Debug)]
pub struct LoadPending(pub i64);

/// Records one attempt (see [`store::record_attempt`]).
#[derive(Debug)]
pub struct RecordAttempt {
    pub outcome: store::Outcome,
    pub delivered_on_take: bool,
}

/// A notification no route can carry: failed (or expired, as its last receipt said), for good.
#[derive(Debug)]
pub struct FailNotification {
    pub id: i64,
    pub status: store::Status,
    pub reason: String,
}

/// How many messages a provider took wait for their receipt (see
/// [`store::awaiting_receipts`]).
#[derive(Debug)]
pub struct AwaitingReceipts(pub String);

/// Each provider's delivery rate over the last `days` days (see [`store::delivery_rates`]).
#[derive(Debug)]
pub struct DeliveryRates {
    pub days: u32,
}

/// Queues what quiet hours held and is now due; answers when the next held one is due.
#[derive(Debug)]
pub struct ReleaseHeld;

/// The entry of each of these notifications (see [`store::entries_of`]).
#[derive(Debug)]
pub struct EntriesOf(pub Vec<i64>);

/// Sends again, elsewhere, what a provider took and can no longer deliver (see
/// [`store::lapse_overdue`]).
#[derive(Debug)]
pub struct LapseOverdue;

/// A delivery receipt from a provider (see [`store::receive`]); answers whether it named an
/// attempt that waited for one.
#[derive(Debug)]
pub struct ApplyReceipt {
    pub provider: String,
    pub of: store::ReceiptFor,
    pub receipt: protocol::Receipt,
    /// A call's length in started minutes, when its receipt gives it.
    pub minutes: Option<u32>,
}

/// What providers took over the last `days` days (see [`store::taken_since`]).
#[derive(Debug)]
pub struct TakenSince {
    pub days: u32,
}

/// The newest notifications, of one ticket when given (staff's view).
#[derive(Debug)]
pub struct ListNotifications {
    pub ticket: Option<String>,
    pub limit: usize,
}

crate::journal_work!(
    LoadPending,
    RecordAttempt,
    FailNotification,
    AwaitingReceipts,
    DeliveryRates,
    ApplyReceipt,
    TakenSince,
    ReleaseHeld,
    LapseOverdue,
    EntriesOf,
    ListNotifications
);

impl journal::Work for LoadPending {
    type Output = Option<store::Pending>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::pending(tx, self.0)
    }
}

impl journal::Work for RecordAttempt {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<(), JournalError> {
        let now = tx.now();
        store::record_attempt(tx, &self.outcome, self.delivered_on_take, now)
    }
}

impl journal::Work for FailNotification {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<(), JournalError> {
        let now = tx.now();
        store::fail_notification(tx, self.id, self.status, &self.reason, now)
    }
}

impl journal::Work for AwaitingReceipts {
    type Output = (u32, Option<i64>);
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::awaiting_receipts(tx, &self.0)
    }
}

impl journal::Work for DeliveryRates {
    type Output = BTreeMap<String, f64>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        let since = tx.now() - i64::from(self.days) * 86_400_000;
        store::delivery_rates(tx, since)
    }
}

impl journal::Work for ReleaseHeld {
    type Output = Option<i64>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        let now = tx.now();
        if store::release_held(tx, now)? > 0 {
            tx.wake(DESTINATION);
            tx.wake(BULK_DESTINATION);
        }
        store::next_release(tx)
    }
}

impl journal::Work for EntriesOf {
    type Output = BTreeMap<i64, i64>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::entries_of(tx, &self.0)
    }
}

impl journal::Work for LapseOverdue {
    type Output = usize;
    fn run(self, tx: &mut Tx<'_>) -> Result<usize, JournalError> {
        let now = tx.now();
        let lapsed = store::lapse_overdue(tx, now)?;
        if lapsed > 0 {
            tx.wake(DESTINATION);
            tx.wake(BULK_DESTINATION);
        }
        Ok(lapsed)
    }
}

impl journal::Work for ApplyReceipt {
    type Output = bool;
    fn run(self, tx: &mut Tx<'_>) -> Result<bool, JournalError> {
        let now = tx.now();
        let applied = store::receive(
            tx,
            &self.provider,
            &self.of,
            self.receipt,
            self.minutes,
            now,
        )?;
        if !applied {
            tracing::info!(provider = %self.provider, "receipt for no waiting message, kept");
        }
        Ok(applied)
    }
}

impl journal::Work for TakenSince {
    type Output = Vec<protocol::Taken>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        let since = tx.now() - i64::from(self.days) * 86_400_000;
        store::taken_since(tx, since)
    }
}

impl journal::Work for ListNotifications {
    type Output = Vec<store::NotificationView>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::notifications(tx, self.ticket.as_deref(), self.limit)
    }
}

/// A configured provider, ready to send.
enum Provider {
    Smtp(smtp::Smtp),
    Http(http::HttpApi),
    Smpp(smpp_link::Smpp),
    Sip(sip_call::Sip),
}

impl Provider {
    /// Sends notification `id` of `kind` along `route`.
    async fn send(
        &self,
        id: i64,
        kind: &str,
        route: &protocol::Route,
    ) -> Result<Option<String>, SendError> {
        match self {
            Provider::Smtp(s) => s.send(id, route).await,
            Provider::Http(h) => h.send(id, route).await,
            Provider::Smpp(s) => s.send(route).await,
            Provider::Sip(s) => s.call(route, kind).await,
        }
    }

    /// Whether taking a message is all there is to know: SMTP and SIP have no receipts (a
    /// SIP call returns once the prompt was played to the callee).
    fn delivered_on_take(&self) -> bool {
        matches!(self, Provider::Smtp(_) | Provider::Sip(_))
    }

    /// How long a message it took may take to deliver, when a receipt tells the outcome.
    fn validity_ms(&self) -> Option<i64> {
        match self {
            Provider::Smpp(s) => s.validity_ms(),
            Provider::Http(h) => h.validity_ms(),
            _ => None,
        }
    }
}

/// Starts the deliverer of the `messaging` outbox.
pub struct DelivererSpawn {
    pub config: Arc<MessagingConfig>,
    /// The folder the config file's relative paths start from.
    pub folder: PathBuf,
    pub journal: Addr<JournalWriter>,
}

impl Spawn for DelivererSpawn {
    fn kind(&self) -> &'static str {
        "messaging"
    }

    fn spawn(&self, name: &str, supervisor: Addr<Supervisor>) -> Box<dyn Running> {
        let (config, folder, journal) = (
            self.config.clone(),
            self.folder.clone(),
            self.journal.clone(),
        );
        link::start(name, supervisor, Duration::from_secs(2), move |link| {
            Box::pin(async move {
                let deliverer = Deliverer::new(config, &folder, journal, link.health)?;
                Rc::new(deliverer).run(link.shutdown).await;
                Ok(())
            })
        })
    }
}

struct Deliverer {
    config: Arc<MessagingConfig>,
    providers: BTreeMap<String, Provider>,
    /// Each provider's circuit breaker (in memory: a restart gives every provider a new try).
    breakers: RefCell<BTreeMap<String, crate::breaker::Breaker>>,
    /// The rate limits of the providers that have one.
    buckets: RefCell<BTreeMap<String, protocol::TokenBucket>>,
    /// Each provider's delivery rate over the last 30 days, read once a round for
    /// `prefer = "cheapest"`.
    rates: RefCell<BTreeMap<String, f64>>,
    journal: Addr<JournalWriter>,
    health: link::Health,
}

/// How many notifications are taken from the outbox at once.
const BATCH: usize = 16;
/// How many bulk notifications are taken at once, after the urgent ones.
const BULK_BATCH: usize = 4;
/// The longest wait between two looks at the outbox and the held notifications: a failed
/// row's retry comes due without a wake-up, so the outbox is looked at this often.
const IDLE: Duration = Duration::from_secs(1);

impl Deliverer {
    fn new(
        config: Arc<MessagingConfig>,
        folder: &Path,
        journal: Addr<JournalWriter>,
        health: link::Health,
    ) -> Result<Deliverer, String> {
        let mut providers = BTreeMap::new();
        for p in &config.providers {
            let timeout = Duration::from_millis(p.timeout_ms);
            let provider = match p.kind() {
                Some(ProviderKind::Smtp(s)) => Provider::Smtp(
                    smtp::Smtp::new(s, timeout, |f| crate::settings::resolve(folder, f))
                        .map_err(|e| format!("messaging provider {}: {e}", p.name))?,
                ),
                Some(ProviderKind::Http(h)) => Provider::Http(
                    http::HttpApi::new(
                        &p.name,
                        h,
                        timeout,
                        config.receipt_base_url.as_deref(),
                        |f| crate::settings::resolve(folder, f),
                    )
                    .map_err(|e| format!("messaging provider {}: {e}", p.name))?,
                ),
                Some(ProviderKind::Smpp(s)) => {
                    let path = crate::settings::resolve(folder, &s.password_file);
                    let password = std::fs::read_to_string(&path)
                        .map_err(|e| {
                            format!("messaging provider {}: {}: {e}", p.name, path.display())
                        })?
                        .trim_end_matches(['\r', '\n'])
                        .to_string();
                    Provider::Smpp(smpp_link::Smpp::start(
                        &p.name,
                        s,
                        password,
                        timeout,
                        journal.clone(),
                    ))
                }
                Some(ProviderKind::Sip(s)) => Provider::Sip(
                    sip_call::Sip::new(s, timeout, |f| crate::settings::resolve(folder, f))
                        .map_err(|e| format!("messaging provider {}: {e}", p.name))?,
                ),
                None => continue,
            };
            providers.insert(p.name.clone(), provider);
        }
        let buckets = config
            .providers
            .iter()
            .filter_map(|p| {
                let rate = p.max_per_second?;
                Some((
                    p.name.clone(),
                    protocol::TokenBucket::new(rate, journal::now_ms()),
                ))
            })
            .collect();
        Ok(Deliverer {
            config,
            providers,
            breakers: RefCell::default(),
            buckets: RefCell::new(buckets),
            rates: RefCell::default(),
            journal,
            health,
        })
    }

    async fn run(self: Rc<Self>, mut shutdown: watch::Receiver<bool>) {
        // Rows left in flight by a run that ended mid-send go back in line; their
        // notifications tell whether a provider took them meanwhile.
        for destination in [DESTINATION, BULK_DESTINATION] {
            journal::put_back_in_flight(
                &self.journal,
                destination,
                "the messaging deliverer stopped while sending".into(),
            )
            .await;
        }
        let signal = journal::signal(&self.journal, DESTINATION).await;
        let bulk_signal = journal::signal(&self.journal, BULK_DESTINATION).await;
        self.health.report(HealthState::Healthy, None);
        let mut looked: Option<std::time::Instant> = None;
        loop {
            // Receipts that stop and validities that pass are judged in seconds: looking once
            // a second is enough however busy the deliverer is, and costs a busy one nothing.
            let look = looked.is_none_or(|at| at.elapsed() >= IDLE);
            if look {
                looked = Some(std::time::Instant::now());
                self.watch_receipts().await;
                match journal::ask(&self.journal, LapseOverdue).await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(
                        messages = n,
                        "no receipt within their validity: the next providers send them"
                    ),
                    Err(e) => tracing::warn!(error = %e, "overdue receipts not looked at"),
                }
            }
            let next_release = match journal::ask(&self.journal, ReleaseHeld).await {
                Ok(at) => at,
                Err(e) => {
                    tracing::warn!(error = %e, "held notifications not released");
                    None
                }
            };
            // What a patient in the waiting room or waiting for a result needs goes first;
            // bulk notices only fill the rest of a batch, a few at a time, so that an urgent
            // one never waits behind many of them.
            let urgent = self.claim(DESTINATION, BATCH).await;
            let bulk = if urgent.len() < BATCH {
                self.claim(BULK_DESTINATION, BULK_BATCH).await
            } else {
                Vec::new()
            };
            // Each batch is routed on the rates as they stand (the last receipt counts).
            if self.config.routing.prefer == config::Prefer::Cheapest
                && !(urgent.is_empty() && bulk.is_empty())
            {
                match journal::ask(&self.journal, DeliveryRates { days: 30 }).await {
                    Ok(rates) => *self.rates.borrow_mut() = rates,
                    Err(e) => tracing::warn!(error = %e, "delivery rates not read"),
                }
            }
            if urgent.is_empty() && bulk.is_empty() {
                let wait = next_release
                    .map(|at| {
                        Duration::from_millis((at - journal::now_ms()).clamp(0, 30_000) as u64)
                    })
                    .unwrap_or(IDLE)
                    .min(IDLE);
                tokio::select! {
                    _ = signal.notified() => {}
                    _ = bulk_signal.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return,
                }
                continue;
            }
            // The urgent ones take a rate limit's tokens before the bulk.
            for rows in [urgent, bulk] {
                self.deliver_side_by_side(rows, &shutdown).await;
                if *shutdown.borrow() {
                    return;
                }
            }
        }
    }

    /// Sends `rows` side by side, so that an SMPP provider's window fills with different
    /// patients' messages; one patient's notifications go one after the other, in order.
    /// A shutdown lets the messages being sent finish and starts no other.
    async fn deliver_side_by_side(
        self: &Rc<Self>,
        rows: Vec<(&'static str, OutboxRow)>,
        shutdown: &watch::Receiver<bool>,
    ) {
        if rows.is_empty() {
            return;
        }
        let ids = rows
            .iter()
            .filter_map(|(_, r)| notification_of(r))
            .collect();
        let entries = match journal::ask(&self.journal, EntriesOf(ids)).await {
            Ok(entries) => entries,
            Err(e) => {
                // Without the entries, each row goes on its own: order is only lost
                // between one patient's notifications claimed together.
                tracing::warn!(error = %e, "entries of notifications not read");
                BTreeMap::new()
            }
        };
        let mut chains: BTreeMap<(bool, i64), Vec<(&'static str, OutboxRow)>> = BTreeMap::new();
        for (destination, row) in rows {
            let key = match notification_of(&row).and_then(|id| entries.get(&id)) {
                Some(entry) => (true, *entry),
                None => (false, row.id),
            };
            chains.entry(key).or_default().push((destination, row));
        }
        let mut tasks = tokio::task::JoinSet::new();
        for chain in chains.into_values() {
            let (this, shutdown) = (self.clone(), shutdown.clone());
            tasks.spawn_local(async move {
                for (destination, row) in chain {
                    if *shutdown.borrow() {
                        return;
                    }
                    this.deliver(destination, &row).await;
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done
                && e.is_panic()
            {
                // As when the deliverer sent one at a time: its supervisor restarts it.
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }

    /// Up to `limit` deliverable rows of `destination`.
    async fn claim(
        &self,
        destination: &'static str,
        limit: usize,
    ) -> Vec<(&'static str, OutboxRow)> {
        let claim = Claim {
            destination: destination.into(),
            limit,
        };
        match journal::ask(&self.journal, claim).await {
            Ok(rows) => rows.into_iter().map(|r| (destination, r)).collect(),
            Err(e) => {
                tracing::error!(error = %e, destination, "cannot claim notifications");
                Vec::new()
            }
        }
    }

    /// Sends one notification through its routes and their providers, in order, until one
    /// takes it; settles its outbox row.
    async fn deliver(&self, destination: &'static str, row: &OutboxRow) {
        let Some(id) = notification_of(row) else {
            self.settle(
                destination,
                row.id,
                Err(("not a notification row".into(), true)),
            )
            .await;
            return;
        };
        let pending = match journal::ask(&self.journal, LoadPending(id)).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                self.settle(
                    destination,
                    row.id,
                    Err((format!("notification {id} is gone"), true)),
                )
                .await;
                return;
            }
            Err(e) => {
                self.settle(destination, row.id, Err((e.to_string(), false)))
                    .await;
                return;
            }
        };
        if pending.status != store::Status::Queued {
            // Taken (or refused) before: a resent row changes nothing.
            self.settle(destination, row.id, Ok(())).await;
            return;
        }
        // A route a provider refused (its address, its text) is not tried again.
        let mut refused: BTreeSet<usize> = pending
            .attempts
            .iter()
            .filter(|a| a.status == "refused")
            .map(|a| a.route)
            .collect();
        // A provider that took the message is not asked again for its route: it is here
        // again only because its receipt said failed or expired, or never came in time.
        let taken: BTreeSet<(usize, &str)> = pending
            .attempts
            .iter()
            .filter(|a| {
                matches!(
                    a.status.as_str(),
                    "sent" | "delivered" | "failed" | "expired" | "lapsed"
                )
            })
            .map(|a| (a.route, a.provider.as_str()))
            .collect();
        let mut unavailable = Vec::new();
        for (route_index, route) in pending.routes.iter().enumerate() {
            let segments = match route.channel {
                Channel::Sms => protocol::segments(&route.body),
                _ => 1,
            };
            let order = protocol::order(
                self.config.providers_of(route.channel),
                &self.config.routing,
                &self.rates.borrow(),
                route.channel,
                segments,
            );
            for provider_config in order {
                if refused.contains(&route_index) {
                    break;
                }
                let name = provider_config.name.as_str();
                if taken.contains(&(route_index, name)) {
                    continue;
                }
                let Some(provider) = self.providers.get(name) else {
                    continue;
                };
                if !self.breaker(name, |b| b.admit(journal::now_ms())) {
                    unavailable.push(format!("{name}: circuit open"));
                    continue;
                }
                self.rate_limit(name).await;
                let result = provider.send(id, &pending.kind, route).await;
                match &result {
                    Ok(_) | Err(SendError::Refused(_)) => self.breaker(name, |b| b.success()),
                    Err(SendError::Unavailable(_)) => {
                        let open_ms = provider_config.breaker_open_s.saturating_mul(1000) as i64;
                        let failures = provider_config.breaker_failures;
                        if self.breaker(name, |b| b.failure(journal::now_ms(), failures, open_ms)) {
                            tracing::warn!(
                                provider = name,
                                "circuit opened: the next provider takes its messages"
                            );
                        }
                    }
                }
                match &result {
                    Ok(_) => tracing::info!(
                        notification = id,
                        provider = name,
                        channel = route.channel.as_str(),
                        "notification sent"
                    ),
                    Err(e) => tracing::warn!(
                        notification = id,
                        provider = name,
                        channel = route.channel.as_str(),
                        error = %e,
                        "provider did not take the notification"
                    ),
                }
                let record = RecordAttempt {
                    outcome: store::Outcome {
                        notification: id,
                        route: route_index,
                        channel: route.channel.as_str(),
                        provider: name.to_string(),
                        result: result.clone(),
                        segments,
                        cost: protocol::price(provider_config, route.channel, segments),
                        minute_price: match route.channel {
                            Channel::Voice => provider_config.price_per_minute,
                            _ => 0.0,
                        },
                        validity_ms: provider.validity_ms(),
                    },
                    delivered_on_take: provider.delivered_on_take(),
                };
                if let Err(e) = journal::ask(&self.journal, record).await {
                    // Without the journal the outcome cannot be kept: the row is retried,
                    // and a message a provider took may then be sent again.
                    tracing::error!(notification = id, error = %e, "attempt not recorded");
                }
                match result {
                    Ok(_) => {
                        self.health.report(HealthState::Healthy, None);
                        self.settle(destination, row.id, Ok(())).await;
                        return;
                    }
                    Err(SendError::Refused(_)) => {
                        refused.insert(route_index);
                    }
                    Err(SendError::Unavailable(e)) => unavailable.push(format!("{name}: {e}")),
                }
            }
        }
        if unavailable.is_empty() {
            // Every route was refused or failed by its receipt, or none has a provider:
            // nothing later can help. The last receipt names how it ended.
            // A message that lapsed ended as an expired one does.
            let last_failure =
                protocol::last_failure(pending.attempts.iter().map(|a| match a.status.as_str() {
                    "lapsed" => "expired",
                    s => s,
                }));
            let fail = match last_failure {
                Some(receipt) => FailNotification {
                    id,
                    status: match receipt {
                        protocol::Receipt::Expired => store::Status::Expired,
                        _ => store::Status::Failed,
                    },
                    reason: format!("receipt: {}", receipt.as_str()),
                },
                None => FailNotification {
                    id,
                    status: store::Status::Failed,
                    reason: "every route was refused".into(),
                },
            };
            if let Err(e) = journal::ask(&self.journal, fail).await {
                tracing::error!(notification = id, error = %e, "failure not recorded");
                self.settle(destination, row.id, Err((e.to_string(), false)))
                    .await;
                return;
            }
            self.settle(destination, row.id, Ok(())).await;
            return;
        }
        let why = unavailable.join("; ");
        self.health.report(HealthState::Degraded, Some(why.clone()));
        self.settle(destination, row.id, Err((why, false))).await;
    }

    /// Opens the breaker of each watched provider whose receipts stopped arriving (see
    /// [`protocol::receipts_stopped`]); an open or probing breaker is left as it is, so that
    /// its probe can show the receipts are back.
    async fn watch_receipts(&self) {
        for p in &self.config.providers {
            let Some(watch) = &p.receipt_watch else {
                continue;
            };
            if self.breaker(&p.name, |b| b.as_str()) != "closed" {
                continue;
            }
            let (waiting, oldest) =
                match journal::ask(&self.journal, AwaitingReceipts(p.name.clone())).await {
                    Ok(found) => found,
                    Err(e) => {
                        tracing::warn!(provider = %p.name, error = %e, "receipts not counted");
                        continue;
                    }
                };
            let now = journal::now_ms();
            if protocol::receipts_stopped(watch, waiting, oldest, now) {
                let open_ms = p.breaker_open_s.saturating_mul(1000) as i64;
                // One failure with a threshold of one opens a closed breaker.
                self.breaker(&p.name, |b| b.failure(now, 1, open_ms));
                tracing::warn!(
                    provider = %p.name,
                    waiting,
                    "circuit opened: receipts stopped arriving; the next provider takes its messages"
                );
                self.health.report(
                    HealthState::Degraded,
                    Some(format!("{}: receipts stopped arriving", p.name)),
                );
            }
        }
    }

    /// Waits for a token of the provider's rate limit, if it has one.
    async fn rate_limit(&self, name: &str) {
        loop {
            let wait = match self.buckets.borrow_mut().get_mut(name) {
                None => return,
                Some(bucket) => match bucket.take(journal::now_ms()) {
                    Ok(()) => return,
                    Err(ms) => ms,
                },
            };
            tokio::time::sleep(Duration::from_millis(wait.max(1) as u64)).await;
        }
    }

    /// Runs `f` on a provider's breaker.
    fn breaker<T>(&self, name: &str, f: impl FnOnce(&mut crate::breaker::Breaker) -> T) -> T {
        f(self
            .breakers
            .borrow_mut()
            .entry(name.to_string())
            .or_default())
    }

    /// Marks an outbox row delivered (`Ok`) or failed (`Err((why, permanent))`).
    async fn settle(&self, destination: &str, row: i64, result: Result<(), (String, bool)>) {
        let asked = match result {
            Ok(()) => journal::ask(&self.journal, Delivered(vec![row]))
                .await
                .map(|_| ()),
            Err((error, permanent)) => journal::ask(
                &self.journal,
                Failed {
                    destination: destination.into(),
                    ids: Some(vec![row]),
                    error,
                    permanent,
                },
            )
            .await
            .map(|_| ()),
        };
        if let Err(e) = asked {
            tracing::error!(row, error = %e, "notification row not settled");
        }
    }
}

/// The notification an outbox row sends.
fn notification_of(row: &OutboxRow) -> Option<i64> {
    serde_json::from_slice::<serde_json::Value>(&row.payload)
        .ok()
        .and_then(|v| v["notification"].as_i64())
}
