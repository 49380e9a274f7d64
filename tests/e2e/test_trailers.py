"""Body decisions run however the stream ends (RFC 9113 §8.1, RFC 9112 §7.1.2), in real Envoy.

A request (or response) may end with a trailers frame instead of END_STREAM on DATA: HTTP/2
(h2c with prior knowledge on the AUTO-codec listener, and h2 over TLS with ALPN) and HTTP/1.1
chunked bodies with a trailer section (the listener surfaces them with `enable_trailers`).
For every body-decided interaction (create for another patient, batch/transaction reading
another patient, `_search` POST form, update/patch/delete by id that needs the stored read) the
filter must decide at the trailers and hold them (and everything before them) until then; for
response checks, an HTTP/2 upstream ending its answers with trailers must not get past the
check. Clients and the HTTP/2 upstream: PyPI `h2` (tests/h2_tools.py). The API is the sample
FHIR server (tests/fhir_upstream/server.py) with its two patients.
"""
import json
import ssl

import pytest
import requests

from fhir_e2e import ANNA, AUD, BJORN, policy_for
from h2_tools import Answer, H2Upstream, h1_chunked_request, h2_request
from harness import Envoy, Issuer, Pki

pytestmark = pytest.mark.e2e

FHIR_JSON = "application/fhir+json"
TRAILERS = {"x-client-checksum": "abc123"}


@pytest.fixture(scope="module")
def issuer():
    return Issuer("https://issuer.test", algs=("ES256",))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def plain(api, issuer):
    """h2c (prior knowledge) and HTTP/1.1 with chunked trailers, HTTP/1.1 upstream."""
    with Envoy(policy_for(issuer), api, filters=["token", "fhir_scope"], http1_trailers=True) as e:
        yield e


@pytest.fixture(scope="module")
def tls(api, issuer, pki):
    """TLS listener offering h2 and http/1.1 by ALPN."""
    t = {"args": (pki.server_cert, pki.server_key, None)}
    with Envoy(policy_for(issuer), api, filters=["token", "fhir_scope"], tls=t, alpn=["h2", "http/1.1"],
               http1_trailers=True) as e:
        yield e


@pytest.fixture(scope="module")
def h2_api(api):
    u = H2Upstream(api)
    yield u
    u.stop()


@pytest.fixture(scope="module")
def h2_envoy(h2_api, issuer):
    """Cluster `api` speaks HTTP/2 to an upstream that ends every answer with trailers (also
    the stored read before a write goes there)."""
    with Envoy(policy_for(issuer), h2_api.port, filters=["token", "fhir_scope"], upstream_h2=True,
               http1_trailers=True) as e:
        yield e


def tls_context(pki):
    ctx = ssl.create_default_context(cafile=pki.ca)
    ctx.set_alpn_protocols(["h2"])
    return ctx


TRANSPORTS = ["h2c", "h2-tls", "h1-chunked"]


class Client:
    """Sends a request for `scope` (patient in context: Anna) over `transport`, ending it
    with trailers."""

    def __init__(self, issuer, transport, plain, tls, pki, scope="patient/*.cruds"):
        token = issuer.token("ES256", aud=AUD, scope=scope, patient=ANNA)
        self.auth = {"authorization": f"Bearer {token}"}
        self.transport = transport
        self.envoy = tls if transport == "h2-tls" else plain
        self.pki = pki

    def __call__(self, method, path, body=None, form=None, headers=None, trailers=TRAILERS):
        h = dict(self.auth)
        h.update(headers or {})
        if form is not None:
            h["content-type"] = "application/x-www-form-urlencoded"
            data = form.encode()
        elif body is not None:
            h.setdefault("content-type", FHIR_JSON)
            data = json.dumps(body).encode()
        else:
            data = b""
        port = self.envoy.port
        if self.transport == "h1-chunked":
            return h1_chunked_request(port, method, path, h, data, trailers)
        ctx = tls_context(self.pki) if self.transport == "h2-tls" else None
        return h2_request(port, method, path, h, data, trailers, tls=ctx)


@pytest.fixture(params=TRANSPORTS)
def anna(request, issuer, plain, tls, pki):
    return Client(issuer, request.param, plain, tls, pki)


def upstream_view(api, path):
    """The API's own view, bypassing Envoy."""
    return requests.get(f"http://127.0.0.1:{api}{path}", timeout=5)


def obs_body(pid, oid=None, value=12.9):
    b = {"resourceType": "Observation", "status": "final",
         "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                   "code": "laboratory"}]}],
         "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
         "subject": {"reference": f"Patient/{pid}"},
         "valueQuantity": {"value": value, "unit": "g/dL", "system": "http://unitsofmeasure.org", "code": "g/dL"}}
    if oid:
        b["id"] = oid
    return b


