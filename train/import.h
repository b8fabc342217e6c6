// import.h: pretrained weights into a GroundingGPT model, from Hugging Face safetensors.
//
// A weight source is a .safetensors file, a PyTorch checkpoint (torch.save: .pth / .bin, a
// state dict or a training checkpoint's "state_dict" / "model" entry; autograd/torch_file.h),
// or an HF folder holding model.safetensors or pytorch_model.bin, or shards listed by
// model.safetensors.index.json / pytorch_model.bin.index.json ({"weight_map": {name: shard
// file}}). F32, F16, BF16 and F64 tensors convert to the model's dtype, rounding once to
// nearest even.
//
// A training config says which parts load from where (relative paths are relative to the
// config's folder; each entry is a path, or {path: P, prefix: S} when the file puts S before
// the names listed here, e.g. a CLIP tower saved inside a bigger model):
//
//   init:
//     llm: vicuna-7b-v1.5             HF LlamaForCausalLM: model.embed_tokens.weight,
//                                     model.layers.N.{self_attn.{q,k,v,o}_proj, mlp.{gate,up,
//                                     down}_proj, input_layernorm, post_attention_layernorm}.
//                                     weight, model.norm.weight, lm_head.weight
//     image_encoder: clip-vit-large-patch14-336
//                                     HF CLIPVisionModel / CLIPModel: vision_model.*
//     video_encoder: eva_vit_g.pth
//                                     EVA ViT-g in LAVIS names: cls_token, pos_embed,
//                                     patch_embed.proj.*, blocks.N.*
//     frame_qformer: blip2-opt-2.7b   HF Blip2 (transformers' Blip2QFormerModel names):
//                                     qformer.layernorm.*, qformer.encoder.layer.N.{attention.
//                                     attention, crossattention.attention}.{query,key,value}.*,
//                                     ...output.dense/LayerNorm, intermediate_query.dense,
//                                     output_query.*; query_tokens; vision_model.post_layernorm.*
//                                     (BLIP-2's ln_vision)
//                    or blip2_pretrained.pth: LAVIS names ({"model": state dict}), chosen when
//                                     the file has Qformer.bert.*: Qformer.bert.embeddings.
//                                     LayerNorm.*, ...layer.N.{attention,crossattention}.self.*,
//                                     the rest as HF; query_tokens; ln_vision.*. Found after
//                                     "model." too (GroundingGPT's checkpoints) without a prefix.
//     audio_encoder: imagebind_huge.pth
//                                     ImageBind: modality_{preprocessors,trunks,heads}.audio.*
//     checkpoint: checkpoints/stage1/step_00001000
//                                     groundc / GroundingGPT names (model/groundinggpt.h), any
//                                     subset; applied last, so it overrides the parts above
//
// Mapping to the model's names: the LLM's names are HF's; the encoders' names are the files'
// after model.vision_tower. / model.visual_encoder. / model.audio_encoder.; the frame
// Q-Former's LAVIS names (model.Qformer.bert.embeddings.LayerNorm, ...attention.self.query)
// are HF's layernorm, ...attention.attention.query, and the LAVIS file's after "model."; conv
// weights are permuted to the patch layout (model/vit.h). The LLM's embed_tokens and lm_head
// may hold V0 rows (a base Llama: the 9 added rows become the mean of the base rows, as
// GroundingGPT's resize does) or V0 + 9 rows (split into the base table and the added rows).
// Without lm_head.weight, a config.json saying tie_word_embeddings: true makes lm_head (and its
// added rows) a copy of embed_tokens (and its added rows); otherwise it is missing.
//
// config.json: for llm, image_encoder and frame_qformer, the config.json of the HF folder that
// is (or holds) the weights is compared with the model config, field by field where groundc
// has the field (LlamaConfig or a LLaVA text_config; CLIPVisionConfig, or CLIPModel's / LLaVA's
// vision_config; Blip2's qformer_config and num_query_tokens, or a Blip2QFormerConfig); absent
// fields count as transformers' class defaults, as it writes nested configs as differences
// from them; rope_scaling / rope_parameters other than the plain RoPE are refused. Every
// mismatch goes into one line naming config.json, each key with its value and the model YAML's.
// A config.json of another family (e.g. CLIP's beside Llama weights) is not compared.
//
// Strict: every parameter of the part must be in the file with its exact shape, and every
// tensor of the part's namespace in the file must be used, except known leftovers (blocks past
// the selected layer, CLIP's post_layernorm, RoPE inv_freq buffers, the Q-Former's text FFN,
// and in LAVIS names its text embeddings, position_ids and cls.* head, also for the video /
// audio Q-Formers of a GroundingGPT checkpoint; ImageBind's logit-scale buffer). A missing,
// unexpected or mis-shaped tensor, a truncated or malformed file, or a broken index is one line
// naming the file, the tensor and both shapes. Everything is checked before the first value is
// copied.
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "autograd/safetensors.h"
#include "model/groundinggpt.h"
#include "train/yaml_tree.h"

