#!/usr/bin/env bash
# test_eval.sh GROUNDC BUILD_DIR: `groundc eval` traces every answer back to its input line.
# Grounding JSONL (ids, boxes [x, y, w, h] in pixels of non-square images) packed for the tiny
# model, 2 training steps; then eval --verbose --report of the run folder:
#   * one stderr line names the checkpoint the run folder's `latest` gives;
#   * each record holds the line's id, the JSONL file and line number, the source name, the
#     image's size, and the reference box in pixels that gives back the line's bbox (to the 3
#     decimals the answer text keeps); tests/eval_report_check.py recomputes the rest;
#   * tvg and sound records hold the duration and the reference span in seconds of the file
#     that gives back the line's span (to the 2 decimals the answer text keeps), also for a
#     video whose picture starts 0.6 s into its file (late_video.mkv: its record says so);
#   * each --verbose line names file, line and id;
#   * a shard whose loss_mask covers the prompt (media tokens in the reference): one line naming
#     the dataset and the sample.
set -u
. "$(dirname "$0")/lib.sh" "$@"
need_python numpy PIL
tok=$here/fixtures/tokenizer/test_bpe.model
cd "$tmp" || exit 1

"$groundc" synth --out raw --images 12 --videos 2 --audios 2 --eval-fraction 0.5 >/dev/null || bad synth
# the synthetic REC samples as a user's JSONL: pixel boxes of the original image, an id each
"$py" - <<'PY' || bad "grounding JSONL"
import json, re
from PIL import Image
out = open("mine.jsonl", "w")
for x in json.load(open("raw/eval.json")):
    if x.get("task") != "rec":
        continue
    w, h = Image.open("raw/" + x["image"]).size
    q = x["conversations"][0]["value"]
    expr = re.search(r"corresponds to (.*) in this image", q).group(1)
    b = [float(v) for v in re.findall(r"[0-9.]+", x["conversations"][1]["value"])[:4]]
    side = max(w, h)
    ox, oy = (side - w) // 2, (side - h) // 2
    x1, y1 = max(b[0] * side - ox, 0), max(b[1] * side - oy, 0)
    x2, y2 = min(b[2] * side - ox, w), min(b[3] * side - oy, h)
    out.write(json.dumps({"id": "mine-" + x["id"], "image": x["image"], "expression": expr,
                          "bbox": [round(x1), round(y1), round(x2 - x1), round(y2 - y1)]}) + "\n")
# the synthetic videos (4 s) and sounds (6 s) with spans in seconds; a video whose picture
# starts 0.6 s into the file and lasts 0.8 s
for x in json.load(open("raw/eval.json")):
    for key, task, d in (("video", "tvg", 4.0), ("sound", "sound", 6.0)):
        if x.get("task") == task:
            t = [float(v) for v in re.findall(r"[0-9.]+", x["conversations"][1]["value"])[:2]]
            out.write(json.dumps({"id": "mine-" + x["id"], key: x[key], "query": "the event",
                                  "span": [round(t[0] * d, 2), round(t[1] * d, 2)]}) + "\n")
out.write(json.dumps({"id": "late", "video": "late_video.mkv", "query": "the square moves",
                      "span": [0.8, 1.2]}) + "\n")
PY
cp "$here/fixtures/video/late_video.mkv" raw/ || bad "late_video.mkv"
"$groundc" pack --grounding-jsonl mine.jsonl --media-root raw --out mine --tokenizer "$tok" \
  "${tiny_pack[@]}" --threads 1 >pack.log 2>&1 || bad "pack: $(tail -2 pack.log)"
sed 's/dropout: 0.1/dropout: 0.0/' "$here/../configs/model/tiny.yaml" >tiny.yaml
cat >stage.yaml <<YAML
model: tiny.yaml
stage: 3
data:
  datasets: [mine]
  micro_batch: 2
train:
  steps: 2
  lr: 1.0e-3
checkpoint:
  out: run
eval:
  data: mine
  tokenizer: $tok
  limit: 1
  max_new_tokens: 4
YAML
"$groundc" train stage.yaml >train.log 2>&1 || bad "train: $(tail -3 train.log)"

"$groundc" eval run --data mine --verbose --max-new-tokens 16 --report report.json >eval.out 2>eval.err ||
  bad "eval: $(cat eval.err)"
[ "$(cat eval.err)" = "eval: run is a run folder; using its latest checkpoint run/step_00000002" ] && ok ||
  bad "eval of a run folder: stderr $(cat eval.err)"
"$py" "$here/eval_report_check.py" report.json >check.out && ok || bad "report: $(cat check.out)"
"$py" - <<'PY' && ok || bad "records: id, file, line, pixel boxes of mine.jsonl"
import json
lines = open("mine.jsonl").read().splitlines()
r = json.load(open("report.json"))
assert r["checkpoint"] == "run/step_00000002", r["checkpoint"]
recs = r["samples"]
assert len(recs) == len(lines) >= 3, (len(recs), len(lines))
spans = 0
for s in recs:
    src = json.loads(lines[s["index"] - 1])  # JSONL: the line number, from 1
    assert (s["id"], s["file"], s["source"]) == (src["id"], "mine.jsonl", "mine"), (s, src)
    if "span" in src:
        d = s["duration"]
        assert abs(d - (0.8 if src["id"] == "late" else 4.0 if "video" in src else 6.0)) < 1e-6, s
        assert (s.get("start", 0.0) == 0.0) == (src["id"] != "late"), s
        got = s["reference_span_s"]
        assert all(abs(a - b) <= 0.005 * d + 1e-6 for a, b in zip(got, src["span"])), (got, src)
        spans += 1
        continue
    x, y, w, h = src["bbox"]
    W, H = s["image_size"]
    tol = 0.0005 * max(W, H) + 1e-6  # the answer text keeps 3 decimals of the padded square
    got = s["reference_box_px"]
    assert all(abs(a - b) <= tol for a, b in zip(got, [x, y, x + w, y + h])), (got, src["bbox"], W, H)
