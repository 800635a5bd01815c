#![cfg(feature = "fault-hooks")]
//! Supervision of the daemon's link actors: each device and connector actor kind runs against
//! its real peer on loopback, is made to panic from inside through the test-only fault route
//! (`POST /api/v1/faults/panic/{actor}`), shows `down` naming the panic during its backoff, and
//! comes back healthy with one more restart, while everything the journal held stays and new
//! input is committed again.

mod common;

use common::bacnet_sim::Device;
use common::fhir_server::FhirServer;
use common::hl7_peer::{Receiver, a08, mllp_send};
use common::modbus_sim::Sim;
use common::printer::TestPrinter;
use common::{Broker, Gateway, free_port, journal_items, post, relay_table, wait_for};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// An ADT^A04 from the hospital with control id `control`.
fn a04(control: &str) -> String {
    format!(
        "MSH|^~\\&|HIS|HOSP|EDGE|CLINIC|20261124140500||ADT^A04|{control}|P|2.5.1\n\
         EVN|A04|20261124140500\nPID|1||555^^^CLINIC^MR||DOE^JANE\n"
    )
}

/// Every peer and a gateway running one actor of each kind against them.
struct Site {
    gw: Gateway,
    hl7: u16,
    receiver: Receiver,
    _peers: (Broker, Sim, Device, TestPrinter, FhirServer),
}

fn start_site(dir: &Path) -> Site {
    let broker = Broker::start(dir);
    let modbus = Sim::tcp(
        dir,
        free_port(),
        &json!({"unit": 1, "values": [{"table": "input", "address": 0, "type": "u16", "value": 612}]}),
    );
    let bacnet_port = free_port();
    let bacnet = Device::start(bacnet_port);
    let printer = TestPrinter::start(dir);
    let (hl7, out) = (free_port(), free_port());
    let receiver = Receiver::start(dir, out);
    let fhir = FhirServer::start(dir, &[]);
    // A backoff long enough to see each actor down between its panic and its restart.
    let config = format!(
        "[supervisor]\nrestart_initial_ms = 1500\nrestart_max_ms = 1500\n\n\
         [connectors.hl7v2]\nlisten = \"127.0.0.1:{hl7}\"\n\n\
         [connectors.hl7v2_out]\nhost = \"127.0.0.1\"\nport = {out}\nack_timeout_ms = 20000\nreconnect_initial_ms = 100\nreconnect_max_ms = 200\n\n\
         [destinations.ehr-mllp]\nbackoff_initial_ms = 100\nbackoff_max_ms = 200\n\n\
         [devices.occupancy]\noccupied_delay_s = 0.2\nvacancy_delay_s = 2.0\n\n\
         [devices.occupancy.broker]\nhost = \"127.0.0.1\"\nport = {broker}\nkeep_alive_secs = 5\nreconnect_initial_ms = 100\nreconnect_max_ms = 500\n\n\
         [[devices.occupancy.rooms]]\nname = \"exam-1\"\narea = \"wait-a\"\n\n\
         [[devices.occupancy.sensors]]\nname = \"pir-1\"\nkind = \"occupancy\"\nroom = \"exam-1\"\n\n\
         [[devices.modbus]]\nname = \"env\"\nhost = \"127.0.0.1\"\nport = {modbus}\npoll_interval_ms = 100\ntimeout_ms = 300\nreconnect_initial_ms = 50\nreconnect_max_ms = 200\n\
         [[devices.modbus.registers]]\nname = \"co2\"\nfunction = \"input\"\naddress = 0\n\n\
         [[devices.bacnet]]\nname = \"ahu\"\ndevice_instance = 599\naddress = \"127.0.0.2:{bacnet_port}\"\nbind = \"127.0.0.3:{bacnet_port}\"\n\
         broadcast = \"127.255.255.255:{bacnet_port}\"\ntimeout_ms = 300\nretries = 1\npoll_interval_ms = 200\n\
         [[devices.bacnet.objects]]\nname = \"co2\"\ntype = \"analog-input\"\ninstance = 1\n\n\
         [[devices.printer]]\nname = \"kiosk-1\"\nserial = \"{tty}\"\nclinic_name = \"Clinic\"\nstatus_poll_ms = 200\nstatus_timeout_ms = 300\n\n\
         [connectors.fhir]\nbase_url = \"{fhir}\"\nidentifier_system = \"urn:mrn\"\npoll_interval_s = 1\n\
         request_timeout_ms = 2000\nconnect_timeout_ms = 500\n\n\
         [facility]\nevaluate_interval_ms = 200\n\n\
         [[facility.rooms]]\nname = \"exam-1\"\nqueues = [\"general\"]\n\n\
         {relay}",
        broker = broker.port,
        modbus = modbus.port,
        tty = printer.tty().display(),
        relay = relay_table(&broker),
        fhir = fhir.base(),
    );
    let mut gw = Gateway::new(dir, &config);
    gw.start();
    Site {
        gw,
        hl7,
        receiver,
        _peers: (broker, modbus, bacnet, printer, fhir),
    }
}

