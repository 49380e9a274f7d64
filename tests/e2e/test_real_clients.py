"""What real FHIR clients send, in real Envoy over HTTP/1.1 and h2c
(docs/checks.md §3 "paging", "subsetted answers", "Provenance of the patient's data").

- HAPI FHIR's paging link (`[base]?_getpages=<search id>&_getpagesoffset=N&...`) is served and
  every page is checked entry by entry: a page of another patient's search is refused.
- `_elements` is extended with the elements the response check reads (the upstream returns
  the patient's own data with its `subject`); `_summary=text` is refused by name.
- US Core's `_revinclude=Provenance:target` is served when every Provenance targets an entry
  of the answer; one that also targets another patient's resource refuses the answer.

The upstream is the sample FHIR server (tests/fhir_upstream/server.py), which pages and
subsets as HAPI FHIR does (its module doc names the HAPI sources).
"""
import json
import threading
import uuid
from urllib.parse import urlsplit

import pytest
import requests

from fhir_e2e import ANNA, AUD, BJORN, policy_for
from h2_tools import h2_request
from harness import Envoy, Issuer

import server as fhir_server  # tests/fhir_upstream/server.py

pytestmark = pytest.mark.e2e

SCOPES = "patient/Observation.rs patient/Patient.rs patient/Provenance.rs"
PROVENANCE = {
    "prov-anna-hb": ["Observation/obs-anna-hb"],
    # One Provenance about two patients' results: Anna's glucose and Bjørn's.
    "prov-mixed": ["Observation/obs-anna-glucose", "Observation/obs-bjorn-glucose"],
    "prov-bjorn-bp": ["Observation/obs-bjorn-bp"],
}


