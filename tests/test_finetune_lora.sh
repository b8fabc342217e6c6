#!/usr/bin/env bash
# test_finetune_lora.sh GROUNDC BUILD_DIR: the README's LoRA fine-tune (config `lora:`) end to
# end on synthetic custom data (tiny model): custom grounding JSONL -> groundc pack -> a
# stage-3 checkpoint -> groundc train with lora -> resume -> export hf -> generate. Checks,
# reading the safetensors with numpy (no groundc code):
#   - the loss goes down;
#   - every base LLM weight of the fine-tuned checkpoint is bit-identical to the stage-3
#     checkpoint's (frozen: LoRA trains only the adapters), while the adapters and the stage's
#     non-LLM parts moved; lora_A / lora_B exist for every layer and targeted linear, B != 0;
#   - a run killed after step 4 and resumed ends bit-identical to the uninterrupted run;
#   - `groundc export --format hf` writes merged weights: W + (alpha / r) B A computed here from
#     the checkpoint (within 1e-6 of the tensor's largest value), no lora tensor, and the
#     linears that were not targeted equal to the base; `--format gguf` (f32) the same;
#   - a model without lora: initialised from the LoRA checkpoint holds the same merged weights
#     (folded on import), and so does a LoRA run of another rank, whose own adapters start
#     fresh; without the checkpoint's config.yaml (alpha) that is refused;
#   - generate runs on the checkpoint.
set -u
. "$(dirname "$0")/lib.sh" "$@"
need_python numpy PIL yaml
cd "$tmp" || exit 1
tok=$here/fixtures/tokenizer/test_bpe.model

# --- a stage-3 checkpoint of the tiny model (a few steps on synthetic data)
tiny_shards --images 40 --videos 4 --audios 4 --max-shapes 1
P=(--tokenizer "$tok" "${tiny_pack[@]}" --threads 1)
tiny_stage3 3

# --- custom data: the synthetic REC samples as grounding JSONL (boxes [x, y, w, h] in pixels)
$py - <<'PY' || bad "writing the custom JSONL"
import json, re
from PIL import Image
with open("mine.jsonl", "w") as out:
    for s in json.load(open("raw/train.json")):
        if s.get("task") != "rec":
            continue
        q = s["conversations"][0]["value"].replace("<image>\n", "")
        x1, y1, x2, y2 = map(float, re.findall(r"[0-9.]+", s["conversations"][1]["value"]))
        w, h = Image.open("raw/" + s["image"]).size
        side = max(w, h)
        ox, oy = (side - w) // 2, (side - h) // 2
        box = [x1 * side - ox, y1 * side - oy, (x2 - x1) * side, (y2 - y1) * side]
        out.write(json.dumps({"image": s["image"], "expression": q, "bbox": box}) + "\n")
PY
"$groundc" pack --grounding-jsonl mine.jsonl --media-root raw --out mine "${P[@]}" >pack.log 2>&1 &&
  ok || bad "pack custom: $(tail -3 pack.log)"

# --- the LoRA fine-tune: rank 4, alpha 8 (scale 2), every linear but v_proj and up_proj, so
# that the export check also sees linears without an adapter
write_config() { # OUT_DIR
  cat <<YAML
model: tiny.yaml
init:
  checkpoint: $tmp/stage3/latest
stage: 3
lora:
  rank: 4
  alpha: 8
  dropout: 0.05
  targets: [q_proj, k_proj, o_proj, gate_proj, down_proj]
data:
  datasets:
    - {path: mine, weight: 1}
  micro_batch: 4
  seed: 3
train:
  steps: 8
  lr: 1.0e-2
  warmup_ratio: 0
  log_every: 1
eval:
  data: mine
  tokenizer: $tok
  limit: 4
checkpoint:
  out: $1
  every: 2
YAML
}
write_config "$tmp/ft" >ft.yaml
"$groundc" train ft.yaml >ft.log 2>&1 || bad "LoRA fine-tune: $(tail -3 ft.log)"
[ "$(readlink ft/latest)" = step_00000008 ] && ok || bad "fine-tune: latest $(readlink ft/latest)"
grep -q "init checkpoint: .* from $tmp/stage3/" ft.log && ok || bad "did not start from stage 3"
# the after-stage eval's scores are kept in the checkpoint (eval.json): run again, the complete
# stage takes them from there (same line, no weights loaded); other eval limits evaluate again
"$groundc" train ft.yaml --resume auto >ft_again.log 2>&1 || bad "LoRA fine-tune again: $(tail -3 ft_again.log)"
first=$(grep "^eval .*: REC Acc@0.5" ft.log)
grep -q "stage already complete" ft_again.log && [ -n "$first" ] &&
  grep -qF "$first (from $tmp/ft/step_00000008/eval.json)" ft_again.log && ok ||
  bad "eval scores from eval.json: '$first' vs $(grep '^eval' ft_again.log)"
