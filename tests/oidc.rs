//! Single sign-on against a real OpenID provider (npm `oidc-provider`, started here with a
//! client and accounts whose `groups` claim carries their roles): the authorization code flow
//! driven as a browser drives it, the session it ends with checked on the gateway's routes,
//! tampered sign-ins refused and audited, and local logins kept when the provider is gone.

mod common;

use common::oidc_provider::{Browser, OidcProvider, Seen};
use common::*;
use serde_json::{Value, json};
use std::path::Path;

const CLIENT: &str = "clinic-gateway";
const SECRET: &str = "test:secret%with-odd-characters";

fn accounts() -> Value {
    json!({
        "desk-1": { "claims": { "groups": ["staff", "gw-desk"], "preferred_username": "d.esk" }, "amr": ["pwd", "otp"] },
        "nurse-1": { "claims": { "groups": "gw-nurses" }, "amr": ["pwd", "hwk"] },
        "visitor-1": { "claims": { "groups": ["staff"] }, "amr": ["pwd", "otp"] },
        "pwd-only": { "claims": { "groups": ["gw-desk"] }, "amr": ["pwd"] },
    })
}

/// How the gateway proves itself to the provider.
enum Proof {
    Secret,
    /// `private_key_jwt` with an EC P-256 key kept in `oidc-client-key.pem`.
    Key(Box<rcgen::KeyPair>),
}

/// A P-256 key's public JWK under the id `gw-1`.
fn public_jwk(key: &rcgen::KeyPair) -> Value {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let point = key.public_key_raw();
    json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "gw-1",
        "x": b64(&point[1..33]), "y": b64(&point[33..65]),
    })
}

/// A gateway with logins and single sign-on through a provider started for it.
fn gateway_with_provider(dir: &Path) -> (Gateway, OidcProvider) {
    gateway_proving(dir, Proof::Secret)
}

fn gateway_proving(dir: &Path, proof: Proof) -> (Gateway, OidcProvider) {
    let mut gw = Gateway::new(dir, "");
    let redirect = format!("http://127.0.0.1:{}/login/oidc/callback", gw.web);
    let (client, credentials) = match proof {
        Proof::Secret => {
            std::fs::write(dir.join("oidc-secret"), format!("{SECRET}\n")).expect("secret");
            let client = json!({ "client_id": CLIENT, "client_secret": SECRET, "redirect_uris": [redirect] });
            (client, "client_secret_file = \"oidc-secret\"")
        }
        Proof::Key(key) => {
            std::fs::write(dir.join("oidc-client-key.pem"), key.serialize_pem()).expect("key");
            let client = json!({
                "client_id": CLIENT,
                "redirect_uris": [redirect],
                "token_endpoint_auth_method": "private_key_jwt",
                "token_endpoint_auth_signing_alg": "ES256",
                "jwks": { "keys": [public_jwk(&key)] },
            });
            (
                client,
                "client_key_file = \"oidc-client-key.pem\"\nclient_key_id = \"gw-1\"",
            )
        }
    };
    let idp = OidcProvider::start(dir, client, accounts());
    let access = format!(
        r#"[access]
enabled = true

[access.oidc]
name = "Clinic <Sign-in>"
issuer = "{}"
client_id = "{CLIENT}"
{credentials}
redirect_url = "{redirect}"
scopes = ["openid", "profile", "groups"]
role_claim = "groups"
require_amr = ["otp", "hwk"]
request_timeout_ms = 2000

[access.oidc.roles]
"gw-desk" = "front_desk"
"gw-nurses" = "clinical"
"#,
        idp.issuer()
    );
    std::fs::write(&gw.config, config_text(dir, gw.web, &access)).expect("config");
    gw.start();
    (gw, idp)
}

