//! Time-based one-time passwords (RFC 6238 with the defaults every authenticator app uses:
//! HMAC-SHA1, 6 digits, 30-second steps), the `otpauth://` URI apps enrol from, and its QR code.
//!
//! A code is accepted in the step of `now` and one step either side (clock drift between the
//! phone and the hub), and only in a step later than the last one accepted, so a code seen over
//! someone's shoulder cannot be used again.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use time::OffsetDateTime;

/// Seconds per step.
pub const STEP_SECONDS: i64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Bytes of a new secret (160 bits, the size RFC 4226 recommends for HMAC-SHA1).
const SECRET_BYTES: usize = 20;

/// A new random secret, base32 without padding (what apps accept typed by hand).
pub fn new_secret() -> Result<String, crate::auth::RandomError> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::getrandom(&mut bytes).map_err(|_| crate::auth::RandomError)?;
    Ok(data_encoding::BASE32_NOPAD.encode(&bytes))
}

/// The step of a time.
pub fn step_at(at: OffsetDateTime) -> u64 {
    u64::try_from(at.unix_timestamp().div_euclid(STEP_SECONDS)).unwrap_or(0)
}

/// The HOTP code (RFC 4226) of `key` for counter `step`.
pub fn code(key: &[u8], step: u64) -> Option<u32> {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).ok()?;
    mac.update(&step.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[digest.len() - 1] & 0x0f);
    let word = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    Some(word % 10u32.pow(DIGITS))
}

/// Decodes a base32 secret (spaces and case as people type them are forgiven).
fn key_of(secret: &str) -> Option<Vec<u8>> {
    let cleaned: String = secret
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    data_encoding::BASE32_NOPAD.decode(cleaned.as_bytes()).ok()
}

/// The step a typed code belongs to, if it is valid at `now` (±1 step) and later than
/// `last_used`. The code may contain spaces ("123 456").
pub fn verify(
    secret: &str,
    typed: &str,
    now: OffsetDateTime,
    last_used: Option<u64>,
) -> Option<u64> {
    let digits: String = typed.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.len() != DIGITS as usize || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let typed: u32 = digits.parse().ok()?;
    let key = key_of(secret)?;
    let current = step_at(now);
    [current.saturating_sub(1), current, current + 1]
        .into_iter()
        .filter(|step| last_used.is_none_or(|last| *step > last))
        .find(|step| {
            code(&key, *step).is_some_and(|c| {
                use subtle::ConstantTimeEq;
                c.to_be_bytes().ct_eq(&typed.to_be_bytes()).into()
            })
        })
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `otpauth://` URI an authenticator app enrols from (Key Uri Format).
pub fn otpauth_uri(issuer: &str, account: &str, secret: &str) -> String {
    format!(
        "otpauth://totp/{}:{}?secret={secret}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        encode(issuer),
        encode(account),
        encode(issuer)
    )
}

/// The URI as an inline SVG QR code (no XML declaration), or `None` if it is too long.
pub fn qr_svg(uri: &str) -> Option<String> {
    use qrcode::render::svg;
    let code =
        qrcode::QrCode::with_error_correction_level(uri.as_bytes(), qrcode::EcLevel::M).ok()?;
    let document = code
        .render::<svg::Color<'_>>()
        .min_dimensions(200, 200)
        .dark_color(svg::Color("#111827"))
        .light_color(svg::Color("#ffffff"))
        .quiet_zone(true)
        .build();
    let start = document.find("<svg")?;
    Some(document[start..].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// RFC 6238 appendix B, SHA-1 rows (8 digits there; the last 6 are the 6-digit code).
    #[test]
    fn rfc_6238_test_vectors() {
        let key = b"12345678901234567890";
        let table = [
            (59, 94_287_082u32),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
            (20_000_000_000, 65_353_130),
        ];
        for (unix, eight) in table {
            let at = OffsetDateTime::from_unix_timestamp(unix).expect("valid time");
            assert_eq!(code(key, step_at(at)), Some(eight % 1_000_000), "T={unix}");
        }
    }

    #[test]
    fn codes_are_accepted_one_step_either_side_and_never_twice() {
        let secret = data_encoding::BASE32_NOPAD.encode(b"12345678901234567890");
        let now = datetime!(2026-03-01 09:00:10 UTC);
        let step = step_at(now);
        let key = key_of(&secret).expect("base32");
        let at = |s: u64| format!("{:06}", code(&key, s).expect("code"));
        assert_eq!(verify(&secret, &at(step), now, None), Some(step));
        assert_eq!(verify(&secret, &at(step - 1), now, None), Some(step - 1));
        assert_eq!(verify(&secret, &at(step + 1), now, None), Some(step + 1));
        assert_eq!(verify(&secret, &at(step - 2), now, None), None, "too old");
        assert_eq!(verify(&secret, &at(step + 2), now, None), None, "too new");
        assert_eq!(
            verify(&secret, &at(step), now, Some(step)),
            None,
            "replayed"
        );
        let spaced = format!("{} {}", &at(step)[..3], &at(step)[3..]);
        assert_eq!(verify(&secret, &spaced, now, None), Some(step));
        assert_eq!(verify(&secret, "12345", now, None), None);
        assert_eq!(verify(&secret, "abcdef", now, None), None);
        assert_eq!(verify("not base32!", &at(step), now, None), None);
    }

    #[test]
    fn uri_names_the_issuer_and_account() {
        let uri = otpauth_uri("Omnihub Back Office", "ana@example.com", "JBSWY3DPEHPK3PXP");
        assert_eq!(
            uri,
            "otpauth://totp/Omnihub%20Back%20Office:ana%40example.com?secret=JBSWY3DPEHPK3PXP&issuer=Omnihub%20Back%20Office&algorithm=SHA1&digits=6&period=30"
        );
        assert!(qr_svg(&uri).is_some_and(|svg| svg.starts_with("<svg")));
        let secret = new_secret().expect("random");
        assert_eq!(key_of(&secret).map(|k| k.len()), Some(SECRET_BYTES));
    }
}
