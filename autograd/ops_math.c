// ops_math.c: elementwise ops with broadcasting, activations, dropout, matmul and linear,
// normalisations, softmax and reductions.
#include <stdio.h>

#include "ops_internal.h"

// Elementwise binary -------------------------------------------------------------------------

static const char *binary_name(ag_binary_op op) {
    return op == AG_BIN_ADD ? "add" : op == AG_BIN_SUB ? "sub" : "mul";
}

// numpy broadcasting, right-aligned; a dim broadcasts only when it is 1.
static ag_shape broadcast(const char *op, const ag_tensor *a, const ag_tensor *b, ag_bcast *bc) {
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    ag_shape s = {.ndim = nd};
    for (int i = 0; i < AG_MAX_DIMS; i++) {
        bc->shape[i] = 1;
        bc->a_stride[i] = bc->b_stride[i] = 0;
    }
    for (int i = 0; i < nd; i++) { // i counts from the right
        int ia = a->ndim - 1 - i, ib = b->ndim - 1 - i, io = AG_MAX_DIMS - 1 - i;
        int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (da != db && da != 1 && db != 1)
            ag_op_fail2(op, "shapes do not broadcast", a, "a", b, "b");
        int64_t d = da > db ? da : db;
        if (da == 0 || db == 0) d = 0;
        s.d[nd - 1 - i] = d;
        bc->shape[io] = d;
        if (ia >= 0 && da == d) bc->a_stride[io] = a->stride[ia];
        if (ib >= 0 && db == d) bc->b_stride[io] = b->stride[ib];
    }
    bc->a_full = ag_numel(a) == ag_shape_numel(s);
    bc->b_full = ag_numel(b) == ag_shape_numel(s);
    return s;
}

static void binary_backward(ag_ctx *ctx, ag_node *n) {
    ag_tensor *a = n->in[0], *b = n->in[1];
    const ag_kernels *k = ag_kernels_of(n->op, n->out);
    AG_KERNEL(n->op, k, binary_bwd)
    ((ag_binary_op)n->i[0], n->extra, a->data, b->data, n->out->grad->data, ag_grad_ptr(ctx, a),
     ag_grad_ptr(ctx, b));
}

static ag_tensor *binary(ag_ctx *ctx, ag_binary_op bop, ag_tensor *a, ag_tensor *b) {
    const char *op = binary_name(bop);
    ag_need_float(op, a, "a");
    ag_need_float(op, b, "b");
    ag_need_same_kind(op, a, "a", b, "b");
    ag_need_contiguous(op, a, "a");
    ag_need_contiguous(op, b, "b");
    ag_bcast *bc = ag_step_alloc(ctx, sizeof *bc);
    ag_tensor *out = ag_new_like(ctx, a, broadcast(op, a, b, bc));
    const ag_kernels *k = ag_kernels_of(op, a);
    AG_KERNEL(op, k, binary_fwd)(bop, bc, a->data, b->data, out->data);
    ag_tensor *in[2] = {a, b};
    ag_node *node = ag_record(ctx, op, binary_backward, out, 2, in);
    if (node) {
        node->i[0] = bop;
        node->extra = bc;
    }
    return out;
}

ag_tensor *ag_add(ag_ctx *ctx, ag_tensor *a, ag_tensor *b) {
    return binary(ctx, AG_BIN_ADD, a, b);
}
ag_tensor *ag_sub(ag_ctx *ctx, ag_tensor *a, ag_tensor *b) {
    return binary(ctx, AG_BIN_SUB, a, b);
}
ag_tensor *ag_mul(ag_ctx *ctx, ag_tensor *a, ag_tensor *b) {
    return binary(ctx, AG_BIN_MUL, a, b);
}

// Elementwise unary --------------------------------------------------------------------------

static void unary_backward(ag_ctx *ctx, ag_node *n) {
    ag_tensor *x = n->in[0];
    AG_KERNEL(n->op, ag_kernels_of(n->op, x), unary_bwd)
    ((ag_unary_op)n->i[0], x->data, n->out->grad->data, ag_grad_ptr(ctx, x), ag_numel(x), n->f[0]);
}

