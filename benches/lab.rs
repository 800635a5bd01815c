//! Figures for laboratory results, printed (not asserted): the daemon's real MLLP listener
//! sent an ORU^R01 with a critical value (OBX-8 `HH`) for a queued patient; its AA leaves only
//! once the entry's priority change to urgent and the clinical alert are committed with the
//! message, so the time from send to AA is the time from result to priority changed and alert
//! committed. Beside it, in the same run and on the same connection, the probe: an ADT^A08
//! through the same listener, which commits the message and changes nothing.
//!
//! `cargo bench --bench lab`; `BENCH_RESULTS` sets how many results (default 1 000).

#[path = "shared/daemon.rs"]
mod daemon;
use daemon::free_port;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn framed(text: &str) -> Vec<u8> {
    [&[0x0b][..], text.as_bytes(), &[0x1c, 0x0d]].concat()
}

/// A critical potassium for patient `n`.
fn critical(n: usize) -> Vec<u8> {
    framed(&format!(
        "MSH|^~\\&|LIS|HOSP|EDGE|CLINIC|20261124140700||ORU^R01^ORU_R01|R{n}|P|2.5.1\r\
         PID|1||MRN-{n}^^^CLINIC^MR||POE^PAT\r\
         OBR|1|PL-{n}|FI-{n}|24323-8^Metabolic panel^LN\r\
         OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L|3.5-5.1|HH|||F\r"
    ))
}

/// The probe: a demographics update for patient `n`, which the queue does not act on.
fn probe(n: usize) -> Vec<u8> {
    framed(&format!(
        "MSH|^~\\&|HIS|HOSP|EDGE|CLINIC|20261124140500||ADT^A08^ADT_A01|A{n}|P|2.5.1\r\
         EVN|A08|20261124140500\r\
         PID|1||MRN-{n}^^^CLINIC^MR||DOE^JANE||19800203|F\r\
         PV1|1|O|CLINIC^^^GENERAL\r"
    ))
}

/// Sends one frame and waits for its ACK, which must be an AA; answers the time taken.
fn exchange(stream: &mut TcpStream, frame: &[u8]) -> Duration {
    let sent = Instant::now();
    stream.write_all(frame).expect("send");
    let mut ack = Vec::new();
    let mut chunk = [0u8; 1024];
    while !ack.ends_with(&[0x1c, 0x0d]) {
        let n = stream.read(&mut chunk).expect("read ACK");
        assert!(n > 0, "the listener closed the connection");
        ack.extend_from_slice(&chunk[..n]);
    }
    let took = sent.elapsed();
    assert!(
        String::from_utf8_lossy(&ack).contains("MSA|AA"),
        "{}",
        String::from_utf8_lossy(&ack)
    );
    took
}

struct Daemon {
    child: Child,
    mllp: u16,
    web: u16,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        let (mllp, web) = (free_port(), free_port());
        let config: PathBuf = dir.join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "[gateway]\nfacility_id = \"bench\"\ndata_dir = \"{}\"\n[web]\nbind = \"127.0.0.1:{web}\"\n\
                 [connectors.hl7v2]\nlisten = \"127.0.0.1:{mllp}\"\n[connectors.lab]\n[alerts]\nack_within_s = 3600\n",
                dir.join("data").display(),
            ),
        )
        .expect("config");
        let child = daemon::start(&config, &[mllp, web]);
        Daemon { child, mllp, web }
    }

    fn check_in(&self, n: usize) {
        let url = format!(
            "http://127.0.0.1:{}/api/v1/queues/general/check-in",
            self.web
        );
        ureq::post(&url)
            .send_json(serde_json::json!({ "patient_ref": format!("MRN-{n}") }))
            .expect("check-in");
    }

    fn get(&self, path: &str) -> serde_json::Value {
        ureq::get(&format!("http://127.0.0.1:{}{path}", self.web))
            .call()
            .expect("GET")
            .body_mut()
            .read_json()
            .expect("json")
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

fn percentiles(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (
        ms(times[times.len() / 2]),
        ms(times[times.len() * 99 / 100]),
    )
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this with no flag: stay quick then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let results: usize = std::env::var("BENCH_RESULTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path());
    let mut stream = TcpStream::connect(("127.0.0.1", daemon.mllp)).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut ours, mut bare) = (Vec::with_capacity(results), Vec::with_capacity(results));
    for n in 0..results {
        daemon.check_in(n);
        // Interleaved, so that both see the same journal and the same machine load.
        bare.push(exchange(&mut stream, &probe(n)));
        ours.push(exchange(&mut stream, &critical(n)));
    }
    let alerts = daemon.get("/api/v1/alerts?limit=1000");
    assert_eq!(
        alerts.as_array().map(Vec::len),
        Some(results.min(1000)),
        "every result raised its alert"
    );
    let (p50, p99) = percentiles(ours);
    let (b50, b99) = percentiles(bare);
    println!(
        "ORU^R01 with a critical value for a queued patient -> entry urgent + clinical alert committed, then AA ({results} results, one connection): p50 {p50:.2} ms, p99 {p99:.2} ms (target p99 < 1000 ms); probe ADT^A08 through the same listener, committed only: p50 {b50:.2} ms, p99 {b99:.2} ms"
    );
}
