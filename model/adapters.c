// adapters.c: see adapters.h.
#include "adapters.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/error.h"
#include "model/init.h"

// A parameter named prefix + suffix, appended to params[*n].
static ag_tensor *new_param(ag_ctx *ctx, ag_tensor **params, int *n, const char *prefix,
                            const char *suffix, ag_dtype dt, ag_shape s) {
    char name[384];
    snprintf(name, sizeof name, "%s%s", prefix ? prefix : "", suffix);
    ag_tensor *p = ag_param(ctx, name, dt, s);
    params[(*n)++] = p;
    return p;
}

// A Q-Former under prefix + (LAVIS: lavis_base + "bert." | HF: hf_base).
static gm_qformer *new_qformer(ag_ctx *ctx, const gm_qformer_config *cfg, const char *prefix,
                               const char *lavis_base, const char *hf_base, ag_dtype dt) {
    char sub[384];
    if (cfg->names == GM_QFORMER_NAMES_LAVIS)
        snprintf(sub, sizeof sub, "%s%sbert.", prefix ? prefix : "", lavis_base);
    else
        snprintf(sub, sizeof sub, "%s%s", prefix ? prefix : "", hf_base);
    return gm_qformer_new(ctx, cfg, sub, dt);
}

// params = own + the Q-Former's, in checkpoint-like order (own first).
static ag_tensor **join_params(ag_tensor *const *own, int n_own, const gm_qformer *q, int *n) {
    ag_tensor **all = ag_xcalloc((size_t)(n_own + q->n_params), sizeof *all, "adapter params");
    memcpy(all, own, (size_t)n_own * sizeof *all);
    memcpy(all + n_own, q->params, (size_t)q->n_params * sizeof *all);
    *n = n_own + q->n_params;
    return all;
}

// dst = src (same dtype and shape), through the host: parameters may live on the GPU.
static void copy_param(ag_tensor *dst, const ag_tensor *src) {
    void *h = ag_xmalloc(ag_nbytes(src), "init");
    ag_copy_to_host(src, h);
    ag_copy_from_host(dst, h);
    free(h);
}

static void check_dim(const char *what, const char *field, int64_t v) {
    if (v < 1) ag_fail("%s config: %s must be >= 1, got %lld", what, field, (long long)v);
}

// Own parameters (drawn at the Q-Former's init_std when it has one, else std) and the
// Q-Former's.
static void init_with_qformer(ag_tensor *const *own, int n_own, gm_qformer *q,
                              const gm_qformer_config *cfg, uint64_t seed, double std) {
    if (cfg->init_std > 0) std = cfg->init_std;
    gm_init_by_kind(own, n_own, seed, std);
    gm_qformer_init(q, seed, std);
}

// The video and audio adapters alike: learned queries over position-tagged encoder rows,
// then a projection to the LLM width. Names of their own parameters and Q-Former.
typedef struct {
    const char *what, *rows_field, *queries, *positions, *proj, *lavis_base, *hf_base;
} query_adapter_names;

typedef struct {
    ag_tensor *own[4]; // query tokens (1, Q, C), positions (rows, Cenc), proj w (L, C), b (L)
    gm_qformer *qformer;
    ag_tensor **params;
    int n_params;
} query_adapter;

static int64_t query_adapter_param_count(const gm_qformer_config *q, int64_t n_queries,
                                         int64_t rows, int64_t llm_dim) {
    return n_queries * q->hidden + rows * q->encoder_width + llm_dim * q->hidden + llm_dim +
           gm_qformer_config_param_count(q);
}

