//! The Stripe-style API as values: the PaymentIntent create form and its idempotency key, what
//! an intent's status means for the entry, webhook signatures (`Stripe-Signature: t=…,v1=…`,
//! HMAC-SHA256 over `t.body`) and events, the order processors are tried in, and the DFT^P03
//! posting a confirmed payment to the PMS. Pure: no I/O, no clock, no SQL.
//!
//! Nothing here reads or keeps card data: a processor's intent is reduced to its id, status,
//! client secret and decline code before it goes any further.

use crate::connectors::hl7v2::notice::{escape, timestamp};
use serde::{Deserialize, Serialize};

/// How the patient pays: on the processor's hosted page, or at a card terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Hosted,
    Terminal,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Hosted => "hosted",
            Method::Terminal => "terminal",
        }
    }

    pub fn parse(s: &str) -> Option<Method> {
        match s {
            "hosted" => Some(Method::Hosted),
            "terminal" => Some(Method::Terminal),
            _ => None,
        }
    }

    /// The intent's `payment_method_types`: a terminal reads the card itself (`card_present`).
    fn types(self) -> &'static str {
        match self {
            Method::Hosted => "card",
            Method::Terminal => "card_present",
        }
    }
}

/// The form of `POST /v1/payment_intents`. The metadata names the payment and the entry by
/// id, never the patient, and the attempt by its idempotency key: a processor that ignores
/// or forgets the key still lets the gateway find the intent it made.
pub fn create_form(
    amount_cents: i64,
    currency: &str,
    method: Method,
    payment: &str,
    entry_id: i64,
    attempt: &str,
) -> Vec<(String, String)> {
    vec![
        ("amount".into(), amount_cents.to_string()),
        ("currency".into(), currency.to_string()),
        ("payment_method_types[]".into(), method.types().into()),
        ("metadata[payment]".into(), payment.to_string()),
        ("metadata[entry]".into(), entry_id.to_string()),
        ("metadata[attempt]".into(), attempt.to_string()),
    ]
}

/// How many intents one page of `GET /v1/payment_intents` asks for.
pub const PAGE: usize = 100;

/// One page of `GET /v1/payment_intents`: the intent made for `attempt` if it is on it, and
/// the id to list the next page after (`starting_after`) when there is one. The list is
/// used rather than Stripe's search, which is eventually consistent (an intent made a moment
/// ago may be missing) and which processors of the same API do not all serve.
pub fn find_in_page(
    page: &serde_json::Value,
    attempt: &str,
) -> Result<(Option<Intent>, Option<String>), ProtocolError> {
    let data = page
        .get("data")
        .and_then(|d| d.as_array())
        .ok_or_else(|| ProtocolError::Shape("a list without data".into()))?;
    for v in data {
        let i = intent(v)?;
        if i.attempt.as_deref() == Some(attempt) {
            return Ok((Some(i), None));
        }
    }
    let more = page.get("has_more").and_then(|m| m.as_bool()) == Some(true);
    let last = data
        .last()
        .and_then(|v| v.get("id"))
        .and_then(|i| i.as_str());
    Ok((None, last.filter(|_| more).map(str::to_string)))
}

/// The `Idempotency-Key` of a payment's intent at one processor, from the journal row that
/// asked for it: a retry or a restart sends the same key, so the processor answers with the
/// intent it made the first time instead of a second one.
pub fn idempotency_key(row_event_id: &str, processor: &str) -> String {
    format!("clinic-gateway-{row_event_id}-{processor}")
}

/// What the gateway keeps of a PaymentIntent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub id: String,
    pub status: String,
    pub client_secret: Option<String>,
    /// `last_payment_error.code` (e.g. `card_declined`).
    pub error_code: Option<String>,
    /// `metadata.attempt`: the idempotency key of the create that made it.
    pub attempt: Option<String>,
}

