//! `[messaging]`: the channels and providers patient messages go through, the templates per
//! notification kind and language, quiet hours, and their validation. A leaf: it imports no
//! other component's config.

use crate::settings::{self, check_readable, resolve};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A way of reaching a patient.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Sms,
    Email,
    Voice,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Email => "email",
            Channel::Voice => "voice",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        [Channel::Sms, Channel::Email, Channel::Voice]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

/// `[messaging]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MessagingConfig {
    /// Channels in the order they are tried when the patient states no preference.
    #[serde(default = "default_channels")]
    pub channels: Vec<Channel>,
    /// The templates' language when the patient's has none (a BCP 47 tag such as `en`).
    #[serde(default = "default_language")]
    pub default_language: String,
    /// The URL of the EHR's Patient extension that, with `valueBoolean: true`, says the patient
    /// must not be messaged; absent: only the check-in's `opted_out` counts.
    #[serde(default)]
    pub opt_out_extension: Option<String>,
    /// Hours of the clinic's day in which nothing but "you are next" is sent; messages made
    /// then wait for their end.
    #[serde(default)]
    pub quiet_hours: Option<QuietHours>,
    /// The base URL at which providers reach the gateway's receipt endpoint
    /// (`{base}/api/v1/messaging/receipts/<provider>`), e.g. Kannel's `dlr-url`.
    #[serde(default)]
    pub receipt_base_url: Option<String>,
    /// How the providers of a channel are ordered.
    #[serde(default)]
    pub routing: Routing,
    /// The providers, tried within a channel by `priority` (lowest first), or as `routing`
    /// says.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// Templates by notification kind (`you_are_next`, `appointment_cancelled`, ...), then by
    /// language.
    #[serde(default)]
    pub templates: BTreeMap<String, BTreeMap<String, Template>>,
}

fn default_channels() -> Vec<Channel> {
    vec![Channel::Sms, Channel::Email]
}
fn default_language() -> String {
    "en".into()
}

/// What goes first among the providers of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prefer {
    /// By `priority`, lowest first.
    #[default]
    Priority,
    /// The cheapest provider for the message whose delivery rate over the last 30 days is at
    /// least `delivery_rate_floor`, then the others by `priority`.
    Cheapest,
}

/// `[messaging.routing]`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// `priority` or `cheapest`.
    #[serde(default)]
    pub prefer: Prefer,
    /// With `prefer = "cheapest"`: the delivery rate (0 to 1, among messages with a final
    /// receipt over the last 30 days) a provider needs to be chosen for its price; one without
    /// any such receipt has none.
    #[serde(default = "default_delivery_rate_floor")]
    pub delivery_rate_floor: f64,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            prefer: Prefer::Priority,
            delivery_rate_floor: default_delivery_rate_floor(),
        }
    }
}

fn default_delivery_rate_floor() -> f64 {
    0.95
}

/// When a provider's receipts count as stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptWatch {
    /// At least this many messages it took wait for their receipt, with no receipt from it
    /// since the oldest of them was taken ...
    pub messages: u32,
    /// ... and that oldest was taken this many seconds ago.
    pub seconds: u64,
}

/// A span of the clinic's day, `HH:MM` to `HH:MM` (past midnight when `to` is earlier).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// Start, `HH:MM` in the clinic's time zone.
    pub from: String,
    /// End, `HH:MM` in the clinic's time zone.
    pub to: String,
}

/// The texts of one notification kind in one language. Placeholders: `{ticket}`, `{queue}`,
/// `{new_start}`, `{facility}`. No clinical details belong here.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// The SMS text.
    #[serde(default)]
    pub sms: Option<String>,
    /// The email's subject.
    #[serde(default)]
    pub subject: Option<String>,
    /// The email's plain-text body.
    #[serde(default)]
    pub email: Option<String>,
    /// What a voice call reads out.
    #[serde(default)]
    pub voice: Option<String>,
}

