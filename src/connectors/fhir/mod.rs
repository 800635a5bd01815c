//! The FHIR R4 REST connector to the EHR: patient lookup at check-in with a local cache for
//! offline operation, demographic sync both ways, conflicts kept for staff to resolve, the
//! visit's Encounter, EHR flags as priorities, today's appointments, waits past the slots, and
//! what check-ins register.
//!
//! `FhirSpawn` starts [`FhirActor`] (supervisor name `fhir`) in its own arbiter with its tasks:
//! the poll task reads Patients (cached ones are applied) and Encounters (finished visits)
//! changed since their cursors (`_lastUpdated`); the delivery task sends the `ehr-fhir` outbox
//! (Patient updates with `If-Match`, Encounter notices, registrations, suggestions); and, when
//! configured, the appointments, flags and waits tasks. [`Lookup`] answers a check-in from the
//! EHR, or from the cache when the EHR does not answer within `lookup_timeout_ms`. Everything
//! read or sent is checked against R4 first ([`validate`]).
//!
//! **Invariant:** nothing is overwritten silently: a remote change meeting an undelivered local
//! one, or a 412, becomes a conflict record holding both versions.
//! **Invariant:** the connector never ends on an EHR or credential failure: it reports
//! `Degraded` (credentials: paused for `credential_retry_s`) and check-ins use the cache.

pub mod client;
pub mod config;
pub mod encounter;
pub mod flag;
pub mod model;
pub mod protocol;
pub mod registration;
pub mod requests;
pub mod store;
pub mod validate;
pub mod waits;

use crate::journal::{self, AuditRecord, Claim, Delivered, Failed, JournalWriter, OutboxRow};
use crate::queue::{CheckIn, Demographics, Entry, FromEhr, Priority};
use crate::queue::{EhrInbound, QueueCheckIn, QueueLink, QueueList, RaisingFlags};
use crate::supervisor::link::{self, Health};
use crate::supervisor::{HealthState, Running, Spawn, StopFuture, Supervisor};
use crate::suspension::IsSuspended;
use actix::prelude::*;
use client::{Client, FhirError};
use config::FhirConfig;
use model::Patient;
use protocol::{AppointmentStep, Closing, Seen};
use requests::{FhirFind, FhirGet, FhirSeen, FhirState, FhirWritten, RaiseNotice};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The supervisor's name for the connector.
pub const NAME: &str = "fhir";
/// The outbox destination of local Patient changes.
pub const DESTINATION: &str = "ehr-fhir";
/// The outbox kind of a resource another family asks the EHR to create once: the payload is
/// the resource, created conditionally on its first identifier.
pub const CREATE: &str = "fhir.create";
/// Where the poll cursor (the newest `meta.lastUpdated` seen) is kept.
const CURSOR: &str = "patient_cursor";
/// The same for Encounters and Flags.
const ENCOUNTER_CURSOR: &str = "encounter_cursor";
const FLAG_CURSOR: &str = "flag_cursor";
/// The resources read for the lab, each with its cursor: results and the reports grouping
/// them, then orders before the specimens taken for them.
const RESULT_KINDS: [(&str, &str); 4] = [
    ("Observation", "observation_cursor"),
    ("DiagnosticReport", "diagnostic_report_cursor"),
    ("ServiceRequest", "service_request_cursor"),
    ("Specimen", "specimen_cursor"),
];
/// The resources read for the pharmacy, each with its cursor: orders before their dispenses.
const MEDICATION_KINDS: [(&str, &str); 2] = [
    ("MedicationRequest", "medication_request_cursor"),
    ("MedicationDispense", "medication_dispense_cursor"),
];
/// What is read per queued patient for the pharmacy: allergies before the issues detected.
const PATIENT_KINDS: [&str; 2] = ["AllergyIntolerance", "DetectedIssue"];
/// The queues whose waits run past their slots and were suggested to the EHR (a JSON array).
const OVERRUNS: &str = "wait_overruns";
/// Most entries the link pass asks the EHR about per poll.
const LINKS_PER_PASS: usize = 20;

/// Where the running connector is found (by the web layer); empty when none is configured or
/// while it restarts. The wiring makes one and hands it to the connector and the web layer.
pub type FhirSlot = crate::supervisor::Slot<FhirActor>;

/// Who a check-in names: an identifier value, a name and birth date, or both (the identifier
/// is searched first, the name when the identifier finds nobody).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LookupQuery {
    pub identifier: Option<String>,
    pub name: Option<crate::queue::PatientSearch>,
}

/// What a check-in's lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Exactly one patient, from the EHR or the cache.
    Patient(Demographics),
    /// The EHR answered: it has no such patient.
    Nobody,
    /// No connector, several matches, or neither the EHR nor the cache could tell.
    Unknown,
}

/// Finds a patient's demographics for a check-in.
pub async fn lookup(slot: &FhirSlot, query: LookupQuery) -> Found {
    let Some(fhir) = slot.addr() else {
        return Found::Unknown;
    };
    fhir.send(Lookup(query)).await.unwrap_or(Found::Unknown)
}

/// The connector's counters and link state, for the API.
pub async fn status(slot: &FhirSlot) -> Option<FhirStatus> {
    slot.addr()?.send(GetStatus).await.ok()
}

#[derive(Message)]
#[rtype(result = "Found")]
pub struct Lookup(pub LookupQuery);

#[derive(Message)]
#[rtype(result = "FhirStatus")]
pub struct GetStatus;

/// How the connector stands with the EHR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Link {
    /// No request answered yet.
    Starting,
    /// The last request was answered.
    Up,
    /// The EHR does not answer; requests go on (and check-ins use the cache).
    Unreachable { error: String },
    /// Credentials unreadable or refused: no request is made until `retry_in_s` passed.
    Paused { error: String, retry_in_s: u64 },
}

#[derive(Debug, Clone, Serialize)]
pub struct FhirStatus {
    pub link: Link,
    /// Check-ins answered by the EHR and by the cache.
    pub lookups_remote: u64,
    pub lookups_cache: u64,
    /// Remote Patient changes applied to the cache.
    pub remote_changes: u64,
    /// Versions seen again that were our own writes (not re-imported).
    pub echoes_ignored: u64,
    pub conflicts: u64,
    pub updates_sent: u64,
    /// Encounters opened or moved on for calls, rooms and unseen exits.
    pub encounters_sent: u64,
    /// Visits the EHR finished or cancelled that closed a queue entry's visit.
    pub visits_closed: u64,
    /// Flag versions that set (or released) a patient's priority.
    pub flags_applied: u64,
    /// Resources from the EHR refused whole (not R4, unusable); each is in the audit log.
    pub refused: u64,
    /// Suggestions for scheduling staff raised because waits ran past the booked slots.
    pub suggestions: u64,
    /// Patients and walk-in Appointments registered in the EHR.
    pub registered: u64,
    /// Entries queued without their EHR patient and linked to it later.
    pub linked: u64,
    pub last_poll_at: Option<i64>,
    /// When today's appointments were last applied to the queue.
    pub last_appointments_at: Option<i64>,
    /// When the waits were last measured against the booked slots.
    pub last_waits_at: Option<i64>,
}

