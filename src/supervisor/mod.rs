//! The supervisor: starts one actor per configured device and connector, restarts a failed one
//! with capped exponential backoff, and keeps every actor's health.
//!
//! Children run on the one scaffold in [`link`], which reports their health with
//! [`ReportHealth`] and their end (an error or a panic) with [`ChildExited`]. Each change of
//! state is journaled as a `gateway.actor_state` event for the cloud.
//!
//! **Invariant:** the supervisor never touches a child's resources; it only starts and stops it.

pub mod config;
pub mod link;

use crate::journal::{self, Append, JournalWriter, NewItem};
use crate::metrics::METRICS;
use actix::prelude::*;
pub use config::SupervisorConfig;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// An actor's health as shown on the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Started, not yet working (e.g. connecting for the first time).
    Starting,
    /// Working.
    Healthy,
    /// Running but not doing its job fully (e.g. its peer is unreachable; it keeps retrying).
    Degraded,
    /// Not running: it failed and waits for its restart, or it was stopped.
    Down,
    /// Running, but sending and receiving nothing until an admin re-authorizes it.
    Suspended,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Starting => "starting",
            HealthState::Healthy => "healthy",
            HealthState::Degraded => "degraded",
            HealthState::Down => "down",
            HealthState::Suspended => "suspended",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActorHealth {
    pub name: String,
    pub kind: String,
    pub state: HealthState,
    pub last_error: Option<String>,
    pub restarts: u32,
    /// When the state last changed (ms since the epoch).
    pub since: i64,
}

/// A running child as the supervisor sees it: something it can ask to stop.
pub trait Running: Send {
    /// Asks the child to finish cleanly; resolves once it has.
    fn stop(self: Box<Self>) -> StopFuture;

    /// Makes the child panic from inside its work; false if it cannot (it has ended, or it was
    /// already asked).
    #[cfg(feature = "fault-hooks")]
    fn inject_panic(&mut self) -> bool {
        false
    }
}

/// Where a child's current actor can be found: the address changes with every restart, so
/// other parts keep the slot, not an address. Empty while the child is not running.
pub struct Slot<A: Actor>(std::sync::Arc<std::sync::Mutex<Option<Addr<A>>>>);

impl<A: Actor> Slot<A> {
    pub fn addr(&self) -> Option<Addr<A>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, addr: Option<Addr<A>>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = addr;
    }

    /// Empties the slot if it still holds `addr` (a replacement may have taken it already).
    pub fn release(&self, addr: &Addr<A>) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref() == Some(addr) {
            *slot = None;
        }
    }
}

impl<A: Actor> Clone for Slot<A> {
    fn clone(&self) -> Self {
        Slot(self.0.clone())
    }
}

impl<A: Actor> Default for Slot<A> {
    fn default() -> Self {
        Slot(Default::default())
    }
}

/// Starts a child; called again for every restart.
pub trait Spawn: Send {
    fn kind(&self) -> &'static str;
    fn spawn(&self, name: &str, supervisor: Addr<Supervisor>) -> Box<dyn Running>;
}

/// Resolves once a child has stopped.
pub type StopFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A child reports its state (`error` explains `Degraded`).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ReportHealth {
    pub name: String,
    pub state: HealthState,
    pub error: Option<String>,
}

/// A child ended; with an error it is restarted after a backoff.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ChildExited {
    pub name: String,
    pub error: Option<String>,
}

/// Start (or replace) a child under this name.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StartChild {
    pub name: String,
    pub spawn: Box<dyn Spawn>,
}

/// Stop a child and forget it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopChild(pub String);

/// Stop every child (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopAll;

#[derive(Message)]
#[rtype(result = "Vec<ActorHealth>")]
pub struct GetHealth;

/// Make the named child panic from inside its work (tests of supervision only); false if no
/// such child is running.
#[cfg(feature = "fault-hooks")]
#[derive(Message)]
#[rtype(result = "bool")]
pub struct InjectPanic(pub String);

struct Child {
    spawn: Box<dyn Spawn>,
    running: Option<Box<dyn Running>>,
    health: ActorHealth,
    /// Failures since the child was last healthy; drives the backoff.
    failures: u32,
    restart: Option<SpawnHandle>,
}

pub struct Supervisor {
    journal: Addr<JournalWriter>,
    initial: Duration,
    max: Duration,
    children: BTreeMap<String, Child>,
}

impl Supervisor {
    pub fn new(journal: Addr<JournalWriter>, cfg: &SupervisorConfig) -> Self {
        Supervisor {
            journal,
            initial: Duration::from_millis(cfg.restart_initial_ms),
            max: Duration::from_millis(cfg.restart_max_ms),
            children: BTreeMap::new(),
        }
    }

