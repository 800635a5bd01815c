//! Pure BACnet/IP: building the datagrams the gateway sends, and decoding every datagram it
//! receives into an [`Inbound`] (BVLC, NPDU and APDU headers, then the service data of the
//! answers and notifications it uses).
//!
//! Requests are built with bacnet-rs's message types and encoders (the design card's stack).
//! Everything received is decoded here by [`Reader`], which checks every length against the
//! bytes actually there: bacnet-rs's decoders index past the end or overflow on malformed
//! input (an unsigned of 9 octets, a tag whose length runs past the datagram) and would panic
//! on what a faulty device sends. No I/O, no clock; fuzzed by `fuzz/fuzz_targets/bacnet_decode.rs`.

use crate::devices::Value;
use bacnet_rs::app::{Apdu, MaxApduSize, MaxSegments};
use bacnet_rs::datalink::bip::{BvlcFunction, BvlcHeader};
use bacnet_rs::encoding::{self as enc, ApplicationTag};
use bacnet_rs::network::Npdu;
use bacnet_rs::object::{ObjectIdentifier, ObjectType, PropertyIdentifier};
use bacnet_rs::service::{
    ConfirmedServiceChoice, PropertyReference, ReadAccessSpecification,
    ReadPropertyMultipleRequest, ReadPropertyRequest, SubscribeCovRequest,
    UnconfirmedServiceChoice, WhoIsRequest, WritePropertyRequest,
};
use serde::Deserialize;
use std::fmt;

/// Property identifiers the gateway uses (BACnetPropertyIdentifier).
pub mod property {
    pub const OBJECT_NAME: u32 = 77;
    pub const PRESENT_VALUE: u32 = 85;
    pub const PRIORITY_ARRAY: u32 = 87;
    pub const RELINQUISH_DEFAULT: u32 = 104;
    pub const STATUS_FLAGS: u32 = 111;
    pub const UNITS: u32 = 117;
}

/// Confirmed service choices the gateway sends or answers.
pub mod service {
    pub const CONFIRMED_COV_NOTIFICATION: u8 = 1;
    pub const SUBSCRIBE_COV: u8 = 5;
    pub const READ_PROPERTY: u8 = 12;
    pub const READ_PROPERTY_MULTIPLE: u8 = 14;
    pub const WRITE_PROPERTY: u8 = 15;
}

/// The object types a device table can name: the ones with a present value the gateway reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectKind {
    AnalogInput,
    AnalogOutput,
    AnalogValue,
    BinaryInput,
    BinaryOutput,
    BinaryValue,
    MultiStateInput,
    MultiStateOutput,
    MultiStateValue,
}

impl ObjectKind {
    /// BACnetObjectType.
    pub fn code(self) -> u16 {
        match self {
            ObjectKind::AnalogInput => 0,
            ObjectKind::AnalogOutput => 1,
            ObjectKind::AnalogValue => 2,
            ObjectKind::BinaryInput => 3,
            ObjectKind::BinaryOutput => 4,
            ObjectKind::BinaryValue => 5,
            ObjectKind::MultiStateInput => 13,
            ObjectKind::MultiStateOutput => 14,
            ObjectKind::MultiStateValue => 19,
        }
    }

    pub fn from_code(code: u16) -> Option<ObjectKind> {
        use ObjectKind::*;
        [
            AnalogInput,
            AnalogOutput,
            AnalogValue,
            BinaryInput,
            BinaryOutput,
            BinaryValue,
            MultiStateInput,
            MultiStateOutput,
            MultiStateValue,
        ]
        .into_iter()
        .find(|k| k.code() == code)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::AnalogInput => "analog-input",
            ObjectKind::AnalogOutput => "analog-output",
            ObjectKind::AnalogValue => "analog-value",
            ObjectKind::BinaryInput => "binary-input",
            ObjectKind::BinaryOutput => "binary-output",
            ObjectKind::BinaryValue => "binary-value",
            ObjectKind::MultiStateInput => "multi-state-input",
            ObjectKind::MultiStateOutput => "multi-state-output",
            ObjectKind::MultiStateValue => "multi-state-value",
        }
    }

    /// Outputs and values have a priority array; inputs are read-only.
    pub fn commandable(self) -> bool {
        !matches!(
            self,
            ObjectKind::AnalogInput | ObjectKind::BinaryInput | ObjectKind::MultiStateInput
        )
    }

    /// Only analog objects have a `units` property.
    pub fn has_units(self) -> bool {
        matches!(
            self,
            ObjectKind::AnalogInput | ObjectKind::AnalogOutput | ObjectKind::AnalogValue
        )
    }

    fn is_binary(self) -> bool {
        matches!(
            self,
            ObjectKind::BinaryInput | ObjectKind::BinaryOutput | ObjectKind::BinaryValue
        )
    }

    fn is_multi_state(self) -> bool {
        matches!(
            self,
            ObjectKind::MultiStateInput
                | ObjectKind::MultiStateOutput
                | ObjectKind::MultiStateValue
        )
    }
}

/// An object identifier as it travels: 10-bit type, 22-bit instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId {
    pub kind: u16,
    pub instance: u32,
}

