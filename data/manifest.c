// manifest.c: see manifest.h.
#include "data/manifest.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "autograd/error.h"
#include "data/files.h"

// A shard name must stay inside the dataset folder.
static bool ds_plain_name(const char *s) {
    return s && s[0] && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

void ds_manifest_init(ds_manifest *m, const char *tokenizer_digest) {
    if (!ds_is_sha256_hex(tokenizer_digest))
        ag_fail("manifest: tokenizer digest is not a 64-digit lowercase hex SHA-256");
    memset(m, 0, sizeof *m);
    m->schema_version = DS_SHARD_SCHEMA_VERSION;
    memcpy(m->tokenizer_digest, tokenizer_digest, 65);
}

static void ds_count_add(ds_manifest_count **list, int *n, int64_t *cap, const char *name,
                         int64_t count) {
    for (int i = 0; i < *n; i++)
        if (strcmp((*list)[i].name, name) == 0) {
            (*list)[i].count += count;
            return;
        }
    *list = ag_xgrow(*list, cap, *n + 1, sizeof **list, "manifest counts");
    (*list)[*n].name = ag_xstrdup(name);
    (*list)[*n].count = count;
    (*n)++;
}

void ds_manifest_add_shard(ds_manifest *m, const char *file, const ds_shard_info *info) {
    if (!ds_plain_name(file)) ag_fail("manifest: shard name '%s' is not a plain file name", file);
    for (int i = 0; i < m->num_shards; i++)
        if (strcmp(m->shards[i].file, file) == 0) ag_fail("manifest: shard '%s' added twice", file);
    m->shards = ag_xgrow(m->shards, &m->shards_cap, m->num_shards + 1, sizeof *m->shards,
                         "manifest shards");
    ds_manifest_shard *s = &m->shards[m->num_shards++];
    s->file = ag_xstrdup(file);
    s->num_samples = info->num_samples;
    s->num_tokens = info->num_tokens;
    s->bytes = info->bytes;
    memcpy(s->sha256, info->sha256, 65);
    m->num_samples += info->num_samples;
    m->num_tokens += info->num_tokens;
    // Tasks keep ds_task order whatever order shards arrive in: rebuild the list each time.
    int64_t tasks[DS_NTASKS] = {0};
    for (int i = 0; i < m->num_tasks; i++)
        tasks[ds_task_from_name(m->tasks[i].name)] = m->tasks[i].count;
    for (int t = 0; t < DS_NTASKS; t++) tasks[t] += info->task_counts[t];
    for (int i = 0; i < m->num_tasks; i++) free(m->tasks[i].name);
    free(m->tasks);
    m->tasks = NULL, m->num_tasks = 0, m->tasks_cap = 0;
    for (int t = 0; t < DS_NTASKS; t++)
        if (tasks[t] > 0)
            ds_count_add(&m->tasks, &m->num_tasks, &m->tasks_cap, ds_task_name(t), tasks[t]);
    for (int i = 0; i < info->num_sources; i++)
        ds_count_add(&m->sources, &m->num_sources, &m->sources_cap, info->source_names[i],
                     info->source_counts[i]);
}

void ds_manifest_free(ds_manifest *m) {
    if (!m) return;
    for (int i = 0; i < m->num_shards; i++) free(m->shards[i].file);
    for (int i = 0; i < m->num_tasks; i++) free(m->tasks[i].name);
    for (int i = 0; i < m->num_sources; i++) free(m->sources[i].name);
    free(m->shards), free(m->tasks), free(m->sources);
    memset(m, 0, sizeof *m);
}

// cJSON builders return NULL only when out of memory.
static cJSON *ds_need(cJSON *item) {
    if (!item) ag_fail("manifest: out of memory building JSON");
    return item;
}

static void ds_add_int(cJSON *obj, const char *key, int64_t v) {
    ds_need(cJSON_AddNumberToObject(obj, key, (double)v));
}

static void ds_add_counts(cJSON *root, const char *key, const ds_manifest_count *c, int n) {
    cJSON *obj = ds_need(cJSON_AddObjectToObject(root, key));
    for (int i = 0; i < n; i++) ds_add_int(obj, c[i].name, c[i].count);
}

void ds_manifest_write(const ds_manifest *m, const char *dir) {
    cJSON *root = ds_need(cJSON_CreateObject());
    ds_add_int(root, "schema_version", m->schema_version);
    ds_need(cJSON_AddStringToObject(root, "tokenizer_digest", m->tokenizer_digest));
    ds_add_int(root, "num_samples", m->num_samples);
    ds_add_int(root, "num_tokens", m->num_tokens);
    cJSON *shards = ds_need(cJSON_AddArrayToObject(root, "shards"));
    for (int i = 0; i < m->num_shards; i++) {
        const ds_manifest_shard *s = &m->shards[i];
        cJSON *e = ds_need(cJSON_CreateObject());
        cJSON_AddItemToArray(shards, e);
        ds_need(cJSON_AddStringToObject(e, "file", s->file));
        ds_add_int(e, "num_samples", s->num_samples);
        ds_add_int(e, "num_tokens", s->num_tokens);
        if (s->bytes >= 0) ds_add_int(e, "bytes", s->bytes);
        ds_need(cJSON_AddStringToObject(e, "sha256", s->sha256));
    }
    ds_add_counts(root, "tasks", m->tasks, m->num_tasks);
    ds_add_counts(root, "sources", m->sources, m->num_sources);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) ag_fail("manifest: out of memory printing JSON");

    char *path = ag_xpath_join(dir, DS_MANIFEST_NAME);
    ds_file_part parts[2] = {{text, strlen(text)}, {"\n", 1}};
    ds_write_file_atomic(path, parts, 2);
    cJSON_free(text);
    free(path);
}

