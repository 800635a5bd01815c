//! One SMPP provider's connection: a task that connects, binds, keeps the link alive with
//! enquire_link, sends the deliverer's submit_sm within the provider's window and applies the
//! receipts that deliver_sm brings (committed before deliver_sm_resp answers them).
//!
//! A submit_sm answered `ESME_RTHROTTLED` or `ESME_RMSGQFUL`, or not answered before the
//! connection is lost, is "unavailable" (the outbox retries it, or the next provider takes it);
//! any other error status refuses the message.

use super::SendError;
use super::config::{SmppBind, SmppConfig};
use super::protocol::{self, Route};
use super::smpp::{self, BindKind, Pdu, command};
use super::store::ReceiptFor;
use crate::journal::{self, JournalWriter};
use actix::Addr;
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// A message for the link to submit, and where its answer goes.
struct Submit {
    destination: String,
    text: String,
    answer: oneshot::Sender<Result<Option<String>, SendError>>,
}

/// The deliverer's handle on an SMPP provider.
pub struct Smpp {
    submits: mpsc::Sender<Submit>,
    timeout: Duration,
    /// How long a message it took may wait for its receipt: its validity, when receipts come
    /// back on this bind.
    validity_ms: Option<i64>,
}

impl Smpp {
    /// Starts the provider's connection task on the current (local) runtime.
    pub fn start(
        name: &str,
        config: &SmppConfig,
        password: String,
        timeout: Duration,
        journal: Addr<JournalWriter>,
    ) -> Smpp {
        let (submits, rx) = mpsc::channel(config.window.max(1) as usize);
        let link = Link {
            name: name.to_string(),
            config: config.clone(),
            password,
            journal,
            sequence: 0,
        };
        tokio::task::spawn_local(link.run(rx));
        let validity_ms = (config.bind == SmppBind::Transceiver)
            .then(|| config.validity_s.saturating_mul(1000) as i64);
        Smpp {
            submits,
            timeout,
            validity_ms,
        }
    }

    /// After how long (ms) a message it took, with no receipt, can no longer be delivered;
    /// none for a transmitter bind, which never hears receipts.
    pub fn validity_ms(&self) -> Option<i64> {
        self.validity_ms
    }

    /// Submits `route`; answers the SMSC's message id.
    pub async fn send(&self, route: &Route) -> Result<Option<String>, SendError> {
        let (answer, rx) = oneshot::channel();
        let submit = Submit {
            destination: route.address.clone(),
            text: route.body.clone(),
            answer,
        };
        if self.submits.send(submit).await.is_err() {
            return Err(SendError::Unavailable("the SMPP link has stopped".into()));
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(SendError::Unavailable(
                "the SMPP link dropped the message".into(),
            )),
            Err(_) => Err(SendError::Unavailable("no submit_sm_resp in time".into())),
        }
    }
}

struct Link {
    name: String,
    config: SmppConfig,
    password: String,
    journal: Addr<JournalWriter>,
    sequence: u32,
}

/// Why a connection ended.
struct Lost(String);

impl Link {
    fn next(&mut self) -> u32 {
        // Sequence numbers run 1..=0x7FFFFFFF (section 3.2).
        self.sequence = self.sequence % 0x7FFF_FFFF + 1;
        self.sequence
    }

