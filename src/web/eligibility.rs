//! `/api/v1/queue-entries/{id}/eligibility`: the front desk asks the payer about an entry's
//! insurance, sees where it stands, and overrides it with a documented reason.

use super::{AppState, journal_error, staff_or};
use crate::connectors::practice::{
    GetEligibility, MemberIn, OverrideEligibility, RequestEligibility,
};
use crate::journal;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/api/v1/queue-entries/{id}/eligibility",
        web::post().to(request),
    )
    .route("/api/v1/queue-entries/{id}/eligibility", web::get().to(get))
    .route(
        "/api/v1/queue-entries/{id}/eligibility/override",
        web::post().to(override_),
    );
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AskBody {
    /// A configured payer's name; the first configured when absent.
    #[serde(default)]
    payer: Option<String>,
    #[serde(flatten)]
    member: MemberIn,
}

async fn request(
    s: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
    body: web::Json<AskBody>,
) -> HttpResponse {
    let Some(config) = s.eligibility.as_ref() else {
        return HttpResponse::NotFound()
            .json(json!({ "error": "no eligibility connector is configured" }));
    };
    let body = body.into_inner();
    let Some(payer) = config.payer(body.payer.as_deref()) else {
        let names: Vec<&str> = config.payer.iter().map(|p| p.name.as_str()).collect();
        return HttpResponse::BadRequest()
            .json(json!({ "error": format!("\"payer\": one of {names:?}") }));
    };
    let ask = RequestEligibility {
        entry_id: path.into_inner(),
        payer: payer.name.clone(),
        member: body.member,
        by: staff_or(&req, None),
    };
    match journal::ask(&s.journal, ask).await {
        Ok(e) => HttpResponse::Accepted().json(e),
        Err(e) => journal_error(e),
    }
}

async fn get(s: web::Data<AppState>, path: web::Path<i64>) -> HttpResponse {
    let entry_id = path.into_inner();
    match journal::ask(&s.journal, GetEligibility { entry_id }).await {
        Ok(Some(e)) => HttpResponse::Ok().json(e),
        Ok(None) => HttpResponse::NotFound()
            .json(json!({ "error": format!("entry {entry_id} has no eligibility inquiry") })),
        Err(e) => journal_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideBody {
    reason: String,
    #[serde(default)]
    by: Option<String>,
}

async fn override_(
    s: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
    body: web::Json<OverrideBody>,
) -> HttpResponse {
    let body = body.into_inner();
    let ask = OverrideEligibility {
        entry_id: path.into_inner(),
        reason: body.reason,
        by: staff_or(&req, body.by.as_deref()),
    };
    match journal::ask(&s.journal, ask).await {
        Ok(e) => HttpResponse::Ok().json(e),
        Err(e) => journal_error(e),
    }
}
