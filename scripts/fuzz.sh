#!/usr/bin/env bash
# Runs every coverage-guided fuzz target (fuzz/, cargo-fuzz + libFuzzer) for SECONDS each
# (default 60). Installs the nightly toolchain and cargo-fuzz if missing. New corpus entries
# go to fuzz/corpus/<target> (not committed), logs to a fresh temporary directory; seeds come
# from fuzz/seeds/<target>
# (built by fuzz/make_seeds.py). Any crash fails the script; the input is left in
# fuzz/artifacts/<target>/ and must become a regression test in filters/core/tests/.
#   scripts/fuzz.sh [SECONDS]           every target
#   FUZZ_TARGETS="htu xfcc" scripts/fuzz.sh 300
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SECONDS_EACH=${1:-60}

say() { printf '[fuzz] %s\n' "$*"; }

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  say "installing the nightly toolchain (cargo-fuzz needs -Z sanitizer flags)"
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  say "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi

say "building the fuzz targets (nightly, ASan, debug assertions)"
cargo +nightly fuzz build --fuzz-dir fuzz

targets=${FUZZ_TARGETS:-$(cargo +nightly fuzz list --fuzz-dir fuzz)}
# One log directory per run, so runs at the same time never share a log.
logs=$(mktemp -d "${TMPDIR:-/tmp}/fapi-fuzz.XXXXXX")
say "libFuzzer logs in $logs"
failed=()
summary=()
for t in $targets; do
  mkdir -p "fuzz/corpus/$t"
  log="$logs/$t.log"
  say "$t: ${SECONDS_EACH}s"
  if cargo +nightly fuzz run --fuzz-dir fuzz "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
      -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
      >"$log" 2>&1; then
    # libFuzzer's last status line: "#N DONE cov: C ft: F corp: K/S ... exec/s: E ..."
    line=$(grep -aE '^#[0-9]+.*(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -1 || true)
    summary+=("$t: $line")
  else
    failed+=("$t")
    tail -40 "$log"
  fi
done
say "summary (target: last libFuzzer status line)"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  say "CRASH in: ${failed[*]} (inputs under fuzz/artifacts/; logs in $logs)"
  exit 1
fi