const ACTORS: [&str; 9] = [
    "cloud-relay",
    "facility",
    "fhir",
    "modbus:env",
    "bacnet:ahu",
    "printer:kiosk-1",
    "occupancy",
    "hl7v2-mllp",
    "hl7v2-sender",
];

/// The actor's health as `GET /api/v1/actors` shows it.
fn actor(gw: &Gateway, name: &str) -> Option<Value> {
    gw.get_json("/api/v1/actors")
        .as_array()?
        .iter()
        .find(|a| a["name"] == name)
        .cloned()
}

fn wait_healthy(gw: &Gateway, name: &str) -> Value {
    wait_for(&format!("{name} healthy"), Duration::from_secs(30), || {
        actor(gw, name).filter(|a| a["state"] == "healthy")
    })
}

#[test]
fn each_actor_kind_restarts_after_a_panic_naming_it_and_no_journal_data_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = start_site(dir.path());
    let gw = &site.gw;
    for name in ACTORS {
        wait_healthy(gw, name);
    }
    for control in ["BEFORE-1", "BEFORE-2"] {
        let acks = mllp_send(dir.path(), site.hl7, &a04(control));
        assert!(acks[0].contains("MSA|AA"), "{acks:?}");
    }
    let (status, body) = post(&gw.url("/api/v1/hl7/outbound"), &a08("OUT-1"));
    assert_eq!(status, 202, "{body}");
    wait_for("OUT-1 delivered", Duration::from_secs(20), || {
        site.receiver
            .received()
            .contains(&"OUT-1".to_string())
            .then_some(())
    });
    let before = journal_items(gw, &[]);

    for name in ACTORS {
        let restarts = wait_healthy(gw, name)["restarts"]
            .as_u64()
            .expect("restarts");
        if name == "hl7v2-sender" {
            // The receiver does not answer a MUTE message the first time: the panic comes
            // while it is in flight, and the restarted sender must send it again.
            let (status, body) = post(&gw.url("/api/v1/hl7/outbound"), &a08("MUTE-1"));
            assert_eq!(status, 202, "{body}");
            wait_for("MUTE-1 in flight", Duration::from_secs(20), || {
                site.receiver
                    .received()
                    .contains(&"MUTE-1".to_string())
                    .then_some(())
            });
        }
        let (status, body) = post(&gw.url(&format!("/api/v1/faults/panic/{name}")), &json!({}));
        assert_eq!(status, 202, "{name}: {body}");
        let down = wait_for(&format!("{name} down"), Duration::from_secs(20), || {
            actor(gw, name).filter(|a| a["state"] == "down")
        });
        let error = down["last_error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("panicked: "),
            "{name} is down naming its panic: {down}"
        );
        let up = wait_healthy(gw, name);
        assert_eq!(up["restarts"], restarts + 1, "{name}: {up}");
        assert!(up["last_error"].is_null(), "{name}: {up}");
    }

    // Input is taken and committed again by the restarted listener and sender.
    let acks = mllp_send(dir.path(), site.hl7, &a04("AFTER-1"));
    assert!(acks[0].contains("MSA|AA"), "{acks:?}");
    let (status, body) = post(&gw.url("/api/v1/hl7/outbound"), &a08("OUT-2"));
    assert_eq!(status, 202, "{body}");
    wait_for(
        "every outbound message delivered",
        Duration::from_secs(20),
        || {
            let backlog = gw.get_json("/api/v1/backlog");
            let d = &backlog["destinations"]["ehr-mllp"];
            (d["pending"].as_u64().unwrap_or(0) == 0 && d["in_flight"].as_u64().unwrap_or(0) == 0)
                .then_some(())
        },
    );
    let received = site.receiver.received();
    assert_eq!(
        received,
        ["OUT-1", "MUTE-1", "MUTE-1", "OUT-2"],
        "the message in flight at the panic was sent again, in order"
    );
    let after = journal_items(gw, &[]);
    let ids =
        |items: &[Value]| -> Vec<i64> { items.iter().filter_map(|i| i["id"].as_i64()).collect() };
    let kept = ids(&after);
    for id in ids(&before) {
        assert!(kept.contains(&id), "journal item {id} survived the panics");
    }
    for control in ["BEFORE-1", "BEFORE-2", "AFTER-1"] {
        assert!(
            after
                .iter()
                .any(|i| i["source_id"] == control && i["kind"] != Value::Null),
            "{control} is committed"
        );
    }
    let states = journal_items(gw, &["--kind", "gateway.actor_state"]);
    for name in ACTORS {
        assert!(
            states.iter().any(|s| s["payload"]["actor"] == name
                && s["payload"]["state"] == "down"
                && s["payload"]["last_error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("panicked: "))),
            "{name}'s panic went to the journal for the cloud"
        );
    }
}
