#!/usr/bin/env python3
"""make_fixtures.py: the golden fixtures of tests/test_golden.c, made by the real reference
implementations. Needs torch and transformers (4.4x or 5.x) with safetensors; the GPU machine
has them (torch 2.11, transformers 5.17), Debian does not. Runs on the CPU in seconds.

    python3 scripts/make_fixtures.py [--out tests/fixtures/golden]

Builds three tiny random models with transformers, in eval mode:
  llama/    LlamaForCausalLM (vocab 64, hidden 32, 2 layers, 4 heads, 2 kv heads: grouped-query
            attention, ffn 48, untied lm_head), written by save_pretrained
  clip/     CLIPVisionModel (image 28, patch 14, hidden 32, 3 layers, 4 heads, mlp 64,
            quick_gelu), written by save_pretrained
  blip2.safetensors
            Blip2QFormerModel (hidden 32, 3 layers, 4 heads, intermediate 48, cross-attention
            every 2nd layer over width 24) under the names a Blip2ForConditionalGeneration
            checkpoint gives it: qformer.*, query_tokens (1, 5, 32) and BLIP-2's ln_vision as
            vision_model.post_layernorm.*
and model.yaml, the groundc model those weights fit. Every weight is redrawn from a fixed seed
(LayerNorm / RMSNorm weights near 1, biases small, matrices ~ 1/sqrt(fan in)) so that no
parameter keeps a trivial init value, then saved as float32. The references run in float64
from those float32 values and are stored in reference.safetensors:
  llama.ids i32 (B, T); llama.logits f64 (B, T, V); llama.r f64; the gradients of
      L = sum(logits * r) w.r.t. a few weights: llama.grad.<HF name> f32
  clip.images u8 (B, H, W, 3) (normalised with CLIP's mean and std, as groundc does);
      clip.hidden f64 (B, N, C): hidden_states[-2] without the CLS row, what LLaVA (and
      GroundingGPT) feed the projector; clip.r; clip.grad.input f32 (B, H, W, 3), the
      gradient w.r.t. the normalised pixels, channels-last; clip.grad.<HF name> f32
  qformer.enc f32 (B, P, 24), the frame ViT's hidden states; qformer.out f64 (B, Q, 32) =
      Q-Former(query_tokens, LayerNorm_eps1e-5(enc)); qformer.r; qformer.grad.enc f32;
      qformer.grad.<checkpoint name> f32
The metadata holds the versions and the loss values (<model>.loss). Deterministic for given
torch and transformers versions.
"""
import argparse
import json
import os

import torch
import torch.nn.functional as F

try:
    import transformers
    from safetensors.torch import save_file
    from transformers import (Blip2QFormerConfig, Blip2QFormerModel, CLIPVisionConfig,
                              CLIPVisionModel, LlamaConfig, LlamaForCausalLM)
except ImportError as e:
    raise SystemExit(f"make_fixtures.py needs torch, transformers and safetensors: {e}")

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LLAMA = dict(vocab=64, dim=32, layers=2, heads=4, kv_heads=2, ffn=48, max_seq=64,
             rope_theta=10000.0, norm_eps=1e-6, batch=2, seq=9)
CLIP = dict(image=28, patch=14, width=32, layers=3, heads=4, mlp=64, eps=1e-5, batch=2)
QFORMER = dict(hidden=32, layers=3, heads=4, intermediate=48, cross_every=2, enc_width=24,
               queries=5, ln_eps=1e-5, batch=2, enc_tokens=5)


def eager(config):
    """The plain attention code path (no SDPA kernel choice in the reference)."""
    try:
        config._attn_implementation = "eager"
    except Exception:  # a version without the switch: its default is fine in float64
        pass
    return config


