//! HL7 v2 peers from the Python `hl7` package: the receiver the gateway's outbound sender
//! delivers to (`tests/peers/hl7_receiver.py`) and `mllp_send`, the package's MLLP client.

use super::{Gateway, free_port, peer_script, wait_for};
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The test HL7 receiver; it answers by control id (see the script) and is killed on drop.
pub struct Receiver {
    child: Child,
    log: PathBuf,
}

impl Receiver {
    /// Starts the receiver on `port`, its logs in `dir`, and waits until it accepts a connection.
    pub fn start(dir: &Path, port: u16) -> Receiver {
        let log = dir.join(format!("received-{port}.log"));
        let child = peer_script("hl7_receiver.py")
            .arg(port.to_string())
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with the hl7 package (scripts/test-deps.sh)");
        wait_for("the HL7 receiver", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Receiver { child, log }
    }

    /// Every message received so far, whole, segments separated by `\n`.
    pub fn messages(&self) -> Vec<String> {
        let mut path = self.log.clone().into_os_string();
        path.push(".messages");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .split("\n\n")
            .filter(|m| !m.trim().is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The control ids received so far, in order, a resent message once more each time.
    pub fn received(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends the messages of `text` (one per `MSH|` line block) to `port` with `mllp_send
/// --loose`; returns the ACKs it printed, one per message.
pub fn mllp_send(dir: &Path, port: u16, text: &str) -> Vec<String> {
    let file = dir.join(format!("msg-{}.hl7", free_port()));
    std::fs::write(&file, text).expect("write message file");
    let out = Command::new("mllp_send")
        .args(["--loose", "-p", &port.to_string(), "-f"])
        .arg(&file)
        .arg("127.0.0.1")
        .output()
        .expect("mllp_send from the Python hl7 package (scripts/test-deps.sh)");
    assert!(
        out.status.success(),
        "mllp_send failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split("MSH|")
        .filter(|s| !s.trim().is_empty())
        .map(|s| format!("MSH|{}", s.trim()))
        .collect()
}

/// `text` (messages with `\n` segment ends) as one MLLP frame, for a raw TCP sender.
pub fn framed(text: &str) -> Vec<u8> {
    [
        &[0x0b][..],
        text.replace('\n', "\r").as_bytes(),
        &[0x1c, 0x0d],
    ]
    .concat()
}

/// Sends `text` to the gateway's MLLP listener on `port` (started with
/// `CLINIC_GATEWAY_FAULT_HOLD_ACK` naming its control id), waits until the gateway committed it
/// and holds its ACK, kills the gateway with SIGKILL and starts it again: the sender saw no ACK
/// and must resend what the journal already holds.
pub fn kill_9_while_the_ack_is_held(gw: &mut Gateway, port: u16, text: &str) {
    let mut stream = wait_for("the MLLP listener", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    stream.write_all(&framed(text)).expect("send");
    wait_for(
        "the commit whose ACK is held",
        Duration::from_secs(10),
        || {
            gw.log_text()
                .contains("ACK held after the commit")
                .then_some(())
        },
    );
    gw.kill9();
    drop(stream);
    gw.start();
    wait_for("the MLLP listener", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
}

/// The body of `POST /api/v1/hl7/outbound` for an ADT^A08 with control id `control`.
pub fn a08(control: &str) -> serde_json::Value {
    serde_json::json!({ "message": format!("MSH|^~\\&|EDGE|CLINIC|EHR|HOSP|20261124150000||ADT^A08^ADT_A01|{control}|P|2.5.1\nEVN|A08|20261124150000\nPID|1||123456^^^CLINIC^MR||DOE^JANE||19800101|F\n") })
}

/// The gateway with an MLLP listener on a free port, `extra` added after its `listen` line;
/// returns once the listener accepts connections.
pub fn hl7_gateway_with(dir: &Path, extra: &str) -> (Gateway, u16) {
    let port = free_port();
    let mut gw = Gateway::new(
        dir,
        &format!("[connectors.hl7v2]\nlisten = \"127.0.0.1:{port}\"\n{extra}"),
    );
    gw.start();
    wait_for("the MLLP listener", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    (gw, port)
}
