// test_splice.c: the multimodal splice (model/splice.h) and the parameter registry
// (model/params.h).
// Splice: a tiny Llama table, a batch of 3 samples carrying different subsets of image, video
// and audio spans (one sample two videos, one none at all); the output must equal a
// hand-built expectation exactly (feature rows where the patch tokens are, in order, the
// embedding row elsewhere); gradients of sum(out * r) reach every feature row (= r at its
// position) and the embedding rows of the other tokens (sum of r over their positions), never
// the patch embeddings. Missing or extra feature rows, a wrong encoder output, a patch run
// outside its start/end tokens are one-line errors naming sample and modality, raised before
// any encoder runs; an absent modality never calls its encoder; a text-only batch is the plain
// embedding.
// Registry: glob selection ('*' crosses dots, frozen beats trainable, a pattern matching
// nothing is an error), per-module counts, the memory estimate's bookkeeping, and the
// activation estimate against the step arena's measured peak on a tiny decoder.
#include <math.h>
#include <stdlib.h>

#include "autograd/error.h"
#include "model/adapters.h"
#include "model/llama.h"
#include "model/params.h"
#include "model/splice.h"
#include "testlib.h"

enum { V = 50, C = 8, B = 3, T = 24 };
enum { IM_P = 41, IM_S, IM_E, VI_P, VI_S, VI_E, SO_P, SO_S, SO_E };

static const gm_splice_tokens toks = {
    .patch = {IM_P, VI_P, SO_P}, .start = {IM_S, VI_S, SO_S}, .end = {IM_E, VI_E, SO_E}};

// Sample 0: text, image (3 patches), text, audio (2); sample 1: video (2), image (3), video
// (2); sample 2: text only.
static int32_t ids[B * T];
static void make_ids(void) {
    const int32_t s0[] = {1, 2, IM_S, IM_P, IM_P, IM_P, IM_E, 5, 6, SO_S, SO_P, SO_P, SO_E, 7};
    const int32_t s1[] = {3,    VI_S, VI_P, VI_P, VI_E, 9,    IM_S, IM_P, IM_P,
                          IM_P, IM_E, VI_S, VI_P, VI_P, VI_E, 8,    8};
    for (int i = 0; i < B * T; i++) ids[i] = (int32_t)(1 + i % 30); // filler text
    memcpy(ids, s0, sizeof s0);
    memcpy(ids + T, s1, sizeof s1);
}
static const int64_t rows_image[B] = {3, 3, 0}, rows_video[B] = {0, 4, 0},
                     rows_audio[B] = {2, 0, 0};

typedef struct {
    int calls;
    int64_t rows, width; // what the encoder returns: (rows, width)
    float *data;
    ag_tensor *last; // the features it returned (a leaf that requires grad)
} fake_encoder;

static ag_tensor *encode(ag_ctx *ctx, void *user) {
    fake_encoder *e = user;
    e->calls++;
    e->last = ag_from_host(ctx, AG_F32, AG_SHAPE(e->rows, e->width), e->data);
    ag_set_requires_grad(e->last, true);
    return e->last;
}

static void fill(tl_rng *r, float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)tl_normal(r);
}

static gm_llama *tiny_llama(ag_ctx *ctx) {
    gm_llama_config c = {.vocab = V,
                         .dim = C,
                         .n_layers = 1,
                         .n_heads = 2,
                         .n_kv_heads = 2,
                         .ffn = 16,
                         .max_seq = T,
                         .rope_theta = 1e4,
                         .norm_eps = 1e-5};
    gm_llama *m = gm_llama_new(ctx, &c, AG_F32);
    gm_llama_init(m, 1, 0.5);
    return m;
}

