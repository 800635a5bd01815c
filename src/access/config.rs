//! `[access]`: staff logins. Off by default, and then the page and API stay as they were:
//! loopback only, no logins. A leaf: imports nothing but the shared settings, the account
//! name rule and its own `[access.oidc]` table.

use super::oidc::config::OidcConfig;
use crate::settings::{self, Problem};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// Require a staff login (password and TOTP code) for the page and API.
    #[serde(default)]
    pub enabled: bool,
    /// A session unused for this long ends.
    #[serde(default = "default_idle_minutes")]
    pub session_idle_minutes: u64,
    /// A session ends this long after its login, however busy.
    #[serde(default = "default_absolute_hours")]
    pub session_absolute_hours: u64,
    /// Failed logins in a row after which an account is locked.
    #[serde(default = "default_lockout_after")]
    pub lockout_after: u32,
    /// The first lock's length; each further failure doubles it.
    #[serde(default = "default_lockout_initial_secs")]
    pub lockout_initial_secs: u64,
    /// The longest a lock lasts.
    #[serde(default = "default_lockout_max_secs")]
    pub lockout_max_secs: u64,
    /// Host names (without port) the page may be reached by; any other `Host` header is
    /// refused, so that a rebinding DNS name cannot reach the API from a staff browser.
    #[serde(default = "default_allowed_hosts")]
    pub allowed_hosts: Vec<String>,
    /// Single sign-on with the clinic's OpenID provider, beside the local accounts.
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
    /// How long a bearer token issued at `/oauth/token` to a SMART backend client lasts.
    #[serde(default = "default_token_lifetime_secs")]
    pub token_lifetime_secs: u64,
    /// How many requests each client may make.
    #[serde(default)]
    pub rate_limits: RateLimits,
    /// Staff and the cloud are told this many days ahead that a certificate or API key
    /// expires (and again when it has).
    #[serde(default = "default_credential_warning_days")]
    pub credential_warning_days: u64,
}

fn default_token_lifetime_secs() -> u64 {
    300
}

fn default_credential_warning_days() -> u64 {
    14
}

/// `[access.rate_limits]`: per-client budgets, so that one misbehaving system cannot starve
/// the others. A client is an API key, a staff member, or for refused requests the peer's
/// address.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// Limit requests at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Requests per second a client may keep up.
    #[serde(default = "default_per_second")]
    pub per_second: f64,
    /// Requests a client may make at once after a quiet spell.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Requests per second kept for each client's check-ins and calls, on top of its general
    /// budget, so that flooding other routes cannot exhaust them.
    #[serde(default = "default_critical_per_second")]
    pub critical_per_second: f64,
    /// The reserved budget's burst.
    #[serde(default = "default_critical_burst")]
    pub critical_burst: u32,
    /// Refused requests (no, bad or insufficient credentials) per second per peer address;
    /// beyond them a refusal is answered 429 and not audited.
    #[serde(default = "default_refused_per_second")]
    pub refused_per_second: f64,
    /// The refused requests' burst.
    #[serde(default = "default_refused_burst")]
    pub refused_burst: u32,
    /// A client over its limit is audited at most once in this many seconds.
    #[serde(default = "default_audit_window_secs")]
    pub audit_window_secs: u64,
    /// Budgets of named clients in place of `per_second` and `burst`: `"key:<name>"` for an
    /// API key, `"staff:<name>"` for a staff member.
    #[serde(default)]
    pub clients: BTreeMap<String, ClientRate>,
}

/// A named client's budget.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientRate {
    /// Requests per second the client may keep up.
    pub per_second: f64,
    /// Requests the client may make at once after a quiet spell.
    pub burst: u32,
}

fn default_true() -> bool {
    true
}

fn default_per_second() -> f64 {
    20.0
}

fn default_burst() -> u32 {
    100
}

fn default_critical_per_second() -> f64 {
    5.0
}

fn default_critical_burst() -> u32 {
    20
}

fn default_refused_per_second() -> f64 {
    1.0
}

fn default_refused_burst() -> u32 {
    60
}

fn default_audit_window_secs() -> u64 {
    60
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            enabled: true,
            per_second: default_per_second(),
            burst: default_burst(),
            critical_per_second: default_critical_per_second(),
            critical_burst: default_critical_burst(),
            refused_per_second: default_refused_per_second(),
            refused_burst: default_refused_burst(),
            audit_window_secs: default_audit_window_secs(),
            clients: BTreeMap::new(),
        }
    }
}

