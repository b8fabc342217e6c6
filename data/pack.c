// pack.c: see pack.h. Layout of the engine:
//   1. the calling thread reads every input (cJSON), resolves media paths and builds a table
//      of distinct media files (kind + path), so samples can share decodes;
//   2. worker threads claim samples in input order, at most `window` ahead of the writer,
//      render + tokenize them and decode their media (each file once while samples that
//      reference it are in flight: the first claimant decodes, the others wait for it);
//   3. the calling thread takes the results in input order from the reorder buffer and writes
//      them, adding a media row the first time a file appears in the current shard.
// Everything the output depends on is decided by the writer in input order, which is why any
// thread count gives the same bytes.
#include "pack.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <zstd.h>

#include "autograd/error.h"
#include "data/audio.h"
#include "data/files.h"
#include "data/grounding.h"
#include "data/image.h"
#include "data/jsonl.h"
#include "data/manifest.h"
#include "data/prompt.h"
#include "data/shard.h"
#include "data/template.h"
#include "data/tokenizer.h"
#include "data/video.h"

#define STAGING_NAME ".pack-staging"
// The names of the shards a pack is moving into OUT, one per line, written before the first
// move and removed after the commit: what a pack killed in between leaves is known to be its
// own, and the next pack removes it (and nothing else that merely looks like a shard).
#define PUBLISHING_NAME ".pack-publishing"

// The media keys of a reference sample, by ds_media_kind.
static const char *const media_keys[DS_MEDIA_KINDS] = {"image", "video", "sound"};

ds_pack_sizes ds_pack_sizes_reference(void) {
    return (ds_pack_sizes){.image_size = 336,
                           .image_tokens = 576,
                           .video_frames = 64,
                           .video_size = 224,
                           .video_tokens = 64,
                           .audio_tokens = 8};
}

ds_pack_config ds_pack_defaults(void) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    return (ds_pack_config){.shard_samples = 4096,
                            .threads = cores > 0 ? (int)(cores < 256 ? cores : 256) : 1,
                            .fail_on_error = false,
                            .max_len = 2048,
                            .sizes = ds_pack_sizes_reference(),
                            .progress = -1};
}

// ---- pthreads, checked ----

static void xlock(pthread_mutex_t *m) {
    int rc = pthread_mutex_lock(m);
    if (rc) ag_fail("pack: cannot lock a mutex: %s", strerror(rc));
}
static void xunlock(pthread_mutex_t *m) {
    int rc = pthread_mutex_unlock(m);
    if (rc) ag_fail("pack: cannot unlock a mutex: %s", strerror(rc));
}
static void xwait(pthread_cond_t *c, pthread_mutex_t *m) {
    int rc = pthread_cond_wait(c, m);
    if (rc) ag_fail("pack: cannot wait on a condition: %s", strerror(rc));
}
// Waits at most ms milliseconds (CLOCK_REALTIME, the condition's default clock).
static void xwait_ms(pthread_cond_t *c, pthread_mutex_t *m, long ms) {
    struct timespec t;
    if (clock_gettime(CLOCK_REALTIME, &t) != 0) ag_fail("pack: clock_gettime: %s", strerror(errno));
    t.tv_nsec += ms * 1000000L;
    t.tv_sec += t.tv_nsec / 1000000000L;
    t.tv_nsec %= 1000000000L;
    int rc = pthread_cond_timedwait(c, m, &t);
    if (rc && rc != ETIMEDOUT) ag_fail("pack: cannot wait on a condition: %s", strerror(rc));
}
static void xbroadcast(pthread_cond_t *c) {
    int rc = pthread_cond_broadcast(c);
    if (rc) ag_fail("pack: cannot signal a condition: %s", strerror(rc));
}

// ---- state ----

enum { M_NONE, M_LOADING, M_READY, M_FAILED };

typedef struct {
    ds_media_kind kind;
    char *path; // resolved against the media root
    // guarded by the packer's mutex:
    int state;
    int64_t pending;       // claimed samples not yet written; the data is dropped when it reaches 0
    void *data;            // READY: uint8 [S][S][3], uint8 [F][S][S][3] or float [C][T][M]
    int32_t width, height; // image
    int exif_orientation;  // image (ds_image_exif_orientation)
    ds_timeline tl;        // video, audio
    char *error;           // FAILED: the loader's message
    // the writer's alone: the row this file has in shard number row_shard - 1
    int32_t row_shard, row;
    bool turned_counted; // counted in output.turned
} media;

typedef struct {
    int file;
    int64_t index;
    const cJSON *obj;
    const char *bad; // found while reading (points into the record or is static), or NULL
    int32_t media[DS_MEDIA_KINDS];
} item;

typedef struct {
    bool ready;
    char *bad; // malloc'd reason, or NULL
    int32_t *tokens;
    uint8_t *mask;
    int64_t len;
    int task, granularity;
    char *meta;
} result;

typedef struct {
    const ds_pack_config *cfg;
    ds_tokenizer *tok;
    ds_media_tokens media_tokens;
    int64_t patches[DS_MEDIA_KINDS];

    int n_files;
    ds_record_file *files;
    char **sources; // per file
    char **roots;   // media root per file

    int64_t n;
    item *items;
    int64_t n_media, media_cap;
    media *media;
    int64_t hash_cap; // power of two
    int32_t *hash;    // media index + 1, 0 for empty

    pthread_mutex_t mu;
    pthread_cond_t space, ready, loaded;
    int64_t window;
    result *slots;
    int64_t next_claim, written;
    bool stop;
    pthread_t *workers; // the calling thread's alone
    int n_workers;      // started
} packer;

// ---- reading the inputs ----

