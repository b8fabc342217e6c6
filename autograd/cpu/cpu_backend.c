// cpu_backend.c: the CPU device (ag_cpu_backend): 64-byte aligned memory, host copies,
// strided copies, dtype casts, and the kernel tables built from kernels.inc. Also the
// per-thread scratch buffers and the OpenBLAS thread switch the kernels share.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <omp.h>

#include "autograd/backend.h"
#include "autograd/cpu/cpu_kernels.h"
#include "autograd/cpu/cpu_optim.h"
#include "autograd/error.h"

#define PAR_MIN 32768 // elements below which a loop stays on one thread

void *ag_cpu_alloc(size_t bytes, const char *what) {
    size_t n = bytes ? (bytes + 63) & ~(size_t)63 : 64; // aligned_alloc wants a multiple
    void *p = aligned_alloc(64, n);
    if (!p) ag_fail("out of memory: %zu bytes for %s on cpu", bytes, what ? what : "a buffer");
    return p;
}

static void cpu_free(void *p) {
    free(p);
}

static void cpu_memset0(void *p, size_t bytes) {
    if (bytes) memset(p, 0, bytes);
}

static void cpu_copy(void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy(dst, src, bytes);
}

// Scratch: grows by half again when too small, so a warm training loop never allocates.
static _Thread_local struct {
    void *p;
    size_t n;
} scratch[AG_SCRATCH_SLOTS];

void *ag_cpu_scratch(int slot, size_t bytes) {
    if (!scratch[slot].p || bytes > scratch[slot].n) {
        size_t n = bytes + bytes / 2;
        free(scratch[slot].p);
        scratch[slot].p = ag_cpu_alloc(n, "kernel scratch");
        scratch[slot].n = n;
    }
    return scratch[slot].p;
}

int ag_cpu_blas_serial_begin(void) {
    int n = openblas_get_num_threads();
    if (n > 1) openblas_set_num_threads(1);
    return n;
}

int ag_cpu_share_threads(int sharing) {
    if (getenv("OMP_NUM_THREADS") || sharing <= 1) return omp_get_max_threads();
    // Ranks sharing cores each running a full team oversubscribe them, and every OpenMP
    // barrier then waits for a descheduled thread.
    int n = omp_get_num_procs() / sharing;
    if (n < 1) n = 1;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
    return n;
}

void ag_cpu_blas_serial_end(int saved) {
    if (saved > 1) openblas_set_num_threads(saved);
}

// dst (contiguous) = src laid out by l, from src + l->offset elements.
static void cpu_copy_strided(void *dst, const void *src, const ag_layout *l, size_t es) {
    int64_t sh[4], st[4];
    const int pad = 4 - l->ndim;
    for (int d = 0; d < 4; d++) {
        sh[d] = d < pad ? 1 : l->shape[d - pad];
        st[d] = d < pad ? 0 : l->stride[d - pad];
    }
    const char *s = (const char *)src + l->offset * (int64_t)es;
    char *o = dst;
    const int64_t n = sh[0] * sh[1] * sh[2] * sh[3], w = sh[3];
#pragma omp parallel for collapse(3) if (n >= PAR_MIN)
    for (int64_t i0 = 0; i0 < sh[0]; i0++)
        for (int64_t i1 = 0; i1 < sh[1]; i1++)
            for (int64_t i2 = 0; i2 < sh[2]; i2++) {
                const char *sr = s + (i0 * st[0] + i1 * st[1] + i2 * st[2]) * (int64_t)es;
                char *dr = o + ((i0 * sh[1] + i1) * sh[2] + i2) * w * (int64_t)es;
                const int64_t s3 = st[3];
                if (s3 == 1) {
                    memcpy(dr, sr, (size_t)w * es);
                    continue;
                }
                switch (es) { // typed loops for the common sizes
                case 1:
                    for (int64_t i = 0; i < w; i++)
                        ((uint8_t *)dr)[i] = ((const uint8_t *)sr)[i * s3];
                    break;
                case 2:
                    for (int64_t i = 0; i < w; i++)
                        ((uint16_t *)dr)[i] = ((const uint16_t *)sr)[i * s3];
                    break;
                case 4:
                    for (int64_t i = 0; i < w; i++)
                        ((uint32_t *)dr)[i] = ((const uint32_t *)sr)[i * s3];
                    break;
                case 8:
                    for (int64_t i = 0; i < w; i++)
                        ((uint64_t *)dr)[i] = ((const uint64_t *)sr)[i * s3];
                    break;
                default:
                    for (int64_t i = 0; i < w; i++)
                        memcpy(dr + i * (int64_t)es, sr + i * s3 * (int64_t)es, es);
                }
            }
}

