"""DPoP filter in real Envoy (docs/checks.md §2, RFC 9449; RFC 8705 binding).

Proofs come from independent clients:
- npm `dpop` (panva) with access tokens signed by npm `jose` (tests/e2e/clients/dpop-client.mjs);
- PyPI `requests-oauth2client` (`DPoPKey`) for well-formed proofs, and `joserfc` for the
  deliberately broken ones no client library will make.
Every check of §2 has an allowed and a denied case; replay is tried across connections and
worker threads (`--concurrency 3`); nonces, gateway-style `htu` and a real client certificate
on a TLS listener are covered.
"""
from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import json
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from joserfc import jws
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry
from joserfc.registry import HeaderParameter
from requests_oauth2client import DPoPKey

from harness import Envoy, Issuer, raw_jws

pytestmark = pytest.mark.e2e

AUD = "dpop-e2e-api"
ALGS = 'algs="PS256 ES256 EdDSA"'
CLIENTS = Path(__file__).resolve().parent / "clients"
NONCE_SECRET = base64.urlsafe_b64encode(b"k" * 32).rstrip(b"=").decode()


# ---------------------------------------------------------------- helpers

def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def ath(token: str) -> str:
    return b64(hashlib.sha256(token.encode()).digest())


def node_client(request: dict) -> dict:
    """Runs the npm `dpop` + `jose` client (installs it with `npm ci` on first use)."""
    if not (CLIENTS / "node_modules" / "dpop").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=CLIENTS, check=True, timeout=300)
    out = subprocess.run(["node", str(CLIENTS / "dpop-client.mjs")], input=json.dumps(request), text=True,
                         capture_output=True, timeout=60, cwd=CLIENTS)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


class JoseProofs:
    """A DPoP key held by joserfc, for hand-shaped (also invalid) proofs."""

    def __init__(self, alg: str = "ES256"):
        self.alg = alg
        self.key = {"ES256": lambda: ECKey.generate_key("P-256"), "PS256": lambda: RSAKey.generate_key(2048),
                    "EdDSA": lambda: OKPKey.generate_key("Ed25519"), "RS256": lambda: RSAKey.generate_key(2048)}[alg]()
        self.jwk = self.key.as_dict(private=False)
        self.jkt = self.key.thumbprint()

    def proof(self, htm: str, htu: str, token: str | None, header: dict | None = None, claims: dict | None = None,
              drop: tuple = (), sign_with=None) -> str:
        h = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.jwk}
        c = {"jti": uuid.uuid4().hex, "htm": htm, "htu": htu, "iat": int(time.time())}
        if token is not None:
            c["ath"] = ath(token)
        h.update(header or {})
        c.update(claims or {})
        for k in drop:
            h.pop(k, None)
            c.pop(k, None)
        key = sign_with or self.key
        # joserfc refuses header members it does not know; ours must carry some on purpose.
        extra = {k: HeaderParameter("test member", lambda _v: None) for k in (header or {})
                 if k.startswith("x-")}
        registry = JWSRegistry(header_registry=extra, algorithms=[h.get("alg", self.alg)], strict_check_header=False)
        return jws.serialize_compact(h, json.dumps(c).encode(), key, algorithms=[h.get("alg", self.alg)],
                                     registry=registry)


def reason(r: requests.Response) -> str:
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body["issue"][0]["details"]["coding"][0]["code"]


def assert_denied(r, code: str, error: str | None = "invalid_dpop_proof", status: int = 401):
    assert r.status_code == status, (r.status_code, r.text)
    assert reason(r) == code, r.text
    assert r.headers["content-type"] == "application/fhir+json"
    www = r.headers.get("www-authenticate", "")
    if error:
        assert www.startswith(f'DPoP error="{error}"'), www


def dpop_headers(token: str, proof: str | None) -> dict:
    h = {"Authorization": f"DPoP {token}"}
    if proof is not None:
        h["DPoP"] = proof
    return h


