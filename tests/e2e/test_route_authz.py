"""Per-route authorization (`routes[].authz`, docs/checks.md §4) and dry-run mode in real
Envoy: every condition kind allowed and denied, the RFC 6750 §3.1 challenge for a
missing scope, object-level bindings of a path segment and a header, and `mode: shadow`
counting `shadow_denied.<reason>` while the request passes. Tokens by joserfc."""
import pytest

from harness import Envoy, Issuer
from helseid_shapes import ORG_PARENT, SL, reason

pytestmark = pytest.mark.e2e

AUD = "nhn:authz-e2e"
TF = "nhn:tillitsrammeverk:parameters"


def rule(path, authz, methods=None, **more):
    r = {"path_prefix": path, "require": "token", "authz": authz, **more}
    if methods:
        r["methods"] = methods
    return r


ROUTES = [
    {"path_prefix": "/public", "require": "none"},
    rule("/orgs/{orgnr}/documents", {
        "scopes": {"any_of": ["nhn:api/read", "nhn:api/write"]},
        "bind": [{"path_param": "orgnr", "match": "colon_suffix", "authorization_details": {
            "type": "helseid_authorization", "field": "practitioner_role.organization.identifier.value"}}]},
        methods=["GET"]),
    rule("/orgs/{orgnr}/documents", {
        "scopes": {"all_of": ["nhn:api/write"]},
        "claims": [{"claim": SL, "gte": 4}],
        "bind": [{"path_param": "orgnr", "match": "colon_suffix", "authorization_details": {
            "type": "helseid_authorization", "field": "practitioner_role.organization.identifier.value"}}]},
        methods=["POST"]),
    rule("/care", {"authorization_details": [{"type": TF, "fields": [
        {"field": "care_relationship.purpose_of_use.code", "one_of": ["TREAT", "COC"]}]}]}),
    rule("/c/equals", {"claims": [{"claim": "helseid://claims/identity/assurance_level", "equals": "high"}]}),
    rule("/c/one_of", {"claims": [{"claim": "helseid://claims/identity/network", "one_of": ["helsenett", "internett"]}]}),
    rule("/c/prefix", {"claims": [{"claim": "client_id", "prefix": "helseid-"}]}),
    rule("/c/present", {"claims": [{"claim": "helseid://claims/hpr/hpr_number", "present": True}]}),
    rule("/c/absent", {"claims": [{"claim": "act", "present": False}]}),
    rule("/c/lte", {"claims": [{"claim": "n", "lte": 10}]}),
    rule("/c/contains", {"claims": [{"claim": "amr", "contains": "pwd"}]}),
    rule("/hdr", {"bind": [{"header": "x-orgnr", "claim": ORG_PARENT}]}),
    rule("/shadow", {"scopes": {"all_of": ["nhn:api/never"]}}, mode="shadow"),
]


def org(child="111222333", parent="999888777"):
    return [{"type": "helseid_authorization", "practitioner_role": {"organization": {"identifier": {
        "system": "urn:oid:1.0.6523", "type": "ENH", "value": f"NO:ORGNR:{parent}:{child}"}}}}]


def tf(code):
    return [{"type": TF, "care_relationship": {"purpose_of_use": {
        "code": code, "system": "urn:oid:2.16.840.1.113883.1.11.20448"}}}]


@pytest.fixture(scope="module")
def issuer():
    return Issuer("https://issuer.authz.test", algs=("ES256",))


def make_policy(issuer, routes=ROUTES, mode=None):
    p = {"api": {"name": "authz-e2e", "audience": AUD},
         "issuers": [{"issuer": issuer.iss, "jwks": issuer.jwks()}],
         "token": {"schemes": ["DPoP"]}, "routes": routes}
    if mode:
        p["mode"] = mode
    return p


@pytest.fixture(scope="module")
def envoy(upstream, issuer):
    with Envoy(make_policy(issuer), upstream.port, filters=["token"]) as e:
        yield e


def get(e, issuer, path, method="GET", headers=None, scope="nhn:api/read", **claims):
    tok = issuer.token("ES256", aud=AUD, scope=scope, **claims)
    return e.request(method, path, {"Authorization": f"DPoP {tok}", **(headers or {})})


def assert_forbidden(r, code):
    assert r.status_code == 403, (r.status_code, r.text)
    assert reason(r) == code, r.text


