// cuda_elementwise.cu: fill, axpy, strided add, binary ops (broadcast gradients reduced in a
// fixed order, no atomics), unary ops, SwiGLU, row gather / scatter-add / set, reductions,
// dropout (the CPU's keep hash, bit for bit), sum of squares, patchify on CUDA, for f32 and
// bf16 (loads widen to f32, stores round to nearest even). Semantics: autograd/cpu/kernels.inc.
// Every result is deterministic: each output element is written by one thread, sums run in an
// order fixed by the shape.
#include <limits.h>

#include <cub/device/device_radix_sort.cuh>

#include "autograd/cuda/cuda_common.cuh"

namespace {

constexpr int TPB = 256; // threads per block of the elementwise kernels

#define GRID_STRIDE(i, n)                                                                          \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                  \
         i += (long long)gridDim.x * blockDim.x)

// Rounding of an accumulator to the storage type after each add, where the CPU rounds too
// (strided add, scatter-add on bf16): identity for f32.
template <typename T> struct Round {
    __device__ static float f(float v) { return v; }
};
template <> struct Round<bf16> {
    __device__ static float f(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }
};

// Device scratch, one buffer per slot: grows (never shrinks), so a warm loop never allocates.
enum { SCR_PART, SCR_RESULT, SCR_KEYS, SCR_ROWS_IN, SCR_ROWS, SCR_CUB, SCR_N };
void *scratch(int slot, size_t bytes) {
    static agc_scratch buf[SCR_N];
    return agc_scratch_get(&buf[slot], bytes < 256 ? 256 : bytes);
}

// ---------------------------------------------------------------------------------------
// Fill, axpy, strided add

template <typename T> __global__ void fill_kernel(T *x, long long n, float v) {
    GRID_STRIDE(i, n) agc_st(x, i, v);
}

template <typename T> void fill(void *x, int64_t n, double v) {
    if (n <= 0) return;
    fill_kernel<T><<<agc_blocks(n, TPB), TPB, 0, agc_stream()>>>((T *)x, n, (float)v);
    CUDA_LAUNCHED("fill_kernel");
}

template <typename T> __global__ void axpy_kernel(T *y, const T *x, long long n, float al) {
    GRID_STRIDE(i, n) agc_st(y, i, agc_ld(y, i) + al * agc_ld(x, i));
}

template <typename T> void axpy(void *y, const void *x, int64_t n, double alpha) {
    if (n <= 0) return;
    axpy_kernel<T>
        <<<agc_blocks(n, TPB), TPB, 0, agc_stream()>>>((T *)y, (const T *)x, n, (float)alpha);
    CUDA_LAUNCHED("axpy_kernel");
}

// A layout as 4 dims (leading size-1 dims pad it); coll[d]: a stride-0 dim of size > 1,
// along which many source elements land on one destination element.
struct strided4 {
    long long sh[4], st[4];
    int coll[4];
};

// One thread per distinct destination element: it adds the sources that land on it in the
// CPU's order (row-major over the collapsed dims), rounding after each add as the CPU does.
template <typename T>
__global__ void add_strided_kernel(T *dst, const T *src, strided4 l, long long n_keep,
                                   long long n_coll) {
    GRID_STRIDE(t, n_keep) {
        long long c[4], rem = t, doff = 0;
        for (int d = 3; d >= 0; d--) {
            if (l.coll[d]) {
                c[d] = 0;
            } else {
                c[d] = rem % l.sh[d];
                rem /= l.sh[d];
                doff += c[d] * l.st[d];
            }
        }
        float acc = agc_ld(dst, doff);
        for (long long r = 0; r < n_coll; r++) {
            long long rr = r;
            for (int d = 3; d >= 0; d--)
                if (l.coll[d]) {
                    c[d] = rr % l.sh[d];
                    rr /= l.sh[d];
                }
            const long long soff = ((c[0] * l.sh[1] + c[1]) * l.sh[2] + c[2]) * l.sh[3] + c[3];
            acc = Round<T>::f(acc + agc_ld(src, soff));
        }
        agc_st(dst, doff, acc);
    }
}

template <typename T> void add_strided(void *dst, const ag_layout *layout, const void *src) {
    strided4 l;
    const int pad = 4 - layout->ndim;
    long long n_keep = 1, n_coll = 1;
    for (int d = 0; d < 4; d++) {
        l.sh[d] = d < pad ? 1 : layout->shape[d - pad];
        l.st[d] = d < pad ? 0 : layout->stride[d - pad];
        l.coll[d] = l.sh[d] > 1 && l.st[d] == 0;
        if (l.coll[d])
            n_coll *= l.sh[d];
        else
            n_keep *= l.sh[d];
    }
    if (n_keep == 0 || n_coll == 0) return;
    add_strided_kernel<T><<<agc_blocks(n_keep, TPB), TPB, 0, agc_stream()>>>(
        (T *)dst + layout->offset, (const T *)src, l, n_keep, n_coll);
    CUDA_LAUNCHED("add_strided_kernel");
}

