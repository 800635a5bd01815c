//! The HL7 v2 MLLP listener: EHR, lab and pharmacy systems send messages here.
//!
//! Each connection is read through the MLLP [`mllp::Framer`]; each message is decided on by
//! [`protocol::decide`], committed to the journal with its MSH-10 as the idempotency id and its
//! AA as the stored reply, and only then answered. A resend of a committed MSH-10 from the same
//! sender gets the stored ACK back, byte for byte, and is not processed again.
//!
//! With `[connectors.hl7v2.tls]` the connection is TLS, with client certificates when a
//! client CA is configured (IHE ATNA node authentication). With `[[connectors.hl7v2.allow]]`
//! each message's sender (certificate subject, source address, MSH-3, MSH-4) must match an
//! entry; a refused message is audited, neither committed nor answered, and its connection
//! closed.
//!
//! **Invariant:** an AA leaves only after the journal committed the message.
//! **Invariant:** a message from a sender the allow-list refuses gets no answer at all.
//! **Invariant:** logs carry control ids, types and senders, never message content.

pub mod config;
pub mod mapping;
pub mod mllp;
pub mod notice;
pub mod protocol;
pub mod sender;
pub mod tls;

/// The outbox destination of the HL7 messages the gateway sends to the EHR (the sender
/// delivers it; notices and web actions address it).
pub const DESTINATION: &str = "ehr-mllp";

use crate::journal::{self, AuditRecord, JournalWriter};
use crate::supervisor::link::{self, Health};
use crate::supervisor::{HealthState, Running, Spawn, Supervisor};
use crate::suspension::protocol::RefusalWindow;
use crate::suspension::{IsSuspended, Suspend};
use actix::prelude::*;
use config::Hl7Config;
use mllp::{Framer, Item};
use protocol::{Decision, Identity, Sender};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// The supervisor's name for the listener.
pub const NAME: &str = "hl7v2-mllp";

pub struct Hl7Spawn {
    pub config: Hl7Config,
    pub journal: Addr<JournalWriter>,
}

impl Spawn for Hl7Spawn {
    fn kind(&self) -> &'static str {
        "hl7v2-listener"
    }

    fn spawn(&self, name: &str, supervisor: Addr<Supervisor>) -> Box<dyn Running> {
        let (config, journal) = (Arc::new(self.config.clone()), self.journal.clone());
        // Connections are cut; a message committed but not yet answered is answered from the
        // journal when its sender resends it.
        let (running, _) =
            link::start_actor(name, supervisor, Duration::ZERO, move |link| Listener {
                config,
                journal,
                health: link.health,
                shutdown: link.shutdown,
            });
        running
    }
}

/// The listener actor; accepting and serving run as tasks in its arbiter.
pub struct Listener {
    config: Arc<Hl7Config>,
    journal: Addr<JournalWriter>,
    health: Health,
    shutdown: watch::Receiver<bool>,
}

impl Actor for Listener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let config = self.config.clone();
        let journal = self.journal.clone();
        let health = self.health.clone();
        let mut shutdown = self.shutdown.clone();
        ctx.spawn(
            async move {
                let acceptor = match config.tls.as_ref().map(tls::server_config).transpose() {
                    Ok(a) => a.map(tokio_rustls::TlsAcceptor::from),
                    Err(e) => {
                        health.exit(format!("connectors.hl7v2.tls: {e}"));
                        return;
                    }
                };
                let listener = match TcpListener::bind(config.listen).await {
                    Ok(l) => l,
                    Err(e) => {
                        let error = format!(
                            "cannot listen on connectors.hl7v2.listen {}: {e}",
                            config.listen
                        );
                        health.exit(error);
                        return;
                    }
                };
                tracing::info!(listen = %config.listen, tls = acceptor.is_some(), "HL7 v2 MLLP listener ready");
                health.report(HealthState::Healthy, None);
                let slots = Arc::new(Semaphore::new(config.max_connections));
                let tripwire = Tripwire::new(&config, &journal, &health);
                loop {
                    let permit = tokio::select! {
                        p = slots.clone().acquire_owned() => p,
                        _ = shutdown.changed() => return,
                    };
                    let Ok(permit) = permit else { return };
                    let accepted = tokio::select! {
                        a = listener.accept() => a,
                        _ = shutdown.changed() => return,
                    };
                    match accepted {
                        Ok((stream, peer)) => {
                            if let Some(reason) = suspended(&journal).await {
                                health.report(HealthState::Suspended, Some(reason));
                                tracing::warn!(%peer, "MLLP listener suspended; connection closed");
                                drop(stream);
                                continue;
                            }
                            health.report(HealthState::Healthy, None);
                            let (config, journal) = (config.clone(), journal.clone());
                            let (acceptor, tripwire) = (acceptor.clone(), tripwire.clone());
                            actix::spawn(async move {
                                match acceptor {
                                    Some(acceptor) => {
                                        serve_tls(acceptor, stream, peer, &config, &journal, &tripwire).await
                                    }
                                    None => {
                                        serve(stream, peer, None, &config, &journal, &tripwire)
                                            .await
                                    }
                                }
                                drop(permit);
                            });
                        }
                        Err(e) => tracing::warn!(error = %e, "MLLP accept failed"),
                    }
                }
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        );
    }
}

