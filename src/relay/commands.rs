//! Cloud commands: kept in the journal before the broker is told they arrived, carried out one
//! at a time in the order received by a worker beside the connection, their replies kept.
//!
//! A command is acknowledged (PUBACK) only once its row has committed, so a gateway that stops
//! after that still carries it out when it starts again. Its reply is kept before it is
//! published and sent again until the broker acknowledges it: on the next connection when one
//! is lost with it, at the next start when the gateway stops. A command that was under way when
//! the gateway stopped is not run again, as nobody knows how far it got: it is answered that its
//! outcome is unknown. A command sent again under a `request_id` already taken is answered with
//! the reply kept for it (or, if it is still waiting, by that reply when it comes) and not run
//! twice: a reply lost with a connection is had by sending the command again.

use super::RelaySpawn;
use super::protocol::{self, Command, Contract};
use super::store::{self, Arrival, Reply, Taken};
use crate::journal::{self, AuditRecord, JournalError, Replay, Tx, Work};
use crate::metrics::METRICS;
use crate::reload::ReloadConfig;
use tokio::sync::mpsc;

/// Commands taken and not yet carried out; beyond this a command is refused as busy.
pub const WAITING: usize = 32;

/// This run of the gateway, as the commands it starts are marked: a command left started by
/// another run was cut short by its stop.
static RUN: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| uuid::Uuid::now_v7().simple().to_string());

/// A command for the worker: the contract it came under (its reply goes back under the same
/// one), its name, its payload, and its row when it was kept (one without a readable
/// `request_id` is refused, and nothing of it is kept).
struct Job {
    contract: Contract,
    name: String,
    payload: Vec<u8>,
    row: Option<i64>,
}

/// Keeps a command that arrived (see [`store::arrive`]).
#[derive(Debug)]
struct Arrive {
    request_id: String,
    contract: Contract,
    name: String,
    payload: Vec<u8>,
}

/// Records that a kept command is being carried out.
#[derive(Debug)]
struct Start(i64);

/// Keeps a command's reply.
#[derive(Debug)]
struct Finish {
    id: i64,
    reply: Vec<u8>,
}

/// Records that the broker acknowledged these commands' replies.
#[derive(Debug)]
struct Replied(Vec<i64>);

/// The commands a stopped relay left (see [`store::left_over`]).
#[derive(Debug)]
struct LeftOver;

/// The kept replies among these that the broker has not acknowledged.
#[derive(Debug)]
struct Unacknowledged(Vec<i64>);

crate::journal_work!(Arrive, Start, Finish, Replied, LeftOver, Unacknowledged);

impl Work for Unacknowledged {
    type Output = Vec<Reply>;
    const READ_ONLY: bool = true;
    fn run(self, tx: &mut Tx<'_>) -> Result<Vec<Reply>, JournalError> {
        store::unacknowledged(tx, &self.0)
    }
}

impl Work for Arrive {
    type Output = Arrival;
    fn run(self, tx: &mut Tx<'_>) -> Result<Arrival, JournalError> {
        let now = tx.now();
        store::arrive(
            tx,
            &self.request_id,
            self.contract,
            &self.name,
            &self.payload,
            now,
        )
    }
}

impl Work for Start {
    type Output = bool;
    fn run(self, tx: &mut Tx<'_>) -> Result<bool, JournalError> {
        let now = tx.now();
        store::start(tx, self.0, &RUN, now)
    }
}

impl Work for Finish {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<(), JournalError> {
        let now = tx.now();
        store::finish(tx, self.id, &self.reply, now)
    }
}

impl Work for Replied {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<(), JournalError> {
        let now = tx.now();
        store::replied(tx, &self.0, now)
    }
}

impl Work for LeftOver {
    type Output = (Vec<Taken>, Vec<Reply>);
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        let now = tx.now();
        let unknown = |request_id: &str| {
            protocol::reply(
                Some(request_id),
                Err(
                    "the gateway stopped while this command was under way; whether it took \
                     effect is unknown: check, and send it again under a new request_id if \
                     it did not"
                        .into(),
                ),
            )
        };
        store::left_over(tx, &RUN, WAITING, unknown, now)
    }
}

/// The relay's side of the command worker.
pub struct Commands {
    journal: actix::Addr<journal::JournalWriter>,
    queue: mpsc::Sender<Job>,
    /// One per job the worker finished: the reply to publish, or none (another relay of this
    /// run had started the command; it could not be started).
    pub replies: mpsc::UnboundedReceiver<Option<Reply>>,
    /// Replies put back in `replies` without the worker: kept ones to send again.
    again: mpsc::UnboundedSender<Option<Reply>>,
    /// Jobs queued whose end has not been taken from `replies` yet.
    pub waiting: usize,
}