assert spans >= 3, spans
PY
n=$(grep -c '^eval sample [0-9]* (rec)' eval.out)
[ "$n" -ge 3 ] && [ "$(grep -cE '^eval sample [0-9]+ \(rec\): .* \| mine.jsonl index [0-9]+, id "mine-synth-img-[0-9]+-rec", source mine \| answer box .* \| reference box \[[0-9., ]+\] px of [0-9]+x[0-9]+$' eval.out)" = "$n" ] &&
  ok || bad "--verbose lines: $(grep -m2 '^eval sample' eval.out)"
grep -qE '^eval sample [0-9]+ \(tvg\): .* \| mine.jsonl index [0-9]+, id "late", source mine \| answer span .* \| reference span \{0\.80, 1\.20\} s of 0\.80 s$' eval.out &&
  ok || bad "--verbose tvg line: $(grep -m1 'id "late"' eval.out)"

# a sample longer than the model's max_seq (256) before its answer ends: not graded, counted
# (too_long), warned of on stderr, named in the verbose line and in the report's records
"$py" - <<'PY' || bad "long JSONL"
import json
lines = open("mine.jsonl").read().splitlines()
first = json.loads(lines[0])
long = dict(first, id="long", expression=" ".join(["the red square"] * 120))
open("long.jsonl", "w").write(lines[0] + "\n" + json.dumps(long) + "\n")
PY
"$groundc" pack --grounding-jsonl long.jsonl --media-root raw --out long --tokenizer "$tok" \
  "${tiny_pack[@]}" --threads 1 >pack_long.log 2>&1 || bad "pack long: $(tail -2 pack_long.log)"
"$groundc" eval run --data long --task rec --verbose --max-new-tokens 4 --report long.json \
  >long.out 2>long.err || bad "eval of a too-long sample: $(cat long.err)"
grep -qE '^eval: warning: 1 of the 2 rec samples taken from long are longer than the model.s max_seq \(256 tokens\) through their first answer: not graded' long.err &&
  ok || bad "too-long warning: $(cat long.err)"
grep -qE '^eval sample 1 \(rec\): not graded: [0-9]+ tokens, its first answer does not end within the model.s max_seq 256$' long.out &&
  ok || bad "too-long verbose line: $(grep -m2 '^eval sample' long.out)"
"$py" - <<'PY' && ok || bad "too-long report: $(cat long.json)"
import json
r = json.load(open("long.json"))
t = r["tasks"]["rec"]
assert (t["samples"], t["taken"], t["too_long"]) == (1, 2, 1), t
recs = [s for s in r["samples"] if s.get("too_long")]
assert len(recs) == 1 and recs[0]["id"] == "long" and recs[0]["tokens"] > 256, recs
assert recs[0]["file"] == "long.jsonl" and recs[0]["index"] == 2, recs
PY

# a damaged shard whose loss_mask covers the prompts too: the reference answers hold media
# tokens, which have no text; the one-line error names the dataset and the sample
if "$py" -c "import h5py" 2>/dev/null; then
  cp -r mine mine_mask
  HDF5_PLUGIN_PATH="$build/hdf5-plugins" "$py" - <<'PY' || bad "damaging mine_mask"
import glob, hashlib, json, os
import h5py
m = json.load(open("mine_mask/manifest.json"))
for e in m["shards"]:
    path = os.path.join("mine_mask", e["file"])
    with h5py.File(path, "a") as f:  # (the zstd plugin decodes only: written plain)
        mask = f["loss_mask"][()]
        del f["loss_mask"]
        f.create_dataset("loss_mask", data=mask * 0 + 1, dtype=mask.dtype)
    data = open(path, "rb").read()
    e["sha256"], e["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
json.dump(m, open("mine_mask/manifest.json", "w"))
PY
  # a sample_meta that is not UTF-8: refused, naming the shard and sample (the --report JSON
  # held the raw bytes, which JSON readers cannot decode)
  cp -r mine mine_meta
  HDF5_PLUGIN_PATH="$build/hdf5-plugins" "$py" - <<'PY' || bad "damaging mine_meta"
import hashlib, json, os
import h5py
m = json.load(open("mine_meta/manifest.json"))
e = m["shards"][0]
path = os.path.join("mine_meta", e["file"])
with h5py.File(path, "a") as f:
    f["sample_meta"][0] = b'{"id": "caf\xe9"}'
data = open(path, "rb").read()
e["sha256"], e["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
json.dump(m, open("mine_meta/manifest.json", "w"))
PY
  expect_error "eval: sample_meta not UTF-8" "mine_meta/$(basename "$("$py" -c "import json; print(json.load(open('mine_meta/manifest.json'))['shards'][0]['file'])")"): sample 0: sample_meta is not UTF-8" \
    "$groundc" eval run/step_00000002 --data mine_meta --max-new-tokens 4 --verbose --report meta.json
  expect_error "eval: a loss_mask over the prompt" "mine_mask: sample [0-9]+: its answer .* holds token id 20[0-9][0-9] at position [0-9]+, which has no text" \
    "$groundc" eval run/step_00000002 --data mine_mask --max-new-tokens 4
fi

summary
