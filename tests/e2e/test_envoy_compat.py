"""Envoy version compatibility (issue 13): both signature verifier paths in the running Envoy
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
        elif "host has no verify_signature" in logs:
            # An Envoy without the foreign function: said in the log, software serves all.
            assert host == 0 and software >= 6
        else:
            # ES256 on the host (BoringSSL); PS256/EdDSA always in software.
            assert host >= 2 and software >= 4, (host, software)
        print(f"{envoy_binary()}: verifier={verifier} host={host} software={software}")
