//! Figures for eligibility at check-in, printed (not asserted): the daemon's real API and its
//! eligibility connector asking the test payer (spyne, tests/peers/x12/core_peer.py, every 270
//! checked by linuxforhealth-x12) over the CAQH CORE SOAP envelope; the payer answers each
//! inquiry after 200 ms (member ids `WAIT200-…`).
//!
//! 1. From a check-in carrying the patient's card to its entry `verified` by the API, one
//!    check-in at a time (target p99 < 300 ms).
//! 2. The check-in's own answer time with 100 check-ins at once, with a card (eligibility on)
//!    and without (off), in rounds on the same daemon so that both see the same journal and
//!    machine load: a check-in must not wait for the payer. Each round has a burst of each
//!    kind, and a second burst without cards ("off again": what two bursts of the same kind
//!    differ by, the bench's own spread), in an order that turns with the round; a round's
//!    inquiries are answered before the next burst. The 100 front desks each keep their
//!    connection, as a desk's browser does, so that the burst is the daemon's work rather than
//!    100 TCP handshakes. Beside the pooled percentiles: the median over rounds of each round's
//!    p50 on minus its p50 off, with a 95 % interval (rounds resampled), beside the same for off
//!    again minus off; and the CPU per check-in of the daemon's four busiest threads (the
//!    journal writer, the web server's worker, ...) during each kind of burst.
//!
//! `cargo bench --bench eligibility`; `BENCH_CHECKINS` sets the check-ins of part 1 (default
//! 500), `BENCH_ROUNDS` the rounds of part 2 (default 40). `BENCH_CORES=split` runs the daemon
//! on CPU 1 and the desks and the payer on CPU 0, as if they were other machines: the daemon's
//! own work is then all that a check-in's answer waits for.

#[path = "shared/cpu.rs"]
mod cpu;
#[path = "shared/daemon.rs"]
mod daemon;
use daemon::free_port;

use rand::RngExt;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::thread::JoinHandle;
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
    /// The bench's own connection for its polls, kept alive.
    agent: ureq::Agent,
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
        Daemon {
            child,
            web,
            agent: ureq::Agent::new_with_defaults(),
        }
    }

    /// Checks a patient in, with a card for the payer when `member` is given; answers the
    /// entry's id and how long the check-in's answer took.
    fn check_in(agent: &ureq::Agent, web: u16, member: Option<&str>) -> (i64, Duration) {
        let url = format!("http://127.0.0.1:{web}/api/v1/queues/general/check-in");
        let body = match member {
            Some(m) => serde_json::json!({ "coverage": {
                "member_id": m, "last_name": "DOE", "first_name": "JANE", "birth_date": "1980-01-01"
            } }),
            None => serde_json::json!({}),
        };
        let sent = Instant::now();
        let answer: serde_json::Value = agent
            .post(&url)
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
        let e: serde_json::Value = self
            .agent
            .get(&url)
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

/// The front desks: one thread per check-in of a burst, each keeping its connection to the
/// daemon between bursts.
struct Desks {
    go: Arc<Barrier>,
    /// The round and whether its check-ins carry cards; None ends the desks.
    burst: Arc<Mutex<Option<(usize, bool)>>>,
    answers: mpsc::Receiver<(i64, Duration)>,
    threads: Vec<JoinHandle<()>>,
}

impl Desks {
    fn open(web: u16) -> Desks {
        let go = Arc::new(Barrier::new(AT_ONCE + 1));
        let burst: Arc<Mutex<Option<(usize, bool)>>> = Arc::new(Mutex::new(None));
        let (tx, answers) = mpsc::channel();
        let threads = (0..AT_ONCE)
            .map(|i| {
                let (go, burst, tx) = (go.clone(), burst.clone(), tx.clone());
                std::thread::spawn(move || {
                    let agent = ureq::Agent::new_with_defaults();
                    loop {
                        go.wait();
                        let Some((round, cards)) = *burst.lock().expect("burst") else {
                            return;
                        };
                        let member = format!("WAIT200-{round}-{i}");
                        let answer =
                            Daemon::check_in(&agent, web, cards.then_some(member.as_str()));
                        tx.send(answer).expect("the bench takes the answers");
                    }
                })
            })
            .collect();
        Desks {
            go,
            burst,
            answers,
            threads,
        }
    }

    /// 100 check-ins at once, each with a card when `cards`; their entries and answer times.
    fn at_once(&self, round: usize, cards: bool) -> Vec<(i64, Duration)> {
        *self.burst.lock().expect("burst") = Some((round, cards));
        self.go.wait();
        (0..AT_ONCE)
            .map(|_| self.answers.recv().expect("a desk's answer"))
            .collect()
    }
}

impl Drop for Desks {
    fn drop(&mut self) {
        *self.burst.lock().expect("burst") = None;
        self.go.wait();
        for t in self.threads.drain(..) {
            t.join().expect("a desk");
        }
    }
}

/// CPU time the daemon's threads have used so far, by thread name (their schedstat): every
/// check-in's rows, and with eligibility on its inquiry's, go through the journal writer; its
/// HTTP request and answer through the web server's worker.
fn threads_cpu(pid: u32) -> BTreeMap<String, Duration> {
    let mut used = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon's threads") {
        let task = task.expect("a thread").path();
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(task.join("comm")),
            std::fs::read_to_string(task.join("schedstat")),
        ) else {
            continue; // a thread that ended meanwhile
        };
        let ns = stat.split_whitespace().next().and_then(|v| v.parse().ok());
        *used.entry(name.trim().to_string()).or_default() +=
            Duration::from_nanos(ns.expect("schedstat's CPU time"));
    }
    used
}

