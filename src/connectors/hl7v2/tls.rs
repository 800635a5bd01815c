//! The MLLP listener's TLS server configuration (rustls with the ring provider) from PEM
//! files, its certificate read again when the files change, and the client certificate's
//! subject the allow-list matches.
//!
//! Only files are read here; the handshake itself runs in the listener.

use super::config::ListenerTlsConfig;
use crate::pem::{CertFiles, ClientVerifier, PemError};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ListenerTlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("the certificate and key cannot be served: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The server configuration for `tls`, whose paths are already resolved; with a client CA,
/// a client without a certificate chaining to it fails the handshake.
pub fn server_config(
    tls: &ListenerTlsConfig,
) -> Result<Arc<rustls::ServerConfig>, ListenerTlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let provider_for_pair = provider.clone();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &tls.client_ca_file {
        Some(ca) => {
            let verifier =
                ClientVerifier::load(ca, tls.client_crl_file.as_deref(), false, provider)?;
            builder.with_client_cert_verifier(Arc::new(verifier))
        }
        None => builder.with_no_client_auth(),
    };
    // Renewal is replacing the files: each handshake presents what they hold then.
    let files = CertFiles::load(&tls.cert_file, &tls.key_file, provider_for_pair)?;
    let config = builder.with_cert_resolver(Arc::new(files));
    Ok(Arc::new(config))
}

/// The common name of the peer's end-entity certificate, if it presented one with a CN.
pub fn subject(connection: &rustls::ServerConnection) -> Option<String> {
    let der = connection.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}
