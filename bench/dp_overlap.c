// dp_overlap.c: times a data-parallel CPU training step (forward, backward, gradient
// all-reduce across the MPI ranks, AdamW) of a small Llama-style decoder with the all-reduce
// overlapped with the backward pass (tr_grad_reducer fed by ag_backward_watch) and after it
// (tr_dist_allreduce_grads), alternating rounds of each in one run on one model. Rank 0
// prints one JSON line: the median step times, the medians of the time from the end of the
// backward pass to the summed gradients (the communication the step waits for), and the
// ratio overlap / after (below 1: overlap is faster). bench/dp_overlap.sh launches it.
//   mpirun -np 2 bench_dp_overlap [--dim 256 --layers 4 --heads 4 --ffn 768 --vocab 4096
//       --seq 128 --batch 2 --steps 6 --rounds 3 --warmup 2 --bucket 4194304]
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/optim.h"
#include "bench/bench_util.h"
#include "model/llama.h"
#include "train/dist.h"

int main(int argc, char **argv) {
    tr_dist d = tr_dist_init(&argc, &argv);
    gm_llama_config c = bench_llama_config(128);
    int64_t B = 2, T = 128, steps = 6, rounds = 3, warmup = 2, bucket = (int64_t)1 << 22;
    const bench_option opts[] = {{"--batch", &B},
                                 {"--steps", &steps},
                                 {"--rounds", &rounds},
                                 {"--warmup", &warmup},
                                 {"--bucket", &bucket}};
    if (!bench_parse_options(argc, argv, 1, opts, 5, &c, &T, "bench_dp_overlap"))
        tr_dist_abort(&d, 2);
    if (steps < 1 || rounds < 1 || warmup < 0) {
        fprintf(stderr, "bench_dp_overlap: --steps and --rounds must be >= 1\n");
        tr_dist_abort(&d, 2);
    }
    char device[128];
    tr_dist_use_device(&d, AG_CPU, device, sizeof device);
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    ag_adamw *opt;
    gm_llama *m = bench_llama_new(ctx, &c, &opt);
    tr_grad_reducer *red = tr_grad_reducer_new(&d, m->params, m->n_params, bucket);
    // each rank its own tokens, as data parallelism has it
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(B * T));
    int32_t *tgt = malloc(sizeof(int32_t) * (size_t)(B * T));
    if (!bench_tokens(ids, tgt, B * T, c.vocab, 12345 + 7919 * (uint64_t)d.rank)) {
        fprintf(stderr, "bench_dp_overlap: out of memory\n");
        tr_dist_abort(&d, 1);
    }
    const int64_t n = rounds * steps;
    double *step_s[2], *wait_s[2];
    for (int k = 0; k < 2; k++) {
        step_s[k] = calloc((size_t)n, sizeof(double));
        wait_s[k] = calloc((size_t)n, sizeof(double));
        if (!step_s[k] || !wait_s[k]) {
            fprintf(stderr, "bench_dp_overlap: out of memory\n");
            tr_dist_abort(&d, 1);
        }
    }
    int64_t done[2] = {0, 0};
    double loss = 0;
    // mode 0: all-reduce after the backward pass; 1: overlapped. Rounds alternate 0, 1, 0, 1...
    for (int64_t r = 0; r < 2 * rounds; r++) {
        const int mode = (int)(r % 2);
        for (int64_t it = 0; it < warmup + steps; it++) {
            tr_dist_barrier(&d); // every rank starts the step together
            double t0 = bench_now_s();
            ag_tensor *ti = ag_from_host(ctx, AG_I32, AG_SHAPE(B, T), ids);
            ag_tensor *tt = ag_from_host(ctx, AG_I32, AG_SHAPE(B, T), tgt);
            ag_tensor *l = gm_llama_loss(ctx, m, ti, tt);
            if (mode) {
                tr_grad_reducer_begin(red);
                ag_backward_watch(ctx, l, m->params, m->n_params, tr_grad_reducer_ready, red);
            } else {
                ag_backward(ctx, l);
            }
            double t1 = bench_now_s();
            double sum[1] = {ag_item(l, 0)};
            tr_dist_sum_f64(&d, sum, 1);
            loss = sum[0] / d.world;
            if (mode)
                tr_grad_reducer_finish(red, 1.0 / d.world);
            else
                tr_dist_allreduce_grads(&d, m->params, m->n_params, 1.0 / d.world, bucket);
            double t2 = bench_now_s();
            ag_adamw_step(opt, 1e-4);
            ag_zero_grad(ctx, m->params, m->n_params);
            ag_step_reset(ctx);
            double t3 = bench_now_s();
            if (it >= warmup) {
                step_s[mode][done[mode]] = t3 - t0;
                wait_s[mode][done[mode]++] = t2 - t1;
            }
        }
    }
    double step_after = bench_median(step_s[0], n), step_overlap = bench_median(step_s[1], n);
    double wait_after = bench_median(wait_s[0], n), wait_overlap = bench_median(wait_s[1], n);
    if (d.rank == 0)
        printf("{\"ranks\": %d, \"device\": \"%s\", \"params\": %lld, \"tokens_per_rank\": %lld, "
               "\"steps_each\": %lld, \"median_step_s_after\": %.6f, "
               "\"median_step_s_overlap\": %.6f, \"median_comm_wait_s_after\": %.6f, "
               "\"median_comm_wait_s_overlap\": %.6f, \"ratio_overlap_over_after\": %.4f, "
               "\"loss\": %.4f}\n",
               d.world, device, (long long)gm_llama_param_count(m), (long long)(B * T),
               (long long)n, step_after, step_overlap, wait_after, wait_overlap,
               step_overlap / step_after, loss);
    for (int k = 0; k < 2; k++) {
        free(step_s[k]);
        free(wait_s[k]);
    }
    free(ids);
    free(tgt);
    tr_grad_reducer_free(red);
    ag_adamw_free(opt);
    gm_llama_free(m);
    ag_ctx_free(ctx);
    tr_dist_finalize(&d);
    return isfinite(loss) ? 0 : 1;
}