impl Template {
    /// The text of `channel`, if this template has one.
    pub fn text(&self, channel: Channel) -> Option<&str> {
        match channel {
            Channel::Sms => self.sms.as_deref(),
            Channel::Email => self.email.as_deref(),
            Channel::Voice => self.voice.as_deref(),
        }
    }
}

/// `[[messaging.providers]]`: one provider account.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// 1 to 64 letters, digits, `-` or `_`; names the provider in receipts, analytics, logs.
    pub name: String,
    /// Lower is tried first within its channel.
    #[serde(default)]
    pub priority: u32,
    /// Price of one message, in the account's currency.
    #[serde(default)]
    pub price_per_message: f64,
    /// Price of one SMS segment.
    #[serde(default)]
    pub price_per_segment: f64,
    /// Price of one started minute of a call.
    #[serde(default)]
    pub price_per_minute: f64,
    /// How long one send may take before it counts as failed.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Unavailable answers in a row (errors, timeouts, throttling) that open the provider's
    /// circuit breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker keeps messages away before one probes the provider.
    #[serde(default = "default_breaker_open_s")]
    pub breaker_open_s: u64,
    /// Opens the breaker when the provider's delivery receipts stop arriving; absent: only
    /// errors, timeouts and throttling open it. Only for providers that send receipts (SMS,
    /// voice; not SMTP, not an SMPP transmitter bind).
    #[serde(default)]
    pub receipt_watch: Option<ReceiptWatch>,
    /// The provider's rate limit: at most this many messages a second (a token bucket holding
    /// one second's worth); absent: no limit beyond the SMPP window and throttling answers.
    #[serde(default)]
    pub max_per_second: Option<f64>,
    /// Email over SMTP: `smtp = { host = ..., from = ... }`. Exactly one of `smtp`, `http`,
    /// `smpp` and `sip`.
    #[serde(default)]
    pub smtp: Option<SmtpConfig>,
    /// SMS or voice over an HTTP API.
    #[serde(default)]
    pub http: Option<HttpConfig>,
    /// SMS over SMPP 3.4.
    #[serde(default)]
    pub smpp: Option<SmppConfig>,
    /// Voice calls over SIP, playing a prerecorded prompt.
    #[serde(default)]
    pub sip: Option<SipConfig>,
}

/// A SIP trunk or PBX that places the calls (UDP, no registration or authentication: the
/// trunk trusts the appliance's address).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    pub host: String,
    #[serde(default = "default_sip_port")]
    pub port: u16,
    /// The user part of our `From` and `Contact` (the caller the patient sees).
    pub from_user: String,
    /// The prompt each notification kind plays: a raw G.711 µ-law file at 8 kHz, mono
    /// (`sox in.wav -t ul -r 8000 -c 1 prompt.ulaw`). A kind without one is not called.
    pub prompts: BTreeMap<String, PathBuf>,
}

fn default_sip_port() -> u16 {
    5060
}

/// How the gateway binds to an SMSC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmppBind {
    /// Submits and receives receipts on one connection.
    Transceiver,
    /// Submits only: no receipts reach the gateway.
    Transmitter,
}

/// An SMPP 3.4 SMSC account.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmppConfig {
    pub host: String,
    #[serde(default = "default_smpp_port")]
    pub port: u16,
    /// The account's `system_id` (at most 15 characters).
    pub system_id: String,
    /// The file holding the account's password (at most 8 characters).
    pub password_file: PathBuf,
    /// The bind's `system_type`; most SMSCs want it empty.
    #[serde(default)]
    pub system_type: String,
    /// The sender shown to patients: a number, or up to 11 letters and digits.
    pub source: String,
    /// `transceiver` (receipts on the same connection) or `transmitter`.
    #[serde(default = "default_bind")]
    pub bind: SmppBind,
    /// Most submit_sm awaiting their answer at once, as the provider's contract allows.
    #[serde(default = "default_window")]
    pub window: u32,
    /// Seconds between two enquire_link; one left unanswered that long drops the link.
    #[serde(default = "default_enquire_link_s")]
    pub enquire_link_s: u64,
    /// Seconds the SMSC may keep trying a message (each submit_sm's relative
    /// `validity_period`). A transceiver's message with no receipt this long after it was
    /// taken (and a short grace) can no longer reach the handset: the next provider sends it.
    #[serde(default = "default_validity_s")]
    pub validity_s: u64,
}

