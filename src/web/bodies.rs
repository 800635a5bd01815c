//! Request bodies a route cannot take — larger than it allows, not JSON, or JSON of another
//! shape — answered 413, 415 or 400 with where the body went wrong but never what it held (a
//! body may carry patient data), and audited as `request.refused` with who sent it.

use crate::journal::{self, AuditRecord, JournalWriter};
use actix::Addr;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::JsonPayloadError;
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse, web};
use serde_json::json;

/// Why a body was refused, carried on the answer for [`audit`].
#[derive(Debug, Clone, Copy)]
struct Refused(&'static str);

/// JSON bodies of at most `limit` bytes, refused as above.
pub fn json(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|e, _| {
            let (mut answer, reason) = answer(&e);
            answer.extensions_mut().insert(Refused(reason));
            actix_web::error::InternalError::from_response(e, answer).into()
        })
}

/// The answer to a body that could not be read, and the audit's reason.
fn answer(e: &JsonPayloadError) -> (HttpResponse, &'static str) {
    match e {
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => (
            HttpResponse::PayloadTooLarge()
                .json(json!({ "error": format!("the body is larger than {limit} bytes") })),
            "body_too_large",
        ),
        JsonPayloadError::ContentType => (
            HttpResponse::UnsupportedMediaType()
                .json(json!({ "error": "the body must be application/json" })),
            "body_not_json",
        ),
        JsonPayloadError::Deserialize(d) => {
            let what = match d.classify() {
                serde_json::error::Category::Data => format!(
                    "JSON of another shape than this route takes: {}",
                    unquoted(&d.to_string())
                ),
                _ => "not JSON".into(),
            };
            let error = format!(
                "the body is {what} (line {}, column {})",
                d.line(),
                d.column()
            );
            (
                HttpResponse::BadRequest().json(json!({ "error": error })),
                "body_malformed",
            )
        }
        _ => (
            HttpResponse::BadRequest().json(json!({ "error": "the body could not be read" })),
            "body_unreadable",
        ),
    }
}

/// serde's message without its position and without the value it found (`invalid type: string
/// "Jane Doe", expected u32` becomes `invalid type: string, expected u32`): what is wrong, and
/// the field it names, but nothing the body held.
pub(super) fn unquoted(message: &str) -> String {
    let message = message.rsplit_once(" at line ").map_or(message, |(m, _)| m);
    for prefix in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some(expected) = rest.find(", expected")
        {
            let found = &rest[..expected];
            let kind = found
                .find([' ', '"', '`'])
                .map_or(found, |end| &found[..end]);
            return format!("{prefix}{kind}{}", &rest[expected..]);
        }
    }
    message.to_string()
}

/// Audits the answers [`json`] refused, before they are sent.
pub async fn audit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let journal = req
        .app_data::<web::Data<super::AppState>>()
        .map(|s| s.journal.clone());
    let res = next.call(req).await?.map_into_boxed_body();
    let refused = res.response().extensions().get::<Refused>().copied();
    if let (Some(Refused(reason)), Some(journal)) = (refused, journal) {
        record(&journal, &res, reason).await;
    }
    Ok(res)
}

async fn record(journal: &Addr<JournalWriter>, res: &ServiceResponse<BoxBody>, reason: &str) {
    let req = res.request();
    let actor = crate::access::audit_actor(req).unwrap_or_else(|| "anonymous".into());
    let detail = json!({
        "reason": reason,
        "status": res.status().as_u16(),
        "method": req.method().as_str(),
        "path": req.path(),
        "peer": crate::access::peer(req),
    });
    let record = AuditRecord {
        actor,
        action: "request.refused".into(),
        detail: detail.to_string(),
    };
    tracing::info!(reason, method = %req.method(), "request body refused");
    if let Err(e) = journal::ask(journal, record).await {
        tracing::warn!(error = %e, "refused body not audited");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_text(answer: HttpResponse) -> String {
        let body = actix_web::body::to_bytes(answer.into_body());
        let bytes = actix_web::rt::System::new().block_on(body).expect("body");
        String::from_utf8(bytes.to_vec()).expect("text")
    }

    #[test]
    fn a_body_of_the_wrong_shape_is_placed_but_never_quoted() {
        let e = serde_json::from_str::<u32>("\"Jane Doe, 1980-02-03\"").expect_err("refused");
        let (answer, reason) = answer(&JsonPayloadError::Deserialize(e));
        assert_eq!((answer.status().as_u16(), reason), (400, "body_malformed"));
        assert_eq!(
            body_text(answer),
            r#"{"error":"the body is JSON of another shape than this route takes: invalid type: string, expected u32 (line 1, column 22)"}"#
        );
    }

    #[test]
    fn a_missing_field_is_named() {
        #[derive(Debug, serde::Deserialize)]
        struct Body {
            payload: u32,
        }
        let read = serde_json::from_str::<Body>(r#"{"payload": 7}"#).expect("read");
        assert_eq!(read.payload, 7);
        let e = serde_json::from_str::<Body>("{}").expect_err("refused");
        assert_eq!(unquoted(&e.to_string()), "missing field `payload`");
        let e = serde_json::from_str::<Body>(r#"{"payload": -19800203}"#).expect_err("refused");
        assert_eq!(
            unquoted(&e.to_string()),
            "invalid value: integer, expected u32"
        );
    }

    #[test]
    fn a_body_over_the_limit_is_too_large_and_broken_json_is_not_json() {
        let (large, reason) = answer(&JsonPayloadError::Overflow { limit: 1024 });
        assert_eq!((large.status().as_u16(), reason), (413, "body_too_large"));
        let e = serde_json::from_str::<serde_json::Value>("{\"a\": ").expect_err("refused");
        let (broken, reason) = answer(&JsonPayloadError::Deserialize(e));
        assert_eq!((broken.status().as_u16(), reason), (400, "body_malformed"));
        assert!(body_text(broken).contains("the body is not JSON"));
    }
}
