// eval.c: see eval.h.
#include "train/eval.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/error.h"
#include "data/files.h"
#include "data/grounding.h"
#include "data/loader.h"
#include "data/manifest.h"
#include "data/shard.h"
#include "data/template.h"
#include "train/batch.h"
#include "train/checkpoint.h"
#include "train/ckpt_path.h"
#include "train/generate.h"
#include "train/model_config.h"

const double tr_eval_thresholds[TR_EVAL_NTHR] = {0.3, 0.5, 0.7};

const char *tr_eval_task_name(int task) {
    static const char *const names[TR_EVAL_TASKS] = {"rec", "tvg", "sound", "caption"};
    return task >= 0 && task < TR_EVAL_TASKS ? names[task] : NULL;
}

double tr_eval_rate(const tr_eval_result *r, int task) {
    return r->n[task] ? (double)r->hits[task] / (double)r->n[task] : NAN;
}

static int eval_kind(int task) {
    switch (task) {
    case DS_TASK_REC:
        return TR_EVAL_REC;
    case DS_TASK_TVG:
        return TR_EVAL_TVG;
    case DS_TASK_SOUND:
        return TR_EVAL_SOUND;
    case DS_TASK_CAPTION:
        return TR_EVAL_CAPTION;
    default:
        return -1;
    }
}

// IoU of the first box (REC) or span of the two texts; -1 when the reference has none (the
// sample is not gradable), 0 when the answer has none (*parsed false). want gets the
// reference's box (x1, y1, x2, y2) or span (t1, t2, 0, 0).
static double answer_iou(int kind, const char *answer, const char *reference, bool *parsed,
                         double want[4]) {
    *parsed = false;
    if (kind == TR_EVAL_REC) {
        ds_box w, got;
        if (!ds_parse_box(reference, &w)) return -1;
        memcpy(want, (double[4]){w.x1, w.y1, w.x2, w.y2}, 4 * sizeof *want);
        *parsed = ds_parse_box(answer, &got);
        return *parsed ? ds_box_iou(got, w) : 0;
    }
    ds_span w, got;
    if (!ds_parse_span(reference, &w)) return -1;
    memcpy(want, (double[4]){w.t1, w.t2, 0, 0}, 4 * sizeof *want);
    *parsed = ds_parse_span(answer, &got);
    return *parsed ? ds_span_iou(got, w) : 0;
}

static double ref_iou(int kind, const double *a, const double *b) {
    if (kind == TR_EVAL_REC)
        return ds_box_iou((ds_box){a[0], a[1], a[2], a[3]}, (ds_box){b[0], b[1], b[2], b[3]});
    return ds_span_iou((ds_span){a[0], a[1]}, (ds_span){b[0], b[1]});
}

// The graded references of one grounding task on this rank, 4 numbers each.
typedef struct {
    double *v;
    int64_t n, cap;
} ref_list;

static void ref_push(ref_list *l, const double want[4]) {
    l->v = ag_xgrow(l->v, &l->cap, l->n + 1, 4 * sizeof *l->v, "eval references");
    memcpy(l->v + 4 * l->n++, want, 4 * sizeof *want);
}

// The best constant answer's hit rate at IoU 0.5: every rank's references are gathered
// (collective), each is tried as the one answer to all of them, the best rate is returned.
// It is what a model that ignores the media can reach at most (with hindsight), so a score
// near it means the task was not learnt.
static double best_constant(int kind, const ref_list *mine, const tr_dist *d) {
    double *counts = ag_xcalloc((size_t)d->world, sizeof *counts, "eval");
    counts[d->rank] = (double)mine->n;
    tr_dist_sum_f64(d, counts, d->world);
    int64_t total = 0, offset = 0;
    for (int r = 0; r < d->world; r++) {
        if (r == d->rank) offset = total;
        total += (int64_t)counts[r];
    }
    free(counts);
    if (total == 0) return NAN;
    double *all = ag_xcalloc((size_t)(4 * total), sizeof *all, "eval references");
    if (mine->n) memcpy(all + 4 * offset, mine->v, (size_t)(4 * mine->n) * sizeof *all);
    tr_dist_sum_f64(d, all, (int)(4 * total));
    int64_t best = 0;
    for (int64_t c = 0; c < total; c++) {
        int64_t hits = 0;
        for (int64_t i = 0; i < total; i++) hits += ref_iou(kind, all + 4 * c, all + 4 * i) >= 0.5;
        if (hits > best) best = hits;
    }
    free(all);
    return (double)best / (double)total;
}

char *tr_eval_trim_answer(char *s) {
    char *m = strstr(s, DS_STOP_MARKER);
    if (m) *m = 0;
    while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = 0;
    return s;
}

static void json_check(bool ok) {
    if (!ok) ag_fail("eval: out of memory building the JSON report");
}

// Rank 0 gets every other rank's text, in rank order, through take (collective).
static void texts_to_rank0(const tr_dist *d, const char *mine,
                           void (*take)(const char *text, int rank, void *user), void *user) {
    double *len = ag_xcalloc((size_t)d->world, sizeof *len, "eval");
    len[d->rank] = (double)strlen(mine) + 1;
    tr_dist_sum_f64(d, len, d->world);
    for (int r = 1; r < d->world; r++) {
        int cap = (int)len[r];
        char *buf = ag_xmalloc((size_t)cap, "eval");
        if (d->rank == r) memcpy(buf, mine, (size_t)cap);
        tr_dist_broadcast_str(d, buf, cap, r);
        if (d->rank == 0) take(buf, r, user);
        free(buf);
    }
    free(len);
}

