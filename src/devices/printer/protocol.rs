//! ESC/POS for the kiosk ticket printer, pure: the ticket's layout, its byte encoding (text in
//! the printer's code page, `GS ( k` QR code, cut) and the decoding of real-time status answers
//! (`DLE EOT n`). No I/O here; the actor writes what this builds and hands back what it reads.
//!
//! The encoder is written by hand rather than taken from the `escpos` crate: under PC850/PC858
//! that crate encodes ASCII `-` as 0xF0 (the soft-hyphen slot), which would print ticket
//! numbers like `G-012` wrongly, and exact bytes are easier to pin down in tests without it.

use serde::Deserialize;

/// The printer character table a ticket's text is encoded in (`ESC t n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodePage {
    /// PC437 (USA, standard Europe), `ESC t 0`.
    Pc437,
    /// PC850 (Multilingual), `ESC t 2`.
    Pc850,
    /// PC858 (PC850 with € at 0xD5), `ESC t 19`.
    Pc858,
    /// Windows-1252, `ESC t 16`.
    Wpc1252,
}

/// Characters 0x80..=0xFF of each table, in byte order; `\0` marks an unassigned byte.
const PC437: &str = "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u{a0}";
const PC850: &str = "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜø£Ø×ƒáíóúñÑªº¿®¬½¼¡«»░▒▓│┤ÁÂÀ©╣║╗╝¢¥┐└┴┬├─┼ãÃ╚╔╩╦╠═╬¤ðÐÊËÈıÍÎÏ┘┌█▄¦Ì▀ÓßÔÒõÕµþÞÚÛÙýÝ¯´\u{ad}±‗¾¶§÷¸°¨·¹³²■\u{a0}";
const PC858: &str = "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜø£Ø×ƒáíóúñÑªº¿®¬½¼¡«»░▒▓│┤ÁÂÀ©╣║╗╝¢¥┐└┴┬├─┼ãÃ╚╔╩╦╠═╬¤ðÐÊËÈ€ÍÎÏ┘┌█▄¦Ì▀ÓßÔÒõÕµþÞÚÛÙýÝ¯´\u{ad}±‗¾¶§÷¸°¨·¹³²■\u{a0}";
const WPC1252: &str = "€\0‚ƒ„…†‡ˆ‰Š‹Œ\0Ž\0\0‘’“”•–—˜™š›œ\0žŸ\u{a0}¡¢£¤¥¦§¨©ª«¬\u{ad}®¯°±²³´µ¶·¸¹º»¼½¾¿ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖ×ØÙÚÛÜÝÞßàáâãäåæçèéêëìíîïðñòóôõö÷øùúûüýþÿ";

impl CodePage {
    /// The `n` of `ESC t n` (Epson numbering).
    pub fn number(self) -> u8 {
        match self {
            CodePage::Pc437 => 0,
            CodePage::Pc850 => 2,
            CodePage::Pc858 => 19,
            CodePage::Wpc1252 => 16,
        }
    }

    fn upper(self) -> &'static str {
        match self {
            CodePage::Pc437 => PC437,
            CodePage::Pc850 => PC850,
            CodePage::Pc858 => PC858,
            CodePage::Wpc1252 => WPC1252,
        }
    }

    /// Encodes text for the printer. Printable ASCII is sent as is (so `-` stays 0x2D); a
    /// character the table has becomes its byte; anything else, control characters included,
    /// becomes `?`, so that no name can print garbage or smuggle a command to the printer.
    pub fn encode(self, text: &str) -> Vec<u8> {
        text.chars()
            .map(|c| match c {
                ' '..='~' => c as u8,
                '\0' => b'?',
                c => self
                    .upper()
                    .chars()
                    .position(|t| t == c)
                    .map_or(b'?', |i| 0x80 + i as u8),
            })
            .collect()
    }

    /// The text as the printer will show it: what [`encode`](Self::encode) loses becomes `?`.
    pub fn printed(self, text: &str) -> String {
        self.encode(text)
            .into_iter()
            .map(|b| match b {
                0x00..=0x7F => char::from(b),
                b => self
                    .upper()
                    .chars()
                    .nth(usize::from(b - 0x80))
                    .unwrap_or('?'),
            })
            .collect()
    }
}

