#!/usr/bin/env bash
# test_generate.sh GROUNDC BUILD_DIR: `groundc generate` and `groundc eval` end to end on a tiny
# checkpoint trained here (100 steps of the tiny model on synthetic grounding data, enough to
# answer with boxes, spans and the stop marker):
#   * generate's greedy answer for an eval sample (its image, video or audio and question)
#     equals the answer `groundc eval` generated for that sample;
#   * sampling with a seed repeats, differs from greedy at temperature 5, and equals greedy
#     with a nucleus of one token; the stop marker and --max-new-tokens end the answer;
#   * --raw --logits-out (text only) equals a numpy forward of the checkpoint's decoder
#     (tests/llama_logits_reference.py); with media the prompt has the expanded length;
#   * boxes are mapped to pixels of the original (non-square) image as a PIL pad-to-square
#     says, spans to seconds of the video (duration from the mp4 header) and audio (wave);
#   * eval: every metric of the JSON report recomputed by Python from its per-sample answers
#     (tests/eval_report_check.py), --task, 2 MPI ranks give the 1-rank report; each record
#     and --verbose line names the sample's id, file and index in raw/eval.json, and rec's
#     boxes in pixels of the original image;
#   * eval and generate of a run folder use its latest checkpoint and say so on stderr;
#     --help lists generate's options with their defaults; scripts/plot_metrics.py RUN draws
#     into the run folder;
#   * bad input (missing media, unknown option, a prompt longer than max_seq, --max-new-tokens 0
#     without --logits-out, a --report or --logits-out path that cannot be written, ...) is
#     one error line and a non-zero exit, and leaves no file behind; a path that cannot be
#     written fails before the model is read.
set -u
. "$(dirname "$0")/lib.sh" "$@"
need_python numpy PIL sentencepiece
tok=$here/fixtures/tokenizer/test_bpe.model

expect_error() { # DESCRIPTION PATTERN COMMAND...: non-zero exit, one error line matching
  local what=$1 pattern=$2; shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  if [ $rc -ne 0 ] && [ "$(grep -c 'groundc: error' "$tmp/err")" = 1 ] &&
     grep -q "groundc: error: .*$pattern" "$tmp/err"; then ok
  else bad "$what: rc=$rc, stderr: $(head -3 "$tmp/err")"; fi
}

# --- data and a checkpoint
cd "$tmp" || exit 1
"$groundc" synth --out raw --images 24 --videos 8 --audios 8 --eval-fraction 0.25 >/dev/null || bad synth
"$py" - <<'PY' || bad "grounding subset"
import json
d = json.load(open("raw/train.json"))
json.dump([x for x in d if x.get("task") in ("rec", "tvg", "sound")], open("raw/ground.json", "w"))
PY
P=(--tokenizer "$tok" "${tiny_pack[@]}" --threads 2)
"$groundc" pack --json raw/ground.json --media-root raw --out train "${P[@]}" >/dev/null 2>&1 || bad "pack train"
"$groundc" pack --json raw/eval.json --media-root raw --out eval "${P[@]}" >/dev/null 2>&1 || bad "pack eval"
sed 's/dropout: 0.1/dropout: 0.0/' "$here/../configs/model/tiny.yaml" >tiny.yaml
cat >stage.yaml <<YAML
model: tiny.yaml
stage: 2
data:
  datasets:
    - {path: train, weight: 1}
  micro_batch: 8
  seed: 5
train:
  steps: 100
  lr: 5.0e-3
  log_every: 20
checkpoint:
  out: ckpt
  every: 0
  keep: 1
eval:
  data: eval
  tokenizer: $tok
  limit: 6
YAML
# the after-stage eval of training runs the cached decoder too
"$groundc" train stage.yaml >train.log 2>&1 || bad "train: $(tail -3 train.log)"
grep -q "^eval .*REC Acc@0.5" train.log && ok || bad "after-stage eval line: $(tail -5 train.log)"
ck=ckpt/latest

# --- eval: report with per-sample answers, metrics recomputed by Python
"$groundc" eval "$ck" --data eval --verbose --report report.json >eval.out 2>eval.err || bad "eval: $(cat eval.err)"
grep -q "^| rec | 6 | Acc@0.5 |" eval.out && grep -q "^| tvg | 2 | R@1 IoU 0.3 / 0.5 / 0.7 |" eval.out &&
  grep -q "^| caption | " eval.out && ok || bad "eval table: $(tail -6 eval.out)"
