//! Payments: co-pays and balances the front desk asks of a patient on a queue entry, taken by
//! payment processors behind a Stripe-style API (`protocol.rs`, pure). The request is an
//! outbox row of destination [`DESTINATION`] committed with the `requested` payment
//! (`RequestPayment`); the connector (`PaymentsSpawn`) creates the PaymentIntent on the first
//! processor whose breaker admits it, with an idempotency key derived from that row, and
//! records the intent's ids (`Opened`). The processor's signed webhook (`Webhook`) or, when
//! none came in time, the connector's poll (`Resolve`) settles it: confirmed, the entry is
//! paid and the PMS is told with a DFT^P03; failed, the entry keeps its place, marked
//! `payment_pending`, and staff are told the alternatives.
//!
//! **Invariant:** card data never reaches the gateway; the journal keeps the processor's ids,
//! the client secret and statuses only. A payment is confirmed, posted to the PMS and
//! announced once, whatever repeats (webhooks, polls, restarts). A payment never moves its
//! entry in the queue.

pub mod config;
pub mod protocol;
pub mod store;

use crate::breaker::Breaker;
use crate::journal::{self, JournalError, JournalWriter, NewItem, OutboxRow, Settle, Tx, Work};
use crate::supervisor::link;
use crate::supervisor::{HealthState, Running, Spawn, Supervisor};
use actix::Addr;
use config::{PaymentsConfig, Pms, ProcessorConfig};
use protocol::{Answered, Intent, Method, Outcome};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use store::{Payment, Status};

/// The supervisor's name of the payments connector.
pub const NAME: &str = "payments";
/// The outbox destination of payment requests.
pub const DESTINATION: &str = "payments";
/// The notice kind telling the front desk a payment failed.
pub const NOTICE_FAILED: &str = "payment.failed";

/// What a settled payment does beyond its own row.
#[derive(Debug, Clone)]
pub struct Effects {
    /// MSH-4 of the DFT, the PaymentNotice's recipient.
    pub facility: String,
    pub pms: Pms,
    /// The EHR's patient identifier system (`[connectors.fhir] identifier_system`), naming
    /// the patient in a PaymentNotice.
    pub patient_system: Option<String>,
}

/// Asks the patient of a queue entry for `amount_cents`.
#[derive(Debug)]
pub struct RequestPayment {
    pub entry_id: i64,
    pub amount_cents: i64,
    pub currency: String,
    pub method: Method,
    /// A configured processor to ask first (the others follow in order).
    pub processor: Option<String>,
    pub by: String,
}

/// A payment by its reference.
#[derive(Debug)]
pub struct GetPayment {
    pub reference: String,
}

/// An entry's payments, newest first.
#[derive(Debug)]
pub struct GetPayments {
    pub entry_id: i64,
}

/// The latest payment of each of these entries that has one, for the board.
#[derive(Debug)]
pub struct ListPayments {
    pub entry_ids: Vec<i64>,
}

/// A processor holds the payment's intent.
#[derive(Debug)]
struct Opened {
    reference: String,
    processor: String,
    intent: Intent,
    poll_at: i64,
}

/// No processor could take a requested payment (`cause`: `unavailable` or `refused`).
#[derive(Debug)]
struct Unplaced {
    reference: String,
    cause: String,
    effects: Effects,
}

/// Open payments due to be asked about.
#[derive(Debug)]
struct Due {
    limit: usize,
}

/// What a poll found about an intent.
#[derive(Debug)]
struct Resolve {
    processor: String,
    intent: String,
    outcome: Outcome,
    /// When to ask again if it is still open.
    poll_at: i64,
    effects: Effects,
}

/// A processor's webhook whose signature was verified.
#[derive(Debug)]
pub struct Webhook {
    pub processor: String,
    pub event: protocol::Event,
    pub effects: Effects,
}

/// What a webhook did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// The same event came before: nothing changed.
    Duplicate,
    /// It changed the payment it names.
    Applied,
    /// Kept in the journal; it changed nothing (an event of no interest, an intent the
    /// gateway did not make, or a payment already there).
    Ignored,
}

