//! The local patient queue: entries per service queue, their states and the rules that move
//! them. Pure: the journal stores entries (in the same transaction as the event each change
//! sends to the cloud) and the web layer exposes them; neither decides what a change means.
//!
//! Position in a queue follows priority (urgent, elevated, normal), then arrival.

pub mod requests;
pub mod schedule;
pub mod settings;
pub mod store;

pub use requests::{
    EhrInbound, QueueAct, QueueCallNext, QueueCheckIn, QueueLink, QueueList, RaisingFlags,
};
pub use schedule::{CheckInWhen, Schedule};
use serde::{Deserialize, Serialize};
pub use settings::{Hook, Inbound, Notification, Settings, TxHook};

/// How soon a patient must be seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Normal = 0,
    Elevated = 1,
    Urgent = 2,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Normal => "normal",
            Priority::Elevated => "elevated",
            Priority::Urgent => "urgent",
        }
    }

    pub fn from_i64(v: i64) -> Priority {
        match v {
            2 => Priority::Urgent,
            1 => Priority::Elevated,
            _ => Priority::Normal,
        }
    }
}

/// Where an entry is in its visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    Waiting,
    Called,
    InRoom,
    Done,
    NoShow,
    Cancelled,
    Left,
}

impl EntryState {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryState::Waiting => "waiting",
            EntryState::Called => "called",
            EntryState::InRoom => "in_room",
            EntryState::Done => "done",
            EntryState::NoShow => "no_show",
            EntryState::Cancelled => "cancelled",
            EntryState::Left => "left",
        }
    }

    pub fn parse(s: &str) -> Option<EntryState> {
        [
            EntryState::Waiting,
            EntryState::Called,
            EntryState::InRoom,
            EntryState::Done,
            EntryState::NoShow,
            EntryState::Cancelled,
            EntryState::Left,
        ]
        .into_iter()
        .find(|e| e.as_str() == s)
    }

    /// Still in the queue (shown on the board, counted for waits).
    pub fn is_open(self) -> bool {
        matches!(
            self,
            EntryState::Waiting | EntryState::Called | EntryState::InRoom
        )
    }
}

/// What staff or a kiosk asks of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Called to a room (or a desk).
    Call {
        room: Option<String>,
    },
    /// Seen in a room.
    AssignRoom {
        room: String,
    },
    /// Sent to another room (or none yet) because its room went out of service; the visit's
    /// state stays.
    Reroute {
        room: Option<String>,
    },
    Complete,
    NoShow,
    Cancel,
    /// The patient left before being seen.
    Left,
}

impl Action {
    /// The event kind this change sends to the cloud.
    pub fn event_kind(&self) -> &'static str {
        match self {
            Action::Call { .. } => "queue.called",
            Action::AssignRoom { .. } => "queue.in_room",
            Action::Reroute { .. } => "queue.rerouted",
            Action::Complete => "queue.done",
            Action::NoShow => "queue.no_show",
            Action::Cancel => "queue.cancelled",
            Action::Left => "queue.left",
        }
    }
}

/// A change that the entry's state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an entry that is {from} cannot be {action}")]
pub struct TransitionError {
    pub from: &'static str,
    pub action: &'static str,
}

/// The state an action leads to, if the current state allows it.
pub fn transition(from: EntryState, action: &Action) -> Result<EntryState, TransitionError> {
    use EntryState::*;
    let to = match (from, action) {
        (Waiting | Called, Action::Call { .. }) => Called,
        (Waiting | Called | InRoom, Action::AssignRoom { .. }) => InRoom,
        (Called | InRoom, Action::Reroute { .. }) => from,
        (Called | InRoom, Action::Complete) => Done,
        (Waiting | Called, Action::NoShow) => NoShow,
        (Waiting | Called, Action::Cancel) => Cancelled,
        (Waiting | Called, Action::Left) => Left,
        _ => {
            return Err(TransitionError {
                from: from.as_str(),
                action: match action {
                    Action::Call { .. } => "called",
                    Action::AssignRoom { .. } => "assigned a room",
                    Action::Reroute { .. } => "rerouted",
                    Action::Complete => "completed",
                    Action::NoShow => "marked no-show",
                    Action::Cancel => "cancelled",
                    Action::Left => "marked as left",
                },
            });
        }
    };
    Ok(to)
}

