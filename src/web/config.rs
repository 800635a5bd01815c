//! `[web]`: where the status page and API listen, and the certificate they serve HTTPS with.
//! A leaf: whether staff logins are on is handed to [`WebConfig::validate`] by whoever composes
//! the sections.

use crate::settings::{self, Problem};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Address of the status page and API. Loopback by default: any other address needs
    /// `[web.tls]` and `[access] enabled = true`.
    #[serde(default = "default_web_bind")]
    pub bind: SocketAddr,
    /// HTTPS for the page and API; absent means plain HTTP, which only loopback allows.
    #[serde(default)]
    pub tls: Option<WebTlsConfig>,
}

/// `[web.tls]`: either a certificate and key from PEM files, or `self_signed = true`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebTlsConfig {
    /// PEM certificate chain, the server's certificate first (with `key_file`).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file` (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Create a certificate for `[access] allowed_hosts` at first start and keep it in the data
    /// directory (`web-cert.pem`, `web-key.pem`); later starts reuse it, so staff check its
    /// fingerprint (`clinic-gateway status`) once.
    #[serde(default)]
    pub self_signed: bool,
    /// PEM certificates of the CA that issues systems' client certificates: the listener asks
    /// every client for a certificate and verifies one it is given against these, so a system
    /// whose certificate is bound to an API key (`key add --certificate`) needs no other
    /// credential. Clients without a certificate, browsers, are still served.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// PEM certificate revocation lists (CRLs) of the CA of `client_ca_file`: a revoked client
    /// certificate fails the handshake. Read again whenever the file changes; see
    /// docs/access.md.
    #[serde(default)]
    pub client_crl_file: Option<PathBuf>,
}

/// File name of the self-signed certificate in the data directory.
pub const SELF_SIGNED_CERT: &str = "web-cert.pem";
/// File name of the self-signed certificate's key in the data directory.
pub const SELF_SIGNED_KEY: &str = "web-key.pem";

impl WebTlsConfig {
    /// The certificate and key files served: the configured ones resolved against `base`, the
    /// config file's folder, or the self-signed pair in `data_dir`.
    pub fn files(&self, base: &Path, data_dir: &Path) -> (PathBuf, PathBuf) {
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) if !self.self_signed => {
                (settings::resolve(base, cert), settings::resolve(base, key))
            }
            _ => (
                data_dir.join(SELF_SIGNED_CERT),
                data_dir.join(SELF_SIGNED_KEY),
            ),
        }
    }

    /// The client CA file resolved against `base`, if there is one.
    pub fn client_ca(&self, base: &Path) -> Option<PathBuf> {
        self.client_ca_file
            .as_ref()
            .map(|ca| settings::resolve(base, ca))
    }

    /// The client CRL file resolved against `base`, if there is one.
    pub fn client_crl(&self, base: &Path) -> Option<PathBuf> {
        self.client_crl_file
            .as_ref()
            .map(|crl| settings::resolve(base, crl))
    }
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            bind: default_web_bind(),
            tls: None,
        }
    }
}

fn default_web_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8088))
}

impl WebConfig {
    /// Every problem of `[web]`; `logins` is whether `[access]` is enabled, since anyone on the
    /// network reaches a non-loopback address, and so it needs both encryption and logins.
    pub fn validate(&self, base: &Path, logins: bool) -> Vec<Problem> {
        settings::collect(|bad| {
            if let Some(tls) = &self.tls {
                match (&tls.cert_file, &tls.key_file, tls.self_signed) {
                    (Some(_), _, true) | (_, Some(_), true) => bad(
                        "web.tls.self_signed",
                        "cannot be true beside cert_file and key_file: choose one".into(),
                    ),
                    (Some(cert), Some(key), false) => {
                        settings::check_readable(
                            &settings::resolve(base, cert),
                            "web.tls.cert_file",
                            bad,
                        );
                        settings::check_readable(
                            &settings::resolve(base, key),
                            "web.tls.key_file",
                            bad,
                        );
                    }
                    (Some(_), None, false) => {
                        bad("web.tls.cert_file", "needs web.tls.key_file too".into())
                    }
                    (None, Some(_), false) => {
                        bad("web.tls.key_file", "needs web.tls.cert_file too".into())
                    }
                    (None, None, true) => {}
                    (None, None, false) => bad(
                        "web.tls",
                        "needs cert_file and key_file, or self_signed = true".into(),
                    ),
                }
                let ca = tls.client_ca(base);
                if let Some(ca) = &ca {
                    check_ca(ca, bad);
                }
                if let Some(crl) = tls.client_crl(base) {
                    crate::pem::check_crl(
                        ("web.tls.client_crl_file", &crl),
                        ("web.tls.client_ca_file", ca.as_deref()),
                        bad,
                    );
                }
            }
            if !self.bind.ip().is_loopback() {
                let mut missing = Vec::new();
                if self.tls.is_none() {
                    missing.push("[web.tls]");
                }
                if !logins {
                    missing.push("[access] enabled = true");
                }
                if !missing.is_empty() {
                    bad(
                        "web.bind",
                        format!(
                            "{} is reachable from the network: it needs {}",
                            self.bind.ip(),
                            missing.join(" and ")
                        ),
                    );
                }
            }
        })
    }
}

