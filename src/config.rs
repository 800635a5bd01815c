//! The gateway's configuration: TOML files in `firmware-config/`, parsed and validated once.
//!
//! Every problem is reported as `file:line: key: message`, so that whoever edits the file on the
//! box can go straight to the line. Start-up and reload share [`load`]; actors only ever receive a
//! validated [`Config`].

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is not tied to a line (e.g. the file is missing).
    pub line: usize,
    /// Dotted key path, e.g. `relay.tls.ca_file`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = if self.key.is_empty() {
            "(file)"
        } else {
            &self.key
        };
        write!(
            f,
            "{}:{}: {}: {}",
            self.file.display(),
            self.line,
            key,
            self.message
        )
    }
}

/// A configuration that could not be accepted, with every problem found.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// The whole gateway configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Identity and local storage of this gateway.
    pub gateway: GatewayConfig,
    /// The store-and-forward journal.
    #[serde(default)]
    pub journal: JournalConfig,
    /// Delivery policy per destination (`cloud`, and later one per connector).
    #[serde(default = "default_destinations")]
    pub destinations: BTreeMap<String, DestinationConfig>,
    /// The MQTT cloud relay; absent means events stay in the journal until one is configured.
    #[serde(default)]
    pub relay: Option<RelayConfig>,
    /// The local status page and API.
    #[serde(default)]
    pub web: WebConfig,
    /// How failed actors are restarted.
    #[serde(default)]
    pub supervisor: SupervisorConfig,
    /// Healthcare connectors (`[connectors.hl7v2]`, ...).
    #[serde(default)]
    pub connectors: crate::connectors::ConnectorsConfig,
    /// Facility devices, a table array per kind (`[[devices.modbus]]`, ...).
    #[serde(default)]
    pub devices: crate::devices::DevicesConfig,
    /// Rooms and the rules joining sensors to building systems (`[facility]`).
    #[serde(default)]
    pub facility: crate::facility::config::FacilityConfig,
    /// Where the file was read from; relative paths in it are resolved against its folder.
    #[serde(skip)]
    pub source: PathBuf,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Facility identifier used in every cloud topic: letters, digits, `-` and `_`.
    pub facility_id: String,
    /// Where the journal lives. Default: `$STATE_DIRECTORY` (set by systemd), else
    /// `./clinic-gateway-data`.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// How often the liveness heartbeat runs (it proves the journal writer answers).
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// The clinic's time zone, an IANA name (`Europe/Zurich`): its day numbers the tickets and
    /// decides which appointments are today; default: the system's (`/etc/localtime`).
    #[serde(default)]
    pub timezone: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// File name of the SQLite journal, relative to `gateway.data_dir`.
    #[serde(default = "default_journal_file")]
    pub file: PathBuf,
    /// Upper bound of the journal's size in bytes; new inbound items are refused beyond it.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// How long delivered rows are kept (for audit and duplicate detection) before pruning.
    #[serde(default = "default_retention_hours")]
    pub retention_hours: u64,
    /// Most items written in one group-commit transaction.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// A file holding the key for an encrypted journal (needs a SQLCipher build).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            file: default_journal_file(),
            max_bytes: default_max_bytes(),
            retention_hours: default_retention_hours(),
            max_batch: default_max_batch(),
            key_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// Attempts before an outbox row becomes a dead letter.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First retry delay; doubles each attempt, with jitter.
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// Cap of the retry delay.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
}

impl Default for DestinationConfig {
    fn default() -> Self {
        DestinationConfig {
            max_attempts: default_max_attempts(),
            backoff_initial_ms: default_backoff_initial_ms(),
            backoff_max_ms: default_backoff_max_ms(),
        }
    }
}

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
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the CA certificate(s) the broker's certificate must chain to.
    pub ca_file: PathBuf,
    /// PEM client certificate for mutual TLS (with `client_key_file`).
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Address of the status page and API. Loopback by default: it has no logins yet.
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

