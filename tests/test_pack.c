// test_pack.c: `groundc pack` end to end. Packs `groundc synth` data, a JSON file of bad and
// unusual samples and a custom grounding JSONL file with small model sizes, then reads the
// shards back and checks every sample against an independent reconstruction: token ids (the
// template's pieces tokenized by the documented rules, added ids looked up by name), decoded
// text (= the rendered conversation with placeholders expanded), the loss mask (decoded masked
// runs = the answers + "\n###"), media rows (= ds_image_load / ds_video_load /
// ds_audio_file_features of the file, one row per file per shard), task, granularity, source
// and sample_meta; JSONL boxes and spans against data/grounding.h on the same numbers. Also:
// byte-identical output for 1, 2 and 3 threads and across runs (into a folder holding an older
// dataset with more shards), bad samples reported as "FILE: sample I: reason" (JSON) or
// "FILE:LINE: reason" (JSONL) and skipped (a NUL character in the text among them), and
// --on-error fail exiting non-zero with that line while leaving the old dataset untouched; a
// pack killed or failing while it publishes leaving the old dataset usable, and a write error
// leaving no staging folder; --zstd-level writing that level into every dataset's filter.
#include <cjson/cJSON.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hdf5.h>

#include "autograd/error.h"
#include "data/audio.h"
#include "data/grounding.h"
#include "data/h5zstd.h"
#include "data/image.h"
#include "data/jsonl.h"
#include "data/manifest.h"
#include "data/shard.h"
#include "data/template.h"
#include "data/tokenizer.h"
#include "data/video.h"
#include "testlib.h"

// small model sizes so the test is fast
#define IMG_S   32
#define IMG_P   4
#define VID_F   4
#define VID_S   16
#define VID_P   3
#define AUD_P   2
#define MAX_LEN 400
#define SIZES                                                                                      \
    "--image-size 32 --image-tokens 4 --video-frames 4 --video-size 16 --video-tokens 3 "          \
    "--audio-tokens 2 --shard-samples 20 --max-len 400"

static char g_dir[256], g_synth[512], g_bad[512], g_jsonl[512], g_tok[1024];

static void spit(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

// Runs `groundc ARGS` with stdout and stderr into g_dir/TAG.out / TAG.err; the exit status.
static int groundc(const char *tag, const char *args) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s/groundc %s >%s/%s.out 2>%s/%s.err", GROUNDC_BINARY_DIR, args,
             g_dir, tag, g_dir, tag);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static char *output(const char *tag, const char *ext) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.%s", g_dir, tag, ext);
    char *s = tl_slurp(path, NULL);
    return s ? s : strdup("");
}

static bool same_tree(const char *a, const char *b) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "diff -r %s %s >/dev/null", a, b);
    return system(cmd) == 0;
}

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static cJSON *manifest_json(const char *dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    char *text = tl_slurp(path, NULL);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    free(text);
    return j;
}

// Whether folder b holds the dataset of folder a: the same manifest but for the shard names (a
// pack into a folder holding a dataset takes the other name set), byte-identical shards and,
// when only, nothing else in b.
static bool same_dataset(const char *a, const char *b, bool only) {
    cJSON *ja = manifest_json(a), *jb = manifest_json(b);
    const cJSON *sa = cJSON_GetObjectItem(ja, "shards"), *sb = cJSON_GetObjectItem(jb, "shards");
    int n = cJSON_GetArraySize(sa);
    bool same = ja && jb && n > 0 && cJSON_GetArraySize(sb) == n;
    for (int k = 0; same && k < n; k++) {
        cJSON *ea = cJSON_GetArrayItem(sa, k), *eb = cJSON_GetArrayItem(sb, k);
        const cJSON *fa = cJSON_GetObjectItem(ea, "file"), *fb = cJSON_GetObjectItem(eb, "file");
        same = cJSON_IsString(fa) && cJSON_IsString(fb);
        if (!same) break;
        char cmd[2048];
        snprintf(cmd, sizeof cmd, "cmp -s %s/%s %s/%s", a, fa->valuestring, b, fb->valuestring);
        same = system(cmd) == 0;
        cJSON_ReplaceItemInObject(eb, "file", cJSON_CreateString(fa->valuestring));
    }
    same = same && cJSON_Compare(ja, jb, true);
    cJSON_Delete(ja), cJSON_Delete(jb);
    if (!same || !only) return same;
    int entries = 0;
    DIR *d = opendir(b);
    for (struct dirent *e; d && (e = readdir(d));)
        entries += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    if (d) closedir(d);
    return entries == n + 1;
}

// ---- what we expect, built without the packer ----

typedef struct {
    const char *file; // as given on the command line
    int64_t index;
    cJSON *id; // NULL when the sample has none
    int n_turns;
    ds_turn turns[8]; // texts owned
    char *media[DS_MEDIA_KINDS];
    int task, granularity;
    const char *source;
} expect;

static expect g_exp[256];
static int g_n_exp;

static expect *push_expect(const char *file, int64_t index, const char *source) {
    expect *e = &g_exp[g_n_exp++];
    memset(e, 0, sizeof *e);
    e->file = file, e->index = index, e->source = source;
    return e;
}

static char *media_path(const char *rel) {
    char *s = malloc(strlen(g_synth) + strlen(rel) + 2);
    sprintf(s, "%s/%s", g_synth, rel);
    return s;
}

// Reference-format samples of file at the given indices (all when idx is NULL).
static void expect_json(const char *file, const char *source, const int *idx, int n_idx,
                        const int *tasks) {
    char *text = tl_slurp(file, NULL);
    cJSON *root = cJSON_Parse(text);
    int n = n_idx ? n_idx : cJSON_GetArraySize(root);
    for (int k = 0; k < n; k++) {
        int i = idx ? idx[k] : k;
        const cJSON *s = cJSON_GetArrayItem(root, i);
        expect *e = push_expect(file, i, source);
        const cJSON *id = cJSON_GetObjectItem(s, "id");
        e->id = id ? cJSON_Duplicate(id, true) : NULL;
        const char *keys[] = {"image", "video", "sound"};
        for (int m = 0; m < DS_MEDIA_KINDS; m++)
            if (cJSON_GetObjectItem(s, keys[m]))
                e->media[m] = media_path(cJSON_GetObjectItem(s, keys[m])->valuestring);
        const cJSON *t;
        cJSON_ArrayForEach(t, cJSON_GetObjectItem(s, "conversations")) {
            e->turns[e->n_turns].from_human =
                !strcmp(cJSON_GetObjectItem(t, "from")->valuestring, "human");
            e->turns[e->n_turns++].text = strdup(cJSON_GetObjectItem(t, "value")->valuestring);
        }
        const cJSON *task = cJSON_GetObjectItem(s, "task");
        e->task = task ? ds_task_from_name(task->valuestring) : tasks[k];
        e->granularity = e->task >= DS_TASK_REC && e->task <= DS_TASK_SOUND;
    }
    cJSON_Delete(root);
    free(text);
}

static void expect_jsonl(int64_t line, const char *rel, int kind, const char *question,
                         const char *answer) {
    expect *e = push_expect(g_jsonl, line, "ground");
    e->media[kind] = media_path(rel);
    e->n_turns = 2;
    e->turns[0] = (ds_turn){true, strdup(question)};
    e->turns[1] = (ds_turn){false, strdup(answer)};
    e->task = kind == DS_MEDIA_IMAGE   ? DS_TASK_REC
              : kind == DS_MEDIA_VIDEO ? DS_TASK_TVG
                                       : DS_TASK_SOUND;
    e->granularity = 1;
}

// ---- media, decoded once per file for the comparisons ----

typedef struct {
    char *path;
    int kind;
    void *data;
    int w, h;
    float duration;
} ref_media;
static ref_media g_ref[64];
static int g_n_ref;

static const ref_media *reference(const char *path, int kind) {
    for (int i = 0; i < g_n_ref; i++)
        if (g_ref[i].kind == kind && !strcmp(g_ref[i].path, path)) return &g_ref[i];
    ref_media *r = &g_ref[g_n_ref++];
    r->path = strdup(path), r->kind = kind;
    if (kind == DS_MEDIA_IMAGE) {
        r->data = malloc(IMG_S * IMG_S * 3);
        ds_image_info info;
        ds_image_load(path, IMG_S, r->data, &info);
        r->w = info.width, r->h = info.height;
    } else if (kind == DS_MEDIA_VIDEO) {
        r->data = malloc(VID_F * VID_S * VID_S * 3);
        ds_video_info info;
        ds_video_load(path, VID_F, VID_S, r->data, &info);
        r->duration = (float)info.duration;
    } else {
        size_t n = DS_AUDIO_CLIPS * DS_AUDIO_FRAMES * DS_AUDIO_MELS;
        float *x = malloc(n * sizeof *x);
        double d;
        ds_audio_file_features(path, x, &d);
        for (size_t i = 0; i < n; i++) x[i] = ds_f32_from_f16(ds_f16_from_f32(x[i])); // stored
        r->data = x;
        r->duration = (float)d;
    }
    return r;
}

// ---- checking one packed sample ----

static const char *const added[9] = {"<im_patch>", "<im_start>", "<im_end>",
                                     "<vi_patch>", "<vi_start>", "<vi_end>",
                                     "<so_patch>", "<so_start>", "<so_end>"};
static const int patches[DS_MEDIA_KINDS] = {IMG_P, VID_P, AUD_P};

