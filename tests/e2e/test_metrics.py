"""The metric names of docs/platform-guide.md "Metrics" are what a real Envoy exports.

The table is read from the doc (so doc and test cannot drift): after an allowed request (with a
DPoP proof), a cache hit, a public one, a refusal with a known reason, a dry-run (`mode: shadow`)
refusal, a remote JWKS fetch and both signature verifier paths, every row's name must be in
Envoy's admin `/stats` and its Prometheus name and labels (with its `# TYPE`) in
`/stats/prometheus`, with the same value; every `fapi_guard` series carries the API's name
(`api`), a reason is a label, not part of the name (envoy/stats_config.py); and every
`fapi_guard` stat Envoy shows must be a row of the table. Runs on Envoy 1.40 and, in
scripts/test.sh, 1.36.
"""
import base64
import hashlib
import re
import time
from pathlib import Path

import pytest
import requests

from requests_oauth2client import DPoPKey

import stats_config  # envoy/stats_config.py (on the tests' path through harness/render)
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
    "wasmcustom.fapi_guard.token.jwks.refused_too_large.<issuer>": "test_hostile.py (huge JWKS)",
    "wasmcustom.fapi_guard.token.jwks.refused_too_many_keys.<issuer>": "test_hostile.py (huge JWKS)",
    "wasmcustom.fapi_guard.fhir_scope.response_checked": "test_fhir_scope.py (response checks)",
    "wasmcustom.fapi_guard.fhir_scope.stored_read": "test_compartment_writes.py (read before write)",
}
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


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
    rx = rx.replace(re.escape("<issuer>"), re.escape("<issuer>"))
    return re.compile(rx + r"\Z")


def instance(name: str, iss: str = "") -> str:
    """The row's name for the requests this test makes: the token filter; the reason refused
    (`wrong_audience`) or refused in dry run (`authz_missing_scope`); the test's issuer."""
    reason = "authz_missing_scope" if "shadow_denied" in name else "wrong_audience"
    return name.replace("<filter>", "token").replace("<reason>", reason).replace("<issuer>", iss)


def split_series(series: str) -> tuple[str, dict[str, str]]:
    """`name{a="x",b="y"}` -> (name, {a: x, b: y})."""
    name, _, rest = series.partition("{")
    return name, dict(LABEL.findall(rest))


def tagged(stat: str) -> tuple[str, dict[str, str]]:
    """What Envoy's tag extraction makes of an Envoy stat name with envoy/stats_config.py's
    regex tags (the first group leaves the name, the second is the value), then its Prometheus
    name: the static form of what Envoy does, for the rows this test does not exercise."""
    labels = {}
    for label, rx in stats_config.TAGS:
        m = re.search(rx, stat)
        if m:
            labels[label] = m.group(2)
            stat = stat[:m.start(1)] + stat[m.end(1):]
    return stat.removeprefix("wasmcustom.").replace(".", "_"), labels


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


