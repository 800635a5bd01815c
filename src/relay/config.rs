//! `[relay]`: the MQTT connection to the cloud broker, and its validation.

pub use crate::settings::TlsConfig;
use crate::settings::{self, Problem};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The prefix of every key this section reports.
const KEY: &str = "relay";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker port (1883 plain, 8883 TLS by convention).
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    /// MQTT client id; default `clinic-gateway-<facility_id>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// MQTT keep-alive in seconds.
    #[serde(default = "default_keep_alive_secs")]
    pub keep_alive_secs: u64,
    /// Most QoS 1 publishes awaiting PUBACK at once.
    #[serde(default = "default_inflight_window")]
    pub inflight_window: u16,
    /// First reconnect delay; doubles up to `reconnect_max_ms`.
    #[serde(default = "default_reconnect_initial_ms")]
    pub reconnect_initial_ms: u64,
    /// Cap of the reconnect delay.
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Largest event envelope published; a bigger one becomes a dead letter at once instead of
    /// breaking the connection for everything behind it.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Broker user name, if the broker asks for one.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the broker password (kept out of the config file).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// TLS to the broker; absent means plain TCP (only for a broker on the same host).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Further nodes of the same broker cluster, `"host:port"`: when a connection fails or is
    /// lost, the relay tries the next one (after `host`, in this order, then `host` again).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The topic contract served (`docs/relay.md`): 1 (`clinic/{f}/events/{kind}`, kinds with
    /// dots, which NATS refuses) or 2 (`clinic/v2/{f}/events/{kind with '/' for '.'}`, which
    /// every broker accepts).
    #[serde(default = "default_contract")]
    pub contract: u8,
    /// Beside `contract = 2`, keep serving contract 1 for consumers not moved yet: every event
    /// is published under both topics, and commands are taken on both.
    #[serde(default)]
    pub serve_contract_1: bool,
    /// How many times the broker may close the connection right after the same row's publish
    /// before that row is dead-lettered as a poison message.
    #[serde(default = "default_poison_after")]
    pub poison_after: u32,
    /// The MQTT version spoken to the broker: `"3.1.1"` (the default; all NATS and RabbitMQ 3.10
    /// speak) or `"5"` (Mosquitto and others: PUBACK reason codes, message and session expiry,
    /// CloudEvents attributes as user properties).
    #[serde(default)]
    pub protocol: Protocol,
    /// MQTT 5: seconds the broker keeps an event for a subscriber that has not received it yet
    /// (an offline persistent session), counted from its arrival at the broker; absent, no expiry.
    #[serde(default)]
    pub message_expiry_secs: Option<u32>,
    /// MQTT 5: the expiry of events of a kind, overriding `message_expiry_secs`
    /// (`{ "device.reading" = 300 }`).
    #[serde(default)]
    pub message_expiry_by_kind: BTreeMap<String, u32>,
    /// MQTT 5: seconds the broker keeps the relay's session after the connection ends: its
    /// command subscription, and the commands sent to it meanwhile, which arrive when the
    /// gateway reconnects. 0 (the default) ends the session with the connection.
    #[serde(default)]
    pub session_expiry_secs: u32,
}

/// The MQTT version of the relay's connection.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 3.1.1: a broker closing the connection is the only refusal it can express.
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5.
    #[serde(rename = "5")]
    V5,
}

fn default_contract() -> u8 {
    1
}
fn default_poison_after() -> u32 {
    3
}

fn default_mqtt_port() -> u16 {
    8883
}
fn default_keep_alive_secs() -> u64 {
    30
}
fn default_inflight_window() -> u16 {
    500
}
fn default_max_message_bytes() -> usize {
    1 << 20
}
fn default_reconnect_initial_ms() -> u64 {
    500
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}

/// A `"host:port"` entry of `relay.hosts`.
fn parse_node(node: &str) -> Option<(String, u16)> {
    let (host, port) = node.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.trim().is_empty()).then(|| (host.to_string(), port))
}

impl RelayConfig {
    /// The brokers to connect to, in the order they are tried: `host:port`, then `hosts`.
    pub fn brokers(&self) -> Vec<(String, u16)> {
        std::iter::once((self.host.clone(), self.port))
            .chain(self.hosts.iter().filter_map(|n| parse_node(n)))
            .collect()
    }

    /// The message expiry of an event of `kind`, in seconds, if one is configured.
    pub fn message_expiry(&self, kind: &str) -> Option<u32> {
        self.message_expiry_by_kind
            .get(kind)
            .copied()
            .or(self.message_expiry_secs)
    }

    /// Every problem of `[relay]`; relative paths are resolved against `base`.
    pub fn validate(&self, base: &Path) -> Vec<Problem> {
        let mut problems = settings::collect(|bad| {
            if self.host.trim().is_empty() {
                bad("relay.host", "must not be empty".into());
            }
            for (i, node) in self.hosts.iter().enumerate() {
                if parse_node(node).is_none() {
                    bad(
                        &format!("relay.hosts[{i}]"),
                        format!("{node:?} is not \"host:port\" (a port from 1 to 65535)"),
                    );
                }
            }
            if self.inflight_window == 0 {
                bad("relay.inflight_window", "must be at least 1".into());
            }
            if !(256..=(64 << 20)).contains(&self.max_message_bytes) {
                bad(
                    "relay.max_message_bytes",
                    "must be between 256 and 67108864".into(),
                );
            }
            match (self.contract, self.serve_contract_1) {
                (1, true) => bad(
                    "relay.serve_contract_1",
                    "only goes beside contract = 2 (contract 1 is served already)".into(),
                ),
                (1 | 2, _) => {}
                _ => bad("relay.contract", "must be 1 or 2".into()),
            }
            if self.poison_after == 0 {
                bad("relay.poison_after", "must be at least 1".into());
            }
            if self.protocol == Protocol::V311 {
                let only_5 = "needs relay.protocol = \"5\" (MQTT 3.1.1 has no expiry)";
                if self.message_expiry_secs.is_some() {
                    bad("relay.message_expiry_secs", only_5.into());
                }
                if !self.message_expiry_by_kind.is_empty() {
                    bad("relay.message_expiry_by_kind", only_5.into());
                }
                if self.session_expiry_secs > 0 {
                    bad("relay.session_expiry_secs", only_5.into());
                }
            }
            if self.message_expiry_secs == Some(0) {
                bad("relay.message_expiry_secs", "must be at least 1".into());
            }
            for (kind, secs) in &self.message_expiry_by_kind {
                if *secs == 0 {
                    bad(
                        &format!("relay.message_expiry_by_kind.{kind}"),
                        "must be at least 1".into(),
                    );
                }
            }
            if self.keep_alive_secs < 5 {
                bad("relay.keep_alive_secs", "must be at least 5".into());
            }
            settings::check_delays(
                "relay.",
                ("reconnect_initial_ms", self.reconnect_initial_ms),
                ("reconnect_max_ms", self.reconnect_max_ms),
                bad,
            );
            if let Some(p) = &self.password_file {
                settings::check_readable(&settings::resolve(base, p), "relay.password_file", bad);
                if self.username.is_none() {
                    bad("relay.password_file", "needs relay.username too".into());
                }
            }
            if let Some(t) = &self.tls {
                t.validate(&format!("{KEY}.tls"), base, bad);
            }
        });
        // Only once the files are there is it worth checking that they hold what TLS needs.
        if problems.is_empty()
            && let Some(tls) = &self.tls
            && let Err(e) = super::tls::client_config(tls, |p| settings::resolve(base, p))
        {
            problems.push(Problem::new(e.key, e.message));
        }
        problems
    }
}
