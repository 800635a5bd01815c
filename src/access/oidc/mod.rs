//! Single sign-on with the clinic's OpenID provider (`[access.oidc]`): the authorization code
//! flow with PKCE, `state` and `nonce`; `GET /login/oidc` sends the browser to the provider,
//! `GET /login/oidc/callback` takes it back, exchanges the code, verifies the ID token and opens
//! the same session a local login opens, with the role the provider's claim maps to.
//!
//! Sign-ins under way (state, nonce, PKCE verifier) are kept here in memory for ten minutes
//! and used once; a restart drops them, and whoever was signing in starts again. The
//! provider's discovery document and keys are read at each sign-in, so a key rotation needs
//! nothing here.
//!
//! **Invariant:** a provider that cannot be reached never blocks the local login; its outage
//! and every refused sign-in are audited, and the browser is told no more than that.

pub mod config;
pub mod protocol;

use self::config::{CALLBACK_PATH, OidcConfig};
use self::protocol::{Discovery, Expected, Identity, Refusal};
use super::http::{self as access_http, Gate};
use crate::journal::{self, AuditRecord, JournalError, Tx, Work};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The cookie tying a sign-in to the browser that started it, so that a code obtained by
/// someone else cannot be finished in a staff member's browser (login CSRF).
const BROWSER_COOKIE: &str = "cg_oidc";
/// How long a sign-in may take at the provider.
const PENDING_FOR: Duration = Duration::from_secs(600);
/// Most sign-ins kept under way; past it the oldest is dropped.
const MAX_PENDING: usize = 1000;

/// Why a sign-in could not be finished.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider did not answer, or failed (a timeout, a refused connection, a 5xx).
    #[error("the provider is unreachable: {0}")]
    Unreachable(String),
    /// The provider answered something this client cannot use.
    #[error("the provider's answer is unusable: {0}")]
    Unusable(String),
    /// The client secret or key cannot be read or used.
    #[error("the client's credentials: {0}")]
    Credentials(String),
    /// The sign-in itself was refused; `subject` once the ID token named one.
    #[error("{refusal}")]
    Refused {
        refusal: Refusal,
        subject: Option<String>,
    },
}

impl From<Refusal> for OidcError {
    fn from(refusal: Refusal) -> Self {
        OidcError::Refused {
            refusal,
            subject: None,
        }
    }
}

impl OidcError {
    /// The audit's word for an outage.
    fn outage(&self) -> &'static str {
        match self {
            OidcError::Unreachable(_) => "unreachable",
            OidcError::Unusable(_) => "unusable",
            OidcError::Credentials(_) => "client_credentials",
            OidcError::Refused { .. } => "refused",
        }
    }
}

/// A sign-in under way, found again by its state.
struct Pending {
    /// SHA-256 of the browser cookie of whoever started it.
    browser: Vec<u8>,
    nonce: String,
    verifier: String,
    /// The endpoints the discovery named when it started.
    token_endpoint: String,
    jwks_uri: String,
    started: Instant,
}

/// The provider's client: its settings, an HTTP client and the sign-ins under way.
pub struct Sso {
    config: OidcConfig,
    http: reqwest::Client,
    pending: Mutex<HashMap<String, Pending>>,
}

/// reqwest's Display hides the cause (e.g. "connection refused"); the chain names it.
fn chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// The redirect's parameters (RFC 6749 §4.1.2; `iss`, RFC 9207).
#[derive(Debug, Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    iss: Option<String>,
}

