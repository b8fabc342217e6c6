#!/usr/bin/python3
# make_torch_fixtures.py: writes tests/fixtures/torch/, PyTorch checkpoints (torch.save) of
# the tensors of tests/fixtures/import/, for tests/test_import.c (autograd/torch_file.h):
#
#   eva.pth             eva-f32.safetensors as an OrderedDict (pickle protocol 2, as LAVIS)
#   imagebind.pth       imagebind-f32.safetensors under "model" of a training checkpoint with
#                       "epoch" and argparse "args"; pickle protocol 4; one weight stored
#                       transposed (strides (1, rows)), one bias with stride 2 and one
#                       nn.Parameter
#   llama-bf16-bin/     llama-bf16-single as transformers' older save_pretrained writes it:
#                       pytorch_model-0000K-of-00002.bin + pytorch_model.bin.index.json; the
#                       q/k/v weights of a layer are views into one storage (storage offsets)
#   clip-f16-bin/       clip-f16-single as one pytorch_model.bin (with its int64 buffer)
#   small.pth           {"w": a 2 x 3 tensor}
#   deepspeed.pt        the same tensor as DeepSpeed saves a model: under "module", with other
#                       entries (a tensor-free optimizer slot, step counts, version strings)
#   (broken variants of small.pth:)
#   legacy.pth          small.pth in the pre-1.6 format (_use_new_zipfile_serialization=False)
#   deflated.pth        small.pth re-zipped with deflate
#   no_storage.pth      small.pth without its storage member
#   no_pickle.zip       a zip without data.pkl
#
# Deterministic but for legacy.pth (its storage keys are addresses); regenerate from the repository root with
# Debian's python3 (torch 1.13, numpy):
#   /usr/bin/python3 tests/make_torch_fixtures.py
import argparse
import collections
import json
import os
import shutil
import zipfile

import numpy as np
import torch

from st_read import read_raw

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "fixtures", "import")
OUT = os.path.join(HERE, "fixtures", "torch")
STAMP = (1980, 1, 1, 0, 0, 0)  # zip member times, as torch.save writes them


def tensors(path, dtype=None):
    """OrderedDict name -> torch tensor of a safetensors file, in file order; floats as dtype."""
    out = collections.OrderedDict()
    for name, a in read_raw(path).items():
        t = torch.from_numpy(np.array(a))
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)  # exact: the values are already representable
        out[name] = t
    return out


def eva():
    torch.save(tensors(os.path.join(SRC, "eva-f32.safetensors")), os.path.join(OUT, "eva.pth"))


def imagebind():
    sd = tensors(os.path.join(SRC, "imagebind-f32.safetensors"))
    w = [k for k, v in sd.items() if v.dim() == 2 and v.shape[0] != v.shape[1]][0]
    sd[w] = sd[w].t().contiguous().t()  # same values, column-major
    assert not sd[w].is_contiguous()
    b = [k for k, v in sd.items() if v.dim() == 1 and k.endswith(".bias")][0]
    spread = torch.zeros(2 * sd[b].numel())
    spread[::2] = sd[b]
    sd[b] = spread[::2]
    first = next(iter(sd))
    sd[first] = torch.nn.Parameter(sd[first])  # pickled through _rebuild_parameter
    args = argparse.Namespace(lr=1e-4, name="imagebind", dims=[1, 2], frozen=True, note=None)
    ckpt = {"model": sd, "epoch": 3, "args": args}
    torch.save(ckpt, os.path.join(OUT, "imagebind.pth"), pickle_protocol=4)


def llama():
    d = os.path.join(OUT, "llama-bf16-bin")
    os.makedirs(d, exist_ok=True)
    sd = tensors(os.path.join(SRC, "llama-bf16-single", "model.safetensors"), torch.bfloat16)
    qkv = [f"model.layers.0.self_attn.{n}_proj.weight" for n in "qkv"]
    fused = torch.cat([sd[n] for n in qkv], 0)
    at = 0
    for n in qkv:
        rows = sd[n].shape[0]
        sd[n] = fused[at:at + rows]
        at += rows
    first = lambda n: "layers.0." in n or "embed_tokens" in n  # noqa: E731
    weight_map, total = {}, 0
    for k, keep in enumerate([first, lambda n: not first(n)]):
        name = f"pytorch_model-{k + 1:05d}-of-00002.bin"
        shard = collections.OrderedDict((n, t) for n, t in sd.items() if keep(n))
        torch.save(shard, os.path.join(d, name))
        for n, t in shard.items():
            weight_map[n] = name
            total += t.numel() * t.element_size()
    with open(os.path.join(d, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
                  f, indent=2)


def clip():
    d = os.path.join(OUT, "clip-f16-bin")
    os.makedirs(d, exist_ok=True)
    sd = tensors(os.path.join(SRC, "clip-f16-single", "model.safetensors"), torch.float16)
    torch.save(sd, os.path.join(d, "pytorch_model.bin"))


def rezip(src, dst, keep, method):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", method) as zout:
        for info in zin.infolist():
            if keep(info.filename):
                zout.writestr(zipfile.ZipInfo(info.filename, STAMP), zin.read(info.filename),
                              method)


def broken():
    small = os.path.join(OUT, "small.pth")
    torch.save({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, small)
    torch.save({"module": {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)},
                "buffer_names": [], "optimizer": None, "global_steps": 10, "skipped_steps": 0,
                "ds_config": {"train_batch_size": 512}, "ds_version": "0.9.5"},
               os.path.join(OUT, "deepspeed.pt"))
    torch.save({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)},
               os.path.join(OUT, "legacy.pth"), _use_new_zipfile_serialization=False)
    rezip(small, os.path.join(OUT, "deflated.pth"), lambda n: True, zipfile.ZIP_DEFLATED)
    rezip(small, os.path.join(OUT, "no_storage.pth"), lambda n: "/data/" not in n,
          zipfile.ZIP_STORED)
    with zipfile.ZipFile(os.path.join(OUT, "no_pickle.zip"), "w") as z:
        z.writestr(zipfile.ZipInfo("archive/version", STAMP), "3\n")


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    eva()
    imagebind()
    llama()
    clip()
    broken()


if __name__ == "__main__":
    main()
