// test_patchify.c: ag_patchify (autograd/ops_patch.c, the CPU kernels in kernels.inc).
//   - gradient check in f64 against central differences (as test_gradcheck.c: L = sum(out R),
//     h = 1e-6, |analytic - numeric| <= 1e-5 + 1e-3 |numeric|) for non-overlapping,
//     overlapping (stride < patch, ImageBind audio's 16/10), gapped (stride > patch) and
//     remainder-dropping shapes, on step leaves and on a trainable parameter (whose gradient
//     must accumulate over two steps);
//   - forward and backward against a naive loop, exactly (integer-valued data), in f32, f64
//     and bf16;
//   - the same bits on one thread as on all, for shapes large enough to run in parallel;
//   - bad input: mis-shaped image, patch larger than the image, stride or patch 0, an integer
//     tensor, a strided view: one-line errors naming the op and the shapes.
#include <math.h>
#include <omp.h>
#include <stdlib.h>

#include "autograd/error.h"
#include "testlib.h"

typedef struct {
    const char *name;
    int64_t B, H, W, C, ph, pw, sh, sw;
    bool param; // the input is a trainable parameter (else a step leaf)
} pf_case;

static const pf_case cases[] = {
    {"non_overlapping", 2, 6, 9, 2, 3, 3, 3, 3, false},
    {"overlapping", 2, 7, 8, 2, 3, 4, 2, 3, false}, // W: column 7 is in no patch
    {"overlapping_audio_like", 1, 9, 11, 1, 4, 4, 2, 2, false},
    {"gaps", 1, 7, 7, 3, 2, 2, 3, 3, false}, // stride > patch: rows 2, 5 unused
    {"single_patch", 2, 4, 5, 3, 4, 5, 1, 1, false},
    {"param_overlapping", 2, 6, 7, 2, 3, 3, 2, 2, true},
};

static int64_t n_out(int64_t n, int64_t p, int64_t s) {
    return (n - p) / s + 1;
}

// out[b, i*Nw + j, (py*pw + px)*C + c] = x[b, i*sh + py, j*sw + px, c]: the definition.
static void naive_fwd(const pf_case *k, const double *x, double *out) {
    int64_t Nh = n_out(k->H, k->ph, k->sh), Nw = n_out(k->W, k->pw, k->sw);
    int64_t P = k->ph * k->pw * k->C;
    for (int64_t b = 0; b < k->B; b++)
        for (int64_t i = 0; i < Nh; i++)
            for (int64_t j = 0; j < Nw; j++)
                for (int64_t py = 0; py < k->ph; py++)
                    for (int64_t px = 0; px < k->pw; px++)
                        for (int64_t c = 0; c < k->C; c++)
                            out[((b * Nh + i) * Nw + j) * P + (py * k->pw + px) * k->C + c] =
                                x[((b * k->H + i * k->sh + py) * k->W + j * k->sw + px) * k->C + c];
}

// The adjoint: gx += scatter-add of g.
static void naive_bwd(const pf_case *k, const double *g, double *gx) {
    int64_t Nh = n_out(k->H, k->ph, k->sh), Nw = n_out(k->W, k->pw, k->sw);
    int64_t P = k->ph * k->pw * k->C;
    for (int64_t b = 0; b < k->B; b++)
        for (int64_t i = 0; i < Nh; i++)
            for (int64_t j = 0; j < Nw; j++)
                for (int64_t py = 0; py < k->ph; py++)
                    for (int64_t px = 0; px < k->pw; px++)
                        for (int64_t c = 0; c < k->C; c++)
                            gx[((b * k->H + i * k->sh + py) * k->W + j * k->sw + px) * k->C + c] +=
                                g[((b * Nh + i) * Nw + j) * P + (py * k->pw + px) * k->C + c];
}

static ag_tensor *run(ag_ctx *ctx, const pf_case *k, ag_tensor *x) {
    return ag_patchify(ctx, x, k->ph, k->pw, k->sh, k->sw);
}

// Gradient check ---------------------------------------------------------------------------

static double loss_at(const pf_case *k, const double *xv, const double *r, int64_t nout) {
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    ag_no_grad_begin(ctx);
    ag_tensor *x = ag_from_host(ctx, AG_F64, AG_SHAPE(k->B, k->H, k->W, k->C), xv);
    ag_tensor *out = run(ctx, k, x);
    double *o = malloc(sizeof(double) * (size_t)nout), l = 0;
    ag_copy_to_host(out, o);
    for (int64_t i = 0; i < nout; i++) l += o[i] * r[i];
    free(o);
    ag_no_grad_end(ctx);
    ag_ctx_free(ctx);
    return l;
}

