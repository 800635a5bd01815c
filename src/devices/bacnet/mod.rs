//! BACnet/IP HVAC devices: one [`BacnetActor`] per `[[devices.bacnet]]` table, in its own
//! arbiter.
//!
//! A link task owns the UDP socket and is the transaction layer: invoke ids, a timeout per
//! attempt, retries with the same invoke id, and matching answers to requests by sender and
//! invoke id. It finds the device by Who-Is (directed to `address`, or to `broadcast`),
//! subscribes to COV for the `cov` objects (polling those whose subscription is refused),
//! renews the subscriptions at half their lifetime, and reads the other objects every
//! `poll_interval_ms` (ReadPropertyMultiple, or ReadProperty per property when the device
//! rejects it). Confirmed COV notifications are acknowledged as they arrive, also while a
//! request waits for its answer, so none is lost. Readings that differ from the last event
//! become `device.reading` events. [`BacnetWrite`] writes a present value at the configured
//! priority, or relinquishes it, through [`crate::devices::audited`].
//!
//! **Invariant:** every override the gateway may hold in a device is remembered in the
//! journal before it is written, and forgotten only once it was relinquished; at start the
//! remembered ones are relinquished (or re-asserted), so no override outlives the gateway's
//! knowledge of it.
//!
//! **Invariant:** device errors never end the actor: it reports `Degraded` naming device,
//! object and property, and keeps looking for the device.

pub mod config;
pub mod protocol;

