#!/usr/bin/env bash
# test_inspect.sh GROUNDC BUILD_DIR: `groundc inspect` on the model presets and on a training
# config. The LLM counts are recomputed here from the dims (the 7B one must be Vicuna-7B's
# 6,738,415,616 plus the 9 added rows of embed_tokens and lm_head); the encoders must have
# their known sizes; every module of the registry is listed; each stage's trainable count is
# the sum of its parts; a stage config's own selection (stage defaults, trainable/frozen
# patterns, LoRA adapters) is counted from the dims and equals what `groundc train` selects;
# strict YAML errors are one line with file:line:column. Then what is on disk: a dataset folder
# and a shard against h5py and the manifest, a run and a checkpoint against state.json and the
# safetensors header (and a checkpoint whose weights are not its config's model), HF and GGUF
# exports against tests/st_read.py and tests/gguf_read.py, PyTorch weights against torch.load;
# truncated files are one-line errors.
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
# Stage 1 trains projector + adapters + the 9 added input rows (lm_head frozen, as in the
# reference); stage 2 adds the LLM.
parts1=$(($(count projector "$tmp/7b") + $(count video_adapter "$tmp/7b") + $(count audio_adapter "$tmp/7b") + 9 * 4096))
[ "$(stage_col 1 1 "$tmp/7b")" = "$parts1" ] && ok || bad "7B stage 1 trainable: $(stage_col 1 1 "$tmp/7b") != $parts1"
[ "$(stage_col 2 1 "$tmp/7b")" = $((parts1 - 9 * 4096 + want)) ] && ok || bad "7B stage 2 trainable"
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
[ "$(cfg_col total 4 "$tmp/lora")" = $((parts1 + 9 * 4096 + lora)) ] && ok || bad "7B LoRA trainable: $(cfg_col total 4 "$tmp/lora")"
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
# --names: every parameter with its shape, as the checkpoint's safetensors header has them, and
# 'trains' on exactly the selection (its sizes add up to the count train printed)
"$groundc" inspect sel.yaml --names >names.txt 2>err || bad "inspect --names: $(cat err)"
"$py" - names.txt run/latest/model.safetensors "$exp" <<'PY' && ok || bad "inspect --names"
import json, re, struct, sys
lines = [l for l in open(sys.argv[1]) if re.match(r"^model\.|^lm_head", l)]
got = {}
trains = 0
for l in lines:
    m = re.match(r"^(\S+) \(([0-9, ]*)\)( trains)?$", l.rstrip("\n"))
    assert m, l
    shape = [int(x) for x in m.group(2).split(", ")]
    got[m.group(1)] = shape
    if m.group(3):
        n = 1
        for d in shape:
            n *= d
        trains += n
        assert not m.group(1).startswith("model.layers.0."), l
    else:
        assert not m.group(1).startswith("model.vision_tower."), l
with open(sys.argv[2], "rb") as f:
    h = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
want = {k: v["shape"] for k, v in h.items() if k != "__metadata__"}
assert got == want, (set(got) ^ set(want))
assert trains == int(sys.argv[3]), (trains, sys.argv[3])
PY
sed 's/model.vision_tower/model.vision_towr/' sel.yaml >typo.yaml
expect_error "copy-task config" "configs/demo/lm.yaml: a copy-task config .task:., which has no GroundingGPT model to inspect; groundc train runs it" "$groundc" inspect "$here/../configs/demo/lm.yaml"
expect_error "pattern typo" "model.vision_towr.*' matches no parameter of the model .groundc inspect --names CONFIG.yaml lists them." "$groundc" inspect typo.yaml

