//! The SIP callee of the messaging tests: Debian's SIPp (`sip-tester`) running a scenario of
//! `tests/peers/sipp` for one call (`answer`: rings, answers, waits for BYE; `busy`: 486), its
//! SIP messages traced to a file. Killed on drop.

use super::wait_for;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// SIPp waiting for one call.
pub struct Sipp {
    child: Child,
    pub port: u16,
    /// The SIP messages it sent and received.
    pub trace: PathBuf,
}

impl Sipp {
    /// Starts `scenario` on UDP `port` of 127.0.0.1; the answer's SDP names `rtp_port` for the
    /// audio. Waits until the port is bound.
    pub fn start(dir: &Path, scenario: &str, port: u16, rtp_port: u16) -> Sipp {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/peers/sipp")
            .join(format!("{scenario}.xml"));
        let trace = dir.join(format!("sipp-{scenario}-{port}.log"));
        let child = Command::new("sipp")
            .arg("-sf")
            .arg(&file)
            .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-m", "1"])
            .args(["-key", "rtp_port", &rtp_port.to_string()])
            .args(["-nostdin", "-timeout", "60", "-trace_msg", "-message_file"])
            .arg(&trace)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("sipp from Debian's sip-tester (scripts/test-deps.sh): {e}")
            });
        let mut sipp = Sipp { child, port, trace };
        let bound = format!(":{port:04X} ");
        wait_for("SIPp to listen", Duration::from_secs(20), || {
            if let Ok(Some(status)) = sipp.child.try_wait() {
                panic!("SIPp ended before listening: {status}");
            }
            std::fs::read_to_string("/proc/net/udp")
                .ok()?
                .lines()
                .any(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|local| format!("{local} ").ends_with(&bound))
                })
                .then_some(())
        });
        sipp
    }

    /// Its exit once the call's scenario is over (0: every step as scripted).
    pub fn wait_exit(&mut self) -> ExitStatus {
        wait_for("SIPp to finish its call", Duration::from_secs(60), || {
            self.child.try_wait().ok().flatten()
        })
    }

    /// The SIP messages traced so far.
    pub fn messages(&self) -> String {
        std::fs::read_to_string(&self.trace).unwrap_or_default()
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
