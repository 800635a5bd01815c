//! OAuth 2.0 client credentials with `private_key_jwt` (SMART Backend Services): a client's
//! registered public key, the checks on its signed assertion, and the text and hash of the
//! bearer tokens issued. Pure: no I/O, no clock (the caller passes the time).
//!
//! A token, like an API key, is 256 random bits kept only as its SHA-256; its prefix tells the
//! guard which of the two it is looking at.

use super::smart::Scopes;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// What every bearer token issued here starts with.
pub const TOKEN_PREFIX: &str = "cgt_";
/// The only `client_assertion_type` accepted (RFC 7523 §2.2).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The signing algorithms accepted: SMART requires RS384 and ES384; RS256 and ES256 are
/// common among clients that predate it.
pub const ALGORITHMS: [(Algorithm, &str); 4] = [
    (Algorithm::RS384, "RS384"),
    (Algorithm::ES384, "ES384"),
    (Algorithm::RS256, "RS256"),
    (Algorithm::ES256, "ES256"),
];
/// The furthest ahead an assertion's `exp` may be (SMART Backend Services: "no more than five
/// minutes in the future").
pub const MAX_ASSERTION_SECS: i64 = 300;

/// Why a registered key or a presented assertion was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AssertionError {
    #[error("the key is neither a JWK set nor a PEM public key of RSA or EC P-256/P-384")]
    BadKey,
    #[error("the assertion is not a JWT")]
    Malformed,
    #[error("the assertion's algorithm is not one of RS384, ES384, RS256, ES256")]
    Algorithm,
    #[error("no registered key verifies the assertion's signature")]
    Signature,
    #[error("the assertion's claims are wrong (iss, sub, aud or jti)")]
    Claims,
    #[error("the assertion has expired")]
    Expired,
    #[error("the assertion's exp is more than five minutes ahead")]
    TooLong,
}

/// A client's registered public key, as the admin gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientKey {
    /// A JSON Web Key Set (RFC 7517 §5).
    Jwks(String),
    /// A PEM `PUBLIC KEY` (SubjectPublicKeyInfo) or `RSA PUBLIC KEY`.
    Pem(String),
}

impl ClientKey {
    /// The key's kind as stored.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientKey::Jwks(_) => "jwks",
            ClientKey::Pem(_) => "pem",
        }
    }

    pub fn text(&self) -> &str {
        match self {
            ClientKey::Jwks(t) | ClientKey::Pem(t) => t,
        }
    }

    pub fn from_stored(kind: &str, text: String) -> Option<ClientKey> {
        match kind {
            "jwks" => Some(ClientKey::Jwks(text)),
            "pem" => Some(ClientKey::Pem(text)),
            _ => None,
        }
    }

    /// The key checked once, when registered: a key that can verify nothing is refused then,
    /// not at the client's first call.
    pub fn check(&self) -> Result<(), AssertionError> {
        let usable = match self {
            ClientKey::Jwks(text) => serde_json::from_str::<JwkSet>(text)
                .ok()
                .is_some_and(|set| set.keys.iter().any(|k| DecodingKey::from_jwk(k).is_ok())),
            ClientKey::Pem(text) => {
                DecodingKey::from_rsa_pem(text.as_bytes()).is_ok()
                    || DecodingKey::from_ec_pem(text.as_bytes()).is_ok()
            }
        };
        usable.then_some(()).ok_or(AssertionError::BadKey)
    }

    /// The keys that may have signed an assertion whose header names `kid` and `alg`.
    fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<DecodingKey> {
        let rsa = matches!(alg, Algorithm::RS256 | Algorithm::RS384);
        match self {
            ClientKey::Jwks(text) => {
                let Ok(set) = serde_json::from_str::<JwkSet>(text) else {
                    return Vec::new();
                };
                set.keys
                    .iter()
                    .filter(|k| kid.is_none() || k.common.key_id.as_deref() == kid)
                    .filter_map(|k: &Jwk| DecodingKey::from_jwk(k).ok())
                    .collect()
            }
            ClientKey::Pem(text) if rsa => DecodingKey::from_rsa_pem(text.as_bytes())
                .ok()
                .into_iter()
                .collect(),
            ClientKey::Pem(text) => DecodingKey::from_ec_pem(text.as_bytes())
                .ok()
                .into_iter()
                .collect(),
        }
    }
}

/// The claims read from an assertion before its signature is checked: only to find the
/// client whose key checks it.
#[derive(Deserialize)]
struct Unverified {
    iss: Option<String>,
}

/// The `iss` of an assertion, unverified: it names the client whose key must verify it.
pub fn claimed_client(assertion: &str) -> Option<String> {
    use base64::Engine;
    let payload = assertion.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice::<Unverified>(&bytes).ok()?.iss
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    jti: String,
    exp: i64,
}

/// A verified assertion: its `jti`, to be used once, and its `exp` (s), until when the `jti`
/// is remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub jti: String,
    pub exp: i64,
}

