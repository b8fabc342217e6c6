// safetensors.c: safetensors reading (mmap, every header field checked against the file)
// and atomic writing (temporary file, fsync, rename), with dtype conversion on load.
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "context.h"
#include "error.h"

// The data is little-endian and loaded with memcpy, so the host must be too.
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

#define ST_MAX_HEADER 100000000ull // the Rust library's limit; a larger header is corrupt
#define ST_MAX_DIMS   8
#define ST_MAX_COUNT  9007199254740992.0 // 2^53: JSON numbers above it are not exact

// Element sizes of the dtypes the format defines. Others are accepted when opening (their
// byte count cannot be checked) and refused when loading.
static const struct {
    const char *name;
    size_t size;
} st_dtypes[] = {
    {"F64", 8}, {"F32", 4}, {"F16", 2},  {"BF16", 2},    {"I64", 8},
    {"I32", 4}, {"I16", 2}, {"I8", 1},   {"U64", 8},     {"U32", 4},
    {"U16", 2}, {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1},
};

static size_t st_dtype_size(const char *dtype) {
    for (size_t i = 0; i < sizeof st_dtypes / sizeof *st_dtypes; i++)
        if (strcmp(st_dtypes[i].name, dtype) == 0) return st_dtypes[i].size;
    return 0;
}

// Our dtypes in the file's spelling, indexed by ag_dtype.
static const char *const st_names[AG_NDTYPES] = {"F32", "BF16", "F64", "I32", "U8"};

// Reading ---------------------------------------------------------------------------------

// What ag_st_open holds while parsing, so that a failure can release it before ag_fail
// (tests catch failures and run on; leak checkers must see nothing).
typedef struct {
    ag_st_file *f;
    int fd;
    char *header; // NUL-terminated copy for cJSON
    cJSON *root;
} st_parse;

__attribute__((noreturn, format(printf, 2, 3))) static void st_bad(st_parse *p, const char *fmt,
                                                                   ...) {
    char msg[1800];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (p->fd >= 0) close(p->fd); // failing anyway; a close error would add nothing
    cJSON_Delete(p->root);
    free(p->header);
    ag_st_close(p->f);
    ag_fail("%s", msg);
}

// A JSON number that is a non-negative integer exactly representable as a double.
static bool st_json_count(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!isfinite(d) || d < 0 || d != floor(d) || d > ST_MAX_COUNT) return false;
    *out = (uint64_t)d;
    return true;
}

// A short description of a JSON value for messages.
static const char *st_json_desc(const cJSON *v, char *buf, size_t n) {
    if (cJSON_IsNumber(v))
        snprintf(buf, n, "%.17g", v->valuedouble);
    else if (cJSON_IsString(v))
        snprintf(buf, n, "a string");
    else if (cJSON_IsArray(v))
        snprintf(buf, n, "an array");
    else if (cJSON_IsObject(v))
        snprintf(buf, n, "an object");
    else if (cJSON_IsBool(v))
        snprintf(buf, n, "a boolean");
    else
        snprintf(buf, n, "null");
    return buf;
}

static void st_parse_meta(st_parse *p, const cJSON *meta) {
    ag_st_file *f = p->f;
    if (f->meta_keys) st_bad(p, "%s: __metadata__ appears twice in the header", f->path);
    if (!cJSON_IsObject(meta)) st_bad(p, "%s: __metadata__ is not a JSON object", f->path);
    int n = cJSON_GetArraySize(meta);
    f->meta_keys = ag_xcalloc((size_t)n, sizeof *f->meta_keys, "safetensors metadata");
    f->meta_values = ag_xcalloc((size_t)n, sizeof *f->meta_values, "safetensors metadata");
    for (const cJSON *it = meta->child; it; it = it->next) {
        if (!cJSON_IsString(it))
            st_bad(p, "%s: __metadata__ value of '%s' is not a string", f->path, it->string);
        if (ag_st_meta(f, it->string))
            st_bad(p, "%s: __metadata__ key '%s' appears twice", f->path, it->string);
        f->meta_keys[f->n_meta] = ag_xstrdup(it->string);
        f->meta_values[f->n_meta++] = ag_xstrdup(it->valuestring);
    }
}

