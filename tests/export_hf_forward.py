#!/usr/bin/env python3
"""export_hf_forward.py EXPORT_DIR (--dump DUMP.safetensors | --ids IDS --logits F.npy
[--image F.npy]) [--tol T]

Runs LlavaForConditionalGeneration's forward as transformers defines it (CLIPVisionModel with
pre_layrnorm and hidden_states[vision_feature_layer], the CLS dropped for "default", the
Linear-GELU-Linear projector, masked_scatter of the image features into the <image> token
embeddings, the Llama decoder with rotate-half RoPE and GQA) in numpy (float64), from the
exported folder alone (config.json + model.safetensors), and compares the logits with groundc's.

The dump (written by tests/test_export_hf_forward.c) holds "ids" I32 (T), "logits" F32 (T, V)
and optionally "image" U8 (S, S, 3): the square image as groundc's model received it (after
padding and resizing). --ids takes comma-separated ids instead. Exit 0 when every logit is
within --tol (default 1e-3) of groundc's; 1 otherwise, with the worst position."""
import json, os, sys
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_read import read_raw  # noqa: E402


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def act(name, x):
    if name == "quick_gelu":
        return x / (1 + np.exp(-1.702 * x))
    if name == "gelu":
        from math import erf
        return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))
    raise SystemExit(f"unknown activation {name}")


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def clip_vision(W, vc, pixels):
    """pixels (3, S, S) -> hidden_states list, each (1 + N, C)."""
    p, C = vc["patch_size"], vc["hidden_size"]
    pre = "model.vision_tower.vision_model."
    conv = W[pre + "embeddings.patch_embedding.weight"]  # (C, 3, p, p)
    S = pixels.shape[1]
    g = S // p
    # Conv2d with stride p: patches row-major over (row, col), each (3, p, p) flattened.
    patches = pixels.reshape(3, g, p, g, p).transpose(1, 3, 0, 2, 4).reshape(g * g, -1)
    emb = patches @ conv.reshape(C, -1).T
    x = np.concatenate([W[pre + "embeddings.class_embedding"][None], emb], 0)
    x = x + W[pre + "embeddings.position_embedding.weight"]
    eps = vc["layer_norm_eps"]
    x = layer_norm(x, W[pre + "pre_layrnorm.weight"], W[pre + "pre_layrnorm.bias"], eps)
    states = [x]
    H = vc["num_attention_heads"]
    D = C // H
    for l in range(vc["num_hidden_layers"]):
        q = f"{pre}encoder.layers.{l}."
        lin = lambda n, h: h @ W[q + n + ".weight"].T + W[q + n + ".bias"]
        h = layer_norm(x, W[q + "layer_norm1.weight"], W[q + "layer_norm1.bias"], eps)
        Q = (lin("self_attn.q_proj", h) * D ** -0.5).reshape(-1, H, D).transpose(1, 0, 2)
        K = lin("self_attn.k_proj", h).reshape(-1, H, D).transpose(1, 0, 2)
        V = lin("self_attn.v_proj", h).reshape(-1, H, D).transpose(1, 0, 2)
        a = (softmax(Q @ K.transpose(0, 2, 1)) @ V).transpose(1, 0, 2).reshape(-1, C)
        x = x + lin("self_attn.out_proj", a)
        h = layer_norm(x, W[q + "layer_norm2.weight"], W[q + "layer_norm2.bias"], eps)
        x = x + lin("mlp.fc2", act(vc["hidden_act"], lin("mlp.fc1", h)))
        states.append(x)
    return states


def rope(x, pos, theta):
    """x (H, T, D), rotate-half convention."""
    D = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, D, 2, dtype=np.float64) / D)
    f = pos[:, None] * inv[None]
    emb = np.concatenate([f, f], -1)
    cos, sin = np.cos(emb), np.sin(emb)
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return x * cos + np.concatenate([-x2, x1], -1) * sin


def rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def theta_of(tc):
    rp = tc.get("rope_parameters") or {}
    return rp.get("rope_theta", tc.get("rope_theta", 10000.0))


