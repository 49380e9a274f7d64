//! The pipeline's two views of the host: [`HostEnv`] (clock, verifier, shared data, stats,
//! log) and [`HostExchange`] (the stream's headers and bodies, read on demand).

use std::cell::Cell;

use fapi_guard_core::dpop::replay_store::Lease;
use fapi_guard_core::engine::{Count, Env, Exchange, Level, StepName, Worker};
use fapi_guard_core::jose::SignatureVerifier;
use fapi_guard_host::shared::HostSharedData;
use fapi_guard_host::stats::FilterStats;
use fapi_guard_host::verify::HostVerifier;
use fapi_guard_host::{clock, request};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType};

/// What every stream of a worker shares.
pub struct Shared {
    pub worker: Worker,
    pub stats: Stats,
    pub verifier: HostVerifier,
    /// `replay_scope: api`: this worker's current replay-store lease (the root grants it).
    pub lease: Cell<Option<Lease>>,
}

/// The counters of each step (`fapi_guard.<step>.*`), defined at configuration.
pub struct Stats {
    token: Option<FilterStats>,
    dpop: Option<FilterStats>,
    fhir_scope: Option<FilterStats>,
}

impl Stats {
    pub fn new(steps: impl Iterator<Item = StepName>) -> Stats {
        let mut s = Stats {
            token: None,
            dpop: None,
            fhir_scope: None,
        };
        for step in steps {
            let stats = Some(FilterStats::new(step.as_str()));
            match step {
                StepName::Token => s.token = stats,
                StepName::Dpop => s.dpop = stats,
                StepName::FhirScope => s.fhir_scope = stats,
            }
        }
        s
    }

    fn of(&self, step: StepName) -> Option<&FilterStats> {
        match step {
            StepName::Token => self.token.as_ref(),
            StepName::Dpop => self.dpop.as_ref(),
            StepName::FhirScope => self.fhir_scope.as_ref(),
        }
    }
}

pub struct HostEnv<'a> {
    pub shared: &'a Shared,
}

/// The one shared-data store of this VM id.
static SHARED: HostSharedData = HostSharedData;

impl Env for HostEnv<'_> {
    type Store = HostSharedData;

    fn now(&self) -> i64 {
        clock::now_seconds()
    }

    fn verifier(&self) -> &dyn SignatureVerifier {
        &self.shared.verifier
    }

    fn store(&self) -> &HostSharedData {
        &SHARED
    }

    fn count(&self, step: StepName, count: Count) {
        let Some(s) = self.shared.stats.of(step) else {
            return;
        };
        match count {
            Count::Allowed => s.allowed(),
            Count::Public => s.public(),
            Count::CacheHit => s.cache_hit(),
            Count::Denied(r) => s.denied(r),
            Count::ShadowDenied(r) => s.shadow_denied(r),
            Count::Named(name) => FilterStats::bump(step.as_str(), name),
        }
    }

    fn replay_lease(&self) -> Option<i64> {
        let dpop = &self.shared.worker.dpop;
        let lease = self.shared.lease.get()?;
        lease.usable(dpop, clock::now_seconds()).then_some(lease.id)
    }

    fn log(&self, level: Level, line: &str) {
        let level = match level {
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
        };
        let _ = hostcalls::log(level, line);
    }
}

/// The current stream of the current HTTP context.
pub struct HostExchange;

impl Exchange for HostExchange {
    fn request_header(&self, name: &str) -> Option<String> {
        hostcalls::get_map_value(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
    }

    fn request_headers(&self) -> Vec<(String, String)> {
        request::all_headers()
    }

    fn request_body(&self, max: usize) -> Vec<u8> {
        hostcalls::get_buffer(BufferType::HttpRequestBody, 0, max)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    fn response_header(&self, name: &str) -> Option<String> {
        hostcalls::get_map_value(MapType::HttpResponseHeaders, name)
            .ok()
            .flatten()
    }

    fn response_body(&self, max: usize) -> Vec<u8> {
        hostcalls::get_buffer(BufferType::HttpResponseBody, 0, max)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    fn peer_certificate_sha256(&self) -> Option<String> {
        request::property_string(vec!["connection", "sha256_peer_certificate_digest"])
    }
}
