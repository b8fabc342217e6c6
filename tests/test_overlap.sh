#!/usr/bin/env bash
# test_overlap.sh GROUNDC BUILD_DIR: the gradient all-reduce overlapped with the backward pass
# (train.overlap_allreduce: true, the default) against the one after it (false) on 2 MPI
# ranks: the same losses, gradient norms and final weights, bit for bit (two ranks' sum is
# one f32 addition either way). Micro-batches of one sample from a mixed image / video /
# audio dataset, so that the ranks' tapes touch different parameters and their gradients
# become final in different orders; buckets small enough that some are packed and some go
# alone, in place. Runs with ZeRO-1, and with one rank skipping its last micro-batch every
# other step (GROUNDC_TEST_SKIP_LAST_MICRO: that rank runs no watched backward pass while the
# other does) are compared the same way. Stage 2 (dropout off).
set -u
. "$(dirname "$0")/lib.sh" "$@"
use_mpi
command -v mpirun >/dev/null || { echo "test_overlap: mpirun not found; skipped"; exit 77; }

# the columns that must repeat exactly
losses() { grep -o '"step": [0-9]*, "stage": [0-9], "loss": [^,]*, "lr": [^,]*, "grad_norm": [^,]*' "$1"; }

cd "$tmp" || exit 1
tiny_shards --images 24 --videos 12 --audios 12
cat >stage.yaml <<YAML
model: tiny.yaml
stage: 2
data:
  datasets:
    - {path: train, weight: 1}
  micro_batch: 1
  accumulation: 2
  seed: 7
train:
  steps: 6
  lr: 3.0e-3
  log_every: 1
  bucket_elems: 3000
checkpoint:
  out: $tmp/unset
YAML

# pair NAME [--set ...]: the run with overlap and without; same losses and weights
pair() {
  local name=$1; shift
  local v
  for v in true false; do
    # a broken overlap can leave ranks waiting in mismatched collectives: bound the run
    timeout 300 "${mpi[@]}" "$groundc" train stage.yaml --set checkpoint.out="$tmp/$name-$v" \
      --set train.overlap_allreduce=$v "$@" >"$tmp/log" 2>&1 ||
      bad "$name overlap $v: $(tail -3 "$tmp/log")"
  done
  [ "$(losses "$name-true/metrics.jsonl" | wc -l)" = 6 ] && ok || bad "$name: 6 metric lines"
  if diff <(losses "$name-true/metrics.jsonl") <(losses "$name-false/metrics.jsonl") >/dev/null
  then ok
  else bad "$name: losses with and without overlap differ: $(diff <(losses "$name-true/metrics.jsonl") <(losses "$name-false/metrics.jsonl") | head -4)"; fi
  cmp -s "$name-true/step_00000006/model.safetensors" "$name-false/step_00000006/model.safetensors" &&
    ok || bad "$name: final weights with and without overlap differ"
}

pair buckets
pair zero1 --set train.zero1=true --set train.bucket_elems=4194304
GROUNDC_TEST_SKIP_LAST_MICRO=1 pair skip

# a key that is not a boolean is refused with the file's line
expect_error "overlap_allreduce: maybe" "overlap_allreduce: expected true or false" "$groundc" train stage.yaml --set checkpoint.out=$tmp/x --set train.overlap_allreduce=maybe

summary
