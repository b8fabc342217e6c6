// ops_internal.h: checks and helpers shared by the op implementations (ops_*.c).
#pragma once
#include "backend.h"
#include "error.h"
#include "ops.h"

// Fails naming op: "op: <what>: a f32[3,4], b f32[4,3]".
_Noreturn void ag_op_fail2(const char *op, const char *what, const ag_tensor *a, const char *an,
                           const ag_tensor *b, const char *bn);
_Noreturn void ag_op_fail1(const char *op, const char *what, const ag_tensor *a, const char *an);

void ag_need_float(const char *op, const ag_tensor *t, const char *name);
void ag_need_dtype(const char *op, const ag_tensor *t, const char *name, ag_dtype dt);
void ag_need_contiguous(const char *op, const ag_tensor *t, const char *name);
void ag_need_ndim(const char *op, const ag_tensor *t, const char *name, int lo, int hi);
// a and b on one device (an index tensor beside its table: a kernel reads both).
void ag_need_same_device(const char *op, const ag_tensor *a, const char *an, const ag_tensor *b,
                         const char *bn);
// a and b: same dtype and device.
void ag_need_same_kind(const char *op, const ag_tensor *a, const char *an, const ag_tensor *b,
                       const char *bn);

// The kernel table for t's device and dtype; fails naming op when there is none.
const ag_kernels *ag_kernels_of(const char *op, const ag_tensor *t);
// Fails naming op and device when a kernel entry is missing.
#define AG_KERNEL(op, k, fn) ((k)->fn ? (k)->fn : (ag_missing_kernel((op), #fn), (k)->fn))
void ag_missing_kernel(const char *op, const char *fn);
const ag_backend *ag_backend_of(const ag_tensor *t);

// A new contiguous step tensor like x's dtype with shape s.
ag_tensor *ag_new_like(ag_ctx *ctx, const ag_tensor *x, ag_shape s);
// Stats (rstd, lse, probabilities) are kept in the compute dtype of x.
ag_tensor *ag_new_stats(ag_ctx *ctx, const ag_tensor *x, ag_shape s);
// The gradient of t if t requires it, else NULL (so kernels skip it).
void *ag_grad_ptr(ag_ctx *ctx, ag_tensor *t);
// Rows and columns of x viewed as (rows, last dim).
int64_t ag_rows_of(const ag_tensor *x);
// gx += g, both contiguous of the same size.
void ag_accumulate(ag_ctx *ctx, ag_tensor *x, const ag_tensor *g);
