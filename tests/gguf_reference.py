"""gguf_reference.py: an independent numpy forward of a groundc checkpoint's LLM and image path,
read from its model.safetensors (GroundingGPT names), for tests/test_export_gguf.sh:

  image features   u8 (S, S, 3) -> CLIP pixels -> patch conv (the checkpoint keeps groundc's
                   (C, kh, kw, cin) patch layout) -> [CLS; patches] + positions -> pre-LN ->
                   blocks up to the feature layer -> CLS dropped -> Linear-GELU(erf)-Linear
  logits           ids (T) -> embeddings (base rows + the 9 added rows), patch rows replaced
                   by the image features -> Llama blocks (HF rotate-half RoPE) -> (T, V0 + 9)

It shares no code with groundc or llama.cpp: a third implementation to judge both by.
Also a module: load_safetensors, image_features, logits.
"""
import json
import math
import struct
import sys

import numpy as np

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])


def load_safetensors(path):
    """name -> float64 array (F32 and BF16 only: what groundc checkpoints hold)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        raw = data[a:b]
        if e["dtype"] == "F32":
            v = np.frombuffer(raw, dtype="<f4")
        elif e["dtype"] == "BF16":
            v = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit(f"{path}: {name}: dtype {e['dtype']} not handled")
        out[name] = v.astype(np.float64).reshape(e["shape"])
    return out


def _layernorm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _erf(x):
    return np.vectorize(math.erf)(x)


def image_features(w, cfg, image, cls_last=False):
    """image u8 (S, S, 3) -> (N, L) projected features. cls_last: what llama.cpp's llava graph
    computes since its graph refactor (llama.cpp issue 25814, builds up to at least b10257): CLS
    appended after the patches, position rows added in sequence order, and output rows
    1..N kept (patch 0 dropped, CLS kept)."""
    enc = cfg["image"]["encoder"]
    p = "model.vision_tower.vision_model."
    P, C, H = enc["patch"], enc["width"], enc["heads"]
    eps = enc.get("norm_eps", 1e-5)
    x = (image.astype(np.float64) / 255 - CLIP_MEAN) / CLIP_STD
    S = x.shape[0]
    g = S // P
    # patches (N, P*P*3) in (y, x, c) order = the checkpoint's (C, kh, kw, cin) layout
    patches = x.reshape(g, P, g, P, 3).transpose(0, 2, 1, 3, 4).reshape(g * g, P * P * 3)
    emb = patches @ w[p + "embeddings.patch_embedding.weight"].reshape(C, -1).T
    cls = w[p + "embeddings.class_embedding"][None]
    h = np.concatenate([emb, cls] if cls_last else [cls, emb], 0)
    h = h + w[p + "embeddings.position_embedding.weight"]
    h = _layernorm(h, w[p + "pre_layrnorm.weight"], w[p + "pre_layrnorm.bias"], eps)
    layers = enc["layers"]
    sel = enc.get("select_layer", -2)
    k = sel + layers + 1 if sel < 0 else sel
    T, D = h.shape[0], C // H
    for l in range(k):
        q = f"{p}encoder.layers.{l}."
        a = _layernorm(h, w[q + "layer_norm1.weight"], w[q + "layer_norm1.bias"], eps)
        proj = {n: a @ w[f"{q}self_attn.{n}_proj.weight"].T + w[f"{q}self_attn.{n}_proj.bias"]
                for n in "qkv"}
        qh, kh, vh = (proj[n].reshape(T, H, D).transpose(1, 0, 2) for n in "qkv")
        s = qh @ kh.transpose(0, 2, 1) / math.sqrt(D)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = (s @ vh).transpose(1, 0, 2).reshape(T, C)
        h = h + o @ w[q + "self_attn.out_proj.weight"].T + w[q + "self_attn.out_proj.bias"]
        a = _layernorm(h, w[q + "layer_norm2.weight"], w[q + "layer_norm2.bias"], eps)
        f = a @ w[q + "mlp.fc1.weight"].T + w[q + "mlp.fc1.bias"]
        f = f / (1 + np.exp(-1.702 * f))  # QuickGELU
        h = h + f @ w[q + "mlp.fc2.weight"].T + w[q + "mlp.fc2.bias"]
    feats = h[1:]
    m = "model.mm_vision_projector."
    f = feats @ w[m + "0.weight"].T + w[m + "0.bias"]
    f = 0.5 * f * (1 + _erf(f / math.sqrt(2)))
    return f @ w[m + "2.weight"].T + w[m + "2.bias"]


def _rmsnorm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def _rope(x, theta):
    """x (T, H, D), HF rotate-half."""
    T, _, D = x.shape
    inv = theta ** (-np.arange(0, D, 2) / D)
    ang = np.arange(T)[:, None] * inv[None]  # (T, D/2)
    cos = np.concatenate([np.cos(ang)] * 2, -1)[:, None]
    sin = np.concatenate([np.sin(ang)] * 2, -1)[:, None]
    rot = np.concatenate([-x[..., D // 2:], x[..., :D // 2]], -1)
    return x * cos + rot * sin


def logits(w, cfg, ids, feats=None):
    """ids (T) -> (T, V0 + 9); the <im_patch> rows take feats (N, L) in order."""
    c = cfg["llm"]
    C, H, Hkv, L = c["dim"], c["heads"], c["kv_heads"], c["layers"]
    D = C // H
    eps, theta = c.get("norm_eps", 1e-5), c.get("rope_theta", 10000)
    table = np.concatenate([w["model.embed_tokens.weight"], w["model.embed_tokens.added_rows"]])
    x = table[ids]
    patch = np.nonzero(np.asarray(ids) == cfg["tokens"]["im_patch"])[0]
    if len(patch):
        x[patch] = feats
    T = len(ids)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(L):
        p = f"model.layers.{l}."
        a = _rmsnorm(x, w[p + "input_layernorm.weight"], eps)
        q = _rope((a @ w[p + "self_attn.q_proj.weight"].T).reshape(T, H, D), theta)
        k = _rope((a @ w[p + "self_attn.k_proj.weight"].T).reshape(T, Hkv, D), theta)
        v = (a @ w[p + "self_attn.v_proj.weight"].T).reshape(T, Hkv, D)
        k = np.repeat(k, H // Hkv, 1)
        v = np.repeat(v, H // Hkv, 1)
        s = np.einsum("thd,shd->hts", q, k) / math.sqrt(D) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = np.einsum("hts,shd->thd", s, v).reshape(T, C)
        x = x + o @ w[p + "self_attn.o_proj.weight"].T
        a = _rmsnorm(x, w[p + "post_attention_layernorm.weight"], eps)
        g = a @ w[p + "mlp.gate_proj.weight"].T
        u = a @ w[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ w[p + "mlp.down_proj.weight"].T
    x = _rmsnorm(x, w["model.norm.weight"], eps)
    head = np.concatenate([w["lm_head.weight"], w["lm_head.added_rows"]])
    return x @ head.T


def main():
    # gguf_reference.py CKPT_DIR IDS_JSON OUT.npy [IMAGE.png]: logits of the ids (with the image)
    import yaml
    ckpt, ids_path, out = sys.argv[1:4]
    cfg = yaml.safe_load(open(f"{ckpt}/config.yaml"))["model"]
    w = load_safetensors(f"{ckpt}/model.safetensors")
    ids = json.load(open(ids_path))
    feats = None
    if len(sys.argv) > 4:
        from PIL import Image
        feats = image_features(w, cfg, np.asarray(Image.open(sys.argv[4]).convert("RGB")))
    np.save(out, logits(w, cfg, ids, feats).astype(np.float32))


if __name__ == "__main__":
    main()
