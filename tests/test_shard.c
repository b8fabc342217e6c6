// test_shard.c: the HDF5 shard layer (data/FORMAT.md): zstd filter edge cases, shard write
// and exact read-back of random content, byte-identical rewrites, the manifest round trip and
// verification, h5py reading our shards through the plugin (and writing a file we read), and
// corrupt inputs that must fail with one line naming the file, dataset and sample.
#include "testlib.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <hdf5.h>
#include <zstd.h>

#include "autograd/error.h"
#include "data/h5zstd.h"
#include "data/manifest.h"
#include "data/shard.h"
#include "shard_util.h"

// Checks a refusal and shows its message in the test log.
#define EXPECT_FAIL(...)                                                                           \
    do {                                                                                           \
        TL_EXPECT_FAIL(__VA_ARGS__);                                                               \
        printf("  refused: %s\n", tl_msg);                                                         \
    } while (0)

static const char *DIGEST = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
static const char *SOURCES[] = {"refcoco", "synth-image", "Flickr30k-Entities", "charades-sta",
                                "vggss"};
static char g_dir[512];

static void path_in(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", g_dir, name);
}

// ---- random content ----

typedef struct {
    int n, n_img, n_vid, n_aud;
    uint8_t *img, *vid;
    int32_t *img_wh;
    float *vid_dur, *aud, *aud_dur;
    int64_t *off;
    int32_t *tok;
    uint8_t *mask;
    int32_t *ref[3];
    int *task, *gran;
    const char **src;
    char **meta;
} corpus;

static void make_corpus(corpus *c, uint64_t seed, int n, int n_img, int n_vid, int n_aud,
                        int max_len) {
    tl_rng r = {seed};
    memset(c, 0, sizeof *c);
    c->n = n, c->n_img = n_img, c->n_vid = n_vid, c->n_aud = n_aud;
    c->img = malloc((size_t)(n_img * SU_IMG_ELEMS + 1));
    c->img_wh = malloc(sizeof(int32_t) * (size_t)(2 * n_img + 1));
    for (int i = 0; i < n_img * SU_IMG_ELEMS; i++) c->img[i] = (uint8_t)tl_randint(&r, 256);
    for (int i = 0; i < 2 * n_img; i++) c->img_wh[i] = 1 + (int32_t)tl_randint(&r, 4000);
    c->vid = malloc((size_t)(n_vid * SU_VID_ELEMS + 1));
    c->vid_dur = malloc(sizeof(float) * (size_t)(n_vid + 1));
    for (int i = 0; i < n_vid * SU_VID_ELEMS; i++) c->vid[i] = (uint8_t)tl_randint(&r, 256);
    for (int i = 0; i < n_vid; i++)
        c->vid_dur[i] = (float)(0.04 + tl_uniform(&r) * 60.0); // > 0: the reader refuses 0
    // Audio values exactly representable in float16, plus its edge values in row 0.
    c->aud = malloc(sizeof(float) * (size_t)(n_aud * SU_AUD_ELEMS + 1));
    c->aud_dur = malloc(sizeof(float) * (size_t)(n_aud + 1));
    for (int i = 0; i < n_aud * SU_AUD_ELEMS; i++)
        c->aud[i] = (float)(tl_randint(&r, 4096) - 2048) / 256.0f;
    if (n_aud > 0) {
        const float edge[] = {65504.0f, -65504.0f, 0x1p-14f, 0x1p-24f, -0x1p-24f, 0.0f, -0.0f};
        memcpy(c->aud, edge, sizeof edge);
    }
    for (int i = 0; i < n_aud; i++) c->aud_dur[i] = (float)(0.04 + tl_uniform(&r) * 10.0);

    c->off = malloc(sizeof(int64_t) * (size_t)(n + 1));
    c->off[0] = 0;
    for (int i = 0; i < n; i++)
        c->off[i + 1] = c->off[i] + (i == 7 ? 0 : 1 + tl_randint(&r, max_len)); // one empty
    c->tok = malloc(sizeof(int32_t) * (size_t)(c->off[n] + 1));
    c->mask = malloc((size_t)c->off[n] + 1);
    for (int64_t t = 0; t < c->off[n]; t++)
        c->tok[t] = (int32_t)tl_randint(&r, 32009), c->mask[t] = (uint8_t)tl_randint(&r, 2);
    for (int k = 0; k < 3; k++) c->ref[k] = malloc(sizeof(int32_t) * (size_t)(n + 1));
    c->task = malloc(sizeof(int) * (size_t)(n + 1));
    c->gran = malloc(sizeof(int) * (size_t)(n + 1));
    c->src = malloc(sizeof(char *) * (size_t)(n + 1));
    c->meta = malloc(sizeof(char *) * (size_t)(n + 1));
    const int rows[3] = {n_img, n_vid, n_aud};
    for (int i = 0; i < n; i++) {
        // 0: text only, 1: image, 2: video, 3: audio, 4: image + audio, 5: video + audio.
        int kind = i % 6;
        bool want[3] = {kind == 1 || kind == 4, kind == 2 || kind == 5, kind >= 3};
        for (int k = 0; k < 3; k++)
            c->ref[k][i] = want[k] && rows[k] > 0 ? (int32_t)tl_randint(&r, rows[k]) : -1;
        c->task[i] = (int)tl_randint(&r, DS_NTASKS);
        c->gran[i] = (int)tl_randint(&r, 2);
        c->src[i] = SOURCES[tl_randint(&r, 5)];
        char buf[512];
        snprintf(buf, sizeof buf,
                 "{\"id\": \"s%05d\", \"text\": \"Ein Bär 🐻 — 東京 «%d» \\\"q\\\"\", "
                 "\"box\": [%.4f, %.4f, %.4f, %.4f], \"span\": [%.3f, %.3f]}",
                 i, i, tl_uniform(&r) * 0.5, tl_uniform(&r) * 0.5, 0.5 + tl_uniform(&r) * 0.5,
                 0.5 + tl_uniform(&r) * 0.5, tl_uniform(&r) * 0.5, 0.5 + tl_uniform(&r) * 0.5);
        c->meta[i] = strdup(buf);
    }
}

static void free_corpus(corpus *c) {
    for (int i = 0; i < c->n; i++) free(c->meta[i]);
    free(c->img), free(c->img_wh), free(c->vid), free(c->vid_dur), free(c->aud), free(c->aud_dur);
    free(c->off), free(c->tok), free(c->mask), free(c->task), free(c->gran), free(c->src);
    free(c->meta);
    for (int k = 0; k < 3; k++) free(c->ref[k]);
}

