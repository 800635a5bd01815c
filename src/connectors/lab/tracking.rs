//! Lab orders and specimens on queue entries, and the delays they cause. [`Specimens`], a
//! queue [`Inbound`] hook, tracks the orders (ORM^O01, OML^O21) and specimens (SPM of OML^O33,
//! OUL^R22; a final result of their order) of an inbound item in the transaction that commits
//! it, before its AA; each specimen state change is a `specimen.status_changed` cloud event.
//! A rejected specimen (a recollection) and, found by the supervised [`WatchSpawn`] child, a
//! collection running long add `delay_min` to the entry's expected time: the patients behind
//! it in its queue have their estimated waits moved, and each whose estimate moved by more
//! than `notify_over_min` since they were last told gets a `patient.notification` (`delay`).
//!
//! **Invariant:** events, notices and logs carry specimen and order ids, tickets, states and
//! codes, never a result or a patient's data.

use super::config::SpecimensConfig;
use super::specimen::{self, Slot, SpecimenState, SpecimenUpdate};
use super::store::{self, SpecimenRow};
use crate::journal::{self, JournalError, JournalWriter, NewItem, Tx, Work};
use crate::queue::{self, Entry, EntryState, Inbound};
use crate::supervisor::{HealthState, Running, Spawn, Supervisor, link};
use actix::Addr;
use std::time::Duration;

/// The supervisor's name for the watch of collections running long.
pub const NAME: &str = "lab-collections";

/// The staff notice kind of a specimen rejected or a collection running long.
pub const NOTICE_DELAY: &str = "lab.specimen_delay";

/// The cloud event of a specimen's new state.
pub const EVENT: &str = "specimen.status_changed";

/// Tracks the lab orders and specimens an inbound item carries, as configured.
pub struct Specimens {
    pub config: SpecimensConfig,
}

impl Inbound for Specimens {
    fn on_inbound(
        &self,
        tx: &mut Tx<'_>,
        item: &NewItem,
        resources: &[serde_json::Value],
        now: i64,
    ) -> Result<(), JournalError> {
        for order in specimen::orders(resources) {
            match store::order(tx, &order.id)? {
                Some(_) if order.closed => store::set_pending(tx, &order.id, false, now)?,
                Some(_) => {}
                None => {
                    // Tracked on the visit it was ordered in: a patient without an open entry
                    // has no visit to delay.
                    let Some(entry) = first_open_entry(tx, &order.patient)? else {
                        continue;
                    };
                    let code = order.code.as_deref();
                    store::track_order(tx, &order.id, entry.id, code, !order.closed, now)?;
                }
            }
        }
        for update in specimen::specimens(&item.kind, resources) {
            self.apply(tx, &update, now)?;
        }
        for order in specimen::resulted_orders(resources) {
            for (id, _, _) in store::open_specimens_of_order(tx, &order)? {
                let update = SpecimenUpdate {
                    id,
                    order: Some(order.clone()),
                    patient: specimen::Patient::default(),
                    state: SpecimenState::Resulted,
                    type_code: None,
                    reject_reason: None,
                    condition: None,
                };
                self.apply(tx, &update, now)?;
            }
        }
        Ok(())
    }
}

impl Specimens {
    /// Moves one specimen to the update's state (a new one is tracked on its order's entry, else
    /// on its patient's first open entry), with its event; a rejection delays its entry.
    fn apply(
        &self,
        tx: &mut Tx<'_>,
        update: &SpecimenUpdate,
        now: i64,
    ) -> Result<(), JournalError> {
        let entry = match store::specimen(tx, &update.id)? {
            Some((entry, state)) if state.moves_to(update.state) => {
                queue::store::queue_entry(tx, entry)?
            }
            Some(_) => return Ok(()),
            None => {
                let of_order = match &update.order {
                    Some(order) => store::order(tx, order)?,
                    None => None,
                };
                match of_order {
                    Some((entry, _)) => queue::store::queue_entry(tx, entry)?,
                    None => match first_open_entry(tx, &update.patient)? {
                        Some(entry) => entry,
                        None => return Ok(()),
                    },
                }
            }
        };
        store::save_specimen(tx, update, entry.id, now)?;
        if let Some(order) = &update.order {
            if store::order(tx, order)?.is_none() {
                store::track_order(tx, order, entry.id, None, false, now)?;
            }
            // A collected specimen ends the wait for one; a rejected one starts it again.
            store::set_pending(tx, order, update.state == SpecimenState::Rejected, now)?;
        }
        specimen_event(tx, update, &entry, now)?;
        if update.state == SpecimenState::Rejected {
            let text = format!(
                "{} ({}): specimen {} rejected ({}); recollect",
                entry.ticket,
                entry.queue,
                update.id,
                update.reject_reason.as_deref().unwrap_or("no reason given")
            );
            crate::notices::store::notice(tx, NOTICE_DELAY, &text, now)?;
            delay(
                tx,
                &self.config,
                &entry,
                &format!("rejected:{}", update.id),
                now,
            )?;
        }
        Ok(())
    }
}

/// The first open entry (queue order) of a patient.
fn first_open_entry(
    tx: &mut Tx<'_>,
    patient: &specimen::Patient,
) -> Result<Option<Entry>, JournalError> {
    let open = queue::store::open_entries_of_patient(
        tx,
        patient.patient_ref.as_deref(),
        patient.patient_id.as_deref(),
    )?;
    Ok(open.into_iter().next())
}

