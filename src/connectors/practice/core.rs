//! The CAQH CORE connectivity rule's real-time message (rule version 2.2.0), pure, in its two
//! forms: the SOAP 1.2 envelope (an X12 payload in a `COREEnvelopeRealTimeRequest` with a
//! WS-Security UsernameToken; the `COREEnvelopeRealTimeResponse` read back by element names,
//! whatever prefixes and namespaces the responder chose for the children, as clearinghouses
//! differ) and the HTTP MIME multipart form (the same fields as `multipart/form-data` parts,
//! the user name and password among them). Either way a responder's `ErrorCode`, or a SOAP
//! fault, is told apart from a payload.

use thiserror::Error;

/// The rule's namespace for the envelope elements.
pub const NAMESPACE: &str = "http://www.caqh.org/SOAP/WSDL/CORERule2.2.0.xsd";
/// The SOAP 1.2 content type with the rule's action.
pub const CONTENT_TYPE: &str = "application/soap+xml; charset=UTF-8; action=\"http://www.caqh.org/SOAP/WSDL/CORETransactions/RealTimeTransaction\"";

/// Why a CORE answer carries no usable payload.
#[derive(Debug, Error, PartialEq)]
pub enum CoreError {
    #[error("the answer is not XML: {0}")]
    NotXml(String),
    #[error("the answer is not a CORE real-time response (no COREEnvelopeRealTimeResponse)")]
    NotCore,
    #[error("SOAP fault {code}: {reason}")]
    Fault { code: String, reason: String },
    #[error("the responder refused the request: {code} {message}")]
    Refused { code: String, message: String },
    #[error("the answer's PayloadID {found} is not the request's {expected}")]
    OtherPayload { found: String, expected: String },
    #[error("the answer carries {0}, not a 271")]
    PayloadType(String),
}

/// One real-time request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub payload_type: &'a str,
    /// A UUID, echoed in the response.
    pub payload_id: &'a str,
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub timestamp: &'a str,
    pub sender_id: &'a str,
    pub receiver_id: &'a str,
    pub username: &'a str,
    pub password: &'a str,
    pub payload: &'a str,
}

/// The SOAP 1.2 envelope of `r`. The payload goes as escaped text rather than CDATA, so no
/// payload can end the section early.
pub fn envelope(r: &Request<'_>) -> String {
    let e = crate::markup::escape;
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://www.w3.org/2003/05/soap-envelope"><soapenv:Header><wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd" soapenv:mustUnderstand="true"><wsse:UsernameToken><wsse:Username>{}</wsse:Username><wsse:Password Type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText">{}</wsse:Password></wsse:UsernameToken></wsse:Security></soapenv:Header><soapenv:Body><cor:COREEnvelopeRealTimeRequest xmlns:cor="{NAMESPACE}"><PayloadType>{}</PayloadType><ProcessingMode>RealTime</ProcessingMode><PayloadID>{}</PayloadID><TimeStamp>{}</TimeStamp><SenderID>{}</SenderID><ReceiverID>{}</ReceiverID><CORERuleVersion>2.2.0</CORERuleVersion><Payload>{}</Payload></cor:COREEnvelopeRealTimeRequest></soapenv:Body></soapenv:Envelope>"#,
        e(r.username),
        e(r.password),
        e(r.payload_type),
        e(r.payload_id),
        e(r.timestamp),
        e(r.sender_id),
        e(r.receiver_id),
        e(r.payload),
    )
}

/// The first element below `node` named `name`, whatever its namespace.
fn named<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.descendants()
        .find(|n| n.is_element() && n.tag_name().name() == name)
}

/// The text of `node`'s child element `name` (CDATA included), empty when absent.
fn text(node: roxmltree::Node<'_, '_>, name: &str) -> String {
    node.children()
        .find(|n| n.is_element() && n.tag_name().name() == name)
        .map(|n| {
            n.descendants()
                .filter(|t| t.is_text())
                .filter_map(|t| t.text())
                .collect::<String>()
        })
        .unwrap_or_default()
}

