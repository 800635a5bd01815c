//! Kiosk ticket printers (ESC/POS over a serial port): one [`PrinterActor`] per
//! `[[devices.printer]]` table, in its own arbiter.
//!
//! Tickets are outbox rows of the destination `printer:<name>`, committed with their check-in.
//! The actor's task owns the port: it reads the real-time status (`DLE EOT` 1, 2, 4, and 3 on
//! an error) every `status_poll_ms` and whenever a ticket is committed, reports the condition
//! to the supervisor (and as a `printer.status` event when it changes), and while the printer
//! can print, claims tickets one at a time, in order, and writes them. A ticket waiting longer
//! than `fail_after_s` since check-in is dead-lettered with the reason and reported as
//! `printer.ticket_failed` (ticket number and queue only) so that staff can write it by hand.
//!
//! **Invariant:** a ticket is marked printed only after its bytes were written and the status
//! read right after them still allows printing; otherwise it prints again on recovery (a
//! duplicate slip beats a missing one).
//! **Invariant:** nothing the printer sends stops the actor: bytes that are not status answers
//! are counted and skipped; a printer that gives no answer is offline.

pub mod config;
pub mod protocol;

use crate::devices::device_event;
use crate::journal::{self, Append, Claim, Delivered, Failed, JournalWriter, OutboxRow, Peek};
use crate::queue::{TicketJob, TicketOrder};
use crate::supervisor::link::{self, Health};
use crate::supervisor::{HealthState, Running, Spawn, Supervisor};
use actix::prelude::*;
use config::PrinterConfig;
use protocol::Ticket;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_serial::SerialStream;

/// The event kind (and journal item kind) of a ticket's print job.
pub const TICKET_KIND: &str = "printer.ticket";

/// The outbox destination of a printer.
pub fn destination(printer: &str) -> String {
    format!("printer:{printer}")
}

/// The printers of the running configuration, shared with the check-in API and the preview
/// page; replaced on reload.
#[derive(Clone, Default)]
pub struct Registry(Arc<RwLock<Vec<PrinterConfig>>>);

impl Registry {
    pub fn new(printers: Vec<PrinterConfig>) -> Self {
        Registry(Arc::new(RwLock::new(printers)))
    }

    pub fn set(&self, printers: Vec<PrinterConfig>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = printers;
    }

    pub fn get(&self, name: &str) -> Option<PrinterConfig> {
        let printers = self.0.read().unwrap_or_else(|p| p.into_inner());
        printers.iter().find(|p| p.name == name).cloned()
    }

    /// The print job order for a check-in to `queue`: the printer it names, else the queue's
    /// default printer, else none. A named printer that is not configured is refused.
    pub fn order(&self, queue: &str, named: Option<&str>) -> Result<Option<TicketOrder>, String> {
        let printers = self.0.read().unwrap_or_else(|p| p.into_inner());
        let printer = match named {
            Some(name) => Some(
                printers
                    .iter()
                    .find(|p| p.name == name)
                    .ok_or_else(|| format!("\"printer\": no printer is named {name:?}"))?,
            ),
            None => printers
                .iter()
                .find(|p| p.default_for.iter().any(|q| q == queue)),
        };
        Ok(printer.map(|p| TicketOrder {
            printer: p.name.clone(),
            minutes_per_patient: p.minutes_per_patient,
        }))
    }
}

/// `2026-11-24 18:40` for a time in ms since the epoch, shifted to the printer's local time.
fn issued_text(at_ms: i64, utc_offset_min: i32) -> String {
    let local = at_ms
        .saturating_add(i64::from(utc_offset_min) * 60_000)
        .max(0);
    let t = std::time::UNIX_EPOCH + Duration::from_millis(local as u64);
    let text = humantime::format_rfc3339_seconds(t).to_string();
    format!("{} {}", &text[..10], &text[11..16])
}

