//! Prescriptions tracked on the queue through the MLLP listener, sent by the Python `hl7`
//! package's `mllp_send`: RDE^O11 orders and RDS^O13 dispenses, committed before their AA.

mod common;

use common::hl7_peer::{hl7_gateway_with, kill_9_while_the_ack_is_held, mllp_send};
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

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

fn alerts(gw: &Gateway) -> Vec<Value> {
    gw.get_json("/api/v1/alerts?all=true")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The alerts of one kind, oldest first.
fn alerts_of(gw: &Gateway, kind: &str) -> Vec<Value> {
    let mut found: Vec<Value> = alerts(gw)
        .into_iter()
        .filter(|a| a["kind"] == kind)
        .collect();
    found.reverse();
    found
}

const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";

/// An RDE^O11 of `code` (RxNorm) with the extra segments `extra`.
fn rde_of(control: &str, mrn: &str, order: &str, code: &str, extra: &str) -> String {
    format!(
        "MSH|^~\\&|PHARM|HOSP|EDGE|CLINIC|20261124150000||RDE^O11^RDE_O11|{control}|P|2.5.1\n\
         PID|1||{mrn}^^^CLINIC^MR||POE^PAT\n\
         ORC|NW|{order}|F-{order}\n\
         RXE|1^BID|{code}^{DRUG} 10 mg^RXN|10||mg\n{extra}"
    )
}

#[test]
fn issues_allergies_and_prescriptions_from_the_ehr_and_the_pharmacy_alert_clinical_staff_once() {
    use common::fhir_server::{FhirServer, MRN};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FhirServer::start(dir.path(), &[]);
    let roe = server.create_patient("MRN-77", "Roe", "Rita", "1970-01-01");
    let roe_id = roe["id"].as_str().expect("patient id").to_string();
    let doe = server.create_patient("MRN-78", "Doe", "Dan", "1971-01-01");
    let doe_id = doe["id"].as_str().expect("patient id").to_string();
    let allergy = |patient: &str, codes: &[&str]| {
        let coding: Vec<Value> = codes
            .iter()
            .map(|c| json!({"system": RXNORM, "code": c}))
            .collect();
        server.call(
            "POST",
            "/AllergyIntolerance",
            Some(json!({
                "resourceType": "AllergyIntolerance",
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
                "code": {"coding": coding, "text": "Penicillin"},
                "patient": {"reference": format!("Patient/{patient}")},
                "reaction": [{"manifestation": [{"text": "Hives"}]}]
            })),
        )
    };
    // Recorded long before the visit: read all the same once the patient is queued.
    allergy(&roe_id, &["7980", "723"]);
    let port = free_port();
    let mut gw = Gateway::new(
        dir.path(),
        &format!(
            "[connectors.hl7v2]\nlisten = \"127.0.0.1:{port}\"\n\
             [connectors.fhir]\nbase_url = \"{}\"\nidentifier_system = \"{MRN}\"\nlookup_timeout_ms = 2000\n\
             [connectors.fhir.pharmacy]\npoll_interval_s = 1\n{PHARMACY}\
             [[connectors.pharmacy.alert_rules]]\nsegment = \"NTE\"\nfield = 3\nmatch = \"interaction\"\n\
             [[connectors.pharmacy.alert_rules]]\nsegment = \"ZAL\"\nfield = 2\n\
             [alerts]\nack_within_s = 3600\n",
            server.base()
        ),
    );
    gw.start();
    let roe_entry = check_in(&gw, "MRN-77");
    assert_eq!(roe_entry["demographics"]["patient_id"], roe_id.as_str());
    let doe_entry = check_in(&gw, "MRN-78");
    wait_for(
        "the queued patient's allergy",
        Duration::from_secs(20),
        || {
            (journal_items(&gw, &["--kind", "fhir.allergyintolerance_changed"]).len() == 1)
                .then_some(())
        },
    );

    // The pharmacy's RDE of an allergen: alerted in the message's transaction, before its AA.
    send(
        dir.path(),
        port,
        &rde_of("A-1", "MRN-77", "RX-1", "7980", ""),
        "A-1",
    );
    let allergic = alerts_of(&gw, "allergy");
    assert_eq!(allergic.len(), 1, "{allergic:?}");
    assert_eq!(allergic[0]["code"], "7980");
    assert_eq!(allergic[0]["entry"], roe_entry["id"]);
    assert_eq!(allergic[0]["reason"], "allergy_code_match");

    // An RDE whose NTE reports an interaction, and one with a ZAL alert: one alert each, also
    // when resent; an NTE saying something else raises nothing.
    let noted = rde_of(
        "A-2",
        "MRN-77",
        "RX-2",
        "1191",
        "NTE|1||DRUG INTERACTION with Warfarin: bleeding risk\n",
    );
    let ack = send(dir.path(), port, &noted, "A-2");
    assert_eq!(send(dir.path(), port, &noted, "A-2"), ack, "the stored ACK");
    send(
        dir.path(),
        port,
        &rde_of(
            "A-3",
            "MRN-78",
            "RX-3",
            "1191",
            "ZAL|1|DUP^Duplicate therapy\n",
        ),
        "A-3",
    );
    send(
        dir.path(),
        port,
        &rde_of("A-4", "MRN-78", "RX-4", "1191", "NTE|1||Take with food\n"),
        "A-4",
    );
    let detected = alerts_of(&gw, "detected_issue");
    let summary: Vec<(Value, Value, Value)> = detected
        .iter()
        .map(|a| (a["entry"].clone(), a["code"].clone(), a["reason"].clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (roe_entry["id"].clone(), json!("1191"), json!("hl7:NTE-3")),
            (doe_entry["id"].clone(), json!("1191"), json!("hl7:ZAL-2"))
        ]
    );

    // An allergy recorded after the prescription alerts on it too.
    allergy(&doe_id, &["1191"]);
    wait_for(
        "the allergy to a prescription already given",
        Duration::from_secs(20),
        || {
            alerts_of(&gw, "allergy")
                .into_iter()
                .find(|a| a["entry"] == doe_entry["id"])
        },
    );

    // The EHR's DetectedIssue for a queued patient: codes only.
    server.call(
        "POST",
        "/DetectedIssue",
        Some(json!({
            "resourceType": "DetectedIssue", "status": "final", "severity": "high",
            "code": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "DRG"}]},
            "patient": {"reference": format!("Patient/{roe_id}")},
            "detail": "Warfarin and aspirin: bleeding risk"
        })),
    );
    let issue = wait_for("the EHR's detected issue", Duration::from_secs(20), || {
        alerts_of(&gw, "detected_issue")
            .into_iter()
            .find(|a| a["code"] == "DRG")
    });
    assert_eq!(issue["reason"], "severity:high");
    assert_eq!(issue["entry"], roe_entry["id"]);

    // A MedicationRequest and its dispenses polled from the EHR move the board as RDE/RDS do.
    let request = server.call(
        "POST",
        "/MedicationRequest",
        Some(json!({
            "resourceType": "MedicationRequest", "status": "active", "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "723"}], "text": DRUG},
            "subject": {"reference": format!("Patient/{roe_id}")}
        })),
    );
    let order = format!(
        "MedicationRequest/{}",
        request["id"].as_str().expect("request id")
    );
    wait_for(
        "the polled request's allergy",
        Duration::from_secs(20),
        || {
            alerts_of(&gw, "allergy")
                .into_iter()
                .find(|a| a["code"] == "723")
        },
    );
    let mut dispense = server.call(
        "POST",
        "/MedicationDispense",
        Some(json!({
            "resourceType": "MedicationDispense", "status": "preparation",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "723"}], "text": DRUG},
            "subject": {"reference": format!("Patient/{roe_id}")},
            "authorizingPrescription": [{"reference": order}]
        })),
    );
    let cell = |want: &str| {
        let want = want.to_string();
        wait_for(&want, Duration::from_secs(20), || {
            board_cell(&gw, "G-001").contains(&want).then_some(())
        })
    };
    cell("prescription in preparation");
    dispense["status"] = json!("in-progress");
    let path = format!(
        "/MedicationDispense/{}",
        dispense["id"].as_str().expect("dispense id")
    );
    server.call("PUT", &path, Some(dispense.clone()));
    let told = wait_for("ready for pickup", Duration::from_secs(20), || {
        ready_told(&gw).into_iter().find(|n| n["order"] == order)
    });
    assert_eq!(told["entry"], roe_entry["id"]);
    dispense["status"] = json!("completed");
    server.call("PUT", &path, Some(dispense));
    cell("prescription picked up");
    assert_eq!(
        journal_items(&gw, &["--kind", "fhir.medicationdispense_changed"]).len(),
        3,
        "each version once"
    );
    assert_eq!(ready_told(&gw).len(), 1, "ready once");

    // Every alert once, however often the EHR was read; acknowledged and audited.
    let all = alerts(&gw);
    assert_eq!(all.len(), 7, "{all:?}");
    let id = issue["id"].as_i64().expect("alert id");
    let (status, _) = post(
        &gw.url(&format!("/api/v1/alerts/{id}/ack")),
        &json!({ "by": "nurse-1" }),
    );
    assert_eq!(status, 200);
    assert!(
        audit_log(&gw)
            .iter()
            .any(|(action, by, _)| action == "alert.acknowledged" && by == "api:nurse-1")
    );
    let page = gw.get_text("/");
    for shown in notice_texts(&gw)
        .into_iter()
        .chain([page])
        .chain(alerts(&gw).iter().map(Value::to_string))
    {
        for name in [DRUG, "Warfarin", "Penicillin", "Hives", "Roe"] {
            assert!(!shown.contains(name), "{name} shown: {shown}");
        }
    }
}

