// checkpoint.c: see checkpoint.h.
#include "train/checkpoint.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/error.h"
#include "autograd/safetensors.h"
#include "data/files.h"
#include "train/model_config.h"

// Paths -----------------------------------------------------------------------------------

static void path_join(char *out, size_t n, const char *dir, const char *name) {
    if ((size_t)snprintf(out, n, "%s/%s", dir, name) >= n)
        ag_fail("%s/%s: path too long", dir, name);
}

void tr_remove_tree(const char *dir) {
    // As rm -r: a link (or a file) goes itself; the folder a link names is never entered.
    struct stat ls;
    if (lstat(dir, &ls)) {
        if (errno == ENOENT) return;
        ag_fail("%s: cannot stat: %s", dir, strerror(errno));
    }
    if (!S_ISDIR(ls.st_mode)) {
        if (unlink(dir)) ag_fail("%s: cannot remove: %s", dir, strerror(errno));
        return;
    }
    DIR *d = opendir(dir);
    if (!d) ag_fail("%s: cannot open: %s", dir, strerror(errno));
    struct dirent *e;
    char p[PATH_MAX];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        path_join(p, sizeof p, dir, e->d_name);
        struct stat sb;
        if (!lstat(p, &sb) && S_ISDIR(sb.st_mode)) {
            closedir(d); // (re-opened below: the recursion may be deep)
            tr_remove_tree(p);
            d = opendir(dir);
            if (!d) ag_fail("%s: cannot open: %s", dir, strerror(errno));
            continue;
        }
        if (unlink(p)) ag_fail("%s: cannot remove: %s", p, strerror(errno));
    }
    closedir(d);
    if (rmdir(dir)) ag_fail("%s: cannot remove: %s", dir, strerror(errno));
}

// Digests -----------------------------------------------------------------------------------

static void hex(const unsigned char *d, unsigned n, char out[65]) {
    for (unsigned i = 0; i < n && i < 32; i++) snprintf(out + 2 * i, 3, "%02x", d[i]);
}

void tr_ckpt_model_digest(const gm_params *reg, char out[65]) {
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    bool ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1;
    for (int i = 0; ok && i < reg->n; i++) {
        const ag_tensor *t = reg->tensors[i];
        char line[1024];
        int k = snprintf(line, sizeof line, "%s %s", t->name, ag_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim && k < (int)sizeof line - 24; d++)
            k += snprintf(line + k, sizeof line - (size_t)k, " %" PRId64, t->shape[d]);
        line[k++] = '\n';
        ok = EVP_DigestUpdate(c, line, (size_t)k) == 1;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    ok = ok && EVP_DigestFinal_ex(c, md, &n) == 1;
    EVP_MD_CTX_free(c);
    if (!ok) ag_fail("checkpoint: SHA-256 failed");
    hex(md, n, out);
}

void tr_ckpt_config_digest(const tr_yaml *resolved, char out[65]) {
    size_t len;
    char *text = tr_yaml_dump(resolved, &len);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    int ok = EVP_Digest(text, len, md, &n, EVP_sha256(), NULL);
    free(text);
    if (ok != 1) ag_fail("checkpoint: SHA-256 failed");
    hex(md, n, out);
}

// state.json --------------------------------------------------------------------------------

static char *state_json(const tr_ckpt_state *st) {
    cJSON *j = cJSON_CreateObject();
    char u64[32];
    cJSON_AddNumberToObject(j, "format", TR_CKPT_FORMAT);
    cJSON_AddNumberToObject(j, "step", (double)st->step);
    cJSON_AddNumberToObject(j, "total_steps", (double)st->total_steps);
    cJSON_AddNumberToObject(j, "stage", st->stage);
    cJSON_AddBoolToObject(j, "complete", st->complete);
    // 64-bit values as strings: JSON numbers are doubles.
    snprintf(u64, sizeof u64, "%" PRIu64, st->seed);
    cJSON_AddStringToObject(j, "seed", u64);
    cJSON *cur = cJSON_AddObjectToObject(j, "data_cursor");
    snprintf(u64, sizeof u64, "%" PRIu64, st->cursor.seed);
    cJSON_AddStringToObject(cur, "seed", u64);
    snprintf(u64, sizeof u64, "%" PRId64, st->cursor.position);
    cJSON_AddStringToObject(cur, "position", u64);
    cJSON_AddStringToObject(cur, "digest", st->cursor.digest);
    cJSON_AddNumberToObject(j, "world_size", st->world);
    cJSON_AddBoolToObject(j, "zero1", st->zero1);
    cJSON_AddNumberToObject(j, "global_batch", (double)st->global_batch);
    cJSON_AddNumberToObject(j, "bad_steps", st->bad_steps);
    cJSON_AddNumberToObject(j, "tokens", st->tokens);
    cJSON_AddNumberToObject(j, "loss", isfinite(st->loss) ? st->loss : -1);
    // The logging window open at the save (steps past the last metrics line): a resume adds
    // to it, so that its first line averages what the uninterrupted run's does. cJSON prints
    // doubles with 17 digits where 15 do not read back the same.
    cJSON *w = cJSON_AddObjectToObject(j, "log_window");
    cJSON_AddNumberToObject(w, "loss_sum", st->win_loss);
    cJSON_AddNumberToObject(w, "steps", (double)st->win_steps);
    cJSON_AddNumberToObject(w, "tokens", st->win_tokens);
    cJSON_AddNumberToObject(w, "empty_steps", (double)st->win_empty);
    cJSON_AddNumberToObject(j, "elapsed_s", st->elapsed);
    cJSON_AddStringToObject(j, "config_digest", st->config_digest);
    cJSON_AddStringToObject(j, "model_digest", st->model_digest);
    cJSON_AddStringToObject(j, "run_id", st->run_id);
    cJSON_AddStringToObject(j, "init_from", st->init_from);
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    if (!s) ag_fail("checkpoint: out of memory formatting state.json");
    return s;
}

// state.json being read: a failure frees the parsed document before it reports.
typedef struct {
    const char *path;
    cJSON *root;
} state_doc;

__attribute__((noreturn, format(printf, 2, 3))) static void doc_fail(state_doc *doc,
                                                                     const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON_Delete(doc->root);
    doc->root = NULL;
    ag_fail("%s: %s", doc->path, msg);
}

static const cJSON *field(state_doc *doc, const cJSON *obj, const char *key, int type) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) doc_fail(doc, "missing field '%s'", key);
    bool ok = type == cJSON_Number   ? cJSON_IsNumber(v)
              : type == cJSON_String ? cJSON_IsString(v)
              : type == cJSON_True   ? cJSON_IsBool(v)
                                     : cJSON_IsObject(v);
    if (!ok) doc_fail(doc, "field '%s' has the wrong type", key);
    return v;
}

