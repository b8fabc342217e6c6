// batch.c: see batch.h.
#include "train/batch.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/error.h"
#include "data/manifest.h"
#include "data/shard.h"

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

_Static_assert((int)DS_MEDIA_IMAGE == (int)GM_MOD_IMAGE &&
                   (int)DS_MEDIA_VIDEO == (int)GM_MOD_VIDEO &&
                   (int)DS_MEDIA_AUDIO == (int)GM_MOD_AUDIO,
               "media kinds and modalities in different orders");

// Appends ", " or "; " separated text to buf.
static void add_part(char *buf, size_t cap, const char *sep, const char *text) {
    if (buf[0]) strncat(buf, sep, cap - strlen(buf) - 1); // cut short past cap
    strncat(buf, text, cap - strlen(buf) - 1);
}

// Every geometry and token-count mismatch between the shards (g, per media kind) and the
// model, in one line: the loader's at open, a dataset's survey before the model is built.
static void check_geometry(const ds_media_geometry g[DS_MEDIA_KINDS],
                           const gm_groundinggpt_config *c) {
    static const gm_modality mods[DS_MEDIA_KINDS] = {GM_MOD_IMAGE, GM_MOD_VIDEO, GM_MOD_AUDIO};
    static const char *const opt[DS_MEDIA_KINDS] = {"image", "video", "audio"};
    char what[2048] = "", pack[512] = "", part[512];
    const char *file = NULL; // the shard named: the first one with a mismatch
    for (int k = 0; k < DS_MEDIA_KINDS; k++) {
        if (!g[k].file) continue;
        const char *name = gm_modality_name(mods[k]);
        const int32_t *d = g[k].dims;
        bool bad = false;
        if (!c->has[mods[k]]) {
            snprintf(part, sizeof part, "holds %s samples, but the model has no %s branch", name,
                     name);
            add_part(what, sizeof what, "; ", part);
            if (!file) file = g[k].file;
            continue;
        }
        if (k == DS_MEDIA_IMAGE && d[0] != c->image_size) {
            snprintf(part, sizeof part, "images are %dx%d, the model's image_size is %lld", d[0],
                     d[0], (long long)c->image_size);
            add_part(what, sizeof what, "; ", part);
            snprintf(part, sizeof part, "--image-size %lld", (long long)c->image_size);
            add_part(pack, sizeof pack, " ", part);
            bad = true;
        }
        if (k == DS_MEDIA_VIDEO && (d[0] != c->video_frames || d[1] != c->video_size)) {
            snprintf(part, sizeof part,
                     "videos are %d frames of %dx%d, the model takes %lld frames of %lldx%lld",
                     d[0], d[1], d[1], (long long)c->video_frames, (long long)c->video_size,
                     (long long)c->video_size);
            add_part(what, sizeof what, "; ", part);
            snprintf(part, sizeof part, "--video-frames %lld --video-size %lld",
                     (long long)c->video_frames, (long long)c->video_size);
            add_part(pack, sizeof pack, " ", part);
            bad = true;
        }
        if (k == DS_MEDIA_AUDIO &&
            (d[0] != c->audio_clips || d[1] != c->audio_frames || d[2] != c->audio_mels)) {
            snprintf(part, sizeof part,
                     "audio fbanks are %d clips x %d frames x %d mels, the model takes %lld x "
                     "%lld x %lld (audio_clips, audio_frames, audio_mels)",
                     d[0], d[1], d[2], (long long)c->audio_clips, (long long)c->audio_frames,
                     (long long)c->audio_mels);
            add_part(what, sizeof what, "; ", part);
            bad = true;
        }
        int64_t want = k == DS_MEDIA_IMAGE   ? c->image_tokens
                       : k == DS_MEDIA_VIDEO ? c->video_tokens
                                             : c->audio_tokens;
        if (g[k].tokens >= 0 && g[k].tokens != want) {
            snprintf(part, sizeof part, "%s samples carry %lld patch tokens, the model makes %lld",
                     name, (long long)g[k].tokens, (long long)want);
            add_part(what, sizeof what, "; ", part);
            snprintf(part, sizeof part, "--%s-tokens %lld", opt[k], (long long)want);
            add_part(pack, sizeof pack, " ", part);
            bad = true;
        }
        if (bad && !file) file = g[k].file;
    }
    if (!what[0]) return;
    if (pack[0])
        ag_fail("%s: %s (pack with %s)", file, what, pack);
    else
        ag_fail("%s: %s", file, what);
}

