//! The clinic's reports: no-shows and their cost, queue efficiency, billed revenue per visit
//! type and appointment efficiency, per day, week or month and per queue. [`ReadFacts`] reads
//! the entries of a span and what billing and payments recorded about them through their
//! owners' store functions (no SQL here); [`report`] is pure.
//!
//! **Invariant:** a report carries counts, durations and money per period, queue and
//! appointment type: never a ticket, a patient or an entry id.

use crate::connectors::payments::store::{Payment, Status as PaymentStatus};
use crate::connectors::practice::store::{
    Eligibility, Status as EligibilityStatus, Visit, VisitStatus,
};
use crate::journal::{JournalError, Tx, Work};
use crate::queue::store::EntryFilter;
use crate::queue::{Entry, EntryState};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Which report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// No-shows per queue and their cost from the fee schedule.
    NoShows,
    /// Waits, visits per room-hour, patients who left before being seen, per queue.
    QueueEfficiency,
    /// Suggested (billed) fees and confirmed payments per appointment type.
    Revenue,
    /// Appointments booked, seen and billed, per queue.
    Appointments,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::NoShows,
        Kind::QueueEfficiency,
        Kind::Revenue,
        Kind::Appointments,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NoShows => "no-shows",
            Kind::QueueEfficiency => "queue-efficiency",
            Kind::Revenue => "revenue",
            Kind::Appointments => "appointments",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The CSV columns after `period` and the group.
    fn columns(self) -> &'static [&'static str] {
        match self {
            Kind::NoShows => &["no_shows", "untyped", "cost_cents"],
            Kind::QueueEfficiency => &[
                "arrived",
                "seen",
                "wait_p50_s",
                "wait_p90_s",
                "room_hours",
                "visits_per_room_hour",
                "left_without_being_seen",
            ],
            Kind::Revenue => &["visits", "suggested", "billed_cents", "paid_cents"],
            Kind::Appointments => &["booked", "insured", "seen", "billed", "no_shows"],
        }
    }

    /// What a row is grouped by beside its period.
    fn group(self) -> &'static str {
        match self {
            Kind::Revenue => "appointment_type",
            _ => "queue",
        }
    }
}

/// How rows are bucketed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    /// ISO weeks, named by their Monday.
    Week,
    /// Named `YYYY-MM`.
    Month,
}

impl Period {
    pub fn parse(s: &str) -> Option<Period> {
        match s {
            "day" => Some(Period::Day),
            "week" => Some(Period::Week),
            "month" => Some(Period::Month),
            _ => None,
        }
    }

    /// The bucket of a clinic date.
    fn bucket(self, date: jiff::civil::Date) -> String {
        match self {
            Period::Day => date.to_string(),
            Period::Week => {
                let back = i64::from(date.weekday().to_monday_zero_offset());
                date.checked_sub(jiff::Span::new().days(back))
                    .unwrap_or(date)
                    .to_string()
            }
            Period::Month => date.strftime("%Y-%m").to_string(),
        }
    }
}

/// The entries that arrived in `[from, to)` (ms), of one queue or all, with their billing
/// visits and payments.
#[derive(Debug)]
pub struct ReadFacts {
    pub from: i64,
    pub to: i64,
    pub queue: Option<String>,
}

/// What a report is computed from.
#[derive(Debug, Default)]
pub struct Facts {
    pub entries: Vec<Entry>,
    pub visits: Vec<Visit>,
    pub payments: Vec<Payment>,
    /// Each entry's latest eligibility inquiry, if it had one.
    pub eligibility: Vec<Eligibility>,
    /// The clinic's time zone, which dates the entries.
    pub zone: Option<jiff::tz::TimeZone>,
}

crate::journal_work!(ReadFacts);

