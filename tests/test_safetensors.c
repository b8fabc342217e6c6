// test_safetensors.c: safetensors round trips of every dtype (byte-exact), conversions on
// load, writer checks, atomic writes that leave a good file intact when they fail, refusal
// of corrupt files with one-line messages, and a cross-check against an independent Python
// reader and writer (tests/safetensors_crosscheck.py).
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "autograd/backend.h"
#include "autograd/context.h"
#include "autograd/error.h"
#include "autograd/safetensors.h"
#include "testlib.h"

#define PYTHON "/usr/bin/python3"

static char g_dir[512]; // scratch folder for this run

static void die(const char *what, const char *path);

// A path in the scratch folder. Each call gets its own buffer (never reused in a run), so
// paths can be kept for as long as the test needs them.
static const char *tpath(const char *name) {
    static char bufs[128][1024];
    static int k;
    if (k == 128) die("too many scratch paths for", name);
    char *b = bufs[k++];
    snprintf(b, sizeof bufs[0], "%s/%s", g_dir, name);
    return b;
}

static void die(const char *what, const char *path) {
    fprintf(stderr, "test_safetensors: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

static void put_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) die("cannot create", path);
    if ((n && fwrite(p, 1, n, f) != n) || fclose(f) != 0) die("cannot write", path);
}

static unsigned char *get_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open", path);
    size_t cap = 1 << 16, len = 0;
    unsigned char *buf = malloc(cap);
    if (!buf) die("out of memory reading", path);
    for (size_t got; (got = fread(buf + len, 1, cap - len, f)) > 0;) {
        len += got;
        if (len == cap && !(buf = realloc(buf, cap *= 2))) die("out of memory reading", path);
    }
    if (ferror(f) || fclose(f) != 0) die("cannot read", path);
    *n = len;
    return buf;
}

// A hand-made file: 8-byte length (declared, or the header's own when declared < 0), header
// text, data.
static void put_st(const char *path, const char *header, long long declared, const void *data,
                   size_t ndata) {
    size_t hlen = strlen(header);
    uint64_t len = declared < 0 ? hlen : (uint64_t)declared;
    size_t n = 8 + hlen + ndata;
    unsigned char *buf = malloc(n);
    if (!buf) die("out of memory for", path);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(len >> (8 * i));
    memcpy(buf + 8, header, hlen);
    if (ndata) memcpy(buf + 8 + hlen, data, ndata);
    put_bytes(path, buf, n);
    free(buf);
}

static void open_close(const char *path) {
    ag_st_close(ag_st_open(path));
}

static int count_tmp_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) die("cannot list", dir);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strstr(e->d_name, ".tmp.") != NULL;
    if (closedir(d) != 0) die("cannot close", dir);
    return n;
}

static void remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        if (chmod(path, 0755) != 0) die("cannot chmod", path);
        DIR *d = opendir(path);
        if (!d) die("cannot list", path);
        for (struct dirent *e; (e = readdir(d));) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char sub[1024];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            remove_tree(sub);
        }
        if (closedir(d) != 0 || rmdir(path) != 0) die("cannot remove", path);
    } else if (unlink(path) != 0)
        die("cannot remove", path);
}

static bool shape_is(const ag_st_entry *e, int ndim, const int64_t *shape) {
    if (e->ndim != ndim) return false;
    for (int i = 0; i < ndim; i++)
        if (e->shape[i] != shape[i]) return false;
    return true;
}

static void fill_random(tl_rng *r, void *p, size_t n) {
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++) b[i] = (unsigned char)tl_next(r);
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

// Round trip ------------------------------------------------------------------------------

