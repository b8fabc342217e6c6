// groundinggpt.c: see groundinggpt.h.
#include "groundinggpt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/error.h"
#include "model/init.h"

// Config ---------------------------------------------------------------------------------------

gm_groundinggpt_config gm_groundinggpt_reference_config(void) {
    gm_groundinggpt_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "groundinggpt-7b");
    c.dtype = AG_BF16;
    c.llm = (gm_llama_config){.vocab = 32000,
                              .dim = 4096,
                              .n_layers = 32,
                              .n_heads = 32,
                              .n_kv_heads = 32,
                              .ffn = 11008,
                              .max_seq = 4096,
                              .rope_theta = 1e4,
                              .norm_eps = 1e-5};
    c.tokens = gm_splice_tokens_default();
    for (int m = 0; m < GM_NMOD; m++) c.has[m] = true;
    c.image_size = 336;
    c.image_vit = gm_vit_clip_l14_336_config();
    c.image_tokens = gm_vit_out_tokens(&c.image_vit); // 576
    c.projector = (gm_projector_config){.vision_dim = 1024, .llm_dim = 4096};
    c.video_frames = 64;
    c.video_size = 224;
    c.video_tokens = 64;
    c.video_vit = gm_vit_eva_g14_config();
    c.frame_qformer = gm_frame_qformer_default(1408);
    c.video_adapter = gm_video_adapter_default(4096);
    c.audio_clips = 3;
    c.audio_frames = 204;
    c.audio_mels = 128;
    c.audio_tokens = 8;
    c.audio_vit = gm_vit_imagebind_audio_config();
    c.audio_adapter = gm_audio_adapter_default(4096);
    return c;
}

int64_t gm_groundinggpt_vocab(const gm_groundinggpt_config *c) {
    return c->llm.vocab + GM_N_ADDED;
}

#define NEED(cond, ...)                                                                            \
    do {                                                                                           \
        if (!(cond)) ag_fail("groundinggpt config: " __VA_ARGS__);                                 \
    } while (0)

static void check_tokens(const gm_groundinggpt_config *c) {
    const int32_t *ids[3] = {c->tokens.patch, c->tokens.start, c->tokens.end};
    bool seen[GM_N_ADDED] = {false};
    for (int k = 0; k < 3; k++)
        for (int m = 0; m < GM_NMOD; m++) {
            int64_t row = (int64_t)ids[k][m] - c->llm.vocab;
            NEED(row >= 0 && row < GM_N_ADDED,
                 "added token id %d (%s) outside the added rows %lld..%lld", (int)ids[k][m],
                 gm_modality_name((gm_modality)m), (long long)c->llm.vocab,
                 (long long)c->llm.vocab + GM_N_ADDED - 1);
            NEED(!seen[row], "added token id %d is used twice", (int)ids[k][m]);
            seen[row] = true;
        }
}

void gm_groundinggpt_check_config(const gm_groundinggpt_config *c) {
    NEED(c->dtype == AG_F32 || c->dtype == AG_BF16, "dtype must be f32 or bf16, got %s",
         ag_dtype_name(c->dtype));
    gm_llama_check_config(&c->llm);
    check_tokens(c);
    const int64_t L = c->llm.dim;
    if (c->has[GM_MOD_IMAGE]) {
        const gm_vit_config *v = &c->image_vit;
        gm_vit_check_config(v);
        NEED(v->family == GM_VIT_CLIP && v->channels == 3, "the image encoder must be a CLIP ViT");
        NEED(v->image_h == c->image_size && v->image_w == c->image_size,
             "image encoder input %lldx%lld differs from image size %lld", (long long)v->image_h,
             (long long)v->image_w, (long long)c->image_size);
        NEED(gm_vit_out_tokens(v) == c->image_tokens,
             "image tokens %lld, but the encoder makes %lld", (long long)c->image_tokens,
             (long long)gm_vit_out_tokens(v));
        NEED(c->projector.vision_dim == v->width && c->projector.llm_dim == L,
             "projector %lld -> %lld does not map the encoder width %lld to the LLM width %lld",
             (long long)c->projector.vision_dim, (long long)c->projector.llm_dim,
             (long long)v->width, (long long)L);
    }
    if (c->has[GM_MOD_VIDEO]) {
        const gm_vit_config *v = &c->video_vit;
        gm_vit_check_config(v);
        NEED(v->channels == 3 && !gm_vit_has_head(v), "the video encoder must be an image ViT "
                                                      "without a pooled head");
        NEED(c->video_frames >= 1, "video frames must be >= 1");
        NEED(v->image_h == c->video_size && v->image_w == c->video_size,
             "video encoder input %lldx%lld differs from video size %lld", (long long)v->image_h,
             (long long)v->image_w, (long long)c->video_size);
        gm_qformer_check_config(&c->frame_qformer.qformer, "frame qformer");
        NEED(c->frame_qformer.qformer.encoder_width == v->width,
             "frame qformer encoder width %lld differs from the video encoder width %lld",
             (long long)c->frame_qformer.qformer.encoder_width, (long long)v->width);
        const gm_video_adapter_config *a = &c->video_adapter;
        gm_qformer_check_config(&a->qformer, "video qformer");
        NEED(a->qformer.encoder_width == c->frame_qformer.qformer.hidden,
             "video qformer encoder width %lld differs from the frame qformer width %lld",
             (long long)a->qformer.encoder_width, (long long)c->frame_qformer.qformer.hidden);
        NEED(a->n_queries == c->video_tokens,
             "video tokens %lld, but the video qformer has %lld "
             "queries",
             (long long)c->video_tokens, (long long)a->n_queries);
        NEED(a->max_frames >= c->video_frames, "video frames %lld exceed the %lld frame positions",
             (long long)c->video_frames, (long long)a->max_frames);
        NEED(a->llm_dim == L, "video projection width %lld differs from the LLM width %lld",
             (long long)a->llm_dim, (long long)L);
    }
    if (c->has[GM_MOD_AUDIO]) {
        const gm_vit_config *v = &c->audio_vit;
        gm_vit_check_config(v);
        NEED(v->channels == 1 && gm_vit_has_head(v),
             "the audio encoder must be a one-channel ViT with a pooled head");
        NEED(v->image_h == c->audio_mels && v->image_w == c->audio_frames,
             "audio encoder input %lldx%lld is not mels x frames %lldx%lld", (long long)v->image_h,
             (long long)v->image_w, (long long)c->audio_mels, (long long)c->audio_frames);
        NEED(c->audio_clips >= 1, "audio clips must be >= 1");
        const gm_audio_adapter_config *a = &c->audio_adapter;
        gm_qformer_check_config(&a->qformer, "audio qformer");
        int64_t ca = v->head_dim > 0 ? v->head_dim : v->width;
        NEED(a->qformer.encoder_width == ca,
             "audio qformer encoder width %lld differs from the audio embedding width %lld",
             (long long)a->qformer.encoder_width, (long long)ca);
        NEED(a->n_queries == c->audio_tokens,
             "audio tokens %lld, but the audio qformer has %lld "
             "queries",
             (long long)c->audio_tokens, (long long)a->n_queries);
        NEED(a->max_clips >= c->audio_clips, "audio clips %lld exceed the %lld clip positions",
             (long long)c->audio_clips, (long long)a->max_clips);
        NEED(a->llm_dim == L, "audio projection width %lld differs from the LLM width %lld",
             (long long)a->llm_dim, (long long)L);
    }
}
#undef NEED

