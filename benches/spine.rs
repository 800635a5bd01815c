//! Figures for the spine, printed (not asserted): journal append throughput with group commit,
//! steady-state RSS of the daemon, and start to READY=1. Needs mosquitto (scripts/test-deps.sh).
//! The relay drain to each cloud broker is `benches/brokers.rs`.
//!
//! `cargo bench --bench spine`; `BENCH_ONLY` picks `append` or `daemon`.

mod shared;

use clinic_gateway::journal::{self, Append, JournalWriter, NewItem, OpenOptions, Store};
use shared::{item, settings};
use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn open(path: &Path) -> Store {
    Store::open(
        path,
        &OpenOptions {
            create: true,
            verify: false,
            key: None,
        },
        &clinic_gateway::daemon::wiring::schemas(),
    )
    .expect("open journal")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

struct Mosquitto(Child);

impl Mosquitto {
    fn start(dir: &Path) -> (Mosquitto, u16) {
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        let root = if Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0"))
            .unwrap_or(false)
        {
            "user root\n"
        } else {
            ""
        };
        std::fs::write(
            &conf,
            format!("allow_anonymous true\npersistence false\n{root}listener {port} 127.0.0.1\n"),
        )
        .expect("conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (scripts/test-deps.sh)");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "mosquitto did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        (Mosquitto(child), port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bench_append(dir: &Path, producers: usize) {
    let total = 200_000usize;
    let path = dir.join(format!("append-{producers}.db"));
    let rate = actix::System::new().block_on(async move {
        let (journal, _thread) = JournalWriter::start(open(&path), settings()).expect("writer");
        let start = Instant::now();
        let mut tasks = Vec::new();
        for p in 0..producers {
            let journal = journal.clone();
            tasks.push(actix::spawn(async move {
                for i in (p..total).step_by(producers) {
                    journal::ask(&journal, Append(item(i)))
                        .await
                        .expect("append");
                }
            }));
        }
        for t in tasks {
            t.await.expect("producer");
        }
        let secs = start.elapsed().as_secs_f64();
        let _ = journal::ask(&journal, journal::Close).await;
        total as f64 / secs
    });
    let probe = bench_append_probe(dir, producers);
    println!(
        "journal append, group commit, {producers} producers each awaiting its durable receipt: {rate:.0} events/s ({total} events, synchronous=FULL); raw SQLite group-commit probe, same rows: {probe:.0} events/s; {:.0} % of the probe",
        rate / probe * 100.0
    );
}

/// The ceiling for [`bench_append`]: the same rows (an inbound row and its outbox row, same
/// SQL, same indexes, `synchronous=FULL`) committed by a bare thread that batches whatever is
/// queued into one transaction and answers each producer after the commit, with no actor, no
/// domain work and no space check in the way.
fn bench_append_probe(dir: &Path, producers: usize) -> f64 {
    use rusqlite::params;
    use tokio::sync::{mpsc, oneshot};
    let total = 200_000usize;
    let path = dir.join(format!("probe-{producers}.db"));
    drop(open(&path));
    let (tx, mut rx) = mpsc::unbounded_channel::<(NewItem, oneshot::Sender<i64>)>();
    let writer = std::thread::spawn(move || {
        let mut conn = rusqlite::Connection::open(&path).expect("probe open");
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA cache_size=-16384;",
        )
        .expect("pragmas");
        let mut batch = Vec::with_capacity(4096);
        let mut numbers = std::collections::HashMap::new();
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < 4096 {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            let now = journal::now_ms();
            let t = conn.transaction().expect("begin");
            let mut ids = Vec::with_capacity(batch.len());
            for (item, _) in &batch {
                t.prepare_cached(
                    "INSERT INTO inbound (event_id, source, source_id, kind, key, schema, payload, reply, occurred_at, received_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT DO NOTHING",
                )
                .expect("prepare")
                .execute(params![
                    uuid::Uuid::now_v7().to_string(),
                    item.source,
                    item.source_id,
                    item.kind,
                    item.key,
                    item.schema,
                    item.payload,
                    item.reply,
                    now,
                    now
                ])
                .expect("inbound");
                let id = t.last_insert_rowid();
                let mut outbox = t
                    .prepare_cached(
                        "INSERT INTO outbox (inbound_id, destination, destination_no, key, state, next_attempt_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5)",
                    )
                    .expect("prepare");
                for d in &item.destinations {
                    let no = *numbers.entry(d.clone()).or_insert_with(|| {
                        t.execute(
                            "INSERT OR IGNORE INTO outbox_destination (name) VALUES (?1)",
                            [d],
                        )
                        .expect("destination");
                        t.query_row(
                            "SELECT no FROM outbox_destination WHERE name = ?1",
                            [d],
                            |r| r.get::<_, i64>(0),
                        )
                        .expect("number")
                    });
                    outbox
                        .execute(params![id, d, no, item.key, now])
                        .expect("outbox");
                }
                ids.push(id);
            }
            t.commit().expect("commit");
            for ((_, reply), id) in batch.drain(..).zip(ids) {
                let _ = reply.send(id);
            }
        }
    });
    let rate = actix::System::new().block_on(async move {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for p in 0..producers {
            let tx = tx.clone();
            tasks.push(actix::spawn(async move {
                for i in (p..total).step_by(producers) {
                    let (reply, answer) = oneshot::channel();
                    tx.send((item(i), reply)).expect("probe writer");
                    answer.await.expect("probe receipt");
                }
            }));
        }
        for t in tasks {
            t.await.expect("producer");
        }
        total as f64 / start.elapsed().as_secs_f64()
    });
    writer.join().expect("probe writer");
    rate
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_clinic-gateway")
}

fn write_config(dir: &Path, web: u16, relay_port: u16) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\nfacility_id = \"bench\"\ndata_dir = \"{}\"\n[web]\nbind = \"127.0.0.1:{web}\"\n[relay]\nhost = \"127.0.0.1\"\nport = {relay_port}\n",
            dir.join("data").display()
        ),
    )
    .expect("config");
    path
}

