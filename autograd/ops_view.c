// ops_view.c: views that share storage (reshape, permute, transpose, slice, split) and the
// copies between layouts and dtypes (contiguous, concat, cast).
// A view's gradient is contiguous in the view's shape; its backward adds it into the
// source's gradient through the view's "logical" layout: where the view's elements sit in
// a contiguous tensor of the source's shape. This composes through chains of views.
#include <stdio.h>
#include <string.h>

#include "ops_internal.h"

static ag_tensor *new_view(ag_ctx *ctx, ag_tensor *x) {
    ag_tensor *v = ag_step_alloc(ctx, sizeof *v);
    *v = *x;
    v->grad = NULL;
    v->name = NULL;
    v->is_param = false;
    v->requires_grad = false;
    v->base = x->base ? x->base : x;
    return v;
}

static void contiguous_strides(const ag_tensor *x, int64_t *stride) {
    int64_t s = 1;
    for (int i = x->ndim - 1; i >= 0; i--) {
        stride[i] = s;
        s *= x->shape[i];
    }
}

static void view_backward(ag_ctx *ctx, ag_node *n) {
    ag_tensor *x = n->in[0];
    ag_tensor *gx = ag_grad_of(ctx, x);
    AG_KERNEL("view backward", ag_kernels_of("view backward", gx), add_strided)
    (gx->data, n->extra, n->out->grad->data);
}

// Records a view node whose out sits in x (contiguous coordinates) at layout.
static void record_view(ag_ctx *ctx, const char *op, ag_tensor *x, ag_tensor *out,
                        const ag_layout *layout) {
    if (!ag_dtype_is_float(x->dtype)) return;
    ag_node *n = ag_record(ctx, op, view_backward, out, 1, &x);
    if (!n) return;
    ag_layout *l = ag_step_alloc(ctx, sizeof *l);
    *l = *layout;
    n->extra = l;
}

static void reshape_backward(ag_ctx *ctx, ag_node *n) {
    ag_accumulate(ctx, n->in[0], n->out->grad);
}

ag_tensor *ag_reshape(ag_ctx *ctx, ag_tensor *x, ag_shape shape) {
    const char *op = "reshape";
    if (shape.ndim < 0 || shape.ndim > AG_MAX_DIMS)
        ag_op_fail1(op, "target must have 0 to 4 dims", x, "x");
    int infer = -1;
    int64_t known = 1;
    for (int i = 0; i < shape.ndim; i++) {
        if (shape.d[i] == -1 && infer < 0)
            infer = i;
        else if (shape.d[i] < 0)
            ag_op_fail1(op, "target dims must be >= 0 (one may be -1)", x, "x");
        else
            known *= shape.d[i];
    }
    if (infer >= 0) {
        if (known == 0 || ag_numel(x) % known) ag_op_fail1(op, "cannot infer the -1 dim", x, "x");
        shape.d[infer] = ag_numel(x) / known;
    }
    if (ag_shape_numel(shape) != ag_numel(x)) {
        char what[160];
        int k = snprintf(what, sizeof what, "target [");
        for (int i = 0; i < shape.ndim; i++)
            k += snprintf(what + k, sizeof what - (size_t)k, i ? ",%lld" : "%lld",
                          (long long)shape.d[i]);
        snprintf(what + k, sizeof what - (size_t)k, "] has %lld elements, input %lld",
                 (long long)ag_shape_numel(shape), (long long)ag_numel(x));
        ag_op_fail1(op, what, x, "x");
    }
    ag_need_contiguous(op, x, "x");
    ag_tensor *v = new_view(ctx, x);
    v->ndim = shape.ndim;
    for (int i = 0; i < shape.ndim; i++) v->shape[i] = shape.d[i];
    ag_set_contiguous_strides(v);
    if (ag_dtype_is_float(x->dtype)) ag_record(ctx, op, reshape_backward, v, 1, &x);
    return v;
}

