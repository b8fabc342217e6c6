// test_engine.c: the autograd engine's contracts beyond single ops: the tape records only
// what needs gradients; frozen parameters get none and cost no backward work; no-grad mode
// records nothing; gradients accumulate across backward passes until zeroed; the step arena
// reaches a steady state with no system allocations; bf16 rounding; AdamW against a
// float64 re-implementation of PyTorch's update rule; host f64 copies and cache writes
// (ag_write_slice) against plain index arithmetic; ag_xgrow's capacities and copies.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/error.h"
#include "autograd/optim.h"
#include "data/copy_task.h"
#include "model/init.h"
#include "model/llama.h"
#include "llama_util.h"
#include "testlib.h"

static ag_tensor *filled(ag_ctx *ctx, const char *name, ag_shape s, uint64_t seed) {
    ag_tensor *t = ag_param(ctx, name, AG_F32, s);
    gm_init_normal(t, seed, 0, 1.0);
    return t;
}

static void test_frozen_and_no_grad(void) {
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    ag_tensor *w = filled(ctx, "w", AG_SHAPE(5, 3), 1); // frozen
    ag_tensor *x = filled(ctx, "x", AG_SHAPE(4, 3), 2);
    ag_tensor *y = ag_linear(ctx, x, w, NULL);
    TL_CHECK(ctx->tape == NULL && !y->requires_grad, "all-frozen op recorded a tape node");

    ag_set_trainable(ctx, x, true);
    y = ag_linear(ctx, x, w, NULL);
    TL_CHECK(ctx->tape != NULL && y->requires_grad, "op on a trainable input did not record");
    ag_backward(ctx, ag_mean_all(ctx, y));
    TL_CHECK(w->grad == NULL, "frozen weight received a gradient");
    TL_CHECK(x->grad != NULL, "trainable input has no gradient");
    // d mean(x w^T) / dx[i,k] = sum_j w[j,k] / (4*5)
    float hw[15], hg[12];
    ag_copy_to_host(w, hw);
    ag_copy_to_host(x->grad, hg);
    double max_err = 0;
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 3; k++) {
            double want = 0;
            for (int j = 0; j < 5; j++) want += hw[j * 3 + k];
            max_err = fmax(max_err, fabs(hg[i * 3 + k] - want / 20.0));
        }
    TL_CHECK(max_err < 1e-6, "input gradient through frozen weight off by %g", max_err);
    ag_step_reset(ctx);

    ag_no_grad_begin(ctx);
    y = ag_linear(ctx, x, w, NULL);
    TL_CHECK(ctx->tape == NULL && !y->requires_grad, "no-grad mode recorded a node");
    ag_no_grad_end(ctx);
    TL_CHECK(ag_grad_enabled(ctx), "grad mode not restored");
    ag_ctx_free(ctx);
}

static void test_accumulation_and_reuse(void) {
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    ag_tensor *x = filled(ctx, "x", AG_SHAPE(7), 3);
    ag_set_trainable(ctx, x, true);
    float hx[7], hg[7];
    ag_copy_to_host(x, hx);
    for (int pass = 1; pass <= 2; pass++) {
        // sum(x * x): x used twice, so both uses must add up: 2x per pass
        ag_tensor *y = ag_sum(ctx, ag_mul(ctx, x, x), 0);
        ag_backward(ctx, y);
        ag_step_reset(ctx);
        ag_copy_to_host(x->grad, hg);
        double err = 0;
        for (int i = 0; i < 7; i++) err = fmax(err, fabs(hg[i] - 2.0 * pass * hx[i]));
        TL_CHECK(err < 1e-5, "after %d passes gradient off by %g", pass, err);
    }
    ag_zero_grad(ctx, &x, 1);
    ag_copy_to_host(x->grad, hg);
    double s = 0;
    for (int i = 0; i < 7; i++) s += fabs(hg[i]);
    TL_CHECK(s == 0, "zero_grad left %g", s);
    ag_ctx_free(ctx);
}

static void test_arena_steady_state(void) {
    gm_llama_config c = lu_tiny_llama_config();
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    // small chunks so that the first step needs several
    ctx->step_data.min_chunk = 4096;
    ctx->step_meta.min_chunk = 4096;
    gm_llama *m = gm_llama_new(ctx, &c, AG_F32);
    gm_llama_init(m, 1, 0.02);
    for (int i = 0; i < m->n_params; i++) ag_set_trainable(ctx, m->params[i], true);
    int64_t n = 4, T = ds_copy_seq_len(n);
    int32_t ids[2 * 9], tg[2 * 9];
    for (int b = 0; b < 2; b++) ds_copy_sample(5, b, n, c.vocab, ids + b * T, tg + b * T);
    size_t allocs_after[4];
    for (int step = 0; step < 4; step++) {
        ag_tensor *ti = ag_from_host(ctx, AG_I32, AG_SHAPE(2, T), ids);
        ag_tensor *tt = ag_from_host(ctx, AG_I32, AG_SHAPE(2, T), tg);
        ag_backward(ctx, gm_llama_loss(ctx, m, ti, tt));
        ag_step_reset(ctx);
        allocs_after[step] = ctx->step_data.n_system_allocs + ctx->step_meta.n_system_allocs;
    }
    TL_CHECK(allocs_after[0] > 2, "first step should have needed several chunks (%zu)",
             allocs_after[0]);
    TL_CHECK(allocs_after[2] == allocs_after[1] && allocs_after[3] == allocs_after[1],
             "steps after the second allocated from the system (%zu, %zu, %zu)", allocs_after[1],
             allocs_after[2], allocs_after[3]);
    TL_CHECK(ag_step_peak_bytes(ctx) > 0 && ctx->step_data.used == 0, "peak %zu used %zu",
             ag_step_peak_bytes(ctx), ctx->step_data.used);
    gm_llama_free(m);
    ag_ctx_free(ctx);
}