fn bench_ready_and_rss(dir: &Path) {
    let (_broker, port) = Mosquitto::start(dir);
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut times = Vec::new();
    for run in 0..10 {
        let web = free_port();
        let config = write_config(dir, web, port);
        let start = Instant::now();
        let mut child = Command::new(bin())
            .args(["run", "--config"])
            .arg(&config)
            .env("NOTIFY_SOCKET", &sock_path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gateway");
        let mut buf = [0u8; 1024];
        loop {
            let n = sock.recv(&mut buf).expect("READY=1 within 10 s");
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
            {
                break;
            }
        }
        times.push(start.elapsed());
        if run == 9 {
            // Steady state: a kiosk-like stream of 50 events/s for 20 s, relayed as it comes.
            let url = format!("http://127.0.0.1:{web}/api/v1/events");
            for i in 0..1000 {
                let body = serde_json::json!({ "source": "kiosk-1", "id": format!("r{i}"), "kind": "queue.checked_in", "key": format!("p{}", i % 40), "payload": { "ticket": i } });
                ureq::post(&url).send_json(&body).expect("post");
                std::thread::sleep(Duration::from_millis(20));
            }
            let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
                .expect("proc status");
            let rss = status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .unwrap_or("VmRSS: ?")
                .trim()
                .to_string();
            let hwm = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .unwrap_or("VmHWM: ?")
                .trim()
                .to_string();
            println!(
                "daemon steady state (relay connected, 50 events/s for 20 s): {rss}, peak {hwm}"
            );
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let _ = child.wait();
    }
    times.sort();
    println!(
        "start to READY=1 over 10 starts: median {:.1} ms, max {:.1} ms",
        times[5].as_secs_f64() * 1e3,
        times[9].as_secs_f64() * 1e3
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this with no flag: stay quick then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "append" {
        let producers: Vec<usize> = match std::env::var("BENCH_PRODUCERS") {
            Ok(v) => v.split(',').filter_map(|p| p.trim().parse().ok()).collect(),
            Err(_) => vec![64, 256, 1024],
        };
        for p in producers {
            bench_append(dir.path(), p);
        }
    }
    if only.is_empty() || only == "daemon" {
        bench_ready_and_rss(dir.path());
    }
}
