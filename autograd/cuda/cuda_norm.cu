// cuda_norm.cu: RMSNorm, LayerNorm, L2 norm, softmax, cross-entropy with ignore index and RoPE
// on CUDA, for f32 and bf16 storage (arithmetic and saved statistics in f32), with the
// semantics of autograd/cpu/kernels.inc. One block per row (rows looped when there are more
// than the grid). Sums over rows (weight and bias gradients) go through partial rows in a
// scratch buffer, one per chunk of rows, added in chunk order by a second kernel: no atomics,
// the same bits on every run.
#include <limits.h>
#include <math.h>

#include "autograd/cuda/cuda_common.cuh"

namespace {

const unsigned FULL_MASK = 0xffffffffu;
const long long GRID_CAP = 65535LL * 16; // blocks per launch; loops take over past it

// Threads per row: a power of two covering c, from one warp up to 512.
int row_threads(long long c) {
    int t = 32;
    while (t < c && t < 512) t <<= 1;
    return t;
}

unsigned row_grid(long long rows) {
    return (unsigned)(rows < GRID_CAP ? rows : GRID_CAP);
}

// --------------------------------------------------------------------------------------------
// Scratch: device buffers kept across calls (agc_scratch_get).
agc_scratch g_partial = {nullptr, 0}; // norm weight/bias partial rows
agc_scratch g_ce = {nullptr, 0};      // cross-entropy per-row losses and the summary

// Index arrays (rope positions, targets) must be reachable from the GPU: a plain host pointer
// (a CPU tensor) would fault inside the kernel and poison the context, so it is refused here.
void need_device_ptr(const void *p, const char *op, const char *what) {
    cudaPointerAttributes at;
    CUDA_CHECK(cudaPointerGetAttributes(&at, p));
    if (at.type == cudaMemoryTypeUnregistered)
        ag_fail("%s: %s is in host memory, not on the CUDA device", op, what);
}

// --------------------------------------------------------------------------------------------
// Block reductions. blockDim.x is a multiple of 32 (at most 1024); blockDim.y is 1. Every
// thread gets the result (lane 0's, broadcast), summed in an order fixed by blockDim alone.
// The trailing barrier lets the caller reduce again at once with the same shared array.

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return __shfl_sync(FULL_MASK, v, 0);
}

__device__ float block_sum(float v, float *sh) { // sh: 32 floats
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = warp_sum(lane < nw ? sh[lane] : 0.f);
    __syncthreads();
    return v;
}

// row_sum_squares: the sum of x[j]^2 over j < c, each thread striding by blockDim.x from
// threadIdx.x, then block_sum; every thread gets the total.
template <typename T>
__device__ __forceinline__ float row_sum_squares(const T *x, long long c, float *sh) {
    float ss = 0.f;
    for (long long j = threadIdx.x; j < c; j += blockDim.x) {
        const float v = agc_ld(x, j);
        ss += v * v;
    }
    return block_sum(ss, sh);
}

__device__ float2 block_sum2(float a, float b, float2 *sh) { // sh: 32 float2
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    a = warp_sum(a);
    b = warp_sum(b);
    if (lane == 0) sh[warp] = make_float2(a, b);
    __syncthreads();
    float2 t = lane < nw ? sh[lane] : make_float2(0.f, 0.f);
    t.x = warp_sum(t.x);
    t.y = warp_sum(t.y);
    __syncthreads();
    return t;
}

// Online softmax statistics: (m, s) stands for s * exp(m) = sum of exp over the values seen,
// m their max (-inf before any; NaN values never become m but make s NaN, as on the CPU).
// Merging (m2, s2) in; a -inf side adds nothing (s2 * 0 keeps a NaN). A +inf max makes s NaN,
// as the CPU's exp(x - max) does at x = max = +inf.
__device__ __forceinline__ void ms_merge(float &m, float &s, float m2, float s2) {
    if (m2 > m) {
        s = m2 == INFINITY ? NAN : s * (m == -INFINITY ? 0.f : expf(m - m2)) + s2;
        m = m2;
    } else {
        s += s2 * (m2 == -INFINITY ? 0.f : expf(m2 - m));
    }
}