@pytest.fixture(scope="module")
def fhir_api():
    """The sample FHIR API with the Provenance resources above; (port, its `Fhir`)."""
    httpd = fhir_server.serve("127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    port = httpd.server_address[1]
    for pid, targets in PROVENANCE.items():
        prov = {"resourceType": "Provenance", "id": pid, "recorded": "2024-05-02T09:00:00+02:00",
                "target": [{"reference": t} for t in targets],
                "agent": [{"who": {"reference": "Practitioner/prac-kari"}}]}
        r = requests.put(f"http://127.0.0.1:{port}/fhir/Provenance/{pid}", json=prov, timeout=5)
        assert r.status_code in (200, 201), r.text
    yield port, httpd.fhir
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def issuer():
    return Issuer("https://issuer.test", algs=("ES256",))


@pytest.fixture(scope="module")
def envoy(fhir_api, issuer):
    types = ["Patient", "Observation", "Condition", "Practitioner", "Medication", "Provenance"]
    policy = policy_for(issuer, resource_types=types)
    policy["dpop"] = {"required": False}  # Bearer tokens here; the DPoP test binds its own
    with Envoy(policy, fhir_api[0], filters=["token", "dpop", "fhir_scope"]) as e:
        yield e


@pytest.fixture(params=["h1", "h2c"])
def get(request, issuer):
    """GET as Anna (`SCOPES`) over HTTP/1.1 (requests) or h2c (PyPI h2): (status, JSON body)."""
    token = issuer.token("ES256", aud=AUD, scope=SCOPES, patient=ANNA)

    def call(envoy, path):
        h = {"authorization": f"Bearer {token}"}
        if request.param == "h2c":
            a = h2_request(envoy.port, "GET", path, h)
            status, body = a.status, a.body
        else:
            r = requests.get(envoy.url + path, headers=h, timeout=10)
            status, body = r.status_code, r.content
        return status, json.loads(body) if body else None

    return call


def reason(body):
    return body["issue"][0]["details"]["coding"][0]["code"]


def next_link(bundle):
    url = next(link["url"] for link in bundle.get("link", []) if link["relation"] == "next")
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def ids(bundle):
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


# ---------- paging ----------

def test_hapi_next_links_of_the_patients_search_are_served(envoy, get):
    status, first = get(envoy, f"/fhir/Observation?patient={ANNA}&_count=1")
    assert status == 200, first
    seen = ids(first)
    link = next_link(first)
    assert "_getpages=" in link
    while link:
        status, page = get(envoy, link)
        assert status == 200, page
        assert page["type"] == "searchset"
        seen += ids(page)
        link = next_link(page) if any(k["relation"] == "next" for k in page.get("link", [])) else None
    assert sorted(seen) == ["obs-anna-bp", "obs-anna-glucose", "obs-anna-hb"]


def test_pages_of_a_subsetted_search_keep_the_checked_elements(envoy, get):
    # HAPI keeps the search as the upstream received it (with the added `subject`), and its
    # pages are subsetted the same way.
    status, first = get(envoy, f"/fhir/Observation?patient={ANNA}&_count=2&_elements=status")
    assert status == 200, first
    status, page = get(envoy, next_link(first))
    assert status == 200, page
    assert [e["resource"]["subject"]["reference"] for e in page["entry"]] == [f"Patient/{ANNA}"]


def test_page_of_another_patients_search_is_refused(envoy, fhir_api, get):
    # The search id of a search for Bjørn (made by anyone: the link names no patient).
    r = requests.get(f"http://127.0.0.1:{fhir_api[0]}/fhir/Observation?patient={BJORN}&_count=1", timeout=5)
    link = next_link(r.json())
    status, body = get(envoy, link)
    assert status == 403, body
    assert reason(body) == "response_outside_grant"
    assert BJORN not in json.dumps(body)


def test_page_link_with_other_parameters_is_refused(envoy, get):
    status, body = get(envoy, f"/fhir?_getpages=x&_getpagesoffset=1&patient={ANNA}")
    assert status == 400, body
    assert reason(body) == "unknown_fhir_request"


# ---------- _elements / _summary ----------

def test_elements_keep_what_the_check_reads(envoy, fhir_api, get):
    status, body = get(envoy, f"/fhir/Observation?patient={ANNA}&_elements=status,valueQuantity")
    assert status == 200, body
    assert sorted(ids(body)) == ["obs-anna-bp", "obs-anna-glucose", "obs-anna-hb"]
    for e in body["entry"]:
        assert e["resource"]["subject"] == {"reference": f"Patient/{ANNA}"}
        assert "code" not in e["resource"]  # still a subset
    # What the upstream was asked: the client's `_elements` plus `subject`.
    asked = [t for m, t in fhir_api[1].hits if t.startswith("/fhir/Observation?patient=pat-anna&_elements=")]
    assert asked[-1] == f"/fhir/Observation?patient={ANNA}&_elements=status,valueQuantity,subject,performer"
    status, body = get(envoy, "/fhir/Observation/obs-anna-hb?_elements=valueQuantity")
    assert status == 200, body
    assert body["valueQuantity"]["value"] == 13.1


def test_elements_on_another_patients_resource_still_refused(envoy, get):
    status, body = get(envoy, "/fhir/Observation/obs-bjorn-hb?_elements=status")
    assert status == 403, body
    assert reason(body) == "response_outside_grant"


def test_summary_true_served_and_text_refused_by_name(envoy, get):
    status, body = get(envoy, f"/fhir/Observation?patient={ANNA}&_summary=true")
    assert status == 200, body
    assert all("subject" in e["resource"] for e in body["entry"])
    status, body = get(envoy, f"/fhir/Observation?patient={ANNA}&_summary=text")
    assert status == 400, body
    assert reason(body) == "subsetting_hides_compartment"
    # Patient is decided on `id`, which a text summary keeps.
    status, body = get(envoy, f"/fhir/Patient?_id={ANNA}&_summary=text")
    assert status == 200, body
    assert ids(body) == [ANNA]


# ---------- _revinclude=Provenance:target ----------

def test_provenance_of_the_patients_own_results_is_served(envoy, get):
    status, body = get(envoy, f"/fhir/Observation?patient={ANNA}&code=718-7&_revinclude=Provenance:target")
    assert status == 200, body
    assert ids(body) == ["obs-anna-hb", "prov-anna-hb"]
    assert body["entry"][1]["search"]["mode"] == "include"


def test_provenance_that_also_targets_another_patient_is_refused(envoy, get):
    # prov-mixed targets Anna's glucose and Bjørn's: the answer is refused whole.
    status, body = get(envoy, f"/fhir/Observation?patient={ANNA}&_revinclude=Provenance:target")
    assert status == 403, body
    assert reason(body) == "response_outside_grant"
    assert "obs-bjorn" not in json.dumps(body)


# ---------- the rewrite after the DPoP check ----------

def test_dpop_bound_request_with_elements(envoy, issuer):
    """The DPoP check reads the client's request (RFC 9449 §4.3 `htu`); the `_elements`
    rewrite comes after it."""
    from joserfc import jws
    from joserfc.jwk import ECKey
    import base64
    import hashlib
    import time

    key = ECKey.generate_key("P-256")
    token = issuer.token("ES256", aud=AUD, scope=SCOPES, patient=ANNA, cnf={"jkt": key.thumbprint()})
    ath = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()
    claims = {"jti": uuid.uuid4().hex, "htm": "GET", "htu": envoy.url + "/fhir/Observation",
              "iat": int(time.time()), "ath": ath}
    proof = jws.serialize_compact({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)},
                                  json.dumps(claims).encode(), key, algorithms=["ES256"])
    r = requests.get(envoy.url + f"/fhir/Observation?patient={ANNA}&_elements=status",
                     headers={"authorization": f"DPoP {token}", "dpop": proof}, timeout=10)
    assert r.status_code == 200, r.text
    assert all(e["resource"]["subject"]["reference"] == f"Patient/{ANNA}" for e in r.json()["entry"])