impl ObjectId {
    pub fn new(kind: ObjectKind, instance: u32) -> ObjectId {
        ObjectId {
            kind: kind.code(),
            instance,
        }
    }

    pub fn device(instance: u32) -> ObjectId {
        ObjectId { kind: 8, instance }
    }

    fn from_raw(raw: u32) -> ObjectId {
        ObjectId {
            kind: (raw >> 22) as u16,
            instance: raw & 0x3F_FFFF,
        }
    }

    fn to_bacnet(self) -> ObjectIdentifier {
        ObjectIdentifier::new(ObjectType::from(u32::from(self.kind)), self.instance)
    }

    /// `analog-value,1`: the spelling of bacpypes and most BACnet tools.
    pub fn parse(text: &str) -> Option<ObjectId> {
        let (kind, instance) = text.split_once(',')?;
        let kind = ObjectKind::deserialize(serde::de::value::StrDeserializer::<
            serde::de::value::Error,
        >::new(kind))
        .ok()?;
        Some(ObjectId::new(kind, instance.parse().ok()?))
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match ObjectKind::from_code(self.kind) {
            Some(k) => write!(f, "{},{}", k.as_str(), self.instance),
            None if self.kind == 8 => write!(f, "device,{}", self.instance),
            None => write!(f, "type-{},{}", self.kind, self.instance),
        }
    }
}

/// A value to write to a present value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WriteValue {
    /// Analog objects take a REAL.
    Real(f32),
    /// Binary objects take BACnetBinaryPV: 0 inactive, 1 active.
    Enumerated(u32),
    /// Multi-state objects take their state number, from 1.
    Unsigned(u32),
    /// Relinquish: clears the gateway's slot in the priority array.
    Null,
}

/// Why a value cannot be written to an object.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    #[error("an {kind} takes {expected}")]
    Kind {
        kind: &'static str,
        expected: &'static str,
    },
    #[error("{0} does not fit the object's present value")]
    OutOfRange(f64),
}

/// The wire value for `value` written to an object of `kind`; `None` relinquishes.
pub fn write_value(kind: ObjectKind, value: Option<Value>) -> Result<WriteValue, EncodeError> {
    let wrong = |expected| EncodeError::Kind {
        kind: kind.as_str(),
        expected,
    };
    match value {
        None => Ok(WriteValue::Null),
        Some(Value::Bool(b)) if kind.is_binary() => Ok(WriteValue::Enumerated(u32::from(b))),
        Some(Value::Number(_)) if kind.is_binary() => Err(wrong("true or false")),
        Some(Value::Number(n)) if kind.is_multi_state() => {
            if n.fract() == 0.0 && (1.0..=f64::from(u32::MAX)).contains(&n) {
                Ok(WriteValue::Unsigned(n as u32))
            } else {
                Err(EncodeError::OutOfRange(n))
            }
        }
        Some(Value::Number(n)) => {
            let f = n as f32;
            if f.is_finite() {
                Ok(WriteValue::Real(f))
            } else {
                Err(EncodeError::OutOfRange(n))
            }
        }
        Some(Value::Bool(_)) => Err(wrong("a number")),
    }
}

/// A BACnet/IP datagram: BVLC header, then `npdu`.
fn bvlc(function: BvlcFunction, npdu: Vec<u8>) -> Vec<u8> {
    // Datagrams the gateway builds are a few hundred bytes at most.
    let length = u16::try_from(npdu.len() + 4).unwrap_or(u16::MAX);
    let mut out = BvlcHeader::new(function, length).encode();
    out.extend(npdu);
    out
}

fn npdu(expecting_reply: bool, apdu: &Apdu) -> Vec<u8> {
    let mut n = Npdu::new();
    n.control.expecting_reply = expecting_reply;
    let mut out = n.encode();
    out.extend(apdu.encode());
    out
}

fn confirmed(invoke_id: u8, choice: ConfirmedServiceChoice, data: Vec<u8>) -> Vec<u8> {
    let apdu = Apdu::ConfirmedRequest {
        segmented: false,
        more_follows: false,
        // The gateway asks for small things; a segmented answer is refused by the device
        // (abort segmentation-not-supported) rather than half-handled here.
        segmented_response_accepted: false,
        max_segments: MaxSegments::Unspecified,
        max_response_size: MaxApduSize::Up1476,
        invoke_id,
        sequence_number: None,
        proposed_window_size: None,
        service_choice: choice,
        service_data: data,
    };
    bvlc(BvlcFunction::OriginalUnicastNpdu, npdu(true, &apdu))
}

/// A request that cannot be encoded: only out-of-range identifiers, which config validation
/// refuses, so this reports a bug rather than a device problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot encode the request: {0}")]
pub struct RequestError(String);

fn encoded(
    f: impl FnOnce(&mut Vec<u8>) -> Result<(), enc::EncodingError>,
) -> Result<Vec<u8>, RequestError> {
    let mut data = Vec::new();
    f(&mut data).map_err(|e| RequestError(e.to_string()))?;
    Ok(data)
}

