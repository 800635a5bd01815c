//! Practice management: the clinic's PMS and the payers behind it. Eligibility is asked as an
//! X12 270 and answered by a 271 (`eligibility.rs`, over the codec in `x12.rs`), carried in
//! the CAQH CORE real-time SOAP envelope (`core.rs`), or as a FHIR R4
//! CoverageEligibilityRequest answered by a CoverageEligibilityResponse (`fhir.rs`), all pure. The front desk asks
//! about a queue entry (`RequestEligibility`): the inquiry, with the member's details, is an
//! outbox row of destination [`DESTINATION`] committed with the entry's pending status (a
//! check-in's, kept in its commit and journaled once the writer is free: [`JournalDue`]); the
//! connector (`EligibilitySpawn`) sends it and commits the answer (`RecordAnswer`), a staff
//! notice when coverage is not verified, and an `eligibility.checked` event with ids only.
//!
//! **Invariant:** the member's id, name and birth date live in the inquiry's outbox row only
//! (and a check-in's kept inquiry until it is journaled): never in the eligibility table, a log
//! line, a notice or a cloud event. A payer that does not answer leaves the row in the outbox
//! (retried with backoff) and the entry's place in the queue untouched.

pub mod billing;
pub mod config;
pub mod core;
pub mod eligibility;
pub mod fhir;
pub mod store;
pub mod visit;
pub mod x12;

use crate::journal::{self, JournalError, JournalWriter, NewItem, OutboxRow, Settle, Tx, Work};
use crate::supervisor::link;
use crate::supervisor::{HealthState, Running, Spawn, Supervisor};
use actix::Addr;
use config::EligibilityConfig;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use store::{Detail, Eligibility, Status};

/// The supervisor's name of the eligibility connector.
pub const NAME: &str = "eligibility";
/// The outbox destination of eligibility inquiries.
pub const DESTINATION: &str = "eligibility";
/// Inquiries sent at once.
const CONCURRENT: usize = 16;

/// The member an inquiry is about, as the card and the EHR give them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberIn {
    pub member_id: String,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
    /// `YYYY-MM-DD` or `YYYYMMDD`.
    #[serde(default)]
    pub birth_date: Option<String>,
    #[serde(default)]
    pub gender: Option<String>,
}

/// Asks the payer about the patient of a queue entry; names and birth date the request lacks
/// come from the entry's EHR demographics.
#[derive(Debug)]
pub struct RequestEligibility {
    pub entry_id: i64,
    /// A configured payer's name; the first when none.
    pub payer: String,
    pub member: MemberIn,
    pub by: String,
}

/// The answer to an inquiry, as the connector read it.
#[derive(Debug)]
pub struct RecordAnswer {
    pub trace: String,
    pub status: Status,
    pub detail: Detail,
}

/// Lets the visit go ahead without verification, audited with who and why.
#[derive(Debug)]
pub struct OverrideEligibility {
    pub entry_id: i64,
    pub reason: String,
    pub by: String,
}

/// The entry's latest inquiry.
#[derive(Debug)]
pub struct GetEligibility {
    pub entry_id: i64,
}

/// The latest inquiry of each of these entries that has one, for the board.
#[derive(Debug)]
pub struct ListEligibility {
    pub entry_ids: Vec<i64>,
}

crate::journal_work!(
    JournalDue,
    RequestEligibility,
    RecordAnswer,
    OverrideEligibility,
    GetEligibility,
    ListEligibility
);

/// What the outbox row carries to the connector.
#[derive(Debug, Serialize, Deserialize)]
struct Job {
    trace: String,
    entry_id: i64,
    payer: String,
    member: eligibility::Member,
    /// `CCYYMMDD` in the clinic's time zone.
    service_date: String,
}

fn refused(msg: impl Into<String>) -> JournalError {
    JournalError::Rejected(msg.into())
}

