//! The gateway's configuration: TOML files in `firmware-config/`, read, composed from each
//! component's own section type (`<component>/config.rs`) and validated once.
//!
//! Every problem is reported as `file:line: key: message`, so that whoever edits the file on the
//! box can go straight to the line, and every problem is reported at once: each section is
//! deserialized on its own, so that a wrong type in one hides nothing in the others, and a
//! section whose key is wrong is read again without that key to find its other problems.
//! Start-up and reload share [`load`]; actors only ever receive a validated [`Config`].

use crate::access::config::AccessConfig;
use crate::alerts::config::AlertsConfig;
use crate::connectors::config::ConnectorsConfig;
use crate::devices::bacnet::protocol::ObjectKind;
use crate::devices::config::DevicesConfig;
use crate::devices::modbus::config::Function;
use crate::facility::config::{self as facility, FacilityConfig};
use crate::journal::config::{self as journal, DestinationConfig, Destinations, JournalConfig};
use crate::messaging::config::MessagingConfig;
use crate::relay::config::RelayConfig;
use crate::settings::{self, Problem};
use crate::supervisor::config::SupervisorConfig;
use crate::web::config::WebConfig;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::de::{DeTable, DeValue, ValueDeserializer};

/// One thing wrong with a configuration file, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is not tied to a line (e.g. the file is missing).
    pub line: usize,
    /// Dotted key path, e.g. `relay.tls.ca_file`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Located {
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
    pub problems: Vec<Located>,
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

/// The whole gateway configuration, composed of the components' sections.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Identity and local storage of this gateway.
    pub gateway: GatewayConfig,
    /// The store-and-forward journal.
    pub journal: JournalConfig,
    /// Delivery policy per destination (`cloud`, and later one per connector).
    pub destinations: Destinations,
    /// The MQTT cloud relay; absent means events stay in the journal until one is configured.
    pub relay: Option<RelayConfig>,
    /// The local status page and API.
    pub web: WebConfig,
    /// Staff logins for the page and API (`[access]`); off by default.
    pub access: AccessConfig,
    /// How failed actors are restarted.
    pub supervisor: SupervisorConfig,
    /// Healthcare connectors (`[connectors.hl7v2]`, ...).
    pub connectors: ConnectorsConfig,
    /// Facility devices, a table array per kind (`[[devices.modbus]]`, ...).
    pub devices: DevicesConfig,
    /// Rooms and the rules joining sensors to building systems (`[facility]`).
    pub facility: FacilityConfig,
    /// Clinical alerts: the time to acknowledge and the escalation (`[alerts]`).
    pub alerts: AlertsConfig,
    /// Patient messaging (`[messaging]`); absent: notifications only go to the cloud.
    pub messaging: Option<MessagingConfig>,
    /// Where the file was read from; relative paths in it are resolved against its folder.
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

fn default_heartbeat_ms() -> u64 {
    5_000
}

