//! A policy in words, and lints for where it is deployed (`fapi-guard check`, the web page).
//! Works on a policy that already loaded with [`Policy::from_json`] (the filters' loader).

use serde::Serialize;

use crate::policy::{KeySource, Policy, PolicyDoc};
use crate::routes::Requirement;

/// Where the filters run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Envoy with a config from `envoy/render.py` (clusters `api` and each `jwks_cluster`).
    Envoy,
    /// An Istio sidecar with `WasmPlugin`s (`tools/gen_wasmplugins.py`).
    Istio,
}

impl Target {
    pub fn parse(s: &str) -> Option<Target> {
        match s {
            "envoy" => Some(Target::Envoy),
            "istio" => Some(Target::Istio),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Lint {
    /// `error`: will not work there; `warning`: works, but probably not as meant.
    pub level: &'static str,
    pub field: String,
    pub message: String,
}

/// Istio names outbound clusters `outbound|<port>|<subset>|<host>` (pilot `BuildSubsetKey`).
pub fn is_istio_outbound(cluster: &str) -> bool {
    let parts: Vec<&str> = cluster.split('|').collect();
    matches!(parts.as_slice(), ["outbound", port, _, host]
        if !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
            && !host.is_empty()
            && host.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'))
}

fn is_istio_inbound(cluster: &str) -> bool {
    let parts: Vec<&str> = cluster.split('|').collect();
    matches!(parts.as_slice(), ["inbound", port, _, _] if port.bytes().all(|b| b.is_ascii_digit()) && !port.is_empty())
}

/// Host and port of a `jwks_uri` (default port by scheme).
fn host_port(uri: &str, authority: &str) -> (String, u16) {
    let default = if uri.starts_with("http://") { 80 } else { 443 };
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => {
            (h.to_string(), p.parse().unwrap_or(default))
        }
        _ => (authority.to_string(), default),
    }
}

/// Target-specific problems of a loaded policy.
pub fn lint(policy: &Policy, target: Target) -> Vec<Lint> {
    let mut out = Vec::new();
    let mut push = |level, field: String, message: String| {
        out.push(Lint {
            level,
            field,
            message,
        })
    };
    for (i, iss) in policy.issuers.iter().enumerate() {
        if let KeySource::Remote(r) = &iss.keys {
            match target {
                Target::Istio => {
                    if !is_istio_outbound(&r.cluster) {
                        let (host, port) = host_port(&r.uri, &r.authority);
                        push("error", format!("issuers[{i}].jwks_cluster"), format!(
                            "`{}` is not a cluster Istio defines; use `outbound|{port}||{host}` (with a ServiceEntry for the host) or the token filter answers 503 jwks_unavailable",
                            r.cluster
                        ));
                    } else if !r.cluster.ends_with(&format!(
                        "|{}",
                        r.authority.split(':').next().unwrap_or_default()
                    )) {
                        push(
                            "warning",
                            format!("issuers[{i}].jwks_cluster"),
                            format!(
                                "`{}` does not name the jwks_uri host `{}`",
                                r.cluster, r.authority
                            ),
                        );
                    }
                }
                Target::Envoy => {
                    if r.uri.starts_with("http://") {
                        push(
                            "warning",
                            format!("issuers[{i}].jwks_uri"),
                            "plain http: keys can be changed on the way; use https outside a test"
                                .into(),
                        );
                    }
                }
            }
        }
    }
    if let Some(f) = &policy.fhir {
        if target == Target::Istio {
            if f.hold_headers_while_buffering {
                push("error", "fhir.hold_headers_while_buffering".into(),
                    "must be false in Istio: a WasmPlugin cannot set `allow_on_headers_stop_iteration`, so the filter would wait for a body the host never delivers".into());
            }
            if !is_istio_inbound(&f.read_before_write_cluster)
                && !is_istio_outbound(&f.read_before_write_cluster)
            {
                push("error", "fhir.read_before_write_cluster".into(), format!(
                    "`{}` is not a cluster Istio defines; use the API's own `inbound|<port>||` cluster (writes by id under patient grants answer 503 stored_read_failed otherwise)",
                    f.read_before_write_cluster
                ));
            }
        } else if f.read_before_write_cluster != "api" {
            push(
                "warning",
                "fhir.read_before_write_cluster".into(),
                format!(
                    "`{}`: envoy/render.py defines the cluster `api` and the jwks clusters only",
                    f.read_before_write_cluster
                ),
            );
        }
    }
    for (i, prefix) in policy.routes.public_prefixes_covering_deeper_paths() {
        push("warning", format!("routes[{i}].path_prefix"), format!(
            "public prefix: every path below `{prefix}` is public too (`{}/...`), whatever `unmatched` says; use `path` for one exact path",
            prefix.trim_end_matches('/')
        ));
    }
    if policy.token.allow_bearer && !policy.token.allow_dpop {
        push(
            "warning",
            "token.schemes".into(),
            "Bearer only: tokens are not sender-constrained (FAPI 2.0 §5.3.3 wants DPoP or mTLS)"
                .into(),
        );
    }
    out
}

/// What the policy means, in short sentences (for `fapi-guard check` and the web page).
pub fn describe(policy: &Policy, doc: Option<&PolicyDoc>) -> Vec<String> {
    let mut out = Vec::new();
    out.push(format!(
        "API `{}`: tokens must carry the audience `{}`{}.",
        policy.api_name,
        policy.audience,
        if policy.sole_audience {
            " and no other"
        } else {
            ""
        }
    ));
    for iss in &policy.issuers {
        match &iss.keys {
            KeySource::Inline(_) => out.push(format!("Issuer `{}`: keys inline in the policy.", iss.issuer)),
            KeySource::Remote(r) => out.push(format!(
                "Issuer `{}`: keys fetched from {} through the Envoy cluster `{}`, every {} s and on an unknown kid (at most every {} s).",
                iss.issuer, r.uri, r.cluster, r.refresh_seconds, r.min_refetch_seconds
            )),
        }
    }
    let mut schemes = Vec::new();
    if policy.token.allow_dpop {
        schemes.push("DPoP");
    }
    if policy.token.allow_bearer {
        schemes.push("Bearer");
    }
    let algs: Vec<&str> = policy.token.algs.iter().map(|a| a.name()).collect();
    out.push(format!(
        "Token: `Authorization: {}`, a JWT access token (typ at+jwt{}) signed with {}, with the claims iss, sub, client_id, jti, exp, iat, aud (RFC 9068 §2.2), clock skew {} s.",
        schemes.join("` or `"),
        if policy.token.allow_typ_jwt { " or JWT" } else { "" },
        algs.join(", "),
        policy.token.skew_seconds
    ));
    if let Some(routes) = doc.and_then(|d| d.routes.as_ref()) {
        for r in routes {
            let m = if r.methods.is_empty() {
                "any method".to_string()
            } else {
                r.methods.join(", ")
            };
            let what = match r.require {
                Requirement::None => "public (no token, no checks)",
                Requirement::Token => "needs a token",
            };
            out.push(format!("Route {} ({m}): {what}.", r.describe_matcher()));
        }
    }
    out.push(match policy.unmatched {
        crate::routes::Unmatched::TokenOnly => {
            "Every other path needs a valid token (first matching route wins; no match = token; `unmatched: deny` refuses it instead)."
        }
        crate::routes::Unmatched::Deny => {
            "Every other path is refused (`unmatched: deny`: 403 `route_not_listed`, before the token is read)."
        }
    }
    .into());
    let dp = policy.dpop.clone().unwrap_or_default();
    if dp.required {
        out.push(format!(
            "DPoP: required on every protected request: a fresh proof (algs {}) bound to the token's cnf.jkt, iat within {} s before / {} s after the proxy clock, each jti once.",
            dp.algs.iter().map(|a| a.name()).collect::<Vec<_>>().join(", "), dp.iat_past, dp.iat_future
        ));
    } else {
        out.push(
            "DPoP: checked for DPoP-bound tokens; unbound Bearer tokens pass without a proof."
                .into(),
        );
    }
    if !dp.public_origins.is_empty() || !dp.stripped_path_prefix.is_empty() {
        out.push(format!(
            "DPoP htu: public origin {} with the prefix `{}` a gateway strips.",
            dp.public_origins
                .iter()
                .map(|o| o.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            dp.stripped_path_prefix
        ));
    }
    if dp.nonce.is_some() {
        out.push("DPoP nonces: on (401 use_dpop_nonce with a DPoP-Nonce header until the proof carries a current one).".into());
    }
    match &policy.fhir {
        None => out.push("FHIR: no `fhir` section, so no scope or compartment checks (the FHIR scope filter refuses to load without it).".into()),
        Some(f) => {
            out.push(format!(
                "FHIR API under `{}` serving {}.",
                f.base_path,
                f.resource_types.join(", ")
            ));
            out.push(format!(
                "SMART scope contexts accepted: {}; the patient in context comes from the claim `{}`.",
                f.contexts.iter().map(|c| c.name()).collect::<Vec<_>>().join(", "),
                f.patient_claim
            ));
            out.push(format!(
                "Scopes needed: SMART v1/v2 `<context>/<Type>.<permissions>` for the interaction (read/search need r/s, create c, update u, delete d; `{}/*.rs` reads everything in the patient's compartment).",
                f.contexts.first().map(|c| c.name()).unwrap_or("patient")
            ));
            out.push("patient/ grants: only the patient's own compartment; reads by id the request cannot decide are checked on the response body; writes by id read the stored resource first.".into());
            if !f.patient_shared_types.is_empty() {
                out.push(format!("Shared with every patient: {}.", f.patient_shared_types.join(", ")));
            }
            for o in &f.operations {
                out.push(format!("Operation `${}` needs `{}`{}.", o.name.trim_start_matches('$'), o.perms.letters(), if o.all_types { " on every type" } else { "" }));
            }
            if f.operations.is_empty() {
                out.push("No $operations allowed.".into());
            }
            out.push(format!(
                "A foreign resource is answered {}.",
                if f.hide_foreign_as_not_found { "404 (hidden)" } else { "403" }
            ));
        }
    }
    out
}