// Merge of the (m, s) of all threads of the block; sh: 32 float2.
__device__ void block_ms(float &m, float &s, float2 *sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1)
        ms_merge(m, s, __shfl_xor_sync(FULL_MASK, m, o), __shfl_xor_sync(FULL_MASK, s, o));
    m = __shfl_sync(FULL_MASK, m, 0);
    s = __shfl_sync(FULL_MASK, s, 0);
    if (lane == 0) sh[warp] = make_float2(m, s);
    __syncthreads();
    m = -INFINITY;
    s = 0.f;
    if (lane < nw) m = sh[lane].x, s = sh[lane].y;
    for (int o = 16; o > 0; o >>= 1)
        ms_merge(m, s, __shfl_xor_sync(FULL_MASK, m, o), __shfl_xor_sync(FULL_MASK, s, o));
    m = __shfl_sync(FULL_MASK, m, 0);
    s = __shfl_sync(FULL_MASK, s, 0);
    __syncthreads();
}

// (m, s) of row x of n values, this thread's share then the block's.
template <typename T>
__device__ void row_ms(const T *x, long long n, float &m, float &s, float2 *sh) {
    m = -INFINITY;
    s = 0.f;
    for (long long j = threadIdx.x; j < n; j += blockDim.x) ms_merge(m, s, agc_ld(x, j), 1.f);
    block_ms(m, s, sh);
}

// --------------------------------------------------------------------------------------------
// Column sums of partial rows: out[j] += sum over k < nch of part[k * c + j], k in order.

template <typename T>
__global__ void colsum_add_kernel(const float *part, long long nch, long long c, T *out) {
    for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < c;
         j += (long long)gridDim.x * blockDim.x) {
        float s = 0.f;
#pragma unroll 8
        for (long long k = 0; k < nch; k++) s += part[k * c + j];
        agc_st(out, j, agc_ld(out, j) + s);
    }
}

template <typename T> void colsum_add(const float *part, long long nch, long long c, T *out) {
    colsum_add_kernel<<<agc_blocks(c, 128), 128, 0, agc_stream()>>>(part, nch, c, out);
    CUDA_LAUNCHED("colsum_add_kernel");
}

// Rows per partial row of a weight gradient: about 512 chunks for large row counts (enough
// blocks for the GPU), at most 64 rows each. Depends on rows alone.
long long chunk_rows(long long rows) {
    long long cr = rows / 512;
    return cr < 1 ? 1 : cr > 64 ? 64 : cr;
}

// --------------------------------------------------------------------------------------------
// RMSNorm: out = x r w, r = (mean x^2 + eps)^-1/2. x, out (rows, c); w (c) or NULL.

template <typename T>
__global__ void rmsnorm_fwd_kernel(const T *X, const T *w, T *O, float *rstd, long long rows,
                                   long long c, double eps) {
    __shared__ float sh[32];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *x = X + r * c;
        T *o = O + r * c;
        const float ss = row_sum_squares(x, c, sh);
        const float rs = (float)(1.0 / sqrt((double)ss / (double)c + eps));
        if (rstd && threadIdx.x == 0) rstd[r] = rs;
        for (long long j = threadIdx.x; j < c; j += blockDim.x)
            agc_st(o, j, w ? agc_ld(x, j) * rs * agc_ld(w, j) : agc_ld(x, j) * rs);
    }
}

