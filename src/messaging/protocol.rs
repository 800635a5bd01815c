//! Pure messaging logic: who is reached how (contact details from the check-in or the EHR's
//! Patient, the patient's and the clinic's channel order), phone numbers and addresses checked,
//! templates filled, quiet hours, SMS segments (GSM-7 160/153, UCS-2 70/67). No I/O, no SQL:
//! the store and the deliverer decide with these.

use super::config::{
    self, Channel, MessagingConfig, Prefer, ProviderConfig, QuietHours, ReceiptWatch, Routing,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// How a patient can be reached, from the check-in or the EHR.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reach {
    pub phone: Option<String>,
    pub email: Option<String>,
    pub language: Option<String>,
    /// The patient's channel order; empty: the clinic's.
    pub channels: Vec<Channel>,
    pub opted_out: bool,
}

impl Reach {
    /// The check-in's details; unknown channel names are passed over.
    pub fn from_check_in(c: &crate::queue::Contact) -> Reach {
        Reach {
            phone: c.phone.clone(),
            email: c.email.clone(),
            language: c.language.clone(),
            channels: c
                .channels
                .iter()
                .filter_map(|c| Channel::parse(c))
                .collect(),
            opted_out: c.opted_out,
        }
    }

    /// A FHIR R4 Patient's details: the best-ranked `telecom` of each system (`rank` 1 first,
    /// unranked last; `old` ones and ones whose period ended are passed over), the preferred
    /// `communication` language (else the first), and the opt-out extension `opt_out_url`
    /// with `valueBoolean: true`.
    pub fn from_patient(patient: &serde_json::Value, opt_out_url: Option<&str>) -> Reach {
        let mut telecom: Vec<&serde_json::Value> = patient["telecom"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["use"] != "old" && t["period"]["end"].is_null())
            .collect();
        telecom.sort_by_key(|t| t["rank"].as_u64().unwrap_or(u64::MAX));
        let best = |systems: &[&str]| {
            telecom
                .iter()
                .find(|t| t["system"].as_str().is_some_and(|s| systems.contains(&s)))
                .and_then(|t| t["value"].as_str())
                .map(str::to_string)
        };
        let languages: Vec<&serde_json::Value> = patient["communication"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        let language = languages
            .iter()
            .find(|c| c["preferred"] == true)
            .or(languages.first())
            .and_then(|c| c["language"]["coding"][0]["code"].as_str())
            .map(str::to_string);
        let opted_out = opt_out_url.is_some_and(|url| {
            patient["extension"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["url"] == url && e["valueBoolean"] == true)
        });
        Reach {
            phone: best(&["sms", "phone"]),
            email: best(&["email"]),
            language,
            channels: Vec::new(),
            opted_out,
        }
    }
}

/// A phone number in E.164 form (`+` and 8 to 15 digits), from one written with spaces,
/// dashes, dots, parentheses or a leading `00`.
pub fn phone_number(s: &str) -> Option<String> {
    let kept: String = s
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '/'))
        .collect();
    let digits = kept.strip_prefix('+').or_else(|| kept.strip_prefix("00"))?;
    (digits.len() >= 8
        && digits.len() <= 15
        && !digits.starts_with('0')
        && digits.chars().all(|c| c.is_ascii_digit()))
    .then(|| format!("+{digits}"))
}

/// One way to try: a channel, the address on it, and what is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub channel: Channel,
    pub address: String,
    /// An email's subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub body: String,
}

/// The values a template may show.
#[derive(Debug, Clone, PartialEq)]
pub struct Fields<'a> {
    pub ticket: &'a str,
    pub queue: &'a str,
    pub new_start: Option<&'a str>,
    pub facility: &'a str,
    /// A delay's new estimated wait and how much it grew, in minutes.
    pub wait_min: Option<String>,
    pub delay_min: Option<String>,
    /// When a prescription can be picked up (`HH:MM`, the clinic's time).
    pub pickup_at: Option<String>,
}

/// A template filled with `fields`; a placeholder whose value is missing is an error.
pub fn render(template: &str, fields: &Fields<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or("a '{' without its '}'")?;
        let value = match &after[..close] {
            "ticket" => Some(fields.ticket),
            "queue" => Some(fields.queue),
            "new_start" => fields.new_start,
            "facility" => Some(fields.facility),
            "wait_min" => fields.wait_min.as_deref(),
            "delay_min" => fields.delay_min.as_deref(),
            "pickup_at" => fields.pickup_at.as_deref(),
            other => return Err(format!("unknown placeholder {{{other}}}")),
        };
        out.push_str(value.ok_or_else(|| format!("{{{}}} has no value", &after[..close]))?);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// What becomes of a notification: the routes to try in order, or why none.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Send(Vec<Route>),
    /// Nothing is sent; the reason is recorded on the notification.
    Refused(String),
}

