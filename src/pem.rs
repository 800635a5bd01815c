//! TLS certificates, private keys and revocation lists read from PEM files, for the servers the
//! gateway runs (the page and API, the MLLP listener) and the relay's client certificate; the
//! pair a handshake presents, read again when its files change so that a renewal is picked up
//! without a restart; the client certificates a listener accepts, its revocation lists read
//! again the same way; and when a certificate file's certificates stop being valid. A leaf: it
//! knows files and rustls types only.

use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("{path} holds no PEM certificate revocation list (X509 CRL)")]
    NoCrl { path: PathBuf },
    #[error("{path}: the certificate cannot be read: {message}")]
    X509 { path: PathBuf, message: String },
    #[error("{cert} and {key}: {source}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// When the earliest of the certificates in the PEM file at `path` stops being valid, in
/// seconds since the epoch: a chain or a CA bundle is only as good as its first to expire.
pub fn not_after(path: &Path) -> Result<i64, PemError> {
    let mut earliest = i64::MAX;
    for der in certificates(path)? {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| PemError::X509 {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        earliest = earliest.min(cert.validity().not_after.timestamp());
    }
    Ok(earliest)
}

/// What a file looked like when it was read: a replaced or rewritten file looks different.
pub type Stamp = Option<(SystemTime, u64)>;

/// The stamp of the file at `path` now; none if it cannot be read.
pub fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// A certificate and its key from PEM files, presented by every handshake and read again when
/// either file has changed since: renewing a certificate is replacing its files. A pair that
/// cannot be used (one file replaced before the other, a key not matching its certificate)
/// leaves the last good one in place, and is tried again at the next handshake.
#[derive(Debug)]
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Mutex<(Stamp, Stamp, Arc<CertifiedKey>)>,
}

impl CertFiles {
    /// Reads the pair once, so that a bad pair at start-up is an error and not a failing
    /// handshake later.
    pub fn load(cert: &Path, key: &Path, provider: Arc<CryptoProvider>) -> Result<Self, PemError> {
        let stamps = (stamp(cert), stamp(key));
        let pair = certified(cert, key, &provider)?;
        Ok(CertFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            current: Mutex::new((stamps.0, stamps.1, pair)),
        })
    }

    /// The pair to present now.
    fn current(&self) -> Arc<CertifiedKey> {
        let stamps = (stamp(&self.cert), stamp(&self.key));
        // A poisoned lock only means a handshake panicked mid-read; the pair kept is whole.
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if (&stamps.0, &stamps.1) != (&current.0, &current.1) {
            match certified(&self.cert, &self.key, &self.provider) {
                Ok(pair) => {
                    tracing::info!(cert = %self.cert.display(), "renewed certificate read");
                    *current = (stamps.0, stamps.1, pair);
                }
                Err(e) => tracing::warn!(error = %e, "renewed certificate not usable yet"),
            }
        }
        current.2.clone()
    }
}