    /// Restart delay after `failures` consecutive failures: doubling, capped.
    pub fn restart_delay(&self, failures: u32) -> Duration {
        link::backoff(self.initial, self.max, failures)
    }

    fn set_state(&mut self, name: &str, state: HealthState, error: Option<String>) {
        let Some(child) = self.children.get_mut(name) else {
            return;
        };
        let h = &mut child.health;
        if state == HealthState::Healthy {
            child.failures = 0;
        }
        let changed = h.state != state;
        if error.is_some() || state == HealthState::Healthy {
            h.last_error = error;
        }
        if !changed {
            return;
        }
        h.state = state;
        h.since = journal::now_ms();
        tracing::info!(actor = %name, state = state.as_str(), error = h.last_error.as_deref().unwrap_or(""), "actor state changed");
        let payload = serde_json::json!({
            "actor": name,
            "kind": h.kind,
            "state": state,
            "last_error": h.last_error,
            "restarts": h.restarts,
        });
        let event = gateway_event("gateway.actor_state", &format!("actor:{name}"), payload);
        let journal = self.journal.clone();
        actix::spawn(async move {
            if let Err(e) = journal::ask(&journal, Append(event)).await {
                tracing::warn!(error = %e, "actor state event not journaled");
            }
        });
    }

    fn launch(&mut self, name: &str, ctx: &mut Context<Self>) {
        let me = ctx.address();
        let Some(child) = self.children.get_mut(name) else {
            return;
        };
        child.restart = None;
        child.running = Some(child.spawn.spawn(name, me));
    }
}

/// A gateway event for the cloud, keyed so that one source's events stay in order.
pub fn gateway_event(kind: &str, key: &str, payload: serde_json::Value) -> NewItem {
    NewItem::event("gateway", kind, key, &payload, &[crate::CLOUD])
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

impl Handler<StartChild> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: StartChild, _: &mut Context<Self>) -> Self::Result {
        let old = self.children.remove(&msg.name).and_then(|c| c.running);
        let name = msg.name.clone();
        let health = ActorHealth {
            name: name.clone(),
            kind: msg.spawn.kind().to_string(),
            state: HealthState::Down,
            last_error: None,
            restarts: 0,
            since: journal::now_ms(),
        };
        let stop_old = async move {
            if let Some(old) = old {
                old.stop().await;
            }
        };
        let spawn = msg.spawn;
        Box::pin(stop_old.into_actor(self).map(move |_, act, ctx| {
            act.children.insert(
                name.clone(),
                Child {
                    spawn,
                    running: None,
                    health,
                    failures: 0,
                    restart: None,
                },
            );
            act.set_state(&name, HealthState::Starting, None);
            act.launch(&name, ctx);
        }))
    }
}

impl Handler<StopChild> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: StopChild, ctx: &mut Context<Self>) -> Self::Result {
        let running = self.children.remove(&msg.0).and_then(|c| {
            if let Some(h) = c.restart {
                ctx.cancel_future(h);
            }
            c.running
        });
        Box::pin(
            async move {
                if let Some(r) = running {
                    r.stop().await;
                }
            }
            .into_actor(self),
        )
    }
}

impl Handler<StopAll> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: StopAll, ctx: &mut Context<Self>) -> Self::Result {
        let mut stops = Vec::new();
        for child in self.children.values_mut() {
            if let Some(h) = child.restart.take() {
                ctx.cancel_future(h);
            }
            if let Some(r) = child.running.take() {
                stops.push(r.stop());
            }
        }
        Box::pin(
            async move {
                for s in stops {
                    s.await;
                }
            }
            .into_actor(self),
        )
    }
}

impl Handler<ReportHealth> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ReportHealth, _: &mut Context<Self>) {
        if self
            .children
            .get(&msg.name)
            .is_some_and(|c| c.running.is_some())
        {
            self.set_state(&msg.name, msg.state, msg.error);
        }
    }
}

impl Handler<ChildExited> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildExited, ctx: &mut Context<Self>) {
        let Some(child) = self.children.get_mut(&msg.name) else {
            return;
        };
        let Some(old) = child.running.take() else {
            return;
        };
        child.failures += 1;
        let failures = child.failures;
        let error = msg.error.unwrap_or_else(|| "stopped unexpectedly".into());
        let delay = self.restart_delay(failures);
        tracing::warn!(actor = %msg.name, %error, delay_ms = delay.as_millis() as u64, "actor failed; restarting after backoff");
        self.set_state(&msg.name, HealthState::Down, Some(error));
        let name = msg.name.clone();
        // What is left of the old child (its arbiter's thread) is stopped before the backoff
        // starts, so that two of its kind never run at once.
        let restart = old.stop().into_actor(self).map(move |_, act, ctx| {
            let key = name.clone();
            let handle = ctx.run_later(delay, move |act, ctx| {
                if let Some(child) = act.children.get_mut(&key) {
                    child.health.restarts += 1;
                    METRICS.actor_restarts.add(1);
                    act.set_state(&key, HealthState::Starting, None);
                    act.launch(&key, ctx);
                }
            });
            if let Some(child) = act.children.get_mut(&name) {
                child.restart = Some(handle);
            }
        });
        let handle = ctx.spawn(restart);
        if let Some(child) = self.children.get_mut(&msg.name) {
            child.restart = Some(handle);
        }
    }
}