static uint64_t fnv1a(int kind, const char *s) {
    uint64_t h = 1469598103934665603ull ^ (uint64_t)kind;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static void hash_insert(packer *p, int32_t idx) {
    uint64_t mask = (uint64_t)p->hash_cap - 1;
    uint64_t h = fnv1a(p->media[idx].kind, p->media[idx].path) & mask;
    while (p->hash[h]) h = (h + 1) & mask;
    p->hash[h] = idx + 1;
}

// The media table index of (kind, path), added when new.
static int32_t media_id(packer *p, ds_media_kind kind, const char *path) {
    if (2 * (p->n_media + 1) > p->hash_cap) {
        free(p->hash);
        p->hash_cap = p->hash_cap ? 2 * p->hash_cap : 1024;
        p->hash = ag_xcalloc((size_t)p->hash_cap, sizeof *p->hash, "media table");
        for (int32_t i = 0; i < p->n_media; i++) hash_insert(p, i);
    }
    uint64_t mask = (uint64_t)p->hash_cap - 1;
    for (uint64_t h = fnv1a(kind, path) & mask; p->hash[h]; h = (h + 1) & mask) {
        media *m = &p->media[p->hash[h] - 1];
        if (m->kind == kind && !strcmp(m->path, path)) return p->hash[h] - 1;
    }
    if (p->n_media >= INT32_MAX - 1) ag_fail("pack: more than %d media files", INT32_MAX - 1);
    p->media = ag_xgrow(p->media, &p->media_cap, p->n_media + 1, sizeof *p->media, "media table");
    int32_t idx = (int32_t)p->n_media++;
    p->media[idx] = (media){.kind = kind, .path = ag_xstrdup(path)};
    hash_insert(p, idx);
    return idx;
}

static char *join_path(const char *root, const char *rel) {
    return rel[0] == '/' || !root ? ag_xstrdup(rel) : ag_xpath_join(root, rel);
}

// "data/refcoco_train.json" -> "refcoco_train".
static char *source_of(const char *path) {
    const char *b = ag_base_name(path);
    const char *dot = strrchr(b, '.');
    size_t n = dot && dot > b ? (size_t)(dot - b) : strlen(b);
    if (n == 0) return ag_xstrdup("unnamed");
    char *s = ag_xmalloc(n + 1, "source name");
    memcpy(s, b, n);
    s[n] = 0;
    return s;
}

static void add_media(packer *p, item *it, ds_media_kind kind, const char *rel) {
    char *path = join_path(p->roots[it->file], rel);
    it->media[kind] = media_id(p, kind, path);
    free(path);
}

static void read_inputs(packer *p) {
    const ds_pack_config *c = p->cfg;
    p->n_files = c->n_json + c->n_jsonl;
    p->files = ag_xcalloc((size_t)p->n_files, sizeof *p->files, "input files");
    p->sources = ag_xcalloc((size_t)p->n_files, sizeof *p->sources, "input files");
    p->roots = ag_xcalloc((size_t)p->n_files, sizeof *p->roots, "input files");
    int64_t total = 0;
    for (int f = 0; f < p->n_files; f++) {
        bool jsonl = f >= c->n_json;
        const char *path = jsonl ? c->jsonl_files[f - c->n_json] : c->json_files[f];
        if (jsonl) {
            ds_records_read_jsonl(path, &p->files[f]);
            ds_grounding_report_unread_keys(&p->files[f]);
        } else {
            ds_records_read_json(path, &p->files[f]);
        }
        p->sources[f] = c->source ? ag_xstrdup(c->source) : source_of(path);
        p->roots[f] = c->media_root ? ag_xstrdup(c->media_root) : ag_xparent_dir(path);
        total += p->files[f].n;
    }
    p->items = ag_xcalloc((size_t)total + 1, sizeof *p->items, "samples");
    for (int f = 0; f < p->n_files; f++) {
        const ds_record_file *rf = &p->files[f];
        for (int64_t r = 0; r < rf->n; r++) {
            item *it = &p->items[p->n++];
            *it = (item){.file = f, .index = rf->records[r].index, .obj = rf->records[r].item};
            for (int k = 0; k < DS_MEDIA_KINDS; k++) it->media[k] = -1;
            if (rf->records[r].error) {
                it->bad = rf->records[r].error;
            } else if (rf->jsonl) {
                // a malformed record is reported by its worker, which parses it again
                char err[256];
                ds_grounding_record g;
                if (ds_grounding_record_parse(it->obj, &g, err, sizeof err))
                    add_media(p, it, g.kind, g.media);
            } else {
                const char *files[DS_MEDIA_KINDS];
                it->bad = ds_json_sample_media(it->obj, files);
                for (int k = 0; !it->bad && k < DS_MEDIA_KINDS; k++)
                    if (files[k]) add_media(p, it, (ds_media_kind)k, files[k]);
            }
        }
    }
}

// ---- per sample (worker threads) ----

static bool failf(char *err, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return false;
}

// ag_fail inside a media loader comes back here as a skip (the handler is per thread).
static _Thread_local jmp_buf *t_jmp;
static _Thread_local char t_msg[2048];
static void catch_failure(const char *msg) {
    snprintf(t_msg, sizeof t_msg, "%s", msg);
    longjmp(*t_jmp, 1);
}

typedef struct {
    ds_media_kind kind;
    const char *path;
    const ds_pack_sizes *sizes;
    void *buf;
    ds_image_info img;
    ds_timeline tl; // video, audio
} load_job;

static void run_load(load_job *j) {
    const ds_pack_sizes *s = j->sizes;
    if (j->kind == DS_MEDIA_IMAGE) {
        ds_image_load(j->path, s->image_size, j->buf, &j->img);
    } else if (j->kind == DS_MEDIA_VIDEO) {
        ds_video_info info;
        ds_video_load(j->path, s->video_frames, s->video_size, j->buf, &info);
        j->tl = (ds_timeline){info.start, info.duration};
    } else {
        ds_audio_file_features(j->path, j->buf, &j->tl.duration);
    }
}

static bool guarded_load(load_job *j, char *err, size_t n) {
    jmp_buf jb;
    t_jmp = &jb;
    ag_set_error_handler(catch_failure);
    if (setjmp(jb)) {
        ag_set_error_handler(NULL);
        snprintf(err, n, "%s", t_msg);
        return false;
    }
    run_load(j);
    ag_set_error_handler(NULL);
    return true;
}

static size_t media_bytes(const ds_pack_sizes *s, ds_media_kind kind) {
    if (kind == DS_MEDIA_IMAGE) return (size_t)s->image_size * (size_t)s->image_size * 3;
    if (kind == DS_MEDIA_VIDEO)
        return (size_t)s->video_frames * (size_t)s->video_size * (size_t)s->video_size * 3;
    return sizeof(float) * DS_AUDIO_CLIPS * DS_AUDIO_FRAMES * DS_AUDIO_MELS;
}

// Makes media m available (decoding it unless it is already there or being decoded by
// another worker); false with the loader's message when the file cannot be used. The caller
// holds a claim on m (pending > 0), so the data stays until the writer is done with it.
static bool need_media(packer *p, int32_t m, char *err, size_t n) {
    media *e = &p->media[m];
    xlock(&p->mu);
    while (e->state == M_LOADING) xwait(&p->loaded, &p->mu);
    if (e->state == M_NONE) {
        e->state = M_LOADING;
        xunlock(&p->mu);
        load_job j = {.kind = e->kind, .path = e->path, .sizes = &p->cfg->sizes};
        j.buf = ag_xmalloc(media_bytes(&p->cfg->sizes, e->kind), "media");
        char why[2048];
        bool ok = guarded_load(&j, why, sizeof why);
        if (!ok) free(j.buf);
        xlock(&p->mu);
        if (ok) {
            e->data = j.buf;
            e->width = j.img.width, e->height = j.img.height, e->tl = j.tl;
            e->exif_orientation = j.img.exif_orientation;
            e->state = M_READY;
        } else {
            e->error = ag_xstrdup(why);
            e->state = M_FAILED;
        }
        xbroadcast(&p->loaded);
    }
    bool ok = e->state == M_READY;
    if (!ok) snprintf(err, n, "%s", e->error);
    xunlock(&p->mu);
    return ok;
}

// The sample_meta JSON (data/FORMAT.md): id, file, index, the first box and span of the
// answers, and "start" when the sample's video or sound starts after its file's start
// (start > 0: a span in seconds of the file is start + t * duration).
static char *make_meta(const packer *p, const item *it, const ds_turn *t, int n, double start) {
    cJSON *m = cJSON_CreateObject();
    if (!m) ag_fail("pack: out of memory building sample_meta");
    const cJSON *id =
        cJSON_IsObject(it->obj) ? cJSON_GetObjectItemCaseSensitive(it->obj, "id") : NULL;
    bool ok = true;
    if (id) ok = cJSON_AddItemToObject(m, "id", cJSON_Duplicate(id, true));
    ok = ok && cJSON_AddStringToObject(m, "file", p->files[it->file].path) &&
         cJSON_AddNumberToObject(m, "index", (double)it->index);
    if (ok && start != 0.0) ok = cJSON_AddNumberToObject(m, "start", start);
    bool have_box = false, have_span = false;
    for (int i = 0; i < n && ok; i++) {
        if (t[i].from_human) continue;
        ds_box b;
        ds_span s;
        if (!have_box && ds_parse_box(t[i].text, &b)) {
            double v[4] = {b.x1, b.y1, b.x2, b.y2};
            ok = cJSON_AddItemToObject(m, "box", cJSON_CreateDoubleArray(v, 4));
            have_box = true;
        }
        if (!have_span && ds_parse_span(t[i].text, &s)) {
            double v[2] = {s.t1, s.t2};
            ok = ok && cJSON_AddItemToObject(m, "span", cJSON_CreateDoubleArray(v, 2));
            have_span = true;
        }
    }
    char *s = ok ? cJSON_PrintUnformatted(m) : NULL;
    cJSON_Delete(m);
    if (!s) ag_fail("pack: out of memory building sample_meta");
    return s;
}

// Renders, checks and tokenizes a conversation into r. task < 0: infer it. start: the
// medium's start offset for sample_meta (make_meta).
static bool build_sample(const packer *p, const item *it, const ds_turn *t, int n, int task,
                         double start, result *r, char *err, size_t en) {
    ds_rendered rd;
    if (!ds_render(t, n, &rd, err, (int)en)) return false;
    if (t[n - 1].from_human) {
        ds_rendered_free(&rd);
        return failf(err, en, "the conversation ends with a human turn (no answer to learn)");
    }
    for (int k = 0; k < DS_MEDIA_KINDS; k++) {
        bool has = it->media[k] >= 0;
        int count = rd.media_count[k];
        const char *ph = ds_media_placeholder((ds_media_kind)k);
        if (has && count == 0) {
            ds_rendered_free(&rd);
            return failf(err, en, "\"%s\" is given but the conversation has no %s placeholder",
                         media_keys[k], ph);
        }
        if (!has && count > 0) {
            ds_rendered_free(&rd);
            return failf(err, en, "the conversation has a %s placeholder but no \"%s\" file", ph,
                         media_keys[k]);
        }
        if (count > 1) {
            ds_rendered_free(&rd);
            return failf(err, en, "%d %s placeholders (one per sample)", count, ph);
        }
    }
    bool ok = ds_prompt_tokenize(&rd, p->tok, &p->media_tokens, p->patches, &r->tokens, &r->mask,
                                 &r->len, err, en);
    ds_rendered_free(&rd);
    if (!ok) return false;
    if (r->len > p->cfg->max_len)
        return failf(err, en, "%lld tokens after expanding media, more than --max-len %lld",
                     (long long)r->len, (long long)p->cfg->max_len);
    r->task = task >= 0 ? task
                        : ds_infer_task(t, n, it->media[DS_MEDIA_VIDEO] >= 0,
                                        it->media[DS_MEDIA_AUDIO] >= 0);
    // A grounding task names what its turns must hold (its reference in eval): a "task" given
    // over a box the parser does not take ([1.5, -0.2, 3, 4]) would pack a sample without one.
    ds_turn_refs refs = ds_find_turn_refs(t, n);
    const char *need =
        r->task == DS_TASK_REC && !refs.box_answer     ? "no answer holds a box [x1, y1, x2, y2]"
        : r->task == DS_TASK_REG && !refs.box_question ? "no question holds a box [x1, y1, x2, y2]"
        : (r->task == DS_TASK_TVG || r->task == DS_TASK_SOUND) && !refs.span_answer
            ? "no answer holds a span {t1, t2}"
            : NULL;
    if (need) // (process frees the tokens)
        return failf(err, en, "task \"%s\" but %s of numbers in [0, 1]", ds_task_name(r->task),
                     need);
    r->granularity = r->task == DS_TASK_REC || r->task == DS_TASK_REG || r->task == DS_TASK_TVG ||
                     r->task == DS_TASK_SOUND;
    r->meta = make_meta(p, it, t, n, start);
    return true;
}

static bool process_json(packer *p, const item *it, result *r, char *err, size_t en) {
    int task, n;
    ds_turn *turns;
    if (!ds_json_sample_turns(it->obj, &task, &turns, &n, err, en)) return false;
    // reference-format boxes and spans are normalised already: pixels or reversed ones would
    // train and score nonsense (boxes where there is an image, spans where there is a video or
    // a sound: elsewhere "{1, 2}" may be a set in a caption)
    bool ok = true;
    const bool boxes = it->media[DS_MEDIA_IMAGE] >= 0,
               spans = it->media[DS_MEDIA_VIDEO] >= 0 || it->media[DS_MEDIA_AUDIO] >= 0;
    for (int i = 0; i < n && ok; i++) {
        char why[256];
        if (!ds_check_normalised(turns[i].text, boxes, spans, why, sizeof why))
            ok = failf(err, en, "turn %d: %s", i + 1, why);
    }
    // (reference-format spans are normalised already: no start offset to keep)
    ok = ok && build_sample(p, it, turns, n, task, 0.0, r, err, en);
    free(turns);
    // media last: a sample already known to be bad costs no decode
    for (int k = 0; ok && k < DS_MEDIA_KINDS; k++)
        if (it->media[k] >= 0) ok = need_media(p, it->media[k], err, en);
    return ok;
}

static bool process_jsonl(packer *p, const item *it, result *r, char *err, size_t en) {
    ds_grounding_record g;
    if (!ds_grounding_record_parse(it->obj, &g, err, en)) return false;
    int32_t m = it->media[g.kind];
    if (!need_media(p, m, err, en)) return false;
    const media *e = &p->media[m];
    char *q, *a;
    if (!ds_grounding_conversation(&g, e->width, e->height, e->tl, &q, &a, err, en)) return false;
    ds_turn turns[2] = {{true, q}, {false, a}};
    static const int tasks[DS_MEDIA_KINDS] = {DS_TASK_REC, DS_TASK_TVG, DS_TASK_SOUND};
    bool ok = build_sample(p, it, turns, 2, tasks[g.kind], e->tl.start, r, err, en);
    free(q);
    free(a);
    return ok;
}

// The first key or string value of a JSON record that is not UTF-8, as "\"id\"" (its key, or
// "a key" for a key itself); NULL when all are. Text that is not UTF-8 (a Latin-1 file) would
// be tokenized as U+FFFD and stored in sample_meta as bytes h5py cannot read.
static const char *first_non_utf8(const cJSON *j, char *buf, size_t n) {
    for (const cJSON *c = j ? j->child : NULL; c; c = c->next) {
        if (c->string && !ds_utf8_valid(c->string)) return "a key";
        if (cJSON_IsString(c) && !ds_utf8_valid(c->valuestring)) {
            char name[100];
            snprintf(buf, n, "\"%s\"",
                     c->string ? ds_quote(c->string, name, sizeof name) : "a list item");
            return buf;
        }
        const char *inner = first_non_utf8(c, buf, n);
        if (inner) return inner;
    }
    return NULL;
}

static void process(packer *p, int64_t i, result *r) {
    const item *it = &p->items[i];
    char err[2048];
    bool ok;
    char key[128];
    const char *bad_text = it->bad ? NULL : first_non_utf8(it->obj, key, sizeof key);
    if (it->bad) {
        ok = failf(err, sizeof err, "%s", it->bad);
    } else if (bad_text) {
        ok = failf(err, sizeof err, "%s is not UTF-8 text (save the file as UTF-8)", bad_text);
    } else if (p->files[it->file].jsonl) {
        ok = process_jsonl(p, it, r, err, sizeof err);
    } else {
        ok = process_json(p, it, r, err, sizeof err);
    }
    if (!ok) {
        free(r->tokens), free(r->mask), free(r->meta);
        *r = (result){.bad = ag_xstrdup(err)};
    }
}

static void *worker(void *arg) {
    packer *p = arg;
    for (;;) {
        xlock(&p->mu);
        while (!p->stop && p->next_claim < p->n && p->next_claim >= p->written + p->window)
            xwait(&p->space, &p->mu);
        if (p->stop || p->next_claim >= p->n) {
            xunlock(&p->mu);
            return NULL;
        }
        int64_t i = p->next_claim++;
        for (int k = 0; k < DS_MEDIA_KINDS; k++)
            if (p->items[i].media[k] >= 0) p->media[p->items[i].media[k]].pending++;
        xunlock(&p->mu);

        result r = {0};
        process(p, i, &r);

        xlock(&p->mu);
        r.ready = true;
        p->slots[i % p->window] = r;
        xbroadcast(&p->ready);
        xunlock(&p->mu);
    }
}

// ---- output (the calling thread) ----

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    int mode; // 0 none, 1 lines, 2 bar
    double t0, last;
    bool bar_shown;
} progress;

