//! Query strings and `application/x-www-form-urlencoded` bodies (FHIR R4 §3.1.1.0 search):
//! `name[:modifier]=value[,value]`, repeated names AND together, commas OR (`\,` escapes).

/// One decoded search parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: String,
}

impl Param {
    pub fn new(name: &str, value: &str) -> Param {
        Param {
            name: name.to_string(),
            value: value.to_string(),
        }
    }

    /// Name without modifier: `subject:Patient` -> `subject`.
    pub fn base_name(&self) -> &str {
        self.name.split(':').next().unwrap_or("")
    }

    /// Modifier after the first `:`, if any.
    pub fn modifier(&self) -> Option<&str> {
        self.name.split_once(':').map(|(_, m)| m)
    }

    /// Chained parameter (`subject.name`, `subject:Patient.name`; FHIR R4 §3.1.1.4.9).
    pub fn is_chained(&self) -> bool {
        self.name.contains('.')
    }

    /// Reverse chaining (`_has:Observation:patient:code`; FHIR R4 §3.1.1.4.10).
    pub fn is_has(&self) -> bool {
        self.base_name() == "_has"
    }

    /// The OR-list of values (`a,b`), honouring `\,` as a literal comma.
    pub fn or_values(&self) -> Vec<String> {
        split_or(&self.value)
    }
}

pub fn split_or(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&',') => {
                cur.push(',');
                chars.next();
            }
            ',' => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes (and `+` -> space). `None` on a broken escape or non-UTF-8 result.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let h = hex(*bytes.get(i + 1)?)?;
                let l = hex(*bytes.get(i + 2)?)?;
                out.push(h * 16 + l);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A request's query or form body. Empty segments are skipped; a name without `=` has an
/// empty value. `None` when an escape is broken or a name is empty.
pub fn parse(q: &str) -> Option<Vec<Param>> {
    let mut out = Vec::new();
    for seg in q.split('&').filter(|s| !s.is_empty()) {
        let (n, v) = seg.split_once('=').unwrap_or((seg, ""));
        let name = percent_decode(n)?;
        if name.is_empty() {
            return None;
        }
        out.push(Param {
            name,
            value: percent_decode(v)?,
        });
    }
    Some(out)
}

/// `_include` / `_revinclude` values: `Type:param[:Target]` (FHIR R4 §3.1.1.5.4).
pub fn include_parts(v: &str) -> Option<(&str, &str, Option<&str>)> {
    let mut it = v.split(':');
    let src = it.next()?;
    let param = it.next()?;
    let target = it.next();
    if it.next().is_some() || src.is_empty() || param.is_empty() {
        return None;
    }
    Some((src, param, target))
}

/// A scope's `?param=value&...` suffix: every segment must be `name=value`, both non-empty.
pub fn parse_strict(q: &str) -> Option<Vec<Param>> {
    let mut out = Vec::new();
    for seg in q.split('&') {
        let (n, v) = seg.split_once('=')?;
        if n.is_empty() || v.is_empty() {
            return None;
        }
        out.push(Param {
            name: percent_decode(n)?,
            value: percent_decode(v)?,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn or_lists_and_escapes() {
        assert_eq!(split_or("a,b"), vec!["a", "b"]);
        assert_eq!(split_or("a\\,b"), vec!["a,b"]);
        assert_eq!(split_or(""), vec![""]);
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%2Cb+c").as_deref(), Some("a,b c"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(parse("a=1&&b").map(|v| v.len()), Some(2));
        assert_eq!(parse("=1"), None);
        assert_eq!(parse_strict("a=1&"), None);
    }
}
