#!/usr/bin/python3
# qformer_reference.py: writes tests/fixtures/qformer/reference.safetensors, the PyTorch
# reference that tests/test_qformer.c checks model/qformer.c and model/adapters.c against.
#
# Generated with (Debian's python3, torch 1.13, numpy; from the repository root):
#   /usr/bin/python3 tests/qformer_reference.py
#
# transformers is not installed here, so the BLIP-2 Q-Former is written directly in torch,
# following transformers' Blip2QFormerModel for query tokens only (eval mode, so no dropout):
#   x = LayerNorm(query_embeds)                                    eps 1e-12 everywhere
#   per layer l:
#     self-attention: q, k, v = Linear(x) with bias, heads split, softmax(q k^T / sqrt(D) + m),
#       context -> output.dense -> LayerNorm(dense + x)            (BertSelfOutput, post-LN)
#     if l % cross_attention_frequency == 0: the same with k, v = Linear(encoder states)
#       (encoder width), m = (1 - encoder_attention_mask) * finfo.min (invert_attention_mask)
#     FFN for the queries: intermediate_query.dense -> GELU (erf) -> output_query.dense ->
#       LayerNorm(dense + x)
# and GroundingGPT's adapters around it (LEGO.py: encode_videoQformer_visual,
# encode_audioQformer, mm_vision_projector). Everything runs in float64 from float32 weights
# and inputs, so the stored results are exact references for a float32 computation.
#
# File layout (read by the C test):
#   - weights under the names the C modules give them: "qformer.*" (HF Blip2QFormer names,
#     prefix "qformer."), "model.video_Qformer.bert.*", "model.audio_Qformer.bert.*",
#     "model.Qformer.bert.*" (LAVIS BERT names) and the adapters' own "model.*" tensors;
#     the learned query tokens of the Q-Former case are "query_tokens";
#   - per case <c> in {qformer, projector, frame, video, audio}: inputs "case.<c>.<input>",
#     the seed "case.<c>.r" of the loss sum(out * r) (F32, U8 for masks), the output
#     "case.<c>.out" and gradients "case.<c>.grad.<input or weight name>" (F64);
#   - every size in the metadata as "<c>.<field>".
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

import st_write  # tests/st_write.py

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_PATH = os.path.join(HERE, "fixtures", "qformer", "reference.safetensors")

torch.manual_seed(20240611)
tensors = {}  # name -> (dtype string, numpy array)
meta = {}


def put(name, t, f64=False):
    """Weights and inputs are float32 (their values are exactly float32 anyway); results,
    f64=True, keep float64 so that the C side's f64 run is checked tightly."""
    assert name not in tensors, name
    t = t.detach().contiguous()
    if f64:
        tensors[name] = ("F64", t.to(torch.float64).numpy())
    elif t.dtype in (torch.float32, torch.float64):
        tensors[name] = ("F32", t.to(torch.float32).numpy())
    elif t.dtype in (torch.uint8, torch.bool):
        tensors[name] = ("U8", t.to(torch.uint8).numpy())
    else:
        raise ValueError(f"{name}: unsupported dtype {t.dtype}")


def rand(*shape, std=1.0, mean=0.0):
    # float32 values (what the C side loads), promoted to float64 for the computation
    return (torch.randn(*shape) * std + mean).to(torch.float32).to(torch.float64)


# --- The Q-Former ---------------------------------------------------------------------------

