//! Verification of the provider's webhook signatures (`Stripe-Signature: t=…,v1=…`): an
//! HMAC-SHA256 of `"{t}.{payload}"` keyed with the whole `whsec_…` secret, compared in constant
//! time; a header may carry several `v1` entries (secret rotation), any one may match; a
//! timestamp further than the tolerance from now is refused (replays).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Why a webhook was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header has no timestamp or no v1 signature")]
    Malformed,
    #[error("the signature timestamp is {0} s away from now, more than the tolerance")]
    Stale(u64),
    #[error("no v1 signature matches the payload")]
    Mismatch,
}

/// The signature of `payload` at unix time `t`, as hex.
pub fn sign(secret: &str, t: i64, payload: &[u8]) -> String {
    let mut mac = mac_for(secret);
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    hex::encode(mac.finalize().into_bytes())
}

fn mac_for(secret: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length; this cannot fail.
    match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts any key length"),
    }
}

/// Checks a `Stripe-Signature` header against the raw body.
pub fn verify(
    secret: &str,
    header: Option<&str>,
    payload: &[u8],
    now_unix: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            continue;
        };
        match k {
            "t" => t = v.parse::<i64>().ok(),
            "v1" => signatures.push(v.to_string()),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let skew = now_unix.abs_diff(t);
    if skew > tolerance_secs.unsigned_abs() {
        return Err(SignatureError::Stale(skew));
    }
    let expected = sign(secret, t, payload);
    let matched = signatures
        .iter()
        .any(|s| bool::from(s.as_bytes().ct_eq(expected.as_bytes())));
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";

    #[test]
    fn a_good_signature_passes_and_any_change_fails() {
        let body = br#"{"id":"evt_1"}"#;
        let sig = sign(SECRET, 1000, body);
        let header = format!("t=1000,v1={sig}");
        assert_eq!(verify(SECRET, Some(&header), body, 1000, 300), Ok(()));
        assert_eq!(
            verify(SECRET, Some(&header), br#"{"id":"evt_2"}"#, 1000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("whsec_other", Some(&header), body, 1000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, Some(&header), body, 1301, 300),
            Err(SignatureError::Stale(301))
        );
        assert_eq!(
            verify(SECRET, None, body, 1000, 300),
            Err(SignatureError::Missing)
        );
        let extreme = format!("t={},v1={sig}", i64::MIN);
        assert!(matches!(
            verify(SECRET, Some(&extreme), body, 1000, 300),
            Err(SignatureError::Stale(_))
        ));
        assert_eq!(
            verify(SECRET, Some("v1=abc"), body, 1000, 300),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn any_of_several_v1_entries_may_match() {
        let body = b"{}";
        let sig = sign(SECRET, 50, body);
        let header = format!("t=50,v1=deadbeef,v1={sig},v0=ignored");
        assert_eq!(verify(SECRET, Some(&header), body, 60, 300), Ok(()));
    }

    #[test]
    fn matches_an_independent_implementation() {
        // Python: hmac.new(b"whsec_test_secret", b'1700000000.{"id":"evt_1"}', sha256).hexdigest()
        assert_eq!(
            sign(SECRET, 1_700_000_000, br#"{"id":"evt_1"}"#),
            "248a374f50f943a28b0f6ab50faf9a7e7e29b710fa26df9fb1618b9bf8ea9c9a"
        );
    }
}