impl GatewayConfig {
    /// Every problem of `[gateway]`.
    pub fn validate(&self) -> Vec<Problem> {
        settings::collect(|bad| {
            if !settings::is_identifier(&self.facility_id) {
                bad(
                    "gateway.facility_id",
                    "must be 1 to 64 letters, digits, '-' or '_' (it is part of MQTT topics)"
                        .into(),
                );
            }
            if let Err(e) = crate::clock::zone(self.timezone.as_deref()) {
                bad("gateway.timezone", e);
            }
            if self.heartbeat_ms < 100 {
                bad("gateway.heartbeat_ms", "must be at least 100".into());
            }
        })
    }
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
        settings::resolve(self.folder(), path)
    }

    /// The folder of the file, against which its relative paths are resolved.
    pub fn folder(&self) -> &Path {
        self.source.parent().unwrap_or(Path::new("."))
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
        problems: vec![Located {
            file: path.to_path_buf(),
            line: 0,
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    parse(path, &text)
}

/// The top-level keys of the file, in the order their sections are read.
const SECTIONS: [&str; 12] = [
    "gateway",
    "journal",
    "destinations",
    "relay",
    "web",
    "access",
    "supervisor",
    "connectors",
    "devices",
    "facility",
    "alerts",
    "messaging",
];

/// Parses and validates configuration text that came from `path`.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let at = Locator::new(path, text);
    let (root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        // What the parser recovered is partial; its sections would only add false problems.
        let problems = syntax
            .iter()
            .map(|e| Located {
                file: path.to_path_buf(),
                line: e.span().map_or(0, |s| at.line_of(s.start)),
                key: String::new(),
                message: e.message().trim().to_string(),
            })
            .collect();
        return Err(ConfigError { problems });
    }
    let mut reader = Reader {
        at: &at,
        root: root.into_inner(),
        problems: Vec::new(),
    };
    let gateway = reader.section::<GatewayConfig>("gateway");
    let journal = reader.section::<JournalConfig>("journal");
    let destinations = reader.section::<Destinations>("destinations");
    let relay = reader.section::<RelayConfig>("relay");
    let web = reader.section::<WebConfig>("web");
    let access = reader.section::<AccessConfig>("access");
    let supervisor = reader.section::<SupervisorConfig>("supervisor");
    let connectors = reader.section::<ConnectorsConfig>("connectors");
    let devices = reader.section::<DevicesConfig>("devices");
    let facility = reader.section::<FacilityConfig>("facility");
    let alerts = reader.section::<AlertsConfig>("alerts");
    let messaging = reader.section::<MessagingConfig>("messaging");
    reader.unknown_sections();
    let mut problems = reader.problems;
    if let Section::Absent = &gateway {
        problems.push(Located {
            file: path.to_path_buf(),
            line: 0,
            key: "gateway".into(),
            message: "missing: every gateway needs a [gateway] table with its facility_id".into(),
        });
    }

    let base = path.parent().unwrap_or(Path::new("."));
    let mut found = Vec::new();
    if let Some(g) = gateway.checkable() {
        found.extend(g.validate());
    }
    if let Some(j) = journal.checkable() {
        found.extend(j.validate(base));
    }
    if let Some(d) = destinations.checkable() {
        found.extend(journal::validate_destinations(d));
    }
    if let Some(r) = relay.checkable() {
        found.extend(r.validate(base));
    }
    if let Some(a) = access.checkable() {
        found.extend(a.validate(base));
    }
    if let Some(w) = web.checkable() {
        // An unreadable [access] already has its problem; it is not blamed on [web] too.
        let logins = access
            .checkable()
            .map_or(matches!(access, Section::Unreadable), |a| a.enabled);
        found.extend(w.validate(base, logins));
    }
    if let Some(s) = supervisor.checkable() {
        found.extend(s.validate());
    }
    if let Some(c) = connectors.checkable() {
        found.extend(c.validate(base));
    }
    if let Some(a) = alerts.checkable() {
        found.extend(a.validate());
    }
    let no_devices = DevicesConfig::default();
    let devices_read = match &devices {
        Section::Absent => Some(&no_devices),
        read => read.checkable(),
    };
    if let Some(d) = devices_read {
        found.extend(d.validate(base));
        if let Some(f) = facility.checkable() {
            let rooms = d.occupancy.iter().flat_map(|o| &o.rooms);
            let point =
                |device: &str, name: &str, write: bool| device_point(d, device, name, write);
            found.extend(f.validate(&facility::Devices {
                occupancy_rooms: rooms.clone().map(|r| r.name.as_str()).collect(),
                areas: rooms.map(|r| r.area.as_str()).collect(),
                point: &point,
            }));
        }
    }
    if let Some(m) = messaging.checkable() {
        found.extend(settings::collect(|bad| m.validate(base, bad)));
    }
    problems.extend(found.into_iter().map(|p| at.locate(p)));
    // The file's order is the order in which whoever fixes it reads it.
    problems.sort_by_key(|p| p.line);

    // Every flawed or missing section left a problem behind, so none is left to compose.
    let Some(gateway) = gateway.accepted().filter(|_| problems.is_empty()) else {
        return Err(ConfigError { problems });
    };
    Ok(Config {
        gateway,
        journal: journal.accepted().unwrap_or_default(),
        destinations: destinations
            .accepted()
            .unwrap_or_else(journal::default_destinations),
        relay: relay.accepted(),
        web: web.accepted().unwrap_or_default(),
        access: access.accepted().unwrap_or_default(),
        supervisor: supervisor.accepted().unwrap_or_default(),
        connectors: connectors.accepted().unwrap_or_default(),
        devices: devices.accepted().unwrap_or_default(),
        facility: facility.accepted().unwrap_or_default(),
        alerts: alerts.accepted().unwrap_or_default(),
        messaging: messaging.accepted(),
        source: path.to_path_buf(),
    })
}

/// What reading one section of the file gave.
enum Section<T> {
    /// The file has no such table.
    Absent,
    Read(T),
    /// Read once its unknown keys were taken out: the types of the rest are right, so its
    /// values are worth checking, but the file is refused.
    WithoutUnknownKeys(T),
    /// A key has the wrong type or a required one is missing; its problems are recorded, and
    /// its values are not checked, since defaults would stand in for what is wrong.
    Unreadable,
}

impl<T> Section<T> {
    /// The section, if its values can be checked.
    fn checkable(&self) -> Option<&T> {
        match self {
            Section::Read(t) | Section::WithoutUnknownKeys(t) => Some(t),
            Section::Absent | Section::Unreadable => None,
        }
    }

    /// The section as the file gave it, if it was read without a problem.
    fn accepted(self) -> Option<T> {
        match self {
            Section::Read(t) => Some(t),
            _ => None,
        }
    }
}

/// Most problems reported for one section's keys before the rest of it is given up on.
const MAX_SECTION_PROBLEMS: usize = 50;

/// Takes the sections out of the parsed file one by one and records every problem they have.
struct Reader<'a, 't> {
    at: &'a Locator,
    root: DeTable<'t>,
    problems: Vec<Located>,
}

impl Reader<'_, '_> {
    /// The section `name`, its problems recorded.
    fn section<T: DeserializeOwned>(&mut self, name: &str) -> Section<T> {
        let start = self.problems.len();
        let read = self.read(name);
        // serde meets keys in its own order; whoever fixes the file reads it top to bottom.
        self.problems[start..].sort_by_key(|p| p.line);
        read
    }

    /// serde stops at a section's first wrong key, so the key is taken out and the section read
    /// again, until it reads or no key is left to blame.
    fn read<T: DeserializeOwned>(&mut self, name: &str) -> Section<T> {
        let Some((_, mut value)) = self.root.remove_entry(name) else {
            return Section::Absent;
        };
        let mut taken: Vec<String> = Vec::new();
        let mut only_unknown = true;
        while taken.len() < MAX_SECTION_PROBLEMS {
            let error = match T::deserialize(ValueDeserializer::from(value.clone())) {
                Ok(read) if taken.is_empty() => return Section::Read(read),
                Ok(read) if only_unknown => return Section::WithoutUnknownKeys(read),
                Ok(_) => return Section::Unreadable,
                Err(e) => e,
            };
            let message = error.message().trim().to_string();
            only_unknown &= message.starts_with("unknown field `");
            let path = error
                .span()
                .and_then(|span| deepest_at(value.get_ref(), &span))
                .unwrap_or_default();
            let missing = missing_field(&message).map(str::to_string);
            let mut key = format!("{name}{}", dotted(&path));
            if let Some(field) = &missing {
                key = format!("{key}.{field}");
                // A required key taken out for its own problem is not missing too.
                if taken.contains(&key) {
                    return Section::Unreadable;
                }
            }
            let line = error
                .span()
                .map_or_else(|| self.at.line_of_key(&key), |s| self.at.line_of(s.start));
            self.problems.push(Located {
                file: self.at.file.clone(),
                line,
                key,
                message,
            });
            let Some(entry) = path.iter().rposition(|s| matches!(s, Step::Key(_))) else {
                return Section::Unreadable;
            };
            let entry = &path[..=entry];
            if missing.is_some() || !take(value.get_mut(), entry) {
                return Section::Unreadable;
            }
            taken.push(format!("{name}{}", dotted(entry)));
        }
        Section::Unreadable
    }

    /// Whatever is left at the top of the file belongs to no section.
    fn unknown_sections(&mut self) {
        let expected = SECTIONS.map(|s| format!("`{s}`")).join(", ");
        for (key, _) in self.root.iter() {
            self.problems.push(Located {
                file: self.at.file.clone(),
                line: self.at.line_of(key.span().start),
                key: key.get_ref().to_string(),
                message: format!("unknown key, expected one of {expected}"),
            });
        }
    }
}

/// A step of a key path inside a section.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

fn dotted(path: &[Step]) -> String {
    path.iter()
        .map(|step| match step {
            Step::Key(k) => format!(".{k}"),
            Step::Index(i) => format!("[{i}]"),
        })
        .collect()
}

/// The path of the deepest key or array element whose text holds the start of `span`.
///
/// Children are searched even outside their parent's span: a `[table]` header's span does not
/// cover the keys written under it.
fn deepest_at(value: &DeValue<'_>, span: &Range<usize>) -> Option<Vec<Step>> {
    fn walk(value: &DeValue<'_>, at: usize, path: &mut Vec<Step>, best: &mut Option<Vec<Step>>) {
        let mut visit = |step: Step, spans: &[Range<usize>], child: &DeValue<'_>| {
            path.push(step);
            if spans.iter().any(|s| s.contains(&at))
                && best.as_ref().is_none_or(|b| b.len() < path.len())
            {
                *best = Some(path.clone());
            }
            walk(child, at, path, best);
            path.pop();
        };
        match value {
            DeValue::Table(table) => {
                for (k, v) in table.iter() {
                    visit(
                        Step::Key(k.get_ref().to_string()),
                        &[k.span(), v.span()],
                        v.get_ref(),
                    );
                }
            }
            DeValue::Array(array) => {
                for (i, v) in array.iter().enumerate() {
                    visit(Step::Index(i), &[v.span()], v.get_ref());
                }
            }
            _ => {}
        }
    }
    let mut best = None;
    walk(value, span.start, &mut Vec::new(), &mut best);
    best
}

