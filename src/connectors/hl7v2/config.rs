//! `[connectors.hl7v2]`: the HL7 v2 MLLP listener.

use crate::queue::{CheckInWhen, Schedule, schedule};
use crate::settings::{check_readable, resolve};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

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
    /// MLLP over TLS (IHE ATNA secure node); absent: plain TCP.
    #[serde(default)]
    pub tls: Option<ListenerTlsConfig>,
    /// The senders whose messages are taken; empty: every sender. A message from a sender
    /// matching no entry is neither committed nor acknowledged.
    #[serde(default)]
    pub allow: Vec<AllowEntry>,
    /// Refused senders (allow-list refusals, failed TLS handshakes) within
    /// `refusal_window_s` after which the listener suspends itself until an admin resumes it;
    /// absent: never.
    #[serde(default)]
    pub suspend_after_refusals: Option<u32>,
    /// The window `suspend_after_refusals` counts in.
    #[serde(default = "default_refusal_window_s")]
    pub refusal_window_s: u64,
}

fn default_refusal_window_s() -> u64 {
    60
}

/// `[connectors.hl7v2.tls]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// PEM certificate chain the listener presents.
    pub cert_file: PathBuf,
    /// PEM private key of `cert_file`.
    pub key_file: PathBuf,
    /// PEM CA certificate(s) a client certificate must chain to; set, every client must
    /// present one (ATNA node authentication).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// PEM certificate revocation lists (CRLs) of the CA of `client_ca_file`: a sender whose
    /// certificate is revoked fails the handshake. Read again whenever the file changes.
    #[serde(default)]
    pub client_crl_file: Option<PathBuf>,
}

/// One `[[connectors.hl7v2.allow]]` entry: a sender matches it when it matches every field
/// the entry names.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AllowEntry {
    /// Common name (CN) of the sender's client certificate.
    #[serde(default)]
    pub subject: Option<String>,
    /// Source address: one IP address, or a network as `address/prefix`.
    #[serde(default)]
    pub address: Option<AddressRange>,
    /// MSH-3 (its first component, the namespace id).
    #[serde(default)]
    pub sending_application: Option<String>,
    /// MSH-4 (its first component, the namespace id).
    #[serde(default)]
    pub sending_facility: Option<String>,
}

/// An IP network: the addresses sharing the first `prefix` bits of `network`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct AddressRange {
    network: IpAddr,
    prefix: u8,
}

impl TryFrom<String> for AddressRange {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let wrong = || format!("{text:?} is not an IP address or address/prefix");
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| wrong())?)),
            None => (text.as_str(), None),
        };
        let network: IpAddr = address.parse().map_err(|_| wrong())?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(bits);
        if prefix > bits {
            return Err(format!("{text:?}: the prefix exceeds {bits} bits"));
        }
        Ok(AddressRange { network, prefix })
    }
}