static int64_t int_field(state_doc *doc, const cJSON *obj, const char *key, int64_t lo,
                         int64_t hi) {
    double v = field(doc, obj, key, cJSON_Number)->valuedouble;
    if (!(v >= (double)lo && v <= (double)hi) || v != floor(v))
        doc_fail(doc, "field '%s' = %g is not a whole number in [%" PRId64 ", %" PRId64 "]", key, v,
                 lo, hi);
    return (int64_t)v;
}

static uint64_t u64_field(state_doc *doc, const cJSON *obj, const char *key, bool sign) {
    const char *s = field(doc, obj, key, cJSON_String)->valuestring;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || errno || *s == '-' || (sign && v > INT64_MAX))
        doc_fail(doc, "field '%s' = \"%.40s\" is not a %s integer", key, s,
                 sign ? "non-negative 63-bit" : "64-bit unsigned");
    return v;
}

static void hex_field(state_doc *doc, const cJSON *obj, const char *key, char out[65]) {
    const char *s = field(doc, obj, key, cJSON_String)->valuestring;
    if (strlen(s) != 64 || strspn(s, "0123456789abcdef") != 64)
        doc_fail(doc, "field '%s' is not a SHA-256 hex digest", key);
    memcpy(out, s, 65);
}

// run_id and init_from (absent in checkpoints written before them: "").
static void lineage_fields(state_doc *doc, const cJSON *j, tr_ckpt_state *st) {
    if (cJSON_GetObjectItemCaseSensitive(j, "run_id")) {
        const char *id = field(doc, j, "run_id", cJSON_String)->valuestring;
        size_t n = strlen(id);
        if (n && (n != 32 || strspn(id, "0123456789abcdef") != 32))
            doc_fail(doc, "field 'run_id' is not 32 hex digits");
        memcpy(st->run_id, id, n + 1);
    }
    if (cJSON_GetObjectItemCaseSensitive(j, "init_from")) {
        const char *from = field(doc, j, "init_from", cJSON_String)->valuestring;
        size_t n = strlen(from);
        if (n &&
            (n >= sizeof st->init_from || n < 34 || from[32] != '@' ||
             strspn(from, "0123456789abcdef") != 32 || strspn(from + 33, "0123456789") != n - 33))
            doc_fail(doc, "field 'init_from' is not RUN_ID@STEP");
        memcpy(st->init_from, from, n + 1);
    }
}