/// Everything printed on one queue ticket, already resolved to text.
#[derive(Debug, Clone, PartialEq)]
pub struct Ticket {
    pub clinic: String,
    /// The ticket number, printed large (e.g. `G-012`).
    pub number: String,
    /// The queue's display name.
    pub queue: String,
    /// Date and time of issue as printed (e.g. `2026-11-24 18:40`).
    pub issued: String,
    /// Estimated wait in minutes.
    pub wait_min: u32,
    /// What the QR code encodes (ASCII: a check-in URL or the ticket number).
    pub qr: String,
}

/// How a line of the ticket is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Normal,
    Bold,
    /// Double-width and -height four times over (`GS ! 0x33`): the ticket number.
    Large,
}

/// Longest QR payload sent. It keeps the `GS ( k` length bytes below 0x10 0x04, which a
/// printer would take for a real-time `DLE EOT` inside the command.
pub const MAX_QR_BYTES: usize = 512;

const ESC: u8 = 0x1B;
const GS: u8 = 0x1D;
const LF: u8 = 0x0A;

impl Ticket {
    /// The text lines, in print order (the QR code and the cut follow them).
    pub fn lines(&self) -> Vec<(Style, String)> {
        let wait = match self.wait_min {
            0 => "Estimated wait: you are next".to_string(),
            m => format!("Estimated wait: about {m} min"),
        };
        vec![
            (Style::Bold, self.clinic.clone()),
            (Style::Large, self.number.clone()),
            (Style::Normal, self.queue.clone()),
            (Style::Normal, self.issued.clone()),
            (Style::Normal, wait),
        ]
    }

    /// The complete ESC/POS job: initialise, select the code page, centre, the lines, the QR
    /// code (model 2, module size 6, error correction M), feed and a partial cut.
    pub fn encode(&self, page: CodePage) -> Vec<u8> {
        let mut out = vec![ESC, b'@', ESC, b't', page.number(), ESC, b'a', 1];
        for (style, text) in self.lines() {
            let (on, off): (&[u8], &[u8]) = match style {
                Style::Normal => (&[], &[]),
                Style::Bold => (&[ESC, b'E', 1], &[ESC, b'E', 0]),
                Style::Large => (&[GS, b'!', 0x33], &[GS, b'!', 0x00]),
            };
            out.extend_from_slice(on);
            out.extend(page.encode(&text));
            out.push(LF);
            out.extend_from_slice(off);
        }
        out.extend(qr_code(self.qr.as_bytes()));
        out.push(LF);
        // Feed past the cutter, then cut (GS V 66 0: feed to the cut position and cut partially).
        out.extend_from_slice(&[ESC, b'd', 3, GS, b'V', 66, 0]);
        out
    }
}

/// `GS ( k` commands that store `data` (cut at [`MAX_QR_BYTES`]) and print it as a QR code.
pub fn qr_code(data: &[u8]) -> Vec<u8> {
    let data = &data[..data.len().min(MAX_QR_BYTES)];
    let store_len = data.len() + 3;
    let mut out = vec![
        GS,
        b'(',
        b'k',
        4,
        0,
        49,
        65,
        50,
        0, // fn 165: model 2
        GS,
        b'(',
        b'k',
        3,
        0,
        49,
        67,
        6, // fn 167: module size 6 dots
        GS,
        b'(',
        b'k',
        3,
        0,
        49,
        69,
        49, // fn 169: error correction M
        GS,
        b'(',
        b'k',
        (store_len & 0xFF) as u8,
        (store_len >> 8) as u8,
        49,
        80,
        48,
    ];
    out.extend_from_slice(data);
    // fn 181: print the stored symbol.
    out.extend_from_slice(&[GS, b'(', b'k', 3, 0, 49, 81, 48]);
    out
}

/// `DLE EOT n`: ask for real-time status `n` (1 printer, 2 offline cause, 3 error cause,
/// 4 roll paper sensor).
pub fn status_request(n: u8) -> [u8; 3] {
    [0x10, 0x04, n]
}

