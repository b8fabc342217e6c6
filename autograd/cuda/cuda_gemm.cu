// cuda_gemm.cu: matrix products on CUDA (backend.h gemm) through cuBLASLt. Row-major
// C = alpha op(A) op(B) + beta C for each of batch matrices, per-batch strides sA/sB/sC with
// 0 meaning shared, exactly as the CPU's gemm (autograd/cpu/kernels.inc). f32 and bf16 data,
// f32 arithmetic (CUBLAS_COMPUTE_32F, never TF32: f32 results stay within 1e-5 of the CPU).
// One cuBLASLt handle and a 32 MiB workspace, made on first use; the descriptors and the
// heuristic's algorithm are kept per call shape in a small table. Where the heuristic finds
// no algorithm (an unusual layout), that shape goes through classic cuBLAS instead
// (cublasGemmStridedBatchedEx, same compute type). Calls come from one host thread, as for
// every kernel of this backend: the table and handles take no lock (a lock held across an
// ag_fail that a test catches with longjmp would never be released).
#include <cublasLt.h>
#include <cublas_v2.h>
#include <string.h>

#include "autograd/cuda/cuda_common.cuh"

// Every cuBLAS(Lt) call goes through this: a failure names the call site and the status.
#define CUBLAS_CHECK(call)                                                                         \
    do {                                                                                           \
        cublasStatus_t st_ = (call);                                                               \
        if (st_ != CUBLAS_STATUS_SUCCESS)                                                          \
            ag_fail("%s:%d: %s: %s (%s)", __FILE__, __LINE__, #call, cublasLtGetStatusName(st_),   \
                    cublasLtGetStatusString(st_));                                                 \
    } while (0)

#define WORKSPACE_BYTES ((size_t)32 << 20)
#define CACHE_SIZE      256 // distinct call shapes of one model: a few dozen

// A call shape: everything the descriptors and the algorithm depend on. All int64_t, so
// that memcmp sees no padding.
struct gemm_key {
    int64_t dtype, ta, tb, M, N, K, lda, ldb, ldc, sA, sB, sC, batch, al_a, al_b, al_c;
};

struct gemm_plan {
    bool used;
    bool classic; // no cuBLASLt algorithm: cuBLAS's gemm (the descriptors are unused)
    gemm_key key;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc; // cuBLAS's A (our B), B (our A), C = D
    cublasLtMatmulAlgo_t algo;
};

static cublasLtHandle_t g_handle;
static cublasHandle_t g_classic; // made on the first shape that needs it
static void *g_workspace;
static gemm_plan g_plans[CACHE_SIZE];

// Each piece made once; a failure caught by a test leaves the missing one for the next call
// (a handle without its workspace would hand cuBLASLt a null workspace of 32 MiB).
static void lt_init(void) {
    if (!g_handle) CUBLAS_CHECK(cublasLtCreate(&g_handle));
    if (!g_workspace) CUDA_CHECK(cudaMalloc(&g_workspace, WORKSPACE_BYTES));
}

// The alignment cuBLASLt may assume of a matrix: the largest power of two (at most 256)
// dividing its address and, for a batch, its batch stride in bytes.
static int64_t alignment(const void *p, int64_t stride_bytes) {
    uint64_t a = (uint64_t)(uintptr_t)p | (uint64_t)stride_bytes | 256;
    return (int64_t)(a & (~a + 1));
}

static void plan_free(gemm_plan *p) {
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->la));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->lb));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->lc));
    CUBLAS_CHECK(cublasLtMatmulDescDestroy(p->op));
    p->used = false;
}

// A column-major layout of rows x cols with leading dimension ld, batched with stride s.
static cublasLtMatrixLayout_t make_layout(cudaDataType_t type, int64_t rows, int64_t cols,
                                          int64_t ld, int64_t s, int64_t batch) {
    cublasLtMatrixLayout_t l;
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, type, (uint64_t)rows, (uint64_t)cols, ld));
    if (batch > 1) {
        int32_t count = (int32_t)batch;
        CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                                      sizeof count));
        CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
            l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &s, sizeof s));
    }
    return l;
}

