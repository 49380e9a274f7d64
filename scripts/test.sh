#!/usr/bin/env bash
# The whole test suite, on a fresh machine or this one: installs what it needs
# (scripts/bootstrap.sh), then lints, runs the native Rust tests, builds the Wasm
# filters and the explainer page, and runs the end-to-end tests against real Envoy and the
# page's test in headless Chromium.
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
echo "== cargo build --release --target wasm32-wasip1"
cargo build --release --target wasm32-wasip1 --quiet
echo "== fapi-guard CLI and the explainer page (wasm32-unknown-unknown + wasm-bindgen)"
cargo build --quiet -p fapi-guard
bash scripts/build-web.sh
echo "== pytest (Envoy end-to-end, configs, manifests, CLI agreement, browser)"
FAPI_GUARD_SKIP_BUILD=1 .venv/bin/python -m pytest "$@"
