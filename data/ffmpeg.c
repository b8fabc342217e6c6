// ffmpeg.c: see ffmpeg.h.
#include "data/ffmpeg.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libavutil/avutil.h>

#include "data/files.h"

static pthread_once_t ds_ff_log_once = PTHREAD_ONCE_INIT;

static void ds_ff_log_level(void) {
    const char *env = getenv("GROUNDC_FFMPEG_LOG");
    if (!env || !*env || !strcmp(env, "0")) av_log_set_level(AV_LOG_QUIET);
}

void ds_ff_quiet(void) {
    // pthread_once fails only on invalid arguments; FFmpeg would then merely stay talkative
    (void)pthread_once(&ds_ff_log_once, ds_ff_log_level);
}

const char *ds_ff_error(int err, char *buf, size_t n) {
    if (av_strerror(err, buf, n) < 0) snprintf(buf, n, "FFmpeg error %d", err);
    return buf;
}

ds_ff_status ds_ff_open(ds_ff_input *in, const char *path, enum AVMediaType type, char *err,
                        size_t n) {
    char eb[AV_ERROR_MAX_STRING_SIZE];
    memset(in, 0, sizeof *in);
    ds_require_file(path);
    int ret = avformat_open_input(&in->fmt, path, NULL, NULL);
    if (ret < 0) {
        snprintf(err, n, "%s", ds_ff_error(ret, eb, sizeof eb));
        return DS_FF_CANNOT_OPEN;
    }
    ret = avformat_find_stream_info(in->fmt, NULL);
    if (ret < 0) {
        snprintf(err, n, "cannot read the stream layout: %s", ds_ff_error(ret, eb, sizeof eb));
        return DS_FF_FAILED;
    }
    ret = av_find_best_stream(in->fmt, type, -1, -1, &in->codec, 0);
    if (ret < 0) {
        snprintf(err, n, "no decodable %s stream: %s", av_get_media_type_string(type),
                 ds_ff_error(ret, eb, sizeof eb));
        return ret == AVERROR_STREAM_NOT_FOUND ? DS_FF_NO_STREAM : DS_FF_FAILED;
    }
    in->stream = ret;
    // the demuxer then drops the other streams' packets (a video's audio track and the
    // reverse) instead of handing them over
    for (unsigned i = 0; i < in->fmt->nb_streams; i++)
        if ((int)i != in->stream) in->fmt->streams[i]->discard = AVDISCARD_ALL;
    return DS_FF_OK;
}

bool ds_ff_open_decoder(ds_ff_input *in, char *err, size_t n) {
    char eb[AV_ERROR_MAX_STRING_SIZE];
    const AVStream *st = in->fmt->streams[in->stream];
    const AVCodec *codec = in->codec;
    if (!(in->dec = avcodec_alloc_context3(codec))) {
        snprintf(err, n, "out of memory for a %s decoder", codec->name);
        return false;
    }
    int ret = avcodec_parameters_to_context(in->dec, st->codecpar);
    if (ret < 0) {
        snprintf(err, n, "bad codec parameters: %s", ds_ff_error(ret, eb, sizeof eb));
        return false;
    }
    // as the ffmpeg tool sets it: frame timestamps and durations in stream units, and
    // libavcodec trims the encoder delay and padding the file declares (MP4 edit lists, Opus
    // pre-skip, Matroska discard padding)
    in->dec->pkt_timebase = st->time_base;
    in->dec->thread_count = 0;
    ret = avcodec_open2(in->dec, codec, NULL);
    if (ret < 0) {
        snprintf(err, n, "cannot open the %s decoder: %s", codec->name,
                 ds_ff_error(ret, eb, sizeof eb));
        return false;
    }
    in->pkt = av_packet_alloc();
    in->frame = av_frame_alloc();
    if (!in->pkt || !in->frame) {
        snprintf(err, n, "out of memory for decoding");
        return false;
    }
    return true;
}

// Hands every frame the decoder has ready to on_frame. A frame the decoder fails to produce
// is skipped (decoders report corrupt data with assorted codes, even -1).
static bool ds_ff_drain(ds_ff_input *in, void (*on_frame)(void *, AVFrame *), void *ctx, char *err,
                        size_t n) {
    char eb[AV_ERROR_MAX_STRING_SIZE];
    int failures = 0;
    for (;;) {
        int ret = avcodec_receive_frame(in->dec, in->frame);
        if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) return true;
        if (ret == AVERROR(ENOMEM) || (ret < 0 && ++failures > 1000)) {
            snprintf(err, n, "decoding failed%s: %s", failures > 1000 ? " repeatedly" : "",
                     ds_ff_error(ret, eb, sizeof eb));
            return false;
        }
        if (ret < 0) {
            in->skipped++;
            continue;
        }
        failures = 0;
        on_frame(ctx, in->frame);
        av_frame_unref(in->frame);
    }
}

