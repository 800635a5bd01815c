//! The relay drain of a buffered backlog to each cloud broker the gateway is tested with, each
//! beside a bare rumqttc QoS 1 publisher to the same broker run just before and just after it
//! (the ceiling: the mean of the two). Drains and probes alternate, `BENCH_PAIRS` drains
//! (default 5) to a broker: one pair moves by more than the margin asked for, so the figure is
//! the median of the drains' shares, beside the lowest and the highest.
//! Printed, not asserted. The brokers are the test suite's own peers (`tests/common`), started
//! here one after the other; no consumer subscribes to the events, so the figure is the
//! broker's intake and PUBACK, not its delivery to consumers. The relay and the probe each hold
//! the gateway's one command subscription (see [`probe`]).
//!
//! `cargo bench --bench brokers`; `BENCH_EVENTS` sets the backlog size (default 1 000 000),
//! `BENCH_BROKERS` picks brokers by name (`mosquitto,rabbitmq,nats`; default all). Topic
//! contract 2 for all of them: NATS refuses contract 1's dotted topics.
//!
//! `BENCH_PROTOCOL=5` has the relay speak MQTT 5 (Mosquitto only).
//!
//! The broker runs on CPU 0 and the relay or the probe on CPU 1: the broker stands for the
//! cloud's machine, whose CPU no gateway shares, so what is left of the gap is the relay's own
//! pipeline against a bare publisher's. `BENCH_CORES=shared` runs all three on every CPU: a
//! broker that needs several times the gateway's CPU per message (NATS) then loses to each µs
//! the gateway spends, and the figure tells the gateway's CPU per event more than its pipeline.
//!
//! `BENCH_PART=fill|relay|probe` runs one part alone (the backlog written; written and drained;
//! the probe), for counting instructions per event under `valgrind --tool=callgrind` on a busy
//! machine, where wall-clock figures mean little: relay − fill and probe, each over the events.
//! The relay and probe parts also print each thread's user and system time per event (in a
//! drain, the relay's thread beside the journal writer's; rumqttc's one `writev` per publish is
//! system time, the probe's as much as the relay's).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "shared/cpu.rs"]
mod cpu;
mod shared;
#[path = "shared/usage.rs"]
mod usage;

use clinic_gateway::journal::{self, JournalWriter, OpenOptions, Store};
use clinic_gateway::metrics::METRICS;
use clinic_gateway::relay::RelaySpawn;
use clinic_gateway::relay::config::{Protocol, RelayConfig};
use clinic_gateway::supervisor::{StartChild, StopAll, Supervisor, SupervisorConfig};
use common::nats::Nats;
use common::rabbit::Rabbit;
use shared::{item, settings};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Publishes awaiting PUBACK at once, for the relay and the probe alike.
const WINDOW: u16 = 1000;

/// A running broker: where it listens and how to log in. Dropping it stops the broker.
struct Target {
    port: u16,
    /// User name and password, when the broker asks for them.
    login: Option<(String, String)>,
    _peer: Box<dyn std::any::Any>,
}

/// Starts a broker with its files in the directory given.
type Starter = fn(&Path) -> Target;

/// The brokers measured, in order: a name for `BENCH_BROKERS` and the printout, and a starter
/// taking a directory of its own. A new broker is one entry here.
const BROKERS: &[(&str, Starter)] = &[
    ("Mosquitto", mosquitto),
    ("RabbitMQ", rabbitmq),
    ("NATS", nats),
];

fn mosquitto(dir: &Path) -> Target {
    let broker = common::Broker::start(dir);
    Target {
        port: broker.port,
        login: None,
        _peer: Box::new(broker),
    }
}

fn rabbitmq(dir: &Path) -> Target {
    let node = Rabbit::start(dir);
    let vhost = node.vhost();
    Target {
        port: node.port,
        login: Some((vhost.username, vhost.password)),
        _peer: Box::new(node),
    }
}

fn nats(dir: &Path) -> Target {
    let server = Nats::start(dir);
    Target {
        port: server.port,
        login: None,
        _peer: Box::new(server),
    }
}

