#!/usr/bin/env bash
# Builds groundc (warnings are errors) and runs the test suite, then runs it again in an
# AddressSanitizer + UndefinedBehaviorSanitizer build (all of it, the "slow" end-to-end tests too),
# then runs every libFuzzer target briefly (scripts/fuzz.sh).
#   scripts/test.sh            everything
#   SANITIZE=0 scripts/test.sh skip the sanitizer pass
#   FUZZ=0 scripts/test.sh     skip the fuzzing pass (FUZZ_SECONDS=N per target, default 20:
#                              about 2 minutes on 2 cores, build included)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

BUILD_DIR=build CMAKE_ARGS="-DGROUNDC_WERROR=ON" scripts/setup.sh
echo "== tests (Release)"
(cd build && ctest --output-on-failure -j "$jobs")

if [ "${SANITIZE:-1}" != 0 ]; then
  echo "== tests (AddressSanitizer + UndefinedBehaviorSanitizer)"
  BUILD_DIR=build-asan BUILD_TYPE=RelWithDebInfo \
    CMAKE_ARGS="-DGROUNDC_WERROR=ON -DGROUNDC_SANITIZE=ON -DGROUNDC_CUDA=OFF" scripts/setup.sh
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
  (cd build-asan && ctest --output-on-failure -j "$jobs")
fi

if [ "${FUZZ:-1}" != 0 ]; then
  echo "== fuzzing"
  scripts/fuzz.sh
fi
