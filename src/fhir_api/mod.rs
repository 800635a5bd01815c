//! The FHIR R4 API for outside systems (`/fhir/R4`): the queue as `Encounter`s and
//! `Appointment`s, the FHIR connector's cached `Patient`s, priority `Flag`s, scheduling
//! suggestions as `Task`s and the audit as `AuditEvent`s, by `read` and `search`, to SMART backend clients holding a token from
//! `/oauth/token` (see `access::token`). Mounted only when `[access]` is enabled.
//!
//! **Invariant:** every resource sent is validated against R4 first
//! (`connectors::fhir::validate`); one that fails is not sent.
//! **Invariant:** every read or search that returns resources is audited as the client's
//! access in the same transaction that read them, naming the patients returned; every
//! refusal (scope, parameter, type) is audited too, and answered with an `OperationOutcome`.
//! **Invariant:** read-only: no table is changed but the audit.

pub mod resources;
pub mod search;
pub mod store;

use crate::access::SmartClient;
use crate::access::smart::Interaction;
use crate::access::token::{base_url, outcome, outcome_body, token_url};
use crate::connectors::fhir::validate::validate;
use crate::journal::{self, AuditRecord, JournalError, JournalWriter, Tx, Work};
use actix::Addr;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use search::{Indexed, Search, SearchError, Url};
use serde_json::{Value, json};

/// The content type of every answer (R4 §2.1.0.1.5).
pub const FHIR_JSON: &str = "application/fhir+json";

/// The resource types served, in the CapabilityStatement's order.
pub const RESOURCES: [&str; 6] = [
    "Encounter",
    "Appointment",
    "Patient",
    "Flag",
    "Task",
    "AuditEvent",
];

/// When the CapabilityStatement last changed (its required `date`): change it with the
/// resources, interactions or parameters it lists.
const CAPABILITY_DATE: &str = "2026-12-02";

/// What the API's handlers need.
#[derive(Clone)]
pub struct Api {
    pub journal: Addr<JournalWriter>,
    /// The facility id, in Encounter identifiers and AuditEvent sources.
    pub facility: String,
}

/// The API's routes; the caller mounts them when access is enabled.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/fhir/R4/metadata", web::get().to(metadata))
        .service(
            web::resource("/fhir/R4/{type}")
                .route(web::get().to(search_type))
                .default_service(web::to(not_allowed)),
        )
        .service(
            web::resource("/fhir/R4/{type}/{id}")
                .route(web::get().to(read))
                .default_service(web::to(not_allowed)),
        );
}

/// A search on one resource type, answered as one page and audited in the same transaction.
#[derive(Debug)]
pub struct FhirSearch {
    pub resource_type: String,
    pub search: Search,
    pub url: Url,
    pub facility: String,
    /// `client:<name>`.
    pub actor: String,
}

/// A read of one resource; `None` when there is none by that id.
#[derive(Debug)]
pub struct FhirRead {
    pub resource_type: String,
    pub id: String,
    pub facility: String,
    pub actor: String,
}

crate::journal_work!(FhirSearch, FhirRead);

/// The resources of one search page, each validated: those that fail are replaced by a
/// warning (their id only, never their content).
fn checked(page: Vec<Indexed>, base: &str) -> (Vec<(String, Value)>, Vec<Value>, Vec<String>) {
    let (mut entries, mut warnings, mut patients) = (Vec::new(), Vec::new(), Vec::new());
    for r in page {
        let kind = r.resource["resourceType"]
            .as_str()
            .unwrap_or("")
            .to_string();
        match validate(&r.resource) {
            Ok(()) => {
                patients.extend(r.patient.clone());
                entries.push((format!("{base}/{kind}/{}", r.id), r.resource));
            }
            Err(e) => {
                tracing::warn!(resource = %kind, id = %r.id, issues = e.issues.len(), "resource not sent: not valid R4");
                let mut o = outcome_body(
                    "processing",
                    &format!("{kind}/{} is left out: it is not valid FHIR R4", r.id),
                );
                o["issue"][0]["severity"] = json!("warning");
                warnings.push(o);
            }
        }
    }
    patients.sort();
    patients.dedup();
    (entries, warnings, patients)
}

