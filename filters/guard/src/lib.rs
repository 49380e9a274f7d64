//! The guard's Wasm module (`fapi_guard.wasm`): one plugin (root id `fapi_guard`, or
//! `fapi_guard:<steps>` for a subset in chain order) that runs the pipeline of
//! `fapi_guard_core::engine` on every stream (docs/checks.md "One pipeline"). This crate is the
//! pipeline's proxy-wasm driver and nothing else: `root.rs` loads the policy once per worker
//! and keeps the issuers' keys fresh; `stream.rs` maps each HTTP callback to a pipeline call
//! and its output to host calls. A missing or unknown root id is refused at configuration
//! (fail closed).

use fapi_guard_core::root_id::{filter_for_root_id, FilterKind};
use proxy_wasm::traits::{Context, RootContext};
use proxy_wasm::types::LogLevel;

mod host_env;
mod root;
mod store_call;
mod stream;

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
        Ok(FilterKind::Chain(steps)) => Box::new(root::GuardRoot::new(steps)),
        Ok(_) => Box::new(Refused {
            why: "a root id naming one filter attached as its own plugin: that layout is gone; attach the one plugin `fapi_guard` (or `fapi_guard:<steps>`, e.g. `fapi_guard:token,dpop`)".to_string(),
        }),
        Err(why) => Box::new(Refused { why }),
    }
}

/// A plugin whose root id names no chain: it refuses its configuration, so Envoy refuses the
/// listener rather than run without the guard.
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
