// test_ops_reference.c: ops checked against PyTorch as an independent reference.
//
// tests/fixtures/ops_reference.safetensors (made by tests/make_op_fixtures.py, torch 1.13)
// holds inputs, expected outputs and, for a handful of ops, the gradients of sum(out * r).
// Each case runs on the CPU, and on CUDA too when a GPU is usable:
//   - at the fixture's precision: f32 cases within 1e-5, f64 cases within 1e-12;
//   - where marked, again with the f32 inputs cast to bf16 (ag_cast), against the same f32
//     reference within 1e-2 (bf16 keeps 8 significant bits: inputs and output round by up
//     to 2^-9 each).
// The error of a tensor is max|got - want| / max(max|want|, 1e-6): relative to the tensor's
// scale, so that elements near zero (which carry only absolute error) do not dominate.
// Stability cases (softmax, layernorm, cross_entropy, attention on inputs whose naive
// evaluation overflows or cancels) are referenced to float64 results rounded to f32.
// Also: ag_cast rounding against torch bit for bit, a query that sees no key, a loss with
// every row ignored, and dropout, whose random stream differs from torch's, statistically:
// kept fraction, exact 1/(1-p) scaling, same seed same mask (on 1 thread as on all),
// another seed an independent mask, the same mask for f64 as for f32.
#include <math.h>
#include <omp.h>
#include <stdlib.h>

#include "autograd/backend.h"
#include "autograd/error.h"
#include "autograd/safetensors.h"
#include "testlib.h"

#define TOL_F32  1e-5
#define TOL_F64  1e-12
#define TOL_BF16 1e-2
#define MAX_IN   4

static ag_st_file *fx;          // the fixture
static const char *device_name; // "cpu" or "cuda", for messages

static const ag_st_entry *entry(const char *cs, const char *role) {
    char name[96];
    snprintf(name, sizeof name, "%s.%s", cs, role);
    const ag_st_entry *e = ag_st_find(fx, name);
    if (!e) ag_fail("fixture lacks %s (rerun tests/make_op_fixtures.py)", name);
    return e;
}

static double meta(const char *cs, const char *key) {
    char name[96];
    snprintf(name, sizeof name, "%s.%s", cs, key);
    const char *v = ag_st_meta(fx, name);
    if (!v) ag_fail("fixture lacks metadata %s", name);
    return atof(v);
}

// A new step tensor holding a fixture tensor, in the file's dtype.
static ag_tensor *load(ag_ctx *ctx, const char *cs, const char *role) {
    const ag_st_entry *e = entry(cs, role);
    ag_shape s = {.ndim = e->ndim};
    for (int i = 0; i < e->ndim; i++) s.d[i] = e->shape[i];
    ag_tensor *t = ag_new(ctx, ag_st_dtype(fx, e), s);
    if (ag_nbytes(t) != e->nbytes) ag_fail("fixture tensor %s.%s: size mismatch", cs, role);
    ag_copy_from_host(t, e->data);
    return t;
}

// Element i of a host buffer of dtype dt, as double.
static double host_value(ag_dtype dt, const void *p, int64_t i) {
    switch (dt) {
    case AG_F32: {
        float v;
        memcpy(&v, (const char *)p + 4 * i, 4);
        return v;
    }
    case AG_F64: {
        double v;
        memcpy(&v, (const char *)p + 8 * i, 8);
        return v;
    }
    case AG_BF16: {
        uint16_t v;
        memcpy(&v, (const char *)p + 2 * i, 2);
        return ag_bf16_to_f32(v);
    }
    default:
        ag_fail("host_value: not a float dtype");
    }
}

// Scaled max error of got against fixture tensor cs.role (see the header); checks the shape.
static double error_vs(ag_ctx *ctx, ag_tensor *got, const char *cs, const char *role) {
    const ag_st_entry *e = entry(cs, role);
    bool same = got->ndim == e->ndim;
    for (int i = 0; same && i < e->ndim; i++) same = got->shape[i] == e->shape[i];
    char d[96];
    TL_CHECK(same, "%s.%s [%s]: got shape %s", cs, role, device_name,
             ag_describe(got, d, sizeof d));
    if (!same) return INFINITY;
    ag_tensor *gc = ag_contiguous(ctx, got);
    int64_t n = ag_numel(gc);
    void *h = malloc(ag_nbytes(gc) + 1);
    ag_copy_to_host(gc, h);
    ag_dtype want_dt = ag_st_dtype(fx, e);
    double max_diff = 0, max_ref = 0;
    for (int64_t i = 0; i < n; i++) {
        double a = host_value(gc->dtype, h, i), b = host_value(want_dt, e->data, i);
        double diff = fabs(a - b);
        if (!(diff <= max_diff)) max_diff = isnan(diff) ? INFINITY : diff;
        max_ref = fmax(max_ref, fabs(b));
    }
    free(h);
    return max_diff / fmax(max_ref, 1e-6);
}