void tr_ckpt_new_run_id(char out[33]) {
    unsigned char b[16];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t k = getrandom(b + got, sizeof b - got, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) ag_fail("checkpoint: getrandom failed: %s", strerror(errno));
        got += (size_t)k;
    }
    for (size_t i = 0; i < sizeof b; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
}

void tr_ckpt_identity(const char *path, char out[48]) {
    out[0] = 0;
    struct stat sb;
    char *sj = ag_xpath_join(path, "state.json");
    bool is_ckpt = !stat(sj, &sb) && S_ISREG(sb.st_mode);
    free(sj);
    if (!is_ckpt) return;
    tr_ckpt_state st;
    tr_ckpt_read_state(path, &st);
    if (st.run_id[0]) snprintf(out, 48, "%s@%" PRId64, st.run_id, st.step);
}

void tr_ckpt_read_state(const char *dir, tr_ckpt_state *st) {
    char path[PATH_MAX];
    path_join(path, sizeof path, dir, "state.json");
    char *text = ds_read_file_max(path, 1 << 20, NULL);
    const char *end = NULL;
    state_doc doc = {.path = path, .root = cJSON_ParseWithOpts(text, &end, 1)};
    if (!doc.root) {
        int64_t line, col;
        ds_line_col(text, end && end >= text ? (size_t)(end - text) : 0, &line, &col);
        free(text);
        ag_fail("%s:%lld:%lld: not valid JSON", path, (long long)line, (long long)col);
    }
    free(text);
    if (!cJSON_IsObject(doc.root)) doc_fail(&doc, "not a JSON object");
    const cJSON *j = doc.root;
    memset(st, 0, sizeof *st);
    int64_t fmt = int_field(&doc, j, "format", 0, 1 << 20);
    if (fmt != TR_CKPT_FORMAT)
        doc_fail(&doc, "checkpoint format %" PRId64 ", this groundc reads %d", fmt, TR_CKPT_FORMAT);
    st->step = int_field(&doc, j, "step", 0, INT64_MAX / 2);
    st->total_steps = int_field(&doc, j, "total_steps", 1, INT64_MAX / 2);
    if (st->step > st->total_steps)
        doc_fail(&doc, "step %" PRId64 " is past total_steps %" PRId64, st->step, st->total_steps);
    st->stage = (int)int_field(&doc, j, "stage", 0, 3);
    st->complete = cJSON_IsTrue(field(&doc, j, "complete", cJSON_True));
    st->seed = u64_field(&doc, j, "seed", false);
    const cJSON *cur = field(&doc, j, "data_cursor", cJSON_Object);
    st->cursor.seed = u64_field(&doc, cur, "seed", false);
    st->cursor.position = (int64_t)u64_field(&doc, cur, "position", true);
    hex_field(&doc, cur, "digest", st->cursor.digest);
    st->world = (int)int_field(&doc, j, "world_size", 1, 1 << 20);
    st->zero1 = cJSON_IsTrue(field(&doc, j, "zero1", cJSON_True));
    st->global_batch = int_field(&doc, j, "global_batch", 1, INT64_MAX / 2);
    // every step consumes one global batch of the stream, skipped steps too
    if (st->cursor.position % st->global_batch ||
        st->cursor.position / st->global_batch != st->step)
        doc_fail(&doc,
                 "data_cursor.position %" PRId64 " is not step %" PRId64 " x global_batch %" PRId64,
                 st->cursor.position, st->step, st->global_batch);
    st->bad_steps = (int)int_field(&doc, j, "bad_steps", 0, INT32_MAX);
    if (st->bad_steps > st->step)
        doc_fail(&doc, "bad_steps %d is more than the %" PRId64 " steps taken", st->bad_steps,
                 st->step);
    st->tokens = field(&doc, j, "tokens", cJSON_Number)->valuedouble;
    if (!(st->tokens >= 0 && st->tokens < 1e18)) doc_fail(&doc, "field 'tokens' out of range");
    st->loss = field(&doc, j, "loss", cJSON_Number)->valuedouble;
    // Written since the window was saved; older checkpoints resume with an empty window.
    if (cJSON_GetObjectItemCaseSensitive(j, "log_window")) {
        const cJSON *w = field(&doc, j, "log_window", cJSON_Object);
        st->win_loss = field(&doc, w, "loss_sum", cJSON_Number)->valuedouble;
        st->win_steps = int_field(&doc, w, "steps", 0, INT64_MAX / 2);
        st->win_tokens = field(&doc, w, "tokens", cJSON_Number)->valuedouble;
        st->win_empty = int_field(&doc, w, "empty_steps", 0, INT64_MAX / 2);
    }
    if (cJSON_GetObjectItemCaseSensitive(j, "elapsed_s")) {
        st->elapsed = field(&doc, j, "elapsed_s", cJSON_Number)->valuedouble;
        if (!(st->elapsed >= 0 && st->elapsed < 1e12))
            doc_fail(&doc, "field 'elapsed_s' out of range");
    }
    hex_field(&doc, j, "config_digest", st->config_digest);
    hex_field(&doc, j, "model_digest", st->model_digest);
    lineage_fields(&doc, j, st);
    if (st->complete != (st->step == st->total_steps))
        doc_fail(&doc, "'complete' disagrees with step %" PRId64 " of %" PRId64, st->step,
                 st->total_steps);
    cJSON_Delete(doc.root);
}

