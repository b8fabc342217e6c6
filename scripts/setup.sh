#!/usr/bin/env bash
# Installs the Debian packages groundc needs (only those missing), then configures and builds.
#   scripts/setup.sh                 Release build in build/
#   BUILD_DIR=b CMAKE_ARGS="..." scripts/setup.sh
#   BUILD_TARGETS="a b" scripts/setup.sh   only those targets (and what they need)
# Idempotent: with everything installed and built it only re-runs the (incremental) build.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake pkg-config libyaml-dev libhdf5-dev libzstd-dev
          libopenmpi-dev openmpi-bin libopenblas-dev libcjson-dev libjpeg-dev libpng-dev
          libavformat-dev libavcodec-dev libswscale-dev libswresample-dev libavutil-dev
          libsndfile1-dev libfftw3-dev libssl-dev libprotobuf-c-dev
          protobuf-c-compiler libminizip-dev libexif-dev
          python3 python3-numpy python3-h5py python3-sentencepiece python3-pil
          python3-matplotlib
          ${EXTRA_PACKAGES:-})
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/groundc-apt.log 2>&1; then
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/groundc-apt.log 2>&1 ||
      { tail -20 /tmp/groundc-apt.log; echo "setup: apt-get install failed" >&2; exit 1; }
  fi
fi

build=${BUILD_DIR:-build}
# shellcheck disable=SC2086
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" ${CMAKE_ARGS:-} >/dev/null
# grep finding nothing to print is fine; a failed build fails the pipeline (pipefail)
# shellcheck disable=SC2086
cmake --build "$build" -j "$(nproc)" ${BUILD_TARGETS:+--target $BUILD_TARGETS} 2>&1 |
  { grep -v -E '^\[ *[0-9]+%\]' || true; }
echo "setup: built $build"
