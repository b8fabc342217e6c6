// llama.c: see llama.h.
#include "llama.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "autograd/error.h"
#include "autograd/memory.h"
#include "autograd/rng.h"
#include "model/init.h"

void gm_llama_check_config(const gm_llama_config *c) {
    if (c->vocab < 1) ag_fail("llama config: vocab must be >= 1, got %lld", (long long)c->vocab);
    if (c->dim < 2) ag_fail("llama config: dim must be >= 2, got %lld", (long long)c->dim);
    if (c->n_layers < 1) ag_fail("llama config: layers must be >= 1");
    if (c->n_heads < 1 || c->dim % c->n_heads)
        ag_fail("llama config: dim %lld is not a multiple of heads %lld", (long long)c->dim,
                (long long)c->n_heads);
    if ((c->dim / c->n_heads) % 2)
        ag_fail("llama config: head dim %lld must be even for RoPE",
                (long long)(c->dim / c->n_heads));
    if (c->n_kv_heads < 1 || c->n_heads % c->n_kv_heads)
        ag_fail("llama config: heads %lld is not a multiple of kv_heads %lld",
                (long long)c->n_heads, (long long)c->n_kv_heads);
    if (c->ffn < 1) ag_fail("llama config: ffn must be >= 1");
    if (c->max_seq < 1) ag_fail("llama config: max_seq must be >= 1");
    if (!(c->rope_theta > 0)) ag_fail("llama config: rope_theta must be > 0");
    if (!(c->norm_eps > 0)) ag_fail("llama config: norm_eps must be > 0");
    gm_lora_check_config(&c->lora);
}

static ag_tensor *add_param(ag_ctx *ctx, gm_llama *m, const char *name, ag_dtype dt, ag_shape s) {
    ag_tensor *p = ag_param(ctx, name, dt, s);
    m->params[m->n_params++] = p;
    return p;
}

gm_llama *gm_llama_new(ag_ctx *ctx, const gm_llama_config *cfg, ag_dtype dt) {
    gm_llama_check_config(cfg);
    gm_llama *m = ag_xcalloc(1, sizeof *m, "llama");
    m->cfg = *cfg;
    int64_t C = cfg->dim, D = C / cfg->n_heads, F = cfg->ffn, V = cfg->vocab;
    int64_t Ckv = cfg->n_kv_heads * D;
    m->layers = ag_xcalloc((size_t)cfg->n_layers, sizeof *m->layers, "llama layers");
    m->params = ag_xcalloc((size_t)(3 + 9 * cfg->n_layers), sizeof *m->params, "llama params");
    m->embed = add_param(ctx, m, "model.embed_tokens.weight", dt, AG_SHAPE(V, C));
    char name[128];
    for (int64_t l = 0; l < cfg->n_layers; l++) {
        gm_llama_layer *L = &m->layers[l];
#define P(field, suffix, ...)                                                                      \
    snprintf(name, sizeof name, "model.layers.%lld.%s", (long long)l, suffix);                     \
    L->field = add_param(ctx, m, name, dt, AG_SHAPE(__VA_ARGS__))
        P(attn_norm, "input_layernorm.weight", C);
        P(wq, "self_attn.q_proj.weight", C, C);
        P(wk, "self_attn.k_proj.weight", Ckv, C);
        P(wv, "self_attn.v_proj.weight", Ckv, C);
        P(wo, "self_attn.o_proj.weight", C, C);
        P(ffn_norm, "post_attention_layernorm.weight", C);
        P(w_gate, "mlp.gate_proj.weight", F, C);
        P(w_up, "mlp.up_proj.weight", F, C);
        P(w_down, "mlp.down_proj.weight", C, F);
#undef P
    }
    m->norm = add_param(ctx, m, "model.norm.weight", dt, AG_SHAPE(C));
    m->lm_head = add_param(ctx, m, "lm_head.weight", dt, AG_SHAPE(V, C));
    if (cfg->lora.rank > 0) {
        m->lora_params = ag_xcalloc((size_t)(2 * GM_LORA_NTARGETS * cfg->n_layers),
                                    sizeof *m->lora_params, "llama lora");
        for (int64_t l = 0; l < cfg->n_layers; l++) {
            gm_llama_layer *L = &m->layers[l];
            ag_tensor *w[GM_LORA_NTARGETS] = {L->wq,     L->wk,   L->wv,    L->wo,
                                              L->w_gate, L->w_up, L->w_down};
            for (int t = 0; t < GM_LORA_NTARGETS; t++) {
                if (!(cfg->lora.targets >> t & 1)) continue;
                L->lora[t] = gm_lora_new(ctx, w[t], cfg->lora.rank);
                m->lora_params[m->n_lora++] = L->lora[t].A;
                m->lora_params[m->n_lora++] = L->lora[t].B;
            }
        }
    }
    return m;
}

