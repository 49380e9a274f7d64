"""What each `dpop.replay_scope` needs from the mesh besides the WasmPlugin (docs/dpop.md,
"Replay across replicas"; docs/platform-guide.md, "Replay across replicas"). Called by
tools/gen_wasmplugins.py, from the policy and two optional deploy-file fields:

  "replay_store": {                              # replay_scope "api": the etcd all replicas claim in
    "host": "etcd.replay.svc.cluster.local",     # or an external DNS name
    "port": 2379,
    "tls": {"mode": "MUTUAL", "credential_name": "fapi-guard-etcd-client"},   # or {"mode": "DISABLE"}
    "allow_plaintext": true,                     # required with mode DISABLE, refused otherwise
    "store_workload": {"namespace": "replay", "selector": {"app": "etcd"}}      # optional
  }
  "partition": {                                 # replay_scope "partitioned": the layer in front
    "host": "fhir.apis.svc.cluster.local",       # the API's Service, as the layer addresses it
    "callers": ["cluster.local/ns/istio-system/sa/istio-ingressgateway"],
    "gateway_namespace": "istio-system",
    "gateway_selector": {"istio": "ingressgateway"},
    "load_balancer": "ring_hash"                 # optional: ring_hash (default) or maglev
  }

`api`: a ServiceEntry for a store outside the cluster (in-cluster Services already have Istio's
cluster), a DestinationRule originating TLS (client certificate from `credential_name`) to it,
and, with `store_workload`, a NetworkPolicy letting only the guard's pods (and the store's own
members) reach the store's pods. The policy's `dpop.replay_store.cluster` must be Istio's name
for that cluster, `outbound|<port>||<host>` (the check jwks_egress makes for `jwks_cluster`).

`partitioned`: a DestinationRule for the API's host hashing on `x-fapi-guard-partition`
(ring hash or Maglev), an AuthorizationPolicy on the API's pods allowing only the partitioning
layer's principals, a PeerAuthentication STRICT for them (principals need mTLS), and a
WasmPlugin at the layer (root id `fapi_guard:partition`, the same image and digest).

Only the Python standard library is used.
"""

from __future__ import annotations

import re