// Casts between f32, bf16, f64, i32, u8. Floats to integers truncate as C casts do
// (to u8 through int64, so negative values wrap); f64 -> bf16 rounds through f32.
#define LOAD_F32(i)      (((const float *)src)[i])
#define LOAD_BF16(i)     ag_bf16_to_f32(((const uint16_t *)src)[i])
#define LOAD_F64(i)      (((const double *)src)[i])
#define LOAD_I32(i)      (((const int32_t *)src)[i])
#define LOAD_U8(i)       (((const uint8_t *)src)[i])
#define STORE_F32(i, v)  ((float *)dst)[i] = (float)(v)
#define STORE_BF16(i, v) ((uint16_t *)dst)[i] = ag_f32_to_bf16((float)(v))
#define STORE_F64(i, v)  ((double *)dst)[i] = (double)(v)
#define STORE_I32(i, v)  ((int32_t *)dst)[i] = (int32_t)(v)
#define STORE_U8(i, v)   ((uint8_t *)dst)[i] = (uint8_t)(int64_t)(v)
#define CAST_LOOP(LOAD, STORE)                                                                     \
    _Pragma("omp parallel for if (n >= PAR_MIN)") for (int64_t i = 0; i < n; i++)                  \
        STORE(i, LOAD(i));                                                                         \
    return;
#define CAST_FROM(LOAD)                                                                            \
    switch (dst_dtype) {                                                                           \
    case AG_F32:                                                                                   \
        CAST_LOOP(LOAD, STORE_F32)                                                                 \
    case AG_BF16:                                                                                  \
        CAST_LOOP(LOAD, STORE_BF16)                                                                \
    case AG_F64:                                                                                   \
        CAST_LOOP(LOAD, STORE_F64)                                                                 \
    case AG_I32:                                                                                   \
        CAST_LOOP(LOAD, STORE_I32)                                                                 \
    case AG_U8:                                                                                    \
        CAST_LOOP(LOAD, STORE_U8)                                                                  \
    default:                                                                                       \
        break;                                                                                     \
    }                                                                                              \
    break;

static void cpu_cast(void *dst, ag_dtype dst_dtype, const void *src, ag_dtype src_dtype,
                     int64_t n) {
    if (dst_dtype == src_dtype && (unsigned)dst_dtype < AG_NDTYPES) {
        if (n) memcpy(dst, src, (size_t)n * ag_dtype_size(dst_dtype));
        return;
    }
    switch (src_dtype) {
    case AG_F32:
        CAST_FROM(LOAD_F32)
    case AG_BF16:
        CAST_FROM(LOAD_BF16)
    case AG_F64:
        CAST_FROM(LOAD_F64)
    case AG_I32:
        CAST_FROM(LOAD_I32)
    case AG_U8:
        CAST_FROM(LOAD_U8)
    default:
        break;
    }
    ag_fail("cast: unsupported dtypes %d -> %d on cpu", (int)src_dtype, (int)dst_dtype);
}

static void cpu_synchronize(void) {}

const ag_backend ag_cpu_backend = {
    .name = "cpu",
    .kernels = {[AG_F32] = &ag_cpu_kernels_f32,
                [AG_BF16] = &ag_cpu_kernels_bf16,
                [AG_F64] = &ag_cpu_kernels_f64},
    .alloc = ag_cpu_alloc,
    .free = cpu_free,
    .memset0 = cpu_memset0,
    .copy_to_host = cpu_copy,
    .copy_from_host = cpu_copy,
    .copy_strided = cpu_copy_strided,
    .cast = cpu_cast,
    .synchronize = cpu_synchronize,
    .adamw = ag_cpu_adamw,
};
