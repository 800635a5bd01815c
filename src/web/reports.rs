//! `/api/v1/reports/{kind}` (JSON or CSV) and the `/reports` page with its charts, for
//! managers and admins: counts, durations and money per period, queue and appointment type,
//! never a patient.

use super::{AppState, Practice, journal_error};
use crate::journal;
use crate::reports::{self, Kind, Period, ReadFacts, Report};
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/reports/{kind}", web::get().to(api))
        .route("/reports", web::get().to(page));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Query {
    /// `day` (default), `week` or `month`.
    period: Option<String>,
    /// The first clinic date (`YYYY-MM-DD`, default 30 days before `to`).
    from: Option<String>,
    /// The last clinic date (default today).
    to: Option<String>,
    queue: Option<String>,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

/// A query's period and span (ms, end excluded) in the clinic's zone.
struct Span {
    period: Period,
    from: i64,
    to: i64,
    from_day: String,
    to_day: String,
}

fn span(q: &Query) -> Result<Span, String> {
    let period = Period::parse(q.period.as_deref().unwrap_or("day"))
        .ok_or("\"period\": day, week or month")?;
    let zone = crate::clock::current();
    let day = |s: &str, key: &str| -> Result<jiff::civil::Date, String> {
        s.parse::<jiff::civil::Date>()
            .map_err(|_| format!("\"{key}\": YYYY-MM-DD"))
    };
    let today: jiff::civil::Date = crate::clock::local_day(journal::now_ms())
        .parse()
        .map_err(|e| format!("today: {e}"))?;
    let to = match &q.to {
        Some(s) => day(s, "to")?,
        None => today,
    };
    let from = match &q.from {
        Some(s) => day(s, "from")?,
        None => to
            .checked_sub(jiff::Span::new().days(30))
            .map_err(|e| e.to_string())?,
    };
    if from > to || to.since(from).map_or(true, |s| s.get_days() > 1_000) {
        return Err("\"from\" must be before \"to\", at most 1000 days apart".into());
    }
    let start = |d: jiff::civil::Date| {
        d.to_zoned(zone.clone())
            .map(|z| z.timestamp().as_millisecond())
            .map_err(|e| e.to_string())
    };
    let end = to.tomorrow().map_err(|e| e.to_string())?;
    Ok(Span {
        period,
        from: start(from)?,
        to: start(end)?,
        from_day: from.to_string(),
        to_day: to.to_string(),
    })
}

async fn compute(
    s: &AppState,
    practice: &Practice,
    kind: Kind,
    span: &Span,
    queue: Option<String>,
) -> Result<Report, HttpResponse> {
    let ask = ReadFacts {
        from: span.from,
        to: span.to,
        queue,
    };
    let facts = journal::ask(&s.journal, ask).await.map_err(journal_error)?;
    Ok(reports::report(kind, span.period, &facts, &fees(practice)))
}

fn fees(practice: &Practice) -> BTreeMap<String, i64> {
    practice
        .billing
        .as_ref()
        .map(|b| b.config.fee_schedule.clone())
        .unwrap_or_default()
}

async fn api(
    s: web::Data<AppState>,
    path: web::Path<String>,
    q: web::Query<Query>,
) -> HttpResponse {
    let Some(kind) = Kind::parse(&path.into_inner()) else {
        let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        return HttpResponse::NotFound().json(json!({ "error": format!("reports: {kinds:?}") }));
    };
    let q = q.into_inner();
    let span = match span(&q) {
        Ok(s) => s,
        Err(e) => return HttpResponse::BadRequest().json(json!({ "error": e })),
    };
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => {
            return HttpResponse::BadRequest().json(json!({ "error": "\"format\": json or csv" }));
        }
    };
    let practice = s.practice.get();
    let report = match compute(&s, &practice, kind, &span, q.queue.clone()).await {
        Ok(r) => r,
        Err(e) => return e,
    };
    if csv {
        return HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header((
                "Content-Disposition",
                format!(
                    "attachment; filename=\"{}-{}-{}.csv\"",
                    kind.as_str(),
                    span.from_day,
                    span.to_day
                ),
            ))
            .body(report.to_csv());
    }
    let mut body = report.to_json();
    body["from"] = json!(span.from_day);
    body["to"] = json!(span.to_day);
    body["queue"] = json!(q.queue);
    body["currency"] = json!(practice.billing.as_ref().map(|b| b.config.currency.clone()));
    HttpResponse::Ok().json(body)
}

