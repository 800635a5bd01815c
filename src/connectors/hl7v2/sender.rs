//! The outbound MLLP sender: delivers the journal's `ehr-mllp` outbox to the EHR's HL7
//! listener, one message at a time, in order, waiting for each ACK.
//!
//! AA (or CA) marks the row delivered; AE is retried with the destination's backoff; AR is the
//! receiver refusing the message itself, so it becomes a dead letter at once. No ACK in time, an
//! ACK for another control id, or a lost connection: the row is retried on a new connection.
//!
//! **Invariant:** a row is marked delivered only after an AA or CA naming its MSH-10.

use super::mllp::{self, Framer, Item};
use crate::journal::{self, Claim, Delivered, Failed, JournalWriter, OutboxRow};
use crate::supervisor::link::{self, Health};
use crate::supervisor::{HealthState, Running, Spawn, Supervisor};
use crate::suspension::IsSuspended;
use actix::prelude::*;
use serde::Deserialize;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

pub use super::DESTINATION;
/// The supervisor's name for the sender.
pub const NAME: &str = "hl7v2-sender";

/// `[connectors.hl7v2_out]`: where outbound HL7 v2 messages go.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SenderConfig {
    /// The EHR interface engine's MLLP host.
    pub host: String,
    pub port: u16,
    /// How long to wait for the ACK of one message.
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    /// First reconnect delay; doubles up to `reconnect_max_ms`.
    #[serde(default = "default_reconnect_initial_ms")]
    pub reconnect_initial_ms: u64,
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Tell the EHR when a patient is called from the queue: `"A04"` or `"A08"`; absent: not.
    #[serde(default)]
    pub on_call: Option<super::notice::CallTrigger>,
}

fn default_ack_timeout_ms() -> u64 {
    10_000
}
fn default_reconnect_initial_ms() -> u64 {
    500
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}

impl SenderConfig {
    pub fn validate(&self, bad: &mut dyn FnMut(&str, String)) {
        if self.host.trim().is_empty() {
            bad("connectors.hl7v2_out.host", "must not be empty".into());
        }
        if self.ack_timeout_ms < 100 {
            bad(
                "connectors.hl7v2_out.ack_timeout_ms",
                "must be at least 100".into(),
            );
        }
        if self.reconnect_initial_ms == 0 || self.reconnect_initial_ms > self.reconnect_max_ms {
            bad(
                "connectors.hl7v2_out.reconnect_initial_ms",
                "must be above 0 and at most reconnect_max_ms".into(),
            );
        }
    }
}

/// What the receiver's ACK said about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// AA or CA.
    Accepted,
    /// AE or CE: try again later.
    Error(String),
    /// AR or CR: the message itself is refused.
    Rejected(String),
    /// Not an ACK for this message: the peer cannot be trusted on this connection.
    Unexpected(String),
}

/// Reads an ACK frame against the control id that was sent.
pub fn verdict(ack: &[u8], control_id: &str) -> Verdict {
    let Ok(text) = std::str::from_utf8(ack) else {
        return Verdict::Unexpected("ACK is not UTF-8".into());
    };
    let Ok(m) = hl7_2::parse(text) else {
        return Verdict::Unexpected("ACK is not an HL7 message".into());
    };
    let field = |p: &str| m.get(p).ok().flatten().unwrap_or_default();
    let (code, answered) = (field("MSA-1"), field("MSA-2"));
    if answered != control_id {
        return Verdict::Unexpected(format!(
            "ACK names control id {answered:?}, sent {control_id:?}"
        ));
    }
    let why = || {
        let text = [field("ERR-8"), field("MSA-3"), field("ERR-1.4.2")]
            .into_iter()
            .find(|t| !t.is_empty());
        format!(
            "{code}: {}",
            text.unwrap_or_else(|| "no reason given".into())
        )
    };
    match code.as_str() {
        "AA" | "CA" => Verdict::Accepted,
        "AE" | "CE" => Verdict::Error(why()),
        "AR" | "CR" => Verdict::Rejected(why()),
        other => Verdict::Unexpected(format!("MSA-1 {other:?} is not an acknowledgment code")),
    }
}

/// The MSH-10 of an outbound message.
pub fn control_id(message: &[u8]) -> Option<String> {
    let m = hl7_2::parse(std::str::from_utf8(message).ok()?).ok()?;
    m.get("MSH-10").ok().flatten().filter(|id| !id.is_empty())
}

