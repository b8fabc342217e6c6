// batch.h: a loader micro-batch (data/loader.h) as the model's batch (model/groundinggpt.h):
// media rows become tensors on ctx's device (videos flattened to (n·F, S, S, 3)), ids and
// targets are shared, not copied. Lives until ag_step_reset.
#pragma once
#include "data/loader.h"
#include "model/groundinggpt.h"

void tr_batch_to_model(ag_ctx *ctx, const ds_batch *b, gm_groundinggpt_batch *out);
// Supervised targets (!= DS_IGNORE_TARGET) of the batch.
int64_t tr_batch_supervised(const ds_batch *b);
// ds_loader_open(lc) for model c: fails, naming the shard and the pack options that would
// fit, when a media kind of the shards does not have the model's geometry (image size; video
// frames and size; audio clips, frames and mels; patch tokens per item, which the loader
// counts at open) or the model has no branch for it. Checked once at open: a batch of videos
// with other frame counts would otherwise be cut into other videos, and other token counts
// fail in splice on the first batch, naming neither the shard nor the pack option.
ds_loader *tr_batch_open_loader(ds_loader_config *lc, const gm_groundinggpt_config *c);