void gm_llama_free(gm_llama *m) {
    if (!m) return;
    free(m->layers);
    free(m->params);
    free(m->lora_params);
    free(m);
}

void gm_llama_init(gm_llama *m, uint64_t seed, double std) {
    for (int i = 0; i < m->n_params; i++) {
        ag_tensor *p = m->params[i];
        if (p->ndim == 1)
            gm_init_constant(p, 1.0); // norm weights
        else
            gm_init_normal(p, seed, (uint64_t)i, std);
    }
    for (int64_t l = 0; l < m->cfg.n_layers; l++)
        for (int t = 0; t < GM_LORA_NTARGETS; t++) gm_lora_init(&m->layers[l].lora[t], seed);
}

void gm_llama_lora_mode(gm_llama *m, bool train, uint64_t seed) {
    m->lora_train = train;
    m->lora_seed = seed;
}

int gm_llama_lora_select(ag_ctx *ctx, gm_llama *m) {
    if (!m->n_lora) return 0; // no LoRA: nothing changes
    for (int i = 0; i < m->n_params; i++) ag_set_trainable(ctx, m->params[i], false);
    for (int i = 0; i < m->n_lora; i++) ag_set_trainable(ctx, m->lora_params[i], true);
    return m->n_lora;
}

void gm_llama_lora_merge(gm_llama *m) {
    const double s = gm_lora_scale(&m->cfg.lora);
    for (int64_t l = 0; l < m->cfg.n_layers; l++) {
        gm_llama_layer *L = &m->layers[l];
        ag_tensor *w[GM_LORA_NTARGETS] = {L->wq,     L->wk,   L->wv,    L->wo,
                                          L->w_gate, L->w_up, L->w_down};
        for (int t = 0; t < GM_LORA_NTARGETS; t++) {
            gm_lora_merge(w[t], &L->lora[t], s);
            L->lora[t] = (gm_lora_pair){NULL, NULL};
        }
    }
    m->n_lora = 0;
    m->cfg.lora = (gm_lora_config){0};
}

int64_t gm_llama_param_count(const gm_llama *m) {
    int64_t n = 0;
    for (int i = 0; i < m->n_params; i++) n += ag_numel(m->params[i]);
    return n;
}

// Positions start .. start + n - 1 as an i32 step tensor (n).
static ag_tensor *positions_from(ag_ctx *ctx, int64_t start, int64_t n) {
    int32_t *p = ag_step_alloc(ctx, sizeof(int32_t) * (size_t)n);
    for (int64_t t = 0; t < n; t++) p[t] = (int32_t)(start + t);
    return ag_from_host(ctx, AG_I32, AG_SHAPE(n), p);
}

ag_tensor *gm_positions(ag_ctx *ctx, int64_t T) {
    return positions_from(ctx, 0, T);
}

ag_tensor *gm_llama_embed(ag_ctx *ctx, const gm_llama *m, ag_tensor *ids) {
    return ag_embedding(ctx, m->embed, ids); // (B, T, C)
}

// A layer's linears with their LoRA adapters (plain ag_linear where there is none).
typedef struct {
    const gm_llama_layer *L;
    double scale, dropout;
    uint64_t seed;
} lora_args;

