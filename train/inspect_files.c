// inspect_files.c: see inspect_files.h.
#include "inspect_files.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "autograd/error.h"
#include "autograd/torch_file.h"
#include "data/files.h"
#include "data/manifest.h"
#include "data/shard.h"
#include "train/import.h"

// Formatting -----------------------------------------------------------------------------------

const char *tr_human_count(char *buf, size_t n, int64_t x) {
    double v = (double)x;
    if (v >= 1e9)
        snprintf(buf, n, "%.2f B", v / 1e9);
    else if (v >= 1e6)
        snprintf(buf, n, "%.1f M", v / 1e6);
    else if (v >= 1e3)
        snprintf(buf, n, "%.1f K", v / 1e3);
    else
        snprintf(buf, n, "%lld", (long long)x);
    return buf;
}

const char *tr_human_bytes(char *buf, size_t n, int64_t b) {
    double v = (double)b;
    if (v >= 1024.0 * 1024 * 1024)
        snprintf(buf, n, "%.2f GiB", v / (1024.0 * 1024 * 1024));
    else if (v >= 1024.0 * 1024)
        snprintf(buf, n, "%.1f MiB", v / (1024.0 * 1024));
    else
        snprintf(buf, n, "%.1f KiB", v / 1024.0);
    return buf;
}

void tr_md_rule(FILE *out, const int *widths, int k, int left) {
    for (int i = 0; i < k; i++) {
        fputs("| ", out);
        for (int c = 0; c < widths[i] - (i >= left); c++) fputc('-', out);
        fputs(i >= left ? ": " : " ", out);
    }
    fputs("|\n", out);
}

static bool starts_with_bytes(const char *path, const void *magic, size_t n) {
    unsigned char head[16] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    size_t got = fread(head, 1, n, f);
    fclose(f);
    return got == n && !memcmp(head, magic, n);
}

bool tr_is_gguf_file(const char *path) {
    return starts_with_bytes(path, "GGUF", 4);
}

bool tr_is_hdf5_file(const char *path) {
    return starts_with_bytes(path, "\x89HDF\r\n\x1a\n", 8);
}

bool tr_is_safetensors_file(const char *path) {
    unsigned char head[9];
    struct stat st;
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    bool ok = fread(head, 1, 9, f) == 9 && !fstat(fileno(f), &st);
    fclose(f);
    uint64_t n = 0;
    for (int i = 7; ok && i >= 0; i--) n = n << 8 | head[i];
    return ok && head[8] == '{' && n + 8 <= (uint64_t)st.st_size;
}

// Tensor groups: names with their numeric components folded to N --------------------------------

typedef struct {
    char *key;
    int64_t count, params, bytes;
    int ndim;
    int64_t shape[8];
    bool mixed_shape, mixed_dtype;
    char dtype[16];
} tensor_group;

typedef struct {
    tensor_group *g;
    int n;
    int64_t cap;
    int64_t tensors, params, bytes;
} group_table;

// "model.layers.12.mlp.up_proj.weight" -> "model.layers.N.mlp.up_proj.weight".
static void fold_name(const char *name, char *out, size_t cap) {
    size_t o = 0;
    for (const char *p = name; *p && o + 2 < cap;) {
        const char *end = strchr(p, '.');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        bool digits = len > 0 && strspn(p, "0123456789") == len;
        if (digits)
            out[o++] = 'N';
        else
            for (size_t i = 0; i < len && o + 2 < cap; i++) out[o++] = p[i];
        p += len;
        if (*p == '.') out[o++] = *p++;
    }
    out[o] = 0;
}