static double check(ag_ctx *ctx, ag_tensor *got, const char *cs, const char *role, double tol,
                    const char *variant) {
    double err = error_vs(ctx, got, cs, role);
    TL_CHECK(err <= tol, "%s.%s%s [%s]: error %.3g > %.0e", cs, role, variant, device_name, err,
             tol);
    return err;
}

// Op wrappers: inputs in the order the case lists them; arguments from the metadata.
typedef ag_tensor *(*ref_fn)(ag_ctx *ctx, ag_tensor *const *in, const char *cs);

static ag_tensor *r_permute(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_contiguous(c, ag_permute(c, in[0], AG_SHAPE(2, 0, 1)));
}
static ag_tensor *r_transpose(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_contiguous(c, ag_transpose(c, in[0], 0, 2));
}
static ag_tensor *r_slice(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_contiguous(c, ag_slice(c, in[0], 1, 1, 3));
}
static ag_tensor *r_reshape(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_reshape(c, in[0], AG_SHAPE(6, 5));
}
static ag_tensor *r_concat(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_concat(c, 2, in, 1);
}
static ag_tensor *r_add(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_add(c, in[0], in[1]);
}
static ag_tensor *r_sub(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_sub(c, in[0], in[1]);
}
static ag_tensor *r_mul(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_mul(c, in[0], in[1]);
}
static ag_tensor *r_scale(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_scale(c, in[0], meta(cs, "s"));
}
static ag_tensor *r_silu(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_silu(c, in[0]);
}
static ag_tensor *r_gelu(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_gelu(c, in[0]);
}
static ag_tensor *r_gelu_tanh(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_gelu_tanh(c, in[0]);
}
static ag_tensor *r_quick_gelu(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_quick_gelu(c, in[0]);
}
static ag_tensor *r_swiglu(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_swiglu(c, in[0], in[1]);
}
static ag_tensor *r_matmul(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_matmul(c, in[0], in[1], meta(cs, "ta") != 0, meta(cs, "tb") != 0);
}
static ag_tensor *r_linear(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_linear(c, in[0], in[1], in[2]); // in[2] NULL without bias
}
static ag_tensor *r_rmsnorm(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_rmsnorm(c, in[0], in[1], meta(cs, "eps"));
}
static ag_tensor *r_layernorm(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_layernorm(c, in[0], in[1], in[2], meta(cs, "eps"));
}
static ag_tensor *r_l2norm(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_l2_normalize(c, in[0], meta(cs, "eps"));
}
static ag_tensor *r_softmax(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_softmax(c, in[0]);
}
static ag_tensor *r_sum(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_sum(c, in[0], (int)meta(cs, "dim"));
}
static ag_tensor *r_mean(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_mean(c, in[0], (int)meta(cs, "dim"));
}
static ag_tensor *r_mean_all(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_mean_all(c, in[0]);
}
static ag_tensor *r_rope(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_rope(c, in[0], in[1], meta(cs, "theta"));
}
static ag_tensor *r_attention(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_attention(c, in[0], in[1], in[2], in[3], meta(cs, "causal") != 0, meta(cs, "scale"));
}
static ag_tensor *r_embedding(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_embedding(c, in[0], in[1]);
}
static ag_tensor *r_index_select(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_index_select_rows(c, in[0], in[1]);
}
static ag_tensor *r_scatter(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_scatter_rows(c, in[0], in[1], in[2]);
}
static ag_tensor *r_cross_entropy(ag_ctx *c, ag_tensor *const *in, const char *cs) {
    return ag_cross_entropy(c, in[0], in[1], (int32_t)meta(cs, "ignore_index"));
}

typedef struct {
    const char *name; // fixture case
    ref_fn fn;
    const char *in[MAX_IN]; // input roles in argument order; "-" passes NULL
    const char *grads;      // roles whose gradients are checked (comma separated), or NULL
    bool bf16;              // also run with the f32 inputs cast to bf16
} ref_case;

