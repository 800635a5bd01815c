//! Figures for HL7 v2 over MLLP, printed (not asserted): the daemon's real listener driven over
//! TCP, every ACK sent after the message's commit, beside a bare probe in the same run (an MLLP
//! listener that only commits each message to SQLite with the same durability, group commit and
//! `synchronous=FULL`, then ACKs). Throughput with 8 connections each keeping one message in
//! flight, ACK latency at a paced 500 msg/s, and the daemon's RSS before and after 100 k
//! messages.
//!
//! `cargo bench --bench mllp`; `BENCH_MESSAGES` sets the burst size (default 20 000).

#[path = "shared/daemon.rs"]
mod daemon;
use daemon::free_port;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECTIONS: usize = 8;
const START: u8 = 0x0b;
const END: [u8; 2] = [0x1c, 0x0d];

/// A demographics update as a registration system sends it; `n` makes the control id unique.
fn message(n: usize) -> Vec<u8> {
    let text = format!(
        "MSH|^~\\&|HIS|HOSP|EDGE|CLINIC|20261124140500||ADT^A08^ADT_A01|B{n}|P|2.5.1\r\
         EVN|A08|20261124140500\r\
         PID|1||{}^^^CLINIC^MR||DOE^JANE^Q||19800203|F|||1 MAIN ST^^SPRINGFIELD\r\
         PV1|1|O|CLINIC^^^GENERAL\r",
        10_000 + n % 500
    );
    let mut frame = Vec::with_capacity(text.len() + 3);
    frame.push(START);
    frame.extend_from_slice(text.as_bytes());
    frame.extend_from_slice(&END);
    frame
}

/// Reads one MLLP frame (start byte to `FS CR`) into `buf`, keeping bytes after it; `None`
/// when the peer closed the connection between frames.
async fn next_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == END) {
            let frame: Vec<u8> = buf.drain(..end + 2).collect();
            let start = frame.iter().position(|b| *b == START).map_or(0, |p| p + 1);
            return Some(frame[start..frame.len() - 2].to_vec());
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            assert!(buf.is_empty(), "the peer closed the connection mid-frame");
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads one MLLP frame that must come.
async fn read_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Vec<u8> {
    next_frame(stream, buf)
        .await
        .expect("the peer closed the connection before answering")
}

/// Sends `per_connection` messages on each of 8 connections, one in flight on each; answers
/// messages per second.
async fn burst(port: u16, first: usize, per_connection: usize) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let mut buf = Vec::new();
            for i in 0..per_connection {
                let n = first + c * per_connection + i;
                stream.write_all(&message(n)).await.expect("send");
                let ack = read_frame(&mut stream, &mut buf).await;
                assert!(
                    String::from_utf8_lossy(&ack).contains("MSA|AA"),
                    "message {n} not accepted: {}",
                    String::from_utf8_lossy(&ack)
                );
            }
        }));
    }
    for t in tasks {
        t.await.expect("connection");
    }
    (CONNECTIONS * per_connection) as f64 / start.elapsed().as_secs_f64()
}

/// Sends `rate` messages per second spread over the 8 connections for `secs`; answers the
/// median and 99th percentile time from send to ACK.
async fn paced(port: u16, first: usize, rate: u32, secs: u32) -> (Duration, Duration) {
    let total = (rate * secs) as usize;
    let per = total / CONNECTIONS;
    let period = Duration::from_secs_f64(CONNECTIONS as f64 / f64::from(rate));
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            // Staggered so the connections' sends interleave evenly.
            tokio::time::sleep(period / CONNECTIONS as u32 * c as u32).await;
            let mut tick = tokio::time::interval(period);
            let mut buf = Vec::new();
            let mut times = Vec::with_capacity(per);
            for i in 0..per {
                tick.tick().await;
                let sent = Instant::now();
                stream
                    .write_all(&message(first + c * per + i))
                    .await
                    .expect("send");
                read_frame(&mut stream, &mut buf).await;
                times.push(sent.elapsed());
            }
            times
        }));
    }
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await.expect("connection"));
    }
    all.sort();
    (all[all.len() / 2], all[all.len() * 99 / 100])
}

