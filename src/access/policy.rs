//! Who may do what: the staff roles, the route groups and the table putting every route in
//! one, the scopes of API keys, the lockout's growing delay and the `Host`/`Origin` checks.
//! Pure: no I/O, no clock.

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
    /// The clinic's reports (counts and money, never a patient).
    Manager,
    /// Everything, including users, dead-letter replay and reload.
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::FrontDesk,
        Role::Clinical,
        Role::Facilities,
        Role::Manager,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::FrontDesk => "front_desk",
            Role::Clinical => "clinical",
            Role::Facilities => "facilities",
            Role::Manager => "manager",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A set of routes that belong together: what a role is granted, and what an API key can be
/// scoped to when a role would give a system more than it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    /// The queue board and its actions, ticket previews.
    Queue,
    /// The rooms list: where patients are called to, so every staff role sees it.
    RoomsList,
    /// Changing a room's state (holds).
    Rooms,
    /// Staff notices and their acknowledgement.
    Notices,
    /// EHR status, conflicts and patient details.
    Ehr,
    /// Actors, backlog, status and the dead-letter list.
    Operations,
    /// The Prometheus scrape.
    Metrics,
    /// Integration inputs: `/api/v1/events` and HL7 outbound.
    Integration,
    /// The reports: no-shows, queue efficiency, revenue, appointments.
    Reports,
    /// Dead-letter replay, reload, the audit, and every route missing from the table.
    Administration,
}

impl Group {
    pub const ALL: [Group; 10] = [
        Group::Queue,
        Group::RoomsList,
        Group::Rooms,
        Group::Notices,
        Group::Ehr,
        Group::Operations,
        Group::Metrics,
        Group::Integration,
        Group::Reports,
        Group::Administration,
    ];

    /// The group's name in a key's scope; no group is named like a role, so a scope reads
    /// one way only.
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Queue => "queue",
            Group::RoomsList => "rooms_list",
            Group::Rooms => "rooms",
            Group::Notices => "notices",
            Group::Ehr => "ehr",
            Group::Operations => "operations",
            Group::Metrics => "metrics",
            Group::Integration => "integration",
            Group::Reports => "reports",
            Group::Administration => "administration",
        }
    }

    pub fn parse(s: &str) -> Option<Group> {
        Group::ALL.into_iter().find(|g| g.as_str() == s)
    }

    /// The roles granted the group besides admins, who are granted every group.
    fn roles(self) -> &'static [Role] {
        const DESK: &[Role] = &[Role::FrontDesk, Role::Clinical];
        const CLINICAL: &[Role] = &[Role::Clinical];
        const FACILITIES: &[Role] = &[Role::Facilities];
        const MANAGER: &[Role] = &[Role::Manager];
        const ALL_STAFF: &[Role] = &[Role::FrontDesk, Role::Clinical, Role::Facilities];
        match self {
            Group::Queue => DESK,
            Group::RoomsList => ALL_STAFF,
            Group::Rooms => FACILITIES,
            Group::Notices | Group::Ehr => CLINICAL,
            Group::Operations | Group::Metrics => FACILITIES,
            Group::Reports => MANAGER,
            Group::Integration | Group::Administration => &[],
        }
    }
}

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// Anyone, logged in or not: the login itself and the liveness probe.
    Public,
    /// Any logged-in staff member; no API key, as these routes are a browser's (the page,
    /// the session, logout).
    Staff,
    /// Staff whose role is granted the group, and keys scoped to it.
    Group(Group),
    /// SMART backend clients with a bearer token from `/oauth/token` only: the FHIR API,
    /// whose handlers check the token's scopes per resource type. No staff role and no API
    /// key reaches it: staff see patients on the page, where each view is audited as theirs.
    Smart,
}

use Group::*;

