#!/usr/bin/env bash
# test_export_gguf.sh GROUNDC BUILD_DIR: `groundc export --format gguf` end to end.
#   * a tiny checkpoint (the demo model: 64-pixel images, 64 image tokens; random weights of
#     std 0.2, so that attention is sharp and a wrong layout shows; one step at learning rate
#     0, so every build makes the same weights) exported in f32, f16, bf16
#     and q8_0; tests/gguf_read.py parses each file independently and checks metadata, tensor
#     names, shapes, types and every value against the checkpoint;
#   * llama.cpp through its npm packages (tests/llamacpp/, installed once into
#     BUILD_DIR/llamacpp-npm from the npm registry): tests/gguf_llamacpp.py compares its logits
#     and next-token probabilities, for a prompt without and with a 64x64 image, with groundc's
#     (`groundc generate --raw --logits-out`), tolerances per dtype stated there;
#   * bad input is refused with one line and leaves nothing behind: q8_0 for --format hf, an
#     unknown format, a checkpoint whose weights do not fit its config, a truncated
#     model.safetensors, a tokenizer groundc cannot use, an existing OUT, an OUT that cannot
#     be made (refused before the checkpoint is read), a folder that is no checkpoint;
#   * a run folder exports its latest checkpoint (one stderr line says which); --help lists
#     every option with its default.
# Without network (the npm install fails) the llama.cpp part is skipped: exit 77 when all else
# passed.
set -u
. "$(dirname "$0")/lib.sh" "$@"
tok=$here/fixtures/tokenizer/test_bpe.model
skipped=""
need_python numpy yaml sentencepiece PIL

expect_error() { # DESCRIPTION PATTERN COMMAND...: non-zero exit, one error line matching
  local what=$1 pattern=$2; shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  if [ $rc -ne 0 ] && [ "$(grep -c 'groundc: error' "$tmp/err")" = 1 ] &&
     grep -qE -e "$pattern" "$tmp/err"; then ok
  else bad "$what: rc=$rc, stderr: $(head -3 "$tmp/err")"; fi
}
nothing_left() { # DESCRIPTION OUT: neither OUT nor a temporary folder beside it
  if [ ! -e "$2" ] && ! compgen -G "$2.tmp-*" >/dev/null; then ok
  else bad "$1: $2 or its temporary folder left behind"; fi
}

# --- a tiny checkpoint
cd "$tmp" || exit 1
"$groundc" synth --out raw --images 4 --videos 2 --audios 2 >/dev/null || bad synth
"$groundc" pack --json raw/train.json --media-root raw --out train --tokenizer "$tok" \
  --image-size 64 --image-tokens 64 --video-frames 8 --video-size 16 --video-tokens 8 \
  --audio-tokens 4 --threads 1 >/dev/null || bad pack
cat >stage.yaml <<YAML
model: $here/../configs/demo/model.yaml
stage: 2
data:
  datasets:
    - {path: train, weight: 1}
  micro_batch: 2
train:
  steps: 1
  lr: 0           # the initial weights, the same in every build
  init_std: 0.2
checkpoint:
  out: ck
  every: 1
YAML
"$groundc" train stage.yaml >train.log 2>&1 || bad "train: $(tail -2 train.log)"
ck=$tmp/ck/step_00000001

# --- the export in every dtype, read back independently
for d in f32 f16 bf16 q8_0; do
  if "$groundc" export "$ck" --format gguf --dtype $d --tokenizer "$tok" --out "ex-$d" >"log-$d" 2>&1 &&
     [ -f "ex-$d/model.gguf" ] && [ -f "ex-$d/mmproj.gguf" ] && [ -f "ex-$d/README.md" ]; then ok
  else bad "export $d: $(tail -2 "log-$d")"; fi
  grep -q "video and audio branches are not exported" "log-$d" && ok || bad "export $d: no note on video/audio"
  $py "$here/gguf_read.py" "$ck" "ex-$d" $d "$tok" && ok || bad "gguf_read $d"
done
grep -q "features of block 1 of 2" log-f32 && ok || bad "export log names the feature layer"
grep -q "^export: note: llama.cpp builds since its mtmd refactor put CLIP's CLS token after the patches" log-f32 &&
  ok || bad "export log warns of llama.cpp's CLS placement"

