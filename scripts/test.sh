#!/usr/bin/env bash
# The whole test suite, on a fresh machine or this one: installs what it needs
# (scripts/bootstrap.sh), then lints, runs the native Rust tests, builds the Wasm
# filters and runs the end-to-end tests against real Envoy.
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
echo "== scripts/build-wasm.sh (cargo build --release --target wasm32-wasip1, wasm-opt)"
bash scripts/build-wasm.sh --quiet
echo "== pytest (Envoy end-to-end, configs, manifests)"
FAPI_GUARD_SKIP_BUILD=1 .venv/bin/python -m pytest "$@"
