"""Token filter in real Envoy (docs/checks.md §1): every check with an allowed and a denied case.

Tokens are made by joserfc (independent of our Rust code) unless a test says otherwise.
"""
import http.client
import json
import time

import pytest

from harness import Envoy, Issuer, JwksServer, raw_jws

pytestmark = pytest.mark.e2e

AUD = "demo-fhir-api"


def policy_for(issuers, **token):
    p = {
        "api": {"name": "token-e2e", "audience": AUD},
        "issuers": issuers,
        "token": {"schemes": ["DPoP"], **token},
        "routes": [{"path_prefix": "/fhir/metadata", "methods": ["GET"], "require": "none"}],
    }
    return p


@pytest.fixture(scope="module")
def issuer():
    return Issuer("https://issuer.test", algs=("ES256", "PS256", "EdDSA", "RS256"))


@pytest.fixture(scope="module")
def issuer2():
    return Issuer("https://second-issuer.test", algs=("ES256",))


@pytest.fixture(scope="module")
def envoy(upstream, issuer, issuer2):
    p = policy_for([{"issuer": issuer.iss, "jwks": issuer.jwks()}, {"issuer": issuer2.iss, "jwks": issuer2.jwks()}])
    with Envoy(p, upstream.port, filters=["token"]) as e:
        yield e


def dpop(tok):
    return {"Authorization": f"DPoP {tok}"}


def challenge(r):
    return r.headers.get("www-authenticate", "")


def reason(r):
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]["details"]["coding"][0]["code"]


def assert_denied(r, code, status=401, error="invalid_token"):
    assert r.status_code == status, (r.status_code, r.text)
    assert reason(r) == code
    assert r.headers["content-type"] == "application/fhir+json"
    if error:
        assert f'error="{error}"' in challenge(r)


# ---- allowed: each FAPI alg, each issuer, public routes ----

@pytest.mark.parametrize("alg", ["ES256", "PS256", "EdDSA"])
def test_valid_token_each_fapi_alg_reaches_api(envoy, issuer, upstream, alg):
    r = envoy.get("/fhir/Patient/1", dpop(issuer.token(alg, aud=AUD)))
    assert r.status_code == 200, r.text
    assert r.json()["path"] == "/fhir/Patient/1"


def test_second_issuer_accepted(envoy, issuer2):
    assert envoy.get("/fhir/Patient", dpop(issuer2.token("ES256", aud=AUD))).status_code == 200


def test_public_route_needs_no_token_but_others_do(envoy):
    assert envoy.get("/fhir/metadata").status_code == 200
    assert_denied(envoy.request("POST", "/fhir/metadata"), "missing_token", error=None)
    assert_denied(envoy.get("/fhir/metadataX"), "missing_token", error=None)


def test_aud_array_containing_api_is_accepted(envoy, issuer):
    assert envoy.get("/fhir/Patient", dpop(issuer.token(aud=["other", AUD]))).status_code == 200


def test_scp_array_instead_of_scope_is_accepted(envoy, issuer):
    assert envoy.get("/fhir/Patient", dpop(issuer.token(aud=AUD, scope=None, scp=["patient/*.rs"]))).status_code == 200


# ---- §1.1 where the token comes from ----

def test_no_token_gets_challenge_without_error(envoy):
    r = envoy.get("/fhir/Patient")
    assert_denied(r, "missing_token", error=None)
    assert challenge(r) == 'DPoP algs="PS256 ES256 EdDSA"'


def test_other_scheme_is_no_token(envoy):
    r = envoy.get("/fhir/Patient", {"Authorization": "Basic dXNlcjpwYXNz"})
    assert_denied(r, "missing_token", error=None)


def test_token_in_query_refused(envoy, issuer):
    r = envoy.get("/fhir/Patient?access_token=" + issuer.token(aud=AUD))
    assert_denied(r, "token_in_query", status=400, error="invalid_request")


def test_bearer_refused_on_dpop_only_api(envoy, issuer):
    r = envoy.get("/fhir/Patient", {"Authorization": "Bearer " + issuer.token(aud=AUD)})
    assert_denied(r, "scheme_not_allowed")
    assert challenge(r).startswith("DPoP ")


def test_two_authorization_headers_refused(envoy, issuer):
    tok = issuer.token(aud=AUD)
    c = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=5)
    c.putrequest("GET", "/fhir/Patient")
    c.putheader("Authorization", f"DPoP {tok}")
    c.putheader("Authorization", f"DPoP {tok}")
    c.endheaders()
    r = c.getresponse()
    body = json.loads(r.read())
    assert r.status == 400
    assert body["issue"][0]["details"]["coding"][0]["code"] == "multiple_authorization"


