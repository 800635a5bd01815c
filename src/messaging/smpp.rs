//! SMPP 3.4 codec, pure: the PDUs an ESME sending SMS needs (bind transceiver/transmitter,
//! submit_sm, deliver_sm receipts, enquire_link, unbind, generic_nack) to and from bytes. No
//! I/O: the provider's connection task ([`super::smpp_link`]) reads and writes them. Decoding
//! never panics on what a peer sends (fuzzed: `fuzz/fuzz_targets/smpp_pdu.rs`).

/// Command ids (SMPP 3.4 section 5.1.2.1).
pub mod command {
    pub const GENERIC_NACK: u32 = 0x8000_0000;
    pub const BIND_TRANSMITTER: u32 = 0x0000_0002;
    pub const BIND_TRANSMITTER_RESP: u32 = 0x8000_0002;
    pub const BIND_TRANSCEIVER: u32 = 0x0000_0009;
    pub const BIND_TRANSCEIVER_RESP: u32 = 0x8000_0009;
    pub const SUBMIT_SM: u32 = 0x0000_0004;
    pub const SUBMIT_SM_RESP: u32 = 0x8000_0004;
    pub const DELIVER_SM: u32 = 0x0000_0005;
    pub const DELIVER_SM_RESP: u32 = 0x8000_0005;
    pub const UNBIND: u32 = 0x0000_0006;
    pub const UNBIND_RESP: u32 = 0x8000_0006;
    pub const ENQUIRE_LINK: u32 = 0x0000_0015;
    pub const ENQUIRE_LINK_RESP: u32 = 0x8000_0015;
}

/// `ESME_RTHROTTLED`: the SMSC's rate limit; try again later.
pub const ESME_RTHROTTLED: u32 = 0x58;
/// `ESME_RMSGQFUL`: the SMSC's queue is full; try again later.
pub const ESME_RMSGQFUL: u32 = 0x14;
/// The `message_payload` TLV, for texts longer than `short_message` holds.
const TLV_MESSAGE_PAYLOAD: u16 = 0x0424;
/// The `receipted_message_id` TLV of a receipt.
const TLV_RECEIPTED_MESSAGE_ID: u16 = 0x001E;
/// The largest PDU accepted: far above any SMS, far below what would exhaust memory.
pub const MAX_PDU: usize = 64 * 1024;

/// A PDU's header (section 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub command: u32,
    pub status: u32,
    pub sequence: u32,
}

/// What the gateway reads from an SMSC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pdu {
    /// A bind's answer (status 0: bound).
    BindResp(Header),
    /// A submit_sm's answer, with the SMSC's message id when accepted.
    SubmitResp(Header, String),
    /// A mobile-terminated receipt or mobile-originated message; `receipt` when `esm_class`
    /// marks a delivery receipt: the message id and its text's or TLV's state.
    Deliver(Header, Option<DeliverReceipt>),
    EnquireLink(Header),
    EnquireLinkResp(Header),
    Unbind(Header),
    UnbindResp(Header),
    GenericNack(Header),
    /// A well-formed PDU of another command: answered with generic_nack.
    Other(Header),
}

/// A delivery receipt carried by deliver_sm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverReceipt {
    /// The SMSC's id of the message it is about.
    pub message_id: String,
    /// The receipt text's `stat:` (`DELIVRD`, `EXPIRED`, ...).
    pub stat: String,
}

/// Why bytes are not a PDU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmppError {
    #[error("PDU length {0} out of range")]
    Length(usize),
    #[error("PDU body ends early")]
    Short,
    #[error("a C-string has no terminating NUL")]
    Unterminated,
}

fn put_cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn frame(command: u32, status: u32, sequence: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(&((16 + body.len()) as u32).to_be_bytes());
    out.extend_from_slice(&command.to_be_bytes());
    out.extend_from_slice(&status.to_be_bytes());
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// How the gateway binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindKind {
    /// Sends and receives receipts on one connection.
    Transceiver,
    /// Sends only (receipts then need a receiver bind the gateway does not make).
    Transmitter,
}

/// A bind_transceiver or bind_transmitter (section 4.1), interface version 3.4.
pub fn bind(
    kind: BindKind,
    sequence: u32,
    system_id: &str,
    password: &str,
    system_type: &str,
) -> Vec<u8> {
    let mut body = Vec::new();
    put_cstr(&mut body, system_id);
    put_cstr(&mut body, password);
    put_cstr(&mut body, system_type);
    body.extend_from_slice(&[0x34, 0, 0]);
    body.push(0); // address_range
    let command = match kind {
        BindKind::Transceiver => command::BIND_TRANSCEIVER,
        BindKind::Transmitter => command::BIND_TRANSMITTER,
    };
    frame(command, 0, sequence, &body)
}

