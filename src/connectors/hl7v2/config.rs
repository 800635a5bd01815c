//! `[connectors.hl7v2]`: the HL7 v2 MLLP listener.

use crate::queue::{CheckInWhen, Schedule, schedule};
use serde::Deserialize;
use std::net::SocketAddr;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Hl7Config {
    /// Address the MLLP listener binds (the EHR's interface engine connects here).
    pub listen: SocketAddr,
    /// Largest message accepted; a bigger one is answered AR and skipped.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// A connection silent this long is closed (the sender reconnects).
    #[serde(default = "default_idle_timeout_s")]
    pub idle_timeout_s: u64,
    /// Most connections served at once; more wait to be accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// MSH-3 of our ACKs when the message named no receiving application.
    #[serde(default = "default_application")]
    pub application: String,
    /// Booked, moved and changed appointments (SIU S12/S13/S14) drive the queue; absent: they
    /// are journaled only.
    #[serde(default)]
    pub appointments: Option<AppointmentsConfig>,
}

/// `[connectors.hl7v2.appointments]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AppointmentsConfig {
    /// The queue appointments are checked in to.
    pub queue: String,
    /// When an appointment of today is queued: `arrived` once the scheduling system marks it
    /// started (SCH-25), `booked` as soon as it is booked (pre-checked-in).
    #[serde(default)]
    pub check_in: CheckInWhen,
    /// A fixed offset from UTC in minutes (e.g. 60 for UTC+1) instead of the gateway's time
    /// zone (`[gateway] timezone`, which follows daylight saving time): which day is today, and
    /// which day a start sent with another offset falls on. v2 times without an offset are
    /// the clinic's local time.
    #[serde(default)]
    pub utc_offset_min: Option<i32>,
}

impl AppointmentsConfig {
    /// The schedule a message arriving at `now_ms` (Unix ms) is decided against.
    pub fn schedule(&self, now_ms: i64) -> Schedule {
        let offset = self
            .utc_offset_min
            .unwrap_or_else(|| crate::clock::offset_min(now_ms));
        Schedule {
            queue: self.queue.clone(),
            check_in: self.check_in,
            today: schedule::local_day(now_ms, offset),
            utc_offset_min: offset,
        }
    }
}

fn default_max_frame_bytes() -> usize {
    1 << 20
}
fn default_idle_timeout_s() -> u64 {
    600
}
fn default_max_connections() -> usize {
    32
}
fn default_application() -> String {
    "CLINIC-GATEWAY".into()
}

impl Hl7Config {
    pub fn validate(&self, bad: &mut dyn FnMut(&str, String)) {
        if !(1024..=(64 << 20)).contains(&self.max_frame_bytes) {
            bad(
                "connectors.hl7v2.max_frame_bytes",
                "must be between 1024 and 67108864".into(),
            );
        }
        if self.idle_timeout_s == 0 {
            bad(
                "connectors.hl7v2.idle_timeout_s",
                "must be at least 1".into(),
            );
        }
        if self.max_connections == 0 {
            bad(
                "connectors.hl7v2.max_connections",
                "must be at least 1".into(),
            );
        }
        if self.application.is_empty() || self.application.contains(['|', '^', '~', '\\', '&']) {
            bad(
                "connectors.hl7v2.application",
                "must be non-empty, without HL7 delimiters".into(),
            );
        }
        if let Some(a) = &self.appointments {
            if !crate::queue::valid_queue_name(&a.queue) {
                bad(
                    "connectors.hl7v2.appointments.queue",
                    "1 to 32 letters, digits, '-', '_'".into(),
                );
            }
            // UTC-12:00 to UTC+14:00 are the offsets in use.
            if a.utc_offset_min.is_some_and(|o| !(-720..=840).contains(&o)) {
                bad(
                    "connectors.hl7v2.appointments.utc_offset_min",
                    "must be between -720 and 840 (UTC-12:00 to UTC+14:00)".into(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Hl7Config;
    use crate::settings;

    /// The listener with `appointments` as its appointments table, or its problems as
    /// `key: message`.
    fn check(appointments: &str) -> Result<Hl7Config, Vec<String>> {
        let text = format!(
            "[connectors.hl7v2]\nlisten = \"127.0.0.1:2575\"\n\n\
             [connectors.hl7v2.appointments]\n{appointments}"
        );
        let h: Hl7Config = settings::section(&text, "connectors.hl7v2").map_err(|e| vec![e])?;
        let problems = settings::keyed(settings::collect(|bad| h.validate(bad)));
        if problems.is_empty() {
            Ok(h)
        } else {
            Err(problems)
        }
    }

    #[test]
    fn appointments_default_to_arrival_at_utc() {
        let c = check("queue = \"general\"\n").expect("valid");
        let a = c.appointments;
        assert_eq!(
            a,
            Some(super::AppointmentsConfig {
                queue: "general".into(),
                check_in: crate::queue::CheckInWhen::Arrived,
                utc_offset_min: None,
            })
        );
    }

    #[test]
    fn appointment_problems_name_their_key() {
        let err = check("queue = \"a/b\"\ncheck_in = \"booked\"\nutc_offset_min = 900\n")
            .expect_err("refused");
        assert_eq!(
            err,
            [
                "connectors.hl7v2.appointments.queue: 1 to 32 letters, digits, '-', '_'",
                "connectors.hl7v2.appointments.utc_offset_min: must be between -720 and 840 (UTC-12:00 to UTC+14:00)",
            ]
        );
        let err = check("queue = \"lab\"\ncheck_in = \"later\"\n").expect_err("refused");
        assert!(err[0].starts_with("unknown variant `later`"), "{err:?}");
        let err = check("queue = \"lab\"\nqueues = [\"lab\"]\n").expect_err("refused");
        assert!(err[0].starts_with("unknown field `queues`"), "{err:?}");
        assert!(
            check("check_in = \"booked\"\n").is_err(),
            "queue is required"
        );
    }
}
