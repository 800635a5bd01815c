//! A circuit breaker per remote service (a messaging provider, a payment processor): pure
//! state, no clock and no I/O; its owner passes the time in and decides what a failure is.

/// A service's circuit breaker: opened by `failures` unavailable answers in a row, it keeps
/// requests away from the service for `open_ms`, then lets one through as a probe
/// (half-open): a taken probe closes it, a failed one opens it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Breaker {
    /// Requests go through; `failures` unavailable answers in a row so far.
    Closed { failures: u32 },
    /// No request is sent before `until` (ms).
    Open { until: i64 },
    /// One probe is out; until it answers, no other request is sent.
    HalfOpen,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker::Closed { failures: 0 }
    }
}

impl Breaker {
    /// Whether a request may be sent at `now`; an open breaker whose time is over lets this
    /// one through as its probe.
    pub fn admit(&mut self, now: i64) -> bool {
        match *self {
            Breaker::Closed { .. } => true,
            Breaker::Open { until } if now >= until => {
                *self = Breaker::HalfOpen;
                true
            }
            Breaker::Open { .. } | Breaker::HalfOpen => false,
        }
    }

    /// The service took a request, or refused it for the request's own sake: it works.
    pub fn success(&mut self) {
        *self = Breaker::Closed { failures: 0 };
    }

    /// The service was unavailable (an error, a timeout, throttling); answers whether this
    /// opened the breaker.
    pub fn failure(&mut self, now: i64, failures: u32, open_ms: i64) -> bool {
        match *self {
            Breaker::Closed { failures: n } if n + 1 < failures => {
                *self = Breaker::Closed { failures: n + 1 };
                false
            }
            _ => {
                *self = Breaker::Open {
                    until: now + open_ms,
                };
                true
            }
        }
    }

    /// The breaker's state for health and the page.
    pub fn as_str(&self) -> &'static str {
        match self {
            Breaker::Closed { .. } => "closed",
            Breaker::Open { .. } => "open",
            Breaker::HalfOpen => "half_open",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_breaker_opens_after_failures_in_a_row_and_probes_once_when_its_time_is_over() {
        let mut b = Breaker::default();
        assert!(!b.failure(0, 3, 1000));
        b.success();
        assert!(!b.failure(0, 3, 1000));
        assert!(!b.failure(0, 3, 1000));
        assert!(b.failure(10, 3, 1000), "the third in a row opens it");
        assert!(!b.admit(500));
        assert!(b.admit(1010), "its time is over: one probe");
        assert_eq!(b, Breaker::HalfOpen);
        assert!(!b.admit(1011), "no second message beside the probe");
        assert!(b.failure(1020, 3, 1000), "a failed probe opens it again");
        assert!(!b.admit(1500));
        assert!(b.admit(2020));
        b.success();
        assert!(b.admit(2021));
        assert_eq!(b.as_str(), "closed");
    }
}