/// Audits an access that returned `count` resources about `patients`: `fhir.read` or
/// `fhir.search` by the client.
fn audit_access(
    tx: &mut Tx<'_>,
    actor: &str,
    interaction: Interaction,
    resource_type: &str,
    patients: &[String],
    count: usize,
) -> Result<(), JournalError> {
    let now = tx.now();
    let (action, letter) = match interaction {
        Interaction::Read => ("fhir.read", "r"),
        Interaction::Search => ("fhir.search", "s"),
    };
    let patients: Vec<String> = patients.iter().map(|p| format!("Patient/{p}")).collect();
    let detail = json!({
        "resource_type": resource_type,
        "patients": patients,
        "count": count,
        // A backend client acts for its own system's purpose; the scope is what allowed it.
        "purpose": format!("system/{resource_type}.{letter}"),
    });
    tx.audit(actor, action, &detail.to_string(), now)
}

impl Work for FhirSearch {
    type Output = Value;
    fn run(self, tx: &mut Tx<'_>) -> Result<Value, JournalError> {
        let s = &self.search;
        let (total, page) = if self.resource_type == "AuditEvent" {
            let id = match &s.id {
                Some(id) => match id.parse() {
                    Ok(n) => Some(n),
                    Err(_) => return Ok(search::bundle(&self.url, s, 0, Vec::new(), Vec::new())),
                },
                None => None,
            };
            let (total, rows) = store::audit_page(tx, id, s.date, s.count, s.offset)?;
            let page = rows
                .iter()
                .map(|row| resources::audit_event(row, &self.facility))
                .collect();
            (total, page)
        } else {
            let found = store::matching(tx, &self.resource_type, s, &self.facility)?;
            let total = found.len();
            let page = found.into_iter().skip(s.offset).take(s.count).collect();
            (total, page)
        };
        let base = self
            .url
            .base
            .rsplit_once('/')
            .map_or("", |(b, _)| b)
            .to_string();
        let (entries, warnings, patients) = checked(page, &base);
        if !entries.is_empty() {
            let t = &self.resource_type;
            let n = entries.len();
            audit_access(tx, &self.actor, Interaction::Search, t, &patients, n)?;
        }
        Ok(search::bundle(&self.url, s, total, entries, warnings))
    }
}

/// What a read found.
#[derive(Debug)]
pub enum Found {
    Resource(Value),
    None,
    /// The resource exists but is not valid R4, so it is not sent.
    Invalid,
}

impl Work for FhirRead {
    type Output = Found;
    fn run(self, tx: &mut Tx<'_>) -> Result<Found, JournalError> {
        let found = if self.resource_type == "AuditEvent" {
            let Ok(id) = self.id.parse() else {
                return Ok(Found::None);
            };
            let (_, rows) = store::audit_page(tx, Some(id), search::Range::ALL, 1, 0)?;
            rows.first()
                .map(|row| resources::audit_event(row, &self.facility))
        } else {
            store::one(tx, &self.resource_type, &self.id, &self.facility)?
        };
        let Some(r) = found else {
            return Ok(Found::None);
        };
        if validate(&r.resource).is_err() {
            tracing::warn!(resource = %self.resource_type, id = %r.id, "resource not sent: not valid R4");
            return Ok(Found::Invalid);
        }
        let patients: Vec<String> = r.patient.iter().cloned().collect();
        audit_access(
            tx,
            &self.actor,
            Interaction::Read,
            &self.resource_type,
            &patients,
            1,
        )?;
        Ok(Found::Resource(r.resource))
    }
}

/// A resource or Bundle answer.
fn fhir_ok(body: &Value) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(FHIR_JSON)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body.to_string())
}

