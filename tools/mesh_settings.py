"""The mesh settings the generated WasmPlugins depend on, as manifests and checks
(tools/gen_wasmplugins.py writes them; docs/platform-guide.md, "Mesh settings the guard needs"):

- `stream_timeouts`: an EnvoyFilter per API giving the inbound (sidecar) or gateway connection
  manager the timeouts of the plain-Envoy configs (envoy/render.py STREAM_TIMEOUTS). Istio has no
  API field for the inbound `request_timeout`, and its default stream idle timeout is 300 s, so a
  client sending a FHIR write's body slowly would hold the request that long ("Slow requests").
- `mesh_config_fragment`: the meshConfig the guard expects (`pathNormalization`), as an
  IstioOperator fragment, checked by `gen_wasmplugins.py --check-mesh` like any other.
- `sidecar_egress_hosts` / `sidecar_errors`: the `Sidecar` egress hosts a sidecar needs to reach
  each issuer's JWKS (and the replay store, `dpop.replay_scope: api`). A Sidecar resource that limits `egress.hosts` keeps Istio from pushing any
  other cluster to the proxy, so the token filter's fetch answers 503 `jwks_unavailable`.
  `gen_wasmplugins.py --check-sidecar FILE` checks a namespace's Sidecars against the generated
  manifests (the WasmPlugins' pluginConfig is the policy, unchanged).

Only the Python standard library is used; the caller parses YAML.
"""

from __future__ import annotations

import fnmatch
from urllib.parse import urlsplit

import replay_mesh  # tools/replay_mesh.py: the replay store's host (`dpop.replay_scope: api`)

# The label Istio puts on the pods it deploys for a Gateway API `Gateway`
# (pilot/pkg/config/kube/gateway/deploymentcontroller.go; the Gateway API's own label name).
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
HCM = "envoy.filters.network.http_connection_manager"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def stream_timeouts(api: str, deploy: dict, timeouts: dict, labels: dict) -> list[dict]:
    """One EnvoyFilter per workload the WasmPlugins attach to: the sidecar's inbound listener
    (`SIDECAR_INBOUND`, the WasmPlugins' selector) or each target Gateway's pods (`GATEWAY`)."""
    if "selector" in deploy:
        targets = [("SIDECAR_INBOUND", dict(sorted(deploy["selector"].items())))]
    else:
        targets = [("GATEWAY", {GATEWAY_NAME_LABEL: r["name"]}) for r in deploy["target_refs"]]
    docs = []
    for i, (context, selector) in enumerate(targets):
        docs.append({
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "EnvoyFilter",
            "metadata": {
                "name": f"{api}-stream-timeouts" + (f"-{i + 1}" if len(targets) > 1 else ""),
                "namespace": deploy["namespace"],
                "labels": labels,
            },
            "spec": {
                "workloadSelector": {"labels": selector},
                "configPatches": [{
                    "applyTo": "NETWORK_FILTER",
                    "match": {"context": context, "listener": {"filterChain": {"filter": {"name": HCM}}}},
                    "patch": {
                        "operation": "MERGE",
                        "value": {"name": HCM, "typed_config": {"@type": HCM_TYPE, **dict(sorted(timeouts.items()))}},
                    },
                }],
            },
        })
    return docs


def mesh_config_fragment(normalization: str, proxy_config: dict | None = None) -> dict:
    """What the guard expects of the mesh config: merge into your IstioOperator's
    `spec.meshConfig` or the `istio` ConfigMap's `data.mesh`. `proxy_config`: the ProxyConfig
    the guard's metrics need (the stats matcher, the bootstrap through istiod), as the mesh's
    `defaultConfig` (a pod's `proxy.istio.io/config` annotation may set it instead)."""
    mesh: dict = {"pathNormalization": {"normalization": normalization}}
    if proxy_config:
        mesh["defaultConfig"] = proxy_config
    return {
        "apiVersion": "install.istio.io/v1alpha1",
        "kind": "IstioOperator",
        "metadata": {"name": "fapi-guard-mesh-settings"},
        "spec": {"meshConfig": mesh},
    }


