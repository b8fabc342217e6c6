// inspect.h: `groundc inspect CONFIG [--batch B] [--seq T]`: what a model config amounts to.
// For a model file (configs/model/*.yaml) or a training config (its model: entry and init:
// block): parameters per registry module and per part, what each curriculum stage trains, and
// the memory each stage needs (weights, gradients, AdamW state, activations of one micro-batch
// of B sequences of T tokens; model/params.h's estimates), plus the step memory of the frozen
// encoders per chunk. Counts come from the config alone (gm_groundinggpt_census), so the 7B
// preset is inspected without allocating 16 GB; tests/test_groundinggpt.c checks the census
// against a real registry. For a stage config it adds what that config trains, selected as
// groundc train selects it (stage defaults, trainable/frozen patterns, LoRA adapters with the
// base decoder frozen) on a model built on a meta context (names and shapes, no storage), and
// that config's memory.
#pragma once
#include <stdint.h>
#include <stdio.h>

#include "model/groundinggpt.h"

// The report of cfg (source names the file in the heading). batch >= 1; seq <= 0 picks
// min(2048, max_seq), the reference's context.
void tr_inspect_model(const gm_groundinggpt_config *cfg, const char *source, int64_t batch,
                      int64_t seq, FILE *out);
// Loads path (a model file or a training config) and prints its report. Returns 0.
int tr_inspect(const char *path, int64_t batch, int64_t seq, FILE *out);
