"""`fapi-guard explain` agrees with Envoy: the same requests go to the CLI and to real Envoy
running the three filters in front of the sample FHIR API (tests/fhir_upstream/server.py),
and status, reason code and `WWW-Authenticate` must match for every case class: token,
DPoP, FHIR request, FHIR response (the CLI gets the upstream's body with --response).
The denials' `diagnostics` must match too (safe facts: expected `htu`, `exp` against the
clock, the unknown `kid`) and never carry the token or proof.

Tokens and proofs come from joserfc (harness.Issuer and a joserfc DPoP key), not our code.
"""
from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from joserfc import jws
from joserfc.jwk import ECKey

from harness import ROOT, Envoy, Issuer, JwksServer

import server as fhir_server  # tests/fhir_upstream/server.py (pytest.ini pythonpath)

pytestmark = pytest.mark.e2e

AUD = "explain-e2e"
ANNA, BJORN = "pat-anna", "pat-bjorn"
CLI = ROOT / "target" / "debug" / "fapi-guard"


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def cli() -> Path:
    subprocess.run(["cargo", "build", "-q", "-p", "fapi-guard"], cwd=ROOT, check=True, timeout=900)
    return CLI


@pytest.fixture(scope="module")
def upstream():
    httpd = fhir_server.serve("127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def issuer():
    return Issuer("https://issuer.test", algs=("ES256",))


def policy_for(issuer, keys: dict) -> dict:
    return {
        "api": {"name": "explain-e2e", "audience": AUD},
        "issuers": [{"issuer": issuer.iss, **keys}],
        "token": {"schemes": ["DPoP", "Bearer"]},
        "dpop": {"required": False},
        "routes": [{"path_prefix": "/fhir/metadata", "methods": ["GET"], "require": "none"}],
        "fhir": {"base_path": "/fhir", "resource_types": ["Patient", "Observation", "Condition", "Encounter"],
                 "max_request_body_bytes": 65536},
    }


@pytest.fixture(scope="module")
def stack(upstream, issuer, tmp_path_factory):
    policy = policy_for(issuer, {"jwks": issuer.jwks()})
    path = tmp_path_factory.mktemp("explain") / "policy.json"
    path.write_text(json.dumps(policy))
    with Envoy(policy, upstream.server_address[1]) as e:
        yield e, path, None


@pytest.fixture(scope="module")
def remote_stack(upstream, issuer, tmp_path_factory):
    """Keys from a jwks_uri (the token filter's fetch and unknown-kid refetch path)."""
    server = JwksServer(issuer.jwks())
    d = tmp_path_factory.mktemp("explain-remote")
    policy = policy_for(issuer, {"jwks_uri": server.uri, "jwks_cluster": "issuer_jwks",
                                 "jwks_min_refetch_seconds": 1})
    (d / "policy.json").write_text(json.dumps(policy))
    (d / "jwks.json").write_text(json.dumps(issuer.jwks()))
    with Envoy(policy, upstream.server_address[1]) as e:
        # Keys applied, not only requested: the fetch counter moves after the answer is read.
        deadline = time.time() + 15
        while e.counter("token.jwks.fetch_ok") == 0 and time.time() < deadline:
            time.sleep(0.1)
        assert e.counter("token.jwks.fetch_ok") >= 1, e.logs()[-2000:]
        yield e, d / "policy.json", d / "jwks.json"
    server.stop()


class Proofs:
    def __init__(self):
        self.key = ECKey.generate_key("P-256")
        self.jkt = self.key.thumbprint()

    def proof(self, htm: str, htu: str, token: str, **over) -> str:
        c = {"jti": uuid.uuid4().hex, "htm": htm, "htu": htu, "iat": int(time.time()),
             "ath": b64(hashlib.sha256(token.encode()).digest())}
        c.update(over)
        h = {"typ": "dpop+jwt", "alg": "ES256", "jwk": self.key.as_dict(private=False)}
        return jws.serialize_compact(h, json.dumps(c).encode(), self.key, algorithms=["ES256"])


def outcome(status: int, headers: dict, body: str) -> dict:
    try:
        b = json.loads(body)
    except ValueError:
        b = {}
    coding = b.get("issue", [{}])[0].get("details", {}).get("coding", [{}]) if b.get("resourceType") == "OperationOutcome" else [{}]
    diag = b.get("issue", [{}])[0].get("diagnostics") if b.get("resourceType") == "OperationOutcome" else None
    return {"status": status, "reason": coding[0].get("code"),
            "www": headers.get("www-authenticate"), "diagnostics": diag}


def via_envoy(envoy, method, path, headers) -> tuple[dict, requests.Response]:
    r = envoy.request(method, path, headers=headers)
    return outcome(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.text), r


def via_cli(cli, envoy, policy, method, path, headers, jwks=None, response=None, tmp=None) -> dict:
    args = [str(cli), "explain", "--policy", str(policy), "--request", f"{method} {path}",
            "--authority", f"127.0.0.1:{envoy.port}", "--scheme", "http", "--json"]
    for k, v in headers.items():
        args += ["--header", f"{k}: {v}"]
    if jwks:
        args += ["--jwks", str(jwks)]
    if response is not None:
        status, body = response
        f = tmp / f"resp-{uuid.uuid4().hex}.json"
        f.write_bytes(body)
        args += ["--response", str(f), "--response-status", str(status)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    t = json.loads(out.stdout)
    a = t["answer"]
    if a["forwarded"]:
        return {"status": a["status"] or 200, "reason": None, "www": None, "diagnostics": None}
    hdrs: dict = {}
    for k, v in a["headers"]:  # repeated headers folded as `requests` shows them
        hdrs[k] = f"{hdrs[k]}, {v}" if k in hdrs else v
    return outcome(a["status"], hdrs, a["body"])


def cases(issuer, envoy):
    """(name, class, method, path, headers) for every case class."""
    base = f"http://127.0.0.1:{envoy.port}"
    p = Proofs()
    tok = issuer.token(aud=AUD, scope="patient/*.rs", patient=ANNA, cnf={"jkt": p.jkt})
    obs_tok = issuer.token(aud=AUD, scope="patient/Observation.rs", patient=ANNA, cnf={"jkt": p.jkt})
    unbound = issuer.token(aud=AUD, scope="patient/*.rs", patient=ANNA)

    def dp(t, method, path, **over):
        htu = over.pop("htu", base + path.split("?")[0])
        return {"Authorization": f"DPoP {t}", "DPoP": p.proof(over.pop("htm", method), htu, t, **over)}

    yield "allowed own record", "fhir request", "GET", f"/fhir/Patient/{ANNA}", dp(tok, "GET", f"/fhir/Patient/{ANNA}")
    yield "public route", "token", "GET", "/fhir/metadata", {}
    # token
    yield "no token", "token", "GET", f"/fhir/Patient/{ANNA}", {}
    yield "token in query", "token", "GET", f"/fhir/Patient/{ANNA}?access_token=x", {}
    yield "garbage token", "token", "GET", f"/fhir/Patient/{ANNA}", {"Authorization": "DPoP not-a.jwt"}
    yield "basic scheme", "token", "GET", f"/fhir/Patient/{ANNA}", {"Authorization": "Basic dXNlcjpwdw=="}
    exp = issuer.token(aud=AUD, patient=ANNA, exp=int(time.time()) - 3600, cnf={"jkt": p.jkt})
    yield "expired", "token", "GET", f"/fhir/Patient/{ANNA}", dp(exp, "GET", f"/fhir/Patient/{ANNA}")
    wrong_aud = issuer.token(aud="someone-else", patient=ANNA, cnf={"jkt": p.jkt})
    yield "wrong audience", "token", "GET", f"/fhir/Patient/{ANNA}", dp(wrong_aud, "GET", f"/fhir/Patient/{ANNA}")
    other = Issuer.make_key("ES256", "rotated-kid-1")
    unknown = issuer.token(key=other, aud=AUD, patient=ANNA, cnf={"jkt": p.jkt})
    yield "unknown kid", "token", "GET", f"/fhir/Patient/{ANNA}", dp(unknown, "GET", f"/fhir/Patient/{ANNA}")
    bad_typ = issuer.token(header={"typ": "dpop+jwt"}, aud=AUD, patient=ANNA)
    yield "bad typ", "token", "GET", f"/fhir/Patient/{ANNA}", {"Authorization": f"Bearer {bad_typ}"}
    yield "bearer downgrade", "token", "GET", f"/fhir/Patient/{ANNA}", {"Authorization": f"Bearer {tok}"}
    # dpop
    yield "no proof", "dpop", "GET", f"/fhir/Patient/{ANNA}", {"Authorization": f"DPoP {tok}"}
    yield "wrong htu", "dpop", "GET", f"/fhir/Patient/{ANNA}", dp(tok, "GET", f"/fhir/Patient/{ANNA}", htu="https://other.example/fhir/Patient/x")
    yield "wrong htm", "dpop", "GET", f"/fhir/Patient/{ANNA}", dp(tok, "GET", f"/fhir/Patient/{ANNA}", htm="POST")
    yield "old iat", "dpop", "GET", f"/fhir/Patient/{ANNA}", dp(tok, "GET", f"/fhir/Patient/{ANNA}", iat=int(time.time()) - 600)
    yield "wrong ath", "dpop", "GET", f"/fhir/Patient/{ANNA}", dp(tok, "GET", f"/fhir/Patient/{ANNA}", ath=b64(b"x" * 32))
    yield "unbound bearer passes dpop", "dpop", "GET", f"/fhir/Patient/{ANNA}", {"Authorization": f"Bearer {unbound}"}
    # fhir request
    yield "other patient", "fhir request", "GET", f"/fhir/Patient/{BJORN}", dp(tok, "GET", f"/fhir/Patient/{BJORN}")
    yield "insufficient scope", "fhir request", "GET", f"/fhir/Patient/{ANNA}", dp(obs_tok, "GET", f"/fhir/Patient/{ANNA}")
    yield "search other patient", "fhir request", "GET", f"/fhir/Observation?patient={BJORN}", dp(tok, "GET", f"/fhir/Observation?patient={BJORN}")
    yield "own search", "fhir request", "GET", f"/fhir/Observation?patient={ANNA}", dp(tok, "GET", f"/fhir/Observation?patient={ANNA}")
    yield "unknown fhir path", "fhir request", "GET", "/fhir/NoSuchType/1", dp(tok, "GET", "/fhir/NoSuchType/1")


def upstream_answer(upstream, method, path):
    r = requests.request(method, f"http://127.0.0.1:{upstream.server_address[1]}{path}", timeout=10)
    return r.status_code, r.content


def test_cli_agrees_with_envoy_on_every_case_class(cli, stack, issuer, upstream, tmp_path):
    envoy, policy, _ = stack
    seen = set()
    for name, cls, method, path, headers in cases(issuer, envoy):
        got_envoy, resp = via_envoy(envoy, method, path, headers)
        # For allowed reads the CLI gets the upstream's answer (the response check's input).
        response = upstream_answer(upstream, method, path) if resp.status_code < 300 else None
        got_cli = via_cli(cli, envoy, policy, method, path, headers, response=response, tmp=tmp_path)
        if got_envoy["reason"] == "expired":
            # The clock in `diagnostics` may tick between the two.
            got_envoy["diagnostics"] = got_envoy["diagnostics"].split(" is ")[0]
            got_cli["diagnostics"] = got_cli["diagnostics"].split(" is ")[0]
        assert got_cli == got_envoy, f"{name}: CLI {got_cli} != Envoy {got_envoy}"
        token = headers.get("Authorization", " ").split(" ", 1)[-1]
        if got_envoy["diagnostics"] and len(token) > 20:
            assert token not in got_envoy["diagnostics"], name
        seen.add(cls)
    assert seen == {"token", "dpop", "fhir request"}


def test_cli_agrees_on_reads_decided_on_the_response(cli, stack, issuer, upstream, tmp_path):
    envoy, policy, _ = stack
    p = Proofs()
    tok = issuer.token(aud=AUD, scope="patient/*.rs", patient=ANNA, cnf={"jkt": p.jkt})
    base = f"http://127.0.0.1:{envoy.port}"
    bundle = upstream_answer(upstream, "GET", "/fhir/Observation")[1]
    ids = {e["resource"]["subject"]["reference"].split("/")[-1]: e["resource"]["id"]
           for e in json.loads(bundle)["entry"] if e["resource"]["resourceType"] == "Observation"}
    for who, want in ((ANNA, 200), (BJORN, 403)):
        path = f"/fhir/Observation/{ids[who]}"
        h = {"Authorization": f"DPoP {tok}", "DPoP": p.proof("GET", base + path, tok)}
        got_envoy, _ = via_envoy(envoy, "GET", path, h)
        got_cli = via_cli(cli, envoy, policy, "GET", path, h, response=upstream_answer(upstream, "GET", path),
                          tmp=tmp_path)
        assert got_envoy["status"] == want, got_envoy
        if want == 200:
            got_envoy = {**got_envoy, "reason": None, "www": None, "diagnostics": None}
        assert got_cli == got_envoy, f"{who}: CLI {got_cli} != Envoy {got_envoy}"


def test_cli_agrees_on_head_decided_like_get(cli, stack, issuer, upstream, tmp_path):
    """RFC 9110 §9.3.2: a HEAD is decided on the answer to the GET it mirrors, which the filter
    sends first; the CLI gets that GET's answer with --response. A HEAD answer has no body, so
    status and `WWW-Authenticate` are compared."""
    envoy, policy, _ = stack
    p = Proofs()
    tok = issuer.token(aud=AUD, scope="patient/*.rs", patient=ANNA, cnf={"jkt": p.jkt})
    base = f"http://127.0.0.1:{envoy.port}"
    bundle = upstream_answer(upstream, "GET", "/fhir/Observation")[1]
    ids = {e["resource"]["subject"]["reference"].split("/")[-1]: e["resource"]["id"]
           for e in json.loads(bundle)["entry"] if e["resource"]["resourceType"] == "Observation"}
    for who, want in ((ANNA, 200), (BJORN, 403)):
        path = f"/fhir/Observation/{ids[who]}"
        h = {"Authorization": f"DPoP {tok}", "DPoP": p.proof("HEAD", base + path, tok)}
        got_envoy, _ = via_envoy(envoy, "HEAD", path, h)
        got_cli = via_cli(cli, envoy, policy, "HEAD", path, h, response=upstream_answer(upstream, "GET", path),
                          tmp=tmp_path)
        assert got_envoy["status"] == want, got_envoy
        assert (got_cli["status"], got_cli["www"]) == (got_envoy["status"], got_envoy["www"]), (who, got_cli, got_envoy)
        if want == 403:
            assert got_cli["reason"] == "response_outside_grant"
    # Without the GET's answer the CLI says the HEAD is held, not forwarded.
    path = f"/fhir/Observation/{ids[ANNA]}"
    h = {"Authorization": f"DPoP {tok}", "DPoP": p.proof("HEAD", base + path, tok)}
    out = subprocess.run([str(cli), "explain", "--policy", str(policy), "--request", f"HEAD {path}",
                          "--authority", f"127.0.0.1:{envoy.port}", "--scheme", "http", "--json"]
                         + [a for k, v in h.items() for a in ("--header", f"{k}: {v}")],
                         capture_output=True, text=True, timeout=60)
    answer = json.loads(out.stdout)["answer"]
    assert not answer["forwarded"] and "GETs the same path" in answer["why"], answer


def test_cli_agrees_with_fetched_keys(cli, remote_stack, issuer, tmp_path):
    envoy, policy, jwks = remote_stack
    p = Proofs()
    base = f"http://127.0.0.1:{envoy.port}"
    path = f"/fhir/Patient/{ANNA}"
    good = issuer.token(aud=AUD, patient=ANNA, cnf={"jkt": p.jkt})
    unknown = issuer.token(key=Issuer.make_key("ES256", "never-published"), aud=AUD, patient=ANNA, cnf={"jkt": p.jkt})
    for tok, want in ((good, 200), (unknown, 401)):
        h = {"Authorization": f"DPoP {tok}", "DPoP": p.proof("GET", base + path, tok)}
        got_envoy, _ = via_envoy(envoy, "GET", path, h)
        got_cli = via_cli(cli, envoy, policy, "GET", path, h, jwks=jwks, tmp=tmp_path)
        assert got_envoy["status"] == want, got_envoy
        assert got_cli == got_envoy
    assert "kid `never-published`" in got_envoy["diagnostics"]
    # Without a JWKS the CLI says the keys were never loaded (Envoy's answer before the first fetch).
    h = {"Authorization": f"DPoP {good}", "DPoP": p.proof("GET", base + path, good)}
    assert via_cli(cli, envoy, policy, "GET", path, h, tmp=tmp_path)["reason"] == "jwks_unavailable"


def test_denials_carry_safe_facts_in_envoy(stack, issuer):
    """Envoy's own answers: the expected htu, exp against the proxy clock, the unknown kid."""
    envoy, _, _ = stack
    p = Proofs()
    base = f"http://127.0.0.1:{envoy.port}"
    path = f"/fhir/Patient/{ANNA}"
    tok = issuer.token(aud=AUD, patient=ANNA, cnf={"jkt": p.jkt})
    r = envoy.get(path + "?q=1", {"Authorization": f"DPoP {tok}", "DPoP": p.proof("GET", "https://x.example/y", tok)})
    d = r.json()["issue"][0]["diagnostics"]
    assert f"expected htu `{base}{path}`" in d, d
    exp_at = int(time.time()) - 3600
    old = issuer.token(aud=AUD, patient=ANNA, exp=exp_at, cnf={"jkt": p.jkt})
    r = envoy.get(path, {"Authorization": f"DPoP {old}", "DPoP": p.proof("GET", base + path, old)})
    d = r.json()["issue"][0]["diagnostics"]
    assert d.startswith(f"expired: exp {exp_at} is ") and "before the proxy clock" in d, d
    assert old not in r.text and ANNA not in d


def test_cli_shows_the_problem_json_body_envoy_sends(cli, upstream, issuer, tmp_path):
    """A REST API with `api.denial_format: problem+json` (RFC 9457): the CLI shows the same
    status, Content-Type, WWW-Authenticate and body, byte for byte, as Envoy sends."""
    p = Proofs()
    policy = {"api": {"name": "explain-rest", "audience": AUD, "denial_format": "problem+json"},
              "issuers": [{"issuer": issuer.iss, "jwks": issuer.jwks()}],
              "routes": [{"path": "/api/health", "methods": ["GET"], "require": "none"},
                         {"path_prefix": "/api/items", "require": "token",
                          "authz": {"scopes": {"all_of": ["items/read"]}}}],
              "unmatched": "deny"}
    path = tmp_path / "rest.json"
    path.write_text(json.dumps(policy))
    with Envoy(policy, upstream.server_address[1], filters=["token", "dpop"]) as e:
        base = f"http://127.0.0.1:{e.port}"
        tok = issuer.token(aud=AUD, scope="openid", cnf={"jkt": p.jkt})
        wrong_aud = issuer.token(aud="other", scope="items/read", cnf={"jkt": p.jkt})
        good = issuer.token(aud=AUD, scope="items/read", cnf={"jkt": p.jkt})
        cases = [("/api/items/1", {}),
                 ("/api/items/1", {"Authorization": f"DPoP {wrong_aud}"}),
                 ("/api/items/1", {"Authorization": f"DPoP {tok}"}),
                 ("/api/health/admin", {}),
                 ("/api/items/1", {"Authorization": f"DPoP {good}",
                                   "DPoP": p.proof("GET", f"{base}/api/items/2", good)})]
        codes = []
        for target, headers in cases:
            r = e.request("GET", target, headers=headers)
            args = [str(cli), "explain", "--policy", str(path), "--request", f"GET {target}",
                    "--authority", f"127.0.0.1:{e.port}", "--json"]
            for k, v in headers.items():
                args += ["--header", f"{k}: {v}"]
            out = subprocess.run(args, capture_output=True, text=True, timeout=60)
            a = json.loads(out.stdout)["answer"]
            hdrs = dict(a["headers"])
            assert (a["status"], hdrs["content-type"], hdrs.get("www-authenticate")) == (
                r.status_code, r.headers["content-type"], r.headers.get("www-authenticate")), target
            assert r.headers["content-type"] == "application/problem+json"
            assert a["body"] == r.text, f"{target}: CLI {a['body']} != Envoy {r.text}"
            body = r.json()
            assert body["type"] == f"urn:fapi-guard:reason:{body['code']}" and body["status"] == r.status_code
            codes.append(body["code"])
        assert codes == ["missing_token", "wrong_audience", "authz_missing_scope", "route_not_listed",
                         "dpop_htu_mismatch"], codes
