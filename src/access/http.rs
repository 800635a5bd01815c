//! The HTTP side of access: the guard every request of the page and API passes (with a
//! session cookie or an API key), and the login, logout and session routes. Refusals say no
//! more than their status.

use super::config::AccessConfig;
use super::keys::{self, Verdict};
use super::mtls::PeerCertificate;
use super::{
    ApiClient, CheckSession, FindCredentials, FindKey, FinishLogin, Lockout, Logout, Proof, Staff,
    password, peer, policy, totp, valid_name,
};
use crate::journal::{self, AuditRecord, JournalWriter};
use actix::Addr;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

/// The session cookie's name.
pub const COOKIE: &str = "cg_session";
/// The header carrying the session's CSRF token on a state-changing request; a form carries
/// it as the field `csrf` instead.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What the guard and the login routes need: the journal holding accounts and sessions, and
/// the `[access]` settings.
#[derive(Clone)]
pub struct Gate {
    pub journal: Addr<JournalWriter>,
    pub config: AccessConfig,
}

impl Gate {
    /// The sessions' idle and absolute limits in ms.
    pub(super) fn limits(&self) -> (i64, i64) {
        let c = &self.config;
        let ms = |minutes: u64| minutes.saturating_mul(60_000).min(i64::MAX as u64) as i64;
        (
            ms(c.session_idle_minutes),
            ms(c.session_absolute_hours.saturating_mul(60)),
        )
    }
}

/// Routes of this module, served when access is enabled.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/login", web::get().to(login_page))
        .route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout))
        .route("/api/v1/session", web::get().to(session));
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

pub(super) fn cookie_value<'r>(cookies: &'r str, name: &str) -> Option<&'r str> {
    cookies
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The session token of a request's cookie.
fn session_token(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| cookie_value(c, COOKIE))
        .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
}

/// Audits a refused request, with the id of the key it carried if any; the answer waits for
/// the record to be committed.
async fn audit_refusal(
    gate: &Gate,
    req: &HttpRequest,
    actor: &str,
    reason: &str,
    key: Option<&str>,
) {
    if !super::throttle::refused(req).await {
        return;
    }
    let mut detail = json!({
        "reason": reason,
        "method": req.method().as_str(),
        "path": req.path(),
        "peer": peer(req),
    });
    if let Some(id) = key {
        detail["key"] = json!(id);
    }
    let record = AuditRecord {
        actor: actor.into(),
        action: "access.refused".into(),
        detail: detail.to_string(),
    };
    // The path stays out of the log: it may name a patient (`/api/v1/fhir/patients/{id}`).
    tracing::info!(reason, method = %req.method(), "request refused");
    if let Err(e) = journal::ask(&gate.journal, record).await {
        tracing::warn!(error = %e, "refused request not audited");
    }
}

pub(super) fn refusal(status: StatusCode) -> HttpResponse {
    let error = match status.as_u16() {
        401 => "login required",
        403 => "forbidden",
        _ => "bad request",
    };
    HttpResponse::build(status).json(json!({ "error": error }))
}

/// A request without a credential that counts: a browser opening the page (one that presented
/// a workstation's certificate bound to no key too) is sent on to the login form.
fn unauthorized(path: &str) -> HttpResponse {
    if path == "/" {
        return HttpResponse::Unauthorized()
            .content_type("text/html; charset=utf-8")
            .body(TO_LOGIN);
    }
    refusal(StatusCode::UNAUTHORIZED)
}

/// A route the role may not use: a browser navigating there gets a page it can show and leave,
/// anything else the JSON refusal.
fn forbidden(req: &HttpRequest) -> HttpResponse {
    let browser = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if !browser {
        return refusal(StatusCode::FORBIDDEN);
    }
    HttpResponse::Forbidden()
        .content_type("text/html; charset=utf-8")
        .body(FORBIDDEN_PAGE)
}

/// Whether a request's body is an HTML form.
fn is_form(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"))
}

/// The CSRF token of a form post, read from its body, which is then put back for the handler.
async fn form_token(req: &mut ServiceRequest) -> Result<Option<String>, Error> {
    if !is_form(req.request()) {
        return Ok(None);
    }
    let body = req.extract::<web::Bytes>().await?;
    let token = std::str::from_utf8(&body).ok().and_then(|text| {
        text.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "csrf")
            .map(|(_, v)| v.to_string())
    });
    req.set_payload(actix_web::dev::Payload::from(body));
    Ok(token)
}

