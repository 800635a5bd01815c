//! The voice peer of the messaging tests (`tests/peers/voice_api.py`): a Twilio-style call API
//! that answers a call request with the call's sid and then calls the gateway's status
//! callback, scripted through its stdin. Killed on drop.

use super::{peer_script, start_until_ready, wait_for};
use std::io::Write;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// The account the API accepts, and its token.
pub const ACCOUNT: &str = "AC0123";
pub const TOKEN: &str = "voice-token";

/// The running call API.
pub struct VoiceApi {
    child: Child,
    stdin: ChildStdin,
    pub port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl VoiceApi {
    /// Starts the API on `port` and waits until it listens.
    pub fn start(port: u16) -> VoiceApi {
        let mut cmd = peer_script("voice_api.py");
        cmd.arg(port.to_string())
            .arg(format!("{ACCOUNT}:{TOKEN}"))
            .stdin(Stdio::piped());
        let (mut child, rx) = start_until_ready(&mut cmd, "the voice API (voice_api.py)", "ready");
        let stdin = child.stdin.take().expect("stdin");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let kept = lines.clone();
        std::thread::spawn(move || drain(rx, kept));
        VoiceApi {
            child,
            stdin,
            port,
            lines,
        }
    }

    /// The URL of its Calls resource.
    pub fn calls_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/2010-04-01/Accounts/{ACCOUNT}/Calls.json",
            self.port
        )
    }

    /// Sends a command (`status busy`) and waits for its `ok`.
    pub fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("voice API stdin");
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

    /// The calls it placed: (sid, number called, what the call says).
    pub fn calls(&self) -> Vec<(String, String, String)> {
        self.lines()
            .iter()
            .filter_map(|l| {
                let mut parts = l.strip_prefix("call ")?.splitn(3, ' ');
                let (sid, to, says) = (parts.next()?, parts.next()?, parts.next()?);
                let says: String = serde_json::from_str(says).ok()?;
                Some((sid.to_string(), to.to_string(), says))
            })
            .collect()
    }
}

fn drain(rx: mpsc::Receiver<String>, lines: Arc<Mutex<Vec<String>>>) {
    for line in rx {
        lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
    }
}

impl Drop for VoiceApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
