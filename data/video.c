// video.c: see video.h.
#include "video.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/avutil.h>
#include <libavutil/display.h>
#include <libavutil/imgutils.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>

#include "autograd/error.h"
#include "data/ffmpeg.h"
#include "data/files.h"

// ---------------------------------------------------------------------------------------
// Reader. One open file; every failure closes it before ag_fail so that nothing leaks when a
// test's error handler jumps back.

typedef struct {
    const char *path;
    ds_ff_input in; // the file, its video stream and decoder
    struct SwsContext *sws;
    uint8_t *scaled; // RGB24 frame with its shortest side at S, before the centre crop
    int scaled_w, scaled_h, scaled_ls;
    int rotation; // clockwise degrees (0, 90, 180, 270) the display matrix asks for
    // selection of the current pass: pick[i] when given (owned), else ds_video_frame_index
    int64_t N; // frame count the indices are computed from; 0 = count only
    int64_t *pick;
    int F, S;
    uint8_t *out;
    int next;        // next output slot to fill
    int64_t decoded; // frames received from the decoder this pass
    int first_w, first_h;
    // first and last timestamps of this pass's frames and the last one's duration (stream
    // time base), for the duration
    int64_t ts_first, ts_last, dur_last;
    int ts_unusable; // a frame without a timestamp, or one earlier than its predecessor
    int64_t *ts;     // every frame's timestamp while usable (n_ts of them, room for cap_ts)
    int64_t n_ts, cap_ts;
} vreader;

static void vr_close(vreader *r) {
    sws_freeContext(r->sws);
    r->sws = NULL;
    av_freep(&r->scaled);
    free(r->pick);
    free(r->ts);
    r->pick = r->ts = NULL;
    ds_ff_close(&r->in);
}

__attribute__((noreturn, format(printf, 2, 3))) static void vr_fail(vreader *r, const char *fmt,
                                                                    ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    vr_close(r);
    ag_fail("%s: %s", r->path, msg);
}

// Clockwise rotation (0, 90, 180, 270) that the stream's display matrix (else its legacy
// "rotate" tag) asks players to apply. decord and the ffmpeg tool apply it, so a phone's
// portrait video comes out upright; other angles are ignored, as decord does.
static int stream_rotation(const AVStream *st) {
    const int32_t *m = NULL;
#if LIBAVCODEC_VERSION_INT >= AV_VERSION_INT(60, 31, 102)
    const AVPacketSideData *sd = av_packet_side_data_get(
        st->codecpar->coded_side_data, st->codecpar->nb_coded_side_data, AV_PKT_DATA_DISPLAYMATRIX);
    if (sd && sd->size >= 9 * sizeof(int32_t)) m = (const int32_t *)sd->data;
#else
    size_t size = 0;
    const uint8_t *sd = av_stream_get_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, &size);
    if (sd && size >= 9 * sizeof(int32_t)) m = (const int32_t *)sd;
#endif
    double theta = NAN;
    if (m) {
        theta = -av_display_rotation_get(m); // counter-clockwise -> clockwise
    } else {
        const AVDictionaryEntry *e = av_dict_get(st->metadata, "rotate", NULL, 0);
        char *end = NULL;
        if (e && *e->value) theta = strtod(e->value, &end);
        if (end && *end) theta = NAN;
    }
    if (!isfinite(theta)) return 0;
    theta = fmod(theta, 360.0);
    if (theta < 0) theta += 360.0;
    for (int q = 0; q <= 4; q++)
        if (fabs(theta - 90.0 * q) < 1.0) return q % 4 * 90;
    return 0;
}

// pick: the selection the passes on this file use (owned from now on), NULL for the formula.
static void vr_open(vreader *r, const char *path, int64_t *pick) {
    char why[512];
    memset(r, 0, sizeof *r);
    r->path = path;
    r->pick = pick;
    ds_ff_status st = ds_ff_open(&r->in, path, AVMEDIA_TYPE_VIDEO, why, sizeof why);
    // A still picture (PNG, JPEG, ...) opens as a one-frame "video" of 1/25 s; every span
    // would then lie outside it. Said as what it is.
    const char *demuxer = r->in.fmt ? r->in.fmt->iformat->name : "";
    size_t dn = strlen(demuxer);
    if (!strcmp(demuxer, "image2") || (dn > 5 && !strcmp(demuxer + dn - 5, "_pipe")))
        vr_fail(r, "a still image, not a video (FFmpeg reads it as %s)", demuxer);
    if (st == DS_FF_CANNOT_OPEN) vr_fail(r, "cannot open video: %s", why);
    if (st == DS_FF_NO_STREAM) vr_fail(r, "no video stream");
    if (st != DS_FF_OK) vr_fail(r, "%s", why);
    AVStream *stream = r->in.fmt->streams[r->in.stream];
    // Cover art of an audio file is a one-picture "video" stream; it is not a video.
    if (stream->disposition & AV_DISPOSITION_ATTACHED_PIC)
        vr_fail(r, "no video stream (only an attached picture)");
    r->rotation = stream_rotation(stream);
    if (!ds_ff_open_decoder(&r->in, why, sizeof why)) vr_fail(r, "%s", why);
}

