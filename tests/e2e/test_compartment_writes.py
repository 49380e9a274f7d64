"""The same compartment rules for every type (docs/checks.md §3): Patient writes, `$everything`
answers of any type, Binary by `securityContext`. Real Envoy over HTTP/1.1 and HTTP/2 (h2c
prior knowledge), curl as the client, the sample FHIR server made hostile as in
test_fhir_writes_hostile.py (FHIRPath Patch paths evaluated, conditional references resolved).

- `Patient.link.other` is Patient's compartment element (R4 CompartmentDefinition/patient,
  Patient `link`): a patient grant must not link the patient to another one, by update, patch
  (JSON Patch or FHIRPath Patch) or transaction entry.
- `$everything` returns resources of any type, with supporting resources they reference (HAPI
  `BaseJpaResourceProviderPatient.patientInstanceEverything`); every entry naming another
  patient is refused, and `_mdm` (MDM-linked patients) is refused before the server sees it.
- Binary is the patient's when its `securityContext` is `Patient/<pid>` (R4 binary.html); a raw
  read is decided on `X-Security-Context`.
"""
import copy

import pytest

from harness import Envoy, Issuer
from test_fhir_writes_hostile import BJORN_FNR, HostileFhir, curl, refused

import server as fhir_server

pytestmark = pytest.mark.e2e

AUD = "fhir-e2e"
PROTOCOLS = ["http1.1", "h2c"]


@pytest.fixture(scope="module")
def upstream():
    import threading
    from http.server import ThreadingHTTPServer

    fhir = HostileFhir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), fhir_server.make_handler(fhir))
    httpd.daemon_threads = True
    httpd.fhir = fhir
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def issuer():
    return Issuer("https://issuer.test", algs=("ES256",))


def guard_policy(issuer, **fhir_over):
    pol = {
        "api": {"name": "fhir-e2e", "audience": AUD},
        "issuers": [{"issuer": issuer.iss, "jwks": issuer.jwks()}],
        "token": {"schemes": ["DPoP", "Bearer"]},
        "routes": [{"path_prefix": "/fhir/metadata", "methods": ["GET"], "require": "none"}],
        "fhir": {
            "base_path": "/fhir",
            "resource_types": ["Patient", "Observation", "Condition", "Encounter", "Practitioner",
                               "Medication", "Binary", "Device", "Task", "Group", "Bundle"],
            "operations": [{"name": "$everything", "levels": ["instance"], "resource_types": ["Patient"],
                            "permissions": "rs", "all_types": True}],
            "max_request_body_bytes": 65536,
        },
    }
    pol["fhir"].update(fhir_over)
    return pol


@pytest.fixture(scope="module")
def envoy(upstream, issuer):
    with Envoy(guard_policy(issuer), upstream.server_address[1], filters=["token", "fhir_scope"]) as e:
        yield e


@pytest.fixture(scope="module")
def envoy_subject_only(upstream, issuer):
    pol = guard_policy(issuer, compartment={"preset": "subject_only"})
    with Envoy(pol, upstream.server_address[1], filters=["token", "fhir_scope"]) as e:
        yield e


def tok(issuer, scope):
    return issuer.token("ES256", aud=AUD, scope=f"openid launch/patient {scope}", patient="pat-anna")


@pytest.fixture(scope="module")
def token(issuer):
    return tok(issuer, "patient/*.cruds")


def stored(upstream, t, i):
    return copy.deepcopy(upstream.fhir.store.current(t, i))


def put(upstream, r):
    with upstream.fhir.store.lock:
        upstream.fhir.store.put(r)


def drop(upstream, *keys):
    with upstream.fhir.store.lock:
        for t, i in keys:
            upstream.fhir.store.delete(t, i)


def anna_linked_to(upstream, other):
    r = stored(upstream, "Patient", "pat-anna")
    r.pop("meta", None)
    r["link"] = [{"other": {"reference": other}, "type": "seealso"}]
    return r


# ---- Patient writes: link.other is a compartment element ----

