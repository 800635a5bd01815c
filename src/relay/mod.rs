//! The cloud relay: publishes the journal's `cloud` outbox to the cloud broker over MQTT (TLS,
//! optionally mutual) and takes commands from it.
//!
//! Each connection is a fresh rumqttc client, MQTT 3.1.1 or 5 behind the seam in [`mqtt`]; only
//! with MQTT 5 and a session expiry does the broker resume its side of the session (the command
//! subscription and the commands queued for it), never the events. Rows are claimed from the
//! journal in order, up to a window of unacknowledged publishes, and marked delivered only on
//! their PUBACK; a PUBACK refusing one (MQTT 5 reason code) dead-letters it. When the
//! connection drops, every row still in flight goes back to the journal, only the one it
//! dropped on counting an attempt, and is sent again, in key order, on the next connection;
//! rumqttc's own resend queue is not used, so the journal stays the only source of truth.
//!
//! Cloud commands are kept in the journal before their PUBACK and carried out one at a time, in
//! the order received, by a worker task beside the connection ([`commands`]): a slow command (a
//! reload that restarts children, a large replay) never holds back PUBACKs or publishes. Each
//! reply is kept, sent again until the broker acknowledges it, and given to a command sent again
//! under its `request_id` rather than running it twice.
//!
//! **Invariant:** a row is marked delivered only after the broker's PUBACK for it.

mod commands;
pub mod config;
pub mod mqtt;
pub mod protocol;
pub mod store;
pub mod tls;

use crate::journal::{self, Claim, Delivered, Failed, JournalWriter, OutboxRow};
use crate::metrics::METRICS;
use crate::reload::ReloadConfig;
use crate::supervisor::link::{self, Health};
use crate::supervisor::{HealthState, Running, Spawn, Supervisor};
use actix::prelude::*;
use commands::Commands;
use config::{Protocol, RelayConfig};
use mqtt::{Connection, Happened};
use protocol::Topics;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Connection events taken at most per turn of the session's select, so that claims, delivered
/// marks and replies get their turn during a long run of PUBACKs.
const BURST: usize = 64;

/// Rows claimed ahead, in windows: those past the window wait in rumqttc's request queue, so
/// that the next claim's round trip to the writer (a commit) runs while the window is still
/// full instead of after it drained.
const AHEAD: usize = 2;

/// How long acknowledged rows wait for more before they are marked delivered while the window
/// is busy. Each mark is a commit and an fsync: marking whatever arrived during the previous
/// commit made batches of about fifty rows at full speed, some 1 500 fsyncs a second. A mark
/// that waits is no risk: a row acknowledged but not yet marked is only sent again.
const SETTLE_WAIT: Duration = Duration::from_millis(20);

/// What the connection already holds, if anything; `None` if polling would wait (the poll is
/// then dropped, as `select!` drops the branches that lose, and made afresh on the next turn).
/// The poll is made in place: it is kilobytes, and handing it to a helper by value copied it
/// for every event.
fn ready(el: &mut Connection) -> Option<Result<Happened, mqtt::Lost>> {
    let poll = std::pin::pin!(el.poll());
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match poll.poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

/// How often the client certificate's file is looked at for a renewal: a stat, cheap, and a
/// renewal is days ahead of the old certificate's expiry.
const RENEWAL_CHECK: Duration = Duration::from_secs(2);

/// Everything a relay needs, fixed for the life of one relay actor.
#[derive(Clone)]
pub struct RelaySpawn {
    pub config: RelayConfig,
    pub facility: String,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub password: Option<String>,
    pub journal: Addr<JournalWriter>,
    pub control: Option<Recipient<ReloadConfig>>,
    /// The facility rules, for `room-state` commands.
    pub rooms: crate::facility::FacilitySlot,
}

impl Spawn for RelaySpawn {
    fn kind(&self) -> &'static str {
        "cloud-relay"
    }

    fn spawn(&self, name: &str, supervisor: Addr<Supervisor>) -> Box<dyn Running> {
        let spawn = self.clone();
        // Publishing "offline" and waiting for the last PUBACKs is bounded inside the relay.
        let grace = Duration::from_secs(6);
        let (running, _) = link::start_actor(name, supervisor, grace, move |link| Relay {
            spawn,
            health: link.health,
            shutdown: Some(link.shutdown),
        });
        running
    }
}

