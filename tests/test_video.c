// test_video.c: frame selection, decoding, resizing and the errors of data/video.c, on
// synthetic videos written with ds_video_write. Frame k shows k in base 7 as three grey
// stripes, then a red stripe (channel order) between black side bars that the centre crop
// must cut away; reading back F frames must give exactly the frames floor((i + 0.5) N / F).
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

    test_errors(mp4, mkv);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return tl_summary("test_video");
}
