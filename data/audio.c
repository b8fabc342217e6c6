// audio.c: see audio.h. Decoding with libsndfile, or FFmpeg (libavformat, libavcodec,
// libswresample) for the files libsndfile cannot open; resampling as torchaudio does, the FFT
// with FFTW (single precision); the fbank arithmetic follows torchaudio 0.13's
// compliance/kaldi.py operation by operation, in float like torch.
#include "audio.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sndfile.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fftw3.h>
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/avutil.h>
#include <libavutil/channel_layout.h>
#include <libavutil/samplefmt.h>
#include <libswresample/swresample.h>

#include "autograd/error.h"
#include "data/ffmpeg.h"
#include "data/files.h"

#define PI_D 3.14159265358979323846

// Library messages may carry newlines or trailing dots and spaces; errors here are one line.
static const char *one_line(const char *s, char *buf, size_t n) {
    snprintf(buf, n, "%s", s ? s : "unknown error");
    for (char *p = buf; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t') *p = ' ';
    size_t len = strlen(buf);
    while (len > 0 && (buf[len - 1] == ' ' || buf[len - 1] == '.')) buf[--len] = 0;
    return buf;
}

// ---------------------------------------------------------------------------------------------
// Resampling

// torchaudio's functional.resample with its defaults (0.13: "sinc_interpolation", 2.x:
// "sinc_interp_hann"; lowpass_filter_width 6, rolloff 0.99), which no library offers. With
// the rates divided by their gcd (orig -> new), output sample k = q new + i is the dot
// product of kernel i with the input from q orig - width on (zeros outside [0, n)):
//   kernel_i[m] = sinc(pi t) cos^2(pi t / 12) base / orig,  m = -width .. width + orig - 1,
//   t = clamp((m / orig - i / new) base, -6, 6),  base = 0.99 min(orig, new),
//   width = ceil(6 orig / base).
// Where the clamp bites the window is cos^2(pi / 2) = 0 (torchaudio's float32 cos leaves
// 1.9e-15 of a sinc of 1e-8 there), so each phase keeps only the taps with |t| < 6: about
// 2 width of them, not 2 width + orig. Taps and sums in double; torchaudio's are float32, so
// the two differ by float32 rounding (about 1e-7). Output length ceil(n new / orig).
// Returns NULL with the reason in why (so callers can free their buffers before failing).
static float *resample(const float *x, int64_t n, int from, int to, int64_t *n_out, char *why,
                       size_t why_n) {
    if (from <= 0 || to <= 0) {
        snprintf(why, why_n, "cannot resample %d Hz to %d Hz", from, to);
        return NULL;
    }
    int64_t g = from, h = to;
    while (h) {
        int64_t r = g % h;
        g = h, h = r;
    }
    const int64_t orig = from / g, nw = to / g;
    if (n <= 0 || n > INT64_MAX / nw) {
        snprintf(why, why_n, "cannot resample %lld samples", (long long)n);
        return NULL;
    }
    const double lw = 6.0, base = 0.99 * (double)(orig < nw ? orig : nw);
    const int64_t width = (int64_t)ceil(lw * (double)orig / base);
    const int64_t want = (n * nw + orig - 1) / orig;
    // Phase i's taps m in [lo[i], lo[i] + cnt[i]), at coef[i * stride ...]: |t| < 6 means
    // |m nw - i orig| < R = 6 orig nw / base, within torchaudio's [-width, width + orig).
    const double R = lw * (double)orig * (double)nw / base;
    const int64_t stride = 2 * ((int64_t)ceil(R / (double)nw) + 1) + 1;
    int64_t *lo = malloc((size_t)nw * sizeof *lo);
    int *cnt = malloc((size_t)nw * sizeof *cnt);
    double *coef = malloc((size_t)(nw * stride) * sizeof *coef);
    float *out = malloc((size_t)want * sizeof *out);
    if (!lo || !cnt || !coef || !out) {
        free(lo), free(cnt), free(coef), free(out);
        snprintf(why, why_n, "out of memory resampling %lld samples", (long long)n);
        return NULL;
    }
    for (int64_t i = 0; i < nw; i++) {
        const double c = (double)(i * orig); // the phase's centre, in units of 1 / nw
        int64_t m0 = (int64_t)floor((c - R) / (double)nw), m1 = (int64_t)ceil((c + R) / (double)nw);
        if (m0 < -width) m0 = -width;
        if (m1 > width + orig - 1) m1 = width + orig - 1;
        lo[i] = m0, cnt[i] = 0;
        for (int64_t m = m0; m <= m1; m++) {
            // t from integers, so that it is exactly 0 at the centre (i = m = 0)
            double t = (double)(m * nw - i * orig) / (double)(orig * nw) * base;
            double k = 0.0;
            if (fabs(t) < lw) {
                double w = cos(t * PI_D / lw / 2.0);
                k = (t == 0.0 ? 1.0 : sin(t * PI_D) / (t * PI_D)) * w * w * base / (double)orig;
            }
            coef[i * stride + cnt[i]++] = k;
        }
    }
    for (int64_t k = 0; k < want; k++) {
        const int64_t q = k / nw, i = k % nw, at = q * orig + lo[i];
        const double *c = coef + i * stride;
        double acc = 0.0;
        for (int j = 0; j < cnt[i]; j++) {
            int64_t s = at + j;
            if (s >= 0 && s < n) acc += c[j] * (double)x[s];
        }
        out[k] = (float)acc;
    }
    free(lo), free(cnt), free(coef);
    *n_out = want;
    return out;
}

float *ds_audio_resample(const float *x, int64_t n, int from, int to, int64_t *n_out,
                         const char *what) {
    char why[512];
    float *out = resample(x, n, from, to, n_out, why, sizeof why);
    if (!out) ag_fail("%s: %s", what, why);
    return out;
}

// ---------------------------------------------------------------------------------------------
// Decoding

// The decoded sound so far: channel 0 and, once a frame with more than one channel came, the
// mean of the channels (ds_sound). cap: floats allocated per buffer.
typedef struct {
    float *first, *mix;
    int64_t n, cap;
} pcm_acc;

static void acc_free(pcm_acc *a) {
    free(a->first), free(a->mix);
    a->first = a->mix = NULL;
}

static bool acc_grow(float **p, int64_t cap) {
    float *m = realloc(*p, (size_t)cap * sizeof *m);
    if (!m) return false;
    *p = m;
    return true;
}

// Appends got frames of ch interleaved channels: channel 0 to first, their mean to mix. False
// when out of memory (what was there stays, acc_free frees it).
static bool acc_append(pcm_acc *a, const float *buf, int64_t got, int ch) {
    if (a->n + got > a->cap) {
        int64_t cap = a->cap * 2 > a->n + got ? a->cap * 2 : a->n + got;
        if (!acc_grow(&a->first, cap) || (a->mix && !acc_grow(&a->mix, cap))) return false;
        a->cap = cap;
    }
    if (ch > 1 && !a->mix) {
        // the first frame with several channels (a layout may change mid-stream): the mono
        // frames before it are their own mean
        a->mix = malloc((size_t)a->cap * sizeof *a->mix);
        if (!a->mix) return false;
        memcpy(a->mix, a->first, (size_t)a->n * sizeof *a->mix);
    }
    float *first = a->first + a->n;
    float *mix = a->mix ? a->mix + a->n : NULL;
    for (int64_t i = 0; i < got; i++) {
        first[i] = buf[i * ch];
        if (!mix) continue;
        // sum in channel order, then divide, like torch's mean
        float s = 0.0f;
        for (int c = 0; c < ch; c++) s += buf[i * ch + c];
        mix[i] = ch == 1 ? s : s / (float)ch;
    }
    a->n += got;
    return true;
}

// The whole of an open libsndfile file into *a; closes sf. *rate gets the file's rate.
// A WAV (or AIFF) file cut short: its header names more sound bytes than it holds, which
// libsndfile notes in its log as "data : SIZE (should be HELD)" and reads past silently. A
// placeholder size (0, or near 2^32: recorders that stream without going back) is no promise.
static void check_truncated(const char *path, SNDFILE *sf) {
    char log[8192] = "";
    sf_command(sf, SFC_GET_LOG_INFO, log, sizeof log);
    const char *d = strstr(log, "\ndata : ");
    long long said, held;
    if (!d || sscanf(d, "\ndata : %lld (should be %lld)", &said, &held) != 2) return;
    if (said <= 0 || said >= 0x7ffffff0LL || held >= said) return;
    sf_close(sf);
    ag_fail("%s: cut short: its header says %lld bytes of sound, the file holds %lld (an "
            "interrupted copy?)",
            path, said, held);
}

static void load_sndfile(const char *path, SNDFILE *sf, const SF_INFO *info, pcm_acc *a,
                         int *rate) {
    char why[256];
    check_truncated(path, sf);
    if (info->channels < 1 || info->samplerate < 1) {
        sf_close(sf);
        ag_fail("%s: audio file reports %d channels at %d Hz", path, info->channels,
                info->samplerate);
    }
    const int ch = info->channels;
    const sf_count_t block = 4096;
    float *buf = malloc((size_t)block * (size_t)ch * sizeof *buf);
    // frames is a hint only (some formats cannot know it up front): grow as needed
    memset(a, 0, sizeof *a);
    a->cap = info->frames > 0 && info->frames < ((int64_t)1 << 31) ? info->frames : 65536;
    a->first = malloc((size_t)a->cap * sizeof *a->first);
    if (!buf || !a->first) {
        free(buf), acc_free(a), sf_close(sf);
        ag_fail("%s: out of memory decoding audio", path);
    }
    for (;;) {
        sf_count_t got = sf_readf_float(sf, buf, block);
        if (got <= 0) break;
        if (!acc_append(a, buf, got, ch)) {
            free(buf), acc_free(a), sf_close(sf);
            ag_fail("%s: out of memory decoding audio", path);
        }
    }
    free(buf);
    if (sf_error(sf) != SF_ERR_NO_ERROR) {
        one_line(sf_strerror(sf), why, sizeof why);
        acc_free(a), sf_close(sf);
        ag_fail("%s: cannot decode audio: %s", path, why);
    }
    int rc = sf_close(sf);
    if (rc != 0) {
        acc_free(a);
        ag_fail("%s: closing audio file: %s", path, one_line(sf_error_number(rc), why, sizeof why));
    }
    *rate = info->samplerate;
}

// Ogg Opus: libsndfile decodes at the rate the header gives as the encoder's input, rounded up
// to one Opus decodes at (16 kHz for a 16 kHz source), but the reference decodes at 48 kHz
// (torchaudio's sox backend through libopusfile; FFmpeg too) and resamples from there. So the
// decoder is switched to 48 kHz before anything is read: libopus then gives libopusfile's
// samples, pre-skip and end trimming included. True when sf is ready to read (any other
// format: untouched); false, with sf closed, when libsndfile refuses the switch.
static bool sndfile_opus_48k(const char *path, SNDFILE *sf, SF_INFO *info) {
    if ((info->format & SF_FORMAT_SUBMASK) != SF_FORMAT_OPUS || info->samplerate == 48000)
        return true;
    int rate = 48000;
    // SF_TRUE on success; SF_FALSE or an error number otherwise
    if (sf_command(sf, SFC_SET_ORIGINAL_SAMPLERATE, &rate, sizeof rate) == SF_TRUE &&
        sf_command(sf, SFC_GET_CURRENT_SF_INFO, info, sizeof *info) == 0 &&
        info->samplerate == 48000)
        return true;
    int rc = sf_close(sf);
    if (rc != 0) {
        char why[256];
        ag_fail("%s: closing audio file: %s", path, one_line(sf_error_number(rc), why, sizeof why));
    }
    return false;
}

// FFmpeg, for what libsndfile cannot open (audio.h lists which goes where), read as
// data/ffmpeg.h does it. One open file; every failure frees everything before ag_fail, so
// nothing leaks when a test's error handler jumps back.

typedef struct {
    const char *path;
    ds_ff_input in;          // the file, its audio stream and decoder
    SwrContext *swr;         // frame format -> interleaved float, same layout and rate
    AVChannelLayout swr_lay; // the layout and sample format swr was set up for
    int swr_fmt;
    int rate;        // of the decoded frames; 0 before the first
    float *buf;      // swr's output, [frames][channels]
    int64_t buf_cap; // floats
    pcm_acc acc;     // the sound so far, at rate
} ff_reader;

static void ff_close(ff_reader *r) {
    swr_free(&r->swr);
    av_channel_layout_uninit(&r->swr_lay);
    ds_ff_close(&r->in);
    free(r->buf);
    r->buf = NULL;
}

__attribute__((noreturn, format(printf, 2, 3))) static void ff_fail(ff_reader *r, const char *fmt,
                                                                    ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ff_close(r);
    acc_free(&r->acc);
    ag_fail("%s: %s", r->path, msg);
}

// sf_why: why libsndfile could not open the file (for the message when FFmpeg cannot either).
static void ff_open(ff_reader *r, const char *path, const char *sf_why) {
    char why[512];
    memset(r, 0, sizeof *r);
    r->path = path;
    ds_ff_status st = ds_ff_open(&r->in, path, AVMEDIA_TYPE_AUDIO, why, sizeof why);
    if (st == DS_FF_CANNOT_OPEN)
        ff_fail(r, "cannot open audio file (libsndfile: %s; FFmpeg: %s)", sf_why, why);
    if (st == DS_FF_NO_STREAM)
        ff_fail(r, "no audio stream (FFmpeg reads it as %s)", r->in.fmt->iformat->name);
    if (st != DS_FF_OK || !ds_ff_open_decoder(&r->in, why, sizeof why)) ff_fail(r, "%s", why);
}

// One decoded frame (ds_ff_decode_all's callback): to interleaved float with swresample, then
// onto r->acc.
static void ff_on_frame(void *ctx, AVFrame *f) {
    ff_reader *r = ctx;
    char eb[AV_ERROR_MAX_STRING_SIZE];
    if (f->nb_samples <= 0) return;
    const int ch = f->ch_layout.nb_channels;
    if (ch < 1 || f->sample_rate < 1)
        ff_fail(r, "decoded audio has %d channels at %d Hz", ch, f->sample_rate);
    // the decoder's rate, not the container's: HE-AAC's SBR doubles the stated rate
    if (!r->rate) r->rate = f->sample_rate;
    if (f->sample_rate != r->rate)
        ff_fail(r, "sample rate changes within the stream (%d Hz, then %d Hz)", r->rate,
                f->sample_rate);
    if (!r->swr || f->format != r->swr_fmt ||
        av_channel_layout_compare(&f->ch_layout, &r->swr_lay) != 0) {
        // (re)configured when the format or layout changes (allowed mid-stream). Output
        // layout and rate equal the input's: swresample only converts the sample format
        // (planar or integer to interleaved float) and holds nothing back.
        swr_free(&r->swr);
        av_channel_layout_uninit(&r->swr_lay);
        // (swr_alloc_set_opts2 takes non-const layouts: it gets our copy)
        int ret = av_channel_layout_copy(&r->swr_lay, &f->ch_layout);
        if (ret >= 0)
            ret = swr_alloc_set_opts2(&r->swr, &r->swr_lay, AV_SAMPLE_FMT_FLT, f->sample_rate,
                                      &r->swr_lay, f->format, f->sample_rate, 0, NULL);
        if (ret >= 0) ret = swr_init(r->swr);
        if (ret < 0) {
            const char *name = av_get_sample_fmt_name(f->format);
            ff_fail(r, "cannot convert %s audio with %d channels to float: %s", name ? name : "?",
                    ch, ds_ff_error(ret, eb, sizeof eb));
        }
        r->swr_fmt = f->format;
    }
    int64_t need = (int64_t)f->nb_samples * ch;
    if (need > r->buf_cap) {
        float *b = realloc(r->buf, (size_t)need * sizeof *b);
        if (!b) ff_fail(r, "out of memory decoding audio");
        r->buf = b, r->buf_cap = need;
    }
    uint8_t *out = (uint8_t *)r->buf;
    int got =
        swr_convert(r->swr, &out, f->nb_samples, (const uint8_t **)f->extended_data, f->nb_samples);
    if (got < 0) ff_fail(r, "sample format conversion failed: %s", ds_ff_error(got, eb, sizeof eb));
    if (got != f->nb_samples)
        ff_fail(r, "sample format conversion gave %d of %d samples", got, f->nb_samples);
    if (!acc_append(&r->acc, r->buf, got, ch)) ff_fail(r, "out of memory decoding audio");
}

// The best audio stream of path, decoded whole at its native rate and channel count into *a;
// *rate gets that rate.
static void load_ffmpeg(const char *path, const char *sf_why, pcm_acc *a, int *rate) {
    ds_ff_quiet();
    ff_reader r;
    ff_open(&r, path, sf_why);
    char why[512];
    if (!ds_ff_decode_all(&r.in, ff_on_frame, &r, why, sizeof why)) ff_fail(&r, "%s", why);
    if (r.acc.n == 0)
        ff_fail(&r, "no decodable audio sample%s",
                r.in.skipped ? " (every packet was rejected by the decoder)" : "");
    ff_close(&r);
    *a = r.acc, *rate = r.rate;
}

void ds_sound_free(ds_sound *s) {
    free(s->first), free(s->mix);
    s->first = s->mix = NULL;
    s->n = 0;
}

// Resamples *x[n] in place of the old buffer (freed); on failure frees *x and *other too.
static void resample_in_place(float **x, float **other, int64_t n, int from, int to, int64_t *n_out,
                              const char *path) {
    char msg[512];
    float *r = resample(*x, n, from, to, n_out, msg, sizeof msg);
    free(*x);
    *x = r;
    if (!r) {
        free(*other), *other = NULL;
        ag_fail("%s: %s", path, msg);
    }
}

void ds_audio_load(const char *path, int rate, ds_sound *out) {
    char why[256];
    SF_INFO info;
    memset(&info, 0, sizeof info);
    memset(out, 0, sizeof *out);
    pcm_acc a = {0};
    int native = 0;
    // libsndfile first, FFmpeg only when it cannot open the file (rather than choosing by a
    // probe): everything libsndfile reads keeps libsndfile's samples (Ogg Opus decoded at
    // 48 kHz), and its sf_open is itself the cheapest probe (FFmpeg would claim WAV and FLAC
    // as well).
    ds_require_file(path);
    SNDFILE *sf = sf_open(path, SFM_READ, &info);
    if (sf && sndfile_opus_48k(path, sf, &info)) {
        load_sndfile(path, sf, &info, &a, &native);
    } else if (sf) {
        // an Opus file libsndfile will not decode at 48 kHz (sf is closed): FFmpeg's decoder
        load_ffmpeg(path, "cannot decode Opus at 48 kHz", &a, &native);
    } else {
        one_line(sf_strerror(NULL), why, sizeof why);
        // a file that cannot be opened at all (missing, no permission) is not FFmpeg's
        FILE *f = fopen(path, "rb");
        if (!f) ag_fail("%s: cannot open audio file: %s", path, strerror(errno));
        fclose(f);
        load_ffmpeg(path, why, &a, &native);
    }
    if (a.n == 0) {
        acc_free(&a);
        ag_fail("%s: audio file has no samples", path);
    }
    for (int64_t i = 0; i < a.n; i++)
        if (!isfinite(a.first[i]) || (a.mix && !isfinite(a.mix[i]))) {
            acc_free(&a);
            ag_fail("%s: audio sample %lld is not finite", path, (long long)i);
        }
    int64_t n = a.n;
    if (native != rate) {
        // resampling is linear: the mean of the resampled channels is the resampled mean
        resample_in_place(&a.first, &a.mix, a.n, native, rate, &n, path);
        if (a.mix) resample_in_place(&a.mix, &a.first, a.n, native, rate, &n, path);
    }
    out->first = a.first, out->mix = a.mix, out->n = n, out->file_rate = native;
}

// ---------------------------------------------------------------------------------------------
// Clip sampling (pytorchvideo ConstantClipsPerVideoSampler, exact rational arithmetic)

void ds_audio_clip_bounds(int64_t n, int clip, int64_t *start, int64_t *end) {
    if (clip < 0 || clip >= DS_AUDIO_CLIPS || n < 0)
        ag_fail("ds_audio_clip_bounds: clip %d of %lld samples", clip, (long long)n);
    // In Python: duration = n / 16000 (double); max_start = max(duration - 2, 0) (the
    // float minus Fraction(2) is done in double); then Fraction(max_start) / 3 * clip is exact
    // and int(... * 16000) floors it. With max_start = M * 2^E (M a 53-bit integer), the value
    // is M * clip * 16000 * 2^E / 3 = (M * clip * 125) * 2^(E + 7) / 3, and M * clip * 125 <
    // 2^61 fits an unsigned 64-bit integer, so floor(P / 2^s / 3) = floor(floor(P / 2^s) / 3)
    // gives the exact result without wide arithmetic.
    double duration = (double)n / (double)DS_AUDIO_RATE;
    double max_start = duration - 2.0;
    int64_t s = 0;
    if (max_start > 0.0 && clip > 0) {
        int e2;
        double frac = frexp(max_start, &e2); // max_start = frac * 2^e2, frac in [0.5, 1)
        uint64_t m = (uint64_t)ldexp(frac, 53);
        int shift = -(e2 - 53 + 7); // P * 2^-shift
        uint64_t p = m * (uint64_t)clip * 125u;
        if (shift <= 0) ag_fail("ds_audio_clip_bounds: %lld samples is too long", (long long)n);
        uint64_t q = shift >= 64 ? 0 : p >> shift;
        s = (int64_t)(q / 3u);
    }
    int64_t e = s + DS_AUDIO_CLIP_SAMPLES; // (start + Fraction(2)) * 16000, exact
    *start = s < n ? s : n;
    *end = e < n ? e : n;
}

// ---------------------------------------------------------------------------------------------
// Kaldi fbank

int64_t ds_fbank_frames(int64_t n) {
    return n < DS_FBANK_WINDOW ? 0 : 1 + (n - DS_FBANK_WINDOW) / DS_FBANK_SHIFT;
}

#define FFT_BINS (DS_FBANK_FFT / 2 + 1)

static float hann[DS_FBANK_WINDOW];
static float mel_w[DS_AUDIO_MELS][FFT_BINS];
static int mel_lo[DS_AUDIO_MELS], mel_hi[DS_AUDIO_MELS]; // nonzero weights in [lo, hi)
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

// torchaudio's get_mel_banks and hann_window, in the same float operations (a filter edge
// falling on the other side of an FFT bin would change a log energy a lot).
static void make_tables(void) {
    // torch.hann_window(400, periodic=False): arange * (2 pi / 399), cos, * -0.5, + 0.5
    const float step = (float)(2.0 * PI_D / (double)(DS_FBANK_WINDOW - 1));
    for (int i = 0; i < DS_FBANK_WINDOW; i++) hann[i] = cosf((float)i * step) * -0.5f + 0.5f;

    // Mel edges: Python doubles for the ends and the spacing, then float32 tensors.
    const double low_freq = 20.0, high_freq = 0.5 * DS_AUDIO_RATE; // high_freq=0: Nyquist
    const double mel_low = 1127.0 * log(1.0 + low_freq / 700.0);
    const double mel_high = 1127.0 * log(1.0 + high_freq / 700.0);
    const double delta = (mel_high - mel_low) / (DS_AUDIO_MELS + 1);
    const float fbin = (float)DS_AUDIO_RATE / (float)DS_FBANK_FFT; // 31.25 Hz
    float mel[FFT_BINS - 1]; // the Nyquist bin has no weight (a zero column in torchaudio)
    for (int k = 0; k < FFT_BINS - 1; k++) mel[k] = logf(fbin * (float)k / 700.0f + 1.0f) * 1127.0f;
    for (int b = 0; b < DS_AUDIO_MELS; b++) {
        float left = (float)mel_low + (float)b * (float)delta;
        float center = (float)mel_low + ((float)b + 1.0f) * (float)delta;
        float right = (float)mel_low + ((float)b + 2.0f) * (float)delta;
        mel_lo[b] = FFT_BINS, mel_hi[b] = 0;
        for (int k = 0; k < FFT_BINS; k++) {
            float w = 0.0f;
            if (k < FFT_BINS - 1) {
                float up = (mel[k] - left) / (center - left);
                float down = (right - mel[k]) / (right - center);
                float v = up < down ? up : down;
                w = v > 0.0f ? v : 0.0f;
            }
            mel_w[b][k] = w;
            if (w > 0.0f) {
                if (k < mel_lo[b]) mel_lo[b] = k;
                mel_hi[b] = k + 1;
            }
        }
        if (mel_hi[b] == 0) mel_lo[b] = 0; // an empty filter (there is one): energy 0
    }
}

// FFTW plans, made once per size and shared. Only fftwf_execute* is thread-safe in FFTW, so
// planning happens under a lock; plans use FFTW_ESTIMATE (deterministic, no timing runs) and
// 64-byte aligned arrays, which is what the new-array execute calls below must pass too.
#define MAX_PLANS 4
static pthread_mutex_t plan_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    int size;
    fftwf_plan plan;
} plans[MAX_PLANS];
static int n_plans;