/// The `specimen.status_changed` event: ids, ticket, state and codes only.
fn specimen_event(
    tx: &mut Tx<'_>,
    update: &SpecimenUpdate,
    entry: &Entry,
    now: i64,
) -> Result<(), JournalError> {
    let payload = serde_json::json!({
        "specimen": update.id,
        "order": update.order,
        "entry": entry.id,
        "ticket": entry.ticket,
        "queue": entry.queue,
        "state": update.state.as_str(),
        "type": update.type_code,
        "reject_reason": update.reject_reason,
        "condition": update.condition,
    });
    let key = format!("queue:{}", entry.queue);
    let event = NewItem::event("lab", EVENT, key, &payload, &[crate::CLOUD]);
    tx.raise(event, now).map(|_| ())
}

/// Adds `delay_min` to `entry`'s expected time and moves the estimated waits of the patients
/// waiting behind it in its queue; each whose wait moved by more than `notify_over_min` since
/// they were last told gets a `delay` notification, once per `cause`.
fn delay(
    tx: &mut Tx<'_>,
    config: &SpecimensConfig,
    entry: &Entry,
    cause: &str,
    now: i64,
) -> Result<(), JournalError> {
    store::add_delay(tx, entry.id, config.delay_min)?;
    let open = queue::store::queue_list(tx, Some(&entry.queue), None)?;
    let delays = store::delays(tx)?;
    let slots: Vec<Slot> = open
        .iter()
        .map(|e| Slot {
            waiting: e.state == EntryState::Waiting,
            extra_min: delays.get(&e.id).copied().unwrap_or(0),
        })
        .collect();
    let waits = specimen::waits(&slots, config.minutes_per_patient);
    let order = specimen::service_order(&slots);
    let Some(mine) = order.iter().position(|&i| open[i].id == entry.id) else {
        return Ok(());
    };
    // Everyone waiting after the delayed entry counts its time in their wait.
    let behind = order[mine + 1..]
        .iter()
        .filter(|&&i| slots[i].waiting)
        .map(|&i| (&open[i], waits[i]));
    let mut told = 0;
    for (e, wait) in behind {
        let moved = store::add_unsent(tx, e.id, config.delay_min)?;
        if moved <= config.notify_over_min {
            continue;
        }
        queue::store::patient_notification_with(
            tx,
            e,
            "delay",
            None,
            &[
                ("estimated_wait_min", serde_json::json!(wait)),
                ("delayed_by_min", serde_json::json!(moved)),
            ],
            Some(format!("delay:{}:{cause}", e.id)),
            now,
        )?;
        store::told(tx, e.id)?;
        told += 1;
    }
    if told > 0 {
        let text = format!(
            "{} ({}): {told} patient{} behind told of a delay",
            entry.ticket,
            entry.queue,
            if told == 1 { "" } else { "s" }
        );
        crate::notices::store::notice(tx, NOTICE_DELAY, &text, now)?;
    }
    Ok(())
}

/// The specimens of the open queue entries, for clinical staff.
#[derive(Debug)]
pub struct ListSpecimens;

/// Finds the collections that ran long (pending since `within_ms` ago or more) and delays
/// their entries.
#[derive(Debug)]
pub struct CollectionsDue {
    pub config: SpecimensConfig,
}

crate::journal_work!(ListSpecimens, CollectionsDue);

impl Work for ListSpecimens {
    type Output = Vec<SpecimenRow>;
    const READ_ONLY: bool = true;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::specimens_of_open_entries(tx)
    }
}

impl Work for CollectionsDue {
    /// The orders found running long.
    type Output = Vec<String>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        let now = tx.now();
        let before = now.saturating_sub(self.config.collection_within_ms());
        let mut found = Vec::new();
        for (order, entry_id, since) in store::overdue_orders(tx, before)? {
            store::mark_overdue(tx, &order, now)?;
            let entry = queue::store::queue_entry(tx, entry_id)?;
            let text = format!(
                "{} ({}): specimen collection for order {order} running long",
                entry.ticket, entry.queue
            );
            crate::notices::store::notice(tx, NOTICE_DELAY, &text, now)?;
            delay(
                tx,
                &self.config,
                &entry,
                &format!("overdue:{order}:{since}"),
                now,
            )?;
            found.push(order);
        }
        Ok(found)
    }
}

/// How often the watch looks for collections running long: a tenth of the time allowed,
/// between 1 and 15 s.
fn every(config: &SpecimensConfig) -> Duration {
    Duration::from_secs((config.collection_within_s / 10).clamp(1, 15))
}

/// Starts the watch of collections running long; its times are in the journal, so a restart
/// loses none.
pub struct WatchSpawn {
    pub config: SpecimensConfig,
    pub journal: Addr<JournalWriter>,
}

impl Spawn for WatchSpawn {
    fn kind(&self) -> &'static str {
        "lab-collections"
    }

    fn spawn(&self, name: &str, supervisor: Addr<Supervisor>) -> Box<dyn Running> {
        let (config, journal) = (self.config.clone(), self.journal.clone());
        link::start(name, supervisor, Duration::from_secs(1), move |mut link| {
            Box::pin(async move {
                link.health.report(HealthState::Healthy, None);
                loop {
                    let ask = CollectionsDue {
                        config: config.clone(),
                    };
                    match journal::ask(&journal, ask).await {
                        Ok(orders) => {
                            for order in orders {
                                tracing::info!(%order, "specimen collection running long");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "collections not checked"),
                    }
                    if link::stop_asked_during(&mut link.shutdown, every(&config)).await {
                        return Ok(());
                    }
                }
            })
        })
    }
}
