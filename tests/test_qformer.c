// test_qformer.c: the Q-Former (model/qformer.h) and the GroundingGPT adapters
// (model/adapters.h) against the PyTorch reference in tests/fixtures/qformer/reference.safetensors
// (made by tests/qformer_reference.py, torch 1.13, transformers' Blip2QFormer semantics):
//   - qformer:   bare Q-Former with HF names, hidden 32, encoder width 24, 3 layers with
//                cross-attention in 0 and 2, 4 heads, 5 queries, a padded encoder sample;
//   - projector: mm_vision_projector Linear-GELU-Linear;
//   - frame:     ln_vision + BLIP-2 Q-Former with LAVIS names (cross-attention every 2nd layer);
//   - video:     frame position embedding + video Q-Former (every layer cross-attends) + proj;
//   - audio:     clip position embedding + audio Q-Former + proj.
// Each case loads its weights by the names the C module gives them (so the names are checked
// too), runs forward, then backward with seed r (the gradient of sum(out * r)), and compares
// the output and the gradients of the inputs and a few weights. The error of a tensor is
// max|got - want| / max(max|want|, 1e-6). Bounds: f32 outputs 1e-4, gradients 1e-3; the same
// cases again in f64 within 1e-12 (the reference is computed in f64 from the f32 weights, so
// this checks the semantics with float noise out of the way). On CUDA too when a GPU is usable.
// Also: every fixture weight is consumed, parameter counts match the config formulas, config
// and shape errors are one line, train-mode dropout is reproducible and differs from eval.
#include <math.h>
#include <stdlib.h>

#include "autograd/backend.h"
#include "autograd/error.h"
#include "autograd/safetensors.h"
#include "model/adapters.h"
#include "model/params.h"
#include "model/qformer.h"
#include "testlib.h"

static ag_st_file *fx;
// Every weight name a case loaded, to find fixture leftovers (copies: contexts come and go).
static char *used[1024];
static int n_used;

static bool was_used(const char *name) {
    for (int i = 0; i < n_used; i++)
        if (!strcmp(used[i], name)) return true;
    return false;
}
static const char *dev_name;

static int64_t meta_i(const char *cs, const char *key) {
    char name[96];
    snprintf(name, sizeof name, "%s.%s", cs, key);
    const char *v = ag_st_meta(fx, name);
    if (!v) ag_fail("fixture lacks metadata %s (rerun tests/qformer_reference.py)", name);
    return atoll(v);
}

static const ag_st_entry *entry(const char *name) {
    const ag_st_entry *e = ag_st_find(fx, name);
    if (!e) ag_fail("fixture lacks %s (rerun tests/qformer_reference.py)", name);
    return e;
}

// Loads every parameter of a module by its own name; remembers the names.
static void load_params(ag_ctx *ctx, ag_tensor *const *ps, int n) {
    for (int i = 0; i < n; i++) {
        ag_st_load_into(fx, entry(ps[i]->name), ps[i]);
        ag_set_trainable(ctx, ps[i], true);
        if (!was_used(ps[i]->name) && n_used < 1024) used[n_used++] = ag_xstrdup(ps[i]->name);
    }
}

// A step tensor holding fixture tensor name, in dtype dt (float) or the file's (u8).
static ag_tensor *load_input(ag_ctx *ctx, const char *name, ag_dtype dt, bool grad) {
    ag_tensor *t = tl_st_tensor(ctx, fx, entry(name), dt);
    if (grad) ag_set_requires_grad(t, true);
    return t;
}

// Relative error of t against fixture tensor name.
static double rel_err(const ag_tensor *t, const char *name) {
    const ag_st_entry *e = entry(name);
    int64_t n = ag_numel(t);
    if (strcmp(e->dtype, "F64") || (size_t)n * 8 != e->nbytes) {
        char d[64];
        TL_CHECK(0, "%s: %s against fixture %s of %zu bytes", name, ag_describe(t, d, sizeof d),
                 e->dtype, e->nbytes);
        return INFINITY;
    }
    void *host = malloc(ag_nbytes(t));
    ag_copy_to_host(t, host);
    double max_err = 0, scale = 1e-6;
    for (int64_t i = 0; i < n; i++) {
        double w;
        memcpy(&w, (const char *)e->data + 8 * i, 8);
        double g = t->dtype == AG_F64 ? ((double *)host)[i] : ((float *)host)[i];
        if (fabs(w) > scale) scale = fabs(w);
        double d = fabs(g - w);
        if (!(d <= max_err)) max_err = d; // NaN sticks
    }
    free(host);
    return max_err / scale;
}

