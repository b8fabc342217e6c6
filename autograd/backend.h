// backend.h: the kernel interface every device implements (cpu/, cuda/).
// Ops (ops.h) check shapes, allocate and record the tape, then call these kernels on raw
// storage. Per float dtype a table of kernels; a NULL entry means "not on this device" and
// the op fails naming itself and the device. Conventions:
//   - pointers are device pointers; all arrays contiguous unless a layout says otherwise;
//   - "R" below is the arithmetic type of the dtype (f32 for f32/bf16, f64 for f64): saved
//     statistics (rstd, lse) are stored in R;
//   - every *_bwd kernel ADDS into its gradient outputs, and skips those passed as NULL.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int ndim;
    int64_t shape[AG_MAX_DIMS];
    int64_t stride[AG_MAX_DIMS];
    int64_t offset;
} ag_layout;

// Broadcast of a binary op: out has shape[4] (leading dims padded with 1); a and b strides
// per out dim, 0 where broadcast.
typedef struct {
    int64_t shape[AG_MAX_DIMS];
    int64_t a_stride[AG_MAX_DIMS], b_stride[AG_MAX_DIMS];
    bool a_full, b_full; // operand has the output's shape (no broadcast)
} ag_bcast;

typedef enum { AG_BIN_ADD, AG_BIN_SUB, AG_BIN_MUL } ag_binary_op;
typedef enum {
    AG_UN_SCALE, // y = p * x
    AG_UN_SILU,
    AG_UN_GELU,      // erf form
    AG_UN_GELU_TANH, // tanh approximation
    AG_UN_QUICK_GELU // x * sigmoid(1.702 x)
} ag_unary_op;

// Q (B,Tq,H,D), K and V (B,Tk,Hkv,D), O (B,Tq,H,D): element [b,t,h,d] at
// b*s_b + t*s_t + h*s_h + d. H is a multiple of Hkv (grouped-query attention).
typedef struct {
    int64_t B, Tq, Tk, H, Hkv, D;
    int64_t q_sb, q_st, q_sh, k_sb, k_st, k_sh, v_sb, v_st, v_sh; // input strides
    double scale;
    bool causal;         // query i sees keys j <= i + (Tk - Tq)
    const uint8_t *mask; // (B, Tk), 0 = padding key; may be NULL
} ag_attn_args;

// x (B,T,H,D) strided as above (s_*), out and grads contiguous. pos is (T) or (B,T).
typedef struct {
    int64_t B, T, H, D;
    int64_t s_b, s_t, s_h;
    const int32_t *pos;
    bool pos_per_batch;
    double theta;
} ag_rope_args;

// Patches of x (B,H,W,C) channels-last: out (B, Nh*Nw, ph*pw*C), patch (i, j) covering rows
// i*sh .. i*sh+ph-1 and columns j*sw .. j*sw+pw-1, element order (py, px, c) inside.
typedef struct {
    int64_t B, H, W, C, ph, pw, sh, sw, Nh, Nw;
} ag_patch_args;

