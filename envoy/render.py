#!/usr/bin/env python3
"""Renders the Envoy bootstrap that runs the FAPI guard filters in front of an API.

One source for every Envoy config the project uses: the committed examples in envoy/,
the demo, and each end-to-end test render through here, so they cannot drift apart.

The chain is shaped like an Istio sidecar's inbound listener with the filters in the
AUTHN phase: ONE plugin, the one module `fapi_guard.wasm` (filters/guard) attached as the chain
plugin (root id `fapi_guard`), whose steps token -> dpop -> fhir_scope run in one HTTP context
(docs/checks.md, "One module") -> router -> cluster `api`. Which steps run follows from the
policy (`policy_steps`): token and DPoP always, fhir_scope only with a `fhir` section; the
plugin's root id then names them (`fapi_guard:token,dpop`; filters/core/src/root_id.rs).
--filters picks a subset, and a step the policy cannot run is refused. The plugin is
`envoy.filters.http.wasm` on V8 with the API's policy JSON as its configuration (what
Istio makes of a WasmPlugin's `pluginConfig`) and `fail_open: false` (WasmPlugin
`failStrategy: FAIL_CLOSE`).

Usage: render.py --policy policies/x.json [--filters token,dpop[,fhir_scope]]
                 [--wasm-dir target/wasm32-wasip1/release] [--listen-port 10000]
                 [--upstream-port 8080] [--admin-port 9901] [--jwks-address HOST:PORT]
                 [--tls-cert F --tls-key F [--client-ca F]] [--vm-env K=V ...]
                 [--direct-response] [--forward-client-cert MODE]
                 [--out FILE]
       render.py --gateway [--listen-port 8443] [--admin-port 9902] [--sidecar-port 10000]
                 --tls-cert F --tls-key F [--client-ca F] [--public-prefix /api]
                 [--internal-authority HOST:PORT] [--out FILE]
       render.py --all          # every config committed under envoy/

--gateway renders the edge gateway of the two-proxy local topology (TLS, optional client
certificates, the public prefix stripped, an internal :authority, XFCC SANITIZE_SET) in
front of a sidecar rendered with --forward-client-cert ALWAYS_FORWARD_ONLY.

--jwks-address HOST:PORT sends every JWKS cluster there instead of the `jwks_uri` host (local
tests and the demo's JWKS server); --jwks-plain makes those clusters plain HTTP even for an
https `jwks_uri` (the policy stays unchanged: the filters still fetch its `jwks_uri` path).

--vm-env sets a Wasm VM environment variable on the plugin (Envoy
`vm_config.environment_variables.key_values`; e.g. FAPI_GUARD_VERIFIER=software).
(--one-module and --one-plugin, the other layouts of earlier versions, are refused with a
message naming the one layout.)
--direct-response makes the route answer 200 itself instead of proxying to `api`
(benchmarks: measure the filters, not an upstream).

A policy with a `cors` section gets Envoy's CORS filter before the Wasm filters and the
virtual host's CORS policy (envoy/cors_config.py): an allowed origin's preflight is answered
by Envoy without reaching the guard, and every answer to that origin, denials included,
carries the Access-Control-* headers (the connection manager's local-reply mapper adds them to
the denials Envoy sends past the CORS filter).

Every connection manager normalises the path before any filter or route sees it
(PATH_NORMALISATION: RFC 3986 dot-segments, merged slashes, `%2F`/`%5C` refused); the
filters still refuse any path that is not canonical themselves (docs/checks.md, "Path
canonicalisation"). --no-path-normalization leaves it out (tests only: shows the filters
refuse on their own).

Every connection manager also bounds how long a client may take to send a request
(STREAM_TIMEOUTS: `request_headers_timeout`, `request_timeout`, `stream_idle_timeout`):
the FHIR scope filter holds a body-decided request until its body is complete, and a client
that sends half a body and stalls must get 408 in seconds, not hold a stream for Envoy's
default 300 s idle (docs/platform-guide.md, "Failure modes"). RenderOptions sets each one;
None leaves Envoy's default.

Every sidecar's `stats_config` turns the reason code, the JWKS issuer and the API's name into
Prometheus labels (envoy/stats_config.py; docs/platform-guide.md, "Metrics").
"""
import argparse
import dataclasses
import json
import sys
from pathlib import Path
from urllib.parse import urlsplit

