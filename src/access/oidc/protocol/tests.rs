use super::*;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

const ISSUER: &str = "https://idp.example/clinic";
const CLIENT: &str = "gateway";
const NONCE: &str = "n-0S6_WzA2Mj";

/// A P-256 signing key and its public JWK under `kid`.
struct Signer {
    key: EncodingKey,
    jwk: Value,
}

impl Signer {
    fn new(kid: &str) -> Signer {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let point = pair.public_key_raw();
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        Signer {
            key: EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk,
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = self.jwk["kid"].as_str().map(str::to_string);
        jsonwebtoken::encode(&header, claims, &self.key).expect("signed")
    }
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// The claims of a good token for `groups`; `change` edits them before signing.
fn claims(groups: Value) -> Value {
    json!({
        "iss": ISSUER, "aud": CLIENT, "sub": "248289761001", "iat": now(),
        "exp": now() + 300, "nonce": NONCE, "groups": groups,
        "preferred_username": "j.doe", "amr": ["pwd", "otp"],
    })
}

fn config(require_amr: &[&str]) -> OidcConfig {
    let text = format!(
        r#"[access.oidc]
name = "IdP"
issuer = "{ISSUER}"
client_id = "{CLIENT}"
redirect_url = "https://gw.example/login/oidc/callback"
require_amr = {require_amr:?}
[access.oidc.roles]
desk = "front_desk"
nurses = "clinical"
building = "facilities"
it = "admin"
"#
    );
    crate::settings::section(&text, "access.oidc").expect("config")
}

/// Verifies `token` against the key set of `signer` and maps its role with `c`.
fn check(signer: &Signer, token: &str, c: &OidcConfig) -> Result<Identity, Refusal> {
    let jwks = json!({ "keys": [
        { "kty": "RSA", "use": "enc", "kid": "enc-1", "n": "AQAB", "e": "AQAB", "alg": "RSA-OAEP" },
        signer.jwk,
    ]});
    let expected = Expected {
        issuer: ISSUER,
        client_id: CLIENT,
        nonce: NONCE,
    };
    identity(verify_id_token(token, &jwks, expected)?, c)
}

#[test]
fn a_token_signed_by_the_providers_key_for_this_sign_in_maps_to_its_role() {
    let idp = Signer::new("k1");
    let found = check(&idp, &idp.sign(&claims(json!(["nurses"]))), &config(&[]));
    assert_eq!(
        found,
        Ok(Identity {
            subject: "248289761001".into(),
            username: Some("j.doe".into()),
            role: Role::Clinical,
            amr: vec!["pwd".into(), "otp".into()],
        })
    );
    let one = idp.sign(&claims(json!("desk")));
    assert_eq!(
        check(&idp, &one, &config(&[])).map(|i| i.role),
        Ok(Role::FrontDesk)
    );
}

#[test]
fn forged_foreign_or_misaddressed_tokens_are_refused() {
    let idp = Signer::new("k1");
    let c = config(&[]);
    let edited = |f: &dyn Fn(&mut Value)| {
        let mut v = claims(json!(["desk"]));
        f(&mut v);
        idp.sign(&v)
    };
    let refused = |token: &str| check(&idp, token, &c).err();
    assert_eq!(
        refused(&Signer::new("k1").sign(&claims(json!(["desk"])))),
        Some(Refusal::Signature),
        "another key under the provider's key id"
    );
    assert_eq!(
        refused(&Signer::new("k2").sign(&claims(json!(["desk"])))),
        Some(Refusal::Signature),
        "a key the provider does not publish"
    );
    assert_eq!(
        refused(&edited(&|v| v["nonce"] = json!("other"))),
        Some(Refusal::Nonce)
    );
    let no_nonce = edited(&|v| {
        v.as_object_mut().map(|o| o.remove("nonce"));
    });
    assert_eq!(refused(&no_nonce), Some(Refusal::Nonce));
    assert_eq!(
        refused(&edited(&|v| v["aud"] = json!("other"))),
        Some(Refusal::Audience)
    );
    assert_eq!(
        refused(&edited(&|v| v["aud"] = json!([CLIENT, "other"]))),
        Some(Refusal::Audience),
        "several audiences need an azp naming this client"
    );
    let with_azp = edited(&|v| {
        v["aud"] = json!([CLIENT, "other"]);
        v["azp"] = json!(CLIENT);
    });
    assert!(refused(&with_azp).is_none());
    assert_eq!(
        refused(&edited(&|v| v["iss"] = json!("https://evil.example"))),
        Some(Refusal::Issuer)
    );
    assert_eq!(
        refused(&edited(&|v| v["exp"] = json!(now() - 120))),
        Some(Refusal::TokenExpired)
    );
    assert_eq!(
        refused(&edited(&|v| v["nbf"] = json!(now() + 600))),
        Some(Refusal::TokenExpired)
    );
    assert_eq!(
        refused(&edited(&|v| v["exp"] = json!("never"))),
        Some(Refusal::Malformed)
    );
    assert_eq!(
        refused(&edited(&|v| v["iat"] = json!("now"))),
        Some(Refusal::Malformed)
    );
    let hmac = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(json!(["desk"])),
        &EncodingKey::from_secret(b"public").expect("key"),
    )
    .expect("signed");
    assert_eq!(refused(&hmac), Some(Refusal::Algorithm));
    assert_eq!(refused("not.a.token"), Some(Refusal::Malformed));
}

#[test]
fn roles_come_from_the_mapping_the_broadest_covering_the_rest() {
    let idp = Signer::new("k1");
    let role =
        |groups: Value, c: &OidcConfig| check(&idp, &idp.sign(&claims(groups)), c).map(|i| i.role);
    let c = config(&[]);
    assert_eq!(role(json!(["staff", "unknown"]), &c), Err(Refusal::NoRole));
    assert_eq!(role(json!(null), &c), Err(Refusal::NoRole));
    assert_eq!(role(json!(["desk", "nurses"]), &c), Ok(Role::Clinical));
    assert_eq!(role(json!(["building", "it", "desk"]), &c), Ok(Role::Admin));
    assert_eq!(
        role(json!(["building", "nurses"]), &c),
        Err(Refusal::AmbiguousRole)
    );
}

#[test]
fn required_authentication_methods_must_be_named_in_amr() {
    let idp = Signer::new("k1");
    let token = |amr: Value| {
        let mut v = claims(json!(["desk"]));
        v["amr"] = amr;
        idp.sign(&v)
    };
    let mfa = config(&["mfa", "otp"]);
    assert!(check(&idp, &token(json!(["pwd", "otp"])), &mfa).is_ok());
    assert_eq!(check(&idp, &token(json!(["pwd"])), &mfa), Err(Refusal::Amr));
    assert_eq!(check(&idp, &token(json!(null)), &mfa), Err(Refusal::Amr));
    assert!(
        check(&idp, &token(json!(null)), &config(&[])).is_ok(),
        "trusted as is"
    );
}

#[test]
fn pkce_challenge_matches_rfc_7636_appendix_b() {
    assert_eq!(
        challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
    assert_eq!(random_token().len(), 43);
}

#[test]
fn discovery_must_name_the_configured_issuer_and_allow_s256() {
    let doc = |issuer: &str, endpoint: &str, methods: Value| {
        let d = json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{endpoint}/auth"),
            "token_endpoint": format!("{endpoint}/token"),
            "jwks_uri": format!("{endpoint}/jwks"),
            "code_challenge_methods_supported": methods,
        });
        Discovery::parse(d.to_string().as_bytes(), ISSUER).map(|d| d.token_endpoint)
    };
    assert_eq!(
        doc(ISSUER, ISSUER, json!(["S256"])),
        Ok(format!("{ISSUER}/token"))
    );
    assert!(doc(ISSUER, ISSUER, json!(null)).is_ok(), "not advertised");
    assert!(doc("https://other.example", ISSUER, json!(["S256"])).is_err());
    assert!(doc(ISSUER, "http://idp.example", json!(["S256"])).is_err());
    assert!(doc(ISSUER, ISSUER, json!(["plain"])).is_err());
    assert!(Discovery::parse(b"<html>", ISSUER).is_err());
}

