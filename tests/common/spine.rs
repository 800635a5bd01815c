//! The journal writer and supervisor that device actors run under in-process, as the daemon
//! starts them, on a temporary journal file with fast restarts.

use actix::{Actor, Addr};
use clinic_gateway::config::Config;
use clinic_gateway::journal::{self, Claim, JournalWriter, OpenOptions, Settings, Store};
use clinic_gateway::supervisor::{
    ActorHealth, GetHealth, HealthState, Spawn, StartChild, StopAll, Supervisor, SupervisorConfig,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Spine {
    pub journal: Addr<JournalWriter>,
    pub supervisor: Addr<Supervisor>,
}

impl Spine {
    /// Must run inside an actix system.
    pub fn start(dir: &Path) -> Spine {
        let journal = start_journal(dir);
        let cfg = SupervisorConfig {
            restart_initial_ms: 50,
            restart_max_ms: 200,
        };
        let supervisor = Supervisor::new(journal.clone(), &cfg).start();
        Spine {
            journal,
            supervisor,
        }
    }

    /// Starts `spawn` under the supervisor as child `name`, the way the daemon does.
    pub async fn start_child(&self, name: String, spawn: impl Spawn + 'static) {
        self.supervisor
            .send(StartChild {
                name,
                spawn: Box::new(spawn),
            })
            .await
            .expect("start child");
    }

    /// The supervisor's view of child `name`.
    pub async fn health(&self, name: &str) -> ActorHealth {
        let all = self.supervisor.send(GetHealth).await.expect("health");
        all.into_iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("{name} is not supervised"))
    }

    /// Waits until child `name` is in `state` and `check` accepts its health.
    pub async fn wait_health(
        &self,
        name: &str,
        state: HealthState,
        check: impl Fn(&ActorHealth) -> bool,
    ) -> ActorHealth {
        let what = format!("{name} to become {state:?}");
        poll(&what, Duration::from_secs(30), || async {
            let h = self.health(name).await;
            (h.state == state && check(&h)).then_some(h)
        })
        .await
    }

    /// The payloads of `kind` the cloud would receive next (claimed, so each is seen once;
    /// rows of other kinds are claimed too and dropped).
    pub async fn cloud_events(&self, kind: &str) -> Vec<serde_json::Value> {
        let claim = Claim {
            destination: "cloud".into(),
            limit: 10_000,
        };
        journal::ask(&self.journal, claim)
            .await
            .expect("claim")
            .into_iter()
            .filter(|row| row.kind() == kind)
            .map(|row| serde_json::from_slice(&row.payload).expect("payload is JSON"))
            .collect()
    }

    pub async fn stop(self) {
        self.supervisor.send(StopAll).await.expect("stop all");
    }
}

/// Polls `f` until it answers `Some`, in an async test; panics naming `what` after 20 s.
pub async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(what, Duration::from_secs(20), f).await
}

/// Polls `f` every 20 ms until it answers `Some`; panics naming `what` after `limit`.
async fn poll<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The validated config of a gateway with these device `tables`, as the daemon would read it.
pub fn device_config(tables: &str) -> Config {
    let text = format!("[gateway]\nfacility_id = \"test\"\n{tables}");
    clinic_gateway::config::parse(Path::new("test.toml"), &text)
        .unwrap_or_else(|e| panic!("invalid test config: {e}"))
}

/// A journal writer on `dir/journal.db` with room to spare.
pub fn start_journal(dir: &Path) -> Addr<JournalWriter> {
    let options = OpenOptions {
        create: true,
        ..Default::default()
    };
    let store = Store::open(
        &dir.join("journal.db"),
        &options,
        &clinic_gateway::daemon::wiring::schemas(),
    )
    .expect("open journal");
    let settings = Settings {
        max_bytes: 1 << 30,
        retention: Duration::from_secs(3600),
        max_batch: 64,
        policies: BTreeMap::new(),
        extensions: Default::default(),
    };
    JournalWriter::start(store, settings).expect("journal").0
}