/// Counts the listener's refused senders and suspends it when `suspend_after_refusals` of
/// them come within `refusal_window_s`.
#[derive(Clone)]
struct Tripwire {
    window: Option<Arc<Mutex<RefusalWindow>>>,
    started: Instant,
    journal: Addr<JournalWriter>,
    health: Health,
}

impl Tripwire {
    fn new(config: &Hl7Config, journal: &Addr<JournalWriter>, health: &Health) -> Tripwire {
        let window_ms = config
            .refusal_window_s
            .saturating_mul(1000)
            .min(i64::MAX as u64) as i64;
        Tripwire {
            window: config
                .suspend_after_refusals
                .map(|n| Arc::new(Mutex::new(RefusalWindow::new(n, window_ms)))),
            started: Instant::now(),
            journal: journal.clone(),
            health: health.clone(),
        }
    }

    fn refused(&self) {
        let Some(window) = &self.window else { return };
        let now = self.started.elapsed().as_millis().min(i64::MAX as u128) as i64;
        // A poisoned lock only means a connection task panicked mid-count; the times kept are
        // whole.
        let tripped = window
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .refused(now);
        if tripped {
            let reason = "refused senders came faster than connectors.hl7v2.suspend_after_refusals";
            self.health
                .report(HealthState::Suspended, Some(reason.into()));
            self.journal.do_send(Suspend {
                name: NAME.into(),
                reason: reason.into(),
                by: NAME.into(),
            });
        }
    }
}

/// Why the listener is suspended, if it is; a journal that cannot answer counts as not
/// suspended, as it would refuse the message's commit anyway.
async fn suspended(journal: &Addr<JournalWriter>) -> Option<String> {
    let ask = IsSuspended { name: NAME.into() };
    journal::ask(journal, ask).await.ok().flatten()
}

/// `YYYYMMDDHHMMSS` in UTC, for MSH-7 of our ACKs.
fn hl7_timestamp() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .chars()
        .filter(char::is_ascii_digit)
        .collect()
}

/// A control id for our ACK: unique per answer, at most 20 characters (ST in v2.3).
fn ack_id() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    id[id.len() - 20..].to_string()
}

/// Completes the TLS handshake (bounded by the idle timeout, so that a silent client does not
/// hold a connection slot), then serves the connection.
async fn serve_tls(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    config: &Hl7Config,
    journal: &Addr<JournalWriter>,
    tripwire: &Tripwire,
) {
    let idle = Duration::from_secs(config.idle_timeout_s);
    let stream = match tokio::time::timeout(idle, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "MLLP TLS handshake refused");
            tripwire.refused();
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "MLLP TLS handshake timed out");
            return;
        }
    };
    let subject = tls::subject(stream.get_ref().1);
    serve(stream, peer, subject, config, journal, tripwire).await;
}

/// Serves one connection; `subject` is the CN of the client certificate, if any.
async fn serve(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    peer: SocketAddr,
    subject: Option<String>,
    config: &Hl7Config,
    journal: &Addr<JournalWriter>,
    tripwire: &Tripwire,
) {
    tracing::info!(%peer, subject = subject.as_deref().unwrap_or(""), "MLLP connection");
    if !protocol::connection_allowed(&config.allow, peer.ip(), subject.as_deref()) {
        let sender = Sender {
            ip: peer.ip(),
            subject,
            application: String::new(),
            facility: String::new(),
            control_id: String::new(),
        };
        refuse(&sender, peer, journal, tripwire);
        return;
    }
    let me = Identity {
        application: &config.application,
        facility: "",
    };
    let mut framer = Framer::new(config.max_frame_bytes);
    let mut buf = vec![0u8; 64 * 1024];
    let idle = Duration::from_secs(config.idle_timeout_s);
    loop {
        let n = match tokio::time::timeout(idle, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                tracing::info!(%peer, error = %e, "MLLP connection failed");
                break;
            }
        };
        for item in framer.push(&buf[..n]) {
            let answer = match item {
                Item::Oversized { bytes } => {
                    let reason = format!(
                        "message of {bytes} bytes exceeds connectors.hl7v2.max_frame_bytes"
                    );
                    tracing::warn!(%peer, bytes, "HL7 message too large; answered AR");
                    protocol::ack(None, &me, &hl7_timestamp(), &ack_id(), "AR", Some(&reason))
                        .into_bytes()
                }
                Item::Frame(frame) => {
                    let sender = Sender::of(&frame, peer.ip(), subject.clone());
                    if !sender.allowed(&config.allow) {
                        refuse(&sender, peer, journal, tripwire);
                        return;
                    }
                    // A connection open when the integration was suspended takes nothing
                    // more: closed unanswered, its sender keeps the message and resends later.
                    if suspended(journal).await.is_some() {
                        tracing::warn!(%peer, "MLLP listener suspended; connection closed");
                        return;
                    }
                    answer(&frame, peer, &me, config, journal).await
                }
            };
            if let Err(e) = stream.write_all(&mllp::frame(&answer)).await {
                tracing::info!(%peer, error = %e, "MLLP connection lost before the ACK; the sender will resend");
                return;
            }
        }
    }
    if framer.stray_bytes > 0 {
        tracing::warn!(%peer, bytes = framer.stray_bytes, "bytes outside MLLP frames were skipped");
    }
}

