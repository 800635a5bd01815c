//! What a process has used, read from `/proc`.

use std::time::Duration;

/// CPU time, user and system, the process `pid` has used so far, its ended threads included
/// (`/proc/<pid>/stat` fields 14 and 15, in clock ticks of 10 ms: USER_HZ on Linux).
pub fn cpu(pid: u32) -> Duration {
    let [user, system] =
        times(&std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat"));
    user + system
}

/// User and system time in a `stat` file's text, a process's or one thread's
/// (`/proc/<pid>/task/<tid>/stat`).
pub fn times(stat: &str) -> [Duration; 2] {
    // The command name is in parentheses and may hold spaces: count fields after it.
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| Duration::from_millis(fields[i].parse::<u64>().expect("ticks") * 10);
    [ticks(11), ticks(12)]
}
