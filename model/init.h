// init.h: parameter initialisation, deterministic from (seed, stream) whatever the device.
#pragma once
#include <stdint.h>

#include "autograd/tensor.h"

// Normal(0, std) values from a counter-based generator keyed by (seed, stream).
void gm_init_normal(ag_tensor *p, uint64_t seed, uint64_t stream, double std);
void gm_init_constant(ag_tensor *p, double value);
// A stream number from a parameter's name (FNV-1a): two modules initialised with one seed
// never share random numbers, and adding a parameter does not shift the others' values.
uint64_t gm_name_stream(const char *name);
// gm_init_normal on the stream of p's name.
void gm_init_normal_named(ag_tensor *p, uint64_t seed, double std);
// The BERT-style rule over ps: a ".bias" is 0, another 1-D tensor (a LayerNorm weight) 1,
// everything else Normal(0, std) on its name's stream.
void gm_init_by_kind(ag_tensor *const *ps, int n, uint64_t seed, double std);
// 2-D sine-cosine position table (MAE / ViT from scratch) for rows = lead + gh * gw tokens of
// width C (C % 4 == 0): the first `lead` rows (a class token) are zero; patch (y, x) gets
// sin/cos of y * w_k in the first half of its columns and of x * w_k in the second half,
// w_k = 10000^(-k / (C/4)). p is (rows, C) or (1, rows, C).
void gm_init_sincos_2d(ag_tensor *p, int64_t lead, int64_t gh, int64_t gw);
