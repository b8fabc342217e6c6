// train_config.h: the configuration of one training stage (configs/stage*.yaml, schema in
// configs/README.md), read strictly from YAML: unknown keys, wrong types and out-of-range
// values fail with file:line:column. Input paths (model, init, data) are relative to the
// folder of the file that names them; checkpoint.out is relative to the working directory.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "data/loader.h"
#include "model/groundinggpt.h"
#include "train/import.h"
#include "train/yaml_tree.h"

#define TR_MAX_PATTERNS 64

typedef struct {
    ag_device device; // `device:` resolved (tr_config_device)
    gm_groundinggpt_config model;
    tr_init_config init;
    // What trains: stage 1..3 selects GroundingGPT's defaults; trainable/frozen patterns
    // (model/params.h globs) replace or refine them.
    int stage;
    int n_trainable, n_frozen;
    char *trainable[TR_MAX_PATTERNS], *frozen[TR_MAX_PATTERNS];
    // "file:line:column" of each pattern, for the message when one matches no parameter
    char *trainable_at[TR_MAX_PATTERNS], *frozen_at[TR_MAX_PATTERNS];
    // data
    int n_datasets;
    ds_loader_dataset *datasets; // dir allocated
    char **datasets_at;          // "file:line:column" where each was named
    int64_t micro_batch, accumulation, max_len;
    char *max_len_at;      // "file:line:column" where data.max_len was set (NULL: the default)
    int64_t global_batch;  // > 0: accumulation = global_batch / (micro_batch x ranks)
    char *global_batch_at; // "file:line:column" where it was set, for fit_world's message
    uint64_t data_seed;
    int loader_threads, prefetch;
    bool checksums;
    // optimisation
    // train.steps or train.epochs, not both (a --set of one replaces the file's other one)
    double epochs; // > 0 when steps is 0: steps = ceil(epochs * samples / global batch)
    int64_t steps; // > 0: fixed number of optimizer steps
    double lr, warmup_ratio, min_lr_ratio, weight_decay, grad_clip, beta1, beta2, eps;
    bool decay_all; // weight decay on norms, biases, embeddings and added rows too
    // train.loss_average: micro_batch (each micro-batch's mean loss counts the same, as the
    // reference's Trainer averages), else tokens (every supervised token of the global batch)
    bool loss_per_micro_batch;
    uint64_t seed; // initialisation and dropout
    double init_std;
    bool zero1;
    int64_t bucket_elems;        // gradient all-reduce bucket
    double collective_timeout_s; // a rank waiting longer in one collective fails (0: never)
    bool overlap_allreduce;      // sum gradients across ranks during the last backward pass
    int max_bad_steps;           // non-finite steps in a row before the run stops
    // telemetry
    int64_t log_every;
    // checkpoints
    char *out_dir;
    char *out_dir_at;   // "file:line:column" of checkpoint.out (NULL: the default)
    int64_t save_every; // 0: only at the end
    int keep;           // newest checkpoints kept (0: all)
    // evaluation after the stage (optional)
    char *eval_data;      // dataset folder, NULL: none
    char *eval_tokenizer; // the tokenizer.model it was packed with
    int64_t eval_limit;
    int64_t eval_max_new; // tokens generated per answer
} tr_train_config;

// Whether AdamW decays the parameter name (ndim dimensions): the weights of linear and conv
// layers (a name ending in "weight", 2 or more dimensions) but not the token and position
// embedding tables; never norms, biases (bias, bias_k, q_bias, ...), class and query tokens,
// position tensors or the added rows. decay_all (train.decay_norms_biases_embeddings): all.
bool tr_param_decays(const char *name, int ndim, bool decay_all);

// Marks what c trains of m (built from c->model) trainable and every other parameter frozen:
// the default patterns of c->stage (none for stage 0) plus c's trainable patterns, minus its
// frozen ones; with LoRA (lora:) the base decoder then freezes and its adapters train. Fails
// when a pattern matches nothing or nothing trains. Works on a meta context too (inspect).
void tr_train_select(ag_ctx *ctx, gm_groundinggpt *m, const tr_train_config *c);

// Reads root (a stage config: has `model:` and `data:`) into c; fails on anything unknown.
void tr_train_config_read(tr_yaml *root, tr_train_config *c);
void tr_train_config_free(tr_train_config *c);
// With data.global_batch set, derives the accumulation for world ranks; fails when the
// global batch is not a multiple of micro_batch x world.
void tr_train_config_fit_world(tr_train_config *c, int world);
// The top-level `device: auto | cpu | cuda` key (default auto: cuda when a GPU is visible,
// else cpu). cuda where none is visible (or in a build without CUDA) fails with one line
// naming the file, line and key. Every training config kind reads it.
ag_device tr_config_device(tr_yaml *root);
// The absolute form of a path-valued scalar (relative to the file that names it, or to the
// working folder for a --set value; realpath'd where it exists), also written back into the
// tree so that the resolved config stored with checkpoints means the same from any folder.
// malloc'd.
char *tr_config_abs_path(tr_yaml *node);
// "file:line:column" of node, allocated (NULL for NULL).
char *tr_config_where(const tr_yaml *node);
// Fails unless checkpoint.out can be made and written (the folder, or the nearest existing
// folder above it, writable): a dry run, and a run before it trains, rather than at the first
// checkpoint.
void tr_config_check_out_dir(const tr_train_config *c);
// Is root a stage config (as opposed to the copy-task config or a curriculum)?
bool tr_config_is_stage(tr_yaml *root);
