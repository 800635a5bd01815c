//! Occupancy logic, pure: sensor payloads in, room and waiting-area state changes out.
//!
//! [`decode`] turns one payload into a [`Reading`] or a [`Malformed`] reason (which never holds
//! the payload's content). [`Facility`] keeps every sensor's last reading, every room's
//! debounced state and every area's totals. Nothing here reads a clock or touches a socket: the
//! caller passes the `Instant` to use, so debounce timing is tested without sleeping.
//!
//! **Invariant:** a room's reported state changes only after the new state held for its delay
//! (`occupied_delay_s`, `vacancy_delay_s` or `count_delay_s`); its first reading counts at once.

use super::config::{OccupancyConfig, SensorKind};
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One valid sensor value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    Occupied(bool),
    Count(u32),
}

/// Why a payload was not used. Says what was wrong, never what the payload held.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("payload of {bytes} bytes exceeds max_payload_bytes ({limit})")]
    TooLarge { bytes: usize, limit: usize },
    #[error("payload is not JSON")]
    NotJson,
    #[error("payload has no value at the configured pointer")]
    Missing,
    #[error("value at the pointer is {found}, expected {expected}")]
    WrongType {
        expected: &'static str,
        found: &'static str,
    },
}

/// Decodes one payload of a sensor of `kind`, reading the value at `pointer`.
pub fn decode(
    kind: SensorKind,
    pointer: &str,
    payload: &[u8],
    limit: usize,
) -> Result<Reading, Malformed> {
    if payload.len() > limit {
        return Err(Malformed::TooLarge {
            bytes: payload.len(),
            limit,
        });
    }
    let doc: serde_json::Value = serde_json::from_slice(payload).map_err(|_| Malformed::NotJson)?;
    let value = doc.pointer(pointer).ok_or(Malformed::Missing)?;
    let wrong = |expected| Malformed::WrongType {
        expected,
        found: type_name(value),
    };
    match kind {
        SensorKind::Occupancy => value
            .as_bool()
            .map(Reading::Occupied)
            .ok_or(wrong("a boolean")),
        SensorKind::Counter => value
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Reading::Count)
            .ok_or(wrong("a count (an integer from 0 to 4294967295)")),
    }
}

/// The JSON type of a value, for a [`Malformed::WrongType`] that must not quote the value.
fn type_name(value: &serde_json::Value) -> &'static str {
    use serde_json::Value::*;
    match value {
        Null => "null",
        Bool(_) => "a boolean",
        Number(n) if n.is_u64() => "an integer out of range",
        Number(_) => "a negative or fractional number",
        String(_) => "a string",
        Array(_) => "an array",
        Object(_) => "an object",
    }
}

/// A room's state as its sensors show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RoomReading {
    /// Any occupancy sensor says occupied, or any counter counts someone.
    pub occupied: bool,
    /// Sum of the room's counters; `None` when none of them has reported.
    pub people: Option<u32>,
}

/// A waiting area's totals over its rooms' reported states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AreaTotals {
    /// People counted in its rooms (rooms without a counter add none).
    pub people: u32,
    /// Its rooms reported occupied.
    pub occupied_rooms: u32,
    /// Its rooms, reported or not.
    pub rooms: u32,
}

/// A state change to journal.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub enum Change {
    Room {
        room: String,
        area: String,
        #[serde(flatten)]
        state: RoomReading,
    },
    Area {
        area: String,
        #[serde(flatten)]
        totals: AreaTotals,
    },
}

/// How long a new room state must hold, by transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Debounce {
    pub occupied: Duration,
    pub vacant: Duration,
    pub count: Duration,
}

impl Debounce {
    fn delay(&self, from: Option<RoomReading>, to: RoomReading) -> Duration {
        // Debouncing guards a known state against flicker; without one there is nothing to
        // guard, and start-up should show the truth as soon as a sensor speaks.
        let Some(from) = from else {
            return Duration::ZERO;
        };
        match (from.occupied, to.occupied) {
            (false, true) => self.occupied,
            (true, false) => self.vacant,
            _ => self.count,
        }
    }
}

/// A sensor message that could not be used: which sensor, why, and how many so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub sensor: String,
    pub problem: Malformed,
    pub count: u64,
}

