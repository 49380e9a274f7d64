#!/usr/bin/env python3
"""Generate Istio WasmPlugin manifests from the API policies: one source of truth.

For every policy `<root>/<api>.json` that has a deployment file `<root>/deploy/<api>.json`,
writes `<root>/deploy/generated/<api>.yaml` with ONE WasmPlugin `<api>-guard`: the one module
`fapi_guard.wasm` (image `guard`) attached as the chain plugin. Roots: `policies/` (the real
APIs) and `kind-cluster/policies/` (the kind demo's API). The WasmPlugin has:

  phase AUTHN, priority 300 (registry `module.istio_priority`; Istio runs higher first),
  failStrategy FAIL_CLOSE, type HTTP, url oci://<registry>/<repository>/guard:<tag>,
  sha256 = the image manifest digest from the lock file (what Istio checks for oci:// URLs),
  pluginName `fapi_guard` (all steps: token, dpop, fhir_scope), or `fapi_guard:<steps>` for the
  steps the policy runs or the deploy file names (filters/core/src/root_id.rs),
  pluginConfig = the policy document, unchanged.

The deployment file (not the policy: the filters refuse unknown policy fields) says where:
  {
    "namespace": "fhir",
    "selector": {"app": "hapi-fhir"},            # or "target_refs": [{"kind": "Service", "name": "..."}]
    "image": {"registry": "kind-registry:5000", "repository": "fapi-guard", "tag": "0.1.0"},
    "match_ports": [8080],                        # optional: only these inbound ports
    "image_pull_policy": "IfNotPresent",          # optional
    "filters": ["token", "dpop", "fhir-scope"],   # optional: the chain plugin's steps, a subset
                                                  # of what the policy runs (default: token, dpop,
                                                  # and fhir-scope only when the policy has `fhir`:
                                                  # render.policy_steps)
    "replay_store": {...},                        # with dpop.replay_scope "api" only
    "partition": {...}                            # with dpop.replay_scope "partitioned" only
  }                                               # (tools/replay_mesh.py: fields and manifests)
(`one_module` and `one_plugin`, the other layouts of earlier versions, are refused naming the one
layout.)

Every API also gets an EnvoyFilter `<api>-stats`: the metric labels (reason, issuer, api) as a
bootstrap patch, with the `proxy.istio.io/config` the pods need to apply it in its annotation
`fapi-guard/requires-proxy-config` (envoy/stats_config.py; docs/platform-guide.md, "Metrics").

A policy with a `cors` section also gets, for a sidecar, an EnvoyFilter `<api>-cors` that puts
Envoy's CORS filter before the WasmPlugins (docs/platform-guide.md, "CORS"); at a gateway the
VirtualService `corsPolicy` does it, and `cors` in the policy is refused.

`dpop.replay_scope: api` or `partitioned` adds what that scope needs from the mesh
(tools/replay_mesh.py; docs/platform-guide.md, "Replay across replicas").

Usage:
  tools/gen_wasmplugins.py                 # both roots, writes <root>/deploy/generated/
  tools/gen_wasmplugins.py --check         # exit 1 if the committed files differ
  tools/gen_wasmplugins.py --root kind-cluster/policies --lock target/wasm-oci/digests.json --out DIR
                                           # one root, a fresh build's digests, somewhere else
Only the Python standard library is used; the YAML written is a plain subset (strings quoted
where needed) that any YAML parser, and kubectl, reads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "envoy"))
import render  # noqa: E402  (envoy/render.py: the one answer to which filters a policy runs)
DEFAULT_ROOTS = [REPO_ROOT / "policies", REPO_ROOT / "kind-cluster" / "policies"]
DEFAULT_LOCK = REPO_ROOT / "policies" / "deploy" / "wasm-images.lock.json"
# The policy's `cors` section as Envoy config: the one converter, shared with envoy/render.py.
import cors_config  # noqa: E402
import stats_config  # noqa: E402  (envoy/stats_config.py: reason, issuer and api as labels)
sys.path.insert(0, str(REPO_ROOT / "tools"))
# The mesh settings the WasmPlugins depend on (stream timeouts, meshConfig, Sidecar egress hosts).
import mesh_settings  # noqa: E402
# What `dpop.replay_scope` api / partitioned needs from the mesh (store egress, partitioning layer).
import replay_mesh  # noqa: E402
# Beside each root's generated WasmPlugins, in their own folder (apply with `kubectl apply -f`,
# except mesh-config.yaml: a fragment for `istioctl install` / the `istio` ConfigMap).
MESH_DIR = "mesh"

# From the one registry (filters/registry.json): the chain's steps by their deploy names, in chain
# order, with their names in the root id; the one image (the one module, fapi_guard.wasm); its
# WasmPlugin priority (Istio orders plugins of one phase by descending priority).
_REGISTRY = json.loads((REPO_ROOT / "filters" / "registry.json").read_text())
STEP_NAME = {f["name"]: f["envoy"] for f in _REGISTRY["steps"]}
FILTERS = list(STEP_NAME)
MODULE = _REGISTRY["module"]["name"]
PRIORITY = _REGISTRY["module"]["istio_priority"]
# The root id of the partitioning layer's plugin (`replay_scope: partitioned`; filters/core/src/root_id.rs).
PARTITION_ROOT_ID = _REGISTRY["module"].get("partition_root_id", "fapi_guard:partition")
DEPLOY_KEYS = {
    "namespace", "selector", "target_refs", "image", "match_ports", "image_pull_policy", "image_pull_secret",
    "app_port", "filters", "description", "audit_log", "replay_store", "partition",
}
# Deploy fields of the layouts earlier versions had: refused with what replaced them.
REMOVED_DEPLOY_KEYS = {"one_module", "one_plugin"}
# The mesh's access-log provider for the guard's audit record (docs/audit.md, "In Istio").
AUDIT_PROVIDER = "fapi-guard-audit"
IMAGE_KEYS = {"registry", "repository", "tag"}
ISTIO_CLUSTER = re.compile(r"^outbound\|[0-9]{1,5}\|[^|]*\|[a-z0-9.-]+$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# What the guard expects of the mesh (docs/platform-guide.md, "Path normalisation"): Istio's
# DECODE_AND_MERGE_SLASHES gives the HCM normalize_path, merge_slashes and
# path_with_escaped_slashes_action UNESCAPE_AND_FORWARD (pilot/pkg/networking/core/listener_builder.go),
# so the filters and the API decide on the same canonical path. Istio's default (BASE) does not
# merge `//` or decode `%2F`/`%5C`.
REQUIRED_PATH_NORMALIZATION = "DECODE_AND_MERGE_SLASHES"
# The cluster the FHIR scope filter's read-before-write GET goes to, in a sidecar: a STATIC
# cluster to the app on loopback, added by the generated EnvoyFilter (Istio has no cluster
# `api`, and its inbound clusters are ORIGINAL_DST, which an HTTP call out of a filter cannot use).
RBW_CLUSTER = "fapi_guard_rbw_{api}"
IN_CLUSTER_HOST = re.compile(r"^[a-z0-9.-]+\.svc(\.cluster\.local)?$")
HEADER = (
    "# GENERATED by tools/gen_wasmplugins.py from {sources}. Do not edit: edit the policy or deploy file and regenerate.\n"
    f"# Requires the mesh config pathNormalization: {{{{normalization: {REQUIRED_PATH_NORMALIZATION}}}}}\n"
    "# (check it: tools/gen_wasmplugins.py --check-mesh <IstioOperator or istio ConfigMap>).\n"
)


class GenError(Exception):
    pass


# ---------- a small deterministic YAML writer ----------

_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./@-]*$")
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


def _scalar(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return json.dumps(v)
    if isinstance(v, str):
        if _PLAIN.match(v) and v.lower() not in _RESERVED:
            return v
        return _quoted(v)
    raise GenError(f"cannot write {type(v).__name__} as YAML")


def _quoted(s: str) -> str:
    """A JSON string is a YAML double-quoted scalar; UTF-8 stays as is, except the characters
    YAML reads as line breaks or a byte-order mark, which get escapes."""
    out = json.dumps(s, ensure_ascii=False)
    for ch in ("\u0085", "\u2028", "\u2029", "\ufeff"):
        out = out.replace(ch, f"\\u{ord(ch):04x}")
    return out


def _key(k: str) -> str:
    return k if _PLAIN.match(k) and k.lower() not in _RESERVED else _quoted(k)


def rel(p: Path) -> str:
    """`p` relative to the repository when inside it (stable text in generated files)."""
    return str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else str(p)


def to_yaml(v: object, indent: int = 0) -> str:
    pad = " " * indent
    if isinstance(v, dict):
        if not v:
            return pad + "{}\n"
        out = []
        for k, item in v.items():
            if isinstance(item, (dict, list)) and item:
                child_indent = indent + 2 if isinstance(item, dict) else indent
                out.append(f"{pad}{_key(k)}:\n" + to_yaml(item, child_indent))
            else:
                out.append(f"{pad}{_key(k)}: {_inline(item)}\n")
        return "".join(out)
    if isinstance(v, list):
        if not v:
            return pad + "[]\n"
        out = []
        for item in v:
            if isinstance(item, (dict, list)) and item:
                body = to_yaml(item, indent + 2)
                out.append(f"{pad}- " + body[indent + 2 :])
            else:
                out.append(f"{pad}- {_inline(item)}\n")
        return "".join(out)
    return pad + _scalar(v) + "\n"


def _inline(v: object) -> str:
    if isinstance(v, dict):
        return "{}"
    if isinstance(v, list):
        return "[]"
    return _scalar(v)


# ---------- generation ----------


def load_lock(path: Path) -> dict:
    try:
        lock = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise GenError(f"cannot read image lock {path}: {e} (run tools/package_wasm.py --write-lock)") from e
    images = lock.get("filters", {})
    digest = images.get(MODULE, {}).get("image_manifest_digest", "")
    if not re.fullmatch(r"sha256:[a-f0-9]{64}", digest):
        raise GenError(f"{path}: no valid image_manifest_digest for image `{MODULE}`")
    return images


def check_deploy(path: Path, d: object) -> dict:
    where = rel(path)
    if not isinstance(d, dict):
        raise GenError(f"{where}: must be a JSON object")
    removed = sorted(set(d) & REMOVED_DEPLOY_KEYS)
    if removed:
        raise GenError(
            f"{where}: {removed} removed: every API gets ONE WasmPlugin, the one module attached as the chain plugin "
            "(pluginName fapi_guard); `filters` picks its steps. Delete the field"
        )
    unknown = set(d) - DEPLOY_KEYS
    if unknown:
        raise GenError(f"{where}: unknown field(s) {sorted(unknown)}")
    ns = d.get("namespace")
    if not isinstance(ns, str) or not DNS1123_LABEL.match(ns):
        raise GenError(f"{where}: `namespace` must be a DNS-1123 label")
    if ("selector" in d) == ("target_refs" in d):
        raise GenError(f"{where}: give exactly one of `selector` or `target_refs` (an empty selector would select every workload)")
    if "selector" in d:
        sel = d["selector"]
        if not isinstance(sel, dict) or not sel or not all(isinstance(k, str) and isinstance(v, str) and k and "*" not in k + v for k, v in sel.items()):
            raise GenError(f"{where}: `selector` must be a non-empty map of label -> value, no wildcards")
    else:
        refs = d["target_refs"]
        if not isinstance(refs, list) or not refs:
            raise GenError(f"{where}: `target_refs` must be a non-empty list")
        for i, r in enumerate(refs):
            if isinstance(r, dict) and r.get("kind") == "Service":
                # pilot/pkg/model/policyattachment.go: a Service targetRef only matches waypoints
                # (ambient); a sidecar ignores it, so nothing would be enforced.
                raise GenError(
                    f"{where}: target_refs[{i}] is a Service: Istio attaches Service targetRefs only to "
                    "ambient waypoints, a sidecar would ignore it and enforce nothing. Use `selector` for sidecars"
                )
            if (
                not isinstance(r, dict) or set(r) - {"group", "kind", "name"}
                or (r.get("group"), r.get("kind")) != ("gateway.networking.k8s.io", "Gateway") or not r.get("name")
            ):
                raise GenError(f"{where}: target_refs[{i}] must be {{group: gateway.networking.k8s.io, kind: Gateway, name}}")
    img = d.get("image")
    if not isinstance(img, dict) or set(img) != IMAGE_KEYS or not all(isinstance(img[k], str) and img[k] for k in IMAGE_KEYS):
        raise GenError(f"{where}: `image` must be {{registry, repository, tag}}")
    if any(c in img["registry"] for c in ":/") and not re.fullmatch(r"[a-z0-9.-]+:[0-9]{1,5}", img["registry"]):
        # Only oci:// URLs are generated: Istio checks `sha256` for remote modules only; a
        # file:// URL becomes a local data source with no checksum (pilot/pkg/model/extensions.go).
        raise GenError(f"{where}: `image.registry` must be a registry host[:port] (the URL is always oci://)")
    ports = d.get("match_ports", [])
    if not isinstance(ports, list) or not all(isinstance(p, int) and 1 <= p <= 65535 for p in ports):
        raise GenError(f"{where}: `match_ports` must be a list of port numbers")
    if d.get("image_pull_policy", "IfNotPresent") not in ("IfNotPresent", "Always"):
        raise GenError(f"{where}: `image_pull_policy` must be IfNotPresent or Always")
    secret = d.get("image_pull_secret")
    if secret is not None and (not isinstance(secret, str) or not DNS1123_SUBDOMAIN.match(secret) or len(secret) > 253):
        raise GenError(f"{where}: `image_pull_secret` must name a Secret (DNS-1123 subdomain) in `namespace`")
    app_port = d.get("app_port")
    if app_port is not None and (not isinstance(app_port, int) or isinstance(app_port, bool) or not 1 <= app_port <= 65535):
        raise GenError(f"{where}: `app_port` must be a port number")
    filters = d.get("filters", list(FILTERS))
    if not isinstance(filters, list) or not filters or any(f not in FILTERS for f in filters) or len(set(filters)) != len(filters):
        raise GenError(f"{where}: `filters` must be a non-empty subset of {FILTERS}")
    if "token" not in filters:
        raise GenError(f"{where}: `filters` must include `token`: the other steps read what it verified")
    if not isinstance(d.get("audit_log", False), bool):
        raise GenError(f"{where}: `audit_log` must be true or false")
    try:
        replay_mesh.check_deploy(where, d)
    except replay_mesh.ReplayMeshError as e:
        raise GenError(str(e)) from e
    return d


def deploy_filters(policy: dict, deploy: dict, where: str) -> list[str]:
    """The steps (registry names, chain order) the chain plugin runs: what the policy runs
    (`render.policy_steps`: no `fhir` section, no fhir-scope), or the deploy file's `filters`
    when it names a subset; a step the policy cannot run is refused, naming the field (in
    Istio a chain plugin with fhir_scope but no `fhir` fails closed and takes the whole API down)."""
    asked = deploy.get("filters")
    try:
        steps = render.checked_steps(policy, None if asked is None else [STEP_NAME[f] for f in asked],
                                     field=f"{where}: `filters`")
    except ValueError as e:
        raise GenError(str(e)) from e
    return [f for f in FILTERS if STEP_NAME[f] in steps]


def wasm_plugins(api: str, policy: dict, deploy: dict, lock: dict, sources: list[str]) -> list[dict]:
    """The API's one WasmPlugin `<api>-guard`: the chain plugin from the one image."""
    policy_sha = hashlib.sha256(json.dumps(policy, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    img = deploy["image"]
    order = deploy_filters(policy, deploy, sources[1])  # chain order: token, dpop[, fhir-scope]
    # The chain plugin: one WasmPlugin from the one image, its pluginName the root id envoy/render.py
    # gives it (`fapi_guard` for all three steps, else `fapi_guard:<steps>`).
    plugin_name = render.chain_name([STEP_NAME[f] for f in order])
    name = image = MODULE
    entry = lock[image]
    spec: dict = {}
    if "selector" in deploy:
        spec["selector"] = {"matchLabels": dict(sorted(deploy["selector"].items()))}
    else:
        spec["targetRefs"] = [{"group": r.get("group", ""), "kind": r["kind"], "name": r["name"]} for r in deploy["target_refs"]]
    spec["url"] = f"oci://{img['registry']}/{img['repository']}/{image}:{img['tag']}"
    spec["sha256"] = entry["image_manifest_digest"].split(":", 1)[1]
    spec["imagePullPolicy"] = deploy.get("image_pull_policy", "IfNotPresent")
    if deploy.get("image_pull_secret"):
        spec["imagePullSecret"] = deploy["image_pull_secret"]
    spec["phase"] = "AUTHN"
    spec["priority"] = PRIORITY
    spec["failStrategy"] = "FAIL_CLOSE"
    spec["type"] = "HTTP"
    spec["pluginName"] = plugin_name
    # pilot/pkg/model/extensions.go (workloadModeForListenerClass): a sidecar's inbound
    # listeners are SERVER, a gateway's listeners are CLIENT; a plugin whose mode does not
    # match the listener class is never attached.
    mode = "SERVER" if "selector" in deploy else "CLIENT"
    if deploy.get("match_ports"):
        spec["match"] = [{"mode": mode, "ports": [{"number": p} for p in deploy["match_ports"]]}]
    else:
        spec["match"] = [{"mode": mode}]
    spec["pluginConfig"] = policy
    return [
        {
            "apiVersion": "extensions.istio.io/v1alpha1",
            "kind": "WasmPlugin",
            "metadata": {
                "name": f"{api}-{name}",
                "namespace": deploy["namespace"],
                "labels": {
                    "app.kubernetes.io/part-of": "fapi-guard",
                    "app.kubernetes.io/managed-by": "gen_wasmplugins",
                    "fapi-guard/api": api,
                    "fapi-guard/filter": name,
                },
                "annotations": {
                    "fapi-guard/policy-source": sources[0],
                    "fapi-guard/policy-sha256": policy_sha,
                    "fapi-guard/wasm-sha256": entry.get("wasm_sha256", ""),
                    "fapi-guard/requires-mesh-path-normalization": REQUIRED_PATH_NORMALIZATION,
                },
            },
            "spec": spec,
        }
    ]


def _labels(api: str, part: str) -> dict:
    return {
        "app.kubernetes.io/part-of": "fapi-guard",
        "app.kubernetes.io/managed-by": "gen_wasmplugins",
        "fapi-guard/api": api,
        "fapi-guard/part": part,
    }


def jwks_egress(api: str, policy: dict, deploy: dict, where: str) -> list[dict]:
    """Per issuer: the Istio cluster the token filter's JWKS fetch needs (`jwks_cluster`).

    In-cluster issuer (`<svc>.<ns>.svc.cluster.local`): Istio's own outbound cluster for the
    Service port. External issuer: a ServiceEntry (MESH_EXTERNAL, DNS) with Istio's TLS
    origination pattern: port 80 (HTTP, targetPort 443) which a DestinationRule upgrades to TLS
    with SNI, and port 443 as TLS passthrough, so the app's own HTTPS calls to the issuer are not
    encrypted twice. The filter then calls `outbound|80||<host>` in plain HTTP and the sidecar
    speaks HTTPS to the issuer. Without them the cluster does not exist: 503 jwks_unavailable."""
    docs: list[dict] = []
    seen: set[str] = set()
    for i, iss in enumerate(policy.get("issuers") or []):
        if not isinstance(iss, dict):
            continue
        uri, cluster = iss.get("jwks_uri"), iss.get("jwks_cluster")
        if not isinstance(uri, str) or not isinstance(cluster, str):
            raise GenError(f"{where}: issuers[{i}] needs `jwks_uri` and `jwks_cluster` in a mesh")
        parts = urlsplit(uri)
        host = (parts.hostname or "").lower()
        if not host or not DNS1123_SUBDOMAIN.match(host):
            raise GenError(f"{where}: issuers[{i}].jwks_uri `{uri}` has no DNS host name")
        if IN_CLUSTER_HOST.match(host):
            port = parts.port or (443 if parts.scheme == "https" else 80)
            want = f"outbound|{port}||{host}"
            if cluster != want:
                raise GenError(f"{where}: issuers[{i}].jwks_cluster must be `{want}` (Istio's cluster for that Service port), not `{cluster}`")
            continue
        if parts.scheme != "https":
            raise GenError(f"{where}: issuers[{i}].jwks_uri `{uri}` is an external host: it must be https")
        want = f"outbound|80||{host}"
        if cluster != want:
            raise GenError(
                f"{where}: issuers[{i}].jwks_cluster must be `{want}`: the generated ServiceEntry and "
                f"DestinationRule give the sidecar that cluster (plain HTTP from the filter, TLS to {host}:{parts.port or 443}); "
                f"`{cluster}` is not a cluster that takes the filter's plain HTTP and speaks TLS to the issuer "
                "(503 jwks_unavailable)"
            )
        if host in seen:
            continue
        seen.add(host)
        name = f"{api}-jwks-{len(seen)}"
        target = parts.port or 443
        meta = {"name": name, "namespace": deploy["namespace"], "labels": _labels(api, "jwks-egress")}
        docs.append({
            "apiVersion": "networking.istio.io/v1",
            "kind": "ServiceEntry",
            "metadata": meta,
            "spec": {
                "hosts": [host],
                "exportTo": ["."],
                "location": "MESH_EXTERNAL",
                "resolution": "DNS",
                "ports": [
                    {"number": 80, "name": "http-jwks", "protocol": "HTTP", "targetPort": target},
                    {"number": target, "name": "tls", "protocol": "TLS"},
                ],
            },
        })
        docs.append({
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": dict(meta),
            "spec": {
                "host": host,
                "exportTo": ["."],
                "trafficPolicy": {"portLevelSettings": [{"port": {"number": 80}, "tls": {"mode": "SIMPLE", "sni": host}}]},
            },
        })
    return docs


def read_before_write(api: str, policy: dict, deploy: dict, where: str) -> list[dict]:
    """The cluster for the FHIR scope filter's read-before-write GET (`fhir.read_before_write_cluster`).

    Sidecar: an EnvoyFilter adds a STATIC cluster to the app on 127.0.0.1:<app port> (inbound
    context; pilot/pkg/networking/core/envoyfilter/cluster_patch.go, InsertedClusters). The
    sidecar's own traffic to 127.0.0.1 is not redirected, so the read reaches the local app
    directly and is not filtered again. Gateway: an Istio outbound cluster of the API's Service."""
    fhir = policy.get("fhir")
    if "fhir-scope" not in deploy_filters(policy, deploy, where) or not isinstance(fhir, dict):
        return []
    cluster = fhir.get("read_before_write_cluster", "api")
    if "selector" not in deploy:
        if not ISTIO_CLUSTER.match(str(cluster)):
            raise GenError(
                f"{where}: fhir.read_before_write_cluster `{cluster}` does not exist at a gateway: name the API "
                "Service's Istio cluster, outbound|<port>||<service>.<namespace>.svc.cluster.local"
            )
        return []
    want = RBW_CLUSTER.format(api=api)
    if cluster != want:
        raise GenError(
            f"{where}: fhir.read_before_write_cluster must be `{want}` in a sidecar (the generated EnvoyFilter adds "
            f"it); `{cluster}` does not exist there and writes by id under patient grants would get 503"
        )
    port = deploy.get("app_port")
    if port is None:
        ports = deploy.get("match_ports") or []
        if len(ports) != 1:
            raise GenError(f"{where}: give `app_port` (the port the app listens on) for the read-before-write cluster")
        port = ports[0]
    return [{
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": f"{api}-read-before-write", "namespace": deploy["namespace"], "labels": _labels(api, "read-before-write")},
        "spec": {
            "workloadSelector": {"labels": dict(sorted(deploy["selector"].items()))},
            "configPatches": [{
                "applyTo": "CLUSTER",
                "match": {"context": "SIDECAR_INBOUND"},
                "patch": {
                    "operation": "ADD",
                    "value": {
                        "name": want,
                        "type": "STATIC",
                        "connect_timeout": "5s",
                        "load_assignment": {
                            "cluster_name": want,
                            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}],
                        },
                    },
                },
            }],
        },
    }]


