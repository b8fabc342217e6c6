#!/usr/bin/env bash
# test_train.sh GROUNDC BUILD_DIR: training stages end to end on synthetic shards (tiny model,
# dropout off so that data-parallel layouts are comparable):
#   * a run killed with SIGKILL mid-training, and one killed while writing a checkpoint,
#     resume with --resume auto and repeat the uninterrupted run's losses bit for bit;
#   * 2 MPI ranks x 4 samples and 2 ranks x 2 x accumulation 2 with ZeRO-1 give the losses
#     and final weights of 1 rank x 8 (f32 tolerance; weights compared with numpy, within
#     1e-4: AdamW divides by sqrt(v), so rounding in near-zero gradients moves a weight by a
#     fraction of lr = 3e-3 per step);
#   * a resume off the train.log_every cadence writes the uninterrupted run's metrics.jsonl;
#   * a 2-rank checkpoint resumes on 1 rank (same global batch; not ZeRO-1);
#   * checkpoints that do not fit (ZeRO-1 world size, model) and a fresh start over existing
#     checkpoints are refused with one line; non-finite steps are skipped, then stop the run;
#     steps without a supervised token make no update and are said; --dry-run checks the
#     shards against the model and data.max_len, checkpoint.out and the resume checkpoint;
#   * a two-stage curriculum starts stage 2 from stage 1's checkpoint and skips both when
#     run again.
set -u
. "$(dirname "$0")/lib.sh" "$@"
use_mpi

expect_error() { # DESCRIPTION PATTERN COMMAND...: non-zero exit, a stderr line matching
  local what=$1 pattern=$2; shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  if [ $rc -ne 0 ] && grep -qE -e "$pattern" "$tmp/err" &&
     [ "$(grep -c 'groundc: error' "$tmp/err")" -ge 1 ]; then ok
  else bad "$what: rc=$rc, stderr: $(head -5 "$tmp/err")"; fi
}

# losses FILE: step, loss and grad norm columns of metrics.jsonl (what must repeat exactly)
losses() { grep -o '"step": [0-9]*, "stage": [0-9], "loss": [^,]*, "lr": [^,]*, "grad_norm": [^,]*' "$1"; }

# --- data: synthetic media, packed for the tiny model
cd "$tmp" || exit 1
tiny_shards --images 40 --videos 16 --audios 16
cat >"$tmp/stage.yaml" <<YAML
model: tiny.yaml
stage: 2
data:
  datasets:
    - {path: train, weight: 1}
  micro_batch: 8
  seed: 5
train:
  steps: 12
  lr: 3.0e-3
  log_every: 1
checkpoint:
  out: $tmp/ref
  every: 3
  keep: 2
YAML
run() { "$groundc" train stage.yaml "$@" >"$tmp/log" 2>&1; }

# --- reference: uninterrupted
run || bad "reference run: $(tail -3 "$tmp/log")"
[ "$(losses ref/metrics.jsonl | wc -l)" = 12 ] && ok || bad "reference: 12 metric lines"
[ "$(readlink ref/latest)" = step_00000012 ] && ok || bad "latest -> step_00000012"
n=$(ls -d ref/step_* | wc -l); [ "$n" = 2 ] && ok || bad "keep 2: $n checkpoints left"
# --- the lr of every step against torch's schedulers as transformers' Trainer steps them (a
# fixture): the reference run's default warmup (ceil(0.03 x 12) = 1 step, at lr 0), then a
# longer warmup to a floor
"$py" "$src/tests/lr_schedule_reference.py" ref/metrics.jsonl default_warmup >"$tmp/lr.out" 2>&1 &&
  ok || bad "$(cat "$tmp/lr.out")"
run --set checkpoint.out=$tmp/lr --set train.steps=20 --set train.warmup_ratio=0.22 --set train.min_lr_ratio=0.1 ||
  bad "lr run: $(tail -3 "$tmp/log")"
"$py" "$src/tests/lr_schedule_reference.py" lr/metrics.jsonl long_warmup_floor >"$tmp/lr.out" 2>&1 &&
  ok || bad "$(cat "$tmp/lr.out")"
grep -qE '"complete":\s*true' ref/latest/state.json && ok || bad "final state complete"

# --- metrics.jsonl is written as the run goes: killed after step 5 (last checkpoint at 3), it
# holds steps 1-4; the resume drops step 4's line and writes it again, the same
GROUNDC_TEST_KILL_AT_STEP=5 run --set checkpoint.out=$tmp/k0
[ "$(losses k0/metrics.jsonl | wc -l)" = 4 ] && ok || bad "live metrics: $(losses k0/metrics.jsonl | wc -l) lines after step 4, want 4"
cp -r k0 k0m # for the unreadable metrics.jsonl below
run --set checkpoint.out=$tmp/k0 --resume auto || bad "resume k0: $(tail -3 "$tmp/log")"
diff <(losses ref/metrics.jsonl) <(losses k0/metrics.jsonl) >/dev/null && ok || bad "k0 losses differ after resume"
# elapsed_s counts the training time of the run and its resumes (state.json carries it): it
# never goes back across the resume
"$py" - k0/metrics.jsonl <<'PY' && ok || bad "elapsed_s across a resume"
import json, sys
e = [json.loads(l)["elapsed_s"] for l in open(sys.argv[1]) if '"elapsed_s"' in l]
assert len(e) == 12 and all(b >= a for a, b in zip(e, e[1:])), e
PY
# the resume rewrites metrics.jsonl through a synced temporary file; one it cannot read fails
# the resume, naming it (a read error used to pass for its end, an open error skipped the
# rewrite), and the temporary file goes
rm k0m/metrics.jsonl && mkdir k0m/metrics.jsonl
expect_error "metrics.jsonl unreadable (a folder)" "k0m/metrics.jsonl: cannot read: Is a directory" "$groundc" train stage.yaml --set checkpoint.out=$tmp/k0m --resume auto
if ls k0m | grep -q "metrics.jsonl.tmp"; then bad "temporary metrics file left behind: $(ls k0m)"; else ok; fi
if [ "$(id -u)" != 0 ]; then # (root opens any file whatever its mode)
  rmdir k0m/metrics.jsonl && printf '{"step": 1}\n' >k0m/metrics.jsonl && chmod 200 k0m/metrics.jsonl
  expect_error "metrics.jsonl unreadable (mode 200)" "k0m/metrics.jsonl: cannot read: Permission denied" "$groundc" train stage.yaml --set checkpoint.out=$tmp/k0m --resume auto
else
  echo "test_train: running as root; the unreadable-mode metrics.jsonl check skipped"
fi

# --- a data.datasets entry that is not a dataset folder: one line at the entry, with the way out
expect_error "dataset: the manifest" "--set data.datasets=\[train/manifest.json\]:1:16: data.datasets: .*train/manifest.json is a file, not a dataset folder \\(give the folder that groundc pack made, holding manifest.json: .*train\\?\\)" "$groundc" train stage.yaml --set "data.datasets=[train/manifest.json]" --dry-run --set checkpoint.out=$tmp/dsx
expect_error "dataset: missing" "data.datasets: .*nothere: No such file or directory" "$groundc" train stage.yaml --set "data.datasets=[nothere]" --dry-run --set checkpoint.out=$tmp/dsx
expect_error "dataset: another folder" "data.datasets: .*raw holds no manifest.json: not a dataset folder made by groundc pack" "$groundc" train stage.yaml --set "data.datasets=[raw]" --dry-run --set checkpoint.out=$tmp/dsx
# a global batch larger than the datasets: a warning (every step repeats samples)
n_train=$("$py" -c "import json; print(json.load(open('train/manifest.json'))['num_samples'])")
"$groundc" train stage.yaml --dry-run --set checkpoint.out=$tmp/dsx --set data.micro_batch=$((n_train + 1)) >"$tmp/log" 2>&1 &&
  [ "$(grep -c "^train: warning: the global batch of $((n_train + 1)) is more than the $n_train samples of the datasets" "$tmp/log")" = 1 ] && ok ||
  bad "global batch over the datasets: $(grep -v '^ ' "$tmp/log" | tail -3)"
# datasets packed with two tokenizers (one piece's text differs: "play" -> "qlay") do not mix
"$py" -c "import sys; b = bytearray(open(sys.argv[1], 'rb').read()); i = b.index(b'\xe2\x96\x81play'); b[i + 3] += 1; open('tok2.model', 'wb').write(b)" "$here/fixtures/tokenizer/test_bpe.model" &&
  "$groundc" pack --json raw/train.json --media-root raw --out train_tok2 --tokenizer tok2.model "${tiny_pack[@]}" --threads 1 >/dev/null || bad "pack with tok2"