/// True for a byte that can be a `DLE EOT` answer: bits 1 and 4 set, bits 0 and 7 clear, as
/// every answer has them (ESC/POS spec); other bytes on the line are noise.
pub fn is_status_byte(b: u8) -> bool {
    b & 0x93 == 0x12
}

/// The first byte of `received` that can be a status answer, and how many bytes before it were
/// noise.
pub fn find_status(received: &[u8]) -> Option<(u8, usize)> {
    received
        .iter()
        .position(|&b| is_status_byte(b))
        .map(|i| (received[i], i))
}

/// An answer byte that cannot be a status answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("status byte {0:#04x} does not have the fixed bits of a DLE EOT answer")]
pub struct Malformed(pub u8);

/// What a printer reported, decoded from `DLE EOT` 1, 2, 4 (and 3 when 2 reports an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    /// n=1 bit 3: the printer is offline (a cause is usually in the other flags).
    pub offline: bool,
    /// n=2 bit 2.
    pub cover_open: bool,
    /// n=2 bit 5: printing stopped because the paper ran out.
    pub paper_end: bool,
    /// n=4 bits 2-3: the roll is nearly used up; printing still works.
    pub paper_near_end: bool,
    /// n=2 bit 6, named by n=3.
    pub error: Option<PrinterError>,
}

/// The error cause of `DLE EOT 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrinterError {
    /// bit 2.
    Mechanical,
    /// bit 3.
    Autocutter,
    /// bit 5.
    Unrecoverable,
    /// bit 6: e.g. the print head overheated; clears by itself.
    AutoRecoverable,
    /// n=2 said "error" and n=3 named none (or was not read).
    Unknown,
}

impl PrinterError {
    pub fn as_str(self) -> &'static str {
        match self {
            PrinterError::Mechanical => "mechanical error",
            PrinterError::Autocutter => "autocutter error",
            PrinterError::Unrecoverable => "unrecoverable error",
            PrinterError::AutoRecoverable => "auto-recoverable error (e.g. head temperature)",
            PrinterError::Unknown => "printer error",
        }
    }
}

fn checked(b: u8) -> Result<u8, Malformed> {
    if is_status_byte(b) {
        Ok(b)
    } else {
        Err(Malformed(b))
    }
}

/// True when `DLE EOT 2`'s answer reports an error, so that `DLE EOT 3` is worth asking.
pub fn reports_error(offline_cause: u8) -> bool {
    offline_cause & 0x40 != 0
}

/// Decodes the answers to `DLE EOT` 1, 2 and 4, and 3 if it was asked.
pub fn decode(
    printer: u8,
    offline_cause: u8,
    error_cause: Option<u8>,
    paper: u8,
) -> Result<Status, Malformed> {
    let (printer, cause, paper) = (checked(printer)?, checked(offline_cause)?, checked(paper)?);
    let error = if reports_error(cause) {
        Some(match error_cause.map(checked).transpose()? {
            Some(e) if e & 0x04 != 0 => PrinterError::Mechanical,
            Some(e) if e & 0x08 != 0 => PrinterError::Autocutter,
            Some(e) if e & 0x20 != 0 => PrinterError::Unrecoverable,
            Some(e) if e & 0x40 != 0 => PrinterError::AutoRecoverable,
            _ => PrinterError::Unknown,
        })
    } else {
        None
    };
    Ok(Status {
        offline: printer & 0x08 != 0,
        cover_open: cause & 0x04 != 0,
        paper_end: cause & 0x20 != 0 || paper & 0x60 != 0,
        paper_near_end: paper & 0x0C != 0,
        error,
    })
}

impl Status {
    /// A ticket sent now would print.
    pub fn printable(&self) -> bool {
        !self.offline && !self.cover_open && !self.paper_end && self.error.is_none()
    }

