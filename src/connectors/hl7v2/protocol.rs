//! HL7 v2 inbound handling, pure: a frame's text in, a decision out (what to journal and the
//! original-mode ACK to send once it is committed, or the rejection to send at once).
//!
//! Parsing (delimiters from MSH-1/MSH-2, escapes, repetitions, components, sub-components,
//! CR / LF / CRLF terminators) is the `hl7-2` crate's; this module decides what the gateway
//! accepts and how it answers.

use super::config::AllowEntry;
use crate::journal::NewItem;
use crate::queue::{EhrInbound, FromEhr, Schedule};
use hl7_2::{Builder, Version};
use std::net::IpAddr;

/// Message types the gateway accepts, with the journal kind each becomes. ADT and SIU drive the
/// queue; results (ORU), lab orders (ORM, OML^O21), specimens (OML^O33, OUL^R22) and pharmacy
/// orders and dispenses (RDE, RDS) reach the lab's and the pharmacy's hooks through their
/// mapped resources; the pharmacy's acknowledgements (RRE, RRD) are journaled only.
const ACCEPTED: &[(&str, &str, &str)] = &[
    ("ADT", "A01", "hl7.adt.admit"),
    ("ADT", "A03", "hl7.adt.discharge"),
    ("ADT", "A04", "hl7.adt.register"),
    ("ADT", "A08", "hl7.adt.update"),
    ("ADT", "A11", "hl7.adt.cancel_admit"),
    ("ADT", "A40", "hl7.adt.merge"),
    ("ADT", "A60", "hl7.adt.allergy_update"),
    ("SIU", "S12", "hl7.siu.book"),
    ("SIU", "S13", "hl7.siu.reschedule"),
    ("SIU", "S14", "hl7.siu.modify"),
    ("SIU", "S15", "hl7.siu.cancel"),
    ("SIU", "S26", "hl7.siu.no_show"),
    ("ORU", "R01", "hl7.oru.result"),
    ("ORM", "O01", "hl7.orm.order"),
    ("OML", "O21", "hl7.oml.order"),
    ("OML", "O33", "hl7.oml.specimen_order"),
    ("OUL", "R22", "hl7.oul.specimen_result"),
    ("RDE", "O11", "hl7.rde.order"),
    ("RDS", "O13", "hl7.rds.dispense"),
    ("RRE", "O12", "hl7.rre.order_ack"),
    ("RRD", "O14", "hl7.rrd.dispense_ack"),
];

/// Releases accepted (MSH-12).
const VERSIONS: &[(&str, Version)] = &[
    ("2.3", Version::V2_3),
    ("2.3.1", Version::V2_3_1),
    ("2.4", Version::V2_4),
    ("2.5", Version::V2_5),
    ("2.5.1", Version::V2_5_1),
    ("2.6", Version::V2_6),
    ("2.7", Version::V2_7),
    ("2.7.1", Version::V2_7_1),
    ("2.8", Version::V2_8),
];

/// What to do with one received frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Commit the item (whose `reply` is the AA to send) with its effects on the queue and its
    /// mapped resources for the other domains' hooks (lab results), then send the journal's
    /// stored reply.
    Accept(Box<EhrInbound>),
    /// Send this ACK (AR or AE) now; nothing is committed.
    Reject { ack: Vec<u8>, reason: String },
}

/// Identity of this gateway in the ACK's MSH-3/MSH-4 when the message named no receiver.
pub struct Identity<'a> {
    pub application: &'a str,
    pub facility: &'a str,
}

