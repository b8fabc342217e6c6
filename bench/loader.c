// loader.c (bench_loader): throughput of the streaming loader (data/loader.h) on a synthetic
// packed multimodal dataset, and of a tiny-model CPU training step fed by it. bench/loader.sh
// runs it beside the same reads in h5py + numpy (bench/loader_h5py.py) and prints the ratios.
// Each mode prints one JSON line.
//   bench_loader make DIR [--samples 2000 --shards 4 --tokens 300 --image 336 --seed 1
//                           --level 0 (zstd, 0: the shards' defaults; pack --zstd-level)]
//       writes DIR (manifest + shards): ~tokens (+-1/3) per sample, a 336x336 image for every
//       third sample, a 4 x 112x112 video for every tenth, a 3 x 204 x 128 fbank for every
//       tenth; nothing is written when DIR/manifest.json exists
//   bench_loader load DIR [--micro 8 --samples 20000 --max-len 512 --prefetch 4 --threads N]
//       full batches (ids, targets, media) as fast as the loader delivers them (N: one
//       collate worker per core, up to 8; --direct 0 reads media through the shard layer,
//       --map 0 has the reader copy each media chunk out instead of mapping the shard)
//   bench_loader train DIR [--micro 8 --steps 8 --warmup 2 --max-len 512]
//       training steps of a tiny Llama (bench/cpu_step.c's: d 256, 4 layers, vocab 4096) on
//       the loader's batches; samples/s the step consumes, and the share of the time spent
//       waiting for the loader
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/optim.h"
#include "bench/bench_util.h"
#include "autograd/rng.h"
#include "data/loader.h"
#include "data/manifest.h"
#include "data/shard.h"
#include "model/llama.h"
#include "tests/shard_util.h"

#define VOCAB 4096 // bench_llama_config's vocabulary: the synthetic set's tokens stay below it

static const char *DIGEST = "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed";