// Saving ------------------------------------------------------------------------------------

static void optim_name(char *out, size_t n, int rank) {
    snprintf(out, n, "optim.rank%05d.safetensors", rank);
}

static void write_optim(const char *dir, const ag_adamw *opt, int rank) {
    char name[64], path[PATH_MAX];
    optim_name(name, sizeof name, rank);
    path_join(path, sizeof path, dir, name);
    ag_st_writer *w = ag_st_writer_new();
    char step[32];
    snprintf(step, sizeof step, "%" PRId64, opt->step);
    ag_st_add_meta(w, "adamw_step", step);
    for (int i = 0; i < opt->n; i++) {
        ag_st_add(w, opt->m[i]->name, opt->m[i]);
        ag_st_add(w, opt->v[i]->name, opt->v[i]);
        if (opt->master[i]) ag_st_add(w, opt->master[i]->name, opt->master[i]);
    }
    ag_st_write(w, path);
}

// Names of OUT's checkpoints (step_ + 8 or more digits), sorted by step.
static int list_steps(const char *out_dir, char ***names) {
    *names = NULL;
    DIR *d = opendir(out_dir);
    if (!d) ag_fail("%s: cannot open: %s", out_dir, strerror(errno));
    int n = 0;
    int64_t cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *s = e->d_name;
        if (strncmp(s, "step_", 5) || strlen(s + 5) < 8 ||
            strspn(s + 5, "0123456789") != strlen(s + 5))
            continue;
        *names = ag_xgrow(*names, &cap, n + 1, sizeof **names, "list");
        (*names)[n++] = ag_xstrdup(s);
    }
    closedir(d);
    // Same-width names sort as numbers; wider ones (past 10^8 steps) come later.
    for (int i = 1; i < n; i++)
        for (int k = i; k > 0; k--) {
            char *a = (*names)[k - 1], *b = (*names)[k];
            if (strlen(a) < strlen(b) || (strlen(a) == strlen(b) && strcmp(a, b) <= 0)) break;
            (*names)[k - 1] = b, (*names)[k] = a;
        }
    return n;
}

static void prune(const char *out_dir, int keep, const char *newest) {
    if (keep < 1) return;
    char **names;
    int n = list_steps(out_dir, &names), kept = 0;
    for (int i = n - 1; i >= 0; i--) {
        // Never the one `latest` names, whatever the order.
        if (!strcmp(names[i], newest) || kept < keep - 1) {
            if (strcmp(names[i], newest)) kept++;
        } else {
            char p[PATH_MAX];
            path_join(p, sizeof p, out_dir, names[i]);
            tr_remove_tree(p);
        }
        free(names[i]);
    }
    free(names);
}

// Test hook: GROUNDC_TEST_KILL_IN_CHECKPOINT=N kills the process with SIGKILL halfway
// through writing the N-th checkpoint of this process (after the model file, before the
// rename), to test that such a crash leaves the previous checkpoint in charge.
static void maybe_die_midway(void) {
    static int count;
    const char *v = getenv("GROUNDC_TEST_KILL_IN_CHECKPOINT");
    if (v && ++count == atoi(v)) {
        fflush(stdout);
        fflush(stderr);
        kill(getpid(), SIGKILL);
    }
}

