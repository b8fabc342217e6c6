// batch.h: a loader micro-batch (data/loader.h) as the model's batch (model/groundinggpt.h):
// media rows become tensors on ctx's device (videos flattened to (n·F, S, S, 3)), ids and
// targets are shared, not copied. Lives until ag_step_reset.
#pragma once
#include <stdio.h>

#include "data/loader.h"
#include "model/groundinggpt.h"
#include "train/train_config.h"

void tr_batch_to_model(ag_ctx *ctx, const ds_batch *b, gm_groundinggpt_batch *out);
// Supervised targets (!= DS_IGNORE_TARGET) of the batch.
int64_t tr_batch_supervised(const ds_batch *b);
// ds_loader_open(lc) for model c: fails, naming the shard and the pack options that would
// fit, when a media kind of the shards does not have the model's geometry (image size; video
// frames and size; audio clips, frames and mels; patch tokens per item, which the loader
// counts at open) or the model has no branch for it. Checked once at open: a batch of videos
// with other frame counts would otherwise be cut into other videos, and other token counts
// fail in splice on the first batch, naming neither the shard nor the pack option. The loader
// checks every sample as it reads it against the model's vocabulary and placeholder ids
// (ds_loader_config.vocab, check_media), failing with the shard and the sample.
ds_loader *tr_batch_open_loader(ds_loader_config *lc, const gm_groundinggpt_config *c);
// Before a stage trains (and in its dry run), from each dataset's manifest and its shards'
// headers and sample offsets (no media is read): every way a dataset does not fit c's model,
// in one line naming its shard and all the pack options that would fit (the loader's own check
// at open says one at a time); and the sample lengths against data.max_len, as the loader cuts
// a sample to its first max_len tokens, answer included: when every sample of a dataset is
// longer it fails, naming the dataset and both lengths; when some are, one warning line on log
// (NULL: none) with their count and the longest. Those longer samples are read and checked
// (ids, placeholder blocks: ds_sample_check, naming shard and sample); when the cut would
// split a media block of any, it fails at data.max_len's file:line:column with their count,
// one of them and the smallest data.max_len that keeps every block whole.
void tr_batch_check_datasets(const tr_train_config *c, FILE *log);
// Every data.datasets entry is a folder holding manifest.json; a missing path, a file (a
// shard, the manifest itself) or another folder fails at the entry's file:line:column. The
// trainer calls it where it first reads the datasets (their sample count), before
// tr_batch_check_datasets.
void tr_batch_check_dataset_dirs(const tr_train_config *c);