/// The relay actor; its work is one long-running task in its own arbiter (thread).
pub struct Relay {
    spawn: RelaySpawn,
    health: Health,
    shutdown: Option<watch::Receiver<bool>>,
}

impl Actor for Relay {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(shutdown) = self.shutdown.take() else {
            return;
        };
        let link = Link {
            spawn: self.spawn.clone(),
            topics: Topics::new(
                &self.spawn.facility,
                self.spawn.config.contract,
                self.spawn.config.serve_contract_1,
            ),
            envelopes: protocol::Envelopes::new(&self.spawn.facility),
            health: self.health.clone(),
        };
        ctx.spawn(
            link.run(shutdown)
                .into_actor(self)
                .map(|_, _, ctx| ctx.stop()),
        );
    }
}

/// How one connection ended.
enum SessionEnd {
    /// Asked to stop; "offline" was published and the connection closed cleanly.
    Shutdown,
    /// The connection failed or was lost, with the reason.
    Lost(String),
    /// The broker dropped the connection while `unacked` was the oldest row written and not
    /// acknowledged; `suspect` when it had acknowledged something on it, so that the drop
    /// counts against the row (see [`protocol::PoisonWatch`]).
    Dropped {
        error: String,
        unacked: i64,
        suspect: bool,
    },
}

struct Link {
    spawn: RelaySpawn,
    topics: Topics,
    envelopes: protocol::Envelopes,
    health: Health,
}

/// A journal request under way.
type Pending<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, journal::JournalError>>>>;

/// Resolves with the request's answer; never, when none is under way.
async fn wait<T>(pending: &mut Option<Pending<T>>) -> Result<T, journal::JournalError> {
    match pending {
        Some(p) => p.await,
        None => std::future::pending().await,
    }
}

