// test_audio.c: data/audio.c against torchaudio 0.13 and ImageBind's audio pipeline
// (tests/fixtures/audio, made by tests/make_audio_fixtures.py), its FFmpeg path against the
// ffmpeg tool (tests/make_audio_container_fixtures.py), plus clip sampling edge cases,
// resampling sanity, the writer and the error messages.
//
// Tolerances (float32 on both sides; the FFTs and summation orders differ):
//   fbank on a fixed 16 kHz waveform: max abs error 1e-3 in log mel energy.
//   whole pipeline, 16 kHz files: 1e-3 / 9.138 after normalisation (the same 1e-3 in log
//   mel energy); clip bounds and sample counts exactly.
//   Both with one caveat: bins far below their frame's loudest bin sit at float32's
//   resolution, where torchaudio itself is off from a float64 computation by up to 5e-3, so
//   the 1e-3 holds for bins within 18 nats (78 dB) of their frame's top and 1e-2 for all.
//   Stereo files at 44.1 and 22.05 kHz (channel 0 through the fbank, the clip means over both
//   channels, resampled as torchaudio resamples but in double, where torchaudio works in
//   float32): against the same reference with its resampling done in float64, 1e-3 for bins
//   within 14 nats (60 dB) of their frame's top, at every frequency, and 1e-2 for all
//   (measured 4.3e-5 and 4.2e-3); against the reference itself, the same plus how far the
//   two references are apart (float32 resampling noise: up to 2.5e-3 within 14 nats on the
//   22.05 kHz file, whose DC offsets raise it, and 0.86 in its quietest bins). The clip mean
//   taken over channel 0 alone is off by 2 in the frames that straddle an earlier clip's end;
//   libsamplerate's SINC_MEDIUM, used before, was off by up to 1 above 6 kHz.
// The resampler against torchaudio's formula evaluated directly (every tap, long double) for
//   nine rate pairs: within 1e-6 (float32 rounding).
// Compressed files (*.m4a, *.mp4, *.webm: the FFmpeg path; tone_16k.opus, Ogg Opus: libsndfile
// at 48 kHz; containers.safetensors, made by tests/make_audio_container_fixtures.py):
//   decoded samples (native rate, not resampled; channel 0 and the mean of the channels)
//   against the ffmpeg tool's own decode (ffmpeg -i F -f f32le -acodec pcm_f32le -; for Ogg
//   Opus with libopus as decoder, as libopusfile in torchaudio's sox backend): rate and frame
//   count exactly; samples within 1e-4 absolute on the first and last 256 frames and every
//   48th frame, and whole-file sums within what 1e-4 per sample allows. Measured: 0 (the same
//   libavcodec, or libopus, decodes both). 1e-4 (3 LSB of 16-bit audio) leaves room for
//   FFmpeg's SIMD code rounding differently on another CPU or release; real faults move
//   samples by 0.1 or more (the first packet dropped: 0.17, channel 0 taken for the mean:
//   0.18) or change the frame count (encoder delay not trimmed).
//   features of each lossy file against those of the lossless file it was encoded from:
//   duration exactly ceil(frames * 16000 / rate) / 16000; log mel energy over bins within 6
//   nats of their frame's top and centred below 4 kHz, frames that are not digital silence:
//   mean abs error 0.25, max 4. Measured mean 0.04 / 0.07 / 0.03 / 0.03, max 1.5 / 2.6 / 1.4 /
//   1.5 (AAC 32 kb/s mono, AAC 96 kb/s stereo, Opus 24 kb/s in WebM and in Ogg); half the gain
//   gives a mean of 1.4, a wrong sample rate 5 or more, channel 0 of the stereo file 6.8, a
//   1024-sample shift a max of 6.8 or more.
// Ogg Opus, to 16 kHz: against the reference's own next step, torchaudio's resampler on the
//   48 kHz decode (transcribed in the fixture script): length exactly; every 16th sample and
//   the first and last 256 within 1e-5 absolute, their RMS difference within 1e-6. Measured
//   1.5e-7 and 2.3e-8 (libsamplerate, used before: 0.0022 and 1.6e-4). Decoding at the header's 16
//   kHz, as libsndfile does unasked, gives 0.15 and 0.028 (the SILK frames differ) and a native
//   rate of 16000; FFmpeg's native decoder 0.16 and 0.028, and 0.15 against libopus at 48 kHz.
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/error.h"
#include "autograd/safetensors.h"
#include "data/audio.h"
#include "testlib.h"

#define PI_T 3.14159265358979323846

// Tolerances in log mel energy (see the top of the file). DEPTH: how far below its frame's
// loudest mel bin a bin may lie and still get the tight tolerance (18 nats = 78 dB).
#define DEPTH    18.0
#define TOL_LOUD 1e-3
#define TOL_ALL  1e-2
// resampled files: TOL_LOUD within DEPTH_RESAMPLED nats (60 dB), and all bins (see the top)
#define DEPTH_RESAMPLED 14.0
// FFmpeg path (see the top of the file)
#define TOL_DECODE     1e-4
#define DEPTH_LOSSY    6.0
#define FLOOR_LOSSY    (-10.0)
#define LOSSY_HZ       4000.0
#define TOL_LOSSY_MEAN 0.25
#define TOL_LOSSY_MAX  4.0
// Ogg Opus resampled to 16 kHz against torchaudio's resampler (see the top of the file)
#define TOL_R16_MAX 1e-5
#define TOL_R16_RMS 1e-6

// Max abs error of ours vs want (rows of DS_AUDIO_MELS log energies): over the bins within
// DEPTH of the row's maximum (*hi) and over all bins (*all).
static void row_errors(const float *ours, const float *want, double depth, double *hi,
                       double *all) {
    double top = want[0];
    for (int b = 1; b < DS_AUDIO_MELS; b++)
        if (want[b] > top) top = want[b];
    for (int b = 0; b < DS_AUDIO_MELS; b++) {
        double d = fabs((double)ours[b] - want[b]);
        if (d > *all) *all = d;
        if (want[b] >= top - depth && d > *hi) *hi = d;
    }
}

static ag_st_file *fx;
static char tmpdir[1024];

static const ag_st_entry *entry(const char *name) {
    const ag_st_entry *e = ag_st_find(fx, name);
    if (!e) ag_fail("reference.safetensors: no tensor %s", name);
    return e;
}

static int64_t numel(const ag_st_entry *e) {
    int64_t n = 1;
    for (int i = 0; i < e->ndim; i++) n *= e->shape[i];
    return n;
}

static int64_t i64_at(const ag_st_entry *e, int64_t i) {
    int64_t v;
    memcpy(&v, (const char *)e->data + i * 8, 8);
    return v;
}