static void st_parse_entry(st_parse *p, const cJSON *it, const uint8_t *data, size_t data_size) {
    ag_st_file *f = p->f;
    const char *path = f->path, *name = it->string;
    if (ag_st_find(f, name)) st_bad(p, "%s: tensor '%s' appears twice in the header", path, name);
    ag_st_entry *e = &f->entries[f->n++];
    e->name = ag_xstrdup(name);
    char desc[64];
    if (!cJSON_IsObject(it)) st_bad(p, "%s: tensor '%s': entry is not a JSON object", path, name);

    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
    if (!cJSON_IsString(dt))
        st_bad(p, "%s: tensor '%s': dtype is missing or not a string", path, name);
    if (strlen(dt->valuestring) >= sizeof e->dtype || !dt->valuestring[0])
        st_bad(p, "%s: tensor '%s': dtype '%s' is not a safetensors dtype", path, name,
               dt->valuestring);
    strcpy(e->dtype, dt->valuestring);

    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
    if (!cJSON_IsArray(sh))
        st_bad(p, "%s: tensor '%s': shape is missing or not an array", path, name);
    int nd = cJSON_GetArraySize(sh);
    if (nd > ST_MAX_DIMS)
        st_bad(p, "%s: tensor '%s': shape has %d dims, at most %d are supported", path, name, nd,
               ST_MAX_DIMS);
    for (const cJSON *d = sh->child; d; d = d->next) {
        uint64_t v;
        if (!st_json_count(d, &v))
            st_bad(p, "%s: tensor '%s': shape dim %d is %s, not a non-negative integer", path, name,
                   e->ndim, st_json_desc(d, desc, sizeof desc));
        e->shape[e->ndim++] = (int64_t)v;
    }
    char shape_s[200];
    ag_format_dims(shape_s, sizeof shape_s, e->ndim, e->shape);
    uint64_t numel = 1;
    bool zero = false, huge = false; // huge: past 2^63 elements, which no file holds
    for (int i = 0; i < e->ndim; i++) {
        uint64_t v = (uint64_t)e->shape[i];
        if (!v)
            zero = true;
        else if (numel > (uint64_t)INT64_MAX / v)
            huge = true;
        else
            numel *= v;
    }
    if (zero) numel = 0;
    if (huge && !zero)
        st_bad(p, "%s: tensor '%s': shape %s has too many elements", path, name, shape_s);

    const cJSON *off = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
    uint64_t begin, end;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || !st_json_count(off->child, &begin) ||
        !st_json_count(off->child->next, &end))
        st_bad(p, "%s: tensor '%s': data_offsets is not [begin, end] with non-negative integers",
               path, name);
    if (begin > end)
        st_bad(p, "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin", path, name,
               (unsigned long long)begin, (unsigned long long)end);
    if (end > data_size)
        st_bad(p,
               "%s: tensor '%s': data_offsets [%llu, %llu] reach past the %zu bytes of data "
               "(file truncated?)",
               path, name, (unsigned long long)begin, (unsigned long long)end, data_size);
    size_t esize = st_dtype_size(e->dtype);
    if (esize && (numel > SIZE_MAX / esize || end - begin != numel * esize)) {
        char need[32];
        if (numel > SIZE_MAX / esize)
            snprintf(need, sizeof need, "more than 2^64");
        else
            snprintf(need, sizeof need, "%llu", (unsigned long long)(numel * esize));
        st_bad(p,
               "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but shape %s of %s "
               "needs %s",
               path, name, (unsigned long long)begin, (unsigned long long)end,
               (unsigned long long)(end - begin), shape_s, e->dtype, need);
    }
    e->data = data + begin;
    e->nbytes = (size_t)(end - begin);
}

// Entries by where their bytes begin (ties: the shorter first), for st_check_overlaps.
static int st_by_begin(const void *a, const void *b) {
    const ag_st_entry *x = *(const ag_st_entry *const *)a, *y = *(const ag_st_entry *const *)b;
    const uint8_t *xa = x->data, *ya = y->data;
    if (xa != ya) return xa < ya ? -1 : 1;
    return (x->nbytes > y->nbytes) - (x->nbytes < y->nbytes);
}

