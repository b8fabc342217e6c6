// init.h: parameter initialisation, deterministic from (seed, stream) whatever the device.
#pragma once
#include <stdint.h>

#include "autograd/tensor.h"

// Normal(0, std) values from a counter-based generator keyed by (seed, stream).
void gm_init_normal(ag_tensor *p, uint64_t seed, uint64_t stream, double std);
void gm_init_constant(ag_tensor *p, double value);
