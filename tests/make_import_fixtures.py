#!/usr/bin/python3
# make_import_fixtures.py: writes tests/fixtures/import/, tiny pretrained-weight files under the
# exact names and shapes that Hugging Face transformers (and the LAVIS / ImageBind originals)
# save, for tests/test_import.c (train/import.h):
#
#   llama-<dt>-<layout>/   LlamaForCausalLM (vocab 40, dim 16, 2 layers, 2 heads, 1 kv head,
#                          ffn 24) with a RoPE inv_freq buffer as older checkpoints have
#   clip-<dt>-<layout>/    CLIPModel (image 8, patch 4, width 16, 3 layers, 2 heads, mlp 32):
#                          vision_model.* with post_layernorm and the position_ids buffer,
#                          plus text_model.*, projections and logit_scale (not the tower's)
#   blip2-<dt>-<layout>/   Blip2ForConditionalGeneration pieces: qformer.* (Blip2QFormerModel,
#                          hidden 16, 2 layers, cross-attention every 2nd with encoder width
#                          24, both query and text FFNs), query_tokens (1, 4, 16),
#                          vision_model.post_layernorm.* and one vision layer tensor,
#                          language_model.* (not the Q-Former's)
#   eva-f32.safetensors    LAVIS eva_vit.py names (image 8, patch 4, width 24, 3 blocks)
#   imagebind-f32.safetensors
#                          ImageBind audio branch (fbank 16 x 20, patch 8, width 16, 2 blocks,
#                          embed 16) with the logit-scale buffer and a vision tensor
#
# <dt> is f32, f16 or bf16 (the f16 and bf16 values are the f32 ones rounded to nearest even);
# <layout> is "single" (model.safetensors) or "sharded" (two shards + model.safetensors.index
# .json, as transformers writes them). tests/fixtures/import/model.yaml is the model config the
# files fit. The safetensors files are written by hand (json + numpy): the pip package is not
# available. Deterministic; regenerate from the repository root with Debian's python3:
#   /usr/bin/python3 tests/make_import_fixtures.py
import json
import os
import struct

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "import")


def raw(t, dt):
    """(dtype string, bytes) of a float tensor t in dt; I64 for integer buffers."""
    if t.dtype == torch.int64:
        return "I64", t.contiguous().numpy().astype("<i8").tobytes()
    t = t.to(torch.float32).contiguous()
    if dt == "f32":
        return "F32", t.numpy().astype("<f4").tobytes()
    if dt == "f16":
        return "F16", t.numpy().astype("<f2").tobytes()  # numpy rounds to nearest even
    return "BF16", t.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()


def write_file(path, items, dt):
    """items: list of (name, tensor), written in that order."""
    header, blobs, off = {}, [], 0
    for name, t in items:
        code, data = raw(t, dt)
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # 8-byte aligned data, as the safetensors library pads
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    return off


def write_model(name, items, dt, layout):
    d = os.path.join(OUT, f"{name}-{dt}-{layout}")
    os.makedirs(d, exist_ok=True)
    for old in os.listdir(d):
        os.remove(os.path.join(d, old))
    if layout == "single":
        write_file(os.path.join(d, "model.safetensors"), items, dt)
        return
    # Two shards, tensors alternating, as a size-capped save spreads them.
    shards = [items[0::2], items[1::2]]
    weight_map, total = {}, 0
    for i, part in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        total += write_file(os.path.join(d, fname), part, dt)
        for n, _ in part:
            weight_map[n] = fname
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")


gen = torch.Generator().manual_seed(20240611)


def rnd(*shape, scale=0.5):
    return torch.randn(*shape, generator=gen, dtype=torch.float64).mul(scale).to(torch.float32)


def llama():
    V, C, L, H, KV, F = 40, 16, 2, 2, 1, 24
    D = C // H
    it = [("model.embed_tokens.weight", rnd(V, C))]
    for l in range(L):
        p = f"model.layers.{l}."
        it += [
            (p + "self_attn.q_proj.weight", rnd(C, C)),
            (p + "self_attn.k_proj.weight", rnd(KV * D, C)),
            (p + "self_attn.v_proj.weight", rnd(KV * D, C)),
            (p + "self_attn.o_proj.weight", rnd(C, C)),
            (p + "mlp.gate_proj.weight", rnd(F, C)),
            (p + "mlp.up_proj.weight", rnd(F, C)),
            (p + "mlp.down_proj.weight", rnd(C, F)),
            (p + "input_layernorm.weight", 1 + rnd(C, scale=0.1)),
            (p + "post_attention_layernorm.weight", 1 + rnd(C, scale=0.1)),
            (p + "self_attn.rotary_emb.inv_freq", 1e4 ** (-torch.arange(0, D, 2).float() / D)),
        ]
    it += [("model.norm.weight", 1 + rnd(C, scale=0.1)), ("lm_head.weight", rnd(V, C))]
    return it


