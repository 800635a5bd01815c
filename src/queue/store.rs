//! The queue's tables and every SQL statement on them: entries and the day's ticket counters,
//! the EHR flags that raise entries, and the bookings waiting for their patient's arrival.
//!
//! Each function runs inside the journal writer's transaction ([`Tx`]), so a queue change and
//! the items it appends (its `queue.*` cloud event, a ticket, an EHR notice) commit together.
//! Nothing here opens SQLite.

use super::settings::settings;
use super::{
    self as queue, Action, Booking, CheckIn, Demographics, Entry, EntryState, FromEhr, Priority,
    TicketJob, TicketOrder,
};
use crate::journal::{JournalError, NewItem, Receipt, Schema, Tx, from_json, to_json};
use rusqlite::{OptionalExtension, params};
use std::ops::Range;

/// The queue's migrations. Steps 1–4 were the journal's schema versions 2, 5 (in part), 6 (in
/// part) and 7 before each domain owned its tables.
pub const SCHEMA: Schema = Schema {
    domain: "queue",
    steps: &[
        r#"
CREATE TABLE queue_entry (
    id              INTEGER PRIMARY KEY,
    queue           TEXT    NOT NULL,
    ticket          TEXT    NOT NULL,
    patient_ref     TEXT,
    appointment_ref TEXT,
    priority        INTEGER NOT NULL,
    priority_reason TEXT,
    state           TEXT    NOT NULL,
    room            TEXT,
    request_id      TEXT,
    arrived_at      INTEGER NOT NULL,
    called_at       INTEGER,
    in_room_at      INTEGER,
    closed_at       INTEGER,
    updated_at      INTEGER NOT NULL
);
CREATE UNIQUE INDEX queue_entry_request ON queue_entry(queue, request_id) WHERE request_id IS NOT NULL;
CREATE INDEX queue_entry_open ON queue_entry(queue, state, priority DESC, arrived_at);
CREATE TABLE queue_counter (
    queue TEXT    NOT NULL,
    day   TEXT    NOT NULL,
    next  INTEGER NOT NULL,
    PRIMARY KEY (queue, day)
);
"#,
        r#"
ALTER TABLE queue_entry ADD COLUMN demographics TEXT;
"#,
        r#"
ALTER TABLE queue_entry ADD COLUMN base_priority INTEGER;
ALTER TABLE queue_entry ADD COLUMN base_reason TEXT;
CREATE TABLE fhir_flag (
    id         TEXT    PRIMARY KEY,
    patient_id TEXT    NOT NULL,
    priority   INTEGER,
    reason     TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX fhir_flag_patient ON fhir_flag(patient_id) WHERE priority IS NOT NULL;
"#,
        r#"
CREATE TABLE appointment_booking (
    appointment_ref  TEXT    PRIMARY KEY,
    appointment_refs TEXT    NOT NULL,
    patient_ref      TEXT    NOT NULL,
    day              TEXT    NOT NULL,
    starts_at        INTEGER NOT NULL,
    queue            TEXT    NOT NULL,
    priority         INTEGER NOT NULL,
    priority_reason  TEXT,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX appointment_booking_patient ON appointment_booking(patient_ref, day, starts_at);
CREATE INDEX appointment_booking_day ON appointment_booking(day);
"#,
        r#"
ALTER TABLE queue_entry ADD COLUMN awaiting_results INTEGER NOT NULL DEFAULT 0;
"#,
    ],
    legacy: &[(2, 1), (5, 2), (6, 3), (7, 4)],
};

/// Queues a patient: the next ticket of the day in `queue`, at the end of its priority band,
/// with a `queue.checked_in` event for the cloud in the same transaction, and with `ticket`
/// its print job for the printer's outbox too. A check-in whose `request_id` was seen before
/// in this queue returns that entry (`true`) instead, and prints nothing again.
pub fn queue_check_in(
    tx: &mut Tx<'_>,
    queue_name: &str,
    c: &CheckIn,
    ticket: Option<&TicketOrder>,
    now: i64,
) -> Result<(Entry, bool), JournalError> {
    if let Some(request_id) = &c.request_id {
        let found = tx
            .sql()
            .prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM queue_entry WHERE queue = ?1 AND request_id = ?2"
            ))?
            .query_row(params![queue_name, request_id], entry_from_row)
            .optional()?;
        if let Some(entry) = found {
            return Ok((entry, true));
        }
    }
    let day = crate::clock::day_in(&settings(tx).zone, now);
    let n: i64 = tx
        .sql()
        .prepare_cached(
            "INSERT INTO queue_counter (queue, day, next) VALUES (?1, ?2, 1)
         ON CONFLICT (queue, day) DO UPDATE SET next = next + 1 RETURNING next",
        )?
        .query_row(params![queue_name, day], |r| r.get(0))?;
    // An active EHR flag of the patient raises the priority asked for; the asked one stays
    // as the base the entry returns to when the flag goes.
    let flag = match &c.demographics {
        Some(d) => flag_priority(tx, &d.patient_id)?,
        None => None,
    };
    let (priority, reason) = match &flag {
        Some((p, why)) if *p > c.priority => (*p, Some(why.clone())),
        _ => (c.priority, c.priority_reason.clone()),
    };
    tx.sql()
        .prepare_cached(
            "INSERT INTO queue_entry (queue, ticket, patient_ref, appointment_ref, priority, priority_reason, state, request_id, arrived_at, updated_at, demographics, base_priority, base_reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'waiting', ?7, ?8, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            queue_name,
            queue::ticket_label(queue_name, n),
            c.patient_ref,
            c.appointment_ref,
            priority as i64,
            reason,
            c.request_id,
            now,
            c.demographics.as_ref().map(to_json).transpose()?,
            c.priority as i64,
            c.priority_reason,
        ])?;
    let entry = queue_entry(tx, tx.sql().last_insert_rowid())?;
    queue_event(tx, "queue.checked_in", &entry, now)?;
    if priority > c.priority {
        let text = format!(
            "{} ({}): checked in at {} priority because of an EHR flag",
            entry.ticket,
            entry.queue,
            priority.as_str()
        );
        crate::notices::store::notice(tx, "queue.flagged", &text, now)?;
    }
    if let Some(order) = ticket {
        queue_ticket(tx, &entry, order, now)?;
    }
    Ok((entry, false))
}

