// test_gradcheck.c: gradient check of every differentiable op in autograd/ops.h against
// central finite differences, in float64 on the CPU.
//
// For each case and each of 3 seeds: random inputs (f64, odd shapes), a random seed tensor R
// of the output's shape; the analytic gradient of L = sum(out * R) comes from
// ag_backward_from(ctx, out, R); the numeric one from (L(x + h) - L(x - h)) / 2h with
// h = 1e-6, recomputing the forward without a tape after resetting the step. Every element
// must satisfy |analytic - numeric| <= 1e-5 + 1e-3 |numeric|. Inputs are a mix of trainable
// parameters (ag_param + ag_set_trainable, gradients in the pool) and step leaves (ag_new +
// ag_set_requires_grad), as the model uses them; for parameters it also checks that a second
// step accumulates the same gradient again and that ag_zero_grad clears it.
//
// ag_cast is linear, so f64 -> f64 is checked by differences and the f64 -> f32/bf16 -> f64
// round trips are checked exactly (forward = rounded x, gradient = rounded R): differences of
// a function rounded to f32 would measure the rounding, not the gradient.
// One line per case prints the largest error seen.
#include <math.h>
#include <stdlib.h>

#include "testlib.h"

#define N_SEEDS 3
#define MAX_IN  4
#define STEP_H  1e-6
#define TOL_ABS 1e-5
#define TOL_REL 1e-3

typedef ag_tensor *(*forward_fn)(ag_ctx *ctx, ag_tensor *const *x);

typedef struct {
    const char *name;
    forward_fn fwd;
    int n_in;
    ag_shape shape[MAX_IN];
    unsigned params; // bit i: input i is a trainable parameter, else a step leaf
    double scale;    // inputs ~ N(0, scale^2); 0 means 1
} gc_case;

// Small constant index tensors made inside forward functions (the step owns them).
static ag_tensor *i32_tensor(ag_ctx *ctx, ag_shape s, const int32_t *v) {
    ag_tensor *t = ag_new(ctx, AG_I32, s);
    ag_copy_from_host(t, v);
    return t;
}

static ag_tensor *u8_tensor(ag_ctx *ctx, ag_shape s, const uint8_t *v) {
    ag_tensor *t = ag_new(ctx, AG_U8, s);
    ag_copy_from_host(t, v);
    return t;
}

// Forward functions ----------------------------------------------------------------------
// Views and copies
static ag_tensor *f_reshape(ag_ctx *c, ag_tensor *const *x) {
    return ag_reshape(c, x[0], AG_SHAPE(5, -1));
}
static ag_tensor *f_permute(ag_ctx *c, ag_tensor *const *x) {
    return ag_permute(c, x[0], AG_SHAPE(2, 0, 1));
}
static ag_tensor *f_transpose(ag_ctx *c, ag_tensor *const *x) {
    return ag_transpose(c, x[0], 0, 2);
}
static ag_tensor *f_slice(ag_ctx *c, ag_tensor *const *x) {
    return ag_slice(c, x[0], 1, 2, 6);
}
// a slice of a permuted view: the layouts compose
static ag_tensor *f_slice_of_view(ag_ctx *c, ag_tensor *const *x) {
    return ag_slice(c, ag_transpose(c, x[0], 0, 1), 2, 1, 4);
}
static ag_tensor *f_split(ag_ctx *c, ag_tensor *const *x) {
    ag_tensor *p[3];
    ag_split(c, x[0], 1, 3, (const int64_t[]){5, 3, 5}, p);
    ag_tensor *parts[3] = {ag_contiguous(c, p[2]), ag_contiguous(c, p[1]), ag_contiguous(c, p[0])};
    return ag_concat(c, 3, parts, 1);
}
static ag_tensor *f_contiguous(ag_ctx *c, ag_tensor *const *x) {
    return ag_contiguous(c, ag_transpose(c, x[0], 0, 1));
}
static ag_tensor *f_contiguous_noop(ag_ctx *c, ag_tensor *const *x) {
    return ag_contiguous(c, x[0]);
}
static ag_tensor *f_concat_mid(ag_ctx *c, ag_tensor *const *x) {
    return ag_concat(c, 3, x, 1);
}
static ag_tensor *f_concat_last(ag_ctx *c, ag_tensor *const *x) {
    return ag_concat(c, 2, x, -1);
}
static ag_tensor *f_concat_first(ag_ctx *c, ag_tensor *const *x) {
    return ag_concat(c, 2, x, 0);
}
static ag_tensor *f_cast_same(ag_ctx *c, ag_tensor *const *x) {
    return ag_cast(c, x[0], AG_F64);
}

