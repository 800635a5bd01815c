//! The audit log's hash chain: how a record is sealed and how a run of records is checked.
//!
//! Pure: no SQL and no I/O. The journal's store seals each record as it is written, inside the
//! transaction that writes it; the CLI walks the stored records through [`Walk`]. The encoding
//! is documented in `docs/journal.md`; changing it breaks every chain already written.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first record: 32 zero bytes, in hex.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One stored audit record with its place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRow {
    pub id: i64,
    /// When it was recorded (ms since the epoch).
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub detail: String,
    /// The `hash` of record `id - 1` ([`GENESIS`] for the first), lowercase hex.
    pub prev_hash: String,
    /// [`seal`] of this record, lowercase hex.
    pub hash: String,
}

/// The last record of a chain: what is published so that a truncated or rewritten journal is
/// noticed elsewhere.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Head {
    /// Id of the last record, 0 when there is none.
    pub last_id: i64,
    /// Its hash ([`GENESIS`] when there is none).
    pub hash: String,
    /// How many records the chain holds.
    pub count: u64,
}

impl Head {
    pub fn empty() -> Head {
        Head {
            last_id: 0,
            hash: GENESIS.to_string(),
            count: 0,
        }
    }
}

/// The hash of a record: SHA-256 over the previous hash's 32 bytes, then `id` and `at` as 8-byte
/// big-endian signed integers, then `actor`, `action` and `detail` each as a 4-byte big-endian
/// byte length followed by its UTF-8 bytes. Lengths keep field boundaries unambiguous:
/// ("ab", "c") and ("a", "bc") hash differently. A `prev_hash` that is not 64 hex digits is
/// hashed as its text bytes, so a mangled link still yields a hash that matches nothing.
pub fn seal(prev_hash: &str, id: i64, at: i64, actor: &str, action: &str, detail: &str) -> String {
    let mut h = Sha256::new();
    match from_hex(prev_hash) {
        Some(bytes) => h.update(bytes),
        None => h.update(prev_hash.as_bytes()),
    }
    h.update(id.to_be_bytes());
    h.update(at.to_be_bytes());
    for field in [actor, action, detail] {
        // A field longer than 4 GiB cannot be stored in the journal (SQLite's limit is 1 GB).
        h.update((field.len() as u32).to_be_bytes());
        h.update(field.as_bytes());
    }
    to_hex(&h.finalize())
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The first thing found wrong in a chain.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Broken {
    /// Records are missing before this one (deleted, or the start of the log is gone).
    #[error("audit record {id}: gap in ids, record {expected} is missing")]
    Gap { id: i64, expected: i64 },
    /// The record does not name the hash of the one before it.
    #[error("audit record {id}: broken link, its prev_hash is not the hash of the record before")]
    Link { id: i64 },
    /// The record's fields were changed after it was written (or its hash was).
    #[error("audit record {id}: hash mismatch, its fields do not hash to its stored hash")]
    Hash { id: i64 },
    /// A head published earlier names a record the journal no longer holds.
    #[error("audit record {id}, named by the published head, is missing: the log was truncated")]
    Truncated { id: i64 },
    /// A head published earlier names a record that now has another hash.
    #[error("audit record {id} does not have the published head's hash: the log was rewritten")]
    Rewritten { id: i64 },
}

/// Checks records one by one, in id order, from the first.
#[derive(Debug)]
pub struct Walk {
    head: Head,
    /// A head published earlier, which the chain must still contain.
    published: Option<(i64, String)>,
    published_seen: bool,
}

impl Walk {
    pub fn new(published: Option<(i64, String)>) -> Walk {
        Walk {
            head: Head::empty(),
            published,
            published_seen: false,
        }
    }

    /// The next record: it must follow the last one without a gap, name its hash, and hash to
    /// its own stored hash.
    pub fn step(&mut self, row: &AuditRow) -> Result<(), Broken> {
        let expected = self.head.last_id + 1;
        if row.id != expected {
            return Err(Broken::Gap {
                id: row.id,
                expected,
            });
        }
        if row.prev_hash != self.head.hash {
            return Err(Broken::Link { id: row.id });
        }
        let hash = seal(
            &row.prev_hash,
            row.id,
            row.at,
            &row.actor,
            &row.action,
            &row.detail,
        );
        if hash != row.hash {
            return Err(Broken::Hash { id: row.id });
        }
        if let Some((id, published)) = &self.published
            && *id == row.id
        {
            if *published != row.hash {
                return Err(Broken::Rewritten { id: row.id });
            }
            self.published_seen = true;
        }
        self.head = Head {
            last_id: row.id,
            hash: row.hash.clone(),
            count: self.head.count + 1,
        };
        Ok(())
    }

    /// The head of a chain found intact, once every record was stepped through.
    pub fn finish(self) -> Result<Head, Broken> {
        match self.published {
            Some((id, _)) if id > 0 && !self.published_seen => Err(Broken::Truncated { id }),
            _ => Ok(self.head),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(details: &[&str]) -> Vec<AuditRow> {
        let mut prev = GENESIS.to_string();
        let mut rows = Vec::new();
        for (i, detail) in details.iter().enumerate() {
            let id = i as i64 + 1;
            let hash = seal(&prev, id, 1_000 + id, "cli:test", "dlq-replay", detail);
            rows.push(AuditRow {
                id,
                at: 1_000 + id,
                actor: "cli:test".into(),
                action: "dlq-replay".into(),
                detail: detail.to_string(),
                prev_hash: prev,
                hash: hash.clone(),
            });
            prev = hash;
        }
        rows
    }

    /// Walks `rows`, with a published head if given: the head or the first break.
    fn check(rows: &[AuditRow], published: Option<(i64, String)>) -> Result<Head, Broken> {
        let mut walk = Walk::new(published);
        for row in rows {
            walk.step(row)?;
        }
        walk.finish()
    }

    #[test]
    fn the_encoding_is_pinned() {
        assert_eq!(
            seal(GENESIS, 1, 2, "a", "b", "c"),
            "a0563acb51909811f82fe55b840e6b40ebe882a9059e58b096b7e3e8c9029720"
        );
    }

    #[test]
    fn field_boundaries_change_the_hash() {
        assert_ne!(
            seal(GENESIS, 1, 2, "ab", "c", ""),
            seal(GENESIS, 1, 2, "a", "bc", "")
        );
    }

    #[test]
    fn an_intact_chain_yields_its_head() {
        let rows = chain(&["one", "two", "three"]);
        let head = check(&rows, Some((2, rows[1].hash.clone()))).expect("intact");
        assert_eq!(
            head,
            Head {
                last_id: 3,
                hash: rows[2].hash.clone(),
                count: 3
            }
        );
        assert_eq!(check(&[], None), Ok(Head::empty()));
    }

    #[test]
    fn each_kind_of_damage_names_the_first_broken_record() {
        let rows = chain(&["one", "two", "three", "four"]);
        let mut edited = rows.clone();
        edited[1].detail = "forged".into();
        assert_eq!(check(&edited, None), Err(Broken::Hash { id: 2 }));
        // Resealing the edited record moves the break to the next one's link.
        edited[1].hash = seal(
            &edited[1].prev_hash,
            2,
            edited[1].at,
            "cli:test",
            "dlq-replay",
            "forged",
        );
        assert_eq!(check(&edited, None), Err(Broken::Link { id: 3 }));
        let mut gap = rows.clone();
        gap.remove(2);
        assert_eq!(check(&gap, None), Err(Broken::Gap { id: 4, expected: 3 }));
        assert_eq!(
            check(&rows[1..], None),
            Err(Broken::Gap { id: 2, expected: 1 })
        );
        assert_eq!(
            check(&rows[..2], Some((4, rows[3].hash.clone()))),
            Err(Broken::Truncated { id: 4 })
        );
        assert_eq!(
            check(&rows, Some((3, rows[2].prev_hash.clone()))),
            Err(Broken::Rewritten { id: 3 })
        );
    }
}