static ds_shard_layout layout_of(bool media) {
    ds_shard_layout l = {DIGEST, 0, 0, 0, 0, 0, 0, 0};
    if (media) l.image_size = SU_IS, l.video_frames = SU_VF, l.video_size = SU_VS;
    if (media) l.audio_clips = SU_AC, l.audio_frames = SU_AT, l.audio_mels = SU_AM;
    return l;
}

static void write_corpus(const corpus *c, const char *path, bool media, ds_shard_info *info) {
    ds_shard_layout l = layout_of(media);
    ds_shard_writer *w = ds_shard_create(path, &l);
    // Rows interleaved with samples, as a packer adds them.
    int ni = 0, nv = 0, na = 0;
    for (int i = 0; i < c->n; i++) {
        while (ni < c->n_img && ni <= c->ref[0][i]) {
            int32_t row = ds_shard_add_image(w, c->img + ni * SU_IMG_ELEMS, c->img_wh[2 * ni],
                                             c->img_wh[2 * ni + 1]);
            TL_CHECK(row == ni, "image row %d, expected %d", row, ni);
            ni++;
        }
        while (nv < c->n_vid && nv <= c->ref[1][i]) {
            TL_CHECK(ds_shard_add_video(w, c->vid + nv * SU_VID_ELEMS, c->vid_dur[nv]) == nv,
                     "row");
            nv++;
        }
        while (na < c->n_aud && na <= c->ref[2][i]) {
            TL_CHECK(ds_shard_add_audio(w, c->aud + na * SU_AUD_ELEMS, c->aud_dur[na]) == na,
                     "row");
            na++;
        }
        ds_sample s = {c->tok + c->off[i], c->mask + c->off[i], c->off[i + 1] - c->off[i],
                       c->ref[0][i],       c->ref[1][i],        c->ref[2][i],
                       c->task[i],         c->gran[i],          c->src[i],
                       c->meta[i]};
        TL_CHECK(ds_shard_add_sample(w, &s) == i, "sample index");
    }
    for (; ni < c->n_img; ni++) // rows no sample uses are legal too
        ds_shard_add_image(w, c->img + ni * SU_IMG_ELEMS, c->img_wh[2 * ni], c->img_wh[2 * ni + 1]);
    for (; nv < c->n_vid; nv++) ds_shard_add_video(w, c->vid + nv * SU_VID_ELEMS, c->vid_dur[nv]);
    for (; na < c->n_aud; na++) ds_shard_add_audio(w, c->aud + na * SU_AUD_ELEMS, c->aud_dur[na]);
    ds_shard_finish(w, info);
}

// Index of each sample's source in first-appearance order (what the writer assigns).
static int source_index(const corpus *c, int i, const char **names, int *n_names) {
    for (int j = 0; j < *n_names; j++)
        if (strcmp(names[j], c->src[i]) == 0) return j;
    names[*n_names] = c->src[i];
    return (*n_names)++;
}

static void check_read_back(const corpus *c, const char *path, const ds_shard_info *info) {
    ds_shard *s = ds_shard_open(path);
    const ds_shard_header *h = ds_shard_get_header(s);
    TL_CHECK(h->schema_version == 1 && strcmp(h->tokenizer_digest, DIGEST) == 0, "header");
    TL_CHECK(h->num_samples == c->n && h->num_tokens == c->off[c->n], "counts %lld %lld",
             (long long)h->num_samples, (long long)h->num_tokens);
    TL_CHECK(h->num_images == c->n_img && h->num_videos == c->n_vid && h->num_audios == c->n_aud,
             "media rows");
    TL_CHECK(
        h->image_size == (c->n_img ? SU_IS : 0) && h->video_frames == (c->n_vid ? SU_VF : 0) &&
            h->video_size == (c->n_vid ? SU_VS : 0) && h->audio_clips == (c->n_aud ? SU_AC : 0) &&
            h->audio_frames == (c->n_aud ? SU_AT : 0) && h->audio_mels == (c->n_aud ? SU_AM : 0),
        "media sizes in the header");
    TL_CHECK(info->num_samples == c->n && info->num_tokens == c->off[c->n] &&
                 info->num_images == c->n_img && info->num_videos == c->n_vid &&
                 info->num_audios == c->n_aud,
             "finish info counts");
    char sha[65];
    int64_t bytes;
    ds_file_sha256(path, sha, &bytes);
    TL_CHECK(strcmp(sha, info->sha256) == 0 && bytes == info->bytes, "finish info sha/size");

    const char *names[8];
    int n_names = 0;
    int64_t tasks[DS_NTASKS] = {0};
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)(c->off[c->n] + 1));
    uint8_t *mask = malloc((size_t)c->off[c->n] + 1);
    int bad_samples = 0;
    for (int i = 0; i < c->n; i++) {
        ds_sample_ref r = ds_shard_sample(s, i);
        int src = source_index(c, i, names, &n_names);
        tasks[c->task[i]]++;
        bool ok = r.start == c->off[i] && r.length == c->off[i + 1] - c->off[i] &&
                  r.image == c->ref[0][i] && r.video == c->ref[1][i] && r.audio == c->ref[2][i] &&
                  r.task == c->task[i] && r.granularity == c->gran[i] && r.source == src &&
                  strcmp(ds_shard_source_name(s, r.source), c->src[i]) == 0;
        memset(tok, 0xff, sizeof(int32_t) * (size_t)(r.length + 1));
        ds_shard_read_tokens(s, i, 1, tok, mask);
        ok = ok && memcmp(tok, c->tok + c->off[i], sizeof(int32_t) * (size_t)r.length) == 0 &&
             memcmp(mask, c->mask + c->off[i], (size_t)r.length) == 0;
        char *meta = ds_shard_read_meta(s, i);
        ok = ok && strcmp(meta, c->meta[i]) == 0;
        free(meta);
        if (!ok) bad_samples++;
    }
    TL_CHECK(bad_samples == 0, "%d samples differ after read-back", bad_samples);
    TL_CHECK(h->num_sources == n_names && info->num_sources == n_names, "source count");
    for (int j = 0; j < n_names && j < info->num_sources; j++)
        TL_CHECK(strcmp(info->source_names[j], names[j]) == 0, "info source %d", j);
    TL_CHECK(memcmp(tasks, info->task_counts, sizeof tasks) == 0, "task counts");

    // All samples at once, and a range in the middle (crosses the empty sample 7).
    TL_CHECK(ds_shard_range_tokens(s, 0, c->n) == c->off[c->n], "range tokens");
    ds_shard_read_tokens(s, 0, c->n, tok, mask);
    TL_CHECK(memcmp(tok, c->tok, sizeof(int32_t) * (size_t)c->off[c->n]) == 0 &&
                 memcmp(mask, c->mask, (size_t)c->off[c->n]) == 0,
             "whole-shard token read");
    if (c->n > 12) {
        ds_shard_read_tokens(s, 5, 7, tok, NULL);
        TL_CHECK(memcmp(tok, c->tok + c->off[5],
                        sizeof(int32_t) * (size_t)(c->off[12] - c->off[5])) == 0,
                 "range token read");
    }

    uint8_t px[SU_VID_ELEMS];
    float fb[SU_AUD_ELEMS];
    int bad_rows = 0;
    for (int i = 0; i < c->n_img; i++) {
        int32_t wh[2];
        ds_shard_read_image(s, i, px);
        ds_shard_image_orig_size(s, i, wh);
        if (memcmp(px, c->img + i * SU_IMG_ELEMS, SU_IMG_ELEMS) != 0 || wh[0] != c->img_wh[2 * i] ||
            wh[1] != c->img_wh[2 * i + 1])
            bad_rows++;
    }
    for (int i = 0; i < c->n_vid; i++) {
        ds_shard_read_video(s, i, px);
        if (memcmp(px, c->vid + i * SU_VID_ELEMS, SU_VID_ELEMS) != 0 ||
            ds_shard_video_duration(s, i) != c->vid_dur[i])
            bad_rows++;
    }
    for (int i = 0; i < c->n_aud; i++) {
        ds_shard_read_audio(s, i, fb);
        // memcmp also tells -0 from 0
        if (memcmp(fb, c->aud + i * SU_AUD_ELEMS, sizeof fb) != 0 ||
            ds_shard_audio_duration(s, i) != c->aud_dur[i])
            bad_rows++;
    }
    TL_CHECK(bad_rows == 0, "%d media rows differ after read-back", bad_rows);
    free(tok), free(mask);
    ds_shard_close(s);
}

