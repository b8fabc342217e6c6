// jsonl.c: see jsonl.h.
#include "jsonl.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/error.h"
#include "data/files.h"
#include "data/grounding.h"
#include "data/shard.h"

// A NUL character inside a JSON string, escaped (\u0000) or as a raw byte, silently ends the
// text there (cJSON's strings are NUL-terminated and keep no length), so such samples are
// refused. Scans text, valid JSON already parsed: returns whether some string holds one and,
// when bad is given, marks the elements of the top-level list (n of them) that do.
static bool find_nul(const char *text, size_t len, bool *bad, int64_t n) {
    bool any = false, in_string = false;
    int64_t depth = 0, element = 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        bool nul = false;
        if (in_string) {
            if (c == '\\') {
                nul = i + 5 < len && !memcmp(text + i + 1, "u0000", 5);
                i++; // the escaped character cannot end the string
            } else if (c == '"') {
                in_string = false;
            } else {
                nul = c == 0;
            }
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            depth++;
        } else if (c == ']' || c == '}') {
            depth--;
        } else if (c == ',' && depth == 1) {
            element++;
        }
        if (!nul) continue;
        any = true;
        if (bad && depth >= 1 && element < n) bad[element] = true;
    }
    return any;
}

#define NUL_REASON "text contains a NUL character"

// JSON files are UTF-8; one saved as UTF-16 or UTF-32 (a byte order mark, or NUL bytes between
// ASCII characters) would fail on every line as "invalid JSON": say what it is instead.
static void check_utf8(const char *path, char *text, size_t n) {
    const unsigned char *u = (const unsigned char *)text;
    const char *enc = NULL;
    if (n >= 4 && ((u[0] == 0xFF && u[1] == 0xFE && !u[2] && !u[3]) ||
                   (!u[0] && !u[1] && u[2] == 0xFE && u[3] == 0xFF)))
        enc = "UTF-32";
    else if (n >= 2 && ((u[0] == 0xFF && u[1] == 0xFE) || (u[0] == 0xFE && u[1] == 0xFF)))
        enc = "UTF-16";
    else if (n >= 4 && ((u[0] && !u[1] && u[2] && !u[3]) || (!u[0] && u[1] && !u[2] && u[3])))
        enc = "UTF-16 (no byte order mark)";
    if (!enc) return;
    free(text);
    ag_fail("%s: is %s, not UTF-8: save it as UTF-8", path, enc);
}

void ds_records_read_json(const char *path, ds_record_file *out) {
    memset(out, 0, sizeof *out);
    size_t n;
    char *text = ds_read_file(path, &n);
    check_utf8(path, text, n);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, n, &end, false);
    if (!root) {
        int64_t line, col;
        ds_line_col(text, end && end >= text ? (size_t)(end - text) : 0, &line, &col);
        free(text);
        ag_fail("%s:%lld:%lld: invalid JSON", path, (long long)line, (long long)col);
    }
    // The type first: a JSONL file given as --json parses as its first object, and "text
    // after the list" would then name a list that is not there.
    if (!cJSON_IsArray(root)) {
        int64_t line, col;
        const char *at = text;
        while (at < text + n && (*at == ' ' || *at == '\n' || *at == '\r' || *at == '\t')) at++;
        ds_line_col(text, (size_t)(at - text), &line, &col);
        bool object = cJSON_IsObject(root);
        free(text);
        cJSON_Delete(root);
        ag_fail("%s:%lld:%lld: expected a JSON list of samples%s", path, (long long)line,
                (long long)col,
                object ? " (a JSONL file of grounding records? use --grounding-jsonl)" : "");
    }
    // only white space may follow the value
    const char *p = end;
    while (p && p < text + n && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
    if (p && p < text + n) {
        int64_t line, col;
        ds_line_col(text, (size_t)(p - text), &line, &col);
        free(text);
        cJSON_Delete(root);
        ag_fail("%s:%lld:%lld: unexpected text after the JSON list", path, (long long)line,
                (long long)col);
    }
    out->path = ag_xstrdup(path);
    out->root = root;
    out->n = cJSON_GetArraySize(root);
    out->records = ag_xcalloc((size_t)out->n + 1, sizeof *out->records, "JSON records");
    int64_t i = 0;
    for (cJSON *it = root->child; it; it = it->next, i++)
        out->records[i] = (ds_record){.item = it, .index = i};
    if (find_nul(text, n, NULL, 0)) {
        bool *bad = ag_xcalloc((size_t)out->n + 1, sizeof *bad, "JSON records");
        find_nul(text, n, bad, out->n);
        for (i = 0; i < out->n; i++)
            if (bad[i]) out->records[i].error = ag_xstrdup(NUL_REASON);
        free(bad);
    }
    free(text);
}

