#!/usr/bin/env python3
"""st_compare.py A B [--rtol R --atol A --only GLOB]: the tensors of two safetensors files
(same names, shapes, dtypes; with --only, those whose name matches GLOB) agree within tolerance, read with numpy independently of groundc. Exit 1 with
the first tensor that differs."""
import fnmatch, os, sys
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_read import read  # noqa: E402  (also imported from here by other checks)


def main():
    args = sys.argv[1:]
    rtol, atol = 1e-4, 1e-6
    if "--rtol" in args:
        i = args.index("--rtol"); rtol = float(args[i + 1]); del args[i:i + 2]
    if "--atol" in args:
        i = args.index("--atol"); atol = float(args[i + 1]); del args[i:i + 2]
    only = None
    if "--only" in args:
        i = args.index("--only"); only = args[i + 1]; del args[i:i + 2]
    a, b = read(args[0]), read(args[1])
    if only:
        a = {k: v for k, v in a.items() if fnmatch.fnmatchcase(k, only)}
        b = {k: v for k, v in b.items() if fnmatch.fnmatchcase(k, only)}
        if not a:
            print(f"no tensor matches {only}"); return 1
    if sorted(a) != sorted(b):
        print("different tensor names:", sorted(set(a) ^ set(b))[:5]); return 1
    worst = 0.0
    for k in a:
        if a[k].shape != b[k].shape:
            print(f"{k}: shapes {a[k].shape} vs {b[k].shape}"); return 1
        if not np.allclose(a[k], b[k], rtol=rtol, atol=atol):
            d = np.abs(a[k] - b[k]).max()
            print(f"{k}: max abs difference {d:g} beyond rtol {rtol} atol {atol}"); return 1
        if a[k].size:
            worst = max(worst, float(np.abs(a[k] - b[k]).max()))
    print(f"{len(a)} tensors agree (max abs difference {worst:g})")
    return 0

if __name__ == "__main__":
    sys.exit(main())
