// test_adapter_init.c: the from-scratch starts of the video adapter (model/adapters.h).
//   - init_std: the Q-Former's matrices, query tokens and projection are drawn with it (sample
//     std within 10 %), LayerNorm weights 1 and biases 0 whatever it is;
//   - aligned init: frame position rows N(0, 1), query token j a copy of row j·max_frames/Q,
//     each cross-attention's key projection a copy of its query projection;
//   - what aligned init is for: in the adapter's output, query j depends most on frame
//     j·F/Q (the frame whose features moved its output row most when each frame's features are
//     nudged in turn), while a normal init at BERT's 0.02 spreads every query over all frames;
//   - aligned init with a hidden width other than the encoder width is a one-line error.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/error.h"
#include "model/adapters.h"
#include "testlib.h"

enum { C = 32, F = 8, QF = 4, Q = 8, L = 48 };

static gm_video_adapter_config config(bool aligned, double init_std) {
    gm_video_adapter_config a = gm_video_adapter_default(L);
    a.qformer.hidden = C;
    a.qformer.n_heads = 2;
    a.qformer.intermediate = 64;
    a.qformer.n_layers = 2;
    a.qformer.encoder_width = C;
    a.qformer.dropout = 0;
    a.qformer.init_std = init_std;
    a.n_queries = Q;
    a.max_frames = F;
    a.aligned_init = aligned;
    return a;
}

static float *host(const ag_tensor *t) {
    float *h = malloc(sizeof(float) * (size_t)ag_numel(t));
    ag_copy_to_host(t, h);
    return h;
}

static bool same(const ag_tensor *a, int64_t a0, const ag_tensor *b, int64_t b0, int64_t n) {
    float *ha = host(a), *hb = host(b);
    bool eq = memcmp(ha + a0, hb + b0, sizeof(float) * (size_t)n) == 0;
    free(ha);
    free(hb);
    return eq;
}

static void test_init_std(void) {
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_video_adapter_config c = config(false, 0.15);
    gm_video_adapter *m = gm_video_adapter_new(ctx, &c, "model.", AG_F32);
    gm_video_adapter_init(m, 3, 0.02);
    int mats = 0, ok = 0, norms = 0;
    for (int i = 0; i < m->n_params; i++) {
        ag_tensor *p = m->params[i];
        size_t n = strlen(p->name);
        if (n > 5 && !strcmp(p->name + n - 5, ".bias")) {
            norms += tl_sample_std(ctx, p) == 0;
        } else if (p->ndim == 1) {
            float *h = host(p);
            norms += h[0] == 1 && tl_sample_std(ctx, p) == 0;
            free(h);
        } else {
            double s = tl_sample_std(ctx, p);
            mats++;
            ok += fabs(s / 0.15 - 1) < 0.1;
            if (fabs(s / 0.15 - 1) >= 0.1) printf("  %s: std %.4f\n", p->name, s);
        }
    }
    TL_CHECK(mats > 10 && ok == mats, "init_std 0.15: %d of %d matrices drawn with it", ok, mats);
    TL_CHECK(norms == m->n_params - mats, "LayerNorm weights 1, biases 0 (%d of %d)", norms,
             m->n_params - mats);
    gm_video_adapter_free(m);
    ag_ctx_free(ctx);
}

// Row r of frames (N·F, QF, C) for video 0: frame f, query q.
static void fill_frames(float *x, uint64_t seed) {
    uint64_t s = seed;
    for (int i = 0; i < F * QF * C; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(s >> 11) / 9007199254740992.0 - 0.5);
    }
}

static ag_tensor *forward(ag_ctx *ctx, const gm_video_adapter *m, const float *x) {
    ag_tensor *frames = ag_from_host(ctx, AG_F32, AG_SHAPE(F, QF, C), x);
    return gm_video_adapter_forward(ctx, m, frames, 1, false, 0); // (1, Q, L)
}

