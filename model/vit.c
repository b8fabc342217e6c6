// vit.c: see vit.h.
#include "vit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/error.h"
#include "model/init.h"

// Presets --------------------------------------------------------------------------------------

gm_vit_config gm_vit_clip_l14_336_config(void) {
    return (gm_vit_config){.family = GM_VIT_CLIP,
                           .image_h = 336,
                           .image_w = 336,
                           .channels = 3,
                           .patch = 14,
                           .stride = 14,
                           .width = 1024,
                           .n_layers = 24,
                           .n_heads = 16,
                           .mlp = 4096,
                           .norm_eps = 1e-5,
                           .act = GM_VIT_QUICK_GELU,
                           .pre_norm = true,
                           .q_bias = true,
                           .k_bias = true,
                           .v_bias = true,
                           .out_layer = -2, // LLaVA's mm_vision_select_layer
                           .drop_cls = true};
}

gm_vit_config gm_vit_eva_g14_config(void) {
    return (gm_vit_config){.family = GM_VIT_EVA,
                           .image_h = 224,
                           .image_w = 224,
                           .channels = 3,
                           .patch = 14,
                           .stride = 14,
                           .width = 1408,
                           .n_layers = 40, // eva_vit_g.pth; LAVIS builds and runs 39
                           .n_heads = 16,
                           .mlp = 6144, // int(1408 * 4.3637)
                           .norm_eps = 1e-6,
                           .act = GM_VIT_GELU,
                           .patch_bias = true,
                           .q_bias = true,
                           .v_bias = true,
                           .out_layer = 39};
}

gm_vit_config gm_vit_imagebind_audio_config(void) {
    return (gm_vit_config){.family = GM_VIT_IMAGEBIND_AUDIO,
                           .image_h = 128, // mel bins
                           .image_w = 204, // frames
                           .channels = 1,
                           .patch = 16,
                           .stride = 10,
                           .width = 768,
                           .n_layers = 12,
                           .n_heads = 12,
                           .mlp = 3072,
                           .norm_eps = 1e-6,
                           .act = GM_VIT_GELU,
                           .patch_norm = true,
                           .patch_norm_eps = 1e-5, // nn.LayerNorm's default in the stem
                           .q_bias = true,
                           .k_bias = true,
                           .v_bias = true,
                           .bias_kv = true,
                           .out_layer = -1,
                           .head_norm = true,
                           .head_dim = 1024,
                           .head_scale = 20.0};
}

// Parameter names per family -------------------------------------------------------------------
// NULL: the family's checkpoint has no such tensor, so the switch needing it is refused.

typedef struct {
    const char *family;
    const char *patch_w, *patch_b, *patch_norm_w, *patch_norm_b, *cls, *pos, *pre_norm_w,
        *pre_norm_b;
    const char *block; // printf format of a block's prefix, with its index
    const char *ln1_w, *ln1_b, *q_w, *k_w, *v_w, *qkv_w, *q_b, *k_b, *v_b, *qkv_b, *bias_k, *bias_v,
        *out_w, *out_b, *ln2_w, *ln2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
    const char *head_norm_w, *head_norm_b, *head_w;
} vit_names;

static const vit_names clip_names = {
    .family = "CLIP",
    .patch_w = "vision_model.embeddings.patch_embedding.weight",
    .patch_b = "vision_model.embeddings.patch_embedding.bias",
    .cls = "vision_model.embeddings.class_embedding",
    .pos = "vision_model.embeddings.position_embedding.weight",
    .pre_norm_w = "vision_model.pre_layrnorm.weight", // sic: transformers' spelling
    .pre_norm_b = "vision_model.pre_layrnorm.bias",
    .block = "vision_model.encoder.layers.%d.",
    .ln1_w = "layer_norm1.weight",
    .ln1_b = "layer_norm1.bias",
    .q_w = "self_attn.q_proj.weight",
    .k_w = "self_attn.k_proj.weight",
    .v_w = "self_attn.v_proj.weight",
    .q_b = "self_attn.q_proj.bias",
    .k_b = "self_attn.k_proj.bias",
    .v_b = "self_attn.v_proj.bias",
    .out_w = "self_attn.out_proj.weight",
    .out_b = "self_attn.out_proj.bias",
    .ln2_w = "layer_norm2.weight",
    .ln2_b = "layer_norm2.bias",
    .fc1_w = "mlp.fc1.weight",
    .fc1_b = "mlp.fc1.bias",
    .fc2_w = "mlp.fc2.weight",
    .fc2_b = "mlp.fc2.bias",
    .head_norm_w = "vision_model.post_layernorm.weight",
    .head_norm_b = "vision_model.post_layernorm.bias",
    .head_w = "visual_projection.weight", // CLIPVisionModelWithProjection
};