/// Takes the key at `path` (which ends in a key) out of `value`; false if it is not there.
fn take(value: &mut DeValue<'_>, path: &[Step]) -> bool {
    match (path, value) {
        ([Step::Key(k)], DeValue::Table(t)) => t.remove(k.as_str()).is_some(),
        ([Step::Key(k), rest @ ..], DeValue::Table(t)) => t
            .get_mut(k.as_str())
            .is_some_and(|v| take(v.get_mut(), rest)),
        ([Step::Index(i), rest @ ..], DeValue::Array(a)) => {
            a.get_mut(*i).is_some_and(|v| take(v.get_mut(), rest))
        }
        _ => false,
    }
}

/// The field named by serde's "missing field `x`", which points at the table lacking it.
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")?
        .split_once('`')
        .map(|(field, _)| field)
}

/// The point `device`/`point` of a configured Modbus or BACnet device; with `write`, only one
/// the gateway may write.
fn device_point(
    devices: &DevicesConfig,
    device: &str,
    point: &str,
    write: bool,
) -> Result<facility::Point, String> {
    if let Some(d) = devices.modbus.iter().find(|d| d.name == device) {
        let r = d
            .registers
            .iter()
            .find(|r| r.name == point)
            .ok_or_else(|| format!("device {device:?} has no register named {point:?}"))?;
        return match (r.function, write) {
            (Function::Coil, _) | (Function::DiscreteInput, false) => Ok(facility::Point {
                takes_bool: true,
                takes_number: false,
                relinquish: false,
                expects: "true or false",
            }),
            (Function::Holding, _) | (Function::Input, false) => Ok(facility::Point {
                takes_bool: true,
                takes_number: true,
                relinquish: false,
                expects: "a number",
            }),
            _ => Err(format!(
                "{device} {point} is read-only (input registers and discrete inputs)"
            )),
        };
    }
    if let Some(d) = devices.bacnet.iter().find(|d| d.name == device) {
        let (_, o) = d
            .object(point)
            .ok_or_else(|| format!("device {device:?} has no object named {point:?}"))?;
        if write && !o.writable {
            return Err(format!("{device} {point} is not `writable`"));
        }
        let binary = matches!(
            o.kind,
            ObjectKind::BinaryInput | ObjectKind::BinaryOutput | ObjectKind::BinaryValue
        );
        return Ok(facility::Point {
            takes_bool: binary,
            takes_number: !binary,
            relinquish: true,
            expects: if binary { "true or false" } else { "a number" },
        });
    }
    Err(format!(
        "no [[devices.modbus]] or [[devices.bacnet]] is named {device:?}"
    ))
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

    /// A section's problem with the file and the line of its key.
    fn locate(&self, problem: Problem) -> Located {
        Located {
            file: self.file.clone(),
            line: self.line_of_key(&problem.key),
            key: problem.key,
            message: problem.message,
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Config, Vec<String>> {
        parse(Path::new("t.toml"), text)
            .map_err(|e| e.problems.iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn lab_pharmacy_and_alerts_problems_are_named_with_their_lines() {
        let err = check(
            "[gateway]\nfacility_id = \"c\"\n[connectors.lab]\n[[connectors.lab.priority]]\nqueue = \"general\"\ncodes = []\npriority = \"urgent\"\n[alerts]\nack_within_s = 0\n",
        )
        .expect_err("refused");
        assert_eq!(
            err,
            [
                "t.toml:6: connectors.lab.priority[0].codes: at least one non-empty test code",
                "t.toml:9: alerts.ack_within_s: 1 to 86400 seconds"
            ]
        );
        let err = check(
            "[gateway]\nfacility_id = \"c\"\n[connectors.lab]\n[connectors.lab.specimens]\ndelay_min = 0\n",
        )
        .expect_err("refused");
        assert_eq!(
            err,
            ["t.toml:5: connectors.lab.specimens.delay_min: 1 to 240 minutes"]
        );
        let err = check(
            "[gateway]\nfacility_id = \"c\"\n[connectors.fhir]\nbase_url = \"http://ehr\"\nidentifier_system = \"urn:mrn\"\n\
             [connectors.fhir.pharmacy]\npoll_interval_s = 90\n[connectors.pharmacy]\n\
             [[connectors.pharmacy.alert_rules]]\nsegment = \"NTE\"\nfield = 0\n",
        )
        .expect_err("refused");
        assert_eq!(
            err,
            [
                "t.toml:7: connectors.fhir.pharmacy.poll_interval_s: 1 to 60 seconds (the urgent sync limit)",
                "t.toml:11: connectors.pharmacy.alert_rules[0].field: a field number, 1 to 999"
            ]
        );
        let err = check(
            "[gateway]\nfacility_id = \"c\"\n[connectors.fhir]\nbase_url = \"http://ehr\"\nidentifier_system = \"urn:mrn\"\n\
             [connectors.fhir.results]\n[connectors.fhir.pharmacy]\n",
        )
        .expect_err("refused");
        assert_eq!(
            err,
            [
                "t.toml:6: connectors.fhir.results: polls results for [connectors.lab], which is not configured",
                "t.toml:7: connectors.fhir.pharmacy: polls prescriptions, allergies and detected issues for [connectors.pharmacy], which is not configured"
            ]
        );
        let ok = check("[gateway]\nfacility_id = \"c\"\n").expect("defaults");
        assert_eq!(ok.alerts.ack_within_s, 300);
        assert!(ok.connectors.lab.is_none());
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
    fn access_is_off_by_default_and_its_problems_are_named_with_their_lines() {
        let c = check("[gateway]\nfacility_id = \"c\"\n").expect("valid");
        assert!(!c.access.enabled);
        let err = check(
            "[gateway]\nfacility_id = \"c\"\n\n[access]\nenabled = true\nlockout_initial_secs = 0\nallowed_hosts = []\n",
        )
        .expect_err("refused");
        assert!(
            err.iter()
                .any(|e| e.starts_with("t.toml:6: access.lockout_initial_secs: ")),
            "{err:?}"
        );
        assert!(
            err.iter()
                .any(|e| e.starts_with("t.toml:7: access.allowed_hosts: ")),
            "{err:?}"
        );
        let ok = check("[gateway]\nfacility_id = \"c\"\n\n[access]\nenabled = true\n");
        assert!(ok.is_ok_and(|c| c.access.enabled));
    }

    #[test]
    fn single_sign_on_problems_are_named_with_their_lines() {
        let text = "[gateway]\nfacility_id = \"c\"\n\n[access]\nenabled = true\n\n[access.oidc]\nname = \"IdP\"\nissuer = \"http://idp.example\"\nclient_id = \"gw\"\nredirect_url = \"http://127.0.0.1:8088/login/oidc/callback\"\n[access.oidc.roles]\nstaff = \"nurse\"\n";
        let err = check(text).expect_err("refused");
        assert_eq!(
            err,
            [
                "t.toml:13: access.oidc.roles.staff: unknown variant `nurse`, expected one of `front_desk`, `clinical`, `facilities`, `manager`, `admin`"
            ]
        );
        let err = check(&text.replace("nurse", "clinical")).expect_err("refused");
        assert_eq!(
            err,
            ["t.toml:9: access.oidc.issuer: must be https:// unless on loopback"]
        );
        let ok = check(
            &text
                .replace("nurse", "clinical")
                .replace("idp.example", "127.0.0.1:9"),
        );
        assert!(ok.is_ok_and(|c| c.access.oidc.is_some()));
    }

    #[test]
    fn a_network_bind_without_tls_and_logins_is_named_with_its_line() {
        let err = check("[gateway]\nfacility_id = \"c\"\n\n[web]\nbind = \"0.0.0.0:8443\"\n")
            .expect_err("refused");
        assert_eq!(
            err,
            [
                "t.toml:5: web.bind: 0.0.0.0 is reachable from the network: it needs [web.tls] and [access] enabled = true"
            ]
        );
        let ok = check(
            "[gateway]\nfacility_id = \"c\"\n[web]\nbind = \"0.0.0.0:8443\"\n[web.tls]\nself_signed = true\n[access]\nenabled = true\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn the_audit_head_interval_defaults_to_an_hour_and_zero_is_refused() {
        let c = check("[gateway]\nfacility_id = \"c\"\n").expect("valid");
        assert_eq!(c.journal.audit_head_interval_s, 3600);
        let err = check("[gateway]\nfacility_id = \"c\"\n[journal]\naudit_head_interval_s = 0\n")
            .expect_err("refused");
        assert_eq!(
            err,
            ["t.toml:4: journal.audit_head_interval_s: must be at least 1"]
        );
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
    fn the_topic_contract_is_checked() {
        let err = check(
            "[gateway]\nfacility_id = \"c\"\n[relay]\nhost = \"h\"\ncontract = 3\npoison_after = 0\n",
        )
        .expect_err("refused");
        assert_eq!(
            err,
            [
                "t.toml:5: relay.contract: must be 1 or 2",
                "t.toml:6: relay.poison_after: must be at least 1"
            ]
        );
        let err = check(
            "[gateway]\nfacility_id = \"c\"\n[relay]\nhost = \"h\"\nserve_contract_1 = true\n",
        )
        .expect_err("refused");
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(
            err[0].starts_with("t.toml:5: relay.serve_contract_1: only goes beside contract = 2")
        );
        let c = check(
            "[gateway]\nfacility_id = \"c\"\n[relay]\nhost = \"h\"\ncontract = 2\nserve_contract_1 = true\n",
        )
        .expect("valid");
        let relay = c.relay.expect("relay");
        assert_eq!((relay.contract, relay.serve_contract_1), (2, true));
    }

    #[test]
    fn relay_cluster_nodes_are_host_and_port() {
        let err = check(
            "[gateway]\nfacility_id = \"c\"\n[relay]\nhost = \"a\"\nport = 1883\nhosts = [\"b:1884\", \"c\"]\n",
        )
        .expect_err("refused");
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(
            err[0].starts_with("t.toml:6: relay.hosts[1]: \"c\" is not"),
            "{err:?}"
        );
        let c = check(
            "[gateway]\nfacility_id = \"c\"\n[relay]\nhost = \"a\"\nport = 1883\nhosts = [\"b:1884\", \"[::1]:1885\"]\n",
        )
        .expect("valid");
        assert_eq!(
            c.relay.expect("relay").brokers(),
            [("a".into(), 1883), ("b".into(), 1884), ("::1".into(), 1885)]
        );
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
    fn type_errors_in_two_sections_are_both_reported() {
        let err = check(
            "[gateway]\nfacility_id = \"c\"\n[journal]\nmax_bytes = \"big\"\n\
             [web]\nbind = 8088\n",
        )
        .expect_err("refused");
        assert_eq!(err.len(), 2, "{err:?}");
        assert!(
            err[0].starts_with("t.toml:4: journal.max_bytes: invalid type"),
            "{err:?}"
        );
        assert!(
            err[1].starts_with("t.toml:6: web.bind: invalid type"),
            "{err:?}"
        );
    }

    #[test]
    fn a_type_error_does_not_hide_a_wrong_value_elsewhere() {
        let err = check(
            "[gateway]\nfacility_id = \"bad id\"\n[supervisor]\nrestart_max_ms = \"1m\"\n\
             [relay]\nhost = \"h\"\ninflight_window = 0\n",
        )
        .expect_err("refused");
        assert_eq!(err.len(), 3, "{err:?}");
        assert!(
            err[0].starts_with("t.toml:2: gateway.facility_id: must be"),
            "{err:?}"
        );
        assert!(
            err[1].starts_with("t.toml:4: supervisor.restart_max_ms: invalid type"),
            "{err:?}"
        );
        assert!(
            err[2].starts_with("t.toml:7: relay.inflight_window: must be at least 1"),
            "{err:?}"
        );
    }

    #[test]
    fn every_wrong_key_of_one_section_is_reported() {
        let err = check(
            "[gateway]\nfacility_id = \"c\"\n[relay]\nhots = \"h\"\nhost = 1\n\
             port = \"x\"\n[relay.tls]\ncafile = \"ca.pem\"\n",
        )
        .expect_err("refused");
        let keys: Vec<String> = err
            .iter()
            .map(|p| p.splitn(3, ": ").take(2).collect::<Vec<_>>().join(": "))
            .collect();
        assert_eq!(
            keys,
            [
                "t.toml:4: relay.hots",
                "t.toml:5: relay.host",
                "t.toml:6: relay.port",
                "t.toml:7: relay.tls.ca_file",
                "t.toml:8: relay.tls.cafile",
            ],
            "{err:?}"
        );
        assert!(
            !err.iter().any(|p| p.contains("missing field `host`")),
            "a key taken out for its wrong type is not reported missing too: {err:?}"
        );
    }

    #[test]
    fn a_section_with_an_unknown_key_still_has_its_values_checked() {
        let err = check(
            "[gateway]\nfacility_id = \"c\"\n[relay]\nhost = \"h\"\nhots = \"h\"\n\
             inflight_window = 0\n",
        )
        .expect_err("refused");
        assert_eq!(err.len(), 2, "{err:?}");
        assert!(
            err[0].starts_with("t.toml:5: relay.hots: unknown field"),
            "{err:?}"
        );
        assert_eq!(
            err[1],
            "t.toml:6: relay.inflight_window: must be at least 1"
        );
    }

    #[test]
    fn a_section_with_a_wrong_type_is_not_checked_against_defaults() {
        let err = check(
            "[gateway]\nfacility_id = \"c\"\n[supervisor]\nrestart_initial_ms = 120000\n\
             restart_max_ms = \"2m\"\n",
        )
        .expect_err("refused");
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(
            err[0].starts_with("t.toml:5: supervisor.restart_max_ms: invalid type"),
            "{err:?}"
        );
    }

    #[test]
    fn problems_inside_arrays_of_tables_name_the_element() {
        let err = check(
            "[gateway]\nfacility_id = \"c\"\n\
             [[devices.modbus]]\nname = \"a\"\nhost = \"127.0.0.1\"\n\
             [[devices.modbus.registers]]\nname = \"r\"\nfunction = \"input\"\naddress = 1\n\
             [[devices.modbus]]\nname = \"b\"\nhost = \"127.0.0.1\"\n\
             [[devices.modbus.registers]]\nname = \"r\"\nfunction = \"input\"\naddress = \"ten\"\n",
        )
        .expect_err("refused");
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(
            err[0].starts_with("t.toml:16: devices.modbus[1].registers[0].address: invalid type"),
            "{err:?}"
        );
    }

    #[test]
    fn a_missing_required_key_is_named_at_its_table() {
        let err =
            check("[gateway]\nfacility_id = \"c\"\n\n[relay]\nport = 1883\n").expect_err("refused");
        assert_eq!(err, ["t.toml:4: relay.host: missing field `host`"]);
        let err = check("[web]\n").expect_err("refused");
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(err[0].starts_with("t.toml:0: gateway: missing"), "{err:?}");
    }

    #[test]
    fn an_unknown_section_is_named_with_its_line() {
        let err = check("[gateway]\nfacility_id = \"c\"\n\n[releay]\nhost = \"h\"\n")
            .expect_err("refused");
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(
            err[0].starts_with("t.toml:4: releay: unknown key, expected one of `gateway`"),
            "{err:?}"
        );
    }

    #[test]
    fn syntax_error_has_a_line() {
        let err = check("[gateway]\nfacility_id = \n").expect_err("refused");
        assert!(err[0].starts_with("t.toml:2: "), "{err:?}");
    }
}