use crate::devices::{self, DeviceWrite, Reporter, Value, device_event};
use crate::devices::{ClearOverride, DeviceOverride, ListOverrides, SetOverride};
use crate::journal::{self, Append, JournalWriter};
use crate::supervisor::link::{self, Health};
use crate::supervisor::{HealthState, Running, Spawn, Supervisor};
use actix::prelude::*;
use config::{BacnetDevice, BacnetObject, Mode, OnStart};
use protocol::{AppValue, Inbound, ObjectId, ObjectKind, WriteValue, property, service};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// Why talking to a device failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BacnetError {
    /// The local socket could not be bound or used.
    #[error("socket {bind}: {reason}")]
    Socket { bind: SocketAddr, reason: String },
    /// No I-Am for the device instance.
    #[error(
        "device {instance}: no I-Am to Who-Is sent to {to} ({attempts} attempts of {timeout_ms} ms)"
    )]
    NotFound {
        instance: u32,
        to: SocketAddr,
        attempts: u32,
        timeout_ms: u64,
    },
    /// No answer to a request, retries included: the device is off or unreachable.
    #[error("{at}: no answer ({attempts} attempts of {timeout_ms} ms)")]
    Timeout {
        at: String,
        attempts: u32,
        timeout_ms: u64,
    },
    /// The device answered with a BACnet Error.
    #[error("{at}: the device answered error {name}")]
    Device { at: String, name: String },
    /// The device rejected the request.
    #[error("{at}: the device rejected the request ({reason})")]
    Reject { at: String, reason: &'static str },
    /// The device (or a router) aborted the transaction.
    #[error("{at}: the transaction was aborted ({reason})")]
    Abort { at: String, reason: &'static str },
    /// The answer arrived but could not be decoded or did not fit the request.
    #[error("{at}: unusable answer: {reason}")]
    Answer { at: String, reason: String },
    /// A write to an object that is not configured or not writable.
    #[error("object {object}: {reason}")]
    NotWritable { object: String, reason: String },
    /// A write of a value the object cannot take.
    #[error("object {object}: {source}")]
    Encode {
        object: String,
        source: protocol::EncodeError,
    },
    /// A request that could not be built (a bug: validation keeps identifiers in range).
    #[error(transparent)]
    Request(#[from] protocol::RequestError),
    /// A write or read while the device is not reachable; nothing was sent.
    #[error("the device is not reachable; nothing was sent")]
    NotConnected,
    /// The write's audit record or override could not be committed; nothing was written.
    #[error("nothing was written: {0}")]
    Journal(#[from] crate::journal::JournalError),
}

impl BacnetError {
    /// True when the device must be looked for again: it stopped answering.
    fn link_lost(&self) -> bool {
        matches!(
            self,
            Self::Timeout { .. } | Self::Socket { .. } | Self::NotFound { .. }
        )
    }

    /// True when the device answered and said no (the request itself is refused).
    fn refused(&self) -> bool {
        matches!(
            self,
            Self::Device { .. } | Self::Reject { .. } | Self::Abort { .. }
        )
    }
}

/// The address of a device's current actor; empty before its first start.
pub type BacnetSlot = crate::supervisor::Slot<BacnetActor>;

/// Starts the actor of one configured device; kept by the supervisor for restarts.
pub struct BacnetSpawn {
    config: Arc<BacnetDevice>,
    journal: Addr<JournalWriter>,
    current: BacnetSlot,
}

impl BacnetSpawn {
    pub fn new(config: BacnetDevice, journal: Addr<JournalWriter>) -> Self {
        BacnetSpawn {
            config: Arc::new(config),
            journal,
            current: BacnetSlot::default(),
        }
    }

    /// Where the device's running actor can be found, across restarts.
    pub fn slot(&self) -> BacnetSlot {
        self.current.clone()
    }
}

impl Spawn for BacnetSpawn {
    fn kind(&self) -> &'static str {
        "bacnet-device"
    }

    fn spawn(&self, name: &str, supervisor: Addr<Supervisor>) -> Box<dyn Running> {
        // Room for a few commands; more are refused at once rather than queued behind a slow link.
        let (commands, commands_rx) = mpsc::channel(8);
        let latest = self
            .config
            .objects
            .iter()
            .map(|o| Reading {
                name: o.name.clone(),
                object: object_id(o).to_string(),
                value: None,
                units: None,
                read_at: None,
                error: None,
                cov: false,
            })
            .collect();
        let (config, journal) = (self.config.clone(), self.journal.clone());
        // The link task stops between requests; one request is bounded by its retries.
        let grace = self.config.request_budget() + Duration::from_secs(1);
        let (running, addr) = link::start_actor(name, supervisor, grace, move |link| BacnetActor {
            link: Some(Link {
                config: config.clone(),
                journal: journal.clone(),
                health: link.health,
                reporter: Reporter::default(),
                commands: commands_rx,
                socket: None,
                peer: None,
                invoke_id: 0,
                pending: VecDeque::new(),
                values: BTreeMap::new(),
                units: vec![None; config.objects.len()],
                cov_active: vec![false; config.objects.len()],
                cov_refused: vec![false; config.objects.len()],
                rpm_supported: config.read_multiple,
                overrides_settled: false,
                process_id: std::process::id(),
            }),
            config,
            commands,
            journal,
            shutdown: Some(link.shutdown),
            latest,
        });
        self.current.set(Some(addr));
        running
    }
}

fn object_id(o: &BacnetObject) -> ObjectId {
    ObjectId::new(o.kind, o.instance)
}

/// The latest state of one object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reading {
    /// The object's configured name.
    pub name: String,
    /// `analog-input,1`.
    pub object: String,
    /// The last present value; kept while later reads fail (see `read_at` and `error`).
    pub value: Option<Value>,
    /// The object's engineering units by name (e.g. `degrees-celsius`); analog objects only.
    pub units: Option<String>,
    /// When `value` was read or notified (ms since the epoch).
    pub read_at: Option<i64>,
    /// Why the most recent read failed; `None` once a read succeeds again.
    pub error: Option<String>,
    /// True while the value comes from an active COV subscription.
    pub cov: bool,
}

/// The latest state of every configured object, in configuration order.
#[derive(Message)]
#[rtype(result = "Vec<Reading>")]
pub struct GetValues;

/// Writes an object's present value at the device's configured priority, or relinquishes it
/// (`value: None` writes Null at that priority, so that lower priorities or the relinquish
/// default take over). Audited before the wire; answered once the device confirmed it.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), BacnetError>")]
pub struct BacnetWrite {
    /// The object's configured name; it must be `writable`.
    pub object: String,
    /// A number for analog and multi-state objects, a bool for binary ones; `None` relinquishes.
    pub value: Option<Value>,
    /// Who asked, for the audit (e.g. `rule:crowding-waiting-a`).
    pub by: String,
}

/// Reads the 16 slots of an object's priority array (`None` = empty slot), to see who holds
/// an object: diagnostics, and proof that a relinquish took effect.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<Option<Value>>, BacnetError>")]
pub struct GetPriorityArray {
    /// The object's configured name.
    pub object: String,
}

/// What the link task is asked to do.
enum Command {
    Write {
        index: usize,
        value: WriteValue,
        reply: oneshot::Sender<Result<(), BacnetError>>,
    },
    PriorityArray {
        index: usize,
        reply: oneshot::Sender<Result<Vec<Option<Value>>, BacnetError>>,
    },
}

/// A present value and, when read with it, the units' name.
type Read = (Value, Option<String>);

/// New values and errors of some objects (by configuration index), from the link task.
#[derive(Message)]
#[rtype(result = "()")]
struct Update {
    at: i64,
    results: Vec<(usize, Result<Read, String>)>,
    /// Which objects have an active COV subscription now.
    cov_active: Vec<bool>,
}

/// The device is unreachable: every object is in error until it answers again.
#[derive(Message)]
#[rtype(result = "()")]
struct LinkDown(String);

/// One device's actor: holds the latest values; its link task does the I/O.
pub struct BacnetActor {
    /// Taken when the link task starts.
    link: Option<Link>,
    config: Arc<BacnetDevice>,
    commands: mpsc::Sender<Command>,
    journal: Addr<JournalWriter>,
    shutdown: Option<watch::Receiver<bool>>,
    latest: Vec<Reading>,
}

impl Actor for BacnetActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (Some(link), Some(shutdown)) = (self.link.take(), self.shutdown.take()) else {
            return;
        };
        let me = ctx.address();
        ctx.spawn(
            link.run(shutdown, me)
                .into_actor(self)
                .map(|_, _, ctx| ctx.stop()),
        );
    }
}

impl Handler<GetValues> for BacnetActor {
    type Result = Vec<Reading>;

    fn handle(&mut self, _: GetValues, _: &mut Context<Self>) -> Vec<Reading> {
        self.latest.clone()
    }
}

impl Handler<GetPriorityArray> for BacnetActor {
    type Result = ResponseFuture<Result<Vec<Option<Value>>, BacnetError>>;

    fn handle(&mut self, msg: GetPriorityArray, _: &mut Context<Self>) -> Self::Result {
        let found = self.config.object(&msg.object).map(|(i, _)| i);
        let commands = self.commands.clone();
        Box::pin(async move {
            let index = found.ok_or_else(|| BacnetError::NotWritable {
                object: msg.object,
                reason: "no object of this device has that name".into(),
            })?;
            let (reply, answer) = oneshot::channel();
            commands
                .try_send(Command::PriorityArray { index, reply })
                .map_err(|_| BacnetError::NotConnected)?;
            answer.await.map_err(|_| BacnetError::NotConnected)?
        })
    }
}

impl Handler<BacnetWrite> for BacnetActor {
    type Result = ResponseFuture<Result<(), BacnetError>>;

