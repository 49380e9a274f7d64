"""tools/gen_wasmplugins.py and the audit log in Istio (docs/audit.md, "In Istio"): a deploy file
with `audit_log: true` gets a Telemetry resource selecting the API's workloads and naming the
provider `fapi-guard-audit`; the generated meshConfig fragment defines that provider as Envoy's
file access logger whose JSON `labels` read the guard's filter state, the same fields
envoy/render.py gives the local proxies. Checked statically: there is no cluster here."""

from __future__ import annotations

import pytest
import yaml

import render
from test_manifests import DEPLOY, make_root, run_gen_all


def mesh_fragment(gen, root):
    (files,) = gen.generate_mesh([root]).values()
    return yaml.safe_load(files["mesh/mesh-config.yaml"])


def test_audit_log_adds_telemetry_and_provider(gen_wasmplugins, tmp_path):
    root = make_root(tmp_path, deploy=DEPLOY | {"audit_log": True})
    (tel,) = [d for d in run_gen_all(gen_wasmplugins, root) if d["kind"] == "Telemetry"]
    assert tel["apiVersion"] == "telemetry.istio.io/v1"
    assert tel["metadata"]["namespace"] == "apis"
    assert tel["spec"]["selector"] == {"matchLabels": {"app": "placeholder"}}
    assert tel["spec"]["accessLogging"] == [{"providers": [{"name": "fapi-guard-audit"}], "match": {"mode": "SERVER"}}]
    providers = mesh_fragment(gen_wasmplugins, root)["spec"]["meshConfig"]["extensionProviders"]
    (p,) = [x for x in providers if x["name"] == "fapi-guard-audit"]
    labels = p["envoyFileAccessLog"]["logFormat"]["labels"]
    assert labels["fapi_guard_audit"] == "%FILTER_STATE(wasm.fapi_guard.audit:PLAIN)%"
    assert labels == render.AUDIT_FIELDS
    assert {"response_code", "response_flags"} <= set(labels)


def test_no_audit_log_by_default(gen_wasmplugins, tmp_path):
    root = make_root(tmp_path)
    assert not [d for d in run_gen_all(gen_wasmplugins, root) if d["kind"] == "Telemetry"]
    assert "extensionProviders" not in mesh_fragment(gen_wasmplugins, root)["spec"]["meshConfig"]


def test_audit_log_must_be_a_bool(gen_wasmplugins, tmp_path):
    with pytest.raises(gen_wasmplugins.GenError, match="audit_log"):
        run_gen_all(gen_wasmplugins, make_root(tmp_path, deploy=DEPLOY | {"audit_log": "yes"}))
