//! The benchmark's floor (`bench/run.py`, configuration `empty_wasm`): a Rust proxy-wasm
//! filter that reads one request header and lets the request through. It measures what any
//! Wasm filter costs per request in Envoy (context creation, one VM crossing per callback,
//! one header read), so the guard's own cost can be read on top of it. Not a guard filter:
//! it checks nothing and is never deployed.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(EmptyRoot) });
}}

struct EmptyRoot;

impl Context for EmptyRoot {}

impl RootContext for EmptyRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(EmptyFilter))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct EmptyFilter;

impl Context for EmptyFilter {}

impl HttpContext for EmptyFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // One header read, as every guard filter does at least once.
        let _ = self.get_http_request_header("authorization");
        Action::Continue
    }
}
