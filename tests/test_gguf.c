// test_gguf.c: the GGUF writer (train/gguf.c) on its own.
//   - f16 conversion: every finite half round-trips; midpoints between neighbours round to the
//     even one, anything past a midpoint up; subnormals, the overflow threshold 65520, NaN;
//   - Q8_0 blocks: scale max|x| / 127 as f16, q = round(x / scale) half away from zero;
//   - a small file read back byte by byte: header, metadata, tensor infos, 32-byte alignment,
//     values of every type;
//   - refusals with one line: a key or tensor twice, q8_0 rows not of 32, a non-finite value,
//     a value too large for f16, an unwritable path.
// End-to-end checks of the export live in tests/test_export_gguf.sh.
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "autograd/error.h"
#include "testlib.h"
#include "train/gguf.h"

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_f16(void) {
    int bad_trip = 0, bad_mid = 0;
    for (uint32_t h = 0; h < 0x7c00; h++) { // positive finite halves; negatives mirror them
        float f = tr_gguf_f16_to_f32((uint16_t)h);
        if (tr_gguf_f32_to_f16(f) != h || tr_gguf_f32_to_f16(-f) != (h | 0x8000)) bad_trip++;
        if (h + 1 < 0x7c00) {
            float next = tr_gguf_f16_to_f32((uint16_t)(h + 1)), mid = (f + next) / 2;
            uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
            if (tr_gguf_f32_to_f16(mid) != even ||
                tr_gguf_f32_to_f16(nextafterf(mid, INFINITY)) != h + 1 ||
                tr_gguf_f32_to_f16(nextafterf(mid, 0)) != h)
                bad_mid++;
        }
    }
    TL_CHECK(bad_trip == 0, "%d halves do not round-trip", bad_trip);
    TL_CHECK(bad_mid == 0, "%d midpoints round wrongly", bad_mid);
    TL_CHECK(tr_gguf_f32_to_f16(65519.996f) == 0x7bff, "just below 65520 -> 65504");
    TL_CHECK(tr_gguf_f32_to_f16(65520.0f) == 0x7c00, "65520 -> infinity");
    TL_CHECK(tr_gguf_f32_to_f16(-1e30f) == 0xfc00, "-1e30 -> -infinity");
    TL_CHECK(tr_gguf_f32_to_f16(ldexpf(1, -25)) == 0, "2^-25 ties to 0");
    TL_CHECK(tr_gguf_f32_to_f16(ldexpf(3, -25)) == 2, "3 * 2^-25 ties to 2 * 2^-24");
    TL_CHECK(tr_gguf_f32_to_f16(ldexpf(1, -30)) == 0, "2^-30 -> 0");
    uint16_t n = tr_gguf_f32_to_f16(bits_f32(0x7fc00001));
    TL_CHECK((n & 0x7c00) == 0x7c00 && (n & 0x3ff), "NaN stays NaN (0x%04x)", n);
    TL_CHECK(isinf(tr_gguf_f16_to_f32(0x7c00)) && isnan(tr_gguf_f16_to_f32(0x7e00)), "inf, NaN");
}

static void test_q8_0(void) {
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16) * 0.25f;
    x[5] = 12.7f; // the largest: scale 0.1, and 12.7 -> 127
    uint8_t b[34];
    tr_gguf_quantize_q8_0(x, b);
    uint16_t d;
    memcpy(&d, b, 2);
    TL_CHECK(d == tr_gguf_f32_to_f16(12.7f / 127), "scale 0x%04x", d);
    TL_CHECK((int8_t)b[2 + 5] == 127, "max -> 127");
    TL_CHECK((int8_t)b[2 + 0] == -40, "-4 / 0.1 -> -40, got %d", (int8_t)b[2]);
    int worst = 0;
    float s = tr_gguf_f16_to_f32(d);
    for (int j = 0; j < 32; j++) {
        float err = fabsf((int8_t)b[2 + j] * s - x[j]);
        if (err > 0.51f * s + 1e-6f) worst = j + 1;
    }
    TL_CHECK(!worst, "element %d off by more than half a step", worst - 1);
    float h[32] = {127, 2.5f, -2.5f, 3.5f}; // scale 1: halves round away from zero (roundf)
    tr_gguf_quantize_q8_0(h, b);
    TL_CHECK((int8_t)b[3] == 3 && (int8_t)b[4] == -3 && (int8_t)b[5] == 4, "halves: %d %d %d",
             (int8_t)b[3], (int8_t)b[4], (int8_t)b[5]);
    float z[32] = {0};
    tr_gguf_quantize_q8_0(z, b);
    bool zero = true;
    for (int j = 0; j < 34; j++) zero = zero && b[j] == 0;
    TL_CHECK(zero, "a zero block is all zero bytes");
}

// Fill callbacks: arg points at the values (numel floats).
typedef struct {
    const float *v;
    int64_t n;
} vals;
static void fill_vals(const void *arg, float *dst) {
    const vals *v = arg;
    memcpy(dst, v->v, sizeof(float) * (size_t)v->n);
}

