//! Payments: co-pays and balances the front desk asks of a patient on a queue entry, taken by
//! payment processors behind a Stripe-style API (`protocol.rs`, pure). The request is an
//! outbox row of destination [`DESTINATION`] committed with the `requested` payment
//! (`RequestPayment`); the connector (`PaymentsSpawn`) creates the PaymentIntent on the first
//! processor whose breaker admits it, with an idempotency key derived from that row, and
//! records the intent's ids (`Opened`). The processor's signed webhook (`Webhook`) or, when
//! none came in time, the connector's poll (`Resolve`) settles it: confirmed, the entry is
//! paid and the PMS is told with a DFT^P03; failed, the entry keeps its place, marked
//! `payment_pending`, and staff are told the alternatives (or let the patient pay later:
//! `PayLater`, the amount owed).
//!
//! Each create is committed first as an attempt under its idempotency key, which the intent's
//! metadata carries too: after a restart, or when a processor answered too late, the intent
//! it made is found in its list (`find`) and adopted, or kept as left open for staff to cancel
//! (`CancelLeftOpen`); one paid as well is shown as a payment taken twice.
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
use store::{Attempt, AttemptState, Payment, Status};

/// The supervisor's name of the payments connector.
pub const NAME: &str = "payments";
/// The outbox destination of payment requests.
pub const DESTINATION: &str = "payments";
/// The notice kind telling the front desk a payment failed.
pub const NOTICE_FAILED: &str = "payment.failed";
/// The notice kind telling the front desk a patient paid twice: one payment to refund.
pub const NOTICE_PAID_TWICE: &str = "payment.paid_twice";
/// The outbox row kind asking a processor to cancel an intent left open there.
const CANCEL: &str = "payment.cancel";

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

/// Staff let the patient of a failed payment pay later: the amount is owed.
#[derive(Debug)]
pub struct PayLater {
    pub entry_id: i64,
    pub payment_id: i64,
    pub by: String,
}

/// An intent left behind at a processor, as staff see it.
#[derive(Debug, Clone, Serialize)]
pub struct LeftBehind {
    #[serde(flatten)]
    pub attempt: Attempt,
    pub entry_id: i64,
    pub ticket: String,
    pub queue: String,
    pub amount_cents: i64,
    pub currency: String,
}

/// The intents left open at processors and those paid twice.
#[derive(Debug)]
pub struct ListLeftBehind;

/// One attempt by its key.
#[derive(Debug)]
pub struct GetAttempt {
    pub key: String,
}

/// Staff ask for the intent of attempt `key`, left open at its processor, to be canceled.
#[derive(Debug)]
pub struct CancelLeftOpen {
    pub key: String,
    pub by: String,
}

/// A processor holds the payment's intent, made by attempt `attempt`.
#[derive(Debug)]
struct Opened {
    reference: String,
    processor: String,
    attempt: String,
    intent: Intent,
    poll_at: i64,
}

/// A create is about to be sent to `processor` under `key`.
#[derive(Debug)]
struct Asked {
    key: String,
    reference: String,
    processor: String,
}

/// A payment's creates whose outcome was never recorded.
#[derive(Debug)]
struct Unanswered {
    reference: String,
}

/// Unanswered creates asked before `before` whose payment went on without them.
#[derive(Debug)]
struct Behind {
    before: i64,
    limit: usize,
}

/// What a processor turned out to have made for an attempt that is not its payment's:
/// nothing, or `intent`, whose status says what became of it.
#[derive(Debug)]
struct Found {
    key: String,
    intent: Option<Intent>,
    effects: Effects,
}

/// The processor made no intent for attempt `key`: it refused the create, or its list has
/// none under the key.
#[derive(Debug)]
struct MadeNothing {
    key: String,
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
    PayLater,
    ListLeftBehind,
    GetAttempt,
    CancelLeftOpen,
    Asked,
    Unanswered,
    Behind,
    Found,
    MadeNothing,
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

/// What a cancel row carries to the connector.
#[derive(Debug, Serialize, Deserialize)]
struct CancelJob {
    key: String,
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
    const READ_ONLY: bool = true;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::by_ref(tx, &self.reference)
    }
}

impl Work for GetPayments {
    type Output = Vec<Payment>;
    const READ_ONLY: bool = true;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::of_entry(tx, self.entry_id)
    }
}

impl Work for ListPayments {
    type Output = Vec<Payment>;
    const READ_ONLY: bool = true;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::latest_of(tx, &self.entry_ids)
    }
}