typedef struct {
    double out, grad;
} tols;

static double worst_out[2], worst_grad[2]; // [f32, f64]

static void expect(const ag_tensor *t, const char *name, double tol, bool is_grad) {
    if (!t) {
        TL_CHECK(0, "%s %s: no gradient", dev_name, name);
        return;
    }
    double err = rel_err(t, name);
    int k = t->dtype == AG_F64;
    double *worst = is_grad ? &worst_grad[k] : &worst_out[k];
    if (err > *worst) *worst = err;
    TL_CHECK(err <= tol, "%s %s %s: relative error %.3g > %.3g", dev_name, ag_dtype_name(t->dtype),
             name, err, tol);
}

// Backward with seed case.<c>.r, then the output and every listed gradient.
static void check_case(ag_ctx *ctx, const char *cs, ag_tensor *out, ag_dtype dt, tols tol,
                       ag_tensor *const *inputs, const char *const *input_names, int n_in,
                       const gm_params *weights, const char *const *weight_names, int n_w) {
    char name[192];
    snprintf(name, sizeof name, "case.%s.out", cs);
    expect(out, name, tol.out, false);
    snprintf(name, sizeof name, "case.%s.r", cs);
    ag_tensor *r = load_input(ctx, name, dt, false);
    ag_backward_from(ctx, out, r);
    for (int i = 0; i < n_in; i++) {
        snprintf(name, sizeof name, "case.%s.grad.%s", cs, input_names[i]);
        expect(inputs[i]->grad, name, tol.grad, true);
    }
    for (int i = 0; i < n_w; i++) {
        snprintf(name, sizeof name, "case.%s.grad.%s", cs, weight_names[i]);
        ag_tensor *w = gm_params_find(weights, weight_names[i]);
        if (!w) ag_fail("test: no parameter %s", weight_names[i]);
        expect(w->grad, name, tol.grad, true);
    }
}

static gm_qformer_config qcfg(const char *cs, gm_qformer_names names) {
    return (gm_qformer_config){.hidden = meta_i(cs, "hidden"),
                               .n_layers = meta_i(cs, "layers"),
                               .n_heads = meta_i(cs, "heads"),
                               .intermediate = meta_i(cs, "intermediate"),
                               .encoder_width = meta_i(cs, "encoder_width"),
                               .cross_attention_frequency = meta_i(cs, "cross_freq"),
                               .eps = 1e-12,
                               .dropout = 0.1, // eval below: no effect
                               .names = names};
}

static int64_t count(ag_tensor *const *ps, int n) {
    int64_t s = 0;
    for (int i = 0; i < n; i++) s += ag_numel(ps[i]);
    return s;
}

static void case_qformer(ag_device dev, ag_dtype dt, tols tol) {
    ag_ctx *ctx = ag_ctx_new(dev);
    gm_qformer_config c = qcfg("qformer", GM_QFORMER_NAMES_HF);
    gm_qformer *m = gm_qformer_new(ctx, &c, "qformer.", dt);
    TL_CHECK(gm_qformer_config_param_count(&c) == count(m->params, m->n_params),
             "qformer param count formula");
    load_params(ctx, m->params, m->n_params);
    ag_tensor *queries =
        ag_param(ctx, "query_tokens", dt, AG_SHAPE(1, meta_i("qformer", "queries"), c.hidden));
    load_params(ctx, &queries, 1);
    gm_params *w = gm_params_new();
    gm_params_add_many(w, m->params, m->n_params);
    gm_params_add(w, queries);
    ag_tensor *enc = load_input(ctx, "case.qformer.enc", dt, true);
    ag_tensor *mask = load_input(ctx, "case.qformer.mask", dt, false);
    ag_tensor *out = gm_qformer_forward(ctx, m, queries, enc, mask, false, 0);
    const char *wn[] = {"query_tokens", "qformer.layernorm.weight",
                        "qformer.encoder.layer.0.crossattention.attention.key.weight",
                        "qformer.encoder.layer.1.intermediate_query.dense.weight",
                        "qformer.encoder.layer.2.attention.attention.value.bias"};
    const char *in_names[] = {"enc"};
    check_case(ctx, "qformer", out, dt, tol, &enc, in_names, 1, w, wn, 5);
    gm_params_free(w);
    gm_qformer_free(m);
    ag_ctx_free(ctx);
}