// ---------------------------------------------------------------------------------------
// Binary ops with broadcasting

struct bin_dims {
    long long sh[4], as[4], bs[4];
};

__device__ __forceinline__ float bin_apply(int op, float x, float y) {
    return op == AG_BIN_ADD ? x + y : op == AG_BIN_SUB ? x - y : x * y;
}

// How an operand is indexed from output element i: the output's own shape (i), one row of C
// repeated (i % C; a bias), or through its strides.
enum { IDX_FULL, IDX_ROW, IDX_STRIDED };

// The operand is one row (C) repeated over the leading dims (kernels.inc is_row).
bool is_row(const int64_t st[4], const int64_t sh[4]) {
    for (int d = 0; d < 3; d++)
        if (st[d] != 0 && sh[d] != 1) return false;
    return st[3] == 1 || sh[3] == 1;
}

int index_mode(bool full, const int64_t st[4], const int64_t sh[4]) {
    return full ? IDX_FULL : is_row(st, sh) ? IDX_ROW : IDX_STRIDED;
}

// out[i] = a op b, one thread per output element. out may be a (in place): each thread reads
// its operands before writing its own element, and a full operand is read at i.
template <typename T>
__global__ void binary_fwd_kernel(int op, bin_dims s, const T *a, const T *b, T *out, long long n,
                                  int a_mode, int b_mode) {
    const long long C = s.sh[3];
    GRID_STRIDE(i, n) {
        long long ao = a_mode == IDX_FULL ? i : i % C, bo = b_mode == IDX_FULL ? i : i % C;
        if (a_mode == IDX_STRIDED || b_mode == IDX_STRIDED) {
            long long rem = i, ao_ = 0, bo_ = 0;
            for (int d = 3; d >= 0; d--) {
                const long long c = rem % s.sh[d];
                rem /= s.sh[d];
                ao_ += c * s.as[d];
                bo_ += c * s.bs[d];
            }
            if (a_mode == IDX_STRIDED) ao = ao_;
            if (b_mode == IDX_STRIDED) bo = bo_;
        }
        const float x = agc_ld(a, ao), y = agc_ld(b, bo);
        agc_st(out, i, bin_apply(op, x, y));
    }
}

template <typename T>
void binary_fwd(ag_binary_op op, const ag_bcast *bc, const void *a, const void *b, void *out) {
    bin_dims s;
    long long n = 1;
    for (int d = 0; d < 4; d++) {
        s.sh[d] = bc->shape[d];
        s.as[d] = bc->a_stride[d];
        s.bs[d] = bc->b_stride[d];
        n *= s.sh[d];
    }
    if (n <= 0) return;
    const int am = index_mode(bc->a_full, bc->a_stride, bc->shape);
    const int bm = index_mode(bc->b_full, bc->b_stride, bc->shape);
    binary_fwd_kernel<T><<<agc_blocks(n, TPB), TPB, 0, agc_stream()>>>(
        (int)op, s, (const T *)a, (const T *)b, (T *)out, n, am, bm);
    CUDA_LAUNCHED("binary_fwd_kernel");
}

// The gradient of operand X: kept dims (X's stride != 0) index X's gradient; reduced dims
// (X's stride 0, size > 1) are summed over. Offsets into gx (xs), g (contiguous output, gs)
// and the other operand Y (ys, 0 when Y is absent).
struct grad_dims {
    int nk, nr;
    long long ksz[4], kxs[4], kgs[4], kys[4];
    long long rsz[4], rgs[4], rys[4];
};

__device__ __forceinline__ void kept_offsets(const grad_dims &d, long long t, long long *xo,
                                             long long *go, long long *yo) {
    long long rem = t;
    *xo = *go = *yo = 0;
    for (int q = d.nk - 1; q >= 0; q--) {
        const long long c = rem % d.ksz[q];
        rem /= d.ksz[q];
        *xo += c * d.kxs[q];
        *go += c * d.kgs[q];
        *yo += c * d.kys[q];
    }
}

