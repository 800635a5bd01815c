//! SMART App Launch v2 system scopes (`system/Encounter.rs`, `system/*.rs`, and the v1 form
//! `system/Encounter.read`): parsing, the grant of a requested set against a registered one,
//! and whether a set permits an interaction on a resource type. Pure: no I/O.
//!
//! Only system scopes exist here: a backend client acts for itself, never for a patient or a
//! user, so `patient/` and `user/` scopes are refused rather than read as something else.

use std::fmt;

/// What a FHIR interaction needs of a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interaction {
    /// `read` (and `vread`): the `r` permission.
    Read,
    /// `search`: the `s` permission.
    Search,
}

/// The v2 permissions in their required order (SMART v2 §3.1.1: `c r u d s`).
const LETTERS: [(char, u8); 5] = [('c', 1), ('r', 2), ('u', 4), ('d', 8), ('s', 16)];
const READ: u8 = 2;
const SEARCH: u8 = 16;
const ALL: u8 = 31;

/// One system scope: a resource type (none: `*`, every type) and its permissions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SmartScope {
    resource: Option<String>,
    perms: u8,
}

impl SmartScope {
    /// A scope's text, v2 (`system/Encounter.rs`) or v1 (`system/Encounter.read`, `.write`,
    /// `.*`); none for anything else, `patient/` and `user/` scopes included.
    pub fn parse(text: &str) -> Option<SmartScope> {
        let (resource, perms) = text.strip_prefix("system/")?.split_once('.')?;
        let resource = match resource {
            "*" => None,
            r if !r.is_empty()
                && r.starts_with(|c: char| c.is_ascii_uppercase())
                && r.chars().all(|c| c.is_ascii_alphanumeric()) =>
            {
                Some(r.to_string())
            }
            _ => return None,
        };
        let perms = match perms {
            // SMART v2 §3.1.2: v1 `read` is v2 `rs`, `write` is `cud`.
            "read" => READ | SEARCH,
            "write" => 1 | 4 | 8,
            "*" => ALL,
            letters => v2_perms(letters)?,
        };
        Some(SmartScope { resource, perms })
    }

    /// Whether the scope permits `interaction` on `resource`.
    pub fn permits(&self, resource: &str, interaction: Interaction) -> bool {
        let need = match interaction {
            Interaction::Read => READ,
            Interaction::Search => SEARCH,
        };
        self.resource.as_deref().is_none_or(|r| r == resource) && self.perms & need != 0
    }

    /// What of `self` (requested) `registered` grants: the narrower resource and the common
    /// permissions, if any.
    fn within(&self, registered: &SmartScope) -> Option<SmartScope> {
        let resource = match (&self.resource, &registered.resource) {
            (None, r) | (r, None) => r.clone(),
            (Some(a), Some(b)) if a == b => Some(a.clone()),
            _ => return None,
        };
        let perms = self.perms & registered.perms;
        (perms != 0).then_some(SmartScope { resource, perms })
    }
}

/// Permissions written as v2 letters, each at most once and in the order `cruds`.
fn v2_perms(letters: &str) -> Option<u8> {
    let mut perms = 0;
    let mut rest = LETTERS.iter();
    for c in letters.chars() {
        let (_, bit) = rest.by_ref().find(|(l, _)| *l == c)?;
        perms |= bit;
    }
    (perms != 0).then_some(perms)
}

impl fmt::Display for SmartScope {
    /// Always the v2 form, so that a granted scope reads one way whatever was asked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let letters: String = LETTERS
            .iter()
            .filter(|(_, bit)| self.perms & bit != 0)
            .map(|(l, _)| *l)
            .collect();
        write!(
            f,
            "system/{}.{letters}",
            self.resource.as_deref().unwrap_or("*")
        )
    }
}

/// A set of system scopes, as a space-separated string (RFC 6749 §3.3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes(Vec<SmartScope>);