/// The routes for a notification of `kind` to a patient: the patient's channel order (else
/// the clinic's), keeping the channels with a provider, an address that is well formed and a
/// template in the patient's language (else the default one). The first problem met names
/// the refusal when no route is left.
pub fn plan(config: &MessagingConfig, reach: &Reach, kind: &str, fields: &Fields<'_>) -> Plan {
    if reach.opted_out {
        return Plan::Refused("the patient opted out of messages".into());
    }
    let order = if reach.channels.is_empty() {
        &config.channels
    } else {
        &reach.channels
    };
    let Some(languages) = config.templates.get(kind) else {
        return Plan::Refused(format!("template error: no template for {kind}"));
    };
    let template = reach
        .language
        .as_deref()
        .and_then(|l| {
            languages.get(l).or_else(|| {
                // `de-CH` falls back to `de` before the clinic's default.
                l.split('-')
                    .next()
                    .and_then(|primary| languages.get(primary))
            })
        })
        .or_else(|| languages.get(&config.default_language));
    let Some(template) = template else {
        return Plan::Refused(format!(
            "template error: no template for {kind} in {} or {}",
            reach.language.as_deref().unwrap_or("(none)"),
            config.default_language
        ));
    };
    let mut routes = Vec::new();
    let mut first_problem: Option<String> = None;
    let mut problem = |p: String| {
        first_problem.get_or_insert(p);
    };
    for &channel in order {
        if config.providers_of(channel).is_empty() {
            continue;
        }
        let address = match channel {
            Channel::Sms | Channel::Voice => match &reach.phone {
                None => continue,
                Some(p) => match phone_number(p) {
                    Some(n) => n,
                    None => {
                        problem("malformed phone number".into());
                        continue;
                    }
                },
            },
            Channel::Email => match &reach.email {
                None => continue,
                Some(e) if config::is_email(e.trim()) => e.trim().to_string(),
                Some(_) => {
                    problem("malformed email address".into());
                    continue;
                }
            },
        };
        let Some(text) = template.text(channel) else {
            problem(format!(
                "template error: no {} text for {kind}",
                channel.as_str()
            ));
            continue;
        };
        let body = match render(text, fields) {
            Ok(b) => b,
            Err(e) => {
                problem(format!("template error: {e}"));
                continue;
            }
        };
        let subject = match (channel, &template.subject) {
            (Channel::Email, Some(s)) => match render(s, fields) {
                Ok(s) => Some(s),
                Err(e) => {
                    problem(format!("template error: {e}"));
                    continue;
                }
            },
            _ => None,
        };
        routes.push(Route {
            channel,
            address,
            subject,
            body,
        });
    }
    if routes.is_empty() {
        Plan::Refused(first_problem.unwrap_or_else(|| "no contact on a configured channel".into()))
    } else {
        Plan::Send(routes)
    }
}

/// Whether `kind` waits out quiet hours: "you are next" is for someone in the waiting room.
pub fn waits_for_quiet_hours(kind: &str) -> bool {
    kind != "you_are_next"
}

/// When quiet hours that hold `minute` (of the clinic's day) end, in minutes from `minute`.
pub fn quiet_minutes_left(quiet: &QuietHours, minute: u32) -> Option<u32> {
    let from = config::minutes_of_day(&quiet.from)?;
    let to = config::minutes_of_day(&quiet.to)?;
    let inside = if from <= to {
        (from..to).contains(&minute)
    } else {
        minute >= from || minute < to
    };
    inside.then(|| (to + 24 * 60 - minute) % (24 * 60))
}

/// The time (ms) a message made at `now` may be sent: `now`, or the end of quiet hours.
pub fn not_before(quiet: Option<&QuietHours>, zone: &jiff::tz::TimeZone, now: i64) -> i64 {
    let Some(quiet) = quiet else { return now };
    let Ok(at) = jiff::Timestamp::from_millisecond(now) else {
        return now;
    };
    let local = at.to_zoned(zone.clone());
    let minute = local.hour() as u32 * 60 + local.minute() as u32;
    match quiet_minutes_left(quiet, minute) {
        // To the start of the minute the quiet hours end.
        Some(left) => {
            now - (local.second() as i64 * 1000 + local.millisecond() as i64) + left as i64 * 60_000
        }
        None => now,
    }
}

