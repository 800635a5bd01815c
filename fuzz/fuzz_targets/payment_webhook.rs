//! Bytes claiming to be a processor's webhook: its signature header and its body are read
//! without panic, and an event read names the intent its outcome is about.
#![no_main]

use clinic_gateway::connectors::payments::protocol;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (header, body) = data.split_at(split);
    let header = std::str::from_utf8(header).ok();
    let _ = protocol::verify(header, body, b"whsec_fuzz", 1_800_000_000, 300);
    if let Ok(e) = protocol::event(body) {
        assert!(protocol::event_outcome(&e).is_none() || e.intent.is_some());
    }
});
