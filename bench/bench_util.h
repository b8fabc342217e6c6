// bench_util.h: what the benchmarks share: a monotonic clock, the median of a set of
// timings, the Llama size options (--dim --layers --heads --ffn --vocab --seq) and the random
// token batch a decoder step is timed on. Header-only: each bench is one executable.
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/llama.h"

static inline double bench_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// The median of x[0..n) (n >= 1); x is sorted in place.
static inline double bench_median(double *x, int64_t n) {
    qsort(x, (size_t)n, sizeof *x, bench_cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

// Applies option key = v when it is one of the decoder's sizes (--seq sets max_seq and *T);
// false when key is not one of them.
static inline bool bench_llama_option(gm_llama_config *c, int64_t *T, const char *key, int64_t v) {
    if (!strcmp(key, "--dim"))
        c->dim = v;
    else if (!strcmp(key, "--layers"))
        c->n_layers = v;
    else if (!strcmp(key, "--heads"))
        c->n_heads = c->n_kv_heads = v;
    else if (!strcmp(key, "--kv-heads"))
        c->n_kv_heads = v;
    else if (!strcmp(key, "--ffn"))
        c->ffn = v;
    else if (!strcmp(key, "--vocab"))
        c->vocab = v;
    else if (!strcmp(key, "--seq"))
        c->max_seq = *T = v;
    else
        return false;
    return true;
}

// n token ids and n targets below vocab from an LCG seeded with seed; false when ids or tgt
// is NULL (a failed allocation).
static inline bool bench_tokens(int32_t *ids, int32_t *tgt, int64_t n, int64_t vocab,
                                uint64_t seed) {
    if (!ids || !tgt) return false;
    uint64_t s = seed;
    for (int64_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((s >> 33) % (uint64_t)vocab);
        tgt[i] = (int32_t)((s >> 13) % (uint64_t)vocab);
    }
    return true;
}