/// Commits the print job of a new entry's ticket for `printer:<name>`, keyed by the printer
/// so that its tickets print in check-in order. The estimated wait counts the entries
/// waiting ahead of this one in call order (priority, then arrival).
pub(crate) fn queue_ticket(
    tx: &mut Tx<'_>,
    entry: &Entry,
    order: &TicketOrder,
    now: i64,
) -> Result<(), JournalError> {
    let ahead: u32 = tx
        .sql()
        .prepare_cached(
            "SELECT count(*) FROM queue_entry
              WHERE queue = ?1 AND state = 'waiting' AND id != ?2
                AND (priority > ?3 OR (priority = ?3 AND (arrived_at < ?4 OR (arrived_at = ?4 AND id < ?2))))",
        )?
        .query_row(
            params![entry.queue, entry.id, entry.priority as i64, entry.arrived_at],
            |r| r.get(0),
        )?;
    let job = TicketJob {
        entry: entry.id,
        ticket: entry.ticket.clone(),
        queue: entry.queue.clone(),
        waiting_ahead: ahead,
        estimated_wait_min: ahead.saturating_mul(order.minutes_per_patient),
    };
    let destination = crate::devices::printer::destination(&order.printer);
    let item = NewItem {
        source: "queue".into(),
        source_id: None,
        kind: crate::devices::printer::TICKET_KIND.into(),
        key: destination.clone(),
        schema: format!("clinic-gateway/{}@1", crate::devices::printer::TICKET_KIND),
        payload: serde_json::to_vec(&job).map_err(|e| JournalError::Corrupt(e.to_string()))?,
        reply: None,
        occurred_at: Some(now),
        destinations: vec![destination],
    };
    tx.append(&item, now).map(|_| ())
}

pub(crate) fn queue_entry(tx: &mut Tx<'_>, id: i64) -> Result<Entry, JournalError> {
    tx.sql()
        .prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM queue_entry WHERE id = ?1"
        ))?
        .query_row([id], entry_from_row)
        .optional()?
        .ok_or_else(|| JournalError::NotFound(format!("no queue entry {id}")))
}

/// The cloud event of a queue change, keyed by queue so a queue's changes stay in order.
/// Demographics stay on site: the cloud gets the patient reference only.
pub(crate) fn queue_event(
    tx: &mut Tx<'_>,
    kind: &str,
    entry: &Entry,
    now: i64,
) -> Result<(), JournalError> {
    let entry = &Entry {
        demographics: None,
        ..entry.clone()
    };
    let item = NewItem {
        source: "queue".into(),
        source_id: None,
        kind: kind.into(),
        key: format!("queue:{}", entry.queue),
        schema: format!("clinic-gateway/{kind}@1"),
        payload: serde_json::to_vec(entry).map_err(|e| JournalError::Corrupt(e.to_string()))?,
        reply: None,
        occurred_at: Some(now),
        destinations: vec![crate::CLOUD.into()],
    };
    tx.append(&item, now).map(|_| ())
}

/// Applies a staff action to an entry, if its state allows it.
pub fn queue_act(
    tx: &mut Tx<'_>,
    id: i64,
    action: &Action,
    now: i64,
) -> Result<Entry, JournalError> {
    let entry = queue_entry(tx, id)?;
    if entry.awaiting_results && matches!(action, Action::Call { .. }) {
        return Err(JournalError::Rejected(
            "the entry awaits the lab results its visit requires".into(),
        ));
    }
    let to = queue::transition(entry.state, action)
        .map_err(|e| JournalError::Rejected(e.to_string()))?;
    let room = match action {
        Action::Call { room } => room.clone().or(entry.room.clone()),
        Action::AssignRoom { room } => Some(room.clone()),
        Action::Reroute { room } => room.clone(),
        _ => entry.room.clone(),
    };
    tx.sql().prepare_cached(
        "UPDATE queue_entry SET state = ?2, room = ?3, updated_at = ?4,
             called_at  = CASE WHEN ?2 = 'called'  THEN ?4 ELSE called_at END,
             in_room_at = CASE WHEN ?2 = 'in_room' THEN ?4 ELSE in_room_at END,
             closed_at  = CASE WHEN ?2 IN ('done', 'no_show', 'cancelled', 'left') THEN ?4 ELSE closed_at END
         WHERE id = ?1",
    )?
    .execute(params![id, to.as_str(), room, now])?;
    let entry = queue_entry(tx, id)?;
    queue_event(tx, action.event_kind(), &entry, now)?;
    if let Action::Call { .. } = action {
        tell_next(tx, &entry.queue, now)?;
    }
    Ok(entry)
}

/// Calls the first waiting patient of a queue (priority, then arrival), if any.
pub fn queue_call_next(
    tx: &mut Tx<'_>,
    queue_name: &str,
    room: Option<String>,
    now: i64,
) -> Result<Option<Entry>, JournalError> {
    queue_first_waiting(tx, queue_name)?
        .map(|e| queue_act(tx, e.id, &Action::Call { room }, now))
        .transpose()
}

