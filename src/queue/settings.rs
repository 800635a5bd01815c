//! The queue's settings on the journal writer's thread: the clinic's time zone and the hooks
//! through which other parts (the EHR connectors, patient messaging) add their own items or
//! rows to a queue change's transaction.

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

/// A patient notification the queue committed (its `patient.notification` event, once per
/// event id), as another domain sees it in the same transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification<'a> {
    /// The `patient.notification` event's id: one notification per event.
    pub event_id: &'a str,
    /// `appointment_cancelled`, `appointment_rescheduled`, `you_are_next`, ...
    pub reason: &'a str,
    pub entry: &'a Entry,
    /// The appointment's new start, for a rescheduled one.
    pub new_start: Option<&'a str>,
    /// What the notification's event adds for its reason (a delay's new estimated wait, a
    /// prescription's pickup time), as the event carries it.
    pub extra: &'a [(&'a str, serde_json::Value)],
}

/// What a domain writes to its own tables in a queue change's transaction (patient messaging
/// keeps the check-in's contact details and turns a notification into messages), so that the
/// change and those rows commit together or not at all.
pub trait TxHook: Send + Sync {
    /// A new check-in (not a repeated request).
    fn on_check_in(
        &self,
        _tx: &mut Tx<'_>,
        _entry: &Entry,
        _check_in: &CheckIn,
    ) -> Result<(), JournalError> {
        Ok(())
    }
    /// An action applied to an entry by staff or by the EHR (a discharge completing the
    /// visit), in its transaction (the entry as it now is).
    fn on_action(
        &self,
        _tx: &mut Tx<'_>,
        _entry: &Entry,
        _action: &Action,
    ) -> Result<(), JournalError> {
        Ok(())
    }
    /// A patient notification was committed (never twice for one event).
    fn on_notification(
        &self,
        _tx: &mut Tx<'_>,
        _notification: &Notification<'_>,
    ) -> Result<(), JournalError> {
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
    /// Domains writing their own rows in a queue change's transaction.
    pub tx_hooks: Vec<Arc<dyn TxHook>>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            zone: jiff::tz::TimeZone::UTC,
            hooks: Vec::new(),
            inbound: Vec::new(),
            tx_hooks: Vec::new(),
        }
    }
}

/// The queue's settings as the wiring gave them to the writer, else the defaults.
pub(crate) fn settings<'t>(tx: &'t Tx<'_>) -> &'t Settings {
    static DEFAULT: LazyLock<Settings> = LazyLock::new(Settings::default);
    tx.extension::<Settings>().unwrap_or(&DEFAULT)
}