static void append_ids(int32_t **ids, uint8_t **mask, int64_t *n, const int32_t *add, int64_t k,
                       uint8_t m) {
    *ids = realloc(*ids, sizeof **ids * (size_t)(*n + k + 1));
    *mask = realloc(*mask, (size_t)(*n + k + 1));
    for (int64_t i = 0; i < k; i++) (*ids)[*n + i] = add[i], (*mask)[*n + i] = m;
    *n += k;
}

static void strcat_grow(char **s, size_t *len, const char *add) {
    size_t k = strlen(add);
    *s = realloc(*s, *len + k + 1);
    memcpy(*s + *len, add, k + 1);
    *len += k;
}

typedef struct {
    int32_t rows[DS_MEDIA_KINDS][64];
    char *paths[DS_MEDIA_KINDS][64];
    int n[DS_MEDIA_KINDS];
} shard_media;

static void check_sample(const ds_tokenizer *tok, ds_shard *sh, int64_t i, const expect *e,
                         shard_media *seen, int64_t *max_len) {
    const char *sname = ds_shard_path(sh);
    ds_sample_ref ref = ds_shard_sample(sh, i);
    int32_t *tokens = malloc(sizeof *tokens * (size_t)(ref.length + 1));
    uint8_t *mask = malloc((size_t)ref.length + 1);
    ds_shard_read_tokens(sh, i, 1, tokens, mask);
    if (ref.length > *max_len) *max_len = ref.length;

    // ids by the piece rules, independently
    ds_rendered rd;
    char err[256];
    TL_CHECK(ds_render(e->turns, e->n_turns, &rd, err, sizeof err), "%s:%lld: %s", e->file,
             (long long)e->index, err);
    int32_t *want = NULL;
    uint8_t *want_mask = NULL;
    int64_t n_want = 0;
    char *text = NULL;
    size_t text_len = 0;
    strcat_grow(&text, &text_len, "");
    for (int p = 0; p < rd.n; p++) {
        const ds_piece *pc = &rd.pieces[p];
        if (pc->is_media) {
            int k = pc->media;
            int32_t start = ds_tokenizer_piece_to_id(tok, added[3 * k + 1]);
            int32_t patch = ds_tokenizer_piece_to_id(tok, added[3 * k]);
            int32_t end = ds_tokenizer_piece_to_id(tok, added[3 * k + 2]);
            append_ids(&want, &want_mask, &n_want, &start, 1, 0);
            for (int j = 0; j < patches[k]; j++)
                append_ids(&want, &want_mask, &n_want, &patch, 1, 0);
            append_ids(&want, &want_mask, &n_want, &end, 1, 0);
            strcat_grow(&text, &text_len, added[3 * k + 1]);
            for (int j = 0; j < patches[k]; j++) strcat_grow(&text, &text_len, added[3 * k]);
            strcat_grow(&text, &text_len, added[3 * k + 2]);
        } else {
            int64_t m;
            int32_t *ids =
                ds_tokenizer_encode_alloc(tok, pc->text, strlen(pc->text),
                                          p == 0 ? DS_TOK_ADD_BOS : DS_TOK_NO_DUMMY_PREFIX, &m);
            append_ids(&want, &want_mask, &n_want, ids, m, pc->supervised);
            free(ids);
            strcat_grow(&text, &text_len, pc->text);
        }
    }
    ds_rendered_free(&rd);
    bool same = n_want == ref.length && !memcmp(want, tokens, sizeof *want * (size_t)n_want) &&
                !memcmp(want_mask, mask, (size_t)n_want);
    TL_CHECK(same, "%s sample %lld (%s:%lld): tokens or mask differ from the piece rules", sname,
             (long long)i, e->file, (long long)e->index);
    TL_CHECK(ref.length > 0 && tokens[0] == ds_tokenizer_bos_id(tok), "%s sample %lld: no BOS",
             sname, (long long)i);

    // decoding gives the rendered text with the placeholders expanded
    char *dec = ds_tokenizer_decode(tok, tokens, ref.length, NULL);
    TL_CHECK(!strcmp(dec, text), "%s sample %lld: decodes to\n\"%s\"\nwant\n\"%s\"", sname,
             (long long)i, dec, text);
    free(dec);

    // the masked runs decode to the answers + "\n###", in order
    int answer = 0, runs = 0;
    for (int64_t t = 0; t < ref.length;) {
        if (!mask[t]) {
            t++;
            continue;
        }
        int64_t u = t;
        while (u < ref.length && mask[u]) u++;
        char *run = ds_tokenizer_decode(tok, tokens + t, u - t, NULL);
        while (answer < e->n_turns && e->turns[answer].from_human) answer++;
        if (answer < e->n_turns) {
            const char *a = e->turns[answer].text;
            char want_run[4096];
            size_t len = strlen(a);
            while (len && (a[len - 1] == ' ' || a[len - 1] == '\n')) len--;
            while (*a == ' ' || *a == '\n') a++, len--;
            snprintf(want_run, sizeof want_run, "%.*s\n###", (int)len, a);
            TL_CHECK(!strcmp(run, want_run), "%s sample %lld: masked run \"%s\", want \"%s\"",
                     sname, (long long)i, run, want_run);
        } else {
            TL_CHECK(0, "%s sample %lld: more masked runs than answers", sname, (long long)i);
        }
        answer++, runs++;
        free(run);
        t = u;
    }
    int n_answers = 0;
    for (int k = 0; k < e->n_turns; k++) n_answers += !e->turns[k].from_human;
    TL_CHECK(runs == n_answers, "%s sample %lld: %d masked runs for %d answers", sname,
             (long long)i, runs, n_answers);

    // task, granularity, source
    TL_CHECK(ref.task == e->task && ref.granularity == e->granularity,
             "%s sample %lld (%s:%lld): task %d granularity %d, want %d %d", sname, (long long)i,
             e->file, (long long)e->index, ref.task, ref.granularity, e->task, e->granularity);
    const char *src = ds_shard_source_name(sh, ref.source);
    TL_CHECK(!strcmp(src, e->source), "%s sample %lld: source %s, want %s", sname, (long long)i,
             src, e->source);

    // meta: id, file, index and the first box / span of the answers
    char *meta = ds_shard_read_meta(sh, i);
    cJSON *mj = cJSON_Parse(meta);
    TL_CHECK(mj != NULL, "%s sample %lld: meta %s", sname, (long long)i, meta);
    const cJSON *id = cJSON_GetObjectItem(mj, "id");
    TL_CHECK(e->id ? id && cJSON_Compare(id, e->id, true) : !id, "%s sample %lld: meta id %s",
             sname, (long long)i, meta);
    TL_CHECK(cJSON_IsString(cJSON_GetObjectItem(mj, "file")) &&
                 !strcmp(cJSON_GetObjectItem(mj, "file")->valuestring, e->file) &&
                 cJSON_GetObjectItem(mj, "index")->valuedouble == (double)e->index,
             "%s sample %lld: meta %s", sname, (long long)i, meta);
    ds_box box = {0};
    ds_span span = {0};
    bool have_box = false, have_span = false;
    for (int k = 0; k < e->n_turns; k++) {
        if (e->turns[k].from_human) continue;
        ds_box b;
        ds_span s;
        if (!have_box && ds_parse_box(e->turns[k].text, &b)) box = b, have_box = true;
        if (!have_span && ds_parse_span(e->turns[k].text, &s)) span = s, have_span = true;
    }
    const cJSON *mb = cJSON_GetObjectItem(mj, "box"), *ms = cJSON_GetObjectItem(mj, "span");
    TL_CHECK(have_box == (mb != NULL) && have_span == (ms != NULL),
             "%s sample %lld: meta %s box/span presence", sname, (long long)i, meta);
    if (have_box && mb) {
        double v[4] = {box.x1, box.y1, box.x2, box.y2};
        for (int k = 0; k < 4; k++)
            TL_CHECK(cJSON_GetArrayItem(mb, k)->valuedouble == v[k], "%s sample %lld: meta %s",
                     sname, (long long)i, meta);
    }
    if (have_span && ms)
        TL_CHECK(cJSON_GetArrayItem(ms, 0)->valuedouble == span.t1 &&
                     cJSON_GetArrayItem(ms, 1)->valuedouble == span.t2,
                 "%s sample %lld: meta %s", sname, (long long)i, meta);
    cJSON_Delete(mj);
    free(meta);

    // media rows: the file's preprocessing, one row per file in the shard
    const ds_shard_header *h = ds_shard_get_header(sh);
    int32_t rows[DS_MEDIA_KINDS] = {ref.image, ref.video, ref.audio};
    for (int k = 0; k < DS_MEDIA_KINDS; k++) {
        TL_CHECK((rows[k] >= 0) == (e->media[k] != NULL), "%s sample %lld: media %d row %d", sname,
                 (long long)i, k, rows[k]);
        if (rows[k] < 0 || !e->media[k]) continue;
        bool known = false;
        for (int j = 0; j < seen->n[k]; j++) {
            if (strcmp(seen->paths[k][j], e->media[k]) != 0) continue;
            known = true;
            TL_CHECK(seen->rows[k][j] == rows[k], "%s: %s in rows %d and %d", sname, e->media[k],
                     seen->rows[k][j], rows[k]);
        }
        if (known) continue;
        seen->paths[k][seen->n[k]] = e->media[k];
        seen->rows[k][seen->n[k]++] = rows[k];
        const ref_media *r = reference(e->media[k], k);
        if (k == DS_MEDIA_IMAGE) {
            uint8_t *img = malloc(IMG_S * IMG_S * 3);
            ds_shard_read_image(sh, rows[k], img);
            int32_t wh[2];
            ds_shard_image_orig_size(sh, rows[k], wh);
            TL_CHECK(h->image_size == IMG_S && !memcmp(img, r->data, IMG_S * IMG_S * 3) &&
                         wh[0] == r->w && wh[1] == r->h,
                     "%s: image row %d differs from ds_image_load(%s)", sname, rows[k],
                     e->media[k]);
            free(img);
        } else if (k == DS_MEDIA_VIDEO) {
            uint8_t *v = malloc(VID_F * VID_S * VID_S * 3);
            ds_shard_read_video(sh, rows[k], v);
            TL_CHECK(h->video_frames == VID_F && h->video_size == VID_S &&
                         !memcmp(v, r->data, VID_F * VID_S * VID_S * 3) &&
                         ds_shard_video_duration(sh, rows[k]) == r->duration,
                     "%s: video row %d differs from ds_video_load(%s)", sname, rows[k],
                     e->media[k]);
            free(v);
        } else {
            size_t n = DS_AUDIO_CLIPS * DS_AUDIO_FRAMES * DS_AUDIO_MELS;
            float *a = malloc(n * sizeof *a);
            ds_shard_read_audio(sh, rows[k], a);
            TL_CHECK(h->audio_clips == DS_AUDIO_CLIPS && h->audio_frames == DS_AUDIO_FRAMES &&
                         h->audio_mels == DS_AUDIO_MELS && !memcmp(a, r->data, n * sizeof *a) &&
                         ds_shard_audio_duration(sh, rows[k]) == r->duration,
                     "%s: audio row %d differs from ds_audio_file_features(%s)", sname, rows[k],
                     e->media[k]);
            free(a);
        }
    }
    free(tokens), free(mask), free(want), free(want_mask), free(text);
}

