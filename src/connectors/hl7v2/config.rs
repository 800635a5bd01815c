//! `[connectors.hl7v2]`: the HL7 v2 MLLP listener.

use serde::Deserialize;
use std::net::SocketAddr;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Hl7Config {
    /// Address the MLLP listener binds (the EHR's interface engine connects here).
    pub listen: SocketAddr,
    /// Largest message accepted; a bigger one is answered AR and skipped.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// A connection silent this long is closed (the sender reconnects).
    #[serde(default = "default_idle_timeout_s")]
    pub idle_timeout_s: u64,
    /// Most connections served at once; more wait to be accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// MSH-3 of our ACKs when the message named no receiving application.
    #[serde(default = "default_application")]
    pub application: String,
}

fn default_max_frame_bytes() -> usize {
    1 << 20
}
fn default_idle_timeout_s() -> u64 {
    600
}
fn default_max_connections() -> usize {
    32
}
fn default_application() -> String {
    "CLINIC-GATEWAY".into()
}

impl Hl7Config {
    pub fn validate(&self, bad: &mut dyn FnMut(&str, String)) {
        if !(1024..=(64 << 20)).contains(&self.max_frame_bytes) {
            bad(
                "connectors.hl7v2.max_frame_bytes",
                "must be between 1024 and 67108864".into(),
            );
        }
        if self.idle_timeout_s == 0 {
            bad(
                "connectors.hl7v2.idle_timeout_s",
                "must be at least 1".into(),
            );
        }
        if self.max_connections == 0 {
            bad(
                "connectors.hl7v2.max_connections",
                "must be at least 1".into(),
            );
        }
        if self.application.is_empty() || self.application.contains(['|', '^', '~', '\\', '&']) {
            bad(
                "connectors.hl7v2.application",
                "must be non-empty, without HL7 delimiters".into(),
            );
        }
    }
}