static void case_projector(ag_device dev, ag_dtype dt, tols tol) {
    ag_ctx *ctx = ag_ctx_new(dev);
    gm_projector_config c = {.vision_dim = meta_i("projector", "vision_dim"),
                             .llm_dim = meta_i("projector", "llm_dim")};
    gm_projector *m = gm_projector_new(ctx, &c, "model.", dt);
    TL_CHECK(gm_projector_config_param_count(&c) == count(m->params, m->n_params),
             "projector param count formula");
    load_params(ctx, m->params, m->n_params);
    gm_params *w = gm_params_new();
    gm_params_add_many(w, m->params, m->n_params);
    ag_tensor *x = load_input(ctx, "case.projector.x", dt, true);
    ag_tensor *out = gm_projector_forward(ctx, m, x);
    const char *wn[] = {"model.mm_vision_projector.0.weight", "model.mm_vision_projector.2.bias"};
    const char *in_names[] = {"x"};
    check_case(ctx, "projector", out, dt, tol, &x, in_names, 1, w, wn, 2);
    gm_params_free(w);
    gm_projector_free(m);
    ag_ctx_free(ctx);
}

static void case_frame(ag_device dev, ag_dtype dt, tols tol) {
    ag_ctx *ctx = ag_ctx_new(dev);
    gm_frame_qformer_config c = {.qformer = qcfg("frame", GM_QFORMER_NAMES_LAVIS),
                                 .n_queries = meta_i("frame", "queries"),
                                 .ln_eps = 1e-5};
    gm_frame_qformer *m = gm_frame_qformer_new(ctx, &c, "model.", dt);
    TL_CHECK(gm_frame_qformer_config_param_count(&c) == count(m->params, m->n_params),
             "frame qformer param count formula");
    load_params(ctx, m->params, m->n_params);
    gm_params *w = gm_params_new();
    gm_params_add_many(w, m->params, m->n_params);
    ag_tensor *vit = load_input(ctx, "case.frame.vit", dt, true);
    ag_tensor *out = gm_frame_qformer_forward(ctx, m, vit);
    const char *wn[] = {"model.ln_vision.weight"};
    const char *in_names[] = {"vit"};
    check_case(ctx, "frame", out, dt, tol, &vit, in_names, 1, w, wn, 1);
    gm_params_free(w);
    gm_frame_qformer_free(m);
    ag_ctx_free(ctx);
}

static void case_video(ag_device dev, ag_dtype dt, tols tol) {
    ag_ctx *ctx = ag_ctx_new(dev);
    gm_video_adapter_config c = {.qformer = qcfg("video", GM_QFORMER_NAMES_LAVIS),
                                 .n_queries = meta_i("video", "queries"),
                                 .max_frames = meta_i("video", "max_frames"),
                                 .llm_dim = meta_i("video", "llm_dim")};
    gm_video_adapter *m = gm_video_adapter_new(ctx, &c, "model.", dt);
    TL_CHECK(gm_video_adapter_config_param_count(&c) == count(m->params, m->n_params),
             "video adapter param count formula");
    load_params(ctx, m->params, m->n_params);
    gm_params *w = gm_params_new();
    gm_params_add_many(w, m->params, m->n_params);
    ag_tensor *frames = load_input(ctx, "case.video.frames", dt, true);
    ag_tensor *out = gm_video_adapter_forward(ctx, m, frames, meta_i("video", "videos"), false, 0);
    const char *wn[] = {"model.video_query_tokens", "model.video_frame_position_embedding.weight",
                        "model.llama_proj.weight",
                        "model.video_Qformer.bert.encoder.layer.1.crossattention.self.key.weight"};
    const char *in_names[] = {"frames"};
    check_case(ctx, "video", out, dt, tol, &frames, in_names, 1, w, wn, 4);
    gm_params_free(w);
    gm_video_adapter_free(m);
    ag_ctx_free(ctx);
}

