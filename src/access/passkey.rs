//! The HTTP side of passkeys: enrolment by a logged-in staff member, and the login with the
//! password and a passkey in place of the TOTP code. The browser's part is `/passkey.js`; the
//! checks are `webauthn.rs`'s.
//!
//! A challenge lives in memory for two minutes, bound to its account and to what it is for;
//! it is used once. A restart forgets them: the staff member asks again.

use super::http::{COOKIE, Gate, digest, hex, refusal};
use super::peer;
use super::webauthn::{self, Expected, b64, unb64};
use super::{AddPasskey, FindCredentials, FindPasskeys, FinishLogin, Lockout, Proof, Staff};
use super::{password, policy, valid_name};
use crate::journal;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// The routes of passkeys, served when access is enabled.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/passkey.js", web::get().to(script))
        .route("/login/passkey/options", web::post().to(login_options))
        .route("/login/passkey", web::post().to(login))
        .route("/passkeys/options", web::post().to(enrol_options))
        .route("/passkeys", web::post().to(enrol));
}

/// What a challenge was given for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum For {
    Login,
    Enrolment,
}

struct Pending {
    user: String,
    purpose: For,
    expires: Instant,
}

const CHALLENGE_LIFE: Duration = Duration::from_secs(120);
/// More open challenges than staff could ask for at once: the rest are refused.
const MAX_PENDING: usize = 1000;

static PENDING: LazyLock<Mutex<HashMap<Vec<u8>, Pending>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// A new challenge for `user`, or none when too many are open.
fn challenge(user: &str, purpose: For) -> Option<Vec<u8>> {
    let mut pending = PENDING.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    pending.retain(|_, p| p.expires > now);
    if pending.len() >= MAX_PENDING {
        return None;
    }
    let c = rand::random::<[u8; 32]>().to_vec();
    let p = Pending {
        user: user.into(),
        purpose,
        expires: now + CHALLENGE_LIFE,
    };
    pending.insert(c.clone(), p);
    Some(c)
}

/// Takes the challenge (once) if it is open and was given for `purpose`; answers its account.
fn take(challenge: &[u8], purpose: For) -> Option<String> {
    let mut pending = PENDING.lock().unwrap_or_else(|p| p.into_inner());
    let p = pending.remove(challenge)?;
    (p.purpose == purpose && p.expires > Instant::now()).then_some(p.user)
}

/// The origin and RP id the browser must have used: this request's scheme and `Host` (which
/// the guard checked against the allowed hosts).
fn origin_of(req: &HttpRequest) -> (String, String) {
    let info = req.connection_info();
    let host = info.host().to_string();
    let origin = format!("{}://{host}", info.scheme());
    (origin, policy::host_name(&host).to_string())
}

fn busy() -> HttpResponse {
    HttpResponse::ServiceUnavailable().json(json!({ "error": "try again" }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameBody {
    name: String,
}

/// Records a refused passkey login as any refused login is (it counts towards the lock).
async fn refuse(gate: &Gate, req: &HttpRequest, name: &str, proof: Proof) -> HttpResponse {
    if let Err(e) = finish(gate, req, name, proof).await {
        tracing::warn!(error = %e, "refused login not recorded");
    }
    refusal(StatusCode::UNAUTHORIZED)
}

/// Ends a login attempt in the journal; answers the session token, CSRF token and role when
/// it opened a session.
async fn finish(
    gate: &Gate,
    req: &HttpRequest,
    name: &str,
    proof: Proof,
) -> Result<Option<(String, String, super::Role)>, journal::JournalError> {
    let token = hex(&rand::random::<[u8; 32]>());
    let csrf = hex(&rand::random::<[u8; 32]>());
    let c = &gate.config;
    let finish = FinishLogin {
        name: name.into(),
        proof,
        lockout: Lockout {
            after: c.lockout_after,
            initial_secs: c.lockout_initial_secs,
            max_secs: c.lockout_max_secs,
        },
        limits: gate.limits(),
        id_hash: digest(&token),
        csrf: csrf.clone(),
        peer: peer(req),
    };
    let role = journal::ask(&gate.journal, finish).await?;
    Ok(role.map(|r| (token, csrf, r)))
}

/// A credential id for a name without passkeys, the same each time within a run, so that the
/// answer does not tell which names have accounts or passkeys.
fn decoy_id(name: &str) -> Vec<u8> {
    static SALT: LazyLock<[u8; 32]> = LazyLock::new(rand::random);
    let mut h = Sha256::new();
    h.update(*SALT);
    h.update(name.as_bytes());
    h.finalize()[..16].to_vec()
}

/// `POST /login/passkey/options` with `name`: a challenge and the account's passkeys that may
/// answer it. The answer looks the same for any name; the password and the passkey are checked
/// together at `POST /login/passkey`, so that neither is learnt alone.
async fn login_options(
    gate: web::Data<Gate>,
    req: HttpRequest,
    body: web::Json<NameBody>,
) -> HttpResponse {
    let name = body.into_inner().name;
    let keys = if valid_name(&name) {
        match journal::ask(&gate.journal, FindPasskeys { user: name.clone() }).await {
            Ok(keys) => keys,
            Err(_) => return busy(),
        }
    } else {
        Vec::new()
    };
    let allow: Vec<String> = match keys.is_empty() {
        true => vec![b64(&decoy_id(&name))],
        false => keys.iter().map(|k| b64(&k.credential_id)).collect(),
    };
    let Some(c) = challenge(&name, For::Login) else {
        return busy();
    };
    let (_, rp_id) = origin_of(&req);
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "challenge": b64(&c), "rpId": rp_id, "allowCredentials": allow }))
}

