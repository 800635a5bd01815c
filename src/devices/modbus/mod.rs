//! Modbus TCP and RTU sensors: one [`ModbusActor`] per `[[devices.modbus]]` table, in its own
//! arbiter.
//!
//! A poll task owns the link (a TCP connection or a serial port) and reads every configured
//! register once per `poll_interval_ms`, each request bounded by `timeout_ms`. A timeout or a
//! broken link drops the connection and reconnects after a doubling, capped delay; a Modbus
//! exception is a value: the link stays up and only that register is in error. Polls whose
//! values differ from the last event (or that come after `heartbeat_s` without one) become a
//! `device.reading` event in the journal. The actor keeps the latest value of every register
//! and answers [`GetReadings`]; [`Write`] sets a holding register or coil between polls.
//!
//! **Invariant:** device errors never end the actor: it reports `Degraded` and keeps retrying,
//! because a device switched off or a USB adapter unplugged comes back without a restart.

pub mod config;
pub mod protocol;

use crate::devices::{self, DeviceWrite, device_event};
use crate::journal::{self, Append, JournalWriter};
use crate::supervisor::link::{self, Health};
use crate::supervisor::{HealthState, Running, Slot, Spawn, Supervisor};
use actix::prelude::*;
use config::{Function, Link, ModbusDevice, Register};
use protocol::{Reporter, Value};
use serde::Serialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_modbus::client::{self, Client};
use tokio_modbus::{Request, Response, Slave};

/// Why reading a device failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModbusError {
    /// The TCP connection or the serial port could not be opened.
    #[error("cannot open {target}: {reason}")]
    Connect { target: String, reason: String },
    /// No answer in time: the device is off, the unit id is wrong, or the line is broken.
    #[error("{at}: no answer within {timeout_ms} ms")]
    Timeout { at: String, timeout_ms: u64 },
    /// The connection broke or the answer did not fit the request.
    #[error("{at}: link failed: {reason}")]
    Link { at: String, reason: String },
    /// The device refused the request with a Modbus exception.
    #[error("{at}: the device answered exception {code:#04x} ({name})")]
    Exception { at: String, code: u8, name: String },
    /// The answer arrived but is not a value of the configured type.
    #[error("{at}: {source}")]
    Decode {
        at: String,
        source: protocol::DecodeError,
    },
    /// A write to a register that is not configured or cannot be written.
    #[error("register {register}: {reason}")]
    NotWritable { register: String, reason: String },
    /// A write of a value the register cannot hold.
    #[error("{at}: {source}")]
    Encode {
        at: String,
        source: protocol::EncodeError,
    },
    /// An address past the 16-bit range; validation refuses these, so this is a bug.
    #[error("{at}: address beyond 65535")]
    Address { at: String },
    /// A write while the link is down; nothing was written.
    #[error("the device is not connected; nothing was written")]
    NotConnected,
    /// The write's audit record could not be committed; nothing was written.
    #[error("nothing was written: {0}")]
    Journal(#[from] crate::journal::JournalError),
}

impl ModbusError {
    /// True when the connection must be dropped and opened again: after a timeout a late answer
    /// could be taken for the next request's, and a broken link does not heal by itself.
    pub fn link_lost(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::Timeout { .. } | Self::Link { .. }
        )
    }
}

/// Starts the actor of one configured device; kept by the supervisor for restarts.
pub struct ModbusSpawn {
    config: Arc<ModbusDevice>,
    journal: Addr<JournalWriter>,
    current: ActorSlot,
}

impl ModbusSpawn {
    pub fn new(config: ModbusDevice, journal: Addr<JournalWriter>) -> Self {
        ModbusSpawn {
            config: Arc::new(config),
            journal,
            current: ActorSlot::default(),
        }
    }

    /// Where the device's running actor can be found, across restarts (for [`GetReadings`]).
    pub fn slot(&self) -> ActorSlot {
        self.current.clone()
    }
}

/// The address of a device's current actor; empty before its first start.
pub type ActorSlot = Slot<ModbusActor>;