# envoy/cors_config.py, beside this file, whoever imports render (bench, tools, tests).
sys.path.insert(0, str(Path(__file__).resolve().parent))
import cors_config  # noqa: E402  (the policy's `cors` section as Envoy config)
import stats_config  # noqa: E402  (metric labels: reason, issuer, api)

# The one registry (filters/registry.json): the one module and its chain steps, here by their
# chain names.
_REGISTRY = json.loads((Path(__file__).resolve().parent.parent / "filters" / "registry.json").read_text())
REGISTRY = _REGISTRY["steps"]
# The one module (filters/guard): its file, vm_id and the chain plugin's root id.
MODULE = _REGISTRY["module"]
ORDER = [f["envoy"] for f in REGISTRY]
# The filter that needs the policy's `fhir` section (it refuses to load without one).
FHIR_STEP = "fhir_scope"


def policy_steps(policy):
    """The filters a policy runs, in chain order: token and DPoP for every API, the FHIR scope
    step only with a `fhir` section (a plain REST API has none). The one answer to "which
    filters" for render, the demo, tools/gen_wasmplugins.py, bench/run.py (and the Rust
    `explain::chain`, which tests/e2e/test_cli.py holds to the same answer)."""
    return [f for f in ORDER if f != FHIR_STEP or isinstance(policy.get("fhir"), dict)]


def checked_steps(policy, filters, field="--filters"):
    """`filters` (chain step names, any order) in chain order, or `policy_steps(policy)` for
    None. A step the policy cannot run is refused here, naming `field`, instead of a proxy that
    refuses its configuration (the FHIR scope step fails closed without `fhir`)."""
    if filters is None:
        return policy_steps(policy)
    unknown = [f for f in filters if f not in ORDER]
    if unknown:
        raise ValueError(f"{field}: unknown filter(s) {unknown}; known: {ORDER}")
    steps = [f for f in ORDER if f in filters]
    cannot = [f for f in steps if f not in policy_steps(policy)]
    if cannot:
        raise ValueError(f"{field}: {', '.join(cannot)} needs the policy field `fhir` (the FHIR scope filter "
                         f"refuses a policy without it); this policy runs {policy_steps(policy)}: leave "
                         f"{field} out to run what the policy configures")
    return steps


@dataclasses.dataclass(frozen=True)
class RenderOptions:
    """Everything about a sidecar render besides the policy, filters, Wasm directory and ports.

    `forward_client_cert`: the connection manager's `forward_client_cert_details`, for a
    sidecar that learns the client certificate from the gateway's `x-forwarded-client-cert`
    (policy `dpop.mtls.client_cert_source: xfcc`). Envoy's default, SANITIZE, drops XFCC.
    `normalize_paths=False` leaves out PATH_NORMALISATION (tests: the filters alone refuse).
    `jwks_plain`: every `jwks_uri` cluster speaks plain HTTP (the demo's local JWKS server).
    `request_headers_timeout`, `request_timeout`, `stream_idle_timeout`: the connection
    manager's stream timeouts (defaults STREAM_TIMEOUTS; None = Envoy's default).
    `audit_log`: a JSON access log on the connection manager with the guard's audit record
    (`audit_log_config`; docs/audit.md): a file path, or `stdout`.
    `check_steps=False` renders a filter the policy cannot run (tests only: shows the filter
    itself refuses such a policy, fail closed)."""
    jwks_address: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    client_ca: str | None = None
    vm_env: dict | None = None
    direct_response: bool = False
    forward_client_cert: str | None = None
    alpn: list | None = None
    http1_trailers: bool = False
    upstream_h2: bool = False
    normalize_paths: bool = True
    jwks_plain: bool = False
    request_headers_timeout: str | None = "10s"
    request_timeout: str | None = "30s"
    stream_idle_timeout: str | None = "30s"
    check_steps: bool = True
    audit_log: str | None = None
    replay_store_address: str | None = None


