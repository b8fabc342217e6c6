// cpu_kernels.h: the CPU kernel tables (one per float dtype, all from kernels.inc) and the
// few helpers they share with cpu_backend.c: per-thread scratch and BLAS thread control.
#pragma once
#include <stddef.h>

#include "autograd/backend.h"

extern const ag_kernels ag_cpu_kernels_f32;
extern const ag_kernels ag_cpu_kernels_f64;
extern const ag_kernels ag_cpu_kernels_bf16;

// Scratch slots: one growable buffer per slot and per thread. A kernel owns the slots it
// uses for the duration of its call; slots used together must differ.
enum {
    AG_SCRATCH_GEMM_A,
    AG_SCRATCH_GEMM_B,
    AG_SCRATCH_GEMM_C,
    AG_SCRATCH_PARTIAL, // column-sum partials, reduction chunks
    AG_SCRATCH_ATT_Q,   // bf16 attention: f32 copies of q, k, v, g and their gradients
    AG_SCRATCH_ATT_K,
    AG_SCRATCH_ATT_V,
    AG_SCRATCH_ATT_G,
    AG_SCRATCH_ATT_GQ,
    AG_SCRATCH_ATT_GK,
    AG_SCRATCH_ATT_GV,
    AG_SCRATCH_ATT_S, // per worker thread: one (Tq, Tk) score block
    AG_SCRATCH_SLOTS
};

// 64-byte aligned memory (free with free()); fails naming what when out of memory.
void *ag_cpu_alloc(size_t bytes, const char *what);

// The calling thread's buffer for slot, at least bytes long, 64-byte aligned. Contents are
// not kept between calls. Grows (never shrinks); no allocation once warm.
void *ag_cpu_scratch(int slot, size_t bytes);

// OpenBLAS (the pthread build) runs its own thread pool. The kernels call it from OpenMP
// threads, where each call must stay on its calling thread: begin makes it serial and
// returns what end restores.
int ag_cpu_blas_serial_begin(void);
void ag_cpu_blas_serial_end(int saved);