static const ref_case cases[] = {
    {"permute", r_permute, {"x"}, NULL, false},
    {"transpose", r_transpose, {"x"}, NULL, false},
    {"slice", r_slice, {"x"}, NULL, false},
    {"reshape", r_reshape, {"x"}, NULL, false},
    {"concat", r_concat, {"a", "b"}, NULL, true},
    {"add", r_add, {"a", "b"}, NULL, true},
    {"add_lead", r_add, {"a", "b"}, NULL, false},
    {"sub", r_sub, {"a", "b"}, NULL, true},
    {"mul", r_mul, {"a", "b"}, "a,b", true},
    {"scale", r_scale, {"x"}, NULL, true},
    {"silu", r_silu, {"x"}, NULL, true},
    {"gelu", r_gelu, {"x"}, NULL, true},
    {"gelu_tanh", r_gelu_tanh, {"x"}, NULL, true},
    {"quick_gelu", r_quick_gelu, {"x"}, NULL, true},
    {"swiglu", r_swiglu, {"gate", "up"}, "gate,up", true},
    {"matmul_nn", r_matmul, {"a", "b"}, "a,b", true},
    {"matmul_tn", r_matmul, {"a", "b"}, NULL, true},
    {"matmul_nt", r_matmul, {"a", "b"}, NULL, true},
    {"matmul_tt", r_matmul, {"a", "b"}, NULL, true},
    {"matmul_4d", r_matmul, {"a", "b"}, NULL, false},
    {"matmul_f64", r_matmul, {"a", "b"}, "a,b", false},
    {"linear", r_linear, {"x", "w", "b"}, "x,w,b", true},
    {"linear_nobias", r_linear, {"x", "w", "-"}, NULL, true},
    {"rmsnorm", r_rmsnorm, {"x", "w"}, "x,w", true},
    {"rmsnorm_f64", r_rmsnorm, {"x", "w"}, NULL, false},
    {"layernorm", r_layernorm, {"x", "w", "b"}, "x,w,b", true},
    {"layernorm_f64", r_layernorm, {"x", "w", "b"}, "x,w,b", false},
    {"l2norm", r_l2norm, {"x"}, "x", true},
    {"l2norm_eps", r_l2norm, {"x"}, NULL, true},
    {"softmax", r_softmax, {"x"}, "x", true},
    {"softmax_f64", r_softmax, {"x"}, NULL, false},
    {"sum", r_sum, {"x"}, NULL, true},
    {"mean", r_mean, {"x"}, NULL, true},
    {"mean_all", r_mean_all, {"x"}, NULL, true},
    {"rope", r_rope, {"x", "pos"}, "x", true},
    {"rope_bt", r_rope, {"x", "pos"}, NULL, true},
    {"attn_causal", r_attention, {"q", "k", "v", "-"}, "q,k,v", true},
    {"attn_cross", r_attention, {"q", "k", "v", "-"}, NULL, true},
    {"attn_causal_short_q", r_attention, {"q", "k", "v", "-"}, NULL, false},
    {"attn_mask", r_attention, {"q", "k", "v", "mask"}, "q,k,v", true},
    {"attn_mask_empty", r_attention, {"q", "k", "v", "mask"}, NULL, false},
    {"attn_gqa", r_attention, {"q", "k", "v", "-"}, "q,k,v", true},
    {"attn_f64", r_attention, {"q", "k", "v", "-"}, "q,k,v", false},
    {"embedding", r_embedding, {"table", "ids"}, "table", true},
    {"index_select", r_index_select, {"x", "idx"}, "x", false},
    {"scatter", r_scatter, {"base", "idx", "src"}, "base,src", false},
    {"cross_entropy", r_cross_entropy, {"logits", "targets"}, "logits", true},
    {"cross_entropy_f64", r_cross_entropy, {"logits", "targets"}, "logits", false},
    // numerical stability: naive exp overflows, naive variance cancels (reference in f64)
    {"softmax_large", r_softmax, {"x"}, NULL, false},
    {"layernorm_offset", r_layernorm, {"x", "w", "b"}, NULL, false},
    {"cross_entropy_large", r_cross_entropy, {"logits", "targets"}, NULL, false},
    {"attn_large", r_attention, {"q", "k", "v", "-"}, NULL, false},
    {"attn_causal_long_q", r_attention, {"q", "k", "v", "-"}, NULL, false},
};