// Census ---------------------------------------------------------------------------------------

static const char *const part_names[GM_NPART] = {"llm",           "image_encoder", "projector",
                                                 "video_encoder", "frame_qformer", "video_adapter",
                                                 "audio_encoder", "audio_adapter"};

const char *gm_part_name(gm_part p) {
    return (unsigned)p < GM_NPART ? part_names[p] : "?";
}

// Elements gm_vit_new allocates for cfg (the blocks in use only).
static int64_t vit_count(const gm_vit_config *c) {
    const int64_t C = c->width, F = c->mlp, N = gm_vit_patches(c), P = c->patch;
    int64_t n = C + C * P * P * c->channels + (1 + N) * C; // cls, patch conv, positions
    if (c->patch_bias) n += C;
    if (c->patch_norm) n += 2 * C;
    if (c->pre_norm) n += 2 * C;
    int64_t layer = 2 * C + 3 * C * C + C * C + C + 2 * C + F * C + F + C * F + C;
    layer += (c->q_bias ? C : 0) + (c->k_bias ? C : 0) + (c->v_bias ? C : 0);
    if (c->bias_kv) layer += 2 * C;
    n += gm_vit_layers_used(c) * layer;
    if (c->head_norm) n += 2 * C;
    if (c->head_dim > 0) n += c->head_dim * C;
    return n;
}

typedef struct {
    gm_census_row *rows;
    int n, max;
} census;

// trains: the stages (bit s for stage s + 1) that train this group entirely.
static void row(census *cs, const char *group, gm_part part, int64_t total, unsigned trains,
                int64_t stage1_partial) {
    if (cs->n < cs->max) {
        gm_census_row *r = &cs->rows[cs->n];
        memset(r, 0, sizeof *r);
        snprintf(r->group, sizeof r->group, "%s", group);
        r->part = part;
        r->total = total;
        for (int s = 0; s < 3; s++) r->stage[s] = (trains >> s) & 1 ? total : 0;
        if (!(trains & 1)) r->stage[0] = stage1_partial;
    }
    cs->n++;
}

