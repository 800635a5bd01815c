//! A SIP call's messages and its media, pure (RFC 3261 over UDP, SDP of RFC 4566, RTP of
//! RFC 3550 carrying G.711 µ-law): the INVITE with its SDP offer, the ACK and BYE of the dialog,
//! reading a response and the callee's SDP answer, and RTP packets. No sockets here; the call
//! itself is `sip_call.rs`.

/// What is wrong with a datagram taken for a SIP response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SipError {
    #[error("not a SIP/2.0 response")]
    NotAResponse,
    #[error("a header line without ':'")]
    BadHeader,
    #[error("not UTF-8")]
    NotText,
}

/// The call's identity, fixed at its INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    /// `user@host:port` the INVITE is sent to.
    pub target: String,
    /// Our user part in `From` and `Contact`.
    pub from_user: String,
    /// Our address as the callee reaches it (`ip:port`).
    pub local: String,
    pub call_id: String,
    pub from_tag: String,
    /// The callee's tag, once a response carried it.
    pub to_tag: Option<String>,
}

impl Dialog {
    fn to_header(&self) -> String {
        match &self.to_tag {
            Some(tag) => format!("<sip:{}>;tag={tag}", self.target),
            None => format!("<sip:{}>", self.target),
        }
    }

    /// A request of this dialog: `method`, its `branch` and `cseq`, and an SDP body if any.
    fn request(&self, method: &str, branch: &str, cseq: u32, sdp: Option<&str>) -> String {
        let body = sdp.unwrap_or_default();
        let mut out = format!(
            "{method} sip:{target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@{local}>;tag={tag}\r\n\
             To: {to}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {cseq_method}\r\n\
             Contact: <sip:{user}@{local}>\r\n\
             User-Agent: clinic-gateway\r\n",
            target = self.target,
            local = self.local,
            user = self.from_user,
            tag = self.from_tag,
            to = self.to_header(),
            call_id = self.call_id,
            // An ACK carries the INVITE's sequence number (section 17.1.1.3, 13.2.2.4).
            cseq_method = method,
        );
        if sdp.is_some() {
            out.push_str("Content-Type: application/sdp\r\n");
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        out
    }

    /// The INVITE offering `sdp`.
    pub fn invite(&self, branch: &str, sdp: &str) -> String {
        self.request("INVITE", branch, 1, Some(sdp))
    }

    /// The ACK of the INVITE's final answer: for a failure, in the INVITE's transaction (its
    /// branch); for a 2xx, a transaction of its own (section 13.2.2.4).
    pub fn ack(&self, branch: &str) -> String {
        self.request("ACK", branch, 1, None)
    }

    /// The CANCEL of an INVITE no one answered: the INVITE's branch and sequence number.
    pub fn cancel(&self, branch: &str) -> String {
        self.request("CANCEL", branch, 1, None)
    }

    /// The BYE ending the call.
    pub fn bye(&self, branch: &str) -> String {
        self.request("BYE", branch, 2, None)
    }
}

/// The SDP offer: G.711 µ-law from `ip`:`rtp_port`, sent only.
pub fn offer(ip: &str, rtp_port: u16, session: u32) -> String {
    format!(
        "v=0\r\no=clinic-gateway {session} {session} IN IP4 {ip}\r\ns=notification\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendonly\r\n"
    )
}

/// A SIP response, as far as a caller reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// The full names of the compact header forms (section 7.3.3) a response may use.
fn full_name(name: &str) -> &str {
    match name {
        "v" => "Via",
        "f" => "From",
        "t" => "To",
        "i" => "Call-ID",
        "l" => "Content-Length",
        "c" => "Content-Type",
        "m" => "Contact",
        other => other,
    }
}

impl Response {
    /// The first header `name` (any case, or its compact form).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| full_name(n).eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `tag` parameter of the `To` header: the callee's side of the dialog.
    pub fn to_tag(&self) -> Option<&str> {
        param(self.header("To")?, "tag")
    }

    /// The `branch` of the top `Via`: which of our transactions this answers.
    pub fn branch(&self) -> Option<&str> {
        param(self.header("Via")?, "branch")
    }

    /// The method of the `CSeq` header.
    pub fn cseq_method(&self) -> Option<&str> {
        self.header("CSeq")?.split_whitespace().nth(1)
    }
}

/// A `;name=value` parameter of a header value.
fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Reads a datagram as a SIP response; the body is cut at `Content-Length`.
pub fn parse_response(datagram: &[u8]) -> Result<Response, SipError> {
    let text = std::str::from_utf8(datagram).map_err(|_| SipError::NotText)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))
        .unwrap_or((text, ""));
    let mut lines = head.lines();
    let status_line = lines.next().ok_or(SipError::NotAResponse)?;
    let mut parts = status_line.splitn(3, ' ');
    if parts.next() != Some("SIP/2.0") {
        return Err(SipError::NotAResponse);
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..700).contains(s))
        .ok_or(SipError::NotAResponse)?;
    let reason = parts.next().unwrap_or_default().trim().to_string();
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            // A folded line continues the header before it (section 7.3.1).
            let last = headers.last_mut().ok_or(SipError::BadHeader)?;
            last.1.push(' ');
            last.1.push_str(line.trim());
            continue;
        }
        let (name, value) = line.split_once(':').ok_or(SipError::BadHeader)?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let mut response = Response {
        status,
        reason,
        headers,
        body: String::new(),
    };
    let length = response
        .header("Content-Length")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(body.len())
        .min(body.len());
    response.body = body.get(..length).unwrap_or(body).to_string();
    Ok(response)
}

