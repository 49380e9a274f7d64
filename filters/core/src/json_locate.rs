//! Policy parsing that names the field of every error, without a path-tracking deserializer.
//!
//! The policy is parsed with `serde_json` under `objects_only` (one monomorphisation of the
//! derived `Deserialize` code instead of one wrapped in a path tracker: bench/README.md,
//! "Size"). On an error, serde_json gives the line and column where it stopped; [`path_at`]
//! scans the policy text up to there and names the JSON path (`issuers[0].jwks_uri`) the parser
//! was in, so a bad policy is still refused at load with a message naming the field
//! (docs/checks.md).
//!
//! Where serde_json stops, per error kind (serde_json's `Deserializer`):
//! - unknown field / duplicate field: right after the key → the key is named;
//! - wrong type or value of a scalar: right after the value → its key or array index;
//! - wrong type where an object or array starts: before it, after the `:` → its key
//!   (in an array: the element not yet started, so the next index);
//! - missing field: right after the object's `}` → the object, plus the field from the message;
//! - an array for an object (`objects_only`): inside the array → the key before its `[`.

use serde::de::DeserializeOwned;

use crate::error::PolicyError;
use crate::objects_only::{ObjectsOnly, NOT_AN_OBJECT};

/// Parses `bytes` as `T`; an error's field is `prefix` joined with the path at the error.
/// Every struct must be written as a JSON object (`objects_only`).
pub fn parse<T: DeserializeOwned>(bytes: &[u8], prefix: &str) -> Result<T, PolicyError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = T::deserialize(ObjectsOnly(&mut de)).and_then(|t| de.end().map(|()| t));
    parsed.map_err(|e| {
        let message = e.to_string();
        let mut end = offset_of(bytes, e.line(), e.column());
        if message.starts_with(NOT_AN_OBJECT) {
            // serde_json stops inside the array (after its `[`, and its `]` if empty): name
            // the place before the `[`, its key.
            end = end.and_then(|end| bytes.get(..end)?.iter().rposition(|b| *b == b'['));
        }
        let mut path = match end {
            Some(end) => path_at(bytes, end),
            None => String::new(),
        };
        if let Some(field) = missing_field(&message) {
            push_key(&mut path, field);
        }
        PolicyError::new(join(prefix, &path), message)
    })
}

