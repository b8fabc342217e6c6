#!/usr/bin/env python3
"""llama_logits_reference.py CKPT_DIR TOKENIZER TEXT LOGITS.npy [--rtol R]: the logits that
`groundc generate CKPT_DIR --raw --prompt TEXT --logits-out LOGITS.npy` wrote for a text-only
prompt agree with a plain numpy forward of the checkpoint's Llama decoder (float64, HF
conventions: RMSNorm, rotate-half RoPE, causal softmax attention with grouped-query heads,
SwiGLU; logits over the base vocabulary and the 9 added rows), on the ids SentencePiece gives
for BOS + TEXT. Independent of groundc's code. Exit 1 when a row differs by more than rtol of
its largest logit.

Also a module: forward (the decoder, used by gguf_reference.py too), rmsnorm, rope."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_read import read  # noqa: E402


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, theta):
    """x (T, H, D), HF rotate-half."""
    T, _, D = x.shape
    inv = theta ** (-np.arange(0, D, 2) / D)
    ang = np.arange(T)[:, None] * inv[None, :]  # (T, D/2)
    cos = np.concatenate([np.cos(ang)] * 2, axis=-1)[:, None, :]
    sin = np.concatenate([np.sin(ang)] * 2, axis=-1)[:, None, :]
    rot = np.concatenate([-x[..., D // 2:], x[..., :D // 2]], axis=-1)
    return x * cos + rot * sin


def forward(w, cfg, ids, feats=None, patch_id=None):
    """ids (T) -> logits (T, V0 + 9) from the checkpoint's weights w (GroundingGPT names) and
    its `llm:` config; with patch_id, the rows of the ids equal to it take feats (N, C) in
    order."""
    C, H, Hkv = int(cfg["dim"]), int(cfg["heads"]), int(cfg["kv_heads"])
    D = C // H
    eps, theta = float(cfg.get("norm_eps", 1e-5)), float(cfg.get("rope_theta", 10000))
    table = np.concatenate([w["model.embed_tokens.weight"], w["model.embed_tokens.added_rows"]])
    x = table[ids]
    if patch_id is not None:
        patch = np.nonzero(np.asarray(ids) == patch_id)[0]
        if len(patch):
            x[patch] = feats
    T = len(ids)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(int(cfg["layers"])):
        p = f"model.layers.{l}."
        h = rmsnorm(x, w[p + "input_layernorm.weight"], eps)
        q = rope((h @ w[p + "self_attn.q_proj.weight"].T).reshape(T, H, D), theta)
        k = rope((h @ w[p + "self_attn.k_proj.weight"].T).reshape(T, Hkv, D), theta)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(T, Hkv, D)
        k, v = np.repeat(k, H // Hkv, axis=1), np.repeat(v, H // Hkv, axis=1)
        s = np.einsum("thd,uhd->htu", q, k) / np.sqrt(D) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        a = np.einsum("htu,uhd->thd", s, v).reshape(T, C)
        x = x + a @ w[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, w[p + "post_attention_layernorm.weight"], eps)
        g, u = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ w[p + "mlp.down_proj.weight"].T
    x = rmsnorm(x, w["model.norm.weight"], eps)
    head = np.concatenate([w["lm_head.weight"], w["lm_head.added_rows"]])
    return x @ head.T


def llm_config(path):
    """The `llm:` mapping of a checkpoint's config.yaml as groundc writes it (block style, one
    `key: value` per line; PyYAML is not needed)."""
    cfg, indent = {}, None
    for line in open(path, encoding="utf-8"):
        stripped = line.strip()
        depth = len(line) - len(line.lstrip(" "))
        if indent is None:
            if stripped == "llm:":
                indent = depth
            continue
        if not stripped or stripped.startswith("#"):
            continue
        if depth <= indent:
            break
        key, value = stripped.split(":", 1)
        cfg[key] = float(value) if "." in value or "e" in value else int(value)
    return cfg


def main():
    import sentencepiece as spm

    ckpt, tok, text, npy = sys.argv[1:5]
    rtol = float(sys.argv[sys.argv.index("--rtol") + 1]) if "--rtol" in sys.argv else 1e-4
    llm = llm_config(os.path.join(ckpt, "config.yaml"))
    sp = spm.SentencePieceProcessor(model_file=tok)
    ids = [sp.bos_id()] + sp.encode(text)
    want = forward(read(os.path.join(ckpt, "model.safetensors")), llm, np.array(ids))
    got = np.load(npy)
    if got.dtype != np.float32 or got.shape != want.shape:
        print(f"logits {got.dtype}{got.shape}, expected float32{want.shape}")
        sys.exit(1)
    err = np.max(np.abs(got - want), axis=1) / np.max(np.abs(want), axis=1)
    print(f"{len(ids)} positions x {want.shape[1]} logits: worst row differs by {err.max():.2e} "
          f"of its largest logit")
    sys.exit(0 if err.max() <= rtol else 1)


if __name__ == "__main__":
    main()
