// schedule.h: learning-rate schedules.
#pragma once
#include <stdint.h>

// The lr of step (0-based) as transformers' get_cosine_schedule_with_warmup (with its min-lr
// variant) gives it to the reference's Trainer: peak * step / warmup_steps while step <
// warmup_steps (step 0 runs at 0), then a cosine from peak that would reach peak * min_ratio at
// step total (one past the last).
double tr_lr_cosine(int64_t step, int64_t total, int64_t warmup_steps, double peak,
                    double min_ratio);
