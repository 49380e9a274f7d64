"""The one module (`fapi_guard.wasm`, filters/guard) in real Envoy: the three filters attached
from it share one V8 VM per thread (envoy/render.py `one_module`), and a plugin whose
`root_id` names no filter is refused at load (fail closed). The checks themselves run against
this configuration in the `one_module` subset (`pytest -m one_module`: the token, DPoP and
FHIR tests marked so run with both layouts, tests/e2e/conftest.py)."""
import pytest
import requests

import render
from harness import Envoy, EnvoyProcess, Issuer, build_wasm, free_port

pytestmark = pytest.mark.e2e

AUD = "one-module-api"


@pytest.fixture(scope="module")
def issuer():
    return Issuer("https://issuer.test")


def policy(issuer):
    return {
        "api": {"name": "one-module", "audience": AUD},
        "issuers": [{"issuer": issuer.iss, "jwks": issuer.jwks()}],
        "token": {"schemes": ["DPoP", "Bearer"]},
        "routes": [{"path_prefix": "/fhir/metadata", "methods": ["GET"], "require": "none"}],
        "dpop": {"required": False},
        "fhir": {"base_path": "/fhir"},
    }


def v8_vms(envoy) -> tuple[int, int]:
    s = envoy.stats("wasm.envoy.wasm.runtime.v8")
    return s["wasm.envoy.wasm.runtime.v8.active"], s["wasm.envoy.wasm.runtime.v8.created"]


@pytest.mark.parametrize("workers", [1, 2])
def test_three_filters_from_one_module_share_one_vm_per_thread(upstream, issuer, workers):
    # Envoy keys a VM by vm_id + vm_config.configuration + code (bench/README.md, "Memory"):
    # one module, one vm_id -> one VM for the base, one on the main thread, one per worker.
    with Envoy(policy(issuer), upstream.port, concurrency=workers, one_module=True) as e:
        tok = issuer.token(aud=AUD, scope="patient/*.rs", patient="1")
        r = e.get("/fhir/Patient/1", {"Authorization": f"Bearer {tok}"})
        assert r.status_code == 200, r.text
        # Each of the three filters ran in it (their own counters).
        assert e.counter("token.allowed") >= 1
        assert e.counter("fhir_scope.allowed") >= 1
        assert v8_vms(e)[0] == workers + 2
    # The three separate modules: three VMs per thread.
    with Envoy(policy(issuer), upstream.port, concurrency=workers) as e:
        assert v8_vms(e)[0] == 3 * (workers + 2)


@pytest.mark.parametrize("root_id", ["fapi_bogus", "", None])
def test_unknown_or_missing_root_id_is_refused_at_load(upstream, issuer, root_id):
    cfg = render.render(policy(issuer), ["token", "dpop", "fhir_scope"], str(build_wasm()), free_port(),
                        upstream.port, free_port(), one_module=True)
    dpop = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "http_filters"][1]["typed_config"]["config"]
    assert dpop["root_id"] == "fapi_dpop"
    if root_id is None:
        del dpop["root_id"]
    else:
        dpop["root_id"] = root_id
    port, admin = (cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"],
                   cfg["admin"]["address"]["socket_address"]["port_value"])
    with pytest.raises((RuntimeError, TimeoutError)) as refused:
        EnvoyProcess(cfg, port, admin, "envoy-bad-root-id").stop()
    log = str(refused.value)
    want = f"unknown plugin root_id `{root_id}`" if root_id else "no plugin root_id"
    assert want in log, log[-3000:]


def wasm_configs(cfg):
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return [f["typed_config"]["config"] for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm"]


def test_istio_shape_one_image_three_plugins_share_one_vm(upstream, issuer):
    # What Istio builds from three WasmPlugins pointing at the one image (pilot/pkg/model/
    # extensions.go): `vm_id` empty, `name` = `<namespace>.<WasmPlugin name>`, `root_id` =
    # `pluginName`, and the agent gives each the same module file. Envoy's VM key is vm_id +
    # vm_config.configuration + code, so they still share one VM per thread.
    port, admin = free_port(), free_port()
    cfg = render.render(policy(issuer), ["token", "dpop", "fhir_scope"], str(build_wasm()), port, upstream.port,
                        admin, one_module=True)
    for c in wasm_configs(cfg):
        c["name"] = f"fhir.api-{c['root_id']}"
        c["vm_config"]["vm_id"] = ""
    with EnvoyProcess(cfg, port, admin, "envoy-istio-shape", concurrency=2) as e:
        tok = issuer.token(aud=AUD, scope="patient/*.rs", patient="1")
        assert requests_get(e, "/fhir/Patient/1", tok).status_code == 200
        assert requests_get(e, "/fhir/Patient/2", tok).status_code == 403
        s = e.stats("wasm.envoy.wasm.runtime.v8")
        assert s["wasm.envoy.wasm.runtime.v8.active"] == 2 + 2


def requests_get(e, path, token):
    return requests.get(f"http://127.0.0.1:{e.port}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10)
