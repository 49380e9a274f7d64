#!/usr/bin/env python3
"""A small in-memory FHIR R4 server for the FHIR scope filter's tests and the demo.

Python 3 stdlib only:  python3 server.py --port 8080 [--host 127.0.0.1]

Serves FHIR R4 JSON under /fhir for two synthetic patients, `pat-anna` (Anna Nordmann) and
`pat-bjorn` (Bjørn Hansen): Patient, Observation (laboratory and vital-signs), Condition,
MedicationRequest, Encounter, DocumentReference, plus one shared Medication and Practitioner.

Interactions: read, vread, instance/type history, search (GET and POST _search; `_id`,
reference parameters such as `patient`/`subject`, token parameters such as `category`,
`code`, `status`, `_include`, `_revinclude`, `_count`), compartment search
(`/Patient/{id}/{type}`), create, update (also conditional), JSON Patch, delete (also
conditional), `Patient/{id}/$everything`, batch/transaction, `/metadata`,
`/.well-known/smart-configuration`. No auth of its own: the filters in front do that.

Paging and subsetting as HAPI FHIR does them: a search with more matches than `_count` gets a
`next` link `[base]?_getpages=<search id>&_getpagesoffset=N&_count=M&_bundletype=searchset`
(HAPI `RestfulServerUtils.createPagingLink`; the page is served by `PageMethodBinding` from the
search HAPI keeps), `_elements` keeps the named elements plus `id`/`meta` and tags the resource
SUBSETTED, `_summary=text` keeps `id`/`meta`/`text` (and the mandatory elements), `_summary=
data` drops `text`, `_summary=true` keeps the summary (Σ) elements (`RestfulServerUtils.
determineSummaryMode`, `FhirTerser`-based filtering in `BaseParser`). `Provenance` can be
stored (PUT) and `_revinclude=Provenance:target` finds it by `Provenance.target`.

It is deliberately naive (it serves whatever it is asked): it logs only method and path.
Test hook: a read by id of an id starting `read-fails-` answers 500 (writes to it work).
Like real servers it answers conditional reads (`If-None-Match` with the version ETag,
`If-Modified-Since`) with 304 and no body, and reads chunked request bodies (trailers dropped).
Paths are resolved the way a servlet container (Tomcat, which HAPI FHIR runs in) resolves
them (`servlet_path`): `;` parameters dropped, percent-decoded (`%2F` too), backslash as `/`,
`//` merged, dot-segments removed. `Fhir.hits` records every (method, raw target) received.

Behaviour switches (`Fhir.reading`, a set; empty by default) model how named servers read a
request, each read in that server's source:
- `ibm`: LinuxForHealth FHIR `FHIRHttpServletRequestWrapper` (`initHeaderNameMappings`,
  `getMethod`): the `X-Method-Override` / `X-HTTP-Method-Override` header, or the
  `x-method-override` / `x-http-method-override` parameter, is the method executed.
- `hapi`: HAPI FHIR `RestfulServer#handleRequest`: a `POST _search` body is read as parameters
  only when its Content-Type starts `application/x-www-form-urlencoded`; any other is ignored.
- `microsoft`: microsoft/fhir-server on ASP.NET Core: query keys compare case-insensitively
  (`QueryCollection`, `StringComparer.OrdinalIgnoreCase`), so `_INCLUDE` is `_include`.
Without `hapi` the body of a `POST _search` is read as a form whatever its Content-Type.
`_summary=count` and `_count=0` answer the total of every match and no entries (FHIR R4
§3.1.1.5.7, §3.1.1.5.6).
"""
import argparse
import base64
import copy
import json
import sys
import threading
import uuid
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

BASE = "/fhir"
READ_FAILS = "read-fails-"  # test hook: `GET [type]/read-fails-*` answers 500
LOINC, SNOMED, ATC = "http://loinc.org", "http://snomed.info/sct", "http://www.whocc.no/atc"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
COND_CLIN = "http://terminology.hl7.org/CodeSystem/condition-clinical"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def cc(system, code, display):
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def ref(rtype, rid):
    return {"reference": f"{rtype}/{rid}"}