int gm_groundinggpt_census(const gm_groundinggpt_config *c, gm_census_row *rows, int max) {
    census cs = {rows, 0, max};
    const gm_llama_config *l = &c->llm;
    const int64_t C = l->dim, V0 = l->vocab, D = C / l->n_heads, Ckv = l->n_kv_heads * D;
    const unsigned all = 7, later = 6; // stages 1-3, stages 2-3
    const int64_t added = GM_N_ADDED * C;
    row(&cs, "model.embed_tokens", GM_PART_LLM, V0 * C + added, later, added);
    row(&cs, "model.layers", GM_PART_LLM,
        l->n_layers * (2 * C + 2 * C * C + 2 * Ckv * C + 3 * l->ffn * C), later, 0);
    row(&cs, "model.norm", GM_PART_LLM, C, later, 0);
    row(&cs, "lm_head", GM_PART_LLM, V0 * C + added, later, 0); // frozen in stage 1
    if (c->has[GM_MOD_IMAGE]) {
        row(&cs, "model.vision_tower", GM_PART_IMAGE_ENCODER, vit_count(&c->image_vit), 0, 0);
        row(&cs, "model.mm_vision_projector", GM_PART_PROJECTOR,
            gm_projector_config_param_count(&c->projector), all, 0);
    }
    if (c->has[GM_MOD_VIDEO]) {
        const gm_frame_qformer_config *f = &c->frame_qformer;
        const gm_video_adapter_config *a = &c->video_adapter;
        row(&cs, "model.visual_encoder", GM_PART_VIDEO_ENCODER, vit_count(&c->video_vit), 0, 0);
        row(&cs, "model.ln_vision", GM_PART_FRAME_QFORMER, 2 * f->qformer.encoder_width, 0, 0);
        row(&cs, "model.query_tokens", GM_PART_FRAME_QFORMER, f->n_queries * f->qformer.hidden, 0,
            0);
        row(&cs, "model.Qformer", GM_PART_FRAME_QFORMER, gm_qformer_config_param_count(&f->qformer),
            0, 0);
        row(&cs, "model.video_query_tokens", GM_PART_VIDEO_ADAPTER,
            a->n_queries * a->qformer.hidden, all, 0);
        row(&cs, "model.video_frame_position_embedding", GM_PART_VIDEO_ADAPTER,
            a->max_frames * a->qformer.encoder_width, all, 0);
        row(&cs, "model.llama_proj", GM_PART_VIDEO_ADAPTER,
            a->llm_dim * a->qformer.hidden + a->llm_dim, all, 0);
        row(&cs, "model.video_Qformer", GM_PART_VIDEO_ADAPTER,
            gm_qformer_config_param_count(&a->qformer), all, 0);
    }
    if (c->has[GM_MOD_AUDIO]) {
        const gm_audio_adapter_config *a = &c->audio_adapter;
        row(&cs, "model.audio_encoder", GM_PART_AUDIO_ENCODER, vit_count(&c->audio_vit), 0, 0);
        row(&cs, "model.audio_query_tokens", GM_PART_AUDIO_ADAPTER,
            a->n_queries * a->qformer.hidden, all, 0);
        row(&cs, "model.audio_position_embedding", GM_PART_AUDIO_ADAPTER,
            a->max_clips * a->qformer.encoder_width, all, 0);
        row(&cs, "model.audio_llama_proj", GM_PART_AUDIO_ADAPTER,
            a->llm_dim * a->qformer.hidden + a->llm_dim, all, 0);
        row(&cs, "model.audio_Qformer", GM_PART_AUDIO_ADAPTER,
            gm_qformer_config_param_count(&a->qformer), all, 0);
    }
    return cs.n;
}

// Step bytes of a ViT pass without a tape over `rows` inputs (see the header).
static int64_t vit_bytes(const gm_vit_config *c, int64_t rows, int64_t e) {
    const int64_t C = c->width, F = c->mlp, H = c->n_heads, N = gm_vit_patches(c), T = 1 + N;
    int64_t input = 4 * c->image_h * c->image_w * c->channels * e; // pixels / transposed fbank
    int64_t embed = (N * c->patch * c->patch * c->channels + N * C + 5 * T * C) * e;
    int64_t layers =
        c->head_dim > 0 || c->head_norm || c->head_scale > 0 ? c->n_layers : gm_vit_out_index(c);
    int64_t per_layer = T * ((9 * C + 2 * F) * e + 16) + H * T * 4; // attention keeps lse (H, T)
    int64_t out = T * C * e;
    return rows * (input + embed + layers * per_layer + out);
}

// Step bytes of a Q-Former pass without a tape: queries Q over encoder states of T rows.
static int64_t qformer_bytes(const gm_qformer_config *q, int64_t Q, int64_t T, int64_t e) {
    const int64_t C = q->hidden, I = q->intermediate, H = q->n_heads;
    int64_t n = 2 * Q * C * e;
    for (int64_t l = 0; l < q->n_layers; l++) {
        // Each attention keeps only its log-sum-exp: H f32 per query.
        n += Q * (8 * C + 2 * I) * e + Q * H * 4; // self-attention block and FFN
        if (l % q->cross_attention_frequency == 0)
            n += (Q * 5 * C + T * 2 * C) * e + Q * H * 4; // cross-attention
    }
    return n;
}

int64_t gm_groundinggpt_encoder_bytes(const gm_groundinggpt_config *c, gm_modality m,
                                      int64_t rows) {
    const int64_t e = (int64_t)ag_dtype_size(c->dtype);
    switch (m) {
    case GM_MOD_IMAGE:
        return c->has[m] ? vit_bytes(&c->image_vit, rows, e) : 0;
    case GM_MOD_VIDEO: {
        if (!c->has[m]) return 0;
        const gm_vit_config *v = &c->video_vit;
        const int64_t T = 1 + gm_vit_patches(v);
        int64_t fq = T * v->width * e + // ln_vision
                     qformer_bytes(&c->frame_qformer.qformer, c->frame_qformer.n_queries, T, e);
        return vit_bytes(v, rows, e) + rows * fq;
    }
    case GM_MOD_AUDIO:
        return c->has[m] ? vit_bytes(&c->audio_vit, rows, e) : 0;
    default:
        return 0;
    }
}

// Stage selection ------------------------------------------------------------------------------

// Stage 1 trains the input rows of the 9 added tokens only: the reference (LLaVA's
// initialize_vision_tokenizer under tune_mm_mlp_adapter) freezes the output embedding; stage 2's
// lm_head.* takes its added rows too.
static const char *const pat_added[] = {"model.embed_tokens.added_rows"};
static const char *const pat_image[] = {"model.mm_vision_projector.*"};
static const char *const pat_video[] = {"model.video_query_tokens",
                                        "model.video_frame_position_embedding.*",
                                        "model.video_Qformer.*", "model.llama_proj.*"};