/// A webhook refused for its signature, audited.
#[derive(Debug)]
pub struct RefuseWebhook {
    pub processor: String,
    pub reason: String,
}

crate::journal_work!(
    RequestPayment,
    GetPayment,
    GetPayments,
    ListPayments,
    Opened,
    Unplaced,
    Due,
    Resolve,
    Webhook,
    RefuseWebhook
);

/// What the outbox row carries to the connector.
#[derive(Debug, Serialize, Deserialize)]
struct Job {
    reference: String,
    entry_id: i64,
    amount_cents: i64,
    currency: String,
    method: Method,
    #[serde(default)]
    processor: Option<String>,
}

fn refused(msg: impl Into<String>) -> JournalError {
    JournalError::Rejected(msg.into())
}

impl Work for RequestPayment {
    type Output = Payment;
    fn run(self, tx: &mut Tx<'_>) -> Result<Payment, JournalError> {
        let now = tx.now();
        if !(1..=100_000_000).contains(&self.amount_cents) {
            return Err(refused("\"amount_cents\": 1 to 100000000"));
        }
        let currency = self.currency.to_ascii_lowercase();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(refused("\"currency\": an ISO 4217 code of three letters"));
        }
        let entry = crate::queue::store::queue_entry(tx, self.entry_id)?;
        if entry.closed_at.is_some() {
            return Err(refused(format!("entry {} is closed", entry.id)));
        }
        let reference = uuid::Uuid::now_v7().simple().to_string();
        let job = Job {
            reference: reference.clone(),
            entry_id: entry.id,
            amount_cents: self.amount_cents,
            currency: currency.clone(),
            method: self.method,
            processor: self.processor,
        };
        let item = NewItem {
            source: "payments".into(),
            source_id: None,
            kind: "payment.request".into(),
            key: format!("entry:{}", entry.id),
            schema: "clinic-gateway/payment.request@1".into(),
            payload: journal::to_json(&job)?.into_bytes(),
            reply: None,
            occurred_at: Some(now),
            destinations: vec![DESTINATION.into()],
        };
        tx.append(&item, now)?;
        let new = store::New {
            reference: &reference,
            entry_id: entry.id,
            amount_cents: self.amount_cents,
            currency: &currency,
            method: self.method.as_str(),
            by: &self.by,
        };
        store::request(tx, &new, now)
    }
}

impl Work for GetPayment {
    type Output = Option<Payment>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::by_ref(tx, &self.reference)
    }
}

impl Work for GetPayments {
    type Output = Vec<Payment>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::of_entry(tx, self.entry_id)
    }
}

impl Work for ListPayments {
    type Output = Vec<Payment>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::latest_of(tx, &self.entry_ids)
    }
}

impl Work for Opened {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<(), JournalError> {
        let now = tx.now();
        store::opened(
            tx,
            &self.reference,
            &self.processor,
            &self.intent.id,
            self.intent.client_secret.as_deref(),
            self.poll_at,
            now,
        )
        .map(|_| ())
    }
}

impl Work for Unplaced {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<(), JournalError> {
        let Some(p) = store::by_ref(tx, &self.reference)? else {
            return Ok(());
        };
        apply(tx, &p, &Outcome::Failed(self.cause), 0, &self.effects).map(|_| ())
    }
}

impl Work for Due {
    type Output = Vec<Payment>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        let now = tx.now();
        store::due(tx, now, self.limit)
    }
}

impl Work for Resolve {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<(), JournalError> {
        let Some(p) = store::by_intent(tx, &self.processor, &self.intent)? else {
            return Ok(());
        };
        apply(tx, &p, &self.outcome, self.poll_at, &self.effects).map(|_| ())
    }
}