static void test_splice_values_and_grads(void) {
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_llama *llm = tiny_llama(ctx);
    ag_set_trainable(ctx, llm->embed, true);
    tl_rng rng = {42};
    float fi[6 * C], fv[4 * C], fa[2 * C];
    fill(&rng, fi, 6 * C);
    fill(&rng, fv, 4 * C);
    fill(&rng, fa, 2 * C);
    fake_encoder enc[GM_NMOD] = {{0, 6, C, fi, NULL}, {0, 4, C, fv, NULL}, {0, 2, C, fa, NULL}};
    gm_splice_source src[GM_NMOD] = {{rows_image, encode, &enc[0]},
                                     {rows_video, encode, &enc[1]},
                                     {rows_audio, encode, &enc[2]}};
    ag_tensor *out = gm_splice_embed(ctx, llm, &toks, ids, B, T, src);
    TL_CHECK(out->ndim == 3 && out->shape[0] == B && out->shape[1] == T && out->shape[2] == C,
             "splice output is (B, T, C)");
    for (int m = 0; m < GM_NMOD; m++)
        TL_CHECK(enc[m].calls == 1, "%s encoder ran %d times", gm_modality_name(m), enc[m].calls);

    // Expected: walk the tokens; the k-th patch token of modality m takes row k of its features.
    float table[V * C], got[B * T * C], want[B * T * C];
    ag_copy_to_host(llm->embed, table);
    ag_copy_to_host(out, got);
    const float *feats[GM_NMOD] = {fi, fv, fa};
    int next[GM_NMOD] = {0};
    int src_mod[B * T], src_row[B * T]; // which feature row fed each position, -1 for text
    for (int i = 0; i < B * T; i++) {
        src_mod[i] = -1;
        for (int m = 0; m < GM_NMOD; m++)
            if (ids[i] == toks.patch[m]) src_mod[i] = m, src_row[i] = next[m]++;
        const float *row = src_mod[i] < 0 ? table + ids[i] * C : feats[src_mod[i]] + src_row[i] * C;
        memcpy(want + i * C, row, C * sizeof(float));
    }
    TL_CHECK(next[0] == 6 && next[1] == 4 && next[2] == 2, "patch counts");
    TL_CHECK(memcmp(got, want, sizeof got) == 0, "spliced rows equal the hand-built expectation");

    // Gradients of sum(out * r).
    float r[B * T * C];
    fill(&rng, r, B * T * C);
    ag_backward_from(ctx, out, ag_from_host(ctx, AG_F32, AG_SHAPE(B, T, C), r));
    float want_table[V * C] = {0}, gtab[V * C];
    float want_feat[GM_NMOD][6 * C] = {{0}}, gfeat[6 * C];
    for (int i = 0; i < B * T; i++)
        for (int c = 0; c < C; c++) {
            if (src_mod[i] < 0)
                want_table[ids[i] * C + c] += r[i * C + c];
            else
                want_feat[src_mod[i]][src_row[i] * C + c] = r[i * C + c];
        }
    ag_copy_to_host(llm->embed->grad, gtab);
    double d = 0;
    for (int i = 0; i < V * C; i++) d = fmax(d, fabs(gtab[i] - want_table[i]));
    TL_CHECK(d < 1e-5, "embedding gradient: max diff %g", d);
    bool patch_rows_zero = true;
    for (int m = 0; m < GM_NMOD; m++)
        for (int c = 0; c < C; c++) patch_rows_zero &= gtab[toks.patch[m] * C + c] == 0;
    TL_CHECK(patch_rows_zero, "overwritten patch embeddings get no gradient");
    bool start_rows = false;
    for (int c = 0; c < C; c++) start_rows |= gtab[IM_S * C + c] != 0;
    TL_CHECK(start_rows, "start-token embeddings get gradient");
    for (int m = 0; m < GM_NMOD; m++) {
        TL_CHECK(enc[m].last->grad != NULL, "%s features have a gradient", gm_modality_name(m));
        if (!enc[m].last->grad) continue;
        ag_copy_to_host(enc[m].last->grad, gfeat);
        d = 0;
        for (int i = 0; i < enc[m].rows * C; i++) d = fmax(d, fabs(gfeat[i] - want_feat[m][i]));
        TL_CHECK(d == 0, "%s feature gradient equals r at its positions (diff %g)",
                 gm_modality_name(m), d);
    }
    gm_llama_free(llm);
    ag_ctx_free(ctx);
}

