// batch.c: see batch.h.
#include "train/batch.h"

#include <string.h>

#include "autograd/error.h"

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

// The loader's targets go to the model as they are: one value must mean "not in the loss".
_Static_assert(DS_IGNORE_TARGET == GM_IGNORE_TARGET, "data and model ignore different targets");

int64_t tr_batch_supervised(const ds_batch *b) {
    int64_t n = 0;
    for (int64_t i = 0; i < b->B * b->T; i++) n += b->targets[i] != DS_IGNORE_TARGET;
    return n;
}

static void check_geometry(const ds_loader *l, const gm_groundinggpt_config *c) {
    static const gm_modality mods[DS_MEDIA_KINDS] = {GM_MOD_IMAGE, GM_MOD_VIDEO, GM_MOD_AUDIO};
    for (int k = 0; k < DS_MEDIA_KINDS; k++) {
        ds_media_geometry g = ds_loader_geometry(l, (ds_media_kind)k);
        if (!g.file) continue;
        const char *name = gm_modality_name(mods[k]);
        if (!c->has[mods[k]])
            ag_fail("%s: holds %s samples, but the model has no %s branch", g.file, name, name);
        const int32_t *d = g.dims;
        if (k == DS_MEDIA_IMAGE && d[0] != c->image_size)
            ag_fail("%s: images are %dx%d, the model's image_size is %lld (pack with "
                    "--image-size %lld)",
                    g.file, d[0], d[0], (long long)c->image_size, (long long)c->image_size);
        if (k == DS_MEDIA_VIDEO && (d[0] != c->video_frames || d[1] != c->video_size))
            ag_fail("%s: videos are %d frames of %dx%d, the model takes %lld frames of %lldx%lld "
                    "(pack with --video-frames %lld --video-size %lld)",
                    g.file, d[0], d[1], d[1], (long long)c->video_frames, (long long)c->video_size,
                    (long long)c->video_size, (long long)c->video_frames, (long long)c->video_size);
        if (k == DS_MEDIA_AUDIO &&
            (d[0] != c->audio_clips || d[1] != c->audio_frames || d[2] != c->audio_mels))
            ag_fail("%s: audio fbanks are %d clips x %d frames x %d mels, the model takes %lld x "
                    "%lld x %lld (audio_clips, audio_frames, audio_mels)",
                    g.file, d[0], d[1], d[2], (long long)c->audio_clips, (long long)c->audio_frames,
                    (long long)c->audio_mels);
        static const char *const opt[DS_MEDIA_KINDS] = {"image", "video", "audio"};
        int64_t want = k == DS_MEDIA_IMAGE   ? c->image_tokens
                       : k == DS_MEDIA_VIDEO ? c->video_tokens
                                             : c->audio_tokens;
        if (g.tokens >= 0 && g.tokens != want)
            ag_fail("%s: %s samples carry %lld patch tokens, the model makes %lld (pack with "
                    "--%s-tokens %lld)",
                    g.file, name, (long long)g.tokens, (long long)want, opt[k], (long long)want);
    }
}

_Static_assert((int)DS_MEDIA_IMAGE == (int)GM_MOD_IMAGE &&
                   (int)DS_MEDIA_VIDEO == (int)GM_MOD_VIDEO &&
                   (int)DS_MEDIA_AUDIO == (int)GM_MOD_AUDIO,
               "media kinds and modalities in different orders");

ds_loader *tr_batch_open_loader(ds_loader_config *lc, const gm_groundinggpt_config *c) {
    lc->count_media_tokens = true; // the model's placeholder ids, counted per media kind
    for (int k = 0; k < DS_MEDIA_KINDS; k++) lc->media_patch_id[k] = c->tokens.patch[k];
    ds_loader *l = ds_loader_open(lc);
    check_geometry(l, c);
    return l;
}