# Envoy HCM path normalisation (CVE-2019-9901, CVE-2021-29492; Envoy's edge best practices):
# the filters, the route and the upstream then all see one path. Escaped slashes are
# refused rather than unescaped and redirected: FHIR paths never hold `%2F`/`%5C`, and a
# redirect would send a DPoP client to a URL its proof (`htu`) does not name.
PATH_NORMALISATION = {
    "normalize_path": True,
    "merge_slashes": True,
    "path_with_escaped_slashes_action": "REJECT_REQUEST",
}


# Envoy HCM stream timeouts (Envoy's edge best practices; docs/checks.md "Slow requests"). Envoy's
# defaults are no request timeout and a 300 s stream idle timeout, so a client that sends a
# body-decided request's body slowly (the FHIR scope filter holds it until it is complete)
# would hold a stream for minutes. With these, it gets 408 and nothing reaches the upstream.
# - request_headers_timeout 10 s: the whole header block (slow-loris on headers);
# - request_timeout 30 s: the whole request, headers and body, until it goes upstream, which
#   includes the time a filter holds it (JWKS refetch on an unknown kid, `jwks_fetch_timeout_ms`
#   default 2 s; the read before write). Above every decision the filters wait for by default;
#   a policy with `jwks_fetch_timeout_ms` above 30 s is cut at 30 s (408, fail closed);
# - stream_idle_timeout 30 s: no bytes either way on a stream (a stalled body, a stalled
#   upstream answer beyond the route's 15 s timeout).
# In Istio the sidecar's HCM is not rendered here: docs/platform-guide.md shows the
# EnvoyFilter that sets the same three fields on the inbound connection manager.
STREAM_TIMEOUTS = {
    "request_headers_timeout": "10s",
    "request_timeout": "30s",
    "stream_idle_timeout": "30s",
}


def stream_timeouts(o):
    """The HCM stream timeouts from RenderOptions `o` (None leaves Envoy's default)."""
    t = {"request_headers_timeout": o.request_headers_timeout, "request_timeout": o.request_timeout,
         "stream_idle_timeout": o.stream_idle_timeout}
    return {k: v for k, v in t.items() if v is not None}


def chain_name(steps):
    """The chain plugin's root id for `steps` (filters of ORDER): `fapi_guard` for the whole
    chain, else `fapi_guard:<steps>` (filters/core/src/root_id.rs)."""
    steps = [f for f in ORDER if f in steps]
    return MODULE["chain_root_id"] + ("" if steps == ORDER else ":" + ",".join(steps))


def wasm_filter(steps, policy_json, wasm_dir, vm_env=None):
    """The one wasm filter: the chain plugin from the one module running `steps` (of ORDER)."""
    if not steps:
        raise ValueError("the chain plugin needs at least one step (token, dpop, fhir_scope)")
    root_id = chain_name(steps)
    vm_id, wasm = MODULE["vm_id"], MODULE["wasm"]
    # The FHIR scope step reads bodies.
    reads_bodies = FHIR_STEP in steps
    f = {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": root_id,
                "root_id": root_id,
                "fail_open": False,
                # Let a Pause from on_http_{request,response}_headers hold the headers while
                # the body is still delivered to the plugin (proxy-wasm-cpp-host #434). The
                # FHIR scope step needs it to read bundles and check responses before any of
                # them is forwarded (the chain plugin holds body that arrives while an earlier
                # step decides, and hands it to its FHIR scope step).
                **({"allow_on_headers_stop_iteration": True} if reads_bodies else {}),
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": policy_json,
                },
                "vm_config": {
                    "vm_id": vm_id,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": f"{wasm_dir}/{wasm}"}},
                },
            },
        },
    }
    if vm_env:
        f["typed_config"]["config"]["vm_config"]["environment_variables"] = {"key_values": dict(vm_env)}
    return f


def address(host, port):
    return {"socket_address": {"address": host, "port_value": int(port)}}


