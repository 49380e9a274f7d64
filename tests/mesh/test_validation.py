"""Offline validation of every Kubernetes manifest the project ships, and shellcheck of its scripts.

- WasmPlugin, ServiceEntry, DestinationRule, EnvoyFilter, AuthorizationPolicy, PeerAuthentication: Istio's real CRDs (copied with their
  licence into `tests/mesh/schemas/`): their openAPIV3Schema, made strict (an unknown field is an error, as `kubectl apply --validate=strict`
  makes it; the API server would otherwise drop it silently), plus the CRD's CEL rules
  (x-kubernetes-validations), re-stated here because jsonschema does not run CEL.
- Every other kind: the Kubernetes JSON schemas shipped in the `kubernetes-validate` package
  (no network), strict.
- IstioOperator (the kind cluster's mesh settings): the generator's mesh lint
  (`tools/gen_wasmplugins.py --check-mesh`), which checks what the guard expects of the mesh.
- A manifest of any other kind fails the test: nothing ships unvalidated.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from conftest import REPO_ROOT

K8S_VERSION = "1.32.0"  # kind's default node image line; see kind-cluster/README.md
SCHEMAS = Path(__file__).resolve().parent / "schemas"
CRD_PATH = SCHEMAS / "istio-wasmplugin-crd.yaml"
# Istio kinds the generator emits besides WasmPlugin: kind -> (CRD file, served version)
ISTIO_CRDS = {
    ("networking.istio.io/v1", "ServiceEntry"): ("istio-serviceentry-crd.yaml", "v1"),
    ("networking.istio.io/v1", "DestinationRule"): ("istio-destinationrule-crd.yaml", "v1"),
    ("networking.istio.io/v1alpha3", "EnvoyFilter"): ("istio-envoyfilter-crd.yaml", "v1alpha3"),
    # `dpop.replay_scope: partitioned` (tools/replay_mesh.py; no committed API uses it, so
    # tests/mesh/test_replay_manifests.py validates them from a generated root).
    ("security.istio.io/v1", "AuthorizationPolicy"): ("istio-authorizationpolicy-crd.yaml", "v1"),
    ("security.istio.io/v1", "PeerAuthentication"): ("istio-peerauthentication-crd.yaml", "v1"),
}
MANIFEST_DIRS = [REPO_ROOT / "kind-cluster", REPO_ROOT / "policies" / "deploy"]
SKIP_DIRS = {".git", "target", ".venv", "node_modules", "run"}
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def manifest_files() -> list[Path]:
    out = []
    for d in MANIFEST_DIRS:
        for p in sorted(d.rglob("*.yaml")) + sorted(d.rglob("*.yml")):
            if not SKIP_DIRS & set(p.relative_to(REPO_ROOT).parts):
                out.append(p)
    return out


def all_docs() -> list[tuple[str, dict]]:
    docs = []
    for p in manifest_files():
        for i, d in enumerate(yaml.safe_load_all(p.read_text())):
            if d is not None:
                docs.append((f"{p.relative_to(REPO_ROOT)}#{i}", d))
    return docs


@pytest.fixture(scope="module")
def crd_schema() -> dict:
    return crd_to_schema(CRD_PATH, "WasmPlugin", "v1alpha1")


def crd_to_schema(path: Path, kind: str, version_name: str) -> dict:
    crd = yaml.safe_load(path.read_text())
    assert crd["spec"]["names"]["kind"] == kind
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == version_name]
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    # Every object carries these beside the CRD's own spec/status (the API server adds them).
    schema["properties"] |= {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string", "enum": [kind]},
        "metadata": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "required": ["name"],
        },
    }
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    return strict(schema)


def strict(schema: dict) -> dict:
    """additionalProperties: false on every object that neither preserves unknown fields nor
    declares additionalProperties: what the API server prunes, we refuse."""
    s = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(s)
    return s


def cel_rules(spec: dict) -> list[str]:
    """The CRD's x-kubernetes-validations, as Python."""
    errors = []
    url = spec.get("url", "")
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme not in ("", "http", "https", "oci", "file"):
        errors.append(f"url must have schema one of [http, https, file, oci], got `{scheme}`")
    labels = spec.get("selector", {}).get("matchLabels", {})
    for k, v in labels.items():
        if "*" in k or "*" in v:
            errors.append("wildcard not allowed in label key/value match")
        if not k:
            errors.append("key must not be empty")
    refs = list(spec.get("targetRefs", [])) + ([spec["targetRef"]] if "targetRef" in spec else [])
    for r in refs:
        if [r.get("group", ""), r.get("kind")] not in (["core", "Service"], ["", "Service"], ["gateway.networking.k8s.io", "Gateway"]):
            errors.append("Support kinds are core/Service and gateway.networking.k8s.io/Gateway")
        if r.get("namespace", ""):
            errors.append("cross namespace referencing is not currently supported")
    for e in spec.get("vmConfig", {}).get("env", []):
        if e.get("valueFrom", "") == "HOST" and "value" in e:
            errors.append("value may only be set when valueFrom is INLINE")
    return errors


