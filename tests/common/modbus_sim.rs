//! The pymodbus device simulator (`tests/peers/modbus_sim.py`), started from the repository.

use super::{free_port, peer_script, start_until_ready};
use std::path::Path;
use std::process::{Child, Command};

/// The simulator, started from the repository's script; killed on drop.
pub struct Sim {
    child: Child,
    /// The TCP port (0 for RTU).
    pub port: u16,
}

impl Sim {
    /// Starts `modbus_sim.py` with `args` and waits for its "ready" line (the port is open).
    pub fn start(port: u16, args: &[String]) -> Sim {
        let (child, _) = start_until_ready(
            peer_script("modbus_sim.py").args(args),
            "the Modbus simulator",
            "modbus_sim: ready",
        );
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