static int is_full_range_format(enum AVPixelFormat f) {
    return f == AV_PIX_FMT_YUVJ420P || f == AV_PIX_FMT_YUVJ422P || f == AV_PIX_FMT_YUVJ444P ||
           f == AV_PIX_FMT_YUVJ440P || f == AV_PIX_FMT_YUVJ411P;
}

// Converts frame f to RGB, shortest side to S (bicubic), centre crop S x S into dst. A rotated
// stream is scaled in its coded orientation to the size that becomes the upright target, and
// turned while cropping: luma as when turning first (decord, the ffmpeg tool) up to rounding;
// subsampled chroma is interpolated where it is sited, so colour edges differ by a few levels.
static void vr_convert(vreader *r, const AVFrame *f, uint8_t *dst) {
    char eb[AV_ERROR_MAX_STRING_SIZE];
    int S = r->S, fw = f->width, fh = f->height;
    if (fw <= 0 || fh <= 0) vr_fail(r, "decoded frame of size %dx%d", fw, fh);
    int quarter = r->rotation == 90 || r->rotation == 270;
    int dw = quarter ? fh : fw, dh = quarter ? fw : fh; // upright (displayed) size
    // Like CLIP's processor: the short side becomes S, the long one int(S * long / short).
    int nw, nh;
    if (dw <= dh)
        nw = S, nh = (int)((int64_t)S * dh / dw);
    else
        nh = S, nw = (int)((int64_t)S * dw / dh);
    int sw = quarter ? nh : nw, sh = quarter ? nw : nh; // scaled size, coded orientation
    enum AVPixelFormat pf = f->format;
    r->sws = sws_getCachedContext(r->sws, fw, fh, pf, sw, sh, AV_PIX_FMT_RGB24, SWS_BICUBIC, NULL,
                                  NULL, NULL);
    if (!r->sws) {
        const char *name = av_get_pix_fmt_name(pf);
        vr_fail(r, "cannot convert %s %dx%d frames to RGB %dx%d", name ? name : "?", fw, fh, sw,
                sh);
    }
    const AVPixFmtDescriptor *desc = av_pix_fmt_desc_get(pf);
    if (desc && !(desc->flags & AV_PIX_FMT_FLAG_RGB) && desc->nb_components >= 3) {
        // YUV: use the matrix and range the stream declares (BT.601 when unspecified), not
        // swscale's fixed default, so BT.709 and full-range videos get their true colours.
        int full = f->color_range == AVCOL_RANGE_JPEG || is_full_range_format(pf);
        int ret =
            sws_setColorspaceDetails(r->sws, sws_getCoefficients(f->colorspace), full,
                                     sws_getCoefficients(SWS_CS_DEFAULT), 1, 0, 1 << 16, 1 << 16);
        if (ret < 0) vr_fail(r, "cannot set up the colour conversion of %s frames", desc->name);
    }
    if (sw != r->scaled_w || sh != r->scaled_h) {
        av_freep(&r->scaled);
        r->scaled_ls = FFALIGN(sw * 3, 64);
        r->scaled = av_malloc((size_t)r->scaled_ls * sh + 64);
        if (!r->scaled) vr_fail(r, "out of memory for a %dx%d frame", sw, sh);
        r->scaled_w = sw, r->scaled_h = sh;
    }
    uint8_t *planes[4] = {r->scaled, NULL, NULL, NULL};
    int strides[4] = {r->scaled_ls, 0, 0, 0};
    int ret =
        sws_scale(r->sws, (const uint8_t *const *)f->data, f->linesize, 0, fh, planes, strides);
    if (ret != sh)
        vr_fail(r, "frame conversion failed: %s",
                ret < 0 ? ds_ff_error(ret, eb, sizeof eb) : "short output");
    int top = (nh - S) / 2, left = (nw - S) / 2;
    if (r->rotation == 0) {
        for (int y = 0; y < S; y++)
            memcpy(dst + (size_t)y * S * 3,
                   r->scaled + (size_t)(y + top) * r->scaled_ls + (size_t)left * 3, (size_t)S * 3);
        return;
    }
    // Upright pixel (X, Y) of the nw x nh image is scaled pixel (sx, sy) = base + X*dx + Y*dy.
    ptrdiff_t ls = r->scaled_ls, px = 3, base, dx, dy;
    if (r->rotation == 90) // clockwise: the left column of the coded frame becomes the top row
        base = (sh - 1) * ls, dx = -ls, dy = px;
    else if (r->rotation == 180)
        base = (sh - 1) * ls + (sw - 1) * px, dx = -px, dy = -ls;
    else // 270
        base = (sw - 1) * px, dx = ls, dy = -px;
    for (int y = 0; y < S; y++) {
        uint8_t *o = dst + (size_t)y * S * 3;
        ptrdiff_t at = base + (ptrdiff_t)(y + top) * dy + (ptrdiff_t)left * dx;
        for (int x = 0; x < S; x++, o += 3, at += dx) memcpy(o, r->scaled + at, 3);
    }
}