// Thread (t, chunk k) sums g * y (or g) over reduced indices [k*cs, min(n_red, (k+1)*cs)) for
// X element t, walking the reduced dims as an odometer. With part, the sum goes to
// part[k*nx + t] (grad_finish_kernel adds the chunks in order); without, into gx directly.
// flat: X, g and Y are all indexed by t (X has the output's shape, Y absent or full).
template <typename T>
__global__ void binary_grad_kernel(grad_dims d, const T *g, const T *y, float sign, T *gx,
                                   float *part, long long nx, long long n_red, long long cs,
                                   bool flat) {
    const long long k = blockIdx.y;
    const long long r0 = k * cs, r1 = min(n_red, r0 + cs);
    GRID_STRIDE(t, nx) {
        long long xo = t, go = t, yo = t;
        if (!flat) kept_offsets(d, t, &xo, &go, &yo);
        long long c[4] = {0, 0, 0, 0}, rem = r0;
        for (int q = d.nr - 1; q >= 0; q--) {
            c[q] = rem % d.rsz[q];
            rem /= d.rsz[q];
            go += c[q] * d.rgs[q];
            yo += c[q] * d.rys[q];
        }
        float acc = 0.f;
        for (long long r = r0; r < r1; r++) {
            const float gv = agc_ld(g, go);
            acc += y ? gv * agc_ld(y, yo) : gv;
            for (int q = d.nr - 1; q >= 0; q--) { // next reduced index
                go += d.rgs[q];
                yo += d.rys[q];
                if (++c[q] < d.rsz[q]) break;
                go -= d.rsz[q] * d.rgs[q];
                yo -= d.rsz[q] * d.rys[q];
                c[q] = 0;
            }
        }
        if (part)
            part[k * nx + t] = acc;
        else
            agc_st(gx, xo, agc_ld(gx, xo) + sign * acc);
    }
}

template <typename T>
__global__ void grad_finish_kernel(grad_dims d, const float *part, long long nch, long long nx,
                                   float sign, T *gx) {
    GRID_STRIDE(t, nx) {
        float s = 0.f;
        for (long long k = 0; k < nch; k++) s += part[k * nx + t];
        long long xo, go, yo;
        kept_offsets(d, t, &xo, &go, &yo);
        agc_st(gx, xo, agc_ld(gx, xo) + sign * s);
    }
}

// gx += sign * (sum over broadcast dims of g * y) (y NULL: of g).
template <typename T>
void binary_grad(const ag_bcast *bc, bool x_full, const int64_t xs[4], const T *y, bool y_full,
                 const int64_t ys_[4], float sign, const T *g, T *gx) {
    grad_dims d = {};
    long long os[4], n = 1, nx = 1, n_red = 1;
    for (int q = 3; q >= 0; q--) {
        os[q] = n; // contiguous strides of the output (and of g)
        n *= bc->shape[q];
    }
    if (n <= 0) return;
    for (int q = 0; q < 4; q++) {
        const long long sz = bc->shape[q], ysq = y ? ys_[q] : 0;
        if (xs[q] != 0) {
            d.ksz[d.nk] = sz, d.kxs[d.nk] = xs[q], d.kgs[d.nk] = os[q], d.kys[d.nk] = ysq;
            d.nk++;
            nx *= sz;
        } else if (sz > 1) {
            d.rsz[d.nr] = sz, d.rgs[d.nr] = os[q], d.rys[d.nr] = ysq;
            d.nr++;
            n_red *= sz;
        }
    }
    const bool flat = x_full && (!y || y_full);
    // Chunks of the reduced range: enough threads to fill the GPU, at least 64 terms each,
    // from the shape alone (so the summation order never changes).
    long long nch = 1;
    if (n_red >= 128) {
        nch = (131072 + nx - 1) / nx;
        nch = nch < n_red / 64 ? nch : n_red / 64;
        nch = nch > 1024 ? 1024 : nch < 1 ? 1 : nch;
    }
    const long long cs = (n_red + nch - 1) / nch;
    nch = (n_red + cs - 1) / cs;
    const dim3 grid(agc_blocks(nx, TPB), (unsigned)nch);
    float *part =
        nch > 1 ? (float *)scratch(SCR_PART, (size_t)(nch * nx) * sizeof(float)) : nullptr;
    binary_grad_kernel<T>
        <<<grid, TPB, 0, agc_stream()>>>(d, g, y, sign, gx, part, nx, n_red, cs, flat);
    CUDA_LAUNCHED("binary_grad_kernel");
    if (part) {
        grad_finish_kernel<T>
            <<<agc_blocks(nx, TPB), TPB, 0, agc_stream()>>>(d, part, nch, nx, sign, gx);
        CUDA_LAUNCHED("grad_finish_kernel");
    }
}

template <typename T>
void binary_bwd(ag_binary_op op, const ag_bcast *bc, const void *a_, const void *b_, const void *g_,
                void *ga, void *gb) {
    const T *a = (const T *)a_, *b = (const T *)b_, *g = (const T *)g_;
    const bool mul = op == AG_BIN_MUL;
    if (ga)
        binary_grad<T>(bc, bc->a_full, bc->a_stride, mul ? b : nullptr, bc->b_full, bc->b_stride,
                       1.f, g, (T *)ga);
    if (gb)
        binary_grad<T>(bc, bc->b_full, bc->b_stride, mul ? a : nullptr, bc->a_full, bc->a_stride,
                       op == AG_BIN_SUB ? -1.f : 1.f, g, (T *)gb);
}