/// How an SMS text is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The GSM 03.38 default alphabet, 7 bits a character.
    Gsm7,
    /// UCS-2, 16 bits a character (anything outside GSM-7).
    Ucs2,
}

/// The GSM 03.38 default alphabet.
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// Characters of the extension table: an escape and the character, two septets each.
const GSM7_EXTENDED: &str = "\u{c}^{}\\[~]|€";

/// The encoding of `text` and its length in that encoding's units (septets or UCS-2 code
/// units).
pub fn sms_length(text: &str) -> (Encoding, usize) {
    let mut septets = 0;
    for c in text.chars() {
        if GSM7_BASIC.contains(c) {
            septets += 1;
        } else if GSM7_EXTENDED.contains(c) {
            septets += 2;
        } else {
            return (Encoding::Ucs2, text.encode_utf16().count());
        }
    }
    (Encoding::Gsm7, septets)
}

/// How many SMS segments `text` takes: one up to 160 septets (70 UCS-2 units), else 153 (67)
/// per segment, the rest being the concatenation header.
pub fn segments(text: &str) -> u32 {
    let (encoding, len) = sms_length(text);
    let (single, part) = match encoding {
        Encoding::Gsm7 => (160, 153),
        Encoding::Ucs2 => (70, 67),
    };
    if len <= single {
        1
    } else {
        len.div_ceil(part) as u32
    }
}

/// What a delivery receipt says about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    Delivered,
    Failed,
    /// The provider gave up before the handset took it (validity period over).
    Expired,
}

impl Receipt {
    pub fn parse(s: &str) -> Option<Receipt> {
        [Receipt::Delivered, Receipt::Failed, Receipt::Expired]
            .into_iter()
            .find(|r| r.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Receipt::Delivered => "delivered",
            Receipt::Failed => "failed",
            Receipt::Expired => "expired",
        }
    }
}

/// The last failed or expired receipt among a notification's attempts' statuses (oldest
/// first): how it ended when no provider is left to try.
pub fn last_failure<'a>(statuses: impl DoubleEndedIterator<Item = &'a str>) -> Option<Receipt> {
    statuses
        .rev()
        .filter_map(Receipt::parse)
        .find(|r| *r != Receipt::Delivered)
}

/// An SMPP receipt's `stat:` (SMPP 3.4 appendix B): final ones only; `ENROUTE`, `ACCEPTD` and
/// unknown states say nothing yet.
pub fn receipt_stat(stat: &str) -> Option<Receipt> {
    match stat {
        "DELIVRD" => Some(Receipt::Delivered),
        "EXPIRED" => Some(Receipt::Expired),
        "UNDELIV" | "REJECTD" | "DELETED" => Some(Receipt::Failed),
        _ => None,
    }
}

/// The `id:` and `stat:` of an SMPP delivery receipt's text
/// (`id:IIIIIIIIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD
/// err:E text:...`).
pub fn receipt_text(text: &str) -> Option<(&str, &str)> {
    let field = |name: &str| {
        let at = text.find(name)?;
        // `id:` must start a word (`submit date:` holds no `id:`, but be strict anyway).
        if at > 0 && !text[..at].ends_with(' ') {
            return None;
        }
        let value = &text[at + name.len()..];
        Some(value.split(' ').next().unwrap_or_default())
    };
    let id = field("id:")?;
    let stat = field("stat:")?;
    (!id.is_empty() && !stat.is_empty()).then_some((id, stat))
}

/// What an HTTP provider's receipt call says: Kannel's DLR type (`status`: 1 delivered, 2
/// failed, 16 rejected by the SMSC; 4 and 8 are intermediate) refined by the SMSC's receipt
/// text (`answer`, which tells an expiry from a failure), or a Twilio-style status word.
pub fn http_receipt(status: Option<&str>, answer: Option<&str>) -> Option<Receipt> {
    if let Some(found) = answer
        .and_then(receipt_text)
        .and_then(|(_, stat)| receipt_stat(stat))
    {
        return Some(found);
    }
    // Besides SMS words, a voice API's call states: `completed` is a call the callee answered
    // and heard to its end; `busy`, `no-answer` and `canceled` reached no one.
    match status?.trim() {
        "1" | "delivered" | "DELIVRD" | "completed" => Some(Receipt::Delivered),
        "2" | "16" | "failed" | "undelivered" | "UNDELIV" | "REJECTD" | "busy" | "no-answer"
        | "canceled" => Some(Receipt::Failed),
        "expired" | "EXPIRED" => Some(Receipt::Expired),
        _ => None,
    }
}

