"""tools/gen_wasmplugins.py: WasmPlugins generated from the policies, and no drift from them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT

ROOTS = [REPO_ROOT / "policies", REPO_ROOT / "kind-cluster" / "policies"]
LOCK = REPO_ROOT / "policies" / "deploy" / "wasm-images.lock.json"

# A stand-in policy for generator tests; the committed policies are checked by the drift test.
PLACEHOLDER_POLICY = {
    "api": {"name": "placeholder-api", "audience": "placeholder-api", "sole_audience": True},
    "issuers": [{"issuer": "https://issuer.test", "jwks_uri": "https://issuer.test/jwks", "jwks_cluster": "outbound|80||issuer.test"}],
    "token": {"schemes": ["DPoP"], "clock_skew_seconds": 1000000},
    "routes": [{"path_prefix": "/metadata", "methods": ["GET"], "require": "none"}],
}
DEPLOY = {"namespace": "apis", "selector": {"app": "placeholder"}, "image": {"registry": "reg.test:5000", "repository": "fg", "tag": "1.2.3"}}
# The same API as a FHIR API (a `fhir` section adds the FHIR scope step) in a sidecar.
FHIR_POLICY = PLACEHOLDER_POLICY | {"fhir": {"base_path": "/fhir", "hold_headers_while_buffering": False,
                                             "read_before_write_cluster": "fapi_guard_rbw_placeholder-api"}}
FHIR_DEPLOY = DEPLOY | {"app_port": 8080}


def make_root(tmp: Path, policy=None, deploy=None, stem="placeholder-api") -> Path:
    root = tmp / "root"
    (root / "deploy").mkdir(parents=True)
    (root / f"{stem}.json").write_text(json.dumps(policy or PLACEHOLDER_POLICY))
    if deploy is not False:
        (root / "deploy" / f"{stem}.json").write_text(json.dumps(deploy or DEPLOY))
    return root


def docs_of(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def is_stats(doc: dict) -> bool:
    """The `<api>-stats` EnvoyFilter every sidecar API gets (tests/mesh/test_stats_manifests.py)."""
    return doc["kind"] == "EnvoyFilter" and doc["metadata"]["name"].endswith("-stats")


def kinds(docs: list[dict]) -> set[str]:
    """The kinds of `docs` besides the `<api>-stats` EnvoyFilter."""
    return {d["kind"] for d in docs if not is_stats(d)}


def run_gen_all(gen, root: Path, lock: Path = LOCK) -> list[dict]:
    result, _ = gen.generate([root], lock)
    (text,) = result[root].values()
    return docs_of(text)


def run_gen(gen, root: Path, lock: Path = LOCK) -> list[dict]:
    return [d for d in run_gen_all(gen, root, lock) if d["kind"] == "WasmPlugin"]


def test_committed_manifests_match_the_generator(gen_wasmplugins, tmp_path):
    """Regenerate every root into a temp dir and compare byte for byte with what is committed."""
    result, _ = gen_wasmplugins.generate(ROOTS, LOCK)
    assert any(result.values()), "no API has a deploy file: nothing would be deployed"
    for root, files in result.items():
        out = tmp_path / root.relative_to(REPO_ROOT)
        out.mkdir(parents=True)
        for name, text in files.items():
            (out / name).write_text(text)
        committed_dir = root / "deploy" / "generated"
        committed = {p.name: p.read_text() for p in committed_dir.glob("*.yaml")} if committed_dir.is_dir() else {}
        generated = {p.name: p.read_text() for p in out.glob("*.yaml")}
        assert sorted(committed) == sorted(generated), f"{committed_dir}: files differ; run tools/gen_wasmplugins.py"
        for name in generated:
            assert committed[name] == generated[name], f"{committed_dir / name} drifted; run tools/gen_wasmplugins.py"
    assert gen_wasmplugins.main(["--check"]) == 0


def test_check_mode_detects_drift(gen_wasmplugins, tmp_path):
    root = make_root(tmp_path)
    assert gen_wasmplugins.main(["--root", str(root)]) == 0
    out = root / "deploy" / "generated" / "placeholder-api.yaml"
    assert gen_wasmplugins.main(["--root", str(root), "--check"]) == 0
    out.write_text(out.read_text().replace("FAIL_CLOSE", "FAIL_OPEN"))
    assert gen_wasmplugins.main(["--root", str(root), "--check"]) == 1
    out.unlink()
    assert gen_wasmplugins.main(["--root", str(root), "--check"]) == 1
    (root / "deploy" / "generated" / "stale.yaml").write_text("---\n")
    gen_wasmplugins.main(["--root", str(root)])
    assert not (root / "deploy" / "generated" / "stale.yaml").exists()


def test_one_wasmplugin_per_api_the_chain_plugin_fail_closed(gen_wasmplugins, tmp_path):
    """ONE WasmPlugin per API: the one image `guard` (fapi_guard.wasm, pinned by its digest),
    pluginName the chain root id envoy/render.py gives the chain plugin, fail closed."""
    import render

    (d,) = run_gen(gen_wasmplugins, make_root(tmp_path, policy=FHIR_POLICY, deploy=FHIR_DEPLOY))
    lock = json.loads(LOCK.read_text())["filters"]
    assert list(lock) == ["guard"] and lock["guard"]["wasm_file"] == "fapi_guard.wasm"
    spec = d["spec"]
    assert d["apiVersion"] == "extensions.istio.io/v1alpha1" and d["kind"] == "WasmPlugin"
    assert d["metadata"]["name"] == "placeholder-api-guard"
    assert d["metadata"]["namespace"] == "apis"
    assert spec["pluginName"] == "fapi_guard" == render.chain_name(render.ORDER)
    assert spec["phase"] == "AUTHN" and spec["priority"] == 300
    assert spec["failStrategy"] == "FAIL_CLOSE"
    assert spec["type"] == "HTTP"
    assert spec["url"] == "oci://reg.test:5000/fg/guard:1.2.3"
    assert "sha256:" + spec["sha256"] == lock["guard"]["image_manifest_digest"]
    assert d["metadata"]["annotations"]["fapi-guard/wasm-sha256"] == lock["guard"]["wasm_sha256"]
    assert spec["pluginConfig"] == FHIR_POLICY, "pluginConfig must be the policy, unchanged"
    assert spec["selector"] == {"matchLabels": {"app": "placeholder"}}
    assert spec["match"] == [{"mode": "SERVER"}]
    assert "targetRefs" not in spec


def test_a_subset_of_steps_is_named_in_the_plugin_name(gen_wasmplugins, tmp_path):
    """`filters` in the deploy file picks the chain's steps: the pluginName names them."""
    import render

    (sub,) = run_gen(gen_wasmplugins, make_root(tmp_path / "c", policy=FHIR_POLICY, deploy=FHIR_DEPLOY | {
        "filters": ["token", "dpop"]}))
    assert sub["spec"]["pluginName"] == "fapi_guard:token,dpop" == render.chain_name(["token", "dpop"])
    assert sub["metadata"]["name"] == "placeholder-api-guard"


