//! Room occupancy from MQTT sensors on a local broker (zigbee2mqtt motion sensors, people
//! counters): the actor that keeps every room's and waiting area's state and journals each change.
//!
//! The actor runs in its own arbiter. Its link task holds one rumqttc session at a time
//! (clean session, QoS 1 subscriptions to each sensor's exact topic), hands every message to the
//! actor, and reconnects with a doubling, capped delay; it reports `Healthy` once the broker
//! granted the subscriptions and `Degraded` with the error while the broker is unreachable.
//! The actor feeds messages to the pure [`protocol::Facility`], wakes itself when a debounce
//! delay runs out, journals each room and area change as a `occupancy.room` / `occupancy.area`
//! device event, and answers [`GetOccupancy`].
//!
//! **Invariant:** journal events carry room and area names, occupancy and counts only: never a
//! payload, a person or anything else from the sensors.
//! **Invariant:** no sensor input ends the actor: an unusable payload is counted and logged
//! (without its content) and the state stays as it was.

pub mod config;
pub mod protocol;

use crate::config::Config;
use crate::devices::device_event;
use crate::journal::{self, Append, JournalWriter};
use crate::supervisor::link::{self, Health};
use crate::supervisor::{HealthState, Running, Slot, Spawn, StopFuture, Supervisor};
use actix::prelude::*;
use config::OccupancyConfig;
use protocol::{Change, Facility, Occupancy};
use rumqttc::{
    AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS, SubscribeFilter, SubscribeReasonCode,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The supervisor's name for the occupancy actor.
pub const NAME: &str = "occupancy";

/// Largest MQTT packet read from the broker. Payloads above `max_payload_bytes` but below this
/// are read, counted as malformed and dropped; rumqttc cannot skip a bigger packet and drops the
/// connection instead, so this is set far above any sensor's payload (the broker's
/// `message_size_limit` is the place to stop larger ones). It also bounds our SUBSCRIBE, which
/// names every sensor topic in one packet.
const MAX_PACKET_BYTES: usize = 16 << 20;

/// Why the occupancy actor could not be set up or asked.
#[derive(Debug, thiserror::Error)]
pub enum OccupancyError {
    #[error("devices.occupancy.broker.password_file {path}: {source}")]
    PasswordFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{key}: {message}")]
    Tls { key: String, message: String },
    #[error("the occupancy actor is not running")]
    NotRunning,
}

/// Asks for the whole state: rooms, areas, and each sensor's last reading time, staleness and
/// malformed count.
#[derive(Message, Debug)]
#[rtype(result = "Occupancy")]
pub struct GetOccupancy;

/// Where to find the running actor; it changes with every (re)start, so the facility rules and
/// the status page keep this handle rather than an address.
pub type OccupancyHandle = Slot<OccupancyActor>;

impl OccupancyHandle {
    /// The current state, from the running actor.
    pub async fn get(&self) -> Result<Occupancy, OccupancyError> {
        let addr = self.addr().ok_or(OccupancyError::NotRunning)?;
        addr.send(GetOccupancy)
            .await
            .map_err(|_| OccupancyError::NotRunning)
    }
}

/// Everything the actor needs, fixed for the life of one actor.
#[derive(Clone)]
pub struct OccupancySpawn {
    pub config: OccupancyConfig,
    pub client_id: String,
    pub password: Option<String>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub journal: Addr<JournalWriter>,
    pub handle: OccupancyHandle,
}

impl OccupancySpawn {
    /// Reads the password file and builds TLS for a validated configuration.
    pub fn new(
        c: &Config,
        config: &OccupancyConfig,
        journal: &Addr<JournalWriter>,
    ) -> Result<OccupancySpawn, OccupancyError> {
        let broker = &config.broker;
        let tls = match &broker.tls {
            Some(t) => Some(
                crate::relay::tls::client_config(t, |p| c.resolve(p)).map_err(|e| {
                    OccupancyError::Tls {
                        key: config::tls_key(e.key),
                        message: e.message,
                    }
                })?,
            ),
            None => None,
        };
        let password = match &broker.password_file {
            Some(p) => {
                let path = c.resolve(p);
                let text = std::fs::read_to_string(&path)
                    .map_err(|source| OccupancyError::PasswordFile { path, source })?;
                Some(text.trim_end_matches(['\r', '\n']).to_string())
            }
            None => None,
        };
        Ok(OccupancySpawn {
            config: config.clone(),
            client_id: broker
                .client_id
                .clone()
                .unwrap_or_else(|| format!("clinic-gateway-occupancy-{}", c.gateway.facility_id)),
            password,
            tls,
            journal: journal.clone(),
            handle: OccupancyHandle::default(),
        })
    }
}

impl Spawn for OccupancySpawn {
    fn kind(&self) -> &'static str {
        "occupancy-mqtt"
    }

    fn spawn(&self, name: &str, supervisor: Addr<Supervisor>) -> Box<dyn Running> {
        let spawn = self.clone();
        // The link only has a DISCONNECT to send; bounded in case the broker hangs.
        let grace = Duration::from_secs(3);
        let (running, addr) =
            link::start_actor(name, supervisor, grace, move |link| OccupancyActor {
                facility: Facility::new(&spawn.config, Instant::now()),
                spawn,
                health: link.health,
                settle: None,
                shutdown: Some(link.shutdown),
            });
        self.handle.set(Some(addr));
        Box::new(Handle {
            running,
            handle: self.handle.clone(),
        })
    }
}

