//! The local status page and JSON API (actix-web), bound to loopback by default.
//!
//! `GET /` is the staff page; `/api/v1/*` the JSON API; `/metrics` the Prometheus scrape.
//! `POST /api/v1/events` is the generic inbound path: an item is committed to the journal
//! before it is acknowledged.
//!
//! **Invariant:** no patient data on the status page: it shows kinds, ids, counts and errors,
//! never payloads or ordering keys (a key may be a patient id). With logins on, clinical staff
//! and admins open an EHR conflict's values on its own page; that view, and every API answer
//! carrying patient data, is audited first (who, role, which patients, why).

mod admin;
mod billing;
mod bodies;
pub mod config;
mod eligibility;
#[cfg(feature = "fault-hooks")]
mod faults;
mod fhir;
mod html;
mod messaging;
mod page;
mod payments;
mod preview;
mod reports;
pub mod tls;

use crate::access;
use crate::connectors::fhir::{Found, LookupQuery};
use crate::facility::{self, FacilityError, FacilitySlot};
use crate::journal::{
    self, Append, GetStats, JournalError, JournalWriter, ListDead, NewItem, Replay,
};
use crate::metrics::{self, METRICS};
use crate::queue;
use crate::reload::ReloadConfig;
use crate::supervisor::{ActorHealth, GetHealth, HealthState, Supervisor};
use actix::Addr;
use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, dev::Server, web};
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;

#[derive(Clone)]
pub struct AppState {
    pub journal: Addr<JournalWriter>,
    pub supervisor: Addr<Supervisor>,
    /// Where a reload request goes (the daemon).
    pub reload: actix::Recipient<ReloadConfig>,
    /// The facility rules (rooms), when configured.
    pub rooms: FacilitySlot,
    pub facility: String,
    pub started_at: i64,
    /// Configured kiosk printers, for check-in tickets and their preview.
    pub printers: crate::devices::printer::Registry,
    /// The FHIR connector, when one runs.
    pub fhir: crate::connectors::fhir::FhirSlot,
    /// Staff logins; when disabled, every route is open as on a loopback-only gateway.
    pub access: crate::access::config::AccessConfig,
    /// Single sign-on, when `[access.oidc]` is configured.
    pub sso: Option<std::sync::Arc<crate::access::oidc::Sso>>,
    /// SHA-256 fingerprint of the certificate served, when the page and API speak HTTPS.
    pub tls_fingerprint: Option<String>,
    /// Payers, processors and the billing table, as last configured.
    pub practice: PracticeSlot,
}

/// What the desk's routes read of the practice-management configuration, replaced whole when
/// the configuration is reloaded (the connectors behind it are restarted with the same one).
#[derive(Default)]
pub struct Practice {
    /// The eligibility connector's payers, when one is configured.
    pub eligibility: Option<crate::connectors::practice::config::EligibilityConfig>,
    /// The payment processors, with their files resolved, when payments are configured.
    pub payments: Option<crate::connectors::payments::config::PaymentsConfig>,
    /// What a payment a webhook settles does beyond its row, when payments are configured.
    pub payment_effects: Option<crate::connectors::payments::Effects>,
    /// The billing code table and fee schedule, when configured.
    pub billing: Option<std::sync::Arc<crate::connectors::practice::billing::Billing>>,
}

/// Where the web layer finds the current [`Practice`]; a request keeps the one it began with.
#[derive(Clone, Default)]
pub struct PracticeSlot(std::sync::Arc<std::sync::RwLock<std::sync::Arc<Practice>>>);

impl PracticeSlot {
    pub fn new(practice: Practice) -> Self {
        PracticeSlot(std::sync::Arc::new(std::sync::RwLock::new(
            std::sync::Arc::new(practice),
        )))
    }

    pub fn get(&self) -> std::sync::Arc<Practice> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, practice: Practice) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(practice);
    }
}

