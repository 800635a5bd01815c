//! Pure Modbus value handling: register words and bits to typed, scaled values, and the names of
//! Modbus exception codes. The decision whether a poll's readings are worth an event is
//! [`Reporter`], shared with the other device actors.
//!
//! Nothing here does I/O or reads the clock; the actor passes words, bits and times in. That
//! keeps every byte/word order case unit-tested and fuzzed without a device.

pub use crate::devices::{Reporter, Value};
use serde::{Deserialize, Serialize};

/// How a value is laid out in registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// One coil, discrete input, or register read as "non-zero".
    Bool,
    /// One register, unsigned.
    U16,
    /// One register, two's complement.
    I16,
    /// Two registers, unsigned.
    U32,
    /// Two registers, two's complement.
    I32,
    /// Two registers, IEEE 754 single precision.
    F32,
}

impl DataType {
    /// Registers (or bits) one value occupies.
    pub fn registers(self) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
        }
    }
}

/// Order of bytes within a register, or of registers within a 32-bit value. `Big` is the
/// Modbus standard (most significant first); `Little` covers devices that swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Most significant first.
    #[default]
    Big,
    /// Least significant first.
    Little,
}

/// Everything needed to turn raw words into a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decoding {
    pub data_type: DataType,
    pub word_order: Order,
    pub byte_order: Order,
    /// Engineering value = raw × scale + offset (numbers only).
    pub scale: f64,
    pub offset: f64,
}

/// Why raw data could not become a value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The device answered with fewer registers or bits than the type needs.
    #[error("expected {expected} registers or bits, got {got}")]
    Length { expected: usize, got: usize },
    /// An f32 NaN or infinity: devices use these for "no measurement", and JSON has no room
    /// for them.
    #[error("not a finite number (raw bits {bits:#010x})")]
    NotFinite { bits: u32 },
}

/// Decodes register words (as they arrived, most significant byte first on the wire).
pub fn decode_words(d: &Decoding, words: &[u16]) -> Result<Value, DecodeError> {
    let expected = usize::from(d.data_type.registers());
    if words.len() != expected {
        return Err(DecodeError::Length {
            expected,
            got: words.len(),
        });
    }
    let fix = |w: u16| match d.byte_order {
        Order::Big => w,
        Order::Little => w.swap_bytes(),
    };
    let single = fix(words[0]);
    let double = || {
        let (first, second) = (u32::from(fix(words[0])), u32::from(fix(words[1])));
        match d.word_order {
            Order::Big => first << 16 | second,
            Order::Little => second << 16 | first,
        }
    };
    let raw = match d.data_type {
        DataType::Bool => return Ok(Value::Bool(single != 0)),
        DataType::U16 => f64::from(single),
        DataType::I16 => f64::from(single as i16),
        DataType::U32 => f64::from(double()),
        DataType::I32 => f64::from(double() as i32),
        DataType::F32 => {
            let bits = double();
            let f = f32::from_bits(bits);
            if !f.is_finite() {
                return Err(DecodeError::NotFinite { bits });
            }
            f64::from(f)
        }
    };
    // Adding a zero offset would turn -0.0 into +0.0: a value read and written back keeps its
    // register's bits.
    let value = raw * d.scale;
    Ok(Value::Number(if d.offset == 0.0 {
        value
    } else {
        value + d.offset
    }))
}

/// Why a value cannot be written to a register.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// A number for a bool register, or a bool for a number.
    #[error("a {data_type:?} register takes {expected}")]
    Kind {
        data_type: DataType,
        expected: &'static str,
    },
    /// After removing scale and offset, the raw value does not fit the type.
    #[error("raw value {raw} does not fit {data_type:?}")]
    OutOfRange { raw: f64, data_type: DataType },
}