static const vit_names eva_names = {
    .family = "EVA",
    .patch_w = "patch_embed.proj.weight",
    .patch_b = "patch_embed.proj.bias",
    .cls = "cls_token",
    .pos = "pos_embed",
    .block = "blocks.%d.",
    .ln1_w = "norm1.weight",
    .ln1_b = "norm1.bias",
    .qkv_w = "attn.qkv.weight",
    .q_b = "attn.q_bias",
    .v_b = "attn.v_bias",
    .out_w = "attn.proj.weight",
    .out_b = "attn.proj.bias",
    .ln2_w = "norm2.weight",
    .ln2_b = "norm2.bias",
    .fc1_w = "mlp.fc1.weight",
    .fc1_b = "mlp.fc1.bias",
    .fc2_w = "mlp.fc2.weight",
    .fc2_b = "mlp.fc2.bias",
};

static const vit_names imagebind_audio_names = {
    .family = "ImageBind audio",
    .patch_w = "modality_preprocessors.audio.rgbt_stem.proj.weight",
    .patch_b = "modality_preprocessors.audio.rgbt_stem.proj.bias",
    .patch_norm_w = "modality_preprocessors.audio.rgbt_stem.norm_layer.weight",
    .patch_norm_b = "modality_preprocessors.audio.rgbt_stem.norm_layer.bias",
    .cls = "modality_preprocessors.audio.cls_token",
    .pos = "modality_preprocessors.audio.pos_embedding_helper.pos_embed",
    .pre_norm_w = "modality_trunks.audio.pre_transformer_layer.0.weight", // as ImageBind vision
    .pre_norm_b = "modality_trunks.audio.pre_transformer_layer.0.bias",
    .block = "modality_trunks.audio.blocks.%d.",
    .ln1_w = "norm_1.weight",
    .ln1_b = "norm_1.bias",
    .qkv_w = "attn.in_proj_weight",
    .qkv_b = "attn.in_proj_bias",
    .bias_k = "attn.bias_k",
    .bias_v = "attn.bias_v",
    .out_w = "attn.out_proj.weight",
    .out_b = "attn.out_proj.bias",
    .ln2_w = "norm_2.weight",
    .ln2_b = "norm_2.bias",
    .fc1_w = "mlp.fc1.weight",
    .fc1_b = "mlp.fc1.bias",
    .fc2_w = "mlp.fc2.weight",
    .fc2_b = "mlp.fc2.bias",
    .head_norm_w = "modality_heads.audio.0.weight",
    .head_norm_b = "modality_heads.audio.0.bias",
    .head_w = "modality_heads.audio.2.weight",
};

static const vit_names *names_of(gm_vit_family f) {
    switch (f) {
    case GM_VIT_CLIP:
        return &clip_names;
    case GM_VIT_EVA:
        return &eva_names;
    case GM_VIT_IMAGEBIND_AUDIO:
        return &imagebind_audio_names;
    }
    ag_fail("vit config: unknown family %d", (int)f);
}

// Config ---------------------------------------------------------------------------------------

int64_t gm_vit_patches(const gm_vit_config *c) {
    return ((c->image_h - c->patch) / c->stride + 1) * ((c->image_w - c->patch) / c->stride + 1);
}

int64_t gm_vit_out_tokens(const gm_vit_config *c) {
    return gm_vit_patches(c) + (c->drop_cls ? 0 : 1);
}