def cors(api: str, policy: dict, deploy: dict, where: str) -> list[dict]:
    """The policy's `cors` section in a sidecar: an EnvoyFilter with the CORS filter first on the
    inbound listener (cors_config.istio_patches; docs/platform-guide.md, "CORS"). At a gateway
    the VirtualService `corsPolicy` does it: `cors` there is refused."""
    if cors_config.settings(policy) is None:
        return []
    if "selector" not in deploy:
        raise GenError(
            f"{where}: `cors` at a gateway: set the same origins in the `corsPolicy` of the VirtualService bound to "
            "the gateway (docs/platform-guide.md, \"CORS\") and leave `cors` out of this policy"
        )
    return [{
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": f"{api}-cors", "namespace": deploy["namespace"], "labels": _labels(api, "cors")},
        "spec": {"workloadSelector": {"labels": dict(sorted(deploy["selector"].items()))},
                 "configPatches": cors_config.istio_patches(policy, deploy.get("match_ports") or [None])},
    }]


def stats(api: str, policy: dict, deploy: dict) -> list[dict]:
    """The metric labels of docs/platform-guide.md "Metrics" (reason, issuer, api) in the mesh:
    an EnvoyFilter patching the proxy's bootstrap `stats_config.stats_tags`
    (stats_config.istio_bootstrap_patch). It applies only to pods whose `proxy.istio.io/config`
    annotation holds the annotation `fapi-guard/requires-proxy-config` of this EnvoyFilter
    (BOOTSTRAP_XDS_AGENT and the stats matcher), and when the pod starts: restart the pods."""
    if "selector" not in deploy:
        # A gateway serves several APIs: one `api` value per proxy (a fixed tag) would be wrong,
        # and two patches would define each tag twice. Not generated (docs/platform-guide.md,
        # "Metrics").
        return []
    spec: dict = {"workloadSelector": {"labels": dict(sorted(deploy["selector"].items()))}}
    spec["configPatches"] = stats_config.istio_bootstrap_patch(policy)
    return [{
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": f"{api}-stats", "namespace": deploy["namespace"], "labels": _labels(api, "stats"),
                     "annotations": {"fapi-guard/requires-proxy-config": json.dumps(
                         stats_config.ISTIO_PROXY_CONFIG, separators=(",", ":"), sort_keys=True)}},
        "spec": spec,
    }]