/// A journal at `path` holding a backlog of `total` events for the cloud.
fn backlog(path: &Path, total: usize) -> Store {
    let mut store = Store::open(
        path,
        &OpenOptions {
            create: true,
            verify: false,
            key: None,
        },
        &clinic_gateway::daemon::wiring::schemas(),
    )
    .expect("open journal");
    let start = Instant::now();
    for chunk in (0..total).collect::<Vec<_>>().chunks(10_000) {
        store
            .with_batch(|b| {
                chunk
                    .iter()
                    .try_for_each(|&i| b.append(&item(i), journal::now_ms()).map(|_| ()))
            })
            .expect("fill");
    }
    println!(
        "  (backlog of {total} events written in {:.1} s)",
        start.elapsed().as_secs_f64()
    );
    store
}

/// The relay's MQTT version: `BENCH_PROTOCOL=5` for MQTT 5 (Mosquitto only: NATS and RabbitMQ
/// 3.10 refuse it), 3.1.1 otherwise. The probe speaks 3.1.1 either way.
fn protocol() -> Protocol {
    match std::env::var("BENCH_PROTOCOL").as_deref() {
        Ok("5") => Protocol::V5,
        _ => Protocol::V311,
    }
}

/// The relay, as the daemon supervises it, draining `store` to `target`: events per second
/// until every row is marked delivered on its PUBACK, and the CPU it took per event (this
/// process's: the relay, the journal writer and the actors between them).
fn drain(store: Store, target: &Target, total: usize) -> (f64, Used) {
    let relay = RelayConfig {
        host: "127.0.0.1".into(),
        port: target.port,
        client_id: None,
        keep_alive_secs: 30,
        inflight_window: WINDOW,
        max_message_bytes: 1 << 20,
        reconnect_initial_ms: 100,
        reconnect_max_ms: 1000,
        username: target.login.as_ref().map(|(user, _)| user.clone()),
        password_file: None,
        tls: None,
        hosts: Vec::new(),
        contract: 2,
        serve_contract_1: false,
        poison_after: 3,
        protocol: protocol(),
        message_expiry_secs: None,
        message_expiry_by_kind: Default::default(),
        session_expiry_secs: 0,
    };
    let password = target.login.as_ref().map(|(_, password)| password.clone());
    actix::System::new().block_on(async move {
        let (journal, _thread) = JournalWriter::start(store, settings()).expect("writer");
        let sup = actix::Actor::start(Supervisor::new(
            journal.clone(),
            &SupervisorConfig {
                restart_initial_ms: 100,
                restart_max_ms: 1000,
            },
        ));
        let before = METRICS.relay_published.get();
        let connects = METRICS.relay_connects.get();
        let spawn = RelaySpawn {
            config: relay,
            facility: "bench".into(),
            tls: None,
            password,
            journal: journal.clone(),
            control: None,
            rooms: Default::default(),
        };
        sup.send(StartChild {
            name: "cloud-relay".into(),
            spawn: Box::new(spawn),
        })
        .await
        .expect("start relay");
        // Counted from the connection, as the probe counts from its first publish: the
        // arbiter's start, the TCP and MQTT handshakes are neither's drain.
        let waiting = Instant::now();
        while METRICS.relay_connects.get() == connects {
            actix_rt::time::sleep(Duration::from_millis(1)).await;
            assert!(
                waiting.elapsed() < Duration::from_secs(60),
                "relay never connected"
            );
        }
        let start = Instant::now();
        let cpu = Used::since_now();
        // The two actor-state events ride along with the backlog.
        while METRICS.relay_published.get() - before < total as u64 {
            actix_rt::time::sleep(Duration::from_millis(5)).await;
            assert!(start.elapsed() < Duration::from_secs(1800), "drain stalled");
        }
        let rate = total as f64 / start.elapsed().as_secs_f64();
        let cpu = cpu.per_event(total);
        // The next broker's run starts with no relay of this one still connected.
        sup.send(StopAll).await.expect("stop the relay");
        let _ = journal::ask(&journal, journal::Close).await;
        (rate, cpu)
    })
}