static void test_splice_absent_and_errors(void) {
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_llama *llm = tiny_llama(ctx);
    float f[8 * C] = {0};
    fake_encoder enc[GM_NMOD] = {{0, 6, C, f, NULL}, {0, 4, C, f, NULL}, {0, 2, C, f, NULL}};

    // Only sample 0's image tokens in the batch (video and audio absent): other encoders idle.
    int32_t one[T];
    for (int t = 0; t < T; t++) one[t] = (int32_t)(1 + t);
    const int32_t span[] = {IM_S, IM_P, IM_P, IM_P, IM_E};
    memcpy(one + 4, span, sizeof span);
    const int64_t r3[1] = {3};
    enc[0].rows = 3;
    gm_splice_source src[GM_NMOD] = {
        {r3, encode, &enc[0]}, {NULL, encode, &enc[1]}, {NULL, encode, &enc[2]}};
    gm_splice_embed(ctx, llm, &toks, one, 1, T, src);
    TL_CHECK(enc[0].calls == 1 && enc[1].calls == 0 && enc[2].calls == 0,
             "absent modalities never run their encoder (calls %d %d %d)", enc[0].calls,
             enc[1].calls, enc[2].calls);

    // Text only, no sources at all: exactly the embedding.
    int32_t text[T];
    for (int t = 0; t < T; t++) text[t] = (int32_t)(t % 40);
    ag_tensor *a = gm_splice_embed(ctx, llm, &toks, text, 1, T, NULL);
    ag_tensor *b = gm_llama_embed(ctx, llm, ag_from_host(ctx, AG_I32, AG_SHAPE(1, T), text));
    float ha[T * C], hb[T * C];
    ag_copy_to_host(a, ha);
    ag_copy_to_host(b, hb);
    TL_CHECK(memcmp(ha, hb, sizeof ha) == 0, "a text-only batch is the plain embedding");

    // Count mismatches name the sample and the modality, before any encoder runs.
    for (int m = 0; m < GM_NMOD; m++) enc[m].calls = 0;
    enc[0].rows = 6, enc[1].rows = 4, enc[2].rows = 2;
    const int64_t img_missing[B] = {3, 2, 0}, aud_extra[B] = {2, 0, 2};
    gm_splice_source s2[GM_NMOD] = {{img_missing, encode, &enc[0]},
                                    {rows_video, encode, &enc[1]},
                                    {rows_audio, encode, &enc[2]}};
    TL_EXPECT_FAIL(gm_splice_embed(ctx, llm, &toks, ids, B, T, s2), "sample 1", "3 image patch",
                   "2 image feature rows");
    s2[0].rows = rows_image;
    s2[2].rows = aud_extra;
    TL_EXPECT_FAIL(gm_splice_embed(ctx, llm, &toks, ids, B, T, s2), "sample 2", "0 audio patch",
                   "2 audio feature rows");
    s2[2].rows = NULL;
    TL_EXPECT_FAIL(gm_splice_embed(ctx, llm, &toks, ids, B, T, s2), "sample 0", "audio");
    TL_CHECK(enc[0].calls + enc[1].calls + enc[2].calls == 0,
             "no encoder ran before the counts were checked");

    // An encoder whose output does not fill its tokens.
    s2[2].rows = rows_audio;
    enc[1].rows = 5;
    TL_EXPECT_FAIL(gm_splice_embed(ctx, llm, &toks, ids, B, T, s2), "video features",
                   "4 patch tokens");
    enc[1].rows = 4;

    // A patch run not closed by its end token.
    int32_t broken[B * T];
    memcpy(broken, ids, sizeof broken);
    broken[T + 4] = 9; // sample 1's first <vi_end>
    TL_EXPECT_FAIL(gm_splice_embed(ctx, llm, &toks, broken, B, T, s2), "sample 1", "video", "2..3");
    gm_llama_free(llm);
    ag_ctx_free(ctx);
}

