//! Rows in flight: handed to their deliverer by a claim and not settled yet. They are held in
//! the writer's memory, not marked in the table: a row moved to in-flight and then to delivered
//! was written twice (its record and two state indexes each time) and committed twice, where a
//! row held here is written once, when it is settled. The journal table keeps such a row
//! pending, so a crash or a stop leaves it pending, to be sent again, and nothing is lost.
//!
//! A claim reads a destination's pending rows from just above its `after` mark: every pending
//! row at or below the mark that the claim could hand out is held already. Whatever puts a row
//! at or below the mark back in line (a failed attempt, a connection lost, a replay, pruning
//! that may let ids be used again, a commit by another connection) lowers the mark, so that the
//! next claim reads from there.
//!
//! Changes made in a batch are undone if the batch rolls back ([`Ledger`]), as the table's are.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;

/// Hashes row ids with one multiply: they are the journal's own distinct integers, not keys an
/// attacker picks, so SipHash's cost (most of a lookup) buys nothing here.
#[derive(Default, Clone, Copy)]
pub struct RowHash(u64);

impl std::hash::Hasher for RowHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_i64(&mut self, n: i64) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by row id.
pub type RowMap<V> = HashMap<i64, V, BuildHasherDefault<RowHash>>;

/// Every destination's rows in flight.
#[derive(Debug, Default)]
pub struct Leases {
    /// Row id → its destination's place in `destinations`.
    held: RowMap<Lane>,
    /// Destinations in the order first seen: a handful, found by name faster than hashed.
    destinations: Vec<Mark>,
    /// The file's `data_version` when this connection last looked.
    seen: Option<i64>,
}

/// A destination's place in [`Leases::destinations`].
type Lane = u16;

/// A destination's rows in flight, counted, and its claims' starting point.
#[derive(Debug)]
struct Mark {
    destination: Box<str>,
    count: u64,
    after: i64,
}

/// How to undo one change, in reverse order, when a batch rolls back.
enum Undo {
    Took(Lane, Vec<i64>),
    Released(Vec<(i64, Lane)>),
    After(Lane, i64),
}

impl Leases {
    fn find(&self, destination: &str) -> Option<Lane> {
        self.destinations
            .iter()
            .position(|m| &*m.destination == destination)
            .map(|i| i as Lane)
    }

    fn lane(&mut self, destination: &str) -> Lane {
        self.find(destination).unwrap_or_else(|| {
            self.destinations.push(Mark {
                destination: destination.into(),
                count: 0,
                after: 0,
            });
            Lane::try_from(self.destinations.len() - 1)
                .expect("fewer destinations than a u16 counts")
        })
    }

    fn mark(&mut self, lane: Lane) -> &mut Mark {
        &mut self.destinations[usize::from(lane)]
    }

    /// Notes the file's `data_version`: when it changed, another connection committed (the
    /// CLI's `dlq replay` while the daemon runs), which may have put rows back in line below
    /// any mark.
    pub fn saw(&mut self, data_version: i64) {
        if self
            .seen
            .replace(data_version)
            .is_some_and(|v| v != data_version)
        {
            for mark in &mut self.destinations {
                mark.after = 0;
            }
        }
    }

    /// Rows in flight per destination.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.destinations
            .iter()
            .filter(|m| m.count > 0)
            .map(|m| (m.destination.to_string(), m.count))
            .collect()
    }

    fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::Took(lane, ids) => {
                for id in &ids {
                    self.held.remove(id);
                }
                self.mark(lane).count -= ids.len() as u64;
            }
            Undo::Released(rows) => {
                for (id, lane) in rows {
                    self.mark(lane).count += 1;
                    self.held.insert(id, lane);
                }
            }
            Undo::After(lane, after) => self.mark(lane).after = after,
        }
    }
}

/// A batch's view of the leases: every change it makes is undone unless the batch is
/// [kept](Self::keep) after its commit.
pub struct Ledger<'l> {
    leases: &'l mut Leases,
    undo: Vec<Undo>,
}

