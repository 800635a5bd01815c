//! The queue's settings on the journal writer's thread: the clinic's time zone and the hooks
//! through which other parts (the EHR connectors) add their own items to a queue change's
//! transaction.

use super::{Action, CheckIn, Entry};
use crate::journal::{JournalError, NewItem, Tx};
use std::sync::{Arc, LazyLock};

/// What a queue change also commits, decided by another part of the gateway (the HL7 ADT of
/// a call, the visit's FHIR Encounter, a registration in the EHR). Each answers the item to
/// append in the change's own transaction, or `None`.
pub trait Hook: Send + Sync {
    /// A new check-in (not a repeated request).
    fn on_check_in(&self, _entry: &Entry, _check_in: &CheckIn, _now: i64) -> Option<NewItem> {
        None
    }
    /// A staff action applied to an entry (the entry as it now is).
    fn on_action(&self, _entry: &Entry, _action: &Action, _now: i64) -> Option<NewItem> {
        None
    }
    /// An entry just linked to the patient the EHR registered for it.
    fn on_patient(&self, _entry: &Entry, _now: i64) -> Option<NewItem> {
        None
    }
}

/// What an item from the EHR (an HL7 message, a polled FHIR resource) does beyond the
/// queue's own effects, decided by the part that owns its domain (lab results, pharmacy
/// orders): run in the transaction committing the item, after the queue's effects, and only
/// for an item not committed before, so a resend changes nothing twice. The same part may
/// act on a new check-in in its transaction too (results a visit requires).
pub trait Inbound: Send + Sync {
    /// `resources` are the FHIR resources the item carries.
    fn on_inbound(
        &self,
        tx: &mut Tx<'_>,
        item: &NewItem,
        resources: &[serde_json::Value],
        now: i64,
    ) -> Result<(), JournalError>;

    /// A new check-in from a kiosk or the desk (not a repeated request), in its transaction.
    fn on_check_in(&self, _tx: &mut Tx<'_>, _entry: &Entry, _now: i64) -> Result<(), JournalError> {
        Ok(())
    }
}

/// The queue's settings on the writer thread (a journal extension, replaced on reload).
#[derive(Clone)]
pub struct Settings {
    /// The clinic's time zone (`[gateway] timezone`): a day's ticket numbers start again at
    /// its midnight.
    pub zone: jiff::tz::TimeZone,
    pub hooks: Vec<Arc<dyn Hook>>,
    /// What an inbound EHR item does to other domains (see [`Inbound`]).
    pub inbound: Vec<Arc<dyn Inbound>>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            zone: jiff::tz::TimeZone::UTC,
            hooks: Vec::new(),
            inbound: Vec::new(),
        }
    }
}

/// The queue's settings as the wiring gave them to the writer, else the defaults.
pub(super) fn settings<'t>(tx: &'t Tx<'_>) -> &'t Settings {
    static DEFAULT: LazyLock<Settings> = LazyLock::new(Settings::default);
    tx.extension::<Settings>().unwrap_or(&DEFAULT)
}