#[cfg(feature = "fault-hooks")]
impl Handler<InjectPanic> for Supervisor {
    type Result = bool;

    fn handle(&mut self, msg: InjectPanic, _: &mut Context<Self>) -> bool {
        let injected = self
            .children
            .get_mut(&msg.0)
            .and_then(|c| c.running.as_mut())
            .is_some_and(|r| r.inject_panic());
        if injected {
            tracing::warn!(actor = %msg.0, "panic injected through the test API");
        }
        injected
    }
}

impl Handler<GetHealth> for Supervisor {
    type Result = Vec<ActorHealth>;

    fn handle(&mut self, _: GetHealth, _: &mut Context<Self>) -> Vec<ActorHealth> {
        self.children.values().map(|c| c.health.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{OpenOptions, Settings, Store};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A child that fails at once for its first `fail_times` starts, then stays healthy.
    struct Flaky {
        starts: Arc<AtomicU32>,
        fail_times: u32,
    }

    struct Handle;
    impl Running for Handle {
        fn stop(self: Box<Self>) -> StopFuture {
            Box::pin(async {})
        }
    }

    impl Spawn for Flaky {
        fn kind(&self) -> &'static str {
            "test"
        }
        fn spawn(&self, name: &str, supervisor: Addr<Supervisor>) -> Box<dyn Running> {
            let n = self.starts.fetch_add(1, Ordering::SeqCst) + 1;
            let name = name.to_string();
            if n <= self.fail_times {
                supervisor.do_send(ChildExited {
                    name,
                    error: Some(format!("boom {n}")),
                });
            } else {
                supervisor.do_send(ReportHealth {
                    name,
                    state: HealthState::Healthy,
                    error: None,
                });
            }
            Box::new(Handle)
        }
    }

    #[test]
    fn restart_delay_doubles_and_is_capped() {
        actix::System::new().block_on(async {
            let (_dir, _, s) = test_supervisor(100, 1000);
            let delays: Vec<u128> = (1..=6).map(|f| s.restart_delay(f).as_millis()).collect();
            assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        });
    }

    /// A supervisor restarting children after `initial_ms`, doubling up to `max_ms`, and its
    /// journal in a temporary directory that lasts as long as the returned guard. Must run
    /// inside an actix system.
    fn test_supervisor(
        initial_ms: u64,
        max_ms: u64,
    ) -> (tempfile::TempDir, Addr<JournalWriter>, Supervisor) {
        let cfg = SupervisorConfig {
            restart_initial_ms: initial_ms,
            restart_max_ms: max_ms,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = test_journal(dir.path());
        let supervisor = Supervisor::new(journal.clone(), &cfg);
        (dir, journal, supervisor)
    }

    fn test_journal(dir: &std::path::Path) -> Addr<JournalWriter> {
        let options = OpenOptions {
            create: true,
            ..Default::default()
        };
        let store = Store::open(&dir.join("j.db"), &options, &[]).expect("open");
        let settings = Settings {
            max_bytes: 1 << 30,
            retention: Duration::from_secs(3600),
            max_batch: 16,
            policies: BTreeMap::new(),
            extensions: Default::default(),
        };
        JournalWriter::start(store, settings).expect("journal").0
    }

    #[test]
    fn failed_child_is_restarted_until_healthy_and_health_is_kept() {
        actix::System::new().block_on(async {
            let (_dir, journal, sup) = test_supervisor(10, 40);
            let sup = sup.start();
            let starts = Arc::new(AtomicU32::new(0));
            sup.send(StartChild {
                name: "flaky".into(),
                spawn: Box::new(Flaky {
                    starts: starts.clone(),
                    fail_times: 3,
                }),
            })
            .await
            .expect("start");
            let mut health = Vec::new();
            for _ in 0..200 {
                health = sup.send(GetHealth).await.expect("health");
                if health[0].state == HealthState::Healthy {
                    break;
                }
                actix_rt::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(health[0].state, HealthState::Healthy, "{health:?}");
            assert_eq!(health[0].restarts, 3);
            assert_eq!(starts.load(Ordering::SeqCst), 4);
            assert_eq!(health[0].last_error, None);
            // Every state change went to the journal for the cloud.
            let stats = journal::ask(&journal, journal::GetStats)
                .await
                .expect("stats");
            assert!(stats.destinations["cloud"].pending >= 7, "{stats:?}");
        });
    }

    /// A child on the link scaffold: its first work panics, later ones stay healthy until asked
    /// to stop.
    struct PanicsOnce {
        starts: Arc<AtomicU32>,
    }

    impl Spawn for PanicsOnce {
        fn kind(&self) -> &'static str {
            "test"
        }
        fn spawn(&self, name: &str, supervisor: Addr<Supervisor>) -> Box<dyn Running> {
            let n = self.starts.fetch_add(1, Ordering::SeqCst) + 1;
            link::start(name, supervisor, Duration::from_secs(1), move |mut link| {
                Box::pin(async move {
                    if n == 1 {
                        panic!("boom in the poll loop");
                    }
                    link.health.report(HealthState::Healthy, None);
                    let _ = link.shutdown.changed().await;
                    Ok(())
                })
            })
        }
    }

    /// An actor on the link scaffold whose handler panics when told to.
    struct Fragile {
        link: Option<link::LinkCtx>,
    }

    impl Actor for Fragile {
        type Context = Context<Self>;

        fn started(&mut self, _: &mut Context<Self>) {
            if let Some(link) = self.link.take() {
                link.health.report(HealthState::Healthy, None);
            }
        }
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    struct Break;

    impl Handler<Break> for Fragile {
        type Result = ();

        fn handle(&mut self, _: Break, _: &mut Context<Self>) {
            panic!("boom in a handler");
        }
    }

    struct FragileSpawn {
        slot: Slot<Fragile>,
    }

    impl Spawn for FragileSpawn {
        fn kind(&self) -> &'static str {
            "test"
        }
        fn spawn(&self, name: &str, supervisor: Addr<Supervisor>) -> Box<dyn Running> {
            let (running, addr) =
                link::start_actor(name, supervisor, Duration::from_secs(1), |link| Fragile {
                    link: Some(link),
                });
            self.slot.set(Some(addr));
            running
        }
    }

    /// Waits until the child's health satisfies `done`.
    async fn wait_for(sup: &Addr<Supervisor>, done: impl Fn(&ActorHealth) -> bool) -> ActorHealth {
        loop {
            let health = sup.send(GetHealth).await.expect("health");
            if done(&health[0]) {
                return health[0].clone();
            }
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn scaffold_supervisor() -> (tempfile::TempDir, Addr<Supervisor>) {
        // Long enough a backoff for the test to see the child down between its two runs.
        let (dir, _, supervisor) = test_supervisor(500, 500);
        (dir, supervisor.start())
    }

    #[test]
    fn panicking_work_is_down_naming_the_panic_then_restarted() {
        actix::System::new().block_on(async {
            let (_dir, sup) = scaffold_supervisor();
            let starts = Arc::new(AtomicU32::new(0));
            sup.send(StartChild {
                name: "panicky".into(),
                spawn: Box::new(PanicsOnce {
                    starts: starts.clone(),
                }),
            })
            .await
            .expect("start");
            let down = wait_for(&sup, |h| h.state == HealthState::Down).await;
            assert_eq!(
                down.last_error.as_deref(),
                Some("panicked: boom in the poll loop")
            );
            let up = wait_for(&sup, |h| h.state == HealthState::Healthy).await;
            assert_eq!(up.restarts, 1);
            assert_eq!(starts.load(Ordering::SeqCst), 2);
            sup.send(StopAll).await.expect("stop");
        });
    }

    #[test]
    fn panicking_handler_is_down_naming_the_panic_then_restarted() {
        actix::System::new().block_on(async {
            let (_dir, sup) = scaffold_supervisor();
            let slot = Slot::default();
            sup.send(StartChild {
                name: "fragile".into(),
                spawn: Box::new(FragileSpawn { slot: slot.clone() }),
            })
            .await
            .expect("start");
            wait_for(&sup, |h| h.state == HealthState::Healthy).await;
            slot.addr().expect("running").do_send(Break);
            let down = wait_for(&sup, |h| h.state == HealthState::Down).await;
            assert_eq!(
                down.last_error.as_deref(),
                Some("panicked: boom in a handler")
            );
            let up = wait_for(&sup, |h| h.state == HealthState::Healthy).await;
            assert_eq!(up.restarts, 1);
            sup.send(StopAll).await.expect("stop");
        });
    }
}