static void test_round_trip(ag_device device) {
    ag_ctx *ctx = ag_ctx_new(device);
    tl_rng r = {device == AG_CPU ? 1 : 2};
    struct {
        const char *name, *st_dtype;
        ag_dtype dtype;
        ag_shape shape;
    } spec[] = {
        {"layers.0.attn.w", "F32", AG_F32, AG_SHAPE(2, 3)},
        {"layers.0.norm", "BF16", AG_BF16, AG_SHAPE(4)},
        {"f64.c", "F64", AG_F64, AG_SHAPE(2, 2, 2)},
        {"ids", "I32", AG_I32, AG_SHAPE(5)},
        {"mask", "U8", AG_U8, AG_SHAPE(3, 4)},
        {"empty", "F32", AG_F32, AG_SHAPE(0, 3)},
        {"big", "BF16", AG_BF16, AG_SHAPE(7, 11, 13, 3)},
    };
    enum { N = sizeof spec / sizeof *spec };
    ag_tensor *t[N];
    void *host[N];
    ag_st_writer *w = ag_st_writer_new();
    ag_st_add_meta(w, "format", "groundc");
    ag_st_add_meta(w, "step", "12");
    for (int i = 0; i < N; i++) {
        t[i] = ag_param(ctx, spec[i].name, spec[i].dtype, spec[i].shape);
        host[i] = malloc(ag_nbytes(t[i]) + 1);
        // random bytes, NaN payloads included: the round trip must not touch a bit
        fill_random(&r, host[i], ag_nbytes(t[i]));
        if (ag_nbytes(t[i])) ag_copy_from_host(t[i], host[i]);
        ag_st_add(w, spec[i].name, t[i]);
    }
    const uint16_t f16[3] = {0x3c00, 0x7e00, 0x8001};
    const int64_t f16_shape[1] = {3}, i64_shape[2] = {1, 2};
    const int64_t i64[2] = {-(1ll << 40), 7};
    const float scalar = 42.5f;
    ag_st_add_raw(w, "f16.raw", "F16", 1, f16_shape, f16, sizeof f16);
    ag_st_add_raw(w, "i64.raw", "I64", 2, i64_shape, i64, sizeof i64);
    ag_st_add_raw(w, "scalar", "F32", 0, NULL, &scalar, sizeof scalar);
    const char *path = tpath(device == AG_CPU ? "round_trip.safetensors" : "round_trip_gpu.st");
    ag_st_write(w, path);
    TL_CHECK(count_tmp_files(g_dir) == 0, "a temporary file was left behind");

    // The file as bytes: padded header, metadata first, data in insertion order.
    size_t fsize;
    unsigned char *bytes = get_bytes(path, &fsize);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | bytes[i];
    size_t data_bytes = sizeof f16 + sizeof i64 + sizeof scalar;
    for (int i = 0; i < N; i++) data_bytes += ag_nbytes(t[i]);
    TL_CHECK(hlen % 8 == 0, "header length %llu is not a multiple of 8", (unsigned long long)hlen);
    TL_CHECK(fsize == 8 + hlen + data_bytes, "file is %zu bytes, expected %llu", fsize,
             (unsigned long long)(8 + hlen + data_bytes));
    TL_CHECK(!memcmp(bytes + 8, "{\"__metadata__\":", 16), "header does not begin with metadata");
    TL_CHECK(bytes[8 + hlen - 1] == ' ' || bytes[8 + hlen - 1] == '}', "header padding");
    TL_CHECK(!memcmp(bytes + 8 + hlen, host[0], ag_nbytes(t[0])), "first tensor's data at 0");
    free(bytes);

    ag_st_file *f = ag_st_open(path);
    TL_CHECK(f->n == N + 3, "%d entries, expected %d", f->n, N + 3);
    TL_CHECK(f->n_meta == 2 && !strcmp(ag_st_meta(f, "format"), "groundc") &&
                 !strcmp(ag_st_meta(f, "step"), "12") && !ag_st_meta(f, "missing"),
             "metadata");
    TL_CHECK(!ag_st_find(f, "missing"), "find of a missing name");
    for (int i = 0; i < N && i < f->n; i++) {
        const ag_st_entry *e = &f->entries[i];
        TL_CHECK(!strcmp(e->name, spec[i].name), "entry %d is '%s', expected '%s'", i, e->name,
                 spec[i].name);
        TL_CHECK(ag_st_find(f, spec[i].name) == e, "find '%s'", spec[i].name);
        TL_CHECK(!strcmp(e->dtype, spec[i].st_dtype), "'%s' has dtype %s", e->name, e->dtype);
        TL_CHECK(ag_st_dtype(f, e) == spec[i].dtype, "'%s' maps to the wrong dtype", e->name);
        TL_CHECK(shape_is(e, t[i]->ndim, t[i]->shape), "'%s' has the wrong shape", e->name);
        TL_CHECK(e->nbytes == ag_nbytes(t[i]) && !memcmp(e->data, host[i], e->nbytes),
                 "'%s' data differs", e->name);
        // back into a fresh tensor of the same kind, byte-exact
        ag_tensor *back = ag_param(ctx, "back", spec[i].dtype, spec[i].shape);
        ag_st_load_into(f, e, back);
        void *got = malloc(ag_nbytes(back) + 1);
        if (ag_nbytes(back)) ag_copy_to_host(back, got);
        TL_CHECK(!memcmp(got, host[i], ag_nbytes(back)), "'%s' loads back different", e->name);
        free(got);
    }
    const ag_st_entry *e16 = ag_st_find(f, "f16.raw"), *e64 = ag_st_find(f, "i64.raw"),
                      *es = ag_st_find(f, "scalar");
    TL_CHECK(e16 && !strcmp(e16->dtype, "F16") && shape_is(e16, 1, f16_shape) &&
                 e16->nbytes == sizeof f16 && !memcmp(e16->data, f16, sizeof f16),
             "raw F16 entry");
    TL_CHECK(e64 && !strcmp(e64->dtype, "I64") && shape_is(e64, 2, i64_shape) &&
                 e64->nbytes == sizeof i64 && !memcmp(e64->data, i64, sizeof i64),
             "raw I64 entry");
    TL_CHECK(es && es->ndim == 0 && es->nbytes == 4 && !memcmp(es->data, &scalar, 4),
             "0-dim entry");
    ag_st_close(f);
    for (int i = 0; i < N; i++) free(host[i]);

    // A writer with nothing in it still makes a valid file.
    ag_st_write(ag_st_writer_new(), tpath("nothing.safetensors"));
    f = ag_st_open(tpath("nothing.safetensors"));
    TL_CHECK(f->n == 0 && f->n_meta == 0, "empty file has %d entries", f->n);
    ag_st_close(f);
    ag_ctx_free(ctx);
}

// Conversions on load ---------------------------------------------------------------------

