#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz_*.c) with clang, everything instrumented with
# ASan + UBSan, and runs each for FUZZ_SECONDS (default 20) from a seed corpus: the files
# its header names ("// FUZZ_CORPUS: DIR [PATTERN]", every file when no pattern), plus
# "// FUZZ_OPTIONS: ..." flags. Targets run FUZZ_JOBS at a time (default: one per core), so
# N targets take about ceil(N / cores) x FUZZ_SECONDS after the build.
# Fails on any crash, leak or sanitizer report: the target's log is build-fuzz/fuzz-NAME.log
# and the input that did it build-fuzz/fuzz-NAME-crash-* (or -leak-, -oom-, -timeout-).
# scripts/test.sh calls it.
#   build-fuzz/tests/fuzz_shard build-fuzz/fuzz-fuzz_shard-crash-...   # replay one input
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-20}
jobs=${FUZZ_JOBS:-$(nproc)}
targets=()
for src in tests/fuzz_*.c; do targets+=("$(basename "$src" .c)"); done
# Only the fuzz targets: the test programs are built and run by the other passes.
CC=clang EXTRA_PACKAGES="clang libclang-rt-14-dev libomp-14-dev" BUILD_DIR=build-fuzz \
  BUILD_TYPE=RelWithDebInfo CMAKE_ARGS="-DGROUNDC_FUZZ=ON -DGROUNDC_CUDA=OFF -DGROUNDC_WERROR=ON" \
  BUILD_TARGETS="${targets[*]}" scripts/setup.sh

fuzz_one() {
  local name=$1 src=tests/$1.c corpus=build-fuzz/corpus/$1 dir pattern options
  mkdir -p "$corpus"
  read -r dir pattern < <(sed -n 's|^// FUZZ_CORPUS: ||p' "$src") || true
  # (-size -1M would mean "empty" to find: it rounds sizes up to whole units)
  if [ -n "${dir:-}" ] &&
     ! find "$dir" -type f -name "${pattern:-*}" -size -1024k -exec cp {} "$corpus"/ \;; then
    echo "fuzz: $name: cannot copy the seed corpus from $dir" >&2
    return 1
  fi
  options=$(sed -n 's|^// FUZZ_OPTIONS: ||p' "$src")
  local log=build-fuzz/fuzz-$name.log
  # shellcheck disable=SC2086
  if (cd build-fuzz && ./tests/"$name" "corpus/$name" -max_total_time="$seconds" -rss_limit_mb=2048 \
        -artifact_prefix="fuzz-$name-" -print_final_stats=1 $options 2>"fuzz-$name.log"); then
    echo "== $name: ${seconds}s, $(sed -n 's/^stat::number_of_executed_units: *//p' "$log") runs," \
      "corpus $(find "$corpus" -type f | wc -l) files: clean"
  else
    { tail -40 "$log"; echo "fuzz: $name failed (log: $log)"; } >&2
    return 1
  fi
}

echo "== fuzzing ${#targets[@]} targets, ${seconds}s each, $jobs at a time"
pids=()
for name in "${targets[@]}"; do
  while (($(jobs -rp | wc -l) >= jobs)); do sleep 1; done
  fuzz_one "$name" &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
[ "$failed" -eq 0 ] || { echo "fuzz: some target failed" >&2; exit 1; }
echo "fuzz: all targets ran clean"
