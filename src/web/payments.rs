//! `/api/v1/queue-entries/{id}/payments`: the front desk asks a patient for a co-pay or a
//! balance, sees where it stands and lets a patient pay later; `/api/v1/payments/left-open`:
//! intents left at processors (to cancel) and payments taken twice (to refund);
//! `/api/v1/payments/webhook/{processor}`: the processors' signed confirmations.

use super::{AppState, Practice, journal_error, staff_or};
use crate::connectors::payments::protocol::{self, Method};
use crate::connectors::payments::store::AttemptState;
use crate::connectors::payments::store::{Payment, Status};
use crate::connectors::payments::{
    CancelLeftOpen, GetAttempt, GetPayment, GetPayments, ListLeftBehind, PayLater, Received,
    RefuseWebhook, RequestPayment, Webhook,
};
use crate::journal;
use crate::metrics::METRICS;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

/// How long a request waits for the processor's intent before answering `requested`.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/api/v1/queue-entries/{id}/payments",
        web::post().to(request),
    )
    .route("/api/v1/queue-entries/{id}/payments", web::get().to(get))
    .route(
        "/api/v1/queue-entries/{id}/payments/{payment}/pay-later",
        web::post().to(pay_later),
    )
    .route("/api/v1/payments/left-open", web::get().to(left_open))
    .route(
        "/api/v1/payments/left-open/{attempt}/cancel",
        web::post().to(cancel),
    )
    .route(
        "/api/v1/payments/webhook/{processor}",
        web::post().to(webhook),
    );
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestBody {
    amount_cents: i64,
    currency: String,
    /// `hosted` or `terminal`.
    method: String,
    /// A configured processor to ask first.
    #[serde(default)]
    processor: Option<String>,
}

/// An entry's payment standing: `paid`, `payment_pending` (the latest failed: the entry
/// keeps its place and staff pick an alternative), `owed` (staff chose "pay later") or
/// `awaiting_payment`.
fn standing(latest: Option<&Payment>) -> Option<&'static str> {
    Some(match latest?.status {
        Status::Confirmed => "paid",
        Status::Failed => "payment_pending",
        Status::Owed => "owed",
        // Only older than the payment that settled it, so never the latest.
        Status::Settled => "paid",
        Status::Requested | Status::Open => "awaiting_payment",
    })
}

/// What the patient owes from payments let for later, per currency.
fn owed(payments: &[Payment]) -> serde_json::Map<String, serde_json::Value> {
    let mut out = std::collections::BTreeMap::<&str, i64>::new();
    for p in payments.iter().filter(|p| p.status == Status::Owed) {
        *out.entry(p.currency.as_str()).or_default() += p.amount_cents;
    }
    out.into_iter()
        .map(|(c, n)| (c.to_string(), json!(n)))
        .collect()
}

/// What staff can do about a failed payment.
fn alternatives(practice: &Practice, latest: Option<&Payment>) -> Vec<&'static str> {
    if latest.is_none_or(|p| p.status != Status::Failed) {
        return Vec::new();
    }
    let mut out = Vec::new();
    if practice
        .payments
        .as_ref()
        .is_some_and(|c| c.processor.len() > 1)
    {
        out.push("another_processor");
    }
    out.extend(["another_method", "pay_later"]);
    out
}

async fn request(
    s: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
    body: web::Json<RequestBody>,
) -> HttpResponse {
    let practice = s.practice.get();
    let Some(config) = practice.payments.as_ref() else {
        return HttpResponse::NotFound()
            .json(json!({ "error": "no payment processor is configured" }));
    };
    let body = body.into_inner();
    let Some(method) = Method::parse(&body.method) else {
        return HttpResponse::BadRequest()
            .json(json!({ "error": "\"method\": \"hosted\" or \"terminal\"" }));
    };
    if let Some(p) = &body.processor
        && config.processor(p).is_none()
    {
        let names: Vec<&str> = config.processor.iter().map(|p| p.name.as_str()).collect();
        return HttpResponse::BadRequest()
            .json(json!({ "error": format!("\"processor\": one of {names:?}") }));
    }
    let ask = RequestPayment {
        entry_id: path.into_inner(),
        amount_cents: body.amount_cents,
        currency: body.currency,
        method,
        processor: body.processor,
        by: staff_or(&req, None),
    };
    let mut payment = match journal::ask(&s.journal, ask).await {
        Ok(p) => p,
        Err(e) => return journal_error(e),
    };
    // The intent is made by the connector from the outbox; the front desk usually has it
    // within a second, and otherwise reads it with GET.
    let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
    while payment.status == Status::Requested && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ask = GetPayment {
            reference: payment.reference.clone(),
        };
        match journal::ask(&s.journal, ask).await {
            Ok(Some(p)) => payment = p,
            Ok(None) => break,
            Err(e) => return journal_error(e),
        }
    }
    let answer = json!({
        "payment": payment,
        "entry_payment": standing(Some(&payment)),
        "alternatives": alternatives(&practice, Some(&payment)),
    });
    match payment.status {
        Status::Requested => HttpResponse::Accepted().json(answer),
        _ => HttpResponse::Created().json(answer),
    }
}

