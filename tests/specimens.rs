//! Lab orders and specimens through the MLLP listener, sent by the Python `hl7` package's
//! `mllp_send` (a real MLLP client): each specimen tracked on its patient's entry, committed
//! before its AA, and the delays a rejection or a long collection causes the patients behind.

mod common;

use common::hl7_peer::{hl7_gateway_with, kill_9_while_the_ack_is_held, mllp_send};
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

/// Specimens tracked; a delay adds 15 minutes, patients are told past 10.
fn lab(collection_within_s: u64) -> String {
    format!(
        "\n[connectors.lab]\n[connectors.lab.specimens]\ncollection_within_s = {collection_within_s}\ndelay_min = 15\nminutes_per_patient = 10\nnotify_over_min = 10\n"
    )
}

const PID: &str = "PID|1||{mrn}^^^CLINIC^MR||POE^PAT";

fn pid(mrn: &str) -> String {
    PID.replace("{mrn}", mrn)
}

/// An ORM^O01: a glucose order `order` for `mrn`.
fn orm(control: &str, mrn: &str, order: &str) -> String {
    format!(
        "MSH|^~\\&|EHR|HOSP|LIS|LAB|20261124140700||ORM^O01^ORM_O01|{control}|P|2.5.1\n{}\n\
         ORC|NW|{order}|||SC\nOBR|1|{order}||2345-7^Glucose^LN\n",
        pid(mrn)
    )
}

/// A specimen message of type `kind` (`OML^O21^OML_O21`, `OML^O33^OML_O33`, `OUL^R22^OUL_R22`)
/// for `order`, with the SPM fields after SPM-4 given in `spm_tail`.
fn specimen(kind: &str, control: &str, mrn: &str, order: &str, spm: &str) -> String {
    format!(
        "MSH|^~\\&|LIS|LAB|EDGE|CLINIC|20261124141000||{kind}|{control}|P|2.5.1\n{}\n{spm}\n\
         ORC|SC|{order}\nOBR|1|{order}||2345-7^Glucose^LN\n",
        pid(mrn)
    )
}

/// SPM for specimen `id` (whole blood), collected; with `received`, received at the lab;
/// with `rejected`, refused for that reason (SPM-21) in that condition (SPM-24).
fn spm(id: &str, received: bool, rejected: Option<(&str, &str)>) -> String {
    let mut s = format!("SPM|1|{id}||BLD^Whole blood^HL70487|||||||||||||20261124140000+0100");
    if received || rejected.is_some() {
        s.push_str("|20261124141500+0100");
    }
    if let Some((why, condition)) = rejected {
        s.push_str(&format!("|||{why}^Rejected^HL70490|||{condition}"));
    }
    s
}

/// An ORU^R01 with the final glucose result of `order`.
fn oru(control: &str, mrn: &str, order: &str) -> String {
    format!(
        "MSH|^~\\&|LIS|LAB|EDGE|CLINIC|20261124150000||ORU^R01^ORU_R01|{control}|P|2.5.1\n{}\n\
         OBR|1|{order}||2345-7^Glucose^LN{}F\nOBX|1|NM|2345-7^Glucose^LN||7.4|mmol/L|3.5-5.5||||F\n",
        pid(mrn),
        "|".repeat(21)
    )
}

fn check_in(gw: &Gateway, queue: &str, mrn: &str) -> Value {
    let (status, body) = post(
        &gw.url(&format!("/api/v1/queues/{queue}/check-in")),
        &json!({ "patient_ref": mrn }),
    );
    assert_eq!(status, 201, "{body}");
    body["entry"].clone()
}

fn sent_ok(acks: &[String], control: &str) {
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert!(acks[0].contains(&format!("MSA|AA|{control}")), "{acks:?}");
}

