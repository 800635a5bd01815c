//! `/api/v1/queue-entries/{id}/eligibility`: the front desk asks the payer about an entry's
//! insurance, sees where it stands, and overrides it with a documented reason.

use super::bodies::unquoted;
use super::{AppState, journal_error, staff_or};
use crate::connectors::practice::store::Eligibility;
use crate::connectors::practice::{
    CheckedInquiry, GetEligibility, MemberIn, OverrideEligibility, RequestEligibility,
};
use crate::journal::{self, JournalError, Tx, Work};
use crate::queue::{CheckIn, Demographics, Entry, QueueCheckIn};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/api/v1/queue-entries/{id}/eligibility",
        web::post().to(request),
    )
    .route("/api/v1/queue-entries/{id}/eligibility", web::get().to(get))
    .route(
        "/api/v1/queue-entries/{id}/eligibility/override",
        web::post().to(override_),
    );
}

/// A check-in's body: the queue's [`CheckIn`] and the insurance card shown with it
/// (`"coverage"`), which the eligibility connector takes and the queue never keeps. Read by
/// hand so that a bad field is refused like any body: placed, never quoted.
pub(super) struct CheckInBody {
    pub check_in: CheckIn,
    pub coverage: Option<AskBody>,
}

impl<'de> Deserialize<'de> for CheckInBody {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let coverage = map
            .remove("coverage")
            .map(AskBody::deserialize)
            .transpose()
            .map_err(|e| D::Error::custom(format!("coverage: {}", unquoted(&e.to_string()))))?;
        let check_in = CheckIn::deserialize(serde_json::Value::Object(map))
            .map_err(|e| D::Error::custom(unquoted(&e.to_string())))?;
        Ok(CheckInBody { check_in, coverage })
    }
}

/// The inquiry about the card shown at a check-in, checked against the patient's EHR
/// `demographics`, or why none can be asked.
pub(super) fn inquiry(
    s: &AppState,
    body: AskBody,
    demographics: Option<&Demographics>,
) -> Result<CheckedInquiry, String> {
    let practice = s.practice.get();
    let config = practice
        .eligibility
        .as_ref()
        .ok_or("\"coverage\": no eligibility connector is configured")?;
    let payer = config
        .payer(body.payer.as_deref())
        .ok_or("\"coverage.payer\": not a configured payer")?;
    RequestEligibility {
        entry_id: 0,
        payer: payer.name.clone(),
        member: body.member(),
        by: "check-in".into(),
    }
    .check_for(demographics, journal::now_ms())
    .map_err(|e| e.to_string())
}

/// A check-in and the inquiry about its card, committed together so that the front desk waits
/// on one commit; the inquiry is kept there and journaled once the writer is free (see
/// `CheckedInquiry::defer`). An inquiry is refused (a bad birth date) before the journal is
/// asked, and the patient is queued all the same. A repeated check-in asks nothing again.
pub(super) struct CheckInAsking {
    pub check_in: QueueCheckIn,
    pub inquiry: Option<Result<CheckedInquiry, String>>,
}

crate::journal_work!(CheckInAsking);

impl Work for CheckInAsking {
    /// The entry, whether the check-in repeated an earlier one, and what the front desk sees
    /// of the inquiry (the pending inquiry, or why none was asked).
    type Output = (Entry, bool, Option<Result<Eligibility, String>>);
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        let (entry, duplicate) = self.check_in.run(tx)?;
        let eligibility = match self.inquiry {
            _ if duplicate => None,
            None => None,
            Some(Err(why)) => Some(Err(why)),
            Some(Ok(checked)) => Some(Ok(checked.defer(tx, entry.id)?)),
        };
        Ok((entry, duplicate, eligibility))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AskBody {
    /// A configured payer's name; the first configured when absent.
    #[serde(default)]
    payer: Option<String>,
    member_id: String,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    birth_date: Option<String>,
    #[serde(default)]
    gender: Option<String>,
}

impl AskBody {
    fn member(self) -> MemberIn {
        MemberIn {
            member_id: self.member_id,
            last_name: self.last_name,
            first_name: self.first_name,
            birth_date: self.birth_date,
            gender: self.gender,
        }
    }
}

async fn request(
    s: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
    body: web::Json<AskBody>,
) -> HttpResponse {
    let practice = s.practice.get();
    let Some(config) = practice.eligibility.as_ref() else {
        return HttpResponse::NotFound()
            .json(json!({ "error": "no eligibility connector is configured" }));
    };
    let body = body.into_inner();
    let Some(payer) = config.payer(body.payer.as_deref()) else {
        let names: Vec<&str> = config.payer.iter().map(|p| p.name.as_str()).collect();
        return HttpResponse::BadRequest()
            .json(json!({ "error": format!("\"payer\": one of {names:?}") }));
    };
    let ask = RequestEligibility {
        entry_id: path.into_inner(),
        payer: payer.name.clone(),
        member: body.member(),
        by: staff_or(&req, None),
    };
    match journal::ask(&s.journal, ask).await {
        Ok(e) => HttpResponse::Accepted().json(e),
        Err(e) => journal_error(e),
    }
}

async fn get(s: web::Data<AppState>, path: web::Path<i64>) -> HttpResponse {
    let entry_id = path.into_inner();
    match journal::ask(&s.journal, GetEligibility { entry_id }).await {
        Ok(Some(e)) => HttpResponse::Ok().json(e),
        Ok(None) => HttpResponse::NotFound()
            .json(json!({ "error": format!("entry {entry_id} has no eligibility inquiry") })),
        Err(e) => journal_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideBody {
    reason: String,
    #[serde(default)]
    by: Option<String>,
}

async fn override_(
    s: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<i64>,
    body: web::Json<OverrideBody>,
) -> HttpResponse {
    let body = body.into_inner();
    let ask = OverrideEligibility {
        entry_id: path.into_inner(),
        reason: body.reason,
        by: staff_or(&req, body.by.as_deref()),
    };
    match journal::ask(&s.journal, ask).await {
        Ok(e) => HttpResponse::Ok().json(e),
        Err(e) => journal_error(e),
    }
}