    fn handle(&mut self, msg: BacnetWrite, _: &mut Context<Self>) -> Self::Result {
        let config = self.config.clone();
        let commands = self.commands.clone();
        let journal = self.journal.clone();
        Box::pin(async move {
            let (index, object) =
                config
                    .object(&msg.object)
                    .ok_or_else(|| BacnetError::NotWritable {
                        object: msg.object.clone(),
                        reason: "no object of this device has that name".into(),
                    })?;
            if !object.writable {
                return Err(BacnetError::NotWritable {
                    object: msg.object.clone(),
                    reason: "not configured as writable".into(),
                });
            }
            let value = protocol::write_value(object.kind, msg.value).map_err(|source| {
                BacnetError::Encode {
                    object: msg.object.clone(),
                    source,
                }
            })?;
            let slot = OverrideSlot {
                device: config.name.clone(),
                object: object_id(object).to_string(),
                priority: config.priority,
            };
            let audit = DeviceWrite {
                by: msg.by.clone(),
                device: config.name.clone(),
                point: format!("{} ({}) @{}", msg.object, slot.object, slot.priority),
                value: msg
                    .value
                    .map(|v| serde_json::to_value(v).unwrap_or_default())
                    .unwrap_or(serde_json::Value::Null),
            };
            let by = msg.by;
            devices::audited(&journal, audit, async {
                write_remembered(&journal, &slot, msg.value, &by, || async {
                    let (reply, answer) = oneshot::channel();
                    commands
                        .try_send(Command::Write {
                            index,
                            value,
                            reply,
                        })
                        .map_err(|_| BacnetError::NotConnected)?;
                    answer.await.map_err(|_| BacnetError::NotConnected)?
                })
                .await
            })
            .await
        })
    }
}

/// One slot of one object's priority array.
struct OverrideSlot {
    device: String,
    object: String,
    priority: u8,
}

/// Runs `write` of `value` (None: relinquish) with the journal's record of the slot kept
/// right: an override is remembered before it reaches the wire (a crash after sending still
/// knows of it), and forgotten only after a relinquish succeeded. A write the device refused
/// puts back what was remembered before it.
async fn write_remembered<F, Fut>(
    journal: &Addr<JournalWriter>,
    slot: &OverrideSlot,
    value: Option<Value>,
    by: &str,
    write: F,
) -> Result<(), BacnetError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), BacnetError>>,
{
    let before = journal::ask(
        journal,
        ListOverrides {
            device: slot.device.clone(),
        },
    )
    .await?
    .into_iter()
    .find(|o| o.object == slot.object && o.priority == slot.priority);
    if let Some(v) = value {
        let remembered = DeviceOverride {
            device: slot.device.clone(),
            object: slot.object.clone(),
            priority: slot.priority,
            value: serde_json::to_value(v).unwrap_or_default(),
            by: by.to_string(),
            set_at: journal::now_ms(),
        };
        journal::ask(journal, SetOverride(remembered)).await?;
    }
    let result = write().await;
    let restore = match (&result, value) {
        (Ok(()), None) => Some(None),
        (Err(e), Some(_)) if e.refused() => Some(before),
        _ => None,
    };
    if let Some(previous) = restore {
        let r = match previous {
            Some(p) => journal::ask(journal, SetOverride(p)).await,
            None => journal::ask(
                journal,
                ClearOverride {
                    device: slot.device.clone(),
                    object: slot.object.clone(),
                    priority: slot.priority,
                },
            )
            .await
            .map(|_| ()),
        };
        // The device is already in the state written; a stale record only costs a needless
        // relinquish at the next start.
        if let Err(e) = r {
            tracing::warn!(device = %slot.device, object = %slot.object, error = %e, "override record not updated");
        }
    }
    result
}

impl Handler<Update> for BacnetActor {
    type Result = ();

    fn handle(&mut self, msg: Update, _: &mut Context<Self>) {
        for (index, result) in msg.results {
            let Some(reading) = self.latest.get_mut(index) else {
                continue;
            };
            match result {
                Ok((v, units)) => {
                    reading.value = Some(v);
                    if units.is_some() {
                        reading.units = units;
                    }
                    reading.read_at = Some(msg.at);
                    reading.error = None;
                }
                Err(e) => reading.error = Some(e),
            }
        }
        for (reading, cov) in self.latest.iter_mut().zip(msg.cov_active) {
            reading.cov = cov;
        }
    }
}

impl Handler<LinkDown> for BacnetActor {
    type Result = ();

    fn handle(&mut self, msg: LinkDown, _: &mut Context<Self>) {
        for reading in &mut self.latest {
            reading.error = Some(msg.0.clone());
            reading.cov = false;
        }
    }
}

/// Where the link is (the state the task is in between sessions).
enum LinkState {
    /// Not found yet since the start.
    Searching,
    /// The device stopped answering; the error that showed it, kept in the health message
    /// until the device answers again.
    Lost(BacnetError),
}

/// How a session with a found device ended.
enum SessionEnd {
    Shutdown,
    Lost(BacnetError),
}

/// A confirmed request's successful answer.
enum Answer {
    Simple,
    Complex(Vec<u8>),
}

