//! `[facility]`: the clinic's rooms and the rules that join sensors to building systems.

use crate::devices::value::Value;
use crate::settings::{self, Problem};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FacilityConfig {
    /// Rooms patients are called to, `[[facility.rooms]]`.
    #[serde(default)]
    pub rooms: Vec<RoomConfig>,
    /// Threshold rules, `[[facility.rules]]`.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// How often sensor values are read and the rules evaluated.
    #[serde(default = "default_evaluate_ms")]
    pub evaluate_interval_ms: u64,
}

fn default_evaluate_ms() -> u64 {
    1000
}

impl Default for FacilityConfig {
    fn default() -> Self {
        FacilityConfig {
            rooms: Vec::new(),
            rules: Vec::new(),
            evaluate_interval_ms: default_evaluate_ms(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoomConfig {
    /// The name staff and the queue use (`"room": "exam-1"`).
    pub name: String,
    /// Queues whose patients this room can take; empty: any queue.
    #[serde(default)]
    pub queues: Vec<String>,
    /// The `[[devices.occupancy.rooms]]` whose sensors show this room occupied; default: a room of
    /// the same name, if there is one.
    #[serde(default)]
    pub occupancy_room: Option<String>,
}

/// When any condition holds, `then` is written; when none does any more, `then.normal` is.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    pub when: Vec<ConditionConfig>,
    pub then: ActionConfig,
}

/// A reading crossing a threshold, with hysteresis: active from `above`, inactive again only at
/// `below`, so a value hovering at the threshold does not make the fans flap.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConditionConfig {
    /// People counted in a waiting area (`[[devices.occupancy.rooms]]` `area`).
    #[serde(default)]
    pub area: Option<String>,
    /// A device's point: a Modbus register or a BACnet object, by its configured name.
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub point: Option<String>,
    pub above: f64,
    pub below: f64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    pub device: String,
    pub point: String,
    /// Written when the rule becomes active.
    pub value: Value,
    /// Written when it is no longer active; absent: relinquished (BACnet), so that the
    /// building's own schedule takes over again. Required for Modbus, which has no priority
    /// array to relinquish to.
    #[serde(default)]
    pub normal: Option<Value>,
}

/// Where a condition reads its value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Area(String),
    Point { device: String, point: String },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Area(a) => write!(f, "area {a} people"),
            Source::Point { device, point } => write!(f, "{device} {point}"),
        }
    }
}

impl ConditionConfig {
    /// The source of a validated condition.
    pub fn source(&self) -> Source {
        match (&self.area, &self.device, &self.point) {
            (Some(a), _, _) => Source::Area(a.clone()),
            (None, Some(d), Some(p)) => Source::Point {
                device: d.clone(),
                point: p.clone(),
            },
            _ => Source::Area(String::new()),
        }
    }
}

impl RoomConfig {
    /// The occupancy room whose sensors speak for this room.
    pub fn sensor_room(&self) -> &str {
        self.occupancy_room.as_deref().unwrap_or(&self.name)
    }

    /// Whether a patient of `queue` may be sent here.
    pub fn serves(&self, queue: &str) -> bool {
        self.queues.is_empty() || self.queues.iter().any(|q| q == queue)
    }
}

impl FacilityConfig {
    pub fn evaluate_interval(&self) -> Duration {
        Duration::from_millis(self.evaluate_interval_ms)
    }

