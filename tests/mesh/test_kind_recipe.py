"""The kind recipe (kind-cluster/up.sh) pins versions that work together, and its smoke test
covers what a mesh breaks first. Static: no Docker or cluster here."""

from __future__ import annotations

import re

import yaml

from conftest import REPO_ROOT

UP = (REPO_ROOT / "kind-cluster" / "up.sh").read_text()
README = (REPO_ROOT / "kind-cluster" / "README.md").read_text()

# Minimum Kubernetes minor per Istio minor: istioctl's MinK8SVersion
# (istioctl/pkg/install/k8sversion/version.go) in each release line.
ISTIO_MIN_K8S = {"1.24": 28, "1.25": 28, "1.26": 29, "1.27": 29, "1.28": 29, "1.29": 30, "1.30": 30, "1.31": 32}


def var(name: str) -> str:
    m = re.search(rf"^{name}=(\S+)", UP, re.M)
    assert m, f"up.sh does not set {name}"
    return m.group(1)


def k8s_minor(node_image: str) -> int:
    m = re.fullmatch(r"kindest/node:v1\.(\d+)\.\d+(@sha256:[0-9a-f]{64})?", node_image)
    assert m, node_image
    return int(m.group(1))


def incompatibility(istio_minor: str, node_image: str) -> str | None:
    need = ISTIO_MIN_K8S.get(istio_minor)
    if need is None:
        return f"Istio {istio_minor} is not in the table"
    have = k8s_minor(node_image)
    return None if have >= need else f"Istio {istio_minor} needs Kubernetes >= 1.{need}, node image gives 1.{have}"


def test_pinned_versions_are_compatible():
    assert incompatibility(var("ISTIO_MINOR"), var("KIND_NODE_IMAGE")) is None
    assert '--image "$KIND_NODE_IMAGE"' in UP, "the node image must be passed to kind create cluster"


def test_incompatible_versions_are_flagged():
    # kind 0.20's default node image (Kubernetes 1.27) under Istio 1.28: what the old recipe did.
    assert incompatibility("1.28", "kindest/node:v1.27.3")
    assert incompatibility("1.31", "kindest/node:v1.30.0")
    assert incompatibility("9.99", "kindest/node:v1.32.2")


def test_offline_validation_uses_the_pinned_kubernetes_line():
    from test_validation import K8S_VERSION

    assert K8S_VERSION.split(".")[1] == str(k8s_minor(var("KIND_NODE_IMAGE")))


def test_readme_states_the_pinned_versions_and_prerequisites():
    assert var("KIND_MIN_VERSION") in README and var("KIND_NODE_IMAGE") in README
    assert f"{var('ISTIO_MINOR')}.x" in README
    assert re.search(r"^\| Node\.js", README, re.M), "bootstrap.sh runs npm: Node is a prerequisite"
    assert "npm" in re.search(r"for tool in ([^;]+);", UP).group(1)


def test_smoke_test_covers_a_write_by_id():
    """The stored read (fhir.read_before_write_cluster) only runs for writes by id: a GET-only
    smoke test would pass with a read-before-write cluster that does not exist."""
    assert re.search(r"patient/Observation\.u", UP)
    assert re.search(r'check "update of own Observation[^"]*" 200 "\$\(put_obs obs-alice-1 pat-alice\)"', UP)
    assert re.search(r'check "update of other patient[^"]*" 403 "\$\(put_obs obs-bob-1 pat-alice\)"', UP)
    assert "-X PUT" in UP


def test_hapi_heap_follows_the_container_limit():
    (deploy,) = [d for d in yaml.safe_load_all((REPO_ROOT / "kind-cluster/manifests/hapi-fhir.yaml").read_text())
                 if d and d["kind"] == "Deployment"]
    (c,) = deploy["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value", "") for e in c["env"]}
    assert "-XX:MaxRAMPercentage=" in env.get("JAVA_TOOL_OPTIONS", "")
    assert c["resources"]["limits"]["memory"]


def test_istio_is_installed_from_the_checked_operator_file():
    assert 'istioctl install -y -f "$HERE/istio-operator.yaml"' in UP
    assert "--check-mesh" in UP
