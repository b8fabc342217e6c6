// optim.h: AdamW with decoupled weight decay over a set of parameters, and gradient-norm
// clipping. State (first and second moments, and f32 master weights for bf16 parameters)
// lives in the context's pool as named tensors, so checkpoints can save and restore it.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "context.h"

typedef struct {
    double beta1, beta2, eps;
    double weight_decay; // applied to parameters whose decay flag is set
} ag_adamw_config;

typedef struct {
    int n;
    ag_tensor **params;
    bool *decay;
    ag_tensor **m, **v;     // f32, one per parameter
    ag_tensor **master;     // f32 copy for bf16 parameters, NULL for f32 ones
    ag_adamw_tensor *batch; // n entries: the parameters of one device for its adamw_many
    int64_t step;           // completed steps
    ag_adamw_config cfg;
    ag_ctx *ctx;
} ag_adamw;

// Parameters must be trainable (have gradients). decay may be NULL (all decay).
ag_adamw *ag_adamw_new(ag_ctx *ctx, ag_tensor **params, int n, const bool *decay,
                       ag_adamw_config cfg);
void ag_adamw_free(ag_adamw *opt);
// One update with learning rate lr from the current gradients (gradients are left as they
// are; zero them with ag_zero_grad).
void ag_adamw_step(ag_adamw *opt, double lr);

// The global L2 norm of the gradients (computed in double).
double ag_grad_norm(ag_tensor **params, int n);
// Scales gradients so that their global norm is at most max_norm; returns the norm before.
double ag_clip_grad_norm(ag_tensor **params, int n, double max_norm);
