//! Facility rules: the rooms patients are called to and the threshold rules that join sensors to
//! building systems. One supervised actor, `facility`, reads the devices through their slots
//! every `evaluate_interval_ms`, keeps each room's status, and writes a rule's setting when the
//! rule turns on or off.
//!
//! **Invariant:** a room held (needs cleaning, out of service) is never offered or accepted for a
//! call, and patients called to it or in it are rerouted as soon as the hold is committed.
//! **Invariant:** every setting a rule writes is audited before it reaches the device
//! (`devices::audited`); each turn of a rule and each room status change is a cloud event.

pub mod config;
pub mod requests;
pub mod rules;
pub mod store;

use crate::devices::{Handles, device_event};
use crate::journal::{self, Append, JournalError, JournalWriter};
use crate::queue::{Action, EntryState};
use crate::queue::{QueueAct, QueueList};
use crate::supervisor::link::{self, Health};
use crate::supervisor::{HealthState, Running, Slot, Spawn, StopFuture, Supervisor};
use actix::prelude::*;
use config::{FacilityConfig, Source};
pub use requests::{ListRoomHolds, SetRoomHold};
use rules::RuleState;
pub use rules::{Hold, RoomHold, RoomStatus};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The supervisor name of the facility actor.
pub const NAME: &str = "facility";

/// Where the running facility actor is (for the web API and cloud commands).
pub type FacilitySlot = Slot<FacilityActor>;

/// Why a facility request was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FacilityError {
    #[error("no room {0:?} is configured")]
    UnknownRoom(String),
    /// The room cannot take a patient now.
    #[error("room {room} is {status}")]
    Unavailable { room: String, status: &'static str },
    #[error("facility rules are not running")]
    NotRunning,
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl RoomStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RoomStatus::Available => "available",
            RoomStatus::Occupied => "occupied",
            RoomStatus::NeedsCleaning => "needs cleaning",
            RoomStatus::OutOfService => "out of service",
        }
    }
}

/// One room as staff see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoomView {
    pub name: String,
    pub status: RoomStatus,
    /// What its sensors say; `None` without sensors or before their first reading.
    pub occupied: Option<bool>,
    pub hold: Option<RoomHold>,
    pub queues: Vec<String>,
}

/// One rule as staff see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleView {
    pub name: String,
    pub active: bool,
    /// What the device was last confirmed to hold (`true`: the rule's value).
    pub applied: Option<bool>,
    pub last_error: Option<String>,
    /// The values its conditions last evaluated (people, ppm, ...; `null`: no reading).
    pub inputs: Vec<Option<f64>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FacilityView {
    pub rooms: Vec<RoomView>,
    pub rules: Vec<RuleView>,
}

/// The rooms and rules now.
#[derive(Message)]
#[rtype(result = "FacilityView")]
pub struct GetFacility;

/// Takes a room out of use (`hold`) or puts it back (`None`); patients called to it or in it are
/// rerouted. Answers the room as it is afterwards.
#[derive(Message, Debug)]
#[rtype(result = "Result<RoomView, FacilityError>")]
pub struct SetHold {
    pub room: String,
    pub hold: Option<(Hold, Option<String>)>,
    pub by: String,
}

/// A room for the next patient of `queue`: available, serving the queue, nobody called to it.
#[derive(Message)]
#[rtype(result = "Result<Option<String>, FacilityError>")]
pub struct OfferRoom {
    pub queue: String,
}

/// Whether a patient may be called to `room` (`call`) or recorded in it. A room the facility
/// does not know (a desk) is allowed; a held room never; an occupied one only for `call = false`,
/// since the patient's own arrival makes it occupied.
#[derive(Message)]
#[rtype(result = "Result<(), FacilityError>")]
pub struct CheckRoom {
    pub room: String,
    pub call: bool,
}

/// The inputs of one evaluation, read from the devices.
struct Inputs {
    /// Occupancy by occupancy-room name.
    occupied: BTreeMap<String, bool>,
    values: BTreeMap<Source, f64>,
}

pub struct FacilitySpawn {
    config: Arc<FacilityConfig>,
    handles: Handles,
    journal: Addr<JournalWriter>,
    slot: FacilitySlot,
}