// ---------------------------------------------------------------------------------------
// Unary ops, SwiGLU (the formulas of kernels.inc, with CUDA's expf / erff / tanhf)

#define GELU_K0     0.7978845608028654f // sqrt(2/pi)
#define GELU_K1     0.044715f
#define INV_SQRT2   0.7071067811865476f
#define INV_SQRT2PI 0.3989422804014327f

__device__ __forceinline__ float sigmoid(float x) {
    return 1.f / (1.f + expf(-x));
}
__device__ __forceinline__ float un_fwd(int op, float x, float p) {
    switch (op) {
    case AG_UN_SCALE:
        return p * x;
    case AG_UN_SILU:
        return x * sigmoid(x);
    case AG_UN_GELU:
        return 0.5f * x * (1.f + erff(x * INV_SQRT2));
    case AG_UN_GELU_TANH:
        return 0.5f * x * (1.f + tanhf(GELU_K0 * (x + GELU_K1 * x * x * x)));
    default: // AG_UN_QUICK_GELU
        return x * sigmoid(1.702f * x);
    }
}
__device__ __forceinline__ float silu_d(float x) {
    const float s = sigmoid(x);
    return s * (1.f + x * (1.f - s));
}
// d out / d x
__device__ __forceinline__ float un_d(int op, float x, float p) {
    switch (op) {
    case AG_UN_SCALE:
        return p;
    case AG_UN_SILU:
        return silu_d(x);
    case AG_UN_GELU:
        return 0.5f * (1.f + erff(x * INV_SQRT2)) + x * INV_SQRT2PI * expf(-0.5f * x * x);
    case AG_UN_GELU_TANH: {
        const float t = tanhf(GELU_K0 * (x + GELU_K1 * x * x * x));
        return 0.5f * (1.f + t) +
               0.5f * x * (1.f - t * t) * GELU_K0 * (1.f + 3.f * GELU_K1 * x * x);
    }
    default: { // AG_UN_QUICK_GELU
        const float s = sigmoid(1.702f * x);
        return s + 1.702f * x * s * (1.f - s);
    }
    }
}

template <typename T>
__global__ void unary_fwd_kernel(int op, const T *x, T *out, long long n, float p) {
    GRID_STRIDE(i, n) agc_st(out, i, un_fwd(op, agc_ld(x, i), p));
}

template <typename T>
void unary_fwd(ag_unary_op op, const void *x, void *out, int64_t n, double p) {
    if (n <= 0) return;
    unary_fwd_kernel<T><<<agc_blocks(n, TPB), TPB, 0, agc_stream()>>>((int)op, (const T *)x,
                                                                      (T *)out, n, (float)p);
    CUDA_LAUNCHED("unary_fwd_kernel");
}

// gx += g * f'(x); for SCALE x is not read (it may be NULL)
template <typename T>
__global__ void unary_bwd_kernel(int op, const T *x, const T *g, T *gx, long long n, float p) {
    GRID_STRIDE(i, n) {
        const float d = op == AG_UN_SCALE ? p : un_d(op, agc_ld(x, i), p);
        agc_st(gx, i, agc_ld(gx, i) + agc_ld(g, i) * d);
    }
}

template <typename T>
void unary_bwd(ag_unary_op op, const void *x, const void *g, void *gx, int64_t n, double p) {
    if (!gx || n <= 0) return;
    unary_bwd_kernel<T><<<agc_blocks(n, TPB), TPB, 0, agc_stream()>>>(
        (int)op, (const T *)x, (const T *)g, (T *)gx, n, (float)p);
    CUDA_LAUNCHED("unary_bwd_kernel");
}

template <typename T>
__global__ void swiglu_fwd_kernel(const T *gate, const T *up, T *out, long long n) {
    GRID_STRIDE(i, n) {
        const float x = agc_ld(gate, i);
        agc_st(out, i, x * sigmoid(x) * agc_ld(up, i));
    }
}

template <typename T> void swiglu_fwd(const void *gate, const void *up, void *out, int64_t n) {
    if (n <= 0) return;
    swiglu_fwd_kernel<T>
        <<<agc_blocks(n, TPB), TPB, 0, agc_stream()>>>((const T *)gate, (const T *)up, (T *)out, n);
    CUDA_LAUNCHED("swiglu_fwd_kernel");
}

// out = x s(x) u:  ggate += g u s (1 + x (1 - s)),  gup += g x s; either may be NULL
template <typename T>
__global__ void swiglu_bwd_kernel(const T *gate, const T *up, const T *g, T *ggate, T *gup,
                                  long long n) {
    GRID_STRIDE(i, n) {
        const float x = agc_ld(gate, i), s = sigmoid(x), gi = agc_ld(g, i);
        if (ggate)
            agc_st(ggate, i, agc_ld(ggate, i) + gi * agc_ld(up, i) * s * (1.f + x * (1.f - s)));
        if (gup) agc_st(gup, i, agc_ld(gup, i) + gi * x * s);
    }
}

