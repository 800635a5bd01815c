//! The SMS peers of the messaging tests: the SMSC (`tests/peers/smsc/smsc.js`, the npm `smpp`
//! server, scripted through its stdin) and Debian's Kannel (bearerbox + smsbox) in front of
//! it, whose `sendsms` is the gateway's HTTP SMS provider. Each is killed on drop.

use super::{free_port, start_until_ready, wait_for};
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// A line the SMSC printed (`submit <id> <to> <coding> <text>`, `receipt <id> <stat>`, ...).
pub type Lines = Arc<Mutex<Vec<String>>>;

/// The scripted SMSC.
pub struct Smsc {
    child: Child,
    stdin: ChildStdin,
    pub port: u16,
    lines: Lines,
}

impl Smsc {
    /// Starts the SMSC on `port`, accepting binds of `system_id:password`, and waits until it
    /// listens. `delay_ms`: how long each submit_sm waits for its answer.
    pub fn start(port: u16, credentials: &str, delay_ms: u64) -> Smsc {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/smsc/smsc.js");
        let mut cmd = Command::new("node");
        cmd.arg(script)
            .arg(port.to_string())
            .arg(credentials)
            .env("SMSC_DELAY_MS", delay_ms.to_string())
            .stdin(Stdio::piped());
        let (mut child, rx) = start_until_ready(
            &mut cmd,
            "the SMSC (npm smpp in tests/peers/smsc, scripts/test-deps.sh)",
            "ready",
        );
        let stdin = child.stdin.take().expect("stdin");
        let lines: Lines = Arc::default();
        let kept = lines.clone();
        std::thread::spawn(move || drain(rx, kept));
        Smsc {
            child,
            stdin,
            port,
            lines,
        }
    }

    /// Sends a command (`receipts none`, `throttle 3`, `window`) and waits for its `ok`.
    pub fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("SMSC stdin");
        self.stdin.flush().expect("flush");
        let want = format!("ok {line}");
        wait_for(&want, Duration::from_secs(10), || {
            self.lines().contains(&want).then_some(())
        });
    }

    /// Everything it printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The submit_sm it accepted: (message id, destination, text).
    pub fn submitted(&self) -> Vec<(String, String, String)> {
        self.lines()
            .iter()
            .filter_map(|l| {
                let mut parts = l.strip_prefix("submit ")?.splitn(4, ' ');
                let (id, to, _coding, text) =
                    (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
                let text: String = serde_json::from_str(text).ok()?;
                Some((id.to_string(), to.to_string(), text))
            })
            .collect()
    }

    /// Stops it (an outage); `start` again on the same port ends it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn drain(rx: mpsc::Receiver<String>, lines: Lines) {
    for line in rx {
        lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
    }
}

impl Drop for Smsc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Kannel's bearerbox and smsbox, bound to 127.0.0.1, with one SMPP link to an SMSC.
pub struct Kannel {
    bearerbox: Child,
    smsbox: Child,
    /// The smsbox's `sendsms` port.
    pub sendsms_port: u16,
    pub dir: PathBuf,
}

/// The `sendsms` user the tests' Kannel accepts.
pub const SENDSMS_USER: &str = "gateway";
pub const SENDSMS_PASSWORD: &str = "sendsms-secret";

impl Kannel {
    /// Starts Kannel in front of `smsc` (binding as `kannel:kannelpw`: SMPP passwords are at
    /// most 8 characters) and waits until its
    /// SMPP link is bound and `sendsms` answers.
    pub fn start(dir: &Path, smsc: &Smsc) -> Kannel {
        let dir = dir.join(format!("kannel-{}", free_port()));
        std::fs::create_dir_all(&dir).expect("kannel dir");
        let (admin, boxes, sendsms) = (free_port(), free_port(), free_port());
        let conf = format!(
            r#"group = core
admin-port = {admin}
admin-interface = 127.0.0.1
admin-password = admin-secret
smsbox-port = {boxes}
smsbox-interface = 127.0.0.1
box-allow-ip = 127.0.0.1
log-file = "{dir}/bearerbox.log"
log-level = 0
dlr-storage = internal

group = smsc
smsc = smpp
smsc-id = test-smsc
host = 127.0.0.1
port = {smsc}
transceiver-mode = true
smsc-username = kannel
smsc-password = kannelpw
system-type = ""
enquire-link-interval = 5
reconnect-delay = 1

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {boxes}
sendsms-port = {sendsms}
sendsms-interface = 127.0.0.1
log-file = "{dir}/smsbox.log"
log-level = 0

group = sendsms-user
username = {SENDSMS_USER}
password = {SENDSMS_PASSWORD}
concatenation = true
max-messages = 10
default-sender = clinic
"#,
            dir = dir.display(),
            smsc = smsc.port,
        );
        let conf_path = dir.join("kannel.conf");
        std::fs::write(&conf_path, conf).expect("kannel.conf");
        let spawn = |program: &str| {
            Command::new(program)
                .arg(&conf_path)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join(format!("{program}.err"))).expect("err"))
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("{program} from Debian's kannel (scripts/test-deps.sh): {e}")
                })
        };
        let bearerbox = spawn("/usr/sbin/bearerbox");
        // An smsbox that finds no bearerbox gives up at once.
        wait_for("bearerbox's box port", Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", boxes)).ok()
        });
        let smsbox = spawn("/usr/sbin/smsbox");
        let kannel = Kannel {
            bearerbox,
            smsbox,
            sendsms_port: sendsms,
            dir,
        };
        wait_for("Kannel's SMPP bind", Duration::from_secs(30), || {
            smsc.lines()
                .iter()
                .any(|l| l == "bind transceiver kannel")
                .then_some(())
        });
        wait_for("Kannel's sendsms port", Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", sendsms)).ok()
        });
        kannel
    }
}

impl Drop for Kannel {
    fn drop(&mut self) {
        for child in [&mut self.smsbox, &mut self.bearerbox] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
