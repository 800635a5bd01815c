//! `[alerts]`: how long a clinical alert may wait for its acknowledgement, and who it goes to
//! next.

use crate::access::policy::Role;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// An alert not acknowledged this long after it was raised is escalated to
    /// `escalate_to`; as long again after that, to the cloud (`alert.escalated`).
    #[serde(default = "default_ack_within_s")]
    pub ack_within_s: u64,
    /// The second staff group (a role) an unacknowledged alert is escalated to.
    #[serde(default = "default_escalate_to")]
    pub escalate_to: Role,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            ack_within_s: default_ack_within_s(),
            escalate_to: default_escalate_to(),
        }
    }
}

fn default_ack_within_s() -> u64 {
    300
}

fn default_escalate_to() -> Role {
    Role::Admin
}

impl AlertsConfig {
    /// Reports every problem under `alerts`.
    pub fn validate(&self) -> Vec<crate::settings::Problem> {
        crate::settings::collect(|bad| {
            if self.ack_within_s == 0 || self.ack_within_s > 86_400 {
                bad("alerts.ack_within_s", "1 to 86400 seconds".into());
            }
            if !matches!(self.escalate_to, Role::Clinical | Role::Admin) {
                bad(
                    "alerts.escalate_to",
                    "\"clinical\" or \"admin\": only they may see clinical alerts".into(),
                );
            }
        })
    }

    /// `ack_within_s` in ms.
    pub fn ack_within_ms(&self) -> i64 {
        (self.ack_within_s.min(86_400) * 1000) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Vec<String> {
        let c: AlertsConfig = toml::from_str(text).expect("parses");
        c.validate().iter().map(|p| p.key.clone()).collect()
    }

    #[test]
    fn defaults_hold_and_bad_values_are_named() {
        assert!(check("").is_empty());
        assert_eq!(AlertsConfig::default().ack_within_ms(), 300_000);
        assert_eq!(
            check("ack_within_s = 0\nescalate_to = \"front_desk\""),
            ["alerts.ack_within_s", "alerts.escalate_to"]
        );
    }
}