def batch(kind, *entries):
    return {"resourceType": "Bundle", "type": kind, "entry": [
        {"request": {"method": m, "url": u}, **({"resource": res} if res is not None else {})}
        for m, u, res in entries]}


def reason(ans):
    body = json.loads(ans.body)
    assert body["resourceType"] == "OperationOutcome", ans.text
    return body["issue"][0]["details"]["coding"][0]["code"]


def denied(ans, code, status=403):
    assert ans.status == status, (ans.status, ans.reset, ans.text[:400])
    assert reason(ans) == code, ans.text
    return ans


def count(api, query):
    return upstream_view(api, f"/fhir/Observation?{query}&_count=1000").json().get("total", 0)


# ---- requests ending with trailers ----

def test_create_for_another_patient_refused(api, anna):
    before = count(api, f"patient={BJORN}")
    denied(anna("POST", "/fhir/Observation", body=obs_body(BJORN, value=66.6)), "write_outside_compartment")
    assert count(api, f"patient={BJORN}") == before, "the create reached the API"


def test_create_own_allowed_and_trailers_released(api, anna):
    before = count(api, f"patient={ANNA}")
    r = anna("POST", "/fhir/Observation", body=obs_body(ANNA))
    assert r.status == 201, (r.status, r.text[:300])
    assert count(api, f"patient={ANNA}") == before + 1


def test_batch_reading_another_patient_refused(anna):
    denied(anna("POST", "/fhir", body=batch(
        "batch", ("GET", "Patient/pat-anna", None), ("GET", f"Observation?subject={BJORN}", None))),
        "bundle_entry_forbidden")


def test_transaction_creating_for_another_patient_refused(api, anna):
    before = count(api, f"patient={BJORN}")
    denied(anna("POST", "/fhir", body=batch(
        "transaction", ("POST", "Observation", obs_body(ANNA)), ("POST", "Observation", obs_body(BJORN)))),
        "bundle_entry_forbidden")
    assert count(api, f"patient={BJORN}") == before


def test_batch_foreign_read_by_id_refused_on_response(anna):
    r = denied(anna("POST", "/fhir", body=batch("batch", ("GET", "Observation/obs-bjorn-hb", None))),
               "response_outside_grant")
    assert "15.4" not in r.text and BJORN not in r.text


def test_search_form_for_another_patient_refused(anna):
    r = anna("POST", "/fhir/Observation/_search", form=f"subject=Patient%2F{BJORN}")
    assert r.status == 403, (r.status, r.text[:300])
    assert reason(r) in ("compartment_escape", "unsafe_search")
    assert "15.4" not in r.text


def test_search_form_bare_id_on_a_multi_type_reference_refused(anna):
    """docs/checks.md, FHIR search read as HAPI FHIR reads it: `subject=<bare id>` may name a
    Group or Device as well as a Patient, so it is refused, however the form body arrives."""
    r = denied(anna("POST", "/fhir/Observation/_search", form=f"subject={ANNA}"), "ambiguous_reference")
    assert "glucose" not in r.text


def test_search_form_own_allowed(anna):
    r = anna("POST", "/fhir/Observation/_search", form=f"subject=Patient%2F{ANNA}&category=laboratory")
    assert r.status == 200, (r.status, r.text[:300])
    assert json.loads(r.body)["type"] == "searchset"


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_write_by_id_of_another_patient_refused(api, anna, method):
    path = "/fhir/Observation/obs-bjorn-glucose"
    before = upstream_view(api, path).json()
    if method == "PUT":
        r = anna("PUT", path, body=obs_body(ANNA, oid="obs-bjorn-glucose"))
    elif method == "PATCH":
        r = anna("PATCH", path, body=[{"op": "replace", "path": "/status", "value": "entered-in-error"}],
                 headers={"content-type": "application/json-patch+json"})
    else:
        r = anna("DELETE", path)  # headers, then only trailers
    denied(r, "write_outside_compartment")
    assert upstream_view(api, path).json() == before, "the write reached the API"


def test_write_by_id_own_allowed(api, anna):
    created = anna("POST", "/fhir/Observation", body=obs_body(ANNA))
    assert created.status == 201, created.text
    oid = json.loads(created.body)["id"]
    r = anna("PUT", f"/fhir/Observation/{oid}", body=obs_body(ANNA, oid=oid, value=10.5))
    assert r.status == 200, (r.status, r.text[:300])
    assert upstream_view(api, f"/fhir/Observation/{oid}").json()["valueQuantity"]["value"] == 10.5
    assert anna("DELETE", f"/fhir/Observation/{oid}").status == 204
    assert upstream_view(api, f"/fhir/Observation/{oid}").status_code == 404