impl<'l> Ledger<'l> {
    pub fn new(leases: &'l mut Leases) -> Ledger<'l> {
        Ledger {
            leases,
            undo: Vec::new(),
        }
    }

    /// The batch committed: its changes stand.
    pub fn keep(mut self) {
        self.undo.clear();
    }

    /// Where a claim of `destination` starts reading: above the mark while rows are held,
    /// from the first row when none is (nothing to step over, and no mark to trust).
    pub fn after(&self, destination: &str) -> i64 {
        self.leases
            .find(destination)
            .map(|lane| &self.leases.destinations[usize::from(lane)])
            .filter(|mark| mark.count > 0)
            .map_or(0, |mark| mark.after)
    }

    /// Notes the file's `data_version` (see [`Leases::saw`]). Not undone with the batch: a
    /// mark lowered is never wrong, only a longer read.
    pub fn saw(&mut self, data_version: i64) {
        self.leases.saw(data_version);
    }

    pub fn holds(&self, id: i64) -> bool {
        self.leases.held.contains_key(&id)
    }

    /// Holds rows `ids` of `destination`, handed out by a claim that read up to `after`.
    pub fn take(&mut self, destination: &str, ids: Vec<i64>, after: i64) {
        let lane = self.leases.lane(destination);
        self.leases.held.reserve(ids.len());
        for &id in &ids {
            self.leases.held.insert(id, lane);
        }
        self.leases.mark(lane).count += ids.len() as u64;
        self.undo.push(Undo::Took(lane, ids));
        self.set_after(lane, after);
    }

    /// Lets rows `ids` go, settled (delivered or dead): those that were held, with their
    /// destinations.
    pub fn release(&mut self, ids: &[i64]) -> Vec<(i64, Lane)> {
        let released: Vec<(i64, Lane)> = ids
            .iter()
            .filter_map(|id| Some((*id, self.leases.held.remove(id)?)))
            .collect();
        // A settle names one destination's rows: counted down by runs of one destination.
        for run in released.chunk_by(|(_, a), (_, b)| a == b) {
            self.leases.mark(run[0].1).count -= run.len() as u64;
        }
        if !released.is_empty() {
            self.undo.push(Undo::Released(released.clone()));
        }
        released
    }

    /// Lets row `id` go back in line: the next claim of its destination reads from it again.
    pub fn give_back(&mut self, id: i64) {
        for (id, lane) in self.release(&[id]) {
            self.lower_lane(lane, id - 1);
        }
    }

    fn set_after(&mut self, lane: Lane, after: i64) {
        let before = std::mem::replace(&mut self.leases.mark(lane).after, after);
        self.undo.push(Undo::After(lane, before));
    }

    fn lower_lane(&mut self, lane: Lane, after: i64) {
        if self.leases.mark(lane).after > after {
            self.set_after(lane, after);
        }
    }

    /// Lowers `destination`'s mark to `after` if it is above it.
    pub fn lower(&mut self, destination: &str, after: i64) {
        if let Some(lane) = self.leases.find(destination) {
            self.lower_lane(lane, after);
        }
    }

    /// Lowers every destination's mark to `after`.
    pub fn lower_all(&mut self, after: i64) {
        for lane in 0..self.leases.destinations.len() {
            self.lower_lane(lane as Lane, after);
        }
    }

    /// The rows of `destination` held, oldest first.
    pub fn held(&self, destination: &str) -> Vec<i64> {
        let Some(lane) = self.leases.find(destination) else {
            return Vec::new();
        };
        let mut ids: Vec<i64> = self
            .leases
            .held
            .iter()
            .filter(|(_, l)| **l == lane)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Rows in flight per destination.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.leases.counts()
    }
}

impl Drop for Ledger<'_> {
    fn drop(&mut self) {
        while let Some(undo) = self.undo.pop() {
            self.leases.undo(undo);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_rolled_back_leaves_the_leases_as_they_were() {
        let mut leases = Leases::default();
        let mut kept = Ledger::new(&mut leases);
        kept.take("cloud", vec![1, 2], 2);
        kept.keep();

        let mut undone = Ledger::new(&mut leases);
        undone.take("cloud", vec![3], 3);
        assert_eq!(
            undone.release(&[1, 9]).len(),
            1,
            "only held rows are released"
        );
        undone.give_back(2);
        assert_eq!(undone.after("cloud"), 1);
        assert_eq!(undone.held("cloud"), [3]);
        drop(undone);

        let ledger = Ledger::new(&mut leases);
        assert_eq!(ledger.held("cloud"), [1, 2]);
        assert_eq!(ledger.after("cloud"), 2);
        assert_eq!(ledger.counts(), BTreeMap::from([("cloud".to_string(), 2)]));
    }

    #[test]
    fn with_nothing_held_a_claim_reads_from_the_first_row() {
        let mut leases = Leases::default();
        let mut ledger = Ledger::new(&mut leases);
        ledger.take("cloud", vec![7], 9);
        assert_eq!(ledger.after("cloud"), 9);
        assert_eq!(ledger.release(&[7]).len(), 1);
        assert!(ledger.release(&[7]).is_empty(), "released once");
        assert_eq!(ledger.after("cloud"), 0);
        assert!(ledger.counts().is_empty());
    }

    #[test]
    fn a_commit_by_another_connection_sends_every_claim_back_to_the_first_row() {
        let mut leases = Leases::default();
        leases.saw(4);
        let mut claim = Ledger::new(&mut leases);
        claim.take("cloud", vec![7], 9);
        claim.keep();
        leases.saw(4);
        assert_eq!(Ledger::new(&mut leases).after("cloud"), 9);
        leases.saw(5);
        assert_eq!(Ledger::new(&mut leases).after("cloud"), 0);
    }
}