# --- bad input: one line, nothing written
expect_error "q8_0 for hf" "q8_0" "$groundc" export "$ck" --format hf --dtype q8_0 --tokenizer "$tok" --out x1
nothing_left "q8_0 for hf" x1
expect_error "unknown format" "unknown format 'onnx'" "$groundc" export "$ck" --format onnx --out x2
nothing_left "unknown format" x2
cp -r "$ck" other && sed -i 's/^    dim: 128$/    dim: 96/' other/config.yaml
expect_error "other model shape" "model.safetensors" "$groundc" export other --format gguf --tokenizer "$tok" --out x3
nothing_left "other model shape" x3
cp -r "$ck" cut && head -c 1000000 "$ck/model.safetensors" >cut/model.safetensors
expect_error "truncated checkpoint" "model.safetensors" "$groundc" export cut --format gguf --tokenizer "$tok" --out x4
nothing_left "truncated checkpoint" x4
expect_error "unusable tokenizer" "test_unigram.model" "$groundc" export "$ck" --format gguf \
  --tokenizer "$here/fixtures/tokenizer/test_unigram.model" --out x6
nothing_left "unusable tokenizer" x6
mkdir x5 && echo keep >x5/file
expect_error "existing OUT" "already exists" "$groundc" export "$ck" --format gguf --tokenizer "$tok" --out x5
[ "$(cat x5/file)" = keep ] && ok || bad "existing OUT damaged"

expect_error "OUT that cannot be made" "--out /proc/x7: cannot make a folder in /proc" \
  "$groundc" export "$ck" --format gguf --tokenizer "$tok" --out /proc/x7
expect_error "OUT under a file" "stage.yaml/x8: cannot stat: Not a directory" \
  "$groundc" export "$ck" --format gguf --tokenizer "$tok" --out stage.yaml/x8
expect_error "no checkpoint" "export: train: neither a checkpoint .* nor a run folder" \
  "$groundc" export train --format gguf --tokenizer "$tok" --out x9
nothing_left "no checkpoint" x9

# --- a run folder stands for its latest checkpoint
"$groundc" export ck --format gguf --tokenizer "$tok" --out ex-run >run.out 2>run.err &&
  grep -qx "export: ck is a run folder; using its latest checkpoint ck/step_00000001" run.err &&
  cmp -s ex-run/model.gguf ex-f16/model.gguf && ok || bad "export of a run folder: $(cat run.err)"
"$groundc" export --help >help.out 2>&1 && grep -q -- "--dtype D .*(default f32)" help.out &&
  grep -q "(default f16)" help.out && grep -q -- "--force" help.out && grep -q -- "--tokenizer" help.out &&
  ok || bad "export --help: $(cat help.out)"

# --- llama.cpp
$py - <<'PY' || bad "test image"
import numpy as np
from PIL import Image
rng = np.random.default_rng(3)
a = (rng.random((64, 64, 3)) * 255).astype("uint8")
a[10:30, 20:50] = [200, 30, 40]
Image.fromarray(a).save("image.png")
PY
npm_dir=$build/llamacpp-npm
if [ "$(uname -s)-$(uname -m)" != Linux-x86_64 ]; then
  skipped="the pinned prebuilt llama.cpp packages are for Linux x86_64"
elif ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  skipped="node or npm missing"
elif ! cmp -s "$here/llamacpp/package.json" "$npm_dir/package.json" ||
     [ ! -d "$npm_dir/node_modules/@fugood/node-llama-linux-x64" ] ||
     [ ! -d "$npm_dir/node_modules/@node-llama-cpp/linux-x64" ]; then
  # --omit=optional: the bindings list every platform's build (CUDA ones of some 100 MB);
  # package.json names the x64 CPU builds directly. --ignore-scripts: nothing to build.
  rm -rf "$npm_dir" && mkdir -p "$npm_dir" && cp "$here/llamacpp/package.json" "$npm_dir/" &&
    (cd "$npm_dir" && timeout 300 npm install --no-save --no-package-lock --omit=optional \
      --ignore-scripts --no-audit --no-fund --loglevel=error >install.log 2>&1) ||
    { skipped="npm install failed (no network?): $(tail -2 "$npm_dir/install.log" 2>/dev/null)"
      rm -f "$npm_dir/package.json"; }
fi
if [ -z "$skipped" ]; then
  cp "$here/llamacpp/run.mjs" "$npm_dir/run.mjs"
  for d in f32 f16 bf16 q8_0; do
    mkdir -p "w-$d"
    $py "$here/gguf_llamacpp.py" --groundc "$groundc" --ckpt "$ck" --export "ex-$d" --dtype $d \
      --node "$npm_dir" --tokenizer "$tok" --image image.png --work "w-$d" && ok || bad "llama.cpp $d"
  done