static void test_bf16(void) {
    // round to nearest even at 8 bits of mantissa: 1 + 2^-8 is a tie -> 1; 1 + 3*2^-8 -> 1 + 2^-6
    TL_CHECK(ag_bf16_to_f32(ag_f32_to_bf16(1.0f + 0x1p-8f)) == 1.0f, "tie not to even");
    TL_CHECK(ag_bf16_to_f32(ag_f32_to_bf16(1.0f + 3 * 0x1p-8f)) == 1.0f + 0x1p-6f, "tie up");
    TL_CHECK(ag_bf16_to_f32(ag_f32_to_bf16(1.0f + 0x1p-7f)) == 1.0f + 0x1p-7f, "exact value");
    TL_CHECK(isnan(ag_bf16_to_f32(ag_f32_to_bf16(NAN))), "NaN lost");
    TL_CHECK(isinf(ag_bf16_to_f32(ag_f32_to_bf16(INFINITY))), "inf lost");
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    ag_tensor *x = filled(ctx, "x", AG_SHAPE(3, 5), 9);
    ag_tensor *b = ag_cast(ctx, x, AG_BF16);
    TL_CHECK(b->dtype == AG_BF16 && ag_nbytes(b) == 30, "bf16 storage is %zu bytes", ag_nbytes(b));
    ag_tensor *back = ag_cast(ctx, b, AG_F32);
    double err = 0;
    for (int i = 0; i < 15; i++)
        err = fmax(err, fabs(ag_item(back, i) - ag_item(x, i)) / fmax(fabs(ag_item(x, i)), 1e-3));
    TL_CHECK(err <= 0x1p-8, "bf16 round trip relative error %g", err);
    ag_ctx_free(ctx);
}

// PyTorch's AdamW (torch/optim/adamw.py, non-amsgrad) in float64.
static void reference_adamw(double *p, double *m, double *v, const double *g, int n, int step,
                            double lr, double b1, double b2, double eps, double wd) {
    for (int i = 0; i < n; i++) {
        p[i] *= 1 - lr * wd;
        m[i] = b1 * m[i] + (1 - b1) * g[i];
        v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
        double mhat = m[i] / (1 - pow(b1, step)), vhat = v[i] / (1 - pow(b2, step));
        p[i] -= lr * mhat / (sqrt(vhat) + eps);
    }
}

static void test_adamw(void) {
    enum { N = 11 };
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    ag_tensor *p = filled(ctx, "p", AG_SHAPE(N), 4), *q = filled(ctx, "q", AG_SHAPE(N), 5);
    ag_set_trainable(ctx, p, true);
    ag_set_trainable(ctx, q, true);
    ag_tensor *params[2] = {p, q};
    bool decay[2] = {true, false};
    ag_adamw_config cfg = {0.9, 0.95, 1e-8, 0.1};
    ag_adamw *opt = ag_adamw_new(ctx, params, 2, decay, cfg);
    double rp[2][N], rm[2][N] = {{0}}, rv[2][N] = {{0}};
    for (int j = 0; j < 2; j++)
        for (int i = 0; i < N; i++) rp[j][i] = ag_item(params[j], i);
    tl_rng rng = {42};
    double err = 0;
    for (int step = 1; step <= 5; step++) {
        double lr = 1e-2 * step;
        for (int j = 0; j < 2; j++) {
            float g[N];
            double gd[N];
            for (int i = 0; i < N; i++) gd[i] = g[i] = (float)tl_normal(&rng);
            ag_copy_from_host(params[j]->grad, g);
            reference_adamw(rp[j], rm[j], rv[j], gd, N, step, lr, cfg.beta1, cfg.beta2, cfg.eps,
                            decay[j] ? cfg.weight_decay : 0);
        }
        ag_adamw_step(opt, lr);
        for (int j = 0; j < 2; j++)
            for (int i = 0; i < N; i++) err = fmax(err, fabs(ag_item(params[j], i) - rp[j][i]));
    }
    TL_CHECK(err < 1e-5, "AdamW differs from the reference by %g", err);
    ag_adamw_free(opt);

    // clipping: norm reported before, scaled to max_norm after
    float g[N];
    for (int i = 0; i < N; i++) g[i] = (float)(i + 1);
    ag_copy_from_host(p->grad, g);
    ag_zero_grad(ctx, &q, 1);
    double want = 0;
    for (int i = 0; i < N; i++) want += (double)(i + 1) * (i + 1);
    want = sqrt(want);
    double norm = ag_clip_grad_norm(params, 2, 1.0);
    TL_CHECK(fabs(norm - want) < 1e-4 * want, "grad norm %g, want %g", norm, want);
    TL_CHECK(fabs(ag_grad_norm(params, 2) - 1.0) < 1e-5, "clipped norm %g",
             ag_grad_norm(params, 2));
    ag_ctx_free(ctx);
}

