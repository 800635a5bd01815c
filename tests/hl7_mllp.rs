//! The HL7 v2 MLLP listener against the Python `hl7` package's `mllp_send` (a real MLLP
//! client), and raw TCP for framing edge cases.

mod common;

use common::hl7_peer::{Receiver, a08, framed, hl7_gateway_with, mllp_send};
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn hl7_gateway(dir: &std::path::Path) -> (Gateway, u16) {
    hl7_gateway_with(dir, "")
}

/// How many inbound items from an HL7 sender the journal holds for a control id.
fn committed(gw: &Gateway, control_id: &str) -> usize {
    journal_items(gw, &["--source-id", control_id])
        .iter()
        .filter(|i| i["source"].as_str().is_some_and(|s| s.starts_with("hl7:")))
        .count()
}

const A04_V23: &str = "MSH|^~\\&|HIS|HOSP|EDGE|CLINIC|20261124140500||ADT^A04|V23-1|P|2.3\n\
EVN|A04|20261124140500\n\
PID|1||555^^^CLINIC^MR~777^^^SSA||O\\S\\BRIEN^ANNE\\T\\MARIE||19700101|F|||1 MAIN ST\\F\\APT 2^^SPRINGFIELD\n\
NTE|1||line one\\X0D\\line two \\E\\ done\n";

const S12_V251: &str = "MSH|^~\\&|SCHED|HOSP|EDGE|CLINIC|20261124140600||SIU^S12^SIU_S12|V251-1|P|2.5.1\n\
SCH|1|1||||||||30|MIN\n\
PID|1||556^^^CLINIC^MR||ROE^RICHARD\n";

const R01_V28: &str = "MSH|^~\\&|LAB|HOSP|EDGE|CLINIC|20261124140700||ORU^R01^ORU_R01|V28-1|P|2.8\n\
PID|1||557^^^CLINIC^MR||POE^PAT\n\
OBR|1||X1|GLU^Glucose\n\
OBX|1|NM|GLU^Glucose||7.4|mmol/L|||||F\n";

#[test]
fn messages_in_several_versions_are_committed_then_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, port) = hl7_gateway(dir.path());
    let acks = mllp_send(dir.path(), port, &format!("{A04_V23}{S12_V251}{R01_V28}"));
    assert_eq!(acks.len(), 3, "{acks:?}");
    for (ack, id) in acks.iter().zip(["V23-1", "V251-1", "V28-1"]) {
        assert!(ack.contains(&format!("MSA|AA|{id}")), "{ack}");
        assert_eq!(committed(&gw, id), 1, "{id} committed before its AA");
    }
    let health = gw.get_json("/api/v1/actors");
    assert!(health.to_string().contains("\"hl7v2-mllp\""), "{health}");
}

/// An entry's appointment, patient, state, priority and ticket.
fn summary(e: &serde_json::Value) -> serde_json::Value {
    serde_json::json!([
        e["appointment_ref"],
        e["patient_ref"],
        e["state"],
        e["priority"],
        e["ticket"]
    ])
}

#[test]
fn resend_gets_the_same_ack_and_is_not_processed_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, port) = hl7_gateway(dir.path());
    let first = mllp_send(dir.path(), port, S12_V251);
    assert!(first[0].contains("MSA|AA|V251-1"), "{first:?}");
    let again = mllp_send(dir.path(), port, S12_V251);
    assert_eq!(
        first, again,
        "a resend is answered with the stored ACK, byte for byte"
    );
    assert_eq!(committed(&gw, "V251-1"), 1);
}

#[test]
fn resend_after_kill_9_is_answered_without_double_processing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut gw, port) = hl7_gateway(dir.path());
    let first = mllp_send(dir.path(), port, A04_V23);
    assert!(first[0].contains("MSA|AA|V23-1"));
    // The sender saw no ACK (say the connection broke); the gateway dies; the sender resends.
    gw.kill9();
    gw.start();
    wait_for("the MLLP listener", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let again = mllp_send(dir.path(), port, A04_V23);
    assert_eq!(first, again);
    assert_eq!(committed(&gw, "V23-1"), 1);
}

