//! Billing code suggestions: the clinic's table (`[[connectors.billing.rule]]`) maps an
//! appointment type and the visit's facts (its length, a new or an established patient, the
//! procedures staff recorded on the entry) to HCPCS/CPT procedure and ICD-10 diagnosis codes.
//! When a visit with recorded facts completes (or facts are recorded on a completed visit), its
//! suggestion is journaled with the visit and sent to the PMS as a suggestion only: a DFT^P03
//! whose FT1 carries the configured suggestion transaction type, or FHIR `ChargeItem`s with
//! status `planned`. An appointment type the table does not know is refused, recorded, counted
//! and told to staff; the queue change that completed the visit goes on.
//!
//! **Invariant:** a visit is suggested (or refused) once: its row leaves `recorded` in the
//! transaction that journals the suggestion, whose items carry the visit's ids as source ids.
//! No code here decides a final charge; the table is the clinic's (CPT is licensed to it).

use super::store::{self, Visit, VisitStatus};
pub use super::visit::{Code, Facts, System};
use crate::journal::{self, JournalError, NewItem, Tx, Work};
use crate::queue::{Entry, EntryState};
use crate::settings;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The notice kind telling staff a visit could not be coded.
pub const NOTICE_REFUSED: &str = "billing.refused";
/// The identifier system of the gateway's suggested charges in the PMS.
pub const CHARGE_SYSTEM: &str = "urn:clinic-gateway:charge";

/// `[connectors.billing]`: the code table, the fee schedule and where suggestions go.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BillingConfig {
    /// `"hl7v2"`: a DFT^P03 through `[connectors.hl7v2_out]`; `"fhir"`: ChargeItems through
    /// `[connectors.fhir]`; `"none"`: journaled and shown only.
    #[serde(default)]
    pub pms: Pms,
    /// FT1-6 of a suggestion. HL7 table 0017 is user-defined: the default `SUG` is agreed
    /// with the PMS to mean "suggested, not posted"; never a posting code such as `CG`.
    #[serde(default = "default_transaction_type")]
    pub transaction_type: String,
    /// The PMS's fee per appointment type, in cents: the cost of a no-show and the billed
    /// value of a suggested visit in the reports.
    #[serde(default)]
    pub fee_schedule: BTreeMap<String, i64>,
    /// The fees' ISO 4217 currency.
    #[serde(default = "default_currency")]
    pub currency: String,
    /// The code table; every rule matching a visit adds its codes.
    #[serde(default)]
    pub rule: Vec<Rule>,
}

/// Where suggestions go.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Pms {
    #[default]
    Hl7v2,
    Fhir,
    None,
}

/// One line of the code table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The appointment type as staff record it (`office-visit`, `flu-shot`).
    pub appointment_type: String,
    /// Only for a new (`true`) or an established (`false`) patient; absent: either.
    #[serde(default)]
    pub new_patient: Option<bool>,
    /// Only for visits (room to completion) at least this long.
    #[serde(default)]
    pub min_minutes: Option<u32>,
    /// Only for visits at most this long.
    #[serde(default)]
    pub max_minutes: Option<u32>,
    /// Only when staff recorded this procedure on the entry.
    #[serde(default)]
    pub procedure: Option<String>,
    /// `HCPCS:G0008`, `CPT:99213`, `ICD10:Z23`.
    pub codes: Vec<String>,
}

fn default_transaction_type() -> String {
    "SUG".into()
}
fn default_currency() -> String {
    "usd".into()
}

/// Why a visit got no suggestion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("appointment type {0:?} is not in the billing table")]
    UnknownType(String),
    #[error("no rule of appointment type {0:?} matches the visit's facts")]
    NoRule(String),
}

impl BillingConfig {
    /// The codes the table suggests for a visit of `minutes` with `facts`, procedures first,
    /// each once, in the table's order.
    pub fn suggest(&self, facts: &Facts, minutes: u32) -> Result<Vec<Code>, Refusal> {
        let of_type: Vec<&Rule> = self
            .rule
            .iter()
            .filter(|r| r.appointment_type == facts.appointment_type)
            .collect();
        if of_type.is_empty() {
            return Err(Refusal::UnknownType(facts.appointment_type.clone()));
        }
        let mut codes: Vec<Code> = Vec::new();
        for r in of_type {
            let fits = r.new_patient.is_none_or(|n| n == facts.new_patient)
                && r.min_minutes.is_none_or(|m| minutes >= m)
                && r.max_minutes.is_none_or(|m| minutes <= m)
                && r.procedure
                    .as_ref()
                    .is_none_or(|p| facts.procedures.contains(p));
            if !fits {
                continue;
            }
            for c in r.codes.iter().filter_map(|c| Code::parse(c)) {
                if !codes.contains(&c) {
                    codes.push(c);
                }
            }
        }
        if codes.is_empty() {
            return Err(Refusal::NoRule(facts.appointment_type.clone()));
        }
        codes.sort_by_key(|c| !c.is_procedure());
        Ok(codes)
    }