def patient(pid, family, given, gender, birth, city, fnr):
    return {"resourceType": "Patient", "id": pid,
            "identifier": [{"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": fnr}],
            "name": [{"use": "official", "family": family, "given": [given]}], "gender": gender,
            "birthDate": birth, "address": [{"city": city, "country": "NO"}],
            "generalPractitioner": [ref("Practitioner", "prac-kari")]}


def obs(oid, pid, cat, code, display, value, unit, when):
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "category": [cc(OBS_CAT, cat, cat.replace("-", " ").title())],
            "code": cc(LOINC, code, display), "subject": ref("Patient", pid),
            "encounter": ref("Encounter", f"enc-{pid[4:]}-1"), "effectiveDateTime": when,
            "performer": [ref("Practitioner", "prac-kari")],
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}


def seed():
    rs = [
        patient("pat-anna", "Nordmann", "Anna", "female", "1984-03-12", "Bergen", "12038400123"),
        patient("pat-bjorn", "Hansen", "Bjørn", "male", "1971-11-02", "Tromsø", "02117100456"),
        {"resourceType": "Practitioner", "id": "prac-kari", "name": [{"family": "Lege", "given": ["Kari"]}]},
        {"resourceType": "Medication", "id": "med-ramipril", "code": cc(ATC, "C09AA05", "Ramipril")},
    ]
    for pid, short, hb, sys_bp, glu in (("pat-anna", "anna", 13.1, 118, 5.2), ("pat-bjorn", "bjorn", 15.4, 142, 7.9)):
        rs += [
            obs(f"obs-{short}-hb", pid, "laboratory", "718-7", "Hemoglobin [Mass/volume] in Blood", hb, "g/dL",
                "2024-05-02T08:30:00+02:00"),
            obs(f"obs-{short}-glucose", pid, "laboratory", "15074-8", "Glucose [Moles/volume] in Blood", glu,
                "mmol/L", "2024-05-02T08:30:00+02:00"),
            obs(f"obs-{short}-bp", pid, "vital-signs", "8480-6", "Systolic blood pressure", sys_bp, "mm[Hg]",
                "2024-05-02T08:40:00+02:00"),
            {"resourceType": "Condition", "id": f"cond-{short}-1", "subject": ref("Patient", pid),
             "clinicalStatus": cc(COND_CLIN, "active", "Active"),
             "category": [cc("http://terminology.hl7.org/CodeSystem/condition-category", "problem-list-item",
                             "Problem List Item")],
             "code": cc(SNOMED, "38341003", "Hypertensive disorder") if short == "bjorn"
             else cc(SNOMED, "195967001", "Asthma"), "onsetDateTime": "2019-09-01"},
            {"resourceType": "MedicationRequest", "id": f"medreq-{short}-1", "status": "active", "intent": "order",
             "medicationReference": ref("Medication", "med-ramipril"), "subject": ref("Patient", pid),
             "authoredOn": "2024-05-02", "requester": ref("Practitioner", "prac-kari"),
             "dosageInstruction": [{"text": "1 tablett daglig"}]},
            {"resourceType": "Encounter", "id": f"enc-{short}-1", "status": "finished",
             "class": {"system": ACT, "code": "AMB", "display": "ambulatory"}, "subject": ref("Patient", pid),
             "participant": [{"individual": ref("Practitioner", "prac-kari")}],
             "period": {"start": "2024-05-02T08:15:00+02:00", "end": "2024-05-02T09:00:00+02:00"}},
            {"resourceType": "DocumentReference", "id": f"doc-{short}-1", "status": "current",
             "type": cc(LOINC, "11488-4", "Consult note"), "subject": ref("Patient", pid),
             "author": [ref("Practitioner", "prac-kari")], "date": "2024-05-02T09:00:00+02:00",
             "content": [{"attachment": {"contentType": "text/plain", "title": "Konsultasjonsnotat",
                                         "data": "S29udHJvbGwgdXRlbiBhbm1lcmtuaW5nZXIu"}}]},
        ]
    return rs


