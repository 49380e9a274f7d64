#!/usr/bin/env bash
# Builds the one Wasm module: the one build step every caller uses (scripts/test.sh,
# scripts/demo.sh, tests/harness.py build_wasm(), bench/run.py, tools/package_wasm.py).
#
#   scripts/build-wasm.sh [cargo build arguments...]
#
# 1. `cargo build --release --target wasm32-wasip1 [args]` (default members: the one module
#    `fapi_guard.wasm`, filters/guard, and the crates it is made of; CARGO_TARGET_DIR is honoured);
# 2. `wasm-metadce` and `wasm-opt` (Debian `binaryen`, installed by scripts/bootstrap.sh) on each module cargo
#    produced, from the raw cargo output in `deps/` to the usual file name
#    (`target/wasm32-wasip1/release/fapi_guard.wasm`; bench/run.py also builds the empty
#    filter `fapi_bench_empty_filter.wasm` through here), so running it
#    twice gives the same bytes. Size target and the numbers: bench/README.md, "Size".
# FAPI_GUARD_NO_WASM_OPT=1 skips step 2 (the module then stays ~2x larger; same behaviour).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

cargo build --release --target wasm32-wasip1 "$@"

OUT="${CARGO_TARGET_DIR:-$ROOT/target}/wasm32-wasip1/release"
if [ "${FAPI_GUARD_NO_WASM_OPT:-}" = 1 ]; then
  exit 0
fi
if ! command -v wasm-opt >/dev/null 2>&1 || ! command -v wasm-metadce >/dev/null 2>&1; then
  echo "build-wasm.sh: wasm-opt or wasm-metadce not found (apt-get install binaryen, or run scripts/bootstrap.sh;" \
       "FAPI_GUARD_NO_WASM_OPT=1 to skip)" >&2
  exit 1
fi
# The proxy-wasm ABI exports an HTTP filter is called through (the ABI's memory and start,
# the root context's lifecycle, the stream callbacks, the tick, HTTP call answers; and the
# foreign-function callback, kept because the filters call Envoy's `verify_signature`).
HTTP_FILTER_EXPORTS="memory _initialize proxy_abi_version_0_2_1 proxy_on_memory_allocate
  proxy_on_vm_start proxy_on_configure proxy_on_context_create proxy_on_tick proxy_on_done
  proxy_on_delete proxy_on_log proxy_on_request_headers proxy_on_request_body
  proxy_on_request_trailers proxy_on_response_headers proxy_on_response_body
  proxy_on_response_trailers proxy_on_http_call_response proxy_on_foreign_function"
for name in fapi_guard fapi_bench_empty_filter; do
  raw="$OUT/deps/$name.wasm"
  [ -f "$raw" ] || continue
  # Skip when ours was made from exactly this cargo output (cargo re-links its output on
  # every build, so timestamps do not tell).
  stamp="$OUT/$name.wasm-opt.stamp"
  sum=$( (sha256sum < "$raw"; echo "$HTTP_FILTER_EXPORTS") | sha256sum | cut -d' ' -f1)
  if [ -f "$OUT/$name.wasm" ] && ! [ "$raw" -ef "$OUT/$name.wasm" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ]; then
    continue
  fi
  # -Oz without inlining (-aimfs/-fimfs/-ocimfs 0): the same size as -O3 (the Rust side is
  # already optimised, LTO) but no huge inlined functions, which cost V8 ~16 MB more RSS for
  # the filters (bench/README.md, "Size" and "Memory"). Strips names and debug info.
  # First drop the exports of callbacks an HTTP filter that makes no gRPC call and uses no
  # shared queue is never sent (the proxy-wasm SDK exports every ABI callback: network-filter,
  # gRPC and queue ones), and the code only they reach (-20 KB). The host looks each callback up at load and skips one that is not
  # exported. tests/test_module_size.py fails if the filters start using one of them.
  graph="$OUT/$name.exports.json"
  {
    printf '[{"name":"root","root":true,"reaches":['
    sep=""
    for e in $HTTP_FILTER_EXPORTS; do printf '%s"%s"' "$sep" "$e"; sep=","; done
    printf ']}'
    for e in $HTTP_FILTER_EXPORTS; do printf ',{"name":"%s","export":"%s"}' "$e" "$e"; done
    printf ']\n'
  } > "$graph"
  wasm-metadce -f "$graph" "$raw" -o "$OUT/$name.wasm.dce" > /dev/null
  wasm-opt -Oz -aimfs 0 -fimfs 0 -ocimfs 0 --strip-debug --strip-producers "$OUT/$name.wasm.dce" -o "$OUT/$name.wasm.tmp"
  rm -f "$OUT/$name.wasm.dce"
  mv -f "$OUT/$name.wasm.tmp" "$OUT/$name.wasm"
  echo "$sum" > "$stamp"
done