// No two tensors share bytes (the format forbids it; a header edited so that one tensor's
// offsets repeat another's would load it as the other's copy).
static void st_check_overlaps(st_parse *p, const uint8_t *data) {
    ag_st_file *f = p->f;
    const ag_st_entry **by = ag_xcalloc((size_t)f->n + 1, sizeof *by, "safetensors entries");
    int n = 0;
    for (int i = 0; i < f->n; i++)
        if (f->entries[i].nbytes) by[n++] = &f->entries[i];
    qsort(by, (size_t)n, sizeof *by, st_by_begin);
    for (int i = 1; i < n; i++) {
        const ag_st_entry *a = by[i - 1], *b = by[i];
        const uint8_t *a_end = (const uint8_t *)a->data + a->nbytes;
        if ((const uint8_t *)b->data >= a_end) continue;
        size_t ab = (size_t)((const uint8_t *)a->data - data);
        size_t bb = (size_t)((const uint8_t *)b->data - data);
        char an[300], bn[300];
        snprintf(an, sizeof an, "%s", a->name);
        snprintf(bn, sizeof bn, "%s", b->name);
        free(by);
        st_bad(p, "%s: tensors '%s' (data_offsets [%zu, %zu]) and '%s' ([%zu, %zu]) share bytes",
               f->path, an, ab, ab + a->nbytes, bn, bb, bb + b->nbytes);
    }
    free(by);
}

ag_st_file *ag_st_open(const char *path) {
    ag_st_file *f = ag_xcalloc(1, sizeof *f, "safetensors file");
    f->path = ag_xstrdup(path);
    st_parse p = {.f = f, .fd = open(path, O_RDONLY | O_CLOEXEC)};
    if (p.fd < 0) st_bad(&p, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(p.fd, &st) != 0) st_bad(&p, "%s: cannot stat: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) st_bad(&p, "%s: not a regular file", path);
    if (st.st_size < 8)
        st_bad(&p,
               "%s: file is %lld bytes, too short for a safetensors file (8-byte header "
               "length first)",
               path, (long long)st.st_size);
    f->map_size = (size_t)st.st_size;
    void *map = mmap(NULL, f->map_size, PROT_READ, MAP_PRIVATE, p.fd, 0);
    if (map == MAP_FAILED) st_bad(&p, "%s: cannot map: %s", path, strerror(errno));
    f->map = map;
    int fd = p.fd;
    p.fd = -1;
    if (close(fd) != 0) st_bad(&p, "%s: cannot close: %s", path, strerror(errno));

    const uint8_t *bytes = map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | bytes[i];
    size_t avail = f->map_size - 8;
    if (hlen > avail)
        st_bad(&p,
               "%s: header length %llu exceeds the %zu bytes after it (truncated or not "
               "safetensors)",
               path, (unsigned long long)hlen, avail);
    if (hlen > ST_MAX_HEADER)
        st_bad(&p, "%s: header length %llu is over the limit of %llu bytes", path,
               (unsigned long long)hlen, ST_MAX_HEADER);
    // As the format (and the Rust library) demands; trailing spaces are allowed padding.
    if (hlen == 0 || bytes[8] != '{') st_bad(&p, "%s: header does not begin with '{'", path);
    // cJSON wants a terminated string; a NUL inside would end the header early unnoticed.
    if (memchr(bytes + 8, 0, hlen)) st_bad(&p, "%s: header contains a NUL byte", path);
    p.header = ag_xmalloc(hlen + 1, "safetensors header");
    memcpy(p.header, bytes + 8, hlen);
    p.header[hlen] = 0;
    const char *stop = NULL;
    p.root = cJSON_ParseWithOpts(p.header, &stop, 1);
    if (!p.root)
        st_bad(&p, "%s: header is not valid JSON (error near byte %lld of %llu)", path,
               stop ? (long long)(stop - p.header) : -1LL, (unsigned long long)hlen);
    if (!cJSON_IsObject(p.root)) st_bad(&p, "%s: header is not a JSON object", path);

    int n = cJSON_GetArraySize(p.root);
    f->entries = ag_xcalloc((size_t)n, sizeof *f->entries, "safetensors entries");
    const uint8_t *data = bytes + 8 + hlen;
    size_t data_size = avail - (size_t)hlen;
    for (const cJSON *it = p.root->child; it; it = it->next) {
        if (strcmp(it->string, "__metadata__") == 0)
            st_parse_meta(&p, it);
        else
            st_parse_entry(&p, it, data, data_size);
    }
    st_check_overlaps(&p, data);
    cJSON_Delete(p.root);
    free(p.header);
    return f;
}

void ag_st_close(ag_st_file *f) {
    if (!f) return;
    if (f->map && munmap(f->map, f->map_size) != 0)
        ag_fail("%s: cannot unmap: %s", f->path, strerror(errno));
    for (int i = 0; i < f->n; i++) free(f->entries[i].name);
    free(f->entries);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->meta_keys);
    free(f->meta_values);
    for (int i = 0; i < f->n_owned; i++) free(f->owned[i]);
    free(f->owned);
    free(f->path);
    free(f);
}

