//! Fault injection for tests, built only with the `fault-hooks` feature:
//! `POST /api/v1/faults/panic/{actor}` makes a running actor panic from inside its work, so
//! that a test can watch the supervisor report it and restart it; `POST
//! /api/v1/faults/journal/hold-later` keeps the journal's work put off from running, so that a
//! test can stop the gateway before it does.
//!
//! **Invariant:** never part of a release build; the route does not exist without the feature.

use super::{AppState, same_origin};
use crate::supervisor::InjectPanic;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/faults/panic/{actor}", web::post().to(panic))
        .route(
            "/api/v1/faults/journal/hold-later",
            web::post().to(hold_later),
        );
}

async fn hold_later(req: HttpRequest) -> HttpResponse {
    if !same_origin(&req) {
        return HttpResponse::Forbidden().json(json!({ "error": "cross-site request refused" }));
    }
    crate::journal::LATER_HELD.store(true, std::sync::atomic::Ordering::Relaxed);
    HttpResponse::Accepted().json(json!({ "later": "held" }))
}

async fn panic(s: web::Data<AppState>, actor: web::Path<String>, req: HttpRequest) -> HttpResponse {
    if !same_origin(&req) {
        return HttpResponse::Forbidden().json(json!({ "error": "cross-site request refused" }));
    }
    let actor = actor.into_inner();
    match s.supervisor.send(InjectPanic(actor.clone())).await {
        Ok(true) => HttpResponse::Accepted().json(json!({ "actor": actor, "panic": "injected" })),
        Ok(false) => HttpResponse::NotFound()
            .json(json!({ "error": format!("no running actor named {actor}") })),
        Err(_) => HttpResponse::ServiceUnavailable().json(json!({ "error": "shutting down" })),
    }
}