// gx += r w g - x r^3 / c * sum(g w x);  partial gw row of chunk k += g x r over its rows.
// Block k takes chunk k (rows k*cr ..); part is NULL when gw is not wanted.
template <typename T>
__global__ void rmsnorm_bwd_kernel(const T *X, const T *w, const float *rstd, const T *G, T *GX,
                                   float *part, long long rows, long long c, long long cr,
                                   long long nch) {
    __shared__ float sh[32];
    for (long long k = blockIdx.x; k < nch; k += gridDim.x) {
        float *p = part ? part + k * c : nullptr;
        if (p)
            for (long long j = threadIdx.x; j < c; j += blockDim.x) p[j] = 0.f;
        const long long r1 = (k + 1) * cr < rows ? (k + 1) * cr : rows;
        for (long long r = k * cr; r < r1; r++) {
            const T *x = X + r * c, *g = G + r * c;
            const float rs = rstd[r];
            float coef = 0.f;
            if (GX) {
                float d = 0.f;
                for (long long j = threadIdx.x; j < c; j += blockDim.x)
                    d += w ? agc_ld(g, j) * agc_ld(w, j) * agc_ld(x, j)
                           : agc_ld(g, j) * agc_ld(x, j);
                d = block_sum(d, sh);
                coef = (float)((double)d * rs * rs * rs / (double)c);
            }
            T *gx = GX ? GX + r * c : nullptr;
            for (long long j = threadIdx.x; j < c; j += blockDim.x) {
                const float gj = agc_ld(g, j), xj = agc_ld(x, j);
                if (gx) {
                    const float wg = w ? rs * agc_ld(w, j) * gj : rs * gj;
                    agc_st(gx, j, agc_ld(gx, j) + wg - coef * xj);
                }
                if (p) p[j] += gj * xj * rs; // each thread owns its columns of p
            }
        }
    }
}

template <typename T>
void rmsnorm_fwd(const void *x, const void *w, void *out, void *rstd, int64_t rows, int64_t c,
                 double eps) {
    if (rows <= 0) return;
    rmsnorm_fwd_kernel<<<row_grid(rows), row_threads(c), 0, agc_stream()>>>(
        (const T *)x, (const T *)w, (T *)out, (float *)rstd, rows, c, eps);
    CUDA_LAUNCHED("rmsnorm_fwd_kernel");
}

template <typename T>
void rmsnorm_bwd(const void *x, const void *w, const void *rstd, const void *g, void *gx, void *gw,
                 int64_t rows, int64_t c) {
    if (rows <= 0 || c <= 0 || (!gx && !gw)) return;
    const long long cr = gw ? chunk_rows(rows) : 1, nch = (rows + cr - 1) / cr;
    float *part =
        gw ? (float *)agc_scratch_get(&g_partial, (size_t)(nch * c) * sizeof(float)) : nullptr;
    rmsnorm_bwd_kernel<<<row_grid(nch), row_threads(c), 0, agc_stream()>>>(
        (const T *)x, (const T *)w, (const float *)rstd, (const T *)g, (T *)gx, part, rows, c, cr,
        nch);
    CUDA_LAUNCHED("rmsnorm_bwd_kernel");
    if (gw) colsum_add(part, nch, c, (T *)gw);
}

// --------------------------------------------------------------------------------------------
// LayerNorm: out = (x - mean) r w + b, biased variance as PyTorch. w, b (c) or NULL.

template <typename T>
__global__ void layernorm_fwd_kernel(const T *X, const T *w, const T *b, T *O, float *mean,
                                     float *rstd, long long rows, long long c, double eps) {
    __shared__ float sh[32];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *x = X + r * c;
        T *o = O + r * c;
        float s = 0.f;
        for (long long j = threadIdx.x; j < c; j += blockDim.x) s += agc_ld(x, j);
        s = block_sum(s, sh);
        const float mu = (float)((double)s / (double)c);
        float v = 0.f; // second pass about the mean: no cancellation
        for (long long j = threadIdx.x; j < c; j += blockDim.x) {
            const float d = agc_ld(x, j) - mu;
            v += d * d;
        }
        v = block_sum(v, sh);
        const float rs = (float)(1.0 / sqrt((double)v / (double)c + eps));
        if (threadIdx.x == 0) {
            if (mean) mean[r] = mu;
            if (rstd) rstd[r] = rs;
        }
        for (long long j = threadIdx.x; j < c; j += blockDim.x) {
            float y = (agc_ld(x, j) - mu) * rs;
            if (w) y *= agc_ld(w, j);
            if (b) y += agc_ld(b, j);
            agc_st(o, j, y);
        }
    }
}

