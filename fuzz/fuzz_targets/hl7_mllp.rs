//! Bytes from an MLLP peer: framed at an arbitrary split, then every frame decided on.
//! Nothing may panic; a frame's content survives the envelope unchanged.
#![no_main]

use clinic_gateway::connectors::hl7v2::{mllp, protocol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| b as usize).min(data.len());
    let mut framer = mllp::Framer::new(64 * 1024);
    let me = protocol::Identity { application: "FUZZ", facility: "" };
    // Decided against a schedule so that the appointment paths are fuzzed too.
    let schedule = clinic_gateway::queue::Schedule {
        queue: "general".into(),
        check_in: clinic_gateway::queue::CheckInWhen::Booked,
        today: "2026-01-01".into(),
        utc_offset_min: 60,
    };
    for chunk in [&data[..split], &data[split..]] {
        for item in framer.push(chunk) {
            if let mllp::Item::Frame(frame) = item {
                let _ = protocol::decide(&frame, &me, "20260101000000", "FUZZ1", Some(&schedule));
            }
        }
    }
    // Any content without envelope bytes comes back out of its own frame unchanged.
    if !data.iter().any(|&b| b == mllp::SB || b == mllp::EB) && data.len() < 64 * 1024 {
        let mut f = mllp::Framer::new(64 * 1024);
        assert_eq!(f.push(&mllp::frame(data)), vec![mllp::Item::Frame(data.to_vec())]);
    }
});
