//! The pure side of OpenID Connect sign-in (authorization code flow with PKCE, OpenID Connect
//! Core 1.0 §3.1): the provider's discovery document, the authorization request, the token
//! request's form, ID token verification and the role a verified token maps to. No I/O; the
//! only clock is jsonwebtoken's check of `exp` and `nbf`.

use super::config::{OidcConfig, web_url};
use crate::access::keys;
use crate::access::policy::{self, Allowed, Group, Role};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use rustls::pki_types::PrivateKeyDer;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Why a sign-in was refused; [`Refusal::reason`] is what the audit records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no sign-in was started with this state, or it was finished already")]
    State,
    #[error("the sign-in was started in another browser")]
    Browser,
    #[error("the sign-in took longer than allowed")]
    Expired,
    #[error("the provider answered the error {0}")]
    Provider(String),
    #[error("the response names another issuer")]
    Issuer,
    #[error("the provider refused the code: {0}")]
    Exchange(String),
    #[error("the response or ID token is malformed")]
    Malformed,
    #[error("the ID token's algorithm is not accepted")]
    Algorithm,
    #[error("the ID token's signature does not verify with the provider's keys")]
    Signature,
    #[error("the ID token is for another client")]
    Audience,
    #[error("the ID token has expired or is not valid yet")]
    TokenExpired,
    #[error("the ID token's nonce is not this sign-in's")]
    Nonce,
    #[error("no claim value maps to a role")]
    NoRole,
    #[error("the mapped roles do not include one granting all the others grant")]
    AmbiguousRole,
    #[error("the ID token names none of the required authentication methods")]
    Amr,
}

impl Refusal {
    /// The audit's word for the refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::State => "state",
            Refusal::Browser => "browser",
            Refusal::Expired => "expired",
            Refusal::Provider(_) => "provider_error",
            Refusal::Issuer => "issuer",
            Refusal::Exchange(_) => "code_refused",
            Refusal::Malformed => "malformed",
            Refusal::Algorithm => "algorithm",
            Refusal::Signature => "signature",
            Refusal::Audience => "audience",
            Refusal::TokenExpired => "token_expired",
            Refusal::Nonce => "nonce",
            Refusal::NoRole => "no_role",
            Refusal::AmbiguousRole => "ambiguous_role",
            Refusal::Amr => "amr",
        }
    }
}

/// The provider's metadata (OpenID Connect Discovery 1.0 §3), the fields used here.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
}

impl Discovery {
    /// Parses the document and checks that it is the configured `issuer`'s (Discovery §4.3:
    /// identical, else a provider could speak for another) with endpoints as trustworthy as
    /// the issuer, and that PKCE with S256 is not ruled out; the problem when not.
    pub fn parse(body: &[u8], issuer: &str) -> Result<Discovery, String> {
        let d: Discovery =
            serde_json::from_slice(body).map_err(|e| format!("not a discovery document: {e}"))?;
        if d.issuer != issuer {
            return Err(format!("it names the issuer {:?}", d.issuer));
        }
        for (name, url) in [
            ("authorization_endpoint", &d.authorization_endpoint),
            ("token_endpoint", &d.token_endpoint),
            ("jwks_uri", &d.jwks_uri),
        ] {
            web_url(url).map_err(|m| format!("{name}: {m}"))?;
        }
        if let Some(methods) = &d.code_challenge_methods_supported
            && !methods.iter().any(|m| m == "S256")
        {
            return Err("it does not support PKCE with S256".into());
        }
        Ok(d)
    }
}

/// A fresh random token of 32 bytes, URL-safe: a state, a nonce, a PKCE verifier (43
/// characters, within RFC 7636 §4.1's 43 to 128).
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// The PKCE challenge of `verifier` (RFC 7636 §4.2, S256).
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The URL the browser is sent to, to sign in at the provider.
pub fn authorization_url(
    d: &Discovery,
    c: &OidcConfig,
    state: &str,
    nonce: &str,
    verifier: &str,
) -> Result<url::Url, String> {
    let mut url = url::Url::parse(&d.authorization_endpoint).map_err(|e| e.to_string())?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &c.client_id)
        .append_pair("redirect_uri", &c.redirect_url)
        .append_pair("scope", &c.scopes.join(" "))
        .append_pair("state", state)
        .append_pair("nonce", nonce)
        .append_pair("code_challenge", &challenge(verifier))
        .append_pair("code_challenge_method", "S256");
    Ok(url)
}

/// How the gateway proves itself at the token endpoint.
pub enum Credentials {
    /// A public client: PKCE alone protects the code.
    Public,
    /// `client_secret_basic`, in the `Authorization` header ([`basic_authorization`]).
    Secret(String),
    /// `private_key_jwt`: a signed [`client_assertion`] in the form.
    Assertion(String),
}

