"""tools/gen_wasmplugins.py + tools/replay_mesh.py: what each `dpop.replay_scope` needs from the
mesh (docs/platform-guide.md, "Replay across replicas"). There is no cluster here: the output
is checked field by field and against Istio's CRDs / the Kubernetes schemas offline
(tests/mesh/test_validation.py's validators)."""

from __future__ import annotations

import copy

import pytest
import yaml

from test_manifests import DEPLOY, LOCK, PLACEHOLDER_POLICY, make_root, run_gen_all
from test_validation import istio_errors, k8s_errors, wasmplugin_errors

STORE_HOST = "etcd.replay.svc.cluster.local"
EXTERNAL_STORE = "etcd.example.net"
CALLERS = ["cluster.local/ns/istio-system/sa/istio-ingressgateway"]


def api_policy(cluster: str = f"outbound|2379||{STORE_HOST}") -> dict:
    p = copy.deepcopy(PLACEHOLDER_POLICY)
    p["dpop"] = {"replay_scope": "api", "replay_store": {"cluster": cluster, "kind": "etcd", "key_prefix": "fg/"}}
    return p


def partitioned_policy() -> dict:
    p = copy.deepcopy(PLACEHOLDER_POLICY)
    p["dpop"] = {"replay_scope": "partitioned"}
    return p


def store(**over) -> dict:
    s = {"host": STORE_HOST, "port": 2379, "tls": {"mode": "MUTUAL", "credential_name": "fapi-guard-etcd-client"},
         "store_workload": {"namespace": "replay", "selector": {"app": "etcd"}}}
    return s | over


def partition(**over) -> dict:
    p = {"host": "placeholder.apis.svc.cluster.local", "callers": CALLERS,
         "gateway_namespace": "istio-system", "gateway_selector": {"istio": "ingressgateway"}}
    return p | over


def gen(gen_wasmplugins, tmp_path, policy, deploy) -> list[dict]:
    return run_gen_all(gen_wasmplugins, make_root(tmp_path, policy=policy, deploy=deploy))


def by_name(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def valid(doc: dict) -> list[str]:
    """The same validators as the committed manifests' (tests/mesh/test_validation.py)."""
    from test_validation import crd_to_schema, CRD_PATH

    if doc["kind"] == "WasmPlugin":
        return wasmplugin_errors(doc, crd_to_schema(CRD_PATH, "WasmPlugin", "v1alpha1"))
    if doc["apiVersion"].split("/")[0] in ("networking.istio.io", "security.istio.io"):
        return istio_errors(doc)
    return k8s_errors(doc)


# ---------- replay_scope: api ----------


def test_in_cluster_store_gets_mtls_origination_and_a_network_policy(gen_wasmplugins, tmp_path):
    docs = by_name(gen(gen_wasmplugins, tmp_path, api_policy(), DEPLOY | {"replay_store": store()}))
    assert ("ServiceEntry", "placeholder-api-replay-store") not in docs, "an in-cluster Service has Istio's cluster already"
    dr = docs[("DestinationRule", "placeholder-api-replay-store")]
    assert dr["metadata"]["namespace"] == "apis" and dr["spec"]["host"] == STORE_HOST
    assert dr["spec"]["exportTo"] == ["."]
    assert dr["spec"]["trafficPolicy"]["portLevelSettings"] == [{
        "port": {"number": 2379},
        "tls": {"mode": "MUTUAL", "credentialName": "fapi-guard-etcd-client", "sni": STORE_HOST}}]
    np = docs[("NetworkPolicy", "placeholder-api-replay-store-clients")]
    assert np["metadata"]["namespace"] == "replay"
    assert np["spec"]["podSelector"] == {"matchLabels": {"app": "etcd"}}
    guards, members = np["spec"]["ingress"]
    assert guards == {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "apis"}},
                                "podSelector": {"matchLabels": {"app": "placeholder"}}}],
                      "ports": [{"protocol": "TCP", "port": 2379}]}
    assert members == {"from": [{"podSelector": {"matchLabels": {"app": "etcd"}}}]}
    for d in docs.values():
        assert not valid(d), (d["kind"], valid(d))


