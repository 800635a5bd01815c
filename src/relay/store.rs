//! The cloud commands table: every command the relay took (and acknowledged to the broker),
//! whether it was started, the reply it gave and whether the broker acknowledged the reply,
//! kept for [`KEPT_MS`] so that a command sent again under the same `request_id` is answered
//! from here instead of run twice. Functions run
//! inside the journal writer's transaction ([`Tx`]).

use super::protocol::Contract;
use crate::journal::{JournalError, Schema, Tx};
use rusqlite::{OptionalExtension, params};

/// The relay's migrations.
pub const SCHEMA: Schema = Schema {
    domain: "relay",
    steps: &[r#"
CREATE TABLE cloud_command (
    id          INTEGER PRIMARY KEY,
    request_id  TEXT    NOT NULL UNIQUE,
    contract    INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    received_at INTEGER NOT NULL,
    started_at  INTEGER,
    started_run TEXT,
    reply       BLOB,
    done_at     INTEGER,
    replied_at  INTEGER
);
"#],
    legacy: &[],
};

/// How long a carried-out command is kept, and so how long its `request_id` is recognised.
pub const KEPT_MS: i64 = 7 * 24 * 3600 * 1000;

/// A command taken and not carried out yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub id: i64,
    pub contract: Contract,
    pub name: String,
    pub payload: Vec<u8>,
}

/// A reply to publish: the kept command it answers (none for one refused before it was kept),
/// the contract and command name it answers under, and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub id: Option<i64>,
    pub contract: Contract,
    pub name: String,
    pub payload: Vec<u8>,
}

/// What became of a command on its arrival.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival {
    /// New: kept, to be carried out.
    New(i64),
    /// Taken before and still waiting or under way: its reply comes when it is done.
    Underway,
    /// Carried out before: its reply, sent again.
    Done(Vec<u8>),
    /// The `request_id` belongs to an earlier command of another name.
    Reused { name: String },
}

fn contract_number(c: Contract) -> i64 {
    match c {
        Contract::V1 => 1,
        Contract::V2 => 2,
    }
}

fn contract_of(n: i64) -> Contract {
    if n == 1 { Contract::V1 } else { Contract::V2 }
}

/// Keeps a command that arrived, unless its `request_id` is known; forgets commands carried
/// out more than [`KEPT_MS`] ago.
pub fn arrive(
    tx: &mut Tx<'_>,
    request_id: &str,
    contract: Contract,
    name: &str,
    payload: &[u8],
    now: i64,
) -> Result<Arrival, JournalError> {
    tx.sql()
        .prepare_cached(
            "DELETE FROM cloud_command WHERE id IN (
                 SELECT id FROM cloud_command WHERE done_at < ?1 ORDER BY id LIMIT 100)",
        )?
        .execute(params![now - KEPT_MS])?;
    let known: Option<(String, Option<Vec<u8>>)> = tx
        .sql()
        .prepare_cached("SELECT name, reply FROM cloud_command WHERE request_id = ?1")?
        .query_row(params![request_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match known {
        Some((known, _)) if known != name => Arrival::Reused { name: known },
        Some((_, Some(reply))) => Arrival::Done(reply),
        Some((_, None)) => Arrival::Underway,
        None => {
            tx.sql()
                .prepare_cached(
                    "INSERT INTO cloud_command (request_id, contract, name, payload, received_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    request_id,
                    contract_number(contract),
                    name,
                    payload,
                    now
                ])?;
            Arrival::New(tx.sql().last_insert_rowid())
        }
    })
}

/// Records that command `id` is being carried out by this run of the gateway (`run`); false
/// if it already was (or is done).
pub fn start(tx: &mut Tx<'_>, id: i64, run: &str, now: i64) -> Result<bool, JournalError> {
    let n = tx
        .sql()
        .prepare_cached(
            "UPDATE cloud_command SET started_at = ?2, started_run = ?3
              WHERE id = ?1 AND started_at IS NULL",
        )?
        .execute(params![id, now, run])?;
    Ok(n == 1)
}

/// Keeps command `id`'s reply; the first reply kept stands.
pub fn finish(tx: &mut Tx<'_>, id: i64, reply: &[u8], now: i64) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached(
            "UPDATE cloud_command SET reply = ?2, done_at = ?3 WHERE id = ?1 AND done_at IS NULL",
        )?
        .execute(params![id, reply, now])?;
    Ok(())
}

/// Records that the broker acknowledged the replies of commands `ids`.
pub fn replied(tx: &mut Tx<'_>, ids: &[i64], now: i64) -> Result<(), JournalError> {
    let mut mark = tx
        .sql()
        .prepare_cached("UPDATE cloud_command SET replied_at = ?2 WHERE id = ?1")?;
    for id in ids {
        mark.execute(params![id, now])?;
    }
    Ok(())
}