static uint64_t rd64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
static uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void test_file(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/t.gguf", dir);
    float a[3] = {1.5f, -2.0f, 65504.0f}, q[64];
    for (int i = 0; i < 64; i++) q[i] = sinf((float)i);
    vals va = {a, 3}, vq = {q, 64};
    tr_gguf *g = tr_gguf_new();
    tr_gguf_kv_str(g, "general.architecture", "llama");
    tr_gguf_kv_u32(g, "x.u32", 7);
    tr_gguf_kv_bool(g, "x.bool", true);
    const char *strs[2] = {"a", "bc"};
    tr_gguf_kv_arr_str(g, "x.strs", 2, strs);
    tr_gguf_add_tensor(g, "a32", 1, (int64_t[]){3}, TR_GGUF_F32, fill_vals, &va);
    tr_gguf_add_tensor(g, "a16", 1, (int64_t[]){3}, TR_GGUF_F16, fill_vals, &va);
    tr_gguf_add_tensor(g, "abf", 1, (int64_t[]){3}, TR_GGUF_BF16, fill_vals, &va);
    tr_gguf_add_tensor(g, "q", 2, (int64_t[]){32, 2}, TR_GGUF_Q8_0, fill_vals, &vq);
    tr_gguf_write(g, path);
    tr_gguf_free(g);

    FILE *f = fopen(path, "rb");
    TL_CHECK(f != NULL, "open %s", path);
    if (!f) return;
    uint8_t buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    TL_CHECK(!memcmp(buf, "GGUF", 4) && rd32(buf + 4) == 3, "magic and version 3");
    TL_CHECK(rd64(buf + 8) == 4 && rd64(buf + 16) == 4, "4 tensors, 4 keys");
    size_t p = 24;
    // key 1: "general.architecture" string "llama"
    TL_CHECK(rd64(buf + p) == 20 && !memcmp(buf + p + 8, "general.architecture", 20), "key 1");
    p += 8 + 20;
    TL_CHECK(rd32(buf + p) == 8 && rd64(buf + p + 4) == 5 && !memcmp(buf + p + 12, "llama", 5),
             "string value");
    p += 4 + 8 + 5;
    p += 8 + 5 + 4 + 4;     // x.u32
    p += 8 + 6 + 4 + 1;     // x.bool
    p += 8 + 6 + 4 + 4 + 8; // x.strs: array of 2 strings
    TL_CHECK(rd64(buf + p) == 1 && buf[p + 8] == 'a' && rd64(buf + p + 9) == 2, "string array");
    p += 8 + 1 + 8 + 2;
    // tensor infos: name, n_dims, ne, type, offset
    uint64_t offs[4];
    const uint32_t types[4] = {0, 1, 30, 8};
    for (int t = 0; t < 4; t++) {
        uint64_t len = rd64(buf + p);
        p += 8 + len;
        uint32_t nd = rd32(buf + p);
        p += 4 + 8 * nd;
        TL_CHECK(rd32(buf + p) == types[t], "tensor %d type %u", t, rd32(buf + p));
        offs[t] = rd64(buf + p + 4);
        TL_CHECK(offs[t] % 32 == 0, "tensor %d offset %llu aligned", t,
                 (unsigned long long)offs[t]);
        p += 12;
    }
    size_t data = (p + 31) / 32 * 32;
    TL_CHECK(n == data + offs[3] + 96, "file size %zu (the last tensor padded too)", n);
    float a32[3];
    memcpy(a32, buf + data + offs[0], 12);
    TL_CHECK(!memcmp(a32, a, 12), "f32 values");
    uint16_t h[3], bf[3];
    memcpy(h, buf + data + offs[1], 6);
    memcpy(bf, buf + data + offs[2], 6);
    TL_CHECK(h[0] == 0x3e00 && h[1] == 0xc000 && h[2] == 0x7bff, "f16 values");
    TL_CHECK(bf[0] == 0x3fc0 && bf[1] == 0xc000 && bf[2] == 0x4780, "bf16 values");
    uint8_t blk[34];
    tr_gguf_quantize_q8_0(q + 32, blk);
    TL_CHECK(!memcmp(buf + data + offs[3] + 34, blk, 34), "second q8_0 block");
}

static void test_errors(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/e.gguf", dir);
    float nan_v[2] = {1.0f, NAN}, big[1] = {1e5f};
    vals vn = {nan_v, 2}, vb = {big, 1};
    tr_gguf *g = tr_gguf_new();
    tr_gguf_kv_u32(g, "k", 1);
    TL_EXPECT_FAIL(tr_gguf_kv_u32(g, "k", 2), "k", "twice");
    tr_gguf_add_tensor(g, "t", 1, (int64_t[]){2}, TR_GGUF_F32, fill_vals, &vn);
    TL_EXPECT_FAIL(tr_gguf_add_tensor(g, "t", 1, (int64_t[]){2}, TR_GGUF_F32, fill_vals, &vn), "t",
                   "twice");
    TL_EXPECT_FAIL(tr_gguf_add_tensor(g, "q", 1, (int64_t[]){48}, TR_GGUF_Q8_0, fill_vals, &vn),
                   "q", "48", "32");
    TL_EXPECT_FAIL(tr_gguf_write(g, path), path, "tensor t", "non-finite");
    tr_gguf_free(g);
    g = tr_gguf_new();
    tr_gguf_add_tensor(g, "big", 1, (int64_t[]){1}, TR_GGUF_F16, fill_vals, &vb);
    TL_EXPECT_FAIL(tr_gguf_write(g, path), "tensor big", "f16");
    TL_EXPECT_FAIL(tr_gguf_write(g, "/nonexistent-dir/x.gguf"), "/nonexistent-dir/x.gguf",
                   "cannot create");
    tr_gguf_free(g);
}

int main(void) {
    char dir[] = "/tmp/test_gguf.XXXXXX";
    if (!mkdtemp(dir)) return 1;
    test_f16();
    test_q8_0();
    test_file(dir);
    test_errors(dir);
    char p[600];
    snprintf(p, sizeof p, "%s/t.gguf", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/e.gguf", dir);
    unlink(p);
    rmdir(dir);
    return tl_summary("test_gguf");
}