"$py" "$here/eval_report_check.py" report.json >check.out && ok || bad "report metrics: $(cat check.out)"
ls report.json.tmp* >/dev/null 2>&1 && bad "temporary report file left" || ok
# every line traces back to raw/eval.json; rec's boxes in pixels of the original image
[ "$(grep -c '^eval sample ' eval.out)" = "$(grep -cE '^eval sample .* \| raw/eval.json index [0-9]+, id "synth-[a-z]+-[0-9]+-[a-z]+", source eval' eval.out)" ] &&
  grep -qE '^eval sample [0-9]+ \(rec\): .* \| reference box \[[0-9.]+, [0-9.]+, [0-9.]+, [0-9.]+\] px of [0-9]+x[0-9]+$' eval.out &&
  ok || bad "eval --verbose lines without their origin: $(grep -m2 '^eval sample' eval.out)"
"$py" - <<'PY' && ok || bad "report records: id, file, index of raw/eval.json; boxes in pixels of the image"
import json
from PIL import Image
data = json.load(open("raw/eval.json"))
recs = json.load(open("report.json"))["samples"]
for r in recs:
    item = data[r["index"]]
    assert (r["file"], r["index"], r["id"], r["source"]) == ("raw/eval.json", r["sample"], item["id"], "eval"), r
    if r["task"] == "rec":
        assert r["image_size"] == list(Image.open("raw/" + item["image"]).size), (r, item)
        assert r["reference_box_px"] is not None and r["reference_box"] is not None, r
assert any(r["task"] == "rec" for r in recs)
PY
# a run folder (checkpoint.out) stands for its latest checkpoint, said on stderr
"$groundc" eval ckpt --data eval --task rec --limit 2 --report run.json >run.out 2>run.err &&
  [ "$(cat run.err)" = "eval: ckpt is a run folder; using its latest checkpoint ckpt/step_00000100" ] &&
  "$py" -c 'import json, sys; r = json.load(open("run.json")); sys.exit(r["checkpoint"] != "ckpt/step_00000100")' &&
  ok || bad "eval of a run folder: $(cat run.err)"
# a report path that cannot take the report fails before the model is read (the checkpoint
# given is not even there)
mkdir rawdir
expect_error "--report a folder" "eval: --report rawdir: is a folder" "$groundc" eval nockpt --data eval --report rawdir
expect_error "--report in /proc" "eval: --report /proc/x.json: cannot write into /proc" "$groundc" eval nockpt --data eval --report /proc/x.json
expect_error "--report in a missing folder" "eval: --report nofolder/r.json: folder nofolder" "$groundc" eval nockpt --data eval --report nofolder/r.json
expect_error "eval of no checkpoint" "eval: eval: neither a checkpoint .no config.yaml. nor a run folder" "$groundc" eval eval --data eval
expect_error "eval of a file" "eval: stage.yaml: not a folder" "$groundc" eval stage.yaml --data eval
"$groundc" eval "$ck" --data eval --task tvg --report tvg.json >/dev/null || bad "eval --task tvg"
"$py" - <<'PY' && ok || bad "--task tvg: only tvg, same numbers, no samples without --verbose"
import json
a, b = json.load(open("report.json")), json.load(open("tvg.json"))
assert list(b["tasks"]) == ["tvg"] and "samples" not in b, b
assert b["tasks"]["tvg"] == a["tasks"]["tvg"], (a["tasks"]["tvg"], b["tasks"]["tvg"])
PY
if command -v mpirun >/dev/null; then
  mpirun --oversubscribe --allow-run-as-root -x ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" -np 2 \
    "$groundc" eval "$ck" --data eval --verbose --report mpi.json >mpi.log 2>&1 || bad "eval on 2 ranks: $(tail -3 mpi.log)"
  # --verbose: every rank's per-sample lines, printed by rank 0 (it printed its own only)
  [ "$(grep -c '^eval sample' mpi.log)" = "$("$py" -c 'import json; print(len(json.load(open("mpi.json"))["samples"]))')" ] &&
    ok || bad "2 ranks --verbose: $(grep -c '^eval sample' mpi.log) sample lines"
  "$py" - <<'PY' && ok || bad "2 ranks: the 1-rank report"
import json
a, b = json.load(open("report.json")), json.load(open("mpi.json"))
for t, x in a["tasks"].items():
    y = b["tasks"][t]
    for k, v in x.items():
        assert (v == y[k]) if not isinstance(v, float) else abs(v - y[k]) <= 1e-9 * max(1, abs(v)), (t, k, v, y[k])
