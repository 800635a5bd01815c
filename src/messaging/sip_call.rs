//! One SIP provider's calls over UDP: INVITE with a G.711 offer, retransmitted until the
//! server answers (RFC 3261 timers A and B), the callee's ringing, its answer ACKed, the
//! notification kind's prompt played as RTP in 20 ms packets, then BYE. A call no one answers
//! in `timeout_ms` is cancelled.
//!
//! A call that was answered and played is delivered: SIP has no later receipt. Busy, declined
//! or unanswered calls are refused (the patient's next channel is tried); a server that does
//! not answer, or answers 5xx, is unavailable (the next provider is tried).

use super::SendError;
use super::config::SipConfig;
use super::protocol::Route;
use super::sip::{self, Dialog, Response};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// RFC 3261's T1: the first retransmission interval of a request over UDP.
const T1: Duration = Duration::from_millis(500);
/// Timer B: how long an INVITE (and F, a BYE) waits for any answer at all.
const TIMER_B: Duration = Duration::from_secs(32);

/// One SIP provider.
pub struct Sip {
    config: SipConfig,
    /// Each notification kind's prompt, G.711 µ-law samples.
    prompts: BTreeMap<String, Vec<u8>>,
    /// How long the callee's phone may ring.
    ring: Duration,
}

impl Sip {
    /// The provider with its prompts read.
    pub fn new(
        config: &SipConfig,
        ring: Duration,
        resolve: impl Fn(&Path) -> PathBuf,
    ) -> Result<Sip, String> {
        let mut prompts = BTreeMap::new();
        for (kind, file) in &config.prompts {
            let path = resolve(file);
            let samples = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            prompts.insert(kind.clone(), samples);
        }
        Ok(Sip {
            config: config.clone(),
            prompts,
            ring,
        })
    }

    /// Calls `route`'s number and plays `kind`'s prompt; answers the call's Call-ID.
    pub async fn call(&self, route: &Route, kind: &str) -> Result<Option<String>, SendError> {
        let prompt = self
            .prompts
            .get(kind)
            .ok_or_else(|| SendError::Refused(format!("no SIP prompt for {kind}")))?;
        let unavailable = |what: &str, e: std::io::Error| {
            SendError::Unavailable(format!("SIP {what}: {}", e.kind()))
        };
        let remote = tokio::net::lookup_host((self.config.host.as_str(), self.config.port))
            .await
            .map_err(|e| unavailable("server address", e))?
            .next()
            .ok_or_else(|| SendError::Unavailable("SIP server address unknown".into()))?;
        let any: SocketAddr = if remote.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let signalling = UdpSocket::bind(any)
            .await
            .map_err(|e| unavailable("socket", e))?;
        signalling
            .connect(remote)
            .await
            .map_err(|e| unavailable("route to the server", e))?;
        let local = signalling
            .local_addr()
            .map_err(|e| unavailable("socket", e))?;
        let media = UdpSocket::bind((local.ip(), 0))
            .await
            .map_err(|e| unavailable("RTP socket", e))?;
        let rtp_port = media
            .local_addr()
            .map_err(|e| unavailable("RTP socket", e))?
            .port();
        let mut call = Call {
            socket: signalling,
            dialog: Dialog {
                target: format!(
                    "{}@{}:{}",
                    route.address, self.config.host, self.config.port
                ),
                from_user: self.config.from_user.clone(),
                local: local.to_string(),
                call_id: format!("{:016x}@clinic-gateway", rand::random::<u64>()),
                from_tag: format!("{:08x}", rand::random::<u32>()),
                to_tag: None,
            },
        };
        let invite_branch = branch();
        let offer = sip::offer(
            &local.ip().to_string(),
            rtp_port,
            rand::random::<u32>() >> 1,
        );
        let answer = call
            .invite(
                &invite_branch,
                &call.dialog.invite(&invite_branch, &offer),
                self.ring,
            )
            .await?;
        call.dialog.to_tag = answer.to_tag().map(str::to_string);
        if !(200..300).contains(&answer.status) {
            // A failure is ACKed in the INVITE's own transaction.
            call.send(&call.dialog.ack(&invite_branch)).await?;
            let why = format!("SIP {} {}", answer.status, answer.reason);
            return Err(match answer.status {
                500..=599 => SendError::Unavailable(why),
                _ => SendError::Refused(why),
            });
        }
        call.send(&call.dialog.ack(&branch())).await?;
        let Some((ip, port)) = sip::sdp_audio(&answer.body) else {
            call.bye().await;
            return Err(SendError::Refused(
                "the answer names no audio address".into(),
            ));
        };
        let to: SocketAddr = match ip.parse::<std::net::IpAddr>() {
            Ok(ip) => (ip, port).into(),
            Err(_) => {
                call.bye().await;
                return Err(SendError::Refused(
                    "the answer's audio address is not an IP address".into(),
                ));
            }
        };
        play(&media, to, prompt).await;
        call.bye().await;
        Ok(Some(call.dialog.call_id))
    }
}

