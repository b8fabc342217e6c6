// schedule.h: learning-rate schedules.
#pragma once
#include <stdint.h>

// Linear warmup over warmup_steps to peak, then cosine decay to peak * min_ratio at total.
double tr_lr_cosine(int64_t step, int64_t total, int64_t warmup_steps, double peak,
                    double min_ratio);
