//! The one canonical request path (`docs/checks.md`, "Path canonicalisation").
//!
//! Every filter calls [`canonical`] first, on every request (public routes included), and
//! decides only on what it returns: route matching ([`crate::routes::RouteTable::requirement`]),
//! the DPoP `htu` comparison and the FHIR classification. The query is kept apart, untouched.
//!
//! The guard does not rewrite the path; it refuses any `:path` that an upstream server could
//! read as a different path than the plain one (defence in depth: the proxy should already
//! have normalised it, HCM `normalize_path`/`merge_slashes`/`path_with_escaped_slashes_action`):
//!
//! - dot-segments `.`/`..`, plain or percent-encoded in any case (`%2e%2E`), RFC 3986 §5.2.4
//!   (servers remove them, so `/metadata/../Patient/x` is `/Patient/x` upstream);
//! - empty segments (`//`; servlet containers and Envoy `merge_slashes` collapse them);
//! - `;` path parameters, raw or encoded (Tomcat/Jetty strip `;...` from each segment, so
//!   `/metadata/..;/Patient/x` is `/Patient/x` to a servlet: the `..;/` proxy bypass);
//! - backslashes, raw or `%5C` (Windows/ASP.NET, Node's WHATWG URL and Envoy read `\` as `/`),
//!   and encoded `/`, `?`, `#` (`%2F` decoded by some servers into a separator);
//! - `%25` (double encoding: `%252e` becomes `%2e` after one decode, `.` after two);
//! - control characters and NUL, raw or encoded (`%00` truncates paths in C-based servers);
//! - anything not ASCII, raw or percent-encoded: overlong UTF-8 (`%C0%AE` is `.` to lax
//!   decoders), and characters that Unicode normalisation or Windows best-fit mapping turn into
//!   `.`, `/` or `\` (fullwidth `．`, `／`, `＼`);
//! - a segment ending in `.` or a space (Windows/IIS trims them: `/admin.` is `/admin`);
//! - characters RFC 3986 §3.3 does not allow in a path (space, `"`, `<`, `>`, `\`, `^`, `` ` ``,
//!   `{`, `|`, `}`) and a fragment (`#`); a target that is not origin-form (`/...`).
//!
//! What passes is decoded once (RFC 3986 §2.1: `%50atient` is `Patient` to every server) into
//! [`CanonicalPath::path`], so a decision never depends on how a client spelt a byte.
//! One pass over the input (linear time), at most [`MAX_PATH_BYTES`] bytes of path.

use crate::denial::Reason;

/// Longest path (the part of `:path` before `?`) the guard decides on. Longer paths are
/// refused (`path_too_long`): FHIR paths are short (ids are at most 64 characters), and a cap
/// keeps every per-request path operation cheap. The query is not counted.
pub const MAX_PATH_BYTES: usize = 4096;

/// Why a path is not canonical. Each maps to a reason code; [`PathFault::detail`] is the
/// `OperationOutcome` diagnostics text (it never echoes the path: it may hold patient ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathFault {
    TooLong,
    NotOriginForm,
    Fragment,
    DotSegment,
    EmptySegment,
    PathParameter,
    Backslash,
    EncodedSeparator,
    DoubleEncoding,
    BadPercentEncoding,
    ControlCharacter,
    NotAscii,
    TrailingDotOrSpace,
    IllegalCharacter,
}

impl PathFault {
    /// The denial-table reason (`filters/core/src/denial.rs`).
    pub fn reason(self) -> Reason {
        match self {
            PathFault::TooLong => Reason::PathTooLong,
            _ => Reason::PathNotCanonical,
        }
    }

    /// A short, fixed description for the `OperationOutcome` diagnostics.
    pub fn detail(self) -> &'static str {
        match self {
            PathFault::TooLong => "path longer than the guard's limit",
            PathFault::NotOriginForm => "request target is not an absolute path",
            PathFault::Fragment => "fragment in request target",
            PathFault::DotSegment => "dot-segment in path",
            PathFault::EmptySegment => "empty path segment",
            PathFault::PathParameter => "`;` path parameter",
            PathFault::Backslash => "backslash in path",
            PathFault::EncodedSeparator => "percent-encoded `/`, `\\`, `?` or `#` in path",
            PathFault::DoubleEncoding => "percent-encoded `%` in path",
            PathFault::BadPercentEncoding => "malformed percent-encoding in path",
            PathFault::ControlCharacter => "control character in path",
            PathFault::NotAscii => "non-ASCII character in path",
            PathFault::TrailingDotOrSpace => "path segment ending in `.` or space",
            PathFault::IllegalCharacter => "character not allowed in a path",
        }
    }
}