/// Every route of the page and API: method (`*`: any), path pattern (`{}` is one segment),
/// who may; the first entry that matches decides.
/// A route missing here is in [`Group::Administration`], so a new route is closed until
/// someone opens it.
const ROUTES: &[(&str, &str, Allowed)] = &[
    ("POST", "/login", Allowed::Public),
    ("GET", "/login", Allowed::Public),
    ("GET", "/login/oidc", Allowed::Public),
    ("GET", "/login/oidc/callback", Allowed::Public),
    ("GET", "/api/v1/health", Allowed::Public),
    ("POST", "/oauth/token", Allowed::Public),
    ("GET", "/.well-known/smart-configuration", Allowed::Public),
    (
        "GET",
        "/fhir/R4/.well-known/smart-configuration",
        Allowed::Public,
    ),
    ("GET", "/fhir/R4/metadata", Allowed::Public),
    // Every method: the FHIR API answers the ones it does not serve with its own 405.
    ("*", "/fhir/R4/{}", Allowed::Smart),
    ("*", "/fhir/R4/{}/{}", Allowed::Smart),
    ("GET", "/passkey.js", Allowed::Public),
    ("POST", "/login/passkey/options", Allowed::Public),
    ("POST", "/login/passkey", Allowed::Public),
    ("POST", "/passkeys/options", Allowed::Staff),
    ("POST", "/passkeys", Allowed::Staff),
    ("POST", "/logout", Allowed::Staff),
    ("GET", "/api/v1/session", Allowed::Staff),
    ("GET", "/", Allowed::Staff),
    ("GET", "/api/v1/queues", Allowed::Group(Queue)),
    ("POST", "/api/v1/queues/{}/check-in", Allowed::Group(Queue)),
    ("POST", "/api/v1/queues/{}/call-next", Allowed::Group(Queue)),
    ("POST", "/api/v1/queue-entries/{}/{}", Allowed::Group(Queue)),
    (
        "GET",
        "/api/v1/queue-entries/{}/eligibility",
        Allowed::Group(Queue),
    ),
    (
        "POST",
        "/api/v1/queue-entries/{}/eligibility/override",
        Allowed::Group(Queue),
    ),
    (
        "GET",
        "/api/v1/queue-entries/{}/payments",
        Allowed::Group(Queue),
    ),
    (
        "POST",
        "/api/v1/queue-entries/{}/payments/{}/pay-later",
        Allowed::Group(Queue),
    ),
    ("GET", "/api/v1/payments/left-open", Allowed::Group(Queue)),
    ("POST", "/payments/cancel", Allowed::Group(Queue)),
    (
        "POST",
        "/api/v1/payments/left-open/{}/cancel",
        Allowed::Group(Queue),
    ),
    // A processor's webhook has no key or session: its signature (checked by the handler
    // against the processor's signing secret) is what admits it.
    ("POST", "/api/v1/payments/webhook/{}", Allowed::Public),
    (
        "GET",
        "/api/v1/queue-entries/{}/visit",
        Allowed::Group(Queue),
    ),
    ("GET", "/printers/{}/preview", Allowed::Group(Queue)),
    // Receipts per ticket: statuses, channels and providers, never a number or address.
    ("GET", "/api/v1/notifications", Allowed::Group(Queue)),
    ("GET", "/messaging", Allowed::Group(Queue)),
    ("GET", "/api/v1/rooms", Allowed::Group(RoomsList)),
    ("POST", "/api/v1/rooms/{}/state", Allowed::Group(Rooms)),
    ("POST", "/rooms/state", Allowed::Group(Rooms)),
    ("GET", "/api/v1/notices", Allowed::Group(Notices)),
    (
        "POST",
        "/api/v1/notices/{}/acknowledge",
        Allowed::Group(Notices),
    ),
    ("POST", "/notices/acknowledge", Allowed::Group(Notices)),
    // Clinical alerts go with the notices: clinical staff and admins, never the front desk.
    ("GET", "/api/v1/alerts", Allowed::Group(Notices)),
    ("POST", "/api/v1/alerts/{}/ack", Allowed::Group(Notices)),
    ("POST", "/alerts/ack", Allowed::Group(Notices)),
    // Specimens and the delays they cause: clinical staff and admins, never the front desk.
    ("GET", "/api/v1/specimens", Allowed::Group(Notices)),
    ("GET", "/api/v1/fhir/status", Allowed::Group(Ehr)),
    ("GET", "/api/v1/fhir/conflicts", Allowed::Group(Ehr)),
    (
        "POST",
        "/api/v1/fhir/conflicts/{}/resolve",
        Allowed::Group(Ehr),
    ),
    ("POST", "/fhir/conflicts/resolve", Allowed::Group(Ehr)),
    ("GET", "/api/v1/fhir/patients/{}", Allowed::Group(Ehr)),
    ("GET", "/fhir/conflicts/{}", Allowed::Group(Ehr)),
    (
        "POST",
        "/api/v1/fhir/patients/{}/demographics",
        Allowed::Group(Ehr),
    ),
    ("GET", "/api/v1/actors", Allowed::Group(Operations)),
    ("GET", "/api/v1/backlog", Allowed::Group(Operations)),
    ("GET", "/api/v1/status", Allowed::Group(Operations)),
    ("GET", "/api/v1/dlq", Allowed::Group(Operations)),
    // Messaging costs per provider: counts and prices, no patient data.
    ("GET", "/api/v1/messaging/costs", Allowed::Group(Operations)),
    ("GET", "/metrics", Allowed::Group(Metrics)),
    // Counts, durations and money per queue and appointment type: no patient in them.
    ("GET", "/api/v1/reports/{}", Allowed::Group(Reports)),
    ("GET", "/reports", Allowed::Group(Reports)),
    ("POST", "/api/v1/events", Allowed::Group(Integration)),
    ("POST", "/api/v1/hl7/outbound", Allowed::Group(Integration)),
    // Delivery receipts from messaging providers (Kannel's dlr-url, status callbacks).
    (
        "*",
        "/api/v1/messaging/receipts/{}",
        Allowed::Group(Integration),
    ),
    ("POST", "/api/v1/dlq/replay", Allowed::Group(Administration)),
    ("POST", "/dlq/replay", Allowed::Group(Administration)),
    ("POST", "/api/v1/reload", Allowed::Group(Administration)),
    ("GET", "/api/v1/audit", Allowed::Group(Administration)),
    ("POST", "/users/add", Allowed::Group(Administration)),
    ("POST", "/users/disable", Allowed::Group(Administration)),
    ("POST", "/users/reset", Allowed::Group(Administration)),
    ("POST", "/keys/add", Allowed::Group(Administration)),
    ("POST", "/keys/revoke", Allowed::Group(Administration)),
];