/// The longest `validity_s`: a day, which SMPP's relative time holds and after which a
/// notification about today's queue means nothing.
pub const MAX_VALIDITY_S: u64 = 86_400;

fn default_smpp_port() -> u16 {
    2775
}
fn default_bind() -> SmppBind {
    SmppBind::Transceiver
}
fn default_window() -> u32 {
    10
}
fn default_enquire_link_s() -> u64 {
    30
}
/// Well under the 2-minute failover limit, with room for the grace and the resend.
fn default_validity_s() -> u64 {
    60
}

fn default_timeout_ms() -> u64 {
    10_000
}
fn default_breaker_failures() -> u32 {
    3
}
fn default_breaker_open_s() -> u64 {
    30
}

/// How a provider is spoken to: its one protocol table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProviderKind<'a> {
    /// Email over SMTP.
    Smtp(&'a SmtpConfig),
    /// SMS or voice over an HTTP API (Kannel's `sendsms`, Twilio-style JSON APIs).
    Http(&'a HttpConfig),
    /// SMS over SMPP 3.4.
    Smpp(&'a SmppConfig),
    /// Voice calls over SIP.
    Sip(&'a SipConfig),
}

impl ProviderConfig {
    /// The provider's protocol; `None` when the table names none or several (refused by
    /// validation).
    pub fn kind(&self) -> Option<ProviderKind<'_>> {
        match (&self.smtp, &self.http, &self.smpp, &self.sip) {
            (Some(s), None, None, None) => Some(ProviderKind::Smtp(s)),
            (None, Some(h), None, None) => Some(ProviderKind::Http(h)),
            (None, None, Some(s), None) => Some(ProviderKind::Smpp(s)),
            (None, None, None, Some(s)) => Some(ProviderKind::Sip(s)),
            _ => None,
        }
    }

    /// The channel the provider serves.
    pub fn channel(&self) -> Option<Channel> {
        match self.kind()? {
            ProviderKind::Smtp(_) => Some(Channel::Email),
            ProviderKind::Http(h) => Some(h.channel),
            ProviderKind::Smpp(_) => Some(Channel::Sms),
            ProviderKind::Sip(_) => Some(Channel::Voice),
        }
    }
}

/// How SMTP is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain text: only for a relay on the appliance itself.
    None,
    /// Plain connection upgraded by STARTTLS, which must succeed.
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
}

/// An SMTP provider.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// `none`, `starttls` or `tls`.
    #[serde(default = "default_security")]
    pub security: SmtpSecurity,
    /// PEM CA certificate(s) the server's must chain to; default: the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The user name for AUTH; needs `password_file`.
    #[serde(default)]
    pub username: Option<String>,
    /// The file holding the AUTH password (its own credentials file, not in this config).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The sender address (`From:` and envelope).
    pub from: String,
}

fn default_smtp_port() -> u16 {
    587
}
fn default_security() -> SmtpSecurity {
    SmtpSecurity::Starttls
}

/// How an HTTP API is asked to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpMethod {
    /// `GET` with the parameters in the query (Kannel's `sendsms`).
    Get,
    /// `POST` of an `application/x-www-form-urlencoded` body (Twilio's Messages API).
    PostForm,
    /// `POST` of a JSON object of the parameters.
    PostJson,
}