expect_error "datasets of two tokenizers" "^groundc: error: --set data.datasets=\[train, train_tok2\]:1:23: data.datasets: .*train_tok2 was packed with another tokenizer than .*train \(tokenizer_digest [0-9a-f]{12}\.\.\. and [0-9a-f]{12}\.\.\.\)" \
  "$groundc" train stage.yaml --set "data.datasets=[train, train_tok2]" --dry-run --set checkpoint.out=$tmp/dsx

# --- SIGKILL after step 7 (checkpoints at 3, 6): resume continues from step 6
GROUNDC_TEST_KILL_AT_STEP=7 run --set checkpoint.out=$tmp/k1
[ "$(readlink k1/latest)" = step_00000006 ] && ok || bad "killed run: latest $(readlink k1/latest)"
echo '{"note": "a line of the user'"'"'s, without a step"}' >>k1/metrics.jsonl
# the data re-packed meanwhile from the same input: the same bytes under other shard names
# (shard_g1_N), which resume as the same stream (the names used to be in the stream's digest)
"$groundc" pack --json raw/train.json --media-root raw --out train --tokenizer "$here/fixtures/tokenizer/test_bpe.model" "${tiny_pack[@]}" --threads 1 >/dev/null || bad "re-pack"
ls train | grep -q '^shard_g1_' && ok || bad "re-pack: $(ls train)"
run --set checkpoint.out=$tmp/k1 --resume auto || bad "resume after kill: $(tail -3 "$tmp/log")"
grep -q '^{"note": ' k1/metrics.jsonl && ok || bad "resume dropped a metrics.jsonl line without a step"
grep -q "resumed from $tmp/k1/step_00000006" "$tmp/log" && ok || bad "resume names its checkpoint"
if diff <(losses ref/metrics.jsonl) <(losses k1/metrics.jsonl) >/dev/null; then ok
else bad "losses after kill + resume differ: $(diff <(losses ref/metrics.jsonl) <(losses k1/metrics.jsonl) | head -4)"; fi
cmp -s ref/step_00000012/model.safetensors k1/step_00000012/model.safetensors && ok || bad "final weights after resume differ"

# --- SIGTERM (a scheduler's preemption) after step 7: the next step finishes, a checkpoint of
# step 8 is written off the every-3 cadence, the run exits 143 saying how to continue, and the
# resume loses no step: losses and final weights as the uninterrupted run's
GROUNDC_TEST_SIGNAL_AT_STEP=7 run --set checkpoint.out=$tmp/t1
rc=$?
[ $rc = 143 ] && ok || bad "SIGTERM: exit $rc, want 143: $(tail -2 "$tmp/log")"
[ "$(readlink t1/latest)" = step_00000008 ] && ok || bad "SIGTERM: latest $(readlink t1/latest), want step_00000008"
grep -qE "^groundc: stopped by SIGTERM after step 8 of 12: checkpoint .*t1/step_00000008 written; continue with --resume auto$" "$tmp/log" && ok || bad "SIGTERM message: $(tail -2 "$tmp/log")"
# on a terminal the live progress line has no newline: a skipped step, the stop and an error
# each start a line of their own (script(1) gives the run a pseudo-terminal)
GROUNDC_TEST_NAN_STEPS=2 GROUNDC_TEST_SIGNAL_AT_STEP=4 script -qec "'$groundc' train stage.yaml --set checkpoint.out=$tmp/tty --set train.log_every=100" tty.out >/dev/null 2>&1
tr -d '\r' <tty.out >tty.txt
grep -q "^step 2: non-finite loss" tty.txt && grep -q "^groundc: stopped by SIGTERM after step 5 of 12" tty.txt && ok ||
  bad "messages after the live line: $(tail -c 600 tty.txt)"
GROUNDC_TEST_NAN_STEPS=2,3 script -qec "'$groundc' train stage.yaml --set checkpoint.out=$tmp/tty2 --set train.log_every=100 --set train.max_bad_steps=2" tty.out >/dev/null 2>&1
tr -d '\r' <tty.out | grep -q "^groundc: error: train: 2 non-finite steps in a row" && ok || bad "error after the live line: $(tail -c 600 tty.out)"
run --set checkpoint.out=$tmp/t1 --resume auto || bad "resume after SIGTERM: $(tail -3 "$tmp/log")"
grep -q "resumed from $tmp/t1/step_00000008" "$tmp/log" && ok || bad "resume after SIGTERM names step 8"
diff <(losses ref/metrics.jsonl) <(losses t1/metrics.jsonl) >/dev/null && ok || bad "losses after SIGTERM + resume differ: $(diff <(losses ref/metrics.jsonl) <(losses t1/metrics.jsonl) | head -4)"
cmp -s ref/step_00000012/model.safetensors t1/step_00000012/model.safetensors && ok || bad "final weights after SIGTERM + resume differ"

# --- a checkpoint step that is not a multiple of train.log_every (3 vs 2): the resumed run's
# first metrics line averages steps 3 and 4, as the uninterrupted run's does (the open logging
# window is stored in state.json), and every record matches but for the timings
records() { # FILE: metrics.jsonl without tokens_per_s and elapsed_s, one JSON per line
  "$py" -c 'import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l); r.pop("tokens_per_s", None); r.pop("elapsed_s", None)
    print(json.dumps(r, sort_keys=True))' "$1"
}
run --set checkpoint.out=$tmp/lw --set train.log_every=2 || bad "log_every 2 reference: $(tail -3 "$tmp/log")"
GROUNDC_TEST_KILL_AT_STEP=5 run --set checkpoint.out=$tmp/lwk --set train.log_every=2
[ "$(readlink lwk/latest)" = step_00000003 ] && ok || bad "log window: latest $(readlink lwk/latest)"
run --set checkpoint.out=$tmp/lwk --set train.log_every=2 --resume auto || bad "log window resume: $(tail -3 "$tmp/log")"
if diff <(records lw/metrics.jsonl) <(records lwk/metrics.jsonl) >"$tmp/d"; then ok
else bad "metrics.jsonl after a resume off the log cadence differs: $(head -4 "$tmp/d")"; fi
# a checkpoint written before the window was stored (no log_window in state.json) still resumes
# (its first line then averages the steps since the resume: steps 10, 12 from step 9)
mkdir -p lwo && cp -r lwk/step_00000009 lwo/ && "$py" - lwo/step_00000009/state.json <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); del j["log_window"]; json.dump(j, open(sys.argv[1], "w"))
PY
run --set checkpoint.out=$tmp/lwo --set train.log_every=2 --resume auto && [ "$(records lwo/metrics.jsonl | wc -l)" = 2 ] && ok ||
  bad "resume from a state.json without log_window: $(tail -3 "$tmp/log")"

# --- SIGKILL in the middle of writing the 3rd checkpoint (step 9)
GROUNDC_TEST_KILL_IN_CHECKPOINT=3 run --set checkpoint.out=$tmp/k2
[ "$(readlink k2/latest)" = step_00000006 ] && ok || bad "killed in checkpoint: latest $(readlink k2/latest)"
[ -d k2/.tmp.step_00000009 ] && [ ! -e k2/step_00000009 ] && ok || bad "half-written checkpoint under its final name"
run --set checkpoint.out=$tmp/k2 --resume auto || bad "resume after checkpoint kill: $(tail -3 "$tmp/log")"
diff <(losses ref/metrics.jsonl) <(losses k2/metrics.jsonl) >/dev/null && ok || bad "losses after checkpoint kill + resume differ"
[ ! -e k2/.tmp.step_00000009 ] && ok || bad "temporary checkpoint folder left behind"
# a checkpoint that cannot be written (the file size limit, as a full disk would): one error
# line naming the file, and its temporary folder goes (it used to stay, holding the space the
# next try needs); the checkpoints before it stay
mkdir -p fs && cp -r k2/step_00000009 fs/ && ln -s step_00000009 fs/latest || bad "copy step 9"
(trap '' XFSZ; ulimit -f 1024; exec "$groundc" train stage.yaml --set checkpoint.out=$tmp/fs --resume auto) >"$tmp/log" 2>&1
rc=$?
[ $rc = 1 ] && [ "$(grep -c 'groundc: error' "$tmp/log")" = 1 ] &&
  grep -q "groundc: error: .*fs/.tmp.step_00000012/model.safetensors.*File too large" "$tmp/log" &&
  [ -z "$(ls -a fs | grep tmp)" ] && [ -f fs/step_00000009/model.safetensors ] && ok ||
  bad "checkpoint write error: rc $rc, $(ls -a fs | tr '\n' ' '), $(grep error "$tmp/log")"
