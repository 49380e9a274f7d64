//! RFC 3986 normal forms the guard compares URIs in: an origin (`scheme://host[:port]`,
//! §6.2.2 case and §6.2.3 default port), a path (§6.2.2 percent-encoding and §5.2.4 dot
//! segments, §6.2.3 empty path), and a path prefix. Used for DPoP `htu` (RFC 9449 §4.3) and
//! the policy fields that name public origins and prefixes.

use crate::path::MAX_PATH_BYTES;

/// `scheme://host[:port]`, normalised: lower-case scheme and host, default port dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    /// `None` when the scheme's default port (or no port) was given.
    pub port: Option<u16>,
}

impl Origin {
    /// Builds an origin from a scheme and an authority (`host[:port]`), normalising both.
    /// Refuses userinfo, empty hosts, bad ports and schemes other than http(s).
    pub fn from_parts(scheme: &str, authority: &str) -> Option<Origin> {
        let scheme = scheme.trim().to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            _ => return None,
        };
        let authority = authority.trim();
        if authority.contains('@') {
            return None;
        }
        // IP-literal `[v6]:port` or `host:port`.
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            let end = rest.find(']')?;
            let host = authority.get(..end + 2)?;
            let after = rest.get(end + 1..)?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let host_ok = if host.starts_with('[') {
            host.len() > 2
                && host.get(1..host.len() - 1).is_some_and(|h| {
                    h.bytes()
                        .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
                })
        } else {
            !host.is_empty() && host.bytes().all(reg_name_byte)
        };
        if !host_ok {
            return None;
        }
        let port = match port {
            // RFC 3986 §6.2.3: an empty port is the same as no port.
            None | Some("") => None,
            Some(p) => {
                if !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 5 {
                    return None;
                }
                let n: u32 = p.parse().ok()?;
                let n = u16::try_from(n).ok()?;
                if n == default_port {
                    None
                } else {
                    Some(n)
                }
            }
        };
        Some(Origin {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// A policy origin: `https://host[:port]`, optionally with a lone trailing `/`.
    pub fn parse_config(s: &str) -> Result<Origin, String> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| "must be an origin like `https://api.example.org`".to_string())?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err("must be an origin only (scheme://host[:port]), without path; use `stripped_path_prefix` for a path".into());
        }
        Origin::from_parts(scheme, authority)
            .ok_or_else(|| "must be an http(s) origin with a valid host and port".into())
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}://{}:{}", self.scheme, self.host, p),
            None => write!(f, "{}://{}", self.scheme, self.host),
        }
    }
}