template <typename T>
void swiglu_bwd(const void *gate, const void *up, const void *g, void *ggate, void *gup,
                int64_t n) {
    if ((!ggate && !gup) || n <= 0) return;
    swiglu_bwd_kernel<T><<<agc_blocks(n, TPB), TPB, 0, agc_stream()>>>(
        (const T *)gate, (const T *)up, (const T *)g, (T *)ggate, (T *)gup, n);
    CUDA_LAUNCHED("swiglu_bwd_kernel");
}

// ---------------------------------------------------------------------------------------
// Rows: gather, scatter-add, set

template <typename T>
__global__ void rows_gather_kernel(const T *src, const int32_t *idx, T *out, long long m,
                                   long long c) {
    GRID_STRIDE(e, m * c) {
        const long long i = e / c, j = e - i * c;
        out[e] = src[(long long)idx[i] * c + j];
    }
}

template <typename T>
void rows_gather(const void *src, const int32_t *idx, void *out, int64_t m, int64_t c) {
    if (m <= 0 || c <= 0) return;
    rows_gather_kernel<T>
        <<<agc_blocks(m * c, TPB), TPB, 0, agc_stream()>>>((const T *)src, idx, (T *)out, m, c);
    CUDA_LAUNCHED("rows_gather_kernel");
}

__global__ void iota_kernel(int32_t *x, long long n) {
    GRID_STRIDE(i, n) x[i] = (int32_t)i;
}

// After a stable sort of (idx[i], i), the rows adding into one destination row are
// consecutive, in increasing i. Block x = sorted position s: only the first position of each
// index works; its threads split the columns and add the rows in order of i, rounding after
// each add: the CPU's arithmetic, bit for bit, in f32 and bf16.
template <typename T>
__global__ void scatter_segments_kernel(const T *g, const int32_t *keys, const int32_t *rows,
                                        T *dst, long long m, long long c) {
    const long long s = blockIdx.x;
    if (s >= m || (s > 0 && keys[s] == keys[s - 1])) return;
    const int32_t key = keys[s];
    T *d = dst + (long long)key * c;
    for (long long j = (long long)blockIdx.y * blockDim.x + threadIdx.x; j < c;
         j += (long long)gridDim.y * blockDim.x) {
        float acc = agc_ld(d, j);
        for (long long t = s; t < m && keys[t] == key; t++)
            acc = Round<T>::f(acc + agc_ld(g, (long long)rows[t] * c + j));
        agc_st(d, j, acc);
    }
}

// Indices may repeat. Rather than atomics (order-dependent in f32, and bf16 atomics round
// every add in a racing order) the rows are grouped by a radix sort of the indices (CUB,
// stable and deterministic), then each destination row is summed by one set of threads.
template <typename T>
void rows_scatter_add(const void *g, const int32_t *idx, void *dst, int64_t m, int64_t c) {
    if (m <= 0 || c <= 0) return;
    if (m > INT_MAX)
        ag_fail("rows_scatter_add: %lld rows (at most %d on cuda)", (long long)m, INT_MAX);
    int32_t *keys = (int32_t *)scratch(SCR_KEYS, (size_t)m * sizeof(int32_t));
    int32_t *rows_in = (int32_t *)scratch(SCR_ROWS_IN, (size_t)m * sizeof(int32_t));
    int32_t *rows = (int32_t *)scratch(SCR_ROWS, (size_t)m * sizeof(int32_t));
    iota_kernel<<<agc_blocks(m, TPB), TPB, 0, agc_stream()>>>(rows_in, m);
    CUDA_LAUNCHED("iota_kernel");
    size_t tmp_bytes = 0;
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, tmp_bytes, idx, keys, rows_in, rows, (int)m,
                                               0, 32, agc_stream()));
    void *tmp = scratch(SCR_CUB, tmp_bytes);
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(tmp, tmp_bytes, idx, keys, rows_in, rows, (int)m, 0,
                                               32, agc_stream()));
    const long long cb = (c + TPB - 1) / TPB;
    const dim3 grid((unsigned)m, (unsigned)(cb > 65535 ? 65535 : cb));
    scatter_segments_kernel<T>
        <<<grid, TPB, 0, agc_stream()>>>((const T *)g, keys, rows, (T *)dst, m, c);
    CUDA_LAUNCHED("scatter_segments_kernel");
}

// dst[idx[i],:] = src ? src[i,:] : 0 (indices distinct: one writer per element)
template <typename T>
__global__ void rows_set_kernel(T *dst, const int32_t *idx, const T *src, long long m,
                                long long c) {
    GRID_STRIDE(e, m * c) {
        const long long i = e / c, j = e - i * c;
        const long long o = (long long)idx[i] * c + j;
        if (src)
            dst[o] = src[e];
        else
            agc_st(dst, o, 0.f);
    }
}

