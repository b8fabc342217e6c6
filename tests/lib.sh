# lib.sh: the start every tests/test_*.sh shares; sourced with the test's arguments,
#   . "$(dirname "$0")/lib.sh" "$@"        (the test is run as: test_X.sh GROUNDC [BUILD_DIR])
# It sets
#   groundc   GROUNDC as an absolute path (tests work in a temporary folder)
#   build     BUILD_DIR as an absolute path, made when missing (empty when not given)
#   here      tests/;  src: the source tree (GROUNDC_SOURCE_DIR, else tests/..)
#   tmp       a temporary folder, removed at exit unless KEEP is set (to look at it)
#   py        the Python the tests run (Debian's, with its numpy, PIL, ...)
#   pass, fail and ok, bad MESSAGE (counts a failure and says it on stderr)
#   tiny_pack the `groundc pack` media options that fit configs/model/tiny.yaml
# and offers need_python, expect_error, use_mpi, tiny_shards, tiny_stage3 and summary (below).
test_name=$(basename "$0" .sh)
groundc=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
build=
if [ -n "${2:-}" ]; then build=$(mkdir -p "$2" && cd "$2" && pwd); fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=${GROUNDC_SOURCE_DIR:-$(cd "$here/.." && pwd)}
py=/usr/bin/python3
tmp=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
tiny_pack=(--image-size 32 --image-tokens 16 --video-frames 4 --video-size 16 --video-tokens 8
  --audio-tokens 4)
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }

# need_python MODULE...: skip the test (exit 77) when $py cannot import one of them.
need_python() {
  local m
  for m in "$@"; do
    if ! "$py" -c "import $m" 2>/dev/null; then
      echo "$test_name: $py with $* needed ($m missing); skipped"
      exit 77
    fi
  done
}

# expect_error DESCRIPTION PATTERN COMMAND...: non-zero exit, exactly one stderr line, matching
# the extended regex PATTERN. Tests with other rules define their own after sourcing this.
expect_error() {
  local what=$1 pattern=$2; shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  local lines; lines=$(wc -l <"$tmp/err")
  if [ $rc -ne 0 ] && [ "$lines" -eq 1 ] && grep -qE -e "$pattern" "$tmp/err"; then ok
  else bad "$what: rc=$rc, stderr: $(cat "$tmp/err")"; fi
}

# use_mpi [MPIRUN OPTION...]: mpi=(mpirun ... -np 2), the 2-rank launcher, with the options
# given (e.g. -x VAR). Under LeakSanitizer (the ASan pass of scripts/test.sh),
# MPI_Init/MPI_Finalize leave OpenMPI's and its plugins' allocations behind (no groundc frame in
# any of them): leak detection is off for the mpirun runs only; address and UB checks stay on.
use_mpi() {
  mpi=(mpirun --oversubscribe --allow-run-as-root "$@"
    -x ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" -np 2)
  export OMPI_MCA_rmaps_base_oversubscribe=1
}

# tiny_shards SYNTH_OPTION...: in the current folder, raw/ (groundc synth with the options),
# train/ (raw packed for the tiny model, test tokenizer) and tiny.yaml (configs/model/tiny.yaml
# with dropout off).
tiny_shards() {
  "$groundc" synth --out raw "$@" >/dev/null || bad synth
  "$groundc" pack --json raw/train.json --media-root raw --out train \
    --tokenizer "$here/fixtures/tokenizer/test_bpe.model" "${tiny_pack[@]}" --threads 1 \
    >/dev/null || bad pack
  sed 's/dropout: 0.1/dropout: 0.0/' "$here/../configs/model/tiny.yaml" >tiny.yaml
}

# tiny_stage3 STEPS: a stage-3 run of tiny.yaml on train/ (tiny_shards first) for STEPS steps at
# learning rate 1e-3, its checkpoints in $tmp/stage3 (stage3/latest: the last one).
tiny_stage3() {
  cat >stage3.yaml <<YAML
model: tiny.yaml
stage: 3
data:
  datasets: [train]
  micro_batch: 4
train:
  steps: $1
  lr: 1.0e-3
  log_every: 1
checkpoint:
  out: $tmp/stage3
YAML
  "$groundc" train stage3.yaml >stage3.log 2>&1 || bad "stage 3: $(tail -3 stage3.log)"
}

# summary: the count line; its status is the test's (0 when nothing failed).
summary() {
  echo "$test_name: $pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}