/// The entry a call would take next: the first waiting one by priority, then arrival.
pub(crate) fn queue_first_waiting(
    tx: &mut Tx<'_>,
    queue_name: &str,
) -> Result<Option<Entry>, JournalError> {
    let found = tx
        .sql()
        .prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM queue_entry WHERE queue = ?1 AND state = 'waiting'
                AND awaiting_results = 0
              ORDER BY priority DESC, arrived_at, id LIMIT 1"
        ))?
        .query_row([queue_name], entry_from_row)
        .optional()?;
    Ok(found)
}

/// Entries in queue order (priority, then arrival): every open one, or also the closed ones
/// of the last `closed_since` ms.
pub fn queue_list(
    tx: &mut Tx<'_>,
    queue_name: Option<&str>,
    closed_since: Option<i64>,
) -> Result<Vec<Entry>, JournalError> {
    let filter = EntryFilter {
        queue: queue_name,
        closed_since,
        ..EntryFilter::OPEN
    };
    queue_entries(tx, &filter)
}

/// Which entries [`queue_entries`] reads; [`EntryFilter::OPEN`] admits every open one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFilter<'a> {
    pub queue: Option<&'a str>,
    /// Also the entries closed at or after this time (ms).
    pub closed_since: Option<i64>,
    pub id: Option<i64>,
    /// The patient's id: entries whose demographics name it, or whose reference is
    /// `Patient/<id>` or the bare id.
    pub patient_id: Option<&'a str>,
    /// Arrivals within this range (ms), if given.
    pub arrived_at: Option<Range<i64>>,
    /// Entries whose latest step (arrival, call, room, close) falls within this range (ms).
    pub last_step_at: Range<i64>,
}

impl EntryFilter<'_> {
    pub const OPEN: EntryFilter<'static> = EntryFilter {
        queue: None,
        closed_since: None,
        id: None,
        patient_id: None,
        arrived_at: None,
        last_step_at: i64::MIN..i64::MAX,
    };
}

/// The entries `filter` admits, in queue order (priority, then arrival).
pub fn queue_entries(
    tx: &mut Tx<'_>,
    filter: &EntryFilter<'_>,
) -> Result<Vec<Entry>, JournalError> {
    let arrived = filter.arrived_at.as_ref();
    let rows = tx
        .sql()
        .prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM queue_entry
              WHERE (?1 IS NULL OR queue = ?1)
                AND (state IN ('waiting', 'called', 'in_room') OR (?2 IS NOT NULL AND closed_at >= ?2))
                AND (?3 IS NULL OR id = ?3)
                AND (?4 IS NULL OR json_extract(demographics, '$.patient_id') = ?4
                     OR patient_ref IN ('Patient/' || ?4, ?4))
                AND (?5 IS NULL OR (arrived_at >= ?5 AND arrived_at < ?6))
                AND max(arrived_at, coalesce(called_at, arrived_at), coalesce(in_room_at, arrived_at),
                        coalesce(closed_at, arrived_at)) >= ?7
                AND max(arrived_at, coalesce(called_at, arrived_at), coalesce(in_room_at, arrived_at),
                        coalesce(closed_at, arrived_at)) < ?8
              ORDER BY queue, priority DESC, arrived_at, id"
        ))?
        .query_map(
            params![
                filter.queue,
                filter.closed_since,
                filter.id,
                filter.patient_id,
                arrived.map(|r| r.start),
                arrived.map(|r| r.end),
                filter.last_step_at.start,
                filter.last_step_at.end,
            ],
            entry_from_row,
        )?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Commits an item from the EHR and, unless it is a resend, applies its effects on the
/// queue in the same transaction.
pub fn ehr_inbound(
    tx: &mut Tx<'_>,
    item: &NewItem,
    effects: &[FromEhr],
    now: i64,
) -> Result<Receipt, JournalError> {
    let receipt = tx.append(item, now)?;
    if !receipt.duplicate {
        for effect in effects {
            queue_from_ehr(tx, effect, now)?;
        }
    }
    Ok(receipt)
}

