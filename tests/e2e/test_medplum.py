"""The guard in real Envoy in front of a real FHIR implementation: Medplum's FHIR router over its
in-memory repository (tests/fhir_upstream/medplum; the `medplum` fixture of conftest.py), with
the sample API's two patients, `pat-anna` and `pat-bjorn`. Where test_fhir_scope.py checks the
guard against a stub, this checks it against a server that really parses search parameters,
applies conditional create/update/patch/delete, JSON Patch and transactions.

A `patient/*.cruds` token for Anna: her own read, search, compartment search, create, update,
JSON Patch, conditional update and transaction are served; every way to reach Bjørn's data is
refused and Medplum's own state (read bypassing Envoy) shows nothing of his changed. Then the
client patterns of real apps that Medplum answers: its paging links followed page by page,
`_elements`, `_revinclude=Provenance:target`, `HEAD`. Each request goes over HTTP/1.1 and
HTTP/2 (h2c, tests/h2_tools.py) where it matters, through the chain plugin (the one layout).

Medplum's search matches a reference parameter on the typed form (`patient=Patient/pat-anna`;
its in-memory matcher finds nothing for a bare id), so the tests pin with the typed form.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
import requests

from harness import ROOT, Envoy, Issuer
from h2_tools import h2_request

pytestmark = pytest.mark.e2e

AUD = "fhir-e2e"
ANNA, BJORN = "pat-anna", "pat-bjorn"
FHIR_JSON = "application/fhir+json"
JSON_PATCH = "application/json-patch+json"
PIN = "patient=Patient/pat-anna"
ANNA_OBS = {"obs-anna-hb", "obs-anna-glucose", "obs-anna-bp"}
# Everything of Bjørn's in the seed (tests/e2e/medplum_upstream.py `seed()`).
BJORN_SEED = [("Patient", "pat-bjorn"), ("Observation", "obs-bjorn-hb"), ("Observation", "obs-bjorn-glucose"),
              ("Observation", "obs-bjorn-bp"), ("Condition", "cond-bjorn-1"), ("MedicationRequest", "medreq-bjorn-1"),
              ("Encounter", "enc-bjorn-1"), ("DocumentReference", "doc-bjorn-1"), ("Provenance", "prov-bjorn-hb")]
# Strings only Bjørn's resources hold: none may reach Anna's client.
BJORN_MARKS = ("pat-bjorn", "Hansen", "15.4", "Hypertensive", "02117100456")


def fhir_section() -> dict:
    f = {
        "base_path": "/fhir",
        "patient_claim": "patient",
        "resource_types": ["Patient", "Observation", "Condition", "MedicationRequest", "Encounter",
                           "DocumentReference", "Medication", "Practitioner", "Provenance"],
        "patient_shared_types": ["Medication"],
        "max_request_body_bytes": 65536,
    }
    # The upstream's family (`fhir.server`, docs/checks.md "Reading the request as the server
    # does"): the guard decides as Medplum reads a request.
    f["server"] = "medplum"
    return f


@pytest.fixture(scope="module")
def issuer():
    return Issuer("https://issuer.test", algs=("ES256",))


@pytest.fixture(scope="module")
def envoy(medplum, issuer):
    policy = {
        "api": {"name": "fhir-medplum", "audience": AUD},
        "issuers": [{"issuer": issuer.iss, "jwks": issuer.jwks()}],
        "token": {"schemes": ["DPoP", "Bearer"]},
        "routes": [{"path_prefix": "/fhir/metadata", "methods": ["GET"], "require": "none"}],
        "fhir": fhir_section(),
    }
    with Envoy(policy, medplum.port, filters=["token", "fhir_scope"]) as e:
        yield e


@dataclass
class Resp:
    status: int
    headers: dict
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def json(self):
        return json.loads(self.body)


class Client:
    """Requests with a Bearer token for `scope` and Anna in context, over HTTP/1.1 or HTTP/2."""

    def __init__(self, envoy, issuer, scope, proto, patient=ANNA):
        self.envoy, self.proto = envoy, proto
        claims = {"aud": AUD, "scope": scope}
        if patient:
            claims["patient"] = patient
        self.auth = {"authorization": f"Bearer {issuer.token('ES256', **claims)}"}

    def __call__(self, method, path, body=None, headers=None, content_type=FHIR_JSON) -> Resp:
        h = dict(self.auth)
        data = b""
        if body is not None:
            h["content-type"] = content_type
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        h.update({k.lower(): v for k, v in (headers or {}).items()})
        if self.proto == "h2":
            a = h2_request(self.envoy.port, method, path, h, data)
            return Resp(a.status, {k.lower(): v for k, v in a.headers.items()}, a.body)
        r = requests.request(method, self.envoy.url + path, headers=h, data=data or None, timeout=10)
        return Resp(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)


@pytest.fixture(params=["h1", "h2"])
def proto(request):
    return request.param


@pytest.fixture
def anna(envoy, issuer, proto):
    return Client(envoy, issuer, "openid launch/patient patient/*.cruds", proto)


def reason(r: Resp) -> str:
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", r.text
    return body["issue"][0]["details"]["coding"][0]["code"]


def served(r: Resp, status=200):
    assert r.status == status, (r.status, r.text[:600])
    return r.json() if r.body else None


def refused(r: Resp, code: str | None = None, status=403):
    """A refusal by the guard (its OperationOutcome, `code` when given) with nothing of Bjørn's."""
    assert r.status == status, (r.status, r.text[:600])
    assert r.headers["content-type"] == FHIR_JSON
    got = reason(r)
    if code:
        assert got == code, r.text
    for mark in BJORN_MARKS:
        assert mark not in r.text, r.text
    return got