static bool ds_ff_send(ds_ff_input *in, const AVPacket *pkt, void (*on_frame)(void *, AVFrame *),
                       void *ctx, char *err, size_t n) {
    char eb[AV_ERROR_MAX_STRING_SIZE];
    int ret = avcodec_send_packet(in->dec, pkt);
    if (ret == AVERROR(ENOMEM)) {
        snprintf(err, n, "decoding failed: %s", ds_ff_error(ret, eb, sizeof eb));
        return false;
    }
    if (ret < 0 && ret != AVERROR_EOF) in->skipped++; // a packet the decoder rejects
    return ds_ff_drain(in, on_frame, ctx, err, n);
}

bool ds_ff_decode_all(ds_ff_input *in, void (*on_frame)(void *ctx, AVFrame *frame), void *ctx,
                      char *err, size_t n) {
    char eb[AV_ERROR_MAX_STRING_SIZE];
    in->skipped = 0;
    int ret;
    while ((ret = av_read_frame(in->fmt, in->pkt)) >= 0) {
        bool ok =
            in->pkt->stream_index != in->stream || ds_ff_send(in, in->pkt, on_frame, ctx, err, n);
        av_packet_unref(in->pkt);
        if (!ok) return false;
    }
    // Corrupt container data ends the readable part of the file, as in the ffmpeg tool; what
    // was decoded until then is the stream. Other errors (I/O) are fatal.
    if (ret != AVERROR_EOF && ret != AVERROR_INVALIDDATA) {
        snprintf(err, n, "read error: %s", ds_ff_error(ret, eb, sizeof eb));
        return false;
    }
    return ds_ff_send(in, NULL, on_frame, ctx, err, n); // the decoder's delayed frames
}

void ds_ff_close(ds_ff_input *in) {
    av_frame_free(&in->frame);
    av_packet_free(&in->pkt);
    avcodec_free_context(&in->dec);
    avformat_close_input(&in->fmt);
}

bool ds_ff_decode_picture(enum AVCodecID id, const void *data, size_t size, int64_t max_pixels,
                          AVFrame *frame, char *err, size_t n) {
    char eb[AV_ERROR_MAX_STRING_SIZE];
    ds_ff_quiet();
    const AVCodec *codec = avcodec_find_decoder(id);
    if (!codec) {
        snprintf(err, n, "this FFmpeg has no %s decoder", avcodec_get_name(id));
        return false;
    }
    // a packet's size is an int, and FFmpeg reads up to AV_INPUT_BUFFER_PADDING_SIZE past it
    if (size > (size_t)INT_MAX - AV_INPUT_BUFFER_PADDING_SIZE) {
        snprintf(err, n, "%zu bytes are more than one FFmpeg packet holds", size);
        return false;
    }
    AVCodecContext *dec = avcodec_alloc_context3(codec);
    AVPacket *pkt = av_packet_alloc();
    bool ok = false;
    int ret;
    if (!dec || !pkt) {
        snprintf(err, n, "out of memory for a %s decoder", codec->name);
        goto done;
    }
    dec->thread_count = 1;
    dec->max_pixels = max_pixels;
    if ((ret = avcodec_open2(dec, codec, NULL)) < 0) {
        snprintf(err, n, "cannot open the %s decoder: %s", codec->name,
                 ds_ff_error(ret, eb, sizeof eb));
        goto done;
    }
    // av_new_packet adds zeroed padding after the copy, as decoders require
    if ((ret = av_new_packet(pkt, (int)size)) < 0) {
        snprintf(err, n, "out of memory for %zu bytes: %s", size, ds_ff_error(ret, eb, sizeof eb));
        goto done;
    }
    memcpy(pkt->data, data, size);
    pkt->flags |= AV_PKT_FLAG_KEY;
    if ((ret = avcodec_send_packet(dec, pkt)) < 0) {
        snprintf(err, n, "%s decoder: %s", codec->name, ds_ff_error(ret, eb, sizeof eb));
        goto done;
    }
    ret = avcodec_receive_frame(dec, frame);
    if (ret == AVERROR(EAGAIN)) { // a decoder that holds the frame back until flushed
        if ((ret = avcodec_send_packet(dec, NULL)) >= 0) ret = avcodec_receive_frame(dec, frame);
    }
    if (ret < 0) {
        snprintf(err, n, "%s decoder: %s", codec->name,
                 ret == AVERROR_EOF ? "no picture in the data" : ds_ff_error(ret, eb, sizeof eb));
        goto done;
    }
    ok = true;
done:
    av_packet_free(&pkt);
    avcodec_free_context(&dec);
    return ok;
}
