"""The chain Istio builds, in real Envoy, where it differs from the plain-Envoy configs:

- Istio gives every WasmPlugin an empty `vm_id` (pilot/pkg/model/extensions.go, buildVMConfig
  sets none), so all plugins of a proxy share one shared-data namespace. Two APIs on one proxy
  must not see each other's JWKS documents, leases or replay entries: the filters namespace their
  keys per API and filter. Shown with two policies on one Envoy, both with `vm_id: ""`, naming the
  same `jwks_uri` but reaching different key sets.
- The read-before-write cluster comes from the generated EnvoyFilter (a STATIC loopback cluster),
  not from `envoy/render.py`: the very cluster the generator emits carries a write here.
"""

from __future__ import annotations

import copy
import json
import threading
import time

import pytest
import requests
import yaml

from conftest import REPO_ROOT
from harness import EnvoyProcess, Issuer, JwksServer, build_wasm, free_port

import render

import server as fhir_server

pytestmark = pytest.mark.e2e


def istio_vm_ids(cfg: dict) -> dict:
    """Every Wasm filter with Istio's VM identity: empty vm_id (one shared-data namespace)."""
    for listener in cfg["static_resources"]["listeners"]:
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        for f in hcm["http_filters"]:
            if f["name"] == "envoy.filters.http.wasm":
                f["typed_config"]["config"]["vm_config"]["vm_id"] = ""
    return cfg


def policy(name: str, issuer: Issuer, cluster: str) -> dict:
    return {
        "api": {"name": name, "audience": name},
        "issuers": [{"issuer": issuer.iss, "jwks_uri": "http://issuer.test/jwks.json", "jwks_cluster": cluster,
                     "jwks_refresh_seconds": 300, "jwks_min_refetch_seconds": 1, "jwks_fetch_timeout_ms": 1000}],
        "token": {"schemes": ["Bearer"]},
        "routes": [{"path_prefix": "/", "require": "token"}],
    }


def two_apis_one_proxy(wasm: str, upstream_port: int, jwks_a: JwksServer, jwks_b: JwksServer):
    admin, port_a, port_b = free_port(), free_port(), free_port()
    a = render.render(policy("api-a", ISSUER_A, "jwks_a"), ["token"], wasm, port_a, upstream_port, admin,
                      jwks_address=f"127.0.0.1:{jwks_a.port}")
    b = render.render(policy("api-b", ISSUER_B, "jwks_b"), ["token"], wasm, port_b, upstream_port, admin,
                      jwks_address=f"127.0.0.1:{jwks_b.port}")
    listener_b = copy.deepcopy(b["static_resources"]["listeners"][0])
    listener_b["name"] = "virtualInbound_b"
    a["static_resources"]["listeners"].append(listener_b)
    names = {c["name"] for c in a["static_resources"]["clusters"]}
    a["static_resources"]["clusters"] += [c for c in b["static_resources"]["clusters"] if c["name"] not in names]
    return istio_vm_ids(a), port_a, port_b, admin


# Two authorization servers that claim the same issuer and JWKS URI (e.g. a test and a production
# tenant behind one name), each API reaching its own through its own cluster.
ISSUER_A = Issuer("https://issuer.test")
ISSUER_B = Issuer("https://issuer.test")


@pytest.fixture(scope="module")
def echo():
    from harness import Upstream

    u = Upstream()
    yield u
    u.stop()


