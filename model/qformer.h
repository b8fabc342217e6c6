// qformer.h: the BLIP-2 Querying Transformer (Q-Former) built from autograd ops, computed as
// transformers' Blip2QFormerModel (and LAVIS' BertModel, which it reproduces) computes it for
// query tokens only (no text):
//
//   x = LayerNorm(queries)                      dropout in training
//   per layer l:
//     x = LayerNorm(x + dropout(Wo . SelfAttention(x)))               post-LN, q/k/v with bias
//     if l % cross_attention_frequency == 0:                          layers 0, f, 2f, ...
//       x = LayerNorm(x + dropout(Wo . CrossAttention(q = x, kv = encoder states)))
//     x = LayerNorm(x + dropout(W2 . gelu_erf(W1 . x))) intermediate_query/output_query
//
// Every LayerNorm uses eps (1e-12 in BERT). Keys and values of the cross-attention project
// from the encoder width, which may differ from the hidden width. The learned query tokens are
// not part of this module: the caller owns them (BLIP-2 keeps them outside the Q-Former too)
// and passes them in as (1, Q, C), broadcast over the batch, or (B, Q, C).
//
// Parameter names, under a caller-given prefix, follow one of two schemes:
//   GM_QFORMER_NAMES_HF     transformers' Blip2QFormerModel:
//                           layernorm.weight, encoder.layer.N.attention.attention.query.weight,
//                           encoder.layer.N.attention.output.dense.weight,
//                           encoder.layer.N.attention.output.LayerNorm.weight,
//                           encoder.layer.N.crossattention.attention.key.weight, ...,
//                           encoder.layer.N.intermediate_query.dense.weight,
//                           encoder.layer.N.output_query.dense.weight,
//                           encoder.layer.N.output_query.LayerNorm.weight
//   GM_QFORMER_NAMES_LAVIS  LAVIS / Video-LLaMA / GroundingGPT checkpoints (BertModel; pass the
//                           prefix up to and including "bert."): embeddings.LayerNorm.weight,
//                           encoder.layer.N.attention.self.query.weight,
//                           encoder.layer.N.crossattention.self.key.weight, the rest as HF.
// The text-only FFN (intermediate/output) of BERT never runs on query tokens and is not made.
//
// Not supported (documented differences from the originals): dropout on the attention
// probabilities (ag_attention keeps them internal; hidden dropout is supported), text input
// ids, past key values, head masks. A query whose cross-attention sees no unmasked key gets a
// zero context (ag_attention), where HF attends uniformly to the masked keys.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "autograd/ops.h"

typedef enum { GM_QFORMER_NAMES_HF, GM_QFORMER_NAMES_LAVIS } gm_qformer_names;

typedef struct {
    int64_t hidden;                    // C: 768 for BERT-base
    int64_t n_layers;                  // 12 (BLIP-2), 2 (GroundingGPT video/audio)
    int64_t n_heads;                   // 12; hidden % n_heads == 0
    int64_t intermediate;              // FFN width, 3072
    int64_t encoder_width;             // Ce: width of the encoder states (1408, 768, 1024)
    int64_t cross_attention_frequency; // layer l cross-attends when l % f == 0 (2 or 1)
    double eps;                        // LayerNorm eps, 1e-12
    double dropout;                    // hidden dropout in training (BERT: 0.1); 0 disables
    // Normal std of the matrices at init (and of the owner's query tokens and projection);
    // 0: the std the init call is given (BERT's 0.02, made for width 768). Only matters for
    // a Q-Former trained from scratch: a narrow one passes its input on at about
    // 1/sqrt(hidden), a 0.02 one at a few per cent of it.
    double init_std;
    gm_qformer_names names;
} gm_qformer_config;

// One attention block: q/k/v projections (with bias), output dense and post-LN.
typedef struct {
    ag_tensor *q_w, *q_b;   // (C, C), (C)
    ag_tensor *k_w, *k_b;   // (C, Ckv), (C): Ckv = C for self-, Ce for cross-attention
    ag_tensor *v_w, *v_b;   // (C, Ckv), (C)
    ag_tensor *o_w, *o_b;   // (C, C), (C)
    ag_tensor *ln_w, *ln_b; // (C), (C)
} gm_qformer_attn;

typedef struct {
    gm_qformer_attn self_attn;
    bool has_cross;
    gm_qformer_attn cross;    // all NULL unless has_cross
    ag_tensor *fc1_w, *fc1_b; // intermediate_query.dense: (I, C), (I)
    ag_tensor *fc2_w, *fc2_b; // output_query.dense: (C, I), (C)
    ag_tensor *ln_w, *ln_b;   // output_query.LayerNorm: (C), (C)
} gm_qformer_layer;

typedef struct {
    gm_qformer_config cfg;
    ag_tensor *ln_w, *ln_b; // the initial LayerNorm on the query embeddings
    gm_qformer_layer *layers;
    int n_params;
    ag_tensor **params; // every parameter, in checkpoint order
} gm_qformer;

// BERT-base shapes (768 wide, 12 layers, 12 heads, 3072 FFN, eps 1e-12, dropout 0.1, cross-
// attention every 2nd layer) with the given encoder width: the BLIP-2 Q-Former.
gm_qformer_config gm_qformer_bert_base(int64_t encoder_width);
// Fails (ag_fail) naming what (e.g. "video qformer") and the offending field.
void gm_qformer_check_config(const gm_qformer_config *cfg, const char *what);
int64_t gm_qformer_config_param_count(const gm_qformer_config *cfg);

// Allocates the parameters in ctx's pool, zero; names are prefix + scheme name.
gm_qformer *gm_qformer_new(ag_ctx *ctx, const gm_qformer_config *cfg, const char *prefix,
                           ag_dtype dtype);
void gm_qformer_free(gm_qformer *m);
// As BERT initialises: linear weights normal(0, std) (0.02), biases 0, LayerNorm 1 and 0.
// The stream of each tensor comes from its name, so modules never share random numbers.
void gm_qformer_init(gm_qformer *m, uint64_t seed, double std);

// queries (1, Q, C) or (B, Q, C); enc (B, N, Ce); enc_mask u8 (B, N), 0 marks padding, or
// NULL. train enables hidden dropout (p = cfg.dropout) with streams derived from seed.
// Returns the last hidden state (B, Q, C).
ag_tensor *gm_qformer_forward(ag_ctx *ctx, const gm_qformer *m, ag_tensor *queries, ag_tensor *enc,
                              ag_tensor *enc_mask, bool train, uint64_t seed);
