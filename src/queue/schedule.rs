//! Appointments from the EHR's schedule as queue effects, pure: the clinic's day, the day an
//! appointment falls on, and what a booked, moved or changed appointment (HL7 SIU S12/S13/S14,
//! mapped to FHIR Appointments) does to the queue. The caller gives today's date and the
//! clinic's offset from UTC; nothing here reads the clock.

use super::{Booking, FromEhr, Priority};
use serde::Deserialize;
use serde_json::Value;

/// When a booked appointment of today is queued.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CheckInWhen {
    /// Once the EHR marks the patient arrived or checked in.
    #[default]
    Arrived,
    /// As soon as it is booked for today (pre-checked-in).
    Booked,
}

/// What one message from the EHR is decided against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The queue due appointments are checked in to.
    pub queue: String,
    pub check_in: CheckInWhen,
    /// The clinic's date when the message arrived, `YYYY-MM-DD`.
    pub today: String,
    /// The clinic's offset from UTC in minutes: a start given at another offset is moved into
    /// it before its day is compared with `today`.
    pub utc_offset_min: i32,
}

/// R4's `Appointment.priority` is a bare number (iCal's 1 to 9); the v2 priority codes are
/// kept as R5's coded `Appointment.priority` through its cross-version extension on
/// `_priority`, so that no number is invented for them.
pub const PRIORITY_EXTENSION: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.priority";

/// v3 ActPriority, whose S / A / R are v2 table 0027 / 0485's stat / ASAP / routine.
pub const ACT_PRIORITY: &str = "http://terminology.hl7.org/CodeSystem/v3-ActPriority";

/// The queue priority of an ActPriority code, with the reason shown beside a raised one; the
/// other codes (pre-op, timing critical, as needed, ...) say nothing about who goes first.
const QUEUE_PRIORITY: &[(&str, Priority, Option<&str>)] = &[
    ("S", Priority::Urgent, Some("appointment priority: stat")),
    ("A", Priority::Elevated, Some("appointment priority: ASAP")),
    ("R", Priority::Normal, None),
];

impl FromEhr {
    /// The effects the Appointments of one message have on `schedule`'s queue, beside those of
    /// [`FromEhr::from_resources`] (which close cancelled and no-show appointments):
    /// - an appointment that falls on another day closes its open entries (moved away);
    /// - one of today that is due (arrived or checked in, or booked with
    ///   [`CheckInWhen::Booked`]) is queued once ([`FromEhr::AppointmentDue`]);
    /// - one of today or later that is booked, while the clinic checks in on arrival, is
    ///   remembered for the patient's arrival ([`FromEhr::Booked`]);
    /// - a priority it carries is given to its open entries ([`FromEhr::AppointmentPriority`]).
    ///
    /// An arrival (ADT A04 registers, A01 admits: an Encounter the trigger made `arrived` or
    /// `in-progress`), while the clinic checks in on arrival, queues the patient's remembered
    /// booking of today ([`FromEhr::Arrived`]).
    ///
    /// A booking without a status is booked. An appointment without a readable start day is
    /// neither queued, remembered nor closed: its day is unknown, not another one.
    pub fn from_schedule(resources: &[Value], schedule: &Schedule) -> Vec<FromEhr> {
        let patient_ref = super::patient_ref(resources);
        let on_arrival = schedule.check_in == CheckInWhen::Arrived;
        let mut out = Vec::new();
        for r in resources
            .iter()
            .filter(|r| r["resourceType"] == "Appointment")
        {
            let appointment_refs = appointment_refs(r);
            let Some(appointment_ref) = appointment_refs.first().cloned() else {
                continue;
            };
            let (due, awaits_arrival) = match r["status"].as_str().unwrap_or("booked") {
                "arrived" | "checked-in" => (true, false),
                "booked" | "pending" => (!on_arrival, on_arrival),
                "entered-in-error" => {
                    out.push(FromEhr::Cancelled { appointment_refs });
                    continue;
                }
                _ => continue,
            };
            let start = r["start"].as_str();
            let day = start.and_then(|s| day_of(s, schedule.utc_offset_min));
            let carried = appointment_priority(r);
            // Days compare as text: `YYYY-MM-DD` sorts by date. A booking moved into the past
            // will not be arrived for.
            let booked = match (&patient_ref, &day, start) {
                (Some(patient_ref), Some(day), Some(start))
                    if awaits_arrival && *day >= schedule.today =>
                {
                    start_ms(start, schedule.utc_offset_min).map(|starts_at| {
                        FromEhr::Booked(Booking {
                            queue: schedule.queue.clone(),
                            appointment_ref: appointment_ref.clone(),
                            appointment_refs: appointment_refs.clone(),
                            patient_ref: patient_ref.clone(),
                            day: day.clone(),
                            starts_at,
                            priority: carried.clone(),
                        })
                    })
                }
                _ => None,
            };
            if day.as_ref().is_some_and(|d| *d != schedule.today) {
                out.push(FromEhr::Moved {
                    appointment_refs,
                    start: start.map(str::to_string),
                });
                out.extend(booked);
                continue;
            }
            if due
                && day.is_some()
                && let Some(patient_ref) = &patient_ref
            {
                let (priority, priority_reason) =
                    carried.clone().unwrap_or((Priority::Normal, None));
                out.push(FromEhr::AppointmentDue {
                    queue: schedule.queue.clone(),
                    appointment_ref,
                    appointment_refs: appointment_refs.clone(),
                    patient_ref: patient_ref.clone(),
                    priority,
                    priority_reason,
                });
            }
            out.extend(booked);
            if let Some((priority, reason)) = carried {
                out.push(FromEhr::AppointmentPriority {
                    appointment_refs,
                    priority,
                    reason,
                });
            }
        }
        let arrived = resources.iter().any(|r| {
            r["resourceType"] == "Encounter"
                && matches!(r["status"].as_str(), Some("arrived" | "in-progress"))
        });
        if arrived
            && on_arrival
            && let Some(patient_ref) = patient_ref
        {
            out.push(FromEhr::Arrived {
                patient_ref,
                today: schedule.today.clone(),
            });
        }
        out
    }
}