/// State shared by the actor and its tasks.
struct Shared {
    client: Result<Client, String>,
    /// Resources from the EHR refused as unusable (each recorded in the audit log).
    refused: Arc<AtomicU64>,
    config: FhirConfig,
    facility: String,
    journal: Addr<JournalWriter>,
    health: Health,
    state: Mutex<Counters>,
}

#[derive(Default)]
struct Counters {
    lookups_remote: u64,
    lookups_cache: u64,
    remote_changes: u64,
    echoes_ignored: u64,
    conflicts: u64,
    updates_sent: u64,
    encounters_sent: u64,
    visits_closed: u64,
    flags_applied: u64,
    suggestions: u64,
    registered: u64,
    linked: u64,
    /// Identifiers the EHR answered it does not know (not searched again by the link pass).
    unknown: std::collections::HashSet<String>,
    /// Slot lengths (seconds) of today's appointments by reference, from the last pass.
    slots: std::collections::HashMap<String, i64>,
    last_poll_at: Option<i64>,
    last_appointments_at: Option<i64>,
    last_waits_at: Option<i64>,
    link: LinkState,
    /// Staff were told of the refused credentials (once until a request works again).
    credentials_alerted: bool,
}

/// How the connector stands with the EHR, as it keeps it (the API's [`Link`] is read from it).
#[derive(Debug, Clone, Default)]
enum LinkState {
    /// No request answered yet.
    #[default]
    Starting,
    /// The last request was answered (even if the EHR refused it: the EHR is there).
    Up,
    /// The last request found no EHR; each pass tries again.
    Unreachable { error: String },
    /// The credentials were unreadable or refused: no request is made before `until`, then
    /// the next one tries them again.
    Paused { until: Instant, error: String },
}

impl LinkState {
    fn paused(&self) -> Option<&str> {
        match self {
            LinkState::Paused { until, error } if Instant::now() < *until => Some(error),
            _ => None,
        }
    }

    /// The health the supervisor shows for this state; `None` before the first answer.
    fn health(&self) -> Option<(HealthState, Option<String>)> {
        match self {
            LinkState::Starting => None,
            LinkState::Up => Some((HealthState::Healthy, None)),
            LinkState::Unreachable { error } => Some((HealthState::Degraded, Some(error.clone()))),
            LinkState::Paused { error, .. } => Some((
                HealthState::Degraded,
                Some(format!("credentials refused or unusable: {error}")),
            )),
        }
    }

    fn api(&self) -> Link {
        match self {
            LinkState::Starting => Link::Starting,
            LinkState::Up => Link::Up,
            LinkState::Unreachable { error } => Link::Unreachable {
                error: error.clone(),
            },
            LinkState::Paused { until, error } if Instant::now() < *until => Link::Paused {
                error: error.clone(),
                retry_in_s: until.saturating_duration_since(Instant::now()).as_secs(),
            },
            LinkState::Paused { error, .. } => Link::Unreachable {
                error: format!("credentials refused or unusable: {error}"),
            },
        }
    }
}

impl Shared {
    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client, unless credentials were refused recently (then the reason).
    fn usable(&self) -> Result<&Client, FhirError> {
        if let Some(error) = self.counters().link.paused() {
            return Err(FhirError::Credentials(error.to_string()));
        }
        self.client
            .as_ref()
            .map_err(|e| FhirError::Unreachable(e.clone()))
    }

