//! JWS compact serialisation (RFC 7515 §7.1), parsed strictly before any key is looked at.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::alg::Alg;
use crate::b64;

/// Why a compact JWS was refused before any key was looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwsError {
    /// Not three base64url parts, bad base64url, or header/payload not a JSON object.
    Malformed,
    /// `alg` missing, `none`, HMAC, or unknown.
    BadAlg,
    /// `crit` present with a member the guard does not implement (RFC 7515 §4.1.11).
    UnsupportedCrit,
}

/// A parsed, not yet verified, compact JWS.
#[derive(Debug, Clone)]
pub struct CompactJws<'a> {
    /// `BASE64URL(header) || '.' || BASE64URL(payload)`: the bytes the signature covers.
    pub signing_input: &'a str,
    pub alg: Alg,
    /// The protected header as parsed JSON (object).
    pub header: serde_json::Map<String, serde_json::Value>,
    /// The payload as parsed JSON (object).
    pub payload: serde_json::Map<String, serde_json::Value>,
    pub signature: Vec<u8>,
}

impl<'a> CompactJws<'a> {
    /// Parses `h.p.s`. Refuses `none`/HMAC/unknown `alg` and unknown `crit`.
    pub fn parse(compact: &'a str) -> Result<CompactJws<'a>, JwsError> {
        let raw = RawJws::parse(compact)?;
        // RFC 7519 §7.2 step 10: a JWT's payload is a JSON object. Duplicate claim names
        // are refused (RFC 7519 §4 allows rejecting them; RFC 8725 §3.x plays it safe).
        let payload = parse_strict_object(&raw.payload).ok_or(JwsError::Malformed)?;
        Ok(CompactJws {
            signing_input: raw.signing_input,
            alg: raw.alg,
            header: raw.header,
            payload,
            signature: raw.signature,
        })
    }
    /// Header member as a string, if it is one.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(|v| v.as_str())
    }
}

/// A compact JWS whose payload is kept as raw bytes (not necessarily JSON). Same header
/// rules as [`CompactJws`]; used where the payload is not a JWT (and by the vector tests).
#[derive(Debug, Clone)]
pub struct RawJws<'a> {
    /// `BASE64URL(header) || '.' || BASE64URL(payload)`: the bytes the signature covers.
    pub signing_input: &'a str,
    pub alg: Alg,
    /// The protected header as parsed JSON (object).
    pub header: Map<String, Value>,
    /// The decoded payload bytes.
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

impl<'a> RawJws<'a> {
    /// Parses `h.p.s` with the header checks of [`CompactJws::parse`].
    pub fn parse(compact: &'a str) -> Result<RawJws<'a>, JwsError> {
        // RFC 7515 §7.1 / §5.2 step 1: exactly three parts (a JWE has five; JSON
        // serialisation has none).
        let mut parts = compact.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwsError::Malformed);
        };
        let signing_input = compact
            .get(..h.len() + 1 + p.len())
            .ok_or(JwsError::Malformed)?;

        // RFC 7515 §5.2 steps 2–4: strict base64url, UTF-8 JSON object, no duplicate names.
        let header_bytes = b64::decode(h).ok_or(JwsError::Malformed)?;
        let header = parse_strict_object(&header_bytes).ok_or(JwsError::Malformed)?;

        // RFC 8725 §3.1–3.2: only asymmetric algs the guard implements; `none`/HS* have no `Alg`.
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(Alg::parse)
            .ok_or(JwsError::BadAlg)?;

        // RFC 7515 §4.1.11: `crit` must be a non-empty array of names; the guard implements no
        // extension, so any listed name is one it does not understand -> refuse.
        if let Some(crit) = header.get("crit") {
            let names = crit.as_array().ok_or(JwsError::Malformed)?;
            if names.is_empty() || names.iter().any(|n| !n.is_string()) {
                return Err(JwsError::Malformed);
            }
            return Err(JwsError::UnsupportedCrit);
        }
        // RFC 7797 §3: an unencoded payload (`b64: false`) is an extension the guard does not
        // implement (and it must come with `crit`, refused above).
        if let Some(b64_member) = header.get("b64") {
            if b64_member != &Value::Bool(true) {
                return Err(JwsError::UnsupportedCrit);
            }
        }

        let payload = b64::decode(p).ok_or(JwsError::Malformed)?;
        let signature = b64::decode(s).ok_or(JwsError::Malformed)?;
        // No supported alg has an empty signature (that is `none`'s shape).
        if signature.is_empty() {
            return Err(JwsError::Malformed);
        }
        Ok(RawJws {
            signing_input,
            alg,
            header,
            payload,
            signature,
        })
    }
}