impl Spawn for ModbusSpawn {
    fn kind(&self) -> &'static str {
        "modbus-device"
    }

    fn spawn(&self, name: &str, supervisor: Addr<Supervisor>) -> Box<dyn Running> {
        // Room for a few writes; more are refused at once rather than queued behind a slow link.
        let (writes, writes_rx) = mpsc::channel(8);
        let latest = self
            .config
            .registers
            .iter()
            .map(|r| Reading {
                name: r.name.clone(),
                value: None,
                unit: r.unit.clone(),
                read_at: None,
                error: None,
            })
            .collect();
        let (config, journal) = (self.config.clone(), self.journal.clone());
        // The poll task stops between requests; closing the link is bounded by the timeout.
        let grace = self.config.timeout() + Duration::from_secs(1);
        let (running, addr) = link::start_actor(name, supervisor, grace, move |link| ModbusActor {
            poller: Some(Poller {
                config: config.clone(),
                journal: journal.clone(),
                health: link.health,
                reporter: Reporter::default(),
                blocks: config::plan_reads(&config.registers),
                writes: writes_rx,
            }),
            config,
            writes,
            journal,
            shutdown: Some(link.shutdown),
            latest,
        });
        self.current.set(Some(addr));
        running
    }
}

/// The latest state of one register.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reading {
    /// The register's configured name.
    pub name: String,
    /// The last value read; kept while later reads fail (see `read_at` and `error`).
    pub value: Option<Value>,
    /// The configured unit (empty for none).
    pub unit: String,
    /// When `value` was read (ms since the epoch).
    pub read_at: Option<i64>,
    /// Why the most recent read failed; `None` once a read succeeds again.
    pub error: Option<String>,
}

/// The latest state of every configured register, in configuration order.
#[derive(Message)]
#[rtype(result = "Vec<Reading>")]
pub struct GetReadings;

/// Writes an engineering value (the inverse of scale and offset is applied) to a configured
/// holding register (FC 06, or FC 16 for 32-bit types) or coil (FC 05). Answered once the device
/// confirmed it; the next poll reads the new value back.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<(), ModbusError>")]
pub struct Write {
    /// The register's configured name.
    pub register: String,
    /// A number for a holding register (in engineering units), a bool for a coil or a `bool`
    /// holding register.
    pub value: Value,
    /// Who asked, for the audit (e.g. `rule:crowding-waiting-a`).
    pub by: String,
}

/// What the poll task writes.
#[derive(Debug)]
enum WriteData {
    Coil(bool),
    Registers(Vec<u16>),
}

/// A write handed to the poll task, with where to answer.
struct WriteRequest {
    /// Index of the register in the configuration.
    index: usize,
    data: WriteData,
    reply: oneshot::Sender<Result<(), ModbusError>>,
}

/// Checks a write against the register map and encodes its value.
fn prepare_write(config: &ModbusDevice, w: &Write) -> Result<(usize, WriteData), ModbusError> {
    let not_writable = |reason: &str| ModbusError::NotWritable {
        register: w.register.clone(),
        reason: reason.into(),
    };
    let (index, r) = config
        .registers
        .iter()
        .enumerate()
        .find(|(_, r)| r.name == w.register)
        .ok_or_else(|| not_writable("no register of this device has that name"))?;
    let encode = |source| ModbusError::Encode {
        at: describe(r),
        source,
    };
    match (r.function, w.value) {
        (Function::Coil, Value::Bool(b)) => Ok((index, WriteData::Coil(b))),
        (Function::Holding, value) => protocol::encode_words(&r.decoding(), value)
            .map(|words| (index, WriteData::Registers(words)))
            .map_err(encode),
        (Function::Coil, Value::Number(_)) => Err(encode(protocol::EncodeError::Kind {
            data_type: r.data_type(),
            expected: "true or false",
        })),
        (Function::Input | Function::DiscreteInput, _) => Err(not_writable(
            "input registers and discrete inputs are read-only",
        )),
    }
}

/// One poll's outcome per register (configuration order), from the poll task.
#[derive(Message)]
#[rtype(result = "()")]
struct Polled {
    at: i64,
    results: Vec<Result<Value, String>>,
}

/// The link is down: every register is in error until the next successful poll.
#[derive(Message)]
#[rtype(result = "()")]
struct LinkDown(String);