static int32_t i32_at(const ag_st_entry *e, int64_t i) {
    int32_t v;
    memcpy(&v, (const char *)e->data + i * 4, 4);
    return v;
}

static float f32_at(const ag_st_entry *e, int64_t i) {
    float v;
    memcpy(&v, (const char *)e->data + i * 4, 4);
    return v;
}

static void fixture_path(char *buf, size_t n, const char *file) {
    char rel[256];
    snprintf(rel, sizeof rel, "tests/fixtures/audio/%s", file);
    tl_source_path(buf, n, rel);
}

static void tmp_path(char *buf, size_t n, const char *file) {
    snprintf(buf, n, "%s/%s", tmpdir, file);
}

// Channel 0 of path at rate (ds_audio_load), its length in *n, the decoded rate in *file_rate
// (may be NULL); the mean of the channels is dropped.
static float *load_first(const char *path, int rate, int64_t *n, int *file_rate) {
    ds_sound s;
    ds_audio_load(path, rate, &s);
    free(s.mix);
    *n = s.n;
    if (file_rate) *file_rate = s.file_rate;
    return s.first;
}

// Mel bin centres, Kaldi's mel scale between 20 Hz and 8 kHz.
static double mel_center_hz(int b) {
    double lo = 1127.0 * log(1.0 + 20.0 / 700.0), hi = 1127.0 * log(1.0 + 8000.0 / 700.0);
    double c = lo + (b + 1) * (hi - lo) / (DS_AUDIO_MELS + 1);
    return 700.0 * (exp(c / 1127.0) - 1.0);
}

// --- the fbank itself ------------------------------------------------------------------------

static void test_fbank_reference(void) {
    const ag_st_entry *w = entry("fbank.wave"), *o = entry("fbank.out");
    int64_t n = numel(w), frames = ds_fbank_frames(n);
    TL_CHECK(o->ndim == 2 && o->shape[0] == frames && o->shape[1] == DS_AUDIO_MELS,
             "fbank frames: ours %lld, reference %lld", (long long)frames, (long long)o->shape[0]);
    float *x = malloc(n * sizeof *x), *y = malloc(frames * DS_AUDIO_MELS * sizeof *y);
    for (int64_t i = 0; i < n; i++) x[i] = f32_at(w, i);
    ds_fbank(x, n, y);
    double err_hi = 0.0, err_all = 0.0;
    float want[DS_AUDIO_MELS];
    for (int64_t f = 0; f < frames; f++) {
        for (int b = 0; b < DS_AUDIO_MELS; b++) want[b] = f32_at(o, f * DS_AUDIO_MELS + b);
        row_errors(y + f * DS_AUDIO_MELS, want, DEPTH, &err_hi, &err_all);
    }
    printf("fbank vs torchaudio: max abs error in log mel %.3g within %g of the frame's top, "
           "%.3g overall\n",
           err_hi, DEPTH, err_all);
    TL_CHECK(err_hi <= TOL_LOUD, "fbank max abs error %g > %g", err_hi, TOL_LOUD);
    TL_CHECK(err_all <= TOL_ALL, "fbank max abs error %g > %g", err_all, TOL_ALL);
    // x is not modified
    TL_CHECK(x[1000] == f32_at(w, 1000), "ds_fbank modified its input");
    free(x), free(y);
}

static void test_fbank_frames(void) {
    TL_CHECK(ds_fbank_frames(0) == 0 && ds_fbank_frames(399) == 0, "frames below one window");
    TL_CHECK(ds_fbank_frames(400) == 1 && ds_fbank_frames(559) == 1, "one frame");
    TL_CHECK(ds_fbank_frames(560) == 2, "two frames");
    TL_CHECK(ds_fbank_frames(32000) == 198, "2 s gives 198 frames");
    float x[399] = {0};
    float y[DS_AUDIO_MELS];
    TL_EXPECT_FAIL(ds_fbank(x, 399, y), "399 samples", "window");
    // silence: every log energy is log(FLT_EPSILON)
    float z[400] = {0};
    ds_fbank(z, 400, y);
    bool all_eps = true;
    for (int b = 0; b < DS_AUDIO_MELS; b++)
        if (fabsf(y[b] - logf(1.1920928955078125e-07f)) > 1e-6f) all_eps = false;
    TL_CHECK(all_eps, "silence should give log(eps) in every mel bin");
}

// --- the whole pipeline ----------------------------------------------------------------------

