// synth.h: a synthetic multi-granularity dataset that a tiny model learns in minutes, written
// exactly as the reference's data is (media files + LLaVA-style JSON), so `groundc pack` runs
// on it as on real data.
//   images: coloured shapes on a plain background (non-square, to exercise padding);
//           a caption (coarse), a referring expression -> box and a box -> description (fine)
//   videos: a shape that appears, moves and disappears; a caption and temporal grounding
//   audios: a tone or noise event in faint noise; a caption and its time span
// OUT/train.json and OUT/eval.json (held-out media, never in train), media under OUT/media/.
#pragma once
#include <stdint.h>

typedef struct {
    const char *out_dir;
    int64_t images, videos, audios; // media files in all (train + eval)
    double eval_fraction;           // share of each kind held out for evaluation
    uint64_t seed;
    int max_shapes; // per image, >= 1
    int video_frames, video_width, video_height;
    double video_fps;
    double audio_seconds;
} ds_synth_config;

// Defaults used by `groundc synth` (sizes fit the tiny model).
ds_synth_config ds_synth_defaults(void);
// Writes the dataset; prints one line per kind. Fails (ag_fail) naming the file on I/O errors.
void ds_synth(const ds_synth_config *cfg);
