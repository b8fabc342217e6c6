// test_loader_checks.c: what the shard layer and the loader refuse or repair in user-made or
// damaged data, on small datasets written with the shard writer (placeholder ids of a made-up
// vocabulary of 100):
//   * ds_sample_check: ids outside the vocabulary, blocks without a media row, rows without a
//     block, a missing start token, a split patch run, a second block, a wrong block size;
//     blocks without start / end tokens; ds_sha256_hex_lower;
//   * the loader with the checks on: each of those fails at the sample, naming the shard, the
//     sample and the stream position (also a damaged first sample, at open); a max_len that
//     cuts through a block cuts before the block's start token instead and drops that row
//     (and the rows of blocks behind the cut), never a half block or a row without its block;
//   * an audio row holding NaN fails, naming the shard and the row (direct chunk reads and
//     through the shard layer); the writer refuses non-finite fbanks and durations <= 0;
//   * a shard may leave out the media datasets of a kind it has no rows of; a sample that
//     refers to such a row names the missing dataset.
#include "testlib.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "autograd/error.h"
#include "data/loader.h"
#include "data/manifest.h"
#include "data/shard.h"
#include "shard_util.h"

static const char *DIGEST = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
static char g_dir[512];

#define VOCAB 100
// start, patch, end of image, video, audio
static const int32_t START[3] = {90, 93, 96}, PATCH[3] = {91, 94, 97}, END[3] = {92, 95, 98};
static const int NTOK[3] = {4, 3, 2}; // patch tokens per block

// One sample as the tests describe it: a string of items, 't' a text token, 'I' / 'V' / 'A' a
// whole block of that kind, 'p' a lone image patch, 's' / 'e' a lone image start / end, 'x'
// an id outside the vocabulary; and its media rows.
typedef struct {
    const char *items;
    int image, video, audio; // 1: the sample has a row of that kind
} spec;

static int64_t expand(const char *items, int32_t *tok) {
    int64_t n = 0;
    for (const char *c = items; *c; c++) {
        int k = *c == 'I' ? 0 : *c == 'V' ? 1 : *c == 'A' ? 2 : -1;
        if (k >= 0) {
            tok[n++] = START[k];
            for (int i = 0; i < NTOK[k]; i++) tok[n++] = PATCH[k];
            tok[n++] = END[k];
        } else {
            int32_t text = 10 + (int32_t)(n % 50);
            tok[n++] = *c == 'p'   ? PATCH[0]
                       : *c == 's' ? START[0]
                       : *c == 'e' ? END[0]
                       : *c == 'x' ? 150
                                   : text;
        }
    }
    return n;
}

typedef struct {
    const spec *samples;
    int n;
} fill_arg;

static void fill(void *arg, int64_t shard, ds_shard_writer *w) {
    (void)shard;
    const fill_arg *f = arg;
    uint8_t img[SU_IMG_ELEMS] = {0}, vid[SU_VID_ELEMS] = {0};
    float aud[SU_AUD_ELEMS];
    for (int i = 0; i < SU_AUD_ELEMS; i++) aud[i] = (float)i / 8.0f;
    for (int i = 0; i < f->n; i++) {
        int32_t tok[128];
        uint8_t mask[128];
        int64_t len = expand(f->samples[i].items, tok);
        for (int64_t t = 0; t < len; t++) mask[t] = t == len - 1; // the last token is the answer
        ds_sample s = {.tokens = tok,
                       .loss_mask = mask,
                       .length = len,
                       .image = -1,
                       .video = -1,
                       .audio = -1,
                       .source = "test",
                       .meta = "{}"};
        img[0] = (uint8_t)i, vid[0] = (uint8_t)i;
        if (f->samples[i].image) s.image = ds_shard_add_image(w, img, 10 + i, 20);
        if (f->samples[i].video) s.video = ds_shard_add_video(w, vid, 1.0f + (float)i);
        if (f->samples[i].audio) s.audio = ds_shard_add_audio(w, aud, 2.0f + (float)i);
        ds_shard_add_sample(w, &s);
    }
}