// Does the checkpoint folder dir hold this very run's step (same step, config and model)?
// False when it cannot tell (no or unreadable state.json).
static bool same_run(const char *dir, const tr_ckpt_state *st) {
    char path[PATH_MAX];
    path_join(path, sizeof path, dir, "state.json");
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf);
    const cJSON *step = cJSON_GetObjectItemCaseSensitive(j, "step"),
                *cd = cJSON_GetObjectItemCaseSensitive(j, "config_digest"),
                *md = cJSON_GetObjectItemCaseSensitive(j, "model_digest");
    bool same = cJSON_IsNumber(step) && step->valuedouble == (double)st->step &&
                cJSON_IsString(cd) && !strcmp(cd->valuestring, st->config_digest) &&
                cJSON_IsString(md) && !strcmp(md->valuestring, st->model_digest);
    cJSON_Delete(j);
    return same;
}

// A save that fails (a full disk) takes its temporary folder away again: the space it held is
// what the next try needs. The rank that fails removes it (the job stops anyway), then the
// handler that was there reports (under MPI: the rank's line and the abort).
static char g_saving[PATH_MAX];
static ag_error_handler g_saving_prev;

static void remove_saving_on_error(const char *msg) {
    ag_error_handler prev = g_saving_prev;
    ag_set_error_handler(prev); // a failure while cleaning up reports itself
    tr_remove_tree(g_saving);
    if (prev) prev(msg);
}

void tr_ckpt_save(const char *out_dir, const tr_ckpt_state *st, const gm_params *reg,
                  const ag_adamw *opt, const tr_yaml *resolved, const tr_dist *d, int keep) {
    char name[64], tmp[PATH_MAX], final[PATH_MAX], old[PATH_MAX], path[PATH_MAX];
    snprintf(name, sizeof name, "step_%08" PRId64, st->step);
    path_join(final, sizeof final, out_dir, name);
    snprintf(path, sizeof path, ".tmp.%s", name);
    path_join(tmp, sizeof tmp, out_dir, path);
    snprintf(path, sizeof path, ".old.%s", name);
    path_join(old, sizeof old, out_dir, path);
    struct stat sb;
    // This run's checkpoint of this step already stands (a resumed run re-reaching a step it
    // saved before `latest` moved): rewriting it would only open a window where it is
    // incomplete. Another run's (other config or model) is replaced, never kept in its place.
    const bool exists = d->rank == 0 && stat(final, &sb) == 0;
    const bool keep_it = tr_dist_all(d, d->rank != 0 || (exists && same_run(final, st)));
    if (d->rank == 0 && !keep_it) {
        ds_make_dirs(out_dir);
        tr_remove_tree(tmp); // left by a run killed while writing
        tr_remove_tree(old); // left by a run killed while replacing
        if (mkdir(tmp, 0777)) ag_fail("%s: cannot create: %s", tmp, strerror(errno));
    }
    tr_dist_barrier(d);
    if (!keep_it) {
        snprintf(g_saving, sizeof g_saving, "%s", tmp);
        g_saving_prev = ag_get_error_handler();
        ag_set_error_handler(remove_saving_on_error);
        if (d->rank == 0) {
            path_join(path, sizeof path, tmp, "model.safetensors");
            ag_st_writer *w = ag_st_writer_new();
            for (int i = 0; i < reg->n; i++) ag_st_add(w, reg->tensors[i]->name, reg->tensors[i]);
            ag_st_add_meta(w, "format", "groundc");
            ag_st_write(w, path);
            maybe_die_midway();
        }
        if (opt && (st->zero1 || d->rank == 0)) write_optim(tmp, opt, d->rank);
        if (d->rank == 0) {
            char *js = state_json(st);
            path_join(path, sizeof path, tmp, "state.json");
            ds_write_file_atomic(path, &(ds_file_part){js, strlen(js)}, 1);
            free(js);
            path_join(path, sizeof path, tmp, "config.yaml");
            char *yaml = tr_yaml_dump(resolved, NULL);
            ds_write_file_atomic(path, &(ds_file_part){yaml, strlen(yaml)}, 1);
            free(yaml);
        }
        ag_set_error_handler(g_saving_prev);
    }
    tr_dist_barrier(d); // every rank's files are synced
    if (d->rank != 0) return;
    if (!keep_it) {
        ag_sync_dir(tmp);
        // Another run's step_N moves aside first; `latest` never names it here (a resume
        // with later checkpoints in its folder is refused), so the gap harms nothing.
        if (exists && rename(final, old))
            ag_fail("%s: cannot rename to %s: %s", final, old, strerror(errno));
        if (rename(tmp, final)) ag_fail("%s: cannot rename to %s: %s", tmp, final, strerror(errno));
        ag_sync_dir(out_dir);
    }
    // latest -> step_N, replaced atomically.
    char link_tmp[PATH_MAX], link[PATH_MAX];
    path_join(link, sizeof link, out_dir, "latest");
    if (snprintf(link_tmp, sizeof link_tmp, "%s.tmp.%d", link, (int)getpid()) >=
        (int)sizeof link_tmp)
        ag_fail("%s: path too long", link);
    unlink(link_tmp);
    if (symlink(name, link_tmp)) ag_fail("%s: cannot create link: %s", link_tmp, strerror(errno));
    if (rename(link_tmp, link))
        ag_fail("%s: cannot rename to %s: %s", link_tmp, link, strerror(errno));
    ag_sync_dir(out_dir);
    tr_remove_tree(old);
    prune(out_dir, keep, name);
}

