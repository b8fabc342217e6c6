// schedule.c: see schedule.h.
#include "schedule.h"

#include <math.h>

double tr_lr_cosine(int64_t step, int64_t total, int64_t warmup_steps, double peak,
                    double min_ratio) {
    if (warmup_steps > 0 && step < warmup_steps) return peak * (double)step / (double)warmup_steps;
    int64_t span = total - warmup_steps;
    double progress = span > 0 ? (double)(step - warmup_steps) / (double)span : 1.0;
    if (progress > 1) progress = 1;
    double cosine = 0.5 * (1.0 + cos(3.141592653589793 * progress));
    return peak * (min_ratio + (1.0 - min_ratio) * cosine);
}