/// Checks every request when access is enabled: the `Host` header, on a state-changing
/// request the `Origin`, then either the API key of an `Authorization: Bearer` header and its
/// scope, or without a session cookie the key bound to the connection's client certificate,
/// or the session and its role against the route table and, on a state-changing request, the
/// session's CSRF token. A refused request is audited and answered 400, 401 or
/// 403 without detail.
pub async fn guard(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let gate = match req.app_data::<web::Data<Gate>>() {
        Some(g) if g.config.enabled => g.clone(),
        _ => {
            return next
                .call(req)
                .await
                .map(ServiceResponse::map_into_boxed_body);
        }
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if !policy::host_allowed(&host, &gate.config.allowed_hosts) {
        audit_refusal(&gate, req.request(), "anonymous", "host", None).await;
        return Ok(req.into_response(refusal(StatusCode::BAD_REQUEST)));
    }
    let method = req.method().as_str().to_string();
    let changes = policy::changes_state(&method);
    if changes {
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        let cross_site = req
            .headers()
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|s| s == "cross-site" || s == "same-site");
        if cross_site || !policy::origin_allowed(origin, &host) {
            audit_refusal(&gate, req.request(), "anonymous", "origin", None).await;
            return Ok(req.into_response(refusal(StatusCode::FORBIDDEN)));
        }
    }
    let allowed = policy::allowed(&method, req.path());
    if allowed == policy::Allowed::Public {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    }
    if allowed == policy::Allowed::Smart {
        let token = bearer(req.request());
        return super::token::guard(&gate.journal, token, req, next).await;
    }
    if let Some(bearer) = bearer(req.request()) {
        return match check_key(&gate, req.request(), &bearer, allowed).await {
            // A key is sent on purpose by its client, never by a browser on its own as a
            // cookie is, so no CSRF token is needed.
            Ok(client) => {
                req.extensions_mut().insert(client);
                next.call(req)
                    .await
                    .map(ServiceResponse::map_into_boxed_body)
            }
            Err(answer) => Ok(req.into_response(answer)),
        };
    }
    let certificate = req.conn_data::<PeerCertificate>().cloned();
    if let Some(cert) = certificate.filter(|_| session_token(req.request()).is_none()) {
        let answer = match super::mtls::check(&gate.journal, &cert, allowed).await {
            // The certificate is presented by the client's TLS stack, never by a browser on
            // a page's behalf without the user choosing it, so no CSRF token is needed.
            Ok(Ok(client)) => {
                req.extensions_mut().insert(client);
                return next
                    .call(req)
                    .await
                    .map(ServiceResponse::map_into_boxed_body);
            }
            Ok(Err(no)) => {
                let key = no.key.as_deref();
                audit_refusal(&gate, req.request(), &no.actor, no.reason, key).await;
                if no.status == StatusCode::UNAUTHORIZED {
                    unauthorized(req.path())
                } else {
                    refusal(no.status)
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "certificate not checked");
                HttpResponse::ServiceUnavailable().json(json!({ "error": "try again" }))
            }
        };
        return Ok(req.into_response(answer));
    }
    let staff = match session_token(req.request()) {
        Some(token) => {
            let check = CheckSession {
                id_hash: digest(&token),
                limits: gate.limits(),
            };
            journal::ask(&gate.journal, check).await
        }
        None => Ok(None),
    };
    let staff = match staff {
        Ok(Some(s)) => s,
        Ok(None) => {
            audit_refusal(&gate, req.request(), "anonymous", "no_session", None).await;
            let answer = unauthorized(req.path());
            return Ok(req.into_response(answer));
        }
        Err(e) => {
            tracing::warn!(error = %e, "session not checked");
            return Ok(req.into_response(
                HttpResponse::ServiceUnavailable().json(json!({ "error": "try again" })),
            ));
        }
    };
    let who = super::actor(&staff.user);
    if !policy::permits(allowed, staff.role) {
        audit_refusal(&gate, req.request(), &who, "role", None).await;
        let answer = forbidden(req.request());
        return Ok(req.into_response(answer));
    }
    if changes {
        let header_token = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let token = match header_token {
            Some(t) => Some(t),
            None => form_token(&mut req).await?,
        };
        if !token.is_some_and(|t| keys::same(t.as_bytes(), staff.csrf.as_bytes())) {
            audit_refusal(&gate, req.request(), &who, "csrf", None).await;
            return Ok(req.into_response(refusal(StatusCode::FORBIDDEN)));
        }
    }
    req.extensions_mut().insert(staff);
    next.call(req)
        .await
        .map(ServiceResponse::map_into_boxed_body)
}

