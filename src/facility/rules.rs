//! The facility's decisions, pure: what state a room is in, which room a patient may be sent
//! to, and when a threshold rule turns on or off. The actor feeds them readings and does the I/O.

use super::config::{RoomConfig, RuleConfig};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Why staff (or the cloud) took a room out of use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    NeedsCleaning,
    OutOfService,
}

impl Hold {
    pub fn as_str(self) -> &'static str {
        match self {
            Hold::NeedsCleaning => "needs_cleaning",
            Hold::OutOfService => "out_of_service",
        }
    }

    pub fn parse(s: &str) -> Option<Hold> {
        [Hold::NeedsCleaning, Hold::OutOfService]
            .into_iter()
            .find(|h| h.as_str() == s)
    }
}

/// A state staff or the cloud set on a room: a hold, or `in_service` (`None`) to lift it.
pub fn parse_room_state(s: &str) -> Result<Option<Hold>, String> {
    match s {
        "in_service" => Ok(None),
        other => Hold::parse(other).map(Some).ok_or_else(|| {
            format!(
                "unknown room state {other:?}; one of needs_cleaning, out_of_service, in_service"
            )
        }),
    }
}

/// A room held out of use, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoomHold {
    pub room: String,
    pub hold: Hold,
    pub reason: Option<String>,
    pub by: String,
    pub at: i64,
}

/// What a room can be used for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomStatus {
    Available,
    Occupied,
    NeedsCleaning,
    OutOfService,
}

/// A hold outranks the sensors: a room being cleaned is not available even when it is empty.
/// A room whose sensors never reported counts as free, so a clinic without sensors still works.
pub fn room_status(hold: Option<Hold>, occupied: Option<bool>) -> RoomStatus {
    match (hold, occupied) {
        (Some(Hold::OutOfService), _) => RoomStatus::OutOfService,
        (Some(Hold::NeedsCleaning), _) => RoomStatus::NeedsCleaning,
        (None, Some(true)) => RoomStatus::Occupied,
        (None, _) => RoomStatus::Available,
    }
}

/// The first room (in configuration order) that serves `queue`, is available, and has no patient
/// called to it or in it.
pub fn pick_room<'a>(
    rooms: &'a [RoomConfig],
    status: &BTreeMap<String, RoomStatus>,
    in_use: &BTreeSet<String>,
    queue: &str,
) -> Option<&'a str> {
    rooms
        .iter()
        .filter(|r| r.serves(queue) && !in_use.contains(&r.name))
        .find(|r| status.get(&r.name) == Some(&RoomStatus::Available))
        .map(|r| r.name.as_str())
}

/// One rule's state: which of its conditions hold, and what was last written for it.
#[derive(Debug, Clone, Default)]
pub struct RuleState {
    conditions: Vec<bool>,
    /// The state whose setting the device confirmed; `None` before the first write.
    applied: Option<bool>,
    /// A write is under way; no second one is started.
    writing: bool,
    failures: u32,
    retry_at: Option<Instant>,
    pub last_error: Option<String>,
    /// The values last observed, one per condition (`None`: no reading).
    inputs: Vec<Option<f64>>,
}

/// The longest wait between attempts to write a rule's setting to a device that refuses it.
const MAX_RETRY: Duration = Duration::from_secs(60);

impl RuleState {
    pub fn new(rule: &RuleConfig) -> RuleState {
        RuleState {
            conditions: vec![false; rule.when.len()],
            ..RuleState::default()
        }
    }

    /// Any condition holds.
    pub fn active(&self) -> bool {
        self.conditions.iter().any(|c| *c)
    }

    /// What the device was last confirmed to hold.
    pub fn applied(&self) -> Option<bool> {
        self.applied
    }

    /// The values the rule last evaluated, one per condition.
    pub fn inputs(&self) -> &[Option<f64>] {
        &self.inputs
    }

    /// Takes the latest values (one per condition; `None` = no reading, the condition keeps
    /// its state) and tells whether the rule turned on or off.
    pub fn observe(&mut self, rule: &RuleConfig, values: &[Option<f64>]) -> bool {
        let before = self.active();
        self.inputs = values.to_vec();
        for ((held, c), v) in self.conditions.iter_mut().zip(&rule.when).zip(values) {
            match v {
                Some(v) if !*held && *v >= c.above => *held = true,
                Some(v) if *held && *v <= c.below => *held = false,
                _ => {}
            }
        }
        before != self.active()
    }

    /// The state to write now, if the device does not hold it yet and no write or back-off is
    /// pending. At start (`applied` unknown) the current state is written either way, so an
    /// override left by a gateway that stopped while the rule was active is undone.
    pub fn due(&self, now: Instant) -> Option<bool> {
        let want = self.active();
        let pending = self.applied != Some(want);
        let waiting = self.retry_at.is_some_and(|t| now < t);
        (pending && !self.writing && !waiting).then_some(want)
    }