def raw_get(port: int, path: str, headers: list[tuple[str, str]]) -> tuple[int, dict, bytes]:
    """A GET with headers exactly as listed (repeats allowed), on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        for k, v in headers:
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def worker_connections(envoy: Envoy) -> dict[str, int]:
    """Per-worker accepted connections on the listener (Envoy's `worker_N.downstream_cx_total`)."""
    r = requests.get(f"http://127.0.0.1:{envoy.admin_port}/stats", params={"filter": "worker_", "format": "json"},
                     timeout=5)
    out = {}
    for s in r.json().get("stats", []):
        name = s.get("name", "")
        if name.startswith("listener.") and name.endswith(".downstream_cx_total") and "worker_" in name:
            out[name.split(".")[-2]] = s["value"]
    return out


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def issuer():
    return Issuer("https://issuer.dpop.test", algs=("ES256",))


def make_policy(issuer, dpop: dict | None = None, schemes=("DPoP", "Bearer"), name="dpop-e2e"):
    p = {
        "api": {"name": name, "audience": AUD},
        "issuers": [{"issuer": issuer.iss, "jwks": issuer.jwks()}],
        "token": {"schemes": list(schemes)},
        "routes": [{"path_prefix": "/fhir/metadata", "methods": ["GET"], "require": "none"}],
    }
    if dpop is not None:
        p["dpop"] = dpop
    return p


@pytest.fixture(scope="module")
def envoy(upstream, issuer):
    # Three workers: replay must be caught across worker threads.
    with Envoy(make_policy(issuer, {}), upstream.port, filters=["token", "dpop"], concurrency=3) as e:
        yield e


def bound_token(issuer, jkt: str | None, **claims) -> str:
    if jkt is not None:
        claims["cnf"] = {"jkt": jkt}
    return issuer.token("ES256", aud=AUD, **claims)


def issuer_private(issuer) -> dict:
    k = issuer.keys["ES256"]
    return {"issuer_private_jwk": k.as_dict(private=True), "alg": "ES256", "kid": k.kid}


def node_token_claims(issuer) -> dict:
    c = issuer.claims(aud=AUD)
    return c


# ---------------------------------------------------------------- allowed: independent clients, each FAPI alg

@pytest.mark.parametrize("alg", ["ES256", "PS256", "Ed25519"])
def test_npm_dpop_client_with_jose_token_each_alg(envoy, issuer, upstream, alg):
    url = envoy.url + "/fhir/Patient/1"
    out = node_client({"alg": alg, "token": {**issuer_private(issuer), "claims": node_token_claims(issuer)},
                       "proofs": [{"htm": "GET", "htu": url}]})
    header = json.loads(base64.urlsafe_b64decode(out["proofs"][0].split(".")[0] + "=="))
    assert header["alg"] == alg  # npm `dpop` writes `Ed25519` for EdDSA (docs/checks.md §2.4)
    r = envoy.get("/fhir/Patient/1", dpop_headers(out["access_token"], out["proofs"][0]))
    assert r.status_code == 200, r.text
    assert upstream.requests[-1]["path"] == "/fhir/Patient/1"
    assert "dpop-nonce" not in r.headers  # nonces are off in this policy


@pytest.mark.parametrize("alg", ["ES256", "PS256", "EdDSA"])
def test_requests_oauth2client_dpop_key_each_alg(envoy, issuer, alg):
    key = DPoPKey.generate(alg=alg)
    jkt = key.private_key.public_jwk().thumbprint()
    token = bound_token(issuer, jkt)
    url = envoy.url + "/fhir/Observation?patient=1&code=x"
    # htu without the query (RFC 9449 §4.2); the request carries one.
    proof = str(key.proof(htm="GET", htu=envoy.url + "/fhir/Observation", ath=ath(token)))
    r = requests.get(url, headers=dpop_headers(token, proof), timeout=10)
    assert r.status_code == 200, r.text


def test_public_route_needs_no_proof(envoy):
    r = envoy.get("/fhir/metadata")
    assert r.status_code == 200


# ---------------------------------------------------------------- every §2 check: denied and allowed

CHECKS = [
    # name, how to build, expected (status, reason or None for allowed, error attr)
    ("§2.1 allowed: header name in another case", "dpop_case", None),
    ("§2.1 no DPoP header", "no_header", ("dpop_missing", "invalid_dpop_proof")),
    ("§2.1 two DPoP headers", "two_headers", ("dpop_multiple", "invalid_dpop_proof")),
    ("§2.1 not a JWS", "garbage", ("dpop_malformed", "invalid_dpop_proof")),
    ("§2.1 crit header", "crit", ("dpop_malformed", "invalid_dpop_proof")),
    ("§2.2 no jti", "no_jti", ("dpop_missing_member", "invalid_dpop_proof")),
    ("§2.2 no ath at the RS", "no_ath", ("dpop_missing_member", "invalid_dpop_proof")),
    ("§2.3 typ JWT", "typ_jwt", ("dpop_bad_typ", "invalid_dpop_proof")),
    ("§2.4 alg none", "alg_none", ("dpop_alg_not_allowed", "invalid_dpop_proof")),
    ("§2.4 alg HS256", "alg_hs256", ("dpop_alg_not_allowed", "invalid_dpop_proof")),
    ("§2.4 alg RS256 (valid RSA signature, not allowed)", "alg_rs256", ("dpop_alg_not_allowed", "invalid_dpop_proof")),
    ("§2.5 private key in jwk", "private_jwk", ("dpop_private_key", "invalid_dpop_proof")),
    ("§2.6 signed by another key", "other_signer", ("dpop_bad_signature", "invalid_dpop_proof")),
    ("§2.7 htm POST on a GET", "htm", ("dpop_htm_mismatch", "invalid_dpop_proof")),
    ("§2.8 htu other path", "htu_path", ("dpop_htu_mismatch", "invalid_dpop_proof")),
    ("§2.8 htu other host", "htu_host", ("dpop_htu_mismatch", "invalid_dpop_proof")),
    ("§2.8 allowed: htu upper-case host, default-free port, query and fragment", "htu_normalised", None),
    ("§2.9 iat 2 minutes old", "iat_old", ("dpop_iat_window", "invalid_dpop_proof")),
    ("§2.9 allowed: iat 45 s old", "iat_recent", None),
    ("§2.9 iat 1 minute ahead", "iat_future", ("dpop_iat_window", "invalid_dpop_proof")),
    ("§2.11 ath of another token", "ath_other", ("dpop_ath_mismatch", "invalid_dpop_proof")),
    ("§2.12 token bound to another key", "jkt_other", ("dpop_jkt_mismatch", "invalid_token")),
    ("§2.16 allowed: unknown header member and claim", "unknown_members", None),
]


def build_case(kind: str, client: JoseProofs, issuer, url: str):
    """Returns (token, list of (header, value))."""
    token = bound_token(issuer, client.jkt)
    now = int(time.time())
    p = lambda **kw: client.proof("GET", url, token, **kw)  # noqa: E731
    auth = ("Authorization", f"DPoP {token}")
    if kind == "dpop_case":
        return token, [auth, ("DpOp", p())]
    if kind == "no_header":
        return token, [auth]
    if kind == "two_headers":
        return token, [auth, ("DPoP", p()), ("DPoP", p())]
    if kind == "garbage":
        return token, [auth, ("DPoP", "not.a-jws")]
    if kind == "crit":
        return token, [auth, ("DPoP", p(header={"crit": ["x-ext"], "x-ext": 1}))]
    if kind == "no_jti":
        return token, [auth, ("DPoP", p(drop=("jti",)))]
    if kind == "no_ath":
        return token, [auth, ("DPoP", client.proof("GET", url, None))]
    if kind == "typ_jwt":
        return token, [auth, ("DPoP", p(header={"typ": "JWT"}))]
    if kind in ("alg_none", "alg_hs256"):
        alg = "none" if kind == "alg_none" else "HS256"
        claims = {"jti": uuid.uuid4().hex, "htm": "GET", "htu": url, "iat": now, "ath": ath(token)}
        sig = b"" if alg == "none" else b"\x01" * 32
        proof = raw_jws({"typ": "dpop+jwt", "alg": alg, "jwk": client.jwk}, claims, sig)
        return token, [auth, ("DPoP", proof)]
    if kind == "alg_rs256":
        rsa = JoseProofs("RS256")
        tok = bound_token(issuer, rsa.jkt)
        return tok, [("Authorization", f"DPoP {tok}"), ("DPoP", rsa.proof("GET", url, tok))]
    if kind == "private_jwk":
        return token, [auth, ("DPoP", p(header={"jwk": client.key.as_dict(private=True)}))]
    if kind == "other_signer":
        other = JoseProofs(client.alg)
        return token, [auth, ("DPoP", p(sign_with=other.key))]
    if kind == "htm":
        return token, [auth, ("DPoP", client.proof("POST", url, token))]
    if kind == "htu_path":
        return token, [auth, ("DPoP", client.proof("GET", url + "/other", token))]
    if kind == "htu_host":
        return token, [auth, ("DPoP", client.proof("GET", url.replace("127.0.0.1", "localhost"), token))]
    if kind == "htu_normalised":
        u = url.replace("http://", "HTTP://").replace("/fhir/Patient", "/fhir/%50atient") + "?q=1#frag"
        return token, [auth, ("DPoP", client.proof("GET", u, token))]
    if kind == "iat_old":
        return token, [auth, ("DPoP", p(claims={"iat": now - 120}))]
    if kind == "iat_recent":
        return token, [auth, ("DPoP", p(claims={"iat": now - 45}))]
    if kind == "iat_future":
        return token, [auth, ("DPoP", p(claims={"iat": now + 60}))]
    if kind == "ath_other":
        return token, [auth, ("DPoP", p(claims={"ath": ath(token + "x")}))]
    if kind == "jkt_other":
        tok = bound_token(issuer, JoseProofs("ES256").jkt)
        return tok, [("Authorization", f"DPoP {tok}"), ("DPoP", client.proof("GET", url, tok))]
    if kind == "unknown_members":
        return token, [auth, ("DPoP", p(header={"x-vendor": {"a": [1]}}, claims={"x-trace": "abc", "nbf": 1}))]
    raise AssertionError(kind)


# Cases that do not depend on the proof key run once; the others with every FAPI alg.
KEY_INDEPENDENT = ("alg_none", "alg_hs256", "alg_rs256", "garbage", "no_header", "two_headers")
CHECK_PARAMS = [pytest.param(alg, *c, id=f"{c[0]} [{alg}]") for c in CHECKS
                for alg in (("ES256",) if c[1] in KEY_INDEPENDENT else ("ES256", "PS256", "EdDSA"))]


@pytest.mark.parametrize("alg,name,kind,expected", CHECK_PARAMS)
def test_each_check(envoy, issuer, alg, name, kind, expected):
    client = JoseProofs(alg)
    path = "/fhir/Patient/7"
    _, headers = build_case(kind, client, issuer, envoy.url + path)
    before = envoy.counter(f"dpop.denied.{expected[0]}") if expected else envoy.counter("dpop.allowed")
    status, resp_headers, body = raw_get(envoy.port, path, headers)
    if expected is None:
        assert status == 200, (name, body)
        assert envoy.counter("dpop.allowed") == before + 1
        return
    code, error = expected
    assert status == 401, (name, status, body)
    doc = json.loads(body)
    assert doc["resourceType"] == "OperationOutcome"
    assert doc["issue"][0]["details"]["coding"][0]["code"] == code, (name, body)
    assert resp_headers["content-type"] == "application/fhir+json"
    www = resp_headers["www-authenticate"]
    assert www == f'DPoP error="{error}", {ALGS}', www
    assert envoy.counter(f"dpop.denied.{code}") == before + 1


def test_bearer_downgrade_is_refused(envoy, issuer):
    # §2.14 / RFC 9449 §7.2: a DPoP-bound token with the Bearer scheme (the token filter refuses
    # it; the DPoP filter also refuses unbound Bearer tokens because this policy requires DPoP).
    client = JoseProofs("ES256")
    bound = bound_token(issuer, client.jkt)
    r = envoy.get("/fhir/Patient/1", {"Authorization": f"Bearer {bound}",
                                      "DPoP": client.proof("GET", envoy.url + "/fhir/Patient/1", bound)})
    # Refused by the token filter, which answers in the scheme the client used.
    assert_denied(r, "bearer_downgrade", error=None)
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    before = envoy.counter("dpop.denied.bearer_downgrade")
    unbound = bound_token(issuer, None)
    r = envoy.get("/fhir/Patient/1", {"Authorization": f"Bearer {unbound}"})
    assert_denied(r, "bearer_downgrade", "invalid_token")
    assert envoy.counter("dpop.denied.bearer_downgrade") == before + 1
    # DPoP scheme but the token is not bound: nothing to check the proof key against.
    r = envoy.get("/fhir/Patient/1", {"Authorization": f"DPoP {unbound}",
                                      "DPoP": client.proof("GET", envoy.url + "/fhir/Patient/1", unbound)})
    assert_denied(r, "token_not_dpop_bound", "invalid_token")


# ---------------------------------------------------------------- replay across connections and workers

def test_replay_refused_across_connections_and_worker_threads(envoy, issuer):
    client = JoseProofs("ES256")
    token = bound_token(issuer, client.jkt)
    path = "/fhir/Patient/9"
    proof = client.proof("GET", envoy.url + path, token)
    headers = [("Authorization", f"DPoP {token}"), ("DPoP", proof)]
    before = worker_connections(envoy)
    status, _, body = raw_get(envoy.port, path, headers)
    assert status == 200, body
    after_first = worker_connections(envoy)
    first_worker = [w for w, n in after_first.items() if n > before.get(w, 0)]
    assert len(first_worker) == 1, (before, after_first)
    # Replays on fresh connections until other workers have taken some (kernel spreads them).
    replays = 0
    while replays < 60:
        status, _, body = raw_get(envoy.port, path, headers)
        replays += 1
        assert status == 401, body
        assert json.loads(body)["issue"][0]["details"]["coding"][0]["code"] == "dpop_replay"
        now = worker_connections(envoy)
        others = [w for w, n in now.items() if w not in first_worker and n > after_first.get(w, 0)]
        if replays >= 6 and others:
            break
    assert others, f"all {replays} replay connections went to {first_worker}: {worker_connections(envoy)}"


def test_concurrent_replay_burst_accepts_exactly_one(envoy, issuer):
    client = JoseProofs("EdDSA")
    token = bound_token(issuer, client.jkt)
    path = "/fhir/Patient/10"
    proof = client.proof("GET", envoy.url + path, token)
    headers = [("Authorization", f"DPoP {token}"), ("DPoP", proof)]
    n = 12
    barrier = threading.Barrier(n)
    results = []

    def send():
        barrier.wait()
        status, _, body = raw_get(envoy.port, path, headers)
        results.append((status, body))

    threads = [threading.Thread(target=send) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == n
    ok = [r for r in results if r[0] == 200]
    assert len(ok) == 1, [r[0] for r in results]
    for status, body in results:
        if status != 200:
            assert status == 401 and b"dpop_replay" in body, body


# ---------------------------------------------------------------- server nonces

@pytest.fixture(scope="module")
def nonce_envoy(upstream, issuer):
    p = make_policy(issuer, {"nonce": {"enabled": True, "secret": NONCE_SECRET, "window_seconds": 60}},
                    name="dpop-nonce-e2e")
    with Envoy(p, upstream.port, filters=["token", "dpop"], concurrency=2) as e:
        yield e


def test_nonce_challenge_and_retry_npm_client(nonce_envoy, issuer):
    url = nonce_envoy.url + "/fhir/Patient/1"
    first = node_client({"alg": "ES256", "token": {**issuer_private(issuer), "claims": node_token_claims(issuer)},
                         "proofs": [{"htm": "GET", "htu": url}]})
    r = nonce_envoy.get("/fhir/Patient/1", dpop_headers(first["access_token"], first["proofs"][0]))
    assert_denied(r, "use_dpop_nonce", "use_dpop_nonce")
    assert ALGS in r.headers["www-authenticate"]
    nonce = r.headers["dpop-nonce"]
    # The client retries with the server's nonce (same key, same token).
    again = node_client({"alg": "ES256", "key": {"private_jwk": first["private_jwk"], "public_jwk": first["public_jwk"]},
                         "access_token": first["access_token"], "proofs": [{"htm": "GET", "htu": url, "nonce": nonce}]})
    r = nonce_envoy.get("/fhir/Patient/1", dpop_headers(first["access_token"], again["proofs"][0]))
    assert r.status_code == 200, r.text
    # A fresh nonce is offered on success too (RFC 9449 §9).
    assert r.headers.get("dpop-nonce")


def test_nonce_challenge_and_retry_python_client(nonce_envoy, issuer):
    key = DPoPKey.generate(alg="PS256")
    token = bound_token(issuer, key.private_key.public_jwk().thumbprint())
    htu = nonce_envoy.url + "/fhir/Encounter"
    r = requests.get(htu, headers=dpop_headers(token, str(key.proof("GET", htu, ath=ath(token)))), timeout=10)
    assert_denied(r, "use_dpop_nonce", "use_dpop_nonce")
    nonce = r.headers["dpop-nonce"]
    r = requests.get(htu, headers=dpop_headers(token, str(key.proof("GET", htu, ath=ath(token), nonce=nonce))),
                     timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers.get("dpop-nonce")


def test_nonce_that_is_not_ours_is_refused(nonce_envoy, issuer):
    client = JoseProofs("ES256")
    token = bound_token(issuer, client.jkt)
    url = nonce_envoy.url + "/fhir/Patient/2"
    for bad in ("eyJ7S_zG.eyJH0-Z.HX4w-7v", b64(b"\x00" * 24)):
        r = nonce_envoy.get("/fhir/Patient/2", dpop_headers(token, client.proof("GET", url, token,
                                                                                 claims={"nonce": bad})))
        assert_denied(r, "use_dpop_nonce", "use_dpop_nonce")
    # Any invalid proof also carries a fresh nonce, but keeps its own error.
    r = nonce_envoy.get("/fhir/Patient/2", dpop_headers(token, client.proof("POST", url, token)))
    assert_denied(r, "dpop_htm_mismatch")
    assert r.headers.get("dpop-nonce")


# ---------------------------------------------------------------- htu behind a gateway

@pytest.fixture(scope="module")
def gateway_envoy(upstream, issuer):
    p = make_policy(issuer, {"public_origins": ["https://fhir.example.org"], "stripped_path_prefix": "/api/fhir"},
                    name="dpop-gw-e2e")
    with Envoy(p, upstream.port, filters=["token", "dpop"]) as e:
        yield e


def test_htu_with_gateway_public_origin_and_stripped_prefix(gateway_envoy, issuer):
    key = DPoPKey.generate(alg="ES256")
    token = bound_token(issuer, key.private_key.public_jwk().thumbprint())
    public = "https://fhir.example.org/api/fhir/Patient/5"
    # The gateway stripped `/api/fhir` and sent the request to the sidecar's own authority.
    cases = [
        ("public URI the client used", public, 200),
        ("public URI, other letter case and default port", "HTTPS://FHIR.example.org:443/api/fhir/Patient/5", 200),
        ("internal URI the sidecar sees", gateway_envoy.url + "/Patient/5", 401),
        ("public origin without the prefix", "https://fhir.example.org/Patient/5", 401),
        ("another origin", "https://evil.example.org/api/fhir/Patient/5", 401),
    ]
    for name, htu, want in cases:
        r = gateway_envoy.get("/Patient/5", dpop_headers(token, str(key.proof("GET", htu, ath=ath(token)))))
        assert r.status_code == want, (name, r.text)
        if want == 401:
            assert reason(r) == "dpop_htu_mismatch", name


def test_forwarded_headers_are_not_trusted_by_default(gateway_envoy, issuer):
    key = DPoPKey.generate(alg="ES256")
    token = bound_token(issuer, key.private_key.public_jwk().thumbprint())
    htu = "https://evil.example.org/api/fhir/Patient/5"
    h = dpop_headers(token, str(key.proof("GET", htu, ath=ath(token))))
    h.update({"X-Forwarded-Host": "evil.example.org", "X-Forwarded-Proto": "https"})
    r = gateway_envoy.get("/Patient/5", h)
    assert_denied(r, "dpop_htu_mismatch")


# ---------------------------------------------------------------- RFC 8705 certificate-bound tokens

def _certs(tmp: Path) -> dict:
    """A CA, a server certificate for 127.0.0.1 and two client certificates (cryptography)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(k, path):
        path.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("e2e CA")).issuer_name(name("e2e CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    out = {"ca": tmp / "ca.pem"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def leaf(cn, server):
        k = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject).public_key(k.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1)))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
        c = b.sign(ca_key, hashes.SHA256())
        cert_path, key_path = tmp / f"{cn}.pem", tmp / f"{cn}.key"
        cert_path.write_bytes(c.public_bytes(serialization.Encoding.PEM))
        write_key(k, key_path)
        return {"cert": str(cert_path), "key": str(key_path),
                "x5t": b64(hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).digest())}

    out["server"] = leaf("server", True)
    out["alice"] = leaf("alice", False)
    out["bob"] = leaf("bob", False)
    return out


@pytest.fixture(scope="module")
def mtls(upstream, issuer, tmp_path_factory):
    certs = _certs(tmp_path_factory.mktemp("certs"))
    # RFC 8705 tokens travel as Bearer; DPoP is not demanded on this API.
    p = make_policy(issuer, {"required": False}, schemes=("Bearer", "DPoP"), name="dpop-mtls-e2e")
    tls = {"args": (certs["server"]["cert"], certs["server"]["key"], str(certs["ca"]))}
    with Envoy(p, upstream.port, filters=["token", "dpop"], tls=tls) as e:
        yield e, certs


def test_mtls_bound_token_with_real_client_certificate(mtls, issuer):
    envoy, certs = mtls
    token = issuer.token("ES256", aud=AUD, cnf={"x5t#S256": certs["alice"]["x5t"]})
    ca = str(certs["ca"])
    url = envoy.url + "/fhir/Patient/1"
    h = {"Authorization": f"Bearer {token}"}
    cases = [
        ("alice's certificate: the bound one", (certs["alice"]["cert"], certs["alice"]["key"]), 200, None),
        ("bob's certificate", (certs["bob"]["cert"], certs["bob"]["key"]), 401, "mtls_x5t_mismatch"),
        ("no client certificate", None, 401, "mtls_cert_missing"),
    ]
    for name, cert, want, code in cases:
        r = requests.get(url, headers=h, cert=cert, verify=ca, timeout=10)
        assert r.status_code == want, (name, r.text)
        if code:
            assert reason(r) == code, name
            assert 'DPoP error="invalid_token"' in r.headers["www-authenticate"], name
    # An unbound token still passes here (DPoP not required, no cnf).
    plain = issuer.token("ES256", aud=AUD)
    r = requests.get(url, headers={"Authorization": f"Bearer {plain}"}, cert=None, verify=ca, timeout=10)
    assert r.status_code == 200, r.text


def test_mtls_and_dpop_bound_token_needs_both(mtls, issuer):
    envoy, certs = mtls
    client = JoseProofs("ES256")
    token = issuer.token("ES256", aud=AUD, cnf={"x5t#S256": certs["alice"]["x5t"], "jkt": client.jkt})
    ca = str(certs["ca"])
    url = envoy.url + "/fhir/Patient/1"
    alice = (certs["alice"]["cert"], certs["alice"]["key"])
    r = requests.get(url, headers=dpop_headers(token, client.proof("GET", url, token)), cert=alice, verify=ca,
                     timeout=10)
    assert r.status_code == 200, r.text
    r = requests.get(url, headers=dpop_headers(token, client.proof("GET", url, token)), verify=ca, timeout=10)
    assert reason(r) == "mtls_cert_missing"
    r = requests.get(url, headers=dpop_headers(token, None), cert=alice, verify=ca, timeout=10)
    assert reason(r) == "dpop_missing"


# ---------------------------------------------------------------- configuration

def test_bad_dpop_policy_is_refused_at_load(upstream, issuer):
    p = make_policy(issuer, {"nonce": {"secret": "dG9vLXNob3J0"}}, name="dpop-bad-e2e")
    with pytest.raises((RuntimeError, TimeoutError)) as e:
        with Envoy(p, upstream.port, filters=["dpop"]):
            pass
    assert "dpop.nonce.secret" in str(e.value)


def test_forwarded_headers_used_only_when_the_policy_trusts_them(upstream, issuer):
    p = make_policy(issuer, {"trust_forwarded_headers": True, "public_origins": ["https://fhir.example.org"]},
                    name="dpop-fwd-e2e")
    key = DPoPKey.generate(alg="EdDSA")
    token = bound_token(issuer, key.private_key.public_jwk().thumbprint())
    public = "https://fhir.example.org/api/fhir/Patient/5"
    fwd = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "fhir.example.org", "X-Forwarded-Prefix": "/api/fhir"}
    with Envoy(p, upstream.port, filters=["token", "dpop"]) as e:
        cases = [
            ("trusted gateway headers name the public URI", fwd, public, 200),
            ("forwarded host not among the public origins", {**fwd, "X-Forwarded-Host": "evil.example.org"},
             "https://evil.example.org/api/fhir/Patient/5", 401),
            ("no forwarded prefix: the path must match as seen", {k: v for k, v in fwd.items() if "Prefix" not in k},
             public, 401),
        ]
        for name, extra, htu, want in cases:
            h = dpop_headers(token, str(key.proof("GET", htu, ath=ath(token))))
            h.update(extra)
            r = e.get("/Patient/5", h)
            assert r.status_code == want, (name, r.text)
            if want == 401:
                assert reason(r) == "dpop_htu_mismatch", name


def test_full_replay_cache_fails_closed(upstream, issuer):
    # A deliberately tiny cache (peak 1 proof/s: one slot of 64 entries per 10 s bucket) and
    # proofs that all carry one `iat` (one bucket): the 65th live proof is refused with 503
    # rather than accepted unrecorded; replays of the recorded ones stay refused.
    p = make_policy(issuer, {"replay_cache": {"peak_proofs_per_second": 1, "max_live_proofs": 1024,
                                              "max_live_proofs_per_key": 1024}}, name="dpop-full-e2e")
    client = JoseProofs("ES256")
    token = bound_token(issuer, client.jkt)
    with Envoy(p, upstream.port, filters=["token", "dpop"], concurrency=2) as e:
        url = e.url + "/fhir/Patient/3"
        iat = int(time.time())
        proofs = [client.proof("GET", url, token, claims={"iat": iat}) for _ in range(65)]
        with requests.Session() as s:
            for i, proof in enumerate(proofs[:64]):
                r = s.get(url, headers=dpop_headers(token, proof), timeout=10)
                assert r.status_code == 200, (i, r.text)
            r = s.get(url, headers=dpop_headers(token, proofs[64]), timeout=10)
        assert r.status_code == 503, r.text
        assert reason(r) == "dpop_replay_cache_full"
        assert r.headers.get("retry-after") == "5" and "www-authenticate" not in r.headers
        assert_denied(e.get("/fhir/Patient/3", dpop_headers(token, proofs[0])), "dpop_replay")
        assert e.counter("dpop.denied.dpop_replay_cache_full") == 1


def _mint(args):
    """Worker process: `n` ES256 proofs by joserfc for one key, all with the same `iat`."""
    jwk_dict, url, token, iat, start, n = args
    key = ECKey.import_key(jwk_dict)
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
    out = []
    for i in range(start, start + n):
        claims = {"jti": f"cap-{i}", "htm": "GET", "htu": url, "iat": iat, "ath": ath(token)}
        out.append(jws.serialize_compact(header, json.dumps(claims).encode(), key, algorithms=["ES256"]))
    return out


def _keepalive(port: int, host: str, path: str, token: str, proofs: list[str]) -> dict[int, int]:
    """Sends one GET per proof over one keep-alive HTTP/1.1 connection, one at a time (a raw
    socket: cheaper than a client library, so Envoy does most of the work); returns
    {status: count}."""
    import socket
    counts: dict[int, int] = {}
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        buf = b""
        for p in proofs:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: DPoP {token}\r\n"
                         f"DPoP: {p}\r\n\r\n".encode())
            while b"\r\n\r\n" not in buf:
                data = sock.recv(65536)
                assert data, "connection closed"
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            code = int(lines[0].split()[1])
            length = next(int(v) for k, _, v in (ln.partition(b":") for ln in lines[1:])
                          if k.strip().lower() == b"content-length")
            while len(buf) < length:
                data = sock.recv(65536)
                assert data, "connection closed"
                buf += data
            buf = buf[length:]
            counts[code] = counts.get(code, 0) + 1
    return counts


def test_default_cache_holds_more_live_proofs_than_the_old_capacity(issuer, workers=2):
    # RFC 9449 §11.1: the old default refused every proof beyond 65,536 live ones.
    # 66,000 distinct proofs (all live: one `iat`, the window is 60 s back and 10 s ahead)
    # through real Envoy with the default cache: every one answered 200, then the oldest one
    # is a replay.
    # Only the per-key budget is raised: all proofs come from one key. Two worker threads
    # share the cache (the native tests cover one and two writers at the sized peak).
    from concurrent.futures import ProcessPoolExecutor

    from harness import EnvoyProcess, free_port, render, build_wasm

    n = 66_000
    p = make_policy(issuer, {"replay_cache": {"max_live_proofs_per_key": 4_194_304}},
                    name=f"dpop-capacity-e2e-{workers}")
    port, admin = free_port(), free_port()
    cfg = render.render(p, ["token", "dpop"], str(build_wasm()), port, 9, admin, direct_response=True)
    client = JoseProofs("ES256")
    token = bound_token(issuer, client.jkt)
    host = f"127.0.0.1:{port}"
    url = f"http://{host}/fhir/Patient/1"
    iat = int(time.time()) + 8  # the window's 10 s ahead: live until iat + 60
    parts = 4
    with ProcessPoolExecutor(max_workers=2) as pool:
        chunks = list(pool.map(_mint, [(client.key.as_dict(private=True), url, token, iat, k * (n // parts),
                                        n // parts) for k in range(parts)]))
    proofs = [pr for c in chunks for pr in c]
    assert len(set(proofs)) == n
    with EnvoyProcess(cfg, port, admin, "envoy", workers) as e:
        # Four connections (Envoy spreads them over its worker threads).
        conns = 4
        results: list[dict[int, int]] = [{} for _ in range(conns)]

        def send(c):
            results[c] = _keepalive(port, host, "/fhir/Patient/1", token, proofs[c::conns])

        threads = [threading.Thread(target=send, args=(c,)) for c in range(conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        total: dict[int, int] = {}
        for r in results:
            for k, v in r.items():
                total[k] = total.get(k, 0) + v
        assert total == {200: n}, total
        assert int(time.time()) <= iat + 60, "the run outlived the proofs' window; nothing was checked"
        r = requests.get(url, headers=dpop_headers(token, proofs[0]), timeout=10)
        assert_denied(r, "dpop_replay")
        assert e.counter("dpop.denied.dpop_replay_cache_full") == 0


def test_one_key_flooding_does_not_refuse_other_clients(upstream, issuer):
    # Fairness: one token floods distinct valid proofs, all in one bucket (one `iat`, the
    # attacker's best aim); a small cache (peak 20/s: 256 entries per bucket) that the flood
    # alone would fill. The flooder gets 429 with Retry-After once over its budget (70 live
    # proofs = 10 per bucket per worker) and its refused proofs are not recorded; another
    # client, before, during and after the flood, is answered 200 every time.
    p = make_policy(issuer, {"replay_cache": {"peak_proofs_per_second": 20, "max_live_proofs": 4096,
                                              "max_live_proofs_per_key": 70}}, name="dpop-fair-e2e")
    flooder, other = JoseProofs("ES256"), JoseProofs("ES256")
    t_flood, t_other = bound_token(issuer, flooder.jkt), bound_token(issuer, other.jkt)
    with Envoy(p, upstream.port, filters=["token", "dpop"], concurrency=2) as e:
        url = e.url + "/fhir/Patient/7"
        iat = int(time.time())
        flood = [flooder.proof("GET", url, t_flood, claims={"iat": iat}) for _ in range(300)]
        answers: dict[int, int] = {}
        others = []
        with requests.Session() as fs, requests.Session() as os_:
            def other_call():
                r = os_.get(url, headers=dpop_headers(t_other, other.proof("GET", url, t_other)), timeout=10)
                others.append((r.status_code, r.text[:200]))

            other_call()
            for i, proof in enumerate(flood):
                r = fs.get(url, headers=dpop_headers(t_flood, proof), timeout=10)
                answers[r.status_code] = answers.get(r.status_code, 0) + 1
                if r.status_code == 429:
                    assert reason(r) == "dpop_key_over_budget"
                    assert 1 <= int(r.headers["retry-after"]) <= 10
                    assert "www-authenticate" not in r.headers
                if i % 60 == 0:
                    other_call()
            other_call()
        assert [s for s, _ in others] == [200] * len(others), others
        assert set(answers) == {200, 429}, answers
        assert 1 <= answers[200] <= 20, answers  # 10 per bucket on each worker at most
        assert e.counter("dpop.denied.dpop_key_over_budget") == answers[429]
        assert e.counter("dpop.denied.dpop_replay_cache_full") == 0


# ---------------------------------------------------------------- behind a real edge gateway

# The sidecar forwards the gateway's XFCC. In Istio the gateway -> sidecar hop is mesh mTLS
# and the sidecar's `APPEND_FORWARD` keeps XFCC; this test hop is plain HTTP, where
# `APPEND_FORWARD` drops the header, so `ALWAYS_FORWARD_ONLY` stands in for it. Envoy's
# default (`SANITIZE`) would drop it before the filters see it.
SIDECAR_FORWARDS_XFCC = "ALWAYS_FORWARD_ONLY"


@pytest.mark.parametrize("origin_rule", ["public_origins", "trusted_forwarded_headers"])
def test_behind_gateway_public_htu_and_xfcc_certificate_binding(upstream, issuer, tmp_path, origin_rule):
    from harness import Gateway, Pki, free_port

    pki = Pki(tmp_path)
    gw_port = free_port()
    public = f"https://127.0.0.1:{gw_port}"
    dpop = {"stripped_path_prefix": "/api", "mtls": {"client_cert_source": "xfcc"}}
    if origin_rule == "public_origins":
        dpop["public_origins"] = [public]
    else:
        dpop["trust_forwarded_headers"] = True  # the gateway sets X-Forwarded-Proto/-Host
    p = make_policy(issuer, dpop, name=f"dpop-gw-chain-{origin_rule}")
    with Envoy(p, upstream.port, filters=["token", "dpop"], forward_client_cert=SIDECAR_FORWARDS_XFCC) as sidecar:
        gw = Gateway(sidecar.port, pki, port=gw_port)
        try:
            client = JoseProofs("ES256")
            token = issuer.token("ES256", aud=AUD, cnf={"jkt": client.jkt, "x5t#S256": pki.client_x5t_s256})
            cert = (pki.client_cert, pki.client_key)
            url = public + "/api/fhir/Patient/1"

            def call(htu, cert=cert, extra=None):
                h = dpop_headers(token, client.proof("GET", htu, token))
                h.update(extra or {})
                return requests.get(url, headers=h, cert=cert, verify=pki.ca, timeout=10)

            r = call(url)
            assert r.status_code == 200, r.text
            seen = upstream.requests[-1]
            assert seen["path"] == "/fhir/Patient/1"  # the gateway stripped `/api`
            assert "Hash=" in seen["headers"]["x-forwarded-client-cert"]
            # The internal URI the sidecar sees is not what the client signed.
            assert reason(call(f"http://{seen['headers']['host']}/fhir/Patient/1")) == "dpop_htu_mismatch"
            # No client certificate: the gateway sends no XFCC, a forged one is dropped there.
            forged = {"x-forwarded-client-cert": f"Hash={'00' * 32}"}
            assert reason(call(url, cert=None)) == "mtls_cert_missing"
            assert reason(call(url, cert=None, extra=forged)) == "mtls_cert_missing"
        finally:
            gw.stop()
