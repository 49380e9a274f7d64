"""Which steps the chain plugin runs follows from the policy (envoy/render.py `policy_steps`):
a plain REST API (no `fhir` section) runs token and DPoP, a FHIR API adds the FHIR scope step;
asking for a step the policy cannot run is refused up front, naming the field, before any
Envoy. Whatever the steps, there is ONE plugin, the chain plugin, its root id naming them."""
import json
import subprocess
import sys

import pytest

import render
from harness import ROOT

REST = ROOT / "policies" / "helseid-rest-api.json"
FHIR = ROOT / "policies" / "demo-fhir-api.json"


def wasm_root_ids(cfg):
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return [f["typed_config"]["config"]["root_id"] for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm"]


def test_policy_decides_the_steps():
    rest, fhir = json.loads(REST.read_text()), json.loads(FHIR.read_text())
    assert render.policy_steps(rest) == ["token", "dpop"]
    assert render.policy_steps(fhir) == ["token", "dpop", "fhir_scope"]
    assert wasm_root_ids(render.render(rest, None, "/w", 1, 2, 3)) == ["fapi_guard:token,dpop"]
    assert wasm_root_ids(render.render(fhir, None, "/w", 1, 2, 3)) == ["fapi_guard"]
    # A subset of what the policy runs is fine (benchmarks, tests), in chain order whatever
    # order it is asked in.
    assert wasm_root_ids(render.render(rest, ["token"], "/w", 1, 2, 3)) == ["fapi_guard:token"]
    assert wasm_root_ids(render.render(fhir, ["fhir_scope", "token"], "/w", 1, 2, 3)) == ["fapi_guard:token,fhir_scope"]
    # No steps, no plugin (the benchmark's bare proxy).
    assert wasm_root_ids(render.render(fhir, [], "/w", 1, 2, 3)) == []


@pytest.mark.parametrize("filters", [["token", "dpop", "fhir_scope"], ["fhir_scope"]])
def test_a_step_the_policy_cannot_run_is_refused_naming_the_field(filters):
    rest = json.loads(REST.read_text())
    with pytest.raises(ValueError, match=r"--filters: fhir_scope needs the policy field `fhir`"):
        render.render(rest, filters, "/w", 1, 2, 3)


def test_render_cli_follows_the_policy(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "envoy/render.py", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)

    r = cli("--policy", str(REST))
    assert r.returncode == 0, r.stderr
    assert "# Chain: token -> dpop (one plugin: root id fapi_guard:token,dpop) -> router" in r.stdout
    assert "root_id: fapi_guard:token,dpop" in r.stdout and r.stdout.count("envoy.filters.http.wasm") == 1
    r = cli("--policy", str(REST), "--filters", "token,dpop,fhir_scope")
    assert r.returncode != 0 and "policy field `fhir`" in r.stderr and "--filters" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("flag", ["--one-module", "--one-plugin"])
def test_removed_layout_flags_are_refused_naming_the_one_layout(flag):
    r = subprocess.run([sys.executable, "envoy/render.py", "--policy", str(FHIR), flag], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == "", r.stdout[:300]
    assert f"{flag} was removed" in r.stderr and "chain plugin (root id fapi_guard)" in r.stderr, r.stderr


def test_unknown_or_no_step_is_refused():
    for filters, want in (("token,waf", "unknown filter(s) ['waf']"), (",", "needs at least one step")):
        r = subprocess.run([sys.executable, "envoy/render.py", "--policy", str(FHIR), "--filters", filters],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and want in r.stderr, r.stderr
