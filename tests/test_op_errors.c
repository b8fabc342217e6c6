// test_op_errors.c: bad input to an op fails with one line naming the op and the offending
// shapes (or values): never a crash, never a silent broadcast or out-of-range read.
// Covers mismatched elementwise shapes, matmul/linear inner dims, dtype mismatches, integer
// tensors in float ops, ids and targets out of range, reshape/slice/concat/split/permute
// mistakes, attention and rope shape rules, scatter/index rows out of range, strided inputs
// where a contiguous one is needed, and a few argument checks (dims, dropout p, seeds).
#include "testlib.h"

static ag_ctx *ctx;

// A zero-filled step tensor.
static ag_tensor *T(ag_dtype dt, ag_shape s) {
    return ag_zeros(ctx, dt, s);
}

static ag_tensor *ids(ag_shape s, const int32_t *v) {
    ag_tensor *t = ag_new(ctx, AG_I32, s);
    ag_copy_from_host(t, v);
    return t;
}

static void elementwise(void) {
    ag_tensor *a34 = T(AG_F32, AG_SHAPE(3, 4)), *b43 = T(AG_F32, AG_SHAPE(4, 3));
    ag_tensor *a23 = T(AG_F32, AG_SHAPE(2, 3)), *b32 = T(AG_F32, AG_SHAPE(3, 2));
    ag_tensor *a234 = T(AG_F32, AG_SHAPE(2, 3, 4)), *b33 = T(AG_F32, AG_SHAPE(3, 3));
    ag_tensor *v5 = T(AG_F32, AG_SHAPE(5)), *v4 = T(AG_F32, AG_SHAPE(4));
    TL_EXPECT_FAIL(ag_add(ctx, a34, b43), "add", "[3,4]", "[4,3]");
    TL_EXPECT_FAIL(ag_add(ctx, a23, b32), "add", "[2,3]", "[3,2]");
    TL_EXPECT_FAIL(ag_mul(ctx, a34, b43), "mul", "[3,4]", "[4,3]");
    TL_EXPECT_FAIL(ag_mul(ctx, a23, b32), "mul", "[2,3]", "[3,2]");
    TL_EXPECT_FAIL(ag_sub(ctx, v5, v4), "sub", "[5]", "[4]");
    // a trailing dim of 3 against 4: no broadcast, although the leading dims would
    TL_EXPECT_FAIL(ag_add(ctx, a234, b33), "add", "[2,3,4]", "[3,3]");
    TL_EXPECT_FAIL(ag_mul(ctx, b33, a234), "mul", "[3,3]", "[2,3,4]");
    TL_EXPECT_FAIL(ag_swiglu(ctx, a34, b43), "swiglu", "[3,4]", "[4,3]");

    // dtypes: never mixed silently, and integer tensors are not numbers to compute with
    ag_tensor *h34 = T(AG_BF16, AG_SHAPE(3, 4)), *d34 = T(AG_F64, AG_SHAPE(3, 4));
    ag_tensor *i34 = T(AG_I32, AG_SHAPE(3, 4)), *u34 = T(AG_U8, AG_SHAPE(3, 4));
    TL_EXPECT_FAIL(ag_add(ctx, a34, h34), "add", "f32[3,4]", "bf16[3,4]");
    TL_EXPECT_FAIL(ag_mul(ctx, d34, a34), "mul", "f64[3,4]", "f32[3,4]");
    TL_EXPECT_FAIL(ag_swiglu(ctx, a34, h34), "swiglu", "f32[3,4]", "bf16[3,4]");
    TL_EXPECT_FAIL(ag_add(ctx, i34, i34), "add", "i32[3,4]");
    TL_EXPECT_FAIL(ag_add(ctx, a34, i34), "add", "i32[3,4]");
    TL_EXPECT_FAIL(ag_silu(ctx, i34), "silu", "i32[3,4]");
    TL_EXPECT_FAIL(ag_gelu(ctx, u34), "gelu", "u8[3,4]");
    TL_EXPECT_FAIL(ag_scale(ctx, i34, 2.0), "scale", "i32[3,4]");
    TL_EXPECT_FAIL(ag_softmax(ctx, i34), "softmax", "i32[3,4]");
    TL_EXPECT_FAIL(ag_dropout(ctx, i34, 0.1, 1), "dropout", "i32[3,4]");
    TL_EXPECT_FAIL(ag_dropout(ctx, a34, -0.1, 1), "dropout", "-0.1");
    TL_EXPECT_FAIL(ag_dropout(ctx, a34, 1.5, 1), "dropout", "1.5");
}

