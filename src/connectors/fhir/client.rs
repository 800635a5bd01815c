//! The HTTP side of the FHIR connector: requests to the EHR's REST API with the configured
//! credentials (none, a bearer token, or an OAuth 2.0 client-credentials token renewed before it
//! expires) and errors that say whether trying again can help.

use super::config::{Auth, FhirConfig};
use super::model::{Appointment, Patient};
use super::protocol::{self, DecodeError};
use reqwest::StatusCode;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a request to the EHR failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FhirError {
    /// No answer: connection refused, DNS, TLS, timeout.
    #[error("cannot reach the EHR: {0}")]
    Unreachable(String),
    /// The credentials cannot be read or were refused; retrying without new ones cannot help.
    #[error("credentials refused or unusable: {0}")]
    Credentials(String),
    /// An `If-Match` update found another version on the server (412).
    #[error("the EHR holds another version of the resource (412 Precondition Failed)")]
    VersionChanged,
    #[error("the EHR answered {status}: {detail}")]
    Status { status: u16, detail: String },
    #[error("the EHR's answer is unusable: {0}")]
    Decode(#[from] DecodeError),
}

impl FhirError {
    /// True when the same request may succeed later (the outbox row stays and is retried).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable(_) | Self::Credentials(_) => true,
            Self::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            Self::VersionChanged | Self::Decode(_) => false,
        }
    }
}

/// A token and when to renew it.
struct Token {
    value: String,
    renew_at: Instant,
}

/// Told of every resource from the EHR refused as unusable (e.g. not conforming to R4), so
/// that the reason is recorded; the refused resource is not applied at all.
pub type Refusals = Box<dyn Fn(&DecodeError) + Send + Sync>;

/// A FHIR server to talk to: its base URL, credentials and bounds.
pub struct Endpoint<'a> {
    /// The config table it comes from, naming it in errors (`connectors.fhir`).
    pub key: &'static str,
    pub base_url: &'a str,
    pub auth: &'a Auth,
    pub ca_file: Option<&'a std::path::Path>,
    pub request_timeout_ms: u64,
    pub connect_timeout_ms: u64,
}

pub struct Client {
    http: reqwest::Client,
    refusals: Refusals,
    base: String,
    auth: Auth,
    /// Files of the auth table, resolved against the config file's folder.
    secret_file: Option<PathBuf>,
    token: Mutex<Option<Token>>,
}

fn unreachable(e: reqwest::Error) -> FhirError {
    // reqwest's Display hides the cause (e.g. "connection refused"); the chain names it.
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    FhirError::Unreachable(text)
}

