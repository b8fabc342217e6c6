// test_video.c: frame selection, decoding, resizing and the errors of data/video.c, on
// synthetic videos written with ds_video_write. Frame k shows k in base 7 as three grey
// stripes, then a red stripe (channel order) between black side bars that the centre crop
// must cut away; reading back F frames must give exactly the frames floor((i + 0.5) N / F).
// Real-world files (H.264 phone video with rotation and full-range BT.709, an mp4 edit list,
// variable frame rate VP9 with a longer audio track) are fixtures in tests/fixtures/video/,
// made by tests/make_video_fixtures.py with the same stripes (no side bars).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/error.h"
#include "data/image.h"
#include "data/video.h"
#include "testlib.h"

enum { W = 96, H = 64, STRIPES = 4, BAR = 8 }; // bars: 8 columns each side, block aligned
static char g_dir[256];

static int level(int digit) {
    return 16 + 36 * digit;
}

static void draw(uint8_t *rgb, int k) {
    int digits[3] = {k % 7, k / 7 % 7, k / 49 % 7};
    for (int y = 0; y < H; y++) {
        int s = y / (H / STRIPES);
        for (int x = 0; x < W; x++) {
            uint8_t *p = rgb + ((size_t)y * W + x) * 3;
            if (x < BAR || x >= W - BAR)
                p[0] = p[1] = p[2] = 0;
            else if (s < 3)
                p[0] = p[1] = p[2] = (uint8_t)level(digits[s]);
            else
                p[0] = 200, p[1] = 40, p[2] = 40;
        }
    }
}

static void write_video(const char *path, int n, double fps) {
    uint8_t *frames = malloc((size_t)n * W * H * 3);
    for (int k = 0; k < n; k++) draw(frames + (size_t)k * W * H * 3, k);
    ds_video_write(path, frames, n, W, H, fps);
    free(frames);
}

// Reads the frame number back from an S x S output frame; *err gets the largest distance of a
// stripe's mean from its nominal colour. Returns -1 when a stripe is unreadable.
static int read_frame_number(const uint8_t *f, int S, double *err) {
    int band = S / STRIPES, k = 0, mult = 1;
    *err = 0;
    for (int s = 0; s < STRIPES; s++) {
        // the middle half of the stripe, away from the bicubic blend at its edges
        int y0 = s * band + band / 4, y1 = s * band + band - band / 4;
        double sum[3] = {0, 0, 0}, worst_px = 0;
        int cnt = 0;
        for (int y = y0; y < y1; y++)
            for (int x = 0; x < S; x++, cnt++)
                for (int c = 0; c < 3; c++) sum[c] += f[((size_t)y * S + x) * 3 + c];
        double mean[3] = {sum[0] / cnt, sum[1] / cnt, sum[2] / cnt};
        if (s < 3) {
            int d = (int)lround((mean[0] - 16) / 36);
            if (d < 0 || d > 6) return -1;
            for (int c = 0; c < 3; c++) *err = fmax(*err, fabs(mean[c] - level(d)));
            // every pixel, including the crop's edge columns, must be near the stripe's level
            for (int y = y0; y < y1; y++)
                for (int x = 0; x < S; x++)
                    worst_px = fmax(worst_px, abs(f[((size_t)y * S + x) * 3] - level(d)));
            *err = fmax(*err, worst_px / 2); // pixels may stray twice as far as means
            k += d * mult;
            mult *= 7;
        } else {
            const double red[3] = {200, 40, 40};
            for (int c = 0; c < 3; c++) *err = fmax(*err, fabs(mean[c] - red[c]));
        }
    }
    return k;
}

static void check_load(const char *label, const char *path, int n, double fps, int F, int S,
                       int want_passes) {
    uint8_t *out = malloc((size_t)F * S * S * 3);
    memset(out, 0xee, (size_t)F * S * S * 3);
    ds_video_info info;
    ds_video_load(path, F, S, out, &info);
    TL_CHECK(info.n_decoded == n, "%s: %lld frames decoded, want %d", label,
             (long long)info.n_decoded, n);
    TL_CHECK(info.passes == want_passes, "%s: %d passes, want %d", label, info.passes, want_passes);
    TL_CHECK(fabs(info.duration - n / fps) <= 1.0 / fps, "%s: duration %.4f s, want %.4f", label,
             info.duration, n / fps);
    TL_CHECK(info.width == W && info.height == H, "%s: size %dx%d", label, info.width, info.height);
    int right = 0;
    double worst = 0;
    for (int i = 0; i < F; i++) {
        double err;
        int k = read_frame_number(out + (size_t)i * S * S * 3, S, &err);
        int64_t want = ds_video_frame_index(i, n, F);
        right += k == want;
        worst = fmax(worst, err);
        TL_CHECK(k == want, "%s: output frame %d shows frame %d, want %lld", label, i, k,
                 (long long)want);
    }
    TL_CHECK(worst <= 10, "%s: colours off by up to %.1f", label, worst);
    printf("  %-18s N=%d F=%-2d S=%-3d: %d/%d frames right, worst colour error %.1f, duration "
           "%.3f s (%.3f), %d pass%s\n",
           label, n, F, S, right, F, worst, info.duration, n / fps, info.passes,
           info.passes > 1 ? "es" : "");
    free(out);
}

