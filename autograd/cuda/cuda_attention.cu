// cuda_attention.cu: scaled dot-product attention forward and backward on CUDA, f32 and bf16,
// flash-attention style: tiled over queries and keys with an online softmax, so no Tq x Tk
// matrix is ever in memory. Forward saves lse (B,H,Tq) (backend.h); backward recomputes the
// probabilities from q, k and lse, with Dvec = rowsum(dO * O). Causal (query i sees keys
// j <= i + Tk - Tq), key padding mask, grouped-query heads, strided q/k/v, any head dim up
// to 128 (the kernels are compiled for DP = 16, 32, ..., 128 and a head dim D <= DP runs
// zero-padded to DP). bf16 multiplies on tensor cores (WMMA, f32 accumulation); f32 on CUDA
// cores in f32. Every tile product goes shared memory to shared memory: simple to check.
#include <math.h>
#include <mma.h>

#include <type_traits>

#include "autograd/cuda/cuda_common.cuh"

extern __shared__ __align__(128) unsigned char agc_attn_smem[];

namespace {

constexpr int kThreads = 128; // 4 warps per block
constexpr int kWarps = kThreads / 32;

// Tile sizes and shared-memory row strides (elements) per storage type T and padded head
// dim DP.
// Row strides keep WMMA pointers 32-byte aligned (bf16) or odd to spread banks (f32).
template <typename T, int DP> struct agc_attn_cfg {
    static constexpr bool kTensorCores = std::is_same<T, bf16>::value;
    static constexpr int kPadT = kTensorCores ? 8 : 1; // rows of T
    static constexpr int kPadF = kTensorCores ? 4 : 1; // rows of f32
    static constexpr int FQ = kTensorCores ? 64 : 32;  // forward: queries per block
    static constexpr int FK = 64;                      // forward: keys per step
    static constexpr int BQ = 32;                      // backward: queries per step
    static constexpr int BK = kTensorCores ? 64 : 32;  // backward: keys per block
    static constexpr int LDT = DP + kPadT;             // (rows, DP) tiles of T
    static constexpr int LDF = DP + kPadF;             // (rows, DP) tiles of f32
    static constexpr int LDSF = FK + kPadF;            // forward scores, f32
    static constexpr int LDPF = FK + kPadT;            // forward probabilities, T
    static constexpr int LDSB = BK + kPadF;            // backward scores and dP, f32
    static constexpr int LDPB = BK + kPadT;            // backward P and dS, T
    static_assert(DP % 16 == 0 && DP <= 128, "padded head dim: a multiple of 16 up to 128");
};

constexpr size_t agc_align128(size_t x) {
    return (x + 127) & ~(size_t)127;
}

// Forward shared memory: Q (FQ,D), K and V (FK,D) in T; S (FQ,FK) f32; P (FQ,FK) in T;
// the output accumulator O (FQ,D) f32; per row the running max, sum and rescale factor.
template <typename T, int DP> struct agc_fwd_smem {
    using C = agc_attn_cfg<T, DP>;
    static constexpr size_t q = 0;
    static constexpr size_t k = agc_align128(q + sizeof(T) * C::FQ * C::LDT);
    static constexpr size_t v = agc_align128(k + sizeof(T) * C::FK * C::LDT);
    static constexpr size_t s = agc_align128(v + sizeof(T) * C::FK * C::LDT);
    static constexpr size_t p = agc_align128(s + sizeof(float) * C::FQ * C::LDSF);
    static constexpr size_t o = agc_align128(p + sizeof(T) * C::FQ * C::LDPF);
    static constexpr size_t m = agc_align128(o + sizeof(float) * C::FQ * C::LDF);
    static constexpr size_t l = agc_align128(m + sizeof(float) * C::FQ);
    static constexpr size_t alpha = agc_align128(l + sizeof(float) * C::FQ);
    static constexpr size_t bytes = agc_align128(alpha + sizeof(float) * C::FQ);
};

// Backward shared memory: K, V (BK,D) in T and their gradient accumulators dK, dV (BK,D)
// f32; per query step Q, dO (BQ,D) in T, S then P and dP (BQ,BK) f32 (the same space later
// holds the dQ tile (BQ,D) f32), P and dS (BQ,BK) in T, lse and Dvec per row.
template <typename T, int DP> struct agc_bwd_smem {
    using C = agc_attn_cfg<T, DP>;
    static constexpr size_t k = 0;
    static constexpr size_t v = agc_align128(k + sizeof(T) * C::BK * C::LDT);
    static constexpr size_t dk = agc_align128(v + sizeof(T) * C::BK * C::LDT);
    static constexpr size_t dv = agc_align128(dk + sizeof(float) * C::BK * C::LDF);
    static constexpr size_t q = agc_align128(dv + sizeof(float) * C::BK * C::LDF);
    static constexpr size_t g = agc_align128(q + sizeof(T) * C::BQ * C::LDT);
    static constexpr size_t s = agc_align128(g + sizeof(T) * C::BQ * C::LDT);
    static constexpr size_t dp = agc_align128(s + sizeof(float) * C::BQ * C::LDSB);
    static constexpr size_t s_end = agc_align128(dp + sizeof(float) * C::BQ * C::LDSB);
    static constexpr size_t dq_end = agc_align128(s + sizeof(float) * C::BQ * C::LDF);
    static constexpr size_t pm = s_end > dq_end ? s_end : dq_end;
    static constexpr size_t dsm = agc_align128(pm + sizeof(T) * C::BQ * C::LDPB);
    static constexpr size_t lse = agc_align128(dsm + sizeof(T) * C::BQ * C::LDPB);
    static constexpr size_t dvec = agc_align128(lse + sizeof(float) * C::BQ);
    static constexpr size_t bytes = agc_align128(dvec + sizeof(float) * C::BQ);
};

template <typename T> __device__ __forceinline__ T agc_from_f32(float x);
template <> __device__ __forceinline__ float agc_from_f32<float>(float x) {
    return x;
}
template <> __device__ __forceinline__ bf16 agc_from_f32<bf16>(float x) {
    return __float2bfloat16_rn(x);
}

// Keys visible to query i: j < the result (causal), or all Tk.
__device__ __forceinline__ long long agc_keys_visible(const ag_attn_args &a, long long i) {
    if (!a.causal) return a.Tk;
    long long jn = i + a.Tk - a.Tq + 1;
    return jn < 0 ? 0 : (jn > a.Tk ? a.Tk : jn);
}

// dst (R rows, DP; row stride ld) = rows r0 .. r0+R-1 of src (row stride st, D columns),
// zero past row n and past column D.
template <typename T, int DP, int R>
__device__ void agc_load_rows(T *dst, int ld, const T *src, long long st, long long r0, long long n,
                              int D) {
    for (int e = threadIdx.x; e < R * DP; e += kThreads) {
        const int r = e / DP, d = e % DP;
        const long long row = r0 + r;
        dst[r * ld + d] = row < n && d < D ? src[row * st + d] : agc_from_f32<T>(0.f);
    }
}

// C (M,N) f32 = (acc ? C : 0) + op(A) op(B), op(A) (M,K) = TA ? A^T : A, op(B) (K,N) = TB ?
// B^T : B, all in shared memory, row-major with the given row strides; every thread of the
// block takes part (uniform control flow); callers sync before reading C. f32: one thread
// per element of C, f32 fused multiply-adds in k order.
template <bool TA, bool TB, int M, int N, int K>
__device__ void agc_tile_mm(float *C, int ldc, const float *A, int lda, const float *B, int ldb,
                            bool acc) {
    for (int e = threadIdx.x; e < M * N; e += kThreads) {
        const int i = e / N, j = e % N;
        float s = acc ? C[i * ldc + j] : 0.f;
#pragma unroll 8
        for (int k = 0; k < K; k++) {
            const float x = TA ? A[k * lda + i] : A[i * lda + k];
            const float y = TB ? B[j * ldb + k] : B[k * ldb + j];
            s = fmaf(x, y, s);
        }
        C[i * ldc + j] = s;
    }
}

// bf16: WMMA 16x16x16 tiles with f32 accumulators, warps taking output tiles in turn.
template <bool TA, bool TB, int M, int N, int K>
__device__ void agc_tile_mm(float *C, int ldc, const bf16 *A, int lda, const bf16 *B, int ldb,
                            bool acc) {
    using namespace nvcuda;
    using LA = typename std::conditional<TA, wmma::col_major, wmma::row_major>::type;
    using LB = typename std::conditional<TB, wmma::col_major, wmma::row_major>::type;
    static_assert(M % 16 == 0 && N % 16 == 0 && K % 16 == 0, "WMMA tiles are 16x16x16");
    const int warp = threadIdx.x / 32;
    for (int t = warp; t < (M / 16) * (N / 16); t += kWarps) {
        const int i0 = (t / (N / 16)) * 16, j0 = (t % (N / 16)) * 16;
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
        if (acc)
            wmma::load_matrix_sync(c, C + i0 * ldc + j0, ldc, wmma::mem_row_major);
        else
            wmma::fill_fragment(c, 0.f);
        for (int k0 = 0; k0 < K; k0 += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, LA> x;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, LB> y;
            wmma::load_matrix_sync(x, TA ? A + k0 * lda + i0 : A + i0 * lda + k0, lda);
            wmma::load_matrix_sync(y, TB ? B + j0 * ldb + k0 : B + k0 * ldb + j0, ldb);
            wmma::mma_sync(c, x, y, c);
        }
        wmma::store_matrix_sync(C + i0 * ldc + j0, c, ldc, wmma::mem_row_major);
    }
}

__device__ __forceinline__ float agc_warp_max(float x) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}
__device__ __forceinline__ float agc_warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

