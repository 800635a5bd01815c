//! `/api/v1/fhir/...`: the FHIR connector's state, the cached patients, local demographic
//! changes, and the conflicts staff resolve field by field.

use super::{AppState, journal_error, peer, same_origin};
use crate::access::{Staff, policy};
use crate::connectors::fhir::requests::{FhirConflicts, FhirEdit, FhirGet, FhirResolve};
use crate::connectors::fhir::{self, protocol};
use crate::journal::{self, AuditRecord};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/fhir/status", web::get().to(status))
        .route("/api/v1/fhir/conflicts", web::get().to(conflicts))
        .route(
            "/api/v1/fhir/conflicts/{id}/resolve",
            web::post().to(resolve),
        )
        .route("/api/v1/fhir/patients/{id}", web::get().to(patient))
        .route(
            "/api/v1/fhir/patients/{id}/demographics",
            web::post().to(edit),
        );
}

/// Who did it, for the audit: the logged-in staff member or the key's system, else the name
/// given, else the API client's address.
fn by(given: Option<String>, req: &HttpRequest) -> String {
    if let Some(who) = crate::access::audit_actor(req) {
        return who;
    }
    given
        .filter(|b| !b.is_empty() && b.len() <= 64 && !b.chars().any(char::is_control))
        .map(|b| format!("staff:{b}"))
        .unwrap_or_else(|| format!("api:{}", peer(req)))
}

/// Records that the caller is about to be shown the data of `patients` (their FHIR ids): who,
/// with which role, and why (the route's purpose). False when it could not be recorded: the
/// data is then not shown.
pub(super) async fn audit_view(s: &AppState, req: &HttpRequest, patients: &[&str]) -> bool {
    let mut patients = patients.to_vec();
    patients.sort_unstable();
    patients.dedup();
    if patients.is_empty() {
        return true;
    }
    let Some(purpose) = policy::purpose(req.method().as_str(), req.path()) else {
        tracing::warn!(method = %req.method(), "patient data on a route without a purpose");
        return false;
    };
    let role = req.extensions().get::<Staff>().map(|staff| staff.role);
    let detail = json!({ "role": role, "patients": patients, "purpose": purpose });
    let record = AuditRecord {
        actor: by(None, req),
        action: "access.patient_viewed".into(),
        detail: detail.to_string(),
    };
    match journal::ask(&s.journal, record).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "patient data view not audited: not shown");
            false
        }
    }
}

fn not_audited() -> HttpResponse {
    HttpResponse::ServiceUnavailable().json(json!({ "error": "try again", "retryable": true }))
}

async fn status(s: web::Data<AppState>) -> HttpResponse {
    match fhir::status(&s.fhir).await {
        Some(s) => HttpResponse::Ok().json(s),
        None => HttpResponse::NotFound().json(json!({ "error": "no FHIR connector is running" })),
    }
}

#[derive(Deserialize)]
struct ConflictQuery {
    #[serde(default)]
    all: bool,
}

/// The conflicts with both versions of each patient, a view of patient data.
async fn conflicts(
    s: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<ConflictQuery>,
) -> HttpResponse {
    match journal::ask(&s.journal, FhirConflicts { all: q.all }).await {
        Ok(list) => {
            let patients: Vec<&str> = list.iter().map(|c| c.patient_id.as_str()).collect();
            if !audit_view(&s, &req, &patients).await {
                return not_audited();
            }
            HttpResponse::Ok().json(list)
        }
        Err(e) => journal_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Resolution {
    /// The side each conflicting field takes.
    fields: BTreeMap<String, protocol::Side>,
    #[serde(default)]
    by: Option<String>,
}

async fn resolve(
    s: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
    body: web::Json<Resolution>,
) -> HttpResponse {
    if !same_origin(&req) {
        return HttpResponse::Forbidden().json(json!({ "error": "cross-site request refused" }));
    }
    let Resolution { fields, by: who } = body.into_inner();
    let msg = FhirResolve {
        id: path.into_inner(),
        choices: fields,
        by: by(who, &req),
    };
    match journal::ask(&s.journal, msg).await {
        Ok((conflict, sent)) => {
            HttpResponse::Ok().json(json!({ "conflict": conflict, "update_queued": sent }))
        }
        Err(e) => journal_error(e),
    }
}

async fn patient(
    s: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let id = path.into_inner();
    match journal::ask(&s.journal, FhirGet { id: id.clone() }).await {
        Ok(Some(p)) => {
            if !audit_view(&s, &req, &[&id]).await {
                return not_audited();
            }
            HttpResponse::Ok().json(p)
        }
        Ok(None) => HttpResponse::NotFound().json(json!({ "error": "patient not cached" })),
        Err(e) => journal_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Edit {
    /// New values by field name (`null` removes the value).
    fields: protocol::Fields,
    #[serde(default)]
    by: Option<String>,
}

async fn edit(
    s: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<Edit>,
) -> HttpResponse {
    if !same_origin(&req) {
        return HttpResponse::Forbidden().json(json!({ "error": "cross-site request refused" }));
    }
    let Edit { fields, by: who } = body.into_inner();
    if let Err(e) = protocol::check_fields(&fields) {
        return HttpResponse::BadRequest().json(json!({ "error": e.to_string() }));
    }
    let msg = FhirEdit {
        id: path.into_inner(),
        changes: fields,
        by: by(who, &req),
    };
    match journal::ask(&s.journal, msg).await {
        Ok(queued) => HttpResponse::Accepted().json(json!({ "update_queued": queued })),
        Err(e) => journal_error(e),
    }
}