impl Sso {
    /// The client for `config`, whose files are resolved already.
    pub fn new(config: &OidcConfig) -> Result<Sso, OidcError> {
        // reqwest is built without a default crypto provider: ring is the project's provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let timeout = Duration::from_millis(config.request_timeout_ms);
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("clinic-gateway/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.ca_file {
            let bad = |e: &dyn std::fmt::Display| {
                OidcError::Unusable(format!("access.oidc.ca_file {}: {e}", path.display()))
            };
            let pem = std::fs::read(path).map_err(|e| bad(&e))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(&e))?;
            builder = builder.tls_certs_only(certs);
        }
        let sso = Sso {
            config: config.clone(),
            http: builder
                .build()
                .map_err(|e| OidcError::Unusable(chain(&e)))?,
            pending: Mutex::new(HashMap::new()),
        };
        // A key the gateway cannot sign with is a configuration problem: named at start-up.
        sso.credentials("https://token.invalid")?;
        Ok(sso)
    }

    /// The client's credentials for a token request to `token_endpoint`, read from their
    /// file now, so that a replaced file is used without a restart.
    fn credentials(&self, token_endpoint: &str) -> Result<protocol::Credentials, OidcError> {
        let c = &self.config;
        if let Some(path) = &c.client_secret_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| OidcError::Credentials(format!("{}: {e}", path.display())))?;
            return Ok(protocol::Credentials::Secret(text.trim().to_string()));
        }
        let Some(path) = &c.client_key_file else {
            return Ok(protocol::Credentials::Public);
        };
        let bad = |m: String| OidcError::Credentials(format!("{}: {m}", path.display()));
        let der = crate::pem::private_key(path).map_err(|e| bad(e.to_string()))?;
        let (alg, key) = protocol::assertion_key(&der).map_err(bad)?;
        let now = jsonwebtoken::get_current_timestamp();
        let signer = (alg, &key, c.client_key_id.as_deref());
        let jti = protocol::random_token();
        protocol::client_assertion(&c.client_id, token_endpoint, signer, now, &jti)
            .map(protocol::Credentials::Assertion)
            .map_err(bad)
    }

    /// Sends a request to the provider; the body of a 2xx answer, or of a 4xx one as
    /// `Err(Ok(body))`.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<Result<Vec<u8>, Vec<u8>>, OidcError> {
        let answer = request
            .send()
            .await
            .map_err(|e| OidcError::Unreachable(chain(&e)))?;
        let status = answer.status();
        if status.is_server_error() {
            return Err(OidcError::Unreachable(format!("HTTP {status}")));
        }
        let body = answer
            .bytes()
            .await
            .map_err(|e| OidcError::Unreachable(chain(&e)))?
            .to_vec();
        match status.as_u16() {
            200..=299 => Ok(Ok(body)),
            400..=499 => Ok(Err(body)),
            _ => Err(OidcError::Unusable(format!("HTTP {status}"))),
        }
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, OidcError> {
        self.send(self.http.get(url))
            .await?
            .map_err(|_| OidcError::Unusable(format!("{url} was refused")))
    }

    /// The provider's discovery document, checked.
    async fn discover(&self) -> Result<Discovery, OidcError> {
        let issuer = &self.config.issuer;
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let body = self.get(&url).await?;
        Discovery::parse(&body, issuer).map_err(OidcError::Unusable)
    }

    /// Records a sign-in for the browser holding `browser` and answers the provider's URL
    /// to send it to.
    fn begin(&self, d: &Discovery, browser: &str) -> Result<url::Url, OidcError> {
        let (state, nonce, verifier) = (
            protocol::random_token(),
            protocol::random_token(),
            protocol::random_token(),
        );
        let url = protocol::authorization_url(d, &self.config, &state, &nonce, &verifier)
            .map_err(OidcError::Unusable)?;
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|_, p| p.started.elapsed() < PENDING_FOR);
        if pending.len() >= MAX_PENDING {
            let oldest = pending
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(s, _)| s.clone());
            if let Some(s) = oldest {
                pending.remove(&s);
            }
        }
        pending.insert(
            state,
            Pending {
                browser: access_http::digest(browser),
                nonce,
                verifier,
                token_endpoint: d.token_endpoint.clone(),
                jwks_uri: d.jwks_uri.clone(),
                started: Instant::now(),
            },
        );
        Ok(url)
    }

    /// The sign-in `state` names, taken out so that it is used once, if the browser that
    /// started it is the one back and it is not too old.
    fn take(&self, state: Option<&str>, browser: Option<&str>) -> Result<Pending, Refusal> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let p = state
            .and_then(|s| pending.remove(s))
            .ok_or(Refusal::State)?;
        let same_browser =
            browser.is_some_and(|b| super::keys::same(&access_http::digest(b), &p.browser));
        if !same_browser {
            return Err(Refusal::Browser);
        }
        if p.started.elapsed() >= PENDING_FOR {
            return Err(Refusal::Expired);
        }
        Ok(p)
    }

    /// Exchanges the code for an ID token, verifies it and maps its role.
    async fn finish(&self, p: Pending, back: &Callback) -> Result<Identity, OidcError> {
        let c = &self.config;
        if let Some(error) = &back.error {
            return Err(Refusal::Provider(protocol::tidy(error)).into());
        }
        // RFC 9207: a provider that names itself must name the one this sign-in went to.
        if back.iss.as_deref().is_some_and(|iss| iss != c.issuer) {
            return Err(Refusal::Issuer.into());
        }
        let code = back.code.as_deref().ok_or(Refusal::Malformed)?;
        let credentials = self.credentials(&p.token_endpoint)?;
        let form = protocol::token_form(c, code, &p.verifier, &credentials);
        let mut request = self.http.post(&p.token_endpoint).form(&form);
        if let protocol::Credentials::Secret(secret) = &credentials {
            let value = protocol::basic_authorization(&c.client_id, secret);
            request = request.header(header::AUTHORIZATION.as_str(), value);
        }
        let body = match self.send(request).await? {
            Ok(body) => body,
            Err(refused) => {
                return Err(Refusal::Exchange(protocol::token_error(&refused)).into());
            }
        };
        let answer: protocol::TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| OidcError::Unusable(format!("token answer: {e}")))?;
        let keys: Value = serde_json::from_slice(&self.get(&p.jwks_uri).await?)
            .map_err(|e| OidcError::Unusable(format!("key set: {e}")))?;
        let expected = Expected {
            issuer: &c.issuer,
            client_id: &c.client_id,
            nonce: &p.nonce,
        };
        let claims = protocol::verify_id_token(&answer.id_token, &keys, expected)?;
        let subject = claims.subject.clone();
        protocol::identity(claims, c).map_err(|refusal| OidcError::Refused {
            refusal,
            subject: Some(subject),
        })
    }
}

