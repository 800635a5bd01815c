//! Patient messaging on the API: each notification with its attempts and receipts
//! (`GET /api/v1/notifications`), for the queue's staff (tickets, channels, providers and
//! statuses only: never a number, an address or a message's text), and the endpoint HTTP
//! providers call with delivery receipts (`/api/v1/messaging/receipts/{provider}`).

use super::{AppState, journal_error};
use crate::journal;
use crate::messaging::store::ReceiptFor;
use crate::messaging::{ApplyReceipt, ListNotifications, TakenSince, protocol};
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NotificationQuery {
    /// Only this ticket's notifications.
    ticket: Option<String>,
    limit: Option<usize>,
}

/// The newest notifications (of one ticket), newest first.
pub(super) async fn notifications(
    s: web::Data<AppState>,
    q: web::Query<NotificationQuery>,
) -> HttpResponse {
    let q = q.into_inner();
    let list = ListNotifications {
        ticket: q.ticket,
        limit: q.limit.unwrap_or(100).min(1000),
    };
    match journal::ask(&s.journal, list).await {
        Ok(rows) => HttpResponse::Ok().json(rows),
        Err(e) => journal_error(e),
    }
}

/// A receipt as a GET's query (Kannel's `dlr-url`).
pub(super) async fn receipt_get(
    s: web::Data<AppState>,
    provider: web::Path<String>,
    q: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    receipt(s, provider.into_inner(), q.into_inner()).await
}

/// A receipt as a POSTed form (Twilio-style status callbacks).
pub(super) async fn receipt_post(
    s: web::Data<AppState>,
    provider: web::Path<String>,
    f: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    receipt(s, provider.into_inner(), f.into_inner()).await
}

/// Reads a receipt's fields: the message by our id (`message`) or the provider's
/// (`ref`, `MessageSid`), and its state (`status`, Kannel's `answer`, `MessageStatus`). An
/// intermediate state is acknowledged and changes nothing.
async fn receipt(
    s: web::Data<AppState>,
    provider: String,
    f: HashMap<String, String>,
) -> HttpResponse {
    let get = |k: &str| f.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let of = if let Some(id) = get("message") {
        match id.parse() {
            Ok(id) => ReceiptFor::Notification(id),
            Err(_) => {
                return HttpResponse::BadRequest()
                    .json(json!({ "error": "\"message\" must be a notification id" }));
            }
        }
    } else if let Some(r) = get("ref").or(get("MessageSid")) {
        ReceiptFor::ProviderRef(r.to_string())
    } else {
        return HttpResponse::BadRequest()
            .json(json!({ "error": "a receipt names \"message\" or \"ref\"" }));
    };
    let Some(receipt) =
        protocol::http_receipt(get("status").or(get("MessageStatus")), get("answer"))
    else {
        return HttpResponse::Ok().json(json!({ "applied": false, "final": false }));
    };
    let apply = ApplyReceipt {
        provider,
        of,
        receipt,
    };
    match journal::ask(&s.journal, apply).await {
        Ok(applied) => HttpResponse::Ok().json(json!({ "applied": applied, "final": true })),
        Err(e) => journal_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CostQuery {
    /// How many days back (default 30, at most 366).
    days: Option<u32>,
}

/// Cost analytics: per provider and channel, per day and per month, and over the whole span
/// with the recommendation of a cheaper provider at the same delivery rate.
pub(super) async fn costs(s: web::Data<AppState>, q: web::Query<CostQuery>) -> HttpResponse {
    let days = q.days.unwrap_or(30).clamp(1, 366);
    match journal::ask(&s.journal, TakenSince { days }).await {
        Ok(taken) => {
            let day = &crate::clock::local_day;
            let all = protocol::figures(&taken, day, None);
            HttpResponse::Ok().json(json!({
                "days": days,
                "daily": protocol::figures(&taken, day, Some(false)),
                "monthly": protocol::figures(&taken, day, Some(true)),
                "total": all,
                "recommendations": protocol::recommendations(&all, days),
            }))
        }
        Err(e) => journal_error(e),
    }
}
