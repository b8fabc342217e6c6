// batch.c: see batch.h.
#include "train/batch.h"

#include <string.h>

void tr_batch_to_model(ag_ctx *ctx, const ds_batch *b, gm_groundinggpt_batch *out) {
    memset(out, 0, sizeof *out);
    out->B = b->B;
    out->T = b->T;
    out->ids = b->ids;
    out->targets = b->targets;
    if (b->n_images) {
        int64_t S = b->image_size;
        out->media[GM_MOD_IMAGE] =
            ag_from_host(ctx, AG_U8, AG_SHAPE(b->n_images, S, S, 3), b->images);
        out->media_of[GM_MOD_IMAGE] = b->image_index;
    }
    if (b->n_videos) {
        int64_t S = b->video_size;
        out->media[GM_MOD_VIDEO] =
            ag_from_host(ctx, AG_U8, AG_SHAPE(b->n_videos * b->video_frames, S, S, 3), b->videos);
        out->media_of[GM_MOD_VIDEO] = b->video_index;
    }
    if (b->n_audios) {
        out->media[GM_MOD_AUDIO] = ag_from_host(
            ctx, AG_F32, AG_SHAPE(b->n_audios, b->audio_clips, b->audio_frames, b->audio_mels),
            b->audios);
        out->media_of[GM_MOD_AUDIO] = b->audio_index;
    }
}

int64_t tr_batch_supervised(const ds_batch *b) {
    int64_t n = 0;
    for (int64_t i = 0; i < b->B * b->T; i++) n += b->targets[i] != DS_LOADER_IGNORE;
    return n;
}
