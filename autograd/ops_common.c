// ops_common.c: argument checks and helpers for the op implementations.
#include <stdio.h>

#include "ops_internal.h"

_Noreturn void ag_op_fail2(const char *op, const char *what, const ag_tensor *a, const char *an,
                           const ag_tensor *b, const char *bn) {
    char da[96], db[96];
    ag_fail("%s: %s: %s %s, %s %s", op, what, ag_label(a, an), ag_describe(a, da, sizeof da),
            ag_label(b, bn), ag_describe(b, db, sizeof db));
}

_Noreturn void ag_op_fail1(const char *op, const char *what, const ag_tensor *a, const char *an) {
    char da[96];
    ag_fail("%s: %s: %s %s", op, what, ag_label(a, an), ag_describe(a, da, sizeof da));
}

void ag_need_float(const char *op, const ag_tensor *t, const char *name) {
    if (!t) ag_fail("%s: %s is NULL", op, name);
    if (!ag_dtype_is_float(t->dtype)) ag_op_fail1(op, "needs a float tensor", t, name);
}

void ag_need_dtype(const char *op, const ag_tensor *t, const char *name, ag_dtype dt) {
    if (!t) ag_fail("%s: %s is NULL", op, name);
    if (t->dtype != dt) {
        char what[64];
        snprintf(what, sizeof what, "needs dtype %s", ag_dtype_name(dt));
        ag_op_fail1(op, what, t, name);
    }
}

void ag_need_contiguous(const char *op, const ag_tensor *t, const char *name) {
    if (!ag_is_contiguous(t))
        ag_op_fail1(op, "input is a strided view (make it contiguous with ag_contiguous)", t, name);
}

void ag_need_ndim(const char *op, const ag_tensor *t, const char *name, int lo, int hi) {
    if (t->ndim < lo || t->ndim > hi) {
        char what[64];
        if (lo == hi)
            snprintf(what, sizeof what, "needs %d dims", lo);
        else
            snprintf(what, sizeof what, "needs %d to %d dims", lo, hi);
        ag_op_fail1(op, what, t, name);
    }
}

void ag_need_same_device(const char *op, const ag_tensor *a, const char *an, const ag_tensor *b,
                         const char *bn) {
    if (a->device != b->device) ag_op_fail2(op, "devices differ", a, an, b, bn);
}

void ag_need_same_kind(const char *op, const ag_tensor *a, const char *an, const ag_tensor *b,
                       const char *bn) {
    if (a->dtype != b->dtype) ag_op_fail2(op, "dtypes differ", a, an, b, bn);
    ag_need_same_device(op, a, an, b, bn);
}

const ag_backend *ag_backend_of(const ag_tensor *t) {
    return ag_backend_for(t->device);
}

const ag_kernels *ag_kernels_of(const char *op, const ag_tensor *t) {
    const ag_backend *be = ag_backend_of(t);
    const ag_kernels *k = ag_dtype_is_float(t->dtype) ? be->kernels[t->dtype] : NULL;
    if (!k) ag_fail("%s: no %s kernels for %s tensors", op, be->name, ag_dtype_name(t->dtype));
    return k;
}

void ag_missing_kernel(const char *op, const char *fn) {
    ag_fail("%s: kernel %s is missing on this device", op, fn);
}

ag_tensor *ag_new_like(ag_ctx *ctx, const ag_tensor *x, ag_shape s) {
    return ag_new(ctx, x->dtype, s);
}

ag_tensor *ag_new_stats(ag_ctx *ctx, const ag_tensor *x, ag_shape s) {
    return ag_new(ctx, ag_compute_dtype(x->dtype), s);
}

void *ag_grad_ptr(ag_ctx *ctx, ag_tensor *t) {
    return t && t->requires_grad ? ag_grad_of(ctx, t)->data : NULL;
}

int64_t ag_rows_of(const ag_tensor *x) {
    return x->ndim ? ag_numel(x) / x->shape[x->ndim - 1] : 1;
}

void ag_accumulate(ag_ctx *ctx, ag_tensor *x, const ag_tensor *g) {
    if (!x->requires_grad) return;
    ag_tensor *gx = ag_grad_of(ctx, x);
    AG_KERNEL("backward", ag_kernels_of("backward", gx), axpy)
    (gx->data, g->data, ag_numel(gx), 1.0);
}
