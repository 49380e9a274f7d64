"""The guard's metric labels as Envoy `stats_config.stats_tags` (docs/platform-guide.md,
"Metrics").

The filters name a metric by dots, the label values included (filters/host/src/stats.rs,
filters/host/src/gauges.rs): `fapi_guard.token.denied.wrong_audience`,
`fapi_guard.token.jwks.keys.<issuer>`. Envoy files every metric a Wasm module defines under
its custom namespace `wasmcustom.`; a tag extractor (Envoy `config.metrics.v3.TagSpecifier`,
`regex`) then takes the label value out of the name: "The first capture group identifies the
portion of the name to remove. The second capture group ... will designate the value of the
tag". `/stats/prometheus` prints the rest as the metric name, so one family per filter and
outcome is left, with the reason a label:
`fapi_guard_token_denied{reason="wrong_audience"}`.

The API's name (`api.name` of the policy) is a `fixed_value` tag: one Envoy (a sidecar) runs
one policy, so every stat of that proxy belongs to that API, Envoy's own included. A fixed value
costs no regex per stat name and needs no change to the names the filters define (which Istio's
`proxyStatsMatcher` matches); the name itself cannot carry it without a filter change.

Used by envoy/render.py (the bootstrap) and tools/gen_wasmplugins.py (the Istio bootstrap patch).
Only the standard library.

In Istio the bootstrap is the agent's, so the same tags come as an EnvoyFilter patch
(`applyTo: BOOTSTRAP`, operation MERGE: istio/api networking/v1alpha3/envoy_filter.proto,
`ApplyTo.BOOTSTRAP`, "Applies the patch to bootstrap configuration"). Istio applies bootstrap
patches only when the agent fetches its bootstrap from istiod (`BOOTSTRAP_XDS_AGENT=true`,
istio.io pilot-agent reference, "Environment variables"), and keeps only the stats its
`proxyStatsMatcher` lists (istio.io "Envoy Statistics"): both go in the pod's
`proxy.istio.io/config` annotation (ISTIO_PROXY_CONFIG). The patch carries the tags only, not
`use_all_default_tags`: Istio's bootstrap sets it false and lists its own tags, which a merge
keeps (repeated fields are appended).
"""
from __future__ import annotations

# The namespace Envoy files Wasm metrics under (Envoy source/extensions/common/wasm/
# stats_handler.h, `CustomStatNamespace`); tag extractors see the name with it.
NAMESPACE = "wasmcustom"
FILTERS = ("token", "dpop", "fhir_scope")

# (label, regex over the Envoy stat name). RE2 syntax (Envoy's regex engine). The filter stays in
# the name (`fapi_guard_<filter>_denied`); the label value is the last name element(s).
TAGS = [
    # fapi_guard.<filter>.denied.<reason> and .shadow_denied.<reason> (reason codes are
    # [a-z0-9_], docs/reason-codes.md).
    ("reason", r"^wasmcustom\.fapi_guard\.(?:token|dpop|fhir_scope)\.(?:shadow_)?denied(\.([a-z0-9_]+))$"),
    # Envoy's own per-plugin Wasm stats, wasm.<plugin>.vm_reload{,_success,_failure,_backoff}
    # (the plugin's `name`): `envoy_wasm_vm_reload_failure{plugin="fapi_token"}`.
    ("plugin", r"^wasm\.((.+)\.)vm_reload(?:_[a-z]+)?$"),
    # fapi_guard.token.jwks.<counter or gauge>.<issuer>: the issuer identifier, dots and all,
    # is the rest (filters/host/src/jwks.rs, gauges.rs).
    ("issuer", r"^wasmcustom\.fapi_guard\.token\.jwks\.(?:fetch_ok|fetch_failed|refused_too_large"
               r"|refused_too_many_keys|keys|last_success_timestamp_seconds"
               r"|last_failure_timestamp_seconds)(\.(.+))$"),
]


def stats_tags(policy: dict) -> list[dict]:
    """`stats_config.stats_tags` of a proxy running `policy`."""
    tags = [{"tag_name": name, "regex": rx} for name, rx in TAGS]
    api = policy.get("api", {}).get("name")
    if api:
        tags.append({"tag_name": "api", "fixed_value": api})
    return tags


def stats_config(policy: dict) -> dict:
    """The bootstrap's `stats_config`: the guard's tags next to Envoy's default ones."""
    return {"stats_tags": stats_tags(policy), "use_all_default_tags": True}


# What the pods need in their `proxy.istio.io/config` annotation (ProxyConfig): the agent builds
# its bootstrap through istiod, so the BOOTSTRAP patch applies, and Envoy keeps the guard's
# stats and Envoy's own Wasm stats (`wasm.`), which Istio's default matcher drops.
ISTIO_PROXY_CONFIG = {
    "proxyMetadata": {"BOOTSTRAP_XDS_AGENT": "true"},
    "proxyStatsMatcher": {"inclusionPrefixes": [f"{NAMESPACE}.fapi_guard", "wasm."]},
}


def istio_bootstrap_patch(policy: dict) -> list[dict]:
    """EnvoyFilter `configPatches`: the guard's stats tags merged into the agent's bootstrap."""
    return [{"applyTo": "BOOTSTRAP",
             "patch": {"operation": "MERGE", "value": {"stats_config": {"stats_tags": stats_tags(policy)}}}}]