static void linear_algebra(void) {
    ag_tensor *a57 = T(AG_F32, AG_SHAPE(5, 7)), *b63 = T(AG_F32, AG_SHAPE(6, 3));
    ag_tensor *b73 = T(AG_F32, AG_SHAPE(7, 3));
    TL_EXPECT_FAIL(ag_matmul(ctx, a57, b63, false, false), "matmul", "[5,7]", "[6,3]");
    // transposes change which dim is inner: a^T is (7,5), so K = 5 against b's 7
    TL_EXPECT_FAIL(ag_matmul(ctx, a57, b73, true, false), "matmul", "[5,7]", "[7,3]");
    TL_EXPECT_FAIL(ag_matmul(ctx, a57, b73, false, true), "matmul", "[5,7]", "[7,3]");
    ag_tensor *a257 = T(AG_F32, AG_SHAPE(2, 5, 7)), *b373 = T(AG_F32, AG_SHAPE(3, 7, 3));
    TL_EXPECT_FAIL(ag_matmul(ctx, a257, b373, false, false), "matmul", "[2,5,7]", "[3,7,3]");
    ag_tensor *v7 = T(AG_F32, AG_SHAPE(7));
    TL_EXPECT_FAIL(ag_matmul(ctx, v7, b73, false, false), "matmul", "[7]");
    ag_tensor *d73 = T(AG_F64, AG_SHAPE(7, 3)), *i57 = T(AG_I32, AG_SHAPE(5, 7));
    TL_EXPECT_FAIL(ag_matmul(ctx, a57, d73, false, false), "matmul", "f32[5,7]", "f64[7,3]");
    TL_EXPECT_FAIL(ag_matmul(ctx, i57, b73, false, false), "matmul", "i32[5,7]");

    ag_tensor *x47 = T(AG_F32, AG_SHAPE(4, 7)), *w56 = T(AG_F32, AG_SHAPE(5, 6));
    ag_tensor *w57 = T(AG_F32, AG_SHAPE(5, 7)), *bias4 = T(AG_F32, AG_SHAPE(4));
    TL_EXPECT_FAIL(ag_linear(ctx, x47, w56, NULL), "linear", "[4,7]", "[5,6]");
    TL_EXPECT_FAIL(ag_linear(ctx, x47, w57, bias4), "linear", "[4]", "[5,7]");
    ag_tensor *wh = T(AG_BF16, AG_SHAPE(5, 7));
    TL_EXPECT_FAIL(ag_linear(ctx, x47, wh, NULL), "linear", "f32[4,7]", "bf16[5,7]");
}