    /// What is wrong, most specific first; empty when the printer is ready. "offline" appears
    /// only when no other flag explains it.
    pub fn problems(&self) -> Vec<&'static str> {
        let mut p = Vec::new();
        if self.cover_open {
            p.push("cover open");
        }
        if self.paper_end {
            p.push("paper end");
        }
        if let Some(e) = self.error {
            p.push(e.as_str());
        }
        if self.offline && p.is_empty() {
            p.push("offline");
        }
        if self.paper_near_end && !self.paper_end {
            p.push("paper near end");
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket() -> Ticket {
        Ticket {
            clinic: "Cabinet Médical Süd".into(),
            number: "G-012".into(),
            queue: "Médecine générale".into(),
            issued: "2026-11-24 18:40".into(),
            wait_min: 20,
            qr: "https://c.example/t/G-012".into(),
        }
    }

    #[test]
    fn every_table_has_128_characters() {
        for page in [
            CodePage::Pc437,
            CodePage::Pc850,
            CodePage::Pc858,
            CodePage::Wpc1252,
        ] {
            assert_eq!(page.upper().chars().count(), 128, "{page:?}");
        }
    }

    #[test]
    fn accents_follow_the_code_page_and_ascii_dash_stays() {
        let p = CodePage::Pc858;
        assert_eq!(
            p.encode("é ü € -"),
            [0x82, b' ', 0x81, b' ', 0xD5, b' ', b'-']
        );
        assert_eq!(CodePage::Pc850.encode("€"), b"?", "PC850 has no euro sign");
        assert_eq!(CodePage::Pc437.encode("é€"), [0x82, b'?']);
        assert_eq!(CodePage::Wpc1252.encode("é€"), [0xE9, 0x80]);
        assert_eq!(p.encode("Łódź\u{1b}@\n"), b"?\xa2d??@?");
        assert_eq!(p.printed("Łódź €"), "?ód? €");
    }

    #[test]
    fn a_ticket_is_these_exact_bytes() {
        let mut expected: Vec<u8> = vec![0x1B, 0x40, 0x1B, 0x74, 19, 0x1B, 0x61, 1];
        expected.extend(b"\x1bE\x01Cabinet M\x82dical S\x81d\n\x1bE\x00");
        expected.extend(b"\x1d!\x33G-012\n\x1d!\x00");
        expected.extend(
            b"M\x82decine g\x82n\x82rale\n2026-11-24 18:40\nEstimated wait: about 20 min\n",
        );
        expected.extend(b"\x1d(k\x04\x001A2\x00\x1d(k\x03\x001C\x06\x1d(k\x03\x001E1");
        expected.extend(b"\x1d(k\x1c\x001P0https://c.example/t/G-012\x1d(k\x03\x001Q0\n");
        expected.extend(b"\x1bd\x03\x1dVB\x00");
        assert_eq!(ticket().encode(CodePage::Pc858), expected);
    }

    #[test]
    fn no_ticket_byte_can_be_read_as_a_status_request() {
        let mut t = ticket();
        t.qr = "x".repeat(5000);
        t.clinic = "\u{10}\u{4}".into();
        let bytes = t.encode(CodePage::Pc858);
        assert!(!bytes.windows(2).any(|w| w == [0x10, 0x04]));
    }

    #[test]
    fn status_answers_decode_per_the_spec() {
        let ok = decode(0x12, 0x12, None, 0x12).expect("valid");
        assert!(ok.printable());
        assert!(ok.problems().is_empty());
        let paper = decode(0x1A, 0x32, None, 0x7E).expect("valid");
        assert!(!paper.printable());
        assert_eq!(paper.problems(), ["paper end"]);
        let cover = decode(0x1A, 0x16, None, 0x12).expect("valid");
        assert_eq!(cover.problems(), ["cover open"]);
        let near = decode(0x12, 0x12, None, 0x1E).expect("valid");
        assert!(near.printable());
        assert_eq!(near.problems(), ["paper near end"]);
        let cut = decode(0x1A, 0x52, Some(0x1A), 0x12).expect("valid");
        assert_eq!(cut.problems(), ["autocutter error"]);
        assert_eq!(
            decode(0x1A, 0x12, None, 0x12).expect("valid").problems(),
            ["offline"]
        );
        assert_eq!(decode(0xFF, 0x12, None, 0x12), Err(Malformed(0xFF)));
        assert_eq!(find_status(&[0x00, 0xFF, 0x41, 0x12]), Some((0x12, 3)));
        assert_eq!(find_status(&[0x00, 0xFF, 0x41]), None);
    }
}
