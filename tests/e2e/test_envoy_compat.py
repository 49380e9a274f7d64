"""Envoy version compatibility: both signature verifier paths in the running Envoy
(`ENVOY_BIN`, default .venv/bin/envoy; scripts/test.sh also runs this against the oldest
supported Envoy). The host path uses Envoy's `verify_signature` foreign function where it
exists; where it does not, the filter must say so and fall back to software verification.
"""
import pytest
import requests

import render  # envoy/render.py (pytest.ini pythonpath)
from harness import EnvoyProcess, Issuer, build_wasm, envoy_binary, free_port

pytestmark = pytest.mark.e2e

AUD = "compat-e2e"


class VerifierEnvoy(EnvoyProcess):
    """The token filter with `FAPI_GUARD_VERIFIER` set in its Wasm VM environment."""

    def __init__(self, policy, upstream_port, verifier):
        port, admin = free_port(), free_port()
        cfg = render.render(policy, ["token"], str(build_wasm()), port, upstream_port, admin,
                            vm_env={"FAPI_GUARD_VERIFIER": verifier})
        super().__init__(cfg, port, admin, "envoy")

    def get(self, path, headers):
        return requests.get(f"http://127.0.0.1:{self.port}{path}", headers=headers, timeout=10)


@pytest.fixture(scope="module")
def issuer():
    return Issuer("https://issuer.test", algs=("ES256", "PS256", "EdDSA"))


def policy(issuer):
    return {"api": {"name": "compat", "audience": AUD},
            "issuers": [{"issuer": issuer.iss, "jwks": issuer.jwks()}],
            "token": {"schemes": ["Bearer"]}}


@pytest.mark.parametrize("verifier", ["host", "software"])
def test_both_verifier_paths(upstream, issuer, verifier):
    with VerifierEnvoy(policy(issuer), upstream.port, verifier) as e:
        for alg in ("ES256", "PS256", "EdDSA"):
            tok = issuer.token(alg, aud=AUD)
            assert e.get("/x", {"Authorization": f"Bearer {tok}"}).status_code == 200, alg
            h, p, s = tok.split(".")
            bad = f"{h}.{p}.{s[:-4]}{'AAAA' if s[-4:] != 'AAAA' else 'BBBB'}"
            assert e.get("/x", {"Authorization": f"Bearer {bad}"}).status_code == 401, alg
        host, software = e.counter("verify.host"), e.counter("verify.software")
        logs = e.logs()
        if verifier == "software":
            assert host == 0 and software >= 6
        elif "verify_signature unavailable, software verifier" in logs:
            # An Envoy without the foreign function: said in the log, software serves all.
            assert host == 0 and software >= 6
        else:
            # ES256 on the host (BoringSSL); PS256/EdDSA always in software.
            assert host >= 2 and software >= 4, (host, software)
        print(f"{envoy_binary()}: verifier={verifier} host={host} software={software}")


# The verifier is chosen at start (docs/checks.md §1): each signing step of the chain plugin
# probes the host for `verify_signature` in `on_configure` and logs a `verifier: ...` line (under
# the plugin's name, `fapi_guard:token,dpop` here) and the gauge
# `fapi_guard.verify.host_available` before any request (`docs/checks.md`).
START_HOST = ("verifier: host verify_signature for ES256/ES384/ES512/RS256/RS384/RS512, "
              "software verifier for PS256/PS384/PS512/EdDSA")
START_SOFTWARE = "verifier: FAPI_GUARD_VERIFIER=software, software verifier for all algorithms"


def start_lines(logs):
    return [line for line in logs.splitlines() if "verifier: " in line]


@pytest.mark.parametrize("verifier", ["host", "software"])
def test_verifier_choice_is_logged_at_start_by_the_signing_steps(upstream, issuer, verifier):
    port, admin = free_port(), free_port()
    cfg = render.render(policy(issuer), ["token", "dpop"], str(build_wasm()), port, upstream.port, admin,
                        vm_env={"FAPI_GUARD_VERIFIER": verifier})
    with EnvoyProcess(cfg, port, admin, "envoy") as e:
        # No request sent: the plugin says which verifier it uses (waiting briefly for the
        # log to reach the file), and the listener has still served nothing.
        want = START_HOST if verifier == "host" else START_SOFTWARE
        lines = wait_start_lines(e, want, (render.chain_name(["token", "dpop"]),))
        assert not [l for l in lines if "unavailable" in l], lines
        assert served(e) == 0
        assert list(e.stats("verify.host_available").values()) == [1]
        assert e.counter("verify.host") == 0 and e.counter("verify.software") == 0


def served(e):
    """Requests the listener has seen (the admin's own are not counted)."""
    counts = {k: v for k, v in e.stats("downstream_rq_total").items() if not k.startswith("http.admin.")}
    assert counts, "no listener request counter"
    return sum(counts.values())


def wait_start_lines(e, want, plugins):
    import time

    deadline = time.time() + 10
    while True:
        lines = start_lines(e.logs())
        if all(any(want in l and f"wasm log {p} " in l for l in lines) for p in plugins) or time.time() > deadline:
            break
        time.sleep(0.1)
    for p in plugins:
        assert any(want in l and f"wasm log {p} " in l for l in lines), (p, lines)
    return lines


def test_host_without_the_function_is_reported_at_start(tmp_path):
    """A host missing the function (the test-only probe filter asks for a name no Envoy
    registers, through the same `HostVerifier::at_start` the filters call): the start line
    says software for all algorithms, the gauge is 0, before any request."""
    import json
    import subprocess

    from harness import ROOT

    subprocess.run(["cargo", "build", "--release", "--target", "wasm32-wasip1", "-p", "fapi-verify-probe",
                    "--quiet"], cwd=ROOT, check=True)
    port, admin = free_port(), free_port()
    cfg = render.render({"api": {"name": "probe"}}, [], "", port, 1, admin, direct_response=True)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    f = render.wasm_filter(["token"], json.dumps({"start_probe": "fapi_guard_no_such_function"}),
                           str(ROOT / "target/wasm32-wasip1/release"))
    c = f["typed_config"]["config"]
    c["vm_config"]["code"]["local"]["filename"] = str(ROOT / "target/wasm32-wasip1/release/fapi_verify_probe.wasm")
    c["name"] = c["root_id"] = c["vm_config"]["vm_id"] = "probe"
    hcm["http_filters"].insert(0, f)
    with EnvoyProcess(cfg, port, admin, "probe") as e:
        wait_start_lines(e, "verifier: host fapi_guard_no_such_function unavailable, software verifier for all "
                         "algorithms", ("probe",))
        assert served(e) == 0
        assert list(e.stats("verify.host_available").values()) == [0]