/// Decides on one frame. `timestamp` is MSH-7 of the answer (`YYYYMMDDHHMMSS`), `ack_id`
/// its control id, `schedule` (with today's date) what appointments do to the queue, `None`
/// when they are not configured to; all come from the caller so that this stays pure.
pub fn decide(
    frame: &[u8],
    me: &Identity<'_>,
    timestamp: &str,
    ack_id: &str,
    schedule: Option<&Schedule>,
) -> Decision {
    let reject = |code: &str, reason: String, msg: Option<&hl7_2::Message>| Decision::Reject {
        ack: ack(msg, me, timestamp, ack_id, code, Some(&reason)).into_bytes(),
        reason,
    };
    let Ok(text) = std::str::from_utf8(frame) else {
        // Latin-1 senders exist; the journal keeps text, so ask for a declared UTF-8 resend.
        return reject("AR", "message is not valid UTF-8".into(), None);
    };
    let message = match hl7_2::parse(text) {
        Ok(m) => m,
        Err(e) => return reject("AR", format!("not an HL7 v2 message: {e}"), None),
    };
    let field = |path: &str| message.get(path).ok().flatten().unwrap_or_default();
    let control_id = field("MSH-10");
    if control_id.is_empty() {
        return reject(
            "AR",
            "MSH-10 (message control id) is empty".into(),
            Some(&message),
        );
    }
    let version = field("MSH-12.1");
    if !VERSIONS.iter().any(|(v, _)| *v == version) {
        return reject(
            "AR",
            format!("unsupported HL7 version {version:?} (accepted: 2.3 to 2.8)"),
            Some(&message),
        );
    }
    let (code, trigger) = (field("MSH-9.1"), field("MSH-9.2"));
    let Some((_, _, kind)) = ACCEPTED
        .iter()
        .find(|(c, t, _)| *c == code && *t == trigger)
    else {
        return reject(
            "AR",
            format!("unsupported message type {code}^{trigger}"),
            Some(&message),
        );
    };
    if let Some(reason) = super::mapping::nonconforming(&message) {
        return reject("AR", reason, Some(&message));
    }
    let sender = format!("{}^{}", field("MSH-3.1"), field("MSH-4.1"));
    // Ordering key: the patient, so that one patient's messages are processed in order; a
    // message without a patient id is ordered with its sender's.
    let patient = field("PID-3.1");
    let key = if patient.is_empty() {
        format!("hl7:{sender}")
    } else {
        format!("patient:{patient}")
    };
    let resources = super::mapping::map(&message);
    let mut effects = FromEhr::from_resources(&resources);
    if let Some(schedule) = schedule {
        effects.extend(FromEhr::from_schedule(&resources, schedule));
    }
    let item = NewItem {
        source: format!("hl7:{sender}"),
        source_id: Some(control_id),
        kind: (*kind).to_string(),
        key,
        schema: format!("hl7v2/{code}_{trigger}@{version}"),
        payload: frame.to_vec(),
        reply: Some(ack(Some(&message), me, timestamp, ack_id, "AA", None).into_bytes()),
        occurred_at: None,
        destinations: Vec::new(),
    };
    Decision::Accept(Box::new(EhrInbound {
        item,
        effects,
        resources,
    }))
}

/// An original-mode ACK (MSA-1 `code`), with an ERR segment carrying `reason` when given.
/// Sender and receiver are swapped from the message; with no readable message the ACK uses the
/// standard delimiters, release 2.5, and an empty MSA-2.
pub fn ack(
    message: Option<&hl7_2::Message>,
    me: &Identity<'_>,
    timestamp: &str,
    ack_id: &str,
    code: &str,
    reason: Option<&str>,
) -> String {
    let field = |path: &str| {
        message
            .and_then(|m| m.get(path).ok().flatten())
            .unwrap_or_default()
    };
    let version = VERSIONS
        .iter()
        .find(|(v, _)| *v == field("MSH-12.1"))
        .map(|(_, v)| *v)
        .unwrap_or(Version::V2_5);
    let (my_app, my_fac) = match (field("MSH-5.1"), field("MSH-6.1")) {
        (a, f) if !a.is_empty() => (a, f),
        _ => (me.application.to_string(), me.facility.to_string()),
    };
    let mut b = Builder::new(version)
        .message_type("ACK", &field("MSH-9.2"))
        .control_id(ack_id)
        .timestamp(timestamp)
        .sending(&my_app, &my_fac)
        .receiving(&field("MSH-3.1"), &field("MSH-4.1"))
        .processing_id(&{
            let p = field("MSH-11.1");
            if p.is_empty() { "P".to_string() } else { p }
        })
        .segment("MSA")
        .set("MSA-1", code)
        .set("MSA-2", &field("MSH-10"));
    if let Some(reason) = reason {
        // MSA-3 for senders before 2.5, ERR-3/4/8 for the rest: both are read in practice.
        b = b.set("MSA-3", reason).segment("ERR");
        b = if matches!(version, Version::V2_3 | Version::V2_3_1 | Version::V2_4) {
            b.set("ERR-1.4.2", reason)
        } else {
            b.set("ERR-3.1", "207")
                .set("ERR-3.2", "Application internal error")
                .set("ERR-3.3", "HL70357")
                .set("ERR-4", "E")
                .set("ERR-8", reason)
        };
    }
    match b.build() {
        Ok(m) => m.to_er7(),
        // The builder only fails on paths this function controls; answer a bare ACK rather
        // than nothing.
        Err(_) => format!("MSH|^~\\&|||||{timestamp}||ACK|{ack_id}|P|2.5\rMSA|{code}|"),
    }
}