/// Whether the client accepts FHIR JSON (or anything); a request without `Accept` does.
fn accepts_json(req: &HttpRequest) -> bool {
    let Some(accept) = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
    else {
        return true;
    };
    accept.split(',').any(|item| {
        let mime = item.split(';').next().unwrap_or("").trim();
        matches!(
            mime,
            "application/fhir+json" | "application/json" | "application/*" | "*/*" | ""
        )
    })
}

/// Audits a refused FHIR request.
async fn audit_refusal(api: &Api, actor: &str, reason: &str, req: &HttpRequest) {
    let detail = json!({ "reason": reason, "method": req.method().as_str(), "path": req.path() });
    let record = AuditRecord {
        actor: actor.into(),
        action: "fhir.refused".into(),
        detail: detail.to_string(),
    };
    tracing::info!(reason, "FHIR request refused");
    if let Err(e) = journal::ask(&api.journal, record).await {
        tracing::warn!(error = %e, "refused FHIR request not audited");
    }
}

/// The checks every read and search passes: a JSON answer is acceptable, the type is served,
/// and the token's scopes permit the interaction on it. The client's audit name, or the
/// refusal (audited).
async fn admit(
    api: &Api,
    req: &HttpRequest,
    resource_type: &str,
    interaction: Interaction,
) -> Result<String, HttpResponse> {
    let Some(client) = req.extensions().get::<SmartClient>().cloned() else {
        // The guard admits no request here without a token; this is defence in depth.
        return Err(outcome(
            StatusCode::UNAUTHORIZED,
            "login",
            "a bearer token is required",
        ));
    };
    let actor = crate::access::client_actor(&client.name);
    if !accepts_json(req) {
        audit_refusal(api, &actor, "not_acceptable", req).await;
        let text = "only application/fhir+json is served";
        return Err(outcome(StatusCode::NOT_ACCEPTABLE, "not-supported", text));
    }
    if !RESOURCES.contains(&resource_type) {
        audit_refusal(api, &actor, "unknown_type", req).await;
        let text = "this server serves no such resource type";
        return Err(outcome(StatusCode::NOT_FOUND, "not-supported", text));
    }
    if !client.scopes.permits(resource_type, interaction) {
        audit_refusal(api, &actor, "smart_scope", req).await;
        let text = "the token's scopes do not permit this";
        return Err(outcome(StatusCode::FORBIDDEN, "forbidden", text));
    }
    Ok(actor)
}

fn unavailable(e: JournalError) -> HttpResponse {
    tracing::warn!(error = %e, "FHIR request not answered");
    outcome(StatusCode::SERVICE_UNAVAILABLE, "transient", "try again")
}

/// `GET /fhir/R4/{type}`: a searchset Bundle of one page.
async fn search_type(
    api: web::Data<Api>,
    req: HttpRequest,
    path: web::Path<String>,
    query: Result<web::Query<Vec<(String, String)>>, actix_web::Error>,
) -> HttpResponse {
    let resource_type = path.into_inner();
    let actor = match admit(&api, &req, &resource_type, Interaction::Search).await {
        Ok(a) => a,
        Err(answer) => return answer,
    };
    let Ok(query) = query.map(web::Query::into_inner) else {
        audit_refusal(&api, &actor, "query", &req).await;
        return outcome(
            StatusCode::BAD_REQUEST,
            "invalid",
            "the query is not well formed",
        );
    };
    let search = match search::parse(&resource_type, &query) {
        Ok(s) => s,
        Err(e) => {
            audit_refusal(&api, &actor, "search_param", &req).await;
            let code = match e {
                SearchError::Unknown(_) => "not-supported",
                SearchError::BadValue(_) => "value",
            };
            return outcome(StatusCode::BAD_REQUEST, code, &e.to_string());
        }
    };
    let work = FhirSearch {
        url: Url {
            base: format!("{}{}", base_url(&req), req.path()),
            query,
        },
        resource_type,
        search,
        facility: api.facility.clone(),
        actor,
    };
    match journal::ask(&api.journal, work).await {
        Ok(bundle) => fhir_ok(&bundle),
        Err(e) => unavailable(e),
    }
}

