//! The cloud topic contract, pure: topic names, the event envelope, and command parsing.
//!
//! ```text
//! contract 1                          contract 2
//! clinic/{f}/events/{kind}            clinic/v2/{f}/events/{kind, '.' → '/'}   gateway → cloud, QoS 1, JSON envelope
//! clinic/{f}/status                   clinic/v2/{f}/status                      gateway → cloud, retained "online" / "offline"
//! clinic/{f}/commands/{name}          clinic/v2/{f}/commands/{name}             cloud → gateway, QoS 1, JSON {"request_id", ...}
//! clinic/{f}/replies/{name}           clinic/v2/{f}/replies/{name}              gateway → cloud, QoS 1, JSON {"request_id", "ok", ...}
//! ```
//!
//! Contract 2 exists because NATS (and any broker mapping topic levels onto dotted subjects)
//! refuses '.' in a topic: a kind's dots become levels there. The envelope is the same in both,
//! its `kind` keeping the dots.

use crate::journal::OutboxRow;
use serde::Deserialize;
use serde_json::value::RawValue;

/// A version of the topic contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    /// `clinic/{f}/...`, the kind as it is (dots and all).
    V1,
    /// `clinic/v2/{f}/...`, every '.' of the kind a topic level of its own.
    V2,
}

impl Contract {
    fn prefix(self, facility: &str) -> String {
        match self {
            Contract::V1 => format!("clinic/{facility}"),
            Contract::V2 => format!("clinic/v2/{facility}"),
        }
    }
}

/// Topic names of one facility, under the contract served and, during a migration, contract 1
/// beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// The contracts served, the configured one first (its status topic carries the last will).
    served: Vec<(Contract, String)>,
}

impl Topics {
    /// `contract` is 1 or 2 (validated config); `serve_contract_1` adds contract 1 beside 2.
    pub fn new(facility: &str, contract: u8, serve_contract_1: bool) -> Self {
        let main = if contract == 2 {
            Contract::V2
        } else {
            Contract::V1
        };
        let mut served = vec![(main, main.prefix(facility))];
        if main == Contract::V2 && serve_contract_1 {
            served.push((Contract::V1, Contract::V1.prefix(facility)));
        }
        Topics { served }
    }
    /// The topics an event of `kind` is published under, one per contract served.
    pub fn events(&self, kind: &str) -> Vec<String> {
        self.served
            .iter()
            .map(|(contract, prefix)| match contract {
                Contract::V1 => format!("{prefix}/events/{kind}"),
                Contract::V2 => format!("{prefix}/events/{}", kind.replace('.', "/")),
            })
            .collect()
    }
    /// The status topic of the configured contract: the one the last will goes to.
    pub fn status(&self) -> String {
        format!("{}/status", self.served[0].1)
    }
    /// Every status topic served.
    pub fn statuses(&self) -> Vec<String> {
        self.served
            .iter()
            .map(|(_, prefix)| format!("{prefix}/status"))
            .collect()
    }
    /// The command filters to subscribe to.
    pub fn commands(&self) -> Vec<String> {
        self.served
            .iter()
            .map(|(_, prefix)| format!("{prefix}/commands/+"))
            .collect()
    }
    /// The reply topic for a command received under `contract`.
    pub fn reply(&self, contract: Contract, name: &str) -> String {
        let prefix = self
            .served
            .iter()
            .find(|(c, _)| *c == contract)
            .map_or(&self.served[0].1, |(_, p)| p);
        format!("{prefix}/replies/{name}")
    }
    /// The command name of a topic under `commands/`, with the contract it came under.
    pub fn command_name<'t>(&self, topic: &'t str) -> Option<(Contract, &'t str)> {
        self.served.iter().find_map(|(contract, prefix)| {
            let name = topic
                .strip_prefix(prefix.as_str())?
                .strip_prefix("/commands/")?;
            Some((*contract, name))
        })
    }
}

/// Recognises a poison message: a row whose publish makes the broker close the connection,
/// every time it is sent.
///
/// A broker gives no reason on the wire for such a close under MQTT 3.1.1 (NATS refusing a
/// topic, a broker's own size or ACL limit), and a broker that is merely restarting closes
/// connections too. A drop therefore counts against a row only when the relay saw it as the
/// *suspect*: the broker had acknowledged something on that connection (so it was working),
/// and the row was the oldest publish written and not yet acknowledged when the connection
/// dropped. A row's count is forgotten once the broker acknowledges it. An innocent row caught
/// by a restart is suspect once, then acknowledged on the next connection; to reach the limit a
/// row must be the one the connection dies on, connection after connection. Counts are kept
/// per row, not only for the last suspect, because two poison rows of different keys take
/// turns at the head of the backlog while each waits for its retry.
#[derive(Debug, Default)]
pub struct PoisonWatch {
    counts: std::collections::HashMap<i64, u32>,
}