static void check_pipeline(const char *name, const char *file) {
    char path[1024], key[128];
    fixture_path(path, sizeof path, file);
    snprintf(key, sizeof key, "%s.n", name);
    int64_t ref_n = i64_at(entry(key), 0);
    snprintf(key, sizeof key, "%s.clips", name);
    const ag_st_entry *clips = entry(key);
    snprintf(key, sizeof key, "%s.frames", name);
    const ag_st_entry *frames = entry(key);
    snprintf(key, sizeof key, "%s.out", name);
    const ag_st_entry *ref = entry(key);
    int64_t k = numel(frames);

    int64_t n = 0;
    int file_rate = 0;
    float *x = load_first(path, DS_AUDIO_RATE, &n, &file_rate);
    free(x);
    TL_CHECK(n == ref_n, "%s: %lld samples at 16 kHz, reference %lld", name, (long long)n,
             (long long)ref_n);
    for (int c = 0; c < DS_AUDIO_CLIPS; c++) {
        int64_t s, e;
        ds_audio_clip_bounds(n, c, &s, &e);
        TL_CHECK(s == i64_at(clips, 2 * c) && e == i64_at(clips, 2 * c + 1),
                 "%s clip %d: [%lld, %lld), reference [%lld, %lld)", name, c, (long long)s,
                 (long long)e, (long long)i64_at(clips, 2 * c),
                 (long long)i64_at(clips, 2 * c + 1));
    }

    float *out = malloc(DS_AUDIO_CLIPS * DS_AUDIO_FRAMES * DS_AUDIO_MELS * sizeof *out);
    double duration = 0.0;
    ds_audio_file_features(path, out, &duration);
    TL_CHECK(fabs(duration - (double)ref_n / DS_AUDIO_RATE) < 1e-12, "%s: duration %g", name,
             duration);
    // errors in log mel energy: all bins (max_err), bins within depth of their frame's top
    // (err_hi); against the reference (ref) and, for resampled files, against the reference
    // with its resampling in float64 (ref64), and how far those two are apart (gap_*)
    const bool resampled = file_rate != DS_AUDIO_RATE;
    const double depth = resampled ? DEPTH_RESAMPLED : DEPTH;
    snprintf(key, sizeof key, "%s.out_r64", name);
    const ag_st_entry *ref64 = resampled ? entry(key) : NULL;
    double max_err = 0.0, err_hi = 0.0, max64 = 0.0, hi64 = 0.0, gap_all = 0.0, gap_hi = 0.0;
    bool finite = true;
    for (int c = 0; c < DS_AUDIO_CLIPS; c++)
        for (int64_t j = 0; j < k; j++) {
            int t = i32_at(frames, j);
            const float *row = out + ((int64_t)c * DS_AUDIO_FRAMES + t) * DS_AUDIO_MELS;
            const int64_t at = ((int64_t)c * k + j) * DS_AUDIO_MELS;
            float ours[DS_AUDIO_MELS], want[DS_AUDIO_MELS], want64[DS_AUDIO_MELS];
            for (int b = 0; b < DS_AUDIO_MELS; b++) {
                if (!isfinite(row[b])) finite = false;
                ours[b] = row[b] * DS_AUDIO_STD + DS_AUDIO_MEAN;
                want[b] = f32_at(ref, at + b) * DS_AUDIO_STD + DS_AUDIO_MEAN;
                if (ref64) want64[b] = f32_at(ref64, at + b) * DS_AUDIO_STD + DS_AUDIO_MEAN;
            }
            row_errors(ours, want, depth, &err_hi, &max_err);
            if (!ref64) continue;
            row_errors(ours, want64, depth, &hi64, &max64);
            row_errors(want64, want, depth, &gap_hi, &gap_all);
        }
    TL_CHECK(finite, "%s: non-finite features", name);
    printf("pipeline %s (from %d Hz): max abs error in log mel %.3g within %g of the frame's top, "
           "%.3g overall\n",
           name, file_rate, err_hi, depth, max_err);
    if (!resampled) {
        TL_CHECK(err_hi <= TOL_LOUD, "%s: max abs error %g > %g", name, err_hi, TOL_LOUD);
        TL_CHECK(max_err <= TOL_ALL, "%s: max abs error %g > %g", name, max_err, TOL_ALL);
    } else {
        printf("  against the reference resampled in float64: %.3g within %g, %.3g overall "
               "(the two references differ by %.3g and %.3g)\n",
               hi64, depth, max64, gap_hi, gap_all);
        TL_CHECK(hi64 <= TOL_LOUD && max64 <= TOL_ALL,
                 "%s: max abs error against the float64-resampled reference %g, %g overall "
                 "(tolerance %g, %g)",
                 name, hi64, max64, TOL_LOUD, TOL_ALL);
        TL_CHECK(err_hi <= gap_hi + TOL_LOUD && max_err <= gap_all + TOL_ALL,
                 "%s: max abs error %g, %g overall (tolerance: the references' own difference "
                 "%g, %g, plus %g, %g)",
                 name, err_hi, max_err, gap_hi, gap_all, TOL_LOUD, TOL_ALL);
    }
    free(out);
}

static void test_pipeline_reference(void) {
    check_pipeline("tone_16k", "tone_16k.flac");
    check_pipeline("short_16k", "short_16k.wav");
    check_pipeline("long_16k", "long_16k.flac");
    check_pipeline("stereo_44k", "stereo_44k.flac");
    check_pipeline("stereo_dc_22k", "stereo_dc_22k.flac");
}

// --- clip sampling ---------------------------------------------------------------------------

static void test_clip_table(void) {
    const ag_st_entry *ns = entry("clips.n"), *bounds = entry("clips.bounds");
    int64_t count = numel(ns), bad = 0;
    for (int64_t i = 0; i < count; i++) {
        int64_t n = i64_at(ns, i);
        for (int c = 0; c < DS_AUDIO_CLIPS; c++) {
            int64_t s, e;
            ds_audio_clip_bounds(n, c, &s, &e);
            if (s != i64_at(bounds, i * 6 + 2 * c) || e != i64_at(bounds, i * 6 + 2 * c + 1)) {
                if (bad++ < 5)
                    fprintf(stderr, "n=%lld clip %d: [%lld, %lld), reference [%lld, %lld)\n",
                            (long long)n, c, (long long)s, (long long)e,
                            (long long)i64_at(bounds, i * 6 + 2 * c),
                            (long long)i64_at(bounds, i * 6 + 2 * c + 1));
            }
        }
    }
    TL_CHECK(bad == 0, "%lld of %lld clip bounds differ from pytorchvideo's", (long long)bad,
             (long long)count * DS_AUDIO_CLIPS);
}

static void test_clip_edges(void) {
    int64_t s, e;
    // exactly 2 s: three identical clips over everything
    for (int c = 0; c < DS_AUDIO_CLIPS; c++) {
        ds_audio_clip_bounds(32000, c, &s, &e);
        TL_CHECK(s == 0 && e == 32000, "2 s clip %d: [%lld, %lld)", c, (long long)s, (long long)e);
    }
    // shorter than 2 s: the whole audio, three times
    for (int c = 0; c < DS_AUDIO_CLIPS; c++) {
        ds_audio_clip_bounds(1000, c, &s, &e);
        TL_CHECK(s == 0 && e == 1000, "short clip %d: [%lld, %lld)", c, (long long)s, (long long)e);
    }
    // 10 s: starts at 0, 8/3 s and 16/3 s, floored to samples; the last 8/3 s never seen
    const int64_t want[3] = {0, 42666, 85333};
    for (int c = 0; c < DS_AUDIO_CLIPS; c++) {
        ds_audio_clip_bounds(160000, c, &s, &e);
        TL_CHECK(s == want[c] && e == want[c] + 32000, "10 s clip %d: [%lld, %lld)", c,
                 (long long)s, (long long)e);
    }
    // 2.3 s: (2.3 - 2) is 0.29999999999999982 in double, so clip 1 starts at 1599, not 1600
    ds_audio_clip_bounds(36800, 1, &s, &e);
    TL_CHECK(s == 1599 && e == 33599, "2.3 s clip 1: [%lld, %lld)", (long long)s, (long long)e);
    TL_EXPECT_FAIL(ds_audio_clip_bounds(32000, 3, &s, &e), "clip 3");

    // features of exactly 2 s and of short audio: real frames then padding (0 normalised)
    float *out = malloc(DS_AUDIO_CLIPS * DS_AUDIO_FRAMES * DS_AUDIO_MELS * sizeof *out);
    const float pad = (0.0f - DS_AUDIO_MEAN) / DS_AUDIO_STD;
    const int64_t lengths[2] = {32000, 1000};
    for (int li = 0; li < 2; li++) {
        int64_t n = lengths[li];
        float *x = malloc(n * sizeof *x);
        tl_rng r = {7};
        for (int64_t i = 0; i < n; i++)
            x[i] = 0.1f + 0.3f * sinf(0.2f * (float)i) + 0.05f * (float)tl_normal(&r);
        ds_sound sound = {.first = x, .n = n, .file_rate = DS_AUDIO_RATE};
        ds_audio_features(&sound, out, "synthetic");
        int64_t m = ds_fbank_frames(n);
        bool pad_ok = true, same = true;
        for (int c = 0; c < DS_AUDIO_CLIPS; c++)
            for (int64_t t = 0; t < DS_AUDIO_FRAMES; t++)
                for (int b = 0; b < DS_AUDIO_MELS; b++) {
                    float v = out[((int64_t)c * DS_AUDIO_FRAMES + t) * DS_AUDIO_MELS + b];
                    if (t >= m && v != pad) pad_ok = false;
                    // clips 1 and 2 see the same samples with (almost) no mean left to remove
                    if (fabsf(v - out[t * DS_AUDIO_MELS + b]) > 1e-4f) same = false;
                }
        TL_CHECK(pad_ok, "n=%lld: frames from %lld should be padding", (long long)n, (long long)m);
        TL_CHECK(same, "n=%lld: the three clips should be equal", (long long)n);
        // the mean of the whole audio was subtracted in place, as ImageBind does
        double mean = 0.0;
        for (int64_t i = 0; i < n; i++) mean += x[i];
        TL_CHECK(fabs(mean / n) < 1e-5, "n=%lld: mean %g left after features", (long long)n,
                 mean / n);
        free(x);
    }
    float x[399] = {0};
    ds_sound tiny = {.first = x, .n = 399, .file_rate = DS_AUDIO_RATE};
    TL_EXPECT_FAIL(ds_audio_features(&tiny, out, "tiny.wav"), "tiny.wav", "399 samples");
    free(out);
}

