//! Laboratory results through the MLLP listener, sent by the Python `hl7` package's
//! `mllp_send` (a real MLLP client): what a result does to the queue, committed before its AA.

mod common;

use common::hl7_peer::{hl7_gateway_with, kill_9_while_the_ack_is_held, mllp_send};
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

/// Glucose (2345-7) results change care in `general`.
const LAB: &str = "\n[connectors.lab]\n[[connectors.lab.priority]]\nqueue = \"general\"\ncodes = [\"2345-7\"]\npriority = \"elevated\"\n";

/// An ORU^R01 for `mrn` with one OBX: test `code`, value `value`, OBX-8 `flag`, OBX-11
/// `status`.
fn oru(control: &str, mrn: &str, code: &str, value: &str, flag: &str, status: &str) -> String {
    format!(
        "MSH|^~\\&|LIS|HOSP|EDGE|CLINIC|20261124140700||ORU^R01^ORU_R01|{control}|P|2.5.1\n\
         PID|1||{mrn}^^^CLINIC^MR||POE^PAT\n\
         OBR|1|PL-{control}|FI-{control}|24323-8^Metabolic panel^LN|||20261124140000\n\
         OBX|1|NM|{code}^Test^LN||{value}|mmol/L|3.5-5.5|{flag}|||{status}\n"
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

fn entry(gw: &Gateway, id: &Value) -> Value {
    let all = gw.get_json("/api/v1/queues");
    all.as_array()
        .into_iter()
        .flatten()
        .find(|e| e["id"] == *id)
        .cloned()
        .unwrap_or_else(|| panic!("entry {id} in {all}"))
}

/// The `patient.notification` events with `reason`, as (entry, reason).
fn notifications(gw: &Gateway, reason: &str) -> Vec<Value> {
    journal_events(gw, "patient.notification")
        .into_iter()
        .filter(|n| n["reason"] == reason)
        .collect()
}

fn sent_ok(acks: &[String], control: &str) {
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert!(acks[0].contains(&format!("MSA|AA|{control}")), "{acks:?}");
}

#[test]
fn final_result_for_a_queued_patient_tells_them_and_staff_and_raises_by_the_queue_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, port) = hl7_gateway_with(dir.path(), LAB);
    let queued = check_in(&gw, "general", "MRN-1");
    let other = check_in(&gw, "general", "MRN-2");

    // The AA comes after the commit of the message and of everything it did.
    let acks = mllp_send(
        dir.path(),
        port,
        &oru("R-1", "MRN-1", "2345-7", "7.4", "H", "F"),
    );
    sent_ok(&acks, "R-1");

    let told = notifications(&gw, "lab_results_ready");
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0]["entry"], queued["id"]);
    assert_eq!(told[0]["patient_ref"], "MRN-1");
    let raised = entry(&gw, &queued["id"]);
    assert_eq!(raised["priority"], "elevated", "{raised}");
    assert_eq!(entry(&gw, &other["id"])["priority"], "normal");
    let changed = journal_events(&gw, "queue.priority_changed");
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0]["id"], queued["id"]);
    let notices = notice_texts(&gw);
    assert!(
        notices.contains(&"G-001 (general): 1 lab result ready".to_string()),
        "{notices:?}"
    );
    assert!(
        notices.contains(
            &"G-001 (general): priority raised to elevated by a lab result (2345-7)".to_string()
        ),
        "{notices:?}"
    );
    // No value leaves in an event or a notice.
    for text in notices
        .iter()
        .cloned()
        .chain(told.iter().map(Value::to_string))
        .chain(changed.iter().map(Value::to_string))
    {
        assert!(!text.contains("7.4"), "{text}");
    }

    // A result for someone not in the queue is journaled only.
    let acks = mllp_send(
        dir.path(),
        port,
        &oru("R-2", "MRN-9", "2345-7", "7.1", "", "F"),
    );
    sent_ok(&acks, "R-2");
    assert_eq!(notifications(&gw, "lab_results_ready").len(), 1);

    // A second panel for the queued patient: staff are told, the patient already was.
    let acks = mllp_send(
        dir.path(),
        port,
        &oru("R-3", "MRN-1", "2951-2", "140", "", "F"),
    );
    sent_ok(&acks, "R-3");
    let ready = notice_texts(&gw)
        .into_iter()
        .filter(|t| t == "G-001 (general): 1 lab result ready")
        .count();
    assert_eq!(ready, 2);
    assert_eq!(notifications(&gw, "lab_results_ready").len(), 1);
}