def test_two_policies_on_one_proxy_keep_their_own_keys(echo):
    ja, jb = JwksServer(ISSUER_A.jwks()), JwksServer(ISSUER_B.jwks())
    try:
        cfg, port_a, port_b, admin = two_apis_one_proxy(str(build_wasm()), echo.port, ja, jb)
        with EnvoyProcess(cfg, port_a, admin, "two-apis", concurrency=2) as envoy:
            def call(port, issuer, aud):
                tok = issuer.token("ES256", aud=aud)
                return requests.get(f"http://127.0.0.1:{port}/x", headers={"Authorization": f"Bearer {tok}"}, timeout=10)

            deadline = time.time() + 10
            while time.time() < deadline and envoy.counter("token.jwks.fetch_ok") < 2:
                time.sleep(0.1)
            # Several rounds over both workers: whichever API fetched first, the other must never
            # verify with the first one's keys.
            for _ in range(6):
                assert call(port_a, ISSUER_A, "api-a").status_code == 200
                assert call(port_b, ISSUER_B, "api-b").status_code == 200
                assert call(port_a, ISSUER_B, "api-a").status_code == 401, "api-a accepted api-b's key"
                assert call(port_b, ISSUER_A, "api-b").status_code == 401, "api-b accepted api-a's key"
            assert ja.hits >= 1 and jb.hits >= 1, "each API fetches its own JWKS"
            assert envoy.counter("token.allowed") >= 12
    finally:
        ja.stop()
        jb.stop()


# ---------- read before write through the generated EnvoyFilter's cluster ----------

KIND_POLICY = REPO_ROOT / "kind-cluster" / "policies" / "fhir-demo.json"
KIND_GENERATED = REPO_ROOT / "kind-cluster" / "policies" / "deploy" / "generated" / "fhir-demo.yaml"


@pytest.fixture(scope="module")
def fhir():
    httpd = fhir_server.serve("127.0.0.1", 0)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def generated_rbw_cluster(app_port: int) -> dict:
    # The EnvoyFilter that adds a cluster (the generated file also holds the stats one).
    (ef,) = [d for d in yaml.safe_load_all(KIND_GENERATED.read_text())
             if d and d["kind"] == "EnvoyFilter" and d["spec"]["configPatches"][0]["applyTo"] == "CLUSTER"]
    c = copy.deepcopy(ef["spec"]["configPatches"][0]["patch"]["value"])
    sa = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert sa["address"] == "127.0.0.1"
    sa["port_value"] = app_port  # the pod's app port, here the test upstream's
    return c


def test_write_by_id_uses_the_generated_read_before_write_cluster(fhir):
    """The kind demo's policy (as deployed by Istio), a patient-grant update by id: the filter
    reads the stored resource through the cluster the EnvoyFilter adds, then lets the write go."""
    issuer = Issuer("https://issuer.test")
    pol = json.loads(KIND_POLICY.read_text())
    pol["issuers"] = [{"issuer": issuer.iss, "jwks": issuer.jwks()}]
    pol["token"] = dict(pol.get("token", {}), schemes=["Bearer"])
    pol.pop("dpop", None)
    app_port = fhir.server_address[1]
    port, admin = free_port(), free_port()
    cfg = render.render(pol, ["token", "fhir_scope"], str(build_wasm()), port, app_port, admin)
    name = pol["fhir"]["read_before_write_cluster"]
    clusters = [c for c in cfg["static_resources"]["clusters"] if c["name"] != name]
    cfg["static_resources"]["clusters"] = clusters + [generated_rbw_cluster(app_port)]
    istio_vm_ids(cfg)
    aud = pol["api"]["audience"]
    tok = issuer.token("ES256", aud=aud, patient="pat-anna", scope="patient/Observation.rus")
    h = {"Authorization": f"Bearer {tok}", "content-type": "application/fhir+json"}
    base = pol["fhir"].get("base_path", "/fhir")
    with EnvoyProcess(cfg, port, admin, "rbw") as envoy:
        url = f"http://127.0.0.1:{port}{base}/Observation"
        own = requests.get(f"{url}/obs-anna-hb", headers=h, timeout=10)
        assert own.status_code == 200, own.text[:300]
        body = own.json()
        body["status"] = "amended"
        r = requests.put(f"{url}/obs-anna-hb", headers=h, data=json.dumps(body), timeout=10)
        assert r.status_code == 200, r.text[:300]
        foreign = requests.get(f"http://127.0.0.1:{app_port}/fhir/Observation/obs-bjorn-hb", timeout=5).json()
        foreign["subject"] = {"reference": "Patient/pat-anna"}
        r = requests.put(f"{url}/obs-bjorn-hb", headers=h, data=json.dumps(foreign), timeout=10)
        assert r.status_code == 403, r.text[:300]
        assert envoy.counter("fhir_scope.stored_read") == 2
