#!/usr/bin/env python3
"""Access-log lines with the guard's audit record -> FHIR R4 `AuditEvent` resources shaped as
IHE Basic Audit Log Patterns (BALP 1.1, "RESTful" profiles). The mapping is docs/audit.md
"Mapping to BALP AuditEvent".

Reads JSON lines (envoy/render.py `--audit-log`: the record is the string field
`fapi_guard_audit`; a line that is the record itself is read too); lines without a record
(public routes) are skipped. Writes one AuditEvent per line, or with `--bundle` one
`collection` Bundle, as JSON.

    tools/audit_to_fhir.py access.log > audit-events.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import uuid

BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
BALP_ENTITY_TYPE = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
SECURITY_SOURCE = "http://terminology.hl7.org/CodeSystem/security-source-type"
# Norwegian identifier systems (Volven OIDs, as HL7 Norway's no-basis profiles use them):
# HPR number (Helsepersonellregisteret) and organisation number (Enhetsregisteret).
HPR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.4"
ORGNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.101"
# The guard's client_id and sub have no registered system: named by the issuer's claim.
CLIENT_ID_SYSTEM = "urn:ietf:params:oauth:client-id"

# FHIR interaction (crate::fhir::interaction names) -> AuditEvent.action (R4 audit-event-action),
# the BALP profile and the restful-interaction subtype code.
QUERIES = {"search-type", "search-system", "search-compartment", "history-instance", "history-type",
           "history-system", "page"}
ACTIONS = {"read": "R", "vread": "R", "create": "C", "update": "U", "patch": "U", "delete": "D",
           "operation": "E", "batch": "E", "capabilities": "R", "smart-configuration": "R"}
PROFILE = {"read": "Read", "vread": "Read", "create": "Create", "update": "Update", "patch": "Update",
           "delete": "Delete"}
SUBTYPE = {"search-compartment": "search-type", "page": "search-system", "smart-configuration": "read"}


def records(lines):
    """The audit records in access-log lines (JSON objects); others are skipped."""
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        doc = json.loads(line)
        rec = doc.get("fapi_guard_audit", doc) if isinstance(doc, dict) else None
        if isinstance(rec, str):
            rec = json.loads(rec) if rec.startswith("{") else None
        if isinstance(rec, dict) and "decision" in rec:
            yield rec, doc


def coding(system, code, display=None):
    c = {"system": system, "code": code}
    if display:
        c["display"] = display
    return c


def agents(rec, query, address):
    """client (the OAuth client), server (the API behind the guard), user (the person)."""
    # BALP: for a query the client is Source Role ID (110153) and the server Destination (110152);
    # for a read or write, the reverse (the data flows to the client).
    client_role, server_role = ("110153", "110152") if query else ("110152", "110153")
    client = {"type": {"coding": [coding(DCM, client_role)]}, "requestor": rec.get("sub") is None,
              "who": {"identifier": {"system": CLIENT_ID_SYSTEM, "value": rec.get("client_id") or "unknown"}},
              "network": {"address": address or "unknown", "type": "2"}}
    orgs = [o for o in (rec.get("orgnr_parent"), rec.get("orgnr_child")) if o]
    if orgs:
        # The organisation(s) the client acts for (Enhetsregisteret numbers, ORGNR_SYSTEM).
        client["who"]["display"] = "orgnr " + "/".join(orgs)
    server = {"type": {"coding": [coding(DCM, server_role)]}, "requestor": False,
              "who": {"display": rec.get("api", "api")},
              "network": {"address": rec.get("path", "/"), "type": "5"}}
    out = [client, server]
    if rec.get("sub") or rec.get("hpr_number"):
        user = {"type": {"coding": [coding(PARTICIPATION, "IRCP", "information recipient")]}, "requestor": True,
                "who": ({"identifier": {"system": HPR_SYSTEM, "value": rec["hpr_number"]}}
                        if rec.get("hpr_number") else {"display": "sub " + rec["sub"]}),
                "altId": rec.get("sub")}
        if rec.get("purpose_of_use"):
            user["purposeOfUse"] = [{"coding": [coding(ACT_REASON, rec["purpose_of_use"])]}]
        out.append({k: v for k, v in user.items() if v is not None})
    return out


def entities(rec, fhir, query):
    out = []
    for pid in sorted(set(rec.get("patients_named", []) + ([rec["patient"]] if rec.get("patient") else []))):
        out.append({"what": {"reference": f"Patient/{pid}"}, "type": coding(ENTITY_TYPE, "1", "Person"),
                    "role": coding(OBJECT_ROLE, "1", "Patient")})
    if query:
        out.append({"type": coding(ENTITY_TYPE, "2", "System Object"), "role": coding(OBJECT_ROLE, "24", "Query"),
                    "description": f"{rec.get('method')} {rec.get('path')}"})
    elif fhir.get("resource_type"):
        ref = fhir["resource_type"] + (f"/{fhir['id']}" if fhir.get("id") else "")
        out.append({"what": {"reference": ref} if fhir.get("id") else {"display": ref},
                    "type": coding(ENTITY_TYPE, "2", "System Object"),
                    "role": coding(OBJECT_ROLE, "4", "Domain Resource")})
    if rec.get("patients_complete") is False:
        # docs/audit.md "Patients": the list above is not all the bodies named; carried as
        # entity.detail (R4 AuditEvent.entity.detail, type + valueString) on the accessed data.
        detail = [{"type": "patients_complete", "valueString": "false"},
                  {"type": "patients_unread", "valueString": rec.get("patients_unread") or "unknown"}]
        data = [e for e in out if e.get("role", {}).get("code") in ("4", "24")]
        if data:
            data[0]["detail"] = detail
        else:
            out.append({"type": coding(ENTITY_TYPE, "2", "System Object"), "detail": detail,
                        "description": f"{rec.get('method')} {rec.get('path')}"})
    if rec.get("request_id"):
        out.append({"what": {"identifier": {"value": rec["request_id"]}},
                    "type": coding(BALP_ENTITY_TYPE, "XrequestId")})
    if rec.get("traceparent"):
        out.append({"what": {"identifier": {"value": rec["traceparent"]}},
                    "type": coding(BALP_ENTITY_TYPE, "XrequestId"), "description": "traceparent"})
    return out


def audit_event(rec, line=None):
    fhir = rec.get("fhir") or {}
    interaction = fhir.get("interaction")
    query = interaction in QUERIES
    patient_specific = bool(rec.get("patients_named") or rec.get("patient"))
    method = rec.get("method", "")
    action = ACTIONS.get(interaction) or ("E" if query else {"GET": "R", "HEAD": "R", "POST": "C", "PUT": "U",
                                                              "PATCH": "U", "DELETE": "D"}.get(method, "E"))
    decision = rec.get("decision")
    # R4 audit-event-outcome: 0 success, 4 minor failure (the guard refused: the access did
    # not happen), 8 serious failure (no decision: the stream ended before it).
    outcome = {"allow": "0", "shadow_deny": "0", "deny": "4"}.get(decision, "8")
    desc = decision + (f": {rec['step']}.{rec['reason']}" if rec.get("reason") else "")
    ev = {
        "resourceType": "AuditEvent",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(rec, sort_keys=True))),
        "type": coding(AUDIT_EVENT_TYPE, "rest", "Restful Operation"),
        "subtype": [coding(RESTFUL, SUBTYPE.get(interaction, interaction))] if interaction
        else [coding("urn:ietf:rfc:9110", method)],
        "action": action,
        "recorded": datetime.datetime.fromtimestamp(rec.get("time", 0), datetime.timezone.utc).isoformat(),
        "outcome": outcome,
        "outcomeDesc": desc,
        "agent": agents(rec, query, (line or {}).get("client_address")),
        "source": {"observer": {"display": "fapi-guard " + rec.get("api", "")},
                   "type": [coding(SECURITY_SOURCE, "4", "Application Server")]},
        "entity": entities(rec, fhir, query),
    }
    if rec.get("purpose_of_use"):
        ev["purposeOfEvent"] = [{"coding": [coding(ACT_REASON, rec["purpose_of_use"])]}]
    kind = ("Query" if query else PROFILE.get(interaction))
    if kind and decision in ("allow", "shadow_deny"):
        # BALP's profiles describe successful interactions (outcome 0).
        ev["meta"] = {"profile": [BALP + ("Patient" if patient_specific else "") + kind]}
    if line and line.get("response_code") not in (None, "-"):
        ev["outcomeDesc"] += f" (HTTP {line['response_code']})"
    return ev


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log", nargs="?", help="access log (default: stdin)")
    ap.add_argument("--bundle", action="store_true", help="one collection Bundle instead of one resource a line")
    a = ap.parse_args(argv)
    src = open(a.log, encoding="utf-8") if a.log else sys.stdin
    with src:
        events = [audit_event(rec, line) for rec, line in records(src)]
    if a.bundle:
        print(json.dumps({"resourceType": "Bundle", "type": "collection",
                          "entry": [{"resource": e} for e in events]}, indent=1))
    else:
        for e in events:
            print(json.dumps(e, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
