"""Deciding as the server reads the request (docs/checks.md "Reading the request as the server
does"), in real Envoy over HTTP/1.1 and HTTP/2 (h2c prior knowledge; the listener codec is AUTO).

The API is the sample FHIR server (tests/fhir_upstream/server.py) with its behaviour switches
(`Fhir.reading`) modelling named servers, each read in that server's source:
- `ibm`: LinuxForHealth FHIR `FHIRHttpServletRequestWrapper` executes the `X-Method-Override`
  header (and `x-method-override` parameter) instead of the request method;
- `hapi`: HAPI FHIR `RestfulServer#handleRequest` reads a `_search` body only when it is
  `application/x-www-form-urlencoded`;
- `microsoft`: microsoft/fhir-server (ASP.NET Core) reads query keys case-insensitively.
Each attack below got through before these rules (see the docstrings); now each is refused with
its reason code and counter, never reaching the API, while the same requests in the server's
own reading (`fhir.server`) and real clients' requests are served.
"""
import http.client
import json
import threading

import pytest

from fhir_e2e import ANNA, AUD, BJORN, policy_for
from h2_tools import h2_request
from harness import Envoy, Issuer

import server as fhir_server  # tests/fhir_upstream/server.py

pytestmark = pytest.mark.e2e

FORM = "application/x-www-form-urlencoded"
TRANSPORTS = ["h1", "h2"]


@pytest.fixture(scope="module")
def issuer():
    return Issuer("https://issuer.test", algs=("ES256",))


@pytest.fixture(scope="module")
def stub():
    """The sample API, its switches set per test (`stub.fhir.reading`)."""
    httpd = fhir_server.serve("127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def reading(stub):
    """Sets the API's switches (and a fresh store) for one test."""
    def set_(*switches):
        stub.fhir.store = fhir_server.Store()
        stub.fhir.reading = set(switches)
        return stub.fhir
    yield set_
    stub.fhir.reading = set()


def envoy_for(issuer, stub, server=None):
    over = {"server": server} if server else {}
    return Envoy(policy_for(issuer, **over), stub.server_address[1], filters=["token", "fhir_scope"])


@pytest.fixture(scope="module")
def generic(issuer, stub):
    with envoy_for(issuer, stub) as e:
        yield e


@pytest.fixture(scope="module")
def ibm(issuer, stub):
    with envoy_for(issuer, stub, "ibm") as e:
        yield e


@pytest.fixture(scope="module")
def hapi(issuer, stub):
    with envoy_for(issuer, stub, "hapi") as e:
        yield e


@pytest.fixture(scope="module")
def microsoft(issuer, stub):
    with envoy_for(issuer, stub, "microsoft") as e:
        yield e


class Answer:
    def __init__(self, status, body):
        self.status, self.body = status, body

    def json(self):
        return json.loads(self.body)

    def reason(self):
        try:
            return self.json()["issue"][0]["details"]["coding"][0]["code"]
        except (ValueError, KeyError, IndexError, TypeError):
            return None


def send(envoy, transport, method, path, token=None, headers=None, body=b""):
    h = {"authorization": f"Bearer {token}"} if token else {}
    h.update(headers or {})
    if transport == "h2":
        a = h2_request(envoy.port, method, path, h, body)
        return Answer(a.status, a.body)
    # http.client sends the target byte for byte (requests would decode `%61` to `a`).
    c = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=10)
    try:
        c.request(method, path, body=body or None, headers=h)
        r = c.getresponse()
        return Answer(r.status, r.read())
    finally:
        c.close()


def exists(fhir, rtype, rid):
    return fhir.store.current(rtype, rid) is not None


def tok(issuer, scope, patient=ANNA):
    return issuer.token("ES256", aud=AUD, scope=scope, patient=patient)


# ------------------------------------------------------------------ 1. method override