impl Link {
    fn report(&self, state: HealthState, error: Option<String>) {
        self.health.report(state, error);
    }

    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let cfg = &self.spawn.config;
        // Rows left in flight by an earlier run of this actor (one that panicked) go back in
        // line; at start none can be in flight legitimately.
        journal::put_back_in_flight(
            &self.spawn.journal,
            crate::CLOUD,
            "the relay stopped before their PUBACK".into(),
        )
        .await;
        let mut failures = 0u32;
        let mut poison = protocol::PoisonWatch::default();
        let brokers = cfg.brokers();
        let mut broker = 0;
        let mut commands = Commands::start(&self.spawn).await;
        loop {
            let (error, blamed) = match self
                .session(
                    &brokers[broker],
                    &mut shutdown,
                    &mut failures,
                    &mut commands,
                    &mut poison,
                )
                .await
            {
                SessionEnd::Shutdown => return,
                SessionEnd::Lost(error) => (error, None),
                SessionEnd::Dropped {
                    error,
                    unacked,
                    suspect,
                } => {
                    if suspect {
                        let times = poison.dropped_after(unacked);
                        if times >= cfg.poison_after {
                            self.dead_letter_poison(unacked, times, &error).await;
                            poison.forget(&[unacked]);
                        }
                    }
                    (error, Some(unacked))
                }
            };
            failures += 1;
            let (host, port) = &brokers[broker];
            tracing::warn!(broker = %host, port, %error, "cloud relay disconnected");
            // Another node of the cluster may be up while this one is not.
            broker = (broker + 1) % brokers.len();
            self.report(HealthState::Degraded, Some(error.clone()));
            // Up to two windows were claimed, most of them never written or caught unanswered
            // by a broker restart: only the row the connection dropped on counts an attempt,
            // so that a flapping link neither dead-letters the backlog nor holds it in backoff.
            let back = journal::Interrupted {
                destination: crate::CLOUD.into(),
                blamed,
                error: format!("connection lost before PUBACK: {error}"),
            };
            if let Err(e) = journal::ask(&self.spawn.journal, back).await {
                tracing::error!(error = %e, "cannot put in-flight cloud rows back in line");
            }
            let delay = link::backoff(
                Duration::from_millis(cfg.reconnect_initial_ms),
                Duration::from_millis(cfg.reconnect_max_ms),
                failures,
            );
            if link::stop_asked_during(&mut shutdown, delay).await {
                return;
            }
        }
    }

    fn options(&self, (host, port): &(String, u16)) -> mqtt::Options {
        let cfg = &self.spawn.config;
        let window = cfg.inflight_window;
        mqtt::Options {
            protocol: cfg.protocol,
            client_id: cfg
                .client_id
                .clone()
                .unwrap_or_else(|| format!("clinic-gateway-{}", self.spawn.facility)),
            host: host.clone(),
            port: *port,
            keep_alive: Duration::from_secs(cfg.keep_alive_secs),
            inflight: window,
            // Room for the largest envelope plus the topic, properties and MQTT header.
            max_packet: cfg.max_message_bytes + 4096,
            will_topic: self.topics.status(),
            tls: self.spawn.tls.clone(),
            credentials: cfg.username.clone().zip(self.spawn.password.clone()),
            session_expiry_secs: cfg.session_expiry_secs,
            capacity: usize::from(window) * AHEAD + 64,
        }
    }

    async fn session(
        &self,
        broker: &(String, u16),
        shutdown: &mut watch::Receiver<bool>,
        failures: &mut u32,
        commands: &mut Commands,
        poison: &mut protocol::PoisonWatch,
    ) -> SessionEnd {
        let window = self.spawn.config.inflight_window as usize;
        // The client certificate as this connection's handshake will read it; a renewal
        // replaces the file, and the relay then reconnects to present the new one.
        let cert = self
            .spawn
            .config
            .tls
            .as_ref()
            .and_then(|t| t.client_cert_file.clone());
        let cert_stamp = cert.as_deref().map(crate::pem::stamp);
        let (client, mut el) = mqtt::open(self.options(broker));
        let resumed = tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(15), el.poll()) => match r {
                Ok(Ok(Happened::Connected { session_present })) => session_present,
                Ok(Ok(other)) => return SessionEnd::Lost(format!("unexpected first packet {other:?}")),
                Ok(Err(e)) => return SessionEnd::Lost(e.error),
                Err(_) => return SessionEnd::Lost("no CONNACK within 15 s".into()),
            },
            _ = shutdown.changed() => return SessionEnd::Shutdown,
        };
        *failures = 0;
        METRICS.relay_connects.add(1);
        tracing::info!(broker = %broker.0, port = broker.1, resumed, "cloud relay connected");

        let mut s = Session {
            client,
            expect: VecDeque::new(),
            in_flight: InFlight::default(),
            owed: Rows::default(),
            written: VecDeque::new(),
            acks: 0,
            acked: Vec::new(),
            refused: Vec::new(),
            replied: Vec::new(),
        };
        // Asked again on a resumed session too: harmless, and the filters may have changed
        // (a contract migration) since the session began.
        let filters = self.topics.commands();
        let mut subscribing = filters.len();
        for filter in filters {
            if let Err(e) = s.client.subscribe(filter) {
                return SessionEnd::Lost(e);
            }
        }
        let signal = journal::signal(&self.spawn.journal, crate::CLOUD).await;
        let mut retry = tokio::time::interval(Duration::from_secs(1));
        let mut renewal = tokio::time::interval(RENEWAL_CHECK);
        let mut idle = false;
        // Journal round trips run beside the connection: waiting for a commit must not stop
        // PUBACKs from being read or the next publishes from going out.
        let mut claiming: Option<Pending<Vec<OutboxRow>>> = None;
        let mut settling: Option<Pending<usize>> = None;
        // When the oldest acknowledged row not yet in a mark arrived.
        let mut unsettled_since: Option<tokio::time::Instant> = None;
        // Each claim is a round trip to the writer and a read transaction: half a window at a
        // time, with a window and a half still queued or unacknowledged while it runs.
        let chunk = (window / 2).max(1);
        let mut topics = TopicCache::default();
        let per_row = self.topics.events("").len();
        let end = loop {
            let outstanding = s.expect.len() + s.in_flight.len();
            if claiming.is_none() && !idle && outstanding + chunk <= window * AHEAD {
                let claim = Claim {
                    destination: crate::CLOUD.into(),
                    limit: ((window * AHEAD - outstanding) / per_row).max(1),
                };
                claiming = Some(self.request(claim));
            }
            // A mark waits for a window of acks, the window to empty, or `SETTLE_WAIT`, and for
            // the previous mark's commit. Each mark is a commit, and SQLite walks its whole page
            // cache at the end of a transaction that rebalanced index pages (tens of µs): a quarter
            // window's marks paid that four times as often.
            if s.acked.is_empty() {
                unsettled_since = None;
            } else if unsettled_since.is_none() {
                unsettled_since = Some(tokio::time::Instant::now());
            }
            let settle_at = unsettled_since.map(|t| t + SETTLE_WAIT);
            let due = s.acked.len() >= window
                || outstanding == 0
                || settle_at.is_some_and(|t| t <= tokio::time::Instant::now());
            if settling.is_none() && !s.acked.is_empty() && due {
                unsettled_since = None;
                poison.forget(&s.acked);
                let acked = std::mem::replace(&mut s.acked, Vec::with_capacity(window));
                settling = Some(self.request(Delivered(acked)));
            }
            tokio::select! {
                biased;
                _ = shutdown.changed() => break SessionEnd::Shutdown,
                rows = wait(&mut claiming) => {
                    claiming = None;
                    match rows {
                        Ok(rows) if rows.is_empty() => idle = true,
                        Ok(rows) => {
                            if let Err(e) = self.publish_rows(&mut s, &mut topics, rows).await {
                                break SessionEnd::Lost(e);
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot claim cloud rows");
                            idle = true;
                        }
                    }
                }
                delivered = wait(&mut settling) => {
                    settling = None;
                    match delivered {
                        Ok(n) => METRICS.relay_published.add(n as u64),
                        Err(e) => tracing::error!(error = %e, "cannot mark cloud rows delivered; they will be sent again"),
                    }
                }
                ev = el.poll() => {
                    // What rumqttc already holds (it reads many PUBACKs per socket read) is
                    // taken here, a burst at a time, rather than one event per turn of this
                    // select, each turn polling every branch again.
                    let mut next = Some(ev);
                    let mut taken = 0;
                    let mut ended = None;
                    while let Some(ev) = next.take() {
                        ended = self.on_happened(ev, &mut s, commands, poison, &mut subscribing).await;
                        taken += 1;
                        if ended.is_some() || taken == BURST {
                            break;
                        }
                        next = ready(&mut el);
                    }
                    if let Some(end) = ended {
                        break end;
                    }
                }
                Some(done) = commands.replies.recv() => {
                    commands.waiting -= 1;
                    if let Some(reply) = done
                        && let Err(e) = self.publish_reply(&mut s, reply)
                    {
                        break SessionEnd::Lost(e);
                    }
                }
                _ = tokio::time::sleep_until(settle_at.unwrap_or_else(tokio::time::Instant::now)),
                    if settling.is_none() && settle_at.is_some() => {}
                _ = signal.notified(), if idle => idle = false,
                _ = retry.tick(), if idle => idle = false,
                _ = renewal.tick(), if cert.is_some() => {
                    if cert.as_deref().map(crate::pem::stamp) != cert_stamp {
                        tracing::info!("relay client certificate renewed; reconnecting with it");
                        break SessionEnd::Lost("the client certificate was renewed; reconnecting with it".into());
                    }
                }
            }
        };
        // Requests under way finish before anything more is said about these rows: a claim
        // committed after the rows were put back in line would leave them in flight.
        if let Some(claim) = claiming {
            let _ = claim.await;
        }
        if let Some(delivered) = settling
            && let Ok(n) = delivered.await
        {
            METRICS.relay_published.add(n as u64);
        }
        poison.forget(&s.acked);
        match end {
            SessionEnd::Shutdown => self.close(&mut s, &mut el, commands).await,
            SessionEnd::Lost(_) | SessionEnd::Dropped { .. } => {
                self.settle(&mut s).await;
                // Each connection is a fresh client: what this one held dies with it.
                commands.lost(s.unacknowledged_replies()).await;
            }
        }
        self.dead_letter_refused(&mut s, poison).await;
        end
    }

    /// Acts on what the connection reported; the end of the session when it ends it.
    async fn on_happened(
        &self,
        ev: Result<Happened, mqtt::Lost>,
        s: &mut Session,
        commands: &mut Commands,
        poison: &mut protocol::PoisonWatch,
        subscribing: &mut usize,
    ) -> Option<SessionEnd> {
        match ev {
            Ok(Happened::Message {
                topic,
                payload,
                ack,
            }) => {
                // Acknowledged only once kept: a command the broker was told arrived is carried
                // out even if the gateway stops now.
                let answer = match self.topics.command_name(&topic) {
                    Some((contract, name)) => commands
                        .take(contract, name, payload)
                        .await
                        .map(|reply| (self.topics.reply(contract, name), reply)),
                    None => None,
                };
                if let Err(e) = s.client.ack(&ack) {
                    return Some(SessionEnd::Lost(e));
                }
                if let Some((topic, reply)) = answer
                    && let Err(e) = s.publish(topic, false, reply, Carried::Untracked)
                {
                    return Some(SessionEnd::Lost(e));
                }
            }
            // "online" (and healthy) only once the broker has the command subscription: the
            // cloud sends commands on "online", and RabbitMQ drops a command that arrives
            // before the subscription's queue is bound.
            Ok(Happened::Subscribed) => {
                *subscribing = subscribing.saturating_sub(1);
                if *subscribing == 0 {
                    let online = self.topics.statuses().into_iter().try_for_each(|status| {
                        s.publish(status, true, b"online".to_vec(), Carried::Untracked)
                    });
                    if let Err(e) = online {
                        return Some(SessionEnd::Lost(e));
                    }
                    self.report(HealthState::Healthy, None);
                }
            }
            Ok(ev) => {
                s.on_event(ev);
                if !s.refused.is_empty() {
                    self.dead_letter_refused(s, poison).await;
                }
                if !s.replied.is_empty() {
                    commands.replied(std::mem::take(&mut s.replied));
                }
            }
            // A broker that stopped answering (no PINGRESP) did not close the connection on a
            // row: a hang blames no publish.
            Err(e) => {
                return Some(match s.unacked() {
                    Some(unacked) if !e.hang => SessionEnd::Dropped {
                        error: e.error,
                        unacked,
                        suspect: s.acks > 0,
                    },
                    _ => SessionEnd::Lost(e.error),
                });
            }
        }
        None
    }

    /// Publishes a command's reply under the contract the command came in on; a kept one is
    /// marked acknowledged on its PUBACK.
    fn publish_reply(&self, s: &mut Session, reply: store::Reply) -> Result<(), String> {
        let carried = reply.id.map_or(Carried::Untracked, Carried::Reply);
        let topic = self.topics.reply(reply.contract, &reply.name);
        s.publish(topic, false, reply.payload, carried)?;
        tracing::info!(command = %reply.name, "cloud command reply published");
        Ok(())
    }

    /// Sends a journal request without holding up the connection.
    fn request<R>(&self, msg: R) -> Pending<R::Output>
    where
        R: journal::Request,
        JournalWriter: Handler<R>,
    {
        let journal = self.spawn.journal.clone();
        Box::pin(async move { journal::ask(&journal, msg).await })
    }

    /// Publishes claimed rows in their order; an oversized one is dead-lettered instead.
    async fn publish_rows(
        &self,
        s: &mut Session,
        topics: &mut TopicCache,
        rows: Vec<OutboxRow>,
    ) -> Result<(), String> {
        let cfg = &self.spawn.config;
        for row in rows {
            let mut payload = self.envelopes.of(&row);
            if payload.len() > cfg.max_message_bytes {
                self.refuse_oversized(row.id, payload.len()).await;
                continue;
            }
            let properties = (cfg.protocol == Protocol::V5).then(|| mqtt::Properties {
                expiry_secs: cfg.message_expiry(row.kind()),
                user: protocol::cloud_event_attributes(&self.spawn.facility, &row),
            });
            // Under a migration the row goes out under both contracts' topics, and is delivered
            // once both were acknowledged; the last topic takes the payload itself.
            let under = topics.of(&self.topics, row.kind());
            for (i, topic) in under.iter().enumerate() {
                let body = if i + 1 == under.len() {
                    std::mem::take(&mut payload)
                } else {
                    payload.clone()
                };
                let carried = Carried::Row(row.id);
                s.publish_with(topic.clone(), false, body, carried, properties.clone())?;
            }
        }
        Ok(())
    }

    /// An envelope the broker would refuse cannot be helped by retrying: dead letter at once,
    /// so the rest of its key and every other key keep flowing.
    async fn refuse_oversized(&self, id: i64, bytes: usize) {
        let limit = self.spawn.config.max_message_bytes;
        tracing::warn!(
            row = id,
            bytes,
            limit,
            "event larger than relay.max_message_bytes; dead-lettered"
        );
        let failed = Failed {
            destination: crate::CLOUD.into(),
            ids: Some(vec![id]),
            error: format!("envelope of {bytes} bytes exceeds relay.max_message_bytes ({limit})"),
            permanent: true,
        };
        if let Err(e) = journal::ask(&self.spawn.journal, failed).await {
            tracing::error!(error = %e, "cannot dead-letter an oversized event");
        }
    }

    /// A row the broker closed the connection on `times` times in a row cannot be helped by
    /// sending it again: dead letter it, so the rest of the backlog flows. Staff replay it once
    /// the cause is fixed (a contract the broker accepts, a broker limit raised).
    async fn dead_letter_poison(&self, id: i64, times: u32, error: &str) {
        tracing::warn!(
            row = id,
            times,
            %error,
            "the broker closes the connection on this event; dead-lettered"
        );
        let failed = Failed {
            destination: crate::CLOUD.into(),
            ids: Some(vec![id]),
            error: protocol::poison_reason(times, error),
            permanent: true,
        };
        if let Err(e) = journal::ask(&self.spawn.journal, failed).await {
            tracing::error!(error = %e, "cannot dead-letter a poison event");
        }
    }

    /// Dead-letters the rows the broker refused with a PUBACK reason code (MQTT 5): sending
    /// them again would be refused again, and the connection is fine, so the rest of the
    /// backlog flows on it. Staff replay them once the cause is fixed (an ACL, a quota).
    async fn dead_letter_refused(&self, s: &mut Session, poison: &mut protocol::PoisonWatch) {
        for (id, reason) in std::mem::take(&mut s.refused) {
            tracing::warn!(row = id, %reason, "the broker refused this event; dead-lettered");
            poison.forget(&[id]);
            let failed = Failed {
                destination: crate::CLOUD.into(),
                ids: Some(vec![id]),
                error: protocol::refusal_reason(&reason),
                permanent: true,
            };
            if let Err(e) = journal::ask(&self.spawn.journal, failed).await {
                tracing::error!(error = %e, "cannot dead-letter a refused event");
            }
        }
    }

    /// Marks acknowledged rows delivered.
    async fn settle(&self, s: &mut Session) {
        if s.acked.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut s.acked);
        let n = ids.len() as u64;
        match journal::ask(&self.spawn.journal, Delivered(ids)).await {
            Ok(_) => METRICS.relay_published.add(n),
            Err(e) => {
                tracing::error!(error = %e, "cannot mark cloud rows delivered; they will be sent again")
            }
        }
    }

    /// Clean shutdown: say "offline", wait (bounded) for outstanding PUBACKs, disconnect.
    async fn close(&self, s: &mut Session, el: &mut Connection, commands: &mut Commands) {
        // A command under way may be the one that stops the relay (a reload that replaces it):
        // its reply still goes out, if it comes in time.
        let _ = tokio::time::timeout(Duration::from_millis(1500), async {
            while commands.waiting > 0 {
                let Some(done) = commands.replies.recv().await else {
                    break;
                };
                commands.waiting -= 1;
                if let Some(reply) = done {
                    let _ = self.publish_reply(s, reply);
                }
            }
        })
        .await;
        for status in self.topics.statuses() {
            let _ = s.publish(status, true, b"offline".to_vec(), Carried::Untracked);
        }
        let drain = async {
            while !(s.expect.is_empty() && s.in_flight.is_empty()) {
                match el.poll().await {
                    Ok(ev) => s.on_event(ev),
                    Err(_) => break,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), drain).await;
        self.settle(s).await;
        if !s.replied.is_empty() {
            commands.replied(std::mem::take(&mut s.replied));
        }
        if s.client.disconnect().is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Ok(ev) = el.poll().await {
                    if matches!(ev, Happened::Disconnected) {
                        break;
                    }
                }
            })
            .await;
        }
    }
}