// --- resampling and writing ------------------------------------------------------------------

static int argmax(const float *row) {
    int best = 0;
    for (int b = 1; b < DS_AUDIO_MELS; b++)
        if (row[b] > row[best]) best = b;
    return best;
}

static void test_resample_tone(void) {
    // 1 kHz at 44.1 kHz, 1 s, through a WAV file; compare with the same tone made at 16 kHz
    const int64_t n44 = 44100, n16 = 16000;
    float *x44 = malloc(n44 * sizeof *x44), *x16 = malloc(n16 * sizeof *x16);
    for (int64_t i = 0; i < n44; i++) x44[i] = 0.5f * (float)sin(2 * PI_T * 1000.0 * i / 44100);
    for (int64_t i = 0; i < n16; i++) x16[i] = 0.5f * (float)sin(2 * PI_T * 1000.0 * i / 16000);
    char path[1100];
    tmp_path(path, sizeof path, "tone_1k_44k.wav");
    ds_audio_write_wav(path, x44, n44, 44100);
    int64_t n = 0;
    int rate = 0;
    float *y = load_first(path, DS_AUDIO_RATE, &n, &rate);
    TL_CHECK(rate == 44100 && n == 16000, "resampled length %lld (rate %d), want 16000",
             (long long)n, rate);
    int64_t frames = ds_fbank_frames(n);
    float *fa = malloc(frames * DS_AUDIO_MELS * sizeof *fa);
    float *fb = malloc(frames * DS_AUDIO_MELS * sizeof *fb);
    ds_fbank(y, n, fa);
    ds_fbank(x16, n16, fb);
    // the mel bin whose triangle peaks nearest 1 kHz (FFT bin 32 = 1000 Hz exactly)
    int want = argmax(fb + 10 * DS_AUDIO_MELS);
    TL_CHECK(fabs(mel_center_hz(want) - 1000.0) < 40.0, "1 kHz tone peaks in mel bin %d (%.0f Hz)",
             want, mel_center_hz(want));
    bool peak_ok = true;
    double worst = 0.0;
    for (int64_t f = 2; f < frames - 2; f++) { // the resampler's edges excluded
        if (argmax(fa + f * DS_AUDIO_MELS) != want) peak_ok = false;
        double d = fabs(fa[f * DS_AUDIO_MELS + want] - fb[f * DS_AUDIO_MELS + want]);
        if (d > worst) worst = d;
    }
    TL_CHECK(peak_ok, "resampled 1 kHz tone should peak in mel bin %d in every frame", want);
    TL_CHECK(worst < 0.01, "peak log energy differs by %g after resampling", worst);
    printf("resampled 1 kHz tone: peak in mel bin %d (%.0f Hz), peak log energy within %.2g\n",
           want, mel_center_hz(want), worst);
    free(x44), free(x16), free(y), free(fa), free(fb);
    unlink(path);
}

// torchaudio 0.13's functional.resample written out as it computes it: the kernel of all
// 2 width + orig taps per phase (t clamped to [-6, 6], so the window is 0 beyond), zero
// padding, stride orig, ceil(n new / orig) samples; in long double. ds_audio_resample keeps
// only the taps inside the window, in double: they must agree to float32 rounding.
static float *resample_direct(const float *x, int64_t n, int from, int to, int64_t *n_out) {
    int64_t g = from, h = to;
    while (h) {
        int64_t r = g % h;
        g = h, h = r;
    }
    int64_t orig = from / g, nw = to / g;
    long double base = 0.99L * (orig < nw ? orig : nw);
    int64_t width = (int64_t)ceill(6.0L * orig / base), want = (n * nw + orig - 1) / orig;
    float *y = malloc((size_t)want * sizeof *y);
    for (int64_t k = 0; k < want; k++) {
        int64_t q = k / nw, i = k % nw;
        long double acc = 0;
        for (int64_t j = 0; j < 2 * width + orig; j++) {
            int64_t s = q * orig + j - width; // padded index j is input sample j - width
            if (s < 0 || s >= n) continue;
            long double t = (-(long double)i / nw + (long double)(j - width) / orig) * base;
            if (t < -6) t = -6;
            if (t > 6) t = 6;
            long double w = cosl(t * PI_T / 6 / 2), tp = t * PI_T;
            acc += (tp == 0 ? 1.0L : sinl(tp) / tp) * w * w * base / orig * x[s];
        }
        y[k] = (float)acc;
    }
    *n_out = want;
    return y;
}