static void case_audio(ag_device dev, ag_dtype dt, tols tol) {
    ag_ctx *ctx = ag_ctx_new(dev);
    gm_audio_adapter_config c = {.qformer = qcfg("audio", GM_QFORMER_NAMES_LAVIS),
                                 .n_queries = meta_i("audio", "queries"),
                                 .max_clips = meta_i("audio", "max_clips"),
                                 .llm_dim = meta_i("audio", "llm_dim")};
    gm_audio_adapter *m = gm_audio_adapter_new(ctx, &c, "model.", dt);
    TL_CHECK(gm_audio_adapter_config_param_count(&c) == count(m->params, m->n_params),
             "audio adapter param count formula");
    load_params(ctx, m->params, m->n_params);
    gm_params *w = gm_params_new();
    gm_params_add_many(w, m->params, m->n_params);
    ag_tensor *clips = load_input(ctx, "case.audio.clips", dt, true);
    ag_tensor *out = gm_audio_adapter_forward(ctx, m, clips, false, 0);
    const char *wn[] = {"model.audio_query_tokens", "model.audio_position_embedding.weight",
                        "model.audio_llama_proj.weight",
                        "model.audio_Qformer.bert.embeddings.LayerNorm.bias"};
    const char *in_names[] = {"clips"};
    check_case(ctx, "audio", out, dt, tol, &clips, in_names, 1, w, wn, 4);
    gm_params_free(w);
    gm_audio_adapter_free(m);
    ag_ctx_free(ctx);
}

static void run_all(ag_device dev, ag_dtype dt, tols tol) {
    dev_name = dev == AG_CPU ? "cpu" : "cuda";
    case_qformer(dev, dt, tol);
    case_projector(dev, dt, tol);
    case_frame(dev, dt, tol);
    case_video(dev, dt, tol);
    case_audio(dev, dt, tol);
}

// Every weight in the fixture belongs to some module (names the C side does not make would
// mean a naming difference).
static void check_fixture_consumed(void) {
    int unused = 0;
    for (int i = 0; i < fx->n; i++) {
        const char *n = fx->entries[i].name;
        if (strncmp(n, "case.", 5) && !was_used(n)) {
            unused++;
            TL_CHECK(0, "fixture weight %s is not a parameter of any module", n);
        }
    }
    TL_CHECK(unused == 0, "%d fixture weights unused", unused);
}

static void check_errors(void) {
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_qformer_config c = qcfg("qformer", GM_QFORMER_NAMES_HF);
    gm_qformer_config bad = c;
    bad.hidden = 30;
    TL_EXPECT_FAIL(gm_qformer_check_config(&bad, "video qformer"), "video qformer",
                   "hidden 30 is not a multiple of heads 4");
    bad = c;
    bad.cross_attention_frequency = 0;
    TL_EXPECT_FAIL(gm_qformer_check_config(&bad, "qformer"), "cross_attention_frequency");
    gm_qformer *m = gm_qformer_new(ctx, &c, "q.", AG_F32);
    ag_tensor *q = ag_zeros(ctx, AG_F32, AG_SHAPE(1, 5, 32));
    ag_tensor *enc = ag_zeros(ctx, AG_F32, AG_SHAPE(2, 7, 32)); // width 32, config says 24
    TL_EXPECT_FAIL(gm_qformer_forward(ctx, m, q, enc, NULL, false, 0), "qformer", "(B, N, 24)",
                   "f32[2,7,32]");
    enc = ag_zeros(ctx, AG_F32, AG_SHAPE(2, 7, 24));
    ag_tensor *q3 = ag_zeros(ctx, AG_F32, AG_SHAPE(3, 5, 32));
    TL_EXPECT_FAIL(gm_qformer_forward(ctx, m, q3, enc, NULL, false, 0), "queries");
    ag_tensor *mask = ag_zeros(ctx, AG_U8, AG_SHAPE(2, 6));
    TL_EXPECT_FAIL(gm_qformer_forward(ctx, m, q, enc, mask, false, 0), "encoder mask");
    gm_qformer_free(m);

    gm_video_adapter_config vc = {.qformer = qcfg("video", GM_QFORMER_NAMES_HF),
                                  .n_queries = 6,
                                  .max_frames = 5,
                                  .llm_dim = 20};
    gm_video_adapter *v = gm_video_adapter_new(ctx, &vc, "model.", AG_F32);
    bool found = false;
    for (int i = 0; i < v->n_params; i++)
        found |= !strcmp(v->params[i]->name, "model.video_qformer.layernorm.weight");
    TL_CHECK(found, "HF names put the video Q-Former under video_qformer.");
    ag_tensor *frames = ag_zeros(ctx, AG_F32, AG_SHAPE(12, 3, 12)); // 2 videos of 6 frames > 5
    TL_EXPECT_FAIL(gm_video_adapter_forward(ctx, v, frames, 2, false, 0), "video adapter",
                   "6 frames", "5 frame positions");
    TL_EXPECT_FAIL(gm_video_adapter_forward(ctx, v, frames, 5, false, 0), "do not split");
    gm_video_adapter_free(v);
    ag_ctx_free(ctx);
}