/// The token of an `Authorization: Bearer` header (the scheme's case aside, RFC 9110 §11.1).
fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// The client of a request's API key if the key is valid and its scope covers the route;
/// else the refusal, audited with the key's id.
async fn check_key(
    gate: &Gate,
    req: &HttpRequest,
    text: &str,
    allowed: policy::Allowed,
) -> Result<ApiClient, HttpResponse> {
    let unauthorized = || refusal(StatusCode::UNAUTHORIZED);
    let Some((id, secret)) = keys::parse(text) else {
        audit_refusal(gate, req, "anonymous", "key_malformed", None).await;
        return Err(unauthorized());
    };
    let find = FindKey { id: id.into() };
    let key = match journal::ask(&gate.journal, find).await {
        Ok(Some(key)) => key,
        Ok(None) => {
            audit_refusal(gate, req, "anonymous", "key_unknown", Some(id)).await;
            return Err(unauthorized());
        }
        Err(e) => {
            tracing::warn!(error = %e, "key not checked");
            return Err(HttpResponse::ServiceUnavailable().json(json!({ "error": "try again" })));
        }
    };
    let who = super::key_actor(&key.name);
    let presented = req
        .conn_data::<PeerCertificate>()
        .map(|c| c.fingerprint.as_str());
    let reason = match key.judge(secret, presented, journal::now_ms()) {
        // Whoever sent a wrong secret is not the key's client: the record does not name it.
        Verdict::Forged => {
            audit_refusal(gate, req, "anonymous", "key_forged", Some(id)).await;
            return Err(unauthorized());
        }
        // Nor is whoever holds a bound key's secret without its certificate.
        Verdict::WrongCertificate => {
            audit_refusal(gate, req, "anonymous", "key_certificate", Some(id)).await;
            return Err(unauthorized());
        }
        Verdict::Revoked => "key_revoked",
        Verdict::Expired => "key_expired",
        Verdict::Valid if key.scope.permits(allowed) => {
            return Ok(ApiClient { name: key.name });
        }
        Verdict::Valid => {
            audit_refusal(gate, req, &who, "key_scope", Some(id)).await;
            return Err(refusal(StatusCode::FORBIDDEN));
        }
    };
    audit_refusal(gate, req, &who, reason, Some(id)).await;
    Err(unauthorized())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    name: String,
    password: String,
    /// The TOTP code.
    code: String,
}

/// Checks the password and code off the async executor: argon2 is meant to be slow.
async fn prove(body: &LoginBody, found: Option<super::Credentials>, now_ms: i64) -> Proof {
    let Some(creds) = found.filter(|c| c.enabled) else {
        let pw = body.password.clone();
        let _ = web::block(move || password::verify_decoy(&pw)).await;
        return Proof::NoAccount;
    };
    if creds.locked_until.is_some_and(|t| t > now_ms) {
        return Proof::Locked;
    }
    let (pw, code) = (body.password.clone(), body.code.clone());
    let checked = web::block(move || {
        if !password::verify(&pw, &creds.password_hash) {
            return Proof::BadPassword;
        }
        let secs = (now_ms / 1000).max(0) as u64;
        match totp::check(&creds.totp_secret, &code, secs) {
            Some(step) => Proof::Verified { step },
            None => Proof::BadCode,
        }
    })
    .await;
    checked.unwrap_or(Proof::BadPassword)
}

/// `POST /login` with `name`, `password` and `code` (JSON or a form): sets the session cookie
/// and answers the role and the CSRF token; any refusal is the same 401.
async fn login(
    gate: web::Data<Gate>,
    req: HttpRequest,
    body: web::Either<web::Json<LoginBody>, web::Form<LoginBody>>,
) -> HttpResponse {
    let (body, form) = match body {
        web::Either::Left(j) => (j.into_inner(), false),
        web::Either::Right(f) => (f.into_inner(), true),
    };
    let found = if valid_name(&body.name) {
        let find = FindCredentials {
            name: body.name.clone(),
        };
        match journal::ask(&gate.journal, find).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "login not checked");
                return HttpResponse::ServiceUnavailable().json(json!({ "error": "try again" }));
            }
        }
    } else {
        None
    };
    let proof = prove(&body, found, journal::now_ms()).await;
    let (token, csrf) = new_session_tokens();
    let c = &gate.config;
    let finish = FinishLogin {
        name: body.name,
        proof,
        lockout: Lockout {
            after: c.lockout_after,
            initial_secs: c.lockout_initial_secs,
            max_secs: c.lockout_max_secs,
        },
        limits: gate.limits(),
        id_hash: digest(&token),
        csrf: csrf.clone(),
        peer: peer(&req),
    };
    match journal::ask(&gate.journal, finish).await {
        Ok(Some(role)) => {
            tracing::info!(role = role.as_str(), "staff login");
            let cookie = session_cookie(&token);
            let mut answer = if form {
                let mut r = HttpResponse::SeeOther();
                r.insert_header((header::LOCATION, "/"));
                r
            } else {
                HttpResponse::Ok()
            };
            answer
                .insert_header((header::SET_COOKIE, cookie))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(json!({ "role": role, "csrf": csrf }))
        }
        Ok(None) => {
            tracing::info!("login refused");
            if form {
                // The form again, saying no more than the JSON answer would.
                return HttpResponse::Unauthorized()
                    .content_type("text/html; charset=utf-8")
                    .body(login_html(&gate, LOGIN_REFUSED));
            }
            refusal(StatusCode::UNAUTHORIZED)
        }
        Err(e) => {
            tracing::warn!(error = %e, "login not recorded");
            HttpResponse::ServiceUnavailable().json(json!({ "error": "try again" }))
        }
    }
}