fn read_secret(path: &PathBuf, what: &str) -> Result<String, FhirError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        FhirError::Credentials(format!("cannot read {what} {}: {e}", path.display()))
    })?;
    let text = text.trim().to_string();
    if text.is_empty() {
        return Err(FhirError::Credentials(format!(
            "{what} {} is empty",
            path.display()
        )));
    }
    Ok(text)
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Client {
    /// `config`'s file paths must be resolved already ([`FhirConfig::resolved`]).
    pub fn new(config: &FhirConfig, refusals: Refusals) -> Result<Client, FhirError> {
        Client::to(
            &Endpoint {
                key: "connectors.fhir",
                base_url: &config.base_url,
                auth: &config.auth,
                ca_file: config.ca_file.as_deref(),
                request_timeout_ms: config.request_timeout_ms,
                connect_timeout_ms: config.connect_timeout_ms,
            },
            refusals,
        )
    }

    /// A client of another FHIR server than the EHR's (a PMS's), its file paths resolved.
    pub fn to(e: &Endpoint<'_>, refusals: Refusals) -> Result<Client, FhirError> {
        // reqwest is built without a default crypto provider: ring is the project's provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_millis(e.request_timeout_ms))
            .connect_timeout(Duration::from_millis(e.connect_timeout_ms))
            .user_agent(concat!("clinic-gateway/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = e.ca_file {
            let unusable = |why: String| {
                FhirError::Unreachable(format!("{}.ca_file {}: {why}", e.key, path.display()))
            };
            let pem = std::fs::read(path).map_err(|why| unusable(why.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|why| unusable(why.to_string()))?;
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().map_err(unreachable)?;
        let secret_file = match e.auth {
            Auth::None => None,
            Auth::Bearer { token_file } => Some(token_file.clone()),
            Auth::ClientCredentials {
                client_secret_file, ..
            } => Some(client_secret_file.clone()),
        };
        Ok(Client {
            http,
            refusals,
            base: e.base_url.trim_end_matches('/').to_string(),
            auth: e.auth.clone(),
            secret_file,
            token: Mutex::new(None),
        })
    }

    /// The `Authorization` value for the next request, fetching a new token when due.
    async fn authorization(&self) -> Result<Option<String>, FhirError> {
        let Some(file) = &self.secret_file else {
            return Ok(None);
        };
        let Auth::ClientCredentials {
            token_url,
            client_id,
            scope,
            refresh_margin_s,
            ..
        } = &self.auth
        else {
            return read_secret(file, "token file").map(|t| Some(format!("Bearer {t}")));
        };
        if let Some(t) = self
            .token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            && Instant::now() < t.renew_at
        {
            return Ok(Some(format!("Bearer {}", t.value)));
        }
        let secret = read_secret(file, "client secret file")?;
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(s) = scope {
            form.push(("scope", s.as_str()));
        }
        let answer = self
            .http
            .post(token_url)
            .basic_auth(client_id, Some(secret))
            .form(&form)
            .send()
            .await
            .map_err(unreachable)?;
        let status = answer.status();
        let body = answer.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            let why = String::from_utf8_lossy(&body[..body.len().min(200)]).to_string();
            let e = format!("token endpoint answered {status}: {why}");
            return Err(if status.is_server_error() {
                FhirError::Unreachable(e)
            } else {
                FhirError::Credentials(e)
            });
        }
        let t: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| FhirError::Credentials(format!("token answer unusable: {e}")))?;
        let lifetime = Duration::from_secs(t.expires_in.unwrap_or(300));
        let renew_at =
            Instant::now() + lifetime.saturating_sub(Duration::from_secs(*refresh_margin_s));
        tracing::info!(
            expires_in_s = lifetime.as_secs(),
            "FHIR access token obtained"
        );
        let header = format!("Bearer {}", t.access_token);
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(Token {
            value: t.access_token,
            renew_at,
        });
        Ok(Some(header))
    }

    /// Sends a request built by `build`, with credentials. A 401 with an OAuth token drops the
    /// token and tries once more with a fresh one (the EHR may have revoked it early).
    async fn send(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<(StatusCode, Vec<u8>), FhirError> {
        for attempt in 0..2 {
            let mut request = build().header("Accept", "application/fhir+json");
            if let Some(auth) = self.authorization().await? {
                request = request.header("Authorization", auth);
            }
            let answer = request.send().await.map_err(unreachable)?;
            let status = answer.status();
            let body = answer.bytes().await.map_err(unreachable)?.to_vec();
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                let oauth = matches!(self.auth, Auth::ClientCredentials { .. });
                if oauth && attempt == 0 {
                    *self.token.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    continue;
                }
                return Err(FhirError::Credentials(format!("the EHR answered {status}")));
            }
            return Ok((status, body));
        }
        Err(FhirError::Credentials(
            "the EHR refused a freshly issued token".into(),
        ))
    }

    /// Records a refused answer and hands the error on.
    fn refuse(&self, e: DecodeError) -> FhirError {
        (self.refusals)(&e);
        FhirError::Decode(e)
    }

    /// Whether a resource read from the EHR conforms to R4; one that does not is recorded.
    pub fn conforms(&self, v: &serde_json::Value) -> bool {
        protocol::conform(v).map_err(|e| self.refuse(e)).is_ok()
    }

    /// Patients of a search page; the refused ones are recorded.
    fn usable_patients(&self, entries: Vec<serde_json::Value>) -> Vec<Patient> {
        let (found, refused) = protocol::patients(entries);
        for e in &refused {
            (self.refusals)(e);
        }
        found
    }

    fn refused(status: StatusCode, body: &[u8]) -> FhirError {
        FhirError::Status {
            status: status.as_u16(),
            detail: protocol::outcome_summary(body)
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_string()),
        }
    }

    /// One page of `Patient?<query>` (lookups ask for few results; paging is not needed).
    pub async fn search_patients(&self, query: &[(&str, &str)]) -> Result<Vec<Patient>, FhirError> {
        let url = format!("{}/Patient", self.base);
        let (status, body) = self.send(|| self.http.get(&url).query(query)).await?;
        if !status.is_success() {
            return Err(Self::refused(status, &body));
        }
        let (entries, _) = protocol::decode_bundle(&body)?;
        Ok(self.usable_patients(entries))
    }

    /// One page of `<kind>?<query>`, entries of that type only, unchecked (a patient's
    /// allergies or detected issues, the responses to one eligibility request: few, so paging
    /// is not needed).
    pub async fn search(
        &self,
        kind: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<Value>, FhirError> {
        let url = format!("{}/{kind}", self.base);
        let (status, body) = self.send(|| self.http.get(&url).query(query)).await?;
        if !status.is_success() {
            return Err(Self::refused(status, &body));
        }
        let (entries, _) = protocol::decode_bundle(&body)?;
        Ok(entries
            .into_iter()
            .filter(|e| e["resourceType"] == kind)
            .collect())
    }

    /// Every Patient changed at or after `since` (a FHIR instant), following result pages.
    pub async fn changed_patients(&self, since: &str) -> Result<Vec<Patient>, FhirError> {
        let changed = self.changed("Patient", since).await?;
        Ok(self.usable_patients(changed))
    }

    /// Every resource of a type changed at or after `since` (a FHIR instant), oldest first,
    /// following result pages.
    pub async fn changed(&self, kind: &str, since: &str) -> Result<Vec<Value>, FhirError> {
        let mut url = format!("{}/{kind}", self.base);
        let first = [
            ("_lastUpdated", format!("ge{since}")),
            ("_sort", "_lastUpdated".to_string()),
            ("_count", "200".to_string()),
        ];
        let mut all = Vec::new();
        // A bound on pages, so a server whose next links loop cannot hold the poll forever.
        for page in 0..50 {
            let (status, body) = if page == 0 {
                self.send(|| self.http.get(&url).query(&first)).await?
            } else {
                self.send(|| self.http.get(&url)).await?
            };
            if !status.is_success() {
                return Err(Self::refused(status, &body));
            }
            let (entries, next) = protocol::decode_bundle(&body)?;
            all.extend(entries.into_iter().filter(|e| e["resourceType"] == kind));
            // Credentials go only to our EHR: a next link elsewhere is not followed.
            match next {
                Some(n) if n == url => break,
                Some(n) if n.starts_with(&self.base) => url = n,
                Some(_) => {
                    tracing::warn!("FHIR search page links outside the base URL; paging stopped");
                    break;
                }
                None => break,
            }
        }
        Ok(all)
    }

    /// `GET <kind>/<id>`; `None` when the EHR does not have it (any more).
    pub async fn read(&self, kind: &'static str, id: &str) -> Result<Option<Value>, FhirError> {
        let url = format!("{}/{kind}/{id}", self.base);
        let (status, body) = self.send(|| self.http.get(&url)).await?;
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(Self::refused(status, &body));
        }
        let r = protocol::decode_resource(&body, kind).map_err(|e| self.refuse(e))?;
        Ok(Some(r))
    }

    /// `POST <kind>` unless a resource matching `if_none_exist` is there already (conditional
    /// create, so a create retried after a lost answer makes no second one); answers the
    /// stored resource.
    pub async fn create(
        &self,
        kind: &'static str,
        resource: &Value,
        if_none_exist: &str,
    ) -> Result<Value, FhirError> {
        let answer = self.post_once(kind, resource, if_none_exist).await?;
        protocol::decode_resource(&answer, kind).map_err(|e| self.refuse(e))
    }

    /// `POST <kind>` of `resource`, conditional on `if_none_exist` like [`Client::create`], for
    /// a server that may answer with another resource than the one sent (a payer answering a
    /// request with its response, or a Bundle): the answer's JSON, unchecked.
    pub async fn submit(
        &self,
        kind: &'static str,
        resource: &Value,
        if_none_exist: &str,
    ) -> Result<Value, FhirError> {
        let answer = self.post_once(kind, resource, if_none_exist).await?;
        serde_json::from_slice(&answer)
            .map_err(|e| FhirError::Decode(DecodeError::Json(e.to_string())))
    }

    /// The conditional `POST` both [`Client::create`] and [`Client::submit`] send: the body of
    /// a successful answer.
    async fn post_once(
        &self,
        kind: &str,
        resource: &Value,
        if_none_exist: &str,
    ) -> Result<Vec<u8>, FhirError> {
        let url = format!("{}/{kind}", self.base);
        let body = serde_json::to_vec(resource).map_err(|e| DecodeError::Json(e.to_string()))?;
        let (status, answer) = self
            .send(|| {
                self.http
                    .post(&url)
                    .header("Content-Type", "application/fhir+json")
                    .header("Prefer", "return=representation")
                    .header("If-None-Exist", if_none_exist)
                    .body(body.clone())
            })
            .await?;
        if !status.is_success() {
            return Err(Self::refused(status, &answer));
        }
        Ok(answer)
    }

    /// `PUT <kind>/<id>` with `If-Match` on the version it was based on; answers the stored
    /// version.
    pub async fn update(&self, kind: &'static str, resource: &Value) -> Result<Value, FhirError> {
        let id = resource["id"].as_str().unwrap_or_default();
        let version = resource["meta"]["versionId"].as_str().unwrap_or_default();
        let url = format!("{}/{kind}/{id}", self.base);
        let body = serde_json::to_vec(resource).map_err(|e| DecodeError::Json(e.to_string()))?;
        let if_match = format!("W/\"{version}\"");
        let (status, answer) = self
            .send(|| {
                self.http
                    .put(&url)
                    .header("Content-Type", "application/fhir+json")
                    .header("If-Match", &if_match)
                    .body(body.clone())
            })
            .await?;
        if status == StatusCode::PRECONDITION_FAILED || status == StatusCode::CONFLICT {
            return Err(FhirError::VersionChanged);
        }
        if !status.is_success() {
            return Err(Self::refused(status, &answer));
        }
        protocol::decode_resource(&answer, kind).map_err(|e| self.refuse(e))
    }

    /// The appointments of the days from `first_day` to `last_day` (`YYYY-MM-DD`, both included:
    /// a clinic's day may straddle two of the server's).
    pub async fn appointments_between(
        &self,
        first_day: &str,
        last_day: &str,
    ) -> Result<Vec<Appointment>, FhirError> {
        let url = format!("{}/Appointment", self.base);
        let (from, to) = (format!("ge{first_day}"), format!("le{last_day}"));
        let query = [("date", &*from), ("date", &to), ("_count", "1000")];
        let (status, body) = self.send(|| self.http.get(&url).query(&query)).await?;
        if !status.is_success() {
            return Err(Self::refused(status, &body));
        }
        let (entries, _) = protocol::decode_bundle(&body)?;
        let mut found = Vec::new();
        for e in entries {
            match protocol::decode_appointment(e) {
                Ok(a) => found.push(a),
                Err(e) => {
                    self.refuse(e);
                }
            }
        }
        Ok(found)
    }

    /// One Appointment; `None` when the EHR no longer has it.
    pub async fn read_appointment(&self, id: &str) -> Result<Option<Appointment>, FhirError> {
        let url = format!("{}/Appointment/{id}", self.base);
        let (status, body) = self.send(|| self.http.get(&url)).await?;
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(Self::refused(status, &body));
        }
        let v = serde_json::from_slice(&body).map_err(|e| DecodeError::Json(e.to_string()))?;
        Ok(Some(
            protocol::decode_appointment(v).map_err(|e| self.refuse(e))?,
        ))
    }

    pub async fn read_patient(&self, id: &str) -> Result<Patient, FhirError> {
        let url = format!("{}/Patient/{id}", self.base);
        let (status, body) = self.send(|| self.http.get(&url)).await?;
        if !status.is_success() {
            return Err(Self::refused(status, &body));
        }
        let v = serde_json::from_slice(&body).map_err(|e| DecodeError::Json(e.to_string()))?;
        protocol::decode_patient(v).map_err(|e| self.refuse(e))
    }

    /// `PUT Patient/<id>` with `If-Match` on `version` (the one the change was based on);
    /// answers the stored version.
    pub async fn update_patient(&self, p: &Patient, version: &str) -> Result<Patient, FhirError> {
        let mut v = serde_json::to_value(p).map_err(|e| DecodeError::Json(e.to_string()))?;
        v["meta"]["versionId"] = Value::String(version.to_string());
        let stored = self.update("Patient", &v).await?;
        protocol::decode_patient(stored).map_err(|e| self.refuse(e))
    }
}