static void views(void) {
    ag_tensor *x34 = T(AG_F32, AG_SHAPE(3, 4));
    TL_EXPECT_FAIL(ag_reshape(ctx, x34, AG_SHAPE(5, 3)), "reshape", "[3,4]", "[5,3]");
    TL_EXPECT_FAIL(ag_reshape(ctx, x34, AG_SHAPE(5, -1)), "reshape", "[3,4]");
    TL_EXPECT_FAIL(ag_reshape(ctx, x34, AG_SHAPE(-1, -1)), "reshape", "[3,4]");
    TL_EXPECT_FAIL(ag_slice(ctx, x34, 1, 2, 6), "slice", "[3,4]");
    TL_EXPECT_FAIL(ag_slice(ctx, x34, 0, -1, 2), "slice", "[3,4]");
    TL_EXPECT_FAIL(ag_slice(ctx, x34, 0, 2, 1), "slice", "[3,4]");
    TL_EXPECT_FAIL(ag_slice(ctx, x34, 2, 0, 1), "slice", "[3,4]");
    TL_EXPECT_FAIL(ag_transpose(ctx, x34, 0, 2), "transpose", "[3,4]");
    TL_EXPECT_FAIL(ag_permute(ctx, x34, AG_SHAPE(0, 0)), "permute", "[3,4]");
    TL_EXPECT_FAIL(ag_permute(ctx, x34, AG_SHAPE(1, 0, 2)), "permute", "[3,4]");
    ag_tensor *parts[2];
    TL_EXPECT_FAIL(ag_split(ctx, x34, 1, 2, (const int64_t[]){1, 2}, parts), "split", "[3,4]");

    ag_tensor *a23 = T(AG_F32, AG_SHAPE(2, 3)), *b33 = T(AG_F32, AG_SHAPE(3, 3));
    ag_tensor *c231 = T(AG_F32, AG_SHAPE(2, 3, 1)), *h23 = T(AG_BF16, AG_SHAPE(2, 3));
    TL_EXPECT_FAIL(ag_concat(ctx, 2, (ag_tensor *[]){a23, b33}, 1), "concat", "[2,3]", "[3,3]");
    TL_EXPECT_FAIL(ag_concat(ctx, 2, (ag_tensor *[]){a23, c231}, 0), "concat", "[2,3]", "[2,3,1]");
    TL_EXPECT_FAIL(ag_concat(ctx, 2, (ag_tensor *[]){a23, h23}, 0), "concat", "f32[2,3]",
                   "bf16[2,3]");
    TL_EXPECT_FAIL(ag_concat(ctx, 2, (ag_tensor *[]){a23, a23}, 2), "concat", "[2,3]");

    // strided views where the op needs contiguous memory
    ag_tensor *t = ag_transpose(ctx, x34, 0, 1); // f32[4,3] view
    TL_EXPECT_FAIL(ag_reshape(ctx, t, AG_SHAPE(12)), "reshape", "[4,3] view");
    TL_EXPECT_FAIL(ag_softmax(ctx, t), "softmax", "[4,3] view");
    TL_EXPECT_FAIL(ag_rmsnorm(ctx, t, T(AG_F32, AG_SHAPE(3)), 1e-6), "rmsnorm", "[4,3] view");
    TL_EXPECT_FAIL(ag_silu(ctx, t), "silu", "[4,3] view");
    TL_EXPECT_FAIL(ag_cross_entropy(ctx, t, T(AG_I32, AG_SHAPE(4)), -100), "cross_entropy",
                   "[4,3] view");
    TL_EXPECT_FAIL(ag_cast(ctx, t, AG_BF16), "cast", "[4,3] view");
}

static void normalisation(void) {
    ag_tensor *x38 = T(AG_F32, AG_SHAPE(3, 8)), *w7 = T(AG_F32, AG_SHAPE(7));
    ag_tensor *w8 = T(AG_F32, AG_SHAPE(8)), *w28 = T(AG_F32, AG_SHAPE(2, 8));
    TL_EXPECT_FAIL(ag_rmsnorm(ctx, x38, w7, 1e-6), "rmsnorm", "[3,8]", "[7]");
    TL_EXPECT_FAIL(ag_rmsnorm(ctx, x38, w28, 1e-6), "rmsnorm", "[3,8]", "[2,8]");
    TL_EXPECT_FAIL(ag_layernorm(ctx, x38, w8, w7, 1e-5), "layernorm", "[3,8]", "[7]");
    TL_EXPECT_FAIL(ag_layernorm(ctx, x38, w7, w8, 1e-5), "layernorm", "[3,8]", "[7]");
    ag_tensor *wh = T(AG_BF16, AG_SHAPE(8));
    TL_EXPECT_FAIL(ag_rmsnorm(ctx, x38, wh, 1e-6), "rmsnorm", "f32[3,8]", "bf16[8]");
    TL_EXPECT_FAIL(ag_sum(ctx, x38, 2), "sum", "[3,8]");
    TL_EXPECT_FAIL(ag_mean(ctx, x38, -3), "mean", "[3,8]");
    ag_tensor *i38 = T(AG_I32, AG_SHAPE(3, 8));
    TL_EXPECT_FAIL(ag_mean_all(ctx, i38), "mean_all", "i32[3,8]");
    TL_EXPECT_FAIL(ag_l2_normalize(ctx, i38, 1e-6), "l2_normalize", "i32[3,8]");
}