# ---- §1.2 form and typ ----

def test_not_a_jws_refused(envoy):
    assert_denied(envoy.get("/fhir/Patient", dpop("not.a-token")), "malformed_token")
    assert_denied(envoy.get("/fhir/Patient", dpop("abc")), "malformed_token")


@pytest.mark.parametrize("typ,ok", [("at+jwt", True), ("application/at+jwt", True), ("AT+JWT", True),
                                    ("JWT", False), (None, False), ("dpop+jwt", False)])
def test_typ(envoy, issuer, typ, ok):
    r = envoy.get("/fhir/Patient", dpop(issuer.token(aud=AUD, header={"typ": typ})))
    if ok:
        assert r.status_code == 200, r.text
    else:
        assert_denied(r, "bad_typ")


def test_typ_jwt_allowed_when_policy_says(upstream, issuer):
    p = policy_for([{"issuer": issuer.iss, "jwks": issuer.jwks()}], allow_typ_jwt=True)
    with Envoy(p, upstream.port, filters=["token"]) as e:
        assert e.get("/fhir/Patient", dpop(issuer.token(aud=AUD, header={"typ": "JWT"}))).status_code == 200


# ---- §1.3 algorithms and keys ----

def test_alg_none_refused(envoy, issuer):
    tok = raw_jws({"alg": "none", "typ": "at+jwt"}, issuer.claims(aud=AUD))
    assert_denied(envoy.get("/fhir/Patient", dpop(tok)), "alg_not_allowed")


def test_hmac_with_public_key_as_secret_refused(envoy, issuer):
    """Algorithm confusion (RFC 8725 §2.1): HS256 keyed with the issuer's public key."""
    import hashlib
    import hmac

    from harness import raw_jws as _raw

    pub = json.dumps(issuer.keys["ES256"].as_dict(private=False)).encode()
    unsigned = _raw({"alg": "HS256", "typ": "at+jwt", "kid": issuer.keys["ES256"].kid}, issuer.claims(aud=AUD))
    signing_input = unsigned.rsplit(".", 1)[0]
    import base64
    sig = base64.urlsafe_b64encode(hmac.new(pub, signing_input.encode(), hashlib.sha256).digest()).rstrip(b"=")
    assert_denied(envoy.get("/fhir/Patient", dpop(f"{signing_input}.{sig.decode()}")), "alg_not_allowed")


def test_rs256_not_allowed_by_default(envoy, issuer):
    assert_denied(envoy.get("/fhir/Patient", dpop(issuer.token("RS256", aud=AUD))), "alg_not_allowed")


def test_rs256_allowed_when_policy_adds_it(upstream, issuer):
    p = policy_for([{"issuer": issuer.iss, "jwks": issuer.jwks()}], allowed_algs=["ES256", "RS256"])
    with Envoy(p, upstream.port, filters=["token"]) as e:
        assert e.get("/fhir/Patient", dpop(issuer.token("RS256", aud=AUD))).status_code == 200
        assert_denied(e.get("/fhir/Patient", dpop(issuer.token("PS256", aud=AUD))), "alg_not_allowed")


def test_rsa_1024_key_refused(upstream):
    weak = Issuer("https://weak.test", algs=())
    weak.keys["PS256"] = Issuer.make_key("PS256", "weak-1024", rsa_bits=1024)
    p = policy_for([{"issuer": weak.iss, "jwks": weak.jwks()}])
    with Envoy(p, upstream.port, filters=["token"]) as e:
        r = e.get("/fhir/Patient", dpop(weak.token("PS256", aud=AUD)))
        assert r.status_code == 401
        # The 1024-bit key is either dropped from the JWKS at load or refused at use.
        assert reason(r) in ("weak_or_mismatched_key", "unknown_key")


def test_key_confusion_es256_header_with_rsa_kid_refused(envoy, issuer):
    """A token whose kid names the RSA key but says ES256 must not verify against it."""
    attacker = Issuer.make_key("ES256", issuer.keys["PS256"].kid)
    tok = issuer.token("ES256", key=attacker, aud=AUD)
    assert_denied(envoy.get("/fhir/Patient", dpop(tok)), "unknown_key")