async fn get(s: web::Data<AppState>, path: web::Path<i64>) -> HttpResponse {
    let entry_id = path.into_inner();
    match journal::ask(&s.journal, GetPayments { entry_id }).await {
        Ok(payments) => {
            let latest = payments.first();
            HttpResponse::Ok().json(json!({
                "entry": entry_id,
                "entry_payment": standing(latest),
                "alternatives": alternatives(&s.practice.get(), latest),
                "owed_cents": owed(&payments),
                "payments": payments,
            }))
        }
        Err(e) => journal_error(e),
    }
}

async fn pay_later(
    s: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(i64, i64)>,
) -> HttpResponse {
    let (entry_id, payment_id) = path.into_inner();
    let ask = PayLater {
        entry_id,
        payment_id,
        by: staff_or(&req, None),
    };
    if let Err(e) = journal::ask(&s.journal, ask).await {
        return journal_error(e);
    }
    match journal::ask(&s.journal, GetPayments { entry_id }).await {
        Ok(payments) => HttpResponse::Ok().json(json!({
            "entry": entry_id,
            "entry_payment": standing(payments.first()),
            "owed_cents": owed(&payments),
            "payments": payments,
        })),
        Err(e) => journal_error(e),
    }
}

async fn left_open(s: web::Data<AppState>) -> HttpResponse {
    match journal::ask(&s.journal, ListLeftBehind).await {
        Ok(list) => HttpResponse::Ok().json(json!({ "intents": list })),
        Err(e) => journal_error(e),
    }
}

/// Asks the connector to cancel an intent left open; answers once it did (within 5 s), else
/// `202` with the intent still `left_open`.
async fn cancel(s: web::Data<AppState>, req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    let key = path.into_inner();
    let ask = CancelLeftOpen {
        key: key.clone(),
        by: staff_or(&req, None),
    };
    let mut attempt = match journal::ask(&s.journal, ask).await {
        Ok(a) => a,
        Err(e) => return journal_error(e),
    };
    let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
    while attempt.state == AttemptState::LeftOpen && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        match journal::ask(&s.journal, GetAttempt { key: key.clone() }).await {
            Ok(Some(a)) => attempt = a,
            Ok(None) => break,
            Err(e) => return journal_error(e),
        }
    }
    match attempt.state {
        AttemptState::LeftOpen => HttpResponse::Accepted().json(json!({ "intent": attempt })),
        _ => HttpResponse::Ok().json(json!({ "intent": attempt })),
    }
}

async fn webhook(
    s: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let name = path.into_inner();
    let practice = s.practice.get();
    let (Some(config), Some(effects)) =
        (practice.payments.as_ref(), practice.payment_effects.clone())
    else {
        return HttpResponse::NotFound()
            .json(json!({ "error": "no payment processor is configured" }));
    };
    let Some(processor) = config.processor(&name) else {
        return HttpResponse::NotFound().json(json!({ "error": "no such processor" }));
    };
    let secret = match std::fs::read_to_string(&processor.webhook_secret_file) {
        Ok(s) => s.trim().to_string(),
        Err(e) => {
            tracing::error!(processor = %name, error = %e, "webhook secret unreadable");
            return HttpResponse::ServiceUnavailable()
                .json(json!({ "error": "the webhook secret cannot be read" }));
        }
    };
    let header = req
        .headers()
        .get("Stripe-Signature")
        .and_then(|v| v.to_str().ok());
    let checked = protocol::verify(
        header,
        &body,
        secret.as_bytes(),
        journal::now_ms() / 1000,
        config.webhook_tolerance_s as i64,
    );
    let event = checked
        .map_err(|e| e.to_string())
        .and_then(|()| protocol::event(&body).map_err(|e| e.to_string()));
    let event = match event {
        Ok(e) => e,
        Err(reason) => {
            METRICS.payment_webhooks_refused.add(1);
            tracing::warn!(processor = %name, %reason, "payment webhook refused");
            let refuse = RefuseWebhook {
                processor: name,
                reason: reason.clone(),
            };
            if let Err(e) = journal::ask(&s.journal, refuse).await {
                tracing::warn!(error = %e, "refused webhook not audited");
            }
            return HttpResponse::BadRequest().json(json!({ "error": reason }));
        }
    };
    let ask = Webhook {
        processor: name,
        event,
        effects,
    };
    match journal::ask(&s.journal, ask).await {
        Ok(received) => HttpResponse::Ok().json(json!({
            "received": match received {
                Received::Duplicate => "duplicate",
                Received::Applied => "applied",
                Received::Ignored => "ignored",
            }
        })),
        Err(e) => journal_error(e),
    }
}
