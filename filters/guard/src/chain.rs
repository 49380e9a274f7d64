//! The chain plugin (root id `fapi_guard`, docs/checks.md "One module"): the token, DPoP and
//! FHIR scope filters (or those `fapi_guard:<steps>` names) as steps of ONE HTTP context, in
//! chain order, with the verified token handed on in memory (`fapi_guard_host::chain`). Each step is the filter's own context,
//! unchanged: its policy sections, stats (`fapi_guard.<filter>.*`), reason codes and replies
//! are those of the separate plugins. This driver only orders the callbacks the way Envoy
//! orders three filters, with these rules (think "never released undecided"):
//! - A step that pauses holds the whole stream. Its resume (JWKS fetch answered, stored read
//!   answered) is recorded, not sent: the steps after it run first and the stream is resumed
//!   only when every step has let it go. A step that sent a local reply ends the chain.
//! - Request body and trailers that arrive while a step before the FHIR scope step is still
//!   deciding are held (Pause: Envoy buffers them) and given to the FHIR scope step once it has
//!   the headers, so it decides on everything buffered (at once if the stream already ended).
//!   Only the FHIR scope step reads bodies; the token and DPoP steps have no body callbacks.
//! - Response callbacks run in reverse chain order (FHIR scope, then DPoP, then token), as
//!   Envoy runs separate filters: while the FHIR scope step holds the response headers, the
//!   steps before it see them only once it let them go.
//! - Fail closed: a step that cannot be created refuses the stream (no context, Envoy answers
//!   500); no panics.

use std::rc::Rc;

use fapi_guard_core::claims::VerifiedToken;
use fapi_guard_core::root_id::{ChainSteps, FilterKind};
use fapi_guard_host::chain::{self, StepEffects};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

/// The chain's root: each step's filter root (each loads the policy, its own section of it).
pub struct ChainRoot {
    roots: Vec<(FilterKind, Box<dyn RootContext>)>,
}

impl ChainRoot {
    pub fn new(steps: ChainSteps) -> ChainRoot {
        let roots = steps
            .kinds()
            .into_iter()
            .filter_map(|k| {
                let root = match k {
                    FilterKind::Token => crate::token::root_context(),
                    FilterKind::Dpop => crate::dpop::root_context(),
                    FilterKind::FhirScope => crate::fhir_scope::root_context(),
                    FilterKind::Chain(_) => return None,
                };
                Some((k, root))
            })
            .collect();
        ChainRoot { roots }
    }
}

impl Context for ChainRoot {
    /// JWKS fetches the token root started on its tick (each root ignores calls not its own).
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        headers: usize,
        body: usize,
        trailers: usize,
    ) {
        for (_, r) in self.roots.iter_mut() {
            r.on_http_call_response(token_id, headers, body, trailers);
        }
    }
}

impl RootContext for ChainRoot {
    fn on_configure(&mut self, size: usize) -> bool {
        // Every step must configure (fail closed: a chain without one of its filters is no
        // chain). The token root sets this plugin's tick period if it fetches keys.
        let ok = !self.roots.is_empty() && self.roots.iter_mut().all(|(_, r)| r.on_configure(size));
        if !ok {
            let _ = proxy_wasm::hostcalls::log(
                LogLevel::Critical,
                "fapi_guard: chain plugin refusing configuration: a step refused it (see above)",
            );
        }
        ok
    }