impl Scopes {
    /// Every scope of `text`; none if one of them is not a system scope or there is none.
    pub fn parse(text: &str) -> Option<Scopes> {
        let scopes = text
            .split_ascii_whitespace()
            .map(SmartScope::parse)
            .collect::<Option<Vec<_>>>()?;
        (!scopes.is_empty()).then(|| Scopes::of(scopes))
    }

    fn of(mut scopes: Vec<SmartScope>) -> Scopes {
        scopes.sort();
        scopes.dedup();
        Scopes(scopes)
    }

    /// What of the requested scopes the registered ones grant (RFC 6749 §3.3 lets the server
    /// narrow a request); empty when nothing is.
    pub fn grant(&self, registered: &Scopes) -> Scopes {
        let granted = self
            .0
            .iter()
            .flat_map(|want| registered.0.iter().filter_map(|has| want.within(has)))
            .collect();
        Scopes::of(granted)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether one of the scopes permits `interaction` on `resource`.
    pub fn permits(&self, resource: &str, interaction: Interaction) -> bool {
        self.0.iter().any(|s| s.permits(resource, interaction))
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let texts: Vec<String> = self.0.iter().map(SmartScope::to_string).collect();
        f.write_str(&texts.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(requested: &str, registered: &str) -> String {
        let requested = Scopes::parse(requested).expect("requested");
        let registered = Scopes::parse(registered).expect("registered");
        requested.grant(&registered).to_string()
    }

    #[test]
    fn v2_and_v1_system_scopes_parse_and_read_back_as_v2() {
        let text = |t| SmartScope::parse(t).map(|s| s.to_string());
        assert_eq!(
            text("system/Encounter.rs").as_deref(),
            Some("system/Encounter.rs")
        );
        assert_eq!(
            text("system/Encounter.read").as_deref(),
            Some("system/Encounter.rs")
        );
        assert_eq!(text("system/*.cruds").as_deref(), Some("system/*.cruds"));
        assert_eq!(text("system/*.*").as_deref(), Some("system/*.cruds"));
        assert_eq!(
            text("system/Patient.r").as_deref(),
            Some("system/Patient.r")
        );
        for bad in [
            "system/Encounter.sr",
            "system/Encounter.rr",
            "system/Encounter.",
            "system/Encounter.x",
            "patient/Encounter.rs",
            "user/*.rs",
            "system/encounter.rs",
            "system/.rs",
            "launch",
        ] {
            assert_eq!(text(bad), None, "{bad}");
        }
        assert_eq!(Scopes::parse(""), None);
        assert_eq!(Scopes::parse("system/Encounter.rs openid"), None);
    }

    #[test]
    fn the_grant_is_what_both_the_request_and_the_registration_allow() {
        let registered = "system/Encounter.rs system/Patient.r";
        assert_eq!(
            check("system/Encounter.rs system/Patient.rs", registered),
            "system/Encounter.rs system/Patient.r"
        );
        assert_eq!(
            check("system/*.rs", registered),
            "system/Encounter.rs system/Patient.r"
        );
        assert_eq!(check("system/Flag.rs", registered), "");
        assert_eq!(check("system/Encounter.cud", registered), "");
        assert_eq!(check("system/Task.read", "system/*.rs"), "system/Task.rs");
    }

    #[test]
    fn reads_need_r_and_searches_need_s() {
        let scopes = Scopes::parse("system/Patient.r system/Encounter.s").expect("scopes");
        assert!(scopes.permits("Patient", Interaction::Read));
        assert!(!scopes.permits("Patient", Interaction::Search));
        assert!(scopes.permits("Encounter", Interaction::Search));
        assert!(!scopes.permits("Encounter", Interaction::Read));
        assert!(!scopes.permits("Flag", Interaction::Read));
        let all = Scopes::parse("system/*.rs").expect("scopes");
        assert!(all.permits("AuditEvent", Interaction::Search));
    }
}
