// test_loader.c: the streaming loader (data/loader.h) on two small datasets written with the
// shard writer (37 and 23 samples over 5 shards; varied lengths, some over max_len; images,
// videos and audio in some shards only): per-epoch permutations, seeds, mixing ratios, data
// parallel batches for world 1/2/4, exact resume (also with another world size), shifted
// targets, padding, media rows, independence from prefetch depth and thread count, and
// corrupt shards failing with one line (in a child process, under a timeout) and no hang.
//   test_loader                       the test
//   test_loader --corrupt-child DIR   (internal) streams DIR until the loader fails
#include "testlib.h"

#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hdf5.h>

#include "autograd/error.h"
#include "data/loader.h"
#include "data/manifest.h"
#include "data/shard.h"
#include "shard_util.h"

#define MAX_LEN 32 // some samples are longer: truncated
#define PAD     (-7)

static const char *DIGEST = "89abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234567";
static char g_dir[512], g_a[600], g_b[600];

// ---- what the datasets hold: every value is a function of (dataset, sample, index) ----

enum { M_IMG = 1, M_VID = 2, M_AUD = 4 };
static const int A_SHARDS[] = {13, 12, 12}, B_SHARDS[] = {11, 12};
static const int A_MEDIA[] = {M_IMG | M_AUD, M_IMG | M_VID, 0}, B_MEDIA[] = {0, M_IMG | M_AUD};

static uint32_t hash3(int d, int i, int t) {
    uint64_t z = (uint64_t)d * 0x9e3779b97f4a7c15ull ^ (uint64_t)i * 0xbf58476d1ce4e5b9ull ^
                 (uint64_t)(t + 1) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    z *= 0xd6e8feb86659fd93ull;
    return (uint32_t)(z >> 32);
}

static int sample_len(int d, int i) {
    if (d == 1 && i == 7) return 0; // an empty sample: a row of padding
    return 1 + (int)(hash3(d, i, -1) % 45);
}
static int32_t tok(int d, int i, int t) {
    return (d * 100 + i) * 1000 + t + 1;
}
static uint8_t mask_of(int d, int i, int t) {
    return hash3(d, i, t) % 3 != 0;
}
static int shard_media(int d, int i) {
    const int *counts = d == 0 ? A_SHARDS : B_SHARDS, *media = d == 0 ? A_MEDIA : B_MEDIA;
    for (int j = 0;; j++) {
        if (i < counts[j]) return media[j];
        i -= counts[j];
    }
}
static bool has_img(int d, int i) {
    return (shard_media(d, i) & M_IMG) && i % 3 == 0;
}
static bool has_vid(int d, int i) {
    return (shard_media(d, i) & M_VID) && i % 4 == 1;
}
static bool has_aud(int d, int i) {
    return (shard_media(d, i) & M_AUD) && i % 2 == 0;
}
static uint8_t img_px(int d, int i, int k) {
    return (uint8_t)(d * 97 + i * 31 + k * 7 + (k >> 5));
}
static uint8_t vid_px(int d, int i, int k) {
    return (uint8_t)(d * 13 + i * 17 + k * 3);
}
static float aud_val(int d, int i, int k) { // multiples of 1/64 in [-16, 16): exact in float16
    return (float)((d * 7 + i * 11 + k) % 2048 - 1024) / 64.0f;
}
static const char *source_of(int d, int i) {
    return d == 0 ? (i % 2 ? "srcA1" : "srcA0") : "srcB";
}

typedef struct {
    int d, image_size;
    const int *counts, *media;
    int i; // the next sample
} dataset_fill;

static void fill_shard(void *arg, int64_t j, ds_shard_writer *w) {
    dataset_fill *f = arg;
    const int d = f->d, S = f->image_size;
    uint8_t img[SU_IMG_ELEMS], vid[SU_VID_ELEMS];
    float aud[SU_AUD_ELEMS];
    int32_t toks[64];
    uint8_t mask[64];
    for (int n = 0; n < f->counts[j]; n++, f->i++) {
        const int i = f->i;
        ds_sample s = {.tokens = toks, .loss_mask = mask, .length = sample_len(d, i)};
        for (int t = 0; t < s.length; t++) toks[t] = tok(d, i, t), mask[t] = mask_of(d, i, t);
        s.image = s.video = s.audio = -1;
        if ((f->media[j] & M_IMG) && i % 3 == 0) {
            for (int k = 0; k < S * S * 3; k++) img[k] = img_px(d, i, k);
            s.image = ds_shard_add_image(w, img, 100 + i, 50 + d);
        }
        if ((f->media[j] & M_VID) && i % 4 == 1) {
            for (int k = 0; k < SU_VID_ELEMS; k++) vid[k] = vid_px(d, i, k);
            s.video = ds_shard_add_video(w, vid, (float)i + 0.5f);
        }
        if ((f->media[j] & M_AUD) && i % 2 == 0) {
            for (int k = 0; k < SU_AUD_ELEMS; k++) aud[k] = aud_val(d, i, k);
            s.audio = ds_shard_add_audio(w, aud, (float)(i + 1) * 0.25f);
        }
        s.task = i % DS_NTASKS;
        s.granularity = i % 2;
        s.source = source_of(d, i);
        s.meta = "{}";
        ds_shard_add_sample(w, &s);
    }
}

static void write_dataset(const char *dir, int d, const int *counts, const int *media, int nshards,
                          int image_size) {
    mkdir(dir, 0755);
    ds_shard_layout layout = {DIGEST, image_size, SU_VF, SU_VS, SU_AC, SU_AT, SU_AM, 0};
    dataset_fill f = {d, image_size, counts, media, 0};
    su_write_dataset(dir, DIGEST, &layout, nshards, fill_shard, &f, NULL);
}

