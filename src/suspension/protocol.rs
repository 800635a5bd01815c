//! When refused credentials come fast enough to suspend an integration: a sliding window of
//! refusal times. Pure: the caller gives the time.

use std::collections::VecDeque;

/// The refusals of the last `window_ms`; `limit` of them trip it.
#[derive(Debug)]
pub struct RefusalWindow {
    limit: usize,
    window_ms: i64,
    times: VecDeque<i64>,
}

impl RefusalWindow {
    pub fn new(limit: u32, window_ms: i64) -> RefusalWindow {
        RefusalWindow {
            limit: limit.max(1) as usize,
            window_ms,
            times: VecDeque::new(),
        }
    }

    /// Counts a refusal at `now_ms`; true when it makes `limit` within the window, after which
    /// counting starts again.
    pub fn refused(&mut self, now_ms: i64) -> bool {
        while self
            .times
            .front()
            .is_some_and(|&t| now_ms - t >= self.window_ms)
        {
            self.times.pop_front();
        }
        self.times.push_back(now_ms);
        if self.times.len() >= self.limit {
            self.times.clear();
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(limit: u32, window_ms: i64, times: &[i64]) -> Vec<bool> {
        let mut w = RefusalWindow::new(limit, window_ms);
        times.iter().map(|&t| w.refused(t)).collect()
    }

    #[test]
    fn the_limit_within_the_window_trips_it_once() {
        assert_eq!(
            check(3, 1000, &[0, 10, 20, 30]),
            [false, false, true, false]
        );
    }

    #[test]
    fn refusals_further_apart_than_the_window_never_trip_it() {
        assert_eq!(
            check(2, 1000, &[0, 1000, 2000, 3000]),
            [false, false, false, false]
        );
        assert_eq!(check(2, 1000, &[0, 1000, 1999]), [false, false, true]);
    }
}