def test_external_store_gets_a_service_entry(gen_wasmplugins, tmp_path):
    deploy = DEPLOY | {"replay_store": {"host": EXTERNAL_STORE, "port": 2379,
                                        "tls": {"mode": "MUTUAL", "credential_name": "fapi-guard-etcd-client"}}}
    docs = by_name(gen(gen_wasmplugins, tmp_path, api_policy(f"outbound|2379||{EXTERNAL_STORE}"), deploy))
    se = docs[("ServiceEntry", "placeholder-api-replay-store")]
    assert se["spec"] == {"hosts": [EXTERNAL_STORE], "exportTo": ["."], "location": "MESH_EXTERNAL", "resolution": "DNS",
                          "ports": [{"number": 2379, "name": "http-etcd", "protocol": "HTTP"}]}
    assert docs[("DestinationRule", "placeholder-api-replay-store")]["spec"]["host"] == EXTERNAL_STORE
    assert not any(k[0] == "NetworkPolicy" for k in docs)
    for d in docs.values():
        assert not valid(d), (d["kind"], valid(d))


def test_plaintext_store_only_when_allowed(gen_wasmplugins, tmp_path):
    plain = store(tls={"mode": "DISABLE"})
    with pytest.raises(gen_wasmplugins.GenError, match=r"`replay_store.tls.mode: DISABLE`.*allow_plaintext: true"):
        gen(gen_wasmplugins, tmp_path / "a", api_policy(), DEPLOY | {"replay_store": plain})
    docs = by_name(gen(gen_wasmplugins, tmp_path / "b", api_policy(), DEPLOY | {"replay_store": plain | {"allow_plaintext": True}}))
    dr = docs[("DestinationRule", "placeholder-api-replay-store")]
    assert dr["spec"]["trafficPolicy"]["portLevelSettings"][0]["tls"] == {"mode": "DISABLE"}


@pytest.mark.parametrize("cluster", [
    "fapi_guard_replay_store",                      # the plain-Envoy name: no such cluster in Istio
    f"outbound|2380||{STORE_HOST}",                 # the peer port
    "outbound|2379||etcd.other.svc.cluster.local",  # another host
])
def test_store_cluster_must_be_istios_name_for_the_host(gen_wasmplugins, tmp_path, cluster):
    with pytest.raises(gen_wasmplugins.GenError, match=rf"dpop.replay_store.cluster must be `outbound\|2379\|\|{STORE_HOST}`"):
        gen(gen_wasmplugins, tmp_path, api_policy(cluster), DEPLOY | {"replay_store": store()})


@pytest.mark.parametrize("field,value,msg", [
    ("host", "ETCD", r"`replay_store.host` must be a DNS name"),
    ("port", 0, r"`replay_store.port` must be a port number"),
    ("port", "2379", r"`replay_store.port` must be a port number"),
    ("tls", {"mode": "SIMPLE"}, r"`replay_store.tls` must be"),
    ("tls", {"mode": "MUTUAL"}, r"`replay_store.tls.credential_name` must name the Secret"),
    ("allow_plaintext", True, r"`replay_store.allow_plaintext` is only for `tls.mode: DISABLE`"),
    ("store_workload", {"namespace": "replay"}, r"`replay_store.store_workload` must be \{namespace, selector\}"),
    ("store_workload", {"namespace": "replay", "selector": {"app": "*"}}, r"`replay_store.store_workload.selector`"),
    ("user", "root", r"`replay_store`: unknown field\(s\) \['user'\]"),
])
def test_bad_replay_store_fields_are_refused_by_name(gen_wasmplugins, tmp_path, field, value, msg):
    with pytest.raises(gen_wasmplugins.GenError, match=msg):
        gen(gen_wasmplugins, tmp_path, api_policy(), DEPLOY | {"replay_store": store(**{field: value})})


def test_scope_and_deploy_fields_must_agree(gen_wasmplugins, tmp_path):
    with pytest.raises(gen_wasmplugins.GenError, match=r"`dpop.replay_scope: api` needs `replay_store` in the deploy file"):
        gen(gen_wasmplugins, tmp_path / "a", api_policy(), DEPLOY)
    with pytest.raises(gen_wasmplugins.GenError, match=r"`replay_store` is only for `dpop.replay_scope: api` \(the policy has `replica`\)"):
        gen(gen_wasmplugins, tmp_path / "b", PLACEHOLDER_POLICY, DEPLOY | {"replay_store": store()})
    with pytest.raises(gen_wasmplugins.GenError, match=r"`partition` is only for `dpop.replay_scope: partitioned`"):
        gen(gen_wasmplugins, tmp_path / "c", api_policy(), DEPLOY | {"replay_store": store(), "partition": partition()})
    with pytest.raises(gen_wasmplugins.GenError, match=r"`dpop.replay_scope: partitioned` needs `partition`"):
        gen(gen_wasmplugins, tmp_path / "d", partitioned_policy(), DEPLOY)
    # replica (the default): nothing besides the usual manifests.
    kinds = {d["kind"] for d in gen(gen_wasmplugins, tmp_path / "e", PLACEHOLDER_POLICY, DEPLOY)}
    assert not kinds & {"NetworkPolicy", "AuthorizationPolicy", "PeerAuthentication"}