static const char *const pat_audio[] = {"model.audio_query_tokens",
                                        "model.audio_position_embedding.*", "model.audio_Qformer.*",
                                        "model.audio_llama_proj.*"};
static const char *const pat_llm[] = {"model.embed_tokens.*", "model.layers.*", "model.norm.*",
                                      "lm_head.*"};

static void add_patterns(const char **out, int *n, int max, const char *const *p, int k) {
    for (int i = 0; i < k; i++) {
        if (*n >= max) ag_fail("groundinggpt: stage pattern buffer of %d is too small", max);
        out[(*n)++] = p[i];
    }
}

int gm_groundinggpt_stage_patterns(const gm_groundinggpt_config *c, int stage, const char **out,
                                   int max) {
    if (stage < 1 || stage > 3) ag_fail("groundinggpt: stage %d is not 1, 2 or 3", stage);
    int n = 0;
#define ADD(p) add_patterns(out, &n, max, p, (int)(sizeof p / sizeof *p))
    ADD(pat_added);
    if (c->has[GM_MOD_IMAGE]) ADD(pat_image);
    if (c->has[GM_MOD_VIDEO]) ADD(pat_video);
    if (c->has[GM_MOD_AUDIO]) ADD(pat_audio);
    if (stage >= 2) ADD(pat_llm);
#undef ADD
    return n;
}

int gm_groundinggpt_set_stage(ag_ctx *ctx, gm_groundinggpt *m, int stage) {
    const char *pats[32];
    int n = gm_groundinggpt_stage_patterns(&m->cfg, stage, pats, 32);
    gm_param_selection sel = {.trainable = pats, .n_trainable = n};
    return gm_params_apply(ctx, m->params, &sel);
}

// Construction ---------------------------------------------------------------------------------

gm_groundinggpt *gm_groundinggpt_new(ag_ctx *ctx, const gm_groundinggpt_config *cfg) {
    gm_groundinggpt_check_config(cfg);
    gm_groundinggpt *m = ag_xcalloc(1, sizeof *m, "groundinggpt");
    m->cfg = *cfg;
    m->enc_batch = GM_ENC_BATCH_DEFAULT;
    const ag_dtype dt = cfg->dtype;
    m->params = gm_params_new();
    m->llm = gm_llama_new(ctx, &cfg->llm, dt);
    gm_params_add_many(m->params, m->llm->params, m->llm->n_params);
    gm_params_add_many(m->params, m->llm->lora_params, m->llm->n_lora); // none without LoRA
    m->embed_added =
        ag_param(ctx, "model.embed_tokens.added_rows", dt, AG_SHAPE(GM_N_ADDED, cfg->llm.dim));
    m->lm_head_added = ag_param(ctx, "lm_head.added_rows", dt, AG_SHAPE(GM_N_ADDED, cfg->llm.dim));
    gm_params_add(m->params, m->embed_added);
    gm_params_add(m->params, m->lm_head_added);
    bool any = cfg->has[GM_MOD_IMAGE] || cfg->has[GM_MOD_VIDEO] || cfg->has[GM_MOD_AUDIO];
    if (any) m->enc_ctx = ag_ctx_new_sibling(ctx);
    if (cfg->has[GM_MOD_IMAGE]) {
        m->image_vit = gm_vit_new(m->enc_ctx, &cfg->image_vit, "model.vision_tower.", dt);
        gm_params_add_many(m->params, m->image_vit->params, m->image_vit->n_params);
        m->projector = gm_projector_new(ctx, &cfg->projector, "model.", dt);
        gm_params_add_many(m->params, m->projector->params, m->projector->n_params);
    }
    if (cfg->has[GM_MOD_VIDEO]) {
        m->video_vit = gm_vit_new(m->enc_ctx, &cfg->video_vit, "model.visual_encoder.", dt);
        gm_params_add_many(m->params, m->video_vit->params, m->video_vit->n_params);
        m->frame_qformer = gm_frame_qformer_new(m->enc_ctx, &cfg->frame_qformer, "model.", dt);
        gm_params_add_many(m->params, m->frame_qformer->params, m->frame_qformer->n_params);
        m->video_adapter = gm_video_adapter_new(ctx, &cfg->video_adapter, "model.", dt);
        gm_params_add_many(m->params, m->video_adapter->params, m->video_adapter->n_params);
    }
    if (cfg->has[GM_MOD_AUDIO]) {
        m->audio_vit = gm_vit_new(m->enc_ctx, &cfg->audio_vit, "model.audio_encoder.", dt);
        gm_params_add_many(m->params, m->audio_vit->params, m->audio_vit->n_params);
        m->audio_adapter = gm_audio_adapter_new(ctx, &cfg->audio_adapter, "model.", dt);
        gm_params_add_many(m->params, m->audio_adapter->params, m->audio_adapter->n_params);
    }
    return m;
}

void gm_groundinggpt_free(gm_groundinggpt *m) {
    if (!m) return;
    gm_llama_free(m->llm);
    gm_vit_free(m->image_vit);
    gm_projector_free(m->projector);
    gm_vit_free(m->video_vit);
    gm_frame_qformer_free(m->frame_qformer);
    gm_video_adapter_free(m->video_adapter);
    gm_vit_free(m->audio_vit);
    gm_audio_adapter_free(m->audio_adapter);
    gm_params_free(m->params);
    if (m->enc_ctx) ag_ctx_free(m->enc_ctx);
    free(m);
}

