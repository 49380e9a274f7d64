//! Path templates of a route's `path` or `path_prefix`: a segment `{name}` matches one
//! non-empty path segment and binds it (`/orgs/{orgnr}/documents`), for `bind`.

use crate::error::PolicyError;

/// Template parameter names of a `path` or `path_prefix` (`/orgs/{orgnr}/x` → `["orgnr"]`), validated:
/// each `{name}` is a whole segment, `[A-Za-z0-9_]+`, used once.
#[inline]
pub fn template_params(prefix: &str, field: &str) -> Result<Vec<String>, PolicyError> {
    let mut names: Vec<String> = Vec::new();
    for seg in prefix.split('/') {
        if !seg.contains(['{', '}']) {
            continue;
        }
        let name = seg
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            .ok_or_else(|| {
                PolicyError::new(
                    field.to_string(),
                    "a template parameter is a whole segment `{name}` (letters, digits, _)",
                )
            })?;
        if names.iter().any(|n| n == name) {
            return Err(PolicyError::new(
                field.to_string(),
                format!("template parameter `{name}` used twice"),
            ));
        }
        names.push(name.to_string());
    }
    Ok(names)
}

/// Matches `path` (query ignored) against a template: literal segments equal, `{name}`
/// segments non-empty. A prefix (`exact` false) matches the path and every path below it; an
/// exact `path` matcher (`exact` true) matches the same number of segments only. Returns the
/// bound parameters (raw, not percent-decoded: an encoded value simply fails a binding).
pub fn match_template(pattern: &str, path: &str, exact: bool) -> Option<Vec<(String, String)>> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let pattern = if exact {
        pattern
    } else {
        pattern.trim_end_matches('/')
    };
    let pre: Vec<&str> = pattern.split('/').collect();
    let segs: Vec<&str> = path.split('/').collect();
    if segs.len() < pre.len() || (exact && segs.len() != pre.len()) {
        return None;
    }
    let mut params = Vec::new();
    for (p, s) in pre.iter().zip(segs.iter()) {
        if let Some(name) = p.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
            if s.is_empty() {
                return None;
            }
            params.push((name.to_string(), (*s).to_string()));
        } else if p != s {
            return None;
        }
    }
    Some(params)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        assert_eq!(
            match_template("/orgs/{o}/d", "/orgs/1/d/x?q=1", false),
            Some(vec![("o".into(), "1".into())])
        );
        assert_eq!(match_template("/orgs/{o}/d", "/orgs//d", false), None);
        assert_eq!(match_template("/orgs/{o}/d", "/orgs/1/e", false), None);
        assert_eq!(match_template("/orgs/{o}/d", "/orgs/1", false), None);
        assert!(template_params("/a/{x}{y}", "f").is_err());
        assert!(template_params("/a/{x}/{x}", "f").is_err());
        assert!(template_params("/a/x{y}", "f").is_err());
    }
}