static void test_conversions(void) {
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    const float x32[6] = {1.0f / 3, -0.0f, 1e-40f, 3.4e38f, INFINITY, -2.7f};
    const double tie = 1 + 0x1p-8; // halfway between bf16 1 and 1 + 2^-7
    const double x64[6] = {tie + 0x1p-30, -(tie + 0x1p-30), tie, 1 + 3 * 0x1p-8,
                           1e300,         3.141592653589793};
    // what x64 rounds to in bf16 when rounded once (through float it would be 1, -1, ...)
    const uint16_t x64_bf16[6] = {0x3f81, 0xbf81, 0x3f80, 0x3f82, 0x7f80, 0x4049};
    const uint16_t xbf[4] = {0x3f80, 0xc0a0, 0x0001, 0x7fc0};
    const uint16_t xf16[12] = {0x0000, 0x8000, 0x3c00, 0xc000, 0x7bff, 0x0001,
                               0x03ff, 0x0400, 0x7c00, 0xfc00, 0x7e00, 0x3555};
    const double f16_val[12] = {0,       -0.0,           1,       -2,       65504,
                                0x1p-24, 1023 * 0x1p-24, 0x1p-14, INFINITY, -INFINITY,
                                NAN,     0.333251953125};
    const int32_t ints[3] = {-5, 0, 7};
    const int64_t s23[2] = {2, 3}, s6[1] = {6}, s4[1] = {4}, s12[1] = {12}, s3[1] = {3},
                  s34[2] = {3, 4};
    float m34[12] = {0};
    ag_st_writer *w = ag_st_writer_new();
    ag_st_add_raw(w, "x32", "F32", 2, s23, x32, sizeof x32);
    ag_st_add_raw(w, "x64", "F64", 1, s6, x64, sizeof x64);
    ag_st_add_raw(w, "xbf", "BF16", 1, s4, xbf, sizeof xbf);
    ag_st_add_raw(w, "xf16", "F16", 1, s12, xf16, sizeof xf16);
    ag_st_add_raw(w, "ints", "I32", 1, s3, ints, sizeof ints);
    ag_st_add_raw(w, "m34", "F32", 2, s34, m34, sizeof m34);
    ag_st_add_raw(w, "i64", "I64", 1, s3, (int64_t[3]){1, 2, 3}, 24);
    ag_st_add_raw(w, "q4", "Q4", 1, s3, "abc", 3); // a dtype we do not know: kept as bytes
    const char *path = tpath("conversions.safetensors");
    ag_st_write(w, path);
    ag_st_file *f = ag_st_open(path);

    ag_tensor *f32_6 = ag_param(ctx, "a", AG_F32, AG_SHAPE(2, 3));
    ag_tensor *bf_6 = ag_param(ctx, "b", AG_BF16, AG_SHAPE(2, 3));
    ag_tensor *f64_6 = ag_param(ctx, "c", AG_F64, AG_SHAPE(2, 3));
    float g32[12];
    uint16_t gbf[12];
    double g64[12];
    ag_st_load_into(f, ag_st_find(f, "x32"), f32_6);
    ag_st_load_into(f, ag_st_find(f, "x32"), bf_6);
    ag_st_load_into(f, ag_st_find(f, "x32"), f64_6);
    ag_copy_to_host(f32_6, g32);
    ag_copy_to_host(bf_6, gbf);
    ag_copy_to_host(f64_6, g64);
    for (int i = 0; i < 6; i++) {
        TL_CHECK(f32_bits(g32[i]) == f32_bits(x32[i]), "F32->f32 [%d]", i);
        TL_CHECK(gbf[i] == ag_f32_to_bf16(x32[i]), "F32->bf16 [%d]: %04x", i, gbf[i]);
        TL_CHECK(g64[i] == (double)x32[i] && !signbit(g64[i]) == !signbit(x32[i]), "F32->f64 [%d]",
                 i);
    }

    ag_tensor *f32_v = ag_param(ctx, "a6", AG_F32, AG_SHAPE(6));
    ag_tensor *bf_v = ag_param(ctx, "b6", AG_BF16, AG_SHAPE(6));
    ag_tensor *f64_v = ag_param(ctx, "c6", AG_F64, AG_SHAPE(6));
    ag_st_load_into(f, ag_st_find(f, "x64"), f32_v);
    ag_st_load_into(f, ag_st_find(f, "x64"), bf_v);
    ag_st_load_into(f, ag_st_find(f, "x64"), f64_v);
    ag_copy_to_host(f32_v, g32);
    ag_copy_to_host(bf_v, gbf);
    ag_copy_to_host(f64_v, g64);
    for (int i = 0; i < 6; i++) {
        TL_CHECK(f32_bits(g32[i]) == f32_bits((float)x64[i]), "F64->f32 [%d]", i);
        TL_CHECK(gbf[i] == x64_bf16[i], "F64->bf16 [%d]: %04x, expected %04x", i, gbf[i],
                 x64_bf16[i]);
        TL_CHECK(g64[i] == x64[i], "F64->f64 [%d]", i);
    }

    ag_tensor *f32_4 = ag_param(ctx, "a4", AG_F32, AG_SHAPE(4));
    ag_tensor *bf_4 = ag_param(ctx, "b4", AG_BF16, AG_SHAPE(4));
    ag_tensor *f64_4 = ag_param(ctx, "c4", AG_F64, AG_SHAPE(4));
    ag_st_load_into(f, ag_st_find(f, "xbf"), f32_4);
    ag_st_load_into(f, ag_st_find(f, "xbf"), bf_4);
    ag_st_load_into(f, ag_st_find(f, "xbf"), f64_4);
    ag_copy_to_host(f32_4, g32);
    ag_copy_to_host(bf_4, gbf);
    ag_copy_to_host(f64_4, g64);
    for (int i = 0; i < 4; i++) {
        float want = ag_bf16_to_f32(xbf[i]);
        TL_CHECK(f32_bits(g32[i]) == f32_bits(want), "BF16->f32 [%d]", i);
        TL_CHECK(gbf[i] == xbf[i], "BF16->bf16 [%d]", i);
        TL_CHECK(isnan(want) ? isnan(g64[i]) : g64[i] == want, "BF16->f64 [%d]", i);
    }

    ag_tensor *f32_12 = ag_param(ctx, "a12", AG_F32, AG_SHAPE(12));
    ag_tensor *bf_12 = ag_param(ctx, "b12", AG_BF16, AG_SHAPE(12));
    ag_tensor *f64_12 = ag_param(ctx, "c12", AG_F64, AG_SHAPE(12));
    ag_st_load_into(f, ag_st_find(f, "xf16"), f32_12);
    ag_st_load_into(f, ag_st_find(f, "xf16"), bf_12);
    ag_st_load_into(f, ag_st_find(f, "xf16"), f64_12);
    ag_copy_to_host(f32_12, g32);
    ag_copy_to_host(bf_12, gbf);
    ag_copy_to_host(f64_12, g64);
    for (int i = 0; i < 12; i++) {
        double want = f16_val[i];
        bool nan = isnan(want);
        TL_CHECK(nan ? isnan(g32[i]) : (g32[i] == want && !signbit(g32[i]) == !signbit(want)),
                 "F16 %04x -> f32 %.9g, expected %.9g", xf16[i], g32[i], want);
        TL_CHECK(nan ? isnan(g64[i]) : (g64[i] == want && !signbit(g64[i]) == !signbit(want)),
                 "F16 %04x -> f64", xf16[i]);
        uint16_t wb = ag_f32_to_bf16((float)want);
        TL_CHECK(nan ? isnan(ag_bf16_to_f32(gbf[i])) : gbf[i] == wb,
                 "F16 %04x -> bf16 %04x, expected %04x", xf16[i], gbf[i], wb);
    }

    ag_tensor *i3 = ag_param(ctx, "i3", AG_I32, AG_SHAPE(3));
    int32_t gi[3];
    ag_st_load_into(f, ag_st_find(f, "ints"), i3);
    ag_copy_to_host(i3, gi);
    TL_CHECK(!memcmp(gi, ints, sizeof ints), "I32->i32");

    // Refusals name the file, the tensor and what differs.
    ag_tensor *m43 = ag_param(ctx, "m43", AG_F32, AG_SHAPE(4, 3));
    ag_tensor *m12 = ag_param(ctx, "m12", AG_F32, AG_SHAPE(12));
    ag_tensor *f3 = ag_param(ctx, "f3", AG_F32, AG_SHAPE(3));
    ag_tensor *u3 = ag_param(ctx, "u3", AG_U8, AG_SHAPE(3));
    const ag_st_entry *em = ag_st_find(f, "m34"), *ei = ag_st_find(f, "ints"),
                      *e64 = ag_st_find(f, "i64"), *eq = ag_st_find(f, "q4");
    TL_EXPECT_FAIL(ag_st_load_into(f, em, m43), path,
                   "tensor 'm34': file has shape [3,4], model expects [4,3]");
    TL_EXPECT_FAIL(ag_st_load_into(f, em, m12), path, "'m34'", "[3,4]", "[12]");
    TL_EXPECT_FAIL(ag_st_load_into(f, ei, f3), path, "'ints'", "cannot load I32", "f32");
    TL_EXPECT_FAIL(ag_st_load_into(f, ei, u3), path, "'ints'", "cannot load I32", "u8");
    TL_EXPECT_FAIL(
        ag_st_load_into(f, ag_st_find(f, "x32"), ag_param(ctx, "i6", AG_I32, AG_SHAPE(2, 3))), path,
        "'x32'", "cannot load F32", "i32");
    TL_EXPECT_FAIL(ag_st_load_into(f, e64, i3), path, "'i64'", "I64");
    TL_EXPECT_FAIL(ag_st_dtype(f, e64), path, "'i64'", "I64");
    TL_EXPECT_FAIL(ag_st_dtype(f, ag_st_find(f, "xf16")), path, "'xf16'", "F16");
    TL_CHECK(eq && eq->nbytes == 3 && !memcmp(eq->data, "abc", 3), "unknown dtype kept as bytes");
    TL_EXPECT_FAIL(ag_st_dtype(f, eq), path, "'q4'", "Q4");
    TL_EXPECT_FAIL(ag_st_load_into(f, eq, u3), path, "'q4'", "Q4");
    // a strided (transposed) target
    ag_tensor view = *m43;
    view.shape[0] = 3, view.shape[1] = 4, view.stride[0] = 1, view.stride[1] = 3;
    TL_EXPECT_FAIL(ag_st_load_into(f, em, &view), path, "'m34'", "not contiguous");
    ag_st_close(f);
    ag_ctx_free(ctx);
}

