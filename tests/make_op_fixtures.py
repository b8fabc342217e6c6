#!/usr/bin/python3
# make_op_fixtures.py: writes tests/fixtures/ops_reference.safetensors, the PyTorch reference
# that tests/test_ops_reference.c checks groundc's ops against (forward outputs of every op,
# and input gradients of sum(out * r) for a handful).
#
# Generated with (Debian's python3, torch 1.13, numpy; from the repository root):
#   /usr/bin/python3 tests/make_op_fixtures.py
#
# Conventions of the file (read by the C test):
#   - tensors are named "<case>.<role>": inputs (x, w, b, a, ...), expected output "out",
#     seed "r" and expected gradients "grad_<input>" where gradients are checked;
#   - op arguments (eps, theta, scale, dims, flags) are in the metadata as "<case>.<arg>";
#   - float32 unless the case name ends in "_f64"; index tensors are I32, masks U8;
#   - layouts are groundc's: rope and attention take (B, T, H, D), so the torch side
#     transposes to (B, H, T, D) and back.
# The safetensors file is written by hand (json + numpy): the pip package is not available.
# Data offsets are contiguous (no gaps), float64 tensors first so every tensor is aligned.
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

import st_write  # tests/st_write.py

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_PATH = os.path.join(HERE, "fixtures", "ops_reference.safetensors")

torch.manual_seed(1234)
tensors = {}  # name -> (dtype string, numpy array)
meta = {}


def put(name, t):
    assert name not in tensors, name
    t = t.detach().contiguous()
    if t.dtype == torch.float32:
        tensors[name] = ("F32", t.numpy())
    elif t.dtype == torch.float64:
        tensors[name] = ("F64", t.numpy())
    elif t.dtype == torch.bfloat16:
        tensors[name] = ("BF16", t.view(torch.int16).numpy().view(np.uint16))
    elif t.dtype in (torch.int32, torch.int64):
        tensors[name] = ("I32", t.to(torch.int32).numpy())
    elif t.dtype in (torch.uint8, torch.bool):
        tensors[name] = ("U8", t.to(torch.uint8).numpy())
    else:
        raise ValueError(f"{name}: unsupported dtype {t.dtype}")


def arg(case, key, value):
    meta[f"{case}.{key}"] = repr(value) if isinstance(value, float) else str(value)


def randn(*shape, dtype=torch.float32, scale=1.0):
    return torch.randn(*shape, dtype=torch.float64).mul(scale).to(dtype)


def with_grads(case, fn, inputs, grad_names):
    """Puts inputs, out = fn(*inputs), r, and the gradients of sum(out * r) for the inputs
    named in grad_names (a subset of inputs' keys)."""
    leaves = {}
    for k, v in inputs.items():
        leaf = v.clone()
        if k in grad_names:
            leaf.requires_grad_(True)
        leaves[k] = leaf
        put(f"{case}.{k}", v)
    out = fn(**leaves)
    put(f"{case}.out", out)
    if grad_names:
        r = torch.randn(out.shape, dtype=torch.float64).to(out.dtype)
        put(f"{case}.r", r)
        (out * r).sum().backward()
        for k in grad_names:
            put(f"{case}.grad_{k}", leaves[k].grad)
    return out


def forward(case, fn, inputs):
    return with_grads(case, fn, inputs, [])


# Views and copies ---------------------------------------------------------------------------
x = randn(2, 3, 5)
forward("permute", lambda x: x.permute(2, 0, 1).contiguous(), {"x": x})
forward("transpose", lambda x: x.transpose(0, 2).contiguous(), {"x": x})
forward("slice", lambda x: x[:, 1:3, :].contiguous(), {"x": x})
forward("reshape", lambda x: x.reshape(6, 5), {"x": x})
forward("concat", lambda a, b: torch.cat([a, b], dim=1), {"a": randn(2, 3, 4), "b": randn(2, 2, 4)})
# casts: round to nearest even (torch) against ag_cast, compared bit for bit
x = randn(7, 9, scale=3.0)
x[0, 0] = 1.0 + 2.0**-8  # a tie: rounds to even (1.0)
x[0, 1] = 1.0 + 3 * 2.0**-8  # a tie: rounds to even (1 + 2^-6)
put("cast.x", x)
put("cast.bf16", x.to(torch.bfloat16))
put("cast.f64", x.to(torch.float64))

