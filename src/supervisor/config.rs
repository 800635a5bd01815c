//! `[supervisor]`: how failed actors are restarted, and its validation.

use crate::settings::{self, Problem};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SupervisorConfig {
    /// First restart delay of a failed actor; doubles per consecutive failure.
    #[serde(default = "default_restart_initial_ms")]
    pub restart_initial_ms: u64,
    /// Cap of the restart delay.
    #[serde(default = "default_restart_max_ms")]
    pub restart_max_ms: u64,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            restart_initial_ms: default_restart_initial_ms(),
            restart_max_ms: default_restart_max_ms(),
        }
    }
}

fn default_restart_initial_ms() -> u64 {
    500
}
fn default_restart_max_ms() -> u64 {
    60_000
}

impl SupervisorConfig {
    /// Every problem of `[supervisor]`.
    pub fn validate(&self) -> Vec<Problem> {
        settings::collect(|bad| {
            settings::check_delays(
                "supervisor.",
                ("restart_initial_ms", self.restart_initial_ms),
                ("restart_max_ms", self.restart_max_ms),
                bad,
            );
        })
    }
}
