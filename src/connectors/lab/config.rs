//! `[connectors.lab]`: what results from the laboratory (LIS) do to the queue.

use crate::queue::{Priority, valid_queue_name};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LabConfig {
    /// Results that change care: a final or corrected result of one of a rule's test codes
    /// raises the priority of the patient's entry in the rule's queue.
    #[serde(default)]
    pub priority: Vec<PriorityRule>,
    /// Interpretation codes (OBX-8, `Observation.interpretation`) that make a result critical:
    /// the patient's entries become urgent and clinical staff get an alert.
    #[serde(default = "default_critical_flags")]
    pub critical_flags: Vec<String>,
    /// Critical limits per test: a numeric result outside them is critical whatever its flags.
    #[serde(default)]
    pub critical: Vec<CriticalLimit>,
    /// Results an appointment type requires before the patient is seen: until they arrive the
    /// entry is `awaiting_results` (shown, kept in its place, not callable).
    #[serde(default)]
    pub required: Vec<RequiredResults>,
    /// How recent a required result must be to count, in hours.
    #[serde(default = "default_required_within_h")]
    pub required_within_h: u64,
    /// Specimens tracked per queue entry, and the delays a long collection or a recollection
    /// causes to the patients behind; absent: specimen messages are journaled only.
    #[serde(default)]
    pub specimens: Option<SpecimensConfig>,
}

/// `[connectors.lab.specimens]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpecimensConfig {
    /// Seconds an order may wait for its specimen to be collected, counted from the order (or
    /// from the rejection that asks for a recollection); past them the collection runs long.
    #[serde(default = "default_collection_within_s")]
    pub collection_within_s: u64,
    /// Minutes a collection running long, or a recollection, adds to its entry's expected
    /// time.
    #[serde(default = "default_delay_min")]
    pub delay_min: u32,
    /// Minutes each entry ahead in the queue counts in an estimated wait, plus the delays
    /// added to it.
    #[serde(default = "default_minutes_per_patient")]
    pub minutes_per_patient: u32,
    /// A patient behind a delayed entry is told (`delay`) once their estimated wait moved by
    /// more than this many minutes since they were last told.
    #[serde(default = "default_notify_over_min")]
    pub notify_over_min: u32,
}

impl Default for SpecimensConfig {
    fn default() -> Self {
        SpecimensConfig {
            collection_within_s: default_collection_within_s(),
            delay_min: default_delay_min(),
            minutes_per_patient: default_minutes_per_patient(),
            notify_over_min: default_notify_over_min(),
        }
    }
}

fn default_collection_within_s() -> u64 {
    20 * 60
}

fn default_delay_min() -> u32 {
    15
}

fn default_minutes_per_patient() -> u32 {
    10
}

fn default_notify_over_min() -> u32 {
    10
}

impl SpecimensConfig {
    pub fn collection_within_ms(&self) -> i64 {
        (self.collection_within_s * 1000) as i64
    }
}

/// `[[connectors.lab.required]]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RequiredResults {
    /// The appointment type (SCH-8.1 or SCH-7.1; FHIR `appointmentType` or `serviceType`
    /// code).
    pub appointment_type: String,
    /// The tests (LOINC) whose final or corrected results must have arrived.
    pub codes: Vec<String>,
}

fn default_required_within_h() -> u64 {
    24
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            priority: Vec::new(),
            critical_flags: default_critical_flags(),
            critical: Vec::new(),
            required: Vec::new(),
            required_within_h: default_required_within_h(),
            specimens: None,
        }
    }
}

fn default_critical_flags() -> Vec<String> {
    ["HH", "LL", "AA"].map(String::from).to_vec()
}

/// `[[connectors.lab.critical]]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CriticalLimit {
    /// The test code (LOINC).
    pub code: String,
    /// A value below this is critical.
    #[serde(default)]
    pub low: Option<f64>,
    /// A value above this is critical.
    #[serde(default)]
    pub high: Option<f64>,
}

/// `[[connectors.lab.priority]]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PriorityRule {
    /// The queue whose entries the rule raises.
    pub queue: String,
    /// Test codes (LOINC, OBX-3.1 / `Observation.code`) whose results change care there.
    pub codes: Vec<String>,
    /// The priority an entry is raised to (never lowered by a rule).
    pub priority: Priority,
}