/// A new transaction's branch, with RFC 3261's magic cookie.
fn branch() -> String {
    format!("z9hG4bK{:016x}", rand::random::<u64>())
}

/// Sends `prompt` to `to` as RTP, one 20 ms packet every 20 ms.
async fn play(media: &UdpSocket, to: SocketAddr, prompt: &[u8]) {
    let ssrc = rand::random::<u32>();
    let sequence0 = rand::random::<u16>();
    let timestamp0 = rand::random::<u32>();
    let start = Instant::now();
    for (i, frame) in prompt.chunks(sip::FRAME).enumerate() {
        tokio::time::sleep_until(start + Duration::from_millis(20 * i as u64)).await;
        let packet = sip::rtp_packet(
            sequence0.wrapping_add(i as u16),
            timestamp0.wrapping_add((i * sip::FRAME) as u32),
            ssrc,
            i == 0,
            frame,
        );
        // A lost packet is a gap in the prompt, not a reason to stop the call.
        if let Err(e) = media.send_to(&packet, to).await {
            tracing::warn!(error = %e.kind(), "RTP packet not sent");
        }
    }
}

/// A call in progress: its dialog and signalling socket.
struct Call {
    socket: UdpSocket,
    dialog: Dialog,
}

impl Call {
    async fn send(&self, message: &str) -> Result<(), SendError> {
        self.socket
            .send(message.as_bytes())
            .await
            .map(|_| ())
            .map_err(|e| SendError::Unavailable(format!("SIP send: {}", e.kind())))
    }

    /// The next response of the transaction `branch`, or `None` at `until`; other datagrams
    /// are passed over. An error is the socket's (the server's port is closed: ICMP).
    async fn response(
        &self,
        branch: &str,
        until: Instant,
    ) -> Result<Option<Response>, std::io::Error> {
        let mut buf = vec![0u8; 65_535];
        loop {
            let Ok(received) = tokio::time::timeout_at(until, self.socket.recv(&mut buf)).await
            else {
                return Ok(None);
            };
            let n = received?;
            match sip::parse_response(&buf[..n]) {
                Ok(r) if r.branch() == Some(branch) => return Ok(Some(r)),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "SIP datagram passed over"),
            }
        }
    }

    /// Sends the INVITE and answers its final response: retransmitted until anything answers
    /// (timer B), then waited for while the phone rings for at most `ring`, cancelled after.
    async fn invite(
        &mut self,
        branch: &str,
        invite: &str,
        ring: Duration,
    ) -> Result<Response, SendError> {
        let started = Instant::now();
        let mut interval = T1;
        let mut ringing_since: Option<Instant> = None;
        self.send(invite).await?;
        loop {
            let until = match ringing_since {
                None => (Instant::now() + interval).min(started + TIMER_B),
                Some(at) => at + ring,
            };
            let answered = self.response(branch, until).await.map_err(|e| {
                SendError::Unavailable(format!("SIP server unreachable: {}", e.kind()))
            })?;
            match answered {
                Some(r) if r.status >= 200 && r.cseq_method() == Some("INVITE") => return Ok(r),
                Some(_) => {
                    ringing_since.get_or_insert_with(Instant::now);
                }
                None if ringing_since.is_some() => {
                    return Err(self.cancel(branch).await);
                }
                None if Instant::now() >= started + TIMER_B => {
                    return Err(SendError::Unavailable(
                        "the SIP server did not answer the INVITE".into(),
                    ));
                }
                None => {
                    self.send(invite).await?;
                    interval = (interval * 2).min(Duration::from_secs(4));
                }
            }
        }
    }

    /// Cancels an INVITE no one answered (section 9.1); the 487 that ends it is ACKed.
    async fn cancel(&mut self, branch: &str) -> SendError {
        let _ = self.send(&self.dialog.cancel(branch)).await;
        let until = Instant::now() + 4 * T1;
        while let Ok(Some(r)) = self.response(branch, until).await {
            if r.cseq_method() == Some("INVITE") && r.status >= 300 {
                self.dialog.to_tag = r.to_tag().map(str::to_string);
                let _ = self.send(&self.dialog.ack(branch)).await;
                break;
            }
        }
        SendError::Refused("the call was not answered".into())
    }

    /// Ends the call; its 200 is waited for with retransmissions (timer E), but the call
    /// was made whatever the server answers.
    async fn bye(&self) {
        let branch = branch();
        let bye = self.dialog.bye(&branch);
        let until = Instant::now() + TIMER_B;
        let mut interval = T1;
        while Instant::now() < until {
            if self.send(&bye).await.is_err() {
                return;
            }
            let next = (Instant::now() + interval).min(until);
            match self.response(&branch, next).await {
                Ok(Some(r)) if r.status >= 200 => return,
                Ok(_) => {}
                Err(_) => return,
            }
            interval = (interval * 2).min(Duration::from_secs(4));
        }
        tracing::warn!("SIP BYE not answered");
    }
}
