// batch.c: see batch.h.
#include "train/batch.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "autograd/error.h"
#include "data/files.h"
#include "data/manifest.h"
#include "data/shard.h"

void tr_batch_to_model(ag_ctx *ctx, const ds_batch *b, gm_groundinggpt_batch *out) {
    memset(out, 0, sizeof *out);
    out->B = b->B;
    out->T = b->T;
    out->ids = b->ids;
    out->targets = b->targets;
    out->lengths = b->lengths;
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
    // Every sample checked as it is read: a bad id or block otherwise fails deep in the model
    // naming only the micro-batch row, not the shard and sample.
    lc->vocab = gm_groundinggpt_vocab(c);
    lc->check_media = true;
    for (int k = 0; k < DS_MEDIA_KINDS; k++) {
        lc->media_patch_id[k] = c->tokens.patch[k];
        lc->media_start_id[k] = c->tokens.start[k];
        lc->media_end_id[k] = c->tokens.end[k];
    }
    ds_loader *l = ds_loader_open(lc);
    ds_media_geometry g[DS_MEDIA_KINDS];
    for (int k = 0; k < DS_MEDIA_KINDS; k++) g[k] = ds_loader_geometry(l, (ds_media_kind)k);
    check_geometry(g, c);
    return l;
}

// What one dataset's shards say, per media kind: the first shard holding it, its geometry and
// the patch tokens its first such sample carries; and the sample lengths. The samples longer
// than max_len (only those: reading every token of a large dataset at each start costs) are
// read and checked (ds_sample_check), and their media blocks placed against the cut.
typedef struct {
    ds_media_geometry geom[DS_MEDIA_KINDS];   // file: malloc'd
    int64_t samples, over, shortest, longest; // over: samples longer than max_len
    int64_t split;    // samples that the cut at max_len would split a media block of
    int64_t dropped;  // samples that it would cut before a block (the loader drops the row)
    char *split_file; // the first split one (malloc'd), for the message
    int64_t split_sample, split_at[2]; // its index in that shard, its block's tokens
    int split_kind;                    //
    int64_t (*bad)[2], nbad, bad_cap;  // data.max_len values that split a block
    int64_t whole;                     // any max_len from here up keeps every block whole
} dataset_survey;

static void survey_over(const char *path, ds_shard *sh, int64_t i, const ds_token_rules *rules,
                        int64_t max_len, int32_t **buf, int64_t *cap, dataset_survey *sv) {
    ds_sample_ref r = ds_shard_sample(sh, i);
    if (r.length > *cap) {
        *buf = ag_xrealloc(*buf, (size_t)r.length * sizeof **buf, "sample tokens");
        *cap = r.length;
    }
    ds_shard_read_tokens(sh, i, 1, *buf, NULL);
    const int32_t media[3] = {r.image, r.video, r.audio};
    ds_sample_blocks blk;
    char why[512];
    if (!ds_sample_check(rules, *buf, r.length, media, &blk, why, sizeof why))
        ag_fail("%s: sample %lld: %s", path, (long long)i, why);
    bool split = false, dropped = false;
    for (int k = 0; k < DS_MEDIA_KINDS; k++) {
        int64_t b = blk.begin[k], e = blk.end[k];
        if (b < 0 || e <= max_len) continue; // no block, or whole within the cut
        if (b < max_len && !split && !sv->split) {
            sv->split_file = ag_xstrdup(path);
            sv->split_sample = i, sv->split_kind = k;
            sv->split_at[0] = b, sv->split_at[1] = e - 1;
        }
        split |= b < max_len;
        dropped |= b >= max_len;
        // max_len in b+1 .. e-1 splits this block: a larger data.max_len must avoid those
        sv->bad = ag_xgrow(sv->bad, &sv->bad_cap, sv->nbad + 1, sizeof *sv->bad, "survey");
        sv->bad[sv->nbad][0] = b + 1, sv->bad[sv->nbad][1] = e - 1;
        sv->nbad++;
        if (e > sv->whole) sv->whole = e;
    }
    sv->split += split;
    sv->dropped += dropped && !split;
}

static int cmp_interval(const void *a, const void *b) {
    int64_t x = ((const int64_t *)a)[0], y = ((const int64_t *)b)[0];
    return (x > y) - (x < y);
}

// The smallest data.max_len >= from that splits none of the blocks surveyed.
static int64_t smallest_whole(dataset_survey *sv, int64_t from) {
    qsort(sv->bad, (size_t)sv->nbad, sizeof *sv->bad, cmp_interval);
    int64_t at = from;
    for (int64_t j = 0; j < sv->nbad && sv->bad[j][0] <= at; j++)
        if (sv->bad[j][1] >= at) at = sv->bad[j][1] + 1;
    return at;
}

