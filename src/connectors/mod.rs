//! Healthcare connectors: one supervised actor per configured upstream system (EHR, lab,
//! pharmacy, ...). Each commits what it receives to the journal before answering its peer.
//!
//! **Invariant:** a connector acknowledges to its peer only what the journal has committed.

pub mod fhir;
pub mod hl7v2;

use serde::Deserialize;

/// Every `[connectors.<kind>]` table of the configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConnectorsConfig {
    /// The HL7 v2 MLLP listener.
    #[serde(default)]
    pub hl7v2: Option<hl7v2::config::Hl7Config>,
    /// Where outbound HL7 v2 messages (destination `ehr-mllp`) are delivered.
    #[serde(default)]
    pub hl7v2_out: Option<hl7v2::sender::SenderConfig>,
    /// The EHR's FHIR R4 REST API (patient lookup, demographic sync).
    #[serde(default)]
    pub fhir: Option<fhir::config::FhirConfig>,
}

impl ConnectorsConfig {
    pub fn validate(&self, bad: &mut dyn FnMut(&str, String)) {
        if let Some(h) = &self.hl7v2 {
            h.validate(bad);
        }
        if let Some(s) = &self.hl7v2_out {
            s.validate(bad);
        }
        if let Some(f) = &self.fhir {
            f.validate(bad);
        }
    }
}