static void take_samples(const char *text, int rank, void *user) {
    cJSON *mine = user, *theirs = cJSON_Parse(text);
    if (!cJSON_IsArray(theirs)) ag_fail("eval: rank %d sent malformed sample records", rank);
    while (cJSON_GetArraySize(theirs) > 0)
        json_check(cJSON_AddItemToArray(mine, cJSON_DetachItemFromArray(theirs, 0)));
    cJSON_Delete(theirs);
}

// Rank 0 gets every rank's records appended to its array (ranks in order).
static void gather_samples(const tr_dist *d, cJSON *mine) {
    if (d->world == 1) return;
    char *text = cJSON_PrintUnformatted(mine);
    json_check(text != NULL);
    texts_to_rank0(d, text, take_samples, mine);
    free(text);
}

static void take_lines(const char *text, int rank, void *user) {
    (void)rank;
    if (user) fputs(text, (FILE *)user);
}

// Where a sample came from, for the per-sample lines and records: its sample_meta as pack
// stored it (id, file, index), its dataset (source) name, for an image the original size and
// for a video or audio its duration.
typedef struct {
    cJSON *meta; // the parsed sample_meta object
    char *source;
    int32_t width, height;   // 0 without an image
    double video_s, audio_s; // durations in seconds, 0 without the medium
    double start;            // sample_meta's "start": where the medium starts in its file
} sample_origin;

static void free_origins(sample_origin *o, int64_t n) {
    if (!o) return;
    for (int64_t i = 0; i < n; i++) {
        cJSON_Delete(o[i].meta);
        free(o[i].source);
    }
    free(o);
}

// The task of every sample of the dataset, in shard order (the loader's sample numbering), and,
// when origin is given, where each came from (*origin, allocated; free_origins).
// Read before the loader opens: no other HDF5 call may run beside one.
// Each sample's task and its length in tokens (uncut); its origin too when origin is given.
static uint8_t *read_tasks(const char *dir, const ds_manifest *man, int64_t **length,
                           sample_origin **origin) {
    uint8_t *task = ag_xmalloc((size_t)man->num_samples + 1, "eval sample tasks");
    int64_t *len = ag_xmalloc(((size_t)man->num_samples + 1) * sizeof *len, "eval lengths");
    sample_origin *org =
        origin ? ag_xcalloc((size_t)man->num_samples + 1, sizeof *org, "eval sample origins")
               : NULL;
    int64_t i = 0;
    for (int j = 0; j < man->num_shards; j++) {
        char *path = ag_xpath_join(dir, man->shards[j].file);
        ds_shard *sh = ds_shard_open(path);
        int64_t n = ds_shard_num_samples(sh);
        if (n != man->shards[j].num_samples)
            ag_fail("%s: holds %lld samples, the manifest says %lld", path, (long long)n,
                    (long long)man->shards[j].num_samples);
        for (int64_t k = 0; k < n; k++, i++) {
            ds_sample_ref ref = ds_shard_sample(sh, k);
            task[i] = ref.task;
            len[i] = ref.length;
            if (!org) continue;
            char *text = ds_shard_read_meta(sh, k);
            if (!ds_utf8_valid(text)) // (the report would not be JSON that readers can decode)
                ag_fail("%s: sample %lld: sample_meta is not UTF-8", path, (long long)k);
            org[i].meta = cJSON_Parse(text);
            free(text);
            if (!cJSON_IsObject(org[i].meta))
                ag_fail("%s: sample %lld: sample_meta is not a JSON object", path, (long long)k);
            org[i].source = ag_xstrdup(ds_shard_source_name(sh, ref.source));
            if (ref.image >= 0) {
                int32_t size[2];
                ds_shard_image_orig_size(sh, ref.image, size);
                org[i].width = size[0], org[i].height = size[1];
            }
            const cJSON *start = cJSON_GetObjectItemCaseSensitive(org[i].meta, "start");
            if (cJSON_IsNumber(start) && isfinite(start->valuedouble))
                org[i].start = start->valuedouble;
            if (ref.video >= 0) org[i].video_s = ds_shard_video_duration(sh, ref.video);
            if (ref.audio >= 0) org[i].audio_s = ds_shard_audio_duration(sh, ref.audio);
        }
        ds_shard_close(sh);
        free(path);
    }
    if (origin) *origin = org;
    *length = len;
    return task;
}

// "rec, tvg" for a mask of tasks (buf of at least 32 bytes).
static const char *task_list(unsigned mask, char *buf, size_t n) {
    size_t k = 0;
    buf[0] = 0;
    for (int t = 0; t < TR_EVAL_TASKS; t++)
        if (mask & (1u << t))
            k += (size_t)snprintf(buf + k, n - k, "%s%s", k ? ", " : "", tr_eval_task_name(t));
    return buf;
}

// The tokenizer, and the dataset's manifest in *man, after checking that they belong together.
static ds_tokenizer *open_inputs(const char *data_dir, const char *tokenizer_path,
                                 ds_manifest *man) {
    ds_tokenizer *tok = ds_tokenizer_load(tokenizer_path);
    ds_manifest_read(man, data_dir);
    char digest[65];
    ds_tokenizer_digest(tok, digest);
    if (strcmp(digest, man->tokenizer_digest))
        ag_fail("%s: packed with another tokenizer than %s (digest %.12s..., the dataset's "
                "%.12s...)",
                data_dir, tokenizer_path, digest, man->tokenizer_digest);
    return tok;
}

void tr_eval_check_inputs(const char *data_dir, const char *tokenizer_path) {
    ds_manifest man;
    ds_tokenizer_free(open_inputs(data_dir, tokenizer_path, &man));
    ds_manifest_free(&man);
}

