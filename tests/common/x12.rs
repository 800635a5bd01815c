//! The independent X12 parser (PyPI `linuxforhealth-x12` in its own virtual environment, made
//! by scripts/test-deps.sh): it checks the 270s the gateway writes and writes 271s for it to read.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/x12/.venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/test-deps.sh",
        venv.display()
    );
    venv
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/x12/x12_peer.py")
}

/// What the parser read from a 270 (JSON), or its validation errors.
pub fn check_270(text: &str) -> Result<serde_json::Value, String> {
    let mut child = Command::new(python())
        .arg(script())
        .arg("check270")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the X12 checker");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write the 270");
    let out = child.wait_with_output().expect("the X12 checker ran");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("the checker prints JSON"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A 271 for `trace` in one of the checker's scenarios (active, inactive, member_id, payer_down).
pub fn emit_271(scenario: &str, trace: &str) -> String {
    let out = Command::new(python())
        .args([
            script().as_os_str(),
            "emit271".as_ref(),
            scenario.as_ref(),
            trace.as_ref(),
        ])
        .output()
        .expect("run the X12 writer");
    assert!(
        out.status.success(),
        "the X12 writer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("a 271 is text")
}