/// The tracked specimens, as clinical staff see them.
fn specimens(gw: &Gateway) -> Vec<Value> {
    gw.get_json("/api/v1/specimens")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn state_of(gw: &Gateway, id: &str) -> Value {
    specimens(gw)
        .into_iter()
        .find(|s| s["specimen"] == id)
        .map(|s| s["state"].clone())
        .unwrap_or(Value::Null)
}

/// The `delay` notifications, as (entry, estimated wait, moved by).
fn delays(gw: &Gateway) -> Vec<(Value, Value, Value)> {
    journal_events(gw, "patient.notification")
        .into_iter()
        .filter(|n| n["reason"] == "delay")
        .map(|n| {
            (
                n["entry"].clone(),
                n["estimated_wait_min"].clone(),
                n["delayed_by_min"].clone(),
            )
        })
        .collect()
}

#[test]
fn specimens_go_collected_to_resulted_and_a_rejection_delays_the_patients_behind_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, port) = hl7_gateway_with(dir.path(), &lab(3600));
    let first = check_in(&gw, "lab", "MRN-1");
    let second = check_in(&gw, "lab", "MRN-2");
    let third = check_in(&gw, "lab", "MRN-3");
    let send = |text: &str| mllp_send(dir.path(), port, text);

    // Ordered, collected, sent with its order, received, resulted.
    sent_ok(&send(&orm("OR-1", "MRN-1", "O-1")), "OR-1");
    let collected = specimen(
        "OML^O21^OML_O21",
        "SP-1",
        "MRN-1",
        "O-1",
        &spm("S-1", false, None),
    );
    sent_ok(&send(&collected), "SP-1");
    assert_eq!(state_of(&gw, "S-1"), "collected");
    let shipped = specimen(
        "OML^O33^OML_O33",
        "SP-2",
        "MRN-1",
        "O-1",
        &spm("S-1", false, None),
    );
    sent_ok(&send(&shipped), "SP-2");
    assert_eq!(state_of(&gw, "S-1"), "in_transit");
    let received = specimen(
        "OUL^R22^OUL_R22",
        "SP-3",
        "MRN-1",
        "O-1",
        &spm("S-1", true, None),
    );
    sent_ok(&send(&received), "SP-3");
    assert_eq!(state_of(&gw, "S-1"), "received");
    sent_ok(&send(&oru("RS-1", "MRN-1", "O-1")), "RS-1");
    let row = specimens(&gw)
        .into_iter()
        .find(|s| s["specimen"] == "S-1")
        .expect("S-1");
    assert_eq!(row["state"], "resulted", "{row}");
    assert_eq!(row["entry"], first["id"]);
    assert_eq!(row["order"], "O-1");
    assert_eq!(row["type_code"], "BLD");
    // A late "received" after the result changes nothing.
    let late = specimen(
        "OUL^R22^OUL_R22",
        "SP-4",
        "MRN-1",
        "O-1",
        &spm("S-1", true, None),
    );
    sent_ok(&send(&late), "SP-4");
    assert_eq!(state_of(&gw, "S-1"), "resulted");
    let changes: Vec<Value> = journal_events(&gw, "specimen.status_changed");
    let states: Vec<&str> = changes.iter().filter_map(|e| e["state"].as_str()).collect();
    assert_eq!(
        states,
        ["collected", "in_transit", "received", "resulted"],
        "{changes:?}"
    );
    for e in &changes {
        assert_eq!(e["ticket"], first["ticket"]);
        assert!(!e.to_string().contains("7.4"), "no result value: {e}");
        assert!(!e.to_string().contains("POE"), "no patient data: {e}");
    }
    assert!(delays(&gw).is_empty());

    // A second order's specimen is rejected: the entry needs a recollection, and the two
    // patients behind it are told their wait grew, once each, also when the lab resends.
    sent_ok(&send(&orm("OR-2", "MRN-1", "O-2")), "OR-2");
    let rejected = specimen(
        "OUL^R22^OUL_R22",
        "RJ-1",
        "MRN-1",
        "O-2",
        &spm("S-2", true, Some(("RH", "HEM"))),
    );
    let ack = send(&rejected);
    sent_ok(&ack, "RJ-1");
    assert_eq!(send(&rejected), ack, "the stored ACK");
    let row = specimens(&gw)
        .into_iter()
        .find(|s| s["specimen"] == "S-2")
        .expect("S-2");
    assert_eq!(row["state"], "rejected");
    assert_eq!(row["reject_reason"], "RH");
    assert_eq!(row["condition"], "HEM");
    assert_eq!(row["entry_delay_min"], 15);
    let told = delays(&gw);
    assert_eq!(
        told,
        [
            (second["id"].clone(), json!(25), json!(15)),
            (third["id"].clone(), json!(35), json!(15))
        ],
        "the two behind, once each"
    );
    let notices = notice_texts(&gw);
    assert!(
        notices.contains(&"L-001 (lab): specimen S-2 rejected (RH); recollect".to_string()),
        "{notices:?}"
    );
    let page = gw.get_text("/");
    assert!(page.contains("Lab specimens"), "{page}");
    assert!(page.contains("rejected (RH)"), "{page}");

    // The recollected specimen is a new one; it moves on without delaying anyone again.
    let again = specimen(
        "OML^O33^OML_O33",
        "SP-5",
        "MRN-1",
        "O-2",
        &spm("S-3", false, None),
    );
    sent_ok(&send(&again), "SP-5");
    assert_eq!(state_of(&gw, "S-3"), "in_transit");
    assert_eq!(delays(&gw).len(), 2);

    // A malformed SPM is refused with its reason and nothing of it is kept; the next flows.
    let no_id = specimen("OUL^R22^OUL_R22", "BAD-1", "MRN-1", "O-2", "SPM|1|||BLD");
    let refused = send(&no_id);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].contains("MSA|AR|BAD-1"), "{refused:?}");
    assert!(
        refused[0].contains("SPM 1: SPM-2 (specimen id) is empty"),
        "{refused:?}"
    );
    let bad_time = specimen(
        "OUL^R22^OUL_R22",
        "BAD-2",
        "MRN-1",
        "O-2",
        "SPM|1|S-9||BLD|||||||||||||20261345",
    );
    assert!(send(&bad_time)[0].contains("MSA|AR|BAD-2"));
    let received = specimen(
        "OUL^R22^OUL_R22",
        "SP-6",
        "MRN-1",
        "O-2",
        &spm("S-3", true, None),
    );
    sent_ok(&send(&received), "SP-6");
    assert_eq!(state_of(&gw, "S-3"), "received");
    assert_eq!(state_of(&gw, "S-9"), Value::Null);
    assert!(
        journal_items(&gw, &["--kind", "hl7.oul.specimen_result"])
            .iter()
            .all(|i| !i.to_string().contains("BAD-"))
    );
}