#[test]
fn preliminary_results_do_nothing_and_a_resent_final_changes_nothing_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, port) = hl7_gateway_with(dir.path(), LAB);
    let queued = check_in(&gw, "general", "MRN-1");

    let acks = mllp_send(
        dir.path(),
        port,
        &oru("P-1", "MRN-1", "2345-7", "7.4", "", "P"),
    );
    sent_ok(&acks, "P-1");
    assert!(notifications(&gw, "lab_results_ready").is_empty());
    assert_eq!(entry(&gw, &queued["id"])["priority"], "normal");

    // The corrected result arrives, then the lab resends it.
    let corrected = oru("C-1", "MRN-1", "2345-7", "7.6", "", "C");
    let first = mllp_send(dir.path(), port, &corrected);
    sent_ok(&first, "C-1");
    let again = mllp_send(dir.path(), port, &corrected);
    assert_eq!(first, again, "the stored ACK");
    assert_eq!(notifications(&gw, "lab_results_ready").len(), 1);
    assert_eq!(journal_events(&gw, "queue.priority_changed").len(), 1);
    let ready = notice_texts(&gw)
        .into_iter()
        .filter(|t| t.contains("lab result ready"))
        .count();
    assert_eq!(ready, 1);
}

#[test]
fn result_committed_but_not_acknowledged_survives_kill_9_and_its_resend_applies_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut gw = Gateway::new(
        dir.path(),
        &format!("[connectors.hl7v2]\nlisten = \"127.0.0.1:{port}\"\n{LAB}"),
    )
    .env("CLINIC_GATEWAY_FAULT_HOLD_ACK", "K-1");
    gw.start();
    let queued = check_in(&gw, "general", "MRN-1");
    let result = oru("K-1", "MRN-1", "2345-7", "7.4", "", "F");
    kill_9_while_the_ack_is_held(&mut gw, port, &result);
    // The lab saw no ACK and resends: it is answered AA from the journal, applied once.
    let acks = mllp_send(dir.path(), port, &result);
    sent_ok(&acks, "K-1");
    assert_eq!(notifications(&gw, "lab_results_ready").len(), 1);
    assert_eq!(entry(&gw, &queued["id"])["priority"], "elevated");
    assert_eq!(journal_events(&gw, "queue.priority_changed").len(), 1);
}

/// Potassium (2823-3) above 6.2 or below 2.8 is critical, whatever its flags.
const CRITICAL: &str = "\n[[connectors.lab.critical]]\ncode = \"2823-3\"\nlow = 2.8\nhigh = 6.2\n";