fn member(
    m: &MemberIn,
    demographics: Option<&crate::queue::Demographics>,
) -> Result<eligibility::Member, JournalError> {
    let from_ehr =
        |f: fn(&crate::queue::Demographics) -> Option<&String>| demographics.and_then(f).cloned();
    let last = m
        .last_name
        .clone()
        .or_else(|| from_ehr(|d| d.family.as_ref()));
    let first = m
        .first_name
        .clone()
        .or_else(|| from_ehr(|d| d.given.as_ref()));
    let birth = m
        .birth_date
        .clone()
        .or_else(|| from_ehr(|d| d.birth_date.as_ref()));
    let gender = m.gender.clone().or_else(|| from_ehr(|d| d.gender.as_ref()));
    let text = |field: &str, v: Option<String>, max: usize| match v {
        Some(v) if !v.trim().is_empty() && v.len() <= max && config::x12_text(&v) => {
            Ok(v.trim().to_string())
        }
        Some(_) => Err(refused(format!(
            "\"{field}\": 1 to {max} characters, none of * ~ : ^"
        ))),
        None => Err(refused(format!(
            "\"{field}\" is required: the entry has no EHR demographics to take it from"
        ))),
    };
    let last_name = text("last_name", last, 60)?;
    let first_name = text("first_name", first, 35)?;
    let member_id = text("member_id", Some(m.member_id.clone()), 80)?;
    let birth_date = text("birth_date", birth, 10)?.replace('-', "");
    if birth_date.len() != 8 || jiff::civil::Date::strptime("%Y%m%d", &birth_date).is_err() {
        return Err(refused("\"birth_date\": a date, YYYY-MM-DD"));
    }
    let gender = match gender.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("f" | "female") => Some("F".to_string()),
        Some("m" | "male") => Some("M".to_string()),
        Some("u" | "unknown") => Some("U".to_string()),
        _ => None,
    };
    Ok(eligibility::Member {
        last_name,
        first_name,
        member_id,
        birth_date,
        gender,
    })
}
/// An inquiry that nothing refused: everything it depends on has been read and checked, and
/// nothing is written yet.
pub struct CheckedInquiry {
    job: Job,
    by: String,
}

impl RequestEligibility {
    /// Checks the inquiry against its entry without writing anything, so that a refusal (a
    /// closed entry, a bad birth date) leaves the transaction as it was.
    fn check(self, tx: &mut Tx<'_>) -> Result<CheckedInquiry, JournalError> {
        let entry = crate::queue::store::queue_entry(tx, self.entry_id)?;
        if entry.closed_at.is_some() {
            return Err(refused(format!("entry {} is closed", entry.id)));
        }
        self.check_for(entry.demographics.as_ref(), tx.now())
    }

    /// Checks the inquiry a check-in's card makes about the entry the check-in is to make, with
    /// the EHR's `demographics` of the patient, before the journal is asked: the writer then
    /// only keeps it ([`CheckedInquiry::defer`]), and a burst of check-ins with cards waits on
    /// little more there than without.
    pub fn check_for(
        self,
        demographics: Option<&crate::queue::Demographics>,
        now: i64,
    ) -> Result<CheckedInquiry, JournalError> {
        let member = member(&self.member, demographics)?;
        Ok(CheckedInquiry {
            job: Job {
                trace: uuid::Uuid::now_v7().simple().to_string(),
                entry_id: self.entry_id,
                payer: self.payer,
                member,
                service_date: crate::clock::local_day(now).replace('-', ""),
            },
            by: self.by,
        })
    }
}

impl CheckedInquiry {
    /// Journals the inquiry for the connector and records it pending.
    fn record(self, tx: &mut Tx<'_>) -> Result<Eligibility, JournalError> {
        let now = tx.now();
        record(tx, &self.job, journal::to_json(&self.job)?, &self.by, now)
    }

    /// Keeps the inquiry of the check-in that made the entry `entry_id`, pending, and journals
    /// it once the writer is free ([`JournalDue`]): the check-in's commit then carries one small
    /// row, not the inquiry's item, outbox row and eligibility row, and a burst of check-ins
    /// waits on no inquiry.
    pub fn defer(mut self, tx: &mut Tx<'_>, entry_id: i64) -> Result<Eligibility, JournalError> {
        self.job.entry_id = entry_id;
        let due = store::Due {
            entry_id: self.job.entry_id,
            requested_at: tx.now(),
            requested_by: self.by,
            job: journal::to_json(&self.job)?,
        };
        let pending = store::due(tx, &due, &self.job.payer)?;
        tx.later(JournalDue {
            entry: Some(due.entry_id),
        });
        Ok(pending)
    }
}