bool tr_ckpt_is_run(const char *dir) {
    return ds_dir_has(dir, "latest") || tr_ckpt_newest_step(dir) >= 0;
}

int64_t tr_ckpt_newest_step(const char *out_dir) {
    struct stat sb;
    if (stat(out_dir, &sb) || !S_ISDIR(sb.st_mode)) return -1;
    char **names;
    int n = list_steps(out_dir, &names);
    int64_t newest = n ? strtoll(names[n - 1] + 5, NULL, 10) : -1;
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    return newest;
}

// Loading -----------------------------------------------------------------------------------

char *tr_ckpt_latest(const char *out_dir) {
    char link[PATH_MAX], target[PATH_MAX];
    path_join(link, sizeof link, out_dir, "latest");
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n < 0 && (errno == ENOENT || errno == ENOTDIR)) {
        // No link: a run killed between renaming its first checkpoint into place and making
        // the link. step_N folders only appear complete (renamed from .tmp), so the newest
        // one is where that run stood.
        struct stat sb;
        if (stat(out_dir, &sb) || !S_ISDIR(sb.st_mode)) return NULL;
        char **names;
        int k = list_steps(out_dir, &names);
        char *dir = NULL;
        if (k > 0) {
            dir = ag_xmalloc(strlen(out_dir) + strlen(names[k - 1]) + 2, "path");
            sprintf(dir, "%s/%s", out_dir, names[k - 1]);
        }
        for (int i = 0; i < k; i++) free(names[i]);
        free(names);
        return dir;
    }
    if (n < 0 && errno == EINVAL) // (groundc writes it as a symbolic link, never as a file)
        ag_fail("%s: not a symbolic link to a checkpoint (a file or folder in its place): remove "
                "it, or point it at a step_N folder (ln -sfn step_N %s)",
                link, link);
    if (n < 0) ag_fail("%s: cannot read link: %s", link, strerror(errno));
    target[n] = 0;
    if (strchr(target, '/') || strncmp(target, "step_", 5))
        ag_fail("%s: points to '%s', not a checkpoint of this folder", link, target);
    char *dir = ag_xmalloc(strlen(out_dir) + strlen(target) + 2, "path");
    sprintf(dir, "%s/%s", out_dir, target);
    struct stat sb;
    if (stat(dir, &sb) || !S_ISDIR(sb.st_mode))
        ag_fail("%s: points to '%s', which is not there", link, target);
    return dir;
}

// Entry e of f fits tensor t (name, shape, a float dtype)? Otherwise closes f and fails, so
// that nothing is left open (and the load after the checks cannot fail).
// hint, when given, follows the reason (why the model may differ).
static void check_entry(ag_st_file *f, const ag_st_entry *e, const ag_tensor *t, const char *what,
                        const char *hint) {
    char msg[512] = "";
    if (!e) {
        snprintf(msg, sizeof msg,
                 "no %s '%s' (was it written for another model or other "
                 "trainable parameters?)",
                 what, t->name);
    } else {
        bool same = e->ndim == t->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = e->shape[d] == t->shape[d];
        bool fl = !strcmp(e->dtype, "F32") || !strcmp(e->dtype, "BF16") ||
                  !strcmp(e->dtype, "F16") || !strcmp(e->dtype, "F64");
        if (!same) {
            char have[128];
            int k = snprintf(have, sizeof have, "[");
            for (int d = 0; d < e->ndim && k < 100; d++)
                k += snprintf(have + k, sizeof have - (size_t)k, "%s%" PRId64, d ? "," : "",
                              e->shape[d]);
            snprintf(have + k, sizeof have - (size_t)k, "]");
            char want[64];
            snprintf(msg, sizeof msg, "%s '%s' is %s, the model's is %s", what, t->name, have,
                     ag_describe(t, want, sizeof want));
        } else if (!fl) {
            snprintf(msg, sizeof msg, "%s '%s' has dtype %s, not a float type", what, t->name,
                     e->dtype);
        }
    }
    if (!*msg) return;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s", f->path);
    ag_st_close(f);
    ag_fail("%s: %s%s%s", path, msg, hint ? "; " : "", hint ? hint : "");
}