def test_scope_any_of_and_org_binding(envoy, issuer):
    assert get(envoy, issuer, "/orgs/111222333/documents", authorization_details=org()).status_code == 200
    r = get(envoy, issuer, "/orgs/111222333/documents", scope="openid", authorization_details=org())
    assert_forbidden(r, "authz_missing_scope")
    # RFC 6750 §3.1: the challenge names the scope(s) needed.
    assert r.headers["www-authenticate"].startswith(
        'DPoP error="insufficient_scope", scope="nhn:api/read nhn:api/write"'), r.headers["www-authenticate"]
    # Another organisation's documents (BOLA): the child number in the path is not the token's.
    assert_forbidden(get(envoy, issuer, "/orgs/111222334/documents", authorization_details=org()), "authz_binding")
    # No authorization_details at all: fails closed.
    assert_forbidden(get(envoy, issuer, "/orgs/111222333/documents"), "authz_binding")


def test_write_needs_write_scope_and_security_level_4(envoy, issuer):
    ok = dict(scope="nhn:api/read nhn:api/write", authorization_details=org())
    assert get(envoy, issuer, "/orgs/111222333/documents", "POST", **ok, **{SL: "4"}).status_code == 200
    r = get(envoy, issuer, "/orgs/111222333/documents", "POST", authorization_details=org(), **{SL: "4"})
    assert_forbidden(r, "authz_missing_scope")
    assert 'scope="nhn:api/write"' in r.headers["www-authenticate"]
    assert_forbidden(get(envoy, issuer, "/orgs/111222333/documents", "POST", **ok, **{SL: "3"}), "authz_claim")
    assert_forbidden(get(envoy, issuer, "/orgs/111222333/documents", "POST", **ok), "authz_claim")


def test_trust_framework_purpose_of_use(envoy, issuer):
    assert get(envoy, issuer, "/care", authorization_details=tf("TREAT")).status_code == 200
    r = get(envoy, issuer, "/care", authorization_details=tf("RESEARCH"))
    assert_forbidden(r, "authz_authorization_details")
    assert "www-authenticate" not in r.headers


@pytest.mark.parametrize("path,good,bad", [
    ("/c/equals", {"helseid://claims/identity/assurance_level": "high"},
     {"helseid://claims/identity/assurance_level": "substantial"}),
    ("/c/one_of", {"helseid://claims/identity/network": "helsenett"}, {"helseid://claims/identity/network": "netvalue-q7"}),
    ("/c/prefix", {"client_id": "helseid-abc"}, {"client_id": "clientvalue-q7"}),
    ("/c/present", {"helseid://claims/hpr/hpr_number": "565501872"}, {}),
    ("/c/absent", {}, {"act": {"sub": "someone"}}),
    ("/c/lte", {"n": "9"}, {"n": 11}),
    ("/c/contains", {"amr": ["otp", "pwd"]}, {"amr": ["otp"]}),
])
def test_each_claim_condition(envoy, issuer, path, good, bad):
    assert get(envoy, issuer, path, **good).status_code == 200
    r = get(envoy, issuer, path, **bad)
    assert_forbidden(r, "authz_claim")
    # The detail names the claim, never its value; so does the log.
    for v in bad.values():
        if isinstance(v, str):
            assert v not in r.text and v not in envoy.logs()


def test_header_binding(envoy, issuer):
    assert get(envoy, issuer, "/hdr", headers={"x-orgnr": "999888777"}, **{ORG_PARENT: "999888777"}).status_code == 200
    assert_forbidden(get(envoy, issuer, "/hdr", headers={"x-orgnr": "999888778"}, **{ORG_PARENT: "999888777"}),
                     "authz_binding")
    assert_forbidden(get(envoy, issuer, "/hdr", **{ORG_PARENT: "999888777"}), "authz_binding")


def test_route_in_shadow_mode_counts_and_passes(envoy, issuer):
    before = envoy.counter("token.shadow_denied.authz_missing_scope")
    r = get(envoy, issuer, "/shadow/x")
    assert r.status_code == 200, r.text
    assert envoy.counter("token.shadow_denied.authz_missing_scope") == before + 1
    # The log line names the request (method, the rule, the verified client), not the path
    # or the token.
    assert ("shadow_denied reason=authz_missing_scope status=403 method=GET route=/shadow "
            "client_id=client-1 (mode shadow: passed)") in envoy.logs()
    # An enforced route denies as usual (and counts under denied.*).
    assert get(envoy, issuer, "/c/prefix").status_code == 403