# Reference search parameters -> element names (FHIR R4 SearchParameter expressions, simplified).
REF_PARAMS = {"patient": ["subject", "patient"], "subject": ["subject"], "performer": ["performer"],
              "target": ["target"],
              "encounter": ["encounter"], "author": ["author"], "requester": ["requester"],
              "medication": ["medicationReference"], "general-practitioner": ["generalPractitioner"]}
TYPES = ["Patient", "Observation", "Condition", "MedicationRequest", "Encounter", "DocumentReference",
         "Medication", "Practitioner", "Binary", "Device", "Task", "Group", "Provenance"]
TOKEN_PARAMS = {"category", "code", "status", "clinical-status", "type", "class", "intent", "gender", "identifier"}
CONTROL = {"_count", "_sort", "_include", "_revinclude", "_format", "_summary", "_elements", "_pretty", "_total"}
# Names the `microsoft` switch reads in any case (ASP.NET Core query keys).
CASELESS = {n.lower(): n for n in CONTROL | {"_id", "_type", "_has"} | set(REF_PARAMS)}
# R4 summary (Σ) elements the sample types carry (observation.html, patient.html, condition.html).
SUMMARY = {"Observation": {"status", "code", "subject", "encounter", "effectiveDateTime", "issued",
                           "performer", "valueQuantity"},
           "Patient": {"identifier", "active", "name", "gender", "birthDate", "address", "link"},
           "Condition": {"clinicalStatus", "code", "subject", "onsetDateTime"},
           "Provenance": {"target", "recorded", "agent"}}
# Elements every subset keeps (R4 search.html#summary: mandatory elements; id and meta).
MANDATORY = {"resourceType", "id", "meta", "status", "target", "recorded", "agent", "intent"}


def subset(r, params):
    """The resource as HAPI FHIR returns it under `_elements` / `_summary` (see the module doc)."""
    elements = [e.strip() for n, v in params if n == "_elements" for e in v.split(",") if e.strip()]
    summary = next((v for n, v in params if n == "_summary"), None)
    if not elements and summary in (None, "false"):
        return r
    if elements:
        keep = MANDATORY | {e.split(".")[-1] for e in elements}
    elif summary == "text":
        keep = MANDATORY | {"text"}
    elif summary == "data":
        keep = set(r) - {"text"}
    elif summary == "true":
        keep = MANDATORY | SUMMARY.get(r["resourceType"], set())
    else:
        return r
    out = {k: v for k, v in r.items() if k in keep}
    out["meta"] = dict(r.get("meta", {}), tag=[{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                                               "code": "SUBSETTED"}])
    return out


def now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def camel(name):
    head, *rest = name.split("-")
    return head + "".join(p.title() for p in rest)


def as_list(v):
    return v if isinstance(v, list) else ([] if v is None else [v])


def token_match(v, want):
    system, _, code = want.rpartition("|") if "|" in want else (None, "", want)
    if isinstance(v, str):
        return system is None and v == code
    if isinstance(v, dict):
        if "coding" in v:
            return any(token_match(c, want) for c in v["coding"])
        return (system is None or v.get("system") == system) and (not code or v.get("code", v.get("value")) == code)
    return False


def norm_ref(value, typed=None):
    if "/" in value:
        return value.split("/_history/")[0]
    return f"{typed or 'Patient'}/{value}"