fn default_heartbeat_ms() -> u64 {
    5_000
}
fn default_journal_file() -> PathBuf {
    PathBuf::from("journal.db")
}
fn default_max_bytes() -> u64 {
    1 << 30
}
fn default_retention_hours() -> u64 {
    24 * 7
}
fn default_max_batch() -> usize {
    4096
}
fn default_max_attempts() -> u32 {
    20
}
fn default_backoff_initial_ms() -> u64 {
    1_000
}
fn default_backoff_max_ms() -> u64 {
    300_000
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
fn default_web_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8088))
}
fn default_restart_initial_ms() -> u64 {
    500
}
fn default_restart_max_ms() -> u64 {
    60_000
}
fn default_destinations() -> BTreeMap<String, DestinationConfig> {
    BTreeMap::from([(crate::CLOUD.to_string(), DestinationConfig::default())])
}

impl Config {
    /// Directory holding the journal and other state.
    pub fn data_dir(&self) -> PathBuf {
        match &self.gateway.data_dir {
            Some(dir) => self.resolve(dir),
            None => std::env::var_os("STATE_DIRECTORY")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("clinic-gateway-data")),
        }
    }

    /// Full path of the journal database.
    pub fn journal_path(&self) -> PathBuf {
        self.data_dir().join(&self.journal.file)
    }

    /// Resolves a path from the file against the file's own folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.source.parent().unwrap_or(Path::new(".")).join(path)
        }
    }

    /// Delivery policy for a destination; destinations not configured get the defaults.
    pub fn destination(&self, name: &str) -> DestinationConfig {
        self.destinations.get(name).cloned().unwrap_or_default()
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.gateway.heartbeat_ms)
    }
}

/// Reads, parses and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        problems: vec![Problem {
            file: path.to_path_buf(),
            line: 0,
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    parse(path, &text)
}

/// Parses and validates configuration text that came from `path`.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let locator = Locator::new(path, text);
    let mut problems = Vec::new();
    let mut unknown = Vec::new();
    let parsed = toml::Deserializer::parse(text).and_then(|de| {
        serde_ignored::deserialize(de, |p| unknown.push(p.to_string()))
            .map_err(|e: toml::de::Error| e)
    });
    let mut config: Config = match parsed {
        Ok(c) => c,
        Err(e) => {
            // `deny_unknown_fields` stops at the first unknown key; say which one by its line.
            problems.push(locator.problem_from_toml(&e));
            return Err(ConfigError { problems });
        }
    };
    for key in unknown {
        problems.push(locator.problem(&key, "unknown key"));
    }
    config.source = path.to_path_buf();
    validate(&config, &locator, &mut problems);
    if problems.is_empty() {
        // The files exist; now check that they hold what TLS needs.
        if let Some(tls) = config.relay.as_ref().and_then(|r| r.tls.as_ref())
            && let Err(e) = crate::relay::tls::client_config(tls, |p| config.resolve(p))
        {
            problems.push(locator.problem(e.key, &e.message));
        }
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError { problems })
    }
}