/// Applies one EHR effect to the open entries it concerns (entries whose state it does not
/// change are left alone), or as a new entry for an appointment that is due; keeps the
/// bookings remembered for an arrival in step (`appointment_booking`).
pub(crate) fn queue_from_ehr(
    tx: &mut Tx<'_>,
    effect: &FromEhr,
    now: i64,
) -> Result<(), JournalError> {
    match effect {
        FromEhr::Flag {
            flag_id,
            patient_id,
            raise,
        } => return queue_flag(tx, flag_id, patient_id, raise.as_ref(), now),
        FromEhr::Booked(booking) => return remember_booking(tx, booking, now),
        FromEhr::Arrived { patient_ref, today } => {
            return match arrival(tx, patient_ref, today)? {
                Some(due) => queue_from_ehr(tx, &due, now),
                None => Ok(()),
            };
        }
        FromEhr::Cancelled { appointment_refs }
        | FromEhr::Moved {
            appointment_refs, ..
        }
        | FromEhr::NoShow { appointment_refs } => forget_booking(tx, appointment_refs)?,
        FromEhr::AppointmentPriority {
            appointment_refs,
            priority,
            reason,
        } => booking_priority(tx, appointment_refs, *priority, reason.as_deref(), now)?,
        _ => {}
    }
    let open = queue_list(tx, None, None)?;
    let of_appointment =
        |e: &Entry, refs: &[String]| e.appointment_ref.as_ref().is_some_and(|r| refs.contains(r));
    if let FromEhr::AppointmentDue {
        queue,
        appointment_ref,
        appointment_refs,
        patient_ref,
        priority,
        priority_reason,
    } = effect
    {
        if open.iter().any(|e| of_appointment(e, appointment_refs)) {
            return Ok(());
        }
        let check_in = CheckIn {
            patient_ref: Some(patient_ref.clone()),
            appointment_ref: Some(appointment_ref.clone()),
            priority: *priority,
            priority_reason: priority_reason.clone(),
            // A later booking message for the appointment then finds this entry, even once
            // it is closed, and queues nothing.
            request_id: Some(format!("appointment:{appointment_ref}")),
            patient: None,
            demographics: None,
            unknown_to_ehr: false,
            printer: None,
            contact: None,
        };
        // No ticket is printed: neither a booking nor the registration desk's arrival comes
        // from a kiosk.
        return queue_check_in(tx, queue, &check_in, None, now).map(|_| ());
    }
    let concerned = |e: &Entry| match effect {
        FromEhr::Cancelled { appointment_refs }
        | FromEhr::Moved {
            appointment_refs, ..
        }
        | FromEhr::NoShow { appointment_refs }
        | FromEhr::AppointmentPriority {
            appointment_refs, ..
        } => of_appointment(e, appointment_refs),
        FromEhr::Discharged { patient_ref } | FromEhr::VisitCancelled { patient_ref } => {
            e.patient_ref.as_deref() == Some(patient_ref.as_str())
        }
        FromEhr::Merged { from, .. } => e.patient_ref.as_deref() == Some(from.as_str()),
        FromEhr::Flag { .. }
        | FromEhr::AppointmentDue { .. }
        | FromEhr::Booked(_)
        | FromEhr::Arrived { .. } => false,
        FromEhr::Visit {
            entries,
            appointment_refs,
            ..
        } => {
            entries.contains(&e.id)
                || e.appointment_ref
                    .as_ref()
                    .is_some_and(|r| appointment_refs.contains(r))
        }
    };
    for entry in open.into_iter().filter(concerned) {
        if let FromEhr::Merged { to, .. } = effect {
            tx.sql()
                .prepare_cached(
                    "UPDATE queue_entry SET patient_ref = ?2, updated_at = ?3 WHERE id = ?1",
                )?
                .execute(params![entry.id, to, now])?;
            let merged = queue_entry(tx, entry.id)?;
            queue_event(tx, "queue.patient_merged", &merged, now)?;
        } else if let FromEhr::AppointmentPriority {
            priority, reason, ..
        } = effect
        {
            queue_base_priority(tx, &entry, *priority, reason.as_deref(), now)?;
        } else if let Some(action) = effect.action(entry.state) {
            let done = queue_act(tx, entry.id, &action, now)?;
            for hook in settings(tx).tx_hooks.clone() {
                hook.on_action(tx, &done, &action)?;
            }
            match effect {
                FromEhr::Visit { .. } if action == Action::Complete => {
                    queue_next_prepared(tx, &done, now)?
                }
                FromEhr::Cancelled { .. } => {
                    patient_notification(tx, &done, "appointment_cancelled", None, None, now)?
                }
                FromEhr::Moved { start, .. } => patient_notification(
                    tx,
                    &done,
                    "appointment_rescheduled",
                    start.as_deref(),
                    None,
                    now,
                )?,
                _ => {}
            }
        }
    }
    Ok(())
}

/// Remembers a booking that waits for the patient's arrival, replacing what was remembered
/// under any of its ids (a move changes its day and start) and keeping the remembered
/// priority when the message carried none.
pub(crate) fn remember_booking(tx: &mut Tx<'_>, b: &Booking, now: i64) -> Result<(), JournalError> {
    let refs = to_json(&b.appointment_refs)?;
    let kept: Option<(i64, Option<String>)> = tx
        .sql()
        .prepare_cached(
            "SELECT priority, priority_reason FROM appointment_booking b
              WHERE EXISTS (SELECT 1 FROM json_each(b.appointment_refs) a, json_each(?1) r WHERE a.value = r.value)
              ORDER BY priority DESC LIMIT 1",
        )?
        .query_row([&refs], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (priority, reason) = match (&b.priority, kept) {
        (Some((p, reason)), _) => (*p as i64, reason.clone()),
        (None, Some(kept)) => kept,
        (None, None) => (Priority::Normal as i64, None),
    };
    forget_booking(tx, &b.appointment_refs)?;
    tx.sql()
        .prepare_cached(
            "INSERT INTO appointment_booking (appointment_ref, appointment_refs, patient_ref, day, starts_at, queue, priority, priority_reason, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            b.appointment_ref,
            refs,
            b.patient_ref,
            b.day,
            b.starts_at,
            b.queue,
            priority,
            reason,
            now
        ])?;
    Ok(())
}

/// Forgets the remembered booking of an appointment (any of its ids): cancelled, not
/// attended, or moved (a later `Booked` remembers its new day).
pub(crate) fn forget_booking(
    tx: &mut Tx<'_>,
    appointment_refs: &[String],
) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached(
            "DELETE FROM appointment_booking
              WHERE EXISTS (SELECT 1 FROM json_each(appointment_refs) a, json_each(?1) r WHERE a.value = r.value)",
        )?
        .execute([to_json(&appointment_refs)?])?;
    Ok(())
}

/// Gives a remembered booking (any of its ids) the priority its appointment now carries.
pub(crate) fn booking_priority(
    tx: &mut Tx<'_>,
    appointment_refs: &[String],
    priority: Priority,
    reason: Option<&str>,
    now: i64,
) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached(
            "UPDATE appointment_booking SET priority = ?2, priority_reason = ?3, updated_at = ?4
              WHERE EXISTS (SELECT 1 FROM json_each(appointment_refs) a, json_each(?1) r WHERE a.value = r.value)",
        )?
        .execute(params![
            to_json(&appointment_refs)?,
            priority as i64,
            reason,
            now
        ])?;
    Ok(())
}