ds_loader *tr_batch_open_loader(ds_loader_config *lc, const gm_groundinggpt_config *c) {
    lc->count_media_tokens = true; // the model's placeholder ids, counted per media kind
    for (int k = 0; k < DS_MEDIA_KINDS; k++) lc->media_patch_id[k] = c->tokens.patch[k];
    ds_loader *l = ds_loader_open(lc);
    ds_media_geometry g[DS_MEDIA_KINDS];
    for (int k = 0; k < DS_MEDIA_KINDS; k++) g[k] = ds_loader_geometry(l, (ds_media_kind)k);
    check_geometry(g, c);
    return l;
}

// What one dataset's shards say, per media kind: the first shard holding it, its geometry and
// the patch tokens its first such sample carries; and the sample lengths.
typedef struct {
    ds_media_geometry geom[DS_MEDIA_KINDS];   // file: malloc'd
    int64_t samples, over, shortest, longest; // over: samples longer than max_len
} dataset_survey;

static void survey_dataset(const char *dir, const gm_groundinggpt_config *mc, int64_t max_len,
                           dataset_survey *sv) {
    memset(sv, 0, sizeof *sv);
    sv->shortest = INT64_MAX;
    ds_manifest m;
    ds_manifest_read(&m, dir);
    for (int j = 0; j < m.num_shards; j++) {
        char *path = ag_xpath_join(dir, m.shards[j].file);
        ds_shard *sh = ds_shard_open(path);
        const ds_shard_header *h = ds_shard_get_header(sh);
        const int64_t rows[DS_MEDIA_KINDS] = {h->num_images, h->num_videos, h->num_audios};
        const int32_t dims[DS_MEDIA_KINDS][3] = {{h->image_size, 0, 0},
                                                 {h->video_frames, h->video_size, 0},
                                                 {h->audio_clips, h->audio_frames, h->audio_mels}};
        for (int k = 0; k < DS_MEDIA_KINDS; k++) {
            ds_media_geometry *g = &sv->geom[k];
            if (!rows[k] || g->file) continue;
            memcpy(g->dims, dims[k], sizeof dims[k]);
            g->file = ag_xstrdup(path);
            g->tokens = ds_shard_first_media_tokens(sh, k, mc->tokens.patch[k]);
        }
        int64_t n = ds_shard_num_samples(sh);
        for (int64_t i = 0; i < n; i++) {
            int64_t len = ds_shard_sample(sh, i).length;
            sv->over += len > max_len;
            if (len > sv->longest) sv->longest = len;
            if (len < sv->shortest) sv->shortest = len;
        }
        sv->samples += n;
        ds_shard_close(sh);
        free(path);
    }
    ds_manifest_free(&m);
}

void tr_batch_check_datasets(const tr_train_config *c, FILE *log) {
    for (int i = 0; i < c->n_datasets; i++) {
        const char *dir = c->datasets[i].dir;
        dataset_survey sv;
        survey_dataset(dir, &c->model, c->max_len, &sv);
        check_geometry(sv.geom, &c->model);
        for (int k = 0; k < DS_MEDIA_KINDS; k++) free((char *)sv.geom[k].file);
        // where max_len was set, else where the dataset was named (max_len is the default)
        const char *at = c->max_len_at ? c->max_len_at : c->datasets_at[i];
        if (sv.samples && sv.over == sv.samples)
            ag_fail("%s: data.max_len: every sample of %s is longer than %lld tokens (%lld to "
                    "%lld): the loader would cut each to its first %lld tokens, answers "
                    "included, and train on nothing; set data.max_len to %lld or more",
                    at, dir, (long long)c->max_len, (long long)sv.shortest, (long long)sv.longest,
                    (long long)c->max_len, (long long)sv.longest);
        if (sv.over && log)
            fprintf(
                log,
                "groundc: warning: %s: %lld of %lld samples are longer than data.max_len %lld (the "
                "longest %lld tokens) and are cut to it, answers with them\n",
                dir, (long long)sv.over, (long long)sv.samples, (long long)c->max_len,
                (long long)sv.longest);
    }
}