static void group_add(group_table *t, const char *name, int ndim, const int64_t *shape,
                      const char *dtype, int64_t bytes) {
    char key[512];
    fold_name(name, key, sizeof key);
    int i = 0;
    while (i < t->n && strcmp(t->g[i].key, key)) i++;
    int64_t params = 1;
    for (int d = 0; d < ndim; d++) params *= shape[d];
    if (i == t->n) {
        t->g = ag_xgrow(t->g, &t->cap, t->n + 1, sizeof *t->g, "inspect");
        tensor_group *g = &t->g[t->n++];
        memset(g, 0, sizeof *g);
        g->key = ag_xstrdup(key);
        g->ndim = ndim;
        memcpy(g->shape, shape, sizeof(int64_t) * (size_t)ndim);
        snprintf(g->dtype, sizeof g->dtype, "%s", dtype);
    }
    tensor_group *g = &t->g[i];
    if (g->ndim != ndim || memcmp(g->shape, shape, sizeof(int64_t) * (size_t)ndim))
        g->mixed_shape = true;
    if (strcmp(g->dtype, dtype)) g->mixed_dtype = true;
    g->count++;
    g->params += params;
    g->bytes += bytes;
    t->tensors++;
    t->params += params;
    t->bytes += bytes;
}

static void group_print(const group_table *t, FILE *out) {
    int w = 23;
    for (int i = 0; i < t->n; i++)
        if ((int)strlen(t->g[i].key) > w) w = (int)strlen(t->g[i].key);
    if (w > 90) w = 90;
    fprintf(out, "| %-*s | %-22s | %-6s | %6s | %14s |\n", w, "tensors (N: any number)", "shape",
            "dtype", "count", "parameters");
    tr_md_rule(out, (const int[]){w, 22, 6, 6, 14}, 5, 3);
    for (int i = 0; i < t->n; i++) {
        const tensor_group *g = &t->g[i];
        char shape[64] = "various";
        if (!g->mixed_shape) {
            size_t o = (size_t)snprintf(shape, sizeof shape, "[");
            for (int d = 0; d < g->ndim && o < sizeof shape; d++)
                o += (size_t)snprintf(shape + o, sizeof shape - o, "%s%lld", d ? ", " : "",
                                      (long long)g->shape[d]);
            if (o < sizeof shape) snprintf(shape + o, sizeof shape - o, "]");
        }
        fprintf(out, "| %-*s | %-22s | %-6s | %6lld | %14lld |\n", w, g->key, shape,
                g->mixed_dtype ? "mixed" : g->dtype, (long long)g->count, (long long)g->params);
    }
}

static void group_free(group_table *t) {
    for (int i = 0; i < t->n; i++) free(t->g[i].key);
    free(t->g);
    memset(t, 0, sizeof *t);
}

// Weights ---------------------------------------------------------------------------------------

static bool is_file(const char *path) {
    struct stat st;
    return !stat(path, &st) && S_ISREG(st.st_mode);
}

// The fields of an HF config.json a reader looks for first.
static void print_hf_config(const char *path, FILE *out) {
    char *text = ds_read_file(path, NULL);
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(root)) ag_fail("%s: not a JSON object", path);
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    fprintf(out, "config.json: %s", cJSON_IsString(type) ? type->valuestring : "(no model_type)");
    const cJSON *a;
    cJSON_ArrayForEach(a, arch) if (cJSON_IsString(a)) fprintf(out, ", %s", a->valuestring);
    fputc('\n', out);
    static const char *const sections[] = {"", "text_config", "vision_config"};
    static const char *const keys[] = {
        "hidden_size",       "num_hidden_layers",   "num_attention_heads", "num_key_value_heads",
        "intermediate_size", "vocab_size",          "image_size",          "patch_size",
        "torch_dtype",       "vision_feature_layer"};
    for (int s = 0; s < 3; s++) {
        const cJSON *sec = s ? cJSON_GetObjectItemCaseSensitive(root, sections[s]) : root;
        if (!cJSON_IsObject(sec)) continue;
        bool any = false;
        for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(sec, keys[k]);
            if (!v || (!cJSON_IsNumber(v) && !cJSON_IsString(v))) continue;
            if (!any) fprintf(out, "  %s:", s ? sections[s] : "top level");
            fprintf(out, "%s %s ", any ? "," : "", keys[k]);
            if (cJSON_IsNumber(v))
                fprintf(out, "%.17g", v->valuedouble);
            else
                fprintf(out, "%s", v->valuestring);
            any = true;
        }
        if (any) fputc('\n', out);
    }
    cJSON_Delete(root);
}