fn alerts(gw: &Gateway) -> Vec<Value> {
    gw.get_json("/api/v1/alerts?all=true")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn critical_value_makes_entries_urgent_and_alerts_clinical_staff_until_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, port) = hl7_gateway_with(
        dir.path(),
        &format!("{LAB}{CRITICAL}\n[alerts]\nack_within_s = 3600\n"),
    );
    let general = check_in(&gw, "general", "MRN-1");
    let lab = check_in(&gw, "lab", "MRN-1");
    let bystander = check_in(&gw, "general", "MRN-2");

    // Flagged HH by the lab.
    let flagged = oru("CR-1", "MRN-1", "2345-7", "31.5", "HH", "F");
    sent_ok(&mllp_send(dir.path(), port, &flagged), "CR-1");
    for e in [&general, &lab] {
        let now = entry(&gw, &e["id"]);
        assert_eq!(now["priority"], "urgent", "{now}");
        assert_eq!(now["priority_reason"], "critical lab result");
    }
    assert_eq!(entry(&gw, &bystander["id"])["priority"], "normal");
    let raised = alerts(&gw);
    assert_eq!(raised.len(), 2, "one per open entry: {raised:?}");
    for a in &raised {
        assert_eq!(a["kind"], "critical_result");
        assert_eq!(a["code"], "2345-7");
        assert_eq!(a["reason"], "flag:HH");
        assert_eq!(a["level"], 0);
    }
    let page = gw.get_text("/");
    assert!(page.contains("Clinical alerts to acknowledge"), "{page}");
    assert!(page.contains("2345-7 (flag:HH)"), "{page}");
    assert!(!page.contains("31.5"), "no value on the page");

    // Over the configured limit, without a flag; the lab resends it.
    let high = oru("CR-2", "MRN-1", "2823-3", "6.9", "", "C");
    let first = mllp_send(dir.path(), port, &high);
    sent_ok(&first, "CR-2");
    assert_eq!(mllp_send(dir.path(), port, &high), first);
    let limit: Vec<Value> = alerts(&gw)
        .into_iter()
        .filter(|a| a["reason"] == "limit:high")
        .collect();
    assert_eq!(limit.len(), 2, "raised once per entry: {limit:?}");

    // A critical value for a patient not in the queue still reaches clinical staff, once,
    // named by the message that carried it.
    let stranger = oru("CR-3", "MRN-9", "2345-7", "1.9", "LL", "F");
    let ack = mllp_send(dir.path(), port, &stranger);
    sent_ok(&ack, "CR-3");
    assert_eq!(mllp_send(dir.path(), port, &stranger), ack);
    let unqueued: Vec<Value> = alerts(&gw)
        .into_iter()
        .filter(|a| a["entry"].is_null())
        .collect();
    assert_eq!(unqueued.len(), 1, "{unqueued:?}");
    assert_eq!(unqueued[0]["reason"], "flag:LL");
    assert_eq!(unqueued[0]["ticket"], Value::Null);
    assert_eq!(unqueued[0]["origin"], "hl7:LIS^HOSP:CR-3");
    let page = gw.get_text("/");
    assert!(page.contains("not queued (hl7:LIS^HOSP:CR-3)"), "{page}");
    assert!(!page.contains("1.9"), "no value on the page");
    let (status, _) = post(
        &gw.url(&format!(
            "/api/v1/alerts/{}/ack",
            unqueued[0]["id"].as_i64().expect("id")
        )),
        &json!({ "by": "dr-quinn" }),
    );
    assert_eq!(status, 200);

    // Acknowledged once, audited with who did it.
    let id = raised[0]["id"].as_i64().expect("id");
    let ack = |by: &str| {
        post(
            &gw.url(&format!("/api/v1/alerts/{id}/ack")),
            &json!({ "by": by }),
        )
    };
    let (status, body) = ack("dr-house");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["acknowledged_by"], "api:dr-house");
    assert_eq!(ack("dr-house").0, 404, "acknowledged already");
    let open = gw.get_json("/api/v1/alerts");
    assert_eq!(open.as_array().map(Vec::len), Some(3), "{open}");
    assert!(
        audit_log(&gw)
            .iter()
            .any(|(action, actor, detail)| action == "alert.acknowledged"
                && actor == "api:dr-house"
                && detail.contains(&format!("\"alert\":{id}"))),
        "{:?}",
        audit_log(&gw)
    );
    // The cloud got priority changes with ids and codes only.
    for e in journal_events(&gw, "queue.priority_changed") {
        assert!(
            !e.to_string().contains("31.5") && !e.to_string().contains("6.9"),
            "{e}"
        );
    }
}

#[test]
fn unacknowledged_alert_escalates_to_the_second_group_then_the_cloud_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut gw, port) = hl7_gateway_with(
        dir.path(),
        &format!("{LAB}\n[alerts]\nack_within_s = 2\nescalate_to = \"admin\"\n"),
    );
    check_in(&gw, "general", "MRN-1");
    sent_ok(
        &mllp_send(
            dir.path(),
            port,
            &oru("E-1", "MRN-1", "2345-7", "1.1", "LL", "F"),
        ),
        "E-1",
    );
    let id = alerts(&gw)[0]["id"].as_i64().expect("an alert");
    // The daemon dies before anyone acknowledged; the escalation times are in the journal.
    gw.kill9();
    gw.start();
    let escalated =
        format!("G-001 (general): alert {id} not acknowledged in time; escalated to admin");
    wait_for("the escalation to admin", Duration::from_secs(20), || {
        notice_texts(&gw).contains(&escalated).then_some(())
    });
    let events = wait_for(
        "the cloud's alert.escalated",
        Duration::from_secs(20),
        || Some(journal_events(&gw, "alert.escalated")).filter(|e| !e.is_empty()),
    );
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["alert"], id);
    assert_eq!(events[0]["code"], "2345-7");
    assert_eq!(events[0]["escalated_to"], "admin");
    assert!(!events[0].to_string().contains("1.1"), "no value");
    let a = &alerts(&gw)[0];
    assert_eq!(a["level"], 2);
    assert!(
        audit_log(&gw)
            .iter()
            .filter(|(action, ..)| action == "alert.escalated")
            .count()
            >= 2
    );
}

