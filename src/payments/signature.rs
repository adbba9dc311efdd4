//! `Flashstock-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`,
//! the scheme the big payment providers use. The timestamp is inside the signed bytes, so
//! an old notification cannot be replayed with a fresh time; several `v1` entries are
//! accepted (any one matching), so a provider can sign with an old and a new secret while
//! the secret is rotated.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const HEADER: &str = "flashstock-signature";

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Flashstock-Signature header is missing or malformed")]
    Malformed,
    #[error("no signature in Flashstock-Signature matches the body")]
    Mismatch,
    #[error("the signed timestamp is too far from now")]
    Stale,
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value a provider sends with `body` at `timestamp` (Unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(digest))
}

/// Checks the header against the body, then the timestamp against `now` (Unix seconds):
/// a forged or altered notification fails before its age is even looked at.
pub fn verify(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Malformed)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) if timestamp.is_none() => {
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed)?,
                );
            }
            Some(("t", _)) => return Err(SignatureError::Malformed),
            Some(("v1", value)) => signatures.push(value),
            // Other schemes (a future v2) are not ours to judge.
            Some(_) => {}
            None => return Err(SignatureError::Malformed),
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let expected = mac(secret, timestamp, body).finalize().into_bytes();
    // Every entry is compared, and each in constant time: how far a guess matched never
    // shows in how long the answer took.
    let mut matched = subtle::Choice::from(0);
    for signature in signatures {
        if let Ok(given) = hex::decode(signature) {
            matched |= expected.as_slice().ct_eq(&given);
        }
    }
    if !bool::from(matched) {
        return Err(SignatureError::Mismatch);
    }
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if now.abs_diff(timestamp) > tolerance.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec-0123456789abcdef0123456789abcdef";
    const FIVE_MINUTES: Duration = Duration::from_secs(300);

    #[test]
    fn a_signed_body_verifies_and_nothing_else_does() {
        let body = br#"{"id":"evt_1"}"#;
        let header = sign(SECRET, 1_700_000_000, body);
        assert_eq!(
            verify(SECRET, Some(&header), body, 1_700_000_010, FIVE_MINUTES),
            Ok(())
        );
        assert_eq!(
            verify(
                SECRET,
                Some(&header),
                br#"{"id":"evt_2"}"#,
                1_700_000_010,
                FIVE_MINUTES
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                b"another-secret-another-secret-0000",
                Some(&header),
                body,
                1_700_000_010,
                FIVE_MINUTES
            ),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is signed: moving it breaks the signature.
        let moved = header.replace("t=1700000000", "t=1700000300");
        assert_eq!(
            verify(SECRET, Some(&moved), body, 1_700_000_300, FIVE_MINUTES),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_good_signature_too_far_from_now_is_stale() {
        let body = b"{}";
        let header = sign(SECRET, 1_700_000_000, body);
        assert_eq!(
            verify(SECRET, Some(&header), body, 1_700_000_301, FIVE_MINUTES),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(SECRET, Some(&header), body, 1_699_999_699, FIVE_MINUTES),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(SECRET, Some(&header), body, 1_700_000_300, FIVE_MINUTES),
            Ok(())
        );
    }

    #[test]
    fn any_matching_v1_entry_is_enough_and_malformed_headers_are_refused() {
        let body = b"{}";
        let good = sign(SECRET, 1_700_000_000, body);
        let rotated = format!("{},v1={}", good, "00".repeat(32))
            .replace("t=1700000000,", "t=1700000000,v1=ab,");
        assert_eq!(
            verify(SECRET, Some(&rotated), body, 1_700_000_000, FIVE_MINUTES),
            Ok(())
        );
        for bad in [
            "",
            "v1=abcd",
            "t=1700000000",
            "t=soon,v1=abcd",
            "t=1,t=2,v1=abcd",
            "garbage",
        ] {
            assert_eq!(
                verify(SECRET, Some(bad), body, 1_700_000_000, FIVE_MINUTES),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            verify(SECRET, None, body, 1_700_000_000, FIVE_MINUTES),
            Err(SignatureError::Malformed)
        );
    }
}