// Elementwise
static ag_tensor *f_add(ag_ctx *c, ag_tensor *const *x) {
    return ag_add(c, x[0], x[1]);
}
static ag_tensor *f_sub(ag_ctx *c, ag_tensor *const *x) {
    return ag_sub(c, x[0], x[1]);
}
static ag_tensor *f_mul(ag_ctx *c, ag_tensor *const *x) {
    return ag_mul(c, x[0], x[1]);
}
static ag_tensor *f_mul_self(ag_ctx *c, ag_tensor *const *x) {
    return ag_mul(c, x[0], x[0]);
}
// x feeds two ops: the gradients of both paths add up
static ag_tensor *f_fanout(ag_ctx *c, ag_tensor *const *x) {
    return ag_add(c, ag_silu(c, x[0]), ag_mul(c, x[0], x[1]));
}
static ag_tensor *f_scale(ag_ctx *c, ag_tensor *const *x) {
    return ag_scale(c, x[0], -1.7);
}
static ag_tensor *f_silu(ag_ctx *c, ag_tensor *const *x) {
    return ag_silu(c, x[0]);
}
static ag_tensor *f_gelu(ag_ctx *c, ag_tensor *const *x) {
    return ag_gelu(c, x[0]);
}
static ag_tensor *f_gelu_tanh(ag_ctx *c, ag_tensor *const *x) {
    return ag_gelu_tanh(c, x[0]);
}
static ag_tensor *f_quick_gelu(ag_ctx *c, ag_tensor *const *x) {
    return ag_quick_gelu(c, x[0]);
}
static ag_tensor *f_swiglu(ag_ctx *c, ag_tensor *const *x) {
    return ag_swiglu(c, x[0], x[1]);
}
static ag_tensor *f_dropout(ag_ctx *c, ag_tensor *const *x) {
    return ag_dropout(c, x[0], 0.3, 42); // fixed seed: a fixed mask, so differences are valid
}

// Linear algebra
static ag_tensor *f_mm_nn(ag_ctx *c, ag_tensor *const *x) {
    return ag_matmul(c, x[0], x[1], false, false);
}
static ag_tensor *f_mm_tn(ag_ctx *c, ag_tensor *const *x) {
    return ag_matmul(c, x[0], x[1], true, false);
}
static ag_tensor *f_mm_nt(ag_ctx *c, ag_tensor *const *x) {
    return ag_matmul(c, x[0], x[1], false, true);
}
static ag_tensor *f_mm_tt(ag_ctx *c, ag_tensor *const *x) {
    return ag_matmul(c, x[0], x[1], true, true);
}
static ag_tensor *f_linear(ag_ctx *c, ag_tensor *const *x) {
    return ag_linear(c, x[0], x[1], x[2]);
}
static ag_tensor *f_linear_nobias(ag_ctx *c, ag_tensor *const *x) {
    return ag_linear(c, x[0], x[1], NULL);
}

// Normalisation, reductions
static ag_tensor *f_rmsnorm(ag_ctx *c, ag_tensor *const *x) {
    return ag_rmsnorm(c, x[0], x[1], 1e-6);
}
static ag_tensor *f_layernorm(ag_ctx *c, ag_tensor *const *x) {
    return ag_layernorm(c, x[0], x[1], x[2], 1e-5);
}
static ag_tensor *f_l2_normalize(ag_ctx *c, ag_tensor *const *x) {
    return ag_l2_normalize(c, x[0], 1e-12);
}
static ag_tensor *f_softmax(ag_ctx *c, ag_tensor *const *x) {
    return ag_softmax(c, x[0]);
}
static ag_tensor *f_sum0(ag_ctx *c, ag_tensor *const *x) {
    return ag_sum(c, x[0], 0);
}
static ag_tensor *f_sum1(ag_ctx *c, ag_tensor *const *x) {
    return ag_sum(c, x[0], 1);
}
static ag_tensor *f_sum_last(ag_ctx *c, ag_tensor *const *x) {
    return ag_sum(c, x[0], -1);
}
static ag_tensor *f_mean1(ag_ctx *c, ag_tensor *const *x) {
    return ag_mean(c, x[0], 1);
}
static ag_tensor *f_mean_last(ag_ctx *c, ag_tensor *const *x) {
    return ag_mean(c, x[0], -1);
}
static ag_tensor *f_mean_all(ag_ctx *c, ag_tensor *const *x) {
    return ag_mean_all(c, x[0]);
}