@pytest.mark.parametrize("field", ["one_module", "one_plugin"])
def test_removed_layout_fields_are_refused_naming_the_one_layout(gen_wasmplugins, tmp_path, field):
    with pytest.raises(gen_wasmplugins.GenError, match=rf"\['{field}'\] removed: every API gets ONE WasmPlugin"):
        gen_wasmplugins.generate([make_root(tmp_path, deploy=DEPLOY | {field: True})], LOCK)


def test_rest_policy_runs_token_and_dpop_only(gen_wasmplugins, tmp_path):
    """No `fhir` section: no fhir_scope step (in Istio it would refuse the policy and,
    FAIL_CLOSE, take the whole API down); asking for it is refused, naming the field."""
    (d,) = run_gen(gen_wasmplugins, make_root(tmp_path / "a"))
    assert d["metadata"]["name"] == "placeholder-api-guard"
    assert d["spec"]["pluginName"] == "fapi_guard:token,dpop"
    for asked in (["token", "dpop", "fhir-scope"], ["token", "fhir-scope"]):
        with pytest.raises(gen_wasmplugins.GenError, match=r"`filters`: fhir_scope needs the policy field `fhir`"):
            gen_wasmplugins.generate([make_root(tmp_path / "-".join(asked), deploy=DEPLOY | {"filters": asked})], LOCK)
    # The committed REST policy gives manifests Istio loads: token + dpop, its jwks egress.
    root = tmp_path / "rest"
    (root / "deploy").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "policies" / "helseid-rest-api.json", root / "helseid-rest-api.json")
    (root / "deploy" / "helseid-rest-api.json").write_text(json.dumps(DEPLOY))
    docs = run_gen_all(gen_wasmplugins, root)
    assert [d["spec"]["pluginName"] for d in docs if d["kind"] == "WasmPlugin"] == ["fapi_guard:token,dpop"]
    assert kinds(docs) == {"WasmPlugin", "ServiceEntry", "DestinationRule"}


