// gpu_step.c: times one full training step (forward, backward, AdamW) of a Llama-style
// decoder on a device (cuda by default; cpu for a dry run), in bf16 (f32 master weights in
// AdamW) or f32, for the shapes of /work/shared/bench/torch_reference.py, and prints one
// JSON line with the same keys (step_s, tok_s, mfu_vs_989, mem_gib) so that bench/gpu.sh can
// put the two side by side. FLOPs per token are counted as torch_reference.py counts them.
//   bench_gpu_step --preset 124m|1b|7b|tiny [--device cuda|cpu --dtype bf16|f32
//                  --dim N --layers N --heads N --kv-heads N --ffn N --vocab N --seq T
//                  --batch B --stage1 0|1 --img-tokens N --vision-dim N --steps N --warmup N]
// Presets: 124m (d768 L12 H12 ffn 2048, B16 T1024), 1b (d2048 L22 H16 ffn 5632, B8 T2048),
// 7b = stage 1 (Vicuna-7B dims frozen, 576 image tokens of width 1024 through a trained MLP
// projector, B4 T2048), tiny (d64 L2, seconds on a CPU).
// mem_gib is what groundc's arenas hold at their peak (parameters, gradients, optimizer
// state and the step's activations), not counting cuBLASLt's 32 MiB workspace.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/backend.h"
#include "autograd/error.h"
#include "autograd/optim.h"
#include "bench/bench_util.h"
#include "autograd/rng.h"
#include "model/adapters.h"
#include "model/llama.h"

// normal(0, std) values for a parameter, fast enough for 7B of them: a block of BLOCK random
// values (a prime count, so that the tiling does not line up with rows) repeated. Vectors
// (norm weights) are ones. Timing does not depend on the values.
#define BLOCK 1048573
static void fill_param(ag_tensor *p, uint64_t seed, double std) {
    const int64_t n = ag_numel(p), es = (int64_t)ag_dtype_size(p->dtype);
    const int64_t blk = n < BLOCK ? n : BLOCK;
    double *v = ag_xmalloc((size_t)blk * sizeof *v, "bench init");
    uint64_t s = seed;
    for (int64_t i = 0; i < blk; i++) {
        if (p->ndim == 1) {
            v[i] = p->name && strstr(p->name, "bias") ? 0 : 1;
            continue;
        }
        double u1 = (double)((ag_splitmix64(&s) >> 11) + 1) * 0x1.0p-53;
        double u2 = (double)(ag_splitmix64(&s) >> 11) * 0x1.0p-53;
        v[i] = std * sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
    }
    void *h = ag_xmalloc((size_t)(blk * es), "bench init");
    ag_cpu_backend.cast(h, p->dtype, v, AG_F64, blk);
    const ag_backend *be = ag_backend_for(p->device);
    for (int64_t off = 0; off < n; off += blk) {
        const int64_t m = n - off < blk ? n - off : blk;
        be->copy_from_host((char *)p->data + off * es, h, (size_t)(m * es));
    }
    free(h);
    free(v);
}

typedef struct {
    const char *name;
    gm_llama_config c;
    int64_t B, T, stage1, img, vision;
} preset;

static preset preset_of(const char *name) {
    preset p = {
        .name = name, .c = {.rope_theta = 1e4, .norm_eps = 1e-5}, .img = 576, .vision = 1024};
    gm_llama_config *c = &p.c;
    if (!strcmp(name, "124m")) {
        p.name = "llama-124m";
        *c = (gm_llama_config){32000, 768, 12, 12, 12, 2048, 1024, 1e4, 1e-5, {0}};
        p.B = 16, p.T = 1024;
    } else if (!strcmp(name, "1b")) {
        p.name = "llama-1b";
        *c = (gm_llama_config){32000, 2048, 22, 16, 16, 5632, 2048, 1e4, 1e-5, {0}};
        p.B = 8, p.T = 2048;
    } else if (!strcmp(name, "7b")) {
        p.name = "stage1-7b";
        *c = (gm_llama_config){32000, 4096, 32, 32, 32, 11008, 2048, 1e4, 1e-5, {0}};
        p.B = 4, p.T = 2048, p.stage1 = 1;
    } else if (!strcmp(name, "tiny")) {
        p.name = "tiny";
        *c = (gm_llama_config){512, 64, 2, 4, 4, 160, 48, 1e4, 1e-5, {0}};
        p.B = 2, p.T = 48, p.img = 9, p.vision = 40;
    } else {
        fprintf(stderr, "bench_gpu_step: unknown preset %s (124m, 1b, 7b, tiny)\n", name);
        exit(2);
    }
    return p;
}