const ag_st_entry *ag_st_find(const ag_st_file *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->entries[i].name, name) == 0) return &f->entries[i];
    return NULL;
}

const char *ag_st_meta(const ag_st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

ag_dtype ag_st_dtype(const ag_st_file *f, const ag_st_entry *e) {
    for (int d = 0; d < AG_NDTYPES; d++)
        if (strcmp(st_names[d], e->dtype) == 0) return (ag_dtype)d;
    ag_fail("%s: tensor '%s': dtype %s is not one groundc holds (F32, BF16, F64, I32, U8)", f->path,
            e->name, e->dtype);
}

// IEEE half to float; exact (every half is a float).
static float st_f16_to_f32(uint16_t h) {
    int exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    float v;
    if (exp == 0)
        v = ldexpf((float)man, -24); // zero and subnormals
    else if (exp == 31)
        v = man ? NAN : INFINITY;
    else
        v = ldexpf((float)(man | 0x400), exp - 25);
    return (h & 0x8000) ? -v : v;
}

// Rounds d to bf16 once, to nearest even. Rounding to float first would round twice (a value
// just above a bf16 halfway point can become the halfway point); rounding to float "to odd"
// keeps a sticky bit, and with 16 spare bits the final rounding is then correct.
static uint16_t st_f64_to_bf16(double d) {
    float f = (float)d;
    if (!isnan(d) && (double)f != d) {
        if (fabs((double)f) > fabs(d)) f = nextafterf(f, 0.0f); // toward zero
        union {
            float f;
            uint32_t u;
        } v = {.f = f};
        v.u |= 1u;
        f = v.f;
    }
    return ag_f32_to_bf16(f);
}

static bool st_is_float(const char *dtype) {
    return !strcmp(dtype, "F32") || !strcmp(dtype, "F64") || !strcmp(dtype, "BF16") ||
           !strcmp(dtype, "F16");
}

// Element i of a float entry as a double (exact for every source dtype). memcpy because
// data in the mapping need not be aligned.
static double st_read_float(const ag_st_entry *e, size_t i) {
    const uint8_t *p = e->data;
    if (!strcmp(e->dtype, "F64")) {
        double v;
        memcpy(&v, p + 8 * i, 8);
        return v;
    }
    if (!strcmp(e->dtype, "F32")) {
        float v;
        memcpy(&v, p + 4 * i, 4);
        return v;
    }
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    return !strcmp(e->dtype, "BF16") ? ag_bf16_to_f32(h) : st_f16_to_f32(h);
}

void ag_st_load_into(const ag_st_file *f, const ag_st_entry *e, ag_tensor *t) {
    char want[200], have[200];
    if (!ag_is_contiguous(t))
        ag_fail("%s: tensor '%s': the model's tensor %s is not contiguous", f->path, e->name,
                ag_describe(t, want, sizeof want));
    bool same = e->ndim == t->ndim;
    for (int i = 0; same && i < t->ndim; i++) same = e->shape[i] == t->shape[i];
    if (!same)
        ag_fail("%s: tensor '%s': file has shape %s, model expects %s", f->path, e->name,
                ag_format_dims(have, sizeof have, e->ndim, e->shape),
                ag_format_dims(want, sizeof want, t->ndim, t->shape));
    size_t n = (size_t)ag_numel(t);
    if (!strcmp(e->dtype, st_names[t->dtype])) {
        // The byte count was checked at open; the mapping is a valid host source as it is.
        if (n) ag_copy_from_host(t, e->data);
        return;
    }
    if (!ag_dtype_is_float(t->dtype) || !st_is_float(e->dtype))
        ag_fail("%s: tensor '%s': cannot load %s data into a %s tensor", f->path, e->name, e->dtype,
                ag_dtype_name(t->dtype));
    if (!n) return;
    void *buf = ag_xmalloc(n * ag_dtype_size(t->dtype), "safetensors conversion");
    for (size_t i = 0; i < n; i++) {
        double v = st_read_float(e, i);
        if (t->dtype == AG_F64)
            ((double *)buf)[i] = v;
        else if (t->dtype == AG_F32)
            ((float *)buf)[i] = (float)v;
        else
            ((uint16_t *)buf)[i] = st_f64_to_bf16(v);
    }
    ag_copy_from_host(t, buf);
    free(buf);
}

// The index of the first element of e that is not finite (or, with nonneg, negative); -1 when
// there is none. Non-float entries have none.
static int64_t st_first_bad(const ag_st_entry *e, bool nonneg) {
    size_t n = 1;
    for (int d = 0; d < e->ndim; d++) n *= (size_t)e->shape[d];
    const uint8_t *p = e->data;
    bool f16 = !strcmp(e->dtype, "F16"), bf16 = !strcmp(e->dtype, "BF16");
    if (f16 || bf16) { // by the bits: an all-ones exponent is inf or NaN; the sign bit, negative
        uint16_t exp = f16 ? 0x7c00 : 0x7f80;
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            if ((h & exp) == exp || (nonneg && (h & 0x8000) && (h & 0x7fff))) return (int64_t)i;
        }
        return -1;
    }
    if (strcmp(e->dtype, "F32") && strcmp(e->dtype, "F64")) return -1;
    for (size_t i = 0; i < n; i++) {
        double v = st_read_float(e, i);
        if (!isfinite(v) || (nonneg && v < 0)) return (int64_t)i;
    }
    return -1;
}