// ---- loader helpers ----

static ds_loader_dataset g_sets[3];

static ds_loader_config config(double wa, double wb, uint64_t seed, int64_t micro, int64_t accum,
                               int rank, int world) {
    g_sets[0] = (ds_loader_dataset){g_a, wa};
    g_sets[1] = (ds_loader_dataset){g_b, wb};
    ds_loader_config c = {.datasets = g_sets,
                          .num_datasets = 2,
                          .seed = seed,
                          .micro = micro,
                          .accumulation = accum,
                          .rank = rank,
                          .world = world,
                          .max_len = MAX_LEN,
                          .pad_id = PAD,
                          .prefetch = 3,
                          .threads = 2};
    return c;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

// Hash of one sample's row, without the padding (which depends on the batch's T).
static uint64_t row_hash(const ds_batch *bt, int64_t b) {
    uint64_t h = 0xcbf29ce484222325ull;
    int64_t len = bt->lengths[b];
    h = fnv(h, &len, sizeof len);
    h = fnv(h, bt->ids + b * bt->T, (size_t)len * 4);
    h = fnv(h, bt->targets + b * bt->T, (size_t)len * 4);
    h = fnv(h, &bt->dataset[b], 4);
    h = fnv(h, &bt->sample[b], 8);
    h = fnv(h, &bt->task[b], 1);
    h = fnv(h, &bt->granularity[b], 1);
    h = fnv(h, bt->source[b], strlen(bt->source[b]));
    if (bt->image_index[b] >= 0)
        h = fnv(h, bt->images + (size_t)bt->image_index[b] * SU_IMG_ELEMS, SU_IMG_ELEMS);
    if (bt->video_index[b] >= 0)
        h = fnv(h, bt->videos + (size_t)bt->video_index[b] * SU_VID_ELEMS, SU_VID_ELEMS);
    if (bt->audio_index[b] >= 0)
        h = fnv(h, bt->audios + (size_t)bt->audio_index[b] * SU_AUD_ELEMS, SU_AUD_ELEMS * 4);
    return h;
}

// Hash of everything a batch holds, padding included.
static uint64_t batch_hash(const ds_batch *bt) {
    uint64_t h = 0xcbf29ce484222325ull;
    int64_t BT = bt->B * bt->T;
    h = fnv(h, &bt->B, 8), h = fnv(h, &bt->T, 8), h = fnv(h, &bt->step, 8);
    h = fnv(h, &bt->accum, 8);
    h = fnv(h, bt->ids, (size_t)BT * 4), h = fnv(h, bt->targets, (size_t)BT * 4);
    h = fnv(h, bt->lengths, (size_t)bt->B * 4), h = fnv(h, bt->positions, (size_t)bt->B * 8);
    h = fnv(h, bt->image_index, (size_t)bt->B * 4), h = fnv(h, bt->video_index, (size_t)bt->B * 4);
    h = fnv(h, bt->audio_index, (size_t)bt->B * 4);
    h = fnv(h, &bt->n_images, 8), h = fnv(h, &bt->n_videos, 8), h = fnv(h, &bt->n_audios, 8);
    if (bt->n_images) h = fnv(h, bt->images, (size_t)bt->n_images * SU_IMG_ELEMS);
    if (bt->n_images) h = fnv(h, bt->image_orig_size, (size_t)bt->n_images * 8);
    if (bt->n_videos) h = fnv(h, bt->videos, (size_t)bt->n_videos * SU_VID_ELEMS);
    if (bt->n_videos) h = fnv(h, bt->video_duration, (size_t)bt->n_videos * 4);
    if (bt->n_audios) h = fnv(h, bt->audios, (size_t)bt->n_audios * SU_AUD_ELEMS * 4);
    if (bt->n_audios) h = fnv(h, bt->audio_duration, (size_t)bt->n_audios * 4);
    for (int64_t b = 0; b < bt->B; b++) h ^= row_hash(bt, b) + (uint64_t)b;
    return h;
}

// Checks one batch against what the writer wrote; returns false (after a message) on the
// first difference. first_position is the stream position of its first sample.
static bool check_batch(ds_loader *l, const ds_batch *bt, int64_t micro, int64_t first_position) {
    char why[256] = "";
    int64_t T = 1, ni = 0, nv = 0, na = 0;
    for (int64_t b = 0; b < bt->B; b++) T = bt->lengths[b] > T ? bt->lengths[b] : T;
    if (bt->B != micro) snprintf(why, sizeof why, "B %lld", (long long)bt->B);
    if (!why[0] && (bt->T != T || T > MAX_LEN)) snprintf(why, sizeof why, "T %lld", (long long)T);
    for (int64_t b = 0; b < bt->B && !why[0]; b++) {
        int d = bt->dataset[b], i = (int)bt->sample[b];
        int32_t ld;
        int64_t ls;
        ds_loader_locate(l, first_position + b, &ld, &ls);
        if (bt->positions[b] != first_position + b || ld != d || ls != i) {
            snprintf(why, sizeof why, "row %lld: position %lld", (long long)b,
                     (long long)bt->positions[b]);
            break;
        }
        int len = sample_len(d, i) < MAX_LEN ? sample_len(d, i) : MAX_LEN;
        const int32_t *ids = bt->ids + b * bt->T, *tgt = bt->targets + b * bt->T;
        if (bt->lengths[b] != len) snprintf(why, sizeof why, "row %lld: length", (long long)b);
        for (int t = 0; t < bt->T && !why[0]; t++) {
            int32_t want_id = t < len ? tok(d, i, t) : PAD;
            int32_t want_tgt =
                t + 1 < len && mask_of(d, i, t + 1) ? tok(d, i, t + 1) : DS_IGNORE_TARGET;
            if (ids[t] != want_id || tgt[t] != want_tgt)
                snprintf(why, sizeof why, "row %lld (dataset %d sample %d) t %d: id %d target %d",
                         (long long)b, d, i, t, ids[t], tgt[t]);
        }
        if (!why[0] && (bt->task[b] != i % DS_NTASKS || bt->granularity[b] != i % 2 ||
                        strcmp(bt->source[b], source_of(d, i)) != 0))
            snprintf(why, sizeof why, "row %lld: task / granularity / source", (long long)b);
        int32_t ix = bt->image_index[b];
        if (!why[0] && (has_img(d, i) ? ix != ni : ix != -1))
            snprintf(why, sizeof why, "row %lld: image index %d", (long long)b, ix);
        for (int k = 0; !why[0] && ix >= 0 && k < SU_IMG_ELEMS; k++)
            if (bt->images[(size_t)ix * SU_IMG_ELEMS + k] != img_px(d, i, k))
                snprintf(why, sizeof why, "row %lld: image byte %d", (long long)b, k);
        if (!why[0] && ix >= 0 &&
            (bt->image_orig_size[2 * ix] != 100 + i || bt->image_orig_size[2 * ix + 1] != 50 + d))
            snprintf(why, sizeof why, "row %lld: image size", (long long)b);
        ni += ix >= 0;
        ix = bt->video_index[b];
        if (!why[0] && (has_vid(d, i) ? ix != nv : ix != -1))
            snprintf(why, sizeof why, "row %lld: video index %d", (long long)b, ix);
        for (int k = 0; !why[0] && ix >= 0 && k < SU_VID_ELEMS; k++)
            if (bt->videos[(size_t)ix * SU_VID_ELEMS + k] != vid_px(d, i, k))
                snprintf(why, sizeof why, "row %lld: video byte %d", (long long)b, k);
        if (!why[0] && ix >= 0 && bt->video_duration[ix] != (float)i + 0.5f)
            snprintf(why, sizeof why, "row %lld: video duration", (long long)b);
        nv += ix >= 0;
        ix = bt->audio_index[b];
        if (!why[0] && (has_aud(d, i) ? ix != na : ix != -1))
            snprintf(why, sizeof why, "row %lld: audio index %d", (long long)b, ix);
        for (int k = 0; !why[0] && ix >= 0 && k < SU_AUD_ELEMS; k++)
            if (bt->audios[(size_t)ix * SU_AUD_ELEMS + k] != aud_val(d, i, k))
                snprintf(why, sizeof why, "row %lld: audio value %d", (long long)b, k);
        if (!why[0] && ix >= 0 && bt->audio_duration[ix] != (float)(i + 1) * 0.25f)
            snprintf(why, sizeof why, "row %lld: audio duration", (long long)b);
        na += ix >= 0;
    }
    if (!why[0] && (bt->n_images != ni || bt->n_videos != nv || bt->n_audios != na))
        snprintf(why, sizeof why, "media counts %lld/%lld/%lld", (long long)bt->n_images,
                 (long long)bt->n_videos, (long long)bt->n_audios);
    if (!why[0] && ((ni && bt->image_size != SU_IS) || (nv && bt->video_frames != SU_VF) ||
                    (na && bt->audio_mels != SU_AM)))
        snprintf(why, sizeof why, "media geometry");
    TL_CHECK(!why[0], "batch at position %lld: %s", (long long)first_position, why);
    return !why[0];
}

// ---- the stream ----

static void test_stream(void) {
    ds_loader_config c = config(2, 1, 7, 4, 1, 0, 1);
    ds_loader *l1 = ds_loader_open(&c), *l2 = ds_loader_open(&c);
    c.seed = 8;
    ds_loader *l3 = ds_loader_open(&c);
    int64_t q[2], period;
    ds_loader_schedule(l1, q, &period);
    TL_CHECK(q[0] == 2 && q[1] == 1 && period == 3, "weights 2:1 -> %lld:%lld / %lld",
             (long long)q[0], (long long)q[1], (long long)period);
    TL_CHECK(ds_loader_dataset_samples(l1, 0) == 37 && ds_loader_dataset_samples(l1, 1) == 23,
             "sample counts");

    // Five epochs of each dataset: each a permutation; same seed same order; another seed
    // another order; epochs differ from each other.
    enum { P = 3 * 37 * 5 };
    int64_t seq[2][P], seq3[2][P];
    int n[2] = {0, 0}, n3[2] = {0, 0};
    bool same = true;
    for (int64_t p = 0; p < P; p++) {
        int32_t d, d2, d3;
        int64_t s, s2, s3;
        ds_loader_locate(l1, p, &d, &s);
        ds_loader_locate(l2, p, &d2, &s2);
        ds_loader_locate(l3, p, &d3, &s3);
        same = same && d == d2 && s == s2;
        seq[d][n[d]++] = s;
        seq3[d3][n3[d3]++] = s3;
    }
    TL_CHECK(same, "same seed, same stream");
    TL_CHECK(n[0] == 2 * P / 3 && n[1] == P / 3, "positions per dataset %d/%d", n[0], n[1]);
    for (int d = 0; d < 2; d++) {
        int N = d == 0 ? 37 : 23;
        bool perm = true, differs = false, epochs_differ = false;
        for (int e = 0; (e + 1) * N <= n[d]; e++) {
            bool seen[64] = {false};
            for (int k = 0; k < N; k++) {
                int64_t s = seq[d][e * N + k];
                if (s < 0 || s >= N || seen[s]) perm = false;
                if (s >= 0 && s < N) seen[s] = true;
                if (seq3[d][e * N + k] != s) differs = true;
                if (e > 0 && seq[d][(e - 1) * N + k] != s) epochs_differ = true;
            }
        }
        TL_CHECK(perm, "dataset %d: every epoch is a permutation of its %d samples", d, N);
        TL_CHECK(differs, "dataset %d: seed 8 gives another order than seed 7", d);
        TL_CHECK(epochs_differ, "dataset %d: each epoch has its own permutation", d);
    }
    // The documented stream, pinned: a change here breaks resuming older checkpoints.
    // Smooth weighted round-robin 2:1 gives A B A per period (credits (2,1) -> A, (1,2) -> B,
    // (3,0) -> A); the samples come from perm(7, d, 0).
    static const int64_t pinned[12][2] = {{0, 25}, {1, 11}, {0, 17}, {0, 9},  {1, 10}, {0, 26},
                                          {0, 36}, {1, 21}, {0, 15}, {0, 11}, {1, 16}, {0, 6}};
    bool pin = true;
    for (int p = 0; p < 12; p++) {
        int32_t d;
        int64_t s;
        ds_loader_locate(l1, p, &d, &s);
        pin = pin && d == pinned[p][0] && s == pinned[p][1];
    }
    TL_CHECK(pin, "seed 7, weights 2:1: the pinned first positions");
    // The batches follow the stream: check their content against the writer's.
    bool ok = true;
    for (int i = 0; i < 40 && ok; i++) ok = check_batch(l1, ds_loader_next(l1), 4, 4 * i);
    ds_loader_close(l1);
    ds_loader_close(l2);
    ds_loader_close(l3);
}

// Mixing: counts per window of one period are exact, so long streams match the weights.
static void check_mix(const char *what, double wa, double wb, int64_t want_qa, int64_t want_qb,
                      int64_t want_period) {
    ds_loader_config c = config(wa, wb, 3, 1, 1, 0, 1);
    ds_loader *l = ds_loader_open(&c);
    int64_t q[2], period;
    ds_loader_schedule(l, q, &period);
    if (want_period)
        TL_CHECK(q[0] == want_qa && q[1] == want_qb && period == want_period,
                 "%s: q %lld:%lld period %lld", what, (long long)q[0], (long long)q[1],
                 (long long)period);
    int64_t P = 4 * period, count = 0, run = 0, max_run = 0;
    for (int64_t p = 0; p < P; p++) {
        int32_t d;
        int64_t s;
        ds_loader_locate(l, p, &d, &s);
        count += d == 0;
        run = d == 0 ? run + 1 : 0;
        max_run = run > max_run ? run : max_run;
    }
    double ratio = (double)count / (double)P, want = wa / (wa + wb);
    TL_CHECK(fabs(ratio - want) < 2e-5, "%s: dataset 0 holds %.6f of %lld positions, want %.6f",
             what, ratio, (long long)P, want);
    // Smooth: no longer runs of the heavier dataset than its share needs.
    TL_CHECK(max_run <= (int64_t)ceil(wa / wb), "%s: longest run %lld", what, (long long)max_run);
    ds_loader_close(l);
}

static void test_mixing(void) {
    check_mix("3:1", 3, 1, 3, 1, 4);
    check_mix("0.7:0.3", 0.7, 0.3, 7, 3, 10);
    check_mix("2.5:1", 2.5, 1, 5, 2, 7);
    check_mix("1:sqrt 2", 1, sqrt(2.0), 0, 0, 0);

    // Three entries (the same folder may appear twice): 1:1:2.
    ds_loader_config c = config(1, 1, 3, 1, 1, 0, 1);
    g_sets[2] = (ds_loader_dataset){g_a, 2};
    c.num_datasets = 3;
    ds_loader *l = ds_loader_open(&c);
    int64_t q[3], period, count[3] = {0};
    ds_loader_schedule(l, q, &period);
    TL_CHECK(q[0] == 1 && q[1] == 1 && q[2] == 2 && period == 4, "1:1:2 schedule");
    for (int64_t p = 0; p < 4000; p++) {
        int32_t d;
        int64_t s;
        ds_loader_locate(l, p, &d, &s);
        count[d]++;
    }
    TL_CHECK(count[0] == 1000 && count[1] == 1000 && count[2] == 2000, "1:1:2 counts");
    ds_loader_close(l);

    // One period of 3:1: credits (3,1) -> A, (2,2) tie -> A, (1,4) -> B, (4,1) -> A.
    c = config(3, 1, 3, 1, 1, 0, 1);
    l = ds_loader_open(&c);
    int32_t want[8] = {0, 0, 1, 0, 0, 0, 1, 0}, got[8];
    bool same = true;
    for (int p = 0; p < 8; p++) {
        int64_t s;
        ds_loader_locate(l, p, &got[p], &s);
        same = same && got[p] == want[p];
    }
    TL_CHECK(same, "3:1 schedule is A A B A per period");
    ds_loader_close(l);
}

// ---- data parallel batches and resume ----

#define G     8                   // global batch
#define STEPS 12                  // global steps compared
static uint64_t g_ref[STEPS * G]; // row hash of every position, from world 1

// Runs `steps` global steps of a (micro, accum, world) layout with all ranks' loaders open at
// once; checks each rank's share and every row against g_ref (filled when fill is set).
static void run_layout(int64_t micro, int64_t accum, int world, int64_t first_step, int64_t steps,
                       const ds_cursor *resume, bool fill, ds_cursor *end) {
    ds_loader *l[4];
    for (int r = 0; r < world; r++) {
        ds_loader_config c = config(2, 1, 11, micro, accum, r, world);
        c.resume = resume;
        l[r] = ds_loader_open(&c);
    }
    bool ok = true;
    for (int64_t s = first_step; s < first_step + steps; s++) {
        bool covered[G] = {false};
        for (int64_t a = 0; a < accum; a++)
            for (int r = 0; r < world; r++) {
                const ds_batch *bt = ds_loader_next(l[r]);
                int64_t first = s * G + a * micro * world + r * micro;
                ok = ok && bt->step == s && bt->accum == a;
                ok = ok && check_batch(l[r], bt, micro, first);
                for (int64_t b = 0; b < bt->B; b++) {
                    int64_t p = bt->positions[b];
                    if (p < s * G || p >= (s + 1) * G || covered[p - s * G]) {
                        ok = false;
                        continue;
                    }
                    covered[p - s * G] = true;
                    uint64_t h = row_hash(bt, b);
                    if (fill) g_ref[p] = h;
                    if (g_ref[p] != h) ok = false;
                }
            }
        for (int k = 0; k < G; k++) ok = ok && covered[k];
    }
    TL_CHECK(ok,
             "micro %lld accum %lld world %d, steps %lld..%lld: the ranks' samples are the "
             "world-1 global batches",
             (long long)micro, (long long)accum, world, (long long)first_step,
             (long long)(first_step + steps - 1));
    ds_cursor c0 = ds_loader_cursor(l[0]);
    for (int r = 1; r < world; r++) {
        ds_cursor cr = ds_loader_cursor(l[r]);
        TL_CHECK(cr.position == c0.position && strcmp(cr.digest, c0.digest) == 0,
                 "every rank has the same cursor");
    }
    TL_CHECK(c0.position == (first_step + steps) * G, "cursor %lld after step %lld",
             (long long)c0.position, (long long)(first_step + steps));
    if (end) *end = c0;
    for (int r = 0; r < world; r++) ds_loader_close(l[r]);
}

static void test_data_parallel(void) {
    run_layout(4, 2, 1, 0, STEPS, NULL, true, NULL);
    run_layout(8, 1, 1, 0, STEPS, NULL, false, NULL);
    run_layout(2, 2, 2, 0, STEPS, NULL, false, NULL);
    run_layout(1, 2, 4, 0, STEPS, NULL, false, NULL);
    run_layout(2, 1, 4, 0, STEPS, NULL, false, NULL);
}

static void test_resume(void) {
    // Interrupted after 5 steps on 2 ranks, resumed on 4, on 1 and on 2.
    ds_cursor cur;
    run_layout(2, 2, 2, 0, 5, NULL, false, &cur);
    TL_CHECK(cur.seed == 11 && ds_is_sha256_hex(cur.digest), "cursor seed and digest");
    run_layout(1, 2, 4, 5, STEPS - 5, &cur, false, NULL);
    run_layout(8, 1, 1, 5, STEPS - 5, &cur, false, NULL);
    run_layout(2, 2, 2, 5, STEPS - 5, &cur, false, NULL);

    // Same layout: every batch bit-identical to the uninterrupted run's (padding, T, media).
    ds_loader_config c = config(2, 1, 11, 3, 2, 1, 2);
    ds_loader *u = ds_loader_open(&c);
    uint64_t want[30];
    ds_cursor at;
    for (int i = 0; i < 30; i++) {
        if (i == 10) at = ds_loader_cursor(u);
        want[i] = batch_hash(ds_loader_next(u));
    }
    ds_loader_close(u);
    c.resume = &at;
    c.prefetch = 1, c.threads = 0;
    ds_loader *r = ds_loader_open(&c);
    bool same = true;
    for (int i = 10; i < 30; i++) same = same && batch_hash(ds_loader_next(r)) == want[i];
    TL_CHECK(same, "resumed batches are bit-identical to the uninterrupted run");
    ds_cursor end = ds_loader_cursor(r);
    TL_CHECK(end.position == 30 * 6, "cursor after 30 batches of 3 x 2: %lld",
             (long long)end.position);
    ds_loader_close(r);
}

// ---- threads and prefetch ----

static void test_threads(void) {
    const int conf[][2] = {{1, 0}, {1, 1}, {2, 0}, {3, 2}, {8, 4}, {64, 3}};
    uint64_t first[25];
    for (size_t k = 0; k < sizeof conf / sizeof *conf; k++) {
        ds_loader_config c = config(1, 1, 5, 5, 1, 0, 1);
        c.prefetch = conf[k][0], c.threads = conf[k][1];
        ds_loader *l = ds_loader_open(&c);
        bool same = true;
        for (int i = 0; i < 25; i++) {
            const ds_batch *bt = ds_loader_next(l);
            uint64_t h = batch_hash(bt);
            if (k == 0) first[i] = h, check_batch(l, bt, 5, 5 * i);
            same = same && h == first[i];
        }
        TL_CHECK(same, "prefetch %d, threads %d: same batches", conf[k][0], conf[k][1]);
        ds_loader_close(l);
    }
    // Media through the shard layer instead of direct chunk reads, and direct chunks copied
    // out by the reader instead of read from the mapped file: same batches.
    for (int way = 0; way < 4; way++) {
        ds_loader_config c = config(1, 1, 5, 5, 1, 0, 1);
        int threads = way % 2 ? 2 : 0;
        c.no_direct_chunks = way < 2, c.no_map = way >= 2, c.threads = threads;
        ds_loader *l = ds_loader_open(&c);
        bool same = true;
        for (int i = 0; i < 25; i++) same = same && batch_hash(ds_loader_next(l)) == first[i];
        TL_CHECK(same, "media %s (threads %d): same batches",
                 way < 2 ? "through the shard layer" : "copied by the reader", threads);
        ds_loader_close(l);
    }
    // Closing while the reader is mid-stream (prefetch slots full) neither hangs nor leaks.
    ds_loader_config c = config(1, 1, 5, 5, 1, 0, 1);
    c.prefetch = 8, c.threads = 3;
    ds_loader *l = ds_loader_open(&c);
    ds_loader_close(l);
    TL_CHECK(true, "close right after open");
}

// ---- bad configurations and corrupt data ----

#define EXPECT_FAIL(...)                                                                           \
    do {                                                                                           \
        TL_EXPECT_FAIL(__VA_ARGS__);                                                               \
        printf("  refused: %s\n", tl_msg);                                                         \
    } while (0)

static void copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    TL_CHECK(a && b, "copy %s", from);
    char buf[65536];
    size_t n;
    while (a && b && (n = fread(buf, 1, sizeof buf, a)) > 0) fwrite(buf, 1, n, b);
    if (a) fclose(a);
    if (b) fclose(b);
}

