// kernels_f64.c: the f64 CPU kernels (kernels.inc with double storage and arithmetic), for
// gradient checks against finite differences.
#define ELT          double
#define R            double
#define LD(x)        (x)
#define ST(v)        ((double)(v))
#define R_IS_F64     1
#define T_IS_BF16    0
#define KERNEL_TABLE ag_cpu_kernels_f64
#include "autograd/cpu/kernels.inc"
