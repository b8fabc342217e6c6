// curriculum.h: `groundc train` for every kind of training config:
//   * a stage config (has `model:` and `data:`; train/train_config.h): one stage;
//   * a curriculum (has `stages:`, a list of stage config paths): the stages in order, each
//     starting from the previous stage's final checkpoint (its init.checkpoint is set to it
//     unless the stage config names one), stages already complete skipped, an interrupted
//     stage resumed; ends with a table: stage, steps, final loss, REC Acc@0.5, R@1@0.5;
//   * the copy-task config of the foundation (has `task:`; train/train_lm.h).
// --set key=value applies to every stage of a curriculum.
#pragma once
#include "train/dist.h"

// argv: the arguments after `train`. Returns the exit code.
int tr_train_main(int argc, char **argv, const tr_dist *d);
