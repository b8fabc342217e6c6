// test_cuda_parity.c: every op of autograd/ops.h, forward and backward, on CUDA against the
// CPU backend from the same random inputs (label "gpu"; exit 77 without a visible GPU).
//
// Each case builds its op(s) from inputs of awkward sizes (odd, not multiples of 32,
// broadcasts, strided views, ignored rows, masks, GQA, causal and cross attention, empty
// products), seeds the output gradient with random values and backpropagates. Compared: the
// output and the gradient of every float input, as the normwise relative error
// ||got - want||_2 / ||want||_2; f32 within 1e-5, bf16 within 1e-2. A NaN or Inf never
// passes.
//
// bf16 runs compare against the CPU's bf16 path, not against f32: the CPU kernels
// (autograd/cpu/kernels.inc) are the semantics CUDA implements, including where results
// are rounded to bf16 (every op output); the two devices then differ by f32 summation order,
// which moves a few outputs by one bf16 ulp (2^-8 relative), and in attention by the tensor-core
// products, which take the softmax probabilities (forward) and dS (backward) rounded to bf16
// where the CPU keeps them f32, as flash attention does: 1.4e-3 to 3.7e-3 on this file's
// shapes in a host emulation of the kernels, inside 1e-2. How
// far bf16 is from exact arithmetic is test_ops_reference's business (against PyTorch).
//
// Unwritten memory must fail: before each run the whole step arena (where every output,
// saved statistic and intermediate gradient is placed) is filled with NaN bytes, and the
// run must fit in it. Input gradients cannot start as NaN (backward kernels add into them,
// zero-initialised), so each case runs forward and backward twice into the same input
// gradients and the result is halved: a kernel that overwrites instead of adding gives half
// the answer, one that skips a gradient leaves zero.
//
// Also AdamW with gradient clipping (not an op of ops.h, but the end of every training step):
// f32 and bf16 parameters, their f32 masters and the gradient norms after three steps.
//
// `test_cuda_parity --cpu-vs-cpu` runs the same harness with the CPU standing in for CUDA
// (every error must be 0): a check of the harness on machines without a GPU.
#include <math.h>
#include <stdlib.h>

#include "autograd/backend.h"
#include "autograd/error.h"
#include "autograd/optim.h"
#include "testlib.h"

#define TOL_F32      1e-5
#define TOL_BF16     1e-2
#define MAX_INPUTS   12
#define POISON_BYTES ((size_t)48 << 20)

// Inputs of one case, made in round 0 from the case's random stream and handed out again,
// in the same order, in round 1.
typedef struct {
    ag_ctx *ctx;
    ag_dtype dt;
    tl_rng rng;
    int round, n, next;
    ag_tensor *in[MAX_INPUTS];
} env;

static ag_tensor *remember(env *e, ag_tensor *t) {
    if (e->n == MAX_INPUTS) ag_fail("test_cuda_parity: more than %d inputs", MAX_INPUTS);
    e->in[e->n++] = t;
    return t;
}

// A float tensor of normal(0, scale) values, rounded to the case's dtype.
static ag_tensor *rand_tensor(env *e, ag_dtype dt, ag_shape s, double scale) {
    int64_t n = ag_shape_numel(s);
    void *h = ag_xmalloc((size_t)(n ? n : 1) * 4, "parity input");
    for (int64_t i = 0; i < n; i++) {
        float v = (float)(scale * tl_normal(&e->rng));
        if (dt == AG_BF16)
            ((uint16_t *)h)[i] = ag_f32_to_bf16(v);
        else
            ((float *)h)[i] = v;
    }
    ag_tensor *t = ag_from_host(e->ctx, dt, s, h);
    free(h);
    return t;
}

// A float input that requires grad (grad = true) or a constant.
static ag_tensor *fin(env *e, ag_shape s, double scale, bool grad) {
    if (e->round) return e->in[e->next++];
    ag_tensor *t = rand_tensor(e, e->dt, s, scale);
    if (grad) ag_set_requires_grad(t, true);
    return remember(e, t);
}
static ag_tensor *x_in(env *e, ag_shape s, double scale) {
    return fin(e, s, scale, true);
}

// A constant float tensor of the given values, rounded to the case's dtype.
static ag_tensor *f_vals(env *e, ag_shape s, const float *v) {
    if (e->round) return e->in[e->next++];
    int64_t n = ag_shape_numel(s);
    uint16_t *h = ag_xmalloc((size_t)(n ? n : 1) * 2, "parity input");
    for (int64_t i = 0; i < n; i++) h[i] = ag_f32_to_bf16(v[i]);
    ag_tensor *t = ag_from_host(e->ctx, e->dt, s, e->dt == AG_BF16 ? (const void *)h : v);
    free(h);
    return remember(e, t);
}

// i32 values: v when given, else uniform in [lo, hi).
static ag_tensor *i_in(env *e, ag_shape s, const int32_t *v, int32_t lo, int32_t hi) {
    if (e->round) return e->in[e->next++];
    int64_t n = ag_shape_numel(s);
    int32_t *h = ag_xmalloc((size_t)(n ? n : 1) * 4, "parity ids");
    for (int64_t i = 0; i < n; i++) h[i] = v ? v[i] : lo + (int32_t)tl_randint(&e->rng, hi - lo);
    ag_tensor *t = ag_from_host(e->ctx, AG_I32, s, h);
    free(h);
    return remember(e, t);
}

