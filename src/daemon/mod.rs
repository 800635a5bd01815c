//! The daemon's life: open the journal, start the supervisor and its children, serve the status
//! page, tell systemd, reload on SIGHUP or command, and shut down cleanly on SIGTERM.

pub mod wiring;

use crate::config::{self, Config};
use crate::facility::FacilitySlot;
use crate::journal::{
    self, Append, AuditRecord, Close, JournalWriter, OpenOptions, Ping, Reconfigure, Store,
};
use crate::notify;
use crate::reload::ReloadConfig;
use crate::supervisor::{StartChild, StopAll, StopChild, Supervisor, gateway_event};
use crate::web;
use actix::prelude::*;
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wiring::{Child, RELAY};

/// The running configuration and the actors it drives.
pub struct Gateway {
    path: PathBuf,
    config: Config,
    journal: Addr<JournalWriter>,
    supervisor: Addr<Supervisor>,
    rooms: FacilitySlot,
    /// The printers the check-in API and the preview page see; replaced on reload.
    printers: crate::devices::printer::Registry,
    /// Where the web layer finds the FHIR connector.
    fhir: crate::connectors::fhir::FhirSlot,
    /// The payers, processors and billing table the web layer reads; replaced on reload.
    practice: web::PracticeSlot,
}

impl Actor for Gateway {
    type Context = Context<Self>;
}

impl Handler<ReloadConfig> for Gateway {
    /// Atomic: a second reload waits until the first has replaced its children.
    type Result = AtomicResponse<Self, Result<serde_json::Value, String>>;

    fn handle(&mut self, msg: ReloadConfig, ctx: &mut Context<Self>) -> Self::Result {
        notify::reloading();
        let (result, replaced): (_, Replacing) = match self.reload(ctx) {
            Ok((summary, replaced)) => (Ok(summary), replaced),
            Err(e) => (Err(e), Box::pin(std::future::ready(()))),
        };
        AtomicResponse::new(Box::pin(replaced.into_actor(self).map(
            move |(), act, _| {
                act.reloaded(&msg.by, &result);
                result
            },
        )))
    }
}

impl Gateway {
    /// Applies the configuration file as it now reads, or refuses it whole. Answers what was
    /// applied and the replacement of the connectors, devices and messaging under way: the
    /// desk may name a payer or processor only once no connector with the older configuration
    /// runs, lest one refuse a job it never heard of.
    fn reload(
        &mut self,
        ctx: &mut Context<Self>,
    ) -> Result<(serde_json::Value, Replacing), String> {
        let new = config::load(&self.path).map_err(|e| {
            tracing::error!(problems = %e.to_string().replace('\n', "; "), "new configuration refused; the running one is kept");
            e.to_string()
        })?;
        let old = &self.config;
        let mut applied = Vec::new();
        let mut replacing = Vec::new();
        let mut needs_restart = Vec::new();
        // The hooks and the zone the writer holds follow the connectors' and gateway's
        // sections too; sending the settings again costs one batch.
        let (settings, zone) = wiring::journal_settings(&new);
        crate::clock::set(zone);
        self.journal.do_send(Reconfigure(settings));
        if new.journal != old.journal
            || new.destinations != old.destinations
            || new.gateway.timezone != old.gateway.timezone
        {
            applied.push("journal");
        }
        if new.relay != old.relay || new.gateway.facility_id != old.gateway.facility_id {
            match wiring::relay(&new, &self.journal, ctx.address().recipient(), &self.rooms)? {
                Some(spawn) => self.supervisor.do_send(StartChild {
                    name: RELAY.into(),
                    spawn: Box::new(spawn),
                }),
                None => self.supervisor.do_send(StopChild(RELAY.into())),
            }
            applied.push("relay");
        }
        if new.devices != old.devices || new.facility != old.facility {
            // Every device actor is replaced; one whose table did not change restarts too, which
            // a device tolerates (it re-reads its state on start).
            let before = wiring::devices(old, &self.journal, &self.rooms).unwrap_or_default();
            replacing.push(
                self.replace_children(before, wiring::devices(&new, &self.journal, &self.rooms)?),
            );
            self.printers.set(new.devices.printer.clone());
            applied.push("devices");
        }
        if new.connectors != old.connectors {
            let before = wiring::connectors(old, &self.journal, &self.fhir);
            replacing.push(
                self.replace_children(before, wiring::connectors(&new, &self.journal, &self.fhir)),
            );
            applied.push("connectors");
        }
        if new.messaging != old.messaging {
            let before = wiring::messaging(old, &self.journal).into_iter().collect();
            let now = wiring::messaging(&new, &self.journal).into_iter().collect();
            replacing.push(self.replace_children(before, now));
            applied.push("messaging");
        }
        // The watcher is cheap to restart, and what it told is in the journal: restarting it on
        // every reload follows any section naming a certificate file.
        let (name, spawn) = wiring::credentials(&new, &self.journal);
        self.supervisor.do_send(StartChild { name, spawn });
        let (name, spawn) = wiring::alerts(&new, &self.journal);
        self.supervisor.do_send(StartChild { name, spawn });
        if new.supervisor != old.supervisor {
            needs_restart.push("supervisor");
        }
        if new.web != old.web {
            needs_restart.push("web");
        }
        if new.access != old.access {
            needs_restart.push("access");
        }
        if new.journal_path() != old.journal_path() || new.journal.key_file != old.journal.key_file
        {
            needs_restart.push("journal location or key");
        }
        if new.journal.audit_head_interval_s != old.journal.audit_head_interval_s {
            needs_restart.push("journal.audit_head_interval_s");
        }
        self.config = new;
        let summary = serde_json::json!({ "applied": applied, "needs_restart": needs_restart });
        let replaced: Replacing = Box::pin(async move {
            for children in replacing {
                children.await;
            }
        });
        Ok((summary, replaced))
    }