// Fails, before anything is generated, when the data hold no samples of a task that o->need
// asks for.
static void check_tasks_present(const tr_eval_opts *o, const uint8_t *task, int64_t n_samples) {
    unsigned present = 0;
    for (int64_t i = 0; i < n_samples; i++)
        if (eval_kind(task[i]) >= 0) present |= 1u << eval_kind(task[i]);
    char list[64];
    if (o->need == TR_EVAL_NEED_EACH && (o->tasks & ~present))
        ag_fail("eval: no samples of task %s in %s",
                task_list(o->tasks & ~present, list, sizeof list), o->data_dir);
    if (o->need == TR_EVAL_NEED_ANY && !(o->tasks & present))
        ag_fail("eval: no samples of task %s in %s", task_list(o->tasks, list, sizeof list),
                o->data_dir);
}

// The dataset as one stream of single samples, split across d's ranks.
static ds_loader *open_loader(const tr_eval_opts *o, const gm_groundinggpt *m, const tr_dist *d) {
    ds_loader_dataset ds = {.dir = o->data_dir, .weight = 1};
    ds_loader_config lc = {.datasets = &ds,
                           .num_datasets = 1,
                           .seed = 0,
                           .micro = 1,
                           .accumulation = 1,
                           .rank = d->rank,
                           .world = d->world,
                           .max_len = m->cfg.llm.max_seq,
                           .pad_id = 0,
                           .prefetch = 4};
    return tr_batch_open_loader(&lc, &m->cfg); // shards of another geometry: refused at open
}

// The first o->limit samples of each chosen task in one pass of the stream (its first
// n_samples positions hold every sample once): the same ones on any number of ranks.
// Returns pick[position] (allocated); *end gets one past the last picked position, and
// r->considered the samples picked per task.
static bool *pick_samples(const tr_eval_opts *o, ds_loader *l, const uint8_t *task,
                          int64_t n_samples, tr_eval_result *r, int64_t *end) {
    bool *pick = ag_xmalloc((size_t)n_samples + 1, "eval picks");
    int64_t left = 0;
    *end = 0;
    for (int k = 0; k < TR_EVAL_TASKS; k++)
        if (o->tasks & (1u << k)) // a task takes at most every sample (no --limit: INT64_MAX)
            left += o->limit < n_samples ? o->limit : n_samples;
    for (int64_t p = 0; p < n_samples; p++) {
        pick[p] = false;
        if (!left) continue;
        int32_t dset;
        int64_t sample;
        ds_loader_locate(l, p, &dset, &sample);
        int kind = eval_kind(task[sample]);
        if (kind < 0 || !(o->tasks & (1u << kind)) || r->considered[kind] >= o->limit) continue;
        r->considered[kind]++;
        pick[p] = true;
        *end = p + 1;
        left--;
    }
    return pick;
}

// What the evaluation of one sample works with and adds to.
typedef struct {
    ag_ctx *ctx;
    gm_groundinggpt *m;
    gm_llama_kv *kv;
    ds_tokenizer *tok;
    tr_decode_opts dopt;
    tr_eval_result *r;
    ref_list refs[TR_EVAL_TASKS]; // graded grounding references (for best_constant)
    cJSON *recs;                  // per-sample records; NULL when not asked for
    FILE *log;                    // one line per sample; NULL when not verbose
    const sample_origin *origin;  // per sample of the dataset; NULL when neither of the above
    const int64_t *length;        // per sample of the dataset: tokens before the loader's cut
    const char *data_dir;         // the dataset, for messages
} evaluator;

// The sample's first answer: targets [*t0, *t1) of the batch's one sequence. False when it
// has no supervised target.
static bool first_answer(const ds_batch *b, int64_t *t0, int64_t *t1) {
    int64_t T = b->lengths[0];
    *t0 = 0;
    while (*t0 < T && b->targets[*t0] == DS_IGNORE_TARGET) (*t0)++;
    if (*t0 == T) return false;
    *t1 = *t0;
    while (*t1 < T && b->targets[*t1] != DS_IGNORE_TARGET) (*t1)++;
    return true;
}

// Scores an answer against its reference: ROUGE-L for a caption, else the IoU of the first
// box or span. Returns the score, negative for a grounding sample that cannot be graded (no
// box or span in the reference); a graded one is counted in e->r, and in rec when given.
static double score_answer(evaluator *e, int kind, const char *answer, const char *reference,
                           cJSON *rec) {
    tr_eval_result *r = e->r;
    if (kind == TR_EVAL_CAPTION) {
        tr_caption_add(&r->caption, answer, reference);
        r->n[kind]++;
        double score = tr_rouge_l(answer, reference);
        if (rec) json_check(cJSON_AddNumberToObject(rec, "rouge_l", score));
        return score;
    }
    bool parsed;
    double want[4];
    double score = answer_iou(kind, answer, reference, &parsed, want);
    if (score < 0) return score;
    ref_push(&e->refs[kind], want);
    r->n[kind]++;
    r->parsed[kind] += parsed;
    r->iou_sum[kind] += score;
    for (int k = 0; k < TR_EVAL_NTHR; k++) r->hits_at[kind][k] += score >= tr_eval_thresholds[k];
    if (rec) json_check(cJSON_AddNumberToObject(rec, "iou", score));
    return score;
}

// The box of text (first match, as scored) normalised to the padded square, and in pixels of
// the original w x h image; false when text has none.
static bool text_box(const char *text, int w, int h, double norm[4], double px[4]) {
    ds_box b;
    if (!ds_parse_box(text, &b)) return false;
    ds_box p = ds_box_from_square(b, w, h);
    memcpy(norm, (double[4]){b.x1, b.y1, b.x2, b.y2}, 4 * sizeof *norm);
    memcpy(px, (double[4]){p.x1, p.y1, p.x2, p.y2}, 4 * sizeof *px);
    return true;
}

