//! The relay's TLS client configuration (rustls with the ring provider), from PEM files; the
//! client certificate is read again when its files change.

use crate::pem::{self, CertFiles, PemError};
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

/// Builds the client configuration: the broker must chain to `ca_file`; with a client
/// certificate and key, the gateway authenticates itself too (mutual TLS).
pub fn client_config(
    tls: &TlsConfig,
    resolve: impl Fn(&Path) -> PathBuf,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let failed = |key: &'static str| {
        move |e: PemError| TlsError {
            key,
            message: e.to_string(),
        }
    };
    let ca_key = "relay.tls.ca_file";
    let roots = pem::roots(&resolve(&tls.ca_file)).map_err(failed(ca_key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError {
            key: ca_key,
            message: e.to_string(),
        })?
        .with_root_certificates(roots);
    let config = match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert), Some(key)) => {
            let (cert_key, key_key) = ("relay.tls.client_cert_file", "relay.tls.client_key_file");
            let (cert_path, key_path) = (resolve(cert), resolve(key));
            pem::certificates(&cert_path).map_err(failed(cert_key))?;
            pem::private_key(&key_path).map_err(failed(key_key))?;
            // Read again at each connection when the files change: a renewed client
            // certificate is used from the next reconnection on, without a restart.
            let files =
                CertFiles::load(&cert_path, &key_path, provider).map_err(failed(key_key))?;
            builder.with_client_cert_resolver(Arc::new(files))
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