    /// Finishes a reload once its children are replaced: the desk's view, the log, the event
    /// for the cloud, the audit and systemd.
    fn reloaded(&self, by: &str, result: &Result<serde_json::Value, String>) {
        if let Ok(summary) = result {
            // Read from the connectors' sections, the facility id and the FHIR identifier system.
            self.practice.set(wiring::practice(&self.config));
            tracing::info!(by, %summary, "configuration reloaded");
            self.journal.do_send(Append(gateway_event(
                "gateway.config_reloaded",
                "gateway",
                serde_json::json!({
                    "by": by,
                    "applied": summary["applied"],
                    "needs_restart": summary["needs_restart"],
                }),
            )));
        }
        let detail = match result {
            Ok(v) => format!("by={by} ok {v}"),
            Err(e) => format!("by={by} refused: {}", e.replace('\n', "; ")),
        };
        let action = if result.is_ok() {
            "config-reload"
        } else {
            "config-reload-refused"
        };
        let journal = self.journal.clone();
        actix::spawn(async move {
            let _ = journal::ask(
                &journal,
                AuditRecord {
                    actor: "gateway".into(),
                    action: action.into(),
                    detail,
                },
            )
            .await;
        });
        notify::ready(match result {
            Ok(_) => "running; configuration reloaded",
            Err(_) => "running; new configuration refused, previous one kept",
        });
    }
}

/// Children being stopped and started by a reload; resolves once each has been.
type Replacing = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

impl Gateway {
    /// Starts every child of `now` (replacing a running one of the same name) and stops the
    /// children of `before` that are no longer configured; resolves once the supervisor has.
    fn replace_children(&self, before: Vec<Child>, now: Vec<Child>) -> Replacing {
        let stops: Vec<_> = before
            .into_iter()
            .filter(|(name, _)| !now.iter().any(|(n, _)| n == name))
            .map(|(name, _)| self.supervisor.send(StopChild(name)))
            .collect();
        let starts: Vec<_> = now
            .into_iter()
            .map(|(name, spawn)| self.supervisor.send(StartChild { name, spawn }))
            .collect();
        Box::pin(async move {
            // Sent already, so the supervisor replaces them side by side; an error means it
            // has stopped, and then nothing is left to wait for.
            for stop in stops {
                let _ = stop.await;
            }
            for start in starts {
                let _ = start.await;
            }
        })
    }
}