/// The link task: owns the socket, the transactions, the reporting state and the health.
struct Link {
    config: Arc<BacnetDevice>,
    journal: Addr<JournalWriter>,
    health: Health,
    reporter: Reporter,
    commands: mpsc::Receiver<Command>,
    socket: Option<UdpSocket>,
    /// The device's address once found.
    peer: Option<SocketAddr>,
    invoke_id: u8,
    /// COV notifications that arrived while a request waited, handled after it.
    pending: VecDeque<Inbound>,
    /// The latest value of each object that has one, by name (for events).
    values: BTreeMap<String, Value>,
    /// Units by object index, read once per session.
    units: Vec<Option<String>>,
    /// Which objects have an active COV subscription.
    cov_active: Vec<bool>,
    /// Which objects' subscriptions the device refused (so that it is logged once).
    cov_refused: Vec<bool>,
    /// False once the device rejected ReadPropertyMultiple.
    rpm_supported: bool,
    /// True once the overrides remembered from before the start were dealt with.
    overrides_settled: bool,
    /// Subscriber process identifier of our COV subscriptions.
    process_id: u32,
}

impl Link {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>, actor: Addr<BacnetActor>) {
        let mut state = LinkState::Searching;
        let mut failures = 0u32;
        loop {
            let found = tokio::select! {
                f = self.find() => f,
                _ = shutdown.changed() => return,
            };
            let end = match found {
                Ok(peer) => {
                    self.peer = Some(peer);
                    tracing::info!(device = %self.config.name, %peer, "BACnet device found");
                    failures = 0;
                    self.session(&mut shutdown, &actor).await
                }
                Err(e) => SessionEnd::Lost(e),
            };
            let error = match end {
                SessionEnd::Shutdown => return,
                SessionEnd::Lost(e) => e,
            };
            failures += 1;
            self.peer = None;
            self.cov_active.iter_mut().for_each(|c| *c = false);
            // While a lost device is looked for, the health keeps naming what failed first
            // (device, object, property) rather than only the unanswered Who-Is.
            let message = match (&state, &error) {
                (LinkState::Lost(first), BacnetError::NotFound { .. }) => {
                    self.message(&format!("{first}; not found again: {error}"))
                }
                _ => self.message(&error.to_string()),
            };
            if !matches!(error, BacnetError::NotFound { .. }) {
                state = LinkState::Lost(error.clone());
            }
            // The readings are marked first, so that whoever sees the health degraded and then
            // asks for the readings (the actor's mailbox being in order) sees them failed too.
            actor.do_send(LinkDown(message.clone()));
            if self.set_health(HealthState::Degraded, Some(message)) {
                tracing::warn!(device = %self.config.name, %error, "BACnet device unreachable; looking for it again");
            }
            // A socket that cannot be bound may work later (an interface that comes up).
            if matches!(error, BacnetError::Socket { .. }) {
                self.socket = None;
            }
            let delay = self
                .config
                .poll_interval()
                .saturating_mul(failures.min(6))
                .min(Duration::from_secs(60));
            let pause = tokio::time::sleep(delay);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = &mut pause => break,
                    _ = shutdown.changed() => return,
                    Some(c) = self.commands.recv() => refuse(c),
                }
            }
        }
    }

    /// The text the supervisor and the readings show: device first, so that it stands alone.
    fn message(&self, error: &str) -> String {
        format!("bacnet device {}: {error}", self.config.name)
    }

    /// Reports health when it changed; true if it did.
    fn set_health(&mut self, state: HealthState, error: Option<String>) -> bool {
        self.health.report(state, error)
    }

    async fn socket(&mut self) -> Result<&UdpSocket, BacnetError> {
        if self.socket.is_none() {
            let bind = self.config.bind;
            let failed = |e: std::io::Error| BacnetError::Socket {
                bind,
                reason: e.to_string(),
            };
            let s = UdpSocket::bind(bind).await.map_err(failed)?;
            s.set_broadcast(true).map_err(failed)?;
            self.socket = Some(s);
        }
        self.socket.as_ref().ok_or(BacnetError::Socket {
            bind: self.config.bind,
            reason: "not bound".into(),
        })
    }

    async fn send(&mut self, datagram: &[u8], to: SocketAddr) -> Result<(), BacnetError> {
        let bind = self.config.bind;
        self.socket()
            .await?
            .send_to(datagram, to)
            .await
            .map(|_| ())
            .map_err(|e| BacnetError::Socket {
                bind,
                reason: format!("send to {to}: {e}"),
            })
    }

    /// Receives one datagram until `deadline` (binding the socket first if needed).
    async fn receive(
        &mut self,
        deadline: Instant,
    ) -> Result<Option<(SocketAddr, Inbound)>, BacnetError> {
        self.socket().await?;
        let socket = self.socket.as_ref().ok_or(BacnetError::NotConnected)?;
        receive(socket, self.config.bind, &self.config.name, deadline).await
    }

    /// Who-Is (directed to `address`, else to `broadcast`) until the device's I-Am arrives.
    async fn find(&mut self) -> Result<SocketAddr, BacnetError> {
        let instance = self.config.device_instance;
        let (to, broadcast) = match self.config.address {
            Some(a) => (a, false),
            None => (self.config.broadcast, true),
        };
        let datagram = protocol::who_is(instance, broadcast)?;
        let attempts = self.config.retries + 1;
        for _ in 0..attempts {
            self.send(&datagram, to).await?;
            let deadline = Instant::now() + self.config.timeout();
            while let Some((from, inbound)) = self.receive(deadline).await? {
                match inbound {
                    Inbound::IAm { device, .. } if device == ObjectId::device(instance) => {
                        return Ok(self.config.address.unwrap_or(from));
                    }
                    other => self.unsolicited(from, other).await?,
                }
            }
        }
        Err(BacnetError::NotFound {
            instance,
            to,
            attempts,
            timeout_ms: self.config.timeout_ms,
        })
    }

    /// A datagram that is no answer to a pending request: COV notifications are acknowledged
    /// at once and kept for after the request.
    async fn unsolicited(&mut self, from: SocketAddr, inbound: Inbound) -> Result<(), BacnetError> {
        if let Inbound::CovNotification { invoke_id, .. } = &inbound {
            if let Some(id) = invoke_id {
                self.send(
                    &protocol::simple_ack(*id, service::CONFIRMED_COV_NOTIFICATION),
                    from,
                )
                .await?;
            }
            self.pending.push_back(inbound);
        }
        Ok(())
    }

    /// One confirmed request, sent again (same invoke id) after each timeout.
    async fn request(
        &mut self,
        at: &str,
        build: impl Fn(u8) -> Result<Vec<u8>, protocol::RequestError>,
    ) -> Result<Answer, BacnetError> {
        let peer = self.peer.ok_or(BacnetError::NotConnected)?;
        self.invoke_id = self.invoke_id.wrapping_add(1);
        let invoke = self.invoke_id;
        let datagram = build(invoke)?;
        let attempts = self.config.retries + 1;
        for _ in 0..attempts {
            self.send(&datagram, peer).await?;
            let deadline = Instant::now() + self.config.timeout();
            while let Some((from, inbound)) = self.receive(deadline).await? {
                let answer_to = |id: u8| from == peer && id == invoke;
                match inbound {
                    Inbound::SimpleAck { invoke_id, .. } if answer_to(invoke_id) => {
                        return Ok(Answer::Simple);
                    }
                    Inbound::ComplexAck {
                        invoke_id, data, ..
                    } if answer_to(invoke_id) => {
                        return Ok(Answer::Complex(data));
                    }
                    Inbound::Error {
                        invoke_id,
                        class,
                        code,
                        ..
                    } if answer_to(invoke_id) => {
                        return Err(BacnetError::Device {
                            at: at.into(),
                            name: protocol::error_name(class, code),
                        });
                    }
                    Inbound::Reject { invoke_id, reason } if answer_to(invoke_id) => {
                        return Err(BacnetError::Reject {
                            at: at.into(),
                            reason: protocol::reject_name(reason),
                        });
                    }
                    Inbound::Abort {
                        invoke_id, reason, ..
                    } if answer_to(invoke_id) => {
                        return Err(BacnetError::Abort {
                            at: at.into(),
                            reason: protocol::abort_name(reason),
                        });
                    }
                    other => self.unsolicited(from, other).await?,
                }
            }
        }
        Err(BacnetError::Timeout {
            at: at.into(),
            attempts,
            timeout_ms: self.config.timeout_ms,
        })
    }

    /// How errors name a property: `device ahu, analog-input,1 (co2), present-value`.
    fn at(&self, index: usize, property: &str) -> String {
        let o = &self.config.objects[index];
        format!(
            "device {}, {} ({}), {property}",
            self.config.name,
            object_id(o),
            o.name
        )
    }

    /// Works with a found device until it stops answering or shutdown is asked for.
    async fn session(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        actor: &Addr<BacnetActor>,
    ) -> SessionEnd {
        if !self.overrides_settled {
            match self.settle_overrides().await {
                Ok(()) => self.overrides_settled = true,
                Err(e) if e.link_lost() => return SessionEnd::Lost(e),
                Err(e) => {
                    tracing::warn!(device = %self.config.name, error = %e, "remembered overrides not settled; tried again at the next connection")
                }
            }
        }
        self.units.iter_mut().for_each(|u| *u = None);
        if let Err(e) = self.subscribe_all().await {
            return SessionEnd::Lost(e);
        }
        // Everything once, COV objects included: a subscription's first notification may
        // take a while, and units are read here.
        let all: Vec<usize> = (0..self.config.objects.len()).collect();
        // Objects whose last read failed, with the error.
        let mut errors = match self.poll(&all, actor).await {
            Ok(e) => e,
            Err(e) => return SessionEnd::Lost(e),
        };
        self.report_health(&errors);
        let mut tick = tokio::time::interval_at(
            Instant::now() + self.config.poll_interval(),
            self.config.poll_interval(),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let renewal = self.config.cov_renewal();
        let mut renew = tokio::time::interval_at(Instant::now() + renewal, renewal);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Some(n) = self.pending.pop_front() {
                self.notified(n, actor).await;
                continue;
            }
            enum Next {
                Tick,
                Renew,
                Command(Command),
                Datagram(Option<(SocketAddr, Inbound)>),
            }
            let far = Instant::now() + Duration::from_secs(3600);
            let Some(socket) = self.socket.as_ref() else {
                return SessionEnd::Lost(BacnetError::NotConnected);
            };
            let next = tokio::select! {
                _ = tick.tick() => Next::Tick,
                _ = renew.tick() => Next::Renew,
                Some(c) = self.commands.recv() => Next::Command(c),
                r = receive(socket, self.config.bind, &self.config.name, far) => match r {
                    Ok(d) => Next::Datagram(d),
                    Err(e) => return SessionEnd::Lost(e),
                },
                _ = shutdown.changed() => return SessionEnd::Shutdown,
            };
            let outcome = match next {
                Next::Tick => {
                    let polled: Vec<usize> = (0..self.config.objects.len())
                        .filter(|i| !self.cov_active[*i])
                        .collect();
                    self.poll(&polled, actor).await.map(|e| {
                        errors.retain(|(i, _)| !polled.contains(i));
                        errors.extend(e);
                        true
                    })
                }
                Next::Renew => self.subscribe_all().await.map(|_| false),
                Next::Command(c) => self.command(c).await.map(|_| false),
                Next::Datagram(Some((from, inbound))) => {
                    self.unsolicited(from, inbound).await.map(|_| false)
                }
                Next::Datagram(None) => Ok(false),
            };
            match outcome {
                Ok(true) => self.report_health(&errors),
                Ok(false) => {}
                Err(e) => return SessionEnd::Lost(e),
            }
        }
    }

    /// Healthy when nothing failed; otherwise Degraded naming the first failure.
    fn report_health(&mut self, errors: &[(usize, String)]) {
        match errors {
            [] => {
                if self.set_health(HealthState::Healthy, None) {
                    tracing::info!(device = %self.config.name, "BACnet device reads");
                }
            }
            [(_, first), rest @ ..] => {
                let more = if rest.is_empty() {
                    String::new()
                } else {
                    format!(" (and {} more)", rest.len())
                };
                let message = self.message(&format!("{first}{more}"));
                if self.set_health(HealthState::Degraded, Some(message)) {
                    tracing::warn!(device = %self.config.name, error = %first, failed = errors.len(), "BACnet objects failed");
                }
            }
        }
    }

    /// Subscribes (or renews) every `cov` object. A refused subscription leaves the object
    /// polled, which reads it fully, so it is logged rather than reported as degraded; the
    /// next renewal tries again. Fails only with the error that shows the device is gone.
    async fn subscribe_all(&mut self) -> Result<(), BacnetError> {
        let config = self.config.clone();
        for (i, o) in config.objects.iter().enumerate() {
            if o.mode != Mode::Cov {
                continue;
            }
            let (object, process, lifetime) =
                (object_id(o), self.process_id, self.config.cov_lifetime_s);
            let at = self.at(i, "subscribe-cov");
            match self
                .request(&at, |id| {
                    protocol::subscribe_cov(id, process, object, lifetime)
                })
                .await
            {
                Ok(_) => self.cov_active[i] = true,
                Err(e) if e.link_lost() => return Err(e),
                Err(e) => {
                    if self.cov_active[i] || !self.cov_refused[i] {
                        tracing::warn!(device = %self.config.name, error = %e, "COV subscription refused; the object is polled");
                    }
                    self.cov_active[i] = false;
                    self.cov_refused[i] = true;
                }
            }
        }
        Ok(())
    }

    /// Reads the present value (and, until known, the units) of `indices`; returns the
    /// objects in error, or the error that shows the device is gone.
    async fn poll(
        &mut self,
        indices: &[usize],
        actor: &Addr<BacnetActor>,
    ) -> Result<Vec<(usize, String)>, BacnetError> {
        if indices.is_empty() {
            return Ok(Vec::new());
        }
        let at = journal::now_ms();
        let mut results: Vec<(usize, Result<Read, BacnetError>)> = Vec::new();
        if self.rpm_supported {
            match self.read_multiple(indices).await {
                Ok(r) => results = r,
                Err(BacnetError::Reject { .. })
                | Err(BacnetError::Device { .. })
                | Err(BacnetError::Abort { .. }) => {
                    tracing::info!(device = %self.config.name, "ReadPropertyMultiple refused; reading property by property");
                    self.rpm_supported = false;
                }
                Err(e) => return Err(e),
            }
        }
        if !self.rpm_supported {
            for &i in indices {
                match self.read_single(i).await {
                    Err(e) if e.link_lost() => return Err(e),
                    r => results.push((i, r)),
                }
            }
        }
        let mut errors = Vec::new();
        let mut update = Vec::new();
        for (i, r) in results {
            match r {
                Ok((v, units)) => {
                    if units.is_some() {
                        self.units[i] = units.clone();
                    }
                    self.values.insert(self.config.objects[i].name.clone(), v);
                    update.push((i, Ok((v, units))));
                }
                Err(e) => {
                    let m = e.to_string();
                    update.push((i, Err(self.message(&m))));
                    errors.push((i, m));
                }
            }
        }
        actor.do_send(Update {
            at,
            results: update,
            cov_active: self.cov_active.clone(),
        });
        self.report(at).await;
        Ok(errors)
    }

    /// The properties read for object `i`: present value, and units until known.
    fn properties(&self, i: usize) -> Vec<u32> {
        let mut p = vec![property::PRESENT_VALUE];
        if self.config.objects[i].kind.has_units() && self.units[i].is_none() {
            p.push(property::UNITS);
        }
        p
    }

    /// Object `i`'s value and units from its property results.
    fn interpret(
        &self,
        i: usize,
        results: &[(u32, Result<Vec<AppValue>, BacnetError>)],
    ) -> Result<Read, BacnetError> {
        let kind = self.config.objects[i].kind;
        let mut value = None;
        let mut units = None;
        for (p, r) in results {
            let values = match r {
                Ok(v) => v,
                // Units are informative: a device without them still reads.
                Err(_) if *p == property::UNITS => continue,
                Err(e) => return Err(e.clone()),
            };
            let first = values.first();
            match *p {
                property::PRESENT_VALUE => {
                    let v = first
                        .ok_or_else(|| "no value".to_string())
                        .and_then(|v| v.to_value(kind))
                        .map_err(|reason| BacnetError::Answer {
                            at: self.at(i, "present-value"),
                            reason,
                        })?;
                    value = Some(v);
                }
                property::UNITS => {
                    if let Some(AppValue::Enumerated(u)) = first {
                        units = Some(protocol::unit_name(*u));
                    }
                }
                _ => {}
            }
        }
        let v = value.ok_or_else(|| BacnetError::Answer {
            at: self.at(i, "present-value"),
            reason: "the answer has no present value".into(),
        })?;
        Ok((v, units))
    }

    async fn read_single(&mut self, i: usize) -> Result<Read, BacnetError> {
        let object = object_id(&self.config.objects[i]);
        let mut results = Vec::new();
        for p in self.properties(i) {
            let name = if p == property::UNITS {
                "units"
            } else {
                "present-value"
            };
            let at = self.at(i, name);
            let r = self
                .request(&at, |id| protocol::read_property(id, object, p, None))
                .await
                .and_then(|a| self.values_of(a, &at));
            match r {
                Err(e) if e.link_lost() => return Err(e),
                r => results.push((p, r)),
            }
        }
        self.interpret(i, &results)
    }

    fn values_of(&self, answer: Answer, at: &str) -> Result<Vec<AppValue>, BacnetError> {
        match answer {
            Answer::Complex(data) => protocol::read_property_ack(&data)
                .map(|(_, _, v)| v)
                .map_err(|e| BacnetError::Answer {
                    at: at.into(),
                    reason: e.to_string(),
                }),
            Answer::Simple => Err(BacnetError::Answer {
                at: at.into(),
                reason: "a simple ack to a read".into(),
            }),
        }
    }

    async fn read_multiple(
        &mut self,
        indices: &[usize],
    ) -> Result<Vec<(usize, Result<Read, BacnetError>)>, BacnetError> {
        let request: Vec<(ObjectId, Vec<u32>)> = indices
            .iter()
            .map(|&i| (object_id(&self.config.objects[i]), self.properties(i)))
            .collect();
        let objects: Vec<String> = indices
            .iter()
            .map(|&i| {
                let o = &self.config.objects[i];
                format!("{} ({})", object_id(o), o.name)
            })
            .collect();
        let at = format!(
            "device {}, {}, present-value (read-property-multiple)",
            self.config.name,
            objects.join(", ")
        );
        let answer = self
            .request(&at, |id| protocol::read_property_multiple(id, &request))
            .await?;
        let Answer::Complex(data) = answer else {
            return Err(BacnetError::Answer {
                at,
                reason: "a simple ack to a read".into(),
            });
        };
        let decoded =
            protocol::read_property_multiple_ack(&data).map_err(|e| BacnetError::Answer {
                at: at.clone(),
                reason: e.to_string(),
            })?;
        let mut out = Vec::new();
        for &i in indices {
            let object = object_id(&self.config.objects[i]);
            let Some((_, props)) = decoded.iter().find(|(o, _)| *o == object) else {
                out.push((
                    i,
                    Err(BacnetError::Answer {
                        at: self.at(i, "present-value"),
                        reason: "missing from the answer".into(),
                    }),
                ));
                continue;
            };
            let results: Vec<_> = props
                .iter()
                .map(|p| {
                    let name = if p.property == property::UNITS {
                        "units"
                    } else {
                        "present-value"
                    };
                    (
                        p.property,
                        p.result
                            .clone()
                            .map_err(|(class, code)| BacnetError::Device {
                                at: self.at(i, name),
                                name: protocol::error_name(class, code),
                            }),
                    )
                })
                .collect();
            out.push((i, self.interpret(i, &results)));
        }
        Ok(out)
    }

    /// A COV notification: new values for a subscribed object.
    async fn notified(&mut self, inbound: Inbound, actor: &Addr<BacnetActor>) {
        let Inbound::CovNotification {
            object,
            values,
            device,
            process_id,
            ..
        } = inbound
        else {
            return;
        };
        // Another subscriber's notification, or another device's object of the same number.
        if device != ObjectId::device(self.config.device_instance) || process_id != self.process_id
        {
            return;
        }
        let Some(i) = self
            .config
            .objects
            .iter()
            .position(|o| object_id(o) == object)
        else {
            return;
        };
        let pv = values
            .iter()
            .find(|p| p.property == property::PRESENT_VALUE)
            .and_then(|p| p.result.as_ref().ok())
            .and_then(|v| v.first());
        let Some(pv) = pv else {
            return;
        };
        let at = journal::now_ms();
        let result = match pv.to_value(self.config.objects[i].kind) {
            Ok(v) => {
                self.values.insert(self.config.objects[i].name.clone(), v);
                Ok((v, None))
            }
            Err(reason) => Err(self.message(&format!(
                "{}: unusable notification: {reason}",
                self.at(i, "present-value")
            ))),
        };
        actor.do_send(Update {
            at,
            results: vec![(i, result)],
            cov_active: self.cov_active.clone(),
        });
        self.report(at).await;
    }

    /// Journals the values when they changed (or the heartbeat is due).
    async fn report(&mut self, at: i64) {
        let heartbeat_ms = self.config.heartbeat_s.saturating_mul(1000);
        if !self.reporter.should_report(&self.values, at, heartbeat_ms) {
            return;
        }
        let readings: Vec<_> = self
            .config
            .objects
            .iter()
            .enumerate()
            .filter_map(|(i, o)| {
                let v = self.values.get(&o.name)?;
                Some(serde_json::json!({
                    "name": o.name,
                    "object": object_id(o).to_string(),
                    "value": v,
                    "unit": self.units[i],
                }))
            })
            .collect();
        let device = &self.config.name;
        let payload = serde_json::json!({ "device": device, "readings": readings, "ts": at });
        let mut item = device_event(device, "device.reading", payload);
        item.occurred_at = Some(at);
        // Awaited before the next read: a device's events reach the journal in order.
        match journal::ask(&self.journal, Append(item)).await {
            Ok(_) => self.reporter.reported(self.values.clone(), at),
            Err(e) => {
                tracing::warn!(device = %device, error = %e, "BACnet reading not journaled; tried again next time")
            }
        }
    }

    /// Writes or reads for the actor's messages.
    async fn command(&mut self, c: Command) -> Result<(), BacnetError> {
        match c {
            Command::Write {
                index,
                value,
                reply,
            } => {
                let object = object_id(&self.config.objects[index]);
                let r = self.write(object, value, self.config.priority).await;
                let lost = r.as_ref().err().filter(|e| e.link_lost()).cloned();
                let _ = reply.send(r);
                lost.map_or(Ok(()), Err)
            }
            Command::PriorityArray { index, reply } => {
                let r = self.priority_array(index).await;
                let lost = r.as_ref().err().filter(|e| e.link_lost()).cloned();
                let _ = reply.send(r);
                lost.map_or(Ok(()), Err)
            }
        }
    }

    async fn write(
        &mut self,
        object: ObjectId,
        value: WriteValue,
        priority: u8,
    ) -> Result<(), BacnetError> {
        let at = format!(
            "device {}, {object}, present-value @{priority}",
            self.config.name
        );
        self.request(&at, |id| {
            protocol::write_present_value(id, object, value, priority)
        })
        .await
        .map(|_| ())
    }

    async fn priority_array(&mut self, index: usize) -> Result<Vec<Option<Value>>, BacnetError> {
        let o = &self.config.objects[index];
        let (object, kind) = (object_id(o), o.kind);
        let at = self.at(index, "priority-array");
        let answer = self
            .request(&at, |id| {
                protocol::read_property(id, object, property::PRIORITY_ARRAY, None)
            })
            .await?;
        let values = self.values_of(answer, &at)?;
        values
            .iter()
            .map(|v| match v {
                AppValue::Null => Ok(None),
                v => v.to_value(kind).map(Some),
            })
            .collect::<Result<_, _>>()
            .map_err(|reason| BacnetError::Answer { at, reason })
    }

    /// Relinquishes (or re-asserts) every override remembered for this device from before
    /// the start. Relinquish is the default because the gateway no longer knows whether the
    /// reason for an override (a crowded waiting room, a manual request) still holds; an
    /// override left in place would pin the object at a priority nobody watches, while a
    /// relinquished one hands control back to the building's own schedule, and the rules
    /// write again from fresh readings.
    async fn settle_overrides(&mut self) -> Result<(), BacnetError> {
        let device = self.config.name.clone();
        let remembered = journal::ask(
            &self.journal,
            ListOverrides {
                device: device.clone(),
            },
        )
        .await?;
        for o in remembered {
            let Some(object) = ObjectId::parse(&o.object) else {
                tracing::warn!(device = %device, object = %o.object, "remembered override names no known object; forgotten");
                self.forget(&o).await?;
                continue;
            };
            let kind = ObjectKind::from_code(object.kind);
            let (value, by) = match (self.config.on_start, kind) {
                (OnStart::Reassert, Some(kind)) => {
                    let v = match o.value {
                        serde_json::Value::Bool(b) => Some(Value::Bool(b)),
                        serde_json::Value::Number(ref n) => n.as_f64().map(Value::Number),
                        _ => None,
                    };
                    match v.map(|v| protocol::write_value(kind, Some(v))) {
                        Some(Ok(w)) => (w, "gateway:start-reassert"),
                        _ => (WriteValue::Null, "gateway:start-relinquish"),
                    }
                }
                _ => (WriteValue::Null, "gateway:start-relinquish"),
            };
            let audit = DeviceWrite {
                by: by.into(),
                device: device.clone(),
                point: format!("{} @{}", o.object, o.priority),
                value: if value == WriteValue::Null {
                    serde_json::Value::Null
                } else {
                    o.value.clone()
                },
            };
            let journal = self.journal.clone();
            let result =
                devices::audited(&journal, audit, self.write(object, value, o.priority)).await;
            match result {
                Ok(()) if value == WriteValue::Null => {
                    tracing::info!(device = %device, object = %o.object, priority = o.priority, "override from before the start relinquished");
                    self.forget(&o).await?;
                }
                Ok(()) => {
                    tracing::info!(device = %device, object = %o.object, priority = o.priority, "override from before the start re-asserted");
                }
                // The device refuses the slot (object deleted, priority not commandable):
                // nothing of ours is held there.
                Err(e) if e.refused() => {
                    tracing::warn!(device = %device, object = %o.object, error = %e, "remembered override refused by the device; forgotten");
                    self.forget(&o).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn forget(&self, o: &DeviceOverride) -> Result<(), BacnetError> {
        journal::ask(
            &self.journal,
            ClearOverride {
                device: o.device.clone(),
                object: o.object.clone(),
                priority: o.priority,
            },
        )
        .await?;
        Ok(())
    }
}

/// Receives one datagram until `deadline`; `None` when it passed. Undecodable datagrams are
/// logged (sender and error only) and skipped.
async fn receive(
    socket: &UdpSocket,
    bind: SocketAddr,
    device: &str,
    deadline: Instant,
) -> Result<Option<(SocketAddr, Inbound)>, BacnetError> {
    let mut buf = [0u8; 1500];
    loop {
        let (n, from) = match tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
            Err(_) => return Ok(None),
            // ICMP port unreachable from an earlier send shows up here on Linux: the device
            // is down, which the missing answer reports in time.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Ok(Err(e)) => {
                return Err(BacnetError::Socket {
                    bind,
                    reason: e.to_string(),
                });
            }
            Ok(Ok(r)) => r,
        };
        match protocol::decode(&buf[..n]) {
            Ok(inbound) => return Ok(Some((from, inbound))),
            Err(e) => {
                tracing::warn!(device = %device, %from, error = %e, "undecodable BACnet datagram ignored")
            }
        }
    }
}

/// A command while the device is unreachable: refused, nothing is sent.
fn refuse(c: Command) {
    match c {
        Command::Write { reply, .. } => drop(reply.send(Err(BacnetError::NotConnected))),
        Command::PriorityArray { reply, .. } => drop(reply.send(Err(BacnetError::NotConnected))),
    }
}