def _sidecar(tmp_path, hosts):
    f = tmp_path / "sidecar.yaml"
    f.write_text(yaml.safe_dump({"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
                                 "metadata": {"name": "s", "namespace": "apis"},
                                 "spec": {"egress": [{"hosts": hosts}]}}))
    return f


def test_sidecar_check_covers_the_store_host(gen_wasmplugins, tmp_path):
    root = make_root(tmp_path, policy=api_policy(), deploy=DEPLOY | {"replay_store": store()})
    assert gen_wasmplugins.main(["--root", str(root)]) == 0
    errors = gen_wasmplugins.check_sidecars([_sidecar(tmp_path, ["./*"])], [root])
    assert errors == [
        "Sidecar apis/s: egress.hosts lacks `replay/etcd.replay.svc.cluster.local`, the replay store host of WasmPlugin "
        "apis/placeholder-api-guard: Istio does not push that cluster to the proxy and every proof is refused 503 "
        "dpop_replay_store_unavailable"]
    assert gen_wasmplugins.check_sidecars([_sidecar(tmp_path, ["./*", "replay/*"])], [root]) == []
    # An external store: its ServiceEntry is in the API's namespace.
    ext = make_root(tmp_path / "x", policy=api_policy(f"outbound|2379||{EXTERNAL_STORE}"),
                    deploy=DEPLOY | {"replay_store": {"host": EXTERNAL_STORE, "port": 2379,
                                                      "tls": {"mode": "MUTUAL", "credential_name": "c"}}})
    assert gen_wasmplugins.main(["--root", str(ext)]) == 0
    assert "lacks `apis/etcd.example.net`" in gen_wasmplugins.check_sidecars([_sidecar(tmp_path, ["istio-system/*"])], [ext])[0]
    assert gen_wasmplugins.check_sidecars([_sidecar(tmp_path, ["./etcd.example.net", "./issuer.test"])], [ext]) == []


# ---------- replay_scope: partitioned ----------


@pytest.mark.parametrize("lb,want", [
    (None, {"httpHeaderName": "x-fapi-guard-partition", "ringHash": {"minimumRingSize": 1024}}),
    ("maglev", {"httpHeaderName": "x-fapi-guard-partition", "maglev": {"tableSize": 65537}}),
])
def test_partitioned_hashes_locks_down_and_plugs_the_layer(gen_wasmplugins, tmp_path, lb, want):
    part = partition() | ({"load_balancer": lb} if lb else {})
    docs = by_name(gen(gen_wasmplugins, tmp_path, partitioned_policy(), DEPLOY | {"partition": part}))
    dr = docs[("DestinationRule", "placeholder-api-partition")]
    assert dr["metadata"]["namespace"] == "apis" and "exportTo" not in dr["spec"]
    assert dr["spec"] == {"host": "placeholder.apis.svc.cluster.local",
                          "trafficPolicy": {"loadBalancer": {"consistentHash": want}}}
    pa = docs[("PeerAuthentication", "placeholder-api-partition-mtls")]
    assert pa["spec"] == {"selector": {"matchLabels": {"app": "placeholder"}}, "mtls": {"mode": "STRICT"}}
    ap = docs[("AuthorizationPolicy", "placeholder-api-partition-callers")]
    assert ap["spec"] == {"selector": {"matchLabels": {"app": "placeholder"}}, "action": "ALLOW",
                          "rules": [{"from": [{"source": {"principals": CALLERS}}]}]}
    api_wp = docs[("WasmPlugin", "placeholder-api-guard")]
    wp = docs[("WasmPlugin", "placeholder-api-partition")]
    assert wp["metadata"]["namespace"] == "istio-system"
    assert wp["spec"]["selector"] == {"matchLabels": {"istio": "ingressgateway"}}
    assert wp["spec"]["pluginName"] == "fapi_guard:partition"
    assert (wp["spec"]["url"], wp["spec"]["sha256"]) == (api_wp["spec"]["url"], api_wp["spec"]["sha256"])
    assert wp["spec"]["failStrategy"] == "FAIL_CLOSE" and wp["spec"]["phase"] == "AUTHN"
    assert wp["spec"]["match"] == [{"mode": "CLIENT"}]
    assert wp["spec"]["pluginConfig"] == partitioned_policy()
    assert api_wp["spec"]["pluginName"] == "fapi_guard:token,dpop", "the API keeps its own plugin"
    for d in docs.values():
        assert not valid(d), (d["kind"], valid(d))


