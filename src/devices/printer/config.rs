//! `[[devices.printer]]`: one ESC/POS kiosk ticket printer on a serial port per table.
//!
//! Parsed by serde and checked once by [`validate`]; the actor and the check-in API only ever
//! see printers that passed it.

use super::protocol::{CodePage, MAX_QR_BYTES};
use crate::queue;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

/// One ticket printer.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrinterConfig {
    /// Unique printer name: the supervisor names the actor `printer:<name>`, its outbox
    /// destination is `printer:<name>` and a check-in may name it. Letters, digits, `-`, `_`.
    pub name: String,
    /// The serial port (e.g. `/dev/ttyUSB0`).
    pub serial: PathBuf,
    /// Baud rate (8N1).
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Printed in bold at the top of every ticket.
    pub clinic_name: String,
    /// The printer's character table: `pc437`, `pc850`, `pc858` (with €) or `wpc1252`.
    /// Characters it lacks print as `?`.
    #[serde(default = "default_code_page")]
    pub code_page: CodePage,
    /// What the QR code encodes: a URL with `{ticket}`, `{queue}` and `{entry}` replaced by
    /// the ticket number, queue name and queue entry id (all URL-safe). Default: the ticket
    /// number itself.
    #[serde(default)]
    pub check_in_url: Option<String>,
    /// A ticket not printed this many seconds after check-in is given up: dead-lettered and
    /// reported (`printer.ticket_failed`) so that staff can write it by hand.
    #[serde(default = "default_fail_after_s")]
    pub fail_after_s: u64,
    /// How often the printer's status is read while it is idle.
    #[serde(default = "default_status_poll_ms")]
    pub status_poll_ms: u64,
    /// How long one status answer may take; a printer that does not answer is offline.
    #[serde(default = "default_status_timeout_ms")]
    pub status_timeout_ms: u64,
    /// How long writing one ticket to the port may take.
    #[serde(default = "default_write_timeout_ms")]
    pub write_timeout_ms: u64,
    /// Estimated wait printed on a ticket = patients waiting ahead in its queue × this.
    #[serde(default = "default_minutes_per_patient")]
    pub minutes_per_patient: u32,
    /// Queues whose check-ins print here unless the check-in names a printer.
    #[serde(default)]
    pub default_for: Vec<String>,
    /// Display names of queues on the ticket (e.g. `general = "Médecine générale"`); a queue
    /// without one prints its name.
    #[serde(default)]
    pub queue_labels: BTreeMap<String, String>,
    /// A fixed local time for the time printed on tickets, as minutes east of UTC; default:
    /// the gateway's time zone (`[gateway] timezone`, with daylight saving time).
    #[serde(default)]
    pub utc_offset_min: Option<i32>,
}

fn default_baud() -> u32 {
    9600
}
fn default_code_page() -> CodePage {
    CodePage::Pc858
}
fn default_fail_after_s() -> u64 {
    300
}
fn default_status_poll_ms() -> u64 {
    2_000
}
fn default_status_timeout_ms() -> u64 {
    500
}
fn default_write_timeout_ms() -> u64 {
    5_000
}
fn default_minutes_per_patient() -> u32 {
    10
}

/// Placeholders a `check_in_url` may hold.
const PLACEHOLDERS: [&str; 3] = ["{ticket}", "{queue}", "{entry}"];

impl PrinterConfig {
    pub fn status_poll(&self) -> Duration {
        Duration::from_millis(self.status_poll_ms)
    }