static void write_set(const char *dir, const spec *samples, int n) {
    mkdir(dir, 0755);
    ds_shard_layout layout = {DIGEST, SU_IS, SU_VF, SU_VS, SU_AC, SU_AT, SU_AM, 0};
    fill_arg f = {samples, n};
    su_write_dataset(dir, DIGEST, &layout, 1, fill, &f, NULL);
}

static ds_loader_dataset g_set;
static ds_loader_config config(const char *dir, int64_t micro, int64_t max_len, bool checks) {
    g_set = (ds_loader_dataset){dir, 1};
    ds_loader_config c = {.datasets = &g_set,
                          .num_datasets = 1,
                          .seed = 3,
                          .micro = micro,
                          .accumulation = 1,
                          .world = 1,
                          .max_len = max_len,
                          .prefetch = 2,
                          .threads = 1};
    if (checks) {
        c.count_media_tokens = true;
        c.vocab = VOCAB;
        c.check_media = true;
        for (int k = 0; k < 3; k++)
            c.media_start_id[k] = START[k], c.media_patch_id[k] = PATCH[k],
            c.media_end_id[k] = END[k];
    }
    return c;
}

static ds_token_rules rules(void) {
    ds_token_rules r = {.vocab = VOCAB, .media = true};
    for (int k = 0; k < 3; k++)
        r.start[k] = START[k], r.patch[k] = PATCH[k], r.end[k] = END[k], r.tokens[k] = NTOK[k];
    return r;
}

// ds_sample_check on items with the media rows given; why (when not NULL) must be in the reason.
static void expect_check(const char *items, int img, int vid, int aud, const char *why) {
    int32_t tok[128];
    int64_t n = expand(items, tok);
    const int32_t media[3] = {img ? 0 : -1, vid ? 0 : -1, aud ? 0 : -1};
    ds_token_rules r = rules();
    char msg[512] = "";
    ds_sample_blocks b;
    bool ok = ds_sample_check(&r, tok, n, media, &b, msg, sizeof msg);
    if (!why)
        TL_CHECK(ok, "%s (rows %d %d %d): accepted (%s)", items, img, vid, aud, msg);
    else
        TL_CHECK(!ok && strstr(msg, why), "%s (rows %d %d %d): refused with \"%s\": \"%s\"", items,
                 img, vid, aud, why, msg);
}

