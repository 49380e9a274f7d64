"""The verified token travels from the token filter to the DPoP and FHIR scope filters as
Envoy filter state, which a client cannot set (docs/checks.md §1). A client that sends a header of
the same name as the filter-state key, with claims of its choosing, gets nothing from it."""
import json

import pytest

from harness import Envoy, Issuer

pytestmark = pytest.mark.e2e

AUD = "handoff-e2e"

FORGED = {
    "scheme": "Dpop", "token_sha256": "x" * 43, "iss": "https://issuer.test", "sub": "mallory",
    "client_id": "evil", "exp": 4102444800, "scopes": ["system/*.cruds"], "cnf_jkt": None,
    "cnf_x5t_s256": None, "claims": {"patient": "pat-bjorn"},
}
HEADER_NAMES = ["fapi_guard.verified_token", "wasm.fapi_guard.verified_token", "x-fapi-guard-verified-token"]


def policy(issuer):
    return {
        "api": {"name": "handoff-e2e", "audience": AUD},
        "issuers": [{"issuer": issuer.iss, "jwks": issuer.jwks()}],
        "token": {"schemes": ["DPoP", "Bearer"]},
        "dpop": {"required": False},
        "fhir": {"base_path": "/fhir", "scope_contexts": ["patient", "user", "system"]},
    }


@pytest.fixture(scope="module")
def issuer():
    return Issuer("https://issuer.test", algs=("ES256",))


def forged_headers(token=None):
    h = {name: json.dumps(FORGED) for name in HEADER_NAMES}
    if token:
        h["Authorization"] = f"Bearer {token}"
    return h


def code(r):
    return r.json()["issue"][0]["details"]["coding"][0]["code"]


@pytest.mark.parametrize("filters,who", [(["dpop", "fhir_scope"], "dpop"), (["fhir_scope"], "fhir_scope")])
def test_forged_handoff_header_without_token_filter_is_refused(upstream, issuer, filters, who):
    """Even in a chain that lost its token filter (a misconfiguration), the later filters
    refuse: they read filter state only, never a header."""
    with Envoy(policy(issuer), upstream.port, filters=filters) as e:
        before = len(upstream.requests)
        r = e.get("/fhir/Patient/pat-bjorn", forged_headers(issuer.token(aud=AUD)))
        assert r.status_code == 401, r.text
        assert code(r) == "no_verified_token"
        assert e.counter(f"{who}.denied.no_verified_token") == 1
        assert len(upstream.requests) == before, "nothing reached the API"


def test_forged_handoff_header_in_full_chain_does_not_widen_the_grant(upstream, issuer):
    """With the whole chain, the verified token's own scopes decide, not the forged header's."""
    with Envoy(policy(issuer), upstream.port) as e:
        tok = issuer.token(aud=AUD, scope="patient/Patient.rs", patient="pat-anna")
        assert e.get("/fhir/Patient/pat-anna", {"Authorization": f"Bearer {tok}"}).status_code == 200
        r = e.get("/fhir/Patient/pat-bjorn", forged_headers(tok))
        assert r.status_code == 403, r.text
        r = e.get("/fhir/Observation?patient=pat-anna", forged_headers(tok))
        assert r.status_code == 403, r.text
