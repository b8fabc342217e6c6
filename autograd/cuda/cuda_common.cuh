// cuda_common.cuh: what the CUDA kernel files share: checked calls, bf16/f32 loads and
// stores, launch sizes, the stream every kernel runs on, and the registration functions
// through which each file fills its entries of the per-dtype kernel tables (backend.h).
// Devices: f32 and bf16 tensors (arithmetic in f32); f64 stays on the CPU.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "autograd/backend.h"
#include "autograd/error.h"

// Every CUDA runtime call goes through this: a failure names the call site and the error.
#define CUDA_CHECK(call)                                                                           \
    do {                                                                                           \
        cudaError_t err_ = (call);                                                                 \
        if (err_ != cudaSuccess)                                                                   \
            ag_fail("%s:%d: %s: %s", __FILE__, __LINE__, #call, cudaGetErrorString(err_));         \
    } while (0)

// After a kernel launch: a launch error names the kernel.
#define CUDA_LAUNCHED(kernel)                                                                      \
    do {                                                                                           \
        cudaError_t err_ = cudaGetLastError();                                                     \
        if (err_ != cudaSuccess)                                                                   \
            ag_fail("CUDA kernel %s failed to launch: %s", kernel, cudaGetErrorString(err_));      \
    } while (0)

typedef __nv_bfloat16 bf16;

// Loads widen to f32 (f64 stays f64); stores round to nearest even.
__device__ __forceinline__ float agc_ld(const float *p, long long i) {
    return p[i];
}
__device__ __forceinline__ float agc_ld(const bf16 *p, long long i) {
    return __bfloat162float(p[i]);
}
__device__ __forceinline__ void agc_st(float *p, long long i, float v) {
    p[i] = v;
}
__device__ __forceinline__ void agc_st(bf16 *p, long long i, float v) {
    p[i] = __float2bfloat16_rn(v);
}

// Blocks of `threads` covering n elements (grid-stride loops take over past the cap).
static inline unsigned agc_blocks(long long n, int threads) {
    long long b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    return (unsigned)(b > 65535LL * 16 ? 65535LL * 16 : b);
}

// The stream all kernels and library calls run on (the legacy default stream for now).
static inline cudaStream_t agc_stream(void) {
    return 0;
}

// A device buffer that grows (never shrinks), so a warm loop does not allocate: at least
// bytes, with half again as headroom for slightly larger shapes.
struct agc_scratch {
    void *p;
    size_t cap;
};
static inline void *agc_scratch_get(agc_scratch *s, size_t bytes) {
    if (bytes > s->cap) {
        CUDA_CHECK(cudaStreamSynchronize(agc_stream())); // no kernel still uses the old one
        if (s->p) CUDA_CHECK(cudaFree(s->p));
        s->p = nullptr;
        s->cap = 0; // a failed (and caught) cudaMalloc must not leave NULL with a capacity
        const size_t n = bytes + bytes / 2;
        CUDA_CHECK(cudaMalloc(&s->p, n));
        s->cap = n;
    }
    return s->p;
}

// Sum over a block in double, in a fixed tree (warp shuffles, then the warps' sums); the
// result is valid in thread 0. blockDim.x must be a multiple of 32, at most 1024.
static __device__ __forceinline__ double agc_block_sum_f64(double v) {
    __shared__ double warp_sums[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    __syncthreads(); // warp_sums may still be read by a previous call
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < nwarps ? warp_sums[lane] : 0.0;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    }
    return v;
}

// Each kernel file sets its entries of table k for dtype dt (AG_F32 or AG_BF16) and leaves
// the others alone. cuda_backend.cu calls them all once, before main.
void agc_register_elementwise(ag_kernels *k, ag_dtype dt); // cuda_elementwise.cu
void agc_register_norm(ag_kernels *k, ag_dtype dt);        // cuda_norm.cu
void agc_register_attention(ag_kernels *k, ag_dtype dt);   // cuda_attention.cu
void agc_register_gemm(ag_kernels *k, ag_dtype dt);        // cuda_gemm.cu

// AdamW on one parameter (backend.h ag_backend.adamw); cuda_optim.cu.
void agc_adamw(const ag_adamw_args *a, void *param, ag_dtype dtype, float *master, const void *grad,
               float *m, float *v, int64_t n);
// Every parameter in one launch (ag_backend.adamw_many); cuda_optim.cu.
void agc_adamw_many(const ag_adamw_args *a, const ag_adamw_tensor *t, int count);
// The sum of squares of count tensors, one copy to the host (ag_backend.sum_squares_many);
// cuda_optim.cu.
double agc_sum_squares_many(const void *const *x, const int64_t *len, const ag_dtype *dt,
                            int count);