/// An HTTP SMS or voice provider. Its parameters are templates over `{to}`, `{text}`,
/// `{dlr_url}`, `{password}`, `{message}` (the gateway's message id), `{validity_s}` and
/// `{validity_min}` (`validity_s` in whole minutes, rounded up: Kannel's `validity`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `sms` or `voice`.
    #[serde(default = "default_http_channel")]
    pub channel: Channel,
    /// The API's URL, e.g. `http://127.0.0.1:13013/cgi-bin/sendsms`.
    pub url: String,
    /// `get`, `post_form` or `post_json`.
    #[serde(default = "default_method")]
    pub method: HttpMethod,
    /// Request parameters by name.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// User name for HTTP basic authentication (with `password_file`).
    #[serde(default)]
    pub username: Option<String>,
    /// The file holding the password or API token: basic authentication's with `username`,
    /// and `{password}` in `params`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Where the provider's message id is in a JSON answer (a JSON pointer, `/sid`); absent:
    /// the gateway's own message id identifies it in receipts.
    #[serde(default)]
    pub id_pointer: Option<String>,
    /// Seconds the provider may keep trying an SMS, told through `{validity_s}` or
    /// `{validity_min}`: with receipts (`receipt_base_url`), a message with no receipt by
    /// then (and a short grace) is sent through the next provider.
    #[serde(default)]
    pub validity_s: Option<u64>,
}

impl HttpConfig {
    /// How long (ms) the provider is told it may try a message: `validity_s`, or the whole
    /// minutes `{validity_min}` makes of it; none when no parameter tells it.
    pub fn validity_ms(&self) -> Option<i64> {
        let seconds = self.validity_s?;
        let uses = |field: &str| {
            self.params
                .values()
                .any(|v| placeholders(v).is_ok_and(|p| p.contains(&field)))
        };
        let told = if uses("validity_min") {
            seconds.div_ceil(60) * 60
        } else if uses("validity_s") {
            seconds
        } else {
            return None;
        };
        Some(told.saturating_mul(1000) as i64)
    }
}

fn default_http_channel() -> Channel {
    Channel::Sms
}
fn default_method() -> HttpMethod {
    HttpMethod::Get
}

/// The placeholders a template may use.
pub const TEMPLATE_FIELDS: [&str; 7] = [
    "ticket",
    "queue",
    "new_start",
    "facility",
    "wait_min",
    "delay_min",
    "pickup_at",
];
/// The placeholders an HTTP provider's parameters may use.
pub const HTTP_FIELDS: [&str; 7] = [
    "to",
    "text",
    "dlr_url",
    "password",
    "message",
    "validity_s",
    "validity_min",
];

/// The names inside `{...}` of a template, or why it cannot be read.
pub fn placeholders(text: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err("a '}' without its '{'".into());
        }
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or("a '{' without its '}'")?;
        out.push(&after[..close]);
        rest = &after[close + 1..];
    }
    Ok(out)
}

/// `HH:MM` as minutes of the day.
pub fn minutes_of_day(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && s.len() == 5).then_some(h * 60 + m)
}