// Reads the dataset in dir and checks it against g_exp, in order.
static void check_dataset(const char *dir, const ds_tokenizer *tok) {
    ds_manifest m;
    ds_manifest_read(&m, dir);
    ds_manifest_verify(&m, dir, true);
    TL_CHECK(m.num_samples == g_n_exp, "%lld samples packed, want %d", (long long)m.num_samples,
             g_n_exp);
    TL_CHECK(m.num_shards == (g_n_exp + 19) / 20, "%d shards for %d samples of 20 per shard",
             m.num_shards, g_n_exp);
    int64_t at = 0, max_len = 0;
    for (int s = 0; s < m.num_shards; s++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, m.shards[s].file);
        ds_shard *sh = ds_shard_open(path);
        const ds_shard_header *h = ds_shard_get_header(sh);
        shard_media seen = {0};
        for (int64_t i = 0; i < ds_shard_num_samples(sh) && at < g_n_exp; i++, at++)
            check_sample(tok, sh, i, &g_exp[at], &seen, &max_len);
        TL_CHECK(h->num_images == seen.n[0] && h->num_videos == seen.n[1] &&
                     h->num_audios == seen.n[2],
                 "%s: %lld/%lld/%lld media rows for %d/%d/%d distinct files", path,
                 (long long)h->num_images, (long long)h->num_videos, (long long)h->num_audios,
                 seen.n[0], seen.n[1], seen.n[2]);
        TL_CHECK(h->image_size == (h->num_images ? IMG_S : 0), "%s: image_size %d", path,
                 h->image_size);
        ds_shard_close(sh);
    }
    TL_CHECK(at == g_n_exp, "read %lld samples, want %d", (long long)at, g_n_exp);
    TL_CHECK(max_len <= MAX_LEN, "longest sample %lld tokens", (long long)max_len);
    printf("checked %lld samples in %d shards (longest %lld tokens)\n", (long long)at, m.num_shards,
           (long long)max_len);
    ds_manifest_free(&m);
}

// ---- the custom grounding path on its own ----

