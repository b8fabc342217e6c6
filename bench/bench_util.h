// bench_util.h: what the benchmarks share: a monotonic clock, the median of a set of
// timings, "--key value" integer options, the small Llama a CPU step is timed on (model +
// AdamW) with its size options (--dim --layers --heads --ffn --vocab --seq) and its random
// token batch. Header-only: each bench is one executable.
#pragma once
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autograd/optim.h"
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

// The small decoder of the CPU benches (bench/cpu_step_torch.py builds the same one): d 256,
// 4 layers of 4 heads, FFN 768, vocabulary 4096.
static inline gm_llama_config bench_llama_config(int64_t max_seq) {
    return (gm_llama_config){.vocab = 4096,
                             .dim = 256,
                             .n_layers = 4,
                             .n_heads = 4,
                             .n_kv_heads = 4,
                             .ffn = 768,
                             .max_seq = max_seq,
                             .rope_theta = 1e4,
                             .norm_eps = 1e-5};
}

// A decoder of config c on ctx, initialised (seed 1, std 0.02), every parameter trained, and
// its AdamW (betas 0.9 / 0.999, eps 1e-8, no weight decay) in *opt.
static inline gm_llama *bench_llama_new(ag_ctx *ctx, const gm_llama_config *c, ag_adamw **opt) {
    gm_llama *m = gm_llama_new(ctx, c, AG_F32);
    gm_llama_init(m, 1, 0.02);
    for (int i = 0; i < m->n_params; i++) ag_set_trainable(ctx, m->params[i], true);
    *opt =
        ag_adamw_new(ctx, m->params, m->n_params, NULL, (ag_adamw_config){0.9, 0.999, 1e-8, 0.0});
    return m;
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

// An integer option of a bench: "--key value" stores value in *value.
typedef struct {
    const char *key;
    int64_t *value;
} bench_option;

// Parses argv[first..argc) as "--key value" pairs: the decoder's sizes (bench_llama_option)
// when c is not NULL, then opts[0..n). A key that is neither, a missing value or one that is
// not an integer is one line on stderr naming prog; false then.
static inline bool bench_parse_options(int argc, char **argv, int first, const bench_option *opts,
                                       int n, gm_llama_config *c, int64_t *T, const char *prog) {
    for (int i = first; i < argc; i += 2) {
        const char *k = argv[i];
        if (i + 1 >= argc) {
            fprintf(stderr, "%s: %s needs a value\n", prog, k);
            return false;
        }
        char *end;
        errno = 0;
        long long v = strtoll(argv[i + 1], &end, 10);
        if (errno || end == argv[i + 1] || *end) {
            fprintf(stderr, "%s: %s: '%s' is not an integer\n", prog, k, argv[i + 1]);
            return false;
        }
        if (c && bench_llama_option(c, T, k, v)) continue;
        int j = 0;
        while (j < n && strcmp(opts[j].key, k)) j++;
        if (j == n) {
            fprintf(stderr, "%s: unknown option %s\n", prog, k);
            return false;
        }
        *opts[j].value = v;
    }
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