/// Reads MLLP frames from the stream until `n` have arrived.
fn read_acks(stream: &mut TcpStream, n: usize) -> Vec<String> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    while data.iter().filter(|&&b| b == 0x1c).count() < n {
        let got = stream.read(&mut buf).expect("read ACK");
        assert!(
            got > 0,
            "connection closed; got {}",
            String::from_utf8_lossy(&data)
        );
        data.extend_from_slice(&buf[..got]);
    }
    String::from_utf8_lossy(&data)
        .split('\u{1c}')
        .map(|s| s.trim_matches(['\u{0b}', '\r']).to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[test]
fn garbage_split_frames_and_unsupported_types_keep_the_connection_usable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, port) = hl7_gateway(dir.path());
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // Garbage in a frame, noise between frames, then an unsupported type and a good message
    // in a single write.
    let mut batch = framed("\u{1}\u{2}not hl7 at all");
    batch.extend_from_slice(b"\r\nnoise");
    batch.extend(framed("MSH|^~\\&|HIS|HOSP|||2026||ADT^A99|U-1|P|2.5\n"));
    batch.extend(framed("MSH|^~\\&|HIS|HOSP|||2026||ADT^A04|G-1|P|2.2\n"));
    batch.extend(framed(A04_V23));
    s.write_all(&batch).expect("write");
    let acks = read_acks(&mut s, 4);
    assert!(
        acks[0].contains("MSA|AR|") && acks[0].contains("not an HL7 v2 message"),
        "{}",
        acks[0]
    );
    assert!(
        acks[1].contains("MSA|AR|U-1") && acks[1].contains("unsupported message type ADT\\S\\A99"),
        "{}",
        acks[1]
    );
    assert!(
        acks[2].contains("MSA|AR|G-1") && acks[2].contains("unsupported HL7 version"),
        "{}",
        acks[2]
    );
    assert!(acks[3].contains("MSA|AA|V23-1"), "{}", acks[3]);
    // A frame dribbled a few bytes at a time on the same connection.
    for chunk in framed(R01_V28).chunks(7) {
        s.write_all(chunk).expect("write");
        s.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(2));
    }
    let acks = read_acks(&mut s, 1);
    assert!(acks[0].contains("MSA|AA|V28-1"), "{}", acks[0]);
    assert_eq!(
        committed(&gw, "U-1"),
        0,
        "refused messages are not processed"
    );
    assert_eq!(committed(&gw, "V28-1"), 1);
}

#[test]
fn outbound_messages_are_delivered_in_order_retried_and_dead_lettered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let receiver = Receiver::start(dir.path(), port);
    let mut gw = Gateway::new(
        dir.path(),
        &format!(
            "[connectors.hl7v2_out]\nhost = \"127.0.0.1\"\nport = {port}\nack_timeout_ms = 500\nreconnect_initial_ms = 100\nreconnect_max_ms = 200\n\n[destinations.ehr-mllp]\nmax_attempts = 3\nbackoff_initial_ms = 100\nbackoff_max_ms = 200\n"
        ),
    );
    gw.start();
    let outbound = gw.url("/api/v1/hl7/outbound");
    for control in ["OUT-1", "ERR-2", "MUTE-3", "REJ-4", "OUT-5"] {
        let (status, body) = post(&outbound, &a08(control));
        assert_eq!(status, 202, "{body}");
    }
    let (status, again) = post(&outbound, &a08("OUT-1"));
    assert_eq!(
        (status, again["duplicate"].as_bool()),
        (202, Some(true)),
        "a resend is not queued twice"
    );
    let (status, bad) = post(&outbound, &serde_json::json!({ "message": "PID|1" }));
    assert_eq!(status, 400, "{bad}");

    wait_for(
        "every outbound message settled",
        Duration::from_secs(30),
        || {
            let backlog = gw.get_json("/api/v1/backlog");
            let d = &backlog["destinations"]["ehr-mllp"];
            (d["pending"].as_u64().unwrap_or(0) == 0 && d["in_flight"].as_u64().unwrap_or(0) == 0)
                .then_some(())
        },
    );
    let received = receiver.received();
    // One patient: strictly in order; AE and a missing ACK are retried before the next goes.
    assert_eq!(
        received,
        [
            "OUT-1", "ERR-2", "ERR-2", "MUTE-3", "MUTE-3", "REJ-4", "OUT-5"
        ]
    );
    let dead = gw.get_json("/api/v1/dlq?destination=ehr-mllp");
    let dead = dead.as_array().expect("list");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0]["last_error"]
            .as_str()
            .unwrap_or("")
            .starts_with("AR"),
        "{dead:?}"
    );
}