def cluster(name, host, port, tls_sni=None):
    is_ip = host.replace(".", "").isdigit() or ":" in host
    c = {
        "name": name,
        "type": "STATIC" if is_ip else "STRICT_DNS",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address(host, port)}}]}],
        },
    }
    if tls_sni:
        c["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": tls_sni,
            },
        }
    return c


def jwks_clusters(policy, jwks_address, jwks_plain=False):
    """A cluster per issuer `jwks_cluster`, reaching the `jwks_uri` host (or an override).
    `jwks_plain`: plain HTTP even for an https `jwks_uri` (the demo's local JWKS server)."""
    out, seen = [], set()
    for issuer in policy.get("issuers", []):
        uri, name = issuer.get("jwks_uri"), issuer.get("jwks_cluster")
        if not uri or not name or name in seen:
            continue
        seen.add(name)
        parts = urlsplit(uri)
        https = parts.scheme == "https"
        host, port = parts.hostname, parts.port or (443 if https else 80)
        if jwks_address:
            host, port = jwks_address.rsplit(":", 1)
        out.append(cluster(name, host, port, parts.hostname if https and not jwks_plain else None))
    return out


def read_before_write_clusters(policy, upstream_port):
    """The cluster an Istio-deployed policy names for the FHIR scope filter's read before write:
    in the mesh, the loopback cluster tools/gen_wasmplugins.py adds with an EnvoyFilter
    (`fapi_guard_rbw_<api>`) or an Istio Service cluster (`outbound|...`). Here it reaches the
    same upstream as `api`. Any other name gets no cluster (as in the mesh: the read fails closed)."""
    fhir = policy.get("fhir") if isinstance(policy.get("fhir"), dict) else {}
    name = fhir.get("read_before_write_cluster", "api")
    if name.startswith("fapi_guard_rbw_") or name.startswith("outbound|"):
        return [cluster(name, "127.0.0.1", upstream_port)]
    return []


def replay_store_clusters(policy, replay_store_address):
    """`dpop.replay_scope: api` (docs/dpop.md, "Replay across replicas"): the cluster the guard
    claims proofs through (etcd's HTTP/JSON gateway, plain HTTP on loopback here; in the mesh a
    ServiceEntry names the store). Without an address none is rendered: every claim then fails
    closed (`dpop_replay_store_unavailable`)."""
    store = (policy.get("dpop") or {}).get("replay_store")
    if (policy.get("dpop") or {}).get("replay_scope") != "api" or not store or not replay_store_address:
        return []
    host, port = replay_store_address.rsplit(":", 1)
    return [cluster(store["cluster"], host, port)]


def downstream_tls(cert, key, client_ca, alpn=None):
    ctx = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context": {
            "tls_certificates": [{"certificate_chain": {"filename": cert}, "private_key": {"filename": key}}],
        },
    }
    if client_ca:
        # Ask for a client certificate (RFC 8705 binding is checked by the DPoP filter);
        # requests without one still reach the filters, which decide.
        ctx["common_tls_context"]["validation_context"] = {"trusted_ca": {"filename": client_ca}}
    if alpn:
        ctx["common_tls_context"]["alpn_protocols"] = list(alpn)
    return {"name": "envoy.transport_sockets.tls", "typed_config": ctx}


# The guard writes its audit record (docs/audit.md) as the Wasm property `fapi_guard.audit`;
# Envoy's Wasm host keeps a property `p` as filter state `wasm.p`, which the access log's
# FILTER_STATE command reads (PLAIN: the bytes as set, here a JSON object). With
# `json_format` and `json_format_options` unset, Envoy writes the record as an escaped string;
# docs/audit.md "Reading the log" parses it (tools/audit_to_fhir.py does).
AUDIT_FIELDS = {
    "start_time": "%START_TIME%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "method": "%REQ(:METHOD)%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "duration_ms": "%DURATION%",
    "upstream_host": "%UPSTREAM_HOST%",
    "client_address": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    "fapi_guard_audit": "%FILTER_STATE(wasm.fapi_guard.audit:PLAIN)%",
}