def entries(bundle: dict, mode: str | None = None) -> list[dict]:
    return [e["resource"] for e in bundle.get("entry", []) if mode is None or e.get("search", {}).get("mode") == mode]


def refs(bundle: dict, mode: str | None = None) -> set[str]:
    return {f'{r["resourceType"]}/{r["id"]}' for r in entries(bundle, mode)}


def obs_body(pid: str, oid: str | None = None, status="final", tag=None) -> dict:
    b = {"resourceType": "Observation", "status": status,
         "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                   "code": "laboratory"}]}],
         "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
         "subject": {"reference": f"Patient/{pid}"},
         "valueQuantity": {"value": 12.9, "unit": "g/dL", "system": "http://unitsofmeasure.org", "code": "g/dL"}}
    if oid:
        b["id"] = oid
    if tag:
        b["identifier"] = [{"system": "urn:test", "value": tag}]
    return b


@pytest.fixture
def bjorn_untouched(medplum):
    """Bjørn's stored resources (Medplum's own state, not through Envoy) before the test; after
    it, each must be there unchanged (same version), and nothing new may name him."""
    before = {k: medplum.state(*k) for k in BJORN_SEED}
    assert all(before.values()), before
    yield
    for k, v in before.items():
        assert medplum.state(*k) == v, f"{k} changed"
    for rtype in ("Observation", "Condition", "Provenance"):
        b = medplum.get(f"/fhir/{rtype}?patient=Patient/pat-bjorn&_count=100").json()
        assert {r["id"] for r in entries(b)} <= {i for t, i in BJORN_SEED if t == rtype}, b


# ---- Anna's own data is served ----

