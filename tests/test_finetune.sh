#!/usr/bin/env bash
# test_finetune.sh GROUNDC BUILD_DIR: the README's "Fine-tune on your own data" recipe end to
# end on synthetic custom data (tiny model):
#   custom grounding JSONL (boxes in pixels of non-square images, spans in seconds)
#   -> groundc pack -> groundc train (from a stage-3 checkpoint) -> groundc eval
#   -> groundc export (hf and gguf).
# Checks that the fine-tune starts from the checkpoint (frozen tensors identical to it, bit for
# bit, read with numpy; trained ones moved), that the packed boxes are the pixel boxes
# normalised to the padded square (recomputed in Python from the image sizes), and that eval
# scores the custom held-out lines.
set -u
. "$(dirname "$0")/lib.sh" "$@"
cd "$tmp" || exit 1

# --- a stage-3 checkpoint of the tiny model (a few steps on synthetic data)
tiny_shards --images 40 --videos 8 --audios 8 --max-shapes 1
P=(--tokenizer "$here/fixtures/tokenizer/test_bpe.model" "${tiny_pack[@]}" --threads 1)
tiny_stage3 4

# --- custom data: the synthetic REC and sound-grounding samples rewritten as grounding JSONL
# (image boxes [x, y, w, h] in pixels, sound spans [s, e] in seconds of the 3 s clips)
$py - <<'PY' || bad "writing the custom JSONL"
import json, re, wave
from PIL import Image
for split in ("train", "eval"):
    out = open(f"mine_{split}.jsonl", "w")
    expect = []
    for s in json.load(open(f"raw/{split}.json")):
        q, a = s["conversations"][0]["value"], s["conversations"][1]["value"]
        q = q.replace("<image>\n", "").replace("<sound>\n", "")
        if s.get("task") == "rec":
            x1, y1, x2, y2 = map(float, re.findall(r"[0-9.]+", a))
            w, h = Image.open("raw/" + s["image"]).size
            side = max(w, h)  # pad to square, centred (LLaVA expand2square)
            ox, oy = (side - w) // 2, (side - h) // 2
            box = [x1 * side - ox, y1 * side - oy, (x2 - x1) * side, (y2 - y1) * side]
            out.write(json.dumps({"image": s["image"], "expression": q, "bbox": box}) + "\n")
            expect.append([x1, y1, x2, y2])
        elif s.get("task") == "sound":
            t1, t2 = map(float, re.findall(r"[0-9.]+", a))
            with wave.open("raw/" + s["sound"]) as f:
                dur = f.getnframes() / f.getframerate()
            line = {"sound": s["sound"], "query": q, "span": [t1 * dur, t2 * dur]}
            out.write(json.dumps(line) + "\n")
    json.dump(expect, open(f"expect_{split}.json", "w"))
PY
[ -s mine_train.jsonl ] && ok || bad "no custom training lines"
for split in train eval; do
  "$groundc" pack --grounding-jsonl mine_$split.jsonl --media-root raw --out mine_$split "${P[@]}" \
    >pack_$split.log 2>&1 && ok || bad "pack $split: $(tail -3 pack_$split.log)"
done
! grep -q "EXIF" pack_train.log && ok || bad "EXIF warning without EXIF: $(grep EXIF pack_train.log)"
# A phone photo (EXIF orientation 6: viewers turn it 90 degrees): packed as stored, as the
# reference does, with one warning that its boxes must be drawn on the stored picture.
$py - <<'PY' || bad "writing the EXIF photo"
import json
from PIL import Image
exif = Image.Exif()
exif[0x0112] = 6
Image.new("RGB", (40, 24), (200, 30, 30)).save("raw/phone.jpg", quality=90, exif=exif)
line = {"image": "phone.jpg", "expression": "the photo", "bbox": [2, 2, 20, 10]}
open("exif.jsonl", "w").write(json.dumps(line) + "\n")
PY
"$groundc" pack --grounding-jsonl exif.jsonl --media-root raw --out mine_exif "${P[@]}" >pack_exif.log 2>&1 &&
  grep -q "^pack: warning: 1 image of grounding JSONL records carries an EXIF orientation other than 1 (the first: raw/phone.jpg, orientation 6)" pack_exif.log &&
  ok || bad "EXIF warning: $(cat pack_exif.log)"