/// What the patient's arrival on `today` queues: of their remembered bookings of that day,
/// the first by start (then by when it was remembered) that was never queued (request id
/// unused), as [`FromEhr::AppointmentDue`]. Nothing while an open entry carries one of
/// them: a repeated arrival (a resend under a new control id) must not queue the day's
/// next booking too. Bookings of earlier days, which nobody can arrive for any more, are
/// forgotten on the way.
pub(crate) fn arrival(
    tx: &mut Tx<'_>,
    patient_ref: &str,
    today: &str,
) -> Result<Option<FromEhr>, JournalError> {
    tx.sql()
        .prepare_cached("DELETE FROM appointment_booking WHERE day < ?1")?
        .execute([today])?;
    let bookings: Vec<(bool, bool, FromEhr)> = tx
        .sql()
        .prepare_cached(
            "SELECT b.appointment_ref, b.appointment_refs, b.queue, b.priority, b.priority_reason,
                    EXISTS (SELECT 1 FROM queue_entry e, json_each(b.appointment_refs) a
                             WHERE e.state IN ('waiting', 'called', 'in_room') AND e.appointment_ref = a.value),
                    EXISTS (SELECT 1 FROM queue_entry e
                             WHERE e.queue = b.queue AND e.request_id = 'appointment:' || b.appointment_ref)
               FROM appointment_booking b WHERE b.patient_ref = ?1 AND b.day = ?2
              ORDER BY b.starts_at, b.rowid",
        )?
        .query_map([patient_ref, today], |r| {
            let due = FromEhr::AppointmentDue {
                appointment_ref: r.get(0)?,
                appointment_refs: from_json(1, &r.get::<_, String>(1)?)?,
                queue: r.get(2)?,
                patient_ref: patient_ref.to_string(),
                priority: Priority::from_i64(r.get(3)?),
                priority_reason: r.get(4)?,
            };
            Ok((r.get(5)?, r.get(6)?, due))
        })?
        .collect::<Result<_, _>>()?;
    if bookings.iter().any(|(in_queue, _, _)| *in_queue) {
        return Ok(None);
    }
    Ok(bookings
        .into_iter()
        .find(|(_, queued_once, _)| !queued_once)
        .map(|(_, _, due)| due))
}

/// Records an EHR flag of a patient (`raise: None` once it is no longer active) and sets
/// the priority of the patient's open entries: the highest of what was asked at check-in
/// and the patient's active flags. Each change is an event and a staff notice.
pub(crate) fn queue_flag(
    tx: &mut Tx<'_>,
    flag_id: &str,
    patient_id: &str,
    raise: Option<&(Priority, String)>,
    now: i64,
) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached(
            "INSERT INTO fhir_flag (id, patient_id, priority, reason, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO UPDATE SET patient_id = ?2, priority = ?3, reason = ?4, updated_at = ?5",
        )?
        .execute(params![
            flag_id,
            patient_id,
            raise.map(|(p, _)| *p as i64),
            raise.map(|(_, r)| r.as_str()).unwrap_or(""),
            now
        ])?;
    queue_apply_flags(tx, patient_id, now)
}