fn reg_name_byte(b: u8) -> bool {
    // RFC 3986 §3.2.2 reg-name: unreserved / sub-delims (percent-encoded hosts refused).
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters that may appear literally in a path (pchar and `/`, RFC 3986 §3.3).
fn is_path_literal(b: u8) -> bool {
    is_unreserved(b) || b"!$&'()*+,;=:@/".contains(&b)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The upper-case hex digit of the low nibble of `n` (RFC 3986 §6.2.2.1).
fn hex_upper(n: u8) -> char {
    char::from(HEX.get(usize::from(n & 0x0f)).copied().unwrap_or(b'0'))
}

/// RFC 3986 §6.2.2: percent-encoded unreserved characters decoded, other percent-encodings
/// upper-cased, characters that may not appear literally encoded, dot segments removed
/// (§5.2.4), and §6.2.3: an empty path is `/`. Query/fragment must already be removed.
/// `None` for a broken percent-encoding or a path over [`MAX_PATH_BYTES`] (linear time).
pub fn normalise_path(path: &str) -> Option<String> {
    if path.len() > MAX_PATH_BYTES {
        return None;
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(bytes.len() + 1);
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = hex_val(*bytes.get(i + 1)?)?;
            let lo = hex_val(*bytes.get(i + 2)?)?;
            let v = (hi << 4) | lo;
            if is_unreserved(v) {
                out.push(char::from(v));
            } else {
                out.push('%');
                out.push(hex_upper(hi));
                out.push(hex_upper(lo));
            }
            i += 3;
        } else {
            if is_path_literal(b) {
                out.push(char::from(b));
            } else {
                out.push('%');
                out.push(hex_upper(b >> 4));
                out.push(hex_upper(b & 0x0f));
            }
            i += 1;
        }
    }
    let mut path = remove_dot_segments(&out);
    if path.is_empty() {
        path.push('/');
    }
    Some(path)
}

/// RFC 3986 §5.2.4, in one pass: the input is consumed from the front (a moving slice,
/// never copied), and rule E's "remove the last segment" only cuts what the output's last
/// segment holds, so every byte is moved and cut at most once: linear time.
pub(crate) fn remove_dot_segments(input: &str) -> String {
    let mut output = String::with_capacity(input.len());
    let mut rest = input;
    let pop = |output: &mut String| match output.rfind('/') {
        Some(i) => output.truncate(i),
        None => output.clear(),
    };
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("../") {
            // A
            rest = r;
        } else if let Some(r) = rest.strip_prefix("./") {
            // A
            rest = r;
        } else if rest.starts_with("/./") {
            // B: `/./x` -> `/x`
            rest = rest.strip_prefix("/.").unwrap_or(rest);
        } else if rest == "/." {
            // B: `/.` -> `/`, which rule E then moves to the output.
            output.push('/');
            break;
        } else if rest.starts_with("/../") {
            // C: `/../x` -> `/x`, and the last output segment goes.
            rest = rest.strip_prefix("/..").unwrap_or(rest);
            pop(&mut output);
        } else if rest == "/.." {
            pop(&mut output);
            output.push('/');
            break;
        } else if rest == "." || rest == ".." {
            // D
            break;
        } else {
            // E: the first segment (with its leading `/`) moves to the output.
            let start = usize::from(rest.starts_with('/'));
            let end = rest
                .get(start..)
                .and_then(|r| r.find('/'))
                .map(|i| i + start)
                .unwrap_or(rest.len());
            let (segment, after) = rest.split_at(end);
            output.push_str(segment);
            rest = after;
        }
    }
    output
}

/// A path prefix from config or `X-Forwarded-Prefix`: normalised, starts with `/`, no
/// trailing `/`; `/` alone is the empty prefix.
pub fn normalise_prefix(p: &str) -> Result<String, String> {
    let p = p.trim();
    if !p.starts_with('/') || p.contains(['?', '#']) {
        return Err("must be a path starting with `/`, without query or fragment".into());
    }
    let n = normalise_path(p).ok_or_else(|| "bad percent-encoding".to_string())?;
    Ok(n.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_dot_segments_follows_rfc3986_5_2_4() {
        // RFC 3986 §5.2.4 and §5.4 examples (merged paths), plus edge cases.
        let cases = [
            ("/a/b/c/./../../g", "/a/g"),
            ("mid/content=5/../6", "mid/6"),
            ("/b/c/./g", "/b/c/g"),
            ("/b/c/../g", "/b/g"),
            ("/b/c/../../../g", "/g"),
            ("/b/c/g/.", "/b/c/g/"),
            ("/b/c/g/..", "/b/c/"),
            ("/b/c/g.", "/b/c/g."),
            ("/b/c/.g", "/b/c/.g"),
            ("/b/c/..g", "/b/c/..g"),
            ("/b/c/./../g", "/b/g"),
            ("/b/c/g/./h", "/b/c/g/h"),
            ("/b/c/g/../h", "/b/c/h"),
            ("../x", "x"),
            ("./x", "x"),
            (".", ""),
            ("..", ""),
            ("/..", "/"),
            ("/.", "/"),
            ("//a/../b", "//b"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(remove_dot_segments(input), want, "{input}");
        }
    }
}
