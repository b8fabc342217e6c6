// qformer.c: see qformer.h.
#include "qformer.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/error.h"
#include "model/init.h"

gm_qformer_config gm_qformer_bert_base(int64_t encoder_width) {
    return (gm_qformer_config){.hidden = 768,
                               .n_layers = 12,
                               .n_heads = 12,
                               .intermediate = 3072,
                               .encoder_width = encoder_width,
                               .cross_attention_frequency = 2,
                               .eps = 1e-12,
                               .dropout = 0.1,
                               .names = GM_QFORMER_NAMES_HF};
}

void gm_qformer_check_config(const gm_qformer_config *c, const char *what) {
#define NEED(cond, ...)                                                                            \
    if (!(cond)) ag_fail(__VA_ARGS__)
    NEED(c->hidden >= 1, "%s config: hidden must be >= 1, got %lld", what, (long long)c->hidden);
    NEED(c->n_layers >= 1, "%s config: layers must be >= 1, got %lld", what,
         (long long)c->n_layers);
    NEED(c->n_heads >= 1 && c->hidden % c->n_heads == 0,
         "%s config: hidden %lld is not a multiple of heads %lld", what, (long long)c->hidden,
         (long long)c->n_heads);
    NEED(c->intermediate >= 1, "%s config: intermediate must be >= 1, got %lld", what,
         (long long)c->intermediate);
    NEED(c->encoder_width >= 1, "%s config: encoder_width must be >= 1, got %lld", what,
         (long long)c->encoder_width);
    NEED(c->cross_attention_frequency >= 1,
         "%s config: cross_attention_frequency must be >= 1, got %lld", what,
         (long long)c->cross_attention_frequency);
    NEED(c->eps > 0, "%s config: eps must be > 0, got %g", what, c->eps);
    NEED(c->dropout >= 0 && c->dropout < 1, "%s config: dropout must be in [0, 1), got %g", what,
         c->dropout);
    NEED(c->names == GM_QFORMER_NAMES_HF || c->names == GM_QFORMER_NAMES_LAVIS,
         "%s config: unknown parameter name scheme %d", what, (int)c->names);
#undef NEED
}

static bool has_cross(const gm_qformer_config *c, int64_t l) {
    return l % c->cross_attention_frequency == 0;
}

int64_t gm_qformer_config_param_count(const gm_qformer_config *c) {
    int64_t C = c->hidden, Ce = c->encoder_width, I = c->intermediate;
    int64_t self_attn = 4 * (C * C + C) + 2 * C;
    int64_t cross = 2 * (C * C + C) + 2 * (Ce * C + C) + 2 * C;
    int64_t ffn = I * C + I + C * I + C + 2 * C;
    int64_t n = 2 * C;
    for (int64_t l = 0; l < c->n_layers; l++) n += self_attn + ffn + (has_cross(c, l) ? cross : 0);
    return n;
}

typedef struct {
    ag_ctx *ctx;
    gm_qformer *m;
    ag_dtype dt;
    const char *prefix;
} builder;

