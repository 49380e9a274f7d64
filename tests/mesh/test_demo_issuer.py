"""kind-cluster/demo_issuer.py: its tokens and proofs verify with an independent JOSE library."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import sys

import pytest

from conftest import REPO_ROOT

joserfc = pytest.importorskip("joserfc")
from joserfc import jws  # noqa: E402
from joserfc.jwk import ECKey, KeySet  # noqa: E402


@pytest.fixture(scope="module")
def issuer():
    spec = importlib.util.spec_from_file_location("demo_issuer", REPO_ROOT / "kind-cluster" / "demo_issuer.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["demo_issuer"] = mod
    spec.loader.exec_module(mod)
    return mod


def payload(token: str) -> dict:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def header(token: str) -> dict:
    part = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_token_and_proof(issuer, tmp_path):
    issuer.keygen(tmp_path)
    keys = KeySet.import_key_set(json.loads((tmp_path / "jwks.json").read_text()))
    at = issuer.token(tmp_path, "pat-alice", "patient/*.rs", 300)
    jws.deserialize_compact(at, keys.keys[0], algorithms=["ES256"])  # raises on a bad signature
    assert header(at)["typ"] == "at+jwt"
    claims = payload(at)
    assert claims["iss"] == issuer.ISSUER and claims["aud"] == "fhir-demo" and claims["patient"] == "pat-alice"
    assert claims["exp"] - claims["iat"] == 300

    url = "http://hapi-fhir.fhir.svc.cluster.local:8080/fhir/Patient/pat-alice"
    proof = issuer.proof(tmp_path, "GET", url, at)
    h = header(proof)
    assert h["typ"] == "dpop+jwt" and "d" not in h["jwk"]
    client_key = ECKey.import_key(h["jwk"])
    jws.deserialize_compact(proof, client_key, algorithms=["ES256"])
    assert claims["cnf"]["jkt"] == client_key.thumbprint(), "token must be bound to the proof key (RFC 9449 §6.1)"
    p = payload(proof)
    assert p["htm"] == "GET" and p["htu"] == url
    assert p["ath"] == base64.urlsafe_b64encode(hashlib.sha256(at.encode()).digest()).rstrip(b"=").decode()


def test_tampered_token_fails_verification(issuer, tmp_path):
    issuer.keygen(tmp_path)
    keys = KeySet.import_key_set(json.loads((tmp_path / "jwks.json").read_text()))
    at = issuer.token(tmp_path, "pat-alice", "patient/*.rs", 300)
    h, p, s = at.split(".")
    forged = payload(at) | {"patient": "pat-bob"}
    p2 = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    with pytest.raises(Exception):
        jws.deserialize_compact(f"{h}.{p2}.{s}", keys.keys[0], algorithms=["ES256"])
