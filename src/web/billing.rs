//! `/api/v1/queue-entries/{id}/visit`: staff record a visit's facts for its billing codes
//! (appointment type, new patient, procedures) and read the suggestion made of them.

use super::{AppState, journal_error, staff_or};
use crate::connectors::practice::billing::{Facts, GetVisit, RecordVisit};
use crate::journal;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/queue-entries/{id}/visit", web::post().to(record))
        .route("/api/v1/queue-entries/{id}/visit", web::get().to(get));
}

async fn record(
    s: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
    body: web::Json<Facts>,
) -> HttpResponse {
    let Some(billing) = s.practice.get().billing.clone() else {
        return HttpResponse::NotFound().json(json!({ "error": "no billing table is configured" }));
    };
    let facts = body.into_inner();
    if let Err(e) = facts.validate() {
        return HttpResponse::BadRequest().json(json!({ "error": e }));
    }
    let ask = RecordVisit {
        entry_id: path.into_inner(),
        facts,
        by: staff_or(&req, None),
        billing,
    };
    match journal::ask(&s.journal, ask).await {
        Ok(visit) => HttpResponse::Ok().json(json!({ "visit": visit })),
        Err(e) => journal_error(e),
    }
}

async fn get(s: web::Data<AppState>, path: web::Path<i64>) -> HttpResponse {
    let entry_id = path.into_inner();
    match journal::ask(&s.journal, GetVisit { entry_id }).await {
        Ok(Some(visit)) => HttpResponse::Ok().json(json!({ "visit": visit })),
        Ok(None) => HttpResponse::NotFound().json(json!({ "error": "no visit facts recorded" })),
        Err(e) => journal_error(e),
    }
}