// Transformer pieces
static ag_tensor *f_rope_t(ag_ctx *c, ag_tensor *const *x) {
    static const int32_t pos[5] = {3, 1, 4, 1, 5};
    return ag_rope(c, x[0], i32_tensor(c, AG_SHAPE(5), pos), 10000.0);
}
static ag_tensor *f_rope_bt(ag_ctx *c, ag_tensor *const *x) {
    static const int32_t pos[10] = {0, 1, 2, 3, 4, 7, 9, 11, 30, 31};
    return ag_rope(c, x[0], i32_tensor(c, AG_SHAPE(2, 5), pos), 100.0);
}
// heads 1..3 of a (2,5,5,6) tensor: strided over b, t and h
static ag_tensor *f_rope_strided(ag_ctx *c, ag_tensor *const *x) {
    static const int32_t pos[5] = {2, 3, 4, 5, 6};
    return ag_rope(c, ag_slice(c, x[0], 2, 1, 4), i32_tensor(c, AG_SHAPE(5), pos), 10000.0);
}

#define ATTN_SCALE 0.4472135954999579 // 1/sqrt(5): head dim 5 below
static ag_tensor *f_attn_causal(ag_ctx *c, ag_tensor *const *x) {
    return ag_attention(c, x[0], x[1], x[2], NULL, true, ATTN_SCALE);
}
static ag_tensor *f_attn_full(ag_ctx *c, ag_tensor *const *x) {
    return ag_attention(c, x[0], x[1], x[2], NULL, false, ATTN_SCALE);
}
// keys (B=2, Tk=6); batch 1 pads keys 0 and 4
static ag_tensor *f_attn_mask(ag_ctx *c, ag_tensor *const *x) {
    static const uint8_t mask[12] = {1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1};
    return ag_attention(c, x[0], x[1], x[2], u8_tensor(c, AG_SHAPE(2, 6), mask), false, ATTN_SCALE);
}
// causal with a padded first key in batch 1: its first query sees no key (zeros)
static ag_tensor *f_attn_mask_causal(ag_ctx *c, ag_tensor *const *x) {
    static const uint8_t mask[10] = {1, 1, 1, 1, 1, 0, 1, 1, 0, 1};
    return ag_attention(c, x[0], x[1], x[2], u8_tensor(c, AG_SHAPE(2, 5), mask), true, ATTN_SCALE);
}
// q, k and v split from one fused (B, T, H, 3D) projection along the last dim
static ag_tensor *f_attn_fused(ag_ctx *c, ag_tensor *const *x) {
    ag_tensor *qkv[3];
    ag_split(c, x[0], 3, 3, (const int64_t[]){5, 5, 5}, qkv);
    return ag_attention(c, qkv[0], qkv[1], qkv[2], NULL, true, ATTN_SCALE);
}

// Indexing, loss
static ag_tensor *f_embedding(ag_ctx *c, ag_tensor *const *x) {
    static const int32_t ids[6] = {1, 4, 1, 6, 0, 4};
    return ag_embedding(c, x[0], i32_tensor(c, AG_SHAPE(2, 3), ids));
}
static ag_tensor *f_index_select(ag_ctx *c, ag_tensor *const *x) {
    static const int32_t idx[5] = {6, 2, 2, 0, 3};
    return ag_index_select_rows(c, x[0], i32_tensor(c, AG_SHAPE(5), idx));
}
static ag_tensor *f_scatter(ag_ctx *c, ag_tensor *const *x) {
    static const int32_t idx[3] = {5, 0, 3};
    return ag_scatter_rows(c, x[0], i32_tensor(c, AG_SHAPE(3), idx), x[1]);
}
static ag_tensor *f_cross_entropy(ag_ctx *c, ag_tensor *const *x) {
    static const int32_t targets[7] = {3, -100, 10, 0, -100, 5, 5};
    return ag_cross_entropy(c, x[0], i32_tensor(c, AG_SHAPE(7), targets), -100);
}

