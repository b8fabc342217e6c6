#!/usr/bin/env bash
# One training step of a tiny Llama (d 256, 4 layers, 4 heads, T 256, batch 8, vocab 4096)
# in groundc and in PyTorch, same machine, same run, alternating; prints the ratio of
# median step times (groundc / PyTorch; below 1 means groundc is faster).
#   bench/cpu_step.sh [ROUNDS]      (extra sizes: ARGS="--batch 4" bench/cpu_step.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRA_PACKAGES=python3-torch scripts/setup.sh >/dev/null
rounds=${1:-3}
py=/usr/bin/python3
g=(); t=()
for r in $(seq "$rounds"); do
  # shellcheck disable=SC2086
  gl=$(build/bench/bench_cpu_step ${ARGS:-}); echo "groundc: $gl"
  # shellcheck disable=SC2086
  tl=$($py bench/cpu_step_torch.py ${ARGS:-}); echo "pytorch: $tl"
  g+=("$(echo "$gl" | $py -c 'import json,sys; print(json.load(sys.stdin)["median_step_s"])')")
  t+=("$(echo "$tl" | $py -c 'import json,sys; print(json.load(sys.stdin)["median_step_s"])')")
done
$py - "${g[*]}" "${t[*]}" <<'PY'
import statistics, sys
g = [float(x) for x in sys.argv[1].split()]
t = [float(x) for x in sys.argv[2].split()]
gm, tm = statistics.median(g), statistics.median(t)
print(f"groundc {gm*1e3:.1f} ms/step, pytorch {tm*1e3:.1f} ms/step, "
      f"ratio groundc/pytorch = {gm/tm:.3f} (target <= 1.0)")
PY