/// Microseconds, for the printout.
fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A bare rumqttc client publishing `total` QoS 1 messages of the relay's payload size to the
/// same broker with the same window: the ceiling for [`drain`], in messages per second, and the
/// CPU it took per message. `subscribed`, it first holds the
/// relay's command subscription, as every gateway's connection does: RabbitMQ then routes each
/// publish against that binding, which made the same publisher 15-25 % slower there than to a
/// broker with no binding at all.
fn probe(target: &Target, total: usize, subscribed: bool) -> (f64, Used) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cpu = Used::since_now();
    let rate = runtime.block_on(async move {
        let mut options = MqttOptions::new("bench-probe", "127.0.0.1", target.port);
        options.set_inflight(WINDOW);
        options.set_max_packet_size(1 << 20, 1 << 20);
        if let Some((user, password)) = &target.login {
            options.set_credentials(user.clone(), password.clone());
        }
        let (client, mut events) = AsyncClient::new(options, usize::from(WINDOW));
        let payload = serde_json::to_vec(&serde_json::json!({
            "id": uuid::Uuid::now_v7().to_string(),
            "facility": "bench",
            "kind": "bench.event",
            "key": "patient-1",
            "occurred_at": "2026-12-01T09:30:00.000Z",
            "schema": "bench.event@1",
            "payload": serde_json::from_slice::<serde_json::Value>(&item(0).payload).expect("json"),
        }))
        .expect("payload");
        if subscribed {
            client
                .subscribe("clinic/v2/bench/commands/+", QoS::AtLeastOnce)
                .await
                .expect("subscribe");
        }
        let publisher = tokio::spawn(async move {
            // The topic the relay publishes these events under (contract 2, kind `bench.event`).
            for _ in 0..total {
                client
                    .publish(
                        "clinic/v2/bench/events/bench/event",
                        QoS::AtLeastOnce,
                        false,
                        payload.clone(),
                    )
                    .await
                    .expect("publish");
            }
        });
        let mut acked = 0usize;
        let mut start = None;
        while acked < total {
            match events.poll().await.expect("probe connection") {
                Event::Outgoing(Outgoing::Publish(_)) if start.is_none() => {
                    start = Some(Instant::now());
                }
                Event::Incoming(Packet::PubAck(_)) => acked += 1,
                _ => {}
            }
        }
        publisher.await.expect("publisher");
        total as f64 / start.expect("published").elapsed().as_secs_f64()
    });
    (rate, cpu.per_event(total))
}

/// The CPU this process used per event, in all and by thread (user and system time), counted
/// from [`since_now`](Self::since_now).
struct Used {
    total: Duration,
    threads: BTreeMap<String, [Duration; 2]>,
}

impl Used {
    fn since_now() -> Used {
        Used {
            total: usage::cpu(std::process::id()),
            threads: threads(),
        }
    }

    fn per_event(self, events: usize) -> Used {
        let n = events as u32;
        let mut threads = threads();
        for (name, [user, system]) in &mut threads {
            let [u0, s0] = self.threads.get(name).copied().unwrap_or_default();
            *user = user.saturating_sub(u0) / n;
            *system = system.saturating_sub(s0) / n;
        }
        threads.retain(|_, [user, system]| !(*user + *system).is_zero());
        Used {
            total: (usage::cpu(std::process::id()) - self.total) / n,
            threads,
        }
    }