#define S AG_SHAPE
static const gc_case cases[] = {
    // views and copies
    {"reshape", f_reshape, 1, {S(3, 4, 5)}, 0, 0},
    {"permute", f_permute, 1, {S(3, 4, 5)}, 0, 0},
    {"transpose", f_transpose, 1, {S(3, 4, 5)}, 1, 0},
    {"slice", f_slice, 1, {S(3, 7, 5)}, 0, 0},
    {"slice_of_transpose", f_slice_of_view, 1, {S(3, 4, 5)}, 0, 0},
    {"split", f_split, 1, {S(3, 13)}, 0, 0},
    {"contiguous", f_contiguous, 1, {S(3, 4, 5)}, 0, 0},
    {"contiguous_noop", f_contiguous_noop, 1, {S(3, 5)}, 0, 0},
    {"concat_mid", f_concat_mid, 3, {S(2, 3, 5), S(2, 1, 5), S(2, 4, 5)}, 2, 0},
    {"concat_last", f_concat_last, 2, {S(3, 2), S(3, 5)}, 0, 0},
    {"concat_first", f_concat_first, 2, {S(1, 3, 5), S(2, 3, 5)}, 0, 0},
    {"cast_f64", f_cast_same, 1, {S(3, 5)}, 0, 0},
    // elementwise with broadcasting
    {"add_same", f_add, 2, {S(3, 5), S(3, 5)}, 0, 0},
    {"add_lead", f_add, 2, {S(2, 3, 5), S(5)}, 2, 0},
    {"add_size1", f_add, 2, {S(2, 3, 5), S(3, 1)}, 0, 0},
    {"add_4d", f_add, 2, {S(2, 1, 3, 5), S(3, 1, 1)}, 0, 0},
    {"sub_both", f_sub, 2, {S(2, 1, 5), S(3, 1)}, 0, 0},
    {"sub_a_bcast", f_sub, 2, {S(5), S(2, 3, 5)}, 0, 0},
    {"mul_mid", f_mul, 2, {S(4, 3, 5), S(4, 1, 5)}, 0, 0},
    {"mul_outer", f_mul, 2, {S(1, 5), S(3, 1)}, 1, 0},
    {"mul_lead", f_mul, 2, {S(3, 7), S(2, 3, 7)}, 0, 0},
    {"mul_self", f_mul_self, 1, {S(3, 5)}, 0, 0},
    {"fanout", f_fanout, 2, {S(3, 5), S(5)}, 2, 0},
    {"scale", f_scale, 1, {S(3, 5)}, 0, 0},
    {"silu", f_silu, 1, {S(3, 7)}, 0, 2.0},
    {"gelu", f_gelu, 1, {S(3, 7)}, 0, 2.0},
    {"gelu_tanh", f_gelu_tanh, 1, {S(3, 7)}, 0, 2.0},
    {"quick_gelu", f_quick_gelu, 1, {S(3, 7)}, 0, 2.0},
    {"swiglu", f_swiglu, 2, {S(3, 7), S(3, 7)}, 0, 2.0},
    {"dropout", f_dropout, 1, {S(5, 13)}, 0, 0},
    // linear algebra
    {"matmul_nn", f_mm_nn, 2, {S(5, 7), S(7, 3)}, 0, 0},
    {"matmul_tn", f_mm_tn, 2, {S(7, 5), S(7, 3)}, 0, 0},
    {"matmul_nt", f_mm_nt, 2, {S(5, 7), S(3, 7)}, 0, 0},
    {"matmul_tt", f_mm_tt, 2, {S(7, 5), S(3, 7)}, 0, 0},
    {"matmul_batch_shared_b", f_mm_nn, 2, {S(2, 5, 7), S(7, 3)}, 2, 0},
    {"matmul_batch_shared_b_tt", f_mm_tt, 2, {S(2, 7, 5), S(3, 7)}, 2, 0},
    {"matmul_batched_b", f_mm_nn, 2, {S(2, 5, 7), S(2, 7, 3)}, 0, 0},
    {"matmul_batched_b_tn", f_mm_tn, 2, {S(2, 7, 5), S(2, 7, 3)}, 0, 0},
    {"matmul_batched_b_nt", f_mm_nt, 2, {S(3, 5, 7), S(3, 3, 7)}, 0, 0},
    {"matmul_4d_shared_b", f_mm_nn, 2, {S(2, 3, 5, 4), S(4, 3)}, 0, 0},
    {"linear", f_linear, 3, {S(2, 3, 7), S(5, 7), S(5)}, 6, 0},
    {"linear_nobias", f_linear_nobias, 2, {S(4, 7), S(5, 7)}, 2, 0},
    // normalisation, reductions
    {"rmsnorm", f_rmsnorm, 2, {S(3, 13), S(13)}, 2, 0},
    {"rmsnorm_3d", f_rmsnorm, 2, {S(2, 3, 7), S(7)}, 0, 0},
    {"layernorm", f_layernorm, 3, {S(3, 13), S(13), S(13)}, 6, 0},
    {"l2_normalize", f_l2_normalize, 1, {S(4, 7)}, 0, 0},
    {"softmax", f_softmax, 1, {S(3, 7)}, 0, 2.0},
    {"softmax_3d", f_softmax, 1, {S(2, 3, 5)}, 0, 0},
    {"sum_dim0", f_sum0, 1, {S(3, 5, 7)}, 0, 0},
    {"sum_dim1", f_sum1, 1, {S(3, 5, 7)}, 0, 0},
    {"sum_last", f_sum_last, 1, {S(3, 5, 7)}, 0, 0},
    {"mean_dim1", f_mean1, 1, {S(3, 5, 7)}, 0, 0},
    {"mean_last", f_mean_last, 1, {S(3, 5)}, 0, 0},
    {"mean_all", f_mean_all, 1, {S(3, 5, 7)}, 0, 0},
    // transformer pieces
    {"rope_pos_t", f_rope_t, 1, {S(2, 5, 3, 6)}, 0, 0},
    {"rope_pos_bt", f_rope_bt, 1, {S(2, 5, 3, 8)}, 0, 0},
    {"rope_strided", f_rope_strided, 1, {S(2, 5, 5, 6)}, 0, 0},
    {"attn_causal", f_attn_causal, 3, {S(2, 5, 3, 5), S(2, 5, 3, 5), S(2, 5, 3, 5)}, 0, 0},
    {"attn_noncausal", f_attn_full, 3, {S(2, 5, 3, 5), S(2, 5, 3, 5), S(2, 5, 3, 5)}, 0, 0},
    {"attn_cross", f_attn_full, 3, {S(2, 3, 2, 5), S(2, 7, 2, 5), S(2, 7, 2, 5)}, 0, 0},
    {"attn_causal_tq_lt_tk", f_attn_causal, 3, {S(1, 3, 2, 5), S(1, 7, 2, 5), S(1, 7, 2, 5)}, 0, 0},
    {"attn_causal_tq_gt_tk", f_attn_causal, 3, {S(1, 6, 2, 5), S(1, 3, 2, 5), S(1, 3, 2, 5)}, 0, 0},
    {"attn_key_mask", f_attn_mask, 3, {S(2, 4, 2, 5), S(2, 6, 2, 5), S(2, 6, 2, 5)}, 0, 0},
    {"attn_key_mask_causal",
     f_attn_mask_causal,
     3,
     {S(2, 5, 1, 5), S(2, 5, 1, 5), S(2, 5, 1, 5)},
     0,
     0},
    {"attn_gqa", f_attn_causal, 3, {S(1, 5, 4, 5), S(1, 5, 2, 5), S(1, 5, 2, 5)}, 0, 0},
    {"attn_fused_qkv", f_attn_fused, 1, {S(2, 5, 3, 15)}, 1, 0},
    // indexing, loss
    {"embedding", f_embedding, 1, {S(7, 5)}, 1, 0},
    {"index_select_rows", f_index_select, 1, {S(7, 5)}, 0, 0},
    {"scatter_rows", f_scatter, 2, {S(7, 5), S(3, 5)}, 0, 0},
    {"cross_entropy", f_cross_entropy, 1, {S(7, 11)}, 0, 2.0},
};
#undef S