/// Checks the password of `name` off the async executor, as `POST /login` does: what it proves,
/// short of the second factor (`None` when the password is right).
async fn check_password(gate: &Gate, name: &str, password: String) -> Result<Option<Proof>, ()> {
    let found = if valid_name(name) {
        let find = FindCredentials { name: name.into() };
        journal::ask(&gate.journal, find).await.map_err(|_| ())?
    } else {
        None
    };
    let Some(creds) = found.filter(|c| c.enabled) else {
        let _ = web::block(move || password::verify_decoy(&password)).await;
        return Ok(Some(Proof::NoAccount));
    };
    if creds.locked_until.is_some_and(|t| t > journal::now_ms()) {
        return Ok(Some(Proof::Locked));
    }
    let hash = creds.password_hash;
    let right = web::block(move || password::verify(&password, &hash)).await;
    Ok((!right.unwrap_or(false)).then_some(Proof::BadPassword))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssertionBody {
    password: String,
    challenge: String,
    id: String,
    #[serde(rename = "clientDataJSON")]
    client_data_json: String,
    #[serde(rename = "authenticatorData")]
    authenticator_data: String,
    signature: String,
}

/// `POST /login/passkey`: the password and the passkey's answer to a login challenge; opens
/// the session as `POST /login` does. Any refusal is the same 401.
async fn login(
    gate: web::Data<Gate>,
    req: HttpRequest,
    body: web::Json<AssertionBody>,
) -> HttpResponse {
    let b = body.into_inner();
    let Some(user) = unb64(&b.challenge).and_then(|c| take(&c, For::Login).map(|u| (u, c))) else {
        return refusal(StatusCode::UNAUTHORIZED);
    };
    let (user, challenge) = user;
    match check_password(&gate, &user, b.password.clone()).await {
        Ok(None) => {}
        Ok(Some(proof)) => return refuse(&gate, &req, &user, proof).await,
        Err(()) => return busy(),
    }
    let keys = match journal::ask(&gate.journal, FindPasskeys { user: user.clone() }).await {
        Ok(keys) => keys,
        Err(_) => return busy(),
    };
    let (origin, rp_id) = origin_of(&req);
    let want = Expected {
        challenge: &challenge,
        origin: &origin,
        rp_id: &rp_id,
    };
    let decoded = (
        unb64(&b.id),
        unb64(&b.client_data_json),
        unb64(&b.authenticator_data),
        unb64(&b.signature),
    );
    let (Some(id), Some(client), Some(data), Some(sig)) = decoded else {
        return refuse(&gate, &req, &user, Proof::BadCode).await;
    };
    let Some(key) = keys.iter().find(|k| k.credential_id == id) else {
        return refuse(&gate, &req, &user, Proof::BadCode).await;
    };
    let checked =
        webauthn::check_assertion(&data, &client, &sig, &key.public_key, key.sign_count, &want);
    let count = match checked {
        Ok(count) => count,
        Err(e) => {
            tracing::info!(error = %e, "passkey refused");
            return refuse(&gate, &req, &user, Proof::BadCode).await;
        }
    };
    let proof = Proof::PasskeyVerified { id: key.id, count };
    match finish(&gate, &req, &user, proof).await {
        Ok(Some((token, csrf, role))) => {
            tracing::info!(role = role.as_str(), "staff login with a passkey");
            let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Strict");
            HttpResponse::Ok()
                .insert_header((header::SET_COOKIE, cookie))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(json!({ "role": role, "csrf": csrf }))
        }
        Ok(None) => refusal(StatusCode::UNAUTHORIZED),
        Err(_) => busy(),
    }
}

fn staff(req: &HttpRequest) -> Option<Staff> {
    req.extensions().get::<Staff>().cloned()
}

/// `POST /passkeys/options` (logged in): a challenge to make a passkey for this account, with
/// its passkeys so that an authenticator does not make a second one.
async fn enrol_options(gate: web::Data<Gate>, req: HttpRequest) -> HttpResponse {
    let Some(s) = staff(&req) else {
        return refusal(StatusCode::UNAUTHORIZED);
    };
    let keys = match journal::ask(
        &gate.journal,
        FindPasskeys {
            user: s.user.clone(),
        },
    )
    .await
    {
        Ok(keys) => keys,
        Err(_) => return busy(),
    };
    let Some(c) = challenge(&s.user, For::Enrolment) else {
        return busy();
    };
    let (_, rp_id) = origin_of(&req);
    let exclude: Vec<String> = keys.iter().map(|k| b64(&k.credential_id)).collect();
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "challenge": b64(&c),
            "rp": { "id": rp_id, "name": "clinic-gateway" },
            "user": { "id": b64(s.user.as_bytes()), "name": s.user },
            "exclude": exclude,
        }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttestationBody {
    challenge: String,
    #[serde(rename = "clientDataJSON")]
    client_data_json: String,
    #[serde(rename = "attestationObject")]
    attestation_object: String,
}

/// `POST /passkeys` (logged in): the new passkey, checked and added to the account (audited).
async fn enrol(
    gate: web::Data<Gate>,
    req: HttpRequest,
    body: web::Json<AttestationBody>,
) -> HttpResponse {
    let Some(s) = staff(&req) else {
        return refusal(StatusCode::UNAUTHORIZED);
    };
    let b = body.into_inner();
    let challenge =
        unb64(&b.challenge).filter(|c| take(c, For::Enrolment).as_deref() == Some(s.user.as_str()));
    let decoded = (
        challenge,
        unb64(&b.client_data_json),
        unb64(&b.attestation_object),
    );
    let (Some(challenge), Some(client), Some(object)) = decoded else {
        return refusal(StatusCode::BAD_REQUEST);
    };
    let (origin, rp_id) = origin_of(&req);
    let want = Expected {
        challenge: &challenge,
        origin: &origin,
        rp_id: &rp_id,
    };
    let key = match webauthn::check_registration(&object, &client, &want) {
        Ok(key) => key,
        Err(e) => {
            tracing::info!(error = %e, "passkey not enrolled");
            return refusal(StatusCode::BAD_REQUEST);
        }
    };
    match journal::ask(&gate.journal, AddPasskey { user: s.user, key }).await {
        Ok(()) => HttpResponse::Created().json(json!({ "added": true })),
        Err(journal::JournalError::Rejected(_)) => refusal(StatusCode::BAD_REQUEST),
        Err(_) => busy(),
    }
}

async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .body(SCRIPT)
}