    fn on_tick(&mut self) {
        // Only the token root ticks (its key schedule); the tick period is this plugin's.
        for (k, r) in self.roots.iter_mut() {
            if *k == FilterKind::Token {
                r.on_tick();
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let mut steps = Vec::with_capacity(self.roots.len());
        for (k, r) in &self.roots {
            // A step without a context (its root not configured): no chain, fail closed.
            steps.push((*k, r.create_http_context(context_id)?));
        }
        let fhir = steps.iter().position(|(k, _)| *k == FilterKind::FhirScope);
        Some(Box::new(ChainFilter {
            steps,
            fhir,
            token: None,
            shadow_refused: false,
            next: 0,
            ended: false,
            headers_eos: false,
            body: None,
            trailers: false,
            fhir_action: Action::Continue,
            response_held: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct ChainFilter {
    /// The steps, in chain order (the FHIR scope step, if any, is the last).
    steps: Vec<(FilterKind, Box<dyn HttpContext>)>,
    fhir: Option<usize>,
    /// The verified token the token step handed on (in memory).
    token: Option<Rc<VerifiedToken>>,
    /// A step recorded a shadow refusal: the later steps do not count the request again.
    shadow_refused: bool,
    /// The first step that has not yet let the request headers go (`steps.len()`: all have).
    next: usize,
    /// A step sent a local reply: nothing more of the request goes on.
    ended: bool,
    headers_eos: bool,
    /// Body the host buffered before the FHIR scope step had the headers: (bytes buffered so
    /// far, end of stream seen).
    body: Option<(usize, bool)>,
    /// Trailers arrived before the FHIR scope step had the headers.
    trailers: bool,
    /// The FHIR scope step's last answer on the request (Continue = it lets the request go).
    fhir_action: Action,
    /// The FHIR scope step holds the response headers; the steps before it have not seen them.
    response_held: bool,
}

impl ChainFilter {
    /// Runs `f` on step `i` with the chain's side channel set; what the step did.
    fn run_step(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut dyn HttpContext) -> Action,
    ) -> (Action, StepEffects) {
        let Some((kind, step)) = self.steps.get_mut(i) else {
            return (Action::Pause, StepEffects::default());
        };
        let is_token = *kind == FilterKind::Token;
        chain::enter(
            if is_token { None } else { self.token.clone() },
            self.shadow_refused,
        );
        let action = f(step.as_mut());
        let effects = chain::leave();
        self.shadow_refused |= effects.shadow_refused;
        if effects.replied {
            self.ended = true;
        }
        if is_token && effects.token.is_some() {
            self.token = effects.token.clone();
        }
        (action, effects)
    }

    /// Runs the request headers through the steps from `self.next` on. Continue only when
    /// every step let the request go (the caller then lets the stream go on); Pause while a
    /// step holds it or after a local reply.
    fn advance(&mut self) -> Action {
        while self.next < self.steps.len() {
            if self.ended {
                return Action::Pause;
            }
            let i = self.next;
            let eos = self.headers_eos;
            let (action, _) = self.run_step(i, |s| s.on_http_request_headers(0, eos));
            if self.ended {
                return Action::Pause;
            }
            if Some(i) == self.fhir {
                self.next = self.steps.len();
                self.fhir_action = action;
                return self.feed_fhir();
            }
            match action {
                Action::Continue => self.next = i + 1,
                // The step waits for its own callout; it resumes through `resumed`.
                _ => return Action::Pause,
            }
        }
        if self.ended {
            Action::Pause
        } else {
            self.fhir_action
        }
    }

    /// Gives the FHIR scope step the body and trailers held while an earlier step decided:
    /// it decides on everything buffered (at once if the stream already ended).
    fn feed_fhir(&mut self) -> Action {
        let Some(fhir) = self.fhir else {
            return Action::Continue;
        };
        if let Some((size, eos)) = self.body.take() {
            let (action, _) = self.run_step(fhir, |s| s.on_http_request_body(size, eos));
            if self.ended {
                return Action::Pause;
            }
            self.fhir_action = action;
        }
        if std::mem::take(&mut self.trailers) {
            let (action, _) = self.run_step(fhir, |s| s.on_http_request_trailers(0));
            if self.ended {
                return Action::Pause;
            }
            self.fhir_action = action;
        }
        self.fhir_action
    }

    /// Step `i`'s callout answered and it asked to resume: the steps after it run first, and
    /// the stream is resumed only if all of them let it go.
    fn resumed(&mut self, i: usize) {
        let go = if Some(i) == self.fhir {
            // The stored read passed; the FHIR scope step is the last.
            self.fhir_action = Action::Continue;
            Action::Continue
        } else if self.next == i {
            self.next = i + 1;
            self.advance()
        } else {
            // A resume from a step that was not holding the request: ignored (fail closed).
            Action::Pause
        };
        if let Action::Continue = go {
            let _ = proxy_wasm::hostcalls::resume_http_request();
        }
    }

    /// The request body or trailers for the FHIR scope step (if there is one).
    fn request_part(&mut self, f: impl FnOnce(&mut dyn HttpContext) -> Action) -> Action {
        let Some(fhir) = self.fhir else {
            return Action::Continue;
        };
        let (action, _) = self.run_step(fhir, f);
        if self.ended {
            return Action::Pause;
        }
        self.fhir_action = action;
        action
    }

    /// The response headers for the steps before the FHIR scope step, in reverse chain order.
    fn response_headers_before_fhir(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        let last = self.fhir.unwrap_or(self.steps.len());
        for i in (0..last).rev() {
            let (action, _) = self.run_step(i, |s| {
                s.on_http_response_headers(num_headers, end_of_stream)
            });
            if let Action::Pause = action {
                return Action::Pause;
            }
        }
        Action::Continue
    }

    /// The FHIR scope step answered on the response body or trailers: if it lets go of the
    /// response headers it held, the steps before it see them now (as Envoy continues them).
    fn after_fhir_response(&mut self, action: Action) -> Action {
        match action {
            Action::Continue if std::mem::take(&mut self.response_held) => {
                self.response_headers_before_fhir(0, false)
            }
            other => other,
        }
    }
}

impl Context for ChainFilter {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        headers: usize,
        body: usize,
        trailers: usize,
    ) {
        // Each step ignores call tokens that are not its own.
        for i in 0..self.steps.len() {
            if self.ended {
                return;
            }
            let (_, effects) = self.run_step(i, |s| {
                s.on_http_call_response(token_id, headers, body, trailers);
                Action::Continue
            });
            if effects.replied {
                return;
            }
            if effects.resumed {
                self.resumed(i);
                return;
            }
        }
    }
}

impl HttpContext for ChainFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.headers_eos = end_of_stream;
        self.advance()
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.ended {
            return Action::Pause;
        }
        if self.next < self.steps.len() {
            // A step is still deciding on the headers: hold (Envoy buffers; `body_size` is
            // all buffered so far). The FHIR scope step gets it once it has the headers.
            self.body = Some((body_size, end_of_stream));
            return Action::Pause;
        }
        self.request_part(|s| s.on_http_request_body(body_size, end_of_stream))
    }

    fn on_http_request_trailers(&mut self, num_trailers: usize) -> Action {
        if self.ended {
            return Action::Pause;
        }
        if self.next < self.steps.len() {
            self.trailers = true;
            return Action::Pause;
        }
        self.request_part(|s| s.on_http_request_trailers(num_trailers))
    }

    fn on_http_response_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        if let Some(fhir) = self.fhir {
            let (action, _) = self.run_step(fhir, |s| {
                s.on_http_response_headers(num_headers, end_of_stream)
            });
            if let Action::Pause = action {
                // Held for the response check (or refused: then what follows is the reply).
                self.response_held = true;
                return Action::Pause;
            }
        }
        self.response_headers_before_fhir(num_headers, end_of_stream)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(fhir) = self.fhir else {
            return Action::Continue;
        };
        let (action, _) =
            self.run_step(fhir, |s| s.on_http_response_body(body_size, end_of_stream));
        self.after_fhir_response(action)
    }

    fn on_http_response_trailers(&mut self, num_trailers: usize) -> Action {
        let Some(fhir) = self.fhir else {
            return Action::Continue;
        };
        let (action, _) = self.run_step(fhir, |s| s.on_http_response_trailers(num_trailers));
        self.after_fhir_response(action)
    }
}
