#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz_*.c) with clang, everything instrumented with
# ASan + UBSan, and runs each for FUZZ_SECONDS (default 20) from a seed corpus: the files
# its header names ("// FUZZ_CORPUS: DIR PATTERN"), plus "// FUZZ_OPTIONS: ..." flags.
# Fails on the first crash, leak or sanitizer report. scripts/test.sh calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-20}
CC=clang EXTRA_PACKAGES="clang libclang-rt-14-dev libomp-14-dev" BUILD_DIR=build-fuzz \
  BUILD_TYPE=RelWithDebInfo CMAKE_ARGS="-DGROUNDC_FUZZ=ON -DGROUNDC_CUDA=OFF" scripts/setup.sh
for src in tests/fuzz_*.c; do
  name=$(basename "$src" .c)
  corpus=build-fuzz/corpus/$name
  mkdir -p "$corpus"
  read -r dir pattern < <(sed -n 's|^// FUZZ_CORPUS: ||p' "$src")
  [ -n "${dir:-}" ] && find "$dir" -name "$pattern" -size -1M -exec cp {} "$corpus"/ \;
  options=$(sed -n 's|^// FUZZ_OPTIONS: ||p' "$src")
  echo "== $name: ${seconds}s from $(ls "$corpus" | wc -l) seed files"
  # shellcheck disable=SC2086
  (cd build-fuzz && ./tests/"$name" "corpus/$name" -max_total_time="$seconds" -rss_limit_mb=2048 \
     -print_final_stats=1 $options 2>"fuzz-$name.log") ||
    { tail -40 "build-fuzz/fuzz-$name.log"; echo "fuzz: $name failed" >&2; exit 1; }
  grep -E "^stat::number_of_executed_runs" "build-fuzz/fuzz-$name.log" || true
done
echo "fuzz: all targets ran clean"