static void check_model(ag_st_file *f, const gm_params *reg, const char *hint) {
    for (int i = 0; i < reg->n; i++)
        check_entry(f, ag_st_find(f, reg->tensors[i]->name), reg->tensors[i], "tensor", hint);
    for (int i = 0; i < f->n; i++)
        if (!gm_params_find(reg, f->entries[i].name)) {
            char name[256], path[PATH_MAX];
            snprintf(name, sizeof name, "%s", f->entries[i].name);
            snprintf(path, sizeof path, "%s", f->path);
            ag_st_close(f);
            ag_fail("%s: tensor '%s' is not a parameter of this model%s%s", path, name,
                    hint ? "; " : "", hint ? hint : "");
        }
}

void tr_ckpt_check_model(ag_st_file *f, const gm_params *reg) {
    check_model(f, reg, NULL);
}

static void load_model(const char *dir, const gm_params *reg, const char *hint) {
    char path[PATH_MAX];
    path_join(path, sizeof path, dir, "model.safetensors");
    ag_st_file *f = ag_st_open(path);
    check_model(f, reg, hint);
    for (int i = 0; i < reg->n; i++) {
        const ag_st_entry *e = ag_st_find(f, reg->tensors[i]->name);
        ag_st_check_values(f, e, false);
        ag_st_load_into(f, e, reg->tensors[i]);
    }
    ag_st_close(f);
}

void tr_ckpt_load_model(const char *dir, const gm_params *reg) {
    load_model(dir, reg, NULL);
}

void tr_ckpt_check_trainables(const char *dir, const tr_ckpt_state *st, const gm_params *reg) {
    static const char moment[] = "adam_m.";
    const size_t pre = sizeof moment - 1;
    int nf = st->zero1 ? st->world : 1;
    ag_st_file **f = ag_xcalloc((size_t)nf, sizeof *f, "checkpoint");
    int there = 0, here = 0;
    for (int r = 0; r < nf; r++) {
        char name[64], path[PATH_MAX];
        optim_name(name, sizeof name, r);
        path_join(path, sizeof path, dir, name);
        f[r] = ag_st_open(path);
        for (int i = 0; i < f[r]->n; i++) there += !strncmp(f[r]->entries[i].name, moment, pre);
    }
    const char *differs = NULL, *how = NULL;
    for (int i = 0; i < reg->n && !differs; i++) {
        const ag_tensor *t = reg->tensors[i];
        if (!t->requires_grad) continue;
        here++;
        char *key = ag_xmalloc(pre + strlen(t->name) + 1, "checkpoint");
        memcpy(key, moment, pre);
        strcpy(key + pre, t->name);
        bool found = false;
        for (int r = 0; r < nf && !found; r++) found = ag_st_find(f[r], key) != NULL;
        free(key);
        if (!found) differs = t->name, how = "this config trains it, the checkpoint's run did not";
    }
    for (int r = 0; r < nf && !differs && here != there; r++)
        for (int i = 0; i < f[r]->n && !differs; i++) {
            const char *e = f[r]->entries[i].name;
            if (strncmp(e, moment, pre)) continue;
            const ag_tensor *t = gm_params_find(reg, e + pre);
            if (!t || !t->requires_grad)
                differs = e + pre, how = "the checkpoint's run trained it, this config does not";
        }
    char what[640] = "";
    if (differs)
        snprintf(what, sizeof what, "'%.500s': %s", differs, how);
    else if (here != there)
        snprintf(what, sizeof what, "%d trained tensors there, %d here", there, here);
    for (int r = 0; r < nf; r++) ag_st_close(f[r]);
    free(f);
    if (what[0])
        ag_fail("%s: trained another set of parameters (%s; trainable:, frozen: or lora: changed "
                "since): a resume continues their AdamW state; to train another set from these "
                "weights, start a new run with init.checkpoint: %s and another checkpoint.out",
                dir, what, dir);
}

