//! The MLLP listener's TLS server configuration (rustls with the ring provider) from PEM
//! files, its certificate read again when the files change, and the client certificate's
//! subject the allow-list matches.
//!
//! Only files are read here; the handshake itself runs in the listener.

use super::config::ListenerTlsConfig;
use crate::pem::{self, CertFiles, ClientVerifier, PemError};
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
    let mut config = builder.with_cert_resolver(Arc::new(files));
    if tls.client_crl_file.is_some() {
        pem::check_every_handshake(&mut config);
    }
    Ok(Arc::new(config))
}

/// The common name of the peer's end-entity certificate, if it presented one with a CN.
pub fn subject(connection: &rustls::ServerConnection) -> Option<String> {
    let der = connection.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_a_revocation_list_no_session_is_resumed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("written");
            path
        };
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_file = write("ca.crt", ca.self_signed(&ca_key).expect("ca").pem());
        let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
        let server_key = rcgen::KeyPair::generate().expect("key");
        let server = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .signed_by(&server_key, &issuer)
            .expect("server certificate");
        let list = rcgen::CertificateRevocationListParams {
            this_update: ca.not_before,
            next_update: ca.not_after,
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&issuer)
        .expect("revocation list");
        let mut tls = ListenerTlsConfig {
            cert_file: write("server.crt", server.pem()),
            key_file: write("server.key", server_key.serialize_pem()),
            client_ca_file: Some(ca_file),
            client_crl_file: None,
        };
        let resumable = server_config(&tls).expect("config");
        assert!(resumable.session_storage.can_cache());
        tls.client_crl_file = Some(write("ca.crl", list.pem().expect("pem")));
        let checked = server_config(&tls).expect("config with a revocation list");
        assert!(!checked.session_storage.can_cache());
    }
}