/// What a message from the EHR does to the queue. Applied in the transaction that commits the
/// message, so a resend (a duplicate) never applies it twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromEhr {
    /// The appointment (any of its identifiers) was cancelled: its open entries are cancelled.
    Cancelled { appointment_refs: Vec<String> },
    /// The appointment moved to another day (`start`, when known): its open entries are
    /// cancelled and the patient is to be told.
    Moved {
        appointment_refs: Vec<String>,
        start: Option<String>,
    },
    /// The patient did not come: open entries of the appointment become no-shows.
    NoShow { appointment_refs: Vec<String> },
    /// The visit ended: entries called or in a room are done, waiting ones cancelled.
    Discharged { patient_ref: String },
    /// The visit was cancelled: the patient's waiting and called entries are cancelled.
    VisitCancelled { patient_ref: String },
    /// Two patient records were merged: entries of `from` now belong to `to`.
    Merged { from: String, to: String },
    /// The EHR finished (or cancelled) the visit of these entries (ids), or of the entries of
    /// these appointments: called and in-room entries are done, waiting ones cancelled.
    Visit {
        finished: bool,
        entries: Vec<i64>,
        appointment_refs: Vec<String>,
    },
    /// An EHR flag of a patient (the EHR's Patient id) raises their entries' priority with a
    /// reason, or no longer does (`raise: None`: inactive, ended or withdrawn).
    Flag {
        flag_id: String,
        patient_id: String,
        raise: Option<(Priority, String)>,
    },
    /// An appointment of today is due: the patient is checked in to `queue` with
    /// `appointment_ref` and request id `appointment:<appointment_ref>` (so it is queued once),
    /// unless an open entry already carries one of `appointment_refs` (all its identifiers).
    AppointmentDue {
        queue: String,
        appointment_ref: String,
        appointment_refs: Vec<String>,
        patient_ref: String,
        priority: Priority,
        priority_reason: Option<String>,
    },
    /// The appointment's priority: its open entries take it as the priority they return to
    /// when no EHR flag raises them, and so does its remembered booking (see `Booked`).
    AppointmentPriority {
        appointment_refs: Vec<String>,
        priority: Priority,
        reason: Option<String>,
    },
    /// A booking of today or a later day that waits for the patient's arrival (the clinic
    /// checks in on arrival): remembered until the patient arrives, so that `Arrived` can
    /// queue it as [`FromEhr::AppointmentDue`] would. Applied after a `Moved` of the same
    /// message, which forgets the booking's old day.
    Booked(Booking),
    /// The patient arrived (registered or admitted) on the clinic's `today`: their remembered
    /// booking of that day with the earliest start is queued as [`FromEhr::AppointmentDue`]
    /// would queue it. One queued once already is passed over for the next; none is queued
    /// while an open entry carries one of the day's bookings. Without one, nothing changes.
    Arrived { patient_ref: String, today: String },
}

/// A booking remembered for the patient's arrival. It replaces what was remembered under any
/// of `appointment_refs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    /// The queue the patient is checked in to on arrival.
    pub queue: String,
    /// The id that names the entry (and its request id `appointment:<appointment_ref>`).
    pub appointment_ref: String,
    /// Every id of the appointment, by which later messages find it.
    pub appointment_refs: Vec<String>,
    pub patient_ref: String,
    /// The clinic's date of the start, `YYYY-MM-DD`.
    pub day: String,
    /// Unix ms of the start; a start without a time or an offset is taken at the clinic's
    /// offset (without a time: the day's beginning). Orders a patient's bookings of a day.
    pub starts_at: i64,
    /// The priority the appointment carries; `None` keeps the one remembered (normal for a
    /// new booking), as an S14 without a priority leaves an entry's.
    pub priority: Option<(Priority, Option<String>)>,
}