/// The entry with this id, as the queue API shows it (open or closed).
fn entry(gw: &Gateway, id: i64) -> serde_json::Value {
    gw.get_json("/api/v1/queues?closed_since=0")
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["id"] == id)
        .cloned()
        .expect("the entry")
}

/// Queue events of `kind` the journal holds for the cloud.
#[test]
fn ehr_messages_cancel_discharge_and_merge_queue_entries_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, port) = hl7_gateway(dir.path());
    let check_in = |body: serde_json::Value| {
        let (status, reply) = post(&gw.url("/api/v1/queues/general/check-in"), &body);
        assert_eq!(status, 201, "{reply}");
        reply["entry"]["id"].as_i64().expect("id")
    };
    let booked = check_in(serde_json::json!({"patient_ref": "MRN-1", "appointment_ref": "F-1"}));
    let seen = check_in(serde_json::json!({"patient_ref": "MRN-2"}));
    let old_record = check_in(serde_json::json!({"patient_ref": "MRN-OLD"}));
    let (status, _) = post(
        &gw.url(&format!("/api/v1/queue-entries/{seen}/assign-room")),
        &serde_json::json!({"room": "3"}),
    );
    assert_eq!(status, 200);

    // SIU^S15 names the appointment by its filler id (SCH-2); v2.6 with TQ1.
    let s15 = "MSH|^~\\&|SCHED|HOSP|EDGE|CLINIC|20261124150000||SIU^S15^SIU_S12|C-1|P|2.6\n\
SCH|P-1|F-1|||||||15|min|||||||||||||||Cancelled\n\
TQ1|1||||||20261124093000+0100\n\
PID|1||MRN-1^^^HOSP^MR||DOE^JOHN\n";
    // ADT^A03 ends MRN-2's visit; ADT^A40 merges MRN-OLD into MRN-3.
    let a03 = "MSH|^~\\&|HIS|HOSP|EDGE|CLINIC|20261124150100||ADT^A03^ADT_A03|D-1|P|2.5.1\n\
EVN|A03|20261124150100\n\
PID|1||MRN-2^^^HOSP^MR||ROE^RICHARD\n\
PV1|1|O\n";
    let a40 = "MSH|^~\\&|HIS|HOSP|EDGE|CLINIC|20261124150200||ADT^A40^ADT_A39|G-1|P|2.5.1\n\
EVN|A40|20261124150200\n\
PID|1||MRN-3^^^HOSP^MR||POE^PAT\n\
MRG|MRN-OLD^^^HOSP^MR\n";
    for _ in 0..2 {
        let acks = mllp_send(dir.path(), port, &format!("{s15}{a03}{a40}"));
        assert_eq!(acks.len(), 3, "{acks:?}");
        for (ack, id) in acks.iter().zip(["C-1", "D-1", "G-1"]) {
            assert!(ack.contains(&format!("MSA|AA|{id}")), "{ack}");
        }
    }
    assert_eq!(entry(&gw, booked)["state"], "cancelled");
    assert_eq!(entry(&gw, seen)["state"], "done");
    assert_eq!(entry(&gw, old_record)["patient_ref"], "MRN-3");
    assert_eq!(entry(&gw, old_record)["state"], "waiting");
    // The resends changed nothing: one event per change.
    assert_eq!(journal_events(&gw, "queue.cancelled").len(), 1);
    assert_eq!(journal_events(&gw, "queue.done").len(), 1);
    assert_eq!(journal_events(&gw, "queue.patient_merged").len(), 1);
}