/// An ADT^A08 of `mrn` listing the allergies `al1s` (AL1 segments).
fn a08_with(control: &str, mrn: &str, al1s: &str) -> String {
    format!(
        "MSH|^~\\&|HIS|HOSP|EDGE|CLINIC|20261124150000||ADT^A08^ADT_A01|{control}|P|2.5.1\n\
         EVN|A08|20261124150000\n\
         PID|1||{mrn}^^^CLINIC^MR||POE^PAT\n{al1s}"
    )
}

#[test]
fn hl7_al1_allergies_meet_prescriptions_and_a_later_list_without_one_retires_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, port) = hl7_gateway_with(dir.path(), PHARMACY);
    let queued = check_in(&gw, "MRN-7");
    // The patient's allergy list (AL1s) and a prescription, each answered AA: the alerts are
    // decided in the transaction the AA waits for, so the AA is the sign to look.
    let list = |control: &str, al1s: &str| {
        send(dir.path(), port, &a08_with(control, "MRN-7", al1s), control);
    };
    let order = |control: &str, order: &str, code: &str| {
        send(
            dir.path(),
            port,
            &rde_of(control, "MRN-7", order, code, ""),
            control,
        );
    };
    let both = "AL1|1|DA|7980^Penicillin G^RXN|SV|Hives\nAL1|2|DA|1191^Aspirin^RXN|MO\n";
    list("A-1", both);
    // A prescription of a listed allergen, read after the list: one alert naming the code, on
    // the entry the patient was checked in with by the same identifier.
    order("R-1", "RX-1", "7980");
    let raised = alerts_of(&gw, "allergy");
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0]["entry"], queued["id"]);
    assert_eq!(raised[0]["code"], "7980");
    let said = serde_json::to_string(&alerts(&gw)).expect("json");
    assert!(
        !said.contains("Penicillin") && !said.contains("Hives"),
        "{said}"
    );

    // The next list no longer names aspirin: its prescription raises nothing.
    list("A-2", "AL1|1|DA|7980^Penicillin G^RXN|SV\n");
    order("R-2", "RX-2", "1191");
    assert_eq!(alerts_of(&gw, "allergy").len(), 1);
    // A list read after the prescription still meets it.
    list("A-3", both);
    let raised = alerts_of(&gw, "allergy");
    assert_eq!(raised.len(), 2, "{raised:?}");
    assert_eq!(raised[1]["code"], "1191");
}

