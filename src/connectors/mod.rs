//! Healthcare connectors: one supervised actor per configured upstream system (EHR, lab,
//! pharmacy, ...). Each commits what it receives to the journal before answering its peer.
//!
//! **Invariant:** a connector acknowledges to its peer only what the journal has committed.

pub mod config;
pub mod fhir;
pub mod hl7v2;
pub mod lab;
pub mod payments;
pub mod pharmacy;
pub mod practice;

pub use config::ConnectorsConfig;