/// Whether a provider's receipts count as stopped at `now`: `waiting` messages it took wait
/// for their receipt with none from it since the oldest, taken at `oldest` (ms).
pub fn receipts_stopped(watch: &ReceiptWatch, waiting: u32, oldest: Option<i64>, now: i64) -> bool {
    let old_enough = oldest.is_some_and(|at| now - at >= watch.seconds as i64 * 1000);
    waiting >= watch.messages && old_enough
}

/// What one message costs through `p` (`segments` SMS segments; a call counts one minute).
pub fn price(p: &ProviderConfig, channel: Channel, segments: u32) -> f64 {
    let per_unit = match channel {
        Channel::Sms => f64::from(segments) * p.price_per_segment,
        Channel::Voice => p.price_per_minute,
        Channel::Email => 0.0,
    };
    p.price_per_message + per_unit
}

/// The order in which `providers` (already by priority) are tried for one message: with
/// `prefer = "cheapest"`, the ones whose delivery `rates` reach the floor by price (the
/// cheapest first, ties by priority), then the others by priority.
pub fn order<'a>(
    providers: Vec<&'a ProviderConfig>,
    routing: &Routing,
    rates: &BTreeMap<String, f64>,
    channel: Channel,
    segments: u32,
) -> Vec<&'a ProviderConfig> {
    if routing.prefer == Prefer::Priority {
        return providers;
    }
    let (mut good, rest): (Vec<_>, Vec<_>) = providers.into_iter().partition(|p| {
        rates
            .get(&p.name)
            .is_some_and(|r| *r >= routing.delivery_rate_floor)
    });
    // A stable sort keeps the priority order among equal prices.
    good.sort_by(|a, b| price(a, channel, segments).total_cmp(&price(b, channel, segments)));
    good.extend(rest);
    good
}

/// A provider's rate limit: `rate` messages a second, at most one second's worth at once.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    /// When `tokens` was counted (ms).
    at: i64,
}

impl TokenBucket {
    pub fn new(rate: f64, now: i64) -> TokenBucket {
        TokenBucket {
            rate,
            tokens: rate.max(1.0),
            at: now,
        }
    }

    /// Takes one message's token at `now`, or answers how many ms until there is one.
    pub fn take(&mut self, now: i64) -> Result<(), i64> {
        let elapsed = (now - self.at).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate.max(1.0));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - self.tokens) / self.rate) * 1000.0).ceil() as i64)
        }
    }
}

/// One attempt a provider took, as cost analytics reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Taken {
    pub provider: String,
    pub channel: String,
    pub sent_at: i64,
    pub segments: u32,
    pub cost: f64,
    /// `sent` (no receipt yet), `delivered`, `failed` or `expired`.
    pub status: String,
    /// Receipt time minus send time, for a delivered one.
    pub latency_ms: Option<i64>,
}

/// One provider's figures in one channel and period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    /// `YYYY-MM-DD` or `YYYY-MM` in the clinic's time zone; `all` for the whole span.
    pub period: String,
    pub provider: String,
    pub channel: String,
    pub messages: u64,
    pub segments: u64,
    pub delivered: u64,
    /// Failed or expired by their receipt.
    pub failed: u64,
    /// Delivered among those with a final receipt; `None` before any.
    pub delivery_rate: Option<f64>,
    pub median_latency_ms: Option<i64>,
    pub cost: f64,
}