// xh = (x - mean) r, d = g w:  gx += r (d - mean(d) - xh mean(d xh));
// partial rows: pw += g xh, pb += g (either NULL when not wanted).
template <typename T>
__global__ void layernorm_bwd_kernel(const T *X, const T *w, const float *mean, const float *rstd,
                                     const T *G, T *GX, float *pw_all, float *pb_all,
                                     long long rows, long long c, long long cr, long long nch) {
    __shared__ float2 sh[32];
    for (long long k = blockIdx.x; k < nch; k += gridDim.x) {
        float *pw = pw_all ? pw_all + k * c : nullptr;
        float *pb = pb_all ? pb_all + k * c : nullptr;
        for (long long j = threadIdx.x; j < c; j += blockDim.x) {
            if (pw) pw[j] = 0.f;
            if (pb) pb[j] = 0.f;
        }
        const long long r1 = (k + 1) * cr < rows ? (k + 1) * cr : rows;
        for (long long r = k * cr; r < r1; r++) {
            const T *x = X + r * c, *g = G + r * c;
            const float mu = mean[r], rs = rstd[r];
            float sd = 0.f, sdx = 0.f;
            if (GX) {
                float a = 0.f, bsum = 0.f;
                for (long long j = threadIdx.x; j < c; j += blockDim.x) {
                    const float d = w ? agc_ld(g, j) * agc_ld(w, j) : agc_ld(g, j);
                    a += d;
                    bsum += d * ((agc_ld(x, j) - mu) * rs);
                }
                const float2 t = block_sum2(a, bsum, sh);
                sd = (float)((double)t.x / (double)c);
                sdx = (float)((double)t.y / (double)c);
            }
            T *gx = GX ? GX + r * c : nullptr;
            for (long long j = threadIdx.x; j < c; j += blockDim.x) {
                const float gj = agc_ld(g, j), xj = agc_ld(x, j);
                if (gx) {
                    const float d = w ? gj * agc_ld(w, j) : gj, xh = (xj - mu) * rs;
                    agc_st(gx, j, agc_ld(gx, j) + rs * (d - sd - xh * sdx));
                }
                if (pw) pw[j] += gj * (xj - mu) * rs;
                if (pb) pb[j] += gj;
            }
        }
    }
}

template <typename T>
void layernorm_fwd(const void *x, const void *w, const void *b, void *out, void *mean, void *rstd,
                   int64_t rows, int64_t c, double eps) {
    if (rows <= 0) return;
    layernorm_fwd_kernel<<<row_grid(rows), row_threads(c), 0, agc_stream()>>>(
        (const T *)x, (const T *)w, (const T *)b, (T *)out, (float *)mean, (float *)rstd, rows, c,
        eps);
    CUDA_LAUNCHED("layernorm_fwd_kernel");
}

template <typename T>
void layernorm_bwd(const void *x, const void *w, const void *mean, const void *rstd, const void *g,
                   void *gx, void *gw, void *gb, int64_t rows, int64_t c) {
    if (rows <= 0 || c <= 0 || (!gx && !gw && !gb)) return;
    const int np = (gw != nullptr) + (gb != nullptr); // partial regions of nch rows
    const long long cr = np ? chunk_rows(rows) : 1, nch = (rows + cr - 1) / cr;
    float *part =
        np ? (float *)agc_scratch_get(&g_partial, (size_t)(np * nch * c) * sizeof(float)) : nullptr;
    float *pw = gw ? part : nullptr, *pb = gb ? part + (gw ? nch * c : 0) : nullptr;
    layernorm_bwd_kernel<<<row_grid(nch), row_threads(c), 0, agc_stream()>>>(
        (const T *)x, (const T *)w, (const float *)mean, (const float *)rstd, (const T *)g, (T *)gx,
        pw, pb, rows, c, cr, nch);
    CUDA_LAUNCHED("layernorm_bwd_kernel");
    if (gw) colsum_add(pw, nch, c, (T *)gw);
    if (gb) colsum_add(pb, nch, c, (T *)gb);
}