static void progress_show(progress *pg, int64_t done, int64_t total, bool final) {
    if (!pg->mode) return;
    double t = now();
    if (!final && t - pg->last < (pg->mode == 2 ? 0.1 : 5.0)) return;
    pg->last = t;
    double el = t - pg->t0, rate = el > 0 ? (double)done / el : 0;
    double eta = rate > 0 ? (double)(total - done) / rate : 0;
    int pct = total ? (int)(100 * done / total) : 100;
    if (pg->mode == 2) {
        char bar[31];
        int fill = total ? (int)(30 * done / total) : 30;
        for (int k = 0; k < 30; k++) bar[k] = k < fill ? '#' : '.';
        bar[30] = 0;
        fprintf(stderr, "\rpack [%s] %3d%% %lld/%lld  %.1f samples/s  eta %dm%02ds\033[K", bar, pct,
                (long long)done, (long long)total, rate, (int)eta / 60, (int)eta % 60);
        if (final) fputc('\n', stderr);
        pg->bar_shown = !final;
    } else {
        fprintf(stderr, "pack: %lld/%lld samples (%d%%), %.1f samples/s, %s %dm%02ds\n",
                (long long)done, (long long)total, pct, rate, final ? "took" : "eta",
                (int)(final ? el : eta) / 60, (int)(final ? el : eta) % 60);
    }
    fflush(stderr);
}

