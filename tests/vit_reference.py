#!/usr/bin/python3
# vit_reference.py: writes tests/fixtures/vit/{clip,eva,audio}.safetensors, the PyTorch
# reference that tests/test_vit.c checks model/vit.c against: tiny random versions of the
# three encoders of GroundingGPT, written here directly in torch from the published sources'
# semantics (transformers is not installed on the machine that made them):
#   clip   transformers CLIPVisionModel (modeling_clip.py): Conv2d without bias, class
#          embedding, position embedding, pre_layrnorm, pre-LN blocks with q/k/v/out biases,
#          q scaled by 1/sqrt(head dim), QuickGELU MLP; hidden_states[0] is the embeddings
#          after pre_layrnorm; pooler_output = post_layernorm(last hidden state's CLS row).
#   eva    LAVIS eva_vit.py (BLIP-2's EVA-CLIP ViT-g): Conv2d with bias, cls_token, pos_embed,
#          no pre-LN, blocks with a fused qkv weight and bias cat(q_bias, 0, v_bias), GELU MLP,
#          LayerNorm eps 1e-6, no final norm; LAVIS builds one block fewer than its checkpoint
#          holds (39 of 40): here 2 of 3, the third block is in the file and must be ignored.
#   audio  ImageBind's audio encoder (imagebind_model.py, multimodal_preprocessors.py,
#          transformer.py): Conv2d 16x16 stride 10 without bias on the fbank, stem LayerNorm
#          (eps 1e-5), cls_token, pos_embed, blocks of torch's own nn.MultiheadAttention code
#          (F.multi_head_attention_forward) with add_bias_kv (sequence-first, as ImageBind
#          rearranges "b l d -> l b d"), GELU
#          MLP, LayerNorm eps 1e-6; head LayerNorm -> CLS -> Linear without bias; postprocessor
#          F.normalize then x exp(log 20) (LearnableLogitScaling, not learnable).
#
# Generated with (Debian's python3, torch 1.13, numpy; from the repository root):
#   /usr/bin/python3 tests/vit_reference.py
#
# Each file holds:
#   - the weights under the original checkpoint names, as F16 (like the released checkpoints;
#     the C side converts on load), conv weights in PyTorch's (out, in, kh, kw) layout;
#   - test.images u8 (B, H, W, 3) channels-last (clip, eva; CLIP mean/std normalisation is
#     part of the reference) or test.fbank f32 (B, mel, frames, 1) (audio);
#   - test.hidden.K f64: hidden_states[K] (B, 1+N, C) with the CLS row, for several K;
#     test.pooled f64 where the model has a head;
#   - the loss L = sum(hidden_states[out] (CLS dropped when the config drops it) * test.r_hidden)
#     [+ sum(pooled * test.r_pooled)], its value in the metadata (test.loss), and its gradients
#     test.grad.input f32 (channels-last, w.r.t. the normalised pixels or the fbank) and
#     test.grad.<parameter name> f32 (PyTorch layout) for a few parameters;
#   - the tiny config in the metadata (config.*).
# The reference computes in float64 from the f16-rounded weights, so a float64 run of the C
# code can be held to ~1e-12 and a float32 run to its own rounding.
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

import st_write  # tests/st_write.py

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "fixtures", "vit")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DT = torch.float64


# Writing ---------------------------------------------------------------------------------------


def save(path, fx):
    st_write.write(path, fx.t, fx.meta)
    print(f"wrote {path}: {len(fx.t)} tensors, {os.path.getsize(path)} bytes")


class Fixture:
    def __init__(self, cfg):
        self.t = {}
        self.meta = {f"config.{k}": v for k, v in cfg.items()}
        self.w = {}  # name -> float64 leaf (requires grad), from the f16-rounded value

    def weight(self, name, *shape, scale=0.1, offset=0.0):
        v = (torch.randn(*shape, dtype=DT) * scale + offset).half()
        self.t[name] = ("F16", v.numpy())
        self.w[name] = v.to(DT).requires_grad_(True)
        return self.w[name]

    def put(self, name, v, dtype="F64"):
        v = v.detach()
        if dtype == "F64":
            self.t[name] = ("F64", v.to(torch.float64).numpy())
        elif dtype == "F32":
            self.t[name] = ("F32", v.to(torch.float32).numpy())
        else:
            self.t[name] = ("U8", v.to(torch.uint8).numpy())


