// kernels_bf16.c: the bf16 CPU kernels (kernels.inc with bf16 storage and f32 arithmetic:
// values widen on load and round to nearest even on store; bf16_load and bf16_store are in
// kernels.inc).
#define ELT          uint16_t
#define R            float
#define LD(x)        bf16_load(x)
#define ST(v)        bf16_store((float)(v))
#define R_IS_F64     0
#define T_IS_BF16    1
#define KERNEL_TABLE ag_cpu_kernels_bf16
#include "autograd/cpu/kernels.inc"