int gm_vit_out_index(const gm_vit_config *c) {
    return c->out_layer < 0 ? (int)(c->out_layer + c->n_layers + 1) : c->out_layer;
}

bool gm_vit_has_head(const gm_vit_config *c) {
    return c->head_norm || c->head_dim > 0 || c->head_scale > 0;
}

int gm_vit_layers_used(const gm_vit_config *c) {
    return gm_vit_has_head(c) ? (int)c->n_layers : gm_vit_out_index(c);
}

// A switch that needs a tensor the family's checkpoint does not have.
static void need_name(const vit_names *nm, const char *name, const char *what) {
    if (!name)
        ag_fail("vit config: %s has no tensor in the %s checkpoint layout", what, nm->family);
}

void gm_vit_check_config(const gm_vit_config *c) {
    const vit_names *nm = names_of(c->family);
    if (c->image_h < 1 || c->image_w < 1 || c->channels < 1)
        ag_fail("vit config: image %lldx%lld with %lld channels must be >= 1 each",
                (long long)c->image_h, (long long)c->image_w, (long long)c->channels);
    if (c->patch < 1 || c->stride < 1)
        ag_fail("vit config: patch %lld and stride %lld must be >= 1", (long long)c->patch,
                (long long)c->stride);
    if (c->patch > c->image_h || c->patch > c->image_w)
        ag_fail("vit config: patch %lld larger than the image %lldx%lld", (long long)c->patch,
                (long long)c->image_h, (long long)c->image_w);
    if (c->width < 1 || c->n_heads < 1 || c->width % c->n_heads)
        ag_fail("vit config: width %lld is not a multiple of heads %lld", (long long)c->width,
                (long long)c->n_heads);
    if (c->n_layers < 1 || c->n_layers > 4096)
        ag_fail("vit config: layers %lld outside [1, 4096]", (long long)c->n_layers);
    if (c->mlp < 1) ag_fail("vit config: mlp must be >= 1, got %lld", (long long)c->mlp);
    if (!(c->norm_eps > 0)) ag_fail("vit config: norm_eps must be > 0, got %g", c->norm_eps);
    if (c->patch_norm && !(c->patch_norm_eps > 0))
        ag_fail("vit config: patch_norm_eps must be > 0, got %g", c->patch_norm_eps);
    if (c->act != GM_VIT_QUICK_GELU && c->act != GM_VIT_GELU)
        ag_fail("vit config: unknown activation %d", (int)c->act);
    if (c->out_layer < -(c->n_layers + 1) || c->out_layer > c->n_layers)
        ag_fail("vit config: out_layer %d outside [%lld, %lld] for %lld layers", c->out_layer,
                (long long)-(c->n_layers + 1), (long long)c->n_layers, (long long)c->n_layers);
    if (c->head_dim < 0) ag_fail("vit config: head_dim must be >= 0");
    if (c->head_scale < 0) ag_fail("vit config: head_scale must be >= 0");
    if (c->patch_bias) need_name(nm, nm->patch_b, "patch_bias");
    if (c->patch_norm) need_name(nm, nm->patch_norm_w, "patch_norm");
    if (c->pre_norm) need_name(nm, nm->pre_norm_w, "pre_norm");
    if (c->bias_kv) need_name(nm, nm->bias_k, "bias_kv");
    if (c->head_norm) need_name(nm, nm->head_norm_w, "head_norm");
    if (c->head_dim > 0) need_name(nm, nm->head_w, "head_dim");
    if (nm->qkv_b) { // one fused bias: all three or none
        if (c->q_bias != c->k_bias || c->q_bias != c->v_bias)
            ag_fail("vit config: the %s layout has one fused q/k/v bias: q_bias, k_bias and "
                    "v_bias must be equal",
                    nm->family);
    } else {
        if (c->q_bias) need_name(nm, nm->q_b, "q_bias");
        if (c->k_bias) need_name(nm, nm->k_b, "k_bias");
        if (c->v_bias) need_name(nm, nm->v_b, "v_bias");
    }
}

// Construction ---------------------------------------------------------------------------------

