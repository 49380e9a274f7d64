"""The mesh settings the generated WasmPlugins depend on, checked statically (no cluster here):
the stream-timeout EnvoyFilter per API, the meshConfig fragment (path normalisation) and the
Sidecar egress hosts for the issuers' JWKS (tools/mesh_settings.py, docs/platform-guide.md
"Mesh settings the guard needs")."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import render  # envoy/render.py: the plain-Envoy configs' timeouts
from conftest import REPO_ROOT

ROOTS = [REPO_ROOT / "policies", REPO_ROOT / "kind-cluster" / "policies"]
HCM = "envoy.filters.network.http_connection_manager"


def generated(root: Path) -> dict[str, list[dict]]:
    """The generated mesh settings of a root: `<api>.yaml` and `mesh-config.yaml`."""
    return {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d]
            for p in sorted((root / "deploy" / "generated" / "mesh").glob("*.yaml"))}


def deployed(root: Path) -> list[str]:
    return sorted(p.stem for p in (root / "deploy").glob("*.json") if not p.name.endswith(".lock.json"))


@pytest.mark.parametrize("root", ROOTS, ids=lambda r: str(r.relative_to(REPO_ROOT)))
def test_every_api_gets_the_stream_timeouts_of_the_plain_envoy_configs(root):
    files = generated(root)
    for api in deployed(root):
        deploy = json.loads((root / "deploy" / f"{api}.json").read_text())
        filters = [d for d in files[f"{api}.yaml"] if d["kind"] == "EnvoyFilter" and d["metadata"]["name"].startswith(f"{api}-stream-timeouts")]
        assert filters, f"{api}: no stream-timeouts EnvoyFilter"
        for ef in filters:
            assert ef["metadata"]["namespace"] == deploy["namespace"]
            (patch,) = ef["spec"]["configPatches"]
            assert patch["applyTo"] == "NETWORK_FILTER" and patch["patch"]["operation"] == "MERGE"
            assert patch["match"]["listener"]["filterChain"]["filter"]["name"] == HCM
            typed = patch["patch"]["value"]["typed_config"]
            assert typed["@type"].endswith("HttpConnectionManager")
            # The same three as envoy/render.py, so Istio holds a slow body no longer than the tests show.
            assert {k: v for k, v in typed.items() if k != "@type"} == render.STREAM_TIMEOUTS
            if "selector" in deploy:
                assert patch["match"]["context"] == "SIDECAR_INBOUND"
                assert ef["spec"]["workloadSelector"]["labels"] == deploy["selector"]
            else:
                assert patch["match"]["context"] == "GATEWAY"


def test_gateway_deploy_gets_a_gateway_timeout_filter_per_gateway(gen_wasmplugins, tmp_path):
    root = tmp_path / "p"
    (root / "deploy").mkdir(parents=True)
    policy = json.loads((REPO_ROOT / "policies" / "smart-patient-api.json").read_text())
    policy.pop("fhir", None)
    (root / "api.json").write_text(json.dumps(policy))
    refs = [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": n} for n in ("edge", "edge2")]
    deploy = {"namespace": "gw", "target_refs": refs, "image": {"registry": "r", "repository": "x", "tag": "1"}}
    (root / "deploy" / "api.json").write_text(json.dumps(deploy))
    gen_wasmplugins.generate([root], gen_wasmplugins.DEFAULT_LOCK)  # checks the files first
    result = gen_wasmplugins.generate_mesh([root])
    docs = [d for d in yaml.safe_load_all(result[root]["mesh/api.yaml"]) if d and d["kind"] == "EnvoyFilter"]
    timeouts = [d for d in docs if "stream-timeouts" in d["metadata"]["name"]]
    assert [d["spec"]["workloadSelector"]["labels"] for d in timeouts] == [
        {"gateway.networking.k8s.io/gateway-name": "edge"}, {"gateway.networking.k8s.io/gateway-name": "edge2"}]
    assert {d["spec"]["configPatches"][0]["match"]["context"] for d in timeouts} == {"GATEWAY"}


@pytest.mark.parametrize("root", ROOTS, ids=lambda r: str(r.relative_to(REPO_ROOT)))
def test_mesh_settings_fragment_passes_the_mesh_check(gen_wasmplugins, root):
    (doc,) = generated(root)["mesh-config.yaml"]
    assert doc["kind"] == "IstioOperator"
    assert doc["spec"]["meshConfig"]["pathNormalization"]["normalization"] == "DECODE_AND_MERGE_SLASHES"
    assert gen_wasmplugins.check_mesh(root / "deploy" / "generated" / "mesh" / "mesh-config.yaml") == []
    # The kind cluster installs Istio with at least what the fragment asks for.
    kind = yaml.safe_load((REPO_ROOT / "kind-cluster" / "istio-operator.yaml").read_text())
    mesh = doc["spec"]["meshConfig"]
    assert kind["spec"]["meshConfig"]["pathNormalization"] == mesh["pathNormalization"]
    kind_proxy, proxy = kind["spec"]["meshConfig"]["defaultConfig"], mesh["defaultConfig"]
    assert proxy["proxyMetadata"].items() <= kind_proxy["proxyMetadata"].items()
    for prefix in proxy["proxyStatsMatcher"]["inclusionPrefixes"]:
        assert any(prefix.startswith(k) for k in kind_proxy["proxyStatsMatcher"]["inclusionPrefixes"]), prefix


def sidecar(ns: str, hosts: list[str], labels: dict | None = None) -> dict:
    spec: dict = {"egress": [{"hosts": hosts}]}
    if labels:
        spec["workloadSelector"] = {"labels": labels}
    return {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar", "metadata": {"name": "s", "namespace": ns}, "spec": spec}


KIND = REPO_ROOT / "kind-cluster" / "policies"
ISSUER = "guard-issuer/guard-issuer.guard-issuer.svc.cluster.local"


@pytest.mark.parametrize("hosts,labels,ok", [
    (["./*", "istio-system/*"], None, False),                       # the usual lock-down: issuer's namespace missing
    (["./*", "istio-system/*", ISSUER], None, True),
    (["./*", "guard-issuer/*"], None, True),
    (["*/*"], None, True),
    (["./*", "*/guard-issuer.guard-issuer.svc.cluster.local"], None, True),
    (["./*"], {"app": "someone-else"}, True),                        # selects another workload: not limiting
    (["./*"], {"app": "hapi-fhir"}, False),
    (["~/*"], None, False),
])
def test_sidecar_check_finds_a_missing_jwks_host(gen_wasmplugins, tmp_path, hosts, labels, ok):
    f = tmp_path / "sidecar.yaml"
    f.write_text(yaml.safe_dump(sidecar("fhir", hosts, labels)))
    errors = gen_wasmplugins.check_sidecars([f], [KIND])
    assert (errors == []) is ok, errors
    if not ok:
        assert f"egress.hosts lacks `{ISSUER}`" in errors[0] and "jwks_unavailable" in errors[0]
    rc = gen_wasmplugins.main(["--root", str(KIND), "--check-sidecar", str(f)])
    assert rc == (0 if ok else 1)


def test_external_issuer_needs_its_host_in_the_api_namespace(gen_wasmplugins, tmp_path):
    # HelseID's JWKS (an external host) behind a sidecar: the generated ServiceEntry is in the
    # API's namespace (exportTo "."), so the Sidecar must list `<namespace>/<host>` or `./*`.
    root = tmp_path / "p"
    (root / "deploy").mkdir(parents=True)
    policy = json.loads((REPO_ROOT / "policies" / "helseid-sample-api.json").read_text())
    policy.pop("fhir", None)
    (root / "api.json").write_text(json.dumps(policy))
    deploy = {"namespace": "hs", "selector": {"app": "api"}, "image": {"registry": "r", "repository": "x", "tag": "1"}}
    (root / "deploy" / "api.json").write_text(json.dumps(deploy))
    assert gen_wasmplugins.main(["--root", str(root)]) == 0
    f = tmp_path / "sidecar.yaml"
    f.write_text(yaml.safe_dump(sidecar("hs", ["istio-system/*"])))
    errors = gen_wasmplugins.check_sidecars([f], [root])
    assert errors and "lacks `hs/helseid-sts.test.nhn.no`" in errors[0], errors
    for ok in (["istio-system/*", "./*"], ["./helseid-sts.test.nhn.no"], ["hs/*.nhn.no"]):
        f.write_text(yaml.safe_dump(sidecar("hs", ok)))
        assert gen_wasmplugins.check_sidecars([f], [root]) == [], ok


@pytest.mark.parametrize("root", ROOTS, ids=lambda r: str(r.relative_to(REPO_ROOT)))
def test_mesh_settings_fragment_keeps_the_guards_stats(root):
    """The stats matcher and the bootstrap through istiod the metrics need (docs/platform-guide.md,
    "Metrics"), as the mesh's default ProxyConfig: without them Istio drops `wasmcustom.fapi_guard.*`
    and the stats tags never reach the agent's bootstrap."""
    (doc,) = generated(root)["mesh-config.yaml"]
    proxy = doc["spec"]["meshConfig"]["defaultConfig"]
    assert "wasmcustom.fapi_guard" in proxy["proxyStatsMatcher"]["inclusionPrefixes"]
    assert "wasm." in proxy["proxyStatsMatcher"]["inclusionPrefixes"]
    assert proxy["proxyMetadata"]["BOOTSTRAP_XDS_AGENT"] == "true"