    /// `name user+system µs` for each thread that used any, for the single-part runs.
    fn by_thread(&self) -> String {
        self.threads
            .iter()
            .map(|(name, [user, system])| {
                format!("{name} {:.2}+{:.2}", micros(*user), micros(*system))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// User and system time of each of this process's live threads, by name and id (`/proc`'s
/// clock ticks of 10 ms).
fn threads() -> BTreeMap<String, [Duration; 2]> {
    let mut used = BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task").expect("this process's threads") {
        let task = task.expect("a thread").path();
        let Ok(stat) = std::fs::read_to_string(task.join("stat")) else {
            continue; // a thread that ended meanwhile
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let id = task
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        used.insert(
            format!("{}/{id}", &stat[open + 1..close]),
            usage::times(&stat),
        );
    }
    used
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this with no flag: stay quick then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let total: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let wanted = std::env::var("BENCH_BROKERS")
        .unwrap_or_default()
        .to_lowercase();
    let part = std::env::var("BENCH_PART").unwrap_or_default();
    let pairs: usize = std::env::var("BENCH_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let split = cpu::split(true);
    println!(
        "  ({})",
        if split {
            "broker on CPU 0, relay and probe on CPU 1"
        } else {
            "broker, relay and probe sharing every CPU"
        }
    );
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, start) in BROKERS {
        let id = name.to_lowercase();
        if !wanted.is_empty() && !wanted.split(',').any(|w| w.trim() == id) {
            continue;
        }
        if split {
            cpu::pin(0);
        }
        let target = start(&dir.path().join(&id));
        if split {
            cpu::pin(1);
        }
        match part.as_str() {
            "fill" => {
                backlog(&dir.path().join(format!("{id}.db")), total);
                continue;
            }
            "relay" => {
                let store = backlog(&dir.path().join(format!("{id}.db")), total);
                let (rate, cpu) = drain(store, &target, total);
                println!(
                    "relay drain to {name}: {rate:.0} msg/s, {:.1} µs of CPU per event (user+system by thread: {})",
                    micros(cpu.total),
                    cpu.by_thread()
                );
                continue;
            }
            "probe" => {
                let (ceiling, cpu) = probe(&target, total, true);
                println!(
                    "bare rumqttc publisher to {name}: {ceiling:.0} msg/s, {:.1} µs of CPU per event (user+system by thread: {})",
                    micros(cpu.total),
                    cpu.by_thread()
                );
                continue;
            }
            _ => {}
        }
        // This machine's speed drifts over a run by more than the margin measured: each drain
        // is set against the probe run just before it and the one just after, and the drains
        // alternate with the probes.
        let mut probes = vec![probe(&target, total, true)];
        let (mut shares, mut drain_cpu) = (Vec::new(), Vec::new());
        for pair in 0..pairs {
            let path = dir.path().join(format!("{id}-{pair}.db"));
            let (rate, used) = drain(backlog(&path, total), &target, total);
            let cpu = used.total;
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            let after = probe(&target, total, true);
            let before = probes[pair].0;
            let share = rate / ((before + after.0) / 2.0) * 100.0;
            println!(
                "  relay drain {}: {rate:.0} msg/s, {:.1} µs of CPU per event; probe just before and just after: {before:.0} and {:.0} msg/s; {share:.0} % of their mean",
                pair + 1,
                micros(cpu),
                after.0,
            );
            probes.push(after);
            shares.push(share);
            drain_cpu.push(micros(cpu));
        }
        let (unbound, _) = probe(&target, total, false);
        shares.sort_by(f64::total_cmp);
        drain_cpu.sort_by(f64::total_cmp);
        let mut probe_cpu: Vec<f64> = probes.iter().map(|(_, cpu)| micros(cpu.total)).collect();
        probe_cpu.sort_by(f64::total_cmp);
        println!(
            "relay drain of {total} buffered events to {name}, QoS 1, marked delivered on PUBACK (window {WINDOW}), beside a bare rumqttc QoS 1 publisher (same broker, window and command subscription) just before and just after, {pairs} drains: median {:.0} % of the probes' mean (lowest {:.0} %, highest {:.0} %); CPU per event, medians: relay and journal {:.1} µs, probe {:.1} µs; the same publisher without the subscription: {unbound:.0} msg/s",
            shares[shares.len() / 2],
            shares[0],
            shares[shares.len() - 1],
            drain_cpu[drain_cpu.len() / 2],
            probe_cpu[probe_cpu.len() / 2],
        );
    }
}