/// Whether `path` fits `pattern`, where `{}` is one non-empty segment.
pub(crate) fn matches(pattern: &str, path: &str) -> bool {
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
        .find(|(m, p, _)| (*m == method || *m == "*") && matches(p, path))
        .map_or(Allowed::Group(Administration), |(_, _, a)| *a)
}

/// Whether a staff member with `role` may use a route allowed to `who`.
pub fn permits(who: Allowed, role: Role) -> bool {
    match who {
        Allowed::Public | Allowed::Staff => true,
        Allowed::Smart => false,
        Allowed::Group(g) => role == Role::Admin || g.roles().contains(&role),
    }
}

/// Why a route shows patient data, recorded with every view of it (HL7 v3 PurposeOfUse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// Care of the patient in front of the staff member (`TREAT`).
    Treatment,
    /// Keeping the records right, such as settling an EHR conflict (`HOPERAT`).
    Operations,
}

/// Every route showing patient data, with why: a view on a route missing here is refused
/// rather than recorded without a purpose.
const PURPOSES: &[(&str, &str, Purpose)] = &[
    ("GET", "/api/v1/fhir/patients/{}", Purpose::Treatment),
    ("GET", "/api/v1/fhir/conflicts", Purpose::Operations),
    ("GET", "/fhir/conflicts/{}", Purpose::Operations),
];