def audit_log_config(where):
    """The HCM `access_log` entry for the audit record: a file, or `stdout`."""
    fmt = {"json_format": AUDIT_FIELDS}
    if where == "stdout":
        return {"name": "envoy.access_loggers.stdout", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": fmt}}
    return {"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": where, "log_format": fmt}}


def stream_options(hcm, clusters, http1_trailers=False, upstream_h2=False):
    """Options for the trailer tests (tests/e2e/test_trailers.py), off by default:
    `http1_trailers` makes the HTTP/1 codecs surface chunked trailers (Envoy drops them
    unless `enable_trailers`), on the listener and on cluster `api`; `upstream_h2` makes
    cluster `api` speak HTTP/2 (prior knowledge) to the API."""
    api = next(c for c in clusters if c["name"] == "api")
    if http1_trailers:
        hcm["http_protocol_options"] = {"enable_trailers": True}
    if http1_trailers or upstream_h2:
        http = {"http2_protocol_options": {}} if upstream_h2 else {"http_protocol_options": {"enable_trailers": True}}
        api["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": http}}


def render(policy, filters, wasm_dir, listen_port, upstream_port, admin_port, options=None, **fields):
    """The sidecar bootstrap. `filters`: chain names, or None for what the policy runs
    (`policy_steps`); ValueError for one the policy cannot run. Options come as a `RenderOptions` and/or as its field names by
    keyword (`render(..., jwks_address="127.0.0.1:8082", vm_env={...})`), never by position."""
    if options is not None and not isinstance(options, RenderOptions):
        raise TypeError("render(): options are a RenderOptions or keywords, not positional values")
    o = dataclasses.replace(options or RenderOptions(), **fields)
    jwks_address, tls_cert, tls_key, client_ca = o.jwks_address, o.tls_cert, o.tls_key, o.client_ca
    vm_env, direct_response, forward_client_cert, alpn = o.vm_env, o.direct_response, o.forward_client_cert, o.alpn
    http1_trailers, upstream_h2, normalize_paths = o.http1_trailers, o.upstream_h2, o.normalize_paths
    jwks_plain = o.jwks_plain
    steps = checked_steps(policy, filters) if o.check_steps else [f for f in ORDER if f in (filters or ORDER)]
    policy_json = json.dumps(policy, separators=(",", ":"), ensure_ascii=False)
    api = policy.get("api", {}).get("name", "api")
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": f"inbound_{api}",
        "codec_type": "AUTO",
        **(PATH_NORMALISATION if normalize_paths else {}),
        **stream_timeouts(o),
        **({"forward_client_cert_details": forward_client_cert} if forward_client_cert else {}),
        **cors_config.hcm_config(policy),
        "route_config": {
            "name": "inbound",
            "virtual_hosts": [{
                "name": "api",
                "domains": ["*"],
                **cors_config.virtual_host_config(policy),
                "routes": [{"match": {"prefix": "/"},
                            **({"direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}
                               if direct_response else {"route": {"cluster": "api", "timeout": "15s"}})}],
            }],
        },
        # Envoy's CORS filter first: it answers an allowed origin's preflight before the guard
        # (a preflight carries no token) and marks every answer, denials included.
        "http_filters": ([cors_config.http_filter()] if cors_config.settings(policy) else [])
        # No steps, no plugin: a bare proxy (the benchmark's baseline, the verifier probes).
        + ([wasm_filter(steps, policy_json, wasm_dir, vm_env)] if steps else [])
        + [{"name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    if o.audit_log:
        hcm["access_log"] = [audit_log_config(o.audit_log)]
    chain = {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
    if tls_cert:
        chain["transport_socket"] = downstream_tls(tls_cert, tls_key, client_ca, alpn)
    clusters = ([cluster("api", "127.0.0.1", upstream_port)] + read_before_write_clusters(policy, upstream_port)
                + jwks_clusters(policy, jwks_address, jwks_plain)
                + replay_store_clusters(policy, o.replay_store_address))
    stream_options(hcm, clusters, http1_trailers, upstream_h2)
    return {
        "admin": {"address": address("127.0.0.1", admin_port)},
        # Reasons, issuers and the API's name as labels (envoy/stats_config.py).
        "stats_config": stats_config.stats_config(policy),
        "static_resources": {
            "listeners": [{"name": "virtualInbound", "address": address("127.0.0.1", listen_port),
                           "filter_chains": [chain]}],
            "clusters": clusters,
        },
    }


# The configs committed under envoy/ (regenerate all: render.py --all). Each is checked by
# tests/test_envoy_configs.py: same as a fresh render, and `envoy --mode validate` passes
# (which also loads the Wasm filters and their policy).
#
# The two-proxy local topology (scripts/demo.sh --gateway, tests/e2e/test_two_proxy.py):
# gateway-edge.yaml (TLS on :8443 with client certificates, certificates from
# `tools/dev_pki.py --dir run/pki`) in front of sidecar-behind-gateway.yaml (:10000). The
# sidecar forwards the gateway's XFCC with ALWAYS_FORWARD_ONLY because the local hop is plain
# HTTP on loopback; in Istio that hop is mesh mTLS and the sidecar's APPEND_FORWARD keeps it
# (docs/platform-guide.md, "Local two-proxy topology").
DEV_PKI = "run/pki"
COMMITTED = [
    ("envoy/sidecar-demo.yaml", "policies/demo-fhir-api.json", ["--upstream-port", "8080"]),
    ("envoy/sidecar-helseid.yaml", "policies/helseid-sample-api.json", ["--upstream-port", "8080"]),
    ("envoy/sidecar-smart.yaml", "policies/smart-patient-api.json", ["--upstream-port", "8080"]),
    ("envoy/sidecar-behind-gateway.yaml", "policies/demo-fhir-api-gateway.json",
     ["--listen-port", "10000", "--upstream-port", "8080", "--forward-client-cert", "ALWAYS_FORWARD_ONLY"]),
    ("envoy/gateway-edge.yaml", None,
     ["--gateway", "--listen-port", "8443", "--admin-port", "9902", "--sidecar-port", "10000",
      "--tls-cert", f"{DEV_PKI}/server.pem", "--tls-key", f"{DEV_PKI}/server-key.pem", "--client-ca", f"{DEV_PKI}/ca.pem"]),
]

def render_gateway(listen_port, admin_port, sidecar_port, tls_cert, tls_key, client_ca=None,
                   public_prefix="/api", internal_authority="fhir-api.fhir.svc.cluster.local:8080"):
    """An edge gateway in front of the sidecar, as in a mesh with an ingress gateway:
    TLS (and optional client certificates) at the edge; the public path prefix stripped
    (`/api/fhir/...` -> `/fhir/...`); the sidecar sees an internal `:authority`; the client
    certificate travels only as `x-forwarded-client-cert` (SANITIZE_SET: a client-sent XFCC
    is dropped, the gateway sets its own with `Hash=`); `x-forwarded-proto`/`-host`/`-prefix`
    are set by the gateway alone (client-sent values are replaced), so the sidecar may trust
    them (policy `dpop.trust_forwarded_headers`)."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "edge",
        "codec_type": "AUTO",
        **PATH_NORMALISATION,
        **STREAM_TIMEOUTS,
        "use_remote_address": True,
        "forward_client_cert_details": "SANITIZE_SET",
        "set_current_client_cert_details": {"uri": True},
        "route_config": {
            "name": "edge",
            "virtual_hosts": [{
                "name": "public",
                "domains": ["*"],
                "routes": [{
                    "match": {"prefix": public_prefix + "/"},
                    "route": {"cluster": "sidecar", "prefix_rewrite": "/", "host_rewrite_literal": internal_authority,
                              "append_x_forwarded_host": True, "timeout": "15s"},
                    # What the client sent in these is dropped (before the host rewrite appends
                    # the public host to X-Forwarded-Host), so a sidecar that trusts forwarded
                    # headers reads only what this gateway says.
                    "request_headers_to_remove": ["x-forwarded-host", "x-forwarded-prefix"],
                    "request_headers_to_add": [
                        {"header": {"key": "x-forwarded-proto", "value": "https"},
                         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
                        {"header": {"key": "x-forwarded-prefix", "value": public_prefix},
                         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
                    ],
                }],
            }],
        },
        "http_filters": [{"name": "envoy.filters.http.router",
                          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    chain = {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}],
             "transport_socket": downstream_tls(tls_cert, tls_key, client_ca)}
    return {
        "admin": {"address": address("127.0.0.1", admin_port)},
        "static_resources": {
            "listeners": [{"name": "edge", "address": address("127.0.0.1", listen_port), "filter_chains": [chain]}],
            "clusters": [cluster("sidecar", "127.0.0.1", sidecar_port)],
        },
    }


HEADER = """# GENERATED by envoy/render.py from {policy}; do not edit by hand.
# Regenerate: python3 envoy/render.py --all (or --policy {policy} --out {out} ...)
# Chain: {chain} -> router -> cluster `api` (127.0.0.1:{upstream}).
"""
HEADER_XFCC = """# forward_client_cert_details: {fcc} (the client certificate arrives as the gateway's XFCC).
"""
GATEWAY_HEADER = """# GENERATED by envoy/render.py --gateway; do not edit by hand.
# Regenerate: python3 envoy/render.py --all (or --gateway --out {out} ...)
# Edge gateway: TLS on 127.0.0.1:{port}{mtls}; strips {prefix};
# :authority {authority}; XFCC SANITIZE_SET; X-Forwarded-Proto/-Host/-Prefix
# set by the gateway alone -> sidecar 127.0.0.1:{sidecar}.
"""


def render_committed(root="."):
    """Renders every committed config; returns {path: text}."""
    out = {}
    for path, policy, args in COMMITTED:
        argv = (["--policy", policy] if policy else []) + ["--out", path] + args
        out[path] = render_text(parse_args(argv), root)
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--all", action="store_true", help="regenerate every config committed under envoy/")
    ap.add_argument("--gateway", action="store_true",
                    help="render the edge gateway (TLS, /api stripped, XFCC) in front of a sidecar, not a sidecar")
    ap.add_argument("--policy")
    ap.add_argument("--filters", help="the chain plugin's steps, a subset of what the policy runs (default: all of "
                    "them: token,dpop, and fhir_scope when the policy has `fhir`); root id fapi_guard:<steps>")
    ap.add_argument("--wasm-dir", default="target/wasm32-wasip1/release")
    ap.add_argument("--listen-port", type=int, help="default 10000 (sidecar), 8443 (--gateway)")
    ap.add_argument("--upstream-port", type=int, default=8080)
    ap.add_argument("--admin-port", type=int, help="default 9901 (sidecar), 9902 (--gateway)")
    ap.add_argument("--sidecar-port", type=int, default=10000, help="--gateway: where the sidecar listens")
    ap.add_argument("--public-prefix", default="/api", help="--gateway: the public path prefix it strips")
    ap.add_argument("--internal-authority", default="fhir-api.fhir.svc.cluster.local:8080",
                    help="--gateway: the :authority the sidecar sees")
    ap.add_argument("--jwks-address", help="HOST:PORT every JWKS cluster connects to (local tests)")
    ap.add_argument("--replay-store-address",
                    help="HOST:PORT of the replay store (dpop.replay_scope api: etcd's client URL)")
    ap.add_argument("--jwks-plain", action="store_true",
                    help="JWKS clusters without TLS even for https jwks_uris (with --jwks-address: the demo)")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--client-ca")
    ap.add_argument("--forward-client-cert", help="forward_client_cert_details, e.g. ALWAYS_FORWARD_ONLY (a sidecar behind the local gateway)")
    ap.add_argument("--vm-env", action="append", default=[], metavar="K=V",
                    help="Wasm VM environment variable for every filter (repeatable)")
    ap.add_argument("--direct-response", action="store_true", help="route answers 200 itself (benchmarks)")
    # Removed layouts: named in the error, not in --help.
    ap.add_argument("--one-module", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--one-plugin", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-path-normalization", action="store_true",
                    help="leave out the HCM path normalisation (tests only: the filters alone refuse)")
    ap.add_argument("--audit-log", metavar="PATH|stdout",
                    help="a JSON access log with the guard's audit record (docs/audit.md): a file path, or stdout")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    for flag, used in (("--one-module", a.one_module), ("--one-plugin", a.one_plugin)):
        if used:
            ap.error(f"{flag} was removed: the one module fapi_guard.wasm is always attached once, as the chain "
                     "plugin (root id fapi_guard); --filters picks its steps (e.g. --filters token,dpop: "
                     "root id fapi_guard:token,dpop)")
    if a.gateway:
        if a.policy:
            ap.error("--gateway renders no filters: no --policy")
        if not a.tls_cert:
            ap.error("--gateway needs --tls-cert and --tls-key (e.g. from tools/dev_pki.py)")
    elif not a.all and not a.policy:
        ap.error("--policy is required (or --all, or --gateway)")
    if a.listen_port is None:
        a.listen_port = 8443 if a.gateway else 10000
    if a.admin_port is None:
        a.admin_port = 9902 if a.gateway else 9901
    a.filter_list = None if a.filters is None else [f for f in a.filters.split(",") if f]
    if a.filter_list == []:
        ap.error("--filters: the chain plugin needs at least one step (token, dpop, fhir_scope)")
    unknown = [f for f in a.filter_list or [] if f not in ORDER]
    if unknown:
        ap.error(f"--filters: unknown filter(s) {unknown}; known: {ORDER}")
    if bool(a.tls_cert) != bool(a.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    a.vm_env_dict = {}
    for kv in a.vm_env:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            ap.error(f"--vm-env: expected K=V, got {kv!r}")
        a.vm_env_dict[k] = v
    return a


def render_text(a, root="."):
    import os

    import yaml  # here, not at the top: tools/gen_wasmplugins.py imports `policy_steps` with the stdlib alone

    if a.gateway:
        cfg = render_gateway(a.listen_port, a.admin_port, a.sidecar_port, a.tls_cert, a.tls_key, a.client_ca,
                             a.public_prefix, a.internal_authority)
        text = GATEWAY_HEADER.format(out=a.out or "-", port=a.listen_port, prefix=a.public_prefix,
                                     mtls=" (client certificates from " + a.client_ca + ")" if a.client_ca else "",
                                     authority=a.internal_authority, sidecar=a.sidecar_port)
        return text + yaml.safe_dump(cfg, sort_keys=False, width=120, allow_unicode=True)
    with open(os.path.join(root, a.policy), encoding="utf-8") as f:
        policy = json.load(f)
    filters = checked_steps(policy, a.filter_list)
    cfg = render(policy, filters, a.wasm_dir, a.listen_port, a.upstream_port, a.admin_port, RenderOptions(
        jwks_address=a.jwks_address, replay_store_address=a.replay_store_address, tls_cert=a.tls_cert, tls_key=a.tls_key, client_ca=a.client_ca,
        vm_env=a.vm_env_dict or None, direct_response=a.direct_response,
        forward_client_cert=a.forward_client_cert, normalize_paths=not a.no_path_normalization,
        jwks_plain=a.jwks_plain, audit_log=a.audit_log))
    text = HEADER.format(policy=a.policy, out=a.out or "-", chain=" -> ".join(f for f in ORDER if f in filters) + " (one plugin: root id "
                         + chain_name(filters) + ")", upstream=a.upstream_port)
    if a.forward_client_cert:
        text += HEADER_XFCC.format(fcc=a.forward_client_cert)
    return text + yaml.safe_dump(cfg, sort_keys=False, width=120, allow_unicode=True)


def main(argv=None):
    a = parse_args(argv)
    if a.all:
        for path, text in render_committed().items():
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            print(f"wrote {path}")
        return
    try:
        text = render_text(a)
    except (OSError, ValueError) as e:
        # Refused before Envoy sees it: the message names the field (policy_steps).
        sys.exit(f"render.py: --policy {a.policy}: {e}")
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