fn certified(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, PemError> {
    let pair_error = |source| PemError::Pair {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source,
    };
    let signing = provider
        .key_provider
        .load_private_key(private_key(key)?)
        .map_err(pair_error)?;
    let pair = CertifiedKey::new(certificates(cert)?, signing);
    pair.keys_match().map_err(pair_error)?;
    Ok(Arc::new(pair))
}

impl rustls::server::ResolvesServerCert for CertFiles {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for CertFiles {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// SHA-256 of a certificate's DER, as upper-case hex pairs joined by `:` (the form browsers
/// and `openssl x509 -fingerprint -sha256` show).
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Every certificate in the PEM file at `path`; at least one.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    every(
        path,
        |pem| rustls_pemfile::certs(pem).collect(),
        |path| PemError::NoCertificate { path },
    )
}

/// The certificates in the PEM file at `path` as trust roots: the CA a peer's certificate must
/// chain to.
pub fn roots(path: &Path) -> Result<rustls::RootCertStore, PemError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|e| PemError::Pem {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// Every certificate revocation list in the PEM file at `path`; at least one. Their contents
/// are checked when a verifier is built from them ([`ClientVerifier`]).
pub fn crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, PemError> {
    every(
        path,
        |pem| rustls_pemfile::crls(pem).collect(),
        |path| PemError::NoCrl { path },
    )
}

/// Every item `parse` takes from the PEM file at `path`; `none` is the error when it takes none.
fn every<T>(
    path: &Path,
    parse: impl FnOnce(&mut dyn std::io::BufRead) -> std::io::Result<Vec<T>>,
    none: fn(PathBuf) -> PemError,
) -> Result<Vec<T>, PemError> {
    let pem = read(path)?;
    let items = parse(&mut pem.as_slice()).map_err(|e| PemError::Pem {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if items.is_empty() {
        return Err(none(path.to_path_buf()));
    }
    Ok(items)
}

/// The first private key in the PEM file at `path`.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let pem = read(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| PemError::Pem {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?
        .ok_or_else(|| PemError::NoKey {
            path: path.to_path_buf(),
        })
}

fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Client certificates verified against the CAs of one PEM file and, when another is given,
/// the revocation lists (CRLs) it holds: a revoked certificate fails the handshake. The CRL
/// file is read again whenever it has changed, so that a CA's new list counts from the next
/// handshake without a restart; a list that cannot be used leaves the last good one in place.
/// Only the client's own certificate is looked up, and one whose issuer has no list in the file
/// is refused: revocation was asked for and cannot be told. A list past its next update still
/// counts (a CA that stopped publishing must not lock every system out).
#[derive(Debug)]
pub struct ClientVerifier {
    ca: PathBuf,
    roots: Arc<rustls::RootCertStore>,
    subjects: Vec<DistinguishedName>,
    crl: Option<PathBuf>,
    /// Clients without a certificate are served too (a browser at the login page); a
    /// certificate that is presented is verified all the same.
    optional: bool,
    provider: Arc<CryptoProvider>,
    current: Mutex<(Stamp, Arc<dyn ClientCertVerifier>)>,
}

impl ClientVerifier {
    /// Reads both files once, so that a bad one at start-up is an error and not a failing
    /// handshake later.
    pub fn load(
        ca: &Path,
        crl: Option<&Path>,
        optional: bool,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, PemError> {
        let roots = Arc::new(roots(ca)?);
        let stamp = crl.and_then(stamp);
        let verifier = build_verifier(ca, &roots, crl, optional, &provider)?;
        Ok(ClientVerifier {
            ca: ca.to_path_buf(),
            subjects: roots.subjects(),
            roots,
            crl: crl.map(Path::to_path_buf),
            optional,
            provider,
            current: Mutex::new((stamp, verifier)),
        })
    }

    /// The verifier as last built.
    fn kept(&self) -> Arc<dyn ClientCertVerifier> {
        // A poisoned lock only means a handshake panicked mid-read; the verifier kept is whole.
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.1.clone()
    }

    /// The verifier with the revocation list as its file holds it now.
    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        let Some(crl) = &self.crl else {
            return self.kept();
        };
        let now = stamp(crl);
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if now != current.0 {
            match build_verifier(
                &self.ca,
                &self.roots,
                Some(crl),
                self.optional,
                &self.provider,
            ) {
                Ok(verifier) => {
                    tracing::info!(crl = %crl.display(), "certificate revocation list read");
                    *current = (now, verifier);
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "certificate revocation list not usable; the last good one stays"
                ),
            }
        }
        current.1.clone()
    }
}

/// The config check of a client revocation list file, `(key, path)`, beside its client CA file,
/// `(key, path if set)`: revocation is checked only for client certificates, and the lists must
/// be readable and usable with that CA's certificates. A CA file's own problems are its key's.
pub fn check_crl(
    (key, crl): (&str, &Path),
    (ca_key, ca): (&str, Option<&Path>),
    bad: &mut dyn FnMut(&str, String),
) {
    let Some(ca) = ca else {
        bad(
            key,
            format!("needs {ca_key}: revocation is checked only for client certificates"),
        );
        return;
    };
    if certificates(ca).is_ok()
        && let Err(e) = ClientVerifier::load(
            ca,
            Some(crl),
            false,
            Arc::new(rustls::crypto::ring::default_provider()),
        )
    {
        bad(key, e.to_string());
    }
}

/// Turns session resumption off: a resumed session skips the client certificate's check, so a
/// certificate revoked since would still get in. With revocation asked for, every connection
/// shows its certificate again (a full handshake each; MLLP and browser connections are
/// long-lived).
pub fn check_every_handshake(config: &mut rustls::ServerConfig) {
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
}

/// Errors name the CRL file, or the CA file when there is none.
fn build_verifier(
    ca: &Path,
    roots: &Arc<rustls::RootCertStore>,
    crl: Option<&Path>,
    optional: bool,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, PemError> {
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
    if optional {
        builder = builder.allow_unauthenticated();
    }
    if let Some(path) = crl {
        builder = builder
            .with_crls(crls(path)?)
            .only_check_end_entity_revocation();
    }
    builder.build().map_err(|e| PemError::Pem {
        path: crl.unwrap_or(ca).to_path_buf(),
        message: e.to_string(),
    })
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        !self.optional
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.subjects
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.kept().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.kept().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.kept().supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_hold_every_certificate_and_an_unusable_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = |name: &str| {
            let key = rcgen::KeyPair::generate().expect("key");
            let params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
            params.self_signed(&key).expect("certificate").pem()
        };
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, ca("a.test") + &ca("b.test")).expect("write");
        assert_eq!(roots(&bundle).expect("a bundle of two").len(), 2);

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").expect("write");
        assert!(matches!(roots(&empty), Err(PemError::NoCertificate { .. })));

        // Valid PEM around three bytes that are no certificate.
        let broken = dir.path().join("broken.pem");
        let block = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        std::fs::write(&broken, block).expect("write");
        let error = roots(&broken).expect_err("not a certificate").to_string();
        assert!(error.starts_with(&broken.display().to_string()), "{error}");
    }
}
