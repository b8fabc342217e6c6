// train_lm.h: `groundc train` for a decoder-only model on the synthetic copy task: the
// end-to-end check of the engine (model, AdamW, schedule, telemetry, held-out evaluation).
#pragma once
#include <stdint.h>

#include "model/llama.h"
#include "train/yaml_tree.h"

typedef struct {
    ag_device device; // `device: auto | cpu | cuda` (train/train_config.h)
    gm_llama_config model;
    int64_t payload; // copy task: tokens to copy
    uint64_t data_seed;
    int64_t steps, batch, log_every, eval_samples;
    double lr, warmup_ratio, min_lr_ratio, weight_decay, grad_clip;
    double beta1, beta2, eps;
    uint64_t seed;
    const char *out_dir;
} tr_lm_config;

// Reads and checks the config (unknown keys and bad values fail with file:line:column).
void tr_lm_config_read(tr_yaml *root, tr_lm_config *cfg);
// Trains; prints progress and a final evaluation; writes OUT/metrics.jsonl and
// OUT/config.yaml. Returns 0.
int tr_train_lm(const tr_lm_config *cfg, const tr_yaml *resolved);