static void survey_dataset(const char *dir, const gm_groundinggpt_config *mc, int64_t max_len,
                           dataset_survey *sv) {
    memset(sv, 0, sizeof *sv);
    sv->shortest = INT64_MAX;
    // Block sizes are not checked here: check_geometry names a wrong count with its pack option.
    ds_token_rules rules = {.vocab = gm_groundinggpt_vocab(mc), .media = true};
    for (int k = 0; k < DS_MEDIA_KINDS; k++) {
        rules.start[k] = mc->tokens.start[k];
        rules.patch[k] = mc->tokens.patch[k];
        rules.end[k] = mc->tokens.end[k];
        rules.tokens[k] = -1;
    }
    int32_t *buf = NULL;
    int64_t cap = 0;
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
            g->tokens = ds_shard_first_media_tokens(sh, k, mc->tokens.patch[k], &rules);
        }
        int64_t n = ds_shard_num_samples(sh);
        for (int64_t i = 0; i < n; i++) {
            int64_t len = ds_shard_sample(sh, i).length;
            sv->over += len > max_len;
            if (len > sv->longest) sv->longest = len;
            if (len < sv->shortest) sv->shortest = len;
            if (len > max_len) survey_over(path, sh, i, &rules, max_len, &buf, &cap, sv);
        }
        sv->samples += n;
        ds_shard_close(sh);
        free(path);
    }
    ds_manifest_free(&m);
    free(buf);
}

// A data.datasets entry names a folder that groundc pack made (it holds manifest.json); a
// shard, the manifest itself, a missing path are each one line at the config's entry.
static void check_dataset_dir(const char *dir, const char *at) {
    struct stat sb;
    if (stat(dir, &sb)) ag_fail("%s: data.datasets: %s: %s", at, dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) {
        char *parent = ag_xparent_dir(dir);
        ag_fail("%s: data.datasets: %s is a file, not a dataset folder (give the folder that "
                "groundc pack made, holding manifest.json: %s?)",
                at, dir, parent);
    }
    if (!ds_dir_has(dir, DS_MANIFEST_NAME))
        ag_fail("%s: data.datasets: %s holds no manifest.json: not a dataset folder made by "
                "groundc pack",
                at, dir);
}

void tr_batch_check_dataset_dirs(const tr_train_config *c) {
    for (int i = 0; i < c->n_datasets; i++)
        check_dataset_dir(c->datasets[i].dir, c->datasets_at[i] ? c->datasets_at[i] : "config");
}

// One tokenizer for all the datasets: their token ids mean one text to the model.
static void check_same_tokenizer(const tr_train_config *c) {
    char first[65] = "";
    for (int i = 0; i < c->n_datasets; i++) {
        ds_manifest m;
        ds_manifest_read(&m, c->datasets[i].dir);
        char digest[65];
        memcpy(digest, m.tokenizer_digest, sizeof digest);
        ds_manifest_free(&m);
        if (i == 0)
            memcpy(first, digest, sizeof first);
        else if (strcmp(digest, first))
            ag_fail("%s: data.datasets: %s was packed with another tokenizer than %s "
                    "(tokenizer_digest %.12s... and %.12s...): the same token ids would stand for "
                    "other text; pack them with one tokenizer",
                    c->datasets_at[i], c->datasets[i].dir, c->datasets[0].dir, digest, first);
    }
}

void tr_batch_check_datasets(const tr_train_config *c, FILE *log) {
    check_same_tokenizer(c);
    for (int i = 0; i < c->n_datasets; i++) {
        const char *dir = c->datasets[i].dir;
        dataset_survey sv;
        survey_dataset(dir, &c->model, c->max_len, &sv);
        check_geometry(sv.geom, &c->model);
        for (int k = 0; k < DS_MEDIA_KINDS; k++) free((char *)sv.geom[k].file);
        // where max_len was set, else where the dataset was named (max_len is the default)
        const char *at = c->max_len_at ? c->max_len_at : c->datasets_at[i];
        if (sv.split) {
            // The loader would cut these before the block and drop the media row: the sample's
            // answer would be about media the model never sees. Refused before training.
            static const char *const kinds[DS_MEDIA_KINDS] = {"image", "video", "audio"};
            int64_t n = smallest_whole(&sv, c->max_len), max_seq = c->model.llm.max_seq;
            char fix[256];
            if (n > max_seq)
                snprintf(fix, sizeof fix,
                         "no data.max_len up to the model's max_seq %lld keeps them whole: repack "
                         "with pack --max-len %lld (leaves out longer samples)",
                         (long long)max_seq, (long long)max_seq);
            else if (n < sv.whole)
                snprintf(fix, sizeof fix,
                         "the smallest data.max_len that keeps every block whole is %lld (and any "
                         "from %lld up)",
                         (long long)n, (long long)sv.whole);
            else
                snprintf(fix, sizeof fix, "set data.max_len to %lld or more", (long long)n);
            ag_fail("%s: data.max_len %lld cuts through the media placeholder block of %lld of "
                    "%lld samples of %s (e.g. %s sample %lld: %s block at tokens %lld..%lld): "
                    "the model needs every block whole; %s",
                    at, (long long)c->max_len, (long long)sv.split, (long long)sv.samples, dir,
                    sv.split_file, (long long)sv.split_sample, kinds[sv.split_kind],
                    (long long)sv.split_at[0], (long long)sv.split_at[1], fix);
        }
        free(sv.split_file);
        free(sv.bad);
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
                "longest %lld tokens) and are cut to it, answers with them%s\n",
                dir, (long long)sv.over, (long long)sv.samples, (long long)c->max_len,
                (long long)sv.longest,
                sv.dropped ? "; in some the cut falls before a media block, and the sample goes "
                             "without its media"
                           : "");
    }
}
