// tensor.c: see tensor.h.
#include "tensor.h"

#include <stdio.h>
#include <string.h>

#include "error.h"

size_t ag_dtype_size(ag_dtype dt) {
    switch (dt) {
    case AG_F32:
        return 4;
    case AG_BF16:
        return 2;
    case AG_F64:
        return 8;
    case AG_I32:
        return 4;
    case AG_U8:
        return 1;
    default:
        ag_fail("unknown dtype %d", (int)dt);
    }
}

const char *ag_dtype_name(ag_dtype dt) {
    static const char *names[] = {"f32", "bf16", "f64", "i32", "u8"};
    return (unsigned)dt < AG_NDTYPES ? names[dt] : "?";
}

bool ag_dtype_is_float(ag_dtype dt) {
    return dt == AG_F32 || dt == AG_BF16 || dt == AG_F64;
}

ag_dtype ag_compute_dtype(ag_dtype dt) {
    return dt == AG_F64 ? AG_F64 : AG_F32;
}

int64_t ag_numel(const ag_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t ag_nbytes(const ag_tensor *t) {
    return (size_t)ag_numel(t) * ag_dtype_size(t->dtype);
}

bool ag_is_contiguous(const ag_tensor *t) {
    int64_t expect = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != expect) return false;
        expect *= t->shape[i];
    }
    return true;
}

bool ag_same_shape(const ag_tensor *a, const ag_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

ag_shape ag_shape_of(const ag_tensor *t) {
    ag_shape s = {.ndim = t->ndim};
    for (int i = 0; i < t->ndim; i++) s.d[i] = t->shape[i];
    return s;
}

int64_t ag_shape_numel(ag_shape s) {
    int64_t n = 1;
    for (int i = 0; i < s.ndim; i++) n *= s.d[i];
    return n;
}

void ag_set_contiguous_strides(ag_tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        t->stride[i] = s;
        s *= t->shape[i];
    }
    for (int i = t->ndim; i < AG_MAX_DIMS; i++) t->stride[i] = 1;
}

int ag_dim_index(const char *op, const ag_tensor *t, int dim) {
    int d = dim < 0 ? dim + t->ndim : dim;
    if (d < 0 || d >= t->ndim) {
        char b[96];
        ag_fail("%s: dim %d out of range for %s", op, dim, ag_describe(t, b, sizeof b));
    }
    return d;
}

char *ag_format_dims(char *buf, size_t n, int ndim, const int64_t *dims) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ",%lld" : "%lld", (long long)dims[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

char *ag_describe(const ag_tensor *t, char *buf, size_t n) {
    // the device only when it is not the CPU: every CPU message stays as it was
    size_t k = (size_t)snprintf(buf, n, "%s%s", t->device == AG_CUDA ? "cuda " : "",
                                ag_dtype_name(t->dtype));
    if (k < n) k += strlen(ag_format_dims(buf + k, n - k, t->ndim, t->shape));
    if (k < n && !ag_is_contiguous(t)) snprintf(buf + k, n - k, " view");
    return buf;
}

const char *ag_label(const ag_tensor *t, const char *fallback) {
    return t && t->name ? t->name : fallback;
}