/// Where an SDP answer wants the audio: the connection address and the audio port.
pub fn sdp_audio(sdp: &str) -> Option<(String, u16)> {
    let mut address = None;
    let mut port = None;
    for line in sdp.lines().map(str::trim) {
        if let Some(c) = line.strip_prefix("c=IN IP4 ") {
            // Session-level or media-level: the last one before the audio line wins, which
            // is what a single audio stream needs.
            address = Some(c.split('/').next().unwrap_or(c).trim().to_string());
        } else if let Some(m) = line.strip_prefix("m=audio ") {
            port = m.split_whitespace().next().and_then(|p| p.parse().ok());
        }
    }
    Some((address?, port.filter(|p| *p != 0)?))
}

/// Samples (bytes of G.711) in one 20 ms packet at 8 kHz.
pub const FRAME: usize = 160;

/// One RTP packet of G.711 µ-law (payload type 0).
pub fn rtp_packet(
    sequence: u16,
    timestamp: u32,
    ssrc: u32,
    first: bool,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + payload.len());
    out.push(0x80);
    // The marker bit starts a talkspurt (RFC 3551 section 4.1).
    out.push(if first { 0x80 } else { 0x00 });
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialog() -> Dialog {
        Dialog {
            target: "+41795550002@127.0.0.1:5070".into(),
            from_user: "clinic".into(),
            local: "127.0.0.1:40000".into(),
            call_id: "c1@clinic".into(),
            from_tag: "f1".into(),
            to_tag: None,
        }
    }

    fn check(datagram: &str, status: u16, to_tag: Option<&str>, body: &str) {
        let r = parse_response(datagram.as_bytes()).expect("a response");
        assert_eq!(
            (r.status, r.to_tag(), r.body.as_str()),
            (status, to_tag, body)
        );
    }

    #[test]
    fn the_invite_carries_the_offer_and_the_bye_the_callees_tag() {
        let d = dialog();
        let invite = d.invite("z9hG4bK1", &offer("127.0.0.1", 40002, 7));
        assert!(invite.starts_with("INVITE sip:+41795550002@127.0.0.1:5070 SIP/2.0\r\n"));
        assert!(invite.contains("Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK1;rport\r\n"));
        assert!(invite.contains("CSeq: 1 INVITE\r\n"));
        assert!(invite.contains("To: <sip:+41795550002@127.0.0.1:5070>\r\n"));
        assert!(invite.contains("m=audio 40002 RTP/AVP 0\r\n"));
        let (head, body) = invite.split_once("\r\n\r\n").expect("a body");
        assert!(head.ends_with(&format!("Content-Length: {}", body.len())));
        let answered = Dialog {
            to_tag: Some("t9".into()),
            ..d
        };
        let bye = answered.bye("z9hG4bK3");
        assert!(bye.contains("To: <sip:+41795550002@127.0.0.1:5070>;tag=t9\r\n"));
        assert!(bye.contains("CSeq: 2 BYE\r\n"));
        assert!(answered.ack("z9hG4bK2").contains("CSeq: 1 ACK\r\n"));
        assert!(
            dialog()
                .cancel("z9hG4bK1")
                .starts_with("CANCEL sip:+41795550002@127.0.0.1:5070 SIP/2.0\r\n")
        );
    }

    #[test]
    fn responses_are_read_with_compact_headers_folding_and_their_length() {
        check(
            "SIP/2.0 180 Ringing\r\nv: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\nt: <sip:a@b>;tag=x1\r\nl: 0\r\n\r\n",
            180,
            Some("x1"),
            "",
        );
        check(
            "SIP/2.0 200 OK\r\nTo: <sip:a@b>\r\n ;tag=x2\r\nContent-Length: 4\r\n\r\nv=0\r\ntrailing",
            200,
            Some("x2"),
            "v=0\r",
        );
        assert_eq!(
            parse_response(b"INVITE sip:a@b SIP/2.0\r\n\r\n"),
            Err(SipError::NotAResponse)
        );
        assert_eq!(
            parse_response(b"SIP/2.0 99 Low\r\n\r\n"),
            Err(SipError::NotAResponse)
        );
        assert_eq!(
            parse_response(b"SIP/2.0 200 OK\r\nno colon\r\n\r\n"),
            Err(SipError::BadHeader)
        );
        assert_eq!(parse_response(&[0xff, 0xfe]), Err(SipError::NotText));
        let r = parse_response(
            b"SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK5;rport=1\r\nCSeq: 1 INVITE\r\n\r\n",
        )
        .expect("busy");
        assert_eq!(r.branch(), Some("z9hG4bK5"));
        assert_eq!(r.cseq_method(), Some("INVITE"));
        assert_eq!(r.reason, "Busy Here");
    }

    #[test]
    fn the_answer_names_where_the_audio_goes() {
        let sdp = "v=0\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
        assert_eq!(sdp_audio(sdp), Some(("10.0.0.1".into(), 6000)));
        assert_eq!(
            sdp_audio("v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 0 RTP/AVP 0\r\n"),
            None,
            "refused stream"
        );
        assert_eq!(sdp_audio("v=0\r\nm=audio 6000 RTP/AVP 0\r\n"), None);
    }

    #[test]
    fn rtp_packets_carry_their_header() {
        let p = rtp_packet(7, 1120, 0xdead_beef, true, &[0xff; 4]);
        assert_eq!(
            p,
            [
                0x80, 0x80, 0, 7, 0, 0, 4, 0x60, 0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff, 0xff
            ]
        );
        assert_eq!(rtp_packet(8, 0, 1, false, &[])[1], 0);
    }
}