static ag_tensor *unary(ag_ctx *ctx, const char *op, ag_unary_op uop, ag_tensor *x, double p) {
    ag_need_float(op, x, "x");
    ag_need_contiguous(op, x, "x");
    ag_tensor *out = ag_new_like(ctx, x, ag_shape_of(x));
    AG_KERNEL(op, ag_kernels_of(op, x), unary_fwd)(uop, x->data, out->data, ag_numel(x), p);
    ag_node *node = ag_record(ctx, op, unary_backward, out, 1, &x);
    if (node) {
        node->i[0] = uop;
        node->f[0] = p;
    }
    return out;
}

ag_tensor *ag_scale(ag_ctx *ctx, ag_tensor *x, double s) {
    return unary(ctx, "scale", AG_UN_SCALE, x, s);
}
ag_tensor *ag_silu(ag_ctx *ctx, ag_tensor *x) {
    return unary(ctx, "silu", AG_UN_SILU, x, 0);
}
ag_tensor *ag_gelu(ag_ctx *ctx, ag_tensor *x) {
    return unary(ctx, "gelu", AG_UN_GELU, x, 0);
}
ag_tensor *ag_gelu_tanh(ag_ctx *ctx, ag_tensor *x) {
    return unary(ctx, "gelu_tanh", AG_UN_GELU_TANH, x, 0);
}
ag_tensor *ag_quick_gelu(ag_ctx *ctx, ag_tensor *x) {
    return unary(ctx, "quick_gelu", AG_UN_QUICK_GELU, x, 0);
}

static void swiglu_backward(ag_ctx *ctx, ag_node *n) {
    ag_tensor *gate = n->in[0], *up = n->in[1];
    AG_KERNEL("swiglu", ag_kernels_of("swiglu", gate), swiglu_bwd)
    (gate->data, up->data, n->out->grad->data, ag_grad_ptr(ctx, gate), ag_grad_ptr(ctx, up),
     ag_numel(gate));
}

ag_tensor *ag_swiglu(ag_ctx *ctx, ag_tensor *gate, ag_tensor *up) {
    const char *op = "swiglu";
    ag_need_float(op, gate, "gate");
    ag_need_float(op, up, "up");
    ag_need_same_kind(op, gate, "gate", up, "up");
    if (!ag_same_shape(gate, up)) ag_op_fail2(op, "shapes differ", gate, "gate", up, "up");
    ag_need_contiguous(op, gate, "gate");
    ag_need_contiguous(op, up, "up");
    ag_tensor *out = ag_new_like(ctx, gate, ag_shape_of(gate));
    AG_KERNEL(op, ag_kernels_of(op, gate), swiglu_fwd)
    (gate->data, up->data, out->data, ag_numel(gate));
    ag_tensor *in[2] = {gate, up};
    ag_record(ctx, op, swiglu_backward, out, 2, in);
    return out;
}

static void dropout_backward(ag_ctx *ctx, ag_node *n) {
    ag_tensor *x = n->in[0];
    AG_KERNEL("dropout", ag_kernels_of("dropout", x), dropout_bwd)
    (n->out->grad->data, ag_grad_ptr(ctx, x), ag_numel(x), n->f[0], (uint64_t)n->i[0]);
}

ag_tensor *ag_dropout(ag_ctx *ctx, ag_tensor *x, double p, uint64_t seed) {
    const char *op = "dropout";
    ag_need_float(op, x, "x");
    ag_need_contiguous(op, x, "x");
    if (!(p >= 0 && p < 1)) {
        char what[64];
        snprintf(what, sizeof what, "probability %g outside [0, 1)", p);
        ag_op_fail1(op, what, x, "x");
    }
    if (p == 0) return x;
    ag_tensor *out = ag_new_like(ctx, x, ag_shape_of(x));
    AG_KERNEL(op, ag_kernels_of(op, x), dropout_fwd)(x->data, out->data, ag_numel(x), p, seed);
    ag_node *node = ag_record(ctx, op, dropout_backward, out, 1, &x);
    if (node) {
        node->f[0] = p;
        node->i[0] = (int64_t)seed;
    }
    return out;
}