impl FacilitySpawn {
    pub fn new(
        config: FacilityConfig,
        handles: Handles,
        journal: Addr<JournalWriter>,
        slot: FacilitySlot,
    ) -> FacilitySpawn {
        FacilitySpawn {
            config: Arc::new(config),
            handles,
            journal,
            slot,
        }
    }
}

impl Spawn for FacilitySpawn {
    fn kind(&self) -> &'static str {
        "facility-rules"
    }

    fn spawn(&self, name: &str, supervisor: Addr<Supervisor>) -> Box<dyn Running> {
        let rules = self.config.rules.iter().map(RuleState::new).collect();
        let (config, handles, journal) = (
            self.config.clone(),
            self.handles.clone(),
            self.journal.clone(),
        );
        // An evaluation under way only reads devices and asks the journal; it is let finish.
        let grace = Duration::from_secs(1);
        let (running, addr) =
            link::start_actor(name, supervisor, grace, move |link| FacilityActor {
                rules,
                config,
                handles,
                journal,
                health: link.health,
                shutdown: Some(link.shutdown),
                holds: BTreeMap::new(),
                occupied: BTreeMap::new(),
                status: BTreeMap::new(),
                evaluating: false,
            });
        self.slot.set(Some(addr));
        Box::new(Handle {
            running,
            slot: self.slot.clone(),
        })
    }
}

/// The running actor, which the API stops seeing as soon as it is asked to stop.
struct Handle {
    running: Box<dyn Running>,
    slot: FacilitySlot,
}

impl Running for Handle {
    fn stop(self: Box<Self>) -> StopFuture {
        self.slot.set(None);
        self.running.stop()
    }

    #[cfg(feature = "fault-hooks")]
    fn inject_panic(&mut self) -> bool {
        self.running.inject_panic()
    }
}

pub struct FacilityActor {
    config: Arc<FacilityConfig>,
    handles: Handles,
    journal: Addr<JournalWriter>,
    health: Health,
    /// Taken when the actor starts, which then stops when it turns `true`.
    shutdown: Option<watch::Receiver<bool>>,
    holds: BTreeMap<String, RoomHold>,
    /// Sensor occupancy by facility room.
    occupied: BTreeMap<String, bool>,
    status: BTreeMap<String, RoomStatus>,
    rules: Vec<RuleState>,
    /// An evaluation is reading the devices; ticks meanwhile are skipped.
    evaluating: bool,
}

impl Actor for FacilityActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(mut shutdown) = self.shutdown.take() {
            ctx.spawn(
                async move {
                    let _ = shutdown.changed().await;
                }
                .into_actor(self)
                .map(|_, _, ctx| ctx.stop()),
            );
        }
        let journal = self.journal.clone();
        // Holds must be known before the first call is checked: nothing else runs until then.
        ctx.wait(
            async move { journal::ask(&journal, ListRoomHolds).await }
                .into_actor(self)
                .map(|holds, act, ctx| match holds {
                    Ok(holds) => {
                        act.holds = holds.into_iter().map(|h| (h.room.clone(), h)).collect();
                        act.refresh_status(false);
                        act.report(HealthState::Healthy, None);
                        ctx.run_interval(act.config.evaluate_interval(), |act, ctx| {
                            act.evaluate(ctx)
                        });
                        act.evaluate(ctx);
                    }
                    Err(e) => {
                        act.health.exit(format!("cannot read room holds: {e}"));
                        ctx.stop();
                    }
                }),
        );
    }
}

impl FacilityActor {
    fn report(&mut self, state: HealthState, error: Option<String>) {
        self.health.report(state, error);
    }

    fn view(&self, name: &str) -> Option<RoomView> {
        let room = self.config.rooms.iter().find(|r| r.name == name)?;
        Some(RoomView {
            name: room.name.clone(),
            status: self
                .status
                .get(name)
                .copied()
                .unwrap_or(RoomStatus::Available),
            occupied: self.occupied.get(name).copied(),
            hold: self.holds.get(name).cloned(),
            queues: room.queues.clone(),
        })
    }

    /// Recomputes every room's status; with `announce`, each change is a cloud event.
    fn refresh_status(&mut self, announce: bool) {
        for room in &self.config.rooms {
            let status = rules::room_status(
                self.holds.get(&room.name).map(|h| h.hold),
                self.occupied.get(&room.name).copied(),
            );
            let before = self.status.insert(room.name.clone(), status);
            if announce && before != Some(status) {
                let payload = serde_json::json!({ "room": room.name, "status": status });
                self.journal
                    .do_send(Append(device_event(NAME, "facility.room_status", payload)));
            }
        }
    }