// ---- reading ----

typedef struct {
    const char *path;
    cJSON *root;
    ds_manifest *m;
} ds_mreader;

__attribute__((noreturn, format(printf, 2, 3))) static void ds_mfail(ds_mreader *r, const char *fmt,
                                                                     ...) {
    char msg[1024];
    int k = snprintf(msg, sizeof msg, "%s: ", r->path);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + k, sizeof msg - (size_t)k, fmt, ap);
    va_end(ap);
    cJSON_Delete(r->root);
    ds_manifest_free(r->m);
    ag_fail("%s", msg);
}

// A non-negative integer that a double holds exactly.
static int64_t ds_get_count(ds_mreader *r, const cJSON *obj, const char *key, const char *where) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) ds_mfail(r, "%s'%s' missing", where, key);
    double d = cJSON_IsNumber(v) ? v->valuedouble : -1.0;
    if (!(d >= 0.0 && d <= 9007199254740992.0 && d == floor(d)))
        ds_mfail(r, "%s'%s' is not a non-negative integer", where, key);
    return (int64_t)d;
}

static const char *ds_get_string(ds_mreader *r, const cJSON *obj, const char *key,
                                 const char *where) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) ds_mfail(r, "%s'%s' missing", where, key);
    if (!cJSON_IsString(v)) ds_mfail(r, "%s'%s' is not a string", where, key);
    return v->valuestring;
}

static void ds_get_counts(ds_mreader *r, const char *key, ds_manifest_count **list, int *n,
                          int64_t *cap) {
    const cJSON *obj = cJSON_GetObjectItemCaseSensitive(r->root, key);
    if (!obj) ds_mfail(r, "'%s' missing", key);
    if (!cJSON_IsObject(obj)) ds_mfail(r, "'%s' is not an object", key);
    char where[96];
    snprintf(where, sizeof where, "%s: ", key);
    for (const cJSON *e = obj->child; e; e = e->next) {
        int64_t c = ds_get_count(r, obj, e->string, where);
        ds_count_add(list, n, cap, e->string, c);
    }
}

