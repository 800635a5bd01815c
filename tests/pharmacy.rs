//! Prescriptions tracked on the queue through the MLLP listener, sent by the Python `hl7`
//! package's `mllp_send`: RDE^O11 orders and RDS^O13 dispenses, committed before their AA.

mod common;

use common::hl7_peer::{hl7_gateway_with, mllp_send};
use common::*;
use serde_json::{Value, json};

const PHARMACY: &str = "\n[connectors.pharmacy]\nminutes_per_prescription = 10\n";

/// The drug, which must never reach the board, a notice or an event.
const DRUG: &str = "Lisinopril";

fn rde(control: &str, mrn: &str, order: &str) -> String {
    format!(
        "MSH|^~\\&|PHARM|HOSP|EDGE|CLINIC|20261124150000||RDE^O11^RDE_O11|{control}|P|2.5.1\n\
         PID|1||{mrn}^^^CLINIC^MR||POE^PAT\n\
         ORC|NW|{order}|F-{order}\n\
         RXE|1^BID|00093-7180^{DRUG} 10 mg^NDC|10||mg\n"
    )
}

/// A dispense of `order` with order status ORC-5 `status` (empty: dispensed, ready) and
/// RXD-3 `when` (the pharmacy's estimate while preparing).
fn rds(control: &str, mrn: &str, order: &str, status: &str, when: &str) -> String {
    format!(
        "MSH|^~\\&|PHARM|HOSP|EDGE|CLINIC|20261124151000||RDS^O13^RDS_O13|{control}|P|2.5.1\n\
         PID|1||{mrn}^^^CLINIC^MR||POE^PAT\n\
         ORC|RE|{order}|F-{order}||{status}\n\
         RXD|1|00093-7180^{DRUG} 10 mg^NDC|{when}|30|TAB\n"
    )
}

fn check_in(gw: &Gateway, mrn: &str) -> Value {
    let (status, body) = post(
        &gw.url("/api/v1/queues/general/check-in"),
        &json!({ "patient_ref": mrn }),
    );
    assert_eq!(status, 201, "{body}");
    body["entry"].clone()
}

fn send(dir: &std::path::Path, port: u16, text: &str, control: &str) -> Vec<String> {
    let acks = mllp_send(dir, port, text);
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert!(acks[0].contains(&format!("MSA|AA|{control}")), "{acks:?}");
    acks
}

fn ready_told(gw: &Gateway) -> Vec<Value> {
    journal_events(gw, "patient.notification")
        .into_iter()
        .filter(|n| n["reason"] == "medication_ready")
        .collect()
}

/// The board's pharmacy cell of ticket `ticket`.
fn board_cell(gw: &Gateway, ticket: &str) -> String {
    let page = gw.get_text("/");
    assert!(!page.contains(DRUG), "no drug on the board");
    let row = page
        .split("<tr>")
        .find(|r| r.contains(&format!("<b>{ticket}</b>")))
        .unwrap_or_else(|| panic!("{ticket} on the board: {page}"))
        .to_string();
    // The last cell of the row.
    row.rsplit("<td>")
        .next()
        .and_then(|cell| cell.split("</td>").next())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_prescription_moves_from_ordered_to_picked_up_on_the_board_and_ready_tells_the_patient() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, port) = hl7_gateway_with(dir.path(), PHARMACY);
    let first = check_in(&gw, "MRN-1");
    check_in(&gw, "MRN-2");

    send(dir.path(), port, &rde("O-1", "MRN-1", "RX-1"), "O-1");
    assert_eq!(board_cell(&gw, "G-001"), "prescription ordered");
    send(
        dir.path(),
        port,
        &rds("D-1", "MRN-1", "RX-1", "IP", ""),
        "D-1",
    );
    assert_eq!(board_cell(&gw, "G-001"), "prescription in preparation");
    assert!(ready_told(&gw).is_empty(), "not ready yet");

    // Another patient's prescription is ready first: one waiting at the counter before it.
    send(
        dir.path(),
        port,
        &rds("D-2", "MRN-2", "RX-2", "", ""),
        "D-2",
    );
    let dispensed = rds("D-3", "MRN-1", "RX-1", "", "");
    let ack = send(dir.path(), port, &dispensed, "D-3");
    assert_eq!(board_cell(&gw, "G-001"), "prescription ready");
    let told = ready_told(&gw);
    assert_eq!(told.len(), 2, "{told:?}");
    let mine = told
        .iter()
        .find(|n| n["order"] == "RX-1")
        .expect("RX-1 told");
    let other = told
        .iter()
        .find(|n| n["order"] == "RX-2")
        .expect("RX-2 told");
    assert_eq!(mine["entry"], first["id"]);
    let at = |n: &Value| {
        n["estimated_pickup_at"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .unwrap_or_else(|| panic!("an estimate: {n}"))
    };
    // One prescription ready before it at 10 minutes each: its estimate is 10 minutes past
    // what it would be with an empty counter (the other one's, computed a moment earlier).
    let later = at(mine).duration_since(at(other)).as_secs();
    assert!((600..660).contains(&later), "{later} s");
    assert!(
        notice_texts(&gw).contains(&"G-001 (general): prescription RX-1 ready for pickup".into())
    );

    // A resend, and a late order message, change nothing.
    assert_eq!(send(dir.path(), port, &dispensed, "D-3"), ack);
    send(dir.path(), port, &rde("O-2", "MRN-1", "RX-1"), "O-2");
    assert_eq!(ready_told(&gw).len(), 2);
    assert_eq!(board_cell(&gw, "G-001"), "prescription ready");

    send(
        dir.path(),
        port,
        &rds("D-4", "MRN-1", "RX-1", "CM", ""),
        "D-4",
    );
    assert_eq!(board_cell(&gw, "G-001"), "prescription picked up");
    for text in notice_texts(&gw).into_iter().chain(
        journal_events(&gw, "patient.notification")
            .iter()
            .map(Value::to_string),
    ) {
        assert!(!text.contains(DRUG) && !text.contains("00093"), "{text}");
    }
}

#[test]
fn the_pharmacys_own_estimate_is_the_pickup_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, port) = hl7_gateway_with(dir.path(), PHARMACY);
    check_in(&gw, "MRN-1");
    send(dir.path(), port, &rde("O-1", "MRN-1", "RX-9"), "O-1");
    let ready = rds("D-1", "MRN-1", "RX-9", "", "20301124150000+0000");
    send(dir.path(), port, &ready, "D-1");
    let told = ready_told(&gw);
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0]["estimated_pickup_at"], "2030-11-24T15:00:00Z");
    // A prescription for a patient not in the queue is not tracked.
    send(
        dir.path(),
        port,
        &rds("D-2", "MRN-7", "RX-7", "", ""),
        "D-2",
    );
    assert_eq!(ready_told(&gw).len(), 1);
}
