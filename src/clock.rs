//! The clinic's wall clock: its time zone (`[gateway] timezone`, an IANA name such as
//! `Europe/Zurich`; default the system's), which decides the clinic's day (a day's ticket
//! numbers, which appointments are today) and the local time printed on tickets, following
//! daylight saving time. Process-wide like the system clock: set at start and on reload.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use std::sync::{LazyLock, RwLock};

static ZONE: LazyLock<RwLock<TimeZone>> = LazyLock::new(|| RwLock::new(TimeZone::UTC));

/// The zone named by the config, or the system's when none is named; an unknown name is the
/// message for the config problem.
pub fn zone(name: Option<&str>) -> Result<TimeZone, String> {
    match name {
        Some(n) => TimeZone::get(n).map_err(|e| {
            format!("{n:?} is not a time zone this system knows (an IANA name such as \"Europe/Zurich\"): {e}")
        }),
        None => Ok(TimeZone::try_system().unwrap_or(TimeZone::UTC)),
    }
}

/// Makes `zone` the clinic's.
pub fn set(zone: TimeZone) {
    *ZONE.write().unwrap_or_else(|p| p.into_inner()) = zone;
}

/// The clinic's time zone.
pub fn current() -> TimeZone {
    ZONE.read().unwrap_or_else(|p| p.into_inner()).clone()
}

fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The clinic's offset from UTC in minutes at `ms` (ms since the epoch).
pub fn offset_min(ms: i64) -> i32 {
    current().to_offset(timestamp(ms)).seconds() / 60
}

/// The clinic's date (`YYYY-MM-DD`) at `ms`.
pub fn local_day(ms: i64) -> String {
    day_in(&current(), ms)
}

/// The date (`YYYY-MM-DD`) in `zone` at `ms`.
pub fn day_in(zone: &TimeZone, ms: i64) -> String {
    timestamp(ms).to_zoned(zone.clone()).date().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_offsets_follow_the_zone_and_its_daylight_saving() {
        let ny = zone(Some("America/New_York")).expect("known zone");
        let jan = 1_767_268_800_000; // 2026-01-01T12:00:00Z
        let jul = 1_782_907_200_000; // 2026-07-01T12:00:00Z
        assert_eq!(ny.to_offset(timestamp(jan)).seconds() / 60, -300);
        assert_eq!(ny.to_offset(timestamp(jul)).seconds() / 60, -240);
        assert!(zone(Some("Mars/Olympus_Mons")).is_err());
        let late = 1_767_311_400_000; // 2026-01-01T23:50:00Z
        assert_eq!(day_in(&ny, late), "2026-01-01");
        let tokyo = zone(Some("Asia/Tokyo")).expect("known zone");
        assert_eq!(day_in(&tokyo, late), "2026-01-02");
    }
}