IN_CLUSTER_HOST = re.compile(r"^[a-z0-9.-]+\.svc(\.cluster\.local)?$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# An Istio principal as AuthorizationPolicy `source.principals` reads it (SPIFFE id without
# `spiffe://`: <trust domain>/ns/<namespace>/sa/<service account>).
PRINCIPAL = re.compile(r"^[a-z0-9.-]+/ns/[a-z0-9-]+/sa/[a-z0-9.-]+$")
# The header the partitioning layer's guard sets (hex digest of the proof's (jkt, jti)).
PARTITION_HEADER = "x-fapi-guard-partition"
REPLAY_STORE_KEYS = {"host", "port", "tls", "allow_plaintext", "store_workload"}
PARTITION_KEYS = {"host", "callers", "gateway_namespace", "gateway_selector", "load_balancer"}
TLS_MODES = ("MUTUAL", "DISABLE")
LOAD_BALANCERS = {"ring_hash": "ringHash", "maglev": "maglev"}


class ReplayMeshError(Exception):
    pass


def _labels_map(v: object) -> bool:
    return isinstance(v, dict) and bool(v) and all(
        isinstance(k, str) and isinstance(x, str) and k and "*" not in k + x for k, x in v.items())


def _port(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65535


def check_deploy(where: str, d: dict) -> None:
    """The deploy file's `replay_store` and `partition`, each error naming the field."""
    if "replay_store" in d:
        _check_store(where, d["replay_store"])
    if "partition" in d:
        _check_partition(where, d, d["partition"])


def _check_store(where: str, s: object) -> None:
    if not isinstance(s, dict):
        raise ReplayMeshError(f"{where}: `replay_store` must be an object {{host, port, tls}}")
    unknown = set(s) - REPLAY_STORE_KEYS
    if unknown:
        raise ReplayMeshError(f"{where}: `replay_store`: unknown field(s) {sorted(unknown)}")
    host = s.get("host")
    if not isinstance(host, str) or not DNS1123_SUBDOMAIN.match(host) or len(host) > 253:
        raise ReplayMeshError(f"{where}: `replay_store.host` must be a DNS name (the store's Service or external host)")
    if not _port(s.get("port")):
        raise ReplayMeshError(f"{where}: `replay_store.port` must be a port number (etcd's client port, 2379)")
    tls = s.get("tls")
    if not isinstance(tls, dict) or tls.get("mode") not in TLS_MODES or set(tls) - {"mode", "credential_name", "sni"}:
        raise ReplayMeshError(f"{where}: `replay_store.tls` must be {{mode: MUTUAL, credential_name[, sni]}} or {{mode: DISABLE}}")
    if tls["mode"] == "MUTUAL":
        cred = tls.get("credential_name")
        if not isinstance(cred, str) or not DNS1123_SUBDOMAIN.match(cred) or len(cred) > 253:
            raise ReplayMeshError(
                f"{where}: `replay_store.tls.credential_name` must name the Secret with the guard's etcd client "
                "certificate, key and the store's CA (in the API's namespace)")
        sni = tls.get("sni", host)
        if not isinstance(sni, str) or not DNS1123_SUBDOMAIN.match(sni):
            raise ReplayMeshError(f"{where}: `replay_store.tls.sni` must be a DNS name")
        if "allow_plaintext" in s:
            raise ReplayMeshError(f"{where}: `replay_store.allow_plaintext` is only for `tls.mode: DISABLE`")
    else:
        if set(tls) != {"mode"}:
            raise ReplayMeshError(f"{where}: `replay_store.tls` with mode DISABLE takes no other field")
        if s.get("allow_plaintext") is not True:
            raise ReplayMeshError(
                f"{where}: `replay_store.tls.mode: DISABLE` sends every claim in plain text to the store, which anyone on "
                "the path could forge or replay: set `replay_store.allow_plaintext: true` to say so, or use MUTUAL")
    if "allow_plaintext" in s and not isinstance(s["allow_plaintext"], bool):
        raise ReplayMeshError(f"{where}: `replay_store.allow_plaintext` must be true or false")
    wl = s.get("store_workload")
    if wl is not None:
        if not isinstance(wl, dict) or set(wl) != {"namespace", "selector"}:
            raise ReplayMeshError(f"{where}: `replay_store.store_workload` must be {{namespace, selector}} (the store's pods)")
        if not isinstance(wl["namespace"], str) or not DNS1123_LABEL.match(wl["namespace"]):
            raise ReplayMeshError(f"{where}: `replay_store.store_workload.namespace` must be a DNS-1123 label")
        if not _labels_map(wl["selector"]):
            raise ReplayMeshError(f"{where}: `replay_store.store_workload.selector` must be a non-empty map of label -> value, no wildcards")


def _check_partition(where: str, d: dict, p: object) -> None:
    if not isinstance(p, dict):
        raise ReplayMeshError(f"{where}: `partition` must be an object {{host, callers, gateway_namespace, gateway_selector}}")
    unknown = set(p) - PARTITION_KEYS
    if unknown:
        raise ReplayMeshError(f"{where}: `partition`: unknown field(s) {sorted(unknown)}")
    missing = sorted(PARTITION_KEYS - {"load_balancer"} - set(p))
    if missing:
        raise ReplayMeshError(f"{where}: `partition` needs {missing}")
    if "selector" not in d:
        raise ReplayMeshError(
            f"{where}: `partition` needs the API's replicas selected by `selector` (sidecars): the AuthorizationPolicy and "
            "PeerAuthentication that keep everything but the partitioning layer out select them")
    host = p["host"]
    if not isinstance(host, str) or not IN_CLUSTER_HOST.match(host) or not DNS1123_SUBDOMAIN.match(host):
        raise ReplayMeshError(f"{where}: `partition.host` must be the API's Service, <svc>.<namespace>.svc.cluster.local")
    callers = p["callers"]
    if not isinstance(callers, list) or not callers or not all(isinstance(c, str) and PRINCIPAL.match(c) for c in callers):
        raise ReplayMeshError(
            f"{where}: `partition.callers` must be a non-empty list of principals "
            "(<trust domain>/ns/<namespace>/sa/<service account>) of the partitioning layer")
    if len(set(callers)) != len(callers):
        raise ReplayMeshError(f"{where}: `partition.callers` lists a principal twice")
    if not isinstance(p["gateway_namespace"], str) or not DNS1123_LABEL.match(p["gateway_namespace"]):
        raise ReplayMeshError(f"{where}: `partition.gateway_namespace` must be a DNS-1123 label")
    if not _labels_map(p["gateway_selector"]):
        raise ReplayMeshError(f"{where}: `partition.gateway_selector` must be a non-empty map of label -> value, no wildcards")
    if p.get("load_balancer", "ring_hash") not in LOAD_BALANCERS:
        raise ReplayMeshError(f"{where}: `partition.load_balancer` must be one of {sorted(LOAD_BALANCERS)}")


def store_cluster(store: dict) -> str:
    """Istio's outbound cluster for the store's host and port."""
    return f"outbound|{store['port']}||{store['host']}"


def scope_of(policy: dict) -> str:
    dpop = policy.get("dpop")
    return (dpop.get("replay_scope") if isinstance(dpop, dict) else None) or "replica"


def check_policy(policy: dict, deploy: dict, where: str, deploy_where: str) -> None:
    """The policy's scope against the deploy file: each scope's fields present, the others not,
    and `dpop.replay_store.cluster` the cluster the generated manifests give the proxy."""
    scope = scope_of(policy)
    for field, wants in (("replay_store", "api"), ("partition", "partitioned")):
        if field in deploy and scope != wants:
            raise ReplayMeshError(f"{deploy_where}: `{field}` is only for `dpop.replay_scope: {wants}` (the policy has `{scope}`)")
        if scope == wants and field not in deploy:
            raise ReplayMeshError(f"{where}: `dpop.replay_scope: {wants}` needs `{field}` in the deploy file (docs/platform-guide.md, \"Replay across replicas\")")
    if scope != "api":
        return
    store = (policy.get("dpop") or {}).get("replay_store")
    cluster = store.get("cluster") if isinstance(store, dict) else None
    want = store_cluster(deploy["replay_store"])
    if cluster != want:
        raise ReplayMeshError(
            f"{where}: dpop.replay_store.cluster must be `{want}` (Istio's cluster for the deploy file's "
            f"replay_store host and port), not `{cluster}`: no other cluster exists in the proxy, and every claim "
            "would fail closed (503 dpop_replay_store_unavailable)")


def _meta(name: str, namespace: str, labels: dict) -> dict:
    return {"name": name, "namespace": namespace, "labels": labels}


def store_manifests(api: str, deploy: dict, labels: dict) -> list[dict]:
    """`replay_scope: api`: reach the store (ServiceEntry for an external host, a DestinationRule
    originating TLS) and, with `store_workload`, keep everyone else off it (NetworkPolicy)."""
    s = deploy["replay_store"]
    host, port, tls = s["host"], s["port"], s["tls"]
    ns = deploy["namespace"]
    docs: list[dict] = []
    if not IN_CLUSTER_HOST.match(host):
        docs.append({
            "apiVersion": "networking.istio.io/v1",
            "kind": "ServiceEntry",
            "metadata": _meta(f"{api}-replay-store", ns, labels),
            "spec": {
                "hosts": [host],
                "exportTo": ["."],
                "location": "MESH_EXTERNAL",
                "resolution": "DNS",
                # HTTP: the guard's calls are HTTP/JSON (etcd's gateway); the sidecar adds the TLS.
                "ports": [{"number": port, "name": "http-etcd", "protocol": "HTTP"}],
            },
        })
    if tls["mode"] == "MUTUAL":
        # Istio originates TLS with the client certificate of Secret `credentialName` (in the
        # workload's namespace for a sidecar): etcd's --client-cert-auth checks it.
        port_tls: dict = {"mode": "MUTUAL", "credentialName": tls["credential_name"], "sni": tls.get("sni", host)}
    else:
        port_tls = {"mode": "DISABLE"}
    docs.append({
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": _meta(f"{api}-replay-store", ns, labels),
        "spec": {
            "host": host,
            "exportTo": ["."],
            "trafficPolicy": {"portLevelSettings": [{"port": {"number": port}, "tls": port_tls}]},
        },
    })
    wl = s.get("store_workload")
    if wl:
        store_pods = {"matchLabels": dict(sorted(wl["selector"].items()))}
        docs.append({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _meta(f"{api}-replay-store-clients", wl["namespace"], labels),
            "spec": {
                "podSelector": store_pods,
                "policyTypes": ["Ingress"],
                "ingress": [
                    # The guard's pods, on the client port only.
                    {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                               "podSelector": {"matchLabels": dict(sorted(deploy["selector"].items()))}}],
                     "ports": [{"protocol": "TCP", "port": port}]},
                    # The store's own members (Raft peers, their health checks).
                    {"from": [{"podSelector": store_pods}]},
                ],
            },
        })
    return docs


