//! Mutual TLS for systems: an API key bound to a client certificate. The HTTPS listener
//! verifies a presented certificate against `[web.tls] client_ca_file` during the handshake
//! and hands its fingerprint to the connection's requests ([`PeerCertificate`]); here that
//! fingerprint finds the key bound to it, whose client the request then is (`key:<name>`,
//! throttled and audited as a key sent in a header is).
//!
//! The handshake is the proof of possession: nothing here verifies a certificate, and a
//! fingerprint that did not come from a verified handshake must never reach this module.

use super::keys::Standing;
use super::{ApiClient, FindBoundKey, key_actor, policy};
use crate::journal::{self, JournalError, JournalWriter};
use crate::pem::{self, PemError};
use actix::Addr;
use actix_web::http::StatusCode;
use std::path::Path;

/// The client certificate a connection's handshake verified, as its SHA-256 fingerprint
/// (`AB:CD:...`), kept in the connection's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    pub fingerprint: String,
}

/// What a key bound to a certificate keeps of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub fingerprint: String,
    /// When the certificate stops being valid, ms since the epoch.
    pub not_after_ms: i64,
}

/// The binding for the first certificate in the PEM file at `path` (the client's own; a chain
/// behind it counts towards the expiry only).
pub fn binding(path: &Path) -> Result<Binding, PemError> {
    let leaf = pem::certificates(path)?.swap_remove(0);
    Ok(Binding {
        fingerprint: pem::fingerprint(&leaf),
        not_after_ms: pem::not_after(path)?.saturating_mul(1000),
    })
}

/// The binding for the first certificate of PEM text, as pasted into the page's form; none if
/// it holds no certificate that can be read.
pub fn binding_of_pem(text: &str) -> Option<Binding> {
    let certs = rustls_pemfile::certs(&mut text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let mut not_after = i64::MAX;
    for der in &certs {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        not_after = not_after.min(cert.validity().not_after.timestamp());
    }
    Some(Binding {
        fingerprint: pem::fingerprint(certs.first()?),
        not_after_ms: not_after.saturating_mul(1000),
    })
}

/// The first four bytes of a fingerprint, enough for staff to tell certificates apart.
pub fn prefix(fingerprint: &str) -> String {
    fingerprint.chars().take(11).collect()
}

/// A bound key's expiry: the one asked for unless the certificate's comes first, since after
/// it no handshake presents the certificate anyway, and the credential watcher then tells
/// staff ahead of the certificate's end.
pub fn expiry(asked: Option<i64>, certificate: Option<&Binding>) -> Option<i64> {
    match (asked, certificate.map(|c| c.not_after_ms)) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    }
}

/// Why a request with a certificate is refused: what the guard audits and answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    pub actor: String,
    pub reason: &'static str,
    /// The id of the key bound to the certificate, if there is one.
    pub key: Option<String>,
}

/// The client of a request made over a connection that presented `cert` and no other
/// credential: the key bound to it if that key is valid and its scope covers the route; else
/// why not.
pub async fn check(
    journal: &Addr<JournalWriter>,
    cert: &PeerCertificate,
    allowed: policy::Allowed,
) -> Result<Result<ApiClient, Refused>, JournalError> {
    let find = FindBoundKey {
        fingerprint: cert.fingerprint.clone(),
    };
    let Some(key) = journal::ask(journal, find).await? else {
        return Ok(Err(Refused {
            status: StatusCode::UNAUTHORIZED,
            actor: "anonymous".into(),
            reason: "certificate_unknown",
            key: None,
        }));
    };
    let (status, reason) = match key.standing(journal::now_ms()) {
        Standing::Valid if key.scope.permits(allowed) => {
            return Ok(Ok(ApiClient { name: key.name }));
        }
        Standing::Valid => (StatusCode::FORBIDDEN, "key_scope"),
        Standing::Revoked => (StatusCode::UNAUTHORIZED, "key_revoked"),
        Standing::Expired => (StatusCode::UNAUTHORIZED, "key_expired"),
    };
    Ok(Err(Refused {
        status,
        actor: key_actor(&key.name),
        reason,
        key: Some(key.id),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(asked: Option<i64>, certificate: Option<i64>) -> Option<i64> {
        let binding = certificate.map(|not_after_ms| Binding {
            fingerprint: "AB".into(),
            not_after_ms,
        });
        expiry(asked, binding.as_ref())
    }

    #[test]
    fn pasted_pem_binds_its_first_certificate() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["lab".to_string()]).expect("params");
        params.not_after = rcgen::date_time_ymd(2030, 1, 2);
        let cert = params.self_signed(&key).expect("certificate");
        let text = format!("pasted with a blank line\n\n{}", cert.pem());
        let bound = binding_of_pem(&text).expect("bound");
        assert_eq!(bound.fingerprint, pem::fingerprint(cert.der()));
        assert_eq!(bound.not_after_ms, 1_893_542_400_000);
        assert_eq!(binding_of_pem("no certificate"), None);
        let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(binding_of_pem(broken), None);
    }

    #[test]
    fn a_bound_key_expires_with_its_certificate_at_the_latest() {
        assert_eq!(check(None, None), None);
        assert_eq!(check(Some(5), None), Some(5));
        assert_eq!(check(None, Some(9)), Some(9));
        assert_eq!(check(Some(5), Some(9)), Some(5));
        assert_eq!(check(Some(12), Some(9)), Some(9));
    }
}