static void test_resample_direct(void) {
    enum { N = 3000 };
    static float x[N];
    tl_rng r = {13};
    for (int i = 0; i < N; i++) x[i] = 0.5f * (float)tl_normal(&r);
    // downsampling from the common rates, a prime-ish one (16001: 16000 phases), upsampling
    static const int pairs[][2] = {{44100, 16000}, {48000, 16000}, {22050, 16000},
                                   {11025, 16000}, {8000, 16000},  {32000, 16000},
                                   {96000, 16000}, {16001, 16000}, {16000, 44100}};
    for (size_t p = 0; p < sizeof pairs / sizeof pairs[0]; p++) {
        int64_t n1 = 0, n2 = 0;
        float *a = ds_audio_resample(x, N, pairs[p][0], pairs[p][1], &n1, "noise");
        float *b = resample_direct(x, N, pairs[p][0], pairs[p][1], &n2);
        double worst = 0.0;
        for (int64_t k = 0; k < n1 && n1 == n2; k++) worst = fmax(worst, fabs(a[k] - b[k]));
        TL_CHECK(n1 == n2 && worst < 1e-6,
                 "resample %d -> %d Hz: %lld samples (direct %lld), "
                 "max abs difference %g",
                 pairs[p][0], pairs[p][1], (long long)n1, (long long)n2, worst);
        free(a), free(b);
    }
}

static void test_writer(void) {
    const int64_t frames = 4000;
    float *st = malloc(frames * 2 * sizeof *st);
    for (int64_t i = 0; i < frames; i++) {
        st[2 * i] = 0.5f * sinf(0.01f * (float)i);
        st[2 * i + 1] = (i % 7) * 0.1f - 0.3f;
    }
    const char *names[3] = {"pcm16.wav", "float.wav", "pcm16.flac"};
    const ds_audio_encoding encs[3] = {DS_AUDIO_WAV_PCM16, DS_AUDIO_WAV_FLOAT, DS_AUDIO_FLAC_PCM16};
    for (int k = 0; k < 3; k++) {
        char path[1100];
        tmp_path(path, sizeof path, names[k]);
        ds_audio_write(path, st, frames, 2, 16000, encs[k]);
        ds_sound y;
        ds_audio_load(path, 16000, &y);
        const int64_t n = y.n;
        // channel 0 and the mean of the two
        double worst = 0.0;
        for (int64_t i = 0; i < frames && n == frames && y.mix; i++) {
            double d = fmax(fabs(y.first[i] - st[2 * i]),
                            fabs(y.mix[i] - 0.5 * (st[2 * i] + st[2 * i + 1])));
            if (d > worst) worst = d;
        }
        double tol = encs[k] == DS_AUDIO_WAV_FLOAT ? 1e-7 : 1.5 / 32768;
        TL_CHECK(n == frames && y.mix && worst <= tol,
                 "%s: %lld frames back, error in channel 0 or the mean %g", names[k], (long long)n,
                 worst);
        char tmp[1200];
        snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
        TL_CHECK(access(tmp, F_OK) != 0, "%s: temporary file left behind", names[k]);
        ds_sound_free(&y);
        unlink(path);
    }
    // clipping: full scale and beyond must not wrap around
    float loud[4] = {1.5f, -1.5f, 1.0f, -1.0f};
    char path[1100];
    tmp_path(path, sizeof path, "loud.wav");
    ds_audio_write_wav(path, loud, 4, 16000);
    int64_t n = 0;
    float *y = load_first(path, 16000, &n, NULL);
    TL_CHECK(n == 4 && y[0] > 0.99f && y[1] < -0.99f && y[2] > 0.99f && y[3] < -0.99f,
             "clipped samples wrapped around");
    free(y), unlink(path);
    free(st);
}

// --- errors ----------------------------------------------------------------------------------

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) ag_fail("cannot create %s", path);
    if (n && fwrite(data, 1, n, f) != n) ag_fail("cannot write %s", path);
    fclose(f);
}

static void test_errors(void) {
    float out[1];
    int64_t n;
    char path[1100];
    float *big = malloc(DS_AUDIO_CLIPS * DS_AUDIO_FRAMES * DS_AUDIO_MELS * sizeof *big);

    tmp_path(path, sizeof path, "missing.wav");
    TL_EXPECT_FAIL(load_first(path, 16000, &n, NULL), "missing.wav", "cannot open");
    TL_EXPECT_FAIL(ds_audio_file_features(path, big, NULL), "missing.wav");

    tmp_path(path, sizeof path, "empty.wav");
    write_bytes(path, "", 0);
    TL_EXPECT_FAIL(load_first(path, 16000, &n, NULL), "empty.wav");

    tmp_path(path, sizeof path, "notes.txt");
    const char *text = "This is a text file, not audio. It has several lines.\nSecond line.\n";
    write_bytes(path, text, strlen(text));
    TL_EXPECT_FAIL(load_first(path, 16000, &n, NULL), "notes.txt");

    // a RIFF/WAVE header whose chunks are garbage
    tmp_path(path, sizeof path, "corrupt.wav");
    unsigned char bad[256];
    memcpy(bad, "RIFF\xf8\x00\x00\x00WAVEfmt \x10\x00\x00\x00", 20);
    for (int i = 20; i < 256; i++) bad[i] = (unsigned char)(i * 37 + 11);
    write_bytes(path, bad, sizeof bad);
    TL_EXPECT_FAIL(load_first(path, 16000, &n, NULL), "corrupt.wav");

    // a FLAC file cut short: the decoder loses sync
    char src[1024];
    fixture_path(src, sizeof src, "long_16k.flac");
    FILE *f = fopen(src, "rb");
    unsigned char *head = malloc(30000);
    size_t got = f ? fread(head, 1, 30000, f) : 0;
    if (f) fclose(f);
    tmp_path(path, sizeof path, "cut.flac");
    write_bytes(path, head, got);
    free(head);
    TL_EXPECT_FAIL(load_first(path, 16000, &n, NULL), "cut.flac", "decode");

    // a WAV cut short (an interrupted copy): its header promises twice the sound it holds
    {
        enum { N = 8000 };
        float *tone = malloc(N * sizeof *tone);
        for (int i = 0; i < N; i++) tone[i] = 0.5f * sinf(0.05f * (float)i);
        tmp_path(path, sizeof path, "whole.wav");
        ds_audio_write_wav(path, tone, N, 16000);
        free(tone);
        FILE *wf = fopen(path, "rb");
        unsigned char *bytes = malloc(44 + 2 * N);
        size_t len = wf ? fread(bytes, 1, 44 + 2 * N, wf) : 0;
        if (wf) fclose(wf);
        free(load_first(path, 16000, &n, NULL)); // the whole file reads (an error ends the test)
        TL_CHECK(n == N, "the whole WAV: %lld samples", (long long)n);
        tmp_path(path, sizeof path, "half.wav");
        write_bytes(path, bytes, len / 2);
        free(bytes);
        TL_EXPECT_FAIL(load_first(path, 16000, &n, NULL), "half.wav", "cut short",
                       "header says 16000 bytes of sound");
    }

    // a valid WAV with no samples
    tmp_path(path, sizeof path, "nothing.wav");
    ds_audio_write_wav(path, out, 0, 16000);
    TL_EXPECT_FAIL(load_first(path, 16000, &n, NULL), "nothing.wav", "no samples");

    // audio shorter than one fbank window
    tmp_path(path, sizeof path, "blip.wav");
    float blip[300] = {0.1f};
    ds_audio_write_wav(path, blip, 300, 16000);
    TL_EXPECT_FAIL(ds_audio_file_features(path, big, NULL), "blip.wav", "300 samples");

    // writing where no file can be made
    tmp_path(path, sizeof path, "no/such/dir/x.wav");
    TL_EXPECT_FAIL(ds_audio_write_wav(path, blip, 300, 16000), "x.wav");

    const char *made[] = {"empty.wav", "notes.txt",   "corrupt.wav",
                          "cut.flac",  "nothing.wav", "blip.wav"};
    for (size_t i = 0; i < sizeof made / sizeof *made; i++) {
        tmp_path(path, sizeof path, made[i]);
        unlink(path);
    }
    free(big);
}