// Evaluation -------------------------------------------------------------------------------
typedef struct {
    const gc_case *c;
    ag_ctx *ctx;
    ag_tensor *params[MAX_IN]; // persistent inputs (NULL for step leaves)
    double *vals[MAX_IN];      // current input values (host)
    int64_t numel[MAX_IN];
    double *r; // the seed R (host), numel of the output
    int64_t out_numel;
} gc_run;

// Starts a fresh step, loads the inputs (x: the leaves) and runs the forward.
static ag_tensor *forward(gc_run *g, ag_tensor **x) {
    ag_step_reset(g->ctx);
    for (int i = 0; i < g->c->n_in; i++) {
        if (g->params[i]) {
            x[i] = g->params[i];
        } else {
            x[i] = ag_new(g->ctx, AG_F64, g->c->shape[i]);
            ag_set_requires_grad(x[i], true);
        }
        ag_copy_from_host(x[i], g->vals[i]);
    }
    return g->c->fwd(g->ctx, x);
}

static double *host_f64(ag_ctx *ctx, ag_tensor *t) {
    ag_tensor *tc = ag_is_contiguous(t) ? t : ag_contiguous(ctx, t);
    double *h = malloc(sizeof(double) * (size_t)ag_numel(tc));
    ag_copy_to_host(tc, h);
    return h;
}

