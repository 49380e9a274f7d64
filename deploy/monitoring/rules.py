#!/usr/bin/env python3
"""The guard's Prometheus alert rules: one source for the rule file and the Kubernetes
`PrometheusRule` (docs/platform-guide.md, "Alerts").

    python3 deploy/monitoring/rules.py            # rewrites the two files below
    python3 deploy/monitoring/rules.py --check    # exit 1 if they differ from a fresh render

- `fapi-guard.rules.yml`: a Prometheus rule file (`rule_files:`), checked with
  `promtool check rules` and unit-tested with `promtool test rules fapi-guard.rules.test.yml`
  (tests/test_monitoring.py);
- `prometheusrule.yaml`: the same groups as a prometheus-operator `PrometheusRule`
  (`monitoring.coreos.com/v1`, `spec.groups` is the rule file's `groups`).

The metric names are those of docs/platform-guide.md "Metrics" (labels from
envoy/stats_config.py). `render(hold=...)` replaces every `for:` duration: only the end-to-end
test (tests/e2e/test_alerts.py) uses it, to see an alert fire within seconds; the expressions
are the shipped ones.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RULE_FILE = HERE / "fapi-guard.rules.yml"
PROMETHEUS_RULE = HERE / "prometheusrule.yaml"

# Refusals of every filter, one family per filter, the reason a label. Not
# `rate({__name__=~"fapi_guard_.*_denied"})`: every filter defines every reason, and without
# their names `fapi_guard_token_denied{reason="x"}` and `fapi_guard_dpop_denied{reason="x"}`
# are one label set twice, which Prometheus refuses ("vector cannot contain metrics with the
# same labelset"). Each filter's rate gets a `filter` label instead.
DENIED_RATE = "fapi_guard:denied:rate5m"
RECORDS = [
    ("fapi-guard-recording", DENIED_RATE,
     "sum by (api, filter, reason) (\n  "
     + "\n  or ".join(f'label_replace(rate(fapi_guard_{f}_denied[5m]), "filter", "{f}", "", "")'
                      for f in ("token", "dpop", "fhir_scope"))
     + "\n)"),
]
RUNBOOK = "docs/platform-guide.md"

# (group, alert, expr, for, severity, summary, description). `{{ $labels.x }}` is Prometheus
# templating, filled in when the alert fires (labels only, no `$value`: the unit tests of
# deploy/monitoring/rule_tests.py spell every annotation out).
ALERTS = [
    ("fapi-guard-jwks", "FapiGuardJwksFetchFailing",
     "max by (api, issuer) (fapi_guard_token_jwks_last_failure_timestamp_seconds)\n"
     "  > max by (api, issuer) (fapi_guard_token_jwks_last_success_timestamp_seconds)",
     "5m", "warning",
     "JWKS fetches for {{ $labels.issuer }} are failing ({{ $labels.api }})",
     "The last JWKS fetch answer for {{ $labels.issuer }} was refused or never came, and no "
     "fetch succeeded since. The guard keeps the last good keys; a key rotation will not be "
     "picked up. Check jwks_cluster reachability (ServiceEntry, DestinationRule) and the "
     "proxy log (`jwks fetch from ... failed (<why>)`)."),
    ("fapi-guard-jwks", "FapiGuardJwksStale",
     "time() - max by (api, issuer) (fapi_guard_token_jwks_last_success_timestamp_seconds) > 3600",
     "10m", "warning",
     "JWKS keys of {{ $labels.issuer }} are over an hour old ({{ $labels.api }})",
     "No JWKS fetch for {{ $labels.issuer }} succeeded for over an hour (never, if the age is "
     "the Unix time). The threshold assumes `issuers[i].jwks_refresh_seconds` at most 3600 "
     "(default 300)."),
    ("fapi-guard-jwks", "FapiGuardJwksNoKeys",
     "max by (api, issuer) (fapi_guard_token_jwks_keys) == 0",
     "1m", "critical",
     "No JWKS keys loaded for {{ $labels.issuer }} ({{ $labels.api }})",
     "Every token of {{ $labels.issuer }} is refused with 503 jwks_unavailable until a fetch "
     "succeeds."),
    ("fapi-guard-dpop", "FapiGuardReplayCacheNearBudget",
     "max by (api) (fapi_guard_dpop_replay_cache_live_proofs)\n"
     "  / max by (api) (fapi_guard_dpop_replay_cache_capacity) > 0.8",
     "5m", "warning",
     "DPoP replay cache over 80% of its capacity ({{ $labels.api }})",
     "Live proofs are over 80% of the cache's capacity; past it new "
     "proofs get 503 dpop_replay_cache_full. Raise dpop.replay_cache.peak_proofs_per_second "
     "(docs/dpop.md, \"Replay cache\")."),
    ("fapi-guard-dpop", "FapiGuardReplayCacheFull",
     'sum by (api) (rate(fapi_guard_dpop_denied{reason="dpop_replay_cache_full"}[5m])) > 0',
     "1m", "critical",
     "DPoP proofs refused because the replay cache is full ({{ $labels.api }})",
     "Clients get 503 dpop_replay_cache_full. Raise dpop.replay_cache.peak_proofs_per_second."),
    ("fapi-guard-denials", "FapiGuardDenialSpike",
     f"sum by (api, reason) ({DENIED_RATE}) > 0.5\n"
     f"and\n"
     f"sum by (api, reason) ({DENIED_RATE})\n"
     f"  > 3 * sum by (api, reason) (avg_over_time({DENIED_RATE}[1h] offset 5m))",
     "10m", "warning",
     "Refusals with reason {{ $labels.reason }} tripled ({{ $labels.api }})",
     "Over 0.5/s refusals with reason {{ $labels.reason }}, over three times the rate of "
     "the hour before. A client release, a key rotation or a probe: the reason "
     "code says which (docs/reason-codes.md)."),
    ("fapi-guard-verifier", "FapiGuardVerifierSoftwareFallback",
     "max by (api) (fapi_guard_verify_host_available) == 0",
     "15m", "warning",
     "Signatures verified in the Wasm module, not by the host ({{ $labels.api }})",
     "The proxy has no verify_signature host function: every signature is verified in the "
     "module (more CPU per request). Check the proxy version against README \"Supported "
     "Envoy versions\"."),
    ("fapi-guard-plugin", "FapiGuardWasmVmReloadFailing",
     "sum by (api, plugin) (increase(envoy_wasm_vm_reload_failure[15m])) > 0",
     "0s", "critical",
     "A guard Wasm VM failed to reload ({{ $labels.plugin }}, {{ $labels.api }})",
     "Envoy could not restart a failed Wasm VM: requests on it fail closed (503). Look for "
     "`Wasm VM failed` in the proxy log; roll back to the previous digest."),
    ("fapi-guard-plugin", "FapiGuardWasmFetchFailing",
     "sum by (api) (increase(envoy_wasm_remote_load_fetch_failures[15m])) > 0",
     "0s", "critical",
     "Envoy could not fetch a guard Wasm module ({{ $labels.api }})",
     "A remote `vm_config.code` fetch failed: the filter is not loaded and its listener "
     "refuses (fail closed)."),
    ("fapi-guard-plugin", "FapiGuardWasmNoVm",
     "max by (api) (envoy_wasm_envoy_wasm_runtime_v8_active) == 0",
     "5m", "critical",
     "No guard Wasm VM is running ({{ $labels.api }})",
     "A proxy labelled with the API runs no V8 VM: the plugin did not load (in Istio the agent "
     "put the deny-all RBAC filter `wasm-default-deny` in its place: every request gets 403)."),
]


def rule(alert, expr, hold, severity, summary, description):
    return {
        "alert": alert,
        "expr": expr,
        "for": hold,
        "labels": {"severity": severity},
        "annotations": {"summary": summary, "description": description,
                        "runbook": f"{RUNBOOK}, \"Alerts\" ({alert})"},
    }


def groups(hold: str | None = None) -> list[dict]:
    """The rule groups; `hold` replaces every `for:` (end-to-end test only)."""
    out: dict[str, list] = {}
    for group, record, expr in RECORDS:
        out.setdefault(group, []).append({"record": record, "expr": expr})
    for group, alert, expr, dur, severity, summary, description in ALERTS:
        out.setdefault(group, []).append(rule(alert, expr, hold or dur, severity, summary, description))
    return [{"name": name, "rules": rules} for name, rules in out.items()]


class _Literal(str):
    """A multi-line string written as a YAML block (`|`)."""


def _dump(doc) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def literal(dumper, data):
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)

    Dumper.add_representer(_Literal, literal)

    def blocks(x):
        if isinstance(x, dict):
            return {k: blocks(v) for k, v in x.items()}
        if isinstance(x, list):
            return [blocks(v) for v in x]
        return _Literal(x) if isinstance(x, str) and "\n" in x else x

    return yaml.dump(blocks(doc), Dumper=Dumper, sort_keys=False, width=100, allow_unicode=True)


HEADER = "# Generated by deploy/monitoring/rules.py; do not edit. docs/platform-guide.md, \"Alerts\".\n"


def render_rule_file(hold: str | None = None) -> str:
    return HEADER + _dump({"groups": groups(hold)})


def render_prometheus_rule(namespace: str = "istio-system") -> str:
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "fapi-guard", "namespace": namespace,
                     "labels": {"app.kubernetes.io/name": "fapi-guard"}},
        "spec": {"groups": groups()},
    }
    return HEADER + _dump(doc)


def rendered() -> dict[Path, str]:
    return {RULE_FILE: render_rule_file(), PROMETHEUS_RULE: render_prometheus_rule()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 if a committed file differs from a fresh render")
    a = ap.parse_args(argv)
    stale = []
    for path, text in rendered().items():
        if a.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print("stale (run deploy/monitoring/rules.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