// --- FFmpeg: containers libsndfile cannot open --------------------------------------------

static ag_st_file *cx; // containers.safetensors (tests/make_audio_container_fixtures.py)

static const ag_st_entry *centry(const char *name, const char *field) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", name, field);
    const ag_st_entry *e = ag_st_find(cx, key);
    if (!e) ag_fail("containers.safetensors: no tensor %s", key);
    return e;
}

static double f64_at(const ag_st_entry *e, int64_t i) {
    double v;
    memcpy(&v, (const char *)e->data + i * 8, 8);
    return v;
}

// The mean of the channels of frame row r of a [frames, ch] F32 reference tensor (float sum in
// channel order, then / ch), as data/audio.c keeps it (ds_sound.mix).
static float ref_mono(const ag_st_entry *e, int64_t r, int ch) {
    float s = 0.0f;
    for (int c = 0; c < ch; c++) s += f32_at(e, r * ch + c);
    return ch == 1 ? s : s / (float)ch;
}

// Decoded samples against the ffmpeg tool's decode: same native rate, same frame count, every
// stored sample within TOL_DECODE, the whole-file sums within what TOL_DECODE allows.
static void check_container_decode(const char *name, const char *file, int native) {
    char path[1024];
    fixture_path(path, sizeof path, file);
    const int rate = (int)i64_at(centry(name, "rate"), 0);
    const int ch = (int)i64_at(centry(name, "channels"), 0);
    const int64_t frames = i64_at(centry(name, "frames"), 0);
    const int64_t stride = i64_at(centry(name, "stride"), 0);
    const ag_st_entry *head = centry(name, "head"), *tail = centry(name, "tail");
    const ag_st_entry *every = centry(name, "every");
    const int64_t h = head->shape[0], k = every->shape[0];
    // the fixture itself: the rate the decoder is known to give (Opus always decodes at 48 kHz)
    TL_CHECK(rate == native, "%s: reference rate %d, expected %d", name, rate, native);

    // asking for the native rate: no resampling, the decoder's samples as they are
    ds_sound snd;
    ds_audio_load(path, rate, &snd);
    const int64_t n = snd.n;
    const int file_rate = snd.file_rate;
    const float *x = snd.mix ? snd.mix : snd.first; // the mean of the channels
    TL_CHECK((snd.mix != NULL) == (ch > 1), "%s: %d channels, mean of the channels %s", name, ch,
             snd.mix ? "kept" : "missing");
    TL_CHECK(file_rate == rate, "%s: native rate %d Hz, the ffmpeg tool %d Hz", name, file_rate,
             rate);
    TL_CHECK(n == frames, "%s: %lld frames decoded, the ffmpeg tool %lld", name, (long long)n,
             (long long)frames);
    double err = 0.0;
    if (n == frames) { // else samples cannot be lined up (the count check failed)
        // the mean, and channel 0 (the reference's frame's first sample)
        const float *c0 = snd.first;
        for (int64_t i = 0; i < h; i++) {
            err = fmax(err, fabs((double)x[i] - ref_mono(head, i, ch)));
            err = fmax(err, fabs((double)x[n - h + i] - ref_mono(tail, i, ch)));
            err = fmax(err, fabs((double)c0[i] - f32_at(head, i * ch)));
            err = fmax(err, fabs((double)c0[n - h + i] - f32_at(tail, i * ch)));
        }
        for (int64_t j = 0; j < k; j++) {
            err = fmax(err, fabs((double)x[j * stride] - ref_mono(every, j, ch)));
            err = fmax(err, fabs((double)c0[j * stride] - f32_at(every, j * ch)));
        }
        TL_CHECK(err <= TOL_DECODE, "%s: decoded samples differ from the ffmpeg tool's by %g > %g",
                 name, err, TOL_DECODE);
    }
    // whole-file sums: |sum a - sum b| <= n tol, |sum a^2 - sum b^2| <= tol sum (2 |a| + tol)
    double sum = 0.0, sumsq = 0.0, bound_sq = 0.0;
    for (int64_t i = 0; i < n; i++) {
        sum += x[i], sumsq += (double)x[i] * x[i];
        bound_sq += TOL_DECODE * (2.0 * fabs(x[i]) + TOL_DECODE);
    }
    const double d_sum = fabs(sum - f64_at(centry(name, "mono_sum"), 0));
    const double d_sq = fabs(sumsq - f64_at(centry(name, "mono_sumsq"), 0));
    TL_CHECK(d_sum <= (double)n * TOL_DECODE && d_sq <= bound_sq,
             "%s: sum differs by %g (bound %g), sum of squares by %g (bound %g)", name, d_sum,
             (double)n * TOL_DECODE, d_sq, bound_sq);
    printf("decode %s (%d Hz, %d ch, %lld frames): max abs error vs the ffmpeg tool %.3g on %lld "
           "samples, sum of squares off by %.3g\n",
           file, rate, ch, (long long)n, err, (long long)(2 * h + k), d_sq);
    ds_sound_free(&snd);
}