// rec's "<key>_box" (normalised) and "<key>_box_px" (pixels of the original image), null
// when text has no box.
static void add_boxes(cJSON *rec, const char *key, const char *text, const sample_origin *so) {
    double norm[4], px[4];
    bool have = text_box(text, so->width, so->height, norm, px);
    char name[32];
    snprintf(name, sizeof name, "%s_box", key);
    json_check(cJSON_AddItemToObject(rec, name,
                                     have ? cJSON_CreateDoubleArray(norm, 4) : cJSON_CreateNull()));
    snprintf(name, sizeof name, "%s_box_px", key);
    json_check(cJSON_AddItemToObject(rec, name,
                                     have ? cJSON_CreateDoubleArray(px, 4) : cJSON_CreateNull()));
}

// The duration a tvg or sound sample's spans are normalised by (0: none).
static double span_duration(int kind, const sample_origin *so) {
    return kind == TR_EVAL_TVG ? so->video_s : kind == TR_EVAL_SOUND ? so->audio_s : 0.0;
}

// The span of text (first match, as scored) in seconds of the file, as the user gave them to
// pack (ds_timeline: the medium lasts d seconds from so->start); false when text has none.
static bool text_span_s(const char *text, const sample_origin *so, double d, double s[2]) {
    ds_span sp;
    if (!ds_parse_span(text, &sp)) return false;
    ds_span sec = ds_span_from_timeline(sp, (ds_timeline){.start = so->start, .duration = d});
    s[0] = sec.t1, s[1] = sec.t2;
    return true;
}

// tvg's and sound's "<key>_span_s": the span in seconds of the file; null when text has none.
static void add_span_s(cJSON *rec, const char *key, const char *text, const sample_origin *so,
                       double d) {
    double sec[2];
    bool have = text_span_s(text, so, d, sec);
    char name[32];
    snprintf(name, sizeof name, "%s_span_s", key);
    json_check(cJSON_AddItemToObject(rec, name,
                                     have ? cJSON_CreateDoubleArray(sec, 2) : cJSON_CreateNull()));
}

// The record's origin fields: id (null when the input line had none), file, index, source;
// image_size for an image sample, and rec's boxes normalised and in pixels; for tvg and sound
// the duration, the start offset when there is one, and the spans in seconds of the file.
// rec's id, file and index: the input line the sample was packed from (null where pack had
// none).
static void add_input_line(cJSON *rec, const sample_origin *so) {
    static const char *const keys[] = {"id", "file", "index"};
    for (int k = 0; k < 3; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(so->meta, keys[k]);
        json_check(
            cJSON_AddItemToObject(rec, keys[k], v ? cJSON_Duplicate(v, true) : cJSON_CreateNull()));
    }
}

static void add_origin(cJSON *rec, int kind, const sample_origin *so, const char *answer,
                       const char *reference) {
    add_input_line(rec, so);
    json_check(cJSON_AddStringToObject(rec, "source", so->source) != NULL);
    const double d = span_duration(kind, so);
    if (d > 0) {
        json_check(cJSON_AddNumberToObject(rec, "duration", d));
        if (so->start != 0.0) json_check(cJSON_AddNumberToObject(rec, "start", so->start));
        add_span_s(rec, "answer", answer, so, d);
        add_span_s(rec, "reference", reference, so, d);
    }
    if (so->width <= 0) return;
    json_check(cJSON_AddItemToObject(rec, "image_size",
                                     cJSON_CreateIntArray((int[2]){so->width, so->height}, 2)));
    if (kind != TR_EVAL_REC) return;
    add_boxes(rec, "answer", answer, so);
    add_boxes(rec, "reference", reference, so);
}

// The verbose line's origin: "raw/eval.json index 3, id \"img_3\", source eval" and, for rec,
// the boxes in pixels of the original image.
static void log_origin(FILE *log, int kind, const sample_origin *so, const char *answer,
                       const char *reference) {
    const cJSON *file = cJSON_GetObjectItemCaseSensitive(so->meta, "file");
    const cJSON *index = cJSON_GetObjectItemCaseSensitive(so->meta, "index");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(so->meta, "id");
    char *id_text = id ? cJSON_PrintUnformatted(id) : NULL;
    if (id && !id_text) ag_fail("eval: out of memory printing a sample id");
    fprintf(log, " | %s index %lld, id %s, source %s",
            cJSON_IsString(file) ? file->valuestring : "?",
            cJSON_IsNumber(index) ? (long long)index->valuedouble : -1LL,
            id_text ? id_text : "none", so->source);
    free(id_text);
    const double d = span_duration(kind, so);
    if (d > 0) {
        const char *texts[2] = {answer, reference}, *names[2] = {"answer", "reference"};
        for (int k = 0; k < 2; k++) {
            double sec[2];
            if (text_span_s(texts[k], so, d, sec))
                fprintf(log, " | %s span {%.2f, %.2f} s", names[k], sec[0], sec[1]);
            else
                fprintf(log, " | %s span none", names[k]);
        }
        fprintf(log, " of %.2f s", d);
    }
    if (kind != TR_EVAL_REC || so->width <= 0) return;
    double norm[4], px[4];
    const char *texts[2] = {answer, reference}, *names[2] = {"answer", "reference"};
    for (int k = 0; k < 2; k++) {
        if (text_box(texts[k], so->width, so->height, norm, px))
            fprintf(log, " | %s box [%.1f, %.1f, %.1f, %.1f] px", names[k], px[0], px[1], px[2],
                    px[3]);
        else
            fprintf(log, " | %s box none", names[k]);
    }
    fprintf(log, " of %dx%d", so->width, so->height);
}

