//! Password hashing with argon2id, and the one-time passwords new accounts are given.
//! Pure and CPU-bound: callers run it off the async executor and off the journal's thread.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::OnceLock;

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(String);

/// argon2id with OWASP's first recommended set (19 MiB, 2 passes, 1 lane): about 30 ms on
/// the gateway's 2 cores, well under the 250 ms a login may take.
fn hasher() -> Result<Argon2<'static>, HashError> {
    let params = Params::new(19 * 1024, 2, 1, None).map_err(|e| HashError(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// The PHC string (`$argon2id$v=19$...`) of `password` with a random salt.
pub fn hash(password: &str) -> Result<String, HashError> {
    hasher()?
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Whether `password` matches the stored PHC string; a malformed string matches nothing.
pub fn verify(password: &str, stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    hasher().is_ok_and(|h| h.verify_password(password.as_bytes(), &parsed).is_ok())
}

/// Spends the time a verification takes, so that a login for a name with no account is
/// answered as slowly as one for a real account and its timing does not tell which names exist.
pub fn verify_decoy(password: &str) {
    static DECOY: OnceLock<Option<String>> = OnceLock::new();
    if let Some(decoy) = DECOY.get_or_init(|| hash("decoy").ok()) {
        verify(password, decoy);
    }
}

/// Letters and digits that cannot be mistaken for one another when read off a terminal.
const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// A new account's one-time password: 20 characters of a 55-letter alphabet, 115 bits.
pub fn one_time() -> String {
    rand::random::<[u8; 20]>()
        .iter()
        .map(|b| {
            // 256 is not a multiple of 55: a slight bias is irrelevant at 115 bits.
            ALPHABET[*b as usize % ALPHABET.len()] as char
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let stored = hash("correct horse").expect("hash");
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert!(verify("correct horse", &stored));
        assert!(!verify("correct hors", &stored));
        assert!(!verify("correct horse", "not a phc string"));
    }

    #[test]
    fn one_time_passwords_differ() {
        let (a, b) = (one_time(), one_time());
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
    }
}