/// The ticket printed for a job committed at `issued_at` (ms since the epoch).
pub fn ticket_for(config: &PrinterConfig, job: &TicketJob, issued_at: i64) -> Ticket {
    Ticket {
        clinic: config.clinic_name.clone(),
        number: job.ticket.clone(),
        queue: config.queue_label(&job.queue).to_string(),
        issued: issued_text(
            issued_at,
            config
                .utc_offset_min
                .unwrap_or_else(|| crate::clock::offset_min(issued_at)),
        ),
        wait_min: job.estimated_wait_min,
        qr: config.qr_payload(&job.ticket, &job.queue, job.entry),
    }
}

/// A made-up ticket for the preview page: the printer's first default queue (or `general`),
/// ticket 42, three patients ahead.
pub fn sample_ticket(config: &PrinterConfig, now: i64) -> Ticket {
    let queue = config
        .default_for
        .first()
        .cloned()
        .unwrap_or_else(|| "general".into());
    let job = TicketJob {
        entry: 42,
        ticket: crate::queue::ticket_label(&queue, 42),
        queue,
        waiting_ahead: 3,
        estimated_wait_min: 3 * config.minutes_per_patient,
    };
    ticket_for(config, &job, now)
}

/// Why talking to the printer failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PrinterError {
    #[error("cannot open {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("no answer to status within {0} ms")]
    NoAnswer(u64),
    #[error("writing the ticket took more than {0} ms")]
    WriteTimeout(u64),
    #[error("serial port failed: {0}")]
    Io(String),
}

/// The printer's condition, as health, events and the decision to print see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// It answered and can print; `near_end` when the roll is nearly used up.
    Ready { near_end: bool },
    /// It answered with problems that stop printing (e.g. `paper end`, `cover open`).
    Stopped(Vec<&'static str>),
    /// No usable answer: the port cannot be opened, or status is not answered in time.
    Offline(String),
}

impl Condition {
    fn from_status(s: &protocol::Status) -> Condition {
        if s.printable() {
            Condition::Ready {
                near_end: s.paper_near_end,
            }
        } else {
            Condition::Stopped(s.problems())
        }
    }

    pub fn printable(&self) -> bool {
        matches!(self, Condition::Ready { .. })
    }

    /// Short name: `ready`, `paper near end`, `paper end`, `cover open, paper end`, `offline`.
    pub fn label(&self) -> String {
        match self {
            Condition::Ready { near_end: false } => "ready".into(),
            Condition::Ready { near_end: true } => "paper near end".into(),
            Condition::Stopped(problems) => problems.join(", "),
            Condition::Offline(_) => "offline".into(),
        }
    }

    fn detail(&self) -> Option<&str> {
        match self {
            Condition::Offline(why) => Some(why),
            _ => None,
        }
    }
}

/// Starts the actor of one configured printer; kept by the supervisor for restarts.
pub struct PrinterSpawn {
    config: Arc<PrinterConfig>,
    journal: Addr<JournalWriter>,
}

impl PrinterSpawn {
    pub fn new(config: PrinterConfig, journal: Addr<JournalWriter>) -> Self {
        PrinterSpawn {
            config: Arc::new(config),
            journal,
        }
    }
}

impl Spawn for PrinterSpawn {
    fn kind(&self) -> &'static str {
        "ticket-printer"
    }

    fn spawn(&self, name: &str, supervisor: Addr<Supervisor>) -> Box<dyn Running> {
        let (config, journal) = (self.config.clone(), self.journal.clone());
        // One cycle is bounded by four status reads and one ticket write.
        let bound = self.config.status_timeout() * 8 + self.config.write_timeout();
        // A ticket in flight stays in flight and goes back in line when the actor restarts.
        let grace = bound + Duration::from_secs(1);
        let (running, _) = link::start_actor(name, supervisor, grace, move |link| PrinterActor {
            worker: Some(Worker {
                config,
                journal,
                health: link.health,
                port: None,
                condition: None,
                noise: 0,
                noisy_reads: 0,
            }),
            shutdown: Some(link.shutdown),
        });
        running
    }
}

/// One printer's actor; its task does the I/O.
pub struct PrinterActor {
    worker: Option<Worker>,
    shutdown: Option<watch::Receiver<bool>>,
}

impl Actor for PrinterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (Some(worker), Some(shutdown)) = (self.worker.take(), self.shutdown.take()) else {
            return;
        };
        ctx.spawn(
            worker
                .run(shutdown)
                .into_actor(self)
                .map(|_, _, ctx| ctx.stop()),
        );
    }
}