// One decoded frame (ds_ff_decode_all's callback): number it, follow the timestamps and fill
// every output slot that selects it.
static void vr_on_frame(void *ctx, AVFrame *f) {
    vreader *r = ctx;
    int64_t j = r->decoded++;
    if (j == 0) r->first_w = f->width, r->first_h = f->height;
    int64_t ts = f->best_effort_timestamp;
#if LIBAVUTIL_VERSION_MAJOR >= 58
    int64_t dur = f->duration;
#else
    int64_t dur = f->pkt_duration;
#endif
    // Presentation order: once a timestamp is missing or goes back, none is trusted.
    if (ts == AV_NOPTS_VALUE || (j > 0 && ts < r->ts_last)) r->ts_unusable = 1;
    if (!r->ts_unusable) {
        if (j == 0) r->ts_first = ts;
        r->ts_last = ts, r->dur_last = dur > 0 ? dur : 0;
        if (r->n_ts == r->cap_ts) {
            r->cap_ts = r->cap_ts ? 2 * r->cap_ts : 1024;
            int64_t *grown = realloc(r->ts, (size_t)r->cap_ts * sizeof *grown);
            if (!grown) vr_fail(r, "out of memory for %lld frame timestamps", (long long)r->cap_ts);
            r->ts = grown;
        }
        r->ts[r->n_ts++] = ts;
    }
    if (!r->N) return;
    size_t bytes = (size_t)r->S * r->S * 3;
    int first = -1;
    while (r->next < r->F &&
           (r->pick ? r->pick[r->next] : ds_video_frame_index(r->next, r->N, r->F)) == j) {
        uint8_t *slot = r->out + (size_t)r->next * bytes;
        if (first < 0)
            vr_convert(r, f, slot), first = r->next;
        else
            memcpy(slot, r->out + (size_t)first * bytes, bytes); // N < F: repeated frame
        r->next++;
    }
}

// Decodes the whole stream once, selecting frames for N (0: only count).
static void vr_pass(vreader *r, int64_t N, int F, int S, uint8_t *out) {
    r->N = N, r->F = F, r->S = S, r->out = out;
    r->next = 0, r->decoded = 0;
    r->ts_first = r->ts_last = r->dur_last = 0, r->ts_unusable = 0, r->n_ts = 0;
    char why[512];
    if (!ds_ff_decode_all(&r->in, vr_on_frame, r, why, sizeof why)) vr_fail(r, "%s", why);
}

// The last frame's duration in seconds (tb: the stream's time base, > 0): its own, else one
// frame interval (from the rate, else the mean spacing of the timestamps), else 0.
static double last_frame_s(const vreader *r, double tb, double fps, int64_t N) {
    return r->dur_last > 0 ? (double)r->dur_last * tb
           : fps > 0.0     ? 1.0 / fps
           : N > 1         ? (double)(r->ts_last - r->ts_first) * tb / (double)(N - 1)
                           : 0.0;
}