pub struct SenderSpawn {
    pub config: SenderConfig,
    pub journal: Addr<JournalWriter>,
}

impl Spawn for SenderSpawn {
    fn kind(&self) -> &'static str {
        "hl7v2-sender"
    }

    fn spawn(&self, name: &str, supervisor: Addr<Supervisor>) -> Box<dyn Running> {
        let (config, journal) = (self.config.clone(), self.journal.clone());
        // A message in flight stays in flight in the journal and is sent again at start.
        let (running, _) = link::start_actor(name, supervisor, Duration::ZERO, move |ctx| Sender {
            link: Some(Link {
                config,
                journal,
                health: ctx.health,
            }),
            shutdown: ctx.shutdown,
        });
        running
    }
}

/// The sender actor; its delivery loop runs in its arbiter.
pub struct Sender {
    link: Option<Link>,
    shutdown: watch::Receiver<bool>,
}

impl Actor for Sender {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(link) = self.link.take() {
            ctx.spawn(
                link.run(self.shutdown.clone())
                    .into_actor(self)
                    .map(|_, _, ctx| ctx.stop()),
            );
        }
    }
}

struct Link {
    config: SenderConfig,
    journal: Addr<JournalWriter>,
    health: Health,
}

/// Why a connection was given up.
struct Lost(String);

