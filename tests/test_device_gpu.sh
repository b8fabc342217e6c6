#!/usr/bin/env bash
# test_device_gpu.sh GROUNDC BUILD_DIR (label gpu): training on the GPU against the CPU.
# Skips (exit 77) where no CUDA device is visible or groundc was built without CUDA.
#   * the copy task and the tiny GroundingGPT model (stage 2, dropout off) train the same
#     few steps on cuda as on cpu: losses within f32 tolerance (1e-3 relative), and a bf16
#     model on cuda against the same bf16 model on the CPU within bf16 tolerance (1e-2);
#   * a run killed on the GPU resumes on the CPU from its checkpoint (weights, AdamW moments
#     and master weights copied off the device and back) and repeats the GPU run's losses;
#   * 2 ranks x 4 on the GPU vs 1 rank x 8: gradients staged through the host
#     (GROUNDC_TEST_NO_NCCL=1; both ranks may share one GPU) always; with 2 GPUs or more also
#     through NCCL, plain and with ZeRO-1 (NCCL broadcasts), f32 and bf16.
# Never run where it was written (no GPU there): see the commit that added it.
set -u
. "$(dirname "$0")/lib.sh" "$@"
use_mpi
cd "$tmp" || exit 1

# close A B TOL [N]: metrics files A and B have N (default 5) records with losses within TOL
# relative
close() {
  "$py" - "$1" "$2" "$3" "${4:-5}" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
b = [json.loads(l) for l in open(sys.argv[2]) if '"loss"' in l]
tol, n = float(sys.argv[3]), int(sys.argv[4])
assert len(a) == len(b) == n, (len(a), len(b))
for x, y in zip(a, b):
    assert abs(x["loss"] - y["loss"]) <= tol * abs(x["loss"]) + 1e-6, (x["step"], x["loss"], y["loss"])
PY
}

# --- the copy task: probe, then cuda vs cpu
cat >lm.yaml <<YAML
device: cuda
model: {vocab: 16, dim: 32, layers: 2, heads: 2, ffn: 64, max_seq: 32}
task: {name: copy, payload: 6}
train: {steps: 10, batch: 16, lr: 3.0e-3, log_every: 1, out: $tmp/lm_cuda}
eval: {samples: 32}
YAML
if ! "$groundc" train lm.yaml >log 2>&1; then
  if grep -qE "asked for, but (no CUDA device is visible|this groundc was built without CUDA)" log; then
    echo "skip: no CUDA device visible"
    exit 77
  fi
  bad "copy task on cuda: $(tail -3 log)"
fi
grep -q "steps; on cuda:0 (" log && ok || bad "copy task not on cuda:0: $(grep '^model:' log)"
"$groundc" train lm.yaml --set device=cpu --set train.out=$tmp/lm_cpu >log 2>&1 || bad "copy task on cpu: $(tail -3 log)"
close lm_cpu/metrics.jsonl lm_cuda/metrics.jsonl 1e-3 10 && ok || bad "copy task: cuda losses differ from cpu"

# --- the tiny model on synthetic shards
tiny_shards --images 24 --videos 8 --audios 8
sed 's/^dtype: f32/dtype: bf16/' tiny.yaml >tiny_bf16.yaml
cat >stage.yaml <<YAML
device: cuda
model: tiny.yaml
stage: 2
data:
  datasets: [train]
  micro_batch: 8
  seed: 5
train:
  steps: 5
  lr: 3.0e-3
  log_every: 1
checkpoint:
  out: $tmp/gpu
  every: 2