OVERRIDE_HEADERS = ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override", "x-method-OVERRIDE"]
OVERRIDE_PARAMS = ["_method", "x-method-override", "X-HTTP-Method-Override", "%5Fmethod", "x%2Dmethod%2Doverride"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_method_override_refused_under_generic(generic, issuer, reading, transport):
    """Bypass 1: a read-only `patient/Observation.rs` token, `GET` another patient's
    Observation plus `X-Method-Override: DELETE`: an IBM-like API deleted it (the guard then
    refused the answer, too late). Now `400 method_override` before the API sees it, for every
    override header and parameter form, in any case, percent-encoded or not."""
    fhir = reading("ibm")
    token = tok(issuer, "patient/Observation.rs")
    before = generic.counter("token.denied.method_override")
    n = 0
    for h in OVERRIDE_HEADERS:
        a = send(generic, transport, "GET", "/fhir/Observation/obs-bjorn-hb", token, {h: "DELETE"})
        assert exists(fhir, "Observation", "obs-bjorn-hb"), f"{h}: another patient's record deleted"
        assert (a.status, a.reason()) == (400, "method_override"), (h, a.status, a.body)
        n += 1
    for p in OVERRIDE_PARAMS:
        a = send(generic, transport, "GET", f"/fhir/Observation/obs-anna-hb?{p}=DELETE", token)
        assert (a.status, a.reason()) == (400, "method_override"), (p, a.status, a.body)
        n += 1
    # `POST Observation?patient=<other>` + override DELETE: a conditional delete of all of them.
    a = send(generic, transport, "POST", f"/fhir/Observation?patient={BJORN}", token,
             {"X-Method-Override": "DELETE", "content-type": "application/fhir+json"}, b"{}")
    assert (a.status, a.reason()) == (400, "method_override")
    n += 1
    assert exists(fhir, "Observation", "obs-bjorn-hb") and exists(fhir, "Observation", "obs-anna-hb")
    assert generic.counter("token.denied.method_override") == before + n
    # The same read without an override is served (the patient's own).
    assert send(generic, transport, "GET", "/fhir/Observation/obs-anna-hb", token).status == 200


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_method_override_refused_on_public_routes(generic, reading, transport):
    """A public `GET` route plus an override must not become an unauthenticated write."""
    fhir = reading("ibm")
    seen = len(fhir.hits)
    for h in OVERRIDE_HEADERS:
        a = send(generic, transport, "GET", "/fhir/metadata", headers={h: "DELETE"})
        assert (a.status, a.reason()) == (400, "method_override"), h
    a = send(generic, transport, "GET", "/fhir/metadata?_method=PUT")
    assert (a.status, a.reason()) == (400, "method_override")
    assert len(fhir.hits) == seen, fhir.hits[seen:]
    assert send(generic, transport, "GET", "/fhir/metadata").status == 200


@pytest.mark.parametrize("only", ["token", "dpop", "fhir_scope"])
def test_each_filter_refuses_overrides_on_its_own(issuer, stub, reading, only):
    """Each filter runs `Policy::route` first, so each refuses on its own (counter per filter)."""
    fhir = reading("ibm")
    with Envoy(policy_for(issuer), stub.server_address[1], filters=[only]) as e:
        seen = len(fhir.hits)
        for transport in TRANSPORTS:
            a = send(e, transport, "GET", "/fhir/metadata", headers={"X-Method-Override": "DELETE"})
            assert (a.status, a.reason()) == (400, "method_override"), (only, transport, a.status, a.body)
        assert len(fhir.hits) == seen
        assert e.counter(f"{only}.denied.method_override") == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_override_in_a_form_body(generic, issuer, reading, transport):
    """IBM's `getParameter` also reads a form body: `GET` + form `x-method-override=DELETE`."""
    fhir = reading()
    token = tok(issuer, "patient/Observation.rs")
    a = send(generic, transport, "GET", "/fhir/Observation/obs-anna-hb", token,
             {"content-type": FORM}, b"x-method-override=DELETE")
    assert (a.status, a.reason()) == (400, "method_override")
    assert exists(fhir, "Observation", "obs-anna-hb")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_profiles_decide_on_what_their_server_executes(ibm, hapi, issuer, reading, transport):
    """`ibm` refuses the forms IBM executes and serves the ones it ignores; `hapi` serves
    every form (HAPI dispatches on the request method alone)."""
    fhir = reading("ibm")
    token = tok(issuer, "patient/Observation.rs")
    a = send(ibm, transport, "GET", "/fhir/Observation/obs-anna-hb", token, {"X-Method-Override": "DELETE"})
    assert (a.status, a.reason()) == (400, "method_override")
    a = send(ibm, transport, "GET", "/fhir/Observation/obs-anna-hb?x-method-override=DELETE", token)
    assert (a.status, a.reason()) == (400, "method_override")
    a = send(ibm, transport, "GET", "/fhir/Observation/obs-anna-hb?_method=DELETE", token)
    assert a.status == 200 and a.json()["id"] == "obs-anna-hb"
    fhir = reading("hapi")
    a = send(hapi, transport, "GET", "/fhir/Observation/obs-anna-hb", token, {"X-HTTP-Method-Override": "DELETE"})
    assert a.status == 200 and exists(fhir, "Observation", "obs-anna-hb")


# ------------------------------------------------------------ 2. `_search` bodies, count oracle

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_search_body_not_form_refused(generic, issuer, reading, transport):
    """Bypass 2: a `patient=<own>` pin in a JSON `_search` body satisfied the guard while a
    HAPI-like API ignored it, so `_summary=count` / `_count=0` counted every patient's
    Observations (a count oracle: total 6, not Anna's 3). Now 415 `search_body_not_form`."""
    reading("hapi")
    token = tok(issuer, "patient/Observation.rs")
    before = generic.counter("fhir_scope.denied.search_body_not_form")
    for q in ("_summary=count", "_count=0"):
        a = send(generic, transport, "POST", f"/fhir/Observation/_search?{q}", token,
                 {"content-type": "application/json"}, f"patient={ANNA}".encode())
        assert not (a.status == 200 and a.json().get("total", 0) > 3), f"{q}: count oracle {a.body}"
        assert (a.status, a.reason()) == (415, "search_body_not_form"), (q, a.status, a.body)
    assert generic.counter("fhir_scope.denied.search_body_not_form") == before + 2
    # A form body is read by every server: served, the patient's own count.
    a = send(generic, transport, "POST", "/fhir/Observation/_search?_summary=count", token,
             {"content-type": FORM}, f"patient={ANNA}".encode())
    assert a.status == 200 and a.json()["total"] == 3, a.body


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_user_constraint_only_in_a_json_body(generic, issuer, reading, transport):
    """Bypass 2 under `user/` grants: `user/Observation.rs?category=laboratory` got vital signs
    with `category=laboratory` in a JSON body the API ignored."""
    reading("hapi")
    token = tok(issuer, "user/Observation.rs?category=laboratory")
    a = send(generic, transport, "POST", "/fhir/Observation/_search", token,
             {"content-type": "application/json"}, b"category=laboratory")
    got = {c["coding"][0]["code"] for e in (a.json().get("entry", []) if a.status == 200 else [])
           for c in e["resource"].get("category", [])}
    assert "vital-signs" not in got, "vital signs returned to a laboratory-only token"
    assert (a.status, a.reason()) == (415, "search_body_not_form"), (a.status, a.body)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_hapi_profile_ignores_non_form_bodies(hapi, issuer, reading, transport):
    """Under `hapi` a non-form `_search` body is ignored as HAPI ignores it: decided on the
    query alone, where the pin (403 `unsafe_search`) or the constraint is missing."""
    reading("hapi")
    token = tok(issuer, "patient/Observation.rs")
    for q in ("_summary=count", "_count=0"):
        a = send(hapi, transport, "POST", f"/fhir/Observation/_search?{q}", token,
                 {"content-type": "application/json"}, f"patient={ANNA}".encode())
        assert (a.status, a.reason()) == (403, "unsafe_search"), (q, a.status, a.body)
    token = tok(issuer, "user/Observation.rs?category=laboratory")
    a = send(hapi, transport, "POST", "/fhir/Observation/_search", token,
             {"content-type": "application/json"}, b"category=laboratory")
    assert (a.status, a.reason()) == (403, "query_constraint_missing")
    a = send(hapi, transport, "POST", "/fhir/Observation/_search", token,
             {"content-type": FORM}, b"category=laboratory")
    assert a.status == 200
    cats = {c["coding"][0]["code"] for e in a.json()["entry"] for c in e["resource"]["category"]}
    assert cats == {"laboratory"}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_form_lookalike_content_type_refused(hapi, issuer, reading, transport):
    """HAPI reads a `_search` body as a form when the Content-Type *starts with* the form type
    (`RestfulServer#handleRequest`, `contentType.startsWith(CT_X_FORM_URLENCODED)`), so
    `application/x-www-form-urlencodedx` is a form to HAPI but no form to a media-type parser.
    Read as "ignored", its `_include` of Patients reached an Observation-only `user/` token.
    Refused under every profile, `hapi` included."""
    reading("hapi")
    token = tok(issuer, "user/Observation.rs?category=laboratory")
    for ctype in ("application/x-www-form-urlencodedx", "application/x-www-form-urlencoded-v2"):
        a = send(hapi, transport, "POST", "/fhir/Observation/_search?category=laboratory", token,
                 {"content-type": ctype}, b"_include=Observation:subject:Patient")
        types = {e["resource"]["resourceType"] for e in (a.json().get("entry", []) if a.status == 200 else [])}
        assert "Patient" not in types, f"{ctype}: Patients returned to an Observation-only token"
        assert (a.status, a.reason()) == (415, "search_body_not_form"), (ctype, a.status, a.body)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_paging_with_the_pin_in_the_query_is_served(generic, issuer, reading, transport):
    """A page smaller than `total` is paging when the pin is in the query: served."""
    reading()
    token = tok(issuer, "patient/Observation.rs")
    a = send(generic, transport, "GET", f"/fhir/Observation?patient={ANNA}&_count=1", token)
    assert a.status == 200 and len(a.json()["entry"]) == 1 and a.json()["total"] == 3, a.body
    a = send(generic, transport, "GET", f"/fhir/Observation?patient={ANNA}&_summary=count", token)
    assert a.status == 200 and a.json()["total"] == 3


# --------------------------------------------------------------------- 3. parameter-name case

INCLUDE_CASE = "/fhir/Observation?_INCLUDE=Observation:subject:Patient"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_parameter_name_case(generic, issuer, reading, transport):
    """Bypass 3: `_INCLUDE=Observation:subject:Patient` passed the exact-name checks and a
    case-insensitive (Microsoft-like) API returned Patients to an Observation-only `user/`
    token; so did `_TYPE` on a system search. `generic` refuses the case variant, and a
    repeated `_type` (400 `parameter_name_ambiguous`)."""
    reading("microsoft")
    token = tok(issuer, "user/Observation.rs")
    for path in (INCLUDE_CASE, "/fhir?_type=Observation&_TYPE=Patient", "/fhir?_type=Observation&_type=Patient"):
        a = send(generic, transport, "GET", path, token)
        types = {e["resource"]["resourceType"] for e in a.json().get("entry", [])} if a.status == 200 else set()
        assert "Patient" not in types, f"{path}: Patients returned to an Observation-only token"
        assert (a.status, a.reason()) == (400, "parameter_name_ambiguous"), (path, a.status, a.body)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_microsoft_profile_reads_names_caselessly(microsoft, issuer, reading, transport):
    """`microsoft` reads `_INCLUDE`/`_TYPE` as `_include`/`_type` and decides so."""
    reading("microsoft")
    token = tok(issuer, "user/Observation.rs")
    include = INCLUDE_CASE
    for path in (include, "/fhir?_type=Observation&_TYPE=Patient"):
        a = send(microsoft, transport, "GET", path, token)
        assert (a.status, a.reason()) == (403, "insufficient_scope"), (path, a.status, a.body)
    a = send(microsoft, transport, "GET", "/fhir/Observation?_COUNT=1", token)
    assert a.status == 200


# ------------------------------------------------------------------------ 6. tokens elsewhere

@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tokens_elsewhere(generic, issuer, reading, transport):
    """Bypass 6: `%61ccess_token=` in the query passed the RFC 6750 §2.3 check, and a token in
    a form body (§2.2) was not looked at."""
    reading()
    token = tok(issuer, "patient/Observation.rs")
    for name in ("%61ccess_token", "access%5ftoken", "ACCESS_TOKEN"):
        a = send(generic, transport, "GET", f"/fhir/Observation?patient={ANNA}&{name}={token}", token)
        assert (a.status, a.reason()) == (400, "token_in_query"), name


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_token_in_a_form_body(generic, issuer, reading, transport):
    """RFC 6750 §2.2: a token in a `_search` form body, which every server reads."""
    reading()
    token = tok(issuer, "patient/Observation.rs")
    before = generic.counter("fhir_scope.denied.token_in_body")
    a = send(generic, transport, "POST", "/fhir/Observation/_search", token,
             {"content-type": FORM}, f"patient={ANNA}&access_token={token}".encode())
    assert (a.status, a.reason()) == (400, "token_in_body")
    assert generic.counter("fhir_scope.denied.token_in_body") == before + 1