/// The bookkeeping of one connection.
struct Session {
    client: mqtt::Client,
    /// Publishes handed to rumqttc, in order, not yet given a packet id: what each carries.
    /// rumqttc sends requests in order, so the n-th `Outgoing::Publish` is the n-th entry here.
    expect: VecDeque<Carried>,
    /// Packet id → what its publish carries, awaiting PUBACK. A clean close
    /// waits for the replies' PUBACKs too: RabbitMQ 3.10 was seen to lose a reply written just
    /// before the DISCONNECT when the next relay connected with the same client id at once.
    in_flight: InFlight,
    /// Outbox row → PUBACKs it still waits for: one per topic it is published under.
    owed: Rows<usize>,
    /// Rows in the order their first publish was written, front trimmed of acknowledged ones:
    /// the front is the oldest unacknowledged row.
    written: VecDeque<i64>,
    /// PUBACKs received on this connection: it was working.
    acks: u64,
    /// Rows PUBACKed, not yet marked delivered.
    acked: Vec<i64>,
    /// Rows the broker refused (MQTT 5 PUBACK reason codes), with its reason, not yet
    /// dead-lettered.
    refused: Vec<(i64, String)>,
    /// Kept commands whose replies were PUBACKed, not yet marked.
    replied: Vec<i64>,
}