/// Why `method path` shows patient data, if it is a route that does.
pub fn purpose(method: &str, path: &str) -> Option<Purpose> {
    PURPOSES
        .iter()
        .find(|(m, p, _)| *m == method && matches(p, path))
        .map(|(_, _, why)| *why)
}

/// What an API key may use: what a role may, or only the groups named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Role(Role),
    /// Sorted, without repeats.
    Groups(Vec<Group>),
}

impl Scope {
    /// A role's name, or group names separated by commas (`queue,metrics`).
    pub fn parse(text: &str) -> Option<Scope> {
        if let Some(role) = Role::parse(text) {
            return Some(Scope::Role(role));
        }
        let mut groups = text
            .split(',')
            .map(|g| Group::parse(g.trim()))
            .collect::<Option<Vec<_>>>()?;
        groups.sort();
        groups.dedup();
        Some(Scope::Groups(groups))
    }

    /// Whether a key of this scope may use a route allowed to `who`.
    pub fn permits(&self, who: Allowed) -> bool {
        match (who, self) {
            (Allowed::Public, _) => true,
            (Allowed::Staff | Allowed::Smart, _) => false,
            (Allowed::Group(_), Scope::Role(role)) => permits(who, *role),
            (Allowed::Group(g), Scope::Groups(groups)) => groups.contains(&g),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Role(role) => f.write_str(role.as_str()),
            Scope::Groups(groups) => {
                let names: Vec<&str> = groups.iter().map(|g| g.as_str()).collect();
                f.write_str(&names.join(","))
            }
        }
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
        assert!(!check("GET", "/api/v1/specimens", Role::FrontDesk));
        assert!(check("GET", "/api/v1/specimens", Role::Clinical));
        assert!(check("GET", "/api/v1/fhir/patients/p1", Role::Clinical));
        assert!(!check("GET", "/api/v1/fhir/patients/p1", Role::Facilities));
        assert!(check("GET", "/api/v1/backlog", Role::Facilities));
        assert!(!check("GET", "/api/v1/queues", Role::Facilities));
        assert!(!check("POST", "/api/v1/dlq/replay", Role::Facilities));
        assert!(check("POST", "/api/v1/dlq/replay", Role::Admin));
        assert!(check("GET", "/api/v1/queues", Role::Admin));
        for role in [Role::FrontDesk, Role::Clinical, Role::Facilities] {
            assert!(!check("POST", "/users/add", role));
            assert!(!check("POST", "/keys/revoke", role));
        }
        assert!(check("POST", "/users/reset", Role::Admin));
        assert!(check(
            "POST",
            "/api/v1/queue-entries/4/payments",
            Role::FrontDesk
        ));
        assert!(check(
            "GET",
            "/api/v1/queue-entries/4/payments",
            Role::FrontDesk
        ));
        assert!(!check(
            "GET",
            "/api/v1/queue-entries/4/payments",
            Role::Facilities
        ));
        assert!(check(
            "POST",
            "/api/v1/queue-entries/4/payments/9/pay-later",
            Role::FrontDesk
        ));
        assert!(check(
            "POST",
            "/api/v1/payments/left-open/k/cancel",
            Role::FrontDesk
        ));
        assert!(!check(
            "GET",
            "/api/v1/payments/left-open",
            Role::Facilities
        ));
        assert_eq!(
            allowed("POST", "/api/v1/payments/webhook/a"),
            Allowed::Public,
            "a processor's webhook is admitted by its signature"
        );
        assert_eq!(
            allowed("GET", "/api/v1/payments/webhook/a"),
            Allowed::Group(Administration)
        );
        for role in [Role::FrontDesk, Role::Clinical, Role::Facilities] {
            assert!(!check("GET", "/api/v1/reports/no-shows", role), "{role:?}");
            assert!(!check("GET", "/reports", role), "{role:?}");
        }
        for role in [Role::Manager, Role::Admin] {
            assert!(check("GET", "/api/v1/reports/no-shows", role), "{role:?}");
            assert!(check("GET", "/reports", role), "{role:?}");
        }
        assert!(!check("GET", "/api/v1/queues", Role::Manager));
    }

