"""`scripts/demo.sh --policy P [--jwks J]` runs a policy unchanged: a FHIR API under `/r4`
(the sample API serves the policy's base), an https `jwks_uri` with its own path (answered
locally over plain HTTP with the JWKS file), printed requests built from that policy; with
the user's own keys it prints how to mint instead, or uses the user's token (--token) and
DPoP key (--dpop-key). Tokens and DPoP keys of the "user" come from joserfc. Fixed demo
ports: run alone, like tests/test_demo.py."""
import json
import subprocess

import pytest

from harness import ROOT, Issuer
from test_demo import printed_commands, reason_of, run_printed, running_demo

EXPECTED = [200, 401, 403, 403, 401]  # own record, no proof, other patient, other's Observation, no token


def r4_policy(audience="r4-api"):
    p = json.loads((ROOT / "policies" / "demo-fhir-api.json").read_text())
    p["api"]["audience"] = audience
    iss = p["issuers"][0]
    iss["jwks_uri"] = "https://sts.example.org/connect/jwks"
    iss["jwks_cluster"] = "outbound|80||sts.example.org"
    p["routes"] = [{"path_prefix": "/r4/metadata", "methods": ["GET"], "require": "none"}]
    p["fhir"]["base_path"] = "/r4"
    return p


def test_r4_policy_with_https_jwks_uri_runs_unchanged(tmp_path):
    (tmp_path / "policy.json").write_text(json.dumps(r4_policy()))
    with running_demo(["--policy", str(tmp_path / "policy.json")], tmp_path / "demo.log") as text:
        cmds = printed_commands(text)
        assert all("/fhir/" not in c for c in cmds), cmds
        statuses = run_printed(cmds)
    assert [s for s, _ in statuses] == EXPECTED, [(s, t[-300:]) for s, t in statuses]
    assert reason_of(statuses[2][1]) == "compartment_escape"


def test_own_keys_print_how_to_mint_or_use_the_users_token(tmp_path):
    policy = r4_policy("my-own-audience")
    user = Issuer(policy["issuers"][0]["issuer"], algs=("ES256",))
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    (tmp_path / "jwks.json").write_text(json.dumps(user.jwks()))
    args = ["--policy", str(tmp_path / "policy.json"), "--jwks", str(tmp_path / "jwks.json")]
    with running_demo(args, tmp_path / "demo.log") as text:
        assert "Mint them" in text and "aud=my-own-audience" in text and "/r4/Patient/pat-anna" in text, text
        assert not [c for c in printed_commands(text) if c.startswith("curl -i -H \"Authorization: DPoP $(")], text

    from joserfc.jwk import ECKey

    dpop_key = ECKey.generate_key("P-256")
    (tmp_path / "dpop.json").write_text(json.dumps(dpop_key.as_dict(private=True)))
    token = user.token("ES256", aud="my-own-audience", scope="patient/*.rs", patient="pat-anna",
                       cnf={"jkt": dpop_key.thumbprint()})
    (tmp_path / "token.txt").write_text(token)
    args += ["--token", str(tmp_path / "token.txt"), "--dpop-key", str(tmp_path / "dpop.json")]
    with running_demo(args, tmp_path / "demo2.log") as text:
        statuses = run_printed(printed_commands(text))
    assert [s for s, _ in statuses] == EXPECTED, [(s, t[-300:]) for s, t in statuses]


# The REST policy's printed requests: allowed, no scope, other audience, no token.
REST_EXPECTED = [(200, None), (403, "authz_missing_scope"), (401, "wrong_audience"), (401, None)]


def test_rest_policy_runs_token_and_dpop_in_front_of_a_rest_echo_api(tmp_path):
    """A policy without `fhir` (policies/helseid-rest-api.json, unchanged): the demo starts (no
    FHIR scope filter), serves a JSON REST API under its routes, and prints requests built from
    the route's scopes, claims and `authorization_details` binding."""
    with running_demo(["--policy", "policies/helseid-rest-api.json"], tmp_path / "demo.log") as text:
        assert "token -> DPoP -> REST echo API" in text, text
        cmds = printed_commands(text)
        assert all("/fhir" not in c for c in cmds), cmds
        results = run_printed(cmds)
        public = [c for c in cmds if not c.startswith("curl -i")]
        pub = subprocess.run(["bash", "-c", public[0]], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert [s for s, _ in results] == [s for s, _ in REST_EXPECTED], [(s, t[-400:]) for s, t in results]
    for (_, out), (_, reason) in zip(results, REST_EXPECTED):
        assert reason is None or reason in out, out
    assert '"path": "/orgs/974600951/documents"' in results[0][1], results[0][1]
    assert '"path": "/health"' in pub.stdout, pub.stdout


def test_envoy_that_refuses_the_policy_says_why(tmp_path):
    """A policy the filters refuse: the demo exits with the cause from Envoy's log, not
    "nothing listens on 127.0.0.1:10000"."""
    p = json.loads((ROOT / "policies" / "helseid-rest-api.json").read_text())
    p["token"]["clock_skew_seconds"] = 100000  # over the loader's 300 s limit
    (tmp_path / "bad.json").write_text(json.dumps(p))
    r = subprocess.run(["bash", "scripts/demo.sh", "--policy", str(tmp_path / "bad.json")], cwd=ROOT,
                       capture_output=True, text=True, timeout=900, start_new_session=True)
    assert r.returncode != 0
    assert "Envoy did not start" in r.stderr and "clock_skew_seconds" in r.stderr, r.stderr[-3000:]
    assert "nothing listens" not in r.stderr
