// test_kv_cache.c: the KV-cached decoder path (model/llama.h gm_llama_hidden_cached) against
// the full forward (gm_llama_hidden), on small random models: multi-head, grouped-query and
// multi-query attention, batches of 1 and 2, the prompt fed in one chunk, then a chunk of 3,
// then one position at a time. Every position's logits must agree within 1e-5 of the row's
// largest logit (f32). The cost per new token must not grow with the prompt: the cache runs
// exactly B decoder rows per step whatever the prompt length (counted), and the measured time
// per token at a long prompt is compared with the uncached rerun of the whole prefix (printed,
// with a loose bound).
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <time.h>

#include "model/llama.h"
#include "testlib.h"

// This process's CPU time: check_cost runs on one thread, so other tests sharing CI's cores
// (and sanitizer builds' slower neighbours) do not enter the ratio.
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// logits (B*n, V) of hidden (B, n, C) into host out.
static void logits_of(ag_ctx *ctx, const gm_llama *m, ag_tensor *h, float *out) {
    ag_copy_to_host(ag_cast(ctx, gm_llama_logits(ctx, m, h), AG_F32), out);
}

typedef struct {
    const char *name;
    int64_t dim, heads, kv_heads, B;
    ag_dtype dtype;
    double tol;
} kv_case;

static void check_case(const kv_case *k) {
    gm_llama_config c = {.vocab = 61,
                         .dim = k->dim,
                         .n_layers = 2,
                         .n_heads = k->heads,
                         .n_kv_heads = k->kv_heads,
                         .ffn = 2 * k->dim + 8,
                         .max_seq = 40,
                         .rope_theta = 1e4,
                         .norm_eps = 1e-5};
    enum { T = 21, P = 7 };
    const int64_t B = k->B, V = c.vocab;
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_llama *m = gm_llama_new(ctx, &c, k->dtype);
    gm_llama_init(m, 17, 0.2); // large weights: logits far from uniform
    tl_rng rng = {42};
    int32_t ids[2 * T];
    for (int64_t i = 0; i < B * T; i++) ids[i] = (int32_t)tl_randint(&rng, V);
    float *full = malloc(sizeof(float) * (size_t)(B * T * V));
    float *step = malloc(sizeof(float) * (size_t)(B * T * V));
    ag_no_grad_begin(ctx);
    ag_tensor *x = gm_llama_embed(ctx, m, ag_from_host(ctx, AG_I32, AG_SHAPE(B, T), ids));
    logits_of(ctx, m, gm_llama_hidden(ctx, m, x, gm_positions(ctx, T)), full);
    ag_step_reset(ctx);

    gm_llama_kv *kv = gm_llama_kv_new(m, B, 30);
    bool rows_ok = true;
    for (int round = 0; round < 2; round++) { // the second round reuses the reset cache
        gm_llama_kv_reset(kv);
        kv->rows = 0;
        for (int64_t t = 0; t < T;) {
            int64_t n = t == 0 ? P : t == P ? 3 : 1;
            int32_t chunk[2 * P];
            for (int64_t b = 0; b < B; b++)
                for (int64_t j = 0; j < n; j++) chunk[b * n + j] = ids[b * T + t + j];
            ag_tensor *xs =
                gm_llama_embed(ctx, m, ag_from_host(ctx, AG_I32, AG_SHAPE(B, n), chunk));
            int64_t rows0 = kv->rows;
            float *out = malloc(sizeof(float) * (size_t)(B * n * V));
            logits_of(ctx, m, gm_llama_hidden_cached(ctx, m, kv, xs), out);
            rows_ok = rows_ok && kv->rows - rows0 == B * n && kv->len == t + n;
            for (int64_t b = 0; b < B; b++)
                for (int64_t j = 0; j < n; j++)
                    memcpy(step + ((b * T) + t + j) * V, out + (b * n + j) * V,
                           sizeof(float) * (size_t)V);
            free(out);
            ag_step_reset(ctx);
            t += n;
        }
        double worst = 0;
        for (int64_t r = 0; r < B * T; r++) {
            double big = 0, diff = 0;
            for (int64_t v = 0; v < V; v++) {
                big = fmax(big, fabs(full[r * V + v]));
                diff = fmax(diff, fabs(full[r * V + v] - step[r * V + v]));
            }
            worst = fmax(worst, diff / big);
        }
        TL_CHECK(worst <= k->tol, "%s round %d: cached logits differ by %.3g (relative) > %.1g",
                 k->name, round, worst, k->tol);
        printf("%s round %d: worst relative difference %.3g\n", k->name, round, worst);
    }
    TL_CHECK(rows_ok, "%s: rows counted per call must be B x new positions", k->name);

    // the cache is bounded and for inference only
    x = gm_llama_embed(ctx, m, ag_from_host(ctx, AG_I32, AG_SHAPE(B, T), ids));
    TL_EXPECT_FAIL(gm_llama_hidden_cached(ctx, m, kv, x), "kv cache", "exceed");
    ag_step_reset(ctx);
    gm_llama_kv_reset(kv);
    ag_tensor *one = gm_llama_embed(ctx, m, ag_from_host(ctx, AG_I32, AG_SHAPE(1, 1), ids));
    if (B != 1) TL_EXPECT_FAIL(gm_llama_hidden_cached(ctx, m, kv, one), "kv cache", "sequences");
    ag_no_grad_end(ctx);
    TL_EXPECT_FAIL(gm_llama_hidden_cached(ctx, m, kv, one), "kv cache", "inference only");
    TL_EXPECT_FAIL(gm_llama_kv_new(m, 1, 41), "kv cache", "max_seq 40");
    gm_llama_kv_free(kv);
    free(full);
    free(step);
    gm_llama_free(m);
    ag_ctx_free(ctx);
}