static ag_tensor *u8_in(env *e, ag_shape s, const uint8_t *v) {
    if (e->round) return e->in[e->next++];
    return remember(e, ag_from_host(e->ctx, AG_U8, s, v));
}

// The cases --------------------------------------------------------------------------------

typedef ag_tensor *(*case_fn)(env *e);
#define CASE(name) static ag_tensor *name(env *e)
#define CTX        (e->ctx)

CASE(c_reshape) {
    ag_tensor *x = x_in(e, AG_SHAPE(3, 5, 7), 1);
    return ag_scale(CTX, ag_reshape(CTX, x, AG_SHAPE(7, -1)), 1.5);
}
CASE(c_permute) {
    ag_tensor *x = x_in(e, AG_SHAPE(3, 5, 7, 2), 1);
    return ag_contiguous(CTX, ag_permute(CTX, x, AG_SHAPE(2, 0, 3, 1)));
}
CASE(c_transpose) {
    ag_tensor *x = x_in(e, AG_SHAPE(5, 33, 3), 1);
    return ag_contiguous(CTX, ag_transpose(CTX, x, 0, 2));
}
CASE(c_slice) {
    ag_tensor *x = x_in(e, AG_SHAPE(4, 37, 5), 1);
    return ag_contiguous(CTX, ag_slice(CTX, x, 1, 3, 30));
}
CASE(c_split_concat) {
    ag_tensor *x = x_in(e, AG_SHAPE(5, 27), 1), *p[3];
    ag_split(CTX, x, 1, 3, (const int64_t[]){7, 13, 7}, p);
    ag_tensor *parts[3] = {ag_contiguous(CTX, p[2]), ag_contiguous(CTX, p[0]),
                           ag_contiguous(CTX, p[1])};
    return ag_concat(CTX, 3, parts, 1);
}
CASE(c_contiguous) { // a permuted and sliced view: copy_strided forward, add_strided backward
    ag_tensor *x = x_in(e, AG_SHAPE(2, 9, 3, 5), 1);
    ag_tensor *v = ag_slice(CTX, ag_permute(CTX, x, AG_SHAPE(0, 2, 1, 3)), 2, 1, 8);
    return ag_contiguous(CTX, v);
}
CASE(c_concat) {
    ag_tensor *xs[3] = {x_in(e, AG_SHAPE(3, 5, 2), 1), x_in(e, AG_SHAPE(3, 1, 2), 1),
                        x_in(e, AG_SHAPE(3, 11, 2), 1)};
    return ag_concat(CTX, 3, xs, 1);
}
CASE(c_concat0) {
    ag_tensor *xs[2] = {x_in(e, AG_SHAPE(2, 33), 1), x_in(e, AG_SHAPE(5, 33), 1)};
    return ag_concat(CTX, 2, xs, 0);
}
CASE(c_cast) {
    ag_tensor *x = x_in(e, AG_SHAPE(7, 131), 3);
    return ag_cast(CTX, x, e->dt == AG_F32 ? AG_BF16 : AG_F32);
}
CASE(c_add_bcast) {
    ag_tensor *a = x_in(e, AG_SHAPE(4, 1, 33), 1), *b = x_in(e, AG_SHAPE(5, 1), 1);
    return ag_add(CTX, a, b);
}
CASE(c_add_same) {
    return ag_add(CTX, x_in(e, AG_SHAPE(37, 65), 1), x_in(e, AG_SHAPE(37, 65), 1));
}
CASE(c_sub_bcast) {
    return ag_sub(CTX, x_in(e, AG_SHAPE(3, 7), 1), x_in(e, AG_SHAPE(2, 3, 7), 1));
}
CASE(c_mul_bcast4) {
    return ag_mul(CTX, x_in(e, AG_SHAPE(2, 1, 5, 1), 1), x_in(e, AG_SHAPE(1, 3, 1, 7), 1));
}
CASE(c_mul_row) {
    return ag_mul(CTX, x_in(e, AG_SHAPE(129, 77), 1), x_in(e, AG_SHAPE(77), 1));
}
CASE(c_scale) {
    return ag_scale(CTX, x_in(e, AG_SHAPE(1031), 1), -1.7);
}
CASE(c_silu) {
    return ag_silu(CTX, x_in(e, AG_SHAPE(3, 1031), 3));
}
CASE(c_gelu) {
    return ag_gelu(CTX, x_in(e, AG_SHAPE(3, 1031), 3));
}
CASE(c_gelu_tanh) {
    return ag_gelu_tanh(CTX, x_in(e, AG_SHAPE(3, 1031), 3));
}
CASE(c_quick_gelu) {
    return ag_quick_gelu(CTX, x_in(e, AG_SHAPE(3, 1031), 3));
}
CASE(c_swiglu) {
    return ag_swiglu(CTX, x_in(e, AG_SHAPE(7, 193), 2), x_in(e, AG_SHAPE(7, 193), 1));
}
CASE(c_dropout) {
    return ag_dropout(CTX, x_in(e, AG_SHAPE(5, 1031), 1), 0.3, 1234);
}
CASE(c_matmul) {
    return ag_matmul(CTX, x_in(e, AG_SHAPE(33, 47), 1), x_in(e, AG_SHAPE(47, 65), 1), false, false);
}
CASE(c_matmul_shared_tb) { // b shared: the batch folds into M
    return ag_matmul(CTX, x_in(e, AG_SHAPE(3, 17, 40), 1), x_in(e, AG_SHAPE(29, 40), 1), false,
                     true);
}
CASE(c_matmul_shared_ta) { // b shared, a transposed: one matrix at a time
    return ag_matmul(CTX, x_in(e, AG_SHAPE(2, 3, 40, 17), 1), x_in(e, AG_SHAPE(40, 29), 1), true,
                     false);
}
CASE(c_matmul_batched) {
    return ag_matmul(CTX, x_in(e, AG_SHAPE(2, 3, 17, 40), 1), x_in(e, AG_SHAPE(2, 3, 40, 29), 1),
                     false, false);
}
CASE(c_matmul_batched_tatb) {
    return ag_matmul(CTX, x_in(e, AG_SHAPE(5, 40, 17), 1), x_in(e, AG_SHAPE(5, 29, 40), 1), true,
                     true);
}
CASE(c_matmul_vec) { // M = N = 1: leading dimensions of one-row matrices
    return ag_matmul(CTX, x_in(e, AG_SHAPE(1, 65), 1), x_in(e, AG_SHAPE(65, 1), 1), false, false);
}
CASE(c_matmul_k1) {
    return ag_matmul(CTX, x_in(e, AG_SHAPE(7, 1), 1), x_in(e, AG_SHAPE(1, 9), 1), false, false);
}
CASE(c_matmul_k0) { // empty product: the output must be zeros (written, not left as poison)
    return ag_matmul(CTX, x_in(e, AG_SHAPE(3, 0), 1), x_in(e, AG_SHAPE(0, 5), 1), false, false);
}
CASE(c_matmul_m0) { // empty output: b's gradient gets an empty (K = 0) accumulation
    ag_tensor *a = x_in(e, AG_SHAPE(2, 0, 5), 1), *b = x_in(e, AG_SHAPE(5, 4), 1);
    ag_tensor *c = ag_matmul(CTX, a, b, false, false);         // (2, 0, 4)
    ag_tensor *z = ag_reshape(CTX, c, AG_SHAPE(0, 4));         // nothing
    ag_tensor *s = ag_sum(CTX, z, 0);                          // (4) zeros
    return ag_add(CTX, s, ag_mean(CTX, ag_mul(CTX, b, b), 0)); // keeps b's gradient alive
}
CASE(c_linear_bias) {
    return ag_linear(CTX, x_in(e, AG_SHAPE(2, 37, 65), 1), x_in(e, AG_SHAPE(33, 65), 0.2),
                     x_in(e, AG_SHAPE(33), 1));
}
CASE(c_linear_nobias) {
    return ag_linear(CTX, x_in(e, AG_SHAPE(1, 77), 1), x_in(e, AG_SHAPE(5, 77), 0.2), NULL);
}
CASE(c_linear_1d) {
    return ag_linear(CTX, x_in(e, AG_SHAPE(65), 1), x_in(e, AG_SHAPE(3, 65), 0.2),
                     x_in(e, AG_SHAPE(3), 1));
}
CASE(c_rmsnorm) {
    return ag_rmsnorm(CTX, x_in(e, AG_SHAPE(6, 131), 2), x_in(e, AG_SHAPE(131), 1), 1e-6);
}
CASE(c_rmsnorm_wide) {
    return ag_rmsnorm(CTX, x_in(e, AG_SHAPE(3, 4099), 1), x_in(e, AG_SHAPE(4099), 1), 1e-5);
}
CASE(c_layernorm) {
    return ag_layernorm(CTX, x_in(e, AG_SHAPE(7, 1025), 2), x_in(e, AG_SHAPE(1025), 1),
                        x_in(e, AG_SHAPE(1025), 1), 1e-5);
}
CASE(c_layernorm_narrow) {
    ag_tensor *x = ag_add(CTX, x_in(e, AG_SHAPE(3, 5, 33), 1), fin(e, AG_SHAPE(1), 30, false));
    return ag_layernorm(CTX, x, x_in(e, AG_SHAPE(33), 1), x_in(e, AG_SHAPE(33), 1), 1e-6);
}
CASE(c_l2_normalize) {
    ag_tensor *x = x_in(e, AG_SHAPE(9, 257), 1);
    float h[9]; // row scales; row 4's norm far below eps
    for (int i = 0; i < 9; i++) h[i] = i == 4 ? 1e-15f : 1.0f + (float)i;
    ag_tensor *w = f_vals(e, AG_SHAPE(9, 1), h);
    return ag_l2_normalize(CTX, ag_mul(CTX, x, w), 1e-12);
}
CASE(c_softmax) {
    return ag_softmax(CTX, x_in(e, AG_SHAPE(13, 1001), 10));
}
CASE(c_softmax_narrow) {
    return ag_softmax(CTX, x_in(e, AG_SHAPE(2, 2, 3), 1));
}
CASE(c_sum_mid) {
    return ag_sum(CTX, x_in(e, AG_SHAPE(3, 257, 5), 1), 1);
}
CASE(c_sum_first) {
    return ag_sum(CTX, x_in(e, AG_SHAPE(67, 33), 1), 0);
}
CASE(c_mean_last) {
    return ag_mean(CTX, x_in(e, AG_SHAPE(7, 33), 1), -1);
}
CASE(c_mean_all) {
    return ag_mean_all(CTX, x_in(e, AG_SHAPE(17, 19), 1));
}
CASE(c_rope) {
    return ag_rope(CTX, x_in(e, AG_SHAPE(2, 9, 3, 64), 1), i_in(e, AG_SHAPE(9), NULL, 0, 4096),
                   10000);
}
CASE(c_rope_batch_pos_strided) { // a slice of a fused projection, positions per batch
    ag_tensor *f = x_in(e, AG_SHAPE(2, 9, 3 * 3, 10), 1);
    ag_tensor *x = ag_slice(CTX, f, 2, 3, 6); // (2, 9, 3, 10) strided
    return ag_rope(CTX, x, i_in(e, AG_SHAPE(2, 9), NULL, 0, 100), 500000);
}
CASE(c_attn_causal) {
    ag_tensor *q = x_in(e, AG_SHAPE(2, 37, 4, 16), 1), *k = x_in(e, AG_SHAPE(2, 37, 4, 16), 1),
              *v = x_in(e, AG_SHAPE(2, 37, 4, 16), 1);
    return ag_attention(CTX, q, k, v, NULL, true, 0.25);
}
CASE(c_attn_gqa) {
    ag_tensor *q = x_in(e, AG_SHAPE(2, 33, 6, 24), 1), *k = x_in(e, AG_SHAPE(2, 33, 2, 24), 1),
              *v = x_in(e, AG_SHAPE(2, 33, 2, 24), 1);
    return ag_attention(CTX, q, k, v, NULL, true, 1 / sqrt(24));
}
CASE(c_attn_cross_mask) { // batch 1 sees no key at all: zeros
    uint8_t m[3 * 19];
    for (int b = 0; b < 3; b++)
        for (int j = 0; j < 19; j++) m[b * 19 + j] = b == 1 ? 0 : (uint8_t)((j * 7 + b) % 5 != 0);
    ag_tensor *q = x_in(e, AG_SHAPE(3, 7, 4, 8), 1), *k = x_in(e, AG_SHAPE(3, 19, 4, 8), 1),
              *v = x_in(e, AG_SHAPE(3, 19, 4, 8), 1);
    return ag_attention(CTX, q, k, v, u8_in(e, AG_SHAPE(3, 19), m), false, 0.4);
}
CASE(c_attn_cross_causal_mqa) { // Tq < Tk: query i sees keys j <= i + 18
    ag_tensor *q = x_in(e, AG_SHAPE(2, 5, 4, 8), 1), *k = x_in(e, AG_SHAPE(2, 23, 1, 8), 1),
              *v = x_in(e, AG_SHAPE(2, 23, 1, 8), 1);
    return ag_attention(CTX, q, k, v, NULL, true, 0.35);
}
CASE(c_attn_strided_mask) { // q, k, v slices of one fused (B, T, 3H, D) projection
    uint8_t m[2 * 17];
    for (int i = 0; i < 34; i++) m[i] = (uint8_t)(i % 17 < 14 || i < 17); // batch 1: padded tail
    ag_tensor *f = x_in(e, AG_SHAPE(2, 17, 12, 16), 1);
    ag_tensor *q = ag_slice(CTX, f, 2, 0, 4), *k = ag_slice(CTX, f, 2, 4, 8),
              *v = ag_slice(CTX, f, 2, 8, 12);
    return ag_attention(CTX, q, k, v, u8_in(e, AG_SHAPE(2, 17), m), true, 0.25);
}
CASE(c_attn_long) {
    ag_tensor *q = x_in(e, AG_SHAPE(1, 300, 2, 64), 1), *k = x_in(e, AG_SHAPE(1, 300, 2, 64), 1),
              *v = x_in(e, AG_SHAPE(1, 300, 2, 64), 1);
    return ag_attention(CTX, q, k, v, NULL, true, 0.125);
}
CASE(c_attn_d128) {
    ag_tensor *q = x_in(e, AG_SHAPE(2, 65, 2, 128), 1), *k = x_in(e, AG_SHAPE(2, 65, 1, 128), 1),
              *v = x_in(e, AG_SHAPE(2, 65, 1, 128), 1);
    return ag_attention(CTX, q, k, v, NULL, false, 1 / sqrt(128));
}
CASE(c_embedding) { // repeated ids: their gradients add up
    ag_tensor *t = x_in(e, AG_SHAPE(101, 33), 1);
    int32_t ids[21];
    for (int i = 0; i < 21; i++) ids[i] = (int32_t)((i * 37) % 13 + (i % 3) * 40);
    return ag_embedding(CTX, t, i_in(e, AG_SHAPE(3, 7), ids, 0, 0));
}
CASE(c_index_select_rows) {
    return ag_index_select_rows(CTX, x_in(e, AG_SHAPE(50, 37), 1),
                                i_in(e, AG_SHAPE(23), NULL, 0, 50));
}
CASE(c_scatter_rows) {
    int32_t idx[11];
    for (int i = 0; i < 11; i++) idx[i] = (int32_t)((i * 17 + 3) % 40); // distinct
    return ag_scatter_rows(CTX, x_in(e, AG_SHAPE(40, 19), 1), i_in(e, AG_SHAPE(11), idx, 0, 0),
                           x_in(e, AG_SHAPE(11, 19), 1));
}
CASE(c_patchify_overlap) { // strides below the patch, remainders dropped
    return ag_patchify(CTX, x_in(e, AG_SHAPE(2, 13, 11, 3), 1), 4, 3, 3, 2);
}
CASE(c_patchify) {
    return ag_patchify(CTX, x_in(e, AG_SHAPE(1, 14, 21, 3), 1), 7, 7, 7, 7);
}
CASE(c_cross_entropy) { // ignored rows, large logits
    int32_t t[37];
    for (int i = 0; i < 37; i++) t[i] = i % 5 == 2 ? -100 : (int32_t)((i * 131) % 1003);
    return ag_cross_entropy(CTX, x_in(e, AG_SHAPE(37, 1003), 5), i_in(e, AG_SHAPE(37), t, 0, 0),
                            -100);
}
CASE(c_cross_entropy_all_ignored) {
    int32_t t[4] = {-1, -1, -1, -1};
    ag_tensor *l = x_in(e, AG_SHAPE(4, 9), 1);
    ag_tensor *loss = ag_cross_entropy(CTX, l, i_in(e, AG_SHAPE(4), t, 0, 0), -1);
    ag_tensor *sq = ag_mean_all(CTX, ag_mul(CTX, l, l));     // l's gradient comes from here
    return ag_add(CTX, loss, ag_cast(CTX, sq, loss->dtype)); // the loss is in f32 for bf16
}
// A miniature decoder layer and loss: the ops composed as the model composes them.
CASE(c_decoder_chain) {
    const int64_t B = 2, T = 11, C = 48, H = 3, Hkv = 1, D = 16, V = 37;
    ag_tensor *emb = x_in(e, AG_SHAPE(V, C), 1), *wn = x_in(e, AG_SHAPE(C), 1);
    ag_tensor *wqkv = x_in(e, AG_SHAPE((H + 2 * Hkv) * D, C), 0.15);
    ag_tensor *wo = x_in(e, AG_SHAPE(C, H * D), 0.15), *wg = x_in(e, AG_SHAPE(40, C), 0.15);
    ag_tensor *wu = x_in(e, AG_SHAPE(40, C), 0.15), *wd = x_in(e, AG_SHAPE(C, 40), 0.15);
    ag_tensor *ids = i_in(e, AG_SHAPE(B, T), NULL, 0, (int32_t)V);
    int32_t tg[22];
    for (int i = 0; i < 22; i++) tg[i] = i % 4 == 0 ? -100 : (int32_t)((i * 5) % V);
    ag_tensor *targets = i_in(e, AG_SHAPE(B * T), tg, 0, 0);
    int32_t p[11];
    for (int i = 0; i < 11; i++) p[i] = i;
    ag_tensor *pos = i_in(e, AG_SHAPE(T), p, 0, 0);

    ag_tensor *x = ag_embedding(CTX, emb, ids); // (B, T, C)
    ag_tensor *qkv = ag_reshape(CTX, ag_linear(CTX, ag_rmsnorm(CTX, x, wn, 1e-5), wqkv, NULL),
                                AG_SHAPE(B, T, H + 2 * Hkv, D));
    ag_tensor *q = ag_rope(CTX, ag_slice(CTX, qkv, 2, 0, H), pos, 10000);
    ag_tensor *k = ag_rope(CTX, ag_slice(CTX, qkv, 2, H, H + Hkv), pos, 10000);
    ag_tensor *v = ag_slice(CTX, qkv, 2, H + Hkv, H + 2 * Hkv);
    ag_tensor *a = ag_attention(CTX, q, k, v, NULL, true, 1 / sqrt((double)D));
    x = ag_add(CTX, x, ag_linear(CTX, ag_reshape(CTX, a, AG_SHAPE(B, T, H * D)), wo, NULL));
    ag_tensor *hn = ag_rmsnorm(CTX, x, wn, 1e-5);
    ag_tensor *m = ag_swiglu(CTX, ag_linear(CTX, hn, wg, NULL), ag_linear(CTX, hn, wu, NULL));
    x = ag_add(CTX, x, ag_linear(CTX, m, wd, NULL));
    ag_tensor *logits = ag_matmul(CTX, ag_reshape(CTX, x, AG_SHAPE(B * T, C)), emb, false, true);
    return ag_cross_entropy(CTX, logits, targets, -100);
}

