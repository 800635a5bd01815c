//! The pharmacy: prescriptions ordered during a visit, tracked on the patient's queue entry
//! (ordered → in preparation → ready → picked up) from HL7 v2 RDE^O11 / RDS^O13 through the
//! MLLP listener (mapped to FHIR MedicationRequest / MedicationDispense by `hl7v2::mapping`).
//! [`Prescriptions`], a queue [`Inbound`] hook, applies them in the transaction that commits
//! the message, before its AA. A prescription that becomes ready tells the patient
//! (`patient.notification`, `medication_ready`, with the estimated pickup time) and staff.
//!
//! **Invariant:** the board, notices, events and logs carry order ids, tickets and states,
//! never a drug's name or code.

pub mod config;
pub mod protocol;
pub mod store;

use crate::journal::{JournalError, NewItem, Tx, Work};
use crate::queue::{self, Inbound};
use config::PharmacyConfig;
use protocol::RxState;

/// The staff notice kind of a prescription ready for pickup.
pub const NOTICE_READY: &str = "pharmacy.ready";

/// Tracks the prescriptions an inbound item carries, as configured.
pub struct Prescriptions {
    pub config: PharmacyConfig,
}

impl Inbound for Prescriptions {
    fn on_inbound(
        &self,
        tx: &mut Tx<'_>,
        _item: &NewItem,
        resources: &[serde_json::Value],
        now: i64,
    ) -> Result<(), JournalError> {
        for update in protocol::updates(resources) {
            let entry = match store::prescription(tx, &update.order)? {
                Some((entry, state)) if state.moves_to(update.state) => {
                    queue::store::queue_entry(tx, entry)?
                }
                Some(_) => continue,
                None => {
                    // Tracked from the visit it was ordered in: a patient without an open
                    // entry has no visit to track it on.
                    let open = queue::store::open_entries_of_patient(
                        tx,
                        update.patient_ref.as_deref(),
                        update.patient_id.as_deref(),
                    )?;
                    let Some(entry) = open.into_iter().next() else {
                        continue;
                    };
                    store::track(tx, &update.order, entry.id, RxState::Ordered, now)?;
                    if update.state == RxState::Ordered {
                        continue;
                    }
                    entry
                }
            };
            let pickup = (update.state == RxState::Ready)
                .then(|| -> Result<i64, JournalError> {
                    let estimate = update
                        .ready_estimate
                        .as_deref()
                        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                        .map(|t| t.as_millisecond());
                    let before = store::ready_waiting(tx, &update.order)?;
                    Ok(protocol::pickup_at(
                        estimate,
                        before,
                        self.config.minutes_per_prescription,
                        now,
                    ))
                })
                .transpose()?;
            store::move_to(tx, &update.order, update.state, pickup, now)?;
            if let Some(at) = pickup {
                let at_text = jiff::Timestamp::from_millisecond(at)
                    .map(|t| t.to_string())
                    .unwrap_or_default();
                queue::store::patient_notification_with(
                    tx,
                    &entry,
                    "medication_ready",
                    None,
                    &[
                        ("order", serde_json::json!(update.order)),
                        ("estimated_pickup_at", serde_json::json!(at_text)),
                    ],
                    None,
                    now,
                )?;
                let text = format!(
                    "{} ({}): prescription {} ready for pickup",
                    entry.ticket, entry.queue, update.order
                );
                crate::notices::store::notice(tx, NOTICE_READY, &text, now)?;
            }
        }
        Ok(())
    }
}

/// The prescriptions of the open queue entries: (entry id, state), for the board.
#[derive(Debug)]
pub struct ListPrescriptions;

crate::journal_work!(ListPrescriptions);

impl Work for ListPrescriptions {
    type Output = Vec<(i64, String)>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::on_open_entries(tx)
    }
}