// ---- the zstd filter on its own ----

static size_t run_filter_at(unsigned level, unsigned flags, const void *data, size_t n,
                            void **out) {
    size_t cap = n;
    void *buf = H5allocate_memory(n, false);
    memcpy(buf, data, n);
    size_t got = ds_h5zstd_filter(flags, 1, &level, n, &cap, &buf);
    *out = buf;
    return got;
}

static size_t run_filter(unsigned flags, const void *data, size_t n, void **out) {
    return run_filter_at(3, flags, data, n, out);
}

// The level in cd_values[0] is a signed int (two's complement): the filter's frame at each
// cd value is byte for byte libzstd's own at the level it stands for, clamped to zstd's range
// (0: zstd's default); a fast (negative) level is what it says, not level 1.
static void test_filter_levels(void) {
    // Text-like bytes (8 letters, runs of repeats): level 1 entropy-codes the literals, the
    // fast levels store them raw, so the sizes tell the levels apart.
    enum { n = 60000 };
    uint8_t *raw = malloc(n);
    tl_rng r = {11};
    for (size_t i = 0; i < n; i++)
        raw[i] = i >= 64 && tl_randint(&r, 4) == 0 ? raw[i - 1 - (size_t)tl_randint(&r, 64)]
                                                   : (uint8_t)('a' + tl_randint(&r, 8));
    const struct {
        unsigned cd;
        int level;
    } cases[] = {{1, 1},
                 {3, 3},
                 {0, ZSTD_CLEVEL_DEFAULT},
                 {19, 19},
                 {1000, ZSTD_maxCLevel()},
                 {(unsigned)-1, -1},
                 {(unsigned)-5, -5},
                 {0x80000000u, ZSTD_minCLevel()}};
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    size_t cap = ZSTD_compressBound(n);
    uint8_t *want = malloc(cap);
    size_t size_at_1 = 0, size_at_m5 = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ZSTD_CCtx_reset(cc, ZSTD_reset_session_and_parameters);
        ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, cases[i].level);
        ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
        ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 1);
        size_t wn = ZSTD_compress2(cc, want, cap, raw, n);
        void *z;
        size_t zn = run_filter_at(cases[i].cd, 0, raw, n, &z);
        TL_CHECK(!ZSTD_isError(wn) && zn == wn && memcmp(z, want, wn) == 0,
                 "cd_values[0] = %u: the frame of zstd level %d (%zu bytes, libzstd %zu)",
                 cases[i].cd, cases[i].level, zn, wn);
        if (cases[i].level == 1) size_at_1 = zn;
        if (cases[i].level == -5) size_at_m5 = zn;
        void *back;
        size_t bn = run_filter(H5Z_FLAG_REVERSE, z, zn, &back);
        TL_CHECK(bn == n && memcmp(back, raw, n) == 0, "cd_values[0] = %u: round trip",
                 cases[i].cd);
        H5free_memory(back);
        H5free_memory(z);
    }
    TL_CHECK(size_at_m5 > size_at_1, "level -5 is not level 1 (%zu vs %zu bytes)", size_at_m5,
             size_at_1);
    free(want);
    free(raw);
    ZSTD_freeCCtx(cc);
}