/// Rows counted at most; beyond it the counts start afresh (only rows replayed or
/// dead-lettered elsewhere in between are never acknowledged, so this is far off).
const SUSPECTS_KEPT: usize = 1024;

impl PoisonWatch {
    /// A drop with `row` as its suspect; how many drops it was suspect of, this one included.
    pub fn dropped_after(&mut self, row: i64) -> u32 {
        if self.counts.len() >= SUSPECTS_KEPT && !self.counts.contains_key(&row) {
            self.counts.clear();
        }
        let n = self.counts.entry(row).or_default();
        *n += 1;
        *n
    }

    /// These rows were acknowledged, or dealt with: their counts are dropped.
    pub fn forget(&mut self, rows: &[i64]) {
        if !self.counts.is_empty() {
            for row in rows {
                self.counts.remove(row);
            }
        }
    }
}

/// The dead letter reason of a poison message, from the last error seen.
pub fn poison_reason(times: u32, last_error: &str) -> String {
    format!(
        "the broker closed the connection after this publish {times} times (last: {last_error})"
    )
}

/// The dead letter reason of an event the broker refused with a PUBACK reason code.
pub fn refusal_reason(reason: &str) -> String {
    format!("the broker refused this publish: {reason}")
}

/// The CloudEvents attributes of an event (binary content mode, the MQTT 5 binding's user
/// properties), taken from the same row as its envelope: `ce_id` the envelope's `id`,
/// `ce_type` its `kind`, `ce_source` its `facility`, `ce_time` its `occurred_at`.
pub fn cloud_event_attributes(facility: &str, row: &OutboxRow) -> Vec<(String, String)> {
    vec![
        ("ce_specversion".into(), "1.0".into()),
        ("ce_id".into(), row.event_id().into()),
        ("ce_type".into(), row.kind().into()),
        ("ce_source".into(), facility.into()),
        (
            "ce_time".into(),
            String::from_utf8_lossy(&rfc3339_millis(row.occurred_at)).into_owned(),
        ),
    ]
}

/// A journal time as the envelope's `occurred_at`: RFC 3339, UTC, milliseconds
/// (`2026-12-04T09:30:00.123Z`), a time before 1970 as 1970's first millisecond and one after
/// 9999 as 9999's last (RFC 3339 has four-digit years). Written by hand (Howard Hinnant's
/// `civil_from_days`): humantime's formatter through `fmt` was a sixth of the envelope's work,
/// and failed beyond 9999. The tests hold it to humantime's output.
fn rfc3339_millis(ms: i64) -> [u8; 24] {
    const LAST: i64 = 253_402_300_799_999;
    let ms = ms.clamp(0, LAST);
    let (days, in_day) = (ms / 86_400_000, ms % 86_400_000);
    // Days from 0000-03-01, so that a leap day ends its year.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_based = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * march_based + 2) / 5 + 1;
    let month = if march_based < 10 {
        march_based + 3
    } else {
        march_based - 9
    };
    let year = era * 400 + year_of_era + i64::from(month <= 2);
    let mut out = *b"0000-00-00T00:00:00.000Z";
    for (at, width, value) in [
        (0, 4, year),
        (5, 2, month),
        (8, 2, day),
        (11, 2, in_day / 3_600_000),
        (14, 2, in_day / 60_000 % 60),
        (17, 2, in_day / 1_000 % 60),
        (20, 3, in_day % 1_000),
    ] {
        let mut v = value;
        for digit in out[at..at + width].iter_mut().rev() {
            *digit = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    out
}

/// The JSON envelopes of one facility's events, its name written as JSON once rather than for
/// every event.
pub struct Envelopes {
    facility: Vec<u8>,
}

impl Envelopes {
    pub fn new(facility: &str) -> Envelopes {
        let mut json = Vec::new();
        json_string(&mut json, facility);
        Envelopes { facility: json }
    }

    /// The envelope of an outbox row:
    /// `{"id","facility","kind","key","occurred_at","schema","payload"}`, in that order. A
    /// payload that is not JSON (every event for the cloud is today, but the journal holds other
    /// payloads too, an HL7 message for the MLLP sender) is sent as a JSON string rather than
    /// dropped.
    ///
    /// Written by hand rather than through a derived `Serialize`: it is built once per event on
    /// the relay's hot path, and strings without a character JSON must escape (ids, kinds,
    /// times: all of them in practice) are copied as they are.
    pub fn of(&self, row: &OutboxRow) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            160 + self.facility.len() + row.payload.len() + row.key().len() + row.schema().len(),
        );
        out.extend_from_slice(b"{\"id\":");
        json_string(&mut out, row.event_id());
        out.extend_from_slice(b",\"facility\":");
        out.extend_from_slice(&self.facility);
        out.extend_from_slice(b",\"kind\":");
        json_string(&mut out, row.kind());
        out.extend_from_slice(b",\"key\":");
        json_string(&mut out, row.key());
        out.extend_from_slice(b",\"occurred_at\":\"");
        out.extend_from_slice(&rfc3339_millis(row.occurred_at));
        out.extend_from_slice(b"\",\"schema\":");
        json_string(&mut out, row.schema());
        out.extend_from_slice(b",\"payload\":");
        match std::str::from_utf8(&row.payload)
            .ok()
            .filter(|text| serde_json::from_str::<&RawValue>(text).is_ok())
        {
            // Validated JSON goes in as it is, like a `RawValue`.
            Some(text) => out.extend_from_slice(text.trim().as_bytes()),
            None => json_string(&mut out, &String::from_utf8_lossy(&row.payload)),
        }
        out.push(b'}');
        out
    }
}