/// The patient the resources mapped from one message are about: the first identifier of its
/// Patient (PID-3's first repetition), which is what entries carry as `patient_ref`.
pub fn patient_ref(resources: &[serde_json::Value]) -> Option<String> {
    resources
        .iter()
        .find(|r| r["resourceType"] == "Patient")
        .and_then(|p| p["identifier"][0]["value"].as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl FromEhr {
    /// The effects the FHIR resources mapped from one message imply (see
    /// `connectors::hl7v2::mapping`): a cancelled or no-show Appointment, a finished or cancelled
    /// Encounter, a Patient that replaces another. Booked, moved and changed appointments need
    /// the clinic's schedule: [`FromEhr::from_schedule`].
    pub fn from_resources(resources: &[serde_json::Value]) -> Vec<FromEhr> {
        let text = |v: &serde_json::Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
        let patient = patient_ref(resources);
        let mut out = Vec::new();
        for r in resources {
            match (r["resourceType"].as_str(), r["status"].as_str()) {
                (Some("Appointment"), Some(status @ ("cancelled" | "noshow"))) => {
                    let appointment_refs: Vec<String> = r["identifier"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|i| text(&i["value"]))
                        .collect();
                    if appointment_refs.is_empty() {
                        continue;
                    }
                    out.push(if status == "cancelled" {
                        FromEhr::Cancelled { appointment_refs }
                    } else {
                        FromEhr::NoShow { appointment_refs }
                    });
                }
                (Some("Encounter"), Some(status @ ("finished" | "cancelled"))) => {
                    let Some(patient_ref) = patient.clone() else {
                        continue;
                    };
                    out.push(if status == "finished" {
                        FromEhr::Discharged { patient_ref }
                    } else {
                        FromEhr::VisitCancelled { patient_ref }
                    });
                }
                (Some("Patient"), _) if r["link"][0]["type"] == "replaces" => {
                    if let (Some(from), Some(to)) = (
                        text(&r["link"][0]["other"]["identifier"]["value"]),
                        patient.clone(),
                    ) {
                        out.push(FromEhr::Merged { from, to });
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// The action for an open entry in `state`, if this effect changes it.
    pub fn action(&self, state: EntryState) -> Option<Action> {
        use EntryState::*;
        match (self, state) {
            (FromEhr::Cancelled { .. } | FromEhr::Moved { .. }, Waiting | Called) => {
                Some(Action::Cancel)
            }
            (FromEhr::NoShow { .. }, Waiting | Called) => Some(Action::NoShow),
            (FromEhr::Discharged { .. }, Called | InRoom) => Some(Action::Complete),
            (FromEhr::Discharged { .. }, Waiting) => Some(Action::Cancel),
            (FromEhr::VisitCancelled { .. }, Waiting | Called) => Some(Action::Cancel),
            (FromEhr::Visit { finished: true, .. }, Called | InRoom) => Some(Action::Complete),
            (FromEhr::Visit { .. }, Waiting) => Some(Action::Cancel),
            (
                FromEhr::Visit {
                    finished: false, ..
                },
                Called,
            ) => Some(Action::Cancel),
            _ => None,
        }
    }
}

/// A patient's place in a queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: i64,
    pub queue: String,
    /// Printed on the ticket and shown on the board, e.g. `A-012`.
    pub ticket: String,
    pub patient_ref: Option<String>,
    pub appointment_ref: Option<String>,
    pub priority: Priority,
    pub priority_reason: Option<String>,
    pub state: EntryState,
    pub room: Option<String>,
    pub arrived_at: i64,
    pub called_at: Option<i64>,
    pub in_room_at: Option<i64>,
    pub closed_at: Option<i64>,
    /// Results the visit requires have not arrived (docs/lab.md): shown, kept in its place,
    /// but not callable.
    #[serde(default)]
    pub awaiting_results: bool,
    /// The patient's demographics from the EHR (or its local copy) at check-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demographics: Option<Demographics>,
}

/// Who the patient is, as the EHR knows them: attached to an entry at check-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Demographics {
    /// The EHR's id of the Patient resource.
    pub patient_id: String,
    /// The patient's identifier in the configured system (the MRN).
    pub identifier: Option<String>,
    pub family: Option<String>,
    pub given: Option<String>,
    pub birth_date: Option<String>,
    pub gender: Option<String>,
    /// `ehr` when the EHR answered, `cache` when its local copy did.
    pub source: String,
}

/// How a check-in names a patient without an identifier: found by name and birth date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientSearch {
    pub family: String,
    #[serde(default)]
    pub given: Option<String>,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
}

/// A check-in: a new entry at the end of its priority band.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckIn {
    pub patient_ref: Option<String>,
    pub appointment_ref: Option<String>,
    #[serde(default = "normal")]
    pub priority: Priority,
    /// Why the priority is raised; required above normal.
    #[serde(default)]
    pub priority_reason: Option<String>,
    /// The kiosk's or desk's id for this check-in, so that a retried request does not queue
    /// the patient twice.
    #[serde(default)]
    pub request_id: Option<String>,
    /// Name and birth date to find the patient in the EHR when there is no `patient_ref`.
    #[serde(default)]
    pub patient: Option<PatientSearch>,
    /// Attached by the gateway after the EHR lookup, never taken from the request.
    #[serde(skip)]
    pub demographics: Option<Demographics>,
    /// Set by the gateway when the EHR answered that it has no such patient.
    #[serde(skip)]
    pub unknown_to_ehr: bool,
    /// The kiosk printer that prints this check-in's ticket; default: the printer configured
    /// for the queue, if any.
    #[serde(default)]
    pub printer: Option<String>,
    /// How the patient wants to be told (queue changes, "you are next"): kept by patient
    /// messaging in its own tables, never in the entry or its events.
    #[serde(default)]
    pub contact: Option<Contact>,
}

/// Contact details and preferences given at check-in; they take precedence over the EHR's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// A mobile number in international form (`+41791234567`).
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// A BCP 47 language tag (`de`, `fr-CH`) for the templates.
    #[serde(default)]
    pub language: Option<String>,
    /// Channels in the order the patient prefers them (`sms`, `email`, `voice`).
    #[serde(default)]
    pub channels: Vec<String>,
    /// The patient asked not to be messaged.
    #[serde(default)]
    pub opted_out: bool,
}

/// A ticket to print for a new check-in, decided by the API from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketOrder {
    /// The printer's name; the ticket goes to its outbox destination `printer:<name>`.
    pub printer: String,
    /// Estimated wait = patients waiting ahead × this.
    pub minutes_per_patient: u32,
}

/// The print job of one ticket as committed with its check-in (no patient data: the printer
/// only needs the ticket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketJob {
    /// The queue entry's id.
    pub entry: i64,
    /// The ticket number, e.g. `G-012`.
    pub ticket: String,
    pub queue: String,
    /// Patients waiting ahead of this one at check-in (priority, then arrival).
    pub waiting_ahead: u32,
    /// `waiting_ahead` × the printer's minutes per patient.
    pub estimated_wait_min: u32,
}

