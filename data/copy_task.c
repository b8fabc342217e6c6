// copy_task.c: see copy_task.h.
#include "copy_task.h"

#include "autograd/rng.h"

void ds_copy_sample(uint64_t seed, int64_t index, int64_t n, int64_t vocab, int32_t *ids,
                    int32_t *targets) {
    uint64_t key = ag_mix64(seed + 0x9e3779b97f4a7c15ull * (uint64_t)(index + 1));
    int64_t T = ds_copy_seq_len(n);
    for (int64_t i = 0; i < n; i++) {
        int32_t tok = (int32_t)(2 + ag_mix64(key + (uint64_t)i) % (uint64_t)(vocab - 2));
        ids[i] = ids[n + 1 + i] = tok;
    }
    ids[n] = DS_COPY_SEP;
    for (int64_t t = 0; t < T; t++)
        targets[t] = (t >= n && t + 1 < T) ? ids[t + 1] : DS_IGNORE_TARGET;
}