# The packed samples carry the boxes normalised to the padded square, as the reference
# writes them (sample_meta): compare with the synthetic originals (3 decimals: within 1e-3).
HDF5_PLUGIN_PATH="$2/hdf5-plugins" $py - <<'PY' && ok || bad "packed boxes differ from the synthetic boxes"
import glob, json
import h5py, numpy as np
expect = json.load(open("expect_train.json"))
got = []
for f in sorted(glob.glob("mine_train/*.h5")):
    with h5py.File(f) as h:
        for task, meta in zip(h["sample_task"][:], h["sample_meta"][:]):
            if task == 1:
                got.append(json.loads(meta)["box"])
assert len(got) == len(expect) > 0, (len(got), len(expect))
err = np.abs(np.array(got) - np.array(expect)).max()
assert err <= 1.5e-3, err
PY

# --- the fine-tune: stage-3 selection from the stage-3 checkpoint, custom data weighted 4:1
cat >finetune.yaml <<YAML
model: tiny.yaml
init:
  checkpoint: $tmp/stage3/latest
stage: 3
data:
  datasets:
    - {path: mine_train, weight: 4}
    - {path: train, weight: 1}
  micro_batch: 4
train:
  steps: 6
  lr: 1.0e-3
  log_every: 1
eval:
  data: mine_eval
  tokenizer: $here/fixtures/tokenizer/test_bpe.model
  limit: 20
checkpoint:
  out: $tmp/finetune
YAML
"$groundc" train finetune.yaml >ft.log 2>&1 || bad "fine-tune: $(tail -3 ft.log)"
grep -q "init checkpoint: .* from $tmp/stage3/" ft.log && ok || bad "fine-tune does not say it started from stage 3"
[ "$(readlink finetune/latest)" = step_00000006 ] && ok || bad "fine-tune: latest $(readlink finetune/latest)"
# Frozen in stage 3 (the image encoder): bit-identical to the stage-3 checkpoint. Trained (the
# LLM): moved.
$py "$here/st_compare.py" --only 'model.vision_tower.*' --rtol 0 --atol 0 \
  stage3/latest/model.safetensors finetune/latest/model.safetensors >cmp.log 2>&1 &&
  ok || bad "frozen vision tower changed: $(tail -2 cmp.log)"
if $py "$here/st_compare.py" --only 'model.layers.*' --rtol 0 --atol 0 \
  stage3/latest/model.safetensors finetune/latest/model.safetensors >/dev/null 2>&1; then
  bad "the LLM did not train"
else ok; fi

# --- eval on the custom held-out lines
"$groundc" eval finetune/latest --data mine_eval --limit 20 >eval.log 2>&1 || bad "eval: $(tail -3 eval.log)"
grep -qE '^\| rec[^|]*\| *[1-9]' eval.log && ok || bad "eval scored no REC sample: $(cat eval.log | tail -5)"

# --- export the fine-tuned model (the formats' own tests check the contents)
"$groundc" export finetune/latest --format hf --out export-hf >exp.log 2>&1 &&
  [ -f export-hf/model.safetensors ] && [ -f export-hf/config.json ] && ok ||
  bad "export hf: $(tail -2 exp.log)"
"$groundc" export finetune/latest --format gguf --dtype q8_0 --out export-gguf >exp.log 2>&1 &&
  [ -f export-gguf/model.gguf ] && [ -f export-gguf/mmproj.gguf ] && ok ||
  bad "export gguf: $(tail -2 exp.log)"

summary
