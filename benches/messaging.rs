//! Figures for patient messaging, printed (not asserted): 1,000 notifications queued at once
//! (made while no SMSC answered, the gateway then killed) handed to the test SMSC over SMPP
//! after a restart, beside a bare probe in the same run (the same codec submitting 1,000
//! submit_sm over one bound connection with the same window, nothing else); the widest window
//! the SMSC saw; and the daemon's CPU while 10 notifications a second are made and sent.
//! Needs node and the SMSC's packages (scripts/test-deps.sh).
//!
//! `cargo bench --bench messaging`; `BENCH_NOTIFICATIONS` sets the burst (default 1000),
//! `BENCH_SECONDS` the paced window (default 30 s).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "shared/usage.rs"]
mod usage;

use clinic_gateway::messaging::smpp::{self, BindKind, Pdu};
use common::smsc::Smsc;
use common::{Gateway, free_port, post, wait_for};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WINDOW: usize = 10;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(smsc_port: u16) -> String {
    format!(
        "[destinations.messaging]\nbackoff_initial_ms = 200\nbackoff_max_ms = 500\nmax_attempts = 100000\n\n\
[messaging]\nchannels = [\"sms\"]\n\n\
[[messaging.providers]]\nname = \"smsc\"\nprice_per_segment = 0.04\nbreaker_failures = 1000000\n\
smpp = {{ host = \"127.0.0.1\", port = {smsc_port}, system_id = \"gateway\", password_file = \"smpp.password\", source = \"Clinic\", window = {WINDOW} }}\n\n\
[messaging.templates.you_are_next.en]\nsms = \"Ticket {{ticket}}: you are next.\"\n"
    )
}

/// Checks in `checkins` patients with numbers, then calls `calls` times: each call makes the
/// queue's next patient a "you are next" notification.
fn make_notifications(gw: &Gateway, from: usize, checkins: usize, calls: usize) {
    for i in from..from + checkins {
        let (status, _) = post(
            &gw.url("/api/v1/queues/general/check-in"),
            &json!({ "request_id": format!("b-{i}"), "contact": { "phone": format!("+4179{:07}", i) } }),
        );
        assert_eq!(status, 201);
    }
    for _ in 0..calls {
        let (status, _) = post(&gw.url("/api/v1/queues/general/call-next"), &json!({}));
        assert_eq!(status, 200);
    }
}

/// The next whole PDU from the SMSC.
async fn read(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Pdu {
    loop {
        if let Ok(Some((pdu, used))) = smpp::decode(buf) {
            buf.drain(..used);
            return pdu;
        }
        let mut chunk = [0u8; 4096];
        let got = s.read(&mut chunk).await.expect("read");
        assert!(got > 0, "SMSC closed");
        buf.extend_from_slice(&chunk[..got]);
    }
}

/// The bare probe: bind, then `n` submit_sm with at most `WINDOW` unanswered.
async fn probe(port: u16, n: usize) -> Duration {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(&smpp::bind(
        BindKind::Transceiver,
        1,
        "gateway",
        "smpp-pw",
        "",
    ))
    .await
    .expect("bind");
    let mut buf = Vec::new();
    assert!(matches!(read(&mut s, &mut buf).await, Pdu::BindResp(h) if h.status == 0));
    let start = Instant::now();
    let (mut sent, mut answered) = (0, 0);
    while answered < n {
        while sent < n && sent - answered < WINDOW {
            let pdu = smpp::submit_sm(
                sent as u32 + 2,
                "Clinic",
                "+41790000000",
                "Ticket P-001: you are next.",
                60,
            );
            s.write_all(&pdu).await.expect("submit");
            sent += 1;
        }
        if let Pdu::SubmitResp(..) = read(&mut s, &mut buf).await {
            answered += 1;
        }
    }
    start.elapsed()
}

fn main() {
    let n = env("BENCH_NOTIFICATIONS", 1000);
    let seconds = env("BENCH_SECONDS", 30);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("smpp.password"), "smpp-pw\n").expect("pw");

    // The probe, against its own SMSC.
    let probe_smsc = Smsc::start(free_port(), "gateway:smpp-pw", 0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let probe_time = runtime.block_on(probe(probe_smsc.port, n));
    drop(probe_smsc);

    // n notifications queued while no SMSC answers, then the gateway killed.
    let port = free_port();
    let mut gw = Gateway::new(dir.path(), &config(port));
    gw.start();
    make_notifications(&gw, 0, n + 1, n);
    gw.kill9();
    let mut smsc = Smsc::start(port, "gateway:smpp-pw", 0);
    let start = Instant::now();
    gw.start();
    wait_for(
        "every notification submitted",
        Duration::from_secs(600),
        || (smsc.submitted().len() >= n).then_some(()),
    );
    let burst = start.elapsed();
    smsc.command("window");
    let widest = smsc
        .lines()
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("window ").map(str::to_string))
        .unwrap_or_default();
    println!(
        "{n} queued notifications handed to the SMSC after a restart: {:.2} s ({:.0}/s), widest window seen {widest} (configured {WINDOW}); probe, bare codec: {:.2} s ({:.0}/s)",
        burst.as_secs_f64(),
        n as f64 / burst.as_secs_f64(),
        probe_time.as_secs_f64(),
        n as f64 / probe_time.as_secs_f64(),
    );

    // 10 notifications a second: the daemon's CPU over the window, beside a daemon without
    // messaging doing the same check-ins and calls, so that messaging's own share shows.
    let (with, per_notification) = paced_cpu(&gw, n + 1, seconds);
    drop(gw);
    let queue_only = tempfile::tempdir().expect("tempdir");
    let mut plain = Gateway::new(queue_only.path(), "");
    plain.start();
    let (without, _) = paced_cpu(&plain, 0, seconds);
    println!(
        "10 notifications/s for {seconds} s (check-in, call, message, receipt): daemon CPU {with:.1} % of a core, {per_notification:.2} ms per notification; the same check-ins and calls without messaging: {without:.1} %, so messaging's own {:.1} %",
        with - without
    );
}

/// Ten check-ins and ten calls a second for `seconds`, numbered from `from`: the daemon's CPU
/// over them, as % of a core and ms per call.
fn paced_cpu(gw: &Gateway, from: usize, seconds: usize) -> (f64, f64) {
    let (t0, c0) = (Instant::now(), usage::cpu(gw.pid()));
    for second in 0..seconds {
        make_notifications(gw, from + second * 10, 10, 10);
        let next = Duration::from_secs(second as u64 + 1);
        std::thread::sleep(next.saturating_sub(t0.elapsed()));
    }
    let (elapsed, used) = (t0.elapsed().as_secs_f64(), usage::cpu(gw.pid()) - c0);
    (
        used.as_secs_f64() / elapsed * 100.0,
        used.as_secs_f64() * 1000.0 / (seconds * 10) as f64,
    )
}