typedef struct {
    void (*gemm)(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const void *A,
                 int64_t lda, int64_t sA, const void *B, int64_t ldb, int64_t sB, double beta,
                 void *C, int64_t ldc, int64_t sC, int64_t batch);
    void (*fill)(void *x, int64_t n, double v);
    void (*axpy)(void *y, const void *x, int64_t n, double alpha); // y += alpha * x
    // strided dst += contiguous src (view backward)
    void (*add_strided)(void *dst, const ag_layout *dst_layout, const void *src);
    void (*binary_fwd)(ag_binary_op op, const ag_bcast *bc, const void *a, const void *b,
                       void *out);
    void (*binary_bwd)(ag_binary_op op, const ag_bcast *bc, const void *a, const void *b,
                       const void *g, void *ga, void *gb);
    void (*unary_fwd)(ag_unary_op op, const void *x, void *out, int64_t n, double p);
    void (*unary_bwd)(ag_unary_op op, const void *x, const void *g, void *gx, int64_t n, double p);
    void (*swiglu_fwd)(const void *gate, const void *up, void *out, int64_t n);
    void (*swiglu_bwd)(const void *gate, const void *up, const void *g, void *ggate, void *gup,
                       int64_t n);
    // out[i,:] = src[idx[i],:]; and its adjoint dst[idx[i],:] += g[i,:]
    void (*rows_gather)(const void *src, const int32_t *idx, void *out, int64_t m, int64_t c);
    void (*rows_scatter_add)(const void *g, const int32_t *idx, void *dst, int64_t m, int64_t c);
    // dst[idx[i],:] = src ? src[i,:] : 0
    void (*rows_set)(void *dst, const int32_t *idx, const void *src, int64_t m, int64_t c);
    // x viewed as (outer, n, inner): out[o,i] = scale * sum_k x[o,k,i]; bwd broadcasts back
    void (*reduce_fwd)(const void *x, void *out, int64_t outer, int64_t n, int64_t inner,
                       double scale);
    void (*reduce_bwd)(const void *g, void *gx, int64_t outer, int64_t n, int64_t inner,
                       double scale);
    void (*rmsnorm_fwd)(const void *x, const void *w, void *out, void *rstd, int64_t rows,
                        int64_t c, double eps);
    void (*rmsnorm_bwd)(const void *x, const void *w, const void *rstd, const void *g, void *gx,
                        void *gw, int64_t rows, int64_t c);
    void (*layernorm_fwd)(const void *x, const void *w, const void *b, void *out, void *mean,
                          void *rstd, int64_t rows, int64_t c, double eps);
    void (*layernorm_bwd)(const void *x, const void *w, const void *mean, const void *rstd,
                          const void *g, void *gx, void *gw, void *gb, int64_t rows, int64_t c);
    // out = x / max(||x||, eps) per row; norm saved (R)
    void (*l2norm_fwd)(const void *x, void *out, void *norm, int64_t rows, int64_t c, double eps);
    void (*l2norm_bwd)(const void *x, const void *norm, const void *g, void *gx, int64_t rows,
                       int64_t c, double eps);
    void (*softmax_fwd)(const void *x, void *out, int64_t rows, int64_t c);
    void (*softmax_bwd)(const void *out, const void *g, void *gx, int64_t rows, int64_t c);
    void (*rope_fwd)(const ag_rope_args *a, const void *x, void *out);
    void (*rope_bwd)(const ag_rope_args *a, const void *g, void *gx); // gx contiguous
    // out (B,Tq,H,D) contiguous; lse (B,H,Tq) in R, saved for backward: per query the log of
    // sum_j exp(scale q.k_j) over the keys it sees, or +inf where it sees none (its out row
    // is 0, and so is its gradient: backward's exp(s - lse) is 0). No (Tq, Tk) matrix is kept.
    void (*attention_fwd)(const ag_attn_args *a, const void *q, const void *k, const void *v,
                          void *out, void *lse);
    // Recomputes P = exp(scale q.k - lse) from q, k and lse; out is the forward's output,
    // for Dvec = rowsum(g * out). g, gq, gk, gv contiguous (B,T,H*,D).
    void (*attention_bwd)(const ag_attn_args *a, const void *q, const void *k, const void *v,
                          const void *out, const void *lse, const void *g, void *gq, void *gk,
                          void *gv);
    // loss (R scalar) = sum over rows with target != ignore of (lse - logit[target]) / count;
    // lse (rows) saved in R; count written as the number of supervised rows.
    void (*cross_entropy_fwd)(const void *logits, const int32_t *targets, void *lse, void *loss,
                              int64_t *count, int64_t rows, int64_t v, int32_t ignore_index);
    void (*cross_entropy_bwd)(const void *logits, const int32_t *targets, const void *lse,
                              double gscale, void *glogits, int64_t rows, int64_t v,
                              int32_t ignore_index);
    // element i kept with probability 1-p from a hash of (seed, i); kept values scaled 1/(1-p)
    void (*dropout_fwd)(const void *x, void *out, int64_t n, double p, uint64_t seed);
    void (*dropout_bwd)(const void *g, void *gx, int64_t n, double p, uint64_t seed);
    double (*sum_squares)(const void *x, int64_t n); // for gradient norms
    // out (B, Nh*Nw, ph*pw*C) = the patches of x; bwd: gx (B,H,W,C) += the patches of g
    // summed back where they came from (overlapping patches add up)
    void (*patchify_fwd)(const ag_patch_args *a, const void *x, void *out);
    void (*patchify_bwd)(const ag_patch_args *a, const void *g, void *gx);
} ag_kernels;