/// The clinic's date `days` from now (the test config's zone is UTC), `YYYYMMDD`.
fn clinic_day(days: u64) -> String {
    let at = std::time::SystemTime::now() + Duration::from_secs(days * 86_400);
    humantime::format_rfc3339(at).to_string()[..10].replace('-', "")
}

#[test]
fn an_appointment_requiring_results_waits_uncallable_in_its_place_until_they_arrive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, port) = hl7_gateway_with(
        dir.path(),
        &format!(
            "\n[connectors.hl7v2.appointments]\nqueue = \"general\"\ncheck_in = \"arrived\"\n{LAB}\n[[connectors.lab.required]]\nappointment_type = \"DIAB-FU\"\ncodes = [\"4548-4\"]\n"
        ),
    );
    let today = clinic_day(0);
    // The booking (SCH-8 the appointment type) is remembered for the patient's arrival.
    let s12 = format!(
        "MSH|^~\\&|SCHED|HOSP|EDGE|CLINIC|{today}0800||SIU^S12^SIU_S12|BOOK-1|P|2.5.1\n\
         SCH|P-A|F-A||||||DIAB-FU^Diabetes follow-up|15|min|||||||||||||||Booked\n\
         TQ1|1||||||{today}0930\n\
         PID|1||MRN-1^^^HOSP^MR||DOE^JOHN\n"
    );
    sent_ok(&mllp_send(dir.path(), port, &s12), "BOOK-1");
    // The patient checks in at the kiosk first; another walks in after them.
    let (status, body) = post(
        &gw.url("/api/v1/queues/general/check-in"),
        &json!({ "patient_ref": "MRN-1", "appointment_ref": "F-A" }),
    );
    assert_eq!(status, 201, "{body}");
    let booked = &body["entry"];
    assert_eq!(booked["awaiting_results"], true, "{body}");
    let walk_in = check_in(&gw, "general", "MRN-2");
    assert!(
        notice_texts(&gw).contains(
            &"G-001 (general): awaiting lab results (4548-4); not callable until they arrive"
                .to_string()
        ),
        "{:?}",
        notice_texts(&gw)
    );
    assert!(gw.get_text("/").contains("waiting, awaiting results"));
    // Not callable: calling it is refused, and call-next takes the walk-in behind it.
    let (status, _) = post(
        &gw.url(&format!("/api/v1/queue-entries/{}/call", booked["id"])),
        &json!({}),
    );
    assert_eq!(status, 409);
    let (status, called) = post(&gw.url("/api/v1/queues/general/call-next"), &json!({}));
    assert_eq!(status, 200, "{called}");
    assert_eq!(called["entry"]["id"], walk_in["id"], "{called}");
    assert_eq!(entry(&gw, &booked["id"])["awaiting_results"], true);
    assert_eq!(journal_events(&gw, "queue.awaiting_results").len(), 1);

    // The required result arrives (final HbA1c): the entry becomes callable in its place.
    sent_ok(
        &mllp_send(
            dir.path(),
            port,
            &oru("A1C-1", "MRN-1", "4548-4", "6.1", "", "F"),
        ),
        "A1C-1",
    );
    assert_eq!(entry(&gw, &booked["id"])["awaiting_results"], false);
    assert!(
        notice_texts(&gw)
            .contains(&"G-001 (general): required lab results arrived; callable".to_string())
    );
    assert_eq!(journal_events(&gw, "queue.results_complete").len(), 1);
    let (status, called) = post(&gw.url("/api/v1/queues/general/call-next"), &json!({}));
    assert_eq!(status, 200, "{called}");
    assert_eq!(called["entry"]["id"], booked["id"]);
}

