//! `[connectors.eligibility]`: the payer or clearinghouse answering X12 270s over the CAQH CORE
//! real-time SOAP envelope (or a PMS or payer answering FHIR R4 CoverageEligibilityRequests),
//! the clinic's identity in them, and the payers it may ask.

use crate::settings;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The eligibility connector's configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EligibilityConfig {
    /// The CORE real-time endpoint, or the FHIR base URL with `form = "fhir"` (`https://…`;
    /// `http://` only on loopback).
    pub url: String,
    /// What the endpoint takes: the CORE rule's SOAP 1.2 envelope or HTTP MIME multipart form
    /// around an X12 270, or FHIR R4.
    #[serde(default)]
    pub form: Form,
    /// The WS-Security UsernameToken's user name (CORE forms only).
    #[serde(default)]
    pub username: String,
    /// A file holding the UsernameToken's password (read at each request, so it can be
    /// replaced without a restart; CORE forms only).
    #[serde(default)]
    pub password_file: PathBuf,
    /// How the gateway authenticates to the FHIR server (`form = "fhir"` only), as for
    /// `[connectors.fhir.auth]`.
    #[serde(default)]
    pub auth: Option<settings::HttpAuth>,
    /// A PEM bundle trusted for the endpoint instead of the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// ISA06 / GS02 / CORE SenderID: the clinic's id with the clearinghouse (CORE forms only).
    #[serde(default)]
    pub sender_id: String,
    /// ISA08 / GS03 / CORE ReceiverID (CORE forms only).
    #[serde(default)]
    pub receiver_id: String,
    /// The clinic as the information receiver (2100B NM103).
    pub provider_name: String,
    /// The clinic's NPI (2100B NM109): ten digits with a valid check digit.
    pub provider_npi: String,
    /// TRN03 of every inquiry: `1` and the clinic's EIN, or `9` and nine characters of its own
    /// (CORE forms only).
    #[serde(default)]
    pub originator: String,
    /// EQ01 service type codes asked about (default: `30`, health benefit plan coverage).
    #[serde(default = "default_service_types")]
    pub service_types: Vec<String>,
    /// ISA15: send as production (`true`) or test data.
    #[serde(default)]
    pub production: bool,
    /// How long one inquiry may take before the front desk is told the payer did not answer.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The payers the clinic asks, by the name the front desk picks; the first is the default.
    pub payer: Vec<PayerConfig>,
}

/// What an inquiry travels as.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    /// An X12 270 in the CAQH CORE real-time SOAP 1.2 envelope.
    #[default]
    Soap,
    /// An X12 270 in the CORE rule's HTTP MIME multipart form.
    Mime,
    /// A FHIR R4 CoverageEligibilityRequest.
    Fhir,
}

/// One payer the clearinghouse reaches.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PayerConfig {
    /// The front desk's short name for it (`acme`).
    pub name: String,
    /// 2100A NM103, the payer's name in the 270.
    pub payer_name: String,
    /// 2100A NM109, the payer id (qualifier `PI`).
    pub payer_id: String,
}

fn default_service_types() -> Vec<String> {
    vec!["30".into()]
}

fn default_timeout_ms() -> u64 {
    10_000
}

impl EligibilityConfig {
    /// The configuration with its file paths resolved against the config file's folder.
    pub fn resolved(&self, resolve: impl Fn(&Path) -> PathBuf) -> EligibilityConfig {
        let mut c = self.clone();
        c.password_file = resolve(&c.password_file);
        c.ca_file = c.ca_file.as_deref().map(&resolve);
        c.auth = c.auth.as_ref().map(|a| a.resolved(&resolve));
        c
    }

    /// The payer named `name`, or the first when none is named.
    pub fn payer(&self, name: Option<&str>) -> Option<&PayerConfig> {
        match name {
            Some(n) => self.payer.iter().find(|p| p.name == n),
            None => self.payer.first(),
        }
    }