def test_own_read_and_searches_served(anna):
    assert served(anna("GET", "/fhir/Patient/pat-anna"))["id"] == ANNA
    assert served(anna("GET", "/fhir/Observation/obs-anna-hb"))["subject"]["reference"] == "Patient/pat-anna"
    b = served(anna("GET", f"/fhir/Observation?{PIN}&category=laboratory"))
    assert {"Observation/obs-anna-hb", "Observation/obs-anna-glucose"} <= refs(b)
    assert all(r["subject"]["reference"] == "Patient/pat-anna" for r in entries(b))
    b = served(anna("POST", "/fhir/Observation/_search", body=f"{PIN}&category=vital-signs",
                    content_type="application/x-www-form-urlencoded"))
    assert "Observation/obs-anna-bp" in refs(b)
    b = served(anna("GET", "/fhir/Patient/pat-anna/Condition"))
    assert refs(b) == {"Condition/cond-anna-1"}
    b = served(anna("GET", f"/fhir/Observation?{PIN}&code=718-7&_include=Observation:patient"))
    assert "Patient/pat-anna" in refs(b, "include")


def test_own_writes_served(anna, medplum, proto):
    tag = f"own-{proto}-{uuid.uuid4().hex[:8]}"
    # Create: Medplum assigns the id; the test uses the one it returns.
    oid = served(anna("POST", "/fhir/Observation", body=obs_body(ANNA, tag=tag)), 201)["id"]
    assert medplum.state("Observation", oid)["subject"]["reference"] == "Patient/pat-anna"
    # Update by id.
    body = obs_body(ANNA, oid=oid, status="preliminary", tag=tag)
    served(anna("PUT", f"/fhir/Observation/{oid}", body=body))
    assert medplum.state("Observation", oid)["status"] == "preliminary"
    # JSON Patch (RFC 6902) of a non-compartment element.
    r = anna("PATCH", f"/fhir/Observation/{oid}", body=[{"op": "replace", "path": "/status", "value": "amended"}],
             content_type=JSON_PATCH)
    assert served(r)["status"] == "amended"
    assert medplum.state("Observation", oid)["status"] == "amended"
    # Conditional update (FHIR R4 http.html#cond-update), pinned to Anna: Medplum updates the match.
    body = obs_body(ANNA, status="final", tag=tag)
    served(anna("PUT", f"/fhir/Observation?identifier=urn:test|{tag}&{PIN}", body=body))
    assert medplum.state("Observation", oid)["status"] == "final"
    # Transaction (http.html#transaction): two creates of her own, the second referring to the
    # first by its `urn:uuid` fullUrl, which Medplum rewrites to the id it assigns. (A write by
    # id or by criteria inside a Bundle is refused, `bundle_entry_forbidden`: it needs the stored
    # resource read first, which the guard does only for a write sent on its own.)
    first = f"urn:uuid:{uuid.uuid4()}"
    derived = obs_body(ANNA, tag=tag + "-tx2")
    derived["derivedFrom"] = [{"reference": first}]
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": first, "resource": obs_body(ANNA, tag=tag + "-tx1"),
         "request": {"method": "POST", "url": "Observation"}},
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": derived,
         "request": {"method": "POST", "url": "Observation"}}]}
    b = served(anna("POST", "/fhir", body=tx))
    assert b["type"] == "transaction-response"
    one = entries(medplum.get(f"/fhir/Observation?identifier=urn:test|{tag}-tx1").json())
    two = entries(medplum.get(f"/fhir/Observation?identifier=urn:test|{tag}-tx2").json())
    assert [r["subject"]["reference"] for r in one + two] == ["Patient/pat-anna"] * 2
    assert two[0]["derivedFrom"] == [{"reference": f"Observation/{one[0]['id']}"}]


def test_own_patient_update_served(anna, medplum):
    body = {k: v for k, v in medplum.state("Patient", ANNA).items() if k != "meta"}
    body["telecom"] = [{"system": "phone", "value": "+47 555 00 123"}]
    served(anna("PUT", "/fhir/Patient/pat-anna", body=body))
    assert medplum.state("Patient", ANNA)["telecom"] == body["telecom"]


# ---- every way to Bjørn's data is refused ----