def clip():
    S, P, C, L, H, M = 8, 4, 16, 3, 2, 32
    N = (S // P) ** 2
    v = "vision_model."
    it = [
        (v + "embeddings.class_embedding", rnd(C)),
        (v + "embeddings.patch_embedding.weight", rnd(C, 3, P, P)),
        (v + "embeddings.position_embedding.weight", rnd(N + 1, C)),
        (v + "embeddings.position_ids", torch.arange(N + 1).unsqueeze(0)),
        (v + "pre_layrnorm.weight", 1 + rnd(C, scale=0.1)),
        (v + "pre_layrnorm.bias", rnd(C, scale=0.1)),
    ]
    for l in range(L):
        p = f"{v}encoder.layers.{l}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            it += [(p + f"self_attn.{proj}.weight", rnd(C, C)), (p + f"self_attn.{proj}.bias", rnd(C))]
        it += [
            (p + "layer_norm1.weight", 1 + rnd(C, scale=0.1)),
            (p + "layer_norm1.bias", rnd(C, scale=0.1)),
            (p + "mlp.fc1.weight", rnd(M, C)),
            (p + "mlp.fc1.bias", rnd(M)),
            (p + "mlp.fc2.weight", rnd(C, M)),
            (p + "mlp.fc2.bias", rnd(C)),
            (p + "layer_norm2.weight", 1 + rnd(C, scale=0.1)),
            (p + "layer_norm2.bias", rnd(C, scale=0.1)),
        ]
    it += [
        (v + "post_layernorm.weight", 1 + rnd(C, scale=0.1)),
        (v + "post_layernorm.bias", rnd(C, scale=0.1)),
        ("visual_projection.weight", rnd(12, C)),
        ("text_projection.weight", rnd(12, 8)),
        ("text_model.embeddings.token_embedding.weight", rnd(30, 8)),
        ("text_model.final_layer_norm.weight", rnd(8)),
        ("logit_scale", torch.tensor(2.6592)),
    ]
    return it


def blip2():
    C, L, H, I, Ce, Q = 16, 2, 2, 32, 24, 4

    def attn(p, kv):
        a = []
        for n, w in (("query", C), ("key", kv), ("value", kv)):
            a += [(p + f"attention.{n}.weight", rnd(C, w)), (p + f"attention.{n}.bias", rnd(C))]
        return a + [
            (p + "output.dense.weight", rnd(C, C)),
            (p + "output.dense.bias", rnd(C)),
            (p + "output.LayerNorm.weight", 1 + rnd(C, scale=0.1)),
            (p + "output.LayerNorm.bias", rnd(C, scale=0.1)),
        ]

    it = [
        ("query_tokens", rnd(1, Q, C)),
        ("vision_model.encoder.layers.0.mlp.fc1.bias", rnd(4 * Ce)),
        ("vision_model.post_layernorm.weight", 1 + rnd(Ce, scale=0.1)),
        ("vision_model.post_layernorm.bias", rnd(Ce, scale=0.1)),
        ("qformer.layernorm.weight", 1 + rnd(C, scale=0.1)),
        ("qformer.layernorm.bias", rnd(C, scale=0.1)),
    ]
    for l in range(L):
        p = f"qformer.encoder.layer.{l}."
        it += attn(p + "attention.", C)
        if l % 2 == 0:
            it += attn(p + "crossattention.", Ce)
        for ffn in ("", "_query"):  # the text FFN is saved too; queries use *_query
            it += [
                (p + f"intermediate{ffn}.dense.weight", rnd(I, C)),
                (p + f"intermediate{ffn}.dense.bias", rnd(I)),
                (p + f"output{ffn}.dense.weight", rnd(C, I)),
                (p + f"output{ffn}.dense.bias", rnd(C)),
                (p + f"output{ffn}.LayerNorm.weight", 1 + rnd(C, scale=0.1)),
                (p + f"output{ffn}.LayerNorm.bias", rnd(C, scale=0.1)),
            ]
    it += [("language_model.lm_head.weight", rnd(10, 8))]
    return it


def eva():
    S, P, C, L, M = 8, 4, 24, 3, 32
    N = (S // P) ** 2
    it = [
        ("cls_token", rnd(1, 1, C)),
        ("pos_embed", rnd(1, N + 1, C)),
        ("patch_embed.proj.weight", rnd(C, 3, P, P)),
        ("patch_embed.proj.bias", rnd(C)),
    ]
    for l in range(L):
        p = f"blocks.{l}."
        it += [
            (p + "norm1.weight", 1 + rnd(C, scale=0.1)),
            (p + "norm1.bias", rnd(C, scale=0.1)),
            (p + "attn.q_bias", rnd(C)),
            (p + "attn.v_bias", rnd(C)),
            (p + "attn.qkv.weight", rnd(3 * C, C)),
            (p + "attn.proj.weight", rnd(C, C)),
            (p + "attn.proj.bias", rnd(C)),
            (p + "norm2.weight", 1 + rnd(C, scale=0.1)),
            (p + "norm2.bias", rnd(C, scale=0.1)),
            (p + "mlp.fc1.weight", rnd(M, C)),
            (p + "mlp.fc1.bias", rnd(M)),
            (p + "mlp.fc2.weight", rnd(C, M)),
            (p + "mlp.fc2.bias", rnd(C)),
        ]
    return it


def imagebind():
    Hm, W, P, C, L, M, E = 16, 20, 8, 16, 2, 32, 16
    N = ((Hm - P) // P + 1) * ((W - P) // P + 1)
    pre, trunk, head = "modality_preprocessors.audio.", "modality_trunks.audio.", "modality_heads.audio."
    it = [
        (pre + "cls_token", rnd(1, 1, C)),
        (pre + "rgbt_stem.proj.weight", rnd(C, 1, P, P)),
        (pre + "rgbt_stem.norm_layer.weight", 1 + rnd(C, scale=0.1)),
        (pre + "rgbt_stem.norm_layer.bias", rnd(C, scale=0.1)),
        (pre + "pos_embedding_helper.pos_embed", rnd(1, N + 1, C)),
    ]
    for l in range(L):
        p = f"{trunk}blocks.{l}."
        it += [
            (p + "attn.in_proj_weight", rnd(3 * C, C)),
            (p + "attn.in_proj_bias", rnd(3 * C)),
            (p + "attn.bias_k", rnd(1, 1, C)),
            (p + "attn.bias_v", rnd(1, 1, C)),
            (p + "attn.out_proj.weight", rnd(C, C)),
            (p + "attn.out_proj.bias", rnd(C)),
            (p + "norm_1.weight", 1 + rnd(C, scale=0.1)),
            (p + "norm_1.bias", rnd(C, scale=0.1)),
            (p + "mlp.fc1.weight", rnd(M, C)),
            (p + "mlp.fc1.bias", rnd(M)),
            (p + "mlp.fc2.weight", rnd(C, M)),
            (p + "mlp.fc2.bias", rnd(C)),
            (p + "norm_2.weight", 1 + rnd(C, scale=0.1)),
            (p + "norm_2.bias", rnd(C, scale=0.1)),
        ]
    it += [
        (head + "0.weight", 1 + rnd(C, scale=0.1)),
        (head + "0.bias", rnd(C, scale=0.1)),
        (head + "2.weight", rnd(E, C)),
        ("modality_postprocessors.audio.1.log_logit_scale", torch.tensor(np.log(20.0), dtype=torch.float32)),
        ("modality_trunks.vision.blocks.0.attn.in_proj_bias", rnd(3 * C)),
    ]
    return it


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, fn in (("llama", llama), ("clip", clip), ("blip2", blip2)):
        items = fn()
        for dt in ("f32", "f16", "bf16"):
            for layout in ("single", "sharded"):
                write_model(name, items, dt, layout)
    write_file(os.path.join(OUT, "eva-f32.safetensors"), eva(), "f32")
    write_file(os.path.join(OUT, "imagebind-f32.safetensors"), imagebind(), "f32")


if __name__ == "__main__":
    main()
