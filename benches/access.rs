//! Figures for staff and system access, printed (not asserted): the time of a login's password
//! hash (argon2id with the parameters the daemon uses), and the latency an API key adds to a
//! call — the same `GET /api/v1/queues` sent alternately to a daemon with `[access]` off and to
//! one with it on (Bearer key, checked against the journal, its scope and its request budget),
//! side by side over kept-alive loopback connections in the same run.
//!
//! `cargo bench --bench access`; `BENCH_CALLS` sets the calls per daemon (default 5 000).

#[path = "shared/daemon.rs"]
mod daemon;
use daemon::free_port;

use clinic_gateway::access::password;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const HASHES: usize = 20;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Daemon {
    child: Child,
    port: u16,
}

impl Daemon {
    /// A daemon in its own folder under `dir`; with `access`, logins and keys are required and
    /// the key added with the CLI once it answers is returned.
    fn start(dir: &Path, access: bool) -> (Daemon, Option<String>) {
        std::fs::create_dir_all(dir).expect("dir");
        let port = free_port();
        let config: PathBuf = dir.join("gateway.toml");
        let mut text = format!(
            "[gateway]\nfacility_id = \"bench\"\ndata_dir = \"{}\"\n[web]\nbind = \"127.0.0.1:{port}\"\n",
            dir.join("data").display()
        );
        if access {
            // The key's budget is set above what the bench asks, so the limiter is measured as
            // every call passes it, never as it refuses.
            text.push_str(
                "[access]\nenabled = true\n\
                 [access.rate_limits.clients.\"key:bench\"]\nper_second = 1000000.0\nburst = 1000000\n",
            );
        }
        std::fs::write(&config, text).expect("config");
        let child = daemon::start(&config, &[port]);
        let key = access.then(|| {
            let out = Command::new(env!("CARGO_BIN_EXE_clinic-gateway"))
                .args(["key", "add", "bench", "--scope", "queue", "--config"])
                .arg(&config)
                .output()
                .expect("key add");
            let printed = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "key add: {printed}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            printed
                .lines()
                .find_map(|l| l.strip_prefix("key (shown once; give it to the client):"))
                .expect("a key")
                .trim()
                .to_string()
        });
        (Daemon { child, port }, key)
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

/// One `GET /api/v1/queues`, with the key if given; its latency.
fn call(agent: &ureq::Agent, port: u16, key: Option<&str>) -> Duration {
    let url = format!("http://127.0.0.1:{port}/api/v1/queues");
    let mut request = agent.get(&url);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let start = Instant::now();
    let mut answer = request.call().expect("GET /api/v1/queues");
    answer.body_mut().read_to_vec().expect("body");
    start.elapsed()
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this with no flag: stay quick then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let calls: usize = std::env::var("BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);

    let mut hashes = Vec::with_capacity(HASHES);
    let mut checks = Vec::with_capacity(HASHES);
    for n in 0..HASHES {
        let secret = format!("correct horse battery staple {n}");
        let start = Instant::now();
        let stored = password::hash(&secret).expect("hash");
        hashes.push(start.elapsed());
        let start = Instant::now();
        assert!(password::verify(&secret, &stored));
        checks.push(start.elapsed());
    }
    hashes.sort();
    checks.sort();
    println!(
        "login password check (argon2id, the daemon's parameters), {HASHES} logins: median {:.0} ms, max {:.0} ms; hashing a new password: median {:.0} ms, max {:.0} ms; target < 250 ms",
        ms(percentile(&checks, 0.5)),
        ms(percentile(&checks, 1.0)),
        ms(percentile(&hashes, 0.5)),
        ms(percentile(&hashes, 1.0)),
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let (open, _) = Daemon::start(&dir.path().join("open"), false);
    let (guarded, key) = Daemon::start(&dir.path().join("guarded"), true);
    let key = key.expect("the guarded daemon's key");
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    for _ in 0..500 {
        call(&agent, open.port, None);
        call(&agent, guarded.port, Some(&key));
    }
    let mut bare = Vec::with_capacity(calls);
    let mut keyed = Vec::with_capacity(calls);
    for _ in 0..calls {
        bare.push(call(&agent, open.port, None));
        keyed.push(call(&agent, guarded.port, Some(&key)));
    }
    bare.sort();
    keyed.sort();
    let (b50, b99) = (percentile(&bare, 0.5), percentile(&bare, 0.99));
    let (k50, k99) = (percentile(&keyed, 0.5), percentile(&keyed, 0.99));
    println!(
        "GET /api/v1/queues, {calls} calls each, alternating: with an API key p50 {:.3} ms, p99 {:.3} ms; without access p50 {:.3} ms, p99 {:.3} ms; the key adds {:.3} ms at p99 (target < 1 ms)",
        ms(k50),
        ms(k99),
        ms(b50),
        ms(b99),
        ms(k99) - ms(b99),
    );
}