/// The audit records of `action`, oldest first, as (actor, detail).
fn audited(gw: &Gateway, action: &str) -> Vec<(String, Value)> {
    let out = gw.cli(&["audit", "export"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a record as JSON"))
        .filter(|r| r["action"] == action)
        .map(|r| {
            let detail = r["detail"].as_str().unwrap_or("{}");
            (
                r["actor"].as_str().unwrap_or_default().to_string(),
                serde_json::from_str(detail).unwrap_or(Value::Null),
            )
        })
        .collect()
}

/// The reasons of refused single sign-ons, oldest first, with their actors.
fn refusals(gw: &Gateway) -> Vec<(String, String)> {
    audited(gw, "access.login_refused")
        .into_iter()
        .filter(|(_, d)| d["via"] == "oidc")
        .map(|(a, d)| (a, d["reason"].as_str().unwrap_or_default().to_string()))
        .collect()
}

/// The status of `method path` with the browser's session cookie (and CSRF token).
fn call(gw: &Gateway, b: &Browser, method: &str, path: &str, csrf: Option<&str>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let cookie = format!(
        "cg_session={}",
        b.cookies.get("cg_session").expect("a session")
    );
    let mut r = match method {
        "GET" => agent.get(&gw.url(path)).header("cookie", &cookie).call(),
        _ => {
            let mut req = agent.post(&gw.url(path)).header("cookie", &cookie);
            if let Some(t) = csrf {
                req = req.header("x-csrf-token", t);
            }
            req.send_json(json!({}))
        }
    }
    .expect("request");
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap_or(Value::Null))
}

fn signed_in(seen: &Seen) -> bool {
    seen.status == 200 && seen.body.contains("url=/")
}

#[test]
fn staff_signed_in_by_the_provider_reach_their_roles_routes_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, _idp) = gateway_with_provider(dir.path());
    let mut b = Browser::default();

    let login = b.get(&gw.url("/login"));
    assert!(
        login
            .body
            .contains("<a href=\"/login/oidc\">Sign in with Clinic &lt;Sign-in&gt;</a>"),
        "{}",
        login.body
    );
    assert!(
        login.body.contains("name=\"password\""),
        "the local form stays"
    );

    let back = b.sign_in(&gw.url(""), "desk-1", |u| u);
    assert!(
        signed_in(&back),
        "{} {} {:?}",
        back.status,
        back.body,
        audited(&gw, "access.login_refused")
    );
    assert!(
        !b.cookies.contains_key("cg_oidc"),
        "the sign-in's cookie is cleared"
    );
    let (status, session) = call(&gw, &b, "GET", "/api/v1/session", None);
    assert_eq!(status, 200);
    assert_eq!(session["user"], "oidc:desk-1");
    assert_eq!(session["role"], "front_desk");
    assert_eq!(call(&gw, &b, "GET", "/api/v1/queues", None).0, 200);
    assert_eq!(call(&gw, &b, "GET", "/api/v1/notices", None).0, 403);
    assert_eq!(call(&gw, &b, "GET", "/api/v1/status", None).0, 403);

    let logins = audited(&gw, "access.login");
    let (actor, detail) = logins.last().expect("a login");
    assert_eq!(actor, "staff:oidc:desk-1");
    assert_eq!(detail["via"], "oidc");
    assert_eq!(detail["subject"], "desk-1");
    assert_eq!(detail["username"], "d.esk");
    assert_eq!(detail["role"], "front_desk");
    assert_eq!(detail["amr"], json!(["pwd", "otp"]));
    let role_refusals: Vec<_> = audited(&gw, "access.refused")
        .into_iter()
        .filter(|(a, d)| a == "staff:oidc:desk-1" && d["reason"] == "role")
        .collect();
    assert_eq!(role_refusals.len(), 2, "{role_refusals:?}");

    // The session is a local login's: a change needs its CSRF token, logout ends it.
    let csrf = session["csrf"].as_str().expect("csrf").to_string();
    assert_eq!(call(&gw, &b, "POST", "/logout", None).0, 403);
    assert_eq!(call(&gw, &b, "POST", "/logout", Some(&csrf)).0, 200);
    assert_eq!(call(&gw, &b, "GET", "/api/v1/session", None).0, 401);

    let mut nurse = Browser::default();
    assert!(signed_in(&nurse.sign_in(&gw.url(""), "nurse-1", |u| u)));
    assert_eq!(call(&gw, &nurse, "GET", "/api/v1/notices", None).0, 200);
    assert_eq!(call(&gw, &nurse, "GET", "/api/v1/dlq", None).0, 403);

    // No mapped group, or no second factor the settings require: refused, named in the audit.
    for account in ["visitor-1", "pwd-only"] {
        let mut b = Browser::default();
        let back = b.sign_in(&gw.url(""), account, |u| u);
        assert_eq!(back.status, 401, "{account}: {}", back.body);
        assert!(!b.cookies.contains_key("cg_session"), "{account}");
    }
    assert_eq!(
        refusals(&gw),
        [
            ("staff:oidc:visitor-1".to_string(), "no_role".to_string()),
            ("staff:oidc:pwd-only".to_string(), "amr".to_string()),
        ]
    );
}

