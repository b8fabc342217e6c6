#!/usr/bin/env bash
# test_export_hf.sh GROUNDC BUILD_DIR: `groundc export --format hf` on a checkpoint made here
# (the tiny model, 2 training steps on synthetic shards):
#   * f32, f16 and bf16 exports hold exactly the tensors transformers' LlavaForConditionalGeneration
#     has (plus the video and audio branch files), with the checkpoint's values (tables
#     concatenated, patch weights permuted, rounding to nearest even), and configs and tokenizer
#     files that agree with the checkpoint (tests/export_hf_check.py, numpy only);
#   * past the shard size (made small here), model.safetensors becomes shards + index;
#   * rounding edge cases (ties, f16 subnormals, the f16 maximum) round as numpy does; a bf16
#     model's checkpoint exports widened to f32 exactly and narrowed to f16;
#   * when `groundc generate --raw --logits-out` exists: the numpy LLaVA forward of the export
#     (tests/export_hf_forward.py) gives groundc's logits for a text prompt;
#   * tokenizer.json, loaded by HF's tokenizers.js (tests/hf_tokenizer, installed once into
#     BUILD_DIR/hf-tokenizer-npm from the npm registry; skipped without network), encodes and
#     decodes as python3-sentencepiece does (tests/tokenizer_json_check.py);
#   * refusals, each one line, non-zero, with neither OUT nor OUT.tmp-* left: unknown format,
#     existing OUT without --force, a truncated model.safetensors, a config that does not fit
#     the weights, a value f16 cannot hold, a folder that is no checkpoint, an OUT that cannot
#     be made; --force replaces an existing OUT;
#   * a run folder exports its latest checkpoint (one stderr line says which).
set -u
. "$(dirname "$0")/lib.sh" "$@"
need_python numpy
tokenizer=$here/fixtures/tokenizer/test_bpe.model
cd "$tmp" || exit 1

# nothing_left OUT: neither OUT nor a temporary folder beside it
nothing_left() { [ ! -e "$1" ] && [ -z "$(ls -d "$1".tmp-* 2>/dev/null)" ]; }

expect_error() { # DESCRIPTION PATTERN OUT COMMAND...: one error line, non-zero, OUT untouched
  local what=$1 pattern=$2 out=$3; shift 3
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  if [ $rc -ne 0 ] && grep -qE -e "$pattern" "$tmp/err" && [ "$(wc -l <"$tmp/err")" = 1 ] &&
     nothing_left "$out"; then ok
  else bad "$what: rc=$rc, stderr: $(head -40 "$tmp/err"), left: $(ls -d "$out"* 2>/dev/null)"; fi
}

# --- a checkpoint: 2 steps of the tiny model
"$groundc" synth --out raw --images 6 --videos 2 --audios 2 >/dev/null || bad synth
"$groundc" pack --json raw/train.json --media-root raw --out train --tokenizer "$tokenizer" \
  "${tiny_pack[@]}" --threads 1 >pack.log 2>&1 || bad "pack: $(tail -2 pack.log)"
cp "$here/../configs/model/tiny.yaml" tiny.yaml
cat >stage.yaml <<YAML
model: tiny.yaml
stage: 2
data:
  datasets:
    - {path: train, weight: 1}
  micro_batch: 4
  seed: 1
train:
  steps: 2
  lr: 1.0e-3
  log_every: 1
checkpoint:
  out: $tmp/ck
  every: 2
  keep: 1
YAML
"$groundc" train stage.yaml >train.log 2>&1 || { bad "train: $(tail -3 train.log)"; exit 1; }
ck=$tmp/ck/step_00000002

# export_checked WHAT CKPT OUT DTYPE: CKPT exported as DTYPE into OUT agrees with CKPT
export_checked() {
  "$groundc" export "$2" --format hf --out "$3" --dtype "$4" --tokenizer "$tokenizer" >log 2>&1 &&
    "$py" "$here/export_hf_check.py" "$2" "$3" --dtype "$4" --tokenizer "$tokenizer" >check.log 2>&1 &&
    ok || bad "$1: $(cat log; grep -m5 FAIL check.log)"
}

# --- exports in every dtype, checked against the checkpoint
for dt in f32 f16 bf16; do export_checked "export --dtype $dt" "$ck" "hf_$dt" "$dt"; done
[ -z "$(ls -d hf_*.tmp-* 2>/dev/null)" ] && ok || bad "temporary folders left"

# --- a run folder (checkpoint.out) exports its latest checkpoint, saying which on stderr
"$groundc" export "$tmp/ck" --format hf --out hf_run --tokenizer "$tokenizer" >run.out 2>run.err &&
  [ "$(cat run.err)" = "export: $tmp/ck is a run folder; using its latest checkpoint $ck" ] &&
  cmp -s hf_run/model.safetensors hf_f32/model.safetensors && grep -q " -> hf_run (hf, f32)" run.out &&
  ok || bad "export of a run folder: $(cat run.err run.out)"

