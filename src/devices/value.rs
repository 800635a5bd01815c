//! The value of a device point, shared by the device families, their readings and the facility's
//! rules (which name one in the configuration); a leaf, so that a config can name it without
//! reaching the device actors.

use serde::{Deserialize, Serialize};

/// A value read from or written to a device point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// An analog or multi-state value (after scale and offset where the device has them).
    Number(f64),
    /// A coil, a discrete input, a binary object or a `bool` register.
    Bool(bool),
}
