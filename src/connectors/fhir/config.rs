//! `[connectors.fhir]`: the EHR's FHIR R4 REST endpoint, its credentials and the sync cadence.

pub use crate::queue::CheckInWhen;
/// `[connectors.fhir.auth]`.
pub use crate::settings::HttpAuth as Auth;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FhirConfig {
    /// The FHIR base URL, e.g. `https://ehr.example/fhir/R4` (resource paths are appended).
    pub base_url: String,
    /// System of the patient identifier a check-in's `patient_ref` is (e.g. the clinic's MRN
    /// system). Searches use `identifier=<system>|<value>`.
    pub identifier_system: String,
    /// Bound on one HTTP request, connection included.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Bound on a connection attempt.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How long a check-in waits for the EHR before the local cache answers instead.
    #[serde(default = "default_lookup_timeout_ms")]
    pub lookup_timeout_ms: u64,
    /// How often remote Patient changes are polled (`_lastUpdated`).
    #[serde(default = "default_poll_interval_s")]
    pub poll_interval_s: u64,
    /// Longest wait before a connector paused by refused credentials tries again.
    #[serde(default = "default_credential_retry_s")]
    pub credential_retry_s: u64,
    /// The `meta.tag` system marking resources this gateway wrote (loop prevention).
    #[serde(default = "default_tag_system")]
    pub tag_system: String,
    /// PEM file with the CA that the EHR's certificate chains to; default: the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How the gateway authenticates to the EHR.
    #[serde(default)]
    pub auth: Auth,
    /// Today's appointments as queue entries; absent: appointments are not read.
    #[serde(default)]
    pub appointments: Option<AppointmentsConfig>,
    /// `"encounter"`: a call opens the visit's Encounter in the EHR (`arrived`), a room moves
    /// it to `in-progress`, a called patient leaving unseen cancels it. Absent: not told.
    #[serde(default)]
    pub on_call: Option<OnCall>,
    /// EHR Flags raise the priority of the flagged patient's entries; absent: not read.
    #[serde(default)]
    pub flags: Option<FlagsConfig>,
    /// Lab results (Observation) read for the lab's hook (docs/lab.md); absent: not read.
    #[serde(default)]
    pub results: Option<ResultsConfig>,
    /// Prescriptions and dispenses (MedicationRequest, MedicationDispense) read for the
    /// pharmacy's hook, and the allergies and detected issues of the queued patients
    /// (docs/pharmacy.md); absent: not read.
    #[serde(default)]
    pub pharmacy: Option<ResultsConfig>,
    /// Waits longer than the booked slots are suggested to the EHR's scheduling staff and shown
    /// to staff; absent: waits are not watched.
    #[serde(default)]
    pub waits: Option<WaitsConfig>,
    /// What the gateway may register in the EHR (facility settings); absent: nothing.
    #[serde(default)]
    pub registration: Option<RegistrationConfig>,
}

/// `[connectors.fhir.registration]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    /// A patient checked in by name and birth date whom the EHR answered it does not know is
    /// created as a new Patient (never when the EHR did not answer: it may know them).
    #[serde(default)]
    pub create_patients: bool,
    /// A walk-in (an entry without an appointment) gets an Appointment in the EHR.
    #[serde(default)]
    pub walk_in_appointments: bool,
    /// The length of a walk-in's Appointment.
    #[serde(default = "default_slot_minutes")]
    pub walk_in_minutes: u32,
}

/// `[connectors.fhir.waits]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WaitsConfig {
    /// The slot length of entries without an appointment (or whose appointment has no length).
    #[serde(default = "default_slot_minutes")]
    pub slot_minutes: u32,
    /// How often the waits are measured.
    #[serde(default = "default_wait_check_s")]
    pub check_interval_s: u64,
    /// What the EHR gets: a `task` for scheduling staff, or a `communication`.
    #[serde(default)]
    pub suggest: Suggest,
    /// Who should act, as a FHIR reference (e.g. `Group/scheduling`, `Practitioner/123`).
    #[serde(default)]
    pub owner: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Suggest {
    #[default]
    Task,
    Communication,
}

fn default_slot_minutes() -> u32 {
    15
}

fn default_wait_check_s() -> u64 {
    60
}

/// `[connectors.fhir.flags]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlagsConfig {
    /// The priority an active flag gives (`elevated` or `urgent`).
    #[serde(default = "default_flag_priority")]
    pub priority: crate::queue::Priority,
    /// Flag codes (any coding's `code`) that make the entry urgent whatever `priority` says.
    #[serde(default)]
    pub urgent_codes: Vec<String>,
    /// How often Flags are read: faster than other resources, as they change who goes first.
    #[serde(default = "default_flag_poll_s")]
    pub poll_interval_s: u64,
}

/// `[connectors.fhir.results]` and `[connectors.fhir.pharmacy]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResultsConfig {
    /// How often results are read: a critical value must reach staff within the urgent sync
    /// limit (1 minute), so at most 60.
    #[serde(default = "default_results_poll_s")]
    pub poll_interval_s: u64,
}

fn default_results_poll_s() -> u64 {
    30
}

fn default_flag_priority() -> crate::queue::Priority {
    crate::queue::Priority::Elevated
}

