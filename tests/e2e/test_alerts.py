"""A real Prometheus scraping a real Envoy with the guard: a JWKS outage fires the JWKS alert,
and every panel query of the dashboard evaluates (docs/platform-guide.md, "Alerts",
"Dashboard").

Prometheus (Debian's `prometheus`, scripts/bootstrap.sh) runs on loopback with a 1 s scrape
and rule evaluation interval, its TSDB in a temporary directory, and the shipped rules
(deploy/monitoring/rules.py) rendered with every `for:` at 0 s, the only difference from the
shipped file (`render_rule_file(hold=...)`): the expressions are the same. The JWKS server
answers 500 from some point on; the token filter's next scheduled fetch fails, keeps the last
good keys, and `FapiGuardJwksFetchFailing` must fire for that issuer within seconds, while
`FapiGuardJwksNoKeys` must not (the keys stay).
"""
from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from requests_oauth2client import DPoPKey

from harness import ROOT, Envoy, Issuer, JwksServer, free_port, wait_port

pytestmark = pytest.mark.e2e

sys.path.insert(0, str(ROOT / "deploy" / "monitoring"))
import rules  # noqa: E402  (deploy/monitoring/rules.py)

DASHBOARD = ROOT / "deploy" / "monitoring" / "dashboard.json"
API, AUD = "alerts-e2e", "alerts-e2e"
# Panels whose queries must return series after the requests below (the others may be empty:
# no failures yet, no remote Wasm fetch).
KEY_PANELS = {
    "Requests let through, per filter (/s)", "Refusals by reason (/s)", "JWKS keys loaded",
    "Age of the last good JWKS fetch", "JWKS fetches failing (1 = last fetch failed)",
    "Replay cache occupancy (of its capacity)", "Live proofs and capacity",
    "Host verifier available (0 = software only)", "Wasm VMs running",
}


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if not found:
        pytest.fail("no `prometheus` binary: run scripts/bootstrap.sh (Debian package prometheus)")
    return found


class Prometheus:
    """`prometheus` on a loopback port scraping `targets` every second with `rule_file`."""

    def __init__(self, tmp: Path, targets: list[str], rule_file: Path):
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [str(rule_file)],
            "scrape_configs": [{"job_name": "envoy", "metrics_path": "/stats/prometheus",
                                "static_configs": [{"targets": targets}]}],
        }
        cfg = tmp / "prometheus.yml"
        cfg.write_text(json.dumps(config))  # JSON is YAML
        self.log = open(tmp / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [prometheus_binary(), f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, 20)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if requests.get(self.url + "/-/ready", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError("prometheus did not become ready: " + (tmp / "prometheus.log").read_text()[-2000:])

    def query(self, expr: str) -> dict:
        r = requests.get(self.url + "/api/v1/query", params={"query": expr}, timeout=5)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", (expr, r.status_code, body)
        return body["data"]

    def alerts(self, name: str) -> list[dict]:
        body = requests.get(self.url + "/api/v1/alerts", timeout=5).json()
        assert body["status"] == "success", body
        return [a for a in body["data"]["alerts"] if a["labels"].get("alertname") == name]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def wait_for(what, seconds: float):
    deadline = time.time() + seconds
    while time.time() < deadline:
        got = what()
        if got:
            return got
        time.sleep(0.25)
    return what()


def panel_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] if p["type"] != "row" for t in p["targets"]]


def test_jwks_outage_fires_the_alert_and_dashboard_queries_evaluate(upstream, tmp_path):
    issuer = Issuer("https://idp.alerts.test/realms/health")
    jwks = JwksServer(issuer.jwks())
    policy = {
        "api": {"name": API, "audience": AUD},
        "issuers": [{"issuer": issuer.iss, "jwks_uri": jwks.uri, "jwks_cluster": "issuer_jwks",
                     "jwks_refresh_seconds": 1}],
        "token": {"schemes": ["DPoP"]},
        "routes": [{"path_prefix": "/api", "require": "token"}],
    }
    rule_file = tmp_path / "rules.yml"
    rule_file.write_text(rules.render_rule_file(hold="0s"))
    key = DPoPKey.generate(alg="ES256")
    token = issuer.token(aud=AUD, cnf={"jkt": key.private_key.public_jwk().thumbprint()})
    ath = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()
    prom = None
    try:
        with Envoy(policy, upstream.port, filters=["token", "dpop"]) as e:
            assert wait_for(lambda: e.counter("token.jwks.fetch_ok") >= 1, 10)
            for _ in range(3):
                proof = str(key.proof(htm="GET", htu=e.url + "/api/x", ath=ath))
                assert e.get("/api/x", {"Authorization": "DPoP " + token, "DPoP": proof}).status_code == 200
            assert e.get("/api/x", {"Authorization": "DPoP " + issuer.token(aud="other")}).status_code == 401
            prom = Prometheus(tmp_path, [f"127.0.0.1:{e.admin_port}"], rule_file)
            started = time.time()

            # Scraped, with the labels; the JWKS is healthy: no JWKS alert.
            keys = f'fapi_guard_token_jwks_keys{{api="{API}",issuer="{issuer.iss}"}}'
            assert wait_for(lambda: prom.query(keys)["result"], 15), prom.query("up")
            for name in ("FapiGuardJwksFetchFailing", "FapiGuardJwksNoKeys"):
                assert prom.alerts(name) == [], name

            # Every panel query evaluates; the key ones return series (two scrapes for rate()).
            assert wait_for(lambda: prom.query(f'count_over_time({keys}[1m]) >= 2')["result"], 10)
            queries = panel_queries()
            assert len(queries) >= 15, queries
            answered: dict[str, int] = {}
            for title, expr in queries:
                data = prom.query(expr.replace("$api", API))
                answered[title] = answered.get(title, 0) + len(data["result"])
            # A key panel shows something (this API runs no fhir_scope filter: that target of
            # a per-filter panel is empty).
            assert KEY_PANELS <= set(answered), KEY_PANELS - set(answered)
            assert all(answered[t] for t in KEY_PANELS), {t: answered[t] for t in KEY_PANELS}
            refusals = prom.query(next(q for t, q in queries if t == "Refusals by reason (/s)").replace("$api", API))
            assert any(r["metric"].get("reason") == "wrong_audience" for r in refusals["result"]), refusals

            # The outage: the next scheduled fetch (every second) fails, the keys stay.
            jwks.status = 500

            def firing():
                return [a for a in prom.alerts("FapiGuardJwksFetchFailing") if a["state"] == "firing"]

            fired = wait_for(firing, 20)
            assert fired, (prom.alerts("FapiGuardJwksFetchFailing"), e.stats())
            assert fired[0]["labels"]["issuer"] == issuer.iss and fired[0]["labels"]["api"] == API, fired
            assert fired[0]["labels"]["severity"] == "warning", fired
            assert prom.alerts("FapiGuardJwksNoKeys") == []  # the last good keys stay
            assert time.time() - started < 45
    finally:
        if prom:
            prom.stop()
        jwks.stop()