    /// Reads the devices, then updates rooms and rules.
    fn evaluate(&mut self, ctx: &mut Context<Self>) {
        if self.evaluating {
            return;
        }
        self.evaluating = true;
        let handles = self.handles.clone();
        let sources: BTreeSet<Source> = self
            .config
            .rules
            .iter()
            .flat_map(|r| r.when.iter().map(|c| c.source()))
            .collect();
        let read = async move {
            let mut inputs = Inputs {
                occupied: BTreeMap::new(),
                values: BTreeMap::new(),
            };
            let occupancy = match &handles.occupancy {
                Some(h) => h.get().await.ok(),
                None => None,
            };
            if let Some(o) = &occupancy {
                for r in &o.rooms {
                    if let Some(s) = r.state {
                        inputs.occupied.insert(r.name.clone(), s.occupied);
                    }
                }
            }
            for source in sources {
                let value = match &source {
                    Source::Area(a) => occupancy
                        .as_ref()
                        .and_then(|o| o.areas.iter().find(|v| v.name == *a))
                        .map(|v| f64::from(v.totals.people)),
                    Source::Point { device, point } => handles.point(device, point).await,
                };
                if let Some(v) = value {
                    inputs.values.insert(source, v);
                }
            }
            inputs
        };
        ctx.spawn(read.into_actor(self).map(|inputs, act, ctx| {
            act.evaluating = false;
            act.apply(inputs, ctx);
        }));
    }

    fn apply(&mut self, inputs: Inputs, ctx: &mut Context<Self>) {
        self.occupied = self
            .config
            .rooms
            .iter()
            .filter_map(|r| {
                let o = inputs.occupied.get(r.sensor_room())?;
                Some((r.name.clone(), *o))
            })
            .collect();
        self.refresh_status(true);
        let now = Instant::now();
        let config = self.config.clone();
        for (i, rule) in config.rules.iter().enumerate() {
            let values: Vec<Option<f64>> = rule
                .when
                .iter()
                .map(|c| inputs.values.get(&c.source()).copied())
                .collect();
            let state = &mut self.rules[i];
            if state.observe(rule, &values) {
                let reasons: Vec<_> = rule
                    .when
                    .iter()
                    .zip(&values)
                    .map(|(c, v)| serde_json::json!({ "source": c.source().to_string(), "value": v, "above": c.above, "below": c.below }))
                    .collect();
                let payload = serde_json::json!({ "rule": rule.name, "active": state.active(), "conditions": reasons });
                tracing::info!(rule = %rule.name, active = state.active(), "facility rule turned");
                self.journal
                    .do_send(Append(device_event(NAME, "facility.rule", payload)));
            }
            let Some(on) = state.due(now) else {
                continue;
            };
            state.start_write();
            let handles = self.handles.clone();
            let then = rule.then.clone();
            let by = format!("rule:{}", rule.name);
            let write = async move {
                let value = if on { Some(then.value) } else { then.normal };
                handles.write(&then.device, &then.point, value, &by).await
            };
            ctx.spawn(write.into_actor(self).map(move |result, act, _| {
                if let Err(e) = &result {
                    tracing::warn!(rule = %act.config.rules[i].name, error = %e, "facility rule could not write its setting; retrying");
                }
                act.rules[i].finish_write(on, result, Instant::now());
                act.report_rules();
            }));
        }
    }

    /// Degraded while any rule cannot write its setting, naming the first.
    fn report_rules(&mut self) {
        let failing = self
            .config
            .rules
            .iter()
            .zip(&self.rules)
            .find_map(|(r, s)| {
                s.last_error
                    .as_ref()
                    .map(|e| format!("rule {}: {e}", r.name))
            });
        match failing {
            Some(e) => self.report(HealthState::Degraded, Some(e)),
            None => self.report(HealthState::Healthy, None),
        }
    }

    /// Rooms with a patient called to them or in them (so they are not offered twice).
    async fn rooms_in_use(
        journal: &Addr<JournalWriter>,
    ) -> Result<Vec<crate::queue::Entry>, JournalError> {
        let open = journal::ask(
            journal,
            QueueList {
                queue: None,
                closed_since: None,
            },
        )
        .await?;
        Ok(open
            .into_iter()
            .filter(|e| {
                matches!(e.state, EntryState::Called | EntryState::InRoom) && e.room.is_some()
            })
            .collect())
    }
}