void ds_manifest_read(ds_manifest *m, const char *dir) {
    memset(m, 0, sizeof *m);
    char path[4096]; // on the stack: nothing to free when reading fails
    if (snprintf(path, sizeof path, "%s/" DS_MANIFEST_NAME, dir) >= (int)sizeof path)
        ag_fail("%s/" DS_MANIFEST_NAME ": path too long", dir);
    ds_mreader r = {path, NULL, m};
    size_t len = 0;
    char *text = ds_read_file(path, &len);
    const char *end = NULL;
    r.root = cJSON_ParseWithOpts(text, &end, 1);
    if (!r.root) {
        int64_t line, col;
        ds_line_col(text, end && end >= text ? (size_t)(end - text) : 0, &line, &col);
        free(text);
        ds_mfail(&r, "not valid JSON (at line %lld, column %lld)", (long long)line, (long long)col);
    }
    free(text);
    if (!cJSON_IsObject(r.root)) ds_mfail(&r, "not a JSON object");

    int64_t version = ds_get_count(&r, r.root, "schema_version", "");
    if (version != DS_SHARD_SCHEMA_VERSION)
        ds_mfail(&r, "schema_version %lld, this build reads %d", (long long)version,
                 DS_SHARD_SCHEMA_VERSION);
    m->schema_version = (int32_t)version;
    const char *digest = ds_get_string(&r, r.root, "tokenizer_digest", "");
    // other tools may write uppercase hex: kept lowercase, as groundc compares digests
    if (!ds_sha256_hex_lower(digest, m->tokenizer_digest))
        ds_mfail(&r, "'tokenizer_digest' is not a 64-digit hex SHA-256");
    m->num_samples = ds_get_count(&r, r.root, "num_samples", "");
    m->num_tokens = ds_get_count(&r, r.root, "num_tokens", "");

    const cJSON *shards = cJSON_GetObjectItemCaseSensitive(r.root, "shards");
    if (!cJSON_IsArray(shards)) ds_mfail(&r, "'shards' missing or not an array");
    int n = cJSON_GetArraySize(shards);
    m->shards = ag_xcalloc(n > 0 ? (size_t)n : 1, sizeof *m->shards, "manifest shards");
    m->shards_cap = n;
    int64_t samples = 0, tokens = 0, bytes = 0;
    const cJSON *e = shards->child;
    for (int i = 0; i < n; i++, e = e->next) {
        char where[64];
        snprintf(where, sizeof where, "shards[%d]: ", i);
        if (!cJSON_IsObject(e)) ds_mfail(&r, "shards[%d] is not an object", i);
        const char *file = ds_get_string(&r, e, "file", where);
        if (!ds_plain_name(file))
            ds_mfail(&r, "%s'file' \"%s\" is not a plain file name", where, file);
        for (int j = 0; j < i; j++)
            if (strcmp(m->shards[j].file, file) == 0)
                ds_mfail(&r, "%s'%s' listed twice", where, file);
        ds_manifest_shard *s = &m->shards[i];
        s->file = ag_xstrdup(file);
        m->num_shards = i + 1;
        s->num_samples = ds_get_count(&r, e, "num_samples", where);
        s->num_tokens = ds_get_count(&r, e, "num_tokens", where);
        s->bytes =
            cJSON_GetObjectItemCaseSensitive(e, "bytes") ? ds_get_count(&r, e, "bytes", where) : -1;
        const char *sha = ds_get_string(&r, e, "sha256", where);
        if (!ds_sha256_hex_lower(sha, s->sha256))
            ds_mfail(&r, "%s'sha256' is not a 64-digit hex SHA-256", where);
        if (__builtin_add_overflow(samples, s->num_samples, &samples) ||
            __builtin_add_overflow(tokens, s->num_tokens, &tokens) ||
            __builtin_add_overflow(bytes, s->bytes > 0 ? s->bytes : 0, &bytes))
            ds_mfail(&r, "%sthe shards' counts add up past 2^63", where);
    }
    if (samples != m->num_samples)
        ds_mfail(&r, "num_samples %lld, but the shards hold %lld", (long long)m->num_samples,
                 (long long)samples);
    if (tokens != m->num_tokens)
        ds_mfail(&r, "num_tokens %lld, but the shards hold %lld", (long long)m->num_tokens,
                 (long long)tokens);
    ds_get_counts(&r, "tasks", &m->tasks, &m->num_tasks, &m->tasks_cap);
    for (int i = 0; i < m->num_tasks; i++)
        if (ds_task_from_name(m->tasks[i].name) < 0)
            ds_mfail(&r, "tasks: unknown task '%s'", m->tasks[i].name);
    ds_get_counts(&r, "sources", &m->sources, &m->num_sources, &m->sources_cap);
    cJSON_Delete(r.root);
}

// ---- verification ----

