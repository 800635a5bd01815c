//! Answers from the EHR's FHIR server (search pages, Patients, Appointments, any resource the R4
//! check is given, OperationOutcomes) decoded as the connector does. Nothing may panic; a decoded Patient written back and read again is the same
//! Patient (unknown elements included), and applying no change keeps its content.
#![no_main]

use clinic_gateway::connectors::fhir::protocol::{self, Fields};
use clinic_gateway::connectors::fhir::validate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = protocol::outcome_summary(data);
    if let Ok((entries, _next)) = protocol::decode_bundle(data) {
        let (patients, _skipped) = protocol::patients(entries);
        for p in patients {
            let json = serde_json::to_value(&p).expect("a decoded Patient serialises");
            let again = protocol::decode_patient(json).expect("a written Patient decodes");
            assert_eq!(again, p);
            assert!(protocol::same_content(&protocol::apply(&p, &Fields::new()), &p));
            let _ = protocol::demographics(&p, "urn:mrn", "ehr");
            let _ = protocol::differing_fields(&p, &again);
        }
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = validate::validate(&v);
        let _ = protocol::decode_appointment(v.clone());
        let _ = protocol::decode_patient(v);
    }
});
