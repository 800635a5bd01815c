//! Prescriptions, pure: the FHIR MedicationRequest / MedicationDispense an item carries
//! (mapped from RDE^O11 / RDS^O13, or polled) read into a prescription's state, the order in
//! which states may follow each other, and the pickup estimate. No I/O, no clock.

use serde_json::Value;

/// Where a prescription is. Ordered by progress: a state never goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RxState {
    /// Ordered (`MedicationRequest` active; RDE with ORC-1 `NW`).
    Ordered,
    /// The pharmacy is preparing it (`MedicationDispense` `preparation`; ORC-5 `IP`).
    InPreparation,
    /// Ready for pickup (`in-progress`; an RDS without an order status).
    Ready,
    /// Picked up (`completed`; ORC-5 `CM`).
    PickedUp,
    /// Cancelled or stopped at any point.
    Cancelled,
}

impl RxState {
    pub fn as_str(self) -> &'static str {
        match self {
            RxState::Ordered => "ordered",
            RxState::InPreparation => "in_preparation",
            RxState::Ready => "ready",
            RxState::PickedUp => "picked_up",
            RxState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<RxState> {
        [
            RxState::Ordered,
            RxState::InPreparation,
            RxState::Ready,
            RxState::PickedUp,
            RxState::Cancelled,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }

    /// Whether a prescription in `self` moves to `to`: forward only, and nothing after it was
    /// picked up or cancelled (a late or repeated message changes nothing).
    pub fn moves_to(self, to: RxState) -> bool {
        !matches!(self, RxState::PickedUp | RxState::Cancelled) && to > self
    }
}

/// One prescription update read from a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxUpdate {
    /// The order id (placer's ORC-2, else filler's ORC-3).
    pub order: String,
    /// The patient, as entries carry it.
    pub patient_ref: Option<String>,
    /// The EHR's Patient id (polled resources).
    pub patient_id: Option<String>,
    pub state: RxState,
    /// The pharmacy's estimate of when it is ready (`whenPrepared`), as sent.
    pub ready_estimate: Option<String>,
}

/// The prescription updates among `resources`; one without an order id or a patient, or with
/// a status that says nothing about its progress (on hold, unknown), is left out.
pub fn updates(resources: &[Value]) -> Vec<RxUpdate> {
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    resources
        .iter()
        .filter_map(|r| {
            let status = r["status"].as_str();
            let state = match (r["resourceType"].as_str()?, status) {
                ("MedicationRequest", Some("active" | "draft") | None) => RxState::Ordered,
                ("MedicationDispense", Some("preparation")) => RxState::InPreparation,
                ("MedicationDispense", Some("in-progress") | None) => RxState::Ready,
                ("MedicationDispense", Some("completed")) => RxState::PickedUp,
                (
                    "MedicationRequest" | "MedicationDispense",
                    Some("cancelled" | "stopped" | "declined" | "entered-in-error"),
                ) => RxState::Cancelled,
                _ => return None,
            };
            let ids = r["identifier"].as_array()?;
            let order = ids.iter().find_map(|i| text(&i["value"]))?;
            let patient_ref = text(&r["subject"]["identifier"]["value"]);
            let patient_id = r["subject"]["reference"]
                .as_str()
                .and_then(|s| s.strip_prefix("Patient/"))
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            if patient_ref.is_none() && patient_id.is_none() {
                return None;
            }
            Some(RxUpdate {
                order,
                patient_ref,
                patient_id,
                state,
                ready_estimate: text(&r["whenPrepared"]),
            })
        })
        .collect()
}

/// When a ready prescription may be picked up, in Unix ms: the pharmacy's estimate when it
/// sent one in the future, else after the `waiting_before` prescriptions ready before it, at
/// `minutes_per` minutes each.
pub fn pickup_at(estimate_ms: Option<i64>, waiting_before: u32, minutes_per: u32, now: i64) -> i64 {
    match estimate_ms {
        Some(at) if at > now => at,
        _ => now + i64::from(waiting_before) * i64::from(minutes_per) * 60_000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(resource: Value) -> Option<RxUpdate> {
        updates(&[resource]).pop()
    }

    #[test]
    fn orders_and_dispenses_become_states_of_their_order() {
        let rx = |kind: &str, status: Option<&str>| {
            let mut r = json!({
                "resourceType": kind,
                "identifier": [{"value": "ORD-1"}, {"value": "F-1"}],
                "subject": {"identifier": {"value": "MRN-1"}},
                "whenPrepared": "2026-11-24T15:00:00+01:00",
            });
            if let Some(s) = status {
                r["status"] = json!(s);
            }
            check(r).map(|u| (u.order, u.state))
        };
        let state = |kind, status| rx(kind, status).map(|(_, s)| s);
        assert_eq!(
            rx("MedicationRequest", Some("active")),
            Some(("ORD-1".into(), RxState::Ordered))
        );
        assert_eq!(
            state("MedicationRequest", Some("cancelled")),
            Some(RxState::Cancelled)
        );
        assert_eq!(state("MedicationRequest", Some("on-hold")), None);
        assert_eq!(
            state("MedicationDispense", Some("preparation")),
            Some(RxState::InPreparation)
        );
        assert_eq!(state("MedicationDispense", None), Some(RxState::Ready));
        assert_eq!(
            state("MedicationDispense", Some("in-progress")),
            Some(RxState::Ready)
        );
        assert_eq!(
            state("MedicationDispense", Some("completed")),
            Some(RxState::PickedUp)
        );
        assert_eq!(state("Observation", Some("final")), None);
        assert!(
            check(json!({"resourceType": "MedicationRequest", "identifier": [{"value": "O"}]}))
                .is_none(),
            "no patient"
        );
    }

    #[test]
    fn states_move_forward_only_and_stop_when_closed() {
        use RxState::*;
        assert!(Ordered.moves_to(InPreparation));
        assert!(Ordered.moves_to(Ready), "a step may be skipped");
        assert!(!Ready.moves_to(InPreparation), "a late message");
        assert!(!Ready.moves_to(Ready));
        assert!(Ready.moves_to(Cancelled));
        assert!(!PickedUp.moves_to(Cancelled));
        assert!(!Cancelled.moves_to(Ready));
        assert_eq!(RxState::parse("in_preparation"), Some(InPreparation));
    }

    #[test]
    fn pickup_is_the_pharmacys_estimate_else_the_counters_backlog() {
        let now = 1_000_000;
        assert_eq!(pickup_at(Some(now + 60_000), 3, 5, now), now + 60_000);
        assert_eq!(
            pickup_at(Some(now - 1), 3, 5, now),
            now + 15 * 60_000,
            "a past estimate"
        );
        assert_eq!(pickup_at(None, 0, 5, now), now);
    }
}
