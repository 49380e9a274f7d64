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
    "issuers": [{"issuer": "https://issuer.test", "jwks_uri": "https://issuer.test/jwks", "jwks_cluster": "outbound|443||issuer.test"}],
    "token": {"schemes": ["DPoP"], "clock_skew_seconds": 1000000},
    "routes": [{"path_prefix": "/metadata", "methods": ["GET"], "require": "none"}],
}
DEPLOY = {"namespace": "apis", "selector": {"app": "placeholder"}, "image": {"registry": "reg.test:5000", "repository": "fg", "tag": "1.2.3"}}


def make_root(tmp: Path, policy=None, deploy=None, stem="placeholder-api") -> Path:
    root = tmp / "root"
    (root / "deploy").mkdir(parents=True)
    (root / f"{stem}.json").write_text(json.dumps(policy or PLACEHOLDER_POLICY))
    if deploy is not False:
        (root / "deploy" / f"{stem}.json").write_text(json.dumps(deploy or DEPLOY))
    return root


def docs_of(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def run_gen(gen, root: Path, lock: Path = LOCK) -> list[dict]:
    result, _ = gen.generate([root], lock)
    (text,) = result[root].values()
    return docs_of(text)


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


def test_one_plugin_per_filter_in_order_fail_closed(gen_wasmplugins, tmp_path):
    docs = run_gen(gen_wasmplugins, make_root(tmp_path))
    lock = json.loads(LOCK.read_text())["filters"]
    assert [d["metadata"]["name"] for d in docs] == ["placeholder-api-token", "placeholder-api-dpop", "placeholder-api-fhir-scope"]
    priorities = [d["spec"]["priority"] for d in docs]
    assert priorities == sorted(priorities, reverse=True) and len(set(priorities)) == 3, "token > dpop > fhir-scope"
    for d, name in zip(docs, ["token", "dpop", "fhir-scope"]):
        spec = d["spec"]
        assert d["apiVersion"] == "extensions.istio.io/v1alpha1" and d["kind"] == "WasmPlugin"
        assert d["metadata"]["namespace"] == "apis"
        assert spec["phase"] == "AUTHN"
        assert spec["failStrategy"] == "FAIL_CLOSE"
        assert spec["type"] == "HTTP"
        assert spec["url"] == f"oci://reg.test:5000/fg/{name}:1.2.3"
        assert "sha256:" + spec["sha256"] == lock[name]["image_manifest_digest"]
        assert d["metadata"]["annotations"]["fapi-guard/wasm-sha256"] == lock[name]["wasm_sha256"]
        assert spec["pluginConfig"] == PLACEHOLDER_POLICY, "pluginConfig must be the policy, unchanged"
        assert spec["selector"] == {"matchLabels": {"app": "placeholder"}}
        assert spec["match"] == [{"mode": "SERVER"}]
        assert "targetRefs" not in spec


def test_plugin_names_match_the_envoy_renderer_root_ids(gen_wasmplugins):
    import sys

    sys.path.insert(0, str(REPO_ROOT / "envoy"))
    import render

    rendered = render.wasm_filter("token", "{}", "/w")["typed_config"]["config"]["root_id"]
    assert gen_wasmplugins.FILTERS["token"][1] == rendered
    for ours, theirs in zip(gen_wasmplugins.FILTERS, render.ORDER):
        assert gen_wasmplugins.FILTERS[ours][1] == render.wasm_filter(theirs, "{}", "/w")["typed_config"]["config"]["root_id"]


def test_target_refs_and_ports_and_subset(gen_wasmplugins, tmp_path):
    deploy = dict(DEPLOY)
    deploy.pop("selector")
    deploy |= {
        "target_refs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}],
        "match_ports": [8443],
        "filters": ["fhir-scope", "token"],
        "image_pull_policy": "Always",
    }
    docs = run_gen(gen_wasmplugins, make_root(tmp_path, deploy=deploy))
    assert [d["metadata"]["name"] for d in docs] == ["placeholder-api-token", "placeholder-api-fhir-scope"]
    for d in docs:
        assert d["spec"]["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}]
        assert d["spec"]["match"] == [{"mode": "SERVER", "ports": [{"number": 8443}]}]
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
    "image-missing-tag": DEPLOY | {"image": {"registry": "r", "repository": "p"}},
    "bad-port": DEPLOY | {"match_ports": [0]},
    "no-token-filter": DEPLOY | {"filters": ["dpop"]},
    "unknown-filter": DEPLOY | {"filters": ["token", "waf"]},
    "pull-policy-never": DEPLOY | {"image_pull_policy": "Never"},
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


def test_non_istio_jwks_cluster_is_reported(gen_wasmplugins, tmp_path):
    policy = json.loads(json.dumps(PLACEHOLDER_POLICY))
    policy["issuers"][0]["jwks_cluster"] = "my_idp"
    _, notes = gen_wasmplugins.generate([make_root(tmp_path, policy=policy)], LOCK)
    assert any("my_idp" in n and "not an Istio cluster name" in n for n in notes)


def test_same_api_in_two_roots_is_refused(gen_wasmplugins, tmp_path):
    a = make_root(tmp_path / "a")
    b = make_root(tmp_path / "b")
    with pytest.raises(gen_wasmplugins.GenError, match="also defined"):
        gen_wasmplugins.generate([a, b], LOCK)


def test_lock_without_a_filter_digest_is_refused(gen_wasmplugins, tmp_path):
    lock = json.loads(LOCK.read_text())
    del lock["filters"]["dpop"]
    bad = tmp_path / "bad.lock.json"
    bad.write_text(json.dumps(lock))
    with pytest.raises(gen_wasmplugins.GenError, match="dpop"):
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
                assert d["spec"]["pluginConfig"] == policy, path


def test_cli_writes_to_out_for_one_root(gen_wasmplugins, tmp_path):
    root = make_root(tmp_path)
    out = tmp_path / "elsewhere"
    assert gen_wasmplugins.main(["--root", str(root), "--out", str(out)]) == 0
    assert (out / "placeholder-api.yaml").is_file()
    with pytest.raises(SystemExit):
        gen_wasmplugins.main(["--out", str(out)])  # two default roots, one --out
    shutil.rmtree(out)