def sidecar_egress_hosts(policy: dict, namespace: str) -> list[str]:
    """`<namespace>/<host>` of each issuer's jwks_uri as a Sidecar egress host: an in-cluster
    Service in its own namespace, an external host through the ServiceEntry the generator puts
    in the API's namespace (`exportTo: ["."]`)."""
    hosts = []
    for iss in policy.get("issuers") or []:
        uri = iss.get("jwks_uri") if isinstance(iss, dict) else None
        host = (urlsplit(uri).hostname or "").lower() if isinstance(uri, str) else ""
        if not host:
            continue
        labels = host.split(".")
        if host.endswith(".svc") or host.endswith(".svc.cluster.local"):
            want = f"{labels[1]}/{labels[0]}.{labels[1]}.svc.cluster.local"
        else:
            want = f"{namespace}/{host}"
        if want not in hosts:
            hosts.append(want)
    return hosts


def _covers(entry: str, want: str, sidecar_ns: str) -> bool:
    """Does the Sidecar egress host `entry` (`ns/dnsName`, `.`, `*`, `~`, wildcards) cover `want`?"""
    ens, _, ehost = entry.partition("/")
    wns, _, whost = want.partition("/")
    if ens == "~" or not ehost:
        return False
    ns_ok = ens == "*" or ens == wns or (ens == "." and wns == sidecar_ns)
    # For a `<svc>.<ns>.svc.cluster.local` host Istio also matches the short names.
    names = {whost, whost.removesuffix(".cluster.local"), whost.removesuffix(".svc.cluster.local")}
    return ns_ok and any(fnmatch.fnmatchcase(n, ehost) for n in names)


def _applies(sidecar: dict, namespace: str, selector: dict) -> int:
    """0: does not apply to the workload; 2: selects it by labels; 1: namespace-wide."""
    meta = sidecar.get("metadata") or {}
    if meta.get("namespace", "default") != namespace:
        return 0
    labels = ((sidecar.get("spec") or {}).get("workloadSelector") or {}).get("labels")
    if not labels:
        return 1
    return 2 if all(selector.get(k) == v for k, v in labels.items()) else 0


def sidecar_errors(sidecars: list[dict], generated: list[dict]) -> list[str]:
    """What the given Sidecar resources keep from the generated WasmPlugins' JWKS fetches. A
    workload uses the Sidecar that selects it, else its namespace's one without a selector
    (Istio's precedence); with neither, egress is not limited."""
    errors = []
    for wp in generated:
        if wp.get("kind") != "WasmPlugin":
            continue
        spec, meta = wp.get("spec") or {}, wp.get("metadata") or {}
        selector = (spec.get("selector") or {}).get("matchLabels")
        policy = spec.get("pluginConfig")
        if not selector or not isinstance(policy, dict) or any(m.get("mode") != "SERVER" for m in spec.get("match") or []):
            # A gateway's plugin (Sidecar resources do not limit gateways here), or the partitioning
            # layer's (`replay_scope: partitioned`), which calls no cluster.
            continue
        ns = meta.get("namespace", "default")
        ranked = sorted(((_applies(s, ns, selector), i) for i, s in enumerate(sidecars)), reverse=True)
        if not ranked or ranked[0][0] == 0:
            continue
        sidecar = sidecars[ranked[0][1]]
        entries = [h for e in (sidecar.get("spec") or {}).get("egress") or [] for h in e.get("hosts") or []]
        needs = [(h, "JWKS host", "every token is refused 503 jwks_unavailable") for h in sidecar_egress_hosts(policy, ns)]
        needs += [(h, "replay store host", "every proof is refused 503 dpop_replay_store_unavailable")
                  for h in replay_mesh.sidecar_egress_host(policy, ns)]
        for want, what, outcome in needs:
            if not any(_covers(e, want, ns) for e in entries):
                errors.append(
                    f"Sidecar {ns}/{(sidecar.get('metadata') or {}).get('name')}: egress.hosts lacks `{want}`, the {what} of "
                    f"WasmPlugin {ns}/{meta.get('name')}: Istio does not push that "
                    f"cluster to the proxy and {outcome}"
                )
    return sorted(set(errors))