// Turns an S x S frame that was rotated clockwise by rot degrees back into the coded
// orientation: coded pixel (cx, cy) went to (S-1-cy, cx) for 90, (S-1-cx, S-1-cy) for 180,
// (cy, S-1-cx) for 270.
static void unrotate(const uint8_t *in, uint8_t *out, int S, int rot) {
    for (int cy = 0; cy < S; cy++)
        for (int cx = 0; cx < S; cx++) {
            int x = cx, y = cy;
            if (rot == 90) x = S - 1 - cy, y = cx;
            if (rot == 180) x = S - 1 - cx, y = S - 1 - cy;
            if (rot == 270) x = cy, y = S - 1 - cx;
            memcpy(out + ((size_t)cy * S + cx) * 3, in + ((size_t)y * S + x) * 3, 3);
        }
}

// Every output frame i, turned back by rot, must show frame first + floor((i + 0.5) N / F)
// with its colours within 10 of the drawn ones.
static void check_frames(const char *label, const uint8_t *out, int F, int S, int64_t N, int first,
                         int rot) {
    uint8_t *up = malloc((size_t)S * S * 3);
    double worst = 0;
    int right = 0;
    for (int i = 0; i < F; i++) {
        double err;
        unrotate(out + (size_t)i * S * S * 3, up, S, rot);
        int k = read_frame_number(up, S, &err);
        int64_t want = first + ds_video_frame_index(i, N, F);
        right += k == want;
        worst = fmax(worst, err);
        TL_CHECK(k == want, "%s: output frame %d shows frame %d, want %lld", label, i, k,
                 (long long)want);
    }
    TL_CHECK(worst <= 10, "%s: colours off by up to %.1f", label, worst);
    free(up);
    printf("  %-18s N=%lld F=%-2d S=%-3d: %d/%d frames right, worst colour error %.1f\n", label,
           (long long)N, F, S, right, F, worst);
}

static void test_frame_index(void) {
    // Exactly F indices, non-decreasing, inside [0, N), equal to floor((i + 0.5) N / F).
    int ok = 1;
    for (int64_t F = 1; F <= 64; F += 63)
        for (int64_t N = 1; N <= 5000; N++) {
            int64_t prev = 0;
            for (int64_t i = 0; i < F; i++) {
                int64_t j = ds_video_frame_index(i, N, F);
                ok &= j >= prev && j < N && j == (int64_t)floor((i + 0.5) * (double)N / F);
                prev = j;
            }
        }
    TL_CHECK(ok, "frame indices");
    TL_CHECK(ds_video_frame_index(0, 300, 8) == 18 && ds_video_frame_index(7, 300, 8) == 281,
             "indices of 8 of 300");
    TL_CHECK(ds_video_frame_index(63, 64, 64) == 63 && ds_video_frame_index(0, 64, 64) == 0,
             "64 of 64 is the identity");
}

static void spit(const char *path, const void *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size)) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
}

static uint8_t *slurp(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    *size = fread(buf, 1, (size_t)n, f);
    fclose(f);
    return buf;
}