/// The appointment's identifier values, the filler's (SCH-2, type `FILL`) first: the
/// scheduling system that sends SIU owns that one, so it names the entry.
fn appointment_refs(appointment: &Value) -> Vec<String> {
    let mut ids: Vec<(bool, String)> = appointment["identifier"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| {
            let value = i["value"].as_str().filter(|s| !s.is_empty())?;
            Some((i["type"]["coding"][0]["code"] != "FILL", value.to_string()))
        })
        .collect();
    ids.sort_by_key(|(not_filler, _)| *not_filler);
    let mut refs: Vec<String> = Vec::with_capacity(ids.len());
    for (_, value) in ids {
        if !refs.contains(&value) {
            refs.push(value);
        }
    }
    refs
}

/// The queue priority the appointment carries, if it carries one that orders the queue.
fn appointment_priority(appointment: &Value) -> Option<(Priority, Option<String>)> {
    let coding = appointment["_priority"]["extension"]
        .as_array()?
        .iter()
        .find(|e| e["url"] == PRIORITY_EXTENSION)?["valueCodeableConcept"]["coding"]
        .as_array()?
        .iter()
        .find(|c| c["system"] == ACT_PRIORITY)?;
    let code = coding["code"].as_str()?;
    QUEUE_PRIORITY
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|(_, p, reason)| (*p, reason.map(str::to_string)))
}

/// The clinic's date (`YYYY-MM-DD`) `unix_ms` falls on at `utc_offset_min`.
pub fn local_day(unix_ms: i64, utc_offset_min: i32) -> String {
    let minutes = unix_ms.div_euclid(60_000) + i64::from(utc_offset_min);
    format_day(minutes.div_euclid(24 * 60))
}

/// The clinic's date of a FHIR date or dateTime. A date, or a time without an offset (v2
/// senders' local time), is the clinic's own day; a time with an offset is moved to
/// `utc_offset_min` first. `None` for a start less precise than a day or not a real date.
pub fn day_of(start: &str, utc_offset_min: i32) -> Option<String> {
    clinic_minutes(start, utc_offset_min).map(|m| format_day(m.div_euclid(24 * 60)))
}