static size_t round64(size_t bytes) {
    return (bytes + 63) / 64 * 64;
}

static fftwf_plan r2c_plan(int size) {
    fftwf_plan p = NULL;
    if (pthread_mutex_lock(&plan_lock) != 0) ag_fail("fbank: cannot lock the FFT planner");
    for (int i = 0; i < n_plans; i++)
        if (plans[i].size == size) p = plans[i].plan;
    if (!p && n_plans < MAX_PLANS) {
        float *in = aligned_alloc(64, round64((size_t)size * sizeof(float)));
        fftwf_complex *out =
            aligned_alloc(64, round64((size_t)(size / 2 + 1) * sizeof(fftwf_complex)));
        if (in && out) p = fftwf_plan_dft_r2c_1d(size, in, out, FFTW_ESTIMATE);
        free(in), free(out);
        if (p) plans[n_plans].size = size, plans[n_plans++].plan = p;
    }
    pthread_mutex_unlock(&plan_lock);
    if (!p) ag_fail("fbank: cannot make an FFTW plan for %d points", size);
    return p;
}

void ds_fbank(const float *x, int64_t n, float *out) {
    int64_t frames = ds_fbank_frames(n);
    if (frames == 0)
        ag_fail("fbank: %lld samples, fewer than one %d-sample window", (long long)n,
                DS_FBANK_WINDOW);
    if (pthread_once(&tables_once, make_tables) != 0) ag_fail("fbank: cannot make its tables");
    fftwf_plan plan = r2c_plan(DS_FBANK_FFT);
    float *buf = aligned_alloc(64, round64(DS_FBANK_FFT * sizeof(float)));
    fftwf_complex *spec = aligned_alloc(64, round64(FFT_BINS * sizeof(fftwf_complex)));
    if (!buf || !spec) {
        free(buf), free(spec);
        ag_fail("fbank: out of memory");
    }
    float power[FFT_BINS];
    const float preemph = 0.97f;
    for (int64_t f = 0; f < frames; f++) {
        const float *src = x + f * DS_FBANK_SHIFT;
        // remove_dc_offset: subtract the frame's mean
        double sum = 0.0;
        for (int j = 0; j < DS_FBANK_WINDOW; j++) sum += src[j];
        const float mean = (float)(sum / DS_FBANK_WINDOW);
        for (int j = 0; j < DS_FBANK_WINDOW; j++) buf[j] = src[j] - mean;
        // pre-emphasis, from the end so each sample uses its unmodified predecessor; the
        // first sample is paired with itself (torchaudio pads with 'replicate')
        for (int j = DS_FBANK_WINDOW - 1; j > 0; j--) buf[j] = buf[j] - preemph * buf[j - 1];
        buf[0] = buf[0] - preemph * buf[0];
        for (int j = 0; j < DS_FBANK_WINDOW; j++) buf[j] *= hann[j];
        for (int j = DS_FBANK_WINDOW; j < DS_FBANK_FFT; j++) buf[j] = 0.0f;
        fftwf_execute_dft_r2c(plan, buf, spec);
        for (int k = 0; k < FFT_BINS; k++)
            power[k] = spec[k][0] * spec[k][0] + spec[k][1] * spec[k][1];
        float *row = out + f * DS_AUDIO_MELS;
        for (int b = 0; b < DS_AUDIO_MELS; b++) {
            double e = 0.0;
            for (int k = mel_lo[b]; k < mel_hi[b]; k++) e += (double)mel_w[b][k] * power[k];
            float ef = (float)e;
            row[b] = logf(ef > FLT_EPSILON ? ef : FLT_EPSILON);
        }
    }
    free(buf), free(spec);
}

