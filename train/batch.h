// batch.h: a loader micro-batch (data/loader.h) as the model's batch (model/groundinggpt.h):
// media rows become tensors on ctx's device (videos flattened to (n·F, S, S, 3)), ids and
// targets are shared, not copied. Lives until ag_step_reset.
#pragma once
#include "data/loader.h"
#include "model/groundinggpt.h"

void tr_batch_to_model(ag_ctx *ctx, const ds_batch *b, gm_groundinggpt_batch *out);
// Supervised targets (!= DS_IGNORE_TARGET) of the batch.
int64_t tr_batch_supervised(const ds_batch *b);
// Fails, naming the shard and the pack options that would fit, when a media kind of the
// loader's shards does not have the model's geometry (image size; video frames and size;
// audio clips, frames and mels; patch tokens per item when the loader counted them) or the
// model has no branch for it. Checked once at open: a batch of videos with other frame counts
// would otherwise be cut into other videos.
void tr_batch_check_geometry(const ds_loader *l, const gm_groundinggpt_config *c);
// Asks the loader to count each media kind's patch tokens (the model's placeholder ids) at
// open, for tr_batch_check_geometry. Call before ds_loader_open.
void tr_batch_media_tokens(ds_loader_config *lc, const gm_groundinggpt_config *c);
