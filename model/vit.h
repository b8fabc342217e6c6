// vit.h: the Vision Transformer encoders of GroundingGPT, built from autograd ops only (so they
// run wherever the ops run). One skeleton; each difference between the three originals is a
// config switch:
//
//   x (B, H, W, Cin) channels-last float
//   patches  = patchify(x, patch, stride) . Wp^T (+ bp)     a Conv2d(kernel patch, stride)
//   [LayerNorm(patches)]                                    patch_norm (ImageBind stem)
//   h0 = concat(cls, patches) + pos                         (B, T = 1 + N, C)
//   [h0 = LayerNorm(h0)]                                    pre_norm (CLIP pre_layrnorm)
//   block l:  h += Wo . Attention(LN1(h)) + bo              q/k/v biases as switched, scale
//             h += W2 . act(W1 . LN2(h) + b1) + b2          1/sqrt(head dim); act QuickGELU or
//                                                           GELU (erf); bias_kv appends one
//                                                           learned key/value (ImageBind)
//   hidden   = hidden_states[out_layer]  (HF indexing: 0 is h0, k the output of block k,
//              negative counts from the end: -1 the last block, -2 LLaVA's choice), CLS row
//              optionally dropped
//   pooled   = [scale * l2norm](CLS of the last block -> [LayerNorm] -> [Linear no bias])
//              (CLIP pooler_output with post_layernorm; ImageBind head + postprocessor)
//
// The three presets (gm_vit_*_config) and what was read from the originals:
//   CLIP ViT-L/14-336 (transformers CLIPVisionModel): conv without bias, class_embedding (C),
//     position_embedding (1+N, C), pre_layrnorm, QuickGELU, q/k/v/out biases, LayerNorm eps
//     1e-5; post_layernorm acts on the pooled CLS only (LLaVA uses hidden_states[-2] without
//     CLS and never runs it).
//   EVA-CLIP ViT-g/14 as BLIP-2 builds it (LAVIS eva_vit.py create_eva_vit_g): 1408 wide, 16
//     heads of 88, MLP int(1408 * 4.3637) = 6144, GELU, LayerNorm eps 1e-6, conv WITH bias,
//     cls_token (1,1,C), pos_embed (1,1+N,C), no pre-LN, fused qkv weight without bias plus
//     q_bias and v_bias (k gets none), LAVIS builds depth 39 and loads the 40-block
//     eva_vit_g.pth non-strictly (the 40th block is never used), no final norm (BLIP-2's
//     ln_vision belongs to the Q-Former side, model/adapters.h). No layer scale, no relative
//     position bias (init_values None, use_rel_pos_bias False).
//   ImageBind audio (imagebind_model.py, modality AUDIO): fbank (B, 128, 204, 1), Conv2d 16x16
//     stride 10 without bias (12 x 19 = 228 patches, the remainders dropped), stem LayerNorm
//     (default eps 1e-5) on the patches, cls_token (1,1,C), learnable pos_embed (1,229,C), no
//     pre-LN (pre_transformer_ln False), 12 blocks of nn.MultiheadAttention(bias=True,
//     add_bias_kv=True) with LayerNorm eps 1e-6, MLP ratio 4 GELU, no layer scale, drop path
//     (identity at eval); head LayerNorm(eps 1e-6) -> CLS -> Linear(768, 1024, no bias);
//     postprocessor Normalize(dim -1) then LearnableLogitScaling(20, not learnable): x 20
//     (its buffer modality_postprocessors.audio.1.log_logit_scale, exp(f32 log 20) = 20.0
//     exactly, is the constant head_scale here and is not imported).
//
// Parameters live in the context's pool, named as each original checkpoint names them, after
// a caller-given prefix:
//   CLIP       vision_model.embeddings.{patch_embedding.weight, class_embedding,
//              position_embedding.weight}, vision_model.pre_layrnorm.{weight,bias},
//              vision_model.encoder.layers.N.{layer_norm1, self_attn.{q,k,v,out}_proj,
//              layer_norm2, mlp.fc1, mlp.fc2}.{weight,bias}, vision_model.post_layernorm.*,
//              visual_projection.weight (only with head_dim)
//              prefix "" for openai/clip-vit-large-patch14-336 (CLIPVisionModel)
//   EVA        cls_token, pos_embed, patch_embed.proj.{weight,bias}, blocks.N.{norm1,
//              attn.qkv.weight, attn.q_bias, attn.v_bias, attn.proj, norm2, mlp.fc1, mlp.fc2}
//              prefix "" for eva_vit_g.pth, "visual_encoder." in BLIP-2 checkpoints
//   ImageBind  modality_preprocessors.audio.{cls_token, rgbt_stem.proj.weight,
//              rgbt_stem.norm_layer.*, pos_embedding_helper.pos_embed},
//              modality_trunks.audio.blocks.N.{norm_1, attn.in_proj_weight, attn.in_proj_bias,
//              attn.bias_k, attn.bias_v, attn.out_proj, norm_2, mlp.fc1, mlp.fc2},
//              modality_heads.audio.{0.weight, 0.bias, 2.weight}; prefix "" for
//              imagebind_huge.pth
// Shapes are the checkpoint's, with one exception: the patch conv weight is held as
// (C, ph, pw, Cin), not PyTorch's (C, Cin, ph, pw), so that patchify + linear computes the
// conv; gm_vit_conv_to_patch permutes on import (train/import.c), gm_vit_patch_to_conv on
// export. Fused q/k/v weights (EVA qkv, ImageBind in_proj) stay fused: one GEMM, then views.
//
// Inputs: images go through gm_vit_clip_pixels (u8 -> CLIP mean/std); the audio encoder takes
// the fbank as the data layer makes it, already normalised ((fbank + 4.268) / 9.138), as a
// one-channel image (B, 128 mel bins, 204 frames, 1). The encoders are frozen in GroundingGPT:
// run them between ag_no_grad_begin and ag_no_grad_end, and no tape is kept.
//
// Only the blocks that some output needs are allocated and run (gm_vit_layers_used): CLIP at
// -2 makes 23 of 24 blocks, EVA at 39 makes 39 of 40; the checkpoint tensors of the others
// are simply not loaded. A switch whose parameter has no name in a family's checkpoint (an
// EVA pre-LN, a CLIP bias_kv) is refused by gm_vit_check_config.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "autograd/ops.h"