/// Builds the server on `bind`, HTTPS when given a TLS configuration; the caller runs it.
pub fn server(
    bind: SocketAddr,
    tls: Option<rustls::ServerConfig>,
    state: AppState,
) -> std::io::Result<Server> {
    let gate = access::http::Gate {
        journal: state.journal.clone(),
        config: state.access.clone(),
    };
    let api = crate::fhir_api::Api {
        journal: state.journal.clone(),
        facility: state.facility.clone(),
    };
    let issuer = access::token::Issuer {
        journal: state.journal.clone(),
        lifetime_secs: state.access.token_lifetime_secs,
    };
    let throttle = web::Data::new(access::throttle::Throttle::new(
        &state.access,
        state.journal.clone(),
    ));
    let server = HttpServer::new(move || {
        let enabled = gate.config.enabled;
        let app = App::new()
            .wrap(actix_web::middleware::from_fn(bodies::audit))
            .wrap(actix_web::middleware::from_fn(access::throttle::clients))
            .wrap(actix_web::middleware::from_fn(access::http::guard))
            .wrap(actix_web::middleware::from_fn(access::throttle::refusals))
            .app_data(throttle.clone())
            .app_data(web::Data::new(gate.clone()))
            .app_data(web::Data::new(api.clone()))
            .app_data(web::Data::new(issuer.clone()))
            .app_data(web::Data::new(state.clone()))
            .app_data(bodies::json(MAX_EVENT_BYTES))
            .route("/", web::get().to(page::index))
            .route("/dlq/replay", web::post().to(page::replay_form))
            .route("/rooms/state", web::post().to(page::room_state_form))
            .route(
                "/notices/acknowledge",
                web::post().to(page::acknowledge_form),
            )
            .route(
                "/fhir/conflicts/resolve",
                web::post().to(page::resolve_form),
            )
            .route("/printers/{name}/preview", web::get().to(preview::ticket))
            .route("/metrics", web::get().to(metrics_text))
            .route("/api/v1/health", web::get().to(health))
            .route("/api/v1/actors", web::get().to(actors))
            .route("/api/v1/backlog", web::get().to(backlog))
            .route("/api/v1/status", web::get().to(status))
            .route("/api/v1/dlq", web::get().to(dlq_list))
            .route("/api/v1/dlq/replay", web::post().to(dlq_replay))
            .route("/api/v1/events", web::post().to(ingest))
            .route("/api/v1/reload", web::post().to(reload))
            .route("/api/v1/audit", web::get().to(audit))
            .route("/api/v1/notices", web::get().to(notices))
            .route(
                "/api/v1/notifications",
                web::get().to(messaging::notifications),
            )
            .route(
                "/api/v1/messaging/receipts/{provider}",
                web::get().to(messaging::receipt_get),
            )
            .route("/api/v1/messaging/costs", web::get().to(messaging::costs))
            .route("/messaging", web::get().to(messaging::page))
            .route(
                "/api/v1/messaging/receipts/{provider}",
                web::post().to(messaging::receipt_post),
            )
            .route(
                "/api/v1/notices/{id}/acknowledge",
                web::post().to(acknowledge),
            )
            .route("/api/v1/alerts", web::get().to(alerts))
            .route("/api/v1/specimens", web::get().to(specimens))
            .route("/api/v1/alerts/{id}/ack", web::post().to(acknowledge_alert))
            .route("/alerts/ack", web::post().to(page::acknowledge_alert_form))
            .route(
                "/payments/cancel",
                web::post().to(page::cancel_left_open_form),
            )
            .route("/api/v1/hl7/outbound", web::post().to(hl7_outbound))
            .route(
                "/api/v1/integrations/{name}/resume",
                web::post().to(resume_integration),
            )
            .route("/api/v1/rooms", web::get().to(rooms))
            .route("/api/v1/rooms/{room}/state", web::post().to(room_state))
            .route("/api/v1/queues", web::get().to(queue_list))
            .route(
                "/api/v1/queues/{queue}/check-in",
                web::post().to(queue_check_in),
            )
            .route(
                "/api/v1/queues/{queue}/call-next",
                web::post().to(queue_call_next),
            )
            // Before the entries' actions, whose `{action}` would take `eligibility` and `payments`.
            .configure(eligibility::routes)
            .configure(payments::routes)
            .configure(billing::routes)
            .configure(reports::routes)
            .route(
                "/api/v1/queue-entries/{id}/{action}",
                web::post().to(queue_act),
            )
            .configure(fhir::routes)
            .configure(|cfg| {
                if enabled {
                    access::http::routes(cfg);
                    access::token::routes(cfg);
                    crate::fhir_api::routes(cfg);
                    admin::routes(cfg);
                    access::passkey::routes(cfg);
                    cfg.route("/fhir/conflicts/{id}", web::get().to(page::conflict_page));
                }
                if let Some(sso) = state.sso.clone().filter(|_| enabled) {
                    cfg.app_data(web::Data::from(sso));
                    access::oidc::routes(cfg);
                }
            });
        #[cfg(feature = "fault-hooks")]
        let app = app.configure(faults::routes);
        app
    })
    .on_connect(tls::on_connect)
    .workers(1)
    .shutdown_timeout(2);
    let server = match tls {
        Some(config) => server.bind_rustls_0_23(bind, config)?,
        None => server.bind(bind)?,
    };
    Ok(server.run())
}