// The plan for key, made (descriptors, heuristic) on a miss. Row-major C (M,N) is
// column-major C^T (N,M) = op(B)^T op(A)^T: cuBLAS's A is our B and its B is our A, each
// read through the column-major view of its row-major storage (its transpose).
static gemm_plan *plan_for(const gemm_key *k) {
    uint64_t h = 1469598103934665603ull; // FNV-1a over the key
    const unsigned char *kb = (const unsigned char *)k;
    for (size_t i = 0; i < sizeof *k; i++) h = (h ^ kb[i]) * 1099511628211ull;
    const size_t start = (size_t)(h % CACHE_SIZE);
    gemm_plan *slot = nullptr;
    for (size_t i = 0; i < CACHE_SIZE; i++) {
        gemm_plan *p = &g_plans[(start + i) % CACHE_SIZE];
        if (!p->used) {
            slot = p;
            break;
        }
        if (memcmp(&p->key, k, sizeof *k) == 0) return p;
    }
    // Full: the home slot is replaced, freed only once the new plan is made, so that a failure
    // on the way leaves no gap in other keys' probe chains.
    const bool evict = !slot;
    if (evict) slot = &g_plans[start];

    const cudaDataType_t type = k->dtype == AG_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    const bool ta = k->ta, tb = k->tb;
    cublasLtMatmulDesc_t op;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const int32_t op_a = tb ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a));
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b));
    // cuBLAS A = our B: stored (K,N) row-major = (N,K) column-major, or (N,K) -> (K,N) if tb
    cublasLtMatrixLayout_t la =
        make_layout(type, tb ? k->K : k->N, tb ? k->N : k->K, k->ldb, k->sB, k->batch);
    // cuBLAS B = our A: stored (M,K) row-major = (K,M) column-major, or (K,M) -> (M,K) if ta
    cublasLtMatrixLayout_t lb =
        make_layout(type, ta ? k->M : k->K, ta ? k->K : k->M, k->lda, k->sA, k->batch);
    cublasLtMatrixLayout_t lc = make_layout(type, k->N, k->M, k->ldc, k->sC, k->batch);

    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = WORKSPACE_BYTES;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    // Split-K partial sums only in f32 (the compute type), never rounded to a bf16 output
    // between the parts: one rounding at the end, as on the CPU.
    const uint32_t reduction = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &reduction, sizeof reduction));
    const uint32_t al_a = (uint32_t)k->al_b, al_b = (uint32_t)k->al_a, al_c = (uint32_t)k->al_c;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c));
    cublasLtMatmulHeuristicResult_t res;
    memset(&res, 0, sizeof res);
    int found = 0;
    // No algorithm for the layout comes back either as found = 0 or as NOT_SUPPORTED from the
    // call itself: both take the classic path.
    const cublasStatus_t hs =
        cublasLtMatmulAlgoGetHeuristic(g_handle, op, la, lb, lc, lc, pref, 1, &res, &found);
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    if (hs == CUBLAS_STATUS_NOT_SUPPORTED)
        found = 0;
    else
        CUBLAS_CHECK(hs);
    if (evict) plan_free(slot);
    slot->used = true;
    slot->classic = found < 1 || res.state != CUBLAS_STATUS_SUCCESS;
    slot->key = *k;
    slot->op = op;
    slot->la = la;
    slot->lb = lb;
    slot->lc = lc;
    slot->algo = res.algo;
    return slot;
}