def test_patient_write_linking_him_refused(anna, medplum, bjorn_untouched):
    """Patient.link is one of Patient's elements in the Patient CompartmentDefinition: a write
    of her own Patient that links his puts her record in his compartment."""
    before = medplum.state("Patient", ANNA)
    link = [{"other": {"reference": "Patient/pat-bjorn"}, "type": "seealso"}]
    body = {k: v for k, v in before.items() if k != "meta"} | {"link": link}
    try:
        refused(anna("PUT", "/fhir/Patient/pat-anna", body=body))
        refused(anna("PATCH", "/fhir/Patient/pat-anna", body=[{"op": "add", "path": "/link", "value": link}],
                     content_type=JSON_PATCH))
        assert medplum.state("Patient", ANNA) == before
    finally:  # whatever got through is undone on the server itself, for the tests after this one
        restore = {k: v for k, v in before.items() if k != "meta"}
        requests.put(f"http://127.0.0.1:{medplum.port}/fhir/Patient/pat-anna", json=restore, timeout=5)


def test_foreign_read_by_id_refused_on_response(anna, bjorn_untouched):
    for path in ("/fhir/Observation/obs-bjorn-hb", "/fhir/Condition/cond-bjorn-1",
                 "/fhir/Observation/obs-bjorn-hb/_history", "/fhir/Provenance/prov-bjorn-hb"):
        refused(anna("GET", path), "response_outside_grant")
    refused(anna("GET", "/fhir/Patient/pat-bjorn"), "compartment_escape")


@pytest.mark.parametrize("path", [
    "/fhir/Observation?patient=Patient/pat-bjorn",
    "/fhir/Observation?subject=Patient/pat-bjorn&_summary=count",
    "/fhir/Patient/pat-bjorn/Observation",
    "/fhir/Observation?category=laboratory",  # no pin: Medplum would return both patients
    f"/fhir/Observation?{PIN},Patient/pat-bjorn",
    f"/fhir/Observation?{PIN}&_include=Observation:performer",
    "/fhir/Practitioner?_id=prac-kari&_revinclude=Observation:performer",  # every patient's results
    "/fhir/Patient?_id=pat-bjorn&_revinclude=Observation:subject",
    "/fhir/Encounter?_id=enc-bjorn-1&_revinclude=Observation:encounter",
    "/fhir/Observation?_filter=patient%20eq%20Patient/pat-bjorn",  # FHIR _filter, which Medplum reads
    "/fhir/Observation?_compartment=Patient/pat-bjorn",
])
def test_foreign_searches_refused(anna, path):
    refused(anna("GET", path))


def test_foreign_post_search_refused(anna):
    refused(anna("POST", "/fhir/Observation/_search", body="patient=Patient/pat-bjorn",
                 content_type="application/x-www-form-urlencoded"))


@pytest.mark.parametrize("criteria", ["_id=obs-bjorn-hb", "patient=Patient/pat-bjorn&code=718-7", "code=718-7"])
def test_conditional_create_matching_his_resource_refused(anna, criteria, bjorn_untouched):
    """Conditional create (FHIR R4 http.html#ccreate): when `If-None-Exist` matches, Medplum
    answers with the match it found; criteria reaching Bjørn's results would read them."""
    refused(anna("POST", "/fhir/Observation", body=obs_body(ANNA), headers={"If-None-Exist": criteria}))


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_foreign_write_by_id_refused(anna, method, bjorn_untouched):
    path = "/fhir/Observation/obs-bjorn-hb"
    if method == "PUT":  # Anna's body on Bjørn's id: the body alone would pass
        r = anna("PUT", path, body=obs_body(ANNA, oid="obs-bjorn-hb"))
    elif method == "PATCH":
        r = anna("PATCH", path, body=[{"op": "replace", "path": "/status", "value": "entered-in-error"}],
                 content_type=JSON_PATCH)
    else:
        r = anna("DELETE", path)
    refused(r)