void tr_ckpt_load_optim(const char *dir, const tr_ckpt_state *st, ag_adamw *opt, const tr_dist *d) {
    if (!opt) return;
    char name[64], path[PATH_MAX];
    optim_name(name, sizeof name, st->zero1 ? d->rank : 0);
    path_join(path, sizeof path, dir, name);
    ag_st_file *f = ag_st_open(path);
    const char *step = ag_st_meta(f, "adamw_step");
    char *end = NULL;
    long long s = step ? strtoll(step, &end, 10) : -1;
    if (!step || !*step || *end || s < 0) {
        ag_st_close(f);
        ag_fail("%s: missing or bad metadata 'adamw_step'", path);
    }
    if (s > st->step) { // (a skipped step makes no update: it may lag, never lead)
        ag_st_close(f);
        ag_fail("%s: metadata 'adamw_step' %lld is past the checkpoint's step %" PRId64, path, s,
                st->step);
    }
    int expect = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < opt->n; i++) {
            ag_tensor *ts[3] = {opt->m[i], opt->v[i], opt->master[i]};
            for (int k = 0; k < 3; k++) {
                if (!ts[k]) continue;
                const ag_st_entry *e = ag_st_find(f, ts[k]->name);
                if (pass == 0) {
                    check_entry(f, e, ts[k], "optimizer state", NULL);
                    ag_st_check_values(f, e, ts[k] == opt->v[i]); // (v: squares)
                    expect++;
                } else {
                    ag_st_load_into(f, e, ts[k]);
                }
            }
            if (pass == 0 && i == opt->n - 1 && f->n != expect) {
                int have = f->n;
                ag_st_close(f);
                ag_fail("%s: holds %d optimizer tensors, this run's trainable parameters need %d",
                        path, have, expect);
            }
        }
    opt->step = s;
    ag_st_close(f);
}

// A LoRA checkpoint opened for use (export, eval, generate): the adapters folded into the
// base weights, and dropped from the registry, so that every reader sees a plain model.
static void merge_lora(gm_groundinggpt *m) {
    gm_llama *l = m->llm;
    gm_params *reg = m->params;
    int k = 0;
    for (int i = 0; i < reg->n; i++) {
        bool lora = false;
        for (int j = 0; j < l->n_lora && !lora; j++) lora = reg->tensors[i] == l->lora_params[j];
        if (!lora) reg->tensors[k++] = reg->tensors[i];
    }
    reg->n = k;
    gm_llama_lora_merge(l);
    m->cfg.llm.lora = l->cfg.lora; // off
}

gm_groundinggpt *tr_ckpt_open_model(ag_ctx *ctx, const char *dir, tr_yaml **config) {
    char path[PATH_MAX];
    path_join(path, sizeof path, dir, "config.yaml");
    struct stat sb;
    if (stat(dir, &sb)) ag_fail("%s: cannot open the checkpoint: %s", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) ag_fail("%s: not a checkpoint folder", dir);
    tr_yaml *root = tr_yaml_load(path);
    gm_groundinggpt_config mc;
    tr_model_config_from_train(root, &mc);
    gm_groundinggpt *m = gm_groundinggpt_new(ctx, &mc);
    // When config.yaml's model is not the one state.json was written for (its digest, taken
    // without LoRA adapters), a weight that does not fit names config.yaml as the likely cause.
    // Not refused outright: a checkpoint converted in place to another dtype differs too.
    char hint[PATH_MAX + 96] = "";
    if (!m->llm->n_lora && ds_dir_has(dir, "state.json")) {
        tr_ckpt_state st;
        tr_ckpt_read_state(dir, &st);
        char digest[65];
        tr_ckpt_model_digest(m->params, digest);
        if (strcmp(digest, st.model_digest))
            snprintf(hint, sizeof hint,
                     "%s describes another model than state.json's (was it edited?)", path);
    }
    load_model(dir, m->params, hint[0] ? hint : NULL);
    if (m->llm->n_lora) merge_lora(m);
    *config = root;
    return m;
}

char *tr_ckpt_tokenizer_path(tr_yaml *config, const char *override, const char *cmd) {
    if (override) return ag_xstrdup(override);
    tr_yaml *ev = tr_yaml_map(config, "eval");
    const char *t = ev ? tr_yaml_str(ev, "tokenizer", NULL, NULL) : NULL;
    if (!t)
        ag_fail("%s: the checkpoint's config.yaml (%s) names no eval.tokenizer; give --tokenizer "
                "FILE",
                cmd, config->file);
    char *path = tr_config_path(tr_yaml_get(ev, "tokenizer"), t);
    struct stat sb;
    if (stat(path, &sb)) // a checkpoint copied elsewhere keeps the training machine's path
        ag_fail("%s: %s: %s (the checkpoint's eval.tokenizer, %s); give --tokenizer FILE", cmd,
                path, strerror(errno), config->file);
    return path;
}