class Store:
    def __init__(self):
        self.lock = threading.Lock()
        self.versions = {}  # (type, id) -> [resource or None (deleted)]
        self.searches = {}  # HAPI-style search id -> (type, params): its pages by `_getpages`
        for r in seed():
            self.put(r)

    def put(self, r):
        key = (r["resourceType"], r["id"])
        hist = self.versions.setdefault(key, [])
        r = copy.deepcopy(r)
        r["meta"] = {"versionId": str(len(hist) + 1), "lastUpdated": now()}
        hist.append(r)
        return r

    def delete(self, rtype, rid):
        hist = self.versions.get((rtype, rid))
        if hist and hist[-1] is not None:
            hist.append(None)
            return True
        return False

    def current(self, rtype, rid):
        hist = self.versions.get((rtype, rid))
        return hist[-1] if hist else None

    def all(self, rtype=None):
        return [h[-1] for (t, _), h in self.versions.items() if h[-1] is not None and rtype in (None, t)]

    # ---- search ----
    def matches(self, r, name, value):
        base, _, mod = name.partition(":")
        values = value.split(",")
        if base == "_id":
            return r["id"] in values
        if base in REF_PARAMS:
            wanted = {norm_ref(v, mod or None) for v in values}
            got = {x.get("reference") for e in REF_PARAMS[base] for x in as_list(r.get(e)) if isinstance(x, dict)}
            return bool(wanted & got)
        if base in ("name", "family", "given"):
            text = json.dumps(r.get("name", []), ensure_ascii=False).lower()
            return any(v.lower() in text for v in values)
        field = r.get(camel(base))
        if field is None:  # known token parameters: no match; unknown ones are ignored (lenient)
            return base not in TOKEN_PARAMS
        return any(token_match(x, v) for x in as_list(field) for v in values)

    def search(self, rtype, params, offset=0, sid=None):
        hits = [r for r in self.all(rtype)
                if all(self.matches(r, n, v) for n, v in params if n not in CONTROL and "." not in n)]
        hits.sort(key=lambda r: r["id"])
        total = len(hits)
        count = next((int(v) for n, v in params if n == "_count" and v.isdigit()), 100)
        if count == 0 or ("_summary", "count") in params:
            return {"resourceType": "Bundle", "type": "searchset", "total": total}
        hits = hits[offset:offset + count]
        entries = [{"fullUrl": f"{BASE}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
                   for r in hits]
        extra = {}
        for n, v in params:
            for spec in v.split(","):
                parts = spec.split(":")
                if n.startswith("_include") and len(parts) >= 2:
                    elems = REF_PARAMS.get(parts[1], [camel(parts[1])])
                    for r in hits:
                        for e in elems:
                            for x in as_list(r.get(e)):
                                t, _, i = (x.get("reference") or "").partition("/") if isinstance(x, dict) else ("", "", "")
                                inc = self.current(t, i)
                                if inc and (len(parts) < 3 or parts[2] == t):
                                    extra[(t, i)] = inc
                elif n.startswith("_revinclude") and len(parts) >= 2:
                    for r in hits:
                        target = f"{r['resourceType']}/{r['id']}"
                        for cand in self.search(parts[0], [(parts[1], target)])["entry"]:
                            c = cand["resource"]
                            extra[(c["resourceType"], c["id"])] = c
        for (t, i), r in extra.items():
            if not any(e["resource"] is r for e in entries):
                entries.append({"fullUrl": f"{BASE}/{t}/{i}", "resource": r, "search": {"mode": "include"}})
        for e in entries:
            e["resource"] = subset(e["resource"], params)
        bundle = {"resourceType": "Bundle", "type": "searchset", "total": total, "entry": entries}
        if offset + count < total:
            # HAPI keeps the search and links its next page by the search's id.
            sid = sid or uuid.uuid4().hex
            self.searches[sid] = (rtype, params)
            bundle["link"] = [{"relation": "next", "url": f"{BASE}?_getpages={sid}&_getpagesoffset={offset + count}"
                                                          f"&_count={count}&_bundletype=searchset"}]
        return bundle


def servlet_path(raw):
    """The path a servlet container acts on for the raw request path (no query): Tomcat's
    order, `;...` path parameters stripped from each segment of the undecoded path, then
    percent-decoded (`%2F` decoded as with `encodedSolidusHandling="decode"`), then
    normalised: a backslash read as `/`, empty segments merged, `.`/`..` removed (RFC 3986 §5.2.4)."""
    from urllib.parse import unquote

    no_params = "/".join(seg.split(";", 1)[0] for seg in raw.split("/"))
    decoded = unquote(no_params, errors="replace").replace("\\", "/")
    out = []
    for seg in decoded.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    return "/" + "/".join(out)


def outcome(code, text):
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]}