/// One device's actor: holds the latest readings; its poll task does the I/O.
pub struct ModbusActor {
    /// Taken when the poll task starts.
    poller: Option<Poller>,
    config: Arc<ModbusDevice>,
    /// To the poll task, which owns the link.
    writes: mpsc::Sender<WriteRequest>,
    journal: Addr<JournalWriter>,
    shutdown: Option<watch::Receiver<bool>>,
    latest: Vec<Reading>,
}

impl Actor for ModbusActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (Some(poller), Some(shutdown)) = (self.poller.take(), self.shutdown.take()) else {
            return;
        };
        let me = ctx.address();
        ctx.spawn(
            poller
                .run(shutdown, me)
                .into_actor(self)
                .map(|_, _, ctx| ctx.stop()),
        );
    }
}

impl Handler<GetReadings> for ModbusActor {
    type Result = Vec<Reading>;

    fn handle(&mut self, _: GetReadings, _: &mut Context<Self>) -> Vec<Reading> {
        self.latest.clone()
    }
}

impl Handler<Write> for ModbusActor {
    type Result = ResponseFuture<Result<(), ModbusError>>;

    fn handle(&mut self, msg: Write, _: &mut Context<Self>) -> Self::Result {
        let prepared = prepare_write(&self.config, &msg);
        let writes = self.writes.clone();
        let journal = self.journal.clone();
        let audit = DeviceWrite {
            by: msg.by,
            device: self.config.name.clone(),
            point: msg.register,
            value: serde_json::to_value(msg.value).unwrap_or_default(),
        };
        Box::pin(async move {
            let (index, data) = prepared?;
            devices::audited(&journal, audit, async move {
                let (reply, answer) = oneshot::channel();
                writes
                    .try_send(WriteRequest { index, data, reply })
                    .map_err(|_| ModbusError::NotConnected)?;
                answer.await.map_err(|_| ModbusError::NotConnected)?
            })
            .await
        })
    }
}

impl Handler<Polled> for ModbusActor {
    type Result = ();

    fn handle(&mut self, msg: Polled, _: &mut Context<Self>) {
        for (reading, result) in self.latest.iter_mut().zip(msg.results) {
            match result {
                Ok(v) => {
                    reading.value = Some(v);
                    reading.read_at = Some(msg.at);
                    reading.error = None;
                }
                Err(e) => reading.error = Some(e),
            }
        }
    }
}

impl Handler<LinkDown> for ModbusActor {
    type Result = ();

    fn handle(&mut self, msg: LinkDown, _: &mut Context<Self>) {
        for reading in &mut self.latest {
            reading.error = Some(msg.0.clone());
        }
    }
}

/// How a connected session ended.
enum SessionEnd {
    Shutdown,
    Lost(ModbusError),
}

/// The poll task: owns the link, the reporting state and the health last reported.
struct Poller {
    config: Arc<ModbusDevice>,
    journal: Addr<JournalWriter>,
    health: Health,
    reporter: Reporter,
    writes: mpsc::Receiver<WriteRequest>,
    /// The reads one poll makes (see `config::plan_reads`).
    blocks: Vec<config::Block>,
}