/// The session's user name of a provider's subject: never a local account's, which has no
/// colon.
fn user_name(subject: &str) -> String {
    format!("oidc:{subject}")
}

/// Opens the session `id_hash` of a verified sign-in, audited as `access.login` via oidc.
#[derive(Debug)]
pub struct OpenSso {
    pub identity: Identity,
    /// The sessions' idle and absolute limits (ms).
    pub limits: (i64, i64),
    pub id_hash: Vec<u8>,
    pub csrf: String,
    pub peer: String,
}

crate::journal_work!(OpenSso);

impl Work for OpenSso {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<(), JournalError> {
        let now = tx.now();
        let i = &self.identity;
        let user = user_name(&i.subject);
        let (id, csrf) = (&self.id_hash, &self.csrf);
        super::store::open_sso_session(tx, id, (&user, i.role), csrf, self.limits, now)?;
        let detail = json!({
            "via": "oidc",
            "subject": i.subject,
            "username": i.username,
            "role": i.role,
            "amr": i.amr,
            "peer": self.peer,
        });
        tx.audit(
            &super::actor(&user),
            "access.login",
            &detail.to_string(),
            now,
        )
    }
}

/// Routes of single sign-on, served with the [`Sso`] as app data when `[access.oidc]` is
/// configured.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/login/oidc", web::get().to(start))
        .route(CALLBACK_PATH, web::get().to(callback));
}

fn browser_token(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| access_http::cookie_value(c, BROWSER_COOKIE))
        .filter(|t| {
            t.len() == 43
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_string)
}

async fn audit(gate: &Gate, actor: String, action: &str, detail: Value) {
    let record = AuditRecord {
        actor,
        action: action.into(),
        detail: detail.to_string(),
    };
    if let Err(e) = journal::ask(&gate.journal, record).await {
        tracing::warn!(error = %e, action, "single sign-on not audited");
    }
}

fn html(status: actix_web::http::StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

fn page(title: &str, text: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>clinic-gateway: {title}</title></head>\n<body><h1>clinic-gateway</h1><p>{text}</p><p><a href=\"/login\">Back to the login page</a></p></body></html>\n"
    )
}