impl Work for Opened {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<(), JournalError> {
        let now = tx.now();
        let held = store::opened(
            tx,
            &self.reference,
            &self.processor,
            &self.intent.id,
            self.intent.client_secret.as_deref(),
            self.poll_at,
            now,
        )?;
        let state = if held {
            AttemptState::Held
        } else {
            AttemptState::LeftOpen
        };
        store::attempt_is(tx, &self.attempt, state, Some(&self.intent.id), now)
    }
}

impl Work for Asked {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<(), JournalError> {
        let now = tx.now();
        let p = store::by_ref(tx, &self.reference)?
            .ok_or_else(|| JournalError::NotFound(self.reference.clone()))?;
        store::asked(tx, &self.key, p.id, &self.processor, now)
    }
}

impl Work for Unanswered {
    type Output = Vec<Attempt>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        match store::by_ref(tx, &self.reference)? {
            Some(p) => store::unanswered(tx, p.id),
            None => Ok(Vec::new()),
        }
    }
}

impl Work for Behind {
    type Output = Vec<Attempt>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::unanswered_behind(tx, self.before, self.limit)
    }
}

impl Work for MadeNothing {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<(), JournalError> {
        let now = tx.now();
        store::attempt_is(tx, &self.key, AttemptState::None, None, now)
    }
}

impl Work for Found {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<(), JournalError> {
        let now = tx.now();
        let Some(a) = store::attempt(tx, &self.key)? else {
            return Ok(());
        };
        match &self.intent {
            None => store::attempt_is(tx, &a.key, AttemptState::None, None, now),
            Some(i) => late(tx, &a, i, &protocol::outcome(i), &self.effects).map(|_| ()),
        }
    }
}

impl Work for GetAttempt {
    type Output = Option<Attempt>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::attempt(tx, &self.key)
    }
}

impl Work for ListLeftBehind {
    type Output = Vec<LeftBehind>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        let mut out = Vec::new();
        for attempt in store::left_behind(tx)? {
            let Some(p) = store::by_id(tx, attempt.payment_id)? else {
                continue;
            };
            let entry = crate::queue::store::queue_entry(tx, p.entry_id)?;
            out.push(LeftBehind {
                attempt,
                entry_id: entry.id,
                ticket: entry.ticket,
                queue: entry.queue,
                amount_cents: p.amount_cents,
                currency: p.currency,
            });
        }
        Ok(out)
    }
}

impl Work for CancelLeftOpen {
    type Output = Attempt;
    fn run(self, tx: &mut Tx<'_>) -> Result<Attempt, JournalError> {
        let now = tx.now();
        let a = store::attempt(tx, &self.key)?
            .ok_or_else(|| JournalError::NotFound(format!("intent attempt {}", self.key)))?;
        if a.state != AttemptState::LeftOpen {
            return Err(refused(format!(
                "attempt {} is {:?}, not left open at its processor",
                a.key, a.state
            )));
        }
        let job = CancelJob { key: a.key.clone() };
        let item = NewItem {
            source: "payments".into(),
            source_id: None,
            kind: CANCEL.into(),
            key: format!("payment:{}", a.payment_id),
            schema: "clinic-gateway/payment.cancel@1".into(),
            payload: journal::to_json(&job)?.into_bytes(),
            reply: None,
            occurred_at: Some(now),
            destinations: vec![DESTINATION.into()],
        };
        tx.append(&item, now)?;
        let detail = serde_json::json!({
            "payment": a.payment_id,
            "processor": a.processor,
            "intent": a.intent,
        });
        tx.audit(
            &self.by,
            "payment.cancel_left_open",
            &detail.to_string(),
            now,
        )?;
        Ok(a)
    }
}

