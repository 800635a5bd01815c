//! `GET /printers/{name}/preview`: a sample ticket of a kiosk printer as HTML that looks like
//! the paper, so that staff see what the kiosk prints (clinic name, queue labels, accents the
//! code page lacks shown as the `?` the printer prints).
//!
//! **Invariant:** the preview is a made-up ticket: it never shows a real entry.

use super::AppState;
use super::html::esc;
use crate::devices::printer::{self, protocol::Style};
use crate::journal;
use actix_web::{HttpResponse, web};
use std::fmt::Write;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2330;background:#f6f7f9}\
.paper{width:72mm;margin:1rem 0;padding:6mm 4mm 10mm;background:#fff;box-shadow:0 1px 4px #0003;\
font-family:ui-monospace,monospace;font-size:12px;text-align:center;border-bottom:2px dashed #999}\
.paper p{margin:.15rem 0;white-space:pre-wrap;word-break:break-word}.bold{font-weight:700}\
.large{font-size:48px;font-weight:700;line-height:1.1}\
.qr{width:30mm;height:30mm;margin:.6rem auto .2rem;border:2px dashed #1d2330;display:flex;\
align-items:center;justify-content:center;font-weight:700}.qrtext{font-size:10px;color:#687083}\
.cut{margin-top:6mm;font-size:10px;color:#687083}.muted{color:#687083}";

pub(super) async fn ticket(s: web::Data<AppState>, path: web::Path<String>) -> HttpResponse {
    let name = path.into_inner();
    let Some(config) = s.printers.get(&name) else {
        return HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body(format!("no printer is named {name:?}"));
    };
    let ticket = printer::sample_ticket(&config, journal::now_ms());
    let page = config.code_page;
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Ticket preview: {n}</title>\
         <style>{STYLE}</style></head><body><h1>Ticket preview: printer {n}</h1>\
         <p class=\"muted\">A sample ticket with this printer's settings (code page {cp:?}); \
         characters the code page lacks print as ?.</p><div class=\"paper\">",
        n = esc(&name),
        cp = page,
    );
    for (style, text) in ticket.lines() {
        let class = match style {
            Style::Normal => "",
            Style::Bold => "bold",
            Style::Large => "large",
        };
        let _ = write!(
            html,
            "<p class=\"{class}\">{}</p>",
            esc(&page.printed(&text))
        );
    }
    let _ = write!(
        html,
        "<div class=\"qr\">QR</div><p class=\"qrtext\">{}</p><p class=\"cut\">✂ cut</p></div>\
         <p><a href=\"/\">Back to the status page</a></p></body></html>",
        esc(&ticket.qr)
    );
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(html)
}
