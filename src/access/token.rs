//! The HTTP side of SMART Backend Services: the discovery document, the token endpoint
//! (client credentials with a `private_key_jwt` assertion) and the guard's check of the bearer
//! tokens it issues, for the routes the table gives to SMART clients only.
//!
//! Refusals follow RFC 6749 §5.2 at the token endpoint and FHIR's `OperationOutcome` on the
//! FHIR API; both say no more than the error code. The audit keeps the reason.

use super::oauth::{self, AssertionError};
use super::smart::Scopes;
use super::{CheckToken, FindClient, IssueToken, client_actor, peer};
use crate::journal::{self, AuditRecord, JournalWriter};
use actix::Addr;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

/// What the token endpoint needs: the journal holding clients and tokens, and how long a
/// token lasts (`[access] token_lifetime_secs`).
#[derive(Clone)]
pub struct Issuer {
    pub journal: Addr<JournalWriter>,
    pub lifetime_secs: u64,
}

/// Routes of this module, served when access is enabled.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/oauth/token", web::post().to(token))
        .route(
            "/.well-known/smart-configuration",
            web::get().to(smart_configuration),
        )
        .route(
            "/fhir/R4/.well-known/smart-configuration",
            web::get().to(smart_configuration),
        );
}

/// The scopes discovery offers: every resource type of the FHIR API (`fhir_api::RESOURCES`,
/// checked by its tests) for read and search.
pub const SCOPES_SUPPORTED: [&str; 7] = [
    "system/*.rs",
    "system/Encounter.rs",
    "system/Appointment.rs",
    "system/Patient.rs",
    "system/Flag.rs",
    "system/Task.rs",
    "system/AuditEvent.rs",
];

/// This gateway's address as the request reached it (the `Host` header was checked against
/// the allowed hosts already), without a trailing slash.
pub fn base_url(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}", info.scheme(), info.host())
}

/// The token endpoint's URL: the `aud` every assertion must carry.
pub fn token_url(req: &HttpRequest) -> String {
    format!("{}/oauth/token", base_url(req))
}

/// `GET /.well-known/smart-configuration` (SMART App Launch v2 §2.6): what a backend client
/// needs to obtain a token here, and nothing this gateway does not do.
async fn smart_configuration(req: HttpRequest) -> HttpResponse {
    let algorithms: Vec<&str> = oauth::ALGORITHMS.iter().map(|(_, name)| *name).collect();
    HttpResponse::Ok().json(json!({
        "token_endpoint": token_url(&req),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": algorithms,
        "scopes_supported": SCOPES_SUPPORTED,
        "capabilities": ["client-confidential-asymmetric"],
    }))
}

/// The token request's form (RFC 6749 §4.4.2, RFC 7523 §2.2). Unknown fields are ignored, as
/// RFC 6749 §3.2 requires.
#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    scope: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
}

/// An RFC 6749 §5.2 error answer.
fn oauth_error(status: StatusCode, error: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "error": error }))
}

/// Audits a refusal of the token endpoint or of a SMART route.
async fn audit(
    journal: &Addr<JournalWriter>,
    req: &HttpRequest,
    actor: &str,
    action: &str,
    reason: &str,
) {
    let detail = json!({
        "reason": reason,
        "method": req.method().as_str(),
        "path": req.path(),
        "peer": peer(req),
    });
    let record = AuditRecord {
        actor: actor.into(),
        action: action.into(),
        detail: detail.to_string(),
    };
    tracing::info!(reason, "SMART request refused");
    if let Err(e) = journal::ask(journal, record).await {
        tracing::warn!(error = %e, "refused request not audited");
    }
}

/// Why a token request is refused: the RFC 6749 §5.2 error, who the audit names (the client
/// only once its signature checked out) and the reason the audit keeps.
struct Refused {
    error: OauthError,
    actor: String,
    reason: &'static str,
}

/// The RFC 6749 §5.2 errors answered here.
#[derive(Debug, Clone, Copy)]
enum OauthError {
    InvalidRequest,
    UnsupportedGrantType,
    InvalidClient,
    InvalidScope,
    /// The journal did not answer.
    TemporarilyUnavailable,
}

impl OauthError {
    fn answer(self) -> HttpResponse {
        let (status, code) = match self {
            OauthError::InvalidRequest => (StatusCode::BAD_REQUEST, "invalid_request"),
            OauthError::UnsupportedGrantType => (StatusCode::BAD_REQUEST, "unsupported_grant_type"),
            OauthError::InvalidClient => (StatusCode::UNAUTHORIZED, "invalid_client"),
            OauthError::InvalidScope => (StatusCode::BAD_REQUEST, "invalid_scope"),
            OauthError::TemporarilyUnavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable")
            }
        };
        oauth_error(status, code)
    }
}

fn refused(error: OauthError, actor: &str, reason: &'static str) -> Refused {
    Refused {
        error,
        actor: actor.into(),
        reason,
    }
}

/// `POST /oauth/token`: a bearer token for a client whose signed assertion checks out, with
/// the requested scopes that its registration allows; any refusal audited.
async fn token(
    issuer: web::Data<Issuer>,
    req: HttpRequest,
    form: Result<web::Form<TokenForm>, Error>,
) -> HttpResponse {
    match issue(&issuer, &req, form.map(web::Form::into_inner)).await {
        Ok(answer) => answer,
        Err(r) => {
            if !matches!(r.error, OauthError::TemporarilyUnavailable) {
                let action = "access.token_refused";
                audit(&issuer.journal, &req, &r.actor, action, r.reason).await;
            }
            r.error.answer()
        }
    }
}