static bool listed(const char *list, const char *role) {
    size_t n = strlen(role);
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && !strncmp(p, role, n)) return true;
        p = end ? end + 1 : NULL;
    }
    return false;
}

static int n_inputs(const ref_case *rc) {
    int n = 0;
    while (n < MAX_IN && rc->in[n]) n++;
    return n;
}

// Loads the inputs of rc; float ones cast to bf16 when as_bf16; gradients where listed.
static void load_inputs(ag_ctx *ctx, const ref_case *rc, bool as_bf16, ag_tensor **in) {
    for (int i = 0; i < MAX_IN; i++) in[i] = NULL;
    for (int i = 0; i < n_inputs(rc); i++) {
        if (!strcmp(rc->in[i], "-")) continue;
        in[i] = load(ctx, rc->name, rc->in[i]);
        if (as_bf16 && in[i]->dtype == AG_F32)
            in[i] = ag_cast(ctx, in[i], AG_BF16);
        else if (!as_bf16 && listed(rc->grads, rc->in[i]))
            ag_set_requires_grad(in[i], true);
    }
}

static void run_case(ag_ctx *ctx, const ref_case *rc) {
    ag_tensor *in[MAX_IN];
    ag_step_reset(ctx);
    load_inputs(ctx, rc, false, in);
    ag_tensor *out = rc->fn(ctx, in, rc->name);
    double tol = out->dtype == AG_F64 ? TOL_F64 : TOL_F32;
    double e_out = check(ctx, out, rc->name, "out", tol, "");
    double e_grad = -1, e_bf16 = -1;
    if (rc->grads) {
        ag_backward_from(ctx, out, load(ctx, rc->name, "r"));
        e_grad = 0;
        for (int i = 0; i < n_inputs(rc); i++) {
            if (!listed(rc->grads, rc->in[i])) continue;
            char role[32];
            snprintf(role, sizeof role, "grad_%s", rc->in[i]);
            TL_CHECK(in[i]->grad != NULL, "%s: no gradient for %s", rc->name, rc->in[i]);
            if (in[i]->grad)
                e_grad = fmax(e_grad, check(ctx, in[i]->grad, rc->name, role, tol, ""));
        }
    }
    if (rc->bf16) {
        ag_step_reset(ctx);
        load_inputs(ctx, rc, true, in);
        ag_tensor *o = rc->fn(ctx, in, rc->name);
        TL_CHECK(o->dtype == AG_BF16 || (o->ndim == 0 && o->dtype == AG_F32),
                 "%s (bf16): output dtype %s", rc->name, ag_dtype_name(o->dtype));
        e_bf16 = check(ctx, o, rc->name, "out", TOL_BF16, " (bf16)");
    }
    char line[160];
    int k =
        snprintf(line, sizeof line, "reference %-20s %-4s out %.2e", rc->name, device_name, e_out);
    if (e_grad >= 0) k += snprintf(line + k, sizeof line - (size_t)k, "  grads %.2e", e_grad);
    if (e_bf16 >= 0) snprintf(line + k, sizeof line - (size_t)k, "  bf16 out %.2e", e_bf16);
    printf("%s\n", line);
}

// ag_cast against torch's round-to-nearest-even, bit for bit (two ties included).
static void check_cast(ag_ctx *ctx) {
    ag_step_reset(ctx);
    ag_tensor *x = load(ctx, "cast", "x");
    ag_tensor *b = ag_cast(ctx, x, AG_BF16), *d = ag_cast(ctx, x, AG_F64);
    ag_tensor *back = ag_cast(ctx, b, AG_F32);
    const ag_st_entry *eb = entry("cast", "bf16"), *ed = entry("cast", "f64");
    int64_t n = ag_numel(x);
    uint16_t *hb = malloc(sizeof(uint16_t) * (size_t)n), *want = malloc(eb->nbytes);
    double *hd = malloc(sizeof(double) * (size_t)n), *wd = malloc(ed->nbytes);
    float *hf = malloc(sizeof(float) * (size_t)n);
    memcpy(want, eb->data, eb->nbytes);
    memcpy(wd, ed->data, ed->nbytes);
    ag_copy_to_host(b, hb);
    ag_copy_to_host(d, hd);
    ag_copy_to_host(back, hf);
    int bad_b = 0, bad_d = 0, bad_back = 0;
    for (int64_t i = 0; i < n; i++) {
        bad_b += hb[i] != want[i];
        bad_d += hd[i] != wd[i];
        bad_back += hf[i] != ag_bf16_to_f32(want[i]);
    }
    TL_CHECK(bad_b == 0, "cast f32->bf16 [%s]: %d of %lld differ from torch", device_name, bad_b,
             (long long)n);
    TL_CHECK(bad_d == 0, "cast f32->f64 [%s]: %d differ", device_name, bad_d);
    TL_CHECK(bad_back == 0, "cast bf16->f32 [%s]: %d differ", device_name, bad_back);
    printf("reference %-20s %-4s bf16, f64 and back bit-exact: %s\n", "cast", device_name,
           bad_b + bad_d + bad_back ? "no" : "yes");
    free(hb);
    free(want);
    free(hd);
    free(wd);
    free(hf);
}

