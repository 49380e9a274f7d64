"""tools/audit_to_fhir.py: access-log lines -> BALP-shaped AuditEvents (docs/audit.md "Mapping
to BALP AuditEvent"), validated by an independent FHIR model library (PyPI `fhir.resources`, its
R4B models: AuditEvent is unchanged between R4 and R4B)."""
import json
import sys
from pathlib import Path

from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import audit_to_fhir  # noqa: E402

USER = {"time": 1796292258, "request_id": "r-1", "traceparent": "00-aa-bb-01", "api": "fhir-api",
        "route": "/fhir", "method": "GET", "path": "/fhir/Observation",
        "fhir": {"interaction": "search-type", "resource_type": "Observation"}, "decision": "allow",
        "token_verified": True, "client_id": "c-1", "sub": "s-1", "hpr_number": "565501872",
        "security_level": "4", "orgnr_parent": "999977775", "orgnr_child": "999988887",
        "purpose_of_use": "TREAT", "patient": "pat-anna", "patients_named": ["pat-anna"], "jkt": "k", "jti": "j"}
SYSTEM = {"time": 1796292259, "request_id": "r-2", "api": "fhir-api", "route": "/fhir", "method": "GET",
          "path": "/fhir/Patient/pat-bjorn", "fhir": {"interaction": "read", "resource_type": "Patient",
                                                       "id": "pat-bjorn"},
          "decision": "deny", "reason": "compartment_violation", "step": "fhir_scope", "token_verified": True,
          "client_id": "c-2", "patients_named": ["pat-bjorn"]}
REFUSED = {"time": 1, "request_id": "r-3", "api": "fhir-api", "route": "(refused)", "method": "POST",
           "path": "/fhir/x", "decision": "deny", "reason": "method_override", "step": "token",
           "token_verified": False}


def line(rec, **envoy):
    return json.dumps({"request_id": rec.get("request_id"), "response_code": 200, "client_address": "127.0.0.1",
                       **envoy, "fapi_guard_audit": json.dumps(rec)})


def convert(lines):
    return [audit_to_fhir.audit_event(rec, doc) for rec, doc in audit_to_fhir.records(lines)]


def test_every_record_is_a_valid_r4_audit_event():
    events = convert([line(USER), line(SYSTEM, response_code=403), line(REFUSED, response_code=400),
                      json.dumps({"request_id": "pub", "fapi_guard_audit": None})])
    assert len(events) == 3
    for e in events:
        AuditEvent.model_validate(e)


def test_user_search_mapping():
    (e,) = convert([line(USER)])
    assert e["type"]["code"] == "rest" and e["subtype"][0]["code"] == "search-type"
    assert e["action"] == "E" and e["outcome"] == "0"
    assert e["meta"]["profile"] == ["https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientQuery"]
    client, server, user = e["agent"]
    assert client["type"]["coding"][0]["code"] == "110153" and client["who"]["identifier"]["value"] == "c-1"
    assert user["who"]["identifier"] == {"system": "urn:oid:2.16.578.1.12.4.1.4.4", "value": "565501872"}
    assert user["requestor"] is True and user["purposeOfUse"][0]["coding"][0]["code"] == "TREAT"
    patients = [x for x in e["entity"] if x.get("role", {}).get("code") == "1"]
    assert patients and patients[0]["what"]["reference"] == "Patient/pat-anna"
    assert any(x["type"]["code"] == "XrequestId" and x["what"]["identifier"]["value"] == "r-1" for x in e["entity"])
    # Neither the token's jti nor jkt is an AuditEvent field here: the record keeps them.
    assert '"j"' not in json.dumps(e["agent"])


def test_denied_read_by_client_credentials():
    (e,) = convert([line(SYSTEM, response_code=403)])
    assert e["action"] == "R" and e["outcome"] == "4" and "meta" not in e
    assert e["outcomeDesc"] == "deny: fhir_scope.compartment_violation (HTTP 403)"
    assert len(e["agent"]) == 2 and e["agent"][0]["requestor"] is True
    assert e["agent"][0]["type"]["coding"][0]["code"] == "110152"
    refs = [x["what"].get("reference") for x in e["entity"] if "what" in x]
    assert "Patient/pat-bjorn" in refs


def test_every_named_patient_is_an_entity_and_incompleteness_is_carried():
    """docs/audit.md "Patients": a practitioner's search whose answer named two patients, one
    record complete, one whose answer could not be read (`patients_complete: false`)."""
    search = {**USER, "patient": None, "patients_named": ["pat-anna", "pat-bjorn"], "patients_complete": True}
    unread = {**USER, "request_id": "r-9", "patient": None, "patients_named": [], "patients_complete": False,
              "patients_unread": "response_encoded"}
    rest = {**REFUSED, "request_id": "r-8", "route": "/patients/{pid}", "path": "/patients/p-1",
            "decision": "allow", "patients_named": ["p-1"], "patients_complete": False,
            "patients_unread": "response_cut"}
    complete, partial, plain = convert([line(search), line(unread), line(rest)])
    for e in (complete, partial, plain):
        AuditEvent.model_validate(e)
    refs = [x["what"]["reference"] for x in complete["entity"] if x.get("role", {}).get("code") == "1"]
    assert refs == ["Patient/pat-anna", "Patient/pat-bjorn"]
    assert not any("detail" in x for x in complete["entity"])
    (query,) = [x for x in partial["entity"] if x.get("role", {}).get("code") == "24"]
    assert query["detail"] == [{"type": "patients_complete", "valueString": "false"},
                               {"type": "patients_unread", "valueString": "response_encoded"}]
    # No query or data entity (not FHIR): the flag still goes with the event.
    (flag,) = [x for x in plain["entity"] if "detail" in x]
    assert flag["detail"][1]["valueString"] == "response_cut"
    assert [x["what"]["reference"] for x in plain["entity"] if x.get("role", {}).get("code") == "1"] == \
        ["Patient/p-1"]


def test_cli_bundle(tmp_path, capsys):
    log = tmp_path / "access.log"
    log.write_text(line(USER) + "\n" + line(SYSTEM) + "\n")
    assert audit_to_fhir.main([str(log), "--bundle"]) == 0
    bundle = json.loads(capsys.readouterr().out)
    assert bundle["type"] == "collection" and len(bundle["entry"]) == 2
    Bundle.model_validate(bundle)
