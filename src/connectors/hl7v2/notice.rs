//! Telling the EHR that a patient was called from the queue, as an HL7 v2 ADT message for the
//! `ehr-mllp` outbox, so that the chart can be opened for the provider. Pure: the journal writer
//! builds it in the transaction that records the call, so a call and its notice are never
//! committed one without the other.

use crate::journal::NewItem;
use crate::queue::{Action, Entry, Hook};
use serde::Deserialize;

/// Which ADT event announces a call (`[connectors.hl7v2_out] on_call`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum CallTrigger {
    /// Register a patient: the visit starts.
    A04,
    /// Update patient information: the visit's location changes.
    A08,
}

impl CallTrigger {
    fn code(self) -> &'static str {
        match self {
            CallTrigger::A04 => "A04",
            CallTrigger::A08 => "A08",
        }
    }
}

/// The queue hook that announces calls to the EHR (`[connectors.hl7v2_out] on_call`), with the
/// facility id for MSH-4.
#[derive(Debug, Clone)]
pub struct CallNotice {
    pub trigger: CallTrigger,
    pub facility: String,
}

impl Hook for CallNotice {
    fn on_action(&self, entry: &Entry, action: &Action, now: i64) -> Option<NewItem> {
        match action {
            Action::Call { .. } => called(entry, self.trigger, &self.facility, now),
            _ => None,
        }
    }
}

/// Escapes the HL7 delimiters (`|^~\&`) in a value, escape character first.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\E\\")
        .replace('|', "\\F\\")
        .replace('^', "\\S\\")
        .replace('~', "\\R\\")
        .replace('&', "\\T\\")
        .replace(['\r', '\n'], " ")
}

/// `YYYYMMDDHHMMSS` (UTC, with the zone) of a millisecond timestamp.
pub fn timestamp(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    format!("{}+0000", s[..19].replace(['-', ':', 'T'], ""))
}

/// The ADT message for a called entry, or `None` when it names no patient (nothing the EHR
/// could open).
pub fn called(entry: &Entry, trigger: CallTrigger, facility: &str, now: i64) -> Option<NewItem> {
    let patient = entry.patient_ref.as_deref().filter(|p| !p.is_empty())?;
    let at = entry.called_at.unwrap_or(now);
    let ts = timestamp(at);
    let code = trigger.code();
    // MSH-10 is at most 20 characters; entry id and call second make it unique per call.
    let control = format!("C{}T{}", entry.id, at / 1000);
    let room = entry.room.as_deref().map(escape).unwrap_or_default();
    let text = format!(
        "MSH|^~\\&|CLINIC-GATEWAY|{f}|||{ts}||ADT^{code}^ADT_A01|{control}|P|2.5.1\r\
         EVN|{code}|{ts}\r\
         PID|1||{p}\r\
         PV1|1|O|^{room}^^{f}||||||||||||||||{ticket}\r",
        f = escape(facility),
        p = escape(patient),
        ticket = escape(&entry.ticket),
    );
    Some(NewItem {
        source: "queue:call".into(),
        source_id: Some(control),
        kind: format!("hl7.outbound.adt_{}", code.to_lowercase()),
        key: format!("patient:{patient}"),
        schema: format!("hl7v2/ADT_{code}@2.5.1"),
        payload: text.into_bytes(),
        reply: None,
        occurred_at: Some(at),
        destinations: vec![super::DESTINATION.into()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{EntryState, Priority};

    #[test]
    fn a_call_becomes_an_adt_that_the_parser_reads_back() {
        let entry = Entry {
            id: 7,
            queue: "general".into(),
            ticket: "G-007".into(),
            patient_ref: Some("MRN|1^x".into()),
            appointment_ref: None,
            priority: Priority::Normal,
            priority_reason: None,
            state: EntryState::Called,
            room: Some("Room 3".into()),
            arrived_at: 0,
            called_at: Some(1_795_000_000_000),
            in_room_at: None,
            closed_at: None,
            awaiting_results: false,
            demographics: None,
        };
        let item = called(&entry, CallTrigger::A04, "clinic-1", 0).expect("a notice");
        let text = String::from_utf8(item.payload).expect("text");
        let m = hl7_2::parse(&text).expect("parses");
        let get = |p: &str| m.get(p).ok().flatten().unwrap_or_default();
        assert_eq!(get("MSH-9.2"), "A04");
        assert_eq!(get("MSH-10"), "C7T1795000000");
        assert_eq!(get("PID-3"), "MRN|1^x", "delimiters in values are escaped");
        assert_eq!(get("PV1-3.2"), "Room 3");
        assert_eq!(get("PV1-19"), "G-007");
        assert_eq!(get("EVN-2"), "20261118110640+0000");
        assert_eq!(item.destinations, ["ehr-mllp"]);
        let mut anonymous = entry;
        anonymous.patient_ref = None;
        assert!(called(&anonymous, CallTrigger::A08, "clinic-1", 0).is_none());
    }
}
