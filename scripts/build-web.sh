#!/usr/bin/env bash
# Builds the explainer page (web/): fapi-guard-core compiled to wasm32-unknown-unknown with
# wasm-bindgen, into web/dist/ (index.html, app.js, pkg/). Static files only, no server side:
#   scripts/build-web.sh && python3 -m http.server -d web/dist 8000   # then open localhost:8000
# Installs, idempotently, the wasm32-unknown-unknown target and wasm-bindgen-cli from crates.io
# at exactly the version the web crate uses (web/Cargo.toml pins `wasm-bindgen = "=X"`).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
say() { printf '[build-web] %s\n' "$*"; }

VERSION=$(sed -n 's/^wasm-bindgen = "=\([0-9.]*\)".*/\1/p' web/Cargo.toml)
[ -n "$VERSION" ] || { echo "build-web: no pinned wasm-bindgen version in web/Cargo.toml" >&2; exit 1; }

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  say "adding Rust target wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$VERSION" ]; then
  say "installing wasm-bindgen-cli $VERSION (crates.io)"
  cargo install --quiet wasm-bindgen-cli --version "$VERSION"
fi

say "building fapi-guard-web (wasm32-unknown-unknown, release)"
cargo build --quiet --release --target wasm32-unknown-unknown -p fapi-guard-web
rm -rf web/dist
mkdir -p web/dist
wasm-bindgen --target web --no-typescript --out-dir web/dist/pkg \
  target/wasm32-unknown-unknown/release/fapi_guard_web.wasm
cp web/index.html web/app.js web/dist/
say "ready: web/dist/index.html ($(du -sh web/dist | cut -f1)); serve it with: python3 -m http.server -d web/dist 8000"