// Hidden dropout: train mode differs from eval, the same seed repeats, another seed differs.
static void check_dropout(void) {
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_qformer_config c = qcfg("qformer", GM_QFORMER_NAMES_HF);
    c.dropout = 0.3;
    gm_qformer *m = gm_qformer_new(ctx, &c, "q.", AG_F32);
    gm_qformer_init(m, 7, 0.2);
    tl_rng rng = {5};
    float qv[5 * 32], ev[2 * 7 * 24];
    for (size_t i = 0; i < sizeof qv / sizeof *qv; i++) qv[i] = (float)tl_normal(&rng);
    for (size_t i = 0; i < sizeof ev / sizeof *ev; i++) ev[i] = (float)tl_normal(&rng);
    ag_tensor *q = ag_from_host(ctx, AG_F32, AG_SHAPE(1, 5, 32), qv);
    ag_tensor *enc = ag_from_host(ctx, AG_F32, AG_SHAPE(2, 7, 24), ev);
    ag_tensor *outs[4] = {gm_qformer_forward(ctx, m, q, enc, NULL, false, 0),
                          gm_qformer_forward(ctx, m, q, enc, NULL, true, 11),
                          gm_qformer_forward(ctx, m, q, enc, NULL, true, 11),
                          gm_qformer_forward(ctx, m, q, enc, NULL, true, 12)};
    float h[4][2 * 5 * 32];
    for (int i = 0; i < 4; i++) ag_copy_to_host(outs[i], h[i]);
    TL_CHECK(memcmp(h[0], h[1], sizeof h[0]) != 0, "train-mode dropout changes the output");
    TL_CHECK(memcmp(h[1], h[2], sizeof h[0]) == 0, "same seed, same dropout");
    TL_CHECK(memcmp(h[1], h[3], sizeof h[0]) != 0, "another seed, another dropout");
    // (B, Q, C) queries equal to the broadcast (1, Q, C) ones give the same result.
    float qb[2 * 5 * 32];
    memcpy(qb, qv, sizeof qv);
    memcpy(qb + 5 * 32, qv, sizeof qv);
    ag_tensor *o = gm_qformer_forward(ctx, m, ag_from_host(ctx, AG_F32, AG_SHAPE(2, 5, 32), qb),
                                      enc, NULL, false, 0);
    float hb[2 * 5 * 32];
    ag_copy_to_host(o, hb);
    double d = 0;
    for (int i = 0; i < 2 * 5 * 32; i++) d = fmax(d, fabs(hb[i] - h[0][i]));
    TL_CHECK(d < 1e-6, "per-sample queries match broadcast queries (diff %g)", d);
    gm_qformer_free(m);
    ag_ctx_free(ctx);
}

int main(void) {
    char path[1024];
    tl_source_path(path, sizeof path, "tests/fixtures/qformer/reference.safetensors");
    fx = ag_st_open(path);
    run_all(AG_CPU, AG_F32, (tols){1e-4, 1e-3});
    run_all(AG_CPU, AG_F64, (tols){1e-12, 1e-12});
    if (ag_cuda_available())
        run_all(AG_CUDA, AG_F32, (tols){1e-4, 1e-3});
    else
        printf("qformer: no usable GPU, CUDA not checked\n");
    check_fixture_consumed();
    check_errors();
    check_dropout();
    printf("qformer: max relative error f32 out %.2g grad %.2g; f64 out %.2g grad %.2g\n",
           worst_out[0], worst_grad[0], worst_out[1], worst_grad[1]);
    for (int i = 0; i < n_used; i++) free(used[i]);
    ag_st_close(fx);
    return tl_summary("qformer");
}