typedef struct {
    ag_ctx *ctx;
    gm_vit *m;
    ag_dtype dt;
    const char *prefix;
} builder;

// prefix + [block prefix of layer l, when l >= 0] + suffix
static ag_tensor *add(builder *b, const vit_names *nm, int l, const char *suffix, ag_shape s) {
    char blk[96] = "", name[512];
    if (l >= 0) snprintf(blk, sizeof blk, nm->block, l);
    snprintf(name, sizeof name, "%s%s%s", b->prefix, blk, suffix);
    ag_tensor *p = ag_param(b->ctx, name, b->dt, s);
    b->m->params[b->m->n_params++] = p;
    return p;
}

gm_vit *gm_vit_new(ag_ctx *ctx, const gm_vit_config *cfg, const char *prefix, ag_dtype dt) {
    gm_vit_check_config(cfg);
    if (!ag_dtype_is_float(dt))
        ag_fail("vit: parameters need a float dtype, not %s", ag_dtype_name(dt));
    const vit_names *nm = names_of(cfg->family);
    gm_vit *m = ag_xcalloc(1, sizeof *m, "vit");
    m->cfg = *cfg;
    m->n_layers_used = gm_vit_layers_used(cfg);
    const int64_t C = cfg->width, F = cfg->mlp, P = cfg->patch, N = gm_vit_patches(cfg);
    m->layers = ag_xcalloc((size_t)m->n_layers_used + 1, sizeof *m->layers, "vit layers");
    m->params = ag_xcalloc((size_t)(16 + 24 * m->n_layers_used), sizeof *m->params, "vit params");
    builder b = {ctx, m, dt, prefix ? prefix : ""};
    const bool clip = cfg->family == GM_VIT_CLIP; // CLIP stores cls and pos without batch dims
    // Embeddings, in checkpoint order
    if (clip) m->cls = add(&b, nm, -1, nm->cls, AG_SHAPE(C));
    m->patch_w = add(&b, nm, -1, nm->patch_w, AG_SHAPE(C, P, P, cfg->channels));
    if (cfg->patch_bias) m->patch_b = add(&b, nm, -1, nm->patch_b, AG_SHAPE(C));
    if (clip) {
        m->pos = add(&b, nm, -1, nm->pos, AG_SHAPE(1 + N, C));
    } else {
        m->cls = add(&b, nm, -1, nm->cls, AG_SHAPE(1, 1, C));
        m->pos = add(&b, nm, -1, nm->pos, AG_SHAPE(1, 1 + N, C));
    }
    if (cfg->patch_norm) {
        m->patch_norm_w = add(&b, nm, -1, nm->patch_norm_w, AG_SHAPE(C));
        m->patch_norm_b = add(&b, nm, -1, nm->patch_norm_b, AG_SHAPE(C));
    }
    if (cfg->pre_norm) {
        m->pre_norm_w = add(&b, nm, -1, nm->pre_norm_w, AG_SHAPE(C));
        m->pre_norm_b = add(&b, nm, -1, nm->pre_norm_b, AG_SHAPE(C));
    }
    for (int l = 0; l < m->n_layers_used; l++) {
        gm_vit_layer *L = &m->layers[l];
        L->ln1_w = add(&b, nm, l, nm->ln1_w, AG_SHAPE(C));
        L->ln1_b = add(&b, nm, l, nm->ln1_b, AG_SHAPE(C));
        if (nm->qkv_w) {
            L->qkv_w = add(&b, nm, l, nm->qkv_w, AG_SHAPE(3 * C, C));
            if (nm->qkv_b && cfg->q_bias) L->qkv_b = add(&b, nm, l, nm->qkv_b, AG_SHAPE(3 * C));
        } else {
            L->q_w = add(&b, nm, l, nm->q_w, AG_SHAPE(C, C));
            if (cfg->q_bias) L->q_b = add(&b, nm, l, nm->q_b, AG_SHAPE(C));
            L->k_w = add(&b, nm, l, nm->k_w, AG_SHAPE(C, C));
            if (cfg->k_bias) L->k_b = add(&b, nm, l, nm->k_b, AG_SHAPE(C));
            L->v_w = add(&b, nm, l, nm->v_w, AG_SHAPE(C, C));
            if (cfg->v_bias) L->v_b = add(&b, nm, l, nm->v_b, AG_SHAPE(C));
        }
        if (nm->qkv_w && !nm->qkv_b) { // EVA: separate biases of the fused projection
            if (cfg->q_bias) L->q_b = add(&b, nm, l, nm->q_b, AG_SHAPE(C));
            if (cfg->v_bias) L->v_b = add(&b, nm, l, nm->v_b, AG_SHAPE(C));
        }
        if (cfg->bias_kv) {
            L->bias_k = add(&b, nm, l, nm->bias_k, AG_SHAPE(1, 1, C));
            L->bias_v = add(&b, nm, l, nm->bias_v, AG_SHAPE(1, 1, C));
        }
        L->out_w = add(&b, nm, l, nm->out_w, AG_SHAPE(C, C));
        L->out_b = add(&b, nm, l, nm->out_b, AG_SHAPE(C));
        L->ln2_w = add(&b, nm, l, nm->ln2_w, AG_SHAPE(C));
        L->ln2_b = add(&b, nm, l, nm->ln2_b, AG_SHAPE(C));
        L->fc1_w = add(&b, nm, l, nm->fc1_w, AG_SHAPE(F, C));
        L->fc1_b = add(&b, nm, l, nm->fc1_b, AG_SHAPE(F));
        L->fc2_w = add(&b, nm, l, nm->fc2_w, AG_SHAPE(C, F));
        L->fc2_b = add(&b, nm, l, nm->fc2_b, AG_SHAPE(C));
    }
    if (cfg->head_norm) {
        m->head_norm_w = add(&b, nm, -1, nm->head_norm_w, AG_SHAPE(C));
        m->head_norm_b = add(&b, nm, -1, nm->head_norm_b, AG_SHAPE(C));
    }
    if (cfg->head_dim > 0) m->head_w = add(&b, nm, -1, nm->head_w, AG_SHAPE(cfg->head_dim, C));
    return m;
}

