//! `[access.oidc]`: single sign-on with the clinic's OpenID provider. A leaf: imports only the
//! shared settings and the role names.

use crate::access::policy::Role;
use crate::settings::{self, Problem};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The path of the route the provider sends the browser back to; the redirect URL must end
/// in it.
pub const CALLBACK_PATH: &str = "/login/oidc/callback";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's name on the login page's button ("Sign in with <name>").
    pub name: String,
    /// The provider's issuer URL; its `/.well-known/openid-configuration` is read at each
    /// sign-in, and ID tokens must name exactly this issuer.
    pub issuer: String,
    /// The gateway's client id at the provider; ID tokens must be meant for it (`aud`).
    pub client_id: String,
    /// File holding the client secret (`client_secret_basic`); absent: a public client whose
    /// code exchange is protected by PKCE alone. Read at each sign-in, so that a replaced
    /// file is used without a restart.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// PEM private key for `private_key_jwt` (RFC 7523) instead of a secret: an EC P-256 or
    /// P-384 key in PKCS#8, or an RSA key in PKCS#1, its public half registered at the
    /// provider. Read at each sign-in, like the secret.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// The key's id at the provider (`kid` of the assertion's header), if it wants one.
    #[serde(default)]
    pub client_key_id: Option<String>,
    /// Where the provider sends the browser back: this gateway's own URL as staff reach it,
    /// ending in `/login/oidc/callback`, registered at the provider.
    pub redirect_url: String,
    /// Scopes asked for; `openid` is required, and the one that releases the role claim
    /// (often `groups` or `roles`) must be among them.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The ID token claim carrying the user's groups or roles: a string or a list of strings.
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// Claim value → role. A user none of whose values is listed is refused; a user with
    /// several gets the mapped role that grants everything the others grant (an admin value
    /// wins), and is refused when none does.
    pub roles: BTreeMap<String, Role>,
    /// Authentication methods (`amr` values, RFC 8176: e.g. `mfa`, `otp`, `hwk`) of which the
    /// ID token must name at least one. Empty: the provider's own login policy is trusted for
    /// the second factor.
    #[serde(default)]
    pub require_amr: Vec<String>,
    /// PEM file with the CA the provider's certificate chains to; default: the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Bound on each request to the provider; past it the provider counts as unreachable.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into()]
}

fn default_role_claim() -> String {
    "groups".into()
}

fn default_request_timeout_ms() -> u64 {
    5000
}

/// Whether `url` may be used without TLS: only a provider or gateway on this very box.
fn loopback(url: &url::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// An `https` URL, or an `http` one on loopback; the message when it is not.
pub fn web_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback(&url) => Ok(url),
        "http" => Err("must be https:// unless on loopback".into()),
        _ => Err("must be an https:// URL".into()),
    }
}