// Matmul and linear ----------------------------------------------------------------------------

typedef struct {
    bool ta, tb, b_shared;
    int64_t batch, M, N, K;
} mm_dims;

static void matmul_backward(ag_ctx *ctx, ag_node *n) {
    ag_tensor *a = n->in[0], *b = n->in[1];
    const mm_dims *m = n->extra;
    const ag_kernels *k = ag_kernels_of("matmul", a);
    const void *g = n->out->grad->data;
    int64_t lda = a->shape[a->ndim - 1], ldb = b->shape[b->ndim - 1];
    int64_t sA = m->M * m->K, sB = m->b_shared ? 0 : m->K * m->N, sC = m->M * m->N;
    if (a->requires_grad) {
        void *ga = ag_grad_of(ctx, a)->data;
        if (!m->ta) // dA (M,K) = dC op(B)^T
            AG_KERNEL("matmul", k, gemm)
        (false, !m->tb, m->M, m->K, m->N, 1, g, m->N, sC, b->data, ldb, sB, 1, ga, lda, sA,
         m->batch);
        else // dA stored (K,M) = op(B) dC^T
            AG_KERNEL("matmul", k, gemm)(m->tb, true, m->K, m->M, m->N, 1, b->data, ldb, sB, g,
                                         m->N, sC, 1, ga, lda, sA, m->batch);
    }
    if (b->requires_grad) {
        void *gb = ag_grad_of(ctx, b)->data;
        size_t es = ag_dtype_size(a->dtype);
        // a shared b sums over batches: one gemm per batch, accumulating in order
        int64_t calls = m->b_shared ? m->batch : 1, per = m->b_shared ? 1 : m->batch;
        for (int64_t i = 0; i < calls; i++) {
            const char *ai = (const char *)a->data + (size_t)(i * sA) * es;
            const char *gi = (const char *)g + (size_t)(i * sC) * es;
            if (!m->tb) // dB (K,N) = op(A)^T dC
                AG_KERNEL("matmul", k, gemm)
            (!m->ta, false, m->K, m->N, m->M, 1, ai, lda, sA, gi, m->N, sC, 1, gb, ldb, sB, per);
            else // dB stored (N,K) = dC^T op(A)
                AG_KERNEL("matmul", k, gemm)(true, m->ta, m->N, m->K, m->M, 1, gi, m->N, sC, ai,
                                             lda, sA, 1, gb, ldb, sB, per);
        }
    }
}

ag_tensor *ag_matmul(ag_ctx *ctx, ag_tensor *a, ag_tensor *b, bool ta, bool tb) {
    const char *op = "matmul";
    ag_need_float(op, a, "a");
    ag_need_float(op, b, "b");
    ag_need_same_kind(op, a, "a", b, "b");
    ag_need_contiguous(op, a, "a");
    ag_need_contiguous(op, b, "b");
    ag_need_ndim(op, a, "a", 2, 4);
    ag_need_ndim(op, b, "b", 2, 4);
    mm_dims *m = ag_step_alloc(ctx, sizeof *m);
    m->ta = ta;
    m->tb = tb;
    int na = a->ndim, nb = b->ndim;
    m->M = ta ? a->shape[na - 1] : a->shape[na - 2];
    m->K = ta ? a->shape[na - 2] : a->shape[na - 1];
    int64_t kb = tb ? b->shape[nb - 1] : b->shape[nb - 2];
    m->N = tb ? b->shape[nb - 2] : b->shape[nb - 1];
    if (kb != m->K) ag_op_fail2(op, "inner dims differ", a, "a", b, "b");
    m->b_shared = nb == 2;
    if (!m->b_shared) {
        bool ok = nb == na;
        for (int i = 0; ok && i < na - 2; i++)
            if (a->shape[i] != b->shape[i]) ok = false;
        if (!ok)
            ag_op_fail2(op, "batch dims differ (b must be 2-D or match a's batch dims)", a, "a", b,
                        "b");
    }
    m->batch = 1;
    ag_shape s = {.ndim = na};
    for (int i = 0; i < na - 2; i++) {
        s.d[i] = a->shape[i];
        m->batch *= a->shape[i];
    }
    s.d[na - 2] = m->M;
    s.d[na - 1] = m->N;
    ag_tensor *out = ag_new_like(ctx, a, s);
    const ag_kernels *k = ag_kernels_of(op, a);
    int64_t lda = a->shape[na - 1], ldb = b->shape[nb - 1];
    if (m->b_shared && !ta) // fold the batch into M: one large gemm
        AG_KERNEL(op, k, gemm)
    (false, tb, m->batch * m->M, m->N, m->K, 1, a->data, lda, 0, b->data, ldb, 0, 0, out->data,
     m->N, 0, 1);
    else AG_KERNEL(op, k, gemm)(ta, tb, m->M, m->N, m->K, 1, a->data, lda, m->M * m->K, b->data,
                                ldb, m->b_shared ? 0 : m->K * m->N, 0, out->data, m->N, m->M * m->N,
                                m->batch);
    ag_tensor *in[2] = {a, b};
    ag_node *node = ag_record(ctx, op, matmul_backward, out, 2, in);
    if (node) node->extra = m;
    return out;
}

