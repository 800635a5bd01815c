//! Figures for eligibility at check-in, printed (not asserted): the daemon's real API and its
//! eligibility connector asking the test payer (spyne, tests/peers/x12/core_peer.py, every 270
//! checked by linuxforhealth-x12) over the CAQH CORE SOAP envelope; the payer answers each
//! inquiry after 200 ms (member ids `WAIT200-…`).
//!
//! 1. From a check-in carrying the patient's card to its entry `verified` by the API, one
//!    check-in at a time (target p99 < 300 ms).
//! 2. The check-in's own answer time with 100 check-ins at once, with a card (eligibility on)
//!    and without (off), in alternating rounds on the same daemon so that both see the same
//!    journal and machine load: a check-in must not wait for the payer. Each round waits until
//!    the connector has answered every inquiry before the next begins. Beside it, the journal
//!    writer's CPU per check-in during each kind of burst.
//!
//! `cargo bench --bench eligibility`; `BENCH_CHECKINS` sets the check-ins of part 1 (default
//! 500), `BENCH_ROUNDS` the rounds of 100 of part 2 (default 20).

#[path = "shared/daemon.rs"]
mod daemon;
use daemon::free_port;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const AT_ONCE: usize = 100;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The payer's CORE endpoint, killed on drop.
struct Payer {
    child: Child,
    port: u16,
}

impl Payer {
    fn start() -> Payer {
        let port = free_port();
        let python = repo("tests/peers/x12/.venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run scripts/test-deps.sh",
            python.display()
        );
        // The payer stands for another machine: at the lowest priority its Python (spyne, and
        // the X12 library checking every 270) does not take the daemon's two cores from it.
        let mut child = Command::new("nice")
            .args(["-n", "19"])
            .arg(python)
            .arg(repo("tests/peers/x12/core_peer.py"))
            .arg(port.to_string())
            .arg("s3cret")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the payer's CORE endpoint");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l == "ready" => break,
                Some(Ok(_)) => {}
                _ => panic!("the payer's CORE endpoint ended before it was ready"),
            }
        }
        // Its per-inquiry lines are not needed; reading them keeps the pipe from filling.
        std::thread::spawn(move || lines.for_each(drop));
        Payer { child, port }
    }
}

impl Drop for Payer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Daemon {
    child: Child,
    web: u16,
}

impl Daemon {
    fn start(dir: &Path, payer: &Payer) -> Daemon {
        let web = free_port();
        let config = dir.join("gateway.toml");
        std::fs::write(dir.join("payer.secret"), "s3cret\n").expect("password file");
        std::fs::write(
            &config,
            format!(
                "[gateway]\nfacility_id = \"bench\"\ndata_dir = \"{}\"\n[web]\nbind = \"127.0.0.1:{web}\"\n\
                 [connectors.eligibility]\nurl = \"http://127.0.0.1:{}/\"\nusername = \"clinic\"\n\
                 password_file = \"payer.secret\"\nsender_id = \"CLINIC01\"\nreceiver_id = \"PAYER01\"\n\
                 provider_name = \"MAIN STREET CLINIC\"\nprovider_npi = \"1234567893\"\n\
                 originator = \"9CLINIC001\"\nservice_types = [\"30\", \"98\"]\n\
                 [[connectors.eligibility.payer]]\nname = \"acme\"\npayer_name = \"ACME HEALTH\"\npayer_id = \"60054\"\n",
                dir.join("data").display(),
                payer.port,
            ),
        )
        .expect("config");
        let child = daemon::start(&config, &[web]);
        Daemon { child, web }
    }

    /// Checks a patient in, with a card for the payer when `member` is given; answers the
    /// entry's id and how long the check-in's answer took.
    fn check_in(web: u16, member: Option<&str>) -> (i64, Duration) {
        let url = format!("http://127.0.0.1:{web}/api/v1/queues/general/check-in");
        let body = match member {
            Some(m) => serde_json::json!({ "coverage": {
                "member_id": m, "last_name": "DOE", "first_name": "JANE", "birth_date": "1980-01-01"
            } }),
            None => serde_json::json!({}),
        };
        let sent = Instant::now();
        let answer: serde_json::Value = ureq::post(&url)
            .send_json(body)
            .expect("check-in")
            .body_mut()
            .read_json()
            .expect("json");
        let took = sent.elapsed();
        if member.is_some() {
            assert_eq!(answer["eligibility"]["status"], "pending", "{answer}");
        }
        (answer["entry"]["id"].as_i64().expect("entry id"), took)
    }