    /// Whether the connector is suspended (`suspension`), reported in its health: it then
    /// neither polls nor delivers, and its rows wait in the outbox. Once resumed, the link's
    /// own health is reported again. A journal that cannot answer counts as not suspended: the
    /// suspension is seen at the next pass.
    async fn suspended(&self) -> bool {
        let ask = IsSuspended { name: NAME.into() };
        match journal::ask(&self.journal, ask).await {
            Ok(Some(reason)) => {
                self.health.report(HealthState::Suspended, Some(reason));
                true
            }
            Ok(None) => {
                let link = self.counters().link.health();
                if let Some((state, error)) = link {
                    self.health.report(state, error);
                }
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "suspension not checked");
                false
            }
        }
    }

    /// Records how a request went and reports a changed health to the supervisor.
    fn outcome<T>(&self, r: &Result<T, FhirError>) {
        let (health, error) = {
            let mut c = self.counters();
            let before = c.link.health();
            match r {
                Ok(_) => {
                    c.link = LinkState::Up;
                    c.credentials_alerted = false;
                }
                Err(FhirError::Credentials(e)) => {
                    if c.link.paused().is_none() {
                        let pause = Duration::from_secs(self.config.credential_retry_s);
                        tracing::warn!(error = %e, pause_s = pause.as_secs(), "FHIR credentials refused; connector paused");
                        c.link = LinkState::Paused {
                            until: Instant::now() + pause,
                            error: e.clone(),
                        };
                        if !c.credentials_alerted {
                            c.credentials_alerted = true;
                            self.alert_credentials(e, pause);
                        }
                    }
                }
                Err(e @ FhirError::Unreachable(_)) => {
                    c.link = LinkState::Unreachable {
                        error: e.to_string(),
                    }
                }
                // The EHR answered: the link works even if this request was refused.
                Err(_) => c.link = LinkState::Up,
            }
            match c.link.health() {
                Some(now) if Some(&now) != before.as_ref() => now,
                _ => return,
            }
        };
        self.health.report(health, error);
    }

    /// Tells staff (a notice) and the cloud (`fhir.credentials_refused`) that the EHR refused
    /// the gateway's credentials: someone has to renew them.
    fn alert_credentials(&self, error: &str, pause: Duration) {
        let text = format!(
            "The EHR refused the gateway's credentials; the FHIR connector retries every {} s. \
             Check [connectors.fhir.auth] and its secret file.",
            pause.as_secs()
        );
        let payload = serde_json::json!({ "error": error, "retry_s": pause.as_secs() });
        let item = journal::NewItem::event(
            "gateway",
            "fhir.credentials_refused",
            NAME,
            &payload,
            &[crate::CLOUD],
        );
        self.journal.do_send(RaiseNotice {
            kind: "fhir.credentials_refused".into(),
            text,
            item: Some(item),
            state: None,
        });
    }

    fn status(&self) -> FhirStatus {
        let c = self.counters();
        FhirStatus {
            link: c.link.api(),
            lookups_remote: c.lookups_remote,
            lookups_cache: c.lookups_cache,
            remote_changes: c.remote_changes,
            echoes_ignored: c.echoes_ignored,
            conflicts: c.conflicts,
            updates_sent: c.updates_sent,
            encounters_sent: c.encounters_sent,
            visits_closed: c.visits_closed,
            flags_applied: c.flags_applied,
            refused: self.refused.load(Ordering::Relaxed),
            suggestions: c.suggestions,
            registered: c.registered,
            linked: c.linked,
            last_poll_at: c.last_poll_at,
            last_appointments_at: c.last_appointments_at,
            last_waits_at: c.last_waits_at,
        }
    }

    fn identifier(&self, p: &Patient) -> Option<String> {
        protocol::identifier(p, &self.config.identifier_system)
    }

    /// Hands a version read from the EHR to the journal and counts what it did.
    async fn seen(&self, p: &Patient, insert: bool) -> Result<Seen, journal::JournalError> {
        let msg = FhirSeen {
            patient: Box::new(p.clone()),
            identifier: self.identifier(p),
            insert,
        };
        let seen = journal::ask(&self.journal, msg).await?;
        let mut c = self.counters();
        match seen {
            Seen::Unchanged if protocol::is_ours(p, &self.config.tag_system) => {
                c.echoes_ignored += 1
            }
            Seen::Updated => c.remote_changes += 1,
            Seen::Conflict(id) => {
                c.conflicts += 1;
                tracing::warn!(conflict = id, patient = ?p.id, "FHIR Patient changed on both sides; conflict kept for staff");
            }
            _ => {}
        }
        Ok(seen)
    }

    async fn lookup(&self, query: LookupQuery) -> Found {
        let system = &self.config.identifier_system;
        let remote = async {
            let client = self.usable()?;
            let mut found = Vec::new();
            if let Some(v) = &query.identifier {
                let id = format!("{system}|{}", protocol::search_escape(v));
                let r = client.search_patients(&[("identifier", &id)]).await;
                self.outcome(&r);
                found = r?;
            }
            if let (true, Some(n)) = (found.is_empty(), &query.name) {
                let family = protocol::search_escape(&n.family);
                let given = n.given.as_deref().map(protocol::search_escape);
                let mut q = vec![("family", family.as_str()), ("birthdate", &n.birth_date)];
                if let Some(g) = &given {
                    q.push(("given", g));
                }
                let r = client.search_patients(&q).await;
                self.outcome(&r);
                found = r?;
            }
            Ok::<_, FhirError>(found)
        };
        let wait = Duration::from_millis(self.config.lookup_timeout_ms);
        match tokio::time::timeout(wait, remote).await {
            Ok(Ok(found)) => {
                self.counters().lookups_remote += 1;
                let [p] = found.as_slice() else {
                    tracing::info!(matches = found.len(), "FHIR lookup found no single patient");
                    return match found.is_empty() {
                        true => Found::Nobody,
                        false => Found::Unknown,
                    };
                };
                if let Err(e) = self.seen(p, true).await {
                    tracing::warn!(error = %e, "FHIR Patient not cached");
                }
                Found::Patient(protocol::demographics(p, system, "ehr"))
            }
            Ok(Err(e)) => {
                tracing::info!(error = %e, "FHIR lookup failed; answering from the cache");
                self.cached(query).await
            }
            Err(_) => {
                tracing::info!(
                    timeout_ms = self.config.lookup_timeout_ms,
                    "FHIR lookup timed out; answering from the cache"
                );
                self.cached(query).await
            }
        }
    }

    async fn cached(&self, query: LookupQuery) -> Found {
        let mut found = Vec::new();
        if let Some(v) = query.identifier {
            found = self.find(Some(v), None, None).await;
        }
        if let (true, Some(n)) = (found.is_empty(), query.name) {
            found = self.find(None, Some(n.family), Some(n.birth_date)).await;
        }
        let [one] = found.as_slice() else {
            tracing::info!(matches = found.len(), "FHIR cache found no single patient");
            return Found::Unknown;
        };
        self.counters().lookups_cache += 1;
        Found::Patient(protocol::demographics(
            one.current(),
            &self.config.identifier_system,
            "cache",
        ))
    }

    async fn find(
        &self,
        identifier: Option<String>,
        family: Option<String>,
        birth_date: Option<String>,
    ) -> Vec<protocol::CachedPatient> {
        let msg = FhirFind {
            identifier,
            family,
            birth_date,
        };
        journal::ask(&self.journal, msg).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "FHIR cache lookup failed");
            Vec::new()
        })
    }

    /// Where the poll of `key` stands: the newest `meta.lastUpdated` seen, or `start` at the
    /// first poll. `None` when the journal cannot tell (the poll is skipped).
    async fn cursor(&self, key: &str, start: String) -> Option<String> {
        let get = FhirState {
            key: key.into(),
            set: None,
        };
        match journal::ask(&self.journal, get).await {
            Ok(c) => Some(c.unwrap_or(start)),
            Err(e) => {
                tracing::warn!(error = %e, cursor = key, "FHIR poll cursor unreadable; poll skipped");
                None
            }
        }
    }

    /// Moves the cursor `key` to the newest `lastUpdated` of `seen` (already applied).
    async fn advance_cursor<'a>(
        &self,
        key: &str,
        cursor: &str,
        seen: impl Iterator<Item = Option<&'a str>>,
    ) {
        // RFC 3339 instants in UTC with the same precision compare as text.
        let newest = seen.flatten().fold(cursor, |a, b| a.max(b));
        if newest == cursor {
            return;
        }
        let set = FhirState {
            key: key.into(),
            set: Some(newest.to_string()),
        };
        if let Err(e) = journal::ask(&self.journal, set).await {
            tracing::warn!(error = %e, cursor = key, "FHIR poll cursor not saved; changes are read again");
        }
    }

    /// One poll: every Patient changed since the cursor, applied in `lastUpdated` order, then
    /// every Encounter (visits the EHR finished).
    async fn poll(&self) {
        self.poll_patients().await;
        self.poll_encounters().await;
        self.link_unlinked().await;
        self.counters().last_poll_at = Some(journal::now_ms());
    }

    async fn poll_patients(&self) {
        let start = start_cursor(self.config.poll_interval_s);
        let Some(cursor) = self.cursor(CURSOR, start).await else {
            return;
        };
        let changed = match self.usable() {
            Ok(client) => client.changed_patients(&cursor).await,
            Err(e) => Err(e),
        };
        self.outcome(&changed);
        let Ok(changed) = changed else {
            return;
        };
        let mut applied = 0;
        for p in &changed {
            if let Err(e) = self.seen(p, false).await {
                tracing::warn!(error = %e, "FHIR poll stopped: journal refused a change");
                break;
            }
            applied += 1;
        }
        let seen = changed[..applied].iter().map(Patient::last_updated);
        self.advance_cursor(CURSOR, &cursor, seen).await;
    }

    /// Entries queued without the EHR's patient (checked in while it was unreachable, or from
    /// HL7) are linked once the EHR finds their identifier: their demographics, flags and visits
    /// then follow as for any other. An identifier the EHR answered it does not know is not
    /// asked again until the connector restarts.
    async fn link_unlinked(&self) {
        let Ok(client) = self.usable() else {
            return;
        };
        let list = QueueList {
            queue: None,
            closed_since: None,
        };
        let Ok(open) = journal::ask(&self.journal, list).await else {
            return;
        };
        let unknown = self.counters().unknown.clone();
        let unlinked = open.iter().filter_map(|e| {
            let mrn = e.patient_ref.as_deref()?;
            (e.demographics.is_none() && !unknown.contains(mrn)).then_some((e.id, mrn))
        });
        let system = &self.config.identifier_system;
        // A bound per pass, so a backlog of offline check-ins does not hold the poll.
        for (entry, mrn) in unlinked.take(LINKS_PER_PASS) {
            let id = format!("{system}|{}", protocol::search_escape(mrn));
            let found = client.search_patients(&[("identifier", &id)]).await;
            self.outcome(&found);
            let Ok(found) = found else {
                return;
            };
            let [p] = found.as_slice() else {
                if found.is_empty() {
                    self.counters().unknown.insert(mrn.to_string());
                }
                continue;
            };
            if let Err(e) = self.seen(p, true).await {
                tracing::warn!(error = %e, "FHIR Patient not cached; entry linked later");
                return;
            }
            let link = QueueLink {
                entry,
                demographics: Some(protocol::demographics(p, system, "ehr")),
                appointment_ref: None,
            };
            match journal::ask(&self.journal, link).await {
                Ok(_) => self.counters().linked += 1,
                Err(e) => tracing::warn!(entry, error = %e, "entry not linked to its EHR patient"),
            }
        }
    }

    /// Encounters changed since their cursor: one the EHR finished (or cancelled) closes its
    /// queue entry's visit.
    async fn poll_encounters(&self) {
        let tag = &self.config.tag_system;
        let start = start_cursor(self.config.poll_interval_s);
        let closed = self
            .poll_changes("Encounter", ENCOUNTER_CURSOR, start, |e| {
                encounter::finished_visit(e, &self.facility, tag).map(|e| vec![e])
            })
            .await;
        self.counters().visits_closed += closed;
    }

    /// Results, lab orders and specimens changed since their cursors, each version journaled
    /// once with the resource, which the lab's hooks act on in its transaction.
    async fn poll_results(&self) {
        for (kind, cursor) in RESULT_KINDS {
            let start = start_cursor(self.config.poll_interval_s);
            let read = self
                .poll_changes(kind, cursor, start, |_| Some(Vec::new()))
                .await;
            tracing::debug!(kind, read, "FHIR results read");
        }
    }

    /// The queued patients' allergies and detected issues, then prescriptions and dispenses
    /// changed since their cursors: each version journaled once with the resource, which the
    /// pharmacy's hook acts on in its transaction (allergies first, so that a prescription
    /// read in the same pass is checked against them).
    async fn poll_pharmacy(&self) {
        self.poll_queued_patients().await;
        for (kind, cursor) in MEDICATION_KINDS {
            let start = start_cursor(self.config.poll_interval_s);
            let read = self
                .poll_changes(kind, cursor, start, |_| Some(Vec::new()))
                .await;
            tracing::debug!(kind, read, "FHIR prescriptions read");
        }
    }

    /// Every allergy and detected issue of each patient with an open entry, read whole rather
    /// than since a cursor: one recorded long before the patient arrived counts as much as a
    /// new one. Versions already journaled change nothing.
    async fn poll_queued_patients(&self) {
        let Ok(client) = self.usable() else {
            return;
        };
        let list = QueueList {
            queue: None,
            closed_since: None,
        };
        let Ok(open) = journal::ask(&self.journal, list).await else {
            return;
        };
        let mut patients: Vec<String> = open
            .iter()
            .filter_map(|e| Some(format!("Patient/{}", e.demographics.as_ref()?.patient_id)))
            .collect();
        patients.sort();
        patients.dedup();
        for patient in &patients {
            for kind in PATIENT_KINDS {
                let found = client.search(kind, &[("patient", patient)]).await;
                self.outcome(&found);
                let Ok(found) = found else {
                    return;
                };
                for r in found.iter().filter(|r| client.conforms(r)) {
                    let msg = EhrInbound {
                        item: protocol::received(r),
                        effects: Vec::new(),
                        resources: vec![r.clone()],
                    };
                    if let Err(e) = journal::ask(&self.journal, msg).await {
                        tracing::warn!(error = %e, kind, "FHIR pharmacy poll stopped: journal refused a change");
                        return;
                    }
                }
            }
        }
    }

    /// Flags changed since their cursor set the priority of the flagged patients' entries. The
    /// first poll reads every Flag the EHR has, so flags set before the gateway started count.
    async fn poll_flags(&self, config: &config::FlagsConfig) {
        let start = humantime::format_rfc3339_millis(std::time::UNIX_EPOCH).to_string();
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let applied = self
            .poll_changes("Flag", FLAG_CURSOR, start, |f| {
                flag::effect(f, config, &now).map(|e| vec![e])
            })
            .await;
        let released = self.release_deleted_flags().await;
        self.counters().flags_applied += applied + released;
    }

    /// A Flag deleted in the EHR never shows in a `_lastUpdated` search: every flag that raises
    /// an open entry is read again, and one the EHR no longer has releases its patient.
    async fn release_deleted_flags(&self) -> u64 {
        let Ok(client) = self.usable() else {
            return 0;
        };
        let raising = match journal::ask(&self.journal, RaisingFlags).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "raising flags unreadable");
                return 0;
            }
        };
        let mut released = 0;
        for (flag_id, patient_id) in raising {
            let read = client.read("Flag", &flag_id).await;
            self.outcome(&read);
            if !matches!(read, Ok(None)) {
                continue;
            }
            let gone = serde_json::json!({
                "resourceType": "Flag", "id": flag_id,
                "meta": { "versionId": "deleted" }, "status": "deleted",
            });
            let effect = FromEhr::Flag {
                flag_id,
                patient_id,
                raise: None,
            };
            let msg = EhrInbound {
                item: protocol::received(&gone),
                effects: vec![effect],
                resources: Vec::new(),
            };
            match journal::ask(&self.journal, msg).await {
                Ok(r) if !r.duplicate => released += 1,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "deleted flag not released"),
            }
        }
        released
    }

    /// Reads the resources of `kind` changed since the cursor `key` (`start` at the first
    /// poll) and journals each version `effect` takes (`Some`, its queue effects, possibly
    /// none) once (source id `<id>/<versionId>`), with its effects and the resource for the
    /// other domains' hooks in the same transaction. Answers how many new versions were
    /// journaled.
    async fn poll_changes(
        &self,
        kind: &str,
        key: &str,
        start: String,
        effect: impl Fn(&serde_json::Value) -> Option<Vec<crate::queue::FromEhr>>,
    ) -> u64 {
        let Some(cursor) = self.cursor(key, start).await else {
            return 0;
        };
        let changed = match self.usable() {
            Ok(client) => client.changed(kind, &cursor).await,
            Err(e) => Err(e),
        };
        self.outcome(&changed);
        let Ok(changed) = changed else {
            return 0;
        };
        let (mut applied, mut effective) = (0, 0);
        let Ok(client) = self.usable() else {
            return 0;
        };
        for r in &changed {
            if !client.conforms(r) {
                applied += 1;
                continue;
            }
            if let Some(effects) = effect(r) {
                // The resource goes along for the other domains' hooks (lab, pharmacy).
                let msg = EhrInbound {
                    item: protocol::received(r),
                    effects,
                    resources: vec![r.clone()],
                };
                match journal::ask(&self.journal, msg).await {
                    Ok(receipt) if !receipt.duplicate => effective += 1,
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(error = %err, kind, "FHIR poll stopped: journal refused a change");
                        break;
                    }
                }
            }
            applied += 1;
        }
        let seen = changed[..applied]
            .iter()
            .map(|r| r["meta"]["lastUpdated"].as_str());
        self.advance_cursor(key, &cursor, seen).await;
        effective
    }

    /// Delivers one outbox row. Answers whether it is settled (`Ok`) or why it failed, and
    /// whether that is for good.
    async fn deliver(&self, row: &OutboxRow) -> Result<(), (String, bool)> {
        match row.kind() {
            encounter::KIND => self.deliver_encounter(row).await,
            waits::KIND => self.deliver_suggestion(row).await,
            CREATE => self.deliver_created(row).await,
            registration::NEW_PATIENT | registration::WALK_IN => {
                self.deliver_registration(row).await
            }
            _ => self.deliver_patient(row).await,
        }
    }

    /// The visit's Encounter, opened (conditional create on our identifier, so a retry after
    /// a lost answer finds the first) or moved on with `If-Match`; a 412 reads it again.
    async fn deliver_encounter(&self, row: &OutboxRow) -> Result<(), (String, bool)> {
        let n: encounter::EncounterNotice = serde_json::from_slice(&row.payload)
            .map_err(|e| (format!("unusable Encounter notice: {e}"), true))?;
        let client = self.usable().map_err(|e| (e.to_string(), false))?;
        let failed = |e: FhirError| (e.to_string(), !e.is_retryable());
        let tag = &self.config.tag_system;
        let fresh = encounter::create(&n, tag);
        protocol::conform(&fresh).map_err(|e| (format!("not sent: {e}"), true))?;
        let r = client
            .create("Encounter", &fresh, &encounter::search(&n))
            .await;
        self.outcome(&r);
        let mut current = r.map_err(failed)?;
        for _ in 0..3 {
            let Some(moved) = encounter::advance(&current, &n, tag, journal::now_ms()) else {
                self.counters().encounters_sent += 1;
                tracing::info!(entry = n.entry, status = %n.status, "FHIR Encounter up to date");
                return Ok(());
            };
            protocol::conform(&moved).map_err(|e| (format!("not sent: {e}"), true))?;
            let r = client.update("Encounter", &moved).await;
            self.outcome(&r);
            match r {
                Ok(_) => {
                    self.counters().encounters_sent += 1;
                    tracing::info!(entry = n.entry, status = %n.status, "FHIR Encounter moved on");
                    return Ok(());
                }
                Err(FhirError::VersionChanged) => {
                    let id = current["id"].as_str().unwrap_or_default().to_string();
                    let read = client.read("Encounter", &id).await;
                    self.outcome(&read);
                    current = read
                        .map_err(failed)?
                        .ok_or_else(|| (format!("Encounter {id} was deleted"), true))?;
                }
                Err(e) => return Err(failed(e)),
            }
        }
        Err((
            "the Encounter keeps changing under the update".into(),
            false,
        ))
    }

    /// A new Patient or a walk-in's Appointment, created once (conditionally on our
    /// identifier) and linked back to its entry: the patient's demographics, then (through the
    /// journal writer) the walk-in's own Appointment; or the entry's appointment reference.
    async fn deliver_registration(&self, row: &OutboxRow) -> Result<(), (String, bool)> {
        let r: registration::Registration = serde_json::from_slice(&row.payload)
            .map_err(|e| (format!("unusable registration: {e}"), true))?;
        let (kind, body) = registration::resource(&r, &self.config.tag_system);
        protocol::conform(&body).map_err(|e| (format!("not sent: {e}"), true))?;
        let client = self.usable().map_err(|e| (e.to_string(), false))?;
        let created = client.create(kind, &body, &registration::search(&r)).await;
        self.outcome(&created);
        let created = created.map_err(|e| (e.to_string(), !e.is_retryable()))?;
        let journal_err = |e: journal::JournalError| (e.to_string(), false);
        let id = created["id"].as_str().unwrap_or_default().to_string();
        let link = match r.what {
            registration::What::Patient { .. } => {
                let p = protocol::decode_patient(created).map_err(|e| (e.to_string(), true))?;
                self.seen(&p, true).await.map_err(journal_err)?;
                let system = &self.config.identifier_system;
                QueueLink {
                    entry: r.entry,
                    demographics: Some(protocol::demographics(&p, system, "ehr")),
                    appointment_ref: None,
                }
            }
            registration::What::Appointment { .. } => QueueLink {
                entry: r.entry,
                demographics: None,
                appointment_ref: Some(format!("Appointment/{id}")),
            },
        };
        journal::ask(&self.journal, link)
            .await
            .map_err(journal_err)?;
        self.counters().registered += 1;
        tracing::info!(entry = r.entry, kind, id = %id, "registered in the EHR");
        Ok(())
    }

    /// A suggestion for scheduling staff, created once (conditionally on its identifier).
    async fn deliver_suggestion(&self, row: &OutboxRow) -> Result<(), (String, bool)> {
        let s: Suggestion = serde_json::from_slice(&row.payload)
            .map_err(|e| (format!("unusable suggestion: {e}"), true))?;
        let r = waits::suggestion(
            &s.overrun,
            s.suggest,
            &s.identifier,
            s.owner.as_deref(),
            &self.config.tag_system,
            &s.at,
        );
        protocol::conform(&r).map_err(|e| (format!("not sent: {e}"), true))?;
        let kind = match s.suggest {
            config::Suggest::Task => "Task",
            config::Suggest::Communication => "Communication",
        };
        let client = self.usable().map_err(|e| (e.to_string(), false))?;
        let search = format!("identifier={}|{}", waits::IDENTIFIER_SYSTEM, s.identifier);
        let created = client.create(kind, &r, &search).await;
        self.outcome(&created);
        created.map_err(|e| (e.to_string(), !e.is_retryable()))?;
        tracing::info!(queue = %s.overrun.queue, kind, "scheduling suggestion sent to the EHR");
        Ok(())
    }

    /// A resource another family committed for the EHR (a payment's PaymentNotice, a visit's
    /// suggested ChargeItem), created
    /// once: a retry after a lost answer finds the first by its identifier.
    async fn deliver_created(&self, row: &OutboxRow) -> Result<(), (String, bool)> {
        let r: serde_json::Value = serde_json::from_slice(&row.payload)
            .map_err(|e| (format!("unusable resource: {e}"), true))?;
        let kind = match r["resourceType"].as_str() {
            Some("PaymentNotice") => "PaymentNotice",
            Some("ChargeItem") => "ChargeItem",
            other => return Err((format!("{other:?} is not created this way"), true)),
        };
        protocol::conform(&r).map_err(|e| (format!("not sent: {e}"), true))?;
        let id = &r["identifier"][0];
        let (Some(system), Some(value)) = (id["system"].as_str(), id["value"].as_str()) else {
            return Err(("a created resource needs an identifier".into(), true));
        };
        let client = self.usable().map_err(|e| (e.to_string(), false))?;
        let created = client
            .create(kind, &r, &format!("identifier={system}|{value}"))
            .await;
        self.outcome(&created);
        created.map_err(|e| (e.to_string(), !e.is_retryable()))?;
        tracing::info!(kind, "resource created in the EHR");
        Ok(())
    }

    /// Measures the waits: a queue newly past its slots raises a notice and a suggestion
    /// (committed together); a queue back within them may raise one again later.
    async fn check_waits(&self, config: &config::WaitsConfig) {
        let list = QueueList {
            queue: None,
            closed_since: None,
        };
        let entries = match journal::ask(&self.journal, list).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "queue unreadable; waits not measured");
                return;
            }
        };
        let get = FhirState {
            key: OVERRUNS.into(),
            set: None,
        };
        let Ok(raised) = journal::ask(&self.journal, get).await else {
            return;
        };
        let raised: std::collections::BTreeSet<String> = raised
            .and_then(|r| serde_json::from_str(&r).ok())
            .unwrap_or_default();
        let slots = self.counters().slots.clone();
        let now = journal::now_ms();
        let default_slot = i64::from(config.slot_minutes) * 60;
        let measured = waits::measure(&entries, &slots, default_slot, now);
        let over: std::collections::BTreeSet<String> = measured
            .iter()
            .filter(|(_, o)| o.is_some())
            .map(|(q, _)| q.clone())
            .collect();
        let mut state = raised.intersection(&over).cloned().collect();
        for o in measured.into_values().flatten() {
            if raised.contains(&o.queue) {
                continue;
            }
            let mut next: std::collections::BTreeSet<String> = state;
            next.insert(o.queue.clone());
            let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
            let s = Suggestion {
                identifier: format!("{}/{}/{now}", self.facility, o.queue),
                overrun: o,
                suggest: config.suggest,
                owner: config.owner.clone(),
                at,
            };
            let text = waits::text(&s.overrun);
            let item = journal::NewItem {
                source: "queue".into(),
                source_id: None,
                kind: waits::KIND.into(),
                key: format!("queue:{}", s.overrun.queue),
                schema: format!("clinic-gateway/{}@1", waits::KIND),
                payload: serde_json::to_vec(&s).unwrap_or_default(),
                reply: None,
                occurred_at: Some(now),
                destinations: vec![crate::CLOUD.into(), DESTINATION.into()],
            };
            let raise = RaiseNotice {
                kind: waits::KIND.into(),
                text,
                item: Some(item),
                state: Some((OVERRUNS.into(), json_set(&next))),
            };
            match journal::ask(&self.journal, raise).await {
                Ok(()) => {
                    self.counters().suggestions += 1;
                    tracing::warn!(queue = %s.overrun.queue, waited_min = s.overrun.waited_min, slot_min = s.overrun.slot_min, "waits exceed the booked slots");
                    state = next;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "wait notice not committed; measured again later");
                    return;
                }
            }
        }
        if state != raised {
            let set = FhirState {
                key: OVERRUNS.into(),
                set: Some(json_set(&state)),
            };
            if let Err(e) = journal::ask(&self.journal, set).await {
                tracing::warn!(error = %e, "wait state not saved");
            }
        }
    }

    /// The patient's current local change, if any, as a conditional update.
    async fn deliver_patient(&self, row: &OutboxRow) -> Result<(), (String, bool)> {
        let id = serde_json::from_slice::<serde_json::Value>(&row.payload)
            .ok()
            .and_then(|v| v["patient_id"].as_str().map(str::to_string))
            .ok_or_else(|| ("outbox row names no patient".to_string(), true))?;
        let journal_err = |e: journal::JournalError| (e.to_string(), false);
        let cached = journal::ask(&self.journal, FhirGet { id: id.clone() })
            .await
            .map_err(journal_err)?;
        // Sent already with a later row, reverted, or moved into a conflict: nothing to send.
        let Some((local, version)) = cached.and_then(|c| Some((c.local?, c.version_id?))) else {
            return Ok(());
        };
        let client = self.usable().map_err(|e| (e.to_string(), false))?;
        let sent = protocol::tagged(&local, &self.config.tag_system);
        let body = serde_json::to_value(&sent).map_err(|e| (e.to_string(), true))?;
        protocol::conform(&body).map_err(|e| (format!("not sent: {e}"), true))?;
        let r = client.update_patient(&sent, &version).await;
        self.outcome(&r);
        match r {
            Ok(stored) => {
                let written = FhirWritten {
                    sent: Box::new(sent),
                    stored: Box::new(stored),
                };
                journal::ask(&self.journal, written)
                    .await
                    .map_err(journal_err)?;
                self.counters().updates_sent += 1;
                tracing::info!(patient = %id, "FHIR Patient update accepted");
                Ok(())
            }
            Err(FhirError::VersionChanged) => {
                // Someone else wrote since our last sync: read their version; the journal keeps
                // both as a conflict (or settles it if they made the same change).
                let remote = client.read_patient(&id).await;
                self.outcome(&remote);
                let remote = remote.map_err(|e| (e.to_string(), !e.is_retryable()))?;
                self.seen(&remote, false).await.map_err(journal_err)?;
                Ok(())
            }
            Err(e) => Err((e.to_string(), !e.is_retryable())),
        }
    }
}

