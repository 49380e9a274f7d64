"""HelseID's real token shapes through token + DPoP filters in real Envoy, on the
host verifier (`verify_signature`) and the pure-Rust one (`FAPI_GUARD_VERIFIER=software`).
Tokens and proofs by joserfc (tests/e2e/helseid_shapes.py)."""
import pytest
import requests

from harness import EnvoyProcess, build_wasm, free_port, render
from helseid_shapes import HELSEID_DPOP_ALGS, HelseId, proof, proof_key, reason

pytestmark = pytest.mark.e2e

AUD = "nhn:helseid-e2e"


def policy(helseid, **token):
    return {
        "api": {"name": "helseid-e2e", "audience": AUD, "sole_audience": True},
        "issuers": [{"issuer": "https://helseid-sts.test.nhn.no", "jwks": helseid.jwks()}],
        "token": {"schemes": ["DPoP"], "allowed_algs": ["RS256"], "require_sub": False, "allow_typ_jwt": True,
                  **token},
        "dpop": {"allowed_algs": HELSEID_DPOP_ALGS},
    }


@pytest.fixture(scope="module")
def helseid():
    return HelseId()


@pytest.fixture(scope="module")
def keys():
    return {alg: proof_key(alg) for alg in HELSEID_DPOP_ALGS}


def start(p, upstream, verifier):
    port, admin = free_port(), free_port()
    cfg = render.render(p, ["token", "dpop"], str(build_wasm()), port, upstream.port, admin,
                        vm_env={"FAPI_GUARD_VERIFIER": verifier})
    return EnvoyProcess(cfg, port, admin, f"helseid-{verifier}")


@pytest.fixture(scope="module", params=["host", "software"])
def envoy(request, helseid, upstream):
    e = start(policy(helseid), upstream, request.param)
    e.verifier = request.param
    yield e
    e.stop()


def call(e, helseid, key, alg, path="/api/documents", **tok):
    token = helseid.token(AUD, key.thumbprint(), **tok)
    url = f"http://127.0.0.1:{e.port}{path}"
    return requests.get(url, headers={"Authorization": f"DPoP {token}",
                                      "DPoP": proof(key, alg, "GET", url, token)}, timeout=10)


@pytest.mark.parametrize("alg", HELSEID_DPOP_ALGS)
def test_user_token_rs256_x5c_jwks_scope_array_each_proof_alg(envoy, helseid, keys, alg):
    before = envoy.counter("verify." + envoy.verifier)
    r = call(envoy, helseid, keys[alg], alg)
    assert r.status_code == 200, r.text
    # The token (RS256) and the proof were verified on the path this Envoy is set to.
    assert envoy.counter("verify." + envoy.verifier) >= before + 1
    if envoy.verifier == "software":
        assert envoy.counter("verify.host") == 0


def test_client_credentials_without_sub_scope_string(envoy, helseid, keys):
    r = call(envoy, helseid, keys["ES384"], "ES384", sub=False, scope_as="string")
    assert r.status_code == 200, r.text


def test_tampered_proof_each_alg_refused(envoy, helseid, keys):
    for alg in ("ES384", "PS384", "ES512"):
        key = keys[alg]
        token = helseid.token(AUD, key.thumbprint())
        url = f"http://127.0.0.1:{envoy.port}/api/x"
        p = proof(key, alg, "GET", url, token)
        head, sig = p.rsplit(".", 1)
        bad = head + "." + ("A" if sig[0] != "A" else "B") + sig[1:]
        r = requests.get(url, headers={"Authorization": f"DPoP {token}", "DPoP": bad}, timeout=10)
        assert r.status_code == 401 and reason(r) == "dpop_bad_signature", (alg, r.text)


def test_fapi_default_policy_refuses_helseid_shapes(helseid, keys, upstream):
    """Without the HelseID opt-ins: RS256 refused (FAPI 2.0 §5.4), no `sub` refused (RFC 9068
    §2.2), an ES384 proof refused."""
    p = policy(helseid)
    p["token"] = {"schemes": ["DPoP"], "allowed_algs": ["RS256"]}
    p["dpop"] = {}
    with start(p, upstream, "host") as e:
        r = call(e, helseid, keys["ES256"], "ES256", sub=False)
        assert r.status_code == 401 and reason(r) == "missing_claim", r.text
        r = call(e, helseid, keys["ES384"], "ES384")
        assert r.status_code == 401 and reason(r) == "dpop_alg_not_allowed", r.text
        r = call(e, helseid, keys["ES256"], "ES256")
        assert r.status_code == 200, r.text
    p["token"] = {"schemes": ["DPoP"]}
    with start(p, upstream, "host") as e:
        r = call(e, helseid, keys["ES256"], "ES256")
        assert r.status_code == 401 and reason(r) == "alg_not_allowed", r.text