/// The probe: an MLLP listener whose only work is one durable insert per message, batched by a
/// writer thread into group commits like the journal's, the ACK sent after the commit.
fn start_probe(dir: &Path) -> u16 {
    use rusqlite::params;
    use tokio::sync::{mpsc, oneshot};
    let path = dir.join("probe.db");
    let (tx, mut rx) = mpsc::unbounded_channel::<(Vec<u8>, oneshot::Sender<()>)>();
    std::thread::spawn(move || {
        let mut conn = rusqlite::Connection::open(&path).expect("probe db");
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE message (id INTEGER PRIMARY KEY, control_id TEXT NOT NULL UNIQUE,
                                   body BLOB NOT NULL, received_at INTEGER NOT NULL);",
        )
        .expect("probe schema");
        let mut batch = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            let t = conn.transaction().expect("begin");
            for (body, _) in &batch {
                let text = String::from_utf8_lossy(body);
                let control = text.split('|').nth(9).unwrap_or_default().to_string();
                t.prepare_cached(
                    "INSERT INTO message (control_id, body, received_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT DO NOTHING",
                )
                .expect("prepare")
                .execute(params![control, body, 0])
                .expect("insert");
            }
            t.commit().expect("commit");
            for (_, done) in batch.drain(..) {
                let _ = done.send(());
            }
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").expect("probe bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            listener.set_nonblocking(true).expect("nonblocking");
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let (mut stream, _) = listener.accept().await.expect("accept");
                stream.set_nodelay(true).expect("nodelay");
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while let Some(body) = next_frame(&mut stream, &mut buf).await {
                        let text = String::from_utf8_lossy(&body);
                        let control = text.split('|').nth(9).unwrap_or_default().to_string();
                        let (done, committed) = oneshot::channel();
                        tx.send((body, done)).expect("probe writer");
                        committed.await.expect("probe commit");
                        let ack = format!(
                            "\x0bMSH|^~\\&|EDGE|CLINIC|HIS|HOSP|20261124140500||ACK^A08^ACK|A{control}|P|2.5.1\rMSA|AA|{control}\r\x1c\r"
                        );
                        if stream.write_all(ack.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    });
    port
}

struct Daemon {
    child: Child,
    mllp: u16,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        let mllp = free_port();
        let config: PathBuf = dir.join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "[gateway]\nfacility_id = \"bench\"\ndata_dir = \"{}\"\n[web]\nbind = \"127.0.0.1:{}\"\n[connectors.hl7v2]\nlisten = \"127.0.0.1:{mllp}\"\n",
                dir.join("data").display(),
                free_port()
            ),
        )
        .expect("config");
        let child = daemon::start(&config, &[mllp]);
        Daemon { child, mllp }
    }

    /// `VmRSS` and `VmHWM` (peak) in MB.
    fn rss(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("proc status");
        let kb = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this with no flag: stay quick then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let messages: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let per = messages / CONNECTIONS;
    let dir = tempfile::tempdir().expect("tempdir");
    let probe = start_probe(dir.path());
    let daemon = Daemon::start(dir.path());
    let (idle, _) = daemon.rss();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let bare = burst(probe, 0, per).await;
        let ours = burst(daemon.mllp, 0, per).await;
        println!(
            "HL7 v2 over MLLP, ACK after commit, {CONNECTIONS} connections each with one message in flight, {} messages: {ours:.0} msg/s; bare probe (MLLP listener that only commits and ACKs, same durability): {bare:.0} msg/s; {:.0} % of the probe",
            per * CONNECTIONS,
            ours / bare * 100.0
        );
        let (p50, p99) = paced(daemon.mllp, 1_000_000, 500, 10).await;
        let (b50, b99) = paced(probe, 1_000_000, 500, 10).await;
        println!(
            "ACK latency at a paced 500 msg/s over {CONNECTIONS} connections for 10 s: p50 {:.2} ms, p99 {:.2} ms; bare probe p50 {:.2} ms, p99 {:.2} ms",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            b50.as_secs_f64() * 1e3,
            b99.as_secs_f64() * 1e3
        );
        // 100 k messages in all through the daemon, then its memory.
        let sent = per * CONNECTIONS + 5_000;
        let rest = 100_000usize.saturating_sub(sent) / CONNECTIONS;
        burst(daemon.mllp, 2_000_000, rest).await;
    });
    let (rss, peak) = daemon.rss();
    println!(
        "daemon RSS with the MLLP listener: {idle:.1} MB at start, {rss:.1} MB after 100 k HL7 messages (peak {peak:.1} MB)"
    );
}
