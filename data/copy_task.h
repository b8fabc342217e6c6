// copy_task.h: a synthetic language-modelling task that a tiny decoder learns in seconds:
// n random tokens, a separator, then the same n tokens again. Only the copy is supervised,
// so a model that has learnt it reaches zero loss. Samples are a pure function of
// (seed, index), so any rank and any resume point see the same data.
#pragma once
#include <stdint.h>

#include "data/loader.h" // DS_IGNORE_TARGET

#define DS_COPY_SEP 1 // separator token; tokens 2.. are payload

// Sequence length for n payload tokens: n + 1 + n, of which the last needs no target.
static inline int64_t ds_copy_seq_len(int64_t n) {
    return 2 * n + 1;
}

// One sample into ids[T] and targets[T] (T = ds_copy_seq_len(n)); targets[t] is the token
// after t for the copied half, DS_IGNORE_TARGET elsewhere. vocab >= 3.
void ds_copy_sample(uint64_t seed, int64_t index, int64_t n, int64_t vocab, int32_t *ids,
                    int32_t *targets);