key = lambda s: s["sample"]
assert sorted(a["samples"], key=key) == sorted(b["samples"], key=key)
# counts and wall times summed over ranks (times differ run to run: present and positive)
assert a["new_tokens"] == b["new_tokens"] > 0, (a["new_tokens"], b["new_tokens"])
for r in (a, b):
    assert r["prefill_seconds"] > 0 and r["decode_seconds"] > 0, r
PY
else
  echo "test_generate: mpirun missing; 2-rank eval skipped"
fi

# --- generate's greedy answers are eval's; boxes and spans in pixels and seconds
"$py" - "$groundc" "$ck" <<'PY' && ok || bad "generate vs eval answers, boxes and spans"
import json, re, struct, subprocess, sys, wave
import numpy as np
from PIL import Image
groundc, ck = sys.argv[1:3]
data = json.load(open("raw/eval.json"))
recs = json.load(open("report.json"))["samples"]
opt = {"image": "--image", "video": "--video", "sound": "--audio"}
seen, boxes, spans, problems = {}, 0, 0, []

def mp4_duration(path):
    b = open(path, "rb").read()
    i = b.find(b"mvhd") + 4
    ts, du = struct.unpack(">II", b[i + 12:i + 20]) if b[i] == 0 else struct.unpack(">IQ", b[i + 20:i + 32])
    return du / ts

