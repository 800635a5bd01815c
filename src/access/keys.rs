//! API keys for systems: their text form (`cgk_<id>_<secret>`), the secret's hash and the
//! verdict on a presented key. Pure: no I/O, no clock (the caller passes the time).
//!
//! The id finds the key's row; the secret, 256 random bits, is shown once and kept only as its
//! SHA-256. A slow password hash would buy nothing here: the secret is not guessable, and
//! every request pays for the check.

use super::policy::Scope;
use sha2::{Digest, Sha256};

/// What every key starts with, so a leaked one is recognised by secret scanners and people.
pub const PREFIX: &str = "cgk_";
const ID_HEX: usize = 16;
const SECRET_HEX: usize = 64;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn lower_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A fresh key's id and secret.
pub fn generate() -> (String, String) {
    let id = hex(&rand::random::<[u8; ID_HEX / 2]>());
    let secret = hex(&rand::random::<[u8; SECRET_HEX / 2]>());
    (id, secret)
}

/// A key's whole text, as its client presents it.
pub fn text(id: &str, secret: &str) -> String {
    format!("{PREFIX}{id}_{secret}")
}

/// The id and secret of a key's text, if it has the form of one.
pub fn parse(text: &str) -> Option<(&str, &str)> {
    let (id, secret) = text.strip_prefix(PREFIX)?.split_once('_')?;
    (lower_hex(id, ID_HEX) && lower_hex(secret, SECRET_HEX)).then_some((id, secret))
}

/// What the journal keeps of a key's secret.
pub fn secret_hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Compares without stopping at the first difference, so that timing tells nothing of a
/// secret.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |d, (x, y)| d | (x ^ y)) == 0
}

/// A key as the journal keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredKey {
    pub id: String,
    /// The client's name: the audit names the key's requests `key:<name>`.
    pub name: String,
    pub scope: Scope,
    pub secret_hash: Vec<u8>,
    /// ms since the epoch; none: the key does not expire.
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// The SHA-256 fingerprint (`AB:CD:...`) of the client certificate the key is bound to:
    /// the key is accepted only over a connection that presented that certificate, and the
    /// certificate alone authenticates as the key.
    pub certificate: Option<String>,
}

/// What a presented key with a known id turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    /// The secret is not the key's: someone who knows the id only.
    Forged,
    Revoked,
    Expired,
    /// The secret is right but the key is bound to a client certificate the connection did
    /// not present: a secret that left its system.
    WrongCertificate,
}

/// A key's standing at a time, whoever asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Valid,
    Revoked,
    Expired,
}

impl StoredKey {
    /// The verdict on `secret` presented at `now` over a connection whose client certificate
    /// has the fingerprint `presented`, if any. The secret is checked first, so that only a
    /// holder of the real secret learns (through the audit) more than that.
    pub fn judge(&self, secret: &str, presented: Option<&str>, now: i64) -> Verdict {
        if !same(&secret_hash(secret), &self.secret_hash) {
            Verdict::Forged
        } else if self
            .certificate
            .as_deref()
            .is_some_and(|bound| presented != Some(bound))
        {
            Verdict::WrongCertificate
        } else {
            match self.standing(now) {
                Standing::Valid => Verdict::Valid,
                Standing::Revoked => Verdict::Revoked,
                Standing::Expired => Verdict::Expired,
            }
        }
    }

    /// The key's standing at `now` for a client that proved it holds it (its secret, or the
    /// certificate it is bound to).
    pub fn standing(&self, now: i64) -> Standing {
        if self.revoked_at.is_some_and(|t| t <= now) {
            Standing::Revoked
        } else if self.expires_at.is_some_and(|t| t <= now) {
            Standing::Expired
        } else {
            Standing::Valid
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Option<(String, String)> {
        parse(text).map(|(id, secret)| (id.into(), secret.into()))
    }

    #[test]
    fn a_generated_key_parses_back_to_its_id() {
        let (id, secret) = generate();
        let text = text(&id, &secret);
        assert_eq!(check(&text), Some((id.clone(), secret.clone())));
        assert_eq!((id.len(), secret.len()), (16, 64));
        assert_ne!(generate().1, secret, "random");
    }

    #[test]
    fn anything_else_is_not_a_key() {
        let id = "0123456789abcdef";
        let secret = "ab".repeat(32);
        assert!(check(&format!("cgk_{id}_{secret}")).is_some());
        assert!(check(&format!("cgx_{id}_{secret}")).is_none());
        assert!(check(&format!("cgk_{id}{secret}")).is_none());
        assert!(check(&format!("cgk_{id}_{}", &secret[1..])).is_none());
        assert!(check(&format!("cgk_{id}_{}", secret.to_uppercase())).is_none());
        assert!(check(&format!("cgk_{id}_{secret}_")).is_none());
        assert!(check(&format!("cgk_x{}_{secret}", &id[1..])).is_none());
        assert!(check("").is_none());
    }

    #[test]
    fn only_the_right_secret_in_time_and_unrevoked_is_valid() {
        let secret = "cd".repeat(32);
        let key = StoredKey {
            id: "0123456789abcdef".into(),
            name: "scraper".into(),
            scope: Scope::parse("metrics").expect("scope"),
            secret_hash: secret_hash(&secret),
            expires_at: Some(1_000),
            revoked_at: None,
            certificate: None,
        };
        assert_eq!(key.secret_hash.len(), 32);
        assert_eq!(key.judge(&secret, None, 999), Verdict::Valid);
        assert_eq!(key.judge(&secret, Some("AB"), 999), Verdict::Valid);
        assert_eq!(key.judge(&secret, None, 1_000), Verdict::Expired);
        assert_eq!(key.judge(&"ce".repeat(32), None, 999), Verdict::Forged);
        let revoked = StoredKey {
            revoked_at: Some(500),
            ..key
        };
        assert_eq!(revoked.judge(&secret, None, 600), Verdict::Revoked);
        assert_eq!(revoked.judge(&"ce".repeat(32), None, 600), Verdict::Forged);
    }

    #[test]
    fn a_bound_key_needs_its_certificate_beside_its_secret() {
        let secret = "cd".repeat(32);
        let key = StoredKey {
            id: "0123456789abcdef".into(),
            name: "lab-analyser".into(),
            scope: Scope::parse("queue").expect("scope"),
            secret_hash: secret_hash(&secret),
            expires_at: Some(1_000),
            revoked_at: None,
            certificate: Some("AB:CD".into()),
        };
        assert_eq!(key.judge(&secret, Some("AB:CD"), 999), Verdict::Valid);
        assert_eq!(key.judge(&secret, None, 999), Verdict::WrongCertificate);
        assert_eq!(
            key.judge(&secret, Some("AB:CE"), 999),
            Verdict::WrongCertificate
        );
        assert_eq!(
            key.judge(&"ce".repeat(32), Some("AB:CD"), 999),
            Verdict::Forged
        );
        assert_eq!(key.standing(999), Standing::Valid);
        assert_eq!(key.standing(1_000), Standing::Expired);
    }

    #[test]
    fn secrets_compare_by_content_and_length() {
        assert!(same(b"abcd", b"abcd"));
        assert!(!same(b"abcd", b"abce"));
        assert!(!same(b"abc", b"abcd"));
    }
}