// CPU seconds of the whole process (every thread), user + system.
static double cpu_s(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           1e-6 * (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

typedef struct {
    int64_t samples, shards, tokens, image, micro, max_len, steps, warmup;
    int64_t prefetch, threads, direct, map, level, seed;
} options;

static bool parse(int argc, char **argv, int first, options *o) {
    const bench_option opts[] = {
        {"--samples", &o->samples}, {"--shards", &o->shards}, {"--tokens", &o->tokens},
        {"--image", &o->image},     {"--micro", &o->micro},   {"--max-len", &o->max_len},
        {"--steps", &o->steps},     {"--warmup", &o->warmup}, {"--prefetch", &o->prefetch},
        {"--threads", &o->threads}, {"--direct", &o->direct}, {"--map", &o->map},
        {"--seed", &o->seed},       {"--level", &o->level}};
    return bench_parse_options(argc, argv, first, opts, (int)(sizeof opts / sizeof *opts), NULL,
                               NULL, "bench_loader");
}

// A packed photo as FORMAT.md describes it: the original (of a typical aspect ratio) padded
// to a square with the CLIP mean colour and resized to S, so a band of flat colour beside a
// photo-like part: smooth colour gradients, a flat disc and mild sensor noise (zstd shrinks
// that part about as little as real RGB). Returns the original size in wh. Video frames
// (pad false) are centre-cropped by the packer: no band.
static void make_image(uint8_t *rgb, int S, bool pad, uint64_t *rng, int32_t wh[2]) {
    static const int32_t sizes[][2] = {{640, 480}, {480, 640}, {640, 427},  {500, 375},
                                       {640, 640}, {427, 640}, {1024, 768}, {375, 500}};
    const int32_t *o = sizes[ag_splitmix64(rng) % 8];
    wh[0] = o[0], wh[1] = o[1];
    int side = o[0] > o[1] ? o[0] : o[1];
    int w = (int)((int64_t)S * o[0] / side), h = (int)((int64_t)S * o[1] / side);
    if (!pad) w = h = S;
    int x0 = (S - w) / 2, y0 = (S - h) / 2;
    double a[3], b[3], c[3];
    for (int ch = 0; ch < 3; ch++) {
        a[ch] = (double)(ag_splitmix64(rng) % 200) / (double)S;
        b[ch] = (double)(ag_splitmix64(rng) % 200) / (double)S;
        c[ch] = (double)(ag_splitmix64(rng) % 64);
    }
    int cx = (int)(ag_splitmix64(rng) % (uint64_t)S), cy = (int)(ag_splitmix64(rng) % (uint64_t)S);
    int r2 = (int)(ag_splitmix64(rng) % (uint64_t)(S * S / 8)) + 1;
    uint64_t noise = ag_splitmix64(rng);
    const uint8_t mean[3] = {122, 116, 104};
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            uint8_t *px = rgb + ((size_t)y * S + x) * 3;
            if (x < x0 || x >= x0 + w || y < y0 || y >= y0 + h) {
                memcpy(px, mean, 3);
                continue;
            }
            bool disc = (x - cx) * (x - cx) + (y - cy) * (y - cy) < r2;
            for (int ch = 0; ch < 3; ch++) {
                double v = disc ? 200.0 - 60.0 * ch : a[ch] * x + b[ch] * y + c[ch];
                noise = noise * 6364136223846793005ull + 1442695040888963407ull;
                v += (double)((noise >> 60) & 7) - 3.5;
                px[ch] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
}

// What cmd_make writes, shard by shard.
typedef struct {
    const options *o;
    int S, F, VS, C, T, M; // image side, video frames and side, fbank clips, frames, mels
    uint8_t *img, *vid;
    float *aud;
    int32_t *tok;
    uint8_t *mask;
    uint64_t rng;
    int64_t i, n_img, n_vid, n_aud; // the next sample, media rows written
} make_state;

static void make_shard(void *arg, int64_t j, ds_shard_writer *w) {
    static const char *const sources[] = {"refcoco", "flickr30k", "charades-sta", "vggss", "llava"};
    make_state *m = arg;
    const options *o = m->o;
    const int S = m->S, F = m->F, VS = m->VS, C = m->C, T = m->T, M = m->M;
    int64_t end = o->samples * (j + 1) / o->shards;
    for (; m->i < end; m->i++) {
        const int64_t i = m->i;
        int64_t spread = o->tokens / 3;
        int64_t len =
            o->tokens - spread + (int64_t)(ag_splitmix64(&m->rng) % (uint64_t)(2 * spread));
        int64_t prompt = len * 2 / 5; // the user turn: not in the loss
        for (int64_t t = 0; t < len; t++)
            m->tok[t] = (int32_t)(ag_splitmix64(&m->rng) % (VOCAB - 96)), m->mask[t] = t >= prompt;
        ds_sample s = {.tokens = m->tok, .loss_mask = m->mask, .length = len};
        s.image = s.video = s.audio = -1;
        if (i % 3 == 0) {
            int32_t wh[2];
            make_image(m->img, S, true, &m->rng, wh);
            s.image = ds_shard_add_image(w, m->img, wh[0], wh[1]);
            m->n_img++;
        }
        if (i % 10 == 1) {
            int32_t wh[2];
            for (int f = 0; f < F; f++)
                make_image(m->vid + (size_t)f * VS * VS * 3, VS, false, &m->rng, wh);
            s.video = ds_shard_add_video(w, m->vid, 12.5f);
            m->n_vid++;
        }
        if (i % 10 == 2) {
            for (int k = 0; k < C * T * M; k++)
                m->aud[k] = (float)((int)(ag_splitmix64(&m->rng) % 512) - 256) / 64.0f;
            s.audio = ds_shard_add_audio(w, m->aud, 9.0f);
            m->n_aud++;
        }
        s.task = (int)(i % DS_NTASKS);
        s.granularity = (int)(i % 2);
        s.source = sources[i % 5];
        s.meta = "{\"id\": \"bench\"}";
        ds_shard_add_sample(w, &s);
    }
}

static int cmd_make(const char *dir, const options *o) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, DS_MANIFEST_NAME);
    struct stat st;
    if (stat(path, &st) == 0) {
        printf("{\"mode\": \"make\", \"dir\": \"%s\", \"existing\": true}\n", dir);
        return 0;
    }
    if (mkdir(dir, 0755) != 0 && stat(dir, &st) != 0) {
        fprintf(stderr, "bench_loader: cannot create %s\n", dir);
        return 1;
    }
    make_state ms = {.o = o,
                     .S = (int)o->image,
                     .F = 4,
                     .VS = 112,
                     .C = 3,
                     .T = 204,
                     .M = 128,
                     .rng = (uint64_t)o->seed};
    ds_shard_layout layout = {DIGEST, ms.S, ms.F, ms.VS, ms.C, ms.T, ms.M, (int)o->level};
    ms.img = malloc((size_t)ms.S * ms.S * 3), ms.vid = malloc((size_t)ms.F * ms.VS * ms.VS * 3);
    ms.aud = malloc(sizeof(float) * (size_t)(ms.C * ms.T * ms.M));
    int64_t max_tok = o->tokens * 2;
    ms.tok = malloc(sizeof(int32_t) * (size_t)max_tok);
    ms.mask = malloc((size_t)max_tok);
    if (!ms.img || !ms.vid || !ms.aud || !ms.tok || !ms.mask) {
        fprintf(stderr, "bench_loader: out of memory\n");
        return 1;
    }
    double t0 = bench_now_s();
    ds_manifest m;
    su_write_dataset(dir, DIGEST, &layout, o->shards, make_shard, &ms, &m);
    printf("{\"mode\": \"make\", \"dir\": \"%s\", \"samples\": %lld, \"tokens\": %lld, "
           "\"images\": %lld, \"videos\": %lld, \"audios\": %lld, \"seconds\": %.2f}\n",
           dir, (long long)m.num_samples, (long long)m.num_tokens, (long long)ms.n_img,
           (long long)ms.n_vid, (long long)ms.n_aud, bench_now_s() - t0);
    ds_manifest_free(&m);
    free(ms.img), free(ms.vid), free(ms.aud), free(ms.tok), free(ms.mask);
    return 0;
}

static ds_loader *open_loader(const char *dir, const options *o, double *open_s) {
    ds_loader_dataset set = {dir, 1.0};
    ds_loader_config c = {.datasets = &set,
                          .num_datasets = 1,
                          .seed = (uint64_t)o->seed,
                          .micro = o->micro,
                          .accumulation = 1,
                          .rank = 0,
                          .world = 1,
                          .max_len = o->max_len,
                          .pad_id = 0,
                          .prefetch = (int)o->prefetch,
                          .threads = (int)o->threads,
                          .no_direct_chunks = !o->direct,
                          .no_map = !o->map};
    double t0 = bench_now_s();
    ds_loader *l = ds_loader_open(&c);
    *open_s = bench_now_s() - t0;
    return l;
}

static int cmd_load(const char *dir, const options *o) {
    double open_s;
    ds_loader *l = open_loader(dir, o, &open_s);
    int64_t batches = (o->samples + o->micro - 1) / o->micro;
    // The first batch pays for thread start-up and cold caches: timed separately.
    ds_loader_next(l);
    double t0 = bench_now_s(), c0 = cpu_s();
    uint64_t check = 0;
    int64_t tokens = 0, images = 0, videos = 0, audios = 0;
    for (int64_t b = 0; b < batches; b++) {
        const ds_batch *bt = ds_loader_next(l);
        for (int64_t i = 0; i < bt->B; i++) tokens += bt->lengths[i];
        check += (uint64_t)bt->ids[bt->T - 1] + (uint64_t)bt->targets[0];
        images += bt->n_images, videos += bt->n_videos, audios += bt->n_audios;
    }
    double dt = bench_now_s() - t0, cpu = cpu_s() - c0;
    printf(
        "{\"impl\": \"groundc\", \"samples\": %lld, \"seconds\": %.4f, \"samples_per_s\": %.1f, "
        "\"cpu_us_per_sample\": %.1f, "
        "\"tokens\": %lld, \"images\": %lld, \"videos\": %lld, \"audios\": %lld, "
        "\"open_s\": %.4f, \"prefetch\": %lld, \"threads\": %lld, \"direct\": %lld, \"map\": %lld, "
        "\"check\": %llu}\n",
        (long long)(batches * o->micro), dt, (double)(batches * o->micro) / dt,
        1e6 * cpu / (double)(batches * o->micro), (long long)tokens, (long long)images,
        (long long)videos, (long long)audios, open_s, (long long)o->prefetch, (long long)o->threads,
        (long long)o->direct, (long long)o->map, (unsigned long long)check);
    ds_loader_close(l);
    return 0;
}

static int cmd_train(const char *dir, const options *o) {
    gm_llama_config c = bench_llama_config(o->max_len);
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    ag_adamw *opt;
    gm_llama *m = bench_llama_new(ctx, &c, &opt);
    double open_s;
    ds_loader *l = open_loader(dir, o, &open_s);
    double *times = malloc(sizeof(double) * (size_t)o->steps);
    double wait = 0, total = 0, loss = 0;
    int64_t samples = 0, tsum = 0;
    for (int64_t it = 0; it < o->warmup + o->steps; it++) {
        double t0 = bench_now_s();
        const ds_batch *bt = ds_loader_next(l);
        double t1 = bench_now_s();
        ag_tensor *ids = ag_from_host(ctx, AG_I32, AG_SHAPE(bt->B, bt->T), bt->ids);
        ag_tensor *tgt = ag_from_host(ctx, AG_I32, AG_SHAPE(bt->B, bt->T), bt->targets);
        ag_tensor *lt = gm_llama_loss(ctx, m, ids, tgt);
        ag_backward(ctx, lt);
        loss = ag_item(lt, 0);
        ag_adamw_step(opt, 1e-4);
        ag_zero_grad(ctx, m->params, m->n_params);
        ag_step_reset(ctx);
        double t2 = bench_now_s();
        if (it >= o->warmup) {
            times[it - o->warmup] = t2 - t0;
            wait += t1 - t0, total += t2 - t0;
            samples += bt->B, tsum += bt->T;
        }
    }
    double median = bench_median(times, o->steps);
    printf("{\"impl\": \"step\", \"median_step_s\": %.4f, \"samples_per_s\": %.2f, "
           "\"mean_T\": %.1f, \"loader_wait_fraction\": %.5f, \"loss\": %.4f}\n",
           median, (double)o->micro / median, (double)tsum / (double)o->steps,
           total > 0 ? wait / total : 0.0, loss);
    (void)samples;
    free(times);
    ds_loader_close(l);
    ag_adamw_free(opt);
    gm_llama_free(m);
    ag_ctx_free(ctx);
    return isfinite(loss) ? 0 : 1;
}

int main(int argc, char **argv) {
    options o = {.samples = 2000,
                 .shards = 4,
                 .tokens = 300,
                 .image = 336,
                 .micro = 8,
                 .max_len = 512,
                 .steps = 8,
                 .warmup = 2,
                 .prefetch = 4,
                 .threads = 2,
                 .direct = 1,
                 .map = 1,
                 .seed = 1};
    if (argc < 3) {
        fprintf(stderr, "usage: bench_loader make|load|train DIR [options]\n");
        return 2;
    }
    if (!strcmp(argv[1], "load"))
        o.samples = 20000; // 10 passes over the 2000 samples: the steady state, as in training
    long cpus = sysconf(_SC_NPROCESSORS_ONLN); // collate workers: one per core, up to 8
    o.threads = cpus < 1 ? 1 : cpus > 8 ? 8 : cpus;
    if (!parse(argc, argv, 3, &o)) return 2;
    if (o.samples < 1 || o.shards < 1 || o.tokens < 3 || o.image < 1 || o.micro < 1 ||
        o.steps < 1 || o.warmup < 0 || o.prefetch < 1 || o.prefetch > 1024 || o.threads < 1 ||
        o.threads > 64 || o.level < -7 || o.level > 22) {
        fprintf(stderr, "bench_loader: option out of range\n");
        return 2;
    }
    if (!strcmp(argv[1], "make")) return cmd_make(argv[2], &o);
    if (!strcmp(argv[1], "load")) return cmd_load(argv[2], &o);
    if (!strcmp(argv[1], "train")) return cmd_train(argv[2], &o);
    fprintf(stderr, "bench_loader: unknown mode %s\n", argv[1]);
    return 2;
}
