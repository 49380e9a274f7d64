"""Browser SMART apps and HEAD, in real Envoy over HTTP/1.1 and h2c (docs/checks.md, "CORS" and
"HEAD").

CORS: a policy `cors` section makes envoy/render.py put Envoy's CORS filter before the guard.
A preflight (Fetch standard, "CORS-preflight request": `OPTIONS` with `Origin` and
`Access-Control-Request-Method`, never a token) from an allowed origin is answered by Envoy and
never reaches the guard or the API; from any other origin it is a protected request like any
other (401). Actual answers to the app's origin, the guard's denials included, carry
`Access-Control-Allow-Origin`, so the app can read a 401/403.

HEAD (RFC 9110 §9.3.2: GET's header fields, no content): a read decided on the response body
cannot be decided on a HEAD answer. The FHIR scope filter GETs the same path and query first
(`fhir.read_before_write_cluster`) and forwards the HEAD only if that answer passes the response
check; the API (the sample FHIR server behind an HTTP/2 recorder, tests/h2_tools.py) sees reads
only, and another patient's HEAD never reaches it.
"""
import json

import pytest
import requests

from fhir_e2e import ANNA, AUD, BJORN, policy_for
from h2_tools import h2_request
from harness import Envoy, Issuer

pytestmark = pytest.mark.e2e

APP = "https://app.example.org"
OTHER = "https://evil.example.net"


@pytest.fixture(scope="module")
def issuer():
    return Issuer("https://issuer.test", algs=("ES256",))


def cors_policy(issuer, **fhir_over):
    p = policy_for(issuer, **fhir_over)
    p["cors"] = {"allowed_origins": [APP, "http://localhost:3000"]}
    return p


@pytest.fixture(scope="module")
def envoy(recorder, issuer):
    with Envoy(cors_policy(issuer), recorder.port, filters=["token", "fhir_scope"], upstream_h2=True) as e:
        yield e


@pytest.fixture(scope="module")
def hidden(recorder, issuer):
    with Envoy(cors_policy(issuer, hide_foreign_as_not_found=True), recorder.port, filters=["token", "fhir_scope"],
               upstream_h2=True) as e:
        yield e


@pytest.fixture(params=["h1", "h2c"])
def call(request):
    """One request over HTTP/1.1 (requests) or h2c (PyPI h2): (status, lower-case headers, body)."""

    def send(envoy, method, path, headers):
        if request.param == "h2c":
            a = h2_request(envoy.port, method, path, headers)
            return a.status, {k.lower(): v for k, v in a.headers.items()}, a.body
        r = requests.request(method, envoy.url + path, headers=headers, timeout=10, allow_redirects=False)
        return r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content

    return send


@pytest.fixture(scope="module")
def anna(issuer):
    return {"authorization": "Bearer " + issuer.token("ES256", aud=AUD, scope="patient/Observation.rs", patient=ANNA)}


def reason(body):
    return json.loads(body)["issue"][0]["details"]["coding"][0]["code"]


def seen_since(recorder, n):
    return [(m, p) for m, p, _ in recorder.requests[n:]]


def listed(value):
    return {v.strip().lower() for v in (value or "").split(",") if v.strip()}


PREFLIGHT = {"access-control-request-method": "GET", "access-control-request-headers": "authorization,dpop"}


def test_preflight_answered_by_envoy_for_the_app_origin_only(envoy, recorder, call):
    path = "/fhir/Observation/obs-anna-hb"
    n = len(recorder.requests)
    status, h, _ = call(envoy, "OPTIONS", path, {"origin": APP, **PREFLIGHT})
    assert status in (200, 204), (status, h)
    assert h.get("access-control-allow-origin") == APP
    assert {"get", "head", "post", "put", "patch", "delete"} <= listed(h.get("access-control-allow-methods"))
    assert {"authorization", "dpop", "content-type", "prefer", "if-match"} <= listed(h.get("access-control-allow-headers"))
    assert h.get("access-control-max-age") == "600"
    assert "access-control-allow-credentials" not in h
    # Another origin: no CORS answer; the preflight is a protected request (no token: 401).
    status, h, body = call(envoy, "OPTIONS", path, {"origin": OTHER, **PREFLIGHT})
    assert status == 401, (status, body[:300])
    assert "access-control-allow-origin" not in h
    assert reason(body) == "missing_token"
    assert seen_since(recorder, n) == [], "a preflight reached the API"