// Forward. Block (query tile, head h, batch b); grid (ceil(Tq/FQ), H, B). Per key tile:
// S = Q K^T; per row m' = max(m, max_j scale S_j), P = exp(scale S - m'), l = l e^(m-m') +
// sum P, O = O e^(m-m') + P V. At the end out = O / l and lse = m + log l; a row that sees
// no key gets out 0 and lse +inf (so that backward's exp(s - lse) is 0 there).
template <typename T, int DP>
__global__ void __launch_bounds__(kThreads)
    agc_attn_fwd_kernel(ag_attn_args a, const T *q, const T *k, const T *v, T *out, float *lse) {
    using C = agc_attn_cfg<T, DP>;
    using L = agc_fwd_smem<T, DP>;
    constexpr int BQ = C::FQ, BK = C::FK;
    T *Qs = (T *)(agc_attn_smem + L::q);
    T *Ks = (T *)(agc_attn_smem + L::k);
    T *Vs = (T *)(agc_attn_smem + L::v);
    float *S = (float *)(agc_attn_smem + L::s);
    T *P = (T *)(agc_attn_smem + L::p);
    float *O = (float *)(agc_attn_smem + L::o);
    float *m_s = (float *)(agc_attn_smem + L::m);
    float *l_s = (float *)(agc_attn_smem + L::l);
    float *a_s = (float *)(agc_attn_smem + L::alpha);

    const long long b = blockIdx.z, h = blockIdx.y, q0 = (long long)blockIdx.x * BQ;
    const long long hk = h / (a.H / a.Hkv);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const float scale = (float)a.scale;
    const int D = (int)a.D; // <= DP: columns D..DP-1 of the tiles are 0
    const uint8_t *mask = a.mask ? a.mask + b * a.Tk : nullptr;

    agc_load_rows<T, DP, BQ>(Qs, C::LDT, q + b * a.q_sb + h * a.q_sh, a.q_st, q0, a.Tq, D);
    for (int e = threadIdx.x; e < BQ * DP; e += kThreads) O[(e / DP) * C::LDF + e % DP] = 0.f;
    for (int r = threadIdx.x; r < BQ; r += kThreads) {
        m_s[r] = -INFINITY;
        l_s[r] = 0.f;
    }
    const long long q_last = (q0 + BQ < a.Tq ? q0 + BQ : a.Tq) - 1;
    const long long k_end = agc_keys_visible(a, q_last); // no row of the tile sees keys past it
    for (long long k0 = 0; k0 < k_end; k0 += BK) {
        __syncthreads(); // the previous step is done with Ks, Vs, P, O
        agc_load_rows<T, DP, BK>(Ks, C::LDT, k + b * a.k_sb + hk * a.k_sh, a.k_st, k0, a.Tk, D);
        agc_load_rows<T, DP, BK>(Vs, C::LDT, v + b * a.v_sb + hk * a.v_sh, a.v_st, k0, a.Tk, D);
        __syncthreads();
        agc_tile_mm<false, true, BQ, BK, DP>(S, C::LDSF, Qs, C::LDT, Ks, C::LDT, false);
        __syncthreads();
        for (int r = warp; r < BQ; r += kWarps) { // online softmax, one warp per row
            const long long i = q0 + r;
            const long long jn = i < a.Tq ? agc_keys_visible(a, i) : 0;
            float s[BK / 32], mt = -INFINITY;
#pragma unroll
            for (int u = 0; u < BK / 32; u++) {
                const int c = lane + 32 * u;
                const long long j = k0 + c;
                const bool seen = j < jn && (!mask || mask[j]);
                s[u] = seen ? S[r * C::LDSF + c] * scale : -INFINITY;
                mt = fmaxf(mt, s[u]);
            }
            mt = agc_warp_max(mt);
            const float m_old = m_s[r], m_new = fmaxf(m_old, mt);
            float sum = 0.f;
#pragma unroll
            for (int u = 0; u < BK / 32; u++) {
                const float pv = m_new == -INFINITY ? 0.f : expf(s[u] - m_new); // exp(-inf) = 0
                P[r * C::LDPF + lane + 32 * u] = agc_from_f32<T>(pv);
                sum += pv;
            }
            sum = agc_warp_sum(sum);
            const float alpha = m_new == -INFINITY ? 1.f : expf(m_old - m_new);
            __syncwarp(); // every lane has read m_s[r] before lane 0 moves it
            if (lane == 0) {
                m_s[r] = m_new;
                l_s[r] = l_s[r] * alpha + sum;
                a_s[r] = alpha;
            }
        }
        __syncthreads();
        for (int e = threadIdx.x; e < BQ * DP; e += kThreads)
            O[(e / DP) * C::LDF + e % DP] *= a_s[e / DP];
        __syncthreads();
        agc_tile_mm<false, false, BQ, DP, BK>(O, C::LDF, P, C::LDPF, Vs, C::LDT, true);
    }
    __syncthreads();
    const long long H = a.H, Tq = a.Tq;
    for (int e = threadIdx.x; e < BQ * DP; e += kThreads) {
        const int r = e / DP, d = e % DP;
        const long long i = q0 + r;
        if (i >= Tq || d >= D) continue;
        const float l = l_s[r];
        agc_st(out, ((b * Tq + i) * H + h) * D + d, l > 0.f ? O[r * C::LDF + d] / l : 0.f);
    }
    for (int r = threadIdx.x; r < BQ; r += kThreads) {
        const long long i = q0 + r;
        if (i >= Tq) continue;
        const float l = l_s[r];
        lse[(b * H + h) * Tq + i] = l > 0.f ? m_s[r] + logf(l) : INFINITY;
    }
}