// Removes every entry of a folder (plain files only: the staging folder holds nothing else)
// and the folder itself. Best effort: what cannot be removed stays for the next run.
static void remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *f = join_path(dir, e->d_name);
        (void)unlink(f);
        free(f);
    }
    closedir(d);
    (void)rmdir(dir);
}

// ---- publishing ----
//
// A pack into a folder that holds a dataset leaves that dataset whole until the new one is
// complete: the new shards get names the current manifest does not use, manifest.json (written
// last, tmp + rename) switches from the old shards to the new ones, and only then do the old
// ones go. Name set g: shard_NNNNN.h5 (g = 0, what a fresh folder gets) or shard_gG_NNNNN.h5;
// a pack takes the lowest set the current manifest does not use, so packs into the same
// folder alternate between shard_NNNNN.h5 and shard_g1_NNNNN.h5.

#define MAX_NAME_SET 1000

static void shard_name(char *buf, size_t n, int set, int64_t k) {
    if (set == 0)
        snprintf(buf, n, "shard_%05lld.h5", (long long)k);
    else
        snprintf(buf, n, "shard_g%d_%05lld.h5", set, (long long)k);
}

// The name set of a file name, or -1 when it is not a shard name pack writes.
static int shard_set_of(const char *file) {
    if (strncmp(file, "shard_", 6) != 0) return -1;
    const char *s = file + 6;
    char *end;
    long set = 0;
    if (*s == 'g') {
        if (!isdigit((unsigned char)s[1])) return -1;
        set = strtol(s + 1, &end, 10);
        if (*end != '_' || set < 1 || set > MAX_NAME_SET) return -1;
        s = end + 1;
    }
    if (!isdigit((unsigned char)*s)) return -1;
    errno = 0;
    long long k = strtoll(s, &end, 10);
    if (errno || k < 0) return -1;
    char back[64];
    shard_name(back, sizeof back, (int)set, k);
    return strcmp(back, file) ? -1 : (int)set;
}

// The shard file names the manifest in dir lists (*n of them, malloc'd; none when there is no
// readable manifest).
static char **manifest_shard_files(const char *dir, int *n) {
    char **files = NULL;
    int64_t cap = 0;
    *n = 0;
    char *path = ag_xpath_join(dir, DS_MANIFEST_NAME);
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
        size_t len;
        char *text = ds_read_file(path, &len);
        cJSON *m = cJSON_ParseWithLength(text, len);
        const cJSON *shards = cJSON_GetObjectItemCaseSensitive(m, "shards"), *e;
        cJSON_ArrayForEach(e, shards) {
            const cJSON *file = cJSON_GetObjectItemCaseSensitive(e, "file");
            if (!cJSON_IsString(file)) continue;
            files = ag_xgrow(files, &cap, *n + 1, sizeof *files, "shard names");
            files[(*n)++] = ag_xstrdup(file->valuestring);
        }
        cJSON_Delete(m);
        free(text);
    }
    free(path);
    return files;
}

static void free_names(char **names, int n) {
    for (int k = 0; k < n; k++) free(names[k]);
    free(names);
}

// The lowest name set that neither the manifest in dir nor any file in dir uses: the new
// shards overwrite nothing (a shard of the user's own, or one a killed pack left).
static int free_name_set(const char *dir) {
    bool used[MAX_NAME_SET + 1] = {0};
    int n;
    char **files = manifest_shard_files(dir, &n);
    for (int k = 0; k < n; k++) {
        int set = shard_set_of(files[k]);
        if (set >= 0) used[set] = true;
    }
    free_names(files, n);
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        int set = shard_set_of(e->d_name);
        if (set >= 0) used[set] = true;
    }
    if (d) closedir(d);
    for (int g = 0; g <= MAX_NAME_SET; g++)
        if (!used[g]) return g;
    ag_fail("%s: uses every shard name set pack knows (shard_gN_..., N up to %d)", dir,
            MAX_NAME_SET);
}

// What a failed run takes away again: its staging folder, the new shards it already moved into
// OUT (no manifest names them yet) and OUT itself when the run made it (only while empty).
// ds_pack_main calls undo_run from its error handler too, as ag_fail does not come back.
static struct {
    bool active;
    char *staging, *made_out;
    char **moved;
    int64_t n_moved;
    char *marker; // OUT/.pack-publishing, once written
} g_undo;

static void undo_forget(void) {
    free(g_undo.staging), free(g_undo.made_out), free(g_undo.marker);
    for (int64_t k = 0; k < g_undo.n_moved; k++) free(g_undo.moved[k]);
    free(g_undo.moved);
    memset(&g_undo, 0, sizeof g_undo);
}

static void undo_run(void) {
    if (!g_undo.active) return;
    g_undo.active = false; // once, even if a removal below fails again
    for (int64_t k = 0; k < g_undo.n_moved; k++) (void)unlink(g_undo.moved[k]);
    if (g_undo.marker) (void)unlink(g_undo.marker);
    if (g_undo.staging) remove_dir(g_undo.staging);
    if (g_undo.made_out) (void)rmdir(g_undo.made_out);
    undo_forget();
}

static void undo_on_failure(const char *message) {
    (void)message;
    undo_run();
}

// Test hook: GROUNDC_TEST_KILL_IN_PUBLISH=N kills the process with SIGKILL right after the N-th
// new shard was moved into OUT, and GROUNDC_TEST_FAIL_IN_PUBLISH=N makes the N-th move fail
// (EIO), to test that either leaves the dataset that was there usable.
static bool test_hook(const char *name, int64_t k) {
    const char *v = getenv(name);
    return v && atoll(v) == k;
}

static bool listed_in(const ds_manifest *man, const char *file) {
    for (int k = 0; k < man->num_shards; k++)
        if (!strcmp(man->shards[k].file, file)) return true;
    return false;
}

// After the commit: removes the replaced dataset's shards (old_files, its manifest's list) and
// names the shard-named files that neither manifest lists, which stay.
static void remove_replaced(const ds_manifest *man, const char *out, char **old_files, int n_old) {
    for (int k = 0; k < n_old; k++) {
        // only plain names: a manifest naming "../x" is not pack's to follow
        if (shard_set_of(old_files[k]) < 0 || listed_in(man, old_files[k])) continue;
        char *old = join_path(out, old_files[k]);
        (void)unlink(old); // best effort: what stays is named below by the next pack
        free(old);
    }
    DIR *d = opendir(out);
    if (!d) return;
    int64_t stray = 0;
    char first[NAME_MAX + 1] = "";
    for (struct dirent *e; (e = readdir(d));) {
        if (shard_set_of(e->d_name) < 0 || listed_in(man, e->d_name)) continue;
        bool old = false;
        for (int k = 0; k < n_old && !old; k++) old = !strcmp(old_files[k], e->d_name);
        if (old) continue; // its removal failed: not the user's
        if (!stray++ || strcmp(e->d_name, first) < 0)
            snprintf(first, sizeof first, "%s", e->d_name);
    }
    closedir(d);
    if (stray)
        fprintf(stderr,
                "pack: warning: %s holds %lld shard file%s that no manifest lists (%s%s), left as "
                "%s: your own, or left by a pack killed before it finished\n",
                out, (long long)stray, stray > 1 ? "s" : "", first, stray > 1 ? ", ..." : "",
                stray > 1 ? "they are" : "it is");
}