/// `GET /fhir/R4/{type}/{id}`.
async fn read(
    api: web::Data<Api>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (resource_type, id) = path.into_inner();
    let actor = match admit(&api, &req, &resource_type, Interaction::Read).await {
        Ok(a) => a,
        Err(answer) => return answer,
    };
    let work = FhirRead {
        resource_type: resource_type.clone(),
        id: id.clone(),
        facility: api.facility.clone(),
        actor,
    };
    match journal::ask(&api.journal, work).await {
        Ok(Found::Resource(r)) => fhir_ok(&r),
        Ok(Found::None) => {
            let text = format!("{resource_type}/{id} is not known here");
            outcome(StatusCode::NOT_FOUND, "not-found", &text)
        }
        Ok(Found::Invalid) => {
            let text = "the resource cannot be sent: it is not valid FHIR R4";
            outcome(StatusCode::INTERNAL_SERVER_ERROR, "processing", text)
        }
        Err(e) => unavailable(e),
    }
}

/// Any other method on a resource path: this API reads only.
async fn not_allowed() -> HttpResponse {
    let mut answer = outcome(
        StatusCode::METHOD_NOT_ALLOWED,
        "not-supported",
        "this API serves read and search only",
    );
    answer
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
    answer
}

/// `GET /fhir/R4/metadata`: the CapabilityStatement, listing exactly what this API does.
async fn metadata(req: HttpRequest) -> HttpResponse {
    fhir_ok(&capability_statement(&token_url(&req), &base_url(&req)))
}

/// The CapabilityStatement: the resource types served, each with `read` and `search-type`
/// and its search parameters, and the SMART security extension naming the token endpoint.
pub fn capability_statement(token_url: &str, base: &str) -> Value {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .map(|t| {
            let params: Vec<Value> = search::supports(t)
                .iter()
                .map(|p| json!({ "name": p.name(), "type": p.kind() }))
                .collect();
            json!({
                "type": t,
                "interaction": [{ "code": "read" }, { "code": "search-type" }],
                "searchParam": params,
            })
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": CAPABILITY_DATE,
        "kind": "instance",
        "software": { "name": "clinic-gateway", "version": env!("CARGO_PKG_VERSION") },
        "implementation": { "description": "clinic-gateway FHIR API", "url": format!("{base}/fhir/R4") },
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "security": {
                "service": [{ "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "SMART-on-FHIR",
                }] }],
                "extension": [{
                    "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                    "extension": [{ "url": "token", "valueUri": token_url }],
                }],
            },
            "resource": resources,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_and_metadata_name_exactly_the_types_served() {
        let offered: Vec<&str> = crate::access::token::SCOPES_SUPPORTED[1..]
            .iter()
            .filter_map(|s| s.strip_prefix("system/")?.strip_suffix(".rs"))
            .collect();
        let mut served = RESOURCES.to_vec();
        let mut offered_sorted = offered.clone();
        served.sort();
        offered_sorted.sort();
        assert_eq!(offered_sorted, served);
        let cs = capability_statement("https://gw/oauth/token", "https://gw");
        let types: Vec<&str> = cs["rest"][0]["resource"]
            .as_array()
            .expect("resources")
            .iter()
            .filter_map(|r| r["type"].as_str())
            .collect();
        assert_eq!(types, RESOURCES);
        let token = &cs["rest"][0]["security"]["extension"][0]["extension"][0];
        assert_eq!(token["valueUri"], "https://gw/oauth/token");
    }

    #[test]
    fn json_is_acceptable_unless_the_client_excludes_it() {
        let check = |accept: Option<&str>| {
            let mut req = actix_web::test::TestRequest::default();
            if let Some(a) = accept {
                req = req.insert_header((header::ACCEPT, a));
            }
            accepts_json(&req.to_http_request())
        };
        assert!(check(None));
        assert!(check(Some("application/fhir+json;q=0.9, text/html")));
        assert!(check(Some("*/*")));
        assert!(!check(Some("application/fhir+xml")));
    }
}