/// Appends `s` as a JSON string: copied as it is when nothing in it needs escaping.
fn json_string(out: &mut Vec<u8>, s: &str) {
    // Every byte is looked at, with no early exit, so that the check runs many bytes at a time.
    let escaped = s.bytes().fold(false, |any, b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if !escaped {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        // Writing a string into a Vec cannot fail; an empty string keeps the JSON whole.
        out.extend_from_slice(b"\"\"");
    }
}

/// A command from the cloud, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Put dead letters of `destination` back in line: one row, or all of them.
    DlqReplay {
        destination: String,
        id: Option<i64>,
    },
    /// Re-read the configuration file; an invalid one is refused and the old one kept.
    ReloadConfig,
    /// Take a room out of use (needs cleaning, out of service) or put it back in service.
    RoomState {
        room: String,
        hold: Option<crate::facility::Hold>,
        reason: Option<String>,
    },
    /// Stop an integration sending and receiving until an admin re-authorizes it: its peer
    /// reported a security problem.
    SuspendIntegration { integration: String, reason: String },
    /// Holds the command worker for `ms` milliseconds: a fault hook, compiled only for tests,
    /// that shows a slow command does not hold back the connection.
    #[cfg(feature = "fault-hooks")]
    Stall { ms: u64 },
}

/// A command with the request id its reply must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub name: String,
    pub request_id: String,
    pub command: Command,
}