@pytest.mark.parametrize("proto", PROTOCOLS)
def test_put_own_patient_linking_another_refused(envoy, upstream, token, proto):
    before = stored(upstream, "Patient", "pat-anna")
    body = anna_linked_to(upstream, "Patient/pat-bjorn")
    refused(curl(envoy, proto, "PUT", "/fhir/Patient/pat-anna", token, body), "write_outside_compartment")
    assert stored(upstream, "Patient", "pat-anna") == before


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_transaction_linking_another_patient_refused(envoy, upstream, token, proto):
    before = stored(upstream, "Patient", "pat-anna")
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "request": {"method": "PUT", "url": "Patient/pat-anna"},
        "resource": anna_linked_to(upstream, "Patient/pat-bjorn")}]}
    refused(curl(envoy, proto, "POST", "/fhir", token, bundle), "bundle_entry_forbidden")
    assert stored(upstream, "Patient", "pat-anna") == before


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_json_patch_adding_link_refused(envoy, upstream, token, proto):
    before = stored(upstream, "Patient", "pat-anna")
    patch = [{"op": "add", "path": "/link", "value": [{"other": {"reference": "Patient/pat-bjorn"}, "type": "seealso"}]}]
    refused(curl(envoy, proto, "PATCH", "/fhir/Patient/pat-anna", token, patch,
                 {"content-type": "application/json-patch+json"}), "write_outside_compartment")
    assert stored(upstream, "Patient", "pat-anna") == before


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_fhirpath_patch_where_with_conditional_reference_refused(envoy, upstream, token, proto):
    put(upstream, anna_linked_to(upstream, "RelatedPerson/rp-anna"))
    before = stored(upstream, "Patient", "pat-anna")
    patch = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"},
        {"name": "path", "valueString": "Patient.where(true).link.other"},
        {"name": "value", "valueReference": {"reference": f"Patient?identifier={BJORN_FNR}"}}]}]}
    refused(curl(envoy, proto, "PATCH", "/fhir/Patient/pat-anna", token, patch), "conditional_reference")
    assert stored(upstream, "Patient", "pat-anna") == before


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_own_patient_writes_still_served(envoy, upstream, token, proto):
    body = anna_linked_to(upstream, "RelatedPerson/rp-anna")
    body["gender"] = "female"
    st, _ = curl(envoy, proto, "PUT", "/fhir/Patient/pat-anna", token, body)
    assert st == 200
    patch = [{"op": "replace", "path": "/birthDate", "value": "1984-03-13"}]
    st, _ = curl(envoy, proto, "PATCH", "/fhir/Patient/pat-anna", token, patch,
                 {"content-type": "application/json-patch+json"})
    assert st == 200
    assert stored(upstream, "Patient", "pat-anna")["birthDate"] == "1984-03-13"


# ---- $everything: every entry, whatever its type ----

SUPPORTING = {
    "device": {"resourceType": "Device", "id": "dev-bjorn", "patient": {"reference": "Patient/pat-bjorn"}},
    "task-contained": {"resourceType": "Task", "id": "task-x", "status": "requested", "intent": "order",
                       "contained": [{"resourceType": "Observation", "id": "o1", "status": "final",
                                      "code": {"text": "x"}, "subject": {"reference": "Patient/pat-bjorn"}}]},
    "binary": {"resourceType": "Binary", "id": "bin-bjorn", "contentType": "text/plain",
               "securityContext": {"reference": "Patient/pat-bjorn"}, "data": "aGVpCg=="},
    "nested-bundle": {"resourceType": "Bundle", "id": "bundle-x", "type": "collection", "entry": [{"resource": {
        "resourceType": "Task", "id": "t2", "status": "requested", "intent": "order",
        "for": {"reference": "https://fhir.example/fhir/Patient/pat-bjorn"}}}]},
}


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize("kind", sorted(SUPPORTING))
def test_everything_entry_naming_another_patient_refused(envoy, upstream, token, proto, kind):
    sup = SUPPORTING[kind]
    obs = {"resourceType": "Observation", "id": f"obs-anna-ev-{kind}", "status": "final",
           "code": {"text": "x"}, "subject": {"reference": "Patient/pat-anna"},
           "focus": [{"reference": f"{sup['resourceType']}/{sup['id']}"}]}
    put(upstream, sup)
    put(upstream, obs)
    try:
        refused(curl(envoy, proto, "GET", "/fhir/Patient/pat-anna/$everything", token), "response_outside_grant")
    finally:
        drop(upstream, (obs["resourceType"], obs["id"]), (sup["resourceType"], sup["id"]))


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_everything_mdm_refused_before_the_server(envoy, upstream, token, proto):
    hits = len(upstream.fhir.hits)
    refused(curl(envoy, proto, "GET", "/fhir/Patient/pat-anna/$everything?_mdm=true", token),
            "everything_parameter")
    assert len(upstream.fhir.hits) == hits


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_everything_own_with_granted_type_served(envoy, upstream, issuer, proto):
    t = tok(issuer, "patient/Patient.rs patient/Observation.rs")
    st, text = curl(envoy, proto, "GET", "/fhir/Patient/pat-anna/$everything?_type=Observation", t)
    assert st == 200, text[:300]
    assert b"pat-bjorn" not in text
    refused(curl(envoy, proto, "GET", "/fhir/Patient/pat-anna/$everything?_type=Condition", t),
            "insufficient_scope")


