//! `[devices.occupancy]`: the local broker, the sensors, the rooms they watch, the waiting areas
//! the rooms belong to, and the debounce delays.
//!
//! Validation here is the only place that checks names and references; the state machine in
//! `protocol.rs` relies on it (every sensor's room exists, names are unique).

use crate::settings::{self, TlsConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

/// The prefix of every key reported by [`OccupancyConfig::validate`].
const KEY: &str = "devices.occupancy";

/// Longest debounce or staleness delay accepted: a day. Longer is certainly a unit mistake.
const MAX_DELAY_S: f64 = 86_400.0;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OccupancyConfig {
    /// The MQTT broker the sensors publish to (zigbee2mqtt's, often the relay's Mosquitto).
    pub broker: BrokerConfig,
    /// Every sensor listened to; each belongs to one room.
    pub sensors: Vec<SensorConfig>,
    /// Every room watched; each belongs to one waiting area.
    pub rooms: Vec<RoomConfig>,
    /// Seconds "occupied" must hold before a vacant room counts as occupied (fractions allowed).
    #[serde(default = "default_occupied_delay_s")]
    pub occupied_delay_s: f64,
    /// Seconds "vacant" must hold before an occupied room counts as vacant: motion sensors report
    /// no motion long before the patient has left.
    #[serde(default = "default_vacancy_delay_s")]
    pub vacancy_delay_s: f64,
    /// Seconds a new people count must hold (with the same occupancy) before it counts, so that
    /// someone walking past a counter does not produce two events.
    #[serde(default = "default_count_delay_s")]
    pub count_delay_s: f64,
    /// A sensor with no valid reading for this many seconds is flagged stale in `GetOccupancy`;
    /// absent means never flagged (many sensors only report changes).
    #[serde(default)]
    pub stale_after_s: Option<f64>,
    /// Largest payload decoded; a bigger one is counted as malformed and not parsed.
    #[serde(default = "default_max_payload_bytes")]
    pub max_payload_bytes: usize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker port (1883 plain, 8883 TLS by convention).
    #[serde(default = "default_port")]
    pub port: u16,
    /// MQTT client id; default `clinic-gateway-occupancy-<facility_id>`, distinct from the
    /// relay's so that both can share one broker.
    #[serde(default)]
    pub client_id: Option<String>,
    /// MQTT keep-alive in seconds.
    #[serde(default = "default_keep_alive_secs")]
    pub keep_alive_secs: u64,
    /// First reconnect delay; doubles up to `reconnect_max_ms`.
    #[serde(default = "default_reconnect_initial_ms")]
    pub reconnect_initial_ms: u64,
    /// Cap of the reconnect delay.
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Broker user name, if the broker asks for one.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the broker password (kept out of the config file).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// TLS to the broker; absent means plain TCP (fine for a broker on the same host or LAN
    /// segment).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// What a sensor measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorKind {
    /// Presence, as a boolean (zigbee2mqtt's `occupancy`).
    Occupancy,
    /// People in the room, as a non-negative integer.
    Counter,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SensorConfig {
    /// Unique sensor name (zigbee2mqtt's friendly name); shown on the status page.
    pub name: String,
    /// MQTT topic the sensor publishes on; default `zigbee2mqtt/<name>`. No wildcards.
    #[serde(default)]
    pub topic: Option<String>,
    /// `occupancy` (a boolean) or `counter` (a people count).
    pub kind: SensorKind,
    /// JSON pointer (RFC 6901) to the value in the payload; default `/occupancy` or `/count`.
    #[serde(default)]
    pub pointer: Option<String>,
    /// Name of the room the sensor watches.
    pub room: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoomConfig {
    /// Unique room name; appears in journal events (never a patient's name).
    pub name: String,
    /// Name of the waiting area the room belongs to; areas exist by being named here.
    pub area: String,
}

fn default_occupied_delay_s() -> f64 {
    2.0
}
fn default_vacancy_delay_s() -> f64 {
    60.0
}
fn default_count_delay_s() -> f64 {
    5.0
}
fn default_max_payload_bytes() -> usize {
    64 * 1024
}
fn default_port() -> u16 {
    1883
}
fn default_keep_alive_secs() -> u64 {
    30
}
fn default_reconnect_initial_ms() -> u64 {
    500
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}

impl SensorConfig {
    /// The topic subscribed to for this sensor.
    pub fn topic(&self) -> String {
        self.topic
            .clone()
            .unwrap_or_else(|| format!("zigbee2mqtt/{}", self.name))
    }

    /// The JSON pointer to its value.
    pub fn pointer(&self) -> &str {
        match (&self.pointer, self.kind) {
            (Some(p), _) => p,
            (None, SensorKind::Occupancy) => "/occupancy",
            (None, SensorKind::Counter) => "/count",
        }
    }
}

impl OccupancyConfig {
    /// Seconds as a duration; validation guarantees the value is finite and in range.
    fn delay(seconds: f64) -> Duration {
        Duration::try_from_secs_f64(seconds).unwrap_or(Duration::ZERO)
    }

    pub fn occupied_delay(&self) -> Duration {
        Self::delay(self.occupied_delay_s)
    }
    pub fn vacancy_delay(&self) -> Duration {
        Self::delay(self.vacancy_delay_s)
    }
    pub fn count_delay(&self) -> Duration {
        Self::delay(self.count_delay_s)
    }
    pub fn stale_after(&self) -> Option<Duration> {
        self.stale_after_s.map(Self::delay)
    }

    /// Reports every problem as (dotted key with `[index]`, message); relative paths are
    /// resolved against `base`.
    pub fn validate(&self, base: &Path, bad: &mut dyn FnMut(&str, String)) {
        self.broker.validate(base, bad);
        let delays = [
            ("occupied_delay_s", Some(self.occupied_delay_s)),
            ("vacancy_delay_s", Some(self.vacancy_delay_s)),
            ("count_delay_s", Some(self.count_delay_s)),
            ("stale_after_s", self.stale_after_s),
        ];
        for (key, value) in delays {
            if value.is_some_and(|v| !(0.0..=MAX_DELAY_S).contains(&v)) {
                bad(
                    &format!("{KEY}.{key}"),
                    format!("must be between 0 and {MAX_DELAY_S} seconds"),
                );
            }
        }
        if self.stale_after_s == Some(0.0) {
            bad(&format!("{KEY}.stale_after_s"), "must be above 0".into());
        }
        if !(64..=(1 << 20)).contains(&self.max_payload_bytes) {
            bad(
                &format!("{KEY}.max_payload_bytes"),
                "must be between 64 and 1048576".into(),
            );
        }
        if self.rooms.is_empty() {
            bad(&format!("{KEY}.rooms"), "needs at least one room".into());
        }
        if self.sensors.is_empty() {
            bad(
                &format!("{KEY}.sensors"),
                "needs at least one sensor".into(),
            );
        }
        let mut rooms = BTreeSet::new();
        for (i, room) in self.rooms.iter().enumerate() {
            let key = format!("{KEY}.rooms[{i}]");
            check_name(&room.name, &format!("{key}.name"), &mut rooms, bad);
            if room.area.trim().is_empty() {
                bad(&format!("{key}.area"), "must name a waiting area".into());
            }
        }
        let mut sensors = BTreeSet::new();
        for (i, sensor) in self.sensors.iter().enumerate() {
            let key = format!("{KEY}.sensors[{i}]");
            check_name(&sensor.name, &format!("{key}.name"), &mut sensors, bad);
            if !rooms.contains(sensor.room.as_str()) {
                bad(
                    &format!("{key}.room"),
                    format!("no room named {:?} in {KEY}.rooms", sensor.room),
                );
            }
            if let Err(why) = check_topic(&sensor.topic()) {
                // A default topic is built from the name, so the name is what to fix.
                let field = if sensor.topic.is_some() {
                    "topic"
                } else {
                    "name"
                };
                bad(&format!("{key}.{field}"), why.into());
            }
            if let Err(why) = check_pointer(sensor.pointer()) {
                bad(&format!("{key}.pointer"), why.into());
            }
        }
    }
}

impl BrokerConfig {
    fn validate(&self, base: &Path, bad: &mut dyn FnMut(&str, String)) {
        let key = format!("{KEY}.broker");
        if self.host.trim().is_empty() {
            bad(&format!("{key}.host"), "must not be empty".into());
        }
        if self.keep_alive_secs < 5 {
            bad(
                &format!("{key}.keep_alive_secs"),
                "must be at least 5".into(),
            );
        }
        if self.reconnect_initial_ms == 0 || self.reconnect_initial_ms > self.reconnect_max_ms {
            bad(
                &format!("{key}.reconnect_initial_ms"),
                "must be above 0 and at most reconnect_max_ms".into(),
            );
        }
        if self.client_id.as_ref().is_some_and(|c| c.is_empty()) {
            bad(&format!("{key}.client_id"), "must not be empty".into());
        }
        if let Some(p) = &self.password_file {
            let path = settings::resolve(base, p);
            if let Err(e) = std::fs::read(&path) {
                bad(
                    &format!("{key}.password_file"),
                    format!("cannot read {}: {e}", path.display()),
                );
            }
            if self.username.is_none() {
                bad(
                    &format!("{key}.password_file"),
                    format!("needs {key}.username too"),
                );
            }
        }
        if let Some(tls) = &self.tls
            && let Err(e) = crate::relay::tls::client_config(tls, |p| settings::resolve(base, p))
        {
            bad(&tls_key(e.key), e.message);
        }
    }
}

/// The relay's TLS builder names its own keys (`relay.tls.ca_file`); the same field here lives
/// under `devices.occupancy.broker`.
pub fn tls_key(relay_key: &str) -> String {
    format!(
        "{KEY}.broker.{}",
        relay_key.strip_prefix("relay.").unwrap_or(relay_key)
    )
}

fn check_name<'a>(
    name: &'a str,
    key: &str,
    seen: &mut BTreeSet<&'a str>,
    bad: &mut dyn FnMut(&str, String),
) {
    if name.trim().is_empty() {
        bad(key, "must not be empty".into());
    } else if !seen.insert(name) {
        bad(key, format!("{name:?} is used twice"));
    }
}

/// A topic to subscribe to exactly one sensor's messages: wildcards would mix sensors.
fn check_topic(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() || topic.len() > 65_535 {
        Err("topic must be 1 to 65535 bytes")
    } else if topic.contains(['+', '#']) {
        Err("topic must not contain MQTT wildcards (+ or #)")
    } else if topic.contains('\0') {
        Err("topic must not contain NUL")
    } else {
        Ok(())
    }
}

/// RFC 6901: empty (the whole document) or `/`-separated tokens where `~` only starts `~0` or
/// `~1`. serde_json would read a bad escape literally and silently never match.
fn check_pointer(pointer: &str) -> Result<(), &'static str> {
    if !(pointer.is_empty() || pointer.starts_with('/')) {
        return Err("must be empty or start with '/' (a JSON pointer, e.g. /occupancy)");
    }
    let mut rest = pointer;
    while let Some(at) = rest.find('~') {
        rest = &rest[at + 1..];
        if !(rest.starts_with('0') || rest.starts_with('1')) {
            return Err("'~' must be followed by 0 or 1 (RFC 6901 escapes)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::OccupancyConfig;
    use crate::settings;
    use std::path::Path;

    const ROOMS: &str = "[[devices.occupancy.rooms]]\nname = \"exam-1\"\narea = \"wait-a\"\n";

    /// The problems of the `[devices.occupancy]` table in `text`, as `key: message`.
    fn found_in(text: &str) -> Vec<String> {
        match settings::section::<OccupancyConfig>(text, "devices.occupancy") {
            Ok(o) => settings::keyed(settings::collect(|bad| o.validate(Path::new("."), bad))),
            Err(e) => vec![e],
        }
    }

    /// The problems of a table with `occupancy` as its body (before the broker table and
    /// `ROOMS`) and `sensors` after them.
    fn check(occupancy: &str, sensors: &str) -> Vec<String> {
        found_in(&format!(
            "[devices.occupancy]\n{occupancy}\n\
             [devices.occupancy.broker]\nhost = \"127.0.0.1\"\n{ROOMS}{sensors}"
        ))
    }

    const PIR: &str = "[[devices.occupancy.sensors]]\nname = \"pir-1\"\nkind = \"occupancy\"\nroom = \"exam-1\"\n";

    #[test]
    fn minimal_table_is_accepted_with_defaults() {
        assert_eq!(check("", PIR), Vec::<String>::new());
        let o: OccupancyConfig = settings::section(
            &format!("[devices.occupancy.broker]\nhost = \"h\"\n{ROOMS}{PIR}"),
            "devices.occupancy",
        )
        .expect("valid");
        assert_eq!(o.sensors[0].topic(), "zigbee2mqtt/pir-1");
        assert_eq!(o.sensors[0].pointer(), "/occupancy");
        assert_eq!(o.broker.port, 1883);
        assert_eq!(o.vacancy_delay().as_secs(), 60);
    }

    #[test]
    fn unknown_room_duplicate_name_wildcard_and_bad_pointer_are_named() {
        let sensors = format!(
            "{PIR}[[devices.occupancy.sensors]]\nname = \"pir-1\"\nkind = \"counter\"\nroom = \"nowhere\"\n\
             [[devices.occupancy.sensors]]\nname = \"c\"\nkind = \"counter\"\nroom = \"exam-1\"\n\
             topic = \"site/+/count\"\npointer = \"count\"\n\
             [[devices.occupancy.sensors]]\nname = \"d\"\nkind = \"counter\"\nroom = \"exam-1\"\npointer = \"/a~2\"\n"
        );
        let problems = check("", &sensors);
        assert_eq!(
            problems,
            [
                "devices.occupancy.sensors[1].name: \"pir-1\" is used twice",
                "devices.occupancy.sensors[1].room: no room named \"nowhere\" in devices.occupancy.rooms",
                "devices.occupancy.sensors[2].topic: topic must not contain MQTT wildcards (+ or #)",
                "devices.occupancy.sensors[2].pointer: must be empty or start with '/' (a JSON pointer, e.g. /occupancy)",
                "devices.occupancy.sensors[3].pointer: '~' must be followed by 0 or 1 (RFC 6901 escapes)",
            ]
        );
    }

    #[test]
    fn delays_and_limits_are_checked() {
        let problems = check(
            "vacancy_delay_s = -1.0\nstale_after_s = 0.0\nmax_payload_bytes = 1",
            PIR,
        );
        assert_eq!(
            problems,
            [
                "devices.occupancy.vacancy_delay_s: must be between 0 and 86400 seconds",
                "devices.occupancy.stale_after_s: must be above 0",
                "devices.occupancy.max_payload_bytes: must be between 64 and 1048576",
            ]
        );
    }

    #[test]
    fn unknown_key_and_missing_password_file_are_refused() {
        let problems = check("colour = 1", PIR);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("unknown field `colour`"),
            "{problems:?}"
        );
        let found = found_in(&format!(
            "[devices.occupancy.broker]\nhost = \"h\"\n\
             password_file = \"/nonexistent/pw\"\n{ROOMS}{PIR}"
        ));
        let keys: Vec<&str> = found
            .iter()
            .filter_map(|p| p.split_once(": ").map(|(key, _)| key))
            .collect();
        assert_eq!(
            keys,
            [
                "devices.occupancy.broker.password_file",
                "devices.occupancy.broker.password_file"
            ]
        );
    }
}