    pub fn validate(&self, base: &Path, bad: &mut dyn FnMut(&str, String)) {
        let key = |k: &str| format!("connectors.eligibility.{k}");
        match url::Url::parse(&self.url) {
            Ok(u) if u.scheme() == "https" => {}
            Ok(u) if u.scheme() == "http" && is_loopback(&u) => {}
            Ok(_) => bad(
                &key("url"),
                "must be https:// (http:// only to a loopback address)".into(),
            ),
            Err(e) => bad(&key("url"), format!("not a URL: {e}")),
        }
        if let Some(ca) = &self.ca_file {
            settings::check_readable(&settings::resolve(base, ca), &key("ca_file"), bad);
        }
        let core = self.form != Form::Fhir;
        match (&self.auth, core) {
            (Some(_), true) => bad(&key("auth"), "only with form = \"fhir\"".into()),
            (Some(a), false) => a.validate(&key("auth"), bad),
            (None, _) => {}
        }
        let mut fields = vec![("provider_name", &self.provider_name, 60)];
        if core {
            settings::check_readable(
                &settings::resolve(base, &self.password_file),
                &key("password_file"),
                bad,
            );
            fields.extend([
                ("sender_id", &self.sender_id, 15),
                ("receiver_id", &self.receiver_id, 15),
                ("username", &self.username, 128),
            ]);
            if self.originator.len() != 10
                || !matches!(self.originator.as_bytes()[0], b'1' | b'9')
                || !x12_text(&self.originator)
            {
                bad(
                    &key("originator"),
                    "ten characters: 1 and the EIN, or 9 and an id of nine characters".into(),
                );
            }
        } else {
            let given = [
                ("username", !self.username.is_empty()),
                ("password_file", !self.password_file.as_os_str().is_empty()),
                ("sender_id", !self.sender_id.is_empty()),
                ("receiver_id", !self.receiver_id.is_empty()),
                ("originator", !self.originator.is_empty()),
            ];
            for (k, _) in given.iter().filter(|(_, given)| *given) {
                bad(
                    &key(k),
                    "only with form = \"soap\" or \"mime\" (X12)".into(),
                );
            }
        }
        for (k, v, max) in fields {
            if v.trim().is_empty() || v.len() > max || !x12_text(v) {
                bad(
                    &key(k),
                    format!("1 to {max} characters, none of * ~ : ^ or a control character"),
                );
            }
        }
        if !npi_ok(&self.provider_npi) {
            bad(
                &key("provider_npi"),
                "not an NPI: ten digits with a valid check digit".into(),
            );
        }
        if self.service_types.is_empty()
            || self.service_types.iter().any(|t| {
                t.is_empty() || t.len() > 2 || !t.bytes().all(|b| b.is_ascii_alphanumeric())
            })
        {
            bad(
                &key("service_types"),
                "one or more EQ01 codes of one or two letters or digits (e.g. \"30\")".into(),
            );
        }
        if !(1_000..=120_000).contains(&self.timeout_ms) {
            bad(&key("timeout_ms"), "must be 1000 to 120000".into());
        }
        if self.payer.is_empty() {
            bad(&key("payer"), "name at least one payer".into());
        }
        for (i, p) in self.payer.iter().enumerate() {
            let k = |f: &str| key(&format!("payer[{i}].{f}"));
            if !settings::is_identifier(&p.name) {
                bad(&k("name"), "letters, digits, '-' and '_' only".into());
            }
            if self.payer[..i].iter().any(|q| q.name == p.name) {
                bad(&k("name"), format!("payer {:?} is named twice", p.name));
            }
            for (f, v) in [("payer_name", &p.payer_name), ("payer_id", &p.payer_id)] {
                if v.trim().is_empty() || v.len() > 80 || !x12_text(v) {
                    bad(&k(f), "1 to 80 characters, none of * ~ : ^".into());
                }
            }
        }
    }
}

fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// Text that can travel in an X12 element with the delimiters the gateway writes.
pub fn x12_text(s: &str) -> bool {
    !s.chars()
        .any(|c| matches!(c, '*' | '~' | ':' | '^') || c.is_control())
}

/// An NPI: ten digits whose last is the Luhn check digit over `80840` and the first nine.
pub fn npi_ok(npi: &str) -> bool {
    if npi.len() != 10 || !npi.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let digits = format!("80840{npi}");
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npis_are_checked_by_their_check_digit() {
        assert!(npi_ok("1234567893"));
        assert!(!npi_ok("1234567890"));
        assert!(!npi_ok("123456789"));
        assert!(!npi_ok("12345678A3"));
    }
    fn problems(text: &str) -> Vec<String> {
        let c: EligibilityConfig =
            settings::section(text, "connectors.eligibility").expect("a section");
        let base = std::env::temp_dir();
        settings::keyed(settings::collect(|bad| c.validate(&base, bad)))
    }

    const PAYER: &str = "[[connectors.eligibility.payer]]\nname = \"acme\"\npayer_name = \"ACME\"\npayer_id = \"1\"\n";

    #[test]
    fn the_fhir_form_needs_no_x12_identity_and_takes_an_auth_table() {
        let fhir = "[connectors.eligibility]\nform = \"fhir\"\nurl = \"https://pms.example/fhir/R4\"\n\
                    provider_name = \"CLINIC\"\nprovider_npi = \"1234567893\"\n";
        assert_eq!(problems(&format!("{fhir}{PAYER}")), Vec::<String>::new());
        assert_eq!(
            problems(&format!(
                "{fhir}sender_id = \"C\"\n[connectors.eligibility.auth]\nkind = \"client_credentials\"\n\
                 token_url = \"ftp://x\"\nclient_id = \"gw\"\nclient_secret_file = \"s\"\n{PAYER}"
            )),
            [
                "connectors.eligibility.auth.token_url: must be an http:// or https:// URL",
                "connectors.eligibility.sender_id: only with form = \"soap\" or \"mime\" (X12)",
            ]
        );
        let soap = "[connectors.eligibility]\nurl = \"https://ch.example/core\"\n\
                    provider_name = \"CLINIC\"\nprovider_npi = \"1234567893\"\n\
                    [connectors.eligibility.auth]\nkind = \"none\"\n";
        let found = problems(&format!("{soap}{PAYER}"));
        for key in [
            "auth",
            "password_file",
            "sender_id",
            "username",
            "originator",
        ] {
            assert!(
                found
                    .iter()
                    .any(|p| p.starts_with(&format!("connectors.eligibility.{key}:"))),
                "{key}: {found:?}"
            );
        }
    }
}
