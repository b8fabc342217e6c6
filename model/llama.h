// llama.h: a Llama-style decoder (Vicuna/Llama 2 shape; grouped-query attention) built from
// autograd ops. Parameter names follow HF transformers (model.layers.N.self_attn.q_proj.weight
// ...) so that weights map one to one.
#pragma once
#include <stdint.h>

#include "autograd/ops.h"

typedef struct {
    int64_t vocab, dim, n_layers, n_heads, n_kv_heads, ffn, max_seq;
    double rope_theta, norm_eps;
} gm_llama_config;

typedef struct {
    ag_tensor *attn_norm;         // (C)
    ag_tensor *wq, *wk, *wv, *wo; // (H*D, C), (Hkv*D, C), (Hkv*D, C), (C, H*D)
    ag_tensor *ffn_norm;          // (C)
    ag_tensor *w_gate, *w_up;     // (F, C)
    ag_tensor *w_down;            // (C, F)
} gm_llama_layer;

typedef struct {
    gm_llama_config cfg;
    ag_tensor *embed; // (V, C)
    gm_llama_layer *layers;
    ag_tensor *norm;    // (C)
    ag_tensor *lm_head; // (V, C)
    int n_params;
    ag_tensor **params; // every parameter, in HF order
} gm_llama;

// Checks the config; fails with the offending field on nonsense (e.g. dim % heads != 0).
void gm_llama_check_config(const gm_llama_config *cfg);
// Allocates the parameters in ctx's pool (dtype f32 or bf16), uninitialised (zero).
gm_llama *gm_llama_new(ag_ctx *ctx, const gm_llama_config *cfg, ag_dtype dtype);
void gm_llama_free(gm_llama *m);
// Initialises as HF does: normal(0, std) for matrices and embeddings, ones for norms.
void gm_llama_init(gm_llama *m, uint64_t seed, double std);
int64_t gm_llama_param_count(const gm_llama *m);

// Positions 0 .. T-1 as an i32 step tensor (T).
ag_tensor *gm_positions(ag_ctx *ctx, int64_t T);
// Token embeddings: ids i32 (B, T) -> (B, T, C).
ag_tensor *gm_llama_embed(ag_ctx *ctx, const gm_llama *m, ag_tensor *ids);
// The decoder stack on embeddings x (B, T, C) at positions pos i32 (T) or (B, T):
// final-normed hidden states (B, T, C).
ag_tensor *gm_llama_hidden(ag_ctx *ctx, const gm_llama *m, ag_tensor *x, ag_tensor *pos);
// Logits (B*T, V) from hidden states.
ag_tensor *gm_llama_logits(ag_ctx *ctx, const gm_llama *m, ag_tensor *hidden);
// Mean next-token cross-entropy: ids (B, T), targets (B, T) with ignore_index -100.
ag_tensor *gm_llama_loss(ag_ctx *ctx, const gm_llama *m, ag_tensor *ids, ag_tensor *targets);