def test_body_over_limit_refused_at_trailers(anna):
    big = batch("batch", *[("GET", "Patient/pat-anna", None)] * 3000)
    denied(anna("POST", "/fhir", body=big), "request_too_large", 400)


# ---- responses ending with trailers (HTTP/2 upstream) ----

@pytest.fixture(params=["h2c", "h1"])
def via_h2_api(request, h2_envoy, issuer):
    token = issuer.token("ES256", aud=AUD, scope="patient/*.cruds", patient=ANNA)
    auth = {"authorization": f"Bearer {token}"}

    def call(method, path, body=None, headers=None):
        h = dict(auth)
        h.update(headers or {})
        data = b""
        if body is not None:
            h["content-type"] = FHIR_JSON
            data = json.dumps(body).encode()
        if request.param == "h2c":
            return h2_request(h2_envoy.port, method, path, h, data)
        try:
            r = requests.request(method, h2_envoy.url + path, headers=h, data=data or None, timeout=10)
        except requests.RequestException:
            return Answer(status=0, reset=True)
        return Answer(status=r.status_code, headers={k.lower(): v for k, v in r.headers.items()}, body=r.content)

    return call


def test_response_check_with_upstream_trailers(via_h2_api):
    r = denied(via_h2_api("GET", "/fhir/Observation/obs-bjorn-hb"), "response_outside_grant")
    assert "15.4" not in r.text and BJORN not in r.text
    r = denied(via_h2_api("GET", "/fhir/Condition/cond-bjorn-1"), "response_outside_grant")
    assert "Hypertensive" not in r.text


def test_response_check_own_read_passes_with_trailers(via_h2_api):
    r = via_h2_api("GET", "/fhir/Observation/obs-anna-hb")
    assert r.status == 200, (r.status, r.text[:300])
    assert json.loads(r.body)["id"] == "obs-anna-hb"


def test_response_checked_batch_with_upstream_trailers(via_h2_api):
    r = denied(via_h2_api("POST", "/fhir", body=batch("batch", ("GET", "Observation/obs-bjorn-bp", None))),
               "response_outside_grant")
    assert BJORN not in r.text


def test_stored_read_from_http2_upstream(api, via_h2_api):
    path = "/fhir/Observation/obs-bjorn-bp"
    before = upstream_view(api, path).json()
    denied(via_h2_api("PUT", path, body=obs_body(ANNA, oid="obs-bjorn-bp")), "write_outside_compartment")
    assert upstream_view(api, path).json() == before


def test_response_trailers_reach_client_when_allowed(h2_envoy, issuer):
    token = issuer.token("ES256", aud=AUD, scope="patient/*.rs", patient=ANNA)
    r = h2_request(h2_envoy.port, "GET", "/fhir/Observation/obs-anna-glucose", {"authorization": f"Bearer {token}"})
    assert r.status == 200 and json.loads(r.body)["id"] == "obs-anna-glucose"
    assert r.trailers.get("x-upstream-trailer") == "1", r.trailers



def test_host_without_header_hold(api, issuer, monkeypatch):
    """Istio's WasmPlugin cannot hold headers while the body is read (policy
    `hold_headers_while_buffering: false`): the headers go on, the body and the trailers are
    held, and a refusal at the trailers resets the upstream request before it has its body."""
    import render

    orig = render.wasm_filter

    def without_hold(*args, **kwargs):
        f = orig(*args, **kwargs)
        f["typed_config"]["config"].pop("allow_on_headers_stop_iteration", None)
        return f

    monkeypatch.setattr(render, "wasm_filter", without_hold)
    token = issuer.token("ES256", aud=AUD, scope="patient/*.cruds", patient=ANNA)
    h = {"authorization": f"Bearer {token}", "content-type": FHIR_JSON}
    with Envoy(policy_for(issuer, hold_headers_while_buffering=False), api, filters=["token", "fhir_scope"],
               http1_trailers=True) as e:
        for send in (h2_request, h1_chunked_request):
            before = count(api, f"patient={BJORN}")
            r = send(e.port, "POST", "/fhir/Observation", h, json.dumps(obs_body(BJORN)).encode(), TRAILERS)
            assert r.status != 201, r.text[:300]
            assert count(api, f"patient={BJORN}") == before, "the create reached the API"
            path = "/fhir/Observation/obs-bjorn-hb"
            stored = upstream_view(api, path).json()
            r = send(e.port, "PUT", path, h, json.dumps(obs_body(ANNA, oid="obs-bjorn-hb")).encode(), TRAILERS)
            assert r.status != 200, r.text[:300]
            assert upstream_view(api, path).json() == stored, "the write reached the API"
            r = send(e.port, "POST", "/fhir/Observation", h, json.dumps(obs_body(ANNA)).encode(), TRAILERS)
            assert r.status == 201, (r.status, r.text[:300])