def qformer_names(cfg):
    """Parameter names and shapes in creation order, as model/qformer.c makes them."""
    C, Ce, I = cfg["hidden"], cfg["encoder_width"], cfg["intermediate"]
    lavis = cfg["names"] == "lavis"
    inner = "self" if lavis else "attention"
    ln = "embeddings.LayerNorm" if lavis else "layernorm"
    out = [(ln + ".weight", (C,)), (ln + ".bias", (C,))]
    for l in range(cfg["layers"]):
        blocks = [("attention", C)]
        if l % cfg["cross_freq"] == 0:
            blocks.append(("crossattention", Ce))
        for block, kv in blocks:
            p = f"encoder.layer.{l}.{block}"
            out += [(f"{p}.{inner}.query.weight", (C, C)), (f"{p}.{inner}.query.bias", (C,)),
                    (f"{p}.{inner}.key.weight", (C, kv)), (f"{p}.{inner}.key.bias", (C,)),
                    (f"{p}.{inner}.value.weight", (C, kv)), (f"{p}.{inner}.value.bias", (C,)),
                    (f"{p}.output.dense.weight", (C, C)), (f"{p}.output.dense.bias", (C,)),
                    (f"{p}.output.LayerNorm.weight", (C,)), (f"{p}.output.LayerNorm.bias", (C,))]
        p = f"encoder.layer.{l}"
        out += [(f"{p}.intermediate_query.dense.weight", (I, C)),
                (f"{p}.intermediate_query.dense.bias", (I,)),
                (f"{p}.output_query.dense.weight", (C, I)), (f"{p}.output_query.dense.bias", (C,)),
                (f"{p}.output_query.LayerNorm.weight", (C,)),
                (f"{p}.output_query.LayerNorm.bias", (C,))]
    return out


def make_params(prefix, names_shapes, W):
    """Random weights (LayerNorm weights near 1, biases small) registered in W."""
    for name, shape in names_shapes:
        full = prefix + name
        if "LayerNorm.weight" in name or name.endswith("layernorm.weight") or \
                name.endswith("ln_vision.weight"):
            t = rand(*shape, std=0.1, mean=1.0)
        elif name.endswith("bias"):
            t = rand(*shape, std=0.1)
        else:
            t = rand(*shape, std=1.0 / math.sqrt(shape[-1]))
        W[full] = t.requires_grad_(True)


def qformer_forward(cfg, W, prefix, query_embeds, enc, enc_mask):
    """Blip2QFormerModel.forward(query_embeds, encoder_hidden_states, encoder_attention_mask)
    .last_hidden_state, eval mode."""
    C, H, eps = cfg["hidden"], cfg["heads"], 1e-12
    D = C // H
    lavis = cfg["names"] == "lavis"
    inner = "self" if lavis else "attention"
    g = lambda n: W[prefix + n]

    def ln(x, p):
        return F.layer_norm(x, (C,), g(p + ".weight"), g(p + ".bias"), eps)

    def heads(x):  # (B, T, C) -> (B, H, T, D): transpose_for_scores
        return x.view(x.shape[0], x.shape[1], H, D).permute(0, 2, 1, 3)

    def attention(p, x, kv, ext_mask):
        q = heads(F.linear(x, g(f"{p}.{inner}.query.weight"), g(f"{p}.{inner}.query.bias")))
        k = heads(F.linear(kv, g(f"{p}.{inner}.key.weight"), g(f"{p}.{inner}.key.bias")))
        v = heads(F.linear(kv, g(f"{p}.{inner}.value.weight"), g(f"{p}.{inner}.value.bias")))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(D)
        if ext_mask is not None:
            scores = scores + ext_mask
        probs = torch.softmax(scores, dim=-1)
        ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous().view(x.shape[0], -1, C)
        dense = F.linear(ctx, g(f"{p}.output.dense.weight"), g(f"{p}.output.dense.bias"))
        return ln(dense + x, f"{p}.output.LayerNorm")

    x = ln(query_embeds, "embeddings.LayerNorm" if lavis else "layernorm")
    B = enc.shape[0]
    x = x.expand(B, -1, -1)  # Blip2 expands the query tokens over the batch
    if enc_mask is None:
        enc_mask = torch.ones(enc.shape[:2], dtype=torch.float64)
    ext = (1.0 - enc_mask.to(torch.float64))[:, None, None, :] * torch.finfo(torch.float64).min
    for l in range(cfg["layers"]):
        p = f"encoder.layer.{l}"
        x = attention(f"{p}.attention", x, x, None)
        if l % cfg["cross_freq"] == 0:
            x = attention(f"{p}.crossattention", x, enc, ext)
        h = F.gelu(F.linear(x, g(f"{p}.intermediate_query.dense.weight"),
                            g(f"{p}.intermediate_query.dense.bias")))
        h = F.linear(h, g(f"{p}.output_query.dense.weight"), g(f"{p}.output_query.dense.bias"))
        x = ln(h + x, f"{p}.output_query.LayerNorm")
    return x