/// Encodes an engineering value as register words: the inverse of [`decode_words`]. Integer
/// types are rounded to the nearest raw value.
pub fn encode_words(d: &Decoding, value: Value) -> Result<Vec<u16>, EncodeError> {
    let number = match (d.data_type, value) {
        (DataType::Bool, Value::Bool(b)) => return Ok(vec![u16::from(b)]),
        (DataType::Bool, Value::Number(_)) => {
            return Err(EncodeError::Kind {
                data_type: d.data_type,
                expected: "true or false",
            });
        }
        (_, Value::Bool(_)) => {
            return Err(EncodeError::Kind {
                data_type: d.data_type,
                expected: "a number",
            });
        }
        (_, Value::Number(n)) => n,
    };
    let raw = (number - d.offset) / d.scale;
    let out_of_range = || EncodeError::OutOfRange {
        raw,
        data_type: d.data_type,
    };
    let int = |min: f64, max: f64| {
        let r = raw.round();
        // NaN fails both comparisons and is refused with the rest.
        if r >= min && r <= max {
            Ok(r)
        } else {
            Err(out_of_range())
        }
    };
    let bits: u32 = match d.data_type {
        DataType::Bool => return Err(out_of_range()),
        DataType::U16 => int(0.0, f64::from(u16::MAX))? as u32,
        DataType::I16 => u32::from(int(f64::from(i16::MIN), f64::from(i16::MAX))? as i16 as u16),
        DataType::U32 => int(0.0, f64::from(u32::MAX))? as u32,
        DataType::I32 => int(f64::from(i32::MIN), f64::from(i32::MAX))? as i32 as u32,
        DataType::F32 => {
            let f = raw as f32;
            if !f.is_finite() {
                return Err(out_of_range());
            }
            f.to_bits()
        }
    };
    let fix = |w: u16| match d.byte_order {
        Order::Big => w,
        Order::Little => w.swap_bytes(),
    };
    let (high, low) = ((bits >> 16) as u16, bits as u16);
    Ok(match (d.data_type.registers(), d.word_order) {
        (1, _) => vec![fix(low)],
        (_, Order::Big) => vec![fix(high), fix(low)],
        (_, Order::Little) => vec![fix(low), fix(high)],
    })
}

/// Decodes coils or discrete inputs (only `bool` is valid for them; see config validation).
pub fn decode_bits(bits: &[bool]) -> Result<Value, DecodeError> {
    match bits {
        [b] => Ok(Value::Bool(*b)),
        _ => Err(DecodeError::Length {
            expected: 1,
            got: bits.len(),
        }),
    }
}