/// What a publish carries, for its PUBACK: an outbox row, the reply of a kept command, or
/// nothing the journal tracks (the status, a reply given at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carried {
    Row(i64),
    Reply(i64),
    Untracked,
}

impl Session {
    fn publish(
        &mut self,
        topic: String,
        retain: bool,
        payload: Vec<u8>,
        carried: Carried,
    ) -> Result<(), String> {
        self.publish_with(topic, retain, payload, carried, None)
    }

    fn publish_with(
        &mut self,
        topic: String,
        retain: bool,
        payload: Vec<u8>,
        carried: Carried,
        properties: Option<mqtt::Properties>,
    ) -> Result<(), String> {
        self.client.publish(topic, retain, payload, properties)?;
        if let Carried::Row(row) = carried {
            *self.owed.entry(row).or_default() += 1;
        }
        self.expect.push_back(carried);
        Ok(())
    }

    fn on_event(&mut self, ev: Happened) {
        match ev {
            Happened::Written(pkid) => {
                if let Some(carried) = self.expect.pop_front() {
                    self.in_flight.insert(pkid, carried);
                    if let Carried::Row(row) = carried
                        && self.written.back() != Some(&row)
                    {
                        self.written.push_back(row);
                    }
                }
            }
            Happened::Acked { pkid, refused } => {
                self.acks += 1;
                let carried = self.in_flight.remove(pkid);
                if let Some(Carried::Reply(id)) = carried {
                    self.replied.push(id);
                }
                if let Some(Carried::Row(row)) = carried
                    && let Some(owed) = self.owed.get_mut(&row)
                {
                    *owed -= 1;
                    if let Some(reason) = refused {
                        // One refused topic is enough: the row is dead-lettered, and the
                        // PUBACKs of its other topics (a migration) no longer count.
                        self.owed.remove(&row);
                        self.refused.push((row, reason));
                    } else if *owed == 0 {
                        self.owed.remove(&row);
                        self.acked.push(row);
                    }
                }
                while self
                    .written
                    .front()
                    .is_some_and(|r| !self.owed.contains_key(r))
                {
                    self.written.pop_front();
                }
            }
            _ => {}
        }
    }

