//! What a process has used, read from `/proc`.

use std::time::Duration;

/// CPU time, user and system, the process `pid` has used so far, its ended threads included
/// (`/proc/<pid>/stat` fields 14 and 15, in clock ticks of 10 ms: USER_HZ on Linux).
pub fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // The command name is in parentheses and may hold spaces: count fields after it.
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}