/// Sets the priority of a patient's open entries from their active EHR flags: the highest
/// of what was asked at check-in and the flags. Each change is an event and a staff notice.
pub(crate) fn queue_apply_flags(
    tx: &mut Tx<'_>,
    patient_id: &str,
    now: i64,
) -> Result<(), JournalError> {
    let flag = flag_priority(tx, patient_id)?;
    let entries: Vec<(i64, Priority, Option<String>)> = tx
        .sql()
        .prepare_cached(
            "SELECT id, COALESCE(base_priority, priority), CASE WHEN base_priority IS NULL THEN priority_reason ELSE base_reason END
               FROM queue_entry
              WHERE state IN ('waiting', 'called', 'in_room') AND json_extract(demographics, '$.patient_id') = ?1",
        )?
        .query_map([patient_id], |r| {
            Ok((r.get(0)?, Priority::from_i64(r.get(1)?), r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    for (id, base, base_reason) in entries {
        let before = queue_entry(tx, id)?;
        let (priority, reason) = match &flag {
            Some((p, why)) if *p > base => (*p, Some(why.clone())),
            _ => (base, base_reason),
        };
        if (priority, &reason) == (before.priority, &before.priority_reason) {
            continue;
        }
        queue_write_priority(tx, id, priority, reason.as_deref(), None, now)?;
        let entry = queue_entry(tx, id)?;
        queue_event(tx, "queue.priority_changed", &entry, now)?;
        let why = if flag.as_ref().is_some_and(|(p, _)| *p > base) {
            "because of an EHR flag"
        } else {
            "as the EHR flag was removed"
        };
        let text = format!(
            "{} ({}): priority {} to {} {why}",
            entry.ticket,
            entry.queue,
            if priority > before.priority {
                "raised"
            } else {
                "lowered"
            },
            priority.as_str()
        );
        crate::notices::store::notice(tx, "queue.flagged", &text, now)?;
    }
    Ok(())
}

/// Links an entry to what the EHR registered for it: the patient (demographics, and the
/// patient reference when the entry had none) or the walk-in's appointment; a
/// `queue.linked` event tells the cloud (no demographics).
pub fn queue_link(
    tx: &mut Tx<'_>,
    id: i64,
    demographics: Option<Demographics>,
    appointment_ref: Option<String>,
    now: i64,
) -> Result<Entry, JournalError> {
    let before = queue_entry(tx, id)?;
    let patient_ref = before
        .patient_ref
        .clone()
        .or_else(|| demographics.as_ref().and_then(|d| d.identifier.clone()));
    tx.sql()
        .prepare_cached(
            "UPDATE queue_entry SET demographics = COALESCE(?2, demographics), patient_ref = ?3,
                    appointment_ref = COALESCE(?4, appointment_ref), updated_at = ?5 WHERE id = ?1",
        )?
        .execute(params![
            id,
            demographics.as_ref().map(to_json).transpose()?,
            patient_ref,
            appointment_ref,
            now
        ])?;
    let entry = queue_entry(tx, id)?;
    if entry != before {
        queue_event(tx, "queue.linked", &entry, now)?;
    }
    // Flags the patient already has reach an entry linked late (checked in offline).
    match (&before.demographics, &entry.demographics) {
        (None, Some(d)) => {
            let patient_id = d.patient_id.clone();
            queue_apply_flags(tx, &patient_id, now)?;
            queue_entry(tx, id)
        }
        _ => Ok(entry),
    }
}

/// Gives an open entry the priority it returns to when no EHR flag raises it (the
/// appointment's), and so its priority: the higher of that and the patient's active flags.
/// A change of the priority is a `queue.priority_changed` event.
pub(crate) fn queue_base_priority(
    tx: &mut Tx<'_>,
    entry: &Entry,
    base: Priority,
    base_reason: Option<&str>,
    now: i64,
) -> Result<(), JournalError> {
    let flag = match &entry.demographics {
        Some(d) => flag_priority(tx, &d.patient_id)?,
        None => None,
    };
    let (priority, reason) = match flag {
        Some((p, why)) if p > base => (p, Some(why)),
        _ => (base, base_reason.map(str::to_string)),
    };
    queue_write_priority(
        tx,
        entry.id,
        priority,
        reason.as_deref(),
        Some((base, base_reason)),
        now,
    )?;
    if (priority, &reason) != (entry.priority, &entry.priority_reason) {
        let changed = queue_entry(tx, entry.id)?;
        queue_event(tx, "queue.priority_changed", &changed, now)?;
    }
    Ok(())
}

/// The open entries (waiting, called, in a room) of a patient, named by the reference entries
/// carry (`patient_ref`, e.g. PID-3) or by the EHR's Patient id, in queue order.
pub fn open_entries_of_patient(
    tx: &mut Tx<'_>,
    patient_ref: Option<&str>,
    patient_id: Option<&str>,
) -> Result<Vec<Entry>, JournalError> {
    let rows = tx
        .sql()
        .prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM queue_entry
              WHERE state IN ('waiting', 'called', 'in_room')
                AND ((?1 IS NOT NULL AND patient_ref = ?1)
                  OR (?2 IS NOT NULL AND json_extract(demographics, '$.patient_id') = ?2))
              ORDER BY priority DESC, arrived_at, id"
        ))?
        .query_map(params![patient_ref, patient_id], entry_from_row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Marks an open entry as awaiting the results its visit requires (not callable, still in its
/// place), or no longer; a change is a `queue.awaiting_results` or `queue.results_complete`
/// event. Answers the entry when it changed.
pub fn queue_set_awaiting(
    tx: &mut Tx<'_>,
    entry: &Entry,
    awaiting: bool,
    now: i64,
) -> Result<Option<Entry>, JournalError> {
    if entry.awaiting_results == awaiting || !entry.state.is_open() {
        return Ok(None);
    }
    tx.sql()
        .prepare_cached(
            "UPDATE queue_entry SET awaiting_results = ?2, updated_at = ?3 WHERE id = ?1",
        )?
        .execute(params![entry.id, awaiting, now])?;
    let changed = queue_entry(tx, entry.id)?;
    let kind = if awaiting {
        "queue.awaiting_results"
    } else {
        "queue.results_complete"
    };
    queue_event(tx, kind, &changed, now)?;
    Ok(Some(changed))
}

/// Raises the priority an open entry returns to when no EHR flag raises it to at least
/// `priority` (a clinical finding such as a lab result), keeping a higher one. Answers the
/// entry when its priority changed (a `queue.priority_changed` event is then committed);
/// telling staff is the caller's, who knows why.
pub fn queue_raise(
    tx: &mut Tx<'_>,
    entry: &Entry,
    priority: Priority,
    reason: &str,
    now: i64,
) -> Result<Option<Entry>, JournalError> {
    let base: (Priority, Option<String>) = tx
        .sql()
        .prepare_cached(
            "SELECT COALESCE(base_priority, priority),
                    CASE WHEN base_priority IS NULL THEN priority_reason ELSE base_reason END
               FROM queue_entry WHERE id = ?1",
        )?
        .query_row([entry.id], |r| {
            Ok((Priority::from_i64(r.get(0)?), r.get(1)?))
        })?;
    if base.0 >= priority {
        return Ok(None);
    }
    queue_base_priority(tx, entry, priority, Some(reason), now)?;
    let after = queue_entry(tx, entry.id)?;
    Ok((after.priority != entry.priority).then_some(after))
}

/// Writes an entry's priority with its reason and, given `base`, the priority (and reason)
/// it returns to when no EHR flag raises it.
pub(crate) fn queue_write_priority(
    tx: &mut Tx<'_>,
    id: i64,
    priority: Priority,
    reason: Option<&str>,
    base: Option<(Priority, Option<&str>)>,
    now: i64,
) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached(
            "UPDATE queue_entry SET priority = ?2, priority_reason = ?3, updated_at = ?4,
                    base_priority = CASE WHEN ?5 THEN ?6 ELSE base_priority END,
                    base_reason   = CASE WHEN ?5 THEN ?7 ELSE base_reason END
              WHERE id = ?1",
        )?
        .execute(params![
            id,
            priority as i64,
            reason,
            now,
            base.is_some(),
            base.map(|(p, _)| p as i64),
            base.and_then(|(_, r)| r),
        ])?;
    Ok(())
}

/// A booking as the queue keeps it, for readers outside the queue (the FHIR API).
#[derive(Debug, Clone, PartialEq)]
pub struct BookingRow {
    /// `Appointment/<id>`.
    pub appointment_ref: String,
    pub patient_ref: String,
    /// Unix ms of the booked start.
    pub starts_at: i64,
    pub queue: String,
    pub updated_at: i64,
}

/// Which bookings [`bookings`] reads; [`BookingFilter::ALL`] admits every one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingFilter<'a> {
    /// `Appointment/<id>`.
    pub appointment_ref: Option<&'a str>,
    /// The patient's id: bookings whose reference is `Patient/<id>` or the bare id.
    pub patient_id: Option<&'a str>,
    /// Booked starts within this range (ms), if given.
    pub starts_at: Option<Range<i64>>,
    /// Last changed within this range (ms).
    pub updated_at: Range<i64>,
}

impl BookingFilter<'_> {
    pub const ALL: BookingFilter<'static> = BookingFilter {
        appointment_ref: None,
        patient_id: None,
        starts_at: None,
        updated_at: i64::MIN..i64::MAX,
    };
}

/// The bookings `filter` admits, by appointment reference.
pub fn bookings(
    tx: &mut Tx<'_>,
    filter: &BookingFilter<'_>,
) -> Result<Vec<BookingRow>, JournalError> {
    let starts = filter.starts_at.as_ref();
    let rows = tx
        .sql()
        .prepare_cached(
            "SELECT appointment_ref, patient_ref, starts_at, queue, updated_at
               FROM appointment_booking
              WHERE (?1 IS NULL OR appointment_ref = ?1)
                AND (?2 IS NULL OR patient_ref IN ('Patient/' || ?2, ?2))
                AND (?3 IS NULL OR (starts_at >= ?3 AND starts_at < ?4))
                AND updated_at >= ?5 AND updated_at < ?6
              ORDER BY appointment_ref",
        )?
        .query_map(
            params![
                filter.appointment_ref,
                filter.patient_id,
                starts.map(|r| r.start),
                starts.map(|r| r.end),
                filter.updated_at.start,
                filter.updated_at.end,
            ],
            |r| {
                Ok(BookingRow {
                    appointment_ref: r.get(0)?,
                    patient_ref: r.get(1)?,
                    starts_at: r.get(2)?,
                    queue: r.get(3)?,
                    updated_at: r.get(4)?,
                })
            },
        )?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// An EHR flag as the queue keeps it, for readers outside the queue (the FHIR API).
#[derive(Debug, Clone, PartialEq)]
pub struct FlagRow {
    pub id: String,
    pub patient_id: String,
    /// Whether the flag raises its patient's priority now (it is active).
    pub raises_priority: bool,
    pub reason: String,
    pub updated_at: i64,
}

/// Which flags [`flags`] reads; [`FlagFilter::ALL`] admits every one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagFilter<'a> {
    pub id: Option<&'a str>,
    pub patient_id: Option<&'a str>,
    /// Last changed within this range (ms).
    pub updated_at: Range<i64>,
}

impl FlagFilter<'_> {
    pub const ALL: FlagFilter<'static> = FlagFilter {
        id: None,
        patient_id: None,
        updated_at: i64::MIN..i64::MAX,
    };
}

