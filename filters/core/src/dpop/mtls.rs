//! RFC 8705 §3 certificate-bound access tokens: `cnf.x5t#S256` must equal
//! base64url(SHA-256(DER of the client certificate)).
//!
//! The digest comes either from the connection the proxy terminated (Envoy attribute
//! `connection.sha256_peer_certificate_digest`, hex) or, only where the policy opts in, from
//! the `Hash=` of the first element of `x-forwarded-client-cert` (XFCC), which Istio/Envoy
//! gateways set after terminating the client's TLS. XFCC is a request header: it is safe only
//! where the mesh guarantees that nothing but the gateway can reach this proxy and that the
//! gateway sanitises the header (`SANITIZE_SET`).

use crate::denial::Reason;

use crate::policy::dpop::CertSource;

/// What the proxy knows about the client certificate.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientCert<'a> {
    /// `connection.sha256_peer_certificate_digest` (hex), when the connection had one.
    pub connection_sha256_hex: Option<&'a str>,
    /// The `x-forwarded-client-cert` header value(s), joined with `,` if repeated.
    pub xfcc: Option<&'a str>,
}

/// Hex (either case) to bytes; `None` unless it is exactly 32 bytes.
fn sha256_from_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.trim().as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (slot, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let [hi, lo] = pair else { return None };
        let hi = char::from(*hi).to_digit(16)?;
        let lo = char::from(*lo).to_digit(16)?;
        *slot = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// Splits `s` on `sep` outside double-quoted strings (XFCC values may be quoted and contain
/// `,`, `;` and `\"`).
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            c if c == sep && !in_quotes => {
                // `start` and `i` are char boundaries (`char_indices`).
                parts.push(s.get(start..i).unwrap_or_default());
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(s.get(start..).unwrap_or_default());
    parts
}

/// The `Hash=` of the first XFCC element (the client nearest the edge). `None` when absent
/// or malformed.
pub fn xfcc_first_hash(xfcc: &str) -> Option<[u8; 32]> {
    let first = split_unquoted(xfcc, ',').into_iter().next()?;
    let mut found = None;
    for pair in split_unquoted(first, ';') {
        let (k, v) = pair.split_once('=')?;
        if k.trim().eq_ignore_ascii_case("hash") {
            if found.is_some() {
                // Two `Hash=` in one element: ambiguous, refuse.
                return None;
            }
            found = Some(sha256_from_hex(v.trim().trim_matches('"'))?);
        }
    }
    found
}

/// RFC 8705 §3: checks `cnf.x5t#S256` against the certificate the policy says to trust.
pub fn check_binding(
    x5t_s256: &str,
    source: CertSource,
    cert: &ClientCert<'_>,
) -> Result<(), Reason> {
    let digest = match source {
        CertSource::Connection => cert.connection_sha256_hex.filter(|h| !h.is_empty()),
        CertSource::Xfcc => cert.xfcc.filter(|h| !h.is_empty()),
    };
    let Some(digest) = digest else {
        return Err(Reason::MtlsCertMissing);
    };
    let bytes = match source {
        CertSource::Connection => sha256_from_hex(digest),
        CertSource::Xfcc => xfcc_first_hash(digest),
    };
    // A source we cannot read is the same as no certificate: never a pass.
    let Some(bytes) = bytes else {
        return Err(Reason::MtlsCertMissing);
    };
    if crate::b64::encode(&bytes) == x5t_s256 {
        Ok(())
    } else {
        Err(Reason::MtlsThumbprintMismatch)
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

    const HEX: &str = "468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688";

    #[test]
    fn xfcc_first_element_hash() {
        let cases = [
            (
                format!(
                    "By=spiffe://a;Hash={HEX};Subject=\"/C=US/CN=Test, Client;x\";URI=spiffe://c"
                ),
                true,
            ),
            (
                format!("Hash={HEX},By=spiffe://b;Hash=00{}", &HEX[2..]),
                true,
            ),
            (format!("By=x;Subject=\"a,Hash=00\",Hash={HEX}"), false),
            (format!("HASH={}", HEX.to_uppercase()), true),
            ("By=x;URI=y".to_string(), false),
            (format!("Hash={HEX};Hash={HEX}"), false),
        ];
        for (xfcc, want) in cases {
            assert_eq!(xfcc_first_hash(&xfcc).is_some(), want, "{xfcc}");
            if want {
                assert_eq!(xfcc_first_hash(&xfcc), sha256_from_hex(HEX), "{xfcc}");
            }
        }
    }
}