// One AdamW update (PyTorch semantics): p -= lr*wd*p; m, v updated; p -= lr * (m/bias1) /
// (sqrt(v/bias2) + eps). bf16 parameters update their f32 master copy and round from it.
typedef struct {
    double lr, beta1, beta2, eps, weight_decay, bias1, bias2;
} ag_adamw_args;

// One parameter of a multi-tensor AdamW step: as adamw's arguments, with its weight decay.
typedef struct {
    void *param;
    ag_dtype dtype;
    float *master;
    const void *grad;
    float *m, *v;
    int64_t n;
    double weight_decay;
} ag_adamw_tensor;

typedef struct {
    const char *name;
    const ag_kernels *kernels[AG_NDTYPES]; // per float dtype; NULL where unsupported
    void *(*alloc)(size_t bytes, const char *what);
    void (*free)(void *p);
    void (*memset0)(void *p, size_t bytes);
    void (*copy_to_host)(void *dst, const void *src, size_t bytes);
    void (*copy_from_host)(void *dst, const void *src, size_t bytes);
    // dst contiguous = src laid out by layout; elements of elem_size bytes
    void (*copy_strided)(void *dst, const void *src, const ag_layout *layout, size_t elem_size);
    void (*cast)(void *dst, ag_dtype dst_dtype, const void *src, ag_dtype src_dtype, int64_t n);
    void (*synchronize)(void);
    // param (f32 or bf16); master f32 or NULL for f32 params; grad same dtype as param;
    // m, v f32.
    void (*adamw)(const ag_adamw_args *a, void *param, ag_dtype dtype, float *master,
                  const void *grad, float *m, float *v, int64_t n);
    // Optional (NULL: the optimizer loops over adamw): every parameter in one call, one
    // launch on a GPU; a->weight_decay is ignored, each tensor brings its own.
    void (*adamw_many)(const ag_adamw_args *a, const ag_adamw_tensor *t, int count);
    // Optional (NULL: loop over the kernels' sum_squares): the sum of squares of count
    // tensors x[i] of len[i] elements and dtype dt[i], with one device-to-host copy.
    double (*sum_squares_many)(const void *const *x, const int64_t *len, const ag_dtype *dt,
                               int count);
} ag_backend;

const ag_backend *ag_backend_for(ag_device device);
extern const ag_backend ag_cpu_backend;
#ifdef GROUNDC_HAVE_CUDA
extern const ag_backend ag_cuda_backend;
#endif
// True where a GPU is usable (built with CUDA and a device is visible).
bool ag_cuda_available(void);
// CPU kernels of this process use the processors it may run on divided among `sharing`
// processes on the node (at least 1 thread; OpenMP and OpenBLAS alike), unless the user set
// OMP_NUM_THREADS. Returns the thread count now in use.
int ag_cpu_share_threads(int sharing);
#ifdef GROUNDC_HAVE_CUDA
// Makes GPU index % (visible GPUs) the current device of this process and returns it; name
// (cap bytes, may be NULL) gets its model name. Call before anything is allocated on a GPU
// (one process per GPU: index = the node-local rank). Fails with one line when none is visible.
int ag_cuda_select(int index, char *name, size_t cap); // cuda/cuda_device.cu
#endif

#ifdef __cplusplus
}
#endif