// A sample longer than the model's context through its first answer: counted in e->r, named
// in the verbose line and the per-sample records.
static void note_too_long(evaluator *e, int kind, int64_t sample, int64_t length) {
    e->r->too_long[kind]++;
    if (e->recs) { // (with records, every sample's origin is read)
        cJSON *rec = cJSON_CreateObject();
        json_check(rec && cJSON_AddNumberToObject(rec, "sample", (double)sample) &&
                   cJSON_AddStringToObject(rec, "task", tr_eval_task_name(kind)) &&
                   cJSON_AddTrueToObject(rec, "too_long") &&
                   cJSON_AddNumberToObject(rec, "tokens", (double)length));
        add_input_line(rec, &e->origin[sample]);
        json_check(cJSON_AddItemToArray(e->recs, rec));
    }
    if (e->log)
        fprintf(e->log,
                "eval sample %lld (%s): not graded: %lld tokens, its first answer does not end "
                "within the model's max_seq %lld\n",
                (long long)sample, tr_eval_task_name(kind), (long long)length,
                (long long)e->m->cfg.llm.max_seq);
}

// Generates the answer to the batch's one sample from its prompt (the tokens up to its first
// answer) and scores it against that answer.
static void eval_sample(evaluator *e, const ds_batch *b) {
    int kind = eval_kind(b->task[0]);
    if (kind < 0) return; // (picked by its task: cannot happen)
    int64_t t0, t1;
    bool answered = first_answer(b, &t0, &t1);
    // Cut by the loader at max_seq before its first answer ends (the last position has no
    // target, so an answer reaching it may be cut): not graded, but counted and reported.
    const int64_t len = b->lengths[0], full = e->length[b->sample[0]];
    if (full > len && (!answered || t1 >= len - 1)) {
        note_too_long(e, kind, b->sample[0], full);
        return;
    }
    if (!answered) return;
    // a reference with an added (media) token has no text: the sample's loss_mask covers its
    // prompt, a damaged shard (the tokenizer's own message would not name the sample)
    const int32_t n_text = ds_tokenizer_vocab_size(e->tok);
    for (int64_t t = t0; t < t1; t++)
        if (b->targets[t] < 0 || b->targets[t] >= n_text)
            ag_fail("%s: sample %lld: its answer (the tokens its loss_mask marks) holds token id "
                    "%d at position %lld, which has no text (the tokenizer's ids are 0..%d): a "
                    "loss_mask over a media placeholder?",
                    e->data_dir, (long long)b->sample[0], (int)b->targets[t], (long long)(t + 1),
                    n_text - 1);
    char *ref_text = ds_tokenizer_decode(e->tok, b->targets + t0, t1 - t0, NULL);
    gm_groundinggpt_batch gb;
    tr_batch_to_model(e->ctx, b, &gb);
    gb.T = t0 + 1;
    gb.targets = NULL;
    tr_decode_result dr;
    tr_decode(e->ctx, e->m, e->kv, &gb, e->tok, &e->dopt, &dr);
    e->r->new_tokens += dr.n;
    e->r->prefill_s += dr.prefill_s;
    e->r->decode_s += dr.decode_s;
    char *ans_text = ds_tokenizer_decode(e->tok, dr.ids, dr.n, NULL);
    char *answer = tr_eval_trim_answer(ans_text), *reference = tr_eval_trim_answer(ref_text);
    const sample_origin *so = e->origin ? &e->origin[b->sample[0]] : NULL;
    cJSON *rec = NULL;
    if (e->recs) {
        json_check((rec = cJSON_CreateObject()) != NULL);
        json_check(cJSON_AddNumberToObject(rec, "sample", (double)b->sample[0]) &&
                   cJSON_AddStringToObject(rec, "task", tr_eval_task_name(kind)) &&
                   cJSON_AddStringToObject(rec, "answer", answer) &&
                   cJSON_AddStringToObject(rec, "reference", reference));
        add_origin(rec, kind, so, answer, reference);
    }
    double score = score_answer(e, kind, answer, reference, rec);
    if (rec) {
        if (kind == TR_EVAL_CAPTION || score >= 0)
            json_check(cJSON_AddItemToArray(e->recs, rec));
        else
            cJSON_Delete(rec);
    }
    if (e->log) {
        fprintf(e->log, "eval sample %lld (%s): %s %.3f | answer \"%s\" | reference \"%s\"",
                (long long)b->sample[0], ds_task_name(b->task[0]),
                kind == TR_EVAL_CAPTION ? "rouge-l" : "iou", score, answer, reference);
        log_origin(e->log, kind, so, answer, reference);
        fputc('\n', e->log);
    }
    free(ans_text);
    free(ref_text);
    free(dr.ids);
    ag_step_reset(e->ctx);
}

// The counts summed over ranks travel in one f64 array of N_SLOTS: TASK_SLOTS per task, then
// the caption sums (tr_caption_stats as it lies in memory: doubles that add up, nothing else)
// and the generation totals.
enum {
    SLOT_N, // samples graded
    SLOT_PARSED,
    SLOT_IOU_SUM,
    SLOT_TOO_LONG,
    SLOT_HITS_AT, // TR_EVAL_NTHR slots, one per IoU threshold
    TASK_SLOTS = SLOT_HITS_AT + TR_EVAL_NTHR
};
enum { CAPTION_SLOTS = sizeof(tr_caption_stats) / sizeof(double) };
_Static_assert(sizeof(tr_caption_stats) == CAPTION_SLOTS * sizeof(double),
               "tr_caption_stats travels as doubles");
enum {
    SLOT_CAPTION = TR_EVAL_TASKS * TASK_SLOTS, // CAPTION_SLOTS slots
    SLOT_NEW_TOKENS = SLOT_CAPTION + CAPTION_SLOTS,
    SLOT_PREFILL_S,
    SLOT_DECODE_S,
    N_SLOTS
};