template <typename T>
void rows_set(void *dst, const int32_t *idx, const void *src, int64_t m, int64_t c) {
    if (m <= 0 || c <= 0) return;
    rows_set_kernel<T>
        <<<agc_blocks(m * c, TPB), TPB, 0, agc_stream()>>>((T *)dst, idx, (const T *)src, m, c);
    CUDA_LAUNCHED("rows_set_kernel");
}

// ---------------------------------------------------------------------------------------
// Reductions. Sums of long ranges run in two passes: fixed chunks (one block each) sum in
// double into partials, then one block per result adds its partials; the order depends on
// the sizes alone.

constexpr int SUM_TPB = 256;
constexpr long long SUM_CHUNK = SUM_TPB * 32; // elements per block of the first pass

// part[o * nch + k] = sum over chunk k of segment o (x + o*n, n elements) of x (or x^2)
template <typename T>
__global__ void sum_chunks_kernel(const T *x, long long n, long long nch, bool squares,
                                  double *part) {
    const long long k = blockIdx.x, o = blockIdx.y;
    const long long lo = k * SUM_CHUNK, hi = min(n, lo + SUM_CHUNK);
    const T *xs = x + o * n;
    double acc = 0;
    for (long long i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        const double v = (double)agc_ld(xs, i);
        acc += squares ? v * v : v;
    }
    acc = agc_block_sum_f64(acc);
    if (threadIdx.x == 0) part[o * nch + k] = acc;
}

// Per segment o (block y): scale * sum of its nch partials, into out[o] (T) or res[o] (double)
template <typename T>
__global__ void sum_finish_kernel(const double *part, long long nch, double scale, T *out,
                                  double *res) {
    const long long o = blockIdx.x;
    double acc = 0;
    for (long long k = threadIdx.x; k < nch; k += blockDim.x) acc += part[o * nch + k];
    acc = agc_block_sum_f64(acc);
    if (threadIdx.x == 0) {
        if (out) agc_st(out, o, (float)(scale * acc));
        if (res) res[o] = scale * acc;
    }
}

// Sums over segments: out[o] = scale * sum of x[o*n .. o*n + n) (or res[o] in double)
template <typename T>
void sum_segments(const T *x, long long outer, long long n, bool squares, double scale, T *out,
                  double *res) {
    const long long nch = (n + SUM_CHUNK - 1) / SUM_CHUNK;
    double *part = (double *)scratch(SCR_PART, (size_t)(outer * nch) * sizeof(double));
    sum_chunks_kernel<T><<<dim3((unsigned)nch, (unsigned)outer), SUM_TPB, 0, agc_stream()>>>(
        x, n, nch, squares, part);
    CUDA_LAUNCHED("sum_chunks_kernel");
    sum_finish_kernel<T><<<(unsigned)outer, 1024, 0, agc_stream()>>>(part, nch, scale, out, res);
    CUDA_LAUNCHED("sum_finish_kernel");
}

template <typename T> double sum_squares(const void *x, int64_t n) {
    if (n <= 0) return 0;
    if ((n + SUM_CHUNK - 1) / SUM_CHUNK > INT_MAX)
        ag_fail("sum_squares: %lld elements", (long long)n);
    double *res = (double *)scratch(SCR_RESULT, sizeof(double));
    sum_segments<T>((const T *)x, 1, n, true, 1.0, nullptr, res);
    double h = 0;
    CUDA_CHECK(cudaMemcpyAsync(&h, res, sizeof h, cudaMemcpyDeviceToHost, agc_stream()));
    CUDA_CHECK(cudaStreamSynchronize(agc_stream()));
    return h;
}

// inner == 1, one warp per output: lanes stride over the n terms, then a fixed shuffle tree.
template <typename T>
__global__ void reduce_rows_kernel(const T *x, T *out, long long outer, long long n, double scale) {
    const int lane = threadIdx.x & 31;
    const long long w0 = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const long long nw = ((long long)gridDim.x * blockDim.x) >> 5;
    for (long long o = w0; o < outer; o += nw) { // whole warps take the same trips
        double acc = 0;
        for (long long k = lane; k < n; k += 32) acc += (double)agc_ld(x, o * n + k);
        for (int s = 16; s > 0; s >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, s);
        if (lane == 0) agc_st(out, o, (float)(scale * acc));
    }
}

// inner > 1: one thread per output (o, i), summing over n in order (reads coalesce over i).
template <typename T>
__global__ void reduce_inner_kernel(const T *x, T *out, long long outer, long long n,
                                    long long inner, double scale) {
    GRID_STRIDE(e, outer * inner) {
        const long long o = e / inner, i = e - o * inner;
        const T *xs = x + o * n * inner + i;
        double acc = 0;
        for (long long k = 0; k < n; k++) acc += (double)agc_ld(xs, k * inner);
        agc_st(out, e, (float)(scale * acc));
    }
}

