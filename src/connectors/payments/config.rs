//! `[connectors.payments]`: the payment processors the front desk's co-pays and balances go
//! to, in the order they are tried, and how a confirmed payment reaches the PMS.

use crate::settings;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The payments connector's configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PaymentsConfig {
    /// How a confirmed payment is posted to the PMS: `"hl7v2"`, a DFT^P03 through
    /// `[connectors.hl7v2_out]`; `"fhir"`, a PaymentNotice through `[connectors.fhir]`; or
    /// `"none"`.
    #[serde(default)]
    pub pms: Pms,
    /// A payment no webhook confirmed within this long is asked about (GET PaymentIntent).
    #[serde(default = "default_poll_after_ms")]
    pub poll_after_ms: u64,
    /// Then asked again this often while the patient has not paid.
    #[serde(default = "default_poll_every_ms")]
    pub poll_every_ms: u64,
    /// A payment not made this long after it was asked for is failed: the entry is marked
    /// `payment_pending` and staff pick an alternative.
    #[serde(default = "default_expire_after_s")]
    pub expire_after_s: u64,
    /// How far a webhook's signed time may be from the gateway's clock.
    #[serde(default = "default_webhook_tolerance_s")]
    pub webhook_tolerance_s: u64,
    /// Unavailable answers in a row (errors, timeouts, 5xx) that open a processor's breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker keeps payments away from its processor before one probes it.
    #[serde(default = "default_breaker_open_s")]
    pub breaker_open_s: u64,
    /// The processors, tried in this order; the next takes a payment the one before could not.
    pub processor: Vec<ProcessorConfig>,
}

/// Where a confirmed payment is posted.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Pms {
    /// A DFT^P03 over the outbound MLLP sender.
    #[default]
    Hl7v2,
    /// A FHIR R4 PaymentNotice created through the FHIR connector.
    Fhir,
    /// Nowhere: the clinic posts payments in the PMS itself.
    None,
}

/// The processor's API.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// PaymentIntents with idempotency keys and signed webhooks (Stripe and its kin).
    Stripe,
}

/// One payment processor.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProcessorConfig {
    /// Its name in the API, the webhook's path and the logs.
    pub name: String,
    pub kind: Kind,
    /// The API's base (`https://api.stripe.com`; `http://` only on loopback).
    pub base_url: String,
    /// A file holding the secret API key (read at each request: replace it, no restart).
    pub secret_key_file: PathBuf,
    /// A file holding the webhook endpoint's signing secret.
    pub webhook_secret_file: PathBuf,
    /// How long one request may take before the processor counts as unavailable.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_poll_after_ms() -> u64 {
    60_000
}
fn default_poll_every_ms() -> u64 {
    30_000
}
fn default_expire_after_s() -> u64 {
    3_600
}
fn default_webhook_tolerance_s() -> u64 {
    300
}
fn default_breaker_failures() -> u32 {
    3
}
fn default_breaker_open_s() -> u64 {
    60
}
fn default_timeout_ms() -> u64 {
    10_000
}

impl PaymentsConfig {
    /// The configuration with its file paths resolved against the config file's folder.
    pub fn resolved(&self, resolve: impl Fn(&Path) -> PathBuf) -> PaymentsConfig {
        let mut c = self.clone();
        for p in &mut c.processor {
            p.secret_key_file = resolve(&p.secret_key_file);
            p.webhook_secret_file = resolve(&p.webhook_secret_file);
        }
        c
    }

    /// The processor named `name`.
    pub fn processor(&self, name: &str) -> Option<&ProcessorConfig> {
        self.processor.iter().find(|p| p.name == name)
    }

    /// `has_sender`, `has_fhir`: whether `[connectors.hl7v2_out]`, `[connectors.fhir]` are
    /// configured.
    pub fn validate(
        &self,
        base: &Path,
        has_sender: bool,
        has_fhir: bool,
        bad: &mut dyn FnMut(&str, String),
    ) {
        let key = |k: &str| format!("connectors.payments.{k}");
        if self.pms == Pms::Hl7v2 && !has_sender {
            bad(
                &key("pms"),
                "\"hl7v2\" needs [connectors.hl7v2_out] (or say \"none\")".into(),
            );
        }
        if self.pms == Pms::Fhir && !has_fhir {
            bad(
                &key("pms"),
                "\"fhir\" needs [connectors.fhir] (or say \"none\")".into(),
            );
        }
        if !(1_000..=3_600_000).contains(&self.poll_after_ms) {
            bad(&key("poll_after_ms"), "must be 1000 to 3600000".into());
        }
        if !(1_000..=3_600_000).contains(&self.poll_every_ms) {
            bad(&key("poll_every_ms"), "must be 1000 to 3600000".into());
        }
        if !(60..=7 * 86_400).contains(&self.expire_after_s) {
            bad(&key("expire_after_s"), "must be 60 to 604800".into());
        }
        if !(10..=3_600).contains(&self.webhook_tolerance_s) {
            bad(&key("webhook_tolerance_s"), "must be 10 to 3600".into());
        }
        if self.breaker_failures == 0 {
            bad(&key("breaker_failures"), "must be at least 1".into());
        }
        if !(1..=3_600).contains(&self.breaker_open_s) {
            bad(&key("breaker_open_s"), "must be 1 to 3600".into());
        }
        if self.processor.is_empty() {
            bad(&key("processor"), "name at least one processor".into());
        }
        for (i, p) in self.processor.iter().enumerate() {
            let k = |f: &str| key(&format!("processor[{i}].{f}"));
            if !settings::is_identifier(&p.name) {
                bad(&k("name"), "letters, digits, '-' and '_' only".into());
            }
            if self.processor[..i].iter().any(|q| q.name == p.name) {
                bad(&k("name"), format!("processor {:?} is named twice", p.name));
            }
            match url::Url::parse(&p.base_url) {
                Ok(u) if u.scheme() == "https" => {}
                Ok(u) if u.scheme() == "http" && is_loopback(&u) => {}
                Ok(_) => bad(
                    &k("base_url"),
                    "must be https:// (http:// only to a loopback address)".into(),
                ),
                Err(e) => bad(&k("base_url"), format!("not a URL: {e}")),
            }
            settings::check_readable(
                &settings::resolve(base, &p.secret_key_file),
                &k("secret_key_file"),
                bad,
            );
            settings::check_readable(
                &settings::resolve(base, &p.webhook_secret_file),
                &k("webhook_secret_file"),
                bad,
            );
            if !(100..=120_000).contains(&p.timeout_ms) {
                bad(&k("timeout_ms"), "must be 100 to 120000".into());
            }
        }
    }
}

fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}