// Every count of r becomes its sum over d's ranks (collective); hits is hits_at IoU 0.5.
static void sum_over_ranks(tr_eval_result *r, const tr_dist *d) {
    double v[N_SLOTS];
    for (int k = 0; k < TR_EVAL_TASKS; k++) {
        double *s = v + k * TASK_SLOTS;
        s[SLOT_N] = (double)r->n[k];
        s[SLOT_PARSED] = (double)r->parsed[k];
        s[SLOT_IOU_SUM] = r->iou_sum[k];
        s[SLOT_TOO_LONG] = (double)r->too_long[k];
        for (int t = 0; t < TR_EVAL_NTHR; t++) s[SLOT_HITS_AT + t] = (double)r->hits_at[k][t];
    }
    memcpy(v + SLOT_CAPTION, &r->caption, sizeof r->caption);
    v[SLOT_NEW_TOKENS] = (double)r->new_tokens;
    v[SLOT_PREFILL_S] = r->prefill_s;
    v[SLOT_DECODE_S] = r->decode_s;
    tr_dist_sum_f64(d, v, N_SLOTS);
    for (int k = 0; k < TR_EVAL_TASKS; k++) {
        const double *s = v + k * TASK_SLOTS;
        r->n[k] = (int64_t)s[SLOT_N];
        r->parsed[k] = (int64_t)s[SLOT_PARSED];
        r->iou_sum[k] = s[SLOT_IOU_SUM];
        r->too_long[k] = (int64_t)s[SLOT_TOO_LONG];
        for (int t = 0; t < TR_EVAL_NTHR; t++) r->hits_at[k][t] = (int64_t)s[SLOT_HITS_AT + t];
        r->hits[k] = r->hits_at[k][1];
    }
    memcpy(&r->caption, v + SLOT_CAPTION, sizeof r->caption);
    r->new_tokens = (int64_t)v[SLOT_NEW_TOKENS];
    r->prefill_s = v[SLOT_PREFILL_S];
    r->decode_s = v[SLOT_DECODE_S];
}

void tr_eval_run(ag_ctx *ctx, gm_groundinggpt *m, const tr_eval_opts *o, const tr_dist *d,
                 tr_eval_result *r, FILE *log, bool verbose, cJSON **samples) {
    memset(r, 0, sizeof *r);
    ds_manifest man;
    ds_tokenizer *tok = open_inputs(o->data_dir, o->tokenizer_path, &man);
    const int64_t n_samples = man.num_samples;
    // where each sample came from, for the per-sample lines and records only
    sample_origin *origin = NULL;
    int64_t *length;
    uint8_t *task = read_tasks(o->data_dir, &man, &length, verbose || samples ? &origin : NULL);
    ds_manifest_free(&man);
    check_tasks_present(o, task, n_samples);
    ds_loader *l = open_loader(o, m, d);
    int64_t end;
    bool *pick = pick_samples(o, l, task, n_samples, r, &end);
    free(task);

    evaluator e = {.ctx = ctx,
                   .m = m,
                   .kv = gm_llama_kv_new(m->llm, 1, m->cfg.llm.max_seq),
                   .tok = tok,
                   .dopt = {.max_new = o->max_new, .top_p = 1},
                   .r = r,
                   .log = verbose ? log : NULL,
                   .origin = origin,
                   .length = length,
                   .data_dir = o->data_dir};
    if (samples) json_check((e.recs = cJSON_CreateArray()) != NULL);
    // Under MPI each rank's per-sample lines wait in memory; rank 0 prints them all, in rank order.
    char *lines = NULL;
    size_t lines_len = 0;
    FILE *mem = NULL;
    if (verbose && d->world > 1) {
        mem = open_memstream(&lines, &lines_len);
        if (!mem) ag_fail("eval: open_memstream: %s", strerror(errno));
        e.log = mem;
    }
    // Step s gives rank r stream position s * world + r: these steps cover positions [0, end).
    int64_t steps = (end + d->world - 1) / d->world;
    for (int64_t s = 0; s < steps; s++) {
        const ds_batch *b = ds_loader_next(l);
        if (b->positions[0] < end && pick[b->positions[0]]) eval_sample(&e, b);
    }
    gm_llama_kv_free(e.kv);
    ds_loader_close(l);
    if (mem) {
        if (fclose(mem)) ag_fail("eval: the per-sample lines: %s", strerror(errno));
        if (d->rank == 0 && log) fputs(lines, log);
        texts_to_rank0(d, lines, take_lines, log);
        free(lines);
    }
    free(pick);
    free_origins(origin, n_samples);
    free(length);
    ds_tokenizer_free(tok);

    sum_over_ranks(r, d);
    for (int k = 0; k < TR_EVAL_TASKS && d->rank == 0; k++)
        if (r->too_long[k])
            fprintf(stderr,
                    "eval: warning: %lld of the %lld %s samples taken from %s are longer than the "
                    "model's max_seq (%lld tokens) through their first answer: not graded "
                    "(--verbose names them)\n",
                    (long long)r->too_long[k], (long long)r->considered[k], tr_eval_task_name(k),
                    o->data_dir, (long long)m->cfg.llm.max_seq);
    for (int k = 0; k < TR_EVAL_TASKS; k++) {
        r->constant[k] = k == TR_EVAL_CAPTION ? NAN : best_constant(k, &e.refs[k], d);
        free(e.refs[k].v);
    }
    if (samples) {
        gather_samples(d, e.recs);
        if (d->rank == 0) {
            *samples = e.recs;
        } else {
            cJSON_Delete(e.recs);
            *samples = NULL;
        }
    }
}

void tr_eval_grounding(ag_ctx *ctx, gm_groundinggpt *m, const char *data_dir,
                       const char *tokenizer_path, int64_t limit, int64_t max_new, const tr_dist *d,
                       tr_eval_result *r, FILE *log, bool verbose) {
    tr_eval_opts o = {.data_dir = data_dir,
                      .tokenizer_path = tokenizer_path,
                      .limit = limit,
                      .max_new = max_new,
                      .tasks = TR_EVAL_GROUNDING};
    tr_eval_run(ctx, m, &o, d, r, log, verbose, NULL);
}