// Writer checks ---------------------------------------------------------------------------

static void test_writer_checks(void) {
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    ag_tensor *t = ag_param(ctx, "a", AG_F32, AG_SHAPE(2, 3));
    ag_st_writer *w = ag_st_writer_new();
    ag_st_add(w, "a", t);
    ag_st_add_meta(w, "k", "v");
    const int64_t s23[2] = {2, 3}, neg[2] = {2, -3};
    float buf[6] = {0};
    TL_EXPECT_FAIL(ag_st_add(w, "a", t), "'a'", "twice");
    TL_EXPECT_FAIL(ag_st_add_raw(w, "a", "F32", 2, s23, buf, 24), "'a'", "twice");
    TL_EXPECT_FAIL(ag_st_add(w, "__metadata__", t), "__metadata__", "reserved");
    TL_EXPECT_FAIL(ag_st_add_meta(w, "k", "again"), "'k'", "twice");
    TL_EXPECT_FAIL(ag_st_add_raw(w, "r", "F32", 2, s23, buf, 20), "'r'", "20 bytes", "needs 24");
    TL_EXPECT_FAIL(ag_st_add_raw(w, "r", "F32", 2, neg, buf, 24), "'r'", "-3");
    TL_EXPECT_FAIL(ag_st_add_raw(w, "r", "F32", 9, s23, buf, 24), "'r'", "9 dims");
    TL_EXPECT_FAIL(ag_st_add_raw(w, "r", "FLOAT32_XL", 2, s23, buf, 24), "'r'", "FLOAT32_XL");
    ag_tensor view = *ag_param(ctx, "v", AG_F32, AG_SHAPE(3, 2));
    view.shape[0] = 2, view.shape[1] = 3, view.stride[0] = 1, view.stride[1] = 2;
    TL_EXPECT_FAIL(ag_st_add(w, "v", &view), "'v'", "not contiguous");
    // the refused adds left the writer as it was
    ag_st_write(w, tpath("writer_checks.safetensors"));
    ag_st_file *f = ag_st_open(tpath("writer_checks.safetensors"));
    TL_CHECK(f->n == 1 && f->n_meta == 1 && !strcmp(ag_st_meta(f, "k"), "v"),
             "refused adds changed the writer: %d entries", f->n);
    ag_st_close(f);
    ag_ctx_free(ctx);
}

// Atomic writes ---------------------------------------------------------------------------

static ag_st_writer *writer_with(const char *name, size_t nfloats, float v) {
    float *buf = malloc(nfloats * sizeof *buf);
    if (!buf) die("out of memory", name);
    for (size_t i = 0; i < nfloats; i++) buf[i] = v + (float)i;
    ag_st_writer *w = ag_st_writer_new();
    const int64_t shape[1] = {(int64_t)nfloats};
    ag_st_add_raw(w, name, "F32", 1, shape, buf, nfloats * sizeof *buf);
    free(buf);
    return w;
}

static bool same_file(const char *path, const unsigned char *want, size_t n) {
    size_t got_n;
    unsigned char *got = get_bytes(path, &got_n);
    bool same = got_n == n && !memcmp(got, want, n);
    free(got);
    return same;
}