/// The browser's part: base64url between WebAuthn's buffers and the JSON, and the two buttons
/// (`#passkey-login` on the login form, `#passkey-add` on the page).
const SCRIPT: &str = r#""use strict";
const b64 = (b) => btoa(String.fromCharCode(...new Uint8Array(b))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const unb64 = (s) => Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
async function post(path, body, csrf) {
  const headers = { "content-type": "application/json" };
  if (csrf) headers["x-csrf-token"] = csrf;
  const r = await fetch(path, { method: "POST", headers, body: JSON.stringify(body), credentials: "same-origin" });
  if (!r.ok) throw new Error(String(r.status));
  return r.json();
}
function say(text) { document.getElementById("passkey-status").textContent = text; }
async function passkeyLogin() {
  const f = document.querySelector("form[action='/login']");
  try {
    const o = await post("/login/passkey/options", { name: f.elements.name.value });
    const c = await navigator.credentials.get({ publicKey: {
      challenge: unb64(o.challenge), rpId: o.rpId, userVerification: "required", timeout: 60000,
      allowCredentials: o.allowCredentials.map((id) => ({ type: "public-key", id: unb64(id) })) } });
    await post("/login/passkey", { password: f.elements.password.value, challenge: o.challenge, id: b64(c.rawId),
      clientDataJSON: b64(c.response.clientDataJSON), authenticatorData: b64(c.response.authenticatorData),
      signature: b64(c.response.signature) });
    location.href = "/";
  } catch (e) { say("Not logged in: the name, password or passkey was not accepted."); }
}
async function passkeyAdd() {
  const csrf = document.querySelector("input[name=csrf]").value;
  try {
    const o = await post("/passkeys/options", {}, csrf);
    const c = await navigator.credentials.create({ publicKey: {
      challenge: unb64(o.challenge), rp: o.rp, timeout: 60000, attestation: "none",
      user: { id: unb64(o.user.id), name: o.user.name, displayName: o.user.name },
      pubKeyCredParams: [{ type: "public-key", alg: -7 }],
      authenticatorSelection: { userVerification: "required", residentKey: "discouraged" },
      excludeCredentials: o.exclude.map((id) => ({ type: "public-key", id: unb64(id) })) } });
    await post("/passkeys", { challenge: o.challenge, clientDataJSON: b64(c.response.clientDataJSON),
      attestationObject: b64(c.response.attestationObject) }, csrf);
    say("Passkey added: log in with it in place of the code.");
  } catch (e) { say("No passkey added."); }
}
document.addEventListener("DOMContentLoaded", () => {
  const login = document.getElementById("passkey-login");
  if (login) login.addEventListener("click", passkeyLogin);
  const add = document.getElementById("passkey-add");
  if (add) add.addEventListener("click", passkeyAdd);
});
"#;