void gm_groundinggpt_init(gm_groundinggpt *m, uint64_t seed, double std) {
    gm_llama_init(m->llm, seed, std);
    gm_init_normal_named(m->embed_added, seed, std);
    gm_init_normal_named(m->lm_head_added, seed, std);
    if (m->image_vit) gm_vit_init(m->image_vit, seed, std);
    if (m->projector) gm_projector_init(m->projector, seed, std);
    if (m->video_vit) gm_vit_init(m->video_vit, seed, std);
    if (m->frame_qformer) gm_frame_qformer_init(m->frame_qformer, seed, std);
    if (m->video_adapter) gm_video_adapter_init(m->video_adapter, seed, std);
    if (m->audio_vit) gm_vit_init(m->audio_vit, seed, std);
    if (m->audio_adapter) gm_audio_adapter_init(m->audio_adapter, seed, std);
}

// Encoders -------------------------------------------------------------------------------------

static bool all_frozen(ag_tensor *const *ps, int n) {
    for (int i = 0; i < n; i++)
        if (ps[i]->requires_grad) return false;
    return true;
}

// One stage of an encoder: input rows (k, ...) -> features (k, ...), in ctx.
typedef ag_tensor *(*enc_stage)(ag_ctx *ctx, const gm_groundinggpt *m, ag_tensor *rows);

// Runs f over the rows of x (dim 0) in m->enc_ctx, m->enc_batch rows at a time, without a
// tape, resetting that context after each chunk; the output rows are gathered on the host
// and returned as one step tensor of ctx. f's parameters must all be frozen.
static ag_tensor *run_frozen(ag_ctx *ctx, const gm_groundinggpt *m, ag_tensor *x, enc_stage f) {
    const int64_t n = x->shape[0], chunk = m->enc_batch > 0 ? m->enc_batch : n;
    char *host = NULL;
    size_t row_bytes = 0;
    ag_shape shape = {0};
    ag_dtype dt = AG_F32;
    for (int64_t a = 0; a < n; a += chunk) {
        int64_t b = a + chunk < n ? a + chunk : n;
        ag_no_grad_begin(m->enc_ctx);
        ag_tensor *y = f(m->enc_ctx, m, ag_slice(m->enc_ctx, x, 0, a, b));
        if (!ag_is_contiguous(y)) y = ag_contiguous(m->enc_ctx, y);
        ag_no_grad_end(m->enc_ctx);
        if (!host) {
            shape = ag_shape_of(y);
            shape.d[0] = n;
            dt = y->dtype;
            row_bytes = ag_nbytes(y) / (size_t)(b - a);
            host = ag_step_alloc(ctx, row_bytes * (size_t)n);
        }
        ag_copy_to_host(y, host + (size_t)a * row_bytes);
        ag_step_reset(m->enc_ctx);
    }
    return ag_from_host(ctx, dt, shape, host);
}

// f on x: chunked in the encoder context when frozen, else in ctx with the tape.
static ag_tensor *run_stage(ag_ctx *ctx, const gm_groundinggpt *m, ag_tensor *x, enc_stage f,
                            bool frozen) {
    return frozen ? run_frozen(ctx, m, x, f) : f(ctx, m, x);
}

static ag_tensor *image_vit_stage(ag_ctx *ctx, const gm_groundinggpt *m, ag_tensor *rows) {
    ag_tensor *px = gm_vit_clip_pixels(ctx, rows, m->cfg.dtype); // (k, S, S, 3)
    return gm_vit_hidden(ctx, m->image_vit, px);                 // (k, P, Cv)
}

static ag_tensor *video_vit_stage(ag_ctx *ctx, const gm_groundinggpt *m, ag_tensor *rows) {
    ag_tensor *px = gm_vit_clip_pixels(ctx, rows, m->cfg.dtype); // (k, S, S, 3)
    return gm_vit_hidden(ctx, m->video_vit, px);                 // (k, 1+N, Ce)
}

static ag_tensor *video_frozen_stage(ag_ctx *ctx, const gm_groundinggpt *m, ag_tensor *rows) {
    return gm_frame_qformer_forward(ctx, m->frame_qformer,
                                    video_vit_stage(ctx, m, rows)); // (k, Qf, Cf)
}

// rows (k, frames, mels) fbank clips -> (k, Ca) audio embeddings.
static ag_tensor *audio_vit_stage(ag_ctx *ctx, const gm_groundinggpt *m, ag_tensor *rows) {
    const int64_t k = rows->shape[0], Tf = rows->shape[1], M = rows->shape[2];
    ag_tensor *x = ag_contiguous(ctx, ag_transpose(ctx, rows, 1, 2)); // (k, mels, frames)
    x = ag_reshape(ctx, x, AG_SHAPE(k, M, Tf, 1));
    if (x->dtype != m->cfg.dtype) x = ag_cast(ctx, x, m->cfg.dtype);
    return gm_vit_pooled(ctx, m->audio_vit, x); // (k, Ca)
}

typedef struct {
    gm_groundinggpt *m;
    const gm_groundinggpt_batch *b;
    bool train;
    uint64_t seed;
} encode_args;