static void test_params(void) {
    TL_CHECK(gm_glob_match("model.layers.*", "model.layers.0.mlp.up_proj.weight"),
             "'*' matches across dots");
    TL_CHECK(!gm_glob_match("model.layers.*", "model.layers"), "a pattern matches whole names");
    TL_CHECK(gm_glob_match("*.mm_vision_projector.*", "model.mm_vision_projector.0.weight"),
             "leading '*'");
    TL_CHECK(!gm_glob_match("lm_head.*", "model.lm_head_x.weight"), "anchored at the start");
    TL_CHECK(gm_glob_match("model.layers.[01].*", "model.layers.1.self_attn.q_proj.weight") &&
                 !gm_glob_match("model.layers.[01].*", "model.layers.2.self_attn.q_proj.weight"),
             "sets");

    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_llama *llm = tiny_llama(ctx);
    gm_projector_config pc = {.vision_dim = 6, .llm_dim = C};
    gm_projector *proj = gm_projector_new(ctx, &pc, "model.", AG_F32);
    gm_video_adapter_config vc = {.qformer = {.hidden = 8,
                                              .n_layers = 2,
                                              .n_heads = 2,
                                              .intermediate = 16,
                                              .encoder_width = 8,
                                              .cross_attention_frequency = 1,
                                              .eps = 1e-12,
                                              .dropout = 0.1,
                                              .names = GM_QFORMER_NAMES_LAVIS},
                                  .n_queries = 4,
                                  .max_frames = 3,
                                  .llm_dim = C};
    gm_video_adapter *va = gm_video_adapter_new(ctx, &vc, "model.", AG_F32);
    gm_params *reg = gm_params_new();
    gm_params_add_many(reg, llm->params, llm->n_params);
    gm_params_add_many(reg, proj->params, proj->n_params);
    gm_params_add_many(reg, va->params, va->n_params);
    TL_EXPECT_FAIL(gm_params_add(reg, llm->embed), "model.embed_tokens.weight", "twice");
    TL_CHECK(gm_params_find(reg, "model.video_Qformer.bert.embeddings.LayerNorm.weight") != NULL,
             "registry lookup by name");

    int64_t n_llm = gm_llama_param_count(llm);
    int64_t n_proj = gm_projector_config_param_count(&pc);
    int64_t n_vid = gm_video_adapter_config_param_count(&vc);
    TL_CHECK(gm_llama_config_param_count(&llm->cfg) == n_llm, "llama count formula");
    TL_CHECK(gm_params_total(reg) == n_llm + n_proj + n_vid, "total count");

    // Stage 1: adapters only.
    const char *s1[] = {"*.mm_vision_projector.*", "model.video_*", "model.llama_proj.*"};
    gm_param_selection st1 = {s1, 3, NULL, 0};
    TL_CHECK(gm_params_count_selected(reg, &st1) == n_proj + n_vid, "stage-1 selection count");
    gm_params_apply(ctx, reg, &st1);
    TL_CHECK(gm_params_trainable(reg) == n_proj + n_vid, "stage-1 trainable");
    TL_CHECK(!llm->embed->requires_grad && proj->w1->requires_grad && va->frame_pos->requires_grad,
             "stage-1 flags");

    // Stage 2: everything but the video Q-Former's first layer (frozen beats trainable).
    const char *s2[] = {"*"}, *f2[] = {"model.video_Qformer.bert.encoder.layer.0.*"};
    gm_param_selection st2 = {s2, 1, f2, 1};
    gm_params_apply(ctx, reg, &st2);
    int64_t layer0 = 0;
    for (int i = 0; i < reg->n; i++)
        if (gm_glob_match(f2[0], reg->tensors[i]->name)) layer0 += ag_numel(reg->tensors[i]);
    TL_CHECK(layer0 > 0 && gm_params_trainable(reg) == gm_params_total(reg) - layer0,
             "stage-2 trainable excludes the frozen layer");

    gm_param_group g[16];
    int ng = gm_params_groups(reg, g, 16);
    const char *want[] = {"model.embed_tokens",
                          "model.layers",
                          "model.norm",
                          "lm_head",
                          "model.mm_vision_projector",
                          "model.video_query_tokens",
                          "model.video_frame_position_embedding",
                          "model.llama_proj",
                          "model.video_Qformer"};
    TL_CHECK(ng == 9, "9 top-level modules, got %d", ng);
    for (int i = 0; i < ng && i < 9; i++)
        TL_CHECK(!strcmp(g[i].name, want[i]), "group %d is %s, want %s", i, g[i].name, want[i]);
    if (ng == 9) {
        TL_CHECK(g[8].trainable == g[8].total - layer0, "Q-Former group trainable count");
        TL_CHECK(g[1].trainable == g[1].total, "layers group trainable");
    }

    const char *typo[] = {"model.mm_projector.*"};
    gm_param_selection bad = {typo, 1, NULL, 0};
    TL_EXPECT_FAIL(gm_params_apply(ctx, reg, &bad), "trainable pattern 'model.mm_projector.*'",
                   "matches no parameter");

    // Memory bookkeeping: f32 weights 4 B, gradients 4 B, AdamW 8 B per trainable element;
    // bf16 weights add an f32 master copy.
    gm_memory mem = gm_params_memory(reg, NULL, 0, 0);
    int64_t tot = gm_params_total(reg), tr = gm_params_trainable(reg);
    TL_CHECK(mem.weights == 4 * tot && mem.grads == 4 * tr && mem.optimizer == 8 * tr &&
                 mem.activations == 0 && mem.total == mem.weights + mem.grads + mem.optimizer,
             "memory from the registry");
    gm_memory bf = gm_memory_estimate(1000, 100, AG_BF16, 5);
    TL_CHECK(bf.weights == 2000 && bf.grads == 200 && bf.optimizer == 1200 && bf.total == 3405,
             "bf16 memory estimate");

    gm_video_adapter_free(va);
    gm_projector_free(proj);
    gm_llama_free(llm);
    gm_params_free(reg);
    ag_ctx_free(ctx);
}