impl MessagingConfig {
    /// Every problem of `[messaging]`; `base` resolves its file paths.
    pub fn validate(&self, base: &Path, bad: &mut dyn FnMut(&str, String)) {
        if self.channels.is_empty() {
            bad(
                "messaging.channels",
                "must name at least one channel".into(),
            );
        }
        if !is_language(&self.default_language) {
            bad(
                "messaging.default_language",
                "must be a language tag such as en or fr-CH".into(),
            );
        }
        if let Some(q) = &self.quiet_hours {
            for (key, v) in [("from", &q.from), ("to", &q.to)] {
                if minutes_of_day(v).is_none() {
                    bad(
                        &format!("messaging.quiet_hours.{key}"),
                        "must be HH:MM".into(),
                    );
                }
            }
        }
        if let Some(url) = &self.receipt_base_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bad(
                "messaging.receipt_base_url",
                "must be an http:// or https:// URL".into(),
            );
        }
        let floor = self.routing.delivery_rate_floor;
        if !(floor.is_finite() && (0.0..=1.0).contains(&floor)) {
            bad(
                "messaging.routing.delivery_rate_floor",
                "must be a rate from 0 to 1".into(),
            );
        }
        let mut names = BTreeSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let key = |field: &str| format!("messaging.providers[{i}].{field}");
            settings::check_name(&p.name, &key("name"), &mut names, "provider", bad);
            for (field, price) in [
                ("price_per_message", p.price_per_message),
                ("price_per_segment", p.price_per_segment),
                ("price_per_minute", p.price_per_minute),
            ] {
                if !(price.is_finite() && price >= 0.0) {
                    bad(&key(field), "must be a price of 0 or more".into());
                }
            }
            if p.timeout_ms < 100 {
                bad(&key("timeout_ms"), "must be at least 100".into());
            }
            if p.breaker_failures == 0 {
                bad(&key("breaker_failures"), "must be at least 1".into());
            }
            if let Some(w) = &p.receipt_watch {
                if w.messages == 0 {
                    bad(&key("receipt_watch.messages"), "must be at least 1".into());
                }
                if w.seconds == 0 {
                    bad(&key("receipt_watch.seconds"), "must be at least 1".into());
                }
                let without_receipts = match p.kind() {
                    Some(ProviderKind::Smtp(_)) => Some("SMTP has no delivery receipts"),
                    Some(ProviderKind::Sip(_)) => Some("a SIP call has no receipts"),
                    Some(ProviderKind::Smpp(s)) if s.bind == SmppBind::Transmitter => {
                        Some("a transmitter bind receives no receipts")
                    }
                    _ => None,
                };
                if let Some(why) = without_receipts {
                    bad(&key("receipt_watch"), why.into());
                }
            }
            if let Some(rate) = p.max_per_second
                && !(rate.is_finite() && (0.1..=10_000.0).contains(&rate))
            {
                bad(&key("max_per_second"), "must be 0.1 to 10000".into());
            }
            let key = |field: &str| match p.kind() {
                Some(ProviderKind::Smtp(_)) => format!("messaging.providers[{i}].smtp.{field}"),
                Some(ProviderKind::Http(_)) => format!("messaging.providers[{i}].http.{field}"),
                Some(ProviderKind::Smpp(_)) => format!("messaging.providers[{i}].smpp.{field}"),
                Some(ProviderKind::Sip(_)) => format!("messaging.providers[{i}].sip.{field}"),
                None => format!("messaging.providers[{i}].{field}"),
            };
            match p.kind() {
                None => bad(
                    &format!("messaging.providers[{i}]"),
                    "needs exactly one of smtp, http, smpp and sip".into(),
                ),
                Some(ProviderKind::Sip(c)) => {
                    if c.host.trim().is_empty() {
                        bad(&key("host"), "must not be empty".into());
                    }
                    let user_char = |ch: char| ch.is_ascii_alphanumeric() || "+-_.".contains(ch);
                    if c.from_user.is_empty() || !c.from_user.chars().all(user_char) {
                        bad(
                            &key("from_user"),
                            "must be letters, digits, '+', '-', '_' or '.'".into(),
                        );
                    }
                    if c.prompts.is_empty() {
                        bad(
                            &key("prompts"),
                            "must name a prompt file for at least one notification kind".into(),
                        );
                    }
                    for (kind, file) in &c.prompts {
                        check_readable(&resolve(base, file), &key(&format!("prompts.{kind}")), bad);
                    }
                }
                Some(ProviderKind::Smpp(c)) => {
                    if c.host.trim().is_empty() {
                        bad(&key("host"), "must not be empty".into());
                    }
                    if c.system_id.is_empty() || c.system_id.len() > 15 {
                        bad(&key("system_id"), "must be 1 to 15 characters".into());
                    }
                    if c.system_type.len() > 12 {
                        bad(&key("system_type"), "must be at most 12 characters".into());
                    }
                    check_readable(&resolve(base, &c.password_file), &key("password_file"), bad);
                    let numeric = c.source.chars().all(|ch| ch.is_ascii_digit());
                    if c.source.is_empty()
                        || (numeric && c.source.len() > 15)
                        || (!numeric && (c.source.len() > 11 || !c.source.is_ascii()))
                    {
                        bad(
                            &key("source"),
                            "must be a number or 1 to 11 ASCII letters and digits".into(),
                        );
                    }
                    if c.window == 0 || c.window > 1000 {
                        bad(&key("window"), "must be 1 to 1000".into());
                    }
                    if c.enquire_link_s == 0 {
                        bad(&key("enquire_link_s"), "must be at least 1".into());
                    }
                    if !(1..=MAX_VALIDITY_S).contains(&c.validity_s) {
                        bad(&key("validity_s"), format!("must be 1 to {MAX_VALIDITY_S}"));
                    }
                }
                Some(ProviderKind::Smtp(s)) => {
                    if s.host.trim().is_empty() {
                        bad(&key("host"), "must not be empty".into());
                    }
                    if !is_email(&s.from) {
                        bad(&key("from"), "must be an email address".into());
                    }
                    if let Some(ca) = &s.ca_file {
                        check_readable(&resolve(base, ca), &key("ca_file"), bad);
                    }
                    match (&s.username, &s.password_file) {
                        (Some(_), Some(f)) => {
                            check_readable(&resolve(base, f), &key("password_file"), bad)
                        }
                        (None, None) => {}
                        _ => bad(
                            &key("username"),
                            "username and password_file go together".into(),
                        ),
                    }
                    if s.security == SmtpSecurity::None && s.username.is_some() {
                        bad(
                            &key("security"),
                            "a password is never sent without TLS: use starttls or tls".into(),
                        );
                    }
                }
                Some(ProviderKind::Http(h)) => {
                    if h.channel == Channel::Email {
                        bad(
                            &key("channel"),
                            "an HTTP provider serves sms or voice".into(),
                        );
                    }
                    if url::Url::parse(&h.url)
                        .ok()
                        .is_none_or(|u| !matches!(u.scheme(), "http" | "https"))
                    {
                        bad(&key("url"), "must be an http:// or https:// URL".into());
                    }
                    match h.validity_s {
                        Some(v) if !(1..=MAX_VALIDITY_S).contains(&v) => {
                            bad(&key("validity_s"), format!("must be 1 to {MAX_VALIDITY_S}"));
                        }
                        Some(_) if h.validity_ms().is_none() => bad(
                            &key("validity_s"),
                            "no parameter tells it: use {validity_s} or {validity_min}".into(),
                        ),
                        None if h.params.values().any(|v| {
                            placeholders(v).is_ok_and(|p| {
                                p.contains(&"validity_s") || p.contains(&"validity_min")
                            })
                        }) =>
                        {
                            bad(
                                &key("validity_s"),
                                "must be set for {validity_s} or {validity_min}".into(),
                            )
                        }
                        _ => {}
                    }
                    for (name, v) in &h.params {
                        match placeholders(v) {
                            Err(e) => bad(&key(&format!("params.{name}")), e),
                            Ok(found) => {
                                for f in found.into_iter().filter(|f| !HTTP_FIELDS.contains(f)) {
                                    bad(
                                        &key(&format!("params.{name}")),
                                        format!(
                                            "unknown placeholder {{{f}}}; known: {}",
                                            HTTP_FIELDS.join(", ")
                                        ),
                                    );
                                }
                            }
                        }
                    }
                    if let Some(f) = &h.password_file {
                        check_readable(&resolve(base, f), &key("password_file"), bad);
                    }
                    if h.id_pointer.as_deref().is_some_and(|p| !p.starts_with('/')) {
                        bad(
                            &key("id_pointer"),
                            "must be a JSON pointer such as /sid".into(),
                        );
                    }
                }
            }
        }
        for (kind, languages) in &self.templates {
            for (language, t) in languages {
                let key = |field: &str| format!("messaging.templates.{kind}.{language}.{field}");
                if !is_language(language) {
                    bad(
                        &format!("messaging.templates.{kind}.{language}"),
                        "must be a language tag such as en or fr-CH".into(),
                    );
                }
                let texts = [
                    ("sms", &t.sms),
                    ("subject", &t.subject),
                    ("email", &t.email),
                    ("voice", &t.voice),
                ];
                for (field, text) in texts {
                    let Some(text) = text else { continue };
                    match placeholders(text) {
                        Err(e) => bad(&key(field), e),
                        Ok(found) => {
                            for f in found.into_iter().filter(|f| !TEMPLATE_FIELDS.contains(f)) {
                                bad(
                                    &key(field),
                                    format!(
                                        "unknown placeholder {{{f}}}; known: {}",
                                        TEMPLATE_FIELDS.join(", ")
                                    ),
                                );
                            }
                        }
                    }
                }
                if t.email.is_some() != t.subject.is_some() {
                    bad(
                        &key("subject"),
                        "an email needs both subject and email".into(),
                    );
                }
            }
        }
    }

    /// The providers of `channel`, by priority then their order in the file.
    pub fn providers_of(&self, channel: Channel) -> Vec<&ProviderConfig> {
        let mut found: Vec<&ProviderConfig> = self
            .providers
            .iter()
            .filter(|p| p.channel() == Some(channel))
            .collect();
        found.sort_by_key(|p| p.priority);
        found
    }

    /// The provider named `name`.
    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.name == name)
    }
}