// Features of a lossy file against those of the lossless file it was encoded from (both
// through groundc's pipeline): duration right, log mel close where the codec keeps the signal.
static void check_container_features(const char *name, const char *file, const char *source) {
    char path[1024], src[1024];
    fixture_path(path, sizeof path, file);
    fixture_path(src, sizeof src, source);
    const int rate = (int)i64_at(centry(name, "rate"), 0);
    const int64_t frames = i64_at(centry(name, "frames"), 0);
    const size_t sz = (size_t)DS_AUDIO_CLIPS * DS_AUDIO_FRAMES * DS_AUDIO_MELS;
    float *ours = malloc(sz * sizeof *ours), *want = malloc(sz * sizeof *want);
    double dur = 0.0, dur_src = 0.0;
    ds_audio_file_features(path, ours, &dur);
    ds_audio_file_features(src, want, &dur_src);
    // the decode resampled to 16 kHz: ceil(frames * 16000 / rate) samples (torchaudio's length)
    const int64_t n16 = (frames * DS_AUDIO_RATE + rate - 1) / rate;
    TL_CHECK(dur == (double)n16 / DS_AUDIO_RATE, "%s: duration %.6f s, want %lld / 16000 s", name,
             dur, (long long)n16);
    // codec delay trimmed: the lossy file lasts as long as its source plus at most the
    // encoder's padding to whole 1024-sample AAC frames (Opus in WebM: exactly as long)
    TL_CHECK(dur >= dur_src - 1e-9 && dur < dur_src + 1024.0 / rate + 1e-9,
             "%s: %.6f s, its source %.6f s", name, dur, dur_src);
    // mean and max abs error in log mel over the real frames both have, bins within
    // DEPTH_LOSSY nats of their frame's top and centred below LOSSY_HZ, frames whose top is
    // above FLOOR_LOSSY (the source's digital silence sits at log(FLT_EPSILON) = -15.9, where
    // any codec noise is a large log difference of nothing audible)
    int64_t n_src = llround(dur_src * DS_AUDIO_RATE), n_ours = llround(dur * DS_AUDIO_RATE);
    double sum = 0.0, worst = 0.0;
    int64_t count = 0;
    for (int c = 0; c < DS_AUDIO_CLIPS; c++) {
        int64_t s0, e0, s1, e1;
        ds_audio_clip_bounds(n_src, c, &s0, &e0);
        ds_audio_clip_bounds(n_ours, c, &s1, &e1);
        int64_t m = ds_fbank_frames(e0 - s0), m1 = ds_fbank_frames(e1 - s1);
        if (m1 < m) m = m1;
        for (int64_t t = 0; t < m; t++) {
            const float *a = ours + ((int64_t)c * DS_AUDIO_FRAMES + t) * DS_AUDIO_MELS;
            const float *b = want + ((int64_t)c * DS_AUDIO_FRAMES + t) * DS_AUDIO_MELS;
            double la[DS_AUDIO_MELS], lb[DS_AUDIO_MELS], top = -INFINITY;
            for (int j = 0; j < DS_AUDIO_MELS; j++) {
                la[j] = a[j] * DS_AUDIO_STD + DS_AUDIO_MEAN; // back to log mel energy
                lb[j] = b[j] * DS_AUDIO_STD + DS_AUDIO_MEAN;
                top = fmax(top, lb[j]);
            }
            if (top < FLOOR_LOSSY) continue;
            for (int j = 0; j < DS_AUDIO_MELS; j++) {
                if (lb[j] < top - DEPTH_LOSSY || mel_center_hz(j) >= LOSSY_HZ) continue;
                double d = fabs(la[j] - lb[j]);
                sum += d, worst = fmax(worst, d), count++;
            }
        }
    }
    double mean = count ? sum / (double)count : INFINITY;
    printf("features %s vs %s: log mel error mean %.3g, max %.3g (%lld bins within %g nats of "
           "their frame's top, below %g Hz)\n",
           file, source, mean, worst, (long long)count, DEPTH_LOSSY, LOSSY_HZ);
    TL_CHECK(count > 1000 && mean <= TOL_LOSSY_MEAN && worst <= TOL_LOSSY_MAX,
             "%s: log mel error mean %g (tolerance %g), max %g (tolerance %g) over %lld bins", name,
             mean, TOL_LOSSY_MEAN, worst, TOL_LOSSY_MAX, (long long)count);
    free(ours), free(want);
}

// The file at 16 kHz against the reference's resampling of its native-rate decode
// (<name>.r16_*: torchaudio's resampler): length exactly, samples within TOL_R16_MAX, their RMS
// difference within TOL_R16_RMS.
static void check_resampled(const char *name, const char *file) {
    char path[1024];
    fixture_path(path, sizeof path, file);
    const int64_t frames = i64_at(centry(name, "r16_frames"), 0);
    const int64_t stride = i64_at(centry(name, "r16_stride"), 0);
    const ag_st_entry *head = centry(name, "r16_head"), *tail = centry(name, "r16_tail");
    const ag_st_entry *every = centry(name, "r16_every");
    const int64_t h = head->shape[0], k = every->shape[0];
    int64_t n = 0;
    float *x = load_first(path, DS_AUDIO_RATE, &n, NULL);
    TL_CHECK(n == frames, "%s: %lld samples at 16 kHz, the reference %lld", name, (long long)n,
             (long long)frames);
    double err = 0.0, sq = 0.0;
    if (n == frames) {
        for (int64_t i = 0; i < h; i++) {
            double a = (double)x[i] - f32_at(head, i), b = (double)x[n - h + i] - f32_at(tail, i);
            err = fmax(err, fmax(fabs(a), fabs(b))), sq += a * a + b * b;
        }
        for (int64_t j = 0; j < k; j++) {
            double d = (double)x[j * stride] - f32_at(every, j);
            err = fmax(err, fabs(d)), sq += d * d;
        }
        double rms = sqrt(sq / (double)(2 * h + k));
        printf("resampled %s to 16 kHz: max abs error vs torchaudio's resampler %.3g, RMS %.3g on "
               "%lld samples\n",
               file, err, rms, (long long)(2 * h + k));
        TL_CHECK(err <= TOL_R16_MAX && rms <= TOL_R16_RMS,
                 "%s: 16 kHz samples differ from the reference's by up to %g (tolerance %g), RMS "
                 "%g (tolerance %g)",
                 name, err, TOL_R16_MAX, rms, TOL_R16_RMS);
    }
    free(x);
}

static void test_containers(void) {
    check_container_decode("tone_16k_m4a", "tone_16k.m4a", 16000);
    check_container_decode("stereo_44k_mp4", "stereo_44k.mp4", 44100);
    check_container_decode("tone_16k_webm", "tone_16k.webm", 48000);
    // Ogg Opus whose header says 16 kHz: decoded at 48 kHz, pre-skip dropped (frame count and
    // samples against libopus's decode), then resampled as the reference resamples
    check_container_decode("tone_16k_opus", "tone_16k.opus", 48000);
    check_resampled("tone_16k_opus", "tone_16k.opus");
    check_container_features("tone_16k_m4a", "tone_16k.m4a", "tone_16k.flac");
    check_container_features("stereo_44k_mp4", "stereo_44k.mp4", "stereo_44k.flac");
    check_container_features("tone_16k_webm", "tone_16k.webm", "tone_16k.flac");
    check_container_features("tone_16k_opus", "tone_16k.opus", "tone_16k.flac");
}