static void linear_backward(ag_ctx *ctx, ag_node *n) {
    ag_tensor *x = n->in[0], *w = n->in[1], *bias = n->in[2];
    const ag_kernels *k = ag_kernels_of("linear", x);
    const void *g = n->out->grad->data;
    int64_t rows = ag_rows_of(x), in = w->shape[1], outf = w->shape[0];
    if (x->requires_grad) // dx (rows, in) += dy (rows, out) w (out, in)
        AG_KERNEL("linear", k, gemm)
    (false, false, rows, in, outf, 1, g, outf, 0, w->data, in, 0, 1, ag_grad_of(ctx, x)->data, in,
     0, 1);
    if (w->requires_grad) // dw (out, in) += dy^T x
        AG_KERNEL("linear", k, gemm)
    (true, false, outf, in, rows, 1, g, outf, 0, x->data, in, 0, 1, ag_grad_of(ctx, w)->data, in, 0,
     1);
    if (bias && bias->requires_grad) // db += sum over rows of dy
        AG_KERNEL("linear", k, binary_bwd)
    (AG_BIN_ADD, n->extra, NULL, NULL, g, NULL, ag_grad_of(ctx, bias)->data);
}

ag_tensor *ag_linear(ag_ctx *ctx, ag_tensor *x, ag_tensor *w, ag_tensor *bias) {
    const char *op = "linear";
    ag_need_float(op, x, "x");
    ag_need_float(op, w, "weight");
    ag_need_same_kind(op, x, "x", w, "weight");
    ag_need_contiguous(op, x, "x");
    ag_need_contiguous(op, w, "weight");
    ag_need_ndim(op, x, "x", 1, 4);
    ag_need_ndim(op, w, "weight", 2, 2);
    int64_t in = w->shape[1], outf = w->shape[0];
    if (x->shape[x->ndim - 1] != in) ag_op_fail2(op, "in-features differ", x, "x", w, "weight");
    if (bias) {
        ag_need_same_kind(op, x, "x", bias, "bias");
        ag_need_contiguous(op, bias, "bias");
        if (bias->ndim != 1 || bias->shape[0] != outf)
            ag_op_fail2(op, "bias must be (out)", bias, "bias", w, "weight");
    }
    ag_shape s = ag_shape_of(x);
    s.d[s.ndim - 1] = outf;
    ag_tensor *out = ag_new_like(ctx, x, s);
    const ag_kernels *k = ag_kernels_of(op, x);
    int64_t rows = ag_rows_of(x);
    AG_KERNEL(op, k, gemm)
    (false, true, rows, outf, in, 1, x->data, in, 0, w->data, in, 0, 0, out->data, outf, 0, 1);
    ag_bcast *bc = NULL;
    if (bias) {
        bc = ag_step_alloc(ctx, sizeof *bc);
        broadcast(op, out, bias, bc);
        AG_KERNEL(op, k, binary_fwd)
        (AG_BIN_ADD, bc, out->data, bias->data, out->data); // in place: same index
    }
    ag_tensor *inputs[3] = {x, w, bias};
    ag_node *node = ag_record(ctx, op, linear_backward, out, 3, inputs);
    if (node) node->extra = bc;
    return out;
}

