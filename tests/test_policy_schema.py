"""policies/schema/*.json against the policies: every committed policy validates, and the
schema refuses what the filters refuse for the per-route `authz` and `mode` (docs/checks.md §4)."""
import copy
import json

import jsonschema
import pytest
from referencing import Registry, Resource

from harness import ROOT

SCHEMAS = ROOT / "policies" / "schema"


def validator():
    docs = {p.name: json.loads(p.read_text()) for p in SCHEMAS.glob("*.json")}
    registry = Registry().with_resources(
        (d["$id"], Resource.from_contents(d)) for d in docs.values())
    return jsonschema.Draft202012Validator(docs["policy.schema.json"], registry=registry)


@pytest.mark.parametrize("path", sorted((ROOT / "policies").glob("*.json")), ids=lambda p: p.name)
def test_committed_policies_validate(path):
    errors = [e.message for e in validator().iter_errors(json.loads(path.read_text()))]
    assert not errors, errors


@pytest.mark.parametrize("mutate", [
    lambda r: r["authz"].update({"unknown": 1}),
    lambda r: r["authz"]["claims"][0].pop("claim"),
    lambda r: r["authz"]["bind"][0].update({"header": "x-org"}),
    lambda r: r["authz"]["bind"][0].update({"match": "prefix"}),
    lambda r: r.update({"mode": "dry"}),
    lambda r: r["authz"]["scopes"].update({"all_of": ["two words"]}),
])
def test_bad_authz_refused_by_schema(mutate):
    doc = json.loads((ROOT / "policies" / "helseid-rest-api.json").read_text())
    bad = copy.deepcopy(doc)
    mutate(bad["routes"][2])
    assert list(validator().iter_errors(bad)), "schema accepted a bad authz"


@pytest.mark.parametrize("field, value", [
    ("jwks_refresh_seconds", 2 ** 63),
    ("jwks_refresh_seconds", 604801),
    ("jwks_min_refetch_seconds", 86401),
    ("jwks_fetch_timeout_ms", 60001),
    ("jwks_max_bytes", 1048577),
    ("jwks_max_bytes", 1023),
    ("jwks_max_keys", 1001),
    ("jwks_max_keys", 0),
])
def test_unbounded_jwks_timings_refused_by_schema(field, value):
    # JWKS timings: the schema bounds what compile bounds (`issuers[i].<field>` named there).
    doc = json.loads((ROOT / "policies" / "helseid-rest-api.json").read_text())
    good = copy.deepcopy(doc)
    good["issuers"][0] = {"issuer": "https://i.test", "jwks_uri": "https://i.test/jwks",
                          "jwks_cluster": "idp"}
    assert not list(validator().iter_errors(good))
    good["issuers"][0][field] = value
    assert list(validator().iter_errors(good)), f"schema accepted {field}={value}"


def test_route_matcher_is_path_or_path_prefix():
    # A rule has exactly one matcher (routes.rs `RouteDoc::matcher`): `path` (exact) or
    # `path_prefix`; both or neither are refused, as the filters refuse them at load.
    doc = json.loads((ROOT / "policies" / "helseid-rest-api.json").read_text())
    exact = copy.deepcopy(doc)
    exact["routes"][0] = {"path": "/api/v2/health", "methods": ["GET"], "require": "none"}
    assert not [e.message for e in validator().iter_errors(exact)]
    for rule in ({"path": "/a", "path_prefix": "/a", "require": "none"}, {"require": "none"},
                 {"path": "a", "require": "none"}):
        bad = copy.deepcopy(doc)
        bad["routes"][0] = rule
        assert list(validator().iter_errors(bad)), f"schema accepted {rule}"


def test_denial_format_values():
    doc = json.loads((ROOT / "policies" / "helseid-rest-api.json").read_text())
    for value, ok in (("problem+json", True), ("operation_outcome", True), ("problem", False)):
        d = copy.deepcopy(doc)
        d["api"]["denial_format"] = value
        assert (not list(validator().iter_errors(d))) == ok, value


@pytest.mark.parametrize("compartment, ok", [
    ({"preset": "subject_only"}, True),
    ({"params": {"Observation": ["subject"], "Group": []}}, True),
    ({"preset": "narrow"}, False),
    ({"params": {"Patient": []}}, False),
    ({"params": {"Observation": ["subject", "subject"]}}, False),
    ({"extra": 1}, False),
])
def test_compartment_option_in_schema(compartment, ok):
    # The schema refuses what `fhir.compartment` refuses at load (fhir::policy::tests).
    doc = json.loads((ROOT / "policies" / "helseid-rest-api.json").read_text())
    doc["fhir"] = {"base_path": "/fhir", "compartment": compartment}
    errors = list(validator().iter_errors(doc))
    assert (not errors) == ok, [e.message for e in errors]


def test_every_schema_object_says_type_object():
    """Every object the schema describes (`properties`) is `type: object`, so an array in its
    place fails the schema as it fails the loader (docs/api-owner-guide.md "1. Write the
    policy")."""
    untyped = []

    def walk(node, where):
        if isinstance(node, dict):
            if "properties" in node and node.get("type") != "object":
                untyped.append(where)
            for k, v in node.items():
                walk(v, f"{where}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")

    for path in SCHEMAS.glob("*.json"):
        walk(json.loads(path.read_text()), path.name)
    assert not untyped, untyped
    policy = json.loads((ROOT / "policies" / "demo-fhir-api.json").read_text())
    policy["api"] = list(policy["api"].values())
    assert any(e.path and e.path[0] == "api" for e in validator().iter_errors(policy))


@pytest.mark.parametrize("audit, route_audit, fhir, ok", [
    ({"record": True, "patients_in_bodies": True}, None, True, True),
    ({"record": False}, None, False, True),
    (None, {"patient_path_param": "orgnr"}, False, True),
    (None, {"patient_query_param": "patient"}, False, True),
    ({"record": "yes"}, None, False, False),
    ({"extra": 1}, None, False, False),
    (None, {"patient_path_param": "orgnr", "patient_query_param": "p"}, False, False),
    (None, {}, False, False),
    (None, {"patient_param": "orgnr"}, False, False),
])
def test_audit_options_in_schema(audit, route_audit, fhir, ok):
    # The schema refuses what `audit` / `routes[].audit` refuse at load (audit_policy::tests;
    # a path parameter the route does not have, and `patients_in_bodies` without `fhir`, only
    # the loader can tell).
    doc = json.loads((ROOT / "policies" / "helseid-rest-api.json").read_text())
    if audit is not None:
        doc["audit"] = audit
    if route_audit is not None:
        doc["routes"][1]["audit"] = route_audit
    if fhir:
        doc["fhir"] = {"base_path": "/fhir"}
    errors = list(validator().iter_errors(doc))
    assert (not errors) == ok, [e.message for e in errors]