static ag_tensor *lin(ag_ctx *ctx, const lora_args *a, ag_tensor *x, ag_tensor *w,
                      gm_lora_target t) {
    return gm_lora_linear(ctx, x, w, &a->L->lora[t], a->scale, a->dropout,
                          ag_mix64(a->seed + (uint64_t)t));
}

// (N, heads * D) rows of real tokens -> (B, T, heads, D) with zeros at the padding.
static ag_tensor *pad_rows(ag_ctx *ctx, ag_tensor *x, const gm_llama_rows *r, int64_t heads,
                           int64_t D) {
    ag_tensor *zeros = ag_zeros(ctx, x->dtype, AG_SHAPE(r->B * r->T, heads * D));
    ag_tensor *flat = ag_reshape(ctx, x, AG_SHAPE(r->N, heads * D));
    return ag_reshape(ctx, ag_scatter_rows(ctx, zeros, r->rows, flat),
                      AG_SHAPE(r->B, r->T, heads, D));
}

// One decoder block on x (B, T, C) at positions pos, or with rows on the real tokens' x
// (1, N, C) at positions rows->pos. With a cache, k and v are appended to layer l's entries
// and the queries attend to everything cached.
static ag_tensor *block(ag_ctx *ctx, const gm_llama *m, int64_t l, ag_tensor *x, ag_tensor *pos,
                        gm_llama_kv *kv, const gm_llama_rows *rows) {
    const gm_llama_config *c = &m->cfg;
    const gm_llama_layer *L = &m->layers[l];
    int64_t B = x->shape[0], T = x->shape[1], C = c->dim; // rows: B = 1, T = N
    int64_t H = c->n_heads, Hkv = c->n_kv_heads, D = C / H;
    if (rows) pos = rows->pos;
    // LoRA dropout stream per layer: 0x4c6f5241 is "LoRA" in ASCII, keeping it apart from
    // other streams drawn from the same seed.
    lora_args la = {.L = L,
                    .scale = gm_lora_scale(&c->lora),
                    .dropout = m->lora_train && !kv ? c->lora.dropout : 0,
                    .seed = ag_mix64(m->lora_seed ^ ag_mix64((uint64_t)l + 0x4c6f5241))};
    ag_tensor *h = ag_rmsnorm(ctx, x, L->attn_norm, c->norm_eps); // (B, T, C)
    ag_tensor *q = ag_reshape(ctx, lin(ctx, &la, h, L->wq, GM_LORA_Q), AG_SHAPE(B, T, H, D));
    ag_tensor *k = ag_reshape(ctx, lin(ctx, &la, h, L->wk, GM_LORA_K), AG_SHAPE(B, T, Hkv, D));
    ag_tensor *v = ag_reshape(ctx, lin(ctx, &la, h, L->wv, GM_LORA_V), AG_SHAPE(B, T, Hkv, D));
    q = ag_rope(ctx, q, pos, c->rope_theta);
    k = ag_rope(ctx, k, pos, c->rope_theta);
    if (kv) { // (B, len + T, Hkv, D) views of the cache
        ag_write_slice(&kv->k[l], 1, kv->len, ag_contiguous(ctx, k));
        ag_write_slice(&kv->v[l], 1, kv->len, ag_contiguous(ctx, v));
        k = ag_slice(ctx, &kv->k[l], 1, 0, kv->len + T);
        v = ag_slice(ctx, &kv->v[l], 1, 0, kv->len + T);
    }
    if (rows) {                             // attention per sample, in the padded layout
        q = pad_rows(ctx, q, rows, H, D);   // (B', T', H, D)
        k = pad_rows(ctx, k, rows, Hkv, D); // (B', T', Hkv, D)
        v = pad_rows(ctx, v, rows, Hkv, D);
    }
    ag_tensor *a = ag_attention(ctx, q, k, v, NULL, true, 1.0 / sqrt((double)D)); // (B, T, H, D)
    if (rows) // back to the real tokens' rows
        a = ag_index_select_rows(ctx, ag_reshape(ctx, a, AG_SHAPE(rows->B * rows->T, C)),
                                 rows->rows); // (N, C)
    a = ag_reshape(ctx, a, AG_SHAPE(B, T, C));
    x = ag_add(ctx, x, lin(ctx, &la, a, L->wo, GM_LORA_O)); // (B, T, C)
    h = ag_rmsnorm(ctx, x, L->ffn_norm, c->norm_eps);
    ag_tensor *f = ag_swiglu(ctx, lin(ctx, &la, h, L->w_gate, GM_LORA_GATE),
                             lin(ctx, &la, h, L->w_up, GM_LORA_UP));  // (B, T, F)
    return ag_add(ctx, x, lin(ctx, &la, f, L->w_down, GM_LORA_DOWN)); // (B, T, C)
}