impl Poller {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>, actor: Addr<ModbusActor>) {
        let Some(link) = self.config.link() else {
            // Unreachable for a validated config; said loudly rather than polled forever.
            self.health.exit("neither host nor serial is configured");
            return;
        };
        let mut failures = 0u32;
        loop {
            let end = tokio::select! {
                c = self.connect(&link) => match c {
                    Ok(mut ctx) => {
                        let end = self.session(&mut ctx, &mut shutdown, &mut failures, &actor).await;
                        let _ = tokio::time::timeout(self.config.timeout(), ctx.disconnect()).await;
                        end
                    }
                    Err(e) => SessionEnd::Lost(e),
                },
                _ = shutdown.changed() => SessionEnd::Shutdown,
            };
            let SessionEnd::Lost(error) = end else {
                return;
            };
            failures += 1;
            let message = self.message(&error.to_string());
            // The readings are marked first, so that whoever sees the health degraded and then
            // asks for the readings (the actor's mailbox being in order) sees them failed too.
            actor.do_send(LinkDown(message.clone()));
            if self.set_health(HealthState::Degraded, Some(message)) {
                tracing::warn!(device = %self.config.name, %error, "Modbus device unreachable; reconnecting with backoff");
            }
            let backoff = tokio::time::sleep(self.config.reconnect_delay(failures));
            tokio::pin!(backoff);
            loop {
                tokio::select! {
                    _ = &mut backoff => break,
                    _ = shutdown.changed() => return,
                    Some(w) = self.writes.recv() => {
                        let _ = w.reply.send(Err(ModbusError::NotConnected));
                    }
                }
            }
        }
    }

    /// The text the supervisor and the readings show: device first, so that it stands alone.
    fn message(&self, error: &str) -> String {
        format!("modbus device {}: {error}", self.config.name)
    }

    /// Reports health when it changed; true if it did.
    fn set_health(&mut self, state: HealthState, error: Option<String>) -> bool {
        self.health.report(state, error)
    }

    async fn connect(&self, link: &Link) -> Result<client::Context, ModbusError> {
        let slave = Slave(self.config.unit_id);
        match link {
            Link::Tcp { host, port } => {
                let target = format!("{host}:{port}");
                let connect = tokio::net::TcpStream::connect((host.as_str(), *port));
                let stream = tokio::time::timeout(self.config.timeout(), connect)
                    .await
                    .map_err(|_| ModbusError::Connect {
                        target: target.clone(),
                        reason: format!("no connection within {} ms", self.config.timeout_ms),
                    })?
                    .map_err(|e| ModbusError::Connect {
                        target,
                        reason: e.to_string(),
                    })?;
                // Requests are tiny and each waits for its answer: Nagle would only add delay.
                let _ = stream.set_nodelay(true);
                Ok(client::tcp::attach_slave(stream, slave))
            }
            Link::Rtu { path } => {
                let c = &self.config;
                let builder = tokio_serial::new(path.to_string_lossy(), c.baud)
                    .parity(match c.parity {
                        config::Parity::None => tokio_serial::Parity::None,
                        config::Parity::Even => tokio_serial::Parity::Even,
                        config::Parity::Odd => tokio_serial::Parity::Odd,
                    })
                    .stop_bits(match c.stop_bits {
                        2 => tokio_serial::StopBits::Two,
                        _ => tokio_serial::StopBits::One,
                    })
                    .data_bits(match c.data_bits {
                        5 => tokio_serial::DataBits::Five,
                        6 => tokio_serial::DataBits::Six,
                        7 => tokio_serial::DataBits::Seven,
                        _ => tokio_serial::DataBits::Eight,
                    });
                let port = tokio_serial::SerialStream::open(&builder).map_err(|e| {
                    ModbusError::Connect {
                        target: path.display().to_string(),
                        reason: e.to_string(),
                    }
                })?;
                Ok(client::rtu::attach_slave(port, slave))
            }
        }
    }

    /// Polls until the link is lost or shutdown is asked for.
    async fn session(
        &mut self,
        ctx: &mut client::Context,
        shutdown: &mut watch::Receiver<bool>,
        failures: &mut u32,
        actor: &Addr<ModbusActor>,
    ) -> SessionEnd {
        let mut tick = tokio::time::interval(self.config.poll_interval());
        // A slow device delays the schedule instead of causing a burst of catch-up polls.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return SessionEnd::Shutdown,
                Some(w) = self.writes.recv() => {
                    let register = &self.config.registers[w.index];
                    let result = write(ctx, register, w.data, &self.config).await;
                    let lost = result.as_ref().err().filter(|e| e.link_lost()).cloned();
                    let _ = w.reply.send(result);
                    match lost {
                        Some(e) => return SessionEnd::Lost(e),
                        None => continue,
                    }
                }
            }
            let at = journal::now_ms();
            let mut slots: Vec<Option<Result<Value, ModbusError>>> =
                vec![None; self.config.registers.len()];
            for block in &self.blocks {
                let read = tokio::select! {
                    r = read_block(ctx, block, &self.config) => r,
                    _ = shutdown.changed() => return SessionEnd::Shutdown,
                };
                match read {
                    Err(e) => return SessionEnd::Lost(e),
                    Ok(values) => {
                        for (i, v) in values {
                            slots[i] = Some(v);
                        }
                    }
                }
            }
            let results = slots
                .into_iter()
                .zip(&self.config.registers)
                .map(|(v, r)| v.unwrap_or_else(|| Err(ModbusError::Address { at: describe(r) })))
                .collect();
            *failures = 0;
            self.polled(at, results, actor).await;
        }
    }

    /// Health, latest values and (when due) an event for one complete poll.
    async fn polled(
        &mut self,
        at: i64,
        results: Vec<Result<Value, ModbusError>>,
        actor: &Addr<ModbusActor>,
    ) {
        let errors: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().err().map(ToString::to_string))
            .collect();
        match errors.as_slice() {
            [] => {
                if self.set_health(HealthState::Healthy, None) {
                    tracing::info!(device = %self.config.name, "Modbus device reads");
                }
            }
            [first, rest @ ..] => {
                let more = if rest.is_empty() {
                    String::new()
                } else {
                    format!(" (and {} more)", rest.len())
                };
                let message = self.message(&format!("{first}{more}"));
                if self.set_health(HealthState::Degraded, Some(message)) {
                    tracing::warn!(device = %self.config.name, error = %first, failed = errors.len(), "Modbus registers failed");
                }
            }
        }
        let mut values = BTreeMap::new();
        let mut readings = Vec::new();
        for (register, result) in self.config.registers.iter().zip(&results) {
            if let Ok(v) = result {
                values.insert(register.name.clone(), *v);
                readings.push(serde_json::json!({
                    "name": register.name,
                    "value": v,
                    "unit": register.unit,
                }));
            }
        }
        actor.do_send(Polled {
            at,
            results: results
                .into_iter()
                .map(|r| r.map_err(|e| self.message(&e.to_string())))
                .collect(),
        });
        let heartbeat_ms = self.config.heartbeat_s.saturating_mul(1000);
        if !self.reporter.should_report(&values, at, heartbeat_ms) {
            return;
        }
        let device = &self.config.name;
        let payload = serde_json::json!({ "device": device, "readings": readings, "ts": at });
        let mut item = device_event(device, "device.reading", payload);
        item.occurred_at = Some(at);
        // Awaited before the next poll: a device's events reach the journal in poll order.
        match journal::ask(&self.journal, Append(item)).await {
            Ok(_) => self.reporter.reported(values, at),
            Err(e) => {
                tracing::warn!(device = %device, error = %e, "Modbus reading not journaled; tried again next poll")
            }
        }
    }
}