def istio_errors(doc: dict) -> list[str]:
    """ServiceEntry / DestinationRule / EnvoyFilter against Istio's CRD, strict."""
    entry = ISTIO_CRDS.get((doc.get("apiVersion"), doc.get("kind")))
    if entry is None:
        return [f"no Istio CRD for {doc.get('apiVersion')}/{doc.get('kind')}"]
    schema = crd_to_schema(SCHEMAS / entry[0], doc["kind"], entry[1])
    return [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(doc)] + metadata_errors(doc)


def metadata_errors(doc: dict) -> list[str]:
    md = doc.get("metadata", {})
    errors = []
    if not DNS1123_SUBDOMAIN.match(md.get("name", "")) or len(md.get("name", "")) > 253:
        errors.append(f"metadata.name `{md.get('name')}` is not a DNS-1123 subdomain")
    for k, v in (md.get("labels") or {}).items():
        name = k.rsplit("/", 1)[-1]
        if not LABEL_NAME.match(name) or len(name) > 63 or not isinstance(v, str) or not LABEL_VALUE.match(v) or len(v) > 63:
            errors.append(f"label {k}={v!r} is not valid")
    return errors


def wasmplugin_errors(doc: dict, schema: dict) -> list[str]:
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]
    if doc.get("apiVersion") != "extensions.istio.io/v1alpha1":
        errors.append(f"apiVersion {doc.get('apiVersion')}")
    return errors + metadata_errors(doc) + cel_rules(doc.get("spec", {}))


def k8s_errors(doc: dict) -> list[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"no Kubernetes schema for {doc.get('apiVersion')}/{doc.get('kind')}: {e}"]
    except kubernetes_validate.ValidationError as e:
        return [str(e).splitlines()[0]]
    return metadata_errors(doc)


@pytest.fixture(autouse=True, scope="module")
def no_network():
    """Proves validation is offline: any connection attempt fails the test."""
    real = socket.socket.connect

    def refuse(self, addr):
        raise AssertionError(f"validation tried the network: {addr}")

    socket.socket.connect = refuse
    yield
    socket.socket.connect = real


def test_there_are_manifests_of_both_kinds():
    kinds = {d.get("kind") for _, d in all_docs()}
    assert "WasmPlugin" in kinds
    assert {"Deployment", "Service", "ConfigMap", "Job", "Namespace"} <= kinds


@pytest.mark.parametrize("where,doc", all_docs(), ids=[w for w, _ in all_docs()])
def test_manifest_is_valid(where, doc, crd_schema):
    if doc.get("kind") == "WasmPlugin":
        errors = wasmplugin_errors(doc, crd_schema)
    elif str(doc.get("apiVersion", "")).startswith(("networking.istio.io/", "security.istio.io/")):
        errors = istio_errors(doc)
    elif doc.get("kind") == "IstioOperator":
        errors = [] if doc.get("apiVersion") == "install.istio.io/v1alpha1" else [f"apiVersion {doc.get('apiVersion')}"]
        errors += _gen().mesh_config_errors(doc)
    else:
        errors = k8s_errors(doc)
    assert not errors, f"{where}: {errors}"


def _gen():
    import sys

    return sys.modules.get("gen_wasmplugins") or __import__("conftest")._load("gen_wasmplugins")


def test_generated_istio_kinds_are_all_validated():
    kinds = {(d.get("apiVersion"), d.get("kind")) for _, d in all_docs()}
    assert {k for k in ISTIO_CRDS if k[0].startswith("networking.")} <= kinds, "the generator's ServiceEntry/DestinationRule/EnvoyFilter must be in the committed manifests"


def _first(kind: str) -> dict:
    for _, d in all_docs():
        if d.get("kind") == kind:
            return copy.deepcopy(d)
    raise AssertionError(f"no {kind}")


