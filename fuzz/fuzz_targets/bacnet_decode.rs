//! Datagrams from the BACnet/IP socket, through the same path the link task feeds them:
//! BVLC, NPDU and APDU headers, then the service data of acks (ReadProperty and
//! ReadPropertyMultiple) and the values of COV notifications, each turned into readings for
//! every object kind. Nothing may panic, whatever a device or a stranger on the subnet sends.
#![no_main]

use clinic_gateway::devices::bacnet::protocol::{self, Inbound, ObjectKind};
use libfuzzer_sys::fuzz_target;

const KINDS: [ObjectKind; 3] = [
    ObjectKind::AnalogInput,
    ObjectKind::BinaryOutput,
    ObjectKind::MultiStateValue,
];

fn readings(values: &[protocol::AppValue]) {
    for v in values {
        for kind in KINDS {
            let _ = v.to_value(kind);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    match protocol::decode(data) {
        Ok(Inbound::ComplexAck { data, .. }) => {
            if let Ok((_, _, values)) = protocol::read_property_ack(&data) {
                readings(&values);
            }
            if let Ok(objects) = protocol::read_property_multiple_ack(&data) {
                for (_, results) in objects {
                    for r in results {
                        if let Ok(values) = r.result {
                            readings(&values);
                        }
                    }
                }
            }
        }
        Ok(Inbound::CovNotification { values, .. }) => {
            for r in values {
                if let Ok(values) = r.result {
                    readings(&values);
                }
            }
        }
        _ => {}
    }
    // The service-data decoders also see raw input, not only what survived the headers.
    let _ = protocol::read_property_ack(data);
    let _ = protocol::read_property_multiple_ack(data);
});