/// The answer when the provider cannot be used: local accounts still can. Audited.
async fn unavailable(gate: &Gate, req: &HttpRequest, e: &OidcError) -> HttpResponse {
    tracing::warn!(error = %e, "single sign-on unavailable");
    let detail = json!({ "reason": e.outage(), "peer": crate::access::peer(req) });
    audit(gate, "anonymous".into(), "access.sso_unavailable", detail).await;
    html(
        actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
        page(
            "sign-in service unreachable",
            "The sign-in service is unreachable. Use your local account.",
        ),
    )
}

/// `GET /login/oidc`: sends the browser to the provider.
async fn start(gate: web::Data<Gate>, sso: web::Data<Sso>, req: HttpRequest) -> HttpResponse {
    let browser = browser_token(&req).unwrap_or_else(protocol::random_token);
    let begun = match sso.discover().await {
        Ok(d) => sso.begin(&d, &browser),
        Err(e) => Err(e),
    };
    match begun {
        Ok(url) => {
            // Lax, not Strict: the browser comes back from the provider's site, and a Strict
            // cookie would stay behind on that cross-site navigation.
            let cookie = format!(
                "{BROWSER_COOKIE}={browser}; Path=/login/oidc; HttpOnly; Secure; SameSite=Lax; Max-Age={}",
                PENDING_FOR.as_secs()
            );
            HttpResponse::SeeOther()
                .insert_header((header::LOCATION, url.as_str()))
                .insert_header((header::SET_COOKIE, cookie))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish()
        }
        Err(e) => unavailable(&gate, &req, &e).await,
    }
}

/// `GET /login/oidc/callback`: finishes the sign-in and opens the session.
async fn callback(
    gate: web::Data<Gate>,
    sso: web::Data<Sso>,
    req: HttpRequest,
    back: web::Query<Callback>,
) -> HttpResponse {
    let browser = browser_token(&req);
    let outcome = match sso.take(back.state.as_deref(), browser.as_deref()) {
        Ok(p) => sso.finish(p, &back).await,
        Err(r) => Err(r.into()),
    };
    let peer = crate::access::peer(&req);
    let identity = match outcome {
        Ok(identity) => identity,
        Err(OidcError::Refused { refusal, subject }) => {
            let reason = refusal.reason();
            tracing::info!(reason, "single sign-on refused");
            let mut detail = json!({ "via": "oidc", "reason": reason, "peer": peer });
            match &refusal {
                Refusal::Provider(code) | Refusal::Exchange(code) => detail["error"] = json!(code),
                _ => {}
            }
            let actor = match &subject {
                Some(s) => {
                    detail["subject"] = json!(s);
                    super::actor(&user_name(s))
                }
                None => "anonymous".into(),
            };
            audit(&gate, actor, "access.login_refused", detail).await;
            return html(
                actix_web::http::StatusCode::UNAUTHORIZED,
                page("sign-in refused", "Sign-in refused."),
            );
        }
        Err(e) => return unavailable(&gate, &req, &e).await,
    };
    let (token, csrf) = access_http::new_session_tokens();
    let role = identity.role;
    let open = OpenSso {
        identity,
        limits: gate.limits(),
        id_hash: access_http::digest(&token),
        csrf,
        peer,
    };
    if let Err(e) = journal::ask(&gate.journal, open).await {
        tracing::warn!(error = %e, "single sign-on not recorded");
        return HttpResponse::ServiceUnavailable().json(json!({ "error": "try again" }));
    }
    tracing::info!(role = role.as_str(), "staff login via single sign-on");
    let done =
        format!("{BROWSER_COOKIE}=; Path=/login/oidc; HttpOnly; Secure; SameSite=Lax; Max-Age=0");
    // A page, not a redirect: this navigation began at the provider's site, and a browser
    // keeps a redirect in that cross-site chain, where the Strict session cookie is not sent.
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .append_header((header::SET_COOKIE, access_http::session_cookie(&token)))
        .append_header((header::SET_COOKIE, done))
        .body(SIGNED_IN)
}

const SIGNED_IN: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url=/">
<title>clinic-gateway: signed in</title></head><body><p><a href="/">Continue</a></p></body></html>
"#;