ag_tensor *ag_permute(ag_ctx *ctx, ag_tensor *x, ag_shape perm) {
    const char *op = "permute";
    if (perm.ndim != x->ndim) ag_op_fail1(op, "permutation length differs from the dims", x, "x");
    bool seen[AG_MAX_DIMS] = {0};
    for (int i = 0; i < perm.ndim; i++) {
        int64_t p = perm.d[i];
        if (p < 0 || p >= x->ndim || seen[p])
            ag_op_fail1(op, "not a permutation of the dims", x, "x");
        seen[p] = true;
    }
    int64_t cs[AG_MAX_DIMS];
    contiguous_strides(x, cs);
    ag_tensor *v = new_view(ctx, x);
    ag_layout l = {.ndim = x->ndim};
    for (int i = 0; i < x->ndim; i++) {
        v->shape[i] = x->shape[perm.d[i]];
        v->stride[i] = x->stride[perm.d[i]];
        l.shape[i] = v->shape[i];
        l.stride[i] = cs[perm.d[i]];
    }
    record_view(ctx, op, x, v, &l);
    return v;
}

ag_tensor *ag_transpose(ag_ctx *ctx, ag_tensor *x, int dim0, int dim1) {
    int a = ag_dim_index("transpose", x, dim0), b = ag_dim_index("transpose", x, dim1);
    ag_shape perm = {.ndim = x->ndim};
    for (int i = 0; i < x->ndim; i++) perm.d[i] = i;
    perm.d[a] = b;
    perm.d[b] = a;
    return ag_permute(ctx, x, perm);
}

ag_tensor *ag_slice(ag_ctx *ctx, ag_tensor *x, int dim, int64_t start, int64_t end) {
    const char *op = "slice";
    int d = ag_dim_index(op, x, dim);
    if (start < 0 || end < start || end > x->shape[d]) {
        char what[96];
        snprintf(what, sizeof what, "range [%lld, %lld) outside dim %d", (long long)start,
                 (long long)end, d);
        ag_op_fail1(op, what, x, "x");
    }
    int64_t cs[AG_MAX_DIMS];
    contiguous_strides(x, cs);
    ag_tensor *v = new_view(ctx, x);
    v->shape[d] = end - start;
    v->data = (char *)x->data + (size_t)(start * x->stride[d]) * ag_dtype_size(x->dtype);
    ag_layout l = {.ndim = x->ndim, .offset = start * cs[d]};
    for (int i = 0; i < x->ndim; i++) {
        l.shape[i] = v->shape[i];
        l.stride[i] = cs[i];
    }
    record_view(ctx, op, x, v, &l);
    return v;
}

void ag_split(ag_ctx *ctx, ag_tensor *x, int dim, int n, const int64_t *sizes, ag_tensor **out) {
    int d = ag_dim_index("split", x, dim);
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += sizes[i];
    if (total != x->shape[d]) ag_op_fail1("split", "sizes do not add up to the dim", x, "x");
    int64_t at = 0;
    for (int i = 0; i < n; i++) {
        out[i] = ag_slice(ctx, x, d, at, at + sizes[i]);
        at += sizes[i];
    }
}

ag_tensor *ag_contiguous(ag_ctx *ctx, ag_tensor *x) {
    if (ag_is_contiguous(x)) return x;
    ag_tensor *out = ag_new_like(ctx, x, ag_shape_of(x));
    ag_layout l = {.ndim = x->ndim};
    for (int i = 0; i < x->ndim; i++) {
        l.shape[i] = x->shape[i];
        l.stride[i] = x->stride[i];
    }
    ag_backend_of(x)->copy_strided(out->data, x->data, &l, ag_dtype_size(x->dtype));
    if (ag_dtype_is_float(x->dtype)) ag_record(ctx, "contiguous", reshape_backward, out, 1, &x);
    return out;
}

