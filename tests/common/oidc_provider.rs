//! The OpenID test provider (npm `oidc-provider`, `tests/peers/oidc`, installed by
//! scripts/test-deps.sh) on a loopback port, with the accounts and the client a test gives it;
//! and a browser's part in its sign-in: following redirects with cookies, choosing an account
//! on the provider's sign-in form.

use super::{free_port, start_until_ready};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};

/// The provider, killed on drop.
pub struct OidcProvider {
    pub port: u16,
    child: Option<Child>,
}

impl OidcProvider {
    /// Starts the provider with one client (its registration: `client_id`, `redirect_uris`,
    /// `client_secret` or `token_endpoint_auth_method` and `jwks`, ...) and `accounts`:
    /// `{ id: { "claims": {...}, "amr": [...] } }`.
    pub fn start(dir: &Path, client: Value, accounts: Value) -> OidcProvider {
        let peer = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/oidc");
        assert!(
            peer.join("node_modules/oidc-provider").is_dir(),
            "the OpenID provider's packages are missing: run scripts/test-deps.sh"
        );
        let port = free_port();
        let settings = dir.join("oidc-provider.json");
        let body = json!({ "port": port, "client": client, "accounts": accounts });
        std::fs::write(&settings, body.to_string()).expect("provider settings");
        let mut cmd = Command::new("node");
        cmd.arg(peer.join("provider.mjs")).arg(&settings);
        let (child, _) = start_until_ready(&mut cmd, "the OpenID provider", "listening");
        OidcProvider {
            port,
            child: Some(child),
        }
    }

    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Spoils the next ID token: `nonce` (another nonce, validly signed) or `signature`
    /// (signed by a key the provider does not publish).
    pub fn tamper(&self, what: &str) {
        let status = ureq::post(&format!("{}/_peer/tamper", self.issuer()))
            .send(what)
            .expect("tamper")
            .status();
        assert_eq!(status, 200);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An answer as a browser sees it.
pub struct Seen {
    pub status: u16,
    pub url: String,
    pub location: Option<String>,
    pub body: String,
}

/// A browser without JavaScript: a cookie jar for 127.0.0.1 (cookies do not tell ports apart)
/// and redirects followed one by one.
pub struct Browser {
    agent: ureq::Agent,
    pub cookies: BTreeMap<String, String>,
}

impl Default for Browser {
    fn default() -> Self {
        Browser {
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .build()
                .into(),
            cookies: BTreeMap::new(),
        }
    }
}

impl Browser {
    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn seen(&mut self, url: &str, mut r: ureq::http::Response<ureq::Body>) -> Seen {
        for set in r.headers().get_all("set-cookie") {
            let text = set.to_str().unwrap_or_default();
            let pair = text.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                let gone = value.is_empty() || text.to_ascii_lowercase().contains("max-age=0");
                if gone {
                    self.cookies.remove(name.trim());
                } else {
                    self.cookies.insert(name.trim().into(), value.into());
                }
            }
        }
        let location = r
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(|l| {
                url::Url::parse(url)
                    .and_then(|base| base.join(l))
                    .expect("a location")
                    .to_string()
            });
        Seen {
            status: r.status().as_u16(),
            url: url.into(),
            location,
            body: r.body_mut().read_to_string().unwrap_or_default(),
        }
    }

    pub fn get(&mut self, url: &str) -> Seen {
        let r = self
            .agent
            .get(url)
            .header("cookie", &self.cookie_header())
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        self.seen(url, r)
    }

    pub fn post_form(&mut self, url: &str, fields: &[(&str, &str)]) -> Seen {
        let r = self
            .agent
            .post(url)
            .header("cookie", &self.cookie_header())
            .send_form(fields.iter().copied())
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        self.seen(url, r)
    }

    /// Signs in at the gateway `base` through the provider as `account`: from the gateway's
    /// SSO link through the provider's form, up to the redirect back to the gateway, whose URL
    /// `back` may change before it is opened. The gateway's answer to it.
    pub fn sign_in(
        &mut self,
        base: &str,
        account: &str,
        back: impl FnOnce(String) -> String,
    ) -> Seen {
        let mut seen = self.get(&format!("{base}/login/oidc"));
        for _ in 0..10 {
            if let Some(next) = seen.location.clone() {
                if next.starts_with(base) {
                    return self.get(&back(next));
                }
                seen = self.get(&next);
            } else if seen.status == 200 && seen.url.contains("/interaction/") {
                let url = seen.url.clone();
                seen = self.post_form(&url, &[("account", account)]);
            } else {
                return seen;
            }
        }
        panic!("the sign-in did not come back to the gateway: {}", seen.url);
    }
}
