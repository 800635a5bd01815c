//! Eligibility as FHIR R4, pure: an inquiry becomes a `CoverageEligibilityRequest` (purposes
//! `validation` and `benefits`, the member as a contained Patient and Coverage, the service
//! types as item categories), and a `CoverageEligibilityResponse` becomes the same `Answer` a
//! 271 does: `insurance.inforce` for active or inactive, the `copay` and `deductible` benefits
//! for the co-pay and the deductible left, `error.code` as rejections in words. Both are
//! checked against R4 (`fhir::validate`): what does not conform is neither sent nor read.

use super::eligibility::{self, Answer, Cents, Inquiry, Rejection, Status};
use crate::connectors::fhir::validate::{self, Invalid};
use serde_json::{Value, json};
use thiserror::Error;

/// The identifier system of the gateway's requests: the inquiry's trace is the value, so a
/// request sent again is found (conditional create) rather than made twice.
pub const IDENTIFIER_SYSTEM: &str = "urn:clinic-gateway:eligibility";
/// X12 service type codes, as FHIR benefit categories (the Da Vinci and CARIN guides' system).
pub const SERVICE_TYPES: &str = "https://x12.org/codes/service-type-codes";
const NPI: &str = "http://hl7.org/fhir/sid/us-npi";

/// Why a FHIR answer is not an answer to our inquiry.
#[derive(Debug, Error, PartialEq)]
pub enum FhirEligibilityError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("the payer answered a {0}, not a CoverageEligibilityResponse")]
    NotAResponse(String),
    #[error("the response answers {found}, not our request {expected}")]
    OtherInquiry { found: String, expected: String },
    #[error("the response gives no coverage status (no insurance.inforce) and no error")]
    NoStatus,
    #[error("{element} {value} is not an amount in cents")]
    Amount { element: String, value: String },
}

/// The `CoverageEligibilityRequest` for `inquiry`, created at `created` (a FHIR dateTime).
pub fn request(q: &Inquiry, created: &str) -> Result<Value, Invalid> {
    let m = &q.member;
    let mut patient = json!({
        "resourceType": "Patient",
        "id": "patient",
        "name": [{ "family": m.last_name, "given": [m.first_name] }],
        "birthDate": dashed(&m.birth_date),
    });
    if let Some(g) = m.gender.as_deref() {
        patient["gender"] = json!(match g {
            "F" => "female",
            "M" => "male",
            _ => "unknown",
        });
    }
    let insurer = json!({ "identifier": { "value": q.payer_id }, "display": q.payer_name });
    let types: Vec<&str> = if q.service_types.is_empty() {
        vec!["30"]
    } else {
        q.service_types.iter().map(String::as_str).collect()
    };
    let items: Vec<Value> = types
        .iter()
        .map(|t| json!({ "category": { "coding": [{ "system": SERVICE_TYPES, "code": t }] } }))
        .collect();
    let resource = json!({
        "resourceType": "CoverageEligibilityRequest",
        "contained": [
            patient,
            {
                "resourceType": "Coverage",
                "id": "coverage",
                "status": "active",
                "subscriberId": m.member_id,
                "beneficiary": { "reference": "#patient" },
                "payor": [insurer],
            },
        ],
        "identifier": [{ "system": IDENTIFIER_SYSTEM, "value": q.trace }],
        "status": "active",
        "purpose": ["validation", "benefits"],
        "patient": { "reference": "#patient" },
        "servicedDate": dashed(&q.service_date),
        "created": created,
        "provider": { "identifier": { "system": NPI, "value": q.provider_npi }, "display": q.provider_name },
        "insurer": insurer,
        "insurance": [{ "focal": true, "coverage": { "reference": "#coverage" } }],
        "item": items,
    });
    validate::validate(&resource)?;
    Ok(resource)
}

/// `CCYYMMDD` as a FHIR date.
fn dashed(d: &str) -> String {
    match (d.get(..4), d.get(4..6), d.get(6..8)) {
        (Some(y), Some(m), Some(day)) if d.len() == 8 => format!("{y}-{m}-{day}"),
        _ => d.to_string(),
    }
}