impl Link {
    fn report(&self, state: HealthState, error: Option<String>) {
        self.health.report(state, error);
    }

    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        // A message left in flight by an earlier run of this actor (one that panicked) goes
        // back in line; at start none can be in flight legitimately.
        journal::put_back_in_flight(
            &self.journal,
            DESTINATION,
            "the HL7 sender stopped while sending".into(),
        )
        .await;
        let mut failures = 0u32;
        loop {
            let addr = (self.config.host.as_str(), self.config.port);
            let lost = match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
                .await
            {
                Ok(Ok(stream)) => {
                    failures = 0;
                    self.report(HealthState::Healthy, None);
                    match self.deliver(stream, &mut shutdown).await {
                        Ok(()) => return,
                        Err(lost) => lost,
                    }
                }
                Ok(Err(e)) => Lost(format!(
                    "cannot connect to {}:{}: {e}",
                    self.config.host, self.config.port
                )),
                Err(_) => Lost(format!(
                    "no connection to {}:{} within 10 s",
                    self.config.host, self.config.port
                )),
            };
            failures += 1;
            tracing::warn!(error = %lost.0, "HL7 sender disconnected");
            self.report(HealthState::Degraded, Some(lost.0));
            let delay = link::backoff(
                Duration::from_millis(self.config.reconnect_initial_ms),
                Duration::from_millis(self.config.reconnect_max_ms),
                failures,
            );
            if link::stop_asked_during(&mut shutdown, delay).await {
                return;
            }
        }
    }

    /// Sends rows one by one on this connection until it fails or shutdown is asked.
    async fn deliver(
        &self,
        mut stream: TcpStream,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Lost> {
        let signal = journal::signal(&self.journal, DESTINATION).await;
        let mut framer = Framer::new(1 << 20);
        loop {
            if self.suspended().await {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
                continue;
            }
            let claim = Claim {
                destination: DESTINATION.into(),
                limit: 1,
            };
            let row = match journal::ask(&self.journal, claim).await {
                Ok(mut rows) => rows.pop(),
                Err(e) => {
                    tracing::error!(error = %e, "cannot claim outbound HL7 rows");
                    None
                }
            };
            let Some(row) = row else {
                tokio::select! {
                    _ = signal.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
                continue;
            };
            match self.send_one(&mut stream, &mut framer, &row).await {
                Ok(Verdict::Accepted) => self.settle_delivered(row.id).await,
                Ok(Verdict::Error(why)) => self.settle_failed(row.id, why, false).await,
                Ok(Verdict::Rejected(why)) => self.settle_failed(row.id, why, true).await,
                Ok(Verdict::Unexpected(why)) | Err(Lost(why)) => {
                    self.settle_failed(row.id, why.clone(), false).await;
                    return Err(Lost(why));
                }
            }
        }
    }

    /// Whether the integration is suspended, reported in its health; the rows wait in the
    /// outbox meanwhile. A journal that cannot answer counts as not suspended: the suspension
    /// is seen at the next message.
    async fn suspended(&self) -> bool {
        let ask = IsSuspended { name: NAME.into() };
        match journal::ask(&self.journal, ask).await {
            Ok(Some(reason)) => {
                self.report(HealthState::Suspended, Some(reason));
                true
            }
            Ok(None) => {
                self.report(HealthState::Healthy, None);
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "suspension not checked");
                false
            }
        }
    }

    async fn send_one(
        &self,
        stream: &mut TcpStream,
        framer: &mut Framer,
        row: &OutboxRow,
    ) -> Result<Verdict, Lost> {
        let Some(control) = control_id(&row.payload) else {
            return Ok(Verdict::Rejected(
                "outbound message has no readable MSH-10".into(),
            ));
        };
        stream
            .write_all(&mllp::frame(&row.payload))
            .await
            .map_err(|e| Lost(format!("send failed: {e}")))?;
        let wait = Duration::from_millis(self.config.ack_timeout_ms);
        let mut buf = vec![0u8; 16 * 1024];
        let read_ack = async {
            loop {
                let n = stream
                    .read(&mut buf)
                    .await
                    .map_err(|e| Lost(format!("read failed: {e}")))?;
                if n == 0 {
                    return Err(Lost(
                        "the receiver closed the connection before its ACK".into(),
                    ));
                }
                for item in framer.push(&buf[..n]) {
                    if let Item::Frame(ack) = item {
                        return Ok(verdict(&ack, &control));
                    }
                }
            }
        };
        let verdict = tokio::time::timeout(wait, read_ack).await.map_err(|_| {
            Lost(format!(
                "no ACK for {control} within {} ms",
                self.config.ack_timeout_ms
            ))
        })??;
        tracing::info!(control = %control, verdict = ?verdict, "outbound HL7 message answered");
        Ok(verdict)
    }

    async fn settle_delivered(&self, id: i64) {
        if let Err(e) = journal::ask(&self.journal, Delivered(vec![id])).await {
            tracing::error!(error = %e, "cannot mark an HL7 message delivered; it will be sent again");
        }
    }

    async fn settle_failed(&self, id: i64, error: String, permanent: bool) {
        let failed = Failed {
            destination: DESTINATION.into(),
            ids: Some(vec![id]),
            error,
            permanent,
        };
        if let Err(e) = journal::ask(&self.journal, failed).await {
            tracing::error!(error = %e, "cannot record a failed HL7 delivery");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_are_read_against_the_control_id() {
        let ack = |code: &str, id: &str, err: &str| {
            format!("MSH|^~\\&|EHR|H|GW|C|2026||ACK^A08|X1|P|2.5\rMSA|{code}|{id}{err}")
        };
        assert_eq!(
            verdict(ack("AA", "M1", "").as_bytes(), "M1"),
            Verdict::Accepted
        );
        assert_eq!(
            verdict(ack("CA", "M1", "").as_bytes(), "M1"),
            Verdict::Accepted
        );
        assert_eq!(
            verdict(
                ack("AE", "M1", "\rERR|||207|E||||database busy").as_bytes(),
                "M1"
            ),
            Verdict::Error("AE: database busy".into())
        );
        assert!(
            matches!(verdict(ack("AR", "M1", "|unknown patient").as_bytes(), "M1"), Verdict::Rejected(r) if r.contains("unknown patient"))
        );
        assert!(matches!(
            verdict(ack("AA", "OTHER", "").as_bytes(), "M1"),
            Verdict::Unexpected(_)
        ));
        assert!(matches!(verdict(b"garbage", "M1"), Verdict::Unexpected(_)));
        assert!(matches!(
            verdict(ack("ZZ", "M1", "").as_bytes(), "M1"),
            Verdict::Unexpected(_)
        ));
    }

    #[test]
    fn control_id_is_read_from_msh_10() {
        assert_eq!(
            control_id(b"MSH|^~\\&|A|B|C|D|2026||ADT^A08|OUT-7|P|2.5").as_deref(),
            Some("OUT-7")
        );
        assert_eq!(control_id(b"MSH|^~\\&|A|B|C|D|2026||ADT^A08||P|2.5"), None);
        assert_eq!(control_id(b"nope"), None);
    }
}
