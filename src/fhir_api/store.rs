//! What the FHIR API reads, as [`Indexed`] resources: queue entries, bookings and flags
//! (through the queue's store), cached Patients (the FHIR connector's store), scheduling
//! suggestions (the journal's inbound items of their kind) and the audit (the journal's).
//! No SQL here: each owner reads its own tables and returns its own rows, which
//! [`resources`] maps. Read-only: the API never changes a table.

use super::resources;
use super::search::{Indexed, Range, Search};
use crate::connectors::fhir::store::PatientFilter;
use crate::journal::chain::AuditRow;
use crate::journal::{AuditFilter, ItemFilter, JournalError, Tx};
use crate::queue::store::{BookingFilter, EntryFilter, FlagFilter};

/// The resources of `resource_type` matching `search`, in the owner's order (the audit aside,
/// see [`audit_page`]). The owners' queries take `_id`, `patient` and the date ranges where
/// their rows hold them as stored; `search` is then applied to what they return, for the
/// values the mapping derives (a status, an Encounter's patient and last change). Paging
/// stays with the caller: a row the mapping leaves out must not count.
pub fn matching(
    tx: &mut Tx<'_>,
    resource_type: &str,
    search: &Search,
    facility: &str,
) -> Result<Vec<Indexed>, JournalError> {
    let id = search.id.as_deref();
    let patient = search.patient.as_deref();
    let updated_at = search.last_updated.from..search.last_updated.until;
    let found: Vec<Indexed> = match resource_type {
        "Encounter" => {
            let entry_id = match id.map(str::parse::<i64>) {
                Some(Ok(n)) => Some(n),
                // An entry's id is a number: no other id names one.
                Some(Err(_)) => return Ok(Vec::new()),
                None => None,
            };
            let filter = EntryFilter {
                // Every entry, open or closed.
                closed_since: Some(i64::MIN),
                id: entry_id,
                patient_id: patient,
                arrived_at: (search.date != Range::ALL)
                    .then_some(search.date.from..search.date.until),
                last_step_at: updated_at,
                ..EntryFilter::OPEN
            };
            crate::queue::store::queue_entries(tx, &filter)?
                .iter()
                .map(|e| resources::encounter(e, facility))
                .collect()
        }
        "Appointment" => {
            let appointment_ref = id.map(|id| format!("Appointment/{id}"));
            let filter = BookingFilter {
                appointment_ref: appointment_ref.as_deref(),
                patient_id: patient,
                // Outside a `date` search a booking of any start matches, whatever its value.
                starts_at: (search.date != Range::ALL)
                    .then_some(search.date.from..search.date.until),
                updated_at,
            };
            crate::queue::store::bookings(tx, &filter)?
                .iter()
                .filter_map(resources::appointment)
                .collect()
        }
        "Patient" => {
            let filter = PatientFilter { id, updated_at };
            crate::connectors::fhir::store::synced_patients(tx, &filter)?
                .into_iter()
                .map(|p| resources::patient(&p.id, p.synced, p.updated_at))
                .collect()
        }
        "Flag" => {
            let filter = FlagFilter {
                id,
                patient_id: patient,
                updated_at,
            };
            crate::queue::store::flags(tx, &filter)?
                .iter()
                .map(resources::flag)
                .collect()
        }
        "Task" => {
            let item_id = match id.map(str::parse::<i64>) {
                Some(Ok(n)) => Some(n),
                // A suggestion's id is its item's number: no other id names one.
                Some(Err(_)) => return Ok(Vec::new()),
                None => None,
            };
            let filter = ItemFilter {
                kind: Some(crate::connectors::fhir::waits::KIND),
                id: item_id,
                received_at: updated_at,
                ..ItemFilter::ALL
            };
            tasks(tx, &filter)?
        }
        _ => Vec::new(),
    };
    Ok(found.into_iter().filter(|r| search.matches(r)).collect())
}

/// The resource of `resource_type` with this id, if there is one (the audit aside).
pub fn one(
    tx: &mut Tx<'_>,
    resource_type: &str,
    id: &str,
    facility: &str,
) -> Result<Option<Indexed>, JournalError> {
    if resource_type == "Encounter" {
        // The queue's own lookup by key: the entries are the largest of these tables.
        let Ok(entry_id) = id.parse::<i64>() else {
            return Ok(None);
        };
        return match crate::queue::store::queue_entry(tx, entry_id) {
            Ok(e) => Ok(Some(resources::encounter(&e, facility))),
            Err(JournalError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        };
    }
    let search = Search {
        id: Some(id.to_string()),
        patient: None,
        date: Range::ALL,
        status: None,
        last_updated: Range::ALL,
        count: 1,
        offset: 0,
    };
    Ok(matching(tx, resource_type, &search, facility)?
        .into_iter()
        .next())
}

/// The scheduling suggestions the FHIR connector committed that `filter` admits (the journal's
/// inbound items of their kind); one whose payload is unreadable is left out, as the
/// connector leaves it.
fn tasks(tx: &mut Tx<'_>, filter: &ItemFilter<'_>) -> Result<Vec<Indexed>, JournalError> {
    Ok(tx
        .items(filter)?
        .into_iter()
        .filter_map(|item| {
            let s = serde_json::from_slice(&item.payload).ok()?;
            resources::task(item.id, &s, item.received_at)
        })
        .collect())
}

/// Audit records recorded within `at` (and with the id `id`, if given), oldest first: how
/// many there are, and `limit` of them from `offset`.
pub fn audit_page(
    tx: &mut Tx<'_>,
    id: Option<i64>,
    at: Range,
    limit: usize,
    offset: usize,
) -> Result<(usize, Vec<AuditRow>), JournalError> {
    let filter = AuditFilter {
        id,
        from: at.from,
        until: at.until,
        ..AuditFilter::ALL
    };
    tx.audit_page(&filter, limit, offset)
}
