//! Figure for the EHR sync, printed (not asserted): how long from an appointment cancelled in
//! the EHR (a FHIR `PUT` on the test server) until its queue entry is closed in the gateway.
//! Needs node and the FHIR test server (scripts/test-deps.sh).
//!
//! `cargo bench --bench sync`; `BENCH_POLL_S` sets the appointment poll interval (default 5 s),
//! `BENCH_ROUNDS` the number of cancellations (default 20).

#[path = "../tests/common/mod.rs"]
mod common;

use common::Gateway;
use common::fhir_server::{FhirServer, MRN};
use serde_json::json;
use std::time::{Duration, Instant};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this with no flag: stay quick then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let (poll_s, rounds) = (env("BENCH_POLL_S", 5), env("BENCH_ROUNDS", 20) as usize);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FhirServer::start(dir.path(), &[]);
    let patient = server.create_patient("M1", "Doe", "Jane", "1980-02-03");
    let reference = format!("Patient/{}", patient["id"].as_str().expect("id"));
    let today =
        humantime::format_rfc3339(std::time::SystemTime::now()).to_string()[..10].to_string();
    let appointments: Vec<serde_json::Value> = (0..rounds)
        .map(|i| {
            server.call(
                "POST",
                "/Appointment",
                Some(json!({
                    "resourceType": "Appointment", "status": "booked",
                    "start": format!("{today}T00:{:02}:00Z", i % 60),
                    "end": format!("{today}T01:{:02}:00Z", i % 60),
                    "participant": [{ "actor": { "reference": reference }, "status": "accepted" }]
                })),
            )
        })
        .collect();
    let config = format!(
        "[connectors.fhir]\nbase_url = \"{}\"\nidentifier_system = \"{MRN}\"\n\n\
         [connectors.fhir.appointments]\nqueue = \"general\"\ncheck_in = \"booked\"\npoll_interval_s = {poll_s}\n",
        server.base()
    );
    let mut gateway = Gateway::new(dir.path(), &config).env("RUST_LOG", "warn");
    gateway.start();
    let open = |gw: &Gateway| -> Vec<String> {
        gw.get_json("/api/v1/queues?queue=general")
            .as_array()
            .expect("entries")
            .iter()
            .filter_map(|e| e["appointment_ref"].as_str().map(str::to_string))
            .collect()
    };
    let deadline = Duration::from_secs(poll_s * 3 + 30);
    let start = Instant::now();
    while open(&gateway).len() < rounds {
        assert!(start.elapsed() < deadline, "appointments were not queued");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut latencies = Vec::with_capacity(rounds);
    for a in &appointments {
        let id = a["id"].as_str().expect("id");
        let mut cancelled = a.clone();
        cancelled["status"] = json!("cancelled");
        let t0 = Instant::now();
        server.call("PUT", &format!("/Appointment/{id}"), Some(cancelled));
        let entry = format!("Appointment/{id}");
        while open(&gateway).contains(&entry) {
            assert!(t0.elapsed() < deadline, "{entry} was never closed");
            std::thread::sleep(Duration::from_millis(20));
        }
        latencies.push(t0.elapsed());
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "EHR appointment cancelled -> queue entry closed, poll every {poll_s} s, {rounds} changes: median {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        ms(latencies[rounds / 2]),
        ms(latencies[rounds * 9 / 10]),
        ms(latencies[rounds - 1]),
    );
    gateway.signal("TERM");
    gateway.wait(Duration::from_secs(15));
}