impl AddressRange {
    /// Whether `ip` lies in this network; an IPv4-mapped IPv6 address counts as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let shift = |bits: u32| bits.checked_sub(u32::from(self.prefix));
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => shift(32).is_some_and(|s| {
                u32::from(n).checked_shr(s).unwrap_or(0) == u32::from(a).checked_shr(s).unwrap_or(0)
            }),
            (IpAddr::V6(n), IpAddr::V6(a)) => shift(128).is_some_and(|s| {
                u128::from(n).checked_shr(s).unwrap_or(0)
                    == u128::from(a).checked_shr(s).unwrap_or(0)
            }),
            _ => false,
        }
    }
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
    /// This config with its file paths resolved against the config file's folder.
    pub fn resolved(&self, resolve: impl Fn(&Path) -> PathBuf) -> Hl7Config {
        let mut c = self.clone();
        if let Some(t) = &mut c.tls {
            t.cert_file = resolve(&t.cert_file);
            t.key_file = resolve(&t.key_file);
            t.client_ca_file = t.client_ca_file.as_deref().map(&resolve);
            t.client_crl_file = t.client_crl_file.as_deref().map(&resolve);
        }
        c
    }

    /// Reports every problem; `base` is the config file's folder.
    pub fn validate(&self, base: &Path, bad: &mut dyn FnMut(&str, String)) {
        if self.suspend_after_refusals == Some(0) {
            bad(
                "connectors.hl7v2.suspend_after_refusals",
                "must be at least 1 (leave it out to never suspend)".into(),
            );
        }
        if self.refusal_window_s == 0 {
            bad(
                "connectors.hl7v2.refusal_window_s",
                "must be above 0".into(),
            );
        }
        let client_certificates = self
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca_file.is_some());
        if let Some(t) = &self.tls {
            let key = |field: &str| format!("connectors.hl7v2.tls.{field}");
            check_readable(&resolve(base, &t.cert_file), &key("cert_file"), bad);
            check_readable(&resolve(base, &t.key_file), &key("key_file"), bad);
            let ca = t.client_ca_file.as_deref().map(|ca| resolve(base, ca));
            if let Some(ca) = &ca {
                check_readable(ca, &key("client_ca_file"), bad);
            }
            if let Some(crl) = &t.client_crl_file {
                crate::pem::check_crl(
                    (&key("client_crl_file"), &resolve(base, crl)),
                    (&key("client_ca_file"), ca.as_deref()),
                    bad,
                );
            }
        }
        for (i, entry) in self.allow.iter().enumerate() {
            let key = format!("connectors.hl7v2.allow[{i}]");
            let names = [
                &entry.subject,
                &entry.sending_application,
                &entry.sending_facility,
            ];
            if entry.address.is_none() && names.iter().all(|n| n.is_none()) {
                bad(
                    &key,
                    "names none of subject, address, sending_application, sending_facility".into(),
                );
            }
            if names.iter().any(|n| n.as_deref() == Some("")) {
                bad(&key, "a name to match must not be empty".into());
            }
            if entry.subject.is_some() && !client_certificates {
                bad(
                    &format!("{key}.subject"),
                    "needs connectors.hl7v2.tls.client_ca_file: without client certificates \
                     there is no subject to match"
                        .into(),
                );
            }
        }
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
        let problems = settings::keyed(settings::collect(|bad| {
            h.validate(std::path::Path::new("/"), bad)
        }));
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

    /// The listener with `rest` after its `listen` line, or its problems as `key: message`.
    fn check_listener(rest: &str) -> Result<Hl7Config, Vec<String>> {
        let text = format!("[connectors.hl7v2]\nlisten = \"127.0.0.1:2575\"\n{rest}");
        let h: Hl7Config = settings::section(&text, "connectors.hl7v2").map_err(|e| vec![e])?;
        let problems = settings::keyed(settings::collect(|bad| {
            h.validate(std::path::Path::new("/nonexistent"), bad)
        }));
        if problems.is_empty() {
            Ok(h)
        } else {
            Err(problems)
        }
    }

    #[test]
    fn allow_entries_need_a_field_and_subjects_need_client_certificates() {
        let err = check_listener(
            "[[connectors.hl7v2.allow]]\n\
             [[connectors.hl7v2.allow]]\nsubject = \"ehr\"\n\
             [[connectors.hl7v2.allow]]\nsending_application = \"\"\n",
        )
        .expect_err("refused");
        assert_eq!(
            err,
            [
                "connectors.hl7v2.allow[0]: names none of subject, address, sending_application, sending_facility",
                "connectors.hl7v2.allow[1].subject: needs connectors.hl7v2.tls.client_ca_file: without client certificates there is no subject to match",
                "connectors.hl7v2.allow[2]: a name to match must not be empty",
            ]
        );
        let ok = check_listener(
            "[[connectors.hl7v2.allow]]\naddress = \"10.1.0.0/16\"\nsending_facility = \"HOSP\"\n",
        )
        .expect("valid");
        assert_eq!(ok.allow.len(), 1);
        let err = check_listener("[[connectors.hl7v2.allow]]\naddress = \"10.1.0.0/33\"\n")
            .expect_err("refused");
        assert_eq!(err, ["\"10.1.0.0/33\": the prefix exceeds 32 bits"]);
    }

    #[test]
    fn unreadable_tls_files_name_their_key() {
        let err = check_listener(
            "[connectors.hl7v2.tls]\ncert_file = \"s.crt\"\nkey_file = \"s.key\"\nclient_ca_file = \"ca.crt\"\n",
        )
        .expect_err("refused");
        let keys: Vec<&str> = err.iter().filter_map(|e| e.split(':').next()).collect();
        assert_eq!(
            keys,
            [
                "connectors.hl7v2.tls.cert_file",
                "connectors.hl7v2.tls.key_file",
                "connectors.hl7v2.tls.client_ca_file",
            ]
        );
        assert!(err[0].contains("/nonexistent/s.crt"), "{err:?}");

        let crl_alone = check_listener(
            "[connectors.hl7v2.tls]\ncert_file = \"s.crt\"\nkey_file = \"s.key\"\nclient_crl_file = \"ca.crl\"\n",
        )
        .expect_err("refused");
        assert_eq!(
            crl_alone[2],
            "connectors.hl7v2.tls.client_crl_file: needs connectors.hl7v2.tls.client_ca_file: \
             revocation is checked only for client certificates"
        );
    }

    #[test]
    fn address_ranges_hold_their_network_only() {
        let range = |t: &str| super::AddressRange::try_from(t.to_string()).expect("range");
        let ip = |t: &str| t.parse::<std::net::IpAddr>().expect("ip");
        assert!(range("10.1.0.0/16").contains(ip("10.1.200.3")));
        assert!(!range("10.1.0.0/16").contains(ip("10.2.0.1")));
        assert!(range("127.0.0.1").contains(ip("::ffff:127.0.0.1")));
        assert!(!range("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(range("0.0.0.0/0").contains(ip("192.0.2.1")));
        assert!(range("fd00::/8").contains(ip("fd12::1")));
        assert!(!range("fd00::/8").contains(ip("10.0.0.1")));
        assert!(super::AddressRange::try_from("host/8".to_string()).is_err());
    }
}