def apply_json_patch(doc, ops):
    doc = copy.deepcopy(doc)
    for op in ops:
        path = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        parent = doc
        for p in path[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = path[-1]
        if op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                parent.insert(len(parent) if last == "-" else int(last), op["value"]) if op["op"] == "add" \
                    else parent.__setitem__(int(last), op["value"])
            else:
                parent[last] = op["value"]
        elif op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        elif op["op"] == "test":
            if (parent[int(last)] if isinstance(parent, list) else parent.get(last)) != op["value"]:
                raise ValueError("test failed")
        else:
            raise ValueError(f"unsupported op {op['op']}")
    return doc


class Fhir:
    def __init__(self):
        self.store = Store()
        self.hits = []  # (method, raw request target), every request received
        self.reading = set()  # behaviour switches, see the module doc

    def handle(self, method, target, body, headers):
        """Returns (status, resource-or-None, extra headers)."""
        self.hits.append((method, target))
        raw, _, query = target.split("#", 1)[0].partition("?")
        path = servlet_path(raw)
        params = parse_qsl(query, keep_blank_values=True)
        if "ibm" in self.reading:  # FHIRHttpServletRequestWrapper: header, else parameter
            names = ("x-method-override", "x-http-method-override")
            over = next((headers[n] for n in names if headers.get(n)), None) \
                or next((v for n, v in params if n in names and v), None)
            if over:
                method = over.upper()
        if "microsoft" in self.reading:
            params = [(CASELESS.get(n.lower(), n), v) for n, v in params]
        self.content_type = headers.get("content-type") or ""
        if not (path == BASE or path.startswith(BASE + "/")):
            return 404, outcome("not-found", "not under the FHIR base"), {}
        segs = [s for s in path[len(BASE):].split("/") if s]
        method = "GET" if method == "HEAD" else method
        with self.store.lock:
            try:
                return self.route(method, segs, params, body, headers)
            except (ValueError, KeyError, IndexError, TypeError, json.JSONDecodeError) as e:
                return 400, outcome("invalid", f"bad request: {type(e).__name__}"), {}

    def route(self, m, segs, params, body, headers):
        st = self.store
        if m == "POST" and segs and segs[-1] == "_search":
            if "hapi" not in self.reading or self.content_type.startswith("application/x-www-form-urlencoded"):
                params = params + parse_qsl(body.decode(), keep_blank_values=True)
            segs, m = segs[:-1], "GET"
        if segs == ["metadata"] and m == "GET":
            return 200, capability(), {}
        if segs == [".well-known", "smart-configuration"] and m == "GET":
            return 200, {"capabilities": ["launch-standalone", "permission-v2", "permission-patient",
                                          "permission-user", "client-confidential-asymmetric"],
                         "scopes_supported": ["openid", "fhirUser", "launch/patient", "patient/*.rs", "user/*.cruds"],
                         "dpop_signing_alg_values_supported": ["ES256", "PS256", "EdDSA"]}, {}
        if not segs and m == "POST":
            return self.bundle(json.loads(body), headers)
        if not segs and m == "GET" and any(n == "_getpages" for n, _ in params):
            # HAPI `PageMethodBinding`: the page of a kept search, by id; the link's own
            # `_getpagesoffset`/`_count`, the search's criteria (whoever asked for the page).
            q = dict(params)
            if q["_getpages"] not in st.searches:
                return 410, outcome("processing", "search expired"), {}
            rtype, orig = st.searches[q["_getpages"]]
            orig = [(n, v) for n, v in orig if n != "_count"] + [("_count", q.get("_count", "100"))]
            return 200, st.search(rtype, orig, int(q.get("_getpagesoffset", "0")), q["_getpages"]), {}
        if not segs and m == "GET":  # system search: `_type` or every type
            types = [t for n, v in params if n == "_type" for t in v.split(",")] or TYPES
            rest = [(n, v) for n, v in params if n != "_type"]
            entries = [e for t in types if t in TYPES for e in st.search(t, rest)["entry"]]
            return 200, {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}, {}
        if segs == ["_history"] and m == "GET":
            entries = [{"resource": r} for h in st.versions.values() for r in h if r]
            return 200, {"resourceType": "Bundle", "type": "history", "total": len(entries), "entry": entries}, {}
        if len(segs) == 1 and segs[0] in TYPES:
            t = segs[0]
            if m == "GET":
                return 200, st.search(t, params), {}
            if m == "POST":
                r = json.loads(body)
                if r.get("resourceType") != t:
                    return 400, outcome("invalid", "resourceType differs from URL"), {}
                cond = headers.get("if-none-exist")
                if cond:
                    found = st.search(t, parse_qsl(cond.split("?")[-1]))["entry"]
                    if found:
                        return 200, found[0]["resource"], {}
                r["id"] = uuid.uuid4().hex[:12]
                r = st.put(r)
                return 201, r, {"location": f"{BASE}/{t}/{r['id']}/_history/{r['meta']['versionId']}"}
            matches = st.search(t, params)["entry"] if params else []
            if m == "DELETE" and params:
                for e in matches:
                    st.delete(t, e["resource"]["id"])
                return 204, None, {}
            if m == "PUT" and params:
                if len(matches) > 1:
                    return 412, outcome("multiple-matches", "more than one match"), {}
                r = json.loads(body)
                r["id"] = matches[0]["resource"]["id"] if matches else uuid.uuid4().hex[:12]
                return (200 if matches else 201), st.put(r), {}
        if len(segs) == 2 and segs[0] in TYPES and segs[1] == "_history" and m == "GET":
            entries = [{"resource": r} for (t, _), h in st.versions.items() if t == segs[0] for r in h if r]
            return 200, {"resourceType": "Bundle", "type": "history", "total": len(entries), "entry": entries}, {}
        if len(segs) >= 2 and segs[0] in TYPES:
            t, rid = segs[0], segs[1]
            cur = st.current(t, rid)
            if len(segs) == 2:
                if m == "GET" and rid.startswith(READ_FAILS):
                    # Test hook: reads of these ids fail (writes work) to show the guard's
                    # read before write fails closed.
                    return 500, outcome("exception", "read failed (test hook)"), {}
                if m == "GET" and t == "Binary" and cur and not fhir_accept(headers.get("accept")):
                    # R4 binary.html "Serving Binary Resources using the RESTful API": the raw
                    # content in its own type, the securityContext in `X-Security-Context`.
                    extra = {"content-type": cur.get("contentType", "application/octet-stream")}
                    if "securityContext" in cur:
                        extra["x-security-context"] = cur["securityContext"]["reference"]
                    return 200, base64.b64decode(cur.get("data", "")), extra
                if m == "GET":
                    return (200, subset(cur, params), {}) if cur else (404, outcome("not-found", f"{t} not found"), {})
                if m == "PUT":
                    r = json.loads(body)
                    if r.get("resourceType") != t or r.get("id", rid) != rid:
                        return 400, outcome("invalid", "type or id differs from URL"), {}
                    r["id"] = rid
                    return (200 if cur else 201), st.put(r), {}
                if m == "PATCH":
                    if not cur:
                        return 404, outcome("not-found", f"{t} not found"), {}
                    return 200, st.put(apply_json_patch(cur, json.loads(body))), {}
                if m == "DELETE":
                    st.delete(t, rid)
                    return 204, None, {}
            if segs[2:] == ["_history"] and m == "GET":
                hist = [r for r in st.versions.get((t, rid), []) if r][::-1]
                if not hist:
                    return 404, outcome("not-found", f"{t} not found"), {}
                return 200, {"resourceType": "Bundle", "type": "history", "total": len(hist),
                             "entry": [{"resource": r} for r in hist]}, {}
            if len(segs) == 4 and segs[2] == "_history" and m == "GET":
                hist = st.versions.get((t, rid), [])
                i = int(segs[3]) - 1 if segs[3].isdigit() else -1
                if 0 <= i < len(hist) and hist[i]:
                    return 200, hist[i], {}
                return 404, outcome("not-found", "version not found"), {}
            if t == "Patient" and segs[2:] == ["$everything"] and m in ("GET", "POST"):
                if not cur:
                    return 404, outcome("not-found", "Patient not found"), {}
                found = [r for r in st.all() if r is not cur and self.in_compartment(r, rid)]
                # HAPI (`BaseJpaResourceProviderPatient.patientInstanceEverything`) also returns
                # "supporting resources linked to by the matched resources", whatever their type.
                for r in list(found):
                    for t2, i2 in referenced(r):
                        sup = st.current(t2, i2)
                        if sup and sup is not cur and not any(sup is x for x in found):
                            found.append(sup)
                entries = [{"resource": cur}] + [{"resource": r} for r in found]
                return 200, {"resourceType": "Bundle", "type": "searchset", "total": len(entries),
                             "entry": entries}, {}
            if t == "Patient" and len(segs) == 3 and m == "GET" and (segs[2] in TYPES or segs[2] == "*"):
                types = TYPES if segs[2] == "*" else [segs[2]]
                entries = [{"resource": r} for ty in types for r in st.all(ty) if self.in_compartment(r, rid)
                           and all(st.matches(r, n, v) for n, v in params if n not in CONTROL)]
                return 200, {"resourceType": "Bundle", "type": "searchset", "total": len(entries),
                             "entry": entries}, {}
        return 404, outcome("not-supported", "unknown FHIR interaction"), {}

    @staticmethod
    def in_compartment(r, pid):
        want = f"Patient/{pid}"
        return any(isinstance(x, dict) and x.get("reference") == want
                   for e in ("subject", "patient", "performer", "author") for x in as_list(r.get(e)))

    def bundle(self, b, headers):
        if b.get("resourceType") != "Bundle" or b.get("type") not in ("batch", "transaction"):
            return 400, outcome("invalid", "expected a batch or transaction Bundle"), {}
        out = []
        for e in b.get("entry", []):
            req = e.get("request", {})
            body = e.get("resource")
            if req.get("method") == "PATCH" and body and body.get("resourceType") == "Binary":
                raw = base64.b64decode(body["data"])
            else:
                raw = json.dumps(body).encode() if body is not None else b""
            h = {"if-none-exist": req["ifNoneExist"]} if req.get("ifNoneExist") else {}
            segs = [s for s in urlsplit(req.get("url", "")).path.split("/") if s]
            params = parse_qsl(urlsplit(req.get("url", "")).query, keep_blank_values=True)
            status, res, _ = self.route(req.get("method", "GET"), segs, params, raw, h)
            # A failed transaction entry fails the whole transaction (no rollback: demo server).
            if b["type"] == "transaction" and status >= 400:
                return status, res, {}
            entry = {"response": {"status": str(status)}}
            if res is not None:
                entry["resource"] = res
            out.append(entry)
        return 200, {"resourceType": "Bundle", "type": f"{b['type']}-response", "entry": out}, {}


def fhir_accept(accept):
    """Whether `Accept` asks for a FHIR resource (absent, JSON or FHIR types), R4 http.html#mime-type."""
    return not accept or any(k in accept for k in ("fhir", "json", "*/*"))


def referenced(v):
    """(type, id) of every relative `Type/id` reference in `v`, at any depth."""
    out = []
    if isinstance(v, dict):
        r = v.get("reference")
        if isinstance(r, str) and r.count("/") == 1 and "?" not in r:
            out.append(tuple(r.split("/")))
        for x in v.values():
            out += referenced(x)
    elif isinstance(v, list):
        for x in v:
            out += referenced(x)
    return out


def capability():
    return {"resourceType": "CapabilityStatement", "status": "active", "date": "2024-05-01", "kind": "instance",
            "fhirVersion": "4.0.1", "format": ["json"],
            "implementation": {"description": "fapi-guard sample FHIR upstream", "url": BASE},
            "rest": [{"mode": "server",
                      "security": {"service": [cc("http://terminology.hl7.org/CodeSystem/restful-security-service",
                                                  "SMART-on-FHIR", "SMART-on-FHIR")]},
                      "resource": [{"type": t, "interaction": [{"code": c} for c in (
                          "read", "vread", "update", "patch", "delete", "history-instance", "history-type",
                          "create", "search-type")]} for t in TYPES],
                      "interaction": [{"code": "batch"}, {"code": "transaction"}],
                      "operation": [{"name": "everything",
                                     "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}]}]}


def not_modified(res, headers):
    """A conditional read the resource meets: `If-None-Match` names its version ETag (or
    `*`), or `If-Modified-Since` is not before its `meta.lastUpdated`."""
    meta = (res or {}).get("meta") or {}
    if "versionId" not in meta:
        return False
    inm = headers.get("if-none-match")
    if inm is not None:
        etag = f'W/"{meta["versionId"]}"'
        return any(t.strip() in ("*", etag, etag[2:]) for t in inm.split(","))
    ims = headers.get("if-modified-since")
    if ims and meta.get("lastUpdated"):
        try:
            since = parsedate_to_datetime(ims)
            updated = datetime.strptime(meta["lastUpdated"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        except (TypeError, ValueError):
            return False
        return updated <= since
    return False


def make_handler(fhir):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _body(self):
            if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
                out = b""
                while True:  # RFC 9112 §7.1: chunks, then a trailer section (dropped)
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
            n = int(self.headers.get("content-length") or 0)
            return self.rfile.read(n) if n else b""

        def _any(self):
            body = self._body()
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, res, extra = fhir.handle(self.command, self.path, body, headers)
            if self.command in ("GET", "HEAD") and status == 200 and isinstance(res, dict) \
                    and not_modified(res, headers):
                status, res = 304, None  # RFC 9110 §13.1.2, §13.1.3 (as HAPI FHIR does)
            if isinstance(res, bytes):  # raw content (a Binary served as itself)
                data, res = res, None
            else:
                data = json.dumps(res, ensure_ascii=False).encode() if res is not None else b""
            self.send_response(status)
            if data and "content-type" not in extra:
                self.send_header("content-type", "application/fhir+json; charset=utf-8")
            if res is not None and "meta" in res and "versionId" in res["meta"]:
                self.send_header("etag", f'W/"{res["meta"]["versionId"]}"')
            for k, v in extra.items():
                self.send_header(k, v)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _any

        def log_message(self, fmt, *args):
            # Method and path only: never headers (tokens) or bodies (patient data).
            sys.stderr.write(f"fhir-upstream {self.command} {urlsplit(self.path).path}\n")

    return Handler


def serve(host="127.0.0.1", port=8080):
    fhir = Fhir()
    httpd = ThreadingHTTPServer((host, port), make_handler(fhir))
    httpd.daemon_threads = True
    httpd.fhir = fhir
    return httpd


def set_base(base: str) -> None:
    """Serves under `base` (`/r4`, `/`, ...) instead of /fhir: the demo runs any policy's base."""
    global BASE
    BASE = "/" + base.strip("/") if base.strip("/") else ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--base", default=BASE, help="FHIR base path to serve under (a policy's fhir.base_path)")
    a = ap.parse_args()
    set_base(a.base)
    httpd = serve(a.host, a.port)
    sys.stderr.write(f"fhir-upstream listening on http://{a.host}:{a.port}{BASE}\n")
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