/// Largest inbound item accepted over the API.
const MAX_EVENT_BYTES: usize = 256 * 1024;

fn journal_error(e: JournalError) -> HttpResponse {
    let status = match e {
        JournalError::Full { .. } | JournalError::DiskFull => StatusCode::INSUFFICIENT_STORAGE,
        JournalError::Rejected(_) => StatusCode::CONFLICT,
        JournalError::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    HttpResponse::build(status)
        .json(json!({ "error": e.to_string(), "retryable": e.is_retryable() }))
}

fn facility_error(e: FacilityError) -> HttpResponse {
    match e {
        FacilityError::Journal(e) => journal_error(e),
        FacilityError::UnknownRoom(_) => {
            HttpResponse::NotFound().json(json!({ "error": e.to_string() }))
        }
        FacilityError::Unavailable { .. } => {
            HttpResponse::Conflict().json(json!({ "error": e.to_string() }))
        }
        FacilityError::NotRunning => {
            HttpResponse::ServiceUnavailable().json(json!({ "error": e.to_string() }))
        }
    }
}

/// Asks the facility actor, if rooms are configured; `None` when they are not.
async fn ask_rooms<M>(s: &AppState, msg: M) -> Option<Result<M::Result, FacilityError>>
where
    M: actix::Message + Send + 'static,
    M::Result: Send,
    facility::FacilityActor: actix::Handler<M>,
{
    let addr = s.rooms.addr()?;
    Some(addr.send(msg).await.map_err(|_| FacilityError::NotRunning))
}

/// Refuses cross-site form posts: a page from elsewhere must not replay dead letters through a
/// staff member's browser.
fn same_origin(req: &HttpRequest) -> bool {
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return site == "same-origin" || site == "none";
    }
    match (
        headers.get("origin").and_then(|v| v.to_str().ok()),
        headers.get("host").and_then(|v| v.to_str().ok()),
    ) {
        (Some(origin), Some(host)) => origin.strip_prefix("http://") == Some(host),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

async fn actor_list(s: &AppState) -> Vec<ActorHealth> {
    s.supervisor.send(GetHealth).await.unwrap_or_default()
}

/// `ok` when every actor is healthy, `degraded` when one is not, `down` when the journal does
/// not answer.
fn overall(actors: &[ActorHealth], journal_ok: bool) -> &'static str {
    if !journal_ok {
        "down"
    } else if actors.iter().all(|a| a.state == HealthState::Healthy) {
        "ok"
    } else {
        "degraded"
    }
}

async fn health(s: web::Data<AppState>) -> HttpResponse {
    let journal_ok = journal::ask(&s.journal, journal::Ping).await.is_ok();
    let actors = actor_list(&s).await;
    let status = overall(&actors, journal_ok);
    let body = json!({
        "status": status,
        "facility": s.facility,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": (journal::now_ms() - s.started_at) / 1000,
        "journal": if journal_ok { "ok" } else { "not answering" },
    });
    let code = if journal_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    HttpResponse::build(code).json(body)
}

async fn actors(s: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(actor_list(&s).await)
}

async fn backlog(s: web::Data<AppState>) -> HttpResponse {
    match journal::ask(&s.journal, GetStats).await {
        Ok(stats) => HttpResponse::Ok().json(stats),
        Err(e) => journal_error(e),
    }
}

/// Health, actors and backlog in one answer, for `clinic-gateway status`.
async fn status(s: web::Data<AppState>) -> HttpResponse {
    let actors = actor_list(&s).await;
    let stats = journal::ask(&s.journal, GetStats).await;
    let body = json!({
        "status": overall(&actors, stats.is_ok()),
        "facility": s.facility,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": (journal::now_ms() - s.started_at) / 1000,
        "tls_fingerprint": s.tls_fingerprint,
        "actors": actors,
        "journal": stats.map_err(|e| e.to_string()).map_or_else(|e| json!({ "error": e }), |s| json!(s)),
    });
    HttpResponse::Ok().json(body)
}

async fn metrics_text(s: web::Data<AppState>) -> HttpResponse {
    let mut backlog = Vec::new();
    if let Ok(stats) = journal::ask(&s.journal, GetStats).await {
        for (dest, d) in stats.destinations {
            backlog.push((dest.clone(), "pending", d.pending));
            backlog.push((dest.clone(), "in_flight", d.in_flight));
            backlog.push((dest, "dead", d.dead));
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics::render(&backlog))
}

#[derive(Deserialize)]
struct DlqQuery {
    destination: Option<String>,
    limit: Option<usize>,
}

async fn dlq_list(s: web::Data<AppState>, q: web::Query<DlqQuery>) -> HttpResponse {
    let q = q.into_inner();
    let msg = ListDead {
        destination: q.destination,
        limit: q.limit.unwrap_or(100).min(1000),
    };
    match journal::ask(&s.journal, msg).await {
        Ok(rows) => HttpResponse::Ok().json(rows),
        Err(e) => journal_error(e),
    }
}

/// `POST /api/v1/integrations/{name}/resume`: an admin re-authorizes a suspended integration
/// (admin-only: the route is not in the policy's table); 404 if it is not suspended.
async fn resume_integration(
    s: web::Data<AppState>,
    req: HttpRequest,
    name: web::Path<String>,
) -> HttpResponse {
    if !same_origin(&req) {
        return HttpResponse::Forbidden().json(json!({ "error": "cross-site request refused" }));
    }
    let name = name.into_inner();
    let resume = crate::suspension::Resume {
        name: name.clone(),
        by: by_staff(&req, "api"),
    };
    match journal::ask(&s.journal, resume).await {
        Ok(()) => HttpResponse::Ok().json(json!({ "resumed": name })),
        Err(e) => journal_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    destination: String,
    #[serde(default)]
    id: Option<i64>,
    #[serde(default)]
    all: bool,
}

async fn dlq_replay(
    s: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<ReplayBody>,
) -> HttpResponse {
    if !same_origin(&req) {
        return HttpResponse::Forbidden().json(json!({ "error": "cross-site request refused" }));
    }
    let b = body.into_inner();
    if b.id.is_some() == b.all {
        return HttpResponse::BadRequest()
            .json(json!({ "error": "give either \"id\" or \"all\": true" }));
    }
    let by = by_staff(&req, "api");
    match journal::ask(
        &s.journal,
        Replay {
            destination: b.destination,
            id: b.id,
            by,
        },
    )
    .await
    {
        Ok(n) => HttpResponse::Ok().json(json!({ "replayed": n })),
        Err(e) => journal_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboundHl7 {
    /// The ER7 text; segments end in CR, LF or CRLF.
    message: String,
}

/// Queues an HL7 v2 message for the EHR (`ehr-mllp`); its MSH-10 makes a resend idempotent.
async fn hl7_outbound(s: web::Data<AppState>, body: web::Json<OutboundHl7>) -> HttpResponse {
    let text = body
        .into_inner()
        .message
        .replace("\r\n", "\r")
        .replace('\n', "\r");
    let parsed = match hl7_2::parse(&text) {
        Ok(m) => m,
        Err(e) => {
            return HttpResponse::BadRequest()
                .json(json!({ "error": format!("\"message\": not an HL7 v2 message: {e}") }));
        }
    };
    let field = |p: &str| parsed.get(p).ok().flatten().unwrap_or_default();
    let control = field("MSH-10");
    if control.is_empty() {
        return HttpResponse::BadRequest()
            .json(json!({ "error": "\"message\": MSH-10 (control id) is empty" }));
    }
    let (code, trigger) = (field("MSH-9.1"), field("MSH-9.2"));
    let patient = field("PID-3.1");
    let item = NewItem {
        source: "api:hl7-out".into(),
        source_id: Some(control),
        kind: format!(
            "hl7.outbound.{}",
            format!("{code}_{trigger}").to_lowercase()
        ),
        key: if patient.is_empty() {
            "hl7-out".into()
        } else {
            format!("patient:{patient}")
        },
        schema: format!("hl7v2/{code}_{trigger}@{}", field("MSH-12.1")),
        payload: text.into_bytes(),
        reply: None,
        occurred_at: None,
        destinations: vec![crate::connectors::hl7v2::sender::DESTINATION.into()],
    };
    match journal::ask(&s.journal, Append(item)).await {
        Ok(r) => HttpResponse::Accepted()
            .json(json!({ "event_id": r.event_id, "duplicate": r.duplicate })),
        Err(e) => journal_error(e),
    }
}

#[derive(Deserialize)]
struct QueueQuery {
    queue: Option<String>,
    /// Also the entries closed since then (ms since the epoch): the day's finished visits.
    closed_since: Option<i64>,
}

async fn queue_list(s: web::Data<AppState>, q: web::Query<QueueQuery>) -> HttpResponse {
    let q = q.into_inner();
    let msg = crate::queue::QueueList {
        queue: q.queue,
        closed_since: q.closed_since,
    };
    match journal::ask(&s.journal, msg).await {
        Ok(entries) => HttpResponse::Ok().json(entries),
        Err(e) => journal_error(e),
    }
}

fn bad_queue(name: &str) -> Option<HttpResponse> {
    (!queue::valid_queue_name(name)).then(|| {
        HttpResponse::BadRequest()
            .json(json!({ "error": "queue name: 1 to 32 letters, digits, '-', '_'" }))
    })
}

async fn queue_check_in(
    s: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<eligibility::CheckInBody>,
) -> HttpResponse {
    let name = path.into_inner();
    if let Some(r) = bad_queue(&name) {
        return r;
    }
    let eligibility::CheckInBody {
        mut check_in,
        coverage,
    } = body.into_inner();
    if let Err(msg) = check_in.validate() {
        return HttpResponse::BadRequest().json(json!({ "error": msg }));
    }
    let ticket = match s.printers.order(&name, check_in.printer.as_deref()) {
        Ok(t) => t,
        Err(msg) => return HttpResponse::BadRequest().json(json!({ "error": msg })),
    };
    let printer = ticket.as_ref().map(|t| t.printer.clone());
    // The patient is queued whatever the lookup gives: the clinic keeps running without the EHR.
    let query = LookupQuery {
        identifier: check_in.patient_ref.clone(),
        name: check_in.patient.clone(),
    };
    if query != LookupQuery::default() {
        match crate::connectors::fhir::lookup(&s.fhir, query).await {
            Found::Patient(d) => check_in.demographics = Some(d),
            Found::Nobody => check_in.unknown_to_ehr = true,
            Found::Unknown => {}
        }
    }
    let inquiry = coverage.map(|c| eligibility::inquiry(&s, c, check_in.demographics.as_ref()));
    let work = eligibility::CheckInAsking {
        check_in: crate::queue::QueueCheckIn {
            queue: name,
            check_in,
            ticket,
        },
        inquiry,
    };
    match journal::ask(&s.journal, work).await {
        Ok((entry, duplicate, eligibility)) => HttpResponse::Created().json(json!({
            "entry": entry,
            "duplicate": duplicate,
            // A repeated request printed nothing new.
            "printer": if duplicate { None } else { printer },
            "eligibility": eligibility.map(|e| match e {
                Ok(pending) => json!(pending),
                Err(why) => json!({ "error": why }),
            }),
        })),
        Err(e) => journal_error(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RoomBody {
    room: Option<String>,
}

fn room_ok(room: &Option<String>) -> bool {
    room.as_ref()
        .is_none_or(|r| !r.is_empty() && r.len() <= 64 && !r.chars().any(char::is_control))
}

async fn queue_call_next(
    s: web::Data<AppState>,
    path: web::Path<String>,
    body: Option<web::Json<RoomBody>>,
) -> HttpResponse {
    let name = path.into_inner();
    if let Some(r) = bad_queue(&name) {
        return r;
    }
    let room = body.map(|b| b.into_inner().room).unwrap_or_default();
    if !room_ok(&room) {
        return HttpResponse::BadRequest()
            .json(json!({ "error": "\"room\": 1 to 64 printable characters" }));
    }
    let room = match room {
        Some(room) => match check_room(&s, &room, true).await {
            Some(refused) => return refused,
            None => Some(room),
        },
        None => match ask_rooms(
            &s,
            facility::OfferRoom {
                queue: name.clone(),
            },
        )
        .await
        {
            Some(Ok(Ok(offered))) => offered,
            Some(Ok(Err(e)) | Err(e)) => return facility_error(e),
            None => None,
        },
    };
    match journal::ask(
        &s.journal,
        crate::queue::QueueCallNext { queue: name, room },
    )
    .await
    {
        Ok(entry) => HttpResponse::Ok().json(json!({ "entry": entry })),
        Err(e) => journal_error(e),
    }
}

async fn queue_act(
    s: web::Data<AppState>,
    path: web::Path<(i64, String)>,
    body: Option<web::Json<RoomBody>>,
) -> HttpResponse {
    let (id, action) = path.into_inner();
    let room = body.map(|b| b.into_inner().room).unwrap_or_default();
    if !room_ok(&room) {
        return HttpResponse::BadRequest()
            .json(json!({ "error": "\"room\": 1 to 64 printable characters" }));
    }
    let action = match (action.as_str(), room) {
        ("call", room) => queue::Action::Call { room },
        ("assign-room", Some(room)) => queue::Action::AssignRoom { room },
        ("assign-room", None) => {
            return HttpResponse::BadRequest().json(json!({ "error": "\"room\" is required" }));
        }
        ("complete", _) => queue::Action::Complete,
        ("no-show", _) => queue::Action::NoShow,
        ("cancel", _) => queue::Action::Cancel,
        ("left", _) => queue::Action::Left,
        (other, _) => {
            return HttpResponse::NotFound().json(json!({ "error": format!("unknown action {other:?}; one of call, assign-room, complete, no-show, cancel, left") }));
        }
    };
    let wanted = match &action {
        queue::Action::Call { room: Some(room) } => Some((room, true)),
        queue::Action::AssignRoom { room } => Some((room, false)),
        _ => None,
    };
    if let Some((room, call)) = wanted
        && let Some(refused) = check_room(&s, room, call).await
    {
        return refused;
    }
    match journal::ask(&s.journal, crate::queue::QueueAct { id, action }).await {
        Ok(entry) => HttpResponse::Ok().json(entry),
        Err(e) => journal_error(e),
    }
}

/// The refusal when `room` cannot take a patient now (see [`facility::CheckRoom`]).
async fn check_room(s: &AppState, room: &str, call: bool) -> Option<HttpResponse> {
    let check = facility::CheckRoom {
        room: room.into(),
        call,
    };
    match ask_rooms(s, check).await? {
        Ok(Ok(())) => None,
        Ok(Err(e)) | Err(e) => Some(facility_error(e)),
    }
}

async fn rooms(s: web::Data<AppState>) -> HttpResponse {
    match ask_rooms(&s, facility::GetFacility).await {
        Some(Ok(view)) => HttpResponse::Ok().json(view),
        Some(Err(e)) => facility_error(e),
        None => HttpResponse::Ok().json(json!({ "rooms": [], "rules": [] })),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomStateBody {
    /// `needs_cleaning`, `out_of_service` or `in_service`.
    state: String,
    #[serde(default)]
    reason: Option<String>,
    /// Who asks (a staff member's name or station), for the audit.
    #[serde(default)]
    by: Option<String>,
}

async fn room_state(
    s: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<RoomStateBody>,
) -> HttpResponse {
    let body = body.into_inner();
    let hold = match facility::rules::parse_room_state(&body.state) {
        Ok(h) => h,
        Err(e) => return HttpResponse::BadRequest().json(json!({ "error": e })),
    };
    let printable = |v: &Option<String>| {
        v.as_ref()
            .is_none_or(|t| t.len() <= 200 && !t.chars().any(char::is_control))
    };
    if !printable(&body.reason) || !printable(&body.by) {
        return HttpResponse::BadRequest()
            .json(json!({ "error": "\"reason\" and \"by\": at most 200 printable characters" }));
    }
    let set = facility::SetHold {
        room: path.into_inner(),
        hold: hold.map(|h| (h, body.reason)),
        by: staff_or(&req, body.by.as_deref()),
    };
    match ask_rooms(&s, set).await {
        Some(Ok(Ok(room))) => HttpResponse::Ok().json(room),
        Some(Ok(Err(e)) | Err(e)) => facility_error(e),
        None => HttpResponse::NotFound()
            .json(json!({ "error": "no rooms are configured on this gateway" })),
    }
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<usize>,
    after: Option<i64>,
}

async fn audit(s: web::Data<AppState>, q: web::Query<AuditQuery>) -> HttpResponse {
    let list = journal::ListAudit {
        after: q.after,
        limit: q.limit.unwrap_or(100).min(1000),
    };
    match journal::ask(&s.journal, list).await {
        Ok(rows) => HttpResponse::Ok().json(rows),
        Err(e) => journal_error(e),
    }
}

#[derive(Deserialize)]
struct NoticeQuery {
    all: Option<bool>,
    limit: Option<usize>,
}

/// Staff notices, newest first: the open ones, or with `?all=true` also acknowledged ones.
async fn notices(s: web::Data<AppState>, q: web::Query<NoticeQuery>) -> HttpResponse {
    let list = crate::notices::ListNotices {
        all: q.all.unwrap_or(false),
        limit: q.limit.unwrap_or(100).min(1000),
    };
    match journal::ask(&s.journal, list).await {
        Ok(rows) => HttpResponse::Ok().json(rows),
        Err(e) => journal_error(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AckBody {
    by: Option<String>,
}

/// Who acknowledges, for the audit (see [`staff_or`]); a `by` in the body that cannot be
/// recorded is refused with 400.
fn acknowledged_by(
    req: &HttpRequest,
    body: Option<web::Json<AckBody>>,
) -> Result<String, &'static str> {
    let by = body.and_then(|b| b.into_inner().by);
    if by
        .as_ref()
        .is_some_and(|b| b.len() > 200 || b.chars().any(char::is_control))
    {
        return Err("\"by\": at most 200 printable characters");
    }
    Ok(staff_or(req, by.as_deref()))
}

async fn acknowledge(
    s: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
    body: Option<web::Json<AckBody>>,
) -> HttpResponse {
    let by = match acknowledged_by(&req, body) {
        Ok(by) => by,
        Err(e) => return HttpResponse::BadRequest().json(json!({ "error": e })),
    };
    let ack = crate::notices::AckNotice {
        id: path.into_inner(),
        by,
    };
    match journal::ask(&s.journal, ack).await {
        Ok(()) => HttpResponse::Ok().json(json!({ "acknowledged": true })),
        Err(e) => journal_error(e),
    }
}

/// Clinical alerts, newest first: the open ones, or with `?all=true` also acknowledged ones.
async fn alerts(s: web::Data<AppState>, q: web::Query<NoticeQuery>) -> HttpResponse {
    let list = crate::alerts::ListAlerts {
        all: q.all.unwrap_or(false),
        limit: q.limit.unwrap_or(100).min(1000),
    };
    match journal::ask(&s.journal, list).await {
        Ok(rows) => HttpResponse::Ok().json(rows),
        Err(e) => journal_error(e),
    }
}

/// The lab specimens of the open queue entries: ids, codes and states, never a result.
async fn specimens(s: web::Data<AppState>) -> HttpResponse {
    let list = crate::connectors::lab::tracking::ListSpecimens;
    match journal::ask(&s.journal, list).await {
        Ok(rows) => HttpResponse::Ok().json(rows),
        Err(e) => journal_error(e),
    }
}

/// Acknowledges a clinical alert, audited with the staff member (or the key's system, or the
/// name given without logins).
async fn acknowledge_alert(
    s: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
    body: Option<web::Json<AckBody>>,
) -> HttpResponse {
    let by = match acknowledged_by(&req, body) {
        Ok(by) => by,
        Err(e) => return HttpResponse::BadRequest().json(json!({ "error": e })),
    };
    let ack = crate::alerts::AckAlert {
        id: path.into_inner(),
        by,
    };
    match journal::ask(&s.journal, ack).await {
        Ok(alert) => HttpResponse::Ok().json(alert),
        Err(e) => journal_error(e),
    }
}

async fn reload(s: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    if !same_origin(&req) {
        return HttpResponse::Forbidden().json(json!({ "error": "cross-site request refused" }));
    }
    match s.reload.send(ReloadConfig { by: by_staff(&req, "api") }).await {
        Ok(Ok(summary)) => HttpResponse::Ok().json(summary),
        Ok(Err(problems)) => HttpResponse::UnprocessableEntity()
            .json(json!({ "error": "configuration refused; the running one is kept", "problems": problems.lines().collect::<Vec<_>>() })),
        Err(_) => HttpResponse::ServiceUnavailable().json(json!({ "error": "shutting down" })),
    }
}

/// Who did it, for the audit: the logged-in staff member or the key's system, else
/// `{channel}:{client address}`.
fn by_staff(req: &HttpRequest, channel: &str) -> String {
    access::audit_actor(req).unwrap_or_else(|| format!("{channel}:{}", peer(req)))
}

/// Who did it, for the audit: the logged-in staff member or the key's system, else `api:` and
/// the name the request gave.
fn staff_or(req: &HttpRequest, given: Option<&str>) -> String {
    access::audit_actor(req).unwrap_or_else(|| format!("api:{}", given.unwrap_or("staff")))
}

fn peer(req: &HttpRequest) -> String {
    req.peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// An inbound item as posted to `/api/v1/events`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventIn {
    /// The sending system (e.g. `kiosk-1`).
    source: String,
    /// The sender's unique id for this item; a resend with the same id is not processed twice.
    id: Option<String>,
    kind: String,
    key: String,
    payload: serde_json::Value,
    /// When it happened (RFC 3339); default: now.
    occurred_at: Option<String>,
}

fn token_ok(s: &str, max: usize, extra: &[char]) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
}

/// Checks an inbound item; the message says which field is wrong.
fn validate(e: &EventIn) -> Result<Option<i64>, String> {
    if !token_ok(&e.source, 64, &['-', '_', '.', ':']) {
        return Err("\"source\": 1 to 64 letters, digits, '-', '_', '.', ':'".into());
    }
    if let Some(id) = &e.id
        && (id.is_empty() || id.len() > 128 || id.chars().any(char::is_control))
    {
        return Err("\"id\": 1 to 128 printable characters".into());
    }
    // The kind becomes an MQTT topic level: no '/', '+', '#'.
    if !token_ok(&e.kind, 64, &['-', '_', '.']) {
        return Err("\"kind\": 1 to 64 letters, digits, '-', '_', '.'".into());
    }
    if e.key.is_empty() || e.key.len() > 128 || e.key.chars().any(char::is_control) {
        return Err("\"key\": 1 to 128 printable characters".into());
    }
    match &e.occurred_at {
        None => Ok(None),
        Some(t) => humantime::parse_rfc3339_weak(t)
            .map_err(|err| format!("\"occurred_at\": not an RFC 3339 time ({err})"))
            .and_then(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| Some(d.as_millis() as i64))
                    .map_err(|_| "\"occurred_at\": before 1970".into())
            }),
    }
}

async fn ingest(s: web::Data<AppState>, body: web::Json<EventIn>) -> HttpResponse {
    let e = body.into_inner();
    let occurred_at = match validate(&e) {
        Ok(t) => t,
        Err(msg) => return HttpResponse::BadRequest().json(json!({ "error": msg })),
    };
    let item = NewItem {
        source: format!("api:{}", e.source),
        source_id: e.id,
        kind: e.kind.clone(),
        key: e.key,
        schema: format!("{}@1", e.kind),
        payload: e.payload.to_string().into_bytes(),
        reply: None,
        occurred_at,
        destinations: vec![crate::CLOUD.into()],
    };
    match journal::ask(&s.journal, Append(item)).await {
        Ok(r) => HttpResponse::Accepted()
            .json(json!({ "event_id": r.event_id, "duplicate": r.duplicate })),
        Err(e) => {
            METRICS.inbound_refused.add(1);
            tracing::warn!(error = %e, "inbound item refused");
            journal_error(e)
        }
    }
}
