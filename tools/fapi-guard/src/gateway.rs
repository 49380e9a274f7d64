//! `check --behind-gateway`: what a policy needs when a gateway (an Istio ingress gateway, a
//! Gateway API `Gateway`, any reverse proxy) serves the route and forwards it to the proxy
//! running the filters.
//!
//! RFC 9449 §4.3 (check 9) compares the proof's `htu` with the URI of the request the server
//! sees. Behind a gateway the client signs the public URI (`https://api.example.org/...`) while
//! the proxy sees the forwarded request (mesh-internal `:authority`, `http` scheme on the mTLS
//! hop), so unless `dpop.public_origins` names the public origins every proof is refused
//! `dpop_htu_mismatch` (docs/dpop.md, "`htu` behind a gateway").

use fapi_guard_core::describe::Lint;
use fapi_guard_core::policy::Policy;

/// Findings for a policy whose routes a gateway serves.
pub fn lint(policy: &Policy) -> Vec<Lint> {
    let mut out = Vec::new();
    let origins_missing = policy
        .dpop
        .as_ref()
        .is_none_or(|d| d.public_origins.is_empty());
    if policy.token.allow_dpop && origins_missing {
        out.push(Lint {
            level: "warning",
            field: "dpop.public_origins".into(),
            message: "missing, and a gateway serves this API: clients sign the public URI in the proof's `htu` (RFC 9449 §4.3), the filter sees the gateway's forwarded request (internal authority, http scheme), so every DPoP proof is refused `dpop_htu_mismatch`; set it to the origins clients call, e.g. [\"https://api.example.org\"], and `dpop.stripped_path_prefix` if the gateway strips a prefix (docs/dpop.md, \"`htu` behind a gateway\")".into(),
        });
    }
    out
}