static void test_atomic_write(void) {
    const char *good = tpath("model.safetensors");
    ag_st_write(writer_with("w", 100, 1.0f), good);
    size_t good_n;
    unsigned char *good_bytes = get_bytes(good, &good_n);

    // into a folder that does not exist
    const char *nodir = tpath("no/such/dir/model.safetensors");
    TL_EXPECT_FAIL(ag_st_write(writer_with("w", 4, 2.0f), nodir), nodir,
                   "No such file or directory");

    // running out of room half-way: a file size limit makes write() fail with EFBIG
    // (this works as root too, unlike permissions)
    struct rlimit old;
    if (getrlimit(RLIMIT_FSIZE, &old) != 0) die("getrlimit", "RLIMIT_FSIZE");
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit small = {.rlim_cur = 4096, .rlim_max = old.rlim_max};
    if (old.rlim_max != RLIM_INFINITY && old.rlim_max < 4096) small.rlim_cur = old.rlim_max;
    if (setrlimit(RLIMIT_FSIZE, &small) != 0) die("setrlimit", "RLIMIT_FSIZE");
    TL_EXPECT_FAIL(ag_st_write(writer_with("w", 1 << 18, 3.0f), good), good, "File too large");
    if (setrlimit(RLIMIT_FSIZE, &old) != 0) die("setrlimit", "RLIMIT_FSIZE");
    signal(SIGXFSZ, old_handler);
    TL_CHECK(same_file(good, good_bytes, good_n), "a failed write damaged the existing file");
    TL_CHECK(count_tmp_files(g_dir) == 0, "a failed write left its temporary file");

    // the rename fails: the target is a non-empty folder
    const char *blocked = tpath("blocked.safetensors");
    if (mkdir(blocked, 0755) != 0) die("mkdir", blocked);
    put_bytes(tpath("blocked.safetensors/keep"), "x", 1);
    TL_EXPECT_FAIL(ag_st_write(writer_with("w", 4, 4.0f), blocked), blocked, "rename");
    TL_CHECK(count_tmp_files(g_dir) == 0, "a failed rename left its temporary file");

    // a read-only folder (root ignores permissions, so only as another user)
    if (geteuid() != 0) {
        const char *ro = tpath("ro");
        if (mkdir(ro, 0755) != 0) die("mkdir", ro);
        const char *ro_file = tpath("ro/model.safetensors");
        ag_st_write(writer_with("w", 10, 5.0f), ro_file);
        size_t ro_n;
        unsigned char *ro_bytes = get_bytes(ro_file, &ro_n);
        if (chmod(ro, 0555) != 0) die("chmod", ro);
        TL_EXPECT_FAIL(ag_st_write(writer_with("w", 10, 6.0f), ro_file), ro_file,
                       "Permission denied");
        if (chmod(ro, 0755) != 0) die("chmod", ro);
        TL_CHECK(same_file(ro_file, ro_bytes, ro_n), "read-only folder: file changed");
        TL_CHECK(count_tmp_files(ro) == 0, "read-only folder: temporary file left");
        free(ro_bytes);
    } else {
        printf("test_safetensors: running as root, skipping the read-only folder check\n");
    }

    // and a successful write replaces the file
    ag_st_write(writer_with("w", 3, 7.0f), good);
    ag_st_file *f = ag_st_open(good);
    const ag_st_entry *e = ag_st_find(f, "w");
    float v[3];
    if (e && e->nbytes == sizeof v) memcpy(v, e->data, sizeof v);
    TL_CHECK(e && e->nbytes == sizeof v && v[0] == 7 && v[2] == 9, "overwrite did not happen");
    ag_st_close(f);
    TL_CHECK(count_tmp_files(g_dir) == 0, "temporary file left after a good write");
    free(good_bytes);
}

// Corrupt files ---------------------------------------------------------------------------

