"""gguf_reference.py: an independent numpy forward of a groundc checkpoint's LLM and image path,
read from its model.safetensors (GroundingGPT names), for tests/test_export_gguf.sh:

  image features   u8 (S, S, 3) -> CLIP pixels -> patch conv (the checkpoint keeps groundc's
                   (C, kh, kw, cin) patch layout) -> [CLS; patches] + positions -> pre-LN ->
                   blocks up to the feature layer -> CLS dropped -> Linear-GELU(erf)-Linear
  logits           ids (T) -> embeddings (base rows + the 9 added rows), patch rows replaced
                   by the image features -> Llama blocks (HF rotate-half RoPE) -> (T, V0 + 9)

It shares no code with groundc or llama.cpp: a third implementation to judge both by (the
Llama blocks are llama_logits_reference.py's, the safetensors reader st_read.py's).
Also a module: load_safetensors, image_features, logits.
"""
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_logits_reference import forward as llama_forward  # noqa: E402
from st_read import read as load_safetensors  # noqa: E402

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])


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


def logits(w, cfg, ids, feats=None):
    """ids (T) -> (T, V0 + 9); the <im_patch> rows take feats (N, L) in order."""
    return llama_forward(w, cfg["llm"], ids, feats, cfg["tokens"]["im_patch"])


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
