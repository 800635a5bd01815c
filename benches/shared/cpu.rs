//! Pinning a bench's parts to CPUs, so that the part measured does not share a core with the
//! parts standing for other machines (`BENCH_CORES=split`; `BENCH_CORES=shared` runs every part
//! on every CPU).

use std::process::{Command, Stdio};

/// Whether to split: `BENCH_CORES=split` or `BENCH_CORES=shared` says, else the bench's
/// `default`; never on a machine with fewer than two CPUs.
pub fn split(default: bool) -> bool {
    let asked = match std::env::var("BENCH_CORES").as_deref() {
        Ok("split") => true,
        Ok("shared") => false,
        _ => default,
    };
    asked && std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
}

/// Pins the calling thread, and so every thread and process it starts from now on, to `cpu`
/// (`taskset` on this thread's id: only the thread, never the rest of the process).
pub fn pin(cpu: usize) {
    let tid = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse::<u32>().ok())
        .expect("this thread's id");
    taskset(&["-pc", &cpu.to_string(), &tid.to_string()]);
}

/// Pins every thread a started process has, and so those it starts later, to `cpu`.
// The brokers bench runs no process of its own to pin.
#[allow(dead_code)]
pub fn pin_process(pid: u32, cpu: usize) {
    taskset(&["-apc", &cpu.to_string(), &pid.to_string()]);
}

fn taskset(args: &[&str]) {
    let ok = Command::new("taskset")
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("taskset")
        .success();
    assert!(ok, "taskset {}", args.join(" "));
}