/// A text as SMPP carries it: `data_coding` 1 (IA5/ASCII) when it is plain ASCII, else 8
/// (UCS-2, big-endian UTF-16). Segments are billed by GSM-7 rules (`protocol::segments`);
/// the SMSC splits a long text from `message_payload`.
pub fn encode_text(text: &str) -> (u8, Vec<u8>) {
    if text.is_ascii() {
        (0x01, text.as_bytes().to_vec())
    } else {
        (
            0x08,
            text.encode_utf16().flat_map(u16::to_be_bytes).collect(),
        )
    }
}

/// `seconds` as SMPP 3.4 relative time (section 7.1.1, `YYMMDDhhmmsstnnp` with `p` = `R`):
/// days, hours, minutes and seconds from now; tenths and the quarter-hour offset are 0.
/// Days above 99 are kept at 99 (the longest a relative time says in days alone).
pub fn relative_time(seconds: u64) -> String {
    let days = (seconds / 86_400).min(99);
    let (h, m, s) = (seconds / 3600 % 24, seconds / 60 % 60, seconds % 60);
    format!("0000{days:02}{h:02}{m:02}{s:02}000R")
}

/// A submit_sm (section 4.4) from `source` to `destination` (international numbers without
/// the `+`), asking for a receipt on final delivery or failure; the SMSC gives up on it after
/// `validity_s` seconds.
pub fn submit_sm(
    sequence: u32,
    source: &str,
    destination: &str,
    text: &str,
    validity_s: u64,
) -> Vec<u8> {
    let (coding, bytes) = encode_text(text);
    let mut body = Vec::new();
    put_cstr(&mut body, ""); // service_type
    // source: alphanumeric (ton 5) unless it is a number.
    let numeric = !source.is_empty() && source.chars().all(|c| c.is_ascii_digit());
    body.extend_from_slice(&[if numeric { 1 } else { 5 }, if numeric { 1 } else { 0 }]);
    put_cstr(&mut body, source);
    body.extend_from_slice(&[1, 1]); // international, ISDN
    put_cstr(&mut body, destination.trim_start_matches('+'));
    body.extend_from_slice(&[0, 0, 0]); // esm_class, protocol_id, priority_flag
    put_cstr(&mut body, ""); // schedule_delivery_time
    put_cstr(&mut body, &relative_time(validity_s));
    body.extend_from_slice(&[1, 0, coding, 0]); // registered_delivery, replace, data_coding, default msg
    if bytes.len() <= 254 {
        body.push(bytes.len() as u8);
        body.extend_from_slice(&bytes);
    } else {
        body.push(0);
        body.extend_from_slice(&TLV_MESSAGE_PAYLOAD.to_be_bytes());
        body.extend_from_slice(&(bytes.len().min(u16::MAX as usize) as u16).to_be_bytes());
        body.extend_from_slice(&bytes[..bytes.len().min(u16::MAX as usize)]);
    }
    frame(command::SUBMIT_SM, 0, sequence, &body)
}

/// An answer without a body (enquire_link_resp, unbind_resp, generic_nack) or with an empty
/// message id (deliver_sm_resp).
pub fn response(command: u32, status: u32, sequence: u32) -> Vec<u8> {
    let body: &[u8] = if command == command::DELIVER_SM_RESP {
        &[0]
    } else {
        &[]
    };
    frame(command, status, sequence, body)
}

/// A request without a body (enquire_link, unbind).
pub fn request(command: u32, sequence: u32) -> Vec<u8> {
    frame(command, 0, sequence, &[])
}