// --------------------------------------------------------------------------------------------
// L2 norm: out = x / max(||x||, eps) per row; the norm saved.

template <typename T>
__global__ void l2norm_fwd_kernel(const T *X, T *O, float *norm, long long rows, long long c,
                                  float eps) {
    __shared__ float sh[32];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *x = X + r * c;
        T *o = O + r * c;
        const float ss = row_sum_squares(x, c, sh);
        const float nr = (float)sqrt((double)ss);
        if (norm && threadIdx.x == 0) norm[r] = nr;
        const float inv = 1.f / (nr >= eps ? nr : eps);
        for (long long j = threadIdx.x; j < c; j += blockDim.x) agc_st(o, j, agc_ld(x, j) * inv);
    }
}

// ||x|| >= eps: gx += g / n - x (x.g) / n^3;  below eps (out = x / eps, linear): gx += g / eps.
template <typename T>
__global__ void l2norm_bwd_kernel(const T *X, const float *norm, const T *G, T *GX, long long rows,
                                  long long c, float eps) {
    __shared__ float sh[32];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *x = X + r * c, *g = G + r * c;
        T *gx = GX + r * c;
        const float nr = norm[r]; // the same for the whole block: the branch is uniform
        if (nr >= eps) {
            float d = 0.f;
            for (long long j = threadIdx.x; j < c; j += blockDim.x)
                d += agc_ld(x, j) * agc_ld(g, j);
            d = block_sum(d, sh);
            const float inv = 1.f / nr, coef = d * inv * inv * inv;
            for (long long j = threadIdx.x; j < c; j += blockDim.x)
                agc_st(gx, j, agc_ld(gx, j) + agc_ld(g, j) * inv - agc_ld(x, j) * coef);
        } else {
            const float inv = 1.f / eps;
            for (long long j = threadIdx.x; j < c; j += blockDim.x)
                agc_st(gx, j, agc_ld(gx, j) + agc_ld(g, j) * inv);
        }
    }
}

template <typename T>
void l2norm_fwd(const void *x, void *out, void *norm, int64_t rows, int64_t c, double eps) {
    if (rows <= 0) return;
    l2norm_fwd_kernel<<<row_grid(rows), row_threads(c), 0, agc_stream()>>>(
        (const T *)x, (T *)out, (float *)norm, rows, c, (float)eps);
    CUDA_LAUNCHED("l2norm_fwd_kernel");
}

template <typename T>
void l2norm_bwd(const void *x, const void *norm, const void *g, void *gx, int64_t rows, int64_t c,
                double eps) {
    if (!gx || rows <= 0 || c <= 0) return;
    l2norm_bwd_kernel<<<row_grid(rows), row_threads(c), 0, agc_stream()>>>(
        (const T *)x, (const float *)norm, (const T *)g, (T *)gx, rows, c, (float)eps);
    CUDA_LAUNCHED("l2norm_bwd_kernel");
}

// --------------------------------------------------------------------------------------------
// Softmax over rows of c: one pass for (max, sum) online, one to write. A row of -inf (or of
// NaN only) gives zeros, as on the CPU.

template <typename T>
__global__ void softmax_fwd_kernel(const T *X, T *O, long long rows, long long c) {
    __shared__ float2 sh[32];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *x = X + r * c;
        T *o = O + r * c;
        float m, s;
        row_ms(x, c, m, s, sh);
        if (m == -INFINITY) {
            for (long long j = threadIdx.x; j < c; j += blockDim.x) agc_st(o, j, 0.f);
            continue;
        }
        const float inv = 1.f / s;
        for (long long j = threadIdx.x; j < c; j += blockDim.x)
            agc_st(o, j, expf(agc_ld(x, j) - m) * inv);
    }
}

