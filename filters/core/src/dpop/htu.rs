//! `htu` matching (RFC 9449 §4.3 step 9; docs/checks.md §2.8).
//!
//! Both the proof's `htu` and the request's URI are brought to the RFC 3986 §6.2.2
//! (syntax-based: case, percent-encoding, dot segments) and §6.2.3 (scheme-based: default
//! port, empty path) normal form (`crate::uri`), without query and fragment, and compared
//! exactly.
//!
//! Behind a gateway the proxy sees an internal authority (and maybe a path with a public
//! prefix removed): the policy names the public origin(s) and the stripped prefix. Forwarded
//! headers are read only when the policy trusts them.

use crate::policy::dpop::DpopPolicy;
pub use crate::uri::{normalise_path, normalise_prefix, Origin};

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

/// What `htu` matching reads from the policy (implemented by `DpopPolicy`, below).
pub trait HtuRules {
    /// Normalised public origins; empty = the origin the proxy sees.
    fn public_origins(&self) -> &[Origin];
    /// Normalised prefix (starts with `/`, no trailing `/`), or empty.
    fn stripped_path_prefix(&self) -> &str;
    fn trust_forwarded_headers(&self) -> bool;
}

impl HtuRules for DpopPolicy {
    fn public_origins(&self) -> &[Origin] {
        &self.public_origins
    }
    fn stripped_path_prefix(&self) -> &str {
        &self.stripped_path_prefix
    }
    fn trust_forwarded_headers(&self) -> bool {
        self.trust_forwarded_headers
    }
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
    use crate::path::MAX_PATH_BYTES;
    use crate::uri::remove_dot_segments;

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