/// A client CA file must hold at least one certificate: without one, every client certificate
/// would be refused and no certificate-bound key could ever be used.
fn check_ca(path: &Path, bad: &mut dyn FnMut(&str, String)) {
    const KEY: &str = "web.tls.client_ca_file";
    settings::check_readable(path, KEY, bad);
    if path.is_file()
        && let Err(e) = crate::pem::certificates(path)
    {
        bad(KEY, e.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The problems of the `[web]` of `text`, as `key: message`, with logins on or off.
    fn check(text: &str, logins: bool) -> Vec<String> {
        let web: WebConfig = settings::section(text, "web").expect("a [web] table");
        web.validate(Path::new("/nonexistent"), logins)
            .into_iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect()
    }

    #[test]
    fn loopback_without_tls_or_logins_is_fine() {
        assert!(check("[web]\nbind = \"127.0.0.1:8088\"\n", false).is_empty());
        assert!(check("[web]\nbind = \"[::1]:8088\"\n", false).is_empty());
    }

    #[test]
    fn network_bind_needs_tls_and_logins() {
        let plain = check("[web]\nbind = \"0.0.0.0:8443\"\n", false);
        assert_eq!(
            plain,
            [
                "web.bind: 0.0.0.0 is reachable from the network: it needs [web.tls] and [access] enabled = true"
            ]
        );
        let no_logins = check(
            "[web]\nbind = \"192.0.2.7:8443\"\n[web.tls]\nself_signed = true\n",
            false,
        );
        assert_eq!(
            no_logins,
            ["web.bind: 192.0.2.7 is reachable from the network: it needs [access] enabled = true"]
        );
        let no_tls = check("[web]\nbind = \"0.0.0.0:8443\"\n", true);
        assert_eq!(
            no_tls,
            ["web.bind: 0.0.0.0 is reachable from the network: it needs [web.tls]"]
        );
        assert!(
            check(
                "[web]\nbind = \"0.0.0.0:8443\"\n[web.tls]\nself_signed = true\n",
                true
            )
            .is_empty()
        );
    }

    #[test]
    fn tls_names_one_source_of_certificate() {
        assert_eq!(
            check("[web.tls]\n", false),
            ["web.tls: needs cert_file and key_file, or self_signed = true"]
        );
        assert_eq!(
            check("[web.tls]\ncert_file = \"c.pem\"\n", false),
            ["web.tls.cert_file: needs web.tls.key_file too"]
        );
        assert_eq!(
            check(
                "[web.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nself_signed = true\n",
                false
            ),
            ["web.tls.self_signed: cannot be true beside cert_file and key_file: choose one"]
        );
        let unreadable = check(
            "[web.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n",
            false,
        );
        assert_eq!(unreadable.len(), 2, "{unreadable:?}");
        assert!(unreadable[0].starts_with("web.tls.cert_file: cannot read /nonexistent/c.pem"));
        assert!(unreadable[1].starts_with("web.tls.key_file: cannot read /nonexistent/k.pem"));
    }

    #[test]
    fn a_client_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ca.pem"), "not a certificate\n").expect("written");
        let web: WebConfig = settings::section(
            "[web.tls]\nself_signed = true\nclient_ca_file = \"ca.pem\"\n",
            "web",
        )
        .expect("a [web] table");
        let problems: Vec<String> = web
            .validate(dir.path(), false)
            .into_iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect();
        assert_eq!(
            problems,
            [format!(
                "web.tls.client_ca_file: {} holds no PEM certificate",
                dir.path().join("ca.pem").display()
            )]
        );
        let missing = check(
            "[web.tls]\nself_signed = true\nclient_ca_file = \"ca.pem\"\n",
            false,
        );
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(missing[0].starts_with("web.tls.client_ca_file: cannot read /nonexistent/ca.pem"));
    }

    #[test]
    fn a_client_crl_file_needs_the_client_ca_and_a_usable_list() {
        let alone = check(
            "[web.tls]\nself_signed = true\nclient_crl_file = \"ca.crl\"\n",
            false,
        );
        assert_eq!(
            alone,
            [
                "web.tls.client_crl_file: needs web.tls.client_ca_file: revocation is checked only \
              for client certificates"
            ]
        );

        let dir = tempfile::tempdir().expect("temp dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let ca = rcgen::CertificateParams::new(vec!["ca.test".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("written");
        let crl = dir.path().join("ca.crl");
        let problems = |list: &str| {
            std::fs::write(&crl, list).expect("written");
            let web: WebConfig = settings::section(
                "[web.tls]\nself_signed = true\nclient_ca_file = \"ca.pem\"\nclient_crl_file = \"ca.crl\"\n",
                "web",
            )
            .expect("a [web] table");
            web.validate(dir.path(), false)
                .into_iter()
                .map(|p| format!("{}: {}", p.key, p.message))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            problems("no list here\n"),
            [format!(
                "web.tls.client_crl_file: {} holds no PEM certificate revocation list (X509 CRL)",
                crl.display()
            )]
        );
        let broken = problems("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n");
        assert_eq!(broken.len(), 1, "{broken:?}");
        assert!(
            broken[0].starts_with(&format!("web.tls.client_crl_file: {}: ", crl.display())),
            "{broken:?}"
        );
    }

    #[test]
    fn self_signed_files_live_in_the_data_dir() {
        let tls = WebTlsConfig {
            cert_file: None,
            key_file: None,
            self_signed: true,
            client_ca_file: None,
            client_crl_file: None,
        };
        assert_eq!(
            tls.files(Path::new("/etc/cg"), Path::new("/var/lib/cg")),
            (
                PathBuf::from("/var/lib/cg/web-cert.pem"),
                PathBuf::from("/var/lib/cg/web-key.pem")
            )
        );
        let files = WebTlsConfig {
            cert_file: Some("tls/c.pem".into()),
            key_file: Some("/k.pem".into()),
            self_signed: false,
            client_ca_file: None,
            client_crl_file: None,
        };
        assert_eq!(
            files.files(Path::new("/etc/cg"), Path::new("/var/lib/cg")),
            (PathBuf::from("/etc/cg/tls/c.pem"), PathBuf::from("/k.pem"))
        );
    }
}
