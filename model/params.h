// params.h: the module tree over the parameters. Modules keep their parameters in arrays
// (gm_llama.params, gm_qformer.params, ...); a registry gathers them by name so that stages
// can pick what trains, reports can count per module, and the memory a configuration needs
// can be estimated before anything big is allocated.
//
// Names are HF-style dotted paths ("model.layers.3.self_attn.q_proj.weight"). Glob patterns
// select them with fnmatch(3) without flags: '*' matches any run of characters INCLUDING dots
// (so "model.layers.*" covers every layer and "*.mm_vision_projector.*" the projector
// wherever it hangs), '?' one character, "[...]" a set. A pattern must match a whole name.
//
// Top-level modules (for counts): the first dotted component of a name, or the first two when
// the first is "model" (HF's wrapper: "model.layers", "model.embed_tokens",
// "model.video_Qformer", "lm_head").
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "autograd/ops.h"
#include "model/llama.h"

typedef struct {
    int n;
    int64_t cap;
    ag_tensor **tensors; // each has a unique, non-NULL name
} gm_params;

gm_params *gm_params_new(void);
void gm_params_free(gm_params *reg);
// Adds parameters (persistent tensors); fails on a missing or duplicate name.
void gm_params_add(gm_params *reg, ag_tensor *p);
void gm_params_add_many(gm_params *reg, ag_tensor *const *ps, int n);
// The parameter called name, or NULL.
ag_tensor *gm_params_find(const gm_params *reg, const char *name);

// fnmatch(pattern, name, 0): see the header comment.
bool gm_glob_match(const char *pattern, const char *name);

// A stage's choice: a parameter trains when it matches some trainable pattern and no frozen
// pattern (frozen wins, so "model.*" minus "model.Qformer.*" reads naturally).
typedef struct {
    const char *const *trainable;
    int n_trainable;
    const char *const *frozen;
    int n_frozen;
} gm_param_selection;

bool gm_params_selected(const gm_param_selection *sel, const char *name);
// Marks every parameter of reg trainable or frozen (ag_set_trainable) as sel says. Fails,
// naming the pattern, when a pattern matches no parameter at all (a typo would otherwise
// silently freeze a module). Returns the number of trainable parameter tensors.
int gm_params_apply(ag_ctx *ctx, gm_params *reg, const gm_param_selection *sel);
// Elements that sel would make trainable (nothing is changed); fails as gm_params_apply.
int64_t gm_params_count_selected(const gm_params *reg, const gm_param_selection *sel);

// Element counts per top-level module, in order of first appearance; trainable as the tensors
// are marked now (requires_grad).
typedef struct {
    char name[96];
    int64_t total, trainable;
} gm_param_group;
// Fills up to max groups; returns how many there are (may exceed max).
int gm_params_groups(const gm_params *reg, gm_param_group *out, int max);
// The top-level module of a parameter name ("model.vision_tower", "lm_head") into buf.
void gm_params_group_of(const char *name, char *buf, size_t n);
int64_t gm_params_total(const gm_params *reg);
int64_t gm_params_trainable(const gm_params *reg);

// Memory a configuration needs, in bytes: a documented estimate.
//   weights     every parameter at its dtype;
//   grads       trainable parameters at their dtype (gradients live next to them);
//   optimizer   AdamW: two f32 moments per trainable element, plus an f32 master copy
//               where the weight is stored in bf16;
//   activations what one micro-batch of B sequences of T tokens leaves in the step arena
//               through the LLM (see gm_llama_activation_bytes). Adapters and frozen
//               encoders are not included: they run on far fewer tokens, or without a tape;
//   total       the sum.
typedef struct {
    int64_t weights, grads, optimizer, activations, total;
} gm_memory;

// Elements of a Llama decoder of this shape (embeddings, layers, norm, lm_head).
int64_t gm_llama_config_param_count(const gm_llama_config *cfg);
// Step-arena bytes of one forward/backward of the decoder on B x T tokens in compute dtype
// dt (f32 or bf16): per layer and token the outputs of every op (norms, q/k/v, RoPE,
// attention output, projections, residual adds, gate/up/swiglu/down: 9C + 3Ckv + 3F
// elements, norm statistics in f32), the attention's log-sum-exp ag_attention keeps for
// backward (H f32 per token), the logits (V per token) and cross-entropy statistics; then what
// backward adds: the logits' gradient twice (it and its view's) and one layer's activation
// gradients (2C + 2F + 3Ckv per token). Within a few per cent of ag_step_peak_bytes on the CPU
// backend for small decoders (checked in tests/test_splice.c); without activation checkpointing,
// which the engine lacks.
int64_t gm_llama_activation_bytes(const gm_llama_config *cfg, ag_dtype dt, int64_t B, int64_t T);
// From counts: weights elements at weight dtype wdt, of which trainable elements train.
gm_memory gm_memory_estimate(int64_t weights, int64_t trainable, ag_dtype wdt,
                             int64_t activation_bytes);
// From a registry as it is now (each tensor's own dtype and trainable flag), plus the
// activations of llm (may be NULL: none) at B x T.
gm_memory gm_params_memory(const gm_params *reg, const gm_llama_config *llm, int64_t B, int64_t T);
