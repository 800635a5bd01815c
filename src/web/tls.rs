//! The certificate the page and API serve: read from PEM files, or created once (self-signed)
//! and kept in the data directory; and its SHA-256 fingerprint, which staff compare with what
//! their browser shows the first time they accept a self-signed certificate.
//!
//! With a client CA, the listener asks clients for a certificate, and each connection's
//! verified one is handed to the requests it carries as a [`PeerCertificate`].
//!
//! Only files are read here, never the network, so `clinic-gateway status` prints the
//! fingerprint even when the daemon does not answer.

use crate::access::mtls::PeerCertificate;
pub use crate::pem::fingerprint;
use crate::pem::{self, CertFiles, ClientVerifier, PemError, certificates};
use crate::web::config::WebTlsConfig;
use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum WebTlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate and key cannot be served: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What the HTTPS listener needs, and the fingerprint it reports.
pub struct Serving {
    pub config: rustls::ServerConfig,
    /// SHA-256 of the server certificate's DER at start-up, as `AB:CD:...`.
    pub fingerprint: String,
}

/// The certificate and key for `tls`: the configured files, or the self-signed pair in
/// `data_dir`, created for `names` if it is not there yet; with a client CA, client
/// certificates are asked for and verified. `base` is the config file's folder.
pub fn serving(
    tls: &WebTlsConfig,
    base: &Path,
    data_dir: &Path,
    names: &[String],
) -> Result<Serving, WebTlsError> {
    let (cert_path, key_path) = tls.files(base, data_dir);
    if tls.self_signed && !cert_path.exists() {
        create_self_signed(&cert_path, &key_path, names)?;
    }
    let fingerprint = fingerprint_of(&cert_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Renewal is replacing the files: each handshake presents what they hold then.
    let files = CertFiles::load(&cert_path, &key_path, provider.clone())?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let crl = tls.client_crl(base);
    let builder = match tls.client_ca(base) {
        Some(ca) => {
            // Browsers of staff have no client certificate and must still reach the login
            // page; a certificate that is presented must chain to the CA and not be revoked,
            // or the handshake fails.
            let verifier = ClientVerifier::load(&ca, crl.as_deref(), true, provider)?;
            builder.with_client_cert_verifier(Arc::new(verifier))
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(files));
    if crl.is_some() {
        pem::check_every_handshake(&mut config);
    }
    Ok(Serving {
        config,
        fingerprint,
    })
}

/// The fingerprint of the first certificate in the PEM file at `path`.
pub fn fingerprint_of(path: &Path) -> Result<String, WebTlsError> {
    Ok(fingerprint(&certificates(path)?[0]))
}

/// Run by the server for each new connection: an HTTPS connection whose client presented a
/// certificate (verified in the handshake against the client CA) gets that certificate's
/// fingerprint in its data, where the access guard looks for it.
pub fn on_connect(connection: &dyn std::any::Any, data: &mut Extensions) {
    let Some(tls) = connection.downcast_ref::<TlsStream<TcpStream>>() else {
        return;
    };
    let (_, session) = tls.get_ref();
    if let Some(leaf) = session.peer_certificates().and_then(|c| c.first()) {
        data.insert(PeerCertificate {
            fingerprint: fingerprint(leaf),
        });
    }
}

/// Creates the certificate for `names` (host names or addresses; `[::1]` is taken as `::1`).
/// The key is written first, readable by the owner only, so that a crash between the two
/// writes leaves no certificate without its key: the certificate's presence means the pair is
/// complete.
fn create_self_signed(
    cert_path: &Path,
    key_path: &Path,
    names: &[String],
) -> Result<(), WebTlsError> {
    let names: Vec<String> = names
        .iter()
        .map(|n| n.trim_start_matches('[').trim_end_matches(']').to_string())
        .collect();
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "clinic-gateway");
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    write(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write(cert_path, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(
        cert = %cert_path.display(),
        fingerprint = %fingerprint(cert.der()),
        "self-signed web certificate created"
    );
    Ok(())
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), WebTlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |source| WebTlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(failed)?;
    file.write_all(bytes).map_err(failed)?;
    file.sync_all().map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::CertificateDer;

    fn self_signed() -> WebTlsConfig {
        WebTlsConfig {
            cert_file: None,
            key_file: None,
            self_signed: true,
            client_ca_file: None,
            client_crl_file: None,
        }
    }

    #[test]
    fn a_self_signed_certificate_is_created_once_and_reused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let names = ["localhost".to_string(), "[::1]".to_string()];
        let first = serving(&self_signed(), dir.path(), dir.path(), &names).expect("created");
        let key = std::fs::metadata(dir.path().join("web-key.pem")).expect("key kept");
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
            0o600
        );
        let again = serving(&self_signed(), dir.path(), dir.path(), &names).expect("reused");
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(
            fingerprint_of(&dir.path().join("web-cert.pem")).expect("read"),
            first.fingerprint
        );
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
    }

    #[test]
    fn a_file_without_a_certificate_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("c.pem");
        std::fs::write(&path, "not a certificate\n").expect("written");
        let err = fingerprint_of(&path).expect_err("refused");
        assert_eq!(
            err.to_string(),
            format!("{} holds no PEM certificate", path.display())
        );
    }

    #[test]
    fn the_fingerprint_is_sha256_in_colon_pairs() {
        let der = CertificateDer::from(b"abc".to_vec());
        assert_eq!(
            fingerprint(&der),
            "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
    }
}