// The frames on display at the F times (i + 0.5) D / F after the first frame (D: the span of
// the frames' timestamps, last frame included), from the timestamps of the pass just done;
// NULL when they are unusable, or when no pick differs from the index formula's by more than
// one frame (constant frame rates, timestamps rounded to the container's clock): then the
// formula, as the reference (decord, by index) picks. Allocated.
static int64_t *pick_by_time(const vreader *r, int F, double tb, double fps) {
    int64_t N = r->decoded;
    if (r->ts_unusable || r->n_ts != N || N < 2 || tb <= 0.0) return NULL;
    int64_t D = r->ts_last - r->ts_first + llround(last_frame_s(r, tb, fps, N) / tb); // ticks
    if (D <= 0) return NULL;
    int64_t *pick = ag_xmalloc((size_t)F * sizeof *pick, "video frame picks");
    bool differs = false;
    int64_t j = 0;
    for (int i = 0; i < F; i++) {
        // the last frame j with ts_j - ts_0 <= (2i + 1) D / (2F), in exact arithmetic
        while (j + 1 < N &&
               (__int128)2 * F * (r->ts[j + 1] - r->ts_first) <= (__int128)(2 * i + 1) * D)
            j++;
        pick[i] = j;
        int64_t by_index = ds_video_frame_index(i, N, F);
        differs = differs || llabs(j - by_index) > 1;
    }
    if (differs) return pick;
    free(pick);
    return NULL;
}

void ds_video_load(const char *path, int F, int S, uint8_t *out, ds_video_info *info) {
    ds_ff_quiet();
    if (F <= 0 || S <= 0) ag_fail("%s: bad video sampling (%d frames of %dx%d)", path, F, S, S);
    vreader r;
    vr_open(&r, path, NULL);
    AVStream *st = r.in.fmt->streams[r.in.stream];
    AVRational rate = av_guess_frame_rate(r.in.fmt, st, NULL);
    double fps = rate.num > 0 && rate.den > 0 ? av_q2d(rate) : 0.0;
    // The duration the headers state (mp4, mkv, avi; libavformat's estimates from the bit rate
    // or the first and last timestamps are left out): a fallback, and the first pass's guess.
    double stated = 0.0;
    if (r.in.fmt->duration_estimation_method == AVFMT_DURATION_FROM_STREAM) {
        if (st->duration != AV_NOPTS_VALUE && st->duration > 0)
            stated = st->duration * av_q2d(st->time_base);
        else if (r.in.fmt->duration != AV_NOPTS_VALUE && r.in.fmt->duration > 0)
            stated = r.in.fmt->duration / (double)AV_TIME_BASE;
    }
    // Frame count to select with in the first pass: the container's, else duration x rate.
    // Either is only a guess that the decode verifies.
    int64_t guess = st->nb_frames;
    if (guess <= 0 && stated > 0 && fps > 0) guess = llround(stated * fps);

    int passes = 1;
    vr_pass(&r, guess > 0 ? guess : 0, F, S, out);
    int64_t N = r.decoded;
    if (N == 0)
        vr_fail(&r, "no decodable video frame%s",
                r.in.skipped ? " (every packet was rejected by the decoder)" : "");
    // A variable frame rate: the frames evenly spread in time, not in count, so that spans in
    // seconds (the duration below) fall on the frames that show them.
    int64_t *pick = pick_by_time(&r, F, av_q2d(st->time_base), fps);
    if (N != guess || pick) {
        // The guess was absent or wrong, or the rate varies: decode again with the true N.
        int w = r.first_w, h = r.first_h;
        vr_close(&r);
        vr_open(&r, path, pick);
        vr_pass(&r, N, F, S, out);
        if (r.decoded != N)
            vr_fail(&r, "frame count changed between two decodes (%lld, then %lld)", (long long)N,
                    (long long)r.decoded);
        r.first_w = w, r.first_h = h;
        passes = 2;
    }
    if (r.next != F) vr_fail(&r, "internal error: %d of %d frames selected", r.next, F);
    // Duration: what the decoded frames span, from the first one's timestamp to the end of
    // the last (its own duration, else one frame interval), so that it matches the frames
    // selected: a file cut short, audio that outlasts the video, a leading gap or negative
    // timestamps leave it right, and variable frame rates need no rate. Without usable
    // timestamps: the stated duration, else N / frame rate, else libavformat's estimate.
    double tb = av_q2d(r.in.fmt->streams[r.in.stream]->time_base), duration = 0.0;
    if (!r.ts_unusable && tb > 0.0) {
        duration = (double)(r.ts_last - r.ts_first) * tb + last_frame_s(&r, tb, fps, N);
    }
    if (duration <= 0.0) duration = stated;
    if (duration <= 0.0 && fps > 0.0) duration = (double)N / fps;
    if (duration <= 0.0 && r.in.fmt->duration != AV_NOPTS_VALUE && r.in.fmt->duration > 0)
        duration = r.in.fmt->duration / (double)AV_TIME_BASE; // an estimate is better than none
    if (duration <= 0.0) vr_fail(&r, "duration unknown (no timestamps, none in the headers)");
    // Start: the first frame's place on the file's timeline (see video.h).
    double start = 0.0;
    if (!r.ts_unusable && tb > 0.0 && r.in.fmt->start_time != AV_NOPTS_VALUE)
        start = fmax(0.0, (double)r.ts_first * tb - r.in.fmt->start_time / (double)AV_TIME_BASE);
    if (info) {
        info->n_decoded = N;
        info->duration = duration;
        info->start = start;
        info->fps = fps;
        info->width = r.first_w;
        info->height = r.first_h;
        info->rotation = r.rotation;
        info->passes = passes;
        info->by_time = r.pick != NULL;
        info->skipped = r.in.skipped;
    }
    vr_close(&r);
}