    /// Whether anything is configured (the facility actor runs only then).
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty() && self.rules.is_empty()
    }

    /// Every problem of `[facility]`; what it names of the devices is looked up in `devices`.
    pub fn validate(&self, devices: &Devices) -> Vec<Problem> {
        settings::collect(|bad| self.check(devices, bad))
    }

    fn check(&self, devices: &Devices, bad: &mut dyn FnMut(&str, String)) {
        if !(100..=60_000).contains(&self.evaluate_interval_ms) {
            bad(
                "facility.evaluate_interval_ms",
                "must be between 100 and 60000".into(),
            );
        }
        let Devices {
            occupancy_rooms,
            areas,
            point,
        } = devices;
        let mut names = BTreeSet::new();
        for (i, room) in self.rooms.iter().enumerate() {
            let key = format!("facility.rooms[{i}]");
            if room.name.is_empty()
                || room.name.len() > 64
                || room.name.chars().any(char::is_control)
            {
                bad(
                    &format!("{key}.name"),
                    "1 to 64 printable characters".into(),
                );
            } else if !names.insert(room.name.as_str()) {
                bad(
                    &format!("{key}.name"),
                    format!("room {:?} is configured twice", room.name),
                );
            }
            for (j, q) in room.queues.iter().enumerate() {
                if !crate::queue::valid_queue_name(q) {
                    bad(
                        &format!("{key}.queues[{j}]"),
                        "a queue name: 1 to 32 letters, digits, '-', '_'".into(),
                    );
                }
            }
            if let Some(o) = &room.occupancy_room
                && !occupancy_rooms.contains(o.as_str())
            {
                bad(
                    &format!("{key}.occupancy_room"),
                    format!("no [[devices.occupancy.rooms]] is named {o:?}"),
                );
            }
        }
        let mut rule_names = BTreeSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let key = format!("facility.rules[{i}]");
            if rule.name.is_empty()
                || rule.name.len() > 64
                || rule.name.chars().any(char::is_control)
            {
                bad(
                    &format!("{key}.name"),
                    "1 to 64 printable characters".into(),
                );
            } else if !rule_names.insert(rule.name.as_str()) {
                bad(
                    &format!("{key}.name"),
                    format!("rule {:?} is configured twice", rule.name),
                );
            }
            if rule.when.is_empty() {
                bad(
                    &format!("{key}.when"),
                    "needs at least one condition".into(),
                );
            }
            for (j, c) in rule.when.iter().enumerate() {
                let key = format!("{key}.when[{j}]");
                match (&c.area, &c.device, &c.point) {
                    (Some(a), None, None) => {
                        if !areas.contains(a.as_str()) {
                            bad(
                                &format!("{key}.area"),
                                format!("no [[devices.occupancy.rooms]] has area {a:?}"),
                            );
                        }
                    }
                    (None, Some(d), Some(p)) => {
                        if let Err(e) = point(d, p, false) {
                            bad(&format!("{key}.point"), e);
                        }
                    }
                    _ => bad(&key, "give either `area`, or `device` and `point`".into()),
                }
                // NaN compares false both ways, so it is refused too.
                if c.below.partial_cmp(&c.above) != Some(std::cmp::Ordering::Less) {
                    bad(&format!("{key}.below"), "must be below `above`".into());
                }
            }
            let a = &rule.then;
            match point(&a.device, &a.point, true) {
                Err(e) => bad(&format!("{key}.then.point"), e),
                Ok(p) => {
                    if a.normal.is_none() && !p.relinquish {
                        bad(
                            &format!("{key}.then.normal"),
                            "is required: a Modbus point has no priority array to relinquish to"
                                .into(),
                        );
                    }
                    let values =
                        std::iter::once(("value", a.value)).chain(a.normal.map(|n| ("normal", n)));
                    for (name, v) in values {
                        let fits = match v {
                            Value::Bool(_) => p.takes_bool,
                            Value::Number(n) => p.takes_number && n.is_finite(),
                        };
                        if !fits {
                            bad(
                                &format!("{key}.then.{name}"),
                                format!("must be {} for {} {}", p.expects, a.device, a.point),
                            );
                        }
                    }
                }
            }
        }
    }
}

/// What the facility's rules may name of the configured devices: the facility does not know
/// the device families' configs, whoever composes the sections answers for them.
pub struct Devices<'a> {
    /// Names of the `[[devices.occupancy.rooms]]`.
    pub occupancy_rooms: BTreeSet<&'a str>,
    /// Waiting areas of the `[[devices.occupancy.rooms]]`.
    pub areas: BTreeSet<&'a str>,
    /// The point `device`/`point` of a configured device; with `write`, only one the gateway
    /// may write.
    pub point: &'a dyn Fn(&str, &str, bool) -> Result<Point, String>,
}

/// What a configured device point accepts.
pub struct Point {
    pub takes_bool: bool,
    pub takes_number: bool,
    /// Writing "nothing" hands the point back (a BACnet priority array).
    pub relinquish: bool,
    /// How the accepted values are named in problems (`"a number"`).
    pub expects: &'static str,
}