static const struct {
    const char *name;
    case_fn fn;
} cases[] = {
    {"reshape", c_reshape},
    {"permute", c_permute},
    {"transpose", c_transpose},
    {"slice", c_slice},
    {"split+concat", c_split_concat},
    {"contiguous(view)", c_contiguous},
    {"concat", c_concat},
    {"concat dim0", c_concat0},
    {"cast", c_cast},
    {"add broadcast", c_add_bcast},
    {"add", c_add_same},
    {"sub broadcast", c_sub_bcast},
    {"mul broadcast 4-D", c_mul_bcast4},
    {"mul row", c_mul_row},
    {"scale", c_scale},
    {"silu", c_silu},
    {"gelu", c_gelu},
    {"gelu_tanh", c_gelu_tanh},
    {"quick_gelu", c_quick_gelu},
    {"swiglu", c_swiglu},
    {"dropout", c_dropout},
    {"matmul", c_matmul},
    {"matmul b shared tb", c_matmul_shared_tb},
    {"matmul b shared ta", c_matmul_shared_ta},
    {"matmul batched", c_matmul_batched},
    {"matmul batched ta tb", c_matmul_batched_tatb},
    {"matmul 1x1", c_matmul_vec},
    {"matmul K=1", c_matmul_k1},
    {"matmul K=0", c_matmul_k0},
    {"matmul M=0", c_matmul_m0},
    {"linear bias", c_linear_bias},
    {"linear", c_linear_nobias},
    {"linear 1-D", c_linear_1d},
    {"rmsnorm", c_rmsnorm},
    {"rmsnorm wide", c_rmsnorm_wide},
    {"layernorm", c_layernorm},
    {"layernorm offset", c_layernorm_narrow},
    {"l2_normalize", c_l2_normalize},
    {"softmax", c_softmax},
    {"softmax narrow", c_softmax_narrow},
    {"sum dim1", c_sum_mid},
    {"sum dim0", c_sum_first},
    {"mean", c_mean_last},
    {"mean_all", c_mean_all},
    {"rope", c_rope},
    {"rope strided, pos (B,T)", c_rope_batch_pos_strided},
    {"attention causal", c_attn_causal},
    {"attention GQA", c_attn_gqa},
    {"attention cross mask", c_attn_cross_mask},
    {"attention cross causal MQA", c_attn_cross_causal_mqa},
    {"attention strided mask", c_attn_strided_mask},
    {"attention T=300", c_attn_long},
    {"attention D=128", c_attn_d128},
    {"embedding", c_embedding},
    {"index_select_rows", c_index_select_rows},
    {"scatter_rows", c_scatter_rows},
    {"patchify overlap", c_patchify_overlap},
    {"patchify", c_patchify},
    {"cross_entropy", c_cross_entropy},
    {"cross_entropy all ignored", c_cross_entropy_all_ignored},
    {"decoder chain", c_decoder_chain},
};
#define NCASES ((int)(sizeof cases / sizeof *cases))

