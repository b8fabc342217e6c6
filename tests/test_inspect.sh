#!/usr/bin/env bash
# test_inspect.sh GROUNDC BUILD_DIR: `groundc inspect` on the model presets and on a training
# config. The LLM counts are recomputed here from the dims (the 7B one must be Vicuna-7B's
# 6,738,415,616 plus the 9 added rows of embed_tokens and lm_head); the encoders must have
# their known sizes; every module of the registry is listed; each stage's trainable count is
# the sum of its parts; a stage config's own selection (stage defaults, trainable/frozen
# patterns, LoRA adapters) is counted from the dims and equals what `groundc train` selects;
# strict YAML errors are one line with file:line:column.
set -u
. "$(dirname "$0")/lib.sh" "$@"

# The number in the parameters column of row NAME of a table in file F.
count() { awk -F'|' -v n="$1" '{gsub(/ /, "", $2)} $2 == n {gsub(/ /, "", $3); print $3; exit}' "$2"; }
# Column COL of the memory row of stage S (1: trainable, 2: weights, ...).
stage_col() { awk -F'|' -v s="$1" -v c="$2" '{gsub(/ /, "", $2)} $2 == s {gsub(/ /, "", $(c + 2)); print $(c + 2); exit}' "$3"; }

modules="model.embed_tokens model.layers model.norm lm_head model.vision_tower
model.mm_vision_projector model.visual_encoder model.ln_vision model.query_tokens model.Qformer
model.video_query_tokens model.video_frame_position_embedding model.llama_proj
model.video_Qformer model.audio_encoder model.audio_query_tokens model.audio_position_embedding
model.audio_llama_proj model.audio_Qformer"

# llm_count V C LAYERS HEADS KV_HEADS FFN: embeddings and lm_head with 9 added rows each,
# per layer two norms, q and o (C x C), k and v (Ckv x C), gate, up, down (F x C); final norm.
llm_count() {
  local V=$1 C=$2 L=$3 H=$4 KV=$5 F=$6
  local Ckv=$((KV * C / H))
  echo $((2 * (V + 9) * C + C + L * (2 * C + 2 * C * C + 2 * Ckv * C + 3 * F * C)))
}

# 7B ------------------------------------------------------------------------------------------
if "$groundc" inspect "$src/configs/model/groundinggpt-7b.yaml" >"$tmp/7b" 2>"$tmp/err"; then ok
else bad "inspect 7b: $(cat "$tmp/err")"; fi
cat "$tmp/7b"
vicuna=$((2 * 32000 * 4096 + 4096 + 32 * (2 * 4096 + 4 * 4096 * 4096 + 3 * 11008 * 4096)))
[ "$vicuna" -eq 6738415616 ] && ok || bad "the Vicuna-7B formula gives $vicuna"
want=$(llm_count 32000 4096 32 32 32 11008)
want7b=$want
[ "$want" -eq $((6738415616 + 9 * 4096 * 2)) ] && ok || bad "7B llm count formula: $want"
got=$(count llm "$tmp/7b")
[ "$got" = "$want" ] && ok || bad "7B llm: got '$got', want $want"
for m in $modules; do
  grep -q "^| $m " "$tmp/7b" && ok || bad "7B: module $m missing"
