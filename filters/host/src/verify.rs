//! `SignatureVerifier` over Envoy's `verify_signature` foreign function, with a pure-Rust
//! fallback.
//!
//! ES256/ES384/ES512 and RS256/RS384/RS512 go to the host (BoringSSL at native speed,
//! `bench/README.md`); PS256/PS384/PS512 and EdDSA always use [`SoftwareVerifier`]
//! (BoringSSL cannot do them through this function).
//! A host without the function (`NotFound`) is remembered and never asked again; every other
//! host failure falls back to software for that call. The key/alg check runs before any host
//! call: BoringSSL verifies with whatever key it is handed.
//!
//! Counters `fapi_guard.verify.host` / `fapi_guard.verify.software` say which path verified
//! each signature (the benchmark reads them to prove the path it measured). The Wasm VM
//! environment variable `FAPI_GUARD_VERIFIER=software` forces the software path
//! ([`HostVerifier::from_env`]; Envoy `vm_config.environment_variables.key_values`). At start
//! the filter probes the host for the function and logs its choice
//! ([`fapi_guard_core::jose::verifier_choice`]), so a host without it is reported before the
//! first request, not at the first check.

use std::cell::{Cell, OnceCell};

use fapi_guard_core::jose::host_args::{
    decode_verify_signature_result, host_verify_args, VERIFY_SIGNATURE_FUNCTION,
};
use fapi_guard_core::jose::verifier_choice::choose_verifier;
use fapi_guard_core::jose::verify::check_key_for_alg;
use fapi_guard_core::jose::{Alg, PublicKey, SignatureVerifier, SoftwareVerifier, VerifyError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MetricType, Status};

/// Verifier for the filters: host first for ES*/RS*, software otherwise.
/// One per root/HTTP context (the Wasm VM is single-threaded; `Cell` is enough).
#[derive(Debug)]
pub struct HostVerifier {
    prefer_host: bool,
    host_missing: Cell<bool>,
    /// Metric ids (host, software), defined on first verification.
    metrics: OnceCell<(Option<u32>, Option<u32>)>,
}

/// Wasm VM environment variable that selects the verifier (`software` forces it).
pub const VERIFIER_ENV: &str = "FAPI_GUARD_VERIFIER";

impl Default for HostVerifier {
    fn default() -> Self {
        HostVerifier::new(true)
    }
}

impl HostVerifier {
    /// `prefer_host = false` forces software verification (benchmarks, tests, odd hosts).
    pub const fn new(prefer_host: bool) -> Self {
        HostVerifier {
            prefer_host,
            host_missing: Cell::new(false),
            metrics: OnceCell::new(),
        }
    }

    /// The filters' verifier, decided once at start (`on_configure`): host first unless the
    /// VM environment says `FAPI_GUARD_VERIFIER=software` (read through WASI `environ_get`;
    /// unset or `host` = host first), and only if the host has the `verify_signature` foreign
    /// function. Logs one `verifier: ...` line and sets the gauge
    /// `fapi_guard.verify.host_available` (1/0) before any request is served.
    pub fn from_env() -> Self {
        Self::at_start(VERIFY_SIGNATURE_FUNCTION)
    }

    /// [`from_env`](Self::from_env) probing `function` (the test-only probe filter names a
    /// function no host has, to exercise the missing-host path in real Envoy).
    pub fn at_start(function: &str) -> Self {
        let env = std::env::var(VERIFIER_ENV).ok();
        let has = host_has_function(function);
        let choice = choose_verifier(env.as_deref(), function, has);
        let level = if choice.warn {
            LogLevel::Warn
        } else {
            LogLevel::Info
        };
        let _ = hostcalls::log(level, &choice.line);
        if let Ok(id) =
            hostcalls::define_metric(MetricType::Gauge, "fapi_guard.verify.host_available")
        {
            let _ = hostcalls::record_metric(id, u64::from(has));
        }
        HostVerifier::new(choice.use_host)
    }

    /// Counts one verification on the host (`true`) or software path: one host call.
    fn count(&self, host: bool) {
        let (h, s) = *self.metrics.get_or_init(|| {
            let define = |name: &str| hostcalls::define_metric(MetricType::Counter, name).ok();
            (
                define("fapi_guard.verify.host"),
                define("fapi_guard.verify.software"),
            )
        });
        if let Some(id) = if host { h } else { s } {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    /// Whether the next ES*/RS* verification will be sent to the host.
    pub fn uses_host(&self) -> bool {
        self.prefer_host && !self.host_missing.get()
    }
}

impl SignatureVerifier for HostVerifier {
    fn verify(
        &self,
        alg: Alg,
        key: &PublicKey,
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<(), VerifyError> {
        // RFC 8725 §3.1 / FAPI 2.0 §5.4: algorithm confusion and RSA size, before the host.
        check_key_for_alg(alg, key)?;
        let _t = crate::stages::now();
        let _timed = Timed("verify", _t);
        if self.uses_host() {
            // `None`: PS*/EdDSA, which the host cannot verify.
            if let Some(args) = host_verify_args(alg, key, signing_input, signature)? {
                match hostcalls::call_foreign_function(VERIFY_SIGNATURE_FUNCTION, Some(&args)) {
                    Ok(out) => {
                        // No bytes = the all-default result message: `result = false`.
                        let out = out.unwrap_or_default();
                        match decode_verify_signature_result(&out) {
                            Some(r) => {
                                self.count(true);
                                return if r.result {
                                    Ok(())
                                } else {
                                    Err(VerifyError::BadSignature)
                                };
                            }
                            None => {
                                log::warn!(
                                    "verify_signature returned an undecodable result; \
                                     using software verification from now on"
                                );
                                self.host_missing.set(true);
                            }
                        }
                    }
                    Err(Status::NotFound) => {
                        log::info!(
                            "host has no verify_signature foreign function; \
                             using software verification"
                        );
                        self.host_missing.set(true);
                    }
                    Err(status) => {
                        // BadArgument / InternalFailure: this call could not be served. The key
                        // passed our own checks, so software gives the right answer.
                        log::debug!("verify_signature failed ({status:?}); software fallback");
                    }
                }
            }
        }
        self.count(false);
        SoftwareVerifier.verify(alg, key, signing_input, signature)
    }
}

/// Whether the host offers `function`: asked with empty arguments, which a host that has it
/// answers with a result or `BadArgument`; only `NotFound` means it is missing.
fn host_has_function(function: &str) -> bool {
    !matches!(
        hostcalls::call_foreign_function(function, Some(&[])),
        Err(Status::NotFound)
    )
}

/// Adds the time until it is dropped to a stage (profiling builds only; see `stages`).
struct Timed(&'static str, u64);

impl Drop for Timed {
    fn drop(&mut self) {
        crate::stages::add(self.0, self.1);
    }
}
