"""The Envoy config the e2e tests run (envoy/render.py) builds the filter chain Istio builds from
the generated WasmPlugin (pilot/pkg/model/extensions.go: buildWasmConfig/buildVMConfig): the one
plugin, the same root_id (the chain's steps), same configuration bytes' meaning, V8, fail closed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT

import render

GENERATED = sorted((REPO_ROOT / "policies" / "deploy" / "generated").glob("*.yaml")) + sorted(
    (REPO_ROOT / "kind-cluster" / "policies" / "deploy" / "generated").glob("*.yaml")
)


def chain_steps(root_id: str) -> list[str]:
    """The steps a chain plugin root id names (filters/core/src/root_id.rs): `fapi_guard` is all
    of them, `fapi_guard:<steps>` those listed."""
    base, _, listed = root_id.partition(":")
    assert base == render.MODULE["chain_root_id"], root_id
    return listed.split(",") if listed else list(render.ORDER)


def istio_chain(plugins: list[dict]) -> list[dict]:
    """What Istio puts in the AUTHN phase: plugins by descending priority, each an
    envoy.filters.http.wasm PluginConfig (configuration = JSON of pluginConfig, root_id = pluginName)."""
    ordered = sorted(plugins, key=lambda p: -p["spec"].get("priority", 0))
    return [
        {
            "root_id": p["spec"].get("pluginName", ""),
            "configuration": p["spec"]["pluginConfig"],
            "runtime": "envoy.wasm.runtime.v8",
            "fail_closed": p["spec"].get("failStrategy", "FAIL_CLOSE") == "FAIL_CLOSE",
            "filter": p["metadata"]["labels"]["fapi-guard/filter"],
        }
        for p in ordered
        if p["spec"].get("phase") == "AUTHN"
    ]


def envoy_chain(cfg: dict) -> tuple[list[dict], list[str]]:
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    names = [f["name"] for f in hcm["http_filters"]]
    out = []
    for f in hcm["http_filters"]:
        if f["name"] != "envoy.filters.http.wasm":
            continue
        c = f["typed_config"]["config"]
        assert c["configuration"]["@type"] == "type.googleapis.com/google.protobuf.StringValue"
        out.append(
            {
                "root_id": c["root_id"],
                "configuration": json.loads(c["configuration"]["value"]),
                "runtime": c["vm_config"]["runtime"],
                "fail_closed": c.get("fail_open", False) is False and c.get("failure_policy", "FAIL_CLOSED") == "FAIL_CLOSED",
                "allow_on_headers_stop_iteration": c.get("allow_on_headers_stop_iteration", False),
            }
        )
    return out, names


def generated_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def wasm_plugins(path: Path) -> list[dict]:
    return [d for d in generated_docs(path) if d["kind"] == "WasmPlugin"]


@pytest.mark.parametrize("path", GENERATED, ids=[p.name for p in GENERATED])
def test_rendered_envoy_chain_equals_istio_chain(path: Path):
    plugins = wasm_plugins(path)
    istio = istio_chain(plugins)
    # ONE plugin per API: the one module as the chain plugin.
    assert [p["filter"] for p in istio] == [render.MODULE["name"]]
    policy = plugins[0]["spec"]["pluginConfig"]
    steps = chain_steps(istio[0]["root_id"])
    assert set(steps) <= set(render.policy_steps(policy)), steps
    cfg = render.render(policy, steps, "/wasm", 10000, 8080, 9901)
    envoy, names = envoy_chain(cfg)
    assert names[-1] == "envoy.filters.http.router", "the guard must run before routing"
    # The one known difference: a WasmPlugin cannot set `allow_on_headers_stop_iteration`, which
    # the plain-Envoy configs give a chain with the FHIR scope step. A policy deployed through
    # Istio must therefore not rely on it (`fhir.hold_headers_while_buffering: false`; README
    # "Known limits").
    for p in envoy:
        if p.pop("allow_on_headers_stop_iteration"):
            assert "fhir_scope" in chain_steps(p["root_id"])
            assert policy.get("fhir", {}).get("hold_headers_while_buffering", True) is False, (
                f"{path.name}: Istio cannot hold headers for the FHIR scope step; "
                "set fhir.hold_headers_while_buffering to false")
    assert [{k: v for k, v in p.items() if k != "filter"} for p in istio] == envoy


def test_parity_check_sees_other_steps():
    """A WasmPlugin whose pluginName names other steps than the rendered chain is seen."""
    path = GENERATED[0]
    plugins = wasm_plugins(path)
    policy = plugins[0]["spec"]["pluginConfig"]
    plugins[0]["spec"]["pluginName"] = "fapi_guard:token"  # the other steps left out
    istio = istio_chain(plugins)
    cfg = render.render(policy, None, "/w", 1, 2, 3)
    envoy, _ = envoy_chain(cfg)
    for p in envoy:
        p.pop("allow_on_headers_stop_iteration")
    assert [{k: v for k, v in p.items() if k != "filter"} for p in istio] != envoy


DEPLOYED_POLICIES = sorted(
    p
    for root in (REPO_ROOT / "policies", REPO_ROOT / "kind-cluster" / "policies")
    for p in root.glob("*.json")
    if (root / "deploy" / p.name).is_file()
)


@pytest.mark.parametrize("policy_path", DEPLOYED_POLICIES, ids=[p.stem for p in DEPLOYED_POLICIES])
def test_every_deployed_policy_loads_in_the_real_chain_plugin(policy_path: Path, tmp_path):
    """`envoy --mode validate` loads the chain plugin (the steps the policy runs) with the
    policy: a policy a step refuses would make Istio's fail-closed WasmPlugin reject every
    request."""
    from harness import build_wasm, validate_config

    cfg = render.render(json.loads(policy_path.read_text()), None, str(build_wasm()), 10000, 8080, 9901)
    out = tmp_path / "envoy.json"
    out.write_text(json.dumps(cfg))
    r = validate_config(out)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


# ---------- path normalisation (docs/platform-guide.md, "Path normalisation") ----------

ESCAPED_SLASH_HANDLED = {"UNESCAPE_AND_FORWARD", "UNESCAPE_AND_REDIRECT", "REJECT_REQUEST"}


def istio_hcm_path_settings(normalization: str) -> dict:
    """The HCM path settings Istio derives from meshConfig.pathNormalization
    (pilot/pkg/networking/core/listener_builder.go, "Setup normalization"), restated."""
    out = {"normalize_path": True, "merge_slashes": False, "path_with_escaped_slashes_action": "KEEP_UNCHANGED"}
    if normalization == "NONE":
        out["normalize_path"] = False
    if normalization in ("MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"):
        out["merge_slashes"] = True
    if normalization == "DECODE_AND_MERGE_SLASHES":
        out["path_with_escaped_slashes_action"] = "UNESCAPE_AND_FORWARD"
    return out


def path_gaps(hcm: dict) -> list[str]:
    """What an HCM leaves unnormalised that the guard expects normalised before the filters."""
    gaps = []
    if hcm.get("normalize_path") is not True:
        gaps.append("normalize_path (dot-segments, %2E)")
    if hcm.get("merge_slashes") is not True:
        gaps.append("merge_slashes (//)")
    if hcm.get("path_with_escaped_slashes_action", "KEEP_UNCHANGED") not in ESCAPED_SLASH_HANDLED:
        gaps.append("path_with_escaped_slashes_action (%2F, %5C)")
    return gaps


def _gen():
    return sys.modules.get("gen_wasmplugins") or __import__("conftest")._load("gen_wasmplugins")


def test_the_recommended_mesh_setting_leaves_no_gap():
    recommended = _gen().REQUIRED_PATH_NORMALIZATION
    assert recommended == "DECODE_AND_MERGE_SLASHES"
    assert path_gaps(istio_hcm_path_settings(recommended)) == []


@pytest.mark.parametrize("normalization", ["BASE", "DEFAULT", "NONE", "MERGE_SLASHES"])
def test_weaker_mesh_settings_leave_gaps_and_the_lint_flags_them(normalization):
    """Istio's default BASE resolves `..` but neither merges `//` nor decodes %2F/%5C."""
    assert path_gaps(istio_hcm_path_settings(normalization))
    mesh = {"kind": "IstioOperator", "spec": {"meshConfig": {"pathNormalization": {"normalization": normalization}}}}
    assert _gen().mesh_config_errors(mesh)