static void test_grounding_records(void) {
    char err[256], *q, *a;
    cJSON *o = cJSON_Parse("{\"image\": \"a.png\", \"expression\": \" the red cup. \", "
                           "\"bbox\": [10, 20, 30, 40]}");
    ds_grounding_record g;
    TL_CHECK(ds_grounding_record_parse(o, &g, err, sizeof err), "rec record: %s", err);
    TL_CHECK(ds_grounding_conversation(&g, 200, 100, (ds_timeline){0, 0}, &q, &a, err, sizeof err),
             "%s", err);
    char want[128];
    ds_format_box(ds_box_to_square((ds_box){10, 20, 40, 60}, 200, 100), want, sizeof want);
    TL_CHECK(!strcmp(a, want) && !strcmp(a, "[0.050, 0.350, 0.200, 0.550]"), "answer %s", a);
    TL_CHECK(!strcmp(q, "<image>\nCan you describe the region that corresponds to the red cup "
                        "in this image?"),
             "question %s", q);
    free(q), free(a);
    // within the 1-pixel tolerance: clamped; beyond: refused
    TL_CHECK(ds_grounding_conversation(&g, 40, 60, (ds_timeline){0, 0}, &q, &a, err, sizeof err),
             "%s", err);
    ds_format_box(ds_box_to_square((ds_box){10, 20, 40, 60}, 40, 60), want, sizeof want);
    TL_CHECK(!strcmp(a, want), "answer %s want %s", a, want);
    free(q), free(a);
    TL_CHECK(!ds_grounding_conversation(&g, 38, 60, (ds_timeline){0, 0}, &q, &a, err, sizeof err) &&
                 strstr(err, "outside the 38x60 image"),
             "box outside: %s", err);
    cJSON_Delete(o);
    // Within the tolerance yet wholly left of the image: clamping would reverse it (found by
    // fuzz_pack_jsonl: "[0.125, 0.000, 0.124, 0.016]" in a portrait image).
    o = cJSON_Parse("{\"image\": \"a.png\", \"expression\": \"x\", \"bbox\": [-1, 0, 0.5, 10]}");
    TL_CHECK(ds_grounding_record_parse(o, &g, err, sizeof err), "%s", err);
    TL_CHECK(
        !ds_grounding_conversation(&g, 480, 640, (ds_timeline){0, 0}, &q, &a, err, sizeof err) &&
            strstr(err, "misses the 480x640 image"),
        "box beside the image: %s", err);
    cJSON_Delete(o);

    o = cJSON_Parse("{\"video\": \"v.mp4\", \"query\": \"a man opens the door\", \"span\": [1.5, "
                    "4.5]}");
    TL_CHECK(ds_grounding_record_parse(o, &g, err, sizeof err) && g.kind == DS_MEDIA_VIDEO, "%s",
             err);
    TL_CHECK(ds_grounding_conversation(&g, 0, 0, (ds_timeline){0, 10.0}, &q, &a, err, sizeof err),
             "%s", err);
    TL_CHECK(!strcmp(a, "{0.15, 0.45}") &&
                 !strcmp(q, "<video>\nWhen does \"a man opens the door\" happen in the video?"),
             "%s / %s", q, a);
    free(q), free(a);
    TL_CHECK(!ds_grounding_conversation(&g, 0, 0, (ds_timeline){0, 3.9}, &q, &a, err, sizeof err) &&
                 strstr(err, "outside"),
             "span outside: %s", err);
    TL_CHECK(ds_grounding_conversation(&g, 0, 0, (ds_timeline){0, 4.2}, &q, &a, err, sizeof err) &&
                 !strcmp(a, "{0.36, 1.00}"),
             "span within tolerance: %s", err);
    free(q), free(a);
    // Frames from 0.5 s to 10.5 s of the file (a video that starts after its audio): the
    // span [1.5, 4.5] s is [1, 4] s into the frames; one starting before them is clamped, one
    // ending before them or starting after them refused; and the way back.
    ds_timeline late = {0.5, 10.0};
    TL_CHECK(ds_grounding_conversation(&g, 0, 0, late, &q, &a, err, sizeof err) &&
                 !strcmp(a, "{0.10, 0.40}"),
             "span on a late timeline: %s %s", err, a);
    free(q), free(a);
    ds_span back = ds_span_from_timeline((ds_span){0.10, 0.40}, late);
    TL_CHECK(fabs(back.t1 - 1.5) < 1e-12 && fabs(back.t2 - 4.5) < 1e-12, "back: {%g, %g}", back.t1,
             back.t2);
    g.v[0] = 0.2, g.v[1] = 1.5;
    TL_CHECK(ds_grounding_conversation(&g, 0, 0, late, &q, &a, err, sizeof err) &&
                 !strcmp(a, "{0.00, 0.10}"),
             "span from before the first frame: %s %s", err, a);
    free(q), free(a);
    g.v[0] = 0.1, g.v[1] = 0.4;
    TL_CHECK(!ds_grounding_conversation(&g, 0, 0, late, &q, &a, err, sizeof err) &&
                 strstr(err, "ends before the video's first frame at 0.500 s"),
             "span before the frames: %s", err);
    g.v[0] = 10.6, g.v[1] = 10.9;
    TL_CHECK(!ds_grounding_conversation(&g, 0, 0, late, &q, &a, err, sizeof err) &&
                 strstr(err, "outside the video's frames (0.500 to 10.500 s)"),
             "span after the frames: %s", err);
    cJSON_Delete(o);
    // A start of -0 (valid JSON) must not print as "-0.00" (found by fuzz_pack_jsonl).
    o = cJSON_Parse("{\"sound\": \"a.wav\", \"query\": \"x\", \"span\": [-0.0, 0.1]}");
    TL_CHECK(ds_grounding_record_parse(o, &g, err, sizeof err), "%s", err);
    TL_CHECK(ds_grounding_conversation(&g, 0, 0, (ds_timeline){0, 10.0}, &q, &a, err, sizeof err) &&
                 !strcmp(a, "{0.00, 0.01}"),
             "span from -0: %s", a);
    free(q), free(a);
    cJSON_Delete(o);
    // Rounded to the answer's decimals, a span of 1 ms in 4 s ({0.25, 0.25}) and a box of
    // 0.01 px ([0.065, 0.009, 0.065, 0.009]) are empty: refused, not trained as targets no
    // answer can overlap; 0.02 s and 0.6 px survive the rounding.
    o = cJSON_Parse("{\"video\": \"v.mp4\", \"query\": \"x\", \"span\": [1.001, 1.002]}");
    TL_CHECK(ds_grounding_record_parse(o, &g, err, sizeof err), "%s", err);
    TL_CHECK(!ds_grounding_conversation(&g, 0, 0, (ds_timeline){0, 4.0}, &q, &a, err, sizeof err) &&
                 strstr(err, "is empty at the 2 decimals") && strstr(err, "{0.25, 0.25}"),
             "span empty once rounded: %s", err);
    g.v[1] = 1.021;
    TL_CHECK(ds_grounding_conversation(&g, 0, 0, (ds_timeline){0, 4.0}, &q, &a, err, sizeof err) &&
                 !strcmp(a, "{0.25, 0.26}"),
             "short span: %s %s", err, a);
    free(q), free(a);
    cJSON_Delete(o);
    o = cJSON_Parse("{\"image\": \"a.png\", \"expression\": \"x\", \"bbox\": [1, 1, 0.01, 0.01]}");
    TL_CHECK(ds_grounding_record_parse(o, &g, err, sizeof err), "%s", err);
    TL_CHECK(
        !ds_grounding_conversation(&g, 96, 108, (ds_timeline){0, 0}, &q, &a, err, sizeof err) &&
            strstr(err, "has no area at the 3 decimals") &&
            strstr(err, "[0.065, 0.009, 0.065, 0.009]"),
        "box empty once rounded: %s", err);
    g.v[2] = g.v[3] = 0.6;
    TL_CHECK(ds_grounding_conversation(&g, 96, 108, (ds_timeline){0, 0}, &q, &a, err, sizeof err),
             "small box: %s", err);
    free(q), free(a);
    cJSON_Delete(o);
    // "###" starts a turn: a query holding it would smuggle a made-up answer into the question
    o = cJSON_Parse("{\"video\": \"v.mp4\", \"query\": \"x\\n### Assistant: {0.1, 0.2}\", "
                    "\"span\": [1, 2]}");
    TL_CHECK(ds_grounding_record_parse(o, &g, err, sizeof err), "%s", err);
    TL_CHECK(!ds_grounding_conversation(&g, 0, 0, (ds_timeline){0, 4.0}, &q, &a, err, sizeof err) &&
                 strstr(err, "the query holds \"###\""),
             "### in a query: %s", err);
    cJSON_Delete(o);

    const char *bad[] = {"{\"image\": \"a.png\", \"bbox\": [1, 2, 3, 4]}",
                         "{\"image\": \"a.png\", \"expression\": \"x\", \"bbox\": [1, 2, 3]}",
                         "{\"video\": \"v.mp4\", \"image\": \"a.png\", \"query\": \"x\"}",
                         "{\"sound\": 3, \"query\": \"x\", \"span\": [0, 1]}",
                         "{\"query\": \"x\", \"span\": [0, 1]}",
                         "[1, 2]"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        o = cJSON_Parse(bad[i]);
        TL_CHECK(!ds_grounding_record_parse(o, &g, err, sizeof err) && err[0], "accepted %s",
                 bad[i]);
        cJSON_Delete(o);
    }
    // a key given twice: cJSON would find the first; refused instead
    o = cJSON_Parse("{\"image\": \"a.png\", \"image\": \"b.png\", \"expression\": \"x\", "
                    "\"bbox\": [1, 1, 2, 2]}");
    TL_CHECK(!ds_grounding_record_parse(o, &g, err, sizeof err) &&
                 strstr(err, "key \"image\" appears twice"),
             "a key twice: %s", err);
    cJSON_Delete(o);
    // ... with a line break in it (JSON's \r): the reason stays one line (found by fuzzing)
    o = cJSON_Parse("{\"q\\ry\": \"x\", \"q\\ry\": \"y\", \"audio\": \"a.wav\"}");
    TL_CHECK(!ds_grounding_record_parse(o, &g, err, sizeof err) &&
                 strstr(err, "key \"q?y\" appears twice") && !strpbrk(err, "\r\n"),
             "a key with a line break twice: %s", err);
    cJSON_Delete(o);
    // a JSONL file saved as UTF-16 (a byte order mark, or none): one line saying so
    char u16[600];
    snprintf(u16, sizeof u16, "%s/u16.jsonl", g_dir);
    const char *enc[2] = {"\xff\xfe{\0\"\0", "{\0\"\0i\0"};
    for (int k = 0; k < 2; k++) {
        FILE *f = fopen(u16, "wb");
        TL_CHECK(f && fwrite(enc[k], 1, 6, f) == 6 && fclose(f) == 0, "cannot write %s", u16);
        ds_record_file rf;
        TL_EXPECT_FAIL(ds_records_read_jsonl(u16, &rf), "u16.jsonl: is UTF-16", "not UTF-8");
    }
    o = cJSON_Parse("{\"audio\": \"a.wav\", \"query\": \"a dog\", \"span\": [0, 1]}");
    TL_CHECK(ds_grounding_record_parse(o, &g, err, sizeof err) && g.kind == DS_MEDIA_AUDIO &&
                 !strcmp(g.media, "a.wav"),
             "audio key: %s", err);
    cJSON_Delete(o);
}

// The reference-format fields on their own.
static void test_json_samples(void) {
    char err[256];
    int task, n;
    ds_turn *turns;
    cJSON *o = cJSON_Parse("{\"task\": \"tvg\", \"conversations\": [{\"from\": \"human\", "
                           "\"value\": \"<video>\\nWhen?\"}, {\"from\": \"gpt\", \"value\": "
                           "\"{0.10, 0.20}\"}]}");
    TL_CHECK(ds_json_sample_turns(o, &task, &turns, &n, err, sizeof err) && task == DS_TASK_TVG &&
                 n == 2 && turns[0].from_human && !turns[1].from_human,
             "turns: %s", err);
    TL_CHECK(ds_infer_task(turns, n, true, false) == DS_TASK_TVG &&
                 ds_infer_task(turns, n, false, true) == DS_TASK_SOUND &&
                 ds_infer_task(turns, n, false, false) == DS_TASK_CAPTION,
             "inferred tasks");
    free(turns);
    cJSON_Delete(o);
    // The grounding tasks are single exchanges: a box or span in a later answer of a
    // conversation (Flickr30K-style) keeps it a conversation; eval scores rec by the first
    // answer.
    ds_turn one[2] = {{true, "<image>\nWhere is the dog?"}, {false, "[0.1, 0.2, 0.3, 0.4]"}};
    ds_turn conv[4] = {{true, "<image>\nWhat is happening?"},
                       {false, "Two people walk a dog."},
                       {true, "Where is the dog?"},
                       {false, "The dog [0.100, 0.200, 0.300, 0.400] is on the left."}};
    ds_turn reg[4] = {{true, "<video>\nWhat is at [0.1, 0.2, 0.3, 0.4]?"},
                      {false, "A dog."},
                      {true, "When does it bark?"},
                      {false, "{0.10, 0.20}"}};
    TL_CHECK(ds_infer_task(one, 2, false, false) == DS_TASK_REC &&
                 ds_infer_task(conv, 4, false, false) == DS_TASK_CONVERSATION &&
                 ds_infer_task(reg, 4, true, false) == DS_TASK_CONVERSATION,
             "conversations with a box: tasks %d, %d, %d", ds_infer_task(one, 2, false, false),
             ds_infer_task(conv, 4, false, false), ds_infer_task(reg, 4, true, false));
    // A speaker name is quoted in the reason, which must stay one line (found by
    // fuzz_pack_json) and must not end in half a UTF-8 character.
    o = cJSON_Parse("{\"conversations\": [{\"from\": \"a\\nb\", \"value\": \"x\"}]}");
    TL_CHECK(!ds_json_sample_turns(o, &task, &turns, &n, err, sizeof err) &&
                 strstr(err, "is from \"a?b\"") && !strchr(err, '\n'),
             "speaker with a newline: %s", err);
    cJSON_Delete(o);
    o = cJSON_Parse(
        "{\"conversations\": [{\"from\": "
        "\"x\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"
        "\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\", \"value\": \"x\"}]}");
    TL_CHECK(!ds_json_sample_turns(o, &task, &turns, &n, err, sizeof err) &&
                 strstr(err, "is from \"x\xc3\xa9") && strstr(err, "\xc3\xa9\" (expected"),
             "long speaker: %s", err);
    cJSON_Delete(o);
    const char *files[DS_MEDIA_KINDS];
    o = cJSON_Parse("{\"image\": \"a.png\", \"sound\": \"\"}");
    TL_CHECK(ds_json_sample_media(o, files) &&
                 !strcmp(ds_json_sample_media(o, files), "\"sound\" is not a file name"),
             "empty sound name");
    cJSON_Delete(o);
    o = cJSON_Parse("{\"image\": \"a.png\", \"video\": \"v.mp4\"}");
    TL_CHECK(!ds_json_sample_media(o, files) && !strcmp(files[DS_MEDIA_IMAGE], "a.png") &&
                 !strcmp(files[DS_MEDIA_VIDEO], "v.mp4") && !files[DS_MEDIA_AUDIO],
             "media names");
    cJSON_Delete(o);
}