typedef enum {
    GM_VIT_CLIP,            // transformers CLIPVisionModel names; separate q/k/v projections
    GM_VIT_EVA,             // LAVIS eva_vit.py names; fused qkv, separate q_bias / v_bias
    GM_VIT_IMAGEBIND_AUDIO, // ImageBind names, audio modality; fused in_proj weight and bias
} gm_vit_family;

typedef enum { GM_VIT_QUICK_GELU, GM_VIT_GELU } gm_vit_act;

typedef struct {
    gm_vit_family family;
    int64_t image_h, image_w, channels; // input (B, H, W, Cin)
    int64_t patch, stride;              // square patches; stride < patch overlaps
    int64_t width, n_layers, n_heads, mlp;
    double norm_eps; // block LayerNorms, and the pre-LN and head LayerNorm
    gm_vit_act act;
    bool patch_bias;             // conv bias (EVA)
    bool patch_norm;             // LayerNorm on the patch embeddings (ImageBind stem) ...
    double patch_norm_eps;       // ... with its own eps (1e-5)
    bool pre_norm;               // LayerNorm on the embeddings before block 0 (CLIP pre_layrnorm)
    bool q_bias, k_bias, v_bias; // attention input projection biases (output proj always)
    bool bias_kv;                // learned key and value appended to every sequence
    int out_layer;               // hidden_states index in [-(n_layers+1), n_layers]
    bool drop_cls;               // hidden output without the CLS row
    bool head_norm;              // pooled: LayerNorm on the CLS of the last block
    int64_t head_dim;            // pooled: > 0 projects to head_dim (Linear, no bias)
    double head_scale;           // pooled: > 0 L2-normalises, then multiplies by this
    double init_std;             // > 0: std of the from-scratch normal draws (gm_vit_init)
} gm_vit_config;

// Full-size presets (see the header comment). Copy and change fields for tiny models.
gm_vit_config gm_vit_clip_l14_336_config(void);
gm_vit_config gm_vit_eva_g14_config(void);
gm_vit_config gm_vit_imagebind_audio_config(void);

// Fails with one line naming the offending field (e.g. width % heads != 0).
void gm_vit_check_config(const gm_vit_config *cfg);
int64_t gm_vit_patches(const gm_vit_config *cfg);    // Nh * Nw
int64_t gm_vit_out_tokens(const gm_vit_config *cfg); // rows of the hidden output
int gm_vit_out_index(const gm_vit_config *cfg);      // out_layer resolved to 0..n_layers
// Blocks allocated and run: out_layer's, or all of them when a pooled head is configured.
int gm_vit_layers_used(const gm_vit_config *cfg);
// A pooled head is configured (head_norm, head_dim or head_scale).
bool gm_vit_has_head(const gm_vit_config *cfg);