/// Who-Is for exactly `device`; `broadcast` picks Original-Broadcast-NPDU.
pub fn who_is(device: u32, broadcast: bool) -> Result<Vec<u8>, RequestError> {
    let data = encoded(|b| WhoIsRequest::for_device(device).encode(b))?;
    let apdu = Apdu::UnconfirmedRequest {
        service_choice: UnconfirmedServiceChoice::WhoIs,
        service_data: data,
    };
    let function = if broadcast {
        BvlcFunction::OriginalBroadcastNpdu
    } else {
        BvlcFunction::OriginalUnicastNpdu
    };
    Ok(bvlc(function, npdu(false, &apdu)))
}

/// ReadProperty of one property (an array element with `index`).
pub fn read_property(
    invoke_id: u8,
    object: ObjectId,
    property: u32,
    index: Option<u32>,
) -> Result<Vec<u8>, RequestError> {
    let p = PropertyIdentifier::from(property);
    let request = match index {
        Some(i) => ReadPropertyRequest::with_array_index(object.to_bacnet(), p, i),
        None => ReadPropertyRequest::new(object.to_bacnet(), p),
    };
    let data = encoded(|b| request.encode(b))?;
    Ok(confirmed(
        invoke_id,
        ConfirmedServiceChoice::ReadProperty,
        data,
    ))
}

/// ReadPropertyMultiple of `properties` of each object.
pub fn read_property_multiple(
    invoke_id: u8,
    objects: &[(ObjectId, Vec<u32>)],
) -> Result<Vec<u8>, RequestError> {
    let specs = objects
        .iter()
        .map(|(o, props)| {
            let refs = props
                .iter()
                .map(|p| PropertyReference::new(PropertyIdentifier::from(*p)))
                .collect();
            ReadAccessSpecification::new(o.to_bacnet(), refs)
        })
        .collect();
    let data = encoded(|b| ReadPropertyMultipleRequest::new(specs).encode(b))?;
    Ok(confirmed(
        invoke_id,
        ConfirmedServiceChoice::ReadPropertyMultiple,
        data,
    ))
}

/// WriteProperty of the present value at `priority` (1..=16, validated in config).
pub fn write_present_value(
    invoke_id: u8,
    object: ObjectId,
    value: WriteValue,
    priority: u8,
) -> Result<Vec<u8>, RequestError> {
    let mut v = Vec::new();
    match value {
        WriteValue::Real(f) => {
            enc::encode_real(&mut v, f).map_err(|e| RequestError(e.to_string()))?
        }
        WriteValue::Enumerated(e) => enc::encode_enumerated(&mut v, e),
        WriteValue::Unsigned(u) => {
            enc::encode_unsigned(&mut v, u).map_err(|e| RequestError(e.to_string()))?
        }
        WriteValue::Null => enc::encode_application_tag(&mut v, ApplicationTag::Null, 0),
    }
    let request = WritePropertyRequest::with_priority(
        object.to_bacnet(),
        property::PRESENT_VALUE,
        v,
        priority,
    );
    let data = encoded(|b| request.encode(b))?;
    Ok(confirmed(
        invoke_id,
        ConfirmedServiceChoice::WriteProperty,
        data,
    ))
}

/// SubscribeCOV for `object` with confirmed notifications for `lifetime_s` seconds.
pub fn subscribe_cov(
    invoke_id: u8,
    process_id: u32,
    object: ObjectId,
    lifetime_s: u32,
) -> Result<Vec<u8>, RequestError> {
    let request =
        SubscribeCovRequest::with_lifetime(process_id, object.to_bacnet(), true, lifetime_s);
    let data = encoded(|b| request.encode(b))?;
    Ok(confirmed(
        invoke_id,
        ConfirmedServiceChoice::SubscribeCOV,
        data,
    ))
}

/// The SimpleACK answering a confirmed request (a confirmed COV notification).
pub fn simple_ack(invoke_id: u8, service: u8) -> Vec<u8> {
    let apdu = Apdu::SimpleAck {
        invoke_id,
        service_choice: service,
    };
    bvlc(BvlcFunction::OriginalUnicastNpdu, npdu(false, &apdu))
}

/// Why a received datagram could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated at byte {0}")]
    Truncated(usize),
    #[error("not BACnet/IP (BVLC type {0:#04x})")]
    NotBacnetIp(u8),
    #[error("BVLC length {declared} but the datagram has {actual} bytes")]
    Length { declared: usize, actual: usize },
    #[error("NPDU version {0}, expected 1")]
    Version(u8),
    #[error("unexpected {found} at byte {at} (expected {expected})")]
    Unexpected {
        at: usize,
        expected: &'static str,
        found: String,
    },
    #[error("a segmented answer; the gateway does not accept segmentation")]
    Segmented,
    #[error("a value of {0} octets is too long")]
    TooLong(usize),
    #[error("values nested too deep")]
    TooDeep,
}