def test_policy_in_shadow_mode_with_an_enforce_only_route(upstream, issuer):
    routes = [rule("/strict", {"scopes": {"all_of": ["nhn:api/never"]}}, mode="enforce"),
              rule("/loose", {"scopes": {"all_of": ["nhn:api/never"]}})]
    with Envoy(make_policy(issuer, routes, mode="shadow"), upstream.port, filters=["token", "dpop"]) as e:
        assert get(e, issuer, "/loose").status_code == 200
        assert e.counter("token.shadow_denied.authz_missing_scope") == 1
        # A token that fails verification passes too in shadow, counted once under its reason:
        # the DPoP filter after it (no verified token, no proof) does not count the request
        # again, as in enforce mode it would never have seen it.
        r = e.get("/loose", {"Authorization": "DPoP not.a.token"})
        assert r.status_code == 200, r.text
        assert e.counter("token.shadow_denied.malformed_token") == 1
        assert e.counter("dpop.shadow_denied.no_verified_token") == 0
        assert e.counter("dpop.shadow_denied.dpop_missing") == 0
        # An expired token names its (unverified) client in the log line.
        expired = issuer.token("ES256", aud=AUD, scope="nhn:api/read", client_id="helseid-9",
                               exp=1, iat=0)
        assert e.get("/loose", {"Authorization": f"DPoP {expired}"}).status_code == 200
        assert e.counter("token.shadow_denied.expired") == 1
        assert e.counter("dpop.shadow_denied.no_verified_token") == 0
        assert ("shadow_denied reason=expired status=401 method=GET route=/loose "
                "client_id=helseid-9 (unverified)") in e.logs()
        assert expired not in e.logs()
        assert_forbidden(get(e, issuer, "/strict"), "authz_missing_scope")


def test_fhir_scope_filter_honours_shadow_mode(upstream, issuer):
    """The FHIR scope filter in a shadow policy: a SMART scope refusal is counted and passes;
    the same request under an enforcing policy is refused."""
    fhir = {"base_path": "/fhir", "resource_types": ["Patient", "Observation", "Condition"]}
    p = make_policy(issuer, [{"path_prefix": "/fhir/metadata", "methods": ["GET"], "require": "none"}])
    p["fhir"] = fhir
    tok = issuer.token("ES256", aud=AUD, scope=["patient/Condition.rs"], patient="p1")
    h = {"Authorization": f"DPoP {tok}"}
    with Envoy(p, upstream.port, filters=["token", "fhir_scope"]) as e:
        r = e.get("/fhir/Observation?patient=p1", h)
        assert_forbidden(r, "insufficient_scope")
    p["mode"] = "shadow"
    with Envoy(p, upstream.port, filters=["token", "fhir_scope"]) as e:
        r = e.get("/fhir/Observation?patient=p1", h)
        assert r.status_code == 200, r.text
        assert e.counter("fhir_scope.shadow_denied.insufficient_scope") == 1
        assert e.counter("fhir_scope.denied.insufficient_scope") == 0


def test_paths_that_could_reach_another_org_refused(envoy, issuer):
    """`/orgs/<mine>/../<other>/documents` must not pass a template bound to <mine> and reach
    another organisation's documents at a server that normalises the path (RFC 3986 §5.2.4):
    the proxy normalises it first (then the binding refuses <other>) or the filter refuses the
    non-canonical path (docs/checks.md, "Path canonicalisation")."""
    import http.client
    import json

    tok = issuer.token("ES256", aud=AUD, scope="nhn:api/read", authorization_details=org())
    for path in ("/orgs/111222333/../111222334/documents", "/orgs//111222334/documents",
                 "/orgs/111222333/%2e%2e/111222334/documents", "/orgs/111222333/documents"):
        # http.client sends the path as given (requests would resolve the dot-segments).
        c = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=10)
        c.request("GET", path, headers={"Authorization": f"DPoP {tok}"})
        r = c.getresponse()
        body = r.read()
        c.close()
        if path == "/orgs/111222333/documents":
            assert r.status == 200, body
            continue
        assert r.status in (400, 403), (path, r.status, body)
        code = json.loads(body)["issue"][0]["details"]["coding"][0]["code"]
        assert code in ("path_not_canonical", "authz_binding"), (path, code)