// The stream of the one dataset in dir (seed 1, world 1).
static ds_loader_dataset g_single;
static ds_loader_config single(const char *dir, int64_t micro, int prefetch, int threads) {
    g_single = (ds_loader_dataset){dir, 1};
    return (ds_loader_config){.datasets = &g_single,
                              .num_datasets = 1,
                              .seed = 1,
                              .micro = micro,
                              .accumulation = 1,
                              .world = 1,
                              .max_len = MAX_LEN,
                              .prefetch = prefetch,
                              .threads = threads};
}

// A copy of dataset A in dir with one byte flipped in the middle of the compressed chunk
// holding element `coord` of `dataset` in shard `shard` (dataset NULL: a plain copy).
static void corrupt_copy(const char *dir, int shard, const char *dataset, const hsize_t *coord) {
    mkdir(dir, 0755);
    char from[800], to[800];
    snprintf(from, sizeof from, "%s/manifest.json", g_a);
    snprintf(to, sizeof to, "%s/manifest.json", dir);
    copy_file(from, to);
    for (int j = 0; j < 3; j++) {
        snprintf(from, sizeof from, "%s/shard_%05d.h5", g_a, j);
        snprintf(to, sizeof to, "%s/shard_%05d.h5", dir, j);
        copy_file(from, to);
    }
    if (!dataset) return;
    snprintf(to, sizeof to, "%s/shard_%05d.h5", dir, shard);
    hid_t f = H5Fopen(to, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = f >= 0 ? H5Dopen2(f, dataset, H5P_DEFAULT) : -1;
    unsigned filters = 0;
    haddr_t addr = 0;
    hsize_t size = 0;
    bool ok = d >= 0 && H5Dget_chunk_info_by_coord(d, coord, &filters, &addr, &size) >= 0;
    if (d >= 0) H5Dclose(d);
    if (f >= 0) H5Fclose(f);
    TL_CHECK(ok && size > 16, "chunk of %s in %s", dataset, to);
    int fd = open(to, O_RDWR);
    unsigned char byte = 0;
    off_t at = (off_t)(addr + size / 2);
    ok = fd >= 0 && pread(fd, &byte, 1, at) == 1;
    byte ^= 0x5a;
    ok = ok && pwrite(fd, &byte, 1, at) == 1;
    if (fd >= 0) close(fd);
    TL_CHECK(ok, "flip a byte of %s", to);
}

// A copy of dataset a whose shards start with a 512-byte user block (as `h5jam` or h5py's
// userblock_size make them): HDF5 reports chunk addresses relative to it before 1.14.4, so
// reading chunks from the mapped file must add it. Same batches as a itself.
static void test_userblock(void) {
    char dir[700], from[800], to[800];
    snprintf(dir, sizeof dir, "%s/userblock", g_dir);
    mkdir(dir, 0755);
    ds_manifest m;
    ds_manifest_read(&m, g_a);
    for (int j = 0; j < m.num_shards; j++) {
        snprintf(from, sizeof from, "%s/%s", g_a, m.shards[j].file);
        snprintf(to, sizeof to, "%s/%s", dir, m.shards[j].file);
        FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
        char buf[65536] = {0};
        bool ok = a && b && fwrite(buf, 1, 512, b) == 512;
        size_t n;
        while (ok && (n = fread(buf, 1, sizeof buf, a)) > 0) ok = fwrite(buf, 1, n, b) == n;
        if (a) fclose(a);
        if (b) ok = fclose(b) == 0 && ok;
        TL_CHECK(ok, "copy %s behind a user block", from);
        m.shards[j].bytes += 512;
    }
    ds_manifest_write(&m, dir);
    ds_manifest_free(&m);
    hid_t f = H5Fopen(to, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t fcpl = f >= 0 ? H5Fget_create_plist(f) : H5I_INVALID_HID;
    hsize_t ub = 0;
    TL_CHECK(fcpl >= 0 && H5Pget_userblock(fcpl, &ub) >= 0 && ub == 512,
             "HDF5 sees the 512-byte user block (%llu)", (unsigned long long)ub);
    if (fcpl >= 0) H5Pclose(fcpl);
    if (f >= 0) H5Fclose(f);
    for (int way = 0; way < 2; way++) {
        ds_loader_config c = single(g_a, 4, 4, 2);
        ds_loader *l = ds_loader_open(&c);
        uint64_t want[12];
        for (int i = 0; i < 12; i++) want[i] = batch_hash(ds_loader_next(l));
        ds_loader_close(l);
        c = single(dir, 4, 4, 2);
        c.no_map = way == 1;
        l = ds_loader_open(&c);
        bool same = true;
        for (int i = 0; i < 12; i++) same = same && batch_hash(ds_loader_next(l)) == want[i];
        ds_loader_close(l);
        TL_CHECK(same, "shards behind a user block (%s): same batches as without",
                 way ? "chunks copied by the reader" : "mapped");
    }
}

// The child: streams the corrupt dataset (checksums off: the damage is found when read).
static int corrupt_child(const char *dir) {
    alarm(20); // a hang ends in SIGALRM, which the parent reports
    ds_loader_config c = single(dir, 4, 4, 2);
    ds_loader *l = ds_loader_open(&c);
    for (int i = 0; i < 1000; i++) ds_loader_next(l);
    ds_loader_close(l);
    return 0; // no failure: the parent reports it
}

// The other child: fails (ag_fail) for reasons of its own while its loader is busy reading.
// HDF5 shuts down at exit: that must not crash under a read in progress.
// The child: streams dir until every chunk was read once from its mapped shard, cuts every
// shard of dir to 4 KiB in place, and streams on: reading the lost pages of a mapping raises
// SIGBUS, which must become the loader's one-line error, not the death of the process.
static int truncate_child(const char *dir) {
    alarm(20);
    ds_loader_config c = single(dir, 4, 1, 1);
    ds_loader *l = ds_loader_open(&c);
    for (int i = 0; i < 30; i++) ds_loader_next(l); // 3 passes over the 37 samples
    for (int j = 0; j < 3; j++) {
        char path[800];
        snprintf(path, sizeof path, "%s/shard_%05d.h5", dir, j);
        if (truncate(path, 4096) != 0) return 3;
    }
    for (int i = 0; i < 1000; i++) ds_loader_next(l);
    ds_loader_close(l);
    return 0;
}

static int exit_child(const char *dir) {
    alarm(20);
    ds_loader_config c = single(dir, 2, 64, 2);
    ds_loader *l = ds_loader_open(&c);
    ds_loader_next(l);
    ag_fail("deliberate failure with the loader running");
}

// Runs this program as `test_loader MODE DIR` with stderr to a file, under a 30 s limit.
// Returns the exit status (-1 on a hang) and the stderr text.
static int run_self(const char *mode, const char *dir, char *text, size_t cap) {
    char err[800];
    snprintf(err, sizeof err, "%s/child_stderr.txt", g_dir);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        // The child ends in ag_fail with its loader open (that is the point): no leak report.
        if (setenv("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=1", 1) != 0 ||
            setenv("TSAN_OPTIONS", "report_thread_leaks=0", 1) != 0)
            _exit(97);
        int fd = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || dup2(fd, 2) < 0) _exit(99);
        execl("/proc/self/exe", "test_loader", mode, dir, (char *)NULL);
        _exit(98);
    }
    TL_CHECK(pid > 0, "fork");
    if (pid <= 0) return -1;
    int status = 0;
    bool done = false;
    for (int tries = 0; tries < 600 && !done; tries++) { // 30 s
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            done = true;
        else
            nanosleep(&(struct timespec){0, 50000000}, NULL);
    }
    if (!done) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    FILE *f = fopen(err, "r");
    size_t n = f ? fread(text, 1, cap - 1, f) : 0;
    if (f) fclose(f);
    text[n] = 0;
    return done ? status : -1;
}