/// The intent in a processor's JSON (an answer, or an event's `data.object`).
pub fn intent(v: &serde_json::Value) -> Result<Intent, ProtocolError> {
    let text = |f: &str| v.get(f).and_then(|s| s.as_str()).map(str::to_string);
    if text("object").as_deref() != Some("payment_intent") {
        return Err(ProtocolError::Shape("not a payment_intent".into()));
    }
    let id = text("id").ok_or_else(|| ProtocolError::Shape("no id".into()))?;
    let status = text("status").ok_or_else(|| ProtocolError::Shape("no status".into()))?;
    let error_code = v
        .get("last_payment_error")
        .and_then(|e| e.get("code"))
        .and_then(|c| c.as_str())
        .map(str::to_string);
    let attempt = v
        .get("metadata")
        .and_then(|m| m.get("attempt"))
        .and_then(|a| a.as_str())
        .map(str::to_string);
    Ok(Intent {
        id,
        status,
        client_secret: text("client_secret"),
        error_code,
        attempt,
    })
}

/// Where a payment stands after the processor said something about its intent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "cause")]
pub enum Outcome {
    /// The money was taken.
    Confirmed,
    /// The attempt failed (`declined:<code>`, `canceled`, `expired`): the patient may try
    /// again, elsewhere or later.
    Failed(String),
    /// Nothing final yet: the patient has not paid.
    Open,
}

/// The outcome an intent's status means.
pub fn outcome(i: &Intent) -> Outcome {
    match i.status.as_str() {
        "succeeded" => Outcome::Confirmed,
        "canceled" => Outcome::Failed("canceled".into()),
        "requires_payment_method" if i.error_code.is_some() => Outcome::Failed(format!(
            "declined:{}",
            i.error_code.as_deref().unwrap_or_default()
        )),
        _ => Outcome::Open,
    }
}

/// How a processor's HTTP answer to a request counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    Ok,
    /// The processor cannot take requests now (or not ours: a refused key): its breaker
    /// counts it and the next processor is asked.
    Unavailable,
    /// The processor refused this request itself (an amount or currency it does not take):
    /// no other processor is asked, the payment fails.
    Refused,
}

pub fn answered(status: u16) -> Answered {
    match status {
        200..=299 => Answered::Ok,
        401 | 403 | 408 | 409 | 429 => Answered::Unavailable,
        400..=499 => Answered::Refused,
        _ => Answered::Unavailable,
    }
}

/// The processors to ask for a new intent, in order: the preferred one first, then the
/// others as configured.
pub fn order<'a>(configured: &'a [String], preferred: Option<&str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = configured
        .iter()
        .map(String::as_str)
        .filter(|p| Some(*p) == preferred)
        .collect();
    out.extend(
        configured
            .iter()
            .map(String::as_str)
            .filter(|p| Some(*p) != preferred),
    );
    out
}

/// Why a webhook is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    Missing,
    #[error("the Stripe-Signature header has no t= or no v1=")]
    Malformed,
    #[error("signed {0} s away from the gateway's clock, outside the tolerance")]
    Stale(i64),
    #[error("no v1 signature matches the body")]
    Mismatch,
}

/// Checks a webhook's `Stripe-Signature` against its body: one of its `v1` values must be the
/// HMAC-SHA256 of `t.body` under `secret`, and `t` within `tolerance_s` of `now_s` (so that a
/// recorded delivery cannot be played again later).
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secret: &[u8],
    now_s: i64,
    tolerance_s: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.push(v),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let away = now_s.saturating_sub(t);
    if away.saturating_abs() > tolerance_s {
        return Err(SignatureError::Stale(away));
    }
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let signed = [t.to_string().as_bytes(), b".", body].concat();
    let matches = signatures
        .iter()
        .any(|s| unhex(s).is_some_and(|tag| ring::hmac::verify(&key, &signed, &tag).is_ok()));
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A webhook event as the gateway keeps it: ids and status, no card details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub kind: String,
    /// The intent it is about, when it is about one.
    pub intent: Option<Intent>,
}

