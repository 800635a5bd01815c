//! The rooms staff took out of use (`room_hold`). Functions run inside the journal writer's
//! transaction ([`Tx`]), so a hold, its audit record and its cloud event commit together.

use super::{Hold, RoomHold};
use crate::journal::{JournalError, NewItem, Schema, Tx};
use rusqlite::params;

/// The facility's migrations. Step 1 was the journal's schema version 3 before each domain
/// owned its tables.
pub const SCHEMA: Schema = Schema {
    domain: "facility",
    steps: &[r#"
CREATE TABLE room_hold (
    room   TEXT    PRIMARY KEY,
    hold   TEXT    NOT NULL,
    reason TEXT,
    by     TEXT    NOT NULL,
    at     INTEGER NOT NULL
);
"#],
    legacy: &[(3, 1)],
};

/// Takes a room out of service or puts it back (`hold` = `None`), audited with `by`, with a
/// `facility.room_hold` event for the cloud in the same transaction.
pub fn set_room_hold(
    tx: &mut Tx<'_>,
    room: &str,
    hold: Option<(Hold, Option<String>)>,
    by: &str,
    now: i64,
) -> Result<Option<RoomHold>, JournalError> {
    let held = match &hold {
        Some((h, reason)) => {
            tx.sql()
                .prepare_cached(
                    "INSERT INTO room_hold (room, hold, reason, by, at) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (room) DO UPDATE SET hold = ?2, reason = ?3, by = ?4, at = ?5",
                )?
                .execute(params![room, h.as_str(), reason, by, now])?;
            Some(RoomHold {
                room: room.into(),
                hold: *h,
                reason: reason.clone(),
                by: by.into(),
                at: now,
            })
        }
        None => {
            tx.sql()
                .prepare_cached("DELETE FROM room_hold WHERE room = ?1")?
                .execute([room])?;
            None
        }
    };
    let state = held.as_ref().map_or("in_service", |h| h.hold.as_str());
    let reason = held.as_ref().and_then(|h| h.reason.as_deref());
    tx.audit(
        by,
        "room-hold",
        &format!(
            "room {room}: {state}{}",
            reason.map(|r| format!(" ({r})")).unwrap_or_default()
        ),
        now,
    )?;
    let payload = serde_json::json!({ "room": room, "state": state, "reason": reason, "by": by });
    let key = format!("room:{room}");
    let event = NewItem::event(
        "facility",
        "facility.room_hold",
        key,
        &payload,
        &[crate::CLOUD],
    );
    tx.raise(event, now)?;
    Ok(held)
}

/// Every room staff or the cloud took out of service, by room name.
pub fn room_holds(tx: &mut Tx<'_>) -> Result<Vec<RoomHold>, JournalError> {
    let rows = tx
        .sql()
        .prepare_cached("SELECT room, hold, reason, by, at FROM room_hold ORDER BY room")?
        .query_map([], |r| {
            let hold: String = r.get(1)?;
            Ok(RoomHold {
                room: r.get(0)?,
                hold: Hold::parse(&hold).ok_or_else(|| {
                    rusqlite::Error::FromSqlConversionFailure(
                        1,
                        rusqlite::types::Type::Text,
                        format!("unknown room hold {hold:?}").into(),
                    )
                })?,
                reason: r.get(2)?,
                by: r.get(3)?,
                at: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}