ag_tensor *gm_llama_hidden(ag_ctx *ctx, const gm_llama *m, ag_tensor *x, ag_tensor *pos) {
    for (int64_t l = 0; l < m->cfg.n_layers; l++) x = block(ctx, m, l, x, pos, NULL, NULL);
    return ag_rmsnorm(ctx, x, m->norm, m->cfg.norm_eps);
}

gm_llama_rows gm_llama_rows_of(ag_ctx *ctx, int64_t B, int64_t T, const int32_t *lengths) {
    gm_llama_rows r = {.B = B, .T = T};
    for (int64_t b = 0; b < B; b++) {
        if (lengths[b] < 1 || lengths[b] > T)
            ag_fail("llama: sample %lld has length %d, not in [1, %lld]", (long long)b,
                    (int)lengths[b], (long long)T);
        r.N += lengths[b];
    }
    r.host = ag_step_alloc(ctx, sizeof(int32_t) * (size_t)r.N);
    int32_t *pos = ag_step_alloc(ctx, sizeof(int32_t) * (size_t)r.N);
    for (int64_t b = 0, n = 0; b < B; b++)
        for (int32_t t = 0; t < lengths[b]; t++, n++) r.host[n] = (int32_t)(b * T + t), pos[n] = t;
    r.rows = ag_from_host(ctx, AG_I32, AG_SHAPE(r.N), r.host);
    r.pos = ag_from_host(ctx, AG_I32, AG_SHAPE(r.N), pos);
    return r;
}

ag_tensor *gm_llama_hidden_rows(ag_ctx *ctx, const gm_llama *m, ag_tensor *x,
                                const gm_llama_rows *r) {
    if (x->ndim != 2 || x->shape[0] != r->N || x->shape[1] != m->cfg.dim)
        ag_fail("llama: hidden_rows takes (%lld, %lld) rows, got a tensor of %d dims",
                (long long)r->N, (long long)m->cfg.dim, x->ndim);
    if (r->T > m->cfg.max_seq)
        ag_fail("llama: sequence of %lld tokens exceeds max_seq %lld", (long long)r->T,
                (long long)m->cfg.max_seq);
    x = ag_reshape(ctx, x, AG_SHAPE(1, r->N, m->cfg.dim));
    for (int64_t l = 0; l < m->cfg.n_layers; l++) x = block(ctx, m, l, x, NULL, NULL, r);
    x = ag_rmsnorm(ctx, x, m->norm, m->cfg.norm_eps);
    return ag_reshape(ctx, x, AG_SHAPE(r->N, m->cfg.dim));
}

