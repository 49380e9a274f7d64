//! Stats counters per filter, outcome and reason: `fapi_guard.<filter>.allowed` and
//! `fapi_guard.<filter>.denied.<reason>` (Envoy shows them as `wasmcustom.fapi_guard...`).

use std::collections::HashMap;

use fapi_guard_core::denial::Reason;
use proxy_wasm::types::MetricType;

pub struct FilterStats {
    allowed: Option<u32>,
    public: Option<u32>,
    cache_hit: Option<u32>,
    denied: HashMap<&'static str, u32>,
    shadow_denied: HashMap<&'static str, u32>,
}

impl FilterStats {
    /// Defines every counter of `filter` up front (cheap; makes them visible at zero).
    pub fn new(filter: &str) -> FilterStats {
        let define =
            |name: String| proxy_wasm::hostcalls::define_metric(MetricType::Counter, &name).ok();
        let allowed = define(format!("fapi_guard.{filter}.allowed"));
        let public = define(format!("fapi_guard.{filter}.public"));
        let cache_hit = define(format!("fapi_guard.{filter}.cache_hit"));
        let mut denied = HashMap::new();
        let mut shadow_denied = HashMap::new();
        for r in Reason::ALL {
            if let Some(id) = define(format!("fapi_guard.{filter}.denied.{}", r.code())) {
                denied.insert(r.code(), id);
            }
            if let Some(id) = define(format!("fapi_guard.{filter}.shadow_denied.{}", r.code())) {
                shadow_denied.insert(r.code(), id);
            }
        }
        FilterStats {
            allowed,
            public,
            cache_hit,
            denied,
            shadow_denied,
        }
    }

    pub fn allowed(&self) {
        if let Some(id) = self.allowed {
            let _ = proxy_wasm::hostcalls::increment_metric(id, 1);
        }
    }

    /// A request on a public route (no token needed).
    pub fn public(&self) {
        if let Some(id) = self.public {
            let _ = proxy_wasm::hostcalls::increment_metric(id, 1);
        }
    }

    /// A verified-token cache hit.
    pub fn cache_hit(&self) {
        if let Some(id) = self.cache_hit {
            let _ = proxy_wasm::hostcalls::increment_metric(id, 1);
        }
    }

    pub fn denied(&self, reason: Reason) {
        if let Some(id) = self.denied.get(reason.code()) {
            let _ = proxy_wasm::hostcalls::increment_metric(*id, 1);
        }
    }

    /// A denial not enforced: the route or policy is in `shadow` mode (dry run).
    pub fn shadow_denied(&self, reason: Reason) {
        if let Some(id) = self.shadow_denied.get(reason.code()) {
            let _ = proxy_wasm::hostcalls::increment_metric(*id, 1);
        }
    }

    /// A named extra counter (e.g. `jwks.fetch_failed`), defined on first use.
    pub fn bump(filter: &str, name: &str) {
        if let Ok(id) = proxy_wasm::hostcalls::define_metric(
            MetricType::Counter,
            &format!("fapi_guard.{filter}.{name}"),
        ) {
            let _ = proxy_wasm::hostcalls::increment_metric(id, 1);
        }
    }
}