// f64 in and out through bf16 rounds as ag_f32_to_bf16 does; ag_write_slice puts each
// (b, t) row of src at (b, start + t) and leaves every other row alone.
static void test_host_copies_and_write_slice(void) {
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    double in[6] = {1.0 + 0x1p-8, -2.5, 1e-3, 3.0, 1.0 + 3 * 0x1p-8, 0}, out[6];
    ag_tensor *b = ag_param(ctx, "b", AG_BF16, AG_SHAPE(6));
    ag_copy_from_host_f64(b, in);
    ag_copy_to_host_f64(b, out);
    for (int i = 0; i < 6; i++)
        TL_CHECK(out[i] == ag_bf16_to_f32(ag_f32_to_bf16((float)in[i])), "f64 %d: %g -> %g", i,
                 in[i], out[i]);
    const int64_t B = 2, L = 5, T = 2, R = 3; // cache (B, L, R), src (B, T, R) at start 2
    ag_tensor *cache = ag_param(ctx, "cache", AG_F32, AG_SHAPE(B, L, R));
    float src[2 * 2 * 3], got[2 * 5 * 3];
    for (int i = 0; i < B * T * R; i++) src[i] = (float)(i + 1);
    ag_write_slice(cache, 1, 2, ag_from_host(ctx, AG_F32, AG_SHAPE(B, T, R), src));
    ag_copy_to_host(cache, got);
    int bad = 0;
    for (int64_t bi = 0; bi < B; bi++)
        for (int64_t l = 0; l < L; l++)
            for (int64_t r = 0; r < R; r++) {
                float want = l >= 2 && l < 2 + T ? src[(bi * T + l - 2) * R + r] : 0.0f;
                bad += got[(bi * L + l) * R + r] != want;
            }
    TL_CHECK(bad == 0, "write_slice: %d elements wrong", bad);
    TL_EXPECT_FAIL(ag_write_slice(cache, 1, 4, ag_from_host(ctx, AG_F32, AG_SHAPE(B, T, R), src)),
                   "write_slice", "does not fit", "at 4 along dim 1");
    TL_EXPECT_FAIL(ag_copy_from_host_f64(ag_param(ctx, "ids", AG_I32, AG_SHAPE(2)), in),
                   "copy_from_host_f64", "'ids'", "not a float tensor");
    ag_ctx_free(ctx);
}

// ag_xgrow starts at 8 and doubles until need fits; a need that fits changes nothing; the
// contents move with the array.
static void test_xgrow(void) {
    int64_t cap = 0;
    int32_t *v = ag_xgrow(NULL, &cap, 1, sizeof *v, "test");
    TL_CHECK(v && cap == 8, "need 1 from 0: cap %lld, want 8", (long long)cap);
    for (int i = 0; i < 8; i++) v[i] = i;
    for (int64_t need = 0; need <= 8; need += 4)
        TL_CHECK(ag_xgrow(v, &cap, need, sizeof *v, "test") == v && cap == 8,
                 "need %lld at cap 8 moved the array or changed cap to %lld", (long long)need,
                 (long long)cap);
    v = ag_xgrow(v, &cap, 9, sizeof *v, "test");
    TL_CHECK(cap == 16, "need 9 from 8: cap %lld, want 16", (long long)cap);
    v[8] = 8;
    int bad = 0;
    for (int i = 0; i < 9; i++) bad += v[i] != i;
    TL_CHECK(bad == 0, "8 -> 16: %d of 9 elements lost", bad);
    free(v);

    int64_t cap8 = 0;
    int32_t *w = ag_xgrow(NULL, &cap8, 8, sizeof *w, "test");
    for (int i = 0; i < 8; i++) w[i] = 100 + i;
    w = ag_xgrow(w, &cap8, 1000, sizeof *w, "test");
    TL_CHECK(cap8 == 1024, "need 1000 from 8: cap %lld, want 1024", (long long)cap8);
    w[999] = 1; // all of need is usable (ASan would see a short block)
    bad = 0;
    for (int i = 0; i < 8; i++) bad += w[i] != 100 + i;
    TL_CHECK(bad == 0, "8 -> 1024: %d of 8 elements lost", bad);
    free(w);
}

int main(void) {
    test_frozen_and_no_grad();
    test_accumulation_and_reuse();
    test_arena_steady_state();
    test_bf16();
    test_adamw();
    test_host_copies_and_write_slice();
    test_xgrow();
    return tl_summary("test_engine");
}