/// Reads a webhook's body.
pub fn event(body: &[u8]) -> Result<Event, ProtocolError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ProtocolError::Json(e.to_string()))?;
    let text = |f: &str| v.get(f).and_then(|s| s.as_str()).map(str::to_string);
    if text("object").as_deref() != Some("event") {
        return Err(ProtocolError::Shape("not an event".into()));
    }
    let id = text("id").ok_or_else(|| ProtocolError::Shape("event without id".into()))?;
    let kind = text("type").ok_or_else(|| ProtocolError::Shape("event without type".into()))?;
    let object = v.get("data").and_then(|d| d.get("object"));
    let intent = match object {
        Some(o) if kind.starts_with("payment_intent.") => Some(intent(o)?),
        _ => None,
    };
    Ok(Event { id, kind, intent })
}

/// What an event says about its intent: the event's type decides, as the intent in it may be
/// a snapshot taken before the change it announces.
pub fn event_outcome(e: &Event) -> Option<Outcome> {
    let i = e.intent.as_ref()?;
    Some(match e.kind.as_str() {
        "payment_intent.succeeded" => Outcome::Confirmed,
        "payment_intent.payment_failed" => Outcome::Failed(format!(
            "declined:{}",
            i.error_code.as_deref().unwrap_or("unknown")
        )),
        "payment_intent.canceled" => Outcome::Failed("canceled".into()),
        _ => return None,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("unexpected shape: {0}")]
    Shape(String),
}

/// A confirmed payment as the PMS is told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting<'a> {
    pub facility: &'a str,
    /// The gateway's payment id: MSH-10 and FT1-2, so the PMS sees a resend as the same.
    pub payment_id: i64,
    pub patient: &'a str,
    pub ticket: &'a str,
    pub amount_cents: i64,
    pub currency: &'a str,
    pub processor: &'a str,
    pub intent: &'a str,
    pub at_ms: i64,
}

/// The DFT^P03 posting a payment: FT1-6 `PY` (payment), the amount as a CP with its
/// currency, the processor's intent id as the transaction's reference (FT1-3 batch id).
pub fn dft_p03(p: &Posting<'_>) -> String {
    let ts = timestamp(p.at_ms);
    let amount = format!(
        "{}.{:02}",
        p.amount_cents / 100,
        (p.amount_cents % 100).abs()
    );
    format!(
        "MSH|^~\\&|CLINIC-GATEWAY|{f}|||{ts}||DFT^P03^DFT_P03|{control}|P|2.5.1\r\
         EVN|P03|{ts}\r\
         PID|1||{patient}\r\
         PV1|1|O|||||||||||||||||{ticket}\r\
         FT1|1|{control}|{processor}^{intent}|{ts}|{ts}|PY|COPAY^Patient payment^L|||1|{amount}&{currency}\r",
        f = escape(p.facility),
        control = control_id(p.payment_id),
        patient = escape(p.patient),
        ticket = escape(p.ticket),
        processor = escape(p.processor),
        intent = escape(p.intent),
        currency = escape(&p.currency.to_ascii_uppercase()),
    )
}

/// The identifier system of the gateway's payments in the PMS.
pub const PAYMENT_SYSTEM: &str = "urn:clinic-gateway:payment";

/// The FHIR R4 PaymentNotice of a confirmed payment: identified by the payment (so that the
/// PMS creates it once), the processor's intent as the payment reference, the patient by the
/// identifier the entry names (`patient_system` is the EHR's identifier system, when known).
pub fn payment_notice(p: &Posting<'_>, patient_system: Option<&str>) -> serde_json::Value {
    let at = jiff::Timestamp::from_millisecond(p.at_ms)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let mut patient = serde_json::json!({ "value": p.patient });
    if let Some(system) = patient_system {
        patient["system"] = serde_json::json!(system);
    }
    serde_json::json!({
        "resourceType": "PaymentNotice",
        "identifier": [{ "system": PAYMENT_SYSTEM, "value": control_id(p.payment_id) }],
        "status": "active",
        "request": { "type": "Patient", "identifier": patient },
        "created": at,
        "payment": {
            "identifier": {
                "system": format!("urn:clinic-gateway:processor:{}", p.processor),
                "value": p.intent,
            }
        },
        "paymentDate": &at[..10],
        "recipient": {
            "type": "Organization",
            "identifier": { "system": "urn:clinic-gateway:facility", "value": p.facility },
        },
        "amount": {
            "value": p.amount_cents as f64 / 100.0,
            "currency": p.currency.to_ascii_uppercase(),
        },
        "paymentStatus": {
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/paymentstatus",
                "code": "paid",
            }]
        },
    })
}

