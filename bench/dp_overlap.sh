#!/usr/bin/env bash
# A 2-rank data-parallel CPU training step of a small Llama (bench/dp_overlap.c), gradient
# all-reduce overlapped with the backward pass vs after it, alternating in one run; prints
# the median step times and their ratio (overlap / after; below 1: overlap is faster).
#   bench/dp_overlap.sh [ARGS...]        e.g. bench/dp_overlap.sh --batch 4 --rounds 5
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_TARGETS=bench_dp_overlap scripts/setup.sh >/dev/null
export OMPI_MCA_rmaps_base_oversubscribe=1
out=$(mpirun --oversubscribe --allow-run-as-root -np 2 build/bench/bench_dp_overlap "$@")
echo "$out"
/usr/bin/python3 - "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[1].strip().splitlines()[-1])
print(f"{r['ranks']} ranks, {r['params']} parameters, {r['tokens_per_rank']} tokens per rank: "
      f"after {r['median_step_s_after']*1e3:.1f} ms/step (waits {r['median_comm_wait_s_after']*1e3:.1f} ms "
      f"for the sum), overlap {r['median_step_s_overlap']*1e3:.1f} ms/step (waits "
      f"{r['median_comm_wait_s_overlap']*1e3:.1f} ms); ratio overlap/after = "
      f"{r['ratio_overlap_over_after']:.3f}")
PY