// The zstd level in the filter of dataset `name` of a shard (cd_values[0], a signed int);
// INT_MIN when absent.
static int zstd_level_of(const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/shard_00000.h5", dir);
    int level = INT_MIN;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = f >= 0 ? H5Dopen2(f, name, H5P_DEFAULT) : H5I_INVALID_HID;
    hid_t dcpl = d >= 0 ? H5Dget_create_plist(d) : H5I_INVALID_HID;
    unsigned flags, cd[4] = {0}, conf;
    size_t ncd = 4;
    if (dcpl >= 0 &&
        H5Pget_filter_by_id2(dcpl, DS_H5ZSTD_ID, &flags, &ncd, cd, 0, NULL, &conf) >= 0 && ncd >= 1)
        level = cd[0] > INT32_MAX ? -(int)~cd[0] - 1 : (int)cd[0];
    if (dcpl >= 0) H5Pclose(dcpl);
    if (d >= 0) H5Dclose(d);
    if (f >= 0) H5Fclose(f);
    return level;
}

// Replaces ' by " so the JSON below stays readable.
static char *dq(const char *s) {
    char *t = strdup(s);
    for (char *p = t; *p; p++)
        if (*p == '\'') *p = '"';
    return t;
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/groundc_pack_XXXXXX");
    if (!mkdtemp(g_dir)) return 1;
    snprintf(g_synth, sizeof g_synth, "%s/synth", g_dir);
    snprintf(g_bad, sizeof g_bad, "%s/bad.json", g_dir);
    snprintf(g_jsonl, sizeof g_jsonl, "%s/ground.jsonl", g_dir);
    tl_source_path(g_tok, sizeof g_tok, "tests/fixtures/tokenizer/test_bpe.model");

    test_grounding_records();
    test_json_samples();

    char args[8192];
    snprintf(args, sizeof args, "synth --out %s --images 12 --videos 4 --audios 4 --seed 5",
             g_synth);
    if (groundc("synth", args) != 0) {
        fprintf(stderr, "groundc synth failed: %s\n", output("synth", "err"));
        return 1;
    }

    // a corrupt PNG: the signature, then noise
    char path[1024];
    snprintf(path, sizeof path, "%s/media/corrupt.png", g_synth);
    spit(path, "\x89PNG\r\n\x1a\nthis is not a PNG stream at all, just text");

    char long_answer[6000] = "";
    for (int i = 0; i < 500; i++) strcat(long_answer, "word ");
    const char *img0 = "media/images/img_000000.png", *img1 = "media/images/img_000001.png";
    const char *vid0 = "media/videos/vid_000000.mp4", *aud0 = "media/audio/aud_000000.wav";
    const char *vid1 = "media/videos/vid_000001.mp4", *aud1 = "media/audio/aud_000001.wav";
    char *bad_json = malloc(32768);
    char *tmpl = dq(
        "[\n"
        "{'id': 'good', 'image': '%s', 'conversations': [{'from': 'human', 'value': "
        "'<image>\\nWhat is this?'}, {'from': 'gpt', 'value': 'Shapes.'}]},\n"
        "{'id': 'missing', 'image': 'media/images/nope.png', 'conversations': [{'from': 'human', "
        "'value': '<image>\\nWhat is this?'}, {'from': 'gpt', 'value': 'Shapes.'}]},\n"
        "{'id': 'corrupt', 'image': 'media/corrupt.png', 'conversations': [{'from': 'human', "
        "'value': '<image>\\nWhat is this?'}, {'from': 'gpt', 'value': 'Shapes.'}]},\n"
        "{'id': 'no-key', 'conversations': [{'from': 'human', 'value': '<image>\\nWhat is this?'}, "
        "{'from': 'gpt', 'value': 'Shapes.'}]},\n"
        "{'id': 'no-placeholder', 'image': '%s', 'conversations': [{'from': 'human', 'value': "
        "'What is this?'}, {'from': 'gpt', 'value': 'Shapes.'}]},\n"
        "{'id': 'gpt-first', 'image': '%s', 'conversations': [{'from': 'gpt', 'value': "
        "'<image>\\nHi'}, {'from': 'human', 'value': 'Hello'}]},\n"
        "{'id': 'long', 'image': '%s', 'conversations': [{'from': 'human', 'value': "
        "'<image>\\nTalk.'}, {'from': 'gpt', 'value': '%s'}]},\n"
        "{'id': 'special', 'image': '%s', 'conversations': [{'from': 'human', 'value': "
        "'<image>\\nIs <im_patch> here?'}, {'from': 'gpt', 'value': 'No.'}]},\n"
        "{'id': 'bad-task', 'task': 'detect', 'image': '%s', 'conversations': [{'from': 'human', "
        "'value': '<image>\\nWhat is this?'}, {'from': 'gpt', 'value': 'Shapes.'}]},\n"
        "{'id': 17, 'image': '%s', 'conversations': [{'from': 'human', 'value': '<image>\\nWhere "
        "is the shape?'}, {'from': 'gpt', 'value': 'At [0.100, 0.200, 0.300, 0.400].'}, "
        "{'from': 'human', 'value': 'Anything else?'}, {'from': 'gpt', 'value': 'No.'}]},\n"
        "{'id': 'conv', 'video': '%s', 'conversations': [{'from': 'human', 'value': "
        "'<video>\\nWhat happens?'}, {'from': 'gpt', 'value': 'A shape moves.'}, {'from': "
        "'human', 'value': 'Then?'}, {'from': 'gpt', 'value': 'It leaves.'}]},\n"
        "{'sound': '%s', 'conversations': [{'from': 'human', 'value': '<sound>\\nWhen is the "
        "beep?'}, {'from': 'gpt', 'value': '{0.10, 0.20}'}]},\n"
        "{'id': 'reg', 'image': '%s', 'conversations': [{'from': 'human', 'value': 'What is at "
        "[0.100, 0.200, 0.300, 0.400]? <image>'}, {'from': 'gpt', 'value': 'A shape.'}]},\n"
        "{'id': 'caption', 'video': '%s', 'conversations': [{'from': 'human', 'value': "
        "'<video>\\nDescribe.'}, {'from': 'gpt', 'value': 'A shape moves.'}]},\n"
        "{'id': 'both', 'image': '%s', 'sound': '%s', 'conversations': [{'from': 'human', "
        "'value': '<image>\\n<sound>\\nWhat do you see and hear?'}, {'from': 'gpt', 'value': "
        "'A shape and a beep.'}]},\n"
        "{'id': 'nul', 'image': '%s', 'conversations': [{'from': 'human', 'value': "
        "'<image>\\nWhat is this?'}, {'from': 'gpt', 'value': 'Shapes\\u0000 on a mat.'}]},\n"
        "{'id': 'backslash', 'image': '%s', 'conversations': [{'from': 'human', 'value': "
        "'<image>\\nWhat is \\\\u0000?'}, {'from': 'gpt', 'value': 'Text.'}]},\n"
        "{'id': 'pixels', 'image': '%s', 'conversations': [{'from': 'human', 'value': "
        "'<image>\\nWhere?'}, {'from': 'gpt', 'value': '[120, 40, 300, 200]'}]},\n"
        "{'id': 'reversed', 'image': '%s', 'conversations': [{'from': 'human', 'value': "
        "'<image>\\nWhere?'}, {'from': 'gpt', 'value': '[0.5, 0.2, 0.1, 0.9]'}]},\n"
        "{'id': 'late', 'video': '%s', 'conversations': [{'from': 'human', 'value': "
        "'<video>\\nWhen?'}, {'from': 'gpt', 'value': '{0.50, 1.20}'}]},\n"
        "{'id': 'rec-no-box', 'task': 'rec', 'image': '%s', 'conversations': [{'from': 'human', "
        "'value': '<image>\\nWhere?'}, {'from': 'gpt', 'value': '[1.5, -0.2, 3, 4]'}]},\n"
        "{'id': 'tvg-no-span', 'task': 'tvg', 'video': '%s', 'conversations': [{'from': 'human', "
        "'value': '<video>\\nWhen?'}, {'from': 'gpt', 'value': 'Early on.'}]}\n"
        "]\n");
    snprintf(bad_json, 32768, tmpl, img0, img0, img0, img0, long_answer, img0, img0, img0, vid0,
             aud0, img1, vid1, img1, aud1, img0, img0, img0, img0, vid0, img0, vid0);
    free(tmpl);
    spit(g_bad, bad_json);
    free(bad_json);

    // custom grounding lines, built on the real sizes and durations
    char full[1024];
    snprintf(full, sizeof full, "%s/%s", g_synth, img1);
    int W, H;
    free(ds_image_decode_file(full, &W, &H));
    snprintf(full, sizeof full, "%s/%s", g_synth, vid1);
    uint8_t *frames = malloc(VID_F * VID_S * VID_S * 3);
    ds_video_info vinfo;
    ds_video_load(full, VID_F, VID_S, frames, &vinfo);
    free(frames);
    double vd = vinfo.duration;
    snprintf(full, sizeof full, "%s/%s", g_synth, aud1);
    float *fb = malloc(sizeof(float) * DS_AUDIO_CLIPS * DS_AUDIO_FRAMES * DS_AUDIO_MELS);
    double ad;
    ds_audio_file_features(full, fb, &ad);
    free(fb);
    char *jsonl = malloc(8192),
         *jt = dq(
             "{'id': 'g-rec', 'image': '%s', 'expression': 'the thing.', 'bbox': [2, 3, 10, 8],"
             " 'bbox_format': 'xywh'}\n"
             "{'image': '%s', 'expression': 'off', 'bbox': [%d, 0, 10, 5]}\n"
             "{'video': '%s', 'query': 'a shape moves', 'span': [%.17g, %.17g], 'bbox_format': 1,"
             " 'bbox': [0, 0, 1, 1]}\n"
             "{'video': '%s', 'query': 'too late', 'span': [0, %.17g]}\n"
             "{'sound': '%s', 'query': 'a beep', 'span': [%.17g, %.17g]}\n"
             "{'sound': '%s', 'query': \n"
             "   \n"
             "{'audio': '%s', 'query': 'the noise', 'span': [0, %.17g]}\n"
             "{'image': '%s', 'expression': 'the red\\u0000 thing', 'bbox': [2, 3, 10, 8]}\n"
             "{'id': 'caf\xe9', 'image': '%s', 'expression': 'a thing', 'bbox': [2, 3, 10, 8]}\n"
             "{'image': '%s', 'expression': 'caf\xe9 au lait', 'bbox': [2, 3, 10, 8]}\n");
    snprintf(jsonl, 8192, jt, img1, img1, W - 5, vid1, 0.1 * vd, 0.6 * vd, vid1, vd + 2, aud1,
             0.2 * ad, 0.5 * ad, aud1, aud1, ad, img1, img1, img1);
    free(jt);
    spit(g_jsonl, jsonl);
    free(jsonl);

    // expectations: synth train.json, the good samples of bad.json, the good JSONL lines
    char train[1024];
    snprintf(train, sizeof train, "%s/train.json", g_synth);
    expect_json(train, "train", NULL, 0, NULL);
    // 9 has a box in its first answer but two exchanges: a conversation, not rec
    const int good[] = {0, 9, 10, 11, 12, 13, 14, 16};
    const int good_task[] = {DS_TASK_CAPTION, DS_TASK_CONVERSATION, DS_TASK_CONVERSATION,
                             DS_TASK_SOUND,   DS_TASK_REG,          DS_TASK_CAPTION,
                             DS_TASK_CAPTION, DS_TASK_CAPTION};
    expect_json(g_bad, "bad", good, 8, good_task);
    char q[512], a[128];
    ds_box sq = ds_box_to_square((ds_box){2, 3, 12, 11}, W, H);
    snprintf(a, sizeof a, "[%.3f, %.3f, %.3f, %.3f]", sq.x1, sq.y1, sq.x2, sq.y2);
    expect_jsonl(1, img1, DS_MEDIA_IMAGE,
                 "<image>\nCan you describe the region that corresponds to the thing in this "
                 "image?",
                 a);
    g_exp[g_n_exp - 1].id = cJSON_CreateString("g-rec");
    snprintf(a, sizeof a, "{%.2f, %.2f}", 0.1 * vd / vd, 0.6 * vd / vd);
    expect_jsonl(3, vid1, DS_MEDIA_VIDEO,
                 "<video>\nWhen does \"a shape moves\" happen in the video?", a);
    snprintf(a, sizeof a, "{%.2f, %.2f}", 0.2 * ad / ad, 0.5 * ad / ad);
    expect_jsonl(5, aud1, DS_MEDIA_AUDIO, "<sound>\nWhen do you hear \"a beep\" in the audio?", a);
    snprintf(q, sizeof q, "<sound>\nWhen do you hear \"the noise\" in the audio?");
    expect_jsonl(8, aud1, DS_MEDIA_AUDIO, q, "{0.00, 1.00}");

    // pack with 1 thread; then 3 threads; then 2 threads into a folder holding an older
    // dataset with more shards
    char common[4096], out1[600], out3[600], out2[600];
    snprintf(out1, sizeof out1, "%s/out1", g_dir);
    snprintf(out3, sizeof out3, "%s/out3", g_dir);
    snprintf(out2, sizeof out2, "%s/out2", g_dir);
    snprintf(common, sizeof common,
             "pack --json %s,%s --grounding-jsonl %s --media-root %s --tokenizer %s " SIZES, train,
             g_bad, g_jsonl, g_synth, g_tok);
    snprintf(args, sizeof args, "%s --out %s --threads 1", common, out1);
    int rc = groundc("pack1", args);
    char *err1 = output("pack1", "err"), *out1_text = output("pack1", "out");
    TL_CHECK(rc == 0, "pack with 1 thread: exit %d: %s", rc, err1);
    printf("%s", out1_text);

    // the bad samples: one line each, FILE:INDEX: reason, and the count at the end
    struct {
        const char *file;
        int index;
        const char *why;
    } bad[] = {{g_bad, 1, "nope.png"},
               {g_bad, 2, "corrupt.png"},
               {g_bad, 3, "has a <image> placeholder but no \"image\""},
               {g_bad, 4, "\"image\" is given but the conversation has no <image>"},
               {g_bad, 5, "turn 0 is from gpt"},
               {g_bad, 6, "more than --max-len 400"},
               {g_bad, 7, "special token <im_patch>"},
               {g_bad, 8, "unknown \"task\""},
               {g_bad, 15, "text contains a NUL character"},
               {g_bad, 17, "turn 2: box [120, 40, 300, 200] is not normalised to [0, 1]"},
               {g_bad, 18, "turn 2: box [0.5, 0.2, 0.1, 0.9] is reversed"},
               {g_bad, 19, "turn 2: span {0.50, 1.20} is not normalised to [0, 1]"},
               {g_bad, 20, "task \"rec\" but no answer holds a box [x1, y1, x2, y2]"},
               {g_bad, 21, "task \"tvg\" but no answer holds a span {t1, t2}"},
               {g_jsonl, 2, "outside the"},
               {g_jsonl, 4, "outside the"},
               {g_jsonl, 6, "invalid JSON"},
               {g_jsonl, 9, "text contains a NUL character"},
               // Latin-1 bytes: not tokenized as U+FFFD nor stored where h5py cannot read them
               {g_jsonl, 10, "\"id\" is not UTF-8 text"},
               {g_jsonl, 11, "\"expression\" is not UTF-8 text"}};
    int n_bad = (int)(sizeof bad / sizeof *bad);
    for (int k = 0; k < n_bad; k++) {
        char prefix[1024];
        if (bad[k].file == g_jsonl) // a line number
            snprintf(prefix, sizeof prefix, "%s:%d: ", bad[k].file, bad[k].index);
        else // a position in the list, from 0
            snprintf(prefix, sizeof prefix, "%s: sample %d: ", bad[k].file, bad[k].index);
        const char *line = strstr(err1, prefix);
        const char *eol = line ? strchr(line, '\n') : NULL;
        const char *why = line ? strstr(line, bad[k].why) : NULL;
        TL_CHECK(line && (line == err1 || line[-1] == '\n') && why && eol && why < eol,
                 "no line \"%s... %s\" in:\n%s", prefix, bad[k].why, err1);
    }
    int skipped_lines = 0;
    for (const char *s = err1; (s = strstr(s, "(skipped)\n")); s++) skipped_lines++;
    TL_CHECK(skipped_lines == n_bad, "%d skip lines, want %d", skipped_lines, n_bad);
    // keys pack does not read: one line per key, at its first record, with the count
    char unread[2][1024];
    snprintf(unread[0], sizeof unread[0],
             "%s:1: key \"bbox_format\" is not one pack reads, ignored (2 records)\n", g_jsonl);
    snprintf(unread[1], sizeof unread[1],
             "%s:3: key \"bbox\" is not one pack reads, ignored (1 record)\n", g_jsonl);
    for (int k = 0; k < 2; k++)
        TL_CHECK(strstr(err1, unread[k]) &&
                     (strstr(err1, unread[k]) == err1 || strstr(err1, unread[k])[-1] == '\n'),
                 "no line \"%s\" in:\n%s", unread[k], err1);
    TL_CHECK(!strstr(err1, "\"id\" is not one pack reads"), "\"id\" reported as unread:\n%s", err1);
    char want_count[64];
    snprintf(want_count, sizeof want_count, "; %d skipped;", n_bad);
    TL_CHECK(strstr(out1_text, want_count) != NULL, "no \"%s\" in %s", want_count, out1_text);

    ds_tokenizer *tok = ds_tokenizer_load(g_tok);
    for (int k = 0; k < 9; k++) {
        int32_t id = ds_tokenizer_add_special(tok, added[k]);
        TL_CHECK(id == 2000 + k, "%s has id %d", added[k], id);
    }
    if (rc == 0) check_dataset(out1, tok);
    snprintf(path, sizeof path, "%s/.pack-staging", out1);
    TL_CHECK(!exists(path), "staging folder left behind");

    snprintf(args, sizeof args, "%s --out %s --threads 3", common, out3);
    rc = groundc("pack3", args);
    TL_CHECK(rc == 0, "pack with 3 threads: exit %d", rc);
    TL_CHECK(same_tree(out1, out3), "1 and 3 threads give different files");
    char *err3 = output("pack3", "err");
    // the same skip lines in the same order (the progress line may differ)
    const char *progress1 = strstr(err1, "pack: ");
    size_t skips = progress1 ? (size_t)(progress1 - err1) : strlen(err1);
    TL_CHECK(!strncmp(err1, err3, skips), "skip lines differ between 1 and 3 threads");
    free(err3);

    // an older dataset with 4-sample shards in out2, replaced by the run with 2 threads
    char small[8192];
    snprintf(small, sizeof small, "%s --out %s --threads 2 --shard-samples 4", common, out2);
    TL_CHECK(groundc("pack_small", small) == 0, "pack with 4-sample shards failed");
    snprintf(path, sizeof path, "%s/shard_00010.h5", out2);
    TL_CHECK(exists(path), "the 4-sample dataset has no shard 10");
    snprintf(args, sizeof args, "%s --out %s --threads 2", common, out2);
    TL_CHECK(groundc("pack2", args) == 0, "pack with 2 threads failed");
    // the other name set (the older dataset's shards stay until the new manifest is written)
    snprintf(path, sizeof path, "%s/shard_g1_00000.h5", out2);
    TL_CHECK(exists(path), "a pack over a dataset did not use the other shard names");
    TL_CHECK(same_dataset(out1, out2, true),
             "a second run (2 threads, over an older dataset) differs");

    // --on-error fail: non-zero exit, one line naming the first bad sample, the dataset in
    // out2 untouched
    snprintf(args, sizeof args, "%s --out %s --threads 2 --on-error fail", common, out2);
    rc = groundc("fail", args);
    char *errf = output("fail", "err");
    char want_line[1024];
    snprintf(want_line, sizeof want_line, "groundc: error: %s: sample 1: ", g_bad);
    // after the two unread-key lines
    const char *errl = errf;
    for (int k = 0; k < 2 && strchr(errl, '\n'); k++) errl = strchr(errl, '\n') + 1;
    int lines = 0;
    for (const char *s = errl; *s; s++) lines += *s == '\n';
    TL_CHECK(rc != 0 && !strncmp(errl, want_line, strlen(want_line)) && strstr(errl, "nope.png") &&
                 lines == 1,
             "--on-error fail: exit %d, stderr:\n%s", rc, errf);
    TL_CHECK(same_dataset(out1, out2, true), "a failed run changed the existing dataset");
    snprintf(path, sizeof path, "%s/.pack-staging", out2);
    TL_CHECK(!exists(path), "a failed run left its staging folder");
    free(errf);

    // Killed (or failing) while it moves its new shards into a folder holding a dataset, a pack
    // leaves that dataset whole and usable (inspect --checksums passes); the next pack works
    // and leaves nothing of either behind.
    cJSON *m1 = manifest_json(out1);
    long long n1 = (long long)cJSON_GetNumberValue(cJSON_GetObjectItem(m1, "num_samples"));
    cJSON_Delete(m1);
    char want_n[64];
    snprintf(want_n, sizeof want_n, "(%lld samples)", n1);
    const char *faults[] = {"GROUNDC_TEST_FAIL_IN_PUBLISH", "GROUNDC_TEST_KILL_IN_PUBLISH",
                            "GROUNDC_TEST_KILL_IN_PUBLISH"};
    const char *at[] = {"2", "1", "3"};
    for (int k = 0; k < 3; k++) {
        setenv(faults[k], at[k], 1);
        snprintf(args, sizeof args, "%s --out %s --threads 2 --shard-samples 4", common, out2);
        rc = groundc("publish_fault", args);
        unsetenv(faults[k]);
        char *errp = output("publish_fault", "err");
        bool kill = k > 0;
        TL_CHECK(kill ? rc != 0
                      : rc == 1 && strstr(errp, "cannot move into") &&
                            strstr(errp, "Input/output error"),
                 "%s=%s: exit %d, %s", faults[k], at[k], rc, errp);
        free(errp);
        snprintf(args, sizeof args, "inspect %s --checksums", out2);
        rc = groundc("inspect_fault", args);
        char *insp = output("inspect_fault", "out");
        TL_CHECK(rc == 0 && strstr(insp, want_n), "%s=%s: the old dataset: exit %d, %s", faults[k],
                 at[k], rc, insp);
        free(insp);
        // a failed run takes its shards away again; a killed one cannot
        TL_CHECK(same_dataset(out1, out2, !kill), "%s=%s changed the existing dataset", faults[k],
                 at[k]);
    }
    // ...also the manifest.json.tmp.PID of one killed while writing the manifest
    snprintf(path, sizeof path, "%s/manifest.json.tmp.999999", out2);
    spit(path, "{\"half\": ");
    snprintf(args, sizeof args, "%s --out %s --threads 2", common, out2);
    TL_CHECK(groundc("pack_after_kill", args) == 0, "pack after a killed one failed");
    TL_CHECK(same_tree(out1, out2), "a pack after a killed one differs (or left files)");

    // A second pack into a folder that one is writing (its flock on the folder, held here) is
    // refused in one line, and the first one's staging is left alone (it used to be removed as
    // a killed run's leftover).
    int held = open(out2, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    TL_CHECK(held >= 0 && flock(held, LOCK_EX | LOCK_NB) == 0, "cannot lock %s", out2);
    snprintf(path, sizeof path, "%s/.pack-staging", out2);
    mkdir(path, 0777);
    rc = groundc("pack_locked", args);
    errf = output("pack_locked", "err");
    snprintf(want_line, sizeof want_line,
             "groundc: error: %s: another pack is writing into this folder: let it finish or stop "
             "it first\n",
             out2);
    TL_CHECK(rc == 1 && strstr(errf, want_line) && exists(path),
             "pack into a locked folder: exit %d, %s", rc, errf);
    free(errf);
    close(held);
    rmdir(path);

    // A file named like a shard that no manifest lists (the user's own) is neither overwritten
    // nor removed: the pack takes another name set and says the file is there.
    char outu[600];
    snprintf(outu, sizeof outu, "%s/outu", g_dir);
    mkdir(outu, 0777);
    snprintf(path, sizeof path, "%s/shard_00000.h5", outu);
    spit(path, "mine");
    snprintf(args, sizeof args, "%s --out %s --threads 2", common, outu);
    rc = groundc("pack_beside_own", args);
    errf = output("pack_beside_own", "err");
    char *own = tl_slurp(path, NULL);
    TL_CHECK(rc == 0 && own && !strcmp(own, "mine") &&
                 strstr(errf, "holds 1 shard file that no manifest lists (shard_00000.h5)"),
             "a file of the user's named like a shard: exit %d, %s, content %s", rc, errf,
             own ? own : "(gone)");
    free(own), free(errf);
    TL_CHECK(same_dataset(out1, outu, false), "packed beside the user's file: another dataset");

    // A manifest.json that is not a dataset's (another tool's file, or damaged) is not replaced:
    // the pack is refused in one line and the file stays as it was.
    const char *foreign[2] = {"{broken", "{\"x\": 1}"}, *why[2] = {"not JSON", "no shards list"};
    for (int k = 0; k < 2; k++) {
        char outf[600];
        snprintf(outf, sizeof outf, "%s/outf%d", g_dir, k);
        mkdir(outf, 0777);
        snprintf(path, sizeof path, "%s/manifest.json", outf);
        spit(path, foreign[k]);
        snprintf(args, sizeof args, "%s --out %s --threads 2", common, outf);
        rc = groundc("pack_foreign", args);
        errf = output("pack_foreign", "err");
        char *kept = tl_slurp(path, NULL), want_f[1200];
        snprintf(want_f, sizeof want_f, "groundc: error: %s: not a dataset manifest (%s)", path,
                 why[k]);
        TL_CHECK(rc == 1 && strstr(errf, want_f) && kept && !strcmp(kept, foreign[k]),
                 "foreign manifest %s: exit %d, %s", foreign[k], rc, errf);
        free(kept), free(errf);
    }

    // A write error (the file size limit) ends the run without leaving staging or, when the
    // run made it, the output folder behind.
    char outw[600], cmd[9000];
    snprintf(outw, sizeof outw, "%s/outw", g_dir);
    snprintf(cmd, sizeof cmd,
             "(trap '' XFSZ; ulimit -f 64; %s/groundc %s --out %s --image-size 200) >%s/fsize.out "
             "2>%s/fsize.err",
             GROUNDC_BINARY_DIR, common, outw, g_dir, g_dir);
    rc = system(cmd);
    errf = output("fsize", "err");
    TL_CHECK(rc != 0 && strstr(errf, "groundc: error: ") && !exists(outw),
             "write error: exit %d, %s left: %d", rc, errf, exists(outw));
    free(errf);

    // Ctrl-C (SIGINT) midway: the run stops at the next sample, exits 130 (128 + SIGINT) and
    // takes its output away again: a dataset already in OUT stays whole with nothing beside
    // it, and a folder the run made is gone
    setenv("GROUNDC_TEST_SIGNAL_AT_SAMPLE", "5", 1);
    snprintf(args, sizeof args, "%s --out %s --threads 2 --shard-samples 4", common, out2);
    rc = groundc("sigint", args);
    errf = output("sigint", "err");
    TL_CHECK(rc == 130 && strstr(errf, "stopped by SIGINT (Ctrl-C) after 5 of") &&
                 strstr(errf, "is left as it was"),
             "SIGINT into a dataset: exit %d, %s", rc, errf);
    TL_CHECK(same_dataset(out1, out2, true), "SIGINT changed the existing dataset");
    free(errf);
    snprintf(args, sizeof args, "%s --out %s --threads 2 --shard-samples 4", common, outw);
    rc = groundc("sigint_fresh", args);
    unsetenv("GROUNDC_TEST_SIGNAL_AT_SAMPLE");
    errf = output("sigint_fresh", "err");
    TL_CHECK(rc == 130 && !exists(outw), "SIGINT into a new folder: exit %d, left: %d, %s", rc,
             exists(outw), errf);
    free(errf);

    // --zstd-level 19: the same samples; every compressed dataset says level 19 (the default
    // run above wrote 1, and -1 for the pixels); a level outside zstd's range is a one-line
    // error that writes nothing
    char out19[600];
    snprintf(out19, sizeof out19, "%s/out19", g_dir);
    snprintf(args, sizeof args, "%s --out %s --threads 2 --zstd-level 19", common, out19);
    rc = groundc("pack19", args);
    TL_CHECK(rc == 0, "pack --zstd-level 19: exit %d", rc);
    if (rc == 0) check_dataset(out19, tok);
    const char *const zds[3] = {"tokens", "loss_mask", "images"};
    const int zdefault[3] = {DS_SHARD_ZSTD_LEVEL, DS_SHARD_ZSTD_LEVEL, DS_SHARD_ZSTD_PIXEL_LEVEL};
    for (int k = 0; k < 3; k++)
        TL_CHECK(zstd_level_of(out1, zds[k]) == zdefault[k] && zstd_level_of(out19, zds[k]) == 19,
                 "dataset %s: zstd level %d by default (want %d), %d with --zstd-level 19", zds[k],
                 zstd_level_of(out1, zds[k]), zdefault[k], zstd_level_of(out19, zds[k]));
    snprintf(args, sizeof args, "%s --out %s/z23 --zstd-level 23", common, g_dir);
    rc = groundc("pack23", args);
    char *err23 = output("pack23", "err");
    snprintf(path, sizeof path, "%s/z23", g_dir);
    TL_CHECK(rc != 0 && strstr(err23, "--zstd-level") && strstr(err23, "23") && !exists(path),
             "--zstd-level 23: exit %d, stderr: %s", rc, err23);
    free(err23);

    char *errm;
    // --tasks rec,sound: exactly the expected samples of those tasks, in order, the others
    // counted as left out; an unknown task is a one-line error
    char outt[600];
    snprintf(outt, sizeof outt, "%s/outt", g_dir);
    snprintf(args, sizeof args, "%s --out %s --threads 2 --tasks rec,sound", common, outt);
    rc = groundc("tasks", args);
    char *outt_text = output("tasks", "out");
    int kept = 0, all = g_n_exp;
    expect *saved = malloc(sizeof g_exp);
    memcpy(saved, g_exp, sizeof g_exp);
    for (int i = 0; i < all; i++)
        if (g_exp[i].task == DS_TASK_REC || g_exp[i].task == DS_TASK_SOUND)
            g_exp[kept++] = saved[i];
    TL_CHECK(rc == 0 && kept > 0 && kept < all, "pack --tasks: exit %d, %d of %d expected", rc,
             kept, all);
    snprintf(want_count, sizeof want_count, "pack: %d samples of other tasks left out", all - kept);
    TL_CHECK(strstr(outt_text, want_count) != NULL, "no \"%s\" in %s", want_count, outt_text);
    g_n_exp = kept;
    if (rc == 0) check_dataset(outt, tok);
    g_n_exp = all;
    memcpy(g_exp, saved, sizeof g_exp);
    free(saved), free(outt_text);
    snprintf(args, sizeof args, "%s --out %s/x --tasks rec,detect", common, g_dir);
    rc = groundc("badtask", args);
    errm = output("badtask", "err");
    TL_CHECK(rc != 0 && strstr(errm, "--tasks: unknown task 'detect'"),
             "--tasks detect: exit %d, %s", rc, errm);
    free(errm);

    // whole-input errors: one line naming the file
    snprintf(args, sizeof args, "pack --json %s/none.json --tokenizer %s --out %s/x", g_dir, g_tok,
             g_dir);
    rc = groundc("missing", args);
    errm = output("missing", "err");
    TL_CHECK(rc != 0 && strstr(errm, "none.json: cannot open") && strchr(errm, '\n') &&
                 !strchr(errm, '\n')[1],
             "missing input: exit %d, %s", rc, errm);
    free(errm);
    snprintf(path, sizeof path, "%s/broken.json", g_dir);
    spit(path, "[{\"id\": 1},\n {\"id\": }]\n");
    snprintf(args, sizeof args, "pack --json %s --tokenizer %s --out %s/x", path, g_tok, g_dir);
    rc = groundc("broken", args);
    errm = output("broken", "err");
    TL_CHECK(rc != 0 && strstr(errm, "broken.json:2:") && strstr(errm, "invalid JSON"),
             "broken JSON: exit %d, %s", rc, errm);
    free(errm);
    TL_CHECK(groundc("badopt", "pack --frobnicate 3") != 0, "unknown option accepted");
    // a JSONL file given as --json: said so, not "text after the list"
    snprintf(args, sizeof args, "pack --json %s --tokenizer %s --out %s/x", g_jsonl, g_tok, g_dir);
    rc = groundc("jsonl_as_json", args);
    errm = output("jsonl_as_json", "err");
    TL_CHECK(rc != 0 && strstr(errm, "ground.jsonl:1:1: expected a JSON list of samples") &&
                 strstr(errm, "use --grounding-jsonl") && !strstr(errm, "after the JSON list"),
             "JSONL as --json: exit %d, %s", rc, errm);
    free(errm);
    // an empty list: one line naming the file, and no output folder
    snprintf(path, sizeof path, "%s/empty.json", g_dir);
    spit(path, "[]\n");
    snprintf(args, sizeof args, "pack --json %s --tokenizer %s --out %s/empty_out", path, g_tok,
             g_dir);
    rc = groundc("empty", args);
    errm = output("empty", "err");
    snprintf(path, sizeof path, "%s/empty_out", g_dir);
    TL_CHECK(rc != 0 && strstr(errm, "empty.json: holds no samples") && !exists(path),
             "empty list: exit %d, %s", rc, errm);
    free(errm);
    // every sample skipped, no --tasks: the count, and no mention of task filtering
    snprintf(path, sizeof path, "%s/allbad.json", g_dir);
    spit(path, "[{\"id\": \"a\", \"image\": \"no-such.jpg\", \"conversations\": "
               "[{\"from\": \"human\", \"value\": \"<image>\\nHi\"}, "
               "{\"from\": \"gpt\", \"value\": \"Yes.\"}]}]\n");
    snprintf(args, sizeof args, "pack --json %s --media-root %s --tokenizer %s --out %s/allbad_out",
             path, g_dir, g_tok, g_dir);
    rc = groundc("allbad", args);
    errm = output("allbad", "err");
    TL_CHECK(rc != 0 && strstr(errm, "no sample could be packed (1 of 1 skipped)\n") &&
                 !strstr(errm, "--tasks"),
             "all samples bad: exit %d, %s", rc, errm);
    free(errm);
    // a --media-root that is a file or missing: one line up front, not one per sample
    const char *roots[2][2] = {{"allbad.json", "not a folder"}, {"no-such-dir", "No such file"}};
    for (int k = 0; k < 2; k++) {
        snprintf(args, sizeof args,
                 "pack --json %s --media-root %s/%s --tokenizer %s --out %s/root_out", path, g_dir,
                 roots[k][0], g_tok, g_dir);
        rc = groundc("root", args);
        errm = output("root", "err");
        TL_CHECK(rc != 0 && strstr(errm, "--media-root") && strstr(errm, roots[k][1]) &&
                     strchr(errm, '\n') == errm + strlen(errm) - 1,
                 "--media-root %s: exit %d, %s", roots[k][0], rc, errm);
        free(errm);
    }

    ds_tokenizer_free(tok);
    free(err1), free(out1_text);
    for (int i = 0; i < g_n_exp; i++) {
        for (int k = 0; k < g_exp[i].n_turns; k++) free((char *)g_exp[i].turns[k].text);
        for (int k = 0; k < DS_MEDIA_KINDS; k++) free(g_exp[i].media[k]);
        cJSON_Delete(g_exp[i].id);
    }
    for (int i = 0; i < g_n_ref; i++) free(g_ref[i].path), free(g_ref[i].data);
    int failed = tl_failed;
    if (!failed) {
        snprintf(args, sizeof args, "rm -rf %s", g_dir);
        if (system(args) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    } else {
        printf("files kept in %s\n", g_dir);
    }
    return tl_summary("test_pack");
}