fn read_key(c: &Config) -> anyhow::Result<Option<String>> {
    let Some(path) = &c.journal.key_file else {
        return Ok(None);
    };
    let path = c.resolve(path);
    let key = std::fs::read_to_string(&path)
        .with_context(|| format!("journal.key_file {}", path.display()))?;
    Ok(Some(key.trim_end_matches(['\r', '\n']).to_string()))
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(path: &Path) -> anyhow::Result<()> {
    let config = config::load(path).map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
    actix::System::new().block_on(serve(path.to_path_buf(), config))
}

async fn serve(path: PathBuf, config: Config) -> anyhow::Result<()> {
    let started = Instant::now();
    let journal_path = config.journal_path();
    let store = Store::open(
        &journal_path,
        &OpenOptions {
            key: read_key(&config)?,
            verify: true,
            create: true,
        },
        &wiring::schemas(),
    )?;
    let (settings, zone) = wiring::journal_settings(&config);
    crate::clock::set(zone);
    let (journal, writer) = JournalWriter::start(store, settings)?;
    let supervisor = Supervisor::new(journal.clone(), &config.supervisor).start();
    let rooms = FacilitySlot::default();
    let printers = crate::devices::printer::Registry::new(config.devices.printer.clone());
    let fhir = crate::connectors::fhir::FhirSlot::default();
    let practice = web::PracticeSlot::new(wiring::practice(&config));
    let gateway = Gateway {
        path: path.clone(),
        config: config.clone(),
        journal: journal.clone(),
        supervisor: supervisor.clone(),
        rooms: rooms.clone(),
        printers: printers.clone(),
        fhir: fhir.clone(),
        practice: practice.clone(),
    }
    .start();
    let started_event = gateway_event(
        "gateway.started",
        "gateway",
        serde_json::json!({ "version": env!("CARGO_PKG_VERSION"), "pid": std::process::id() }),
    );
    // A full journal must not keep the gateway from starting: the relay is what drains it.
    if let Err(e) = journal::ask(&journal, Append(started_event)).await {
        tracing::warn!(error = %e, "start-up event not journaled");
    }
    if let Some(spawn) = wiring::relay(&config, &journal, gateway.clone().recipient(), &rooms)
        .map_err(anyhow::Error::msg)?
    {
        supervisor
            .send(StartChild {
                name: RELAY.into(),
                spawn: Box::new(spawn),
            })
            .await?;
    }
    for (name, spawn) in wiring::devices(&config, &journal, &rooms).map_err(anyhow::Error::msg)? {
        supervisor.send(StartChild { name, spawn }).await?;
    }
    for (name, spawn) in wiring::connectors(&config, &journal, &fhir) {
        supervisor.send(StartChild { name, spawn }).await?;
    }
    if let Some((name, spawn)) = wiring::messaging(&config, &journal) {
        supervisor.send(StartChild { name, spawn }).await?;
    }
    let (name, spawn) = wiring::credentials(&config, &journal);
    supervisor.send(StartChild { name, spawn }).await?;
    let (name, spawn) = wiring::alerts(&config, &journal);
    supervisor.send(StartChild { name, spawn }).await?;
    let tls = match &config.web.tls {
        Some(tls) => Some(
            web::tls::serving(
                tls,
                config.folder(),
                &config.data_dir(),
                &config.access.allowed_hosts,
            )
            .context("web.tls")?,
        ),
        None => None,
    };
    let access = config.access.resolved(config.folder());
    let sso = match &access.oidc {
        Some(oidc) => Some(std::sync::Arc::new(
            crate::access::oidc::Sso::new(oidc).context("access.oidc")?,
        )),
        None => None,
    };
    let state = web::AppState {
        journal: journal.clone(),
        supervisor: supervisor.clone(),
        reload: gateway.clone().recipient(),
        rooms,
        facility: config.gateway.facility_id.clone(),
        started_at: journal::now_ms(),
        printers,
        fhir,
        access,
        sso,
        tls_fingerprint: tls.as_ref().map(|t| t.fingerprint.clone()),
        practice: practice.clone(),
    };
    let fingerprint = state.tls_fingerprint.clone();
    let server = web::server(config.web.bind, tls.map(|t| t.config), state)
        .with_context(|| format!("cannot listen on web.bind {}", config.web.bind))?;
    let server_handle = server.handle();
    actix::spawn(server);
    tracing::info!(
        facility = %config.gateway.facility_id,
        journal = %journal_path.display(),
        web = %config.web.bind,
        tls_fingerprint = fingerprint.as_deref().unwrap_or("none (plain HTTP)"),
        ready_ms = started.elapsed().as_millis() as u64,
        "clinic-gateway ready"
    );
    notify::ready("running");
    actix::spawn(heartbeat(journal.clone(), config.heartbeat()));
    actix::spawn(publish_audit_head(
        journal.clone(),
        Duration::from_secs(config.journal.audit_head_interval_s),
    ));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let _ = gateway.send(ReloadConfig { by: "signal:SIGHUP".into() }).await;
            }
        }
    }

    tracing::info!("stopping: no new input, flushing the journal");
    notify::stopping();
    let shutdown = async {
        // Stop taking input first: requests under way still get their receipts.
        server_handle.stop(true).await;
        supervisor.send(StopAll).await.ok();
        journal::ask(&journal, Close).await
    };
    match tokio::time::timeout(Duration::from_secs(9), shutdown).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "journal close failed; its WAL is replayed at next start")
        }
        Err(_) => tracing::warn!("clean shutdown took too long; committed data is safe in the WAL"),
    }
    drop(journal);
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Sends the audit chain's head to the cloud at start and then every `every`: a journal later
/// truncated or rewritten no longer holds the record with the hash the cloud received.
async fn publish_audit_head(journal: Addr<JournalWriter>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    // After a suspended or stalled process, one head is enough: a burst would say nothing more.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let head = match journal::ask(&journal, journal::GetAuditHead).await {
            Ok(head) => head,
            Err(e) => {
                tracing::warn!(error = %e, "audit chain head not read; published at the next tick");
                continue;
            }
        };
        let event = gateway_event("audit.head", "audit", serde_json::json!(head));
        match journal::ask(&journal, Append(event)).await {
            Ok(_) => tracing::debug!(
                last_id = head.last_id,
                "audit chain head queued for the cloud"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "audit chain head not journaled; published at the next tick")
            }
        }
    }
}

