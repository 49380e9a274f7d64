"""Faults in real Envoy: a hot config update with a changed policy (listener from
an LDS file, replaced atomically: Envoy builds a new filter config, `on_configure` runs with
the new policy), and a Wasm VM restart (a changed `vm_config` makes Envoy start a new VM).
The token filter's cache belongs to the configuration, so a token verified under the old keys,
issuer or audience is checked again under the new ones."""
import json
import os
import tempfile
import time
from pathlib import Path

import pytest
import requests

import render  # envoy/render.py (pytest.ini pythonpath)
from harness import EnvoyProcess, Issuer, build_wasm, free_port

pytestmark = pytest.mark.e2e


def policy(issuer, aud, keys=None):
    return {"api": {"name": "faults", "audience": aud},
            "issuers": [{"issuer": issuer.iss, "jwks": {"keys": keys or issuer.jwks()["keys"]}}],
            "token": {"schemes": ["Bearer"]}}


class LdsEnvoy(EnvoyProcess):
    """The rendered config with its listener served from an LDS file (`path_config_source`)."""

    def __init__(self, pol, upstream_port, filters=("token",)):
        self.upstream_port, self.filters = upstream_port, list(filters)
        self.lds_dir = Path(tempfile.mkdtemp(prefix="fapi-lds-"))
        self.lds = self.lds_dir / "lds.json"
        port, admin = free_port(), free_port()
        cfg = self._render(pol, port, admin)
        self._write_listener(cfg)
        cfg["static_resources"].pop("listeners")
        cfg["node"] = {"id": "faults", "cluster": "faults"}
        cfg["dynamic_resources"] = {"lds_config": {"path_config_source": {"path": str(self.lds)},
                                                   "resource_api_version": "V3"}}
        super().__init__(cfg, port, admin, "envoy")

    def _render(self, pol, port, admin, vm_env=None):
        return render.render(pol, self.filters, str(build_wasm()), port, self.upstream_port, admin,
                             vm_env=vm_env)

    def _write_listener(self, cfg):
        listener = cfg["static_resources"]["listeners"][0]
        doc = {"resources": [{"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", **listener}]}
        tmp = self.lds_dir / "lds.tmp"
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.lds)  # Envoy watches the file for moves (atomic update)

    def lds_updates(self):
        return sum(v for k, v in self.stats("listener_manager.lds").items() if k.endswith("update_success"))

    def update(self, pol, vm_env=None, vm_id_suffix=""):
        before = self.lds_updates()
        cfg = self._render(pol, self.port, self.admin_port, vm_env)
        if vm_id_suffix:
            hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
            for f in hcm["http_filters"]:
                vm = f["typed_config"].get("config", {}).get("vm_config")
                if vm:
                    vm["vm_id"] += vm_id_suffix
        self._write_listener(cfg)
        deadline = time.time() + 20
        while self.lds_updates() <= before:
            assert time.time() < deadline, "LDS update not applied:\n" + self.logs()[-3000:]
            time.sleep(0.1)
        # The new listener serves new connections once its filter config (Wasm) is loaded.
        deadline = time.time() + 20
        while self.stats("listener_manager.total_listeners_warming").get(
                "listener_manager.total_listeners_warming", 0):
            assert time.time() < deadline
            time.sleep(0.1)

    def get(self, headers):
        # A new connection per request: existing ones drain on the old listener config.
        return requests.get(f"http://127.0.0.1:{self.port}/x", headers={**headers, "connection": "close"},
                            timeout=10)


def bearer(tok):
    return {"Authorization": f"Bearer {tok}"}


def reason(r):
    return r.json()["issue"][0]["details"]["coding"][0]["code"]


def test_reload_with_changed_keys_and_audience(upstream):
    a, b = Issuer(algs=("ES256",)), Issuer(algs=("ES256",))  # same iss, different keys
    tok_a = a.token("ES256", aud="aud-1")
    with LdsEnvoy(policy(a, "aud-1"), upstream.port) as e:
        for _ in range(2):  # the second answer comes from the token cache
            assert e.get(bearer(tok_a)).status_code == 200
        e.update(policy(b, "aud-2"))
        r = e.get(bearer(tok_a))
        assert r.status_code == 401 and reason(r) == "unknown_key", r.text
        assert e.get(bearer(b.token("ES256", aud="aud-2"))).status_code == 200
        r = e.get(bearer(b.token("ES256", aud="aud-1")))
        assert r.status_code == 401 and reason(r) == "wrong_audience", r.text
        # And back: the old keys and audience apply again.
        e.update(policy(a, "aud-1"))
        assert e.get(bearer(tok_a)).status_code == 200
        assert e.proc.poll() is None


def test_reload_with_changed_issuer(upstream):
    a = Issuer("https://issuer-a.test", algs=("ES256",))
    tok = a.token("ES256", aud="aud-1")
    with LdsEnvoy(policy(a, "aud-1"), upstream.port) as e:
        assert e.get(bearer(tok)).status_code == 200
        other = Issuer("https://issuer-b.test", algs=("ES256",))
        e.update(policy(other, "aud-1", keys=a.jwks()["keys"]))  # same keys, other issuer
        r = e.get(bearer(tok))
        assert r.status_code == 401 and reason(r) == "unknown_issuer", r.text


def test_vm_restart_reconfigures(upstream):
    """A changed vm_config (its vm_id and environment) starts a new Wasm VM: on_configure runs
    again in it, the filter logs its policy load, and requests are served by the new VM."""
    a = Issuer(algs=("ES256",))
    with LdsEnvoy(policy(a, "aud-1"), upstream.port) as e:
        assert e.get(bearer(a.token("ES256", aud="aud-1"))).status_code == 200
        loads = e.logs().count("policy for api `faults` loaded")
        # Envoy 1.36 keeps the VM when only the environment changes; a new vm_id always
        # starts a new one.
        e.update(policy(a, "aud-1"), vm_env={"FAPI_GUARD_VERIFIER": "software"}, vm_id_suffix="_2")
        assert e.get(bearer(a.token("ES256", aud="aud-1"))).status_code == 200
        # Envoy writes its log asynchronously: wait for the new VM's lines.
        deadline = time.time() + 15
        while not (e.logs().count("policy for api `faults` loaded") > loads
                   and "FAPI_GUARD_VERIFIER=software" in e.logs()):
            assert time.time() < deadline, e.logs()[-3000:]
            time.sleep(0.2)
        assert e.counter("verify.software") >= 1
