//! The request to re-read the configuration. The daemon answers it; the web API and the cloud
//! relay hold only a `Recipient` of it, so neither depends on the daemon.

use actix::Message;

/// Re-read the configuration file; an invalid one is refused and the running one kept.
/// Answers a summary of what changed, or every problem found.
#[derive(Message, Debug)]
#[rtype(result = "Result<serde_json::Value, String>")]
pub struct ReloadConfig {
    /// Who asked (`signal:SIGHUP`, `web:...`, `cloud:<request id>`), for the audit log.
    pub by: String,
}
