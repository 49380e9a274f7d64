//! Server-issued DPoP nonces (RFC 9449 §8 at the AS, §9 at the RS; docs/checks.md §2.13).
//!
//! A nonce is stateless so that every replica can check it without shared storage:
//!
//! ```text
//! nonce = base64url( window (8 bytes, big-endian) || HMAC-SHA256(secret, LABEL || window)[..16] )
//! window = floor(now / window_seconds)
//! ```
//!
//! The secret comes from the policy (the same on every replica). A nonce from the current
//! window or the one before is accepted, so a nonce handed out just before a rotation still
//! works for at least one full window; anything older, from the future, or with a bad MAC is
//! refused with `use_dpop_nonce` and a fresh nonce. 16 MAC bytes (128 bits) make forging one
//! impractical; comparison is constant-time (`verify_truncated_left`).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::policy::dpop::NonceConfig;

type HmacSha256 = Hmac<Sha256>;

/// Domain separation, so the secret cannot be confused with another use of it.
const LABEL: &[u8] = b"fapi-guard/dpop-nonce/v1\0";
const MAC_LEN: usize = 16;

fn window_of(cfg: &NonceConfig, now: i64) -> u64 {
    let w = i64::try_from(cfg.window_seconds).unwrap_or(i64::MAX).max(1);
    u64::try_from(now.div_euclid(w)).unwrap_or(0)
}

fn mac(cfg: &NonceConfig, window: u64) -> Option<HmacSha256> {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(&cfg.secret).ok()?;
    m.update(LABEL);
    m.update(&window.to_be_bytes());
    Some(m)
}

/// The nonce to hand out at `now` (the same on every replica within one window).
pub fn issue(cfg: &NonceConfig, now: i64) -> String {
    let window = window_of(cfg, now);
    let mut raw = Vec::with_capacity(8 + MAC_LEN);
    raw.extend_from_slice(&window.to_be_bytes());
    if let Some(m) = mac(cfg, window) {
        let tag = m.finalize().into_bytes();
        raw.extend_from_slice(tag.get(..MAC_LEN).unwrap_or_default());
    }
    crate::b64::encode(&raw)
}

/// Whether `nonce` was issued for the current window or the previous one.
pub fn verify(cfg: &NonceConfig, nonce: &str, now: i64) -> bool {
    let Some(raw) = crate::b64::decode(nonce) else {
        return false;
    };
    if raw.len() != 8 + MAC_LEN {
        return false;
    }
    let Some((wb, tag)) = raw.split_first_chunk::<8>() else {
        return false;
    };
    let window = u64::from_be_bytes(*wb);
    let current = window_of(cfg, now);
    if window != current && Some(window) != current.checked_sub(1) {
        return false;
    }
    match mac(cfg, window) {
        Some(m) => m.verify_truncated_left(tag).is_ok(),
        None => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::cast_possible_wrap
)]
mod tests {
    use super::*;

    fn cfg(secret: u8) -> NonceConfig {
        NonceConfig {
            secret: vec![secret; 32],
            window_seconds: 60,
        }
    }

    #[test]
    fn windows_rotate_and_previous_is_accepted() {
        let c = cfg(7);
        let n = issue(&c, 1_000);
        // 1000 is in window 16 (960..1019).
        let cases = [
            ("same window", 1_019, true),
            ("next window (previous accepted)", 1_020, true),
            ("end of next window", 1_079, true),
            ("two windows later", 1_080, false),
            ("window before issue", 959, false),
        ];
        for (name, now, want) in cases {
            assert_eq!(verify(&c, &n, now), want, "{name}");
        }
        assert_ne!(issue(&c, 1_000), issue(&c, 1_020), "rotates");
        assert_eq!(issue(&c, 960), issue(&c, 1_019), "stable within a window");
    }

    #[test]
    fn other_secret_and_garbage_fail() {
        let n = issue(&cfg(7), 1_000);
        assert!(!verify(&cfg(8), &n, 1_000));
        let mut tampered = n.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(!verify(
            &cfg(7),
            std::str::from_utf8(&tampered).unwrap(),
            1_000
        ));
        for g in [
            "",
            "x",
            "eyJ7S_zG.eyJH0-Z.HX4w-7v",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(!verify(&cfg(7), g, 1_000), "{g}");
        }
    }
}