// Moves the finished shards from staging into OUT, then writes the manifest (the commit), then
// removes the shards of the dataset it replaces. Shard-named files no manifest lists (the
// user's own, or moved in by a pack killed before its commit) are left alone, with a warning.
static void publish(const ds_manifest *man, const char *staging, const char *out) {
    size_t len = 0;
    for (int k = 0; k < man->num_shards; k++) len += strlen(man->shards[k].file) + 1;
    char *list = ag_xmalloc(len + 1, "shard names"), *at = list;
    for (int k = 0; k < man->num_shards; k++) at += sprintf(at, "%s\n", man->shards[k].file);
    char *marker = join_path(out, PUBLISHING_NAME);
    ds_write_file_atomic(marker, &(ds_file_part){list, len}, 1);
    free(list);
    g_undo.marker = marker;
    g_undo.moved = ag_xcalloc((size_t)man->num_shards + 1, sizeof *g_undo.moved, "shard names");
    for (int k = 0; k < man->num_shards; k++) {
        char *from = join_path(staging, man->shards[k].file);
        char *to = join_path(out, man->shards[k].file);
        int err = test_hook("GROUNDC_TEST_FAIL_IN_PUBLISH", k + 1) ? EIO
                  : rename(from, to) != 0                          ? errno
                                                                   : 0;
        if (err) {
            char msg[4096];
            snprintf(msg, sizeof msg, "%s: cannot move into %s: %s", from, out, strerror(err));
            free(from), free(to);
            undo_run();
            ag_fail("%s", msg);
        }
        free(from);
        g_undo.moved[g_undo.n_moved++] = to;
        if (test_hook("GROUNDC_TEST_KILL_IN_PUBLISH", k + 1)) {
            fflush(stdout);
            fflush(stderr);
            kill(getpid(), SIGKILL);
        }
    }
    ag_sync_dir(out); // the shards are there before a manifest names them
    int n_old;
    char **old_files = manifest_shard_files(out, &n_old);
    ds_manifest_write(man, out);
    ag_sync_dir(out);
    // committed: nothing of the new dataset may be undone from here on
    for (int64_t k = 0; k < g_undo.n_moved; k++) free(g_undo.moved[k]);
    g_undo.n_moved = 0;
    remove_replaced(man, out, old_files, n_old);
    free_names(old_files, n_old);
    (void)unlink(marker);
    ag_sync_dir(out);
}

// ---- the run (the calling thread) ----

static void free_result(result *r) {
    free(r->bad), free(r->tokens), free(r->mask), free(r->meta);
    memset(r, 0, sizeof *r);
}

// Stops the workers (they finish the sample in hand) and waits for them.
static void stop_workers(packer *p) {
    xlock(&p->mu);
    p->stop = true;
    xbroadcast(&p->space);
    xunlock(&p->mu);
    for (int t = 0; t < p->n_workers; t++) {
        int rc = pthread_join(p->workers[t], NULL);
        if (rc) ag_fail("pack: cannot join a worker thread: %s", strerror(rc));
    }
}

static void packer_free(packer *p) {
    free(p->workers);
    if (p->slots)
        for (int64_t s = 0; s < p->window; s++) free_result(&p->slots[s]);
    free(p->slots);
    for (int64_t m = 0; m < p->n_media; m++)
        free(p->media[m].path), free(p->media[m].data), free(p->media[m].error);
    free(p->media);
    free(p->hash);
    free(p->items);
    for (int f = 0; f < p->n_files; f++) {
        ds_record_file_free(&p->files[f]);
        free(p->sources[f]);
        free(p->roots[f]);
    }
    free(p->files), free(p->sources), free(p->roots);
    if (p->tok) ds_tokenizer_free(p->tok);
}

// The writer's side of a run: the staging folder, the open shard and what is written so far.
typedef struct {
    ds_shard_layout layout;
    char *staging;          // OUT/.pack-staging
    int name_set;           // of the shard names (free_name_set)
    ds_shard_writer *shard; // the open shard; NULL between shards
    char name[64];          // its file name
    int64_t in_shard;       // samples in it
    ds_manifest man;
    ds_pack_stats st;
    progress pg;
    // images of grounding JSONL records that viewers show turned (EXIF orientation > 1)
    int64_t turned;
    int32_t turned_first; // media index of the first
} output;

// A run that fails midway: workers stopped, the open shard and the staging folder removed
// (undo_run), everything of the run freed; the caller then fails with its message.
static void abandon_run(packer *p, output *o, result *r) {
    stop_workers(p);
    if (o->shard) ds_shard_abort(o->shard);
    undo_run();
    free_result(r);
    ds_manifest_free(&o->man);
    free(o->staging);
    packer_free(p);
}

// Where a sample is, for its messages: "FILE: sample I" in a JSON list (I from 0; a bare
// "FILE:I" would read as a line number) or "FILE:LINE" in a JSONL file.
static void sample_where(const packer *p, const item *it, char *buf, size_t n) {
    const ds_record_file *f = &p->files[it->file];
    snprintf(buf, n, f->jsonl ? "%s:%lld" : "%s: sample %lld", f->path, (long long)it->index);
}

// Inputs without a single sample: a one-line error naming them.
__attribute__((noreturn)) static void no_samples(const ds_pack_config *c) {
    int n = c->n_json + c->n_jsonl;
    char names[2048] = "";
    size_t len = 0;
    for (int f = 0; f < n && len < sizeof names; f++) {
        const char *path = f < c->n_json ? c->json_files[f] : c->jsonl_files[f - c->n_json];
        int w = snprintf(names + len, sizeof names - len, "%s%s", f ? ", " : "", path);
        len += w > 0 ? (size_t)w : 0;
    }
    if (n == 1) ag_fail("%s: holds no samples", names);
    ag_fail("pack: %s: none holds a sample", names);
}

static void check_config(const ds_pack_config *c) {
    if (c->n_json + c->n_jsonl < 1)
        ag_fail("pack: no input (--json FILE or --grounding-jsonl FILE; groundc pack --help)");
    if (!c->tokenizer_path) ag_fail("pack: --tokenizer FILE is required");
    if (!c->out_dir || !c->out_dir[0]) ag_fail("pack: --out DIR is required");
    // every media path would fail one by one
    struct stat st;
    if (c->media_root && stat(c->media_root, &st) != 0)
        ag_fail("pack: --media-root %s: %s", c->media_root, strerror(errno));
    if (c->media_root && !S_ISDIR(st.st_mode))
        ag_fail("pack: --media-root %s: not a folder", c->media_root);
    if (c->shard_samples < 1) ag_fail("pack: --shard-samples must be at least 1");
    if (c->threads < 1) ag_fail("pack: --threads must be at least 1");
    if (c->max_len < 1) ag_fail("pack: --max-len must be at least 1");
    if (c->zstd_level < ZSTD_minCLevel() || c->zstd_level > ZSTD_maxCLevel())
        ag_fail("pack: --zstd-level must be %d to %d, got %d", ZSTD_minCLevel(), ZSTD_maxCLevel(),
                c->zstd_level);
    const ds_pack_sizes *s = &c->sizes;
    if (s->image_size < 1 || s->image_tokens < 1 || s->video_frames < 1 || s->video_size < 1 ||
        s->video_tokens < 1 || s->audio_tokens < 1)
        ag_fail("pack: media sizes and token counts must be at least 1");
    if (c->source && !c->source[0]) ag_fail("pack: --source must not be empty");
}

// The tokenizer with the media tokens added; digest gets its SHA-256 for the shards.
static void load_tokenizer(packer *p, char digest[65]) {
    const ds_pack_config *cfg = p->cfg;
    p->tok = ds_tokenizer_load(cfg->tokenizer_path);
    p->media_tokens = ds_prompt_add_tokens(p->tok);
    p->patches[DS_MEDIA_IMAGE] = cfg->sizes.image_tokens;
    p->patches[DS_MEDIA_VIDEO] = cfg->sizes.video_tokens;
    p->patches[DS_MEDIA_AUDIO] = cfg->sizes.audio_tokens;
    ds_tokenizer_digest(p->tok, digest);
}

// A pack killed while it moved its shards into OUT left PUBLISHING_NAME: the shards it names
// that the manifest does not list are that pack's, never committed; they go, then the list.
static void remove_unpublished(const char *out) {
    char *marker = join_path(out, PUBLISHING_NAME);
    struct stat st;
    if (lstat(marker, &st) != 0 || !S_ISREG(st.st_mode)) {
        free(marker);
        return;
    }
    int n_listed;
    char **listed = manifest_shard_files(out, &n_listed);
    size_t len;
    char *text = ds_read_file(marker, &len);
    for (char *save = NULL, *name = strtok_r(text, "\n", &save); name;
         name = strtok_r(NULL, "\n", &save)) {
        bool keep = shard_set_of(name) < 0; // only plain shard names, nothing with a '/'
        for (int k = 0; k < n_listed && !keep; k++) keep = !strcmp(listed[k], name);
        if (keep) continue;
        char *path = join_path(out, name);
        if (unlink(path) != 0 && errno != ENOENT)
            ag_fail("%s: cannot remove (left by a pack killed before it finished): %s", path,
                    strerror(errno));
        free(path);
    }
    free(text);
    free_names(listed, n_listed);
    if (unlink(marker) != 0) ag_fail("%s: cannot remove: %s", marker, strerror(errno));
    ag_sync_dir(out);
    free(marker);
}

