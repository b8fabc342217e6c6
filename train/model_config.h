// model_config.h: GroundingGPT model configs from YAML (configs/model/*.yaml; the schema is
// documented in configs/README.md). Every size comes from the file: a missing size, an unknown
// key, a wrong type, a value out of range or two parts that do not fit together (image tokens
// != the encoder's patches, ...) is one line "file:line:column: key.path: what".
//
// A model config is either a file of its own (top-level keys llm, tokens, image, video, audio,
// dtype, name) or the `model:` entry of a training config: the same mapping inline, or the path
// of a model file. Relative paths in a config are relative to the folder of the file that
// names them (tr_config_path), so configs/stage1.yaml says `model: model/tiny.yaml`.
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
// mapping (read in place; the caller's tr_yaml_check_used covers it). Fails when absent.
void tr_model_config_from_train(tr_yaml *root, gm_groundinggpt_config *cfg);
// Replaces a `model:` path of a training config by the model file's mapping, so that the
// resolved config (stored with checkpoints) stands on its own. Errors in it still name the
// model file's lines.
void tr_model_config_inline(tr_yaml *root);
// True when root looks like a model file (has `llm`), false when it has `model` (a training
// config); fails otherwise.
bool tr_config_is_model_file(tr_yaml *root);
// path as named in node's file: absolute as is, else joined to that file's folder. Allocated.
char *tr_config_path(const tr_yaml *node, const char *path);