def llama(W, tc, x):
    T = x.shape[0]
    H, Hkv = tc["num_attention_heads"], tc["num_key_value_heads"]
    D = tc.get("head_dim") or tc["hidden_size"] // H
    eps, theta = tc["rms_norm_eps"], theta_of(tc)
    pos = np.arange(T, dtype=np.float64)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    pre = "model.language_model."
    for l in range(tc["num_hidden_layers"]):
        q = f"{pre}layers.{l}."
        h = rms(x, W[q + "input_layernorm.weight"], eps)
        Q = (h @ W[q + "self_attn.q_proj.weight"].T).reshape(T, H, D).transpose(1, 0, 2)
        K = (h @ W[q + "self_attn.k_proj.weight"].T).reshape(T, Hkv, D).transpose(1, 0, 2)
        V = (h @ W[q + "self_attn.v_proj.weight"].T).reshape(T, Hkv, D).transpose(1, 0, 2)
        Q, K = rope(Q, pos, theta), rope(K, pos, theta)
        K, V = np.repeat(K, H // Hkv, 0), np.repeat(V, H // Hkv, 0)  # repeat_kv
        a = softmax(Q @ K.transpose(0, 2, 1) / np.sqrt(D) + mask) @ V
        x = x + a.transpose(1, 0, 2).reshape(T, H * D) @ W[q + "self_attn.o_proj.weight"].T
        h = rms(x, W[q + "post_attention_layernorm.weight"], eps)
        g = h @ W[q + "mlp.gate_proj.weight"].T
        u = h @ W[q + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ W[q + "mlp.down_proj.weight"].T
    x = rms(x, W[pre + "norm.weight"], eps)
    return x @ W["lm_head.weight"].T


def forward(export, ids, image):
    cfg = json.load(open(os.path.join(export, "config.json")))
    W = {k: v.astype(np.float64) for k, v in read_raw(os.path.join(export, "model.safetensors")).items()}
    tc, vc = cfg["text_config"], cfg["vision_config"]
    x = W["model.language_model.embed_tokens.weight"][ids]
    img_id = cfg.get("image_token_index", cfg.get("image_token_id"))
    where = np.nonzero(ids == img_id)[0]
    if image is not None:
        mean = np.array([0.48145466, 0.4578275, 0.40821073])
        std = np.array([0.26862954, 0.26130258, 0.27577711])
        pixels = ((image.astype(np.float64) / 255.0 - mean) / std).transpose(2, 0, 1)
        feats = clip_vision(W, vc, pixels)[cfg["vision_feature_layer"]]
        if cfg["vision_feature_select_strategy"] == "default":
            feats = feats[1:]
        pre = "model.multi_modal_projector."
        h = feats @ W[pre + "linear_1.weight"].T + W[pre + "linear_1.bias"]
        h = act(cfg["projector_hidden_act"], h)
        h = h @ W[pre + "linear_2.weight"].T + W[pre + "linear_2.bias"]
        if len(where) != h.shape[0]:
            raise SystemExit(f"{len(where)} image tokens in the ids, {h.shape[0]} image features")
        x = x.copy()
        x[where] = h
    elif len(where):
        raise SystemExit("image tokens in the ids but no image")
    return llama(W, tc, x)


def main():
    args = sys.argv[1:]
    if not args:
        raise SystemExit(__doc__)
    export, tol = args[0], 1e-3
    opts = dict(zip(args[1::2], args[2::2]))
    if "--tol" in opts:
        tol = float(opts["--tol"])
    image = None
    if "--dump" in opts:
        d = read_raw(opts["--dump"])
        ids, ref, image = d["ids"].astype(np.int64), d["logits"].astype(np.float64), d.get("image")
    else:
        ids = np.array([int(t) for t in opts["--ids"].split(",")], np.int64)
        ref = np.load(opts["--logits"]).astype(np.float64)
        if "--image" in opts:
            image = np.load(opts["--image"])
    got = forward(export, ids, image)
    if got.shape != ref.shape:
        print(f"logits shape {got.shape}, groundc's {ref.shape}")
        return 1
    err = np.abs(got - ref)
    t, v = np.unravel_index(err.argmax(), err.shape)
    print(f"export_hf_forward: {ref.shape[0]} positions x {ref.shape[1]} logits "
          f"(image: {'yes' if image is not None else 'no'}), max |diff| {err.max():.3g} at "
          f"position {t} id {v} (logit scale {np.abs(ref).max():.3g}); argmax agrees at "
          f"{int((got.argmax(-1) == ref.argmax(-1)).sum())}/{ref.shape[0]}")
    return 0 if err.max() <= tol else 1


if __name__ == "__main__":
    sys.exit(main())