// gx += y (g - y.g)
template <typename T>
__global__ void softmax_bwd_kernel(const T *Y, const T *G, T *GX, long long rows, long long c) {
    __shared__ float sh[32];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *y = Y + r * c, *g = G + r * c;
        T *gx = GX + r * c;
        float d = 0.f;
        for (long long j = threadIdx.x; j < c; j += blockDim.x) d += agc_ld(y, j) * agc_ld(g, j);
        d = block_sum(d, sh);
        for (long long j = threadIdx.x; j < c; j += blockDim.x)
            agc_st(gx, j, agc_ld(gx, j) + agc_ld(y, j) * (agc_ld(g, j) - d));
    }
}

template <typename T> void softmax_fwd(const void *x, void *out, int64_t rows, int64_t c) {
    if (rows <= 0 || c <= 0) return;
    softmax_fwd_kernel<<<row_grid(rows), row_threads(c), 0, agc_stream()>>>((const T *)x, (T *)out,
                                                                            rows, c);
    CUDA_LAUNCHED("softmax_fwd_kernel");
}

template <typename T>
void softmax_bwd(const void *out, const void *g, void *gx, int64_t rows, int64_t c) {
    if (!gx || rows <= 0 || c <= 0) return;
    softmax_bwd_kernel<<<row_grid(rows), row_threads(c), 0, agc_stream()>>>(
        (const T *)out, (const T *)g, (T *)gx, rows, c);
    CUDA_LAUNCHED("softmax_bwd_kernel");
}

// --------------------------------------------------------------------------------------------
// Cross-entropy. logits (rows, v) in their own dtype (never widened in memory); lse (rows) f32,
// 0 on ignored rows; loss an f32 device scalar; count a host int64.

// What the loss reduction reports back to the host.
struct ce_summary {
    long long count;   // supervised rows
    long long bad_row; // first row whose target is outside [0, v) and not ignored, or -1
    int bad_target;
    int pad;
};

// Per row: lse (online max and sum in one pass) and lse - logit[target] in f64 into rl.
// Ignored rows, and rows with a bad target (reported by the reduction), get 0.
template <typename T>
__global__ void ce_rows_kernel(const T *L, const int32_t *targets, float *lse, double *rl,
                               long long rows, long long v, int32_t ignore_index) {
    __shared__ float2 sh[32];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const int32_t t = targets[r];
        if (t == ignore_index || t < 0 || (long long)t >= v) {
            if (threadIdx.x == 0) lse[r] = 0.f, rl[r] = 0.0;
            continue;
        }
        const T *x = L + r * v;
        float m, s;
        row_ms(x, v, m, s, sh);
        // all -inf: NaN, as the CPU's exp(-inf - -inf)
        const float l = m == -INFINITY ? NAN : (float)((double)m + log((double)s));
        if (threadIdx.x == 0) {
            lse[r] = l;
            rl[r] = (double)l - (double)agc_ld(x, t);
        }
    }
}

const int CE_REDUCE_THREADS = 1024;

// One block: loss = mean of rl over supervised rows (f64, fixed tree order), the count and
// the first bad target into *sum.
__global__ void ce_reduce_kernel(const int32_t *targets, const double *rl, long long rows,
                                 long long v, int32_t ignore_index, float *loss, ce_summary *sum) {
    __shared__ double s_sum[CE_REDUCE_THREADS];
    __shared__ long long s_cnt[CE_REDUCE_THREADS], s_bad[CE_REDUCE_THREADS];
    const int tid = threadIdx.x;
    double s = 0.0;
    long long cnt = 0, bad = LLONG_MAX;
    for (long long r = tid; r < rows; r += blockDim.x) {
        const int32_t t = targets[r];
        if (t == ignore_index) continue;
        if (t < 0 || (long long)t >= v) {
            if (r < bad) bad = r;
            continue;
        }
        s += rl[r];
        cnt++;
    }
    s_sum[tid] = s, s_cnt[tid] = cnt, s_bad[tid] = bad;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h >>= 1) {
        if (tid < h) {
            s_sum[tid] += s_sum[tid + h];
            s_cnt[tid] += s_cnt[tid + h];
            if (s_bad[tid + h] < s_bad[tid]) s_bad[tid] = s_bad[tid + h];
        }
        __syncthreads();
    }
    if (tid == 0) {
        const long long n = s_cnt[0];
        *loss = n ? (float)(s_sum[0] / (double)n) : 0.f;
        sum->count = n;
        sum->bad_row = s_bad[0] == LLONG_MAX ? -1 : s_bad[0];
        sum->bad_target = s_bad[0] == LLONG_MAX ? 0 : targets[s_bad[0]];
        sum->pad = 0;
    }
}