// A weight source (one file or the shards of a folder) with a by-name lookup.
typedef struct {
    const ag_st_entry *entry;
    const ag_st_file *file; // the file (shard) holding it
} tr_weight;

typedef struct {
    char *path; // as given
    int n_files;
    int64_t files_cap;
    ag_st_file **files;
    int n;
    tr_weight *items; // every tensor of every file, sorted by name
} tr_weights;

tr_weights *tr_weights_open(const char *path);
void tr_weights_close(tr_weights *w);
// Index of the tensor called name, or -1.
int tr_weights_find(const tr_weights *w, const char *name);

typedef enum {
    TR_INIT_LLM,
    TR_INIT_IMAGE_ENCODER,
    TR_INIT_VIDEO_ENCODER,
    TR_INIT_FRAME_QFORMER,
    TR_INIT_AUDIO_ENCODER,
    TR_INIT_CHECKPOINT,
    TR_INIT_NPART
} tr_init_part;

// The YAML key of a part: "llm", "image_encoder", ...
const char *tr_init_part_name(tr_init_part p);

typedef struct {
    char *path[TR_INIT_NPART];   // resolved; NULL when the part is not loaded
    char *prefix[TR_INIT_NPART]; // NULL for none
} tr_init_config;

// Reads root's optional `init:` block (unknown parts, wrong types: file:line:column).
void tr_init_config_read(tr_yaml *root, tr_init_config *c);
void tr_init_config_free(tr_init_config *c);

// Loads one part of m from path (prefix may be NULL). Returns the number of tensors read.
// Part checkpoint: LoRA adapters in the file ("<W>.lora_A.weight", "<W>.lora_B.weight") that
// the model does not have (no lora: section, other targets, or another rank: the model's own
// adapter then starts fresh) are folded into their base weight, W += (alpha / r) B A, with
// alpha and r from the config.yaml beside the weights (the checkpoint's); without one that is
// an error. Adapters of the same shape load as they are (a LoRA run continued).
int tr_import_part(gm_groundinggpt *m, tr_init_part part, const char *path, const char *prefix);
// Loads every configured part (llm, encoders, frame Q-Former, then checkpoint); one line per
// part to log (may be NULL), saying also when lm_head came from tied embeddings or the frame
// Q-Former from LAVIS names. Fails for a part whose branch the model lacks. loaded (may be
// NULL; one flag per m->params entry) gets true for every parameter some part loaded.
void tr_import(gm_groundinggpt *m, const tr_init_config *c, FILE *log, bool *loaded);
// Every check of tr_import (files, names, shapes, config.json) without copying a value, so m
// may be a meta model (ag_ctx_new_meta): run before allocating the real one, and in a dry run.
void tr_import_check(gm_groundinggpt *m, const tr_init_config *c);
// Fails, naming the checkpoint and the first differing size, when init.checkpoint is a
// checkpoint folder (no prefix) whose config.yaml describes another model than model. Call
// before allocating the model: a 7B config over a small checkpoint otherwise runs out of
// memory first.
void tr_init_check_checkpoint(const tr_init_config *c, const gm_groundinggpt_config *model);