void ds_records_read_jsonl(const char *path, ds_record_file *out) {
    memset(out, 0, sizeof *out);
    size_t n;
    char *text = ds_read_file(path, &n);
    check_utf8(path, text, n);
    out->path = ag_xstrdup(path);
    out->jsonl = true;
    int64_t cap = 0, line = 0;
    for (size_t at = 0; at < n;) {
        size_t stop = at;
        while (stop < n && text[stop] != '\n') stop++;
        line++;
        const char *s = text + at;
        size_t len = stop - at;
        at = stop + 1;
        bool blank = true;
        for (size_t k = 0; k < len && blank; k++)
            blank = s[k] == ' ' || s[k] == '\t' || s[k] == '\r';
        if (blank) continue;
        out->records =
            ag_xgrow(out->records, &cap, out->n + 1, sizeof *out->records, "JSONL records");
        ds_record *r = &out->records[out->n++];
        *r = (ds_record){.index = line};
        const char *end = NULL;
        r->item = cJSON_ParseWithLengthOpts(s, len, &end, false);
        char why[128] = "";
        if (!r->item) {
            snprintf(why, sizeof why, "invalid JSON at column %lld",
                     (long long)(end && end >= s ? end - s + 1 : 1));
        } else {
            const char *p = end;
            while (p < s + len && (*p == ' ' || *p == '\t' || *p == '\r')) p++;
            if (p < s + len)
                snprintf(why, sizeof why, "unexpected text at column %lld", (long long)(p - s + 1));
            else if (find_nul(s, len, NULL, 0))
                snprintf(why, sizeof why, NUL_REASON);
        }
        if (why[0]) {
            cJSON_Delete(r->item);
            r->item = NULL;
            r->error = ag_xstrdup(why);
        }
    }
    free(text);
}

void ds_record_file_free(ds_record_file *f) {
    if (f->jsonl)
        for (int64_t i = 0; i < f->n; i++) cJSON_Delete(f->records[i].item);
    for (int64_t i = 0; i < f->n; i++) free(f->records[i].error);
    cJSON_Delete(f->root);
    free(f->records);
    free(f->path);
    memset(f, 0, sizeof *f);
}

static bool fail(char *err, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, size, fmt, ap);
    va_end(ap);
    return false;
}

// Fails when a key appears twice in obj: cJSON keeps both and finds the first, so the second
// would be ignored without a word.
static bool no_duplicate_key(const cJSON *obj, char *err, size_t n) {
    for (const cJSON *a = obj->child; a; a = a->next)
        for (const cJSON *b = a->next; b; b = b->next)
            if (a->string && b->string && !strcmp(a->string, b->string)) {
                char name[80];
                return fail(err, n, "key \"%s\" appears twice",
                            ds_quote(a->string, name, sizeof name));
            }
    return true;
}

// k finite numbers from a JSON array named key.
static bool numbers(const cJSON *obj, const char *key, int k, double *v, char *err, size_t n) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!a) return fail(err, n, "no \"%s\"", key);
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != k)
        return fail(err, n, "\"%s\" is not a list of %d numbers", key, k);
    int i = 0;
    for (const cJSON *e = a->child; e; e = e->next, i++) {
        if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble))
            return fail(err, n, "\"%s\" is not a list of %d numbers", key, k);
        v[i] = e->valuedouble;
    }
    return true;
}

static bool string_field(const cJSON *obj, const char *key, const char **out, char *err, size_t n) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!s) return fail(err, n, "no \"%s\"", key);
    if (!cJSON_IsString(s) || !s->valuestring[0])
        return fail(err, n, "\"%s\" is not a non-empty string", key);
    *out = s->valuestring;
    return true;
}

