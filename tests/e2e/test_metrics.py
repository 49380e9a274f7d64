"""The metric names of docs/platform-guide.md "Metrics" are what a real Envoy exports.

The table is read from the doc (so doc and test cannot drift): after an allowed request, a cache
hit, a public one, a refusal with a known reason, a dry-run (`mode: shadow`) refusal, a remote
JWKS fetch and both signature verifier paths, every row's name must be in Envoy's admin `/stats`
and its Prometheus name (with its `# TYPE`) in `/stats/prometheus`, with the same value; and
every `fapi_guard` stat Envoy shows must be a row of the table. Runs on Envoy 1.40 and, in
scripts/test.sh, 1.36.
"""
import re
import time
from pathlib import Path

import pytest
import requests

from harness import Envoy, Issuer, JwksServer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "platform-guide.md"
TABLE_HEADER = "| Envoy stat (`/stats`) |"
FILTERS = ("token", "dpop", "fhir_scope")
AUD = "metrics-e2e"

# Rows defined on first use whose event this test does not cause, with the test that does (it
# finds them by the Envoy stat name): their Prometheus name is checked against the rule the
# exercised rows show (`wasmcustom.` dropped, dots as `_`).
NOT_EXERCISED = {
    "wasmcustom.fapi_guard.token.jwks.fetch_failed": "test_hostile.py (JWKS outage)",
    "wasmcustom.fapi_guard.token.jwks.refused_too_large": "test_hostile.py (huge JWKS)",
    "wasmcustom.fapi_guard.token.jwks.refused_too_many_keys": "test_hostile.py (huge JWKS)",
    "wasmcustom.fapi_guard.fhir_scope.response_checked": "test_fhir_scope.py (response checks)",
    "wasmcustom.fapi_guard.fhir_scope.stored_read": "test_compartment_writes.py (read before write)",
}


def unquote(cell: str) -> str:
    return cell.strip().strip("`")


def doc_rows() -> list[dict]:
    """The rows of the metrics table in the "Metrics" section of the platform guide."""
    text = GUIDE.read_text()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(TABLE_HEADER))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        stat, prom, istio, kind, defined = (unquote(c) for c in cells[:5])
        rows.append({"stat": stat, "prom": prom, "istio": istio, "type": kind, "defined": defined})
    assert len(rows) >= 10, rows
    return rows


def reason_codes() -> set[str]:
    text = (ROOT / "docs" / "reason-codes.md").read_text()
    return set(re.findall(r"^\| `([a-z0-9_]+)` \|", text, re.M))


def pattern(name: str, codes: set[str]) -> re.Pattern:
    """A doc name with `<filter>` / `<reason>` as a regex over real names."""
    rx = re.escape(name)
    rx = rx.replace(re.escape("<filter>"), "(?:" + "|".join(FILTERS) + ")")
    rx = rx.replace(re.escape("<reason>"), "(?:" + "|".join(sorted(codes)) + ")")
    return re.compile(rx + r"\Z")


def instance(name: str) -> str:
    """The row's name for the requests this test makes: the token filter; the reason refused
    (`wrong_audience`) or refused in dry run (`authz_missing_scope`)."""
    reason = "authz_missing_scope" if "shadow_denied" in name else "wrong_audience"
    return name.replace("<filter>", "token").replace("<reason>", reason)


# Envoy's own stats of a Wasm plugin, named after the plugin (`wasm.<plugin name>.vm_reload*`;
# the chain plugin's name is its root id, `fapi_guard:token` -> `wasm.fapi_guard_token.*`), are
# not the guard's: the table lists what the guard defines (`wasmcustom.fapi_guard.*`).
ENVOY_PLUGIN_STAT = re.compile(r"^(?:wasm\.|envoy_wasm_)fapi_guard[^.]*[._]vm_reload")


def stats_text(e) -> dict[str, int]:
    """Admin `/stats` (text): `name: value` lines of the filters."""
    r = requests.get(f"http://127.0.0.1:{e.admin_port}/stats", timeout=5)
    out = {}
    for line in r.text.splitlines():
        name, sep, value = line.partition(": ")
        if sep and "fapi_guard" in name and not ENVOY_PLUGIN_STAT.match(name):
            out[name] = int(value)
    return out


def prometheus(e) -> tuple[dict[str, int], dict[str, str], str]:
    """Admin `/stats/prometheus`: values of label-less series, `# TYPE`s, and the raw text."""
    text = requests.get(f"http://127.0.0.1:{e.admin_port}/stats/prometheus", timeout=5).text
    values, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
        elif "fapi_guard" in line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            values[series] = int(float(value))
    return values, types, text


@pytest.fixture(scope="module")
def issuer():
    return Issuer("https://issuer.metrics.test", algs=("ES256", "PS256"))


