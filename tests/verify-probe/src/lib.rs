//! Test-only filter (never deployed): answers one signature check per request, so
//! `tests/e2e/test_verify_paths.py` can run the same RFC and Wycheproof vectors through the
//! host path (Envoy's `verify_signature`) and the pure-Rust path in real Envoy.
//!
//! Request: header `x-probe` = base64url(JSON `{"alg", "jwk", "msg" (hex), "sig" (hex),
//! "path": "host"|"software"}`).
//! Answer: 200 `valid`, 401 `<VerifyError>`, 400 for a request it cannot read; the header
//! `x-verifier` says which verifier the filter chose.
//!
//! Batch (keeps the e2e run short): a POST body JSON `{"path", "groups": [{"alg", "jwk",
//! "tests": [[msg hex, sig hex], ...]}]}` is answered 200 with one line per test, in order:
//! `<valid|invalid> <host|software>`.

use fapi_guard_core::b64;
use fapi_guard_core::jose::host_args::VERIFY_SIGNATURE_FUNCTION;
use fapi_guard_core::jose::{Alg, Jwk, SignatureVerifier};
use fapi_guard_host::verify::HostVerifier;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(ProbeRoot) });
}}

/// Runs the filters' start-time verifier choice (`HostVerifier::at_start`) on the function
/// named by the plugin configuration `{"start_probe": name}` (default `verify_signature`),
/// so the e2e suite can see the start line of a host without the function in real Envoy.
struct ProbeRoot;

impl Context for ProbeRoot {}

impl RootContext for ProbeRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self
            .get_plugin_configuration()
            .and_then(|c| serde_json::from_slice::<serde_json::Value>(&c).ok());
        let function = config
            .as_ref()
            .and_then(|c| c.get("start_probe"))
            .and_then(|v| v.as_str())
            .unwrap_or(VERIFY_SIGNATURE_FUNCTION);
        let _ = HostVerifier::at_start(function);
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Probe;

impl Context for Probe {}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Probe {
    fn answer(&self, status: u32, verifier: &str, body: &str) {
        self.send_http_response(
            status,
            vec![("x-verifier", verifier)],
            Some(body.as_bytes()),
        );
    }

    /// One verification: `(verified, verifier used)`.
    fn verify_one(
        path_host: bool,
        alg: Alg,
        jwk: &Jwk,
        msg: &[u8],
        sig: &[u8],
    ) -> (bool, &'static str) {
        let verifier = HostVerifier::new(path_host);
        let used = if verifier.uses_host() && !alg.is_rsa_pss() && alg != Alg::EdDSA {
            "host"
        } else {
            "software"
        };
        (verifier.verify(alg, &jwk.key, msg, sig).is_ok(), used)
    }

    fn batch(&self, body: &[u8]) {
        let Ok(req) = serde_json::from_slice::<serde_json::Value>(body) else {
            return self.answer(400, "-", "not json");
        };
        let host = req.get("path").and_then(|v| v.as_str()) == Some("host");
        let mut out = String::new();
        for g in req
            .get("groups")
            .and_then(|v| v.as_array())
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let alg = g.get("alg").and_then(|v| v.as_str()).and_then(Alg::parse);
            let jwk = g.get("jwk").and_then(|j| Jwk::from_json(j).ok());
            let (Some(alg), Some(jwk)) = (alg, jwk) else {
                return self.answer(400, "-", "bad alg/jwk");
            };
            for t in g
                .get("tests")
                .and_then(|v| v.as_array())
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let field = |i: usize| t.get(i).and_then(|v| v.as_str()).and_then(hex);
                let (Some(msg), Some(sig)) = (field(0), field(1)) else {
                    return self.answer(400, "-", "bad msg/sig");
                };
                let (ok, used) = Self::verify_one(host, alg, &jwk, &msg, &sig);
                out.push_str(if ok { "valid " } else { "invalid " });
                out.push_str(used);
                out.push('\n');
            }
        }
        self.answer(200, if host { "host" } else { "software" }, &out);
    }

    fn check(&self, body: &[u8]) {
        let Ok(req) = serde_json::from_slice::<serde_json::Value>(body) else {
            return self.answer(400, "-", "not json");
        };
        let field = |n: &str| {
            req.get(n)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let (Some(alg), Some(msg), Some(sig)) = (
            Alg::parse(&field("alg")),
            hex(&field("msg")),
            hex(&field("sig")),
        ) else {
            return self.answer(400, "-", "bad alg/msg/sig");
        };
        let Ok(jwk) = Jwk::from_json(req.get("jwk").unwrap_or(&serde_json::Value::Null)) else {
            return self.answer(400, "-", "bad jwk");
        };
        let verifier = HostVerifier::new(field("path") == "host");
        let used = if verifier.uses_host() && !alg.is_rsa_pss() && alg != Alg::EdDSA {
            "host"
        } else {
            "software"
        };
        match verifier.verify(alg, &jwk.key, &msg, &sig) {
            Ok(()) => self.answer(200, used, "valid"),
            Err(e) => self.answer(401, used, &format!("{e:?}")),
        }
    }
}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        if !end_of_stream && self.get_http_request_header(":method").as_deref() == Some("POST") {
            // Batch: answered from the whole body (`on_http_request_body`).
            return Action::Continue;
        }
        match self
            .get_http_request_header("x-probe")
            .and_then(|h| b64::decode(&h))
        {
            Some(body) => self.check(&body),
            None => self.answer(400, "-", "no x-probe header"),
        }
        Action::Pause
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, size).unwrap_or_default();
        self.batch(&body);
        Action::Pause
    }
}