def put_config(case, cfg):
    for k, v in cfg.items():
        meta[f"{case}.{k}"] = str(v)


def finish(case, out, inputs, weight_names, W):
    """Stores out, the seed r and the gradients of sum(out * r)."""
    r = rand(*out.shape)
    (out * r).sum().backward()
    put(f"case.{case}.out", out, f64=True)
    put(f"case.{case}.r", r)
    for name, t in inputs.items():
        put(f"case.{case}.{name}", t)
        if t.requires_grad:
            put(f"case.{case}.grad.{name}", t.grad, f64=True)
    for name in weight_names:
        put(f"case.{case}.grad.{name}", W[name].grad, f64=True)


W = {}  # every weight of every case, by full name

# Case "qformer": the bare Q-Former with HF names, hidden 32 != encoder width 24, 3 layers
# (cross-attention in layers 0 and 2), 4 heads, 5 queries, a padding mask on sample 1.
qf = dict(hidden=32, layers=3, heads=4, intermediate=64, encoder_width=24, cross_freq=2,
          queries=5, batch=2, enc_len=7, names="hf")
put_config("qformer", qf)
make_params("qformer.", qformer_names(qf), W)
W["query_tokens"] = rand(1, qf["queries"], qf["hidden"]).requires_grad_(True)
enc = rand(qf["batch"], qf["enc_len"], qf["encoder_width"]).requires_grad_(True)
mask = torch.ones(qf["batch"], qf["enc_len"], dtype=torch.uint8)
mask[1, 4:] = 0
out = qformer_forward(qf, W, "qformer.", W["query_tokens"], enc, mask)
finish("qformer", out, {"enc": enc, "mask": mask},
       ["query_tokens", "qformer.layernorm.weight",
        "qformer.encoder.layer.0.crossattention.attention.key.weight",
        "qformer.encoder.layer.1.intermediate_query.dense.weight",
        "qformer.encoder.layer.2.attention.attention.value.bias"], W)

# Case "projector": mm_vision_projector = Linear(12, 20) -> GELU -> Linear(20, 20).
pj = dict(vision_dim=12, llm_dim=20, batch=2, tokens=5)
put_config("projector", pj)
pre = "model.mm_vision_projector."
make_params(pre, [("0.weight", (20, 12)), ("0.bias", (20,)), ("2.weight", (20, 20)),
                  ("2.bias", (20,))], W)
feat = rand(pj["batch"], pj["tokens"], pj["vision_dim"]).requires_grad_(True)
out = F.linear(F.gelu(F.linear(feat, W[pre + "0.weight"], W[pre + "0.bias"])),
               W[pre + "2.weight"], W[pre + "2.bias"])
finish("projector", out, {"x": feat}, [pre + "0.weight", pre + "2.bias"], W)

# Case "frame": ln_vision (eps 1e-5) -> BLIP-2 Q-Former (LAVIS names, cross-attention every
# 2nd layer) with 3 learned queries, over 4 frames of 6 ViT tokens 20 wide.
fr = dict(hidden=16, layers=2, heads=4, intermediate=32, encoder_width=20, cross_freq=2,
          queries=3, frames=4, tokens=6, names="lavis")
put_config("frame", fr)
make_params("model.", [("ln_vision.weight", (20,)), ("ln_vision.bias", (20,))], W)
W["model.query_tokens"] = rand(1, fr["queries"], fr["hidden"]).requires_grad_(True)
make_params("model.Qformer.bert.", qformer_names(fr), W)
vit = rand(fr["frames"], fr["tokens"], fr["encoder_width"]).requires_grad_(True)
h = F.layer_norm(vit, (20,), W["model.ln_vision.weight"], W["model.ln_vision.bias"], 1e-5)
out = qformer_forward(fr, W, "model.Qformer.bert.", W["model.query_tokens"], h, None)
finish("frame", out, {"vit": vit}, ["model.ln_vision.weight"], W)