static void test_filter(void) {
    enum { N = 200000 };
    uint8_t *raw = malloc(N);
    tl_rng r = {7};
    for (int i = 0; i < N; i++) raw[i] = i % 3 ? (uint8_t)(i / 64) : (uint8_t)tl_randint(&r, 256);

    void *z;
    size_t zn = run_filter(0, raw, N, &z);
    TL_CHECK(zn > 0 && zn < N, "compressed %zu bytes", zn);
    TL_CHECK(ZSTD_getFrameContentSize(z, zn) == N, "frames carry their content size");
    void *back;
    size_t bn = run_filter(H5Z_FLAG_REVERSE, z, zn, &back);
    TL_CHECK(bn == N && memcmp(back, raw, N) == 0, "filter round trip");
    H5free_memory(back);
    test_filter_levels();

    // A frame without its content size (streaming encoders) and two frames back to back.
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0);
    size_t cap = ZSTD_compressBound(N) * 2;
    uint8_t *frames = malloc(cap);
    size_t f1 = ZSTD_compress2(cc, frames, cap, raw, N);
    TL_CHECK(!ZSTD_isError(f1) && ZSTD_getFrameContentSize(frames, f1) == ZSTD_CONTENTSIZE_UNKNOWN,
             "unknown-size frame");
    bn = run_filter(H5Z_FLAG_REVERSE, frames, f1, &back);
    TL_CHECK(bn == N && memcmp(back, raw, N) == 0, "unknown-size frame decodes");
    H5free_memory(back);
    size_t f2 = ZSTD_compress(frames, cap, raw, N / 2, 3);
    size_t f3 = ZSTD_compress(frames + f2, cap - f2, raw + N / 2, N - N / 2, 3);
    bn = run_filter(H5Z_FLAG_REVERSE, frames, f2 + f3, &back);
    TL_CHECK(bn == N && memcmp(back, raw, N) == 0, "two concatenated frames decode");
    H5free_memory(back);

    // Corrupt input: flipped byte, truncation, garbage. Each must return 0, never crash.
    int refused = 0;
    for (size_t at = 0; at < zn; at += zn / 37 + 1) {
        uint8_t *bad = malloc(zn);
        memcpy(bad, z, zn);
        bad[at] ^= 0x5a;
        void *o;
        size_t got = run_filter(H5Z_FLAG_REVERSE, bad, zn, &o);
        refused += got == 0;
        H5free_memory(o);
        free(bad);
    }
    TL_CHECK(refused == (int)((zn - 1) / (zn / 37 + 1)) + 1, "every flipped byte is refused (%d)",
             refused);
    void *o;
    TL_CHECK(run_filter(H5Z_FLAG_REVERSE, z, zn / 2, &o) == 0, "truncated frame refused");
    H5free_memory(o);
    TL_CHECK(run_filter(H5Z_FLAG_REVERSE, frames, f1 - 9, &o) == 0, "truncated stream refused");
    H5free_memory(o);
    TL_CHECK(run_filter(H5Z_FLAG_REVERSE, raw, 1000, &o) == 0, "garbage refused");
    H5free_memory(o);
    H5free_memory(z);

    // Through HDF5: a chunk stored as an unknown-size frame (direct chunk write).
    char path[600];
    path_in(path, sizeof path, "direct_chunk.h5");
    TL_CHECK(ds_h5zstd_register() == 0 && ds_h5zstd_register() == 0, "register twice");
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims = N, chunk = N;
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    unsigned level = 3;
    H5Pset_chunk(dcpl, 1, &chunk);
    H5Pset_filter(dcpl, DS_H5ZSTD_ID, H5Z_FLAG_MANDATORY, 1, &level);
    hid_t sp = H5Screate_simple(1, &dims, NULL);
    hid_t d = H5Dcreate2(f, "raw", H5T_STD_U8LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    hsize_t origin = 0;
    f1 = ZSTD_compress2(cc, frames, cap, raw, N); // the unknown-size frame again
    TL_CHECK(H5Dwrite_chunk(d, H5P_DEFAULT, 0, &origin, f1, frames) >= 0, "direct chunk write");
    uint8_t *got = malloc(N);
    TL_CHECK(H5Dread(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, got) >= 0 &&
                 memcmp(got, raw, N) == 0,
             "HDF5 reads an unknown-size chunk");
    H5Dclose(d), H5Sclose(sp), H5Pclose(dcpl), H5Fclose(f);
    ZSTD_freeCCtx(cc);
    free(got), free(frames), free(raw);
}

// ---- files ----

static void copy_file(const char *src, const char *dst) {
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    if (!in || !out) ag_fail("copy %s -> %s: %s", src, dst, strerror(errno));
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, n, out);
    fclose(in), fclose(out);
}

static bool same_bytes(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    bool same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) same = false;
        if (ca == EOF || cb == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

static void flip_byte(const char *path, long at) {
    FILE *f = fopen(path, "r+b");
    fseek(f, at, SEEK_SET);
    int c = fgetc(f);
    fseek(f, at, SEEK_SET);
    fputc(c ^ 0xff, f);
    fclose(f);
}

// File offset of the middle of a stored chunk of dataset `name`.
static long chunk_middle(const char *path, const char *name, const hsize_t *coord) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), d = H5Dopen2(f, name, H5P_DEFAULT);
    unsigned mask;
    haddr_t addr = 0;
    hsize_t size = 0;
    herr_t e = H5Dget_chunk_info_by_coord(d, coord, &mask, &addr, &size);
    H5Dclose(d), H5Fclose(f);
    TL_CHECK(e >= 0 && size > 0, "chunk info of %s", name);
    return (long)(addr + size / 2);
}

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

// A copy of `src` at `dst`, opened read-write for surgery.
static hid_t open_copy(const char *src, const char *dst) {
    copy_file(src, dst);
    return H5Fopen(dst, H5F_ACC_RDWR, H5P_DEFAULT);
}

static void overwrite(hid_t f, const char *name, hid_t mtype, const void *data) {
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    TL_CHECK(H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0, "overwrite %s", name);
    H5Dclose(d);
}

static void open_and_close(const char *path) {
    ds_shard_close(ds_shard_open(path));
}

// A flipped byte inside a compressed tokens chunk: open works, reading sample 3 fails.
static void test_flipped_tokens(const char *good, const corpus *c) {
    char p[600];
    path_in(p, sizeof p, "flipped_tokens.h5");
    copy_file(good, p);
    hsize_t origin[1] = {0};
    flip_byte(p, chunk_middle(p, "tokens", origin));
    ds_shard *s = ds_shard_open(p);
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)c->off[c->n]);
    EXPECT_FAIL(ds_shard_read_tokens(s, 3, 1, tok, NULL), p, "dataset 'tokens'", "sample 3",
                "read failed");
    EXPECT_FAIL(ds_shard_read_tokens(s, 2, 4, tok, NULL), p, "samples 2..5");
    ds_shard_close(s);
    free(tok);
}

// A flipped byte inside image row 1's chunk: row 0 still reads, row 1 fails.
static void test_flipped_image(const char *good, const corpus *c) {
    char p[600];
    path_in(p, sizeof p, "flipped_image.h5");
    copy_file(good, p);
    hsize_t row1[4] = {1, 0, 0, 0};
    flip_byte(p, chunk_middle(p, "images", row1));
    ds_shard *s = ds_shard_open(p);
    uint8_t px[SU_IMG_ELEMS];
    ds_shard_read_image(s, 0, px);
    TL_CHECK(memcmp(px, c->img, SU_IMG_ELEMS) == 0, "neighbouring row still reads");
    EXPECT_FAIL(ds_shard_read_image(s, 1, px), p, "dataset 'images'", "row 1", "read failed");
    ds_shard_close(s);
}