done
# Known sizes: CLIP ViT-L/14-336 without its last block 0.29 B, EVA ViT-g (39 blocks) 0.99 B,
# BLIP-2 Q-Former + queries + ln_vision 0.105 B, ImageBind audio 0.086 B.
in_range() { [ -n "$2" ] && [ "$2" -ge "$3" ] && [ "$2" -le "$4" ] && ok || bad "$1: $2 not in [$3, $4]"; }
in_range "7B image_encoder" "$(count image_encoder "$tmp/7b")" 280000000 310000000
in_range "7B video_encoder" "$(count video_encoder "$tmp/7b")" 950000000 1020000000
in_range "7B frame_qformer" "$(count frame_qformer "$tmp/7b")" 100000000 110000000
in_range "7B audio_encoder" "$(count audio_encoder "$tmp/7b")" 80000000 95000000
# Projector Linear(1024, 4096) GELU Linear(4096, 4096), exactly.
[ "$(count projector "$tmp/7b")" = $((4096 * 1024 + 4096 + 4096 * 4096 + 4096)) ] && ok || bad "7B projector"
# Stage 1 trains projector + adapters + the 2 x 9 added rows; stage 2 adds the LLM.
parts1=$(($(count projector "$tmp/7b") + $(count video_adapter "$tmp/7b") + $(count audio_adapter "$tmp/7b") + 2 * 9 * 4096))
[ "$(stage_col 1 1 "$tmp/7b")" = "$parts1" ] && ok || bad "7B stage 1 trainable: $(stage_col 1 1 "$tmp/7b") != $parts1"
[ "$(stage_col 2 1 "$tmp/7b")" = $((parts1 - 2 * 9 * 4096 + want)) ] && ok || bad "7B stage 2 trainable"
grep -q "memory per stage: micro-batch 1 x 2048 tokens" "$tmp/7b" && ok || bad "7B default batch and length"

# tiny ----------------------------------------------------------------------------------------
"$groundc" inspect "$src/configs/model/tiny.yaml" --batch 4 --seq 64 >"$tmp/tiny" 2>"$tmp/err" && ok || bad "inspect tiny: $(cat "$tmp/err")"
want=$(llm_count 2000 64 2 4 4 176)
[ "$(count llm "$tmp/tiny")" = "$want" ] && ok || bad "tiny llm: $(count llm "$tmp/tiny") != $want"
for m in $modules; do
  grep -q "^| $m " "$tmp/tiny" && ok || bad "tiny: module $m missing"
done
grep -q "micro-batch 4 x 64 tokens" "$tmp/tiny" && ok || bad "--batch / --seq"
# Image projector of the tiny model: Linear(32, 64) GELU Linear(64, 64).
[ "$(count projector "$tmp/tiny")" = $((64 * 32 + 64 + 64 * 64 + 64)) ] && ok || bad "tiny projector"

# A training config naming the model file and init sources ----------------------------------
mkdir -p "$tmp/cfg/model"
cp "$src/configs/model/tiny.yaml" "$tmp/cfg/model/tiny.yaml"
cat >"$tmp/cfg/stage1.yaml" <<YAML
model: model/tiny.yaml
init:
  llm: /weights/vicuna
  image_encoder: {path: clip, prefix: "vision_tower."}
train:
  whatever: 1
YAML
"$groundc" inspect "$tmp/cfg/stage1.yaml" >"$tmp/train" 2>"$tmp/err" && ok || bad "inspect training config: $(cat "$tmp/err")"
grep -q "model tiny" "$tmp/train" && grep -q "llm            /weights/vicuna" "$tmp/train" &&
  grep -q "image_encoder  $tmp/cfg/clip (prefix 'vision_tower.')" "$tmp/train" && ok ||
  bad "training config report: $(tail -4 "$tmp/train")"

# Stage configs: what `groundc train` would train ------------------------------------------
# Row NAME of the "this config trains" table (column 3: parameters, 4: trainable).
cfg_col() { sed -n '/^this config trains/,$p' "$3" | awk -F'|' -v n="$1" -v c="$2" '{gsub(/ /, "", $2)} $2 == n {gsub(/ /, "", $c); print $c; exit}'; }

