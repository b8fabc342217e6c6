// lora.c: see lora.h.
#include "lora.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/context.h"
#include "autograd/error.h"
#include "autograd/rng.h"
#include "model/init.h"

static const char *const target_names[GM_LORA_NTARGETS] = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

const char *gm_lora_target_name(gm_lora_target t) {
    return (unsigned)t < GM_LORA_NTARGETS ? target_names[t] : "?";
}

int gm_lora_target_from_name(const char *name) {
    for (int t = 0; t < GM_LORA_NTARGETS; t++)
        if (!strcmp(name, target_names[t])) return t;
    return -1;
}

void gm_lora_check_config(const gm_lora_config *c) {
    if (c->rank == 0) return;
    if (c->rank < 0) ag_fail("lora config: rank must be >= 1, got %lld", (long long)c->rank);
    if (!(c->alpha > 0)) ag_fail("lora config: alpha must be > 0, got %g", c->alpha);
    if (!(c->dropout >= 0 && c->dropout < 1))
        ag_fail("lora config: dropout must be in [0, 1), got %g", c->dropout);
    if (!c->targets || c->targets & ~GM_LORA_ALL_TARGETS)
        ag_fail("lora config: targets must be a non-empty subset of the 7 Llama linears");
}

double gm_lora_scale(const gm_lora_config *c) {
    return c->rank > 0 ? c->alpha / (double)c->rank : 0;
}

gm_lora_pair gm_lora_new(ag_ctx *ctx, const ag_tensor *w, int64_t rank) {
    const char *base = ag_label(w, "");
    size_t n = strlen(base), k = strlen(".weight");
    if (w->ndim != 2 || n < k || strcmp(base + n - k, ".weight"))
        ag_fail("lora: '%s' is not a linear weight (..., .weight, 2-D)", base);
    char name[512];
    if (snprintf(name, sizeof name, "%.*s.lora_A.weight", (int)(n - k), base) >= (int)sizeof name)
        ag_fail("lora: parameter name '%s' is too long", base);
    gm_lora_pair p;
    p.A = ag_param(ctx, name, w->dtype, AG_SHAPE(rank, w->shape[1])); // (r, in)
    snprintf(name, sizeof name, "%.*s.lora_B.weight", (int)(n - k), base);
    p.B = ag_param(ctx, name, w->dtype, AG_SHAPE(w->shape[0], rank)); // (out, r)
    return p;
}

void gm_lora_init(const gm_lora_pair *p, uint64_t seed) {
    if (!p->A) return;
    // kaiming_uniform_(a = sqrt(5)): gain sqrt(2 / (1 + 5)), bound gain * sqrt(3 / fan_in).
    const int64_t n = ag_numel(p->A), fan_in = p->A->shape[1];
    const double bound = 1.0 / sqrt((double)fan_in);
    double *v = ag_xmalloc((size_t)n * sizeof *v, "lora init");
    uint64_t key =
        ag_mix64(seed * 0x9e3779b97f4a7c15ull + ag_mix64(gm_name_stream(p->A->name) + 1));
    for (int64_t i = 0; i < n; i++) {
        double u = (double)(ag_mix64(key + (uint64_t)i) >> 11) * 0x1.0p-53; // [0, 1)
        v[i] = (2 * u - 1) * bound;
    }
    ag_copy_from_host_f64(p->A, v);
    free(v);
    v = ag_xcalloc((size_t)ag_numel(p->B), sizeof *v, "lora init");
    ag_copy_from_host_f64(p->B, v);
    free(v);
}

ag_tensor *gm_lora_linear(ag_ctx *ctx, ag_tensor *x, ag_tensor *w, const gm_lora_pair *p,
                          double scale, double dropout, uint64_t seed) {
    ag_tensor *y = ag_linear(ctx, x, w, NULL); // (..., out)
    if (!p || !p->A) return y;
    ag_tensor *xd = dropout > 0 ? ag_dropout(ctx, x, dropout, seed) : x;
    // The scale on the rank-r side: one (..., r) tensor more in the step arena, not (..., out).
    ag_tensor *t = ag_scale(ctx, ag_linear(ctx, xd, p->A, NULL), scale); // (..., r)
    return ag_add(ctx, y, ag_linear(ctx, t, p->B, NULL));
}

// f64 copy of t's values (host).
static double *to_f64(const ag_tensor *t) {
    double *v = ag_xmalloc((size_t)ag_numel(t) * sizeof *v, "lora");
    ag_copy_to_host_f64(t, v);
    return v;
}

void gm_lora_merge(ag_tensor *w, const gm_lora_pair *p, double scale) {
    if (!p->A) return;
    const int64_t out = w->shape[0], in = w->shape[1], r = p->A->shape[0];
    if (p->A->shape[1] != in || p->B->shape[0] != out || p->B->shape[1] != r)
        ag_fail("lora: %s / %s do not fit %s", p->A->name, p->B->name, ag_label(w, "weight"));
    double *W = to_f64(w), *A = to_f64(p->A), *B = to_f64(p->B);
    double *acc = ag_xmalloc((size_t)in * sizeof *acc, "lora merge");
    for (int64_t o = 0; o < out; o++) {
        memset(acc, 0, (size_t)in * sizeof *acc);
        for (int64_t k = 0; k < r; k++) { // acc = (B A)[o, :]
            const double b = B[o * r + k], *a = A + k * in;
            for (int64_t i = 0; i < in; i++) acc[i] += b * a[i];
        }
        double *row = W + o * in;
        for (int64_t i = 0; i < in; i++) row[i] += scale * acc[i];
    }
    ag_copy_from_host_f64(w, W);
    free(acc);
    free(W);
    free(A);
    free(B);
}
