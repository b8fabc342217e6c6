// ops_patch.c: ag_patchify, the patch extraction of a ViT patch embedding. A PyTorch
// Conv2d(C, out, kernel (ph, pw), stride (sh, sw)) over a channels-last image is
// patchify + linear with the conv weight permuted to (out, ph, pw, C): one GEMM instead of
// a convolution kernel per backend.
#include <stdio.h>

#include "ops_internal.h"

static void patchify_backward(ag_ctx *ctx, ag_node *n) {
    ag_tensor *x = n->in[0];
    const ag_kernels *k = ag_kernels_of("patchify", x);
    AG_KERNEL("patchify", k, patchify_bwd)(n->extra, n->out->grad->data, ag_grad_ptr(ctx, x));
}

ag_tensor *ag_patchify(ag_ctx *ctx, ag_tensor *x, int64_t ph, int64_t pw, int64_t sh, int64_t sw) {
    const char *op = "patchify";
    ag_need_float(op, x, "x");
    ag_need_ndim(op, x, "x", 4, 4);
    ag_need_contiguous(op, x, "x");
    char what[128];
    if (ph < 1 || pw < 1 || sh < 1 || sw < 1) {
        snprintf(what, sizeof what, "patch %lldx%lld and stride %lldx%lld must be >= 1",
                 (long long)ph, (long long)pw, (long long)sh, (long long)sw);
        ag_op_fail1(op, what, x, "x");
    }
    int64_t B = x->shape[0], H = x->shape[1], W = x->shape[2], C = x->shape[3];
    if (ph > H || pw > W) {
        snprintf(what, sizeof what, "patch %lldx%lld larger than the image %lldx%lld",
                 (long long)ph, (long long)pw, (long long)H, (long long)W);
        ag_op_fail1(op, what, x, "x");
    }
    ag_patch_args *a = ag_step_alloc(ctx, sizeof *a);
    *a = (ag_patch_args){.B = B,
                         .H = H,
                         .W = W,
                         .C = C,
                         .ph = ph,
                         .pw = pw,
                         .sh = sh,
                         .sw = sw,
                         .Nh = (H - ph) / sh + 1,
                         .Nw = (W - pw) / sw + 1};
    ag_tensor *out = ag_new_like(ctx, x, AG_SHAPE(B, a->Nh * a->Nw, ph * pw * C)); // (B, N, P)
    const ag_kernels *k = ag_kernels_of(op, x);
    AG_KERNEL(op, k, patchify_fwd)(a, x->data, out->data);
    ag_node *node = ag_record(ctx, op, patchify_backward, out, 1, &x);
    if (node) node->extra = a;
    return out;
}