# the data changed under a run (other shards): the resume is refused, naming the checkpoint's
# state.json whose cursor does not fit
"$groundc" pack --json raw/train.json --media-root raw --out train2 --tokenizer "$here/fixtures/tokenizer/test_bpe.model" "${tiny_pack[@]}" --threads 1 --shard-samples 7 >/dev/null || bad "pack train2"
expect_error "resume on other data" "fs/step_00000009: trained on other data \(data.datasets: the folders, their order, weights or shards' contents changed since\): a resume continues the stream where it stopped" "$groundc" train stage.yaml --set checkpoint.out=$tmp/fs --set "data.datasets=[train2]" --resume auto
# an explicit folder works too, and a complete stage is not run again
run --set checkpoint.out=$tmp/k2 --resume "$tmp/k2/step_00000012" && grep -q "already complete" "$tmp/log" && ok || bad "complete stage skipped"
# a complete stage is skipped only when this config makes the same run
expect_error "complete stage, other length" "a run of 12 steps, this config makes 20.*stage is complete" "$groundc" train stage.yaml --set checkpoint.out=$tmp/k2 --set train.steps=20 --resume auto

# --- killed before `latest` moved: without the link, and with the link one checkpoint behind,
# --resume auto continues from the newest step folder (complete once renamed into place)
GROUNDC_TEST_KILL_AT_STEP=7 run --set checkpoint.out=$tmp/k3
rm k3/latest
expect_error "no latest, fresh start" "holds checkpoints already" "$groundc" train stage.yaml --set checkpoint.out=$tmp/k3
ln -s step_00000003 k3/latest
run --set checkpoint.out=$tmp/k3 --resume auto || bad "resume behind latest: $(tail -3 "$tmp/log")"
grep -q "resumed from $tmp/k3/step_00000006" "$tmp/log" && ok || bad "resume from the newest step folder: $(grep resumed "$tmp/log")"
diff <(losses ref/metrics.jsonl) <(losses k3/metrics.jsonl) >/dev/null && ok || bad "losses after resume from the newest step folder differ"

# --- an explicit resume from an earlier checkpoint: not into a folder holding later ones (they
# would mix with this run's under latest); into a fresh folder it trains and saves its own
expect_error "resume before later checkpoints" "holds step_00000012, past the step 9" "$groundc" train stage.yaml --set checkpoint.out=$tmp/k1 --resume "$tmp/k1/step_00000009"
run --set checkpoint.out=$tmp/k1b --set train.lr=1.0e-3 --resume "$tmp/k1/step_00000009" || bad "branch from step 9: $(tail -3 "$tmp/log")"
[ "$(readlink k1b/latest)" = step_00000012 ] && ! cmp -s k1/step_00000012/model.safetensors k1b/step_00000012/model.safetensors && ok || bad "the branch saved its own step 12"
grep -q "^train: note: $tmp/k1/step_00000009 was written with another config; continuing with this one: train.lr 3.0e-3 -> 1.0e-3$" "$tmp/log" &&
  ok || bad "a resume with another lr: no note ($(grep note "$tmp/log"))"
# the stored config.yaml holds the defaults the run used: the same values written out (and a
# number spelt another way) are the same config, so the complete stage is taken as done, and
# the stored file reads back as the config it is (its resolved form is its own text)
grep -qx "  beta2: 0.999" k1b/latest/config.yaml && ok || bad "no defaults in config.yaml: $(grep -A3 '^train:' k1b/latest/config.yaml)"
run --set checkpoint.out=$tmp/k1b --set train.lr=0.001 --set train.beta2=0.999 --set train.eps=0.00000001 --resume auto &&
  grep -q "stage already complete" "$tmp/log" && ! grep -q "another config" "$tmp/log" && ok ||
  bad "defaults written out: not the same config ($(tail -2 "$tmp/log"))"
# a checkpoint's config.yaml that leaves a default out (one written before defaults were
# stored) means that default: this run filling it in is no difference either
cp -r k1b k1e && sed -i '/^  beta1: 0.9$/d' k1e/step_00000012/config.yaml && ! grep -q "beta1" k1e/step_00000012/config.yaml &&
  run --set checkpoint.out=$tmp/k1e --set train.lr=0.001 --resume auto &&
  grep -q "stage already complete" "$tmp/log" && ! grep -q "another config" "$tmp/log" && ok ||
  bad "a default the checkpoint's config leaves out: $(tail -2 "$tmp/log")"
"$groundc" train k1b/latest/config.yaml --config-only >"$tmp/rt.out" 2>"$tmp/rt.err" &&
  diff <(sed -n 's/^  //p' "$tmp/rt.out" | sed '/^config /d') k1b/latest/config.yaml >/dev/null && ok ||
  bad "config.yaml does not read back as itself: $(cat "$tmp/rt.err"; diff <(sed -n 's/^  //p' "$tmp/rt.out") k1b/latest/config.yaml | head -5)"
# --- a checkpoint is continued (or taken as the stage done) only by its own stage and config:
# another stage (a curriculum whose --set checkpoint.out sends every stage to one folder),
# a model setting that keeps the shapes (RoPE base), a complete run of another lr
sed 's/^stage: 2$/stage: 3/' stage.yaml >stage3.yaml
expect_error "another stage's checkpoint" "ref/step_00000012: a checkpoint of stage 2, this config trains stage 3: give each stage a checkpoint.out of its own" \
  "$groundc" train stage3.yaml --resume auto
sed 's/^  rope_theta: 10000$/  rope_theta: 500000/' tiny.yaml >tiny_rope.yaml
grep -q "rope_theta: 500000" tiny_rope.yaml || bad "tiny_rope.yaml"
expect_error "a model of another RoPE base" "k1/step_00000009: written for another model config \(model.llm.rope_theta 10000 -> 500000\)" \
  "$groundc" train stage.yaml --set model=tiny_rope.yaml --set checkpoint.out=$tmp/k1d --resume "$tmp/k1/step_00000009"
# a resume continues the checkpoint's data stream (data.seed, datasets) with its trainable
# parameters (their AdamW state): another seed, dataset mixture or frozen pattern is refused
# before anything else is said (no note on the config first), by the dry run too
for flag in --dry-run ""; do
  expect_error "resume with another data.seed $flag" "k1/step_00000009: its data stream was drawn with data.seed 5, this config has 6: a resume continues the stream where it stopped" \
    "$groundc" train stage.yaml --set data.seed=6 --set checkpoint.out=$tmp/k1f --resume "$tmp/k1/step_00000009" $flag
  expect_error "resume with another mixture $flag" "k1/step_00000009: trained on other data \(data.datasets: " \
    "$groundc" train stage.yaml --set 'data.datasets=[{path: train, weight: 2}, {path: train, weight: 1}]' --set checkpoint.out=$tmp/k1f --resume "$tmp/k1/step_00000009" $flag
  expect_error "resume with another trainable set $flag" "k1/step_00000009: trained another set of parameters \('model.mm_vision_projector.0.weight': the checkpoint's run trained it, this config does not; " \
    "$groundc" train stage.yaml --set 'frozen=[model.mm_vision_projector.*]' --set checkpoint.out=$tmp/k1f --resume "$tmp/k1/step_00000009" $flag
  [ "$(wc -l <"$tmp/err")" = 1 ] && ok || bad "resume with another trainable set $flag: more than the error: $(cat "$tmp/err")"
  expect_error "resume training more parameters $flag" "trained another set of parameters \('model.vision_tower.vision_model.embeddings.class_embedding': this config trains it, the checkpoint's run did not; " \
    "$groundc" train stage.yaml --set 'trainable=[model.vision_tower.*]' --set checkpoint.out=$tmp/k1f --resume "$tmp/k1/step_00000009" $flag
done
[ ! -e k1f ] && ok || bad "a refused resume made its checkpoint.out"
expect_error "a complete run of another lr" "ref/step_00000012: a complete run of another config \(train.lr 3.0e-3 -> 1.0e-4\)" \
  "$groundc" train stage.yaml --resume auto --set train.lr=1.0e-4