    /// `has_sender`, `has_fhir`: whether `[connectors.hl7v2_out]`, `[connectors.fhir]` exist.
    pub fn validate(&self, has_sender: bool, has_fhir: bool, bad: &mut dyn FnMut(&str, String)) {
        let key = |k: &str| format!("connectors.billing.{k}");
        if self.pms == Pms::Hl7v2 && !has_sender {
            bad(
                &key("pms"),
                "\"hl7v2\" needs [connectors.hl7v2_out] (or say \"none\")".into(),
            );
        }
        if self.pms == Pms::Fhir && !has_fhir {
            bad(
                &key("pms"),
                "\"fhir\" needs [connectors.fhir] (or say \"none\")".into(),
            );
        }
        let t = &self.transaction_type;
        if t.is_empty() || t.len() > 8 || !t.chars().all(|c| c.is_ascii_alphanumeric()) {
            bad(&key("transaction_type"), "1 to 8 letters or digits".into());
        }
        if ["CG", "CD", "PY", "AJ"].contains(&t.as_str()) {
            bad(
                &key("transaction_type"),
                format!("{t:?} posts a transaction; a suggestion needs its own code"),
            );
        }
        let c = &self.currency;
        if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_alphabetic()) {
            bad(&key("currency"), "an ISO 4217 code of three letters".into());
        }
        for (kind, cents) in &self.fee_schedule {
            if !settings::is_identifier(kind) {
                bad(
                    &key(&format!("fee_schedule.{kind}")),
                    "appointment types are letters, digits, '-' and '_'".into(),
                );
            }
            if !(0..=100_000_000).contains(cents) {
                bad(
                    &key(&format!("fee_schedule.{kind}")),
                    "cents, 0 to 100000000".into(),
                );
            }
        }
        for (i, r) in self.rule.iter().enumerate() {
            let k = |f: &str| key(&format!("rule[{i}].{f}"));
            if !settings::is_identifier(&r.appointment_type) {
                bad(
                    &k("appointment_type"),
                    "letters, digits, '-' and '_' only".into(),
                );
            }
            if r.codes.is_empty() {
                bad(&k("codes"), "name at least one code".into());
            }
            for c in &r.codes {
                if Code::parse(c).is_none() {
                    bad(
                        &k("codes"),
                        format!("{c:?} is not HCPCS:<code>, CPT:<code> or ICD10:<code>"),
                    );
                }
            }
            if let (Some(lo), Some(hi)) = (r.min_minutes, r.max_minutes)
                && lo > hi
            {
                bad(&k("max_minutes"), "below min_minutes".into());
            }
        }
    }
}

/// What a visit's suggestion names beyond its codes.
pub struct Posting<'a> {
    pub facility: &'a str,
    pub entry: &'a Entry,
    pub patient: &'a str,
    pub codes: &'a [Code],
    pub appointment_type: &'a str,
    pub at_ms: i64,
}

/// MSH-10 of a visit's DFT and the stem of its charges' identifiers.
pub fn control_id(entry_id: i64) -> String {
    format!("SUG{entry_id}")
}