void ag_st_check_values(const ag_st_file *f, const ag_st_entry *e, bool nonneg) {
    int64_t i = st_first_bad(e, nonneg);
    if (i < 0) return;
    int64_t at[8], rest = i;
    for (int d = e->ndim - 1; d >= 0; d--) {
        at[d] = e->shape[d] ? rest % e->shape[d] : 0;
        rest = e->shape[d] ? rest / e->shape[d] : 0;
    }
    char idx[200];
    ag_format_dims(idx, sizeof idx, e->ndim, at);
    double v = st_read_float(e, (size_t)i);
    ag_fail("%s: tensor '%s': %s value %g at %s (a damaged or diverged file)", f->path, e->name,
            isfinite(v) ? "negative" : "non-finite", v, idx);
}

// Writing ---------------------------------------------------------------------------------

typedef struct {
    char *name;
    char dtype[8];
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    void *data; // host copy
    size_t nbytes;
} st_item;

struct ag_st_writer {
    int n;
    int64_t cap;
    st_item *items;
    int n_meta;
    int64_t meta_cap;
    char **meta_keys, **meta_values;
};

ag_st_writer *ag_st_writer_new(void) {
    return ag_xcalloc(1, sizeof(ag_st_writer), "safetensors writer");
}

void ag_st_writer_free(ag_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) {
        free(w->items[i].name);
        free(w->items[i].data);
    }
    free(w->items);
    for (int i = 0; i < w->n_meta; i++) {
        free(w->meta_keys[i]);
        free(w->meta_values[i]);
    }
    free(w->meta_keys);
    free(w->meta_values);
    free(w);
}

