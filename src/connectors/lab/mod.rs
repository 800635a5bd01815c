//! The laboratory (LIS): what results do to the queue. Results reach the gateway as HL7 v2
//! ORU^R01 through the MLLP listener (mapped to FHIR Observations by `hl7v2::mapping`) and are
//! acted on by [`Results`], a queue [`Inbound`] hook, in the very transaction that commits the
//! message, before its AA; a resend changes nothing twice.
//!
//! A final or corrected result for a patient with an open entry tells the patient
//! (`patient.notification`, `lab_results_ready`) and staff (a notice), and raises the entry's
//! priority where a `[[connectors.lab.priority]]` rule says the test changes care there. A
//! critical result (a configured interpretation flag, or outside configured limits) makes the
//! patient's open entries urgent and raises a clinical alert per entry and test
//! (`crate::alerts`), in the same transaction.
//!
//! **Invariant:** notices, events and logs carry tickets, queues and test codes, never values.

pub mod config;
pub mod protocol;
pub mod store;

use crate::alerts::{self, NewAlert};
use crate::journal::{JournalError, NewItem, Tx};
use crate::queue::{self, Inbound, Priority};
use config::LabConfig;

/// The staff notice kind of results that arrived for a queued patient.
pub const NOTICE_READY: &str = "lab.results_ready";
/// The staff notice kind of a priority a lab result raised.
pub const NOTICE_PRIORITY: &str = "lab.priority_raised";
/// The priority reason of an entry a critical result made urgent.
const CRITICAL_REASON: &str = "critical lab result";

/// Acts on the results an inbound item carries, as configured.
pub struct Results {
    pub config: LabConfig,
}

impl Inbound for Results {
    fn on_inbound(
        &self,
        tx: &mut Tx<'_>,
        item: &NewItem,
        resources: &[serde_json::Value],
        now: i64,
    ) -> Result<(), JournalError> {
        for (subject, results) in protocol::results(resources) {
            let reportable: Vec<_> = results
                .into_iter()
                .filter(|r| r.status.is_reportable())
                .collect();
            if reportable.is_empty() {
                continue;
            }
            store::record_results(tx, item, &subject, &reportable, now)?;
            let entries = queue::store::open_entries_of_patient(
                tx,
                subject.patient_ref.as_deref(),
                subject.patient_id.as_deref(),
            )?;
            // One notification per patient and message, however many entries they hold.
            if let Some(first) = entries.first() {
                queue::store::patient_notification(
                    tx,
                    first,
                    "lab_results_ready",
                    None,
                    None,
                    now,
                )?;
            }
            for entry in &entries {
                let text = format!(
                    "{} ({}): {} lab result{} ready",
                    entry.ticket,
                    entry.queue,
                    reportable.len(),
                    if reportable.len() == 1 { "" } else { "s" }
                );
                crate::notices::store::notice(tx, NOTICE_READY, &text, now)?;
                let criticals: Vec<_> = reportable
                    .iter()
                    .filter_map(|r| protocol::critical(&self.config, r).map(|why| (r, why)))
                    .collect();
                let raise = match criticals.first() {
                    Some((r, _)) => Some((Priority::Urgent, r.code.clone(), CRITICAL_REASON)),
                    None => protocol::raise(&self.config, &entry.queue, &reportable)
                        .map(|(p, code)| (p, code, "lab result")),
                };
                if let Some((priority, code, reason)) = raise
                    && let Some(raised) =
                        queue::store::queue_raise(tx, entry, priority, reason, now)?
                {
                    let text = format!(
                        "{} ({}): priority raised to {} by a {reason} ({code})",
                        raised.ticket,
                        raised.queue,
                        raised.priority.as_str()
                    );
                    crate::notices::store::notice(tx, NOTICE_PRIORITY, &text, now)?;
                }
                for (result, why) in criticals {
                    let alert = NewAlert {
                        kind: alerts::CRITICAL_RESULT.into(),
                        origin: format!(
                            "{}:{}",
                            item.source,
                            item.source_id.as_deref().unwrap_or_default()
                        ),
                        entry_id: entry.id,
                        ticket: entry.ticket.clone(),
                        queue: entry.queue.clone(),
                        code: result.code.clone(),
                        reason: why,
                    };
                    alerts::store::raise(tx, &alert, now)?;
                }
            }
        }
        Ok(())
    }
}