impl Work for Webhook {
    type Output = Received;
    fn run(self, tx: &mut Tx<'_>) -> Result<Received, JournalError> {
        let now = tx.now();
        let e = &self.event;
        // The event is journaled by its id, reduced to ids and status: a second delivery of
        // the same event is known by the journal's idempotency and changes nothing.
        let payload = serde_json::json!({
            "event": e.id,
            "type": e.kind,
            "intent": e.intent.as_ref().map(|i| &i.id),
            "status": e.intent.as_ref().map(|i| &i.status),
        });
        let item = NewItem {
            source: format!("payments:{}", self.processor),
            source_id: Some(e.id.clone()),
            kind: "payment.webhook".into(),
            key: format!("processor:{}", self.processor),
            schema: "clinic-gateway/payment.webhook@1".into(),
            payload: journal::to_json(&payload)?.into_bytes(),
            reply: None,
            occurred_at: Some(now),
            destinations: Vec::new(),
        };
        if tx.append(&item, now)?.duplicate {
            return Ok(Received::Duplicate);
        }
        let (Some(outcome), Some(intent)) = (protocol::event_outcome(e), e.intent.as_ref()) else {
            return Ok(Received::Ignored);
        };
        let Some(p) = store::by_intent(tx, &self.processor, &intent.id)? else {
            return Ok(Received::Ignored);
        };
        if apply(tx, &p, &outcome, now, &self.effects)? {
            Ok(Received::Applied)
        } else {
            Ok(Received::Ignored)
        }
    }
}

impl Work for RefuseWebhook {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<(), JournalError> {
        let now = tx.now();
        let detail = serde_json::json!({ "processor": self.processor, "reason": self.reason });
        tx.audit(
            &format!("payments:{}", self.processor),
            "payment.webhook_refused",
            &detail.to_string(),
            now,
        )
    }
}

/// Settles `p` as `outcome` says, with what follows a change: the cloud event, and for a
/// confirmation the PMS posting, for a failure the front desk's notice. An open outcome asks
/// again at `poll_at`. Answers whether the payment changed.
fn apply(
    tx: &mut Tx<'_>,
    p: &Payment,
    outcome: &Outcome,
    poll_at: i64,
    effects: &Effects,
) -> Result<bool, JournalError> {
    let now = tx.now();
    let (status, cause) = match outcome {
        Outcome::Open => {
            store::poll_later(tx, p.id, poll_at)?;
            return Ok(false);
        }
        Outcome::Confirmed => (Status::Confirmed, None),
        Outcome::Failed(cause) => (Status::Failed, Some(cause.as_str())),
    };
    if !store::settle(tx, p.id, status, cause, now)? {
        return Ok(false);
    }
    let entry = crate::queue::store::queue_entry(tx, p.entry_id)?;
    let kind = match status {
        Status::Confirmed => "payment.confirmed",
        _ => "payment.failed",
    };
    tracing::info!(payment = p.id, entry = entry.id, processor = ?p.processor, %kind, cause = ?cause, "payment settled");
    let event = serde_json::json!({
        "payment": p.id,
        "entry": entry.id,
        "ticket": entry.ticket,
        "queue": entry.queue,
        "processor": p.processor,
        "intent": p.intent,
        "cause": cause,
    });
    tx.append(
        &NewItem {
            source: "payments".into(),
            source_id: None,
            kind: kind.into(),
            key: format!("queue:{}", entry.queue),
            schema: format!("clinic-gateway/{kind}@1"),
            payload: journal::to_json(&event)?.into_bytes(),
            reply: None,
            occurred_at: Some(now),
            destinations: vec![crate::CLOUD.into()],
        },
        now,
    )?;
    match status {
        Status::Confirmed => post_to_pms(tx, p, &entry, effects, now)?,
        _ => {
            let text = format!(
                "Ticket {} ({}): payment not completed ({}). The patient keeps their place: try another processor, another method, or let them pay later.",
                entry.ticket,
                entry.queue,
                cause.unwrap_or_default()
            );
            crate::notices::store::notice(tx, NOTICE_FAILED, &text, now)?;
        }
    }
    Ok(true)
}

