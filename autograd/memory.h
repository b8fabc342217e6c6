// memory.h: bump arenas for tensor storage and bookkeeping.
// An arena hands out 64-byte aligned blocks from large chunks and frees them all at once.
// ag_arena_reset keeps the capacity (merged into one chunk), so a training step that needs
// no more than the previous one allocates nothing from the system.
#pragma once
#include <stddef.h>

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ag_chunk ag_chunk;

typedef struct {
    ag_device device;       // where chunks live (host memory for AG_CPU)
    const char *name;       // for messages
    ag_chunk *chunks;       // newest first
    size_t used;            // bytes handed out since the last reset
    size_t peak;            // most bytes ever in use at once
    size_t capacity;        // bytes held in chunks
    size_t min_chunk;       // smallest chunk to request
    size_t n_system_allocs; // chunk allocations so far (tests check steady state)
} ag_arena;

void ag_arena_init(ag_arena *a, ag_device device, const char *name, size_t min_chunk);
void *ag_arena_alloc(ag_arena *a, size_t bytes);
// Frees everything handed out; keeps max(capacity) as one chunk for the next round.
void ag_arena_reset(ag_arena *a);
void ag_arena_free(ag_arena *a);

// Raw device memory (CPU: aligned host memory).
void *ag_device_alloc(ag_device device, size_t bytes, const char *what);
void ag_device_free(ag_device device, void *p);

#ifdef __cplusplus
}
#endif
