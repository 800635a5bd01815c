//! The facility's journal requests: room holds, run on the journal writer's thread.

use super::store;
use super::{Hold, RoomHold};
use crate::journal::{JournalError, Tx, Work};

/// Takes a room out of service (`hold`) or puts it back (`None`); audited with `by`.
#[derive(Debug)]
pub struct SetRoomHold {
    pub room: String,
    pub hold: Option<(Hold, Option<String>)>,
    pub by: String,
}

/// Every room currently held out of service.
#[derive(Debug)]
pub struct ListRoomHolds;

crate::journal_work!(SetRoomHold, ListRoomHolds);

impl Work for SetRoomHold {
    type Output = Option<RoomHold>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        let now = tx.now();
        store::set_room_hold(tx, &self.room, self.hold, &self.by, now)
    }
}

impl Work for ListRoomHolds {
    type Output = Vec<RoomHold>;
    const READ_ONLY: bool = true;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::room_holds(tx)
    }
}