gm_llama_kv *gm_llama_kv_new(const gm_llama *m, int64_t B, int64_t max_len) {
    const gm_llama_config *c = &m->cfg;
    if (B < 1 || max_len < 1 || max_len > c->max_seq)
        ag_fail("llama kv cache: %lld sequences of %lld positions (max_seq %lld)", (long long)B,
                (long long)max_len, (long long)c->max_seq);
    gm_llama_kv *kv = ag_xcalloc(1, sizeof *kv, "kv cache");
    kv->B = B, kv->max_len = max_len, kv->n_layers = c->n_layers;
    kv->k = ag_xcalloc((size_t)c->n_layers, sizeof *kv->k, "kv cache");
    kv->v = ag_xcalloc((size_t)c->n_layers, sizeof *kv->v, "kv cache");
    int64_t D = c->dim / c->n_heads;
    for (int64_t l = 0; l < 2 * c->n_layers; l++) {
        ag_tensor *t = l < c->n_layers ? &kv->k[l] : &kv->v[l - c->n_layers];
        t->dtype = m->embed->dtype;
        t->device = m->embed->device;
        t->ndim = 4;
        t->shape[0] = B, t->shape[1] = max_len, t->shape[2] = c->n_kv_heads, t->shape[3] = D;
        ag_set_contiguous_strides(t);
        t->name = l < c->n_layers ? "kv_cache.k" : "kv_cache.v";
        t->data = ag_device_alloc(t->device, ag_nbytes(t), "kv cache");
    }
    return kv;
}

void gm_llama_kv_free(gm_llama_kv *kv) {
    if (!kv) return;
    for (int64_t l = 0; l < kv->n_layers; l++) {
        ag_device_free(kv->k[l].device, kv->k[l].data);
        ag_device_free(kv->v[l].device, kv->v[l].data);
    }
    free(kv->k);
    free(kv->v);
    free(kv);
}

void gm_llama_kv_reset(gm_llama_kv *kv) {
    kv->len = 0;
}

ag_tensor *gm_llama_hidden_cached(ag_ctx *ctx, const gm_llama *m, gm_llama_kv *kv, ag_tensor *x) {
    if (ag_grad_enabled(ctx))
        ag_fail("llama kv cache: inference only (gradients are enabled; use ag_no_grad_begin)");
    if (x->ndim != 3 || x->shape[0] != kv->B || x->shape[2] != m->cfg.dim)
        ag_fail("llama kv cache: input of shape [%lld, %lld, %lld], the cache holds %lld "
                "sequences of width %lld",
                (long long)x->shape[0], (long long)x->shape[1],
                (long long)(x->ndim > 2 ? x->shape[2] : 0), (long long)kv->B,
                (long long)m->cfg.dim);
    int64_t n = x->shape[1];
    if (kv->len + n > kv->max_len)
        ag_fail("llama kv cache: %lld positions + %lld new exceed its %lld", (long long)kv->len,
                (long long)n, (long long)kv->max_len);
    ag_tensor *pos = positions_from(ctx, kv->len, n);
    for (int64_t l = 0; l < m->cfg.n_layers; l++) x = block(ctx, m, l, x, pos, kv, NULL);
    kv->len += n;
    kv->rows += kv->B * n;
    return ag_rmsnorm(ctx, x, m->norm, m->cfg.norm_eps);
}

ag_tensor *gm_llama_logits(ag_ctx *ctx, const gm_llama *m, ag_tensor *hidden) {
    ag_tensor *logits = ag_linear(ctx, hidden, m->lm_head, NULL); // (B, T, V)
    return ag_reshape(ctx, logits, AG_SHAPE(-1, m->cfg.vocab));
}

ag_tensor *gm_llama_loss(ag_ctx *ctx, const gm_llama *m, ag_tensor *ids, ag_tensor *targets) {
    int64_t T = ids->shape[1];
    if (T > m->cfg.max_seq)
        ag_fail("llama: sequence of %lld tokens exceeds max_seq %lld", (long long)T,
                (long long)m->cfg.max_seq);
    ag_tensor *hidden = gm_llama_hidden(ctx, m, gm_llama_embed(ctx, m, ids), gm_positions(ctx, T));
    ag_tensor *flat = ag_reshape(ctx, targets, AG_SHAPE(ag_numel(targets)));
    return ag_cross_entropy(ctx, gm_llama_logits(ctx, m, hidden), flat, GM_IGNORE_TARGET);
}