# What is on disk: dataset, shard, run, checkpoint, exports, weights ---------------------------
# Counts are checked against h5py, json, the safetensors header (tests/st_read.py), the GGUF
# reader of tests/gguf_read.py and torch.load.
"$groundc" inspect train --checksums >ds.txt 2>err && ok || bad "inspect dataset: $(cat err)"
shard=$(ls train/*.h5 | head -1)
"$groundc" inspect "$shard" >shard.txt 2>err && ok || bad "inspect shard: $(cat err)"
grep -q "counts and SHA-256" ds.txt && ok || bad "dataset check line: $(tail -1 ds.txt)"
if "$py" -c "import h5py" 2>/dev/null; then
  HDF5_PLUGIN_PATH="$build/hdf5-plugins" "$py" - "$shard" shard.txt ds.txt train/manifest.json <<'PY' && ok || bad "shard and dataset reports differ from h5py and the manifest"
import json, re, sys
import h5py
shard, report, ds_report, manifest = sys.argv[1:]
tasks = ["caption", "rec", "reg", "tvg", "sound", "conversation"]
with h5py.File(shard, "r") as f:
    n = len(f["offsets"]) - 1
    want = {"samples": n, "tokens": int(f["offsets"][-1]), "loss": int(f["loss_mask"][:].sum())}
    task, gran = f["sample_task"][:], f["sample_granularity"][:]
    rows = {tasks[t]: (int((task == t).sum()), int(((task == t) & (gran == 0)).sum()),
                       int(((task == t) & (gran == 1)).sum())) for t in set(task.tolist())}
    lengths = f["offsets"][1:] - f["offsets"][:-1]
text = open(report).read()
head = re.search(r"(\d+) samples, (\d+) tokens \((\d+) in the loss\)", text)
got = dict(zip(["samples", "tokens", "loss"], map(int, head.groups())))
assert got == want, (got, want)
assert f"min {lengths.min()}, mean" in text and f"max {lengths.max()} tokens" in text, text
for name, (total, coarse, fine) in rows.items():
    assert re.search(rf"\| {name} +\| +{total} \| +{coarse} \| +{fine} \|", text), (name, text)
m = json.load(open(manifest))
ds = open(ds_report).read()
assert f"{m['num_samples']} samples, {m['num_tokens']} tokens in {len(m['shards'])} shards" in ds
for name, count in m["tasks"].items():
    assert re.search(rf"\| {name} +\| +{count} \|", ds), (name, ds)
PY
fi

# the manifest itself is its dataset; a manifest without the optional sizes reports the files'
# sizes; a shard's --checksums checks it against the manifest beside it (and says when none is)
"$groundc" inspect train/manifest.json --checksums >ds2.txt 2>err && cmp -s ds.txt <(sed 's#train/manifest.json#train#' ds2.txt) && ok || bad "inspect manifest.json: $(cat err) $(diff ds.txt ds2.txt | head -3)"
mkdir -p nobytes && cp train/*.h5 nobytes/ && "$py" - train/manifest.json nobytes/manifest.json <<'PY' || bad "manifest without bytes"
import json, sys
m = json.load(open(sys.argv[1]))
for s in m["shards"]:
    del s["bytes"]
json.dump(m, open(sys.argv[2], "w"))
PY
"$groundc" inspect nobytes >nb.txt 2>err && [ "$(head -1 nb.txt | sed 's/nobytes/train/')" = "$(head -1 ds.txt)" ] && ok || bad "sizes without bytes: $(head -1 nb.txt) vs $(head -1 ds.txt) $(cat err)"
"$groundc" inspect "$shard" --checksums >sc.txt 2>err && grep -q "^checked: size, SHA-256 and counts as train/manifest.json records$" sc.txt && ok || bad "shard --checksums: $(tail -1 sc.txt) $(cat err)"
mkdir -p lone && cp "$shard" lone/
expect_error "shard --checksums without a manifest" "lone/$(basename "$shard"): --checksums: no manifest.json beside it to check it against" "$groundc" inspect "lone/$(basename "$shard")" --checksums
cp "$shard" nobytes/flip.h5 && "$py" - nobytes/flip.h5 nobytes/manifest.json "$(basename "$shard")" <<'PY' || bad "flip"
import json, os, sys
path, man, orig = sys.argv[1:]
size = os.path.getsize(path)
with open(path, "r+b") as f:
    f.seek(size - 3); b = f.read(1); f.seek(size - 3); f.write(bytes([b[0] ^ 1]))
m = json.load(open(man))
e = dict(next(s for s in m["shards"] if s["file"] == orig)); e["file"] = "flip.h5"
m["shards"].append(e); m["num_samples"] += e["num_samples"]; m["num_tokens"] += e["num_tokens"]
json.dump(m, open(man, "w"))
PY
expect_error "shard --checksums, one byte flipped" "nobytes/flip.h5: SHA-256 .* differs from the manifest" "$groundc" inspect nobytes/flip.h5 --checksums
# shards of two image sizes in one folder: inspect refuses it as the loader would
"$groundc" pack --json raw/train.json --media-root raw --out big --tokenizer "$here/fixtures/tokenizer/test_bpe.model" "${tiny_pack[@]}" --image-size 64 --image-tokens 64 >/dev/null 2>&1 || bad "pack 64 px"
mkdir -p mixed && cp "$shard" mixed/a.h5 && cp "$(ls big/*.h5 | head -1)" mixed/b.h5 && "$py" - train/manifest.json big/manifest.json mixed/manifest.json "$(basename "$shard")" "$(basename "$(ls big/*.h5 | head -1)")" <<'PY' || bad "mixed manifest"
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
ea = dict(next(s for s in a["shards"] if s["file"] == sys.argv[4]), file="a.h5")
eb = dict(next(s for s in b["shards"] if s["file"] == sys.argv[5]), file="b.h5")
a["shards"] = [ea, eb]
a["num_samples"] = ea["num_samples"] + eb["num_samples"]
a["num_tokens"] = ea["num_tokens"] + eb["num_tokens"]
json.dump(a, open(sys.argv[3], "w"))
PY
expect_error "two image sizes in one dataset" "mixed/b.h5: .*image 64 px, but a.h5 has image 32 px .one dataset holds one geometry per media kind" "$groundc" inspect mixed
printf 'GIF89a\0\0' >pic.gif
expect_error "inspect of an image" "pic.gif: not a file inspect reads" "$groundc" inspect pic.gif
printf '[{"image": "a.png", "conversations": []}]\n' >samples.json
expect_error "inspect of a pack input" "samples.json: not a file inspect reads" "$groundc" inspect samples.json

"$groundc" inspect run >run.txt 2>err && ok || bad "inspect run: $(cat err)"
step=$(ls -d run/step_* | tail -1)
grep -q "run run: 1 checkpoint: $(basename "$step"); latest -> " run.txt && ok || bad "run line: $(head -1 run.txt)"
# without its link (a kill between the step folder's rename and the link's) the run still
# reads, and the line says which checkpoint stands in for the link
cp -r run nolink && rm nolink/latest
"$groundc" inspect nolink >nolink.txt 2>err &&
  grep -q "run nolink: 1 checkpoint: $(basename "$step"); no 'latest' link, newest: nolink/$(basename "$step")$" nolink.txt &&
  ok || bad "run without latest: $(head -1 nolink.txt) $(cat err)"
# a checkpoint folder a kill left unfinished is named
mkdir nolink/.tmp.step_00000099 && "$groundc" inspect nolink >nolink.txt 2>err &&
  grep -q "^.tmp.step_00000099: an unfinished checkpoint (being written, or left by a run killed while writing it; the next save removes it)$" nolink.txt &&
  ok || bad "unfinished checkpoint not named: $(head -3 nolink.txt) $(cat err)"
"$groundc" inspect "$step" >ckpt.txt 2>err && ok || bad "inspect checkpoint: $(cat err)"
want_step=$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['step'])" "$step/state.json")
grep -q "^checkpoint $step: step $want_step of " ckpt.txt && ok || bad "checkpoint line: $(head -1 ckpt.txt)"
n_tensors=$("$py" -c "import sys; sys.path.insert(0, sys.argv[2]); import st_read; print(len(st_read.read_raw(sys.argv[1])))" "$step/model.safetensors" "$here")
grep -q "^model.safetensors: $n_tensors tensors, .*fits config.yaml's model ($n_tensors tensors" ckpt.txt && ok || bad "checkpoint weights line: $(grep model.safetensors ckpt.txt)"
# an unfinished stage's checkpoint without its optimizer state: said not resumable
mkdir -p noopt && cp "$step"/* noopt/ && rm -f noopt/optim.rank00000.safetensors
"$py" -c "
import json, sys
s = json.load(open('noopt/state.json')); s['total_steps'] = s['step'] + 10; s['complete'] = False
json.dump(s, open('noopt/state.json', 'w'))"
"$groundc" inspect noopt >noopt.txt 2>err &&
  grep -q "^checkpoint noopt: step $want_step of $((want_step + 10)) (not resumable: optim.rank00000.safetensors is missing)" noopt.txt &&
  ok || bad "checkpoint without optimizer state: $(head -1 noopt.txt) $(cat err)"
# the checkpoint's config report is that of the config it was trained from
[ "$(cfg_col total 4 ckpt.txt)" = "$exp" ] && ok || bad "checkpoint's trainable count $(cfg_col total 4 ckpt.txt) != $exp"
# a checkpoint whose weights are not its config's model
# (config.yaml holds the resolved model: one LLM layer fewer there)
mkdir -p mixed && cp "$step"/* mixed/ && sed -i '0,/^    layers: 2$/s//    layers: 1/' mixed/config.yaml
expect_error "mixed checkpoint" "mixed: state.json's model digest .* is not that of config.yaml's model" "$groundc" inspect mixed

tok=$here/fixtures/tokenizer/test_bpe.model
"$groundc" export "$step" --format hf --out hf --tokenizer "$tok" >/dev/null 2>err || bad "export hf: $(cat err)"
"$groundc" export "$step" --format gguf --out gguf --tokenizer "$tok" >/dev/null 2>err || bad "export gguf: $(cat err)"
"$groundc" inspect hf >hf.txt 2>err && ok || bad "inspect hf export: $(cat err)"
"$groundc" inspect gguf >gguf.txt 2>err && ok || bad "inspect gguf export: $(cat err)"
"$py" - hf gguf hf.txt gguf.txt "$here" <<'PY' && ok || bad "export reports differ from the files"
import json, re, sys
hf, gg, hf_report, gg_report, here = sys.argv[1:]
sys.path.insert(0, here)
import gguf_read, st_read
text = open(hf_report).read()
for name in ["model.safetensors", "video_branch.safetensors", "audio_branch.safetensors"]:
    t = st_read.read_raw(f"{hf}/{name}")
    params = sum(int(a.size) for a in t.values())
    heading = f"weights {hf}" if name == "model.safetensors" else f"weights {hf}/{name}"
    assert re.search(rf"^{re.escape(heading)}: 1 safetensors file, {len(t)} tensors", text, re.M), (name, text[:300])
    # every tensor is counted in exactly one row: the rows' counts add up
    rows = [l for l in text.split(heading + ":")[1].split("\nweights ")[0].splitlines() if l.startswith("| ") and not l.startswith("| tensors") and not l.startswith("| -")]
    assert sum(int(l.split("|")[4]) for l in rows) == len(t), (name, rows)
    assert sum(int(l.split("|")[5]) for l in rows) == params, (name, params)
cfg = json.load(open(f"{hf}/config.json"))
assert f"hidden_size {cfg['text_config']['hidden_size']}," in text
text = open(gg_report).read()
for name in ["model.gguf", "mmproj.gguf"]:
    g = gguf_read.Gguf(f"{gg}/{name}")
    assert f"gguf {gg}/{name}: version 3, {len(g.tensors)} tensors, {len(g.kv)} metadata keys" in text, name
    arch = g.val("general.architecture")
    assert f"general.architecture = {arch}\n" in text
PY

head -c 200 gguf/model.gguf >cut.gguf
expect_error "truncated gguf" "cut.gguf: byte [0-9]+: truncated in" "$groundc" inspect cut.gguf
head -c 3000 "$shard" >cut.h5
expect_error "truncated shard" "cut.h5" "$groundc" inspect cut.h5

# Weights in PyTorch files: counts against torch.load.
if "$py" -c "import torch" 2>/dev/null; then
  "$groundc" inspect "$here/fixtures/torch/imagebind.pth" >pth.txt 2>err && ok || bad "inspect .pth: $(cat err)"
  "$groundc" inspect "$here/fixtures/torch/llama-bf16-bin" >bin.txt 2>err && ok || bad "inspect .bin folder: $(cat err)"
  "$py" - "$here/fixtures/torch" pth.txt bin.txt <<'PY' && ok || bad "PyTorch weight reports differ from torch.load"
import glob, sys
import torch
d, pth, binr = sys.argv[1:]
sd = torch.load(f"{d}/imagebind.pth")["model"]
text = open(pth).read()
assert f"1 PyTorch file, {len(sd)} tensors" in text, text[:200]
rows = [l for l in text.splitlines() if l.startswith("| ") and not l.startswith("| tensors") and not l.startswith("| -")]
assert sum(int(l.split("|")[5]) for l in rows) == sum(t.numel() for t in sd.values())
sd = {}
for f in sorted(glob.glob(f"{d}/llama-bf16-bin/*.bin")):
    sd.update(torch.load(f))
text = open(binr).read()
assert f"2 PyTorch files, {len(sd)} tensors" in text, text[:200]
q = [l for l in text.splitlines() if l.startswith("| model.layers.N.self_attn.q_proj.weight ")][0]
assert "BF16" in q and int(q.split("|")[4]) == sum(1 for k in sd if k.endswith("q_proj.weight")), q
PY
fi
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
expect_error "no file" "nothing to inspect given" "$groundc" inspect
expect_error "folder" "not a checkpoint, run, dataset, weights or export folder" "$groundc" inspect "$tmp/cfg"
expect_error "missing file" "nope.yaml: cannot open" "$groundc" inspect "$tmp/nope.yaml"

# a checkpoint whose model.safetensors has the names of its config's model but other shapes, or
# other names (its header rewritten: embed_tokens transposed, or renamed), fails as eval does
cd "$tmp/sel" || exit 1
reshape() { # SRC DST MODE: DST/model.safetensors is SRC's with embed_tokens transposed or renamed
  mkdir -p "$2" && cp "$1"/* "$2"/ && "$py" - "$1/model.safetensors" "$2/model.safetensors" "$3" <<'PY'
import json, struct, sys
src, dst, mode = sys.argv[1:]
raw = open(src, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n])
name = "model.embed_tokens.weight"
if mode == "transpose":
    head[name]["shape"] = head[name]["shape"][::-1]
else:
    head["model.embed_tokens.weights"] = head.pop(name)
h = json.dumps(head).encode()
h += b" " * (-len(h) % 8)
open(dst, "wb").write(struct.pack("<Q", len(h)) + h + raw[8 + n:])
PY
}
reshape "$step" shapes transpose || bad "rewrite the header"
expect_error "weights of other shapes" "shapes/model.safetensors: tensor 'model.embed_tokens.weight' is \[64,[0-9]+\], the model's is f32\[[0-9]+,64\]" "$groundc" inspect shapes
reshape "$step" names rename || bad "rewrite the header"
expect_error "weights of other names" "names/model.safetensors: no tensor 'model.embed_tokens.weight'" "$groundc" inspect names

# a damaged or empty .h5 file is reported as a shard that does not open, not read as YAML
printf 'not hdf5' >"$tmp/bad.h5"
: >"$tmp/empty.h5"
expect_error "damaged .h5" "bad.h5: cannot open as HDF5" "$groundc" inspect "$tmp/bad.h5"
expect_error "empty .h5" "empty.h5: cannot open as HDF5" "$groundc" inspect "$tmp/empty.h5"

# a curriculum: each stage's report in turn (it used to fail as neither model nor stage config)
if "$groundc" inspect "$src/configs/curriculum.yaml" >"$tmp/cur" 2>"$tmp/err"; then ok
else bad "inspect curriculum: $(cat "$tmp/err")"; fi
grep -q "^curriculum .*curriculum.yaml: 3 stages" "$tmp/cur" && ok || bad "curriculum heading"
for i in 1 2 3; do
  grep -q "^== stage $i of 3: .*configs/stage$i.yaml" "$tmp/cur" && ok || bad "curriculum stage $i heading"
done
[ "$(grep -c "trainable" "$tmp/cur")" -ge 3 ] && ok || bad "curriculum: a stage report per stage"
printf 'stages:\n  - %s\n' "$src/configs/model/tiny.yaml" >"$tmp/cur_bad.yaml"
expect_error "curriculum of a model file" "tiny.yaml.*not a stage config" "$groundc" inspect "$tmp/cur_bad.yaml"

# a stage config's own micro-batch by default; AdamW state split over --ranks under train.zero1
"$groundc" inspect "$src/configs/stage2.yaml" >"$tmp/z1" 2>&1 &&
  "$groundc" inspect "$src/configs/stage2.yaml" --ranks 8 >"$tmp/z8" 2>&1 && ok || bad "inspect --ranks: $(tail -2 "$tmp/z8")"
grep -q "^memory of this config (micro-batch 2 x 2048 tokens; AdamW state over 8 ranks" "$tmp/z8" && ok || bad "inspect --ranks heading: $(grep '^memory of this' "$tmp/z8")"
"$py" - "$tmp/z1" "$tmp/z8" <<'PY' && ok || bad "inspect --ranks 8: optimizer not split 8 ways"
import sys
def row(path):  # the "this config" row: optimizer and total in bytes
    line = [l for l in open(path) if l.startswith("| this config")][0]
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    unit = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
    b = lambda c: float(c.split()[0]) * unit[c.split()[1]]
    return b(cells[4]), b(cells[6])
(o1, t1), (o8, t8) = row(sys.argv[1]), row(sys.argv[2])
assert abs(o1 / o8 - 8) < 0.01 and abs((t1 - t8) - (o1 - o8)) < 0.01 * t1, (o1, o8, t1, t8)
PY

summary