impl RateLimits {
    /// Every problem of `[access.rate_limits]`.
    fn validate(&self, bad: &mut dyn FnMut(&str, String)) {
        let prefix = "access.rate_limits.";
        let rate = |bad: &mut dyn FnMut(&str, String), key: &str, per_second: f64, burst: u32| {
            if !(per_second.is_finite() && per_second > 0.0) {
                bad(
                    &format!("{prefix}{key}per_second"),
                    "must be above 0".into(),
                );
            }
            if burst == 0 {
                bad(&format!("{prefix}{key}burst"), "must be at least 1".into());
            }
        };
        rate(bad, "", self.per_second, self.burst);
        rate(
            bad,
            "critical_",
            self.critical_per_second,
            self.critical_burst,
        );
        rate(bad, "refused_", self.refused_per_second, self.refused_burst);
        for (name, c) in &self.clients {
            let (kind, who) = name.split_once(':').unwrap_or(("", ""));
            if !matches!(kind, "key" | "staff" | "client") || !super::valid_name(who) {
                bad(
                    &format!("{prefix}clients.{name}"),
                    "must be \"key:<key name>\", \"staff:<user name>\" or \"client:<SMART client>\"".into(),
                );
            }
            rate(bad, &format!("clients.{name}."), c.per_second, c.burst);
        }
        if self.audit_window_secs == 0 {
            bad(
                &format!("{prefix}audit_window_secs"),
                "must be above 0".into(),
            );
        }
    }
}

fn default_idle_minutes() -> u64 {
    15
}

fn default_absolute_hours() -> u64 {
    12
}

fn default_lockout_after() -> u32 {
    5
}

fn default_lockout_initial_secs() -> u64 {
    30
}

fn default_lockout_max_secs() -> u64 {
    3600
}

fn default_allowed_hosts() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()]
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            enabled: false,
            session_idle_minutes: default_idle_minutes(),
            session_absolute_hours: default_absolute_hours(),
            lockout_after: default_lockout_after(),
            lockout_initial_secs: default_lockout_initial_secs(),
            lockout_max_secs: default_lockout_max_secs(),
            allowed_hosts: default_allowed_hosts(),
            oidc: None,
            token_lifetime_secs: default_token_lifetime_secs(),
            rate_limits: RateLimits::default(),
            credential_warning_days: default_credential_warning_days(),
        }
    }
}

impl AccessConfig {
    /// Every problem of `[access]`; `base` is the folder files are resolved against.
    pub fn validate(&self, base: &Path) -> Vec<Problem> {
        let mut problems = settings::collect(|bad| {
            if self.session_idle_minutes == 0 {
                bad("access.session_idle_minutes", "must be above 0".into());
            }
            if self.session_absolute_hours == 0
                || self.session_absolute_hours * 60 < self.session_idle_minutes
            {
                bad(
                    "access.session_absolute_hours",
                    "must be above 0 and not shorter than session_idle_minutes".into(),
                );
            }
            if self.lockout_after == 0 {
                bad("access.lockout_after", "must be above 0".into());
            }
            settings::check_delays(
                "access.",
                ("lockout_initial_secs", self.lockout_initial_secs),
                ("lockout_max_secs", self.lockout_max_secs),
                bad,
            );
            if !(1..=3600).contains(&self.token_lifetime_secs) {
                bad(
                    "access.token_lifetime_secs",
                    "must be 1 to 3600: a token is meant to be short-lived".into(),
                );
            }
            if self.enabled && self.allowed_hosts.is_empty() {
                bad(
                    "access.allowed_hosts",
                    "must name at least one host when access is enabled".into(),
                );
            }
            for (i, h) in self.allowed_hosts.iter().enumerate() {
                if h.is_empty() || h.len() > 253 || h.chars().any(|c| c.is_whitespace() || c == '/')
                {
                    bad(
                        &format!("access.allowed_hosts[{i}]"),
                        "must be a host name or address without scheme, path or spaces".into(),
                    );
                }
            }
            self.rate_limits.validate(bad);
            if self.credential_warning_days == 0 || self.credential_warning_days > 365 {
                bad(
                    "access.credential_warning_days",
                    "must be from 1 to 365".into(),
                );
            }
            if self.oidc.is_some() && !self.enabled {
                bad(
                    "access.oidc",
                    "single sign-on needs [access] enabled = true".into(),
                );
            }
        });
        if let Some(oidc) = &self.oidc {
            problems.extend(oidc.validate(base, &self.allowed_hosts));
        }
        problems
    }

    /// The same settings with their files resolved against `base`.
    pub fn resolved(&self, base: &Path) -> AccessConfig {
        AccessConfig {
            oidc: self.oidc.as_ref().map(|o| o.resolved(base)),
            ..self.clone()
        }
    }
}
