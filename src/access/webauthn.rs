//! WebAuthn (passkeys) as a second factor, the ES256 "none"-attestation path (W3C WebAuthn
//! Level 2 §7): checking what a browser sends back when a passkey is made (registration) and
//! when it is used (assertion). Pure: bytes in, a verdict out; no I/O, no clock.
//!
//! Attestation statements are not verified (the gateway trusts the staff member enrolling
//! after a full login, not the authenticator's maker), so only `"none"` is accepted: the page
//! asks for it, and a browser asked so erases any other.

use ciborium::value::Value;
use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Why a passkey's answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebauthnError {
    #[error("client data: {0}")]
    ClientData(&'static str),
    #[error("authenticator data: {0}")]
    AuthenticatorData(&'static str),
    #[error("attestation: {0}")]
    Attestation(&'static str),
    #[error("credential key: {0}")]
    Key(&'static str),
    #[error("signature does not verify")]
    Signature,
    /// The signature counter did not grow: the authenticator may have been cloned (§6.1.1).
    #[error("signature counter went back")]
    Counter,
}

/// What the answer must be bound to: the challenge the gateway gave, and where it was asked.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub challenge: &'a [u8],
    /// The page's origin (`https://gw.clinic:8443`).
    pub origin: &'a str,
    /// The relying party id: the host name the page was reached by.
    pub rp_id: &'a str,
}

/// A passkey made by a registration: its id and its public key as an uncompressed P-256 point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPasskey {
    pub credential_id: Vec<u8>,
    pub public_key: Vec<u8>,
    pub sign_count: u32,
}

#[derive(Deserialize)]
struct ClientData {
    #[serde(rename = "type")]
    kind: String,
    challenge: String,
    origin: String,
    #[serde(default, rename = "crossOrigin")]
    cross_origin: bool,
}

/// The unpadded base64url text of `bytes`, as WebAuthn's JSON carries binary values.
pub fn b64(bytes: &[u8]) -> String {
    data_encoding::BASE64URL_NOPAD.encode(bytes)
}

/// The bytes of unpadded base64url text (padding tolerated).
pub fn unb64(text: &str) -> Option<Vec<u8>> {
    data_encoding::BASE64URL_NOPAD
        .decode(text.trim_end_matches('=').as_bytes())
        .ok()
}

/// §7.1 steps 7–12 / §7.2 steps 11–14: the client data is of `kind`, for our challenge, from
/// our origin, not from a frame of another site.
fn check_client_data(json: &[u8], kind: &str, want: &Expected<'_>) -> Result<(), WebauthnError> {
    let c: ClientData =
        serde_json::from_slice(json).map_err(|_| WebauthnError::ClientData("not JSON"))?;
    if c.kind != kind {
        return Err(WebauthnError::ClientData("wrong type"));
    }
    let challenge = unb64(&c.challenge).ok_or(WebauthnError::ClientData("challenge"))?;
    if !crate::access::keys::same(&challenge, want.challenge) {
        return Err(WebauthnError::ClientData("another challenge"));
    }
    if c.origin != want.origin || c.cross_origin {
        return Err(WebauthnError::ClientData("another origin"));
    }
    Ok(())
}

/// Authenticator data's fixed part (§6.1): the RP id's hash, the flags, the counter.
struct AuthData<'a> {
    flags: u8,
    sign_count: u32,
    /// What follows the fixed part: the attested credential data when flag AT is set.
    rest: &'a [u8],
}

const UP: u8 = 0x01;
const UV: u8 = 0x04;
const AT: u8 = 0x40;

/// Reads authenticator data and checks its RP id hash and that the user was present and
/// verified (the page asks for verification: a passkey stands in for the TOTP code).
fn auth_data<'a>(data: &'a [u8], rp_id: &str) -> Result<AuthData<'a>, WebauthnError> {
    if data.len() < 37 {
        return Err(WebauthnError::AuthenticatorData("too short"));
    }
    if data[..32] != Sha256::digest(rp_id.as_bytes())[..] {
        return Err(WebauthnError::AuthenticatorData("another relying party"));
    }
    let flags = data[32];
    if flags & UP == 0 || flags & UV == 0 {
        return Err(WebauthnError::AuthenticatorData(
            "user not present and verified",
        ));
    }
    let sign_count = u32::from_be_bytes([data[33], data[34], data[35], data[36]]);
    Ok(AuthData {
        flags,
        sign_count,
        rest: &data[37..],
    })
}

fn map_get<'v>(map: &'v [(Value, Value)], key: &Value) -> Option<&'v Value> {
    map.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// A COSE_Key (RFC 9053 §7.1.1) of type EC2, algorithm ES256 on P-256, as an uncompressed point.