def test_doc_metric_names_are_what_envoy_exports(upstream, issuer):
    rows, codes = doc_rows(), reason_codes()
    jwks = JwksServer(issuer.jwks())
    policy = {
        "api": {"name": "metrics-e2e", "audience": AUD},
        "issuers": [{"issuer": issuer.iss, "jwks_uri": jwks.uri, "jwks_cluster": "issuer_jwks",
                     "jwks_refresh_seconds": 300}],
        "token": {"schemes": ["DPoP"]},
        "routes": [
            {"path_prefix": "/public", "require": "none"},
            {"path_prefix": "/dry", "require": "token", "mode": "shadow",
             "authz": {"scopes": {"all_of": ["never-granted"]}}},
            {"path_prefix": "/api", "require": "token"},
        ],
    }
    try:
        with Envoy(policy, upstream.port, filters=["token"]) as e:
            deadline = time.time() + 10
            while e.counter("token.jwks.fetch_ok") < 1 and time.time() < deadline:
                time.sleep(0.1)
            es256 = issuer.token("ES256", aud=AUD)
            assert e.get("/api/x", {"Authorization": "DPoP " + es256}).status_code == 200
            assert e.get("/api/x", {"Authorization": "DPoP " + es256}).status_code == 200  # cache hit
            # PS256: the software verifier (the host's verify_signature has no PSS).
            ps256 = issuer.token("PS256", aud=AUD)
            assert e.get("/api/x", {"Authorization": "DPoP " + ps256}).status_code == 200
            assert e.get("/api/x", {"Authorization": "DPoP " + issuer.token(aud="other")}).status_code == 401
            assert e.get("/public/x").status_code == 200
            assert e.get("/dry/x", {"Authorization": "DPoP " + issuer.token(aud=AUD)}).status_code == 200
            stats = stats_text(e)
            prom, types, raw = prometheus(e)
    finally:
        jwks.stop()

    # What the requests above add up to, by the doc's name for each row (after `instance`).
    want = {
        "allowed": 3, "public": 1, "cache_hit": 1, "denied.wrong_audience": 1,
        "shadow_denied.authz_missing_scope": 1, "host_available": 1,
    }
    at_least_one = ("jwks.fetch_ok", "verify.host", "verify.software")
    seen = 0
    for row in rows:
        stat, name = instance(row["stat"]), instance(row["prom"])
        # Istio's scrape (15090, and 15020 merged) is Envoy's `/stats/prometheus` unchanged.
        assert row["istio"] == row["prom"], row
        if stat not in stats:
            assert row["defined"] == "first use" and stat in NOT_EXERCISED, (
                f"doc names `{stat}`, Envoy /stats has no such stat: {sorted(stats)}")
            assert name == stat.removeprefix("wasmcustom.").replace(".", "_"), row
            continue
        seen += 1
        assert stat not in NOT_EXERCISED, stat
        series = name + "{}"
        assert series in prom, (
            f"doc names `{name}`, Envoy /stats/prometheus has no such series; it has: "
            + ", ".join(s for s in prom if "fapi_guard" in s and prom[s]))
        assert types.get(name) == row["type"], (name, types.get(name), row["type"])
        assert prom[series] == stats[stat], (name, prom[series], stat, stats[stat])
        for suffix, n in want.items():
            if stat.endswith("." + suffix):
                assert stats[stat] == n, (stat, stats[stat], n)
        if stat.endswith(at_least_one):
            assert stats[stat] >= 1, (stat, stats[stat])
    assert seen == len(rows) - len(NOT_EXERCISED), (seen, len(rows))

    # Every fapi_guard stat Envoy shows is a row of the table (in both forms).
    stat_rx = [pattern(r["stat"], codes) for r in rows]
    prom_rx = [pattern(r["prom"], codes) for r in rows]
    unlisted = [s for s in stats if not any(p.match(s) for p in stat_rx)]
    assert not unlisted, f"not in docs/platform-guide.md \"Metrics\": {unlisted}"
    exported = {s.split("{")[0] for s in prom if "fapi_guard" in s and not ENVOY_PLUGIN_STAT.match(s)}
    assert exported and all(any(p.match(s) for p in prom_rx) for s in exported), sorted(exported)
    assert "wasmcustom" not in raw


def test_docs_name_only_metrics_of_the_table():
    """Prometheus names written anywhere in the docs are the table's (no `envoy_` prefix)."""
    rows, codes = doc_rows(), reason_codes()
    prom_rx = [pattern(r["prom"], codes) for r in rows]
    docs = [ROOT / "README.md", ROOT / "kind-cluster" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for doc in docs:
        text = doc.read_text()
        for name in re.findall(r"`((?:envoy_)?(?:wasmcustom_)?fapi_guard_(?:token|dpop|fhir_scope|verify)_[a-z0-9_<>]+)`",
                               text):
            if "<" in name:  # a row's own form, placeholders and all
                assert name in {r["prom"] for r in rows}, (doc.name, name)
            else:
                assert any(p.match(name) for p in prom_rx), (doc.name, name)
        assert "envoy_wasmcustom_fapi" not in text, doc.name