    pub fn start_write(&mut self) {
        self.writing = true;
    }

    /// Records a write's outcome; a failure is retried after a doubling, capped delay.
    pub fn finish_write(&mut self, state: bool, result: Result<(), String>, now: Instant) {
        self.writing = false;
        match result {
            Ok(()) => {
                self.applied = Some(state);
                self.failures = 0;
                self.retry_at = None;
                self.last_error = None;
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                let delay = Duration::from_secs(1 << self.failures.min(6)).min(MAX_RETRY);
                self.retry_at = Some(now + delay);
                self.last_error = Some(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::Value;
    use crate::facility::config::{ActionConfig, ConditionConfig};

    fn rule() -> RuleConfig {
        let cond = |above, below| ConditionConfig {
            area: Some("waiting".into()),
            device: None,
            point: None,
            above,
            below,
        };
        RuleConfig {
            name: "crowding".into(),
            when: vec![cond(10.0, 6.0), cond(1000.0, 800.0)],
            then: ActionConfig {
                device: "ahu".into(),
                point: "fan".into(),
                value: Value::Number(100.0),
                normal: Some(Value::Number(30.0)),
            },
        }
    }

    #[test]
    fn hysteresis_turns_on_at_above_and_off_only_at_below() {
        let r = rule();
        let mut s = RuleState::new(&r);
        assert!(!s.observe(&r, &[Some(9.0), Some(500.0)]));
        assert!(s.observe(&r, &[Some(10.0), None]), "on at `above`");
        assert!(!s.observe(&r, &[Some(7.0), None]), "between: stays on");
        assert!(
            !s.observe(&r, &[None, Some(900.0)]),
            "no reading: unchanged"
        );
        assert!(s.observe(&r, &[Some(6.0), None]), "off at `below`");
        assert!(
            s.observe(&r, &[Some(0.0), Some(1200.0)]),
            "any condition turns it on"
        );
        assert!(!s.observe(&r, &[Some(0.0), Some(850.0)]));
        assert!(s.observe(&r, &[Some(0.0), Some(800.0)]));
        assert!(!s.active());
    }

    #[test]
    fn writes_are_due_once_until_confirmed_and_failures_back_off() {
        let r = rule();
        let mut s = RuleState::new(&r);
        let t = Instant::now();
        assert_eq!(
            s.due(t),
            Some(false),
            "the normal setting is asserted at start"
        );
        s.start_write();
        assert_eq!(s.due(t), None, "one write at a time");
        s.finish_write(false, Ok(()), t);
        assert_eq!(s.due(t), None);
        s.observe(&r, &[Some(12.0), None]);
        assert_eq!(s.due(t), Some(true));
        s.start_write();
        s.finish_write(true, Err("timeout".into()), t);
        assert_eq!(s.due(t), None, "backing off");
        assert_eq!(s.due(t + Duration::from_secs(2)), Some(true));
        assert_eq!(s.last_error.as_deref(), Some("timeout"));
        s.start_write();
        s.finish_write(true, Ok(()), t);
        assert_eq!(s.applied(), Some(true));
        assert_eq!(s.last_error, None);
    }

    #[test]
    fn holds_outrank_sensors_and_rooms_are_picked_in_order() {
        assert_eq!(room_status(None, None), RoomStatus::Available);
        assert_eq!(room_status(None, Some(true)), RoomStatus::Occupied);
        assert_eq!(
            room_status(Some(Hold::NeedsCleaning), Some(false)),
            RoomStatus::NeedsCleaning
        );
        assert_eq!(
            room_status(Some(Hold::OutOfService), Some(true)),
            RoomStatus::OutOfService
        );
        let room = |name: &str, queues: &[&str]| RoomConfig {
            name: name.into(),
            queues: queues.iter().map(|q| q.to_string()).collect(),
            occupancy_room: None,
        };
        let rooms = [room("1", &["lab"]), room("2", &[]), room("3", &["general"])];
        let mut status: BTreeMap<String, RoomStatus> = ["1", "2", "3"]
            .iter()
            .map(|r| (r.to_string(), RoomStatus::Available))
            .collect();
        let none = BTreeSet::new();
        assert_eq!(pick_room(&rooms, &status, &none, "general"), Some("2"));
        status.insert("2".into(), RoomStatus::Occupied);
        assert_eq!(pick_room(&rooms, &status, &none, "general"), Some("3"));
        let used: BTreeSet<String> = ["3".to_string()].into();
        assert_eq!(pick_room(&rooms, &status, &used, "general"), None);
        assert_eq!(pick_room(&rooms, &status, &used, "lab"), Some("1"));
    }
}
