//! `[journal]` and `[destinations.<name>]`: where the journal lives, its limits, and the
//! delivery policy of each outbox destination, with their validation.

use crate::settings::{self, Problem};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// File name of the SQLite journal, relative to `gateway.data_dir`.
    #[serde(default = "default_journal_file")]
    pub file: PathBuf,
    /// Upper bound of the journal's size in bytes; new inbound items are refused beyond it.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// How long delivered rows are kept (for audit and duplicate detection) before pruning.
    #[serde(default = "default_retention_hours")]
    pub retention_hours: u64,
    /// Most items written in one group-commit transaction.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// A file holding the key for an encrypted journal (needs a SQLCipher build).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Seconds between two `audit.head` events, which publish the audit chain's head to the
    /// cloud so that a truncated or rewritten journal is noticed there.
    #[serde(default = "default_audit_head_interval_s")]
    pub audit_head_interval_s: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            file: default_journal_file(),
            max_bytes: default_max_bytes(),
            retention_hours: default_retention_hours(),
            max_batch: default_max_batch(),
            key_file: None,
            audit_head_interval_s: default_audit_head_interval_s(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// Attempts before an outbox row becomes a dead letter.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First retry delay; doubles each attempt, with jitter.
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// Cap of the retry delay.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
}

impl Default for DestinationConfig {
    fn default() -> Self {
        DestinationConfig {
            max_attempts: default_max_attempts(),
            backoff_initial_ms: default_backoff_initial_ms(),
            backoff_max_ms: default_backoff_max_ms(),
        }
    }
}

/// Delivery policy per destination, `[destinations.<name>]`.
pub type Destinations = BTreeMap<String, DestinationConfig>;

fn default_journal_file() -> PathBuf {
    PathBuf::from("journal.db")
}
fn default_max_bytes() -> u64 {
    1 << 30
}
fn default_retention_hours() -> u64 {
    24 * 7
}
fn default_max_batch() -> usize {
    4096
}
fn default_audit_head_interval_s() -> u64 {
    3600
}
fn default_max_attempts() -> u32 {
    20
}
fn default_backoff_initial_ms() -> u64 {
    1_000
}
fn default_backoff_max_ms() -> u64 {
    300_000
}

/// The destinations when the file names none: the cloud relay's, with the default policy.
pub fn default_destinations() -> Destinations {
    BTreeMap::from([(crate::CLOUD.to_string(), DestinationConfig::default())])
}

impl JournalConfig {
    /// Every problem of `[journal]`; relative paths are resolved against `base`.
    pub fn validate(&self, base: &Path) -> Vec<Problem> {
        settings::collect(|bad| {
            if self.max_bytes < 1 << 20 {
                bad(
                    "journal.max_bytes",
                    "must be at least 1048576 (1 MiB)".into(),
                );
            }
            if self.max_batch == 0 {
                bad("journal.max_batch", "must be at least 1".into());
            }
            if self.audit_head_interval_s == 0 {
                bad("journal.audit_head_interval_s", "must be at least 1".into());
            }
            if let Some(key_file) = &self.key_file {
                settings::check_readable(
                    &settings::resolve(base, key_file),
                    "journal.key_file",
                    bad,
                );
            }
        })
    }
}

/// Every problem of the `[destinations.<name>]` tables.
pub fn validate_destinations(destinations: &Destinations) -> Vec<Problem> {
    settings::collect(|bad| {
        for (name, d) in destinations {
            let key = format!("destinations.{name}.");
            if d.max_attempts == 0 {
                bad(&format!("{key}max_attempts"), "must be at least 1".into());
            }
            settings::check_delays(
                &key,
                ("backoff_initial_ms", d.backoff_initial_ms),
                ("backoff_max_ms", d.backoff_max_ms),
                bad,
            );
        }
    })
}