# The 7B LoRA fine-tune: rank 16 on all seven linears of 32 layers (A r x in, B out x r), the
# base decoder frozen, the 2 x 9 added rows, projector and adapters trained (stage 3).
"$groundc" inspect "$src/configs/finetune_lora.yaml" >"$tmp/lora" 2>"$tmp/err" && ok || bad "inspect lora: $(cat "$tmp/err")"
lora=$((32 * 16 * (4 * (4096 + 4096) + 3 * (4096 + 11008))))
[ "$(cfg_col llm 3 "$tmp/lora")" = $((want7b + lora)) ] && ok || bad "7B LoRA llm parameters: $(cfg_col llm 3 "$tmp/lora")"
[ "$(cfg_col llm 4 "$tmp/lora")" = $((lora + 2 * 9 * 4096)) ] && ok || bad "7B LoRA llm trainable: $(cfg_col llm 4 "$tmp/lora")"
[ "$(cfg_col total 4 "$tmp/lora")" = $((parts1 + lora)) ] && ok || bad "7B LoRA trainable: $(cfg_col total 4 "$tmp/lora")"
grep -q "LoRA rank 16, alpha 32 on q_proj k_proj v_proj o_proj gate_proj up_proj down_proj" "$tmp/lora" && ok || bad "LoRA line"
# Sized for one 80 GB GPU, as the config says.
grep "^| this config " "$tmp/lora" | awk -F'|' '{gsub(/ GiB| /, "", $8); exit !($8 < 80)}' && ok || bad "7B LoRA does not fit 80 GB: $(grep '^| this config' "$tmp/lora")"

# Stage 2 plus a trainable encoder, minus a frozen layer, on the tiny model: the count equals
# the stage-2 default + the encoder - layer 0 from the module table, and what train selects.
mkdir -p "$tmp/sel" && cd "$tmp/sel" || exit 1
tiny_shards --images 8 --videos 2 --audios 2 --max-shapes 1
cat >sel.yaml <<YAML
model: tiny.yaml
stage: 2
trainable: ["model.vision_tower.*"]
frozen: ["model.layers.0.*"]
data:
  datasets: [train]
  micro_batch: 2
train:
  steps: 1
checkpoint:
  out: $tmp/sel/run
YAML
"$groundc" inspect sel.yaml >sel.txt 2>err && ok || bad "inspect sel: $(cat err)"
layer0=$((2 * 64 + 2 * 64 * 64 + 2 * 64 * 64 + 3 * 176 * 64))
tower=$(awk -F'|' '{gsub(/ /, "", $2)} $2 == "model.vision_tower" {gsub(/ /, "", $4); print $4; exit}' sel.txt)
exp=$(($(stage_col 2 1 sel.txt) + tower - layer0))
[ "$(cfg_col total 4 sel.txt)" = "$exp" ] && ok || bad "selected: $(cfg_col total 4 sel.txt) != $exp"
"$groundc" train sel.yaml >train.log 2>&1 || bad "train sel: $(tail -2 train.log)"
grep -q ", $exp trainable in" train.log && ok || bad "train selects otherwise: $(grep trainable train.log)"
[ "$(grep '^| this config ' sel.txt | awk -F'|' '{gsub(/ /, "", $3); print $3}')" = "$exp" ] && ok || bad "memory row trainable"
sed 's/model.vision_tower/model.vision_towr/' sel.yaml >typo.yaml
expect_error "pattern typo" "model.vision_towr.*" "$groundc" inspect typo.yaml
cd - >/dev/null || exit 1