// For each query j, the frame whose nudged features moved output row j most; returns how
// many queries picked frame j·F/Q.
static int routed(const gm_video_adapter *m, ag_ctx *ctx) {
    float x[F * QF * C], y0[Q * L], y1[Q * L];
    fill_frames(x, 11);
    ag_copy_to_host(forward(ctx, m, x), y0);
    double moved[F][Q];
    for (int f = 0; f < F; f++) {
        float xf[F * QF * C];
        memcpy(xf, x, sizeof x);
        for (int i = 0; i < QF * C; i++) xf[f * QF * C + i] += 0.5f * (float)((i % 7) - 3) / 3;
        ag_copy_to_host(forward(ctx, m, xf), y1);
        for (int j = 0; j < Q; j++) {
            double d = 0;
            for (int k = 0; k < L; k++) d += fabs((double)y1[j * L + k] - y0[j * L + k]);
            moved[f][j] = d;
        }
        ag_step_reset(ctx);
    }
    int hits = 0;
    for (int j = 0; j < Q; j++) {
        int best = 0;
        for (int f = 1; f < F; f++)
            if (moved[f][j] > moved[best][j]) best = f;
        hits += best == j * F / Q;
    }
    return hits;
}

static void test_aligned(void) {
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_video_adapter_config c = config(true, 1 / sqrt((double)C));
    gm_video_adapter *m = gm_video_adapter_new(ctx, &c, "model.", AG_F32);
    gm_video_adapter_init(m, 5, 0.02);
    double ps = tl_sample_std(ctx, m->frame_pos);
    TL_CHECK(fabs(ps - 1) < 0.1, "frame position rows N(0, 1): sample std %.3f", ps);
    bool copies = true;
    for (int j = 0; j < Q; j++)
        copies = copies && same(m->query_tokens, j * C, m->frame_pos, (j * F / Q) * C, C);
    TL_CHECK(copies, "query token j is frame position row j*F/Q");
    int tied = 0, cross = 0;
    for (int l = 0; l < c.qformer.n_layers; l++) {
        const gm_qformer_layer *ly = &m->qformer->layers[l];
        if (!ly->has_cross) continue;
        cross++;
        tied += same(ly->cross.k_w, 0, ly->cross.q_w, 0, C * C);
    }
    TL_CHECK(cross == 2 && tied == cross, "cross-attention keys start as the queries (%d of %d)",
             tied, cross);
    gm_video_adapter_free(m);
    // Over 10 seeds (80 queries; chance picks frame j for 1 in 8): aligned at 1/sqrt(C), the
    // reference's normal init at 0.02, and a normal init at 1/sqrt(C).
    const struct {
        bool aligned;
        double std;
        const char *what;
    } starts[3] = {{true, 1 / sqrt((double)C), "aligned init"},
                   {false, 0, "normal init at 0.02"},
                   {false, 1 / sqrt((double)C), "normal init at 1/sqrt(C)"}};
    int hits[3] = {0, 0, 0};
    for (int k = 0; k < 3; k++) {
        c = config(starts[k].aligned, starts[k].std);
        for (int seed = 1; seed <= 10; seed++) {
            m = gm_video_adapter_new(ctx, &c, "model.", AG_F32);
            gm_video_adapter_init(m, (uint64_t)seed, 0.02);
            hits[k] += routed(m, ctx);
            gm_video_adapter_free(m);
        }
        printf("  %s: query j depends most on frame j for %d of %d queries\n", starts[k].what,
               hits[k], 10 * Q);
    }
    TL_CHECK(hits[0] >= 60, "aligned init routes frame j to query j (%d of 80; want >= 60)",
             hits[0]);
    TL_CHECK(hits[1] <= 20 && hits[2] <= 20,
             "a normal init does not (%d and %d of 80, chance 10; want <= 20)", hits[1], hits[2]);

    c = config(true, 0);
    c.qformer.encoder_width = 2 * C;
    m = gm_video_adapter_new(ctx, &c, "model.", AG_F32);
    TL_EXPECT_FAIL(gm_video_adapter_init(m, 5, 0.02), "aligned init", "encoder width");
    gm_video_adapter_free(m);
    ag_ctx_free(ctx);
}

int main(void) {
    test_init_std();
    test_aligned();
    return tl_summary("test_adapter_init");
}