impl LabConfig {
    /// Reports every problem under `connectors.lab`.
    pub fn validate(&self, bad: &mut dyn FnMut(&str, String)) {
        for (i, rule) in self.priority.iter().enumerate() {
            let key = |k: &str| format!("connectors.lab.priority[{i}].{k}");
            if !valid_queue_name(&rule.queue) {
                bad(
                    &key("queue"),
                    "a queue name: 1 to 32 letters, digits, '-' or '_'".into(),
                );
            }
            if rule.codes.is_empty() || rule.codes.iter().any(|c| c.trim().is_empty()) {
                bad(&key("codes"), "at least one non-empty test code".into());
            }
            if rule.priority == Priority::Normal {
                bad(
                    &key("priority"),
                    "\"elevated\" or \"urgent\": a rule that raises nothing does nothing".into(),
                );
            }
        }
        for (i, r) in self.required.iter().enumerate() {
            if r.appointment_type.trim().is_empty() {
                bad(
                    &format!("connectors.lab.required[{i}].appointment_type"),
                    "an appointment type code".into(),
                );
            }
            if r.codes.is_empty() || r.codes.iter().any(|c| c.trim().is_empty()) {
                bad(
                    &format!("connectors.lab.required[{i}].codes"),
                    "at least one non-empty test code".into(),
                );
            }
        }
        if !(1..=24 * 30).contains(&self.required_within_h) {
            bad("connectors.lab.required_within_h", "1 to 720 hours".into());
        }
        if let Some(s) = &self.specimens {
            if !(1..=86_400).contains(&s.collection_within_s) {
                bad(
                    "connectors.lab.specimens.collection_within_s",
                    "1 to 86400 seconds".into(),
                );
            }
            for (key, value, least) in [
                ("delay_min", s.delay_min, 1),
                ("minutes_per_patient", s.minutes_per_patient, 1),
                ("notify_over_min", s.notify_over_min, 0),
            ] {
                if !(least..=240).contains(&value) {
                    bad(
                        &format!("connectors.lab.specimens.{key}"),
                        format!("{least} to 240 minutes"),
                    );
                }
            }
        }
        if self.critical_flags.iter().any(|f| f.trim().is_empty()) {
            bad("connectors.lab.critical_flags", "empty code".into());
        }
        for (i, limit) in self.critical.iter().enumerate() {
            let key = |k: &str| format!("connectors.lab.critical[{i}].{k}");
            if limit.code.trim().is_empty() {
                bad(&key("code"), "a test code".into());
            }
            match (limit.low, limit.high) {
                (None, None) => bad(&key("low"), "give low, high or both".into()),
                (l, h) if l.into_iter().chain(h).any(|v| !v.is_finite()) => {
                    bad(&key("low"), "a finite number".into())
                }
                (Some(l), Some(h)) if l >= h => bad(&key("high"), "must be above low".into()),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Vec<String> {
        let config: LabConfig = toml::from_str(text).expect("parses");
        let mut problems = Vec::new();
        config.validate(&mut |key, message| problems.push(format!("{key}: {message}")));
        problems
    }

    #[test]
    fn rules_need_a_queue_codes_and_a_raise() {
        assert!(
            check(
                "[[priority]]\nqueue = \"general\"\ncodes = [\"2345-7\"]\npriority = \"elevated\""
            )
            .is_empty()
        );
        let problems = check("[[priority]]\nqueue = \"a/b\"\ncodes = []\npriority = \"normal\"");
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("connectors.lab.priority[0].queue: "));
        let limits = check(
            "[[critical]]\ncode = \"2823-3\"\nlow = 6.0\nhigh = 2.5\n[[critical]]\ncode = \"x\"",
        );
        assert_eq!(limits.len(), 2, "{limits:?}");
        assert!(limits[0].starts_with("connectors.lab.critical[0].high: "));
        assert_eq!(LabConfig::default().critical_flags, ["HH", "LL", "AA"]);
        let specimens =
            check("[specimens]\ncollection_within_s = 0\ndelay_min = 0\nnotify_over_min = 5");
        assert_eq!(
            specimens,
            [
                "connectors.lab.specimens.collection_within_s: 1 to 86400 seconds",
                "connectors.lab.specimens.delay_min: 1 to 240 minutes"
            ]
        );
        assert!(check("[specimens]").is_empty());
    }
}