/// What a payer's answer holds for us.
#[derive(Debug, PartialEq)]
pub enum Reply {
    /// The payer's decision.
    Answered(Answer),
    /// The payer stored the request (or queued it, `outcome = queued`): its id, under which
    /// the response will point back at it.
    Stored(String),
}

/// Reads what the server answered to our POST: a `CoverageEligibilityResponse` (or a Bundle
/// holding one) from a payer that decides at once, or our stored request from one that
/// answers later.
pub fn reply(v: &Value, trace: &str) -> Result<Reply, FhirEligibilityError> {
    match v["resourceType"].as_str().unwrap_or_default() {
        "CoverageEligibilityRequest" => {
            let ours = v["identifier"].as_array().is_some_and(|ids| {
                ids.iter()
                    .any(|i| i["system"] == IDENTIFIER_SYSTEM && i["value"] == trace)
            });
            match v["id"].as_str() {
                Some(id) if ours => Ok(Reply::Stored(id.to_string())),
                found => Err(FhirEligibilityError::OtherInquiry {
                    found: found.unwrap_or("(no id)").to_string(),
                    expected: trace.to_string(),
                }),
            }
        }
        "Bundle" => {
            let found = v["entry"].as_array().and_then(|entries| {
                entries
                    .iter()
                    .map(|e| &e["resource"])
                    .find(|r| r["resourceType"] == "CoverageEligibilityResponse")
            });
            match found {
                Some(r) => reply(r, trace),
                None => Err(FhirEligibilityError::NotAResponse(
                    "Bundle without a CoverageEligibilityResponse".into(),
                )),
            }
        }
        "CoverageEligibilityResponse" => match read(v, trace, None)? {
            Some(a) => Ok(Reply::Answered(a)),
            None => v["request"]["reference"]
                .as_str()
                .and_then(|r| r.strip_prefix("CoverageEligibilityRequest/"))
                .filter(|id| !id.is_empty())
                .map(|id| Reply::Stored(id.to_string()))
                .ok_or(FhirEligibilityError::NoStatus),
        },
        other => Err(FhirEligibilityError::NotAResponse(other.to_string())),
    }
}

/// Reads a `CoverageEligibilityResponse` to our request (`trace`, stored as `request_id` when
/// known); `None` while the payer has it queued.
pub fn read(
    v: &Value,
    trace: &str,
    request_id: Option<&str>,
) -> Result<Option<Answer>, FhirEligibilityError> {
    let kind = v["resourceType"].as_str().unwrap_or_default();
    if kind != "CoverageEligibilityResponse" {
        return Err(FhirEligibilityError::NotAResponse(kind.to_string()));
    }
    validate::validate(v)?;
    let request = &v["request"];
    let other = |found: &str| FhirEligibilityError::OtherInquiry {
        found: found.to_string(),
        expected: trace.to_string(),
    };
    if request["identifier"]["system"] == IDENTIFIER_SYSTEM
        && let Some(found) = request["identifier"]["value"].as_str()
        && found != trace
    {
        return Err(other(found));
    }
    if let (Some(id), Some(found)) = (request_id, request["reference"].as_str())
        && found.rsplit('/').next() != Some(id)
    {
        return Err(other(found));
    }
    let mut answer = Answer {
        status: Status::Active,
        payer: v["insurer"]["display"].as_str().map(str::to_string),
        plan: None,
        copay: None,
        deductible_remaining: None,
    };
    let errors: Vec<Rejection> = v["error"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, e)| rejection(i, &e["code"]))
        .collect();
    match v["outcome"].as_str() {
        Some("queued") => return Ok(None),
        Some("error") if errors.is_empty() => {
            answer.status = Status::Rejected(vec![Rejection {
                place: "CoverageEligibilityResponse".into(),
                code: "error".into(),
                reason: v["disposition"]
                    .as_str()
                    .unwrap_or("the payer could not process the request")
                    .to_string(),
                follow_up: None,
                retry: false,
            }]);
            return Ok(Some(answer));
        }
        _ => {}
    }
    if !errors.is_empty() {
        answer.status = Status::Rejected(errors);
        return Ok(Some(answer));
    }
    let insurances: Vec<&Value> = v["insurance"].as_array().into_iter().flatten().collect();
    let active = insurances.iter().find(|i| i["inforce"] == true);
    let inactive = insurances.iter().find(|i| i["inforce"] == false);
    let Some(chosen) = active.or(inactive) else {
        return Err(FhirEligibilityError::NoStatus);
    };
    if active.is_none() {
        answer.status = Status::Inactive("coverage is inactive".into());
        return Ok(Some(answer));
    }
    answer.plan = chosen["coverage"]["display"].as_str().map(str::to_string);
    let items: Vec<&Value> = chosen["item"].as_array().into_iter().flatten().collect();
    answer.copay = best(&items, "copay", |b| {
        money("allowedMoney", &b["allowedMoney"])
    })?;
    answer.deductible_remaining = best(&items, "deductible", |b| {
        let allowed = money("allowedMoney", &b["allowedMoney"])?;
        let used = money("usedMoney", &b["usedMoney"])?;
        // Without what was used, the allowed amount is the whole deductible, not what is left.
        Ok(allowed.zip(used).map(|(a, u)| (a - u).max(0)))
    })?;
    Ok(Some(answer))
}