#[test]
fn a_call_from_the_queue_is_announced_to_the_ehr_as_an_adt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let receiver = Receiver::start(dir.path(), port);
    let mut gw = Gateway::new(
        dir.path(),
        &format!(
            "[connectors.hl7v2_out]\nhost = \"127.0.0.1\"\nport = {port}\non_call = \"A04\"\nreconnect_initial_ms = 100\nreconnect_max_ms = 200\n"
        ),
    );
    gw.start();
    let check_in = |body: serde_json::Value| {
        let (status, reply) = post(&gw.url("/api/v1/queues/general/check-in"), &body);
        assert_eq!(status, 201, "{reply}");
        reply["entry"]["id"].as_i64().expect("id")
    };
    let known = check_in(serde_json::json!({"patient_ref": "MRN-77"}));
    let walk_in = check_in(serde_json::json!({}));
    let (status, called) = post(
        &gw.url("/api/v1/queues/general/call-next"),
        &serde_json::json!({"room": "Room 3"}),
    );
    assert_eq!((status, called["entry"]["id"].as_i64()), (200, Some(known)));
    let (status, _) = post(
        &gw.url(&format!("/api/v1/queue-entries/{walk_in}/call")),
        &serde_json::json!({"room": "Room 4"}),
    );
    assert_eq!(status, 200);
    let message = wait_for("the ADT at the EHR", Duration::from_secs(20), || {
        receiver.messages().into_iter().next()
    });
    let segments: Vec<&str> = message.lines().collect();
    assert!(segments[0].contains("|ADT^A04^ADT_A01|"), "{message}");
    assert!(
        segments[0].contains("|CLINIC-GATEWAY|test-clinic|"),
        "{message}"
    );
    assert_eq!(segments[2], "PID|1||MRN-77", "{message}");
    assert!(
        segments[3].starts_with("PV1|1|O|^Room 3^^test-clinic|"),
        "{message}"
    );
    // The walk-in names no patient: nothing the EHR could open, so nothing is sent. A notice
    // commits with its call, so once the outbox is empty every notice there was is delivered.
    wait_for("the notice delivered", Duration::from_secs(10), || {
        let backlog = gw.get_json("/api/v1/backlog");
        let d = &backlog["destinations"]["ehr-mllp"];
        let n = |k: &str| d[k].as_u64().unwrap_or(0);
        (n("pending") == 0 && n("in_flight") == 0).then_some(())
    });
    assert_eq!(receiver.messages().len(), 1, "{:?}", receiver.messages());
    let dead = gw.get_json("/api/v1/dlq?destination=ehr-mllp");
    assert_eq!(dead.as_array().map(Vec::len), Some(0), "{dead}");
}

/// The clinic's date `days` from now at UTC+1 (the offset configured below), as `YYYYMMDD`.
fn clinic_day(days: u64) -> String {
    let at = std::time::SystemTime::now() + Duration::from_secs(3600 + days * 86_400);
    humantime::format_rfc3339(at).to_string()[..10].replace('-', "")
}

