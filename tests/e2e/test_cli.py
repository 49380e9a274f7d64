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


# A policy object written as an array (serde would read its items as the fields in order):
# the loader itself refuses it, naming the field (docs/api-owner-guide.md "1. Write the policy").
@pytest.mark.parametrize("field", [None, "api", "token", "issuers[0]", "routes[0]",
                                   "routes[1].authz", "fhir", "fhir.response_check", "dpop.nonce"])
def test_check_refuses_an_object_written_as_an_array(cli, tmp_path, field):
    policy = json.loads((ROOT / "policies" / "demo-fhir-api.json").read_text())
    policy.setdefault("token", {"schemes": ["DPoP"]})
    policy.setdefault("dpop", {}).setdefault("nonce", {"enabled": False, "secret": "A" * 43})
    policy.setdefault("fhir", {}).setdefault("response_check", {"max_body_bytes": 1024})
    policy["routes"] = [{"path_prefix": "/fhir/metadata", "require": "none"},
                        {"path_prefix": "/x", "require": "token", "authz": {"scopes": {"any_of": ["s"]}}}]
    f = tmp_path / "p.json"
    if field is None:  # the policy the cases below break loads
        f.write_text(json.dumps(policy))
        r = run(cli, "check", f)
        assert r.returncode == 0, r.stdout + r.stderr
        return
    node, *rest = field.replace("[", ".").replace("]", "").split(".")
    parent, key = policy, node
    for part in rest:
        parent, key = parent[key], int(part) if part.isdigit() else part
    parent[key] = list(parent[key].values())
    f.write_text(json.dumps(policy))
    r = run(cli, "check", f)
    assert r.returncode == 1 and "panicked" not in r.stderr, r.stdout + r.stderr
    assert "refused by the filters' loader" in r.stdout, r.stdout
    assert f"policy field `{field}`: must be an object, not an array" in r.stdout, r.stdout


def test_istio_target_lints(cli, tmp_path):
    r = run(cli, "check", ROOT / "policies" / "demo-fhir-api.json", "--target", "istio")
    assert r.returncode == 1
    for field in ("fhir.hold_headers_while_buffering", "fhir.read_before_write_cluster", "issuers[0].jwks_uri"):
        assert f"error (istio) `{field}`" in r.stdout, r.stdout
    p = json.loads((ROOT / "policies" / "demo-fhir-api.json").read_text())
    p["issuers"][0].update(jwks_uri="https://sts.example.org/jwks", jwks_cluster="outbound|80||sts.example.org")
    p["fhir"].update(hold_headers_while_buffering=False, read_before_write_cluster="inbound|8080||")
    (tmp_path / "istio.json").write_text(json.dumps(p))
    r = run(cli, "check", tmp_path / "istio.json", "--target", "istio")
    assert r.returncode == 0, r.stdout


def _gen_wasmplugins():
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("gen_wasmplugins", ROOT / "tools" / "gen_wasmplugins.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gen_wasmplugins"] = mod
    spec.loader.exec_module(mod)
    return mod


# (jwks_uri, jwks_cluster): `check --target istio` and tools/gen_wasmplugins.py must agree on
# each (one rule: describe::istio_jwks_cluster and gen_wasmplugins.jwks_egress).
JWKS_CASES = {
    "external-80": ("https://sts.example.org/jwks", "outbound|80||sts.example.org"),
    "external-443-passthrough": ("https://sts.example.org/jwks", "outbound|443||sts.example.org"),
    "external-other-host": ("https://sts.example.org/jwks", "outbound|80||other.example.org"),
    "external-plain-http": ("http://sts.example.org/jwks", "outbound|80||sts.example.org"),
    "external-port-8443": ("https://sts.example.org:8443/jwks", "outbound|80||sts.example.org"),
    "short-name": ("https://sts.example.org/jwks", "my_idp"),
    "in-cluster": ("http://idp.auth.svc.cluster.local:8080/jwks", "outbound|8080||idp.auth.svc.cluster.local"),
    "in-cluster-wrong-port": ("http://idp.auth.svc.cluster.local:8080/jwks", "outbound|80||idp.auth.svc.cluster.local"),
    "in-cluster-short": ("https://idp.auth.svc/jwks", "outbound|443||idp.auth.svc"),
    "ip-address": ("https://10.0.0.7/jwks", "outbound|80||10.0.0.7"),
}


@pytest.mark.parametrize("uri,cluster", JWKS_CASES.values(), ids=JWKS_CASES.keys())
def test_check_and_generator_agree_on_the_istio_jwks_cluster(cli, tmp_path, uri, cluster):
    gen = _gen_wasmplugins()
    p = json.loads((ROOT / "policies" / "helseid-rest-api.json").read_text())
    p["issuers"][0].update(jwks_uri=uri, jwks_cluster=cluster)
    try:
        gen.jwks_egress("api", p, {"namespace": "apis"}, "policy.json")
        generator_accepts = True
    except gen.GenError:
        generator_accepts = False
    (tmp_path / "p.json").write_text(json.dumps(p))
    r = run(cli, "check", tmp_path / "p.json", "--target", "istio")
    check_accepts = r.returncode == 0
    assert check_accepts == generator_accepts, r.stdout
    if not check_accepts:
        assert "error (istio) `issuers[0].jwks_" in r.stdout, r.stdout


def check_text(cli, tmp_path, policy, *args):
    (tmp_path / "p.json").write_text(json.dumps(policy))
    r = run(cli, "check", tmp_path / "p.json", *args)
    return r, r.stdout.split("What this policy means:", 1)[1]


