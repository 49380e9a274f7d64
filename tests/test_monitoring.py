"""The alert rules and the dashboard of deploy/monitoring/ (docs/platform-guide.md, "Alerts",
"Dashboard"), checked with Prometheus's own tooling (`promtool`, Debian package `prometheus`):

- the committed rule file, its unit tests and the PrometheusRule are what the generators
  write (deploy/monitoring/rules.py, rule_tests.py);
- `promtool check rules` accepts the rule file and the PrometheusRule's groups;
- `promtool test rules` passes the unit tests, and every alert has a case where it fires and
  one where it does not;
- every dashboard query is valid PromQL (`promtool check rules` on them as recording rules);
- every guard metric the rules and the dashboard name is a row of the "Metrics" table.

The end-to-end test (tests/e2e/test_alerts.py) runs the rules and the queries against a real
Prometheus scraping a real Envoy.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MON = ROOT / "deploy" / "monitoring"
sys.path.insert(0, str(MON))
import rule_tests  # noqa: E402
import rules  # noqa: E402


def promtool(*args: str, cwd: Path = MON) -> subprocess.CompletedProcess:
    tool = shutil.which("promtool")
    if not tool:
        pytest.fail("no `promtool`: run scripts/bootstrap.sh (Debian package prometheus)")
    return subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_committed_files_are_the_generators_output():
    assert rules.main(["--check"]) == 0
    assert rule_tests.main(["--check"]) == 0


def test_promtool_checks_the_rule_file_and_the_prometheus_rule(tmp_path):
    r = promtool("check", "rules", rules.RULE_FILE.name)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in rules.groups())} rules found" in r.stdout, r.stdout
    doc = yaml.safe_load(rules.PROMETHEUS_RULE.read_text())
    assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "PrometheusRule", doc
    assert doc["spec"]["groups"] == yaml.safe_load(rules.RULE_FILE.read_text())["groups"]
    spec = tmp_path / "spec.yml"
    spec.write_text(yaml.safe_dump({"groups": doc["spec"]["groups"]}))
    r = promtool("check", "rules", str(spec))
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_unit_tests_pass():
    r = promtool("test", "rules", rule_tests.TEST_FILE.name)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout, r.stdout


def test_every_alert_has_a_firing_and_a_quiet_case():
    alerts = [a for _, a, *_ in rules.ALERTS]
    fires, quiet = set(), set()
    for _, _, evals in rule_tests.CASES:
        for _, alert, firing in evals:
            (fires if firing else quiet).add(alert)
    assert set(alerts) == fires == quiet, (set(alerts) - fires, set(alerts) - quiet)
    # The shipped rules wait (`for:`) except where one event is already the failure.
    assert all(r["for"] != "0s" or r["alert"].startswith("FapiGuardWasm")
               for g in rules.groups() for r in g["rules"] if "alert" in r)


def dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads((MON / "dashboard.json").read_text())
    out = []
    for p in dash["panels"]:
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        out += [(p["title"], t["expr"]) for t in p["targets"]]
    return out


def test_dashboard_queries_are_valid_promql(tmp_path):
    dash = json.loads((MON / "dashboard.json").read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), ids
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert variables == {"datasource", "api"}, variables
    queries = dashboard_queries()
    assert len(queries) >= 15
    for title, expr in queries:
        assert 'api=~"$api"' in expr, (title, expr)
    # Grafana's `$api` (All: `.*`) substituted; each query as a recording rule for promtool.
    group = {"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": expr.replace("$api", ".*")}
                                              for i, (_, expr) in enumerate(queries)]}
    f = tmp_path / "dashboard-queries.yml"
    f.write_text(yaml.safe_dump({"groups": [group]}))
    r = promtool("check", "rules", str(f))
    assert r.returncode == 0, r.stdout + r.stderr


def table_families() -> set[str]:
    """Prometheus families of the platform guide's "Metrics" table, `<filter>` expanded."""
    text = (ROOT / "docs" / "platform-guide.md").read_text()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in section.splitlines():
        if line.startswith("| `wasmcustom."):
            prom = line.split("|")[2].strip().strip("`").split("{")[0]
            names |= {prom.replace("<filter>", f) for f in ("token", "dpop", "fhir_scope")}
    return names


def test_rules_and_dashboard_name_only_documented_metrics():
    families = table_families()
    assert "fapi_guard_token_jwks_keys" in families and "fapi_guard_token_denied" in families, families
    texts = [e for _, e in dashboard_queries()] + [r["expr"] for g in rules.groups() for r in g["rules"]]
    used = set()
    for t in texts:
        used |= set(re.findall(r"\bfapi_guard_[a-z0-9_]+", t))
    assert used and used <= families, used - families
    # Envoy's own Wasm stats the rules use are named in "Metrics" ("Watch for").
    guide = (ROOT / "docs" / "platform-guide.md").read_text()
    envoy = set()
    for t in texts:
        envoy |= set(re.findall(r"\benvoy_wasm_[a-z0-9_]+", t))
    assert envoy and all(f"`{n}" in guide for n in envoy), envoy
