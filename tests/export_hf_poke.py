#!/usr/bin/env python3
"""export_hf_poke.py SRC_CKPT DST_CKPT edge|huge|bf16: a copy of a checkpoint folder whose
model.safetensors (F32) has chosen values written into one tensor, or is made bf16, with numpy
only.

  edge  model.layers.0.mlp.gate_proj.weight gets float32 bit patterns that exercise rounding to
        f16 and bf16: exact ties (f16: low 13 bits 0x1000, bf16: low 16 bits 0x8000), values
        near and below the f16 subnormal range, up to just under f16's overflow, zeros,
        negative zero;
  huge  model.mm_vision_projector.0.bias[0] = 1e6 (f16 cannot hold it);
  bf16  every tensor rounded to BF16 (to nearest even) and the model's dtype set to bf16: the
        checkpoint of a bf16 model."""
import json, os, shutil, struct, sys
import numpy as np


def to_bf16(dst):
    path = os.path.join(dst, "model.safetensors")
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    out, parts, at = {}, [], 0
    for name, e in header.items():
        if name == "__metadata__":
            out[name] = e
            continue
        assert e["dtype"] == "F32", (name, e["dtype"])
        a, b = e["data_offsets"]
        u = np.frombuffer(data[a:b], "<u4").astype(np.uint64)
        h = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes()
        out[name] = {"dtype": "BF16", "shape": e["shape"], "data_offsets": [at, at + len(h)]}
        parts.append(h)
        at += len(h)
    head = json.dumps(out).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(parts))
    cfg = os.path.join(dst, "config.yaml")
    text = open(cfg).read()
    assert "\n  dtype: f32\n" in text
    open(cfg, "w").write(text.replace("\n  dtype: f32\n", "\n  dtype: bf16\n", 1))


def main():
    src, dst, mode = sys.argv[1:4]
    shutil.copytree(src, dst)
    if mode == "bf16":
        return to_bf16(dst)
    path = os.path.join(dst, "model.safetensors")
    with open(path, "rb") as f:
        blob = bytearray(f.read())
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    name = "model.layers.0.mlp.gate_proj.weight" if mode == "edge" else "model.mm_vision_projector.0.bias"
    e = header[name]
    assert e["dtype"] == "F32", e
    a, b = e["data_offsets"]
    v = np.frombuffer(bytes(blob[8 + n + a:8 + n + b]), np.float32).copy()
    if mode == "edge":
        rng = np.random.default_rng(3)
        k = v.size
        exp = rng.integers(127 - 27, 127 + 16, k).astype(np.uint32)  # 2^-27 .. 2^15
        bits = (rng.integers(0, 2, k).astype(np.uint32) << 31) | (exp << 23) | \
            rng.integers(0, 1 << 23, k).astype(np.uint32)
        q = k // 4
        bits[:q] = (bits[:q] & ~np.uint32(0x1FFF)) | 0x1000      # f16 ties
        bits[q:2 * q] = (bits[q:2 * q] & ~np.uint32(0xFFFF)) | 0x8000  # bf16 ties
        v = bits.view(np.float32).copy()
        v[np.abs(v) >= 65504] = 65504.0  # rounds to 65504 at worst: no f16 overflow
        v[-4:] = [0.0, -0.0, 65519.0, -65519.0]  # the largest values that still round to 65504
    else:
        v[0] = 1e6
    blob[8 + n + a:8 + n + b] = v.astype("<f4").tobytes()
    with open(path, "wb") as f:
        f.write(blob)


if __name__ == "__main__":
    main()
