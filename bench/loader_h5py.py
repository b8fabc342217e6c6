#!/usr/bin/env python3
"""loader_h5py.py: the reference for bench/loader.sh. The work groundc's loader does, done the
usual Python way with h5py + numpy on the same shards: samples in random order (a fresh
permutation per epoch), tokens and loss mask read by slice, the image / video / audio row of
each sample read by index (float16 -> float32 for audio), then a batch: ids padded to the
longest sample (up to max_len), targets shifted with -100 where the next token is not in the
loss and on padding, media stacked. Per-sample metadata is loaded once at open, as groundc's
reader does, and every file gets groundc's token chunk cache (4 MiB) for all its datasets.
Needs HDF5_PLUGIN_PATH pointing at the zstd plugin (build/hdf5-plugins). Prints one JSON line.
    loader_h5py.py DIR [--micro 8] [--samples 20000] [--max-len 512] [--seed 1]
"""
import argparse
import json
import os
import time

import h5py
import numpy as np


def open_shards(folder):
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    shards = []
    for entry in manifest["shards"]:
        f = h5py.File(os.path.join(folder, entry["file"]), "r", rdcc_nbytes=4 << 20, rdcc_nslots=521)
        shards.append({
            "file": f,
            "offsets": f["offsets"][:],
            "image": f["sample_image"][:],
            "video": f["sample_video"][:],
            "audio": f["sample_audio"][:],
            "task": f["sample_task"][:],
            "tokens": f["tokens"],
            "loss_mask": f["loss_mask"],
            "images": f["images"],
            "videos": f["videos"],
            "audios": f["audios"],
        })
    index = [(j, i) for j, s in enumerate(shards) for i in range(len(s["offsets"]) - 1)]
    return shards, index


def collate(samples, max_len, pad):
    lengths = [min(len(t), max_len) for t, _, _, _, _ in samples]
    T = max(1, max(lengths))
    ids = np.full((len(samples), T), pad, dtype=np.int32)
    targets = np.full((len(samples), T), -100, dtype=np.int32)
    for b, (tok, mask, _, _, _) in enumerate(samples):
        n = lengths[b]
        ids[b, :n] = tok[:n]
        targets[b, :n - 1] = np.where(mask[1:n] == 1, tok[1:n], -100)
    media = []
    for k in (2, 3, 4):
        rows = [s[k] for s in samples if s[k] is not None]
        media.append(np.stack(rows) if rows else None)
    return ids, targets, media


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--micro", type=int, default=8)
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    shards, index = open_shards(a.dir)
    rng = np.random.default_rng(a.seed)

    def stream():
        while True:
            for k in rng.permutation(len(index)):
                yield index[k]

    def load(j, i):
        s = shards[j]
        lo, hi = int(s["offsets"][i]), int(s["offsets"][i + 1])
        tok = s["tokens"][lo:hi]
        mask = s["loss_mask"][lo:hi]
        img = s["images"][int(s["image"][i])] if s["image"][i] >= 0 else None
        vid = s["videos"][int(s["video"][i])] if s["video"][i] >= 0 else None
        aud = s["audios"][int(s["audio"][i])].astype(np.float32) if s["audio"][i] >= 0 else None
        return tok, mask, img, vid, aud

    it = stream()
    batches = (a.samples + a.micro - 1) // a.micro
    collate([load(*next(it)) for _ in range(a.micro)], a.max_len, 0)  # warm-up, as groundc's
    t0, c0 = time.perf_counter(), time.process_time()
    tokens = 0
    for _ in range(batches):
        ids, targets, media = collate([load(*next(it)) for _ in range(a.micro)], a.max_len, 0)
        tokens += int((targets != -100).sum())
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = batches * a.micro
    print(json.dumps({"impl": "h5py", "samples": n, "seconds": round(dt, 4),
                      "samples_per_s": round(n / dt, 1),
                      "cpu_us_per_sample": round(1e6 * cpu / n, 1), "h5py": h5py.__version__}))


if __name__ == "__main__":
    main()