/// A decoded application-tagged value.
#[derive(Debug, Clone, PartialEq)]
pub enum AppValue {
    Null,
    Boolean(bool),
    Unsigned(u64),
    Signed(i64),
    Real(f32),
    Double(f64),
    Enumerated(u32),
    CharacterString(String),
    ObjectId(ObjectId),
    /// Octet and bit strings, dates, times: carried but not used by the gateway.
    Other(u8),
    /// A constructed value (context-tagged structure) inside the list; skipped.
    Constructed,
}

impl AppValue {
    /// The present value of an object of `kind` as a reading, or why it is not one.
    pub fn to_value(&self, kind: ObjectKind) -> Result<Value, String> {
        let number = |n: f64| {
            if n.is_finite() {
                Ok(Value::Number(n))
            } else {
                Err(format!("not a finite number ({n})"))
            }
        };
        match (self, kind.is_binary()) {
            (AppValue::Enumerated(e), true) => Ok(Value::Bool(*e != 0)),
            (AppValue::Boolean(b), _) => Ok(Value::Bool(*b)),
            (AppValue::Real(f), false) => number(f64::from(*f)),
            (AppValue::Double(f), false) => number(*f),
            (AppValue::Unsigned(u), false) => number(*u as f64),
            (AppValue::Signed(s), false) => number(*s as f64),
            (AppValue::Enumerated(e), false) => number(f64::from(*e)),
            (other, _) => Err(format!("unexpected {other:?} for an {}", kind.as_str())),
        }
    }
}

/// One property's result in a ReadPropertyMultiple answer or a COV notification.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyResult {
    pub property: u32,
    pub index: Option<u32>,
    /// The values, or the device's error (class, code) for this property.
    pub result: Result<Vec<AppValue>, (u32, u32)>,
}

/// A decoded datagram.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    IAm {
        device: ObjectId,
        max_apdu: u64,
        vendor: u64,
    },
    SimpleAck {
        invoke_id: u8,
        service: u8,
    },
    ComplexAck {
        invoke_id: u8,
        service: u8,
        data: Vec<u8>,
    },
    Error {
        invoke_id: u8,
        service: u8,
        class: u32,
        code: u32,
    },
    Reject {
        invoke_id: u8,
        reason: u8,
    },
    Abort {
        invoke_id: u8,
        reason: u8,
        server: bool,
    },
    /// `invoke_id` is set for a confirmed notification, which must be acknowledged.
    CovNotification {
        invoke_id: Option<u8>,
        process_id: u32,
        device: ObjectId,
        object: ObjectId,
        time_remaining: u32,
        values: Vec<PropertyResult>,
    },
    /// Something the gateway has no use for (Who-Is from others, network messages, ...).
    Ignored(&'static str),
}

/// The deepest nesting of constructed values skipped; deeper is refused, so that a crafted
/// datagram cannot recurse without bound.
const MAX_DEPTH: usize = 16;

/// A tag as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    /// An application tag with its length (for Boolean, the value itself).
    App {
        number: u8,
        len: usize,
    },
    Context {
        number: u8,
        len: usize,
    },
    Open(u8),
    Close(u8),
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tag::App { number, .. } => write!(f, "application tag {number}"),
            Tag::Context { number, .. } => write!(f, "context tag {number}"),
            Tag::Open(n) => write!(f, "opening tag {n}"),
            Tag::Close(n) => write!(f, "closing tag {n}"),
        }
    }
}

