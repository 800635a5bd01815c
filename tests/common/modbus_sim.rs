//! The pymodbus device simulator (`tests/peers/modbus_sim.py`), started from the repository.

use super::free_port;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The simulator, started from the repository's script; killed on drop.
pub struct Sim {
    child: Child,
    /// The TCP port (0 for RTU).
    pub port: u16,
}

impl Sim {
    /// Starts `modbus_sim.py` with `args` and waits for its "ready" line (the port is open).
    pub fn start(port: u16, args: &[String]) -> Sim {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/modbus_sim.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 must be installed (scripts/test-deps.sh)");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        // Drained for the simulator's whole life so that its warnings never fill the pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.starts_with("modbus_sim: ready") => break,
                Ok(line) => seen.push(line),
                Err(_) => panic!(
                    "the Modbus simulator did not become ready (pip install -r tests/peers/requirements.txt): {}",
                    seen.join("\n")
                ),
            }
        }
        Sim { child, port }
    }

    pub fn tcp(dir: &Path, port: u16, map: &serde_json::Value) -> Sim {
        Sim::start(
            port,
            &[
                "--tcp".into(),
                port.to_string(),
                "--map".into(),
                write_map(dir, map),
            ],
        )
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn write_map(dir: &Path, map: &serde_json::Value) -> String {
    let path = dir.join(format!("map-{}.json", free_port()));
    std::fs::write(&path, map.to_string()).expect("write map");
    path.display().to_string()
}

impl Sim {
    /// Reads holding registers straight from the simulator with pymodbus' own client, so a test
    /// sees what the device holds, independently of the gateway.
    pub fn read_holding(&self, address: u16, count: u16) -> Vec<u16> {
        let script = format!(
            "from pymodbus.client import ModbusTcpClient\n\
             c = ModbusTcpClient('127.0.0.1', port={})\n\
             assert c.connect()\n\
             r = c.read_holding_registers({address}, count={count}, device_id=1)\n\
             assert not r.isError(), r\n\
             print(' '.join(str(v) for v in r.registers))",
            self.port
        );
        let out = Command::new("python3")
            .args(["-c", &script])
            .output()
            .expect("python3 must be installed (scripts/test-deps.sh)");
        assert!(
            out.status.success(),
            "reading the simulator failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|w| w.parse().expect("a register value"))
            .collect()
    }
}