/// The X12 payload of a successful SOAP response to the request `payload_id`.
pub fn response_payload(xml: &str, payload_id: &str) -> Result<String, CoreError> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| CoreError::NotXml(e.to_string()))?;
    let root = doc.root_element();
    if let Some(fault) = named(root, "Fault") {
        let part = |name| {
            named(fault, name)
                .and_then(|v| v.text())
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        return Err(CoreError::Fault {
            code: part("Value"),
            reason: part("Text"),
        });
    }
    let response = named(root, "COREEnvelopeRealTimeResponse").ok_or(CoreError::NotCore)?;
    checked(|name| text(response, name), payload_id)
}

/// The payload of a response whose fields `field` gives, once its error code, payload id and
/// type are checked.
fn checked(field: impl Fn(&str) -> String, payload_id: &str) -> Result<String, CoreError> {
    let code = field("ErrorCode");
    if !code.trim().is_empty() && code.trim() != "Success" {
        return Err(CoreError::Refused {
            code: code.trim().to_string(),
            message: field("ErrorMessage").trim().to_string(),
        });
    }
    let id = field("PayloadID");
    if id.trim() != payload_id {
        return Err(CoreError::OtherPayload {
            found: id.trim().to_string(),
            expected: payload_id.to_string(),
        });
    }
    let kind = field("PayloadType");
    if !["X12_271", "X12_999", "X12_TA1"]
        .iter()
        .any(|k| kind.trim().starts_with(k))
    {
        return Err(CoreError::PayloadType(kind.trim().to_string()));
    }
    Ok(field("Payload").trim().to_string())
}