# Case "video": frame Q-Former outputs of 2 videos x 4 frames x 3 queries, 12 wide, + frame
# position embedding (5 rows), video Q-Former (hidden 16, 2 layers, cross-attention every
# layer, 6 queries) -> llama_proj (16 -> 20).
vd = dict(hidden=16, layers=2, heads=4, intermediate=32, encoder_width=12, cross_freq=1,
          queries=6, max_frames=5, llm_dim=20, videos=2, frames=4, frame_queries=3,
          names="lavis")
put_config("video", vd)
W["model.video_query_tokens"] = rand(1, vd["queries"], vd["hidden"]).requires_grad_(True)
W["model.video_frame_position_embedding.weight"] = \
    rand(vd["max_frames"], vd["encoder_width"]).requires_grad_(True)
make_params("model.", [("llama_proj.weight", (vd["llm_dim"], vd["hidden"])),
                       ("llama_proj.bias", (vd["llm_dim"],))], W)
make_params("model.video_Qformer.bert.", qformer_names(vd), W)
frames = rand(vd["videos"] * vd["frames"], vd["frame_queries"],
              vd["encoder_width"]).requires_grad_(True)
# as encode_videoQformer_visual: '(b t) q h -> b t q h', + pos[t] over q, 'b t q h -> b (t q) h'
x = frames.view(vd["videos"], vd["frames"], vd["frame_queries"], vd["encoder_width"])
pos = W["model.video_frame_position_embedding.weight"][: vd["frames"]]
x = (x + pos[None, :, None, :]).reshape(vd["videos"], -1, vd["encoder_width"])
y = qformer_forward(vd, W, "model.video_Qformer.bert.", W["model.video_query_tokens"], x, None)
out = F.linear(y, W["model.llama_proj.weight"], W["model.llama_proj.bias"])
finish("video", out, {"frames": frames},
       ["model.video_query_tokens", "model.video_frame_position_embedding.weight",
        "model.llama_proj.weight",
        "model.video_Qformer.bert.encoder.layer.1.crossattention.self.key.weight"], W)

# Case "audio": 2 sounds x 3 clip embeddings 10 wide + audio position embedding (8 rows),
# audio Q-Former (hidden 16, 2 heads, 2 layers, cross-attention every layer, 4 queries) ->
# audio_llama_proj (16 -> 20).
au = dict(hidden=16, layers=2, heads=2, intermediate=24, encoder_width=10, cross_freq=1,
          queries=4, max_clips=8, llm_dim=20, sounds=2, clips=3, names="lavis")
put_config("audio", au)
W["model.audio_query_tokens"] = rand(1, au["queries"], au["hidden"]).requires_grad_(True)
W["model.audio_position_embedding.weight"] = \
    rand(au["max_clips"], au["encoder_width"]).requires_grad_(True)
make_params("model.", [("audio_llama_proj.weight", (au["llm_dim"], au["hidden"])),
                       ("audio_llama_proj.bias", (au["llm_dim"],))], W)
make_params("model.audio_Qformer.bert.", qformer_names(au), W)
clips = rand(au["sounds"], au["clips"], au["encoder_width"]).requires_grad_(True)
x = clips + W["model.audio_position_embedding.weight"][: au["clips"]][None]
y = qformer_forward(au, W, "model.audio_Qformer.bert.", W["model.audio_query_tokens"], x, None)
out = F.linear(y, W["model.audio_llama_proj.weight"], W["model.audio_llama_proj.bias"])
finish("audio", out, {"clips": clips},
       ["model.audio_query_tokens", "model.audio_position_embedding.weight",
        "model.audio_llama_proj.weight", "model.audio_Qformer.bert.embeddings.LayerNorm.bias"], W)

for name, t in W.items():
    put(name, t)




st_write.write(OUT_PATH, tensors, meta)
print(f"wrote {OUT_PATH}: {len(tensors)} tensors, {os.path.getsize(OUT_PATH)} bytes")