fn validate(c: &Config, at: &Locator, problems: &mut Vec<Problem>) {
    let mut bad = |key: &str, message: String| problems.push(at.problem(key, &message));
    let id = &c.gateway.facility_id;
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
    {
        bad(
            "gateway.facility_id",
            "must be 1 to 64 letters, digits, '-' or '_' (it is part of MQTT topics)".into(),
        );
    }
    if let Err(e) = crate::clock::zone(c.gateway.timezone.as_deref()) {
        bad("gateway.timezone", e);
    }
    if c.gateway.heartbeat_ms < 100 {
        bad("gateway.heartbeat_ms", "must be at least 100".into());
    }
    if c.journal.max_bytes < 1 << 20 {
        bad(
            "journal.max_bytes",
            "must be at least 1048576 (1 MiB)".into(),
        );
    }
    if c.journal.max_batch == 0 {
        bad("journal.max_batch", "must be at least 1".into());
    }
    if let Some(key_file) = &c.journal.key_file {
        check_readable(&c.resolve(key_file), "journal.key_file", &mut bad);
    }
    for (name, d) in &c.destinations {
        let key = format!("destinations.{name}");
        if d.max_attempts == 0 {
            bad(&format!("{key}.max_attempts"), "must be at least 1".into());
        }
        if d.backoff_initial_ms == 0 || d.backoff_initial_ms > d.backoff_max_ms {
            bad(
                &format!("{key}.backoff_initial_ms"),
                "must be above 0 and at most backoff_max_ms".into(),
            );
        }
    }
    if let Some(r) = &c.relay {
        if r.host.trim().is_empty() {
            bad("relay.host", "must not be empty".into());
        }
        if r.inflight_window == 0 {
            bad("relay.inflight_window", "must be at least 1".into());
        }
        if !(256..=(64 << 20)).contains(&r.max_message_bytes) {
            bad(
                "relay.max_message_bytes",
                "must be between 256 and 67108864".into(),
            );
        }
        if r.keep_alive_secs < 5 {
            bad("relay.keep_alive_secs", "must be at least 5".into());
        }
        if r.reconnect_initial_ms == 0 || r.reconnect_initial_ms > r.reconnect_max_ms {
            bad(
                "relay.reconnect_initial_ms",
                "must be above 0 and at most reconnect_max_ms".into(),
            );
        }
        if let Some(p) = &r.password_file {
            check_readable(&c.resolve(p), "relay.password_file", &mut bad);
            if r.username.is_none() {
                bad("relay.password_file", "needs relay.username too".into());
            }
        }
        if let Some(t) = &r.tls {
            check_readable(&c.resolve(&t.ca_file), "relay.tls.ca_file", &mut bad);
            match (&t.client_cert_file, &t.client_key_file) {
                (Some(cert), Some(key)) => {
                    check_readable(&c.resolve(cert), "relay.tls.client_cert_file", &mut bad);
                    check_readable(&c.resolve(key), "relay.tls.client_key_file", &mut bad);
                }
                (Some(_), None) => bad(
                    "relay.tls.client_cert_file",
                    "needs relay.tls.client_key_file too".into(),
                ),
                (None, Some(_)) => bad(
                    "relay.tls.client_key_file",
                    "needs relay.tls.client_cert_file too".into(),
                ),
                (None, None) => {}
            }
        }
    }
    c.devices.validate(c, &mut bad);
    c.facility.validate(c, &mut bad);
    c.connectors.validate(&mut bad);
    if c.supervisor.restart_initial_ms == 0
        || c.supervisor.restart_initial_ms > c.supervisor.restart_max_ms
    {
        bad(
            "supervisor.restart_initial_ms",
            "must be above 0 and at most restart_max_ms".into(),
        );
    }
}

fn check_readable(path: &Path, key: &str, bad: &mut impl FnMut(&str, String)) {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {
            if let Err(e) = std::fs::File::open(path) {
                bad(key, format!("cannot read {}: {e}", path.display()));
            }
        }
        Ok(_) => bad(key, format!("{} is not a file", path.display())),
        Err(e) => bad(key, format!("cannot read {}: {e}", path.display())),
    }
}

/// Finds the line of a key path in the original text, so problems point at the line to edit.
struct Locator {
    file: PathBuf,
    text: String,
    doc: Option<toml_edit::Document<String>>,
}

impl Locator {
    fn new(file: &Path, text: &str) -> Self {
        Locator {
            file: file.to_path_buf(),
            text: text.to_string(),
            doc: toml_edit::Document::parse(text.to_string()).ok(),
        }
    }

    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// Line of the deepest part of `path` that exists in the document.
    fn line_of_key(&self, path: &str) -> usize {
        let Some(doc) = &self.doc else { return 0 };
        let mut table: &dyn toml_edit::TableLike = doc.as_table();
        let mut line = 0;
        for part in path.split('.') {
            // `name[3]` is the fourth table of an array of tables.
            let (name, index) = match part.split_once('[') {
                Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
                None => (part, None),
            };
            let Some((key, item)) = table.get_key_value(name) else {
                break;
            };
            if let Some(span) = key.span().or_else(|| item.span()) {
                line = self.line_of(span.start);
            }
            let next = match (index, item) {
                (Some(i), toml_edit::Item::ArrayOfTables(array)) => array.get(i).map(|t| {
                    if let Some(span) = t.span() {
                        line = self.line_of(span.start);
                    }
                    t as &dyn toml_edit::TableLike
                }),
                (None, item) => item.as_table_like(),
                _ => None,
            };
            let Some(next) = next else { break };
            table = next;
        }
        line
    }

    fn problem(&self, key: &str, message: &str) -> Problem {
        Problem {
            file: self.file.clone(),
            line: self.line_of_key(key),
            key: key.to_string(),
            message: message.to_string(),
        }
    }

    fn problem_from_toml(&self, e: &toml::de::Error) -> Problem {
        let message = e.message().trim().to_string();
        let line = e.span().map(|s| self.line_of(s.start)).unwrap_or(0);
        Problem {
            file: self.file.clone(),
            line,
            key: self.key_at_line(line),
            message,
        }
    }