static void test_corrupt(void) {
    const char *p = tpath("bad.safetensors");
    const unsigned char zeros[64] = {0};

    put_bytes(p, "", 0);
    TL_EXPECT_FAIL(open_close(p), p, "0 bytes");
    put_bytes(p, "\x02\0\0\0\0", 5);
    TL_EXPECT_FAIL(open_close(p), p, "5 bytes");
    put_st(p, "{}", 1000, NULL, 0);
    TL_EXPECT_FAIL(open_close(p), p, "header length 1000", "exceeds");
    put_st(p, "{}", 1ll << 40, zeros, 64);
    TL_EXPECT_FAIL(open_close(p), p, "header length 1099511627776");
    { // a header length over the limit that the file does hold (sparse, nothing written)
        put_st(p, "{}", 100000001, NULL, 0);
        FILE *fp = fopen(p, "r+b");
        if (!fp || ftruncate(fileno(fp), 100000016) != 0 || fclose(fp) != 0) die("truncate", p);
        TL_EXPECT_FAIL(open_close(p), p, "header length 100000001", "over the limit");
    }
    put_st(p, "{\"t\": {\"dtype\": \"F32\",", -1, NULL, 0);
    TL_EXPECT_FAIL(open_close(p), p, "not valid JSON");
    put_st(p, "{} x", -1, NULL, 0);
    TL_EXPECT_FAIL(open_close(p), p, "not valid JSON");
    put_st(p, "[1, 2]", -1, NULL, 0);
    TL_EXPECT_FAIL(open_close(p), p, "begin with '{'");
    put_st(p, " {}", -1, NULL, 0);
    TL_EXPECT_FAIL(open_close(p), p, "begin with '{'");
    put_st(p, "{}", 0, "{}", 2);
    TL_EXPECT_FAIL(open_close(p), p, "begin with '{'");
    {
        unsigned char b[8 + 4] = {4, 0, 0, 0, 0, 0, 0, 0, '{', 0, '}', ' '};
        put_bytes(p, b, sizeof b);
        TL_EXPECT_FAIL(open_close(p), p, "NUL");
    }
    put_st(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", -1, zeros, 4);
    TL_EXPECT_FAIL(open_close(p), p, "tensor 't'", "[0, 8]", "reach past the 4 bytes");
    put_st(p, "{\"lm_head.weight\":{\"dtype\":\"F32\",\"shape\":[4,4],\"data_offsets\":[0,10]}}",
           -1, zeros, 10);
    TL_EXPECT_FAIL(open_close(p), p,
                   ": tensor 'lm_head.weight': data_offsets [0, 10] hold 10 bytes but shape "
                   "[4,4] of F32 needs 64");
    put_st(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[-1,4],\"data_offsets\":[0,0]}}", -1, NULL, 0);
    TL_EXPECT_FAIL(open_close(p), p, "'t'", "shape dim 0 is -1");
    put_st(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[2,1.5],\"data_offsets\":[0,12]}}", -1, zeros,
           12);
    TL_EXPECT_FAIL(open_close(p), p, "'t'", "shape dim 1 is 1.5");
    put_st(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", -1, zeros, 8);
    TL_EXPECT_FAIL(open_close(p), p, "'t'", "shape dim 0 is a string");
    put_st(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,16]}}", -1, zeros, 16);
    TL_EXPECT_FAIL(open_close(p), p, "'t'", "shape");
    put_st(p, "{\"t\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", -1,
           zeros, 1);
    TL_EXPECT_FAIL(open_close(p), p, "'t'", "9 dims");
    put_st(p,
           "{\"t\":{\"dtype\":\"U8\",\"shape\":[4503599627370496,4503599627370496],"
           "\"data_offsets\":[0,8]}}",
           -1, zeros, 8);
    TL_EXPECT_FAIL(open_close(p), p, "'t'", "too many elements");
    put_st(p,
           "{\"t\":{\"dtype\":\"F64\",\"shape\":[2147483648,2147483648],"
           "\"data_offsets\":[0,8]}}",
           -1, zeros, 8);
    TL_EXPECT_FAIL(open_close(p), p, "'t'", "needs more than 2^64");
    put_st(p, "{\"t\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[8,4]}}", -1, zeros, 8);
    TL_EXPECT_FAIL(open_close(p), p, "'t'", "[8, 4]");
    put_st(p, "{\"t\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4,8]}}", -1, zeros, 8);
    TL_EXPECT_FAIL(open_close(p), p, "'t'", "data_offsets");
    put_st(p, "{\"t\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,-4]}}", -1, zeros, 8);
    TL_EXPECT_FAIL(open_close(p), p, "'t'", "data_offsets");
    put_st(p, "{\"t\":{\"shape\":[4],\"data_offsets\":[0,4]}}", -1, zeros, 4);
    TL_EXPECT_FAIL(open_close(p), p, "'t'", "dtype");
    put_st(p, "{\"t\":{\"dtype\":\"FLOAT32_XXL\",\"shape\":[4],\"data_offsets\":[0,4]}}", -1, zeros,
           4);
    TL_EXPECT_FAIL(open_close(p), p, "'t'", "FLOAT32_XXL");
    put_st(p, "{\"t\": 5}", -1, NULL, 0);
    TL_EXPECT_FAIL(open_close(p), p, "'t'", "not a JSON object");
    put_st(p,
           "{\"t\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
           "\"t\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}",
           -1, zeros, 8);
    TL_EXPECT_FAIL(open_close(p), p, "'t'", "twice");
    // tensors sharing bytes (a header edited so that one repeats another's offsets): refused,
    // naming both; adjacent ranges and empty tensors anywhere are fine
    put_st(p,
           "{\"q\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
           "\"k\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}",
           -1, zeros, 8);
    TL_EXPECT_FAIL(open_close(p), p, "tensors '", "share bytes", "[0, 4]");
    put_st(p,
           "{\"a\":{\"dtype\":\"U8\",\"shape\":[6],\"data_offsets\":[0,6]},"
           "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}",
           -1, zeros, 8);
    TL_EXPECT_FAIL(open_close(p), p, "'a' (data_offsets [0, 6]) and 'b' ([4, 8]) share bytes");
    put_st(p,
           "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]},"
           "\"e\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[2,2]},"
           "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}",
           -1, zeros, 8);
    {
        ag_st_file *f = ag_st_open(p); // (an error here ends the test run)
        TL_CHECK(f->n == 3, "adjacent ranges and an empty tensor inside one: %d tensors", f->n);
        ag_st_close(f);
    }
    put_st(p, "{\"__metadata__\":{\"k\":1}}", -1, NULL, 0);
    TL_EXPECT_FAIL(open_close(p), p, "__metadata__", "'k'", "not a string");
    put_st(p, "{\"__metadata__\":[\"k\"]}", -1, NULL, 0);
    TL_EXPECT_FAIL(open_close(p), p, "__metadata__", "not a JSON object");

    // a good file cut short: first in its data, then in its header
    ag_st_write(writer_with("w", 16, 1.0f), p);
    size_t n;
    unsigned char *bytes = get_bytes(p, &n);
    put_bytes(p, bytes, n - 10);
    TL_EXPECT_FAIL(open_close(p), p, "tensor 'w'", "reach past");
    put_bytes(p, bytes, 20);
    TL_EXPECT_FAIL(open_close(p), p, "header length");
    free(bytes);

    const char *missing = tpath("missing.safetensors");
    TL_EXPECT_FAIL(open_close(missing), missing, "No such file or directory");
    TL_EXPECT_FAIL(open_close(g_dir), g_dir, "not a regular file");

    // valid but unusual: escaped names, whitespace, no padding, offsets out of order, odd
    // alignment
    put_st(p,
           "{\"caf\\u00e9\" : {\"data_offsets\": [2, 6], \"shape\": [1], \"dtype\": \"F32\"},\n"
           "  \"z\": {\"dtype\": \"U8\", \"shape\": [2, 0], \"data_offsets\": [0, 0]},\n"
           "  \"b\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [0, 2]}} ",
           -1, "\x07\x09\0\0\x80\x3f", 6);
    ag_st_file *f = ag_st_open(p);
    const ag_st_entry *e = ag_st_find(f, "caf\xc3\xa9");
    float one = 0;
    if (e) memcpy(&one, e->data, 4);
    TL_CHECK(f->n == 3 && e && one == 1.0f, "escaped name or unaligned data");
    TL_CHECK(f->n == 3 && !strcmp(f->entries[1].name, "z") && f->entries[1].nbytes == 0,
             "zero-size entry");
    e = ag_st_find(f, "b");
    TL_CHECK(e && !memcmp(e->data, "\x07\x09", 2), "entry order");
    ag_st_close(f);
}

// Cross-check with an independent implementation -----------------------------------------

static bool python_ok(void) {
    if (access(PYTHON, X_OK) != 0) {
        printf("test_safetensors: %s not found, skipping the Python cross-check\n", PYTHON);
        return false;
    }
    int rc = system(PYTHON " -c 'import numpy' >/dev/null 2>&1");
    if (rc == -1 || !WIFEXITED(rc) || WEXITSTATUS(rc) != 0) {
        printf("test_safetensors: numpy missing for %s, skipping the Python cross-check\n", PYTHON);
        return false;
    }
    return true;
}

static bool run_python(const char *mode, const char *file) {
    char script[1024], cmd[4096];
    tl_source_path(script, sizeof script, "tests/safetensors_crosscheck.py");
    if (strchr(script, '\'') || strchr(file, '\'')) {
        printf("test_safetensors: a path holds a quote, cannot run the cross-check\n");
        return false;
    }
    snprintf(cmd, sizeof cmd, "%s '%s' %s '%s'", PYTHON, script, mode, file);
    fflush(stdout);
    int rc = system(cmd);
    return rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0;
}