static void test_corruption(const char *good, const corpus *c) {
    char p[600];
    // Missing and non-HDF5 files.
    path_in(p, sizeof p, "no_such_shard.h5");
    EXPECT_FAIL(open_and_close(p), p, "No such file");
    path_in(p, sizeof p, "garbage.h5");
    FILE *g = fopen(p, "wb");
    fputs("not an hdf5 file at all\n", g);
    fclose(g);
    EXPECT_FAIL(open_and_close(p), p, "cannot open as HDF5");

    // Truncated: cut in half, and cut to the superblock.
    struct stat st;
    stat(good, &st);
    path_in(p, sizeof p, "truncated.h5");
    copy_file(good, p);
    TL_CHECK(truncate(p, st.st_size / 2) == 0, "truncate");
    EXPECT_FAIL(open_and_close(p), p);
    TL_CHECK(truncate(p, 200) == 0, "truncate");
    EXPECT_FAIL(open_and_close(p), p);

    test_flipped_tokens(good, c);
    test_flipped_image(good, c);

    // A missing dataset.
    path_in(p, sizeof p, "missing_dataset.h5");
    hid_t f = open_copy(good, p);
    TL_CHECK(H5Ldelete(f, "loss_mask", H5P_DEFAULT) >= 0, "delete");
    H5Fclose(f);
    EXPECT_FAIL(open_and_close(p), p, "dataset 'loss_mask' missing");

    // Wrong schema version.
    path_in(p, sizeof p, "schema2.h5");
    f = open_copy(good, p);
    hid_t a = H5Aopen(f, "schema_version", H5P_DEFAULT);
    int32_t two = 2;
    TL_CHECK(H5Awrite(a, H5T_NATIVE_INT32, &two) >= 0, "attr write");
    H5Aclose(a), H5Fclose(f);
    EXPECT_FAIL(open_and_close(p), p, "schema_version 2");

    // Offsets not monotone (sample 5 ends before it starts).
    path_in(p, sizeof p, "offsets.h5");
    f = open_copy(good, p);
    int64_t *off = malloc(sizeof(int64_t) * (size_t)(c->n + 1));
    memcpy(off, c->off, sizeof(int64_t) * (size_t)(c->n + 1));
    off[6] = off[5] - 1;
    overwrite(f, "offsets", H5T_NATIVE_INT64, off);
    H5Fclose(f);
    EXPECT_FAIL(open_and_close(p), p, "dataset 'offsets'", "sample 5", "not monotone");
    // one sample of 2^33 tokens (the later offsets moved along): named, not an out-of-memory
    // error asking for 32 GiB
    for (int64_t i = 6; i <= c->n; i++) off[i] = c->off[i] + ((int64_t)1 << 33);
    f = open_copy(good, p);
    overwrite(f, "offsets", H5T_NATIVE_INT64, off);
    H5Fclose(f);
    EXPECT_FAIL(open_and_close(p), p, "dataset 'offsets': sample 5 holds", "more than 16777216");
    for (int64_t i = 6; i <= c->n; i++) off[i] = c->off[i];
    off[6] = c->off[6];
    off[c->n] += 1; // ends past the tokens
    f = open_copy(good, p);
    overwrite(f, "offsets", H5T_NATIVE_INT64, off);
    H5Fclose(f);
    EXPECT_FAIL(open_and_close(p), p, "dataset 'offsets'", "ends at");
    free(off);

    // A media reference out of range.
    path_in(p, sizeof p, "badref.h5");
    f = open_copy(good, p);
    int32_t *ref = malloc(sizeof(int32_t) * (size_t)c->n);
    memcpy(ref, c->ref[0], sizeof(int32_t) * (size_t)c->n);
    ref[2] = 99;
    overwrite(f, "sample_image", H5T_NATIVE_INT32, ref);
    H5Fclose(f);
    free(ref);
    EXPECT_FAIL(open_and_close(p), p, "dataset 'sample_image'", "sample 2", "out of range");

    // A dataset of the wrong type.
    path_in(p, sizeof p, "badtype.h5");
    f = open_copy(good, p);
    H5Ldelete(f, "sample_task", H5P_DEFAULT);
    hsize_t n = (hsize_t)c->n;
    hid_t sp = H5Screate_simple(1, &n, NULL);
    hid_t d =
        H5Dcreate2(f, "sample_task", H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(d), H5Sclose(sp), H5Fclose(f);
    EXPECT_FAIL(open_and_close(p), p, "dataset 'sample_task'", "int32", "expected uint8");

    // A sample count whose offsets (count + 1 entries) would overflow (found by fuzz_shard).
    path_in(p, sizeof p, "num_samples.h5");
    f = open_copy(good, p);
    a = H5Aopen(f, "num_samples", H5P_DEFAULT);
    int64_t huge = INT64_MAX;
    TL_CHECK(H5Awrite(a, H5T_NATIVE_INT64, &huge) >= 0, "attr write");
    H5Aclose(a), H5Fclose(f);
    EXPECT_FAIL(open_and_close(p), p, "attribute 'num_samples'", "out of range");

    // Media geometry whose row size wraps size_t (2^21 x 2^21 x 2^21 x 3): refused before any
    // batch slot is sized from it (found by the audit).
    path_in(p, sizeof p, "video_geometry.h5");
    f = open_copy(good, p);
    const char *geometry[2] = {"video_frames", "video_size"};
    for (int k = 0; k < 2; k++) {
        a = H5Aopen(f, geometry[k], H5P_DEFAULT);
        int32_t big = 1 << 21;
        TL_CHECK(H5Awrite(a, H5T_NATIVE_INT32, &big) >= 0, "attr write");
        H5Aclose(a);
    }
    H5Fclose(f);
    EXPECT_FAIL(open_and_close(p), p, "video_frames x video_size^2 x 3",
                "more than 1 GiB of media per sample");

    // sample_meta as ASCII strings (HDF5 converts none to UTF-8): still read.
    path_in(p, sizeof p, "ascii_meta.h5");
    f = open_copy(good, p);
    H5Ldelete(f, "sample_meta", H5P_DEFAULT);
    hid_t ascii = H5Tcopy(H5T_C_S1);
    H5Tset_size(ascii, H5T_VARIABLE);
    H5Tset_cset(ascii, H5T_CSET_ASCII);
    const char **metas = calloc((size_t)c->n, sizeof *metas);
    for (int64_t i = 0; i < c->n; i++) metas[i] = "{\"id\": 3}";
    sp = H5Screate_simple(1, &n, NULL);
    d = H5Dcreate2(f, "sample_meta", ascii, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    TL_CHECK(H5Dwrite(d, ascii, H5S_ALL, H5S_ALL, H5P_DEFAULT, metas) >= 0, "ascii meta write");
    H5Dclose(d), H5Sclose(sp), H5Tclose(ascii), H5Fclose(f);
    free(metas);
    ds_shard *sh = ds_shard_open(p);
    char *meta = ds_shard_read_meta(sh, c->n - 1);
    TL_CHECK(!strcmp(meta, "{\"id\": 3}"), "ascii meta read back as %s", meta);
    free(meta);
    ds_shard_close(sh);
}

// ---- writer misuse: nothing half-written where a good file stood ----

static void bad_meta(const char *path) {
    ds_shard_layout l = layout_of(true);
    ds_shard_writer *w = ds_shard_create(path, &l);
    int32_t t = 5;
    uint8_t m = 1;
    ds_sample s = {&t, &m, 1, -1, -1, -1, 0, 0, "refcoco", "{\"id\": 1"};
    ds_shard_add_sample(w, &s);
}

static void bad_row(const char *path) {
    ds_shard_layout l = layout_of(true);
    ds_shard_writer *w = ds_shard_create(path, &l);
    int32_t t = 5;
    uint8_t m = 1;
    ds_sample s = {&t, &m, 1, 0, -1, -1, 0, 0, "refcoco", "{}"}; // image 0 not added yet
    ds_shard_add_sample(w, &s);
}

static void no_images_in_layout(const char *path) {
    ds_shard_layout l = layout_of(false);
    ds_shard_writer *w = ds_shard_create(path, &l);
    uint8_t px[SU_IMG_ELEMS] = {0};
    ds_shard_add_image(w, px, 10, 10);
}

static void test_writer_errors(const char *good) {
    char keep[600], tmp[640];
    path_in(keep, sizeof keep, "keep.h5");
    snprintf(tmp, sizeof tmp, "%s.tmp", keep);
    copy_file(good, keep);
    char before[65], after[65];
    ds_file_sha256(keep, before, NULL);
    EXPECT_FAIL(bad_meta(keep), "keep.h5.tmp", "sample 0", "not a JSON object");
    EXPECT_FAIL(bad_row(keep), "sample 0", "image row 0 out of range");
    EXPECT_FAIL(no_images_in_layout(keep), "dataset 'images'", "no images");
    ds_shard_layout l = layout_of(true);
    ds_shard_writer *w = ds_shard_create(keep, &l);
    TL_CHECK(exists(tmp), "writer works on PATH.tmp");
    ds_shard_abort(w);
    ds_file_sha256(keep, after, NULL);
    TL_CHECK(strcmp(before, after) == 0 && !exists(tmp), "good file untouched, no .tmp left");
}

// ---- manifest ----

static void test_manifest(const char *dir, const ds_shard_info *a, const ds_shard_info *b) {
    ds_manifest m;
    ds_manifest_init(&m, DIGEST);
    ds_manifest_add_shard(&m, "shard_00000.h5", a);
    ds_manifest_add_shard(&m, "shard_00001.h5", b);
    ds_manifest_write(&m, dir);
    ds_manifest r;
    ds_manifest_read(&r, dir);
    bool same = r.schema_version == 1 && strcmp(r.tokenizer_digest, DIGEST) == 0 &&
                r.num_samples == a->num_samples + b->num_samples &&
                r.num_tokens == a->num_tokens + b->num_tokens && r.num_shards == 2 &&
                r.num_tasks == m.num_tasks && r.num_sources == m.num_sources;
    for (int i = 0; same && i < 2; i++)
        same = strcmp(r.shards[i].file, m.shards[i].file) == 0 &&
               r.shards[i].num_samples == m.shards[i].num_samples &&
               r.shards[i].num_tokens == m.shards[i].num_tokens &&
               r.shards[i].bytes == m.shards[i].bytes &&
               strcmp(r.shards[i].sha256, m.shards[i].sha256) == 0;
    int64_t task_total = 0, source_total = 0;
    for (int i = 0; same && i < r.num_tasks; i++) {
        same =
            strcmp(r.tasks[i].name, m.tasks[i].name) == 0 && r.tasks[i].count == m.tasks[i].count;
        task_total += r.tasks[i].count;
    }
    for (int i = 0; same && i < r.num_sources; i++) {
        same = strcmp(r.sources[i].name, m.sources[i].name) == 0 &&
               r.sources[i].count == m.sources[i].count;
        source_total += r.sources[i].count;
    }
    TL_CHECK(same && task_total == r.num_samples && source_total == r.num_samples,
             "manifest round trip");
    ds_manifest_verify(&r, dir, true);
    tl_passed++; // verification of the good folder returned
    ds_manifest_free(&r);
    ds_manifest_free(&m);
}

static void verify_dir(const char *dir) {
    static ds_manifest m; // static: still owned (not leaked) when verification fails
    ds_manifest_free(&m);
    ds_manifest_read(&m, dir);
    ds_manifest_verify(&m, dir, true);
}

static void test_manifest_errors(const char *dir, const ds_shard_info *a) {
    char p[600], q[600];
    // Checksum mismatch: same size, one byte changed near the end of shard 1.
    snprintf(p, sizeof p, "%s/shard_00001.h5", dir);
    snprintf(q, sizeof q, "%s/shard_00001.h5.bak", dir);
    copy_file(p, q);
    struct stat st;
    stat(p, &st);
    flip_byte(p, (long)st.st_size - 3);
    EXPECT_FAIL(verify_dir(dir), "shard_00001.h5", "SHA-256", "differs from the manifest");
    // Truncated: size mismatch.
    TL_CHECK(truncate(p, st.st_size - 100) == 0, "truncate");
    EXPECT_FAIL(verify_dir(dir), "shard_00001.h5", "size");
    // Missing shard file.
    unlink(p);
    EXPECT_FAIL(verify_dir(dir), "shard_00001.h5", "manifest.json", "No such file");
    rename(q, p);
    verify_dir(dir);
    tl_passed++;
    // A shard from another tokenizer (written and listed correctly, but digest differs).
    ds_manifest m;
    ds_manifest_read(&m, dir);
    memset(m.tokenizer_digest, 'e', 64);
    EXPECT_FAIL(ds_manifest_verify(&m, dir, false), "shard_00000.h5", "tokenizer");
    ds_manifest_free(&m);
    // A broken manifest.
    snprintf(p, sizeof p, "%s/manifest.json", dir);
    FILE *f = fopen(p, "wb");
    fputs("{\"schema_version\": 1, \"shards\": [", f);
    fclose(f);
    EXPECT_FAIL(verify_dir(dir), "manifest.json", "not valid JSON (at line 1, column 34)");
    f = fopen(p, "wb");
    fprintf(f,
            "{\"schema_version\": 1, \"tokenizer_digest\": \"%s\", \"num_samples\": %lld, "
            "\"num_tokens\": 0, \"shards\": [], \"tasks\": {}, \"sources\": {}}",
            DIGEST, (long long)a->num_samples);
    fclose(f);
    EXPECT_FAIL(verify_dir(dir), "manifest.json", "num_samples");
    // 1025 shards of 2^53 samples each: the sum wraps int64 (found by the audit; with 2049 the
    // wrapped sum matched num_samples 2^53).
    f = fopen(p, "wb");
    fprintf(
        f,
        "{\"schema_version\": 1, \"tokenizer_digest\": \"%s\", \"num_samples\": 9007199254740992, "
        "\"num_tokens\": 9007199254740992, \"tasks\": {}, \"sources\": {}, \"shards\": [",
        DIGEST);
    for (int i = 0; i < 1025; i++)
        fprintf(f,
                "%s{\"file\": \"shard_%05d.h5\", \"num_samples\": 9007199254740992, "
                "\"num_tokens\": 9007199254740992, \"sha256\": \"%s\"}",
                i ? ", " : "", i, DIGEST);
    fputs("]}", f);
    fclose(f);
    EXPECT_FAIL(verify_dir(dir), "manifest.json", "shards[1023]", "counts add up past 2^63");
}

// ---- h5py ----

// Element types of the arrays handed to json_add_numbers.
enum { J_I32, J_U8, J_I64, J_F32 };

static void json_add_numbers(cJSON *o, const char *key, const void *data, int64_t n, int kind) {
    cJSON *arr = cJSON_AddArrayToObject(o, key);
    for (int64_t i = 0; i < n; i++) {
        double v = kind == J_I32   ? ((const int32_t *)data)[i]
                   : kind == J_U8  ? ((const uint8_t *)data)[i]
                   : kind == J_I64 ? (double)((const int64_t *)data)[i]
                                   : ((const float *)data)[i];
        cJSON_AddItemToArray(arr, cJSON_CreateNumber(v));
    }
}

static void json_shape(cJSON *shapes, const char *key, int rank, const int64_t *dims) {
    cJSON *arr = cJSON_AddArrayToObject(shapes, key);
    for (int i = 0; i < rank; i++) cJSON_AddItemToArray(arr, cJSON_CreateNumber((double)dims[i]));
}

static void write_expected(const corpus *c, const char *path) {
    cJSON *o = cJSON_CreateObject(), *attrs = cJSON_AddObjectToObject(o, "attrs");
    cJSON_AddNumberToObject(attrs, "schema_version", 1);
    cJSON_AddStringToObject(attrs, "tokenizer_digest", DIGEST);
    cJSON_AddNumberToObject(attrs, "num_samples", c->n);
    cJSON_AddNumberToObject(attrs, "image_size", SU_IS);
    cJSON_AddNumberToObject(attrs, "video_frames", SU_VF);
    cJSON_AddNumberToObject(attrs, "video_size", SU_VS);
    cJSON_AddNumberToObject(attrs, "audio_clips", SU_AC);
    cJSON_AddNumberToObject(attrs, "audio_frames", SU_AT);
    cJSON_AddNumberToObject(attrs, "audio_mels", SU_AM);
    const char *names[8];
    int n_names = 0;
    int32_t *src = malloc(sizeof(int32_t) * (size_t)c->n);
    int32_t *task = malloc(sizeof(int32_t) * (size_t)c->n),
            *gran = malloc(sizeof(int32_t) * (size_t)c->n);
    for (int i = 0; i < c->n; i++)
        src[i] = source_index(c, i, names, &n_names), task[i] = c->task[i], gran[i] = c->gran[i];
    cJSON_AddItemToObject(o, "sources", cJSON_CreateStringArray(names, n_names));
    int64_t ntok = c->off[c->n];
    json_add_numbers(o, "tokens", c->tok, ntok, J_I32);
    json_add_numbers(o, "loss_mask", c->mask, ntok, J_U8);
    json_add_numbers(o, "offsets", c->off, c->n + 1, J_I64);
    json_add_numbers(o, "sample_image", c->ref[0], c->n, J_I32);
    json_add_numbers(o, "sample_video", c->ref[1], c->n, J_I32);
    json_add_numbers(o, "sample_audio", c->ref[2], c->n, J_I32);
    json_add_numbers(o, "sample_task", task, c->n, J_I32);
    json_add_numbers(o, "sample_granularity", gran, c->n, J_I32);
    json_add_numbers(o, "sample_source", src, c->n, J_I32);
    cJSON_AddItemToObject(o, "sample_meta",
                          cJSON_CreateStringArray((const char *const *)c->meta, c->n));
    json_add_numbers(o, "images", c->img, (int64_t)c->n_img * SU_IMG_ELEMS, J_U8);
    json_add_numbers(o, "image_orig_size", c->img_wh, 2 * c->n_img, J_I32);
    json_add_numbers(o, "videos", c->vid, (int64_t)c->n_vid * SU_VID_ELEMS, J_U8);
    json_add_numbers(o, "video_duration", c->vid_dur, c->n_vid, J_F32);
    json_add_numbers(o, "audios", c->aud, (int64_t)c->n_aud * SU_AUD_ELEMS, J_F32);
    json_add_numbers(o, "audio_duration", c->aud_dur, c->n_aud, J_F32);
    // The zstd level each dataset's filter records (shard.h's defaults; write_corpus asks for
    // none): h5py reads cd_values[0] back as an unsigned int.
    cJSON_AddNumberToObject(o, "zstd_level", DS_SHARD_ZSTD_LEVEL);
    cJSON_AddNumberToObject(o, "zstd_pixel_level", DS_SHARD_ZSTD_PIXEL_LEVEL);
    cJSON *shapes = cJSON_AddObjectToObject(o, "shapes");
    int64_t n1[] = {ntok}, n2[] = {c->n + 1}, n3[] = {c->n};
    json_shape(shapes, "tokens", 1, n1);
    json_shape(shapes, "loss_mask", 1, n1);
    json_shape(shapes, "offsets", 1, n2);
    const char *per[] = {"sample_image", "sample_video",       "sample_audio",
                         "sample_task",  "sample_granularity", "sample_source"};
    for (int i = 0; i < 6; i++) json_shape(shapes, per[i], 1, n3);
    int64_t im[] = {c->n_img, SU_IS, SU_IS, 3}, iw[] = {c->n_img, 2},
            vd[] = {c->n_vid, SU_VF, SU_VS, SU_VS, 3};
    int64_t vn[] = {c->n_vid}, ad[] = {c->n_aud, SU_AC, SU_AT, SU_AM}, an[] = {c->n_aud};
    json_shape(shapes, "images", 4, im);
    json_shape(shapes, "image_orig_size", 2, iw);
    json_shape(shapes, "videos", 5, vd);
    json_shape(shapes, "video_duration", 1, vn);
    json_shape(shapes, "audios", 4, ad);
    json_shape(shapes, "audio_duration", 1, an);
    char *text = cJSON_PrintUnformatted(o);
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
    cJSON_free(text);
    cJSON_Delete(o);
    free(src), free(task), free(gran);
}

// Reads what shard_h5py_check.py wrote through its plugin, with our in-process filter.
static void check_h5py_written(const char *path) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    TL_CHECK(f >= 0, "open %s", path);
    if (f < 0) return;
    hid_t d = H5Dopen2(f, "ints", H5P_DEFAULT), dcpl = H5Dget_create_plist(d);
    unsigned flags, cd[4];
    size_t ncd = 4;
    TL_CHECK(H5Pget_filter_by_id2(dcpl, DS_H5ZSTD_ID, &flags, &ncd, cd, 0, NULL, NULL) >= 0 &&
                 ncd >= 1 && cd[0] == 3,
             "h5py's dataset uses filter 32015 at level 3");
    H5Pclose(dcpl);
    int32_t *ints = malloc(sizeof(int32_t) * 100000);
    bool ok = H5Dread(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, ints) >= 0;
    for (int64_t i = 0; ok && i < 100000; i++) ok = ints[i] == (int32_t)(i * 7919 % 1000003);
    TL_CHECK(ok, "h5py-written ints");
    H5Dclose(d);
    free(ints);
    float halves[4 * 256];
    d = H5Dopen2(f, "halves", H5P_DEFAULT);
    ok = H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, halves) >= 0;
    for (int i = 0; ok && i < 4 * 256; i++) ok = halves[i] == (float)(i - 512) / 64.0f;
    TL_CHECK(ok, "h5py-written float16");
    H5Dclose(d);
    uint8_t px[3 * 16 * 16 * 3];
    d = H5Dopen2(f, "pixels", H5P_DEFAULT);
    ok = H5Dread(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, px) >= 0;
    for (int i = 0; ok && i < (int)sizeof px; i++) ok = px[i] == (uint8_t)(i * 31 % 251);
    TL_CHECK(ok, "h5py-written pixels (level 9)");
    H5Dclose(d);
    H5Fclose(f);
}