/// How errors name a register: `register co2 (input register 5)`.
fn describe(r: &Register) -> String {
    format!(
        "register {} ({} {})",
        r.name,
        r.function.as_str(),
        r.address
    )
}

/// Sends one request and waits (bounded) for its answer; an exception becomes an error.
async fn call(
    ctx: &mut client::Context,
    request: Request<'_>,
    at: &str,
    device: &ModbusDevice,
) -> Result<Response, ModbusError> {
    tokio::time::timeout(device.timeout(), ctx.call(request))
        .await
        .map_err(|_| ModbusError::Timeout {
            at: at.into(),
            timeout_ms: device.timeout_ms,
        })?
        .map_err(|e| ModbusError::Link {
            at: at.into(),
            reason: e.to_string(),
        })?
        .map_err(|code| {
            let code = u8::from(code);
            ModbusError::Exception {
                at: at.into(),
                code,
                name: protocol::exception_name(code),
            }
        })
}

/// The register's wire address. Validation keeps addresses within 0..=65535; a larger one
/// would be a bug, answered as an error rather than a panic.
fn address(r: &Register, at: &str) -> Result<u16, ModbusError> {
    u16::try_from(r.address).map_err(|_| ModbusError::Address { at: at.into() })
}

/// Reads a block with one request and decodes each of its registers. When the device refuses
/// the block (an exception), each register is read alone, so that the error names the one it
/// concerns and the others still read. `Err` only when the link is lost.
async fn read_block(
    ctx: &mut client::Context,
    block: &config::Block,
    device: &ModbusDevice,
) -> Result<Vec<(usize, Result<Value, ModbusError>)>, ModbusError> {
    let single = |i: usize| &device.registers[i];
    if let [(i, _)] = block.members.as_slice() {
        return match read(ctx, single(*i), device).await {
            Err(e) if e.link_lost() => Err(e),
            r => Ok(vec![(*i, r)]),
        };
    }
    let at = format!(
        "{} {}..{}",
        block.function.as_str(),
        block.start,
        u32::from(block.start) + u32::from(block.count) - 1
    );
    let (start, count) = (block.start, block.count);
    let request = match block.function {
        Function::Holding => Request::ReadHoldingRegisters(start, count),
        Function::Input => Request::ReadInputRegisters(start, count),
        Function::Coil => Request::ReadCoils(start, count),
        Function::DiscreteInput => Request::ReadDiscreteInputs(start, count),
    };
    let answer = match call(ctx, request, &at, device).await {
        Ok(answer) => answer,
        Err(e) if e.link_lost() => return Err(e),
        Err(_) => {
            let mut out = Vec::with_capacity(block.members.len());
            for (i, _) in &block.members {
                match read(ctx, single(*i), device).await {
                    Err(e) if e.link_lost() => return Err(e),
                    r => out.push((*i, r)),
                }
            }
            return Ok(out);
        }
    };
    let out = block
        .members
        .iter()
        .map(|&(i, offset)| {
            let r = single(i);
            let (from, to) = (usize::from(offset), usize::from(offset + r.count()));
            let decoded = match &answer {
                Response::ReadHoldingRegisters(words) | Response::ReadInputRegisters(words) => {
                    words
                        .get(from..to)
                        .map(|w| protocol::decode_words(&r.decoding(), w))
                }
                Response::ReadCoils(bits) | Response::ReadDiscreteInputs(bits) => {
                    bits.get(from..to).map(protocol::decode_bits)
                }
                _ => None,
            };
            let value = match decoded {
                Some(v) => v.map_err(|source| ModbusError::Decode {
                    at: describe(r),
                    source,
                }),
                None => Err(ModbusError::Link {
                    at: describe(r),
                    reason: format!("the answer to {at} is too short"),
                }),
            };
            (i, value)
        })
        .collect();
    Ok(out)
}