impl Shared {
    /// One pass over today's appointments: due ones are queued (once: the check-in's request id
    /// is the appointment's), cancelled, no-show and moved ones close their open entry.
    async fn appointments(&self, config: &config::AppointmentsConfig) {
        let client = match self.usable() {
            Ok(c) => c,
            Err(e) => {
                self.outcome::<()>(&Err(e));
                return;
            }
        };
        let now = journal::now_ms();
        let offset = config
            .utc_offset_min
            .unwrap_or_else(|| crate::clock::offset_min(now));
        let day = |offset_days: i64| {
            crate::queue::schedule::local_day(now + offset_days * 86_400_000, offset)
        };
        let today = day(0);
        let listed = client.appointments_between(&day(-1), &day(1)).await;
        self.outcome(&listed);
        let Ok(listed) = listed else { return };
        let open = match journal::ask(
            &self.journal,
            QueueList {
                queue: Some(config.queue.clone()),
                closed_since: None,
            },
        )
        .await
        {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(error = %e, "queue unreadable; appointments not applied");
                return;
            }
        };
        let mut seen = std::collections::BTreeSet::new();
        self.counters().slots = listed
            .iter()
            .filter_map(|a| Some((format!("Appointment/{}", a.id.as_deref()?), slot_s(a)?)))
            .collect();
        for a in &listed {
            let id = a.id.clone().unwrap_or_default();
            seen.insert(format!("Appointment/{id}"));
            let step = protocol::appointment_step(a, &today, offset, config.check_in);
            // A walk-in's Appointment we registered belongs to an entry queued already.
            let ours = a.meta.as_ref().is_some_and(|m| {
                m.tag
                    .iter()
                    .any(|t| t.system.as_deref() == Some(&self.config.tag_system))
            });
            if ours && matches!(step, AppointmentStep::Queue { .. }) {
                continue;
            }
            self.hand_over_types(a).await;
            self.apply_appointment(config, &id, step, Some(a), &open)
                .await;
        }
        // Entries of appointments no longer listed today: moved to another day or deleted.
        for entry in &open {
            let Some(id) = entry
                .appointment_ref
                .as_deref()
                .filter(|r| !seen.contains(*r))
                .and_then(|r| r.strip_prefix("Appointment/"))
            else {
                continue;
            };
            let read = match client.read_appointment(id).await {
                Ok(read) => read,
                Err(e) => {
                    self.outcome::<()>(&Err(e));
                    continue;
                }
            };
            let step = match &read {
                Some(a) => protocol::appointment_step(a, &today, offset, config.check_in),
                None => AppointmentStep::Close(Closing::Cancelled),
            };
            self.apply_appointment(config, id, step, read.as_ref(), &open)
                .await;
        }
        self.counters().last_appointments_at = Some(journal::now_ms());
    }

    /// An appointment's type and service types go to the lab's hook (the results its visit
    /// requires) before it is queued, once per version. Journaled under a source of their own,
    /// so that the same version closing its entry is not taken for a repeat.
    async fn hand_over_types(&self, a: &model::Appointment) {
        let Ok(v) = serde_json::to_value(a) else {
            return;
        };
        if v.get("appointmentType").is_none() && v.get("serviceType").is_none() {
            return;
        }
        let mut item = protocol::received(&v);
        item.source = "fhir:Appointment.type".into();
        let msg = EhrInbound {
            item,
            effects: Vec::new(),
            resources: vec![v],
        };
        if let Err(e) = journal::ask(&self.journal, msg).await {
            tracing::warn!(appointment = ?a.id, error = %e, "appointment types not handed over");
        }
    }

    async fn apply_appointment(
        &self,
        config: &config::AppointmentsConfig,
        id: &str,
        step: AppointmentStep,
        read: Option<&model::Appointment>,
        open: &[Entry],
    ) {
        let reference = format!("Appointment/{id}");
        match step {
            AppointmentStep::Wait => {}
            AppointmentStep::Queue { patient_id } => {
                if open
                    .iter()
                    .any(|e| e.appointment_ref.as_deref() == Some(&reference))
                {
                    return;
                }
                let demographics = self.patient_demographics(&patient_id).await;
                let check_in = CheckIn {
                    patient_ref: demographics.as_ref().and_then(|d| d.identifier.clone()),
                    appointment_ref: Some(reference),
                    priority: Priority::Normal,
                    priority_reason: None,
                    request_id: Some(format!("appointment:{id}")),
                    patient: None,
                    demographics,
                    unknown_to_ehr: false,
                    printer: None,
                    contact: None,
                };
                // Not printed: the patient is not at the kiosk; the ticket comes at check-in.
                let msg = QueueCheckIn {
                    queue: config.queue.clone(),
                    check_in,
                    ticket: None,
                };
                match journal::ask(&self.journal, msg).await {
                    Ok((entry, false)) => {
                        tracing::info!(appointment = %id, ticket = %entry.ticket, "appointment queued")
                    }
                    Ok((_, true)) => {}
                    Err(e) => {
                        tracing::warn!(appointment = %id, error = %e, "appointment not queued")
                    }
                }
            }
            AppointmentStep::Close(why) => {
                if !open
                    .iter()
                    .any(|e| e.appointment_ref.as_deref() == Some(&reference))
                {
                    return;
                }
                // Journaled once per version of the appointment (or its deletion), with its
                // effect: closing the entry and, unless a no-show, telling the patient.
                let item = match read.map(serde_json::to_value) {
                    Some(Ok(v)) => protocol::received(&v),
                    _ => protocol::received(&serde_json::json!({
                        "resourceType": "Appointment", "id": id,
                        "meta": { "versionId": "deleted" }, "status": "deleted",
                    })),
                };
                let appointment_refs = vec![reference];
                let effect = match why.clone() {
                    Closing::Cancelled => FromEhr::Cancelled { appointment_refs },
                    Closing::NoShow => FromEhr::NoShow { appointment_refs },
                    Closing::Moved(start) => FromEhr::Moved {
                        appointment_refs,
                        start,
                    },
                };
                let msg = EhrInbound {
                    item,
                    effects: vec![effect],
                    resources: Vec::new(),
                };
                match journal::ask(&self.journal, msg).await {
                    Ok(_) => tracing::info!(appointment = %id, ?why, "appointment entry closed"),
                    Err(e) => {
                        tracing::info!(appointment = %id, error = %e, "appointment entry left as it is")
                    }
                }
            }
        }
    }

    /// A patient's demographics from the cache, or else read from the EHR (and cached).
    async fn patient_demographics(&self, id: &str) -> Option<Demographics> {
        let system = &self.config.identifier_system;
        if let Ok(Some(c)) = journal::ask(&self.journal, FhirGet { id: id.into() }).await {
            return Some(protocol::demographics(c.current(), system, "cache"));
        }
        let read = self.usable().ok()?.read_patient(id).await;
        self.outcome(&read);
        let p = read.ok()?;
        if let Err(e) = self.seen(&p, true).await {
            tracing::warn!(error = %e, "FHIR Patient not cached");
        }
        Some(protocol::demographics(&p, system, "ehr"))
    }
}