static void test_h5py(const corpus *c, const char *shard, const char *text_only) {
    if (system("/usr/bin/python3 -c 'import h5py, numpy' >/dev/null 2>&1") != 0) {
        printf("test_shard: /usr/bin/python3 with h5py and numpy not found: skipping the h5py "
               "cross-check\n");
        return;
    }
    char plugin[600], expected[600], out[600], cmd[3000];
    snprintf(plugin, sizeof plugin, "%s/hdf5-plugins/libh5zstd.so", GROUNDC_BINARY_DIR);
    TL_CHECK(exists(plugin), "plugin built at %s", plugin);
    path_in(expected, sizeof expected, "expected.json");
    path_in(out, sizeof out, "from_h5py.h5");
    write_expected(c, expected);
    unlink(out);
    snprintf(cmd, sizeof cmd,
             "HDF5_PLUGIN_PATH='%s/hdf5-plugins' /usr/bin/python3 '%s/tests/shard_h5py_check.py' "
             "'%s' '%s' '%s' '%s'",
             GROUNDC_BINARY_DIR, GROUNDC_SOURCE_DIR, shard, expected, out, text_only);
    int rc = system(cmd);
    TL_CHECK(rc == 0, "h5py check failed (exit status %d): %s", rc, cmd);
    if (rc == 0) printf("test_shard: h5py read the shard through libh5zstd.so\n");
    check_h5py_written(out);
}

