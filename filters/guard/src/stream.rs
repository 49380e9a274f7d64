//! One stream's HTTP context: each proxy-wasm callback is a call of the stream's
//! `engine::Pipeline`, and its `Output` becomes host calls (header edits, a local reply, a JWKS
//! fetch, a stored read, pause or continue). Nothing is decided here.

use std::rc::Rc;
use std::time::Duration;

use fapi_guard_core::engine::{Action as Next, Output, Pipeline, StoredAnswer, StoredRead};
use fapi_guard_host::stats::FilterStats;
use fapi_guard_host::{clock, jwks, reply, stages};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};

use crate::host_env::{HostEnv, HostExchange, Shared};

/// The filter-state property holding the audit record.
const AUDIT_PROPERTY: &str = "fapi_guard.audit";

/// How long the stored read before a write may take; no answer in time refuses the write.
const STORED_READ_TIMEOUT: Duration = Duration::from_secs(5);

pub struct GuardStream {
    shared: Rc<Shared>,
    pipeline: Pipeline,
    /// The request waits for this JWKS fetch (call token, issuer index).
    keys_call: Option<(u32, usize)>,
    /// The request waits for this stored read (call token).
    read_call: Option<u32>,
    /// The request waits for this replay-store claim (call token).
    claim_call: Option<u32>,
}

/// The most of a replay-store answer read (a txn answer is a few hundred bytes).
const MAX_STORE_ANSWER: usize = 4096;

/// Where an output is acted on: in the callback of the part it is about (its return value
/// lets the part go), or after a callout answered (the paused request is resumed).
#[derive(Clone, Copy, PartialEq, Eq)]
enum In {
    Callback,
    CallAnswer,
}

impl GuardStream {
    pub fn new(shared: Rc<Shared>) -> GuardStream {
        GuardStream {
            shared,
            pipeline: Pipeline::new(),
            keys_call: None,
            read_call: None,
            claim_call: None,
        }
    }