// Normalisation ------------------------------------------------------------------------------

static void need_vector(const char *op, const ag_tensor *x, const ag_tensor *v, const char *name) {
    ag_need_float(op, v, name);
    ag_need_same_kind(op, x, "x", v, name);
    ag_need_contiguous(op, v, name);
    if (v->ndim != 1 || x->ndim < 1 || v->shape[0] != x->shape[x->ndim - 1])
        ag_op_fail2(op, "must be a vector of the last dim", x, "x", v, name);
}

static void rmsnorm_backward(ag_ctx *ctx, ag_node *n) {
    ag_tensor *x = n->in[0], *w = n->in[1];
    AG_KERNEL("rmsnorm", ag_kernels_of("rmsnorm", x), rmsnorm_bwd)
    (x->data, w->data, n->saved[0]->data, n->out->grad->data, ag_grad_ptr(ctx, x),
     ag_grad_ptr(ctx, w), ag_rows_of(x), x->shape[x->ndim - 1]);
}

ag_tensor *ag_rmsnorm(ag_ctx *ctx, ag_tensor *x, ag_tensor *w, double eps) {
    const char *op = "rmsnorm";
    ag_need_float(op, x, "x");
    ag_need_contiguous(op, x, "x");
    need_vector(op, x, w, "weight");
    ag_tensor *out = ag_new_like(ctx, x, ag_shape_of(x));
    ag_tensor *rstd = ag_new_stats(ctx, x, AG_SHAPE(ag_rows_of(x)));
    AG_KERNEL(op, ag_kernels_of(op, x), rmsnorm_fwd)
    (x->data, w->data, out->data, rstd->data, ag_rows_of(x), x->shape[x->ndim - 1], eps);
    ag_tensor *in[2] = {x, w};
    ag_node *node = ag_record(ctx, op, rmsnorm_backward, out, 2, in);
    if (node) node->saved[0] = rstd;
    return out;
}

static void layernorm_backward(ag_ctx *ctx, ag_node *n) {
    ag_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2];
    AG_KERNEL("layernorm", ag_kernels_of("layernorm", x), layernorm_bwd)
    (x->data, w->data, n->saved[0]->data, n->saved[1]->data, n->out->grad->data,
     ag_grad_ptr(ctx, x), ag_grad_ptr(ctx, w), ag_grad_ptr(ctx, b), ag_rows_of(x),
     x->shape[x->ndim - 1]);
}

ag_tensor *ag_layernorm(ag_ctx *ctx, ag_tensor *x, ag_tensor *w, ag_tensor *b, double eps) {
    const char *op = "layernorm";
    ag_need_float(op, x, "x");
    ag_need_contiguous(op, x, "x");
    need_vector(op, x, w, "weight");
    need_vector(op, x, b, "bias");
    ag_tensor *out = ag_new_like(ctx, x, ag_shape_of(x));
    ag_tensor *mean = ag_new_stats(ctx, x, AG_SHAPE(ag_rows_of(x)));
    ag_tensor *rstd = ag_new_stats(ctx, x, AG_SHAPE(ag_rows_of(x)));
    AG_KERNEL(op, ag_kernels_of(op, x), layernorm_fwd)
    (x->data, w->data, b->data, out->data, mean->data, rstd->data, ag_rows_of(x),
     x->shape[x->ndim - 1], eps);
    ag_tensor *in[3] = {x, w, b};
    ag_node *node = ag_record(ctx, op, layernorm_backward, out, 3, in);
    if (node) {
        node->saved[0] = mean;
        node->saved[1] = rstd;
    }
    return out;
}

static void l2norm_backward(ag_ctx *ctx, ag_node *n) {
    ag_tensor *x = n->in[0];
    AG_KERNEL("l2_normalize", ag_kernels_of("l2_normalize", x), l2norm_bwd)
    (x->data, n->saved[0]->data, n->out->grad->data, ag_grad_ptr(ctx, x), ag_rows_of(x),
     x->shape[x->ndim - 1], n->f[0]);
}

