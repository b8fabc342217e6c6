// llama.h: a Llama-style decoder (Vicuna/Llama 2 shape; grouped-query attention) built from
// autograd ops. Parameter names follow HF transformers (model.layers.N.self_attn.q_proj.weight
// ...) so that weights map one to one. Inference also has a KV-cached path (gm_llama_kv): the
// prompt is run once (prefill), then each new token costs one decoder row per layer.
// Optionally the seven linears of every layer carry LoRA adapters (model/lora.h).
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "autograd/ops.h"
#include "model/lora.h"

typedef struct {
    int64_t vocab, dim, n_layers, n_heads, n_kv_heads, ffn, max_seq;
    double rope_theta, norm_eps;
    gm_lora_config lora; // rank 0: no LoRA
} gm_llama_config;

typedef struct {
    ag_tensor *attn_norm;                // (C)
    ag_tensor *wq, *wk, *wv, *wo;        // (H*D, C), (Hkv*D, C), (Hkv*D, C), (C, H*D)
    ag_tensor *ffn_norm;                 // (C)
    ag_tensor *w_gate, *w_up;            // (F, C)
    ag_tensor *w_down;                   // (C, F)
    gm_lora_pair lora[GM_LORA_NTARGETS]; // by gm_lora_target; NULL pairs where not adapted
} gm_llama_layer;

typedef struct {
    gm_llama_config cfg;
    ag_tensor *embed; // (V, C)
    gm_llama_layer *layers;
    ag_tensor *norm;    // (C)
    ag_tensor *lm_head; // (V, C)
    int n_params;
    ag_tensor **params; // every parameter, in HF order
    // LoRA tensors (A, B per adapted linear, layer by layer), kept out of params so that
    // params stays the HF model's list (import maps it one to one).
    int n_lora;
    ag_tensor **lora_params;
    bool lora_train;    // LoRA dropout on (gm_llama_lora_mode)
    uint64_t lora_seed; // its stream for the next forward
} gm_llama;

// Checks the config; fails with the offending field on nonsense (e.g. dim % heads != 0).
void gm_llama_check_config(const gm_llama_config *cfg);
// Allocates the parameters in ctx's pool (dtype f32 or bf16), uninitialised (zero).
gm_llama *gm_llama_new(ag_ctx *ctx, const gm_llama_config *cfg, ag_dtype dtype);
void gm_llama_free(gm_llama *m);
// Initialises as HF does: normal(0, std) for matrices and embeddings, ones for norms.
void gm_llama_init(gm_llama *m, uint64_t seed, double std);
int64_t gm_llama_param_count(const gm_llama *m);

// LoRA -----------------------------------------------------------------------------------
// Training mode of the LoRA branch for the following forwards: dropout (cfg.lora.dropout)
// with streams from seed when train. The KV-cached path never drops.
void gm_llama_lora_mode(gm_llama *m, bool train, uint64_t seed);
// Freezes every parameter of m->params (the base decoder: no gradient, no optimizer state)
// and makes the LoRA tensors trainable; without LoRA does nothing. Returns the number of
// LoRA tensors.
int gm_llama_lora_select(ag_ctx *ctx, gm_llama *m);
// Folds every adapter into its base weight (W += alpha / r B A) and detaches them: after
// it, m is a plain decoder (cfg.lora.rank 0, n_lora 0); the LoRA tensors stay in the
// context's pool, unused.
void gm_llama_lora_merge(gm_llama *m);

// Positions 0 .. T-1 as an i32 step tensor (T).
ag_tensor *gm_positions(ag_ctx *ctx, int64_t T);
// Token embeddings: ids i32 (B, T) -> (B, T, C).
ag_tensor *gm_llama_embed(ag_ctx *ctx, const gm_llama *m, ag_tensor *ids);
// The decoder stack on embeddings x (B, T, C) at positions pos i32 (T) or (B, T):
// final-normed hidden states (B, T, C).
ag_tensor *gm_llama_hidden(ag_ctx *ctx, const gm_llama *m, ag_tensor *x, ag_tensor *pos);
// The real tokens of a padded batch (B, T): each sample's first lengths[b] positions, in
// order. gm_llama_hidden_rows runs the decoder on their rows only; padding costs nothing in
// the linears, norms and MLPs (only attention sees the padded (B, T) layout, where padding
// sits after every real token and causal masking keeps it out).
typedef struct {
    int64_t B, T, N; // N = sum of lengths
    ag_tensor *rows; // i32 (N): b * T + t of each real token
    ag_tensor *pos;  // i32 (N): its position t
    int32_t *host;   // (N) rows on the host (step memory), for callers that map indices
} gm_llama_rows;
// From lengths (B) in [1, T]; fails naming the sample otherwise. Step memory.
gm_llama_rows gm_llama_rows_of(ag_ctx *ctx, int64_t B, int64_t T, const int32_t *lengths);
// The decoder stack on the real tokens' embeddings x (N, C): final-normed hidden states (N, C),
// equal to gm_llama_hidden's rows at r->rows.
ag_tensor *gm_llama_hidden_rows(ag_ctx *ctx, const gm_llama *m, ag_tensor *x,
                                const gm_llama_rows *r);
// Logits (B*T, V) from hidden states.
ag_tensor *gm_llama_logits(ag_ctx *ctx, const gm_llama *m, ag_tensor *hidden);
// The target that is not in the loss (PyTorch's ignore_index default, which the data layer's
// DS_IGNORE_TARGET equals).
#define GM_IGNORE_TARGET (-100)

// Mean cross-entropy of the logits at every position: ids (B, T), targets (B, T) where
// targets[t] is the id that follows position t (already shifted); GM_IGNORE_TARGET is ignored.
ag_tensor *gm_llama_loss(ag_ctx *ctx, const gm_llama *m, ag_tensor *ids, ag_tensor *targets);

// KV cache for inference ---------------------------------------------------------------------
// Per layer the rotated keys and the values of every position run so far, (B, max_len, Hkv,
// D) at the model's dtype on its device, in storage the cache owns (not a context arena, so
// that it outlives step resets and can be freed). gm_llama_hidden_cached runs new positions
// len .. len + n - 1 against it: the same ops as gm_llama_hidden (attention is causal with
// Tk = len + n > Tq = n), so its outputs equal the full forward's rows.
typedef struct {
    int64_t B, max_len, n_layers;
    int64_t len;      // positions filled (the same for every sample of the batch)
    ag_tensor *k, *v; // (n_layers) tensors (B, max_len, Hkv, D)
    int64_t rows;     // decoder rows run through the cache so far (B per position)
} gm_llama_kv;

// A cache for B sequences of up to max_len positions (<= the model's max_seq).
gm_llama_kv *gm_llama_kv_new(const gm_llama *m, int64_t B, int64_t max_len);
void gm_llama_kv_free(gm_llama_kv *kv);
// Empties the cache (len = 0) for a new sequence; keeps the storage.
void gm_llama_kv_reset(gm_llama_kv *kv);
// The decoder stack on embeddings x (B, n, C) of positions kv->len .. kv->len + n - 1, which
// are appended to the cache: final-normed hidden states (B, n, C). Inference only: fails
// when gradients are enabled, or when the positions would pass max_len.
ag_tensor *gm_llama_hidden_cached(ag_ctx *ctx, const gm_llama *m, gm_llama_kv *kv, ag_tensor *x);