// Running and comparing ---------------------------------------------------------------------

// What one run leaves on the host: the output, then the gradient of each float input that
// requires grad (NULL where none was made), as doubles.
typedef struct {
    int n;
    double *v[1 + MAX_INPUTS];
    int64_t len[1 + MAX_INPUTS];
    char error[2048]; // a failure inside the run (ag_fail), else ""
} result;

static unsigned char *g_poison; // POISON_BYTES of 0xff: NaN as f32 and as bf16

// Fills the whole step arena of ctx with NaN and empties it (one chunk: kept as it is).
static void poison(ag_ctx *ctx) {
    ag_step_reset(ctx);
    if (ctx->step_data.capacity < POISON_BYTES) {
        ag_new(ctx, AG_U8, AG_SHAPE((int64_t)POISON_BYTES));
        ag_step_reset(ctx); // merged into one chunk
    }
    size_t cap = ctx->step_data.capacity / 64 * 64, done = 0;
    ag_tensor *t = ag_new(ctx, AG_U8, AG_SHAPE((int64_t)cap));
    const ag_backend *be = ag_backend_for(ctx->device);
    while (done < cap) {
        size_t n = cap - done < POISON_BYTES ? cap - done : POISON_BYTES;
        be->copy_from_host((char *)t->data + done, g_poison, n);
        done += n;
    }
    ag_step_reset(ctx);
}

