//! Token buckets: how many requests each client may make, and when one over its limit may try
//! again. A client has one bucket per lane; a request draws from the first of its lanes with a
//! token left, so a lane reserved for the critical routes stays full however a client floods
//! the others. Pure: the caller gives the time, and the HTTP side (`throttle.rs`) answers.

use std::collections::HashMap;

/// A sustained rate and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    /// The bucket's size: requests that may come at once after a quiet spell.
    pub burst: f64,
}

/// Which budget of a client a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Every route.
    General,
    /// Kept for check-in and calling patients, drawn before the general budget.
    Critical,
    /// Refused requests of one peer address.
    Refused,
}

impl Lane {
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::General => "general",
            Lane::Critical => "critical",
            Lane::Refused => "refused",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

impl Bucket {
    /// The bucket refilled up to `now`; a clock going back refills nothing.
    fn refilled(self, rate: Rate, now_ms: i64) -> Bucket {
        let elapsed = (now_ms - self.at_ms).max(0) as f64 / 1000.0;
        Bucket {
            tokens: (self.tokens + elapsed * rate.per_second).min(rate.burst),
            at_ms: now_ms.max(self.at_ms),
        }
    }

    /// ms until the bucket holds a whole token.
    fn wait_ms(self, rate: Rate) -> f64 {
        (1.0 - self.tokens).max(0.0) / rate.per_second * 1000.0
    }
}

/// What a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within its limits: served.
    Pass,
    /// Over: refused, to try again after this many seconds (at least 1). `audit` is true for
    /// the first refusal of the client in an audit window, so that a flood leaves one record.
    Over { retry_after_secs: u64, audit: bool },
}

/// Above this many buckets, the full ones (clients quiet long enough to have their whole
/// burst back) are forgotten: a bucket forgotten full is the same as a new one.
const MAX_BUCKETS: usize = 4096;

/// Every client's buckets and when each was last audited over its limit.
#[derive(Debug)]
pub struct Limiter {
    buckets: HashMap<(String, Lane), Bucket>,
    audited: HashMap<String, i64>,
    audit_window_ms: i64,
    /// The longest any configured bucket takes to fill from empty: a bucket unused for as
    /// long is full.
    fill_ms: i64,
}

impl Limiter {
    /// A limiter auditing a client over its limit at most once per `audit_window_ms`, whose
    /// buckets fill from empty in at most `fill_ms`.
    pub fn new(audit_window_ms: i64, fill_ms: i64) -> Limiter {
        Limiter {
            buckets: HashMap::new(),
            audited: HashMap::new(),
            audit_window_ms,
            fill_ms,
        }
    }