fn normal() -> Priority {
    Priority::Normal
}

impl CheckIn {
    /// Checks the fields; the message names the one that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("patient_ref", &self.patient_ref),
            ("appointment_ref", &self.appointment_ref),
            ("request_id", &self.request_id),
        ] {
            if let Some(v) = value
                && (v.is_empty() || v.len() > 128 || v.chars().any(char::is_control))
            {
                return Err(format!("\"{name}\": 1 to 128 printable characters"));
            }
        }
        if let Some(p) = &self.patient {
            let printable = |v: &str| {
                !v.trim().is_empty() && v.len() <= 128 && !v.chars().any(char::is_control)
            };
            if !printable(&p.family) || !p.given.as_deref().is_none_or(printable) {
                return Err(
                    "\"patient\": family and given are 1 to 128 printable characters".into(),
                );
            }
            if !valid_date(&p.birth_date) {
                return Err("\"patient.birth_date\": YYYY-MM-DD".into());
            }
        }
        if let Some(c) = &self.contact {
            // Only the size is checked here: a malformed number or address is refused, with
            // its reason, on the notification that would have used it.
            let fields = [&c.phone, &c.email, &c.language];
            if fields
                .into_iter()
                .flatten()
                .chain(&c.channels)
                .any(|v| v.is_empty() || v.len() > 254 || v.chars().any(char::is_control))
                || c.channels.len() > 8
            {
                return Err(
                    "\"contact\": fields are 1 to 254 printable characters, at most 8 channels"
                        .into(),
                );
            }
        }
        if self.priority > Priority::Normal
            && self.priority_reason.as_deref().is_none_or(str::is_empty)
        {
            return Err("\"priority_reason\" is required for elevated and urgent priority".into());
        }
        Ok(())
    }
}