/// MSH-10 of a payment's DFT (at most 20 characters).
pub fn control_id(payment_id: i64) -> String {
    format!("PAY{payment_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        let tag = ring::hmac::sign(&key, &[t.to_string().as_bytes(), b".", body].concat());
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("t={t},v1={hex}")
    }

    #[test]
    fn a_signature_counts_only_with_the_secret_the_body_and_a_fresh_time() {
        let body = br#"{"id":"evt_1"}"#;
        let good = sign("whsec_a", 1000, body);
        assert_eq!(verify(Some(&good), body, b"whsec_a", 1100, 300), Ok(()));
        assert_eq!(
            verify(Some(&good), body, b"whsec_b", 1100, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&good), br#"{"id":"evt_2"}"#, b"whsec_a", 1100, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&good), body, b"whsec_a", 1400, 300),
            Err(SignatureError::Stale(400))
        );
        let rolled = format!("{good},v1=00ff");
        assert_eq!(verify(Some(&rolled), body, b"whsec_a", 1000, 300), Ok(()));
        assert_eq!(
            verify(
                Some("t=-9223372036854775808,v1=00"),
                body,
                b"whsec_a",
                1000,
                300
            ),
            Err(SignatureError::Stale(i64::MAX))
        );
        assert_eq!(
            verify(Some("v1=abcd"), body, b"whsec_a", 1000, 300),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(Some("t=1000,v1=zz"), body, b"whsec_a", 1000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(None, body, b"whsec_a", 1000, 300),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn an_event_is_read_down_to_ids_and_status() {
        let body = json!({
            "id": "evt_9", "object": "event", "type": "payment_intent.payment_failed",
            "data": { "object": {
                "id": "pi_1", "object": "payment_intent", "status": "requires_payment_method",
                "client_secret": "pi_1_secret_x",
                "last_payment_error": { "code": "card_declined", "message": "Your card was declined." },
                "latest_charge": { "payment_method_details": { "card": { "last4": "0341" } } }
            }}
        });
        let e = event(body.to_string().as_bytes()).expect("an event");
        assert_eq!(e.id, "evt_9");
        let i = e.intent.clone().expect("its intent");
        assert_eq!(
            (i.id.as_str(), i.error_code.as_deref()),
            ("pi_1", Some("card_declined"))
        );
        assert_eq!(
            event_outcome(&e),
            Some(Outcome::Failed("declined:card_declined".into()))
        );
        assert_eq!(
            outcome(&i),
            Outcome::Failed("declined:card_declined".into())
        );
        let other = json!({ "id": "evt_1", "object": "event", "type": "charge.succeeded",
                            "data": { "object": { "object": "charge" } } });
        let e = event(other.to_string().as_bytes()).expect("an event");
        assert_eq!((event_outcome(&e), e.intent), (None, None));
        assert!(event(b"[]").is_err());
        assert!(event(b"not json").is_err());
    }

    #[test]
    fn an_intent_is_open_until_it_succeeds_fails_or_is_canceled() {
        let i = |status: &str, code: Option<&str>| Intent {
            id: "pi".into(),
            status: status.into(),
            client_secret: None,
            error_code: code.map(str::to_string),
            attempt: None,
        };
        assert_eq!(outcome(&i("succeeded", None)), Outcome::Confirmed);
        assert_eq!(outcome(&i("requires_payment_method", None)), Outcome::Open);
        assert_eq!(outcome(&i("processing", None)), Outcome::Open);
        assert_eq!(
            outcome(&i("canceled", None)),
            Outcome::Failed("canceled".into())
        );
    }

    #[test]
    fn an_attempt_is_found_on_its_page_or_the_next_page_is_named() {
        let pi = |id: &str, attempt: &str| {
            json!({ "object": "payment_intent", "id": id, "status": "requires_payment_method",
                    "metadata": { "payment": "p", "attempt": attempt } })
        };
        let page = json!({ "object": "list", "has_more": true,
                           "data": [pi("pi_1", "k1"), pi("pi_2", "k2")] });
        let (found, next) = find_in_page(&page, "k2").expect("a list");
        assert_eq!(found.map(|i| i.id).as_deref(), Some("pi_2"));
        assert_eq!(next, None);
        let (found, next) = find_in_page(&page, "k3").expect("a list");
        assert_eq!((found, next.as_deref()), (None, Some("pi_2")));
        let last = json!({ "object": "list", "has_more": false, "data": [pi("pi_3", "k1")] });
        assert_eq!(find_in_page(&last, "k3").expect("a list"), (None, None));
        assert!(find_in_page(&json!({ "object": "list" }), "k1").is_err());
    }

    #[test]
    fn processors_are_asked_preferred_first_then_in_order() {
        let c = vec!["a".to_string(), "b".into(), "c".into()];
        assert_eq!(order(&c, None), ["a", "b", "c"]);
        assert_eq!(order(&c, Some("b")), ["b", "a", "c"]);
        assert_eq!(answered(503), Answered::Unavailable);
        assert_eq!(answered(401), Answered::Unavailable);
        assert_eq!(answered(400), Answered::Refused);
        assert_eq!(answered(200), Answered::Ok);
    }

    #[test]
    fn a_confirmed_payment_becomes_a_dft_that_the_parser_reads_back() {
        let text = dft_p03(&Posting {
            facility: "clinic-1",
            payment_id: 42,
            patient: "MRN|7",
            ticket: "G-003",
            amount_cents: 2505,
            currency: "usd",
            processor: "stripe-a",
            intent: "pi_123",
            at_ms: 1_795_000_000_000,
        });
        let m = hl7_2::parse(&text).expect("parses");
        let get = |p: &str| m.get(p).ok().flatten().unwrap_or_default();
        assert_eq!(get("MSH-9.1"), "DFT");
        assert_eq!(get("MSH-9.2"), "P03");
        assert_eq!(get("MSH-10"), "PAY42");
        assert_eq!(get("PID-3"), "MRN|7");
        assert_eq!(get("FT1-6"), "PY");
        assert_eq!(get("FT1-3.2"), "pi_123");
        assert_eq!(get("FT1-11"), "25.05&USD");
        let notice = payment_notice(
            &Posting {
                facility: "clinic-1",
                payment_id: 42,
                patient: "MRN|7",
                ticket: "G-003",
                amount_cents: 2505,
                currency: "usd",
                processor: "stripe-a",
                intent: "pi_123",
                at_ms: 1_795_000_000_000,
            },
            Some("urn:mrn"),
        );
        crate::connectors::fhir::protocol::conform(&notice).expect("valid R4");
        assert_eq!(
            notice["amount"],
            json!({ "value": 25.05, "currency": "USD" })
        );
        assert_eq!(notice["paymentDate"], "2026-11-18");
        assert_eq!(notice["identifier"][0]["value"], "PAY42");
        let form = create_form(2505, "usd", Method::Terminal, "p1", 7, "k1");
        assert!(form.contains(&("payment_method_types[]".into(), "card_present".into())));
        assert!(form.contains(&("metadata[attempt]".into(), "k1".into())));
        assert_eq!(idempotency_key("e1", "a"), "clinic-gateway-e1-a");
    }
}