def audit_log(api: str, deploy: dict) -> list[dict]:
    """`audit_log: true`: a Telemetry resource sending the API's server-side access log to the
    mesh provider AUDIT_PROVIDER (`audit_provider`, in the generated mesh config), whose JSON
    format carries the guard's audit record (docs/audit.md, "In Istio")."""
    if not deploy.get("audit_log"):
        return []
    spec: dict = ({"selector": {"matchLabels": dict(sorted(deploy["selector"].items()))}} if "selector" in deploy
                  else {"targetRefs": deploy["target_refs"]})
    # SERVER: the proxy in front of the API (inbound for a sidecar, the gateway's listener).
    spec["accessLogging"] = [{"providers": [{"name": AUDIT_PROVIDER}], "match": {"mode": "SERVER"}}]
    return [{
        "apiVersion": "telemetry.istio.io/v1",
        "kind": "Telemetry",
        "metadata": {"name": f"{api}-audit-log", "namespace": deploy["namespace"], "labels": _labels(api, "audit-log")},
        "spec": spec,
    }]


def replay_scope(api: str, policy: dict, deploy: dict, sources: list[str], plugin: dict) -> list[dict]:
    """What `dpop.replay_scope` needs besides the plugin (tools/replay_mesh.py): `api`, the
    store's egress and TLS; `partitioned`, the hashing layer, its plugin and the lock-down."""
    try:
        replay_mesh.check_policy(policy, deploy, sources[0], sources[1])
        scope = replay_mesh.scope_of(policy)
        if scope == "api":
            return replay_mesh.store_manifests(api, deploy, _labels(api, "replay-store"))
        if scope == "partitioned":
            return replay_mesh.partition_manifests(api, policy, deploy, _labels(api, "partition"), plugin, PARTITION_ROOT_ID)
    except replay_mesh.ReplayMeshError as e:
        raise GenError(str(e)) from e
    return []


