#!/usr/bin/env bash
# test_device.sh GROUNDC BUILD_DIR: the `device: auto | cpu | cuda` key of training configs,
# on a machine where no GPU is visible (CUDA_VISIBLE_DEVICES is emptied, so this runs the same
# on a GPU machine; tests/test_device_gpu.sh covers the GPU):
#   * a value other than auto, cpu, cuda fails with file:line:column (copy-task and stage
#     configs, in the file and through --set);
#   * device: cuda fails with one line naming the file, line and key, and trains nothing;
#   * device: auto trains on the CPU, with the same losses bit for bit as device: cpu;
#   * bf16 parameters on CPU ranks (gradients staged through f32 and MPI, not the f32 MPI
#     path): 2 ranks x 4 samples and ZeRO-1 2 ranks x 2 x accumulation 2 give the losses of
#     1 rank x 8 within bf16 rounding (2e-3 relative; ranks that skipped the sum differ by
#     4e-3 at step 2 and 3e-2 by step 5).
set -u
. "$(dirname "$0")/lib.sh" "$@"
export CUDA_VISIBLE_DEVICES=
use_mpi -x CUDA_VISIBLE_DEVICES
cd "$tmp" || exit 1

# one_line_error DESCRIPTION PATTERN COMMAND...: non-zero exit and stderr exactly one line,
# "groundc: error: " then a match of PATTERN
one_line_error() {
  local what=$1 pattern=$2; shift 2
  "$@" >out 2>err
  local rc=$?
  if [ $rc -ne 0 ] && [ "$(wc -l <err)" = 1 ] && grep -qE -e "^groundc: error: $pattern" err; then ok
  else bad "$what: rc=$rc, stderr: $(head -3 err)"; fi
}
losses() { grep -o '"step": [0-9]*, "stage": [0-9], "loss": [^,]*, "lr": [^,]*, "grad_norm": [^,]*' "$1"; }
no_gpu="'cuda' asked for, but (no CUDA device is visible|this groundc was built without CUDA)"

# --- the copy-task config
cat >lm.yaml <<YAML
device: auto
model: {vocab: 12, dim: 16, layers: 1, heads: 2, ffn: 24, max_seq: 16}
task: {name: copy, payload: 3}
train: {steps: 2, batch: 2, log_every: 1, out: $tmp/lm}
eval: {samples: 4}
YAML
sed 's/^device: auto/device: gpu/' lm.yaml >lm_gpu.yaml
one_line_error "copy task, bad value" "lm_gpu.yaml:1:9: device: 'gpu' is not one of: auto, cpu, cuda" "$groundc" train lm_gpu.yaml
sed 's/^device: auto/device: cuda/' lm.yaml >lm_cuda.yaml
one_line_error "copy task, cuda" "lm_cuda.yaml:1:9: device: $no_gpu" "$groundc" train lm_cuda.yaml
[ ! -e lm ] && ok || bad "a refused copy-task run left its output folder"
"$groundc" train lm.yaml >log 2>&1 && grep -qE "steps; on cpu \([0-9]+ threads?\)$" log && ok || bad "copy task on auto: $(tail -3 log)"

# --- stage configs on synthetic shards (tiny model, dropout off)
tiny_shards --images 24 --videos 8 --audios 8
sed 's/^dtype: f32/dtype: bf16/' tiny.yaml >tiny_bf16.yaml
cat >stage.yaml <<YAML
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
  out: $tmp/auto
YAML
{ echo "device: cuda"; cat stage.yaml; } >stage_cuda.yaml
one_line_error "stage, cuda in the file" "stage_cuda.yaml:1:9: device: $no_gpu" "$groundc" train stage_cuda.yaml
one_line_error "stage, --set device=cuda" "--set device=cuda:1:8: device: $no_gpu" "$groundc" train stage.yaml --set device=cuda
one_line_error "stage, --set device=tpu" "--set device=tpu:1:8: device: 'tpu' is not one of: auto, cpu, cuda" "$groundc" train stage.yaml --set device=tpu
[ ! -e auto ] && ok || bad "a refused stage run left its output folder"

"$groundc" train stage.yaml >log 2>&1 || bad "auto: $(tail -3 log)"
grep -qE "; f32 parameters on cpu \([0-9]+ threads?\)$" log && ok || bad "device auto without a GPU: not on the CPU: $(grep '^stage 2:' log)"
"$groundc" train stage.yaml --set device=cpu --set checkpoint.out=$tmp/cpu >log 2>&1 || bad "cpu: $(tail -3 log)"
grep -q "device: cpu" cpu/latest/config.yaml && ok || bad "device not in the checkpoint's config.yaml"
[ "$(losses auto/metrics.jsonl | wc -l)" = 5 ] && diff <(losses auto/metrics.jsonl) <(losses cpu/metrics.jsonl) >/dev/null && ok || bad "auto and cpu losses differ"

# --- bf16 on CPU ranks: 1 x 8, 2 x 4, ZeRO-1 2 x 2 x 2
B=(--set model=tiny_bf16.yaml)
"$groundc" train stage.yaml "${B[@]}" --set checkpoint.out=$tmp/b1 >log 2>&1 || bad "bf16 1 rank: $(tail -3 log)"
grep -qE "; bf16 parameters \(f32 master weights and moments\) on cpu \([0-9]+ threads?\)$" log && ok || bad "bf16 header: $(grep '^stage 2:' log)"
if command -v mpirun >/dev/null; then
  "${mpi[@]}" "$groundc" train stage.yaml "${B[@]}" --set checkpoint.out=$tmp/b2 --set data.micro_batch=4 >log 2>&1 || bad "bf16 2 ranks: $(tail -3 log)"
  # two ranks on this node share its processors (unless OMP_NUM_THREADS says otherwise)
  share=$(( $(nproc) / 2 )); [ "$share" -ge 1 ] || share=1
  [ -n "${OMP_NUM_THREADS:-}" ] || { grep -qE "on cpu \($share threads?\)$" log && ok || bad "2 ranks on $(nproc) processors: not $share threads each: $(grep '^stage 2:' log)"; }
  "${mpi[@]}" "$groundc" train stage.yaml "${B[@]}" --set checkpoint.out=$tmp/bz --set data.micro_batch=2 --set data.accumulation=2 --set train.zero1=true >log 2>&1 || bad "bf16 ZeRO-1: $(tail -3 log)"
  for d in b2 bz; do
    /usr/bin/python3 - b1/metrics.jsonl $d/metrics.jsonl <<'PY' && ok || bad "bf16 losses of $d differ from 1 rank x 8"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert len(a) == len(b) == 5, (len(a), len(b))
for x, y in zip(a, b):
    assert abs(x["loss"] - y["loss"]) <= 2e-3 * abs(x["loss"]), (x["step"], x["loss"], y["loss"])
PY
  done
else
  echo "test_device: mpirun missing; the 2-rank bf16 checks skipped"
fi

summary
