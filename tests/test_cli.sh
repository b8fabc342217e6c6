#!/usr/bin/env bash
# test_cli.sh GROUNDC BUILD_DIR: the groundc command line and config loading. Every error is
# one line on stderr naming file:line:column and what is wrong, with a non-zero exit; a good
# config trains and writes its run folder.
set -u
. "$(dirname "$0")/lib.sh" "$@"

good=$tmp/good.yaml
cat >"$good" <<YAML
model:
  vocab: 12
  dim: 16
  layers: 1
  heads: 2
  ffn: 24
  max_seq: 16
task:
  name: copy
  payload: 3
train:
  steps: 2
  batch: 2
  log_every: 1
  out: $tmp/run
eval:
  samples: 4
YAML

"$groundc" --version | grep -q "groundc [0-9]" && ok || bad "--version"
"$groundc" --help | grep -q "groundc train" && ok || bad "--help"
expect_error "unknown command" "unknown command 'frobnicate'" "$groundc" frobnicate
expect_error "no config" "no config given" "$groundc" train
expect_error "missing file" "nope.yaml: cannot open" "$groundc" train "$tmp/nope.yaml"

sed 's/  dim: 16/  dim: 16\n  dimm: 3/' "$good" >"$tmp/unknown.yaml"
expect_error "unknown key" "unknown.yaml:4:3: unknown key 'dimm' in model" "$groundc" train "$tmp/unknown.yaml"
sed 's/steps: 2/steps: two/' "$good" >"$tmp/type.yaml"
expect_error "wrong type" "type.yaml:12:10: train.steps: expected an integer, got 'two'" "$groundc" train "$tmp/type.yaml"
sed 's/lr_placeholder//; s/batch: 2/batch: 0/' "$good" >"$tmp/range.yaml"
expect_error "out of range" "range.yaml:13:10: train.batch: 0 is outside" "$groundc" train "$tmp/range.yaml"
sed 's/heads: 2/heads: 3/' "$good" >"$tmp/heads.yaml"
expect_error "dims" "heads.yaml:2:3: model: dim 16 is not a multiple of heads 3" "$groundc" train "$tmp/heads.yaml"
sed 's/name: copy/name: paste/' "$good" >"$tmp/enum.yaml"
expect_error "enum" "enum.yaml:9:9: task.name: 'paste' is not one of: copy" "$groundc" train "$tmp/enum.yaml"
printf 'model:\n  dim: [1, 2\n' >"$tmp/syntax.yaml"
expect_error "syntax" "syntax.yaml:[0-9]+:[0-9]+: YAML syntax" "$groundc" train "$tmp/syntax.yaml"
printf 'model:\n  dim: 8\n  dim: 9\n' >"$tmp/dup.yaml"
expect_error "duplicate key" "dup.yaml:3:3: model: key 'dim' appears twice" "$groundc" train "$tmp/dup.yaml"
expect_error "bad --set" "--set train.steps=x:1:13: train.steps: expected an integer, got .x." \
  "$groundc" train "$good" --set train.steps=x
expect_error "payload too long" "payload.*exceed max_seq 16" "$groundc" train "$good" --set task.payload=9

# a good run, with an override
if "$groundc" train "$good" --set train.steps=3 >"$tmp/out" 2>"$tmp/err"; then ok; else bad "good run: $(cat "$tmp/err")"; fi
[ "$(wc -l <"$tmp/run/metrics.jsonl")" -eq 3 ] && ok || bad "metrics.jsonl should have 3 lines"
grep -q '"step": 3, "loss": ' "$tmp/run/metrics.jsonl" && ok || bad "metrics.jsonl content"
grep -q "steps: 3" "$tmp/run/config.yaml" && ok || bad "resolved config not saved with the override"
grep -q "held-out token acc" "$tmp/out" && ok || bad "no evaluation table"
# config.yaml is replaced whole (temporary file, fsync, rename), never rewritten in place: a
# hard link to the old file keeps the old text, and no temporary file stays behind
ln -f "$tmp/run/config.yaml" "$tmp/old_config.yaml"
if "$groundc" train "$good" --set train.steps=2 >"$tmp/out" 2>"$tmp/err"; then ok; else bad "second run: $(cat "$tmp/err")"; fi
grep -q "steps: 3" "$tmp/old_config.yaml" && grep -q "steps: 2" "$tmp/run/config.yaml" && ok ||
  bad "config.yaml written through in place"
