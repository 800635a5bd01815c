//! Who may do what: the staff roles, the table of routes each role may use, the lockout's
//! growing delay and the `Host`/`Origin` checks. Pure: no I/O, no clock.

use serde::{Deserialize, Serialize};

/// A staff member's role. Each role may use what the one before it may, except facilities,
/// which has the building's side only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The queue board and its actions.
    FrontDesk,
    /// The front desk's routes, notices, EHR conflicts and patient details.
    Clinical,
    /// Devices, rooms, rules and the backlog.
    Facilities,
    /// Everything, including users, dead-letter replay and reload.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::FrontDesk,
        Role::Clinical,
        Role::Facilities,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::FrontDesk => "front_desk",
            Role::Clinical => "clinical",
            Role::Facilities => "facilities",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// Anyone, logged in or not: the login itself and the liveness probe.
    Public,
    /// Any logged-in staff member.
    Staff,
    /// Staff with one of these roles (admins always may).
    Roles(&'static [Role]),
}

const DESK: &[Role] = &[Role::FrontDesk, Role::Clinical];
const CLINICAL: &[Role] = &[Role::Clinical];
const FACILITIES: &[Role] = &[Role::Facilities];
const ALL_STAFF: &[Role] = &[Role::FrontDesk, Role::Clinical, Role::Facilities];
const ADMIN: &[Role] = &[];

/// Every route of the page and API: method, path pattern (`{}` is one segment), who may.
/// A route missing here is admin-only, so a new route is closed until someone opens it.
const ROUTES: &[(&str, &str, Allowed)] = &[
    ("POST", "/login", Allowed::Public),
    ("GET", "/login", Allowed::Public),
    ("GET", "/api/v1/health", Allowed::Public),
    ("POST", "/logout", Allowed::Staff),
    ("GET", "/api/v1/session", Allowed::Staff),
    ("GET", "/", Allowed::Staff),
    // The queue board and its actions.
    ("GET", "/api/v1/queues", Allowed::Roles(DESK)),
    ("POST", "/api/v1/queues/{}/check-in", Allowed::Roles(DESK)),
    ("POST", "/api/v1/queues/{}/call-next", Allowed::Roles(DESK)),
    ("POST", "/api/v1/queue-entries/{}/{}", Allowed::Roles(DESK)),
    ("GET", "/printers/{}/preview", Allowed::Roles(DESK)),
    // Rooms are where patients are called to: everyone sees them, facilities change them.
    ("GET", "/api/v1/rooms", Allowed::Roles(ALL_STAFF)),
    ("POST", "/api/v1/rooms/{}/state", Allowed::Roles(FACILITIES)),
    ("POST", "/rooms/state", Allowed::Roles(FACILITIES)),
    // Clinical: notices, alerts, EHR conflicts, patient details.
    ("GET", "/api/v1/notices", Allowed::Roles(CLINICAL)),
    (
        "POST",
        "/api/v1/notices/{}/acknowledge",
        Allowed::Roles(CLINICAL),
    ),
    ("POST", "/notices/acknowledge", Allowed::Roles(CLINICAL)),
    ("GET", "/api/v1/fhir/status", Allowed::Roles(CLINICAL)),
    ("GET", "/api/v1/fhir/conflicts", Allowed::Roles(CLINICAL)),
    (
        "POST",
        "/api/v1/fhir/conflicts/{}/resolve",
        Allowed::Roles(CLINICAL),
    ),
    ("POST", "/fhir/conflicts/resolve", Allowed::Roles(CLINICAL)),
    ("GET", "/api/v1/fhir/patients/{}", Allowed::Roles(CLINICAL)),
    (
        "POST",
        "/api/v1/fhir/patients/{}/demographics",
        Allowed::Roles(CLINICAL),
    ),
    // Facilities: devices, rules, backlog.
    ("GET", "/api/v1/actors", Allowed::Roles(FACILITIES)),
    ("GET", "/api/v1/backlog", Allowed::Roles(FACILITIES)),
    ("GET", "/api/v1/status", Allowed::Roles(FACILITIES)),
    ("GET", "/api/v1/dlq", Allowed::Roles(FACILITIES)),
    ("GET", "/metrics", Allowed::Roles(FACILITIES)),
    // Admin: dead-letter replay, reload, the audit, integration inputs.
    ("POST", "/api/v1/dlq/replay", Allowed::Roles(ADMIN)),
    ("POST", "/dlq/replay", Allowed::Roles(ADMIN)),
    ("POST", "/api/v1/reload", Allowed::Roles(ADMIN)),
    ("GET", "/api/v1/audit", Allowed::Roles(ADMIN)),
    ("POST", "/api/v1/events", Allowed::Roles(ADMIN)),
    ("POST", "/api/v1/hl7/outbound", Allowed::Roles(ADMIN)),
];

fn matches(pattern: &str, path: &str) -> bool {
    let mut want = pattern.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some("{}"), Some(seg)) if !seg.is_empty() => {}
            (Some(w), Some(g)) if w == g => {}
            _ => return false,
        }
    }
}