static double ratio(int64_t a, int64_t n) {
    return n ? (double)a / (double)n : NAN;
}

// The report: per task counts and metrics (null where undefined), the samples when given.
static char *report_json(const char *ckpt, const tr_eval_opts *o, const tr_eval_result *r,
                         cJSON *samples) {
    cJSON *root = cJSON_CreateObject(), *tasks = cJSON_CreateObject();
    json_check(root && tasks && cJSON_AddStringToObject(root, "checkpoint", ckpt) &&
               cJSON_AddStringToObject(root, "data", o->data_dir) &&
               (o->limit == INT64_MAX
                    ? cJSON_AddNullToObject(root, "limit") != NULL
                    : cJSON_AddNumberToObject(root, "limit", (double)o->limit) != NULL) &&
               cJSON_AddNumberToObject(root, "max_new_tokens", (double)o->max_new) &&
               cJSON_AddNumberToObject(root, "new_tokens", (double)r->new_tokens) &&
               cJSON_AddNumberToObject(root, "prefill_seconds", r->prefill_s) &&
               cJSON_AddNumberToObject(root, "decode_seconds", r->decode_s) &&
               cJSON_AddItemToObject(root, "tasks", tasks));
    for (int k = 0; k < TR_EVAL_TASKS; k++) {
        if (!(o->tasks & (1u << k))) continue;
        cJSON *t = cJSON_AddObjectToObject(tasks, tr_eval_task_name(k));
        json_check(t && cJSON_AddNumberToObject(t, "samples", (double)r->n[k]) &&
                   cJSON_AddNumberToObject(t, "taken", (double)r->considered[k]) &&
                   cJSON_AddNumberToObject(t, "too_long", (double)r->too_long[k]));
        if (k == TR_EVAL_CAPTION) {
            const tr_caption_stats *c = &r->caption;
            double bp, p[4];
            double bleu = tr_caption_bleu4(c, &bp);
            for (int n = 0; n < 4; n++) p[n] = c->total[n] > 0 ? c->match[n] / c->total[n] : NAN;
            json_check(cJSON_AddNumberToObject(t, "bleu4", r->n[k] ? bleu : NAN) &&
                       cJSON_AddNumberToObject(t, "rouge_l", tr_caption_rouge_l(c)) &&
                       cJSON_AddItemToObject(t, "bleu_precisions", cJSON_CreateDoubleArray(p, 4)) &&
                       cJSON_AddNumberToObject(t, "brevity_penalty", r->n[k] ? bp : NAN) &&
                       cJSON_AddNumberToObject(t, "candidate_words", c->cand_len) &&
                       cJSON_AddNumberToObject(t, "reference_words", c->ref_len));
            continue;
        }
        json_check(cJSON_AddNumberToObject(t, "parsed", (double)r->parsed[k]) &&
                   cJSON_AddNumberToObject(t, "best_constant@0.5", r->constant[k]) &&
                   cJSON_AddNumberToObject(t, "mean_iou",
                                           r->n[k] ? r->iou_sum[k] / (double)r->n[k] : NAN));
        for (int h = 0; h < TR_EVAL_NTHR; h++) {
            char name[32];
            snprintf(name, sizeof name, "hits@%.1f", tr_eval_thresholds[h]);
            json_check(cJSON_AddNumberToObject(t, name, (double)r->hits_at[k][h]));
            snprintf(name, sizeof name, "%s@%.1f", k == TR_EVAL_REC ? "acc" : "r1",
                     tr_eval_thresholds[h]);
            json_check(cJSON_AddNumberToObject(t, name, ratio(r->hits_at[k][h], r->n[k])));
        }
    }
    if (samples) json_check(cJSON_AddItemReferenceToObject(root, "samples", samples));
    char *s = cJSON_Print(root);
    json_check(s != NULL);
    cJSON_Delete(root);
    return s;
}

static void print_table(const tr_eval_opts *o, const tr_eval_result *r) {
    printf("\n| task | samples | metric | score | mean IoU | best constant @0.5 |\n"
           "| --- | --- | --- | --- | --- | --- |\n");
    for (int k = 0; k < TR_EVAL_TASKS; k++) {
        if (!(o->tasks & (1u << k))) continue;
        double miou = r->n[k] ? r->iou_sum[k] / (double)r->n[k] : NAN;
        if (!r->n[k]) // a task the data do not hold (all tasks asked for): no score, not NaN
            printf("| %s | 0 | - | - | - | - |\n", tr_eval_task_name(k));
        else if (k == TR_EVAL_REC)
            printf("| rec | %lld | Acc@0.5 | %.3f | %.3f | %.3f |\n", (long long)r->n[k],
                   ratio(r->hits_at[k][1], r->n[k]), miou, r->constant[k]);
        else if (k == TR_EVAL_CAPTION)
            printf("| caption | %lld | BLEU-4 / ROUGE-L | %.3f / %.3f | - | - |\n",
                   (long long)r->n[k], r->n[k] ? tr_caption_bleu4(&r->caption, NULL) : NAN,
                   tr_caption_rouge_l(&r->caption));
        else
            printf("| %s | %lld | R@1 IoU 0.3 / 0.5 / 0.7 | %.3f / %.3f / %.3f | %.3f | %.3f |\n",
                   tr_eval_task_name(k), (long long)r->n[k], ratio(r->hits_at[k][0], r->n[k]),
                   ratio(r->hits_at[k][1], r->n[k]), ratio(r->hits_at[k][2], r->n[k]), miou,
                   r->constant[k]);
    }
}