    fn eligibility(&self, entry: i64) -> String {
        let url = format!(
            "http://127.0.0.1:{}/api/v1/queue-entries/{entry}/eligibility",
            self.web
        );
        let e: serde_json::Value = ureq::get(&url)
            .call()
            .expect("GET")
            .body_mut()
            .read_json()
            .expect("json");
        e["status"].as_str().unwrap_or_default().to_string()
    }

    /// Waits until each of `entries` has its inquiry answered.
    fn answered(&self, mut entries: Vec<i64>) {
        while !entries.is_empty() {
            entries.retain(|&entry| self.eligibility(entry) == "pending");
            std::thread::sleep(Duration::from_millis(20));
        }
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

/// 100 check-ins at once, each with a card when `cards`; their entries and answer times.
fn at_once(web: u16, round: usize, cards: bool) -> Vec<(i64, Duration)> {
    let start = Arc::new(Barrier::new(AT_ONCE));
    let threads: Vec<_> = (0..AT_ONCE)
        .map(|i| {
            let start = start.clone();
            std::thread::spawn(move || {
                let member = format!("WAIT200-{round}-{i}");
                start.wait();
                Daemon::check_in(web, cards.then_some(member.as_str()))
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("check-in thread"))
        .collect()
}

/// CPU time the daemon's journal writer has used so far (its thread's schedstat): every
/// check-in's rows, and with eligibility on its inquiry's, go through that one thread.
fn writer_cpu(pid: u32) -> Duration {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon's threads") {
        let task = task.expect("a thread").path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if name.trim() == "journal-writer" {
            let stat = std::fs::read_to_string(task.join("schedstat")).expect("schedstat");
            let ns = stat.split_whitespace().next().and_then(|v| v.parse().ok());
            return Duration::from_nanos(ns.expect("schedstat's CPU time"));
        }
    }
    panic!("the daemon has no journal-writer thread")
}

fn percentiles(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (
        ms(times[times.len() / 2]),
        ms(times[(times.len() * 99 / 100).min(times.len() - 1)]),
    )
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this with no flag: stay quick then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let number = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (checkins, rounds) = (number("BENCH_CHECKINS", 500), number("BENCH_ROUNDS", 20));
    let payer = Payer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &payer);

    let verified = |member: &str| {
        let started = Instant::now();
        let (entry, _) = Daemon::check_in(daemon.web, Some(member));
        loop {
            match daemon.eligibility(entry).as_str() {
                "pending" => std::thread::sleep(Duration::from_millis(2)),
                "verified" => return started.elapsed(),
                other => panic!("entry {entry}'s eligibility is {other}"),
            }
        }
    };
    // The first inquiry also starts the payer's X12 parser and the connector's connection.
    verified("WAIT200-WARM");
    let shown: Vec<Duration> = (0..checkins)
        .map(|n| verified(&format!("WAIT200-{n}")))
        .collect();

    let (mut on, mut off) = (Vec::new(), Vec::new());
    let (mut cpu_on, mut cpu_off) = (Duration::ZERO, Duration::ZERO);
    let pid = daemon.child.id();
    for round in 0..rounds {
        // Alternating which goes first, so that neither always meets the other's tail.
        for cards in [round % 2 == 0, round % 2 != 0] {
            let before = writer_cpu(pid);
            let (entries, times): (Vec<i64>, Vec<Duration>) =
                at_once(daemon.web, round, cards).into_iter().unzip();
            let used = writer_cpu(pid) - before;
            // A round's inquiries are answered before the next round: each round is a burst of
            // check-ins meeting a connector with nothing else to ask, as at a clinic's door.
            if cards {
                daemon.answered(entries);
            }
            if cards {
                on.extend(times);
                cpu_on += used;
            } else {
                off.extend(times);
                cpu_off += used;
            }
        }
    }
    let per_checkin = |cpu: Duration| cpu.as_secs_f64() * 1e6 / (rounds * AT_ONCE) as f64;

    let (s50, s99) = percentiles(shown);
    let (on50, on99) = percentiles(on);
    let (off50, off99) = percentiles(off);
    println!(
        "check-in with a card -> entry verified by the API, payer answering in 200 ms ({checkins} check-ins, one at a time): p50 {s50:.1} ms, p99 {s99:.1} ms (target p99 < 300 ms)"
    );
    println!(
        "check-in answer, {AT_ONCE} at once ({rounds} rounds each): eligibility on p50 {on50:.1} ms, p99 {on99:.1} ms | off p50 {off50:.1} ms, p99 {off99:.1} ms (target: unchanged)"
    );
    println!(
        "journal writer CPU per check-in in those rounds: eligibility on {:.0} µs | off {:.0} µs",
        per_checkin(cpu_on),
        per_checkin(cpu_off)
    );
}