static void put_le(uint8_t *p, uint32_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void test_errors(const char *mp4, const char *mkv) {
    char p[512];
    static uint8_t out[4 * 16 * 16 * 3];

    snprintf(p, sizeof p, "%s/missing.mp4", g_dir);
    TL_EXPECT_FAIL_SHOWN(ds_video_load(p, 4, 16, out, NULL), p, "cannot open");

    snprintf(p, sizeof p, "%s/text.mp4", g_dir);
    const char *text = "this is not a video, just a line of text pretending to be one\n";
    spit(p, text, strlen(text));
    TL_EXPECT_FAIL_SHOWN(ds_video_load(p, 4, 16, out, NULL), p);

    snprintf(p, sizeof p, "%s/empty.mp4", g_dir);
    spit(p, "", 0);
    TL_EXPECT_FAIL_SHOWN(ds_video_load(p, 4, 16, out, NULL), p);

    // Audio only: a valid 0.1 s WAV file.
    uint8_t wav[44 + 1600] = {0};
    memcpy(wav, "RIFF", 4), put_le(wav + 4, 36 + 1600, 4), memcpy(wav + 8, "WAVEfmt ", 8);
    put_le(wav + 16, 16, 4), put_le(wav + 20, 1, 2), put_le(wav + 22, 1, 2);
    put_le(wav + 24, 8000, 4), put_le(wav + 28, 16000, 4), put_le(wav + 32, 2, 2);
    put_le(wav + 34, 16, 2), memcpy(wav + 36, "data", 4), put_le(wav + 40, 1600, 4);
    snprintf(p, sizeof p, "%s/sound.wav", g_dir);
    spit(p, wav, sizeof wav);
    TL_EXPECT_FAIL_SHOWN(ds_video_load(p, 4, 16, out, NULL), p, "no video stream");

    // A still image given as a video: said so (it read as a 0.04 s one-frame video).
    static uint8_t px[8 * 8 * 3];
    snprintf(p, sizeof p, "%s/still.png", g_dir);
    ds_image_write_png(p, px, 8, 8);
    TL_EXPECT_FAIL_SHOWN(ds_video_load(p, 4, 16, out, NULL), p, "a still image, not a video");

    size_t got = 0;
    uint8_t *volatile data = slurp(mp4, &got);
    volatile size_t n = got;
    TL_CHECK(data && n > 1000, "cannot read back %s", mp4);
    if (!data) return;
    snprintf(p, sizeof p, "%s/truncated.mp4", g_dir);
    spit(p, data, n / 2);
    TL_EXPECT_FAIL_SHOWN(ds_video_load(p, 4, 16, out, NULL), p);
    // Corrupt index: the mp4 muxer writes the moov box (the index) last; overwrite its end.
    tl_rng rng = {3};
    uint8_t *copy = malloc(n);
    memcpy(copy, data, n);
    for (size_t i = n - 600; i < n; i++) copy[i] = (uint8_t)tl_next(&rng);
    snprintf(p, sizeof p, "%s/corrupt_index.mp4", g_dir);
    spit(p, copy, n);
    free(copy);
    TL_EXPECT_FAIL_SHOWN(ds_video_load(p, 4, 16, out, NULL), p);
    // Corrupt pictures: noise over the first frames' data (just after the 48-byte ftyp and
    // mdat headers). The decoder rejects or conceals them; they are skipped and counted,
    // and frame selection still yields exactly F frames.
    for (size_t i = 64; i < 64 + 2048; i++) data[i] = (uint8_t)tl_next(&rng);
    snprintf(p, sizeof p, "%s/corrupt_frames.mp4", g_dir);
    spit(p, data, n);
    ds_video_info info;
    ds_video_load(p, 4, 16, out, &info);
    printf("  corrupt frames: %lld frames decoded, %lld skipped, %d passes\n",
           (long long)info.n_decoded, (long long)info.skipped, info.passes);
    TL_CHECK(info.n_decoded > 0 && info.n_decoded + info.skipped >= 290,
             "corrupt frames: %lld decoded, %lld skipped", (long long)info.n_decoded,
             (long long)info.skipped);
    free(data);

    // Matroska cut before its first cluster: tracks but no frames at all.
    uint8_t *volatile mk = slurp(mkv, &got);
    size_t cluster = 0;
    for (size_t i = 0; i + 4 <= got && !cluster; i++)
        if (mk[i] == 0x1f && mk[i + 1] == 0x43 && mk[i + 2] == 0xb6 && mk[i + 3] == 0x75)
            cluster = i;
    TL_CHECK(cluster > 0, "no cluster in the mkv");
    snprintf(p, sizeof p, "%s/header_only.mkv", g_dir);
    spit(p, mk, cluster);
    TL_EXPECT_FAIL_SHOWN(ds_video_load(p, 4, 16, out, NULL), p);
    free(mk);

    // Writer errors.
    static uint8_t rgb[2 * 10 * 10 * 3];
    snprintf(p, sizeof p, "%s/odd.mp4", g_dir);
    TL_EXPECT_FAIL_SHOWN(ds_video_write(p, rgb, 1, 9, 10, 25), p, "even");
    snprintf(p, sizeof p, "%s/no_such_dir/x.mp4", g_dir);
    TL_EXPECT_FAIL_SHOWN(ds_video_write(p, rgb, 2, 10, 10, 25), p, "cannot create");
    snprintf(p, sizeof p, "%s/x.unknownext", g_dir);
    TL_EXPECT_FAIL_SHOWN(ds_video_write(p, rgb, 2, 10, 10, 25), p, "container");
}

static void put_be32(uint8_t *p, int32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)((uint32_t)v >> (24 - 8 * i));
}