// A manifest.json in OUT that is not a dataset manifest (not JSON, no "shards" list) is not
// pack's to replace: it may be another tool's file in a folder that is not a dataset.
static void check_foreign_manifest(const char *out) {
    char *path = ag_xpath_join(out, DS_MANIFEST_NAME);
    struct stat st;
    if (stat(path, &st) == 0) {
        size_t len = 0;
        char *text = S_ISREG(st.st_mode) ? ds_read_file(path, &len) : NULL;
        cJSON *m = text ? cJSON_ParseWithLength(text, len) : NULL;
        const char *why = !S_ISREG(st.st_mode) ? "not a file"
                          : !m                 ? "not JSON"
                          : !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(m, "shards"))
                              ? "no shards list"
                              : NULL;
        cJSON_Delete(m);
        free(text);
        if (why)
            ag_fail("%s: not a dataset manifest (%s): pack would replace it; give another --out, "
                    "or remove it if it is a damaged one of groundc's",
                    path, why);
    }
    free(path);
}

// One pack per folder: a second one would take the first's staging for a killed run's. The
// lock is flock on the folder itself (no lock file left in the dataset), held until exit;
// where the file system cannot lock (an NFS without locking), packs go unguarded.
static void lock_folder(const char *out) {
    int fd = open(out, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) ag_fail("%s: cannot open: %s", out, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) return;
    int e = errno;
    close(fd);
    if (e == EWOULDBLOCK)
        ag_fail("%s: another pack is writing into this folder: let it finish or stop it first",
                out);
}

// manifest.json.tmp.PID files of packs killed while writing the manifest: stale, as a live
// pack would hold the folder's lock.
static void remove_stale_manifest_tmp(const char *out) {
    DIR *dir = opendir(out);
    if (!dir) ag_fail("%s: cannot list: %s", out, strerror(errno));
    struct dirent *e;
    for (errno = 0; (e = readdir(dir)); errno = 0)
        if (!strncmp(e->d_name, "manifest.json.tmp.", 18)) {
            char *path = join_path(out, e->d_name);
            if (unlink(path) != 0 && errno != ENOENT)
                ag_fail("%s: cannot remove (left by a pack killed before it finished): %s", path,
                        strerror(errno));
            free(path);
        }
    if (errno) ag_fail("%s: cannot list: %s", out, strerror(errno));
    closedir(dir);
}

// Makes OUT (when missing) and an empty OUT/.pack-staging, both registered with g_undo so a
// failure takes them away again; returns the staging path and picks the shard name set.
static char *make_staging(const char *out, int *name_set) {
    struct stat out_st;
    bool made_out = stat(out, &out_st) != 0;
    ds_make_dirs(out);
    lock_folder(out);
    check_foreign_manifest(out);
    remove_unpublished(out);
    remove_stale_manifest_tmp(out);
    *name_set = free_name_set(out);
    char *staging = join_path(out, STAGING_NAME);
    remove_dir(staging); // left over by a run that crashed
    undo_forget();
    g_undo.made_out = made_out ? ag_xstrdup(out) : NULL;
    g_undo.active = true;
    if (mkdir(staging, 0777) != 0) {
        char msg[4096];
        snprintf(msg, sizeof msg, "%s: cannot create the folder: %s", staging, strerror(errno));
        undo_run();
        ag_fail("%s", msg);
    }
    g_undo.staging = ag_xstrdup(staging);
    return staging;
}

// The locks, the reorder buffer and cfg->threads workers, which start claiming samples.
static void start_workers(packer *p) {
    int threads = p->cfg->threads, rc;
    if ((rc = pthread_mutex_init(&p->mu, NULL)) || (rc = pthread_cond_init(&p->space, NULL)) ||
        (rc = pthread_cond_init(&p->ready, NULL)) || (rc = pthread_cond_init(&p->loaded, NULL)))
        ag_fail("pack: cannot make the worker locks: %s", strerror(rc));
    // Enough look-ahead that a slow decode at the head does not idle the other workers.
    p->window = 4 * (int64_t)threads + 4;
    p->slots = ag_xcalloc((size_t)p->window, sizeof *p->slots, "reorder buffer");
    p->workers = ag_xcalloc((size_t)threads, sizeof *p->workers, "worker threads");
    for (; p->n_workers < threads; p->n_workers++)
        if ((rc = pthread_create(&p->workers[p->n_workers], NULL, worker, p)) != 0) break;
    if (p->n_workers < threads) {
        int failed = p->n_workers + 1;
        stop_workers(p);
        undo_run();
        ag_fail("pack: cannot start worker thread %d: %s", failed, strerror(rc));
    }
}

static ds_shard_layout shard_layout(const ds_pack_config *cfg, const char *digest) {
    return (ds_shard_layout){.tokenizer_digest = digest,
                             .image_size = cfg->sizes.image_size,
                             .video_frames = cfg->sizes.video_frames,
                             .video_size = cfg->sizes.video_size,
                             .audio_clips = DS_AUDIO_CLIPS,
                             .audio_frames = DS_AUDIO_FRAMES,
                             .audio_mels = DS_AUDIO_MELS,
                             .compression_level = cfg->zstd_level};
}

// SIGINT (Ctrl-C) or SIGTERM during a pack (ds_pack_main): the run stops at the next sample
// and takes its output away again, leaving OUT as it was. A second signal of the kind does
// what it would without groundc (the handler hands it back to the default).
static volatile sig_atomic_t g_stop_signal;

static void on_stop_signal(int sig) {
    if (!g_stop_signal) g_stop_signal = sig;
    signal(sig, SIG_DFL); // async-signal-safe
}

// The result of sample i, once its worker has put it in the reorder buffer; false, with
// nothing taken, when a stop signal came first.
static bool take_result(packer *p, int64_t i, result *out) {
    xlock(&p->mu);
    result *slot = &p->slots[i % p->window];
    // in slices, so that a stop signal is seen while a worker decodes a long video
    while (!slot->ready && !g_stop_signal) xwait_ms(&p->ready, &p->mu, 100);
    if (!slot->ready) {
        xunlock(&p->mu);
        return false;
    }
    *out = *slot;
    *slot = (result){0};
    xunlock(&p->mu);
    return true;
}

// The writer is done with a sample: media no other claimed sample needs is dropped, and a
// worker may claim one more sample.
static void release_sample(packer *p, const item *it) {
    xlock(&p->mu);
    for (int k = 0; k < DS_MEDIA_KINDS; k++) {
        if (it->media[k] < 0) continue;
        media *e = &p->media[it->media[k]];
        if (--e->pending == 0 && (e->state == M_READY || e->state == M_FAILED)) {
            free(e->data), free(e->error);
            e->data = NULL, e->error = NULL;
            e->state = M_NONE;
        }
    }
    p->written++;
    xbroadcast(&p->space);
    xunlock(&p->mu);
}

// A bad sample: skipped and counted with a line on stderr, or the end of the run
// (--fail-on-error).
static void bad_sample(packer *p, output *o, const item *it, result *r) {
    if (o->pg.bar_shown) fputs("\r\033[K", stderr);
    char where[2048];
    sample_where(p, it, where, sizeof where);
    if (p->cfg->fail_on_error) {
        char line[4096];
        snprintf(line, sizeof line, "%s: %s", where, r->bad);
        abandon_run(p, o, r);
        ag_fail("%s", line);
    }
    fprintf(stderr, "%s: %s (skipped)\n", where, r->bad);
    o->st.skipped++;
}

// Starts the next shard in the staging folder.
static void open_shard(packer *p, output *o, result *r) {
    char path[4096];
    shard_name(o->name, sizeof o->name, o->name_set, o->st.shards);
    if ((size_t)snprintf(path, sizeof path, "%s/%s", o->staging, o->name) >= sizeof path) {
        char head[PATH_MAX + 1]; // staging was made, so it is under PATH_MAX
        snprintf(head, sizeof head, "%s/", o->staging);
        abandon_run(p, o, r);
        ag_fail_path_too_long(head, o->name);
    }
    o->shard = ds_shard_create(path, &o->layout);
}