// x (outer, n, inner) -> out (outer, inner) = scale * sum over n, in double
template <typename T>
void reduce_fwd(const void *x_, void *out_, int64_t outer, int64_t n, int64_t inner, double scale) {
    const T *x = (const T *)x_;
    T *out = (T *)out_;
    if (outer <= 0 || inner <= 0) return;
    if (n <= 0) { // empty sums
        fill<T>(out, outer * inner, 0.0);
        return;
    }
    if (inner == 1 && outer < 64 && n > 65536) { // few long sums: split each into chunks
        sum_segments<T>(x, outer, n, false, scale, out, nullptr);
    } else if (inner == 1) {
        reduce_rows_kernel<T>
            <<<agc_blocks(outer * 32, TPB), TPB, 0, agc_stream()>>>(x, out, outer, n, scale);
        CUDA_LAUNCHED("reduce_rows_kernel");
    } else {
        reduce_inner_kernel<T><<<agc_blocks(outer * inner, TPB), TPB, 0, agc_stream()>>>(
            x, out, outer, n, inner, scale);
        CUDA_LAUNCHED("reduce_inner_kernel");
    }
}

// gx[o,k,i] += scale * g[o,i]
template <typename T>
__global__ void reduce_bwd_kernel(const T *g, T *gx, long long n, long long inner, long long total,
                                  float sc) {
    GRID_STRIDE(e, total) {
        const long long i = e % inner, o = e / (n * inner);
        agc_st(gx, e, agc_ld(gx, e) + sc * agc_ld(g, o * inner + i));
    }
}

template <typename T>
void reduce_bwd(const void *g, void *gx, int64_t outer, int64_t n, int64_t inner, double scale) {
    const long long total = (long long)outer * n * inner;
    if (!gx || total <= 0) return;
    reduce_bwd_kernel<T><<<agc_blocks(total, TPB), TPB, 0, agc_stream()>>>(
        (const T *)g, (T *)gx, n, inner, total, (float)scale);
    CUDA_LAUNCHED("reduce_bwd_kernel");
}

// ---------------------------------------------------------------------------------------
// Dropout: element i kept when u(seed, i) >= p, u from splitmix64 exactly as on the CPU
// (integer arithmetic, and a product by 2^-53 that is exact), so CPU and GPU keep the same.

__device__ __forceinline__ double dropout_u(unsigned long long seed, long long i) {
    unsigned long long z = seed + (unsigned long long)(i + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0); // 2^-53
}

template <typename T>
__global__ void dropout_fwd_kernel(const T *x, T *out, long long n, double p, float keep,
                                   unsigned long long seed) {
    GRID_STRIDE(i, n) {
        if (p <= 0)
            out[i] = x[i];
        else
            agc_st(out, i, dropout_u(seed, i) >= p ? agc_ld(x, i) * keep : 0.f);
    }
}

template <typename T>
void dropout_fwd(const void *x, void *out, int64_t n, double p, uint64_t seed) {
    if (n <= 0) return;
    const float keep = p < 1 ? (float)(1 / (1 - p)) : 0.f; // p >= 1 drops everything
    dropout_fwd_kernel<T>
        <<<agc_blocks(n, TPB), TPB, 0, agc_stream()>>>((const T *)x, (T *)out, n, p, keep, seed);
    CUDA_LAUNCHED("dropout_fwd_kernel");
}

template <typename T>
__global__ void dropout_bwd_kernel(const T *g, T *gx, long long n, double p, float keep,
                                   unsigned long long seed) {
    GRID_STRIDE(i, n) {
        if (p <= 0)
            agc_st(gx, i, agc_ld(gx, i) + agc_ld(g, i));
        else if (dropout_u(seed, i) >= p)
            agc_st(gx, i, agc_ld(gx, i) + agc_ld(g, i) * keep);
    }
}

template <typename T>
void dropout_bwd(const void *g, void *gx, int64_t n, double p, uint64_t seed) {
    if (!gx || n <= 0) return;
    const float keep = p < 1 ? (float)(1 / (1 - p)) : 0.f;
    dropout_bwd_kernel<T>
        <<<agc_blocks(n, TPB), TPB, 0, agc_stream()>>>((const T *)g, (T *)gx, n, p, keep, seed);
    CUDA_LAUNCHED("dropout_bwd_kernel");
}

// ---------------------------------------------------------------------------------------
// Patches (channels-last): out (B, Nh*Nw, ph*pw*C), patch (i, j) element (py, px, c) =
// x[b, i*sh + py, j*sw + px, c].