static void test_crosscheck(void) {
    if (!python_ok()) return;
    ag_ctx *ctx = ag_ctx_new(AG_CPU);
    // groundc writes, Python reads (the formulas match safetensors_crosscheck.py)
    ag_tensor *a = ag_param(ctx, "a", AG_F32, AG_SHAPE(2, 3));
    ag_tensor *b = ag_param(ctx, "b", AG_BF16, AG_SHAPE(4));
    ag_tensor *c = ag_param(ctx, "c", AG_F64, AG_SHAPE(2, 2, 2));
    ag_tensor *d = ag_param(ctx, "d", AG_I32, AG_SHAPE(5));
    ag_tensor *e = ag_param(ctx, "e", AG_U8, AG_SHAPE(3, 4));
    ag_tensor *z = ag_param(ctx, "z", AG_F32, AG_SHAPE(0, 3));
    float av[6];
    uint16_t bv[4];
    double cv[8];
    int32_t dv[5];
    uint8_t ev[12];
    for (int i = 0; i < 6; i++) av[i] = (float)(i * 0.37 - 1);
    for (int i = 0; i < 4; i++) bv[i] = ag_f32_to_bf16((float)(i * 0.37 - 1));
    for (int i = 0; i < 8; i++) cv[i] = i * 0.1 - 0.35;
    for (int i = 0; i < 5; i++) dv[i] = i * 100003 - 250000;
    for (int i = 0; i < 12; i++) ev[i] = (uint8_t)(i * 37 % 256);
    ag_copy_from_host(a, av);
    ag_copy_from_host(b, bv);
    ag_copy_from_host(c, cv);
    ag_copy_from_host(d, dv);
    ag_copy_from_host(e, ev);
    ag_st_writer *w = ag_st_writer_new();
    ag_st_add_meta(w, "producer", "groundc");
    ag_st_add_meta(w, "note", "caf\xc3\xa9 \xe2\x9c\x93");
    ag_st_add_meta(w, "quote", "a\"b\\c");
    ag_st_add(w, "f32.a", a);
    ag_st_add(w, "bf16.b", b);
    ag_st_add(w, "f64.c", c);
    ag_st_add(w, "i32.d", d);
    ag_st_add(w, "u8.e", e);
    ag_st_add(w, "empty", z);
    const float scalar = 42.5f;
    const uint16_t f16[5] = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00};
    const int64_t s5[1] = {5};
    ag_st_add_raw(w, "scalar", "F32", 0, NULL, &scalar, 4);
    ag_st_add_raw(w, "f16.raw", "F16", 1, s5, f16, sizeof f16);
    const char *c_file = tpath("from_groundc.safetensors");
    ag_st_write(w, c_file);
    TL_CHECK(run_python("check", c_file), "Python does not read groundc's file as written");

    // Python writes, groundc reads
    const char *py_file = tpath("from_python.safetensors");
    bool wrote = run_python("write", py_file);
    TL_CHECK(wrote, "the Python writer failed");
    if (!wrote) {
        ag_ctx_free(ctx);
        return;
    }
    ag_st_file *f = ag_st_open(py_file);
    TL_CHECK(f->n == 9, "%d tensors from Python, expected 9", f->n);
    TL_CHECK(ag_st_meta(f, "format") && !strcmp(ag_st_meta(f, "format"), "pt") &&
                 ag_st_meta(f, "source") && !strcmp(ag_st_meta(f, "source"), "python"),
             "metadata from Python");
    static const char *order[] = {"w", "h", "b", "d", "i", "u", "l", "m", "tie"};
    for (int i = 0; i < 9 && i < f->n; i++)
        TL_CHECK(!strcmp(f->entries[i].name, order[i]), "entry %d is '%s'", i, f->entries[i].name);

    float g[12];
    ag_tensor *w34 = ag_param(ctx, "w", AG_F32, AG_SHAPE(3, 4));
    ag_st_load_into(f, ag_st_find(f, "w"), w34);
    ag_copy_to_host(w34, g);
    bool ok = true;
    for (int i = 0; i < 12; i++) ok &= g[i] == (float)(i * 0.37 - 1);
    TL_CHECK(ok, "F32 from Python");

    const double hv[6] = {1, -2, 65504, 0x1p-24, INFINITY, 0.3330078125};
    ag_tensor *h32 = ag_param(ctx, "h32", AG_F32, AG_SHAPE(6));
    ag_tensor *hbf = ag_param(ctx, "hbf", AG_BF16, AG_SHAPE(6));
    uint16_t gb[6];
    ag_st_load_into(f, ag_st_find(f, "h"), h32);
    ag_st_load_into(f, ag_st_find(f, "h"), hbf);
    ag_copy_to_host(h32, g);
    ag_copy_to_host(hbf, gb);
    for (int i = 0; i < 6; i++) {
        TL_CHECK(g[i] == hv[i], "F16 from Python [%d]: %.9g, expected %.9g", i, g[i], hv[i]);
        TL_CHECK(gb[i] == ag_f32_to_bf16((float)hv[i]), "F16 from Python -> bf16 [%d]", i);
    }

    // Python's bf16 rounding (torch, or its own numpy code) against ours
    const double bsrc[4] = {1.0 / 3.0, -2.7, 1e-3, 3e38};
    ag_tensor *b22 = ag_param(ctx, "b22", AG_BF16, AG_SHAPE(2, 2));
    ag_tensor *b22f = ag_param(ctx, "b22f", AG_F32, AG_SHAPE(2, 2));
    ag_st_load_into(f, ag_st_find(f, "b"), b22);
    ag_st_load_into(f, ag_st_find(f, "b"), b22f);
    ag_copy_to_host(b22, gb);
    ag_copy_to_host(b22f, g);
    for (int i = 0; i < 4; i++) {
        uint16_t want = ag_f32_to_bf16((float)bsrc[i]);
        TL_CHECK(gb[i] == want, "BF16 from Python [%d]: %04x, ours %04x", i, gb[i], want);
        TL_CHECK(g[i] == ag_bf16_to_f32(want), "BF16 from Python -> f32 [%d]", i);
    }

    ag_tensor *d64 = ag_param(ctx, "d64", AG_F64, AG_SHAPE(2));
    ag_tensor *d32 = ag_param(ctx, "d32", AG_F32, AG_SHAPE(2));
    double gd[2];
    ag_st_load_into(f, ag_st_find(f, "d"), d64);
    ag_st_load_into(f, ag_st_find(f, "d"), d32);
    ag_copy_to_host(d64, gd);
    ag_copy_to_host(d32, g);
    TL_CHECK(gd[0] == 3.141592653589793 && gd[1] == -1e300, "F64 from Python");
    TL_CHECK(g[0] == (float)3.141592653589793 && g[1] == -INFINITY, "F64 from Python -> f32");

    ag_tensor *i4 = ag_param(ctx, "i4", AG_I32, AG_SHAPE(4));
    ag_tensor *u3 = ag_param(ctx, "u3", AG_U8, AG_SHAPE(3));
    int32_t gi[4];
    uint8_t gu[3];
    ag_st_load_into(f, ag_st_find(f, "i"), i4);
    ag_st_load_into(f, ag_st_find(f, "u"), u3);
    ag_copy_to_host(i4, gi);
    ag_copy_to_host(u3, gu);
    TL_CHECK(gi[0] == INT32_MIN && gi[1] == -1 && gi[2] == 0 && gi[3] == INT32_MAX,
             "I32 from Python");
    TL_CHECK(gu[0] == 0 && gu[1] == 128 && gu[2] == 255, "U8 from Python");

    const ag_st_entry *el = ag_st_find(f, "l"), *em = ag_st_find(f, "m");
    int64_t gl[2] = {0};
    if (el && el->nbytes == sizeof gl) memcpy(gl, el->data, sizeof gl);
    TL_CHECK(el && gl[0] == -(1ll << 40) && gl[1] == 7, "I64 from Python (raw)");
    TL_CHECK(em && !strcmp(em->dtype, "BOOL") && em->nbytes == 3 && !memcmp(em->data, "\1\0\1", 3),
             "BOOL from Python (raw)");
    TL_EXPECT_FAIL(ag_st_load_into(f, el, ag_param(ctx, "l2", AG_I32, AG_SHAPE(2))), py_file, "'l'",
                   "I64");

    ag_tensor *tie = ag_param(ctx, "tie", AG_BF16, AG_SHAPE(1));
    ag_st_load_into(f, ag_st_find(f, "tie"), tie);
    ag_copy_to_host(tie, gb);
    TL_CHECK(gb[0] == 0x3f81, "F64 just above a bf16 tie rounds up once: %04x", gb[0]);
    ag_st_close(f);
    ag_ctx_free(ctx);
}

