//! Test oracle for the differential tests (`tests/test_differential.py`): reads JSON lines
//! on stdin and answers one JSON line each, through the core's public entry points only.
//!   {"op": "verify", "jwks": {...}, "token": "h.p.s"} -> {"ok": bool, "error": "..."}
//!   {"op": "htu", "htu": "..."}                        -> {"normal": "scheme://host[:port]/path" | null}
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{BufRead, Write};

use fapi_guard_core::dpop::htu;
use fapi_guard_core::jose::{CompactJws, Jwks, RawJws, SignatureVerifier, SoftwareVerifier};
use serde_json::{json, Value};

fn verify(jwks: &Value, token: &str) -> Value {
    let Ok(jwks) = Jwks::parse(jwks.to_string().as_bytes()) else {
        return json!({"ok": false, "error": "jwks"});
    };
    // The payload of a JWT must be a JSON object (CompactJws); RawJws keeps any payload.
    let (alg, kid, input, sig) = match CompactJws::parse(token) {
        Ok(j) => (
            j.alg,
            j.header_str("kid").map(str::to_string),
            j.signing_input,
            j.signature,
        ),
        Err(e) => match RawJws::parse(token) {
            Ok(_) => return json!({"ok": false, "error": "payload_not_object"}),
            Err(_) => return json!({"ok": false, "error": format!("parse:{e:?}")}),
        },
    };
    let Some(key) = jwks.select(kid.as_deref(), alg) else {
        return json!({"ok": false, "error": "no_key"});
    };
    match SoftwareVerifier.verify(alg, &key.key, input.as_bytes(), &sig) {
        Ok(()) => json!({"ok": true}),
        Err(e) => json!({"ok": false, "error": format!("verify:{e:?}")}),
    }
}

fn main() {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line.expect("stdin");
        let req: Value = serde_json::from_str(&line).expect("json line");
        let s = |k: &str| {
            req.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let answer = match s("op").as_str() {
            "verify" => verify(&req["jwks"], &s("token")),
            "htu" => json!({"normal": htu::parse_htu(&s("htu")).map(|n| n.to_string())}),
            _ => json!({"error": "op"}),
        };
        writeln!(out, "{answer}").expect("stdout");
        out.flush().expect("flush");
    }
}