impl OidcConfig {
    /// Every problem of `[access.oidc]`; `allowed_hosts` are `[access]`'s, which the redirect
    /// URL's host must be among (else the guard would refuse the provider's redirect), and
    /// `base` the folder files are resolved against.
    pub fn validate(&self, base: &Path, allowed_hosts: &[String]) -> Vec<Problem> {
        settings::collect(|bad| {
            let key = |field: &str| format!("access.oidc.{field}");
            if self.name.trim().is_empty() || self.name.chars().count() > 64 {
                bad(&key("name"), "must be 1 to 64 characters".into());
            }
            match web_url(&self.issuer) {
                Ok(url) if url.query().is_some() || url.fragment().is_some() => bad(
                    &key("issuer"),
                    "must have no query or fragment (OpenID Connect Discovery §2)".into(),
                ),
                Ok(_) => {}
                Err(m) => bad(&key("issuer"), m),
            }
            if self.client_id.trim().is_empty() {
                bad(&key("client_id"), "must not be empty".into());
            }
            for (field, file) in [
                ("client_secret_file", &self.client_secret_file),
                ("client_key_file", &self.client_key_file),
            ] {
                if let Some(file) = file {
                    settings::check_readable(&settings::resolve(base, file), &key(field), bad);
                }
            }
            if self.client_secret_file.is_some() && self.client_key_file.is_some() {
                bad(
                    &key("client_key_file"),
                    "either client_secret_file or client_key_file, not both".into(),
                );
            }
            if self.client_key_id.is_some() && self.client_key_file.is_none() {
                bad(&key("client_key_id"), "needs client_key_file".into());
            }
            match web_url(&self.redirect_url) {
                Ok(url) if url.path() != CALLBACK_PATH => bad(
                    &key("redirect_url"),
                    format!("must end in {CALLBACK_PATH}, the gateway's callback route"),
                ),
                Ok(url) => {
                    let host = url.host_str().unwrap_or_default();
                    if !allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
                        bad(
                            &key("redirect_url"),
                            format!("its host {host} must be one of access.allowed_hosts"),
                        );
                    }
                }
                Err(m) => bad(&key("redirect_url"), m),
            }
            if !self.scopes.iter().any(|s| s == "openid") {
                bad(&key("scopes"), "must include \"openid\"".into());
            }
            for (i, s) in self.scopes.iter().enumerate() {
                if s.is_empty()
                    || s.chars()
                        .any(|c| c.is_whitespace() || c == '"' || c == '\\')
                {
                    bad(
                        &format!("access.oidc.scopes[{i}]"),
                        "must be one scope token (RFC 6749 §3.3)".into(),
                    );
                }
            }
            if self.role_claim.trim().is_empty() {
                bad(&key("role_claim"), "must not be empty".into());
            }
            if self.roles.is_empty() {
                bad(
                    &key("roles"),
                    "must map at least one claim value to a role, or no one can sign in".into(),
                );
            }
            if self.require_amr.iter().any(|a| a.trim().is_empty()) {
                bad(&key("require_amr"), "must not hold an empty value".into());
            }
            if let Some(file) = &self.ca_file {
                settings::check_readable(&settings::resolve(base, file), &key("ca_file"), bad);
            }
            if self.request_timeout_ms == 0 {
                bad(&key("request_timeout_ms"), "must be above 0".into());
            }
        })
    }

    /// The same settings with their files resolved against `base`.
    pub fn resolved(&self, base: &Path) -> OidcConfig {
        let mut c = self.clone();
        c.client_secret_file = c.client_secret_file.map(|p| settings::resolve(base, &p));
        c.client_key_file = c.client_key_file.map(|p| settings::resolve(base, &p));
        c.ca_file = c.ca_file.map(|p| settings::resolve(base, &p));
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[access.oidc]
name = "Clinic Entra"
issuer = "https://login.example.org/clinic"
client_id = "gateway"
redirect_url = "https://gw.clinic.example/login/oidc/callback"
scopes = ["openid", "groups"]
[access.oidc.roles]
"gw-desk" = "front_desk"
"gw-admins" = "admin"
"#;

    fn check(text: &str) -> Vec<String> {
        let c: OidcConfig = settings::section(text, "access.oidc").expect("[access.oidc]");
        let hosts = ["gw.clinic.example".to_string(), "127.0.0.1".to_string()];
        settings::keyed(c.validate(Path::new("/nonexistent"), &hosts))
    }

    #[test]
    fn a_complete_table_passes_with_defaults_for_the_rest() {
        assert!(check(GOOD).is_empty(), "{:?}", check(GOOD));
        let c: OidcConfig = settings::section(GOOD, "access.oidc").expect("[access.oidc]");
        assert_eq!(c.role_claim, "groups");
        assert_eq!(c.roles.get("gw-admins"), Some(&Role::Admin));
        assert!(c.require_amr.is_empty());
    }

    #[test]
    fn urls_must_be_https_unless_on_loopback_and_come_back_to_an_allowed_host() {
        let text = GOOD
            .replace("https://login.example.org/clinic", "http://idp.example/x")
            .replace("gw.clinic.example/login", "other.example/login");
        assert_eq!(
            check(&text),
            [
                "access.oidc.issuer: must be https:// unless on loopback",
                "access.oidc.redirect_url: its host other.example must be one of access.allowed_hosts",
            ]
        );
        let local = GOOD
            .replace("https://login.example.org/clinic", "http://127.0.0.1:9000")
            .replace(
                "https://gw.clinic.example/login/oidc/callback",
                "http://127.0.0.1:8088/login/oidc/callback",
            );
        assert!(check(&local).is_empty());
        let elsewhere = GOOD.replace("/login/oidc/callback", "/callback");
        assert_eq!(
            check(&elsewhere),
            [
                "access.oidc.redirect_url: must end in /login/oidc/callback, the gateway's callback route"
            ]
        );
    }

    #[test]
    fn scopes_need_openid_roles_a_mapping_and_files_must_be_readable() {
        let text = GOOD
            .replace("[\"openid\", \"groups\"]", "[\"groups\", \"a b\"]")
            .replace(
                "client_id = \"gateway\"",
                "client_id = \"gateway\"\nclient_secret_file = \"secret\"",
            )
            .replace(
                "\"gw-desk\" = \"front_desk\"\n\"gw-admins\" = \"admin\"\n",
                "",
            );
        let problems = check(&text);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems[0]
                .starts_with("access.oidc.client_secret_file: cannot read /nonexistent/secret")
        );
        assert_eq!(problems[1], "access.oidc.scopes: must include \"openid\"");
        assert_eq!(
            problems[2],
            "access.oidc.scopes[1]: must be one scope token (RFC 6749 §3.3)"
        );
        assert!(problems[3].starts_with("access.oidc.roles: must map at least one"));
    }

    #[test]
    fn a_client_proves_itself_with_a_secret_or_a_key_not_both() {
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let text = GOOD.replace(
            "client_id = \"gateway\"",
            &format!(
                "client_id = \"gateway\"\nclient_secret_file = \"{file}\"\nclient_key_file = \"{file}\""
            ),
        );
        assert_eq!(
            check(&text),
            ["access.oidc.client_key_file: either client_secret_file or client_key_file, not both"]
        );
        let text = GOOD.replace(
            "client_id = \"gateway\"",
            "client_id = \"gateway\"\nclient_key_id = \"k1\"",
        );
        assert_eq!(
            check(&text),
            ["access.oidc.client_key_id: needs client_key_file"]
        );
    }

    #[test]
    fn an_unknown_role_is_refused_by_name() {
        let text = GOOD.replace("= \"admin\"", "= \"root\"");
        let err = settings::section::<OidcConfig>(&text, "access.oidc").expect_err("refused");
        assert!(err.contains("unknown variant `root`"), "{err}");
    }
}
