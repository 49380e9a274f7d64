//! The one module (`fapi_guard.wasm`): the token, DPoP and FHIR scope filters in one Wasm
//! module, attached as three plugins that share one VM per worker (same `vm_id` and
//! `vm_config`; bench/README.md, "Memory"). Each plugin is the filter its root id names
//! (`fapi_guard_core::root_id`, the names of `filters/registry.json`), or the chain plugin
//! (root id `fapi_guard`, `chain.rs`: the three as steps of one HTTP context); a missing or unknown
//! root id is refused at configuration (fail closed, docs/checks.md "One module"). Thin: the
//! filters are the sources of the three separate modules, compiled here as modules without
//! their `entry` feature (so there is one `_initialize`, this one) and otherwise unchanged.

use fapi_guard_core::root_id::{filter_for_root_id, FilterKind};

mod chain;
use proxy_wasm::traits::{Context, RootContext};
use proxy_wasm::types::LogLevel;

// `cfg(feature = "entry")` in these files is the separate modules' entry; this crate has no
// such feature, so it is off here.
#[allow(unexpected_cfgs)]
#[path = "../../dpop/src/lib.rs"]
mod dpop;
#[allow(unexpected_cfgs)]
#[path = "../../fhir-scope/src/lib.rs"]
mod fhir_scope;
#[allow(unexpected_cfgs)]
#[path = "../../token/src/lib.rs"]
mod token;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(new_root);
}}

/// Called once per plugin and worker, with that plugin's context current: Envoy's
/// `plugin_root_id` property is the plugin's `root_id`.
fn new_root(_context_id: u32) -> Box<dyn RootContext> {
    let root_id = proxy_wasm::hostcalls::get_property(vec!["plugin_root_id"])
        .ok()
        .flatten();
    match filter_for_root_id(root_id.as_deref()) {
        Ok(FilterKind::Token) => token::root_context(),
        Ok(FilterKind::Dpop) => dpop::root_context(),
        Ok(FilterKind::FhirScope) => fhir_scope::root_context(),
        Ok(FilterKind::Chain(steps)) => Box::new(chain::ChainRoot::new(steps)),
        Err(why) => Box::new(Refused { why }),
    }
}

/// A plugin whose root id names no filter of this module: it refuses its configuration, so
/// Envoy refuses the listener rather than run a chain without that filter.
struct Refused {
    why: String,
}

impl Context for Refused {}

impl RootContext for Refused {
    fn on_configure(&mut self, _size: usize) -> bool {
        let _ =
            proxy_wasm::hostcalls::log(LogLevel::Critical, &format!("fapi_guard: {}", self.why));
        false
    }
}
