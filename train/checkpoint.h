// checkpoint.h: training checkpoints (../shared/DESIGN.md). A checkpoint is a folder
//
//   OUT/step_00000500/
//     model.safetensors            every parameter, at its dtype, GroundingGPT names
//     optim.rank00000.safetensors  AdamW moments (adam_m.<name>, adam_v.<name>) and f32 master
//                                  weights (master.<name>) of the parameters this rank updates:
//                                  all of them on rank 0 without ZeRO-1 (the other ranks hold
//                                  the same state and write nothing), its share with ZeRO-1
//     state.json                   step, stage, data cursor, seed, world size, logging
//                                  window, config digest
//     config.yaml                  the resolved training config
//
// written into OUT/.tmp.step_00000500 (every file fsynced), renamed into place, the folder
// fsynced, then OUT/latest (a symbolic link to the newest complete checkpoint) replaced
// atomically. A run killed at any moment leaves either the previous `latest` or the new one,
// never a half-written checkpoint under a final name. Old checkpoints beyond `keep` are
// removed after `latest` moves.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "autograd/optim.h"
#include "autograd/safetensors.h"
#include "data/loader.h"
#include "model/groundinggpt.h"
#include "model/params.h"
#include "train/dist.h"
#include "train/yaml_tree.h"

#define TR_CKPT_FORMAT 1

typedef struct {
    int64_t step;        // optimizer steps completed
    int64_t total_steps; // of the stage
    int stage;           // 1..3, 0 for a custom selection
    bool complete;       // step == total_steps: the stage is done
    ds_cursor cursor;    // the data stream after `step` steps
    uint64_t seed;       // training seed (dropout streams derive from seed and step)
    int world;           // ranks that wrote it
    bool zero1;          // optimizer state sharded across ranks
    int64_t global_batch;
    int bad_steps; // non-finite steps in a row at the save
    double tokens; // supervised tokens seen
    double loss;   // mean loss of the last logged window
    // The logging window at the save (the steps since the last metrics.jsonl line): summed
    // mean loss and supervised tokens of its finite steps, their count, and its steps without
    // a supervised token. Zero in checkpoints written before these were stored.
    double win_loss, win_tokens;
    int64_t win_steps, win_empty;
    // Training time up to the save, over the run and its resumes (metrics.jsonl's elapsed_s);
    // 0 in checkpoints written before it was stored.
    double elapsed;
    char config_digest[65]; // SHA-256 of the resolved config (for information)
    char model_digest[65];  // SHA-256 of the parameter names, shapes and dtypes
    // Lineage: a random id given at a run's fresh start and kept by its resumes, and the
    // identity ("RUN_ID@STEP", tr_ckpt_identity) of the init.checkpoint it started from; ""
    // when there was none, it had no id, or the checkpoint predates these fields.
    char run_id[33];
    char init_from[48];
} tr_ckpt_state;

// A new run id: 32 hex digits from the kernel's random source.
void tr_ckpt_new_run_id(char out[33]);
// The identity of the weights a checkpoint folder holds, "RUN_ID@STEP", into out; "" when path
// is not a groundc checkpoint folder (a weights file, an HF folder) or its state.json has no
// run id. A checkpoint retrained in place (a new run) gets another identity.
void tr_ckpt_identity(const char *path, char out[48]);

// SHA-256 (hex) of every parameter's name, dtype and shape: two models fit one checkpoint
// exactly when their digests agree.
void tr_ckpt_model_digest(const gm_params *reg, char out[65]);

// SHA-256 (hex) of the resolved config as stored in config.yaml.
void tr_ckpt_config_digest(const tr_yaml *resolved, char out[65]);

// Writes OUT/step_<step> as above (collective: every rank calls it; rank r's optimizer state
// is opt, NULL when it holds none). A step_<step> already there stays when it is this run's
// (same step, config and model digests) and is replaced when it is not. Then prunes to the
// newest keep (keep < 1: keep all).
// The rank that fails reports one line and the job aborts.
void tr_ckpt_save(const char *out_dir, const tr_ckpt_state *st, const gm_params *reg,
                  const ag_adamw *opt, const tr_yaml *resolved, const tr_dist *d, int keep);

// rm -r of a folder of plain files and folders (absent: nothing to do); a symbolic link is
// removed itself, never followed (nor is one inside the folder). Fails naming the path.
void tr_remove_tree(const char *dir);

// The checkpoint that `--resume auto` continues: OUT/latest resolved to its folder
// (allocated); without that link the newest OUT/step_N folder (a run killed before its first
// link); NULL when OUT holds neither.
char *tr_ckpt_latest(const char *out_dir);

// The step of the newest OUT/step_N folder; -1 when there is none.
int64_t tr_ckpt_newest_step(const char *out_dir);

// Whether dir is a run folder (a checkpoint.out): it holds a `latest` link (even a broken one)
// or a step_N folder.
bool tr_ckpt_is_run(const char *dir);

// Reads and validates DIR/state.json (one-line errors naming the file and field).
void tr_ckpt_read_state(const char *dir, tr_ckpt_state *st);
// Checks that f holds exactly reg's parameters (names, shapes, float dtypes) without reading a
// value; otherwise closes f and fails naming the file and the first tensor that differs.
void tr_ckpt_check_model(ag_st_file *f, const gm_params *reg);
// Loads every parameter of reg from DIR/model.safetensors (shapes checked, exact names; a
// missing or extra tensor fails naming it).
void tr_ckpt_load_model(const char *dir, const gm_params *reg);
// The model a checkpoint folder holds: the model of its config.yaml, built on ctx, with the
// weights of its model.safetensors. *config gets the parsed config.yaml (tr_yaml_free it).
// A LoRA checkpoint (config lora:) comes back merged (W + alpha / r B A) as a plain model
// without the lora_A / lora_B tensors, so exports write merged weights.
gm_groundinggpt *tr_ckpt_open_model(ag_ctx *ctx, const char *dir, tr_yaml **config);
// The tokenizer file for a checkpoint: override when given, else its config's eval.tokenizer;
// fails, naming cmd, when there is neither. Allocated.
char *tr_ckpt_tokenizer_path(tr_yaml *config, const char *override, const char *cmd);
// Checks that the checkpoint's AdamW state (every rank's file with ZeRO-1) is that of exactly
// reg's trainable parameters (requires_grad), headers only; fails naming the first parameter
// trained on one side and not on the other.
void tr_ckpt_check_trainables(const char *dir, const tr_ckpt_state *st, const gm_params *reg);
// Loads this rank's optimizer state (opt may be NULL when it holds none): from
// optim.rank<rank>.safetensors with ZeRO-1, else from rank 0's file.
void tr_ckpt_load_optim(const char *dir, const tr_ckpt_state *st, ag_adamw *opt, const tr_dist *d);