/// A suggestion as committed to the outbox: everything needed to create it later, offline.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Suggestion {
    pub overrun: waits::Overrun,
    /// Unique per overrun, in [`waits::IDENTIFIER_SYSTEM`].
    pub identifier: String,
    pub suggest: config::Suggest,
    /// Who should act (a reference), if configured.
    pub owner: Option<String>,
    /// When it was raised (RFC 3339).
    pub at: String,
}

fn json_set(s: &std::collections::BTreeSet<String>) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "[]".into())
}

/// An appointment's booked length in seconds: `minutesDuration`, else `end` − `start`.
fn slot_s(a: &model::Appointment) -> Option<i64> {
    if let Some(m) = a.extra.get("minutesDuration").and_then(|m| m.as_i64()) {
        return Some(m * 60);
    }
    let end = a.extra.get("end")?.as_str()?;
    waits::seconds_between(a.start.as_deref()?, end).filter(|s| *s > 0)
}

/// The first poll looks back one interval (and a minute for clock skew) from now.
fn start_cursor(poll_interval_s: u64) -> String {
    let back = Duration::from_secs(poll_interval_s + 60);
    let at = std::time::SystemTime::now()
        .checked_sub(back)
        .unwrap_or(std::time::UNIX_EPOCH);
    humantime::format_rfc3339_millis(at).to_string()
}