template <typename T>
void cross_entropy_fwd(const void *logits, const int32_t *targets, void *lse, void *loss,
                       int64_t *count, int64_t rows, int64_t v, int32_t ignore_index) {
    if (rows > 0) need_device_ptr(targets, "cross_entropy", "targets");
    // rl (rows doubles), then the summary
    const size_t rl_bytes = ((size_t)(rows > 0 ? rows : 0) * sizeof(double) + 15) / 16 * 16;
    char *buf = (char *)agc_scratch_get(&g_ce, rl_bytes + sizeof(ce_summary));
    double *rl = (double *)buf;
    ce_summary *dsum = (ce_summary *)(buf + rl_bytes);
    if (rows > 0) {
        ce_rows_kernel<<<row_grid(rows), row_threads(v), 0, agc_stream()>>>(
            (const T *)logits, targets, (float *)lse, rl, rows, v, ignore_index);
        CUDA_LAUNCHED("ce_rows_kernel");
    }
    ce_reduce_kernel<<<1, CE_REDUCE_THREADS, 0, agc_stream()>>>(targets, rl, rows, v, ignore_index,
                                                                (float *)loss, dsum);
    CUDA_LAUNCHED("ce_reduce_kernel");
    ce_summary h;
    CUDA_CHECK(cudaMemcpyAsync(&h, dsum, sizeof h, cudaMemcpyDeviceToHost, agc_stream()));
    CUDA_CHECK(cudaStreamSynchronize(agc_stream())); // count is needed on the host now
    if (h.bad_row >= 0)
        ag_fail("cross_entropy: target %d at row %lld outside vocabulary of %lld", h.bad_target,
                h.bad_row, (long long)v);
    if (count) *count = h.count;
}

// glogits[r,:] += gscale (softmax - onehot(target)), softmax = exp(x - lse); ignored rows (and
// out-of-range targets, refused by the forward) untouched. gscale already holds 1 / count.
template <typename T>
__global__ void ce_bwd_kernel(const T *L, const int32_t *targets, const float *lse, float gs, T *GL,
                              long long rows, long long v, int32_t ignore_index) {
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const int32_t t = targets[r];
        if (t == ignore_index || t < 0 || (long long)t >= v) continue;
        const T *x = L + r * v;
        T *gl = GL + r * v;
        const float l = lse[r];
        for (long long j = threadIdx.x; j < v; j += blockDim.x)
            agc_st(gl, j, agc_ld(gl, j) + gs * (expf(agc_ld(x, j) - l) - (j == t ? 1.f : 0.f)));
    }
}

template <typename T>
void cross_entropy_bwd(const void *logits, const int32_t *targets, const void *lse, double gscale,
                       void *glogits, int64_t rows, int64_t v, int32_t ignore_index) {
    if (!glogits || rows <= 0 || v <= 0) return;
    need_device_ptr(targets, "cross_entropy", "targets");
    ce_bwd_kernel<<<row_grid(rows), row_threads(v), 0, agc_stream()>>>(
        (const T *)logits, targets, (const float *)lse, (float)gscale, (T *)glogits, rows, v,
        ignore_index);
    CUDA_LAUNCHED("ce_bwd_kernel");
}