impl Commands {
    /// Starts the worker (it ends when these `Commands` are dropped, or with the relay's
    /// arbiter) and hands it what a stopped relay left: the commands it never started, and the
    /// replies the broker never acknowledged (those of commands it never finished among them).
    pub async fn start(spawn: &RelaySpawn) -> Commands {
        let (queue, received) = mpsc::channel(WAITING);
        let (replied, replies) = mpsc::unbounded_channel();
        let mut commands = Commands {
            journal: spawn.journal.clone(),
            queue,
            replies,
            again: replied.clone(),
            waiting: 0,
        };
        match journal::ask(&spawn.journal, LeftOver).await {
            Ok((waiting, unacknowledged)) => {
                commands.send_again(unacknowledged);
                for t in waiting {
                    tracing::info!(command = %t.name, "cloud command taken before a stop; carrying it out now");
                    let job = Job {
                        contract: t.contract,
                        name: t.name,
                        payload: t.payload,
                        row: Some(t.id),
                    };
                    if commands.queue.try_send(job).is_ok() {
                        commands.waiting += 1;
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the cloud commands left by a stop")
            }
        }
        actix::spawn(work(spawn.clone(), received, replied));
        commands
    }

    /// Takes a command that arrived: keeps it and queues it for the worker, and answers at once
    /// the reply that needs no work (busy, a reply kept from before, a journal that cannot keep
    /// it). Returns only once the command is kept, so that the caller may acknowledge it; it is
    /// counted received then.
    pub async fn take(
        &mut self,
        contract: Contract,
        name: &str,
        payload: Vec<u8>,
    ) -> Option<Vec<u8>> {
        let answer = self.keep(contract, name, payload).await;
        METRICS.commands_received.add(1);
        answer
    }

    /// Queues again, for the next connection, these kept replies that a lost connection had
    /// taken and the broker never acknowledged (those it did meanwhile are left out).
    pub async fn lost(&mut self, ids: Vec<i64>) {
        if ids.is_empty() {
            return;
        }
        match journal::ask(&self.journal, Unacknowledged(ids)).await {
            Ok(replies) => self.send_again(replies),
            Err(e) => {
                tracing::warn!(error = %e, "cloud command replies lost with the connection; sent again at the next start")
            }
        }
    }

    fn send_again(&mut self, replies: Vec<Reply>) {
        for reply in replies {
            self.waiting += 1;
            let _ = self.again.send(Some(reply));
        }
    }

    /// Records, beside the connection, that the broker acknowledged these commands' replies; a
    /// mark lost with a stop only has them sent again.
    pub fn replied(&self, ids: Vec<i64>) {
        let journal = self.journal.clone();
        actix::spawn(async move {
            if let Err(e) = journal::ask(&journal, Replied(ids)).await {
                tracing::warn!(error = %e, "cloud command replies not marked acknowledged; sent again at the next start");
            }
        });
    }

    async fn keep(&mut self, contract: Contract, name: &str, payload: Vec<u8>) -> Option<Vec<u8>> {
        let request_id = match protocol::parse_command(name, &payload) {
            Ok(r) => Some(r.request_id),
            Err(r) => r.request_id,
        };
        if self.waiting >= WAITING {
            METRICS.commands_refused.add(1);
            tracing::warn!(command = name, "cloud command refused: too many waiting");
            return Some(protocol::reply(
                request_id.as_deref(),
                Err(format!(
                    "busy: {WAITING} commands are waiting; try again later"
                )),
            ));
        }
        let row = match &request_id {
            None => None,
            Some(request_id) => {
                let arrive = Arrive {
                    request_id: request_id.clone(),
                    contract,
                    name: name.to_string(),
                    payload: payload.clone(),
                };
                match journal::ask(&self.journal, arrive).await {
                    Ok(Arrival::New(row)) => Some(row),
                    Ok(Arrival::Underway) => return None,
                    Ok(Arrival::Done(reply)) => return Some(reply),
                    Ok(Arrival::Reused { name: earlier }) => {
                        METRICS.commands_refused.add(1);
                        return Some(protocol::reply(
                            Some(request_id),
                            Err(format!(
                                "request_id {request_id:?} was taken by an earlier {earlier} command; send this one under a new request_id"
                            )),
                        ));
                    }
                    Err(e) => {
                        METRICS.commands_refused.add(1);
                        tracing::error!(command = name, error = %e, "cloud command not kept; refused");
                        return Some(protocol::reply(
                            Some(request_id),
                            Err(format!("the gateway cannot keep the command: {e}")),
                        ));
                    }
                }
            }
        };
        let job = Job {
            contract,
            name: name.to_string(),
            payload,
            row,
        };
        match self.queue.try_send(job) {
            Ok(()) => {
                self.waiting += 1;
                None
            }
            // The worker is gone: the relay is stopping. A kept command is carried out by the
            // next relay.
            Err(_) => None,
        }
    }
}

/// Carries out queued commands one at a time and hands their replies back.
async fn work(
    spawn: RelaySpawn,
    mut received: mpsc::Receiver<Job>,
    replied: mpsc::UnboundedSender<Option<Reply>>,
) {
    while let Some(job) = received.recv().await {
        // The reply and the command it is kept for (none when it could not be kept); nothing
        // when the command was not started here.
        let done = match job.row {
            Some(row) => match journal::ask(&spawn.journal, Start(row)).await {
                Ok(true) => {
                    tracing::info!(command = %job.name, row, "cloud command under way");
                    let reply = command(&spawn, &job.name, &job.payload).await;
                    let finish = Finish {
                        id: row,
                        reply: reply.clone(),
                    };
                    match journal::ask(&spawn.journal, finish).await {
                        Ok(()) => {
                            tracing::info!(command = %job.name, row, "cloud command done; reply kept");
                            Some((reply, Some(row)))
                        }
                        Err(e) => {
                            tracing::error!(command = %job.name, error = %e, "cloud command's reply not kept");
                            Some((reply, None))
                        }
                    }
                }
                // Another relay of this gateway (a reload's) already took it.
                Ok(false) => None,
                Err(e) => {
                    tracing::error!(command = %job.name, error = %e, "cloud command not started; carried out at the next start");
                    None
                }
            },
            None => Some((command(&spawn, &job.name, &job.payload).await, None)),
        };
        let reply = done.map(|(payload, id)| Reply {
            id,
            contract: job.contract,
            name: job.name,
            payload,
        });
        if replied.send(reply).is_err() {
            return;
        }
    }
}

/// Validates, audits and carries out a command; returns the reply payload.
async fn command(spawn: &RelaySpawn, name: &str, payload: &[u8]) -> Vec<u8> {
    let journal = &spawn.journal;
    let audit = |action: &str, detail: String| AuditRecord {
        actor: "cloud".into(),
        action: action.into(),
        detail,
    };
    let request = match protocol::parse_command(name, payload) {
        Ok(r) => r,
        Err(refusal) => {
            METRICS.commands_refused.add(1);
            tracing::warn!(command = name, reason = %refusal, "cloud command refused");
            let detail = format!(
                "{name} request_id={:?} refused: {refusal}",
                refusal.request_id
            );
            let _ = journal::ask(journal, audit("command-refused", detail)).await;
            return protocol::reply(refusal.request_id.as_deref(), Err(refusal.message));
        }
    };
    let result = match request.command {
        Command::DlqReplay { destination, id } => {
            let by = format!("cloud:{}", request.request_id);
            journal::ask(
                journal,
                Replay {
                    destination,
                    id,
                    by,
                },
            )
            .await
            .map(|n| serde_json::json!({ "replayed": n }))
            .map_err(|e| e.to_string())
        }
        Command::ReloadConfig => match &spawn.control {
            Some(control) => control
                .send(ReloadConfig {
                    by: format!("cloud:{}", request.request_id),
                })
                .await
                .unwrap_or_else(|_| Err("the gateway is shutting down".into())),
            None => Err("reload is not available".into()),
        },
        Command::RoomState { room, hold, reason } => {
            let set = crate::facility::SetHold {
                room,
                hold: hold.map(|h| (h, reason)),
                by: format!("cloud:{}", request.request_id),
            };
            match spawn.rooms.addr() {
                Some(rooms) => match rooms.send(set).await {
                    Ok(r) => r
                        .map(|room| serde_json::json!({ "room": room }))
                        .map_err(|e| e.to_string()),
                    Err(_) => Err("facility rules are restarting; try again".into()),
                },
                None => Err("no rooms are configured on this gateway".into()),
            }
        }
        Command::SuspendIntegration {
            integration,
            reason,
        } => {
            let suspend = crate::suspension::Suspend {
                name: integration.clone(),
                reason,
                by: format!("cloud:{}", request.request_id),
            };
            journal::ask(journal, suspend)
                .await
                .map(|newly| {
                    serde_json::json!({ "integration": integration, "suspended": true, "already": !newly })
                })
                .map_err(|e| e.to_string())
        }
        #[cfg(feature = "fault-hooks")]
        Command::Stall { ms } => {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            Ok(serde_json::json!({ "stalled_ms": ms }))
        }
    };
    let detail = format!(
        "{name} request_id={} {}",
        request.request_id,
        match &result {
            Ok(v) => format!("ok {v}"),
            Err(e) => format!("failed: {e}"),
        }
    );
    let _ = journal::ask(journal, audit("command", detail)).await;
    protocol::reply(Some(&request.request_id), result)
}