// Display matrix: an mp4 written by ds_video_write, its track header's matrix set to turn the
// picture clockwise by 90, 180 or 270 degrees, as phones write portrait videos. The frames
// must come out turned that way (decord and the ffmpeg tool do it): turned back, exactly the
// frames of the unrotated file, scaled in the same orientation.
static void test_rotation(void) {
    char path[512], p[600];
    snprintf(path, sizeof path, "%s/rot.mp4", g_dir);
    write_video(path, 30, 25.0);
    enum { F = 8, S = 32 };
    static uint8_t out0[F * S * S * 3], out[F * S * S * 3], up[S * S * 3];
    ds_video_info info;
    ds_video_load(path, F, S, out0, &info);
    TL_CHECK(info.rotation == 0, "no display matrix: rotation %d", info.rotation);
    check_frames("upright", out0, F, S, 30, 0, 0);
    size_t n = 0;
    uint8_t *data = slurp(path, &n);
    TL_CHECK(data != NULL, "cannot read back %s", path);
    if (!data) return;
    // "tkhd", version 0: the 3x3 matrix {a b u, c d v, x y w} starts 44 bytes after the tag,
    // big-endian 16.16 (u, v, w 2.30); FFmpeg writes the identity.
    uint8_t *tkhd = NULL;
    for (size_t i = 0; i + 80 <= n && !tkhd; i++)
        if (!memcmp(data + i, "tkhd", 4)) tkhd = data + i;
    uint8_t identity[36];
    const int32_t id[9] = {1 << 16, 0, 0, 0, 1 << 16, 0, 0, 0, 1 << 30};
    for (int k = 0; k < 9; k++) put_be32(identity + 4 * k, id[k]);
    TL_CHECK(tkhd && tkhd[4] == 0 && !memcmp(tkhd + 44, identity, 36),
             "%s: no version-0 tkhd box with an identity matrix", path);
    if (!tkhd || tkhd[4] != 0) {
        free(data);
        return;
    }
    const int rots[3] = {90, 180, 270};
    // (a, b, c, d) of a clockwise turn by 90, 180, 270 degrees (ISO 14496-12 matrix; ffprobe
    // shows the first as "rotation of -90.00 degrees", as for an iPhone portrait video)
    const int32_t abcd[3][4] = {
        {0, 1 << 16, -(1 << 16), 0}, {-(1 << 16), 0, 0, -(1 << 16)}, {0, -(1 << 16), 1 << 16, 0}};
    for (int t = 0; t < 3; t++) {
        put_be32(tkhd + 44, abcd[t][0]), put_be32(tkhd + 48, abcd[t][1]);
        put_be32(tkhd + 56, abcd[t][2]), put_be32(tkhd + 60, abcd[t][3]);
        snprintf(p, sizeof p, "%s/rot%d.mp4", g_dir, rots[t]);
        spit(p, data, n);
        memset(out, 0xee, sizeof out);
        ds_video_load(p, F, S, out, &info);
        char label[32];
        snprintf(label, sizeof label, "rotated %d", rots[t]);
        TL_CHECK(info.rotation == rots[t], "%s: rotation %d", label, info.rotation);
        TL_CHECK(info.n_decoded == 30 && fabs(info.duration - 1.2) < 1e-6 && info.width == W &&
                     info.height == H,
                 "%s: %lld frames, %.4f s, %dx%d", label, (long long)info.n_decoded, info.duration,
                 info.width, info.height);
        check_frames(label, out, F, S, 30, 0, rots[t]);
        int same = 1;
        for (int i = 0; i < F; i++) {
            unrotate(out + (size_t)i * S * S * 3, up, S, rots[t]);
            same &= !memcmp(up, out0 + (size_t)i * S * S * 3, sizeof up);
        }
        TL_CHECK(same, "%s: turned back, the frames differ from the unrotated file's", label);
    }
    free(data);
}