def test_check_prints_the_rest_policy_as_enforced(cli, tmp_path):
    """Route by route: matcher, methods, scopes, claims, authorization_details, bindings,
    the route's dry run; the token claims as configured (`require_sub: false`: no `sub`)."""
    p = json.loads((ROOT / "policies" / "helseid-rest-api.json").read_text())
    r, text = check_text(cli, tmp_path, p, "--target", "istio")
    assert r.returncode == 0, r.stdout
    lines = [x.strip() for x in text.splitlines() if x.strip().startswith("- Route ")]
    assert len(lines) == len(p["routes"]), text
    assert "`/health`" in lines[0] and "(GET)" in lines[0] and "public" in lines[0]
    assert "(GET, HEAD)" in lines[1] and "`nhn:sample-rest/read`, `nhn:sample-rest/write`" in lines[1]
    assert "path parameter `{orgnr}`" in lines[1] and "helseid_authorization" in lines[1]
    assert "`helseid://claims/identity/security_level` >= 4" in lines[2]
    assert "`nhn:tillitsrammeverk:parameters`" in lines[2] and '"TREAT", "COC"' in lines[2]
    assert "DRY RUN" in lines[3] and "DRY RUN" not in lines[1]
    (claims,) = [x for x in text.splitlines() if "Token:" in x]
    assert " sub," not in claims and "require_sub: false" in claims
    assert "Filters: token -> DPoP (a plain REST API" in text
    assert "Every other path needs a valid token" in text


def test_check_says_a_shadow_policy_is_a_dry_run(cli, tmp_path):
    p = json.loads((ROOT / "policies" / "helseid-rest-api.json").read_text())
    p.update(mode="shadow", unmatched="deny")
    p["routes"][1]["mode"] = "enforce"
    p["token"]["require_sub"] = True
    _, text = check_text(cli, tmp_path, p)
    assert "Mode: DRY RUN (`mode: shadow`)" in text, text
    assert "Every other path would be refused" in text and "dry run" in text.split("Every other path", 1)[1]
    assert "Every other path is refused" not in text
    routes = [x for x in text.splitlines() if "- Route " in x]
    assert "enforced (route `mode: enforce`)" in routes[1] and "DRY RUN (policy `mode: shadow`)" in routes[2]
    (claims,) = [x for x in text.splitlines() if "Token:" in x]
    assert "iss, sub, client_id" in claims


def test_explain_refuses_a_fhir_step_the_policy_cannot_run(cli):
    rest = ROOT / "policies" / "helseid-rest-api.json"
    r = run(cli, "explain", "--policy", rest, "--request", "GET /health", "--filters", "token,dpop,fhir_scope")
    assert r.returncode == 2 and "`fhir`" in r.stderr and "--filters" in r.stderr, r.stderr
    r = run(cli, "explain", "--policy", rest, "--request", "GET /health", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["filters"] == ["token", "dpop"], r.stdout


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


@pytest.mark.parametrize("policy", POLICIES, ids=[p.stem for p in POLICIES])
def test_explain_runs_the_steps_render_runs(cli, policy):
    """explain's chain (explain::chain) and render's (render.policy_steps): one answer."""
    import render

    r = run(cli, "explain", "--policy", policy, "--request", "GET /x", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["filters"] == render.policy_steps(json.loads(policy.read_text()))


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


# A gateway in front (`--behind-gateway`): the client signs the public URI, the filter sees the
# forwarded one, so without `dpop.public_origins` every proof fails (docs/dpop.md, "`htu` behind
# a gateway"). The warning names the field; with the field set, or without DPoP, it is silent.
@pytest.mark.parametrize("target", ["istio", "envoy"])
def test_behind_gateway_warns_when_public_origins_is_missing(cli, tmp_path, target):
    policy = json.loads((ROOT / "policies" / "demo-fhir-api.json").read_text())
    assert "public_origins" not in policy.get("dpop", {})
    f = tmp_path / "p.json"
    f.write_text(json.dumps(policy))
    r = run(cli, "check", f, "--target", target, "--behind-gateway")
    line = f"warning ({target}) `dpop.public_origins`: missing, and a gateway serves this API"
    assert line in r.stdout and "dpop_htu_mismatch" in r.stdout, r.stdout
    # Without the flag nothing says a gateway serves it: no finding. A warning, not an error:
    # the exit code is the same (this policy has Istio errors of its own: exit 1 there).
    without = run(cli, "check", f, "--target", target)
    assert "dpop.public_origins" not in without.stdout
    assert r.returncode == without.returncode == (0 if target == "envoy" else 1), r.stdout
    # Named: no warning.
    policy["dpop"]["public_origins"] = ["https://fhir.example.org"]
    f.write_text(json.dumps(policy))
    assert "`dpop.public_origins`" not in run(cli, "check", f, "--target", target, "--behind-gateway").stdout
    # Bearer only: no proofs, nothing to warn about.
    policy.pop("dpop")
    policy["token"]["schemes"] = ["Bearer"]
    f.write_text(json.dumps(policy))
    assert "`dpop.public_origins`" not in run(cli, "check", f, "--target", target, "--behind-gateway").stdout


def test_the_gateway_policy_of_the_two_proxy_topology_passes_behind_gateway(cli):
    r = run(cli, "check", ROOT / "policies" / "demo-fhir-api-gateway.json", "--target", "istio", "--behind-gateway")
    assert "`dpop.public_origins`" not in r.stdout, r.stdout