/// The DFT^P03 (for the `ehr-mllp` outbox) or PaymentNotice (for `ehr-fhir`) of a confirmed
/// payment. Its id is the payment's, and the journal takes it once by that id.
fn post_to_pms(
    tx: &mut Tx<'_>,
    p: &Payment,
    entry: &crate::queue::Entry,
    effects: &Effects,
    now: i64,
) -> Result<(), JournalError> {
    if effects.pms == Pms::None {
        return Ok(());
    }
    let Some(patient) = entry.patient_ref.as_deref().filter(|r| !r.is_empty()) else {
        let text = format!(
            "Ticket {} ({}): payment confirmed, but the entry names no patient: post it in the PMS by hand.",
            entry.ticket, entry.queue
        );
        return crate::notices::store::notice(tx, "payment.unposted", &text, now);
    };
    let posting = protocol::Posting {
        facility: &effects.facility,
        payment_id: p.id,
        patient,
        ticket: &entry.ticket,
        amount_cents: p.amount_cents,
        currency: &p.currency,
        processor: p.processor.as_deref().unwrap_or_default(),
        intent: p.intent.as_deref().unwrap_or_default(),
        at_ms: now,
    };
    let item = match effects.pms {
        Pms::Fhir => NewItem {
            source: "payments:notice".into(),
            source_id: Some(protocol::control_id(p.id)),
            kind: crate::connectors::fhir::CREATE.into(),
            key: format!("patient:{patient}"),
            schema: "fhir/PaymentNotice@4.0.1".into(),
            payload: journal::to_json(&protocol::payment_notice(
                &posting,
                effects.patient_system.as_deref(),
            ))?
            .into_bytes(),
            reply: None,
            occurred_at: Some(now),
            destinations: vec![crate::connectors::fhir::DESTINATION.into()],
        },
        _ => NewItem {
            source: "payments:dft".into(),
            source_id: Some(protocol::control_id(p.id)),
            kind: "hl7.outbound.dft_p03".into(),
            key: format!("patient:{patient}"),
            schema: "hl7v2/DFT_P03@2.5.1".into(),
            payload: protocol::dft_p03(&posting).into_bytes(),
            reply: None,
            occurred_at: Some(now),
            destinations: vec![crate::connectors::hl7v2::DESTINATION.into()],
        },
    };
    tx.append(&item, now).map(|_| ())
}

/// Starts the payments connector.
pub struct PaymentsSpawn {
    /// With its file paths resolved.
    pub config: PaymentsConfig,
    pub effects: Effects,
    pub journal: Addr<JournalWriter>,
}

impl Spawn for PaymentsSpawn {
    fn kind(&self) -> &'static str {
        "payments"
    }

    fn spawn(&self, name: &str, supervisor: Addr<Supervisor>) -> Box<dyn Running> {
        let (config, journal) = (self.config.clone(), self.journal.clone());
        let effects = self.effects.clone();
        link::start(name, supervisor, Duration::from_secs(1), move |link| {
            Box::pin(async move {
                let mut client = Client::new(config, effects).map_err(|e| e.to_string())?;
                client.run(journal, link).await;
                Ok(())
            })
        })
    }
}

/// Why a processor gave no intent.
enum Trouble {
    /// Down, slow, throttling or refusing our key: its breaker counts it.
    Unavailable(String),
    /// It refused the payment itself.
    Refused(String),
}

struct Client {
    config: PaymentsConfig,
    effects: Effects,
    http: BTreeMap<String, reqwest::Client>,
    breakers: BTreeMap<String, Breaker>,
}