pub struct FhirSpawn {
    /// With its file paths resolved against the config file's folder.
    pub config: FhirConfig,
    /// The gateway's facility id (in the identifiers of the Encounters it opens).
    pub facility: String,
    pub journal: Addr<JournalWriter>,
    /// Where the web layer finds the running connector.
    pub slot: FhirSlot,
}

impl Spawn for FhirSpawn {
    fn kind(&self) -> &'static str {
        "fhir-connector"
    }

    fn spawn(&self, name: &str, supervisor: Addr<Supervisor>) -> Box<dyn Running> {
        let config = self.config.clone();
        let journal = self.journal.clone();
        let facility = self.facility.clone();
        let refused = Arc::new(AtomicU64::new(0));
        let refusals = {
            let (journal, refused) = (journal.clone(), refused.clone());
            Box::new(move |e: &protocol::DecodeError| {
                refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "a resource from the EHR was refused and not applied");
                journal.do_send(AuditRecord {
                    actor: NAME.into(),
                    action: "fhir.refused".into(),
                    detail: serde_json::json!({ "reason": e.to_string() }).to_string(),
                });
            })
        };
        // An update in flight stays in flight in the journal and is sent again at start.
        let (running, addr) =
            link::start_actor(name, supervisor, Duration::ZERO, move |link| FhirActor {
                shared: Arc::new(Shared {
                    client: Client::new(&config, refusals).map_err(|e| e.to_string()),
                    refused,
                    config,
                    facility,
                    journal,
                    health: link.health,
                    state: Mutex::default(),
                }),
                shutdown: link.shutdown,
            });
        self.slot.set(Some(addr.clone()));
        Box::new(Handle {
            running,
            addr,
            slot: self.slot.clone(),
        })
    }
}

