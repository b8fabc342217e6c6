#!/usr/bin/env python3
"""lr_schedule_reference.py: the learning rate of each step as transformers' Trainer steps its
cosine-with-warmup schedule, made by torch's own schedulers (LinearLR warmup from ~0, then
CosineAnnealingLR to PEAK * MIN_RATIO; the scheduler steps after each optimizer step; warmup
steps = ceil(ratio * total)).

  lr_schedule_reference.py --make     writes tests/fixtures/schedule/lr.json (needs torch)
  lr_schedule_reference.py METRICS.jsonl NAME
                                      compares the lr metrics.jsonl logged at each step with
                                      the fixture's case NAME; one line, exit 1 on a mismatch
"""
import json
import math
import os
import sys

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "schedule", "lr.json")
# name: (peak, warmup_ratio, min_ratio, total)
CASES = {"default_warmup": (3.0e-3, 0.03, 0.0, 12), "long_warmup_floor": (3.0e-3, 0.22, 0.1, 20)}


def torch_lrs(peak, ratio, min_ratio, total):
    import torch
    warmup = math.ceil(ratio * total)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=peak * min_ratio)
    sched = cosine
    if warmup:
        linear = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1e-30, end_factor=1.0,
                                                   total_iters=warmup)
        sched = torch.optim.lr_scheduler.SequentialLR(opt, [linear, cosine], milestones=[warmup])
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def make():
    cases = {name: {"peak": p, "warmup_ratio": r, "min_ratio": m, "total": t, "lr": torch_lrs(p, r, m, t)}
             for name, (p, r, m, t) in CASES.items()}
    with open(FIXTURE, "w") as f:
        json.dump(cases, f, indent=1)
        f.write("\n")


def check(metrics, name):
    case = json.load(open(FIXTURE))[name]
    expected, peak = case["lr"], case["peak"]
    logged = {}
    with open(metrics) as f:
        for line in f:
            rec = json.loads(line)
            if "step" in rec and "lr" in rec:
                logged[rec["step"]] = rec["lr"]
    # metrics.jsonl writes lr with 7 significant digits
    bad = [(s, lr, expected[s - 1]) for s, lr in sorted(logged.items())
           if s > len(expected) or abs(lr - expected[s - 1]) > 1e-9 * peak + 1e-6 * abs(expected[s - 1])]
    if len(logged) != len(expected) or bad:
        print(f"lr schedule {name}: {len(logged)} steps logged of {len(expected)}; differing from "
              f"torch's (step, logged, torch): {bad[:4]}")
        sys.exit(1)
    print(f"lr schedule {name}: {len(logged)} steps match torch's LinearLR + CosineAnnealingLR")


if __name__ == "__main__":
    if sys.argv[1:] == ["--make"]:
        make()
    elif len(sys.argv) == 3:
        check(sys.argv[1], sys.argv[2])
    else:
        sys.exit(__doc__)