/// The checks of a token request, in an order that tells an unauthenticated caller nothing:
/// the form, the assertion's signature by the claimed client's key and its claims, then the
/// client's revocation, the scope and the assertion's single use.
async fn issue(
    issuer: &Issuer,
    req: &HttpRequest,
    form: Result<TokenForm, Error>,
) -> Result<HttpResponse, Refused> {
    use OauthError::*;
    let anonymous = "anonymous";
    let form = form.map_err(|_| refused(InvalidRequest, anonymous, "form"))?;
    if form.grant_type.as_deref() != Some("client_credentials") {
        return Err(refused(UnsupportedGrantType, anonymous, "grant_type"));
    }
    let assertion = match (&form.client_assertion_type, &form.client_assertion) {
        (Some(t), Some(a)) if t == oauth::ASSERTION_TYPE => a,
        _ => return Err(refused(InvalidRequest, anonymous, "assertion_missing")),
    };
    let name = oauth::claimed_client(assertion)
        .filter(|n| super::valid_name(n))
        .ok_or_else(|| refused(InvalidClient, anonymous, "assertion_malformed"))?;
    let unavailable = |e: journal::JournalError| {
        tracing::warn!(error = %e, "token request not answered");
        refused(TemporarilyUnavailable, anonymous, "journal")
    };
    let find = FindClient { name: name.clone() };
    let client = journal::ask(&issuer.journal, find)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| refused(InvalidClient, anonymous, "client_unknown"))?;
    let now = journal::now_ms();
    let who = client_actor(&name);
    let verified = oauth::verify(assertion, &name, &client.key, &token_url(req), now / 1000)
        .map_err(|e| match e {
            AssertionError::Expired => refused(InvalidClient, &who, "assertion_expired"),
            AssertionError::TooLong => refused(InvalidClient, &who, "assertion_too_long"),
            AssertionError::Claims => refused(InvalidClient, &who, "assertion_claims"),
            // Only a valid signature shows the request is the client's own.
            _ => refused(InvalidClient, anonymous, "assertion_forged"),
        })?;
    if client.revoked_at.is_some() {
        return Err(refused(InvalidClient, &who, "client_revoked"));
    }
    let granted = form
        .scope
        .as_deref()
        .and_then(Scopes::parse)
        .map(|asked| asked.grant(&client.scopes))
        .filter(|g| !g.is_empty())
        .ok_or_else(|| refused(InvalidScope, &who, "scope"))?;
    let text = oauth::new_token();
    let lifetime = issuer.lifetime_secs;
    let issue = IssueToken {
        client: name.clone(),
        jti: verified.jti,
        jti_expires_at: verified.exp.saturating_mul(1000),
        token_hash: oauth::token_hash(&text),
        scopes: granted.clone(),
        expires_at: now.saturating_add((lifetime * 1000) as i64),
        peer: peer(req),
    };
    if !journal::ask(&issuer.journal, issue)
        .await
        .map_err(unavailable)?
    {
        return Err(refused(InvalidClient, &who, "assertion_replayed"));
    }
    tracing::info!(client = %name, "SMART token issued");
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "access_token": text,
            "token_type": "bearer",
            "expires_in": lifetime,
            "scope": granted.to_string(),
        })))
}

/// A FHIR `OperationOutcome` answer with one issue.
pub fn outcome(status: StatusCode, code: &str, text: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/fhir+json")
        .json(outcome_body(code, text))
}

/// A FHIR `OperationOutcome` with one error issue of `code` (the R4 `IssueType`).
pub fn outcome_body(code: &str, text: &str) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": "error", "code": code, "diagnostics": text }],
    })
}

/// The guard of a SMART route: a valid bearer token issued here, whose client and scopes the
/// handler finds in the request's extensions; else 401 with an `OperationOutcome`, audited.
pub async fn guard(
    journal: &Addr<JournalWriter>,
    bearer: Option<String>,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let reason = match bearer {
        Some(text) if text.starts_with(oauth::TOKEN_PREFIX) => {
            let check = CheckToken {
                hash: oauth::token_hash(&text),
            };
            match journal::ask(journal, check).await {
                Ok(Some(client)) => {
                    req.extensions_mut().insert(client);
                    return next
                        .call(req)
                        .await
                        .map(ServiceResponse::map_into_boxed_body);
                }
                Ok(None) => "token_invalid",
                Err(e) => {
                    tracing::warn!(error = %e, "token not checked");
                    let answer = outcome(StatusCode::SERVICE_UNAVAILABLE, "transient", "try again");
                    return Ok(req.into_response(answer));
                }
            }
        }
        Some(_) => "token_malformed",
        None => "no_token",
    };
    audit(
        journal,
        req.request(),
        "anonymous",
        "access.refused",
        reason,
    )
    .await;
    let mut answer = outcome(
        StatusCode::UNAUTHORIZED,
        "login",
        "a valid bearer token is required",
    );
    answer.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    Ok(req.into_response(answer))
}