/// Open entries of the queue `general` as `GET /api/v1/queues` lists them.
fn open_entries(gw: &Gateway) -> Vec<serde_json::Value> {
    gw.get_json("/api/v1/queues?queue=general")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn siu_bookings_for_today_are_queued_once_and_moves_and_cancellations_close_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, port) = hl7_gateway_with(
        dir.path(),
        "\n[connectors.hl7v2.appointments]\nqueue = \"general\"\ncheck_in = \"booked\"\nutc_offset_min = 60\n",
    );
    let (today, tomorrow) = (clinic_day(0), clinic_day(1));
    let send = |text: String, control: &str| {
        let acks = mllp_send(dir.path(), port, &text);
        assert_eq!(acks.len(), 1, "{acks:?}");
        assert!(
            acks[0].contains(&format!("MSA|AA|{control}")),
            "{}",
            acks[0]
        );
    };
    // v2.5.1: the start in TQ1-7, in the clinic's local time (no offset).
    let book_a = |control: &str| {
        format!(
            "MSH|^~\\&|SCHED|HOSP|EDGE|CLINIC|{today}0800||SIU^S12^SIU_S12|{control}|P|2.5.1\n\
SCH|P-A|F-A|||||||15|min|||||||||||||||Booked\n\
TQ1|1||||||{today}0930\n\
PID|1||MRN-10^^^HOSP^MR||DOE^JOHN\n"
        )
    };
    send(book_a("BOOK-A1"), "BOOK-A1");
    let listed = open_entries(&gw);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let a = &listed[0];
    assert_eq!(
        summary(a),
        serde_json::json!(["F-A", "MRN-10", "waiting", "normal", "G-001"])
    );
    let a_id = a["id"].as_i64().expect("id");

    // The same booking under a new control id, and the first message resent: still one entry.
    send(book_a("BOOK-A2"), "BOOK-A2");
    send(book_a("BOOK-A1"), "BOOK-A1");
    assert_eq!(open_entries(&gw).len(), 1);
    assert_eq!(journal_events(&gw, "queue.checked_in").len(), 1);

    // S13 (v2.6, with an offset) moves it to tomorrow: its entry is cancelled.
    send(
        format!(
            "MSH|^~\\&|SCHED|HOSP|EDGE|CLINIC|{today}0900||SIU^S13^SIU_S12|MOVE-A|P|2.6\n\
SCH|P-A|F-A|||||||15|min|||||||||||||||Booked\n\
TQ1|1||||||{tomorrow}093000+0100\n\
PID|1||MRN-10^^^HOSP^MR||DOE^JOHN\n"
        ),
        "MOVE-A",
    );
    assert_eq!(entry(&gw, a_id)["state"], "cancelled");
    assert_eq!(open_entries(&gw), Vec::<serde_json::Value>::new());
    let told = journal_events(&gw, "patient.notification");
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0]["reason"], "appointment_rescheduled");
    assert_eq!(told[0]["patient_ref"], "MRN-10");
    let iso = format!("{}-{}-{}", &tomorrow[..4], &tomorrow[4..6], &tomorrow[6..]);
    assert_eq!(told[0]["new_start"], format!("{iso}T09:30:00+01:00"));

    // v2.3: the start in SCH-11 with the clinic's offset; S14 makes it stat (TQ1-9), S15
    // cancels it.
    send(
        format!(
            "MSH|^~\\&|SCHED|HOSP|EDGE|CLINIC|{today}0900||SIU^S12|BOOK-B|P|2.3\n\
SCH|P-B|F-B|||||||15|min|^^^{today}1000+0100\n\
PID|1||MRN-11^^^HOSP^MR||ROE^RICHARD\n"
        ),
        "BOOK-B",
    );
    let listed = open_entries(&gw);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (&listed[0]["appointment_ref"], &listed[0]["patient_ref"]),
        (&serde_json::json!("F-B"), &serde_json::json!("MRN-11"))
    );
    let b_id = listed[0]["id"].as_i64().expect("id");
    send(
        format!(
            "MSH|^~\\&|SCHED|HOSP|EDGE|CLINIC|{today}0910||SIU^S14^SIU_S12|STAT-B|P|2.5\n\
SCH|P-B|F-B|||||||15|min\n\
TQ1|1||||||{today}1000||S\n\
PID|1||MRN-11^^^HOSP^MR||ROE^RICHARD\n"
        ),
        "STAT-B",
    );
    let listed = open_entries(&gw);
    assert_eq!(
        (&listed[0]["priority"], &listed[0]["priority_reason"]),
        (
            &serde_json::json!("urgent"),
            &serde_json::json!("appointment priority: stat")
        ),
        "{listed:?}"
    );
    send(
        format!(
            "MSH|^~\\&|SCHED|HOSP|EDGE|CLINIC|{today}0920||SIU^S15^SIU_S12|CANCEL-B|P|2.5\n\
SCH|P-B|F-B|||||||15|min|||||||||||||||Cancelled\n\
PID|1||MRN-11^^^HOSP^MR||ROE^RICHARD\n"
        ),
        "CANCEL-B",
    );
    assert_eq!(entry(&gw, b_id)["state"], "cancelled");

    // Booked for tomorrow: nothing to queue today.
    send(
        format!(
            "MSH|^~\\&|SCHED|HOSP|EDGE|CLINIC|{today}0930||SIU^S12^SIU_S12|BOOK-C|P|2.5.1\n\
SCH|P-C|F-C|||||||15|min|||||||||||||||Booked\n\
TQ1|1||||||{tomorrow}0930\n\
PID|1||MRN-12^^^HOSP^MR||POE^PAT\n"
        ),
        "BOOK-C",
    );
    assert_eq!(open_entries(&gw), Vec::<serde_json::Value>::new());
    assert_eq!(journal_events(&gw, "queue.checked_in").len(), 2);
    assert_eq!(journal_events(&gw, "queue.priority_changed").len(), 1);
    assert_eq!(journal_events(&gw, "queue.cancelled").len(), 2);
}