/// The figures per period (`month`: calendar months, else days; `None`: the whole span) and
/// provider, from `taken`; `day_of` gives the clinic's date of a time.
pub fn figures(
    taken: &[Taken],
    day_of: &dyn Fn(i64) -> String,
    month: Option<bool>,
) -> Vec<Figures> {
    let mut groups: BTreeMap<(String, String, String), Vec<&Taken>> = BTreeMap::new();
    for t in taken {
        let period = match month {
            None => "all".to_string(),
            Some(m) => {
                let day = day_of(t.sent_at);
                if m {
                    day[..7.min(day.len())].to_string()
                } else {
                    day
                }
            }
        };
        groups
            .entry((period, t.channel.clone(), t.provider.clone()))
            .or_default()
            .push(t);
    }
    groups
        .into_iter()
        .map(|((period, channel, provider), rows)| {
            let delivered = rows.iter().filter(|t| t.status == "delivered").count() as u64;
            let failed = rows
                .iter()
                .filter(|t| t.status == "failed" || t.status == "expired")
                .count() as u64;
            let mut latencies: Vec<i64> = rows.iter().filter_map(|t| t.latency_ms).collect();
            latencies.sort_unstable();
            Figures {
                period,
                provider,
                channel,
                messages: rows.len() as u64,
                segments: rows.iter().map(|t| u64::from(t.segments)).sum(),
                delivered,
                failed,
                delivery_rate: (delivered + failed > 0)
                    .then(|| delivered as f64 / (delivered + failed) as f64),
                median_latency_ms: latencies.get(latencies.len() / 2).copied(),
                cost: rows.iter().map(|t| t.cost).sum(),
            }
        })
        .collect()
}