fn cose_p256(key: &Value) -> Result<Vec<u8>, WebauthnError> {
    let map = key.as_map().ok_or(WebauthnError::Key("not a map"))?;
    let int = |k: i64| map_get(map, &Value::Integer(k.into()));
    let is = |k: i64, v: i64| int(k) == Some(&Value::Integer(v.into()));
    if !is(1, 2) || !is(3, -7) || !is(-1, 1) {
        return Err(WebauthnError::Key("not an ES256 P-256 key"));
    }
    let coord = |k| {
        int(k)
            .and_then(Value::as_bytes)
            .filter(|b| b.len() == 32)
            .ok_or(WebauthnError::Key("coordinate"))
    };
    let mut point = vec![0x04];
    point.extend_from_slice(coord(-2)?);
    point.extend_from_slice(coord(-3)?);
    Ok(point)
}

/// §7.1: checks a registration (`navigator.credentials.create`) and answers the new passkey.
pub fn check_registration(
    attestation_object: &[u8],
    client_data_json: &[u8],
    want: &Expected<'_>,
) -> Result<NewPasskey, WebauthnError> {
    check_client_data(client_data_json, "webauthn.create", want)?;
    let object: Value = ciborium::from_reader(attestation_object)
        .map_err(|_| WebauthnError::Attestation("not CBOR"))?;
    let map = object
        .as_map()
        .ok_or(WebauthnError::Attestation("not a map"))?;
    let text = |k: &str| map_get(map, &Value::Text(k.into()));
    if text("fmt") != Some(&Value::Text("none".into())) {
        return Err(WebauthnError::Attestation("only \"none\" is accepted"));
    }
    let data = text("authData")
        .and_then(Value::as_bytes)
        .ok_or(WebauthnError::Attestation("authData"))?;
    let parsed = auth_data(data, want.rp_id)?;
    if parsed.flags & AT == 0 {
        return Err(WebauthnError::AuthenticatorData("no credential"));
    }
    // aaguid (16), credential id length (2), the id, then the COSE key.
    let rest = parsed.rest;
    if rest.len() < 18 {
        return Err(WebauthnError::AuthenticatorData("credential too short"));
    }
    let id_len = usize::from(u16::from_be_bytes([rest[16], rest[17]]));
    let id = rest
        .get(18..18 + id_len)
        .ok_or(WebauthnError::AuthenticatorData("credential id"))?;
    let key: Value =
        ciborium::from_reader(&rest[18 + id_len..]).map_err(|_| WebauthnError::Key("not CBOR"))?;
    Ok(NewPasskey {
        credential_id: id.to_vec(),
        public_key: cose_p256(&key)?,
        sign_count: parsed.sign_count,
    })
}