int main(int argc, char **argv) {
    preset p = preset_of("tiny");
    ag_device dev = AG_CUDA;
    ag_dtype dt = AG_BF16;
    int64_t steps = 20, warmup = 5;
    for (int i = 1; i < argc; i++) // the preset first: options after it override it
        if (!strcmp(argv[i], "--preset") && i + 1 < argc) p = preset_of(argv[i + 1]);
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *o = argv[i], *s = argv[i + 1];
        const int64_t v = atoll(s);
        if (!strcmp(o, "--preset"))
            continue;
        else if (!strcmp(o, "--device") && (!strcmp(s, "cuda") || !strcmp(s, "cpu")))
            dev = !strcmp(s, "cuda") ? AG_CUDA : AG_CPU;
        else if (!strcmp(o, "--dtype") && (!strcmp(s, "bf16") || !strcmp(s, "f32")))
            dt = !strcmp(s, "bf16") ? AG_BF16 : AG_F32;
        else if (bench_llama_option(&p.c, &p.T, o, v))
            continue;
        else if (!strcmp(o, "--batch"))
            p.B = v;
        else if (!strcmp(o, "--stage1"))
            p.stage1 = v;
        else if (!strcmp(o, "--img-tokens"))
            p.img = v;
        else if (!strcmp(o, "--vision-dim"))
            p.vision = v;
        else if (!strcmp(o, "--steps"))
            steps = v;
        else if (!strcmp(o, "--warmup"))
            warmup = v;
        else if (!strcmp(o, "--name"))
            p.name = s;
        else {
            fprintf(stderr, "bench_gpu_step: bad option %s %s\n", o, s);
            return 2;
        }
    }
    if (steps < 1 || warmup < 0 || p.B < 1 || p.T < 2 || (p.stage1 && p.img >= p.T)) {
        fprintf(stderr, "bench_gpu_step: need steps >= 1, B >= 1, T >= 2, img tokens < T\n");
        return 2;
    }
    gm_llama_config *c = &p.c;
    c->max_seq = p.T;
    const int64_t B = p.B, T = p.T, n_img = p.stage1 ? p.img : 0;

    ag_ctx *ctx = ag_ctx_new(dev);
    const ag_backend *be = ag_backend_for(dev);
    gm_llama *m = gm_llama_new(ctx, c, dt);
    for (int i = 0; i < m->n_params; i++) fill_param(m->params[i], 1000 + (uint64_t)i, 0.02);
    gm_projector *proj = NULL;
    ag_tensor **train = m->params;
    int n_train = m->n_params;
    if (p.stage1) { // the decoder frozen, the projector trained
        gm_projector_config pc = {.vision_dim = p.vision, .llm_dim = c->dim};
        proj = gm_projector_new(ctx, &pc, "model.", dt);
        for (int i = 0; i < proj->n_params; i++) fill_param(proj->params[i], 7 + (uint64_t)i, 0.02);
        train = proj->params;
        n_train = proj->n_params;
    }
    for (int i = 0; i < n_train; i++) ag_set_trainable(ctx, train[i], true);
    ag_adamw *opt = ag_adamw_new(ctx, train, n_train, NULL, (ag_adamw_config){0.9, 0.999, 1e-8, 0});

    // inputs: text ids (B, T - n_img), targets (B, T) ignoring the image positions, features
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(B * T));
    int32_t *tgt = malloc(sizeof(int32_t) * (size_t)(B * T));
    uint64_t s = 12345;
    for (int64_t i = 0; i < B * T; i++) {
        ids[i] = (int32_t)(ag_splitmix64(&s) % (uint64_t)c->vocab);
        tgt[i] = i % T < n_img ? -100 : (int32_t)(ag_splitmix64(&s) % (uint64_t)c->vocab);
    }
    ag_tensor *feats_host = NULL;
    void *feats = NULL;
    if (p.stage1) {
        ag_ctx *hc = ag_ctx_new(AG_CPU); // features made once, on the host, in dt
        feats_host = ag_param(hc, "features", dt, AG_SHAPE(B, n_img, p.vision));
        fill_param(feats_host, 99, 1.0);
        feats = malloc(ag_nbytes(feats_host));
        memcpy(feats, feats_host->data, ag_nbytes(feats_host));
        ag_ctx_free(hc);
    }

    double *times = malloc(sizeof(double) * (size_t)steps);
    double loss = 0;
    be->synchronize();
    for (int64_t it = 0; it < warmup + steps; it++) {
        const double t0 = bench_now_s();
        ag_tensor *tt = ag_from_host(ctx, AG_I32, AG_SHAPE(B * T), tgt);
        ag_tensor *l;
        if (!p.stage1) {
            ag_tensor *ti = ag_from_host(ctx, AG_I32, AG_SHAPE(B, T), ids);
            l = gm_llama_loss(ctx, m, ti, ag_reshape(ctx, tt, AG_SHAPE(B, T)));
        } else {
            ag_tensor *ti = ag_from_host(ctx, AG_I32, AG_SHAPE(B, T - n_img), ids);
            ag_tensor *f = ag_from_host(ctx, dt, AG_SHAPE(B, n_img, p.vision), feats);
            ag_tensor *x[2] = {gm_projector_forward(ctx, proj, f), gm_llama_embed(ctx, m, ti)};
            ag_tensor *h = gm_llama_hidden(ctx, m, ag_concat(ctx, 2, x, 1), gm_positions(ctx, T));
            l = ag_cross_entropy(ctx, gm_llama_logits(ctx, m, h), tt, -100);
        }
        ag_backward(ctx, l);
        loss = ag_item(l, 0);
        ag_adamw_step(opt, 1e-4);
        ag_zero_grad(ctx, train, n_train);
        ag_step_reset(ctx);
        be->synchronize();
        if (it >= warmup) times[it - warmup] = bench_now_s() - t0;
    }
    const double step_s = bench_median(times, steps);

    // FLOPs as torch_reference.py: N = decoder parameters less the input embedding (head
    // counted); attention 12 L d T per token (forward and backward); a frozen decoder skips
    // the weight gradients (4N instead of 6N) and a third of the attention work.
    const double N = (double)gm_llama_param_count(m) - (double)c->vocab * (double)c->dim;
    const double attn = 12.0 * (double)c->n_layers * (double)c->dim * (double)T;
    const double per_tok = p.stage1 ? 4 * N + attn * 2 / 3 : 6 * N + attn;
    const double tok_s = (double)(B * T) / step_s;
    const double mem = (double)(ag_pool_bytes(ctx) + ag_step_peak_bytes(ctx)) / 1073741824.0;
    printf("{\"impl\": \"groundc\", \"name\": \"%s\", \"device\": \"%s\", \"dtype\": \"%s\", "
           "\"B\": %lld, \"T\": %lld, \"params\": %lld, \"step_s\": %.5f, \"tok_s\": %.0f, "
           "\"mfu_vs_989\": %.4f, \"mem_gib\": %.3f, \"loss\": %.4f}\n",
           p.name, dev == AG_CUDA ? "cuda" : "cpu", ag_dtype_name(dt), (long long)B, (long long)T,
           (long long)gm_llama_param_count(m), step_s, tok_s, per_tok * tok_s / 989e12, mem, loss);
    free(feats);
    free(times);
    free(ids);
    free(tgt);
    ag_adamw_free(opt);
    if (proj) gm_projector_free(proj);
    gm_llama_free(m);
    ag_ctx_free(ctx);
    return isfinite(loss) ? 0 : 1;
}
