//! Healthcare connectors: one supervised actor per configured upstream system (EHR, lab,
//! pharmacy, ...). Each commits what it receives to the journal before answering its peer.
//!
//! **Invariant:** a connector acknowledges to its peer only what the journal has committed.

pub mod config;
pub mod fhir;
pub mod hl7v2;

use crate::config::Config;
use crate::devices::DeviceChild;
use crate::journal::JournalWriter;
use actix::Addr;
pub use config::ConnectorsConfig;

/// One supervised child per configured connector.
pub fn spawns(config: &Config, journal: &Addr<JournalWriter>) -> Vec<DeviceChild> {
    let mut children: Vec<DeviceChild> = Vec::new();
    if let Some(h) = &config.connectors.hl7v2 {
        children.push((
            hl7v2::NAME.into(),
            Box::new(hl7v2::Hl7Spawn {
                config: h.clone(),
                journal: journal.clone(),
            }),
        ));
    }
    if let Some(s) = &config.connectors.hl7v2_out {
        children.push((
            hl7v2::sender::NAME.into(),
            Box::new(hl7v2::sender::SenderSpawn {
                config: s.clone(),
                journal: journal.clone(),
            }),
        ));
    }
    if let Some(f) = &config.connectors.fhir {
        children.push((
            fhir::NAME.into(),
            Box::new(fhir::FhirSpawn {
                config: f.resolved(|p| config.resolve(p)),
                facility: config.gateway.facility_id.clone(),
                journal: journal.clone(),
            }),
        ));
    }
    children
}