def test_the_kind_cluster_installs_istio_with_the_recommended_setting():
    operator = yaml.safe_load((REPO_ROOT / "kind-cluster" / "istio-operator.yaml").read_text())
    assert _gen().mesh_config_errors(operator) == []
    assert "istio-operator.yaml" in (REPO_ROOT / "kind-cluster" / "up.sh").read_text()


_RENDERED_HCM = render.render({"api": {"name": "x"}}, ["token"], "/w", 1, 2, 3)["static_resources"]["listeners"][0][
    "filter_chains"][0]["filters"][0]["typed_config"]


def test_rendered_hcm_normalises_at_least_as_istio_with_the_recommended_setting():
    """The plain-Envoy chain the e2e tests run must not see paths Istio (set as recommended)
    would have normalised, or the tests would prove filters on other paths than in the mesh."""
    assert path_gaps(_RENDERED_HCM) == []
    istio = istio_hcm_path_settings(_gen().REQUIRED_PATH_NORMALIZATION)
    assert _RENDERED_HCM["normalize_path"] == istio["normalize_path"]
    assert _RENDERED_HCM["merge_slashes"] == istio["merge_slashes"]


# ---------- read-before-write cluster ----------


def rbw_target_istio(docs: list[dict], policy: dict) -> tuple[str, str] | None:
    """(cluster name, where it goes) for the FHIR scope filter's stored read, as Istio builds it:
    a loopback STATIC cluster from the generated EnvoyFilter, or an outbound cluster of a Service."""
    name = policy["fhir"].get("read_before_write_cluster", "api")
    for d in docs:
        if d["kind"] != "EnvoyFilter":
            continue
        for patch in d["spec"]["configPatches"]:
            c = patch["patch"]["value"]
            if patch["applyTo"] == "CLUSTER" and patch["patch"]["operation"] == "ADD" and c["name"] == name:
                sa = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
                return name, f"{sa['address']}:{sa['port_value']}"
    if name.startswith("outbound|"):
        return name, "service " + name.rsplit("|", 1)[1]
    return None


