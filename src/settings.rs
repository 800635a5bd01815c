//! What every component's `config.rs` shares: the [`Problem`] its validation returns, and the
//! checks several sections make alike (names, retry delays, readable files, TLS files), and the
//! tables several take alike (TLS to a broker, authentication to an HTTP API).
//!
//! This module is a leaf: it imports nothing from the crate, so that any component's config can
//! use it without reaching into another component or into `config.rs`, which composes them.

use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One thing wrong with a section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path from the top of the file, with `[index]` for arrays:
    /// `devices.modbus[2].registers[0].address`.
    pub key: String,
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Runs a validation written against a `bad(key, message)` callback and returns what it
/// reported, so that nested checks can share one sink.
pub fn collect(validate: impl FnOnce(&mut dyn FnMut(&str, String))) -> Vec<Problem> {
    let mut problems = Vec::new();
    validate(&mut |key: &str, message: String| problems.push(Problem::new(key, message)));
    problems
}

/// A path from the file resolved against `base`, the folder of the file it came from.
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// Reports `key` unless `path` is a file this process can open.
pub fn check_readable(path: &Path, key: &str, bad: &mut dyn FnMut(&str, String)) {
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

/// A doubling delay needs a first step above zero that does not exceed its cap; the key
/// reported is `{prefix}{initial}`.
pub fn check_delays(
    prefix: &str,
    (initial, initial_ms): (&str, u64),
    (max, max_ms): (&str, u64),
    bad: &mut dyn FnMut(&str, String),
) {
    if initial_ms == 0 || initial_ms > max_ms {
        bad(
            &format!("{prefix}{initial}"),
            format!("must be above 0 and at most {max}"),
        );
    }
}

/// Whether `name` is 1 to 64 letters, digits, `-` or `_`: such names end up in MQTT topics,
/// supervisor names, events and logs.
pub fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A name must be an identifier and unique among `names`, which collects it.
pub fn check_name<'a>(
    name: &'a str,
    key: &str,
    names: &mut BTreeSet<&'a str>,
    what: &str,
    bad: &mut dyn FnMut(&str, String),
) {
    if !is_identifier(name) {
        bad(key, "must be 1 to 64 letters, digits, '-' or '_'".into());
    } else if !names.insert(name) {
        bad(key, format!("another {what} is already named {name:?}"));
    }
}

/// TLS to an MQTT broker (the cloud relay's, or the local occupancy broker).
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

impl TlsConfig {
    /// Reports files that cannot be read and a certificate without its key (or the reverse);
    /// `prefix` is the key of this table, e.g. `relay.tls`.
    pub fn validate(&self, prefix: &str, base: &Path, bad: &mut dyn FnMut(&str, String)) {
        let key = |field: &str| format!("{prefix}.{field}");
        check_readable(&resolve(base, &self.ca_file), &key("ca_file"), bad);
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(client_key)) => {
                check_readable(&resolve(base, cert), &key("client_cert_file"), bad);
                check_readable(&resolve(base, client_key), &key("client_key_file"), bad);
            }
            (Some(_), None) => bad(
                &key("client_cert_file"),
                format!("needs {} too", key("client_key_file")),
            ),
            (None, Some(_)) => bad(
                &key("client_key_file"),
                format!("needs {} too", key("client_cert_file")),
            ),
            (None, None) => {}
        }
    }
}

/// How the gateway authenticates to an HTTP API (a FHIR server: the EHR's, a PMS's), the
/// `auth` table of `[connectors.fhir]` and `[connectors.eligibility]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum HttpAuth {
    /// No credentials (a server reached only over a trusted link).
    #[default]
    None,
    /// A static bearer token, read from a file so it stays out of the config.
    Bearer { token_file: PathBuf },
    /// OAuth 2.0 client credentials; the token is refreshed before it expires.
    ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret_file: PathBuf,
        /// Space-separated scopes, e.g. `system/Patient.rw system/Appointment.r`.
        #[serde(default)]
        scope: Option<String>,
        /// A token is renewed this long before its `expires_in` runs out.
        #[serde(default = "default_refresh_margin_s")]
        refresh_margin_s: u64,
        /// When the client secret stops working (RFC 3339, or a date taken as its midnight
        /// UTC), as the server's administrators set it: staff are told ahead, as for
        /// certificates.
        #[serde(default)]
        client_secret_expires: Option<String>,
    },
}

fn default_refresh_margin_s() -> u64 {
    60
}