void tr_inspect_weights(const char *path, FILE *out) {
    tr_weights *w = tr_weights_open(path);
    group_table t = {0};
    int torch = 0;
    for (int f = 0; f < w->n_files; f++) {
        const ag_st_file *file = w->files[f];
        torch += ag_pt_is_torch_file(file->path);
        for (int i = 0; i < file->n; i++) {
            const ag_st_entry *e = &file->entries[i];
            group_add(&t, e->name, e->ndim, e->shape, e->dtype, (int64_t)e->nbytes);
        }
    }
    char h[32], b[32];
    fprintf(out, "weights %s: %d %s file%s, %lld tensors, %s parameters, %s\n", path, w->n_files,
            torch == w->n_files ? "PyTorch"
            : torch             ? "PyTorch and safetensors"
                                : "safetensors",
            w->n_files == 1 ? "" : "s", (long long)t.tensors, tr_human_count(h, sizeof h, t.params),
            tr_human_bytes(b, sizeof b, t.bytes));
    for (int f = 0; f < w->n_files; f++)
        for (int m = 0; m < w->files[f]->n_meta; m++)
            fprintf(out, "metadata %s: %s = %.200s\n", w->files[f]->path, w->files[f]->meta_keys[m],
                    w->files[f]->meta_values[m]);
    struct stat st;
    if (!stat(path, &st) && S_ISDIR(st.st_mode)) {
        char *cfg = ag_xpath_join(path, "config.json");
        if (is_file(cfg)) print_hf_config(cfg, out);
        free(cfg);
    }
    fputc('\n', out);
    group_print(&t, out);
    group_free(&t);
    tr_weights_close(w);
}

// GGUF ------------------------------------------------------------------------------------------

typedef struct {
    FILE *f;
    const char *path;
    group_table tensors;
} gguf_in;

// Releases what the reader holds, then fails: "PATH: byte OFFSET: what".
__attribute__((noreturn)) static void gg_fail(gguf_in *in, const char *what) {
    long at = ftell(in->f);
    fclose(in->f);
    group_free(&in->tensors);
    ag_fail("%s: byte %ld: %s", in->path, at, what);
}

static void gg_read(gguf_in *in, void *dst, size_t n, const char *what) {
    if (fread(dst, 1, n, in->f) != n) {
        char msg[96];
        snprintf(msg, sizeof msg, "truncated in %s", what);
        gg_fail(in, msg);
    }
}