static query_adapter query_adapter_new(ag_ctx *ctx, const gm_qformer_config *q, int64_t n_queries,
                                       int64_t rows, int64_t llm_dim, const query_adapter_names *nm,
                                       const char *prefix, ag_dtype dt) {
    char what[96];
    snprintf(what, sizeof what, "%s qformer", nm->what);
    gm_qformer_check_config(q, what);
    check_dim(nm->what, "n_queries", n_queries);
    check_dim(nm->what, nm->rows_field, rows);
    check_dim(nm->what, "llm_dim", llm_dim);
    query_adapter a = {0};
    int n = 0;
    char name[128];
    new_param(ctx, a.own, &n, prefix, nm->queries, dt, AG_SHAPE(1, n_queries, q->hidden));
    snprintf(name, sizeof name, "%s.weight", nm->positions);
    new_param(ctx, a.own, &n, prefix, name, dt, AG_SHAPE(rows, q->encoder_width));
    snprintf(name, sizeof name, "%s.weight", nm->proj);
    new_param(ctx, a.own, &n, prefix, name, dt, AG_SHAPE(llm_dim, q->hidden));
    snprintf(name, sizeof name, "%s.bias", nm->proj);
    new_param(ctx, a.own, &n, prefix, name, dt, AG_SHAPE(llm_dim));
    a.qformer = new_qformer(ctx, q, prefix, nm->lavis_base, nm->hf_base, dt);
    a.params = join_params(a.own, n, a.qformer, &a.n_params);
    return a;
}

static void free_with_qformer(void *m, gm_qformer *q, ag_tensor **params) {
    gm_qformer_free(q);
    free(params);
    free(m);
}

// Image projector ------------------------------------------------------------------------------

int64_t gm_projector_config_param_count(const gm_projector_config *c) {
    return c->llm_dim * c->vision_dim + c->llm_dim + c->llm_dim * c->llm_dim + c->llm_dim;
}

gm_projector *gm_projector_new(ag_ctx *ctx, const gm_projector_config *cfg, const char *prefix,
                               ag_dtype dt) {
    check_dim("image projector", "vision_dim", cfg->vision_dim);
    check_dim("image projector", "llm_dim", cfg->llm_dim);
    gm_projector *m = ag_xcalloc(1, sizeof *m, "image projector");
    m->cfg = *cfg;
    int64_t Cv = cfg->vision_dim, L = cfg->llm_dim;
    char p[320];
    snprintf(p, sizeof p, "%smm_vision_projector.", prefix ? prefix : "");
    // Sequential(Linear, GELU, Linear): the GELU is module 1 and has no parameters.
    m->w1 = new_param(ctx, m->params, &m->n_params, p, "0.weight", dt, AG_SHAPE(L, Cv));
    m->b1 = new_param(ctx, m->params, &m->n_params, p, "0.bias", dt, AG_SHAPE(L));
    m->w2 = new_param(ctx, m->params, &m->n_params, p, "2.weight", dt, AG_SHAPE(L, L));
    m->b2 = new_param(ctx, m->params, &m->n_params, p, "2.bias", dt, AG_SHAPE(L));
    return m;
}

void gm_projector_free(gm_projector *m) {
    free(m);
}

void gm_projector_init(gm_projector *m, uint64_t seed, double std) {
    gm_init_by_kind(m->params, m->n_params, seed, std);
}

ag_tensor *gm_projector_forward(ag_ctx *ctx, const gm_projector *m, ag_tensor *x) {
    char d[64];
    if (x->ndim < 1 || x->shape[x->ndim - 1] != m->cfg.vision_dim)
        ag_fail("image projector: features must be (..., %lld), got %s",
                (long long)m->cfg.vision_dim, ag_describe(x, d, sizeof d));
    if (!ag_is_contiguous(x)) x = ag_contiguous(ctx, x);
    ag_tensor *h = ag_gelu(ctx, ag_linear(ctx, x, m->w1, m->b1)); // (..., L)
    return ag_linear(ctx, h, m->w2, m->b2);                       // (..., L)
}

// Frame Q-Former ------------------------------------------------------------------------------