/// A request target that passed [`canonical`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath<'a> {
    /// The path as received (before `?`), already checked: what the proxy forwards.
    raw: &'a str,
    /// The path decoded once: what the upstream acts on.
    path: String,
    /// The query after `?` (raw, `None` when there is no `?`).
    query: Option<&'a str>,
}

impl<'a> CanonicalPath<'a> {
    /// The decoded path every decision uses (no query).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path as received, for comparisons that do their own RFC 3986 normalisation
    /// (the DPoP `htu`); it passed the same checks.
    pub fn raw_path(&self) -> &'a str {
        self.raw
    }

    /// The raw query, without `?`.
    pub fn query(&self) -> Option<&'a str> {
        self.query
    }

    /// Whether the path came without any percent-encoding (raw and decoded are the same).
    /// FHIR types, ids and operation names never need one: the FHIR scope filter refuses an
    /// encoded path on protected routes (`unknown_fhir_request`) rather than guess whether
    /// the server decodes it.
    pub fn is_plain(&self) -> bool {
        self.raw == self.path
    }

    /// The decoded path with the raw query, for parsers that take a request target.
    pub fn path_with_query(&self) -> String {
        match self.query {
            Some(q) => format!("{}?{}", self.path, q),
            None => self.path.clone(),
        }
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §3.3 `pchar` (and `/`) allowed literally, less `;` (refused separately).
fn literal_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@/".contains(&b)
}

/// Checks one finished segment (decoded bytes). `last`: the segment after the final `/`.
fn check_segment(seg: &[u8], last: bool) -> Result<(), PathFault> {
    match seg {
        b"." | b".." => Err(PathFault::DotSegment),
        // A single trailing `/` (`/fhir/Patient/`) is an empty last segment: allowed.
        [] if !last => Err(PathFault::EmptySegment),
        [.., b'.' | b' '] => Err(PathFault::TrailingDotOrSpace),
        _ => Ok(()),
    }
}

