//! Patient messaging on the API: each notification with its attempts and receipts
//! (`GET /api/v1/notifications`), for the queue's staff (tickets, channels, providers and
//! statuses only: never a number, an address or a message's text), and the endpoint HTTP
//! providers call with delivery receipts (`/api/v1/messaging/receipts/{provider}`), and the
//! staff page `/messaging`: receipts per ticket, and for roles that may see operations the
//! costs per provider with a chart (inline SVG) and the recommendation.

use super::{AppState, journal_error};
use crate::access::{Staff, policy};
use crate::journal;
use crate::messaging::store::ReceiptFor;
use crate::messaging::{ApplyReceipt, ListNotifications, TakenSince, protocol};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::fmt::Write;

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
/// (`ref`, `MessageSid`, a call's `CallSid`), and its state (`status`, Kannel's `answer`,
/// `MessageStatus`, `CallStatus`). An
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
    } else if let Some(r) = get("ref").or(get("MessageSid")).or(get("CallSid")) {
        ReceiptFor::ProviderRef(r.to_string())
    } else {
        return HttpResponse::BadRequest()
            .json(json!({ "error": "a receipt names \"message\" or \"ref\"" }));
    };
    let Some(receipt) = protocol::http_receipt(
        get("status").or(get("MessageStatus")).or(get("CallStatus")),
        get("answer"),
    ) else {
        return HttpResponse::Ok().json(json!({ "applied": false, "final": false }));
    };
    // A call's length in seconds (Twilio's `CallDuration`), billed by started minute.
    let minutes = get("CallDuration")
        .and_then(|d| d.parse::<u32>().ok())
        .map(|s| s.div_ceil(60));
    let apply = ApplyReceipt {
        provider,
        of,
        receipt,
        minutes,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PageQuery {
    ticket: Option<String>,
}

/// The messaging page: the newest notifications (of one ticket) with their receipts, and the
/// last 30 days' costs for roles the cost API admits.
pub(super) async fn page(
    s: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<PageQuery>,
) -> HttpResponse {
    let role = req.extensions().get::<Staff>().map(|s| s.role);
    let costs_shown =
        role.is_none_or(|r| policy::permits(policy::allowed("GET", "/api/v1/messaging/costs"), r));
    let ticket = q.into_inner().ticket.filter(|t| !t.is_empty());
    let list = ListNotifications {
        ticket: ticket.clone(),
        limit: 100,
    };
    let rows = journal::ask(&s.journal, list).await.unwrap_or_default();
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Patient messages{}</h1><form method=get><input name=ticket placeholder=ticket value=\"{}\"> <button>Show</button></form>\
         <table><tr><th>Ticket</th><th>Kind</th><th>Status</th><th>Reason</th><th>Attempts (channel, provider, status)</th></tr>",
        ticket
            .as_deref()
            .map(|t| format!(" of {}", super::html::esc(t)))
            .unwrap_or_default(),
        super::html::esc(ticket.as_deref().unwrap_or_default()),
    );
    for n in &rows {
        let attempts: Vec<String> = n
            .attempts
            .iter()
            .map(|a| super::html::esc(&format!("{} via {}: {}", a.channel, a.provider, a.status)))
            .collect();
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td class={}>{}</td><td>{}</td><td>{}</td></tr>",
            super::html::esc(&n.ticket),
            super::html::esc(&n.kind),
            match n.status.as_str() {
                "delivered" => "ok",
                "failed" | "expired" | "refused" => "err",
                _ => "muted",
            },
            super::html::esc(&n.status),
            super::html::esc(n.reason.as_deref().unwrap_or("")),
            attempts.join("<br>"),
        );
    }
    body.push_str("</table>");
    if costs_shown {
        let taken = journal::ask(&s.journal, TakenSince { days: 30 })
            .await
            .unwrap_or_default();
        let all = protocol::figures(&taken, &crate::clock::local_day, None);
        body.push_str(&cost_section(&all, &protocol::recommendations(&all, 30)));
    }
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!doctype html><html lang=en><head><meta charset=utf-8><title>clinic-gateway: messages</title>\
             <style>{}</style></head><body>{body}</body></html>",
            super::page::STYLE
        ))
}

/// The last 30 days per provider: a bar chart of cost (inline SVG, no script), the figures,
/// and the recommendation.
fn cost_section(all: &[protocol::Figures], advice: &[String]) -> String {
    let mut out = String::from("<h2>Costs, last 30 days</h2>");
    let max = all.iter().map(|f| f.cost).fold(0.0_f64, f64::max);
    let (bar_h, width) = (22, 420.0);
    let _ = write!(
        out,
        "<svg role=img aria-label=\"cost per provider\" width=640 height={} xmlns=\"http://www.w3.org/2000/svg\">",
        all.len() * bar_h + 4
    );
    for (i, f) in all.iter().enumerate() {
        let w = if max > 0.0 { f.cost / max * width } else { 0.0 };
        let y = i * bar_h;
        let _ = write!(
            out,
            "<text x=0 y={} font-size=12>{} ({})</text><rect x=150 y={} width={w:.1} height=16 fill=\"#1d4a8f\"/>\
             <text x={:.1} y={} font-size=12>{:.2}</text>",
            y + 13,
            super::html::esc(&f.provider),
            super::html::esc(&f.channel),
            y + 2,
            150.0 + w + 4.0,
            y + 13,
            f.cost
        );
    }
    out.push_str("</svg><table><tr><th>Provider</th><th>Channel</th><th>Messages</th><th>Segments</th><th>Delivery rate</th><th>Median latency</th><th>Cost</th></tr>");
    for f in all {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td></tr>",
            super::html::esc(&f.provider),
            super::html::esc(&f.channel),
            f.messages,
            f.segments,
            f.delivery_rate
                .map(|r| format!("{:.1} %", r * 100.0))
                .unwrap_or_else(|| "–".into()),
            f.median_latency_ms
                .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
                .unwrap_or_else(|| "–".into()),
            f.cost
        );
    }
    out.push_str("</table>");
    for a in advice {
        let _ = write!(out, "<p>{}</p>", super::html::esc(a));
    }
    out
}
