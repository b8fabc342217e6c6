// lora.h: LoRA (low-rank adaptation, as HF peft implements it) on the Llama decoder's linear
// layers. A targeted linear W (out, in) gains A (r, in) and B (out, r):
//
//   y = x W^T + (alpha / r) * dropout(x) A^T B^T
//
// A starts kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in)) (nn.Linear's and
// peft's default), B at zero, so a fresh LoRA model computes exactly what its base does. The
// tensors are named after the base weight as peft names them: "model.layers.3.self_attn.
// q_proj.weight" gets "model.layers.3.self_attn.q_proj.lora_A.weight" and "...lora_B.weight".
// Merging folds the update into the base weight: W' = W + (alpha / r) B A.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "autograd/ops.h"

typedef enum {
    GM_LORA_Q,
    GM_LORA_K,
    GM_LORA_V,
    GM_LORA_O,
    GM_LORA_GATE,
    GM_LORA_UP,
    GM_LORA_DOWN,
    GM_LORA_NTARGETS
} gm_lora_target;

#define GM_LORA_ALL_TARGETS ((1u << GM_LORA_NTARGETS) - 1)

typedef struct {
    int64_t rank;     // r; 0: LoRA off
    double alpha;     // the update is scaled by alpha / r
    double dropout;   // on the LoRA branch's input, in training only
    unsigned targets; // bit t: gm_lora_target t is adapted
} gm_lora_config;

// "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" (peft's
// target_modules names for Llama).
const char *gm_lora_target_name(gm_lora_target t);
// The target called name, or -1.
int gm_lora_target_from_name(const char *name);
// Fails naming the field when an enabled config (rank > 0) is out of range.
void gm_lora_check_config(const gm_lora_config *c);
// alpha / rank (0 when off).
double gm_lora_scale(const gm_lora_config *c);

// The adapter of one linear: A (r, in), B (out, r); both NULL when the linear is not adapted.
typedef struct {
    ag_tensor *A, *B;
} gm_lora_pair;

// Allocates A and B for base weight w (out, in), at w's dtype, named after w (whose name must
// end in ".weight"). Zero until gm_lora_init.
gm_lora_pair gm_lora_new(ag_ctx *ctx, const ag_tensor *w, int64_t rank);
// A kaiming-uniform from (seed, a hash of A's name), B zero.
void gm_lora_init(const gm_lora_pair *p, uint64_t seed);
// x (..., in) -> (..., out): x W^T, plus scale * dropout(x) A^T B^T when p has an adapter.
// dropout <= 0: none (inference).
ag_tensor *gm_lora_linear(ag_ctx *ctx, ag_tensor *x, ag_tensor *w, const gm_lora_pair *p,
                          double scale, double dropout, uint64_t seed);
// w += scale * B A, on the host: B A accumulated in f64, the sum rounded once to w's dtype.
void gm_lora_merge(ag_tensor *w, const gm_lora_pair *p, double scale);
