// cpu_step.c: times one full training step (forward, backward, AdamW) of a small
// Llama-style decoder on the CPU. bench/cpu_step.sh runs it beside the same model in PyTorch
// (bench/cpu_step_torch.py) and prints the ratio. Prints one JSON line.
//   bench_cpu_step [--dim 256 --layers 4 --heads 4 --ffn 768 --vocab 4096 --seq 256
//                   --batch 8 --steps 10 --warmup 2]
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/optim.h"
#include "bench/bench_util.h"
#include "model/llama.h"

int main(int argc, char **argv) {
    gm_llama_config c = bench_llama_config(256);
    int64_t B = 8, T = 256, steps = 10, warmup = 2;
    const bench_option opts[] = {{"--batch", &B}, {"--steps", &steps}, {"--warmup", &warmup}};
    if (!bench_parse_options(argc, argv, 1, opts, 3, &c, &T, "bench_cpu_step")) return 2;
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    ag_adamw *opt;
    gm_llama *m = bench_llama_new(ctx, &c, &opt);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(B * T));
    int32_t *tgt = malloc(sizeof(int32_t) * (size_t)(B * T));
    if (!bench_tokens(ids, tgt, B * T, c.vocab, 12345)) {
        fprintf(stderr, "bench_cpu_step: out of memory\n");
        return 1;
    }
    double *times = malloc(sizeof(double) * (size_t)steps);
    double loss = 0;
    for (int64_t it = 0; it < warmup + steps; it++) {
        double t0 = bench_now_s();
        ag_tensor *ti = ag_from_host(ctx, AG_I32, AG_SHAPE(B, T), ids);
        ag_tensor *tt = ag_from_host(ctx, AG_I32, AG_SHAPE(B, T), tgt);
        ag_tensor *l = gm_llama_loss(ctx, m, ti, tt);
        ag_backward(ctx, l);
        loss = ag_item(l, 0);
        ag_adamw_step(opt, 1e-4);
        ag_zero_grad(ctx, m->params, m->n_params);
        ag_step_reset(ctx);
        if (it >= warmup) times[it - warmup] = bench_now_s() - t0;
    }
    double median = bench_median(times, steps);
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
