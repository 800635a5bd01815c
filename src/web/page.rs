//! The staff status page: server-rendered HTML that reads at a glance and refreshes itself.

use super::{AppState, actor_list, ask_rooms, by_staff, facility_error, overall, same_origin};
use crate::access::{KeySummary, Role, Staff, UserSummary, policy};
use crate::alerts::{AckAlert, Alert, ListAlerts};
use crate::connectors::fhir::protocol::{Conflict, Fields, Side, fields};
use crate::connectors::fhir::requests::{FhirConflicts, FhirResolve};
use crate::connectors::lab::store::SpecimenRow;
use crate::connectors::lab::tracking::ListSpecimens;
use crate::connectors::payments::store::AttemptState;
use crate::connectors::payments::{CancelLeftOpen, LeftBehind, ListLeftBehind};
use crate::connectors::pharmacy::ListPrescriptions;
use crate::facility::{self, FacilityView, RoomStatus};
use crate::journal::{self, DeadLetter, GetStats, ListDead, Replay, Stats};
use crate::notices::{AckNotice, ListNotices, Notice};
use crate::queue::QueueList;
use crate::queue::{Entry, Priority};
use crate::supervisor::ActorHealth;
use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write;

use super::html::{age, esc};

/// Reloads the page every 10 s unless the visitor has started filling a form or a message is
/// showing (a passkey's outcome): a plain `<meta refresh>` would throw either away.
const REFRESH: &str = "<script>let edited=false;document.addEventListener(\"input\",()=>{edited=true});\
setInterval(()=>{if(!edited&&!document.querySelector(\"[role=status]:not(:empty)\"))location.reload()},10000)</script>";