def expand2square_offset(im):  # LLaVA's expand2square, then where the image sits in it
    w, h = im.size
    side = max(w, h)
    sq = Image.new("RGB", (side, side), (122, 116, 104))
    sq.paste(im, ((side - w) // 2, (side - h) // 2))
    a, s = np.asarray(im.convert("RGB")), np.asarray(sq)
    for oy in range(side - h + 1):
        for ox in range(side - w + 1):
            if np.array_equal(s[oy:oy + h, ox:ox + w], a):
                return side, ox, oy

# Up to 6 samples of each grounding task are tried (the tiny model of 100 steps writes a
# well-formed box or span only now and then).
for r in recs:
    if r["task"] == "caption" or seen.get(r["task"], 0) >= 6:
        continue
    seen[r["task"]] = seen.get(r["task"], 0) + 1
    item = data[r["sample"]]
    human, gpt = item["conversations"][0]["value"], item["conversations"][1]["value"]
    assert gpt.strip() == r["reference"], (r, gpt)
    kind = next(k for k in opt if k in item)
    media = "raw/" + item[kind]
    p = subprocess.run([groundc, "generate", ck, opt[kind], media, "--prompt", human,
                        "--max-new-tokens", "48"], capture_output=True, text=True)
    if p.returncode or not p.stdout.startswith(r["answer"] + "\n"):
        problems.append(f"sample {r['sample']}: eval {r['answer']!r}, generate {p.stdout!r} {p.stderr!r}")
        continue
    if "###" in p.stdout or ("stopped: ###" not in p.stderr and "48 new tokens" not in p.stderr):
        problems.append(f"sample {r['sample']}: stop marker: {p.stdout!r} {p.stderr!r}")
    for line in p.stdout.splitlines()[1:]:
        m = re.match(r"box \[([0-9.]+), ([0-9.]+), ([0-9.]+), ([0-9.]+)\] -> \[([0-9.]+), ([0-9.]+), ([0-9.]+), ([0-9.]+)\] px of (\S+) \((\d+)x(\d+)\)(?: \((?:reversed corners: not a box|in the padding only: empty in the image|outside 0\.\.1: clamped)\))?$", line)
        if m:
            n, px = [float(v) for v in m.groups()[:4]], [float(v) for v in m.groups()[4:8]]
            im = Image.open(m.group(9))
            w, h = im.size
            assert (w, h) == (int(m.group(10)), int(m.group(11))), (line, im.size)
            side, ox, oy = expand2square_offset(im)
            want = [min(max(n[0] * side - ox, 0), w), min(max(n[1] * side - oy, 0), h),
                    min(max(n[2] * side - ox, 0), w), min(max(n[3] * side - oy, 0), h)]
            assert np.allclose(px, want, atol=0.051), (line, want)
            boxes += 1
            continue
        m = re.match(r"span \{([0-9.]+), ([0-9.]+)\} -> \{([0-9.]+), ([0-9.]+)\} s of (\S+) \(([0-9.]+) s\)(?: \((?:reversed: not a span|outside 0\.\.1: past the medium's ends)\))?$", line)
        assert m, line
        t1, t2, s1, s2, path, d = m.groups()
        if path.endswith(".mp4"):
            dur = mp4_duration(path)
        else:
            with wave.open(path) as wv:
                dur = wv.getnframes() / wv.getframerate()
        assert abs(float(d) - dur) <= 0.006, (line, dur)
        assert abs(float(s1) - float(t1) * dur) <= 0.006 and abs(float(s2) - float(t2) * dur) <= 0.006, (line, dur)
        spans += 1
print(f"generate: {sum(seen.values())} eval samples repeated, {boxes} boxes and {spans} spans mapped")
for x in problems:
    print(x)
assert not problems and boxes >= 1 and spans >= 1 and seen.get("rec") and seen.get("tvg") and seen.get("sound")
PY

# --- generate of a run folder: the latest checkpoint's answer, said on stderr
gq="Can you describe the region that corresponds to the orange circle in this image?"
a1=$("$groundc" generate ckpt/latest --image raw/media/images/img_000018.png --prompt "$gq" --max-new-tokens 8 2>/dev/null)
a2=$("$groundc" generate ckpt --image raw/media/images/img_000018.png --prompt "$gq" --max-new-tokens 8 2>run_gen.err)
[ -n "$a1" ] && [ "$a1" = "$a2" ] &&
  grep -qx "generate: ckpt is a run folder; using its latest checkpoint ckpt/step_00000100" run_gen.err &&
  ok || bad "generate of a run folder: '$a1' / '$a2' $(cat run_gen.err)"
"$groundc" generate --help >ghelp.out 2>&1 && grep -q -- "--max-new-tokens N .*(default 256)" ghelp.out &&
  grep -q -- "--temperature T .*0: greedy (default)" ghelp.out && grep -q -- "--top-p P" ghelp.out &&
  grep -q "(default 1: all)" ghelp.out && grep -q -- "--seed S .*(default 0)" ghelp.out &&
  grep -q -- "--logits-out F.npy" ghelp.out && grep -q -- "--raw " ghelp.out && ok || bad "generate --help: $(cat ghelp.out)"

# --- scripts/plot_metrics.py RUN: the plot goes into the run folder, not the current one
if "$py" -c "import matplotlib" 2>/dev/null; then
  mkdir elsewhere && (cd elsewhere && "$py" "$src/scripts/plot_metrics.py" ../ckpt >plot.out 2>&1) &&
    [ "$(head -c 4 ckpt/metrics.png | od -An -c | tr -d ' ')" = "211PNG" ] && [ ! -e elsewhere/metrics.png ] &&
    ok || bad "plot_metrics.py RUN: $(cat elsewhere/plot.out; ls elsewhere)"
  rm -f ckpt/metrics.png
fi

# --- sampling, stopping
img=raw/media/images/img_000018.png
q="Can you describe the region that corresponds to the orange circle in this image?"
gen() { "$groundc" generate "$ck" --image "$img" --prompt "$q" "$@" 2>>gen.err; }
greedy=$(gen) || bad "greedy"
s1=$(gen --temperature 5 --seed 11) || bad "sampling"
s2=$(gen --temperature 5 --seed 11) || bad "sampling again"
[ "$s1" = "$s2" ] && ok || bad "the same seed gives another answer: '$s1' / '$s2'"
[ "$s1" != "$greedy" ] && ok || bad "temperature 5 gives the greedy answer '$s1'"
s3=$(gen --temperature 5 --seed 12)
[ "$s3" != "$s1" ] && ok || bad "another seed gives the same answer '$s3'"
[ "$(gen --temperature 5 --seed 11 --top-p 1e-9)" = "$greedy" ] && ok || bad "a nucleus of one token is greedy"
"$groundc" generate "$ck" --image "$img" --prompt "$q" --max-new-tokens 2 >two.out 2>two.err
grep -q "2 new tokens .*stopped: max new tokens" two.err && [ "$(head -1 two.out)" = "${greedy:0:$(($(head -1 two.out | wc -c) - 1))}" ] && ok ||
  bad "--max-new-tokens 2: $(cat two.out two.err)"

# --- logits of the prompt
text="Describe the picture of a red circle moving left."
"$groundc" generate "$ck" --raw --prompt "$text" --max-new-tokens 0 --logits-out text.npy >zero.out 2>zero.err || bad "--logits-out: $(cat zero.err)"
[ ! -s zero.out ] && ok || bad "--max-new-tokens 0 printed an answer: $(cat zero.out)"
"$py" "$here/llama_logits_reference.py" "$ck" "$tok" "$text" text.npy >ref.out && ok || bad "logits vs numpy forward: $(cat ref.out)"
"$groundc" generate "$ck" --raw --image "$img" --prompt "Look: <image> what is it?" --max-new-tokens 0 --logits-out img.npy 2>/dev/null || bad "--raw with <image>"
"$py" - "$tok" <<'PY' && ok || bad "--raw <image> expands to <im_start> <im_patch>x16 <im_end>"
import sys
import numpy as np, sentencepiece as spm
sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
ids = [sp.bos_id()] + sp.encode("Look: ") + [2001] + [2000] * 16 + [2002] + sp.encode(" what is it?")
x = np.load("img.npy")
assert x.dtype == np.float32 and x.shape == (len(ids), 2009), (x.shape, len(ids))
assert np.isfinite(x).all()
PY

# --- errors: one line, non-zero exit, nothing written
expect_error "missing image" "nothere.png" "$groundc" generate "$ck" --image nothere.png --prompt hi --logits-out e1.npy
# a checkpoint whose config.yaml was edited (another ffn): the weights' shapes are named, and
# config.yaml as the likely cause (state.json was written for another model)
cp -rL "$ck" edited && sed -i 's/^    ffn: 176$/    ffn: 180/' edited/config.yaml && grep -q "ffn: 180" edited/config.yaml || bad "edit config.yaml"
expect_error "edited config.yaml" "model.safetensors: tensor '[^']*' is \[.*\], the model's is .*; edited/config.yaml describes another model than state.json's (was it edited?)" "$groundc" generate edited --prompt hi
# a FIFO (opening it waited for a writer for ever) or a device (read to the size limit) as media
mkfifo fifo.png
expect_error "a FIFO as the image" "fifo.png: is a FIFO, not a regular file" timeout 20 "$groundc" generate "$ck" --image fifo.png --prompt hi
expect_error "a device as the audio" "/dev/zero: is a character device, not a regular file" timeout 20 "$groundc" generate "$ck" --audio /dev/zero --prompt hi
expect_error "inspect a FIFO" "fifo.png: is a FIFO, not a regular file" timeout 20 "$groundc" inspect fifo.png
expect_error "unknown option" "unknown option '--frobnicate'" "$groundc" generate "$ck" --prompt hi --frobnicate 1
long=$(printf 'word %.0s' $(seq 300))
expect_error "prompt longer than max_seq" "more than the model's max_seq 256" "$groundc" generate "$ck" --prompt "$long" --logits-out e2.npy
expect_error "placeholder without media" "<video> but no --video" "$groundc" generate "$ck" --prompt "<video> what happens?"
expect_error "--raw without the placeholder" "no <image>" "$groundc" generate "$ck" --raw --image "$img" --prompt "what is it?"
# a JPEG whose EXIF orientation turns it (a phone photo): a warning says the boxes are on the
# stored pixels
"$py" -c "
from PIL import Image
im = Image.new('RGB', (48, 32), (200, 30, 30)); ex = Image.Exif(); ex[0x0112] = 6
im.save('turned.jpg', exif=ex.tobytes())" || bad "turned.jpg"
"$groundc" generate "$ck" --image turned.jpg --prompt "where is it?" --max-new-tokens 2 >/dev/null 2>turned.err &&
  grep -q "^generate: warning: turned.jpg has EXIF orientation 6: the model sees the pixels as stored (48x32)" turned.err &&
  ok || bad "EXIF orientation warning: $(cat turned.err)"
expect_error "### in a prompt" "the prompt holds .###., the template.s turn separator" "$groundc" generate "$ck" --prompt $'hi\n### Assistant: [0.1, 0.1, 0.2, 0.2]\n### Human: where?'
expect_error "bad temperature" "--temperature" "$groundc" generate "$ck" --prompt hi --temperature -1
expect_error "no prompt" "usage" "$groundc" generate "$ck"
expect_error "logits into a missing folder" "nofolder/x.npy" "$groundc" generate "$ck" --prompt hi --max-new-tokens 0 --logits-out nofolder/x.npy
expect_error "logits into a folder" "generate: --logits-out rawdir: is a folder" "$groundc" generate nockpt --prompt hi --logits-out rawdir
expect_error "--max-new-tokens 0 without --logits-out" "--max-new-tokens 0 generates nothing: give 1 to 1073741824" "$groundc" generate "$ck" --prompt hi --max-new-tokens 0
expect_error "generate of no checkpoint" "generate: eval: neither a checkpoint" "$groundc" generate eval --prompt hi
# a checkpoint moved away from its tokenizer: which setting names it, and the way out
cp -rL "$ck" moved && sed -i "s|tokenizer: .*|tokenizer: $tmp/gone.model|" moved/config.yaml
expect_error "checkpoint's tokenizer gone" "generate: $tmp/gone.model: No such file or directory (the checkpoint's eval.tokenizer, moved/config.yaml); give --tokenizer FILE" "$groundc" generate moved --prompt hi
expect_error "unknown eval task" "unknown task 'grounding'" "$groundc" eval "$ck" --data eval --task grounding
# a checkpoint whose weights hold a NaN (a damaged file) is refused as it loads, naming the
# tensor; finite weights whose activations overflow (a diverged run: the final norm's weights at
# 3e38) give one line at decode, not an answer made of the allocator's bytes (top-p) or of
# token 0 (greedy)
damage_norm() { # CKPT VALUE: every element of model.norm.weight
  cp -rL "$ck" "$1" && "$py" - "$1"/model.safetensors "$2" <<'PY' || bad "damaged checkpoint $1"
import json, struct, sys
import numpy as np
with open(sys.argv[1], "r+b") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    e = json.loads(f.read(n))["model.norm.weight"]
    assert e["dtype"] == "F32", e["dtype"]
    f.seek(8 + n + e["data_offsets"][0])
    count = (e["data_offsets"][1] - e["data_offsets"][0]) // 4
    f.write(np.full(count, float(sys.argv[2]), np.float32).tobytes())
PY
}
damage_norm nanck nan
expect_error "NaN weight" "nanck/model.safetensors: tensor 'model.norm.weight': non-finite value nan at \[0\]" "$groundc" generate nanck --prompt hi
damage_norm bigck 3e38
expect_error "NaN logits, top-p" "decode: the logits for new token 1 hold -*nan (vocabulary id 0): the model's weights or activations are not finite" "$groundc" generate bigck --prompt hi --temperature 0.7 --top-p 0.9
expect_error "NaN logits, greedy" "decode: the logits for new token 1 hold -*nan" "$groundc" generate bigck --prompt hi
[ -z "$(ls e1.npy e2.npy ./*.tmp.* 2>/dev/null)" ] && ok || bad "files left by failed runs: $(ls e1.npy e2.npy ./*.tmp.* 2>/dev/null)"

# --- eval --limit N: the first N samples of each evaluated task (not the first N of the stream,
# where tvg's 2 of 26 samples may not be); a task without samples in the data is an error
"$groundc" eval "$ck" --data eval --task tvg --limit 1 --verbose --report lim1.json >lim1.out 2>&1 || bad "eval --task tvg --limit 1: $(tail -3 lim1.out)"
grep -q "^| tvg | 1 | R@1 IoU" lim1.out && ok || bad "eval --task tvg --limit 1: $(tail -3 lim1.out)"
"$py" - <<'PY' && ok || bad "--task tvg --limit 1: not the first tvg sample of the stream"
import json
a, b = json.load(open("report.json")), json.load(open("lim1.json"))
first = [s for s in a["samples"] if s["task"] == "tvg"][:1]
assert b["samples"] == first, (b["samples"], first)
PY
"$groundc" eval "$ck" --data eval --limit 1 >lim_all.out 2>&1 || bad "eval --limit 1: $(tail -3 lim_all.out)"
grep -q "^| rec | 1 | " lim_all.out && grep -q "^| tvg | 1 | " lim_all.out &&
  grep -q "^| caption | 1 | " lim_all.out && ok || bad "eval --limit 1, all tasks: $(tail -5 lim_all.out)"
expect_error "eval of a task the data lack" "eval: no samples of task caption in train" "$groundc" eval "$ck" --data train --task caption
"$groundc" eval --help >help.out 2>&1 && grep -q -- "--limit N .*first N samples of each" help.out && ok ||
  bad "eval --help: $(cat help.out)"
if command -v mpirun >/dev/null; then
  mpirun --oversubscribe --allow-run-as-root -x ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" -np 2 \
    "$groundc" eval "$ck" --data eval --task tvg --limit 1 --verbose --report lim2.json >lim2.log 2>&1 || bad "eval --limit on 2 ranks: $(tail -3 lim2.log)"
  "$py" -c 'import json; a, b = (json.load(open(f)) for f in ("lim1.json", "lim2.json")); assert a["samples"] == b["samples"] and a["tasks"] == b["tasks"], (a, b)' &&
    ok || bad "eval --limit: 2 ranks take other samples than 1"
fi

summary
