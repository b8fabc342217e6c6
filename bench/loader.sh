#!/usr/bin/env bash
# Streaming loader throughput, same machine, same run: (a) groundc's loader (full batches:
# ids, targets, media), (b) the same reads and batching in h5py + numpy
# (bench/loader_h5py.py), alternating, and (c) the samples/s a tiny-model CPU training step
# consumes when fed by the loader. Prints the ratios groundc/h5py (target >= 3) and
# loader/step (target >= 1: the loader is never the bottleneck).
#   bench/loader.sh [ROUNDS]        (BUILD_DIR=build-x bench/loader.sh; ARGS="--micro 4")
# The synthetic set (2000 samples of ~300 tokens, a 336x336 image for every third, small
# videos and audios) is written once to BUILD_DIR/bench_loader_data.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
BUILD_DIR=$build scripts/setup.sh >/dev/null
rounds=${1:-3}
py=/usr/bin/python3
export HDF5_PLUGIN_PATH=$PWD/$build/hdf5-plugins # the zstd filter, for h5py
# Neither reader calls BLAS. OpenBLAS's threads spin (sched_yield) for ~0.1 s after the library
# loads, which for groundc falls inside its 1-second timed run and takes 5% of 2 cores from the
# loader; numpy's spin falls before its timing. One BLAS thread for both readers; the step
# measurement below keeps the default.
nb=(env OPENBLAS_NUM_THREADS=1)
data=$build/bench_loader_data
bin=$build/bench/bench_loader
$bin make "$data"
echo "shards: $(du -sm "$data" | cut -f1) MB (zstd at the shards' default levels, data/shard.h)"
g=(); h=(); gc=(); hc=()
for r in $(seq "$rounds"); do
  # shellcheck disable=SC2086
  gl=$("${nb[@]}" $bin load "$data" ${ARGS:-}); echo "groundc: $gl"
  # shellcheck disable=SC2086
  hl=$("${nb[@]}" $py bench/loader_h5py.py "$data" ${ARGS:-}); echo "h5py:    $hl"
  g+=("$(echo "$gl" | $py -c 'import json,sys; print(json.load(sys.stdin)["samples_per_s"])')")
  h+=("$(echo "$hl" | $py -c 'import json,sys; print(json.load(sys.stdin)["samples_per_s"])')")
  gc+=("$(echo "$gl" | $py -c 'import json,sys; print(json.load(sys.stdin)["cpu_us_per_sample"])')")
  hc+=("$(echo "$hl" | $py -c 'import json,sys; print(json.load(sys.stdin)["cpu_us_per_sample"])')")
done
# shellcheck disable=SC2086
sl=$($bin train "$data" ${ARGS:-}); echo "step:    $sl"
$py - "${g[*]}" "${h[*]}" "$sl" "${gc[*]}" "${hc[*]}" <<'PY'
import json, os, statistics, sys
g = statistics.median(float(x) for x in sys.argv[1].split())
h = statistics.median(float(x) for x in sys.argv[2].split())
step = json.loads(sys.argv[3])
gc = statistics.median(float(x) for x in sys.argv[4].split())
hc = statistics.median(float(x) for x in sys.argv[5].split())
s = step["samples_per_s"]
print(f"groundc loader {g:.0f} samples/s, h5py {h:.0f} samples/s, "
      f"ratio groundc/h5py = {g/h:.2f} (target >= 3)")
print(f"CPU per sample: groundc {gc:.0f} us (all threads), h5py {hc:.0f} us, ratio {hc/gc:.2f}; "
      f"{os.cpu_count()} cores here (the loader spreads decompression over its workers)")
print(f"tiny-model step consumes {s:.1f} samples/s (mean T {step['mean_T']:.0f}), "
      f"ratio loader/step = {g/s:.1f} (target >= 1); "
      f"time the step waited for the loader: {100*step['loader_wait_fraction']:.2f}%")
PY