/// The DFT^P03 of a suggestion: one FT1 per procedure code (FT1-25, with the diagnoses in
/// FT1-19), or one FT1 with the diagnoses alone when the table names no procedure. FT1-6 is
/// the suggestion's transaction type and no amount is given: the PMS prices and posts, if
/// staff accept it.
pub fn dft_p03(p: &Posting<'_>, transaction_type: &str) -> String {
    use crate::connectors::hl7v2::notice::{escape, timestamp};
    let ts = timestamp(p.at_ms);
    let control = control_id(p.entry.id);
    let ce = |c: &Code| format!("{}^^{}", escape(&c.code), c.system.hl7());
    let diagnoses: Vec<String> = p
        .codes
        .iter()
        .filter(|c| !c.is_procedure())
        .map(ce)
        .collect();
    let mut procedures: Vec<Option<&Code>> = p
        .codes
        .iter()
        .filter(|c| c.is_procedure())
        .map(Some)
        .collect();
    if procedures.is_empty() {
        procedures.push(None);
    }
    let mut out = format!(
        "MSH|^~\\&|CLINIC-GATEWAY|{f}|||{ts}||DFT^P03^DFT_P03|{control}|P|2.5.1\r\
         EVN|P03|{ts}\r\
         PID|1||{patient}\r\
         PV1|1|O|||||||||||||||||{ticket}\r",
        f = escape(p.facility),
        patient = escape(p.patient),
        ticket = escape(&p.entry.ticket),
    );
    for (i, code) in procedures.into_iter().enumerate() {
        let n = i + 1;
        // FT1-7 is required: without a procedure code the appointment type (local) names it.
        let (tc, pc) = match code {
            Some(c) => (ce(c), ce(c)),
            None => (format!("{}^^L", escape(p.appointment_type)), String::new()),
        };
        out.push_str(&format!(
            "FT1|{n}|{control}-{n}||{ts}|{ts}|{tt}|{tc}|Suggested, not posted||1|||||||||{dx}||||||{pc}\r",
            tt = escape(transaction_type),
            dx = diagnoses.join("~"),
        ));
    }
    out
}

/// The FHIR R4 ChargeItems of a suggestion, `planned`: one per procedure code (or one coded
/// by the appointment type when the table names none), each identified by the visit and its
/// place so that the PMS creates it once, with the diagnoses as its `reason`.
pub fn charge_items(p: &Posting<'_>, patient_system: Option<&str>) -> Vec<serde_json::Value> {
    use serde_json::json;
    let at = jiff::Timestamp::from_millisecond(p.at_ms)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let mut patient = json!({ "value": p.patient });
    if let Some(system) = patient_system {
        patient["system"] = json!(system);
    }
    let concept = |c: &Code| json!({ "coding": [{ "system": c.system.uri(), "code": c.code }] });
    let reasons: Vec<serde_json::Value> = p
        .codes
        .iter()
        .filter(|c| !c.is_procedure())
        .map(concept)
        .collect();
    let mut codes: Vec<serde_json::Value> = p
        .codes
        .iter()
        .filter(|c| c.is_procedure())
        .map(concept)
        .collect();
    if codes.is_empty() {
        codes.push(json!({ "coding": [{
            "system": "urn:clinic-gateway:appointment-type",
            "code": p.appointment_type,
        }] }));
    }
    codes
        .into_iter()
        .enumerate()
        .map(|(i, code)| {
            let mut r = json!({
                "resourceType": "ChargeItem",
                "identifier": [{
                    "system": CHARGE_SYSTEM,
                    "value": format!("{}-{}", control_id(p.entry.id), i + 1),
                }],
                "status": "planned",
                "code": code,
                "subject": { "type": "Patient", "identifier": patient },
                "occurrenceDateTime": at,
                "enteredDate": at,
                "quantity": { "value": 1 },
            });
            if !reasons.is_empty() {
                r["reason"] = json!(reasons);
            }
            r
        })
        .collect()
}

/// What billing knows beyond its table: the facility and the EHR's patient identifier system.
#[derive(Debug, Clone)]
pub struct Billing {
    pub config: BillingConfig,
    pub facility: String,
    pub patient_system: Option<String>,
}

impl Billing {
    /// Suggests codes for a completed visit whose facts are recorded and not yet coded: the
    /// row moves to `suggested` (with the PMS's items) or `refused` (with a staff notice), once.
    fn code(&self, tx: &mut Tx<'_>, entry: &Entry) -> Result<(), JournalError> {
        if entry.state != EntryState::Done {
            return Ok(());
        }
        let Some(visit) = store::visit(tx, entry.id)? else {
            return Ok(());
        };
        if visit.status != VisitStatus::Recorded {
            return Ok(());
        }
        let now = tx.now();
        let start = entry
            .in_room_at
            .or(entry.called_at)
            .unwrap_or(entry.arrived_at);
        let minutes = (entry.closed_at.unwrap_or(now) - start).max(0) / 60_000;
        let minutes = u32::try_from(minutes).unwrap_or(u32::MAX);
        let codes = match self.config.suggest(&visit.facts, minutes) {
            Ok(c) => c,
            Err(refusal) => {
                crate::metrics::METRICS.billing_refused.add(1);
                tracing::warn!(entry = entry.id, %refusal, "billing suggestion refused");
                let reason = refusal.to_string();
                store::visit_refused(tx, entry.id, &reason, now)?;
                let text = format!(
                    "Ticket {} ({}): no billing codes suggested: {reason}. Code the visit in the PMS.",
                    entry.ticket, entry.queue
                );
                return crate::notices::store::notice(tx, NOTICE_REFUSED, &text, now);
            }
        };
        let fee = self
            .config
            .fee_schedule
            .get(&visit.facts.appointment_type)
            .copied();
        store::visit_suggested(tx, entry.id, &codes, fee, now)?;
        tracing::info!(
            entry = entry.id,
            codes = codes.len(),
            "billing codes suggested"
        );
        self.send(tx, entry, &visit, &codes, now)
    }

