//! The journal writer and supervisor that device actors run under in-process, as the daemon
//! starts them, on a temporary journal file with fast restarts.

use actix::{Actor, Addr};
use clinic_gateway::config::SupervisorConfig;
use clinic_gateway::journal::{JournalWriter, OpenOptions, Settings, Store};
use clinic_gateway::supervisor::Supervisor;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

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