/// A new session's token, for its cookie, and its CSRF token.
pub(super) fn new_session_tokens() -> (String, String) {
    (
        hex(&rand::random::<[u8; 32]>()),
        hex(&rand::random::<[u8; 32]>()),
    )
}

/// The `Set-Cookie` value of a new session.
pub(super) fn session_cookie(token: &str) -> String {
    format!("{COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Strict")
}

/// `POST /logout`: ends the session and clears the cookie; the page's form is sent back to
/// the login form.
async fn logout(gate: web::Data<Gate>, req: HttpRequest) -> HttpResponse {
    if let Some(token) = session_token(&req) {
        let out = Logout {
            id_hash: digest(&token),
        };
        if let Err(e) = journal::ask(&gate.journal, out).await {
            tracing::warn!(error = %e, "logout not recorded");
            return HttpResponse::ServiceUnavailable().json(json!({ "error": "try again" }));
        }
    }
    let expired = format!("{COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0");
    let mut answer = if is_form(&req) {
        let mut r = HttpResponse::SeeOther();
        r.insert_header((header::LOCATION, "/login"));
        r
    } else {
        HttpResponse::Ok()
    };
    answer
        .insert_header((header::SET_COOKIE, expired))
        .json(json!({ "logged_out": true }))
}

/// `GET /api/v1/session`: who is logged in, with the CSRF token the page sends back.
async fn session(req: HttpRequest) -> HttpResponse {
    match req.extensions().get::<Staff>() {
        Some(s) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(json!({ "user": s.user, "role": s.role, "csrf": s.csrf })),
        None => refusal(StatusCode::UNAUTHORIZED),
    }
}

const TO_LOGIN: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url=/login">
<title>clinic-gateway: log in</title></head><body><p><a href="/login">Log in</a></p></body></html>
"#;

const LOGIN_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>clinic-gateway: log in</title></head>
<body><h1>clinic-gateway</h1>
{message}<!--sso--><form method="post" action="/login">
<p><label>Name <input name="name" autocomplete="username" required></label></p>
<p><label>Password <input name="password" type="password" autocomplete="current-password" required></label></p>
<p><label>Code from your authenticator <input name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}" required></label></p>
<p><button type="submit">Log in</button> <button type="button" id="passkey-login">Log in with a passkey</button></p>
</form><p id="passkey-status" role="status"></p><script src="/passkey.js"></script></body></html>
"#;

/// The login page's link to single sign-on, named after the provider.
fn sso_button(name: &str) -> String {
    let name = crate::markup::escape(name);
    format!("<p><a href=\"/login/oidc\">Sign in with {name}</a></p>\n")
}

const LOGIN_REFUSED: &str =
    r#"<p role="alert">Not logged in: the name, password or code was not accepted.</p>"#;

const FORBIDDEN_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>clinic-gateway: not for your role</title></head>
<body><h1>Not for your role</h1><p>Your role may not open this page. The attempt was recorded.</p>
<p><a href="/">Back to the status page</a></p></body></html>
"#;

/// The login form with `message` above it and the single sign-on link if there is one.
fn login_html(gate: &Gate, message: &str) -> String {
    let sso = gate.config.oidc.as_ref().map(|o| sso_button(&o.name));
    LOGIN_PAGE
        .replace("{message}", message)
        .replace("<!--sso-->", &sso.unwrap_or_default())
}

async fn login_page(gate: web::Data<Gate>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(login_html(&gate, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let c = "a=1; cg_session=abc; b=2";
        assert_eq!(cookie_value(c, COOKIE), Some("abc"));
        assert_eq!(cookie_value("cg_sessionx=1", COOKIE), None);
    }

    #[test]
    fn the_bearer_token_is_read_whatever_the_schemes_case() {
        let check = |value: &str| {
            let req = actix_web::test::TestRequest::default()
                .insert_header((header::AUTHORIZATION, value))
                .to_http_request();
            bearer(&req)
        };
        assert_eq!(check("Bearer cgk_1_2").as_deref(), Some("cgk_1_2"));
        assert_eq!(check("bearer  cgk_1_2 ").as_deref(), Some("cgk_1_2"));
        assert_eq!(check("Basic dXNlcjpwdw=="), None);
        assert_eq!(check("Bearer"), None);
    }
}
