//! Text for the server-rendered pages: HTML escaping (the crate's one, [`crate::markup`]) and
//! ages. A leaf the page, its sections and the previews share.

pub(super) use crate::markup::escape as esc;

/// "3 min ago" style age of a millisecond timestamp.
pub(super) fn age(now: i64, at: i64) -> String {
    let s = ((now - at) / 1000).max(0);
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}