/// A cursor over received bytes; every read is bounds-checked.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data, pos: 0 }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self
            .data
            .get(self.pos)
            .ok_or(DecodeError::Truncated(self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or(DecodeError::Truncated(self.data.len()))?;
        let b = &self.data[self.pos..end];
        self.pos = end;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn rest(&mut self) -> &'a [u8] {
        let r = self.data.get(self.pos..).unwrap_or_default();
        self.pos = self.data.len();
        r
    }

    fn tag(&mut self) -> Result<Tag, DecodeError> {
        let b = self.u8()?;
        let mut number = b >> 4;
        if number == 15 {
            number = self.u8()?;
        }
        let context = b & 0x08 != 0;
        let lvt = b & 0x07;
        if context && lvt == 6 {
            return Ok(Tag::Open(number));
        }
        if context && lvt == 7 {
            return Ok(Tag::Close(number));
        }
        let len = if lvt == 5 {
            match self.u8()? {
                254 => usize::from(self.u16()?),
                255 => {
                    let b = self.bytes(4)?;
                    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
                }
                n => usize::from(n),
            }
        } else {
            usize::from(lvt)
        };
        Ok(if context {
            Tag::Context { number, len }
        } else {
            Tag::App { number, len }
        })
    }

    fn peek_tag(&mut self) -> Result<Tag, DecodeError> {
        let at = self.pos;
        let t = self.tag();
        self.pos = at;
        t
    }

    fn unexpected(
        &self,
        at: usize,
        expected: &'static str,
        found: impl fmt::Display,
    ) -> DecodeError {
        DecodeError::Unexpected {
            at,
            expected,
            found: found.to_string(),
        }
    }

    /// An unsigned integer of `len` octets (at most 8).
    fn uint(&mut self, len: usize) -> Result<u64, DecodeError> {
        if len > 8 {
            return Err(DecodeError::TooLong(len));
        }
        Ok(self
            .bytes(len)?
            .iter()
            .fold(0u64, |acc, b| acc << 8 | u64::from(*b)))
    }

    fn context_uint(&mut self, number: u8) -> Result<u64, DecodeError> {
        let at = self.pos;
        match self.tag()? {
            Tag::Context { number: n, len } if n == number => self.uint(len),
            other => Err(self.unexpected(at, "a context-tagged unsigned", other)),
        }
    }

    fn context_u32(&mut self, number: u8) -> Result<u32, DecodeError> {
        let at = self.pos;
        let v = self.context_uint(number)?;
        u32::try_from(v).map_err(|_| self.unexpected(at, "a 32-bit value", v))
    }

    fn optional_context_u32(&mut self, number: u8) -> Result<Option<u32>, DecodeError> {
        if self.at_end() {
            return Ok(None);
        }
        match self.peek_tag()? {
            Tag::Context { number: n, .. } if n == number => self.context_u32(number).map(Some),
            _ => Ok(None),
        }
    }

    fn context_object(&mut self, number: u8) -> Result<ObjectId, DecodeError> {
        let at = self.pos;
        match self.tag()? {
            Tag::Context { number: n, len: 4 } if n == number => {
                Ok(ObjectId::from_raw(self.uint(4)? as u32))
            }
            other => Err(self.unexpected(at, "a context-tagged object identifier", other)),
        }
    }

    fn open(&mut self, number: u8) -> Result<(), DecodeError> {
        let at = self.pos;
        match self.tag()? {
            Tag::Open(n) if n == number => Ok(()),
            other => Err(self.unexpected(at, "an opening tag", other)),
        }
    }

    fn close(&mut self, number: u8) -> Result<(), DecodeError> {
        let at = self.pos;
        match self.tag()? {
            Tag::Close(n) if n == number => Ok(()),
            other => Err(self.unexpected(at, "a closing tag", other)),
        }
    }

    /// One application-tagged value.
    fn app_value(&mut self) -> Result<AppValue, DecodeError> {
        let at = self.pos;
        let (number, len) = match self.tag()? {
            Tag::App { number, len } => (number, len),
            other => return Err(self.unexpected(at, "an application-tagged value", other)),
        };
        let value = match number {
            0 => AppValue::Null,
            // A Boolean carries its value in the length field and has no content.
            1 => AppValue::Boolean(len != 0),
            2 => AppValue::Unsigned(self.uint(len)?),
            3 => {
                if len == 0 || len > 8 {
                    return Err(DecodeError::TooLong(len));
                }
                let raw = self.uint(len)?;
                let shift = 64 - 8 * len as u32;
                AppValue::Signed(((raw << shift) as i64) >> shift)
            }
            4 => {
                let b = self.bytes(4).and_then(|b| {
                    if len == 4 {
                        Ok(b)
                    } else {
                        Err(DecodeError::TooLong(len))
                    }
                })?;
                AppValue::Real(f32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            }
            5 => {
                if len != 8 {
                    return Err(DecodeError::TooLong(len));
                }
                let b = self.bytes(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                AppValue::Double(f64::from_be_bytes(a))
            }
            7 => {
                let b = self.bytes(len)?;
                // Character set 0 is UTF-8 (ANSI X3.4 before 2008); others are shown lossily.
                let text = b.get(1..).unwrap_or_default();
                AppValue::CharacterString(String::from_utf8_lossy(text).into_owned())
            }
            9 => {
                let v = self.uint(len)?;
                AppValue::Enumerated(u32::try_from(v).map_err(|_| DecodeError::TooLong(len))?)
            }
            12 if len == 4 => AppValue::ObjectId(ObjectId::from_raw(self.uint(4)? as u32)),
            n => {
                self.bytes(len)?;
                AppValue::Other(n)
            }
        };
        Ok(value)
    }

    /// Skips a constructed value up to its closing tag `number`.
    fn skip_constructed(&mut self, number: u8, depth: usize) -> Result<(), DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        loop {
            match self.tag()? {
                Tag::Close(n) if n == number => return Ok(()),
                Tag::Close(n) => {
                    return Err(self.unexpected(self.pos, "a matching closing tag", Tag::Close(n)));
                }
                Tag::Open(n) => self.skip_constructed(n, depth + 1)?,
                Tag::App { number: 1, .. } => {}
                Tag::App { len, .. } | Tag::Context { len, .. } => {
                    self.bytes(len)?;
                }
            }
        }
    }

    /// Values up to (and including) the closing tag `number`.
    fn values_until(&mut self, number: u8) -> Result<Vec<AppValue>, DecodeError> {
        let mut values = Vec::new();
        loop {
            match self.peek_tag()? {
                Tag::Close(n) if n == number => {
                    self.tag()?;
                    return Ok(values);
                }
                Tag::Open(n) => {
                    self.tag()?;
                    self.skip_constructed(n, 1)?;
                    values.push(AppValue::Constructed);
                }
                Tag::App { .. } => values.push(self.app_value()?),
                other => return Err(self.unexpected(self.pos, "a value or a closing tag", other)),
            }
        }
    }

    fn app_enumerated(&mut self) -> Result<u32, DecodeError> {
        let at = self.pos;
        match self.app_value()? {
            AppValue::Enumerated(e) => Ok(e),
            other => Err(self.unexpected(at, "an enumerated value", format!("{other:?}"))),
        }
    }

    fn app_unsigned(&mut self) -> Result<u64, DecodeError> {
        let at = self.pos;
        match self.app_value()? {
            AppValue::Unsigned(u) => Ok(u),
            other => Err(self.unexpected(at, "an unsigned value", format!("{other:?}"))),
        }
    }
}

/// Decodes one received datagram.
pub fn decode(datagram: &[u8]) -> Result<Inbound, DecodeError> {
    let mut r = Reader::new(datagram);
    let kind = r.u8()?;
    if kind != 0x81 {
        return Err(DecodeError::NotBacnetIp(kind));
    }
    let function = r.u8()?;
    let declared = usize::from(r.u16()?);
    if declared != datagram.len() {
        return Err(DecodeError::Length {
            declared,
            actual: datagram.len(),
        });
    }
    match function {
        0x0A | 0x0B => {}
        // Forwarded-NPDU: a BBMD relays a broadcast with the original sender's B/IP address.
        0x04 => {
            r.bytes(6)?;
        }
        _ => return Ok(Inbound::Ignored("BVLC function other than an NPDU")),
    }
    let version = r.u8()?;
    if version != 1 {
        return Err(DecodeError::Version(version));
    }
    let control = r.u8()?;
    if control & 0x80 != 0 {
        return Ok(Inbound::Ignored("network layer message"));
    }
    if control & 0x20 != 0 {
        r.u16()?;
        let len = usize::from(r.u8()?);
        r.bytes(len)?;
    }
    if control & 0x08 != 0 {
        r.u16()?;
        let len = usize::from(r.u8()?);
        r.bytes(len)?;
    }
    if control & 0x20 != 0 {
        r.u8()?;
    }
    decode_apdu(&mut r)
}

fn decode_apdu(r: &mut Reader<'_>) -> Result<Inbound, DecodeError> {
    let first = r.u8()?;
    match first >> 4 {
        0 => {
            if first & 0x08 != 0 {
                return Err(DecodeError::Segmented);
            }
            r.u8()?;
            let invoke_id = r.u8()?;
            let service = r.u8()?;
            if service != service::CONFIRMED_COV_NOTIFICATION {
                return Ok(Inbound::Ignored(
                    "confirmed request the gateway does not serve",
                ));
            }
            cov_notification(r, Some(invoke_id))
        }
        1 => match r.u8()? {
            0 => {
                let at = r.pos;
                let device = match r.app_value()? {
                    AppValue::ObjectId(o) => o,
                    other => {
                        return Err(r.unexpected(
                            at,
                            "the device identifier",
                            format!("{other:?}"),
                        ));
                    }
                };
                let max_apdu = r.app_unsigned()?;
                r.app_enumerated()?;
                let vendor = r.app_unsigned()?;
                Ok(Inbound::IAm {
                    device,
                    max_apdu,
                    vendor,
                })
            }
            2 => cov_notification(r, None),
            _ => Ok(Inbound::Ignored(
                "unconfirmed request the gateway does not use",
            )),
        },
        2 => Ok(Inbound::SimpleAck {
            invoke_id: r.u8()?,
            service: r.u8()?,
        }),
        3 => {
            if first & 0x08 != 0 {
                return Err(DecodeError::Segmented);
            }
            let invoke_id = r.u8()?;
            let service = r.u8()?;
            Ok(Inbound::ComplexAck {
                invoke_id,
                service,
                data: r.rest().to_vec(),
            })
        }
        4 => Ok(Inbound::Ignored("segment ack")),
        5 => {
            let invoke_id = r.u8()?;
            let service = r.u8()?;
            // Some services wrap the error in context tag 0 (e.g. WritePropertyMultiple).
            let wrapped = matches!(r.peek_tag()?, Tag::Open(0));
            if wrapped {
                r.tag()?;
            }
            let class = r.app_enumerated()?;
            let code = r.app_enumerated()?;
            Ok(Inbound::Error {
                invoke_id,
                service,
                class,
                code,
            })
        }
        6 => Ok(Inbound::Reject {
            invoke_id: r.u8()?,
            reason: r.u8()?,
        }),
        7 => Ok(Inbound::Abort {
            server: first & 0x01 != 0,
            invoke_id: r.u8()?,
            reason: r.u8()?,
        }),
        _ => Ok(Inbound::Ignored("reserved APDU type")),
    }
}

fn cov_notification(r: &mut Reader<'_>, invoke_id: Option<u8>) -> Result<Inbound, DecodeError> {
    let process_id = r.context_u32(0)?;
    let device = r.context_object(1)?;
    let object = r.context_object(2)?;
    let time_remaining = r.context_u32(3)?;
    r.open(4)?;
    let mut values = Vec::new();
    loop {
        if let Tag::Close(4) = r.peek_tag()? {
            r.tag()?;
            break;
        }
        let property = r.context_u32(0)?;
        let index = r.optional_context_u32(1)?;
        r.open(2)?;
        let v = r.values_until(2)?;
        r.optional_context_u32(3)?;
        values.push(PropertyResult {
            property,
            index,
            result: Ok(v),
        });
    }
    Ok(Inbound::CovNotification {
        invoke_id,
        process_id,
        device,
        object,
        time_remaining,
        values,
    })
}

/// The service data of a ReadProperty ack: the object, property and its values.
pub fn read_property_ack(data: &[u8]) -> Result<(ObjectId, u32, Vec<AppValue>), DecodeError> {
    let mut r = Reader::new(data);
    let object = r.context_object(0)?;
    let property = r.context_u32(1)?;
    r.optional_context_u32(2)?;
    r.open(3)?;
    let values = r.values_until(3)?;
    Ok((object, property, values))
}

/// The service data of a ReadPropertyMultiple ack: per object, each property's result.
pub fn read_property_multiple_ack(
    data: &[u8],
) -> Result<Vec<(ObjectId, Vec<PropertyResult>)>, DecodeError> {
    let mut r = Reader::new(data);
    let mut objects = Vec::new();
    while !r.at_end() {
        let object = r.context_object(0)?;
        r.open(1)?;
        let mut results = Vec::new();
        loop {
            if let Tag::Close(1) = r.peek_tag()? {
                r.tag()?;
                break;
            }
            let property = r.context_u32(2)?;
            let index = r.optional_context_u32(3)?;
            let at = r.pos;
            let result = match r.tag()? {
                Tag::Open(4) => Ok(r.values_until(4)?),
                Tag::Open(5) => {
                    let class = r.app_enumerated()?;
                    let code = r.app_enumerated()?;
                    r.close(5)?;
                    Err((class, code))
                }
                other => return Err(r.unexpected(at, "a property value or error", other)),
            };
            results.push(PropertyResult {
                property,
                index,
                result,
            });
        }
        objects.push((object, results));
    }
    Ok(objects)
}

/// The name of an engineering unit (BACnetEngineeringUnits), e.g. 62 → `degrees-celsius`.
pub fn unit_name(code: u32) -> String {
    bacnet_rs::object::engineering_units::EngineeringUnits::from(code).bacnet_name()
}

/// `device/object-not-found`-style name of an error class and code.
pub fn error_name(class: u32, code: u32) -> String {
    let class = match class {
        0 => "device",
        1 => "object",
        2 => "property",
        3 => "resources",
        4 => "security",
        5 => "services",
        6 => "vt",
        7 => "communication",
        _ => "other-class",
    };
    let code = match code {
        0 => "other",
        2 => "configuration-in-progress",
        3 => "device-busy",
        5 => "file-access-denied",
        7 => "inconsistent-parameters",
        9 => "invalid-data-type",
        13 => "invalid-parameter-data-type",
        16 => "missing-required-parameter",
        20 => "no-space-to-write-property",
        25 => "operational-problem",
        27 => "read-access-denied",
        29 => "service-request-denied",
        30 => "timeout",
        31 => "unknown-object",
        32 => "unknown-property",
        36 => "unsupported-object-type",
        37 => "value-out-of-range",
        40 => "write-access-denied",
        42 => "invalid-array-index",
        43 => "cov-subscription-failed",
        44 => "not-cov-property",
        45 => "optional-functionality-not-supported",
        47 => "datatype-not-supported",
        50 => "property-is-not-an-array",
        n => return format!("{class}/error-code-{n}"),
    };
    format!("{class}/{code}")
}

/// BACnetRejectReason.
pub fn reject_name(reason: u8) -> &'static str {
    match reason {
        0 => "other",
        1 => "buffer-overflow",
        2 => "inconsistent-parameters",
        3 => "invalid-parameter-data-type",
        4 => "invalid-tag",
        5 => "missing-required-parameter",
        6 => "parameter-out-of-range",
        7 => "too-many-arguments",
        8 => "undefined-enumeration",
        9 => "unrecognized-service",
        _ => "unknown reason",
    }
}

