//! Suspended integrations: an integration whose peer reported a security problem (the cloud's
//! `suspend-integration` command, or refused credentials coming too fast) stops sending and receiving until an admin re-authorizes it
//! (`POST /api/v1/integrations/{name}/resume`, `clinic-gateway integration resume NAME`). The
//! suspension is kept in the journal, so it survives a restart; nothing queued is lost, as the
//! outbox rows stay where they are. Suspending raises a staff notice and the cloud event
//! `integration.suspended`; both changes are audited. The MLLP listener also suspends itself
//! when refused senders come faster than `[connectors.hl7v2] suspend_after_refusals` per
//! `refusal_window_s` ([`protocol::RefusalWindow`]).
//!
//! The integrations ask [`IsSuspended`] before each message they send, each connection they
//! accept and each poll, so a suspension or resumption made by the CLI on the journal file is seen too.
//!
//! **Invariant:** only the integrations in [`INTEGRATIONS`] can be suspended; the relay, which
//! carries the command that would lift nothing without it, cannot.

pub mod protocol;
pub mod store;

use crate::journal::{JournalError, NewItem, Tx, Work};
use serde_json::json;

/// The integrations that honour a suspension, by their supervisor names: the MLLP listener,
/// the MLLP sender and the FHIR connector. Spelled out rather than imported, as the connectors
/// depend on this module (the wiring's tests check the names).
pub const INTEGRATIONS: &[&str] = &["hl7v2-mllp", "hl7v2-sender", "fhir"];

/// Suspends an integration (audited with `by`); answers false if it was suspended already.
#[derive(Debug)]
pub struct Suspend {
    pub name: String,
    pub reason: String,
    pub by: String,
}

/// Lifts an integration's suspension (audited with `by`); not suspended is `NotFound`.
#[derive(Debug)]
pub struct Resume {
    pub name: String,
    pub by: String,
}

/// Why an integration is suspended, if it is.
#[derive(Debug)]
pub struct IsSuspended {
    pub name: String,
}

crate::journal_work!(Suspend, Resume, IsSuspended);

fn event(kind: &str, name: &str, payload: serde_json::Value) -> NewItem {
    let key = format!("integration:{name}");
    NewItem::event("gateway", kind, key, &payload, &[crate::CLOUD])
}

impl Work for Suspend {
    type Output = bool;
    fn run(self, tx: &mut Tx<'_>) -> Result<bool, JournalError> {
        if !INTEGRATIONS.contains(&self.name.as_str()) {
            return Err(JournalError::NotFound(format!(
                "no integration {:?} can be suspended (one of: {})",
                self.name,
                INTEGRATIONS.join(", ")
            )));
        }
        let now = tx.now();
        if !store::suspend(tx, &self.name, &self.reason, &self.by, now)? {
            return Ok(false);
        }
        let detail = json!({ "integration": self.name, "reason": self.reason });
        tx.audit(&self.by, "integration.suspended", &detail.to_string(), now)?;
        let text = format!(
            "The integration {} is suspended ({}): it sends and receives nothing, and keeps what \
             is queued, until an admin re-authorizes it.",
            self.name, self.reason
        );
        crate::notices::store::notice(tx, "integration.suspended", &text, now)?;
        let payload = json!({ "integration": self.name, "reason": self.reason, "by": self.by });
        tx.append(&event("integration.suspended", &self.name, payload), now)?;
        tracing::warn!(integration = %self.name, by = %self.by, "integration suspended");
        Ok(true)
    }
}

impl Resume {
    /// Lifts the suspension at `now`, audited; the CLI runs this on the journal file itself.
    pub fn apply(&self, tx: &mut Tx<'_>, now: i64) -> Result<(), JournalError> {
        if !store::resume(tx, &self.name)? {
            return Err(JournalError::NotFound(format!(
                "the integration {:?} is not suspended",
                self.name
            )));
        }
        let detail = json!({ "integration": self.name });
        tx.audit(&self.by, "integration.resumed", &detail.to_string(), now)?;
        let payload = json!({ "integration": self.name, "by": self.by });
        tx.append(&event("integration.resumed", &self.name, payload), now)?;
        Ok(())
    }
}

impl Work for Resume {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<(), JournalError> {
        let now = tx.now();
        self.apply(tx, now)
    }
}

impl Work for IsSuspended {
    type Output = Option<String>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::reason(tx, &self.name)
    }
}