def audit_provider() -> dict:
    """The meshConfig `extensionProviders` entry: Envoy's file access logger on the proxy's
    stdout, JSON (`labels`) with the audit record from filter state (render.AUDIT_FIELDS, the
    same fields the local configs log)."""
    return {"name": AUDIT_PROVIDER,
            "envoyFileAccessLog": {"path": "/dev/stdout", "logFormat": {"labels": dict(render.AUDIT_FIELDS)}}}


def mesh_config_errors(doc: dict) -> list[str]:
    """What the guard expects of Istio's mesh config. `doc` is an IstioOperator, the `istio`
    ConfigMap (data.mesh as YAML text, parsed by the caller) or a bare meshConfig."""
    if doc.get("kind") == "IstioOperator":
        mesh = (doc.get("spec") or {}).get("meshConfig") or {}
    elif doc.get("kind") == "ConfigMap":
        mesh = (doc.get("data") or {}).get("mesh") or {}
    else:
        mesh = doc
    got = ((mesh.get("pathNormalization") or {}) if isinstance(mesh, dict) else {}).get("normalization", "BASE (default)")
    if got != REQUIRED_PATH_NORMALIZATION:
        return [
            f"meshConfig.pathNormalization.normalization is {got}; the guard expects {REQUIRED_PATH_NORMALIZATION} "
            "(otherwise `//`, %2F and %5C reach the filters and the API unnormalised; docs/platform-guide.md)"
        ]
    return []


