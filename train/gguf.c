// gguf.c: see gguf.h. Layout (llama.cpp's gguf.cpp, version 3, little-endian):
//   "GGUF" u32 version, u64 n_tensors, u64 n_kv
//   n_kv x (string key, u32 type, value)        string = u64 length + bytes, no NUL
//   n_tensors x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset)
//   zero padding to the alignment, then the data; each tensor's offset (from the data start)
//   is a multiple of the alignment.
#include "train/gguf.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/error.h"
#include "autograd/tensor.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c writes the host's byte order; GGUF files are little-endian"
#endif

#define ALIGNMENT 32

// GGUF metadata value types (gguf.h's enum gguf_type).
enum { KV_U32 = 4, KV_I32 = 5, KV_F32 = 6, KV_BOOL = 7, KV_STRING = 8, KV_ARRAY = 9 };

typedef struct {
    char *name;
    int ndim;
    int64_t ne[4];
    tr_gguf_type type;
    tr_gguf_fill fill;
    const void *arg;
    uint64_t offset, bytes;
} tensor;

struct tr_gguf {
    uint8_t *kv; // the serialized key/value section
    size_t kv_len;
    int64_t kv_cap;
    int64_t n_kv, keys_cap;
    char **keys;
    tensor *t;
    int64_t n_t, cap_t;
};

const char *tr_gguf_type_name(tr_gguf_type t) {
    switch (t) {
    case TR_GGUF_F32:
        return "f32";
    case TR_GGUF_F16:
        return "f16";
    case TR_GGUF_Q8_0:
        return "q8_0";
    case TR_GGUF_BF16:
        return "bf16";
    }
    return "?";
}

uint64_t tr_gguf_row_bytes(tr_gguf_type t, int64_t n) {
    switch (t) {
    case TR_GGUF_F32:
        return 4 * (uint64_t)n;
    case TR_GGUF_F16:
    case TR_GGUF_BF16:
        return 2 * (uint64_t)n;
    case TR_GGUF_Q8_0:
        return (uint64_t)(n / TR_GGUF_QK8_0) * (2 + TR_GGUF_QK8_0);
    }
    return 0;
}

uint16_t tr_gguf_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t a = x & 0x7fffffff;
    if (a > 0x7f800000) return sign | 0x7e00;  // NaN
    if (a >= 0x477ff000) return sign | 0x7c00; // >= 65520 rounds to infinity
    if (a < 0x38800000) {                      // below 2^-14: a multiple of 2^-24 or zero
        float v;
        memcpy(&v, &a, 4);
        return sign | (uint16_t)rintf(v * 16777216.0f); // exact scaling, ties to even
    }
    uint32_t h = ((a >> 23) - 112) << 10 | (a >> 13 & 0x3ff), rest = a & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++; // a carry moves into the exponent
    return sign | (uint16_t)h;
}