static double *to_host(const ag_tensor *t, int64_t *len) {
    int64_t n = ag_numel(t);
    *len = n;
    double *d = ag_xmalloc((size_t)(n ? n : 1) * sizeof *d, "parity result");
    void *h = ag_xmalloc(ag_nbytes(t) + 1, "parity copy");
    ag_copy_to_host(t, h);
    for (int64_t i = 0; i < n; i++)
        d[i] = t->dtype == AG_BF16  ? ag_bf16_to_f32(((uint16_t *)h)[i])
               : t->dtype == AG_F32 ? ((float *)h)[i]
                                    : ((double *)h)[i];
    free(h);
    return d;
}

static void run_inner(ag_ctx *ctx, int ci, ag_dtype dt, result *r) {
    env e = {.ctx = ctx, .dt = dt, .rng = {0x9e3779b97f4a7c15ull * (uint64_t)(ci + 1) + dt}};
    poison(ctx);
    const size_t cap = ctx->step_data.capacity;
    ag_tensor *seed = NULL;
    for (e.round = 0; e.round < 2; e.round++) {
        e.next = 0;
        ag_tensor *out = cases[ci].fn(&e);
        if (!ag_is_contiguous(out)) out = ag_contiguous(ctx, out);
        if (e.round == 0) {
            r->v[0] = to_host(out, &r->len[0]);
            r->n = 1;
            seed = rand_tensor(&e, out->dtype, ag_shape_of(out), 1);
        }
        ag_backward_from(ctx, out, seed);
    }
    for (int i = 0; i < e.n; i++) {
        ag_tensor *t = e.in[i];
        if (!ag_dtype_is_float(t->dtype) || !t->requires_grad) continue;
        r->v[r->n] = t->grad ? to_host(t->grad, &r->len[r->n]) : NULL;
        if (r->v[r->n])
            for (int64_t j = 0; j < r->len[r->n]; j++) r->v[r->n][j] *= 0.5; // two rounds
        r->n++;
    }
    if (ctx->step_data.capacity != cap)
        ag_fail("the run outgrew the poisoned step arena (%zu bytes)", cap);
}

