//! Datagrams from a SIP server or callee, through the same path a call reads them: a response
//! with its headers (compact forms, folding, tags, branch) and the SDP answer in its body.
//! Nothing may panic, whatever arrives on the signalling socket.
#![no_main]

use clinic_gateway::messaging::sip;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = sip::parse_response(data) {
        let _ = (r.to_tag(), r.branch(), r.cseq_method());
        let _ = sip::sdp_audio(&r.body);
    }
});