"$groundc" train ft.yaml --resume auto --set eval.limit=3 >ft_again.log 2>&1 || bad "LoRA fine-tune again, limit 3: $(tail -3 ft_again.log)"
grep -q "^eval .*: REC Acc@0.5" ft_again.log && ! grep -q "eval.json" ft_again.log && ok ||
  bad "another eval limit took the kept scores: $(grep '^eval' ft_again.log)"

# Loss goes down: the mean of the last 3 logged steps under the first 3's.
$py - <<'PY' && ok || bad "LoRA fine-tune loss did not go down: $(cat ft/metrics.jsonl)"
import json
loss = [json.loads(l)["loss"] for l in open("ft/metrics.jsonl") if '"loss"' in l]
assert len(loss) == 8, loss
first, last = sum(loss[:3]) / 3, sum(loss[-3:]) / 3
print(f"LoRA fine-tune loss {first:.4f} -> {last:.4f}")
assert last < first - 0.05, (first, last)
PY

# Base LLM weights bit-identical to the stage-3 checkpoint (st_compare.py, numpy).
for pat in 'model.layers.*_proj.weight' 'model.layers.*norm.weight' 'model.embed_tokens.weight' \
  'model.norm.weight' 'lm_head.weight' 'model.vision_tower.*'; do
  $py "$here/st_compare.py" --only "$pat" --rtol 0 --atol 0 \
    stage3/latest/model.safetensors ft/latest/model.safetensors >cmp.log 2>&1 &&
    ok || bad "frozen $pat changed: $(tail -2 cmp.log)"
done
# What stage 3 trains outside the LLM (the projector) still trains.
if $py "$here/st_compare.py" --only 'model.mm_vision_projector.*' --rtol 0 --atol 0 \
  stage3/latest/model.safetensors ft/latest/model.safetensors >/dev/null 2>&1; then
  bad "the projector did not train"
else ok; fi

# For the remaining checks: tests/st_read.py's independent safetensors reader (numpy only, f64
# arrays) and the linears LoRA targets.
cat >st.py <<PY
import sys
sys.path.insert(0, "$here")
from st_read import read  # noqa: E402
TARGETS = {"q_proj": "self_attn", "k_proj": "self_attn", "o_proj": "self_attn",
           "gate_proj": "mlp", "down_proj": "mlp"}
OTHERS = {"v_proj": "self_attn", "up_proj": "mlp"}


def merged(ck):
    """(name, t, W + (alpha/r) B A for a targeted linear, else W) for every linear of ck."""
    for l in sorted({int(k.split(".")[2]) for k in ck if k.startswith("model.layers.")}):
        for t, part in {**TARGETS, **OTHERS}.items():
            base = f"model.layers.{l}.{part}.{t}"
            ref = ck[base + ".weight"]
            if t in TARGETS:
                ref = ref + (8 / 4) * ck[base + ".lora_B.weight"] @ ck[base + ".lora_A.weight"]
            yield base, t, ref


