// inspect.h: `groundc inspect PATH [--batch B] [--seq T] [--ranks N] [--names] [--checksums]`: what
// a config, a checkpoint, a dataset or a weights file amounts to (data and weights:
// inspect_files.h). For a model file (configs/model/*.yaml) or a training config (its model: entry
// and init: block): parameters per registry module and per part, what each curriculum stage trains,
// and the memory each stage needs (weights, gradients, AdamW state, activations of one micro-batch
// of B sequences of T tokens; model/params.h's estimates), plus the step memory of the frozen
// encoders per chunk. Counts come from the config alone (gm_groundinggpt_census), so the 7B
// preset is inspected without allocating 16 GB; tests/test_groundinggpt.c checks the census
// against a real registry. For a stage config it adds what that config trains, selected as
// groundc train selects it (stage defaults, trainable/frozen patterns, LoRA adapters with the
// base decoder frozen) on a model built on a meta context (names and shapes, no storage), and
// that config's memory.
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "model/groundinggpt.h"

// The report of cfg (source names the file in the heading). batch >= 1; seq <= 0 picks
// min(2048, max_seq), the reference's context.
void tr_inspect_model(const gm_groundinggpt_config *cfg, const char *source, int64_t batch,
                      int64_t seq, FILE *out);
typedef struct {
    int64_t batch;  // sequences per micro-batch; 0: a stage config's micro_batch, else 1
    int64_t seq;    // tokens per sequence; 0: a stage config's max_len, else min(2048, max_seq)
    int ranks;      // ranks that share AdamW state under train.zero1; 0: a checkpoint's world, 1
    bool checksums; // a dataset's shards also checked against their SHA-256
    bool names;     // a config's parameters listed one per line with their shapes
} tr_inspect_opts;

// The report of path, by what it is: a checkpoint folder (state.json: its state, its files,
// whether its weights fit its config.yaml, then that config's report), a run folder (latest:
// its checkpoints, then the latest one), a dataset folder or shard, weights or an export
// (inspect_files.h), else a model file or training config (YAML). Returns 0; a defect is a
// one-line error.
int tr_inspect(const char *path, const tr_inspect_opts *o, FILE *out);