#[test]
fn the_authorization_request_carries_state_nonce_and_the_s256_challenge() {
    let d = Discovery {
        issuer: ISSUER.into(),
        authorization_endpoint: format!("{ISSUER}/auth?tenant=1"),
        token_endpoint: String::new(),
        jwks_uri: String::new(),
        code_challenge_methods_supported: None,
    };
    let url = authorization_url(&d, &config(&[]), "st", "no", "ver").expect("url");
    let q: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("tenant"), Some("1"), "the endpoint's own query is kept");
    assert_eq!(get("response_type"), Some("code"));
    assert_eq!(get("scope"), Some("openid profile"));
    assert_eq!(get("state"), Some("st"));
    assert_eq!(get("nonce"), Some("no"));
    assert_eq!(get("code_challenge"), Some(challenge("ver").as_str()));
    assert_eq!(get("code_challenge_method"), Some("S256"));
    assert_eq!(
        get("redirect_uri"),
        Some("https://gw.example/login/oidc/callback")
    );
}

#[test]
fn client_secret_basic_form_encodes_before_joining() {
    assert_eq!(
        basic_authorization("gw", "a:b%"),
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("gw:a%3Ab%25")
        )
    );
    assert_eq!(
        token_error(br#"{"error":"invalid_grant <x>"}"#),
        "invalid_grantx"
    );
    assert_eq!(token_error(b"<html>"), "unreadable");
    assert_eq!(tidy("j.doe@clinic <script>"), "j.doe@clinicscript");
}

#[test]
fn a_client_assertion_is_signed_by_the_gateways_key_for_the_token_endpoint() {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let pem = pair.serialize_pem();
    let der = rustls_pemfile::private_key(&mut pem.as_bytes())
        .expect("pem")
        .expect("a key");
    let (alg, key) = assertion_key(&der).expect("usable");
    assert_eq!(alg, Algorithm::ES256);
    let jwt = client_assertion(
        CLIENT,
        "https://idp.example/token",
        (alg, &key, Some("gw-1")),
        1000,
        "j1",
    )
    .expect("signed");
    let point = pair.public_key_raw();
    let public = DecodingKey::from_ec_components(
        &URL_SAFE_NO_PAD.encode(&point[1..33]),
        &URL_SAFE_NO_PAD.encode(&point[33..65]),
    )
    .expect("public key");
    let mut v = Validation::new(Algorithm::ES256);
    v.validate_exp = false;
    v.set_audience(&["https://idp.example/token"]);
    let data = jsonwebtoken::decode::<Value>(&jwt, &public, &v).expect("verifies");
    assert_eq!(data.header.kid.as_deref(), Some("gw-1"));
    let c = data.claims;
    assert_eq!(
        (&c["iss"], &c["sub"], &c["jti"]),
        (&json!(CLIENT), &json!(CLIENT), &json!("j1"))
    );
    assert_eq!(
        (c["iat"].as_u64(), c["exp"].as_u64()),
        (Some(1000), Some(1060))
    );

    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key");
    let der = PrivateKeyDer::Pkcs8(p384.serialize_der().into());
    assert_eq!(
        assertion_key(&der).map(|(a, _)| a).ok(),
        Some(Algorithm::ES384)
    );
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
    assert!(assertion_key(&PrivateKeyDer::Pkcs8(ed.serialize_der().into())).is_err());
}