if ls "$tmp/run" | grep -q tmp; then bad "temporary file left in the run folder: $(ls "$tmp/run")"; else ok; fi
# non-finite steps: skipped and said, no NaN in metrics.jsonl; 10 in a row stop the copy-task
# run (its config has no train.max_bad_steps) with an error, not a NaN table and exit 0
GROUNDC_TEST_NAN_STEPS=2 "$groundc" train "$good" --set train.steps=3 >"$tmp/out" 2>"$tmp/err" &&
  grep -q "step 2: non-finite loss or gradient, update skipped (1 in a row)" "$tmp/err" && ok ||
  bad "one NaN step: $(cat "$tmp/err")"
grep -qi nan "$tmp/run/metrics.jsonl" && bad "NaN in metrics.jsonl: $(cat "$tmp/run/metrics.jsonl")" || ok
GROUNDC_TEST_NAN_STEPS=1,2,3,4,5,6,7,8,9,10 "$groundc" train "$good" --set train.steps=12 >"$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc -ne 0 ] && [ "$(grep -c 'groundc: error' "$tmp/err")" = 1 ] &&
  tail -1 "$tmp/err" | grep -q "^groundc: error: train: 10 non-finite steps in a row; stopping at step 10" &&
  ok || bad "10 NaN steps in a row: rc=$rc, $(tail -2 "$tmp/err")"

# stdout is checked before exit: `groundc ... > file` on a full disk fails, naming stdout
if [ -w /dev/full ]; then
  full() ( exec "$@" >/dev/full )
  expect_error "stdout full: --help" "^groundc: error: stdout: write failed: No space left" full "$groundc" --help
  expect_error "stdout full: --version" "^groundc: error: stdout: write failed" full "$groundc" --version
  expect_error "stdout full: synth --help" "^groundc: error: stdout: write failed" full "$groundc" synth --help
  expect_error "stdout full: inspect" "^groundc: error: stdout: write failed" full "$groundc" inspect "$src/configs/model/tiny.yaml"
else
  echo "test_cli: no /dev/full; stdout checks skipped"
fi