def test_plugin_names_match_the_envoy_renderer_root_ids(gen_wasmplugins, tmp_path):
    """The pluginName of each subset is the root id envoy/render.py renders for it."""
    import render

    for i, asked in enumerate((["token"], ["token", "dpop"], ["token", "fhir-scope"], ["token", "dpop", "fhir-scope"])):
        (d,) = run_gen(gen_wasmplugins, make_root(tmp_path / str(i), policy=FHIR_POLICY,
                                                 deploy=FHIR_DEPLOY | {"filters": asked}))
        steps = [gen_wasmplugins.STEP_NAME[f] for f in asked]
        rendered = render.wasm_filter(steps, "{}", "/w")["typed_config"]["config"]["root_id"]
        assert d["spec"]["pluginName"] == rendered


def test_target_refs_and_ports_and_subset(gen_wasmplugins, tmp_path):
    deploy = dict(DEPLOY)
    deploy.pop("selector")
    deploy |= {
        "target_refs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}],
        "match_ports": [8443],
        "filters": ["fhir-scope", "token"],
        "image_pull_policy": "Always",
    }
    policy = FHIR_POLICY | {"fhir": FHIR_POLICY["fhir"] | {"read_before_write_cluster": "outbound|8080||api.apis.svc.cluster.local"}}
    docs = run_gen(gen_wasmplugins, make_root(tmp_path, policy=policy, deploy=deploy))
    assert [d["metadata"]["name"] for d in docs] == ["placeholder-api-guard"]
    assert docs[0]["spec"]["pluginName"] == "fapi_guard:token,fhir_scope"
    for d in docs:
        assert d["spec"]["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}]
        # A gateway's listeners are CLIENT in Istio (pilot/pkg/model/extensions.go): SERVER never attaches.
        assert d["spec"]["match"] == [{"mode": "CLIENT", "ports": [{"number": 8443}]}]
        assert d["spec"]["imagePullPolicy"] == "Always"
        assert "selector" not in d["spec"]


BAD_DEPLOYS = {
    "both-selector-and-target-refs": DEPLOY | {"target_refs": [{"kind": "Service", "name": "x"}]},
    "neither-selector-nor-target-refs": {k: v for k, v in DEPLOY.items() if k != "selector"},
    "empty-selector": DEPLOY | {"selector": {}},
    "wildcard-selector": DEPLOY | {"selector": {"app": "*"}},
    "unknown-field": DEPLOY | {"pluginConfig": {}},
    "bad-namespace": DEPLOY | {"namespace": "Not_A_Label"},
    "target-ref-deployment": {k: v for k, v in DEPLOY.items() if k != "selector"} | {"target_refs": [{"kind": "Deployment", "name": "x"}]},
    # Istio attaches Service targetRefs only to waypoints: a sidecar would enforce nothing.
    "target-ref-service": {k: v for k, v in DEPLOY.items() if k != "selector"} | {"target_refs": [{"kind": "Service", "name": "x"}]},
    "target-ref-core-service": {k: v for k, v in DEPLOY.items() if k != "selector"} | {"target_refs": [{"group": "core", "kind": "Service", "name": "x"}]},
    "target-ref-gateway-without-group": {k: v for k, v in DEPLOY.items() if k != "selector"} | {"target_refs": [{"kind": "Gateway", "name": "x"}]},
    "pull-secret-not-a-name": DEPLOY | {"image_pull_secret": "Not A Secret"},
    "app-port-zero": DEPLOY | {"app_port": 0},
    "file-url-registry": DEPLOY | {"image": {"registry": "file:///var/wasm", "repository": "fg", "tag": "1"}},
    "image-missing-tag": DEPLOY | {"image": {"registry": "r", "repository": "p"}},
    "bad-port": DEPLOY | {"match_ports": [0]},
    "no-token-filter": DEPLOY | {"filters": ["dpop"]},
    "unknown-filter": DEPLOY | {"filters": ["token", "waf"]},
    "pull-policy-never": DEPLOY | {"image_pull_policy": "Never"},
    "one-module-removed": DEPLOY | {"one_module": False},
    "one-plugin-removed": DEPLOY | {"one_plugin": True},
}


@pytest.mark.parametrize("deploy", BAD_DEPLOYS.values(), ids=BAD_DEPLOYS.keys())
def test_bad_deploy_files_are_refused(gen_wasmplugins, tmp_path, deploy):
    with pytest.raises(gen_wasmplugins.GenError):
        gen_wasmplugins.generate([make_root(tmp_path, deploy=deploy)], LOCK)


def test_deploy_file_without_policy_is_refused(gen_wasmplugins, tmp_path):
    root = make_root(tmp_path)
    (root / "deploy" / "orphan.json").write_text(json.dumps(DEPLOY))
    with pytest.raises(gen_wasmplugins.GenError, match="no policy"):
        gen_wasmplugins.generate([root], LOCK)


def test_policy_without_deploy_file_is_reported_not_deployed(gen_wasmplugins, tmp_path):
    root = make_root(tmp_path, deploy=False)
    result, notes = gen_wasmplugins.generate([root], LOCK)
    assert result[root] == {}
    assert any("not deployed" in n for n in notes)


def test_gateway_without_ports_matches_client_mode(gen_wasmplugins, tmp_path):
    deploy = {k: v for k, v in DEPLOY.items() if k != "selector"} | {
        "target_refs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}]}
    for d in run_gen(gen_wasmplugins, make_root(tmp_path, deploy=deploy)):
        assert d["spec"]["match"] == [{"mode": "CLIENT"}]


def test_image_pull_secret_is_passed_to_istio(gen_wasmplugins, tmp_path):
    docs = run_gen(gen_wasmplugins, make_root(tmp_path, deploy=DEPLOY | {"image_pull_secret": "registry-creds"}))
    assert {d["spec"]["imagePullSecret"] for d in docs} == {"registry-creds"}
    assert all("imagePullSecret" not in d["spec"] for d in run_gen(gen_wasmplugins, make_root(tmp_path / "b")))


def _policy(**changes) -> dict:
    p = json.loads(json.dumps(PLACEHOLDER_POLICY))
    for k, v in changes.items():
        p[k] = v
    return p


def _issuer(uri: str, cluster: str) -> list[dict]:
    return [{"issuer": "https://issuer.test", "jwks_uri": uri, "jwks_cluster": cluster}]


def test_external_jwks_gets_service_entry_and_tls_origination(gen_wasmplugins, tmp_path):
    docs = run_gen_all(gen_wasmplugins, make_root(tmp_path))
    (se,) = [d for d in docs if d["kind"] == "ServiceEntry"]
    (dr,) = [d for d in docs if d["kind"] == "DestinationRule"]
    assert se["spec"]["hosts"] == ["issuer.test"] and se["spec"]["location"] == "MESH_EXTERNAL"
    assert se["spec"]["resolution"] == "DNS" and se["spec"]["exportTo"] == ["."]
    ports = {p["number"]: p for p in se["spec"]["ports"]}
    # Istio's TLS origination pattern: the filter's plain HTTP on 80 goes out as TLS to 443;
    # 443 stays TLS passthrough for the app's own HTTPS calls (no double encryption).
    assert ports[80]["protocol"] == "HTTP" and ports[80]["targetPort"] == 443
    assert ports[443]["protocol"] == "TLS"
    assert dr["spec"]["host"] == "issuer.test"
    (pls,) = dr["spec"]["trafficPolicy"]["portLevelSettings"]
    assert pls == {"port": {"number": 80}, "tls": {"mode": "SIMPLE", "sni": "issuer.test"}}
    assert "tls" not in dr["spec"]["trafficPolicy"], "port 443 must not be TLS-originated again"


def test_in_cluster_jwks_needs_no_service_entry(gen_wasmplugins, tmp_path):
    host = "issuer.idp.svc.cluster.local"
    policy = _policy(issuers=_issuer(f"http://{host}/jwks.json", f"outbound|80||{host}"))
    docs = run_gen_all(gen_wasmplugins, make_root(tmp_path, policy=policy))
    assert kinds(docs) == {"WasmPlugin"}


BAD_JWKS = {
    "short-name": _issuer("https://issuer.test/jwks", "my_idp"),
    "external-443-passthrough": _issuer("https://issuer.test/jwks", "outbound|443||issuer.test"),
    "external-other-host": _issuer("https://issuer.test/jwks", "outbound|80||other.test"),
    "external-plain-http": _issuer("http://issuer.test/jwks", "outbound|80||issuer.test"),
    "in-cluster-wrong-port": _issuer("http://i.idp.svc.cluster.local:8080/jwks", "outbound|80||i.idp.svc.cluster.local"),
}


@pytest.mark.parametrize("issuers", BAD_JWKS.values(), ids=BAD_JWKS.keys())
def test_jwks_cluster_that_would_not_exist_is_refused(gen_wasmplugins, tmp_path, issuers):
    with pytest.raises(gen_wasmplugins.GenError, match="jwks"):
        gen_wasmplugins.generate([make_root(tmp_path, policy=_policy(issuers=issuers))], LOCK)


def test_read_before_write_cluster_is_generated_for_sidecars(gen_wasmplugins, tmp_path):
    policy = _policy(fhir={"read_before_write_cluster": "fapi_guard_rbw_placeholder-api"})
    docs = run_gen_all(gen_wasmplugins, make_root(tmp_path, policy=policy, deploy=DEPLOY | {"match_ports": [8080]}))
    (ef,) = [d for d in docs if d["kind"] == "EnvoyFilter" and not is_stats(d)]
    assert ef["spec"]["workloadSelector"] == {"labels": {"app": "placeholder"}}
    (patch,) = ef["spec"]["configPatches"]
    assert patch["applyTo"] == "CLUSTER" and patch["match"] == {"context": "SIDECAR_INBOUND"}
    assert patch["patch"]["operation"] == "ADD"
    c = patch["patch"]["value"]
    assert c["name"] == "fapi_guard_rbw_placeholder-api" and c["type"] == "STATIC"
    addr = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert addr == {"address": "127.0.0.1", "port_value": 8080}
    app_port = run_gen_all(gen_wasmplugins, make_root(tmp_path / "b", policy=policy, deploy=DEPLOY | {"app_port": 9090}))
    (ef,) = [d for d in app_port if d["kind"] == "EnvoyFilter" and not is_stats(d)]
    assert "port_value: 9090" in gen_wasmplugins.to_yaml(ef)


GATEWAY = {k: v for k, v in DEPLOY.items() if k != "selector"} | {
    "target_refs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}]}
BAD_RBW = {
    # the filters' default cluster `api` exists only in the plain-Envoy configs
    "sidecar-default-api": ({}, DEPLOY | {"match_ports": [8080]}),
    "sidecar-outbound-cluster": ({"read_before_write_cluster": "outbound|8080||api.apis.svc.cluster.local"}, DEPLOY | {"match_ports": [8080]}),
    "sidecar-no-app-port": ({"read_before_write_cluster": "fapi_guard_rbw_placeholder-api"}, DEPLOY),
    "gateway-default-api": ({}, GATEWAY),
    "gateway-loopback-cluster": ({"read_before_write_cluster": "fapi_guard_rbw_placeholder-api"}, GATEWAY),
}


@pytest.mark.parametrize("fhir,deploy", BAD_RBW.values(), ids=BAD_RBW.keys())
def test_read_before_write_cluster_that_would_not_exist_is_refused(gen_wasmplugins, tmp_path, fhir, deploy):
    root = make_root(tmp_path, policy=_policy(fhir=fhir), deploy=deploy)
    with pytest.raises(gen_wasmplugins.GenError, match="read_before_write_cluster|app_port"):
        gen_wasmplugins.generate([root], LOCK)


def test_read_before_write_not_needed_without_the_fhir_filter(gen_wasmplugins, tmp_path):
    root = make_root(tmp_path, policy=_policy(fhir={}), deploy=DEPLOY | {"filters": ["token", "dpop"]})
    assert kinds(run_gen_all(gen_wasmplugins, root)) == {"WasmPlugin", "ServiceEntry", "DestinationRule"}


def test_same_api_name_twice_in_a_namespace_is_refused(gen_wasmplugins, tmp_path):
    root = make_root(tmp_path)
    (root / "second-api.json").write_text(json.dumps(PLACEHOLDER_POLICY))
    (root / "deploy" / "second-api.json").write_text(json.dumps(DEPLOY | {"selector": {"app": "other"}}))
    with pytest.raises(gen_wasmplugins.GenError, match="api.name"):
        gen_wasmplugins.generate([root], LOCK)
    (root / "deploy" / "second-api.json").write_text(json.dumps(DEPLOY | {"namespace": "elsewhere"}))
    gen_wasmplugins.generate([root], LOCK)


MESH_CONFIGS = {
    "operator-ok": ({"kind": "IstioOperator", "spec": {"meshConfig": {"pathNormalization": {"normalization": "DECODE_AND_MERGE_SLASHES"}}}}, True),
    "operator-default-base": ({"kind": "IstioOperator", "spec": {"meshConfig": {}}}, False),
    "operator-merge-only": ({"kind": "IstioOperator", "spec": {"meshConfig": {"pathNormalization": {"normalization": "MERGE_SLASHES"}}}}, False),
    "bare-mesh-none": ({"pathNormalization": {"normalization": "NONE"}}, False),
    "configmap-ok": ({"kind": "ConfigMap", "data": {"mesh": {"pathNormalization": {"normalization": "DECODE_AND_MERGE_SLASHES"}}}}, True),
}


@pytest.mark.parametrize("doc,ok", MESH_CONFIGS.values(), ids=MESH_CONFIGS.keys())
def test_mesh_config_lint(gen_wasmplugins, doc, ok):
    assert (gen_wasmplugins.mesh_config_errors(doc) == []) is ok


def test_mesh_config_lint_cli(gen_wasmplugins, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "istio"},
                                    "data": {"mesh": "pathNormalization:\n  normalization: DECODE_AND_MERGE_SLASHES\n"}}))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "istio"}, "data": {"mesh": "{}"}}))
    assert gen_wasmplugins.main(["--check-mesh", str(good)]) == 0
    assert gen_wasmplugins.main(["--check-mesh", str(bad)]) == 1