    /// Runs one pipeline call with the host's views.
    fn call(&mut self, f: impl FnOnce(&mut Pipeline, &Shared, &HostEnv<'_>) -> Output) -> Output {
        let s = self.shared.clone();
        let env = HostEnv { shared: &s };
        f(&mut self.pipeline, &s, &env)
    }

    /// Writes the stream's audit record (docs/audit.md) as filter state once its decision is
    /// final: Envoy's access log reads `%FILTER_STATE(wasm.fapi_guard.audit:PLAIN)%` (the Wasm
    /// host stores a property `p` under the filter-state key `wasm.p`, write-once).
    fn write_audit(&mut self, at_end: bool) {
        let w = &self.shared.worker;
        let now = clock::now_seconds();
        let t0 = stages::now();
        let record = if at_end {
            self.pipeline.end_audit(w, now)
        } else {
            self.pipeline.take_audit(w, now)
        };
        if let Some(r) = record {
            stages::add("audit_record", t0);
            let t1 = stages::now();
            let json = r.to_json();
            stages::add("audit_json", t1);
            let t2 = stages::now();
            let _ = proxy_wasm::hostcalls::set_property(vec![AUDIT_PROPERTY], Some(&json));
            stages::add("audit_set", t2);
        }
    }

    /// Acts on an output: header edits first, then the action.
    fn act(&mut self, out: Output, within: In) -> Action {
        self.write_audit(false);
        for (name, value) in &out.request_headers {
            let _ = proxy_wasm::hostcalls::set_map_value(
                proxy_wasm::types::MapType::HttpRequestHeaders,
                name,
                value.as_deref(),
            );
        }
        for (name, value) in &out.response_headers {
            let _ = proxy_wasm::hostcalls::set_map_value(
                proxy_wasm::types::MapType::HttpResponseHeaders,
                name,
                value.as_deref(),
            );
        }
        match out.action {
            Next::Continue => {
                if within == In::CallAnswer {
                    let _ = proxy_wasm::hostcalls::resume_http_request();
                }
                Action::Continue
            }
            Next::Hold => Action::Pause,
            Next::Reply(r) => {
                reply::send(&r);
                Action::Pause
            }
            Next::FetchKeys { issuer } => match jwks::send(&self.shared.worker, issuer) {
                Some(token) => {
                    self.keys_call = Some((token, issuer));
                    Action::Pause
                }
                None => {
                    // Not sent: the token step decides on the keys it has.
                    let out = self.call(|p, s, env| p.on_keys(&s.worker, env, &HostExchange));
                    self.act(out, within)
                }
            },
            Next::ReadStored(read) => match self.send_read(&read) {
                Some(token) => {
                    self.read_call = Some(token);
                    Action::Pause
                }
                None => {
                    let answer = StoredAnswer {
                        status: None,
                        body_size: 0,
                        body: &Vec::new,
                    };
                    let out = self.call(|p, s, env| p.on_stored_answer(&s.worker, env, &answer));
                    self.act(out, within)
                }
            },
            Next::ClaimProof(call) => match crate::store_call::send(self, &call) {
                Some(token) => {
                    self.claim_call = Some(token);
                    Action::Pause
                }
                None => {
                    // Not sent: fails closed (`dpop_replay_store_unavailable`).
                    let out = self.call(|p, s, env| {
                        p.on_claim_answer(&s.worker, env, &HostExchange, None, &[])
                    });
                    self.act(out, within)
                }
            },
        }
    }

    /// Read before write: no `Authorization`/`DPoP` is forwarded (core chose the headers).
    fn send_read(&self, read: &StoredRead) -> Option<u32> {
        let headers: Vec<(&str, &str)> = read
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        match self.dispatch_http_call(&read.cluster, headers, None, vec![], STORED_READ_TIMEOUT) {
            Ok(token) => {
                FilterStats::bump("fhir_scope", "stored_read");
                Some(token)
            }
            Err(e) => {
                let _ = proxy_wasm::hostcalls::log(
                    LogLevel::Warn,
                    &format!(
                        "fapi_guard.fhir_scope: stored read could not be sent (cluster `{}`): {e:?}",
                        read.cluster
                    ),
                );
                None
            }
        }
    }
}

impl Context for GuardStream {
    fn on_http_call_response(&mut self, token_id: u32, headers: usize, body: usize, _: usize) {
        if let Some((token, issuer)) = self.keys_call {
            if token == token_id {
                self.keys_call = None;
                jwks::answered(&self.shared.worker, issuer, body);
                let out = self.call(|p, s, env| p.on_keys(&s.worker, env, &HostExchange));
                self.act(out, In::CallAnswer);
                return;
            }
        }
        if self.read_call == Some(token_id) {
            self.read_call = None;
            // No headers: the call failed or timed out (fails closed).
            let status = if headers == 0 {
                None
            } else {
                self.get_http_call_response_header(":status")
                    .and_then(|s| s.parse().ok())
            };
            let read_body = || {
                proxy_wasm::hostcalls::get_buffer(
                    proxy_wasm::types::BufferType::HttpCallResponseBody,
                    0,
                    body,
                )
                .ok()
                .flatten()
                .unwrap_or_default()
            };
            let answer = StoredAnswer {
                status,
                body_size: body,
                body: &read_body,
            };
            let s = self.shared.clone();
            let env = HostEnv { shared: &s };
            let out = self.pipeline.on_stored_answer(&s.worker, &env, &answer);
            self.act(out, In::CallAnswer);
            return;
        }
        if self.claim_call == Some(token_id) {
            self.claim_call = None;
            let status = if headers == 0 {
                None
            } else {
                self.get_http_call_response_header(":status")
                    .and_then(|s| s.parse().ok())
            };
            let answer = proxy_wasm::hostcalls::get_buffer(
                proxy_wasm::types::BufferType::HttpCallResponseBody,
                0,
                body.min(MAX_STORE_ANSWER),
            )
            .ok()
            .flatten()
            .unwrap_or_default();
            if fapi_guard_core::dpop::replay_store::lease_lost(status, &answer) {
                // The root's next tick grants a new one.
                self.shared.lease.set(None);
            }
            let out = self.call(|p, s, env| {
                p.on_claim_answer(&s.worker, env, &HostExchange, status, &answer)
            });
            self.act(out, In::CallAnswer);
        }
    }
}

impl HttpContext for GuardStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let _timed = stages::Guard::new("guard", "request_headers");
        let out = self
            .call(|p, s, env| p.on_request_headers(&s.worker, env, &HostExchange, end_of_stream));
        self.act(out, In::Callback)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let out = self.call(|p, s, env| {
            p.on_request_body(&s.worker, env, &HostExchange, body_size, end_of_stream)
        });
        self.act(out, In::Callback)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let out = self.call(|p, s, env| p.on_request_trailers(&s.worker, env, &HostExchange));
        self.act(out, In::Callback)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let out = self
            .call(|p, s, env| p.on_response_headers(&s.worker, env, &HostExchange, end_of_stream));
        self.act(out, In::Callback)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let out = self.call(|p, s, env| {
            p.on_response_body(&s.worker, env, &HostExchange, body_size, end_of_stream)
        });
        self.act(out, In::Callback)
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        let out = self.call(|p, s, env| p.on_response_trailers(&s.worker, env, &HostExchange));
        self.act(out, In::Callback)
    }

    /// The stream is done: a record not written yet (reset before the response).
    fn on_log(&mut self) {
        self.write_audit(true);
    }
}