/// The MIME multipart form of `r`: its content type (with `boundary`) and its body.
pub fn multipart(r: &Request<'_>, boundary: &str) -> (String, String) {
    let fields = [
        ("PayloadType", r.payload_type),
        ("ProcessingMode", "RealTime"),
        ("PayloadID", r.payload_id),
        ("TimeStamp", r.timestamp),
        ("UserName", r.username),
        ("Password", r.password),
        ("SenderID", r.sender_id),
        ("ReceiverID", r.receiver_id),
        ("CORERuleVersion", "2.2.0"),
        ("Payload", r.payload),
    ];
    let mut body = String::new();
    for (name, value) in fields {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// The X12 payload of a successful multipart response to the request `payload_id`.
pub fn multipart_payload(
    content_type: &str,
    body: &str,
    payload_id: &str,
) -> Result<String, CoreError> {
    let not_core = || CoreError::NotCore;
    let boundary = content_type
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("boundary="))
        .next()
        .map(|b| b.trim_matches('"'))
        .filter(|b| !b.is_empty() && content_type.trim_start().starts_with("multipart/form-data"))
        .ok_or_else(not_core)?;
    let mut fields = std::collections::HashMap::new();
    for part in body.split(&format!("--{boundary}")).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let part = part.strip_prefix("\r\n").unwrap_or(part);
        let Some((head, value)) = part.split_once("\r\n\r\n") else {
            return Err(not_core());
        };
        let name = head
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
            .flat_map(|l| l.split(';'))
            .filter_map(|p| p.trim().strip_prefix("name="))
            .next()
            .map(|n| n.trim_matches('"').to_string())
            .ok_or_else(not_core)?;
        let value = value.strip_suffix("\r\n").unwrap_or(value);
        fields.insert(name, value.to_string());
    }
    if fields.is_empty() {
        return Err(not_core());
    }
    checked(
        |name| fields.get(name).cloned().unwrap_or_default(),
        payload_id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(payload: &'a str) -> Request<'a> {
        Request {
            payload_type: "X12_270_Request_005010X279A1",
            payload_id: "id-1",
            timestamp: "2026-12-02T09:15:00Z",
            sender_id: "CLINIC01",
            receiver_id: "PAYER01",
            username: "clinic",
            password: "p<&>w",
            payload,
        }
    }

    fn answer(children: &str) -> String {
        format!(
            r#"<?xml version='1.0' encoding='UTF-8'?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:tns="{NAMESPACE}"><s:Body><tns:COREEnvelopeRealTimeResponse>{children}</tns:COREEnvelopeRealTimeResponse></s:Body></s:Envelope>"#
        )
    }

    #[test]
    fn the_request_escapes_what_xml_would_misread() {
        let xml = envelope(&request("ISA*00*~NM1*IL*1*O'BRIEN&apos;<B>]]>~"));
        assert!(xml.contains("<wsse:Password Type=\"http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText\">p&lt;&amp;&gt;w</wsse:Password>"));
        let doc = roxmltree::Document::parse(&xml).expect("well-formed");
        let payload = doc
            .descendants()
            .find(|n| n.tag_name().name() == "Payload")
            .and_then(|n| n.text())
            .expect("payload");
        assert_eq!(payload, "ISA*00*~NM1*IL*1*O'BRIEN&apos;<B>]]>~");
    }

    #[test]
    fn a_success_gives_the_payload_whatever_the_prefixes() {
        let xml = answer(
            "<PayloadType>X12_271_Response_005010X279A1</PayloadType><PayloadID>id-1</PayloadID>\
             <Payload><![CDATA[ISA*00*~]]></Payload><ErrorCode>Success</ErrorCode><ErrorMessage/>",
        );
        assert_eq!(response_payload(&xml, "id-1"), Ok("ISA*00*~".into()));
        let qualified = xml
            .replace("<Payload", "<tns:Payload")
            .replace("</Payload", "</tns:Payload");
        assert_eq!(response_payload(&qualified, "id-1"), Ok("ISA*00*~".into()));
    }

    #[test]
    fn the_multipart_form_carries_the_same_fields_and_is_read_back() {
        let (kind, body) = multipart(&request("ISA*00*~"), "b0undary");
        assert_eq!(kind, "multipart/form-data; boundary=b0undary");
        assert!(
            body.contains("name=\"Password\"\r\n\r\np<&>w\r\n"),
            "{body}"
        );
        let answer = "--x\r\nContent-Disposition: form-data; name=\"PayloadType\"\r\n\r\nX12_271_Response_005010X279A1\r\n\
--x\r\nContent-Disposition: form-data; name=\"PayloadID\"\r\n\r\nid-1\r\n\
--x\r\nContent-Disposition: form-data; name=\"Payload\"\r\n\r\nISA*00*~\r\n\
--x\r\nContent-Disposition: form-data; name=\"ErrorCode\"\r\n\r\nSuccess\r\n--x--\r\n";
        assert_eq!(
            multipart_payload("multipart/form-data; boundary=\"x\"", answer, "id-1"),
            Ok("ISA*00*~".into())
        );
        let refused = answer.replace("\r\nSuccess\r\n", "\r\nUnauthorized\r\n");
        assert!(matches!(
            multipart_payload("multipart/form-data; boundary=x", &refused, "id-1"),
            Err(CoreError::Refused { .. })
        ));
        assert_eq!(
            multipart_payload("text/plain", answer, "id-1"),
            Err(CoreError::NotCore)
        );
        assert_eq!(
            multipart_payload("multipart/form-data; boundary=x", "junk", "id-1"),
            Err(CoreError::NotCore)
        );
    }

    #[test]
    fn refusals_faults_and_strangers_are_errors() {
        let refused = answer(
            "<PayloadID>id-1</PayloadID><ErrorCode>Unauthorized</ErrorCode><ErrorMessage>bad password</ErrorMessage>",
        );
        assert_eq!(
            response_payload(&refused, "id-1")
                .expect_err("refused")
                .to_string(),
            "the responder refused the request: Unauthorized bad password"
        );
        let fault = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><s:Fault><s:Code><s:Value>s:Sender</s:Value></s:Code><s:Reason><s:Text xml:lang="en">schema</s:Text></s:Reason></s:Fault></s:Body></s:Envelope>"#;
        assert_eq!(
            response_payload(fault, "id-1"),
            Err(CoreError::Fault {
                code: "s:Sender".into(),
                reason: "schema".into()
            })
        );
        let other = answer(
            "<PayloadType>X12_271_Response_005010X279A1</PayloadType><PayloadID>id-2</PayloadID><ErrorCode>Success</ErrorCode>",
        );
        assert!(matches!(
            response_payload(&other, "id-1"),
            Err(CoreError::OtherPayload { .. })
        ));
        let kind = answer(
            "<PayloadType>X12_277_Response</PayloadType><PayloadID>id-1</PayloadID><ErrorCode>Success</ErrorCode>",
        );
        assert!(matches!(
            response_payload(&kind, "id-1"),
            Err(CoreError::PayloadType(_))
        ));
        assert_eq!(
            response_payload("<a>", "id-1").map_err(|e| matches!(e, CoreError::NotXml(_))),
            Err(true)
        );
        assert_eq!(response_payload("<a/>", "id-1"), Err(CoreError::NotCore));
    }
}