def check_mesh(path: Path) -> list[str]:
    import yaml  # only for this lint (PyYAML); generation itself needs the standard library only

    errors = []
    docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    for d in docs:
        if d.get("kind") == "ConfigMap" and isinstance((d.get("data") or {}).get("mesh"), str):
            d = dict(d, data={"mesh": yaml.safe_load(d["data"]["mesh"]) or {}})
        errors += [f"{path}: {e}" for e in mesh_config_errors(d)]
    return errors or ([] if docs else [f"{path}: no mesh config found"])


def generate(roots: list[Path], lock_path: Path) -> tuple[dict[Path, dict[str, str]], list[str]]:
    """Returns {root: {file name: YAML text}} and notes (policies without a deploy file, ...)."""
    lock = load_lock(lock_path)
    result: dict[Path, dict[str, str]] = {}
    notes: list[str] = []
    seen: dict[str, Path] = {}
    names_in_ns: dict[tuple, Path] = {}
    for root in roots:
        files: dict[str, str] = result.setdefault(root, {})
        if not root.is_dir():
            continue
        deploy_dir = root / "deploy"
        policies = {p.stem: p for p in sorted(root.glob("*.json"))}
        deploys = {}
        if deploy_dir.is_dir():
            # `*.lock.json` files (image digests) live beside the deploy files and are not APIs.
            deploys = {p.stem: p for p in sorted(deploy_dir.glob("*.json")) if not p.name.endswith(".lock.json")}
        for stem in sorted(set(deploys) - set(policies)):
            raise GenError(f"{deploys[stem]}: no policy {root / (stem + '.json')} for this deploy file")
        for stem, ppath in policies.items():
            if stem not in deploys:
                notes.append(f"{rel(ppath)}: no deploy/{stem}.json, not deployed to the mesh")
                continue
            if not DNS1123_LABEL.match(stem) or len(stem) > 40:
                raise GenError(f"{ppath}: file name must be a DNS-1123 label of at most 40 characters (it names the WasmPlugins)")
            if stem in seen:
                raise GenError(f"{ppath}: API `{stem}` also defined in {seen[stem]}")
            seen[stem] = ppath
            try:
                policy = json.loads(ppath.read_text())
                deploy = check_deploy(deploys[stem], json.loads(deploys[stem].read_text()))
            except ValueError as e:
                raise GenError(f"{ppath.stem}: invalid JSON: {e}") from e
            if not isinstance(policy, dict) or not isinstance(policy.get("api"), dict):
                raise GenError(f"{ppath}: not a policy (no `api` object)")
            api_name = policy["api"].get("name")
            other = names_in_ns.setdefault((deploy["namespace"], api_name), ppath)
            if other != ppath:
                raise GenError(
                    f"{ppath}: api.name `{api_name}` is also used by {rel(other)} in namespace {deploy['namespace']}: "
                    "the filters keep shared data per API name, and Istio gives all plugins of a proxy one shared-data namespace"
                )
            sources = [str(rel(ppath)), str(rel(deploys[stem]))]
            docs = wasm_plugins(stem, policy, deploy, lock, sources)
            docs += jwks_egress(stem, policy, deploy, rel(ppath))
            docs += read_before_write(stem, policy, deploy, rel(ppath))
            docs += cors(stem, policy, deploy, rel(ppath))
            docs += stats(stem, policy, deploy)
            docs += audit_log(stem, deploy)
            docs += replay_scope(stem, policy, deploy, sources, docs[0])
            header = HEADER.format(sources=", ".join(sources) + ", " + rel(lock_path))
            files[f"{stem}.yaml"] = header + "".join("---\n" + to_yaml(d) for d in docs)
    return result, notes


