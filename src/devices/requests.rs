//! The devices' journal requests: the priority-array slots a device actor holds in a building
//! device, remembered so that no override outlives the gateway's knowledge of it (see the
//! BACnet actor's `on_start`).

use super::store::{self, DeviceOverride};
use crate::journal::{JournalError, Tx, Work};

/// Remember an override (before it is written to the device).
#[derive(Debug)]
pub struct SetOverride(pub DeviceOverride);

/// Forget the override of one priority slot (after it was relinquished); answers whether
/// there was one.
#[derive(Debug)]
pub struct ClearOverride {
    pub device: String,
    pub object: String,
    pub priority: u8,
}

/// The overrides remembered for one device.
#[derive(Debug)]
pub struct ListOverrides {
    pub device: String,
}

crate::journal_work!(SetOverride, ClearOverride, ListOverrides);

impl Work for SetOverride {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::set_override(tx, &self.0)
    }
}

impl Work for ClearOverride {
    type Output = bool;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::clear_override(tx, &self.device, &self.object, self.priority)
    }
}

impl Work for ListOverrides {
    type Output = Vec<DeviceOverride>;
    const READ_ONLY: bool = true;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::overrides(tx, &self.device)
    }
}