static uint64_t gg_u64(gguf_in *in, const char *what) {
    uint8_t b[8];
    gg_read(in, b, 8, what);
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

static uint32_t gg_u32(gguf_in *in, const char *what) {
    uint8_t b[4];
    gg_read(in, b, 4, what);
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

// A GGUF string (u64 length, bytes) into buf (truncated to cap - 1; the rest skipped).
static void gg_string(gguf_in *in, char *buf, size_t cap, const char *what) {
    uint64_t n = gg_u64(in, what);
    if (n > ((uint64_t)1 << 30)) gg_fail(in, "a string longer than 1 GiB");
    size_t keep = n < cap - 1 ? (size_t)n : cap - 1;
    gg_read(in, buf, keep, what);
    buf[keep] = 0;
    if (n > keep && fseek(in->f, (long)(n - keep), SEEK_CUR)) gg_fail(in, "cannot seek");
}

static const char *const gg_value_types[] = {"u8",   "i8",  "u16",   "i16", "u32", "i32", "f32",
                                             "bool", "str", "array", "u64", "i64", "f64"};
static const int gg_value_sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

// One scalar value of type t, printed (strings up to 80 bytes).
static void gg_value(gguf_in *in, uint32_t t, FILE *out) {
    if (t == 8) {
        char s[81];
        gg_string(in, s, sizeof s, "a string value");
        for (char *c = s; *c; c++)
            if (*c == '\n') *c = ' ';
        fprintf(out, "%s", s);
        return;
    }
    uint8_t b[8] = {0};
    gg_read(in, b, (size_t)gg_value_sizes[t], "a value");
    uint64_t u = 0;
    for (int i = gg_value_sizes[t] - 1; i >= 0; i--) u = u << 8 | b[i];
    switch (t) {
    case 1:
        fprintf(out, "%d", (int8_t)u);
        break;
    case 3:
        fprintf(out, "%d", (int16_t)u);
        break;
    case 5:
        fprintf(out, "%d", (int32_t)u);
        break;
    case 11:
        fprintf(out, "%lld", (long long)(int64_t)u);
        break;
    case 6: {
        float f;
        uint32_t v = (uint32_t)u;
        memcpy(&f, &v, 4);
        fprintf(out, "%g", f);
        break;
    }
    case 12: {
        double d;
        memcpy(&d, &u, 8);
        fprintf(out, "%g", d);
        break;
    }
    case 7:
        fprintf(out, "%s", u ? "true" : "false");
        break;
    default:
        fprintf(out, "%llu", (unsigned long long)u);
    }
}

static const char *gg_tensor_type(uint32_t t, char *buf, size_t n) {
    static const struct {
        uint32_t id;
        const char *name;
    } names[] = {{0, "F32"},   {1, "F16"},   {2, "Q4_0"},  {3, "Q4_1"},  {6, "Q5_0"},
                 {7, "Q5_1"},  {8, "Q8_0"},  {10, "Q2_K"}, {11, "Q3_K"}, {12, "Q4_K"},
                 {13, "Q5_K"}, {14, "Q6_K"}, {28, "F64"},  {30, "BF16"}};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (names[i].id == t) return names[i].name;
    snprintf(buf, n, "type%u", t);
    return buf;
}

void tr_inspect_gguf(const char *path, FILE *out) {
    gguf_in in = {.f = fopen(path, "rb"), .path = path};
    if (!in.f) ag_fail("%s: cannot open: %s", path, strerror(errno));
    char magic[4];
    gg_read(&in, magic, 4, "the magic");
    if (memcmp(magic, "GGUF", 4)) gg_fail(&in, "not a GGUF file (no GGUF magic)");
    uint32_t version = gg_u32(&in, "the version");
    if (version < 2 || version > 3) gg_fail(&in, "GGUF version not 2 or 3");
    uint64_t n_tensors = gg_u64(&in, "the tensor count"), n_kv = gg_u64(&in, "the key count");
    if (n_tensors > ((uint64_t)1 << 24) || n_kv > ((uint64_t)1 << 20))
        gg_fail(&in, "implausible tensor or key count");
    fprintf(out, "gguf %s: version %u, %llu tensors, %llu metadata keys\n", path, version,
            (unsigned long long)n_tensors, (unsigned long long)n_kv);
    for (uint64_t k = 0; k < n_kv; k++) {
        char key[256];
        gg_string(&in, key, sizeof key, "a metadata key");
        uint32_t t = gg_u32(&in, "a value type");
        if (t > 12) gg_fail(&in, "unknown metadata value type");
        fprintf(out, "  %s = ", key);
        if (t != 9) {
            gg_value(&in, t, out);
            fputc('\n', out);
            continue;
        }
        uint32_t et = gg_u32(&in, "an array type");
        uint64_t n = gg_u64(&in, "an array length");
        if (et > 12 || et == 9) gg_fail(&in, "unsupported array element type");
        if (n > ((uint64_t)1 << 32)) gg_fail(&in, "implausible array length");
        fprintf(out, "[%llu x %s]", (unsigned long long)n, gg_value_types[et]);
        if (et == 8) {
            for (uint64_t i = 0; i < n; i++) {
                char s[8];
                gg_string(&in, s, sizeof s, "an array string");
            }
        } else if (fseek(in.f, (long)(n * (uint64_t)gg_value_sizes[et]), SEEK_CUR)) {
            gg_fail(&in, "cannot seek");
        }
        fputc('\n', out);
    }
    group_table *t = &in.tensors;
    for (uint64_t i = 0; i < n_tensors; i++) {
        char name[256], tb[16];
        gg_string(&in, name, sizeof name, "a tensor name");
        uint32_t nd = gg_u32(&in, "a tensor's dims");
        if (nd < 1 || nd > 4) gg_fail(&in, "a tensor with other than 1 to 4 dims");
        int64_t ne[4], numel = 1;
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t v = gg_u64(&in, "a tensor dim");
            if (v > ((uint64_t)1 << 40) || __builtin_mul_overflow(numel, (int64_t)v, &numel) ||
                numel > ((int64_t)1 << 38)) // (x 2^24 tensors: no overflow)
                gg_fail(&in, "implausible tensor shape");
            ne[d] = (int64_t)v;
        }
        const char *type = gg_tensor_type(gg_u32(&in, "a tensor type"), tb, sizeof tb);
        (void)gg_u64(&in, "a tensor offset");
        group_add(t, name, (int)nd, ne, type, 0);
    }
    fclose(in.f);
    char h[32];
    fprintf(out, "\ntensors: %lld, %s parameters (shapes in ggml order, ne[0] first)\n",
            (long long)t->tensors, tr_human_count(h, sizeof h, t->params));
    group_print(t, out);
    group_free(t);
}

// Datasets and shards ---------------------------------------------------------------------------

void tr_inspect_dataset(const char *dir, bool checksums, FILE *out) {
    ds_manifest m;
    ds_manifest_read(&m, dir);
    char h[32], b[32];
    // the files' own sizes where the manifest has none (bytes is optional)
    int64_t bytes = 0;
    for (int i = 0; i < m.num_shards; i++) {
        int64_t b1 = m.shards[i].bytes;
        if (b1 < 0) {
            char *p = ag_xpath_join(dir, m.shards[i].file);
            struct stat st;
            b1 = stat(p, &st) ? 0 : (int64_t)st.st_size;
            free(p);
        }
        bytes += b1;
    }
    fprintf(out, "dataset %s: %lld samples, %lld tokens in %d shards (%s), schema %d\n", dir,
            (long long)m.num_samples, (long long)m.num_tokens, m.num_shards,
            tr_human_bytes(b, sizeof b, bytes), m.schema_version);
    fprintf(out, "tokenizer sha256 %s\n\n", m.tokenizer_digest);
    fprintf(out, "| %-14s | %10s |\n", "task", "samples");
    tr_md_rule(out, (const int[]){14, 10}, 2, 1);
    for (int i = 0; i < m.num_tasks; i++)
        fprintf(out, "| %-14s | %10lld |\n", m.tasks[i].name, (long long)m.tasks[i].count);
    fprintf(out, "\n| %-24s | %10s |\n", "source", "samples");
    tr_md_rule(out, (const int[]){24, 10}, 2, 1);
    for (int i = 0; i < m.num_sources; i++)
        fprintf(out, "| %-24s | %10lld |\n", m.sources[i].name, (long long)m.sources[i].count);
    fprintf(out, "\n| %-24s | %10s | %12s | %10s |\n", "shard", "samples", "tokens", "size");
    tr_md_rule(out, (const int[]){24, 10, 12, 10}, 4, 1);
    for (int i = 0; i < m.num_shards; i++)
        fprintf(out, "| %-24s | %10lld | %12lld | %10s |\n", m.shards[i].file,
                (long long)m.shards[i].num_samples, (long long)m.shards[i].num_tokens,
                m.shards[i].bytes >= 0 ? tr_human_bytes(b, sizeof b, m.shards[i].bytes) : "?");
    ds_manifest_verify(&m, dir, checksums);
    fprintf(out,
            "\nchecked: every shard present, valid, of the recorded size, counts%s (%s samples)\n",
            checksums ? " and SHA-256" : " (SHA-256 too with --checksums)",
            tr_human_count(h, sizeof h, m.num_samples));
    ds_manifest_free(&m);
}

void tr_inspect_shard_checksum(const char *path, FILE *out) {
    char *dir = ag_xparent_dir(path);
    const char *name = ag_base_name(path);
    if (!ds_dir_has(dir, DS_MANIFEST_NAME))
        ag_fail("%s: --checksums: no %s beside it to check it against", path, DS_MANIFEST_NAME);
    ds_manifest m;
    ds_manifest_read(&m, dir);
    int k = 0;
    while (k < m.num_shards && strcmp(m.shards[k].file, name)) k++;
    if (k == m.num_shards)
        ag_fail("%s: --checksums: %s/%s does not list it", path, dir, DS_MANIFEST_NAME);
    ds_manifest one = m; // a view of this shard's entry alone
    one.shards = &m.shards[k];
    one.num_shards = 1;
    ds_manifest_verify(&one, dir, true);
    fprintf(out, "\nchecked: size, SHA-256 and counts as %s/%s records\n", dir, DS_MANIFEST_NAME);
    ds_manifest_free(&m);
    free(dir);
}

void tr_inspect_shard(const char *path, FILE *out) {
    ds_shard *s = ds_shard_open(path);
    const ds_shard_header *hd = ds_shard_get_header(s);
    const int64_t n = hd->num_samples;
    int64_t tasks[DS_NTASKS][2] = {{0}}, *sources = calloc((size_t)hd->num_sources + 1, 8);
    int64_t min_len = n ? INT64_MAX : 0, max_len = 0, with[3] = {0};
    if (!sources) ag_fail("%s: out of memory", path);
    for (int64_t i = 0; i < n; i++) {
        ds_sample_ref r = ds_shard_sample(s, i);
        tasks[r.task][r.granularity ? 1 : 0]++;
        sources[r.source]++;
        if (r.length < min_len) min_len = r.length;
        if (r.length > max_len) max_len = r.length;
        with[0] += r.image >= 0, with[1] += r.video >= 0, with[2] += r.audio >= 0;
    }
    // supervised tokens, read in slices of samples
    int64_t supervised = 0;
    for (int64_t first = 0; first < n;) {
        int64_t count = 0;
        while (first + count < n && count < 4096) count++;
        int64_t k = ds_shard_range_tokens(s, first, count);
        int32_t *tok = ag_xmalloc(sizeof(int32_t) * (size_t)(k ? k : 1), path);
        uint8_t *mask = ag_xmalloc((size_t)(k ? k : 1), path);
        ds_shard_read_tokens(s, first, count, tok, mask);
        for (int64_t j = 0; j < k; j++) supervised += mask[j] != 0;
        free(tok);
        free(mask);
        first += count;
    }
    fprintf(out, "shard %s: schema %d, %lld samples, %lld tokens (%lld in the loss)\n", path,
            hd->schema_version, (long long)n, (long long)hd->num_tokens, (long long)supervised);
    fprintf(out, "tokenizer sha256 %s\n", hd->tokenizer_digest);
    fprintf(out, "sample length: min %lld, mean %.1f, max %lld tokens\n", (long long)min_len,
            n ? (double)hd->num_tokens / (double)n : 0.0, (long long)max_len);
    fprintf(out,
            "media: %lld images %dx%d (in %lld samples), %lld videos of %d frames %dx%d (in %lld), "
            "%lld audios of %d clips x %d frames x %d mels (in %lld)\n\n",
            (long long)hd->num_images, hd->image_size, hd->image_size, (long long)with[0],
            (long long)hd->num_videos, hd->video_frames, hd->video_size, hd->video_size,
            (long long)with[1], (long long)hd->num_audios, hd->audio_clips, hd->audio_frames,
            hd->audio_mels, (long long)with[2]);
    fprintf(out, "| %-14s | %10s | %10s | %10s |\n", "task", "samples", "coarse", "fine");
    tr_md_rule(out, (const int[]){14, 10, 10, 10}, 4, 1);
    for (int t = 0; t < DS_NTASKS; t++)
        if (tasks[t][0] + tasks[t][1])
            fprintf(out, "| %-14s | %10lld | %10lld | %10lld |\n", ds_task_name(t),
                    (long long)(tasks[t][0] + tasks[t][1]), (long long)tasks[t][0],
                    (long long)tasks[t][1]);
    fprintf(out, "\n| %-24s | %10s |\n", "source", "samples");
    tr_md_rule(out, (const int[]){24, 10}, 2, 1);
    for (int i = 0; i < hd->num_sources; i++)
        fprintf(out, "| %-24s | %10lld |\n", ds_shard_source_name(s, i), (long long)sources[i]);
    free(sources);
    ds_shard_close(s);
}