// Closes the open shard and lists it, with its checksum, in the manifest.
static void finish_shard(output *o) {
    ds_shard_info info;
    ds_shard_finish(o->shard, &info);
    ds_manifest_add_shard(&o->man, o->name, &info);
    ds_shard_info_free(&info);
    o->shard = NULL, o->in_shard = 0, o->st.shards++;
}

// The rows of a sample's media in the open shard: a file gets its row the first time a sample
// of this shard uses it, later samples share that row.
static void media_rows(packer *p, output *o, const item *it, int32_t rows[DS_MEDIA_KINDS]) {
    int32_t shard_tag = (int32_t)o->st.shards + 1;
    for (int k = 0; k < DS_MEDIA_KINDS; k++) {
        rows[k] = -1;
        if (it->media[k] < 0) continue;
        media *e = &p->media[it->media[k]];
        if (e->row_shard != shard_tag) {
            // READY and kept: this sample's claim is still pending
            if (k == DS_MEDIA_IMAGE)
                e->row = ds_shard_add_image(o->shard, e->data, e->width, e->height), o->st.images++;
            else if (k == DS_MEDIA_VIDEO)
                e->row = ds_shard_add_video(o->shard, e->data, (float)e->tl.duration),
                o->st.videos++;
            else
                e->row = ds_shard_add_audio(o->shard, e->data, (float)e->tl.duration),
                o->st.audios++;
            e->row_shard = shard_tag;
        }
        rows[k] = e->row;
    }
}

// Writes a good sample into the open shard (opening one first when none is), and finishes the
// shard when it is full.
static void write_sample(packer *p, output *o, const item *it, result *r) {
    if (!o->shard) open_shard(p, o, r);
    int32_t im = it->media[DS_MEDIA_IMAGE];
    if (p->files[it->file].jsonl && im >= 0 && p->media[im].exif_orientation > 1 &&
        !p->media[im].turned_counted) {
        if (!o->turned) o->turned_first = im;
        o->turned++;
        p->media[im].turned_counted = true;
    }
    int32_t rows[DS_MEDIA_KINDS];
    media_rows(p, o, it, rows);
    ds_sample s = {.tokens = r->tokens,
                   .loss_mask = r->mask,
                   .length = r->len,
                   .image = rows[DS_MEDIA_IMAGE],
                   .video = rows[DS_MEDIA_VIDEO],
                   .audio = rows[DS_MEDIA_AUDIO],
                   .task = r->task,
                   .granularity = r->granularity,
                   .source = p->sources[it->file],
                   .meta = r->meta};
    ds_shard_add_sample(o->shard, &s);
    o->st.samples++;
    o->st.tokens += r->len;
    if (++o->in_shard == p->cfg->shard_samples) finish_shard(o);
}

// A stop signal during the run: everything of it taken away, OUT left as it was; exits
// 128 + the signal, as the signal itself would.
__attribute__((noreturn)) static void stopped(packer *p, output *o, int64_t done) {
    if (o->pg.bar_shown) fputs("\r\033[K", stderr);
    const int sig = g_stop_signal;
    fprintf(stderr, "pack: stopped by %s after %lld of %lld samples; %s is left as it was\n",
            ag_signal_name(sig), (long long)done, (long long)p->n, p->cfg->out_dir);
    result none = {0};
    abandon_run(p, o, &none);
    fflush(stdout);
    exit(128 + sig);
}

// Test hook: GROUNDC_TEST_SIGNAL_AT_SAMPLE=N sends this process SIGINT right after the N-th
// sample was written, as a Ctrl-C would.
static void maybe_signal_at(int64_t done) {
    const char *v = getenv("GROUNDC_TEST_SIGNAL_AT_SAMPLE");
    if (v && atoll(v) == done) raise(SIGINT);
}

// Takes every sample's result in input order and writes it (or skips it) into the staged
// shards; the last shard is finished too.
static void write_shards(packer *p, output *o) {
    const ds_pack_config *cfg = p->cfg;
    for (int64_t i = 0; i < p->n; i++) {
        result r;
        if (g_stop_signal || !take_result(p, i, &r)) stopped(p, o, i);
        const item *it = &p->items[i];
        if (r.bad)
            bad_sample(p, o, it, &r);
        else if (cfg->task_mask && !(cfg->task_mask & (1u << r.task)))
            o->st.filtered++;
        else
            write_sample(p, o, it, &r);
        free_result(&r);
        release_sample(p, it);
        progress_show(&o->pg, i + 1, p->n, false);
        maybe_signal_at(i + 1);
    }
    if (g_stop_signal) stopped(p, o, p->n);
    if (o->shard) finish_shard(o);
}

static void print_summary(const ds_pack_config *cfg, const ds_pack_stats *st,
                          const ds_manifest *man, int64_t n) {
    printf("pack: %lld samples, %lld tokens in %lld shards (%lld image, %lld video, %lld audio "
           "rows) in %s; %lld skipped; %.1f s, %.1f samples/s\n",
           (long long)st->samples, (long long)st->tokens, (long long)st->shards,
           (long long)st->images, (long long)st->videos, (long long)st->audios, cfg->out_dir,
           (long long)st->skipped, st->seconds, st->seconds > 0 ? (double)n / st->seconds : 0.0);
    if (cfg->task_mask)
        printf("pack: %lld samples of other tasks left out (--tasks)\n", (long long)st->filtered);
    printf("pack: tasks");
    for (int k = 0; k < man->num_tasks; k++)
        printf(" %s %lld", man->tasks[k].name, (long long)man->tasks[k].count);
    printf("; sources");
    for (int k = 0; k < man->num_sources; k++)
        printf(" %s %lld", man->sources[k].name, (long long)man->sources[k].count);
    printf("\n");
    fflush(stdout);
}

void ds_pack(const ds_pack_config *cfg, ds_pack_stats *stats) {
    check_config(cfg);
    double t0 = now();
    packer P = {.cfg = cfg}, *p = &P;
    char digest[65];
    load_tokenizer(p, digest);
    read_inputs(p);
    if (p->n == 0) no_samples(cfg);
    if (g_stop_signal) { // nothing written yet
        fprintf(stderr, "pack: stopped by %s before writing\n", ag_signal_name(g_stop_signal));
        exit(128 + g_stop_signal);
    }

    output o = {0};
    o.staging = make_staging(cfg->out_dir, &o.name_set);
    start_workers(p);
    o.layout = shard_layout(cfg, digest);
    ds_manifest_init(&o.man, digest);
    o.pg = (progress){.t0 = t0, .last = now()};
    o.pg.mode = cfg->progress == 0 ? 0 : isatty(STDERR_FILENO) ? 2 : 1;
    write_shards(p, &o);
    stop_workers(p);
    progress_show(&o.pg, p->n, p->n, true);

    if (o.st.samples == 0) {
        undo_run();
        if (o.st.filtered)
            ag_fail("pack: no sample could be packed (%lld of %lld skipped, %lld of other tasks "
                    "than --tasks)",
                    (long long)o.st.skipped, (long long)p->n, (long long)o.st.filtered);
        ag_fail("pack: no sample could be packed (%lld of %lld skipped)", (long long)o.st.skipped,
                (long long)p->n);
    }
    publish(&o.man, o.staging, cfg->out_dir);
    remove_dir(o.staging);
    undo_forget();
    o.st.seconds = now() - t0;
    print_summary(cfg, &o.st, &o.man, p->n);
    if (o.turned) // the boxes were drawn in pixels: on which picture, the stored or the turned?
        fprintf(stderr,
                "pack: warning: %lld image%s of grounding JSONL records carr%s an EXIF "
                "orientation other than 1 (the first: %s, orientation %d): groundc uses the "
                "pixels as stored, as the reference does (PIL without exif_transpose), so their "
                "boxes must be given on the stored picture, not as a photo viewer turns it\n",
                (long long)o.turned, o.turned > 1 ? "s" : "", o.turned > 1 ? "y" : "ies",
                p->media[o.turned_first].path, p->media[o.turned_first].exif_orientation);

    ds_manifest_free(&o.man);
    free(o.staging);
    packer_free(p);
    (void)pthread_cond_destroy(&p->loaded);
    (void)pthread_cond_destroy(&p->ready);
    (void)pthread_cond_destroy(&p->space);
    (void)pthread_mutex_destroy(&p->mu);
    if (stats) *stats = o.st;
}