fn default_flag_poll_s() -> u64 {
    30
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnCall {
    Encounter,
}

/// `[connectors.fhir.appointments]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AppointmentsConfig {
    /// The queue appointments are checked in to.
    pub queue: String,
    /// When an appointment is queued: `arrived` once the EHR marks the patient arrived or
    /// checked in, `booked` as soon as it is booked for today (pre-checked-in).
    #[serde(default)]
    pub check_in: CheckInWhen,
    /// How often today's appointments are read.
    #[serde(default = "default_appointment_poll_s")]
    pub poll_interval_s: u64,
    /// A fixed offset from UTC in minutes (e.g. 60 for UTC+1) instead of the gateway's time
    /// zone (`[gateway] timezone`): which day is "today", and the day of an appointment's
    /// start given with another offset.
    #[serde(default)]
    pub utc_offset_min: Option<i32>,
}

fn default_appointment_poll_s() -> u64 {
    300
}

fn default_request_timeout_ms() -> u64 {
    10_000
}
fn default_connect_timeout_ms() -> u64 {
    3_000
}
fn default_lookup_timeout_ms() -> u64 {
    3_000
}
fn default_poll_interval_s() -> u64 {
    60
}
fn default_credential_retry_s() -> u64 {
    60
}
fn default_tag_system() -> String {
    "urn:clinic-gateway:write".into()
}
fn http_url(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://")) && url.len() > "https://".len()
}

impl FhirConfig {
    /// This config with its file paths resolved by `resolve` (against the config's folder).
    pub fn resolved(&self, resolve: impl Fn(&std::path::Path) -> PathBuf) -> FhirConfig {
        let mut c = self.clone();
        c.ca_file = c.ca_file.map(|p| resolve(&p));
        c.auth = c.auth.resolved(resolve);
        c
    }

    pub fn validate(&self, bad: &mut dyn FnMut(&str, String)) {
        if !http_url(&self.base_url) {
            bad(
                "connectors.fhir.base_url",
                "must be an http:// or https:// URL".into(),
            );
        }
        if self.identifier_system.trim().is_empty() || self.identifier_system.contains('|') {
            bad(
                "connectors.fhir.identifier_system",
                "must be a non-empty URI without '|'".into(),
            );
        }
        if self.tag_system.trim().is_empty() {
            bad("connectors.fhir.tag_system", "must not be empty".into());
        }
        for (key, v, min) in [
            ("request_timeout_ms", self.request_timeout_ms, 100),
            ("connect_timeout_ms", self.connect_timeout_ms, 100),
            ("lookup_timeout_ms", self.lookup_timeout_ms, 100),
            ("poll_interval_s", self.poll_interval_s, 1),
            ("credential_retry_s", self.credential_retry_s, 1),
        ] {
            if v < min {
                bad(
                    &format!("connectors.fhir.{key}"),
                    format!("must be at least {min}"),
                );
            }
        }
        if self.poll_interval_s > 300 {
            bad(
                "connectors.fhir.poll_interval_s",
                "must be at most 300 (remote changes are picked up within 5 minutes)".into(),
            );
        }
        if let Some(a) = &self.appointments {
            if !crate::queue::valid_queue_name(&a.queue) {
                bad(
                    "connectors.fhir.appointments.queue",
                    "1 to 32 letters, digits, '-', '_'".into(),
                );
            }
            if !(1..=300).contains(&a.poll_interval_s) {
                bad(
                    "connectors.fhir.appointments.poll_interval_s",
                    "must be 1 to 300 (changes are picked up within 5 minutes)".into(),
                );
            }
            if a.utc_offset_min.is_some_and(|o| !(-720..=840).contains(&o)) {
                bad(
                    "connectors.fhir.appointments.utc_offset_min",
                    "must be -720 to 840".into(),
                );
            }
        }
        for (key, polled) in [("results", &self.results), ("pharmacy", &self.pharmacy)] {
            if let Some(r) = polled
                && (r.poll_interval_s == 0 || r.poll_interval_s > 60)
            {
                bad(
                    &format!("connectors.fhir.{key}.poll_interval_s"),
                    "1 to 60 seconds (the urgent sync limit)".into(),
                );
            }
        }
        if let Some(f) = &self.flags {
            if f.priority == crate::queue::Priority::Normal {
                bad(
                    "connectors.fhir.flags.priority",
                    "must be \"elevated\" or \"urgent\" (a flag that raises nothing does nothing)"
                        .into(),
                );
            }
            if f.poll_interval_s == 0 || f.poll_interval_s > 60 {
                bad(
                    "connectors.fhir.flags.poll_interval_s",
                    "must be 1 to 60 (flags are urgent: read at least once a minute)".into(),
                );
            }
        }
        if let Some(w) = &self.waits {
            if !(1..=480).contains(&w.slot_minutes) {
                bad(
                    "connectors.fhir.waits.slot_minutes",
                    "must be 1 to 480".into(),
                );
            }
            if w.check_interval_s == 0 {
                bad(
                    "connectors.fhir.waits.check_interval_s",
                    "must be at least 1".into(),
                );
            }
            let reference = |r: &str| {
                r.split_once('/').is_some_and(|(t, id)| {
                    t.chars().all(|c| c.is_ascii_alphabetic())
                        && !t.is_empty()
                        && !id.is_empty()
                        && !id.contains(char::is_whitespace)
                })
            };
            if w.owner.as_deref().is_some_and(|o| !reference(o)) {
                bad(
                    "connectors.fhir.waits.owner",
                    "must be a FHIR reference like \"Group/scheduling\"".into(),
                );
            }
        }
        if let Some(r) = &self.registration
            && !(1..=480).contains(&r.walk_in_minutes)
        {
            bad(
                "connectors.fhir.registration.walk_in_minutes",
                "must be 1 to 480".into(),
            );
        }
        self.auth.validate("connectors.fhir.auth", bad);
    }
}