void gm_vit_free(gm_vit *m) {
    if (!m) return;
    free(m->layers);
    free(m->params);
    free(m);
}

int64_t gm_vit_param_count(const gm_vit *m) {
    int64_t n = 0;
    for (int i = 0; i < m->n_params; i++) n += ag_numel(m->params[i]);
    return n;
}

static void init_normal(ag_tensor *p, uint64_t seed, double std) {
    if (p) gm_init_normal_named(p, seed, std);
}
static void init_const(ag_tensor *p, double v) {
    if (p) gm_init_constant(p, v);
}

void gm_vit_init(gm_vit *m, uint64_t seed, double std) {
    if (m->cfg.init_std > 0) std = m->cfg.init_std;
    init_normal(m->patch_w, seed, std);
    init_const(m->patch_b, 0);
    init_const(m->patch_norm_w, 1);
    init_const(m->patch_norm_b, 0);
    init_normal(m->cls, seed, std);
    // Trained from scratch (the demo, tests), a ViT learns where things are far sooner from a
    // 2-D sin-cos table than from noise 20x weaker than the patch features (pretrained
    // towers are imported over it).
    const gm_vit_config *c = &m->cfg;
    if (m->pos && c->width % 4)
        init_normal(m->pos, seed, std);
    else if (m->pos)
        gm_init_sincos_2d(m->pos, ag_numel(m->pos) / c->width - gm_vit_patches(c),
                          (c->image_h - c->patch) / c->stride + 1,
                          (c->image_w - c->patch) / c->stride + 1);
    init_const(m->pre_norm_w, 1);
    init_const(m->pre_norm_b, 0);
    for (int l = 0; l < m->n_layers_used; l++) {
        gm_vit_layer *L = &m->layers[l];
        ag_tensor *mats[] = {L->q_w,    L->k_w,   L->v_w,   L->qkv_w, L->bias_k,
                             L->bias_v, L->out_w, L->fc1_w, L->fc2_w};
        ag_tensor *biases[] = {L->q_b,   L->k_b,   L->v_b,   L->qkv_b, L->out_b,
                               L->fc1_b, L->fc2_b, L->ln1_b, L->ln2_b};
        for (size_t i = 0; i < sizeof mats / sizeof *mats; i++) init_normal(mats[i], seed, std);
        for (size_t i = 0; i < sizeof biases / sizeof *biases; i++) init_const(biases[i], 0);
        init_const(L->ln1_w, 1);
        init_const(L->ln2_w, 1);
    }
    init_const(m->head_norm_w, 1);
    init_const(m->head_norm_b, 0);
    init_normal(m->head_w, seed, std);
}