/// Commands a stopped relay left: those never started, oldest first (at most `limit`), to be
/// carried out now; and the replies the broker never acknowledged, to be sent again. A command
/// an earlier run of the gateway started and never finished is given the reply
/// `unknown(request_id)` first, as nobody knows its outcome. One started by this run (`run`) is
/// left alone: an earlier relay of this run (one a reload replaced) may still be finishing it.
pub fn left_over(
    tx: &mut Tx<'_>,
    run: &str,
    limit: usize,
    unknown: impl Fn(&str) -> Vec<u8>,
    now: i64,
) -> Result<(Vec<Taken>, Vec<Reply>), JournalError> {
    let interrupted: Vec<(i64, String)> = tx
        .sql()
        .prepare_cached(
            "SELECT id, request_id FROM cloud_command
              WHERE started_at IS NOT NULL AND done_at IS NULL AND started_run <> ?1",
        )?
        .query_map(params![run], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, request_id) in interrupted {
        finish(tx, id, &unknown(&request_id), now)?;
    }
    let replies = tx
        .sql()
        .prepare_cached(
            "SELECT id, contract, name, reply FROM cloud_command
              WHERE done_at IS NOT NULL AND replied_at IS NULL ORDER BY id",
        )?
        .query_map([], reply_of)?
        .collect::<Result<_, _>>()?;
    let waiting = tx
        .sql()
        .prepare_cached(
            "SELECT id, contract, name, payload FROM cloud_command
              WHERE started_at IS NULL ORDER BY id LIMIT ?1",
        )?
        .query_map(params![limit as i64], |r| {
            Ok(Taken {
                id: r.get(0)?,
                contract: contract_of(r.get(1)?),
                name: r.get(2)?,
                payload: r.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok((waiting, replies))
}

/// The kept replies among `ids` that the broker has not acknowledged, in the order given.
pub fn unacknowledged(tx: &mut Tx<'_>, ids: &[i64]) -> Result<Vec<Reply>, JournalError> {
    let mut get = tx.sql().prepare_cached(
        "SELECT id, contract, name, reply FROM cloud_command
          WHERE id = ?1 AND done_at IS NOT NULL AND replied_at IS NULL",
    )?;
    let mut replies = Vec::new();
    for id in ids {
        replies.extend(get.query_row([id], reply_of).optional()?);
    }
    Ok(replies)
}

fn reply_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Reply> {
    Ok(Reply {
        id: Some(r.get(0)?),
        contract: contract_of(r.get(1)?),
        name: r.get(2)?,
        payload: r.get(3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Extensions, Store};

    fn check<T>(store: &mut Store, f: impl FnOnce(&mut Tx<'_>) -> Result<T, JournalError>) -> T {
        store
            .with_batch(|b| f(&mut b.work(&Extensions::default())))
            .expect("transaction")
    }

    fn unknown(request_id: &str) -> Vec<u8> {
        format!("unknown {request_id}").into_bytes()
    }

    #[test]
    fn a_command_is_run_once_per_request_id_and_a_stop_leaves_each_in_its_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Store::scratch(dir.path(), &[&SCHEMA]);
        let arrive = |s: &mut Store, id: &str, name: &str, at: i64| {
            check(s, |tx| arrive(tx, id, Contract::V2, name, b"{}", at))
        };
        let Arrival::New(a) = arrive(&mut s, "a", "dlq-replay", 0) else {
            panic!("a is new")
        };
        let Arrival::New(b) = arrive(&mut s, "b", "dlq-replay", 0) else {
            panic!("b is new")
        };
        let Arrival::New(c) = arrive(&mut s, "c", "reload-config", 0) else {
            panic!("c is new")
        };
        assert_eq!(arrive(&mut s, "a", "dlq-replay", 1), Arrival::Underway);
        assert_eq!(
            arrive(&mut s, "a", "room-state", 1),
            Arrival::Reused {
                name: "dlq-replay".into()
            }
        );
        assert!(check(&mut s, |tx| start(tx, a, "run-1", 2)));
        assert!(!check(&mut s, |tx| start(tx, a, "run-1", 2)), "once only");
        check(&mut s, |tx| finish(tx, a, b"done a", 3));
        assert_eq!(
            arrive(&mut s, "a", "dlq-replay", 4),
            Arrival::Done(b"done a".to_vec())
        );
        assert!(check(&mut s, |tx| start(tx, b, "run-1", 5)));
        assert!(check(&mut s, |tx| start(tx, c, "run-2", 5)));
        let d = match arrive(&mut s, "d", "dlq-replay", 6) {
            Arrival::New(d) => d,
            other => panic!("{other:?}"),
        };

        // Run 2 (a reload's relay) leaves its own under way alone; run 1's is answered, and
        // every reply the broker has not acknowledged is sent again until it does.
        let reply = |id, payload: &[u8]| Reply {
            id: Some(id),
            contract: Contract::V2,
            name: "dlq-replay".into(),
            payload: payload.to_vec(),
        };
        let (waiting, replies) = check(&mut s, |tx| left_over(tx, "run-2", 10, unknown, 7));
        assert_eq!(waiting.iter().map(|t| t.id).collect::<Vec<_>>(), [d]);
        assert_eq!(replies, [reply(a, b"done a"), reply(b, b"unknown b")]);
        check(&mut s, |tx| replied(tx, &[a], 8));
        let (_, replies) = check(&mut s, |tx| left_over(tx, "run-2", 10, unknown, 8));
        assert_eq!(replies, [reply(b, b"unknown b")]);
        check(&mut s, |tx| finish(tx, b, b"late b", 8));
        assert_eq!(
            arrive(&mut s, "b", "dlq-replay", 9),
            Arrival::Done(b"unknown b".to_vec()),
            "the first reply kept stands"
        );

        // Kept a week, then forgotten.
        assert_eq!(
            arrive(&mut s, "a", "dlq-replay", 3 + KEPT_MS + 1),
            Arrival::New(d + 1)
        );
    }
}
