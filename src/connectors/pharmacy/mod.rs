//! The pharmacy: prescriptions ordered during a visit, tracked on the patient's queue entry
//! (ordered → in preparation → ready → picked up) from HL7 v2 RDE^O11 / RDS^O13 through the
//! MLLP listener (mapped to FHIR MedicationRequest / MedicationDispense by `hl7v2::mapping`).
//! [`Prescriptions`], a queue [`Inbound`] hook, applies them in the transaction that commits
//! the message, before its AA. A prescription that becomes ready tells the patient
//! (`patient.notification`, `medication_ready`, with the estimated pickup time) and staff.
//! The same hook acts on the FHIR MedicationRequest / MedicationDispense, DetectedIssue and
//! AllergyIntolerance the FHIR connector polls: an issue the pharmacy or EHR detected (a
//! DetectedIssue, or an RDE whose segment matches an `alert_rules` entry) and a prescription
//! whose medication code exactly matches one of the patient's active allergies raise a
//! clinical alert (`crate::alerts`) on each of the patient's open entries.
//!
//! **Invariant:** the board, notices, events and logs carry order ids, tickets and states,
//! never a drug's name or code; only a clinical alert carries a drug's code.

pub mod config;
pub mod protocol;
pub mod store;

use crate::alerts::{self, AlertEntry, NewAlert};
use crate::journal::{JournalError, NewItem, Tx, Work};
use crate::queue::{self, Entry, Inbound};
use config::PharmacyConfig;
use protocol::{Code, Patient, RxState};
use std::collections::BTreeSet;

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
        item: &NewItem,
        resources: &[serde_json::Value],
        now: i64,
    ) -> Result<(), JournalError> {
        let updates = protocol::updates(resources);
        self.track(tx, &updates, now)?;
        self.detected(tx, item, resources, &updates, now)?;
        self.allergies(tx, resources, &updates, now)
    }
}