// Odd corners the fixture cannot express: every query masked out (zeros, zero gradients),
// every row ignored (loss 0, zero gradient).
static void check_corners(ag_ctx *ctx) {
    ag_step_reset(ctx);
    ag_tensor *q = load(ctx, "attn_mask_empty", "q"), *k = load(ctx, "attn_mask_empty", "k");
    ag_tensor *v = load(ctx, "attn_mask_empty", "v");
    ag_set_requires_grad(q, true);
    ag_set_requires_grad(k, true);
    ag_set_requires_grad(v, true);
    ag_tensor *mask = ag_zeros(ctx, AG_U8, AG_SHAPE(q->shape[0], k->shape[1]));
    ag_tensor *o = ag_attention(ctx, q, k, v, mask, false, 0.5);
    ag_tensor *seed = ag_new(ctx, AG_F32, ag_shape_of(o));
    float *ones = malloc(ag_nbytes(seed));
    for (int64_t i = 0; i < ag_numel(seed); i++) ones[i] = 1.0f;
    ag_copy_from_host(seed, ones);
    ag_backward_from(ctx, o, seed);
    bool zeros = true, zero_grads = true;
    for (int64_t i = 0; i < ag_numel(o); i++) zeros &= ag_item(o, i) == 0.0;
    ag_tensor *grads[3] = {q->grad, k->grad, v->grad};
    for (int j = 0; j < 3; j++)
        for (int64_t i = 0; grads[j] && i < ag_numel(grads[j]); i++)
            zero_grads &= ag_item(grads[j], i) == 0.0;
    TL_CHECK(zeros, "attention with every key masked [%s]: output not zero", device_name);
    TL_CHECK(zero_grads, "attention with every key masked [%s]: gradients not zero", device_name);
    free(ones);

    ag_step_reset(ctx);
    ag_tensor *logits = load(ctx, "cross_entropy", "logits");
    ag_set_requires_grad(logits, true);
    int32_t ignored[6] = {-100, -100, -100, -100, -100, -100};
    ag_tensor *t = ag_new(ctx, AG_I32, AG_SHAPE(6));
    ag_copy_from_host(t, ignored);
    ag_tensor *loss = ag_cross_entropy(ctx, logits, t, -100);
    TL_CHECK(ag_item(loss, 0) == 0.0, "cross_entropy with every row ignored [%s]: loss %g",
             device_name, ag_item(loss, 0));
    bool gz = true;
    if (loss->requires_grad) {
        ag_backward(ctx, loss);
        for (int64_t i = 0; logits->grad && i < ag_numel(logits->grad); i++)
            gz &= ag_item(logits->grad, i) == 0.0;
    }
    TL_CHECK(gz, "cross_entropy with every row ignored [%s]: gradient not zero", device_name);
}

