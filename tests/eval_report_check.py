#!/usr/bin/env python3
"""eval_report_check.py REPORT.json: recomputes every metric of a `groundc eval --report F
--verbose` report from its per-sample answers and references, independently of groundc: the
first box / span matched by the reference's pattern (a match whose numbers do not parse is
skipped), IoU, hits at 0.3 / 0.5 / 0.7, mean IoU, parsed counts, the best constant answer's
hit rate at 0.5 (every reference tried as the answer to all); caption BLEU-4 and ROUGE-L
with caption_metric_reference.py. Each record must say where its sample came from (id, file,
index, source, as pack stored them); a rec record with the original image's size must have
its answer's and reference's first box normalised and in pixels of that image (the padded
square mapped back, clamped to the image); a tvg or sound record with its medium's duration
must have their first span in seconds of the file (start + t * duration). Exit 1 naming the
first disagreement."""
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from caption_metric_reference import bleu4, rouge_l  # noqa: E402

NUM = r"([0-9.]+)"
BOX = re.compile(r"\[" + NUM + ", " + NUM + ", " + NUM + ", " + NUM + r"\]")
SPAN = re.compile(r"\{" + NUM + ", " + NUM + r"\}")


def first(pattern, text):
    for m in pattern.finditer(text):
        try:
            return [float(g) for g in m.groups()]
        except ValueError:
            continue
    return None


def iou(kind, a, b):
    if kind == "rec":
        iw = min(a[2], b[2]) - max(a[0], b[0])
        ih = min(a[3], b[3]) - max(a[1], b[1])
        if iw <= 0 or ih <= 0:
            return 0.0
        inter = iw * ih
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0
    inter = min(a[1], b[1]) - max(a[0], b[0])
    if inter <= 0:
        return 0.0
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def close(a, b, tol=1e-9):
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= tol * max(1.0, abs(b))


def to_pixels(b, w, h):
    """A box normalised to the padded square, in pixels of the w x h original (LLaVA's
    expand2square pads both sides, the smaller half first)."""
    side = max(w, h)
    ox, oy = (side - w) // 2, (side - h) // 2
    cl = lambda v, hi: min(max(v, 0.0), hi)
    return [cl(b[0] * side - ox, w), cl(b[1] * side - oy, h), cl(b[2] * side - ox, w),
            cl(b[3] * side - oy, h)]


def check_origin(s, failures):
    """The record's origin fields and, for rec, its boxes in pixels."""
    where = f"{s['task']} sample {s['sample']}"
    for key, kind in (("file", str), ("index", int), ("source", str)):
        if not isinstance(s.get(key), kind):
            failures.append(f"{where}: {key} {s.get(key)!r} is not a {kind.__name__}")
    if "id" not in s:
        failures.append(f"{where}: no id (null when the input had none)")
    if s["task"] in ("tvg", "sound") and "duration" in s:
        d, t0 = s["duration"], s.get("start", 0.0)
        for key in ("answer", "reference"):
            span = first(SPAN, s[key])
            want = [t0 + span[0] * d, t0 + span[1] * d] if span is not None else None
            got = s[f"{key}_span_s"]
            if (got is None) != (want is None) or (
                    want is not None and any(abs(a - b) > 1e-9 for a, b in zip(got, want))):
                failures.append(f"{where}: {key}_span_s {got}, recomputed {want}")
    if s["task"] != "rec" or "image_size" not in s:
        return
    w, h = s["image_size"]
    for key in ("answer", "reference"):
        box = first(BOX, s[key])
        if s[f"{key}_box"] != box:
            failures.append(f"{where}: {key}_box {s[f'{key}_box']}, the text's first box {box}")
        want = to_pixels(box, w, h) if box is not None else None
        got = s[f"{key}_box_px"]
        if (got is None) != (want is None) or (
                want is not None and any(abs(a - b) > 1e-9 for a, b in zip(got, want))):
            failures.append(f"{where}: {key}_box_px {got}, recomputed {want} ({w}x{h})")


def main():
    report = json.load(open(sys.argv[1], encoding="utf-8"))
    samples = report["samples"]
    failures = []
    for s in samples:
        check_origin(s, failures)
    for task, got in report["tasks"].items():
        mine = [s for s in samples if s["task"] == task]
        if got["samples"] != len(mine):
            failures.append(f"{task}: {got['samples']} samples, {len(mine)} records")
        if task == "caption":
            pairs = [(s["answer"], s["reference"]) for s in mine]
            b, bp, _ = bleu4(pairs)
            r = sum(rouge_l(a, c) for a, c in pairs) / len(pairs) if pairs else None
            if not close(got["bleu4"], b if pairs else None):
                failures.append(f"caption BLEU-4 {got['bleu4']}, recomputed {b}")
            if not close(got["rouge_l"], r):
                failures.append(f"caption ROUGE-L {got['rouge_l']}, recomputed {r}")
            for s in mine:
                if not close(s["rouge_l"], rouge_l(s["answer"], s["reference"])):
                    failures.append(f"caption sample {s['sample']}: ROUGE-L {s['rouge_l']}")
            continue
        pattern = BOX if task == "rec" else SPAN
        ious, parsed = [], 0
        for s in mine:
            want, answer = first(pattern, s["reference"]), first(pattern, s["answer"])
            if want is None:
                failures.append(f"{task} sample {s['sample']}: graded without a reference box")
                continue
            parsed += answer is not None
            v = iou(task, answer, want) if answer is not None else 0.0
            if not close(s["iou"], v, 1e-12):
                failures.append(f"{task} sample {s['sample']}: IoU {s['iou']}, recomputed {v}")
            ious.append(v)
        n = len(ious)
        refs = [w for w in (first(pattern, s["reference"]) for s in mine) if w is not None]
        best = max(sum(iou(task, c, w) >= 0.5 for w in refs) for c in refs) / n if n else None
        if not close(got["best_constant@0.5"], best):
            failures.append(f"{task}: best constant {got['best_constant@0.5']}, recomputed {best}")
        if got["parsed"] != parsed:
            failures.append(f"{task}: parsed {got['parsed']}, recomputed {parsed}")
        mean = sum(ious) / n if n else None
        if not close(got["mean_iou"], mean):
            failures.append(f"{task}: mean IoU {got['mean_iou']}, recomputed {mean}")
        name = "acc" if task == "rec" else "r1"
        for t in (0.3, 0.5, 0.7):
            hits = sum(v >= t for v in ious)
            if got[f"hits@{t}"] != hits or not close(got[f"{name}@{t}"], hits / n if n else None):
                failures.append(f"{task}: {name}@{t} {got[f'{name}@{t}']} ({got[f'hits@{t}']} "
                                f"hits), recomputed {hits}/{n}")
    for f in failures:
        print("eval_report_check:", f)
    counts = {t: v["samples"] for t, v in report["tasks"].items()}
    print(f"eval_report_check: {len(samples)} samples {counts}: "
          f"{'all metrics agree' if not failures else f'{len(failures)} disagreements'}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