static void run_child(const char *dir, const char *what, const char *dataset_part) {
    char text[4096];
    int status = run_self("--corrupt-child", dir, text, sizeof text);
    TL_CHECK(status != -1, "%s: the child finished (no hang)", what);
    TL_CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) != 0,
             "%s: the child exits non-zero (status 0x%x)", what, status);
    size_t n = strlen(text);
    char *nl = strchr(text, '\n');
    TL_CHECK(n > 0 && nl && nl[1] == 0, "%s: one line on stderr: \"%s\"", what, text);
    TL_CHECK(strncmp(text, "groundc: error: ", 16) == 0 && strstr(text, dir) &&
                 strstr(text, "shard_0000") && strstr(text, dataset_part) && strstr(text, "sample"),
             "%s: the line names file, dataset and sample: \"%s\"", what, text);
    printf("  %s: %s", what, text);
}

static ds_loader *volatile g_loader;
static volatile int g_delivered;

// Batches delivered before the failure, with a given prefetch / threads; the loader closes
// cleanly after its consumer saw the error.
static int deliver_until_failure(const char *dir, int prefetch, int threads, bool direct,
                                 bool map) {
    ds_loader_config c = single(dir, 4, prefetch, threads);
    c.no_direct_chunks = !direct, c.no_map = !map;
    g_loader = ds_loader_open(&c);
    g_delivered = 0;
    EXPECT_FAIL(
        for (;;) {
            ds_loader_next(g_loader);
            g_delivered++;
        },
        "dataset 'images'", "sample");
    ds_loader_close(g_loader);
    g_loader = NULL;
    return g_delivered;
}