typedef struct {
    ag_tensor *ln1_w, *ln1_b;   // (C)
    ag_tensor *q_w, *k_w, *v_w; // (C, C) each (CLIP), else NULL
    ag_tensor *qkv_w;           // (3C, C) fused, rows q|k|v (EVA, ImageBind), else NULL
    ag_tensor *q_b, *k_b, *v_b; // (C) separate biases (CLIP; EVA q and v), or NULL
    ag_tensor *qkv_b;           // (3C) fused bias (ImageBind in_proj_bias), or NULL
    ag_tensor *bias_k, *bias_v; // (1, 1, C) (ImageBind add_bias_kv), or NULL
    ag_tensor *out_w, *out_b;   // (C, C), (C)
    ag_tensor *ln2_w, *ln2_b;   // (C)
    ag_tensor *fc1_w, *fc1_b;   // (F, C), (F)
    ag_tensor *fc2_w, *fc2_b;   // (C, F), (C)
} gm_vit_layer;

typedef struct {
    gm_vit_config cfg;
    int n_layers_used;
    ag_tensor *patch_w;                     // (C, ph, pw, Cin): the conv weight, permuted
    ag_tensor *patch_b;                     // (C) or NULL
    ag_tensor *patch_norm_w, *patch_norm_b; // (C) or NULL
    ag_tensor *cls;                         // CLIP (C); EVA, ImageBind (1, 1, C)
    ag_tensor *pos;                         // CLIP (1+N, C); EVA, ImageBind (1, 1+N, C)
    ag_tensor *pre_norm_w, *pre_norm_b;     // (C) or NULL
    gm_vit_layer *layers;                   // n_layers_used
    ag_tensor *head_norm_w, *head_norm_b;   // (C) or NULL
    ag_tensor *head_w;                      // (head_dim, C) or NULL
    int n_params;
    ag_tensor **params; // every parameter: embeddings, blocks, head
} gm_vit;

// Allocates the parameters (dtype f32, bf16 or f64) in ctx's pool, zero-filled, named
// prefix + checkpoint name (prefix may be NULL).
gm_vit *gm_vit_new(ag_ctx *ctx, const gm_vit_config *cfg, const char *prefix, ag_dtype dtype);
void gm_vit_free(gm_vit *m);
// Initialises as the originals do in spirit: matrices, class embedding and bias_k/v
// normal(0, std), biases 0, LayerNorm weights 1; position embeddings a 2-D sin-cos table
// (class row zero) when width % 4 == 0, else normal(0, std). Deterministic from seed.
void gm_vit_init(gm_vit *m, uint64_t seed, double std);
int64_t gm_vit_param_count(const gm_vit *m);

// dst (out, kh, kw, cin) = src (out, cin, kh, kw): PyTorch's conv weight to the patch layout;
// and back. Elements of elem_size bytes, any dtype.
void gm_vit_conv_to_patch(void *dst, const void *src, size_t elem_size, int64_t out, int64_t cin,
                          int64_t kh, int64_t kw);
void gm_vit_patch_to_conv(void *dst, const void *src, size_t elem_size, int64_t out, int64_t cin,
                          int64_t kh, int64_t kw);

// Images as the data layer stores them, u8 (B, H, W, 3), to CLIP-normalised pixels
// (x / 255 - mean) / std of dtype dt, computed with ops on the images' device. Mean
// (0.48145466, 0.4578275, 0.40821073), std (0.26862954, 0.26130258, 0.27577711).
ag_tensor *gm_vit_clip_pixels(ag_ctx *ctx, ag_tensor *images, ag_dtype dt);

// The embeddings h0 = hidden_states[0]: x (B, H, W, Cin) of the parameters' dtype -> (B, T, C).
ag_tensor *gm_vit_embed(ag_ctx *ctx, const gm_vit *m, ag_tensor *x);
// Block l (0-based) on h (B, T, C).
ag_tensor *gm_vit_block(ag_ctx *ctx, const gm_vit *m, int l, ag_tensor *h);
// The pooled head on the output of the last block (B, T, C) -> (B, head_dim or C).
ag_tensor *gm_vit_head(ag_ctx *ctx, const gm_vit *m, ag_tensor *last);
// Runs the encoder once on x (B, H, W, Cin), as deep as the requested outputs need.
// hidden (may be NULL): hidden_states[out_layer], (B, gm_vit_out_tokens, C) contiguous.
// pooled (may be NULL; needs a head): (B, head_dim or C).
void gm_vit_forward(ag_ctx *ctx, const gm_vit *m, ag_tensor *x, ag_tensor **hidden,
                    ag_tensor **pooled);
ag_tensor *gm_vit_hidden(ag_ctx *ctx, const gm_vit *m, ag_tensor *x);
ag_tensor *gm_vit_pooled(ag_ctx *ctx, const gm_vit *m, ag_tensor *x);