/// Parses a JSON object, refusing duplicate member names at any depth
/// (RFC 7515 §5.2 step 4 / RFC 7519 §4; serde_json alone keeps the last duplicate).
pub fn parse_strict_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<StrictValue>(bytes).ok()?.0 {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// Parses any JSON value, refusing duplicate member names at any depth (RFC 8259 §4 leaves
/// their meaning to the reader; RFC 7493 §2.3 I-JSON forbids them). Shared by the JOSE layer
/// and the FHIR request-body check (docs/checks.md).
pub fn parse_strict_value(bytes: &[u8]) -> Option<Value> {
    serde_json::from_slice::<StrictValue>(bytes)
        .ok()
        .map(|v| v.0)
}

/// A `serde_json::Value` whose deserialisation fails on duplicate object member names.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value without duplicate member names")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom("duplicate member name"));
            }
            let StrictValue(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn jws(header: &str, payload: &str, sig: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            b64::encode(header.as_bytes()),
            b64::encode(payload.as_bytes()),
            b64::encode(sig)
        )
    }

    #[test]
    fn header_cases() {
        let cases: &[(&str, &str, &str, Result<Alg, JwsError>)] = &[
            ("es256", r#"{"alg":"ES256"}"#, r#"{"a":1}"#, Ok(Alg::ES256)),
            (
                "ed25519 spelling",
                r#"{"alg":"Ed25519"}"#,
                "{}",
                Ok(Alg::EdDSA),
            ),
            ("none", r#"{"alg":"none"}"#, "{}", Err(JwsError::BadAlg)),
            ("NONE", r#"{"alg":"NONE"}"#, "{}", Err(JwsError::BadAlg)),
            ("hs256", r#"{"alg":"HS256"}"#, "{}", Err(JwsError::BadAlg)),
            ("ps384", r#"{"alg":"PS384"}"#, "{}", Ok(Alg::PS384)),
            ("es512", r#"{"alg":"ES512"}"#, "{}", Ok(Alg::ES512)),
            ("ed448", r#"{"alg":"Ed448"}"#, "{}", Err(JwsError::BadAlg)),
            ("alg missing", r#"{"kid":"a"}"#, "{}", Err(JwsError::BadAlg)),
            (
                "alg not string",
                r#"{"alg":7}"#,
                "{}",
                Err(JwsError::BadAlg),
            ),
            (
                "header array",
                r#"["ES256"]"#,
                "{}",
                Err(JwsError::Malformed),
            ),
            ("header not json", "ES256", "{}", Err(JwsError::Malformed)),
            (
                "dup alg",
                r#"{"alg":"none","alg":"ES256"}"#,
                "{}",
                Err(JwsError::Malformed),
            ),
            (
                "dup nested jwk member",
                r#"{"alg":"ES256","jwk":{"x":"a","x":"b"}}"#,
                "{}",
                Err(JwsError::Malformed),
            ),
            (
                "dup payload claim",
                r#"{"alg":"ES256"}"#,
                r#"{"sub":"a","sub":"b"}"#,
                Err(JwsError::Malformed),
            ),
            (
                "crit exp",
                r#"{"alg":"ES256","crit":["exp"],"exp":1}"#,
                "{}",
                Err(JwsError::UnsupportedCrit),
            ),
            (
                "crit empty",
                r#"{"alg":"ES256","crit":[]}"#,
                "{}",
                Err(JwsError::Malformed),
            ),
            (
                "crit string",
                r#"{"alg":"ES256","crit":"exp"}"#,
                "{}",
                Err(JwsError::Malformed),
            ),
            (
                "crit number member",
                r#"{"alg":"ES256","crit":[1]}"#,
                "{}",
                Err(JwsError::Malformed),
            ),
            (
                "b64 false",
                r#"{"alg":"ES256","b64":false}"#,
                "{}",
                Err(JwsError::UnsupportedCrit),
            ),
            (
                "payload array",
                r#"{"alg":"ES256"}"#,
                "[1]",
                Err(JwsError::Malformed),
            ),
            (
                "payload not json",
                r#"{"alg":"ES256"}"#,
                "foo",
                Err(JwsError::Malformed),
            ),
        ];
        for (name, h, p, want) in cases {
            let s = jws(h, p, &[1, 2, 3]);
            let got = CompactJws::parse(&s).map(|j| j.alg);
            assert_eq!(&got, want, "case {name}");
        }
    }

    #[test]
    fn shape_cases() {
        let good = jws(r#"{"alg":"ES256"}"#, "{}", &[1; 64]);
        let parsed = CompactJws::parse(&good).unwrap();
        assert_eq!(parsed.signing_input, good.rsplit_once('.').unwrap().0);
        assert_eq!(parsed.signature, vec![1; 64]);
        let cases: &[(&str, String)] = &[
            ("two parts", good.rsplit_once('.').unwrap().0.to_owned()),
            ("four parts", format!("{good}.")),
            ("five parts (JWE)", format!("{good}.a.b")),
            ("empty", String::new()),
            (
                "empty signature",
                format!("{}.", good.rsplit_once('.').unwrap().0),
            ),
            ("padded signature", format!("{good}=")),
            ("space", format!(" {good}")),
            (
                "json serialisation",
                r#"{"payload":"e30","signatures":[]}"#.to_owned(),
            ),
        ];
        for (name, s) in cases {
            assert_eq!(
                CompactJws::parse(s).map(|j| j.alg),
                Err(JwsError::Malformed),
                "case {name}"
            );
        }
    }

    #[test]
    fn raw_payload_keeps_bytes() {
        let s = jws(r#"{"alg":"RS256"}"#, "foo", &[9]);
        let raw = RawJws::parse(&s).unwrap();
        assert_eq!(raw.payload, b"foo");
        assert_eq!(raw.alg, Alg::RS256);
    }
}