/// Reads one PDU from the front of `buf`: `Ok(None)` until it is whole, else the PDU and how
/// many bytes it took. A length out of range is an error: the connection cannot be resynced.
pub fn decode(buf: &[u8]) -> Result<Option<(Pdu, usize)>, SmppError> {
    let Some(len) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if !(16..=MAX_PDU).contains(&len) {
        return Err(SmppError::Length(len));
    }
    let Some(pdu) = buf.get(..len) else {
        return Ok(None);
    };
    let word = |at: usize| u32::from_be_bytes([pdu[at], pdu[at + 1], pdu[at + 2], pdu[at + 3]]);
    let header = Header {
        command: word(4),
        status: word(8),
        sequence: word(12),
    };
    let mut body = Reader {
        bytes: &pdu[16..],
        at: 0,
    };
    let read = match header.command {
        command::BIND_TRANSCEIVER_RESP | command::BIND_TRANSMITTER_RESP => Pdu::BindResp(header),
        command::SUBMIT_SM_RESP => {
            // An error answer may have no body at all.
            let id = if body.bytes.is_empty() {
                String::new()
            } else {
                body.cstr()?
            };
            Pdu::SubmitResp(header, id)
        }
        command::DELIVER_SM => Pdu::Deliver(header, deliver_receipt(&mut body)?),
        command::ENQUIRE_LINK => Pdu::EnquireLink(header),
        command::ENQUIRE_LINK_RESP => Pdu::EnquireLinkResp(header),
        command::UNBIND => Pdu::Unbind(header),
        command::UNBIND_RESP => Pdu::UnbindResp(header),
        command::GENERIC_NACK => Pdu::GenericNack(header),
        _ => Pdu::Other(header),
    };
    Ok(Some((read, len)))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, SmppError> {
        let b = *self.bytes.get(self.at).ok_or(SmppError::Short)?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], SmppError> {
        let end = self.at.checked_add(n).ok_or(SmppError::Short)?;
        let s = self.bytes.get(self.at..end).ok_or(SmppError::Short)?;
        self.at = end;
        Ok(s)
    }

    fn cstr(&mut self) -> Result<String, SmppError> {
        let rest = self.bytes.get(self.at..).ok_or(SmppError::Short)?;
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(SmppError::Unterminated)?;
        let s = String::from_utf8_lossy(&rest[..nul]).into_owned();
        self.at += nul + 1;
        Ok(s)
    }
}