def layer_norm(x, fx, name, eps):
    return F.layer_norm(x, (x.shape[-1],), fx.w[name + ".weight"], fx.w[name + ".bias"], eps)


def ln_weights(fx, name, c):
    fx.weight(name + ".weight", c, scale=0.1, offset=1.0)
    fx.weight(name + ".bias", c)


def attention(q, k, v, heads):
    """q (B, Tq, C), k and v (B, Tk, C): softmax(q k^T / sqrt(D)) v per head, (B, Tq, C)."""
    B, Tq, C = q.shape
    D = C // heads
    q, k, v = (t.reshape(B, -1, heads, D).transpose(1, 2) for t in (q, k, v))
    p = torch.softmax((q * D ** -0.5) @ k.transpose(-2, -1), dim=-1)
    return (p @ v).transpose(1, 2).reshape(B, Tq, C)


def clip_pixels(images):
    """u8 (B, H, W, 3) -> normalised float64 NCHW leaf, as CLIPImageProcessor after resize."""
    x = images.to(DT) / 255.0
    x = (x - torch.tensor(CLIP_MEAN, dtype=DT)) / torch.tensor(CLIP_STD, dtype=DT)
    return x.permute(0, 3, 1, 2).contiguous().requires_grad_(True)


def finish(fx, x, hidden_states, out_index, drop_cls, pooled, grads):
    """Loss on hidden_states[out_index] (CLS dropped if asked) and pooled; saves the gradients
    of the input (channels-last) and of the named weights."""
    h = hidden_states[out_index]
    if drop_cls:
        h = h[:, 1:]
    r_h = torch.randn(h.shape, dtype=DT)
    fx.put("test.r_hidden", r_h)
    loss = (h * r_h).sum()
    if pooled is not None:
        r_p = torch.randn(pooled.shape, dtype=DT)
        fx.put("test.r_pooled", r_p)
        fx.put("test.pooled", pooled)
        loss = loss + (pooled * r_p).sum()
    loss.backward()
    fx.meta["test.loss"] = repr(loss.item())
    fx.meta["test.out_index"] = out_index
    fx.put("test.grad.input", x.grad.permute(0, 2, 3, 1), "F32")
    for name in grads:
        fx.put(f"test.grad.{name}", fx.w[name].grad, "F32")