// A Matroska file cut short (an interrupted download): its header still states the whole
// duration, but the frames that decode span only what is left, and the duration must be
// theirs, or every span normalised by it would point at the wrong frames.
static void test_truncated(const char *mkv, int n_full, double fps) {
    size_t n = 0;
    uint8_t *data = slurp(mkv, &n);
    TL_CHECK(data != NULL, "cannot read back %s", mkv);
    if (!data) return;
    char p[512];
    snprintf(p, sizeof p, "%s/cut_short.mkv", g_dir);
    spit(p, data, n * 6 / 10);
    free(data);
    enum { F = 8, S = 32 };
    static uint8_t out[F * S * S * 3];
    ds_video_info info;
    ds_video_load(p, F, S, out, &info);
    int64_t N = info.n_decoded;
    TL_CHECK(N > n_full / 3 && N < n_full, "cut short: %lld of %d frames", (long long)N, n_full);
    check_frames("mkv cut short", out, F, S, N, 0, 0); // frames 0 .. N-1 are what is left
    // Matroska stores timestamps in milliseconds: N / fps up to one of them.
    TL_CHECK(fabs(info.duration - N / fps) <= 1e-3,
             "cut short: duration %.4f s, want %.4f s (its %lld frames; the header says %.4f)",
             info.duration, N / fps, (long long)N, n_full / fps);
}

// Committed real-format files (tests/make_video_fixtures.py); expectations from how they were
// made: frames drawn with their numbers, their timestamps, the cut.
static void test_fixtures(void) {
    enum { S = 32 };
    static uint8_t out[10 * S * S * 3];
    char p[512];
    ds_video_info info;

    // H.264 High with B-frames, full-range yuvj420p, BT.709, coded 80x48 and turned 90
    // degrees clockwise by its display matrix: 30 frames at 30 fps. The colour check catches
    // a limited-range reading (dark stripes at 0, not 16) and a BT.601 one (red off by 18).
    snprintf(p, sizeof p, "%s/tests/fixtures/video/phone_rot90.mp4", GROUNDC_SOURCE_DIR);
    ds_video_load(p, 10, S, out, &info);
    TL_CHECK(info.n_decoded == 30 && info.rotation == 90 && info.width == 80 && info.height == 48 &&
                 fabs(info.duration - 1.0) < 1e-6,
             "phone_rot90.mp4: %lld frames, rotation %d, %dx%d, %.4f s", (long long)info.n_decoded,
             info.rotation, info.width, info.height, info.duration);
    check_frames("phone (rot 90)", out, 10, S, 30, 0, 90);
    TL_CHECK(info.start == 0.0, "phone_rot90.mp4: starts at %.4f s", info.start);

    // A stream-copy cut at 0.5 s of 40 frames at 25 fps: the file starts at the key frame of
    // frame 10 and its edit list hides frames 10-12, which are not decodable frames (the
    // container counts 33 packets). Frames 13-39 span 27 / 25 s.
    snprintf(p, sizeof p, "%s/tests/fixtures/video/cut_editlist.mp4", GROUNDC_SOURCE_DIR);
    ds_video_load(p, 9, S, out, &info);
    TL_CHECK(info.n_decoded == 27 && fabs(info.duration - 1.08) < 1e-6,
             "cut_editlist.mp4: %lld frames, %.4f s, want 27, 1.08 s", (long long)info.n_decoded,
             info.duration);
    check_frames("mp4 edit list", out, 9, S, 27, 13, 0);
    TL_CHECK(info.start == 0.0, "cut_editlist.mp4: starts at %.4f s (the edit list makes 0)",
             info.start);

    // VP9, variable frame rate (frame k at (k + 2 floor(k / 10)) / 25 s: 40 frames over
    // 1.84 s, where 40 / 25 = 1.6) and a 3 s Opus track (the Matroska duration, 3.008 s).
    snprintf(p, sizeof p, "%s/tests/fixtures/video/vfr_audio.webm", GROUNDC_SOURCE_DIR);
    ds_video_load(p, 8, S, out, &info);
    // Its picks by time are within one frame of those by index: picked by index, as decord.
    TL_CHECK(info.n_decoded == 40 && fabs(info.duration - 1.84) < 1e-6 && !info.by_time,
             "vfr_audio.webm: %lld frames, %.4f s, by time %d; want 40, 1.84 s, by index",
             (long long)info.n_decoded, info.duration, (int)info.by_time);
    check_frames("webm vfr + audio", out, 8, S, 40, 0, 0);
    // The Opus track starts 7 ms before 0 (its pre-skip, in Matroska's milliseconds) and the
    // video 7 ms after: the first frame is 14 ms into the file.
    TL_CHECK(fabs(info.start - 0.014) < 1e-6, "vfr_audio.webm: starts at %.4f s, want 0.014",
             info.start);

    // A strongly variable rate: frames 0-9 at 2 fps, 10-29 at 16 fps (frame k at t_k = k / 2,
    // else 5 + (k - 10) / 16 s; 6.25 s in all). Output frame i is the one on display at
    // (i + 0.5) * 6.25 / 8 s: the last k with t_k <= that time; by index (floor((i + 0.5) 30 /
    // 8)) six of the eight would come from the last 1.25 s.
    snprintf(p, sizeof p, "%s/tests/fixtures/video/vfr_steps.mkv", GROUNDC_SOURCE_DIR);
    ds_video_load(p, 8, S, out, &info);
    TL_CHECK(info.n_decoded == 30 && fabs(info.duration - 6.25) < 2e-3 && info.by_time &&
                 info.passes == 2,
             "vfr_steps.mkv: %lld frames, %.4f s, by time %d, %d passes; want 30, 6.25 s, by "
             "time, 2 passes",
             (long long)info.n_decoded, info.duration, (int)info.by_time, info.passes);
    int right = 0;
    for (int i = 0; i < 8; i++) {
        double t = (i + 0.5) * 6.25 / 8, err;
        int want = 0;
        for (int k = 0; k < 30; k++)
            if ((k < 10 ? k / 2.0 : 5 + (k - 10) / 16.0) <= t) want = k;
        int k = read_frame_number(out + (size_t)i * S * S * 3, S, &err);
        right += k == want && err <= 10;
        TL_CHECK(k == want && err <= 10,
                 "vfr_steps.mkv: output frame %d (%.3f s) shows frame %d, "
                 "want %d (colour error %.1f)",
                 i, t, k, want, err);
    }
    printf("  vfr_steps.mkv: %d/8 frames by time right\n", right);

    // The picture starts 0.6 s after the sound: 20 frames at 25 fps from 0.6 s to 1.4 s.
    snprintf(p, sizeof p, "%s/tests/fixtures/video/late_video.mkv", GROUNDC_SOURCE_DIR);
    ds_video_load(p, 5, S, out, &info);
    TL_CHECK(info.n_decoded == 20 && fabs(info.duration - 0.8) < 1e-6 &&
                 fabs(info.start - 0.6) < 1e-6,
             "late_video.mkv: %lld frames, %.4f s from %.4f s, want 20, 0.8 s from 0.6 s",
             (long long)info.n_decoded, info.duration, info.start);
    check_frames("mkv video after audio", out, 5, S, 20, 0, 0);
}

