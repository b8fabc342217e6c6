// cpu_optim.h: the CPU AdamW kernel (ag_backend.adamw).
#pragma once
#include "autograd/backend.h"

void ag_cpu_adamw(const ag_adamw_args *a, void *param, ag_dtype dtype, float *master,
                  const void *grad, float *m, float *v, int64_t n);