__attribute__((noreturn, format(printf, 2, 3))) static void ds_vfail(const char *path,
                                                                     const char *fmt, ...) {
    char msg[1024];
    int k = snprintf(msg, sizeof msg, "%s: ", path);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + k, sizeof msg - (size_t)k, fmt, ap);
    va_end(ap);
    ag_fail("%s", msg);
}

// "image 336 px", "video 64 frames of 224 px", "audio 3 x 204 x 128 fbank".
static const char *geom_text(int kind, const int64_t g[3], char *buf, size_t n) {
    if (kind == 0) snprintf(buf, n, "image %lld px", (long long)g[0]);
    if (kind == 1)
        snprintf(buf, n, "video %lld frames of %lld px", (long long)g[0], (long long)g[1]);
    if (kind == 2)
        snprintf(buf, n, "audio %lld x %lld x %lld fbank", (long long)g[0], (long long)g[1],
                 (long long)g[2]);
    return buf;
}

void ds_manifest_verify(const ds_manifest *m, const char *dir, bool checksums) {
    // Media geometry per kind (image, video, audio) of the first shard that has the kind: the
    // loader needs one per kind, so a folder mixing two is refused here too (inspect).
    int64_t geom[3][3] = {{0}};
    const char *geom_file[3] = {NULL, NULL, NULL};
    for (int i = 0; i < m->num_shards; i++) {
        const ds_manifest_shard *e = &m->shards[i];
        char path[4096]; // on the stack: nothing to free when a check below fails
        if (snprintf(path, sizeof path, "%s/%s", dir, e->file) >= (int)sizeof path)
            ag_fail("%s/%s: path too long", dir, e->file);
        struct stat st;
        if (stat(path, &st) != 0)
            ds_vfail(path, "listed in %s/" DS_MANIFEST_NAME " but cannot be read: %s", dir,
                     strerror(errno));
        if (!S_ISREG(st.st_mode)) ds_vfail(path, "not a regular file");
        if (e->bytes >= 0 && (int64_t)st.st_size != e->bytes)
            ds_vfail(path, "size %lld bytes, the manifest says %lld (truncated or replaced?)",
                     (long long)st.st_size, (long long)e->bytes);
        if (checksums) {
            char sha[65];
            ds_file_sha256(path, sha, NULL);
            if (strcmp(sha, e->sha256) != 0)
                ds_vfail(path, "SHA-256 %.12s... differs from the manifest's %.12s... (corrupt?)",
                         sha, e->sha256);
        }
        ds_shard *s = ds_shard_open(path); // refuses other schema versions itself
        const ds_shard_header *h = ds_shard_get_header(s);
        char problem[512] = "";
        if (h->schema_version != m->schema_version)
            snprintf(problem, sizeof problem, "schema_version %d, the manifest says %d",
                     h->schema_version, m->schema_version);
        else if (strcmp(h->tokenizer_digest, m->tokenizer_digest) != 0)
            snprintf(problem, sizeof problem,
                     "packed with tokenizer %.12s..., the manifest says %.12s...",
                     h->tokenizer_digest, m->tokenizer_digest);
        else if (h->num_samples != e->num_samples || h->num_tokens != e->num_tokens)
            snprintf(problem, sizeof problem,
                     "%lld samples / %lld tokens, the manifest says %lld / %lld",
                     (long long)h->num_samples, (long long)h->num_tokens, (long long)e->num_samples,
                     (long long)e->num_tokens);
        const int64_t g[3][3] = {{h->image_size, 0, 0},
                                 {h->video_frames, h->video_size, 0},
                                 {h->audio_clips, h->audio_frames, h->audio_mels}};
        for (int k = 0; k < 3 && !problem[0]; k++) {
            if (!g[k][0]) continue; // no media of this kind in the shard
            if (!geom_file[k]) {
                memcpy(geom[k], g[k], sizeof geom[k]);
                geom_file[k] = e->file;
            } else if (memcmp(geom[k], g[k], sizeof geom[k]) != 0) {
                char a[96], b[96];
                snprintf(problem, sizeof problem,
                         "%s, but %s has %s (one dataset holds one geometry per media kind: "
                         "pack them into separate folders)",
                         geom_text(k, g[k], a, sizeof a), geom_file[k],
                         geom_text(k, geom[k], b, sizeof b));
            }
        }
        ds_shard_close(s);
        if (problem[0]) ds_vfail(path, "%s", problem);
    }
}
