// cuda_backend.cu: the CUDA device (ag_cuda_backend): memory, host transfers, strided copies,
// casts, and the f32 and bf16 kernel tables, which the kernel files fill (cuda_common.cuh).
#include "autograd/cuda/cuda_common.cuh"

extern "C" bool ag_cuda_available(void) {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

static void *cuda_alloc(size_t bytes, const char *what) {
    void *p = nullptr;
    cudaError_t err = cudaMalloc(&p, bytes ? bytes : 256);
    if (err != cudaSuccess)
        ag_fail("cudaMalloc of %zu bytes for %s: %s", bytes, what, cudaGetErrorString(err));
    return p;
}

static void cuda_free(void *p) {
    CUDA_CHECK(cudaFree(p));
}
static void cuda_memset0(void *p, size_t bytes) {
    CUDA_CHECK(cudaMemset(p, 0, bytes));
}
static void cuda_to_host(void *dst, const void *src, size_t bytes) {
    CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}
static void cuda_from_host(void *dst, const void *src, size_t bytes) {
    CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}
static void cuda_synchronize(void) {
    CUDA_CHECK(cudaDeviceSynchronize());
}

struct layout4 {
    long long shape[4], stride[4];
};

// dst (contiguous, n elements) = src read through layout; one thread per element.
template <typename T>
__global__ void copy_strided_kernel(T *dst, const T *src, layout4 l, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    long long rem = i, off = 0;
    for (int d = 3; d >= 0; d--) {
        off += (rem % l.shape[d]) * l.stride[d];
        rem /= l.shape[d];
    }
    dst[i] = src[off];
}

static void cuda_copy_strided(void *dst, const void *src, const ag_layout *layout,
                              size_t elem_size) {
    layout4 l;
    long long n = 1;
    int pad = 4 - layout->ndim;
    for (int d = 0; d < 4; d++) {
        l.shape[d] = d < pad ? 1 : layout->shape[d - pad];
        l.stride[d] = d < pad ? 0 : layout->stride[d - pad];
        n *= l.shape[d];
    }
    if (n == 0) return;
    unsigned blocks = (unsigned)((n + 255) / 256);
    const char *s = (const char *)src + layout->offset * (long long)elem_size;
    switch (elem_size) {
    case 1:
        copy_strided_kernel<<<blocks, 256>>>((uint8_t *)dst, (const uint8_t *)s, l, n);
        break;
    case 2:
        copy_strided_kernel<<<blocks, 256>>>((uint16_t *)dst, (const uint16_t *)s, l, n);
        break;
    case 4:
        copy_strided_kernel<<<blocks, 256>>>((uint32_t *)dst, (const uint32_t *)s, l, n);
        break;
    case 8:
        copy_strided_kernel<<<blocks, 256>>>((uint64_t *)dst, (const uint64_t *)s, l, n);
        break;
    default:
        ag_fail("copy_strided: element size %zu", elem_size);
    }
    CUDA_LAUNCHED("copy_strided_kernel");
}

__device__ inline float load_f(const float *p, long long i) {
    return p[i];
}
__device__ inline float load_f(const bf16 *p, long long i) {
    return __bfloat162float(p[i]);
}
__device__ inline double load_f(const double *p, long long i) {
    return p[i];
}
// i32 widens to double, exactly (through float, values past 2^24 would round).
__device__ inline double load_f(const int32_t *p, long long i) {
    return (double)p[i];
}
__device__ inline float load_f(const uint8_t *p, long long i) {
    return (float)p[i];
}
template <typename T> __device__ inline void store_f(T *p, long long i, double v) {
    p[i] = (T)v;
}
template <> __device__ inline void store_f(bf16 *p, long long i, double v) {
    p[i] = __float2bfloat16_rn((float)v);
}
// To u8 through int64 as on the CPU (negative and large values wrap rather than saturate).
template <> __device__ inline void store_f(uint8_t *p, long long i, double v) {
    p[i] = (uint8_t)(long long)v;
}

template <typename D, typename S> __global__ void cast_kernel(D *dst, const S *src, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) store_f(dst, i, (double)load_f(src, i));
}

template <typename D> static void cast_from(D *dst, const void *src, ag_dtype st, long long n) {
    unsigned blocks = (unsigned)((n + 255) / 256);
    switch (st) {
    case AG_F32:
        cast_kernel<<<blocks, 256>>>(dst, (const float *)src, n);
        break;
    case AG_BF16:
        cast_kernel<<<blocks, 256>>>(dst, (const bf16 *)src, n);
        break;
    case AG_F64:
        cast_kernel<<<blocks, 256>>>(dst, (const double *)src, n);
        break;
    case AG_I32:
        cast_kernel<<<blocks, 256>>>(dst, (const int32_t *)src, n);
        break;
    case AG_U8:
        cast_kernel<<<blocks, 256>>>(dst, (const uint8_t *)src, n);
        break;
    default:
        ag_fail("cast: unknown source dtype %d", (int)st);
    }
    CUDA_LAUNCHED("cast_kernel");
}

static void cuda_cast(void *dst, ag_dtype dt, const void *src, ag_dtype st, int64_t n) {
    if (n == 0) return;
    switch (dt) {
    case AG_F32:
        cast_from((float *)dst, src, st, n);
        break;
    case AG_BF16:
        cast_from((bf16 *)dst, src, st, n);
        break;
    case AG_F64:
        cast_from((double *)dst, src, st, n);
        break;
    case AG_I32:
        cast_from((int32_t *)dst, src, st, n);
        break;
    case AG_U8:
        cast_from((uint8_t *)dst, src, st, n);
        break;
    default:
        ag_fail("cast: unknown target dtype %d", (int)dt);
    }
}

// Filled once before main by the kernel files' registration functions.
static ag_kernels g_kernels_f32, g_kernels_bf16;
static struct register_kernels {
    register_kernels() {
        ag_kernels *tables[2] = {&g_kernels_f32, &g_kernels_bf16};
        ag_dtype dtypes[2] = {AG_F32, AG_BF16};
        for (int i = 0; i < 2; i++) {
            agc_register_elementwise(tables[i], dtypes[i]);
            agc_register_norm(tables[i], dtypes[i]);
            agc_register_attention(tables[i], dtypes[i]);
            agc_register_gemm(tables[i], dtypes[i]);
        }
    }
} g_register_kernels;

extern "C" const ag_backend ag_cuda_backend = {
    /* name */ "cuda",
    /* kernels (f32, bf16, f64, i32, u8) */
    {&g_kernels_f32, &g_kernels_bf16, nullptr, nullptr, nullptr},
    /* alloc */ cuda_alloc,
    /* free */ cuda_free,
    /* memset0 */ cuda_memset0,
    /* copy_to_host */ cuda_to_host,
    /* copy_from_host */ cuda_from_host,
    /* copy_strided */ cuda_copy_strided,
    /* cast */ cuda_cast,
    /* synchronize */ cuda_synchronize,
    /* adamw */ agc_adamw,
    /* adamw_many */ agc_adamw_many,
    /* sum_squares_many */ agc_sum_squares_many,
};
