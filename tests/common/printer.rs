//! The test receipt printer (`tests/peers/escpos_printer.py`) on the far end of a socat pty
//! pair: it captures every byte the gateway writes and answers `DLE EOT n` status requests
//! from a control file the test rewrites (paper end, cover open, no answer, line noise).

use super::{PtyPair, peer_script, start_until_ready};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Child;

/// The printer and its pty pair, ready to print until told otherwise; both are killed on drop.
pub struct TestPrinter {
    peer: Child,
    pty: PtyPair,
    capture: PathBuf,
    control: PathBuf,
}

impl TestPrinter {
    /// Starts socat and the printer with their files in `dir`, and waits until the printer
    /// has opened its end.
    pub fn start(dir: &Path) -> TestPrinter {
        let pty = PtyPair::start(dir, "printer");
        let capture = dir.join("printer-capture.bin");
        let control = dir.join("printer-control.json");
        let (peer, _) = start_until_ready(
            peer_script("escpos_printer.py")
                .arg("--port")
                .arg(&pty.device)
                .arg("--capture")
                .arg(&capture)
                .arg("--control")
                .arg(&control),
            "the test printer",
            "escpos_printer: ready",
        );
        TestPrinter {
            peer,
            pty,
            capture,
            control,
        }
    }

    /// The gateway's end of the pair, for its `serial` setting.
    pub fn tty(&self) -> &Path {
        &self.pty.gateway
    }

    /// What the printer answers from now on.
    pub fn set(&self, control: serde_json::Value) {
        // Replaced whole, so that the printer never reads a half-written file.
        let tmp = self.control.with_extension("tmp");
        std::fs::write(&tmp, control.to_string()).expect("write control");
        std::fs::rename(&tmp, &self.control).expect("replace control");
    }

    pub fn ready(&self) {
        self.set(json!({ "answer": true }));
    }

    pub fn paper_end(&self) {
        self.set(json!({ "answer": true, "status": { "1": 0x1A, "2": 0x32, "4": 0x7E } }));
    }

    /// Every byte received so far.
    pub fn raw(&self) -> Vec<u8> {
        std::fs::read(&self.capture).unwrap_or_default()
    }

    /// Status requests received so far.
    pub fn status_requests(&self) -> usize {
        self.raw()
            .windows(3)
            .filter(|w| w[0] == 0x10 && w[1] == 0x04 && (1..=4).contains(&w[2]))
            .count()
    }

    /// Everything printed, without the status requests between tickets (a ticket never holds
    /// 0x10 0x04).
    pub fn printed(&self) -> Vec<u8> {
        let raw = self.raw();
        let mut out = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            if raw[i..].starts_with(&[0x10, 0x04])
                && raw.get(i + 2).is_some_and(|n| (1..=4).contains(n))
            {
                i += 3;
            } else {
                out.push(raw[i]);
                i += 1;
            }
        }
        out
    }

    pub fn printed_text(&self) -> String {
        String::from_utf8_lossy(&self.printed()).into_owned()
    }
}

impl Drop for TestPrinter {
    fn drop(&mut self) {
        // Before the pty pair, which goes when the fields are dropped after this.
        let _ = self.peer.kill();
        let _ = self.peer.wait();
    }
}