impl Work for PayLater {
    type Output = Payment;
    fn run(self, tx: &mut Tx<'_>) -> Result<Payment, JournalError> {
        let now = tx.now();
        let p = store::by_id(tx, self.payment_id)?
            .filter(|p| p.entry_id == self.entry_id)
            .ok_or_else(|| {
                JournalError::NotFound(format!(
                    "payment {} of entry {}",
                    self.payment_id, self.entry_id
                ))
            })?;
        if !store::owe(tx, p.id, &self.by, now)? {
            return Err(refused(format!(
                "payment {} is {:?}: only a failed payment can be paid later",
                p.id, p.status
            )));
        }
        let entry = crate::queue::store::queue_entry(tx, p.entry_id)?;
        let detail = serde_json::json!({ "payment": p.id, "entry": entry.id });
        tx.audit(&self.by, "payment.pay_later", &detail.to_string(), now)?;
        announce(tx, "payment.owed", &p, &entry, None, now)?;
        store::by_id(tx, p.id)?.ok_or_else(|| JournalError::NotFound(p.id.to_string()))
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
            // Not a payment's intent: perhaps one an attempt left behind (a processor that
            // answered too late, after the payment had gone to the next one).
            let mut attempt = store::attempt_of_intent(tx, &self.processor, &intent.id)?;
            if attempt.is_none()
                && let Some(key) = intent.attempt.as_deref()
            {
                attempt = store::attempt(tx, key)?.filter(|a| a.processor == self.processor);
            }
            return match attempt {
                Some(a) if late(tx, &a, intent, &outcome, &self.effects)? => Ok(Received::Applied),
                _ => Ok(Received::Ignored),
            };
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

/// What became of `intent`, made at a processor by attempt `a` but not its payment's intent.
/// Paid: the payment is confirmed through it if it was not yet (its own intent is then the
/// one left open), else it is a payment twice, for staff to refund. Answers whether anything
/// changed.
fn late(
    tx: &mut Tx<'_>,
    a: &Attempt,
    intent: &Intent,
    outcome: &Outcome,
    effects: &Effects,
) -> Result<bool, JournalError> {
    let now = tx.now();
    let Some(p) = store::by_id(tx, a.payment_id)? else {
        return Ok(false);
    };
    let state = match outcome {
        Outcome::Confirmed if a.state == AttemptState::PaidTwice => return Ok(false),
        Outcome::Confirmed if p.status == Status::Confirmed => {
            store::attempt_is(tx, &a.key, AttemptState::PaidTwice, Some(&intent.id), now)?;
            let entry = crate::queue::store::queue_entry(tx, p.entry_id)?;
            tracing::warn!(payment = p.id, processor = %a.processor, intent = %intent.id, "payment taken twice");
            let text = format!(
                "Ticket {} ({}): paid twice, the second time at {} ({}): refund it there.",
                entry.ticket, entry.queue, a.processor, intent.id
            );
            crate::notices::store::notice(tx, NOTICE_PAID_TWICE, &text, now)?;
            let at = Some((a.processor.as_str(), intent.id.as_str()));
            announce(tx, "payment.paid_twice", &p, &entry, at, now)?;
            return Ok(true);
        }
        Outcome::Confirmed => {
            if let (Some(processor), Some(held)) = (p.processor.as_deref(), p.intent.as_deref())
                && let Some(own) = store::attempt_of_intent(tx, processor, held)?
            {
                store::attempt_is(tx, &own.key, AttemptState::LeftOpen, None, now)?;
            }
            store::attempt_is(tx, &a.key, AttemptState::Held, Some(&intent.id), now)?;
            store::take_intent(tx, p.id, &a.processor, &intent.id, now)?;
            let p = store::by_id(tx, p.id)?.ok_or(JournalError::NotFound(p.reference))?;
            return apply(tx, &p, outcome, now, effects);
        }
        Outcome::Failed(cause) if cause == "canceled" => AttemptState::Canceled,
        Outcome::Failed(_) | Outcome::Open => AttemptState::LeftOpen,
    };
    if a.state == state && a.intent.as_deref() == Some(intent.id.as_str()) {
        return Ok(false);
    }
    store::attempt_is(tx, &a.key, state, Some(&intent.id), now)?;
    Ok(true)
}

/// The cloud event `kind` about payment `p` of `entry` (or of its intent `at` a processor):
/// ids only, no amount, no patient.
fn announce(
    tx: &mut Tx<'_>,
    kind: &str,
    p: &Payment,
    entry: &crate::queue::Entry,
    at: Option<(&str, &str)>,
    now: i64,
) -> Result<(), JournalError> {
    let (processor, intent) = match at {
        Some((processor, intent)) => (Some(processor), Some(intent)),
        None => (p.processor.as_deref(), p.intent.as_deref()),
    };
    let event = serde_json::json!({
        "payment": p.id,
        "entry": entry.id,
        "ticket": entry.ticket,
        "queue": entry.queue,
        "processor": processor,
        "intent": intent,
        "cause": p.cause,
    });
    let key = format!("queue:{}", entry.queue);
    let event = NewItem::event("payments", kind, key, &event, &[crate::CLOUD]);
    tx.raise(event, now).map(|_| ())
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
    let settled = Payment {
        cause: cause.map(str::to_string),
        ..p.clone()
    };
    announce(tx, kind, &settled, &entry, None, now)?;
    match status {
        Status::Confirmed => {
            post_to_pms(tx, p, &entry, effects, now)?;
            let settled = store::settle_owed(tx, p, now)?;
            if !settled.is_empty() {
                tracing::info!(
                    payment = p.id,
                    entry = entry.id,
                    ?settled,
                    "owed payments settled"
                );
            }
        }
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
        // Requests in flight when an earlier run ended go back in line; their creates whose
        // answer was never recorded are looked up at the processor before anything is sent.
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
                let settle = if row.kind() == CANCEL {
                    self.cancel(&journal, row).await
                } else {
                    self.place(&journal, row).await
                };
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
        // A processor may ignore or forget idempotency keys: an intent a create made before a
        // restart is found by its metadata and adopted rather than made twice.
        let unanswered = match journal::ask(
            journal,
            Unanswered {
                reference: job.reference.clone(),
            },
        )
        .await
        {
            Ok(a) => a,
            Err(e) => return Settle::Retry(format!("attempts not read: {e}")),
        };
        for a in unanswered {
            let Some(processor) = self.config.processor(&a.processor).cloned() else {
                continue;
            };
            if !self.breaker(&a.processor).admit(journal::now_ms()) {
                continue;
            }
            match self.find(&processor, &a.key).await {
                Ok(Some(intent)) => {
                    self.breaker(&a.processor).success();
                    tracing::info!(processor = %a.processor, intent = %intent.id, entry = job.entry_id, "payment intent found after a restart, adopted");
                    let opened = Opened {
                        reference: job.reference,
                        processor: a.processor,
                        attempt: a.key,
                        poll_at: journal::now_ms() + self.config.poll_after_ms as i64,
                        intent,
                    };
                    return match journal::ask(journal, opened).await {
                        Ok(()) => Settle::Delivered,
                        Err(e) => Settle::Retry(format!("intent not recorded: {e}")),
                    };
                }
                Ok(None) => {
                    self.breaker(&a.processor).success();
                    let none = MadeNothing { key: a.key };
                    if let Err(e) = journal::ask(journal, none).await {
                        return Settle::Retry(format!("attempt not recorded: {e}"));
                    }
                }
                Err(Trouble::Unavailable(why) | Trouble::Refused(why)) => {
                    self.failed(&a.processor, &why)
                }
            }
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
            let key = protocol::idempotency_key(row.event_id(), name);
            let asked = Asked {
                key: key.clone(),
                reference: job.reference.clone(),
                processor: name.to_string(),
            };
            if let Err(e) = journal::ask(journal, asked).await {
                return Settle::Retry(format!("attempt not recorded: {e}"));
            }
            match self.create(&processor, &job, &key).await {
                Ok(intent) => {
                    self.breaker(name).success();
                    tracing::info!(processor = name, intent = %intent.id, entry = job.entry_id, "payment intent created");
                    #[cfg(feature = "fault-hooks")]
                    hold_intent(job.amount_cents).await;
                    let opened = Opened {
                        reference: job.reference,
                        processor: name.to_string(),
                        attempt: key,
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
                    let none = MadeNothing { key };
                    if let Err(e) = journal::ask(journal, none).await {
                        return Settle::Retry(format!("attempt not recorded: {e}"));
                    }
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
            key,
        );
        let url = format!(
            "{}/v1/payment_intents",
            processor.base_url.trim_end_matches('/')
        );
        let request = http.post(url).header("Idempotency-Key", key).form(&form);
        let v = self.call(processor, request).await?;
        protocol::intent(&v).map_err(|e| Trouble::Unavailable(e.to_string()))
    }

    /// The intent attempt `key` made at `processor`, if it made one: the processor's list of
    /// intents, newest first, read page by page for the one whose metadata names the key.
    async fn find(
        &self,
        processor: &ProcessorConfig,
        key: &str,
    ) -> Result<Option<Intent>, Trouble> {
        let url = format!(
            "{}/v1/payment_intents",
            processor.base_url.trim_end_matches('/')
        );
        let mut after: Option<String> = None;
        // An attempt is recent: a busy processor's first pages hold it.
        for _ in 0..LIST_PAGES {
            let mut query = vec![("limit", protocol::PAGE.to_string())];
            if let Some(a) = &after {
                query.push(("starting_after", a.clone()));
            }
            let request = self.http[&processor.name].get(&url).query(&query);
            let page = self.call(processor, request).await?;
            let (found, next) = protocol::find_in_page(&page, key)
                .map_err(|e| Trouble::Unavailable(e.to_string()))?;
            if found.is_some() {
                return Ok(found);
            }
            match next {
                Some(n) => after = Some(n),
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Cancels an intent left open at a processor, as staff asked.
    async fn cancel(&mut self, journal: &Addr<JournalWriter>, row: OutboxRow) -> Settle {
        let job: CancelJob = match serde_json::from_slice(&row.payload) {
            Ok(j) => j,
            Err(e) => return Settle::Refused(format!("unreadable cancel request: {e}")),
        };
        let a = match journal::ask(journal, GetAttempt { key: job.key }).await {
            Ok(Some(a)) => a,
            Ok(None) => return Settle::Refused("no such attempt".into()),
            Err(e) => return Settle::Retry(format!("attempt not read: {e}")),
        };
        let (Some(intent), AttemptState::LeftOpen) = (a.intent.as_deref(), a.state) else {
            return Settle::Delivered;
        };
        let Some(processor) = self.config.processor(&a.processor).cloned() else {
            return Settle::Refused(format!("processor {} is no longer configured", a.processor));
        };
        let url = format!(
            "{}/v1/payment_intents/{intent}/cancel",
            processor.base_url.trim_end_matches('/')
        );
        let request = self.http[&processor.name].post(url);
        match self.call(&processor, request).await {
            Ok(v) => {
                self.breaker(&a.processor).success();
                let canceled = match protocol::intent(&v) {
                    Ok(i) => i,
                    Err(e) => return Settle::Retry(format!("the cancel's answer: {e}")),
                };
                tracing::info!(processor = %a.processor, %intent, "intent left open canceled");
                let found = Found {
                    key: a.key,
                    intent: Some(canceled),
                    effects: self.effects.clone(),
                };
                match journal::ask(journal, found).await {
                    Ok(()) => Settle::Delivered,
                    Err(e) => Settle::Retry(format!("cancel not recorded: {e}")),
                }
            }
            Err(Trouble::Unavailable(why)) => {
                self.failed(&a.processor, &why);
                Settle::Retry(why)
            }
            Err(Trouble::Refused(why)) => {
                tracing::warn!(processor = %a.processor, %intent, error = %why, "intent left open not canceled");
                Settle::Refused(why)
            }
        }
    }

    /// Looks up the creates a processor never answered while the payment went on elsewhere:
    /// an intent it made late is left open there, for staff to cancel.
    async fn look_behind(&mut self, journal: &Addr<JournalWriter>) {
        let before = journal::now_ms() - self.config.poll_after_ms as i64;
        let behind = match journal::ask(journal, Behind { before, limit: 8 }).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the unanswered attempts");
                return;
            }
        };
        for a in behind {
            let Some(processor) = self.config.processor(&a.processor).cloned() else {
                // No longer configured: nothing can be looked up or canceled there.
                let none = MadeNothing { key: a.key };
                if let Err(e) = journal::ask(journal, none).await {
                    tracing::error!(error = %e, "attempt not recorded");
                }
                continue;
            };
            if !self.breaker(&a.processor).admit(journal::now_ms()) {
                continue;
            }
            let intent = match self.find(&processor, &a.key).await {
                Ok(i) => i,
                Err(Trouble::Unavailable(why) | Trouble::Refused(why)) => {
                    self.failed(&a.processor, &why);
                    continue;
                }
            };
            self.breaker(&a.processor).success();
            if let Some(i) = &intent {
                tracing::warn!(processor = %a.processor, intent = %i.id, payment = a.payment_id, "an intent was left behind at a processor");
            }
            let found = Found {
                key: a.key,
                intent,
                effects: self.effects.clone(),
            };
            if let Err(e) = journal::ask(journal, found).await {
                tracing::error!(error = %e, "attempt lookup not recorded");
            }
        }
    }

    /// Asks about the open payments no webhook settled in time.
    async fn poll(&mut self, journal: &Addr<JournalWriter>) {
        self.look_behind(journal).await;
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

/// Pages of a processor's intents read to find one attempt's.
const LIST_PAGES: usize = 10;

/// Fault injection for the tests (`fault-hooks` builds only): a create of the amount named by
/// `CLINIC_GATEWAY_FAULT_HOLD_INTENT` (cents) is held once the processor answered and before
/// its intent is recorded, so that a test can kill the daemon there.
#[cfg(feature = "fault-hooks")]
async fn hold_intent(amount_cents: i64) {
    let held = std::env::var("CLINIC_GATEWAY_FAULT_HOLD_INTENT")
        .is_ok_and(|a| a == amount_cents.to_string());
    if held {
        tracing::warn!(amount_cents, "fault hook: intent held before its commit");
        std::future::pending::<()>().await;
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