// Dropout: the mask's statistics and exact scaling.
static void dropout_case(ag_ctx *ctx, double p, int64_t n) {
    ag_step_reset(ctx);
    tl_rng rng = {.s = 4242};
    float *xv = malloc(sizeof(float) * (size_t)n), *a = malloc(sizeof(float) * (size_t)n);
    float *a2 = malloc(sizeof(float) * (size_t)n), *b = malloc(sizeof(float) * (size_t)n);
    double *d = malloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++) xv[i] = (float)(0.5 + tl_uniform(&rng)); // never 0
    ag_tensor *x = ag_new(ctx, AG_F32, AG_SHAPE(n));
    ag_copy_from_host(x, xv);
    ag_copy_to_host(ag_dropout(ctx, x, p, 7), a);
    ag_copy_to_host(ag_dropout(ctx, x, p, 8), b);
    ag_copy_to_host(ag_dropout(ctx, ag_cast(ctx, x, AG_F64), p, 7), d);
    // a counter hash: the mask does not depend on how many threads compute it
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    ag_copy_to_host(ag_dropout(ctx, x, p, 7), a2);
    omp_set_num_threads(threads);

    // 1/(1-p) is exact in f32 for p = 0, 0.5, 0.75, so kept values must be exactly
    // x * 1/(1-p); for other p, x * (1/(1-p)) and x / (1-p) may differ by a rounding.
    float scale = (float)(1.0 / (1.0 - p));
    double rtol = scale == 1.0 / (1.0 - p) ? 0.0 : 0x1p-22;
    int64_t kept = 0, kept_pairs = 0, agree = 0, bad_scale = 0, diff_repeat = 0, diff_f64 = 0;
    for (int64_t i = 0; i < n; i++) {
        bool ka = a[i] != 0, kb = b[i] != 0;
        kept += ka;
        if (i + 1 < n) kept_pairs += ka && a[i + 1] != 0;
        agree += ka == kb;
        if (ka && fabs(a[i] - xv[i] * scale) > rtol * fabs(a[i])) bad_scale++;
        if (kb && fabs(b[i] - xv[i] * scale) > rtol * fabs(b[i])) bad_scale++;
        diff_repeat += memcmp(&a[i], &a2[i], sizeof(float)) != 0;
        diff_f64 += (d[i] != 0) != ka;
    }
    // Within 5 standard deviations of the expected frequencies.
    double q = 1 - p, fn = (double)n;
    double f_kept = kept / fn, f_pairs = kept_pairs / (fn - 1), f_agree = agree / fn;
    double e_agree = q * q + p * p;
    bool ok_kept = fabs(f_kept - q) <= 5 * sqrt(q * p / fn);
    bool ok_pairs = fabs(f_pairs - q * q) <= 5 * sqrt(q * q * (1 - q * q) / fn) * 2;
    bool ok_agree = fabs(f_agree - e_agree) <= 5 * sqrt(e_agree * (1 - e_agree) / fn);
    TL_CHECK(ok_kept, "dropout p=%g [%s]: kept %.4f, expected %.4f", p, device_name, f_kept, q);
    TL_CHECK(ok_pairs, "dropout p=%g [%s]: neighbours both kept %.4f, expected %.4f", p,
             device_name, f_pairs, q * q);
    TL_CHECK(bad_scale == 0, "dropout p=%g [%s]: %lld kept values not x/(1-p)", p, device_name,
             (long long)bad_scale);
    TL_CHECK(diff_repeat == 0, "dropout p=%g [%s]: same seed, 1 thread: %lld elements differ", p,
             device_name, (long long)diff_repeat);
    if (p > 0) {
        TL_CHECK(ok_agree, "dropout p=%g [%s]: seeds 7 and 8 agree on %.4f, expected %.4f", p,
                 device_name, f_agree, e_agree);
    }
    TL_CHECK(diff_f64 == 0, "dropout p=%g [%s]: the f64 mask differs from the f32 one (%lld)", p,
             device_name, (long long)diff_f64);
    printf("reference %-20s %-4s p=%.2f kept %.4f (want %.4f), seeds agree %.4f (want %.4f)\n",
           "dropout", device_name, p, f_kept, q, f_agree, e_agree);
    free(xv);
    free(a);
    free(a2);
    free(b);
    free(d);
}

static void run_device(ag_device dev) {
    device_name = dev == AG_CPU ? "cpu" : "cuda";
    ag_ctx *ctx = ag_ctx_new(dev);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run_case(ctx, &cases[i]);
    check_cast(ctx);
    check_corners(ctx);
    dropout_case(ctx, 0.0, 1000);
    dropout_case(ctx, 0.1, 50000);
    dropout_case(ctx, 0.5, 50000);
    dropout_case(ctx, 0.75, 50000);
    ag_ctx_free(ctx);
}

int main(void) {
    char path[1024];
    tl_source_path(path, sizeof path, "tests/fixtures/ops_reference.safetensors");
    fx = ag_st_open(path);
    run_device(AG_CPU);
    if (ag_cuda_available())
        run_device(AG_CUDA);
    else
        printf("reference: no usable GPU, CUDA kernels not checked\n");
    ag_st_close(fx);
    return tl_summary("test_ops_reference");
}
