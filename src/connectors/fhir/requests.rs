//! The FHIR connector's journal requests, run on the journal writer's thread: the Patient
//! cache and its conflicts, the connector's persistent state, and the notices it raises.

use super::model::Patient;
use super::protocol::{self, CachedPatient, Conflict, Fields, Seen, Side};
use super::store;
use crate::journal::{JournalError, NewItem, Tx, Work};
use std::collections::BTreeMap;

/// One cached FHIR Patient by id.
#[derive(Debug)]
pub struct FhirGet {
    pub id: String,
}

/// Cached FHIR Patients by identifier, or by family name and birth date.
#[derive(Debug)]
pub struct FhirFind {
    pub identifier: Option<String>,
    pub family: Option<String>,
    pub birth_date: Option<String>,
}

/// A Patient version read from the EHR (see [`store::fhir_seen`]). A newer version also
/// reaches the open queue entries showing that patient, in the same transaction.
#[derive(Debug)]
pub struct FhirSeen {
    pub patient: Box<Patient>,
    pub identifier: Option<String>,
    pub insert: bool,
}

/// A local demographic change to a cached Patient, for delivery to the EHR.
#[derive(Debug)]
pub struct FhirEdit {
    pub id: String,
    pub changes: Fields,
    pub by: String,
}

/// The EHR stored our update `sent` as `stored`.
#[derive(Debug)]
pub struct FhirWritten {
    pub sent: Box<Patient>,
    pub stored: Box<Patient>,
}

/// Conflicts, the open ones or `all`.
#[derive(Debug)]
pub struct FhirConflicts {
    pub all: bool,
}

/// Resolve a conflict with a choice per field; audited with `by`.
#[derive(Debug)]
pub struct FhirResolve {
    pub id: i64,
    pub choices: BTreeMap<String, Side>,
    pub by: String,
}

/// Read (`set: None`) or write a persistent value of the connector.
#[derive(Debug)]
pub struct FhirState {
    pub key: String,
    pub set: Option<String>,
}

/// Raises a notice for staff, with the item that tells others (cloud, EHR) and a connector
/// state to set, all in one transaction.
#[derive(Debug)]
pub struct RaiseNotice {
    pub kind: String,
    pub text: String,
    pub item: Option<NewItem>,
    pub state: Option<(String, String)>,
}

crate::journal_work!(
    FhirGet,
    FhirFind,
    FhirSeen,
    FhirEdit,
    FhirWritten,
    FhirConflicts,
    FhirResolve,
    FhirState,
    RaiseNotice
);

impl Work for FhirGet {
    type Output = Option<CachedPatient>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::fhir_patient(tx, &self.id)
    }
}

impl Work for FhirFind {
    type Output = Vec<CachedPatient>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::fhir_find(
            tx,
            self.identifier.as_deref(),
            self.family.as_deref(),
            self.birth_date.as_deref(),
        )
    }
}

impl Work for FhirSeen {
    type Output = Seen;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        let now = tx.now();
        let seen = store::fhir_seen(
            tx,
            &self.patient,
            self.identifier.as_deref(),
            self.insert,
            now,
        )?;
        if seen == Seen::Updated {
            let mut current = protocol::demographics(&self.patient, "", "ehr");
            current.identifier = self.identifier;
            crate::queue::store::refresh_demographics(tx, &current, now)?;
        }
        Ok(seen)
    }
}

impl Work for FhirEdit {
    type Output = bool;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        let now = tx.now();
        store::fhir_edit(tx, &self.id, &self.changes, &self.by, now)
    }
}

impl Work for FhirWritten {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        let now = tx.now();
        store::fhir_written(tx, &self.sent, &self.stored, now)
    }
}

impl Work for FhirConflicts {
    type Output = Vec<Conflict>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::fhir_conflicts(tx, self.all)
    }
}

impl Work for FhirResolve {
    type Output = (Conflict, bool);
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        let now = tx.now();
        store::fhir_resolve(tx, self.id, &self.choices, &self.by, now)
    }
}

impl Work for FhirState {
    type Output = Option<String>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        match self.set {
            Some(v) => store::set_fhir_state(tx, &self.key, &v).map(|()| Some(v)),
            None => store::fhir_state(tx, &self.key),
        }
    }
}

impl Work for RaiseNotice {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        let now = tx.now();
        crate::notices::store::notice(tx, &self.kind, &self.text, now)?;
        if let Some(item) = &self.item {
            tx.append(item, now)?;
        }
        match &self.state {
            Some((k, v)) => store::set_fhir_state(tx, k, v),
            None => Ok(()),
        }
    }
}