// Weight layout
// ---------------------------------------------------------------------------------------

void gm_vit_conv_to_patch(void *dst, const void *src, size_t es, int64_t out, int64_t cin,
                          int64_t kh, int64_t kw) {
    char *d = dst;
    const char *s = src;
    for (int64_t o = 0; o < out; o++)
        for (int64_t y = 0; y < kh; y++)
            for (int64_t x = 0; x < kw; x++)
                for (int64_t c = 0; c < cin; c++)
                    memcpy(d + (size_t)(((o * kh + y) * kw + x) * cin + c) * es,
                           s + (size_t)(((o * cin + c) * kh + y) * kw + x) * es, es);
}

void gm_vit_patch_to_conv(void *dst, const void *src, size_t es, int64_t out, int64_t cin,
                          int64_t kh, int64_t kw) {
    char *d = dst;
    const char *s = src;
    for (int64_t o = 0; o < out; o++)
        for (int64_t c = 0; c < cin; c++)
            for (int64_t y = 0; y < kh; y++)
                for (int64_t x = 0; x < kw; x++)
                    memcpy(d + (size_t)(((o * cin + c) * kh + y) * kw + x) * es,
                           s + (size_t)(((o * kh + y) * kw + x) * cin + c) * es, es);
}

// Forward --------------------------------------------------------------------------------------

ag_tensor *gm_vit_clip_pixels(ag_ctx *ctx, ag_tensor *images, ag_dtype dt) {
    static const double mean[3] = {0.48145466, 0.4578275, 0.40821073};
    static const double inv_std[3] = {1 / 0.26862954, 1 / 0.26130258, 1 / 0.27577711};
    char d[96];
    if (images->dtype != AG_U8 || images->ndim != 4 || images->shape[3] != 3)
        ag_fail("vit: images must be u8 (B, H, W, 3), got %s", ag_describe(images, d, sizeof d));
    if (!ag_dtype_is_float(dt))
        ag_fail("vit: pixels need a float dtype, not %s", ag_dtype_name(dt));
    ag_tensor *x = ag_scale(ctx, ag_cast(ctx, images, dt), 1.0 / 255.0); // (B, H, W, 3)
    // CLIP's per-channel mean and 1 / std, broadcast over the last dim.
    ag_tensor *mu = ag_cast(ctx, ag_from_host(ctx, AG_F64, AG_SHAPE(3), mean), dt);    // (3)
    ag_tensor *is = ag_cast(ctx, ag_from_host(ctx, AG_F64, AG_SHAPE(3), inv_std), dt); // (3)
    return ag_mul(ctx, ag_sub(ctx, x, mu), is); // (B, H, W, 3)
}

