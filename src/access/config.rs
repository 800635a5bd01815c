//! `[access]`: staff logins. Off by default, and then the page and API stay as they were:
//! loopback only, no logins. A leaf: imports nothing but the shared settings and its own
//! `[access.oidc]` table.

use super::oidc::config::OidcConfig;
use crate::settings::{self, Problem};
use serde::Deserialize;
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
}

fn default_token_lifetime_secs() -> u64 {
    300
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