    pub fn status_timeout(&self) -> Duration {
        Duration::from_millis(self.status_timeout_ms)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    /// The display name of a queue.
    pub fn queue_label<'a>(&'a self, queue: &'a str) -> &'a str {
        self.queue_labels.get(queue).map_or(queue, String::as_str)
    }

    /// What the QR code of a ticket encodes.
    pub fn qr_payload(&self, ticket: &str, queue: &str, entry: i64) -> String {
        match &self.check_in_url {
            Some(t) => t
                .replace("{ticket}", ticket)
                .replace("{queue}", queue)
                .replace("{entry}", &entry.to_string()),
            None => ticket.to_string(),
        }
    }
}

fn printable(s: &str, max: usize) -> bool {
    !s.trim().is_empty() && s.chars().count() <= max && !s.chars().any(char::is_control)
}

/// Reports every problem of the `[[devices.printer]]` tables as (key, message).
pub fn validate(printers: &[PrinterConfig], bad: &mut dyn FnMut(&str, String)) {
    let mut names = BTreeSet::new();
    let mut defaults: BTreeMap<&str, &str> = BTreeMap::new();
    for (i, p) in printers.iter().enumerate() {
        let key = |field: &str| format!("devices.printer[{i}].{field}");
        let identifier = !p.name.is_empty()
            && p.name.len() <= 64
            && p.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !identifier {
            bad(
                &key("name"),
                "must be 1 to 64 letters, digits, '-' or '_'".into(),
            );
        } else if !names.insert(p.name.as_str()) {
            bad(
                &key("name"),
                format!("another printer is already named {:?}", p.name),
            );
        }
        if p.serial.as_os_str().is_empty() {
            bad(&key("serial"), "must not be empty".into());
        }
        if !(50..=4_000_000).contains(&p.baud) {
            bad(&key("baud"), "must be between 50 and 4000000".into());
        }
        if !printable(&p.clinic_name, 64) {
            bad(
                &key("clinic_name"),
                "must be 1 to 64 printable characters".into(),
            );
        }
        if let Some(t) = &p.check_in_url {
            check_template(t, &key("check_in_url"), bad);
        }
        if p.fail_after_s == 0 {
            bad(&key("fail_after_s"), "must be at least 1".into());
        }
        if p.status_poll_ms < 100 {
            bad(&key("status_poll_ms"), "must be at least 100".into());
        }
        if !(10..=60_000).contains(&p.status_timeout_ms) {
            bad(
                &key("status_timeout_ms"),
                "must be between 10 and 60000".into(),
            );
        }
        if !(100..=600_000).contains(&p.write_timeout_ms) {
            bad(
                &key("write_timeout_ms"),
                "must be between 100 and 600000".into(),
            );
        }
        if p.minutes_per_patient > 240 {
            bad(&key("minutes_per_patient"), "must be at most 240".into());
        }
        if p.utc_offset_min.is_some_and(|o| !(-720..=840).contains(&o)) {
            bad(
                &key("utc_offset_min"),
                "must be between -720 and 840".into(),
            );
        }
        for q in &p.default_for {
            if !queue::valid_queue_name(q) {
                bad(
                    &key("default_for"),
                    format!("{q:?} is not a queue name (1 to 32 letters, digits, '-', '_')"),
                );
            } else if let Some(other) = defaults.insert(q, &p.name) {
                bad(
                    &key("default_for"),
                    format!("queue {q:?} already prints on printer {other:?}"),
                );
            }
        }
        for (q, label) in &p.queue_labels {
            let at = format!("{}.{q}", key("queue_labels"));
            if !queue::valid_queue_name(q) {
                bad(
                    &at,
                    "not a queue name (1 to 32 letters, digits, '-', '_')".into(),
                );
            }
            if !printable(label, 48) {
                bad(&at, "must be 1 to 48 printable characters".into());
            }
        }
    }
}

/// A QR template must be printable ASCII with only the known placeholders, and short enough
/// once filled in.
fn check_template(t: &str, key: &str, bad: &mut dyn FnMut(&str, String)) {
    if t.is_empty() || !t.chars().all(|c| c.is_ascii_graphic()) {
        bad(key, "must be printable ASCII without spaces".into());
        return;
    }
    let mut rest = t.to_string();
    for p in PLACEHOLDERS {
        rest = rest.replace(p, "");
    }
    if rest.contains(['{', '}']) {
        bad(
            key,
            "unknown placeholder; use {ticket}, {queue} or {entry}".into(),
        );
    }
    // Each placeholder becomes at most 32 (queue name) or 20 (entry id) characters.
    let longest = t.len()
        + PLACEHOLDERS
            .iter()
            .map(|p| t.matches(p).count() * 32)
            .sum::<usize>();
    if longest > MAX_QR_BYTES {
        bad(
            key,
            format!("too long: at most {MAX_QR_BYTES} bytes once filled in"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::PrinterConfig;
    use crate::settings;

    /// The `[[devices.printer]]` tables of `printers`, checked; their problems as
    /// `key: message`.
    fn check(printers: &str) -> Vec<String> {
        match settings::section::<Vec<PrinterConfig>>(printers, "devices.printer") {
            Ok(p) => settings::keyed(settings::collect(|bad| super::validate(&p, bad))),
            Err(e) => vec![e],
        }
    }

    const OK: &str = "[[devices.printer]]\nname = \"kiosk-1\"\nserial = \"/dev/ttyUSB0\"\nclinic_name = \"Cabinet Médical\"\n";

    #[test]
    fn a_valid_printer_gets_defaults() {
        let printers: Vec<PrinterConfig> = settings::section(OK, "devices.printer").expect("valid");
        let p = &printers[0];
        assert_eq!(p.code_page, super::CodePage::Pc858);
        assert_eq!(p.fail_after_s, 300);
        assert_eq!(p.qr_payload("G-001", "general", 7), "G-001");
    }

    #[test]
    fn every_printer_problem_is_named_by_its_key() {
        let problems = check(&format!(
            "{OK}default_for = [\"general\"]\n\
             [[devices.printer]]\nname = \"kiosk-1\"\nserial = \"\"\nclinic_name = \" \"\n\
             check_in_url = \"https://x/{{patient}}\"\nfail_after_s = 0\nstatus_timeout_ms = 1\n\
             default_for = [\"general\", \"a/b\"]\n\
             [devices.printer.queue_labels]\ngeneral = \"\"\n"
        ));
        let expected = [
            "devices.printer[1].name: another printer is already named \"kiosk-1\"",
            "devices.printer[1].serial: must not be empty",
            "devices.printer[1].clinic_name: must be 1 to 64 printable characters",
            "devices.printer[1].check_in_url: unknown placeholder; use {ticket}, {queue} or {entry}",
            "devices.printer[1].fail_after_s: must be at least 1",
            "devices.printer[1].status_timeout_ms: must be between 10 and 60000",
            "devices.printer[1].default_for: queue \"general\" already prints on printer \"kiosk-1\"",
            "devices.printer[1].default_for: \"a/b\" is not a queue name (1 to 32 letters, digits, '-', '_')",
            "devices.printer[1].queue_labels.general: must be 1 to 48 printable characters",
        ];
        assert_eq!(problems, expected);
        let page = check(&format!("{OK}code_page = \"pc999\"\n"));
        assert!(page[0].starts_with("unknown variant `pc999`"), "{page:?}");
    }
}