/// Who sent a message, as the allow-list sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// The peer's source address.
    pub ip: IpAddr,
    /// The CN of the peer's client certificate, when it presented one.
    pub subject: Option<String>,
    /// MSH-3.1.
    pub application: String,
    /// MSH-4.1.
    pub facility: String,
    /// MSH-10, for the log and the audit of a refusal.
    pub control_id: String,
}

impl Sender {
    /// The sender of `frame` on a connection from `ip` authenticated as `subject`; the MSH
    /// fields are empty when the frame does not parse (no entry naming them matches then).
    pub fn of(frame: &[u8], ip: IpAddr, subject: Option<String>) -> Sender {
        let message = std::str::from_utf8(frame)
            .ok()
            .and_then(|t| hl7_2::parse(t).ok());
        let field = |path: &str| {
            message
                .as_ref()
                .and_then(|m| m.get(path).ok().flatten())
                .unwrap_or_default()
        };
        Sender {
            ip,
            subject,
            application: field("MSH-3.1"),
            facility: field("MSH-4.1"),
            control_id: field("MSH-10"),
        }
    }

    /// Whether `allow` lets this sender in: an empty list lets everyone in, otherwise one
    /// entry must match every field it names.
    pub fn allowed(&self, allow: &[AllowEntry]) -> bool {
        allow.is_empty()
            || allow.iter().any(|e| {
                connection_matches(e, self.ip, self.subject.as_deref())
                    && same(&e.sending_application, &self.application)
                    && same(&e.sending_facility, &self.facility)
            })
    }
}

/// Whether any message could be allowed on a connection from `ip` authenticated as
/// `subject`: false when no entry matches the connection itself, so that it is closed before
/// anything (even an AR for an oversized frame) is answered.
pub fn connection_allowed(allow: &[AllowEntry], ip: IpAddr, subject: Option<&str>) -> bool {
    allow.is_empty() || allow.iter().any(|e| connection_matches(e, ip, subject))
}

fn connection_matches(entry: &AllowEntry, ip: IpAddr, subject: Option<&str>) -> bool {
    entry
        .subject
        .as_deref()
        .is_none_or(|want| Some(want) == subject)
        && entry.address.is_none_or(|a| a.contains(ip))
}