static unsigned parse_tasks(const char *v) {
    unsigned mask = 0;
    for (const char *s = v; *s;) {
        size_t n = strcspn(s, ",");
        int k = 0;
        while (k < TR_EVAL_TASKS &&
               !(strlen(tr_eval_task_name(k)) == n && !strncmp(s, tr_eval_task_name(k), n)))
            k++;
        if (k == TR_EVAL_TASKS)
            ag_fail("eval: --task: unknown task '%.*s' (rec, tvg, sound or caption)", (int)n, s);
        mask |= 1u << k;
        s += n + (s[n] == ',');
    }
    if (!mask) ag_fail("eval: --task: no task given (rec, tvg, sound or caption)");
    return mask;
}

static const char *const usage_line =
    "eval: usage: groundc eval CKPT_DIR --data DIR [--task rec|tvg|sound|caption] "
    "[--report F.json] [--tokenizer FILE] [--limit N] [--max-new-tokens N] [--verbose]";

static void print_help(void) {
    printf("%s\n\n"
           "  CKPT_DIR              checkpoint folder (OUT/step_N, OUT/latest), or a run folder\n"
           "                        OUT: its latest checkpoint\n"
           "  --data DIR            packed dataset (groundc pack) to evaluate on\n"
           "  --task T[,T]          tasks to evaluate (default: all four); each must have samples\n"
           "                        in DIR\n"
           "  --limit N             the first N samples of each evaluated task in the stream\n"
           "                        (default: all)\n"
           "  --max-new-tokens N    tokens generated per answer (default 48)\n"
           "  --tokenizer FILE      default: the checkpoint config's eval.tokenizer\n"
           "  --report F.json       counts and metrics as JSON (per-sample answers with\n"
           "                        --verbose)\n"
           "  --verbose             one line per sample, naming its id, input file and index\n"
           "                        (and REC boxes in pixels of the original image)\n",
           usage_line + strlen("eval: "));
}

int tr_eval_main(int argc, char **argv, const tr_dist *d) {
    const char *ckpt = NULL, *tokenizer = NULL, *report = NULL;
    // no --limit: INT64_MAX, every sample (the report says null)
    tr_eval_opts o = {
        .limit = INT64_MAX, .max_new = 48, .tasks = TR_EVAL_ALL, .need = TR_EVAL_NEED_ANY};
    bool verbose = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            if (d->rank == 0) print_help();
            return 0;
        }
        if (!strcmp(a, "--verbose")) {
            verbose = true;
        } else if (!strncmp(a, "--", 2)) {
            if (strcmp(a, "--data") && strcmp(a, "--tokenizer") && strcmp(a, "--report") &&
                strcmp(a, "--task") && strcmp(a, "--limit") && strcmp(a, "--max-new-tokens"))
                ag_fail("eval: unknown option '%s'", a);
            if (i + 1 >= argc) ag_fail("eval: option %s needs a value", a);
            const char *v = argv[++i];
            if (!strcmp(a, "--data")) {
                o.data_dir = v;
            } else if (!strcmp(a, "--tokenizer")) {
                tokenizer = v;
            } else if (!strcmp(a, "--report")) {
                report = v;
            } else if (!strcmp(a, "--task")) {
                o.tasks = parse_tasks(v);
                o.need = TR_EVAL_NEED_EACH;
            } else {
                char what[64];
                snprintf(what, sizeof what, "eval: %s", a);
                *(a[2] == 'l' ? &o.limit : &o.max_new) = ag_parse_int(what, v, 1, INT64_MAX);
            }
        } else if (!ckpt) {
            ckpt = a;
        } else {
            ag_fail("eval: more than one checkpoint given ('%s' and '%s')", ckpt, a);
        }
    }
    if (!ckpt || !o.data_dir) ag_fail("%s", usage_line);
    // The report is written after the whole evaluation: a path that cannot take it fails now.
    if (report) tr_check_output_file("eval", "--report", report);
    char *ckpt_dir = tr_ckpt_resolve(ckpt, "eval", d->rank ? NULL : stderr);
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    tr_yaml *root;
    gm_groundinggpt *m = tr_ckpt_open_model(ctx, ckpt_dir, &root);
    char *tok = tr_ckpt_tokenizer_path(root, tokenizer, "eval");
    o.tokenizer_path = tok;
    tr_eval_result r;
    cJSON *samples = NULL;
    tr_eval_run(ctx, m, &o, d, &r, d->rank ? NULL : stdout, verbose,
                report && verbose ? &samples : NULL);
    // Samples whose reference holds no box or span are not graded: a task left with none
    // would only report NaN.
    int64_t graded = 0;
    for (int k = 0; k < TR_EVAL_TASKS; k++) {
        if (!(o.tasks & (1u << k))) continue;
        graded += r.n[k];
        if (o.need == TR_EVAL_NEED_EACH && r.considered[k] && !r.n[k])
            ag_fail("eval: none of the %lld %s samples taken from %s could be graded (no "
                    "supervised answer, or none with a box or span)",
                    (long long)r.considered[k], tr_eval_task_name(k), o.data_dir);
    }
    if (!graded)
        ag_fail("eval: none of the samples taken from %s could be graded (no supervised answer, "
                "none with a box or span, or too long)",
                o.data_dir);
    if (d->rank == 0) {
        print_table(&o, &r);
        if (report) {
            char *json = report_json(ckpt_dir, &o, &r, samples);
            ds_write_file_atomic(report, &(ds_file_part){json, strlen(json)}, 1);
            free(json);
        }
    }
    cJSON_Delete(samples);
    free(tok);
    free(ckpt_dir);
    gm_groundinggpt_free(m);
    ag_ctx_free(ctx);
    tr_yaml_free(root);
    return 0;
}
