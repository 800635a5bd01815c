//! The relay's TLS client configuration (rustls with the ring provider), from PEM files.

use crate::settings::TlsConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A TLS setting that cannot be used: the config key it came from and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct TlsError {
    pub key: &'static str,
    pub message: String,
}

fn read(path: &Path, key: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError {
        key,
        message: format!("cannot read {}: {e}", path.display()),
    })
}

/// Builds the client configuration: the broker must chain to `ca_file`; with a client
/// certificate and key, the gateway authenticates itself too (mutual TLS).
pub fn client_config(
    tls: &TlsConfig,
    resolve: impl Fn(&Path) -> PathBuf,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let ca_key = "relay.tls.ca_file";
    let ca_path = resolve(&tls.ca_file);
    let pem = read(&ca_path, ca_key)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| TlsError {
            key: ca_key,
            message: format!("{}: {e}", ca_path.display()),
        })?;
        roots.add(cert).map_err(|e| TlsError {
            key: ca_key,
            message: format!("{}: {e}", ca_path.display()),
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError {
            key: ca_key,
            message: format!("{} holds no PEM certificate", ca_path.display()),
        });
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError {
        key: ca_key,
        message: e.to_string(),
    })?
    .with_root_certificates(roots);
    let config = match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert), Some(key)) => {
            let (cert_key, key_key) = ("relay.tls.client_cert_file", "relay.tls.client_key_file");
            let cert_path = resolve(cert);
            let pem = read(&cert_path, cert_key)?;
            let certs = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsError {
                    key: cert_key,
                    message: format!("{}: {e}", cert_path.display()),
                })?;
            if certs.is_empty() {
                return Err(TlsError {
                    key: cert_key,
                    message: format!("{} holds no PEM certificate", cert_path.display()),
                });
            }
            let key_path = resolve(key);
            let pem = read(&key_path, key_key)?;
            let private = rustls_pemfile::private_key(&mut pem.as_slice())
                .map_err(|e| TlsError {
                    key: key_key,
                    message: format!("{}: {e}", key_path.display()),
                })?
                .ok_or_else(|| TlsError {
                    key: key_key,
                    message: format!("{} holds no PEM private key", key_path.display()),
                })?;
            builder
                .with_client_auth_cert(certs, private)
                .map_err(|e| TlsError {
                    key: key_key,
                    message: e.to_string(),
                })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