YAML
run() { # NAME ARGS...: a 1-rank run into NAME/
  local name=$1; shift
  "$groundc" train stage.yaml --set checkpoint.out=$tmp/$name "$@" >$name.log 2>&1 || bad "$name: $(tail -3 $name.log)"
}
run gpu
grep -q "; f32 parameters on cuda:0 (" gpu.log && ok || bad "f32 stage header: $(grep '^stage 2:' gpu.log)"
run cpu --set device=cpu
close cpu/metrics.jsonl gpu/metrics.jsonl 1e-3 && ok || bad "tiny f32: cuda losses differ from cpu"
run gpu_bf16 --set model=tiny_bf16.yaml
grep -q "; bf16 parameters (f32 master weights and moments) on cuda:0 (" gpu_bf16.log && ok || bad "bf16 stage header: $(grep '^stage 2:' gpu_bf16.log)"
run cpu_bf16 --set model=tiny_bf16.yaml --set device=cpu
close cpu_bf16/metrics.jsonl gpu_bf16/metrics.jsonl 1e-2 && ok || bad "tiny bf16: cuda losses differ from cpu"

# --- killed on the GPU after step 3 (checkpoint at 2), resumed on the CPU
GROUNDC_TEST_KILL_AT_STEP=3 "$groundc" train stage.yaml --set checkpoint.out=$tmp/moved >/dev/null 2>&1
[ "$(readlink moved/latest)" = step_00000002 ] && ok || bad "killed GPU run: latest $(readlink moved/latest)"
"$groundc" train stage.yaml --set checkpoint.out=$tmp/moved --set device=cpu --resume auto >moved.log 2>&1 || bad "resume on cpu: $(tail -3 moved.log)"
close gpu/metrics.jsonl moved/metrics.jsonl 1e-3 && ok || bad "GPU run resumed on the CPU: losses differ"

# --- 2 ranks on the GPU(s)
if command -v mpirun >/dev/null; then
  "${mpi[@]}" -x GROUNDC_TEST_NO_NCCL=1 "$groundc" train stage.yaml --set checkpoint.out=$tmp/staged --set data.micro_batch=4 >staged.log 2>&1 || bad "2 ranks staged: $(tail -3 staged.log)"
  grep -q "gradients summed through the host" staged.log && ok || bad "staged run header: $(grep '^stage 2:' staged.log)"
  close gpu/metrics.jsonl staged/metrics.jsonl 1e-4 && ok || bad "2 ranks staged through the host vs 1 rank"
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
  if [ "${gpus:-0}" -ge 2 ]; then
    "${mpi[@]}" "$groundc" train stage.yaml --set checkpoint.out=$tmp/nccl --set data.micro_batch=4 >nccl.log 2>&1 || bad "2 ranks NCCL: $(tail -3 nccl.log)"
    grep -q "gradients summed by NCCL" nccl.log && ok || bad "NCCL run header: $(grep '^stage 2:' nccl.log)"
    close gpu/metrics.jsonl nccl/metrics.jsonl 1e-4 && ok || bad "2 ranks NCCL vs 1 rank"
    "${mpi[@]}" "$groundc" train stage.yaml --set checkpoint.out=$tmp/z1 --set data.micro_batch=2 --set data.accumulation=2 --set train.zero1=true >z1.log 2>&1 || bad "ZeRO-1 NCCL: $(tail -3 z1.log)"
    close gpu/metrics.jsonl z1/metrics.jsonl 1e-4 && ok || bad "ZeRO-1 2 ranks NCCL vs 1 rank"
    "${mpi[@]}" "$groundc" train stage.yaml --set model=tiny_bf16.yaml --set checkpoint.out=$tmp/nccl_bf16 --set data.micro_batch=4 >nccl_bf16.log 2>&1 || bad "2 ranks NCCL bf16: $(tail -3 nccl_bf16.log)"
    close gpu_bf16/metrics.jsonl nccl_bf16/metrics.jsonl 5e-3 && ok || bad "2 ranks NCCL bf16 vs 1 rank"
  else
    echo "test_device_gpu: fewer than 2 GPUs visible; the NCCL runs skipped"
  fi
else
  echo "test_device_gpu: mpirun missing; the 2-rank runs skipped"
fi

summary
