// cpu_step.c: times one full training step (forward, backward, AdamW) of a small
// Llama-style decoder on the CPU. bench/cpu_step.sh runs it beside the same model in PyTorch
// (bench/cpu_step_torch.py) and prints the ratio. Prints one JSON line.
//   bench_cpu_step [--dim 256 --layers 4 --heads 4 --ffn 768 --vocab 4096 --seq 256
//                   --batch 8 --steps 10 --warmup 2]
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autograd/optim.h"
#include "model/llama.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    gm_llama_config c = {.vocab = 4096,
                         .dim = 256,
                         .n_layers = 4,
                         .n_heads = 4,
                         .n_kv_heads = 4,
                         .ffn = 768,
                         .max_seq = 256,
                         .rope_theta = 1e4,
                         .norm_eps = 1e-5};
    int64_t B = 8, T = 256, steps = 10, warmup = 2;
    for (int i = 1; i + 1 < argc; i += 2) {
        int64_t v = atoll(argv[i + 1]);
        if (!strcmp(argv[i], "--dim"))
            c.dim = v;
        else if (!strcmp(argv[i], "--layers"))
            c.n_layers = v;
        else if (!strcmp(argv[i], "--heads"))
            c.n_heads = c.n_kv_heads = v;
        else if (!strcmp(argv[i], "--ffn"))
            c.ffn = v;
        else if (!strcmp(argv[i], "--vocab"))
            c.vocab = v;
        else if (!strcmp(argv[i], "--seq"))
            c.max_seq = T = v;
        else if (!strcmp(argv[i], "--batch"))
            B = v;
        else if (!strcmp(argv[i], "--steps"))
            steps = v;
        else if (!strcmp(argv[i], "--warmup"))
            warmup = v;
        else {
            fprintf(stderr, "bench_cpu_step: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    gm_llama *m = gm_llama_new(ctx, &c, AG_F32);
    gm_llama_init(m, 1, 0.02);
    for (int i = 0; i < m->n_params; i++) ag_set_trainable(ctx, m->params[i], true);
    ag_adamw *opt =
        ag_adamw_new(ctx, m->params, m->n_params, NULL, (ag_adamw_config){0.9, 0.999, 1e-8, 0.0});
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(B * T));
    int32_t *tgt = malloc(sizeof(int32_t) * (size_t)(B * T));
    uint64_t s = 12345;
    for (int64_t i = 0; i < B * T; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((s >> 33) % (uint64_t)c.vocab);
        tgt[i] = (int32_t)((s >> 13) % (uint64_t)c.vocab);
    }
    double *times = malloc(sizeof(double) * (size_t)steps);
    double loss = 0;
    for (int64_t it = 0; it < warmup + steps; it++) {
        double t0 = now_s();
        ag_tensor *ti = ag_from_host(ctx, AG_I32, AG_SHAPE(B, T), ids);
        ag_tensor *tt = ag_from_host(ctx, AG_I32, AG_SHAPE(B, T), tgt);
        ag_tensor *l = gm_llama_loss(ctx, m, ti, tt);
        ag_backward(ctx, l);
        loss = ag_item(l, 0);
        ag_adamw_step(opt, 1e-4);
        ag_zero_grad(ctx, m->params, m->n_params);
        ag_step_reset(ctx);
        if (it >= warmup) times[it - warmup] = now_s() - t0;
    }
    qsort(times, (size_t)steps, sizeof *times, cmp_double);
    double median = times[steps / 2];
    printf("{\"impl\": \"groundc\", \"median_step_s\": %.6f, \"tokens_per_s\": %.1f, "
           "\"params\": %lld, \"loss\": %.4f, \"peak_step_bytes\": %zu}\n",
           median, (double)(B * T) / median, (long long)gm_llama_param_count(m), loss,
           ag_step_peak_bytes(ctx));
    free(times);
    free(ids);
    free(tgt);
    ag_adamw_free(opt);
    gm_llama_free(m);
    ag_ctx_free(ctx);
    return isfinite(loss) ? 0 : 1;
}