#[test]
fn an_a04_arrival_checks_in_the_patient_booked_for_today_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, port) = hl7_gateway_with(
        dir.path(),
        "\n[connectors.hl7v2.appointments]\nqueue = \"general\"\ncheck_in = \"arrived\"\nutc_offset_min = 60\n",
    );
    let (today, tomorrow) = (clinic_day(0), clinic_day(1));
    let send = |text: String, control: &str| {
        let acks = mllp_send(dir.path(), port, &text);
        assert_eq!(acks.len(), 1, "{acks:?}");
        assert!(
            acks[0].contains(&format!("MSA|AA|{control}")),
            "{}",
            acks[0]
        );
    };
    // SIU^S12 (v2.5.1) booking `id` (placer P-<id>, filler F-<id>) for `patient` at 09:30 on
    // `day`, the clinic's local time; SCH-25 Booked: the patient has not arrived.
    let book = |control: &str, id: &str, patient: &str, day: &str| {
        format!(
            "MSH|^~\\&|SCHED|HOSP|EDGE|CLINIC|{today}0800||SIU^S12^SIU_S12|{control}|P|2.5.1\n\
SCH|P-{id}|F-{id}|||||||15|min|||||||||||||||Booked\n\
TQ1|1||||||{day}0930\n\
PID|1||{patient}^^^HOSP^MR||DOE^JOHN\n"
        )
    };
    // ADT^A04 (v2.5.1): the registration desk announces `patient`.
    let register = |control: &str, patient: &str| {
        format!(
            "MSH|^~\\&|HIS|HOSP|EDGE|CLINIC|{today}0920||ADT^A04^ADT_A01|{control}|P|2.5.1\n\
EVN|A04|{today}0920\n\
PID|1||{patient}^^^HOSP^MR~NAT-1^^^NAT||DOE^JOHN\n\
PV1|1|O|CLIN^Desk 1\n"
        )
    };

    send(book("BOOK-A", "A", "MRN-20", &today), "BOOK-A");
    assert_eq!(
        open_entries(&gw),
        Vec::<serde_json::Value>::new(),
        "booked, not arrived"
    );
    send(register("REG-A1", "MRN-20"), "REG-A1");
    let listed = open_entries(&gw);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let a = &listed[0];
    assert_eq!(
        summary(a),
        serde_json::json!(["F-A", "MRN-20", "waiting", "normal", "G-001"])
    );

    // The registration again under a new control id, and the first one resent: one entry.
    send(register("REG-A2", "MRN-20"), "REG-A2");
    send(register("REG-A1", "MRN-20"), "REG-A1");
    assert_eq!(open_entries(&gw).len(), 1);

    // Booked for tomorrow: the arrival today queues nothing.
    send(book("BOOK-B", "B", "MRN-21", &tomorrow), "BOOK-B");
    send(register("REG-B", "MRN-21"), "REG-B");

    // Booked for today, then cancelled (S15): the arrival queues nothing.
    send(book("BOOK-C", "C", "MRN-22", &today), "BOOK-C");
    send(
        format!(
            "MSH|^~\\&|SCHED|HOSP|EDGE|CLINIC|{today}0900||SIU^S15^SIU_S12|CANCEL-C|P|2.5.1\n\
SCH|P-C|F-C|||||||15|min|||||||||||||||Cancelled\n\
PID|1||MRN-22^^^HOSP^MR||DOE^JOHN\n"
        ),
        "CANCEL-C",
    );
    send(register("REG-C", "MRN-22"), "REG-C");

    let listed = open_entries(&gw);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["appointment_ref"], "F-A");
    let checked_in = journal_events(&gw, "queue.checked_in");
    assert_eq!(checked_in.len(), 1, "{checked_in:?}");
    assert_eq!(
        (
            &checked_in[0]["appointment_ref"],
            &checked_in[0]["patient_ref"]
        ),
        (&serde_json::json!("F-A"), &serde_json::json!("MRN-20"))
    );
}