// ---------------------------------------------------------------------------------------------
// The ImageBind pipeline

void ds_audio_features(ds_sound *sound, float *out, const char *what) {
    float *x = sound->first, *mix = sound->mix;
    const int64_t n = sound->n;
    if (n < DS_FBANK_WINDOW)
        ag_fail("%s: %lld samples at 16 kHz, shorter than one 25 ms fbank window (%d samples)",
                what, (long long)n, DS_FBANK_WINDOW);
    const int64_t max_frames = ds_fbank_frames(DS_AUDIO_CLIP_SAMPLES);
    float *fb = ag_xmalloc((size_t)max_frames * DS_AUDIO_MELS * sizeof *fb, "audio fbank");
    for (int c = 0; c < DS_AUDIO_CLIPS; c++) {
        int64_t s, e;
        ds_audio_clip_bounds(n, c, &s, &e);
        // waveform -= waveform.mean(), in place on the shared samples of every channel; the
        // mean over all channels is the mean of their per-sample mean (audio.h, 4.)
        const float *all = mix ? mix : x;
        double sum = 0.0;
        for (int64_t i = s; i < e; i++) sum += all[i];
        const float mean = (float)(sum / (double)(e - s));
        for (int64_t i = s; i < e; i++) x[i] -= mean;
        if (mix)
            for (int64_t i = s; i < e; i++) mix[i] -= mean;
        // a clip has 400 .. 32000 samples here, so 1 .. 198 frames: always padded, never
        // cropped (the t < m test below would crop)
        int64_t m = ds_fbank_frames(e - s);
        ds_fbank(x + s, e - s, fb);
        float *dst = out + (int64_t)c * DS_AUDIO_FRAMES * DS_AUDIO_MELS;
        for (int64_t t = 0; t < DS_AUDIO_FRAMES; t++)
            for (int b = 0; b < DS_AUDIO_MELS; b++) {
                // zero padding happens before normalisation, as in ImageBind
                float v = t < m ? fb[t * DS_AUDIO_MELS + b] : 0.0f;
                dst[t * DS_AUDIO_MELS + b] = (v - DS_AUDIO_MEAN) / DS_AUDIO_STD;
            }
    }
    free(fb);
}