/// An address `local@domain.tld` without spaces, angle brackets or a second `@`: what a
/// notification may be sent to.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let fine = |c: char| !c.is_whitespace() && !c.is_control() && !"<>()[],;:\\\"@".contains(c);
    !local.is_empty()
        && local.len() <= 64
        && domain.len() <= 253
        && local.chars().all(fine)
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// A BCP 47-looking tag: letters, digits and `-`, starting with two or three letters.
pub fn is_language(tag: &str) -> bool {
    let primary = tag.split('-').next().unwrap_or_default();
    (2..=3).contains(&primary.len())
        && primary.chars().all(|c| c.is_ascii_alphabetic())
        && tag.len() <= 35
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{keyed, section};

    fn check(text: &str) -> Vec<String> {
        let c: MessagingConfig = section(text, "messaging").expect("reads");
        keyed(settings::collect(|bad| c.validate(Path::new("."), bad)))
    }

    #[test]
    fn a_minimal_section_is_valid() {
        assert_eq!(check("[messaging]\n"), Vec::<String>::new());
    }

    #[test]
    fn unknown_placeholders_and_unbalanced_braces_name_their_key() {
        let found = check(
            r#"
[messaging.templates.you_are_next.en]
sms = "Ticket {ticket}: {diagnosis}"
subject = "Ticket {ticket"
email = "x"
"#,
        );
        assert_eq!(
            found,
            [
                "messaging.templates.you_are_next.en.sms: unknown placeholder {diagnosis}; known: ticket, queue, new_start, facility, wait_min, delay_min, pickup_at",
                "messaging.templates.you_are_next.en.subject: a '{' without its '}'",
            ]
        );
    }

    #[test]
    fn a_password_without_tls_and_duplicate_names_are_refused() {
        let found = check(
            r#"
[[messaging.providers]]
name = "mail"
smtp = { host = "127.0.0.1", security = "none", username = "u", password_file = "/nonexistent", from = "clinic@example.org" }

[[messaging.providers]]
name = "mail"
http = { url = "ftp://x", params = { to = "{to}", x = "{nope}" } }

[[messaging.providers]]
name = "neither"
"#,
        );
        assert_eq!(
            found,
            [
                "messaging.providers[0].smtp.password_file: cannot read /nonexistent: No such file or directory (os error 2)",
                "messaging.providers[0].smtp.security: a password is never sent without TLS: use starttls or tls",
                "messaging.providers[1].name: another provider is already named \"mail\"",
                "messaging.providers[1].http.url: must be an http:// or https:// URL",
                "messaging.providers[1].http.params.x: unknown placeholder {nope}; known: to, text, dlr_url, password, message, validity_s, validity_min",
                "messaging.providers[2]: needs exactly one of smtp, http, smpp and sip",
            ]
        );
    }

    #[test]
    fn an_smpp_validity_is_one_second_to_a_day() {
        let provider = |validity: u64| {
            format!(
                "[[messaging.providers]]\nname = \"smsc\"\n\
smpp = {{ host = \"127.0.0.1\", system_id = \"gw\", password_file = \"Cargo.toml\", source = \"Clinic\", validity_s = {validity} }}\n"
            )
        };
        assert_eq!(check(&provider(60)), Vec::<String>::new());
        for wrong in [0, MAX_VALIDITY_S + 1] {
            assert_eq!(
                check(&provider(wrong)),
                ["messaging.providers[0].smpp.validity_s: must be 1 to 86400"]
            );
        }
    }

    #[test]
    fn an_http_validity_is_told_to_the_provider_in_seconds_or_whole_minutes() {
        let provider = |validity: &str, param: &str| {
            format!(
                "[[messaging.providers]]\nname = \"kannel\"\n[messaging.providers.http]\n\
url = \"http://127.0.0.1:13013/cgi-bin/sendsms\"\n{validity}\nparams = {{ to = \"{{to}}\"{param} }}\n"
            )
        };
        let read = |text: &str| -> HttpConfig {
            let c: MessagingConfig = section(text, "messaging").expect("reads");
            c.providers[0].http.clone().expect("http")
        };
        let minutes = provider("validity_s = 90", r#", validity = "{validity_min}""#);
        assert_eq!(check(&minutes), Vec::<String>::new());
        assert_eq!(read(&minutes).validity_ms(), Some(120_000));
        let seconds = provider("validity_s = 90", r#", ValidityPeriod = "{validity_s}""#);
        assert_eq!(read(&seconds).validity_ms(), Some(90_000));
        assert_eq!(
            check(&provider("validity_s = 90", "")),
            [
                "messaging.providers[0].http.validity_s: no parameter tells it: use {validity_s} or {validity_min}"
            ]
        );
        assert_eq!(
            check(&provider("", r#", validity = "{validity_min}""#)),
            [
                "messaging.providers[0].http.validity_s: must be set for {validity_s} or {validity_min}"
            ]
        );
        assert_eq!(
            check(&provider(
                "validity_s = 0",
                r#", validity = "{validity_min}""#
            )),
            ["messaging.providers[0].http.validity_s: must be 1 to 86400"]
        );
    }

    #[test]
    fn receipt_watches_rates_and_the_floor_are_checked() {
        let found = check(
            r#"
[messaging.routing]
prefer = "cheapest"
delivery_rate_floor = 1.5

[[messaging.providers]]
name = "mail"
receipt_watch = { messages = 0, seconds = 60 }
max_per_second = 0
smtp = { host = "127.0.0.1", from = "clinic@example.org" }
"#,
        );
        assert_eq!(
            found,
            [
                "messaging.routing.delivery_rate_floor: must be a rate from 0 to 1",
                "messaging.providers[0].receipt_watch.messages: must be at least 1",
                "messaging.providers[0].receipt_watch: SMTP has no delivery receipts",
                "messaging.providers[0].max_per_second: must be 0.1 to 10000",
            ]
        );
    }

    #[test]
    fn quiet_hours_are_hh_mm() {
        assert_eq!(minutes_of_day("21:30"), Some(21 * 60 + 30));
        assert_eq!(minutes_of_day("24:00"), None);
        assert_eq!(minutes_of_day("7:00"), None);
        let found = check("[messaging]\nquiet_hours = { from = \"21:00\", to = \"8\" }\n");
        assert_eq!(found, ["messaging.quiet_hours.to: must be HH:MM"]);
    }
}