# ---- Binary by securityContext ----

BIN_ANNA = {"resourceType": "Binary", "id": "bin-anna", "contentType": "text/plain",
            "securityContext": {"reference": "Patient/pat-anna"}, "data": "aGVpIGFubmEK"}
BIN_BJORN = {"resourceType": "Binary", "id": "bin-bjorn2", "contentType": "text/plain",
             "securityContext": {"reference": "Patient/pat-bjorn"}, "data": "aGVpIGJqb3JuCg=="}
BIN_NONE = {"resourceType": "Binary", "id": "bin-none", "contentType": "text/plain", "data": "aGVpCg=="}


@pytest.fixture(scope="module")
def binaries(upstream):
    for b in (BIN_ANNA, BIN_BJORN, BIN_NONE):
        put(upstream, b)


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_binary_own_read_served_as_fhir_and_raw(envoy, binaries, issuer, proto):
    t = tok(issuer, "patient/Binary.rs")
    st, text = curl(envoy, proto, "GET", "/fhir/Binary/bin-anna", t)
    assert st == 200 and b'"securityContext"' in text, text[:300]
    st, text = curl(envoy, proto, "GET", "/fhir/Binary/bin-anna", t, headers={"accept": "text/plain"})
    assert (st, text) == (200, b"hei anna\n")


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_binary_of_another_patient_refused(envoy, binaries, issuer, proto):
    t = tok(issuer, "patient/Binary.rs")
    refused(curl(envoy, proto, "GET", "/fhir/Binary/bin-bjorn2", t), "response_outside_grant")
    refused(curl(envoy, proto, "GET", "/fhir/Binary/bin-bjorn2", t, headers={"accept": "text/plain"}),
            "response_outside_grant")


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_raw_binary_without_security_context_refused(envoy, binaries, issuer, proto):
    t = tok(issuer, "patient/Binary.rs")
    refused(curl(envoy, proto, "GET", "/fhir/Binary/bin-none", t, headers={"accept": "text/plain"}),
            "binary_security_context_missing")


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_binary_create_own_served_other_refused(envoy, upstream, issuer, proto):
    t = tok(issuer, "patient/Binary.c")
    own = {k: v for k, v in BIN_ANNA.items() if k != "id"}
    st, text = curl(envoy, proto, "POST", "/fhir/Binary", t, own)
    assert st == 201, text[:300]
    other = {k: v for k, v in BIN_BJORN.items() if k != "id"}
    before = len(upstream.fhir.store.all("Binary"))
    refused(curl(envoy, proto, "POST", "/fhir/Binary", t, other), "write_outside_compartment")
    assert len(upstream.fhir.store.all("Binary")) == before


# ---- a narrower compartment (`fhir.compartment`) ----

@pytest.fixture(scope="module")
def performed_and_roster(upstream):
    # R4 CompartmentDefinition/patient: Observation `performer` and Group `member` count, so a
    # parent who performed a child's measurement, or a Group listing both, is "in" it.
    put(upstream, {"resourceType": "Observation", "id": "obs-bjorn-by-anna", "status": "final",
                   "code": {"text": "x"}, "subject": {"reference": "Patient/pat-bjorn"},
                   "performer": [{"reference": "Patient/pat-anna"}]})
    put(upstream, {"resourceType": "Group", "id": "grp-ward", "type": "person", "actual": True,
                   "member": [{"entity": {"reference": "Patient/pat-anna"}},
                              {"entity": {"reference": "Patient/pat-bjorn"}}]})


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_r4_compartment_counts_performer_and_member(envoy, performed_and_roster, issuer, proto):
    """The default (R4 table), for comparison: both reads are served."""
    t = tok(issuer, "patient/Observation.rs patient/Group.rs")
    assert curl(envoy, proto, "GET", "/fhir/Observation/obs-bjorn-by-anna", t)[0] == 200
    assert curl(envoy, proto, "GET", "/fhir/Group/grp-ward", t)[0] == 200


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_subject_only_compartment_refuses_performed_and_roster(envoy_subject_only, performed_and_roster,
                                                               issuer, proto):
    t = tok(issuer, "patient/Observation.rs patient/Group.rs")
    refused(curl(envoy_subject_only, proto, "GET", "/fhir/Observation/obs-bjorn-by-anna", t),
            "response_outside_grant")
    refused(curl(envoy_subject_only, proto, "GET", "/fhir/Group/grp-ward", t), "compartment_escape")
    st, text = curl(envoy_subject_only, proto, "GET", "/fhir/Observation/obs-anna-hb", t)
    assert st == 200, text[:300]
