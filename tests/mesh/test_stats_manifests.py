"""tools/gen_wasmplugins.py and the metric labels in Istio (docs/platform-guide.md, "Metrics"):
a sidecar API gets an EnvoyFilter `<api>-stats` patching the proxy's bootstrap with the same
`stats_config.stats_tags` envoy/render.py gives the local proxies (envoy/stats_config.py), valid
against Istio's EnvoyFilter CRD, and names the `proxy.istio.io/config` its pods need.

Checked statically: there is no cluster here. The tags in the manifest, applied to the Envoy
stat names of the "Metrics" table the way Envoy's regex tag extractor does (first group out of
the name, second the value), give the table's Prometheus names and labels; the stats matcher
keeps every stat of the table and Envoy's Wasm stats the alert rules use.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from test_manifests import DEPLOY, GATEWAY, PLACEHOLDER_POLICY, make_root, run_gen_all
from test_validation import istio_errors

ROOT = Path(__file__).resolve().parents[2]
ISSUER = PLACEHOLDER_POLICY["issuers"][0]["issuer"]


def stats_docs(gen, tmp_path, deploy):
    docs = run_gen_all(gen, make_root(tmp_path, deploy=deploy))
    return docs, [d for d in docs if d["metadata"]["name"].endswith("-stats")]


def table_rows() -> list[tuple[str, str]]:
    """(Envoy stat, Prometheus series) of every row of the "Metrics" table."""
    text = (ROOT / "docs" / "platform-guide.md").read_text()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `wasmcustom."):
            cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
            rows.append((cells[0], cells[1]))
    assert len(rows) >= 15, rows
    return rows


def extract(tags: list[dict], stat: str) -> tuple[str, dict]:
    """Envoy's tag extraction (regex tags; fixed values added), then the Prometheus name."""
    labels = {}
    for t in tags:
        if "fixed_value" in t:
            labels[t["tag_name"]] = t["fixed_value"]
            continue
        m = re.search(t["regex"], stat)
        if m:
            labels[t["tag_name"]] = m.group(2)
            stat = stat[:m.start(1)] + stat[m.end(1):]
    return stat.removeprefix("wasmcustom.").replace(".", "_"), labels


def test_sidecar_gets_the_stats_tags_as_a_bootstrap_patch(gen_wasmplugins, tmp_path):
    docs, (ef,) = stats_docs(gen_wasmplugins, tmp_path, DEPLOY)
    assert ef["kind"] == "EnvoyFilter" and not istio_errors(ef), istio_errors(ef)
    plugins = [d for d in docs if d["kind"] == "WasmPlugin"]
    assert plugins and all(p["spec"]["selector"]["matchLabels"] == ef["spec"]["workloadSelector"]["labels"]
                           for p in plugins)
    (patch,) = ef["spec"]["configPatches"]
    assert patch["applyTo"] == "BOOTSTRAP" and patch["patch"]["operation"] == "MERGE" and "match" not in patch
    stats = patch["patch"]["value"]["stats_config"]
    # Tags only: Istio's own `use_all_default_tags: false` and tag list stay as they are.
    assert list(stats) == ["stats_tags"], stats
    tags = stats["stats_tags"]
    assert {"tag_name": "api", "fixed_value": PLACEHOLDER_POLICY["api"]["name"]} in tags

    # What those tags make of every row of the table: its Prometheus name and labels.
    for stat, prom in table_rows():
        example = stat.replace("<filter>", "dpop").replace("<reason>", "dpop_replay").replace("<issuer>", ISSUER)
        want = prom.replace("<filter>", "dpop").replace("<reason>", "dpop_replay").replace("<issuer>", ISSUER)
        name, _, rest = want.partition("{")
        want_labels = dict(re.findall(r'(\w+)="([^"]*)"', rest)) | {"api": "placeholder-api"}
        assert extract(tags, example) == (name, want_labels), (stat, extract(tags, example))
    # Envoy's own per-plugin Wasm stats get the plugin as a label.
    assert extract(tags, "wasm.placeholder-api-token.vm_reload_failure") == (
        "wasm_vm_reload_failure", {"plugin": "placeholder-api-token", "api": "placeholder-api"})


def test_the_proxy_config_the_pods_need(gen_wasmplugins, tmp_path):
    _, (ef,) = stats_docs(gen_wasmplugins, tmp_path, DEPLOY)
    config = json.loads(ef["metadata"]["annotations"]["fapi-guard/requires-proxy-config"])
    # Istio applies BOOTSTRAP patches only to an agent that takes its bootstrap from istiod.
    assert config["proxyMetadata"] == {"BOOTSTRAP_XDS_AGENT": "true"}
    prefixes = config["proxyStatsMatcher"]["inclusionPrefixes"]
    for stat, _ in table_rows():
        assert any(stat.startswith(p) for p in prefixes), stat
    # Envoy's Wasm stats the alert rules of deploy/monitoring use.
    for stat in ("wasm.envoy.wasm.runtime.v8.active", "wasm.placeholder-api-token.vm_reload_failure",
                 "wasm.remote_load_fetch_failures"):
        assert any(stat.startswith(p) for p in prefixes), stat


def test_a_gateway_gets_no_stats_patch(gen_wasmplugins, tmp_path):
    docs, stats = stats_docs(gen_wasmplugins, tmp_path, GATEWAY)
    assert docs and not stats