def redraw(model):
    """Every parameter from N(0, 1), scaled: norm weights 1 + 0.1 N, other vectors 0.1 N,
    matrices N / sqrt(fan in); stays float32 (what is saved)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            n = torch.randn(p.shape, dtype=torch.float32)
            norm = "norm" in name.lower() and name.endswith("weight")
            if p.dim() == 1:
                p.copy_(1.0 + 0.1 * n if norm else 0.1 * n)
            else:
                p.copy_(n * p.shape[-1] ** -0.5)


def grads(prefix, params, names):
    out = {}
    for n in names:
        g = params[n].grad
        if g is None:
            raise SystemExit(f"make_fixtures.py: no gradient for {n}")
        out[f"{prefix}.grad.{n}"] = g.detach().to(torch.float32).contiguous()
    return out


def make_llama(out, ref, meta):
    c = LLAMA
    config = eager(LlamaConfig(
        vocab_size=c["vocab"], hidden_size=c["dim"], intermediate_size=c["ffn"],
        num_hidden_layers=c["layers"], num_attention_heads=c["heads"],
        num_key_value_heads=c["kv_heads"], max_position_embeddings=c["max_seq"],
        rms_norm_eps=c["norm_eps"], tie_word_embeddings=False, hidden_act="silu"))
    model = LlamaForCausalLM(config).eval()
    redraw(model)
    model.save_pretrained(os.path.join(out, "llama"))
    model = model.double()
    ids = torch.randint(0, c["vocab"], (c["batch"], c["seq"]))
    logits = model(input_ids=ids).logits.to(torch.float64)  # (B, T, V)
    r = torch.randn(logits.shape, dtype=torch.float64)
    loss = (logits * r).sum()
    loss.backward()
    ref["llama.ids"] = ids.to(torch.int32)
    ref["llama.logits"] = logits.detach()
    ref["llama.r"] = r
    meta["llama.loss"] = repr(loss.item())
    ref.update(grads("llama", dict(model.named_parameters()),
                     ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                      "model.layers.0.self_attn.k_proj.weight",
                      "model.layers.1.mlp.down_proj.weight",
                      "model.layers.1.post_attention_layernorm.weight", "model.norm.weight",
                      "lm_head.weight"]))


def make_clip(out, ref, meta):
    c = CLIP
    config = eager(CLIPVisionConfig(
        hidden_size=c["width"], intermediate_size=c["mlp"], num_hidden_layers=c["layers"],
        num_attention_heads=c["heads"], image_size=c["image"], patch_size=c["patch"],
        num_channels=3, hidden_act="quick_gelu", layer_norm_eps=c["eps"], projection_dim=16))
    model = CLIPVisionModel(config).eval()
    redraw(model)
    model.save_pretrained(os.path.join(out, "clip"))
    model = model.double()
    images = torch.randint(0, 256, (c["batch"], c["image"], c["image"], 3), dtype=torch.uint8)
    x = images.to(torch.float64) / 255.0
    x = (x - torch.tensor(CLIP_MEAN, dtype=torch.float64)) / torch.tensor(CLIP_STD,
                                                                          dtype=torch.float64)
    x = x.permute(0, 3, 1, 2).contiguous().requires_grad_(True)  # NCHW, as the processor gives
    hs = model(pixel_values=x, output_hidden_states=True).hidden_states
    if len(hs) != c["layers"] + 1:
        raise SystemExit(f"make_fixtures.py: {len(hs)} CLIP hidden states, want {c['layers'] + 1}")
    h = hs[-2][:, 1:]  # LLaVA's select_layer -2, CLS dropped
    r = torch.randn(h.shape, dtype=torch.float64)
    loss = (h * r).sum()
    loss.backward()
    ref["clip.images"] = images
    ref["clip.hidden"] = h.detach()
    ref["clip.r"] = r
    ref["clip.grad.input"] = x.grad.permute(0, 2, 3, 1).to(torch.float32).contiguous()
    meta["clip.loss"] = repr(loss.item())
    p = "vision_model."
    ref.update(grads("clip", dict(model.named_parameters()),
                     [p + "embeddings.patch_embedding.weight", p + "embeddings.class_embedding",
                      p + "embeddings.position_embedding.weight", p + "pre_layrnorm.weight",
                      p + "encoder.layers.0.self_attn.q_proj.weight",
                      p + "encoder.layers.1.mlp.fc1.bias",
                      p + "encoder.layers.1.self_attn.out_proj.weight"]))


def make_qformer(out, ref, meta):
    c = QFORMER
    config = eager(Blip2QFormerConfig(
        hidden_size=c["hidden"], num_hidden_layers=c["layers"], num_attention_heads=c["heads"],
        intermediate_size=c["intermediate"], cross_attention_frequency=c["cross_every"],
        encoder_hidden_size=c["enc_width"], hidden_act="gelu", layer_norm_eps=1e-12))
    model = Blip2QFormerModel(config).eval()
    redraw(model)
    query = torch.randn(1, c["queries"], c["hidden"], dtype=torch.float32)
    ln_w = 1.0 + 0.1 * torch.randn(c["enc_width"], dtype=torch.float32)
    ln_b = 0.1 * torch.randn(c["enc_width"], dtype=torch.float32)
    weights = {"qformer." + k: v.contiguous() for k, v in model.state_dict().items()}
    weights.update({"query_tokens": query, "vision_model.post_layernorm.weight": ln_w,
                    "vision_model.post_layernorm.bias": ln_b})
    save_file(weights, os.path.join(out, "blip2.safetensors"), metadata={"format": "pt"})
    model = model.double()
    leaves = {"query_tokens": query, "vision_model.post_layernorm.weight": ln_w,
              "vision_model.post_layernorm.bias": ln_b}
    leaves = {k: v.to(torch.float64).requires_grad_(True) for k, v in leaves.items()}
    enc32 = torch.randn(c["batch"], c["enc_tokens"], c["enc_width"], dtype=torch.float32)
    enc = enc32.to(torch.float64).requires_grad_(True)
    ln = F.layer_norm(enc, (c["enc_width"],), leaves["vision_model.post_layernorm.weight"],
                      leaves["vision_model.post_layernorm.bias"], c["ln_eps"])
    q = leaves["query_tokens"].expand(c["batch"], -1, -1)
    o = model(query_embeds=q, encoder_hidden_states=ln).last_hidden_state  # (B, Q, C)
    r = torch.randn(o.shape, dtype=torch.float64)
    loss = (o * r).sum()
    loss.backward()
    ref["qformer.enc"] = enc32
    ref["qformer.out"] = o.detach()
    ref["qformer.r"] = r
    ref["qformer.grad.enc"] = enc.grad.to(torch.float32)
    meta["qformer.loss"] = repr(loss.item())
    params = {"qformer." + k: v for k, v in model.named_parameters()}
    params.update(leaves)
    ref.update(grads("qformer", params,
                     ["query_tokens", "vision_model.post_layernorm.weight",
                      "qformer.layernorm.bias",
                      "qformer.encoder.layer.0.crossattention.attention.key.weight",
                      "qformer.encoder.layer.1.attention.attention.value.bias",
                      "qformer.encoder.layer.2.output_query.dense.weight"]))


def model_yaml(path):
    """The groundc model the three weight sets fit: LLM, image branch (LLaVA's tower: the
    second-to-last block, CLS dropped) and video branch (its frame Q-Former; the EVA tower
    and the adapter are not loaded by the test)."""
    l, v, q = LLAMA, CLIP, QFORMER
    n = (v["image"] // v["patch"]) ** 2
    text = f"""# Written by scripts/make_fixtures.py: the model tests/test_golden.c imports into.