/// §7.2: checks an assertion (`navigator.credentials.get`) by the passkey with `public_key`
/// whose counter stood at `stored_count`; answers the new counter.
pub fn check_assertion(
    authenticator_data: &[u8],
    client_data_json: &[u8],
    signature: &[u8],
    public_key: &[u8],
    stored_count: u32,
    want: &Expected<'_>,
) -> Result<u32, WebauthnError> {
    check_client_data(client_data_json, "webauthn.get", want)?;
    let parsed = auth_data(authenticator_data, want.rp_id)?;
    let mut signed = authenticator_data.to_vec();
    signed.extend_from_slice(&Sha256::digest(client_data_json));
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, public_key)
        .verify(&signed, signature)
        .map_err(|_| WebauthnError::Signature)?;
    // An authenticator without a counter sends 0 every time (§6.1.1).
    if (parsed.sign_count != 0 || stored_count != 0) && parsed.sign_count <= stored_count {
        return Err(WebauthnError::Counter);
    }
    Ok(parsed.sign_count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

    const ORIGIN: &str = "https://gw.clinic:8443";

    fn want(challenge: &[u8]) -> Expected<'_> {
        Expected {
            challenge,
            origin: ORIGIN,
            rp_id: "gw.clinic",
        }
    }

    fn client_data(kind: &str, challenge: &[u8], origin: &str) -> Vec<u8> {
        serde_json::json!({ "type": kind, "challenge": b64(challenge), "origin": origin })
            .to_string()
            .into_bytes()
    }

    fn auth(flags: u8, count: u32, rp: &str) -> Vec<u8> {
        let mut d = Sha256::digest(rp.as_bytes()).to_vec();
        d.push(flags);
        d.extend_from_slice(&count.to_be_bytes());
        d
    }

    /// An authenticator: a P-256 key pair, and the assertion it would make.
    struct Authenticator {
        key: EcdsaKeyPair,
    }

    impl Authenticator {
        fn new() -> Authenticator {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("key");
            let key =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
                    .expect("key");
            Authenticator { key }
        }

        fn public(&self) -> Vec<u8> {
            self.key.public_key().as_ref().to_vec()
        }

        fn sign(&self, data: &[u8], client: &[u8]) -> Vec<u8> {
            let mut signed = data.to_vec();
            signed.extend_from_slice(&Sha256::digest(client));
            self.key
                .sign(&SystemRandom::new(), &signed)
                .expect("sign")
                .as_ref()
                .to_vec()
        }

        fn attestation(&self, fmt: &str, count: u32) -> Vec<u8> {
            let p = self.public();
            let cose = Value::Map(vec![
                (Value::Integer(1.into()), Value::Integer(2.into())),
                (Value::Integer(3.into()), Value::Integer((-7).into())),
                (Value::Integer((-1).into()), Value::Integer(1.into())),
                (Value::Integer((-2).into()), Value::Bytes(p[1..33].to_vec())),
                (Value::Integer((-3).into()), Value::Bytes(p[33..].to_vec())),
            ]);
            let mut data = auth(UP | UV | AT, count, "gw.clinic");
            data.extend_from_slice(&[0; 16]);
            data.extend_from_slice(&3u16.to_be_bytes());
            data.extend_from_slice(b"cid");
            ciborium::into_writer(&cose, &mut data).expect("cbor");
            let object = Value::Map(vec![
                (Value::Text("fmt".into()), Value::Text(fmt.into())),
                (Value::Text("attStmt".into()), Value::Map(vec![])),
                (Value::Text("authData".into()), Value::Bytes(data)),
            ]);
            let mut out = Vec::new();
            ciborium::into_writer(&object, &mut out).expect("cbor");
            out
        }
    }

    #[test]
    fn a_none_attestation_gives_the_credential_and_its_key() {
        let a = Authenticator::new();
        let c = client_data("webauthn.create", b"chal", ORIGIN);
        let made = check_registration(&a.attestation("none", 0), &c, &want(b"chal"));
        assert_eq!(
            made,
            Ok(NewPasskey {
                credential_id: b"cid".to_vec(),
                public_key: a.public(),
                sign_count: 0
            })
        );
        let packed = check_registration(&a.attestation("packed", 0), &c, &want(b"chal"));
        assert_eq!(
            packed,
            Err(WebauthnError::Attestation("only \"none\" is accepted"))
        );
        let other = check_registration(&a.attestation("none", 0), &c, &want(b"other"));
        assert_eq!(other, Err(WebauthnError::ClientData("another challenge")));
    }

    #[test]
    fn an_assertion_verifies_only_for_our_challenge_origin_rp_flags_and_a_growing_counter() {
        let a = Authenticator::new();
        let check = |flags: u8, count: u32, rp: &str, kind: &str, origin: &str, stored: u32| {
            let data = auth(flags, count, rp);
            let client = client_data(kind, b"chal", origin);
            let sig = a.sign(&data, &client);
            check_assertion(&data, &client, &sig, &a.public(), stored, &want(b"chal"))
        };
        let get = "webauthn.get";
        assert_eq!(check(UP | UV, 5, "gw.clinic", get, ORIGIN, 4), Ok(5));
        assert_eq!(check(UP | UV, 0, "gw.clinic", get, ORIGIN, 0), Ok(0));
        assert_eq!(
            check(UP | UV, 4, "gw.clinic", get, ORIGIN, 4),
            Err(WebauthnError::Counter)
        );
        assert!(check(UP, 5, "gw.clinic", get, ORIGIN, 0).is_err(), "UV");
        assert!(check(UV, 5, "gw.clinic", get, ORIGIN, 0).is_err(), "UP");
        assert!(check(UP | UV, 5, "evil.example", get, ORIGIN, 0).is_err());
        assert!(check(UP | UV, 5, "gw.clinic", "webauthn.create", ORIGIN, 0).is_err());
        assert!(check(UP | UV, 5, "gw.clinic", get, "https://evil.example", 0).is_err());

        let data = auth(UP | UV, 9, "gw.clinic");
        let client = client_data(get, b"chal", ORIGIN);
        let mut sig = a.sign(&data, &client);
        let last = sig.len() - 1;
        sig[last] ^= 1;
        let forged = check_assertion(&data, &client, &sig, &a.public(), 0, &want(b"chal"));
        assert_eq!(forged, Err(WebauthnError::Signature));
    }
}