/// How often the heartbeat refreshes the status line systemd shows.
const STATUS_EVERY: Duration = Duration::from_secs(60);

/// Proves the journal writer answers, and only then pets the systemd watchdog.
async fn heartbeat(journal: Addr<JournalWriter>, every: Duration) {
    let period = match notify::watchdog_interval() {
        Some(w) => (w / 2).min(every),
        None => every,
    };
    let mut tick = tokio::time::interval(period);
    // The counts walk every row waiting (some 200 ms on the reader's thread for a million
    // buffered while the cloud is away, board lists waiting behind them): a minute old is
    // fresh enough for `systemctl status`.
    let mut counted: Option<tokio::time::Instant> = None;
    loop {
        tick.tick().await;
        match tokio::time::timeout(period, journal::ask(&journal, Ping)).await {
            Ok(Ok(())) => {
                notify::watchdog();
                if counted.is_some_and(|at| at.elapsed() < STATUS_EVERY) {
                    continue;
                }
                counted = Some(tokio::time::Instant::now());
                if let Ok(stats) = journal::ask(&journal, journal::GetStats).await {
                    let (pending, dead) = stats.destinations.values().fold((0, 0), |(p, d), s| {
                        (p + s.pending + s.in_flight, d + s.dead)
                    });
                    notify::status(&format!(
                        "running; {pending} outbound waiting, {dead} dead letters"
                    ));
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "journal writer failed its heartbeat"),
            Err(_) => tracing::error!("journal writer did not answer its heartbeat in time"),
        }
    }
}