// feats (n, P, L) of media rows -> the rows of the samples that use them, in sample order:
// (k, P, L). Identity when the samples use rows 0..n-1 in order.
static ag_tensor *per_sample(ag_ctx *ctx, ag_tensor *feats, const int32_t *of, int64_t B) {
    const int64_t n = feats->shape[0], P = feats->shape[1], L = feats->shape[2];
    int32_t *idx = ag_step_alloc(ctx, sizeof(int32_t) * (size_t)B);
    int64_t k = 0;
    bool identity = true;
    for (int64_t s = 0; s < B; s++)
        if (of[s] >= 0) {
            identity &= of[s] == k;
            idx[k++] = of[s];
        }
    if (identity && k == n) return feats;
    ag_tensor *flat = ag_reshape(ctx, feats, AG_SHAPE(n, P * L));
    ag_tensor *sel = ag_index_select_rows(ctx, flat, ag_from_host(ctx, AG_I32, AG_SHAPE(k), idx));
    return ag_reshape(ctx, sel, AG_SHAPE(k, P, L));
}

static ag_tensor *encode_image(ag_ctx *ctx, encode_args *a) {
    gm_groundinggpt *m = a->m;
    bool frozen = all_frozen(m->image_vit->params, m->image_vit->n_params);
    ag_tensor *h = run_stage(ctx, m, a->b->media[GM_MOD_IMAGE], image_vit_stage, frozen);
    ag_tensor *f = gm_projector_forward(ctx, m->projector, h); // (n, P, L)
    return per_sample(ctx, f, a->b->media_of[GM_MOD_IMAGE], a->b->B);
}

static ag_tensor *encode_video(ag_ctx *ctx, encode_args *a) {
    gm_groundinggpt *m = a->m;
    ag_tensor *frames = a->b->media[GM_MOD_VIDEO]; // (n·F, S, S, 3)
    const int64_t n = frames->shape[0] / m->cfg.video_frames;
    bool vit_frozen = all_frozen(m->video_vit->params, m->video_vit->n_params);
    bool fq_frozen = all_frozen(m->frame_qformer->params, m->frame_qformer->n_params);
    ag_tensor *q; // (n·F, Qf, Cf)
    if (vit_frozen && fq_frozen) {
        q = run_frozen(ctx, m, frames, video_frozen_stage);
    } else {
        ag_tensor *h = run_stage(ctx, m, frames, video_vit_stage, vit_frozen);
        q = gm_frame_qformer_forward(ctx, m->frame_qformer, h);
    }
    // The adapter's dropout stream: 0x766964656f is "video" in ASCII, apart from audio's.
    ag_tensor *f = gm_video_adapter_forward(ctx, m->video_adapter, q, n, a->train,
                                            a->seed ^ 0x766964656full); // (n, Qv, L)
    return per_sample(ctx, f, a->b->media_of[GM_MOD_VIDEO], a->b->B);
}

static ag_tensor *encode_audio(ag_ctx *ctx, encode_args *a) {
    gm_groundinggpt *m = a->m;
    ag_tensor *x = a->b->media[GM_MOD_AUDIO]; // (n, K, frames, mels)
    const int64_t n = x->shape[0], K = x->shape[1];
    if (!ag_is_contiguous(x)) x = ag_contiguous(ctx, x);
    ag_tensor *clips = ag_reshape(ctx, x, AG_SHAPE(n * K, x->shape[2], x->shape[3]));
    bool frozen = all_frozen(m->audio_vit->params, m->audio_vit->n_params);
    ag_tensor *e = run_stage(ctx, m, clips, audio_vit_stage, frozen); // (n·K, Ca)
    e = ag_reshape(ctx, e, AG_SHAPE(n, K, e->shape[1]));
    // The adapter's dropout stream: 0x617564696f is "audio" in ASCII, apart from video's.
    ag_tensor *f = gm_audio_adapter_forward(ctx, m->audio_adapter, e, a->train,
                                            a->seed ^ 0x617564696full); // (n, Qa, L)
    return per_sample(ctx, f, a->b->media_of[GM_MOD_AUDIO], a->b->B);
}

// Forward --------------------------------------------------------------------------------------

// Checks shapes, ids and media indices of a batch (one line per defect).
static void check_batch(const gm_groundinggpt *m, const gm_groundinggpt_batch *b) {
    const gm_groundinggpt_config *c = &m->cfg;
    char d[96];
    if (b->B < 1 || b->T < 1 || !b->ids)
        ag_fail("groundinggpt: batch needs B, T >= 1 and ids (got B %lld, T %lld)", (long long)b->B,
                (long long)b->T);
    if (b->T > c->llm.max_seq)
        ag_fail("groundinggpt: sequence of %lld tokens exceeds max_seq %lld", (long long)b->T,
                (long long)c->llm.max_seq);
    const int64_t V = gm_groundinggpt_vocab(c);
    for (int64_t i = 0; i < b->B * b->T; i++)
        if (b->ids[i] < 0 || b->ids[i] >= V)
            ag_fail("groundinggpt: sample %lld position %lld: token id %d outside the vocabulary "
                    "of %lld",
                    (long long)(i / b->T), (long long)(i % b->T), (int)b->ids[i], (long long)V);
    for (int mo = 0; mo < GM_NMOD; mo++) {
        const char *name = gm_modality_name((gm_modality)mo);
        const int32_t *of = b->media_of[mo];
        ag_tensor *x = b->media[mo];
        bool used = false;
        for (int64_t s = 0; of && s < b->B; s++) used |= of[s] >= 0;
        if (!used) continue;
        if (!c->has[mo])
            ag_fail("groundinggpt: the batch has %s samples but the model has no %s branch", name,
                    name);
        if (!x) ag_fail("groundinggpt: samples use %s rows but no %s tensor is given", name, name);
        int64_t n = x->shape[0];
        bool ok = x->ndim == 4;
        if (mo == GM_MOD_IMAGE)
            ok = ok && x->dtype == AG_U8 && x->shape[1] == c->image_size &&
                 x->shape[2] == c->image_size && x->shape[3] == 3;
        else if (mo == GM_MOD_VIDEO) {
            ok = ok && x->dtype == AG_U8 && x->shape[0] % c->video_frames == 0 &&
                 x->shape[1] == c->video_size && x->shape[2] == c->video_size && x->shape[3] == 3;
            n = x->shape[0] / c->video_frames;
        } else
            ok = ok && ag_dtype_is_float(x->dtype) && x->shape[1] == c->audio_clips &&
                 x->shape[2] == c->audio_frames && x->shape[3] == c->audio_mels;
        if (!ok) {
            if (mo == GM_MOD_IMAGE)
                ag_fail("groundinggpt: images %s are not u8 (n, %lld, %lld, 3)",
                        ag_describe(x, d, sizeof d), (long long)c->image_size,
                        (long long)c->image_size);
            if (mo == GM_MOD_VIDEO)
                ag_fail("groundinggpt: videos %s are not u8 (n x %lld frames, %lld, %lld, 3)",
                        ag_describe(x, d, sizeof d), (long long)c->video_frames,
                        (long long)c->video_size, (long long)c->video_size);
            ag_fail("groundinggpt: audios %s are not float (n, %lld clips, %lld frames, %lld mels)",
                    ag_describe(x, d, sizeof d), (long long)c->audio_clips,
                    (long long)c->audio_frames, (long long)c->audio_mels);
        }
        for (int64_t s = 0; s < b->B; s++)
            if (of[s] < -1 || of[s] >= n)
                ag_fail("groundinggpt: sample %lld uses %s row %d of %lld", (long long)s, name,
                        (int)of[s], (long long)n);
    }
}