def check_merged(ck, got, what):
    """Every linear of got (a name -> array function) equals merged(ck) to 1e-6 relative."""
    worst, n = 0.0, 0
    for base, t, ref in merged(ck):
        err = abs(got(base + ".weight") - ref).max() / abs(ref).max()
        worst, n = max(worst, err), n + 1
        assert err <= 1e-6, (base, err)
    print(f"{what}: {n} linears equal W + 2 B A (or W), worst relative error {worst:.2e}")
PY

# Adapters: every targeted linear of every layer has A (4, in) and B (out, 4); B moved off 0;
# no adapter on v_proj / up_proj.
$py - <<'PY' && ok || bad "LoRA tensors in the checkpoint"
from st import *
ck = read("ft/latest/model.safetensors")
layers = sorted({int(k.split(".")[2]) for k in ck if k.startswith("model.layers.")})
assert layers, "no layers"
n = 0
for l in layers:
    for t, part in TARGETS.items():
        base = f"model.layers.{l}.{part}.{t}"
        W, A, B = ck[base + ".weight"], ck[base + ".lora_A.weight"], ck[base + ".lora_B.weight"]
        assert A.shape == (4, W.shape[1]) and B.shape == (W.shape[0], 4), (base, A.shape, B.shape)
        assert abs(B).max() > 0, base + ": B is still zero"
        n += 2
    for t, part in OTHERS.items():
        assert not any(k.startswith(f"model.layers.{l}.{part}.{t}.lora") for k in ck), t
assert sum(".lora_" in k for k in ck) == n, "unexpected lora tensors"
print(f"{n} LoRA tensors, B nonzero")
PY

# --- resume: killed right after step 5 (the last checkpoint is step 4), resumed, the same end
write_config "$tmp/ft2" >ft2.yaml
(GROUNDC_TEST_KILL_AT_STEP=5 "$groundc" train ft2.yaml >ft2.log 2>&1; :) 2>/dev/null # no "Killed"
[ "$(readlink ft2/latest)" = step_00000004 ] && ok || bad "killed run: latest $(readlink ft2/latest)"
# LoRA's alpha scales what the adapters add: a resume with another is another model
for flag in --dry-run ""; do
  expect_error "resume with another LoRA alpha $flag" "ft2/step_00000004: written for another model config \(lora.alpha 8 -> 16\)" \
    "$groundc" train ft2.yaml --resume auto --set lora.alpha=16 $flag
done
"$groundc" train ft2.yaml --resume auto >ft2r.log 2>&1 || bad "resume: $(tail -3 ft2r.log)"
grep -q "resumed from" ft2r.log && ok || bad "the second run did not resume"
$py "$here/st_compare.py" --rtol 0 --atol 0 ft/latest/model.safetensors \
  ft2/latest/model.safetensors >cmp.log 2>&1 && ok ||
  bad "resumed LoRA run differs from the uninterrupted one: $(tail -2 cmp.log)"

# --- export: merged weights
"$groundc" export ft/latest --format hf --out hf >exp.log 2>&1 && ok || bad "export hf: $(tail -2 exp.log)"
$py - <<'PY' && ok || bad "exported weights are not W + (alpha/r) B A"
import glob
from st import *
ck = read("ft/latest/model.safetensors")
ex = {}
for f in sorted(glob.glob("hf/*.safetensors")):
    ex.update(read(f))
assert not any("lora" in k for k in ex), "lora tensors in the export"
def exported(name):  # checkpoint name -> the export's (LLaVA nests the LLM)
    for k in (name.replace("model.", "model.language_model.", 1), name):
        if k in ex:
            return ex[k]
    raise KeyError(name)
for base, t, ref in merged(ck):
    if t in TARGETS:
        assert abs(ref - ck[base + ".weight"]).max() > 1e-6, base + ": the update is negligible"
check_merged(ck, exported, "export")
PY

# GGUF (f32): the same merged weights, read back through gguf_read.py's inverse transforms
# (attn_q / attn_k un-permuted).
"$groundc" export ft/latest --format gguf --dtype f32 --out gguf >exp.log 2>&1 && ok ||
  bad "export gguf: $(tail -2 exp.log)"