/// The token request's form (RFC 6749 §4.1.3, RFC 7636 §4.5). A public client names itself
/// in the form; one with a key adds its assertion (RFC 7523 §2.2); one with a secret sends it
/// in the `Authorization` header instead.
pub fn token_form(
    c: &OidcConfig,
    code: &str,
    verifier: &str,
    credentials: &Credentials,
) -> Vec<(&'static str, String)> {
    let mut form = vec![
        ("grant_type", "authorization_code".to_string()),
        ("code", code.to_string()),
        ("redirect_uri", c.redirect_url.clone()),
        ("code_verifier", verifier.to_string()),
    ];
    match credentials {
        Credentials::Public => form.push(("client_id", c.client_id.clone())),
        Credentials::Secret(_) => {}
        Credentials::Assertion(jwt) => {
            form.push((
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
            ));
            form.push(("client_assertion", jwt.clone()));
        }
    }
    form
}

/// A private key for `private_key_jwt` and the algorithm it signs with: ES256 or ES384 for an
/// EC key in PKCS#8, RS256 for an RSA key in PKCS#1; the problem otherwise.
pub fn assertion_key(der: &PrivateKeyDer<'_>) -> Result<(Algorithm, EncodingKey), String> {
    match der {
        PrivateKeyDer::Pkcs1(k) => Ok((
            Algorithm::RS256,
            EncodingKey::from_rsa_der(k.secret_pkcs1_der()),
        )),
        PrivateKeyDer::Pkcs8(k) => {
            let key = EncodingKey::from_ec_der(k.secret_pkcs8_der());
            // The PKCS#8 wrapper names the curve; signing once is the plainest way to read it.
            [Algorithm::ES256, Algorithm::ES384]
                .into_iter()
                .find(|&alg| jsonwebtoken::crypto::sign(b"probe", &key, alg).is_ok())
                .map(|alg| (alg, key))
                .ok_or_else(|| {
                    "must be an EC P-256 or P-384 key in PKCS#8, or an RSA key in PKCS#1 \
                     (BEGIN RSA PRIVATE KEY)"
                        .into()
                })
        }
        _ => Err(
            "an EC key must be in PKCS#8 (BEGIN PRIVATE KEY): openssl pkcs8 -topk8 -nocrypt".into(),
        ),
    }
}

/// A client assertion (RFC 7523 §3, OpenID Connect Core §9): issued by and about the client,
/// for the token endpoint, once (`jti`), valid for a minute from `now_s`.
pub fn client_assertion(
    client_id: &str,
    token_endpoint: &str,
    (alg, key, kid): (Algorithm, &EncodingKey, Option<&str>),
    now_s: u64,
    jti: &str,
) -> Result<String, String> {
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = kid.map(str::to_string);
    let claims = serde_json::json!({
        "iss": client_id,
        "sub": client_id,
        "aud": token_endpoint,
        "jti": jti,
        "iat": now_s,
        "exp": now_s + 60,
    });
    jsonwebtoken::encode(&header, &claims, key).map_err(|e| e.to_string())
}

/// The `Authorization` header of `client_secret_basic`: id and secret are form-encoded before
/// they are joined (RFC 6749 §2.3.1), which matters for secrets holding `:` or `%`.
pub fn basic_authorization(client_id: &str, secret: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", enc(client_id), enc(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// The token endpoint's answer, the field used here.
#[derive(Debug, Deserialize)]
pub struct TokenAnswer {
    pub id_token: String,
}

/// The error code of a token endpoint's error answer (RFC 6749 §5.2), tidied for the audit.
pub fn token_error(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Answer {
        error: String,
    }
    serde_json::from_slice::<Answer>(body)
        .map(|a| tidy(&a.error))
        .unwrap_or_else(|_| "unreadable".into())
}

/// A value from outside (an error code, a user name) as the audit may carry it: at most 64
/// characters, letters, digits and `@._-` only.
pub fn tidy(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '_' | '-'))
        .take(64)
        .collect()
}

/// Signature algorithms an ID token may use: asymmetric ones only, so that no token is
/// checked as an HMAC keyed with something public.
const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// What an ID token must show for this sign-in.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
}