def test_same_api_in_two_roots_is_refused(gen_wasmplugins, tmp_path):
    a = make_root(tmp_path / "a")
    b = make_root(tmp_path / "b")
    with pytest.raises(gen_wasmplugins.GenError, match="also defined"):
        gen_wasmplugins.generate([a, b], LOCK)


def test_lock_without_the_module_digest_is_refused(gen_wasmplugins, tmp_path):
    lock = json.loads(LOCK.read_text())
    del lock["filters"]["guard"]
    bad = tmp_path / "bad.lock.json"
    bad.write_text(json.dumps(lock))
    with pytest.raises(gen_wasmplugins.GenError, match="image `guard`"):
        gen_wasmplugins.generate([make_root(tmp_path)], bad)


YAML_VALUES = {
    "reserved-words": ["yes", "No", "on", "null", "~", "true"],
    "numbers-as-strings": ["1e3", "0x10", "012", "1.5", "7a23d0", "1_000"],
    "punctuation": ["a: b", "#x", "- x", "{x}", "[x]", "x #y", "*x", "&x", "!x", "%x", "@x", "`x", "'q'", '"q"', "|", ">"],
    "whitespace": ["", " lead", "trail ", "two\nlines", "tab\there"],
    "unicode": ["Ærlig Åse", "名前", "emoji \U0001f600"],
    "scalars": [0, -1, 10**15, 1.25, True, False, None],
    "nesting": [{"a": [], "b": {}, "c": [{"d": [1, [2, {"e": "f"}]]}]}],
    "odd-keys": [{"yes": 1, "a b": 2, "1": 3, "x:y": 4, "": 5}],
}