bool ds_grounding_record_parse(const cJSON *obj, ds_grounding_record *out, char *err,
                               size_t err_size) {
    memset(out, 0, sizeof *out);
    if (!cJSON_IsObject(obj)) return fail(err, err_size, "not a JSON object");
    if (!no_duplicate_key(obj, err, err_size)) return false;
    static const struct {
        const char *key;
        ds_media_kind kind;
    } keys[] = {{"image", DS_MEDIA_IMAGE},
                {"video", DS_MEDIA_VIDEO},
                {"sound", DS_MEDIA_AUDIO},
                {"audio", DS_MEDIA_AUDIO}};
    int found = -1;
    for (int k = 0; k < 4; k++) {
        if (!cJSON_GetObjectItemCaseSensitive(obj, keys[k].key)) continue;
        if (found >= 0)
            return fail(err, err_size, "both \"%s\" and \"%s\" given (one media file per line)",
                        keys[found].key, keys[k].key);
        found = k;
    }
    if (found < 0) return fail(err, err_size, "no \"image\", \"video\" or \"sound\" file");
    out->kind = keys[found].kind;
    if (!string_field(obj, keys[found].key, &out->media, err, err_size)) return false;
    if (out->kind == DS_MEDIA_IMAGE)
        return string_field(obj, "expression", &out->text, err, err_size) &&
               numbers(obj, "bbox", 4, out->v, err, err_size);
    return string_field(obj, "query", &out->text, err, err_size) &&
           numbers(obj, "span", 2, out->v, err, err_size);
}

bool ds_grounding_key_known(ds_media_kind kind, const char *key) {
    static const char *const image[] = {"id", "image", "expression", "bbox"};
    static const char *const span[] = {"id", "video", "sound", "audio", "query", "span"};
    const char *const *keys = kind == DS_MEDIA_IMAGE ? image : span;
    int n = kind == DS_MEDIA_IMAGE ? 4 : 6;
    for (int k = 0; k < n; k++)
        if (!strcmp(key, keys[k])) return true;
    return false;
}

int ds_grounding_report_unread_keys(const ds_record_file *f) {
    typedef struct {
        const char *key;
        int64_t first, count;
    } unread;
    unread *keys = NULL;
    int64_t n = 0, cap = 0;
    for (int64_t r = 0; r < f->n; r++) {
        ds_grounding_record g;
        char err[256];
        if (f->records[r].error ||
            !ds_grounding_record_parse(f->records[r].item, &g, err, sizeof err))
            continue; // a bad record is reported as such
        for (const cJSON *c = f->records[r].item->child; c; c = c->next) {
            if (ds_grounding_key_known(g.kind, c->string)) continue;
            int64_t k = 0;
            while (k < n && strcmp(keys[k].key, c->string)) k++;
            if (k == n) {
                keys = ag_xgrow(keys, &cap, n + 1, sizeof *keys, "unread keys");
                keys[n++] = (unread){c->string, f->records[r].index, 0};
            }
            keys[k].count++;
        }
    }
    for (int64_t k = 0; k < n; k++) {
        char name[80];
        fprintf(stderr, "%s:%lld: key \"%s\" is not one pack reads, ignored (%lld record%s)\n",
                f->path, (long long)keys[k].first, ds_quote(keys[k].key, name, sizeof name),
                (long long)keys[k].count, keys[k].count == 1 ? "" : "s");
    }
    free(keys);
    return (int)n;
}

const char *ds_json_sample_media(const cJSON *obj, const char *files[DS_MEDIA_KINDS]) {
    static const char *const keys[DS_MEDIA_KINDS] = {"image", "video", "sound"};
    static const char *const why[DS_MEDIA_KINDS] = {"\"image\" is not a file name",
                                                    "\"video\" is not a file name",
                                                    "\"sound\" is not a file name"};
    for (int k = 0; k < DS_MEDIA_KINDS; k++) files[k] = NULL;
    if (!cJSON_IsObject(obj)) return "the sample is not a JSON object";
    for (int k = 0; k < DS_MEDIA_KINDS; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, keys[k]);
        if (!v) continue;
        if (!cJSON_IsString(v) || !v->valuestring[0]) return why[k];
        files[k] = v->valuestring;
    }
    return NULL;
}