void ds_audio_file_features(const char *path, float *out, double *duration) {
    ds_sound sound;
    ds_audio_load(path, DS_AUDIO_RATE, &sound);
    const int64_t n = sound.n;
    if (n < DS_FBANK_WINDOW) {
        ds_sound_free(&sound);
        ag_fail("%s: %lld samples at 16 kHz, shorter than one 25 ms fbank window (%d samples)",
                path, (long long)n, DS_FBANK_WINDOW);
    }
    ds_audio_features(&sound, out, path);
    ds_sound_free(&sound);
    if (duration) *duration = (double)n / DS_AUDIO_RATE;
}

// ---------------------------------------------------------------------------------------------
// Writing

void ds_audio_write(const char *path, const float *samples, int64_t frames, int channels, int rate,
                    ds_audio_encoding enc) {
    char why[256];
    SF_INFO info;
    memset(&info, 0, sizeof info);
    info.samplerate = rate;
    info.channels = channels;
    switch (enc) {
    case DS_AUDIO_WAV_PCM16:
        info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
        break;
    case DS_AUDIO_WAV_FLOAT:
        info.format = SF_FORMAT_WAV | SF_FORMAT_FLOAT;
        break;
    case DS_AUDIO_FLAC_PCM16:
        info.format = SF_FORMAT_FLAC | SF_FORMAT_PCM_16;
        break;
    default:
        ag_fail("%s: unknown audio encoding %d", path, (int)enc);
    }
    if (frames < 0 || channels < 1 || rate < 1 || !sf_format_check(&info))
        ag_fail("%s: cannot write %lld frames x %d channels at %d Hz in this format", path,
                (long long)frames, channels, rate);
    char tmp[PATH_MAX];
    ds_atomic_tmp_path(path, tmp, sizeof tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) ag_fail("%s: cannot create %s: %s", path, tmp, strerror(errno));
    SNDFILE *sf = sf_open_fd(fd, SFM_WRITE, &info, 0);
    if (!sf) {
        one_line(sf_strerror(NULL), why, sizeof why);
        close(fd), unlink(tmp);
        ag_fail("%s: cannot write audio: %s", path, why);
    }
    // without clipping, libsndfile wraps samples beyond full scale around
    sf_command(sf, SFC_SET_CLIPPING, NULL, SF_TRUE);
    sf_count_t wrote = sf_writef_float(sf, samples, frames);
    if (wrote != frames) {
        one_line(sf_strerror(sf), why, sizeof why);
        sf_close(sf), close(fd), unlink(tmp);
        ag_fail("%s: writing audio: %s", path, why);
    }
    int rc = sf_close(sf);
    if (rc != 0) {
        close(fd), unlink(tmp);
        ag_fail("%s: writing audio: %s", path, one_line(sf_error_number(rc), why, sizeof why));
    }
    if (close(fd) != 0) {
        int err = errno;
        unlink(tmp);
        ag_fail("%s: writing audio: %s", path, strerror(err));
    }
    ds_commit_tmp(tmp, path);
}

void ds_audio_write_wav(const char *path, const float *samples, int64_t n, int rate) {
    ds_audio_write(path, samples, n, 1, rate, DS_AUDIO_WAV_PCM16);
}