static ag_tensor *add(builder *b, ag_shape s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static ag_tensor *add(builder *b, ag_shape s, const char *fmt, ...) {
    char suffix[192], name[448];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(suffix, sizeof suffix, fmt, ap);
    va_end(ap);
    snprintf(name, sizeof name, "%s%s", b->prefix, suffix);
    ag_tensor *p = ag_param(b->ctx, name, b->dt, s);
    b->m->params[b->m->n_params++] = p;
    return p;
}

// "attention" or "crossattention" block of layer l; kv_width is C or Ce.
static void add_attn(builder *b, gm_qformer_attn *a, int64_t l, const char *block,
                     int64_t kv_width) {
    int64_t C = b->m->cfg.hidden;
    const char *inner = b->m->cfg.names == GM_QFORMER_NAMES_LAVIS ? "self" : "attention";
    long long L = (long long)l;
    a->q_w = add(b, AG_SHAPE(C, C), "encoder.layer.%lld.%s.%s.query.weight", L, block, inner);
    a->q_b = add(b, AG_SHAPE(C), "encoder.layer.%lld.%s.%s.query.bias", L, block, inner);
    a->k_w = add(b, AG_SHAPE(C, kv_width), "encoder.layer.%lld.%s.%s.key.weight", L, block, inner);
    a->k_b = add(b, AG_SHAPE(C), "encoder.layer.%lld.%s.%s.key.bias", L, block, inner);
    a->v_w =
        add(b, AG_SHAPE(C, kv_width), "encoder.layer.%lld.%s.%s.value.weight", L, block, inner);
    a->v_b = add(b, AG_SHAPE(C), "encoder.layer.%lld.%s.%s.value.bias", L, block, inner);
    a->o_w = add(b, AG_SHAPE(C, C), "encoder.layer.%lld.%s.output.dense.weight", L, block);
    a->o_b = add(b, AG_SHAPE(C), "encoder.layer.%lld.%s.output.dense.bias", L, block);
    a->ln_w = add(b, AG_SHAPE(C), "encoder.layer.%lld.%s.output.LayerNorm.weight", L, block);
    a->ln_b = add(b, AG_SHAPE(C), "encoder.layer.%lld.%s.output.LayerNorm.bias", L, block);
}

gm_qformer *gm_qformer_new(ag_ctx *ctx, const gm_qformer_config *cfg, const char *prefix,
                           ag_dtype dt) {
    gm_qformer_check_config(cfg, "qformer");
    gm_qformer *m = ag_xcalloc(1, sizeof *m, "qformer");
    m->cfg = *cfg;
    int64_t C = cfg->hidden, I = cfg->intermediate;
    m->layers = ag_xcalloc((size_t)cfg->n_layers, sizeof *m->layers, "qformer layers");
    m->params = ag_xcalloc((size_t)(2 + 26 * cfg->n_layers), sizeof *m->params, "qformer params");
    builder b = {ctx, m, dt, prefix ? prefix : ""};
    bool lavis = cfg->names == GM_QFORMER_NAMES_LAVIS;
    m->ln_w =
        add(&b, AG_SHAPE(C), "%s", lavis ? "embeddings.LayerNorm.weight" : "layernorm.weight");
    m->ln_b = add(&b, AG_SHAPE(C), "%s", lavis ? "embeddings.LayerNorm.bias" : "layernorm.bias");
    for (int64_t l = 0; l < cfg->n_layers; l++) {
        gm_qformer_layer *L = &m->layers[l];
        long long li = (long long)l;
        add_attn(&b, &L->self_attn, l, "attention", C);
        L->has_cross = has_cross(cfg, l);
        if (L->has_cross) add_attn(&b, &L->cross, l, "crossattention", cfg->encoder_width);
        L->fc1_w =
            add(&b, AG_SHAPE(I, C), "encoder.layer.%lld.intermediate_query.dense.weight", li);
        L->fc1_b = add(&b, AG_SHAPE(I), "encoder.layer.%lld.intermediate_query.dense.bias", li);
        L->fc2_w = add(&b, AG_SHAPE(C, I), "encoder.layer.%lld.output_query.dense.weight", li);
        L->fc2_b = add(&b, AG_SHAPE(C), "encoder.layer.%lld.output_query.dense.bias", li);
        L->ln_w = add(&b, AG_SHAPE(C), "encoder.layer.%lld.output_query.LayerNorm.weight", li);
        L->ln_b = add(&b, AG_SHAPE(C), "encoder.layer.%lld.output_query.LayerNorm.bias", li);
    }
    return m;
}

void gm_qformer_free(gm_qformer *m) {
    if (!m) return;
    free(m->layers);
    free(m->params);
    free(m);
}

void gm_qformer_init(gm_qformer *m, uint64_t seed, double std) {
    gm_init_by_kind(m->params, m->n_params, seed, std);
}

// Dropout in training only; each call site gets its own stream.
static ag_tensor *drop(ag_ctx *ctx, ag_tensor *x, double p, bool train, uint64_t seed,
                       uint64_t site) {
    if (!train || p <= 0) return x;
    return ag_dropout(ctx, x, p, seed * 0x9e3779b97f4a7c15ull + site + 1);
}

// Multi-head attention of x (B, Tq, C) over kv (B, Tk, Ckv) followed by BertSelfOutput:
// LayerNorm(x + dropout(dense(context))). Out (B, Tq, C).
static ag_tensor *attention_block(ag_ctx *ctx, const gm_qformer *m, const gm_qformer_attn *a,
                                  ag_tensor *x, ag_tensor *kv, ag_tensor *mask, bool train,
                                  uint64_t seed, uint64_t site) {
    const gm_qformer_config *c = &m->cfg;
    int64_t B = x->shape[0], Tq = x->shape[1], Tk = kv->shape[1];
    int64_t C = c->hidden, H = c->n_heads, D = C / H;
    ag_tensor *q = ag_reshape(ctx, ag_linear(ctx, x, a->q_w, a->q_b), AG_SHAPE(B, Tq, H, D));
    ag_tensor *k = ag_reshape(ctx, ag_linear(ctx, kv, a->k_w, a->k_b), AG_SHAPE(B, Tk, H, D));
    ag_tensor *v = ag_reshape(ctx, ag_linear(ctx, kv, a->v_w, a->v_b), AG_SHAPE(B, Tk, H, D));
    ag_tensor *ctx_ = ag_attention(ctx, q, k, v, mask, false, 1.0 / sqrt((double)D)); // (B,Tq,H,D)
    ag_tensor *o = ag_linear(ctx, ag_reshape(ctx, ctx_, AG_SHAPE(B, Tq, C)), a->o_w, a->o_b);
    o = drop(ctx, o, c->dropout, train, seed, site);
    return ag_layernorm(ctx, ag_add(ctx, o, x), a->ln_w, a->ln_b, c->eps); // (B, Tq, C)
}

ag_tensor *gm_qformer_forward(ag_ctx *ctx, const gm_qformer *m, ag_tensor *queries, ag_tensor *enc,
                              ag_tensor *enc_mask, bool train, uint64_t seed) {
    const gm_qformer_config *c = &m->cfg;
    char d1[64], d2[64];
    if (enc->ndim != 3 || enc->shape[2] != c->encoder_width)
        ag_fail("qformer: encoder states must be (B, N, %lld), got %s", (long long)c->encoder_width,
                ag_describe(enc, d1, sizeof d1));
    int64_t B = enc->shape[0], C = c->hidden;
    if (queries->ndim != 3 || queries->shape[2] != C ||
        (queries->shape[0] != 1 && queries->shape[0] != B))
        ag_fail("qformer: queries must be (1 or %lld, Q, %lld) for encoder states %s, got %s",
                (long long)B, (long long)C, ag_describe(enc, d1, sizeof d1),
                ag_describe(queries, d2, sizeof d2));
    if (enc_mask && (enc_mask->ndim != 2 || enc_mask->shape[0] != B ||
                     enc_mask->shape[1] != enc->shape[1] || enc_mask->dtype != AG_U8))
        ag_fail("qformer: encoder mask must be u8 (%lld, %lld), got %s", (long long)B,
                (long long)enc->shape[1], ag_describe(enc_mask, d1, sizeof d1));
    if (!ag_is_contiguous(enc)) enc = ag_contiguous(ctx, enc);

    // The embedding LayerNorm runs once on the shared query tokens, then broadcasts.
    ag_tensor *x = ag_layernorm(ctx, queries, m->ln_w, m->ln_b, c->eps); // (1|B, Q, C)
    x = drop(ctx, x, c->dropout, train, seed, 0);
    if (x->shape[0] != B)
        x = ag_add(ctx, ag_zeros(ctx, x->dtype, AG_SHAPE(B, x->shape[1], C)), x); // (B, Q, C)
    for (int64_t l = 0; l < c->n_layers; l++) {
        const gm_qformer_layer *L = &m->layers[l];
        uint64_t site = 1 + 4 * (uint64_t)l;
        x = attention_block(ctx, m, &L->self_attn, x, x, NULL, train, seed, site);
        if (L->has_cross)
            x = attention_block(ctx, m, &L->cross, x, enc, enc_mask, train, seed, site + 1);
        ag_tensor *h = ag_gelu(ctx, ag_linear(ctx, x, L->fc1_w, L->fc1_b)); // (B, Q, I)
        h = drop(ctx, ag_linear(ctx, h, L->fc2_w, L->fc2_b), c->dropout, train, seed, site + 2);
        x = ag_layernorm(ctx, ag_add(ctx, h, x), L->ln_w, L->ln_b, c->eps); // (B, Q, C)
    }
    return x;
}