impl Client {
    fn new(config: PaymentsConfig, effects: Effects) -> Result<Client, String> {
        // reqwest is built without a default crypto provider: ring is the project's provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut http = BTreeMap::new();
        for p in &config.processor {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_millis(p.timeout_ms))
                .user_agent(concat!("clinic-gateway/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| e.to_string())?;
            http.insert(p.name.clone(), client);
        }
        Ok(Client {
            config,
            effects,
            http,
            breakers: BTreeMap::new(),
        })
    }

    async fn run(&mut self, journal: Addr<JournalWriter>, mut link: link::LinkCtx) {
        // Requests in flight when an earlier run ended go back in line; their idempotency
        // keys make the processor answer with the intent it may have made already.
        journal::put_back_in_flight(
            &journal,
            DESTINATION,
            "the payments connector stopped while asking".into(),
        )
        .await;
        link.health.report(HealthState::Healthy, None);
        let signal = journal::signal(&journal, DESTINATION).await;
        loop {
            let claim = journal::Claim {
                destination: DESTINATION.into(),
                limit: 8,
            };
            let rows = match journal::ask(&journal, claim).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = %e, "cannot claim payment requests");
                    Vec::new()
                }
            };
            let idle = rows.is_empty();
            for row in rows {
                let id = row.id;
                let settle = self.place(&journal, row).await;
                settle_row(&journal, id, settle).await;
            }
            self.poll(&journal).await;
            let now = journal::now_ms();
            let open: Vec<&str> = self
                .breakers
                .iter()
                .filter(|(_, b)| !matches!(b, Breaker::Closed { .. }))
                .filter(|(_, b)| !matches!(b, Breaker::Open { until } if *until <= now))
                .map(|(n, _)| n.as_str())
                .collect();
            if open.is_empty() {
                link.health.report(HealthState::Healthy, None);
            } else {
                link.health.report(
                    HealthState::Degraded,
                    Some(format!("processors unavailable: {}", open.join(", "))),
                );
            }
            if idle {
                tokio::select! {
                    _ = signal.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = link.shutdown.changed() => return,
                }
            }
        }
    }

    fn breaker(&mut self, name: &str) -> &mut Breaker {
        self.breakers.entry(name.to_string()).or_default()
    }

    fn failed(&mut self, name: &str, why: &str) {
        let (failures, open_ms) = (
            self.config.breaker_failures,
            self.config.breaker_open_s as i64 * 1000,
        );
        let opened = self
            .breaker(name)
            .failure(journal::now_ms(), failures, open_ms);
        tracing::warn!(
            processor = name,
            error = why,
            breaker_opened = opened,
            "payment processor unavailable"
        );
    }

    /// Creates the intent of one requested payment on the first processor that takes it.
    async fn place(&mut self, journal: &Addr<JournalWriter>, row: OutboxRow) -> Settle {
        let job: Job = match serde_json::from_slice(&row.payload) {
            Ok(j) => j,
            Err(e) => return Settle::Refused(format!("unreadable payment request: {e}")),
        };
        let ask = GetPayment {
            reference: job.reference.clone(),
        };
        match journal::ask(journal, ask).await {
            Ok(Some(p)) if p.status == Status::Requested => {}
            // Placed before a restart cut this row's settling short.
            Ok(Some(_)) => return Settle::Delivered,
            Ok(None) => return Settle::Refused("no such payment".into()),
            Err(e) => return Settle::Retry(format!("payment not read: {e}")),
        }
        let names: Vec<String> = self
            .config
            .processor
            .iter()
            .map(|p| p.name.clone())
            .collect();
        let mut cause = "unavailable";
        for name in protocol::order(&names, job.processor.as_deref()) {
            if !self.breaker(name).admit(journal::now_ms()) {
                continue;
            }
            let Some(processor) = self.config.processor(name).cloned() else {
                continue;
            };
            let key = protocol::idempotency_key(&row.event_id, name);
            match self.create(&processor, &job, &key).await {
                Ok(intent) => {
                    self.breaker(name).success();
                    tracing::info!(processor = name, intent = %intent.id, entry = job.entry_id, "payment intent created");
                    let opened = Opened {
                        reference: job.reference,
                        processor: name.to_string(),
                        poll_at: journal::now_ms() + self.config.poll_after_ms as i64,
                        intent,
                    };
                    return match journal::ask(journal, opened).await {
                        Ok(()) => Settle::Delivered,
                        Err(e) => Settle::Retry(format!("intent not recorded: {e}")),
                    };
                }
                Err(Trouble::Unavailable(why)) => self.failed(name, &why),
                Err(Trouble::Refused(why)) => {
                    self.breaker(name).success();
                    tracing::warn!(processor = name, error = %why, entry = job.entry_id, "payment refused by the processor");
                    cause = "refused";
                    break;
                }
            }
        }
        let unplaced = Unplaced {
            reference: job.reference,
            cause: cause.into(),
            effects: self.effects.clone(),
        };
        match journal::ask(journal, unplaced).await {
            Ok(()) => Settle::Delivered,
            Err(e) => Settle::Retry(format!("failure not recorded: {e}")),
        }
    }

    /// Sends a request to a processor with its secret key; answers its JSON.
    async fn call(
        &self,
        processor: &ProcessorConfig,
        request: reqwest::RequestBuilder,
    ) -> Result<serde_json::Value, Trouble> {
        let key = std::fs::read_to_string(&processor.secret_key_file).map_err(|e| {
            Trouble::Unavailable(format!("{}: {e}", processor.secret_key_file.display()))
        })?;
        let answer = request.bearer_auth(key.trim()).send().await.map_err(|e| {
            Trouble::Unavailable(if e.is_timeout() {
                format!("no answer within {} ms", processor.timeout_ms)
            } else {
                format!("cannot reach it: {}", chain(&e))
            })
        })?;
        let status = answer.status().as_u16();
        let body = answer
            .bytes()
            .await
            .map_err(|e| Trouble::Unavailable(format!("the answer broke off: {e}")))?;
        let json = || serde_json::from_slice::<serde_json::Value>(&body);
        match protocol::answered(status) {
            Answered::Ok => json().map_err(|e| Trouble::Unavailable(format!("not JSON: {e}"))),
            Answered::Unavailable => Err(Trouble::Unavailable(format!("HTTP {status}"))),
            Answered::Refused => {
                let code = json()
                    .ok()
                    .and_then(|v| v["error"]["code"].as_str().map(str::to_string));
                Err(Trouble::Refused(format!(
                    "HTTP {status} {}",
                    code.unwrap_or_default()
                )))
            }
        }
    }

    async fn create(
        &self,
        processor: &ProcessorConfig,
        job: &Job,
        key: &str,
    ) -> Result<Intent, Trouble> {
        let http = &self.http[&processor.name];
        let form = protocol::create_form(
            job.amount_cents,
            &job.currency,
            job.method,
            &job.reference,
            job.entry_id,
        );
        let url = format!(
            "{}/v1/payment_intents",
            processor.base_url.trim_end_matches('/')
        );
        let request = http.post(url).header("Idempotency-Key", key).form(&form);
        let v = self.call(processor, request).await?;
        protocol::intent(&v).map_err(|e| Trouble::Unavailable(e.to_string()))
    }

    /// Asks about the open payments no webhook settled in time.
    async fn poll(&mut self, journal: &Addr<JournalWriter>) {
        let due = match journal::ask(journal, Due { limit: 16 }).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the payments due");
                return;
            }
        };
        for p in due {
            let (Some(name), Some(intent)) = (p.processor.clone(), p.intent.clone()) else {
                continue;
            };
            let now = journal::now_ms();
            let later = now + self.config.poll_every_ms as i64;
            let found = match self.config.processor(&name).cloned() {
                Some(processor) if self.breaker(&name).admit(now) => {
                    let url = format!(
                        "{}/v1/payment_intents/{intent}",
                        processor.base_url.trim_end_matches('/')
                    );
                    let request = self.http[&name].get(url);
                    match self.call(&processor, request).await {
                        Ok(v) => {
                            self.breaker(&name).success();
                            protocol::intent(&v).map(|i| protocol::outcome(&i)).ok()
                        }
                        Err(Trouble::Unavailable(why) | Trouble::Refused(why)) => {
                            self.failed(&name, &why);
                            None
                        }
                    }
                }
                _ => None,
            };
            let expired = now - p.requested_at > self.config.expire_after_s as i64 * 1000;
            let outcome = match found {
                Some(Outcome::Open) | None if expired => Outcome::Failed("expired".into()),
                Some(o) => o,
                None => Outcome::Open,
            };
            let resolve = Resolve {
                processor: name,
                intent,
                outcome,
                poll_at: later,
                effects: self.effects.clone(),
            };
            if let Err(e) = journal::ask(journal, resolve).await {
                tracing::error!(payment = p.id, error = %e, "payment poll not recorded");
            }
        }
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

async fn settle_row(journal: &Addr<JournalWriter>, id: i64, settle: Settle) {
    if let Err(e) = journal::settle(journal, DESTINATION, id, settle).await {
        tracing::error!(row = id, error = %e, "payment request not settled");
    }
}
