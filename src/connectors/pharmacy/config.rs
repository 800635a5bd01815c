//! `[connectors.pharmacy]`: tracking the prescriptions of queued patients.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PharmacyConfig {
    /// Minutes the pickup counter takes per prescription waiting there: a ready prescription
    /// without the pharmacy's own estimate is expected after those ready before it × this.
    #[serde(default = "default_minutes_per_prescription")]
    pub minutes_per_prescription: u32,
}

impl Default for PharmacyConfig {
    fn default() -> Self {
        PharmacyConfig {
            minutes_per_prescription: default_minutes_per_prescription(),
        }
    }
}

fn default_minutes_per_prescription() -> u32 {
    5
}

impl PharmacyConfig {
    /// Reports every problem under `connectors.pharmacy`.
    pub fn validate(&self, bad: &mut dyn FnMut(&str, String)) {
        if self.minutes_per_prescription > 240 {
            bad(
                "connectors.pharmacy.minutes_per_prescription",
                "at most 240".into(),
            );
        }
    }
}
