//! The local patient queue through its JSON API, with every change relayed to the cloud.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;

fn check_in(gw: &Gateway, queue: &str, body: Value) -> (u16, Value) {
    post(&gw.url(&format!("/api/v1/queues/{queue}/check-in")), &body)
}

fn act(gw: &Gateway, id: i64, action: &str, body: Value) -> (u16, Value) {
    post(
        &gw.url(&format!("/api/v1/queue-entries/{id}/{action}")),
        &body,
    )
}

#[test]
fn queue_orders_by_priority_then_arrival_and_relays_every_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, consumer, gw) = relayed_gateway(dir.path(), "clinic/test-clinic/events/#", "");

    let (status, a) = check_in(
        &gw,
        "general",
        json!({ "patient_ref": "MRN-1", "request_id": "kiosk-1-0001" }),
    );
    assert_eq!(status, 201, "{a}");
    assert_eq!(a["entry"]["ticket"], "G-001");
    let (_, b) = check_in(&gw, "general", json!({ "patient_ref": "MRN-2" }));
    let (_, c) = check_in(
        &gw,
        "general",
        json!({ "patient_ref": "MRN-3", "priority": "urgent", "priority_reason": "chest pain" }),
    );
    assert_eq!(c["entry"]["ticket"], "G-003");
    // A retried kiosk request does not queue the patient twice.
    let (status, again) = check_in(
        &gw,
        "general",
        json!({ "patient_ref": "MRN-1", "request_id": "kiosk-1-0001" }),
    );
    assert_eq!(status, 201);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["entry"]["id"], a["entry"]["id"]);
    // Bad input names its field.
    let (status, e) = check_in(&gw, "general", json!({ "priority": "urgent" }));
    assert_eq!(status, 400);
    assert!(
        e["error"]
            .as_str()
            .unwrap_or("")
            .contains("priority_reason"),
        "{e}"
    );
    assert_eq!(
        check_in(&gw, "bad/name", json!({})).0,
        404,
        "not a queue route"
    );

    let list = gw.get_json("/api/v1/queues?queue=general");
    let tickets: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["ticket"].as_str())
        .collect();
    assert_eq!(
        tickets,
        ["G-003", "G-001", "G-002"],
        "urgent first, then arrival"
    );

    let (status, called) = post(
        &gw.url("/api/v1/queues/general/call-next"),
        &json!({ "room": "Exam 2" }),
    );
    assert_eq!(status, 200);
    assert_eq!(called["entry"]["ticket"], "G-003");
    assert_eq!(called["entry"]["state"], "called");
    let urgent = called["entry"]["id"].as_i64().expect("id");
    assert_eq!(
        act(&gw, urgent, "assign-room", json!({ "room": "Exam 2" })).1["state"],
        "in_room"
    );
    assert_eq!(act(&gw, urgent, "complete", json!({})).1["state"], "done");
    let (status, refused) = act(&gw, urgent, "no-show", json!({}));
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or("")
            .contains("cannot be marked no-show"),
        "{refused}"
    );
    let b_id = b["entry"]["id"].as_i64().expect("id");
    assert_eq!(act(&gw, b_id, "no-show", json!({})).1["state"], "no_show");
    assert_eq!(act(&gw, 999_999, "complete", json!({})).0, 404);

    let page = gw.get_text("/");
    assert!(
        page.contains("Waiting queues") && page.contains("G-001"),
        "the board shows open tickets"
    );
    assert!(!page.contains("MRN-"), "no patient references on the board");

    let kinds = wait_for(
        "every queue change at the cloud",
        Duration::from_secs(30),
        || {
            let kinds: Vec<String> = consumer
                .events()
                .iter()
                .filter(|e| e["key"] == "queue:general")
                .map(|e| {
                    format!(
                        "{}:{}",
                        e["kind"].as_str().unwrap_or(""),
                        e["payload"]["ticket"].as_str().unwrap_or("")
                    )
                })
                .collect();
            (kinds.len() >= 7).then_some(kinds)
        },
    );
    assert_eq!(
        kinds,
        [
            "queue.checked_in:G-001",
            "queue.checked_in:G-002",
            "queue.checked_in:G-003",
            "queue.called:G-003",
            "queue.in_room:G-003",
            "queue.done:G-003",
            "queue.no_show:G-002",
        ]
    );
}
