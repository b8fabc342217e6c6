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

summary