@pytest.mark.parametrize("member", ["jwk", "jku", "x5u", "x5c"])
def test_header_key_hints_never_used(envoy, issuer, member):
    """RFC 8725 §3.10: a token signed by the attacker's key, pointing at that key, is refused."""
    attacker = Issuer.make_key("ES256", "attacker")
    hint = {"jwk": attacker.as_dict(private=False), "jku": "http://127.0.0.1:1/jwks",
            "x5u": "http://127.0.0.1:1/cert", "x5c": ["MIIB"]}[member]
    tok = issuer.token("ES256", key=attacker, aud=AUD, header={member: hint})
    assert_denied(envoy.get("/fhir/Patient", dpop(tok)), "unknown_key")
    # Same attacker key, but claiming a real kid: the signature fails.
    tok = issuer.token("ES256", key=attacker, aud=AUD, header={member: hint, "kid": issuer.keys["ES256"].kid})
    assert_denied(envoy.get("/fhir/Patient", dpop(tok)), "bad_signature")


def test_crit_header_refused(envoy, issuer):
    from harness import sign_es256

    header = {"alg": "ES256", "typ": "at+jwt", "kid": issuer.keys["ES256"].kid, "crit": ["urn:x:ext"], "urn:x:ext": 1}
    tok = sign_es256(header, issuer.claims(aud=AUD), issuer.keys["ES256"])
    assert_denied(envoy.get("/fhir/Patient", dpop(tok)), "unsupported_crit")


def test_tampered_signature_refused(envoy, issuer):
    tok = issuer.token(aud=AUD)
    head, body, sig = tok.split(".")
    sig = sig[:-2] + ("AA" if sig[-2:] != "AA" else "BB")
    assert_denied(envoy.get("/fhir/Patient", dpop(f"{head}.{body}.{sig}")), "bad_signature")


def test_tampered_payload_refused(envoy, issuer):
    tok = issuer.token(aud=AUD, sub="alice")
    other = issuer.token(aud=AUD, sub="mallory")
    forged = tok.split(".")[0] + "." + other.split(".")[1] + "." + tok.split(".")[2]
    assert_denied(envoy.get("/fhir/Patient", dpop(forged)), "bad_signature")


def test_unknown_kid_refused(envoy, issuer):
    tok = issuer.token(aud=AUD, header={"kid": "no-such-kid"})
    assert_denied(envoy.get("/fhir/Patient", dpop(tok)), "unknown_key")


# ---- §1.5–§1.8 claims ----

def test_unknown_issuer_refused(envoy, issuer):
    assert_denied(envoy.get("/fhir/Patient", dpop(issuer.token(aud=AUD, iss="https://evil.test"))), "unknown_issuer")
    # iss compared exactly: a trailing slash is another issuer.
    assert_denied(envoy.get("/fhir/Patient", dpop(issuer.token(aud=AUD, iss=issuer.iss + "/"))), "unknown_issuer")


def test_wrong_audience_refused(envoy, issuer):
    assert_denied(envoy.get("/fhir/Patient", dpop(issuer.token(aud="other-api"))), "wrong_audience")
    assert_denied(envoy.get("/fhir/Patient", dpop(issuer.token(aud=["a", "b"]))), "wrong_audience")


def test_sole_audience(upstream, issuer):
    p = policy_for([{"issuer": issuer.iss, "jwks": issuer.jwks()}])
    p["api"]["sole_audience"] = True
    with Envoy(p, upstream.port, filters=["token"]) as e:
        assert e.get("/fhir/Patient", dpop(issuer.token(aud=AUD))).status_code == 200
        assert e.get("/fhir/Patient", dpop(issuer.token(aud=[AUD]))).status_code == 200
        assert_denied(e.get("/fhir/Patient", dpop(issuer.token(aud=[AUD, "other"]))), "audience_not_sole")


@pytest.mark.parametrize("claim", ["iss", "exp", "aud", "sub", "client_id", "iat", "jti"])
def test_each_required_claim(envoy, issuer, claim):
    claims = {"aud": AUD, claim: None}
    r = envoy.get("/fhir/Patient", dpop(issuer.token(**claims)))
    assert_denied(r, "missing_claim")


def test_claim_of_wrong_type_refused(envoy, issuer):
    assert_denied(envoy.get("/fhir/Patient", dpop(issuer.token(aud=AUD, exp="tomorrow"))), "missing_claim")
    assert_denied(envoy.get("/fhir/Patient", dpop(issuer.token(aud=AUD, sub=42))), "missing_claim")


