//! The MLLP listener's TLS server configuration (rustls with the ring provider) from PEM
//! files, and the client certificate's subject the allow-list matches.
//!
//! Only files are read here; the handshake itself runs in the listener.

use super::config::ListenerTlsConfig;
use crate::pem::{PemError, certificates, private_key};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ListenerTlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("the client CA certificates cannot be used: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
    #[error("the certificate and key cannot be served: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The server configuration for `tls`, whose paths are already resolved; with a client CA,
/// a client without a certificate chaining to it fails the handshake.
pub fn server_config(
    tls: &ListenerTlsConfig,
) -> Result<Arc<rustls::ServerConfig>, ListenerTlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &tls.client_ca_file {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(ca)? {
                roots.add(cert)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config =
        builder.with_single_cert(certificates(&tls.cert_file)?, private_key(&tls.key_file)?)?;
    Ok(Arc::new(config))
}

/// The common name of the peer's end-entity certificate, if it presented one with a CN.
pub fn subject(connection: &rustls::ServerConnection) -> Option<String> {
    let der = connection.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}