    #[test]
    fn patient_data_is_shown_for_a_purpose_and_to_clinical_staff_only() {
        for (method, path, _) in PURPOSES {
            let route = path.replace("{}", "7");
            assert_eq!(allowed(method, &route), Allowed::Group(Ehr), "{route}");
            assert!(!check(method, &route, Role::FrontDesk), "{route}");
            assert!(!check(method, &route, Role::Facilities), "{route}");
        }
        assert_eq!(
            purpose("GET", "/api/v1/fhir/patients/p1"),
            Some(Purpose::Treatment)
        );
        assert_eq!(
            purpose("GET", "/fhir/conflicts/3"),
            Some(Purpose::Operations)
        );
        assert_eq!(purpose("GET", "/api/v1/queues"), None);
    }

    #[test]
    fn unknown_routes_and_methods_are_admin_only() {
        let admin = Allowed::Group(Administration);
        assert_eq!(allowed("GET", "/api/v1/new-thing"), admin);
        assert_eq!(allowed("DELETE", "/api/v1/queues"), admin);
        assert_eq!(allowed("GET", "/api/v1/queues/x"), admin);
        assert_eq!(allowed("POST", "/api/v1/queues//check-in"), admin);
        assert_eq!(allowed("POST", "/login"), Allowed::Public);
    }

    #[test]
    fn a_scope_is_a_role_or_a_list_of_groups() {
        let scope = |text| Scope::parse(text).map(|s| s.to_string());
        assert_eq!(scope("facilities").as_deref(), Some("facilities"));
        assert_eq!(
            scope("metrics, queue,metrics").as_deref(),
            Some("queue,metrics")
        );
        assert_eq!(scope("metrics,nonsense"), None);
        assert_eq!(scope(""), None);
        for g in Group::ALL {
            assert_eq!(Role::parse(g.as_str()), None, "{g:?} reads as a role");
        }
    }

    #[test]
    fn a_key_reaches_its_scope_only_and_never_a_browser_route() {
        let key = |text, method, path| {
            Scope::parse(text)
                .expect("scope")
                .permits(allowed(method, path))
        };
        assert!(key("metrics", "GET", "/metrics"));
        assert!(!key("metrics", "GET", "/api/v1/backlog"));
        assert!(key("facilities", "GET", "/api/v1/backlog"));
        assert!(!key("facilities", "GET", "/api/v1/queues"));
        assert!(key("queue,ehr", "GET", "/api/v1/fhir/patients/p1"));
        assert!(key("admin", "GET", "/api/v1/new-thing"));
        assert!(!key("integration", "GET", "/api/v1/new-thing"));
        assert!(key("metrics", "GET", "/api/v1/health"));
        assert!(!key("admin", "GET", "/api/v1/session"));
        assert!(!key("admin", "GET", "/"));
        assert!(!key("admin", "GET", "/fhir/R4/Encounter"));
    }

    #[test]
    fn the_fhir_api_is_for_smart_clients_only_but_its_discovery_is_public() {
        assert_eq!(allowed("GET", "/fhir/R4/Encounter"), Allowed::Smart);
        assert_eq!(allowed("GET", "/fhir/R4/Patient/p1"), Allowed::Smart);
        assert_eq!(allowed("GET", "/fhir/R4/metadata"), Allowed::Public);
        assert_eq!(allowed("POST", "/oauth/token"), Allowed::Public);
        assert_eq!(allowed("POST", "/fhir/R4/Encounter"), Allowed::Smart);
        assert_eq!(
            allowed("GET", "/fhir/R4/a/b/c"),
            Allowed::Group(Administration)
        );
        assert!(!check("GET", "/fhir/R4/Encounter", Role::Admin));
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