ag_tensor *gm_vit_embed(ag_ctx *ctx, const gm_vit *m, ag_tensor *x) {
    const gm_vit_config *c = &m->cfg;
    char d[96];
    if (x->ndim != 4 || x->shape[1] != c->image_h || x->shape[2] != c->image_w ||
        x->shape[3] != c->channels)
        ag_fail("vit: input %s is not (B, %lld, %lld, %lld)", ag_describe(x, d, sizeof d),
                (long long)c->image_h, (long long)c->image_w, (long long)c->channels);
    if (x->dtype != m->patch_w->dtype)
        ag_fail("vit: input %s differs in dtype from the parameters (%s)",
                ag_describe(x, d, sizeof d), ag_dtype_name(m->patch_w->dtype));
    const int64_t B = x->shape[0], C = c->width, N = gm_vit_patches(c);
    ag_tensor *p = ag_patchify(ctx, x, c->patch, c->patch, c->stride, c->stride); // (B, N, P*P*Cin)
    ag_tensor *w = ag_reshape(ctx, m->patch_w, AG_SHAPE(C, -1));                  // (C, P*P*Cin)
    ag_tensor *h = ag_linear(ctx, p, w, m->patch_b);                              // (B, N, C)
    if (m->patch_norm_w)
        h = ag_layernorm(ctx, h, m->patch_norm_w, m->patch_norm_b, c->patch_norm_eps);
    // The class token repeated over the batch: zeros (B, 1, C) + cls broadcasts, and the
    // gradient of the add sums the batch back into the one token.
    ag_tensor *cls = ag_add(ctx, ag_zeros(ctx, h->dtype, AG_SHAPE(B, 1, C)),
                            ag_reshape(ctx, m->cls, AG_SHAPE(1, 1, C)));
    ag_tensor *parts[2] = {cls, h};
    h = ag_concat(ctx, 2, parts, 1);                                    // (B, 1+N, C)
    h = ag_add(ctx, h, ag_reshape(ctx, m->pos, AG_SHAPE(1, 1 + N, C))); // (B, 1+N, C)
    if (m->pre_norm_w) h = ag_layernorm(ctx, h, m->pre_norm_w, m->pre_norm_b, c->norm_eps);
    return h;
}

// kv (B, T, H, D) -> (B, T+1, H, D): the learned row b (1, 1, C) appended to every sequence,
// as nn.MultiheadAttention's add_bias_kv does after the input projection.
static ag_tensor *append_kv(ag_ctx *ctx, ag_tensor *kv, ag_tensor *b) {
    const int64_t B = kv->shape[0], H = kv->shape[2], D = kv->shape[3];
    ag_tensor *row = ag_add(ctx, ag_zeros(ctx, kv->dtype, AG_SHAPE(B, 1, H, D)),
                            ag_reshape(ctx, b, AG_SHAPE(1, 1, H, D))); // (B, 1, H, D)
    ag_tensor *parts[2] = {ag_contiguous(ctx, kv), row};
    return ag_concat(ctx, 2, parts, 1);
}

ag_tensor *gm_vit_block(ag_ctx *ctx, const gm_vit *m, int l, ag_tensor *x) {
    const gm_vit_config *c = &m->cfg;
    if (l < 0 || l >= m->n_layers_used)
        ag_fail("vit: block %d outside the %d allocated", l, m->n_layers_used);
    const gm_vit_layer *L = &m->layers[l];
    const int64_t B = x->shape[0], T = x->shape[1], C = c->width, H = c->n_heads, D = C / H;
    ag_tensor *h = ag_layernorm(ctx, x, L->ln1_w, L->ln1_b, c->norm_eps); // (B, T, C)
    ag_tensor *q, *k, *v;                                                 // (B, T, H, D)
    if (L->qkv_w) {
        ag_tensor *bias = L->qkv_b;
        if (!bias && (L->q_b || L->v_b)) { // EVA: cat(q_bias, 0, v_bias), as LAVIS builds it
            ag_tensor *zero = ag_zeros(ctx, h->dtype, AG_SHAPE(C));
            ag_tensor *parts[3] = {L->q_b ? L->q_b : zero, zero, L->v_b ? L->v_b : zero};
            bias = ag_concat(ctx, 3, parts, 0); // (3C)
        }
        ag_tensor *qkv = ag_linear(ctx, h, L->qkv_w, bias); // (B, T, 3C), columns q | k | v
        qkv = ag_reshape(ctx, qkv, AG_SHAPE(B, T, 3 * H, D));
        ag_tensor *s[3]; // views (B, T, H, D) with the head dim contiguous
        ag_split(ctx, qkv, 2, 3, (const int64_t[]){H, H, H}, s);
        q = s[0], k = s[1], v = s[2];
    } else {
        q = ag_reshape(ctx, ag_linear(ctx, h, L->q_w, L->q_b), AG_SHAPE(B, T, H, D));
        k = ag_reshape(ctx, ag_linear(ctx, h, L->k_w, L->k_b), AG_SHAPE(B, T, H, D));
        v = ag_reshape(ctx, ag_linear(ctx, h, L->v_w, L->v_b), AG_SHAPE(B, T, H, D));
    }
    if (L->bias_k) {
        k = append_kv(ctx, k, L->bias_k); // (B, T+1, H, D)
        v = append_kv(ctx, v, L->bias_v);
    }
    ag_tensor *a = ag_attention(ctx, q, k, v, NULL, false, 1.0 / sqrt((double)D)); // (B,T,H,D)
    a = ag_reshape(ctx, a, AG_SHAPE(B, T, C));
    x = ag_add(ctx, x, ag_linear(ctx, a, L->out_w, L->out_b));
    h = ag_layernorm(ctx, x, L->ln2_w, L->ln2_b, c->norm_eps);
    ag_tensor *f = ag_linear(ctx, h, L->fc1_w, L->fc1_b); // (B, T, F)
    f = c->act == GM_VIT_QUICK_GELU ? ag_quick_gelu(ctx, f) : ag_gelu(ctx, f);
    return ag_add(ctx, x, ag_linear(ctx, f, L->fc2_w, L->fc2_b)); // (B, T, C)
}