def rbw_target_envoy(cfg: dict, policy: dict) -> tuple[str, str] | None:
    name = policy["fhir"].get("read_before_write_cluster", "api")
    for c in cfg["static_resources"]["clusters"]:
        if c["name"] == name:
            sa = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
            return name, f"{sa['address']}:{sa['port_value']}"
    return None


FHIR_GENERATED = [p for p in GENERATED if any("fhir_scope" in chain_steps(d["spec"]["pluginName"]) for d in wasm_plugins(p))]


@pytest.mark.parametrize("path", FHIR_GENERATED, ids=[p.name for p in FHIR_GENERATED])
def test_read_before_write_cluster_exists_on_both_sides(path: Path):
    docs = generated_docs(path)
    plugins = [d for d in docs if d["kind"] == "WasmPlugin"]
    policy = plugins[0]["spec"]["pluginConfig"]
    istio = rbw_target_istio(docs, policy)
    assert istio is not None, f"{path.name}: Istio would have no cluster `{policy['fhir'].get('read_before_write_cluster', 'api')}`"
    if "selector" in plugins[0]["spec"]:
        app_port = int(istio[1].rsplit(":", 1)[1])
        assert istio[1] == f"127.0.0.1:{app_port}", "a sidecar's stored read goes to its own app"
        ports = [p["number"] for m in plugins[0]["spec"].get("match", []) for p in m.get("ports", [])]
        assert not ports or app_port in ports, "the stored read must reach the app the guarded port serves"
    else:
        app_port = 8080
    cfg = render.render(policy, ["token", "dpop", "fhir_scope"], "/w", 10000, app_port, 9901)
    envoy = rbw_target_envoy(cfg, policy)
    assert envoy is not None and envoy[0] == istio[0]
    if "selector" in plugins[0]["spec"]:
        assert envoy == istio, "same cluster name, same upstream (the app on loopback)"


def test_read_before_write_parity_sees_a_missing_cluster():
    path = next(p for p in FHIR_GENERATED if any(d["kind"] == "EnvoyFilter" for d in generated_docs(p)))
    docs = [d for d in generated_docs(path) if d["kind"] != "EnvoyFilter"]
    policy = next(d for d in docs if d["kind"] == "WasmPlugin")["spec"]["pluginConfig"]
    assert rbw_target_istio(docs, policy) is None
    assert rbw_target_envoy(render.render({"api": {"name": "x"}, "fhir": {}}, ["token"], "/w", 1, 2, 3),
                            {"fhir": {"read_before_write_cluster": "fapi_guard_rbw_x"}}) is None