struct patch_dims {
    long long B, H, W, C, ph, pw, sh, sw, Nh, Nw;
};

template <typename T>
__global__ void patchify_fwd_kernel(patch_dims a, const T *x, T *out, long long total) {
    GRID_STRIDE(e, total) {
        long long r = e;
        const long long ch = r % a.C;
        r /= a.C;
        const long long px = r % a.pw;
        r /= a.pw;
        const long long py = r % a.ph;
        r /= a.ph; // r = (b * Nh + i) * Nw + j
        const long long j = r % a.Nw;
        r /= a.Nw;
        const long long i = r % a.Nh, b = r / a.Nh;
        out[e] = x[((b * a.H + i * a.sh + py) * a.W + j * a.sw + px) * a.C + ch];
    }
}

template <typename T> void patchify_fwd(const ag_patch_args *p, const void *x, void *out) {
    const patch_dims a = {p->B, p->H, p->W, p->C, p->ph, p->pw, p->sh, p->sw, p->Nh, p->Nw};
    const long long total = a.B * a.Nh * a.Nw * a.ph * a.pw * a.C;
    if (total <= 0) return;
    patchify_fwd_kernel<T>
        <<<agc_blocks(total, TPB), TPB, 0, agc_stream()>>>(a, (const T *)x, (T *)out, total);
    CUDA_LAUNCHED("patchify_fwd_kernel");
}

// The adjoint as a gather: one thread per element (b, y, x, c) of gx adds the patch elements
// that copied it, in the CPU's order (i, then j), starting from gx, and rounds once.
template <typename T>
__global__ void patchify_bwd_kernel(patch_dims a, const T *g, T *gx, long long total) {
    const long long P = a.ph * a.pw * a.C;
    GRID_STRIDE(e, total) {
        long long r = e;
        const long long ch = r % a.C;
        r /= a.C;
        const long long xx = r % a.W;
        r /= a.W;
        const long long y = r % a.H, b = r / a.H;
        // patch rows i with i*sh <= y < i*sh + ph; columns j likewise
        const long long i_hi = min(a.Nh - 1, y / a.sh);
        const long long i_lo = y < a.ph ? 0 : (y - a.ph + a.sh) / a.sh;
        const long long j_hi = min(a.Nw - 1, xx / a.sw);
        const long long j_lo = xx < a.pw ? 0 : (xx - a.pw + a.sw) / a.sw;
        if (i_lo > i_hi || j_lo > j_hi) continue; // covered by no patch
        float acc = agc_ld(gx, e);
        for (long long i = i_lo; i <= i_hi; i++) {
            const T *gp = g + (b * a.Nh + i) * a.Nw * P + ((y - i * a.sh) * a.pw) * a.C + ch;
            for (long long j = j_lo; j <= j_hi; j++)
                acc += agc_ld(gp, j * P + (xx - j * a.sw) * a.C);
        }
        agc_st(gx, e, acc);
    }
}

template <typename T> void patchify_bwd(const ag_patch_args *p, const void *g, void *gx) {
    if (!gx) return;
    const patch_dims a = {p->B, p->H, p->W, p->C, p->ph, p->pw, p->sh, p->sw, p->Nh, p->Nw};
    const long long total = a.B * a.H * a.W * a.C;
    if (total <= 0 || a.Nh <= 0 || a.Nw <= 0) return;
    patchify_bwd_kernel<T>
        <<<agc_blocks(total, TPB), TPB, 0, agc_stream()>>>(a, (const T *)g, (T *)gx, total);
    CUDA_LAUNCHED("patchify_bwd_kernel");
}

template <typename T> void fill_table(ag_kernels *k) {
    k->fill = fill<T>;
    k->axpy = axpy<T>;
    k->add_strided = add_strided<T>;
    k->binary_fwd = binary_fwd<T>;
    k->binary_bwd = binary_bwd<T>;
    k->unary_fwd = unary_fwd<T>;
    k->unary_bwd = unary_bwd<T>;
    k->swiglu_fwd = swiglu_fwd<T>;
    k->swiglu_bwd = swiglu_bwd<T>;
    k->rows_gather = rows_gather<T>;
    k->rows_scatter_add = rows_scatter_add<T>;
    k->rows_set = rows_set<T>;
    k->reduce_fwd = reduce_fwd<T>;
    k->reduce_bwd = reduce_bwd<T>;
    k->dropout_fwd = dropout_fwd<T>;
    k->dropout_bwd = dropout_bwd<T>;
    k->sum_squares = sum_squares<T>;
    k->patchify_fwd = patchify_fwd<T>;
    k->patchify_bwd = patchify_bwd<T>;
}

} // namespace

void agc_register_elementwise(ag_kernels *k, ag_dtype dt) {
    if (dt == AG_F32)
        fill_table<float>(k);
    else if (dt == AG_BF16)
        fill_table<bf16>(k);
}
