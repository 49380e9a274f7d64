//! The explainer page's engine: `fapi-guard-core` compiled to `wasm32-unknown-unknown` and
//! exported with `wasm-bindgen` to `web/index.html`. The same chain as `fapi-guard explain`
//! (`fapi_guard_core::explain`); nothing here touches the network. Every export returns a
//! JSON string (`{"ok": true, ...}` or `{"ok": false, "error": "..."}`) and never panics on
//! bad input: size limits first, then the filters' own parsers.

use fapi_guard_core::describe::{self, Target};
use fapi_guard_core::explain::{self, Options, Request, MAX_INPUT_BYTES};
use fapi_guard_core::policy::{Policy, PolicyDoc};
use serde_json::{json, Value};
use wasm_bindgen::prelude::wasm_bindgen;

fn error(msg: impl Into<String>) -> String {
    json!({"ok": false, "error": msg.into()}).to_string()
}

fn too_big(name: &str, s: &str) -> Option<String> {
    (s.len() > MAX_INPUT_BYTES).then(|| {
        format!(
            "{name}: {} bytes is more than the {MAX_INPUT_BYTES} this page reads; refused unread",
            s.len()
        )
    })
}

/// A parsed request line: `GET /r4/Patient/1` or `GET https://host/r4/Patient/1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLine {
    pub method: String,
    pub scheme: Option<String>,
    pub authority: Option<String>,
    pub path: String,
}

pub fn parse_request_line(line: &str) -> Result<RequestLine, String> {
    let line = line.trim();
    let (method, target) = line
        .split_once(char::is_whitespace)
        .ok_or("request: write it as `METHOD /path?query` (e.g. `GET /r4/Observation/123`)")?;
    let target = target.split_whitespace().next().unwrap_or("");
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "request: `{}` is not an HTTP method (GET, POST, PUT, PATCH, DELETE)",
            method.chars().take(20).collect::<String>()
        ));
    }
    if let Some((scheme, rest)) = target.split_once("://") {
        let (authority, path) = match rest.find('/').and_then(|i| rest.split_at_checked(i)) {
            Some(parts) => parts,
            None => (rest, "/"),
        };
        if !(scheme == "http" || scheme == "https") || authority.is_empty() {
            return Err("request: an absolute URL must be http(s)://host/path".into());
        }
        return Ok(RequestLine {
            method: method.into(),
            scheme: Some(scheme.into()),
            authority: Some(authority.into()),
            path: path.into(),
        });
    }
    if !target.starts_with('/') {
        return Err("request: the path must start with `/`".into());
    }
    Ok(RequestLine {
        method: method.into(),
        scheme: None,
        authority: None,
        path: target.into(),
    })
}

/// `Name: value` lines (blank lines ignored).
pub fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (k, v) = line.split_once(':').ok_or_else(|| {
            format!(
                "headers, line {}: write `Name: value` (got `{}`…)",
                i + 1,
                line.chars().take(24).collect::<String>()
            )
        })?;
        let k = k.trim();
        if k.is_empty()
            || !k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "headers, line {}: `{k}` is not a header name",
                i + 1
            ));
        }
        out.push((k.to_string(), v.trim().to_string()));
    }
    Ok(out)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The request as a `curl` command line.
pub fn curl(method: &str, url: &str, headers: &[(String, String)]) -> String {
    let mut s = String::from("curl -i");
    if method != "GET" {
        s.push_str(&format!(" -X {method}"));
    }
    for (k, v) in headers {
        s.push_str(&format!(" \\\n  -H {}", shell_quote(&format!("{k}: {v}"))));
    }
    s.push_str(&format!(" \\\n  {}", shell_quote(url)));
    s
}