impl Handler<GetFacility> for FacilityActor {
    type Result = MessageResult<GetFacility>;

    fn handle(&mut self, _: GetFacility, _: &mut Context<Self>) -> Self::Result {
        let rooms = self
            .config
            .rooms
            .iter()
            .filter_map(|r| self.view(&r.name))
            .collect();
        let rules = self
            .config
            .rules
            .iter()
            .zip(&self.rules)
            .map(|(r, s)| RuleView {
                name: r.name.clone(),
                active: s.active(),
                applied: s.applied(),
                last_error: s.last_error.clone(),
                inputs: s.inputs().to_vec(),
            })
            .collect();
        MessageResult(FacilityView { rooms, rules })
    }
}

impl Handler<CheckRoom> for FacilityActor {
    type Result = Result<(), FacilityError>;

    fn handle(&mut self, msg: CheckRoom, _: &mut Context<Self>) -> Self::Result {
        let Some(status) = self.status.get(&msg.room).copied() else {
            return Ok(());
        };
        match status {
            RoomStatus::Available => Ok(()),
            RoomStatus::Occupied if !msg.call => Ok(()),
            other => Err(FacilityError::Unavailable {
                room: msg.room,
                status: other.as_str(),
            }),
        }
    }
}

impl Handler<OfferRoom> for FacilityActor {
    type Result = ResponseActFuture<Self, Result<Option<String>, FacilityError>>;

    fn handle(&mut self, msg: OfferRoom, _: &mut Context<Self>) -> Self::Result {
        let journal = self.journal.clone();
        Box::pin(
            async move { Self::rooms_in_use(&journal).await }
                .into_actor(self)
                .map(move |used, act, _| {
                    let used: BTreeSet<String> = used?.into_iter().filter_map(|e| e.room).collect();
                    Ok(
                        rules::pick_room(&act.config.rooms, &act.status, &used, &msg.queue)
                            .map(str::to_string),
                    )
                }),
        )
    }
}

impl Handler<SetHold> for FacilityActor {
    type Result = ResponseActFuture<Self, Result<RoomView, FacilityError>>;

    fn handle(&mut self, msg: SetHold, _: &mut Context<Self>) -> Self::Result {
        let journal = self.journal.clone();
        let known = self.config.rooms.iter().any(|r| r.name == msg.room);
        let SetHold { room, hold, by } = msg;
        let commit = async move {
            if !known {
                return Err(FacilityError::UnknownRoom(room));
            }
            let held = journal::ask(
                &journal,
                SetRoomHold {
                    room: room.clone(),
                    hold,
                    by,
                },
            )
            .await?;
            let affected = match &held {
                Some(_) => Self::rooms_in_use(&journal).await?,
                None => Vec::new(),
            };
            Ok((room, held, affected))
        };
        Box::pin(commit.into_actor(self).then(|result, act, _| {
            let journal = act.journal.clone();
            let mut reroutes = Vec::new();
            let outcome = result.map(|(room, held, open)| {
                match held {
                    Some(h) => act.holds.insert(room.clone(), h),
                    None => act.holds.remove(&room),
                };
                act.refresh_status(true);
                let mut used: BTreeSet<String> =
                    open.iter().filter_map(|e| e.room.clone()).collect();
                for entry in open.iter().filter(|e| e.room.as_deref() == Some(room.as_str())) {
                    let to = rules::pick_room(&act.config.rooms, &act.status, &used, &entry.queue)
                        .map(str::to_string);
                    if let Some(r) = &to {
                        used.insert(r.clone());
                    }
                    tracing::info!(ticket = %entry.ticket, from = %room, to = ?to, "patient rerouted: room out of use");
                    reroutes.push(QueueAct {
                        id: entry.id,
                        action: Action::Reroute { room: to },
                    });
                }
                act.view(&room).expect("the room is configured")
            });
            async move {
                for r in reroutes {
                    // An entry closed meanwhile refuses the reroute, which is then moot.
                    if let Err(e) = journal::ask(&journal, r).await {
                        tracing::warn!(error = %e, "reroute not applied");
                    }
                }
                outcome
            }
            .into_actor(act)
        }))
    }
}