struct Handle {
    running: Box<dyn Running>,
    addr: Addr<FhirActor>,
    slot: FhirSlot,
}

impl Running for Handle {
    fn stop(self: Box<Self>) -> StopFuture {
        // A replacement may have started already; only our own address is removed.
        self.slot.release(&self.addr);
        self.running.stop()
    }

    #[cfg(feature = "fault-hooks")]
    fn inject_panic(&mut self) -> bool {
        self.running.inject_panic()
    }
}

pub struct FhirActor {
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
}

impl Actor for FhirActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Err(e) = &self.shared.client {
            self.shared.health.report(
                HealthState::Degraded,
                Some(format!("cannot set up the EHR client: {e}")),
            );
        }
        let (shared, shutdown) = (self.shared.clone(), self.shutdown.clone());
        let interval = Duration::from_secs(shared.config.poll_interval_s);
        let poll = every(interval, shared.clone(), shutdown.clone(), move || {
            let shared = shared.clone();
            async move { shared.poll().await }
        });
        ctx.spawn(poll.into_actor(self));
        ctx.spawn(delivery_loop(self.shared.clone(), self.shutdown.clone()).into_actor(self));
        if let Some(a) = self.shared.config.appointments.clone() {
            let shared = self.shared.clone();
            let interval = Duration::from_secs(a.poll_interval_s);
            let pass = every(interval, shared.clone(), shutdown.clone(), move || {
                let (shared, a) = (shared.clone(), a.clone());
                async move { shared.appointments(&a).await }
            });
            ctx.spawn(pass.into_actor(self));
        }
        if let Some(w) = self.shared.config.waits.clone() {
            let shared = self.shared.clone();
            let interval = Duration::from_secs(w.check_interval_s);
            let pass = every(interval, shared.clone(), shutdown.clone(), move || {
                let (shared, w) = (shared.clone(), w.clone());
                async move {
                    shared.check_waits(&w).await;
                    shared.counters().last_waits_at = Some(journal::now_ms());
                }
            });
            ctx.spawn(pass.into_actor(self));
        }
        if let Some(r) = self.shared.config.results.clone() {
            let shared = self.shared.clone();
            let interval = Duration::from_secs(r.poll_interval_s);
            let pass = every(interval, shared.clone(), shutdown.clone(), move || {
                let shared = shared.clone();
                async move { shared.poll_results().await }
            });
            ctx.spawn(pass.into_actor(self));
        }
        if let Some(p) = self.shared.config.pharmacy.clone() {
            let shared = self.shared.clone();
            let interval = Duration::from_secs(p.poll_interval_s);
            let pass = every(interval, shared.clone(), shutdown.clone(), move || {
                let shared = shared.clone();
                async move { shared.poll_pharmacy().await }
            });
            ctx.spawn(pass.into_actor(self));
        }
        if let Some(f) = self.shared.config.flags.clone() {
            let shared = self.shared.clone();
            let interval = Duration::from_secs(f.poll_interval_s);
            let pass = every(interval, shared.clone(), shutdown, move || {
                let (shared, f) = (shared.clone(), f.clone());
                async move { shared.poll_flags(&f).await }
            });
            ctx.spawn(pass.into_actor(self));
        }
    }
}