# CLIP (transformers CLIPVisionModel) ------------------------------------------------------------
def make_clip():
    cfg = dict(image=28, patch=14, channels=3, width=32, layers=3, heads=4, mlp=64, eps=1e-5,
               batch=2, out_layer=-2)
    fx = Fixture(cfg)
    C, P, L, B = cfg["width"], cfg["patch"], cfg["layers"], cfg["batch"]
    N = (cfg["image"] // P) ** 2
    pre = "vision_model."
    fx.weight(pre + "embeddings.class_embedding", C, scale=0.5)
    fx.weight(pre + "embeddings.patch_embedding.weight", C, 3, P, P, scale=0.05)
    fx.weight(pre + "embeddings.position_embedding.weight", 1 + N, C, scale=0.5)
    ln_weights(fx, pre + "pre_layrnorm", C)
    for l in range(L):
        lp = f"{pre}encoder.layers.{l}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            fx.weight(lp + f"self_attn.{proj}.weight", C, C, scale=C ** -0.5)
            fx.weight(lp + f"self_attn.{proj}.bias", C)
        ln_weights(fx, lp + "layer_norm1", C)
        fx.weight(lp + "mlp.fc1.weight", cfg["mlp"], C, scale=C ** -0.5)
        fx.weight(lp + "mlp.fc1.bias", cfg["mlp"])
        fx.weight(lp + "mlp.fc2.weight", C, cfg["mlp"], scale=cfg["mlp"] ** -0.5)
        fx.weight(lp + "mlp.fc2.bias", C)
        ln_weights(fx, lp + "layer_norm2", C)
    ln_weights(fx, pre + "post_layernorm", C)

    images = torch.randint(0, 256, (B, cfg["image"], cfg["image"], 3), dtype=torch.uint8)
    fx.put("test.images", images, "U8")
    x = clip_pixels(images)
    w = fx.w
    eps = cfg["eps"]
    # CLIPVisionEmbeddings
    patches = F.conv2d(x, w[pre + "embeddings.patch_embedding.weight"], stride=P)
    patches = patches.flatten(2).transpose(1, 2)  # (B, N, C)
    cls = w[pre + "embeddings.class_embedding"].expand(B, 1, -1)
    h = torch.cat([cls, patches], dim=1) + w[pre + "embeddings.position_embedding.weight"][None]
    h = layer_norm(h, fx, pre + "pre_layrnorm", eps)
    hidden_states = [h]
    for l in range(L):  # CLIPEncoderLayer
        lp = f"{pre}encoder.layers.{l}."
        a = layer_norm(h, fx, lp + "layer_norm1", eps)
        q, k, v = (F.linear(a, w[lp + f"self_attn.{p}.weight"], w[lp + f"self_attn.{p}.bias"])
                   for p in ("q_proj", "k_proj", "v_proj"))
        a = attention(q, k, v, cfg["heads"])
        h = h + F.linear(a, w[lp + "self_attn.out_proj.weight"], w[lp + "self_attn.out_proj.bias"])
        m = layer_norm(h, fx, lp + "layer_norm2", eps)
        m = F.linear(m, w[lp + "mlp.fc1.weight"], w[lp + "mlp.fc1.bias"])
        m = m * torch.sigmoid(1.702 * m)  # quick_gelu
        h = h + F.linear(m, w[lp + "mlp.fc2.weight"], w[lp + "mlp.fc2.bias"])
        hidden_states.append(h)
    pooled = layer_norm(hidden_states[-1][:, 0], fx, pre + "post_layernorm", eps)
    for k in range(L + 1):
        fx.put(f"test.hidden.{k}", hidden_states[k])
    finish(fx, x, hidden_states, L + 1 + cfg["out_layer"], True, pooled,
           [pre + "embeddings.patch_embedding.weight", pre + "embeddings.class_embedding",
            pre + "encoder.layers.0.self_attn.q_proj.weight",
            pre + "encoder.layers.1.mlp.fc1.bias", pre + "pre_layrnorm.weight"])
    save(os.path.join(OUT_DIR, "clip.safetensors"), fx)


# EVA-CLIP ViT-g as BLIP-2 builds it (LAVIS eva_vit.py) ------------------------------------------
def make_eva():
    cfg = dict(image=28, patch=14, channels=3, width=24, layers=3, used=2, heads=4,
               mlp=int(24 * 4.3637), eps=1e-6, batch=2)
    fx = Fixture(cfg)
    C, P, B = cfg["width"], cfg["patch"], cfg["batch"]
    N = (cfg["image"] // P) ** 2
    fx.weight("cls_token", 1, 1, C, scale=0.5)
    fx.weight("pos_embed", 1, 1 + N, C, scale=0.5)
    fx.weight("patch_embed.proj.weight", C, 3, P, P, scale=0.05)
    fx.weight("patch_embed.proj.bias", C)
    for l in range(cfg["layers"]):  # the checkpoint's blocks; the last one is not used
        bp = f"blocks.{l}."
        ln_weights(fx, bp + "norm1", C)
        fx.weight(bp + "attn.q_bias", C)
        fx.weight(bp + "attn.v_bias", C)
        fx.weight(bp + "attn.qkv.weight", 3 * C, C, scale=C ** -0.5)
        fx.weight(bp + "attn.proj.weight", C, C, scale=C ** -0.5)
        fx.weight(bp + "attn.proj.bias", C)
        ln_weights(fx, bp + "norm2", C)
        fx.weight(bp + "mlp.fc1.weight", cfg["mlp"], C, scale=C ** -0.5)
        fx.weight(bp + "mlp.fc1.bias", cfg["mlp"])
        fx.weight(bp + "mlp.fc2.weight", C, cfg["mlp"], scale=cfg["mlp"] ** -0.5)
        fx.weight(bp + "mlp.fc2.bias", C)

    images = torch.randint(0, 256, (B, cfg["image"], cfg["image"], 3), dtype=torch.uint8)
    fx.put("test.images", images, "U8")
    x = clip_pixels(images)
    w = fx.w
    eps = cfg["eps"]
    h = F.conv2d(x, w["patch_embed.proj.weight"], w["patch_embed.proj.bias"], stride=P)
    h = h.flatten(2).transpose(1, 2)
    h = torch.cat([w["cls_token"].expand(B, -1, -1), h], dim=1) + w["pos_embed"]
    hidden_states = [h]
    for l in range(cfg["used"]):  # Block with gamma None, no relative position bias
        bp = f"blocks.{l}."
        a = layer_norm(h, fx, bp + "norm1", eps)
        qkv_bias = torch.cat([w[bp + "attn.q_bias"], torch.zeros_like(w[bp + "attn.v_bias"]),
                              w[bp + "attn.v_bias"]])
        qkv = F.linear(a, w[bp + "attn.qkv.weight"], qkv_bias)
        q, k, v = qkv.split(C, dim=-1)
        a = attention(q, k, v, cfg["heads"])
        h = h + F.linear(a, w[bp + "attn.proj.weight"], w[bp + "attn.proj.bias"])
        m = layer_norm(h, fx, bp + "norm2", eps)
        m = F.gelu(F.linear(m, w[bp + "mlp.fc1.weight"], w[bp + "mlp.fc1.bias"]))
        h = h + F.linear(m, w[bp + "mlp.fc2.weight"], w[bp + "mlp.fc2.bias"])
        hidden_states.append(h)
    for k in range(cfg["used"] + 1):
        fx.put(f"test.hidden.{k}", hidden_states[k])
    finish(fx, x, hidden_states, cfg["used"], False, None,
           ["patch_embed.proj.bias", "blocks.0.attn.qkv.weight", "blocks.0.attn.q_bias",
            "blocks.1.attn.v_bias", "blocks.1.attn.proj.weight", "pos_embed"])
    save(os.path.join(OUT_DIR, "eva.safetensors"), fx)


# ImageBind audio encoder ------------------------------------------------------------------------
def make_audio():
    # 38 x 47 with 16x16 patches at stride 10: 3 x 4 patches, the last rows and columns dropped
    # as in the real 128 x 204 (12 x 19 patches).
    cfg = dict(mel=38, frames=47, patch=16, stride=10, width=32, layers=2, heads=4, mlp=128,
               eps=1e-6, stem_eps=1e-5, out_dim=24, scale=20.0, batch=2)
    fx = Fixture(cfg)
    C, P, S, B, H = cfg["width"], cfg["patch"], cfg["stride"], cfg["batch"], cfg["heads"]
    N = ((cfg["mel"] - P) // S + 1) * ((cfg["frames"] - P) // S + 1)
    pp = "modality_preprocessors.audio."
    fx.weight(pp + "cls_token", 1, 1, C, scale=0.5)
    fx.weight(pp + "rgbt_stem.proj.weight", C, 1, P, P, scale=0.06)
    ln_weights(fx, pp + "rgbt_stem.norm_layer", C)
    fx.weight(pp + "pos_embedding_helper.pos_embed", 1, 1 + N, C, scale=0.5)
    for l in range(cfg["layers"]):
        bp = f"modality_trunks.audio.blocks.{l}."
        fx.weight(bp + "attn.in_proj_weight", 3 * C, C, scale=C ** -0.5)
        fx.weight(bp + "attn.in_proj_bias", 3 * C)
        fx.weight(bp + "attn.bias_k", 1, 1, C, scale=0.5)
        fx.weight(bp + "attn.bias_v", 1, 1, C, scale=0.5)
        fx.weight(bp + "attn.out_proj.weight", C, C, scale=C ** -0.5)
        fx.weight(bp + "attn.out_proj.bias", C)
        ln_weights(fx, bp + "norm_1", C)
        fx.weight(bp + "mlp.fc1.weight", cfg["mlp"], C, scale=C ** -0.5)
        fx.weight(bp + "mlp.fc1.bias", cfg["mlp"])
        fx.weight(bp + "mlp.fc2.weight", C, cfg["mlp"], scale=cfg["mlp"] ** -0.5)
        fx.weight(bp + "mlp.fc2.bias", C)
        ln_weights(fx, bp + "norm_2", C)
    ln_weights(fx, "modality_heads.audio.0", C)
    fx.weight("modality_heads.audio.2.weight", cfg["out_dim"], C, scale=C ** -0.5)

    fbank = torch.randn(B, cfg["mel"], cfg["frames"], 1).float()  # as the data layer gives it
    fx.put("test.fbank", fbank, "F32")
    x = fbank.to(DT).permute(0, 3, 1, 2).contiguous().requires_grad_(True)  # (B, 1, mel, T)
    w = fx.w
    h = F.conv2d(x, w[pp + "rgbt_stem.proj.weight"], stride=S)  # PatchEmbedGeneric
    h = h.flatten(2).transpose(1, 2)
    h = layer_norm(h, fx, pp + "rgbt_stem.norm_layer", cfg["stem_eps"])
    h = torch.cat([w[pp + "cls_token"].expand(B, -1, -1), h], dim=1)
    h = h + w[pp + "pos_embedding_helper.pos_embed"]
    hidden_states = [h]
    for l in range(cfg["layers"]):  # BlockWithMasking, layer_scale_type None
        bp = f"modality_trunks.audio.blocks.{l}."
        # nn.MultiheadAttention(C, H, bias=True, add_bias_kv=True) computes exactly this call
        a = layer_norm(h, fx, bp + "norm_1", cfg["eps"]).transpose(0, 1)  # (T, B, C)
        a = F.multi_head_attention_forward(
            a, a, a, C, H, w[bp + "attn.in_proj_weight"], w[bp + "attn.in_proj_bias"],
            w[bp + "attn.bias_k"], w[bp + "attn.bias_v"], False, 0.0,
            w[bp + "attn.out_proj.weight"], w[bp + "attn.out_proj.bias"], training=False,
            need_weights=False, attn_mask=None)[0].transpose(0, 1)
        h = h + a
        m = layer_norm(h, fx, bp + "norm_2", cfg["eps"])
        m = F.gelu(F.linear(m, w[bp + "mlp.fc1.weight"], w[bp + "mlp.fc1.bias"]))
        h = h + F.linear(m, w[bp + "mlp.fc2.weight"], w[bp + "mlp.fc2.bias"])
        hidden_states.append(h)
    # head: LayerNorm (all rows; only the CLS row is kept), SelectElement(0), Linear
    pooled = layer_norm(hidden_states[-1], fx, "modality_heads.audio.0", cfg["eps"])[:, 0]
    pooled = F.linear(pooled, w["modality_heads.audio.2.weight"])
    # postprocessor: Normalize(dim=-1), LearnableLogitScaling(20, learnable=False)
    log_scale = torch.ones([]) * np.log(cfg["scale"])  # float32 buffer, as ImageBind keeps it
    pooled = torch.clip(log_scale.exp(), max=100).to(DT) * F.normalize(pooled, dim=-1, p=2)
    fx.meta["test.logit_scale"] = repr(torch.clip(log_scale.exp(), max=100).item())
    for k in range(cfg["layers"] + 1):
        fx.put(f"test.hidden.{k}", hidden_states[k])
    finish(fx, x, hidden_states, cfg["layers"], False, pooled,
           [pp + "cls_token", pp + "rgbt_stem.norm_layer.weight",
            "modality_trunks.audio.blocks.0.attn.bias_k",
            "modality_trunks.audio.blocks.0.attn.bias_v",
            "modality_trunks.audio.blocks.1.attn.in_proj_bias",
            "modality_heads.audio.2.weight"])
    save(os.path.join(OUT_DIR, "audio.safetensors"), fx)


if __name__ == "__main__":
    os.makedirs(OUT_DIR, exist_ok=True)
    for seed, make in ((101, make_clip), (202, make_eva), (303, make_audio)):
        torch.manual_seed(seed)
        make()
