// test_groundinggpt.c: the assembled model (model/groundinggpt.h) on configs/model/tiny.yaml.
//   - the census (counts from the config alone, what inspect prints) equals the real registry:
//     every module group, every stage's trainable count, and the stage patterns mark exactly
//     the census' trainable elements; the 7B YAML reads to the C reference config;
//   - a training step on a batch with image, video (+ audio) and audio samples and a text-only
//     one: loss finite and ~ ln(2009) at init; in stage 1 gradients reach exactly the stage-1
//     parameters (non-zero) and no frozen one (grad stays NULL); in stage 2 the LLM too;
//   - a batch without video never runs the video encoder; absent modalities cost nothing;
//   - the frozen encoders give the same loss chunked one row at a time, all at once, and run
//     with the tape in the caller's context (a trainable encoder parameter);
//   - the loss takes logits at the supervised rows only: same loss as the full logits' mean
//     cross-entropy (float64 on the host) and the same gradients; no targets give 0;
//   - with sample lengths the LLM runs on the real tokens only: same loss and gradients as
//     the padded forward, whatever the padding holds;
//   - samples sharing one media row; inference logits without a tape; a bf16 model;
//   - patch-count mismatches, missing branches and bad media are one-line errors;
//   - the time of one tiny training step (printed; must stay well under a second).
#include <math.h>
#include <stdlib.h>
#include <time.h>

#include <omp.h>

#include "autograd/error.h"
#include "model/groundinggpt.h"
#include "testlib.h"
#include "train/model_config.h"

enum { B = 4, T = 64 };

static gm_groundinggpt_config tiny_config(void) {
    char path[1024];
    tl_source_path(path, sizeof path, "configs/model/tiny.yaml");
    gm_groundinggpt_config c;
    tr_model_config_load(path, &c);
    return c;
}

// A new model from c, initialised from seed (std 0.02) and set to a stage.
static gm_groundinggpt *staged_model(ag_ctx *ctx, const gm_groundinggpt_config *c, uint64_t seed,
                                     int stage) {
    gm_groundinggpt *m = gm_groundinggpt_new(ctx, c);
    gm_groundinggpt_init(m, seed, 0.02);
    gm_groundinggpt_set_stage(ctx, m, stage);
    return m;
}

// A span <start> <patch> x n <end> at ids[at]; returns the position after it.
static int span(int32_t *ids, int at, const gm_groundinggpt_config *c, gm_modality m, int64_t n) {
    ids[at++] = c->tokens.start[m];
    for (int64_t i = 0; i < n; i++) ids[at++] = c->tokens.patch[m];
    ids[at++] = c->tokens.end[m];
    return at;
}

typedef struct {
    int32_t ids[B * T], targets[B * T];
    int32_t image_of[B], video_of[B], audio_of[B];
    uint8_t images[2 * 32 * 32 * 3], videos[4 * 16 * 16 * 3];
    float audios[2 * 3 * 204 * 128];
} batch_data;

// Sample 0: image; sample 1: video and audio; sample 2: audio; sample 3: text only.
// with_video false drops sample 1's video (its tokens and its row).
static void make_data(batch_data *d, const gm_groundinggpt_config *c, bool with_video,
                      uint64_t seed) {
    tl_rng r = {seed};
    for (int i = 0; i < B * T; i++) {
        d->ids[i] = (int32_t)(3 + tl_randint(&r, c->llm.vocab - 3));
        d->targets[i] = -100;
    }
    int ends[B];
    ends[0] = span(d->ids, 2, c, GM_MOD_IMAGE, c->image_tokens);
    int at = with_video ? span(d->ids + T, 1, c, GM_MOD_VIDEO, c->video_tokens) : 1;
    ends[1] = span(d->ids + T, at + 1, c, GM_MOD_AUDIO, c->audio_tokens);
    ends[2] = span(d->ids + 2 * T, 3, c, GM_MOD_AUDIO, c->audio_tokens);
    ends[3] = 5;
    // Supervise the text after the media (the shifted next token), as the loader would.
    for (int b = 0; b < B; b++)
        for (int t = ends[b] + 2; t < T - 1; t++) d->targets[b * T + t] = d->ids[b * T + t + 1];
    const int32_t img[B] = {0, -1, -1, -1}, vid[B] = {-1, 0, -1, -1}, aud[B] = {-1, 0, 1, -1};
    memcpy(d->image_of, img, sizeof img);
    memcpy(d->video_of, vid, sizeof vid);
    if (!with_video) d->video_of[1] = -1;
    memcpy(d->audio_of, aud, sizeof aud);
    for (size_t i = 0; i < sizeof d->images; i++) d->images[i] = (uint8_t)tl_randint(&r, 256);
    for (size_t i = 0; i < sizeof d->videos; i++) d->videos[i] = (uint8_t)tl_randint(&r, 256);
    for (size_t i = 0; i < sizeof d->audios / sizeof *d->audios; i++)
        d->audios[i] = (float)tl_normal(&r);
}