// ---- command line ----

void ds_pack_usage(FILE *out) {
    fprintf(out,
            "usage: groundc pack (--json FILE[,FILE] | --grounding-jsonl FILE[,FILE]) ...\n"
            "                    --tokenizer FILE --out DIR [options]\n"
            "  --json FILE[,FILE]        reference-format JSON lists (LLaVA / GroundingGPT)\n"
            "  --grounding-jsonl F[,F]   custom grounding: {image, expression, bbox [x,y,w,h] px}\n"
            "                            or {video|sound, query, span [s,e] seconds} per line\n"
            "  --media-root DIR          media paths are relative to DIR (default: the input's "
            "folder)\n"
            "  --tokenizer FILE          tokenizer.model (the 9 GroundingGPT tokens are added)\n"
            "  --out DIR                 shards + manifest.json\n"
            "  --shard-samples N         samples per shard (4096)\n"
            "  --source NAME             dataset name (default: the input file's base name)\n"
            "  --threads N               worker threads (default: cores)\n"
            "  --on-error skip|fail      bad samples: skip and count them, or stop (skip)\n"
            "  --max-len N               most tokens per sample after media expansion (2048)\n"
            "  --zstd-level N            every dataset at zstd level N: negative (fast modes,\n"
            "                            fastest to read) to 22 (smallest); 0: -1 for images\n"
            "                            and videos, 1 for the rest (0)\n"
            "  --tasks T[,T]             pack only these tasks (caption, rec, reg, tvg, sound,\n"
            "                            conversation), e.g. one dataset per curriculum stage\n"
            "  --image-size 336 --image-tokens 576 --video-frames 64 --video-size 224\n"
            "  --video-tokens 64 --audio-tokens 8   model-dependent sizes (reference values)\n");
}

// "pack: --opt" for messages, then ag_parse_int.
static long long int_opt(const char *opt, const char *v, long long lo, long long hi) {
    char what[64];
    snprintf(what, sizeof what, "pack: %s", opt);
    return ag_parse_int(what, v, lo, hi);
}

// "rec,tvg" -> (1 << DS_TASK_REC) | (1 << DS_TASK_TVG).
static unsigned parse_tasks(const char *v) {
    unsigned mask = 0;
    for (const char *s = v;;) {
        size_t n = strcspn(s, ",");
        char name[32];
        int t = -1;
        if (n < sizeof name) {
            memcpy(name, s, n);
            name[n] = 0;
            t = ds_task_from_name(name);
        }
        if (t < 0)
            ag_fail("pack: --tasks: unknown task '%.*s' (caption, rec, reg, tvg, sound or "
                    "conversation)",
                    (int)n, s);
        mask |= 1u << t;
        if (!s[n]) return mask;
        s += n + 1;
    }
}

// Appends the comma-separated names of v to *list (pointers into the strdup'd copy, which goes
// to *keep); *cap and *keep_cap are the lists' allocated lengths.
static void split_files(const char *opt, const char *v, const char ***list, int *n, int64_t *cap,
                        char ***keep, int *n_keep, int64_t *keep_cap) {
    char *copy = ag_xstrdup(v);
    *keep = ag_xgrow(*keep, keep_cap, *n_keep + 1, sizeof **keep, "options");
    (*keep)[(*n_keep)++] = copy;
    for (char *s = copy;;) {
        char *comma = strchr(s, ',');
        if (comma) *comma = 0;
        if (!*s) ag_fail("pack: %s: empty file name in '%s'", opt, v);
        *list = ag_xgrow(*list, cap, *n + 1, sizeof **list, "options");
        (*list)[(*n)++] = s;
        if (!comma) break;
        s = comma + 1;
    }
}

int ds_pack_main(int argc, char **argv) {
#ifdef __GLIBC__
    // HDF5 allocates and zero-fills a fresh buffer for every media chunk it writes (9.6 MB for
    // a 64-frame 224 video row). With glibc's defaults each one is a new mmap whose pages all
    // fault in, which made the single writer thread the bottleneck (about 40 % slower
    // overall); keeping such buffers on the heap lets their pages be reused. Process-wide,
    // hence here in the command and not in ds_pack. Failure only costs speed.
    (void)mallopt(M_MMAP_THRESHOLD, 64 << 20);
    (void)mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
    ds_pack_config c = ds_pack_defaults();
    const char **json = NULL, **jsonl = NULL;
    char **keep = NULL;
    int n_keep = 0;
    int64_t json_cap = 0, jsonl_cap = 0, keep_cap = 0;
    for (int i = 0; i < argc; i++) {
        const char *opt = argv[i];
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            ds_pack_usage(stdout);
            return 0;
        }
        if (strncmp(opt, "--", 2) != 0) ag_fail("pack: unexpected argument '%s'", opt);
        if (i + 1 >= argc) ag_fail("pack: option %s needs a value", opt);
        const char *v = argv[++i];
        ds_pack_sizes *s = &c.sizes;
        if (!strcmp(opt, "--json"))
            split_files(opt, v, &json, &c.n_json, &json_cap, &keep, &n_keep, &keep_cap);
        else if (!strcmp(opt, "--grounding-jsonl"))
            split_files(opt, v, &jsonl, &c.n_jsonl, &jsonl_cap, &keep, &n_keep, &keep_cap);
        else if (!strcmp(opt, "--media-root"))
            c.media_root = v;
        else if (!strcmp(opt, "--tokenizer"))
            c.tokenizer_path = v;
        else if (!strcmp(opt, "--out"))
            c.out_dir = v;
        else if (!strcmp(opt, "--shard-samples"))
            c.shard_samples = int_opt(opt, v, 1, INT32_MAX);
        else if (!strcmp(opt, "--source"))
            c.source = v;
        else if (!strcmp(opt, "--threads"))
            c.threads = (int)int_opt(opt, v, 1, 1024);
        else if (!strcmp(opt, "--max-len"))
            c.max_len = int_opt(opt, v, 1, DS_MAX_SAMPLE_TOKENS);
        else if (!strcmp(opt, "--zstd-level"))
            c.zstd_level = (int)int_opt(opt, v, ZSTD_minCLevel(), ZSTD_maxCLevel());
        else if (!strcmp(opt, "--tasks"))
            c.task_mask = parse_tasks(v);
        else if (!strcmp(opt, "--on-error")) {
            if (strcmp(v, "skip") && strcmp(v, "fail"))
                ag_fail("pack: --on-error: expected skip or fail, got '%s'", v);
            c.fail_on_error = !strcmp(v, "fail");
        } else if (!strcmp(opt, "--image-size"))
            s->image_size = (int)int_opt(opt, v, 1, 8192);
        else if (!strcmp(opt, "--image-tokens"))
            s->image_tokens = (int)int_opt(opt, v, 1, 1 << 20);
        else if (!strcmp(opt, "--video-frames"))
            s->video_frames = (int)int_opt(opt, v, 1, 4096);
        else if (!strcmp(opt, "--video-size"))
            s->video_size = (int)int_opt(opt, v, 1, 4096);
        else if (!strcmp(opt, "--video-tokens"))
            s->video_tokens = (int)int_opt(opt, v, 1, 1 << 20);
        else if (!strcmp(opt, "--audio-tokens"))
            s->audio_tokens = (int)int_opt(opt, v, 1, 1 << 20);
        else
            ag_fail("pack: unknown option '%s' (groundc pack --help lists them)", opt);
    }
    c.json_files = json;
    c.jsonl_files = jsonl;
    // A failure ends the process from inside ag_fail: take the unfinished output away first.
    // So does a stop signal, from the writer's loop (write_shards).
    ag_set_error_handler(undo_on_failure);
    struct sigaction sa, old[2];
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART; // reads and writes under way (any thread) go on, no EINTR
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, &old[0]) || sigaction(SIGTERM, &sa, &old[1]))
        ag_fail("pack: sigaction: %s", strerror(errno));
    ds_pack(&c, NULL);
    if (sigaction(SIGINT, &old[0], NULL) || sigaction(SIGTERM, &old[1], NULL))
        ag_fail("pack: sigaction: %s", strerror(errno));
    ag_set_error_handler(NULL);
    free(json);
    free(jsonl);
    for (int k = 0; k < n_keep; k++) free(keep[k]);
    free(keep);
    return 0;
}