/// Why a command was refused. The reply carries `request_id` when it could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub name: String,
    pub request_id: Option<String>,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DlqReplayArgs {
    request_id: String,
    destination: String,
    #[serde(default)]
    id: Option<i64>,
    #[serde(default)]
    all: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadArgs {
    request_id: String,
}

#[cfg(feature = "fault-hooks")]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StallArgs {
    request_id: String,
    ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomStateArgs {
    request_id: String,
    room: String,
    state: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SuspendArgs {
    request_id: String,
    integration: String,
    #[serde(default)]
    reason: Option<String>,
}

/// Largest command payload accepted; anything bigger is not a command of ours.
const MAX_COMMAND_BYTES: usize = 16 * 1024;

/// Parses and validates a command received on `commands/{name}`.
pub fn parse_command(name: &str, payload: &[u8]) -> Result<Request, Refusal> {
    let refuse = |request_id: Option<String>, message: String| Refusal {
        name: name.to_string(),
        request_id,
        message,
    };
    if payload.len() > MAX_COMMAND_BYTES {
        return Err(refuse(
            None,
            format!("payload larger than {MAX_COMMAND_BYTES} bytes"),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| refuse(None, format!("payload is not JSON: {e}")))?;
    let request_id = value
        .get("request_id")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let bad = |e: serde_json::Error| refuse(request_id.clone(), format!("invalid arguments: {e}"));
    let (request_id, command) = match name {
        "dlq-replay" => {
            let a: DlqReplayArgs = serde_json::from_value(value).map_err(bad)?;
            match (a.id, a.all) {
                (Some(_), true) => {
                    return Err(refuse(
                        Some(a.request_id),
                        "give either \"id\" or \"all\": true, not both".into(),
                    ));
                }
                (None, false) => {
                    return Err(refuse(
                        Some(a.request_id),
                        "give \"id\" (one dead letter) or \"all\": true".into(),
                    ));
                }
                _ => {}
            }
            if a.destination.is_empty() {
                return Err(refuse(
                    Some(a.request_id),
                    "\"destination\" must not be empty".into(),
                ));
            }
            (
                a.request_id,
                Command::DlqReplay {
                    destination: a.destination,
                    id: a.id,
                },
            )
        }
        "reload-config" => {
            let a: ReloadArgs = serde_json::from_value(value).map_err(bad)?;
            (a.request_id, Command::ReloadConfig)
        }
        "room-state" => {
            let a: RoomStateArgs = serde_json::from_value(value).map_err(bad)?;
            let hold = crate::facility::rules::parse_room_state(&a.state)
                .map_err(|e| refuse(Some(a.request_id.clone()), e))?;
            (
                a.request_id,
                Command::RoomState {
                    room: a.room,
                    hold,
                    reason: a.reason,
                },
            )
        }
        "suspend-integration" => {
            let a: SuspendArgs = serde_json::from_value(value).map_err(bad)?;
            if !crate::suspension::INTEGRATIONS.contains(&a.integration.as_str()) {
                return Err(refuse(
                    Some(a.request_id),
                    format!(
                        "\"integration\" must be one of {}",
                        crate::suspension::INTEGRATIONS.join(", ")
                    ),
                ));
            }
            let reason = a
                .reason
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(|| "a security problem reported by the cloud".into());
            if reason.len() > 256 {
                return Err(refuse(
                    Some(a.request_id),
                    "\"reason\" must be at most 256 bytes".into(),
                ));
            }
            (
                a.request_id,
                Command::SuspendIntegration {
                    integration: a.integration,
                    reason,
                },
            )
        }
        #[cfg(feature = "fault-hooks")]
        "fault-stall" => {
            let a: StallArgs = serde_json::from_value(value).map_err(bad)?;
            (a.request_id, Command::Stall { ms: a.ms })
        }
        other => return Err(refuse(request_id, format!("unknown command {other:?}"))),
    };
    if request_id.is_empty() || request_id.len() > 128 {
        return Err(refuse(
            None,
            "\"request_id\" must be 1 to 128 characters".into(),
        ));
    }
    Ok(Request {
        name: name.to_string(),
        request_id,
        command,
    })
}

/// The reply to a command.
pub fn reply(request_id: Option<&str>, result: Result<serde_json::Value, String>) -> Vec<u8> {
    let body = match result {
        Ok(detail) => serde_json::json!({ "request_id": request_id, "ok": true, "result": detail }),
        Err(error) => serde_json::json!({ "request_id": request_id, "ok": false, "error": error }),
    };
    body.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::RowTexts;

    fn check(name: &str, payload: &str) -> Result<Command, String> {
        parse_command(name, payload.as_bytes())
            .map(|r| r.command)
            .map_err(|e| e.message)
    }

    #[test]
    fn commands_are_validated() {
        assert_eq!(
            check(
                "dlq-replay",
                r#"{"request_id":"r1","destination":"cloud","id":4}"#
            ),
            Ok(Command::DlqReplay {
                destination: "cloud".into(),
                id: Some(4)
            })
        );
        assert_eq!(
            check(
                "dlq-replay",
                r#"{"request_id":"r1","destination":"cloud","all":true}"#
            ),
            Ok(Command::DlqReplay {
                destination: "cloud".into(),
                id: None
            })
        );
        assert_eq!(
            check("reload-config", r#"{"request_id":"r2"}"#),
            Ok(Command::ReloadConfig)
        );
        assert_eq!(
            check(
                "room-state",
                r#"{"request_id":"r3","room":"exam-1","state":"needs_cleaning","reason":"spill"}"#
            ),
            Ok(Command::RoomState {
                room: "exam-1".into(),
                hold: Some(crate::facility::Hold::NeedsCleaning),
                reason: Some("spill".into())
            })
        );
        assert_eq!(
            check(
                "suspend-integration",
                r#"{"request_id":"r4","integration":"hl7v2-sender","reason":"leaked key"}"#
            ),
            Ok(Command::SuspendIntegration {
                integration: "hl7v2-sender".into(),
                reason: "leaked key".into()
            })
        );
        assert!(
            check(
                "suspend-integration",
                r#"{"request_id":"r4","integration":"cloud-relay"}"#
            )
            .expect_err("the relay cannot be suspended")
            .contains("must be one of hl7v2-mllp, hl7v2-sender")
        );
        assert!(
            check(
                "room-state",
                r#"{"request_id":"r3","room":"exam-1","state":"dirty"}"#
            )
            .expect_err("unknown state")
            .contains("one of needs_cleaning, out_of_service, in_service")
        );
        let refused = [
            (
                "dlq-replay",
                r#"{"request_id":"r1","destination":"cloud"}"#,
                "give \"id\"",
            ),
            (
                "dlq-replay",
                r#"{"request_id":"r1","destination":"cloud","id":"x"}"#,
                "invalid arguments",
            ),
            (
                "dlq-replay",
                r#"{"request_id":"r1","destination":"cloud","all":true,"id":1}"#,
                "not both",
            ),
            (
                "reload-config",
                r#"{"request_id":"r2","force":true}"#,
                "unknown field",
            ),
            ("reload-config", r#"{}"#, "missing field"),
            ("reboot", r#"{"request_id":"r3"}"#, "unknown command"),
            ("reload-config", "\u{1}garbage", "not JSON"),
        ];
        for (name, payload, expected) in refused {
            let e = check(name, payload).expect_err(payload);
            assert!(e.contains(expected), "{payload}: {e}");
        }
        let e = parse_command("reboot", br#"{"request_id":"r3"}"#).expect_err("refused");
        assert_eq!(
            e.request_id.as_deref(),
            Some("r3"),
            "the reply names the request"
        );
    }

    #[test]
    fn envelope_carries_the_contract_fields() {
        let row = OutboxRow::new(
            1,
            1,
            RowTexts {
                key: "patient-7",
                event_id: "0190c7a8-0000-7000-8000-000000000001",
                kind: "gateway.started",
                schema: "clinic-gateway/gateway.started@1",
            },
            br#"{"version":"0.1.0"}"#.to_vec(),
            1_700_000_000_123,
        );
        let v: serde_json::Value =
            serde_json::from_slice(&Envelopes::new("clinic-1").of(&row)).expect("json");
        assert_eq!(
            v,
            serde_json::json!({
                "id": "0190c7a8-0000-7000-8000-000000000001",
                "facility": "clinic-1",
                "kind": "gateway.started",
                "key": "patient-7",
                "occurred_at": "2023-11-14T22:13:20.123Z",
                "schema": "clinic-gateway/gateway.started@1",
                "payload": {"version": "0.1.0"}
            })
        );
    }

    #[test]
    fn envelope_escapes_what_json_must_and_quotes_a_payload_that_is_not_json() {
        let row = OutboxRow::new(
            2,
            1,
            RowTexts {
                key: "queue:\"A\" \\ b\n",
                event_id: "e-2",
                kind: "test.seq",
                schema: "s@1",
            },
            b" {\"n\": [1, 2]} ".to_vec(),
            0,
        );
        let v: serde_json::Value =
            serde_json::from_slice(&Envelopes::new("clinic-1").of(&row)).expect("json");
        assert_eq!(v["key"], "queue:\"A\" \\ b\n");
        assert_eq!(v["payload"], serde_json::json!({ "n": [1, 2] }));
        assert_eq!(v["occurred_at"], "1970-01-01T00:00:00.000Z");
        let mut not_json = row.clone();
        not_json.payload = b"not {json".to_vec();
        let v: serde_json::Value =
            serde_json::from_slice(&Envelopes::new("clinic-1").of(&not_json)).expect("json");
        assert_eq!(v["payload"], "not {json");
    }

    #[test]
    fn times_read_as_humantime_writes_them_and_stay_within_rfc_3339() {
        let humantime = |ms: i64| {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
            humantime::format_rfc3339_millis(at).to_string()
        };
        let ours = |ms: i64| String::from_utf8(rfc3339_millis(ms).to_vec()).expect("ASCII");
        // Every day from 1970 to 2500 at a time that moves through the day, and the last
        // millisecond of each: month ends, leap days, the century years.
        for day in 0..(530 * 366) {
            let start = day * 86_400_000;
            for ms in [start + (day * 7_919_123) % 86_400_000, start + 86_399_999] {
                assert_eq!(ours(ms), humantime(ms), "{ms}");
            }
        }
        let mut ms: i64 = 1;
        for _ in 0..100_000 {
            ms = (ms.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1)) & 0xffff_ffff_ffff;
            let ms = ms % 253_402_300_800_000;
            assert_eq!(ours(ms), humantime(ms), "{ms}");
        }
        assert_eq!(ours(-5), "1970-01-01T00:00:00.000Z");
        assert_eq!(ours(253_402_300_800_000), "9999-12-31T23:59:59.999Z");
        assert_eq!(ours(i64::MAX), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn cloud_event_attributes_match_the_envelope() {
        let row = OutboxRow::new(
            1,
            1,
            RowTexts {
                key: "patient-7",
                event_id: "0190c7a8-0000-7000-8000-000000000001",
                kind: "queue.checked_in",
                schema: "clinic-gateway/queue.checked_in@1",
            },
            br#"{}"#.to_vec(),
            1_700_000_000_123,
        );
        let envelope: serde_json::Value =
            serde_json::from_slice(&Envelopes::new("clinic-1").of(&row)).expect("json");
        let attributes: std::collections::BTreeMap<String, String> =
            cloud_event_attributes("clinic-1", &row)
                .into_iter()
                .collect();
        assert_eq!(attributes["ce_specversion"], "1.0");
        for (attribute, field) in [
            ("ce_id", "id"),
            ("ce_type", "kind"),
            ("ce_source", "facility"),
            ("ce_time", "occurred_at"),
        ] {
            assert_eq!(
                attributes[attribute],
                envelope[field].as_str().expect(field)
            );
        }
    }

    #[test]
    fn drops_add_up_per_row_until_it_is_acknowledged() {
        let mut w = PoisonWatch::default();
        assert_eq!(w.dropped_after(7), 1);
        assert_eq!(w.dropped_after(9), 1);
        assert_eq!(w.dropped_after(7), 2, "poison rows of two keys take turns");
        w.forget(&[7]);
        assert_eq!(w.dropped_after(7), 1, "an acknowledged row starts afresh");
        assert_eq!(w.dropped_after(9), 2);
    }

    #[test]
    fn topics_follow_the_contract() {
        let t = Topics::new("clinic-1", 1, false);
        assert_eq!(
            t.events("gateway.started"),
            ["clinic/clinic-1/events/gateway.started"]
        );
        assert_eq!(t.status(), "clinic/clinic-1/status");
        assert_eq!(t.commands(), ["clinic/clinic-1/commands/+"]);
        assert_eq!(
            t.command_name("clinic/clinic-1/commands/dlq-replay"),
            Some((Contract::V1, "dlq-replay"))
        );
        assert_eq!(t.command_name("clinic/other/commands/dlq-replay"), None);
        assert_eq!(
            t.command_name("clinic/v2/clinic-1/commands/dlq-replay"),
            None
        );
    }

    #[test]
    fn contract_2_puts_the_kind_in_levels() {
        let t = Topics::new("clinic-1", 2, false);
        assert_eq!(
            t.events("queue.checked_in"),
            ["clinic/v2/clinic-1/events/queue/checked_in"]
        );
        assert_eq!(t.statuses(), ["clinic/v2/clinic-1/status"]);
        assert_eq!(
            t.command_name("clinic/v2/clinic-1/commands/reload-config"),
            Some((Contract::V2, "reload-config"))
        );
        assert_eq!(
            t.command_name("clinic/clinic-1/commands/reload-config"),
            None
        );
        assert_eq!(
            t.reply(Contract::V2, "reload-config"),
            "clinic/v2/clinic-1/replies/reload-config"
        );
    }

    #[test]
    fn the_migration_serves_both_contracts() {
        let t = Topics::new("clinic-1", 2, true);
        assert_eq!(
            t.events("gateway.started"),
            [
                "clinic/v2/clinic-1/events/gateway/started",
                "clinic/clinic-1/events/gateway.started"
            ]
        );
        assert_eq!(t.status(), "clinic/v2/clinic-1/status");
        assert_eq!(
            t.commands(),
            [
                "clinic/v2/clinic-1/commands/+",
                "clinic/clinic-1/commands/+"
            ]
        );
        let (contract, name) = t
            .command_name("clinic/clinic-1/commands/dlq-replay")
            .expect("a contract 1 command");
        assert_eq!(
            t.reply(contract, name),
            "clinic/clinic-1/replies/dlq-replay"
        );
    }
}