def test_answers_and_denials_to_the_app_carry_cors_headers(envoy, recorder, anna, call):
    status, h, body = call(envoy, "GET", "/fhir/Observation/obs-anna-hb", {"origin": APP, **anna})
    assert status == 200, (status, body[:300])
    assert h.get("access-control-allow-origin") == APP
    assert {"www-authenticate", "dpop-nonce", "etag", "location"} <= listed(h.get("access-control-expose-headers"))
    # The guard's 401 (no token) and 403 (another patient's resource, decided on the response).
    status, h, body = call(envoy, "GET", "/fhir/Observation/obs-anna-hb", {"origin": APP})
    assert status == 401 and reason(body) == "missing_token"
    assert h.get("access-control-allow-origin") == APP
    assert "www-authenticate" in h
    status, h, body = call(envoy, "GET", "/fhir/Observation/obs-bjorn-hb", {"origin": APP, **anna})
    assert status == 403 and reason(body) == "response_outside_grant", (status, body[:300])
    assert h.get("access-control-allow-origin") == APP
    # Another origin gets no CORS headers (the browser keeps the answer from its script).
    status, h, _ = call(envoy, "GET", "/fhir/Observation/obs-anna-hb", {"origin": OTHER, **anna})
    assert status == 200 and "access-control-allow-origin" not in h


def test_head_on_own_resource_decided_like_get(envoy, recorder, anna, call):
    path = "/fhir/Observation/obs-anna-hb"
    n = len(recorder.requests)
    status, h, body = call(envoy, "HEAD", path, anna)
    assert status == 200, (status, h)
    assert body == b""
    assert h.get("etag")  # the GET's header fields (RFC 9110 §9.3.2)
    # The filter's GET of the same path, then the HEAD itself: reads only.
    assert seen_since(recorder, n) == [("GET", path), ("HEAD", path)]
    get_headers = recorder.requests[n][2]
    assert "authorization" not in get_headers and "dpop" not in get_headers


def test_head_on_another_patients_resource_refused_before_the_api(envoy, recorder, anna, call):
    path = "/fhir/Observation/obs-bjorn-hb"
    n = len(recorder.requests)
    status, h, _ = call(envoy, "HEAD", path, anna)
    assert status == 403, (status, h)
    assert seen_since(recorder, n) == [("GET", path)], "the HEAD reached the API"


def test_head_on_another_patients_resource_hidden_as_not_found(hidden, recorder, anna, call):
    path = "/fhir/Observation/obs-bjorn-hb"
    n = len(recorder.requests)
    status, _, _ = call(hidden, "HEAD", path, anna)
    assert status == 404
    assert seen_since(recorder, n) == [("GET", path)]
    # Same answer as for an id that does not exist.
    status, _, _ = call(hidden, "HEAD", "/fhir/Observation/obs-nobody", anna)
    assert status == 404


def test_head_search_decided_on_the_get_searchset(envoy, recorder, anna, call):
    path = f"/fhir/Observation?patient={ANNA}"
    n = len(recorder.requests)
    status, _, body = call(envoy, "HEAD", path, anna)
    assert status == 200 and body == b""
    assert seen_since(recorder, n) == [("GET", path), ("HEAD", path)]
    # The GET asks for strict handling, as a searchset read does (FHIR R4 §3.1.1.5.9).
    assert "handling=strict" in recorder.requests[n][2].get("prefer", "")
    # A search pinned to another patient is refused on the request, nothing reaches the API.
    n = len(recorder.requests)
    status, _, _ = call(envoy, "HEAD", f"/fhir/Observation?patient={BJORN}", anna)
    assert status == 403
    assert seen_since(recorder, n) == []