@pytest.mark.parametrize("values", YAML_VALUES.values(), ids=YAML_VALUES.keys())
def test_yaml_writer_round_trips(gen_wasmplugins, values):
    doc = {"list": values, "map": {f"k{i}": v for i, v in enumerate(values)}}
    assert yaml.safe_load(gen_wasmplugins.to_yaml(doc)) == doc


def test_generated_yaml_is_the_same_data_as_the_policy(gen_wasmplugins):
    """Every committed manifest's pluginConfig is exactly its policy file."""
    for root in ROOTS:
        for path in sorted((root / "deploy" / "generated").glob("*.yaml")):
            policy = json.loads((root / f"{path.stem}.json").read_text())
            for d in docs_of(path.read_text()):
                if d["kind"] == "WasmPlugin":
                    assert d["spec"]["pluginConfig"] == policy, path
                    assert d["metadata"]["annotations"]["fapi-guard/requires-mesh-path-normalization"] == "DECODE_AND_MERGE_SLASHES"


def test_cli_writes_to_out_for_one_root(gen_wasmplugins, tmp_path):
    root = make_root(tmp_path)
    out = tmp_path / "elsewhere"
    assert gen_wasmplugins.main(["--root", str(root), "--out", str(out)]) == 0
    assert (out / "placeholder-api.yaml").is_file()
    with pytest.raises(SystemExit):
        gen_wasmplugins.main(["--out", str(out)])  # two default roots, one --out
    shutil.rmtree(out)
