// export.h: `groundc export CKPT_DIR --format hf|gguf --out DIR [--dtype T] [--tokenizer F]
// [--force]`: a trained checkpoint in the formats users run inference with (../shared/DESIGN.md).
//
//   hf    a LLaVA folder that transformers loads as LlavaForConditionalGeneration (config.json,
//         model.safetensors, tokenizer files), plus the video and audio branches in their own
//         safetensors with a config (export_hf.c);
//   gguf  model.gguf (llama) and mmproj.gguf (clip, mlp projector) for llama.cpp
//         (export_gguf.c).
//
// The export is written into a temporary folder beside OUT and renamed into place when
// complete: a failure leaves nothing under OUT. An existing OUT is refused unless --force,
// which replaces it only once the new export is complete, and only when it is a folder that
// holds files only, as an export does (not a link, a file, or a folder with folders in it).
#pragma once
#include "data/tokenizer.h"
#include "model/groundinggpt.h"

typedef struct {
    const char *ckpt_dir;         // the checkpoint exported
    const gm_groundinggpt *model; // its weights, loaded on the CPU (f32 or as trained)
    const ds_tokenizer *tok;      // its tokenizer.model (pieces only; the model config names the
                                  // added tokens)
    const char *tokenizer_path;   // its tokenizer.model file
    const char *dtype;            // tensor type: "f32", "f16", "bf16" (hf, gguf) or "q8_0" (gguf)
} tr_export_job;

// Write the export of job into the (empty, existing) folder dir. Fail with one line.
void tr_export_hf(const tr_export_job *job, const char *dir);
void tr_export_gguf(const tr_export_job *job, const char *dir);

// Helpers of the writers. dir/name into buf (fails when longer than n); writing dir/name with
// data and syncing it (the folder becomes OUT only once every file is complete).
void tr_export_path(char *buf, size_t n, const char *dir, const char *name);
void tr_export_write_file(const char *dir, const char *name, const void *data, size_t n);

// The command; returns the exit code.
int tr_export_main(int argc, char **argv);