fn same(want: &Option<String>, got: &str) -> bool {
    want.as_deref().is_none_or(|w| w == got)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Identity<'static> = Identity {
        application: "CLINIC-GATEWAY",
        facility: "CLINIC",
    };

    fn check(text: &str) -> Decision {
        decide(text.as_bytes(), &ME, "20261124140500", "ACK1", None)
    }

    fn ack_text(d: &Decision) -> String {
        match d {
            Decision::Accept(inbound) => {
                String::from_utf8(inbound.item.reply.clone().unwrap_or_default())
                    .unwrap_or_default()
            }
            Decision::Reject { ack, .. } => String::from_utf8(ack.clone()).unwrap_or_default(),
        }
    }

    const A04: &str = "MSH|^~\\&|HIS|HOSP|EDGE|CLINIC|20261124140500||ADT^A04^ADT_A01|MSG00001|P|2.5.1\r\
EVN|A04|20261124140500\rPID|1||123456^^^CLINIC^MR||DOE^JANE||19800101|F\rPV1|1|O|CLINIC^^^^^^^^ROOM1";

    #[test]
    fn accepted_message_is_journaled_with_an_aa_for_its_control_id() {
        let d = check(A04);
        let Decision::Accept(inbound) = &d else {
            panic!("{d:?}")
        };
        let item = &inbound.item;
        assert_eq!(item.source, "hl7:HIS^HOSP");
        assert_eq!(item.source_id.as_deref(), Some("MSG00001"));
        assert_eq!(item.kind, "hl7.adt.register");
        assert_eq!(item.key, "patient:123456");
        let ack = ack_text(&d);
        assert!(
            ack.starts_with(
                "MSH|^~\\&|EDGE|CLINIC|HIS|HOSP|20261124140500||ACK^A04^ACK|ACK1|P|2.5.1"
            ),
            "{ack}"
        );
        assert!(ack.contains("\rMSA|AA|MSG00001"), "{ack}");
        assert!(!ack.contains("ERR"));
    }

    #[test]
    fn terminators_escapes_and_custom_delimiters_are_read() {
        for text in [A04.replace('\r', "\n"), A04.replace('\r', "\r\n")] {
            assert!(matches!(check(&text), Decision::Accept(..)), "{text:?}");
        }
        // v2.3 with other delimiters and an escaped field separator in the control id.
        let custom = "MSH#*~\\&#LAB#HOSP#EDGE#CLINIC#20261124##ORU*R01#A\\F\\1#P#2.3\rPID#1##77";
        let d = check(custom);
        let Decision::Accept(inbound) = &d else {
            panic!("{d:?}")
        };
        let item = &inbound.item;
        assert_eq!(item.source_id.as_deref(), Some("A#1"));
        assert_eq!(item.key, "patient:77");
        let ack = ack_text(&d);
        // The ACK declares its own (standard) delimiters; the control id is the decoded value.
        assert!(ack.starts_with("MSH|^~\\&|EDGE|CLINIC|LAB|HOSP|"), "{ack}");
        assert!(ack.contains("\rMSA|AA|A#1"), "{ack}");
    }

    #[test]
    fn bad_input_gets_ar_with_the_reason() {
        let cases = [
            ("garbage \u{1}\u{2}", "not an HL7 v2 message"),
            ("PID|1||123", "not an HL7 v2 message"),
            (
                "MSH|^~\\&|HIS|HOSP|||2026||ADT^A04|M1|P|2.2",
                "unsupported HL7 version",
            ),
            (
                "MSH|^~\\&|HIS|HOSP|||2026||ADT^A99|M2|P|2.5",
                "unsupported message type ADT^A99",
            ),
            ("MSH|^~\\&|HIS|HOSP|||2026||ADT^A04||P|2.5", "MSH-10"),
        ];
        for (text, reason) in cases {
            let d = check(text);
            let Decision::Reject { ack, reason: why } = &d else {
                panic!("{text}: {d:?}")
            };
            assert!(why.contains(reason), "{text}: {why}");
            let ack = String::from_utf8_lossy(ack);
            assert!(ack.contains("MSA|AR|"), "{ack}");
            assert!(ack.contains("ERR|"), "{ack}");
        }
        let d = check("MSH|^~\\&|HIS|HOSP|||2026||ADT^A99|M2|P|2.5");
        assert!(
            ack_text(&d).contains("MSA|AR|M2"),
            "the control id is echoed when readable"
        );
        assert!(matches!(
            decide(&[0xff, 0xfe], &ME, "2026", "A", None),
            Decision::Reject { .. }
        ));
    }

    /// The queue effects of one message decided on 2026-11-24 at UTC+1 with booked
    /// appointments queued to `general`, or without a schedule.
    fn effects(text: &str, booked: Option<crate::queue::CheckInWhen>) -> Vec<FromEhr> {
        let schedule = booked.map(|check_in| Schedule {
            queue: "general".into(),
            check_in,
            today: "2026-11-24".into(),
            utc_offset_min: 60,
        });
        match decide(text.as_bytes(), &ME, "2026", "A", schedule.as_ref()) {
            Decision::Accept(inbound) => inbound.effects,
            Decision::Reject { reason, .. } => panic!("{reason}"),
        }
    }

    #[test]
    fn siu_bookings_moves_and_changes_are_decided_against_the_clinics_day() {
        use crate::queue::{Booking, CheckInWhen::*, Priority};
        let siu = |trigger: &str, version: &str, sch_tq1: &str| {
            format!(
                "MSH|^~\\&|SCHED|HOSP|EDGE|CLINIC|20261124080000||SIU^{trigger}|M-{trigger}|P|{version}\r\
                 {sch_tq1}\rPID|1||MRN-1^^^HOSP^MR~NAT-9^^^NAT||DOE^JOHN"
            )
        };
        let due = |appointment_ref: &str, priority: Priority, reason: Option<&str>| {
            FromEhr::AppointmentDue {
                queue: "general".into(),
                appointment_ref: appointment_ref.into(),
                appointment_refs: vec![
                    appointment_ref.into(),
                    format!("P{}", &appointment_ref[1..]),
                ],
                patient_ref: "MRN-1".into(),
                priority,
                priority_reason: reason.map(str::to_string),
            }
        };
        // v2.5.1: the start in TQ1-7, the clinic's local time (no offset).
        let s12 = siu(
            "S12",
            "2.5.1",
            "SCH|P-1|F-1|||||||15|min|||||||||||||||Booked\rTQ1|1||||||202611240930",
        );
        assert_eq!(
            effects(&s12, Some(Booked)),
            [due("F-1", Priority::Normal, None)]
        );
        // Checked in on arrival: remembered with the start (a time without an offset is given
        // as its date: the day's beginning, 2026-11-24T00:00+01:00 in Unix ms).
        let booked = |day: &str, starts_at: i64, priority: Option<(Priority, Option<String>)>| {
            FromEhr::Booked(Booking {
                queue: "general".into(),
                appointment_ref: "F-1".into(),
                appointment_refs: vec!["F-1".into(), "P-1".into()],
                patient_ref: "MRN-1".into(),
                day: day.into(),
                starts_at,
                priority,
            })
        };
        assert_eq!(
            effects(&s12, Some(Arrived)),
            [booked("2026-11-24", 1_795_474_800_000, None)]
        );
        assert_eq!(
            effects(&s12, None),
            [],
            "without a schedule bookings are journaled only"
        );
        // v2.3: the start in SCH-11 (TQ-4) with an offset, ASAP in TQ-6: 23:30 at UTC-5 is
        // 05:30 on the 24th at the clinic.
        let s12_v23 = siu(
            "S12",
            "2.3",
            "SCH|P-2|F-2|||||||15|min|^^^202611232330-0500^^A",
        );
        let asap = Some("appointment priority: ASAP");
        assert_eq!(
            effects(&s12_v23, Some(Booked)),
            [
                due("F-2", Priority::Elevated, asap),
                FromEhr::AppointmentPriority {
                    appointment_refs: vec!["F-2".into(), "P-2".into()],
                    priority: Priority::Elevated,
                    reason: asap.map(str::to_string),
                }
            ]
        );
        // S13 to tomorrow (v2.6, offset given): the entry goes, found by either id.
        let s13 = siu(
            "S13",
            "2.6",
            "SCH|P-1|F-1|||||||15|min|||||||||||||||Booked\rTQ1|1||||||20261125093000+0100",
        );
        let moved = FromEhr::Moved {
            appointment_refs: vec!["F-1".into(), "P-1".into()],
            start: Some("2026-11-25T09:30:00+01:00".into()),
        };
        assert_eq!(
            effects(&s13, Some(Arrived)),
            [moved, booked("2026-11-25", 1_795_595_400_000, None)]
        );
        // S14 raising the priority to stat (TQ1-9), without moving the appointment.
        let s14 = siu(
            "S14",
            "2.5",
            "SCH|P-1|F-1|||||||15|min\rTQ1|1||||||202611241000||S",
        );
        let stat = Some((Priority::Urgent, Some("appointment priority: stat".into())));
        assert_eq!(
            effects(&s14, Some(Arrived)),
            [
                booked("2026-11-24", 1_795_474_800_000, stat),
                FromEhr::AppointmentPriority {
                    appointment_refs: vec!["F-1".into(), "P-1".into()],
                    priority: Priority::Urgent,
                    reason: Some("appointment priority: stat".into()),
                }
            ]
        );
        // S15 keeps its own effect and gets nothing more from the schedule.
        let s15 = siu(
            "S15",
            "2.5",
            "SCH|P-1|F-1|||||||15|min\rTQ1|1||||||202611241000",
        );
        assert_eq!(
            effects(&s15, Some(Booked)),
            [FromEhr::Cancelled {
                appointment_refs: vec!["P-1".into(), "F-1".into()],
            }]
        );
    }

    #[test]
    fn a04_and_a01_are_arrivals_when_the_clinic_checks_in_on_arrival() {
        use crate::queue::CheckInWhen::*;
        let arrived = FromEhr::Arrived {
            patient_ref: "123456".into(),
            today: "2026-11-24".into(),
        };
        assert_eq!(effects(A04, Some(Arrived)), std::slice::from_ref(&arrived));
        assert_eq!(
            effects(
                &A04.replace("ADT^A04^ADT_A01", "ADT^A01^ADT_A01"),
                Some(Arrived)
            ),
            [arrived]
        );
        assert_eq!(
            effects(A04, Some(Booked)),
            [],
            "booked mode queued the booking already"
        );
        assert_eq!(effects(A04, None), [], "without a schedule: journaled only");
        assert_eq!(
            effects(
                &A04.replace("ADT^A04^ADT_A01", "ADT^A08^ADT_A01"),
                Some(Arrived)
            ),
            [],
            "an update is no arrival"
        );
    }

    #[test]
    fn every_accepted_type_maps_to_a_kind() {
        for (code, trigger, kind) in ACCEPTED {
            let text = format!("MSH|^~\\&|S|F|||2026||{code}^{trigger}|C1|P|2.5");
            let Decision::Accept(inbound) = check(&text) else {
                panic!("{code}^{trigger}")
            };
            assert_eq!(&inbound.item.kind, kind);
        }
    }

    #[test]
    fn the_allow_list_wants_every_field_an_entry_names() {
        let entry =
            |subject: Option<&str>, address: Option<&str>, app: Option<&str>| super::AllowEntry {
                subject: subject.map(str::to_string),
                address: address.map(|a| a.to_string().try_into().expect("range")),
                sending_application: app.map(str::to_string),
                sending_facility: None,
            };
        let frame = b"MSH|^~\\&|LAB^1.2.3^ISO|HOSP|||2026||ORU^R01|C7|P|2.5";
        let ip = "192.0.2.9".parse().expect("ip");
        let sender = Sender::of(frame, ip, Some("lab-node".into()));
        assert_eq!(
            (
                sender.application.as_str(),
                sender.facility.as_str(),
                sender.control_id.as_str()
            ),
            ("LAB", "HOSP", "C7")
        );
        assert!(sender.allowed(&[]));
        assert!(sender.allowed(&[entry(Some("lab-node"), None, Some("LAB"))]));
        assert!(!sender.allowed(&[entry(Some("lab-node"), None, Some("EHR"))]));
        assert!(!sender.allowed(&[entry(Some("other"), None, None)]));
        let subject = Some("lab-node");
        assert!(connection_allowed(
            &[entry(None, None, Some("EHR"))],
            ip,
            subject
        ));
        assert!(!connection_allowed(
            &[entry(Some("other"), None, Some("LAB"))],
            ip,
            subject
        ));
        assert!(!connection_allowed(
            &[entry(None, Some("10.0.0.0/8"), None)],
            ip,
            subject
        ));
        assert!(sender.allowed(&[
            entry(None, Some("10.0.0.0/8"), None),
            entry(None, Some("192.0.2.0/24"), None)
        ]));
        let anonymous = Sender::of(b"not hl7", ip, None);
        assert!(!anonymous.allowed(&[entry(Some("lab-node"), None, None)]));
    }
}
