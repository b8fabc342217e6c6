// kernels_f32.c: the f32 CPU kernels (kernels.inc with float storage and arithmetic).
#define ELT          float
#define R            float
#define LD(x)        (x)
#define ST(v)        ((float)(v))
#define R_IS_F64     0
#define T_IS_BF16    0
#define KERNEL_TABLE ag_cpu_kernels_f32
#include "autograd/cpu/kernels.inc"