// Seconds per new token, best of 3 runs (1 uncached) of `steps` tokens after a prompt of P
// positions: cached (one row per step) or uncached (the whole prefix again, as eval used to
// decode).
static double per_token(ag_ctx *ctx, const gm_llama *m, gm_llama_kv *kv, int64_t P, int steps,
                        bool cached, int64_t *rows) {
    const int64_t L = P + steps;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)L);
    for (int64_t i = 0; i < L; i++) ids[i] = (int32_t)(i * 7 % m->cfg.vocab);
    float *row = malloc(sizeof(float) * (size_t)L * (size_t)m->cfg.vocab);
    double best = INFINITY;
    ag_no_grad_begin(ctx);
    for (int rep = 0; rep < (cached ? 3 : 1); rep++) {
        *rows = 0;
        if (cached) {
            gm_llama_kv_reset(kv);
            ag_tensor *x = gm_llama_embed(ctx, m, ag_from_host(ctx, AG_I32, AG_SHAPE(1, P), ids));
            gm_llama_hidden_cached(ctx, m, kv, x);
            ag_step_reset(ctx);
        }
        int64_t rows0 = kv->rows;
        double t0 = now_s();
        for (int k = 0; k < steps; k++) {
            ag_tensor *h;
            if (cached) {
                ag_tensor *x =
                    gm_llama_embed(ctx, m, ag_from_host(ctx, AG_I32, AG_SHAPE(1, 1), ids + P + k));
                h = gm_llama_hidden_cached(ctx, m, kv, x);
            } else {
                int64_t n = P + k + 1;
                ag_tensor *x =
                    gm_llama_embed(ctx, m, ag_from_host(ctx, AG_I32, AG_SHAPE(1, n), ids));
                h = ag_slice(ctx, gm_llama_hidden(ctx, m, x, gm_positions(ctx, n)), 1, n - 1, n);
                *rows += n;
            }
            logits_of(ctx, m, ag_contiguous(ctx, h), row);
            ag_step_reset(ctx);
        }
        best = fmin(best, (now_s() - t0) / steps);
        if (cached) *rows = kv->rows - rows0;
    }
    ag_no_grad_end(ctx);
    free(ids);
    free(row);
    return best;
}

static void check_cost(void) {
    gm_llama_config c = {.vocab = 256,
                         .dim = 64,
                         .n_layers = 2,
                         .n_heads = 4,
                         .n_kv_heads = 2,
                         .ffn = 176,
                         .max_seq = 512,
                         .rope_theta = 1e4,
                         .norm_eps = 1e-5};
    enum { STEPS = 16, SHORT = 16, LONG = 400 };
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_llama *m = gm_llama_new(ctx, &c, AG_F32);
    gm_llama_init(m, 5, 0.02);
    gm_llama_kv *kv = gm_llama_kv_new(m, 1, c.max_seq);
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    int64_t rs, rl, ru;
    double cs = per_token(ctx, m, kv, SHORT, STEPS, true, &rs);
    double cl = per_token(ctx, m, kv, LONG, STEPS, true, &rl);
    double ul = per_token(ctx, m, kv, LONG, STEPS, false, &ru);
    omp_set_num_threads(threads);
    printf("per new token: cached %.3f ms (prompt %d), %.3f ms (prompt %d); uncached %.3f ms "
           "(prompt %d): cached is %.1fx faster\n",
           1e3 * cs, SHORT, 1e3 * cl, LONG, 1e3 * ul, LONG, ul / cl);
    printf("decoder rows per new token: cached %.1f (prompt %d), %.1f (prompt %d); uncached "
           "%.1f (prompt %d)\n",
           (double)rs / STEPS, SHORT, (double)rl / STEPS, LONG, (double)ru / STEPS, LONG);
    TL_CHECK(rs == STEPS && rl == STEPS, "cached decoding runs one row per token (%lld, %lld)",
             (long long)rs, (long long)rl);
    TL_CHECK(ru == STEPS * (LONG + 1) + STEPS * (STEPS - 1) / 2, "uncached rows %lld",
             (long long)ru);
    // A loose bound (a shared machine, OpenMP wake-ups): the rows above are the exact check.
    TL_CHECK(ul > 5 * cl, "cached decoding %.3f ms/token, not much faster than uncached %.3f",
             1e3 * cl, 1e3 * ul);
    gm_llama_kv_free(kv);
    gm_llama_free(m);
    ag_ctx_free(ctx);
}

int main(void) {
    static const kv_case cases[] = {
        {"multi-head, B 1", 32, 4, 4, 1, AG_F32, 1e-5},
        {"grouped-query 4/2, B 2", 32, 4, 2, 2, AG_F32, 1e-5},
        {"multi-query 4/1, B 1", 48, 4, 1, 1, AG_F32, 1e-5},
        {"grouped-query 6/3 bf16, B 2", 48, 6, 3, 2, AG_BF16, 2e-2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_case(&cases[i]);
    check_cost();
    return tl_summary("test_kv_cache");
}
