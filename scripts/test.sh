#!/usr/bin/env bash
# The whole test suite, on a fresh machine or this one: installs what it needs
# (scripts/bootstrap.sh), then lints, runs the native Rust tests, builds the Wasm
# filters, the CLI and the explainer page, and runs the end-to-end tests against real Envoy
# (1.40, then a subset on 1.36), the page's test in headless Chromium and a short run of every
# fuzz target.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/bootstrap.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings (native and wasm32-wasip1)"
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo clippy --target wasm32-wasip1 --quiet -- -D warnings
echo "== cargo test (native)"
cargo test --workspace --quiet
echo "== fuzz: every target briefly (fuzz/README.md; FUZZ_SECONDS, default 4 each)"
bash scripts/fuzz.sh "${FUZZ_SECONDS:-4}"
echo "== scripts/build-wasm.sh (cargo build --release --target wasm32-wasip1, wasm-opt)"
bash scripts/build-wasm.sh --quiet
echo "== fapi-guard CLI and the explainer page (wasm32-unknown-unknown + wasm-bindgen)"
cargo build --quiet -p fapi-guard
bash scripts/build-web.sh
echo "== pytest (Envoy end-to-end, configs, manifests, CLI agreement, browser)"
FAPI_GUARD_SKIP_BUILD=1 .venv/bin/python -m pytest "$@"
# The oldest supported Envoy (README "Supported Envoy versions"): every filter, both verifier
# paths, body and response decisions, hostile inputs, hot reloads, the metric names and labels,
# and the JWKS alert against a real Prometheus.
echo "== pytest subset against Envoy $(.venv-envoy-1.36/bin/envoy --version | grep -o '/1\.[0-9.]*/' | tr -d /)"
ENVOY_BIN="$ROOT/.venv-envoy-1.36/bin/envoy" FAPI_GUARD_SKIP_BUILD=1 .venv/bin/python -m pytest -q \
  tests/e2e/test_envoy_compat.py tests/e2e/test_token.py tests/e2e/test_dpop.py \
  tests/e2e/test_fhir_scope.py tests/e2e/test_hostile.py tests/e2e/test_faults.py tests/e2e/test_cors_head.py \
  tests/e2e/test_metrics.py tests/e2e/test_alerts.py
