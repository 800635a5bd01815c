//! The queue's journal requests, run on the journal writer's thread (see [`Work`]).

use super::settings::{Hook, settings};
use super::store;
use super::{Action, CheckIn, Demographics, Entry, FromEhr, TicketOrder};
use crate::journal::{JournalError, NewItem, Receipt, Tx, Work};

/// Appends what the hooks add to a change.
fn hooked(
    tx: &mut Tx<'_>,
    items: impl Fn(&dyn Hook) -> Option<NewItem>,
) -> Result<(), JournalError> {
    let hooks = settings(tx).hooks.clone();
    for item in hooks.iter().filter_map(|h| items(h.as_ref())) {
        tx.append(&item, tx.now())?;
    }
    Ok(())
}

/// Queue a patient (see [`store::queue_check_in`]).
#[derive(Debug)]
pub struct QueueCheckIn {
    pub queue: String,
    pub check_in: CheckIn,
    /// A ticket to print, committed in the same transaction as the check-in.
    pub ticket: Option<TicketOrder>,
}

/// Call the next waiting patient of a queue.
#[derive(Debug)]
pub struct QueueCallNext {
    pub queue: String,
    pub room: Option<String>,
}

/// A staff action on one entry.
#[derive(Debug)]
pub struct QueueAct {
    pub id: i64,
    pub action: Action,
}

/// Entries in queue order; closed ones too when `closed_since` is given.
#[derive(Debug)]
pub struct QueueList {
    pub queue: Option<String>,
    pub closed_since: Option<i64>,
}

/// An item from the EHR with what it does to the queue, committed together; a resend of the
/// same source id gets the first receipt and changes nothing. `resources` are the FHIR
/// resources the item carries (mapped from a v2 message, or the polled resource), handed to
/// the [`Inbound`](super::Inbound) hooks (lab, pharmacy) after the queue's own effects.
#[derive(Debug, Clone, PartialEq)]
pub struct EhrInbound {
    pub item: NewItem,
    pub effects: Vec<FromEhr>,
    pub resources: Vec<serde_json::Value>,
}

/// Links an entry to what the EHR registered for it: the new Patient's demographics, or the
/// walk-in's Appointment (`Appointment/<id>`).
#[derive(Debug)]
pub struct QueueLink {
    pub entry: i64,
    pub demographics: Option<Demographics>,
    pub appointment_ref: Option<String>,
}

/// The EHR flags that raise an open queue entry now: (flag id, patient id).
#[derive(Debug)]
pub struct RaisingFlags;

crate::journal_work!(
    QueueCheckIn,
    QueueCallNext,
    QueueAct,
    QueueList,
    EhrInbound,
    QueueLink,
    RaisingFlags
);

impl Work for QueueCheckIn {
    type Output = (Entry, bool);
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        let now = tx.now();
        let (entry, duplicate) =
            store::queue_check_in(tx, &self.queue, &self.check_in, self.ticket.as_ref(), now)?;
        if !duplicate {
            hooked(tx, |h| h.on_check_in(&entry, &self.check_in, now))?;
            for hook in settings(tx).tx_hooks.clone() {
                hook.on_check_in(tx, &entry, &self.check_in)?;
            }
            let inbound = settings(tx).inbound.clone();
            for hook in inbound {
                hook.on_check_in(tx, &entry, now)?;
            }
        }
        // What the hooks decided (awaiting results) shows in the answer.
        let entry = store::queue_entry(tx, entry.id)?;
        Ok((entry, duplicate))
    }
}

impl Work for QueueCallNext {
    type Output = Option<Entry>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        let now = tx.now();
        let call = Action::Call {
            room: self.room.clone(),
        };
        let entry = store::queue_call_next(tx, &self.queue, self.room, now)?;
        if let Some(e) = &entry {
            hooked(tx, |h| h.on_action(e, &call, now))?;
        }
        Ok(entry)
    }
}

impl Work for QueueAct {
    type Output = Entry;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        let now = tx.now();
        let entry = store::queue_act(tx, self.id, &self.action, now)?;
        hooked(tx, |h| h.on_action(&entry, &self.action, now))?;
        for hook in settings(tx).tx_hooks.clone() {
            hook.on_action(tx, &entry, &self.action)?;
        }
        Ok(entry)
    }
}

impl Work for QueueList {
    type Output = Vec<Entry>;
    const READ_ONLY: bool = true;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::queue_list(tx, self.queue.as_deref(), self.closed_since)
    }
}

impl Work for EhrInbound {
    type Output = Receipt;
    const LIMITED: bool = true;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        let now = tx.now();
        let receipt = store::ehr_inbound(tx, &self.item, &self.effects, now)?;
        if !receipt.duplicate {
            let hooks = settings(tx).inbound.clone();
            for hook in hooks {
                hook.on_inbound(tx, &self.item, &self.resources, now)?;
            }
        }
        Ok(receipt)
    }
}

impl Work for QueueLink {
    type Output = Entry;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        let now = tx.now();
        let patient = self.demographics.is_some();
        let entry =
            store::queue_link(tx, self.entry, self.demographics, self.appointment_ref, now)?;
        if patient {
            // A walk-in whose patient the EHR just registered gets its visit.
            hooked(tx, |h| h.on_patient(&entry, now))?;
        }
        Ok(entry)
    }
}

impl Work for RaisingFlags {
    type Output = Vec<(String, String)>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::raising_flags(tx)
    }
}
