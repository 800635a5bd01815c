//! Practice management: the clinic's PMS and the payers behind it. Eligibility is asked as an
//! X12 270 and answered by a 271 (`eligibility.rs`, over the codec in `x12.rs`), both pure.
//!
//! **Invariant:** nothing here opens a socket or SQLite; a 271 that cannot be read is an
//! error naming the segment, never a panic or a half-read answer.

pub mod eligibility;
pub mod x12;