def prometheus(e) -> tuple[dict[tuple, int], dict[str, str], str]:
    """Admin `/stats/prometheus`: values by (name, frozenset of labels), `# TYPE`s, raw text."""
    text = requests.get(f"http://127.0.0.1:{e.admin_port}/stats/prometheus", timeout=5).text
    values, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
        # Envoy's own stats of the plugin (`envoy_wasm_vm_reload*{plugin="fapi_guard..."}`) are
        # not the guard's: the table lists what the guard defines.
        elif "fapi_guard" in line and not line.startswith(("#", "envoy_")):
            series, value = line.rsplit(" ", 1)
            name, labels = split_series(series)
            values[(name, frozenset(labels.items()))] = int(float(value))
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
    key = DPoPKey.generate(alg="ES256")
    jkt = key.private_key.public_jwk().thumbprint()
    try:
        with Envoy(policy, upstream.port, filters=["token", "dpop"]) as e:
            def call(path: str, token: str) -> int:
                ath = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()
                proof = str(key.proof(htm="GET", htu=e.url + path, ath=ath))
                return e.get(path, {"Authorization": "DPoP " + token, "DPoP": proof}).status_code

            deadline = time.time() + 10
            while e.counter("token.jwks.fetch_ok") < 1 and time.time() < deadline:
                time.sleep(0.1)
            es256 = issuer.token("ES256", aud=AUD, cnf={"jkt": jkt})
            assert call("/api/x", es256) == 200
            assert call("/api/x", es256) == 200  # cache hit
            # PS256: the software verifier (the host's verify_signature has no PSS).
            assert call("/api/x", issuer.token("PS256", aud=AUD, cnf={"jkt": jkt})) == 200
            assert call("/api/x", issuer.token(aud="other", cnf={"jkt": jkt})) == 401
            assert e.get("/public/x").status_code == 200
            assert call("/dry/x", issuer.token(aud=AUD, cnf={"jkt": jkt})) == 200
            # The replay cache's gauges are brought up to date on each worker's tick (1 s),
            # not on the request path: wait for the tick after the last request.
            deadline = time.time() + 5
            while e.counter("dpop.replay_cache.live_proofs") < 4 and time.time() < deadline:
                time.sleep(0.1)
            stats = stats_text(e)
            prom, types, raw = prometheus(e)
    finally:
        jwks.stop()

    # What the requests above add up to, by the doc's name for each row (after `instance`).
    # Four proofs recorded in the replay cache (the refused token never reaches the DPoP
    # filter); the issuer publishes two keys; its one fetch succeeded.
    want = {
        "allowed": 3, "public": 1, "cache_hit": 1, "denied.wrong_audience": 1,
        "shadow_denied.authz_missing_scope": 1, "host_available": 1, "replay_cache.live_proofs": 4,
        f"jwks.keys.{issuer.iss}": 2, f"jwks.fetch_ok.{issuer.iss}": 1, f"jwks.fetch_failed.{issuer.iss}": 0,
        f"jwks.last_failure_timestamp_seconds.{issuer.iss}": 0,
    }
    at_least_one = ("verify.host", "verify.software", "replay_cache.capacity")
    seen = 0
    for row in rows:
        stat = instance(row["stat"], issuer.iss)
        name, labels = split_series(instance(row["prom"], issuer.iss))
        # Istio's scrape (15090, and 15020 merged) is Envoy's `/stats/prometheus` unchanged.
        assert row["istio"] == row["prom"], row
        # The doc's labels are what the tags of envoy/stats_config.py make of the stat name.
        assert tagged(stat) == (name, labels), (row, tagged(stat))
        if stat not in stats:
            assert row["defined"] == "first use" and row["stat"] in NOT_EXERCISED, (
                f"doc names `{stat}`, Envoy /stats has no such stat: {sorted(stats)}")
            continue
        seen += 1
        assert row["stat"] not in NOT_EXERCISED, stat
        series = (name, frozenset({**labels, "api": "metrics-e2e"}.items()))
        assert series in prom, (
            f"doc names `{name}{labels}`, Envoy /stats/prometheus has no such series; it has: "
            + ", ".join(f"{n}{dict(ls)}" for (n, ls), v in prom.items() if v))
        assert types.get(name) == row["type"], (name, types.get(name), row["type"])
        assert prom[series] == stats[stat], (name, prom[series], stat, stats[stat])
        for suffix, n in want.items():
            if stat.endswith("." + suffix):
                assert stats[stat] == n, (stat, stats[stat], n)
        if stat.endswith(at_least_one):
            assert stats[stat] >= 1, (stat, stats[stat])
    assert seen == len(rows) - len(NOT_EXERCISED), (seen, len(rows))
    # The last good fetch was just now.
    fetched = stats[f"wasmcustom.fapi_guard.token.jwks.last_success_timestamp_seconds.{issuer.iss}"]
    assert time.time() - 60 < fetched <= time.time() + 1, fetched

    # Every fapi_guard stat Envoy shows is a row of the table (in both forms); every series has
    # the API's name; a reason is a label, so there are far fewer families than reasons (a
    # token and DPoP proxy had 310 with the reason in the name).
    stat_rx = [pattern(r["stat"], codes) for r in rows]
    prom_rx = [pattern(split_series(r["prom"])[0], codes) for r in rows]
    unlisted = [s for s in stats if not any(p.match(s.replace(issuer.iss, "<issuer>")) for p in stat_rx)]
    assert not unlisted, f"not in docs/platform-guide.md \"Metrics\": {unlisted}"
    exported = {n for n, _ in prom}
    assert exported and all(any(p.match(n) for p in prom_rx) for n in exported), sorted(exported)
    assert all(dict(ls).get("api") == "metrics-e2e" for _, ls in prom), [k for k in prom if ("api", "metrics-e2e") not in k[1]]
    families = raw.count("# TYPE fapi_guard")
    assert families == len(exported) and families < 40 < len(codes), (families, len(codes))
    assert "wasmcustom" not in raw


def test_docs_name_only_metrics_of_the_table():
    """Prometheus names written anywhere in the docs are the table's (no `envoy_` prefix, no
    reason in the name), with the table's labels (a reason label holds a reason code)."""
    rows, codes = doc_rows(), reason_codes()
    families = [(pattern(split_series(r["prom"])[0], codes), split_series(r["prom"])[1]) for r in rows]
    prom_forms = {r["prom"] for r in rows} | {split_series(r["prom"])[0] for r in rows}
    docs = [ROOT / "README.md", ROOT / "kind-cluster" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found = 0
    for doc in docs:
        text = doc.read_text()
        for name in re.findall(r"`((?:envoy_)?(?:wasmcustom_)?fapi_guard_(?:token|dpop|fhir_scope|verify)_[a-z0-9_<>]+"
                               r"(?:\{[^}`]*\})?)`", text):
            found += 1
            if "<" in name:  # a row's own form, placeholders and all
                assert name in prom_forms, (doc.name, name)
                continue
            family, labels = split_series(name)
            rows_of = [want for rx, want in families if rx.match(family)]
            assert rows_of, (doc.name, name)
            assert any(set(labels) <= set(want) | {"api"} for want in rows_of), (doc.name, name)
            assert labels.get("reason", "wrong_audience") in codes, (doc.name, name)
        assert "envoy_wasmcustom_fapi" not in text, doc.name
    assert found > 10, found