/// The task: owns the port, the last condition reported and the noise count.
struct Worker {
    config: Arc<PrinterConfig>,
    journal: Addr<JournalWriter>,
    health: Health,
    port: Option<SerialStream>,
    condition: Option<Condition>,
    /// Bytes received that were not status answers, and the status reads that had some.
    noise: u64,
    noisy_reads: u64,
}

/// How one ticket went.
enum Printed {
    Yes,
    /// Not printed; the printer's condition explains why and printing pauses.
    No(String),
}

impl Worker {
    fn destination(&self) -> String {
        destination(&self.config.name)
    }

    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let destination = self.destination();
        let signal = journal::signal(&self.journal, &destination).await;
        // A ticket left in flight by an earlier run of this actor goes back in line.
        journal::put_back_in_flight(
            &self.journal,
            &destination,
            "the printer actor stopped while printing".into(),
        )
        .await;
        loop {
            let condition = self.read_condition().await;
            self.set_condition(condition.clone()).await;
            if condition.printable() {
                self.print_waiting().await;
            } else {
                self.expire_waiting(&condition).await;
            }
            tokio::select! {
                _ = signal.notified() => {}
                _ = tokio::time::sleep(self.config.status_poll()) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Reports a new condition to the supervisor and, as `printer.status`, to the cloud.
    async fn set_condition(&mut self, condition: Condition) {
        if self.condition.as_ref() == Some(&condition) {
            return;
        }
        let printer = &self.config.name;
        let label = condition.label();
        let (state, error) = match &condition {
            Condition::Ready { near_end: false } => (HealthState::Healthy, None),
            Condition::Offline(why) => (
                HealthState::Degraded,
                Some(format!("printer {printer}: offline ({why})")),
            ),
            _ => (
                HealthState::Degraded,
                Some(format!("printer {printer}: {label}")),
            ),
        };
        match &error {
            None => tracing::info!(printer = %printer, "printer ready"),
            Some(e) => tracing::warn!(printer = %printer, condition = %e, "printer condition"),
        }
        self.health.report(state, error);
        let payload = serde_json::json!({
            "printer": printer,
            "condition": label,
            "printable": condition.printable(),
            "detail": condition.detail(),
        });
        match journal::ask(
            &self.journal,
            Append(device_event(printer, "printer.status", payload)),
        )
        .await
        {
            // Kept unreported on failure, so the next status read tries the event again.
            Ok(_) => self.condition = Some(condition),
            Err(e) => {
                tracing::warn!(printer = %printer, error = %e, "printer status event not journaled")
            }
        }
    }

    /// Opens the port if needed and reads `DLE EOT` 1, 2, 4 (and 3 on an error).
    async fn read_condition(&mut self) -> Condition {
        match self.read_status().await {
            Ok(status) => Condition::from_status(&status),
            Err(e) => {
                if matches!(e, PrinterError::Io(_)) {
                    // A broken port (adapter unplugged) is opened afresh next time.
                    self.port = None;
                }
                Condition::Offline(e.to_string())
            }
        }
    }

    async fn read_status(&mut self) -> Result<protocol::Status, PrinterError> {
        let printer = self.ask_status(1).await?;
        let cause = self.ask_status(2).await?;
        let error = if protocol::reports_error(cause) {
            Some(self.ask_status(3).await?)
        } else {
            None
        };
        let paper = self.ask_status(4).await?;
        // Only bytes with the fixed bits are taken as answers, so this cannot fail; were it to,
        // the printer is as good as not answering.
        protocol::decode(printer, cause, error, paper).map_err(|e| PrinterError::Io(e.to_string()))
    }

    fn port(&mut self) -> Result<&mut SerialStream, PrinterError> {
        if self.port.is_none() {
            let c = &self.config;
            let builder = tokio_serial::new(c.serial.to_string_lossy(), c.baud)
                .data_bits(tokio_serial::DataBits::Eight)
                .parity(tokio_serial::Parity::None)
                .stop_bits(tokio_serial::StopBits::One);
            let port = SerialStream::open(&builder).map_err(|e| PrinterError::Open {
                path: c.serial.display().to_string(),
                reason: e.to_string(),
            })?;
            self.port = Some(port);
        }
        self.port
            .as_mut()
            .ok_or_else(|| PrinterError::Io("port not open".into()))
    }

    /// Sends `DLE EOT n` and waits for a byte that can be its answer, skipping noise.
    async fn ask_status(&mut self, n: u8) -> Result<u8, PrinterError> {
        let timeout = self.config.status_timeout();
        let timeout_ms = self.config.status_timeout_ms;
        let mut skipped = 0u64;
        let port = self.port()?;
        let mut buf = [0u8; 256];
        // Whatever came in since the last answer (late answers, noise) is not this answer.
        while let Ok(Ok(got @ 1..)) =
            tokio::time::timeout(Duration::from_millis(1), port.read(&mut buf)).await
        {
            skipped += got as u64;
        }
        let io = |e: std::io::Error| PrinterError::Io(e.to_string());
        port.write_all(&protocol::status_request(n))
            .await
            .map_err(io)?;
        port.flush().await.map_err(io)?;
        let deadline = Instant::now() + timeout;
        let answer = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, port.read(&mut buf)).await {
                Err(_) => break Err(PrinterError::NoAnswer(timeout_ms)),
                Ok(Err(e)) => break Err(io(e)),
                Ok(Ok(0)) => break Err(PrinterError::Io("the port was closed".into())),
                Ok(Ok(got)) => match protocol::find_status(&buf[..got]) {
                    Some((b, before)) => {
                        skipped += (got - before - 1) as u64 + before as u64;
                        break Ok(b);
                    }
                    None => skipped += got as u64,
                },
            }
        };
        if skipped > 0 {
            self.noise += skipped;
            self.noisy_reads += 1;
        }
        // A chattering line would otherwise log on every status read.
        if skipped > 0 && self.noisy_reads.is_power_of_two() {
            tracing::warn!(printer = %self.config.name, skipped, total = self.noise, "printer sent bytes that are not status answers; skipped");
        }
        answer
    }