/// The running actor, which the rooms stop seeing as soon as it is asked to stop.
struct Handle {
    running: Box<dyn Running>,
    handle: OccupancyHandle,
}

impl Running for Handle {
    fn stop(self: Box<Self>) -> StopFuture {
        self.handle.set(None);
        self.running.stop()
    }

    #[cfg(feature = "fault-hooks")]
    fn inject_panic(&mut self) -> bool {
        self.running.inject_panic()
    }
}

/// The occupancy actor: owns the state; its link task runs in its context.
pub struct OccupancyActor {
    facility: Facility,
    spawn: OccupancySpawn,
    health: Health,
    /// The wake-up for the earliest debounce deadline.
    settle: Option<SpawnHandle>,
    shutdown: Option<watch::Receiver<bool>>,
}

impl Actor for OccupancyActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(shutdown) = self.shutdown.take() else {
            return;
        };
        let link = Link {
            spawn: self.spawn.clone(),
            topics: self.facility.topics(),
            health: self.health.clone(),
            actor: ctx.address().recipient(),
        };
        ctx.spawn(
            link.run(shutdown)
                .into_actor(self)
                .map(|_, _, ctx| ctx.stop()),
        );
    }
}

/// A message from the broker on one of the sensors' topics.
#[derive(Message)]
#[rtype(result = "()")]
struct SensorMessage(rumqttc::Publish);

impl Handler<SensorMessage> for OccupancyActor {
    type Result = ();

    fn handle(&mut self, msg: SensorMessage, ctx: &mut Context<Self>) {
        let SensorMessage(p) = msg;
        for r in self.facility.receive(&p.topic, &p.payload, Instant::now()) {
            // A broken sensor can send many a second; powers of two keep the log readable
            // while the count in `GetOccupancy` stays exact.
            if r.count.is_power_of_two() {
                tracing::warn!(sensor = %r.sensor, problem = %r.problem, malformed = r.count, "unusable occupancy payload");
            }
        }
        self.settle(ctx);
    }
}

impl Handler<GetOccupancy> for OccupancyActor {
    type Result = MessageResult<GetOccupancy>;

    fn handle(&mut self, _: GetOccupancy, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.facility.snapshot(Instant::now(), journal::now_ms()))
    }
}

impl OccupancyActor {
    /// Applies the room states that held long enough, journals the changes, and sets the
    /// wake-up for the next deadline.
    fn settle(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        for change in self.facility.settle(now) {
            let kind = match &change {
                Change::Room { .. } => "occupancy.room",
                Change::Area { .. } => "occupancy.area",
            };
            // Plain structs of strings, booleans and integers: serialising them cannot fail.
            let payload = serde_json::to_value(&change).unwrap_or_default();
            tracing::info!(%payload, "occupancy changed");
            // Sent now, in order: the journal's mailbox keeps the order of the device's events.
            let appended = self
                .spawn
                .journal
                .send(Append(device_event(NAME, kind, payload)));
            actix::spawn(async move {
                match appended.await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "occupancy change not journaled"),
                    Err(_) => tracing::warn!("occupancy change not journaled: journal stopped"),
                }
            });
        }
        if let Some(h) = self.settle.take() {
            ctx.cancel_future(h);
        }
        if let Some(deadline) = self.facility.next_deadline() {
            let wait = deadline.saturating_duration_since(now);
            self.settle = Some(ctx.run_later(wait, |act, ctx| {
                act.settle = None;
                act.settle(ctx);
            }));
        }
    }
}