/// The explain trace as JSON, plus `curl`. `now` in seconds since the epoch.
#[wasm_bindgen]
#[allow(clippy::too_many_arguments)]
pub fn explain_request(
    policy: &str,
    request: &str,
    headers: &str,
    jwks: &str,
    response: &str,
    response_status: u32,
    now: f64,
    authority: &str,
    filters: &str,
    show_personal: bool,
) -> String {
    for (name, v) in [
        ("policy", policy),
        ("headers", headers),
        ("JWKS", jwks),
        ("response body", response),
        ("request", request),
    ] {
        if let Some(e) = too_big(name, v) {
            return error(e);
        }
    }
    if policy.trim().is_empty() {
        return error("policy: paste the policy JSON first");
    }
    let line = match parse_request_line(request) {
        Ok(l) => l,
        Err(e) => return error(e),
    };
    let hdrs = match parse_headers(headers) {
        Ok(h) => h,
        Err(e) => return error(e),
    };
    if !jwks.trim().is_empty() && serde_json::from_str::<Value>(jwks).is_err() {
        return error("JWKS: not JSON (paste the issuer's JWKS document, {\"keys\": [...]})");
    }
    let scheme = line.scheme.clone().unwrap_or_else(|| "http".into());
    let authority = line.authority.clone().unwrap_or_else(|| {
        if authority.trim().is_empty() {
            "localhost".into()
        } else {
            authority.trim().into()
        }
    });
    let filters: Vec<String> = filters
        .split(',')
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect();
    let req = Request {
        method: &line.method,
        path: &line.path,
        scheme: &scheme,
        authority: &authority,
        headers: &hdrs,
        body: None,
    };
    let opts = Options {
        filters,
        jwks: (!jwks.trim().is_empty()).then_some(jwks.as_bytes()),
        now: if now.is_finite() { now as i64 } else { 0 },
        response: (!response.trim().is_empty()).then_some((response_status, response.as_bytes())),
        show_personal,
    };
    match explain::explain_json(policy.as_bytes(), &req, &opts) {
        Ok(trace) => {
            let url = format!("{scheme}://{authority}{}", line.path);
            json!({"ok": true, "trace": trace, "curl": curl(&line.method, &url, &hdrs)}).to_string()
        }
        Err(e) => error(format!("refused by the filters' loader: {e}")),
    }
}

/// The policy check of `fapi-guard check`: loader message, target lints, the policy in words.
#[wasm_bindgen]
pub fn check_policy(policy: &str, target: &str) -> String {
    if let Some(e) = too_big("policy", policy) {
        return error(e);
    }
    let target = Target::parse(target).unwrap_or(Target::Envoy);
    match Policy::from_json(policy.as_bytes()) {
        Err(e) => error(format!("refused by the filters' loader: {e}")),
        Ok(p) => {
            let doc: Option<PolicyDoc> = serde_json::from_str(policy).ok();
            json!({
                "ok": true,
                "api": p.api_name,
                "lints": describe::lint(&p, target),
                "description": describe::describe(&p, doc.as_ref()),
            })
            .to_string()
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        let l =
            parse_request_line("GET https://api.example/r4/Patient/1?x=1").unwrap_or_else(|e| {
                RequestLine {
                    method: e,
                    scheme: None,
                    authority: None,
                    path: String::new(),
                }
            });
        assert_eq!(l.authority.as_deref(), Some("api.example"));
        assert_eq!(l.path, "/r4/Patient/1?x=1");
        assert!(parse_request_line("get /x").is_err());
        assert!(parse_request_line("GET").is_err());
        assert!(parse_request_line("GET x").is_err());
    }

    #[test]
    fn bad_input_is_a_message() {
        let v: Value = serde_json::from_str(&explain_request(
            "{", "GET /x", "", "", "", 200, 0.0, "", "", false,
        ))
        .unwrap_or_default();
        assert_eq!(v["ok"], false);
        assert!(v["error"].as_str().unwrap_or("").contains("loader"));
        let huge = "x".repeat(MAX_INPUT_BYTES + 1);
        let v: Value = serde_json::from_str(&explain_request(
            &huge, "GET /x", "", "", "", 200, 0.0, "", "", false,
        ))
        .unwrap_or_default();
        assert!(v["error"].as_str().unwrap_or("").contains("refused unread"));
        let v: Value = serde_json::from_str(&explain_request(
            "{}", "GET /x", "no colon", "", "", 200, 0.0, "", "", false,
        ))
        .unwrap_or_default();
        assert!(v["error"]
            .as_str()
            .unwrap_or("")
            .contains("headers, line 1"));
    }

    #[test]
    fn curl_quotes() {
        let c = curl("GET", "http://h/x", &[("DPoP".into(), "a'b".into())]);
        assert!(c.contains("-H 'DPoP: a'\\''b'"), "{c}");
    }
}