/// The name of a Modbus exception code (Modbus Application Protocol v1.1b3, section 7).
pub fn exception_name(code: u8) -> String {
    match code {
        0x01 => "illegal function".into(),
        0x02 => "illegal data address".into(),
        0x03 => "illegal data value".into(),
        0x04 => "server device failure".into(),
        0x05 => "acknowledge".into(),
        0x06 => "server device busy".into(),
        0x08 => "memory parity error".into(),
        0x0A => "gateway path unavailable".into(),
        0x0B => "gateway target device failed to respond".into(),
        other => format!("unknown exception {other:#04x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(data_type: DataType, word_order: Order, byte_order: Order) -> Decoding {
        Decoding {
            data_type,
            word_order,
            byte_order,
            scale: 1.0,
            offset: 0.0,
        }
    }

    /// Decodes `words` for every byte/word order given as (word, byte, words).
    fn check(data_type: DataType, cases: &[(Order, Order, &[u16])], expected: Value) {
        for (word, byte, words) in cases {
            let got = decode_words(&dec(data_type, *word, *byte), words);
            assert_eq!(
                got,
                Ok(expected),
                "{data_type:?} word={word:?} byte={byte:?}"
            );
        }
    }

    use Order::{Big as B, Little as L};

    #[test]
    fn sixteen_bit_types_in_both_byte_orders() {
        check(
            DataType::U16,
            &[(B, B, &[0x1234]), (B, L, &[0x3412])],
            Value::Number(4660.0),
        );
        check(
            DataType::U16,
            &[(B, B, &[0xFFFF]), (B, L, &[0xFFFF])],
            Value::Number(65535.0),
        );
        check(
            DataType::I16,
            &[(B, B, &[0xFF85]), (B, L, &[0x85FF])],
            Value::Number(-123.0),
        );
        check(
            DataType::I16,
            &[(B, B, &[0x8000]), (B, L, &[0x0080])],
            Value::Number(-32768.0),
        );
        check(
            DataType::Bool,
            &[(B, B, &[0x0100]), (B, L, &[0x0001])],
            Value::Bool(true),
        );
        check(
            DataType::Bool,
            &[(B, B, &[0]), (B, L, &[0])],
            Value::Bool(false),
        );
    }

    /// 0x12345678 = ABCD, laid out as ABCD, CDAB, BADC and DCBA.
    const ORDERS_12345678: &[(Order, Order, &[u16])] = &[
        (B, B, &[0x1234, 0x5678]),
        (L, B, &[0x5678, 0x1234]),
        (B, L, &[0x3412, 0x7856]),
        (L, L, &[0x7856, 0x3412]),
    ];

    #[test]
    fn thirty_two_bit_types_in_every_word_and_byte_order() {
        check(DataType::U32, ORDERS_12345678, Value::Number(305_419_896.0));
        check(DataType::I32, ORDERS_12345678, Value::Number(305_419_896.0));
        // -2 = 0xFFFFFFFE.
        check(
            DataType::I32,
            &[
                (B, B, &[0xFFFF, 0xFFFE]),
                (L, B, &[0xFFFE, 0xFFFF]),
                (B, L, &[0xFFFF, 0xFEFF]),
                (L, L, &[0xFEFF, 0xFFFF]),
            ],
            Value::Number(-2.0),
        );
        check(
            DataType::U32,
            &[(B, B, &[0xFFFF, 0xFFFE])],
            Value::Number(4_294_967_294.0),
        );
        // 123.456 f32 = 0x42F6E979.
        check(
            DataType::F32,
            &[
                (B, B, &[0x42F6, 0xE979]),
                (L, B, &[0xE979, 0x42F6]),
                (B, L, &[0xF642, 0x79E9]),
                (L, L, &[0x79E9, 0xF642]),
            ],
            Value::Number(f64::from(123.456f32)),
        );
        // -21.5 = 0xC1AC0000.
        check(
            DataType::F32,
            &[(B, B, &[0xC1AC, 0x0000])],
            Value::Number(-21.5),
        );
    }

    #[test]
    fn a_negative_zero_reads_and_writes_back_with_its_sign() {
        let d = dec(DataType::F32, B, B);
        let Ok(Value::Number(v)) = decode_words(&d, &[0x8000, 0x0000]) else {
            panic!("a float")
        };
        assert!(v == 0.0 && v.is_sign_negative(), "{v}");
        assert_eq!(encode_words(&d, Value::Number(v)), Ok(vec![0x8000, 0x0000]));
    }

    #[test]
    fn scale_and_offset_apply_to_numbers() {
        let d = Decoding {
            scale: 0.1,
            offset: -40.0,
            ..dec(DataType::I16, B, B)
        };
        // 615 × 0.1 − 40 = 21.5
        match decode_words(&d, &[615]) {
            Ok(Value::Number(v)) => assert!((v - 21.5).abs() < 1e-9, "{v}"),
            other => panic!("{other:?}"),
        }
        let d = Decoding {
            scale: 2.0,
            offset: 1.0,
            ..dec(DataType::U32, L, B)
        };
        assert_eq!(
            decode_words(&d, &[0x0002, 0x0001]),
            Ok(Value::Number(131_077.0))
        );
    }

    #[test]
    fn wrong_lengths_and_non_finite_floats_are_errors() {
        let len = |expected, got| Err(DecodeError::Length { expected, got });
        assert_eq!(decode_words(&dec(DataType::F32, B, B), &[1]), len(2, 1));
        assert_eq!(decode_words(&dec(DataType::U16, B, B), &[1, 2]), len(1, 2));
        assert_eq!(decode_words(&dec(DataType::U16, B, B), &[]), len(1, 0));
        assert_eq!(
            decode_words(&dec(DataType::F32, B, B), &[0x7FC0, 0]),
            Err(DecodeError::NotFinite { bits: 0x7FC0_0000 })
        );
        assert_eq!(
            decode_words(&dec(DataType::F32, B, B), &[0xFF80, 0]),
            Err(DecodeError::NotFinite { bits: 0xFF80_0000 })
        );
        assert_eq!(decode_bits(&[true]), Ok(Value::Bool(true)));
        assert_eq!(decode_bits(&[]), len(1, 0));
        assert_eq!(decode_bits(&[true, false]), len(1, 2));
    }

    #[test]
    fn encoding_inverts_decoding_in_every_order() {
        for (word, byte, words) in ORDERS_12345678 {
            let d = dec(DataType::U32, *word, *byte);
            assert_eq!(
                encode_words(&d, Value::Number(305_419_896.0)),
                Ok(words.to_vec())
            );
        }
        let d = Decoding {
            scale: 0.1,
            offset: -40.0,
            ..dec(DataType::I16, B, L)
        };
        // (21.5 + 40) / 0.1 = 615 = 0x0267, bytes swapped.
        assert_eq!(encode_words(&d, Value::Number(21.5)), Ok(vec![0x6702]));
        let f = dec(DataType::F32, L, B);
        assert_eq!(
            encode_words(&f, Value::Number(-21.5)),
            Ok(vec![0x0000, 0xC1AC])
        );
        assert_eq!(
            encode_words(&dec(DataType::I32, B, B), Value::Number(-2.0)),
            Ok(vec![0xFFFF, 0xFFFE])
        );
        assert_eq!(
            encode_words(&dec(DataType::Bool, B, B), Value::Bool(true)),
            Ok(vec![1])
        );
    }

    #[test]
    fn values_that_do_not_fit_are_not_encoded() {
        let range = |data_type, raw| Err(EncodeError::OutOfRange { raw, data_type });
        assert_eq!(
            encode_words(&dec(DataType::U16, B, B), Value::Number(65536.0)),
            range(DataType::U16, 65536.0)
        );
        assert_eq!(
            encode_words(&dec(DataType::I16, B, B), Value::Number(-32769.0)),
            range(DataType::I16, -32769.0)
        );
        assert_eq!(
            encode_words(&dec(DataType::U32, B, B), Value::Number(-1.0)),
            range(DataType::U32, -1.0)
        );
        assert_eq!(
            encode_words(&dec(DataType::F32, B, B), Value::Number(1e39)),
            range(DataType::F32, 1e39)
        );
        assert!(matches!(
            encode_words(&dec(DataType::U16, B, B), Value::Bool(true)),
            Err(EncodeError::Kind { .. })
        ));
        assert!(matches!(
            encode_words(&dec(DataType::Bool, B, B), Value::Number(1.0)),
            Err(EncodeError::Kind { .. })
        ));
    }

    #[test]
    fn exception_codes_have_their_spec_names() {
        assert_eq!(exception_name(1), "illegal function");
        assert_eq!(exception_name(2), "illegal data address");
        assert_eq!(exception_name(3), "illegal data value");
        assert_eq!(exception_name(4), "server device failure");
        assert_eq!(exception_name(6), "server device busy");
        assert_eq!(exception_name(0x0A), "gateway path unavailable");
        assert_eq!(
            exception_name(0x0B),
            "gateway target device failed to respond"
        );
        assert_eq!(exception_name(0x42), "unknown exception 0x42");
    }
}