# Errors --------------------------------------------------------------------------------------
tiny=$src/configs/model/tiny.yaml
sed 's/^  dim: 64/  dim: 64\n  dimm: 3/' "$tiny" >"$tmp/unknown.yaml"
line=$(grep -n "dimm" "$tmp/unknown.yaml" | cut -d: -f1)
expect_error "unknown key" "unknown.yaml:$line:3: unknown key 'dimm' in llm" "$groundc" inspect "$tmp/unknown.yaml"
sed 's/^  layers: 2$/  layers: two/' "$tiny" >"$tmp/type.yaml"
line=$(grep -n "layers: two" "$tmp/type.yaml" | head -1 | cut -d: -f1)
expect_error "wrong type" "type.yaml:$line:11: llm.layers: expected an integer, got 'two'" "$groundc" inspect "$tmp/type.yaml"
sed 's/^  size: 32 /  size: 0 /' "$tiny" >"$tmp/range.yaml"
line=$(grep -n "size: 0" "$tmp/range.yaml" | cut -d: -f1)
expect_error "out of range" "range.yaml:$line:9: image.size: 0 is outside" "$groundc" inspect "$tmp/range.yaml"
sed 's/^  tokens: 16 /  tokens: 15 /' "$tiny" >"$tmp/tokens.yaml"
line=$(grep -n "tokens: 15" "$tmp/tokens.yaml" | cut -d: -f1)
expect_error "token count" "tokens.yaml:$line:11: image.tokens: 15 tokens, but a 32-pixel image in 8-pixel patches makes 16" "$groundc" inspect "$tmp/tokens.yaml"
sed '/^    queries: 4/d' "$tiny" >"$tmp/missing.yaml"
expect_error "missing size" "missing.yaml:[0-9]+:5: video.frame_qformer: missing key 'queries'" "$groundc" inspect "$tmp/missing.yaml"
sed 's/^  so_end: 2008/  so_end: 2007/' "$tiny" >"$tmp/dup.yaml"
expect_error "duplicate token id" "dup.yaml:[0-9]+:11: tokens.so_end: id 2007 is given to two added tokens" "$groundc" inspect "$tmp/dup.yaml"
sed 's/^dtype: f32/dtype: f16/' "$tiny" >"$tmp/dtype.yaml"
expect_error "dtype" "dtype.yaml:[0-9]+:8: dtype: 'f16' is not one of: f32, bf16" "$groundc" inspect "$tmp/dtype.yaml"
sed 's/^    max_frames: 4$/    max_frames: 4\n    init: diagonal/' "$tiny" >"$tmp/init.yaml"
expect_error "video init" "init.yaml:[0-9]+:11: video.adapter.init: 'diagonal' is not one of: normal, aligned" "$groundc" inspect "$tmp/init.yaml"
sed 's/^    max_frames: 4$/    max_frames: 4\n    init: aligned/; /^  adapter:/,/^audio:/s/^    hidden: 32$/    hidden: 16/' "$tiny" >"$tmp/align.yaml"
expect_error "aligned width" "align.yaml:[0-9]+:11: video.adapter.init: aligned init needs hidden 16 equal to the frame Q-Former's 32" "$groundc" inspect "$tmp/align.yaml"
sed 's/^    max_frames: 4$/    max_frames: 4\n    init: aligned\n    init_std: 0.177/' "$tiny" >"$tmp/aligned_ok.yaml"
"$groundc" inspect "$tmp/aligned_ok.yaml" >/dev/null 2>"$tmp/err" && ok || bad "aligned init config: $(cat "$tmp/err")"
sed 's/^    select_layer: 2$/    select_layer: 2\n    init_std: -0.1/' "$tiny" >"$tmp/vit_std.yaml"
expect_error "encoder init_std" "vit_std.yaml:[0-9]+:15: video.encoder.init_std: -0.1 is outside" "$groundc" inspect "$tmp/vit_std.yaml"
printf 'train:\n  steps: 3\n' >"$tmp/neither.yaml"
expect_error "neither" "neither.yaml:1:1: .*neither a model config" "$groundc" inspect "$tmp/neither.yaml"
expect_error "seq too long" "--seq 300 exceeds max_seq 256" "$groundc" inspect "$tiny" --seq 300
expect_error "bad option" "unknown option '--frob'" "$groundc" inspect "$tiny" --frob
expect_error "no file" "no config given" "$groundc" inspect
expect_error "folder" "is a folder" "$groundc" inspect "$tmp"
expect_error "missing file" "nope.yaml: cannot open" "$groundc" inspect "$tmp/nope.yaml"

summary