float tr_gguf_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = h >> 10 & 0x1f, m = h & 0x3ff, x;
    if (e == 0) { // zero or subnormal: m * 2^-24
        float v = (float)m / 16777216.0f;
        memcpy(&x, &v, 4);
        x |= sign;
    } else if (e == 31) {
        x = sign | 0x7f800000 | m << 13;
    } else {
        x = sign | (e + 112) << 23 | m << 13;
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

void tr_gguf_quantize_q8_0(const float *x, uint8_t out[2 + TR_GGUF_QK8_0]) {
    float amax = 0;
    for (int j = 0; j < TR_GGUF_QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
    const float d = amax / 127, id = d != 0 ? 1.0f / d : 0.0f;
    uint16_t dh = tr_gguf_f32_to_f16(d);
    memcpy(out, &dh, 2);
    for (int j = 0; j < TR_GGUF_QK8_0; j++) out[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
}

// Metadata ---------------------------------------------------------------------------------------

tr_gguf *tr_gguf_new(void) {
    return ag_xcalloc(1, sizeof(tr_gguf), "gguf writer");
}

void tr_gguf_free(tr_gguf *g) {
    if (!g) return;
    for (int64_t i = 0; i < g->n_kv; i++) free(g->keys[i]);
    for (int64_t i = 0; i < g->n_t; i++) free(g->t[i].name);
    free(g->keys);
    free(g->kv);
    free(g->t);
    free(g);
}

static void put(tr_gguf *g, const void *p, size_t n) {
    g->kv = ag_xgrow(g->kv, &g->kv_cap, (int64_t)(g->kv_len + n), 1, "gguf metadata");
    memcpy(g->kv + g->kv_len, p, n);
    g->kv_len += n;
}
static void put_u32(tr_gguf *g, uint32_t v) {
    put(g, &v, 4);
}
static void put_u64(tr_gguf *g, uint64_t v) {
    put(g, &v, 8);
}
static void put_str(tr_gguf *g, const char *s) {
    size_t n = strlen(s);
    put_u64(g, n);
    put(g, s, n);
}
static void key(tr_gguf *g, const char *k, uint32_t type) {
    for (int64_t i = 0; i < g->n_kv; i++)
        if (!strcmp(g->keys[i], k)) ag_fail("gguf: metadata key %s given twice", k);
    g->keys = ag_xgrow(g->keys, &g->keys_cap, g->n_kv + 1, sizeof *g->keys, "gguf metadata");
    g->keys[g->n_kv++] = ag_xstrdup(k);
    put_str(g, k);
    put_u32(g, type);
}

void tr_gguf_kv_str(tr_gguf *g, const char *k, const char *v) {
    key(g, k, KV_STRING);
    put_str(g, v);
}
void tr_gguf_kv_u32(tr_gguf *g, const char *k, uint32_t v) {
    key(g, k, KV_U32);
    put_u32(g, v);
}
void tr_gguf_kv_i32(tr_gguf *g, const char *k, int32_t v) {
    key(g, k, KV_I32);
    put(g, &v, 4);
}
void tr_gguf_kv_f32(tr_gguf *g, const char *k, float v) {
    key(g, k, KV_F32);
    put(g, &v, 4);
}
void tr_gguf_kv_bool(tr_gguf *g, const char *k, bool v) {
    key(g, k, KV_BOOL);
    uint8_t b = v;
    put(g, &b, 1);
}
static void array_head(tr_gguf *g, const char *k, uint32_t type, int64_t n) {
    if (n < 0) ag_fail("gguf: metadata %s: negative array length", k);
    key(g, k, KV_ARRAY);
    put_u32(g, type);
    put_u64(g, (uint64_t)n);
}
void tr_gguf_kv_arr_str(tr_gguf *g, const char *k, int64_t n, const char *const *v) {
    array_head(g, k, KV_STRING, n);
    for (int64_t i = 0; i < n; i++) put_str(g, v[i]);
}
void tr_gguf_kv_arr_f32(tr_gguf *g, const char *k, int64_t n, const float *v) {
    array_head(g, k, KV_F32, n);
    put(g, v, 4 * (size_t)n);
}
void tr_gguf_kv_arr_i32(tr_gguf *g, const char *k, int64_t n, const int32_t *v) {
    array_head(g, k, KV_I32, n);
    put(g, v, 4 * (size_t)n);
}

// Tensors ----------------------------------------------------------------------------------------

void tr_gguf_add_tensor(tr_gguf *g, const char *name, int ndim, const int64_t *ne, tr_gguf_type t,
                        tr_gguf_fill fill, const void *arg) {
    if (strlen(name) >= 64) ag_fail("gguf: tensor name %s is longer than ggml's 63", name);
    if (ndim < 1 || ndim > 4) ag_fail("gguf: tensor %s: %d dims (1 to 4)", name, ndim);
    for (int d = 0; d < ndim; d++)
        if (ne[d] < 1) ag_fail("gguf: tensor %s: dim %d is %lld", name, d, (long long)ne[d]);
    if (t == TR_GGUF_Q8_0 && ne[0] % TR_GGUF_QK8_0)
        ag_fail("gguf: tensor %s: rows of %lld values do not split into q8_0 blocks of 32", name,
                (long long)ne[0]);
    for (int64_t i = 0; i < g->n_t; i++)
        if (!strcmp(g->t[i].name, name)) ag_fail("gguf: tensor %s added twice", name);
    g->t = ag_xgrow(g->t, &g->cap_t, g->n_t + 1, sizeof *g->t, "gguf tensors");
    tensor *x = &g->t[g->n_t++];
    memset(x, 0, sizeof *x);
    x->name = ag_xstrdup(name);
    x->ndim = ndim;
    uint64_t rows = 1;
    for (int d = 0; d < 4; d++) x->ne[d] = d < ndim ? ne[d] : 1;
    for (int d = 1; d < 4; d++) rows *= (uint64_t)x->ne[d];
    x->type = t, x->fill = fill, x->arg = arg;
    x->bytes = rows * tr_gguf_row_bytes(t, x->ne[0]);
}

// Writing ----------------------------------------------------------------------------------------

typedef struct {
    FILE *f;
    const char *path;
} out;

static void wr(out *o, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, o->f) != n) ag_fail("%s: write failed: %s", o->path, strerror(errno));
}
static void wr_u32(out *o, uint32_t v) {
    wr(o, &v, 4);
}
static void wr_u64(out *o, uint64_t v) {
    wr(o, &v, 8);
}
static void wr_pad(out *o, uint64_t at) {
    static const uint8_t zeros[ALIGNMENT];
    if (at % ALIGNMENT) wr(o, zeros, ALIGNMENT - at % ALIGNMENT);
}

// Converts the values of rows [r0, r1) of x (row length n) to its type in buf.
static void convert(const tensor *x, const float *v, int64_t n, int64_t r0, int64_t r1,
                    uint8_t *buf, const char *path) {
    const float *src = v + r0 * n;
    int64_t count = (r1 - r0) * n;
    switch (x->type) {
    case TR_GGUF_F32:
        memcpy(buf, src, 4 * (size_t)count);
        break;
    case TR_GGUF_F16:
        for (int64_t i = 0; i < count; i++) {
            if (fabsf(src[i]) >= 65520.0f)
                ag_fail("%s: tensor %s: %g does not fit f16 (choose --dtype bf16 or f32)", path,
                        x->name, (double)src[i]);
            uint16_t h = tr_gguf_f32_to_f16(src[i]);
            memcpy(buf + 2 * i, &h, 2);
        }
        break;
    case TR_GGUF_BF16:
        for (int64_t i = 0; i < count; i++) {
            uint16_t h = ag_f32_to_bf16(src[i]);
            if ((h & 0x7f80) == 0x7f80)
                ag_fail("%s: tensor %s: %g does not fit bf16", path, x->name, (double)src[i]);
            memcpy(buf + 2 * i, &h, 2);
        }
        break;
    case TR_GGUF_Q8_0:
        for (int64_t b = 0; b < count / TR_GGUF_QK8_0; b++) {
            const float *blk = src + b * TR_GGUF_QK8_0;
            float amax = 0;
            for (int j = 0; j < TR_GGUF_QK8_0; j++) amax = fmaxf(amax, fabsf(blk[j]));
            if (amax / 127 >= 65520.0f)
                ag_fail("%s: tensor %s: %g is too large for a q8_0 scale", path, x->name,
                        (double)amax);
            tr_gguf_quantize_q8_0(blk, buf + b * (2 + TR_GGUF_QK8_0));
        }
        break;
    }
}

static void write_tensor(out *o, const tensor *x) {
    const int64_t n = x->ne[0], rows = x->ne[1] * x->ne[2] * x->ne[3];
    float *v = ag_xmalloc(sizeof(float) * (size_t)(n * rows), "gguf tensor values");
    x->fill(x->arg, v);
    for (int64_t i = 0; i < n * rows; i++)
        if (!isfinite(v[i]))
            ag_fail("%s: tensor %s: non-finite value at element %lld", o->path, x->name,
                    (long long)i);
    // Converted a chunk of rows at a time (~4 MB), so a big table needs no second copy.
    const uint64_t rb = tr_gguf_row_bytes(x->type, n);
    int64_t chunk = (int64_t)((4u << 20) / rb);
    if (chunk < 1) chunk = 1;
    uint8_t *buf = ag_xmalloc(rb * (uint64_t)(chunk < rows ? chunk : rows), "gguf tensor data");
    for (int64_t r = 0; r < rows; r += chunk) {
        int64_t r1 = r + chunk < rows ? r + chunk : rows;
        convert(x, v, n, r, r1, buf, o->path);
        wr(o, buf, rb * (uint64_t)(r1 - r));
    }
    free(buf);
    free(v);
    wr_pad(o, x->bytes);
}

void tr_gguf_write(tr_gguf *g, const char *path) {
    uint64_t offset = 0;
    for (int64_t i = 0; i < g->n_t; i++) {
        g->t[i].offset = offset;
        offset += (g->t[i].bytes + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
    }
    out o = {.f = fopen(path, "wb"), .path = path};
    if (!o.f) ag_fail("%s: cannot create: %s", path, strerror(errno));
    wr(&o, "GGUF", 4);
    wr_u32(&o, 3);
    wr_u64(&o, (uint64_t)g->n_t);
    wr_u64(&o, (uint64_t)g->n_kv);
    wr(&o, g->kv, g->kv_len);
    uint64_t at = 24 + g->kv_len;
    for (int64_t i = 0; i < g->n_t; i++) {
        const tensor *x = &g->t[i];
        size_t len = strlen(x->name);
        wr_u64(&o, len);
        wr(&o, x->name, len);
        wr_u32(&o, (uint32_t)x->ndim);
        for (int d = 0; d < x->ndim; d++) wr_u64(&o, (uint64_t)x->ne[d]);
        wr_u32(&o, (uint32_t)x->type);
        wr_u64(&o, x->offset);
        at += 8 + len + 4 + 8 * (uint64_t)x->ndim + 4 + 8;
    }
    wr_pad(&o, at);
    for (int64_t i = 0; i < g->n_t; i++) write_tensor(&o, &g->t[i]);
    if (fflush(o.f) || fsync(fileno(o.f))) ag_fail("%s: write failed: %s", path, strerror(errno));
    FILE *f = o.f;
    o.f = NULL;
    if (fclose(f)) ag_fail("%s: close failed: %s", path, strerror(errno));
}