// ---------------------------------------------------------------------------------------
// Writer.

typedef struct {
    const char *path;
    char *tmp;
    AVFormatContext *oc;
    AVCodecContext *enc;
    AVStream *st;
    AVFrame *frame;
    AVPacket *pkt;
    struct SwsContext *sws;
} vwriter;

static void vw_close(vwriter *w) {
    sws_freeContext(w->sws);
    av_frame_free(&w->frame);
    av_packet_free(&w->pkt);
    avcodec_free_context(&w->enc);
    if (w->oc) {
        if (w->oc->pb) avio_closep(&w->oc->pb);
        avformat_free_context(w->oc);
        w->oc = NULL;
    }
}

__attribute__((noreturn, format(printf, 2, 3))) static void vw_fail(vwriter *w, const char *fmt,
                                                                    ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    vw_close(w);
    if (w->tmp) remove(w->tmp);
    free(w->tmp);
    ag_fail("%s: %s", w->path, msg);
}

static void vw_encode(vwriter *w, const AVFrame *frame) {
    char eb[AV_ERROR_MAX_STRING_SIZE];
    int ret = avcodec_send_frame(w->enc, frame);
    if (ret < 0) vw_fail(w, "encoding failed: %s", ds_ff_error(ret, eb, sizeof eb));
    for (;;) {
        ret = avcodec_receive_packet(w->enc, w->pkt);
        if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) return;
        if (ret < 0) vw_fail(w, "encoding failed: %s", ds_ff_error(ret, eb, sizeof eb));
        if (w->pkt->duration == 0) w->pkt->duration = 1; // one frame, in the codec's time base
        av_packet_rescale_ts(w->pkt, w->enc->time_base, w->st->time_base);
        w->pkt->stream_index = w->st->index;
        ret = av_interleaved_write_frame(w->oc, w->pkt); // takes the packet's reference
        if (ret < 0) vw_fail(w, "cannot write a packet: %s", ds_ff_error(ret, eb, sizeof eb));
    }
}