    async fn run(mut self, mut submits: mpsc::Receiver<Submit>) {
        let mut failures = 0u32;
        loop {
            let lost = match self.session(&mut submits).await {
                Ok(()) => return,
                Err(lost) => lost,
            };
            failures += 1;
            tracing::warn!(provider = %self.name, error = %lost.0, "SMPP link lost");
            // While the link is down every message is answered at once, so that the
            // deliverer moves on to the next provider instead of waiting.
            let delay = crate::supervisor::link::backoff(
                Duration::from_millis(200),
                Duration::from_secs(10),
                failures,
            );
            let until = tokio::time::Instant::now() + delay;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    s = submits.recv() => match s {
                        Some(s) => {
                            let _ = s.answer.send(Err(SendError::Unavailable(format!("SMPP link down: {}", lost.0))));
                        }
                        None => return,
                    },
                }
            }
        }
    }

    /// One connection: bind, then submits, receipts and enquire_links until it fails, or
    /// `Ok` once the deliverer is gone.
    async fn session(&mut self, submits: &mut mpsc::Receiver<Submit>) -> Result<(), Lost> {
        let addr = (self.config.host.as_str(), self.config.port);
        let mut stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| Lost("no connection within 10 s".into()))?
            .map_err(|e| Lost(format!("cannot connect: {e}")))?;
        let kind = match self.config.bind {
            SmppBind::Transceiver => BindKind::Transceiver,
            SmppBind::Transmitter => BindKind::Transmitter,
        };
        let seq = self.next();
        let bind = smpp::bind(
            kind,
            seq,
            &self.config.system_id,
            &self.password,
            &self.config.system_type,
        );
        stream.write_all(&bind).await.map_err(io)?;
        let mut buf = Vec::with_capacity(4096);
        match tokio::time::timeout(Duration::from_secs(10), read_pdu(&mut stream, &mut buf)).await {
            Ok(Ok(Pdu::BindResp(h))) if h.status == 0 => {}
            Ok(Ok(Pdu::BindResp(h))) => {
                return Err(Lost(format!("bind refused with status {:#x}", h.status)));
            }
            Ok(Ok(other)) => return Err(Lost(format!("answered the bind with {other:?}"))),
            Ok(Err(lost)) => return Err(lost),
            Err(_) => return Err(Lost("no bind answer within 10 s".into())),
        }
        tracing::info!(provider = %self.name, "SMPP link bound");
        let mut outstanding: HashMap<u32, oneshot::Sender<Result<Option<String>, SendError>>> =
            HashMap::new();
        let every = Duration::from_secs(self.config.enquire_link_s.max(1));
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        let mut unanswered_enquiry = false;
        let result = loop {
            let window_open = outstanding.len() < self.config.window.max(1) as usize;
            tokio::select! {
                s = submits.recv(), if window_open => {
                    let Some(s) = s else { break Ok(()) };
                    let seq = self.next();
                    let pdu = smpp::submit_sm(
                        seq,
                        &self.config.source,
                        &s.destination,
                        &s.text,
                        self.config.validity_s,
                    );
                    if let Err(e) = stream.write_all(&pdu).await {
                        let _ = s.answer.send(Err(SendError::Unavailable(format!("SMPP write failed: {e}"))));
                        break Err(io(e));
                    }
                    outstanding.insert(seq, s.answer);
                }
                pdu = read_pdu(&mut stream, &mut buf) => {
                    let pdu = match pdu { Ok(p) => p, Err(lost) => break Err(lost) };
                    if let Err(lost) = self.on_pdu(&mut stream, pdu, &mut outstanding, &mut unanswered_enquiry).await {
                        break Err(lost);
                    }
                }
                _ = tick.tick() => {
                    if unanswered_enquiry {
                        break Err(Lost("enquire_link not answered".into()));
                    }
                    unanswered_enquiry = true;
                    let seq = self.next();
                    if let Err(e) = stream.write_all(&smpp::request(command::ENQUIRE_LINK, seq)).await {
                        break Err(io(e));
                    }
                }
            }
        };
        // What was submitted but not answered may or may not have been taken: it is
        // retried, which may send it twice, rather than lost.
        for (_, answer) in outstanding.drain() {
            let _ = answer.send(Err(SendError::Unavailable(
                "the SMPP link was lost before the SMSC answered".into(),
            )));
        }
        if result.is_ok() {
            let seq = self.next();
            let _ = stream.write_all(&smpp::request(command::UNBIND, seq)).await;
        }
        result
    }

    async fn on_pdu(
        &mut self,
        stream: &mut TcpStream,
        pdu: Pdu,
        outstanding: &mut HashMap<u32, oneshot::Sender<Result<Option<String>, SendError>>>,
        unanswered_enquiry: &mut bool,
    ) -> Result<(), Lost> {
        match pdu {
            Pdu::SubmitResp(h, id) => {
                let Some(answer) = outstanding.remove(&h.sequence) else {
                    return Ok(());
                };
                let result = match h.status {
                    0 => Ok(Some(id)),
                    smpp::ESME_RTHROTTLED => Err(SendError::Unavailable("throttled (0x58)".into())),
                    smpp::ESME_RMSGQFUL => Err(SendError::Unavailable("queue full (0x14)".into())),
                    s => Err(SendError::Refused(format!(
                        "submit_sm refused with status {s:#x}"
                    ))),
                };
                let _ = answer.send(result);
            }
            Pdu::Deliver(h, receipt) => {
                if let Some(r) = receipt
                    && let Some(state) = protocol::receipt_stat(&r.stat)
                {
                    let apply = super::ApplyReceipt {
                        provider: self.name.clone(),
                        of: ReceiptFor::ProviderRef(r.message_id),
                        receipt: state,
                        minutes: None,
                    };
                    // Answered only once committed: an SMSC resends what it was not answered.
                    if let Err(e) = journal::ask(&self.journal, apply).await {
                        return Err(Lost(format!("receipt not committed: {e}")));
                    }
                }
                let resp = smpp::response(command::DELIVER_SM_RESP, 0, h.sequence);
                stream.write_all(&resp).await.map_err(io)?;
            }
            Pdu::EnquireLink(h) => {
                let resp = smpp::response(command::ENQUIRE_LINK_RESP, 0, h.sequence);
                stream.write_all(&resp).await.map_err(io)?;
            }
            Pdu::EnquireLinkResp(_) => *unanswered_enquiry = false,
            Pdu::Unbind(h) => {
                let resp = smpp::response(command::UNBIND_RESP, 0, h.sequence);
                let _ = stream.write_all(&resp).await;
                return Err(Lost("the SMSC unbound".into()));
            }
            Pdu::GenericNack(h) => {
                if let Some(answer) = outstanding.remove(&h.sequence) {
                    let _ = answer.send(Err(SendError::Unavailable(format!(
                        "generic_nack {:#x}",
                        h.status
                    ))));
                }
            }
            Pdu::BindResp(_) | Pdu::UnbindResp(_) => {}
            Pdu::Other(h) => {
                // 0x03: ESME_RINVCMDID, an unknown command.
                let nack = smpp::response(command::GENERIC_NACK, 0x03, h.sequence);
                stream.write_all(&nack).await.map_err(io)?;
            }
        }
        Ok(())
    }
}

fn io(e: std::io::Error) -> Lost {
    Lost(format!("SMPP connection: {e}"))
}

/// Reads the next whole PDU; bytes of a following one stay in `buf`.
async fn read_pdu(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Pdu, Lost> {
    loop {
        match smpp::decode(buf) {
            Ok(Some((pdu, used))) => {
                buf.drain(..used);
                return Ok(pdu);
            }
            Ok(None) => {}
            Err(e) => return Err(Lost(format!("undecodable PDU: {e}"))),
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(Lost("the SMSC closed the connection".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