// Dvec (B,H,Tq) = rowsum(dO * O) per (b, i, h), one warp per row; g and out contiguous
// (B,Tq,H,D).
template <typename T>
__global__ void agc_attn_dvec_kernel(const T *g, const T *out, float *dvec, long long Tq,
                                     long long H, long long D, long long rows) {
    const int lane = threadIdx.x % 32;
    const long long warps = (long long)gridDim.x * (blockDim.x / 32);
    for (long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32; row < rows;
         row += warps) {
        float s = 0.f;
        for (long long d = lane; d < D; d += 32)
            s += agc_ld(g, row * D + d) * agc_ld(out, row * D + d);
        s = agc_warp_sum(s);
        if (lane == 0) { // row = (b*Tq + i)*H + h
            const long long h = row % H, bi = row / H, i = bi % Tq, b = bi / Tq;
            dvec[(b * H + h) * Tq + i] = s;
        }
    }
}

// Backward. Block (key tile, kv head hk, batch b); grid (ceil(Tk/BK), Hkv, B). The block owns
// dK, dV of its keys: it walks the query heads of its group one after another, and their
// query tiles that can see the key tile, so the sum over the group is deterministic. Per
// step: P = exp(scale Q K^T - lse) (0 where masked), dV += P^T dO, dP = dO V^T,
// dS = scale P (dP - Dvec), dK += dS^T Q, and dQ += dS K by f32 atomics into dq (B,Tq,H,D).
template <typename T, int DP>
__global__ void __launch_bounds__(kThreads)
    agc_attn_bwd_kernel(ag_attn_args a, const T *q, const T *k, const T *v, const T *g,
                        const float *lse, const float *dvec, float *dq, T *gk, T *gv) {
    using C = agc_attn_cfg<T, DP>;
    using L = agc_bwd_smem<T, DP>;
    constexpr int BQ = C::BQ, BK = C::BK;
    T *Ks = (T *)(agc_attn_smem + L::k);
    T *Vs = (T *)(agc_attn_smem + L::v);
    float *dK = (float *)(agc_attn_smem + L::dk);
    float *dV = (float *)(agc_attn_smem + L::dv);
    T *Qs = (T *)(agc_attn_smem + L::q);
    T *Gs = (T *)(agc_attn_smem + L::g);
    float *SP = (float *)(agc_attn_smem + L::s);  // S, then P
    float *dP = (float *)(agc_attn_smem + L::dp); //
    float *dQs = (float *)(agc_attn_smem + L::s); // after dS: over S and dP
    T *Pm = (T *)(agc_attn_smem + L::pm);
    T *dSm = (T *)(agc_attn_smem + L::dsm);
    float *lse_s = (float *)(agc_attn_smem + L::lse);
    float *dvec_s = (float *)(agc_attn_smem + L::dvec);

    const long long b = blockIdx.z, hk = blockIdx.y, k0 = (long long)blockIdx.x * BK;
    const long long H = a.H, Hkv = a.Hkv, Tq = a.Tq, Tk = a.Tk, grp = H / Hkv;
    const float scale = (float)a.scale;
    const uint8_t *mask = a.mask ? a.mask + b * Tk : nullptr;
    const int D = (int)a.D; // <= DP: columns D..DP-1 of the tiles are 0

    agc_load_rows<T, DP, BK>(Ks, C::LDT, k + b * a.k_sb + hk * a.k_sh, a.k_st, k0, Tk, D);
    agc_load_rows<T, DP, BK>(Vs, C::LDT, v + b * a.v_sb + hk * a.v_sh, a.v_st, k0, Tk, D);
    for (int e = threadIdx.x; e < BK * DP; e += kThreads) {
        dK[(e / DP) * C::LDF + e % DP] = 0.f;
        dV[(e / DP) * C::LDF + e % DP] = 0.f;
    }
    // Queries before q_first see no key of this tile (causal: i >= j - (Tk - Tq)).
    long long q_first = a.causal ? k0 - (Tk - Tq) : 0;
    q_first = q_first < 0 ? 0 : q_first / BQ * BQ;
    for (long long h = hk * grp; h < (hk + 1) * grp; h++)
        for (long long q0 = q_first; q0 < Tq; q0 += BQ) {
            __syncthreads(); // the previous step is done with every per-step buffer
            agc_load_rows<T, DP, BQ>(Qs, C::LDT, q + b * a.q_sb + h * a.q_sh, a.q_st, q0, Tq, D);
            agc_load_rows<T, DP, BQ>(Gs, C::LDT, g + b * Tq * H * D + h * D, H * D, q0, Tq, D);
            for (int r = threadIdx.x; r < BQ; r += kThreads) {
                const long long i = q0 + r;
                lse_s[r] = i < Tq ? lse[(b * H + h) * Tq + i] : INFINITY;
                dvec_s[r] = i < Tq ? dvec[(b * H + h) * Tq + i] : 0.f;
            }
            __syncthreads();
            agc_tile_mm<false, true, BQ, BK, DP>(SP, C::LDSB, Qs, C::LDT, Ks, C::LDT, false);
            __syncthreads();
            for (int e = threadIdx.x; e < BQ * BK; e += kThreads) {
                const int r = e / BK, c = e % BK;
                const long long i = q0 + r, j = k0 + c;
                const bool seen = i < Tq && j < agc_keys_visible(a, i) && (!mask || mask[j]);
                const float p = seen ? expf(SP[r * C::LDSB + c] * scale - lse_s[r]) : 0.f;
                SP[r * C::LDSB + c] = p;
                Pm[r * C::LDPB + c] = agc_from_f32<T>(p);
            }
            __syncthreads();
            if (gv) agc_tile_mm<true, false, BK, DP, BQ>(dV, C::LDF, Pm, C::LDPB, Gs, C::LDT, true);
            agc_tile_mm<false, true, BQ, BK, DP>(dP, C::LDSB, Gs, C::LDT, Vs, C::LDT, false);
            __syncthreads();
            for (int e = threadIdx.x; e < BQ * BK; e += kThreads) {
                const int r = e / BK, c = e % BK;
                const float ds = SP[r * C::LDSB + c] * (dP[r * C::LDSB + c] - dvec_s[r]);
                dSm[r * C::LDPB + c] = agc_from_f32<T>(scale * ds);
            }
            __syncthreads();
            if (gk)
                agc_tile_mm<true, false, BK, DP, BQ>(dK, C::LDF, dSm, C::LDPB, Qs, C::LDT, true);
            if (dq) {
                agc_tile_mm<false, false, BQ, DP, BK>(dQs, C::LDF, dSm, C::LDPB, Ks, C::LDT, false);
                __syncthreads();
                for (int e = threadIdx.x; e < BQ * DP; e += kThreads) {
                    const int r = e / DP, d = e % DP;
                    const long long i = q0 + r;
                    if (i < Tq && d < D)
                        atomicAdd(dq + ((b * Tq + i) * H + h) * D + d, dQs[r * C::LDF + d]);
                }
            }
        }
    __syncthreads();
    for (int e = threadIdx.x; e < BK * DP; e += kThreads) {
        const int c = e / DP, d = e % DP;
        const long long j = k0 + c;
        if (j >= Tk || d >= D) continue;
        const long long idx = ((b * Tk + j) * Hkv + hk) * D + d;
        if (gk) agc_st(gk, idx, agc_ld(gk, idx) + dK[c * C::LDF + d]);
        if (gv) agc_st(gv, idx, agc_ld(gv, idx) + dV[c * C::LDF + d]);
    }
}