/// The inquiry's outbox row and its pending eligibility row, as asked at `at`.
fn record(
    tx: &mut Tx<'_>,
    job: &Job,
    payload: String,
    by: &str,
    at: i64,
) -> Result<Eligibility, JournalError> {
    let item = NewItem {
        source: "practice".into(),
        source_id: None,
        kind: "eligibility.inquiry".into(),
        key: format!("entry:{}", job.entry_id),
        schema: "clinic-gateway/eligibility.inquiry@1".into(),
        payload: payload.into_bytes(),
        reply: None,
        occurred_at: Some(at),
        destinations: vec![DESTINATION.into()],
    };
    tx.append(&item, tx.now())?;
    store::request(tx, job.entry_id, &job.payer, &job.trace, by, at)
}

/// Journals the inquiries check-ins kept ([`CheckedInquiry::defer`]): the one about `entry`,
/// or, when None (the connector starting, after a gateway that stopped before the writer was
/// free), every one.
#[derive(Debug)]
pub struct JournalDue {
    pub entry: Option<i64>,
}

impl Work for JournalDue {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<(), JournalError> {
        for due in store::take_due(tx, self.entry)? {
            let job: Job = journal::from_json(0, &due.job)
                .map_err(|e| JournalError::Corrupt(format!("a kept inquiry: {e}")))?;
            record(tx, &job, due.job, &due.requested_by, due.requested_at)?;
        }
        Ok(())
    }
}

impl Work for RequestEligibility {
    type Output = Eligibility;
    fn run(self, tx: &mut Tx<'_>) -> Result<Eligibility, JournalError> {
        // The check-in's inquiry, if still kept, comes first.
        JournalDue {
            entry: Some(self.entry_id),
        }
        .run(tx)?;
        self.check(tx)?.record(tx)
    }
}

impl Work for RecordAnswer {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<(), JournalError> {
        let now = tx.now();
        let Some((entry_id, before)) =
            store::answered(tx, &self.trace, self.status, &self.detail, now)?
        else {
            return Ok(());
        };
        let entry = crate::queue::store::queue_entry(tx, entry_id)?;
        if self.status == Status::NotVerified && before != Status::NotVerified {
            let text = format!(
                "Ticket {} ({}): insurance not verified — {}. Retry with a corrected member id or birth date, another payer, or self-pay; or override with a reason.",
                entry.ticket,
                entry.queue,
                self.detail.reasons.join("; ")
            );
            crate::notices::store::notice(tx, "eligibility.not_verified", &text, now)?;
        }
        let payload = serde_json::json!({
            "entry": entry.id,
            "ticket": entry.ticket,
            "queue": entry.queue,
            "status": self.status,
            "cause": self.detail.cause,
        });
        let key = format!("queue:{}", entry.queue);
        let event = NewItem::event(
            "practice",
            "eligibility.checked",
            key,
            &payload,
            &[crate::CLOUD],
        );
        tx.raise(event, now).map(|_| ())
    }
}

impl Work for OverrideEligibility {
    type Output = Eligibility;
    fn run(self, tx: &mut Tx<'_>) -> Result<Eligibility, JournalError> {
        let now = tx.now();
        JournalDue {
            entry: Some(self.entry_id),
        }
        .run(tx)?;
        let reason = self.reason.trim();
        if reason.len() < 5 || reason.len() > 500 || reason.chars().any(char::is_control) {
            return Err(refused(
                "\"reason\": 5 to 500 printable characters documenting why",
            ));
        }
        let done =
            store::override_latest(tx, self.entry_id, reason, &self.by, now)?.ok_or_else(|| {
                JournalError::NotFound(format!(
                    "entry {} has no eligibility inquiry",
                    self.entry_id
                ))
            })?;
        let detail = serde_json::json!({ "entry": self.entry_id, "reason": reason });
        tx.audit(&self.by, "eligibility.overridden", &detail.to_string(), now)?;
        Ok(done)
    }
}

impl Work for GetEligibility {
    type Output = Option<Eligibility>;
    const READ_ONLY: bool = true;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::latest(tx, self.entry_id)
    }
}

impl Work for ListEligibility {
    type Output = Vec<Eligibility>;
    const READ_ONLY: bool = true;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::latest_of(tx, &self.entry_ids)
    }
}