ag_tensor *ag_l2_normalize(ag_ctx *ctx, ag_tensor *x, double eps) {
    const char *op = "l2_normalize";
    ag_need_float(op, x, "x");
    ag_need_contiguous(op, x, "x");
    ag_need_ndim(op, x, "x", 1, 4);
    ag_tensor *out = ag_new_like(ctx, x, ag_shape_of(x));
    ag_tensor *norm = ag_new_stats(ctx, x, AG_SHAPE(ag_rows_of(x)));
    AG_KERNEL(op, ag_kernels_of(op, x), l2norm_fwd)
    (x->data, out->data, norm->data, ag_rows_of(x), x->shape[x->ndim - 1], eps);
    ag_node *node = ag_record(ctx, op, l2norm_backward, out, 1, &x);
    if (node) {
        node->saved[0] = norm;
        node->f[0] = eps;
    }
    return out;
}

static void softmax_backward(ag_ctx *ctx, ag_node *n) {
    ag_tensor *x = n->in[0];
    AG_KERNEL("softmax", ag_kernels_of("softmax", x), softmax_bwd)
    (n->out->data, n->out->grad->data, ag_grad_ptr(ctx, x), ag_rows_of(x), x->shape[x->ndim - 1]);
}

ag_tensor *ag_softmax(ag_ctx *ctx, ag_tensor *x) {
    const char *op = "softmax";
    ag_need_float(op, x, "x");
    ag_need_contiguous(op, x, "x");
    ag_need_ndim(op, x, "x", 1, 4);
    ag_tensor *out = ag_new_like(ctx, x, ag_shape_of(x));
    AG_KERNEL(op, ag_kernels_of(op, x), softmax_fwd)
    (x->data, out->data, ag_rows_of(x), x->shape[x->ndim - 1]);
    ag_record(ctx, op, softmax_backward, out, 1, &x);
    return out;
}

// Reductions ----------------------------------------------------------------------------------

static void reduce_backward(ag_ctx *ctx, ag_node *n) {
    ag_tensor *x = n->in[0];
    AG_KERNEL("reduce", ag_kernels_of("reduce", x), reduce_bwd)
    (n->out->grad->data, ag_grad_ptr(ctx, x), n->i[0], n->i[1], n->i[2], n->f[0]);
}

static ag_tensor *reduce(ag_ctx *ctx, const char *op, ag_tensor *x, int dim, bool mean) {
    ag_need_float(op, x, "x");
    ag_need_contiguous(op, x, "x");
    int d = ag_dim_index(op, x, dim);
    int64_t outer = 1, inner = 1, n = x->shape[d];
    for (int i = 0; i < d; i++) outer *= x->shape[i];
    for (int i = d + 1; i < x->ndim; i++) inner *= x->shape[i];
    ag_shape s = {.ndim = x->ndim - 1};
    for (int i = 0, j = 0; i < x->ndim; i++)
        if (i != d) s.d[j++] = x->shape[i];
    double scale = mean ? (n ? 1.0 / (double)n : 0.0) : 1.0;
    ag_tensor *out = ag_new_like(ctx, x, s);
    AG_KERNEL(op, ag_kernels_of(op, x), reduce_fwd)(x->data, out->data, outer, n, inner, scale);
    ag_node *node = ag_record(ctx, op, reduce_backward, out, 1, &x);
    if (node) {
        node->i[0] = outer;
        node->i[1] = n;
        node->i[2] = inner;
        node->f[0] = scale;
    }
    return out;
}

ag_tensor *ag_sum(ag_ctx *ctx, ag_tensor *x, int dim) {
    return reduce(ctx, "sum", x, dim, false);
}
ag_tensor *ag_mean(ag_ctx *ctx, ag_tensor *x, int dim) {
    return reduce(ctx, "mean", x, dim, true);
}
ag_tensor *ag_mean_all(ag_ctx *ctx, ag_tensor *x) {
    ag_need_float("mean_all", x, "x");
    ag_need_contiguous("mean_all", x, "x");
    return reduce(ctx, "mean_all", ag_reshape(ctx, x, AG_SHAPE(ag_numel(x))), 0, true);
}