static void test_errors(void) {
    ds_loader_config c = config(0, 1, 1, 4, 1, 0, 1);
    EXPECT_FAIL(ds_loader_open(&c), "dataset 0", "weight");
    c = config(1, 1, 1, 4, 1, 2, 2);
    EXPECT_FAIL(ds_loader_open(&c), "rank 2 of world 2");
    c = config(1, 1, 1, 4, 1, 0, 1);
    ds_loader *l = ds_loader_open(&c);
    ds_loader_next(l);
    ds_cursor cur = ds_loader_cursor(l);
    ds_loader_close(l);
    c.resume = &cur;
    c.seed = 2;
    EXPECT_FAIL(ds_loader_open(&c), "resume cursor", "seed");
    c = config(1, 1, 1, 3, 1, 0, 1);
    c.resume = &cur;
    EXPECT_FAIL(ds_loader_open(&c), "resume cursor", "multiple");
    c = config(3, 1, 1, 4, 1, 0, 1); // other weights: another stream
    c.resume = &cur;
    EXPECT_FAIL(ds_loader_open(&c), "resume cursor", "digest");
    char missing[700];
    snprintf(missing, sizeof missing, "%s/nowhere", g_dir);
    ds_loader_dataset nowhere = {missing, 1};
    c = config(1, 1, 1, 4, 1, 0, 1);
    c.datasets = &nowhere, c.num_datasets = 1;
    EXPECT_FAIL(ds_loader_open(&c), "nowhere");

    // Another image size in a second dataset: refused at open, naming both shards.
    char small[700];
    snprintf(small, sizeof small, "%s/small_images", g_dir);
    write_dataset(small, 1, B_SHARDS, B_MEDIA, 2, SU_IS / 2);
    c = config(1, 1, 1, 4, 1, 0, 1);
    g_sets[1].dir = small;
    EXPECT_FAIL(ds_loader_open(&c), "small_images/shard_00001.h5", "images", "geometry");

    // A flipped byte in an image chunk, and in the token stream.
    char bad_img[700], bad_tok[700];
    snprintf(bad_img, sizeof bad_img, "%s/corrupt_image", g_dir);
    snprintf(bad_tok, sizeof bad_tok, "%s/corrupt_tokens", g_dir);
    hsize_t row[4] = {2, 0, 0, 0}, first[1] = {0};
    corrupt_copy(bad_img, 1, "images", row);
    corrupt_copy(bad_tok, 2, "tokens", first);
    // With checksums the damage is found at open.
    ds_loader_dataset set = {bad_img, 1};
    c = config(1, 1, 1, 4, 1, 0, 1);
    c.datasets = &set, c.num_datasets = 1, c.checksums = true;
    EXPECT_FAIL(ds_loader_open(&c), "corrupt_image/shard_00001.h5", "SHA-256");
    // Without, when read: in a child (exit status, one line on stderr, no hang) ...
    run_child(bad_img, "corrupt image chunk", "dataset 'images'");
    run_child(bad_tok, "corrupt token chunk", "dataset 'tokens'");
    // ... and in-process: the batches before the bad one arrive whatever the prefetch.
    // (Decompressed by the reader, by workers, from the mapped file or from the reader's copy,
    // and by HDF5 through the shard layer.)
    int n1 = deliver_until_failure(bad_img, 1, 0, true, true);
    int n2 = deliver_until_failure(bad_img, 16, 3, true, true);
    int n3 = deliver_until_failure(bad_img, 8, 2, false, true);
    int n4 = deliver_until_failure(bad_img, 8, 2, true, false);
    TL_CHECK(n1 == n2 && n1 == n3 && n1 == n4 && n1 == 3,
             "batches before the failure: %d, %d, %d and %d (want 3)", n1, n2, n3, n4);

    // Exiting (here: failing elsewhere) with a loader busy reading is a clean exit 1.
    bool clean = true;
    for (int i = 0; i < 8 && clean; i++) {
        char text[4096];
        int status = run_self("--exit-child", g_a, text, sizeof text);
        clean = status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 1 &&
                strcmp(text, "groundc: error: deliberate failure with the loader running\n") == 0;
        if (!clean)
            printf("  exit with a running loader: status 0x%x, stderr \"%s\"\n", status, text);
    }
    TL_CHECK(clean, "exit while the reader is busy: exit status 1, one line");

    // A truncated shard is refused at open, checksums or not.
    char cut[700], path[800];
    snprintf(cut, sizeof cut, "%s/truncated", g_dir);
    corrupt_copy(cut, 0, NULL, NULL);
    snprintf(path, sizeof path, "%s/shard_00001.h5", cut);
    struct stat st;
    TL_CHECK(stat(path, &st) == 0 && truncate(path, st.st_size / 2) == 0, "truncate %s", path);
    set.dir = cut;
    c.checksums = false;
    EXPECT_FAIL(ds_loader_open(&c), "truncated/shard_00001.h5", "size");

    // Shards cut short in place while mapped and streamed: one line, exit 1, no SIGBUS death.
    char text[4096];
    snprintf(cut, sizeof cut, "%s/truncated_live", g_dir);
    corrupt_copy(cut, 0, NULL, NULL);
    int status = run_self("--truncate-child", cut, text, sizeof text);
    TL_CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 1,
             "shards truncated under a running loader: exit status 1 (status 0x%x: %s)", status,
             status != -1 && WIFSIGNALED(status) ? strsignal(WTERMSIG(status)) : "exited");
    char *nl = strchr(text, '\n');
    TL_CHECK(nl && nl[1] == 0 && strncmp(text, "groundc: error: ", 16) == 0 &&
                 strstr(text, "truncated_live/shard_0000") && strstr(text, "shrank"),
             "shards truncated under a running loader: one line naming the shard: \"%s\"", text);
    printf("  truncated while mapped: %s", text);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--corrupt-child") == 0) return corrupt_child(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--exit-child") == 0) return exit_child(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--truncate-child") == 0) return truncate_child(argv[2]);
    alarm(120); // a deadlock must fail the test, not hang ctest
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    snprintf(g_dir, sizeof g_dir, "%s/test_loader_files", GROUNDC_BINARY_DIR);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    mkdir(g_dir, 0755);
    snprintf(g_a, sizeof g_a, "%s/a", g_dir);
    snprintf(g_b, sizeof g_b, "%s/b", g_dir);
    write_dataset(g_a, 0, A_SHARDS, A_MEDIA, 3, SU_IS);
    write_dataset(g_b, 1, B_SHARDS, B_MEDIA, 2, SU_IS);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    test_stream();
    test_mixing();
    test_data_parallel();
    test_resume();
    test_threads();
    test_userblock();
    test_errors();
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("test_loader: %.1f s\n",
           (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return tl_summary("test_loader");
}