BROKEN_ISTIO = {
    "serviceentry-location-typo": ("ServiceEntry", lambda d: d["spec"].__setitem__("location", "EXTERNAL")),
    "serviceentry-port-string": ("ServiceEntry", lambda d: d["spec"]["ports"][0].__setitem__("number", "80")),
    "destinationrule-tls-mode": ("DestinationRule", lambda d: d["spec"]["trafficPolicy"]["portLevelSettings"][0]["tls"].__setitem__("mode", "TLS")),
    "destinationrule-unknown": ("DestinationRule", lambda d: d["spec"].__setitem__("hostname", "x")),
    "envoyfilter-apply-to": ("EnvoyFilter", lambda d: d["spec"]["configPatches"][0].__setitem__("applyTo", "CLUSTERS")),
    "envoyfilter-operation": ("EnvoyFilter", lambda d: d["spec"]["configPatches"][0]["patch"].__setitem__("operation", "APPEND")),
}


@pytest.mark.parametrize("kind,mutate", BROKEN_ISTIO.values(), ids=BROKEN_ISTIO.keys())
def test_istio_crd_validation_catches(kind, mutate):
    doc = _first(kind)
    assert not istio_errors(doc), "the baseline must be valid"
    mutate(doc)
    assert istio_errors(doc)


def _good_plugin() -> dict:
    for _, d in all_docs():
        if d.get("kind") == "WasmPlugin":
            return copy.deepcopy(d)
    raise AssertionError("no WasmPlugin")


def _set(path: str, value):
    def f(d):
        node = d
        keys = path.split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
        return d

    return f


BROKEN_PLUGINS = {
    "fail-strategy-typo": _set("spec.failStrategy", "FAIL_CLOSED"),
    "unknown-spec-field": _set("spec.failstrategy", "FAIL_CLOSE"),
    "phase-unknown": _set("spec.phase", "AUTHENTICATION"),
    "sha256-with-prefix": _set("spec.sha256", "sha256:" + "a" * 64),
    "priority-string": _set("spec.priority", "300"),
    "url-missing": lambda d: (d["spec"].pop("url"), d)[1],
    "url-ftp": _set("spec.url", "ftp://registry/x"),
    "selector-wildcard": _set("spec.selector", {"matchLabels": {"app": "*"}}),
    "target-ref-deployment": _set("spec.targetRefs", [{"kind": "Deployment", "name": "x"}]),
    "target-ref-other-namespace": _set("spec.targetRefs", [{"kind": "Service", "name": "x", "namespace": "other"}]),
    "match-port-zero": _set("spec.match", [{"mode": "SERVER", "ports": [{"number": 0}]}]),
    "bad-name": _set("metadata.name", "Token_Filter"),
    "pluginConfig-not-object": _set("spec.pluginConfig", "policy.json"),
    "env-host-with-value": _set("spec.vmConfig", {"env": [{"name": "A", "valueFrom": "HOST", "value": "x"}]}),
}


@pytest.mark.parametrize("mutate", BROKEN_PLUGINS.values(), ids=BROKEN_PLUGINS.keys())
def test_crd_validation_catches(mutate, crd_schema):
    assert not wasmplugin_errors(_good_plugin(), crd_schema), "the baseline must be valid"
    assert wasmplugin_errors(mutate(_good_plugin()), crd_schema)


def test_k8s_validation_catches_errors():
    client = yaml.safe_load((REPO_ROOT / "kind-cluster/manifests/client.yaml").read_text())
    assert not k8s_errors(client)
    bad = copy.deepcopy(client)
    bad["spec"]["template"]["spec"]["containers"][0]["imagee"] = "x"
    assert k8s_errors(bad)
    bad = copy.deepcopy(client)
    bad["spec"]["replicas"] = "one"
    assert k8s_errors(bad)
    bad = copy.deepcopy(client)
    bad["metadata"]["name"] = "Fhir_Client"
    assert k8s_errors(bad)
    assert k8s_errors({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "x"}})


# ---------- shellcheck ----------


def shell_scripts() -> list[Path]:
    out = []
    for p in sorted(REPO_ROOT.rglob("*")):
        rel = p.relative_to(REPO_ROOT)
        if SKIP_DIRS & set(rel.parts) or not p.is_file():
            continue
        if p.suffix == ".sh" or (p.suffix == "" and p.read_bytes()[:64].startswith((b"#!/usr/bin/env bash", b"#!/bin/bash", b"#!/bin/sh"))):
            out.append(p)
    return out


def test_scripts_found():
    names = {str(p.relative_to(REPO_ROOT)) for p in shell_scripts()}
    assert {"kind-cluster/up.sh", "kind-cluster/down.sh"} <= names


def test_shellcheck():
    exe = shutil.which("shellcheck")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("shellcheck is not installed (scripts/bootstrap.sh installs it)")
        pytest.skip("shellcheck not installed (outside CI)")
    scripts = shell_scripts()
    r = subprocess.run([exe, "--severity=style", *map(str, scripts)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