pub(super) const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2330;background:#f6f7f9}\
h1{font-size:1.4rem;margin:0 0 .2rem}h2{font-size:1.1rem;margin:1.6rem 0 .5rem}\
table{border-collapse:collapse;background:#fff;min-width:40rem}th,td{padding:.45rem .7rem;border-bottom:1px solid #e3e6eb;text-align:left;vertical-align:top}\
th{background:#eef1f5;font-weight:600}.badge{display:inline-block;padding:.1rem .55rem;border-radius:1rem;font-weight:600;font-size:.9rem}\
.healthy,.ok{background:#d8f3e1;color:#11623a}.starting{background:#e3ecfb;color:#1d4a8f}.degraded{background:#fff1cc;color:#7a5300}\
.down{background:#fbdede;color:#8f1d1d}.muted{color:#687083}.err{color:#8f1d1d;max-width:36rem}\
button{padding:.3rem .8rem;border-radius:.3rem;border:1px solid #1d4a8f;background:#1d4a8f;color:#fff;cursor:pointer}\
.bar{background:#e3e6eb;border-radius:.3rem;height:.8rem;width:20rem}.bar>div{background:#1d4a8f;height:100%;border-radius:.3rem}";

/// Which parts of the page a visitor sees and may use: all of it without logins, else what
/// the route table lets their role read and do, so that the page shows nothing its API would
/// refuse them.
#[derive(Debug, Clone, Copy)]
struct Shown {
    notices: bool,
    alerts: bool,
    /// Lab specimens and the delays added to entries: clinical staff, like alerts.
    specimens: bool,
    conflicts: bool,
    queue: bool,
    rooms: bool,
    room_actions: bool,
    devices: bool,
    backlog: bool,
    dead: bool,
    replay: bool,
    /// Intents left open at processors and payments taken twice, with the cancel button.
    left_behind: bool,
    /// The link to the reports: managers and admins.
    reports: bool,
    /// Users and keys: only with logins on, as there is no one to manage without.
    admin: bool,
}

impl Shown {
    fn for_role(role: Option<Role>) -> Shown {
        let may = |method: &str, path: &str| {
            role.is_none_or(|r| policy::permits(policy::allowed(method, path), r))
        };
        Shown {
            notices: may("GET", "/api/v1/notices"),
            alerts: may("GET", "/api/v1/alerts"),
            specimens: may("GET", "/api/v1/specimens"),
            conflicts: may("GET", "/api/v1/fhir/conflicts"),
            queue: may("GET", "/api/v1/queues"),
            rooms: may("GET", "/api/v1/rooms"),
            room_actions: may("POST", "/rooms/state"),
            devices: may("GET", "/api/v1/actors"),
            backlog: may("GET", "/api/v1/backlog"),
            dead: may("GET", "/api/v1/dlq"),
            replay: may("POST", "/dlq/replay"),
            left_behind: may("GET", "/api/v1/payments/left-open"),
            reports: may("GET", "/reports"),
            admin: role.is_some_and(|r| policy::permits(policy::allowed("POST", "/users/add"), r)),
        }
    }
}

pub(super) async fn index(s: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let staff = req.extensions().get::<Staff>().cloned();
    let shown = Shown::for_role(staff.as_ref().map(|s| s.role));
    let actors = actor_list(&s).await;
    let stats = journal::ask(&s.journal, GetStats).await;
    let dead = if shown.dead {
        let list = ListDead {
            destination: None,
            limit: 50,
        };
        journal::ask(&s.journal, list).await.unwrap_or_default()
    } else {
        Vec::new()
    };
    let (entries, prescriptions) = if shown.queue {
        let list = QueueList {
            queue: None,
            closed_since: None,
        };
        (
            journal::ask(&s.journal, list).await.unwrap_or_default(),
            journal::ask(&s.journal, ListPrescriptions)
                .await
                .unwrap_or_default(),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let practice = s.practice.get();
    // The insurance column, when an eligibility connector asks payers.
    let insurance = if shown.queue && practice.eligibility.is_some() {
        let ask = crate::connectors::practice::ListEligibility {
            entry_ids: entries.iter().map(|e| e.id).collect(),
        };
        let found = journal::ask(&s.journal, ask).await.unwrap_or_default();
        Some(found.into_iter().map(|e| (e.entry_id, e)).collect())
    } else {
        None
    };
    // The payment column, when processors take co-pays.
    let payments = if shown.queue && practice.payments.is_some() {
        let ask = crate::connectors::payments::ListPayments {
            entry_ids: entries.iter().map(|e| e.id).collect(),
        };
        let found = journal::ask(&s.journal, ask).await.unwrap_or_default();
        Some(found.into_iter().map(|p| (p.entry_id, p)).collect())
    } else {
        None
    };
    let left_behind = if shown.left_behind && practice.payments.is_some() {
        journal::ask(&s.journal, ListLeftBehind)
            .await
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let notices = if shown.notices {
        let list = ListNotices {
            all: false,
            limit: 50,
        };
        journal::ask(&s.journal, list).await.unwrap_or_default()
    } else {
        Vec::new()
    };
    let alerts = if shown.alerts {
        let list = ListAlerts {
            all: false,
            limit: 50,
        };
        journal::ask(&s.journal, list).await.unwrap_or_default()
    } else {
        Vec::new()
    };
    let specimens = if shown.specimens {
        journal::ask(&s.journal, ListSpecimens)
            .await
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let conflicts = if shown.conflicts {
        journal::ask(&s.journal, FhirConflicts { all: false })
            .await
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let rooms = match shown.rooms {
        true => match ask_rooms(&s, facility::GetFacility).await {
            Some(Ok(view)) => Some(view),
            _ => None,
        },
        false => None,
    };
    let (users, keys) = if shown.admin {
        super::admin::listing(&s).await
    } else {
        (Vec::new(), Vec::new())
    };
    let view = View {
        users: &users,
        keys: &keys,
        actors: &actors,
        stats: stats.as_ref().ok(),
        dead: &dead,
        entries: &entries,
        prescriptions: &prescriptions,
        insurance: insurance.as_ref(),
        payments: payments.as_ref(),
        left_behind: &left_behind,
        notices: &notices,
        alerts: &alerts,
        specimens: &specimens,
        conflicts: &conflicts,
        rooms: rooms.as_ref(),
        shown,
        staff: staff.as_ref(),
    };
    let html = render(&s.facility, &view, journal::now_ms());
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(html)
}

/// Entries' latest eligibility inquiries by entry id.
type Insurance = std::collections::BTreeMap<i64, crate::connectors::practice::store::Eligibility>;

/// Entries' latest payments by entry id.
type Payments = std::collections::BTreeMap<i64, crate::connectors::payments::store::Payment>;

/// What the page shows, as read for one request.
struct View<'a> {
    actors: &'a [ActorHealth],
    stats: Option<&'a Stats>,
    dead: &'a [DeadLetter],
    entries: &'a [Entry],
    prescriptions: &'a [(i64, String)],
    /// Each entry's latest eligibility inquiry by entry id, when a connector asks payers.
    insurance: Option<&'a Insurance>,
    /// Each entry's latest payment by entry id, when processors take co-pays.
    payments: Option<&'a Payments>,
    /// Intents left open at processors and payments taken twice.
    left_behind: &'a [LeftBehind],
    notices: &'a [Notice],
    alerts: &'a [Alert],
    specimens: &'a [SpecimenRow],
    conflicts: &'a [Conflict],
    rooms: Option<&'a FacilityView>,
    shown: Shown,
    /// Who is logged in, when logins are on.
    staff: Option<&'a Staff>,
    users: &'a [UserSummary],
    keys: &'a [KeySummary],
}

/// The hidden field carrying the session's CSRF token in every form, when logins are on.
fn token_field(staff: Option<&Staff>) -> String {
    staff.map_or(String::new(), |s| {
        format!("<input type=hidden name=csrf value=\"{}\">", esc(&s.csrf))
    })
}

fn render(facility: &str, v: &View<'_>, now: i64) -> String {
    let View {
        actors,
        stats,
        dead,
        entries,
        prescriptions,
        insurance,
        payments,
        left_behind,
        notices,
        alerts,
        specimens,
        conflicts,
        rooms,
        shown,
        staff,
        users,
        keys,
    } = *v;
    let token = token_field(staff);
    let status = overall(actors, stats.is_some());
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=en><head><meta charset=utf-8>{REFRESH}\
         <meta name=viewport content=\"width=device-width\"><title>clinic-gateway: {f}</title><style>{STYLE}</style></head><body>\
         <h1>clinic-gateway <span class=muted>{f}</span></h1>\
         <p>Overall: <span class=\"badge {status}\">{status}</span> <span class=muted>version {v}; refreshes every 10 s</span></p>",
        f = esc(facility),
        v = env!("CARGO_PKG_VERSION"),
    );
    if let Some(who) = staff {
        let _ = write!(
            h,
            "<form method=post action=/logout>{token}<span class=muted>{} ({})</span> <button>Log out</button></form>",
            esc(&who.user),
            who.role.as_str(),
        );
    }
    if shown.alerts {
        h.push_str(&alert_list(alerts, now, &token));
    }
    if shown.specimens {
        h.push_str(&specimen_list(specimens, now));
    }
    if shown.notices {
        h.push_str(&notice_list(notices, now, &token));
    }
    if shown.conflicts {
        h.push_str(&conflict_list(conflicts, now, &token, staff.is_some()));
    }
    if shown.queue {
        h.push_str(&queue_board(
            entries,
            prescriptions,
            insurance,
            payments,
            now,
        ));
        h.push_str("<p><a href=\"/messaging\">Patient messages: delivery per ticket</a></p>");
    }
    if shown.left_behind {
        h.push_str(&left_behind_list(left_behind, now, &token));
    }
    if let Some(view) = rooms {
        let actions = if shown.room_actions {
            Some(token.as_str())
        } else {
            None
        };
        h.push_str(&rooms_table(view, now, actions));
    }
    if shown.reports {
        h.push_str("<p><a href=\"/reports\">Reports: no-shows, queue efficiency, revenue, appointments</a></p>");
    }
    if shown.devices {
        devices(&mut h, actors, now);
    }
    if shown.backlog {
        backlog(&mut h, stats, now);
    }
    if shown.dead {
        dead_letters(&mut h, dead, now, shown.replay.then_some(token.as_str()));
    }
    if shown.admin {
        h.push_str(&super::admin::section(users, keys, &token, now));
    }
    if staff.is_some() {
        // A passkey stands in for the TOTP code at the next login (`/passkey.js`).
        h.push_str(
            "<h2>Your passkeys</h2><p><button type=button id=passkey-add>Add a passkey</button> \
             <span id=passkey-status role=status class=muted></span></p><script src=/passkey.js></script>",
        );
    }
    h.push_str("</body></html>");
    h
}

/// The supervised actors with their health.
fn devices(h: &mut String, actors: &[ActorHealth], now: i64) {
    h.push_str("<h2>Devices and connectors</h2><table><tr><th>Name</th><th>Kind</th><th>State</th><th>Since</th><th>Restarts</th><th>Last error</th></tr>");
    if actors.is_empty() {
        h.push_str("<tr><td colspan=6 class=muted>None configured.</td></tr>");
    }
    for a in actors {
        // A kiosk printer links to what its tickets look like.
        let preview = match a.name.strip_prefix("printer:") {
            Some(p) if a.kind == "ticket-printer" => format!(
                " <a href=\"/printers/{p}/preview\">ticket preview</a>",
                p = esc(p)
            ),
            _ => String::new(),
        };
        let _ = write!(
            h,
            "<tr><td>{}{preview}</td><td>{}</td><td><span class=\"badge {st}\">{st}</span></td><td>{}</td><td>{}</td><td class=err>{}</td></tr>",
            esc(&a.name),
            esc(&a.kind),
            age(now, a.since),
            a.restarts,
            esc(a.last_error.as_deref().unwrap_or("")),
            st = a.state.as_str(),
        );
    }
    h.push_str("</table>");
}

/// What waits for each destination, and the journal's size.
fn backlog(h: &mut String, stats: Option<&Stats>, now: i64) {
    h.push_str("<h2>Outbound backlog</h2>");
    match stats {
        None => h.push_str("<p class=err>The journal does not answer.</p>"),
        Some(st) => {
            h.push_str("<table><tr><th>Destination</th><th>Waiting</th><th>Sending</th><th>Dead letters</th><th>Oldest waiting</th></tr>");
            if st.destinations.is_empty() {
                h.push_str("<tr><td colspan=5 class=muted>Nothing waiting.</td></tr>");
            }
            for (name, d) in &st.destinations {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(name),
                    d.pending,
                    d.in_flight,
                    d.dead,
                    d.oldest_pending_at.map(|t| age(now, t)).unwrap_or_default()
                );
            }
            let pct = (st.used_bytes * 100)
                .checked_div(st.max_bytes)
                .unwrap_or(0)
                .min(100);
            let _ = write!(
                h,
                "</table><p>Journal: {} MiB used of {} MiB ({pct} %)</p><div class=bar><div style=\"width:{pct}%\"></div></div>",
                st.used_bytes >> 20,
                st.max_bytes >> 20
            );
        }
    }
}

/// Dead letters, with buttons to replay them when `replay` holds the forms' token field.
fn dead_letters(h: &mut String, dead: &[DeadLetter], now: i64, replay: Option<&str>) {
    h.push_str("<h2>Dead letters</h2>");
    if dead.is_empty() {
        h.push_str("<p class=muted>None.</p>");
    } else {
        h.push_str("<table><tr><th>Row</th><th>Destination</th><th>Kind</th><th>Attempts</th><th>Last error</th><th>Dead since</th><th></th></tr>");
        for d in dead {
            let button = replay.map_or(String::new(), |token| {
                format!(
                    "<form method=post action=/dlq/replay>{token}<input type=hidden name=destination value=\"{dest}\">\
                     <input type=hidden name=id value={id}><button>Replay</button></form>",
                    id = d.id,
                    dest = esc(&d.destination),
                )
            });
            let _ = write!(
                h,
                "<tr><td>{id}</td><td>{dest}</td><td>{}</td><td>{}</td><td class=err>{}</td><td>{}</td><td>{button}</td></tr>",
                esc(&d.kind),
                d.attempts,
                esc(&d.last_error),
                age(now, d.dead_since),
                id = d.id,
                dest = esc(&d.destination),
            );
        }
        h.push_str("</table>");
        let Some(token) = replay else {
            return;
        };
        let mut destinations: Vec<&str> = dead.iter().map(|d| d.destination.as_str()).collect();
        destinations.sort_unstable();
        destinations.dedup();
        for dest in destinations {
            let _ = write!(
                h,
                "<form method=post action=/dlq/replay style=\"margin-top:.6rem\">{token}<input type=hidden name=destination value=\"{d}\">\
                 <button>Replay all dead letters for {d}</button></form>",
                d = esc(dest)
            );
        }
    }
}

/// Open clinical alerts (ticket and queue, or what raised it for a patient not in the queue;
/// code and why; never a value), each with its
/// acknowledge button; an escalated one says to whom.
fn alert_list(alerts: &[Alert], now: i64, token: &str) -> String {
    if alerts.is_empty() {
        return String::new();
    }
    let mut h = String::from(
        "<h2>Clinical alerts to acknowledge</h2><table><tr><th>When</th><th>Ticket</th><th>Alert</th><th>Escalated</th><th></th></tr>",
    );
    for a in alerts {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=err>{} {} ({})</td><td>{}</td><td><form method=post action=/alerts/ack>\
             <input type=hidden name=id value={}>{token}<button>Acknowledge</button></form></td></tr>",
            age(now, a.raised_at),
            match (&a.ticket, &a.queue) {
                (Some(ticket), Some(queue)) => format!("{} ({})", esc(ticket), esc(queue)),
                _ => format!("not queued ({})", esc(&a.origin)),
            },
            esc(&a.kind.replace('_', " ")),
            esc(&a.code),
            esc(&a.reason),
            esc(a.escalated_to.as_deref().unwrap_or("")),
            a.id
        );
    }
    h.push_str("</table>");
    h
}

/// The specimens of the queued patients (ids, type, state, the lab's reject reason and
/// condition codes, the delay added to the entry; never a result).
fn specimen_list(specimens: &[SpecimenRow], now: i64) -> String {
    if specimens.is_empty() {
        return String::new();
    }
    let mut h = String::from(
        "<h2>Lab specimens</h2><table><tr><th>Ticket</th><th>Specimen</th><th>Order</th><th>Type</th><th>State</th><th>Delay</th><th>Changed</th></tr>",
    );
    for sp in specimens {
        let state = match (&sp.reject_reason, &sp.condition) {
            (Some(why), _) => format!("{} ({why})", sp.state.replace('_', " ")),
            (None, Some(c)) => format!("{} ({c})", sp.state.replace('_', " ")),
            (None, None) => sp.state.replace('_', " "),
        };
        let _ = write!(
            h,
            "<tr><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td><td{}>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&sp.ticket),
            esc(&sp.queue),
            esc(&sp.specimen),
            esc(sp.order.as_deref().unwrap_or("")),
            esc(sp.type_code.as_deref().unwrap_or("")),
            if sp.state == "rejected" {
                " class=err"
            } else {
                ""
            },
            esc(&state),
            if sp.entry_delay_min > 0 {
                format!("+{} min", sp.entry_delay_min)
            } else {
                String::new()
            },
            age(now, sp.updated_at),
        );
    }
    h.push_str("</table>");
    h
}

/// Open notices for staff (tickets and queues only), each with its acknowledge button.
fn notice_list(notices: &[Notice], now: i64, token: &str) -> String {
    if notices.is_empty() {
        return String::new();
    }
    let mut h = String::from(
        "<h2>Notices for staff</h2><table><tr><th>When</th><th>Notice</th><th></th></tr>",
    );
    for n in notices {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td><form method=post action=/notices/acknowledge>\
             <input type=hidden name=id value={}>{token}<button>Acknowledge</button></form></td></tr>",
            age(now, n.at),
            esc(&n.text),
            n.id
        );
    }
    h.push_str("</table>");
    h
}

/// Open EHR conflicts: which demographic fields differ between the gateway's change and the
/// EHR's, with a choice per field. The values stay off this page, which refreshes itself and
/// may stand in view of patients; with logins on, `compare` links each conflict to its own
/// page showing both versions, each view audited.
fn conflict_list(conflicts: &[Conflict], now: i64, token: &str, compare: bool) -> String {
    if conflicts.is_empty() {
        return String::new();
    }
    let mut h = String::from(
        "<h2>EHR conflicts to resolve</h2><p class=muted>A patient's details were changed here and in \
         the EHR; choose which side each field keeps. The values are in the EHR and the staff API.</p>\
         <table><tr><th>Conflict</th><th>Since</th><th>Fields</th><th></th></tr>",
    );
    for c in conflicts {
        let link = if compare {
            format!(
                " <a href=\"/fhir/conflicts/{id}\">Compare values</a>",
                id = c.id
            )
        } else {
            String::new()
        };
        let _ = write!(
            h,
            "<tr><td>#{id}{link}</td><td>{since}</td><td>{form}</td></tr>",
            id = c.id,
            since = age(now, c.created_at),
            form = resolve_choices(c, token, None),
        );
    }
    h.push_str("</table>");
    h
}

/// The form resolving conflict `c`: a gateway / EHR choice per differing field, with each
/// side's value when `values` gives them.
fn resolve_choices(c: &Conflict, token: &str, values: Option<(&Fields, &Fields)>) -> String {
    let mut h = format!(
        "<form method=post action=/fhir/conflicts/resolve><input type=hidden name=id value={id}>{token}",
        id = c.id
    );
    for f in &c.fields {
        let shown = |side: &Fields| {
            values.map_or(String::new(), |_| {
                let v = side.get(f).cloned().flatten();
                format!(
                    " <q class=value>{}</q>",
                    v.as_deref().map_or("(none)".into(), esc)
                )
            })
        };
        let (ours, theirs) = match values {
            Some((l, r)) => (shown(l), shown(r)),
            None => (String::new(), String::new()),
        };
        let f = esc(f);
        let _ = write!(
            h,
            "<div>{f}: <label><input type=radio name=\"{f}\" value=local required> gateway{ours}</label> \
             <label><input type=radio name=\"{f}\" value=remote> EHR{theirs}</label></div>"
        );
    }
    h.push_str("<button>Resolve</button></form>");
    h
}

/// `GET /fhir/conflicts/{id}` (logins on, clinical staff and admins): one conflict with the
/// gateway's and the EHR's value of each differing field, the view audited before it is shown.
pub(super) async fn conflict_page(
    s: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
) -> HttpResponse {
    let id = path.into_inner();
    let page = |status: StatusCode, body: &str| {
        HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .insert_header(("cache-control", "no-store"))
            .body(format!(
                "<!doctype html><html lang=en><head><meta charset=utf-8><title>clinic-gateway: conflict #{id}</title>\
                 <style>{STYLE}</style></head><body><h1>EHR conflict #{id}</h1>{body}\
                 <p><a href=\"/\">Back to the status page</a></p></body></html>"
            ))
    };
    let all = match journal::ask(&s.journal, FhirConflicts { all: true }).await {
        Ok(all) => all,
        Err(_) => return page(StatusCode::SERVICE_UNAVAILABLE, "<p>Try again.</p>"),
    };
    let Some(c) = all.into_iter().find(|c| c.id == id) else {
        return page(StatusCode::NOT_FOUND, "<p>No such conflict.</p>");
    };
    if !super::fhir::audit_view(&s, &req, &[&c.patient_id]).await {
        return page(StatusCode::SERVICE_UNAVAILABLE, "<p>Try again.</p>");
    }
    let staff = req.extensions().get::<Staff>().cloned();
    let (local, remote) = (fields(&c.local), fields(&c.remote));
    let body = if c.resolved_at.is_some() {
        "<p>Resolved already.</p>".to_string()
    } else {
        format!(
            "<p>Patient {p}: changed here and in the EHR since {since}. Choose which value each \
             field keeps.</p>{form}",
            p = esc(&c.patient_id),
            since = age(journal::now_ms(), c.created_at),
            form = resolve_choices(&c, &token_field(staff.as_ref()), Some((&local, &remote))),
        )
    };
    page(StatusCode::OK, &body)
}

/// The queue board: tickets in call order per queue, never patient references.
/// `prescriptions` are (entry id, state) of the entries' prescriptions, shown by state only
/// (no drugs); with `insurance`, where each entry's eligibility stands (the payer's reason in
/// words, never the member's details); with `payments`, where each entry's latest payment
/// stands (paid, awaiting payment, or payment pending with why).
fn queue_board(
    entries: &[Entry],
    prescriptions: &[(i64, String)],
    insurance: Option<&Insurance>,
    payments: Option<&Payments>,
    now: i64,
) -> String {
    let mut h = String::from("<h2>Waiting queues</h2>");
    if entries.is_empty() {
        h.push_str("<p class=muted>Nobody is queued.</p>");
        return h;
    }
    let mut queues: Vec<&str> = entries.iter().map(|e| e.queue.as_str()).collect();
    queues.dedup();
    for q in queues {
        let _ = write!(
            h,
            "<h3>{}</h3><table><tr><th>#</th><th>Ticket</th><th>Priority</th><th>State</th><th>Room</th><th>Arrived</th><th>Pharmacy</th>{}{}</tr>",
            esc(q),
            if insurance.is_some() {
                "<th>Insurance</th>"
            } else {
                ""
            },
            if payments.is_some() {
                "<th>Payment</th>"
            } else {
                ""
            }
        );
        for (i, e) in entries.iter().filter(|e| e.queue == q).enumerate() {
            let priority = match e.priority {
                Priority::Normal => "<span class=muted>normal</span>",
                Priority::Elevated => "<span class=\"badge degraded\">elevated</span>",
                Priority::Urgent => "<span class=\"badge down\">urgent</span>",
            };
            let rx: Vec<String> = prescriptions
                .iter()
                .filter(|(entry, _)| *entry == e.id)
                .map(|(_, state)| format!("prescription {}", esc(&state.replace('_', " "))))
                .collect();
            let cover = insurance.map_or(String::new(), |i| {
                format!("<td>{}</td>", coverage(i.get(&e.id)))
            });
            let paid = payments.map_or(String::new(), |p| {
                format!("<td>{}</td>", payment(p.get(&e.id)))
            });
            let _ = write!(
                h,
                "<tr><td>{}</td><td><b>{}</b></td><td>{priority}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{cover}{paid}</tr>",
                i + 1,
                esc(&e.ticket),
                if e.awaiting_results {
                    format!("{}, awaiting results", e.state.as_str().replace('_', " "))
                } else {
                    e.state.as_str().replace('_', " ")
                },
                esc(e.room.as_deref().unwrap_or("")),
                age(now, e.arrived_at),
                rx.join(", ")
            );
        }
        h.push_str("</table>");
    }
    h
}

/// Money to set right at a processor: an intent a failover left open there (with its cancel
/// button) and an intent paid as well as the payment's own (to refund there).
fn left_behind_list(list: &[LeftBehind], now: i64, token: &str) -> String {
    if list.is_empty() {
        return String::new();
    }
    let mut h = String::from(
        "<h2>Payments to set right</h2><table><tr><th>Since</th><th>Ticket</th><th>Amount</th><th>Processor</th><th>What</th><th></th></tr>",
    );
    for l in list {
        let (what, action) = match l.attempt.state {
            AttemptState::LeftOpen => (
                "intent left open after a failover".to_string(),
                format!(
                    "<form method=post action=/payments/cancel>{token}<input type=hidden name=key value=\"{}\">\
                     <button>Cancel it there</button></form>",
                    esc(&l.attempt.key)
                ),
            ),
            _ => (
                "<span class=err>paid twice: refund it at the processor</span>".to_string(),
                String::new(),
            ),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{} ({})</td><td>{}.{:02} {}</td><td>{} <span class=muted>{}</span></td><td>{what}</td><td>{action}</td></tr>",
            age(now, l.attempt.updated_at),
            esc(&l.ticket),
            esc(&l.queue),
            l.amount_cents / 100,
            l.amount_cents % 100,
            esc(&l.currency.to_uppercase()),
            esc(&l.attempt.processor),
            esc(l.attempt.intent.as_deref().unwrap_or_default()),
        );
    }
    h.push_str("</table>");
    h
}

/// One entry's payment cell: paid, awaiting payment, payment pending with its cause (a
/// decline code, never card details), or what the patient owes after "pay later".
fn payment(p: Option<&crate::connectors::payments::store::Payment>) -> String {
    use crate::connectors::payments::store::Status;
    let Some(p) = p else {
        return String::new();
    };
    match p.status {
        Status::Confirmed | Status::Settled => "<span class=\"badge healthy\">paid</span>".into(),
        Status::Requested | Status::Open => "<span class=muted>awaiting payment</span>".into(),
        Status::Failed => format!(
            "<span class=\"badge down\">payment pending</span> {}",
            esc(p.cause.as_deref().unwrap_or_default())
        ),
        Status::Owed => format!(
            "<span class=\"badge degraded\">owes</span> {}.{:02} {}",
            p.amount_cents / 100,
            p.amount_cents % 100,
            esc(&p.currency.to_ascii_uppercase())
        ),
    }
}

/// One entry's insurance cell: verified with its co-pay, pending, overridden, or not verified
/// with the reason in words.
fn coverage(e: Option<&crate::connectors::practice::store::Eligibility>) -> String {
    use crate::connectors::practice::store::Status;
    let Some(e) = e else {
        return "<span class=muted>not asked</span>".into();
    };
    let money = |c: i64| format!("{}.{:02}", c / 100, c % 100);
    match e.status {
        Status::Verified => {
            let copay = e
                .detail
                .copay
                .map_or(String::new(), |c| format!(", co-pay {}", money(c)));
            format!("<span class=\"badge healthy\">verified</span>{copay}")
        }
        Status::Pending => "<span class=muted>pending</span>".into(),
        Status::Overridden => "<span class=\"badge degraded\">overridden</span>".into(),
        Status::NotVerified => format!(
            "<span class=\"badge down\">not verified</span> {}",
            esc(&e.detail.reasons.join("; "))
        ),
    }
}

#[derive(Deserialize)]
pub(super) struct ReplayForm {
    destination: String,
    id: Option<i64>,
}

/// Rooms with their status, then the facility rules; with `actions` (the forms' token field),
/// buttons to hold a room or put it back.
fn rooms_table(view: &FacilityView, now: i64, actions: Option<&str>) -> String {
    let mut h = String::from(
        "<h2>Rooms</h2><table><tr><th>Room</th><th>Status</th><th>Why</th><th>Set</th></tr>",
    );
    for r in &view.rooms {
        let class = match r.status {
            RoomStatus::Available => "ok",
            RoomStatus::Occupied => "starting",
            RoomStatus::NeedsCleaning => "degraded",
            RoomStatus::OutOfService => "down",
        };
        let why = r.hold.as_ref().map_or(String::new(), |hold| {
            format!(
                "{} <span class=muted>by {}, {}</span>",
                esc(hold.reason.as_deref().unwrap_or("")),
                esc(&hold.by),
                age(now, hold.at)
            )
        });
        let _ = write!(
            h,
            "<tr><td>{room}</td><td><span class=\"badge {class}\">{status}</span></td><td>{why}</td><td>",
            room = esc(&r.name),
            status = r.status.as_str(),
        );
        for (state, label) in [
            ("needs_cleaning", "Needs cleaning"),
            ("out_of_service", "Out of service"),
            ("in_service", "In service"),
        ] {
            let Some(token) = actions else { break };
            let _ = write!(
                h,
                "<form method=post action=/rooms/state style=display:inline>{token}\
                 <input type=hidden name=room value=\"{room}\"><input type=hidden name=state value={state}>\
                 <button>{label}</button></form> ",
                room = esc(&r.name),
            );
        }
        h.push_str("</td></tr>");
    }
    h.push_str("</table>");
    if !view.rules.is_empty() {
        h.push_str("<h2>Facility rules</h2><table><tr><th>Rule</th><th>Conditions</th><th>Device holds</th><th>Last error</th></tr>");
        for r in &view.rules {
            let applied = match r.applied {
                Some(true) => "the rule's setting",
                Some(false) => "the normal setting",
                None => "not confirmed yet",
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td><span class=\"badge {}\">{}</span></td><td>{applied}</td><td class=err>{}</td></tr>",
                esc(&r.name),
                if r.active { "degraded" } else { "ok" },
                if r.active { "met" } else { "normal" },
                esc(r.last_error.as_deref().unwrap_or("")),
            );
        }
        h.push_str("</table>");
    }
    h
}

#[derive(Deserialize)]
pub(super) struct RoomStateForm {
    room: String,
    state: String,
}

pub(super) async fn room_state_form(
    s: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<RoomStateForm>,
) -> HttpResponse {
    if !same_origin(&req) {
        return HttpResponse::Forbidden().body("cross-site request refused");
    }
    let f = form.into_inner();
    let hold = match facility::rules::parse_room_state(&f.state) {
        Ok(h) => h,
        Err(e) => return HttpResponse::BadRequest().body(e),
    };
    let set = facility::SetHold {
        room: f.room,
        hold: hold.map(|h| (h, None)),
        by: by_staff(&req, "web"),
    };
    match ask_rooms(&s, set).await {
        Some(Ok(Ok(_))) => HttpResponse::SeeOther()
            .insert_header(("location", "/"))
            .finish(),
        Some(Ok(Err(e)) | Err(e)) => facility_error(e),
        None => HttpResponse::NotFound().body("no rooms are configured on this gateway"),
    }
}

#[derive(Deserialize)]
pub(super) struct AckForm {
    id: i64,
}

#[derive(Deserialize)]
pub(super) struct CancelForm {
    key: String,
}

/// Staff cancel an intent left open at its processor (see `CancelLeftOpen`).
pub(super) async fn cancel_left_open_form(
    s: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<CancelForm>,
) -> HttpResponse {
    let key = form.into_inner().key;
    acknowledge_then_home(&s, &req, |by| CancelLeftOpen { key, by }).await
}

pub(super) async fn acknowledge_form(
    s: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<AckForm>,
) -> HttpResponse {
    let id = form.id;
    acknowledge_then_home(&s, &req, |by| AckNotice { id, by }).await
}

pub(super) async fn acknowledge_alert_form(
    s: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<AckForm>,
) -> HttpResponse {
    let id = form.id;
    acknowledge_then_home(&s, &req, |by| AckAlert { id, by }).await
}

/// A page form acknowledging something (a notice, an alert) as the staff member: same-origin
/// only, then back to the page.
async fn acknowledge_then_home<R>(
    s: &AppState,
    req: &HttpRequest,
    ack: impl FnOnce(String) -> R,
) -> HttpResponse
where
    R: journal::Request,
    crate::journal::JournalWriter: actix::Handler<R>,
{
    if !same_origin(req) {
        return HttpResponse::Forbidden().body("cross-site request refused");
    }
    match journal::ask(&s.journal, ack(by_staff(req, "web"))).await {
        Ok(_) => HttpResponse::SeeOther()
            .insert_header(("location", "/"))
            .finish(),
        Err(e) => HttpResponse::NotFound().body(e.to_string()),
    }
}

/// The conflict form: `id` and one `local` / `remote` choice per differing field.
pub(super) async fn resolve_form(
    s: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<BTreeMap<String, String>>,
) -> HttpResponse {
    if !same_origin(&req) {
        return HttpResponse::Forbidden().body("cross-site request refused");
    }
    let mut fields = form.into_inner();
    fields.remove("csrf");
    let Some(id) = fields.remove("id").and_then(|i| i.parse().ok()) else {
        return HttpResponse::BadRequest().body("which conflict: id missing");
    };
    let mut choices = BTreeMap::new();
    for (field, side) in fields {
        let side = match side.as_str() {
            "local" => Side::Local,
            "remote" => Side::Remote,
            _ => return HttpResponse::BadRequest().body(format!("{field}: local or remote")),
        };
        choices.insert(field, side);
    }
    let resolve = FhirResolve {
        id,
        choices,
        by: by_staff(&req, "web"),
    };
    match journal::ask(&s.journal, resolve).await {
        Ok(_) => HttpResponse::SeeOther()
            .insert_header(("location", "/"))
            .finish(),
        Err(e) => HttpResponse::BadRequest().body(e.to_string()),
    }
}

pub(super) async fn replay_form(
    s: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<ReplayForm>,
) -> HttpResponse {
    if !same_origin(&req) {
        return HttpResponse::Forbidden().body("cross-site request refused");
    }
    let f = form.into_inner();
    let by = by_staff(&req, "web");
    if let Err(e) = journal::ask(
        &s.journal,
        Replay {
            destination: f.destination,
            id: f.id,
            by,
        },
    )
    .await
    {
        return HttpResponse::ServiceUnavailable().body(format!("replay failed: {e}"));
    }
    HttpResponse::SeeOther()
        .insert_header(("location", "/"))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::HealthState;

    #[test]
    fn page_escapes_and_never_shows_keys() {
        let actors = vec![ActorHealth {
            name: "cloud-relay".into(),
            kind: "cloud-relay".into(),
            state: HealthState::Degraded,
            last_error: Some("<script>x</script>".into()),
            restarts: 2,
            since: 0,
        }];
        let dead = vec![DeadLetter {
            id: 7,
            destination: "cloud".into(),
            key: "patient-SECRET".into(),
            kind: "queue.checked_in".into(),
            event_id: "e".into(),
            attempts: 20,
            last_error: "refused".into(),
            dead_since: 0,
        }];
        let notices = [Notice {
            id: 3,
            at: 60_000,
            kind: "queue.flagged".into(),
            text: "G-001 (general): priority raised to <urgent>".into(),
            acknowledged_at: None,
            acknowledged_by: None,
        }];
        let view = View {
            actors: &actors,
            stats: Some(&Stats::default()),
            dead: &dead,
            entries: &[],
            prescriptions: &[],
            insurance: None,
            payments: None,
            left_behind: &[],
            notices: &notices,
            alerts: &[],
            specimens: &[],
            conflicts: &[],
            rooms: None,
            shown: Shown::for_role(None),
            staff: None,
            users: &[],
            keys: &[],
        };
        let html = render("clinic-1", &view, 120_000);
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(html.contains("<a href=\"/messaging\">"), "{html}");
        assert!(html.contains("priority raised to &lt;urgent&gt;"));
        assert!(html.contains("action=/notices/acknowledge><input type=hidden name=id value=3>"));
        assert!(!html.contains("<script>x"));
        assert!(!html.contains("patient-SECRET"));
        assert!(html.contains("badge degraded"));
        assert!(html.contains("name=id value=7"));
        assert!(html.contains("Replay all dead letters for cloud"));
    }

    #[test]
    fn queue_board_shows_tickets_in_order_without_patients() {
        let entry = |id: i64, ticket: &str, priority: Priority| Entry {
            id,
            queue: "general".into(),
            ticket: ticket.into(),
            patient_ref: Some("MRN-SECRET".into()),
            appointment_ref: None,
            priority,
            priority_reason: Some("pain".into()),
            state: crate::queue::EntryState::Waiting,
            room: None,
            arrived_at: 0,
            called_at: None,
            in_room_at: None,
            closed_at: None,
            awaiting_results: false,
            demographics: Some(crate::queue::Demographics {
                patient_id: "p1".into(),
                identifier: Some("MRN-SECRET".into()),
                family: Some("FAMILY-SECRET".into()),
                given: None,
                birth_date: Some("1980-02-03".into()),
                gender: None,
                source: "ehr".into(),
            }),
        };
        let html = queue_board(
            &[
                entry(2, "G-002", Priority::Urgent),
                entry(1, "G-001", Priority::Normal),
            ],
            &[(1, "in_preparation".into())],
            None,
            None,
            60_000,
        );
        assert!(html.contains("prescription in preparation"), "{html}");
        assert!(html.find("G-002") < html.find("G-001"), "{html}");
        assert!(html.contains("urgent"));
        assert!(!html.contains("MRN-SECRET") && !html.contains("pain"));
        assert!(!html.contains("FAMILY-SECRET") && !html.contains("1980"));
        assert!(!html.contains("Insurance"), "no column without a connector");

        use crate::connectors::practice::store::{Detail, Eligibility, Status};
        let asked = |entry_id: i64, status: Status, detail: Detail| Eligibility {
            entry_id,
            payer: "acme".into(),
            status,
            detail,
            requested_at: 0,
            requested_by: "check-in".into(),
            answered_at: None,
            override_by: None,
            override_reason: None,
        };
        let insurance: Insurance = [
            (
                2,
                asked(
                    2,
                    Status::Verified,
                    Detail {
                        copay: Some(2505),
                        ..Detail::default()
                    },
                ),
            ),
            (
                1,
                asked(
                    1,
                    Status::NotVerified,
                    Detail {
                        reasons: vec!["patient not found".into()],
                        ..Detail::default()
                    },
                ),
            ),
        ]
        .into_iter()
        .collect();
        use crate::connectors::payments::store::{Payment, Status as Paid};
        let paid = |entry_id: i64, status: Paid, cause: Option<&str>| Payment {
            id: entry_id,
            reference: format!("r{entry_id}"),
            entry_id,
            amount_cents: 2500,
            currency: "usd".into(),
            method: "hosted".into(),
            status,
            processor: Some("a".into()),
            intent: Some("pi_1".into()),
            client_secret: Some("pi_1_secret_x".into()),
            cause: cause.map(str::to_string),
            requested_at: 0,
            requested_by: "api:staff".into(),
            updated_at: 0,
            confirmed_at: None,
            owed_at: None,
            owed_by: None,
            settled_by: None,
        };
        let payments: Payments = [
            (2, paid(2, Paid::Confirmed, None)),
            (1, paid(1, Paid::Failed, Some("declined:card_declined"))),
        ]
        .into_iter()
        .collect();
        let html = queue_board(
            &[
                entry(2, "G-002", Priority::Urgent),
                entry(1, "G-001", Priority::Normal),
                entry(3, "G-003", Priority::Normal),
            ],
            &[],
            Some(&insurance),
            Some(&payments),
            60_000,
        );
        assert!(html.contains("<th>Insurance</th>"), "{html}");
        assert!(html.contains("<th>Payment</th>"), "{html}");
        assert!(html.contains("paid</span>"), "{html}");
        assert!(
            html.contains("payment pending</span> declined:card_declined"),
            "{html}"
        );
        assert!(!html.contains("_secret_"), "{html}");
        assert!(html.contains("verified</span>, co-pay 25.05"), "{html}");
        assert!(
            html.contains("not verified</span> patient not found"),
            "{html}"
        );
        assert!(html.contains("not asked"), "{html}");
    }
}
