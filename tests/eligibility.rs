//! X12 005010X279A1 checked by an independent parser (PyPI `linuxforhealth-x12`): every 270
//! the gateway writes is valid to it, and the 271s it writes are read as it meant them.

mod common;

use clinic_gateway::connectors::practice::eligibility::{self, Inquiry, Member, Status};
use clinic_gateway::connectors::practice::x12::Envelope;

fn envelope(control: u32) -> Envelope {
    Envelope {
        sender: ("ZZ".into(), "CLINIC01".into()),
        receiver: ("ZZ".into(), "PAYER01".into()),
        application_sender: "CLINIC01".into(),
        application_receiver: "PAYER01".into(),
        control,
        date: "20261202".into(),
        time: "0915".into(),
        production: false,
    }
}

fn inquiry(trace: &str, member: Member, service_types: &[&str]) -> Inquiry {
    Inquiry {
        payer_name: "ACME HEALTH".into(),
        payer_id: "60054".into(),
        provider_name: "MAIN STREET CLINIC".into(),
        provider_npi: "1234567893".into(),
        member,
        service_date: "20261202".into(),
        service_types: service_types.iter().map(|s| s.to_string()).collect(),
        trace: trace.into(),
        originator: "9CLINIC001".into(),
    }
}

fn member(last: &str, first: &str, id: &str, gender: Option<&str>) -> Member {
    Member {
        last_name: last.into(),
        first_name: first.into(),
        member_id: id.into(),
        birth_date: "19800101".into(),
        gender: gender.map(str::to_string),
    }
}

#[test]
fn every_270_the_gateway_writes_passes_the_independent_parser() {
    let cases = [
        inquiry(
            "T1",
            member("DOE", "JANE", "W123456789", Some("F")),
            &["30"],
        ),
        inquiry(
            "T2",
            member("O'NEIL-SMITH", "Ann Marie", "XZ9", None),
            &["30", "98", "UC"],
        ),
        inquiry("T3", member("Núñez", "José", "A1B2C3", Some("M")), &[]),
    ];
    for (n, q) in cases.iter().enumerate() {
        let text = eligibility::request(q, &envelope(100 + n as u32)).expect("270 written");
        let read = common::x12::check_270(&text)
            .unwrap_or_else(|e| panic!("the parser refused the 270 {text}: {e}"));
        assert_eq!(read["trace"], q.trace.as_str());
        assert_eq!(read["member_id"], q.member.member_id.as_str());
        let types: Vec<&str> = if q.service_types.is_empty() {
            vec!["30"]
        } else {
            q.service_types.iter().map(String::as_str).collect()
        };
        assert_eq!(read["service_types"], serde_json::json!(types));
    }
}

#[test]
fn the_271s_the_independent_library_writes_are_read_as_meant() {
    let active =
        eligibility::read(common::x12::emit_271("active", "T9").as_bytes(), "T9").expect("a value");
    assert_eq!(active.status, Status::Active);
    assert_eq!(active.copay, Some(2500));
    assert_eq!(active.deductible_remaining, Some(25050));
    assert_eq!(active.plan.as_deref(), Some("GOLD PPO"));

    let inactive = eligibility::read(common::x12::emit_271("inactive", "T9").as_bytes(), "T9")
        .expect("a value");
    assert_eq!(
        inactive.status,
        Status::Inactive("coverage is inactive".into())
    );

    let wrong = eligibility::read(common::x12::emit_271("member_id", "T9").as_bytes(), "T9")
        .expect("a value");
    let Status::Rejected(r) = wrong.status else {
        panic!("a 2100C AAA is a rejection: {wrong:?}")
    };
    assert_eq!(r[0].reason, "invalid or missing member id");
    assert!(r[0].retry);

    let down = eligibility::read(common::x12::emit_271("payer_down", "T9").as_bytes(), "T9")
        .expect("a value");
    let Status::Rejected(r) = down.status else {
        panic!("a 2000A AAA is a rejection: {down:?}")
    };
    assert_eq!((r[0].place.as_str(), r[0].code.as_str()), ("2000A", "42"));

    let other = eligibility::read(common::x12::emit_271("active", "T8").as_bytes(), "T9");
    assert!(other.is_err(), "an answer to another inquiry is refused");
}
