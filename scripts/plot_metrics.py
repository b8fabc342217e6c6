#!/usr/bin/env python3
"""plot_metrics.py RUN_DIR_OR_METRICS.jsonl [...] [--out FILE.png]

Draws the loss and learning-rate curves of one or more groundc runs (their metrics.jsonl)
into one PNG, one line per run; skipped (non-finite) steps are marked on the loss plot.
One run: by default metrics.png beside its metrics.jsonl (in the run folder); several runs
need --out. Needs Debian's python3-matplotlib; training never does."""
import argparse
import json
import os
import sys


def load(path):
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    steps, loss, lr, skipped = [], [], [], []
    try:
        text = open(path).read()
    except OSError as e:
        sys.exit(f"plot_metrics: {path}: {e.strerror}")
    lines = text.split("\n")
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if n == len(lines):  # a live run's line still being written (no newline yet)
                print(f"plot_metrics: {path}:{n}: an unfinished last line, left out",
                      file=sys.stderr)
                continue
            sys.exit(f"{path}:{n}: not JSON: {e}")
        if rec.get("skipped"):
            skipped.append(rec["step"])
        elif "loss" in rec:
            steps.append(rec["step"])
            loss.append(rec["loss"])
            lr.append(rec["lr"])
    if not steps:
        sys.exit(f"{path}: no logged steps")
    return path, steps, loss, lr, skipped


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", help="the PNG to write (default with one run: RUN/metrics.png)")
    args = ap.parse_args()
    if args.out is None:
        # beside the run's own files, not wherever the command happens to run
        if len(args.runs) > 1:
            sys.exit("plot_metrics: several runs: say where the plot goes with --out FILE.png")
        run = args.runs[0]
        args.out = os.path.join(run if os.path.isdir(run) else os.path.dirname(run) or ".",
                                "metrics.png")
    folder = os.path.dirname(args.out) or "."
    if os.path.isdir(args.out) or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        sys.exit(f"plot_metrics: --out {args.out}: "
                 + ("is a folder" if os.path.isdir(args.out) else f"cannot write into {folder}"))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_metrics: needs matplotlib (Debian: apt-get install python3-matplotlib)",
              file=sys.stderr)
        sys.exit(1)

    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for path in args.runs:
        name, steps, loss, lr, skipped = load(path)
        label = os.path.basename(os.path.dirname(os.path.abspath(name)))
        marker = "o" if len(steps) == 1 else None  # one point: a line would not show
        (line,) = ax_loss.plot(steps, loss, label=label, marker=marker)
        for s in skipped:
            ax_loss.axvline(s, color=line.get_color(), alpha=0.3, linestyle=":")
        ax_lr.plot(steps, lr, label=label, marker=marker)
    ax_loss.set_ylabel("loss")
    ax_loss.set_yscale("log")
    ax_loss.legend()
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"plot_metrics: wrote {args.out}")


if __name__ == "__main__":
    main()