    /// Prints every ticket waiting, in order, while the printer stays ready.
    async fn print_waiting(&mut self) {
        loop {
            let claim = Claim {
                destination: self.destination(),
                limit: 1,
            };
            let row = match journal::ask(&self.journal, claim).await {
                Ok(mut rows) => rows.pop(),
                Err(e) => {
                    tracing::error!(printer = %self.config.name, error = %e, "cannot claim tickets");
                    None
                }
            };
            let Some(row) = row else { return };
            let Some(job) = self.job(&row).await else {
                continue;
            };
            if self.expired(&row) {
                self.give_up(&row, &job, "not ready in time").await;
                continue;
            }
            match self.print(&row, &job).await {
                Printed::Yes => {
                    tracing::info!(printer = %self.config.name, ticket = %job.ticket, "ticket printed");
                    if let Err(e) = journal::ask(&self.journal, Delivered(vec![row.id])).await {
                        tracing::error!(printer = %self.config.name, error = %e, "cannot mark a ticket printed; it prints again");
                    }
                }
                Printed::No(why) => {
                    self.settle_failed(row.id, why, false).await;
                    return;
                }
            }
        }
    }

    /// Writes one ticket and reads the status after it.
    async fn print(&mut self, row: &OutboxRow, job: &TicketJob) -> Printed {
        let bytes = ticket_for(&self.config, job, row.occurred_at).encode(self.config.code_page);
        let wait = self.config.write_timeout();
        let written = match self.port() {
            Ok(port) => tokio::time::timeout(wait, async {
                port.write_all(&bytes).await?;
                port.flush().await
            })
            .await
            .map_err(|_| PrinterError::WriteTimeout(self.config.write_timeout_ms))
            .and_then(|r| r.map_err(|e| PrinterError::Io(e.to_string()))),
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            self.port = None;
            let condition = Condition::Offline(e.to_string());
            self.set_condition(condition).await;
            return Printed::No(format!("ticket not sent: {e}"));
        }
        let after = self.read_condition().await;
        self.set_condition(after.clone()).await;
        if after.printable() {
            Printed::Yes
        } else {
            Printed::No(format!(
                "printer reported {} after the ticket was sent; it prints again once the printer is ready",
                after.label()
            ))
        }
    }

