//! Clinical alerts: findings clinical staff must acknowledge (a critical lab value, a drug
//! interaction or another issue the pharmacy or EHR detected, a prescribed allergen), each tied to a queue entry and shown on the page to the
//! roles that see notices (clinical, admin), never to the front desk. An alert not
//! acknowledged within `[alerts] ack_within_s` is escalated to a second staff group
//! (`escalate_to`), then to the cloud (`alert.escalated`). Other domains raise alerts in their
//! own transaction with [`store::raise`]; the supervised [`EscalateSpawn`] child escalates
//! them, its times computed from the journal, so a restart keeps them.
//!
//! **Invariant:** an alert names a ticket, a queue (or, for a patient not in the queue, the
//! message or resource that raised it), a test or drug code and a reason code, never a result
//! value, a drug name or patient data.

pub mod config;
pub mod store;

use crate::journal::{self, JournalError, JournalWriter, Tx, Work};
use crate::supervisor::{HealthState, Running, Spawn, Supervisor, link};
use actix::Addr;
use config::AlertsConfig;
use serde::Serialize;
use std::time::Duration;

/// The supervisor's name for the escalation watch.
pub const NAME: &str = "alert-escalation";

/// The kind of an alert raised by a critical lab result.
pub const CRITICAL_RESULT: &str = "critical_result";
/// The kind of an alert raised by an issue the pharmacy or EHR detected (an interaction, a
/// duplicate therapy): a FHIR DetectedIssue, or an RDE's alert segment.
pub const DETECTED_ISSUE: &str = "detected_issue";
/// The kind of an alert raised by a prescription whose medication code is one the patient is
/// allergic to.
pub const ALLERGY: &str = "allergy";

/// An alert to raise.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert {
    /// What it is about, e.g. [`CRITICAL_RESULT`].
    pub kind: String,
    /// What raised it (`<item source>:<source id>`): the same origin raises an alert for an
    /// entry and code once.
    pub origin: String,
    /// The patient's queue entry (its id, ticket and queue); `None` for a patient not in the
    /// queue (a critical result still reaches clinical staff).
    pub entry: Option<AlertEntry>,
    /// The test (LOINC) or drug code.
    pub code: String,
    /// Why, as a code: `flag:HH`, `limit:high`, ...
    pub reason: String,
}

/// The queue entry an alert is about.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEntry {
    pub id: i64,
    pub ticket: String,
    pub queue: String,
}

impl AlertEntry {
    pub fn of(entry: &crate::queue::Entry) -> AlertEntry {
        AlertEntry {
            id: entry.id,
            ticket: entry.ticket.clone(),
            queue: entry.queue.clone(),
        }
    }
}

/// An alert as staff and the API see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub id: i64,
    pub kind: String,
    /// The queue entry's id, ticket and queue; null for a patient not in the queue.
    pub entry: Option<i64>,
    pub ticket: Option<String>,
    pub queue: Option<String>,
    /// What raised it (`<item source>:<source id>`), so staff can find a patient not in the
    /// queue in the sender's system.
    pub origin: String,
    pub code: String,
    pub reason: String,
    pub raised_at: i64,
    /// 0 raised, 1 escalated to the second staff group, 2 escalated to the cloud too.
    pub level: i64,
    pub escalated_to: Option<String>,
    pub escalated_at: Option<i64>,
    pub acknowledged_at: Option<i64>,
    pub acknowledged_by: Option<String>,
}

/// Alerts, newest first: the open ones, or `all`.
#[derive(Debug)]
pub struct ListAlerts {
    pub all: bool,
    pub limit: usize,
}

/// Acknowledges an alert, audited with `by`.
#[derive(Debug)]
pub struct AckAlert {
    pub id: i64,
    pub by: String,
}

/// Escalates the alerts whose time ran out.
#[derive(Debug)]
pub struct EscalateDue {
    pub ack_within_ms: i64,
    pub group: String,
}

crate::journal_work!(ListAlerts, AckAlert, EscalateDue);

impl Work for ListAlerts {
    type Output = Vec<Alert>;
    const READ_ONLY: bool = true;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::alerts(tx, self.all, self.limit)
    }
}

impl Work for AckAlert {
    type Output = Alert;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        let now = tx.now();
        store::acknowledge(tx, self.id, &self.by, now)
    }
}

impl Work for EscalateDue {
    type Output = Vec<Alert>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        let now = tx.now();
        store::escalate_due(tx, self.ack_within_ms, &self.group, now)
    }
}

/// How often the watch looks for alerts to escalate: a tenth of the time to acknowledge,
/// between 1 and 15 s, so an escalation is at most that late (an alert raised meanwhile needs
/// no wake-up).
fn every(config: &AlertsConfig) -> Duration {
    Duration::from_secs((config.ack_within_s / 10).clamp(1, 15))
}

/// Starts the escalation watch.
pub struct EscalateSpawn {
    pub config: AlertsConfig,
    pub journal: Addr<JournalWriter>,
}

impl Spawn for EscalateSpawn {
    fn kind(&self) -> &'static str {
        "alert-escalation"
    }

    fn spawn(&self, name: &str, supervisor: Addr<Supervisor>) -> Box<dyn Running> {
        let (config, journal) = (self.config.clone(), self.journal.clone());
        link::start(name, supervisor, Duration::from_secs(1), move |mut link| {
            Box::pin(async move {
                link.health.report(HealthState::Healthy, None);
                let ask = || EscalateDue {
                    ack_within_ms: config.ack_within_ms(),
                    group: config.escalate_to.as_str().into(),
                };
                loop {
                    match journal::ask(&journal, ask()).await {
                        Ok(escalated) => {
                            for a in escalated {
                                tracing::warn!(alert = a.id, ticket = ?a.ticket, level = a.level, "clinical alert escalated");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "alerts not escalated"),
                    }
                    if link::stop_asked_during(&mut link.shutdown, every(&config)).await {
                        return Ok(());
                    }
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::policy::{Role, allowed, permits};

    #[test]
    fn alerts_are_for_clinical_staff_and_admins_never_the_front_desk() {
        for (method, path) in [
            ("GET", "/api/v1/alerts"),
            ("POST", "/api/v1/alerts/7/ack"),
            ("POST", "/alerts/ack"),
        ] {
            let who = allowed(method, path);
            assert!(permits(who, Role::Clinical), "{path}");
            assert!(permits(who, Role::Admin), "{path}");
            assert!(!permits(who, Role::FrontDesk), "{path}");
            assert!(!permits(who, Role::Facilities), "{path}");
        }
    }

    #[test]
    fn the_watch_looks_often_enough_for_short_and_long_limits() {
        let every_for = |s: u64| {
            every(&AlertsConfig {
                ack_within_s: s,
                ..AlertsConfig::default()
            })
        };
        assert_eq!(every_for(1), Duration::from_secs(1));
        assert_eq!(every_for(60), Duration::from_secs(6));
        assert_eq!(every_for(3600), Duration::from_secs(15));
    }
}