/// Starts the eligibility connector.
pub struct EligibilitySpawn {
    /// With its file paths resolved.
    pub config: EligibilityConfig,
    pub journal: Addr<JournalWriter>,
}

impl Spawn for EligibilitySpawn {
    fn kind(&self) -> &'static str {
        "eligibility"
    }

    fn spawn(&self, name: &str, supervisor: Addr<Supervisor>) -> Box<dyn Running> {
        let (config, journal) = (self.config.clone(), self.journal.clone());
        link::start(name, supervisor, Duration::from_secs(1), move |link| {
            Box::pin(async move {
                let client = Client::new(config).map_err(|e| e.to_string())?;
                client.run(journal, link).await;
                Ok(())
            })
        })
    }
}

#[derive(Clone)]
struct Client {
    config: std::sync::Arc<EligibilityConfig>,
    http: reqwest::Client,
    /// The FHIR server asked with `form = "fhir"`.
    pms: Option<std::sync::Arc<crate::connectors::fhir::client::Client>>,
}

impl Client {
    fn new(config: EligibilityConfig) -> Result<Client, String> {
        // reqwest is built without a default crypto provider: ring is the project's provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .user_agent(concat!("clinic-gateway/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("connectors.eligibility.ca_file {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("connectors.eligibility.ca_file {}: {e}", path.display()))?;
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().map_err(|e| e.to_string())?;
        let pms = match config.form {
            config::Form::Fhir => {
                let endpoint = crate::connectors::fhir::client::Endpoint {
                    key: "connectors.eligibility",
                    base_url: &config.url,
                    auth: config
                        .auth
                        .as_ref()
                        .unwrap_or(&crate::settings::HttpAuth::None),
                    ca_file: config.ca_file.as_deref(),
                    request_timeout_ms: config.timeout_ms,
                    connect_timeout_ms: config.timeout_ms.min(3_000),
                };
                // Answers are read by `fhir.rs`, which names what it refuses in the inquiry's
                // outcome: nothing to record beside it.
                let client =
                    crate::connectors::fhir::client::Client::to(&endpoint, Box::new(|_| {}))
                        .map_err(|e| e.to_string())?;
                Some(std::sync::Arc::new(client))
            }
            config::Form::Soap | config::Form::Mime => None,
        };
        Ok(Client {
            config: std::sync::Arc::new(config),
            http,
            pms,
        })
    }