/// The page: each report over the span as a bar chart of its headline figure and a table.
async fn page(s: web::Data<AppState>, q: web::Query<Query>) -> HttpResponse {
    let q = q.into_inner();
    let span = match span(&q) {
        Ok(s) => s,
        Err(e) => return HttpResponse::BadRequest().body(e),
    };
    let esc = super::html::esc;
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Reports</h1><form method=get>From <input name=from type=date value=\"{}\"> to <input name=to type=date value=\"{}\"> \
         <select name=period>{}</select> queue <input name=queue value=\"{}\"> <button>Show</button></form>",
        esc(&span.from_day),
        esc(&span.to_day),
        ["day", "week", "month"]
            .iter()
            .map(|p| {
                let chosen = Period::parse(p) == Some(span.period);
                format!(
                    "<option{}>{p}</option>",
                    if chosen { " selected" } else { "" }
                )
            })
            .collect::<String>(),
        esc(q.queue.as_deref().unwrap_or_default()),
    );
    // The figure each chart draws: (report, column, title).
    let charts = [
        (Kind::NoShows, 2, "No-show cost (cents)"),
        (Kind::QueueEfficiency, 1, "Patients seen"),
        (Kind::Revenue, 2, "Billed (cents, from suggestions)"),
        (Kind::Appointments, 0, "Appointments booked"),
    ];
    let practice = s.practice.get();
    for (kind, column, title) in charts {
        let report = match compute(&s, &practice, kind, &span, q.queue.clone()).await {
            Ok(r) => r,
            Err(e) => return e,
        };
        body.push_str(&section(&report, column, title));
    }
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!doctype html><html lang=en><head><meta charset=utf-8><title>clinic-gateway: reports</title>\
             <style>{}</style></head><body>{body}</body></html>",
            super::page::STYLE
        ))
}

/// One report: a bar per row of `column` (inline SVG, no script) and every figure below.
fn section(report: &Report, column: usize, title: &str) -> String {
    let esc = super::html::esc;
    let json = report.to_json();
    let columns: Vec<String> = json["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect();
    let mut out = format!("<h2>{}</h2>", esc(title));
    let max = report
        .rows
        .iter()
        .filter_map(|r| r.values.get(column).copied())
        .fold(0.0_f64, f64::max);
    let (bar_h, width) = (22, 400.0);
    let _ = write!(
        out,
        "<svg role=img aria-label=\"{}\" width=640 height={} xmlns=\"http://www.w3.org/2000/svg\">",
        esc(title),
        report.rows.len() * bar_h + 4
    );
    for (i, r) in report.rows.iter().enumerate() {
        let v = r.values.get(column).copied().unwrap_or(0.0);
        let w = if max > 0.0 { v / max * width } else { 0.0 };
        let y = i * bar_h;
        let _ = write!(
            out,
            "<text x=0 y={} font-size=12>{} {}</text><rect x=170 y={} width={w:.1} height=16 fill=\"#1d4a8f\"/>\
             <text x={:.1} y={} font-size=12>{}</text>",
            y + 13,
            esc(&r.period),
            esc(&r.group),
            y + 2,
            170.0 + w + 4.0,
            y + 13,
            v
        );
    }
    out.push_str("</svg><table><tr><th>Period</th><th>");
    out.push_str(if report.kind == Kind::Revenue {
        "Appointment type"
    } else {
        "Queue"
    });
    out.push_str("</th>");
    for c in &columns {
        let _ = write!(out, "<th>{}</th>", esc(c));
    }
    out.push_str("</tr>");
    for (r, j) in report
        .rows
        .iter()
        .zip(json["rows"].as_array().into_iter().flatten())
    {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td>",
            esc(&r.period),
            esc(&r.group)
        );
        for c in &columns {
            let _ = write!(out, "<td>{}</td>", j[c.as_str()]);
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    out
}
