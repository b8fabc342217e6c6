#!/usr/bin/env python3
"""shard_damage.py SRC DST MODE: copies the dataset folder SRC (manifest.json + shards) to DST
and damages DST/shard_00000.h5 the way a user-made or broken shard would be (h5py), then
rewrites the manifest's size and SHA-256 of that shard so that only the damage is wrong.
Prints one line: what was done, with the sample / row it touched (`sample N`, `row N`).
Needs HDF5_PLUGIN_PATH with groundc's zstd filter (it rewrites zstd-compressed datasets).
Token ids of the placeholders come from configs/demo/model.yaml (V0 = 2000).

MODE: token_oov no_image_ref no_start split_run extra_block audio_nan video_dur_zero
      audio_dur_nan video_dur_neg orig_zero mask2 mask_bool lzf upper_digest"""
import hashlib
import json
import os
import shutil
import sys

import h5py
import numpy as np

IM_PATCH, IM_START, IM_END = 2000, 2001, 2002


def rewrite(f, name, data, **kw):
    """Replaces dataset `name` by `data` (chunked and zstd-compressed unless kw says else)."""
    del f[name]
    if "compression" not in kw:
        kw = dict(kw, compression=32015, compression_opts=(1,))
    if len(data) == 0:
        kw = {}
    f.create_dataset(name, data=data, **kw)


def sample_tokens(f, i):
    off = f["offsets"][:]
    return off, f["tokens"][off[i]:off[i + 1]]


def first_with(f, ref):
    rows = f[ref][:]
    return int(np.nonzero(rows >= 0)[0][0])


def main():
    src, dst, mode = sys.argv[1:4]
    if os.path.exists(dst):
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    path = os.path.join(dst, "shard_00000.h5")
    with h5py.File(path, "r+") as f:
        if mode == "token_oov":
            tok = f["tokens"][:]
            tok[5] = 5000  # sample 0, position 5
            rewrite(f, "tokens", tok, chunks=True)
            print("sample 0: token id 5000 at position 5")
        elif mode == "no_image_ref":
            i = first_with(f, "sample_image")
            ref = f["sample_image"][:]
            ref[i] = -1
            rewrite(f, "sample_image", ref)
            print(f"sample {i}: sample_image -1")
        elif mode in ("no_start", "split_run"):
            i = first_with(f, "sample_image")
            off, t = sample_tokens(f, i)
            tok = f["tokens"][:]
            start = off[i] + int(np.nonzero(t == IM_START)[0][0])
            at = start if mode == "no_start" else start + 30
            tok[at] = tok[start - 1]  # a text token
            rewrite(f, "tokens", tok, chunks=True)
            print(f"sample {i}: position {at - off[i]} replaced")
        elif mode == "extra_block":
            # a second image block in an image sample (no second image row for it)
            i = first_with(f, "sample_image")
            off, t = sample_tokens(f, i)
            s = int(np.nonzero(t == IM_START)[0][0])
            e = int(np.nonzero(t == IM_END)[0][0])
            block = t[s:e + 1]
            tok, mask = f["tokens"][:], f["loss_mask"][:]
            at = off[i] + e + 1
            tok = np.concatenate([tok[:at], block, tok[at:]])
            mask = np.concatenate([mask[:at], np.zeros(len(block), np.uint8), mask[at:]])
            off = off.copy()
            off[i + 1:] += len(block)
            rewrite(f, "tokens", tok, chunks=True)
            rewrite(f, "loss_mask", mask, chunks=True)
            rewrite(f, "offsets", off, chunks=True)
            print(f"sample {i}: second image block")
        elif mode == "audio_nan":
            a = f["audios"]
            row = a[0]
            row[1, 7, 9] = np.nan
            a[0] = row
            print("row 0: NaN at clip 1, frame 7, mel 9")
        elif mode in ("video_dur_zero", "audio_dur_nan", "video_dur_neg"):
            name = "video_duration" if mode.startswith("video") else "audio_duration"
            v = {"video_dur_zero": 0.0, "audio_dur_nan": np.nan, "video_dur_neg": -2.0}[mode]
            d = f[name][:]
            d[1] = v
            rewrite(f, name, d, compression=None)
            print(f"{name} row 1: {v}")
        elif mode == "orig_zero":
            d = f["image_orig_size"][:]
            d[2] = [0, 0]
            rewrite(f, "image_orig_size", d, compression=None)
            print("image_orig_size row 2: [0, 0]")
        elif mode == "mask2":
            off = f["offsets"][:]
            mask = f["loss_mask"][:]
            i = 3
            at = off[i] + int(np.nonzero(mask[off[i]:off[i + 1]])[0][0])
            mask[at] = 2
            rewrite(f, "loss_mask", mask, chunks=True)
            print(f"sample {i}: loss_mask 2 at position {at - off[i]}")
        elif mode == "mask_bool":
            mask = f["loss_mask"][:].astype(bool)
            rewrite(f, "loss_mask", mask, compression=None)
            print("loss_mask stored as bool")
        elif mode == "lzf":
            tok = f["tokens"][:]
            rewrite(f, "tokens", tok, compression="lzf", chunks=True)
            print("tokens compressed with lzf")
        elif mode == "upper_digest":
            d = f.attrs["tokenizer_digest"]
            d = d.decode() if isinstance(d, bytes) else str(d)
            f.attrs["tokenizer_digest"] = d.upper()
            print("tokenizer_digest in uppercase")
        else:
            sys.exit(f"shard_damage.py: unknown mode {mode}")
    man_path = os.path.join(dst, "manifest.json")
    with open(man_path) as fh:
        man = json.load(fh)
    data = open(path, "rb").read()
    for s in man["shards"]:
        if s["file"] == "shard_00000.h5":
            s["bytes"] = len(data)
            s["sha256"] = hashlib.sha256(data).hexdigest()
            if mode == "upper_digest":  # the manifest's digests in uppercase too
                s["sha256"] = s["sha256"].upper()
            if mode == "extra_block":
                s["num_tokens"] += 66
    if mode == "extra_block":
        man["num_tokens"] += 66
    if mode == "upper_digest":
        man["tokenizer_digest"] = man["tokenizer_digest"].upper()
    with open(man_path, "w") as fh:
        json.dump(man, fh, indent=2)


if __name__ == "__main__":
    main()