    async fn run(self, journal: Addr<JournalWriter>, mut link: link::LinkCtx) {
        if let Err(e) = journal::ask(&journal, JournalDue { entry: None }).await {
            tracing::error!(error = %e, "cannot journal the inquiries check-ins kept");
        }
        // Inquiries in flight when an earlier run ended go back in line.
        journal::put_back_in_flight(
            &journal,
            DESTINATION,
            "the eligibility connector stopped while asking".into(),
        )
        .await;
        link.health.report(HealthState::Healthy, None);
        let signal = journal::signal(&journal, DESTINATION).await;
        // Up to `CONCURRENT` inquiries are out at once, and each one answered makes room for
        // the next: a payer slow to answer one holds up no other.
        let mut running = tokio::task::JoinSet::new();
        let mut idle = false;
        // Inquiries not answered since the last that was.
        let mut unanswered = 0usize;
        loop {
            // Room is claimed a half at a time (or all of it once nothing is out), so that a
            // steady run of answers does not cost a claim, a commit, each.
            let room = CONCURRENT - running.len();
            if !idle && (room >= CONCURRENT / 2 || running.is_empty()) {
                let claim = journal::Claim {
                    destination: DESTINATION.into(),
                    limit: room,
                };
                match journal::ask(&journal, claim).await {
                    Ok(rows) => {
                        // Fewer than there was room for: nothing else can go now, and the
                        // signal keeps a wake-up for rows committed since.
                        idle = rows.len() < room;
                        for row in rows {
                            let (client, journal) = (self.clone(), journal.clone());
                            running.spawn(async move {
                                let id = row.id;
                                let settle = client.inquire(&journal, row).await;
                                let answered = matches!(settle, Settle::Delivered);
                                settle_row(&journal, id, settle).await;
                                answered
                            });
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot claim eligibility inquiries");
                        idle = true;
                    }
                }
            }
            tokio::select! {
                Some(done) = running.join_next() => {
                    match done {
                        Ok(true) => unanswered = 0,
                        _ => unanswered += 1,
                    }
                    if unanswered > 0 {
                        link.health.report(
                            HealthState::Degraded,
                            Some(format!("{unanswered} inquiries not answered")),
                        );
                    } else {
                        link.health.report(HealthState::Healthy, None);
                    }
                    idle = false;
                }
                _ = signal.notified() => idle = false,
                _ = tokio::time::sleep(Duration::from_secs(1)), if idle => idle = false,
                _ = link.shutdown.changed() => return,
            }
        }
    }

    /// Sends one inquiry and commits what came of it.
    async fn inquire(&self, journal: &Addr<JournalWriter>, row: OutboxRow) -> Settle {
        let job: Job = match serde_json::from_slice(&row.payload) {
            Ok(j) => j,
            Err(e) => return Settle::Refused(format!("unreadable inquiry: {e}")),
        };
        let (status, detail, settle) = match self.ask(&job, &row).await {
            Ok(answer) => outcome(answer),
            Err(Trouble::NoAnswer(why)) => (
                Status::NotVerified,
                failed("no_answer", why.clone(), true),
                Settle::Retry(why),
            ),
            Err(Trouble::Unreadable(why)) => (
                Status::NotVerified,
                failed("unreadable", why.clone(), false),
                Settle::Refused(why),
            ),
        };
        tracing::info!(entry = job.entry_id, status = ?status, cause = ?detail.cause, "eligibility answered");
        let record = RecordAnswer {
            trace: job.trace,
            status,
            detail,
        };
        match journal::ask(journal, record).await {
            Ok(()) => settle,
            Err(e) => Settle::Retry(format!("answer not recorded: {e}")),
        }
    }

    async fn ask(&self, job: &Job, row: &OutboxRow) -> Result<eligibility::Answer, Trouble> {
        let c = &self.config;
        let payer = c.payer(Some(&job.payer)).ok_or_else(|| {
            Trouble::Unreadable(format!("payer {:?} is no longer configured", job.payer))
        })?;
        let inquiry = eligibility::Inquiry {
            payer_name: payer.payer_name.clone(),
            payer_id: payer.payer_id.clone(),
            provider_name: c.provider_name.clone(),
            provider_npi: c.provider_npi.clone(),
            member: job.member.clone(),
            service_date: job.service_date.clone(),
            service_types: c.service_types.clone(),
            trace: job.trace.clone(),
            originator: c.originator.clone(),
        };
        if let Some(pms) = &self.pms {
            return self.ask_fhir(pms, &inquiry).await;
        }
        let now = jiff::Timestamp::now();
        let utc = now.to_zoned(jiff::tz::TimeZone::UTC);
        // ISA13 must differ between interchanges: the row and its attempt make it so.
        let control = ((row.id.unsigned_abs() * 100 + u64::from(row.attempts % 100)) % 999_999_999
            + 1) as u32;
        let env = x12::Envelope {
            sender: ("ZZ".into(), c.sender_id.clone()),
            receiver: ("ZZ".into(), c.receiver_id.clone()),
            application_sender: c.sender_id.clone(),
            application_receiver: c.receiver_id.clone(),
            control,
            date: utc.strftime("%Y%m%d").to_string(),
            time: utc.strftime("%H%M").to_string(),
            production: c.production,
        };
        let x12 =
            eligibility::request(&inquiry, &env).map_err(|e| Trouble::Unreadable(e.to_string()))?;
        let password = std::fs::read_to_string(&c.password_file)
            .map_err(|e| Trouble::NoAnswer(format!("connectors.eligibility.password_file: {e}")))?;
        let payload_id = uuid::Uuid::now_v7().hyphenated().to_string();
        let timestamp = utc.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let request = core::Request {
            payload_type: "X12_270_Request_005010X279A1",
            payload_id: &payload_id,
            timestamp: &timestamp,
            sender_id: &c.sender_id,
            receiver_id: &c.receiver_id,
            username: &c.username,
            password: password.trim_end_matches(['\r', '\n']),
            payload: &x12,
        };
        let (content_type, body) = match c.form {
            config::Form::Mime => {
                core::multipart(&request, &uuid::Uuid::now_v7().simple().to_string())
            }
            config::Form::Soap | config::Form::Fhir => {
                (core::CONTENT_TYPE.to_string(), core::envelope(&request))
            }
        };
        let sent = self
            .http
            .post(&c.url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await;
        // reqwest's timeout covers the whole exchange: sending, waiting and reading.
        let lost = |e: reqwest::Error, what: &str| {
            Trouble::NoAnswer(if e.is_timeout() {
                format!("the payer did not answer within {} s", c.timeout_ms / 1000)
            } else {
                format!("{what}: {}", chain(&e))
            })
        };
        let answer = sent.map_err(|e| lost(e, "cannot reach the clearinghouse"))?;
        let code = answer.status();
        let answered_as = answer
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = answer
            .text()
            .await
            .map_err(|e| lost(e, "the answer broke off"))?;
        let read = match c.form {
            config::Form::Mime => core::multipart_payload(&answered_as, &text, &payload_id),
            config::Form::Soap | config::Form::Fhir => core::response_payload(&text, &payload_id),
        };
        let payload = match read {
            Ok(p) => p,
            Err(core::CoreError::NotXml(_) | core::CoreError::NotCore)
                if code.is_server_error() =>
            {
                return Err(Trouble::NoAnswer(format!(
                    "the clearinghouse answered HTTP {code}"
                )));
            }
            Err(e) => return Err(Trouble::Unreadable(e.to_string())),
        };
        eligibility::read(payload.as_bytes(), &job.trace)
            .map_err(|e| Trouble::Unreadable(format!("the 271 could not be read: {e}")))
    }
}

impl Client {
    /// Asks a FHIR server: the request is created (conditionally on its identifier, so an
    /// inquiry sent again finds the request it made before); a payer deciding at once answers
    /// the response, else the response pointing back at the stored request is read until
    /// `timeout_ms` has passed.
    async fn ask_fhir(
        &self,
        pms: &crate::connectors::fhir::client::Client,
        q: &eligibility::Inquiry,
    ) -> Result<eligibility::Answer, Trouble> {
        let c = &self.config;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(c.timeout_ms);
        let created = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let resource =
            fhir::request(q, &created).map_err(|e| Trouble::Unreadable(e.to_string()))?;
        let condition = format!("identifier={}|{}", fhir::IDENTIFIER_SYSTEM, q.trace);
        let unread = |e: fhir::FhirEligibilityError| {
            Trouble::Unreadable(format!("the payer's answer could not be read: {e}"))
        };
        let asking = async {
            let sent = pms
                .submit("CoverageEligibilityRequest", &resource, &condition)
                .await;
            let id = match sent {
                Ok(v) => match fhir::reply(&v, &q.trace).map_err(unread)? {
                    fhir::Reply::Answered(a) => return Ok(a),
                    fhir::Reply::Stored(id) => id,
                },
                Err(e) => return fhir_trouble(e),
            };
            let reference = format!("CoverageEligibilityRequest/{id}");
            let mut pause = Duration::from_millis(50);
            loop {
                let found = match pms
                    .search("CoverageEligibilityResponse", &[("request", &reference)])
                    .await
                {
                    Ok(found) => found,
                    Err(e) => return fhir_trouble(e),
                };
                for r in &found {
                    if let Some(a) = fhir::read(r, &q.trace, Some(&id)).map_err(unread)? {
                        return Ok(a);
                    }
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        };
        tokio::time::timeout_at(deadline, asking)
            .await
            .unwrap_or_else(|_| {
                Err(Trouble::NoAnswer(format!(
                    "the payer did not answer within {} s",
                    c.timeout_ms / 1000
                )))
            })
    }
}

/// What a FHIR server's error means for the inquiry: a refusal of the request (4xx, with its
/// OperationOutcome in words) is the payer's answer; no answer yet is asked again; refused
/// credentials or an answer that is not FHIR wait for staff.
fn fhir_trouble(
    e: crate::connectors::fhir::client::FhirError,
) -> Result<eligibility::Answer, Trouble> {
    use crate::connectors::fhir::client::FhirError;
    match e {
        FhirError::Status { status, detail } if !retryable_status(status) => {
            Ok(eligibility::Answer {
                status: eligibility::Status::Rejected(vec![eligibility::Rejection {
                    place: "CoverageEligibilityRequest".into(),
                    code: status.to_string(),
                    reason: format!("the payer refused the request (HTTP {status}): {detail}"),
                    follow_up: None,
                    retry: false,
                }]),
                payer: None,
                plan: None,
                copay: None,
                deductible_remaining: None,
            })
        }
        FhirError::Status { status, detail } => Err(Trouble::NoAnswer(format!(
            "the payer answered HTTP {status}: {detail}"
        ))),
        FhirError::Unreachable(why) => {
            Err(Trouble::NoAnswer(format!("cannot reach the payer: {why}")))
        }
        FhirError::Credentials(why) => Err(Trouble::Unreadable(format!(
            "the payer refused our credentials: {why}"
        ))),
        other @ (FhirError::VersionChanged | FhirError::Decode(_)) => Err(Trouble::Unreadable(
            format!("the payer's answer could not be read: {other}"),
        )),
    }
}

/// HTTP statuses after which the same request may succeed later.
fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// Why an inquiry has no answer.
enum Trouble {
    /// Nothing (or nothing usable yet) came back: asked again after the backoff.
    NoAnswer(String),
    /// What came back cannot be used as it is; staff see why and can replay it.
    Unreadable(String),
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

fn failed(cause: &str, why: String, retry: bool) -> Detail {
    Detail {
        cause: Some(cause.into()),
        reasons: vec![why],
        retry,
        ..Detail::default()
    }
}

/// The status, detail and outbox outcome of a 271: a payer that said it cannot answer now
/// (AAA 42, 80) is asked again; any other rejection waits for the front desk.
fn outcome(a: eligibility::Answer) -> (Status, Detail, Settle) {
    match a.status {
        eligibility::Status::Active => (
            Status::Verified,
            Detail {
                plan: a.plan,
                copay: a.copay,
                deductible_remaining: a.deductible_remaining,
                ..Detail::default()
            },
            Settle::Delivered,
        ),
        eligibility::Status::Inactive(why) => (
            Status::NotVerified,
            failed("inactive", why, false),
            Settle::Delivered,
        ),
        eligibility::Status::Rejected(rejections) => {
            let later = rejections
                .iter()
                .any(|r| matches!(r.code.as_str(), "42" | "80"));
            let reasons: Vec<String> = rejections
                .iter()
                .map(|r| match &r.follow_up {
                    Some(f) => format!("{} ({f})", r.reason),
                    None => r.reason.clone(),
                })
                .collect();
            let detail = Detail {
                cause: Some(if later { "no_answer" } else { "rejected" }.into()),
                retry: rejections.iter().any(|r| r.retry),
                reasons: reasons.clone(),
                ..Detail::default()
            };
            let settle = if later {
                Settle::Retry(reasons.join("; "))
            } else {
                Settle::Delivered
            };
            (Status::NotVerified, detail, settle)
        }
    }
}

async fn settle_row(journal: &Addr<JournalWriter>, id: i64, settle: Settle) {
    if let Err(e) = journal::settle(journal, DESTINATION, id, settle).await {
        tracing::error!(row = id, error = %e, "eligibility inquiry not settled");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::fhir::client::FhirError;

    #[test]
    fn a_fhir_servers_refusal_is_an_answer_and_its_trouble_is_retried_or_held() {
        let refusal = FhirError::Status {
            status: 400,
            detail: "Coverage.subscriberId is required".into(),
        };
        let Ok(eligibility::Answer {
            status: eligibility::Status::Rejected(r),
            ..
        }) = fhir_trouble(refusal)
        else {
            panic!("a 400 is the payer's refusal")
        };
        assert_eq!(
            r[0].reason,
            "the payer refused the request (HTTP 400): Coverage.subscriberId is required"
        );
        assert!(!r[0].retry);
        let busy = FhirError::Status {
            status: 503,
            detail: "busy".into(),
        };
        assert!(matches!(fhir_trouble(busy), Err(Trouble::NoAnswer(_))));
        let down = FhirError::Unreachable("connection refused".into());
        assert!(matches!(fhir_trouble(down), Err(Trouble::NoAnswer(_))));
        let denied = FhirError::Credentials("the EHR answered 401".into());
        assert!(matches!(fhir_trouble(denied), Err(Trouble::Unreadable(_))));
    }
}