/// How one connection ended.
enum SessionEnd {
    /// Asked to stop.
    Shutdown,
    /// The connection failed or was lost, with the reason.
    Lost(String),
}

/// The broker connection, run as a task in the actor's context.
struct Link {
    spawn: OccupancySpawn,
    topics: Vec<String>,
    health: Health,
    actor: Recipient<SensorMessage>,
}

impl Link {
    fn report(&self, state: HealthState, error: Option<String>) {
        self.health.report(state, error);
    }

    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let broker = &self.spawn.config.broker;
        let mut failures = 0u32;
        loop {
            match self.session(&mut shutdown, &mut failures).await {
                SessionEnd::Shutdown => return,
                SessionEnd::Lost(error) => {
                    failures += 1;
                    tracing::warn!(broker = %broker.host, port = broker.port, %error, "occupancy broker connection lost");
                    self.report(HealthState::Degraded, Some(error));
                    let delay = link::backoff(
                        Duration::from_millis(broker.reconnect_initial_ms),
                        Duration::from_millis(broker.reconnect_max_ms),
                        failures,
                    );
                    if link::stop_asked_during(&mut shutdown, delay).await {
                        return;
                    }
                }
            }
        }
    }

    fn options(&self) -> MqttOptions {
        let broker = &self.spawn.config.broker;
        let mut opts = MqttOptions::new(&self.spawn.client_id, &broker.host, broker.port);
        // A clean session: queued messages from before a reconnect would arrive with new
        // timestamps and distort the debounce; sensors repeat their state on the next change
        // (or at once, when zigbee2mqtt retains it).
        opts.set_keep_alive(Duration::from_secs(broker.keep_alive_secs))
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        if let Some(tls) = &self.spawn.tls {
            opts.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(
                tls.clone(),
            )));
        }
        if let Some(user) = &broker.username {
            opts.set_credentials(user, self.spawn.password.clone().unwrap_or_default());
        }
        opts
    }

    async fn session(
        &self,
        shutdown: &mut watch::Receiver<bool>,
        failures: &mut u32,
    ) -> SessionEnd {
        let (client, mut el) = AsyncClient::new(self.options(), 16);
        tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(15), el.poll()) => match r {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {}
                Ok(Ok(other)) => return SessionEnd::Lost(format!("unexpected first packet {other:?}")),
                Ok(Err(e)) => return SessionEnd::Lost(e.to_string()),
                Err(_) => return SessionEnd::Lost("no CONNACK within 15 s".into()),
            },
            _ = shutdown.changed() => return SessionEnd::Shutdown,
        }
        let filters = self
            .topics
            .iter()
            .map(|t| SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
        if let Err(e) = client.try_subscribe_many(filters) {
            return SessionEnd::Lost(format!("cannot queue the subscription: {e}"));
        }
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    // A clean DISCONNECT, bounded: the broker needs no will or ack from us.
                    if client.try_disconnect().is_ok() {
                        let _ = tokio::time::timeout(Duration::from_secs(1), async {
                            while let Ok(ev) = el.poll().await {
                                if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                                    break;
                                }
                            }
                        })
                        .await;
                    }
                    return SessionEnd::Shutdown;
                }
                ev = el.poll() => match ev {
                    Ok(Event::Incoming(Packet::Publish(p))) => self.actor.do_send(SensorMessage(p)),
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        let refused = ack
                            .return_codes
                            .iter()
                            .filter(|c| matches!(c, SubscribeReasonCode::Failure))
                            .count();
                        if refused == 0 {
                            *failures = 0;
                            tracing::info!(broker = %self.spawn.config.broker.host, topics = self.topics.len(), "occupancy sensors subscribed");
                            self.report(HealthState::Healthy, None);
                        } else {
                            // Usually the broker's ACL: retrying will not help until it changes,
                            // so stay connected for the topics granted and say what is missing.
                            let error = format!("broker refused {refused} of {} sensor subscriptions", self.topics.len());
                            tracing::warn!(%error, "occupancy subscriptions refused");
                            self.report(HealthState::Degraded, Some(error));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return SessionEnd::Lost(e.to_string()),
                },
            }
        }
    }
}
