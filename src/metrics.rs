//! Process-wide counters and the Prometheus text rendering of `/metrics`.
//!
//! Plain atomics: the hot paths (journal commits, relay acks) only add; rendering reads.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }
    pub fn add(&self, n: u64) {
        if n > 0 {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of the commit-latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    const fn new() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

pub struct Metrics {
    pub journal_appends: Counter,
    pub commit_latency: Histogram,
    pub deliveries: Counter,
    pub retries: Counter,
    pub dead_letters: Counter,
    pub actor_restarts: Counter,
    pub inbound_refused: Counter,
    pub payment_webhooks_refused: Counter,
    pub billing_refused: Counter,
    pub relay_published: Counter,
    pub relay_connects: Counter,
    pub commands_received: Counter,
    pub commands_refused: Counter,
}

pub static METRICS: Metrics = Metrics {
    journal_appends: Counter::new(),
    commit_latency: Histogram::new(),
    deliveries: Counter::new(),
    retries: Counter::new(),
    dead_letters: Counter::new(),
    actor_restarts: Counter::new(),
    inbound_refused: Counter::new(),
    payment_webhooks_refused: Counter::new(),
    billing_refused: Counter::new(),
    relay_published: Counter::new(),
    relay_connects: Counter::new(),
    commands_received: Counter::new(),
    commands_refused: Counter::new(),
};

/// Renders every metric in the Prometheus text exposition format (version 0.0.4), with the
/// backlog gauges passed in by the caller.
pub fn render(backlog: &[(String, &'static str, u64)]) -> String {
    let m = &METRICS;
    let mut out = String::new();
    let counters: [(&str, &str, &Counter); 12] = [
        (
            "clinic_gateway_journal_appends_total",
            "Inbound items committed to the journal.",
            &m.journal_appends,
        ),
        (
            "clinic_gateway_deliveries_total",
            "Outbox rows delivered to their destination.",
            &m.deliveries,
        ),
        (
            "clinic_gateway_retries_total",
            "Failed delivery attempts scheduled for retry.",
            &m.retries,
        ),
        (
            "clinic_gateway_dead_letters_total",
            "Outbox rows that became dead letters.",
            &m.dead_letters,
        ),
        (
            "clinic_gateway_actor_restarts_total",
            "Actor restarts by the supervisor.",
            &m.actor_restarts,
        ),
        (
            "clinic_gateway_inbound_refused_total",
            "Inbound items refused (journal full or failing).",
            &m.inbound_refused,
        ),
        (
            "clinic_gateway_payment_webhooks_refused_total",
            "Payment processor webhooks refused for their signature.",
            &m.payment_webhooks_refused,
        ),
        (
            "clinic_gateway_billing_refused_total",
            "Completed visits the billing table gave no codes (unknown appointment type).",
            &m.billing_refused,
        ),
        (
            "clinic_gateway_relay_published_total",
            "Events published to the cloud broker.",
            &m.relay_published,
        ),
        (
            "clinic_gateway_relay_connects_total",
            "Successful connections to the cloud broker.",
            &m.relay_connects,
        ),
        (
            "clinic_gateway_commands_received_total",
            "Cloud commands received.",
            &m.commands_received,
        ),
        (
            "clinic_gateway_commands_refused_total",
            "Cloud commands refused as invalid.",
            &m.commands_refused,
        ),
    ];
    for (name, help, c) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            c.get()
        );
    }
    let h = &m.commit_latency;
    let name = "clinic_gateway_journal_commit_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Journal group-commit latency.\n# TYPE {name} histogram"
    );
    let mut cumulative = 0;
    for (i, bound) in BUCKETS.iter().enumerate() {
        cumulative += h.buckets[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let count = h.count.load(Ordering::Relaxed);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    let name = "clinic_gateway_backlog_rows";
    let _ = writeln!(
        out,
        "# HELP {name} Outbox rows per destination and state.\n# TYPE {name} gauge"
    );
    for (dest, state, n) in backlog {
        let _ = writeln!(
            out,
            "{name}{{destination=\"{}\",state=\"{state}\"}} {n}",
            escape(dest)
        );
    }
    out
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