/// Logs (without PHI) and audits a sender the allow-list does not name; the MSH fields are
/// empty when the connection itself was refused.
fn refuse(sender: &Sender, peer: SocketAddr, journal: &Addr<JournalWriter>, tripwire: &Tripwire) {
    tripwire.refused();
    tracing::warn!(
        %peer,
        subject = sender.subject.as_deref().unwrap_or(""),
        control = %sender.control_id,
        sending_application = %sender.application,
        sending_facility = %sender.facility,
        "HL7 sender not on the allow-list; nothing acknowledged, connection closed"
    );
    journal.do_send(AuditRecord {
        actor: NAME.into(),
        action: "hl7v2.sender_refused".into(),
        detail: serde_json::json!({
            "peer": peer.to_string(),
            "subject": sender.subject,
            "control_id": sender.control_id,
            "sending_application": sender.application,
            "sending_facility": sender.facility,
        })
        .to_string(),
    });
}

/// The ACK for one frame: AA only once committed; the stored ACK for a resend.
async fn answer(
    frame: &[u8],
    peer: SocketAddr,
    me: &Identity<'_>,
    config: &Hl7Config,
    journal: &Addr<JournalWriter>,
) -> Vec<u8> {
    let (timestamp, ack_id) = (hl7_timestamp(), ack_id());
    // Today is taken when the message arrives: an appointment is due on the clinic's day of
    // its arrival, not of a later resend (which is not applied again anyway).
    let schedule = config
        .appointments
        .as_ref()
        .map(|a| a.schedule(journal::now_ms()));
    match protocol::decide(frame, me, &timestamp, &ack_id, schedule.as_ref()) {
        Decision::Reject { ack, reason } => {
            tracing::warn!(%peer, %reason, "HL7 message refused");
            ack
        }
        Decision::Accept(inbound) => {
            let (kind, control) = (
                inbound.item.kind.clone(),
                inbound.item.source_id.clone().unwrap_or_default(),
            );
            match journal::ask(journal, *inbound).await {
                Ok(receipt) => {
                    tracing::info!(%peer, %kind, %control, duplicate = receipt.duplicate, "HL7 message committed");
                    #[cfg(feature = "fault-hooks")]
                    hold_ack(&control, receipt.duplicate).await;
                    receipt.reply.unwrap_or_default()
                }
                Err(e) => {
                    tracing::warn!(%peer, %kind, %control, error = %e, "HL7 message not stored; answered AE");
                    let reason = format!("not stored, send again later: {e}");
                    let parsed = std::str::from_utf8(frame)
                        .ok()
                        .and_then(|t| hl7_2::parse(t).ok());
                    protocol::ack(
                        parsed.as_ref(),
                        me,
                        &timestamp,
                        &ack_id,
                        "AE",
                        Some(&reason),
                    )
                    .into_bytes()
                }
            }
        }
    }
}

/// Fault injection for the tests (`fault-hooks` builds only): the first commit of the control
/// id named by `CLINIC_GATEWAY_FAULT_HOLD_ACK` is never answered, so that a test can kill the
/// daemon between the commit and the ACK; its resend (a duplicate) is answered as usual.
#[cfg(feature = "fault-hooks")]
async fn hold_ack(control: &str, duplicate: bool) {
    let held = std::env::var("CLINIC_GATEWAY_FAULT_HOLD_ACK").is_ok_and(|c| c == control);
    if held && !duplicate {
        tracing::warn!(%control, "fault hook: ACK held after the commit");
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_ids_fit_st_and_timestamps_are_digits() {
        let id = ack_id();
        assert_eq!(id.len(), 20);
        assert_ne!(id, ack_id());
        let ts = hl7_timestamp();
        assert_eq!(ts.len(), 14, "{ts}");
        assert!(ts.starts_with("20"));
    }
}