/// Unix ms of a FHIR date or dateTime; a date (its beginning) or a time without an offset is
/// read at the clinic's `utc_offset_min`. Seconds are not kept. `None` as for [`day_of`].
pub fn start_ms(start: &str, utc_offset_min: i32) -> Option<i64> {
    clinic_minutes(start, utc_offset_min).map(|m| (m - i64::from(utc_offset_min)) * 60_000)
}

/// Minutes since 1970-01-01T00:00 on the clinic's clock (UTC moved by `utc_offset_min`) of a
/// FHIR date (its beginning) or dateTime (to the minute).
fn clinic_minutes(start: &str, utc_offset_min: i32) -> Option<i64> {
    let date = start.get(..10)?;
    let days = parse_day(date)?;
    let Some(time) = start[10..].strip_prefix('T') else {
        return start[10..].is_empty().then_some(days * 24 * 60);
    };
    let zone_at = time.find(['Z', '+', '-']);
    let (clock, zone) = match zone_at {
        Some(i) => (&time[..i], &time[i..]),
        None => (time, ""),
    };
    let (hh, mm) = (digits(clock.get(0..2)?)?, digits(clock.get(3..5)?)?);
    if clock.get(2..3) != Some(":") || hh > 23 || mm > 59 {
        return None;
    }
    let zone_min = match zone {
        // Without an offset the time is already the clinic's.
        "" => i64::from(utc_offset_min),
        "Z" => 0,
        z => {
            let (zh, zm) = (digits(z.get(1..3)?)?, digits(z.get(4..6)?)?);
            if z.len() != 6 || z.get(3..4) != Some(":") || zh > 14 || zm > 59 {
                return None;
            }
            let sign = if z.starts_with('-') { -1 } else { 1 };
            sign * (zh * 60 + zm)
        }
    };
    Some(days * 24 * 60 + hh * 60 + mm - zone_min + i64::from(utc_offset_min))
}

/// A number written only in ASCII digits.
fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Days since 1970-01-01 of a real `YYYY-MM-DD` date.
fn parse_day(date: &str) -> Option<i64> {
    let (y, m, d) = (
        digits(date.get(0..4)?)?,
        digits(date.get(5..7)?)?,
        digits(date.get(8..10)?)?,
    );
    if date.get(4..5) != Some("-") || date.get(7..8) != Some("-") {
        return None;
    }
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1..=month_days).contains(&d) {
        return None;
    }
    // Days from civil (H. Hinnant's algorithm): years start in March so that the leap day
    // ends the year.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// `YYYY-MM-DD` of a count of days since 1970-01-01 (civil from days, the inverse above).