def test_lifetime_with_skew(envoy, issuer):
    now = int(time.time())
    # Default skew 10 s: expired 5 s ago still passes, 30 s ago does not.
    assert envoy.get("/fhir/Patient", dpop(issuer.token(aud=AUD, iat=now - 100, exp=now - 5))).status_code == 200
    assert_denied(envoy.get("/fhir/Patient", dpop(issuer.token(aud=AUD, iat=now - 100, exp=now - 30))), "expired")
    assert envoy.get("/fhir/Patient", dpop(issuer.token(aud=AUD, nbf=now + 5))).status_code == 200
    assert_denied(envoy.get("/fhir/Patient", dpop(issuer.token(aud=AUD, nbf=now + 60))), "not_yet_valid")
    assert envoy.get("/fhir/Patient", dpop(issuer.token(aud=AUD, iat=now + 5))).status_code == 200
    assert_denied(envoy.get("/fhir/Patient", dpop(issuer.token(aud=AUD, iat=now + 60))), "iat_in_future")


# ---- §2.14 Bearer downgrade, where Bearer is allowed ----

def test_bearer_downgrade_of_dpop_bound_token(upstream, issuer):
    p = policy_for([{"issuer": issuer.iss, "jwks": issuer.jwks()}], schemes=["DPoP", "Bearer"])
    with Envoy(p, upstream.port, filters=["token"]) as e:
        plain = issuer.token(aud=AUD)
        assert e.get("/fhir/Patient", {"Authorization": "Bearer " + plain}).status_code == 200
        bound = issuer.token(aud=AUD, cnf={"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"})
        r = e.get("/fhir/Patient", {"Authorization": "Bearer " + bound})
        assert_denied(r, "bearer_downgrade")
        assert challenge(r).startswith("Bearer ")
        # Also on a cache hit: the same token first used correctly, then downgraded.
        assert e.get("/fhir/Patient", dpop(bound)).status_code == 200
        assert_denied(e.get("/fhir/Patient", {"Authorization": "Bearer " + bound}), "bearer_downgrade")


# ---- cache, stats, logs ----

def test_verified_token_cache_hit(envoy, issuer):
    tok = issuer.token(aud=AUD)
    before = envoy.counter("token.cache_hit")
    for _ in range(3):
        assert envoy.get("/fhir/Patient", dpop(tok)).status_code == 200
    assert envoy.counter("token.cache_hit") - before == 2


def test_cached_token_still_expires(upstream, issuer):
    p = policy_for([{"issuer": issuer.iss, "jwks": issuer.jwks()}], clock_skew_seconds=0)
    with Envoy(p, upstream.port, filters=["token"]) as e:
        now = int(time.time())
        tok = issuer.token(aud=AUD, iat=now - 10, exp=now + 2)
        assert e.get("/fhir/Patient", dpop(tok)).status_code == 200
        time.sleep(3.1)
        assert_denied(e.get("/fhir/Patient", dpop(tok)), "expired")


def test_stats_count_each_reason_and_logs_carry_no_token(envoy, issuer):
    before = envoy.counter("token.denied.wrong_audience")
    tok = issuer.token(aud="other-api")
    envoy.get("/fhir/Patient", dpop(tok))
    assert envoy.counter("token.denied.wrong_audience") == before + 1
    time.sleep(0.2)
    logs = envoy.logs()
    assert "reason=wrong_audience" in logs
    assert tok.split(".")[1] not in logs and tok.split(".")[2] not in logs


# ---- policy refused at load (fail closed) ----

@pytest.mark.parametrize("mutate,field", [
    (lambda p: p["api"].pop("audience"), "api"),
    (lambda p: p["token"].update(allowed_algs=["HS256"]), "token.allowed_algs[0]"),
    (lambda p: p["token"].update(allowed_algs=["none"]), "token.allowed_algs[0]"),
    (lambda p: p.update(extra=1), "extra"),
    (lambda p: p["issuers"][0].update(jwks_uri="ftp://x"), "issuers[0]"),
    (lambda p: p["routes"][0].update(path_prefix="metadata"), "routes[0].path_prefix"),
    # An object written as the array of its values (docs/api-owner-guide.md "1. Write the policy").
    (lambda p: p.update(token=list(p["token"].values())), "`token`: must be an object, not an array"),
])
def test_bad_policy_refused_naming_field(upstream, issuer, mutate, field):
    p = policy_for([{"issuer": issuer.iss, "jwks": issuer.jwks()}])
    mutate(p)
    with pytest.raises(RuntimeError) as err:
        Envoy(p, upstream.port, filters=["token"])
    assert field in str(err.value), str(err.value)[-2000:]


