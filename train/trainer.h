// trainer.h: one training stage of the GroundingGPT model: the model built from the config,
// weights imported or resumed, the stage's parameters trainable, the streaming loader cut into
// data-parallel micro-batches, AdamW with a cosine schedule, gradients summed across ranks,
// checkpoints, telemetry, and an optional grounding evaluation at the end.
//
// The loss of an optimizer step is the mean cross-entropy over every supervised token of the
// step's global batch (all micro-batches of all ranks): each micro-batch contributes its
// summed loss, and the summed gradients are divided by the global token count. So 2 ranks x b
// samples give the same step as 1 rank x 2b (up to float rounding), and a micro-batch with
// few answer tokens weighs what its tokens weigh. train.loss_average: micro_batch takes the
// reference's mean of micro-batch means instead (2 ranks x b then equal 1 rank x b x
// accumulation 2).
//
// Determinism: the data order comes from the loader's cursor, dropout from (seed, step,
// micro-step, rank), so a run resumed from a checkpoint repeats the uninterrupted run's losses
// bit for bit on the CPU.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "train/dist.h"
#include "train/train_config.h"
#include "train/yaml_tree.h"

typedef struct {
    int64_t steps; // optimizer steps of the stage
    // Mean loss of the last logged window; when none was logged here, the loss recorded in
    // the resumed checkpoint (0 on a fresh start).
    double final_loss;
    bool skipped;    // already complete: nothing ran
    double rec_acc;  // REC Acc@0.5 on the eval data (NAN when not evaluated)
    double tvg_r1;   // temporal grounding R@1 at IoU 0.5 (NAN when not evaluated)
    double sound_r1; // sound localisation R@1 at IoU 0.5 (NAN when not evaluated)
    // the best constant answer's scores (tr_eval_result)
    double rec_constant, tvg_constant, sound_constant;
    int64_t rec_n, tvg_n, sound_n; // samples evaluated
    bool eval_cached;              // the scores came from the checkpoint's eval.json
    char final_ckpt[4096];
} tr_stage_result;

// An empty result: nothing ran, every score NAN, no checkpoint.
void tr_stage_result_clear(tr_stage_result *r);

// Test hook of both trainers: GROUNDC_TEST_NAN_STEPS=a,b,... makes the loss of those steps
// (1-based) NaN, to test the skip-and-stop logic without a diverging model.
bool tr_test_nan_step(int64_t step);

// The checkpoint a stage run with resume (as tr_train_stage's) continues from (allocated), NULL
// for a fresh start. Refuses a fresh start over existing checkpoints and a --resume folder
// that is not a checkpoint.
char *tr_checkpoint_to_resume(const tr_train_config *c, const char *resume);
// What tr_train_stage checks before it trains, without weights (a dry run): the checkpoint
// to resume and whether this config continues it (model digest on a meta model, ranks, batch,
// length), checkpoint.out writable, the datasets against the model and data.max_len
// (tr_batch_check_datasets), the init weights of a fresh start (tr_import_check), the
// trainable / frozen patterns. Fails with the run's messages.
void tr_train_check(const tr_train_config *c, const tr_yaml *resolved, const tr_dist *d,
                    const char *resume);
// The trainable / frozen selection alone, on a meta model (--config-only does this much).
void tr_train_check_selection(const tr_train_config *c);
// Runs the stage. resume: NULL (fresh; fails if checkpoint.out already holds checkpoints),
// "auto" (the newest complete checkpoint of checkpoint.out, else fresh) or a checkpoint
// folder. resolved is stored with every checkpoint. Collective across d's ranks.
void tr_train_stage(const tr_train_config *c, const tr_yaml *resolved, const tr_dist *d,
                    const char *resume, tr_stage_result *out);
