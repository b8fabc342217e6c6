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
#   blip2-lavis.pth        the same Q-Former values under LAVIS' blip2_pretrained.pth names
#                          (torch.save({"model": state_dict})) with its unused tensors
#   blip2-lavis-forward.safetensors
#                          ViT states (3, 5, 24) and LAVIS' Q-Former output on them (float64
#                          computation, stored as f32)
#   eva-f32.safetensors    LAVIS eva_vit.py names (image 8, patch 4, width 24, 3 blocks)
#   imagebind-f32.safetensors
#                          ImageBind audio branch (fbank 16 x 20, patch 8, width 16, 2 blocks,
#                          embed 16) with the logit-scale buffer and a vision tensor
#
# <dt> is f32, f16 or bf16 (the f16 and bf16 values are the f32 ones rounded to nearest even);
# <layout> is "single" (model.safetensors) or "sharded" (two shards + model.safetensors.index
# .json, as transformers writes them); each folder has a config.json matching model.yaml. tests/fixtures/import/model.yaml is the model config the
# files fit. The safetensors files are written by hand (json + numpy): the pip package is not
# available. Deterministic; regenerate from the repository root with Debian's python3:
#   /usr/bin/python3 tests/make_import_fixtures.py
import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

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


def write_model(name, items, dt, layout, config):
    d = os.path.join(OUT, f"{name}-{dt}-{layout}")
    os.makedirs(d, exist_ok=True)
    for old in os.listdir(d):
        os.remove(os.path.join(d, old))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
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


# config.json of each folder, as save_pretrained writes it for these sizes (the fields the
# importer compares with model.yaml, and a few it ignores).
CONFIGS = {
    "llama": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 40,
        "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1, "hidden_act": "silu",
        "max_position_embeddings": 64, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
        "rope_scaling": None, "attention_bias": False, "tie_word_embeddings": False,
        "initializer_range": 0.02, "torch_dtype": "float32",
    },
    "clip": {
        "architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": 12,
        "logit_scale_init_value": 2.6592,
        "text_config": {"model_type": "clip_text_model", "hidden_size": 8, "vocab_size": 30,
                        "num_attention_heads": 1, "projection_dim": 12},
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": 16,
                          "intermediate_size": 32, "num_hidden_layers": 3,
                          "num_attention_heads": 2, "image_size": 8, "patch_size": 4,
                          "hidden_act": "quick_gelu", "layer_norm_eps": 1e-05,
                          "projection_dim": 12},
    },
    "blip2": {
        "architectures": ["Blip2ForConditionalGeneration"], "model_type": "blip-2",
        "num_query_tokens": 4,
        "qformer_config": {"model_type": "blip_2_qformer", "hidden_size": 16,
                           "num_hidden_layers": 2, "num_attention_heads": 2,
                           "intermediate_size": 32, "cross_attention_frequency": 2,
                           "encoder_hidden_size": 24, "hidden_act": "gelu",
                           "layer_norm_eps": 1e-12, "vocab_size": 30522},
        # HF's post_layernorm eps (1e-6); LAVIS' ln_vision, whose weights these are, uses 1e-5
        "vision_config": {"model_type": "blip_2_vision_model", "hidden_size": 24,
                          "layer_norm_eps": 1e-06},
        "text_config": {"model_type": "opt", "hidden_size": 8},
    },
}


# transformers' Blip2 name -> LAVIS' (blip2_pretrained.pth), the inverse of what
# convert_blip_2_original_to_pytorch.py renames.
def lavis_name(hf):
    if hf == "query_tokens":
        return hf
    if hf.startswith("vision_model.post_layernorm."):
        return "ln_vision." + hf[len("vision_model.post_layernorm."):]
    if hf.startswith("vision_model."):
        return "visual_encoder.blocks.0.mlp.fc1.bias"  # the one ViT tensor: out of scope
    assert hf.startswith("qformer."), hf
    rest = hf[len("qformer."):]
    rest = rest.replace("layernorm.", "embeddings.LayerNorm.", 1) if rest.startswith("layernorm.") else rest
    rest = rest.replace(".attention.attention.", ".attention.self.")
    rest = rest.replace(".crossattention.attention.", ".crossattention.self.")
    return "Qformer.bert." + rest