/// The EHR flags `filter` admits, active or not, by id.
pub fn flags(tx: &mut Tx<'_>, filter: &FlagFilter<'_>) -> Result<Vec<FlagRow>, JournalError> {
    let rows = tx
        .sql()
        .prepare_cached(
            "SELECT id, patient_id, priority IS NOT NULL, reason, updated_at
               FROM fhir_flag
              WHERE (?1 IS NULL OR id = ?1) AND (?2 IS NULL OR patient_id = ?2)
                AND updated_at >= ?3 AND updated_at < ?4
              ORDER BY id",
        )?
        .query_map(
            params![
                filter.id,
                filter.patient_id,
                filter.updated_at.start,
                filter.updated_at.end,
            ],
            |r| {
                Ok(FlagRow {
                    id: r.get(0)?,
                    patient_id: r.get(1)?,
                    raises_priority: r.get(2)?,
                    reason: r.get(3)?,
                    updated_at: r.get(4)?,
                })
            },
        )?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The active EHR flags of patients with an open entry: (flag id, patient id).
pub fn raising_flags(tx: &mut Tx<'_>) -> Result<Vec<(String, String)>, JournalError> {
    let rows = tx
        .sql()
        .prepare_cached(
            "SELECT f.id, f.patient_id FROM fhir_flag f
              WHERE f.priority IS NOT NULL AND EXISTS (
                    SELECT 1 FROM queue_entry e
                     WHERE e.state IN ('waiting', 'called', 'in_room')
                       AND json_extract(e.demographics, '$.patient_id') = f.patient_id)
              ORDER BY f.id",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The highest active EHR flag of a patient, with its reason.
pub(crate) fn flag_priority(
    tx: &mut Tx<'_>,
    patient_id: &str,
) -> Result<Option<(Priority, String)>, JournalError> {
    let found = tx
        .sql()
        .prepare_cached(
            "SELECT priority, reason FROM fhir_flag WHERE patient_id = ?1 AND priority IS NOT NULL
              ORDER BY priority DESC, updated_at DESC LIMIT 1",
        )?
        .query_row([patient_id], |r| {
            Ok((Priority::from_i64(r.get(0)?), r.get(1)?))
        })
        .optional()?;
    Ok(found)
}

/// A patient to be told that their appointment changed (`reason`; `start`: the new one), or
/// that they are next: an event for the cloud with who (the patient reference and the EHR's
/// Patient id) and which ticket, queue and appointment, no demographics; and, in the same
/// transaction, what the domains' [`queue::TxHook`]s make of it (patient messaging's
/// messages). `once`: an id under which the notification is committed only once (a second
/// one changes nothing).
pub(crate) fn patient_notification(
    tx: &mut Tx<'_>,
    entry: &Entry,
    reason: &str,
    start: Option<&str>,
    once: Option<String>,
    now: i64,
) -> Result<(), JournalError> {
    patient_notification_with(tx, entry, reason, start, &[], once, now)
}

/// A `patient.notification` for `entry` with `reason` and the fields `extra` adds (ids, codes
/// and times only: the cloud gets no demographics, results or drugs); `start` and `once` as
/// for [`patient_notification`].
pub(crate) fn patient_notification_with(
    tx: &mut Tx<'_>,
    entry: &Entry,
    reason: &str,
    start: Option<&str>,
    extra: &[(&str, serde_json::Value)],
    once: Option<String>,
    now: i64,
) -> Result<(), JournalError> {
    let mut payload = serde_json::json!({
        "reason": reason,
        "entry": entry.id,
        "ticket": entry.ticket,
        "queue": entry.queue,
        "patient_ref": entry.patient_ref,
        "patient_id": entry.demographics.as_ref().map(|d| &d.patient_id),
        "appointment_ref": entry.appointment_ref,
        "new_start": start,
    });
    for (k, v) in extra {
        payload[*k] = v.clone();
    }
    let who = entry
        .patient_ref
        .clone()
        .unwrap_or_else(|| format!("entry-{}", entry.id));
    let item = NewItem {
        source: "queue".into(),
        source_id: once,
        kind: "patient.notification".into(),
        key: format!("patient:{who}"),
        schema: "clinic-gateway/patient.notification@1".into(),
        payload: to_json(&payload)?.into_bytes(),
        reply: None,
        occurred_at: Some(now),
        destinations: vec![crate::CLOUD.into()],
    };
    let receipt = tx.append(&item, now)?;
    if receipt.duplicate {
        return Ok(());
    }
    let event_id = receipt.event_id.to_string();
    let notification = queue::Notification {
        event_id: &event_id,
        reason,
        entry,
        new_start: start,
        extra,
    };
    for hook in settings(tx).tx_hooks.clone() {
        hook.on_notification(tx, &notification)?;
    }
    Ok(())
}

/// After a call: the queue's first waiting patient is told they are next, once per entry
/// (however often calls leave them first).
fn tell_next(tx: &mut Tx<'_>, queue_name: &str, now: i64) -> Result<(), JournalError> {
    if let Some(next) = queue_first_waiting(tx, queue_name)? {
        let once = format!("you_are_next:{}", next.id);
        patient_notification(tx, &next, "you_are_next", None, Some(once), now)?;
    }
    Ok(())
}

/// After the EHR finished a visit: the queue's next patient (call order), announced with
/// the room that came free so staff screens can prepare the call. Tickets only.
pub(crate) fn queue_next_prepared(
    tx: &mut Tx<'_>,
    done: &Entry,
    now: i64,
) -> Result<(), JournalError> {
    let next = queue_first_waiting(tx, &done.queue)?;
    let payload = serde_json::json!({
        "queue": done.queue,
        "room": done.room,
        "finished": { "id": done.id, "ticket": done.ticket },
        "next": next.map(|n| serde_json::json!({ "id": n.id, "ticket": n.ticket })),
    });
    let key = format!("queue:{}", done.queue);
    let event = NewItem::event(
        "queue",
        "queue.next_prepared",
        key,
        &payload,
        &[crate::CLOUD],
    );
    tx.raise(event, now).map(|_| ())
}

/// Columns read by [`entry_from_row`], in its order.
const ENTRY_COLUMNS: &str = "id, queue, ticket, patient_ref, appointment_ref, priority, priority_reason, state, room, arrived_at, called_at, in_room_at, closed_at, demographics, awaiting_results";

fn entry_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    let state: String = r.get(7)?;
    Ok(Entry {
        id: r.get(0)?,
        queue: r.get(1)?,
        ticket: r.get(2)?,
        patient_ref: r.get(3)?,
        appointment_ref: r.get(4)?,
        priority: Priority::from_i64(r.get(5)?),
        priority_reason: r.get(6)?,
        state: EntryState::parse(&state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                7,
                rusqlite::types::Type::Text,
                format!("unknown queue state {state:?}").into(),
            )
        })?,
        room: r.get(8)?,
        arrived_at: r.get(9)?,
        called_at: r.get(10)?,
        in_room_at: r.get(11)?,
        closed_at: r.get(12)?,
        demographics: r
            .get::<_, Option<String>>(13)?
            .map(|t| from_json::<Demographics>(13, &t))
            .transpose()?,
        awaiting_results: r.get(14)?,
    })
}

/// The EHR's current demographics of a patient reach every open entry showing that patient, so
/// that the board, the lookup and the EHR tell one story. Runs in the transaction that updates
/// the patient cache. Answers how many entries changed.
pub fn refresh_demographics(
    tx: &mut Tx<'_>,
    current: &Demographics,
    now: i64,
) -> Result<usize, JournalError> {
    let shown: Vec<(i64, String)> = tx
        .sql()
        .prepare_cached(
            "SELECT id, demographics FROM queue_entry
              WHERE state IN ('waiting', 'called', 'in_room')
                AND json_extract(demographics, '$.patient_id') = ?1",
        )?
        .query_map([&current.patient_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut changed = 0;
    for (id, text) in shown {
        let before: Demographics = from_json(1, &text)?;
        let after = Demographics {
            // An identifier the EHR's version lacks in the configured system stays known.
            identifier: current.identifier.clone().or(before.identifier.clone()),
            ..current.clone()
        };
        if after == before {
            continue;
        }
        tx.sql()
            .prepare_cached(
                "UPDATE queue_entry SET demographics = ?2, updated_at = ?3 WHERE id = ?1",
            )?
            .execute(params![id, to_json(&after)?, now])?;
        changed += 1;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests;