// Token embeddings (B, T, C): base rows for ordinary ids, added rows for the start/end tokens.
// Patch tokens get a placeholder row (base row 0): the splice overwrites them anyway.
static ag_tensor *embed_tokens(ag_ctx *ctx, const gm_groundinggpt *m, const int32_t *ids, int64_t B,
                               int64_t T) {
    const int64_t N = B * T, C = m->cfg.llm.dim;
    const int32_t V0 = (int32_t)m->cfg.llm.vocab;
    const gm_splice_tokens *tok = &m->cfg.tokens;
    int32_t *base = ag_step_alloc(ctx, sizeof(int32_t) * (size_t)N);
    int32_t *pos = ag_step_alloc(ctx, sizeof(int32_t) * (size_t)N);
    int32_t *row = ag_step_alloc(ctx, sizeof(int32_t) * (size_t)N);
    int64_t k = 0;
    for (int64_t i = 0; i < N; i++) {
        int32_t id = ids[i];
        base[i] = id < V0 ? id : 0;
        if (id < V0 || id == tok->patch[0] || id == tok->patch[1] || id == tok->patch[2]) continue;
        pos[k] = (int32_t)i;
        row[k++] = id - V0;
    }
    ag_tensor *x =
        ag_embedding(ctx, m->llm->embed, ag_from_host(ctx, AG_I32, AG_SHAPE(N), base)); // (N, C)
    if (k) { // (N, C) with the added rows scattered in
        ag_tensor *add = ag_embedding(ctx, m->embed_added,
                                      ag_from_host(ctx, AG_I32, AG_SHAPE(k), row)); // (k, C)
        x = ag_scatter_rows(ctx, x, ag_from_host(ctx, AG_I32, AG_SHAPE(k), pos), add);
    }
    return ag_reshape(ctx, x, AG_SHAPE(B, T, C));
}

ag_tensor *gm_groundinggpt_embed(ag_ctx *ctx, gm_groundinggpt *m, const gm_groundinggpt_batch *b,
                                 bool train, uint64_t seed) {
    check_batch(m, b);
    const gm_groundinggpt_config *c = &m->cfg;
    gm_splice_plan plan;
    gm_splice_scan(ctx, &plan, &c->tokens, b->ids, b->B, b->T);
    const int64_t tokens[GM_NMOD] = {c->image_tokens, c->video_tokens, c->audio_tokens};
    // Every count is checked before any encoder spends time.
    for (int mo = 0; mo < GM_NMOD; mo++) {
        if (plan.n[mo] && !c->has[mo]) {
            int64_t s = 0;
            while (!plan.per_sample[mo][s]) s++;
            ag_fail("groundinggpt: sample %lld has %s patch tokens but the model has no %s branch",
                    (long long)s, gm_modality_name((gm_modality)mo),
                    gm_modality_name((gm_modality)mo));
        }
        int64_t *rows = ag_step_alloc(ctx, sizeof(int64_t) * (size_t)b->B);
        for (int64_t s = 0; s < b->B; s++)
            rows[s] = b->media_of[mo] && b->media_of[mo][s] >= 0 ? tokens[mo] : 0;
        gm_splice_check(&plan, (gm_modality)mo, rows);
    }
    ag_tensor *x = embed_tokens(ctx, m, b->ids, b->B, b->T);
    encode_args args = {m, b, train, seed};
    ag_tensor *feats[GM_NMOD] = {0};
    if (plan.n[GM_MOD_IMAGE]) feats[GM_MOD_IMAGE] = encode_image(ctx, &args);
    if (plan.n[GM_MOD_VIDEO]) feats[GM_MOD_VIDEO] = encode_video(ctx, &args);
    if (plan.n[GM_MOD_AUDIO]) feats[GM_MOD_AUDIO] = encode_audio(ctx, &args);
    for (int mo = 0; mo < GM_NMOD; mo++) m->encoder_runs[mo] += plan.n[mo] > 0;
    return gm_splice_apply(ctx, &plan, x, feats);
}