static void transformer(void) {
    ag_tensor *x7 = T(AG_F32, AG_SHAPE(1, 4, 2, 7));
    ag_tensor *pos4 = T(AG_I32, AG_SHAPE(4)), *pos5 = T(AG_I32, AG_SHAPE(5));
    TL_EXPECT_FAIL(ag_rope(ctx, x7, pos4, 10000.0), "rope", "[1,4,2,7]");
    ag_tensor *x8 = T(AG_F32, AG_SHAPE(1, 4, 2, 8));
    TL_EXPECT_FAIL(ag_rope(ctx, x8, pos5, 10000.0), "rope", "[1,4,2,8]", "[5]");
    TL_EXPECT_FAIL(ag_rope(ctx, x8, T(AG_I32, AG_SHAPE(2, 4)), 10000.0), "rope", "[1,4,2,8]",
                   "[2,4]");
    TL_EXPECT_FAIL(ag_rope(ctx, x8, T(AG_F32, AG_SHAPE(4)), 10000.0), "rope", "f32[4]");
    TL_EXPECT_FAIL(ag_rope(ctx, T(AG_F32, AG_SHAPE(4, 2, 8)), pos4, 10000.0), "rope", "[4,2,8]");
    // innermost dim strided: D of a transposed view
    ag_tensor *xt = ag_transpose(ctx, T(AG_F32, AG_SHAPE(1, 4, 8, 2)), 2, 3);
    TL_EXPECT_FAIL(ag_rope(ctx, xt, pos4, 10000.0), "rope", "[1,4,2,8] view");

    ag_tensor *q3 = T(AG_F32, AG_SHAPE(1, 4, 3, 8)), *kv2 = T(AG_F32, AG_SHAPE(1, 4, 2, 8));
    TL_EXPECT_FAIL(ag_attention(ctx, q3, kv2, kv2, NULL, true, 0.35), "attention", "[1,4,3,8]",
                   "[1,4,2,8]");
    ag_tensor *q2 = T(AG_F32, AG_SHAPE(1, 4, 2, 8)), *k6 = T(AG_F32, AG_SHAPE(1, 4, 2, 6));
    TL_EXPECT_FAIL(ag_attention(ctx, q2, k6, k6, NULL, true, 0.35), "attention", "[1,4,2,8]",
                   "[1,4,2,6]");
    ag_tensor *v5 = T(AG_F32, AG_SHAPE(1, 5, 2, 8));
    TL_EXPECT_FAIL(ag_attention(ctx, q2, kv2, v5, NULL, false, 0.35), "attention", "[1,4,2,8]",
                   "[1,5,2,8]");
    ag_tensor *kb2 = T(AG_F32, AG_SHAPE(2, 4, 2, 8));
    TL_EXPECT_FAIL(ag_attention(ctx, q2, kb2, kb2, NULL, false, 0.35), "attention", "[1,4,2,8]",
                   "[2,4,2,8]");
    ag_tensor *mask15 = T(AG_U8, AG_SHAPE(1, 5)), *maskf = T(AG_F32, AG_SHAPE(1, 4));
    TL_EXPECT_FAIL(ag_attention(ctx, q2, kv2, kv2, mask15, false, 0.35), "attention", "[1,5]");
    TL_EXPECT_FAIL(ag_attention(ctx, q2, kv2, kv2, maskf, false, 0.35), "attention", "f32[1,4]");
    ag_tensor *kvh = T(AG_BF16, AG_SHAPE(1, 4, 2, 8));
    TL_EXPECT_FAIL(ag_attention(ctx, q2, kvh, kvh, NULL, false, 0.35), "attention", "f32[1,4,2,8]",
                   "bf16[1,4,2,8]");
    TL_EXPECT_FAIL(ag_attention(ctx, T(AG_F32, AG_SHAPE(4, 2, 8)), kv2, kv2, NULL, false, 0.35),
                   "attention", "[4,2,8]");
}