expect_error "run folder as checkpoint" "a run folder, not a checkpoint; resume from $tmp/k1/step_00000012" "$groundc" train stage.yaml --set checkpoint.out=$tmp/k1c --resume "$tmp/k1"
# damaged values are refused at load, naming the file, tensor and element, rather than trained
# into NaN weights (a NaN weight, a NaN or negative second moment, an adamw_step past the step)
damage() { # FILE TENSOR VALUE (into element 1 of TENSOR) | FILE --step N (adamw_step)
  "$py" - "$@" <<'PY'
import json, struct, sys
f, what, value = sys.argv[1:4]
b = bytearray(open(f, "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
if what == "--step":
    h["__metadata__"]["adamw_step"] = value
    text = json.dumps(h).encode()
    text += b" " * (-len(text) % 8)
    b = struct.pack("<Q", len(text)) + text + b[8 + n:]
else:
    assert h[what]["dtype"] == "F32", h[what]
    o = 8 + n + h[what]["data_offsets"][0] + 4
    b[o:o + 4] = struct.pack("<f", float(value))
open(f, "wb").write(b)
PY
}
for case in "model.safetensors model.norm.weight nan non-finite value nan at \\[1\\]" \
  "optim.rank00000.safetensors adam_v.model.norm.weight -1 negative value -1 at \\[1\\]" \
  "optim.rank00000.safetensors adam_m.model.norm.weight inf non-finite value inf at \\[1\\]" \
  "optim.rank00000.safetensors --step 10 metadata 'adamw_step' 10 is past the checkpoint's step 9"; do
  read -r file what value message <<<"$case"
  rm -rf kd && mkdir kd && cp -r k1/step_00000009 kd/ && damage kd/step_00000009/$file $what $value || bad "damage $case"
  expect_error "damaged $case" "kd/step_00000009/$file: .*$message" "$groundc" train stage.yaml --set checkpoint.out=$tmp/kd --resume auto
done
expect_error "not a checkpoint" "tiny.yaml: not a checkpoint" "$groundc" train stage.yaml --set checkpoint.out=$tmp/k1c --resume "$tmp/tiny.yaml"

# --- one training per checkpoint.out: a second one started while the first runs (e.g. requeued
# right after a kill of mpirun whose ranks still write) is refused, naming the first process
"$groundc" train stage.yaml --set checkpoint.out=$tmp/lk --set train.steps=400 --set checkpoint.every=1 >"$tmp/lk0.log" 2>&1 &
first=$!
for i in $(seq 100); do [ -s lk/.lock ] && [ -e lk/latest ] && break; sleep 0.1; done
"$groundc" train stage.yaml --set checkpoint.out=$tmp/lk --set train.steps=400 --resume auto >"$tmp/lk.log" 2>&1
rc=$?
kill $first 2>/dev/null; wait $first 2>/dev/null
[ $rc -ne 0 ] && grep -q "lk: another training (process [0-9]*) is writing into this folder" "$tmp/lk.log" &&
  ok || bad "a second run into a busy checkpoint.out: rc=$rc $(tail -2 "$tmp/lk.log")"
"$groundc" train stage.yaml --set checkpoint.out=$tmp/lk --set train.steps=400 --set train.lr=1.0e-9 --resume auto --dry-run >/dev/null 2>&1 && ok || bad "dry run after the lock's holder ended"
expect_error "checkpoint.out in a dataset folder" "checkpoint.out: $tmp/train: a dataset folder" "$groundc" train stage.yaml --set checkpoint.out=$tmp/train
expect_error "an empty checkpoint.out" "checkpoint.out: an empty path" "$groundc" train stage.yaml --dry-run --set checkpoint.out=

# --- refusals
expect_error "fresh start over checkpoints" "holds checkpoints already.*--resume auto" "$groundc" train stage.yaml --set checkpoint.out=$tmp/ref
sed 's/dim: 64/dim: 32/; s/ffn: 176/ffn: 88/' tiny.yaml >tiny_small.yaml
expect_error "another model" "written for another model" "$groundc" train stage.yaml --set model=tiny_small.yaml --set checkpoint.out=$tmp/k1 --resume auto
expect_error "another step count" "a run of 12 steps, this config makes 20" "$groundc" train stage.yaml --set train.steps=20 --set checkpoint.out=$tmp/k1 --resume "$tmp/k1/step_00000009"
expect_error "bad state.json" "state.json: field 'step'" bash -c "mkdir -p $tmp/bad && cp -r $tmp/k1/step_00000009 $tmp/bad/step_00000009 && sed -i -E 's/\"step\":\\s*9/\"step\": \"nine\"/' $tmp/bad/step_00000009/state.json && exec $groundc train stage.yaml --set checkpoint.out=$tmp/bad --resume $tmp/bad/step_00000009"
# a state.json cut short: its line and column; a `latest` that is a file: what to do
rm -rf sj && mkdir sj && cp -r k1/step_00000009 sj/ && head -c 60 k1/step_00000009/state.json >sj/step_00000009/state.json
expect_error "state.json cut short" "sj/step_00000009/state.json:[0-9]+:[0-9]+: not valid JSON" "$groundc" train stage.yaml --set checkpoint.out=$tmp/sj --resume auto
rm -rf sj && mkdir sj && cp -r k1/step_00000009 sj/ && echo step_00000009 >sj/latest
expect_error "latest as a file" "sj/latest: not a symbolic link to a checkpoint .*ln -sfn step_N" "$groundc" train stage.yaml --set checkpoint.out=$tmp/sj --resume auto
# state.json values that cannot be: a cursor that is not step x global batch (a huge one
# overflowed into a negative stream position that blamed a good shard), negative tokens, more
# non-finite steps in a row than steps
for edit in 's/"position":\s*"72"/"position": "9223372036854775804"/|data_cursor.position 9223372036854775804 is not step 9 x global_batch 8' \
  's/"tokens":\s*[0-9.e+]+,/"tokens": -5,/|field .tokens. out of range' \
  's/"bad_steps":\s*0/"bad_steps": 99/|bad_steps 99 is more than the 9 steps taken'; do
  rm -rf sj && mkdir sj && cp -r k1/step_00000009 sj/ && sed -i -E "${edit%%|*}" sj/step_00000009/state.json
  expect_error "state.json: ${edit#*|}" "sj/step_00000009/state.json: .*${edit#*|}" "$groundc" train stage.yaml --set checkpoint.out=$tmp/sj --resume auto
done
expect_error "unknown key" "--set data.shuffle=true:1:6: unknown key .shuffle. in data" "$groundc" train stage.yaml --set data.shuffle=true
expect_error "missing dataset" "nothere" "$groundc" train stage.yaml --set checkpoint.out=$tmp/x --set 'data.datasets=nothere'
# shards of another media geometry than the model's: refused at open, naming the shard (videos
# of 8 frames used to train as two 4-frame videos each when a batch held an even count)
"$groundc" pack --json raw/train.json --media-root raw --out train_f8 --tokenizer "$here/fixtures/tokenizer/test_bpe.model" "${tiny_pack[@]}" --video-frames 8 --threads 1 >/dev/null 2>&1 || bad "pack with 8 frames"
expect_error "other video frames" "train_f8/shard_[0-9]+\.h5: videos are 8 frames of 16x16, the model takes 4 frames of 16x16 \(pack with --video-frames 4 --video-size 16\)" "$groundc" train stage.yaml --set checkpoint.out=$tmp/f8 --set 'data.datasets=[train_f8]'
# other placeholder token counts than the model's: refused at open, naming the shard and the
# pack option (they used to fail in splice on the first batch, leaving an empty metrics.jsonl)
"$groundc" pack --json raw/train.json --media-root raw --out train_t8 --tokenizer "$here/fixtures/tokenizer/test_bpe.model" "${tiny_pack[@]}" --image-tokens 8 --threads 1 >/dev/null 2>&1 || bad "pack with 8 image tokens"
expect_error "other image tokens" "train_t8/shard_[0-9]+\.h5: image samples carry 8 patch tokens, the model makes 16 \(pack with --image-tokens 16\)" "$groundc" train stage.yaml --set checkpoint.out=$tmp/t8 --set 'data.datasets=[train_t8]'
[ ! -e t8/metrics.jsonl ] && ok || bad "a run refused at open left metrics.jsonl"
expect_error "eval over other image tokens" "train_t8/shard_[0-9]+\.h5: image samples carry 8 patch tokens, the model makes 16" "$groundc" eval ref/step_00000012 --data train_t8 --task caption --tokenizer "$here/fixtures/tokenizer/test_bpe.model"
"$groundc" pack --json raw/train.json --media-root raw --out train_a2 --tokenizer "$here/fixtures/tokenizer/test_bpe.model" "${tiny_pack[@]}" --audio-tokens 2 --threads 1 >/dev/null 2>&1 || bad "pack with 2 audio tokens"
expect_error "other audio tokens" "train_a2/shard_[0-9]+\.h5: audio samples carry 2 patch tokens, the model makes 4 \(pack with --audio-tokens 4\)" "$groundc" train stage.yaml --set checkpoint.out=$tmp/a2 --set 'data.datasets=[train_a2]'
# --dry-run finds those too, and every way a dataset does not fit is said in one line (five
# wrong pack options used to take five train attempts)
"$groundc" pack --json raw/train.json --media-root raw --out train_many --tokenizer "$here/fixtures/tokenizer/test_bpe.model" "${tiny_pack[@]}" --image-size 24 --image-tokens 9 --video-frames 8 --audio-tokens 2 --threads 1 >/dev/null 2>&1 || bad "pack with four wrong options"
expect_error "dry run: every mismatch at once" "train_many/shard_[0-9]+\.h5: images are 24x24, the model's image_size is 32; image samples carry 9 patch tokens, the model makes 16; videos are 8 frames of 16x16, the model takes 4 frames of 16x16; audio samples carry 2 patch tokens, the model makes 4 \(pack with --image-size 32 --image-tokens 16 --video-frames 4 --video-size 16 --audio-tokens 4\)" "$groundc" train stage.yaml --dry-run --set checkpoint.out=$tmp/many --set 'data.datasets=[train_many]'
# --dry-run: checkpoint.out that cannot be made; a --resume checkpoint of another model
expect_error "dry run: checkpoint.out under a file" "^groundc: error: --set checkpoint.out=$tmp/tiny.yaml/out:1:16: checkpoint.out: .*cannot write there \(.*Not a directory\)" "$groundc" train stage.yaml --dry-run --set checkpoint.out=$tmp/tiny.yaml/out
expect_error "dry run: resume another model" "written for another model" "$groundc" train stage.yaml --dry-run --set model=tiny_small.yaml --set checkpoint.out=$tmp/k1 --resume auto
"$groundc" train stage.yaml --dry-run --set checkpoint.out=$tmp/k1 --resume auto >"$tmp/log" 2>&1 && grep -q "config valid" "$tmp/log" && ok || bad "dry run over a resumable checkpoint: $(tail -2 "$tmp/log")"
# data.max_len shorter than the samples: every sample longer is an error naming the dataset
# and the lengths (it used to train on nothing, logging loss 0); some longer, one warning line
expect_error "max_len below every sample" "^groundc: error: --set data.max_len=8:1:14: data.max_len: every sample of $tmp/train is longer than 8 tokens \([0-9]+ to [0-9]+\)" "$groundc" train stage.yaml --dry-run --set checkpoint.out=$tmp/ml --set data.max_len=8
shortest=$(sed -nE 's/.*longer than 8 tokens \(([0-9]+) to.*/\1/p' "$tmp/err")
expect_error "max_len below every sample (a real run)" "every sample of $tmp/train is longer than 8 tokens" "$groundc" train stage.yaml --set checkpoint.out=$tmp/ml --set data.max_len=8
[ ! -e ml ] && ok || bad "a run refused for data.max_len made checkpoint.out"
"$groundc" train stage.yaml --dry-run --set checkpoint.out=$tmp/ml --set data.max_len="$shortest" >"$tmp/log" 2>&1 &&
  [ "$(grep -c "^groundc: warning: $tmp/train: [0-9]* of [0-9]* samples are longer than data.max_len $shortest (the longest [0-9]* tokens)" "$tmp/log")" = 1 ] && ok ||
  bad "max_len below some samples: one warning line: $(grep -v '^ ' "$tmp/log" | head -3)"
# a step whose batch has no supervised token (the hook empties every even step) makes no
# update and is said, not logged as a step of loss 0
GROUNDC_TEST_SKIP_LAST_MICRO=0 run --set checkpoint.out=$tmp/empty --set train.steps=4 --set train.log_every=2 || bad "empty steps: $(tail -3 "$tmp/log")"
[ "$(grep -c '"reason": "no supervised token"' empty/metrics.jsonl)" = 2 ] && ok || bad "empty steps not in metrics.jsonl: $(cat empty/metrics.jsonl)"
grep -q '"step": 2, "stage": 2, "loss": [1-9].*"empty_steps": 1' empty/metrics.jsonl && ! grep -q '"loss": 0[,.]' empty/metrics.jsonl && ok || bad "empty steps in the window's loss: $(cat empty/metrics.jsonl)"
grep -q "^step 2: no supervised token in the global batch" "$tmp/log" && grep -q "1 step without supervised tokens" "$tmp/log" && grep -q "^2 steps of this run had no supervised token" "$tmp/log" && ok || bad "empty steps not said: $(grep -i supervised "$tmp/log")"
# init.checkpoint is stored absolute like the dataset paths: relative to the config file that
# names it, or to the working folder for a --set value
mkdir -p "$tmp/sub"
sed -e 's|^model: tiny.yaml|model: ../tiny.yaml|; s|path: train,|path: ../train,|' stage.yaml >sub/ft.yaml
printf 'init:\n  checkpoint: ../ref/step_00000012\n' >>sub/ft.yaml
refabs=$(realpath "$tmp/ref/step_00000012")
"$groundc" train sub/ft.yaml --set train.steps=2 --set checkpoint.out=$tmp/rel1 >"$tmp/log" 2>&1 || bad "relative init.checkpoint: $(tail -2 "$tmp/log")"
grep -qF "checkpoint: $refabs" rel1/latest/config.yaml && ok || bad "init.checkpoint from a file not stored absolute: $(grep -A2 '^init' rel1/latest/config.yaml)"
"$groundc" train stage.yaml --set train.steps=2 --set checkpoint.out=$tmp/rel2 --set init.checkpoint=ref/step_00000012 >"$tmp/log" 2>&1 || bad "--set init.checkpoint: $(tail -2 "$tmp/log")"
grep -qF "checkpoint: $refabs" rel2/latest/config.yaml && ok || bad "--set init.checkpoint not stored absolute: $(grep -A2 '^init' rel2/latest/config.yaml)"
expect_error "init.checkpoint: a run folder" "ref: a run folder, not a checkpoint; name one of its checkpoints, e.g. .*ref/latest" \
  "$groundc" train stage.yaml --set train.steps=2 --set checkpoint.out=$tmp/rel3 --set init.checkpoint=ref
# init.checkpoint of another model: refused from its config.yaml before the model is allocated
# (a 7B config over a small checkpoint ran out of host memory for the parameter pool first)
sed 's/ffn: 176/ffn: 68719476736/' tiny.yaml >tiny_huge.yaml
expect_error "init.checkpoint of another model" "ref/step_00000012: written for another model: its llm\.ffn is 176, this config's model has 68719476736" "$groundc" train stage.yaml --set model=tiny_huge.yaml --set checkpoint.out=$tmp/huge --set init.checkpoint=ref/step_00000012
# init weights that do not fit the model: found on a meta model before the model is allocated,
# by the real run and by --dry-run alike. An HF folder whose config.json disagrees with the
# model YAML: one line with every mismatch (the huge ffn would not have been allocated).
expect_error "init.llm: config.json of another model" "llama-f32-single/config\.json: describes another llm than the model YAML: .*intermediate_size.*24.*68719476736" \
  "$groundc" train stage.yaml --set model=tiny_huge.yaml --set checkpoint.out=$tmp/huge2 --set init.llm="$here/fixtures/import/llama-f32-single"
[ ! -e huge2 ] && ok || bad "a run with wrong init weights made its checkpoint folder"
# a lone weights file of other shapes: --dry-run names the tensor, as the run does
mkdir -p lone && cp "$here/fixtures/import/llama-f32-single/model.safetensors" lone/
for flag in --dry-run ""; do
  expect_error "init.llm of other shapes ${flag:-(run)}" "lone/model\.safetensors: .*model\.embed_tokens\.weight" \
    "$groundc" train stage.yaml $flag --set checkpoint.out=$tmp/lone_run --set init.llm=lone/model.safetensors
done
# frozen parameters that no init entry loads stay random for the whole stage: one warning
# names their modules (a checkpoint without the CLIP tower, as GroundingGPT's are); a full
# init says nothing
"$py" - "$here" <<'PY' || bad "a checkpoint without its CLIP tower"
import json, struct, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import st_write
raw = open("ref/step_00000012/model.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n])
out = {}
for name, e in head.items():
    if name == "__metadata__" or name.startswith("model.vision_tower."):
        continue
    a, b = e["data_offsets"]
    assert e["dtype"] == "F32", e
    out[name] = ("F32", np.frombuffer(raw[8 + n + a:8 + n + b], np.float32).reshape(e["shape"]))
st_write.write("noclip.safetensors", out, {"format": "pt"})
PY
"$groundc" train stage.yaml --set train.steps=1 --set checkpoint.out=$tmp/noclip --set init.checkpoint=noclip.safetensors >"$tmp/log" 2>&1 &&
  grep -q "^train: warning: [0-9]* frozen parameter tensors ([0-9]* values) were loaded by no init entry and stay at their random initialisation for the whole stage: model.vision_tower (GroundingGPT's checkpoints do not hold the CLIP tower: give init.image_encoder too)$" "$tmp/log" &&
  ok || bad "frozen random parameters: $(grep -i warning "$tmp/log" || tail -2 "$tmp/log")"
"$groundc" train stage.yaml --set train.steps=1 --set checkpoint.out=$tmp/fullinit --set init.checkpoint=ref/step_00000012 >"$tmp/log" 2>&1 &&
  ! grep -q "loaded by no init entry" "$tmp/log" && ok || bad "a full init warned: $(grep -i warning "$tmp/log")"
# the after-stage eval's inputs are checked before training, not after the whole run
expect_error "missing eval data" "nothere_eval" "$groundc" train stage.yaml --set checkpoint.out=$tmp/ev --set eval.data=nothere_eval --set eval.tokenizer="$here/fixtures/tokenizer/test_bpe.model"
[ ! -e ev ] && ok || bad "a run with missing eval data trained first"

# --- paths of PATH_MAX or more are refused, never cut short (metrics.jsonl went to
# "metrics.js", a resume probed a cut state.json path, a shard was written under a cut name)
long_path() { # N: a path of N characters under $tmp/l (folders of 100 characters, not made)
  local p=$tmp/l
  while [ ${#p} -lt $(($1 - 200)) ]; do p=$p/$(printf 'd%.0s' {1..100}); done
  echo "$p/$(printf 'e%.0s' $(seq $(($1 - ${#p} - 1))))"
}
expect_error "long checkpoint.out" "e/metrics\.jsonl: path too long$" "$groundc" train stage.yaml --set checkpoint.out="$(long_path 4085)"
expect_error "long --resume" "e/state\.json: path too long$" "$groundc" train stage.yaml --set checkpoint.out=$tmp/lr --resume "$(long_path 4086)"
expect_error "pack: long shard path" "e/\.pack-staging/shard_00000\.h5: path too long$" "$groundc" pack --json raw/train.json --media-root raw \
  --out "$(long_path 4070)" --tokenizer "$here/fixtures/tokenizer/test_bpe.model" "${tiny_pack[@]}" --threads 1
[ ! -e "$(long_path 4070)" ] && ok || bad "pack left its output folder behind"
rm -rf "$tmp/l"

# --- non-finite steps: skipped and logged; too many in a row stop the run
GROUNDC_TEST_NAN_STEPS=4 run --set checkpoint.out=$tmp/nan || bad "one NaN step: $(tail -3 "$tmp/log")"
grep -q '"step": 4, "skipped": true' nan/metrics.jsonl && ok || bad "skipped step logged"
grep -q "step 4: non-finite loss" "$tmp/log" && ok || bad "skipped step reported"
GROUNDC_TEST_NAN_STEPS=4,5 expect_error "NaN steps in a row" "2 non-finite steps in a row" "$groundc" train stage.yaml --set checkpoint.out=$tmp/nan2 --set train.max_bad_steps=2

# --- train.loss_average, from the losses themselves: at lr 0 (tiny.yaml: no dropout) the weights stay,
# so two steps of micro-batch 4 give the losses La, Lb of the two micro-batches and their token
# counts; one step of 4 x accumulation 2 over the same samples is their token-weighted mean
# (tokens, the default) or their plain mean (micro_batch, the reference's average)
for v in "la1 --set data.micro_batch=4 --set train.steps=2" \
         "la2 --set data.micro_batch=4 --set data.accumulation=2 --set train.steps=1" \
         "la3 --set data.micro_batch=4 --set data.accumulation=2 --set train.steps=1 --set train.loss_average=micro_batch"; do
  # shellcheck disable=SC2086
  run --set train.lr=0 --set checkpoint.out=$tmp/$v || bad "loss_average run $v: $(tail -3 "$tmp/log")"
done
"$py" - la1/metrics.jsonl la2/metrics.jsonl la3/metrics.jsonl <<'PY' && ok || bad "train.loss_average"
import json, sys
one, tok, mb = ([json.loads(l) for l in open(p) if '"loss"' in l] for p in sys.argv[1:])
la, lb = one[0]["loss"], one[1]["loss"]
na, nb = one[0]["tokens"], one[1]["tokens"] - one[0]["tokens"]
assert la != lb and na != nb, (la, lb, na, nb)  # else the two averages would agree
want_tok, want_mb = (la * na + lb * nb) / (na + nb), (la + lb) / 2
assert abs(tok[0]["loss"] - want_tok) <= 1e-6 * want_tok, (tok[0]["loss"], want_tok)
assert abs(mb[0]["loss"] - want_mb) <= 1e-6 * want_mb, (mb[0]["loss"], want_mb)
assert tok[0]["tokens"] == mb[0]["tokens"] == na + nb
PY

# --- data parallel: 2 ranks x 4 and ZeRO-1 2 ranks x 2 x 2 vs 1 rank x 8
if command -v mpirun >/dev/null; then
  "${mpi[@]}" "$groundc" train stage.yaml --set checkpoint.out=$tmp/dp --set data.micro_batch=4 >"$tmp/log" 2>&1 || bad "mpirun 2 ranks: $(tail -3 "$tmp/log")"
  "${mpi[@]}" "$groundc" train stage.yaml --set checkpoint.out=$tmp/z1 --set data.micro_batch=2 --set data.accumulation=2 --set train.zero1=true >"$tmp/log" 2>&1 || bad "mpirun ZeRO-1: $(tail -3 "$tmp/log")"
  for d in dp z1; do
    "$py" - ref/metrics.jsonl $d/metrics.jsonl <<'PY' && ok || bad "losses of $d differ from 1 rank x 8"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert len(a) == len(b) == 12, (len(a), len(b))
for x, y in zip(a, b):
    assert abs(x["loss"] - y["loss"]) <= 1e-5 * abs(x["loss"]), (x["step"], x["loss"], y["loss"])
PY
    "$py" "$here/st_compare.py" ref/step_00000012/model.safetensors $d/step_00000012/model.safetensors --rtol 1e-3 --atol 1e-4 >"$tmp/cmp" && ok || bad "weights of $d: $(cat "$tmp/cmp")"
  done
  [ -f z1/step_00000012/optim.rank00001.safetensors ] && ok || bad "ZeRO-1 writes one optimizer file per rank"
  # the reference's average (train.loss_average: micro_batch) is the mean over every rank's
  # micro-batches: 2 ranks x 4 take the steps of 1 rank x 4 x accumulation 2
  "${mpi[@]}" "$groundc" train stage.yaml --set checkpoint.out=$tmp/mb2 --set data.micro_batch=4 --set train.loss_average=micro_batch >"$tmp/log" 2>&1 || bad "mpirun micro_batch average: $(tail -3 "$tmp/log")"
  run --set checkpoint.out=$tmp/mb1 --set data.micro_batch=4 --set data.accumulation=2 --set train.loss_average=micro_batch || bad "micro_batch average, 1 rank: $(tail -3 "$tmp/log")"
  "$py" - mb1/metrics.jsonl mb2/metrics.jsonl ref/metrics.jsonl <<'PY' && ok || bad "micro_batch average: 2 ranks x 4 differ from 1 rank x 4 x 2, or equal the token average"
import json, sys
a, b, t = ([json.loads(l) for l in open(p)] for p in sys.argv[1:])
assert len(a) == len(b) == 12, (len(a), len(b))
for x, y in zip(a, b):
    assert abs(x["loss"] - y["loss"]) <= 1e-5 * abs(x["loss"]), (x["step"], x["loss"], y["loss"])
assert any(abs(x["loss"] - y["loss"]) > 1e-4 * abs(x["loss"]) for x, y in zip(a, t))
PY
  "$py" "$here/st_compare.py" mb1/step_00000012/model.safetensors mb2/step_00000012/model.safetensors --rtol 1e-3 --atol 1e-4 >"$tmp/cmp" && ok || bad "weights of the micro_batch average: $(cat "$tmp/cmp")"

  # another rank count resumes when the global batch stays (2 x 4 -> 1 x 4 x accumulation 2):
  # the losses go on as the 2-rank run's, up to float rounding, and a note says so
  expect_error "another world size, other global batch" "global batch 8, this config makes 4 \(on another number of ranks, set data.global_batch" "$groundc" train stage.yaml --set checkpoint.out=$tmp/dp1 --set data.micro_batch=4 --resume "$tmp/dp/step_00000009"
  "$groundc" train stage.yaml --set checkpoint.out=$tmp/dp1 --set data.micro_batch=4 --set data.global_batch=8 --resume "$tmp/dp/step_00000009" >"$tmp/log" 2>&1 || bad "2 -> 1 rank resume: $(tail -3 "$tmp/log")"
  grep -q "^note: .*written by 2 ranks, this run has 1: .*not bit for bit" "$tmp/log" && ok || bad "2 -> 1 rank resume: no note"
  "$py" - dp/metrics.jsonl dp1/metrics.jsonl <<'PY' && ok || bad "2 -> 1 rank resume: losses differ from the 2-rank run's"
import json, sys
a = {r["step"]: r for r in map(json.loads, open(sys.argv[1]))}
b = [json.loads(l) for l in open(sys.argv[2])]
assert [r["step"] for r in b] == [10, 11, 12], [r["step"] for r in b]
for y in b:
    x = a[y["step"]]
    assert abs(x["loss"] - y["loss"]) <= 1e-5 * abs(x["loss"]), (y["step"], x["loss"], y["loss"])
    assert x["tokens"] == y["tokens"], (x["tokens"], y["tokens"])
PY
  # ZeRO-1 shards the optimizer state per rank: that resumes on its own rank count only
  expect_error "ZeRO-1, another world size" "written by 2 ranks with ZeRO-1 .*this run has 1 \(launch with mpirun -np 2\)" "$groundc" train stage.yaml --set checkpoint.out=$tmp/z1b --set data.micro_batch=2 --set data.global_batch=8 --set train.zero1=true --resume "$tmp/z1/step_00000009"
  # (a checkpoint without ZeRO-1 resumed with it on another rank count: the setting is named,
  # not the checkpoint blamed for a sharding it does not have)
  expect_error "ZeRO-1 turned on, another world size" "dp/step_00000009: written without ZeRO-1, this config has train.zero1: true \(set it to false to continue this run\)" "$groundc" train stage.yaml --set checkpoint.out=$tmp/z1c --set data.micro_batch=4 --set data.global_batch=8 --set train.zero1=true --resume "$tmp/dp/step_00000009"
  # resume under MPI repeats the losses too
  GROUNDC_TEST_KILL_AT_STEP=5 "${mpi[@]}" "$groundc" train stage.yaml --set checkpoint.out=$tmp/dpk --set data.micro_batch=4 >/dev/null 2>&1
  "${mpi[@]}" "$groundc" train stage.yaml --set checkpoint.out=$tmp/dpk --set data.micro_batch=4 --resume auto >"$tmp/log" 2>&1 || bad "MPI resume: $(tail -3 "$tmp/log")"
  diff <(losses dp/metrics.jsonl) <(losses dpk/metrics.jsonl) >/dev/null && ok || bad "MPI losses after kill + resume differ"
  # SIGTERM to rank 1 alone: both ranks stop after the same step, with one checkpoint
  GROUNDC_TEST_SIGNAL_AT_STEP=4:1 "${mpi[@]}" -x GROUNDC_TEST_SIGNAL_AT_STEP "$groundc" train stage.yaml --set checkpoint.out=$tmp/dpt --set data.micro_batch=4 >"$tmp/log" 2>&1
  [ "$(readlink dpt/latest)" = step_00000005 ] && [ -f dpt/step_00000005/state.json ] && ok || bad "MPI SIGTERM: latest $(readlink dpt/latest): $(tail -3 "$tmp/log")"
  "${mpi[@]}" "$groundc" train stage.yaml --set checkpoint.out=$tmp/dpt --set data.micro_batch=4 --resume auto >"$tmp/log" 2>&1 || bad "MPI resume after SIGTERM: $(tail -3 "$tmp/log")"
  diff <(losses dp/metrics.jsonl) <(losses dpt/metrics.jsonl) >/dev/null && ok || bad "MPI losses after SIGTERM + resume differ"
  # ranks started with another config or option (mpirun's "A : B" form; nodes reading their own
  # copies of a config): refused at start by the ranks that differ, naming the key, instead of
  # training apart (another lr) or waiting for ever in a collective (a dry run beside a run)
  mpmd=(mpirun --oversubscribe --allow-run-as-root -x ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" -np 1 "$groundc" train stage.yaml --set checkpoint.out=$tmp/md --set data.micro_batch=4 : -np 1 "$groundc" train stage.yaml --set checkpoint.out=$tmp/md --set data.micro_batch=4)
  # (leak checks off in every rank, as use_mpi has them: OpenMPI's own allocations)
  ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" timeout 120 "${mpmd[@]}" --set train.lr=1.0e-3 >"$tmp/log" 2>&1
  rc=$?
  [ $rc = 1 ] && grep -q "^groundc: error: \[rank 1\] stage.yaml: this rank's config or options differ from rank 0's (train.lr 3.0e-3 -> 1.0e-3): start every rank with the same config" "$tmp/log" &&
    [ "$(grep -c 'groundc: error' "$tmp/log")" = 1 ] && [ ! -e md/latest ] && ok || bad "ranks with another lr: rc $rc: $(grep -v '^ ' "$tmp/log" | head -5)"
  ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" timeout 120 "${mpmd[@]}" --dry-run >"$tmp/log" 2>&1
  rc=$?
  [ $rc = 1 ] && grep -q "^groundc: error: \[rank 1\] stage.yaml: this rank's config or options differ from rank 0's (rank 0's options: --resume (none), this rank's options: --dry-run --resume (none))" "$tmp/log" &&
    ok || bad "a dry-run rank beside a training one: rc $rc: $(grep -v '^ ' "$tmp/log" | head -5)"
  # an error every rank meets is said once (rank 0's), not once per rank
  "${mpi[@]}" "$groundc" train stage.yaml --set checkpoint.out=$tmp/g12 --set data.micro_batch=4 --set data.global_batch=12 >"$tmp/log" 2>&1
  [ "$(grep -c 'groundc: error' "$tmp/log")" = 1 ] && grep -q "groundc: error: \[rank 0\] .*data.global_batch: 12 is not a multiple" "$tmp/log" && ok ||
    bad "an error of every rank: $(grep 'groundc: error' "$tmp/log")"
  # the one-process commands under mpirun run on rank 0 alone, saying so (an export's folder was
  # raced for by every rank, an answer printed once per rank)
  "${mpi[@]}" "$groundc" inspect tiny.yaml >"$tmp/out" 2>"$tmp/err" && [ "$(grep -c '^model tiny' "$tmp/out")" = 1 ] &&
    grep -q "^groundc inspect: note: runs as one process; the other 1 of this mpirun do nothing" "$tmp/err" && ok ||
    bad "inspect under mpirun: $(grep -c '^model tiny' "$tmp/out") reports, $(cat "$tmp/err")"
  # SIGUSR1 to mpirun itself (which forwards it to every rank, where its SIGTERM would kill them
  # a second later): the ranks stop after one step together, write the checkpoint and exit 138
  "${mpi[@]}" "$groundc" train stage.yaml --set checkpoint.out=$tmp/dpu --set data.micro_batch=4 \
    --set train.steps=2000 --set checkpoint.every=1000 >"$tmp/log" 2>&1 &
  mpirun_pid=$!
  for i in $(seq 300); do [ -f dpu/metrics.jsonl ] && [ "$(wc -l <dpu/metrics.jsonl)" -ge 2 ] && break; sleep 0.1; done
  kill -USR1 $mpirun_pid
  wait $mpirun_pid
  rc=$?
  step=$(readlink dpu/latest); step=${step#step_}
  [ $rc = 138 ] && [ -n "$step" ] && [ "$((10#$step))" -lt 2000 ] &&
    grep -qE "^groundc: stopped by SIGUSR1 after step $((10#$step)) of 2000: checkpoint .*dpu/step_$step written" "$tmp/log" && ok ||
    bad "SIGUSR1 to mpirun: rc $rc, latest $(readlink dpu/latest): $(grep -v '^stage' "$tmp/log" | tail -3)"
  # a rank that stops answering (SIGSTOP): the other gives up after train.collective_timeout_s
  # with one line naming the collective, and the job ends instead of hanging
  start=$SECONDS
  GROUNDC_TEST_STOP_AT_STEP=3:1 timeout 120 "${mpi[@]}" -x GROUNDC_TEST_STOP_AT_STEP "$groundc" train stage.yaml --set checkpoint.out=$tmp/dps --set data.micro_batch=4 --set train.collective_timeout_s=2 >"$tmp/log" 2>&1
  rc=$?
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $((SECONDS - start)) -lt 60 ] &&
    grep -qE "groundc: error: \[rank 0\] waited [0-9]+ s in MPI_[A-Za-z]+( \([a-z0-9 ]+\))? for the other ranks: one of them has stopped, hung or died \(train.collective_timeout_s is 2; 0 waits for ever\)" "$tmp/log" &&
    ok || bad "stopped rank: rc $rc after $((SECONDS - start)) s: $(grep error "$tmp/log" | head -2)"
else
  bad "mpirun not found"
fi

# --- a curriculum of two stages
sed -e "s#out: .*#out: $tmp/c1#" -e 's/stage: 2/stage: 1/' -e 's/steps: 12/steps: 3/' stage.yaml >c1.yaml
sed -e "s#out: .*#out: $tmp/c2#" -e 's/steps: 12/steps: 3/' stage.yaml >c2.yaml
printf 'stages:\n  - c1.yaml\n  - c2.yaml\n' >cur.yaml
"$groundc" train cur.yaml >"$tmp/log" 2>&1 || bad "curriculum: $(tail -3 "$tmp/log")"
grep -q "init checkpoint: .* from $tmp/c1/step_00000003" "$tmp/log" && ok || bad "stage 2 starts from stage 1's checkpoint"
"$py" - c1/step_00000003/model.safetensors c2/step_00000003/model.safetensors "$here" <<'PY' && ok || bad "stage 2 carries stage 1's weights and trains the LLM"
import sys
sys.path.insert(0, sys.argv[3])
from st_compare import read
a, b = read(sys.argv[1]), read(sys.argv[2])
enc = [k for k in a if k.startswith("model.vision_tower.")]
assert enc and all((a[k] == b[k]).all() for k in enc), "frozen encoder changed"
q = "model.layers.0.self_attn.q_proj.weight"
assert (a[q] != b[q]).any(), "stage 2 left the LLM as stage 1 had it"
PY
"$groundc" train cur.yaml >"$tmp/log" 2>&1 || bad "curriculum again"
# one checkpoint.out for every stage (--set applies to each): the dry run says so; the real run
# refuses stage 2 over stage 1's checkpoint, naming the stages rather than the step counts
expect_error "curriculum in one folder, dry run" "cur.yaml: stages 1 \(.*c1.yaml\) and 2 \(.*c2.yaml\) both write into checkpoint.out $tmp/one: give each stage a folder of its own" \
  "$groundc" train cur.yaml --set checkpoint.out=$tmp/one --dry-run
expect_error "curriculum in one folder" "one/step_00000003: a checkpoint of stage 1, this config trains stage 2: give each stage a checkpoint.out of its own" \
  "$groundc" train cur.yaml --set checkpoint.out=$tmp/one
[ "$(grep -c 'stage already complete' "$tmp/log")" = 2 ] && ok || bad "complete stages skipped"
grep -q "^| c2.yaml | 3 |" "$tmp/log" && ok || bad "curriculum table: $(tail -4 "$tmp/log")"
grep -q "^| stage | steps | final loss | REC Acc@0.5 | temporal R@1@0.5 | sound R@1@0.5 |$" "$tmp/log" &&
  [ "$(grep "^| c2.yaml |" "$tmp/log" | tr -cd '|' | wc -c)" = 7 ] && ok || bad "curriculum table: no sound column: $(tail -4 "$tmp/log")"
# stage 1 trained again in its folder (a new run): stage 2, complete or half done, descends
# from the old weights, and is refused, not skipped or continued; the dry run says so too
grep -qE '"run_id":[[:space:]]*"[0-9a-f]{32}"' c1/latest/state.json &&
  grep -qE "\"init_from\":[[:space:]]*\"$(grep -oE '"run_id":[[:space:]]*"[0-9a-f]*"' c1/latest/state.json | cut -d'"' -f4)@3\"" c2/latest/state.json &&
  ok || bad "lineage fields: $(grep -E 'run_id|init_from' c1/latest/state.json c2/latest/state.json)"
GROUNDC_TEST_KILL_AT_STEP=3 "$groundc" train c2.yaml --set checkpoint.out=$tmp/c2_half --set checkpoint.every=1 \
  --set init.checkpoint=$tmp/c1/step_00000003 >/dev/null 2>&1
[ -d c2_half/step_00000002 ] && [ ! -d c2_half/step_00000003 ] && ok || bad "half-done stage 2: $(ls c2_half)"
rm -r c1 && "$groundc" train c1.yaml >"$tmp/log" 2>&1 || bad "stage 1 again: $(tail -3 "$tmp/log")"
expect_error "complete stage 2 over a retrained stage 1" "c2/step_00000003: trained from init.checkpoint $tmp/c1/step_00000003 when it held run [0-9a-f]{8} \(step 3\), which has been replaced by run [0-9a-f]{8} \(step 3\).*the stage is complete" \
  "$groundc" train cur.yaml
expect_error "dry run: stage 2 over a retrained stage 1" "c2/step_00000003: trained from init.checkpoint" "$groundc" train cur.yaml --dry-run
expect_error "half-done stage 2 over a retrained stage 1" "c2_half/step_00000002: trained from init.checkpoint" \
  "$groundc" train c2.yaml --set checkpoint.out=$tmp/c2_half --set init.checkpoint=$tmp/c1/step_00000003 --resume auto
# a complete stage whose dataset folder was repacked with other samples since is not skipped
rm -r c2 && "$groundc" train cur.yaml >"$tmp/log" 2>&1 || bad "curriculum after stage 1 again: $(tail -3 "$tmp/log")"
cp -r train dsx && "$groundc" train c2.yaml --set 'data.datasets=[dsx]' --set checkpoint.out=$tmp/c2x \
  --set init.checkpoint=$tmp/c1/step_00000003 >"$tmp/log" 2>&1 || bad "stage on dsx: $(tail -3 "$tmp/log")"
"$groundc" synth --out other --images 12 --videos 4 --audios 4 --seed 9 >/dev/null &&
  rm -r dsx && "$groundc" pack --json other/train.json --media-root other --out dsx \
    --tokenizer "$here/fixtures/tokenizer/test_bpe.model" "${tiny_pack[@]}" --threads 1 >/dev/null || bad "repack dsx"
expect_error "complete stage over repacked data" "c2x/step_00000003: trained on other data \(data.datasets: .*the stage is complete" \
  "$groundc" train c2.yaml --set 'data.datasets=[dsx]' --set checkpoint.out=$tmp/c2x --set init.checkpoint=$tmp/c1/step_00000003 --resume auto

# --- the shipped configs read and check (no weights or data needed for --config-only)
src=$here/..
for c in stage1 stage2 stage3 curriculum finetune demo/curriculum; do
  "$groundc" train "$src/configs/$c.yaml" --config-only >"$tmp/log" 2>&1 && grep -q "config valid" "$tmp/log" && ok || bad "configs/$c.yaml --config-only: $(tail -2 "$tmp/log")"
done
"$groundc" train "$src/configs/stage2.yaml" --config-only --set data.micro_batch=48 >"$tmp/log" 2>&1
grep -q "not a multiple of micro_batch 48" "$tmp/log" && ok || bad "global batch 512 with micro 48 refused"

# --- the plot script draws the curves (needs python3-matplotlib)
if "$py" -c "import matplotlib" 2>/dev/null; then
  "$py" "$src/scripts/plot_metrics.py" ref nan --out "$tmp/m.png" >/dev/null &&
    [ "$(head -c 4 "$tmp/m.png" | od -An -c | tr -d ' ')" = "211PNG" ] && ok || bad "plot_metrics.py"
  # a live run's unfinished last line is left out (with a note); a missing run is one line
  { cat ref/metrics.jsonl; printf '{"step": 13, "stage": 2, "lo'; } >live.jsonl
  "$py" "$src/scripts/plot_metrics.py" live.jsonl --out "$tmp/m2.png" >/dev/null 2>"$tmp/plot.err" &&
    grep -q "live.jsonl:[0-9]*: an unfinished last line, left out" "$tmp/plot.err" && [ -s "$tmp/m2.png" ] &&
    ok || bad "plot of a live run: $(cat "$tmp/plot.err")"
  "$py" "$src/scripts/plot_metrics.py" nothere --out "$tmp/m3.png" >/dev/null 2>"$tmp/plot.err"
  [ $? -ne 0 ] && [ "$(cat "$tmp/plot.err")" = "plot_metrics: nothere: No such file or directory" ] &&
    ok || bad "plot of a missing run: $(cat "$tmp/plot.err")"
else
  echo "test_train: python3-matplotlib missing; plot check skipped"
fi

summary
