//! Patient messaging on the API: each notification with its attempts and receipts
//! (`GET /api/v1/notifications`), for the queue's staff. Tickets, channels, providers and
//! statuses only: never a number, an address or a message's text.

use super::{AppState, journal_error};
use crate::journal;
use crate::messaging::ListNotifications;
use actix_web::{HttpResponse, web};
use serde::Deserialize;

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
