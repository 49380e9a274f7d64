"""The one module (`fapi_guard.wasm`, filters/guard) in real Envoy: the three filters attached
from it share one V8 VM per thread (envoy/render.py `one_module`), and a plugin whose
`root_id` names no filter is refused at load (fail closed). The checks themselves run against
this configuration in the `one_module` subset (`pytest -m one_module`: the token, DPoP and
FHIR tests marked so run with both layouts, tests/e2e/conftest.py)."""
import pytest

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