fn format_day(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TODAY: &str = "2026-11-24";

    /// The effects of one SIU's Patient (MRN-1) and Appointment (placer P-1, filler F-1)
    /// with `appointment`'s fields, decided on 2026-11-24 at UTC+1.
    fn check(appointment: Value, when: CheckInWhen) -> Vec<FromEhr> {
        let mut a = json!({
            "resourceType": "Appointment",
            "identifier": [
                {"value": "P-1", "type": {"coding": [{"code": "PLAC"}]}},
                {"value": "F-1", "type": {"coding": [{"code": "FILL"}]}}
            ]
        });
        if let (Some(a), Some(fields)) = (a.as_object_mut(), appointment.as_object()) {
            a.extend(fields.clone());
        }
        let resources = [
            json!({"resourceType": "Patient", "identifier": [{"value": "MRN-1"}, {"value": "NAT-9"}]}),
            a,
        ];
        let schedule = Schedule {
            queue: "general".into(),
            check_in: when,
            today: TODAY.into(),
            utc_offset_min: 60,
        };
        FromEhr::from_schedule(&resources, &schedule)
    }

    fn due(priority: Priority, reason: Option<&str>) -> FromEhr {
        FromEhr::AppointmentDue {
            queue: "general".into(),
            appointment_ref: "F-1".into(),
            appointment_refs: vec!["F-1".into(), "P-1".into()],
            patient_ref: "MRN-1".into(),
            priority,
            priority_reason: reason.map(str::to_string),
        }
    }

    /// Remembered for the patient's arrival: on `day`, starting at `starts_at` (Unix ms).
    fn booked(day: &str, starts_at: i64, priority: Option<(Priority, &str)>) -> FromEhr {
        FromEhr::Booked(Booking {
            queue: "general".into(),
            appointment_ref: "F-1".into(),
            appointment_refs: vec!["F-1".into(), "P-1".into()],
            patient_ref: "MRN-1".into(),
            day: day.into(),
            starts_at,
            priority: priority.map(|(p, reason)| (p, Some(reason.to_string()))),
        })
    }

    /// 2026-11-24T00:00+01:00 and 2026-11-25T00:00+01:00, in Unix ms.
    const TODAY_MS: i64 = 1_795_474_800_000;
    const TOMORROW_MS: i64 = 1_795_561_200_000;

    fn moved(start: &str) -> FromEhr {
        FromEhr::Moved {
            appointment_refs: vec!["F-1".into(), "P-1".into()],
            start: Some(start.into()),
        }
    }

    fn with_priority(code: &str) -> Value {
        json!({"extension": [{
            "url": PRIORITY_EXTENSION,
            "valueCodeableConcept": {"coding": [{"system": ACT_PRIORITY, "code": code}]}
        }]})
    }

    #[test]
    fn a_booking_for_today_is_queued_only_when_booked_appointments_are() {
        use CheckInWhen::*;
        let today = json!({"status": "booked", "start": "2026-11-24"});
        assert_eq!(check(today.clone(), Booked), [due(Priority::Normal, None)]);
        assert_eq!(
            check(today, Arrived),
            [booked(TODAY, TODAY_MS, None)],
            "remembered until the patient arrives"
        );
        assert_eq!(
            check(
                json!({"status": "pending", "start": "2026-11-24T09:30:00+01:00"}),
                Arrived
            ),
            [booked(TODAY, 1_795_509_000_000, None)]
        );
        // A booking that does not say its status is booked.
        assert_eq!(
            check(json!({"start": "2026-11-24"}), Booked),
            [due(Priority::Normal, None)]
        );
        // Arrived (SCH-25 Started) is due whichever way the clinic checks in.
        assert_eq!(
            check(json!({"status": "arrived", "start": "2026-11-24"}), Arrived),
            [due(Priority::Normal, None)]
        );
        for status in ["waitlist", "fulfilled", "proposed"] {
            assert_eq!(
                check(json!({"status": status, "start": "2026-11-24"}), Booked),
                [],
                "{status}"
            );
        }
    }

    #[test]
    fn another_day_closes_the_entry_and_an_unknown_day_changes_nothing() {
        use CheckInWhen::*;
        let tomorrow = json!({"status": "booked", "start": "2026-11-25"});
        assert_eq!(check(tomorrow.clone(), Booked), [moved("2026-11-25")]);
        assert_eq!(
            check(tomorrow, Arrived),
            [moved("2026-11-25"), booked("2026-11-25", TOMORROW_MS, None)],
            "closed in either mode; remembered for tomorrow's arrival"
        );
        assert_eq!(
            check(json!({"status": "booked", "start": "2026-11-23"}), Arrived),
            [moved("2026-11-23")],
            "a past day is not arrived for"
        );
        assert_eq!(
            check(json!({"status": "booked"}), Arrived),
            [],
            "no day: not remembered"
        );
        assert_eq!(check(json!({"status": "booked"}), Booked), []);
        assert_eq!(check(json!({"start": "2026-11"}), Booked), []);
        assert_eq!(check(json!({"start": "2026-11-31"}), Booked), []);
        assert_eq!(
            check(
                json!({"status": "entered-in-error", "start": TODAY}),
                Arrived
            ),
            [FromEhr::Cancelled {
                appointment_refs: vec!["F-1".into(), "P-1".into()]
            }],
            "deleted in the scheduling system"
        );
        assert_eq!(
            check(json!({"status": "cancelled", "start": TODAY}), Booked),
            [],
            "cancellations are from_resources' effect"
        );
    }

    #[test]
    fn a_start_with_an_offset_counts_in_the_clinics_day() {
        use CheckInWhen::Booked;
        // 23:30 at UTC-5 is 05:30 the next day at the clinic's UTC+1.
        assert_eq!(
            check(json!({"start": "2026-11-23T23:30:00-05:00"}), Booked),
            [due(Priority::Normal, None)]
        );
        assert_eq!(
            check(json!({"start": "2026-11-24T23:30:00-05:00"}), Booked),
            [moved("2026-11-24T23:30:00-05:00")]
        );
        // 23:30 UTC is 00:30 tomorrow at the clinic.
        assert_eq!(
            check(json!({"start": "2026-11-24T23:30:00Z"}), Booked),
            [moved("2026-11-24T23:30:00Z")]
        );
        assert_eq!(
            check(json!({"start": "2026-11-24T23:30:00+01:00"}), Booked),
            [due(Priority::Normal, None)]
        );
        // Without an offset the time is the clinic's own.
        assert_eq!(
            check(json!({"start": "2026-11-24T23:30:00"}), Booked),
            [due(Priority::Normal, None)]
        );
    }

    #[test]
    fn a_priority_is_given_to_the_entry_and_to_a_new_one() {
        use CheckInWhen::*;
        let stat = json!({"start": TODAY, "_priority": with_priority("S")});
        let raised = FromEhr::AppointmentPriority {
            appointment_refs: vec!["F-1".into(), "P-1".into()],
            priority: Priority::Urgent,
            reason: Some("appointment priority: stat".into()),
        };
        assert_eq!(
            check(stat.clone(), Booked),
            [
                due(Priority::Urgent, Some("appointment priority: stat")),
                raised.clone()
            ]
        );
        assert_eq!(
            check(stat, Arrived),
            [
                booked(
                    TODAY,
                    TODAY_MS,
                    Some((Priority::Urgent, "appointment priority: stat"))
                ),
                raised
            ]
        );
        let routine = json!({"_priority": with_priority("R")});
        assert_eq!(
            check(routine, Arrived),
            [FromEhr::AppointmentPriority {
                appointment_refs: vec!["F-1".into(), "P-1".into()],
                priority: Priority::Normal,
                reason: None,
            }],
            "no start: the priority still applies"
        );
        assert_eq!(
            check(json!({"_priority": with_priority("PRN")}), Arrived),
            [],
            "a code that orders nothing"
        );
        assert_eq!(
            check(
                json!({"start": "2026-11-25", "_priority": with_priority("S")}),
                Arrived
            ),
            [
                moved("2026-11-25"),
                booked(
                    "2026-11-25",
                    TOMORROW_MS,
                    Some((Priority::Urgent, "appointment priority: stat"))
                )
            ],
            "moved away: closed, not raised, remembered with its priority"
        );
    }

    #[test]
    fn the_filler_id_names_the_entry_and_any_id_finds_it() {
        let only_placer = [
            json!({"resourceType": "Patient", "identifier": [{"value": "MRN-1"}]}),
            json!({"resourceType": "Appointment", "start": TODAY,
                   "identifier": [{"value": "P-7", "type": {"coding": [{"code": "PLAC"}]}}, {}]}),
        ];
        let no_patient = [json!({"resourceType": "Appointment", "start": TODAY,
                                 "identifier": [{"value": "P-8"}]})];
        let schedule = Schedule {
            queue: "lab".into(),
            check_in: CheckInWhen::Booked,
            today: TODAY.into(),
            utc_offset_min: 0,
        };
        assert_eq!(
            FromEhr::from_schedule(&only_placer, &schedule),
            [FromEhr::AppointmentDue {
                queue: "lab".into(),
                appointment_ref: "P-7".into(),
                appointment_refs: vec!["P-7".into()],
                patient_ref: "MRN-1".into(),
                priority: Priority::Normal,
                priority_reason: None,
            }]
        );
        assert_eq!(
            FromEhr::from_schedule(&no_patient, &schedule),
            [],
            "a slot without a patient is nobody to queue"
        );
    }

    /// The effects of an ADT whose Encounter the trigger made `status` (A04: arrived, A01:
    /// in-progress, A03: finished), for MRN-1, decided on 2026-11-24.
    fn check_arrival(status: &str, when: CheckInWhen) -> Vec<FromEhr> {
        let resources = [
            json!({"resourceType": "Patient", "identifier": [{"value": "MRN-1"}, {"value": "NAT-9"}]}),
            json!({"resourceType": "Encounter", "status": status, "class": {"code": "AMB"}}),
        ];
        let schedule = Schedule {
            queue: "general".into(),
            check_in: when,
            today: TODAY.into(),
            utc_offset_min: 60,
        };
        FromEhr::from_schedule(&resources, &schedule)
    }

    #[test]
    fn an_arrival_queues_the_booking_only_when_the_clinic_checks_in_on_arrival() {
        use CheckInWhen::*;
        let arrived = FromEhr::Arrived {
            patient_ref: "MRN-1".into(),
            today: TODAY.into(),
        };
        assert_eq!(
            check_arrival("arrived", Arrived),
            std::slice::from_ref(&arrived),
            "A04"
        );
        assert_eq!(check_arrival("in-progress", Arrived), [arrived], "A01");
        assert_eq!(
            check_arrival("arrived", Booked),
            [],
            "today's bookings were queued when booked"
        );
        assert_eq!(check_arrival("finished", Arrived), [], "A03");
        let anonymous = [json!({"resourceType": "Encounter", "status": "arrived"})];
        let schedule = Schedule {
            queue: "general".into(),
            check_in: Arrived,
            today: TODAY.into(),
            utc_offset_min: 60,
        };
        assert_eq!(
            FromEhr::from_schedule(&anonymous, &schedule),
            [],
            "nobody to look up"
        );
    }

    #[test]
    fn starts_are_read_at_the_clinics_offset_when_they_have_none() {
        assert_eq!(start_ms("2026-11-24", 60), Some(TODAY_MS));
        assert_eq!(start_ms("2026-11-24T09:30:00", 60), Some(1_795_509_000_000));
        assert_eq!(
            start_ms("2026-11-24T09:30:00+01:00", -300),
            Some(1_795_509_000_000),
            "an offset given is kept"
        );
        assert_eq!(
            start_ms("2026-11-23T23:30:00-05:00", 60),
            Some(1_795_494_600_000)
        );
        assert_eq!(
            start_ms("2026-11-24T23:30:00Z", 0),
            Some(1_795_559_400_000 + 3_600_000)
        );
        assert_eq!(start_ms("2026-11", 60), None);
    }

    #[test]
    fn days_follow_the_calendar() {
        assert_eq!(local_day(1_700_000_000_000, 0), "2023-11-14", "22:13 UTC");
        assert_eq!(local_day(1_700_000_000_000, 120), "2023-11-15");
        assert_eq!(local_day(1_700_000_000_000, -720), "2023-11-14");
        assert_eq!(local_day(0, -1), "1969-12-31");
        assert_eq!(
            day_of("2024-02-28T23:00:00Z", 120).as_deref(),
            Some("2024-02-29")
        );
        assert_eq!(
            day_of("2023-02-28T23:00:00Z", 120).as_deref(),
            Some("2023-03-01")
        );
        assert_eq!(
            day_of("2026-12-31T23:30:00Z", 60).as_deref(),
            Some("2027-01-01")
        );
        assert_eq!(
            day_of("2027-01-01T00:30:00+01:00", 0).as_deref(),
            Some("2026-12-31")
        );
        assert_eq!(
            day_of("2026-11-24T09:30:00.250+05:30", 330).as_deref(),
            Some("2026-11-24")
        );
        assert_eq!(day_of("2024-02-30", 0), None);
        assert_eq!(day_of("2026-11-24T25:00:00Z", 0), None);
        assert_eq!(day_of("2026-11-24T09:30:00+1", 0), None);
        assert_eq!(day_of("2026-11-24x", 0), None);
        assert_eq!(day_of("2026-11-2é", 0), None);
        for days in [-700_000, -1, 0, 59, 60, 365, 19_000, 2_000_000] {
            let day = format_day(days);
            assert_eq!(parse_day(&day), Some(days), "{day}");
        }
    }
}