# Elementwise ----------------------------------------------------------------------------------
forward("add", lambda a, b: a + b, {"a": randn(2, 3, 4), "b": randn(3, 1)})
forward("add_lead", lambda a, b: a + b, {"a": randn(2, 3, 4), "b": randn(4)})
forward("sub", lambda a, b: a - b, {"a": randn(2, 1, 4), "b": randn(3, 4)})
with_grads("mul", lambda a, b: a * b, {"a": randn(4, 1, 5), "b": randn(3, 1)}, ["a", "b"])
forward("scale", lambda x: x * -0.37, {"x": randn(3, 5)})
arg("scale", "s", -0.37)
x = randn(4, 9, scale=3.0)
forward("silu", lambda x: F.silu(x), {"x": x})
forward("gelu", lambda x: F.gelu(x, approximate="none"), {"x": x})
forward("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), {"x": x})
forward("quick_gelu", lambda x: x * torch.sigmoid(1.702 * x), {"x": x})
with_grads("swiglu", lambda gate, up: F.silu(gate) * up,
           {"gate": randn(3, 8, scale=2.0), "up": randn(3, 8)}, ["gate", "up"])

# Linear algebra -------------------------------------------------------------------------------


def mm(ta, tb):
    def f(a, b):
        a = a.transpose(-1, -2) if ta else a
        b = b.transpose(-1, -2) if tb else b
        return torch.matmul(a, b)
    return f


with_grads("matmul_nn", mm(False, False), {"a": randn(2, 5, 7), "b": randn(7, 3)}, ["a", "b"])
forward("matmul_tn", mm(True, False), {"a": randn(7, 5), "b": randn(7, 3)})
forward("matmul_nt", mm(False, True), {"a": randn(5, 7), "b": randn(3, 7)})
forward("matmul_tt", mm(True, True), {"a": randn(2, 7, 5), "b": randn(2, 3, 7)})
forward("matmul_4d", mm(False, False), {"a": randn(2, 3, 4, 6), "b": randn(6, 5)})
with_grads("matmul_f64", mm(False, True), {"a": randn(3, 4, 6, dtype=torch.float64),
                                          "b": randn(3, 5, 6, dtype=torch.float64)}, ["a", "b"])
for case in ("matmul_nn", "matmul_tn", "matmul_nt", "matmul_tt", "matmul_4d", "matmul_f64"):
    ta, tb = case in ("matmul_tn", "matmul_tt"), case in ("matmul_nt", "matmul_tt", "matmul_f64")
    arg(case, "ta", int(ta))
    arg(case, "tb", int(tb))
with_grads("linear", lambda x, w, b: F.linear(x, w, b),
           {"x": randn(2, 3, 6), "w": randn(5, 6), "b": randn(5)}, ["x", "w", "b"])
forward("linear_nobias", lambda x, w: F.linear(x, w), {"x": randn(4, 6), "w": randn(5, 6)})

# Normalisation, reductions --------------------------------------------------------------------


def rmsnorm(eps):
    def f(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w
    return f


with_grads("rmsnorm", rmsnorm(1e-6), {"x": randn(2, 3, 16), "w": randn(16)}, ["x", "w"])
arg("rmsnorm", "eps", 1e-6)
forward("rmsnorm_f64", rmsnorm(1e-5), {"x": randn(3, 10, dtype=torch.float64),
                                       "w": randn(10, dtype=torch.float64)})
arg("rmsnorm_f64", "eps", 1e-5)
with_grads("layernorm", lambda x, w, b: F.layer_norm(x, (12,), w, b, 1e-5),
           {"x": randn(5, 12, scale=2.0).add(0.5), "w": randn(12), "b": randn(12)}, ["x", "w", "b"])
arg("layernorm", "eps", 1e-5)
with_grads("layernorm_f64", lambda x, w, b: F.layer_norm(x, (9,), w, b, 1e-6),
           {"x": randn(4, 9, dtype=torch.float64), "w": randn(9, dtype=torch.float64),
            "b": randn(9, dtype=torch.float64)}, ["x", "w", "b"])
arg("layernorm_f64", "eps", 1e-6)
with_grads("l2norm", lambda x: F.normalize(x, dim=-1, eps=1e-6), {"x": randn(4, 8)}, ["x"])
arg("l2norm", "eps", 1e-6)
x = randn(2, 8)
x[1] = 1e-7 * x[1]  # a row whose norm is below eps: divided by eps (no gradients: r/eps)
forward("l2norm_eps", lambda x: F.normalize(x, dim=-1, eps=1e-6), {"x": x})
arg("l2norm_eps", "eps", 1e-6)
with_grads("softmax", lambda x: torch.softmax(x, -1), {"x": randn(3, 11, scale=3.0)}, ["x"])
forward("softmax_f64", lambda x: torch.softmax(x, -1), {"x": randn(4, 7, dtype=torch.float64,
                                                                    scale=3.0)})
forward("sum", lambda x: x.sum(1), {"x": randn(3, 4, 5)})
arg("sum", "dim", 1)
forward("mean", lambda x: x.mean(-1), {"x": randn(3, 4, 5)})
arg("mean", "dim", -1)
forward("mean_all", lambda x: x.mean(), {"x": randn(3, 4, 5)})

# Transformer pieces ---------------------------------------------------------------------------


def rope(theta):
    # HF rotate-half convention; angles in float64 (the exact values), then rounded.
    def f(x, pos):
        D = x.shape[-1]
        inv_freq = theta ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
        ang = pos.to(torch.float64)[..., None] * inv_freq  # (T, D/2) or (B, T, D/2)
        emb = torch.cat((ang, ang), -1)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        if pos.dim() == 1:
            cos, sin = cos[None, :, None, :], sin[None, :, None, :]
        else:
            cos, sin = cos[:, :, None, :], sin[:, :, None, :]
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        rot = torch.cat((-x2, x1), -1)
        return x * cos + rot * sin
    return f


pos_t = torch.arange(5, dtype=torch.int32) + 3
with_grads("rope", lambda x, pos: rope(10000.0)(x, pos), {"x": randn(2, 5, 3, 8), "pos": pos_t},
           ["x"])
arg("rope", "theta", 10000.0)
pos_bt = torch.randint(0, 60, (2, 5), dtype=torch.int32)
forward("rope_bt", lambda x, pos: rope(500.0)(x, pos), {"x": randn(2, 5, 3, 8), "pos": pos_bt})
arg("rope_bt", "theta", 500.0)


def attention(causal, scale):
    # q (B, Tq, H, D), k and v (B, Tk, Hkv, D), mask (B, Tk) or None; a query that sees no key
    # gets zeros.
    def f(q, k, v, mask=None):
        B, Tq, H, D = q.shape
        Tk, Hkv = k.shape[1], k.shape[2]
        qh = q.transpose(1, 2)
        kh = k.transpose(1, 2).repeat_interleave(H // Hkv, dim=1)
        vh = v.transpose(1, 2).repeat_interleave(H // Hkv, dim=1)
        s = torch.matmul(qh, kh.transpose(-1, -2)) * scale  # (B, H, Tq, Tk)
        allowed = torch.ones(B, 1, Tq, Tk, dtype=torch.bool)
        if causal:
            i = torch.arange(Tq)[:, None]
            j = torch.arange(Tk)[None, :]
            allowed = allowed & (j <= i + (Tk - Tq))
        if mask is not None:
            allowed = allowed & (mask[:, None, None, :] != 0)
        p = torch.softmax(s.masked_fill(~allowed, float("-inf")), -1)
        p = torch.where(allowed.any(-1, keepdim=True), p, torch.zeros_like(p))
        return torch.matmul(p, vh).transpose(1, 2).contiguous()
    return f


def attn_case(case, B, Tq, Tk, H, Hkv, D, causal, mask=None, grads=False, dtype=torch.float32):
    scale = 1.0 / math.sqrt(D)
    inputs = {"q": randn(B, Tq, H, D, dtype=dtype), "k": randn(B, Tk, Hkv, D, dtype=dtype),
              "v": randn(B, Tk, Hkv, D, dtype=dtype)}
    if mask is not None:
        inputs["mask"] = mask
    with_grads(case, attention(causal, scale), inputs, ["q", "k", "v"] if grads else [])
    arg(case, "causal", int(causal))
    arg(case, "scale", scale)


attn_case("attn_causal", 2, 5, 5, 4, 4, 8, True, grads=True)
attn_case("attn_cross", 2, 3, 6, 4, 4, 8, False)
attn_case("attn_causal_short_q", 1, 3, 6, 2, 2, 8, True)
attn_case("attn_mask", 2, 4, 6, 2, 2, 8, False,
          mask=torch.tensor([[1, 1, 0, 1, 1, 0], [1, 0, 1, 1, 0, 0]], dtype=torch.uint8),
          grads=True)
# batch 1 has every key masked: its queries see nothing and get zeros
attn_case("attn_mask_empty", 2, 3, 4, 2, 2, 8, False,
          mask=torch.tensor([[1, 0, 1, 1], [0, 0, 0, 0]], dtype=torch.uint8))
attn_case("attn_gqa", 1, 5, 5, 4, 2, 8, True, grads=True)
attn_case("attn_f64", 1, 4, 6, 2, 1, 6, True, grads=True, dtype=torch.float64)

# Indexing ------------------------------------------------------------------------------------
with_grads("embedding", lambda table, ids: F.embedding(ids.long(), table),
           {"table": randn(10, 6), "ids": torch.tensor([[3, 0, 9], [3, 7, 1]], dtype=torch.int32)},
           ["table"])
with_grads("index_select", lambda x, idx: x[idx.long()],
           {"x": randn(7, 5), "idx": torch.tensor([6, 2, 2, 0], dtype=torch.int32)}, ["x"])


def scatter(base, idx, src):
    out = base.clone()
    out[idx.long()] = src
    return out


with_grads("scatter", scatter,
           {"base": randn(6, 4), "idx": torch.tensor([4, 1, 2], dtype=torch.int32),
            "src": randn(3, 4)}, ["base", "src"])

# Loss ----------------------------------------------------------------------------------------
targets = torch.tensor([2, -100, 8, 0, -100, 5], dtype=torch.int32)
with_grads("cross_entropy", lambda logits, targets: F.cross_entropy(logits, targets.long(),
                                                                    ignore_index=-100),
           {"logits": randn(6, 9, scale=2.0), "targets": targets}, ["logits"])
arg("cross_entropy", "ignore_index", -100)
with_grads("cross_entropy_f64", lambda logits, targets: F.cross_entropy(logits, targets.long(),
                                                                        ignore_index=-100),
           {"logits": randn(6, 9, dtype=torch.float64, scale=2.0), "targets": targets}, ["logits"])
arg("cross_entropy_f64", "ignore_index", -100)


# Numerical stability -------------------------------------------------------------------------
# Inputs in float32 whose naive evaluation overflows exp or cancels a variance; the expected
# outputs are computed in float64 from those same inputs and rounded (the true values).


def f64_truth(case, fn, inputs):
    put(f"{case}.out", fn(**{k: v.to(torch.float64) if v.is_floating_point() else v
                            for k, v in inputs.items()}).to(torch.float32))
    for k, v in inputs.items():
        put(f"{case}.{k}", v)


f64_truth("softmax_large", lambda x: torch.softmax(x, -1), {"x": randn(3, 11, scale=5.0) + 100})
f64_truth("layernorm_offset", lambda x, w, b: F.layer_norm(x, (12,), w, b, 1e-5),
          {"x": randn(4, 12) + 30, "w": randn(12), "b": randn(12)})
arg("layernorm_offset", "eps", 1e-5)
f64_truth("cross_entropy_large",
          lambda logits, targets: F.cross_entropy(logits, targets.long(), ignore_index=-100),
          {"logits": randn(4, 9, scale=5.0) + 100,
           "targets": torch.tensor([1, 8, -100, 0], dtype=torch.int32)})
arg("cross_entropy_large", "ignore_index", -100)
# integer q and k, D = 4, scale 1/2: scores (up to ~200) are exact in float32; their exp is not
f64_truth("attn_large", attention(False, 0.5),
          {"q": torch.randint(-16, 17, (1, 5, 2, 4)).float(),
           "k": torch.randint(-16, 17, (1, 6, 2, 4)).float(), "v": randn(1, 6, 2, 4)})
arg("attn_large", "causal", 0)
arg("attn_large", "scale", 0.5)
# Tq > Tk with causal: the first Tq - Tk queries see no key
attn_case("attn_causal_long_q", 1, 6, 3, 2, 2, 8, True)


# Writing -------------------------------------------------------------------------------------


meta["generator"] = "tests/make_op_fixtures.py"
meta["torch"] = torch.__version__
os.makedirs(os.path.dirname(OUT_PATH), exist_ok=True)
st_write.write(OUT_PATH, tensors, meta)
print(f"wrote {OUT_PATH}: {len(tensors)} tensors, {os.path.getsize(OUT_PATH)} bytes")
