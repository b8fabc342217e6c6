// model_config.h: GroundingGPT model configs from YAML (configs/model/*.yaml; the schema is
// documented in configs/README.md). Every size comes from the file: a missing size, an unknown
// key, a wrong type, a value out of range or two parts that do not fit together (image tokens
// != the encoder's patches, ...) is one line "file:line:column: key.path: what".
//
// A model config is either a file of its own (top-level keys llm, tokens, image, video, audio,
// dtype, name) or the `model:` entry of a training config: the same mapping inline, or the path
// of a model file. Relative paths in a config are relative to the folder of the file that
// names them (tr_config_path), so configs/stage1.yaml says `model: model/tiny.yaml`; a path
// given on the command line (--set model=DIR/m.yaml) is relative to the working directory.
#pragma once
#include <stdbool.h>

#include "model/groundinggpt.h"
#include "train/yaml_tree.h"

// Reads a model mapping (the root of a model file, or a training config's inline model:) into
// cfg and checks it. Marks the keys it reads; the caller checks for unknown keys.
void tr_model_config_read(tr_yaml *map, gm_groundinggpt_config *cfg);
// Loads a model file: read, check, and refuse unknown keys.
void tr_model_config_load(const char *path, gm_groundinggpt_config *cfg);
// The model of a training config: root's `model:` entry, a path (loaded as a model file) or a
// mapping (read in place; the caller's tr_yaml_check_used covers it), plus root's `lora:`.
// Fails when absent.
void tr_model_config_from_train(tr_yaml *root, gm_groundinggpt_config *cfg);
// A training config's optional top-level `lora:` (LoRA on the LLM's linears, model/lora.h):
//   lora: {rank: 16, alpha: 32, dropout: 0.0, targets: [q_proj, k_proj, v_proj, o_proj,
//          gate_proj, up_proj, down_proj]}
// rank required (1 .. min(dim, ffn)); alpha > 0 (default rank: scale 1); dropout in
// [0, 0.99] (default 0); targets default all seven. Absent: rank 0 (off). Called by
// tr_model_config_from_train, so a checkpoint's config.yaml rebuilds the same LoRA model.
void tr_lora_config_read(tr_yaml *root, const gm_llama_config *llm, gm_lora_config *c);
// Replaces a `model:` path of a training config by the model file's mapping, so that the
// resolved config (stored with checkpoints) stands on its own. Errors in it still name the
// model file's lines.
void tr_model_config_inline(tr_yaml *root);
// True when root looks like a model file (has `llm`), false when it has `model` (a training
// config); fails otherwise.
bool tr_config_is_model_file(tr_yaml *root);
// path as named in node's file: absolute as is; from --set (node->cli) as given, relative to
// the working directory; else joined to that file's folder. Allocated.
char *tr_config_path(const tr_yaml *node, const char *path);
