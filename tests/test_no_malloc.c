// test_no_malloc.c: after warm-up, a full training step (forward, backward, clipping,
// AdamW) of a small Llama makes no heap allocation in groundc's code. The test is linked
// with --wrap for malloc, calloc, realloc and aligned_alloc (tests/labels.cmake), so every
// such call from groundc's static libraries goes through the counters below.
#include <stdlib.h>

#include "autograd/optim.h"
#include "data/copy_task.h"
#include "model/llama.h"
#include "testlib.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t s);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);
static long g_allocs;
void *__wrap_malloc(size_t n) {
    g_allocs++;
    return __real_malloc(n);
}
void *__wrap_calloc(size_t n, size_t s) {
    g_allocs++;
    return __real_calloc(n, s);
}
void *__wrap_realloc(void *p, size_t n) {
    g_allocs++;
    return __real_realloc(p, n);
}
void *__wrap_aligned_alloc(size_t a, size_t n) {
    g_allocs++;
    return __real_aligned_alloc(a, n);
}

static void step(ag_ctx *ctx, gm_llama *m, ag_adamw *opt, const int32_t *ids, const int32_t *tg,
                 int64_t B, int64_t T) {
    ag_tensor *ti = ag_from_host(ctx, AG_I32, AG_SHAPE(B, T), ids);
    ag_tensor *tt = ag_from_host(ctx, AG_I32, AG_SHAPE(B, T), tg);
    ag_backward(ctx, gm_llama_loss(ctx, m, ti, tt));
    ag_clip_grad_norm(m->params, m->n_params, 1.0);
    ag_adamw_step(opt, 1e-3);
    ag_zero_grad(ctx, m->params, m->n_params);
    ag_step_reset(ctx);
}

int main(void) {
    gm_llama_config c = {.vocab = 40,
                         .dim = 32,
                         .n_layers = 2,
                         .n_heads = 4,
                         .n_kv_heads = 2,
                         .ffn = 48,
                         .max_seq = 64,
                         .rope_theta = 1e4,
                         .norm_eps = 1e-5};
    enum { B = 4, N = 15 };
    const int64_t T = ds_copy_seq_len(N);
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_llama *m = gm_llama_new(ctx, &c, AG_F32);
    gm_llama_init(m, 1, 0.02);
    for (int i = 0; i < m->n_params; i++) ag_set_trainable(ctx, m->params[i], true);
    ag_adamw *opt =
        ag_adamw_new(ctx, m->params, m->n_params, NULL, (ag_adamw_config){0.9, 0.999, 1e-8, 0.01});
    int32_t ids[B * 31], tg[B * 31];
    for (int b = 0; b < B; b++) ds_copy_sample(3, b, N, c.vocab, ids + b * T, tg + b * T);
    for (int i = 0; i < 3; i++) step(ctx, m, opt, ids, tg, B, T); // warm-up
    long before = g_allocs;
    for (int i = 0; i < 3; i++) step(ctx, m, opt, ids, tg, B, T);
    long during = g_allocs - before;
    printf("heap allocations in 3 steady-state steps: %ld (warm-up made %ld)\n", during, before);
    TL_CHECK(before > 0, "the wrap does not see allocations at all");
    TL_CHECK(during == 0, "%ld heap allocations in steady-state steps", during);
    ag_adamw_free(opt);
    gm_llama_free(m);
    ag_ctx_free(ctx);
    return tl_summary("test_no_malloc");
}