// L = sum(out * R) at the current input values, without a tape.
static double loss(gc_run *g) {
    ag_no_grad_begin(g->ctx);
    ag_tensor *x[MAX_IN];
    ag_tensor *out = forward(g, x);
    double *o = host_f64(g->ctx, out);
    double l = 0;
    for (int64_t j = 0; j < g->out_numel; j++) l += o[j] * g->r[j];
    free(o);
    ag_no_grad_end(g->ctx);
    return l;
}

static void backward(gc_run *g, ag_tensor *out) {
    ag_tensor *seed = ag_new(g->ctx, AG_F64, ag_shape_of(out));
    ag_copy_from_host(seed, g->r);
    ag_backward_from(g->ctx, out, seed);
}

// Parameter gradients persist across steps until ag_zero_grad: a second step adds the same
// gradient again, and after ag_zero_grad a third gives it once.
static void check_param_grads(gc_run *g, double *const *analytic) {
    if (!g->c->params) return;
    for (int round = 2; round >= 1; round--) {
        if (round == 1) {
            for (int i = 0; i < g->c->n_in; i++)
                if (g->params[i]) ag_zero_grad(g->ctx, &g->params[i], 1);
        }
        ag_tensor *x[MAX_IN];
        backward(g, forward(g, x));
        for (int i = 0; i < g->c->n_in; i++) {
            if (!g->params[i]) continue;
            double *h = host_f64(g->ctx, g->params[i]->grad), worst = 0;
            for (int64_t j = 0; j < g->numel[i]; j++)
                worst = fmax(worst, fabs(h[j] - round * analytic[i][j]) /
                                        (1e-12 + 1e-12 * fabs(analytic[i][j])));
            free(h);
            TL_CHECK(worst <= 1.0, "%s: parameter %d gradient after %s is not %dx the first",
                     g->c->name, i, round == 2 ? "two steps" : "ag_zero_grad", round);
        }
    }
}

typedef struct {
    double max_abs, max_ratio; // largest |a - n|, largest |a - n| / tolerance
    int64_t checked;
} gc_stats;

static void check_seed(const gc_case *c, int seed, gc_stats *st) {
    tl_rng rng = {.s = 0x5eed0000u + 7919u * (uint64_t)seed};
    for (const char *p = c->name; *p; p++) rng.s = rng.s * 31 + (unsigned char)*p;
    gc_run g = {.c = c, .ctx = ag_ctx_new(AG_CPU)};
    double scale = c->scale > 0 ? c->scale : 1.0;
    for (int i = 0; i < c->n_in; i++) {
        g.numel[i] = ag_shape_numel(c->shape[i]);
        g.vals[i] = malloc(sizeof(double) * (size_t)g.numel[i]);
        for (int64_t j = 0; j < g.numel[i]; j++) g.vals[i][j] = scale * tl_normal(&rng);
        if (c->params & (1u << i)) {
            char name[32];
            snprintf(name, sizeof name, "%s.in%d", c->name, i);
            g.params[i] = ag_param(g.ctx, name, AG_F64, c->shape[i]);
            ag_set_trainable(g.ctx, g.params[i], true);
        }
    }

    // Analytic gradients
    ag_tensor *x[MAX_IN];
    ag_tensor *out = forward(&g, x);
    TL_CHECK(out->dtype == AG_F64, "%s: output dtype %s", c->name, ag_dtype_name(out->dtype));
    g.out_numel = ag_numel(out);
    g.r = malloc(sizeof(double) * (size_t)g.out_numel);
    for (int64_t j = 0; j < g.out_numel; j++) g.r[j] = tl_normal(&rng);
    backward(&g, out);
    double *analytic[MAX_IN];
    for (int i = 0; i < c->n_in; i++) {
        analytic[i] = calloc((size_t)g.numel[i], sizeof(double));
        if (x[i]->grad) ag_copy_to_host(x[i]->grad, analytic[i]);
    }
    check_param_grads(&g, analytic);

    // Numeric gradients, element by element.
    bool ok = true;
    char worst[160] = "";
    double seed_ratio = 0;
    for (int i = 0; i < c->n_in; i++) {
        for (int64_t j = 0; j < g.numel[i]; j++) {
            double v = g.vals[i][j];
            g.vals[i][j] = v + STEP_H;
            double lp = loss(&g);
            g.vals[i][j] = v - STEP_H;
            double lm = loss(&g);
            g.vals[i][j] = v;
            double num = (lp - lm) / (2 * STEP_H), a = analytic[i][j];
            double err = fabs(a - num), ratio = err / (TOL_ABS + TOL_REL * fabs(num));
            if (!(ratio <= 1.0)) ok = false; // NaN fails too
            if (!(ratio <= seed_ratio)) {
                seed_ratio = ratio;
                snprintf(worst, sizeof worst, "input %d element %lld: analytic %.10g numeric %.10g",
                         i, (long long)j, a, num);
            }
            if (err > st->max_abs || isnan(err)) st->max_abs = err;
            st->checked++;
        }
    }
    if (seed_ratio > st->max_ratio || isnan(seed_ratio)) st->max_ratio = seed_ratio;
    TL_CHECK(ok, "gradcheck %s seed %d: %s", c->name, seed, worst);

    for (int i = 0; i < c->n_in; i++) {
        free(g.vals[i]);
        free(analytic[i]);
    }
    free(g.r);
    ag_ctx_free(g.ctx);
}