impl Work for ReadFacts {
    type Output = Facts;
    const READ_ONLY: bool = true;
    const LONG: bool = true;
    fn run(self, tx: &mut Tx<'_>) -> Result<Facts, JournalError> {
        let filter = EntryFilter {
            queue: self.queue.as_deref(),
            closed_since: Some(i64::MIN),
            arrived_at: Some(self.from..self.to),
            ..EntryFilter::OPEN
        };
        let entries = crate::queue::store::queue_entries(tx, &filter)?;
        let ids: Vec<i64> = entries.iter().map(|e| e.id).collect();
        let visits = crate::connectors::practice::store::visits_of(tx, &ids)?;
        let mut payments = Vec::new();
        for &id in &ids {
            payments.extend(crate::connectors::payments::store::of_entry(tx, id)?);
        }
        let eligibility = crate::connectors::practice::store::latest_of(tx, &ids)?;
        let zone = crate::queue::settings::settings(tx).zone.clone();
        Ok(Facts {
            entries,
            visits,
            payments,
            eligibility,
            zone: Some(zone),
        })
    }
}

/// One row: a period, a queue or an appointment type, and the kind's figures in its columns'
/// order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub period: String,
    pub group: String,
    pub values: Vec<f64>,
}

/// A report as the API answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub kind: Kind,
    pub period: Period,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn to_json(&self) -> serde_json::Value {
        let group = self.kind.group();
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                let mut o = serde_json::Map::new();
                o.insert("period".into(), r.period.clone().into());
                o.insert(group.into(), r.group.clone().into());
                for (c, v) in self.kind.columns().iter().zip(&r.values) {
                    o.insert((*c).into(), number(*v));
                }
                serde_json::Value::Object(o)
            })
            .collect();
        serde_json::json!({
            "kind": self.kind,
            "period": self.period,
            "columns": self.kind.columns(),
            "rows": rows,
        })
    }

    pub fn to_csv(&self) -> String {
        let mut out = format!(
            "period,{},{}\r\n",
            self.kind.group(),
            self.kind.columns().join(",")
        );
        for r in &self.rows {
            let values: Vec<String> = r.values.iter().map(|v| number(*v).to_string()).collect();
            out.push_str(&format!(
                "{},{},{}\r\n",
                csv_field(&r.period),
                csv_field(&r.group),
                values.join(",")
            ));
        }
        out
    }
}

/// Whole figures as integers, others with two decimals.
fn number(v: f64) -> serde_json::Value {
    let v = (v * 100.0).round() / 100.0;
    if v.fract() == 0.0 && v.abs() < 9e15 {
        serde_json::json!(v as i64)
    } else {
        serde_json::json!(v)
    }
}

/// Queue names and appointment types are identifiers; quoting keeps a stray comma harmless.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The nearest-rank percentile `p` (0–100) of sorted values.
fn percentile(sorted: &[i64], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1] as f64
}