static void gradcheck(const pf_case *k) {
    tl_rng rng = {.s = 0x9a7c4u};
    for (const char *p = k->name; *p; p++) rng.s = rng.s * 31 + (unsigned char)*p;
    const ag_shape xs = AG_SHAPE(k->B, k->H, k->W, k->C);
    const int64_t nx = ag_shape_numel(xs);
    const int64_t nout =
        k->B * n_out(k->H, k->ph, k->sh) * n_out(k->W, k->pw, k->sw) * k->ph * k->pw * k->C;
    double *xv = malloc(sizeof(double) * (size_t)nx), *r = malloc(sizeof(double) * (size_t)nout);
    double *ga = malloc(sizeof(double) * (size_t)nx);
    for (int64_t i = 0; i < nx; i++) xv[i] = tl_normal(&rng);
    for (int64_t i = 0; i < nout; i++) r[i] = tl_normal(&rng);

    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    ag_tensor *x;
    if (k->param) {
        x = ag_param(ctx, "image", AG_F64, xs);
        ag_set_trainable(ctx, x, true);
        ag_copy_from_host(x, xv);
    } else {
        x = ag_from_host(ctx, AG_F64, xs, xv);
        ag_set_requires_grad(x, true);
    }
    int steps = k->param ? 2 : 1; // a parameter's gradient accumulates across steps
    for (int s = 0; s < steps; s++) {
        if (s) ag_step_reset(ctx); // only a parameter survives it
        ag_tensor *out = run(ctx, k, x);
        TL_CHECK(ag_numel(out) == nout, "%s: output has %lld elements, expected %lld", k->name,
                 (long long)ag_numel(out), (long long)nout);
        ag_backward_from(ctx, out, ag_from_host(ctx, AG_F64, ag_shape_of(out), r));
    }
    ag_copy_to_host(x->grad, ga);
    ag_ctx_free(ctx);

    const double h = 1e-6;
    double worst = 0, max_abs = 0;
    for (int64_t i = 0; i < nx; i++) {
        double v = xv[i];
        xv[i] = v + h;
        double lp = loss_at(k, xv, r, nout);
        xv[i] = v - h;
        double lm = loss_at(k, xv, r, nout);
        xv[i] = v;
        double num = (lp - lm) / (2 * h), a = ga[i] / steps;
        double err = fabs(a - num), ratio = err / (1e-5 + 1e-3 * fabs(num));
        if (!(ratio <= worst)) worst = ratio;
        if (err > max_abs) max_abs = err;
    }
    TL_CHECK(worst <= 1.0, "gradcheck patchify %s: worst err/tol %.2e", k->name, worst);
    printf("gradcheck patchify %-24s %5lld elems  max |err| %.2e  max err/tol %.1e\n", k->name,
           (long long)nx, max_abs, worst);
    free(xv), free(r), free(ga);
}

// Exact checks against the naive loops ---------------------------------------------------

// Integer-valued data in [-8, 8]: every sum is exact in every dtype (bf16 holds 8 bits).
static void exact_check(const pf_case *k, ag_dtype dt) {
    tl_rng rng = {.s = 77 + (uint64_t)dt};
    const ag_shape xs = AG_SHAPE(k->B, k->H, k->W, k->C);
    const int64_t nx = ag_shape_numel(xs);
    const int64_t nout =
        k->B * n_out(k->H, k->ph, k->sh) * n_out(k->W, k->pw, k->sw) * k->ph * k->pw * k->C;
    double *xv = malloc(sizeof(double) * (size_t)nx), *gv = malloc(sizeof(double) * (size_t)nout);
    double *want = calloc((size_t)nout, sizeof(double)),
           *gwant = calloc((size_t)nx, sizeof(double));
    double *got = malloc(sizeof(double) * (size_t)nout),
           *ggot = malloc(sizeof(double) * (size_t)nx);
    for (int64_t i = 0; i < nx; i++) xv[i] = (double)(tl_randint(&rng, 17) - 8);
    for (int64_t i = 0; i < nout; i++) gv[i] = (double)(tl_randint(&rng, 5) - 2);
    naive_fwd(k, xv, want);
    naive_bwd(k, gv, gwant);

    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    ag_tensor *x = ag_cast(ctx, ag_from_host(ctx, AG_F64, xs, xv), dt);
    ag_set_requires_grad(x, true);
    ag_tensor *out = run(ctx, k, x);
    ag_tensor *g = ag_cast(ctx, ag_from_host(ctx, AG_F64, ag_shape_of(out), gv), dt);
    ag_backward_from(ctx, out, g);
    ag_copy_to_host(ag_cast(ctx, out, AG_F64), got);
    ag_copy_to_host(ag_cast(ctx, x->grad, AG_F64), ggot);
    bool ok = true;
    for (int64_t i = 0; i < nout; i++) ok &= got[i] == want[i];
    TL_CHECK(ok, "patchify %s %s: forward differs from the definition", k->name, ag_dtype_name(dt));
    ok = true;
    for (int64_t i = 0; i < nx; i++) ok &= ggot[i] == gwant[i];
    TL_CHECK(ok, "patchify %s %s: backward differs from the scatter-add", k->name,
             ag_dtype_name(dt));
    ag_ctx_free(ctx);
    free(xv), free(gv), free(want), free(gwant), free(got), free(ggot);
}

