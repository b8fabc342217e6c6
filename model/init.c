// init.c: see init.h. Values are made on the host in f64 and converted on the copy in, so f32
// and bf16 parameters start from the same numbers.
#include "init.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/context.h"
#include "autograd/error.h"
#include "autograd/rng.h"

void gm_init_normal(ag_tensor *p, uint64_t seed, uint64_t stream, double std) {
    int64_t n = ag_numel(p);
    double *v = ag_xmalloc((size_t)n * sizeof *v, "parameter init");
    uint64_t key = ag_mix64(seed * 0x9e3779b97f4a7c15ull + ag_mix64(stream + 1));
    for (int64_t i = 0; i < n; i += 2) { // Box-Muller, two values per pair of uniforms
        double u1 = (double)((ag_mix64(key + 2 * (uint64_t)i) >> 11) + 1) * 0x1.0p-53;
        double u2 = (double)(ag_mix64(key + 2 * (uint64_t)i + 1) >> 11) * 0x1.0p-53;
        double r = sqrt(-2.0 * log(u1)) * std;
        v[i] = r * cos(6.283185307179586 * u2);
        if (i + 1 < n) v[i + 1] = r * sin(6.283185307179586 * u2);
    }
    ag_copy_from_host_f64(p, v);
    free(v);
}

void gm_init_constant(ag_tensor *p, double value) {
    int64_t n = ag_numel(p);
    double *v = ag_xmalloc((size_t)n * sizeof *v, "parameter init");
    for (int64_t i = 0; i < n; i++) v[i] = value;
    ag_copy_from_host_f64(p, v);
    free(v);
}

void gm_init_sincos_2d(ag_tensor *p, int64_t lead, int64_t gh, int64_t gw) {
    const int64_t C = p->shape[p->ndim - 1], rows = ag_numel(p) / C, q = C / 4;
    if (C % 4 || rows != lead + gh * gw)
        ag_fail("%s: a 2-D sin-cos table needs (%lld, C %% 4 == 0) rows, not %lld x %lld",
                p->name ? p->name : "position table", (long long)(lead + gh * gw), (long long)rows,
                (long long)C);
    double *v = ag_xcalloc((size_t)(rows * C), sizeof *v, "position init");
    for (int64_t y = 0; y < gh; y++)
        for (int64_t x = 0; x < gw; x++) {
            double *r = v + (lead + y * gw + x) * C;
            for (int64_t k = 0; k < q; k++) {
                double w = pow(10000.0, -(double)k / (double)q);
                r[k] = sin((double)y * w);
                r[q + k] = cos((double)y * w);
                r[2 * q + k] = sin((double)x * w);
                r[3 * q + k] = cos((double)x * w);
            }
        }
    ag_copy_from_host_f64(p, v);
    free(v);
}

uint64_t gm_name_stream(const char *name) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *name; name++) h = (h ^ (uint8_t)*name) * 0x100000001b3ull;
    return h;
}

void gm_init_normal_named(ag_tensor *p, uint64_t seed, double std) {
    gm_init_normal(p, seed, gm_name_stream(ag_label(p, "")), std);
}

void gm_init_by_kind(ag_tensor *const *ps, int n, uint64_t seed, double std) {
    for (int i = 0; i < n; i++) {
        const char *name = ag_label(ps[i], "");
        size_t len = strlen(name);
        if (len >= 5 && !strcmp(name + len - 5, ".bias"))
            gm_init_constant(ps[i], 0.0);
        else if (ps[i]->ndim == 1)
            gm_init_constant(ps[i], 1.0); // LayerNorm weight
        else
            gm_init_normal_named(ps[i], seed, std);
    }
}
