//! The chain plugin's side channel (root id `fapi_guard`, docs/checks.md "One module"): the
//! one module can run the token, DPoP and FHIR scope filters as steps of ONE HTTP context.
//! While the chain driver (`filters/guard/src/chain.rs`) runs a step, that step's three
//! stream effects go through here instead of the host:
//! - the verified token hand-off is kept in memory (no filter-state write or read);
//! - a step's "resume the request" is recorded for the driver, which runs the remaining steps
//!   first and resumes the stream only when every step has let it go (a step never releases
//!   held headers or bodies for the steps after it);
//! - a local reply is recorded, so the driver ends the chain.
//!
//! Outside a step of the chain (the three separate plugins) every function here is the plain
//! host call. The Wasm VM of a worker is single-threaded and a step runs inside one host
//! callback, so the slot is set and taken within that callback: it never carries one stream's
//! token into another.

use std::cell::RefCell;
use std::rc::Rc;

use fapi_guard_core::claims::VerifiedToken;

/// What a step did while it ran under [`enter`].
#[derive(Default)]
pub struct StepEffects {
    /// The step asked to resume the request (its callout answered and it let the request go).
    pub resumed: bool,
    /// The step sent a local reply: the chain ends here.
    pub replied: bool,
    /// The verified token the step handed on (the token step), or was given (the others).
    pub token: Option<Rc<VerifiedToken>>,
    /// A shadow refusal of this stream was recorded (by this step or an earlier one).
    pub shadow_refused: bool,
}

thread_local! {
    static SLOT: RefCell<Option<StepEffects>> = const { RefCell::new(None) };
}

/// The driver is about to run a step of the chain; `token` is the verified token the token
/// step handed on earlier in this stream (None before it ran, or on a public route);
/// `shadow_refused`: an earlier step recorded a shadow refusal of this stream.
pub fn enter(token: Option<Rc<VerifiedToken>>, shadow_refused: bool) {
    SLOT.with(|s| {
        *s.borrow_mut() = Some(StepEffects {
            token,
            shadow_refused,
            ..StepEffects::default()
        })
    });
}

/// The step returned: what it did. Outside the chain again.
pub fn leave() -> StepEffects {
    SLOT.with(|s| s.borrow_mut().take()).unwrap_or_default()
}

/// True while a step of the chain runs.
pub fn in_chain() -> bool {
    SLOT.with(|s| s.borrow().is_some())
}

/// Resumes the paused request. In the chain: records it for the driver instead (the steps
/// after this one run first; docs/checks.md, "Never released undecided").
pub fn resume_request() {
    let in_chain = SLOT.with(|s| match s.borrow_mut().as_mut() {
        Some(e) => {
            e.resumed = true;
            true
        }
        None => false,
    });
    if !in_chain {
        let _ = proxy_wasm::hostcalls::resume_http_request();
    }
}

/// A local reply was sent (`reply::send`).
pub(crate) fn note_reply() {
    SLOT.with(|s| {
        if let Some(e) = s.borrow_mut().as_mut() {
            e.replied = true;
        }
    });
}

/// In the chain: whether a shadow refusal of this stream was recorded; outside it: `None`
/// (read filter state).
pub(crate) fn shadow_refused() -> Option<bool> {
    SLOT.with(|s| s.borrow().as_ref().map(|e| e.shadow_refused))
}

/// In the chain: records a shadow refusal of this stream (true); outside it: false.
pub(crate) fn mark_shadow_refused() -> bool {
    SLOT.with(|s| match s.borrow_mut().as_mut() {
        Some(e) => {
            e.shadow_refused = true;
            true
        }
        None => false,
    })
}

/// In the chain: keeps the handed-on token (returns `Some(stored)`); outside it: `None`.
pub(crate) fn store_token(token: Option<Rc<VerifiedToken>>) -> Option<bool> {
    SLOT.with(|s| {
        s.borrow_mut().as_mut().map(|e| {
            let ok = token.is_some();
            e.token = token;
            ok
        })
    })
}

/// In the chain: the token handed on in this stream (`Some(None)` if there is none);
/// outside it: `None` (read filter state).
pub(crate) fn load_token() -> Option<Option<Rc<VerifiedToken>>> {
    SLOT.with(|s| s.borrow().as_ref().map(|e| e.token.clone()))
}