def blip2_lavis(items, path):
    """blip2_pretrained.pth as LAVIS saves it: torch.save({"model": state_dict}), with the
    tensors the frame Q-Former does not use (text embeddings and FFN, LM head, projections)."""
    g = torch.Generator().manual_seed(7)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    sd = {}
    for name, t in items:
        if name.startswith("language_model."):
            continue
        sd[lavis_name(name)] = t.clone()
    C = 16
    sd.update({
        "Qformer.bert.embeddings.word_embeddings.weight": r(30, C),
        "Qformer.bert.embeddings.position_embeddings.weight": r(12, C),
        "Qformer.bert.embeddings.position_ids": torch.arange(12).unsqueeze(0),
        "Qformer.cls.predictions.bias": r(30),
        "Qformer.cls.predictions.transform.dense.weight": r(C, C),
        "vision_proj.weight": r(8, C), "text_proj.weight": r(8, C),
        "itm_head.weight": r(2, C), "itm_head.bias": r(2), "temp": torch.tensor(0.07),
    })
    torch.save({"model": sd}, path)
    return sd


def lavis_forward(sd, vit, L=2, H=2, freq=2):
    """LAVIS' Blip2Qformer feature path (eval): ln_vision (eps 1e-5), then the BertModel over
    query_embeds only (BertEmbeddings: LayerNorm; BertLayer: self-attention, cross-attention
    every freq-th layer, the query FFN intermediate_query / output_query), float64."""
    w = {k: v.to(torch.float64) for k, v in sd.items() if v.is_floating_point()}
    enc = F.layer_norm(vit, vit.shape[-1:], w["ln_vision.weight"], w["ln_vision.bias"], 1e-5)
    b = "Qformer.bert."
    x = w["query_tokens"].expand(vit.shape[0], -1, -1)
    x = F.layer_norm(x, x.shape[-1:], w[b + "embeddings.LayerNorm.weight"],
                     w[b + "embeddings.LayerNorm.bias"], 1e-12)

    def lin(t, p):
        return t @ w[p + ".weight"].T + w[p + ".bias"]

    def attn(x, kv, p):
        B, Q, C = x.shape
        D = C // H

        def heads(t):
            return t.view(B, -1, H, D).transpose(1, 2)

        q, k, v = heads(lin(x, p + ".self.query")), heads(lin(kv, p + ".self.key")), heads(lin(kv, p + ".self.value"))
        ctx = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D), -1) @ v
        ctx = ctx.transpose(1, 2).reshape(B, Q, C)
        h = lin(ctx, p + ".output.dense") + x
        return F.layer_norm(h, (C,), w[p + ".output.LayerNorm.weight"],
                            w[p + ".output.LayerNorm.bias"], 1e-12)

    for l in range(L):
        p = f"{b}encoder.layer.{l}"
        x = attn(x, x, p + ".attention")
        if l % freq == 0:
            x = attn(x, enc, p + ".crossattention")
        h = F.gelu(lin(x, p + ".intermediate_query.dense"))
        h = lin(h, p + ".output_query.dense") + x
        x = F.layer_norm(h, h.shape[-1:], w[p + ".output_query.LayerNorm.weight"],
                         w[p + ".output_query.LayerNorm.bias"], 1e-12)
    return x


def main():
    os.makedirs(OUT, exist_ok=True)
    blip2_items = None
    for name, fn in (("llama", llama), ("clip", clip), ("blip2", blip2)):
        items = fn()
        if name == "blip2":
            blip2_items = items
        for dt in ("f32", "f16", "bf16"):
            for layout in ("single", "sharded"):
                write_model(name, items, dt, layout, CONFIGS[name])
    write_file(os.path.join(OUT, "eva-f32.safetensors"), eva(), "f32")
    write_file(os.path.join(OUT, "imagebind-f32.safetensors"), imagebind(), "f32")
    # LAVIS' naming of the same frame Q-Former, and its output on 3 frames of 5 ViT tokens.
    sd = blip2_lavis(blip2_items, os.path.join(OUT, "blip2-lavis.pth"))
    vit = torch.randn(3, 5, 24, generator=torch.Generator().manual_seed(8))
    out = lavis_forward(sd, vit.to(torch.float64))
    write_file(os.path.join(OUT, "blip2-lavis-forward.safetensors"),
               [("vit", vit), ("out", out)], "f32")


if __name__ == "__main__":
    main()