    /// The kept replies published on this connection and not acknowledged.
    fn unacknowledged_replies(&self) -> Vec<i64> {
        self.expect
            .iter()
            .copied()
            .chain(self.in_flight.carried())
            .filter_map(|c| match c {
                Carried::Reply(id) => Some(id),
                _ => None,
            })
            .collect()
    }

    /// The oldest row written and not acknowledged: the one a broker closing the connection on
    /// a publish closed on.
    fn unacked(&self) -> Option<i64> {
        self.written
            .iter()
            .find(|r| self.owed.contains_key(r))
            .copied()
    }
}

/// Packet id → what its publish carries, for publishes awaiting PUBACK. A vector indexed by packet id, since rumqttc hands ids out from 1
/// up to the in-flight window: two lookups per event, each an index rather than a hash.
#[derive(Default)]
struct InFlight {
    slots: Vec<Option<Carried>>,
    len: usize,
}

impl InFlight {
    fn insert(&mut self, pkid: u16, carried: Carried) {
        let i = usize::from(pkid);
        if i >= self.slots.len() {
            self.slots.resize(i + 1, None);
        }
        if self.slots[i].replace(carried).is_none() {
            self.len += 1;
        }
    }

    fn remove(&mut self, pkid: u16) -> Option<Carried> {
        let taken = self.slots.get_mut(usize::from(pkid))?.take();
        if taken.is_some() {
            self.len -= 1;
        }
        taken
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn carried(&self) -> impl Iterator<Item = Carried> + '_ {
        self.slots.iter().flatten().copied()
    }
}