// Cast round trips f64 -> (f32 | bf16) -> f64: forward rounds, backward rounds the seed.
static void check_cast_round_trip(ag_dtype mid) {
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    tl_rng rng = {.s = 99 + (uint64_t)mid};
    enum { N = 15 };
    double xv[N], rv[N], y[N], gx[N];
    for (int j = 0; j < N; j++) {
        xv[j] = 3 * tl_normal(&rng);
        rv[j] = tl_normal(&rng);
    }
    ag_tensor *x = ag_new(ctx, AG_F64, AG_SHAPE(3, 5));
    ag_copy_from_host(x, xv);
    ag_set_requires_grad(x, true);
    ag_tensor *out = ag_cast(ctx, ag_cast(ctx, x, mid), AG_F64);
    ag_tensor *r = ag_new(ctx, AG_F64, AG_SHAPE(3, 5));
    ag_copy_from_host(r, rv);
    ag_backward_from(ctx, out, r);
    ag_copy_to_host(out, y);
    ag_copy_to_host(x->grad, gx);
    // f32 rounding is exact to check; bf16 may round from f64 directly or through f32
    // (double rounding), which differs by at most one bf16 unit in rare ties.
    double tol = mid == AG_F32 ? 0.0 : 0x1p-8;
    double max_err = 0;
    bool ok = true;
    for (int j = 0; j < N; j++) {
        double ey = (float)xv[j], eg = (float)rv[j];
        if (mid == AG_BF16) {
            ey = ag_bf16_to_f32(ag_f32_to_bf16((float)xv[j]));
            eg = ag_bf16_to_f32(ag_f32_to_bf16((float)rv[j]));
        }
        double e1 = fabs(y[j] - ey), e2 = fabs(gx[j] - eg);
        if (e1 > tol * fabs(ey) || e2 > tol * fabs(eg)) ok = false;
        max_err = fmax(max_err, fmax(e1, e2));
    }
    TL_CHECK(ok, "cast round trip through %s: values or gradient not the rounded ones",
             ag_dtype_name(mid));
    printf("gradcheck %-26s %5d elems  max |err| %.2e  (exact rounding check)\n",
           mid == AG_F32 ? "cast_f64_f32_f64" : "cast_f64_bf16_f64", N, max_err);
    ag_ctx_free(ctx);
}

int main(void) {
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        gc_stats st = {0};
        for (int s = 0; s < N_SEEDS; s++) check_seed(&cases[k], s, &st);
        printf("gradcheck %-26s %5lld elems  max |err| %.2e  max err/tol %.1e\n", cases[k].name,
               (long long)st.checked, st.max_abs, st.max_ratio);
    }
    check_cast_round_trip(AG_F32);
    check_cast_round_trip(AG_BF16);
    return tl_summary("test_gradcheck");
}
