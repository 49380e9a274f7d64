#!/usr/bin/env bash
# Builds the one Wasm module: the one build step every caller uses (scripts/test.sh,
# scripts/demo.sh, tests/harness.py build_wasm(), bench/run.py, tools/package_wasm.py).
#
#   scripts/build-wasm.sh [cargo build arguments...]
#
# 1. `cargo build --release --target wasm32-wasip1 [args]` (default members: the one module
#    `fapi_guard.wasm`, filters/guard, and the crates it is made of; CARGO_TARGET_DIR is honoured);
# 2. `wasm-opt` (Debian `binaryen`, installed by scripts/bootstrap.sh) on each module cargo
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
if ! command -v wasm-opt >/dev/null 2>&1; then
  echo "build-wasm.sh: wasm-opt not found (apt-get install binaryen, or run scripts/bootstrap.sh;" \
       "FAPI_GUARD_NO_WASM_OPT=1 to skip)" >&2
  exit 1
fi
for name in fapi_guard fapi_bench_empty_filter; do
  raw="$OUT/deps/$name.wasm"
  [ -f "$raw" ] || continue
  # Skip when ours was made from exactly this cargo output (cargo re-links its output on
  # every build, so timestamps do not tell).
  stamp="$OUT/$name.wasm-opt.stamp"
  sum=$(sha256sum "$raw" | cut -d' ' -f1)
  if [ -f "$OUT/$name.wasm" ] && ! [ "$raw" -ef "$OUT/$name.wasm" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ]; then
    continue
  fi
  # -Oz without inlining (-aimfs/-fimfs/-ocimfs 0): the same size as -O3 (the Rust side is
  # already optimised, LTO) but no huge inlined functions, which cost V8 ~16 MB more RSS for
  # the filters (bench/README.md, "Size" and "Memory"). Strips names and debug info.
  wasm-opt -Oz -aimfs 0 -fimfs 0 -ocimfs 0 --strip-debug --strip-producers "$raw" -o "$OUT/$name.wasm.tmp"
  mv -f "$OUT/$name.wasm.tmp" "$OUT/$name.wasm"
  echo "$sum" > "$stamp"
done
