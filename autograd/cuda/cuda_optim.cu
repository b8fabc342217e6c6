// cuda_optim.cu: AdamW on CUDA. Not yet written.
#include "autograd/cuda/cuda_common.cuh"

void agc_adamw(const ag_adamw_args *a, void *param, ag_dtype dtype, float *master, const void *grad,
               float *m, float *v, int64_t n) {
    (void)a, (void)param, (void)dtype, (void)master, (void)grad, (void)m, (void)v, (void)n;
    ag_fail("adamw: not yet on cuda");
}