// gq += dq (the f32 sum of the key tiles' contributions).
template <typename T> __global__ void agc_attn_add_dq_kernel(T *gq, const float *dq, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        agc_st(gq, i, agc_ld(gq, i) + dq[i]);
}

// A kernel's dynamic shared memory above the default 48 KiB must be asked for; more than the
// device allows is an error naming the kernel.
template <typename K> static void agc_attn_smem_limit(K kernel, size_t bytes, const char *name) {
    static int optin = -1;
    if (optin < 0) {
        int dev = 0;
        CUDA_CHECK(cudaGetDevice(&dev));
        CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    }
    if (bytes > (size_t)optin)
        ag_fail("attention: %s needs %zu bytes of shared memory per block, the GPU allows %d", name,
                bytes, optin);
    CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

static void agc_attn_check_grid(const ag_attn_args *a, long long tiles) {
    if (a->B > 65535 || a->H > 65535 || tiles > 0x7fffffffLL)
        ag_fail("attention: B %lld, H %lld or %lld tiles exceed the CUDA grid", (long long)a->B,
                (long long)a->H, tiles);
}

// Scratch for backward (Dvec and the f32 dQ): grows, never shrinks, so a warm step does not
// allocate. cudaFree waits for the kernels still using the old buffer.
static void *agc_attn_scratch(size_t bytes) {
    static agc_scratch buf = {nullptr, 0};
    return agc_scratch_get(&buf, bytes);
}

template <typename T, int DP>
static void agc_attn_fwd_run(const ag_attn_args *a, const T *q, const T *k, const T *v, T *out,
                             float *lse) {
    using C = agc_attn_cfg<T, DP>;
    static_assert(agc_fwd_smem<T, DP>::bytes <= 227 * 1024, "more than an H100 block holds");
    static bool ready = false; // per <T, DP>: the shared-memory limit is set once
    if (!ready) {
        agc_attn_smem_limit(agc_attn_fwd_kernel<T, DP>, agc_fwd_smem<T, DP>::bytes,
                            "agc_attn_fwd_kernel");
        ready = true;
    }
    const long long tiles = (a->Tq + C::FQ - 1) / C::FQ;
    agc_attn_check_grid(a, tiles);
    dim3 grid((unsigned)tiles, (unsigned)a->H, (unsigned)a->B);
    agc_attn_fwd_kernel<T, DP>
        <<<grid, kThreads, agc_fwd_smem<T, DP>::bytes, agc_stream()>>>(*a, q, k, v, out, lse);
    CUDA_LAUNCHED("agc_attn_fwd_kernel");
}

template <typename T, int DP>
static void agc_attn_bwd_run(const ag_attn_args *a, const T *q, const T *k, const T *v,
                             const T *out, const float *lse, const T *g, T *gq, T *gk, T *gv) {
    using C = agc_attn_cfg<T, DP>;
    static_assert(agc_bwd_smem<T, DP>::bytes <= 227 * 1024, "more than an H100 block holds");
    static bool ready = false;
    if (!ready) {
        agc_attn_smem_limit(agc_attn_bwd_kernel<T, DP>, agc_bwd_smem<T, DP>::bytes,
                            "agc_attn_bwd_kernel");
        ready = true;
    }
    const long long rows = a->B * a->Tq * a->H, nq = rows * a->D;
    const size_t dvec_bytes = agc_align128(sizeof(float) * (size_t)rows);
    char *scratch = (char *)agc_attn_scratch(dvec_bytes + (gq ? sizeof(float) * (size_t)nq : 0));
    float *dvec = (float *)scratch, *dq = gq ? (float *)(scratch + dvec_bytes) : nullptr;
    agc_attn_dvec_kernel<T><<<agc_blocks(rows * 32, 256), 256, 0, agc_stream()>>>(
        g, out, dvec, a->Tq, a->H, a->D, rows);
    CUDA_LAUNCHED("agc_attn_dvec_kernel");
    if (dq) CUDA_CHECK(cudaMemsetAsync(dq, 0, sizeof(float) * (size_t)nq, agc_stream()));
    const long long tiles = (a->Tk + C::BK - 1) / C::BK;
    agc_attn_check_grid(a, tiles);
    dim3 grid((unsigned)tiles, (unsigned)a->Hkv, (unsigned)a->B);
    agc_attn_bwd_kernel<T, DP><<<grid, kThreads, agc_bwd_smem<T, DP>::bytes, agc_stream()>>>(
        *a, q, k, v, g, lse, dvec, dq, gk, gv);
    CUDA_LAUNCHED("agc_attn_bwd_kernel");
    if (dq) {
        agc_attn_add_dq_kernel<T><<<agc_blocks(nq, 256), 256, 0, agc_stream()>>>(gq, dq, nq);
        CUDA_LAUNCHED("agc_attn_add_dq_kernel");
    }
}

// Calls f with the padded head dim DP (the multiple of 16 at or above D) as a compile-time
// constant; head dims above 128 are an error.
template <typename F> static void agc_attn_with_d(int64_t D, F f) {
    switch ((D + 15) / 16) {
    case 1:
        f(std::integral_constant<int, 16>{});
        break;
    case 2:
        f(std::integral_constant<int, 32>{});
        break;
    case 3:
        f(std::integral_constant<int, 48>{});
        break;
    case 4:
        f(std::integral_constant<int, 64>{});
        break;
    case 5:
        f(std::integral_constant<int, 80>{});
        break;
    case 6:
        f(std::integral_constant<int, 96>{});
        break;
    case 7:
        f(std::integral_constant<int, 112>{});
        break;
    case 8:
        f(std::integral_constant<int, 128>{});
        break;
    default:
        ag_fail("attention: head dim %lld is not supported on CUDA (1 to 128)", (long long)D);
    }
}

// Nothing to do for empty shapes; Tk = 0 leaves every row without a key (out 0, lse +inf).
static bool agc_attn_empty(const ag_attn_args *a) {
    return a->B == 0 || a->H == 0 || a->Tq == 0;
}

template <typename T>
static void agc_attention_fwd(const ag_attn_args *a, const void *q, const void *k, const void *v,
                              void *out, void *lse) {
    if (agc_attn_empty(a)) return;
    agc_attn_with_d(a->D, [&](auto dc) {
        agc_attn_fwd_run<T, decltype(dc)::value>(a, (const T *)q, (const T *)k, (const T *)v,
                                                 (T *)out, (float *)lse);
    });
}

template <typename T>
static void agc_attention_bwd(const ag_attn_args *a, const void *q, const void *k, const void *v,
                              const void *out, const void *lse, const void *g, void *gq, void *gk,
                              void *gv) {
    if (agc_attn_empty(a) || a->Tk == 0 || (!gq && !gk && !gv)) return;
    agc_attn_with_d(a->D, [&](auto dc) {
        agc_attn_bwd_run<T, decltype(dc)::value>(a, (const T *)q, (const T *)k, (const T *)v,
                                                 (const T *)out, (const float *)lse, (const T *)g,
                                                 (T *)gq, (T *)gk, (T *)gv);
    });
}

} // namespace

void agc_register_attention(ag_kernels *k, ag_dtype dt) {
    if (dt == AG_F32) {
        k->attention_fwd = agc_attention_fwd<float>;
        k->attention_bwd = agc_attention_bwd<float>;
    } else if (dt == AG_BF16) {
        k->attention_fwd = agc_attention_fwd<bf16>;
        k->attention_bwd = agc_attention_bwd<bf16>;
    }
}