# --- model.safetensors in shards (the 5 GB default made small)
GROUNDC_EXPORT_HF_SHARD_BYTES=40000 "$groundc" export "$ck" --format hf --out hf_shards --dtype f16 \
  --tokenizer "$tokenizer" >log 2>&1 &&
  [ "$(ls hf_shards/model-*-of-*.safetensors | wc -l)" -gt 2 ] &&
  "$py" "$here/export_hf_check.py" "$ck" hf_shards --dtype f16 --tokenizer "$tokenizer" >check.log 2>&1 &&
  ok || bad "sharded export: $(cat log; grep -m5 FAIL check.log)"

# --- rounding edge cases in f16 and bf16
"$py" "$here/export_hf_poke.py" "$ck" edge edge || bad "poke edge values"
for dt in f16 bf16; do export_checked "edge values as $dt" edge "edge_$dt" "$dt"; done

# --- a bf16 model's checkpoint (the same weights rounded), exported widened and narrowed
"$py" "$here/export_hf_poke.py" "$ck" ck_bf16 bf16 || bad "make a bf16 checkpoint"
for dt in f32 f16; do export_checked "bf16 checkpoint as $dt" ck_bf16 "bf16_$dt" "$dt"; done

# --- groundc's own logits against the numpy LLaVA forward of the export: a text prompt, and
# one with an image (a 32 x 32 PNG: already square and of the model's size, so the pixels the
# model sees are the file's). Needs `groundc generate --raw --logits-out` and, to tokenize the
# prompt independently, python3-sentencepiece.
"$py" - <<'PY' || bad "test image"
import struct, zlib
import numpy as np
img = np.random.default_rng(4).integers(0, 256, (32, 32, 3), dtype=np.uint8)
np.save("img.npy", img)
raw = b"".join(b"\0" + img[r].tobytes() for r in range(32))
chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
open("img.png", "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 32, 32, 8, 2, 0, 0, 0))
                            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
PY
# ids PROMPT: BOS, then each stretch between <image> placeholders encoded on its own (its own
# dummy prefix), <image> as <im_start> <im_patch> x 16 <im_end> (the tiny model's ids).
ids() { "$py" -c '
import sys, sentencepiece as s
sp = s.SentencePieceProcessor(model_file=sys.argv[1])
out = [1]
for i, part in enumerate(sys.argv[2].split("<image>")):
    if i: out += [2001] + [2000] * 16 + [2002]
    out += sp.encode(part) if part else []
print(",".join(map(str, out)))' "$tokenizer" "$1" 2>/dev/null; }
gen_check() { # WHAT PROMPT [--image F]
  local what=$1 prompt=$2; shift 2
  if ! "$groundc" generate "$ck" --raw --prompt "$prompt" "$@" --logits-out logits.npy \
       --max-new-tokens 0 --tokenizer "$tokenizer" >gen.log 2>&1 || [ ! -s logits.npy ]; then
    echo "skip: $what (groundc generate --raw --logits-out: $(head -1 gen.log))"; return
  fi
  local t; if ! t=$(ids "$prompt"); then echo "skip: $what (no python3-sentencepiece)"; return; fi
  local img=(); [ $# -gt 0 ] && img=(--image img.npy)
  if "$py" "$here/export_hf_forward.py" hf_f32 --ids "$t" --logits logits.npy "${img[@]}" --tol 1e-3 >fwd.log 2>&1; then
    ok; cat fwd.log
  else bad "$what: numpy forward of the export vs groundc generate: $(cat fwd.log)"; fi
  rm -f logits.npy
}
gen_check "text prompt" "A chat between a curious human and an artificial intelligence assistant. ### Human: Where is the cat? ### Assistant:"
gen_check "image prompt" "Where is the red square? <image> Answer: [0.25," --image img.png

# --- refusals
expect_error "unknown format" "unknown format 'onnx'" x1 "$groundc" export "$ck" --format onnx --out x1
cp -r hf_run x2 && touch x2/keep  # an earlier export, and a file of the user's in it
# --- tokenizer.json through HF's tokenizers (tokenizers.js) against sentencepiece
npm_dir=$build/hf-tokenizer-npm skipped=
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  skipped="node or npm missing"
elif ! cmp -s "$here/hf_tokenizer/package.json" "$npm_dir/package.json" ||
     [ ! -d "$npm_dir/node_modules/@huggingface/tokenizers" ]; then
  rm -rf "$npm_dir" && mkdir -p "$npm_dir" && cp "$here/hf_tokenizer/package.json" "$npm_dir/" &&
    (cd "$npm_dir" && timeout 300 npm install --no-save --no-package-lock --ignore-scripts \
      --no-audit --no-fund --loglevel=error >install.log 2>&1) ||
    { skipped="npm install failed (no network?): $(tail -2 "$npm_dir/install.log" 2>/dev/null)"
      rm -f "$npm_dir/package.json"; }
fi
if [ -z "$skipped" ]; then
  cp "$here/hf_tokenizer/run.mjs" "$npm_dir/run.mjs"
  /usr/bin/python3 "$here/tokenizer_json_check.py" --groundc "$groundc" --ckpt "$ck" \
    --model "$tokenizer" --node "$npm_dir" --work tokjson >tokjson.log 2>&1 &&
    ok || bad "tokenizer.json vs sentencepiece: $(head -20 tokjson.log)"
  cat tokjson.log
else
  echo "test_export_hf: tokenizer.json part skipped: $skipped"
fi

"$groundc" export "$ck" --format hf --out x2 --tokenizer "$tokenizer" >out 2>err
[ $? -ne 0 ] && grep -q "x2 already exists" err && [ "$(wc -l <err)" = 1 ] && [ -e x2/keep ] &&
  [ -z "$(ls -d x2.tmp-* 2>/dev/null)" ] && ok || bad "existing OUT without --force: $(cat err)"
# --force replaces an earlier export, but not the user's file in it (tests/test_export_gguf.sh
# has the other cases)
expect_error "--force over a file of the user's" "x2: holds x2/keep, which no export writes" x2f \
  "$groundc" export "$ck" --format hf --out x2 --tokenizer "$tokenizer" --force
rm x2/keep
"$groundc" export "$ck" --format hf --out x2 --tokenizer "$tokenizer" --force >out 2>err &&
  [ -s x2/model.safetensors ] && [ -z "$(ls -d x2.*-* 2>/dev/null)" ] &&
  ok || bad "--force replaces OUT: $(cat err)"
cp -r "$ck" trunc && head -c 20000 "$ck/model.safetensors" >trunc/model.safetensors
expect_error "truncated model.safetensors" "trunc/model.safetensors" x3 "$groundc" export trunc --format hf --out x3 --tokenizer "$tokenizer"
cp -r "$ck" other && sed -i 's/^    dim: 64$/    dim: 32/' other/config.yaml
expect_error "config of another model" "other/model.safetensors" x4 "$groundc" export other --format hf --out x4 --tokenizer "$tokenizer"
"$py" "$here/export_hf_poke.py" "$ck" huge huge || bad "poke a huge value"
expect_error "value beyond f16" "linear_1.bias.*does not fit F16" x5 "$groundc" export huge --format hf --out x5 --dtype f16 --tokenizer "$tokenizer"
mkdir notackpt
expect_error "a folder that is no checkpoint" "export: notackpt: neither a checkpoint \(no config.yaml\) nor a run folder" x7 \
  "$groundc" export notackpt --format hf --out x7 --tokenizer "$tokenizer"
expect_error "OUT that cannot be made" "--out /proc/x8: cannot make a folder in /proc" /proc/x8 \
  "$groundc" export "$ck" --format hf --out /proc/x8 --tokenizer "$tokenizer"
"$groundc" export huge --format hf --out x6 --dtype bf16 --tokenizer "$tokenizer" >/dev/null 2>&1 && ok || bad "bf16 holds 1e6"

# Ctrl-C / SIGTERM while the files are written (the test hook sends it once they are all
# there): exit 128 + the signal, one line, neither OUT nor a temporary folder left
for sig in INT TERM; do
  GROUNDC_TEST_EXPORT_SIGNAL=$sig "$groundc" export "$ck" --format hf --out x9 --tokenizer "$tokenizer" >out 2>err
  rc=$?; want=$([ $sig = INT ] && echo 130 || echo 143)
  [ $rc = "$want" ] && [ "$(cat err)" = "export: stopped by SIG$sig$([ $sig = INT ] && echo ' (Ctrl-C)'); nothing written to x9" ] &&
    [ -z "$(ls -d x9* 2>/dev/null)" ] && ok || bad "SIG$sig during export: rc=$rc, $(cat err), $(ls -d x9* 2>/dev/null)"
done
# --out in folders that do not exist yet: made
"$groundc" export "$ck" --format hf --out new1/new2/x11 --tokenizer "$tokenizer" >out 2>err &&
  [ -s new1/new2/x11/model.safetensors ] && ok || bad "--out under new folders: $(cat err)"
# what an export killed outright (SIGKILL, power loss) left beside OUT is cleaned up by the
# next one: its temporary folder goes; an old export it had moved aside goes back into place
# when OUT is missing (killed between its two renames)
dead=$(sh -c 'echo $$'); while kill -0 "$dead" 2>/dev/null; do dead=$((dead + 1)); done
mkdir x10.tmp-$dead && echo partial >x10.tmp-$dead/model.safetensors
"$groundc" export "$ck" --format hf --out x10 --tokenizer "$tokenizer" >out 2>err &&
  [ -s x10/model.safetensors ] && [ ! -e x10.tmp-$dead ] &&
  grep -qx "export: removed ./x10.tmp-$dead (left by an export that was killed)" err &&
  ok || bad "stale temporary folder: $(cat err); $(ls -d x10*)"
mv x10 x10.old-$dead
"$groundc" export "$ck" --format hf --out x10 --tokenizer "$tokenizer" >out 2>err
[ $? -ne 0 ] && grep -q "export: ./x10.old-$dead: put back to x10" err && grep -q "x10 already exists" err &&
  [ -s x10/model.safetensors ] && [ ! -e x10.old-$dead ] &&
  ok || bad "an old export moved aside goes back: $(cat err); $(ls -d x10*)"

summary
