//! Figures for the facility devices, printed (not asserted): CPU and RSS of the daemon polling
//! 50 Modbus devices × 10 registers at 1 Hz plus 20 occupancy sensors on a local Mosquitto.
//! Needs mosquitto and the pymodbus simulator (scripts/test-deps.sh).
//!
//! `cargo bench --bench devices`; `BENCH_SECONDS` sets the measured window (default 60 s);
//! `BENCH_STATIC=1` keeps the registers unchanged (polling cost without events).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "shared/usage.rs"]
mod usage;

use common::modbus_sim::Sim;
use common::{Broker, Gateway, free_port, relay_table, wait_for};
use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

const DEVICES: usize = 50;
const REGISTERS: usize = 10;
const SENSORS: usize = 20;
/// Devices served by one simulator process (one connection each).
const DEVICES_PER_SIM: usize = 10;

fn status_line(pid: u32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("proc status")
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or(key)
        .split_whitespace()
        .skip(1)
        .collect::<Vec<_>>()
        .join(" ")
}

fn config(broker: &Broker, sims: &[Sim]) -> String {
    let mut c = relay_table(broker);
    let _ = write!(
        c,
        "\n[devices.occupancy]\n[devices.occupancy.broker]\nhost = \"127.0.0.1\"\nport = {}\n",
        broker.port
    );
    for room in 0..SENSORS {
        let _ = write!(
            c,
            "\n[[devices.occupancy.rooms]]\nname = \"room-{room}\"\narea = \"area-{}\"\n",
            room % 4
        );
    }
    for s in 0..SENSORS {
        let kind = if s % 2 == 0 { "occupancy" } else { "counter" };
        let _ = write!(
            c,
            "\n[[devices.occupancy.sensors]]\nname = \"sensor-{s}\"\nkind = \"{kind}\"\nroom = \"room-{s}\"\n"
        );
    }
    for d in 0..DEVICES {
        let sim = &sims[d / DEVICES_PER_SIM];
        let _ = write!(
            c,
            "\n[[devices.modbus]]\nname = \"env-{d}\"\nhost = \"127.0.0.1\"\nport = {}\npoll_interval_ms = 1000\nheartbeat_s = 300\n",
            sim.port
        );
        for r in 0..REGISTERS {
            let _ = write!(
                c,
                "\n[[devices.modbus.registers]]\nname = \"r{r}\"\nfunction = \"input\"\naddress = {r}\n"
            );
        }
    }
    c
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this with no flag: stay quick then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    // Every register of a device changes every few seconds, as CO2 and temperature do.
    let changing = std::env::var("BENCH_STATIC").is_err();
    let values: Vec<serde_json::Value> = (0..REGISTERS)
        .map(|r| {
            let mut v = serde_json::json!({"table": "input", "address": r, "type": "u16", "value": 400 + r});
            if changing {
                v["tick_ms"] = serde_json::json!(3000 + 500 * r);
            }
            v
        })
        .collect();
    let map = serde_json::json!({ "unit": 1, "values": values });
    let sims: Vec<Sim> = (0..DEVICES / DEVICES_PER_SIM)
        .map(|_| Sim::tcp(dir.path(), free_port(), &map))
        .collect();
    let mut gateway = Gateway::new(dir.path(), &config(&broker, &sims)).env("RUST_LOG", "warn");
    gateway.start();
    wait_for("every device healthy", Duration::from_secs(60), || {
        let actors = gateway.get_json("/api/v1/actors");
        let healthy = actors
            .as_array()
            .map(|a| a.iter().filter(|h| h["state"] == "healthy").count())
            .unwrap_or(0);
        (healthy > DEVICES).then_some(())
    });
    // The sensors report as zigbee2mqtt devices do: on change, here every 5 s each.
    let port = broker.port.to_string();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publishing = stop.clone();
    let publisher = std::thread::spawn(move || {
        let mut n = 0u64;
        while !publishing.load(std::sync::atomic::Ordering::Relaxed) {
            for s in 0..SENSORS {
                let payload = if s % 2 == 0 {
                    format!(
                        "{{\"occupancy\": {}, \"battery\": 97}}",
                        (n + s as u64).is_multiple_of(2)
                    )
                } else {
                    format!("{{\"count\": {}}}", (n + s as u64) % 9)
                };
                let _ = Command::new("mosquitto_pub")
                    .args(["-h", "127.0.0.1", "-p", &port, "-q", "1"])
                    .args(["-t", &format!("zigbee2mqtt/sensor-{s}"), "-m", &payload])
                    .status();
            }
            n += 1;
            std::thread::sleep(Duration::from_secs(5));
        }
    });
    let pid = gateway.pid();
    std::thread::sleep(Duration::from_secs(10));
    let (t0, c0) = (Instant::now(), usage::cpu(pid));
    std::thread::sleep(Duration::from_secs(seconds));
    let (elapsed, used) = (t0.elapsed().as_secs_f64(), usage::cpu(pid) - c0);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = publisher.join();
    let backlog = gateway.get_json("/api/v1/backlog");
    println!(
        "devices: {DEVICES} Modbus devices x {REGISTERS} registers at 1 Hz ({}) + {SENSORS} occupancy sensors, over {elapsed:.0} s: \
         CPU {:.2} % of one core, RSS {}, peak {}; cloud backlog {}",
        if changing { "changing" } else { "static" },
        100.0 * used.as_secs_f64() / elapsed,
        status_line(pid, "VmRSS:"),
        status_line(pid, "VmHWM:"),
        backlog["destinations"]["cloud"],
    );
    gateway.signal("TERM");
    gateway.wait(Duration::from_secs(15));
}
