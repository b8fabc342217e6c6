// ops.h: differentiable operations. Every op checks its inputs (shape, dtype, device,
// contiguity) and fails with one line naming the op and the offending shapes; it never
// broadcasts where the rules below do not say so. Outputs are new contiguous step tensors,
// except for the views (reshape, permute, transpose, slice), which share storage.
// Compute ops need contiguous inputs, except where noted; ag_contiguous makes a copy.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "context.h"

// Views -------------------------------------------------------------------------------
// One dim may be -1 (inferred). x must be contiguous.
ag_tensor *ag_reshape(ag_ctx *ctx, ag_tensor *x, ag_shape shape);
// perm lists the source dim of each output dim; perm.ndim == x->ndim.
ag_tensor *ag_permute(ag_ctx *ctx, ag_tensor *x, ag_shape perm);
ag_tensor *ag_transpose(ag_ctx *ctx, ag_tensor *x, int dim0, int dim1);
// [start, end) along dim.
ag_tensor *ag_slice(ag_ctx *ctx, ag_tensor *x, int dim, int64_t start, int64_t end);
// Splits dim into n pieces of sizes[i] (views); sum(sizes) == x->shape[dim].
void ag_split(ag_ctx *ctx, ag_tensor *x, int dim, int n, const int64_t *sizes, ag_tensor **out);
ag_tensor *ag_contiguous(ag_ctx *ctx, ag_tensor *x);
ag_tensor *ag_concat(ag_ctx *ctx, int n, ag_tensor *const *xs, int dim);
ag_tensor *ag_cast(ag_ctx *ctx, ag_tensor *x, ag_dtype dtype);

// Elementwise ----------------------------------------------------------------------------
// Broadcast as numpy: shapes aligned on the right; a dim broadcasts only when it is 1
// (or absent). Anything else is an error.
ag_tensor *ag_add(ag_ctx *ctx, ag_tensor *a, ag_tensor *b);
ag_tensor *ag_sub(ag_ctx *ctx, ag_tensor *a, ag_tensor *b);
ag_tensor *ag_mul(ag_ctx *ctx, ag_tensor *a, ag_tensor *b);
ag_tensor *ag_scale(ag_ctx *ctx, ag_tensor *x, double s);
ag_tensor *ag_silu(ag_ctx *ctx, ag_tensor *x);
ag_tensor *ag_gelu(ag_ctx *ctx, ag_tensor *x);                     // x * Phi(x), erf form
ag_tensor *ag_gelu_tanh(ag_ctx *ctx, ag_tensor *x);                // tanh approximation
ag_tensor *ag_quick_gelu(ag_ctx *ctx, ag_tensor *x);               // x * sigmoid(1.702 x), CLIP
ag_tensor *ag_swiglu(ag_ctx *ctx, ag_tensor *gate, ag_tensor *up); // silu(gate) * up
// Inverted dropout: in training keeps each element with probability 1-p, scaled 1/(1-p),
// from a counter hash of (seed, element index): reproducible on any thread count.
ag_tensor *ag_dropout(ag_ctx *ctx, ag_tensor *x, double p, uint64_t seed);

// Linear algebra ---------------------------------------------------------------------------
// a (..., M, K) [(..., K, M) if ta], b (K, N) [(N, K) if tb] shared by every batch, or
// with the same batch dims as a. Out (..., M, N).
ag_tensor *ag_matmul(ag_ctx *ctx, ag_tensor *a, ag_tensor *b, bool ta, bool tb);
// x (..., in), w (out, in) as HF/PyTorch store it, bias (out) or NULL. Out (..., out).
ag_tensor *ag_linear(ag_ctx *ctx, ag_tensor *x, ag_tensor *w, ag_tensor *bias);

// Normalisation, reductions ----------------------------------------------------------------
ag_tensor *ag_rmsnorm(ag_ctx *ctx, ag_tensor *x, ag_tensor *w, double eps); // over last dim
ag_tensor *ag_layernorm(ag_ctx *ctx, ag_tensor *x, ag_tensor *w, ag_tensor *b, double eps);
ag_tensor *ag_l2_normalize(ag_ctx *ctx, ag_tensor *x, double eps); // x / max(|x|, eps), last dim
ag_tensor *ag_softmax(ag_ctx *ctx, ag_tensor *x);                  // over last dim
ag_tensor *ag_sum(ag_ctx *ctx, ag_tensor *x, int dim);             // removes dim
ag_tensor *ag_mean(ag_ctx *ctx, ag_tensor *x, int dim);            // removes dim
ag_tensor *ag_mean_all(ag_ctx *ctx, ag_tensor *x);                 // 0-dim

// Transformer pieces ----------------------------------------------------------------------------
// x (B, T, H, D), innermost dim contiguous (other dims may be strided, e.g. a split of a
// fused QKV projection); pos i32 (T) or (B, T). HF rotate-half convention:
// out = x * cos + rotate_half(x) * sin, frequencies theta^(-2i/D).
ag_tensor *ag_rope(ag_ctx *ctx, ag_tensor *x, ag_tensor *pos, double theta);
// q (B, Tq, H, D), k and v (B, Tk, Hkv, D) with H % Hkv == 0, innermost dim contiguous.
// key_mask u8 (B, Tk) or NULL: 0 marks padding keys. causal: query i sees keys
// j <= i + Tk - Tq. scale multiplies q.k. Out (B, Tq, H, D). A query that sees no key
// gets zeros.
ag_tensor *ag_attention(ag_ctx *ctx, ag_tensor *q, ag_tensor *k, ag_tensor *v, ag_tensor *key_mask,
                        bool causal, double scale);

// Indexing ---------------------------------------------------------------------------------
// table (V, C), ids i32 of any shape (...): out (..., C). Ids are checked against V.
ag_tensor *ag_embedding(ag_ctx *ctx, ag_tensor *table, ag_tensor *ids);
// x (N, C), idx i32 (M): out (M, C) = x[idx].
ag_tensor *ag_index_select_rows(ag_ctx *ctx, ag_tensor *x, ag_tensor *idx);
// base (N, C), idx i32 (M) distinct rows, src (M, C): out = base with out[idx[i]] = src[i].
// Splices modality features over placeholder embeddings.
ag_tensor *ag_scatter_rows(ag_ctx *ctx, ag_tensor *base, ag_tensor *idx, ag_tensor *src);
// x (B, H, W, C) channels-last -> (B, Nh*Nw, ph*pw*C), Nh = (H - ph)/sh + 1 and
// Nw = (W - pw)/sw + 1 (floored, as a strided conv drops the remainder). Patches in row-major
// order; inside a patch the order is (py, px, c). Strides below the patch size overlap
// (the gradient sums the overlaps). patchify + linear equals a PyTorch Conv2d with kernel
// (ph, pw) and stride (sh, sw) whose weight (out, C, ph, pw) is permuted to (out, ph, pw, C)
// and flattened to (out, ph*pw*C) (model/vit.h gm_vit_conv_to_patch).
ag_tensor *ag_patchify(ag_ctx *ctx, ag_tensor *x, int64_t ph, int64_t pw, int64_t sh, int64_t sw);

// Loss -------------------------------------------------------------------------------------
// logits (N, V), targets i32 (N). Mean of -log softmax(logits)[target] over the rows whose
// target != ignore_index (0 when there are none). 0-dim result in the compute dtype.
ag_tensor *ag_cross_entropy(ag_ctx *ctx, ag_tensor *logits, ag_tensor *targets,
                            int32_t ignore_index);