# ---- remote JWKS: start, rotation, outage, garbage ----

@pytest.fixture
def jwks_server(issuer):
    s = JwksServer(issuer.jwks())
    yield s
    s.stop()


def remote_policy(issuer, jwks_server, **issuer_over):
    i = {"issuer": issuer.iss, "jwks_uri": jwks_server.uri, "jwks_cluster": "issuer_jwks",
         "jwks_refresh_seconds": 300, "jwks_min_refetch_seconds": 1, "jwks_fetch_timeout_ms": 1000}
    i.update(issuer_over)
    return policy_for([i])


def wait_for(pred, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_remote_jwks_fetched_at_start_and_shared_by_workers(upstream, issuer, jwks_server):
    with Envoy(remote_policy(issuer, jwks_server), upstream.port, filters=["token"], concurrency=2) as e:
        assert wait_for(lambda: e.counter("token.jwks.fetch_ok") >= 1)
        for _ in range(6):
            assert e.get("/fhir/Patient", dpop(issuer.token(aud=AUD))).status_code == 200
        # One fetch served every worker (the lease keeps the others from fetching too).
        assert jwks_server.hits == 1


def test_rotation_new_kid_refetched_once(upstream, issuer, jwks_server):
    p = remote_policy(issuer, jwks_server, jwks_min_refetch_seconds=30)
    with Envoy(p, upstream.port, filters=["token"]) as e:
        # Keys installed, not only asked for: the hit comes before the answer is stored.
        assert wait_for(lambda: jwks_server.hits >= 1 and e.counter("token.jwks.fetch_ok") >= 1)
        assert e.get("/fhir/Patient", dpop(issuer.token(aud=AUD))).status_code == 200
        new_key = Issuer.make_key("ES256", "rotated-key")
        jwks_server.set_jwks(issuer.jwks(extra=[new_key]))
        hits = jwks_server.hits
        r = e.get("/fhir/Patient", dpop(issuer.token("ES256", key=new_key, aud=AUD)))
        assert r.status_code == 200, r.text
        assert jwks_server.hits == hits + 1
        # Unknown kids within jwks_min_refetch_seconds: rate-limited, no new fetch.
        for i in range(3):
            assert_denied(e.get("/fhir/Patient", dpop(issuer.token(aud=AUD, header={"kid": f"nope-{i}"}))), "unknown_key")
        assert jwks_server.hits == hits + 1


@pytest.mark.parametrize("failure", ["http_500", "garbage", "empty_keys"])
def test_outage_keeps_last_good_keys(upstream, issuer, jwks_server, failure):
    with Envoy(remote_policy(issuer, jwks_server, jwks_refresh_seconds=1), upstream.port, filters=["token"]) as e:
        # Keys installed, not only asked for: the hit comes before the answer is stored.
        assert wait_for(lambda: jwks_server.hits >= 1 and e.counter("token.jwks.fetch_ok") >= 1)
        assert e.get("/fhir/Patient", dpop(issuer.token(aud=AUD))).status_code == 200
        if failure == "http_500":
            jwks_server.status = 500
        elif failure == "garbage":
            jwks_server.body = b"<html>oops</html>"
        else:
            jwks_server.body = b'{"keys":[]}'
        hits = jwks_server.hits
        assert wait_for(lambda: e.counter("token.jwks.fetch_failed") >= 1 and jwks_server.hits > hits)
        # Fresh tokens (no cache hit) still verify with the last good keys.
        for _ in range(3):
            assert e.get("/fhir/Patient", dpop(issuer.token(aud=AUD))).status_code == 200


def test_keys_never_loaded_fails_closed(upstream, issuer, jwks_server):
    jwks_server.status = 503
    with Envoy(remote_policy(issuer, jwks_server), upstream.port, filters=["token"]) as e:
        r = e.get("/fhir/Patient", dpop(issuer.token(aud=AUD)))
        assert r.status_code == 503
        assert reason(r) == "jwks_unavailable"
        assert r.headers.get("retry-after") == "5" and "www-authenticate" not in r.headers
        # The issuer comes back: the next request after the rate limit succeeds.
        jwks_server.status = 200
        assert wait_for(lambda: e.get("/fhir/Patient", dpop(issuer.token(aud=AUD))).status_code == 200, timeout=8)