#[test]
fn a_critical_observation_polled_from_the_ehr_makes_the_entry_urgent_and_alerts() {
    use common::fhir_server::{FhirServer, MRN};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FhirServer::start(dir.path(), &[]);
    let patient = server.create_patient("MRN-77", "Roe", "Rita", "1970-01-01");
    let patient_id = patient["id"].as_str().expect("patient id").to_string();
    let mut gw = Gateway::new(
        dir.path(),
        &format!(
            "[connectors.fhir]\nbase_url = \"{}\"\nidentifier_system = \"{MRN}\"\nlookup_timeout_ms = 2000\n\
             [connectors.fhir.results]\npoll_interval_s = 1\n{LAB}\n[alerts]\nack_within_s = 3600\n",
            server.base()
        ),
    );
    gw.start();
    // Checked in by identifier: the EHR's lookup links the entry to its Patient.
    let queued = check_in(&gw, "general", "MRN-77");
    assert_eq!(
        queued["demographics"]["patient_id"],
        patient_id.as_str(),
        "{queued}"
    );
    server.call(
        "POST",
        "/Observation",
        Some(json!({
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]},
            "subject": {"reference": format!("Patient/{patient_id}")},
            "valueQuantity": {"value": 7.1, "unit": "mmol/L"},
            "interpretation": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                "code": "HH"
            }]}]
        })),
    );
    let raised = wait_for(
        "the alert from the polled Observation",
        Duration::from_secs(20),
        || Some(alerts(&gw)).filter(|a| !a.is_empty()),
    );
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0]["code"], "2823-3");
    assert_eq!(raised[0]["reason"], "flag:HH");
    assert_eq!(entry(&gw, &queued["id"])["priority"], "urgent");
    assert_eq!(notifications(&gw, "lab_results_ready").len(), 1);
    // Polled again and again, the same version raises nothing more.
    let polls = journal_items(&gw, &["--kind", "fhir.observation_changed"]).len();
    assert_eq!(polls, 1);
}

#[test]
fn a_polled_appointments_type_holds_its_entry_until_a_polled_report_brings_the_result() {
    use common::fhir_server::{FhirServer, MRN};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FhirServer::start(dir.path(), &[]);
    let patient = server.create_patient("MRN-77", "Roe", "Rita", "1970-01-01");
    let subject =
        json!({ "reference": format!("Patient/{}", patient["id"].as_str().expect("id")) });
    let today = clinic_day(0);
    let today = format!("{}-{}-{}", &today[..4], &today[4..6], &today[6..]);
    let booked = server.call(
        "POST",
        "/Appointment",
        Some(json!({
            "resourceType": "Appointment", "status": "booked",
            "appointmentType": {"coding": [{"code": "DIAB-FU"}]},
            "serviceType": [{"coding": [{"code": "diabetes"}]}],
            "start": format!("{today}T12:00:00Z"), "end": format!("{today}T12:15:00Z"),
            "participant": [{"actor": subject, "status": "accepted"}]
        })),
    );
    let mut gw = Gateway::new(
        dir.path(),
        &format!(
            "[connectors.fhir]\nbase_url = \"{}\"\nidentifier_system = \"{MRN}\"\nlookup_timeout_ms = 2000\n\
             [connectors.fhir.appointments]\nqueue = \"general\"\ncheck_in = \"booked\"\npoll_interval_s = 1\n\
             [connectors.fhir.results]\npoll_interval_s = 1\n{LAB}\n\
             [[connectors.lab.required]]\nappointment_type = \"DIAB-FU\"\ncodes = [\"4548-4\"]\n",
            server.base()
        ),
    );
    gw.start();
    let queued = wait_for("the appointment queued", Duration::from_secs(20), || {
        gw.get_json("/api/v1/queues?queue=general")
            .as_array()?
            .first()
            .cloned()
    });
    assert_eq!(
        queued["appointment_ref"],
        format!("Appointment/{}", booked["id"].as_str().expect("id"))
    );
    assert_eq!(
        queued["awaiting_results"], true,
        "the EHR's appointment type requires 4548-4: {queued}"
    );

    // A final report of the required panel, polled: the entry is callable, the patient told.
    server.call(
        "POST",
        "/DiagnosticReport",
        Some(json!({
            "resourceType": "DiagnosticReport", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
            "subject": subject, "conclusion": "HbA1c 6.1 %"
        })),
    );
    wait_for("the required result", Duration::from_secs(20), || {
        (entry(&gw, &queued["id"])["awaiting_results"] == false).then_some(())
    });
    assert_eq!(notifications(&gw, "lab_results_ready").len(), 1);
    assert_eq!(journal_events(&gw, "queue.results_complete").len(), 1);
    assert_eq!(
        journal_items(&gw, &["--kind", "fhir.diagnosticreport_changed"]).len(),
        1
    );
    assert!(!gw.get_text("/").contains("6.1"), "no value on the page");
}