int main(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); // the test's own HDF5 calls report through checks
    snprintf(g_dir, sizeof g_dir, "%s/test_shard_files", GROUNDC_BINARY_DIR);
    mkdir(g_dir, 0755);
    char data_dir[600];
    path_in(data_dir, sizeof data_dir, "dataset");
    mkdir(data_dir, 0755);

    test_filter();

    // Shard 0: every kind of media; tokens span two 64 Ki chunks.
    corpus a, b;
    make_corpus(&a, 1, 47, 5, 3, 4, 3500);
    char p0[700], p1[700], copy[700];
    snprintf(p0, sizeof p0, "%s/shard_00000.h5", data_dir);
    snprintf(p1, sizeof p1, "%s/shard_00001.h5", data_dir);
    ds_shard_info ia, ib, again;
    write_corpus(&a, p0, true, &ia);
    TL_CHECK(a.off[a.n] > 65536, "tokens span chunks (%lld)", (long long)a.off[a.n]);
    char tmp0[720];
    snprintf(tmp0, sizeof tmp0, "%s.tmp", p0);
    TL_CHECK(exists(p0) && !exists(tmp0), "finished shard renamed into place");
    check_read_back(&a, p0, &ia);

    // Byte-identical rewrite: to another path, and over the same path, a second later (HDF5
    // object headers would record creation times with a one-second resolution).
    struct timespec pause = {1, 100000000};
    nanosleep(&pause, NULL);
    path_in(copy, sizeof copy, "rewrite.h5");
    write_corpus(&a, copy, true, &again);
    TL_CHECK(strcmp(again.sha256, ia.sha256) == 0 && same_bytes(copy, p0),
             "identical input gives identical bytes");
    ds_shard_info_free(&again);
    write_corpus(&a, p0, true, &again);
    TL_CHECK(strcmp(again.sha256, ia.sha256) == 0, "rewrite in place: same SHA-256");
    ds_shard_info_free(&again);

    // Shard 1: text only, written with a layout that has no media at all.
    make_corpus(&b, 2, 13, 0, 0, 0, 200);
    write_corpus(&b, p1, false, &ib);
    check_read_back(&b, p1, &ib);
    // A layout with media but rows of only one kind: the others stay empty, sizes 0.
    corpus m;
    make_corpus(&m, 3, 9, 0, 0, 2, 50);
    path_in(copy, sizeof copy, "audio_only.h5");
    ds_shard_info im;
    write_corpus(&m, copy, true, &im);
    check_read_back(&m, copy, &im);
    ds_shard_info_free(&im);
    free_corpus(&m);

    test_manifest(data_dir, &ia, &ib);
    test_h5py(&a, p0, p1);
    test_corruption(p0, &a);
    test_writer_errors(p0);
    test_manifest_errors(data_dir, &ia);

    // Every error path above released its HDF5 objects.
    TL_CHECK(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) == 0, "HDF5 objects left open: %lld",
             (long long)H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL));
    ds_shard_info_free(&ia), ds_shard_info_free(&ib);
    free_corpus(&a), free_corpus(&b);
    return tl_summary("test_shard");
}