name: golden
dtype: f32
llm:
  vocab: {l['vocab']}
  dim: {l['dim']}
  layers: {l['layers']}
  heads: {l['heads']}
  kv_heads: {l['kv_heads']}
  ffn: {l['ffn']}
  max_seq: {l['max_seq']}
  rope_theta: {l['rope_theta']}
  norm_eps: {l['norm_eps']}
image:
  size: {v['image']}
  tokens: {n}
  encoder:
    patch: {v['patch']}
    width: {v['width']}
    layers: {v['layers']}
    heads: {v['heads']}
    mlp: {v['mlp']}
    select_layer: -2
    norm_eps: {v['eps']}
video:
  frames: 2
  size: {v['image']}
  tokens: 4
  encoder:
    patch: {v['patch']}
    width: {q['enc_width']}
    layers: 2
    heads: 2
    mlp: 32
    select_layer: 2
  frame_qformer:
    hidden: {q['hidden']}
    layers: {q['layers']}
    heads: {q['heads']}
    intermediate: {q['intermediate']}
    cross_attention_every: {q['cross_every']}
    queries: {q['queries']}
    eps: 1.0e-12
    ln_eps: {q['ln_eps']}
  adapter:
    hidden: 32
    layers: 1
    heads: 2
    intermediate: 32
    cross_attention_every: 1
    max_frames: 2
"""
    with open(path, "w") as f:
        f.write(text)


def main():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(here, "tests", "fixtures", "golden"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(20261124)
    ref, meta = {}, {"transformers": transformers.__version__, "torch": torch.__version__}
    for make in (make_llama, make_clip, make_qformer):
        make(a.out, ref, meta)
    meta["config"] = json.dumps({"llama": LLAMA, "clip": CLIP, "qformer": QFORMER})
    ref = {k: v.detach().contiguous() for k, v in ref.items()}
    save_file(ref, os.path.join(a.out, "reference.safetensors"), metadata=meta)
    model_yaml(os.path.join(a.out, "model.yaml"))
    with open(os.path.join(a.out, "README.md"), "w") as f:
        f.write("# Golden fixtures\n\n"
                "Tiny random transformers models (LlamaForCausalLM, CLIPVisionModel, "
                "Blip2QFormerModel), their outputs\nand gradients, for `tests/test_golden.c`. "
                f"Made with transformers {transformers.__version__} and torch "
                f"{torch.__version__}\n(deterministic for those versions), from the repository "
                "root:\n\n    python3 scripts/make_fixtures.py\n\n"
                "See the script's header for what each file holds.\n")
    print(f"make_fixtures.py: wrote {a.out} (transformers {transformers.__version__}, "
          f"torch {torch.__version__})")


if __name__ == "__main__":
    main()
