//! The systemd notification protocol (sd_notify): READY, STATUS, WATCHDOG, RELOADING, STOPPING.
//!
//! Without `NOTIFY_SOCKET` (run by hand, in tests) every call is a no-op.

use sd_notify::NotifyState;
use std::time::Duration;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// All actors are started: systemd may consider the unit active.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Proof of life; sent only from a heartbeat that got an answer from the journal writer.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The watchdog interval systemd expects pings within, if the watchdog is on.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}
