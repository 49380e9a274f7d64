//! `htu` matching (RFC 9449 §4.3 step 9; docs/checks.md §2.8).
//!
//! Both the proof's `htu` and the request's URI are brought to the RFC 3986 §6.2.2
//! (syntax-based: case, percent-encoding, dot segments) and §6.2.3 (scheme-based: default
//! port, empty path) normal form, without query and fragment, and compared exactly.
//!
//! Behind a gateway the proxy sees an internal authority (and maybe a path with a public
//! prefix removed): the policy names the public origin(s) and the stripped prefix. Forwarded
//! headers are read only when the policy trusts them.

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

/// An absolute http(s) URI, normalised, without query and fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalUri {
    pub origin: Origin,
    pub path: String,
}

impl std::fmt::Display for NormalUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.origin, self.path)
    }
}

/// Parses and normalises an `htu` value. `None` when it is not an absolute http(s) URI.
pub fn parse_htu(htu: &str) -> Option<NormalUri> {
    // RFC 9449 §4.3 step 9: query and fragment are not compared.
    let without = htu.split(['?', '#']).next().unwrap_or("");
    let (scheme, rest) = without.split_once("://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let origin = Origin::from_parts(scheme, authority)?;
    Some(NormalUri {
        origin,
        path: normalise_path(path)?,
    })
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
fn remove_dot_segments(input: &str) -> String {
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

/// What the proxy knows about the request's target.
#[derive(Debug, Clone, Default)]
pub struct RequestTarget<'a> {
    /// `:scheme` as the proxy sees it.
    pub scheme: &'a str,
    /// `:authority` as the proxy sees it.
    pub authority: &'a str,
    /// `:path` (query included or not; it is ignored). The DPoP filter passes the raw path
    /// of the request's one canonical path (`crate::path::canonical`).
    pub path: &'a str,
    /// `X-Forwarded-Proto`, read only when the policy trusts forwarded headers.
    pub forwarded_proto: Option<&'a str>,
    /// `X-Forwarded-Host`, idem.
    pub forwarded_host: Option<&'a str>,
    /// `X-Forwarded-Prefix`, idem.
    pub forwarded_prefix: Option<&'a str>,
}

/// First element of a comma-separated forwarded header (the hop nearest the client).
fn first_element(v: &str) -> &str {
    v.split(',').next().unwrap_or("").trim()
}

/// What `htu` matching reads from the policy (implemented by `DpopPolicy`). A trait here, so
/// this module does not import the policy module that imports it (no cycle).
pub trait HtuRules {
    /// Normalised public origins; empty = the origin the proxy sees.
    fn public_origins(&self) -> &[Origin];
    /// Normalised prefix (starts with `/`, no trailing `/`), or empty.
    fn stripped_path_prefix(&self) -> &str;
    fn trust_forwarded_headers(&self) -> bool;
}

/// docs/checks.md §2.8: whether the proof's `htu` names this request.
pub fn htu_matches<P: HtuRules + ?Sized>(
    policy: &P,
    target: &RequestTarget<'_>,
    htu: &str,
) -> bool {
    let Some(proof) = parse_htu(htu) else {
        return false;
    };
    let trust = policy.trust_forwarded_headers();

    // ---- path ----
    let raw_path = target.path.split(['?', '#']).next().unwrap_or("");
    let Some(req_path) = normalise_path(raw_path) else {
        return false;
    };
    let prefix = match target.forwarded_prefix.filter(|_| trust) {
        Some(p) => match normalise_prefix(first_element(p)) {
            Ok(p) => p,
            Err(_) => return false,
        },
        None => policy.stripped_path_prefix().to_string(),
    };
    let path_ok = if prefix.is_empty() {
        proof.path == req_path
    } else {
        // `/fhir` stripped from `/fhir` leaves `/`: accept both `/fhir` and `/fhir/`.
        proof.path.strip_prefix(prefix.as_str()) == Some(req_path.as_str())
            || (req_path == "/" && proof.path == prefix)
    };
    if !path_ok {
        return false;
    }

    // ---- origin ----
    let forwarded = match target.forwarded_host.filter(|_| trust) {
        Some(host) => {
            let scheme = target
                .forwarded_proto
                .map(first_element)
                .unwrap_or(target.scheme);
            match Origin::from_parts(scheme, first_element(host)) {
                Some(o) => Some(o),
                // A trusted header we cannot read: refuse rather than guess.
                None => return false,
            }
        }
        None => None,
    };
    let seen = match forwarded {
        Some(o) => Some(o),
        None => {
            let scheme = match target.forwarded_proto.filter(|_| trust) {
                Some(p) => first_element(p),
                None => target.scheme,
            };
            Origin::from_parts(scheme, target.authority)
        }
    };
    if policy.public_origins().is_empty() {
        seen.as_ref() == Some(&proof.origin)
    } else if trust && target.forwarded_host.is_some() {
        // A trusted forwarded origin must still be one of the public ones.
        seen.as_ref() == Some(&proof.origin) && policy.public_origins().contains(&proof.origin)
    } else {
        policy.public_origins().contains(&proof.origin)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn normalises_per_rfc3986_6_2() {
        let cases = [
            (
                "HTTPS://Resource.Example.ORG:443/a",
                "https://resource.example.org/a",
            ),
            ("http://x.org:80", "http://x.org/"),
            ("https://x.org:", "https://x.org/"),
            ("https://x.org:8443/a/%7euser", "https://x.org:8443/a/~user"),
            ("https://x.org/a%2fb", "https://x.org/a%2Fb"),
            ("https://x.org/a/./b/../c", "https://x.org/a/c"),
            ("https://x.org/a?x=1#f", "https://x.org/a"),
            ("https://[::1]:443/p", "https://[::1]/p"),
            ("https://x.org/a b", "https://x.org/a%20b"),
        ];
        for (input, want) in cases {
            let got = parse_htu(input).map(|u| u.to_string());
            assert_eq!(got.as_deref(), Some(want), "{input}");
        }
        for bad in [
            "ftp://x.org/",
            "https://user@x.org/",
            "https:///p",
            "https://x.org:99999/",
            "https://x.org/%zz",
            "/relative",
            "https://x.org:1a/",
        ] {
            assert_eq!(parse_htu(bad), None, "{bad}");
        }
    }

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

    #[test]
    fn long_paths_are_capped_and_linear() {
        // Path length cap: a long run of `/..` or `/a` used to cost quadratic time.
        let many = "/a".repeat(MAX_PATH_BYTES / 2);
        assert_eq!(normalise_path(&many).map(|p| p.len()), Some(MAX_PATH_BYTES));
        let dots = format!("{}{}", "/a".repeat(600), "/..".repeat(600));
        assert_eq!(normalise_path(&dots).as_deref(), Some("/"));
        assert_eq!(normalise_path(&format!("{many}/")), None);
        // Well over the cap, straight to the algorithm: still fast (no timing asserted).
        let huge = format!("{}{}", "/ab".repeat(40_000), "/..".repeat(40_000));
        assert_eq!(remove_dot_segments(&huge), "/");
    }
}