// Concat: out viewed as (outer, out->shape[d] * inner); the input spanning [at, at + n) of
// dim d owns columns [at * inner, (at + n) * inner).
static ag_layout concat_piece(const ag_tensor *out, int d, int64_t at, int64_t n) {
    int64_t inner = 1, outer = 1;
    for (int i = d + 1; i < out->ndim; i++) inner *= out->shape[i];
    for (int i = 0; i < d; i++) outer *= out->shape[i];
    ag_layout l = {.ndim = 2,
                   .shape = {outer, n * inner},
                   .stride = {out->shape[d] * inner, 1},
                   .offset = at * inner};
    return l;
}

static void concat_backward(ag_ctx *ctx, ag_node *n) {
    int d = (int)n->i[0];
    const ag_tensor *g = n->out->grad;
    int64_t at = 0;
    for (int i = 0; i < n->n_in; i++) {
        ag_tensor *x = n->in_many ? n->in_many[i] : n->in[i];
        if (x->requires_grad) {
            ag_layout l = concat_piece(g, d, at, x->shape[d]);
            const char *src = (const char *)g->data + (size_t)l.offset * ag_dtype_size(g->dtype);
            l.offset = 0;
            ag_tensor *piece = ag_new_like(ctx, x, ag_shape_of(x));
            ag_backend_of(g)->copy_strided(piece->data, src, &l, ag_dtype_size(g->dtype));
            ag_accumulate(ctx, x, piece);
        }
        at += x->shape[d];
    }
}

ag_tensor *ag_concat(ag_ctx *ctx, int n, ag_tensor *const *xs, int dim) {
    const char *op = "concat";
    if (n < 1) ag_fail("concat: no inputs");
    const ag_tensor *x0 = xs[0];
    ag_need_float(op, x0, "x0");
    int d = ag_dim_index(op, x0, dim);
    ag_shape s = ag_shape_of(x0);
    s.d[d] = 0;
    for (int i = 0; i < n; i++) {
        char name[16];
        snprintf(name, sizeof name, "x%d", i);
        ag_need_same_kind(op, x0, "x0", xs[i], name);
        ag_need_contiguous(op, xs[i], name);
        bool ok = xs[i]->ndim == x0->ndim;
        for (int j = 0; ok && j < x0->ndim; j++)
            if (j != d && xs[i]->shape[j] != x0->shape[j]) ok = false;
        if (!ok) ag_op_fail2(op, "shapes differ outside the concat dim", x0, "x0", xs[i], name);
        s.d[d] += xs[i]->shape[d];
    }
    ag_tensor *out = ag_zeros(ctx, x0->dtype, s);
    const ag_kernels *k = ag_kernels_of(op, out);
    int64_t at = 0;
    for (int i = 0; i < n; i++) {
        ag_layout l = concat_piece(out, d, at, xs[i]->shape[d]);
        AG_KERNEL(op, k, add_strided)(out->data, &l, xs[i]->data);
        at += xs[i]->shape[d];
    }
    ag_node *node = ag_record(ctx, op, concat_backward, out, n, xs);
    if (node) node->i[0] = d;
    return out;
}

static void cast_backward(ag_ctx *ctx, ag_node *n) {
    ag_tensor *x = n->in[0];
    const ag_tensor *g = n->out->grad;
    ag_tensor *gc = ag_new_like(ctx, x, ag_shape_of(x));
    ag_backend_of(g)->cast(gc->data, x->dtype, g->data, g->dtype, ag_numel(g));
    ag_accumulate(ctx, x, gc);
}

ag_tensor *ag_cast(ag_ctx *ctx, ag_tensor *x, ag_dtype dtype) {
    ag_need_contiguous("cast", x, "x");
    if (x->dtype == dtype) return x;
    ag_tensor *out = ag_new(ctx, dtype, ag_shape_of(x));
    ag_backend_of(x)->cast(out->data, dtype, x->data, x->dtype, ag_numel(x));
    if (ag_dtype_is_float(x->dtype) && ag_dtype_is_float(dtype))
        ag_record(ctx, "cast", cast_backward, out, 1, &x);
    return out;
}