static void run(ag_ctx *ctx, int ci, ag_dtype dt, result *r) {
    memset(r, 0, sizeof *r);
    tl_catch_begin();
    if (setjmp(tl_jmp) == 0)
        run_inner(ctx, ci, dt, r);
    else
        snprintf(r->error, sizeof r->error, "%s", tl_msg);
    tl_catch_end();
}

static void result_free(result *r) {
    for (int i = 0; i < r->n; i++) free(r->v[i]);
}

// Normwise relative error; infinite where either side holds a NaN or an Inf.
static double nrel(const double *got, const double *want, int64_t n) {
    double d2 = 0, w2 = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) || !isfinite(want[i])) return INFINITY;
        d2 += (got[i] - want[i]) * (got[i] - want[i]);
        w2 += want[i] * want[i];
    }
    return w2 > 0 ? sqrt(d2 / w2) : sqrt(d2);
}

// Compares one case at one dtype; returns its worst output and gradient errors.
static void compare(int ci, ag_dtype dt, const result *got, const result *want, double *e_out,
                    double *e_grad, const char *dev) {
    const char *name = cases[ci].name, *dn = ag_dtype_name(dt);
    const double tol = dt == AG_BF16 ? TOL_BF16 : TOL_F32;
    *e_out = *e_grad = INFINITY;
    TL_CHECK(!want->error[0], "%s %s [cpu]: %s", name, dn, want->error);
    TL_CHECK(!got->error[0], "%s %s [%s]: %s", name, dn, dev, got->error);
    if (got->error[0] || want->error[0]) return;
    TL_CHECK(got->n == want->n, "%s %s: %d results on %s, %d on cpu", name, dn, got->n, dev,
             want->n);
    if (got->n != want->n) return;
    *e_grad = 0;
    for (int i = 0; i < got->n; i++) {
        const bool have = got->v[i] && want->v[i] && got->len[i] == want->len[i];
        TL_CHECK(have, "%s %s: %s %d missing or of another size", name, dn,
                 i ? "gradient" : "output", i);
        double err = have ? nrel(got->v[i], want->v[i], got->len[i]) : INFINITY;
        if (i == 0) {
            *e_out = err;
            TL_CHECK(err <= tol, "%s %s: output error %.3g > %.0e", name, dn, err, tol);
        } else {
            *e_grad = fmax(*e_grad, err);
            TL_CHECK(err <= tol, "%s %s: gradient of input %d error %.3g > %.0e", name, dn, i, err,
                     tol);
        }
    }
}