fn percentiles(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (
        ms(times[times.len() / 2]),
        ms(times[(times.len() * 99 / 100).min(times.len() - 1)]),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median of per-round differences and its 95 % interval, by resampling the rounds.
fn median_with_interval(d: &[f64]) -> (f64, f64, f64) {
    let mut rng = rand::rng();
    let mut medians: Vec<f64> = (0..2000)
        .map(|_| {
            median(
                (0..d.len())
                    .map(|_| d[rng.random_range(0..d.len())])
                    .collect(),
            )
        })
        .collect();
    medians.sort_by(f64::total_cmp);
    (median(d.to_vec()), medians[50], medians[1949])
}

/// The kinds of burst in a round: with cards, without, and without again.
const KINDS: [&str; 3] = ["on", "off", "off again"];

/// The order of the kinds in round `r`: every order in turn, so that no kind always meets
/// another's tail.
fn order(r: usize) -> [usize; 3] {
    [
        [0, 1, 2],
        [1, 2, 0],
        [2, 0, 1],
        [0, 2, 1],
        [2, 1, 0],
        [1, 0, 2],
    ][r % 6]
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
    let (checkins, rounds) = (number("BENCH_CHECKINS", 500), number("BENCH_ROUNDS", 40));
    let split = cpu::split(false);
    if split {
        cpu::pin(0);
    }
    let payer = Payer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &payer);
    if split {
        cpu::pin_process(daemon.child.id(), 1);
    }
    println!(
        "  ({})",
        if split {
            "daemon on CPU 1, desks and payer on CPU 0"
        } else {
            "daemon, desks and payer sharing every CPU"
        }
    );

    let verified = |member: &str| {
        let started = Instant::now();
        let (entry, _) = Daemon::check_in(&daemon.agent, daemon.web, Some(member));
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

    let desks = Desks::open(daemon.web);
    // The desks' connections opened, and the daemon's paths for both kinds warm.
    daemon.answered(
        desks
            .at_once(rounds, true)
            .into_iter()
            .map(|a| a.0)
            .collect(),
    );
    desks.at_once(rounds, false);

    let mut times: [Vec<Duration>; 3] = Default::default();
    let mut p50s: [Vec<f64>; 3] = Default::default();
    let mut cpu: [BTreeMap<String, Duration>; 3] = Default::default();
    let pid = daemon.child.id();
    for round in 0..rounds {
        for kind in order(round) {
            let cards = kind == 0;
            let before = threads_cpu(pid);
            let (entries, took): (Vec<i64>, Vec<Duration>) =
                desks.at_once(round, cards).into_iter().unzip();
            for (name, now) in threads_cpu(pid) {
                let was = before.get(&name).copied().unwrap_or_default();
                *cpu[kind].entry(name).or_default() += now.saturating_sub(was);
            }
            // A round's inquiries are answered before its next burst: each burst meets a
            // connector with nothing else to ask, as at a clinic's door.
            if cards {
                daemon.answered(entries);
            }
            p50s[kind].push(percentiles(took.clone()).0);
            times[kind].extend(took);
        }
    }
    let per_checkin = |cpu: Duration| cpu.as_secs_f64() * 1e6 / (rounds * AT_ONCE) as f64;
    let against_off = |kind: usize| {
        let d: Vec<f64> = (0..rounds).map(|r| p50s[kind][r] - p50s[1][r]).collect();
        median_with_interval(&d)
    };

    let (s50, s99) = percentiles(shown);
    println!(
        "check-in with a card -> entry verified by the API, payer answering in 200 ms ({checkins} check-ins, one at a time): p50 {s50:.1} ms, p99 {s99:.1} ms (target p99 < 300 ms)"
    );
    let pooled: Vec<String> = (0..3)
        .map(|k| {
            let (p50, p99) = percentiles(times[k].clone());
            format!("{} p50 {p50:.1} ms, p99 {p99:.1} ms", KINDS[k])
        })
        .collect();
    println!(
        "check-in answer, {AT_ONCE} at once ({rounds} rounds): {} (target: on unchanged)",
        pooled.join(" | ")
    );
    let ((on, on_lo, on_hi), (again, again_lo, again_hi)) = (against_off(0), against_off(2));
    println!(
        "  a round's p50 minus its off p50, median over rounds [95 % interval]: on {on:+.2} ms [{on_lo:+.2}, {on_hi:+.2}] | off again {again:+.2} ms [{again_lo:+.2}, {again_hi:+.2}]"
    );
    // The threads that did most of the bursts' work, each with its CPU per check-in by kind.
    let mut busiest: Vec<(&String, &Duration)> = cpu[1].iter().collect();
    busiest.sort_by(|a, b| b.1.cmp(a.1));
    for (name, _) in busiest.into_iter().take(4) {
        let of = |k: usize| per_checkin(cpu[k].get(name).copied().unwrap_or_default());
        println!(
            "  daemon thread {name}: CPU per check-in in those bursts: on {:.0} µs | off {:.0} µs | off again {:.0} µs",
            of(0),
            of(1),
            of(2)
        );
    }
}