// --------------------------------------------------------------------------------------------
// RoPE, rotate-half pairing (i, i + D/2) as the CPU: angle = pos * theta^(-2i/D) in f64,
// cos and sin rounded to f32. x (B,T,H,D) strided (s_b, s_t, s_h), out contiguous.
// Block per (b, t); threadIdx.x over i < D/2 (angle computed once per i), threadIdx.y over
// heads. BWD: the adjoint (rotation by -angle) of contiguous g, added into contiguous gx.

template <typename T, bool BWD> __global__ void rope_kernel(ag_rope_args a, const T *in, T *out) {
    const long long half = a.D / 2, BT = a.B * a.T;
    for (long long bt = blockIdx.x; bt < BT; bt += gridDim.x) {
        const long long b = bt / a.T, t = bt % a.T;
        const double pos = (double)a.pos[a.pos_per_batch ? bt : t];
        for (long long i = threadIdx.x; i < half; i += blockDim.x) {
            double sd, cd;
            sincos(pos * pow(a.theta, -2.0 * (double)i / (double)a.D), &sd, &cd);
            const float cs = (float)cd, sn = (float)sd;
            for (long long h = threadIdx.y; h < a.H; h += blockDim.y) {
                const long long o = (bt * a.H + h) * a.D;
                if (!BWD) {
                    const T *x = in + b * a.s_b + t * a.s_t + h * a.s_h;
                    const float x0 = agc_ld(x, i), x1 = agc_ld(x, i + half);
                    agc_st(out, o + i, x0 * cs - x1 * sn);
                    agc_st(out, o + i + half, x1 * cs + x0 * sn);
                } else {
                    const float g0 = agc_ld(in, o + i), g1 = agc_ld(in, o + i + half);
                    agc_st(out, o + i, agc_ld(out, o + i) + g0 * cs + g1 * sn);
                    agc_st(out, o + i + half, agc_ld(out, o + i + half) + g1 * cs - g0 * sn);
                }
            }
        }
    }
}

template <typename T, bool BWD> void rope_launch(const ag_rope_args *a, const void *in, void *out) {
    const long long half = a->D / 2;
    if (a->B <= 0 || a->T <= 0 || a->H <= 0 || half <= 0) return;
    need_device_ptr(a->pos, "rope", "pos");
    int bx = 32;
    while (bx < half && bx < 128) bx <<= 1;
    long long by = 256 / bx;
    if (by > a->H) by = a->H;
    rope_kernel<T, BWD><<<row_grid(a->B * a->T), dim3(bx, (unsigned)by), 0, agc_stream()>>>(
        *a, (const T *)in, (T *)out);
    CUDA_LAUNCHED(BWD ? "rope_kernel (backward)" : "rope_kernel");
}

template <typename T> void rope_fwd(const ag_rope_args *a, const void *x, void *out) {
    rope_launch<T, false>(a, x, out);
}
template <typename T> void rope_bwd(const ag_rope_args *a, const void *g, void *gx) {
    if (gx) rope_launch<T, true>(a, g, gx);
}

template <typename T> void fill_table(ag_kernels *k) {
    k->rmsnorm_fwd = rmsnorm_fwd<T>;
    k->rmsnorm_bwd = rmsnorm_bwd<T>;
    k->layernorm_fwd = layernorm_fwd<T>;
    k->layernorm_bwd = layernorm_bwd<T>;
    k->l2norm_fwd = l2norm_fwd<T>;
    k->l2norm_bwd = l2norm_bwd<T>;
    k->softmax_fwd = softmax_fwd<T>;
    k->softmax_bwd = softmax_bwd<T>;
    k->cross_entropy_fwd = cross_entropy_fwd<T>;
    k->cross_entropy_bwd = cross_entropy_bwd<T>;
    k->rope_fwd = rope_fwd<T>;
    k->rope_bwd = rope_bwd<T>;
}

} // namespace

void agc_register_norm(ag_kernels *k, ag_dtype dt) {
    if (dt == AG_F32) fill_table<float>(k);
    if (dt == AG_BF16) fill_table<bf16>(k);
}