/// The claims checked here; the rest are kept for the role mapping.
#[derive(Debug, Deserialize)]
struct IdClaims {
    sub: String,
    /// One audience or several; jsonwebtoken has checked that this client is among them.
    aud: Value,
    /// Required by Core §2; typed so that a token with a malformed one is refused.
    #[serde(rename = "iat")]
    _iat: i64,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// The key of the provider's key set `jwks` that signed a token with `kid` and `alg`: the one
/// with that id, or without an id the only signing key of the algorithm's family.
fn signing_key(jwks: &Value, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, Refusal> {
    // Keys are read one by one: a key of a type this crate does not know (an encryption key,
    // say) must not make the whole set unreadable.
    let keys: Vec<Jwk> = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(Refusal::Signature)?
        .iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .filter(|k| {
            let for_signing = !matches!(
                k.common.public_key_use,
                Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
            );
            let same_alg = k
                .common
                .key_algorithm
                .is_none_or(|a| a == jsonwebtoken::jwk::KeyAlgorithm::from(alg));
            for_signing && same_alg
        })
        .collect();
    let candidates: Vec<DecodingKey> = keys
        .iter()
        .filter(|k| kid.is_none_or(|id| k.common.key_id.as_deref() == Some(id)))
        .filter_map(|k| DecodingKey::from_jwk(k).ok())
        .filter(|k| k.family() == alg.family())
        .collect();
    match <[DecodingKey; 1]>::try_from(candidates) {
        Ok([key]) => Ok(key),
        Err(_) => Err(Refusal::Signature),
    }
}

/// Verifies an ID token (Core §3.1.3.7) against the provider's key set: an asymmetric
/// signature by one of its keys, the issuer, this client as audience (and as authorized
/// party when named), expiry with a minute's leeway, and this sign-in's nonce. Its claims.
pub fn verify_id_token(
    token: &str,
    jwks: &Value,
    expected: Expected<'_>,
) -> Result<VerifiedClaims, Refusal> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Malformed)?;
    if !ALGORITHMS.contains(&header.alg) {
        return Err(Refusal::Algorithm);
    }
    let key = signing_key(jwks, header.kid.as_deref(), header.alg)?;
    let mut v = Validation::new(header.alg);
    v.set_issuer(&[expected.issuer]);
    v.set_audience(&[expected.client_id]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v.validate_nbf = true;
    v.leeway = 60;
    let data = jsonwebtoken::decode::<IdClaims>(token, &key, &v).map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature => Refusal::Signature,
        ErrorKind::InvalidAlgorithm => Refusal::Algorithm,
        ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => Refusal::TokenExpired,
        ErrorKind::InvalidIssuer => Refusal::Issuer,
        ErrorKind::InvalidAudience => Refusal::Audience,
        _ => Refusal::Malformed,
    })?;
    let claims = data.claims;
    let several = claims.aud.as_array().is_some_and(|a| a.len() > 1);
    match claims.azp.as_deref() {
        Some(azp) if azp != expected.client_id => return Err(Refusal::Audience),
        None if several => return Err(Refusal::Audience),
        _ => {}
    }
    let nonce = claims.nonce.as_deref().unwrap_or_default();
    if !keys::same(nonce.as_bytes(), expected.nonce.as_bytes()) {
        return Err(Refusal::Nonce);
    }
    // Core §2: at most 255 ASCII characters, never reassigned by the issuer.
    if claims.sub.is_empty() || claims.sub.len() > 255 || !claims.sub.is_ascii() {
        return Err(Refusal::Malformed);
    }
    Ok(VerifiedClaims {
        subject: claims.sub,
        rest: claims.rest,
    })
}

/// The claims of a verified ID token.
#[derive(Debug, Clone)]
pub struct VerifiedClaims {
    pub subject: String,
    rest: Map<String, Value>,
}

/// Who signed in, as the session and the audit know them.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The provider's `sub`.
    pub subject: String,
    /// `preferred_username`, tidied, when the token has one: for people reading the audit.
    pub username: Option<String>,
    pub role: Role,
    /// The authentication methods the provider reports (`amr`), if any.
    pub amr: Vec<String>,
}

/// Whether `a` may use every route `b` may.
fn covers(a: Role, b: Role) -> bool {
    Group::ALL.into_iter().all(|g| {
        let who = Allowed::Group(g);
        !policy::permits(who, b) || policy::permits(who, a)
    })
}

/// The role `claims` map to through `[access.oidc]`, with the `amr` check; who signed in.
pub fn identity(claims: VerifiedClaims, c: &OidcConfig) -> Result<Identity, Refusal> {
    let strings = |v: Option<&Value>| -> Vec<String> {
        match v {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    };
    let amr = strings(claims.rest.get("amr"));
    let mapped: Vec<Role> = strings(claims.rest.get(&c.role_claim))
        .iter()
        .filter_map(|v| c.roles.get(v).copied())
        .collect();
    if mapped.is_empty() {
        return Err(Refusal::NoRole);
    }
    let role = mapped
        .iter()
        .copied()
        .find(|&a| mapped.iter().all(|&b| covers(a, b)))
        .ok_or(Refusal::AmbiguousRole)?;
    if !c.require_amr.is_empty() && !amr.iter().any(|m| c.require_amr.contains(m)) {
        return Err(Refusal::Amr);
    }
    let username = claims
        .rest
        .get("preferred_username")
        .and_then(Value::as_str)
        .map(tidy)
        .filter(|u| !u.is_empty());
    Ok(Identity {
        subject: claims.subject,
        username,
        role,
        amr: amr.iter().map(|m| tidy(m)).collect(),
    })
}

#[cfg(test)]
mod tests;