def generate_mesh(roots: list[Path]) -> dict[Path, dict[str, str]]:
    """{root: {"mesh/<file>": YAML}}: per deployed API the stream-timeout EnvoyFilter(s), and per
    root the meshConfig fragment. Call after generate(), which has checked the same files."""
    out: dict[Path, dict[str, str]] = {}
    for root in roots:
        files = out.setdefault(root, {})
        deploy_dir = root / "deploy"
        audit = False
        if not deploy_dir.is_dir():
            continue
        for dpath in sorted(deploy_dir.glob("*.json")):
            if dpath.name.endswith(".lock.json") or not (root / dpath.name).is_file():
                continue
            api = dpath.stem
            deploy = check_deploy(dpath, json.loads(dpath.read_text()))
            audit = audit or bool(deploy.get("audit_log"))
            docs = mesh_settings.stream_timeouts(api, deploy, render.STREAM_TIMEOUTS, _labels(api, "stream-timeouts"))
            files[f"{MESH_DIR}/{api}.yaml"] = (
                f"# GENERATED by tools/gen_wasmplugins.py from {rel(dpath)}. Do not edit: regenerate.\n"
                "# The connection-manager timeouts the guard relies on (docs/platform-guide.md, \"Slow requests\").\n"
                + "".join("---\n" + to_yaml(d) for d in docs)
            )
        if files:
            files[f"{MESH_DIR}/mesh-config.yaml"] = mesh_settings_file(root, audit)
    return out