impl Prescriptions {
    /// Moves each prescription forward on its patient's entry.
    fn track(
        &self,
        tx: &mut Tx<'_>,
        updates: &[protocol::RxUpdate],
        now: i64,
    ) -> Result<(), JournalError> {
        for update in updates {
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

    /// Issues the pharmacy or EHR detected: each DetectedIssue, and an RDE whose segments
    /// match an alert rule, alert clinical staff on the patient's open entries.
    fn detected(
        &self,
        tx: &mut Tx<'_>,
        item: &NewItem,
        resources: &[serde_json::Value],
        updates: &[protocol::RxUpdate],
        now: i64,
    ) -> Result<(), JournalError> {
        for issue in protocol::issues(resources) {
            let entries = queue::store::open_entries_of_patient(tx, None, Some(&issue.patient_id))?;
            for entry in &entries {
                let alert = new_alert(
                    alerts::DETECTED_ISSUE,
                    &issue.origin,
                    entry,
                    &issue.code,
                    &issue.reason,
                );
                alerts::store::raise(tx, &alert, now)?;
            }
        }
        if item.kind != RDE_KIND || self.config.alert_rules.is_empty() {
            return Ok(());
        }
        let Some(reason) = protocol::rule_hit(&item.payload, &self.config.alert_rules) else {
            return Ok(());
        };
        let origin = format!(
            "{}:{}",
            item.source,
            item.source_id.as_deref().unwrap_or_default()
        );
        for update in updates {
            let entries = queue::store::open_entries_of_patient(
                tx,
                update.patient_ref.as_deref(),
                update.patient_id.as_deref(),
            )?;
            let code = update.codes.first().map(|c| c.code.as_str()).unwrap_or("");
            for entry in &entries {
                let alert = new_alert(alerts::DETECTED_ISSUE, &origin, entry, code, &reason);
                alerts::store::raise(tx, &alert, now)?;
            }
        }
        Ok(())
    }

    /// Allergies meet prescriptions either way round: a prescription's codes are matched
    /// against the patient's active allergies read before it, and an allergy read later against
    /// the prescriptions already on the patient's entries. Either raises one alert per
    /// allergy, prescription and entry. Allergies come from the EHR's AllergyIntolerances and
    /// from HL7 v2 AL1 segments (each message's AL1s being the patient's whole list).
    fn allergies(
        &self,
        tx: &mut Tx<'_>,
        resources: &[serde_json::Value],
        updates: &[protocol::RxUpdate],
        now: i64,
    ) -> Result<(), JournalError> {
        let read = protocol::allergies(resources);
        let listed: BTreeSet<&Patient> = read
            .iter()
            .filter(|a| a.from_v2())
            .map(|a| &a.patient)
            .collect();
        for patient in listed {
            store::retire_v2_allergies(tx, patient, now)?;
        }
        for allergy in &read {
            store::remember_allergy(tx, allergy, now)?;
        }
        if !read.is_empty() {
            store::forget_allergies(tx, now - ALLERGIES_KEPT_MS, 100)?;
        }
        for update in updates.iter().filter(|u| !u.codes.is_empty()) {
            let Some((entry, _)) = store::prescription(tx, &update.order)? else {
                continue;
            };
            store::set_codes(tx, &update.order, &update.codes)?;
            let entry = queue::store::queue_entry(tx, entry)?;
            let id = entry
                .demographics
                .as_ref()
                .map(|d| d.patient_id.clone())
                .or_else(|| update.patient_id.clone());
            let reference = entry
                .patient_ref
                .clone()
                .or_else(|| update.patient_ref.clone());
            let patients = id
                .map(Patient::Id)
                .into_iter()
                .chain(reference.map(Patient::Ref));
            for patient in patients {
                for (origin, allergy) in store::active_allergies(tx, &patient)? {
                    if let Some(code) = protocol::allergic(&update.codes, &allergy) {
                        raise_allergy(tx, &entry, &origin, &update.order, code, now)?;
                    }
                }
            }
        }
        for allergy in read.iter().filter(|a| a.active) {
            let entries = match &allergy.patient {
                Patient::Id(id) => queue::store::open_entries_of_patient(tx, None, Some(id))?,
                Patient::Ref(r) => queue::store::open_entries_of_patient(tx, Some(r), None)?,
            };
            for entry in &entries {
                for (order, codes) in store::codes_on_entry(tx, entry.id)? {
                    if let Some(code) = protocol::allergic(&codes, &allergy.codes) {
                        raise_allergy(tx, entry, &allergy.origin, &order, code, now)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// How long an allergy not read again is kept: a year of visits.
const ALLERGIES_KEPT_MS: i64 = 365 * 24 * 3_600_000;

/// The item kind of an RDE^O11, the message whose segments the alert rules look at.
const RDE_KIND: &str = "hl7.rde.order";

fn new_alert(kind: &str, origin: &str, entry: &Entry, code: &str, reason: &str) -> NewAlert {
    NewAlert {
        kind: kind.into(),
        origin: origin.into(),
        entry: Some(AlertEntry::of(entry)),
        code: code.into(),
        reason: reason.into(),
    }
}

/// An allergy alert's origin is the allergy and the prescription, so whichever is read last
/// raises it, once.
fn raise_allergy(
    tx: &mut Tx<'_>,
    entry: &Entry,
    allergy: &str,
    order: &str,
    code: &Code,
    now: i64,
) -> Result<(), JournalError> {
    let origin = format!("{allergy}:{order}");
    let alert = new_alert(
        alerts::ALLERGY,
        &origin,
        entry,
        &code.code,
        "allergy_code_match",
    );
    alerts::store::raise(tx, &alert, now).map(|_| ())
}

/// The prescriptions of the open queue entries: (entry id, state), for the board.
#[derive(Debug)]
pub struct ListPrescriptions;

crate::journal_work!(ListPrescriptions);

impl Work for ListPrescriptions {
    type Output = Vec<(i64, String)>;
    const READ_ONLY: bool = true;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::on_open_entries(tx)
    }
}
