//! Bytes from an ESC/POS printer's serial line, read as `DLE EOT` status answers. Nothing may
//! panic; only bytes with the fixed status bits are taken as answers, those always decode, and
//! a printer that can print reports no problem that stops printing.
#![no_main]

use clinic_gateway::devices::printer::protocol::{self, CodePage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The answer the actor would take from this read, and the noise before it.
    if let Some((b, skipped)) = protocol::find_status(data) {
        assert!(protocol::is_status_byte(b));
        assert!(
            data[..skipped]
                .iter()
                .all(|&x| !protocol::is_status_byte(x))
        );
    }
    // Every group of four bytes as the answers to DLE EOT 1, 2, 3 and 4.
    for c in data.chunks_exact(4) {
        let (printer, cause, error, paper) = (c[0], c[1], c[2], c[3]);
        let error = protocol::reports_error(cause).then_some(error);
        match protocol::decode(printer, cause, error, paper) {
            Ok(status) => {
                let all_status = [printer, cause, paper]
                    .into_iter()
                    .chain(error)
                    .all(protocol::is_status_byte);
                assert!(all_status, "only status bytes decode");
                let problems = status.problems();
                if status.printable() {
                    assert!(
                        problems.iter().all(|p| *p == "paper near end"),
                        "{problems:?}"
                    );
                } else {
                    assert!(!problems.is_empty(), "a stopped printer names why");
                }
            }
            Err(protocol::Malformed(b)) => assert!(!protocol::is_status_byte(b)),
        }
    }
    // Whatever a name holds, its encoding is one byte per character and never a control byte.
    if let Ok(text) = std::str::from_utf8(data) {
        for page in [
            CodePage::Pc437,
            CodePage::Pc850,
            CodePage::Pc858,
            CodePage::Wpc1252,
        ] {
            let bytes = page.encode(text);
            assert_eq!(bytes.len(), text.chars().count());
            assert!(bytes.iter().all(|&b| b >= 0x20 && b != 0x7F));
        }
    }
});