struct Sensor {
    name: String,
    kind: SensorKind,
    pointer: String,
    room: usize,
    last: Option<Reading>,
    last_seen: Option<Instant>,
    malformed: u64,
    last_problem: Option<Malformed>,
}

struct Room {
    name: String,
    area: usize,
    sensors: Vec<usize>,
    reported: Option<RoomReading>,
    /// When `reported` last changed.
    changed_at: Option<Instant>,
    /// A state different from `reported`, and since when it holds.
    pending: Option<(RoomReading, Instant)>,
}

struct Area {
    name: String,
    rooms: Vec<usize>,
    totals: AreaTotals,
}

/// Every sensor, room and waiting area of one `[devices.occupancy]` table.
pub struct Facility {
    debounce: Debounce,
    stale_after: Option<Duration>,
    max_payload_bytes: usize,
    started: Instant,
    sensors: Vec<Sensor>,
    rooms: Vec<Room>,
    areas: Vec<Area>,
    by_topic: HashMap<String, Vec<usize>>,
}

/// What `GetOccupancy` answers: the whole state, for the facility rules and the status page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Occupancy {
    pub rooms: Vec<RoomView>,
    pub areas: Vec<AreaView>,
    pub sensors: Vec<SensorView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoomView {
    pub name: String,
    pub area: String,
    /// `None` until one of its sensors sent a valid reading.
    pub state: Option<RoomReading>,
    /// When `state` last changed (ms since the epoch): how long a room has been vacant or
    /// occupied, for the facility rules.
    pub since_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AreaView {
    pub name: String,
    #[serde(flatten)]
    pub totals: AreaTotals,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SensorView {
    pub name: String,
    pub room: String,
    pub kind: SensorKind,
    /// Last valid reading, in ms since the epoch.
    pub last_seen_ms: Option<i64>,
    /// No valid reading for `stale_after_s` (counted from start-up when there was none).
    pub stale: bool,
    /// Payloads that could not be used.
    pub malformed: u64,
    /// Why the last unusable payload was not used.
    pub last_problem: Option<String>,
}

impl Facility {
    /// The state of a validated configuration, nothing reported yet, started at `now`.
    pub fn new(config: &OccupancyConfig, now: Instant) -> Facility {
        let mut areas: Vec<Area> = Vec::new();
        let mut rooms = Vec::new();
        for (i, r) in config.rooms.iter().enumerate() {
            let area = match areas.iter().position(|a| a.name == r.area) {
                Some(a) => a,
                None => {
                    areas.push(Area {
                        name: r.area.clone(),
                        rooms: Vec::new(),
                        totals: AreaTotals {
                            people: 0,
                            occupied_rooms: 0,
                            rooms: 0,
                        },
                    });
                    areas.len() - 1
                }
            };
            areas[area].rooms.push(i);
            areas[area].totals.rooms += 1;
            rooms.push(Room {
                name: r.name.clone(),
                area,
                sensors: Vec::new(),
                reported: None,
                changed_at: None,
                pending: None,
            });
        }
        let mut sensors = Vec::new();
        let mut by_topic: HashMap<String, Vec<usize>> = HashMap::new();
        // Validation guarantees every room exists; a sensor without one is skipped, not trusted.
        for s in &config.sensors {
            let Some(room) = rooms.iter().position(|r| r.name == s.room) else {
                continue;
            };
            let index = sensors.len();
            rooms[room].sensors.push(index);
            by_topic.entry(s.topic()).or_default().push(index);
            sensors.push(Sensor {
                name: s.name.clone(),
                kind: s.kind,
                pointer: s.pointer().to_string(),
                room,
                last: None,
                last_seen: None,
                malformed: 0,
                last_problem: None,
            });
        }
        Facility {
            debounce: Debounce {
                occupied: config.occupied_delay(),
                vacant: config.vacancy_delay(),
                count: config.count_delay(),
            },
            stale_after: config.stale_after(),
            max_payload_bytes: config.max_payload_bytes,
            started: now,
            sensors,
            rooms,
            areas,
            by_topic,
        }
    }

    /// Every topic to subscribe to, each once.
    pub fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.by_topic.keys().cloned().collect();
        topics.sort();
        topics
    }

    /// Takes one message: each sensor on `topic` decodes it; valid readings update their room's
    /// pending state. Answers the sensors that could not use it.
    pub fn receive(&mut self, topic: &str, payload: &[u8], now: Instant) -> Vec<Rejected> {
        let Some(indexes) = self.by_topic.get(topic) else {
            return Vec::new();
        };
        let mut rejected = Vec::new();
        let mut touched = Vec::new();
        for &i in indexes {
            let s = &mut self.sensors[i];
            match decode(s.kind, &s.pointer, payload, self.max_payload_bytes) {
                Ok(reading) => {
                    s.last = Some(reading);
                    s.last_seen = Some(now);
                    touched.push(s.room);
                }
                Err(problem) => {
                    s.malformed += 1;
                    s.last_problem = Some(problem.clone());
                    rejected.push(Rejected {
                        sensor: s.name.clone(),
                        problem,
                        count: s.malformed,
                    });
                }
            }
        }
        for room in touched {
            self.observe(room, now);
        }
        rejected
    }

    /// Compares a room's state by its sensors with the reported one and (re)starts its wait.
    fn observe(&mut self, room: usize, now: Instant) {
        let Some(raw) = self.raw(room) else { return };
        let r = &mut self.rooms[room];
        if r.reported == Some(raw) {
            // Back to the reported state before the delay ran out: the change was flicker.
            r.pending = None;
        } else if r.pending.map(|(p, _)| p) != Some(raw) {
            r.pending = Some((raw, now));
        }
    }

    /// A room's state from its sensors' last readings; `None` before any of them reported.
    fn raw(&self, room: usize) -> Option<RoomReading> {
        let mut state: Option<RoomReading> = None;
        for &i in &self.rooms[room].sensors {
            let Some(reading) = self.sensors[i].last else {
                continue;
            };
            let s = state.get_or_insert(RoomReading {
                occupied: false,
                people: None,
            });
            match reading {
                Reading::Occupied(o) => s.occupied |= o,
                Reading::Count(n) => {
                    s.occupied |= n > 0;
                    s.people = Some(s.people.unwrap_or(0).saturating_add(n));
                }
            }
        }
        state
    }

    /// When the earliest pending room state is due, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.rooms
            .iter()
            .filter_map(|r| {
                let (to, since) = r.pending?;
                since.checked_add(self.debounce.delay(r.reported, to))
            })
            .min()
    }

    /// Applies every pending room state that held long enough by `now`; answers the room
    /// changes, then the area changes they caused.
    pub fn settle(&mut self, now: Instant) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut areas = Vec::new();
        for r in &mut self.rooms {
            let Some((to, since)) = r.pending else {
                continue;
            };
            if now.saturating_duration_since(since) < self.debounce.delay(r.reported, to) {
                continue;
            }
            r.reported = Some(to);
            r.changed_at = Some(now);
            r.pending = None;
            if !areas.contains(&r.area) {
                areas.push(r.area);
            }
            changes.push(Change::Room {
                room: r.name.clone(),
                area: self.areas[r.area].name.clone(),
                state: to,
            });
        }
        for a in areas {
            let totals = self.totals(a);
            let area = &mut self.areas[a];
            if area.totals != totals {
                area.totals = totals;
                changes.push(Change::Area {
                    area: area.name.clone(),
                    totals,
                });
            }
        }
        changes
    }

    fn totals(&self, area: usize) -> AreaTotals {
        let a = &self.areas[area];
        let mut totals = AreaTotals {
            people: 0,
            occupied_rooms: 0,
            rooms: a.totals.rooms,
        };
        for state in a.rooms.iter().filter_map(|&r| self.rooms[r].reported) {
            totals.people = totals.people.saturating_add(state.people.unwrap_or(0));
            totals.occupied_rooms += u32::from(state.occupied);
        }
        totals
    }

    /// The whole state at `now`; `now_ms` is the same moment as wall-clock time, for
    /// `last_seen_ms`.
    pub fn snapshot(&self, now: Instant, now_ms: i64) -> Occupancy {
        let wall = |at: Instant| now_ms - now.saturating_duration_since(at).as_millis() as i64;
        Occupancy {
            rooms: self
                .rooms
                .iter()
                .map(|r| RoomView {
                    name: r.name.clone(),
                    area: self.areas[r.area].name.clone(),
                    state: r.reported,
                    since_ms: r.changed_at.map(wall),
                })
                .collect(),
            areas: self
                .areas
                .iter()
                .map(|a| AreaView {
                    name: a.name.clone(),
                    totals: a.totals,
                })
                .collect(),
            sensors: self
                .sensors
                .iter()
                .map(|s| SensorView {
                    name: s.name.clone(),
                    room: self.rooms[s.room].name.clone(),
                    kind: s.kind,
                    last_seen_ms: s.last_seen.map(wall),
                    stale: self.stale_after.is_some_and(|limit| {
                        now.saturating_duration_since(s.last_seen.unwrap_or(self.started)) >= limit
                    }),
                    malformed: s.malformed,
                    last_problem: s.last_problem.as_ref().map(|p| p.to_string()),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1024;

    fn check(kind: SensorKind, pointer: &str, payload: &[u8]) -> Result<Reading, Malformed> {
        decode(kind, pointer, payload, LIMIT)
    }

    #[test]
    fn valid_payloads_decode() {
        use SensorKind::*;
        let z2m = br#"{"battery":97,"occupancy":true,"linkquality":120}"#;
        assert_eq!(
            check(Occupancy, "/occupancy", z2m),
            Ok(Reading::Occupied(true))
        );
        assert_eq!(
            check(Counter, "/count", br#"{"count": 7}"#),
            Ok(Reading::Count(7))
        );
        let nested = br#"{"presence":{"people":[0,3]}}"#;
        assert_eq!(
            check(Counter, "/presence/people/1", nested),
            Ok(Reading::Count(3))
        );
        assert_eq!(check(Occupancy, "", b"false"), Ok(Reading::Occupied(false)));
        // RFC 6901 escapes: `~1` is `/`, `~0` is `~`.
        let escaped = br#"{"room/1":{"a~b":2}}"#;
        assert_eq!(
            check(Counter, "/room~11/a~0b", escaped),
            Ok(Reading::Count(2))
        );
    }

    #[test]
    fn malformed_payloads_say_why_without_content() {
        use SensorKind::*;
        let wrong = |found| Malformed::WrongType {
            expected: "a boolean",
            found,
        };
        assert_eq!(
            check(Occupancy, "/occupancy", b"\xff\xfe\x00garbage"),
            Err(Malformed::NotJson)
        );
        assert_eq!(check(Occupancy, "/occupancy", b""), Err(Malformed::NotJson));
        assert_eq!(
            check(Occupancy, "/occupancy", b"{\"occupancy\":"),
            Err(Malformed::NotJson)
        );
        assert_eq!(
            check(Occupancy, "/occupancy", br#"{"motion":true}"#),
            Err(Malformed::Missing)
        );
        assert_eq!(
            check(Occupancy, "/occupancy", br#"{"occupancy":"ON"}"#),
            Err(wrong("a string"))
        );
        assert_eq!(
            check(Occupancy, "/occupancy", br#"{"occupancy":1}"#),
            Err(wrong("an integer out of range"))
        );
        for (payload, found) in [
            (&br#"{"count":-1}"#[..], "a negative or fractional number"),
            (br#"{"count":2.5}"#, "a negative or fractional number"),
            (br#"{"count":4294967296}"#, "an integer out of range"),
            (br#"{"count":null}"#, "null"),
            (br#"{"count":[1]}"#, "an array"),
        ] {
            let Err(Malformed::WrongType { found: f, .. }) = check(Counter, "/count", payload)
            else {
                panic!("{payload:?} was accepted");
            };
            assert_eq!(f, found);
        }
        let huge = format!(r#"{{"occupancy":true,"pad":"{}"}}"#, "x".repeat(LIMIT));
        let e = check(Occupancy, "/occupancy", huge.as_bytes()).expect_err("too large");
        assert_eq!(
            e,
            Malformed::TooLarge {
                bytes: huge.len(),
                limit: LIMIT
            }
        );
        assert!(!e.to_string().contains("xxx"));
    }

    /// exam-1 (PIR) and exam-2 (counter) in area wait-a, lobby (two counters) in wait-b;
    /// delays: occupied 1 s, vacant 10 s, count 2 s; stale after 60 s.
    fn facility(t0: Instant) -> Facility {
        let config: OccupancyConfig = toml::from_str(
            r#"
            occupied_delay_s = 1.0
            vacancy_delay_s = 10.0
            count_delay_s = 2.0
            stale_after_s = 60.0
            broker = { host = "h" }
            rooms = [
                { name = "exam-1", area = "wait-a" },
                { name = "exam-2", area = "wait-a" },
                { name = "lobby", area = "wait-b" },
            ]
            sensors = [
                { name = "pir-1", kind = "occupancy", room = "exam-1" },
                { name = "cnt-2", kind = "counter", room = "exam-2" },
                { name = "door-in", kind = "counter", room = "lobby", topic = "lobby/doors", pointer = "/in" },
                { name = "door-out", kind = "counter", room = "lobby", topic = "lobby/doors", pointer = "/out" },
            ]
            "#,
        )
        .expect("config");
        Facility::new(&config, t0)
    }

    fn secs(t0: Instant, s: f64) -> Instant {
        t0 + Duration::from_secs_f64(s)
    }

    fn room(occupied: bool, people: Option<u32>) -> RoomReading {
        RoomReading { occupied, people }
    }

    /// pir-1 reports `occupied` at `at`; answers what was rejected.
    fn pir(f: &mut Facility, occupied: bool, at: Instant) -> Vec<Rejected> {
        let payload = format!(r#"{{"occupancy":{occupied}}}"#);
        f.receive("zigbee2mqtt/pir-1", payload.as_bytes(), at)
    }

    /// The facility with exam-1 reported occupied at `t0`.
    fn exam_1_occupied(t0: Instant) -> Facility {
        let mut f = facility(t0);
        pir(&mut f, true, t0);
        f.settle(t0);
        f
    }

    fn reported(f: &Facility, name: &str) -> Option<RoomReading> {
        f.rooms
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| r.reported)
    }

    #[test]
    fn first_reading_counts_at_once_then_vacancy_waits_for_its_delay() {
        let t0 = Instant::now();
        let mut f = facility(t0);
        assert_eq!(
            f.topics(),
            ["lobby/doors", "zigbee2mqtt/cnt-2", "zigbee2mqtt/pir-1"]
        );
        assert!(pir(&mut f, true, t0).is_empty());
        assert_eq!(f.next_deadline(), Some(t0));
        let changes = f.settle(t0);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(
            serde_json::to_value(&changes).expect("json"),
            serde_json::json!([
                { "scope": "room", "room": "exam-1", "area": "wait-a", "occupied": true, "people": null },
                { "scope": "area", "area": "wait-a", "people": 0, "occupied_rooms": 1, "rooms": 2 },
            ])
        );
        // No motion at 5 s: vacant only once it held for 10 s.
        pir(&mut f, false, secs(t0, 5.0));
        assert_eq!(f.next_deadline(), Some(secs(t0, 15.0)));
        assert!(f.settle(secs(t0, 14.999)).is_empty());
        assert_eq!(reported(&f, "exam-1"), Some(room(true, None)));
        let changes = f.settle(secs(t0, 15.0));
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(reported(&f, "exam-1"), Some(room(false, None)));
        assert_eq!(f.next_deadline(), None);
        let since = f.snapshot(secs(t0, 20.0), 50_000).rooms[0].since_ms;
        assert_eq!(
            since,
            Some(45_000),
            "vacant since 15 s, seen at 20 s = 50 000 ms"
        );
    }

    #[test]
    fn flicker_shorter_than_the_delay_changes_nothing() {
        let t0 = Instant::now();
        let mut f = exam_1_occupied(t0);
        pir(&mut f, false, secs(t0, 1.0));
        pir(&mut f, true, secs(t0, 9.0));
        assert_eq!(f.next_deadline(), None);
        assert!(f.settle(secs(t0, 30.0)).is_empty());
        // A repeated "vacant" does not restart the wait; a different state does.
        pir(&mut f, false, secs(t0, 40.0));
        pir(&mut f, false, secs(t0, 45.0));
        assert_eq!(f.next_deadline(), Some(secs(t0, 50.0)));
    }

    #[test]
    fn counts_debounce_and_areas_add_up() {
        let t0 = Instant::now();
        let mut f = facility(t0);
        f.receive("zigbee2mqtt/cnt-2", br#"{"count":3}"#, t0);
        f.receive("lobby/doors", br#"{"in":4,"out":1}"#, t0);
        f.settle(t0);
        let area = |f: &Facility, name: &str| {
            f.snapshot(t0, 0)
                .areas
                .into_iter()
                .find(|a| a.name == name)
                .map(|a| (a.totals.people, a.totals.occupied_rooms, a.totals.rooms))
        };
        assert_eq!(reported(&f, "lobby"), Some(room(true, Some(5))));
        assert_eq!(area(&f, "wait-a"), Some((3, 1, 2)));
        assert_eq!(area(&f, "wait-b"), Some((5, 1, 1)));
        // 3 → 4 → 6 within 2 s: only 6 counts, 2 s after it was seen.
        f.receive("zigbee2mqtt/cnt-2", br#"{"count":4}"#, secs(t0, 1.0));
        f.receive("zigbee2mqtt/cnt-2", br#"{"count":6}"#, secs(t0, 2.0));
        assert!(f.settle(secs(t0, 3.5)).is_empty());
        let changes = f.settle(secs(t0, 4.0));
        assert_eq!(
            changes,
            [
                Change::Room {
                    room: "exam-2".into(),
                    area: "wait-a".into(),
                    state: room(true, Some(6))
                },
                Change::Area {
                    area: "wait-a".into(),
                    totals: AreaTotals {
                        people: 6,
                        occupied_rooms: 1,
                        rooms: 2
                    }
                },
            ]
        );
        // A PIR room joining changes the occupied rooms, not the people.
        pir(&mut f, true, secs(t0, 5.0));
        f.settle(secs(t0, 5.0));
        assert_eq!(area(&f, "wait-a"), Some((6, 2, 2)));
        // Counting down to 0 is a vacancy: it waits for the vacancy delay, not the count delay.
        f.receive("zigbee2mqtt/cnt-2", br#"{"count":0}"#, secs(t0, 6.0));
        assert!(f.settle(secs(t0, 8.0)).is_empty());
        f.settle(secs(t0, 16.0));
        assert_eq!(reported(&f, "exam-2"), Some(room(false, Some(0))));
        assert_eq!(area(&f, "wait-a"), Some((0, 1, 2)));
    }

    #[test]
    fn malformed_messages_are_counted_per_sensor_and_leave_state_alone() {
        let t0 = Instant::now();
        let mut f = exam_1_occupied(t0);
        let rejected = f.receive("zigbee2mqtt/pir-1", b"\x00\x01garbage", secs(t0, 1.0));
        assert_eq!(
            rejected,
            [Rejected {
                sensor: "pir-1".into(),
                problem: Malformed::NotJson,
                count: 1
            }]
        );
        // One message, two sensors: only the one whose pointer is missing rejects it.
        let rejected = f.receive("lobby/doors", br#"{"in":2}"#, secs(t0, 1.0));
        assert_eq!(rejected.len(), 1);
        assert_eq!(
            (rejected[0].sensor.as_str(), rejected[0].count),
            ("door-out", 1)
        );
        assert!(f.receive("unknown/topic", b"x", t0).is_empty());
        f.settle(secs(t0, 1.0));
        let snap = f.snapshot(secs(t0, 1.0), 100_000);
        let sensor = |name: &str| {
            snap.sensors
                .iter()
                .find(|s| s.name == name)
                .cloned()
                .expect("sensor")
        };
        assert_eq!(sensor("pir-1").malformed, 1);
        assert_eq!(
            sensor("pir-1").last_problem.as_deref(),
            Some("payload is not JSON")
        );
        assert_eq!(sensor("pir-1").last_seen_ms, Some(99_000));
        assert_eq!(sensor("door-in").last_seen_ms, Some(100_000));
        assert_eq!(sensor("cnt-2").last_seen_ms, None);
        assert_eq!(reported(&f, "exam-1"), Some(room(true, None)));
    }

    #[test]
    fn silent_sensors_become_stale() {
        let t0 = Instant::now();
        let mut f = facility(t0);
        pir(&mut f, true, secs(t0, 30.0));
        let stale = |at: f64| -> Vec<String> {
            f.snapshot(secs(t0, at), 0)
                .sensors
                .into_iter()
                .filter(|s| s.stale)
                .map(|s| s.name)
                .collect()
        };
        assert!(stale(59.0).is_empty());
        assert_eq!(stale(60.0), ["cnt-2", "door-in", "door-out"]);
        assert_eq!(stale(90.0), ["pir-1", "cnt-2", "door-in", "door-out"]);
    }
}