/// The one canonical path of a request target (`:path`), or why it is refused. Linear in the
/// length of the target.
pub fn canonical(target: &str) -> Result<CanonicalPath<'_>, PathFault> {
    let (raw, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    if raw.len() > MAX_PATH_BYTES {
        return Err(PathFault::TooLong);
    }
    if target.contains('#') {
        return Err(PathFault::Fragment);
    }
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathFault::NotOriginForm);
    }
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    out.push(b'/');
    let mut seg_start = 1;
    let mut i = 1;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_val);
            let lo = bytes.get(i + 2).copied().and_then(hex_val);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathFault::BadPercentEncoding);
            };
            let v = (hi << 4) | lo;
            match v {
                b'%' => return Err(PathFault::DoubleEncoding),
                b'/' | b'\\' | b'?' | b'#' => return Err(PathFault::EncodedSeparator),
                b';' => return Err(PathFault::PathParameter),
                0..=0x1f | 0x7f => return Err(PathFault::ControlCharacter),
                0x80..=0xff => return Err(PathFault::NotAscii),
                _ => out.push(v),
            }
            i += 3;
            continue;
        }
        match b {
            b'/' => {
                check_segment(out.get(seg_start..).unwrap_or_default(), false)?;
                out.push(b'/');
                seg_start = out.len();
            }
            b';' => return Err(PathFault::PathParameter),
            b'\\' => return Err(PathFault::Backslash),
            0..=0x1f | 0x7f => return Err(PathFault::ControlCharacter),
            0x80..=0xff => return Err(PathFault::NotAscii),
            _ if literal_ok(b) => out.push(b),
            _ => return Err(PathFault::IllegalCharacter),
        }
        i += 1;
    }
    check_segment(out.get(seg_start..).unwrap_or_default(), true)?;
    // Only ASCII was pushed.
    let path = String::from_utf8(out).map_err(|_| PathFault::NotAscii)?;
    Ok(CanonicalPath { raw, path, query })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fault(p: &str) -> Option<PathFault> {
        canonical(p).err()
    }

    #[test]
    fn plain_paths_pass_and_are_decoded_once() {
        for (input, path, query) in [
            ("/", "/", None),
            ("/fhir/metadata", "/fhir/metadata", None),
            (
                "/fhir/metadata?_format=json",
                "/fhir/metadata",
                Some("_format=json"),
            ),
            ("/fhir/Patient/", "/fhir/Patient/", None),
            (
                "/fhir/.well-known/smart-configuration",
                "/fhir/.well-known/smart-configuration",
                None,
            ),
            ("/fhir/%50atient/pat-anna", "/fhir/Patient/pat-anna", None),
            ("/fhir/Patient/a.b", "/fhir/Patient/a.b", None),
            ("/fhir/Patient/a%2Eb", "/fhir/Patient/a.b", None),
            (
                "/fhir/Patient/$everything",
                "/fhir/Patient/$everything",
                None,
            ),
            ("/a%20b/c:d@e", "/a b/c:d@e", None),
            // Found by the path_canonical fuzz target: `%7D` decodes to `}`, which is allowed
            // only encoded; the decoded path is what routes and classification compare.
            ("/hir'%7Deir'%6Deon", "/hir'}eir'meon", None),
            ("/fhir/Patient?a=..%2F;", "/fhir/Patient", Some("a=..%2F;")),
            ("/p?", "/p", Some("")),
        ] {
            let c = canonical(input).unwrap();
            assert_eq!(c.path(), path, "{input}");
            assert_eq!(c.query(), query, "{input}");
        }
        let c = canonical("/fhir/%50atient?x=1").unwrap();
        assert!(!c.is_plain());
        assert!(canonical("/fhir/Patient?x=%41").unwrap().is_plain());
        assert_eq!(c.raw_path(), "/fhir/%50atient");
        assert_eq!(c.path_with_query(), "/fhir/Patient?x=1");
    }

    #[test]
    fn every_form_a_server_reads_differently_is_refused() {
        use PathFault::*;
        let cases = [
            ("/fhir/metadata/../Patient/pat-bjorn", DotSegment),
            ("/fhir/metadata/..", DotSegment),
            ("/fhir/./Patient", DotSegment),
            ("/fhir/metadata/%2e%2e/Patient/x", DotSegment),
            ("/fhir/metadata/%2E%2E/Patient/x", DotSegment),
            ("/fhir/metadata/.%2e/Patient/x", DotSegment),
            ("/fhir/metadata/%2e/Patient", DotSegment),
            ("/fhir/metadata/..;/Patient/x", PathParameter),
            ("/fhir/metadata/%2E%2E;/Patient/x", PathParameter),
            ("/fhir/Patient;jsessionid=1/x", PathParameter),
            ("/fhir/Patient/x%3Bv=1", PathParameter),
            ("/fhir//Patient/x", EmptySegment),
            ("//fhir/Patient/x", EmptySegment),
            ("/fhir/metadata%2F..%2FPatient/x", EncodedSeparator),
            ("/fhir/metadata%2f", EncodedSeparator),
            ("/fhir/metadata%5C..%5CPatient", EncodedSeparator),
            ("/fhir/metadata%3F", EncodedSeparator),
            ("/fhir/metadata%23", EncodedSeparator),
            ("/fhir/metadata\\..\\Patient\\x", Backslash),
            ("/fhir/metadata/%252e%252e/Patient", DoubleEncoding),
            ("/fhir/metadata/%25", DoubleEncoding),
            ("/fhir/Patient/x%00.json", ControlCharacter),
            ("/fhir/Patient/x\0", ControlCharacter),
            ("/fhir/Patient/x%0a", ControlCharacter),
            ("/fhir/Patient/x\t", ControlCharacter),
            ("/fhir/Patient/x%7F", ControlCharacter),
            ("/fhir/metadata/%C0%AE%C0%AE/Patient", NotAscii),
            ("/fhir/metadata/%c0%af", NotAscii),
            ("/fhir/metadata/%EF%BC%8E%EF%BC%8E", NotAscii),
            ("/fhir/metadata/\u{ff0e}\u{ff0e}/Patient", NotAscii),
            ("/fhir/Patient/%zz", BadPercentEncoding),
            ("/fhir/Patient/%u002e", BadPercentEncoding),
            ("/fhir/Patient/%2", BadPercentEncoding),
            ("/fhir/Patient/x.", TrailingDotOrSpace),
            ("/fhir/Patient/x%20", TrailingDotOrSpace),
            ("/fhir/.../Patient", TrailingDotOrSpace),
            ("/fhir/Patient/a b", IllegalCharacter),
            ("/fhir/Patient/<x>", IllegalCharacter),
            ("/fhir/Patient/x#y", Fragment),
            ("/fhir/Patient?x=1#y", Fragment),
            ("*", NotOriginForm),
            ("", NotOriginForm),
            ("fhir/Patient", NotOriginForm),
            ("http://x/fhir", NotOriginForm),
        ];
        for (input, want) in cases {
            assert_eq!(fault(input), Some(want), "{input:?}");
            assert_eq!(want.reason(), Reason::PathNotCanonical);
        }
    }

    #[test]
    fn length_is_capped_query_is_not() {
        let ok = format!("/{}", "a".repeat(MAX_PATH_BYTES - 1));
        assert!(canonical(&ok).is_ok());
        let long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
        assert_eq!(fault(&long), Some(PathFault::TooLong));
        assert_eq!(PathFault::TooLong.reason(), Reason::PathTooLong);
        let long_query = format!("/fhir/Patient?name={}", "a".repeat(4 * MAX_PATH_BYTES));
        assert!(canonical(&long_query).is_ok());
    }
}