// AdamW (not an op, but every training step's last kernel): f32 and bf16 parameters of
// awkward sizes, with and without weight decay, three steps with gradient clipping. Results:
// each parameter, each f32 master copy, and the three gradient norms; the parameters
// compare at their dtype's tolerance, the masters and norms at f32's.
#define OPT_N 4
static const ag_shape opt_shapes[OPT_N] = {{2, {37, 65}}, {1, {129}}, {2, {33, 17}}, {1, {1031}}};
static const ag_dtype opt_dtypes[OPT_N] = {AG_F32, AG_F32, AG_BF16, AG_BF16};
static const bool opt_decay[OPT_N] = {true, false, true, false};

static void optim_inner(ag_ctx *ctx, result *r) {
    env e = {.ctx = ctx, .rng = {0x5eed}};
    ag_tensor *p[OPT_N];
    for (int i = 0; i < OPT_N; i++) {
        char name[32];
        snprintf(name, sizeof name, "p%d", i);
        p[i] = ag_param(ctx, name, opt_dtypes[i], opt_shapes[i]);
        ag_tensor *h = rand_tensor(&e, opt_dtypes[i], opt_shapes[i], 0.5);
        void *buf = ag_xmalloc(ag_nbytes(h) + 1, "parity optim");
        ag_copy_to_host(h, buf);
        ag_copy_from_host(p[i], buf);
        free(buf);
        ag_set_trainable(ctx, p[i], true);
    }
    ag_adamw *opt = ag_adamw_new(ctx, p, OPT_N, opt_decay, (ag_adamw_config){0.9, 0.95, 1e-8, 0.1});
    double norms[3];
    for (int step = 0; step < 3; step++) {
        for (int i = 0; i < OPT_N; i++) {
            ag_tensor *g = rand_tensor(&e, opt_dtypes[i], opt_shapes[i], step == 1 ? 5 : 0.3);
            void *buf = ag_xmalloc(ag_nbytes(g) + 1, "parity optim");
            ag_copy_to_host(g, buf);
            ag_copy_from_host(p[i]->grad, buf);
            free(buf);
        }
        norms[step] = ag_clip_grad_norm(p, OPT_N, 1.0); // step 1 clips
        ag_adamw_step(opt, 1e-2);
        ag_step_reset(ctx);
    }
    for (int i = 0; i < OPT_N; i++) {
        r->v[r->n] = to_host(p[i], &r->len[r->n]);
        r->n++;
    }
    for (int i = 0; i < OPT_N; i++)
        if (opt->master[i]) {
            r->v[r->n] = to_host(opt->master[i], &r->len[r->n]);
            r->n++;
        }
    r->v[r->n] = ag_xmalloc(sizeof norms, "parity optim");
    memcpy(r->v[r->n], norms, sizeof norms);
    r->len[r->n++] = 3;
    ag_adamw_free(opt);
}

static void optim_run(ag_device dev, result *r) {
    memset(r, 0, sizeof *r);
    tl_catch_begin();
    if (setjmp(tl_jmp) == 0) {
        ag_ctx *ctx = ag_ctx_new(dev);
        optim_inner(ctx, r);
        ag_ctx_free(ctx);
    } else
        snprintf(r->error, sizeof r->error, "%s", tl_msg);
    tl_catch_end();
}