// One cuBLASLt call: K > 0, and a batch > 1 has non-zero strides for A, B and C.
static void lt_gemm(ag_dtype dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha,
                    const void *A, int64_t lda, int64_t sA, const void *B, int64_t ldb, int64_t sB,
                    double beta, void *C, int64_t ldc, int64_t sC, int64_t batch) {
    // A matrix of one column (column-major view) may have any ld: cuBLASLt wants >= rows
    const int64_t a_rows = ta ? M : K, a_cols = ta ? K : M, b_rows = tb ? K : N,
                  b_cols = tb ? N : K;
    if (a_cols == 1 && lda < a_rows) lda = a_rows;
    if (b_cols == 1 && ldb < b_rows) ldb = b_rows;
    if (M == 1 && ldc < N) ldc = N;
    if (lda < a_rows || ldb < b_rows || ldc < N)
        ag_fail("gemm: leading dimensions lda %lld ldb %lld ldc %lld too small for M %lld N %lld "
                "K %lld",
                (long long)lda, (long long)ldb, (long long)ldc, (long long)M, (long long)N,
                (long long)K);
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX || batch > INT32_MAX || lda > INT32_MAX ||
        ldb > INT32_MAX || ldc > INT32_MAX)
        ag_fail("gemm: dimensions %lld x %lld x %lld (batch %lld) exceed cuBLASLt's int range",
                (long long)M, (long long)N, (long long)K, (long long)batch);
    const int64_t es = (int64_t)ag_dtype_size(dt);
    if (batch == 1) sA = sB = sC = 0; // unused: more calls share a plan
    gemm_key key;
    memset(&key, 0, sizeof key);
    key.dtype = dt;
    key.ta = ta;
    key.tb = tb;
    key.M = M;
    key.N = N;
    key.K = K;
    key.lda = lda;
    key.ldb = ldb;
    key.ldc = ldc;
    key.sA = sA;
    key.sB = sB;
    key.sC = sC;
    key.batch = batch;
    key.al_a = alignment(A, sA * es);
    key.al_b = alignment(B, sB * es);
    key.al_c = alignment(C, sC * es);

    lt_init();
    const gemm_plan *p = plan_for(&key);
    const float a32 = (float)alpha, b32 = (float)beta;
    if (!p->classic) {
        CUBLAS_CHECK(cublasLtMatmul(g_handle, p->op, &a32, B, p->la, A, p->lb, &b32, C, p->lc, C,
                                    p->lc, &p->algo, g_workspace, WORKSPACE_BYTES, agc_stream()));
        return;
    }
    if (!g_classic) { // CUBLAS_COMPUTE_32F then uses no TF32; split-K sums stay f32
        CUBLAS_CHECK(cublasCreate(&g_classic));
        CUBLAS_CHECK(cublasSetMathMode(
            g_classic, (cublasMath_t)(CUBLAS_DEFAULT_MATH |
                                      CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
    }
    CUBLAS_CHECK(cublasSetStream(g_classic, agc_stream()));
    const cudaDataType_t type = dt == AG_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        g_classic, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N, (int)M,
        (int)K, &a32, B, type, (int)ldb, (long long)sB, A, type, (int)lda, (long long)sA, &b32, C,
        type, (int)ldc, (long long)sC, (int)batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// C = beta C (0 where beta is 0: C may hold garbage) for K == 0, where the product is empty.
template <typename T>
__global__ void gemm_scale_kernel(T *C, long long M, long long N, long long ldc, long long sC,
                                  long long batch, float beta) {
    const long long n = batch * M * N;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const long long j = i % N, r = i / N, row = r % M, b = r / M;
        const long long off = b * sC + row * ldc + j;
        agc_st(C, off, beta == 0.0f ? 0.0f : beta * agc_ld(C, off));
    }
}

static void gemm_scale(ag_dtype dt, int64_t M, int64_t N, double beta, void *C, int64_t ldc,
                       int64_t sC, int64_t batch) {
    const unsigned blocks = agc_blocks(batch * M * N, 256);
    if (dt == AG_BF16)
        gemm_scale_kernel<<<blocks, 256, 0, agc_stream()>>>((bf16 *)C, M, N, ldc, sC, batch,
                                                            (float)beta);
    else
        gemm_scale_kernel<<<blocks, 256, 0, agc_stream()>>>((float *)C, M, N, ldc, sC, batch,
                                                            (float)beta);
    CUDA_LAUNCHED("gemm_scale_kernel");
}

static void gemm_any(ag_dtype dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha,
                     const void *A, int64_t lda, int64_t sA, const void *B, int64_t ldb, int64_t sB,
                     double beta, void *C, int64_t ldc, int64_t sC, int64_t batch) {
    if (M == 0 || N == 0 || batch == 0) return;
    const size_t es = ag_dtype_size(dt);
    // One matrix at a time, in order, where one batched call cannot express the CPU's
    // semantics: a shared C (the products accumulate in turn), or a shared A or B (a zero
    // batch stride is not promised to cuBLASLt).
    const bool fold = batch > 1 && sB == 0 && !ta && sA == M * lda && sC == M * ldc;
    if (batch > 1 && !fold && (sC == 0 || (K > 0 && (sA == 0 || sB == 0)))) {
        for (int64_t i = 0; i < batch; i++)
            gemm_any(dt, ta, tb, M, N, K, alpha, (const char *)A + (size_t)(i * sA) * es, lda, 0,
                     (const char *)B + (size_t)(i * sB) * es, ldb, 0, beta,
                     (char *)C + (size_t)(i * sC) * es, ldc, 0, 1);
        return;
    }
    if (K == 0) { // C = beta C (BLAS may not accept K = 0)
        gemm_scale(dt, M, N, beta, C, ldc, sC, batch);
        return;
    }
    if (fold) // B shared, A's and C's rows consecutive across the batch: one (batch*M) gemm
        lt_gemm(dt, false, tb, batch * M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
    else
        lt_gemm(dt, ta, tb, M, N, K, alpha, A, lda, sA, B, ldb, sB, beta, C, ldc, sC, batch);
}

static void gemm_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const void *A,
                     int64_t lda, int64_t sA, const void *B, int64_t ldb, int64_t sB, double beta,
                     void *C, int64_t ldc, int64_t sC, int64_t batch) {
    gemm_any(AG_F32, ta, tb, M, N, K, alpha, A, lda, sA, B, ldb, sB, beta, C, ldc, sC, batch);
}

static void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha,
                      const void *A, int64_t lda, int64_t sA, const void *B, int64_t ldb,
                      int64_t sB, double beta, void *C, int64_t ldc, int64_t sC, int64_t batch) {
    gemm_any(AG_BF16, ta, tb, M, N, K, alpha, A, lda, sA, B, ldb, sB, beta, C, ldc, sC, batch);
}

void agc_register_gemm(ag_kernels *k, ag_dtype dt) {
    if (dt == AG_F32) k->gemm = gemm_f32;
    if (dt == AG_BF16) k->gemm = gemm_bf16;
}