// Checks name, dtype and shape before anything is allocated, so a refused add leaves the
// writer as it was; returns the new slot with name, dtype and shape filled in.
static st_item *st_new_item(ag_st_writer *w, const char *name, const char *dtype, int ndim,
                            const int64_t *shape) {
    if (!name || !name[0]) ag_fail("safetensors writer: empty tensor name");
    if (!strcmp(name, "__metadata__"))
        ag_fail("safetensors writer: '__metadata__' is reserved, not a tensor name");
    for (int i = 0; i < w->n; i++)
        if (!strcmp(w->items[i].name, name))
            ag_fail("safetensors writer: tensor '%s' added twice", name);
    if (strlen(dtype) >= sizeof w->items->dtype || !dtype[0])
        ag_fail("safetensors writer: tensor '%s': dtype '%s' is not a safetensors dtype", name,
                dtype);
    if (ndim < 0 || ndim > ST_MAX_DIMS)
        ag_fail("safetensors writer: tensor '%s': %d dims, at most %d are supported", name, ndim,
                ST_MAX_DIMS);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0)
            ag_fail("safetensors writer: tensor '%s': negative dim %lld", name,
                    (long long)shape[i]);
    w->items = ag_xgrow(w->items, &w->cap, w->n + 1, sizeof *w->items, "safetensors writer");
    st_item *it = &w->items[w->n];
    *it = (st_item){.ndim = ndim};
    strcpy(it->dtype, dtype);
    if (ndim) memcpy(it->shape, shape, (size_t)ndim * sizeof *shape); // shape may be NULL
    return it;
}

void ag_st_add(ag_st_writer *w, const char *name, const ag_tensor *t) {
    char desc[200];
    if (!ag_is_contiguous(t))
        ag_fail("safetensors writer: tensor '%s': %s is not contiguous", name,
                ag_describe(t, desc, sizeof desc));
    st_item *it = st_new_item(w, name, st_names[t->dtype], t->ndim, t->shape);
    it->nbytes = ag_nbytes(t);
    it->data = ag_xmalloc(it->nbytes, "safetensors tensor copy");
    if (it->nbytes) ag_copy_to_host(t, it->data);
    it->name = ag_xstrdup(name);
    w->n++;
}

void ag_st_add_raw(ag_st_writer *w, const char *name, const char *dtype, int ndim,
                   const int64_t *shape, const void *data, size_t nbytes) {
    st_item *it = st_new_item(w, name, dtype, ndim, shape);
    size_t esize = st_dtype_size(dtype);
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++) numel *= (uint64_t)shape[i];
    if (esize && numel * esize != nbytes) {
        char s[200];
        ag_fail("safetensors writer: tensor '%s': %zu bytes given but shape %s of %s needs %llu",
                name, nbytes, ag_format_dims(s, sizeof s, ndim, shape), dtype,
                (unsigned long long)(numel * esize));
    }
    it->nbytes = nbytes;
    it->data = ag_xmalloc(nbytes, "safetensors tensor copy");
    if (nbytes) memcpy(it->data, data, nbytes);
    it->name = ag_xstrdup(name);
    w->n++;
}

void ag_st_add_meta(ag_st_writer *w, const char *key, const char *value) {
    for (int i = 0; i < w->n_meta; i++)
        if (!strcmp(w->meta_keys[i], key))
            ag_fail("safetensors writer: metadata key '%s' added twice", key);
    if (w->n_meta == w->meta_cap) { // keys pick the capacity; values, alongside, follow
        w->meta_keys = ag_xgrow(w->meta_keys, &w->meta_cap, w->n_meta + 1, sizeof *w->meta_keys,
                                "safetensors metadata");
        w->meta_values = ag_xrealloc(w->meta_values, (size_t)w->meta_cap * sizeof *w->meta_values,
                                     "safetensors metadata");
    }
    w->meta_keys[w->n_meta] = ag_xstrdup(key);
    w->meta_values[w->n_meta++] = ag_xstrdup(value);
}

static void *st_json_ok(void *p) {
    if (!p) ag_fail("out of memory building a safetensors header");
    return p;
}

// Integers as raw JSON text: cJSON numbers are doubles, printed with %g past INT_MAX.
static void st_json_int(cJSON *array, uint64_t v) {
    char s[24];
    snprintf(s, sizeof s, "%llu", (unsigned long long)v);
    if (!cJSON_AddItemToArray(array, st_json_ok(cJSON_CreateRaw(s))))
        ag_fail("out of memory building a safetensors header");
}

