//! Strict base64url without padding (RFC 7515 §2, §5.1): no `=`, no `+`/`/`, no whitespace,
//! no non-canonical trailing bits.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Decodes base64url without padding; refuses anything else.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.as_bytes()).ok()
}

/// Encodes base64url without padding.
pub fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_padding_and_standard_alphabet() {
        assert_eq!(decode("YQ"), Some(b"a".to_vec()));
        assert_eq!(decode("YQ=="), None);
        assert_eq!(decode("+/8"), None);
        assert_eq!(decode("YQ\n"), None);
        // Non-canonical trailing bits ("YR" also decodes to 'a' in lax decoders).
        assert_eq!(decode("YR"), None);
    }
}