gm_frame_qformer_config gm_frame_qformer_default(int64_t vit_width) {
    gm_qformer_config q = gm_qformer_bert_base(vit_width);
    q.names = GM_QFORMER_NAMES_LAVIS;
    return (gm_frame_qformer_config){.qformer = q, .n_queries = 32, .ln_eps = 1e-5};
}

int64_t gm_frame_qformer_config_param_count(const gm_frame_qformer_config *c) {
    return 2 * c->qformer.encoder_width + c->n_queries * c->qformer.hidden +
           gm_qformer_config_param_count(&c->qformer);
}

gm_frame_qformer *gm_frame_qformer_new(ag_ctx *ctx, const gm_frame_qformer_config *cfg,
                                       const char *prefix, ag_dtype dt) {
    gm_qformer_check_config(&cfg->qformer, "frame qformer");
    check_dim("frame qformer", "n_queries", cfg->n_queries);
    if (!(cfg->ln_eps > 0)) ag_fail("frame qformer config: ln_eps must be > 0");
    gm_frame_qformer *m = ag_xcalloc(1, sizeof *m, "frame qformer");
    m->cfg = *cfg;
    int64_t Cvit = cfg->qformer.encoder_width, C = cfg->qformer.hidden;
    ag_tensor *own[3];
    int n = 0;
    m->ln_w = new_param(ctx, own, &n, prefix, "ln_vision.weight", dt, AG_SHAPE(Cvit));
    m->ln_b = new_param(ctx, own, &n, prefix, "ln_vision.bias", dt, AG_SHAPE(Cvit));
    m->query_tokens =
        new_param(ctx, own, &n, prefix, "query_tokens", dt, AG_SHAPE(1, cfg->n_queries, C));
    m->qformer = new_qformer(ctx, &cfg->qformer, prefix, "Qformer.", "qformer.", dt);
    m->params = join_params(own, n, m->qformer, &m->n_params);
    return m;
}

void gm_frame_qformer_free(gm_frame_qformer *m) {
    if (m) free_with_qformer(m, m->qformer, m->params);
}

void gm_frame_qformer_init(gm_frame_qformer *m, uint64_t seed, double std) {
    init_with_qformer(m->params, 3, m->qformer, &m->cfg.qformer, seed, std);
}

ag_tensor *gm_frame_qformer_forward(ag_ctx *ctx, const gm_frame_qformer *m, ag_tensor *vit_hidden) {
    char d[64];
    int64_t Cvit = m->cfg.qformer.encoder_width;
    if (vit_hidden->ndim != 3 || vit_hidden->shape[2] != Cvit)
        ag_fail("frame qformer: ViT hidden states must be (N*F, P, %lld), got %s", (long long)Cvit,
                ag_describe(vit_hidden, d, sizeof d));
    if (!ag_is_contiguous(vit_hidden)) vit_hidden = ag_contiguous(ctx, vit_hidden);
    ag_tensor *h = ag_layernorm(ctx, vit_hidden, m->ln_w, m->ln_b, m->cfg.ln_eps);  // (NF, P, Cvit)
    return gm_qformer_forward(ctx, m->qformer, m->query_tokens, h, NULL, false, 0); // (NF, Q, C)
}

// Video adapter ------------------------------------------------------------------------------

gm_video_adapter_config gm_video_adapter_default(int64_t llm_dim) {
    gm_qformer_config q = gm_qformer_bert_base(768);
    q.n_layers = 2;
    q.cross_attention_frequency = 1;
    q.names = GM_QFORMER_NAMES_LAVIS;
    return (gm_video_adapter_config){
        .qformer = q, .n_queries = 64, .max_frames = 64, .llm_dim = llm_dim};
}

static const query_adapter_names video_names = {.what = "video adapter",
                                                .rows_field = "max_frames",
                                                .queries = "video_query_tokens",
                                                .positions = "video_frame_position_embedding",
                                                .proj = "llama_proj", // the reference's plain name
                                                .lavis_base = "video_Qformer.",
                                                .hf_base = "video_qformer."};

