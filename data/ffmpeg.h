// ffmpeg.h: what data/video.c and data/audio.c share to read media with the FFmpeg libraries:
// silenced logging, error strings, opening the best stream of a kind with its decoder, and one
// decode pass over the whole stream that hands each frame to the caller; and, for data/image.c,
// one picture decoded from bytes in memory.
// Conventions (those of the ffmpeg tool): packets and frames the decoder rejects are skipped
// and counted; corrupt container data ends the readable part of the file; running out of
// memory, an I/O error or a decoder that fails more than 1000 times in a row are fatal.
// Functions that can fail return false with a one-line reason in err (no file name: the
// caller says which file).
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>

#ifdef __cplusplus
extern "C" {
#endif

// Silences FFmpeg's own stderr logging process-wide, once (groundc reports its own one-line
// errors); GROUNDC_FFMPEG_LOG=1 keeps it. Thread-safe.
void ds_ff_quiet(void);

// av_strerror's text for err, in buf.
const char *ds_ff_error(int err, char *buf, size_t n);

typedef struct {
    AVFormatContext *fmt;
    const AVCodec *codec; // the stream's decoder
    AVCodecContext *dec;
    AVPacket *pkt;
    AVFrame *frame;  // the frame being handed to the callback
    int stream;      // index of the decoded stream in fmt
    int64_t skipped; // packets or frames the decoder rejected, this pass
} ds_ff_input;

typedef enum {
    DS_FF_OK,
    DS_FF_CANNOT_OPEN, // FFmpeg cannot open or recognise the file (err: its reason only)
    DS_FF_NO_STREAM,   // no stream of the kind asked for
    DS_FF_FAILED,      // any other failure (err: a phrase)
} ds_ff_status;

// Opens path and finds the best stream of `type` (AVMEDIA_TYPE_VIDEO / _AUDIO) that has a
// decoder. The other streams' packets are dropped by the demuxer. *in is zeroed first; on
// failure it holds what was opened (ds_ff_close frees it).
ds_ff_status ds_ff_open(ds_ff_input *in, const char *path, enum AVMediaType type, char *err,
                        size_t n);

// Opens the decoder of in->stream: packet timestamps in the stream's time base, FFmpeg's
// automatic thread count (the output is the same for any count).
bool ds_ff_open_decoder(ds_ff_input *in, char *err, size_t n);

// Reads the whole file once and decodes the stream, calling on_frame(ctx, in->frame) for each
// decoded frame in output order (the callback may ag_fail after freeing what it owns), then
// flushes the decoder. Resets in->skipped.
bool ds_ff_decode_all(ds_ff_input *in, void (*on_frame)(void *ctx, AVFrame *frame), void *ctx,
                      char *err, size_t n);

void ds_ff_close(ds_ff_input *in);

// Decodes one picture held whole in memory (an image file: GIF, WebP, BMP, TIFF) with FFmpeg's
// decoder for `id`: the bytes go in as a single packet, without a demuxer (these decoders read
// a whole file from one packet), and the first frame out is moved to *frame (the caller
// av_frame_unref's it). One thread. Frames of more than max_pixels pixels are refused by
// FFmpeg before it allocates them. Returns false with a reason in err (no file name).
bool ds_ff_decode_picture(enum AVCodecID id, const void *data, size_t size, int64_t max_pixels,
                          AVFrame *frame, char *err, size_t n);

#ifdef __cplusplus
}
#endif