/// What another provider of a channel would have cost at a delivery rate at least as good
/// (within one percentage point) as the one carrying most of its messages, over the span of
/// `all` (figures with period `all`); the largest saving per channel, as a sentence.
pub fn recommendations(all: &[Figures], days: u32) -> Vec<String> {
    let mut out = Vec::new();
    let channels: BTreeSet<&str> = all.iter().map(|f| f.channel.as_str()).collect();
    for channel in channels {
        let of: Vec<&Figures> = all.iter().filter(|f| f.channel == channel).collect();
        let Some(main) = of.iter().max_by_key(|f| f.messages) else {
            continue;
        };
        let per_message = |f: &Figures| f.cost / f.messages.max(1) as f64;
        let main_rate = main.delivery_rate.unwrap_or(0.0);
        let best = of
            .iter()
            .filter(|f| f.provider != main.provider && f.messages > 0)
            .filter(|f| f.delivery_rate.is_some_and(|r| r + 0.01 >= main_rate))
            .filter(|f| per_message(f) < per_message(main))
            .min_by(|a, b| per_message(a).total_cmp(&per_message(b)));
        if let Some(b) = best {
            let saving = (1.0 - per_message(b) / per_message(main)) * 100.0;
            out.push(format!(
                "{} would have cost {:.0} % less than {} for {} at the same delivery rate over the last {} days",
                b.provider, saving, main.provider, channel, days
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> MessagingConfig {
        crate::settings::section(
            r#"
[messaging]
channels = ["sms", "email"]
[[messaging.providers]]
name = "sms-a"
http = { url = "http://127.0.0.1:1/send" }
[[messaging.providers]]
name = "mail"
smtp = { host = "127.0.0.1", from = "clinic@example.org" }
[messaging.templates.you_are_next.en]
sms = "Ticket {ticket}: you are next."
subject = "Ticket {ticket}"
email = "Ticket {ticket} at {facility}: you are next in {queue}."
[messaging.templates.you_are_next.de]
sms = "Nummer {ticket}: Sie sind als Nächste dran."
[messaging.templates.appointment_rescheduled.en]
sms = "Your appointment moved to {new_start}."
"#,
            "messaging",
        )
        .expect("config")
    }

    fn fields() -> Fields<'static> {
        Fields {
            ticket: "A-001",
            queue: "general",
            new_start: None,
            facility: "test-clinic",
            wait_min: None,
            delay_min: None,
            pickup_at: None,
        }
    }

    fn check(reach: Reach, kind: &str) -> Plan {
        plan(&config(), &reach, kind, &fields())
    }

    #[test]
    fn phone_numbers_are_read_into_e164() {
        assert_eq!(
            phone_number("+41 79 123 45 67").as_deref(),
            Some("+41791234567")
        );
        assert_eq!(
            phone_number("0041 (79) 123-45-67").as_deref(),
            Some("+41791234567")
        );
        assert_eq!(phone_number("079 123 45 67"), None, "no country code");
        assert_eq!(phone_number("+41 79 12x 45 67"), None);
        assert_eq!(phone_number("+1234"), None, "too short");
    }

    #[test]
    fn the_patients_channel_order_and_language_pick_the_route() {
        let reach = Reach {
            phone: Some("+41 79 123 45 67".into()),
            email: Some("pat@example.org".into()),
            language: Some("de-CH".into()),
            channels: vec![Channel::Email, Channel::Sms],
            opted_out: false,
        };
        let Plan::Send(routes) = check(reach, "you_are_next") else {
            panic!("refused")
        };
        // German has no email text: the email route is left out, the SMS is in German.
        assert_eq!(routes.len(), 1, "{routes:?}");
        assert_eq!(routes[0].channel, Channel::Sms);
        assert_eq!(routes[0].address, "+41791234567");
        assert_eq!(routes[0].body, "Nummer A-001: Sie sind als Nächste dran.");
    }

    #[test]
    fn the_clinics_order_is_used_without_a_preference() {
        let reach = Reach {
            phone: Some("+41791234567".into()),
            email: Some("pat@example.org".into()),
            ..Reach::default()
        };
        let Plan::Send(routes) = check(reach, "you_are_next") else {
            panic!("refused")
        };
        let channels: Vec<Channel> = routes.iter().map(|r| r.channel).collect();
        assert_eq!(channels, [Channel::Sms, Channel::Email]);
        assert_eq!(routes[1].subject.as_deref(), Some("Ticket A-001"));
        assert_eq!(
            routes[1].body,
            "Ticket A-001 at test-clinic: you are next in general."
        );
    }

    #[test]
    fn refusals_say_why() {
        let refused = |reach: Reach, kind: &str| match check(reach, kind) {
            Plan::Refused(why) => why,
            Plan::Send(r) => panic!("sent {r:?}"),
        };
        let phone = |p: &str| Reach {
            phone: Some(p.into()),
            ..Reach::default()
        };
        assert_eq!(
            refused(phone("12ab"), "you_are_next"),
            "malformed phone number"
        );
        assert_eq!(
            refused(
                Reach {
                    email: Some("not an address".into()),
                    ..Reach::default()
                },
                "you_are_next"
            ),
            "malformed email address"
        );
        assert_eq!(
            refused(
                Reach {
                    opted_out: true,
                    ..phone("+41791234567")
                },
                "you_are_next"
            ),
            "the patient opted out of messages"
        );
        assert_eq!(
            refused(phone("+41791234567"), "appointment_rescheduled"),
            "template error: {new_start} has no value"
        );
        assert_eq!(
            refused(phone("+41791234567"), "lab_results_ready"),
            "template error: no template for lab_results_ready"
        );
        assert_eq!(
            refused(Reach::default(), "you_are_next"),
            "no contact on a configured channel"
        );
    }

    #[test]
    fn a_delay_and_a_pickup_show_their_minutes_and_time() {
        let delayed = Fields {
            wait_min: Some("25".into()),
            delay_min: Some("15".into()),
            ..fields()
        };
        assert_eq!(
            render(
                "Ticket {ticket}: about {wait_min} min now ({delay_min} more).",
                &delayed
            )
            .as_deref(),
            Ok("Ticket A-001: about 25 min now (15 more).")
        );
        assert_eq!(
            render("Ready from {pickup_at}.", &fields()),
            Err("{pickup_at} has no value".to_string()),
            "another kind's notification has none"
        );
    }

    #[test]
    fn a_patients_telecom_is_read_by_rank_with_language_and_opt_out() {
        let patient = json!({
            "resourceType": "Patient",
            "telecom": [
                { "system": "phone", "value": "+41 61 555 09 09", "rank": 2 },
                { "system": "phone", "value": "+41 79 000 00 00", "use": "old", "rank": 1 },
                { "system": "phone", "value": "+41 79 555 01 02", "use": "mobile", "rank": 1 },
                { "system": "email", "value": "p@example.org" }
            ],
            "communication": [
                { "language": { "coding": [{ "code": "en" }] } },
                { "language": { "coding": [{ "code": "fr-CH" }] }, "preferred": true }
            ],
            "extension": [{ "url": "https://example.org/no-messages", "valueBoolean": true }]
        });
        let reach = Reach::from_patient(&patient, Some("https://example.org/no-messages"));
        assert_eq!(reach.phone.as_deref(), Some("+41 79 555 01 02"));
        assert_eq!(reach.email.as_deref(), Some("p@example.org"));
        assert_eq!(reach.language.as_deref(), Some("fr-CH"));
        assert!(reach.opted_out);
        assert!(!Reach::from_patient(&patient, None).opted_out);
    }

    #[test]
    fn quiet_hours_hold_messages_until_they_end() {
        let q = QuietHours {
            from: "21:00".into(),
            to: "08:00".into(),
        };
        assert_eq!(quiet_minutes_left(&q, 22 * 60), Some(10 * 60));
        assert_eq!(quiet_minutes_left(&q, 7 * 60 + 30), Some(30));
        assert_eq!(quiet_minutes_left(&q, 8 * 60), None);
        let zone = jiff::tz::TimeZone::UTC;
        // 2026-12-02 22:15:30 UTC waits until 08:00 the next day.
        let now = 1_796_249_730_000;
        assert_eq!(not_before(Some(&q), &zone, now), 1_796_284_800_000);
        assert_eq!(not_before(None, &zone, now), now);
    }

    #[test]
    fn figures_and_the_cheaper_provider_at_the_same_delivery_rate() {
        let t = |provider: &str, day: i64, cost: f64, status: &str, latency: Option<i64>| Taken {
            provider: provider.into(),
            channel: "sms".into(),
            sent_at: 1_796_169_600_000 + day * 86_400_000,
            segments: 1,
            cost,
            status: status.into(),
            latency_ms: latency,
        };
        let taken = [
            t("a", 0, 0.10, "delivered", Some(900)),
            t("a", 0, 0.10, "delivered", Some(1500)),
            t("a", 1, 0.10, "failed", None),
            t("a", 1, 0.10, "delivered", Some(1100)),
            t("b", 1, 0.069, "delivered", Some(2000)),
            t("b", 1, 0.069, "delivered", Some(2000)),
            t("b", 1, 0.069, "sent", None),
        ];
        let zone = jiff::tz::TimeZone::UTC;
        let zone = &|ms| crate::clock::day_in(&zone, ms);
        let days = figures(&taken, zone, Some(false));
        assert_eq!(days.len(), 3);
        assert_eq!(days[0].period, "2026-12-02");
        assert_eq!(days[0].median_latency_ms, Some(1500));
        assert_eq!(days[1].delivery_rate, Some(0.5));
        let months = figures(&taken, zone, Some(true));
        assert_eq!(months.len(), 2);
        assert_eq!(months[0].period, "2026-12");
        let all = figures(&taken, zone, None);
        assert_eq!(all[0].messages, 4);
        assert_eq!(all[0].delivery_rate, Some(0.75));
        assert_eq!(
            recommendations(&all, 30),
            [
                "b would have cost 31 % less than a for sms at the same delivery rate over the last 30 days"
            ]
        );
        // A cheaper provider that delivers less is no recommendation.
        let worse = [
            t("a", 0, 0.1, "delivered", None),
            t("b", 0, 0.01, "failed", None),
        ];
        assert!(recommendations(&figures(&worse, zone, None), 30).is_empty());
    }

    #[test]
    fn receipts_are_read_from_smpp_text_kannel_types_and_status_words() {
        let text = "id:1042 sub:001 dlvrd:001 submit date:2612021200 done date:2612021201 stat:DELIVRD err:000 text:";
        assert_eq!(receipt_text(text), Some(("1042", "DELIVRD")));
        assert_eq!(receipt_text("stat:DELIVRD"), None, "no id");
        assert_eq!(receipt_text(""), None);
        assert_eq!(http_receipt(Some("1"), None), Some(Receipt::Delivered));
        assert_eq!(
            http_receipt(Some("8"), None),
            None,
            "accepted by the SMSC only"
        );
        assert_eq!(
            http_receipt(Some("2"), Some("id:7 stat:EXPIRED err:000")),
            Some(Receipt::Expired),
            "the SMSC's text tells an expiry from a failure"
        );
        assert_eq!(
            http_receipt(Some("undelivered"), None),
            Some(Receipt::Failed)
        );
        assert_eq!(http_receipt(Some("sent"), None), None);
        assert_eq!(http_receipt(None, None), None);
    }

    #[test]
    fn a_notification_ends_as_its_last_failed_receipt_said() {
        let ended = |s: &[&str]| last_failure(s.iter().copied());
        assert_eq!(
            ended(&["failed", "expired", "refused", "error"]),
            Some(Receipt::Expired)
        );
        assert_eq!(ended(&["expired", "failed"]), Some(Receipt::Failed));
        assert_eq!(ended(&["refused", "error"]), None);
        assert_eq!(ended(&[]), None);
    }

    #[test]
    fn call_states_are_receipts() {
        assert_eq!(
            http_receipt(Some("completed"), None),
            Some(Receipt::Delivered)
        );
        assert_eq!(http_receipt(Some("busy"), None), Some(Receipt::Failed));
        assert_eq!(http_receipt(Some("no-answer"), None), Some(Receipt::Failed));
        assert_eq!(http_receipt(Some("ringing"), None), None);
    }

    #[test]
    fn receipts_stop_after_enough_messages_and_time() {
        let watch = ReceiptWatch {
            messages: 2,
            seconds: 10,
        };
        assert!(!receipts_stopped(&watch, 1, Some(0), 60_000), "one message");
        assert!(
            !receipts_stopped(&watch, 2, Some(55_000), 60_000),
            "too recent"
        );
        assert!(receipts_stopped(&watch, 2, Some(50_000), 60_000));
        assert!(!receipts_stopped(&watch, 0, None, 60_000));
    }

    #[test]
    fn the_cheapest_provider_above_the_floor_goes_first() {
        let c: MessagingConfig = crate::settings::section(
            r#"
[messaging]
routing = { prefer = "cheapest", delivery_rate_floor = 0.9 }
[[messaging.providers]]
name = "dear"
priority = 0
price_per_segment = 0.05
http = { url = "http://127.0.0.1:1/a" }
[[messaging.providers]]
name = "cheap"
priority = 1
price_per_segment = 0.01
http = { url = "http://127.0.0.1:1/b" }
[[messaging.providers]]
name = "cheapest"
priority = 2
price_per_segment = 0.001
http = { url = "http://127.0.0.1:1/c" }
"#,
            "messaging",
        )
        .expect("config");
        let names = |rates: &[(&str, f64)], routing: &Routing| {
            let rates = rates.iter().map(|(n, r)| (n.to_string(), *r)).collect();
            order(
                c.providers_of(Channel::Sms),
                routing,
                &rates,
                Channel::Sms,
                2,
            )
            .into_iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
        };
        assert_eq!(
            names(
                &[("dear", 1.0), ("cheap", 0.95), ("cheapest", 0.5)],
                &c.routing
            ),
            ["cheap", "dear", "cheapest"],
            "below the floor goes last"
        );
        assert_eq!(
            names(&[], &c.routing),
            ["dear", "cheap", "cheapest"],
            "without figures: by priority"
        );
        assert_eq!(
            names(&[("cheapest", 1.0)], &Routing::default()),
            ["dear", "cheap", "cheapest"],
            "prefer = priority ignores prices"
        );
    }

    #[test]
    fn a_token_bucket_spaces_messages_at_its_rate() {
        let mut b = TokenBucket::new(2.0, 0);
        assert_eq!(b.take(0), Ok(()));
        assert_eq!(b.take(0), Ok(()));
        assert_eq!(b.take(0), Err(500));
        assert_eq!(b.take(250), Err(250));
        assert_eq!(b.take(500), Ok(()));
        // An idle provider saves up one second's worth, no more.
        assert_eq!(b.take(60_000), Ok(()));
        assert_eq!(b.take(60_000), Ok(()));
        assert_eq!(b.take(60_000), Err(500));
        let mut slow = TokenBucket::new(0.5, 0);
        assert_eq!(slow.take(0), Ok(()));
        assert_eq!(slow.take(0), Err(2000));
    }

    #[test]
    fn segments_follow_gsm7_and_ucs2_limits() {
        assert_eq!(sms_length("Hello"), (Encoding::Gsm7, 5));
        assert_eq!(sms_length("€5"), (Encoding::Gsm7, 3), "€ takes an escape");
        assert_eq!(sms_length("Nächste"), (Encoding::Gsm7, 7));
        assert_eq!(sms_length("Čas"), (Encoding::Ucs2, 3));
        assert_eq!(segments(&"a".repeat(160)), 1);
        assert_eq!(segments(&"a".repeat(161)), 2);
        assert_eq!(segments(&"a".repeat(306)), 2);
        assert_eq!(segments(&"a".repeat(307)), 3);
        assert_eq!(segments(&"ž".repeat(70)), 1);
        assert_eq!(segments(&"ž".repeat(71)), 2);
        assert_eq!(segments(&"ž".repeat(134)), 2);
        assert_eq!(segments(&"ž".repeat(135)), 3);
        assert_eq!(segments(&"^".repeat(80)), 1);
        assert_eq!(segments(&"^".repeat(81)), 2);
    }
}
