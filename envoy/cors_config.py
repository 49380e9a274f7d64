"""The policy's `cors` section as proxy configuration (policies/schema/policy.schema.json
`cors`; filters/core/src/cors.rs validates it at load).

The guard's filters do not act on `cors`: Envoy's own CORS filter (`envoy.filters.http.cors`),
placed BEFORE the Wasm filters, answers a browser's preflight (`OPTIONS` with `Origin` and
`Access-Control-Request-Method`, which never carries the token: Fetch standard, "CORS-preflight
request") from an allowed origin itself, and adds `Access-Control-Allow-Origin` and
`Access-Control-Expose-Headers` to every answer to that origin, the guard's 401/403 included, so
the app can read them. A preflight from any other origin is not answered by CORS and reaches
the guard as a protected request (401).

Used by envoy/render.py (the connection manager and its virtual host) and tools/gen_wasmplugins.py
(an Istio EnvoyFilter for a sidecar's inbound listener, `istio_patches`). Only the standard library.
"""
from __future__ import annotations

import json
from pathlib import Path

FILTER_NAME = "envoy.filters.http.cors"
_SCHEMA = Path(__file__).resolve().parent.parent / "policies" / "schema" / "policy.schema.json"


def _defaults() -> dict:
    """The defaults of the optional fields: one place, the policy schema."""
    props = json.loads(_SCHEMA.read_text(encoding="utf-8"))["properties"]["cors"]["properties"]
    return {k: v["default"] for k, v in props.items() if "default" in v}


def settings(policy: dict) -> dict | None:
    """The policy's `cors` section with the schema's defaults filled in; None without one."""
    cors = policy.get("cors")
    if not isinstance(cors, dict):
        return None
    return {**_defaults(), **cors}


def http_filter() -> dict:
    """The CORS HTTP filter; its settings come per virtual host ([`route_policy`])."""
    return {"name": FILTER_NAME,
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}}


def route_policy(s: dict) -> dict:
    """`envoy.extensions.filters.http.cors.v3.CorsPolicy` (the per-route config of the CORS filter;
    the route-level `envoy.config.route.v3.CorsPolicy` is deprecated and not accepted here) for
    `typed_per_filter_config` (settings `s`). Origins
    match exactly (no wildcard, no regex); the preflight is answered, never forwarded."""
    p = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
        "allow_origin_string_match": [{"exact": o} for o in s["allowed_origins"]],
        "allow_methods": ",".join(s["allowed_methods"]),
        "allow_headers": ",".join(s["allowed_headers"]),
        "max_age": str(s["max_age_seconds"]),
        "allow_credentials": bool(s["allow_credentials"]),
    }
    if s["exposed_headers"]:
        p["expose_headers"] = ",".join(s["exposed_headers"])
    return p


def virtual_host_config(policy: dict) -> dict:
    """The virtual host's `typed_per_filter_config` for `policy` ({} without `cors`)."""
    s = settings(policy)
    return {"typed_per_filter_config": {FILTER_NAME: route_policy(s)}} if s else {}


def _origin_filter(s: dict) -> dict:
    """An access-log filter (what local-reply mappers match on): `Origin` is an allowed origin."""
    one = [{"header_filter": {"header": {"name": "origin", "string_match": {"exact": o}}}}
           for o in s["allowed_origins"]]
    return one[0] if len(one) == 1 else {"or_filter": {"filters": one}}


def local_reply_config(s: dict) -> dict:
    """The connection manager's `local_reply_config`: the CORS headers on every reply Envoy
    makes itself to an allowed origin. Needed for the guard's denials made on the RESPONSE (a
    read decided on its body): Envoy sends those straight to the client (FilterManager
    sendDirectLocalReply), past the CORS filter's encoder, so the mapper adds them instead."""
    add = [("access-control-allow-origin", "%REQ(origin)%")]
    if s["exposed_headers"]:
        add.append(("access-control-expose-headers", ",".join(s["exposed_headers"])))
    if s["allow_credentials"]:
        add.append(("access-control-allow-credentials", "true"))
    return {"mappers": [{
        "filter": _origin_filter(s),
        "headers_to_add": [{"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
                           for k, v in add],
    }]}


def hcm_config(policy: dict) -> dict:
    """The connection manager's fields for `policy` ({} without `cors`)."""
    s = settings(policy)
    return {"local_reply_config": local_reply_config(s)} if s else {}


HCM = "envoy.filters.network.http_connection_manager"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def istio_patches(policy: dict, ports: list) -> list[dict]:
    """The `configPatches` of an Istio EnvoyFilter doing in a sidecar's inbound listener what
    render.py does (tools/gen_wasmplugins.py): per port (None: every inbound port) the CORS
    filter INSERT_FIRST (before the AUTHN-phase WasmPlugins), the local-reply mapper MERGEd into
    the connection manager, and the CORS policy MERGEd into the inbound virtual hosts. A
    VirtualService `corsPolicy` does not reach a sidecar's inbound listener."""
    def listener(port):
        return {"filterChain": {"filter": {"name": HCM}}, **({"portNumber": port} if port is not None else {})}

    patches = [{"applyTo": "HTTP_FILTER", "match": {"context": "SIDECAR_INBOUND", "listener": listener(p)},
                "patch": {"operation": "INSERT_FIRST", "value": http_filter()}} for p in ports]
    patches += [{"applyTo": "NETWORK_FILTER", "match": {"context": "SIDECAR_INBOUND", "listener": listener(p)},
                 "patch": {"operation": "MERGE", "value": {"typed_config": {"@type": HCM_TYPE, **hcm_config(policy)}}}}
                for p in ports]
    patches += [{"applyTo": "VIRTUAL_HOST",
                 "match": {"context": "SIDECAR_INBOUND", **({"routeConfiguration": {"portNumber": p}} if p is not None else {})},
                 "patch": {"operation": "MERGE", "value": virtual_host_config(policy)}} for p in ports]
    return patches