PYTHONPATH="$here" $py - <<'PY' && ok || bad "GGUF weights are not W + (alpha/r) B A"
import yaml
from gguf_read import to_checkpoint
from st import *
ck = read("ft/latest/model.safetensors")
cfg = yaml.safe_load(open("ft/latest/config.yaml"))["model"]
ex = to_checkpoint("gguf", cfg)
check_merged(ck, lambda k: ex[k], "gguf")
PY

# --- a plain model (no lora:) started from the LoRA checkpoint: init folds the adapters into
# the base weights (alpha / r from the checkpoint's config.yaml). lr 0 keeps the step's
# weights at the init.
write_config "$tmp/plain" | sed -e '/^lora:/,/^  targets:/d' -e 's|lr: 1.0e-2|lr: 0|' \
  -e 's|steps: 8|steps: 1|' -e "s|checkpoint: $tmp/stage3/latest|checkpoint: $tmp/ft/latest|" \
  >plain.yaml
grep -q lora plain.yaml && bad "plain.yaml still has lora: $(cat plain.yaml)"
"$groundc" train plain.yaml >plain.log 2>&1 && ok || bad "plain from LoRA: $(tail -3 plain.log)"
$py - <<'PY' && ok || bad "init from a LoRA checkpoint did not fold W + (alpha/r) B A"
from st import *
ck, got = read("ft/latest/model.safetensors"), read("plain/latest/model.safetensors")
assert not any("lora" in k for k in got), "lora tensors in the plain model"
check_merged(ck, lambda k: got[k], "init from LoRA")
PY
# ... and a LoRA run of another rank and targets started from it: the checkpoint's adapters
# are folded the same way, the new ones (rank 2 on q_proj, v_proj) start fresh (B = 0 at lr 0)
write_config "$tmp/r2" | sed -e 's|rank: 4|rank: 2|' -e 's|alpha: 8|alpha: 4|' \
  -e 's|targets: .*|targets: [q_proj, v_proj]|' -e 's|lr: 1.0e-2|lr: 0|' -e 's|steps: 8|steps: 1|' \
  -e "s|checkpoint: $tmp/stage3/latest|checkpoint: $tmp/ft/latest|" >r2.yaml
"$groundc" train r2.yaml >r2.log 2>&1 && ok || bad "rank 2 from rank 4: $(tail -3 r2.log)"
$py - <<'PY' && ok || bad "rank-2 run from the rank-4 checkpoint: not W + (alpha/r) B A, or adapters not fresh"
from st import *
ck, got = read("ft/latest/model.safetensors"), read("r2/latest/model.safetensors")
check_merged(ck, lambda k: got[k], "rank 2 from rank 4")
for base, t, _ in merged(ck):
    fresh = t in ("q_proj", "v_proj")
    assert (base + ".lora_A.weight" in got) == fresh, base
    if fresh:
        assert got[base + ".lora_A.weight"].shape[0] == 2, base
        assert not got[base + ".lora_B.weight"].any(), base + ": B is not fresh"
print("rank 2 from rank 4: fresh adapters on q_proj and v_proj")
PY
# ... and a checkpoint with adapters but no config.yaml to give alpha is refused
mkdir -p noconf && cp ft/latest/model.safetensors noconf/
sed "s|checkpoint: $tmp/ft/latest|checkpoint: $tmp/noconf|; s|out: $tmp/plain|out: $tmp/plain2|" \
  plain.yaml >plain2.yaml
"$groundc" train plain2.yaml >plain2.log 2>&1 && bad "adapters without alpha were accepted"
grep -q "noconf.*LoRA adapters.*no config.yaml" plain2.log && ok ||
  bad "no config.yaml: $(tail -2 plain2.log)"

# --- generate on the LoRA checkpoint
img=$(ls raw/media/images | head -1)
"$groundc" generate ft/latest --image "raw/media/images/$img" --prompt "Where is the object?" \
  >gen.log 2>&1 && [ -s gen.log ] && ok || bad "generate: $(tail -3 gen.log)"

summary
