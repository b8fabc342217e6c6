// cpu_optim.c: the AdamW update on the CPU (see ag_adamw_args in backend.h).
#include <math.h>

#include "autograd/cpu/cpu_optim.h"

void ag_cpu_adamw(const ag_adamw_args *a, void *param, ag_dtype dtype, float *master,
                  const void *grad, float *m, float *v, int64_t n) {
    const float b1 = (float)a->beta1, b2 = (float)a->beta2, eps = (float)a->eps;
    const float lr = (float)a->lr, decay = (float)(1.0 - a->lr * a->weight_decay);
    const float ib1 = (float)(1.0 / a->bias1), ib2 = (float)(1.0 / a->bias2);
    float *pf = dtype == AG_F32 ? param : master;
    uint16_t *pb = dtype == AG_BF16 ? param : NULL;
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
        float g = dtype == AG_F32 ? ((const float *)grad)[i]
                                  : ag_bf16_to_f32(((const uint16_t *)grad)[i]);
        float mi = m[i] = b1 * m[i] + (1 - b1) * g;
        float vi = v[i] = b2 * v[i] + (1 - b2) * g * g;
        float p = pf[i] * decay - lr * (mi * ib1) / (sqrtf(vi * ib2) + eps);
        pf[i] = p;
        if (pb) pb[i] = ag_f32_to_bf16(p);
    }
}