// Returns the worst error of the parameters and of the masters and norms.
static void optim_check(ag_device device, const char *dev, double *e_param, double *e_master) {
    result want, got;
    optim_run(AG_CPU, &want);
    optim_run(device, &got);
    *e_param = *e_master = INFINITY;
    TL_CHECK(!want.error[0], "adamw [cpu]: %s", want.error);
    TL_CHECK(!got.error[0], "adamw [%s]: %s", dev, got.error);
    if (!want.error[0] && !got.error[0] && got.n == want.n) {
        *e_param = *e_master = 0;
        for (int i = 0; i < got.n; i++) {
            const bool is_param = i < OPT_N, bf = is_param && opt_dtypes[i] == AG_BF16;
            const double tol = bf ? TOL_BF16 : TOL_F32;
            const double err =
                got.len[i] == want.len[i] ? nrel(got.v[i], want.v[i], got.len[i]) : INFINITY;
            TL_CHECK(err <= tol, "adamw: %s %d error %.3g > %.0e",
                     is_param        ? "parameter"
                     : i < got.n - 1 ? "master"
                                     : "gradient norms",
                     is_param ? i : i - OPT_N, err, tol);
            if (is_param)
                *e_param = fmax(*e_param, err);
            else
                *e_master = fmax(*e_master, err);
        }
    }
    TL_CHECK(got.n == want.n, "adamw: %d results on %s, %d on cpu", got.n, dev, want.n);
    result_free(&want);
    result_free(&got);
}

// Indices on the other device than their table: a kernel would read a pointer of the wrong
// memory, so each op refuses them with one line naming both tensors.
static void device_mismatch(ag_ctx *cpu, ag_ctx *gpu) {
    const int32_t v[2] = {0, 1};
    ag_tensor *tg = ag_zeros(gpu, AG_F32, AG_SHAPE(4, 3)),
              *tc = ag_zeros(cpu, AG_F32, AG_SHAPE(4, 3));
    ag_tensor *ic = ag_new(cpu, AG_I32, AG_SHAPE(2)), *ig = ag_new(gpu, AG_I32, AG_SHAPE(2));
    ag_copy_from_host(ic, v);
    ag_copy_from_host(ig, v);
    TL_EXPECT_FAIL(ag_embedding(gpu, tg, ic), "embedding", "devices differ", "cuda f32[4,3]");
    TL_EXPECT_FAIL(ag_embedding(cpu, tc, ig), "embedding", "devices differ", "cuda i32[2]");
    TL_EXPECT_FAIL(ag_index_select_rows(gpu, tg, ic), "index_select_rows", "devices differ");
    ag_tensor *src = ag_zeros(gpu, AG_F32, AG_SHAPE(2, 3));
    TL_EXPECT_FAIL(ag_scatter_rows(gpu, tg, ic, src), "scatter_rows", "devices differ");
    ag_tensor *logits = ag_zeros(gpu, AG_F32, AG_SHAPE(2, 5));
    TL_EXPECT_FAIL(ag_cross_entropy(gpu, logits, ic, -100), "cross_entropy", "devices differ");
    ag_tensor *x = ag_zeros(gpu, AG_F32, AG_SHAPE(1, 2, 1, 4));
    TL_EXPECT_FAIL(ag_rope(gpu, x, ic, 1e4), "rope", "devices differ");
    ag_tensor *xc = ag_zeros(cpu, AG_F32, AG_SHAPE(1, 2, 1, 4));
    TL_EXPECT_FAIL(ag_rope(cpu, xc, ig, 1e4), "rope", "devices differ");
    ag_step_reset(cpu);
    ag_step_reset(gpu);
}

int main(int argc, char **argv) {
    const bool self = argc > 1 && strcmp(argv[1], "--cpu-vs-cpu") == 0;
    if (!self && !ag_cuda_available()) {
        printf("skip: no CUDA device visible\n");
        return 77;
    }
    const ag_device dev = self ? AG_CPU : AG_CUDA;
    const char *dev_name = self ? "cpu (self-check)" : "cuda";
    g_poison = ag_xmalloc(POISON_BYTES, "poison");
    memset(g_poison, 0xff, POISON_BYTES);
    ag_ctx *cpu = ag_ctx_new(AG_CPU), *gpu = ag_ctx_new(dev);
    const ag_dtype dts[2] = {AG_F32, AG_BF16};
    int bad_cases = 0;
    for (int ci = 0; ci < NCASES; ci++) {
        double eo[2], eg[2];
        const int failed_before = tl_failed;
        for (int d = 0; d < 2; d++) {
            result want, got;
            run(cpu, ci, dts[d], &want);
            run(gpu, ci, dts[d], &got);
            compare(ci, dts[d], &got, &want, &eo[d], &eg[d], dev_name);
            result_free(&want);
            result_free(&got);
        }
        const bool ok = tl_failed == failed_before;
        bad_cases += !ok;
        printf("%-28s f32 out %8.2e grad %8.2e | bf16 out %8.2e grad %8.2e  %s\n", cases[ci].name,
               eo[0], eg[0], eo[1], eg[1], ok ? "ok" : "FAIL");
        fflush(stdout);
    }
    {
        double ep, em;
        const int failed_before = tl_failed;
        optim_check(dev, dev_name, &ep, &em);
        const bool ok = tl_failed == failed_before;
        bad_cases += !ok;
        printf("%-28s params %8.2e | masters, grad norms %8.2e  %s\n", "adamw + clip_grad_norm", ep,
               em, ok ? "ok" : "FAIL");
    }
    if (!self) device_mismatch(cpu, gpu);
    printf("%s vs cpu: %d of %d cases agree (f32 <= %.0e, bf16 <= %.0e)\n", dev_name,
           NCASES + 1 - bad_cases, NCASES + 1, TOL_F32, TOL_BF16);
    ag_ctx_free(cpu);
    ag_ctx_free(gpu);
    free(g_poison);
    return tl_summary("test_cuda_parity");
}