#[test]
fn a_wrong_state_another_browser_a_foreign_nonce_or_a_forged_signature_is_refused_and_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, idp) = gateway_with_provider(dir.path());
    let base = gw.url("");
    let refused = |seen: &Seen| seen.status == 401 && seen.body.contains("Sign-in refused.");

    let mut b = Browser::default();
    let wrong_state = b.sign_in(&base, "desk-1", |u| u.replace("state=", "state=x"));
    assert!(refused(&wrong_state), "{}", wrong_state.body);

    // The code reaches a browser other than the one that started the sign-in.
    let mut b = Browser::default();
    let other = b.sign_in(&base, "desk-1", |u| {
        let mut stranger = Browser::default();
        let seen = stranger.get(&u);
        assert!(refused(&seen), "{}", seen.body);
        u
    });
    assert!(
        refused(&other),
        "the state was used up by the stranger's attempt"
    );

    idp.tamper("nonce");
    let mut b = Browser::default();
    assert!(refused(&b.sign_in(&base, "desk-1", |u| u)));

    idp.tamper("signature");
    let mut b = Browser::default();
    assert!(refused(&b.sign_in(&base, "desk-1", |u| u)));
    assert!(!b.cookies.contains_key("cg_session"));

    let reasons: Vec<String> = refusals(&gw).into_iter().map(|(_, r)| r).collect();
    assert_eq!(
        reasons,
        ["state", "browser", "state", "nonce", "signature"],
        "every refusal audited with its reason"
    );
    assert!(
        refusals(&gw).iter().all(|(actor, _)| actor == "anonymous"),
        "no subject is believed before the token verifies"
    );
    assert!(audited(&gw, "access.login").is_empty());

    // The untouched flow still works afterwards.
    let mut b = Browser::default();
    assert!(signed_in(&b.sign_in(&base, "desk-1", |u| u)));
}

/// A local account made with the CLI: its name, password and TOTP generator.
fn local_account(gw: &Gateway, name: &str) -> (String, totp_rs::Totp) {
    let out = gw.cli(&["user", "add", name, "--role", "front_desk"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "user add: {text}");
    let after = |label: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("{label} in {text}"))
            .trim()
            .to_string()
    };
    let uri = after("TOTP enrolment URI (add it to an authenticator app):");
    (
        after("one-time password:"),
        totp_rs::Totp::from_url(&uri).expect("an otpauth URI"),
    )
}

#[test]
fn with_the_provider_gone_the_button_says_so_and_local_accounts_still_log_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, mut idp) = gateway_with_provider(dir.path());
    let (password, totp) = local_account(&gw, "ann");
    let unreachable = |seen: &Seen| {
        seen.status == 503
            && seen.body.contains("sign-in service is unreachable")
            && seen.body.contains("Use your local account")
    };

    // Gone while the browser is on its way back: the code cannot be exchanged.
    let mut b = Browser::default();
    let seen = b.sign_in(&gw.url(""), "desk-1", |u| {
        idp.kill();
        u
    });
    assert!(unreachable(&seen), "{} {}", seen.status, seen.body);
    // Gone before: the button says so at once.
    let seen = Browser::default().get(&gw.url("/login/oidc"));
    assert!(unreachable(&seen), "{} {}", seen.status, seen.body);
    let outages = audited(&gw, "access.sso_unavailable");
    assert_eq!(outages.len(), 2, "{outages:?}");
    assert!(outages.iter().all(|(_, d)| d["reason"] == "unreachable"));
    assert!(audited(&gw, "access.login").is_empty());

    let body =
        json!({ "name": "ann", "password": password, "code": totp.generate_current().to_string() });
    let status = ureq::post(&gw.url("/login"))
        .send_json(&body)
        .expect("local login")
        .status();
    assert_eq!(status, 200);
    let logins = audited(&gw, "access.login");
    assert_eq!(logins.last().map(|(a, _)| a.as_str()), Some("staff:ann"));
}

#[test]
fn a_gateway_holding_a_private_key_proves_itself_with_a_signed_assertion() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let (gw, _idp) = gateway_proving(dir.path(), Proof::Key(Box::new(key)));

    let mut b = Browser::default();
    let back = b.sign_in(&gw.url(""), "nurse-1", |u| u);
    assert!(
        signed_in(&back),
        "{} {} {:?}",
        back.status,
        back.body,
        refusals(&gw)
    );
    assert_eq!(call(&gw, &b, "GET", "/api/v1/notices", None).0, 200);

    // A replaced key file is used at the next sign-in: one the provider does not know fails.
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    std::fs::write(
        dir.path().join("oidc-client-key.pem"),
        other.serialize_pem(),
    )
    .expect("key");
    let back = Browser::default().sign_in(&gw.url(""), "nurse-1", |u| u);
    assert_eq!(back.status, 401, "{}", back.body);
    let refused = audited(&gw, "access.login_refused");
    let (_, detail) = refused.last().expect("a refusal");
    assert_eq!(detail["reason"], "code_refused");
    assert_eq!(detail["error"], "invalid_client");
}