    /// Draws one token for `client` at `now_ms` from the first of `lanes` that has one.
    pub fn check(&mut self, client: &str, lanes: &[(Lane, Rate)], now_ms: i64) -> Verdict {
        if self.buckets.len() >= MAX_BUCKETS {
            self.forget_full(now_ms);
        }
        let mut wait_ms = f64::INFINITY;
        for &(lane, rate) in lanes {
            let full = Bucket {
                tokens: rate.burst,
                at_ms: now_ms,
            };
            let bucket = self
                .buckets
                .entry((client.to_string(), lane))
                .or_insert(full);
            *bucket = bucket.refilled(rate, now_ms);
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
                return Verdict::Pass;
            }
            wait_ms = wait_ms.min(bucket.wait_ms(rate));
        }
        let retry_after_secs = if wait_ms.is_finite() {
            ((wait_ms / 1000.0).ceil() as u64).max(1)
        } else {
            1
        };
        let audit = match self.audited.get(client) {
            Some(&at) if now_ms - at < self.audit_window_ms => false,
            _ => {
                self.audited.insert(client.to_string(), now_ms);
                true
            }
        };
        Verdict::Over {
            retry_after_secs,
            audit,
        }
    }

    fn forget_full(&mut self, now_ms: i64) {
        let fill = self.fill_ms;
        self.buckets.retain(|_, b| now_ms - b.at_ms < fill);
        let window = self.audit_window_ms;
        self.audited.retain(|_, at| now_ms - *at < window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOW: Rate = Rate {
        per_second: 1.0,
        burst: 3.0,
    };
    const RESERVED: Rate = Rate {
        per_second: 0.5,
        burst: 2.0,
    };

    /// The verdicts of `client` asking at each of `times` (ms).
    fn check(
        limiter: &mut Limiter,
        client: &str,
        lanes: &[(Lane, Rate)],
        times: &[i64],
    ) -> Vec<Verdict> {
        times
            .iter()
            .map(|&t| limiter.check(client, lanes, t))
            .collect()
    }

    fn over(secs: u64, audit: bool) -> Verdict {
        Verdict::Over {
            retry_after_secs: secs,
            audit,
        }
    }

    #[test]
    fn a_burst_passes_then_the_rate_refills_one_token_at_a_time() {
        let mut l = Limiter::new(60_000, 3_000);
        let lanes = [(Lane::General, SLOW)];
        let got = check(&mut l, "key:a", &lanes, &[0, 0, 0, 0, 500, 1000, 1000]);
        use Verdict::Pass;
        assert_eq!(
            got,
            [
                Pass,
                Pass,
                Pass,
                over(1, true),
                over(1, false),
                Pass,
                over(1, false)
            ]
        );
    }

    #[test]
    fn each_client_has_its_own_bucket() {
        let mut l = Limiter::new(60_000, 3_000);
        let lanes = [(Lane::General, SLOW)];
        check(&mut l, "key:flood", &lanes, &[0; 10]);
        assert_eq!(l.check("key:calm", &lanes, 0), Verdict::Pass);
    }

    #[test]
    fn the_critical_lane_is_left_when_the_general_one_is_spent() {
        let mut l = Limiter::new(60_000, 3_000);
        let general = [(Lane::General, SLOW)];
        let critical = [(Lane::Critical, RESERVED), (Lane::General, SLOW)];
        check(&mut l, "key:kiosk", &general, &[0; 5]);
        assert_eq!(l.check("key:kiosk", &general, 0), over(1, false));
        assert_eq!(l.check("key:kiosk", &critical, 0), Verdict::Pass);
        assert_eq!(l.check("key:kiosk", &critical, 0), Verdict::Pass);
        assert_eq!(l.check("key:kiosk", &critical, 0), over(1, false));
        // The reserved lane refills at its own rate: its token is 2 s away, the general 1 s.
        assert_eq!(l.check("key:kiosk", &critical, 100), over(1, false));
    }

    #[test]
    fn retry_after_is_the_wait_for_a_whole_token_in_seconds() {
        let mut l = Limiter::new(60_000, 3_000);
        let slow = [(
            Lane::General,
            Rate {
                per_second: 0.1,
                burst: 1.0,
            },
        )];
        assert_eq!(l.check("p", &slow, 0), Verdict::Pass);
        assert_eq!(l.check("p", &slow, 2_500), over(8, true));
    }

    #[test]
    fn a_client_over_its_limit_is_audited_once_per_window() {
        let mut l = Limiter::new(10_000, 3_000);
        let lanes = [(Lane::Refused, SLOW)];
        let peer = "peer:10.0.0.9";
        let got = check(&mut l, peer, &lanes, &[0, 0, 0, 0, 0, 9_999, 9_999, 9_999]);
        use Verdict::Pass;
        let first = [Pass, Pass, Pass, over(1, true), over(1, false)];
        assert_eq!(got[..5], first);
        assert_eq!(l.check(peer, &lanes, 9_999), over(1, false));
        assert_eq!(l.check(peer, &lanes, 10_000), over(1, true));
    }

    #[test]
    fn a_clock_going_back_refills_nothing() {
        let mut l = Limiter::new(60_000, 3_000);
        let lanes = [(Lane::General, SLOW)];
        check(&mut l, "c", &lanes, &[5_000, 5_000, 5_000]);
        assert_eq!(l.check("c", &lanes, 0), over(1, true));
    }

    #[test]
    fn many_quiet_clients_are_forgotten_not_hoarded() {
        let mut l = Limiter::new(1_000, 3_000);
        let lanes = [(Lane::General, SLOW)];
        for i in 0..MAX_BUCKETS {
            l.check(&format!("peer:{i}"), &lanes, 0);
        }
        l.check("late", &lanes, 10_000);
        assert_eq!(l.buckets.len(), 1);
    }
}