static void test_sample_check(void) {
    expect_check("ttIttt", 1, 0, 0, NULL);
    expect_check("tItAtVt", 1, 1, 1, NULL);
    expect_check("ttt", 0, 0, 0, NULL);
    expect_check("ttxt", 0, 0, 0, "token id 150 at position 2 is outside the vocabulary 0..99");
    expect_check("ttIt", 0, 0, 0, "but no image (sample_image is -1)");
    expect_check("ttpt", 0, 0, 0, "1 image patch tokens (id 91, the first at position 2)");
    expect_check("tttt", 1, 0, 0, "image row 0 but no image patch tokens");
    expect_check("tppppet", 1, 0, 0, "0 image start tokens (id 90) and 1 end tokens");
    expect_check("tIIt", 1, 0, 0, "2 image start tokens");
    expect_check("tsppptpet", 1, 0, 0, "the 4 image patch tokens are not one run (positions 2..6)");
    expect_check("tspppet", 1, 0, 0, "the image block holds 3 patch tokens, expected 4");
    expect_check("tsepppp", 1, 0, 0, "not enclosed by the start token 90 (at 1) and the end");
    // Where it is: tokens [begin, end) of each kind.
    int32_t tok[64];
    int64_t n = expand("tIttA", tok);
    ds_token_rules r = rules();
    ds_sample_blocks b;
    char msg[256];
    const int32_t media[3] = {5, -1, 7};
    bool ok = ds_sample_check(&r, tok, n, media, &b, msg, sizeof msg);
    TL_CHECK(ok && b.begin[0] == 1 && b.end[0] == 7 && b.begin[1] == -1 && b.begin[2] == 9 &&
                 b.end[2] == 13,
             "blocks of tIttA: image %lld..%lld, audio %lld..%lld", (long long)b.begin[0],
             (long long)b.end[0], (long long)b.begin[2], (long long)b.end[2]);
    // Without start and end tokens a block is the patch run; vocab 0 checks no id.
    r.start[0] = r.end[0] = -1;
    r.vocab = 0;
    int32_t bare[] = {500, 91, 91, 91, 91, 3};
    const int32_t one[3] = {0, -1, -1};
    ok = ds_sample_check(&r, bare, 6, one, &b, msg, sizeof msg);
    TL_CHECK(ok && b.begin[0] == 1 && b.end[0] == 5, "a block without start / end tokens");
    char low[65];
    TL_CHECK(
        ds_sha256_hex_lower("0123456789ABCDEF0123456789abcdef0123456789ABCDEF0123456789ABCDEF",
                            low) &&
            strcmp(low, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef") == 0 &&
            !ds_sha256_hex_lower("0123456789ABCDEG0123456789abcdef0123456789ABCDEF0123456789ABCDEF",
                                 low) &&
            !ds_is_sha256_hex("0123456789ABCDEF0123456789abcdef0123456789ABCDEF0123456789ABCDEF"),
        "uppercase hex digests are read (lowercased); writers still write lowercase");
}

// The one batch of all n samples (micro = n, one epoch): per dataset sample, its row in b.
static const ds_batch *whole_epoch(ds_loader *l, int n, int row_of[]) {
    const ds_batch *b = ds_loader_next(l);
    for (int i = 0; i < n; i++) row_of[i] = -1;
    for (int64_t r = 0; r < b->B; r++) row_of[b->sample[r]] = (int)r;
    return b;
}

static void test_cut(void) {
    // tokens: s0 ttt[I 0..]: image block at [3, 9); s1: video block at [10, 15); s2: image at
    // [2, 8), audio at [8, 12); s3 text.
    const spec set[] = {{"tttIttttt", 1, 0, 0},
                        {"ttttttttttVttttt", 0, 1, 0},
                        {"ttIAtttt", 1, 0, 1},
                        {"tttttttt", 0, 0, 0}};
    char dir[600];
    snprintf(dir, sizeof dir, "%s/cut", g_dir);
    write_set(dir, set, 4);
    struct {
        int64_t max_len;
        int len[4];      // kept tokens of s0..s3
        int media[4][3]; // rows kept (image, video, audio)
    } cases[] = {
        {100, {14, 20, 16, 8}, {{1, 0, 0}, {0, 1, 0}, {1, 0, 1}, {0, 0, 0}}},
        // through s0's and s2's image blocks: cut before them, rows dropped; s1's video block
        // lies behind the cut: its row goes too
        {6, {3, 6, 2, 6}, {{0, 0, 0}, {0, 0, 0}, {0, 0, 0}, {0, 0, 0}}},
        // s0's block ends at 9: kept whole; s2's audio block is split: cut at 8, image kept
        {9, {9, 9, 8, 8}, {{1, 0, 0}, {0, 0, 0}, {1, 0, 0}, {0, 0, 0}}},
        {12, {12, 10, 12, 8}, {{1, 0, 0}, {0, 0, 0}, {1, 0, 1}, {0, 0, 0}}},
        {14, {14, 10, 14, 8}, {{1, 0, 0}, {0, 0, 0}, {1, 0, 1}, {0, 0, 0}}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        for (int threads = 0; threads < 2; threads++) {
            ds_loader_config cfg = config(dir, 4, cases[c].max_len, true);
            cfg.threads = threads;
            ds_loader *l = ds_loader_open(&cfg);
            int row[4];
            const ds_batch *b = whole_epoch(l, 4, row);
            int32_t want_tok[128];
            bool ok = true;
            char why[256] = "";
            int64_t ni = 0, nv = 0, na = 0;
            for (int i = 0; i < 4 && ok; i++) {
                int r = row[i];
                int64_t n = expand(set[i].items, want_tok);
                (void)n;
                const int32_t *idx[3] = {b->image_index, b->video_index, b->audio_index};
                if (b->lengths[r] != cases[c].len[i])
                    ok = false, snprintf(why, sizeof why, "sample %d: length %d, want %d", i,
                                         b->lengths[r], cases[c].len[i]);
                for (int k = 0; k < 3 && ok; k++)
                    if ((idx[k][r] >= 0) != (cases[c].media[i][k] == 1))
                        ok = false,
                        snprintf(why, sizeof why, "sample %d: kind %d row %d", i, k, idx[k][r]);
                for (int t = 0; t < b->lengths[r] && ok; t++)
                    if (b->ids[r * b->T + t] != want_tok[t])
                        ok = false, snprintf(why, sizeof why, "sample %d: id at %d", i, t);
                // the last kept token has no target: nothing past the cut is predicted
                if (ok && b->lengths[r] > 0 &&
                    b->targets[r * b->T + b->lengths[r] - 1] != DS_IGNORE_TARGET)
                    ok = false, snprintf(why, sizeof why, "sample %d: target past the cut", i);
                ni += cases[c].media[i][0], nv += cases[c].media[i][1], na += cases[c].media[i][2];
            }
            if (ok && (b->n_images != ni || b->n_videos != nv || b->n_audios != na))
                ok = false, snprintf(why, sizeof why, "rows %lld %lld %lld", (long long)b->n_images,
                                     (long long)b->n_videos, (long long)b->n_audios);
            // the rows kept are the samples' own (pixel 0 holds the sample's number)
            for (int i = 0; i < 4 && ok; i++)
                if (b->image_index[row[i]] >= 0 &&
                    b->images[(size_t)b->image_index[row[i]] * SU_IMG_ELEMS] != (uint8_t)i)
                    ok = false, snprintf(why, sizeof why, "sample %d: another image", i);
            TL_CHECK(ok,
                     "max_len %lld (threads %d): cuts before split blocks, drops their rows: %s",
                     (long long)cases[c].max_len, threads, why);
            ds_loader_close(l);
        }
    }
    // Without the checks the loader knows no blocks: the plain cut, rows kept (train turns
    // the checks on; a split data.max_len is refused before training).
    ds_loader_config cfg = config(dir, 4, 6, false);
    ds_loader *l = ds_loader_open(&cfg);
    int row[4];
    const ds_batch *b = whole_epoch(l, 4, row);
    TL_CHECK(b->lengths[row[0]] == 6 && b->image_index[row[0]] >= 0,
             "checks off: the plain cut at max_len");
    ds_loader_close(l);
}

// Streams dir's n samples (one batch) and expects a failure whose message holds every part.
static void expect_stream_fail(const char *dir, int n, bool direct, const char *a, const char *b,
                               const char *c, const char *d) {
    ds_loader_config cfg = config(dir, n, 100, true);
    cfg.no_direct_chunks = !direct;
    ds_loader *volatile l = NULL; // set before the jump back
    TL_EXPECT_FAIL_SHOWN((l = ds_loader_open(&cfg), ds_loader_next(l)), a, b, c, d);
    ds_loader_close(l);
}

static void test_bad_samples(void) {
    char dir[600];
    struct {
        const char *name;
        spec bad; // replaces sample 2 of a good set
        const char *why;
    } cases[] = {
        {"oov",
         {"tttxtt", 0, 0, 0},
         "sample 2: token id 150 at position 3 is outside the vocabulary"},
        {"no_row",
         {"ttIttt", 0, 0, 0},
         "sample 2: 1 image start tokens (id 90, the first at position 2) but no image"},
        {"no_block", {"tttttt", 1, 0, 0}, "sample 2: image row 1 but no image patch tokens"},
        {"no_start", {"tppppet", 1, 0, 0}, "sample 2: 0 image start tokens"},
        {"split", {"tsppptpet", 1, 0, 0}, "sample 2: the 4 image patch tokens are not one run"},
        {"extra", {"tIIt", 1, 0, 0}, "sample 2: 2 image start tokens"},
        {"short",
         {"tspppet", 1, 0, 0},
         "sample 2: the image block holds 3 patch tokens, expected 4"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        spec set[] = {{"tItt", 1, 0, 0}, {"ttVt", 0, 1, 0}, cases[c].bad, {"tAtt", 0, 0, 1}};
        snprintf(dir, sizeof dir, "%s/bad_%s", g_dir, cases[c].name);
        write_set(dir, set, 4);
        expect_stream_fail(dir, 4, true, "bad_", "/shard_00000.h5: ", cases[c].why,
                           "= sample 2 of shard_00000.h5)");
    }
    // A damaged first image sample fails at open, not as a pack with 3 tokens per image.
    ds_loader_config cfg;
    spec first_split[] = {{"tsppptpet", 1, 0, 0}, {"tItt", 1, 0, 0}};
    snprintf(dir, sizeof dir, "%s/bad_first_split", g_dir);
    write_set(dir, first_split, 2);
    cfg = config(dir, 2, 100, true);
    TL_EXPECT_FAIL_SHOWN(ds_loader_open(&cfg),
                         "bad_first_split/shard_00000.h5: sample 0: ", "not one run");
}

// Makes dir's manifest entry of its one shard (at path) record the shard's new size and
// SHA-256, so that only the damage a test made is wrong.
static void reseal_manifest(const char *dir, const char *path) {
    ds_manifest m;
    ds_manifest_read(&m, dir);
    ds_file_sha256(path, m.shards[0].sha256, &m.shards[0].bytes);
    ds_manifest_write(&m, dir);
    ds_manifest_free(&m);
}

// Overwrites element 0 of audio row `row` in dir's shard with the float16 bits `bits`, and the
// manifest's size and SHA-256 of it.
static void poke_audio(const char *dir, int row, uint16_t bits) {
    char path[700];
    snprintf(path, sizeof path, "%s/shard_00000.h5", dir);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "audios", H5P_DEFAULT);
    hid_t t = H5Dget_type(d); // the file's float16: written as stored, no conversion
    hid_t fs = H5Dget_space(d);
    hsize_t start[4] = {(hsize_t)row, 0, 0, 0}, count[4] = {1, 1, 1, 1};
    hid_t ms = H5Screate_simple(4, count, NULL);
    bool ok = f >= 0 && d >= 0 &&
              H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) >= 0 &&
              H5Dwrite(d, t, ms, fs, H5P_DEFAULT, &bits) >= 0;
    H5Sclose(ms), H5Sclose(fs), H5Tclose(t), H5Dclose(d), H5Fclose(f);
    TL_CHECK(ok, "write float16 0x%04x into %s", bits, path);
    reseal_manifest(dir, path);
}

static void test_audio_nan(void) {
    const spec set[] = {{"tAtt", 0, 0, 1}, {"ttAt", 0, 0, 1}};
    const uint16_t bad[2] = {0x7e00, 0xfc00}; // NaN, -inf
    const char *name[2] = {"NaN", "-inf"};
    for (int v = 0; v < 2; v++) {
        char dir[600];
        snprintf(dir, sizeof dir, "%s/audio_%d", g_dir, v);
        write_set(dir, set, 2);
        poke_audio(dir, 1, bad[v]);
        for (int direct = 0; direct < 2; direct++)
            expect_stream_fail(
                dir, 2, direct,
                "/shard_00000.h5: dataset 'audios': row 1: element 0 (clip 0, frame 0, mel 0) is",
                name[v], "fbank values must be finite", "(stream position 1: dataset 0 sample 1");
    }
    // The writer refuses what the reader would: non-finite fbanks (also by float16 overflow),
    // durations that are not positive numbers.
    char path[700];
    snprintf(path, sizeof path, "%s/writer.h5", g_dir);
    ds_shard_layout layout = {DIGEST, SU_IS, SU_VF, SU_VS, SU_AC, SU_AT, SU_AM, 0};
    float aud[SU_AUD_ELEMS] = {0};
    uint8_t vid[SU_VID_ELEMS] = {0};
    aud[3] = 1e6f;
    TL_EXPECT_FAIL_SHOWN(
        ds_shard_add_audio(ds_shard_create(path, &layout), aud, 1.0f),
        "writer.h5.tmp: dataset 'audios': row 0: element 3 is 1e+06 (+inf as float16)");
    aud[3] = NAN;
    TL_EXPECT_FAIL(ds_shard_add_audio(ds_shard_create(path, &layout), aud, 1.0f),
                   "element 3 is nan");
    aud[3] = 0;
    TL_EXPECT_FAIL(ds_shard_add_audio(ds_shard_create(path, &layout), aud, 0.0f),
                   "dataset 'audio_duration': row 0: duration 0 is not a positive number");
    TL_EXPECT_FAIL(ds_shard_add_video(ds_shard_create(path, &layout), vid, NAN),
                   "dataset 'video_duration': row 0: duration nan is not a positive number");
    TL_EXPECT_FAIL(ds_shard_add_video(ds_shard_create(path, &layout), vid, -1.0f),
                   "duration -1 is not a positive number");
    TL_CHECK(access(path, F_OK) != 0, "nothing left behind by the refused writers");
}

// Removes datasets from dir's shard and fixes its manifest entry (size, SHA-256).
static void remove_datasets(const char *dir, const char *const *names, int n) {
    char path[700];
    snprintf(path, sizeof path, "%s/shard_00000.h5", dir);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    bool ok = f >= 0;
    for (int i = 0; i < n && ok; i++) ok = H5Ldelete(f, names[i], H5P_DEFAULT) >= 0;
    if (f >= 0) H5Fclose(f);
    TL_CHECK(ok, "remove datasets from %s", path);
    reseal_manifest(dir, path);
}

static void test_absent_media(void) {
    // No videos and no audios: their datasets left out (h5py writers do), images kept.
    const spec set[] = {{"tItt", 1, 0, 0}, {"tttt", 0, 0, 0}};
    char dir[600], path[700];
    snprintf(dir, sizeof dir, "%s/absent", g_dir);
    write_set(dir, set, 2);
    const char *gone[] = {"videos", "video_duration", "audios", "audio_duration"};
    remove_datasets(dir, gone, 4);
    snprintf(path, sizeof path, "%s/shard_00000.h5", dir);
    ds_shard *s = ds_shard_open(path);
    const ds_shard_header *h = ds_shard_get_header(s);
    TL_CHECK(h->num_images == 1 && h->num_videos == 0 && h->num_audios == 0,
             "media datasets of a kind without rows may be absent");
    ds_shard_close(s);
    ds_loader_config cfg = config(dir, 2, 100, true);
    ds_loader *l = ds_loader_open(&cfg);
    const ds_batch *b = ds_loader_next(l);
    TL_CHECK(b->n_images == 1 && b->n_videos == 0 && b->n_audios == 0, "and the loader reads it");
    ds_loader_close(l);
    // A sample that refers to a row of a left-out kind names the missing dataset.
    snprintf(dir, sizeof dir, "%s/absent_ref", g_dir);
    write_set(dir, set, 2);
    const char *images[] = {"images", "image_orig_size"};
    remove_datasets(dir, images, 2);
    snprintf(path, sizeof path, "%s/shard_00000.h5", dir);
    TL_EXPECT_FAIL_SHOWN(ds_shard_open(path),
                         "absent_ref/shard_00000.h5: dataset 'sample_image': sample 0: image row 0 "
                         "out of range (0 rows: the shard has no 'images' dataset)");
    // Rows without their per-row metadata are still an error.
    snprintf(dir, sizeof dir, "%s/absent_meta", g_dir);
    write_set(dir, set, 2);
    const char *sizes[] = {"image_orig_size"};
    remove_datasets(dir, sizes, 1);
    snprintf(path, sizeof path, "%s/shard_00000.h5", dir);
    TL_EXPECT_FAIL_SHOWN(ds_shard_open(path), "dataset 'image_orig_size' missing");
}

int main(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    snprintf(g_dir, sizeof g_dir, "%s/test_loader_checks_files", GROUNDC_BINARY_DIR);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    mkdir(g_dir, 0755);
    test_sample_check();
    test_cut();
    test_bad_samples();
    test_audio_nan();
    test_absent_media();
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return tl_summary("test_loader_checks");
}