/// `prefix.path` (`path` may start with `[i]`), either part may be empty.
fn join(prefix: &str, path: &str) -> String {
    if prefix.is_empty() {
        path.to_string()
    } else if path.is_empty() {
        prefix.to_string()
    } else if path.starts_with('[') {
        format!("{prefix}{path}")
    } else {
        format!("{prefix}.{path}")
    }
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

/// serde's `missing field `x``: the field name.
fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

/// The byte offset of serde_json's (1-based line, bytes-consumed-on-that-line column); `None`
/// for an error without a position (line 0).
pub fn offset_of(text: &[u8], line: usize, column: usize) -> Option<usize> {
    if line == 0 {
        return None;
    }
    let mut start = 0;
    if line > 1 {
        let (i, _) = text
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(line - 2)?;
        start = i + 1;
    }
    Some(start.saturating_add(column).min(text.len()))
}

enum Frame {
    /// `key`: the last key read; `want_key`: after `{` or `,`, before the next key.
    Obj { key: Option<String>, want_key: bool },
    /// `started`: elements begun so far; `in_value`: after an element began, before `,`.
    Arr { started: usize, in_value: bool },
}

/// The JSON path (`a.b[2].c`, empty for the document itself) of the place reached after
/// reading `text[..end]`. Tolerates invalid JSON: it names where the scan is.
pub fn path_at(text: &[u8], end: usize) -> String {
    let text = text.get(..end).unwrap_or(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while let Some(&c) = text.get(i) {
        match c {
            b'{' => {
                begin_value(&mut stack);
                stack.push(Frame::Obj {
                    key: None,
                    want_key: true,
                });
                i += 1;
            }
            b'[' => {
                begin_value(&mut stack);
                stack.push(Frame::Arr {
                    started: 0,
                    in_value: false,
                });
                i += 1;
            }
            b'}' | b']' => {
                stack.pop();
                i += 1;
            }
            b',' => {
                match stack.last_mut() {
                    Some(Frame::Obj { want_key, .. }) => *want_key = true,
                    Some(Frame::Arr { in_value, .. }) => *in_value = false,
                    None => {}
                }
                i += 1;
            }
            b'"' => {
                let (s, next) = read_string(text, i + 1);
                match stack.last_mut() {
                    Some(Frame::Obj { key, want_key }) if *want_key => {
                        *key = Some(s);
                        *want_key = false;
                    }
                    _ => begin_value(&mut stack),
                }
                i = next;
            }
            b':' | b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            _ => {
                // A number or `true`/`false`/`null` (or garbage): up to the next delimiter.
                begin_value(&mut stack);
                while let Some(&b) = text.get(i) {
                    if matches!(
                        b,
                        b',' | b'}' | b']' | b':' | b'"' | b' ' | b'\t' | b'\n' | b'\r'
                    ) {
                        break;
                    }
                    i += 1;
                }
            }
        }
    }
    let mut path = String::new();
    let depth = stack.len();
    for (n, frame) in stack.iter().enumerate() {
        match frame {
            Frame::Obj { key, want_key } => {
                // The innermost object between a `,` and its next key is at no field yet.
                if *want_key && n + 1 == depth {
                    continue;
                }
                if let Some(k) = key {
                    push_key(&mut path, k);
                }
            }
            Frame::Arr { started, in_value } => {
                // Before an element begins (serde_json peeks at `{`/`[` before refusing its
                // type), the element meant is the next one.
                let index = if *in_value {
                    started.saturating_sub(1)
                } else {
                    *started
                };
                path.push_str(&format!("[{index}]"));
            }
        }
    }
    path
}

fn begin_value(stack: &mut [Frame]) {
    if let Some(Frame::Arr { started, in_value }) = stack.last_mut() {
        if !*in_value {
            *started += 1;
            *in_value = true;
        }
    }
}

/// Decodes the JSON string starting at `text[i]` (just after its opening quote) up to its
/// closing quote or the end; returns it and the index after the closing quote.
fn read_string(text: &[u8], mut i: usize) -> (String, usize) {
    let mut out: Vec<u8> = Vec::new();
    while let Some(&b) = text.get(i) {
        i += 1;
        match b {
            b'"' => break,
            b'\\' => {
                let Some(&e) = text.get(i) else { break };
                i += 1;
                match e {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'b' => out.push(0x08),
                    b'f' => out.push(0x0c),
                    b'u' => {
                        let hex = text.get(i..i + 4).unwrap_or_default();
                        let code = std::str::from_utf8(hex)
                            .ok()
                            .and_then(|h| u32::from_str_radix(h, 16).ok());
                        let ch = code.and_then(char::from_u32).unwrap_or('\u{fffd}');
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        i += hex.len();
                    }
                    other => out.push(other),
                }
            }
            other => out.push(other),
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), i)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// The path at the end of `before` (the text up to a marker `|`), scanning the whole text.
    fn at(doc: &str) -> String {
        let end = doc.find('|').unwrap();
        let text = doc.replacen('|', "", 1);
        path_at(text.as_bytes(), end)
    }

    #[test]
    fn scanner_names_the_place() {
        assert_eq!(at(r#"{"a": 1|}"#), "a");
        assert_eq!(at(r#"{"a": {"b": "x"|}}"#), "a.b");
        assert_eq!(at(r#"{"a": {"b": "x"}|}"#), "a");
        assert_eq!(at(r#"{"a": [1, 2, 3|]}"#), "a[2]");
        assert_eq!(at(r#"{"a": [1, |{}]}"#), "a[1]");
        assert_eq!(at(r#"{"a": [|{}]}"#), "a[0]");
        assert_eq!(
            at(r#"{"a": [{"b": 1}, {"c": [true, null|]}]}"#),
            "a[1].c[1]"
        );
        assert_eq!(at(r#"{"a": 1, |"b": 2}"#), "");
        assert_eq!(at(r#"{"a": 1}|"#), "");
        // Strings holding delimiters, quotes and escapes do not move the scan.
        assert_eq!(
            at(r#"{"a": "{[,:\"}]", "b\"}": ["x\\", "]\u0022"|]}"#),
            "b\"}[1]"
        );
        assert_eq!(at(r#"{"k\u00e9y\n": 1|}"#), "k\u{e9}y\n");
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[allow(dead_code)]
        name: String,
        #[serde(default)]
        #[allow(dead_code)]
        items: Vec<Item>,
        #[serde(default)]
        #[allow(dead_code)]
        inner: Option<Inner>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Item {
        #[allow(dead_code)]
        id: u64,
        #[serde(default)]
        #[allow(dead_code)]
        tags: Vec<Kind>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        deep: Item,
    }
    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        One,
    }

    fn field(doc: &str) -> String {
        parse::<Doc>(doc.as_bytes(), "").unwrap_err().field
    }

    #[test]
    fn errors_name_the_field() {
        for (doc, want) in [
            (r#"{"name": "n", "extra": 1}"#, "extra"),
            (r#"{"name": 5}"#, "name"),
            (r#"{"items": []}"#, "name"),
            (r#"{"name": "n", "items": [{"id": 1}, {"id": -1}]}"#, "items[1].id"),
            (r#"{"name": "n", "items": [{"id": 1}, {"id": 2, "x": 0}]}"#, "items[1].x"),
            (r#"{"name": "n", "items": [{"id": 1}, {}]}"#, "items[1].id"),
            (r#"{"name": "n", "items": [{"id": 1}, "x"]}"#, "items[1]"),
            (r#"{"name": "n", "items": [{"id": 1}, []]}"#, "items[1]"),
            (r#"{"name": "n", "items": [{"id": 1, "tags": ["one", "two"]}]}"#, "items[0].tags[1]"),
            (r#"{"name": "n", "items": {}}"#, "items"),
            (r#"{"name": "n", "inner": {"deep": {"id": "7"}}}"#, "inner.deep.id"),
            (r#"{"name": "n", "inner": {"deep": {"tags": []}}}"#, "inner.deep.id"),
            (r#"{"name": "n", "inner": {"deep": {"id": 1}, "deep": {"id": 1}}}"#, "inner.deep"),
            // Strings with braces, brackets, quotes and escapes before the fault.
            (
                "{\"name\": \"}]{[\\\",:\\\\\", \"inner\": {\"deep\": {\"id\": 1, \"tags\": [\"on\\u0065\", \"tw\\\"o\"]}}}",
                "inner.deep.tags[1]",
            ),
            // Over several lines (serde_json's line and column).
            ("{\n  \"name\": \"n\",\n  \"items\": [\n    {\"id\": 1},\n    {\"id\": true}\n  ]\n}", "items[1].id"),
            ("{\n  \"name\": \"n\",\n  \"items\": [\n    {\"id\": 1}\n  ]\n}\n", ""),
        ] {
            let got = parse::<Doc>(doc.as_bytes(), "");
            match got {
                Ok(_) if want.is_empty() => {}
                Ok(_) => panic!("{doc}: accepted"),
                Err(e) => assert_eq!(e.field, want, "{doc}: {e}"),
            }
        }
        // A struct written as an array (`objects_only`): the key before its `[`.
        for (doc, want) in [
            (r#"["n"]"#, ""),
            (r#"{"name": "n", "inner": [{"id": 1}]}"#, "inner"),
            (r#"{"name": "n", "inner": [ ]}"#, "inner"),
            (
                r#"{"name": "n", "inner": {"deep": [1, ["one"]]}}"#,
                "inner.deep",
            ),
            (r#"{"name": "n", "items": [{"id": 1}, [2]]}"#, "items[1]"),
            (
                "{\"name\": \"n\",\n \"items\": [\n  [\n   3\n  ]\n ]\n}",
                "items[0]",
            ),
        ] {
            let e = parse::<Doc>(doc.as_bytes(), "").unwrap_err();
            assert_eq!(e.field, want, "{doc}: {e}");
            assert!(e.message.starts_with(NOT_AN_OBJECT), "{doc}: {e}");
        }
        assert_eq!(field("not json"), "");
        assert!(parse::<Doc>(br#"{"name": "n"}"#, "").is_ok());
        // A prefix for a section parsed alone.
        let e = parse::<Doc>(br#"{"name": "n", "zz": 0}"#, "fhir").unwrap_err();
        assert_eq!(e.field, "fhir.zz");
        let e = parse::<Doc>(br#"{}"#, "fhir").unwrap_err();
        assert_eq!(e.field, "fhir.name");
        assert!(e.message.contains("missing field `name`"), "{e}");
    }
}