/// The amount of the benefit of type `kind` in the item that fits best, as the 271's reader
/// chooses: an office visit's (`98`) over the plan's (`30`) over others, in network over out,
/// the individual's over the family's.
fn best(
    items: &[&Value],
    kind: &str,
    amount: impl Fn(&Value) -> Result<Option<Cents>, FhirEligibilityError>,
) -> Result<Option<Cents>, FhirEligibilityError> {
    let codes = |v: &Value| -> Vec<String> {
        v["coding"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["code"].as_str().map(str::to_string))
            .collect()
    };
    let score = |item: &Value| {
        let types = codes(&item["category"]);
        let service = if types.iter().any(|t| t == "98") {
            0
        } else if types.iter().any(|t| t == "30") || types.is_empty() {
            1
        } else {
            2
        };
        let network = usize::from(codes(&item["network"]).iter().any(|c| c == "out"));
        let unit = usize::from(codes(&item["unit"]).iter().any(|c| c == "family"));
        (service, network, unit)
    };
    let mut found: Vec<((usize, usize, usize), Cents)> = Vec::new();
    for item in items.iter().filter(|i| i["excluded"] != true) {
        for benefit in item["benefit"].as_array().into_iter().flatten() {
            if codes(&benefit["type"]).iter().any(|c| c == kind)
                && let Some(cents) = amount(benefit)?
            {
                found.push((score(item), cents));
            }
        }
    }
    Ok(found.into_iter().min_by_key(|(s, _)| *s).map(|(_, c)| c))
}

/// A Money's value in cents; `None` when absent.
fn money(element: &str, m: &Value) -> Result<Option<Cents>, FhirEligibilityError> {
    let Some(n) = m.get("value") else {
        return Ok(None);
    };
    let bad = || FhirEligibilityError::Amount {
        element: element.to_string(),
        value: n.to_string(),
    };
    // The JSON number's own digits, not a float's: 0.1 stays ten cents.
    let text = n.to_string();
    let (whole, frac) = text.split_once('.').unwrap_or((&text, ""));
    let frac = frac.trim_end_matches('0');
    if frac.len() > 2 || !n.is_number() {
        return Err(bad());
    }
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    let frac: i64 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
    let sign = if text.starts_with('-') { -1 } else { 1 };
    whole
        .checked_mul(100)
        .and_then(|w| w.checked_add(sign * frac))
        .map(Some)
        .ok_or_else(bad)
}