/// The receipt a deliver_sm carries, if its `esm_class` says it is one (bits 2-5 = 0001, SMSC
/// delivery receipt): the message id from `receipted_message_id` or the text's `id:`.
fn deliver_receipt(r: &mut Reader<'_>) -> Result<Option<DeliverReceipt>, SmppError> {
    r.cstr()?; // service_type
    r.take(2)?;
    r.cstr()?; // source_addr
    r.take(2)?;
    r.cstr()?; // destination_addr
    let esm_class = r.byte()?;
    r.take(2)?; // protocol_id, priority_flag
    r.cstr()?; // schedule_delivery_time
    r.cstr()?; // validity_period
    r.take(4)?; // registered_delivery, replace_if_present, data_coding, sm_default_msg_id
    let length = r.byte()? as usize;
    let text = String::from_utf8_lossy(r.take(length)?).into_owned();
    let mut receipted = None;
    while r.at + 4 <= r.bytes.len() {
        let head = r.take(4)?;
        let (tag, len) = (
            u16::from_be_bytes([head[0], head[1]]),
            u16::from_be_bytes([head[2], head[3]]) as usize,
        );
        let value = r.take(len)?;
        if tag == TLV_RECEIPTED_MESSAGE_ID {
            let v = value.split(|&b| b == 0).next().unwrap_or_default();
            receipted = Some(String::from_utf8_lossy(v).into_owned());
        }
    }
    if esm_class & 0x3C != 0x04 {
        return Ok(None);
    }
    let Some((id, stat)) = super::protocol::receipt_text(&text) else {
        return Ok(None);
    };
    Ok(Some(DeliverReceipt {
        message_id: receipted.unwrap_or_else(|| id.to_string()),
        stat: stat.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bytes: &[u8]) -> Pdu {
        let (pdu, used) = decode(bytes).expect("decodes").expect("whole");
        assert_eq!(used, bytes.len());
        pdu
    }

    #[test]
    fn a_bind_transceiver_is_encoded_as_section_4_1_says() {
        let pdu = bind(BindKind::Transceiver, 1, "gw", "pw", "");
        let want = [
            0, 0, 0, 27, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, b'g', b'w', 0, b'p', b'w', 0, 0, 0x34,
            0, 0, 0,
        ];
        assert_eq!(pdu, want);
        assert_eq!(bind(BindKind::Transmitter, 1, "gw", "pw", "")[7], 2);
    }

    #[test]
    fn submit_sm_carries_ascii_as_ia5_and_the_rest_as_ucs2() {
        let pdu = submit_sm(7, "Clinic", "+41791234567", "Hi", 60);
        let tail = &pdu[pdu.len() - 4..];
        assert_eq!(
            tail,
            [0, 2, b'H', b'i'],
            "sm_default_msg_id, sm_length, text"
        );
        assert_eq!(pdu[pdu.len() - 5], 0x01, "data_coding IA5");
        assert!(pdu.windows(12).any(|w| w == b"41791234567\0"), "no +");
        let pdu = submit_sm(8, "Clinic", "+41791234567", "Nä", 60);
        assert_eq!(&pdu[pdu.len() - 5..], [4, 0, b'N', 0, 0xe4]);
        assert_eq!(encode_text("Nä").0, 0x08);
        let long = submit_sm(9, "Clinic", "+41791234567", &"x".repeat(300), 60);
        assert!(
            long.windows(4).any(|w| w == [0x04, 0x24, 0x01, 0x2c]),
            "message_payload of 300"
        );
    }

    #[test]
    fn validity_is_relative_time_as_section_7_1_1_says() {
        assert_eq!(relative_time(60), "000000000100000R");
        assert_eq!(relative_time(90), "000000000130000R");
        assert_eq!(relative_time(86_400 + 3_661), "000001010101000R");
        assert_eq!(relative_time(200 * 86_400), "000099000000000R");
        let pdu = submit_sm(7, "Clinic", "+41791234567", "Hi", 45);
        // schedule_delivery_time empty, then validity_period, then registered_delivery 1.
        let want = b"\x00000000000045000R\x00\x01";
        assert!(pdu.windows(want.len()).any(|w| w == want), "{pdu:?}");
    }

    #[test]
    fn answers_and_receipts_are_decoded() {
        let mut resp = frame(command::SUBMIT_SM_RESP, 0, 3, b"1042\0");
        assert_eq!(
            check(&resp),
            Pdu::SubmitResp(
                Header {
                    command: command::SUBMIT_SM_RESP,
                    status: 0,
                    sequence: 3
                },
                "1042".into()
            )
        );
        let throttled = frame(command::SUBMIT_SM_RESP, ESME_RTHROTTLED, 4, b"");
        assert!(
            matches!(check(&throttled), Pdu::SubmitResp(h, id) if h.status == 0x58 && id.is_empty())
        );
        let text = b"id:1042 sub:001 dlvrd:001 submit date:2612021200 done date:2612021200 stat:DELIVRD err:000 text:";
        let mut body = vec![0, 1, 1];
        body.extend_from_slice(b"41791234567\0");
        body.extend_from_slice(&[5, 0]);
        body.extend_from_slice(b"Clinic\0");
        body.extend_from_slice(&[0x04, 0, 0, 0, 0, 0, 0, 0, 0, text.len() as u8]);
        body.extend_from_slice(text);
        let deliver = frame(command::DELIVER_SM, 0, 9, &body);
        assert_eq!(
            check(&deliver),
            Pdu::Deliver(
                Header {
                    command: command::DELIVER_SM,
                    status: 0,
                    sequence: 9
                },
                Some(DeliverReceipt {
                    message_id: "1042".into(),
                    stat: "DELIVRD".into()
                })
            )
        );
        // Half a PDU waits for the rest; two in a row are read one by one.
        assert_eq!(decode(&deliver[..20]), Ok(None));
        resp.extend_from_slice(&request(command::ENQUIRE_LINK, 5));
        let (_, used) = decode(&resp).expect("ok").expect("whole");
        assert!(matches!(check(&resp[used..]), Pdu::EnquireLink(h) if h.sequence == 5));
    }

    #[test]
    fn malformed_pdus_are_errors_not_panics() {
        assert_eq!(decode(&[0, 0, 0, 4, 0, 0, 0, 0]), Err(SmppError::Length(4)));
        assert_eq!(
            decode(&[0xff, 0, 0, 0]),
            Err(SmppError::Length(0xff00_0000))
        );
        let cut = frame(command::DELIVER_SM, 0, 1, &[0, 1]);
        assert_eq!(decode(&cut), Err(SmppError::Short));
        let unterminated = frame(command::DELIVER_SM, 0, 1, b"x");
        assert_eq!(decode(&unterminated), Err(SmppError::Unterminated));
        let no_id = frame(command::SUBMIT_SM_RESP, 0, 1, b"12");
        assert_eq!(decode(&no_id), Err(SmppError::Unterminated));
        let mut tlv = vec![0, 1, 1, 0, 1, 1, 0, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        tlv.extend_from_slice(&[0x00, 0x1e, 0x00, 0x09, b'1']);
        assert_eq!(
            decode(&frame(command::DELIVER_SM, 0, 1, &tlv)),
            Err(SmppError::Short)
        );
    }
}