def mesh_settings_file(root: Path, audit: bool = False) -> str:
    """The meshConfig fragment every API of `root` depends on (one per mesh, not per API);
    `audit`: an API of `root` has `audit_log: true` (the audit log's provider is added)."""
    fragment = mesh_settings.mesh_config_fragment(REQUIRED_PATH_NORMALIZATION, stats_config.ISTIO_PROXY_CONFIG)
    if audit:
        fragment["spec"]["meshConfig"]["extensionProviders"] = [audit_provider()]
    return (
        f"# GENERATED by tools/gen_wasmplugins.py for the APIs in {rel(root)}. Do not edit: regenerate.\n"
        "# The meshConfig the generated WasmPlugins depend on: merge it into your IstioOperator's\n"
        "# spec.meshConfig (or the `istio` ConfigMap's data.mesh), then check the cluster's with\n"
        "# tools/gen_wasmplugins.py --check-mesh FILE. Namespaces with a Sidecar resource: check it with\n"
        "# tools/gen_wasmplugins.py --check-sidecar FILE (the JWKS hosts must be among its egress hosts).\n"
        "---\n" + to_yaml(fragment)
    )


def check_sidecars(paths: list[Path], roots: list[Path]) -> list[str]:
    """Sidecar resources (in the files given) against the committed generated manifests."""
    import yaml  # only for this lint (PyYAML), like --check-mesh

    sidecars = [d for p in paths for d in yaml.safe_load_all(p.read_text()) if isinstance(d, dict) and d.get("kind") == "Sidecar"]
    generated = [d for r in roots for p in sorted((r / "deploy" / "generated").glob("*.yaml"))
                 for d in yaml.safe_load_all(p.read_text()) if isinstance(d, dict)]
    if not sidecars:
        return [f"{', '.join(map(str, paths))}: no Sidecar resource found"]
    return mesh_settings.sidecar_errors(sidecars, generated)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, action="append", help="policy root (repeatable); default: policies/ and kind-cluster/policies/")
    ap.add_argument("--lock", type=Path, default=DEFAULT_LOCK, help="image digests (tools/package_wasm.py output)")
    ap.add_argument("--out", type=Path, help="output directory (only with one --root); default <root>/deploy/generated")
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing; exit 1 on any difference")
    ap.add_argument("--check-mesh", type=Path, metavar="FILE", action="append",
                    help="lint an IstioOperator / istio ConfigMap / meshConfig YAML for what the guard expects; nothing is generated")
    ap.add_argument("--check-sidecar", type=Path, metavar="FILE", action="append",
                    help="lint Sidecar resources (kubectl get sidecar -A -o yaml) against the generated manifests' JWKS hosts")
    args = ap.parse_args(argv)
    if args.check_sidecar:
        errors = check_sidecars(args.check_sidecar, [r.resolve() for r in (args.root or DEFAULT_ROOTS)])
        for e in errors:
            print(f"gen_wasmplugins: sidecar: {e}", file=sys.stderr)
        return 1 if errors else 0
    if args.check_mesh:
        errors = [e for f in args.check_mesh for e in check_mesh(f)]
        for e in errors:
            print(f"gen_wasmplugins: mesh: {e}", file=sys.stderr)
        return 1 if errors else 0
    roots = [r.resolve() for r in (args.root or DEFAULT_ROOTS)]
    if args.out and len(roots) != 1:
        ap.error("--out needs exactly one --root")
    try:
        result, notes = generate(roots, args.lock.resolve())
        for root, files in generate_mesh(roots).items():
            result[root].update(files)
    except GenError as e:
        print(f"gen_wasmplugins: error: {e}", file=sys.stderr)
        return 1
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    drift: list[Path] = []
    for root, files in result.items():
        out: Path = args.out or root / "deploy" / "generated"
        existing = {str(p.relative_to(out)): p.read_text() for g in ("*.yaml", f"{MESH_DIR}/*.yaml") for p in out.glob(g)} if out.is_dir() else {}
        if args.check:
            drift += sorted(out / n for n in set(files) | set(existing) if files.get(n) != existing.get(n))
            continue
        if files:
            out.mkdir(parents=True, exist_ok=True)
        for name in set(existing) - set(files):
            (out / name).unlink()
        for name, text in sorted(files.items()):
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_text(text)
            print(f"wrote {out / name}")
    for path in drift:
        print(f"drift: {path} differs from what the policies generate (or should not exist)", file=sys.stderr)
    if drift:
        print("run tools/gen_wasmplugins.py and commit the result", file=sys.stderr)
    return 1 if drift else 0


if __name__ == "__main__":
    sys.exit(main())