bool ds_json_sample_turns(const cJSON *obj, int *task, ds_turn **turns, int *n, char *err,
                          size_t err_size) {
    *task = -1, *turns = NULL, *n = 0;
    if (cJSON_IsObject(obj) && !no_duplicate_key(obj, err, err_size)) return false;
    const cJSON *tf = cJSON_GetObjectItemCaseSensitive(obj, "task");
    if (tf) {
        *task = cJSON_IsString(tf) ? ds_task_from_name(tf->valuestring) : -1;
        if (*task < 0)
            return fail(err, err_size,
                        "unknown \"task\" (expected caption, rec, reg, tvg, sound or "
                        "conversation)");
    }
    const cJSON *conv = cJSON_GetObjectItemCaseSensitive(obj, "conversations");
    if (!cJSON_IsArray(conv)) return fail(err, err_size, "no \"conversations\" list");
    int count = cJSON_GetArraySize(conv), i = 0;
    ds_turn *t = ag_xcalloc((size_t)count + 1, sizeof *t, "turns");
    for (const cJSON *c = conv->child; c; c = c->next, i++) {
        const cJSON *from = cJSON_GetObjectItemCaseSensitive(c, "from");
        const cJSON *value = cJSON_GetObjectItemCaseSensitive(c, "value");
        if (!cJSON_IsString(from) || !cJSON_IsString(value)) {
            free(t);
            return fail(err, err_size, "turn %d has no \"from\" and \"value\" strings", i);
        }
        if (!strcmp(from->valuestring, "human"))
            t[i].from_human = true;
        else if (strcmp(from->valuestring, "gpt") != 0) {
            free(t);
            char name[41];
            return fail(err, err_size, "turn %d is from \"%s\" (expected \"human\" or \"gpt\")", i,
                        ds_quote(from->valuestring, name, sizeof name));
        }
        t[i].text = value->valuestring;
    }
    *turns = t, *n = count;
    return true;
}

ds_turn_refs ds_find_turn_refs(const ds_turn *t, int n) {
    ds_turn_refs r = {false, false, false};
    for (int i = 0; i < n; i++) {
        ds_box b;
        ds_span s;
        if (t[i].from_human) {
            r.box_question |= ds_parse_box(t[i].text, &b);
        } else {
            r.box_answer |= ds_parse_box(t[i].text, &b);
            r.span_answer |= ds_parse_span(t[i].text, &s);
        }
    }
    return r;
}

int ds_infer_task(const ds_turn *t, int n, bool has_video, bool has_audio) {
    // Several exchanges are a conversation whatever they hold: a box in a later answer does
    // not make the sample a referring expression, whose reference is the first answer.
    if (n > 2) return DS_TASK_CONVERSATION;
    ds_turn_refs r = ds_find_turn_refs(t, n);
    if (r.box_answer && !r.box_question) return DS_TASK_REC;
    if (r.box_question) return DS_TASK_REG;
    if (r.span_answer && has_video) return DS_TASK_TVG;
    if (r.span_answer && has_audio) return DS_TASK_SOUND;
    return DS_TASK_CAPTION;
}

static bool is_space(char c) {
    return c == ' ' || c == '\n' || c == '\t' || c == '\r';
}

// text without surrounding white space and one final '.', malloc'd; NULL when nothing is left.
static char *clean_text(const char *text) {
    const char *b = text, *e = text + strlen(text);
    while (b < e && is_space(*b)) b++;
    while (e > b && is_space(e[-1])) e--;
    if (e > b && e[-1] == '.') e--;
    while (e > b && is_space(e[-1])) e--;
    if (e == b) return NULL;
    char *s = ag_xmalloc((size_t)(e - b) + 1, "grounding text");
    memcpy(s, b, (size_t)(e - b));
    s[e - b] = 0;
    return s;
}

static char *format_alloc(const char *fmt, ...) {
    va_list ap, aq;
    va_start(ap, fmt);
    va_copy(aq, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) ag_fail("grounding: cannot format text");
    char *s = ag_xmalloc((size_t)n + 1, "grounding text");
    vsnprintf(s, (size_t)n + 1, fmt, aq);
    va_end(aq);
    return s;
}