// Final-normed hidden states: (B, T, C), or with r the real tokens' rows (N, C).
static ag_tensor *hidden_states(ag_ctx *ctx, gm_groundinggpt *m, const gm_groundinggpt_batch *b,
                                bool train, uint64_t seed, const gm_llama_rows *r) {
    ag_tensor *x = gm_groundinggpt_embed(ctx, m, b, train, seed); // (B, T, C)
    gm_llama_lora_mode(m->llm, train, seed ^ 0x6c6f7261ull);      // LoRA dropout, if any
    if (!r) return gm_llama_hidden(ctx, m->llm, x, gm_positions(ctx, b->T));
    x = ag_index_select_rows(ctx, ag_reshape(ctx, x, AG_SHAPE(b->B * b->T, x->shape[2])),
                             r->rows);              // (N, C)
    return gm_llama_hidden_rows(ctx, m->llm, x, r); // (N, C)
}

ag_tensor *gm_groundinggpt_hidden(ag_ctx *ctx, gm_groundinggpt *m, const gm_groundinggpt_batch *b,
                                  bool train, uint64_t seed) {
    return hidden_states(ctx, m, b, train, seed, NULL);
}

ag_tensor *gm_groundinggpt_head(ag_ctx *ctx, const gm_groundinggpt *m, ag_tensor *hidden) {
    // One (V0 + 9, C) weight: a V x C copy per step, cheaper than concatenating two (N, V)
    // logit blocks once N = B·T exceeds C.
    ag_tensor *parts[2] = {m->llm->lm_head, m->lm_head_added};
    ag_tensor *w = ag_concat(ctx, 2, parts, 0);                                   // (V, C)
    ag_tensor *logits = ag_linear(ctx, hidden, w, NULL);                          // (..., V)
    return ag_reshape(ctx, logits, AG_SHAPE(-1, gm_groundinggpt_vocab(&m->cfg))); // (N, V)
}

ag_tensor *gm_groundinggpt_loss(ag_ctx *ctx, gm_groundinggpt *m, const gm_groundinggpt_batch *b,
                                bool train, uint64_t seed) {
    if (!b->targets) ag_fail("groundinggpt: the loss needs targets");
    int64_t N = b->B * b->T, M = 0;
    for (int64_t i = 0; i < N; i++) M += b->targets[i] != GM_IGNORE_TARGET;
    ag_tensor *h;                 // (rows, C): the real tokens' rows, or all B·T
    const int32_t *row_of = NULL; // real-token row of padded position i (lengths given)
    gm_llama_rows r = {0};
    if (b->lengths) r = gm_llama_rows_of(ctx, b->B, b->T, b->lengths); // checks them
    if (b->lengths && r.N < N) {                                       // some padding to skip
        int32_t *map = ag_step_alloc(ctx, sizeof(int32_t) * (size_t)N);
        for (int64_t i = 0; i < N; i++) map[i] = -1;
        for (int64_t j = 0; j < r.N; j++) map[r.host[j]] = (int32_t)j;
        for (int64_t i = 0; i < N; i++)
            if (b->targets[i] != GM_IGNORE_TARGET && map[i] < 0)
                ag_fail("groundinggpt: sample %lld has a target at position %lld, past its "
                        "length %d",
                        (long long)(i / b->T), (long long)(i % b->T), (int)b->lengths[i / b->T]);
        row_of = map;
        h = hidden_states(ctx, m, b, train, seed, &r); // (N', C)
    } else {
        h = hidden_states(ctx, m, b, train, seed, NULL); // (B, T, C)
        h = ag_reshape(ctx, h, AG_SHAPE(N, h->shape[h->ndim - 1]));
    }
    // Logits only where a target is: patch tokens, the prompt and padding (most of a grounding
    // sample) need none, and the head is the largest matmul of a small model. The mean over
    // the targets is the same; a batch without any keeps one ignored row (loss 0).
    int64_t keep = M > 0 ? M : 1;
    int32_t *rows = ag_step_alloc(ctx, sizeof(int32_t) * (size_t)keep);
    int32_t *kept = ag_step_alloc(ctx, sizeof(int32_t) * (size_t)keep);
    rows[0] = 0, kept[0] = GM_IGNORE_TARGET;
    for (int64_t i = 0, j = 0; i < N; i++)
        if (b->targets[i] != GM_IGNORE_TARGET)
            rows[j] = row_of ? row_of[i] : (int32_t)i, kept[j++] = b->targets[i];
    ag_tensor *idx = ag_from_host(ctx, AG_I32, AG_SHAPE(keep), rows);
    ag_tensor *sel = ag_index_select_rows(ctx, h, idx);             // (M, C)
    ag_tensor *t = ag_from_host(ctx, AG_I32, AG_SHAPE(keep), kept); // (M)
    return ag_cross_entropy(ctx, gm_groundinggpt_head(ctx, m, sel), t,
                            GM_IGNORE_TARGET); // (M, V)
}

ag_tensor *gm_groundinggpt_logits(ag_ctx *ctx, gm_groundinggpt *m, const gm_groundinggpt_batch *b) {
    ag_no_grad_begin(ctx);
    ag_tensor *logits = gm_groundinggpt_head(ctx, m, gm_groundinggpt_hidden(ctx, m, b, false, 0));
    ag_no_grad_end(ctx);
    return logits;
}