    fn send(
        &self,
        tx: &mut Tx<'_>,
        entry: &Entry,
        visit: &Visit,
        codes: &[Code],
        now: i64,
    ) -> Result<(), JournalError> {
        if self.config.pms == Pms::None {
            return Ok(());
        }
        let Some(patient) = entry.patient_ref.as_deref().filter(|r| !r.is_empty()) else {
            let text = format!(
                "Ticket {} ({}): billing codes suggested, but the entry names no patient: enter them in the PMS by hand.",
                entry.ticket, entry.queue
            );
            return crate::notices::store::notice(tx, "billing.unsent", &text, now);
        };
        let posting = Posting {
            facility: &self.facility,
            entry,
            patient,
            codes,
            appointment_type: &visit.facts.appointment_type,
            at_ms: now,
        };
        let items = match self.config.pms {
            Pms::Fhir => charge_items(&posting, self.patient_system.as_deref())
                .into_iter()
                .map(|r| {
                    let id = r["identifier"][0]["value"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    Ok(NewItem {
                        source: "billing:charge".into(),
                        source_id: Some(id),
                        kind: crate::connectors::fhir::CREATE.into(),
                        key: format!("patient:{patient}"),
                        schema: "fhir/ChargeItem@4.0.1".into(),
                        payload: journal::to_json(&r)?.into_bytes(),
                        reply: None,
                        occurred_at: Some(now),
                        destinations: vec![crate::connectors::fhir::DESTINATION.into()],
                    })
                })
                .collect::<Result<Vec<_>, JournalError>>()?,
            _ => vec![NewItem {
                source: "billing:dft".into(),
                source_id: Some(control_id(entry.id)),
                kind: "hl7.outbound.dft_p03".into(),
                key: format!("patient:{patient}"),
                schema: "hl7v2/DFT_P03@2.5.1".into(),
                payload: dft_p03(&posting, &self.config.transaction_type).into_bytes(),
                reply: None,
                occurred_at: Some(now),
                destinations: vec![crate::connectors::hl7v2::DESTINATION.into()],
            }],
        };
        for item in items {
            tx.append(&item, now)?;
        }
        Ok(())
    }
}

impl crate::queue::TxHook for Billing {
    fn on_action(
        &self,
        tx: &mut Tx<'_>,
        entry: &Entry,
        action: &crate::queue::Action,
    ) -> Result<(), JournalError> {
        if *action == crate::queue::Action::Complete {
            self.code(tx, entry)?;
        }
        Ok(())
    }
}

/// Staff record a visit's facts: kept until the visit is coded; a completed visit is coded
/// at once.
#[derive(Debug)]
pub struct RecordVisit {
    pub entry_id: i64,
    pub facts: Facts,
    pub by: String,
    pub billing: std::sync::Arc<Billing>,
}

/// A visit's facts and suggestion.
#[derive(Debug)]
pub struct GetVisit {
    pub entry_id: i64,
}

crate::journal_work!(RecordVisit, GetVisit);

impl Work for RecordVisit {
    type Output = Visit;
    fn run(self, tx: &mut Tx<'_>) -> Result<Visit, JournalError> {
        let now = tx.now();
        self.facts.validate().map_err(JournalError::Rejected)?;
        let entry = crate::queue::store::queue_entry(tx, self.entry_id)?;
        if !store::record_visit(tx, entry.id, &self.facts, &self.by, now)? {
            return Err(JournalError::Rejected(format!(
                "entry {}'s visit is coded already",
                entry.id
            )));
        }
        self.billing.code(tx, &entry)?;
        store::visit(tx, entry.id)?.ok_or_else(|| JournalError::NotFound(entry.id.to_string()))
    }
}

impl Work for GetVisit {
    type Output = Option<Visit>;
    const READ_ONLY: bool = true;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::visit(tx, self.entry_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> BillingConfig {
        toml::from_str(
            r#"
            fee_schedule = { office-visit = 12000 }
            [[rule]]
            appointment_type = "office-visit"
            new_patient = false
            max_minutes = 20
            codes = ["HCPCS:G0463", "ICD10:Z00.00"]
            [[rule]]
            appointment_type = "office-visit"
            procedure = "flu-shot"
            codes = ["HCPCS:G0008", "HCPCS:Q2035", "ICD10:Z23"]
            "#,
        )
        .expect("table")
    }

    fn check(facts: (&str, bool, &[&str]), minutes: u32, expected: Result<&[&str], &str>) {
        let facts = Facts {
            appointment_type: facts.0.into(),
            new_patient: facts.1,
            procedures: facts.2.iter().map(|p| p.to_string()).collect(),
        };
        let got = table()
            .suggest(&facts, minutes)
            .map(|c| {
                c.iter()
                    .map(|c| format!("{:?}:{}", c.system, c.code))
                    .collect::<Vec<_>>()
            })
            .map_err(|e| e.to_string());
        let expected = expected
            .map(|e| e.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .map_err(str::to_string);
        assert_eq!(got, expected);
    }

    #[test]
    fn rules_match_type_facts_and_length() {
        check(
            ("office-visit", false, &[]),
            15,
            Ok(&["Hcpcs:G0463", "Icd10:Z00.00"]),
        );
        check(
            ("office-visit", false, &["flu-shot"]),
            15,
            Ok(&[
                "Hcpcs:G0463",
                "Hcpcs:G0008",
                "Hcpcs:Q2035",
                "Icd10:Z00.00",
                "Icd10:Z23",
            ]),
        );
        check(
            ("office-visit", true, &[]),
            15,
            Err("no rule of appointment type \"office-visit\" matches the visit's facts"),
        );
        check(
            ("office-visit", false, &[]),
            45,
            Err("no rule of appointment type \"office-visit\" matches the visit's facts"),
        );
        check(
            ("tattoo", false, &[]),
            15,
            Err("appointment type \"tattoo\" is not in the billing table"),
        );
    }

    #[test]
    fn the_shipped_example_table_is_valid() {
        #[derive(Deserialize)]
        struct File {
            connectors: Connectors,
        }
        #[derive(Deserialize)]
        struct Connectors {
            billing: BillingConfig,
        }
        let text = include_str!("../../../firmware-config/billing-example.toml");
        let file: File = toml::from_str(text).expect("the example table");
        let mut problems = Vec::new();
        file.connectors
            .billing
            .validate(true, false, &mut |k, m| problems.push(format!("{k}: {m}")));
        assert_eq!(problems, Vec::<String>::new());
        let facts = Facts {
            appointment_type: "annual-wellness".into(),
            new_patient: false,
            procedures: vec!["depression-screening".into()],
        };
        let codes = file.connectors.billing.suggest(&facts, 30).expect("codes");
        let codes: Vec<&str> = codes.iter().map(|c| c.code.as_str()).collect();
        assert_eq!(codes, ["G0439", "G0444", "Z00.00", "Z13.31"]);
    }

    #[test]
    fn a_suggestion_is_never_a_posting() {
        let entry: Entry = serde_json::from_value(serde_json::json!({
            "id": 7, "queue": "general", "ticket": "G-001", "patient_ref": "MRN-1",
            "appointment_ref": null, "priority": "normal", "priority_reason": null,
            "state": "done", "room": null, "arrived_at": 0, "called_at": null,
            "in_room_at": null, "closed_at": 0
        }))
        .expect("entry");
        let codes = [
            Code::parse("HCPCS:G0008").expect("code"),
            Code::parse("ICD10:Z23").expect("code"),
        ];
        let p = Posting {
            facility: "CLINIC",
            entry: &entry,
            patient: "MRN-1",
            codes: &codes,
            appointment_type: "flu-shot",
            at_ms: 0,
        };
        let dft = dft_p03(&p, "SUG");
        let ft1 = dft.split('\r').find(|s| s.starts_with("FT1")).expect("FT1");
        let f: Vec<&str> = ft1.split('|').collect();
        assert_eq!(
            (f[2], f[6], f[19], f[25]),
            ("SUG7-1", "SUG", "Z23^^I10", "G0008^^HCPCS")
        );
        assert_eq!(f[11], "", "no amount: the PMS prices it");
        let items = charge_items(&p, Some("urn:mrn"));
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["status"], "planned");
        crate::connectors::fhir::protocol::conform(&items[0]).expect("valid R4");
    }
}