fi

# --- --force replaces only an earlier export: a link, a file, a folder with folders in it, the
# checkpoint itself, or a folder with files an export does not write or without an export's
# README is refused before anything is written, and left as it was
untouched() { # DESCRIPTION OUT: no temporary or set-aside copy of OUT beside it
  if ! compgen -G "${2%/}.tmp-*" >/dev/null && ! compgen -G "${2%/}.old-*" >/dev/null; then ok
  else bad "$1: ${2%/}.tmp-* or ${2%/}.old-* left behind"; fi
}
mkdir target && echo keep >target/file && ln -s target link
expect_error "--force on a link" "link: is a symbolic link" "$groundc" export "$ck" --format gguf \
  --tokenizer "$tok" --out link --force
expect_error "--force on link/" "link: is a symbolic link" "$groundc" export "$ck" --format gguf \
  --tokenizer "$tok" --out link/ --force
[ -L link ] && [ "$(ls target)" = file ] && [ "$(cat target/file)" = keep ] && ok ||
  bad "--force on a link: the link or its folder changed: $(ls -l link target)"
untouched "--force on a link" link
echo keep >victim.yaml
expect_error "--force on a file" "victim.yaml: is a file" "$groundc" export "$ck" --format gguf \
  --tokenizer "$tok" --out victim.yaml --force
[ -f victim.yaml ] && [ "$(cat victim.yaml)" = keep ] && ok || bad "--force on a file: file changed"
untouched "--force on a file" victim.yaml
mkdir -p home/docs && echo keep >home/docs/file && echo keep >home/notes
expect_error "--force on a folder with folders" "home: holds home/docs" "$groundc" export "$ck" \
  --format gguf --tokenizer "$tok" --out home --force
[ "$(cat home/docs/file home/notes)" = "keep
keep" ] && ok || bad "--force on a folder with folders: folder changed"
untouched "--force on a folder with folders" home
expect_error "--force on the checkpoint" "is the checkpoint exported" "$groundc" export "$ck" \
  --format gguf --tokenizer "$tok" --out "$ck" --force
[ -s "$ck/model.safetensors" ] && [ -s "$ck/config.yaml" ] && ok || bad "--force on the checkpoint: changed"
# flat folders that are not an earlier export: a packed dataset, an HF weights folder (files an
# export writes, but not its README), an export the user put a file of their own into
mkdir data && echo '{}' >data/manifest.json && echo x >data/shard_00000.h5
expect_error "--force on a dataset" "data: holds data/manifest.json, which no export writes" \
  "$groundc" export "$ck" --format gguf --tokenizer "$tok" --out data --force
[ "$(ls data | tr '\n' ' ')" = "manifest.json shard_00000.h5 " ] && ok || bad "--force on a dataset: changed"
mkdir weights && echo '{}' >weights/config.json && echo x >weights/model.safetensors &&
  echo "# my model" >weights/README.md
expect_error "--force on HF weights" "weights: is not an earlier export" "$groundc" export "$ck" \
  --format hf --tokenizer "$tok" --out weights --force
[ "$(cat weights/README.md)" = "# my model" ] && ok || bad "--force on HF weights: changed"
cp -r ex-f16 mine && echo keep >mine/notes.txt
expect_error "--force on an export with notes" "mine: holds mine/notes.txt, which no export writes" \
  "$groundc" export "$ck" --format gguf --tokenizer "$tok" --out mine --force
[ "$(cat mine/notes.txt)" = keep ] && ok || bad "--force on an export with notes: changed"
untouched "--force on an export with notes" mine
# an earlier export (GGUF or HF) is replaced, either by the other format
cp -r ex-f16 again
"$groundc" export "$ck" --format hf --tokenizer "$tok" --out again --force >again.log 2>&1 &&
  [ -s again/model.safetensors ] && [ ! -e again/model.gguf ] && ok || bad "--force over a GGUF export: $(tail -1 again.log)"
"$groundc" export "$ck" --format gguf --tokenizer "$tok" --out again --force >again.log 2>&1 &&
  [ -s again/model.gguf ] && [ ! -e again/model.safetensors ] && ok || bad "--force over an HF export: $(tail -1 again.log)"
untouched "--force over an export" again

summary || exit 1
if [ -n "$skipped" ]; then
  echo "test_export_gguf: llama.cpp part skipped: $skipped"
  exit 77
fi
exit 0