/// A map keyed by outbox row id, hashed with one multiply (SipHash was a third of the
/// bookkeeping per event).
type Rows<V> = journal::RowMap<V>;

/// The topics of each event kind seen on this connection, built once per kind rather than
/// formatted for every event. A backlog comes in runs of one kind, so the kind asked last is
/// compared first: hashing each event's kind was a tenth of the relay's own work per event.
#[derive(Default)]
struct TopicCache {
    kinds: Vec<(String, Vec<String>)>,
    index: HashMap<String, usize>,
    last: usize,
}

/// Kinds kept at most; posted items bring their own kinds, so the cache starts afresh beyond.
const KINDS_CACHED: usize = 256;

impl TopicCache {
    fn of(&mut self, topics: &Topics, kind: &str) -> &[String] {
        if self.kinds.get(self.last).is_none_or(|(k, _)| k != kind) {
            self.last = match self.index.get(kind) {
                Some(&i) => i,
                None => {
                    if self.kinds.len() >= KINDS_CACHED {
                        self.kinds.clear();
                        self.index.clear();
                    }
                    self.index.insert(kind.to_string(), self.kinds.len());
                    self.kinds.push((kind.to_string(), topics.events(kind)));
                    self.kinds.len() - 1
                }
            };
        }
        &self.kinds[self.last].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topic_cache_answers_each_kind_with_its_own_topics_past_its_bound() {
        let topics = Topics::new("clinic-1", 2, false);
        let mut cache = TopicCache::default();
        let mut kinds: Vec<String> = ["queue.called", "queue.called", "lab.result", "queue.called"]
            .map(String::from)
            .into();
        kinds.extend((0..KINDS_CACHED + 3).map(|i| format!("k{i}.seen")));
        kinds.push("lab.result".into());
        for kind in &kinds {
            assert_eq!(cache.of(&topics, kind), topics.events(kind), "{kind}");
        }
        assert!(cache.kinds.len() <= KINDS_CACHED);
    }
}