// Thread-count independence -------------------------------------------------------------------

// Forward output and input gradient (as bytes) with the current OpenMP thread count.
static void run_bits(ag_dtype dt, const pf_case *k, void *out_bytes, void *grad_bytes) {
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    tl_rng rng = {.s = 4242};
    const ag_shape xs = AG_SHAPE(k->B, k->H, k->W, k->C);
    ag_tensor *x64 = ag_new(ctx, AG_F64, xs);
    double *v = malloc(sizeof(double) * (size_t)ag_numel(x64));
    for (int64_t i = 0; i < ag_numel(x64); i++) v[i] = tl_normal(&rng);
    ag_copy_from_host(x64, v);
    ag_tensor *x = ag_cast(ctx, x64, dt);
    ag_set_requires_grad(x, true);
    ag_tensor *out = run(ctx, k, x);
    double *r = malloc(sizeof(double) * (size_t)ag_numel(out));
    for (int64_t i = 0; i < ag_numel(out); i++) r[i] = tl_normal(&rng);
    ag_backward_from(ctx, out, ag_cast(ctx, ag_from_host(ctx, AG_F64, ag_shape_of(out), r), dt));
    ag_copy_to_host(out, out_bytes);
    ag_copy_to_host(x->grad, grad_bytes);
    free(v), free(r);
    ag_ctx_free(ctx);
}

static void thread_check(ag_dtype dt) {
    // 38400 output elements: above the kernels' parallel threshold; ImageBind's 16/10 overlap
    const pf_case k = {"threads", 2, 64, 64, 3, 16, 16, 10, 10, false};
    const size_t es = ag_dtype_size(dt);
    const size_t nout = 2 * 5 * 5 * 16 * 16 * 3, nx = 2 * 64 * 64 * 3;
    char *o1 = malloc(nout * es), *oN = malloc(nout * es);
    char *g1 = malloc(nx * es), *gN = malloc(nx * es);
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    run_bits(dt, &k, o1, g1);
    omp_set_num_threads(saved > 1 ? saved : 4);
    run_bits(dt, &k, oN, gN);
    omp_set_num_threads(saved);
    TL_CHECK(!memcmp(o1, oN, nout * es) && !memcmp(g1, gN, nx * es),
             "patchify %s: results differ between 1 and %d threads", ag_dtype_name(dt),
             saved > 1 ? saved : 4);
    free(o1), free(oN), free(g1), free(gN);
}

// Bad input ----------------------------------------------------------------------------------

static void error_checks(void) {
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    ag_tensor *img = ag_zeros(ctx, AG_F32, AG_SHAPE(1, 12, 40, 1));
    ag_tensor *flat = ag_zeros(ctx, AG_F32, AG_SHAPE(12, 40, 3));
    ag_tensor *u8 = ag_zeros(ctx, AG_U8, AG_SHAPE(1, 28, 28, 3));
    TL_EXPECT_FAIL(ag_patchify(ctx, flat, 14, 14, 14, 14), "patchify", "needs 4 dims",
                   "f32[12,40,3]");
    TL_EXPECT_FAIL(ag_patchify(ctx, img, 16, 16, 10, 10), "patchify",
                   "patch 16x16 larger than the image 12x40", "f32[1,12,40,1]");
    TL_EXPECT_FAIL(ag_patchify(ctx, img, 4, 4, 0, 2), "patchify", "stride 0x2", "must be >= 1",
                   "f32[1,12,40,1]");
    TL_EXPECT_FAIL(ag_patchify(ctx, img, 0, 4, 1, 1), "patchify", "patch 0x4", "f32[1,12,40,1]");
    TL_EXPECT_FAIL(ag_patchify(ctx, u8, 14, 14, 14, 14), "patchify", "float", "u8[1,28,28,3]");
    ag_tensor *view = ag_transpose(ctx, ag_zeros(ctx, AG_F32, AG_SHAPE(1, 40, 12, 1)), 1, 2);
    TL_EXPECT_FAIL(ag_patchify(ctx, view, 4, 4, 4, 4), "patchify", "strided view");
    ag_ctx_free(ctx);
}

int main(void) {
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) gradcheck(&cases[i]);
    const ag_dtype dts[3] = {AG_F32, AG_F64, AG_BF16};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        for (int d = 0; d < 3; d++) exact_check(&cases[i], dts[d]);
    for (int d = 0; d < 3; d++) thread_check(dts[d]);
    error_checks();
    return tl_summary("test_patchify");
}