int main(void) {
    tl_temp_dir(g_dir, sizeof g_dir, "video");
    test_frame_index();

    char mp4[512], mkv[512], avi[512], ts[512], shortv[512];
    snprintf(mp4, sizeof mp4, "%s/count.mp4", g_dir);
    snprintf(mkv, sizeof mkv, "%s/count.mkv", g_dir);
    snprintf(avi, sizeof avi, "%s/count.avi", g_dir);
    snprintf(ts, sizeof ts, "%s/count.ts", g_dir);
    snprintf(shortv, sizeof shortv, "%s/short.mp4", g_dir);
    const int N = 300;
    write_video(mp4, N, 25.0);
    write_video(mkv, N, 30.0);
    write_video(avi, 257, 24.0);
    write_video(ts, 150, 25.0);
    write_video(shortv, 5, 10.0);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", mp4);
    FILE *f = fopen(tmp, "rb");
    TL_CHECK(f == NULL, "temporary file %s left behind", tmp);
    if (f) fclose(f);

    // mp4 and avi state the frame count, Matroska its duration (one pass); MPEG-TS states
    // neither (count, then select: two passes).
    check_load("mp4", mp4, N, 25.0, 8, 32, 1);
    check_load("mp4", mp4, N, 25.0, 64, 224, 1);
    check_load("mkv (no count)", mkv, N, 30.0, 64, 32, 1);
    check_load("ts (no count)", ts, 150, 25.0, 64, 32, 2);
    check_load("avi", avi, 257, 24.0, 8, 48, 1);
    check_load("short (N < F)", shortv, 5, 10.0, 8, 32, 1);
    check_load("one per frame", shortv, 5, 10.0, 5, 32, 1);

    test_rotation();
    test_truncated(mkv, N, 30.0);
    test_fixtures();
    test_errors(mp4, mkv);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return tl_summary("test_video");
}