def test_unmatched_deny_refuses_unlisted_paths(upstream, issuer):
    """Policy `unmatched: deny` (docs/checks.md §4): a method and path no `routes[]` rule lists
    is refused 403 `route_not_listed` (no challenge) before the token is read, and never
    reaches the API; listed and public routes work as before. The default (`token_only`) lets
    the same request through with a valid token; `mode: shadow` counts and passes it."""
    routes = [{"path_prefix": "/public", "require": "none"},
              rule("/c/prefix", {"claims": [{"claim": "client_id", "prefix": "helseid-"}]}, methods=["GET"])]
    p = make_policy(issuer, routes)
    p["unmatched"] = "deny"
    with Envoy(p, upstream.port, filters=["token", "dpop"]) as e:
        seen = len(upstream.requests)
        for method, path, tok in [("GET", "/admin", True), ("GET", "/admin", False),
                                  ("DELETE", "/c/prefix", True), ("GET", "/c/prefixed", True)]:
            r = get(e, issuer, path, method) if tok else e.request(method, path)
            assert_forbidden(r, "route_not_listed")
            assert "www-authenticate" not in r.headers, r.headers
        assert len(upstream.requests) == seen, "an unlisted request reached the API"
        assert e.counter("token.denied.route_not_listed") == 4
        assert "denied reason=route_not_listed" in e.logs()
        assert e.get("/public/x").status_code == 200
        # The listed route goes on to the next filter (DPoP: this token is not bound).
        r = get(e, issuer, "/c/prefix", client_id="helseid-1")
        assert r.status_code == 401 and reason(r) == "token_not_dpop_bound", r.text
    del p["unmatched"]
    with Envoy(p, upstream.port, filters=["token"]) as e:
        assert get(e, issuer, "/admin").status_code == 200
    p["unmatched"], p["mode"] = "deny", "shadow"
    with Envoy(p, upstream.port, filters=["token"]) as e:
        assert get(e, issuer, "/admin").status_code == 200
        assert e.counter("token.shadow_denied.route_not_listed") == 1
        assert "shadow_denied reason=route_not_listed status=403 method=GET route=(unlisted) client_id=client-1 (unverified)" in e.logs()
        # In shadow the token is still checked; the request is counted once, under the first
        # refusal (the one enforce mode would have answered).
        assert e.get("/admin", {"Authorization": "DPoP not.a.token"}).status_code == 200
        assert e.counter("token.shadow_denied.route_not_listed") == 2
        assert e.counter("token.shadow_denied.malformed_token") == 0


def test_exact_path_and_problem_json_denials(upstream, issuer):
    """An exact `path` opens one path only: with `/api/v2/health` public and `unmatched: deny`,
    `/api/v2/health/admin/dump` and `/api/v2/healthz` are refused 403 `route_not_listed`
    (docs/checks.md §4). `api.denial_format: problem+json` answers every denial with RFC 9457
    problem details (§3: type, title, status, detail, code); the challenges are unchanged."""
    routes = [{"path": "/api/v2/health", "methods": ["GET"], "require": "none"},
              rule("/api/v2/items", {"scopes": {"all_of": ["nhn:api/read"]}}, methods=["GET"])]
    p = make_policy(issuer, routes)
    p["unmatched"] = "deny"
    p["api"]["denial_format"] = "problem+json"
    with Envoy(p, upstream.port, filters=["token"]) as e:
        seen = len(upstream.requests)
        assert e.get("/api/v2/health").status_code == 200
        assert e.get("/api/v2/health?verbose=1").status_code == 200
        assert len(upstream.requests) == seen + 2
        for path in ("/api/v2/health/admin/dump", "/api/v2/health/", "/api/v2/healthz"):
            for r in (e.get(path), get(e, issuer, path)):
                assert r.status_code == 403, (path, r.status_code, r.text)
                assert r.headers["content-type"] == "application/problem+json", r.headers
                assert r.json() == {"type": "urn:fapi-guard:reason:route_not_listed",
                                    "title": "Forbidden", "status": 403,
                                    "detail": "route_not_listed", "code": "route_not_listed"}
                assert "www-authenticate" not in r.headers
        assert len(upstream.requests) == seen + 2, "a deeper path reached the API"
        # 401 without a token: the RFC 9449 §7.1 challenge as in an OperationOutcome API.
        r = e.get("/api/v2/items/1")
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'DPoP algs="PS256 ES256 EdDSA"'
        body = r.json()
        assert (body["code"], body["status"], body["type"]) == (
            "missing_token", 401, "urn:fapi-guard:reason:missing_token"), body
        # 403 insufficient_scope: the challenge names the scope; detail says which one.
        r = get(e, issuer, "/api/v2/items/1", scope="openid")
        assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"].startswith(
            'DPoP error="insufficient_scope", scope="nhn:api/read"'), r.headers
        body = r.json()
        assert body["code"] == "authz_missing_scope" and body["title"] == "Forbidden", body
        assert body["detail"].startswith("authz_missing_scope: "), body
        assert "resourceType" not in body
        assert get(e, issuer, "/api/v2/items/1").status_code == 200
