#!/usr/bin/env python3
"""Unit tests of the alert rules for `promtool test rules` (docs/platform-guide.md, "Alerts").

    python3 deploy/monitoring/rule_tests.py            # rewrites fapi-guard.rules.test.yml
    python3 deploy/monitoring/rule_tests.py --check    # exit 1 if it differs from a fresh render
    promtool test rules deploy/monitoring/fapi-guard.rules.test.yml

Each case below is written by hand: input series (promtool's expanding notation, one sample a
minute from time 0) and, at each evaluation time, which alerts fire with which labels. Only
the expected annotations are filled in from the rules (their `{{ $labels.x }}` with the case's
labels), because promtool compares them too. Every alert has a case where it fires and one
where it does not yet (or not at all).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rules  # noqa: E402

TEST_FILE = rules.HERE / "fapi-guard.rules.test.yml"
API = {"api": "fhir-api"}
POD = {"instance": "10.0.0.7:15090", "job": "envoy-stats", **API}
ISS = {"issuer": "https://idp.example.test/realms/health"}


def series(name: str, labels: dict, values: str) -> dict:
    body = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{name}{{{body}}}", "values": values}


# (case name, input series, [(eval minutes, alert, [labels of each firing alert])])
CASES = [
    ("JWKS: the last answer failed after a success; recovers with the next success", [
        series("fapi_guard_token_jwks_last_success_timestamp_seconds", {**POD, **ISS}, "60x8 540x20"),
        series("fapi_guard_token_jwks_last_failure_timestamp_seconds", {**POD, **ISS}, "0x1 120x20"),
    ], [
        (1, "FapiGuardJwksFetchFailing", []),
        (5, "FapiGuardJwksFetchFailing", []),  # pending: `for: 5m`
        (7, "FapiGuardJwksFetchFailing", [{**API, **ISS}]),
        (9, "FapiGuardJwksFetchFailing", []),  # a success after the failure
    ]),
    ("JWKS: keys over an hour old", [
        series("fapi_guard_token_jwks_last_success_timestamp_seconds", {**POD, **ISS}, "60x100"),
        series("fapi_guard_token_jwks_keys", {**POD, **ISS}, "2x100"),
    ], [
        (60, "FapiGuardJwksStale", []),
        (65, "FapiGuardJwksStale", []),  # pending since 61m
        (72, "FapiGuardJwksStale", [{**API, **ISS}]),
        (72, "FapiGuardJwksNoKeys", []),
    ]),
    ("JWKS: no keys loaded", [
        series("fapi_guard_token_jwks_keys", {**POD, **ISS}, "3x3 0x10"),
    ], [
        (3, "FapiGuardJwksNoKeys", []),
        (6, "FapiGuardJwksNoKeys", [{**API, **ISS}]),
    ]),
    ("replay cache: 90% of its capacity", [
        series("fapi_guard_dpop_replay_cache_capacity", POD, "1000x30"),
        series("fapi_guard_dpop_replay_cache_live_proofs", POD, "100x5 900x25"),
        series("fapi_guard_dpop_denied", {**POD, "reason": "dpop_replay_cache_full"}, "0x30"),
    ], [
        (8, "FapiGuardReplayCacheNearBudget", []),
        (12, "FapiGuardReplayCacheNearBudget", [API]),
        (12, "FapiGuardReplayCacheFull", []),
    ]),
    ("replay cache: proofs refused as full", [
        series("fapi_guard_dpop_denied", {**POD, "reason": "dpop_replay_cache_full"}, "0x5 10+10x20"),
    ], [
        (5, "FapiGuardReplayCacheFull", []),
        (8, "FapiGuardReplayCacheFull", [API]),
    ]),
    ("denials: one reason jumps from 0.1/s to 2/s, another stays at 1/s", [
        series("fapi_guard_token_denied", {**POD, "reason": "wrong_audience"}, "0+6x70 540+120x30"),
        series("fapi_guard_token_denied", {**POD, "reason": "expired"}, "0+60x100"),
        series("fapi_guard_dpop_denied", {**POD, "reason": "dpop_replay"}, "0x100"),
        # Every filter defines every reason: the same reason of another filter, as Envoy has it.
        series("fapi_guard_dpop_denied", {**POD, "reason": "wrong_audience"}, "0x100"),
        series("fapi_guard_fhir_scope_denied", {**POD, "reason": "wrong_audience"}, "0x100"),
    ], [
        (70, "FapiGuardDenialSpike", []),
        (78, "FapiGuardDenialSpike", []),  # pending: `for: 10m`
        (88, "FapiGuardDenialSpike", [{**API, "reason": "wrong_audience"}]),
    ]),
    ("verifier: one proxy without the host verifier", [
        series("fapi_guard_verify_host_available", POD, "0x30"),
        series("fapi_guard_verify_host_available", {**POD, "api": "other-api"}, "1x30"),
    ], [
        (10, "FapiGuardVerifierSoftwareFallback", []),
        (20, "FapiGuardVerifierSoftwareFallback", [API]),
    ]),
    ("plugin: a Wasm VM reload failed", [
        series("envoy_wasm_vm_reload_failure", {**POD, "plugin": "fapi_token"}, "0x5 1x10"),
        series("envoy_wasm_vm_reload_failure", {**POD, "plugin": "fapi_dpop"}, "0x15"),
    ], [
        (5, "FapiGuardWasmVmReloadFailing", []),
        (7, "FapiGuardWasmVmReloadFailing", [{**API, "plugin": "fapi_token"}]),
    ]),
    ("plugin: a remote Wasm fetch failed", [
        series("envoy_wasm_remote_load_fetch_failures", POD, "0 0 1 1 1"),
    ], [
        (1, "FapiGuardWasmFetchFailing", []),
        (3, "FapiGuardWasmFetchFailing", [API]),
    ]),
    ("plugin: the VMs are gone", [
        series("envoy_wasm_envoy_wasm_runtime_v8_active", POD, "6x3 0x10"),
    ], [
        (5, "FapiGuardWasmNoVm", []),
        (10, "FapiGuardWasmNoVm", [API]),
    ]),
]


def _alerts() -> dict[str, dict]:
    return {r["alert"]: r for g in rules.groups() for r in g["rules"] if "alert" in r}


def _fill(template: str, labels: dict) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)


def tests() -> dict:
    alerts = _alerts()
    out = []
    for name, inputs, evals in CASES:
        checks = []
        for minutes, alert, firing in evals:
            rule = alerts[alert]
            checks.append({
                "eval_time": f"{minutes}m",
                "alertname": alert,
                "exp_alerts": [{
                    "exp_labels": {**labels, **rule["labels"]},
                    "exp_annotations": {k: _fill(v, labels) for k, v in rule["annotations"].items()},
                } for labels in firing],
            })
        out.append({"name": name, "interval": "1m", "input_series": inputs, "alert_rule_test": checks})
    return {"rule_files": [rules.RULE_FILE.name], "evaluation_interval": "1m", "tests": out}


def render() -> str:
    return rules.HEADER.replace("rules.py", "rule_tests.py") + rules._dump(tests())


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in argv:
        if not TEST_FILE.exists() or TEST_FILE.read_text(encoding="utf-8") != text:
            print(f"stale (run deploy/monitoring/rule_tests.py): {TEST_FILE}", file=sys.stderr)
            return 1
        return 0
    TEST_FILE.write_text(text, encoding="utf-8")
    print(f"wrote {TEST_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