#[test]
fn a_rejection_committed_but_not_acknowledged_survives_kill_9_and_its_resend_delays_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut gw = Gateway::new(
        dir.path(),
        &format!(
            "[connectors.hl7v2]\nlisten = \"127.0.0.1:{port}\"\n{}",
            lab(3600)
        ),
    )
    .env("CLINIC_GATEWAY_FAULT_HOLD_ACK", "KR-1");
    gw.start();
    check_in(&gw, "lab", "MRN-1");
    let behind = check_in(&gw, "lab", "MRN-2");
    sent_ok(
        &mllp_send(dir.path(), port, &orm("KO-1", "MRN-1", "O-1")),
        "KO-1",
    );
    let rejected = specimen(
        "OUL^R22^OUL_R22",
        "KR-1",
        "MRN-1",
        "O-1",
        &spm("S-1", true, Some(("QS", "CLOT"))),
    );
    kill_9_while_the_ack_is_held(&mut gw, port, &rejected);
    // The lab saw no ACK and resends: answered AA from the journal, applied once.
    sent_ok(&mllp_send(dir.path(), port, &rejected), "KR-1");
    assert_eq!(state_of(&gw, "S-1"), "rejected");
    assert_eq!(delays(&gw), [(behind["id"].clone(), json!(25), json!(15))]);
    let rejections = journal_events(&gw, "specimen.status_changed")
        .into_iter()
        .filter(|e| e["state"] == "rejected")
        .count();
    assert_eq!(rejections, 1);
}