/// Reads and decodes one register.
async fn read(
    ctx: &mut client::Context,
    r: &Register,
    device: &ModbusDevice,
) -> Result<Value, ModbusError> {
    let at = describe(r);
    let address = address(r, &at)?;
    let count = r.count();
    let request = match r.function {
        Function::Holding => Request::ReadHoldingRegisters(address, count),
        Function::Input => Request::ReadInputRegisters(address, count),
        Function::Coil => Request::ReadCoils(address, count),
        Function::DiscreteInput => Request::ReadDiscreteInputs(address, count),
    };
    let decoded = match call(ctx, request, &at, device).await? {
        Response::ReadHoldingRegisters(words) | Response::ReadInputRegisters(words) => {
            protocol::decode_words(&r.decoding(), &words)
        }
        // Bits come packed in whole bytes; the padding past `count` is not data.
        Response::ReadCoils(mut bits) | Response::ReadDiscreteInputs(mut bits) => {
            bits.truncate(usize::from(count));
            protocol::decode_bits(&bits)
        }
        other => {
            return Err(ModbusError::Link {
                at,
                reason: format!("unexpected answer {other:?}"),
            });
        }
    };
    decoded.map_err(|source| ModbusError::Decode { at, source })
}

/// Writes one prepared value (tokio-modbus checks that the echo matches the request).
async fn write(
    ctx: &mut client::Context,
    r: &Register,
    data: WriteData,
    device: &ModbusDevice,
) -> Result<(), ModbusError> {
    let at = describe(r);
    let address = address(r, &at)?;
    let request = match data {
        WriteData::Coil(on) => Request::WriteSingleCoil(address, on),
        WriteData::Registers(words) => match words.as_slice() {
            [word] => Request::WriteSingleRegister(address, *word),
            _ => Request::WriteMultipleRegisters(address, Cow::Owned(words)),
        },
    };
    call(ctx, request, &at, device).await.map(|_| ())
}