// ag_st_check_values: a NaN or an infinity in F32, F64, BF16 or F16 data is named with its index
// (in the tensor's shape); with nonneg a negative value too (and -0 is not negative); finite
// values and integer tensors pass.
static void test_check_values(void) {
    const char *p = tpath("values.safetensors");
    float f32[6] = {1, -2, 3, 4, 5, 6};
    double f64[2] = {1, -INFINITY};
    // bf16: 1.0, -0.0, +inf (0x7f80), a NaN (0x7fc1); f16: 1.0, a NaN (0x7e00), -2.0 (0xc000)
    uint16_t bf16[4] = {0x3f80, 0x8000, 0x7f80, 0x7fc1}, f16[3] = {0x3c00, 0x7e00, 0xc000};
    int32_t i32[2] = {-5, 7};
    f32[4] = NAN;
    ag_st_writer *w = ag_st_writer_new();
    ag_st_add_raw(w, "f32", "F32", 2, (int64_t[]){2, 3}, f32, sizeof f32);
    ag_st_add_raw(w, "f32_ok", "F32", 1, (int64_t[]){4}, f32, 4 * sizeof(float));
    ag_st_add_raw(w, "f64", "F64", 1, (int64_t[]){2}, f64, sizeof f64);
    ag_st_add_raw(w, "bf16_zero", "BF16", 1, (int64_t[]){2}, bf16, 2 * sizeof(uint16_t));
    ag_st_add_raw(w, "bf16", "BF16", 1, (int64_t[]){4}, bf16, sizeof bf16);
    ag_st_add_raw(w, "f16_ok", "F16", 1, (int64_t[]){1}, f16, sizeof(uint16_t));
    ag_st_add_raw(w, "f16", "F16", 1, (int64_t[]){3}, f16, sizeof f16);
    ag_st_add_raw(w, "i32", "I32", 1, (int64_t[]){2}, i32, sizeof i32);
    ag_st_write(w, p);
    ag_st_file *f = ag_st_open(p);
    TL_EXPECT_FAIL(ag_st_check_values(f, ag_st_find(f, "f32"), false), p, "tensor 'f32'",
                   "non-finite value nan at [1,1]");
    TL_EXPECT_FAIL(ag_st_check_values(f, ag_st_find(f, "f32_ok"), true), "tensor 'f32_ok'",
                   "negative value -2 at [1]");
    ag_st_check_values(f, ag_st_find(f, "f32_ok"), false); // (an error ends the run)
    TL_EXPECT_FAIL(ag_st_check_values(f, ag_st_find(f, "f64"), false), "tensor 'f64'",
                   "non-finite value -inf at [1]");
    ag_st_check_values(f, ag_st_find(f, "bf16_zero"), true);
    TL_EXPECT_FAIL(ag_st_check_values(f, ag_st_find(f, "bf16"), false), "tensor 'bf16'",
                   "non-finite value inf at [2]");
    ag_st_check_values(f, ag_st_find(f, "f16_ok"), true);
    TL_EXPECT_FAIL(ag_st_check_values(f, ag_st_find(f, "f16"), false), "tensor 'f16'",
                   "non-finite value nan at [1]");
    ag_st_check_values(f, ag_st_find(f, "i32"), true);
    tl_passed++; // the calls above that must pass did
    ag_st_close(f);
}

int main(void) {
    const char *base = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/groundc_st_XXXXXX", base && base[0] ? base : "/tmp");
    if (!mkdtemp(g_dir)) die("cannot create a folder like", g_dir);

    test_round_trip(AG_CPU);
    if (ag_cuda_available())
        test_round_trip(AG_CUDA);
    else
        printf("test_safetensors: no GPU, device round trip skipped\n");
    test_conversions();
    test_writer_checks();
    test_atomic_write();
    test_corrupt();
    test_check_values();
    test_crosscheck();

    remove_tree(g_dir);
    return tl_summary("test_safetensors");
}
