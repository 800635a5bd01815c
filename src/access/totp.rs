//! The TOTP second factor (RFC 6238): HMAC-SHA-1, 6 digits, 30-second steps, one step of clock
//! skew either way. Pure: the caller gives the time, and remembers the step a code was
//! accepted for, since a code may be used only once (RFC 6238 §5.2).

use totp_rs::{Algorithm, Builder, Secret, Totp};

/// Bytes of a new account's secret: the 160 bits RFC 4226 §4 recommends.
pub const SECRET_BYTES: usize = 20;

/// What the enrolment URI names as the issuer in an authenticator app.
const ISSUER: &str = "clinic-gateway";

fn totp(secret: &[u8], digits: u8, account: &str) -> Option<Totp> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(digits)
        .with_skew(1)
        .with_step_duration(30)
        .with_secret(Secret::new(secret.into()))
        .with_account_name(account)
        .with_issuer(Some(ISSUER))
        .build()
        .ok()
}

/// A new random secret.
pub fn new_secret() -> Vec<u8> {
    rand::random::<[u8; SECRET_BYTES]>().to_vec()
}

/// The step (`unix_secs / 30`) that `code` is valid for at `unix_secs`, within one step either
/// way; `None` for a wrong or malformed code.
pub fn check(secret: &[u8], code: &str, unix_secs: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    totp(secret, 6, "")?.check(code, unix_secs)
}

/// The `otpauth://totp/...` URI an authenticator app enrols from (as text or as a QR code).
pub fn enrolment_uri(secret: &[u8], account: &str) -> Option<String> {
    totp(secret, 6, account)?.to_url().ok()
}

/// Light modules of the quiet zone around a QR code (the standard asks for four; two scan
/// reliably off a screen and keep the code small in a terminal).
const QUIET: i32 = 2;

/// The enrolment URI as a QR code in text, two modules a character: light modules are drawn
/// (`█`, `▀`, `▄`), dark ones left blank, which reads dark on light in a terminal with a dark
/// background, as `qrencode -t UTF8` does. `None` if the text is too long for a QR code.
pub fn qr_text(uri: &str) -> Option<String> {
    let qr = qrcodegen::QrCode::encode_text(uri, qrcodegen::QrCodeEcc::Medium).ok()?;
    // get_module answers light for a position outside the code: the quiet zone.
    let light = |x: i32, y: i32| !qr.get_module(x, y);
    let span = -QUIET..qr.size() + QUIET;
    let mut out = String::new();
    for y in span.clone().step_by(2) {
        for x in span.clone() {
            let bottom = y + 1 < qr.size() + QUIET && light(x, y + 1);
            out.push(match (light(x, y), bottom) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        out.push('\n');
    }
    Some(out)
}

/// The enrolment URI as a QR code in SVG for the page: one square per dark module on white,
/// with the quiet zone. `None` if the text is too long for a QR code.
pub fn qr_svg(uri: &str) -> Option<String> {
    let qr = qrcodegen::QrCode::encode_text(uri, qrcodegen::QrCodeEcc::Medium).ok()?;
    let side = qr.size() + 2 * QUIET;
    let mut path = String::new();
    for y in 0..qr.size() {
        for x in 0..qr.size() {
            if qr.get_module(x, y) {
                path.push_str(&format!("M{},{}h1v1h-1z", x + QUIET, y + QUIET));
            }
        }
    }
    Some(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {side} {side}\" width=\"{px}\" \
         height=\"{px}\" shape-rendering=\"crispEdges\" role=\"img\" aria-label=\"TOTP enrolment QR code\">\
         <rect width=\"{side}\" height=\"{side}\" fill=\"#fff\"/><path d=\"{path}\" fill=\"#000\"/></svg>",
        px = side * 6,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The code of `digits` digits at `unix_secs`.
    fn code(secret: &[u8], digits: u8, unix_secs: u64) -> String {
        totp(secret, digits, "")
            .expect("valid parameters")
            .generate(unix_secs)
            .to_string()
    }

    #[test]
    fn rfc6238_appendix_b_sha1_vectors() {
        let secret = b"12345678901234567890";
        for (t, want) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(code(secret, 8, t), want, "T = {t}");
        }
    }

    #[test]
    fn a_code_is_valid_one_step_either_way_and_names_its_step() {
        let secret = b"12345678901234567890";
        let at = 1_111_111_111;
        let now = code(secret, 6, at);
        assert_eq!(check(secret, &now, at), Some(at / 30));
        assert_eq!(check(secret, &now, at + 30), Some(at / 30));
        assert_eq!(check(secret, &now, at - 30), Some(at / 30));
        assert_eq!(check(secret, &now, at + 90), None);
    }

    #[test]
    fn malformed_codes_are_refused() {
        let secret = b"12345678901234567890";
        for bad in ["", "12345", "1234567", "abcdef", "12 345"] {
            assert_eq!(check(secret, bad, 59), None, "{bad:?}");
        }
    }

    #[test]
    fn the_qr_code_is_square_with_its_quiet_zone() {
        let uri = enrolment_uri(b"12345678901234567890", "alice").expect("uri");
        let text = qr_text(&uri).expect("fits");
        let lines: Vec<&str> = text.lines().collect();
        let width = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == width));
        assert_eq!(lines.len(), width.div_ceil(2));
        assert!(
            lines[0].chars().all(|c| c == '█'),
            "the quiet zone is light"
        );
        assert!(text.contains(' '), "dark modules");
        let svg = qr_svg(&uri).expect("fits");
        let side = width as i32;
        assert!(
            svg.contains(&format!("viewBox=\"0 0 {side} {side}\"")),
            "{svg}"
        );
        assert!(
            svg.contains(&format!("M{QUIET},{QUIET}h1v1h-1z")),
            "a finder pattern's corner"
        );
    }

    #[test]
    fn the_enrolment_uri_names_issuer_account_and_secret() {
        let uri = enrolment_uri(b"12345678901234567890", "alice").expect("uri");
        assert!(
            uri.starts_with("otpauth://totp/clinic-gateway:alice?"),
            "{uri}"
        );
        assert!(
            uri.contains("secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
            "{uri}"
        );
        assert!(uri.contains("issuer=clinic-gateway"), "{uri}");
    }
}
