//! What the FHIR API reads, as [`Indexed`] resources: queue entries, bookings and flags
//! (through the queue's store), cached Patients (the FHIR connector's store), scheduling
//! suggestions (the journal's inbound items of their kind) and the audit (the journal's).
//! No SQL here: each owner reads its own tables and returns its own rows, which
//! [`resources`] maps. Read-only: the API never changes a table.

use super::resources;
use super::search::{Indexed, Range};
use crate::journal::chain::AuditRow;
use crate::journal::{AuditFilter, JournalError, Tx};

/// Every resource of `resource_type` the gateway holds (the audit aside, see [`audit_page`]).
pub fn all(
    tx: &mut Tx<'_>,
    resource_type: &str,
    facility: &str,
) -> Result<Vec<Indexed>, JournalError> {
    Ok(match resource_type {
        "Encounter" => crate::queue::store::queue_list(tx, None, Some(i64::MIN))?
            .iter()
            .map(|e| resources::encounter(e, facility))
            .collect(),
        "Appointment" => crate::queue::store::bookings(tx)?
            .iter()
            .filter_map(resources::appointment)
            .collect(),
        "Patient" => patients(tx)?,
        "Flag" => crate::queue::store::flags(tx)?
            .iter()
            .map(resources::flag)
            .collect(),
        "Task" => tasks(tx)?,
        _ => Vec::new(),
    })
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
    Ok(all(tx, resource_type, facility)?
        .into_iter()
        .find(|r| r.id == id))
}

/// The cached Patients as last synced with the EHR.
fn patients(tx: &mut Tx<'_>) -> Result<Vec<Indexed>, JournalError> {
    Ok(crate::connectors::fhir::store::synced_patients(tx)?
        .into_iter()
        .map(|p| resources::patient(&p.id, p.synced, p.updated_at))
        .collect())
}

/// The scheduling suggestions the FHIR connector committed (the journal's inbound items of
/// their kind); one whose payload is unreadable is left out, as the connector leaves it.
fn tasks(tx: &mut Tx<'_>) -> Result<Vec<Indexed>, JournalError> {
    Ok(tx
        .items_of_kind(crate::connectors::fhir::waits::KIND)?
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
