//! Bytes from an SMSC, through the same path the SMPP link feeds them: PDUs decoded one after
//! the other from a buffer (answers, deliver_sm receipts and their TLVs), and the receipt
//! text reader on its own. Nothing may panic, whatever an SMSC sends.
#![no_main]

use clinic_gateway::messaging::{protocol, smpp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((_, used))) = smpp::decode(rest) {
        rest = &rest[used..];
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = protocol::receipt_text(text);
        let _ = protocol::http_receipt(Some(text), Some(text));
        let _ = protocol::segments(text);
    }
});
