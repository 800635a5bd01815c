//! The HTTP side of rate limits: after the guard has named a request's client (an API key or
//! a staff member), the client's budget is drawn and a request over it answered 429 with
//! `Retry-After`; the guard's refusals draw from a budget of the peer's address, and past it
//! are answered 429 and no longer audited one by one. Check-in and calls draw first from a
//! budget of their own. A client over its limit is audited once per audit window.
//!
//! **Invariant:** with `[access]` or its rate limits disabled, nothing here refuses anything.

use super::config::{AccessConfig, RateLimits};
use super::policy;
use super::ratelimit::{Lane, Limiter, Rate, Verdict};
use crate::journal::{self, AuditRecord, JournalWriter};
use actix::Addr;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpRequest, HttpResponse, web};
use serde_json::json;
use std::sync::Mutex;
use std::time::Instant;

/// The routes whose budget is kept apart: the desk's check-in and calling a patient.
const CRITICAL: &[(&str, &str)] = &[
    ("POST", "/api/v1/queues/{}/check-in"),
    ("POST", "/api/v1/queues/{}/call-next"),
    ("POST", "/api/v1/queue-entries/{}/call"),
];

/// Every client's budget, shared by the server's workers.
pub struct Throttle {
    limits: RateLimits,
    /// Off with `[access]` off: without logins there are no clients to tell apart.
    enabled: bool,
    journal: Addr<JournalWriter>,
    limiter: Mutex<Limiter>,
    /// Buckets count time from here, so that a wall-clock step neither refills nor drains them.
    started: Instant,
}

/// Marks a refused request whose peer is over its budget: answered 429 after this many
/// seconds.
#[derive(Debug, Clone, Copy)]
struct Throttled(u64);

fn rate(per_second: f64, burst: u32) -> Rate {
    Rate {
        per_second,
        burst: f64::from(burst),
    }
}

impl Throttle {
    pub fn new(config: &AccessConfig, journal: Addr<JournalWriter>) -> Throttle {
        let limits = config.rate_limits.clone();
        let all = [
            rate(limits.per_second, limits.burst),
            rate(limits.critical_per_second, limits.critical_burst),
            rate(limits.refused_per_second, limits.refused_burst),
        ];
        let fill_s = all
            .into_iter()
            .chain(limits.clients.values().map(|c| rate(c.per_second, c.burst)))
            .map(|r| r.burst / r.per_second)
            .fold(0.0, f64::max);
        let window_ms = limits
            .audit_window_secs
            .saturating_mul(1000)
            .min(i64::MAX as u64) as i64;
        Throttle {
            enabled: config.enabled && limits.enabled,
            limiter: Mutex::new(Limiter::new(window_ms, (fill_s * 1000.0).ceil() as i64)),
            limits,
            journal,
            started: Instant::now(),
        }
    }

    fn check(&self, client: &str, lanes: &[(Lane, Rate)]) -> Verdict {
        let now = self.started.elapsed().as_millis().min(i64::MAX as u128) as i64;
        // A poisoned lock only means another worker panicked mid-check; the buckets are
        // plain numbers and still usable.
        let mut limiter = self
            .limiter
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        limiter.check(client, lanes, now)
    }

    /// The general budget of `client`: its own if configured.
    fn general(&self, client: &str) -> Rate {
        let l = &self.limits;
        l.clients
            .get(client)
            .map_or(rate(l.per_second, l.burst), |c| rate(c.per_second, c.burst))
    }

    async fn audit(&self, req: &HttpRequest, actor: &str, lane: Lane, retry_after: u64) {
        let detail = json!({
            "lane": lane.as_str(),
            "retry_after": retry_after,
            "method": req.method().as_str(),
            "peer": peer_ip(req),
        });
        let record = AuditRecord {
            actor: actor.into(),
            action: "access.rate_limited".into(),
            detail: detail.to_string(),
        };
        tracing::warn!(actor, lane = lane.as_str(), "client over its rate limit");
        if let Err(e) = journal::ask(&self.journal, record).await {
            tracing::warn!(error = %e, "rate limit not audited");
        }
    }
}

fn peer_ip(req: &HttpRequest) -> String {
    req.peer_addr()
        .map_or_else(|| "unknown".into(), |a| a.ip().to_string())
}

fn too_many(retry_after: u64) -> HttpResponse {
    HttpResponse::TooManyRequests()
        .insert_header((header::RETRY_AFTER, retry_after.to_string()))
        .json(json!({ "error": "too many requests" }))
}

/// Whether the guard should audit a refusal of `req`: not once the peer is over its budget of
/// refusals, when the refusal is answered 429 instead (by [`refusals`]) and the peer audited
/// once per window.
pub async fn refused(req: &HttpRequest) -> bool {
    let Some(throttle) = req.app_data::<web::Data<Throttle>>() else {
        return true;
    };
    if !throttle.enabled {
        return true;
    }
    let l = &throttle.limits;
    let ip = peer_ip(req);
    let lanes = [(Lane::Refused, rate(l.refused_per_second, l.refused_burst))];
    match throttle.check(&format!("peer:{ip}"), &lanes) {
        Verdict::Pass => true,
        Verdict::Over {
            retry_after_secs,
            audit,
        } => {
            req.extensions_mut().insert(Throttled(retry_after_secs));
            if audit {
                throttle
                    .audit(req, "anonymous", Lane::Refused, retry_after_secs)
                    .await;
            }
            false
        }
    }
}

/// Wraps the guard: a refusal whose peer is over its budget is answered 429.
pub async fn refusals(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let res = next.call(req).await?.map_into_boxed_body();
    let throttled = res.request().extensions().get::<Throttled>().copied();
    Ok(match throttled {
        Some(Throttled(secs)) => res.into_response(too_many(secs)),
        None => res,
    })
}

/// Runs inside the guard: draws the budget of the client the guard let through.
pub async fn clients(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let throttle = req
        .app_data::<web::Data<Throttle>>()
        .filter(|t| t.enabled)
        .cloned();
    let client = super::audit_actor(req.request());
    let (Some(throttle), Some(client)) = (throttle, client) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let general = (Lane::General, throttle.general(&client));
    let method = req.method().as_str();
    let critical = CRITICAL
        .iter()
        .any(|(m, p)| *m == method && policy::matches(p, req.path()));
    let l = &throttle.limits;
    let verdict = if critical {
        let reserved = rate(l.critical_per_second, l.critical_burst);
        throttle.check(&client, &[(Lane::Critical, reserved), general])
    } else {
        throttle.check(&client, &[general])
    };
    match verdict {
        Verdict::Pass => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body),
        Verdict::Over {
            retry_after_secs,
            audit,
        } => {
            if audit {
                let lane = if critical {
                    Lane::Critical
                } else {
                    Lane::General
                };
                throttle
                    .audit(req.request(), &client, lane, retry_after_secs)
                    .await;
            }
            Ok(req.into_response(too_many(retry_after_secs)))
        }
    }
}