/// One `error.code` in words: its display or text, an X12 reject reason code's meaning (payers
/// bridging to X12 send them), or the R4 adjudication error codes'.
fn rejection(i: usize, code: &Value) -> Rejection {
    let coding = code["coding"].as_array().and_then(|c| c.first());
    let c = coding
        .and_then(|c| c["code"].as_str())
        .unwrap_or_default()
        .to_string();
    let known = match c.as_str() {
        "a001" => Some("a required identifier is missing"),
        "a002" => Some("the creation date is missing"),
        _ => eligibility::reject_reason(&c),
    };
    let reason = coding
        .and_then(|c| c["display"].as_str())
        .or(code["text"].as_str())
        .or(known)
        .unwrap_or("rejected (a reason code this gateway does not know)")
        .to_string();
    Rejection {
        place: format!("CoverageEligibilityResponse.error[{i}]"),
        retry: true,
        code: c,
        reason,
        follow_up: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inquiry() -> Inquiry {
        Inquiry {
            payer_name: "ACME HEALTH".into(),
            payer_id: "60054".into(),
            provider_name: "MAIN STREET CLINIC".into(),
            provider_npi: "1234567893".into(),
            member: eligibility::Member {
                last_name: "DOE".into(),
                first_name: "JANE".into(),
                member_id: "W123456789".into(),
                birth_date: "19800101".into(),
                gender: Some("F".into()),
            },
            service_date: "20261202".into(),
            service_types: vec!["30".into(), "98".into()],
            trace: "T17".into(),
            originator: String::new(),
        }
    }

    fn response(extra: Value) -> Value {
        let mut r = json!({
            "resourceType": "CoverageEligibilityResponse", "id": "resp-1", "status": "active",
            "purpose": ["validation", "benefits"], "patient": {"reference": "Patient/p-1"},
            "created": "2026-12-02T09:15:00Z",
            "request": {"reference": "CoverageEligibilityRequest/req-1"},
            "outcome": "complete", "insurer": {"display": "ACME HEALTH"}
        });
        for (k, v) in extra.as_object().expect("an object") {
            r[k] = v.clone();
        }
        r
    }

    fn check(extra: Value) -> Answer {
        read(&response(extra), "T17", Some("req-1"))
            .expect("a value")
            .expect("answered")
    }

    fn benefit(kind: &str, allowed: f64, used: Option<f64>) -> Value {
        let mut b =
            json!({ "type": {"coding": [{"code": kind}]}, "allowedMoney": {"value": allowed} });
        if let Some(u) = used {
            b["usedMoney"] = json!({ "value": u });
        }
        b
    }

    #[test]
    fn the_request_asks_validation_and_benefits_of_the_member_and_conforms() {
        let r = request(&inquiry(), "2026-12-02T09:15:00Z").expect("a value");
        assert_eq!(r["purpose"], json!(["validation", "benefits"]));
        assert_eq!(r["servicedDate"], "2026-12-02");
        assert_eq!(r["contained"][0]["birthDate"], "1980-01-01");
        assert_eq!(r["contained"][0]["gender"], "female");
        assert_eq!(r["contained"][1]["subscriberId"], "W123456789");
        assert_eq!(r["identifier"][0]["value"], "T17");
        assert_eq!(r["item"][1]["category"]["coding"][0]["code"], "98");
        assert_eq!(r["insurer"]["identifier"]["value"], "60054");
        let mut bad = inquiry();
        bad.service_date = "2026-13-45".into();
        assert!(request(&bad, "2026-12-02T09:15:00Z").is_err());
    }

    #[test]
    fn coverage_in_force_gives_the_visit_copay_and_the_deductible_left() {
        let a = check(json!({ "insurance": [{
            "coverage": {"reference": "Coverage/c-1", "display": "GOLD PPO"}, "inforce": true,
            "item": [
                {"category": {"coding": [{"code": "30"}]}, "benefit": [
                    benefit("copay", 40.0, None), benefit("deductible", 1500.0, Some(1249.5))]},
                {"category": {"coding": [{"code": "30"}]}, "unit": {"coding": [{"code": "family"}]},
                 "benefit": [benefit("deductible", 3000.0, Some(100.0))]},
                {"category": {"coding": [{"code": "98"}]}, "network": {"coding": [{"code": "out"}]},
                 "benefit": [benefit("copay", 60.0, None)]},
                {"category": {"coding": [{"code": "98"}]}, "network": {"coding": [{"code": "in"}]},
                 "benefit": [benefit("copay", 25.0, None)]}
            ]
        }] }));
        assert_eq!(a.status, Status::Active);
        assert_eq!(a.plan.as_deref(), Some("GOLD PPO"));
        assert_eq!(a.copay, Some(2500));
        assert_eq!(a.deductible_remaining, Some(25050));
    }

    #[test]
    fn coverage_not_in_force_is_inactive_and_errors_are_rejections_in_words() {
        let a = check(
            json!({ "insurance": [{"coverage": {"reference": "Coverage/c-1"}, "inforce": false}] }),
        );
        assert_eq!(a.status, Status::Inactive("coverage is inactive".into()));
        let a = check(json!({ "outcome": "error", "error": [
            {"code": {"coding": [{"system": "https://x12.org/codes/reject-reason-codes", "code": "72"}]}},
            {"code": {"coding": [{"code": "a001"}]}},
            {"code": {"text": "Member terminated"}}
        ] }));
        let Status::Rejected(r) = a.status else {
            panic!("not rejected: {a:?}")
        };
        let reasons: Vec<&str> = r.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "invalid or missing member id",
                "a required identifier is missing",
                "Member terminated"
            ]
        );
        assert_eq!(r[0].place, "CoverageEligibilityResponse.error[0]");
    }

    #[test]
    fn a_queued_response_waits_and_another_requests_answer_is_refused() {
        assert_eq!(
            read(
                &response(json!({"outcome": "queued"})),
                "T17",
                Some("req-1")
            ),
            Ok(None)
        );
        let other = read(&response(json!({})), "T17", Some("req-2"));
        assert!(
            matches!(other, Err(FhirEligibilityError::OtherInquiry { .. })),
            "{other:?}"
        );
        assert_eq!(
            read(&response(json!({})), "T17", Some("req-1")),
            Err(FhirEligibilityError::NoStatus)
        );
        let invalid = read(&response(json!({"outcome": "done"})), "T17", None);
        assert!(matches!(invalid, Err(FhirEligibilityError::Invalid(_))));
    }

    #[test]
    fn a_synchronous_payers_answer_or_a_stored_request_is_told_apart() {
        let answered = response(
            json!({ "insurance": [{"coverage": {"reference": "Coverage/c-1"}, "inforce": true}] }),
        );
        let Ok(Reply::Answered(a)) = reply(&answered, "T17") else {
            panic!("not answered")
        };
        assert_eq!(a.status, Status::Active);
        let bundle = json!({ "resourceType": "Bundle", "type": "collection", "entry": [{"resource": answered}] });
        assert!(matches!(reply(&bundle, "T17"), Ok(Reply::Answered(_))));
        let stored = request(&inquiry(), "2026-12-02T09:15:00Z").expect("a value");
        let mut stored = stored;
        stored["id"] = json!("req-9");
        assert_eq!(reply(&stored, "T17"), Ok(Reply::Stored("req-9".into())));
        assert!(reply(&stored, "T18").is_err());
        assert_eq!(
            reply(&json!({"resourceType": "Patient"}), "T17"),
            Err(FhirEligibilityError::NotAResponse("Patient".into()))
        );
    }

    #[test]
    fn amounts_are_read_to_the_cent() {
        for (v, c) in [
            (json!(20), 2000),
            (json!(20.5), 2050),
            (json!(0.1), 10),
            (json!(-3.25), -325),
        ] {
            assert_eq!(money("m", &json!({ "value": v })), Ok(Some(c)), "{v}");
        }
        assert!(money("m", &json!({ "value": 1.234 })).is_err());
        assert_eq!(money("m", &json!({})), Ok(None));
    }
}