int64_t gm_video_adapter_config_param_count(const gm_video_adapter_config *c) {
    return query_adapter_param_count(&c->qformer, c->n_queries, c->max_frames, c->llm_dim);
}

gm_video_adapter *gm_video_adapter_new(ag_ctx *ctx, const gm_video_adapter_config *cfg,
                                       const char *prefix, ag_dtype dt) {
    query_adapter a = query_adapter_new(ctx, &cfg->qformer, cfg->n_queries, cfg->max_frames,
                                        cfg->llm_dim, &video_names, prefix, dt);
    gm_video_adapter *m = ag_xcalloc(1, sizeof *m, "video adapter");
    m->cfg = *cfg;
    m->query_tokens = a.own[0], m->frame_pos = a.own[1], m->proj_w = a.own[2], m->proj_b = a.own[3];
    m->qformer = a.qformer, m->params = a.params, m->n_params = a.n_params;
    return m;
}

void gm_video_adapter_free(gm_video_adapter *m) {
    if (m) free_with_qformer(m, m->qformer, m->params);
}

void gm_video_adapter_init(gm_video_adapter *m, uint64_t seed, double std) {
    init_with_qformer(m->params, 4, m->qformer, &m->cfg.qformer, seed, std);
    if (!m->cfg.aligned_init) return;
    const int64_t C = m->cfg.qformer.hidden, Q = m->cfg.n_queries, Fm = m->cfg.max_frames;
    if (m->cfg.qformer.encoder_width != C)
        ag_fail("video adapter: aligned init needs the Q-Former's hidden width (%lld) equal to "
                "its encoder width (%lld)",
                (long long)C, (long long)m->cfg.qformer.encoder_width);
    gm_init_normal(m->frame_pos, seed, 0x616c69676e, 1.0); // stream "align"
    // query j = frame position row j·Fm/Q: rows of (1, Q, C) from rows of (Fm, C)
    size_t row = ag_nbytes(m->frame_pos) / (size_t)Fm;
    char *pos = ag_xmalloc(ag_nbytes(m->frame_pos), "init"),
         *q = ag_xmalloc(row * (size_t)Q, "init");
    ag_copy_to_host(m->frame_pos, pos);
    for (int64_t j = 0; j < Q; j++)
        memcpy(q + (size_t)j * row, pos + (size_t)(j * Fm / Q) * row, row);
    ag_copy_from_host(m->query_tokens, q);
    free(pos);
    free(q);
    for (int64_t l = 0; l < m->cfg.qformer.n_layers; l++) {
        const gm_qformer_layer *L = &m->qformer->layers[l];
        if (L->has_cross) copy_param(L->cross.k_w, L->cross.q_w);
    }
}

ag_tensor *gm_video_adapter_forward(ag_ctx *ctx, const gm_video_adapter *m, ag_tensor *frames,
                                    int64_t n_videos, bool train, uint64_t seed) {
    char d[64];
    int64_t Cf = m->cfg.qformer.encoder_width;
    if (frames->ndim != 3 || frames->shape[2] != Cf)
        ag_fail("video adapter: frame features must be (N*F, Qf, %lld), got %s", (long long)Cf,
                ag_describe(frames, d, sizeof d));
    if (n_videos < 1 || frames->shape[0] % n_videos)
        ag_fail("video adapter: %lld frame rows do not split into %lld videos",
                (long long)frames->shape[0], (long long)n_videos);
    int64_t N = n_videos, F = frames->shape[0] / N, Qf = frames->shape[1];
    if (F > m->cfg.max_frames)
        ag_fail("video adapter: %lld frames per video exceed the %lld frame positions",
                (long long)F, (long long)m->cfg.max_frames);
    if (!ag_is_contiguous(frames)) frames = ag_contiguous(ctx, frames);
    // Frame f's position row is added to each of its Qf query outputs.
    ag_tensor *x = ag_reshape(ctx, frames, AG_SHAPE(N, F, Qf, Cf));
    ag_tensor *pos = ag_reshape(ctx, ag_slice(ctx, m->frame_pos, 0, 0, F), AG_SHAPE(F, 1, Cf));
    x = ag_reshape(ctx, ag_add(ctx, x, pos), AG_SHAPE(N, F * Qf, Cf));
    ag_tensor *y = gm_qformer_forward(ctx, m->qformer, m->query_tokens, x, NULL, train, seed);
    return ag_linear(ctx, y, m->proj_w, m->proj_b); // (N, Q, L)
}