// Concurrent decodes of compressed files (the packer decodes in worker threads; FFmpeg, and
// libsndfile for Ogg Opus) give the sequential result.
#define N_THREAD_FILES 4
static const char *const thread_files[N_THREAD_FILES] = {"tone_16k.m4a", "stereo_44k.mp4",
                                                         "tone_16k.webm", "tone_16k.opus"};
static float *thread_out[N_THREAD_FILES];
static int64_t thread_len[N_THREAD_FILES];

static void *decode_thread(void *arg) {
    int i = (int)(intptr_t)arg;
    char path[1024];
    fixture_path(path, sizeof path, thread_files[i]);
    thread_out[i] = load_first(path, DS_AUDIO_RATE, &thread_len[i], NULL);
    return NULL;
}

static void test_container_threads(void) {
    pthread_t th[N_THREAD_FILES];
    for (int i = 0; i < N_THREAD_FILES; i++)
        if (pthread_create(&th[i], NULL, decode_thread, (void *)(intptr_t)i) != 0)
            ag_fail("cannot start a thread");
    for (int i = 0; i < N_THREAD_FILES; i++)
        if (pthread_join(th[i], NULL) != 0) ag_fail("cannot join a thread");
    for (int i = 0; i < N_THREAD_FILES; i++) {
        char path[1024];
        fixture_path(path, sizeof path, thread_files[i]);
        int64_t n = 0;
        float *x = load_first(path, DS_AUDIO_RATE, &n, NULL);
        TL_CHECK(n == thread_len[i] && !memcmp(x, thread_out[i], (size_t)n * sizeof *x),
                 "%s: a decode in a thread differs from the sequential one", thread_files[i]);
        free(x), free(thread_out[i]);
    }
}

static void test_container_errors(void) {
    char path[1100];
    int64_t n;
    float *big = malloc(DS_AUDIO_CLIPS * DS_AUDIO_FRAMES * DS_AUDIO_MELS * sizeof *big);
    // a video with no audio track: FFmpeg opens it, finds no audio stream
    fixture_path(path, sizeof path, "video_only.mp4");
    TL_EXPECT_FAIL_SHOWN(load_first(path, 16000, &n, NULL), "video_only.mp4", "no audio stream");
    TL_EXPECT_FAIL(ds_audio_file_features(path, big, NULL), "video_only.mp4", "no audio stream");
    // bytes neither library recognises: both reasons on one line
    tmp_path(path, sizeof path, "noise.bin");
    unsigned char junk[4096];
    tl_rng r = {11};
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)tl_next(&r);
    write_bytes(path, junk, sizeof junk);
    TL_EXPECT_FAIL_SHOWN(load_first(path, 16000, &n, NULL), "noise.bin", "cannot open audio file",
                         "libsndfile", "FFmpeg");
    unlink(path);
    // an m4a whose AAC payload is destroyed: the container opens, no packet decodes
    char src[1024];
    fixture_path(src, sizeof src, "tone_16k.m4a");
    size_t len = 0;
    char *m4a = tl_slurp(src, &len);
    TL_CHECK(m4a && len > 1000, "cannot read %s", src);
    if (m4a && len > 1000) {
        // the mdat box: 4-byte size, "mdat", payload
        char *mdat = NULL;
        for (size_t i = 4; i + 4 <= len && !mdat; i++)
            if (!memcmp(m4a + i, "mdat", 4)) mdat = m4a + i;
        TL_CHECK(mdat != NULL, "no mdat box in tone_16k.m4a");
        if (mdat) {
            const unsigned char *p = (const unsigned char *)mdat - 4;
            size_t box = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
            size_t at = (size_t)(mdat - m4a) + 4, end = at - 8 + box;
            if (end > len) end = len;
            memset(m4a + at, 0xff, end - at);
            tmp_path(path, sizeof path, "silent_garbage.m4a");
            write_bytes(path, m4a, len);
            TL_EXPECT_FAIL_SHOWN(load_first(path, 16000, &n, NULL), "silent_garbage.m4a",
                                 "no decodable audio");
            unlink(path);
        }
    }
    free(m4a);
    free(big);
}

// --- threads ---------------------------------------------------------------------------------

static float *thread_wave;
static int64_t thread_n;

static void *fbank_thread(void *arg) {
    float *y = arg;
    ds_fbank(thread_wave, thread_n, y);
    return NULL;
}

static void test_threads(void) {
    // plans and tables are made once under a lock; results do not depend on the thread
    const ag_st_entry *w = entry("fbank.wave");
    thread_n = numel(w);
    thread_wave = malloc(thread_n * sizeof *thread_wave);
    for (int64_t i = 0; i < thread_n; i++) thread_wave[i] = f32_at(w, i);
    const int nt = 4;
    int64_t sz = ds_fbank_frames(thread_n) * DS_AUDIO_MELS;
    float *ys = malloc(nt * sz * sizeof *ys);
    pthread_t th[4];
    for (int t = 0; t < nt; t++)
        if (pthread_create(&th[t], NULL, fbank_thread, ys + t * sz) != 0)
            ag_fail("cannot start a thread");
    for (int t = 0; t < nt; t++)
        if (pthread_join(th[t], NULL) != 0) ag_fail("cannot join a thread");
    bool same = true;
    for (int t = 1; t < nt; t++)
        if (memcmp(ys, ys + t * sz, sz * sizeof *ys) != 0) same = false;
    TL_CHECK(same, "fbank results differ between threads");
    free(ys), free(thread_wave);
}

int main(void) {
    char path[1024];
    fixture_path(path, sizeof path, "reference.safetensors");
    fx = ag_st_open(path);
    fixture_path(path, sizeof path, "containers.safetensors");
    cx = ag_st_open(path);
    snprintf(tmpdir, sizeof tmpdir, "%s/test_audio_XXXXXX", GROUNDC_BINARY_DIR);
    if (!mkdtemp(tmpdir)) ag_fail("cannot make a temporary folder %s", tmpdir);

    test_threads(); // first, so that the tables and plans are made concurrently
    test_fbank_reference();
    test_fbank_frames();
    test_pipeline_reference();
    test_clip_table();
    test_clip_edges();
    test_resample_tone();
    test_resample_direct();
    test_writer();
    test_errors();
    test_containers();
    test_container_threads();
    test_container_errors();

    rmdir(tmpdir);
    ag_st_close(cx);
    ag_st_close(fx);
    return tl_summary("test_audio");
}