/// Verifies a client's assertion at `now` (s): a signature by one of `key`'s keys with an
/// accepted algorithm, `iss` = `sub` = `client`, `aud` = `token_url`, `exp` in the future and
/// at most five minutes ahead, and a `jti`.
pub fn verify(
    assertion: &str,
    client: &str,
    key: &ClientKey,
    token_url: &str,
    now: i64,
) -> Result<Verified, AssertionError> {
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| AssertionError::Malformed)?;
    if !ALGORITHMS.iter().any(|(alg, _)| *alg == header.alg) {
        return Err(AssertionError::Algorithm);
    }
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[token_url]);
    validation.set_issuer(&[client]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    // Expiry is judged below against the caller's clock, so that tests can move it.
    validation.validate_exp = false;
    validation.leeway = 0;
    let mut claims = Err(AssertionError::Signature);
    for candidate in key.candidates(header.kid.as_deref(), header.alg) {
        match jsonwebtoken::decode::<Claims>(assertion, &candidate, &validation) {
            Ok(data) => {
                claims = Ok(data.claims);
                break;
            }
            // The signature checks out before any claim is looked at, so these are the
            // client's own mistakes; anything else means this key did not sign it.
            Err(e) if claims_error(e.kind()) => {
                claims = Err(AssertionError::Claims);
                break;
            }
            Err(_) => {}
        }
    }
    let claims = claims?;
    if claims.sub != client || claims.jti.is_empty() || claims.jti.len() > 256 {
        return Err(AssertionError::Claims);
    }
    if claims.exp <= now {
        return Err(AssertionError::Expired);
    }
    if claims.exp > now + MAX_ASSERTION_SECS {
        return Err(AssertionError::TooLong);
    }
    Ok(Verified {
        jti: claims.jti,
        exp: claims.exp,
    })
}

fn claims_error(kind: &jsonwebtoken::errors::ErrorKind) -> bool {
    use jsonwebtoken::errors::ErrorKind::*;
    matches!(
        kind,
        InvalidAudience | InvalidIssuer | MissingRequiredClaim(_) | ImmatureSignature | Json(_)
    )
}

/// A fresh bearer token's text.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{TOKEN_PREFIX}{hex}")
}

/// What the journal keeps of a token.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A client as the journal keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredClient {
    /// The client id, given as `iss` and `sub` of its assertions; the audit names its
    /// requests `client:<name>`.
    pub name: String,
    pub key: ClientKey,
    /// The scopes it may be granted.
    pub scopes: Scopes,
    pub revoked_at: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    // A P-256 key pair made for these tests only (openssl ecparam -name prime256v1).
    const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgGNsm7TqcYNFD9src
eRc5Hc5wrS16HR2yEiN7HXY/jq6hRANCAAQaViDdKpYYP3xPShD0pCv6MUZ88fAj
hDfBo143Cn2aC5AEhz9BD07O68zwzsBAgpU8xXfOtcL/2bYX5hYoPawQ
-----END PRIVATE KEY-----";
    const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEGlYg3SqWGD98T0oQ9KQr+jFGfPHw
I4Q3waNeNwp9mguQBIc/QQ9OzuvM8M7AQIKVPMV3zrXC/9m2F+YWKD2sEA==
-----END PUBLIC KEY-----";
    const URL: &str = "https://gw.clinic/oauth/token";

    fn check(claims: serde_json::Value, now: i64) -> Result<Verified, AssertionError> {
        let key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).expect("private key");
        let jwt = encode(&Header::new(Algorithm::ES256), &claims, &key).expect("sign");
        verify(&jwt, "ehr", &ClientKey::Pem(EC_PUBLIC.into()), URL, now)
    }

    fn claims(exp: i64) -> serde_json::Value {
        json!({ "iss": "ehr", "sub": "ehr", "aud": URL, "exp": exp, "jti": "j1" })
    }

    #[test]
    fn a_well_formed_assertion_is_verified_and_anything_off_is_refused() {
        let now = 1_000_000;
        assert_eq!(
            check(claims(now + 60), now),
            Ok(Verified {
                jti: "j1".into(),
                exp: now + 60
            })
        );
        assert_eq!(check(claims(now), now), Err(AssertionError::Expired));
        assert_eq!(check(claims(now + 301), now), Err(AssertionError::TooLong));
        let mut other = claims(now + 60);
        other["aud"] = json!("https://elsewhere/token");
        assert_eq!(check(other, now), Err(AssertionError::Claims));
        let mut other = claims(now + 60);
        other["sub"] = json!("someone");
        assert_eq!(check(other, now), Err(AssertionError::Claims));
        let mut other = claims(now + 60);
        other["iss"] = json!("someone");
        assert_eq!(check(other, now), Err(AssertionError::Claims));
    }

    #[test]
    fn a_signature_by_another_key_or_none_is_refused() {
        let key = EncodingKey::from_secret(b"shared").expect("secret");
        let jwt = encode(&Header::new(Algorithm::HS256), &claims(2_000), &key).expect("sign");
        let registered = ClientKey::Pem(EC_PUBLIC.into());
        assert_eq!(
            verify(&jwt, "ehr", &registered, URL, 1_900),
            Err(AssertionError::Algorithm)
        );
        let key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).expect("private key");
        let jwt = encode(&Header::new(Algorithm::ES256), &claims(2_000), &key).expect("sign");
        let (head, rest) = jwt.split_once('.').expect("jwt");
        let tampered = format!("{head}.{}", rest.replacen('e', "f", 1));
        assert!(verify(&tampered, "ehr", &registered, URL, 1_900).is_err());
        assert_eq!(claimed_client(&jwt).as_deref(), Some("ehr"));
        assert_eq!(
            verify("a.b", "ehr", &registered, URL, 1_900),
            Err(AssertionError::Malformed)
        );
    }

    #[test]
    fn only_usable_keys_are_registered() {
        assert_eq!(ClientKey::Pem(EC_PUBLIC.into()).check(), Ok(()));
        assert_eq!(
            ClientKey::Pem("not a key".into()).check(),
            Err(AssertionError::BadKey)
        );
        assert_eq!(
            ClientKey::Jwks(r#"{"keys":[]}"#.into()).check(),
            Err(AssertionError::BadKey)
        );
    }
}