static void indexing(void) {
    ag_tensor *table = T(AG_F32, AG_SHAPE(10, 6));
    TL_EXPECT_FAIL(ag_embedding(ctx, table, ids(AG_SHAPE(2, 2), (const int32_t[]){3, 0, 12, 1})),
                   "embedding", "12");
    TL_EXPECT_FAIL(ag_embedding(ctx, table, ids(AG_SHAPE(2), (const int32_t[]){-1, 0})),
                   "embedding", "-1");
    TL_EXPECT_FAIL(ag_embedding(ctx, table, ids(AG_SHAPE(1), (const int32_t[]){10})), "embedding",
                   "10");
    TL_EXPECT_FAIL(ag_embedding(ctx, table, T(AG_F32, AG_SHAPE(3))), "embedding", "f32[3]");
    TL_EXPECT_FAIL(ag_embedding(ctx, T(AG_F32, AG_SHAPE(10)), ids(AG_SHAPE(1), (int32_t[]){1})),
                   "embedding", "[10]");

    ag_tensor *x75 = T(AG_F32, AG_SHAPE(7, 5));
    TL_EXPECT_FAIL(ag_index_select_rows(ctx, x75, ids(AG_SHAPE(3), (const int32_t[]){0, 7, 1})),
                   "index_select_rows", "7");
    TL_EXPECT_FAIL(ag_index_select_rows(ctx, x75, ids(AG_SHAPE(1), (const int32_t[]){-2})),
                   "index_select_rows", "-2");
    TL_EXPECT_FAIL(ag_index_select_rows(ctx, x75, ids(AG_SHAPE(1, 2), (const int32_t[]){0, 1})),
                   "index_select_rows", "[1,2]");

    ag_tensor *base = T(AG_F32, AG_SHAPE(6, 4)), *src2 = T(AG_F32, AG_SHAPE(2, 4));
    TL_EXPECT_FAIL(ag_scatter_rows(ctx, base, ids(AG_SHAPE(2), (const int32_t[]){1, 6}), src2),
                   "scatter_rows", "6");
    TL_EXPECT_FAIL(ag_scatter_rows(ctx, base, ids(AG_SHAPE(2), (const int32_t[]){-1, 2}), src2),
                   "scatter_rows", "-1");
    // rows must be distinct: a repeated row would have two sources
    TL_EXPECT_FAIL(ag_scatter_rows(ctx, base, ids(AG_SHAPE(2), (const int32_t[]){3, 3}), src2),
                   "scatter_rows", "3");
    TL_EXPECT_FAIL(ag_scatter_rows(ctx, base, ids(AG_SHAPE(3), (const int32_t[]){0, 1, 2}), src2),
                   "scatter_rows", "[3]", "[2,4]");
    ag_tensor *src25 = T(AG_F32, AG_SHAPE(2, 5));
    TL_EXPECT_FAIL(ag_scatter_rows(ctx, base, ids(AG_SHAPE(2), (const int32_t[]){0, 1}), src25),
                   "scatter_rows", "[6,4]", "[2,5]");

    ag_tensor *logits = T(AG_F32, AG_SHAPE(4, 9));
    TL_EXPECT_FAIL(
        ag_cross_entropy(ctx, logits, ids(AG_SHAPE(4), (const int32_t[]){1, 9, -100, 2}), -100),
        "cross_entropy", "9");
    TL_EXPECT_FAIL(
        ag_cross_entropy(ctx, logits, ids(AG_SHAPE(4), (const int32_t[]){1, -5, -100, 2}), -100),
        "cross_entropy", "-5");
    TL_EXPECT_FAIL(ag_cross_entropy(ctx, logits, T(AG_I32, AG_SHAPE(5)), -100), "cross_entropy",
                   "[4,9]", "[5]");
    TL_EXPECT_FAIL(ag_cross_entropy(ctx, logits, T(AG_F32, AG_SHAPE(4)), -100), "cross_entropy",
                   "f32[4]");
    TL_EXPECT_FAIL(
        ag_cross_entropy(ctx, T(AG_F32, AG_SHAPE(2, 2, 9)), T(AG_I32, AG_SHAPE(4)), -100),
        "cross_entropy", "[2,2,9]");
}

static void backward_seed(void) {
    ag_tensor *x = T(AG_F32, AG_SHAPE(3, 4));
    ag_set_requires_grad(x, true);
    ag_tensor *y = ag_silu(ctx, x);
    TL_EXPECT_FAIL(ag_backward_from(ctx, y, T(AG_F32, AG_SHAPE(4, 3))), "backward", "[3,4]",
                   "[4,3]");
    TL_EXPECT_FAIL(ag_backward(ctx, y), "backward");
}

int main(void) {
    ctx = ag_ctx_new(AG_CPU);
    void (*groups[])(void) = {elementwise, linear_algebra, views,        normalisation,
                              transformer, indexing,       backward_seed};
    for (size_t i = 0; i < sizeof groups / sizeof *groups; i++) {
        ag_step_reset(ctx);
        groups[i]();
    }
    // The context still works after all those refusals.
    ag_step_reset(ctx);
    ag_tensor *a = T(AG_F32, AG_SHAPE(3, 4)), *b = T(AG_F32, AG_SHAPE(4));
    ag_tensor *c = ag_add(ctx, a, b);
    TL_CHECK(c->ndim == 2 && c->shape[0] == 3 && c->shape[1] == 4, "add after errors");
    ag_ctx_free(ctx);
    return tl_summary("test_op_errors");
}