bool ds_grounding_conversation(const ds_grounding_record *r, int width, int height, ds_timeline tl,
                               char **question, char **answer, char *err, size_t err_size) {
    *question = *answer = NULL;
    char buf[128];
    const double *v = r->v;
    if (r->kind == DS_MEDIA_IMAGE) {
        const double tol = DS_BOX_TOLERANCE_PX;
        if (!(v[2] > 0 && v[3] > 0))
            return fail(err, err_size, "bbox [%g, %g, %g, %g] has no area", v[0], v[1], v[2], v[3]);
        if (v[0] < -tol || v[1] < -tol || v[0] + v[2] > width + tol || v[1] + v[3] > height + tol)
            return fail(err, err_size,
                        "bbox [%g, %g, %g, %g] (x, y, w, h) is outside the %dx%d image", v[0], v[1],
                        v[2], v[3], width, height);
        ds_box px = {fmax(v[0], 0), fmax(v[1], 0), fmin(v[0] + v[2], width),
                     fmin(v[1] + v[3], height)};
        // Within the tolerance but wholly beside the image, the clamped box is empty or reversed
        // (in the padded square it would even land in the padding).
        if (!(px.x2 > px.x1 && px.y2 > px.y1))
            return fail(err, err_size, "bbox [%g, %g, %g, %g] (x, y, w, h) misses the %dx%d image",
                        v[0], v[1], v[2], v[3], width, height);
        ds_format_box(ds_box_to_square(px, width, height), buf, sizeof buf);
        // the answer keeps 3 decimals of the padded square: a box narrower than half a step
        // comes out without area, a target no answer can overlap
        ds_box kept;
        if (!ds_parse_box(buf, &kept) || !(kept.x2 > kept.x1 && kept.y2 > kept.y1))
            return fail(err, err_size,
                        "bbox [%g, %g, %g, %g] (x, y, w, h) has no area at the 3 decimals the "
                        "answer keeps of the %dx%d image's padded square (%s)",
                        v[0], v[1], v[2], v[3], width, height, buf);
    } else {
        const char *what = r->kind == DS_MEDIA_VIDEO ? "video" : "audio";
        if (!(tl.duration > 0) || !(tl.start >= 0))
            return fail(err, err_size, "the %s has no duration to normalise the span by", what);
        if (!(v[1] > v[0]))
            return fail(err, err_size, "span [%g, %g] is empty or reversed", v[0], v[1]);
        double end = tl.start + tl.duration;
        if (v[0] < 0 || v[0] >= end || v[1] > end + DS_SPAN_TOLERANCE_S) {
            if (tl.start > 0)
                return fail(err, err_size,
                            "span [%g, %g] s is outside the %s's frames (%.3f to %.3f s)", v[0],
                            v[1], what, tl.start, end);
            return fail(err, err_size, "span [%g, %g] s is outside the %s's %.3f s", v[0], v[1],
                        what, tl.duration);
        }
        if (v[1] <= tl.start)
            return fail(err, err_size, "span [%g, %g] s ends before the %s's first frame at %.3f s",
                        v[0], v[1], what, tl.start);
        // (clamping turns a start of -0.0 into 0: "{-0.00, ...}" would not parse back)
        ds_format_span(ds_span_to_timeline((ds_span){v[0], v[1]}, tl), buf, sizeof buf);
        // the answer keeps 2 decimals of the duration: a span shorter than half a step comes
        // out empty, a target no answer can overlap
        ds_span kept;
        if (!ds_parse_span(buf, &kept) || !(kept.t2 > kept.t1))
            return fail(err, err_size,
                        "span [%g, %g] s is empty at the 2 decimals the answer keeps of the "
                        "%s's %.3f s (%s; steps of %.3f s)",
                        v[0], v[1], what, tl.duration, buf, tl.duration / 100);
    }
    const char *field = r->kind == DS_MEDIA_IMAGE ? "expression" : "query";
    // "###" separates the conversation's turns (data/template.h): inside the question it
    // would start a turn of its own, e.g. a made-up answer
    if (strstr(r->text, "###"))
        return fail(err, err_size,
                    "the %s holds \"###\", the separator of the conversation's turns", field);
    char *text = clean_text(r->text);
    if (!text) return fail(err, err_size, "the %s is empty", field);
    const char *prompt = r->kind == DS_MEDIA_IMAGE   ? DS_PROMPT_REC
                         : r->kind == DS_MEDIA_VIDEO ? DS_PROMPT_TVG
                                                     : DS_PROMPT_SOUND;
    char *q = format_alloc(prompt, text);
    *question = format_alloc("%s\n%s", ds_media_placeholder(r->kind), q);
    free(q);
    free(text);
    *answer = ag_xstrdup(buf);
    return true;
}
