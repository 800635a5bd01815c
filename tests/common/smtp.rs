//! The SMTP server of the messaging tests (`tests/peers/smtp_server.py`, aiosmtpd): plain, with
//! STARTTLS or implicit TLS, with AUTH; the messages it accepted are files in its maildir.

use super::{peer_script, start_until_ready};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc;

/// How the server is secured.
pub enum Security<'a> {
    Plain,
    /// STARTTLS required, with this certificate and key.
    Starttls(&'a Path, &'a Path),
    /// TLS from the first byte.
    Implicit(&'a Path, &'a Path),
}

/// A running SMTP server; killed on drop.
pub struct SmtpServer {
    child: Child,
    pub port: u16,
    pub maildir: PathBuf,
    /// What it printed after `ready`: `received <Message-ID> <rcpt>` and `auth ...` lines.
    pub lines: mpsc::Receiver<String>,
}

impl SmtpServer {
    /// Starts the server on `port` (its maildir `dir/mail-<port>`, kept across restarts) and
    /// waits until it listens. `auth`: `user:password` it requires.
    pub fn start(dir: &Path, port: u16, security: Security<'_>, auth: Option<&str>) -> SmtpServer {
        let maildir = dir.join(format!("mail-{port}"));
        let mut cmd = peer_script("smtp_server.py");
        cmd.arg(port.to_string()).arg(&maildir);
        match security {
            Security::Plain => {}
            Security::Starttls(cert, key) => {
                cmd.arg("--starttls").arg(cert).arg(key);
            }
            Security::Implicit(cert, key) => {
                cmd.arg("--implicit").arg(cert).arg(key);
            }
        }
        if let Some(a) = auth {
            cmd.arg("--auth").arg(a);
        }
        let (child, lines) = start_until_ready(&mut cmd, "the SMTP server (aiosmtpd)", "ready");
        SmtpServer {
            child,
            port,
            maildir,
            lines,
        }
    }

    /// The messages accepted so far, oldest first, as their raw text.
    pub fn messages(&self) -> Vec<String> {
        messages_in(&self.maildir)
    }
}

/// The messages of a maildir the server wrote, oldest first.
pub fn messages_in(maildir: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(maildir.join("new"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
    files.sort();
    files
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect()
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
