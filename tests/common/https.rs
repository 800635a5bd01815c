//! The gateway's page and API over HTTPS: a client trusting exactly the certificate the gateway
//! serves, as a staff member who checked its fingerprint would.

use super::{Gateway, wait_for};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

/// The DER of the first certificate in the PEM file at `path`.
pub fn certificate(path: &Path) -> Vec<u8> {
    let pem = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .expect("a certificate")
        .expect("PEM")
        .to_vec()
}

/// A client that trusts `der` and nothing else.
pub fn trusting(der: &[u8]) -> ureq::Agent {
    let roots = [Certificate::from_der(der).to_owned()];
    ureq::Agent::config_builder()
        .tls_config(
            TlsConfig::builder()
                .provider(TlsProvider::Rustls)
                .root_certs(RootCerts::new_with_certs(&roots))
                .unversioned_rustls_crypto_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .build(),
        )
        .build()
        .into()
}

/// Starts the gateway and waits until `path` answers over HTTPS with the certificate in `cert`
/// (which the gateway may be the one to create); returns that answer.
pub fn start_https(gw: &mut Gateway, cert: &Path, path: &str) -> serde_json::Value {
    gw.spawn();
    let url = format!("https://127.0.0.1:{}{path}", gw.web);
    wait_for(
        "the gateway's API over HTTPS",
        Duration::from_secs(20),
        || {
            if !cert.exists() {
                return None;
            }
            trusting(&certificate(cert))
                .get(&url)
                .call()
                .ok()?
                .body_mut()
                .read_json()
                .ok()
        },
    )
}