    /// While the printer cannot print, gives up the tickets waiting past `fail_after_s`
    /// (the oldest come first, so this stops at the first one still in time).
    async fn expire_waiting(&mut self, condition: &Condition) {
        loop {
            let peek = Peek {
                destination: self.destination(),
                limit: 1,
            };
            let head = match journal::ask(&self.journal, peek).await {
                Ok(mut rows) => rows.pop(),
                Err(e) => {
                    tracing::error!(printer = %self.config.name, error = %e, "cannot look at waiting tickets");
                    None
                }
            };
            match head {
                Some(row) if self.expired(&row) => {}
                _ => return,
            }
            let claim = Claim {
                destination: self.destination(),
                limit: 1,
            };
            let Ok(Some(row)) = journal::ask(&self.journal, claim)
                .await
                .map(|mut r| r.pop())
            else {
                return;
            };
            let Some(job) = self.job(&row).await else {
                continue;
            };
            if self.expired(&row) {
                self.give_up(&row, &job, &condition.label()).await;
            } else {
                let why = format!("printer {}", condition.label());
                self.settle_failed(row.id, why, false).await;
                return;
            }
        }
    }

    fn expired(&self, row: &OutboxRow) -> bool {
        let limit =
            i64::try_from(self.config.fail_after_s.saturating_mul(1000)).unwrap_or(i64::MAX);
        journal::now_ms().saturating_sub(row.occurred_at) >= limit
    }

    /// The row's print job; an unreadable one is dead-lettered at once.
    async fn job(&self, row: &OutboxRow) -> Option<TicketJob> {
        match serde_json::from_slice::<TicketJob>(&row.payload) {
            Ok(job) => Some(job),
            Err(e) => {
                tracing::error!(printer = %self.config.name, row = row.id, "unreadable ticket print job");
                self.settle_failed(row.id, format!("the print job is not a ticket: {e}"), true)
                    .await;
                None
            }
        }
    }

    /// Dead-letters a ticket that waited too long, and tells the cloud so that staff can write
    /// it by hand. The event goes first: a crash in between repeats it rather than losing it.
    async fn give_up(&self, row: &OutboxRow, job: &TicketJob, condition: &str) {
        let printer = &self.config.name;
        let reason = format!(
            "ticket {} ({}) not printed within {} s of check-in; printer {printer}: {condition}; write it by hand",
            job.ticket, job.queue, self.config.fail_after_s
        );
        tracing::warn!(printer = %printer, ticket = %job.ticket, queue = %job.queue, "ticket given up");
        let payload = serde_json::json!({
            "printer": printer,
            "ticket": job.ticket,
            "queue": job.queue,
            "entry": job.entry,
            "issued_at": row.occurred_at,
            "reason": reason,
        });
        let event = device_event(printer, "printer.ticket_failed", payload);
        if let Err(e) = journal::ask(&self.journal, Append(event)).await {
            tracing::error!(printer = %printer, error = %e, "ticket failure event not journaled");
        }
        self.settle_failed(row.id, reason, true).await;
    }

    async fn settle_failed(&self, id: i64, error: String, permanent: bool) {
        let failed = Failed {
            destination: self.destination(),
            ids: Some(vec![id]),
            error,
            permanent,
        };
        if let Err(e) = journal::ask(&self.journal, failed).await {
            tracing::error!(printer = %self.config.name, error = %e, "cannot record a ticket that did not print");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_time_is_local_to_the_printer() {
        // 2026-11-24T17:40:00Z
        let at = 1_795_542_000_000;
        assert_eq!(issued_text(at, 60), "2026-11-24 18:40");
        assert_eq!(issued_text(at, 0), "2026-11-24 17:40");
    }

    #[test]
    fn conditions_have_short_labels() {
        assert_eq!(Condition::Ready { near_end: false }.label(), "ready");
        assert_eq!(
            Condition::Stopped(vec!["cover open", "paper end"]).label(),
            "cover open, paper end"
        );
        assert!(!Condition::Offline("no answer".into()).printable());
    }
}
