// cuda_optim.cu: AdamW on CUDA, one parameter (agc_adamw) or all of them in one launch
// (agc_adamw_many), and the sum of squares of many tensors in two launches and one copy to
// the host (agc_sum_squares_many, for the global gradient norm). The update is the CPU's
// (autograd/cpu/cpu_optim.c) operation for operation, with no fused multiply-adds, so a
// parameter gets the same bits on either device.
#include <limits.h>
#include <string.h>

#include "autograd/cuda/cuda_common.cuh"

namespace {

constexpr int TPB = 256;
constexpr long long ADAM_CHUNK = TPB * 8; // elements per block of the multi-tensor update
constexpr long long SS_CHUNK = TPB * 32;  // elements per block of the sum of squares

// The per-step scalars, as the CPU rounds them to f32 (lr kept in double for the decay).
struct adam_scalars {
    float b1, b2, omb1, omb2, eps, lr, ib1, ib2;
    double lr_d;
};

adam_scalars scalars_of(const ag_adamw_args *a) {
    adam_scalars s;
    s.b1 = (float)a->beta1, s.b2 = (float)a->beta2, s.eps = (float)a->eps;
    s.omb1 = 1 - s.b1, s.omb2 = 1 - s.b2; // f32, as the CPU's (1 - b1)
    s.lr = (float)a->lr, s.lr_d = a->lr;
    s.ib1 = (float)(1.0 / a->bias1), s.ib2 = (float)(1.0 / a->bias2);
    return s;
}

// One element, in the CPU's order of operations; the _rn intrinsics keep nvcc from
// contracting into FMAs (the CPU's ISO C build does not contract either).
__device__ __forceinline__ float adam_elem(const adam_scalars &s, float decay, float g, float *m,
                                           float *v, float p) {
    const float mi = __fadd_rn(__fmul_rn(s.b1, *m), __fmul_rn(s.omb1, g));
    const float vi = __fadd_rn(__fmul_rn(s.b2, *v), __fmul_rn(__fmul_rn(s.omb2, g), g));
    *m = mi, *v = vi;
    const float num = __fmul_rn(s.lr, __fmul_rn(mi, s.ib1));
    const float den = __fadd_rn(__fsqrt_rn(__fmul_rn(vi, s.ib2)), s.eps);
    return __fsub_rn(__fmul_rn(p, decay), __fdiv_rn(num, den));
}

// decay = (float)(1 - lr * wd), in double as on the CPU
__device__ __forceinline__ float decay_of(double lr, double wd) {
    return (float)__dadd_rn(1.0, -__dmul_rn(lr, wd));
}

// Elements [lo, hi) of one parameter: p f32 (master NULL) or bf16 (master its f32 copy, from
// which the bf16 value is rounded).
__device__ __forceinline__ void adam_range(const adam_scalars &s, float decay, void *param, bool bf,
                                           float *master, const void *grad, float *m, float *v,
                                           long long lo, long long hi, long long step) {
    for (long long i = lo; i < hi; i += step) {
        if (bf) {
            const float g = __bfloat162float(((const bf16 *)grad)[i]);
            const float p = adam_elem(s, decay, g, m + i, v + i, master[i]);
            master[i] = p;
            ((bf16 *)param)[i] = __float2bfloat16_rn(p);
        } else {
            float *pf = (float *)param;
            pf[i] = adam_elem(s, decay, ((const float *)grad)[i], m + i, v + i, pf[i]);
        }
    }
}

__global__ void adamw_kernel(adam_scalars s, double wd, void *param, bool bf, float *master,
                             const void *grad, float *m, float *v, long long n) {
    const float decay = decay_of(s.lr_d, wd);
    const long long step = (long long)gridDim.x * blockDim.x;
    adam_range(s, decay, param, bf, master, grad, m, v,
               (long long)blockIdx.x * blockDim.x + threadIdx.x, n, step);
}

// One parameter of the multi-tensor update, as the device reads it. first_block: the first
// block of the launch that works on it (blocks [first_block, next's first_block)).
struct adam_desc {
    void *param;
    float *master;
    const void *grad;
    float *m, *v;
    long long n, first_block;
    double weight_decay;
    int is_bf16;
};

// The descriptor whose block range holds block b (descs sorted by first_block, d[0] at 0).
template <typename D> __device__ __forceinline__ int find_desc(const D *d, int count, long long b) {
    int lo = 0, hi = count - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (d[mid].first_block <= b)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

// Block b updates chunk (b - first_block) of its parameter.
__global__ void adamw_many_kernel(adam_scalars s, const adam_desc *d, int count) {
    const long long b = blockIdx.x;
    const adam_desc t = d[find_desc(d, count, b)];
    const long long lo = (b - t.first_block) * ADAM_CHUNK;
    const long long hi = min(t.n, lo + ADAM_CHUNK);
    adam_range(s, decay_of(s.lr_d, t.weight_decay), t.param, t.is_bf16 != 0, t.master, t.grad, t.m,
               t.v, lo + threadIdx.x, hi, blockDim.x);
}

// Descriptor arrays on the device, rebuilt and copied only when the tensors change (a
// training loop passes the same ones every step). The host copy is what the device holds.
struct desc_cache {
    void *host = nullptr, *dev = nullptr;
    size_t cap = 0, bytes = 0;
    void *staging = nullptr; // the new descriptors, compared with host before any copy
    size_t staging_cap = 0;
};

// staging space for bytes of descriptors
void *desc_staging(desc_cache *c, size_t bytes) {
    if (bytes > c->staging_cap) {
        free(c->staging);
        c->staging_cap = 0; // a failed malloc (caught by a test) leaves no stale capacity
        c->staging = malloc(bytes);
        if (!c->staging) ag_fail("out of memory: %zu bytes of optimizer descriptors", bytes);
        c->staging_cap = bytes;
    }
    return c->staging;
}

// Makes the device array equal to the staged descriptors; returns it.
void *desc_upload(desc_cache *c, size_t bytes) {
    if (bytes == c->bytes && memcmp(c->host, c->staging, bytes) == 0) return c->dev;
    if (bytes > c->cap) {
        CUDA_CHECK(cudaStreamSynchronize(agc_stream())); // no kernel still reads the old one
        if (c->dev) CUDA_CHECK(cudaFree(c->dev));
        c->dev = nullptr;
        c->cap = c->bytes = 0; // a failed (and caught) allocation must not leave a stale match
        CUDA_CHECK(cudaMalloc(&c->dev, bytes));
        free(c->host);
        c->host = malloc(bytes);
        if (!c->host) ag_fail("out of memory: %zu bytes of optimizer descriptors", bytes);
        c->cap = bytes;
    }
    memcpy(c->host, c->staging, bytes);
    c->bytes = bytes;
    // from pageable memory: returns once the source is staged, so it may change afterwards
    CUDA_CHECK(cudaMemcpyAsync(c->dev, c->host, bytes, cudaMemcpyHostToDevice, agc_stream()));
    return c->dev;
}

desc_cache g_adam_cache, g_ss_cache;

// ---------------------------------------------------------------------------------------
// Sum of squares of many tensors: block b sums chunk (b - first_block) of its tensor in
// double into part[b]; one block then adds all partials in order. The order depends on the
// tensors' sizes alone.

struct ss_desc {
    const void *x;
    long long n, first_block;
    int is_bf16;
};

__global__ void ss_chunks_kernel(const ss_desc *d, int count, double *part) {
    const long long b = blockIdx.x;
    const ss_desc t = d[find_desc(d, count, b)];
    const long long lo = (b - t.first_block) * SS_CHUNK, hi = min(t.n, lo + SS_CHUNK);
    double acc = 0;
    for (long long i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        const double v = t.is_bf16 ? (double)__bfloat162float(((const bf16 *)t.x)[i])
                                   : (double)((const float *)t.x)[i];
        acc += v * v;
    }
    acc = agc_block_sum_f64(acc);
    if (threadIdx.x == 0) part[b] = acc;
}

__global__ void ss_finish_kernel(const double *part, long long n, double *res) {
    double acc = 0;
    for (long long k = threadIdx.x; k < n; k += blockDim.x) acc += part[k];
    acc = agc_block_sum_f64(acc);
    if (threadIdx.x == 0) *res = acc;
}

// Grow-only device buffer for the partials and the result.
double *ss_scratch(size_t count) {
    static agc_scratch buf;
    return (double *)agc_scratch_get(&buf, count * sizeof(double));
}

} // namespace

void agc_adamw(const ag_adamw_args *a, void *param, ag_dtype dtype, float *master, const void *grad,
               float *m, float *v, int64_t n) {
    if (n <= 0) return;
    if (dtype != AG_F32 && dtype != AG_BF16)
        ag_fail("adamw: %s parameters on cuda", ag_dtype_name(dtype));
    if (dtype == AG_BF16 && !master) ag_fail("adamw: a bf16 parameter without its f32 master copy");
    adamw_kernel<<<agc_blocks(n, TPB), TPB, 0, agc_stream()>>>(
        scalars_of(a), a->weight_decay, param, dtype == AG_BF16, master, grad, m, v, n);
    CUDA_LAUNCHED("adamw_kernel");
}

void agc_adamw_many(const ag_adamw_args *a, const ag_adamw_tensor *t, int count) {
    if (count <= 0) return;
    adam_desc *d = (adam_desc *)desc_staging(&g_adam_cache, (size_t)count * sizeof(adam_desc));
    memset(d, 0, (size_t)count * sizeof(adam_desc)); // padding too: the cache compares bytes
    long long blocks = 0;
    for (int i = 0; i < count; i++) {
        if (t[i].dtype != AG_F32 && t[i].dtype != AG_BF16)
            ag_fail("adamw: %s parameters on cuda", ag_dtype_name(t[i].dtype));
        if (t[i].dtype == AG_BF16 && !t[i].master)
            ag_fail("adamw: a bf16 parameter without its f32 master copy");
        d[i].param = t[i].param;
        d[i].master = t[i].master;
        d[i].grad = t[i].grad;
        d[i].m = t[i].m;
        d[i].v = t[i].v;
        d[i].n = t[i].n > 0 ? t[i].n : 0;
        d[i].first_block = blocks;
        d[i].weight_decay = t[i].weight_decay;
        d[i].is_bf16 = t[i].dtype == AG_BF16;
        blocks += (d[i].n + ADAM_CHUNK - 1) / ADAM_CHUNK; // empty tensors own no block
    }
    if (blocks == 0) return;
    if (blocks > INT_MAX) ag_fail("adamw: %lld blocks exceed one launch", blocks);
    const adam_desc *dd =
        (const adam_desc *)desc_upload(&g_adam_cache, (size_t)count * sizeof(adam_desc));
    adamw_many_kernel<<<(unsigned)blocks, TPB, 0, agc_stream()>>>(scalars_of(a), dd, count);
    CUDA_LAUNCHED("adamw_many_kernel");
}

double agc_sum_squares_many(const void *const *x, const int64_t *len, const ag_dtype *dt,
                            int count) {
    if (count <= 0) return 0;
    ss_desc *d = (ss_desc *)desc_staging(&g_ss_cache, (size_t)count * sizeof(ss_desc));
    memset(d, 0, (size_t)count * sizeof(ss_desc));
    long long blocks = 0;
    for (int i = 0; i < count; i++) {
        if (dt[i] != AG_F32 && dt[i] != AG_BF16)
            ag_fail("sum of squares: %s tensors on cuda", ag_dtype_name(dt[i]));
        d[i].x = x[i];
        d[i].n = len[i] > 0 ? len[i] : 0;
        d[i].first_block = blocks;
        d[i].is_bf16 = dt[i] == AG_BF16;
        blocks += (d[i].n + SS_CHUNK - 1) / SS_CHUNK;
    }
    if (blocks == 0) return 0;
    if (blocks > INT_MAX) ag_fail("sum of squares: %lld blocks exceed one launch", blocks);
    const ss_desc *dd = (const ss_desc *)desc_upload(&g_ss_cache, (size_t)count * sizeof(ss_desc));
    double *part = ss_scratch((size_t)blocks + 1), *res = part + blocks;
    ss_chunks_kernel<<<(unsigned)blocks, TPB, 0, agc_stream()>>>(dd, count, part);
    CUDA_LAUNCHED("ss_chunks_kernel");
    ss_finish_kernel<<<1, 1024, 0, agc_stream()>>>(part, blocks, res);
    CUDA_LAUNCHED("ss_finish_kernel");
    double h = 0;
    CUDA_CHECK(cudaMemcpyAsync(&h, res, sizeof h, cudaMemcpyDeviceToHost, agc_stream()));
    CUDA_CHECK(cudaStreamSynchronize(agc_stream()));
    return h;
}
