//! Register words and bits from a Modbus device, decoded as every type in every order.
//! Nothing may panic; a byte or word order is exactly a permutation of the words' bytes, and
//! encoding a decoded value gives its words back.
#![no_main]

use clinic_gateway::devices::modbus::protocol::{
    self, DataType, DecodeError, Decoding, Order, Value,
};
use libfuzzer_sys::fuzz_target;

const TYPES: [DataType; 6] = [
    DataType::Bool,
    DataType::U16,
    DataType::I16,
    DataType::U32,
    DataType::I32,
    DataType::F32,
];

fn order(bit: bool) -> Order {
    if bit { Order::Little } else { Order::Big }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let words: Vec<u16> = rest
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    let d = Decoding {
        data_type: TYPES[usize::from(selector % 6)],
        word_order: order(selector & 0x40 != 0),
        byte_order: order(selector & 0x80 != 0),
        scale: 1.0,
        offset: 0.0,
    };
    let got = protocol::decode_words(&d, &words);
    // The same value, with the reordering done here: swap bytes, then reverse the words.
    let mut standard = words.clone();
    if d.byte_order == Order::Little {
        standard.iter_mut().for_each(|w| *w = w.swap_bytes());
    }
    if d.word_order == Order::Little {
        standard.reverse();
    }
    let big = Decoding { word_order: Order::Big, byte_order: Order::Big, ..d };
    let expected = protocol::decode_words(&big, &standard);
    match (&got, &expected) {
        // A NaN raw pattern is refused, so every number here compares with itself.
        (Ok(Value::Number(a)), Ok(Value::Number(b))) => assert_eq!(a.to_bits(), b.to_bits()),
        (Err(DecodeError::NotFinite { .. }), Err(DecodeError::NotFinite { .. })) => {}
        _ => assert_eq!(got, expected),
    }
    // Writing a value read gives back the words it was read from (bool aside: any non-zero
    // register reads as true).
    if let Ok(value) = got
        && d.data_type != DataType::Bool
    {
        assert_eq!(protocol::encode_words(&d, value), Ok(words.clone()));
    }
    // Arbitrary scale and offset (even NaN or infinite) must not panic either.
    if let [a, b, ..] = rest {
        let scaled = Decoding { scale: f64::from(*a as i8) / 7.0, offset: f64::from(*b), ..d };
        if let Ok(value) = protocol::decode_words(&scaled, &words) {
            let _ = protocol::encode_words(&scaled, value);
        }
    }
    let bits: Vec<bool> = rest.iter().map(|b| b & 1 == 1).collect();
    let _ = protocol::decode_bits(&bits);
    assert!(!protocol::exception_name(selector).is_empty());
});