def test_the_layers_plugin_is_not_checked_as_a_sidecars(gen_wasmplugins, tmp_path):
    root = make_root(tmp_path, policy=partitioned_policy(), deploy=DEPLOY | {"partition": partition()})
    assert gen_wasmplugins.main(["--root", str(root)]) == 0
    f = tmp_path / "sidecar.yaml"
    f.write_text(yaml.safe_dump({"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
                                 "metadata": {"name": "s", "namespace": "istio-system"},
                                 "spec": {"egress": [{"hosts": ["default/*"]}]}}))
    assert gen_wasmplugins.check_sidecars([f], [root]) == []


@pytest.mark.parametrize("over,msg", [
    ({"callers": []}, r"`partition.callers` must be a non-empty list of principals"),
    ({"callers": ["spiffe://cluster.local/ns/x/sa/y"]}, r"`partition.callers` must be"),
    ({"callers": CALLERS * 2}, r"`partition.callers` lists a principal twice"),
    ({"host": "fhir.example.net"}, r"`partition.host` must be the API's Service"),
    ({"gateway_selector": {}}, r"`partition.gateway_selector` must be a non-empty map"),
    ({"gateway_namespace": "Istio"}, r"`partition.gateway_namespace` must be a DNS-1123 label"),
    ({"load_balancer": "least_request"}, r"`partition.load_balancer` must be one of \['maglev', 'ring_hash'\]"),
    ({"weights": 1}, r"`partition`: unknown field\(s\) \['weights'\]"),
])
def test_bad_partition_fields_are_refused_by_name(gen_wasmplugins, tmp_path, over, msg):
    with pytest.raises(gen_wasmplugins.GenError, match=msg):
        gen(gen_wasmplugins, tmp_path, partitioned_policy(), DEPLOY | {"partition": partition(**over)})


def test_partition_needs_every_field_and_sidecar_replicas(gen_wasmplugins, tmp_path):
    p = partition()
    p.pop("callers")
    with pytest.raises(gen_wasmplugins.GenError, match=r"`partition` needs \['callers'\]"):
        gen(gen_wasmplugins, tmp_path / "a", partitioned_policy(), DEPLOY | {"partition": p})
    gw = {k: v for k, v in DEPLOY.items() if k != "selector"} | {
        "target_refs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}], "partition": partition()}
    with pytest.raises(gen_wasmplugins.GenError, match=r"`partition` needs the API's replicas selected by `selector`"):
        gen(gen_wasmplugins, tmp_path / "b", partitioned_policy(), gw)


def test_validators_catch_broken_security_manifests(gen_wasmplugins, tmp_path):
    """The CRD / schema checks used above can fail on these kinds."""
    docs = by_name(gen(gen_wasmplugins, tmp_path, partitioned_policy(), DEPLOY | {"partition": partition()}))
    ap = copy.deepcopy(docs[("AuthorizationPolicy", "placeholder-api-partition-callers")])
    ap["spec"]["action"] = "PERMIT"
    assert valid(ap)
    pa = copy.deepcopy(docs[("PeerAuthentication", "placeholder-api-partition-mtls")])
    pa["spec"]["mtls"]["mode"] = "STRICTEST"
    assert valid(pa)
    dr = copy.deepcopy(docs[("DestinationRule", "placeholder-api-partition")])
    dr["spec"]["trafficPolicy"]["loadBalancer"]["consistentHash"]["httpHeader"] = "x"
    assert valid(dr)
    np = by_name(gen(gen_wasmplugins, tmp_path / "s", api_policy(), DEPLOY | {"replay_store": store()}))[
        ("NetworkPolicy", "placeholder-api-replay-store-clients")]
    np["spec"]["ingress"][0]["ports"][0]["port"] = [2379]
    assert valid(np)
