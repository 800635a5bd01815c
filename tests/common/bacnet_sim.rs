//! The bacpypes3 BACnet/IP device simulator (`tests/peers/bacnet_device.py`), started from the
//! repository; it binds 127.0.0.2 on the given UDP port.

use super::{peer_script, start_until_ready};
use std::io::Write;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The simulator, started from the repository's script; killed on drop.
pub struct Device {
    child: Child,
    stdin: ChildStdin,
    /// The simulator's log lines after "ready".
    lines: mpsc::Receiver<String>,
}

impl Device {
    /// Starts `bacnet_device.py` on `port` and waits for its "ready" line (it answered a
    /// Who-Is, so it really is bound).
    pub fn start(port: u16) -> Device {
        Device::start_with(port, &[])
    }

    /// [`Device::start`] with more arguments for the script (e.g. `--no-cov`).
    pub fn start_with(port: u16, args: &[&str]) -> Device {
        let (mut child, lines) = start_until_ready(
            peer_script("bacnet_device.py")
                .arg(port.to_string())
                .args(args)
                .stdin(Stdio::piped()),
            "the BACnet simulator",
            "bacnet_device: ready",
        );
        let stdin = child.stdin.take().expect("stdin");
        Device {
            child,
            stdin,
            lines,
        }
    }

    /// Sets an analog input's present value on the device (as the building would).
    pub fn set(&mut self, object: &str, value: f64) {
        writeln!(self.stdin, "set {object} {value}").expect("simulator stdin");
        self.stdin.flush().expect("flush");
    }
}

impl Device {
    /// The present value and the 16 priority-array slots (`None` = empty) of a commandable
    /// object, as the device itself holds them.
    pub fn show(&mut self, object: &str) -> (String, Vec<Option<String>>) {
        writeln!(self.stdin, "show {object}").expect("simulator stdin");
        self.stdin.flush().expect("flush");
        let prefix = format!("bacnet_device: show {object} ");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the simulator answers `show`");
            let Some(rest) = line.strip_prefix(&prefix) else {
                continue;
            };
            let (value, slots) = rest.split_once(' ').expect("value and slots");
            let slots = slots
                .trim_matches(['[', ']'])
                .split(',')
                .map(|s| (s != "null").then(|| s.to_string()))
                .collect();
            return (value.to_string(), slots);
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
