// optim.c: see optim.h. The update itself is a backend kernel: one call for all parameters of
// a device whose backend has adamw_many (one launch on a GPU), else one pass per parameter.
// The gradient norm likewise takes sum_squares_many where a backend has it.
#include "optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend.h"
#include "ops_internal.h"
#include "error.h"

static ag_tensor *state(ag_ctx *ctx, const char *what, const ag_tensor *p) {
    char name[512];
    snprintf(name, sizeof name, "%s.%s", what, p->name ? p->name : "param");
    return ag_param(ctx, name, AG_F32, ag_shape_of(p));
}

ag_adamw *ag_adamw_new(ag_ctx *ctx, ag_tensor **params, int n, const bool *decay,
                       ag_adamw_config cfg) {
    ag_adamw *o = ag_xcalloc(1, sizeof *o, "optimizer");
    o->n = n;
    o->ctx = ctx;
    o->cfg = cfg;
    o->params = ag_xcalloc((size_t)n, sizeof *o->params, "optimizer");
    o->decay = ag_xcalloc((size_t)n, sizeof *o->decay, "optimizer");
    o->m = ag_xcalloc((size_t)n, sizeof *o->m, "optimizer");
    o->v = ag_xcalloc((size_t)n, sizeof *o->v, "optimizer");
    o->master = ag_xcalloc((size_t)n, sizeof *o->master, "optimizer");
    o->batch = ag_xcalloc((size_t)(n > 0 ? n : 1), sizeof *o->batch, "optimizer");
    for (int i = 0; i < n; i++) {
        ag_tensor *p = params[i];
        if (!p->requires_grad || !p->grad)
            ag_fail("adamw: parameter '%s' is not trainable", ag_label(p, "?"));
        if (p->dtype != AG_F32 && p->dtype != AG_BF16)
            ag_fail("adamw: parameter '%s' is %s (f32 or bf16 only)", ag_label(p, "?"),
                    ag_dtype_name(p->dtype));
        o->params[i] = p;
        o->decay[i] = decay ? decay[i] : true;
        o->m[i] = state(ctx, "adam_m", p);
        o->v[i] = state(ctx, "adam_v", p);
        if (p->dtype == AG_BF16) {
            o->master[i] = state(ctx, "master", p);
            ag_backend_for(p->device)->cast(o->master[i]->data, AG_F32, p->data, AG_BF16,
                                            ag_numel(p));
        }
    }
    return o;
}

void ag_adamw_free(ag_adamw *o) {
    if (!o) return;
    free(o->params);
    free(o->decay);
    free(o->m);
    free(o->v);
    free(o->master);
    free(o->batch);
    free(o);
}

void ag_adamw_step(ag_adamw *o, double lr) {
    o->step++;
    ag_adamw_args a = {.lr = lr,
                       .beta1 = o->cfg.beta1,
                       .beta2 = o->cfg.beta2,
                       .eps = o->cfg.eps,
                       .bias1 = 1.0 - pow(o->cfg.beta1, (double)o->step),
                       .bias2 = 1.0 - pow(o->cfg.beta2, (double)o->step)};
    // Device by device: parameters of a backend with adamw_many are gathered (in order) and
    // updated in one call; the others one by one, in order.
    for (int dev = AG_CPU; dev <= AG_CUDA; dev++) {
        const ag_backend *be = NULL;
        int cnt = 0;
        for (int i = 0; i < o->n; i++) {
            ag_tensor *p = o->params[i];
            if ((int)p->device != dev) continue;
            if (!be) be = ag_backend_for(p->device);
            const double wd = o->decay[i] ? o->cfg.weight_decay : 0.0;
            float *master = o->master[i] ? o->master[i]->data : NULL;
            if (be->adamw_many) {
                o->batch[cnt++] = (ag_adamw_tensor){.param = p->data,
                                                    .dtype = p->dtype,
                                                    .master = master,
                                                    .grad = p->grad->data,
                                                    .m = o->m[i]->data,
                                                    .v = o->v[i]->data,
                                                    .n = ag_numel(p),
                                                    .weight_decay = wd};
                continue;
            }
            if (!be->adamw) ag_fail("adamw: no %s kernel", be->name);
            a.weight_decay = wd;
            be->adamw(&a, p->data, p->dtype, master, p->grad->data, o->m[i]->data, o->v[i]->data,
                      ag_numel(p));
        }
        if (cnt) be->adamw_many(&a, o->batch, cnt);
    }
}

// The grouped gradient-norm call's arrays: they only grow, so a warm loop does not allocate.
static struct {
    const void **x;
    int64_t *len;
    ag_dtype *dt;
    int cap;
} norm_buf;

static void norm_buf_reserve(int n) {
    if (n <= norm_buf.cap) return;
    free(norm_buf.x);
    free(norm_buf.len);
    free(norm_buf.dt);
    norm_buf.x = ag_xcalloc((size_t)n, sizeof *norm_buf.x, "gradient norm");
    norm_buf.len = ag_xcalloc((size_t)n, sizeof *norm_buf.len, "gradient norm");
    norm_buf.dt = ag_xcalloc((size_t)n, sizeof *norm_buf.dt, "gradient norm");
    norm_buf.cap = n;
}

double ag_grad_norm(ag_tensor **params, int n) {
    double ss = 0;
    // Device by device, as the update: one sum_squares_many call where a backend has it,
    // else the gradients one by one, in order.
    for (int dev = AG_CPU; dev <= AG_CUDA; dev++) {
        const ag_backend *be = NULL;
        int cnt = 0;
        for (int i = 0; i < n; i++) {
            const ag_tensor *g = params[i]->grad;
            if (!g || (int)g->device != dev) continue;
            if (!be) be = ag_backend_for(g->device);
            if (be->sum_squares_many) {
                norm_buf_reserve(n);
                norm_buf.x[cnt] = g->data;
                norm_buf.len[cnt] = ag_numel(g);
                norm_buf.dt[cnt] = g->dtype;
                cnt++;
                continue;
            }
            const ag_kernels *k = ag_kernels_of("gradient norm", g);
            ss += AG_KERNEL("gradient norm", k, sum_squares)(g->data, ag_numel(g));
        }
        if (cnt) ss += be->sum_squares_many(norm_buf.x, norm_buf.len, norm_buf.dt, cnt);
    }
    return sqrt(ss);
}

double ag_clip_grad_norm(ag_tensor **params, int n, double max_norm) {
    double norm = ag_grad_norm(params, n);
    if (max_norm > 0 && norm > max_norm && isfinite(norm)) {
        double s = max_norm / (norm + 1e-6);
        for (int i = 0; i < n; i++) {
            ag_tensor *g = params[i]->grad;
            if (!g) continue;
            const ag_kernels *k = ag_kernels_of("gradient clipping", g);
            AG_KERNEL("gradient clipping", k, unary_fwd)
            (AG_UN_SCALE, g->data, g->data, ag_numel(g), s);
        }
    }
    return norm;
}