// The header: "__metadata__" first, then the tensors in insertion order, data laid out in
// the same order.
static char *st_header_json(const ag_st_writer *w) {
    cJSON *root = st_json_ok(cJSON_CreateObject());
    if (w->n_meta) {
        cJSON *meta = st_json_ok(cJSON_AddObjectToObject(root, "__metadata__"));
        for (int i = 0; i < w->n_meta; i++)
            st_json_ok(cJSON_AddStringToObject(meta, w->meta_keys[i], w->meta_values[i]));
    }
    uint64_t offset = 0;
    for (int i = 0; i < w->n; i++) {
        const st_item *it = &w->items[i];
        cJSON *obj = st_json_ok(cJSON_AddObjectToObject(root, it->name));
        st_json_ok(cJSON_AddStringToObject(obj, "dtype", it->dtype));
        cJSON *shape = st_json_ok(cJSON_AddArrayToObject(obj, "shape"));
        for (int d = 0; d < it->ndim; d++) st_json_int(shape, (uint64_t)it->shape[d]);
        cJSON *offs = st_json_ok(cJSON_AddArrayToObject(obj, "data_offsets"));
        st_json_int(offs, offset);
        st_json_int(offs, offset + it->nbytes);
        offset += it->nbytes;
    }
    char *json = st_json_ok(cJSON_PrintUnformatted(root));
    cJSON_Delete(root);
    return json;
}

// Releases everything (the temporary file included) and fails naming path and the cause.
__attribute__((noreturn)) static void st_write_fail(ag_st_writer *w, char *json, char *tmp,
                                                    FILE *fp, const char *path, const char *what,
                                                    int err) {
    char msg[1800];
    snprintf(msg, sizeof msg, "%s: %s: %s", path, what, strerror(err ? err : EIO));
    // Already failing: errors from closing or removing the broken temporary add nothing.
    if (fp) fclose(fp);
    if (tmp) remove(tmp);
    free(json);
    free(tmp);
    ag_st_writer_free(w);
    ag_fail("%s", msg);
}

static bool st_fwrite(FILE *fp, const void *p, size_t n) {
    errno = 0;
    return n == 0 || fwrite(p, 1, n, fp) == n;
}

void ag_st_write(ag_st_writer *w, const char *path) {
    char *json = st_header_json(w);
    size_t hlen = strlen(json);
    size_t padded = (hlen + 7) / 8 * 8; // as the Rust library: data starts 8-byte aligned
    size_t tmp_size = strlen(path) + 32;
    char *tmp = ag_xmalloc(tmp_size, "safetensors temporary path");
    snprintf(tmp, tmp_size, "%s.tmp.%ld", path, (long)getpid());

    FILE *fp = fopen(tmp, "wb");
    if (!fp) {
        int err = errno;
        free(tmp); // not created: nothing to remove
        st_write_fail(w, json, NULL, NULL, path, "cannot create the temporary file", err);
    }
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    static const char spaces[8] = "       ";
    bool ok =
        st_fwrite(fp, len, 8) && st_fwrite(fp, json, hlen) && st_fwrite(fp, spaces, padded - hlen);
    for (int i = 0; ok && i < w->n; i++) ok = st_fwrite(fp, w->items[i].data, w->items[i].nbytes);
    if (!ok) st_write_fail(w, json, tmp, fp, path, "write failed", errno);
    if (fflush(fp) != 0) st_write_fail(w, json, tmp, fp, path, "write failed", errno);
    if (fsync(fileno(fp)) != 0) st_write_fail(w, json, tmp, fp, path, "fsync failed", errno);
    if (fclose(fp) != 0) st_write_fail(w, json, tmp, NULL, path, "close failed", errno);
    if (rename(tmp, path) != 0)
        st_write_fail(w, json, tmp, NULL, path, "cannot rename the temporary file into place",
                      errno);
    free(json);
    free(tmp);
    ag_st_writer_free(w);
    ag_sync_parent(path); // the new name reaches the disk only with its folder
}