// The activation estimate against what a forward/backward of a tiny decoder really takes.
static void test_activation_estimate(void) {
    gm_llama_config c = {.vocab = 64,
                         .dim = 32,
                         .n_layers = 2,
                         .n_heads = 4,
                         .n_kv_heads = 2,
                         .ffn = 64,
                         .max_seq = 64,
                         .rope_theta = 1e4,
                         .norm_eps = 1e-5};
    enum { BB = 2, TT = 64 };
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_llama *m = gm_llama_new(ctx, &c, AG_F32);
    gm_llama_init(m, 3, 0.02);
    for (int i = 0; i < m->n_params; i++) ag_set_trainable(ctx, m->params[i], true);
    int32_t x[BB * TT], y[BB * TT];
    for (int i = 0; i < BB * TT; i++) x[i] = i % 64, y[i] = (i * 7) % 64;
    ag_tensor *loss = gm_llama_loss(ctx, m, ag_from_host(ctx, AG_I32, AG_SHAPE(BB, TT), x),
                                    ag_from_host(ctx, AG_I32, AG_SHAPE(BB, TT), y));
    ag_backward(ctx, loss);
    double measured = (double)ag_step_peak_bytes(ctx);
    double est = (double)gm_llama_activation_bytes(&c, AG_F32, BB, TT);
    TL_CHECK(est > 0.8 * measured && est < 1.25 * measured,
             "activation estimate %.0f bytes vs measured step peak %.0f", est, measured);
    printf("splice: activation estimate %.0f bytes, measured step peak %.0f (ratio %.2f)\n", est,
           measured, est / measured);
    gm_llama_free(m);
    ag_ctx_free(ctx);
}

int main(void) {
    make_ids();
    test_splice_values_and_grads();
    test_splice_absent_and_errors();
    test_params();
    test_activation_estimate();
    return tl_summary("splice");
}
