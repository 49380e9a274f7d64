//! Per-route authorization after the token is verified (`docs/checks.md` §4): required
//! scopes, claim conditions, RFC 9396 `authorization_details` conditions, and bindings of a
//! path segment or header to the token (object-level authorisation, OWASP API1:2023 BOLA).
//!
//! A route rule (`routes[i]` in the policy) may carry an `authz` object and a `mode`; the token
//! filter evaluates it on every request the rule matches, after the token verified. Every
//! condition must hold; a claim that is missing or of the wrong type fails its condition (fail
//! closed). Denials name the condition (`routes[i].authz.claims[j]`) and the claim's *name*,
//! never a claim value.
//!
//! Path templates: a `path` or `path_prefix` segment `{name}` matches one non-empty path segment and
//! binds it for `bind` (`/orgs/{orgnr}/documents`).
//!
//! Rooms: [`doc`] the policy's `authz` object as written, [`template`] path templates,
//! [`condition`] the compiled conditions and bindings, [`rule`] a route's whole rule
//! (compile and evaluate).

pub mod condition;
pub mod doc;
pub mod rule;
pub mod template;

pub use condition::AuthzRequest;
pub use doc::{AuthzDoc, BindDoc, BindMatch, CondDoc, DetailDoc, DetailRefDoc, Mode, ScopesDoc};
pub use rule::{Authz, AuthzDenial};
pub use template::{match_template, template_params};