impl Handler<Lookup> for FhirActor {
    type Result = ResponseFuture<Found>;

    fn handle(&mut self, msg: Lookup, _: &mut Context<Self>) -> Self::Result {
        let shared = self.shared.clone();
        Box::pin(async move { shared.lookup(msg.0).await })
    }
}

impl Handler<GetStatus> for FhirActor {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.shared.status())
    }
}

/// Runs `pass` every `every` (the first at once) until shutdown, skipping it while the
/// connector is suspended.
async fn every<F: Future<Output = ()>>(
    every: Duration,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    mut pass: impl FnMut() -> F,
) {
    loop {
        if !shared.suspended().await {
            pass().await;
        }
        if link::stop_asked_during(&mut shutdown, every).await {
            return;
        }
    }
}

async fn delivery_loop(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    // An update left in flight by an earlier run of this actor (one that panicked) goes back
    // in line; at start none can be in flight legitimately.
    journal::put_back_in_flight(
        &shared.journal,
        DESTINATION,
        "the FHIR connector stopped while sending".into(),
    )
    .await;
    let signal = journal::signal(&shared.journal, DESTINATION).await;
    loop {
        // Paused by refused credentials: claiming now would only spend the rows' attempts.
        // Suspended: the rows wait, in order, for an admin to resume the connector.
        if matches!(shared.usable(), Err(FhirError::Credentials(_))) || shared.suspended().await {
            if link::stop_asked_during(&mut shutdown, Duration::from_secs(1)).await {
                return;
            }
            continue;
        }
        let claim = Claim {
            destination: DESTINATION.into(),
            limit: 1,
        };
        let row = match journal::ask(&shared.journal, claim).await {
            Ok(mut rows) => rows.pop(),
            Err(e) => {
                tracing::error!(error = %e, "cannot claim FHIR updates");
                None
            }
        };
        let Some(row) = row else {
            tokio::select! {
                _ = signal.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
            continue;
        };
        let settled = match shared.deliver(&row).await {
            Ok(()) => journal::ask(&shared.journal, Delivered(vec![row.id]))
                .await
                .map(|_| ()),
            Err((error, permanent)) => {
                tracing::warn!(row = row.id, %error, permanent, "FHIR update not delivered");
                let failed = Failed {
                    destination: DESTINATION.into(),
                    ids: Some(vec![row.id]),
                    error,
                    permanent,
                };
                journal::ask(&shared.journal, failed).await.map(|_| ())
            }
        };
        if let Err(e) = settled {
            tracing::error!(error = %e, "cannot settle a FHIR update; it is sent again");
        }
    }
}
