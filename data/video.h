// video.h: video preprocessing with the FFmpeg libraries, and a writer for synthetic videos.
//   - ds_video_load: decode the best video stream, take exactly F frames at indices
//     floor((i + 0.5) * N / F) of the N decodable frames (when N < F indices repeat, so every
//     frame is used and some twice or more), as the reference (decord, by index) does; for a
//     variable frame rate, where that would pick a frame more than one away from the one on
//     display at time (i + 0.5) * duration / F, the frames on display at those times instead
//     (a phone video at 2 fps in the dark and 30 fps after: by index, most frames would come
//     from its second half, and spans in seconds would not match them); then convert each to
//     RGB and resize it the way CLIP's processor treats video frames in the reference:
//     shortest side to S (bicubic, libswscale SWS_BICUBIC, so not bit-exact with PIL), then
//     centre crop S x S;
//   - ds_video_write: encode RGB frames with FFmpeg's native MPEG-4 part 2 encoder ("mpeg4",
//     in every libavcodec build, no external library), yuv420p, near-lossless quantiser.
// Frames come in the decoder's output (presentation) order; sample aspect ratio is ignored
// (pixels are taken as square, as decord and the reference do). A display matrix (phone
// videos) that turns the picture by a multiple of 90 degrees is applied, as decord
// (dmlc/decord#51, 2020) and the ffmpeg tool do, so frames come out upright; other angles are
// ignored and mirroring is not undone, as in decord. Frames are selected while decoding with
// N guessed from the container's frame count (or its stated duration x frame rate); the
// decode counts the true N and keeps every timestamp, and when the guess was absent or wrong,
// or the timestamps call for the picks by time, the file is decoded a second time with them,
// so the selection is always exact, and no more than F converted frames are held in memory.
// Duration: the span of the decoded frames' timestamps, from the first frame's start to the
// last frame's end (its own duration, else one frame interval). It matches the frames the
// selection draws from whatever the headers say: a file cut short, audio that outlasts the
// video (a Matroska file states the longest track), a leading gap or a variable frame rate
// leave it right. When the timestamps are missing or go backwards: the duration the headers
// state, else N / frame rate.
// Start: the first decoded frame's timestamp minus the file's start time (its earliest
// stream's, as ffprobe and players count), so that spans annotated in seconds of the file
// can be placed on the frames when the video starts later than the audio (a Matroska or
// MPEG-TS recording whose video begins after its sound). 0 when either is unknown or the
// timestamps are unusable. libavformat drops an mp4's leading empty edit (a video delayed
// by its edit list reads as starting at 0), and so does groundc.
// Packets and frames the decoder fails on are skipped and counted (they are not "decodable
// frames"; the ffmpeg tool does the same), and corrupt container data ends the stream; a
// file with no video stream, no decodable frame or an unreadable container is an error.
// Errors are one-line ag_fail messages naming the file, with FFmpeg's own reason
// (av_strerror). FFmpeg's own logging is silenced process-wide on first use (set
// GROUNDC_FFMPEG_LOG=1 to keep it). Decoding uses FFmpeg's automatic thread count.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Index of output frame i (0 <= i < F) among N decoded frames: floor((i + 0.5) * N / F),
// in integer arithmetic. Exactly F indices, non-decreasing, each < N.
static inline int64_t ds_video_frame_index(int64_t i, int64_t N, int64_t F) {
    return (2 * i + 1) * N / (2 * F);
}

typedef struct {
    int64_t n_decoded; // N: decodable frames in the stream
    double duration;   // seconds the decoded frames span (see above)
    double start;      // seconds from the file's start to the first decoded frame (see above)
    double fps;        // average frame rate as the container states it (0 if unknown)
    int width, height; // coded size of the (first) decoded frame, before any rotation
    int rotation;      // clockwise degrees applied: 0, 90, 180 or 270 (display matrix)
    int passes;        // 1 when the guessed frame count was right (and the rate constant), else 2
    bool by_time;      // frames picked by their timestamps (a variable frame rate), see above
    int64_t skipped;   // packets or frames the decoder rejected (corrupt data), last pass
} ds_video_info;

// Decodes path and writes F frames [F][S][S][3] (RGB8) to out. info may be NULL.
void ds_video_load(const char *path, int F, int S, uint8_t *out, ds_video_info *info);

// Encodes n_frames frames [n][h][w][3] (RGB8) at fps frames per second to path, whose
// extension picks the container (.mp4, .avi, .mkv, .mov); codec MPEG-4 part 2, yuv420p, so w
// and h must be even. Written to "<path>.tmp" (same container), then renamed.
void ds_video_write(const char *path, const uint8_t *frames_rgb, int n_frames, int w, int h,
                    double fps);

#ifdef __cplusplus
}
#endif