impl HttpAuth {
    /// When the client secret expires, in ms since the epoch, if the config says; an
    /// unreadable date is the config's problem, reported by `validate`.
    pub fn secret_expiry_ms(&self) -> Option<Result<i64, String>> {
        match self {
            HttpAuth::ClientCredentials {
                client_secret_expires: Some(text),
                ..
            } => Some(instant_ms(text)),
            _ => None,
        }
    }

    /// The table with its file paths resolved by `resolve`.
    pub fn resolved(&self, resolve: impl Fn(&Path) -> PathBuf) -> HttpAuth {
        let mut a = self.clone();
        match &mut a {
            HttpAuth::None => {}
            HttpAuth::Bearer { token_file } => *token_file = resolve(token_file),
            HttpAuth::ClientCredentials {
                client_secret_file, ..
            } => *client_secret_file = resolve(client_secret_file),
        }
        a
    }

    /// Reports what is wrong with the table at `prefix` (e.g. `connectors.fhir.auth`).
    pub fn validate(&self, prefix: &str, bad: &mut dyn FnMut(&str, String)) {
        if let HttpAuth::ClientCredentials {
            token_url,
            client_id,
            ..
        } = self
        {
            let http = (token_url.starts_with("http://") || token_url.starts_with("https://"))
                && token_url.len() > "https://".len();
            if !http {
                bad(
                    &format!("{prefix}.token_url"),
                    "must be an http:// or https:// URL".into(),
                );
            }
            if client_id.is_empty() {
                bad(&format!("{prefix}.client_id"), "must not be empty".into());
            }
        }
        if let Some(Err(e)) = self.secret_expiry_ms() {
            bad(&format!("{prefix}.client_secret_expires"), e);
        }
    }
}

/// An RFC 3339 instant, or a date (`2027-03-01`) taken as its midnight UTC, in ms.
fn instant_ms(text: &str) -> Result<i64, String> {
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    text.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp().as_millisecond())
        .ok_or_else(|| {
            "must be an RFC 3339 time (2027-03-01T00:00:00Z) or a date (2027-03-01)".into()
        })
}

/// The table at the dotted `path` of TOML `text`, deserialized, for the components' tests of
/// their own section; serde's message when it does not deserialize.
#[cfg(test)]
pub fn section<T: serde::de::DeserializeOwned>(text: &str, path: &str) -> Result<T, String> {
    let mut value: toml::Value = toml::from_str(text).map_err(|e| e.message().to_string())?;
    for part in path.split('.') {
        value = value
            .as_table_mut()
            .and_then(|t| t.remove(part))
            .ok_or_else(|| format!("{path}: no {part} in the text"))?;
    }
    value
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_string())
}

/// Each problem as `key: message`, for tests.
#[cfg(test)]
pub fn keyed(problems: Vec<Problem>) -> Vec<String> {
    problems
        .into_iter()
        .map(|p| format!("{}: {}", p.key, p.message))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(validate: impl FnOnce(&mut dyn FnMut(&str, String))) -> Vec<String> {
        keyed(collect(validate))
    }

    #[test]
    fn delays_need_a_first_step_within_the_cap() {
        let delays = |a, b| check(|bad| check_delays("r.", ("a_ms", a), ("b_ms", b), bad));
        assert_eq!(delays(0, 10), ["r.a_ms: must be above 0 and at most b_ms"]);
        assert_eq!(delays(11, 10).len(), 1);
        assert!(delays(10, 10).is_empty());
    }

    #[test]
    fn names_are_identifiers_and_unique() {
        let mut names = BTreeSet::new();
        let got = check(|bad| {
            check_name("a-1", "x[0].name", &mut names, "device", bad);
            check_name("a-1", "x[1].name", &mut names, "device", bad);
            check_name("a b", "x[2].name", &mut names, "device", bad);
        });
        assert_eq!(
            got,
            [
                "x[1].name: another device is already named \"a-1\"",
                "x[2].name: must be 1 to 64 letters, digits, '-' or '_'",
            ]
        );
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let tls = TlsConfig {
            ca_file: PathBuf::from("/nonexistent/ca.pem"),
            client_cert_file: Some(PathBuf::from("c.pem")),
            client_key_file: None,
        };
        let got = check(|bad| tls.validate("relay.tls", Path::new("/"), bad));
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].starts_with("relay.tls.ca_file: cannot read /nonexistent/ca.pem"));
        assert_eq!(
            got[1],
            "relay.tls.client_cert_file: needs relay.tls.client_key_file too"
        );
    }
}