/// IAM segments (ADT^A60) change the list one allergy at a time: an added allergy stays active
/// when a later message adds another, and a deleted one no longer meets a prescription.
#[test]
fn hl7_iam_allergies_are_added_and_deleted_one_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, port) = hl7_gateway_with(dir.path(), PHARMACY);
    let queued = check_in(&gw, "MRN-8");
    let change = |control: &str, iams: &str| {
        let a60 = format!(
            "MSH|^~\\&|HIS|HOSP|EDGE|CLINIC|20261124150000||ADT^A60^ADT_A60|{control}|P|2.5.1\n\
             EVN|A60|20261124150000\n\
             PID|1||MRN-8^^^CLINIC^MR||POE^PAT\n{iams}"
        );
        send(dir.path(), port, &a60, control);
    };
    let order = |control: &str, order: &str, code: &str| {
        send(
            dir.path(),
            port,
            &rde_of(control, "MRN-8", order, code, ""),
            control,
        );
    };
    change("I-1", "IAM|1|DA|7980^Penicillin G^RXN|SV|Hives|A|AL-1\n");
    change("I-2", "IAM|1|DA|1191^Aspirin^RXN|MO||A|AL-2\n");
    order("R-1", "RX-1", "7980");
    let raised = alerts_of(&gw, "allergy");
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0]["entry"], queued["id"]);
    assert_eq!(raised[0]["code"], "7980");

    change("I-3", "IAM|1|DA|7980^Penicillin G^RXN|SV||D|AL-1\n");
    order("R-2", "RX-2", "7980");
    assert_eq!(alerts_of(&gw, "allergy").len(), 1, "penicillin was deleted");
    order("R-3", "RX-3", "1191");
    let raised = alerts_of(&gw, "allergy");
    assert_eq!(raised.len(), 2, "{raised:?}");
    assert_eq!(raised[1]["code"], "1191");

    // IAM-17: entered in error, and confirmed but inactive, meet nothing; a suspected allergy
    // does.
    change(
        "I-4",
        "IAM|1|DA|2670^Codeine^RXN|MO||A|AL-3||||||||||E\n\
         IAM|2|DA|5640^Ibuprofen^RXN|MO||A|AL-4||||||||||I\n\
         IAM|3|DA|10180^Sulfa^RXN|MO||A|AL-5||||||||||S\n",
    );
    order("R-4", "RX-4", "2670");
    order("R-5", "RX-5", "5640");
    assert_eq!(
        alerts_of(&gw, "allergy").len(),
        2,
        "neither codeine nor ibuprofen"
    );
    order("R-6", "RX-6", "10180");
    let raised = alerts_of(&gw, "allergy");
    assert_eq!(raised.len(), 3, "{raised:?}");
    assert_eq!(raised[2]["code"], "10180");
    let said = serde_json::to_string(&alerts(&gw)).expect("json");
    assert!(
        !said.contains("Penicillin") && !said.contains("Hives"),
        "{said}"
    );
}

#[test]
fn an_interaction_committed_but_not_acknowledged_survives_kill_9_and_its_resend_alerts_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut gw = Gateway::new(
        dir.path(),
        &format!(
            "[connectors.hl7v2]\nlisten = \"127.0.0.1:{port}\"\n{PHARMACY}\
             [[connectors.pharmacy.alert_rules]]\nsegment = \"ZAL\"\nfield = 2\n"
        ),
    )
    .env("CLINIC_GATEWAY_FAULT_HOLD_ACK", "K-1");
    gw.start();
    let queued = check_in(&gw, "MRN-1");
    let order = rde_of("K-1", "MRN-1", "RX-1", "1191", "ZAL|1|DRG^Interaction\n");
    kill_9_while_the_ack_is_held(&mut gw, port, &order);
    // The pharmacy saw no ACK and resends: answered AA from the journal, alerted once.
    send(dir.path(), port, &order, "K-1");
    let raised = alerts(&gw);
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0]["entry"], queued["id"]);
    assert_eq!(raised[0]["reason"], "hl7:ZAL-2");
    assert_eq!(raised[0]["code"], "1191");
}
