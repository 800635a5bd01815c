//! `[web]`: where the status page and API listen. Serde checks all there is to check: the
//! address parses.

use serde::Deserialize;
use std::net::SocketAddr;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Address of the status page and API. Loopback by default: without `[access]` it has no
    /// logins.
    #[serde(default = "default_web_bind")]
    pub bind: SocketAddr,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            bind: default_web_bind(),
        }
    }
}

fn default_web_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8088))
}