static gm_groundinggpt_batch make_batch(ag_ctx *ctx, batch_data *d, bool with_video) {
    gm_groundinggpt_batch b = {.B = B, .T = T, .ids = d->ids, .targets = d->targets};
    b.media[GM_MOD_IMAGE] = ag_from_host(ctx, AG_U8, AG_SHAPE(1, 32, 32, 3), d->images);
    b.media_of[GM_MOD_IMAGE] = d->image_of;
    if (with_video) {
        b.media[GM_MOD_VIDEO] = ag_from_host(ctx, AG_U8, AG_SHAPE(4, 16, 16, 3), d->videos);
        b.media_of[GM_MOD_VIDEO] = d->video_of;
    }
    b.media[GM_MOD_AUDIO] = ag_from_host(ctx, AG_F32, AG_SHAPE(2, 3, 204, 128), d->audios);
    b.media_of[GM_MOD_AUDIO] = d->audio_of;
    return b;
}

// Some element is non-zero (f32 or bf16: any bit but the sign set).
static bool any_nonzero(const ag_tensor *g) {
    int64_t n = ag_numel(g);
    size_t es = ag_dtype_size(g->dtype);
    unsigned char *h = malloc(es * (size_t)n);
    ag_copy_to_host(g, h);
    bool nz = false;
    for (int64_t i = 0; i < n && !nz; i++) {
        uint32_t v = 0;
        memcpy(&v, h + (size_t)i * es, es);
        nz = (v & (es == 4 ? 0x7fffffffu : 0x7fffu)) != 0;
    }
    free(h);
    return nz;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// Field by field (struct padding may differ).
static bool vit_equal(const gm_vit_config *a, const gm_vit_config *b) {
    return a->family == b->family && a->image_h == b->image_h && a->image_w == b->image_w &&
           a->channels == b->channels && a->patch == b->patch && a->stride == b->stride &&
           a->width == b->width && a->n_layers == b->n_layers && a->n_heads == b->n_heads &&
           a->mlp == b->mlp && a->norm_eps == b->norm_eps && a->act == b->act &&
           a->patch_bias == b->patch_bias && a->patch_norm == b->patch_norm &&
           a->patch_norm_eps == b->patch_norm_eps && a->pre_norm == b->pre_norm &&
           a->q_bias == b->q_bias && a->k_bias == b->k_bias && a->v_bias == b->v_bias &&
           a->bias_kv == b->bias_kv && a->out_layer == b->out_layer && a->drop_cls == b->drop_cls &&
           a->head_norm == b->head_norm && a->head_dim == b->head_dim &&
           a->head_scale == b->head_scale;
}

static bool qformer_equal(const gm_qformer_config *a, const gm_qformer_config *b) {
    return a->hidden == b->hidden && a->n_layers == b->n_layers && a->n_heads == b->n_heads &&
           a->intermediate == b->intermediate && a->encoder_width == b->encoder_width &&
           a->cross_attention_frequency == b->cross_attention_frequency && a->eps == b->eps &&
           a->dropout == b->dropout && a->names == b->names;
}

// The census against a real registry, and the stage patterns against the census.
static void test_census(void) {
    gm_groundinggpt_config c = tiny_config();
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_groundinggpt *m = gm_groundinggpt_new(ctx, &c);
    gm_census_row rows[64];
    int n = gm_groundinggpt_census(&c, rows, 64);
    gm_param_group groups[64];
    int ng = gm_params_groups(m->params, groups, 64);
    TL_CHECK(n == ng, "census has %d modules, the registry %d", n, ng);
    int64_t total = 0;
    for (int i = 0; i < n && i < ng; i++) {
        TL_CHECK(!strcmp(rows[i].group, groups[i].name) && rows[i].total == groups[i].total,
                 "module %d: census %s %lld, registry %s %lld", i, rows[i].group,
                 (long long)rows[i].total, groups[i].name, (long long)groups[i].total);
        total += rows[i].total;
    }
    TL_CHECK(total == gm_params_total(m->params), "census total");
    for (int s = 1; s <= 3; s++) {
        gm_groundinggpt_set_stage(ctx, m, s);
        ng = gm_params_groups(m->params, groups, 64);
        bool same = true;
        for (int i = 0; i < n && i < ng; i++) {
            same &= groups[i].trainable == rows[i].stage[s - 1];
            if (groups[i].trainable != rows[i].stage[s - 1])
                fprintf(stderr, "stage %d %s: registry %lld census %lld\n", s, groups[i].name,
                        (long long)groups[i].trainable, (long long)rows[i].stage[s - 1]);
        }
        TL_CHECK(same, "stage %d: trainable counts per module equal the census", s);
    }
    // Without a branch its patterns disappear (a pattern matching nothing would be an error).
    gm_groundinggpt_config nv = c;
    nv.has[GM_MOD_VIDEO] = false;
    gm_groundinggpt *m2 = gm_groundinggpt_new(ctx, &nv);
    TL_CHECK(gm_groundinggpt_set_stage(ctx, m2, 1) > 0, "stage 1 without a video branch");
    TL_CHECK(gm_params_find(m2->params, "model.video_Qformer.bert.embeddings.LayerNorm.weight") ==
                 NULL,
             "no video parameters without the branch");
    gm_groundinggpt_free(m2);
    gm_groundinggpt_free(m);
    ag_ctx_free(ctx);

    // On a meta context (no storage) the 7B registry is built without 16 GB: the same modules
    // and sizes as the census, no pool bytes, and a copy of values fails naming the tensor.
    {
        gm_groundinggpt_config r7 = gm_groundinggpt_reference_config();
        ag_ctx *meta = ag_ctx_new_meta();
        gm_groundinggpt *m7 = gm_groundinggpt_new(meta, &r7);
        gm_census_row r7rows[64];
        gm_param_group g7[64];
        int n7 = gm_groundinggpt_census(&r7, r7rows, 64),
            ng7 = gm_params_groups(m7->params, g7, 64);
        bool same7 = n7 == ng7;
        for (int i = 0; i < n7 && i < ng7; i++)
            same7 &= !strcmp(r7rows[i].group, g7[i].name) && r7rows[i].total == g7[i].total;
        TL_CHECK(same7, "7B on a meta context: %d modules, census %d, sizes equal", ng7, n7);
        TL_CHECK(ag_pool_bytes(meta) == 0 && ag_pool_bytes(m7->enc_ctx) == 0,
                 "meta pools hold %zu + %zu bytes", ag_pool_bytes(meta),
                 ag_pool_bytes(m7->enc_ctx));
        TL_CHECK(gm_groundinggpt_set_stage(meta, m7, 2) > 0, "stage selection on a meta model");
        float one;
        TL_EXPECT_FAIL(ag_copy_to_host(m7->llm->norm, &one), "model.norm.weight' has no storage");
        gm_groundinggpt_free(m7);
        ag_ctx_free(meta);
    }

    // The 7B file is the reference, size for size.
    char path[1024];
    tl_source_path(path, sizeof path, "configs/model/groundinggpt-7b.yaml");
    gm_groundinggpt_config y, r = gm_groundinggpt_reference_config();
    tr_model_config_load(path, &y);
    gm_census_row ry[64], rr[64];
    int nyy = gm_groundinggpt_census(&y, ry, 64), nr = gm_groundinggpt_census(&r, rr, 64);
    bool same = nyy == nr && y.dtype == r.dtype && !memcmp(&y.tokens, &r.tokens, sizeof y.tokens) &&
                y.llm.vocab == r.llm.vocab && y.llm.dim == r.llm.dim &&
                y.llm.n_layers == r.llm.n_layers && y.llm.n_heads == r.llm.n_heads &&
                y.llm.n_kv_heads == r.llm.n_kv_heads && y.llm.ffn == r.llm.ffn &&
                y.llm.max_seq == r.llm.max_seq && y.llm.rope_theta == r.llm.rope_theta &&
                y.llm.norm_eps == r.llm.norm_eps && y.image_tokens == r.image_tokens &&
                y.video_tokens == r.video_tokens && y.audio_tokens == r.audio_tokens &&
                y.video_frames == r.video_frames && y.audio_clips == r.audio_clips;
    for (int i = 0; same && i < nr; i++) same = ry[i].total == rr[i].total;
    const gm_vit_config *vy[3] = {&y.image_vit, &y.video_vit, &y.audio_vit},
                        *vr[3] = {&r.image_vit, &r.video_vit, &r.audio_vit};
    for (int i = 0; i < 3; i++) same = same && vit_equal(vy[i], vr[i]);
    same = same && qformer_equal(&y.frame_qformer.qformer, &r.frame_qformer.qformer) &&
           y.frame_qformer.n_queries == r.frame_qformer.n_queries &&
           y.frame_qformer.ln_eps == r.frame_qformer.ln_eps &&
           qformer_equal(&y.video_adapter.qformer, &r.video_adapter.qformer) &&
           y.video_adapter.n_queries == r.video_adapter.n_queries &&
           y.video_adapter.max_frames == r.video_adapter.max_frames &&
           y.video_adapter.llm_dim == r.video_adapter.llm_dim &&
           qformer_equal(&y.audio_adapter.qformer, &r.audio_adapter.qformer) &&
           y.audio_adapter.n_queries == r.audio_adapter.n_queries &&
           y.audio_adapter.max_clips == r.audio_adapter.max_clips &&
           y.audio_adapter.llm_dim == r.audio_adapter.llm_dim;
    TL_CHECK(same, "configs/model/groundinggpt-7b.yaml equals gm_groundinggpt_reference_config");
    int64_t llm = 0;
    for (int i = 0; i < nr; i++)
        if (rr[i].part == GM_PART_LLM) llm += rr[i].total;
    TL_CHECK(llm == 6738415616LL + 9 * 4096 * 2, "7B LLM: %lld parameters", (long long)llm);
}

// Gradients reach exactly the trainable parameters; frozen ones keep a NULL gradient.
static void check_grads(const gm_groundinggpt *m, int stage) {
    int bad = 0, trained = 0;
    for (int i = 0; i < m->params->n; i++) {
        const ag_tensor *p = m->params->tensors[i];
        if (p->requires_grad) {
            trained++;
            if (!p->grad || !any_nonzero(p->grad)) {
                fprintf(stderr, "stage %d: trainable %s got no gradient\n", stage, p->name);
                bad++;
            }
        } else if (p->grad) {
            fprintf(stderr, "stage %d: frozen %s has a gradient\n", stage, p->name);
            bad++;
        }
    }
    TL_CHECK(bad == 0 && trained > 0, "stage %d: %d trainable tensors, %d wrong", stage, trained,
             bad);
}

static void zero_all(ag_ctx *ctx, gm_groundinggpt *m) {
    ag_zero_grad(ctx, m->params->tensors, m->params->n);
}

static void test_step(void) {
    gm_groundinggpt_config c = tiny_config();
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_groundinggpt *m = gm_groundinggpt_new(ctx, &c);
    gm_groundinggpt_init(m, 7, 0.02);
    static batch_data d;
    make_data(&d, &c, true, 11);

    // Stage 1.
    gm_groundinggpt_set_stage(ctx, m, 1);
    // (the input rows only: the reference freezes the output embedding in stage 1)
    TL_CHECK(m->llm->layers[0].wq->requires_grad == false && m->embed_added->requires_grad &&
                 !m->lm_head_added->requires_grad && !m->llm->embed->requires_grad,
             "stage 1 trains the added input rows only of the LLM");
    gm_groundinggpt_batch b = make_batch(ctx, &d, true);
    ag_tensor *loss = gm_groundinggpt_loss(ctx, m, &b, true, 3);
    double l = ag_item(loss, 0), lnv = log((double)gm_groundinggpt_vocab(&c));
    TL_CHECK(isfinite(l) && fabs(l - lnv) < 0.1, "loss at init %.4f, ln(V) %.4f", l, lnv);
    for (int mo = 0; mo < GM_NMOD; mo++)
        TL_CHECK(m->encoder_runs[mo] == 1, "%s encoder ran %lld times",
                 gm_modality_name((gm_modality)mo), (long long)m->encoder_runs[mo]);
    ag_backward(ctx, loss);
    check_grads(m, 1);
    ag_step_reset(ctx);

    // Stage 2: the whole LLM trains too; the encoders and the frame Q-Former stay frozen.
    gm_groundinggpt_set_stage(ctx, m, 2);
    zero_all(ctx, m);
    b = make_batch(ctx, &d, true);
    loss = gm_groundinggpt_loss(ctx, m, &b, true, 3);
    ag_backward(ctx, loss);
    check_grads(m, 2);
    ag_step_reset(ctx);

    // Timing of a stage-2 step (forward + backward), best of three, on one thread: with other
    // tests sharing CI's two cores, OpenMP barriers of a multi-threaded run can wait a whole
    // scheduler slice each, and the budget below would measure the neighbours.
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    double best = 1e9;
    for (int it = 0; it < 3; it++) {
        zero_all(ctx, m);
        double t0 = now_s();
        b = make_batch(ctx, &d, true);
        loss = gm_groundinggpt_loss(ctx, m, &b, true, 3 + (uint64_t)it);
        ag_backward(ctx, loss);
        double dt = now_s() - t0;
        best = dt < best ? dt : best;
        ag_step_reset(ctx);
    }
    printf("tiny step (B %d x T %d, image + video + audio, stage 2, forward + backward): "
           "%.1f ms\n",
           B, T, best * 1e3);
    // A budget against gross slowness (a quadratic loop, a per-step allocation storm), not a
    // benchmark; AddressSanitizer builds run several times slower.
#if defined(__SANITIZE_ADDRESS__)
    const double budget = 10.0;
#else
    const double budget = 1.0;
#endif
    TL_CHECK(best < budget, "a tiny step takes %.3f s (budget %.0f s)", best, budget);
    omp_set_num_threads(threads);

    // A batch without video never runs the video encoder.
    int64_t runs[GM_NMOD];
    memcpy(runs, m->encoder_runs, sizeof runs);
    static batch_data dn;
    make_data(&dn, &c, false, 12);
    b = make_batch(ctx, &dn, false);
    loss = gm_groundinggpt_loss(ctx, m, &b, true, 3);
    TL_CHECK(isfinite(ag_item(loss, 0)), "loss without video");
    TL_CHECK(m->encoder_runs[GM_MOD_VIDEO] == runs[GM_MOD_VIDEO] &&
                 m->encoder_runs[GM_MOD_IMAGE] == runs[GM_MOD_IMAGE] + 1 &&
                 m->encoder_runs[GM_MOD_AUDIO] == runs[GM_MOD_AUDIO] + 1,
             "without video samples the video encoder never runs");
    ag_step_reset(ctx);

    // Inference: logits (B·T, V0 + 9), eval mode, no tape.
    b = make_batch(ctx, &d, true);
    ag_tensor *logits = gm_groundinggpt_logits(ctx, m, &b);
    TL_CHECK(logits->ndim == 2 && logits->shape[0] == B * T &&
                 logits->shape[1] == gm_groundinggpt_vocab(&c) && ctx->tape == NULL,
             "inference logits (%lld, %lld) without a tape", (long long)logits->shape[0],
             (long long)logits->shape[1]);
    ag_step_reset(ctx);
    gm_groundinggpt_free(m);
    ag_ctx_free(ctx);
}

// Gradients of the lm_head and of the image projector's first matrix, to the host (f32).
static float *head_grads(const gm_groundinggpt *m, int64_t *n) {
    const ag_tensor *g[2] = {m->llm->lm_head->grad, m->projector->w1->grad};
    int64_t a = ag_numel(m->llm->lm_head), c = ag_numel(m->projector->w1);
    float *h = calloc((size_t)(a + c), sizeof *h);
    if (g[0]) ag_copy_to_host(g[0], h);
    if (g[1]) ag_copy_to_host(g[1], h + a);
    *n = a + c;
    return h;
}

// The loss takes logits at the supervised rows only: it equals the mean cross-entropy of the
// full (B·T, V) inference logits over the targets (float64 on the host); its gradients equal
// those of a cross-entropy over every row's logits; a batch without targets gives loss 0 and
// zero gradients.
static void test_supervised_rows(void) {
    gm_groundinggpt_config c = tiny_config();
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_groundinggpt *m = staged_model(ctx, &c, 9, 2);
    static batch_data d;
    make_data(&d, &c, true, 51);

    gm_groundinggpt_batch b = make_batch(ctx, &d, true);
    ag_tensor *logits = gm_groundinggpt_logits(ctx, m, &b); // (B·T, V)
    int64_t V = logits->shape[1];
    float *lg = malloc(sizeof(float) * (size_t)(B * T * V));
    ag_copy_to_host(logits, lg);
    double sum = 0;
    int n = 0;
    for (int i = 0; i < B * T; i++) {
        if (d.targets[i] == -100) continue;
        const float *row = lg + (int64_t)i * V;
        double mx = row[0], se = 0;
        for (int64_t v = 1; v < V; v++) mx = row[v] > mx ? row[v] : mx;
        for (int64_t v = 0; v < V; v++) se += exp((double)row[v] - mx);
        sum += mx + log(se) - row[d.targets[i]], n++;
    }
    free(lg);
    double ref = sum / n;
    ag_step_reset(ctx);

    zero_all(ctx, m);
    b = make_batch(ctx, &d, true);
    ag_tensor *loss = gm_groundinggpt_loss(ctx, m, &b, false, 0);
    double l = ag_item(loss, 0);
    TL_CHECK(n > 0 && n < B * T && fabs(l - ref) < 1e-5 * fmax(1.0, ref),
             "loss over %d of %d rows %.7f, host cross-entropy of the full logits %.7f", n, B * T,
             l, ref);
    ag_backward(ctx, loss);
    int64_t ng;
    float *g_rows = head_grads(m, &ng);
    ag_step_reset(ctx);

    zero_all(ctx, m);
    b = make_batch(ctx, &d, true);
    ag_tensor *h = gm_groundinggpt_hidden(ctx, m, &b, false, 0);
    ag_tensor *t = ag_from_host(ctx, AG_I32, AG_SHAPE(B * T), d.targets);
    ag_tensor *full = ag_cross_entropy(ctx, gm_groundinggpt_head(ctx, m, h), t, -100);
    TL_CHECK(fabs(ag_item(full, 0) - l) < 1e-6 * fmax(1.0, l), "full-logit loss %.7f vs %.7f",
             ag_item(full, 0), l);
    ag_backward(ctx, full);
    float *g_full = head_grads(m, &ng);
    double worst = 0, scale = 0;
    for (int64_t i = 0; i < ng; i++) {
        worst = fmax(worst, fabs((double)g_rows[i] - g_full[i]));
        scale = fmax(scale, fabs((double)g_full[i]));
    }
    TL_CHECK(scale > 0 && worst <= 1e-5 * scale,
             "lm_head and projector gradients: max difference %.3g (largest %.3g)", worst, scale);
    free(g_rows);
    free(g_full);
    ag_step_reset(ctx);

    static batch_data e;
    e = d;
    for (int i = 0; i < B * T; i++) e.targets[i] = -100;
    zero_all(ctx, m);
    b = make_batch(ctx, &e, true);
    loss = gm_groundinggpt_loss(ctx, m, &b, true, 0);
    l = ag_item(loss, 0);
    ag_backward(ctx, loss);
    float *g_none = head_grads(m, &ng);
    double most = 0;
    for (int64_t i = 0; i < ng; i++) most = fmax(most, fabs((double)g_none[i]));
    TL_CHECK(l == 0 && most == 0, "no targets: loss %g, largest gradient %g", l, most);
    free(g_none);
    ag_step_reset(ctx);
    gm_groundinggpt_free(m);
    ag_ctx_free(ctx);
}

// Every trainable parameter's gradient, one after another (zeros where none), f32 model.
static float *all_grads(const gm_groundinggpt *m, int64_t *n) {
    int64_t total = 0;
    for (int i = 0; i < m->params->n; i++)
        if (m->params->tensors[i]->requires_grad) total += ag_numel(m->params->tensors[i]);
    float *h = calloc((size_t)total, sizeof *h);
    int64_t at = 0;
    for (int i = 0; i < m->params->n; i++) {
        const ag_tensor *t = m->params->tensors[i];
        if (!t->requires_grad) continue;
        if (t->grad) ag_copy_to_host(t->grad, h + at);
        at += ag_numel(t);
    }
    *n = total;
    return h;
}

// With lengths the LLM runs on the real tokens only: the same loss and the same gradients of
// every trainable parameter as the padded forward (whatever the padding holds); a target past
// a sample's length and a length outside [1, T] are one-line errors.
static void test_real_token_rows(void) {
    gm_groundinggpt_config c = tiny_config();
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_groundinggpt *m = staged_model(ctx, &c, 13, 2);
    static batch_data d;
    make_data(&d, &c, true, 61);
    const int32_t lengths[B] = {T, 40, 27, 11}; // after each sample's media
    tl_rng r = {5};
    for (int b = 0; b < B; b++)
        for (int t = lengths[b] - 1; t < T; t++) {
            d.targets[b * T + t] = -100; // the last token and the padding: no target
            if (t >= lengths[b]) d.ids[b * T + t] = (int32_t)(3 + tl_randint(&r, 50));
        }
    double loss[2];
    float *g[2];
    int64_t ng = 0;
    for (int k = 0; k < 2; k++) {
        zero_all(ctx, m);
        gm_groundinggpt_batch b = make_batch(ctx, &d, true);
        b.lengths = k ? lengths : NULL;
        ag_tensor *l = gm_groundinggpt_loss(ctx, m, &b, true, 0);
        loss[k] = ag_item(l, 0);
        ag_backward(ctx, l);
        g[k] = all_grads(m, &ng);
        ag_step_reset(ctx);
    }
    TL_CHECK(isfinite(loss[0]) && fabs(loss[1] - loss[0]) <= 1e-6 * fabs(loss[0]),
             "real-token rows: loss %.8f, padded %.8f", loss[1], loss[0]);
    double worst = 0, scale = 0;
    for (int64_t i = 0; i < ng; i++) {
        worst = fmax(worst, fabs((double)g[1][i] - g[0][i]));
        scale = fmax(scale, fabs((double)g[0][i]));
    }
    TL_CHECK(scale > 0 && worst <= 1e-5 * scale,
             "real-token rows: gradients of %lld elements differ by %.3g (largest %.3g)",
             (long long)ng, worst, scale);
    free(g[0]);
    free(g[1]);

    gm_groundinggpt_batch b = make_batch(ctx, &d, true);
    const int32_t short3[B] = {T, 40, 27, 9}; // sample 3 has targets at 9 and 10
    b.lengths = short3;
    TL_EXPECT_FAIL(gm_groundinggpt_loss(ctx, m, &b, true, 0), "sample 3 has a target at position 9",
                   "past its length 9");
    const int32_t empty[B] = {T, 40, 0, 11};
    b.lengths = empty;
    TL_EXPECT_FAIL(gm_groundinggpt_loss(ctx, m, &b, true, 0), "sample 2 has length 0",
                   "not in [1, 64]");
    ag_step_reset(ctx);
    gm_groundinggpt_free(m);
    ag_ctx_free(ctx);
}

// Frozen encoders: chunked in their own context (any chunk size) or with the tape in the
// caller's context give the same loss.
static void test_encoder_paths(void) {
    gm_groundinggpt_config c = tiny_config();
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_groundinggpt *m = staged_model(ctx, &c, 5, 1);
    static batch_data d;
    make_data(&d, &c, true, 21);
    double l[4];
    const int64_t chunks[3] = {1, 3, 1000};
    for (int k = 0; k < 3; k++) {
        m->enc_batch = chunks[k];
        gm_groundinggpt_batch b = make_batch(ctx, &d, true);
        l[k] = ag_item(gm_groundinggpt_loss(ctx, m, &b, false, 0), 0);
        ag_step_reset(ctx);
    }
    // A trainable encoder parameter: all three encoders then run in ctx with the tape.
    ag_set_trainable(ctx, m->image_vit->layers[0].fc1_b, true);
    ag_set_trainable(ctx, m->video_vit->layers[0].fc1_b, true);
    ag_set_trainable(ctx, m->audio_vit->layers[0].fc1_b, true);
    gm_groundinggpt_batch b = make_batch(ctx, &d, true);
    ag_tensor *loss = gm_groundinggpt_loss(ctx, m, &b, false, 0);
    l[3] = ag_item(loss, 0);
    ag_backward(ctx, loss);
    TL_CHECK(m->video_vit->layers[0].fc1_b->grad &&
                 any_nonzero(m->video_vit->layers[0].fc1_b->grad),
             "a trainable encoder parameter gets a gradient");
    ag_step_reset(ctx);
    TL_CHECK(fabs(l[0] - l[1]) < 1e-5 && fabs(l[0] - l[2]) < 1e-5 && fabs(l[0] - l[3]) < 1e-5,
             "loss equal across encoder paths: %.7f %.7f %.7f %.7f", l[0], l[1], l[2], l[3]);

    // Two samples sharing image row 1 of two; row 0 is encoded but used by nobody.
    static batch_data d2;
    make_data(&d2, &c, true, 22);
    span(d2.ids + 3 * T, 6, &c, GM_MOD_IMAGE, c.image_tokens);
    d2.image_of[0] = 1;
    d2.image_of[3] = 1;
    b = make_batch(ctx, &d2, true);
    b.media[GM_MOD_IMAGE] = ag_from_host(ctx, AG_U8, AG_SHAPE(2, 32, 32, 3), d2.images);
    ag_tensor *x = gm_groundinggpt_embed(ctx, m, &b, false, 0); // (B, T, C)
    const int64_t C = c.llm.dim;
    float *h = malloc(sizeof(float) * (size_t)(B * T * C));
    ag_copy_to_host(x, h);
    // Sample 0's patches sit at 3.., sample 3's at 7..: the same features.
    TL_CHECK(!memcmp(h + 3 * C, h + (3 * T + 7) * C, sizeof(float) * (size_t)(c.image_tokens * C)),
             "samples sharing a media row get the same features");
    free(h);
    ag_step_reset(ctx);
    gm_groundinggpt_free(m);
    ag_ctx_free(ctx);
}

static void test_errors(void) {
    gm_groundinggpt_config c = tiny_config();
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_groundinggpt *m = gm_groundinggpt_new(ctx, &c);
    gm_groundinggpt_init(m, 5, 0.02);
    static batch_data d;
    make_data(&d, &c, true, 31);
    int64_t runs = m->encoder_runs[GM_MOD_IMAGE] + m->encoder_runs[GM_MOD_VIDEO] +
                   m->encoder_runs[GM_MOD_AUDIO];

    // One image patch too few in sample 0: its end token sits one place earlier.
    int32_t saved = d.ids[2 + c.image_tokens];
    d.ids[2 + c.image_tokens] = c.tokens.end[GM_MOD_IMAGE];
    gm_groundinggpt_batch b = make_batch(ctx, &d, true);
    TL_EXPECT_FAIL(gm_groundinggpt_loss(ctx, m, &b, true, 0), "sample 0", "15 image patch tokens",
                   "16 image feature rows");
    d.ids[2 + c.image_tokens] = saved;
    // A sample that names an image row but has no image tokens.
    d.image_of[3] = 0;
    b = make_batch(ctx, &d, true);
    TL_EXPECT_FAIL(gm_groundinggpt_loss(ctx, m, &b, true, 0), "sample 3", "0 image patch tokens",
                   "16 image feature rows");
    d.image_of[3] = -1;
    TL_CHECK(m->encoder_runs[0] + m->encoder_runs[1] + m->encoder_runs[2] == runs,
             "no encoder ran before the counts were checked");
    // A media row out of range, mis-shaped media, a token outside the vocabulary, too long.
    d.audio_of[2] = 2;
    b = make_batch(ctx, &d, true);
    TL_EXPECT_FAIL(gm_groundinggpt_loss(ctx, m, &b, true, 0), "sample 2", "audio row 2 of 2");
    d.audio_of[2] = 1;
    b = make_batch(ctx, &d, true);
    b.media[GM_MOD_VIDEO] = ag_from_host(ctx, AG_U8, AG_SHAPE(3, 16, 16, 3), d.videos);
    TL_EXPECT_FAIL(gm_groundinggpt_loss(ctx, m, &b, true, 0), "videos u8[3,16,16,3]", "4 frames");
    b = make_batch(ctx, &d, true);
    b.media[GM_MOD_VIDEO] = NULL;
    TL_EXPECT_FAIL(gm_groundinggpt_loss(ctx, m, &b, true, 0), "no video tensor");
    int32_t id = d.ids[T + 40];
    d.ids[T + 40] = 2009;
    b = make_batch(ctx, &d, true);
    TL_EXPECT_FAIL(gm_groundinggpt_loss(ctx, m, &b, true, 0), "sample 1 position 40",
                   "token id 2009", "2009");
    d.ids[T + 40] = id;
    b = make_batch(ctx, &d, true);
    b.targets = NULL;
    TL_EXPECT_FAIL(gm_groundinggpt_loss(ctx, m, &b, true, 0), "needs targets");
    ag_step_reset(ctx);

    // A model without the video branch refuses video tokens.
    gm_groundinggpt_config nv = c;
    nv.has[GM_MOD_VIDEO] = false;
    gm_groundinggpt *m2 = gm_groundinggpt_new(ctx, &nv);
    b = make_batch(ctx, &d, true);
    b.media_of[GM_MOD_VIDEO] = NULL;
    TL_EXPECT_FAIL(gm_groundinggpt_loss(ctx, m2, &b, true, 0), "sample 1", "video patch tokens",
                   "no video branch");
    ag_step_reset(ctx);
    gm_groundinggpt_free(m2);

    // Inconsistent configs.
    gm_groundinggpt_config bad = c;
    bad.image_tokens = 15;
    TL_EXPECT_FAIL(gm_groundinggpt_check_config(&bad), "image tokens 15", "makes 16");
    bad = c;
    bad.tokens.end[GM_MOD_AUDIO] = bad.tokens.start[GM_MOD_AUDIO];
    TL_EXPECT_FAIL(gm_groundinggpt_check_config(&bad), "used twice");
    bad = c;
    bad.video_adapter.max_frames = 2;
    TL_EXPECT_FAIL(gm_groundinggpt_check_config(&bad), "video frames 4 exceed");
    gm_groundinggpt_free(m);
    ag_ctx_free(ctx);
}

// A bf16 model trains too (loss finite and near ln V).
static void test_bf16(void) {
    gm_groundinggpt_config c = tiny_config();
    c.dtype = AG_BF16;
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_groundinggpt *m = staged_model(ctx, &c, 7, 2);
    static batch_data d;
    make_data(&d, &c, true, 41);
    gm_groundinggpt_batch b = make_batch(ctx, &d, true);
    ag_tensor *loss = gm_groundinggpt_loss(ctx, m, &b, true, 1);
    double l = ag_item(loss, 0);
    ag_backward(ctx, loss);
    TL_CHECK(isfinite(l) && fabs(l - log(2009.0)) < 0.2, "bf16 loss %.4f", l);
    TL_CHECK(m->projector->w1->grad && any_nonzero(m->projector->w1->grad),
             "bf16 projector gradient");
    gm_groundinggpt_free(m);
    ag_ctx_free(ctx);
}

int main(void) {
    test_census();
    test_step();
    test_supervised_rows();
    test_real_token_rows();
    test_encoder_paths();
    test_errors();
    test_bf16();
    return tl_summary("test_groundinggpt");
}