/// BACnetAbortReason.
pub fn abort_name(reason: u8) -> &'static str {
    match reason {
        0 => "other",
        1 => "buffer-overflow",
        2 => "invalid-apdu-in-this-state",
        3 => "preempted-by-higher-priority-task",
        4 => "segmentation-not-supported",
        5 => "security-error",
        6 => "insufficient-security",
        7 => "window-size-out-of-range",
        8 => "application-exceeded-reply-time",
        9 => "out-of-resources",
        10 => "tsm-timeout",
        11 => "apdu-too-long",
        _ => "unknown reason",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn i_am_from_the_simulator() {
        // Captured from bacpypes3 0.0.110 (device 599, vendor 999).
        let got = decode(&hex("810a001501001000c40200025722040091002203e7"));
        assert_eq!(
            got,
            Ok(Inbound::IAm {
                device: ObjectId::device(599),
                max_apdu: 1024,
                vendor: 999
            })
        );
    }

    #[test]
    fn requests_are_framed_as_bacnet_ip() {
        let rp =
            read_property(7, ObjectId::new(ObjectKind::AnalogInput, 1), 85, None).expect("encode");
        // BVLC unicast, NPDU expecting a reply, confirmed request, invoke 7, ReadProperty.
        assert_eq!(
            rp,
            hex("810a0011010400050 70c0c000000011955"
                .replace(' ', "")
                .as_str())
        );
        let w = write_present_value(
            9,
            ObjectId::new(ObjectKind::AnalogValue, 1),
            WriteValue::Null,
            8,
        )
        .expect("encode");
        assert!(w.ends_with(&hex("3e003f4908")), "{w:02x?}");
        let ack = simple_ack(3, service::CONFIRMED_COV_NOTIFICATION);
        assert_eq!(ack, hex("810a00090100200301"));
    }

    #[test]
    fn read_property_ack_and_errors() {
        let ack = decode(&hex("810a0017010030070c0c0080000119553e4441ac00003f")).expect("decode");
        let Inbound::ComplexAck {
            invoke_id: 7,
            service: 12,
            data,
        } = ack
        else {
            panic!("{ack:?}")
        };
        let (object, property, values) = read_property_ack(&data).expect("ack");
        assert_eq!(object, ObjectId::new(ObjectKind::AnalogValue, 1));
        assert_eq!(property, 85);
        assert_eq!(values, vec![AppValue::Real(21.5)]);
        assert_eq!(
            values[0].to_value(ObjectKind::AnalogValue),
            Ok(Value::Number(21.5))
        );
        assert_eq!(
            decode(&hex("810a000d010050020c9101911f")),
            Ok(Inbound::Error {
                invoke_id: 2,
                service: 12,
                class: 1,
                code: 31
            })
        );
        assert_eq!(error_name(1, 31), "object/unknown-object");
        assert_eq!(
            decode(&hex("810a00090100600409")),
            Ok(Inbound::Reject {
                invoke_id: 4,
                reason: 9
            })
        );
        assert_eq!(unit_name(62), "degrees-celsius");
        assert_eq!(unit_name(96), "parts-per-million");
    }

    #[test]
    fn rpm_ack_with_a_property_error() {
        // ai,1: present-value 612.0 and units 96; av,9: unknown-object on present-value.
        let data =
            hex("0c000000011e29554e44441900004f29754e91604f1f0c008000091e29555e9101911f5f1f");
        let got = read_property_multiple_ack(&data).expect("decode");
        assert_eq!(
            got,
            vec![
                (
                    ObjectId::new(ObjectKind::AnalogInput, 1),
                    vec![
                        PropertyResult {
                            property: 85,
                            index: None,
                            result: Ok(vec![AppValue::Real(612.0)])
                        },
                        PropertyResult {
                            property: 117,
                            index: None,
                            result: Ok(vec![AppValue::Enumerated(96)])
                        },
                    ]
                ),
                (
                    ObjectId::new(ObjectKind::AnalogValue, 9),
                    vec![PropertyResult {
                        property: 85,
                        index: None,
                        result: Err((1, 31))
                    }]
                ),
            ]
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &b""[..],
            &[0x81],
            &[0x80, 0x0a, 0x00, 0x04],
            &[0x81, 0x0a, 0x00, 0x05, 0x01],
            &[
                0x81, 0x0a, 0x00, 0x0b, 0x01, 0x00, 0x10, 0x00, 0xc4, 0x02, 0x00,
            ],
        ] {
            assert!(decode(bytes).is_err(), "{bytes:02x?}");
        }
        // An unsigned of 9 octets: bacnet-rs's own decoder overflows on this one.
        let ack = read_property_ack(&hex("0c0000000119553e2509010203040506070809 3f"
            .replace(' ', "")
            .as_str()));
        assert_eq!(ack, Err(DecodeError::TooLong(9)));
        let deep = [0x3e; 64];
        assert!(read_property_ack(&[&hex("0c000000011955")[..], &deep].concat()).is_err());
    }

    #[test]
    fn values_become_readings_by_object_kind() {
        assert_eq!(
            AppValue::Enumerated(1).to_value(ObjectKind::BinaryOutput),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            AppValue::Unsigned(3).to_value(ObjectKind::MultiStateValue),
            Ok(Value::Number(3.0))
        );
        assert!(
            AppValue::Real(f32::NAN)
                .to_value(ObjectKind::AnalogInput)
                .is_err()
        );
        assert_eq!(
            write_value(ObjectKind::BinaryOutput, Some(Value::Bool(true))),
            Ok(WriteValue::Enumerated(1))
        );
        assert!(write_value(ObjectKind::BinaryOutput, Some(Value::Number(1.0))).is_err());
        assert_eq!(
            write_value(ObjectKind::AnalogValue, None),
            Ok(WriteValue::Null)
        );
        assert_eq!(
            ObjectId::parse("analog-value,1"),
            Some(ObjectId::new(ObjectKind::AnalogValue, 1))
        );
        assert_eq!(
            ObjectId::new(ObjectKind::AnalogValue, 1).to_string(),
            "analog-value,1"
        );
    }
}