    /// The dotted key whose definition sits on `line`, for errors that toml reports by span.
    fn key_at_line(&self, line: usize) -> String {
        let Some(doc) = &self.doc else {
            return String::new();
        };
        let mut found = String::new();
        fn walk(
            at: &Locator,
            table: &dyn toml_edit::TableLike,
            prefix: &str,
            line: usize,
            found: &mut String,
        ) {
            for (k, item) in table.iter() {
                let path = if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}.{k}")
                };
                let key_line = table
                    .get_key_value(k)
                    .and_then(|(key, _)| key.span())
                    .map(|s| at.line_of(s.start));
                if key_line == Some(line) {
                    *found = path.clone();
                }
                if let Some(t) = item.as_table_like() {
                    walk(at, t, &path, line, found);
                } else if let toml_edit::Item::ArrayOfTables(array) = item {
                    for (i, t) in array.iter().enumerate() {
                        walk(at, t, &format!("{path}[{i}]"), line, found);
                    }
                }
            }
        }
        walk(self, doc.as_table(), "", line, &mut found);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Config, Vec<String>> {
        parse(Path::new("t.toml"), text)
            .map_err(|e| e.problems.iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn an_unknown_time_zone_is_named() {
        let err = check("[gateway]\nfacility_id = \"c\"\ntimezone = \"Europe/Atlantis\"\n")
            .expect_err("refused");
        assert!(
            err[0]
                .starts_with("t.toml:3: gateway.timezone: \"Europe/Atlantis\" is not a time zone"),
            "{err:?}"
        );
        let ok = check("[gateway]\nfacility_id = \"c\"\ntimezone = \"Europe/Zurich\"\n");
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = check("[gateway]\nfacility_id = \"clinic-1\"\n").expect("valid");
        assert_eq!(c.web.bind.to_string(), "127.0.0.1:8088");
        assert!(c.relay.is_none());
        assert_eq!(c.destination("cloud").max_attempts, 20);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err =
            check("[gateway]\nfacility_id = \"c\"\n\n[web]\nbindd = \"x\"\n").expect_err("refused");
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(err[0].starts_with("t.toml:5: web.bindd: "), "{err:?}");
        assert!(err[0].contains("unknown field"), "{err:?}");
    }

    #[test]
    fn wrong_type_is_named_with_its_line() {
        let err = check("[gateway]\nfacility_id = \"c\"\n[journal]\nmax_bytes = \"big\"\n")
            .expect_err("refused");
        assert!(
            err[0].starts_with("t.toml:4: journal.max_bytes: "),
            "{err:?}"
        );
        assert!(err[0].contains("invalid type"), "{err:?}");
    }

    #[test]
    fn every_semantic_problem_is_listed() {
        let err = check(
            "[gateway]\nfacility_id = \"bad id\"\n[relay]\nhost = \"h\"\ninflight_window = 0\n\
             [relay.tls]\nca_file = \"/nonexistent/ca.pem\"\n",
        )
        .expect_err("refused");
        assert_eq!(err.len(), 3, "{err:?}");
        assert!(err[0].starts_with("t.toml:2: gateway.facility_id: "));
        assert!(err[1].starts_with("t.toml:5: relay.inflight_window: "));
        assert!(err[2].starts_with("t.toml:7: relay.tls.ca_file: cannot read /nonexistent"));
    }

    #[test]
    fn problems_in_arrays_of_tables_point_at_their_line() {
        let text = "[gateway]\nfacility_id = \"c\"\n[[destinations.x]]\n[relay]\nhost = \"h\"\n";
        let at = Locator::new(Path::new("t.toml"), text);
        assert_eq!(at.line_of_key("relay.host"), 5);
        let text = "[[a.b]]\nk = 1\n\n[[a.b]]\nk = 2\nm = 3\n";
        let at = Locator::new(Path::new("t.toml"), text);
        assert_eq!(at.line_of_key("a.b[1].m"), 6);
        assert_eq!(
            at.line_of_key("a.b[1].missing"),
            4,
            "the table's own line when the key is absent"
        );
    }

    #[test]
    fn syntax_error_has_a_line() {
        let err = check("[gateway]\nfacility_id = \n").expect_err("refused");
        assert!(err[0].starts_with("t.toml:2: "), "{err:?}");
    }
}
