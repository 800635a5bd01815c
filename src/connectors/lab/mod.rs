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
//! (`crate::alerts`), in the same transaction; for a patient not in the queue, one alert per
//! test without an entry. An appointment whose type requires tests
//! (`[[connectors.lab.required]]`) keeps its entry `awaiting_results` (not callable) from
//! check-in until their results have arrived. Lab orders and specimens, and the delays they
//! cause the patients behind, are [`tracking`]'s.
//!
//! **Invariant:** notices, events and logs carry tickets, queues and test codes, never values.

pub mod config;
pub mod protocol;
pub mod specimen;
pub mod store;
pub mod tracking;

use crate::alerts::{self, AlertEntry, NewAlert};
use crate::journal::{JournalError, NewItem, Tx};
use crate::queue::{self, Entry, Inbound, Priority};
use config::LabConfig;

/// The staff notice kind of results that arrived for a queued patient.
pub const NOTICE_READY: &str = "lab.results_ready";
/// The staff notice kind of a priority a lab result raised.
pub const NOTICE_PRIORITY: &str = "lab.priority_raised";
/// The staff notice kind of an entry waiting for, or no longer waiting for, required results.
pub const NOTICE_AWAITING: &str = "lab.awaiting_results";
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
        for (refs, types) in protocol::appointment_types(resources) {
            store::remember_types(tx, &refs, &types, now)?;
        }
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
            // One notification per visit, however many entries the patient holds and however
            // the results come: an ORU, then each Observation and the DiagnosticReport of the
            // same panel polled one by one, would otherwise each tell the patient again. Staff
            // see every batch in the notices below.
            if let Some(first) = entries.first() {
                queue::store::patient_notification(
                    tx,
                    first,
                    "lab_results_ready",
                    None,
                    Some(format!("lab_results_ready:{}", first.id)),
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
                    critical_alert(tx, item, Some(entry), &result.code, why, now)?;
                }
            }
            // A critical value for a patient not in the queue still reaches clinical staff.
            if entries.is_empty() {
                for r in &reportable {
                    if let Some(why) = protocol::critical(&self.config, r) {
                        critical_alert(tx, item, None, &r.code, why, now)?;
                    }
                }
            }
        }
        // A booking may have queued an entry, or results arrived: either changes what waits.
        self.reassess(tx, None, now)
    }

    fn on_check_in(&self, tx: &mut Tx<'_>, entry: &Entry, now: i64) -> Result<(), JournalError> {
        self.reassess(tx, Some(entry.id), now)
    }
}

/// Raises the clinical alert of a critical result, on the patient's entry or on none.
fn critical_alert(
    tx: &mut Tx<'_>,
    item: &NewItem,
    entry: Option<&Entry>,
    code: &str,
    reason: String,
    now: i64,
) -> Result<(), JournalError> {
    let alert = NewAlert {
        kind: alerts::CRITICAL_RESULT.into(),
        origin: format!(
            "{}:{}",
            item.source,
            item.source_id.as_deref().unwrap_or_default()
        ),
        entry: entry.map(AlertEntry::of),
        code: code.into(),
        reason,
    };
    alerts::store::raise(tx, &alert, now).map(|_| ())
}

impl Results {
    /// Marks each open entry (or only `only`) whose appointment's type requires results that
    /// have not arrived as awaiting them, and clears the mark once they have, telling staff
    /// either way.
    fn reassess(&self, tx: &mut Tx<'_>, only: Option<i64>, now: i64) -> Result<(), JournalError> {
        if self.config.required.is_empty() {
            return Ok(());
        }
        let since = now.saturating_sub((self.config.required_within_h * 3_600_000) as i64);
        let open = queue::store::queue_list(tx, None, None)?;
        for entry in open.iter().filter(|e| only.is_none_or(|id| e.id == id)) {
            let Some(appointment) = &entry.appointment_ref else {
                continue;
            };
            let types = store::types_of(tx, appointment)?;
            let patient_id = entry.demographics.as_ref().map(|d| d.patient_id.as_str());
            let received =
                store::received_codes(tx, entry.patient_ref.as_deref(), patient_id, since)?;
            let missing = protocol::missing(&self.config, &types, &received);
            let Some(changed) =
                queue::store::queue_set_awaiting(tx, entry, !missing.is_empty(), now)?
            else {
                continue;
            };
            let text = if changed.awaiting_results {
                format!(
                    "{} ({}): awaiting lab results ({}); not callable until they arrive",
                    changed.ticket,
                    changed.queue,
                    missing.join(", ")
                )
            } else {
                format!(
                    "{} ({}): required lab results arrived; callable",
                    changed.ticket, changed.queue
                )
            };
            crate::notices::store::notice(tx, NOTICE_AWAITING, &text, now)?;
        }
        Ok(())
    }
}