#[test]
fn a_collection_running_long_delays_the_patients_behind_once_per_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, port) = hl7_gateway_with(dir.path(), &lab(1));
    let first = check_in(&gw, "lab", "MRN-1");
    let behind = check_in(&gw, "lab", "MRN-2");
    sent_ok(
        &mllp_send(dir.path(), port, &orm("LO-1", "MRN-1", "O-1")),
        "LO-1",
    );
    let late =
        |order: &str| format!("L-001 (lab): specimen collection for order {order} running long");
    wait_for(
        "the first collection running long",
        Duration::from_secs(20),
        || notice_texts(&gw).contains(&late("O-1")).then_some(()),
    );
    assert_eq!(delays(&gw), [(behind["id"].clone(), json!(25), json!(15))]);
    // A second order runs long too: the watch has looked again, and the first order delayed
    // no one a second time.
    sent_ok(
        &mllp_send(dir.path(), port, &orm("LO-2", "MRN-1", "O-2")),
        "LO-2",
    );
    wait_for(
        "the second collection running long",
        Duration::from_secs(20),
        || notice_texts(&gw).contains(&late("O-2")).then_some(()),
    );
    let notices = notice_texts(&gw);
    assert_eq!(
        notices.iter().filter(|t| **t == late("O-1")).count(),
        1,
        "{notices:?}"
    );
    assert_eq!(
        delays(&gw),
        [
            (behind["id"].clone(), json!(25), json!(15)),
            (behind["id"].clone(), json!(40), json!(15))
        ]
    );
    // A collected specimen stops the clock: its order is not pending any more.
    let collected = specimen(
        "OML^O21^OML_O21",
        "LC-1",
        "MRN-1",
        "O-2",
        &spm("S-1", false, None),
    );
    sent_ok(&mllp_send(dir.path(), port, &collected), "LC-1");
    let row = specimens(&gw).pop().expect("S-1");
    assert_eq!(row["entry"], first["id"]);
    assert_eq!(row["entry_delay_min"], 30);
}

#[test]
fn orders_and_specimens_polled_from_the_ehr_are_tracked_and_a_rejection_delays_once() {
    use common::fhir_server::{FhirServer, MRN};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FhirServer::start(dir.path(), &[]);
    let patient = server.create_patient("MRN-77", "Roe", "Rita", "1970-01-01");
    let patient_id = patient["id"].as_str().expect("patient id").to_string();
    server.create_patient("MRN-78", "Doe", "Dan", "1971-01-01");
    let mut gw = Gateway::new(
        dir.path(),
        &format!(
            "[connectors.fhir]\nbase_url = \"{}\"\nidentifier_system = \"{MRN}\"\nlookup_timeout_ms = 2000\n\
             [connectors.fhir.results]\npoll_interval_s = 1\n{}",
            server.base(),
            lab(3600)
        ),
    );
    gw.start();
    // Checked in by identifier: the EHR's lookup links each entry to its Patient.
    let queued = check_in(&gw, "lab", "MRN-77");
    assert_eq!(queued["demographics"]["patient_id"], patient_id.as_str());
    let behind = check_in(&gw, "lab", "MRN-78");
    let subject = json!({ "reference": format!("Patient/{patient_id}") });
    let order = server.call(
        "POST",
        "/ServiceRequest",
        Some(json!({
            "resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
            "subject": subject
        })),
    );
    let order_ref = format!("ServiceRequest/{}", order["id"].as_str().expect("id"));
    let mut specimen = server.call(
        "POST",
        "/Specimen",
        Some(json!({
            "resourceType": "Specimen", "status": "available",
            "type": {"coding": [{"code": "BLD"}]},
            "subject": subject,
            "request": [{"reference": order_ref}],
            "collection": {"collectedDateTime": "2026-11-24T09:00:00+01:00"}
        })),
    );
    let id = format!("Specimen/{}", specimen["id"].as_str().expect("id"));
    let row = wait_for("the polled specimen", Duration::from_secs(20), || {
        specimens(&gw).into_iter().find(|s| s["specimen"] == id)
    });
    assert_eq!(row["state"], "collected", "{row}");
    assert_eq!(row["order"], order_ref.as_str());
    assert_eq!(row["entry"], queued["id"]);

    // The lab rejects it: the patient behind is told once, however often it is polled.
    specimen["status"] = json!("unsatisfactory");
    specimen["extension"] = json!([{
        "url": "http://hl7.org/fhir/StructureDefinition/specimen-rejectReason",
        "valueCodeableConcept": {"coding": [{"code": "QS"}]}
    }]);
    let path = format!("/{id}");
    server.call("PUT", &path, Some(specimen));
    wait_for("the rejection polled", Duration::from_secs(20), || {
        (state_of(&gw, &id) == "rejected").then_some(())
    });
    assert_eq!(delays(&gw), [(behind["id"].clone(), json!(25), json!(15))]);
    let versions = journal_items(&gw, &["--kind", "fhir.specimen_changed"]).len();
    assert_eq!(versions, 2, "each version once");
    let states: Vec<Value> = journal_events(&gw, "specimen.status_changed")
        .into_iter()
        .map(|e| e["state"].clone())
        .collect();
    assert_eq!(states, [json!("collected"), json!("rejected")]);
}