/// A `YYYY-MM-DD` date with a plausible month and day.
pub fn valid_date(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && digits(0..4)
        && digits(5..7)
        && digits(8..10)
        && (1..=12).contains(&s[5..7].parse::<u8>().unwrap_or(0))
        && (1..=31).contains(&s[8..10].parse::<u8>().unwrap_or(0))
}

/// Queue names are part of URLs and event keys: letters, digits, `-` and `_`.
pub fn valid_queue_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The ticket label for the n-th check-in of the day in a queue: the queue's first letter,
/// upper-cased, and a three-digit number (`general`, 12 → `G-012`).
pub fn ticket_label(queue: &str, n: i64) -> String {
    let letter = queue.chars().next().map_or('Q', |c| c.to_ascii_uppercase());
    format!("{letter}-{n:03}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_follow_the_visit() {
        use EntryState::*;
        let call = Action::Call { room: None };
        let room = Action::AssignRoom { room: "3".into() };
        assert_eq!(transition(Waiting, &call), Ok(Called));
        assert_eq!(transition(Called, &room), Ok(InRoom));
        assert_eq!(transition(InRoom, &Action::Complete), Ok(Done));
        assert_eq!(transition(Waiting, &Action::NoShow), Ok(NoShow));
        let e = transition(Done, &call).expect_err("closed entries stay closed");
        assert_eq!(e.to_string(), "an entry that is done cannot be called");
        assert!(transition(InRoom, &Action::NoShow).is_err());
        assert!(transition(Waiting, &Action::Complete).is_err());
        let reroute = Action::Reroute { room: None };
        assert_eq!(transition(Called, &reroute), Ok(Called));
        assert_eq!(transition(InRoom, &reroute), Ok(InRoom));
        assert!(transition(Waiting, &reroute).is_err());
    }

    #[test]
    fn check_in_needs_a_reason_for_priority() {
        let mut c = CheckIn {
            patient_ref: Some("p1".into()),
            appointment_ref: None,
            priority: Priority::Urgent,
            priority_reason: None,
            request_id: None,
            printer: None,
            contact: None,
            patient: None,
            demographics: None,
            unknown_to_ehr: false,
        };
        assert!(c.validate().is_err());
        c.priority_reason = Some("chest pain".into());
        assert_eq!(c.validate(), Ok(()));
        c.patient = Some(PatientSearch {
            family: "Doe".into(),
            given: None,
            birth_date: "1980-13-01".into(),
        });
        assert!(c.validate().expect_err("month").contains("birth_date"));
        c.patient = None;
        c.patient_ref = Some(String::new());
        assert!(c.validate().expect_err("empty").contains("patient_ref"));
    }

    #[test]
    fn tickets_and_names() {
        assert_eq!(ticket_label("general", 12), "G-012");
        assert_eq!(ticket_label("lab", 1234), "L-1234");
        assert!(valid_queue_name("lab-draw_2"));
        assert!(!valid_queue_name("a/b"));
    }
}