/// Computes `kind` over `facts`, bucketed by `period` in the clinic's zone; `fees` is the
/// fee schedule (cents per appointment type).
pub fn report(kind: Kind, period: Period, facts: &Facts, fees: &BTreeMap<String, i64>) -> Report {
    let zone = facts.zone.clone().unwrap_or(jiff::tz::TimeZone::UTC);
    let bucket = |ms: i64| {
        let date = jiff::Timestamp::from_millisecond(ms)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_zoned(zone.clone())
            .date();
        period.bucket(date)
    };
    let visits: HashMap<i64, &Visit> = facts.visits.iter().map(|v| (v.entry_id, v)).collect();
    let mut paid: HashMap<i64, i64> = HashMap::new();
    for p in facts
        .payments
        .iter()
        .filter(|p| p.status == PaymentStatus::Confirmed)
    {
        *paid.entry(p.entry_id).or_default() += p.amount_cents;
    }
    let insured: std::collections::HashSet<i64> = facts
        .eligibility
        .iter()
        .filter(|e| {
            matches!(
                e.status,
                EligibilityStatus::Verified | EligibilityStatus::Overridden
            )
        })
        .map(|e| e.entry_id)
        .collect();
    let type_of = |e: &Entry| visits.get(&e.id).map(|v| v.facts.appointment_type.clone());
    let billed = |e: &Entry| {
        visits
            .get(&e.id)
            .is_some_and(|v| v.status == VisitStatus::Suggested)
    };
    let mut groups: BTreeMap<(String, String), Vec<&Entry>> = BTreeMap::new();
    for e in &facts.entries {
        let group = match kind {
            Kind::Revenue => {
                if e.state != EntryState::Done {
                    continue;
                }
                type_of(e).unwrap_or_else(|| "untyped".into())
            }
            _ => e.queue.clone(),
        };
        groups
            .entry((bucket(e.arrived_at), group))
            .or_default()
            .push(e);
    }
    let rows = groups
        .into_iter()
        .map(|((period, group), entries)| {
            let count = |f: &dyn Fn(&Entry) -> bool| entries.iter().filter(|e| f(e)).count() as f64;
            let values = match kind {
                Kind::NoShows => {
                    let no_shows: Vec<&&Entry> = entries
                        .iter()
                        .filter(|e| e.state == EntryState::NoShow)
                        .collect();
                    let cost: i64 = no_shows
                        .iter()
                        .filter_map(|e| type_of(e).and_then(|t| fees.get(&t).copied()))
                        .sum();
                    let untyped = no_shows.iter().filter(|e| type_of(e).is_none()).count();
                    vec![no_shows.len() as f64, untyped as f64, cost as f64]
                }
                Kind::QueueEfficiency => {
                    let mut waits: Vec<i64> = entries
                        .iter()
                        .filter_map(|e| {
                            e.called_at
                                .or(e.in_room_at)
                                .map(|c| (c - e.arrived_at) / 1000)
                        })
                        .collect();
                    waits.sort_unstable();
                    let room_ms: i64 = entries
                        .iter()
                        .filter(|e| e.state == EntryState::Done)
                        .filter_map(|e| Some(e.closed_at? - e.in_room_at?))
                        .sum();
                    let in_room = count(&|e| e.state == EntryState::Done && e.in_room_at.is_some());
                    let hours = room_ms as f64 / 3_600_000.0;
                    vec![
                        entries.len() as f64,
                        count(&|e| e.state == EntryState::Done),
                        percentile(&waits, 50),
                        percentile(&waits, 90),
                        hours,
                        if hours > 0.0 { in_room / hours } else { 0.0 },
                        count(&|e| e.state == EntryState::Left),
                    ]
                }
                Kind::Revenue => {
                    let suggested: Vec<&&Entry> = entries.iter().filter(|e| billed(e)).collect();
                    let billed_cents: i64 = suggested
                        .iter()
                        .filter_map(|e| visits.get(&e.id).and_then(|v| v.fee_cents))
                        .sum();
                    let paid_cents: i64 = entries.iter().filter_map(|e| paid.get(&e.id)).sum();
                    vec![
                        entries.len() as f64,
                        suggested.len() as f64,
                        billed_cents as f64,
                        paid_cents as f64,
                    ]
                }
                Kind::Appointments => {
                    let booked = |e: &Entry| e.appointment_ref.is_some();
                    vec![
                        count(&|e| booked(e)),
                        count(&|e| booked(e) && insured.contains(&e.id)),
                        count(&|e| booked(e) && e.state == EntryState::Done),
                        count(&|e| booked(e) && billed(e)),
                        count(&|e| booked(e) && e.state == EntryState::NoShow),
                    ]
                }
            };
            Row {
                period,
                group,
                values,
            }
        })
        .collect();
    Report { kind, period, rows }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::practice::billing;

    fn entry(id: i64, queue: &str, state: &str, times: [Option<i64>; 4], booked: bool) -> Entry {
        serde_json::from_value(serde_json::json!({
            "id": id, "queue": queue, "ticket": format!("T-{id}"), "patient_ref": null,
            "appointment_ref": booked.then(|| format!("A{id}")), "priority": "normal",
            "priority_reason": null, "state": state, "room": null,
            "arrived_at": times[0], "called_at": times[1], "in_room_at": times[2],
            "closed_at": times[3]
        }))
        .expect("entry")
    }

    fn visit(entry_id: i64, kind: &str, status: VisitStatus, fee: Option<i64>) -> Visit {
        Visit {
            entry_id,
            facts: billing::Facts {
                appointment_type: kind.into(),
                new_patient: false,
                procedures: Vec::new(),
            },
            recorded_at: 0,
            recorded_by: "desk".into(),
            status,
            codes: Vec::new(),
            fee_cents: fee,
            reason: None,
            coded_at: None,
        }
    }

    fn payment(entry_id: i64, status: &str, cents: i64) -> Payment {
        Payment {
            id: 0,
            reference: String::new(),
            entry_id,
            amount_cents: cents,
            currency: "usd".into(),
            method: "hosted".into(),
            status: match status {
                "confirmed" => PaymentStatus::Confirmed,
                _ => PaymentStatus::Failed,
            },
            processor: None,
            intent: None,
            client_secret: None,
            cause: None,
            requested_at: 0,
            requested_by: "desk".into(),
            updated_at: 0,
            owed_at: None,
            owed_by: None,
            settled_by: None,
            confirmed_at: None,
        }
    }

    const DAY: i64 = 86_400_000;
    const MIN: i64 = 60_000;

    fn facts() -> Facts {
        let t = 20_000 * DAY; // 2024-10-04, a Friday
        Facts {
            entries: vec![
                entry(
                    1,
                    "gp",
                    "done",
                    [
                        Some(t),
                        Some(t + 10 * MIN),
                        Some(t + 12 * MIN),
                        Some(t + 42 * MIN),
                    ],
                    true,
                ),
                entry(
                    2,
                    "gp",
                    "done",
                    [
                        Some(t),
                        Some(t + 20 * MIN),
                        Some(t + 20 * MIN),
                        Some(t + 50 * MIN),
                    ],
                    true,
                ),
                entry(
                    3,
                    "gp",
                    "no_show",
                    [Some(t), None, None, Some(t + 60 * MIN)],
                    true,
                ),
                entry(
                    4,
                    "gp",
                    "left",
                    [Some(t), None, None, Some(t + 30 * MIN)],
                    false,
                ),
                entry(
                    5,
                    "lab",
                    "no_show",
                    [Some(t + DAY), None, None, Some(t + DAY + MIN)],
                    true,
                ),
            ],
            visits: vec![
                visit(1, "office-visit", VisitStatus::Suggested, Some(12_000)),
                visit(2, "flu-shot", VisitStatus::Refused, None),
                visit(3, "office-visit", VisitStatus::Recorded, None),
            ],
            payments: vec![payment(1, "confirmed", 2500), payment(1, "failed", 2500)],
            eligibility: vec![Eligibility {
                entry_id: 1,
                payer: "acme".into(),
                status: EligibilityStatus::Verified,
                detail: Default::default(),
                requested_at: t,
                requested_by: "desk".into(),
                answered_at: Some(t),
                override_by: None,
                override_reason: None,
            }],
            zone: Some(jiff::tz::TimeZone::UTC),
        }
    }

    fn check(kind: Kind, period: Period, expected: &str) {
        let fees = BTreeMap::from([("office-visit".to_string(), 12_000)]);
        assert_eq!(
            report(kind, period, &facts(), &fees)
                .to_csv()
                .replace("\r\n", "\n"),
            expected
        );
    }

    #[test]
    fn no_shows_cost_their_fee() {
        check(
            Kind::NoShows,
            Period::Day,
            "period,queue,no_shows,untyped,cost_cents\n2024-10-04,gp,1,0,12000\n2024-10-05,lab,1,1,0\n",
        );
        check(
            Kind::NoShows,
            Period::Week,
            "period,queue,no_shows,untyped,cost_cents\n2024-09-30,gp,1,0,12000\n2024-09-30,lab,1,1,0\n",
        );
    }

    #[test]
    fn efficiency_counts_waits_rooms_and_leavers() {
        check(
            Kind::QueueEfficiency,
            Period::Month,
            "period,queue,arrived,seen,wait_p50_s,wait_p90_s,room_hours,visits_per_room_hour,left_without_being_seen\n\
             2024-10,gp,4,2,600,1200,1,2,1\n2024-10,lab,1,0,0,0,0,0,0\n",
        );
    }

    #[test]
    fn revenue_and_appointments_follow_billing() {
        check(
            Kind::Revenue,
            Period::Day,
            "period,appointment_type,visits,suggested,billed_cents,paid_cents\n\
             2024-10-04,flu-shot,1,0,0,0\n2024-10-04,office-visit,1,1,12000,2500\n",
        );
        check(
            Kind::Appointments,
            Period::Month,
            "period,queue,booked,insured,seen,billed,no_shows\n2024-10,gp,3,1,2,1,1\n2024-10,lab,1,0,0,0,1\n",
        );
    }
}
