// context.h: the autograd context: memory, the tape, gradient mode.
// Parameters (and their gradients, optimizer state) live in the persistent pool; everything
// a step makes (activations, saved tensors, activation gradients, tape nodes) lives in the
// step arena, freed at once by ag_step_reset. Each op that sees an input requiring grad
// appends a node to the tape; ag_backward runs the tape in reverse.
#pragma once
#include <stdbool.h>

#include "memory.h"
#include "tensor.h"

#define AG_NODE_MAX_IN 4

typedef struct ag_ctx ag_ctx;
typedef struct ag_node ag_node;

// Computes the gradients of node->in[] (those with requires_grad) from node->out->grad.
typedef void (*ag_backward_fn)(ag_ctx *ctx, ag_node *node);

struct ag_node {
    const char *op;
    ag_backward_fn backward;
    ag_tensor *out;
    ag_tensor *in[AG_NODE_MAX_IN];
    ag_tensor **in_many; // ops with a variable input count (concat) use this instead
    int n_in;
    ag_tensor *saved[3]; // forward results backward needs beyond in/out (norm stats, lse)
    double f[4];         // scalar arguments (eps, scale, exponent, dropout p)
    int64_t i[4];        // integer arguments (op code, dims, dropout seed, ignore_index)
    void *extra;         // op-specific arguments copied into the arena
    ag_node *prev;
};

typedef struct ag_free_block ag_free_block;

struct ag_ctx {
    ag_device device;
    ag_arena pool_data, pool_meta; // persistent
    ag_arena step_data, step_meta; // reset every step
    ag_node *tape;                 // newest node; nodes link to the previous one
    ag_free_block *free_grads;     // step memory of released gradients, for reuse
    int no_grad_depth;
    bool meta; // shapes and names only (ag_ctx_new_meta)
};

ag_ctx *ag_ctx_new(ag_device device);
// A context whose parameters have names, shapes and dtypes but no storage: a model built on it
// can be counted and its parameters selected (as PyTorch's meta device) without allocating its
// weights. Step tensors and copies of values fail, naming the tensor.
ag_ctx *ag_ctx_new_meta(void);
// A new context like ctx: the same device, meta when ctx is.
ag_ctx *ag_ctx_new_sibling(const ag_ctx *ctx);
void ag_ctx_free(ag_ctx *ctx);
// Drops the tape and all step tensors; parameters and their gradients stay.
void ag_step_reset(ag_ctx *ctx);
// Bytes: the most the step arena ever held; what the pool holds.
size_t ag_step_peak_bytes(const ag_ctx *ctx);
size_t ag_pool_bytes(const ag_ctx *ctx);
// Uninitialised host memory in the step arena (its metadata half, not counted by
// ag_step_peak_bytes), freed by ag_step_reset: op arguments that must live until backward,
// and host scratch of model code (index tables), with no free to forget.
void *ag_step_alloc(ag_ctx *ctx, size_t bytes);

// New tensors. Step tensors are uninitialised unless _zeros.
ag_tensor *ag_new(ag_ctx *ctx, ag_dtype dtype, ag_shape shape);
ag_tensor *ag_zeros(ag_ctx *ctx, ag_dtype dtype, ag_shape shape);
// A persistent tensor (parameter or constant), zero-filled. name is copied.
ag_tensor *ag_param(ag_ctx *ctx, const char *name, ag_dtype dtype, ag_shape shape);
// Marks a persistent tensor trainable (allocates its gradient in the pool) or frozen.
void ag_set_trainable(ag_ctx *ctx, ag_tensor *p, bool trainable);
// A step tensor that records gradients (for leaf inputs such as test inputs).
void ag_set_requires_grad(ag_tensor *t, bool requires_grad);

// A step tensor holding a copy of host data (numel elements of dtype).
ag_tensor *ag_from_host(ag_ctx *ctx, ag_dtype dtype, ag_shape shape, const void *src);
// Host <-> tensor copies (t contiguous, numel elements of t's dtype).
void ag_copy_from_host(ag_tensor *t, const void *src);
void ag_copy_to_host(const ag_tensor *t, void *dst);
// The same with f64 on the host, converted to and from t's dtype (t a float tensor), so that
// initial values made in f64 round the same way into f32 and bf16.
void ag_copy_from_host_f64(ag_tensor *t, const double *src);
void ag_copy_to_host_f64(const ag_tensor *t, double *dst);
// Writes src into dst's positions [start, start + src->shape[dim]) along dim, outside the tape
// (a cache update, not an op). Both contiguous, of one dtype and device, and equal in every
// other dim.
void ag_write_slice(ag_tensor *dst, int dim, int64_t start, const ag_tensor *src);
// Reads one element of a float tensor as double (t contiguous).
double ag_item(const ag_tensor *t, int64_t index);

// Gradient mode: while disabled ops record no tape and outputs need no grad. Nests.
void ag_no_grad_begin(ag_ctx *ctx);
void ag_no_grad_end(ag_ctx *ctx);
bool ag_grad_enabled(const ag_ctx *ctx);

// Backpropagates from a scalar (seed 1) through the tape. Gradients accumulate into the
// .grad of every leaf that requires grad (parameters, and step tensors marked with
// ag_set_requires_grad); parameter gradients persist until ag_zero_grad. The gradient of
// an op's output is released (and its memory reused) once that op's backward has run.
void ag_backward(ag_ctx *ctx, ag_tensor *loss);
// Backpropagates from out with seed gradient seed (same shape as out).
void ag_backward_from(ag_ctx *ctx, ag_tensor *out, const ag_tensor *seed);

// Told that t = watch[index]'s gradient is final for this backward pass (no node left can
// add into it).
typedef void (*ag_grad_ready_fn)(ag_tensor *t, int index, void *user);
// ag_backward that also calls ready(t, index, user) exactly once for each of the n_watch distinct
// tensors in watch, as soon as no tape node still to run reads t: at once (before the walk)
// for a tensor no node reads, else right after the last (oldest) node that reads it has run
// or been skipped. Lets a caller start work on a gradient (a data-parallel all-reduce) while
// the rest of the backward pass runs: nothing in the pass touches t->grad after ready(t).
// Meant for leaves (parameters). Costs a sort of watch and a binary search per node input;
// the bookkeeping lives in the step arena.
void ag_backward_watch(ag_ctx *ctx, ag_tensor *loss, ag_tensor *const *watch, int n_watch,
                       ag_grad_ready_fn ready, void *user);

void ag_zero_grad(ag_ctx *ctx, ag_tensor **params, int n);

// For op implementations (ops_*.c) ------------------------------------------------------
ag_node *ag_record(ag_ctx *ctx, const char *op, ag_backward_fn backward, ag_tensor *out, int n_in,
                   ag_tensor *const *in);
// The gradient buffer of t, allocated zeroed on first use.
ag_tensor *ag_grad_of(ag_ctx *ctx, ag_tensor *t);