void ds_video_write(const char *path, const uint8_t *frames_rgb, int n_frames, int width,
                    int height, double fps) {
    ds_ff_quiet();
    char eb[AV_ERROR_MAX_STRING_SIZE];
    vwriter w = {.path = path};
    if (n_frames <= 0 || width <= 0 || height <= 0 || (width | height) & 1)
        ag_fail("%s: cannot write %d frames of %dx%d (need at least one frame, even sizes for "
                "yuv420p)",
                path, n_frames, width, height);
    if (!(fps > 0.0 && fps <= 1000.0)) ag_fail("%s: bad frame rate %g", path, fps);
    // The container follows the final name's extension; the bytes go to a temporary name.
    const AVOutputFormat *of = av_guess_format(NULL, path, NULL);
    if (!of) ag_fail("%s: no container known for this file extension", path);
    w.tmp = ag_xmalloc(PATH_MAX, "video temp path");
    ds_atomic_tmp_path(path, w.tmp, PATH_MAX);
    int ret = avformat_alloc_output_context2(&w.oc, of, NULL, w.tmp);
    if (ret < 0 || !w.oc)
        vw_fail(&w, "cannot set up the %s muxer: %s", of->name, ds_ff_error(ret, eb, sizeof eb));
    // MPEG-4 part 2: FFmpeg's own encoder, present in every libavcodec (no libx264 needed).
    const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_MPEG4);
    if (!codec) vw_fail(&w, "this libavcodec has no MPEG-4 part 2 encoder");
    w.st = avformat_new_stream(w.oc, NULL);
    w.enc = avcodec_alloc_context3(codec);
    w.pkt = av_packet_alloc();
    w.frame = av_frame_alloc();
    if (!w.st || !w.enc || !w.pkt || !w.frame) vw_fail(&w, "out of memory for encoding");
    AVRational rate = av_d2q(fps, 65535); // MPEG-4 part 2 time bases fit 16 bits
    w.enc->width = width;
    w.enc->height = height;
    w.enc->pix_fmt = AV_PIX_FMT_YUV420P;
    w.enc->time_base = av_inv_q(rate);
    w.enc->framerate = rate;
    w.enc->gop_size = 12;
    w.enc->max_b_frames = 0; // output order = input order, no reordering delay
    // Fixed quantiser 2 (near-lossless): synthetic frames must keep their exact colours.
    w.enc->flags |= AV_CODEC_FLAG_QSCALE;
    w.enc->global_quality = FF_QP2LAMBDA * 2;
    w.enc->color_range = AVCOL_RANGE_MPEG; // what swscale's RGB -> YUV produces by default
    w.enc->colorspace = AVCOL_SPC_SMPTE170M;
    if (w.oc->oformat->flags & AVFMT_GLOBALHEADER) w.enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    ret = avcodec_open2(w.enc, codec, NULL);
    if (ret < 0) vw_fail(&w, "cannot open the mpeg4 encoder: %s", ds_ff_error(ret, eb, sizeof eb));
    ret = avcodec_parameters_from_context(w.st->codecpar, w.enc);
    if (ret < 0) vw_fail(&w, "cannot set stream parameters: %s", ds_ff_error(ret, eb, sizeof eb));
    w.st->time_base = w.enc->time_base;
    w.st->avg_frame_rate = rate;
    if (!(of->flags & AVFMT_NOFILE)) {
        ret = avio_open(&w.oc->pb, w.tmp, AVIO_FLAG_WRITE);
        if (ret < 0) vw_fail(&w, "cannot create %s: %s", w.tmp, ds_ff_error(ret, eb, sizeof eb));
    }
    ret = avformat_write_header(w.oc, NULL);
    if (ret < 0) vw_fail(&w, "cannot write the header: %s", ds_ff_error(ret, eb, sizeof eb));
    w.sws = sws_getContext(width, height, AV_PIX_FMT_RGB24, width, height, AV_PIX_FMT_YUV420P,
                           SWS_BICUBIC | SWS_ACCURATE_RND, NULL, NULL, NULL);
    if (!w.sws) vw_fail(&w, "cannot set up RGB -> yuv420p conversion");
    w.frame->format = AV_PIX_FMT_YUV420P;
    w.frame->width = width;
    w.frame->height = height;
    ret = av_frame_get_buffer(w.frame, 0);
    if (ret < 0) vw_fail(&w, "cannot allocate a frame: %s", ds_ff_error(ret, eb, sizeof eb));
    size_t bytes = (size_t)width * height * 3;
    for (int i = 0; i < n_frames; i++) {
        ret = av_frame_make_writable(w.frame);
        if (ret < 0) vw_fail(&w, "cannot allocate a frame: %s", ds_ff_error(ret, eb, sizeof eb));
        const uint8_t *src[4] = {frames_rgb + (size_t)i * bytes, NULL, NULL, NULL};
        int src_ls[4] = {width * 3, 0, 0, 0};
        ret = sws_scale(w.sws, src, src_ls, 0, height, w.frame->data, w.frame->linesize);
        if (ret != height) vw_fail(&w, "RGB -> yuv420p conversion failed");
        w.frame->pts = i;
        vw_encode(&w, w.frame);
    }
    vw_encode(&w, NULL); // flush
    ret = av_write_trailer(w.oc);
    if (ret < 0) vw_fail(&w, "cannot finish the file: %s", ds_ff_error(ret, eb, sizeof eb));
    if (w.oc->pb) {
        ret = avio_closep(&w.oc->pb);
        if (ret < 0) vw_fail(&w, "cannot close %s: %s", w.tmp, ds_ff_error(ret, eb, sizeof eb));
    }
    vw_close(&w);
    ds_commit_tmp(w.tmp, path);
    free(w.tmp);
}
