//! Expiring credentials: the certificates the gateway presents or trusts (the page's, the MLLP
//! listener's and its client CA, the relay's client certificate and CA), the EHR's credentials
//! (its client secret's configured expiry, a bearer token's `exp`) and the API keys of
//! systems. A supervised child reads their expiries at start and every hour, and raises a staff
//! notice and a cloud event (`credential.expiring` within `[access] credential_warning_days`,
//! `credential.expired` once past), once per credential and standing: what was told is kept in
//! the journal, so a restart does not repeat it. Renewal is replacing the files, which the TLS
//! servers and the relay read again on their own (`pem::CertFiles`).
//!
//! **Invariant:** the watcher only reads files and the journal; it never changes a credential.

pub mod protocol;
pub mod store;

use crate::access::ListKeys;
use crate::journal::{self, JournalError, JournalWriter, NewItem, Tx, Work};
use crate::supervisor::{HealthState, Running, Spawn, Supervisor, link};
use actix::Addr;
use protocol::Standing;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

/// The supervisor's name for the watcher.
pub const NAME: &str = "credential-watch";

/// How often expiries are read again: a warning period is days long, and a renewed file is
/// picked up by the TLS side at its next handshake whatever this is.
const EVERY: Duration = Duration::from_secs(3600);

/// A credential to watch, named by its config key (`web.tls.cert_file`).
#[derive(Debug, Clone, PartialEq)]
pub struct Watched {
    pub name: String,
    pub source: Source,
}

/// Where a credential's expiry is read.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A PEM file of certificates: the first to expire.
    Certificate(PathBuf),
    /// A file holding a bearer token: its `exp` if it is a JWT (an opaque token has none).
    Token(PathBuf),
    /// A secret whose expiry the configuration states, in ms since the epoch.
    Secret(i64),
}

/// Starts the watcher over `files` and the journal's API keys.
pub struct WatchSpawn {
    pub files: Vec<Watched>,
    pub warning_days: u64,
    pub journal: Addr<JournalWriter>,
}

impl Spawn for WatchSpawn {
    fn kind(&self) -> &'static str {
        "credential-watch"
    }

    fn spawn(&self, name: &str, supervisor: Addr<Supervisor>) -> Box<dyn Running> {
        let (files, journal) = (self.files.clone(), self.journal.clone());
        let warning_ms = self
            .warning_days
            .saturating_mul(86_400_000)
            .min(i64::MAX as u64) as i64;
        link::start(name, supervisor, Duration::from_secs(1), move |mut link| {
            Box::pin(async move {
                link.health.report(HealthState::Healthy, None);
                loop {
                    let told = check(&files, &journal, warning_ms).await;
                    tracing::info!(
                        credentials = files.len(),
                        told,
                        "credential expiries checked"
                    );
                    if link::stop_asked_during(&mut link.shutdown, EVERY).await {
                        return Ok(());
                    }
                }
            })
        })
    }
}

/// One credential's expiry.
struct Expiry {
    name: String,
    /// `certificate` or `api_key`.
    kind: &'static str,
    not_after_ms: i64,
}

/// Reads every expiry and tells what is due; how many were told.
async fn check(files: &[Watched], journal: &Addr<JournalWriter>, warning_ms: i64) -> usize {
    let mut expiries = Vec::new();
    for w in files {
        let (kind, read) = match &w.source {
            Source::Certificate(path) => (
                "certificate",
                crate::pem::not_after(path)
                    .map(|secs| Some(secs.saturating_mul(1000)))
                    .map_err(|e| e.to_string()),
            ),
            Source::Token(path) => (
                "token",
                std::fs::read_to_string(path)
                    .map(|text| protocol::jwt_expiry(&text))
                    .map_err(|e| format!("{}: {e}", path.display())),
            ),
            Source::Secret(at) => ("client_secret", Ok(Some(*at))),
        };
        match read {
            Ok(Some(not_after_ms)) => expiries.push(Expiry {
                name: w.name.clone(),
                kind,
                not_after_ms,
            }),
            Ok(None) => {}
            Err(e) => tracing::warn!(credential = %w.name, error = %e, "expiry not read"),
        }
    }
    match journal::ask(journal, ListKeys).await {
        Ok(keys) => expiries.extend(keys.into_iter().filter_map(|k| {
            let at = k.expires_at.filter(|_| k.revoked_at.is_none())?;
            Some(Expiry {
                name: format!("key:{}", k.name),
                kind: "api_key",
                not_after_ms: at,
            })
        })),
        Err(e) => tracing::warn!(error = %e, "API key expiries not read"),
    }
    let mut told = 0;
    for e in expiries {
        let name = e.name.clone();
        match journal::ask(
            journal,
            TellExpiry {
                expiry: e,
                warning_ms,
            },
        )
        .await
        {
            Ok(true) => told += 1,
            Ok(false) => {}
            Err(err) => tracing::warn!(credential = %name, error = %err, "expiry not told"),
        }
    }
    told
}

/// Tells staff and the cloud a credential's standing if it is news; true if it was.
struct TellExpiry {
    expiry: Expiry,
    warning_ms: i64,
}

crate::journal_work!(TellExpiry);

impl Work for TellExpiry {
    type Output = bool;
    fn run(self, tx: &mut Tx<'_>) -> Result<bool, JournalError> {
        let now = tx.now();
        let Expiry {
            name,
            kind,
            not_after_ms,
        } = self.expiry;
        let standing = protocol::standing(not_after_ms, now, self.warning_ms);
        if !protocol::due(store::told(tx, &name)?, not_after_ms, standing) {
            return Ok(false);
        }
        let until = jiff::Timestamp::from_millisecond(not_after_ms)
            .map_or_else(|_| not_after_ms.to_string(), |t| t.to_string());
        let days = protocol::days_left(not_after_ms, now);
        let what = match kind {
            "api_key" => format!("The API key {}", name.trim_start_matches("key:")),
            "token" => format!("The bearer token in {name}"),
            "client_secret" => format!("The client secret of {name}"),
            _ => format!("The certificate in {name}"),
        };
        let renew = match kind {
            "api_key" => "give its client a new key (clinic-gateway key add) and revoke this one",
            "token" => "replace the file; the gateway reads it at each request",
            "client_secret" => {
                "get a new secret from the EHR's administrators, replace the file and set the new \
                 client_secret_expires (then reload)"
            }
            _ => "replace its files; the gateway reads them again without a restart",
        };
        let text = match standing {
            Standing::Expired => format!("{what} expired at {until}: {renew}."),
            _ => format!("{what} expires at {until} (in {days} days): {renew}."),
        };
        let event = format!("credential.{}", standing.as_str());
        let payload = json!({
            "credential": name,
            "type": kind,
            "not_after": until,
            "days_left": days,
        });
        let key = format!("credential:{name}");
        let item = NewItem::event("gateway", &event, key, &payload, &[crate::CLOUD]);
        crate::notices::store::notice(tx, &event, &text, now)?;
        tx.append(&item, now)?;
        store::record(tx, &name, not_after_ms, standing, now)?;
        tracing::warn!(credential = %name, standing = standing.as_str(), days, "credential expiry told");
        Ok(true)
    }
}
