// llama_util.h: the small Llama that the engine tests (tests/test_engine.c,
// tests/test_grad_ready.c) run: every kind of layer (embedding, RoPE attention with grouped
// KV heads, SwiGLU, RMSNorm) at sizes that take microseconds.
#pragma once
#include "model/llama.h"

static inline gm_llama_config lu_tiny_llama_config(void) {
    return (gm_llama_config){.vocab = 20,
                             .dim = 16,
                             .n_layers = 2,
                             .n_heads = 2,
                             .n_kv_heads = 1,
                             .ffn = 24,
                             .max_seq = 16,
                             .rope_theta = 1e4,
                             .norm_eps = 1e-5};
}