def partition_manifests(api: str, policy: dict, deploy: dict, labels: dict, plugin: dict, root_id: str) -> list[dict]:
    """`replay_scope: partitioned`: hash on the partition header, only the layer may call the
    replicas (mTLS STRICT + ALLOW its principals), and the layer's WasmPlugin. `plugin` is the
    API's WasmPlugin (its image, digest and pull settings are reused)."""
    p = deploy["partition"]
    ns = deploy["namespace"]
    selector = {"matchLabels": dict(sorted(deploy["selector"].items()))}
    lb = p.get("load_balancer", "ring_hash")
    consistent: dict = {"httpHeaderName": PARTITION_HEADER}
    # Envoy's defaults (ring: 1024 entries minimum; Maglev: 65537, a prime).
    consistent[LOAD_BALANCERS[lb]] = {"minimumRingSize": 1024} if lb == "ring_hash" else {"tableSize": 65537}
    docs: list[dict] = [
        {
            # In the API's namespace without exportTo: visible to the layer's proxies in other
            # namespaces (Istio looks a DestinationRule up in the client's, then the host's namespace).
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": _meta(f"{api}-partition", ns, labels),
            "spec": {"host": p["host"], "trafficPolicy": {"loadBalancer": {"consistentHash": consistent}}},
        },
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "PeerAuthentication",
            "metadata": _meta(f"{api}-partition-mtls", ns, labels),
            "spec": {"selector": selector, "mtls": {"mode": "STRICT"}},
        },
        {
            # ALLOW with one rule: any request not from these principals is refused (403) by the
            # replica's sidecar, so no use of a proof bypasses the hash.
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": _meta(f"{api}-partition-callers", ns, labels),
            "spec": {"selector": selector, "action": "ALLOW",
                     "rules": [{"from": [{"source": {"principals": list(p["callers"])}}]}]},
        },
    ]
    src = plugin["spec"]
    spec: dict = {"selector": {"matchLabels": dict(sorted(p["gateway_selector"].items()))}}
    for k in ("url", "sha256", "imagePullPolicy", "imagePullSecret"):
        if k in src:
            spec[k] = src[k]
    # Any HTTP filter runs before the router, which computes the hash when it picks the host.
    # CLIENT: a gateway's listeners (and a caller sidecar's outbound ones) are CLIENT class
    # (pilot/pkg/model/extensions.go, workloadModeForListenerClass).
    spec |= {"phase": "AUTHN", "priority": src["priority"], "failStrategy": "FAIL_CLOSE", "type": "HTTP",
             "pluginName": root_id, "match": [{"mode": "CLIENT"}], "pluginConfig": policy}
    wp_meta = dict(plugin["metadata"], name=f"{api}-partition", namespace=p["gateway_namespace"])
    wp_meta["labels"] = dict(wp_meta["labels"], **{"fapi-guard/filter": "partition"})
    docs.append({"apiVersion": plugin["apiVersion"], "kind": "WasmPlugin", "metadata": wp_meta, "spec": spec})
    return docs


def sidecar_egress_host(policy: dict, namespace: str) -> list[str]:
    """The store's host as a Sidecar egress host (`replay_scope: api`): `<ns>/<svc>...` for an
    in-cluster Service, else `<API namespace>/<host>` (the generated ServiceEntry)."""
    if scope_of(policy) != "api":
        return []
    store = (policy.get("dpop") or {}).get("replay_store")
    cluster = store.get("cluster") if isinstance(store, dict) else None
    if not isinstance(cluster, str) or cluster.count("|") != 3:
        return []
    host = cluster.rsplit("|", 1)[1]
    if IN_CLUSTER_HOST.match(host):
        parts = host.split(".")
        return [f"{parts[1]}/{parts[0]}.{parts[1]}.svc.cluster.local"] if len(parts) > 2 else []
    return [f"{namespace}/{host}"]