// Audio adapter ------------------------------------------------------------------------------

gm_audio_adapter_config gm_audio_adapter_default(int64_t llm_dim) {
    gm_qformer_config q = gm_qformer_bert_base(1024);
    q.n_layers = 2;
    q.cross_attention_frequency = 1;
    q.names = GM_QFORMER_NAMES_LAVIS;
    return (gm_audio_adapter_config){
        .qformer = q, .n_queries = 8, .max_clips = 8, .llm_dim = llm_dim};
}

static const query_adapter_names audio_names = {.what = "audio adapter",
                                                .rows_field = "max_clips",
                                                .queries = "audio_query_tokens",
                                                .positions = "audio_position_embedding",
                                                .proj = "audio_llama_proj",
                                                .lavis_base = "audio_Qformer.",
                                                .hf_base = "audio_qformer."};

int64_t gm_audio_adapter_config_param_count(const gm_audio_adapter_config *c) {
    return query_adapter_param_count(&c->qformer, c->n_queries, c->max_clips, c->llm_dim);
}

gm_audio_adapter *gm_audio_adapter_new(ag_ctx *ctx, const gm_audio_adapter_config *cfg,
                                       const char *prefix, ag_dtype dt) {
    query_adapter a = query_adapter_new(ctx, &cfg->qformer, cfg->n_queries, cfg->max_clips,
                                        cfg->llm_dim, &audio_names, prefix, dt);
    gm_audio_adapter *m = ag_xcalloc(1, sizeof *m, "audio adapter");
    m->cfg = *cfg;
    m->query_tokens = a.own[0], m->clip_pos = a.own[1], m->proj_w = a.own[2], m->proj_b = a.own[3];
    m->qformer = a.qformer, m->params = a.params, m->n_params = a.n_params;
    return m;
}

void gm_audio_adapter_free(gm_audio_adapter *m) {
    if (m) free_with_qformer(m, m->qformer, m->params);
}

void gm_audio_adapter_init(gm_audio_adapter *m, uint64_t seed, double std) {
    init_with_qformer(m->params, 4, m->qformer, &m->cfg.qformer, seed, std);
}

ag_tensor *gm_audio_adapter_forward(ag_ctx *ctx, const gm_audio_adapter *m, ag_tensor *clips,
                                    bool train, uint64_t seed) {
    char d[64];
    int64_t Ca = m->cfg.qformer.encoder_width;
    if (clips->ndim != 3 || clips->shape[2] != Ca)
        ag_fail("audio adapter: clip embeddings must be (N, K, %lld), got %s", (long long)Ca,
                ag_describe(clips, d, sizeof d));
    int64_t K = clips->shape[1];
    if (K > m->cfg.max_clips)
        ag_fail("audio adapter: %lld clips exceed the %lld clip positions", (long long)K,
                (long long)m->cfg.max_clips);
    if (!ag_is_contiguous(clips)) clips = ag_contiguous(ctx, clips);
    ag_tensor *pos = ag_slice(ctx, m->clip_pos, 0, 0, K); // (K, Ca), broadcast over N
    ag_tensor *x = ag_add(ctx, clips, pos);               // (N, K, Ca)
    ag_tensor *y = gm_qformer_forward(ctx, m->qformer, m->query_tokens, x, NULL, train, seed);
    return ag_linear(ctx, y, m->proj_w, m->proj_b); // (N, Q, L)
}
