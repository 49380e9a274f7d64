"""`fapi-guard check` and the CLI's handling of bad input. `check` loads a policy with the
filters' loader: a policy Envoy refuses gets the same message from the CLI (compared with
Envoy's own log line), and exit code 1; target lints for Istio; bad input
(huge files, garbage tokens, bad arguments) gets a message, never a panic."""
import json
import subprocess

import pytest

from harness import ROOT, Envoy, Upstream

pytestmark = pytest.mark.e2e

CLI = ROOT / "target" / "debug" / "fapi-guard"
POLICIES = sorted((ROOT / "policies").glob("*.json"))


@pytest.fixture(scope="module")
def cli():
    subprocess.run(["cargo", "build", "-q", "-p", "fapi-guard"], cwd=ROOT, check=True, timeout=900)
    return str(CLI)


def run(cli, *args):
    return subprocess.run([cli, *map(str, args)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("policy", POLICIES, ids=[p.stem for p in POLICIES])
def test_committed_policies_pass_check_for_envoy(cli, policy):
    r = run(cli, "check", policy)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "valid against policies/schema/policy.schema.json" in r.stdout
    assert "What this policy means:" in r.stdout and "panicked" not in r.stderr


def test_same_loader_message_as_envoy(cli, tmp_path):
    policy = json.loads((ROOT / "policies" / "demo-fhir-api.json").read_text())
    policy["dpop"] = {"allowed_algs": ["HS256"]}
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(policy))
    r = run(cli, "check", f)
    assert r.returncode == 1
    line = [x.strip() for x in r.stdout.splitlines() if x.strip().startswith("policy field")][0]
    assert "`dpop.allowed_algs[0]`" in line
    up = Upstream()
    try:
        with pytest.raises(RuntimeError) as err:
            Envoy(policy, up.port, filters=["token"])
    finally:
        up.stop()
    assert f"refusing configuration: {line}" in str(err.value), str(err.value)[-2000:]


def test_istio_target_lints(cli, tmp_path):
    r = run(cli, "check", ROOT / "policies" / "demo-fhir-api.json", "--target", "istio")
    assert r.returncode == 1
    for field in ("fhir.hold_headers_while_buffering", "fhir.read_before_write_cluster", "issuers[0].jwks_cluster"):
        assert f"error (istio) `{field}`" in r.stdout, r.stdout
    p = json.loads((ROOT / "policies" / "demo-fhir-api.json").read_text())
    p["issuers"][0].update(jwks_uri="https://sts.example.org/jwks", jwks_cluster="outbound|443||sts.example.org")
    p["fhir"].update(hold_headers_while_buffering=False, read_before_write_cluster="inbound|8080||")
    (tmp_path / "istio.json").write_text(json.dumps(p))
    r = run(cli, "check", tmp_path / "istio.json", "--target", "istio")
    assert r.returncode == 0, r.stdout


def test_bad_input_gets_a_message(cli, tmp_path):
    huge = tmp_path / "huge.json"
    huge.write_bytes(b" " * (4 * 1024 * 1024 + 1))
    r = run(cli, "check", huge)
    assert r.returncode == 2 and "refused unread" in r.stderr
    policy = ROOT / "policies" / "demo-fhir-api.json"
    r = run(cli, "explain", "--policy", policy, "--request", "GET /fhir/Patient/x", "--header",
            "Authorization: DPoP \u2603garbage", "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout)["answer"]["reason"] == "malformed_token"
    for args in (["explain"], ["explain", "--policy", policy, "--request", "nonsense"], ["nope"],
                 ["explain", "--policy", policy, "--request", "GET /x", "--header", "no colon"]):
        r = run(cli, *args)
        assert r.returncode == 2 and r.stderr.startswith("fapi-guard:") and "panicked" not in r.stderr, args


def test_reason_codes_markdown_is_the_committed_doc(cli):
    r = run(cli, "reason-codes", "--markdown")
    assert r.stdout == (ROOT / "docs" / "reason-codes.md").read_text()
    codes = json.loads(run(cli, "reason-codes", "--json").stdout)
    assert {"code": "dpop_htu_mismatch", "status": 401} == {k: codes[[c["code"] for c in codes].index("dpop_htu_mismatch")][k] for k in ("code", "status")}


def test_explain_redacts_personal_identifiers_unless_asked(cli, tmp_path):
    """`explain` prints the decoded token without the national identity number, names or the
    HPR number (docs/helseid.md, "The explainer and personal data"); `--show-personal` prints
    them. The decision is the same either way."""
    import base64

    def part(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    claims = {"iss": "https://helseid-sts.test.nhn.no", "aud": "nhn:sample-rest", "client_id": "c-77",
              "helseid://claims/identity/pid": "12345678901",
              "helseid://claims/identity/name": "Kari Nordmann", "given_name": "Kari",
              "helseid://claims/hpr/hpr_number": "565501872",
              "helseid://claims/identity/security_level": "4"}
    tok = f"{part({'alg': 'RS256', 'typ': 'at+jwt', 'kid': 'k1'})}.{part(claims)}.c2ln"
    base = ["explain", "--policy", ROOT / "policies" / "helseid-rest-api.json", "--request",
            "GET /orgs/111222333/documents", "--header", f"Authorization: DPoP {tok}"]
    for fmt in ([], ["--json"]):
        r = run(cli, *base, *fmt)
        assert r.returncode == 0, r.stderr
        for secret in ("12345678901", "Kari", "Nordmann", "565501872"):
            assert secret not in r.stdout, (fmt, secret)
        assert "c-77" in r.stdout and "redacted" in r.stdout
        assert "helseid://claims/identity/pid" in r.stdout  # the claim's name stays
        shown = run(cli, *base, *fmt, "--show-personal")
        for secret in ("12345678901", "Kari Nordmann", "565501872"):
            assert secret in shown.stdout, (fmt, secret)
    hidden = json.loads(run(cli, *base, "--json").stdout)["answer"]
    shown = json.loads(run(cli, *base, "--json", "--show-personal").stdout)["answer"]
    assert hidden == shown


def test_check_warns_when_a_public_prefix_opens_deeper_paths(cli, tmp_path):
    """A public `path_prefix` opens every path below it, whatever `unmatched` says; `check`
    warns and names the rule. An exact `path` opens one path: no warning."""
    p = json.loads((ROOT / "policies" / "helseid-rest-api.json").read_text())
    p["unmatched"] = "deny"
    p["routes"][0] = {"path_prefix": "/api/v2/health", "methods": ["GET"], "require": "none"}
    (tmp_path / "prefix.json").write_text(json.dumps(p))
    r = run(cli, "check", tmp_path / "prefix.json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning (envoy) `routes[0].path_prefix`: public prefix: every path below `/api/v2/health`" in r.stdout, r.stdout
    p["routes"][0] = {"path": "/api/v2/health", "methods": ["GET"], "require": "none"}
    (tmp_path / "exact.json").write_text(json.dumps(p))
    r = run(cli, "check", tmp_path / "exact.json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "public prefix" not in r.stdout and "`/api/v2/health` (exact)" in r.stdout, r.stdout