@pytest.mark.parametrize("method,path", [
    ("PUT", "/fhir/Observation?_id=obs-bjorn-hb"),
    ("PUT", "/fhir/Observation?patient=Patient/pat-bjorn&code=718-7"),
    ("PATCH", "/fhir/Observation?_id=obs-bjorn-hb"),
    ("PATCH", "/fhir/Observation?patient=Patient/pat-bjorn"),
    ("DELETE", "/fhir/Observation?_id=obs-bjorn-hb"),
    ("DELETE", "/fhir/Observation?patient=Patient/pat-bjorn"),
    ("DELETE", "/fhir/Condition?code=38341003"),
])
def test_foreign_conditional_writes_refused(anna, method, path, bjorn_untouched):
    """Conditional update/patch/delete (FHIR R4 http.html#cond-update, #cdelete) whose criteria
    Medplum would match against Bjørn's resources."""
    if method == "PUT":
        r = anna(method, path, body=obs_body(ANNA))
    elif method == "PATCH":
        r = anna(method, path, body=[{"op": "replace", "path": "/status", "value": "entered-in-error"}],
                 content_type=JSON_PATCH)
    else:
        r = anna(method, path)
    refused(r)


@pytest.mark.parametrize("entry", [
    {"resource": obs_body(ANNA, oid="obs-bjorn-hb"), "request": {"method": "PUT", "url": "Observation/obs-bjorn-hb"}},
    {"request": {"method": "DELETE", "url": "Observation/obs-bjorn-bp"}},
    {"request": {"method": "DELETE", "url": "Observation?patient=Patient/pat-bjorn"}},
    {"resource": obs_body(ANNA), "request": {"method": "PUT", "url": "Observation?_id=obs-bjorn-glucose"}},
    {"resource": obs_body(BJORN), "request": {"method": "POST", "url": "Observation"}},
    {"request": {"method": "GET", "url": "Observation?patient=Patient/pat-bjorn"}},
], ids=["put-by-id", "delete-by-id", "conditional-delete", "conditional-update", "create-for-him", "search"])
def test_transaction_with_a_foreign_entry_refused(anna, medplum, entry, bjorn_untouched):
    tag = f"tx-{uuid.uuid4().hex[:8]}"
    own = {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": obs_body(ANNA, tag=tag),
           "request": {"method": "POST", "url": "Observation"}}
    r = anna("POST", "/fhir", body={"resourceType": "Bundle", "type": "transaction", "entry": [own, entry]})
    refused(r)
    # All or nothing: not even Anna's own entry reached the server.
    assert not entries(medplum.get(f"/fhir/Observation?identifier=urn:test|{tag}").json())


# ---- what real clients send to Medplum ----

def test_paging_links_followed_page_by_page(anna):
    """Medplum pages with the original query plus `_count`/`_offset` (its server's search links,
    tests/fhir_upstream/medplum/server.mjs `addLinks`); a client follows `next` to the end."""
    seen, path, pages = [], f"/fhir/Observation?{PIN}&category=laboratory&_count=1", 0
    while path and pages < 10:
        b = served(anna("GET", path))
        assert all(r["subject"]["reference"] == "Patient/pat-anna" for r in entries(b)), b
        seen += [r["id"] for r in entries(b)]
        nxt = [lk["url"] for lk in b.get("link", []) if lk["relation"] == "next"]
        path = "{0.path}?{0.query}".format(urlsplit(nxt[0])) if nxt else None
        pages += 1
    assert {"obs-anna-hb", "obs-anna-glucose"} <= set(seen) and len(seen) == len(set(seen)) == pages


def test_cursor_paging_links_followed(anna):
    """Medplum's cursor paging (its search.ts buildSearchLinksWithCursor: `_sort=_lastUpdated`,
    `_count` >= 20): `next` carries `_cursor=2-{instant}-{ids already given}`."""
    path = f"/fhir/Observation?{PIN}&category=survey&_sort=_lastUpdated&_count=20"
    b = served(anna("GET", path))
    first = [r["id"] for r in entries(b)]
    nxt = [lk["url"] for lk in b.get("link", []) if lk["relation"] == "next"]
    assert len(first) == 20 and nxt and "_cursor=2-" in nxt[0], b.get("link")
    b = served(anna("GET", "{0.path}?{0.query}".format(urlsplit(nxt[0]))))
    rest = [r["id"] for r in entries(b)]
    assert all(r["subject"]["reference"] == "Patient/pat-anna" for r in entries(b))
    assert sorted(first + rest) == [f"obs-anna-survey-{i:02}" for i in range(23)]