/// Who may use `method path`; admin-only for anything not in the table.
pub fn allowed(method: &str, path: &str) -> Allowed {
    ROUTES
        .iter()
        .find(|(m, p, _)| *m == method && matches(p, path))
        .map_or(Allowed::Roles(ADMIN), |(_, _, a)| *a)
}

/// Whether a staff member with `role` may use a route allowed to `who`.
pub fn permits(who: Allowed, role: Role) -> bool {
    match who {
        Allowed::Public | Allowed::Staff => true,
        Allowed::Roles(roles) => role == Role::Admin || roles.contains(&role),
    }
}

/// Whether a method changes state, and so needs the session's CSRF token.
pub fn changes_state(method: &str) -> bool {
    !matches!(method, "GET" | "HEAD" | "OPTIONS")
}

/// How long an account stays locked after its `failures`-th failed login in a row: nothing
/// below `after`, then `initial_secs` doubling with each further failure, up to `max_secs`.
pub fn lock_secs(failures: u32, after: u32, initial_secs: u64, max_secs: u64) -> u64 {
    if failures < after {
        return 0;
    }
    let doublings = (failures - after).min(32);
    initial_secs.saturating_mul(1u64 << doublings).min(max_secs)
}

/// The host name of a `Host` header, without its port (`[::1]:8088` gives `[::1]`).
pub fn host_name(header: &str) -> &str {
    if header.starts_with('[') {
        return header.find(']').map_or(header, |end| &header[..=end]);
    }
    header.rsplit_once(':').map_or(header, |(name, _)| name)
}

/// Whether a `Host` header names one of the allowed hosts (case aside).
pub fn host_allowed(header: &str, allowed: &[String]) -> bool {
    let name = host_name(header);
    allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// Whether a state-changing request's `Origin` (when the browser sent one) is this very
/// host: a page from anywhere else must not act through a staff member's session.
pub fn origin_allowed(origin: Option<&str>, host: &str) -> bool {
    match origin {
        None => true,
        Some(o) => o
            .strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"))
            .is_some_and(|rest| rest.eq_ignore_ascii_case(host)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: &str, path: &str, role: Role) -> bool {
        permits(allowed(method, path), role)
    }

    #[test]
    fn roles_reach_their_own_routes_only() {
        assert!(check("POST", "/api/v1/queues/gp/check-in", Role::FrontDesk));
        assert!(check(
            "POST",
            "/api/v1/queue-entries/4/call",
            Role::Clinical
        ));
        assert!(!check("GET", "/api/v1/notices", Role::FrontDesk));
        assert!(check("GET", "/api/v1/fhir/patients/p1", Role::Clinical));
        assert!(!check("GET", "/api/v1/fhir/patients/p1", Role::Facilities));
        assert!(check("GET", "/api/v1/backlog", Role::Facilities));
        assert!(!check("GET", "/api/v1/queues", Role::Facilities));
        assert!(!check("POST", "/api/v1/dlq/replay", Role::Facilities));
        assert!(check("POST", "/api/v1/dlq/replay", Role::Admin));
        assert!(check("GET", "/api/v1/queues", Role::Admin));
    }

    #[test]
    fn unknown_routes_and_methods_are_admin_only() {
        assert_eq!(allowed("GET", "/api/v1/new-thing"), Allowed::Roles(ADMIN));
        assert_eq!(allowed("DELETE", "/api/v1/queues"), Allowed::Roles(ADMIN));
        assert_eq!(allowed("GET", "/api/v1/queues/x"), Allowed::Roles(ADMIN));
        assert_eq!(
            allowed("POST", "/api/v1/queues//check-in"),
            Allowed::Roles(ADMIN)
        );
        assert_eq!(allowed("POST", "/login"), Allowed::Public);
    }

    #[test]
    fn lock_grows_from_the_threshold_and_stops_at_the_cap() {
        let lock = |n| lock_secs(n, 3, 30, 600);
        assert_eq!((lock(2), lock(3), lock(4), lock(5)), (0, 30, 60, 120));
        assert_eq!((lock(9), lock(u32::MAX)), (600, 600));
    }

    #[test]
    fn hosts_are_compared_without_port() {
        let allowed = vec!["127.0.0.1".to_string(), "[::1]".into(), "gw.clinic".into()];
        assert!(host_allowed("127.0.0.1:8088", &allowed));
        assert!(host_allowed("[::1]:8088", &allowed));
        assert!(host_allowed("GW.clinic", &allowed));
        assert!(!host_allowed("evil.example:8088", &allowed));
        assert!(!host_allowed("127.0.0.1.evil.example", &allowed));
    }

    #[test]
    fn only_this_hosts_origin_may_change_state() {
        assert!(origin_allowed(None, "127.0.0.1:8088"));
        assert!(origin_allowed(
            Some("http://127.0.0.1:8088"),
            "127.0.0.1:8088"
        ));
        assert!(!origin_allowed(
            Some("http://evil.example"),
            "127.0.0.1:8088"
        ));
        assert!(!origin_allowed(Some("null"), "127.0.0.1:8088"));
    }
}