ag_tensor *gm_vit_head(ag_ctx *ctx, const gm_vit *m, ag_tensor *last) {
    const gm_vit_config *c = &m->cfg;
    const int64_t B = last->shape[0], C = c->width;
    ag_tensor *x = ag_slice(ctx, last, 1, 0, 1); // the CLS row (B, 1, C)
    x = ag_reshape(ctx, ag_contiguous(ctx, x), AG_SHAPE(B, C));
    if (m->head_norm_w) x = ag_layernorm(ctx, x, m->head_norm_w, m->head_norm_b, c->norm_eps);
    if (m->head_w) x = ag_linear(ctx, x, m->head_w, NULL); // (B, head_dim)
    if (c->head_scale > 0) x = ag_scale(ctx, ag_l2_normalize(ctx, x, 1e-12), c->head_scale);
    return x;
}

// hidden_states[k] as the caller wants it: contiguous, CLS row dropped if asked.
static ag_tensor *hidden_out(ag_ctx *ctx, const gm_vit *m, ag_tensor *h) {
    if (!m->cfg.drop_cls) return h;
    return ag_contiguous(ctx, ag_slice(ctx, h, 1, 1, h->shape[1])); // (B, N, C)
}

void gm_vit_forward(ag_ctx *ctx, const gm_vit *m, ag_tensor *x, ag_tensor **hidden,
                    ag_tensor **pooled) {
    const gm_vit_config *c = &m->cfg;
    if (pooled && !gm_vit_has_head(c))
        ag_fail("vit: pooled output asked for, but no head is configured (head_norm, head_dim, "
                "head_scale)");
    const int k = gm_vit_out_index(c);
    const int depth = pooled ? (int)c->n_layers : hidden ? k : 0; // blocks to run
    ag_tensor *h = gm_vit_embed(ctx, m, x);                       // (B, T, C)
    if (hidden && k == 0) *hidden = hidden_out(ctx, m, h);
    for (int l = 0; l < depth; l++) {
        h = gm_vit_block(ctx, m, l, h);
        if (hidden && l + 1 == k) *hidden = hidden_out(ctx, m, h);
    }
    if (pooled) *pooled = gm_vit_head(ctx, m, h);
}

ag_tensor *gm_vit_hidden(ag_ctx *ctx, const gm_vit *m, ag_tensor *x) {
    ag_tensor *h = NULL;
    gm_vit_forward(ctx, m, x, &h, NULL);
    return h;
}

ag_tensor *gm_vit_pooled(ag_ctx *ctx, const gm_vit *m, ag_tensor *x) {
    ag_tensor *p = NULL;
    gm_vit_forward(ctx, m, x, NULL, &p);
    return p;
}
