// testlib.c: see testlib.h.
#include "testlib.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/error.h"
#include "autograd/rng.h"

// An expected failure unwinds with longjmp past the code that would free what it allocated
// (ag_fail's contract: after a failure the process exits). LeakSanitizer is told to ignore
// what this thread allocates inside such a block, and only there.
#if defined(__SANITIZE_ADDRESS__)
#define TL_HAS_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(leak_sanitizer)
#define TL_HAS_LSAN 1
#endif
#endif
#ifdef TL_HAS_LSAN
#include <sanitizer/lsan_interface.h>
#define TL_LSAN_DISABLE() __lsan_disable()
#define TL_LSAN_ENABLE()  __lsan_enable()
#else
#define TL_LSAN_DISABLE() ((void)0)
#define TL_LSAN_ENABLE()  ((void)0)
#endif

int tl_passed, tl_failed;
jmp_buf tl_jmp;
char tl_msg[2048];

int tl_summary(const char *suite) {
    printf("%s: %d passed, %d failed\n", suite, tl_passed, tl_failed);
    return tl_failed ? 1 : 0;
}

uint64_t tl_next(tl_rng *r) {
    return ag_splitmix64(&r->s);
}

double tl_uniform(tl_rng *r) {
    return (double)(tl_next(r) >> 11) * 0x1.0p-53;
}

double tl_normal(tl_rng *r) {
    double u1 = tl_uniform(r), u2 = tl_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

int64_t tl_randint(tl_rng *r, int64_t n) {
    return (int64_t)(tl_next(r) % (uint64_t)n);
}

static void jump_handler(const char *msg) {
    snprintf(tl_msg, sizeof tl_msg, "%s", msg);
    longjmp(tl_jmp, 1);
}

void tl_catch_begin(void) {
    tl_msg[0] = 0;
    ag_set_error_handler(jump_handler);
    TL_LSAN_DISABLE();
}

void tl_catch_end(void) {
    TL_LSAN_ENABLE();
    ag_set_error_handler(NULL);
}

void tl_source_path(char *buf, size_t n, const char *rel) {
    snprintf(buf, n, "%s/%s", GROUNDC_SOURCE_DIR, rel);
}

void tl_temp_dir(char *buf, size_t n, const char *name) {
    if ((size_t)snprintf(buf, n, "/tmp/groundc_%s_XXXXXX", name) >= n || !mkdtemp(buf))
        ag_fail("%s: cannot make a temporary folder: %s", name, strerror(errno));
}

char *tl_slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return NULL;
    }
    char *s = ag_xmalloc((size_t)n + 1, path);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = 0;
    fclose(f);
    if (len) *len = got;
    return s;
}

// Reference comparisons ----------------------------------------------------------------------

int64_t tl_entry_numel(const ag_st_entry *e) {
    int64_t n = 1;
    for (int i = 0; i < e->ndim; i++) n *= e->shape[i];
    return n;
}

double *tl_entry_f64(const ag_st_entry *e) {
    int64_t n = tl_entry_numel(e);
    bool f64 = !strcmp(e->dtype, "F64");
    if (!f64 && strcmp(e->dtype, "F32"))
        ag_fail("fixture tensor %s: dtype %s, expected F64 or F32", e->name, e->dtype);
    double *v = ag_xmalloc(sizeof(double) * (size_t)(n ? n : 1), "fixture tensor");
    for (int64_t i = 0; i < n; i++) {
        if (f64) {
            memcpy(&v[i], (const char *)e->data + 8 * i, 8);
        } else {
            float x;
            memcpy(&x, (const char *)e->data + 4 * i, 4);
            v[i] = x;
        }
    }
    return v;
}

ag_tensor *tl_st_tensor(ag_ctx *ctx, const ag_st_file *f, const ag_st_entry *e, ag_dtype dt) {
    ag_shape s = {.ndim = e->ndim};
    for (int i = 0; i < e->ndim; i++) s.d[i] = e->shape[i];
    ag_dtype fdt = ag_st_dtype(f, e);
    ag_tensor *t = ag_new(ctx, ag_dtype_is_float(fdt) ? dt : fdt, s);
    ag_st_load_into(f, e, t);
    return t;
}

double *tl_tensor_f64(ag_ctx *ctx, ag_tensor *t) {
    ag_tensor *c = ag_cast(ctx, ag_contiguous(ctx, t), AG_F64);
    double *v = ag_xmalloc(sizeof(double) * (size_t)(ag_numel(c) ? ag_numel(c) : 1), "tensor copy");
    ag_copy_to_host(c, v);
    return v;
}

double tl_sample_std(ag_ctx *ctx, ag_tensor *t) {
    double *v = tl_tensor_f64(ctx, t), s = 0, s2 = 0;
    int64_t n = ag_numel(t);
    for (int64_t i = 0; i < n; i++) s += v[i], s2 += v[i] * v[i];
    free(v);
    double mean = s / (double)n;
    return sqrt(s2 / (double)n - mean * mean);
}

double tl_max_rel_err(const double *got, const double *want, int64_t n) {
    double scale = 1e-6, err = 0;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
    for (int64_t i = 0; i < n; i++) {
        double e = fabs(got[i] - want[i]);
        if (!(e <= err)) err = e; // NaN wins
    }
    return err / scale;
}

double tl_rel_err_entry(ag_ctx *ctx, ag_tensor *t, const ag_st_entry *e) {
    if (ag_numel(t) != tl_entry_numel(e)) return INFINITY;
    double *want = tl_entry_f64(e), *got = tl_tensor_f64(ctx, t);
    double err = tl_max_rel_err(got, want, ag_numel(t));
    free(want), free(got);
    return err;
}