def test_forged_page_of_another_patient_refused(anna):
    refused(anna("GET", "/fhir/Observation?_count=1&_offset=1&patient=Patient%2Fpat-bjorn"))
    refused(anna("GET", "/fhir/Observation?_count=20&_cursor=2-0&_sort=_lastUpdated&patient=Patient%2Fpat-bjorn"))
    refused(anna("GET", "/fhir/Observation?_count=20&_cursor=2-0&_sort=_lastUpdated"))


def test_elements_served(anna):
    """`_elements` (FHIR R4 search.html#elements): Medplum returns the subset (core
    `subsetResource`) and its `next` link carries it as `_fields`. Served with only Anna's
    entries, or refused with its named reason where the guard cannot keep the elements the
    check needs (never the generic response refusal of her own data)."""
    r = anna("GET", f"/fhir/Observation?{PIN}&category=laboratory&_elements=code&_count=1")
    if r.status == 400:
        assert reason(r) == "subsetting_hides_compartment", r.text
        return
    b = served(r)
    assert {r["id"] for r in entries(b)} <= ANNA_OBS and entries(b), b
    nxt = [lk["url"] for lk in b.get("link", []) if lk["relation"] == "next"]
    assert nxt and "_fields=" in nxt[0], b.get("link")
    b = served(anna("GET", "{0.path}?{0.query}".format(urlsplit(nxt[0]))))
    assert {r["id"] for r in entries(b)} <= ANNA_OBS and entries(b), b


def test_revinclude_provenance_served(anna):
    """US Core: `_revinclude=Provenance:target` on the patient's own search; each Provenance's
    target is an entry of the same answer."""
    b = served(anna("GET", f"/fhir/Observation?{PIN}&code=718-7&_revinclude=Provenance:target"))
    assert "Observation/obs-anna-hb" in refs(b, "match")
    assert refs(b, "include") == {"Provenance/prov-anna-hb"}


def test_head_like_get(anna):
    """HEAD (RFC 9110 §9.3.2): Medplum's server answers it as GET without a body."""
    r = anna("HEAD", "/fhir/Patient/pat-anna")
    assert r.status == 200 and r.body == b"", (r.status, r.headers)
    r = anna("HEAD", "/fhir/Observation/obs-anna-hb")
    assert r.status == 200 and r.body == b"", (r.status, r.headers)
    r = anna("HEAD", "/fhir/Observation/obs-bjorn-hb")
    assert r.status in (403, 404), (r.status, r.headers)


def test_post_search_json_body_is_what_medplum_reads(anna, medplum):
    """Medplum's `POST [type]/_search` reads its parameters from the body alone, and a JSON body
    as well as a form (fhir-router `searchByPost` takes the parsed body; its server parses JSON
    bodies). Here the query carries Anna's pin and the JSON body asks for Bjørn's count
    (`_summary=count`: a `total` and no entries, nothing for the response check to see)."""
    direct = requests.post(f"http://127.0.0.1:{medplum.port}/fhir/Observation/_search?{PIN}",
                           json={"patient": "Patient/pat-bjorn", "_summary": "count"}, timeout=5).json()
    assert direct["total"] >= 3 and "entry" not in direct  # what the server would answer: his count
    for ctype in ("application/json", FHIR_JSON):
        r = anna("POST", f"/fhir/Observation/_search?{PIN}", body={"patient": "Patient/pat-bjorn", "_summary": "count"},
                 content_type=ctype)
        assert r.status in (400, 403, 415), (r.status, r.text[:600])  # whichever refusal the guard names
        refused(r, status=r.status)
