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
use std::sync::Arc;

/// Every destination's rows in flight.
#[derive(Debug, Default)]
pub struct Leases {
    /// Row id → its destination.
    held: BTreeMap<i64, Arc<str>>,
    destinations: HashMap<Arc<str>, Mark>,
    /// The file's `data_version` when this connection last looked.
    seen: Option<i64>,
}

/// A destination's rows in flight, counted, and its claims' starting point.
#[derive(Debug, Default)]
struct Mark {
    count: u64,
    after: i64,
}

/// How to undo one change, in reverse order, when a batch rolls back.
enum Undo {
    Took(Arc<str>, Vec<i64>),
    Released(Vec<(i64, Arc<str>)>),
    After(Arc<str>, i64),
}

impl Leases {
    fn mark(&mut self, destination: &str) -> &mut Mark {
        if !self.destinations.contains_key(destination) {
            self.destinations
                .insert(destination.into(), Mark::default());
        }
        self.destinations
            .get_mut(destination)
            .expect("inserted above")
    }

    fn interned(&mut self, destination: &str) -> Arc<str> {
        self.mark(destination);
        self.destinations
            .get_key_value(destination)
            .map(|(name, _)| name.clone())
            .expect("inserted above")
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
            for mark in self.destinations.values_mut() {
                mark.after = 0;
            }
        }
    }

    /// Rows in flight per destination.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.destinations
            .iter()
            .filter(|(_, m)| m.count > 0)
            .map(|(d, m)| (d.to_string(), m.count))
            .collect()
    }

    fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::Took(destination, ids) => {
                for id in &ids {
                    self.held.remove(id);
                }
                self.mark(&destination).count -= ids.len() as u64;
            }
            Undo::Released(rows) => {
                for (id, destination) in rows {
                    self.mark(&destination).count += 1;
                    self.held.insert(id, destination);
                }
            }
            Undo::After(destination, after) => self.mark(&destination).after = after,
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
        match self.leases.destinations.get(destination) {
            Some(m) if m.count > 0 => m.after,
            _ => 0,
        }
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
        let destination = self.leases.interned(destination);
        for &id in &ids {
            self.leases.held.insert(id, destination.clone());
        }
        self.leases.mark(&destination).count += ids.len() as u64;
        self.undo.push(Undo::Took(destination.clone(), ids));
        self.set_after(destination, after);
    }

    /// Lets rows `ids` go, settled (delivered or dead): those that were held, with their
    /// destinations.
    pub fn release(&mut self, ids: &[i64]) -> Vec<(i64, Arc<str>)> {
        let released: Vec<(i64, Arc<str>)> = ids
            .iter()
            .filter_map(|id| Some((*id, self.leases.held.remove(id)?)))
            .collect();
        // A settle names one destination's rows: counted down by runs of one destination.
        for run in released.chunk_by(|(_, a), (_, b)| Arc::ptr_eq(a, b)) {
            self.leases.mark(&run[0].1).count -= run.len() as u64;
        }
        if !released.is_empty() {
            self.undo.push(Undo::Released(released.clone()));
        }
        released
    }

    /// Lets row `id` go back in line: the next claim of its destination reads from it again.
    pub fn give_back(&mut self, id: i64) {
        for (id, destination) in self.release(&[id]) {
            self.lower(&destination, id - 1);
        }
    }

    fn set_after(&mut self, destination: Arc<str>, after: i64) {
        let mark = self.leases.mark(&destination);
        let before = std::mem::replace(&mut mark.after, after);
        self.undo.push(Undo::After(destination, before));
    }

    /// Lowers `destination`'s mark to `after` if it is above it.
    pub fn lower(&mut self, destination: &str, after: i64) {
        let destination = self.leases.interned(destination);
        if self.leases.mark(&destination).after > after {
            self.set_after(destination, after);
        }
    }

    /// Lowers every destination's mark to `after`.
    pub fn lower_all(&mut self, after: i64) {
        let names: Vec<Arc<str>> = self.leases.destinations.keys().cloned().collect();
        for name in names {
            self.lower(&name, after);
        }
    }

    /// The rows of `destination` held, oldest first.
    pub fn held(&self, destination: &str) -> Vec<i64> {
        self.leases
            .held
            .iter()
            .filter(|(_, d)| &***d == destination)
            .map(|(id, _)| *id)
            .collect()
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
