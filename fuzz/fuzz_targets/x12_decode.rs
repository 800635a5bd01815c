//! Bytes claiming to be a payer's answer: read as an interchange and as a 271 without panic;
//! whatever is read holds no delimiter inside an element.
#![no_main]

use clinic_gateway::connectors::practice::{eligibility, x12};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = eligibility::read(data, "T1");
    if let Ok(x) = x12::parse(data) {
        let d = x.delimiters;
        for t in x.groups.iter().flat_map(|g| &g.transactions) {
            for s in &t.segments {
                assert!((2..=3).contains(&s.id.len()));
                for n in 1..=40 {
                    let e = s.get(n).as_bytes();
                    assert!(!e.contains(&d.element) && !e.contains(&d.segment));
                }
            }
        }
    }
});