# long_path N: a path of N characters under $tmp/l (folders of 100 characters, not made)
long_path() {
  local p=$tmp/l
  while [ ${#p} -lt $(($1 - 200)) ]; do p=$p/$(printf 'd%.0s' {1..100}); done
  echo "$p/$(printf 'e%.0s' $(seq $(($1 - ${#p} - 1))))"
}
# synth: a train.json it cannot replace (a folder) fails naming it, and leaves no .tmp file
mkdir -p "$tmp/sj/train.json"
expect_error "synth over a folder" "sj/train.json: cannot rename" "$groundc" synth --out "$tmp/sj" --images 1 --videos 0 --audios 0
compgen -G "$tmp/sj/train.json.tmp*" >/dev/null && bad "synth left a train.json.tmp file behind" || ok
# paths of PATH_MAX or more are refused, never cut short (an image went to .../img_0000)
expect_error "synth long path" "^groundc: error: \.\.\.[de/]+/media/images/img_000000\.png: path too long$" \
  "$groundc" synth --out "$(long_path 4075)" --images 1 --videos 0 --audios 0


# --- stage configs, read and checked with --config-only (a dry run that needs no data)
mkdir -p "$tmp/st/sub/ev" "$tmp/st/cfg" "$tmp/st/dir.yaml" && cd "$tmp/st" || exit 1
cp "$src/configs/model/tiny.yaml" sub/tiny.yaml
cat >stage.yaml <<YAML
model: sub/tiny.yaml
stage: 3
data:
  datasets: [train]
  micro_batch: 2
train:
  steps: 2
checkpoint:
  out: $tmp/st/out
YAML
sed 's#sub/tiny.yaml#../sub/tiny.yaml#' stage.yaml >cfg/stage.yaml
dry() { "$groundc" train "$@" --config-only >"$tmp/out" 2>"$tmp/err"; }
valid() { grep -q "config valid" "$tmp/out"; }
# a relative path given with --set is relative to the working directory, not to the text of
# the argument (it once became "--set model=sub/sub/tiny.yaml")
dry cfg/stage.yaml --set model=sub/tiny.yaml && valid && ok || bad "--set model=sub/tiny.yaml: $(cat "$tmp/err")"
dry cfg/stage.yaml --set eval.data=sub/ev --set eval.tokenizer=sub/tok.model &&
  grep -q "^    data: $(cd sub/ev && pwd -P)$" "$tmp/out" && ok || bad "--set eval.data=sub/ev: $(grep 'data:' "$tmp/out") $(cat "$tmp/err")"
# --set errors name the argument, not the config file
expect_error "--set unknown key" "^groundc: error: --set train.nope=1:1:7: unknown key 'nope' in train$" \
  "$groundc" train stage.yaml --dry-run --set train.nope=1
expect_error "--set unknown section" "^groundc: error: --set nope.deep.key=1:1:1: unknown key 'nope'$" \
  "$groundc" train stage.yaml --dry-run --set nope.deep.key=1
# an alias bomb (10^6 nodes from a few hundred bytes) is refused at the alias past the limit
{ echo "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"
  for i in 1 2 3 4 5 6; do
    printf 'a%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d]\n' $i $i \
      $((i - 1)) $((i - 1)) $((i - 1)) $((i - 1)) $((i - 1)) $((i - 1)) $((i - 1)) $((i - 1)) $((i - 1)) $((i - 1))
  done; } >bomb.yaml
expect_error "alias bomb" "bomb.yaml:5:[0-9]+: alias \*a3 takes the document past 100000 nodes" \
  "$groundc" train bomb.yaml
# nesting: 64 levels below the root read, 65 do not, and 99,000 are refused at once (libyaml
# takes a minute to load them)
for depth in 64 65 99000; do
  "$py" -c "import sys; d = int(sys.argv[1]); print('model: ' + '[' * d + ']' * d)" $depth >deep$depth.yaml
done
expect_error "64 levels" "deep64.yaml:1:8: model: expected a model file or a mapping" "$groundc" train deep64.yaml --config-only
expect_error "65 levels" "deep65.yaml:1:72: nesting too deep" "$groundc" train deep65.yaml --config-only
start=$SECONDS
expect_error "99,000 levels" "deep99000.yaml:1:72: nesting too deep" "$groundc" train deep99000.yaml --config-only
[ $((SECONDS - start)) -le 5 ] && ok || bad "99,000 levels took $((SECONDS - start)) s"
printf 'model: &m [1, *m]\n' >cycle.yaml
expect_error "alias cycle" "cycle.yaml:1:15: alias \*m is inside the node it names" "$groundc" train cycle.yaml
# a second document would be dropped without a word; so would an empty part of a --set path
{ cat stage.yaml; printf -- '---\nstage: 2\n'; } >twodocs.yaml
expect_error "two documents" "twodocs.yaml:11:1: a second YAML document" "$groundc" train twodocs.yaml --config-only
expect_error "--set empty key" "^groundc: error: --set train..steps=3:1:7: empty key in the key path$" \
  "$groundc" train stage.yaml --config-only --set train..steps=3
# booleans in YAML 1.2's and 1.1's spellings; anything else is an error
for b in True TRUE on Off no; do
  dry stage.yaml --set train.overlap_allreduce=$b && valid && ok || bad "boolean $b: $(cat "$tmp/err")"
done
expect_error "boolean y" "train.overlap_allreduce: expected true or false, got 'y'" \
  "$groundc" train stage.yaml --config-only --set train.overlap_allreduce=y
# a folder given as a config or as the model file
expect_error "folder as config" "^groundc: error: dir.yaml: is a directory" "$groundc" train dir.yaml
expect_error "folder as model" "^groundc: error: --set model=sub:1:7: model: sub: is a folder, not a model config" "$groundc" train stage.yaml --dry-run --set model=sub
# a missing model file: where the config names it, and the path as resolved from the config
mkdir -p nested && printf 'model: model/tiny.yaml\nstage: 3\ndata:\n  datasets: [train]\n' >nested/s.yaml
expect_error "missing model file" "^groundc: error: nested/s.yaml:1:8: model: nested/model/tiny.yaml: No such file or directory" "$groundc" train nested/s.yaml --dry-run
# a curriculum hands each stage the previous one's checkpoint as YAML text: ": ", " #" and a
# quote in the folder name must stay part of the path
mkdir -p "q: a's #b"
sed "s|^  out: .*|  out: \"q: a's #b/one\"|" stage.yaml >q1.yaml
sed "s|^  out: .*|  out: \"q: a's #b/two\"|" stage.yaml >q2.yaml
printf 'stages: [q1.yaml, q2.yaml]\n' >q.yaml
dry q.yaml && grep -qxF "    checkpoint: 'q: a''s #b/one/latest'" "$tmp/out" && ok ||
  bad "curriculum init.checkpoint quoting: $(grep 'checkpoint:' "$tmp/out") $(cat "$tmp/err")"
# a checkpoint.out too long for its checkpoints' paths (out/latest)
expect_error "long checkpoint.out" "^groundc: error: \.\.\.[de/]+/latest: path too long$" \
  "$groundc" train stage.yaml --config-only --set checkpoint.out="$(long_path 4090)"
# global_batch that does not divide: named where it was set
expect_error "global batch from --set" "--set data.global_batch=5:1:19: data.global_batch: 5 is not a multiple of micro_batch 2 x 1 ranks" \
  "$groundc" train stage.yaml --dry-run --set data.global_batch=5
sed 's/micro_batch: 2/micro_batch: 2\n  global_batch: 5/' stage.yaml >gb.yaml
expect_error "global batch from the file" "gb.yaml:6:17: data.global_batch: 5 is not a multiple" "$groundc" train gb.yaml --dry-run
# train.steps > 0, and steps or epochs, not both (a --set of one replaces the file's other)
expect_error "steps 0" "--set train.steps=0:1:13: train.steps: 0 is outside" "$groundc" train stage.yaml --dry-run --set train.steps=0
sed 's/steps: 2/steps: 2\n  epochs: 1/' stage.yaml >both.yaml
expect_error "steps and epochs" "both.yaml:8:11: train.epochs: give train.steps or train.epochs, not both \(train.steps is at both.yaml:7:10\)" \
  "$groundc" train both.yaml --dry-run
sed 's/steps: 2/epochs: 0/' stage.yaml >epochs0.yaml
expect_error "epochs 0" "epochs0.yaml:7:11: train.epochs: epochs must be > 0" "$groundc" train epochs0.yaml --dry-run
dry stage.yaml --set train.epochs=2 && valid && grep -q "^    epochs: 2$" "$tmp/out" && ! grep -q "^    steps:" "$tmp/out" &&
  ok || bad "--set train.epochs over the file's steps: $(grep -E 'steps|epochs' "$tmp/out") $(cat "$tmp/err")"
# the resolved config shows every value the run uses: the defaults of keys left out too (an
# absent train: or checkpoint: section included), at the values train_config.c gives them
dry stage.yaml && grep -qx "    beta2: 0.999" "$tmp/out" && grep -qx "    keep: 3" "$tmp/out" &&
  grep -qx "    micro_batch: 2" "$tmp/out" && grep -qx "  device: auto" "$tmp/out" &&
  grep -qx "      rope_theta: 10000" "$tmp/out" && ! grep -q "epochs" "$tmp/out" && ok ||
  bad "defaults in the resolved config: $(cat "$tmp/out" "$tmp/err")"
grep -v '^checkpoint:\|^  out:\|^train:\|^  steps:' stage.yaml >nosections.yaml
dry nosections.yaml && grep -qx "    epochs: 1" "$tmp/out" && grep -qx "    out: checkpoints/run" "$tmp/out" &&
  grep -qx "    lr: 2e-05" "$tmp/out" && ok || bad "absent sections' defaults: $(cat "$tmp/out" "$tmp/err")"
# YAML merge keys: <<: *base takes the anchor's keys, the mapping's own keys win
cat >merge.yaml <<YAML
model: sub/tiny.yaml
stage: 3
base: &base {lr: 0.5, warmup_ratio: 0.25}
data:
  datasets: [train]
train:
  <<: *base
  lr: 0.125
YAML
expect_error "merge key: its anchor's mapping is checked too" "merge.yaml:3:1: unknown key 'base'" "$groundc" train merge.yaml --config-only
sed -i '/^base:/d; s/  <<: \*base/  <<: [{lr: 0.5, warmup_ratio: 0.25}, {seed: 7, warmup_ratio: 0.5}]/' merge.yaml
dry merge.yaml && grep -qx "    lr: 0.125" "$tmp/out" && grep -qx "    warmup_ratio: 0.25" "$tmp/out" &&
  grep -qx "    seed: 7" "$tmp/out" && ok || bad "merge keys: $(cat "$tmp/out" "$tmp/err")"
printf 'model: sub/tiny.yaml\nstage: 3\ndata:\n  datasets:\n    - &d {path: train, weight: 2}\n    - {<<: *d, weight: 3}\n' >merge_alias.yaml
dry merge_alias.yaml && grep -q "2 datasets" "$tmp/out" &&
  grep -A1 -- '- weight: 3$' "$tmp/out" | grep -q 'path: .*train$' && ok ||
  bad "merge key from an alias: $(cat "$tmp/out" "$tmp/err")"
printf 'model: sub/tiny.yaml\nstage: 3\ndata:\n  datasets: [train]\ntrain:\n  <<: 3\n' >merge_bad.yaml
expect_error "merge of a scalar" "merge_bad.yaml:6:7: train: '<<' merges a mapping" "$groundc" train merge_bad.yaml --config-only
# a --set value is YAML: a flow list gives data.datasets
dry stage.yaml --set 'data.datasets=[train, {path: other, weight: 2}]' && grep -q "2 datasets" "$tmp/out" &&
  ok || bad "--set data.datasets=[...]: $(cat "$tmp/err")"
expect_error "--set list hint" "--set data.datasets=train:1:15: data.datasets: expected a non-empty list .*--set 'data.datasets=\[DIR, DIR2\]'" \
  "$groundc" train stage.yaml --dry-run --set data.datasets=train
expect_error "--set YAML syntax" "--set train.lr=\[1:[0-9]+:[0-9]+: YAML syntax" "$groundc" train stage.yaml --dry-run --set 'train.lr=[1'
# an unknown key inside a list item is an error too (a misspelt weight silently became 1)
cat >items.yaml <<YAML
model: sub/tiny.yaml
stage: 3
data:
  datasets: [{path: train, wieght: 4}, {path: train, weight: 1, extra: 3}]
YAML
expect_error "unknown key in a list item" "^groundc: error: items.yaml:4:28: unknown key 'wieght' in data.datasets\[0\]$" \
  "$groundc" train items.yaml --config-only
expect_error "unknown key in a --set list item" "^groundc: error: --set data.datasets=\[\{path: train, weigth: 2\}\]:1:30: unknown key 'weigth' in data.datasets\[0\]$" \
  "$groundc" train stage.yaml --config-only --set 'data.datasets=[{path: train, weigth: 2}]'
sed -i 's/wieght: 4/weight: 4/' items.yaml
expect_error "unknown key in the second list item" "items.yaml:4:65: unknown key 'extra' in data.datasets\[1\]" \
  "$groundc" train items.yaml --config-only
# a section whose every key has a default may be left out: no train: is train: {}
sed -i 's/, extra: 3//' items.yaml
dry items.yaml && valid && ok || bad "stage config without train: $(cat "$tmp/err")"
printf 'task:\n  payload: 3\n' >lm_min.yaml
"$groundc" train lm_min.yaml --dry-run >"$tmp/out" 2>"$tmp/err" && valid && [ ! -e checkpoints ] && ok ||
  bad "copy-task config without model: and train: (dry run): $(cat "$tmp/err")"
# a trainable / frozen pattern that matches no parameter: named where it was written, by
# --config-only too (only the model file is needed)
printf 'trainable:\n  - model.mm_vision_projector.*\n  - model.vison_tower.*\n' >>items.yaml
expect_error "pattern matching nothing" "^groundc: error: items.yaml:7:5: trainable: pattern 'model.vison_tower.\*' matches no parameter" \
  "$groundc" train items.yaml --config-only

# --- whole-number options: past long long is an error, never a clamped value; --help per command
expect_error "synth seed overflow" "--seed: expected a whole number in \[0, 9223372036854775807\], got '99999999999999999999'" "$groundc" synth --out "$tmp/s" --seed 99999999999999999999
[ ! -e "$tmp/s" ] && ok || bad "synth wrote output after a bad --seed"
expect_error "generate seed overflow" "generate: --seed: expected a whole number" "$groundc" generate "$tmp" --prompt hi --seed 1e5
for c in synth inspect; do
  "$groundc" $c --help >"$tmp/out" 2>&1 && grep -q "groundc $c" "$tmp/out" && ok || bad "$c --help: $(head -2 "$tmp/out")"
done

# --help / -h: every command prints its own usage to stdout and exits 0
for c in synth pack train eval generate export inspect; do
  for h in --help -h; do
    "$groundc" $c $h >"$tmp/out" 2>"$tmp/err" && [ ! -s "$tmp/err" ] && grep -q "^usage: groundc $c" "$tmp/out" &&
      ok || bad "$c $h: $(head -2 "$tmp/out") $(cat "$tmp/err")"
  done
done
"$groundc" --help | grep -q "\-\-tokenizer FILE --force" && ok || bad "global usage lacks export's --tokenizer / --force"

# --dry-run checks what the run would open, with the run's own errors
cd "$tmp/st" || exit 1
expect_error "dry run: missing dataset" "^groundc: error: stage.yaml:4:14: data.datasets: train: No such file or directory$" "$groundc" train stage.yaml --dry-run
expect_error "dry run: missing init.checkpoint" "^groundc: error: .*nockpt: cannot open" \
  "$groundc" train stage.yaml --dry-run --set init.checkpoint=nockpt
expect_error "dry run: missing eval data" "nothere_eval" "$groundc" train stage.yaml --dry-run \
  --set eval.data=nothere_eval --set eval.tokenizer="$src/tests/fixtures/tokenizer/test_bpe.model"
expect_error "dry run: --resume DIR" "^groundc: error: $tmp/st/sub: not a checkpoint \(no state.json\)" \
  "$groundc" train stage.yaml --dry-run --resume "$tmp/st/sub"
expect_error "dry run: --resume DIR not there" "^groundc: error: $tmp/st/nockpt: does not exist" \
  "$groundc" train stage.yaml --dry-run --resume "$tmp/st/nockpt"
# train --help lists every flag the README shows, and says how --dry-run and --config-only go
"$groundc" train --help >"$tmp/out"
for f in --resume --set --dry-run --config-only --help; do
  grep -q -e "$f" "$tmp/out" && ok || bad "train --help lacks $f"
done
grep -q "given with --dry-run, --config-only wins" "$tmp/out" && ok || bad "train --help: --dry-run with --config-only"

# eval --report into a folder that is not there: refused before anything is loaded
expect_error "eval report folder" "^groundc: error: eval: --report /nonexistent/r.json: " \
  "$groundc" eval "$tmp/nockpt" --data "$tmp/nodata" --report /nonexistent/r.json

# export: an unknown last flag, a missing --format / --out, the dtype list
expect_error "export unknown flag" "^groundc: error: export: unknown option '--bogus'$" "$groundc" export CK --format hf --out D --bogus
expect_error "export no --format" "^groundc: error: export: missing --format" "$groundc" export CK --out D
expect_error "export no --out" "^groundc: error: export: missing --out" "$groundc" export CK --format hf
expect_error "export dtype list" "expected f32, f16, bf16 or q8_0\)?$" "$groundc" export "$tmp/nockpt" --format gguf --out "$tmp/exq" --dtype f8

# generate: a media option twice, no --prompt
touch "$tmp/a.png"
expect_error "generate --image twice" "^groundc: error: generate: option --image given twice$" \
  "$groundc" generate CK --image "$tmp/a.png" --image "$tmp/a.png" --prompt hi
expect_error "generate no prompt" "^groundc: error: generate: missing --prompt" "$groundc" generate CK

summary
