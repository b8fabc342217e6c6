// memory.c: see memory.h.
#include "memory.h"

#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "error.h"

#define AG_ALIGN 64

struct ag_chunk {
    ag_chunk *next;
    char *data;
    size_t size, used;
};

void *ag_device_alloc(ag_device device, size_t bytes, const char *what) {
    if (device == AG_CPU) {
        size_t n = (bytes + AG_ALIGN - 1) / AG_ALIGN * AG_ALIGN;
        void *p = aligned_alloc(AG_ALIGN, n ? n : AG_ALIGN);
        if (!p) ag_fail("out of host memory allocating %zu bytes for %s", bytes, what);
        return p;
    }
    return ag_backend_for(device)->alloc(bytes, what);
}

void ag_device_free(ag_device device, void *p) {
    if (!p) return;
    if (device == AG_CPU)
        free(p);
    else
        ag_backend_for(device)->free(p);
}

void ag_arena_init(ag_arena *a, ag_device device, const char *name, size_t min_chunk) {
    memset(a, 0, sizeof *a);
    a->device = device;
    a->name = name;
    a->min_chunk = min_chunk ? min_chunk : (size_t)1 << 20;
}

static void add_chunk(ag_arena *a, size_t size) {
    ag_chunk *c = ag_xmalloc(sizeof *c, a->name);
    c->data = ag_device_alloc(a->device, size, a->name);
    c->size = size;
    c->used = 0;
    c->next = a->chunks;
    a->chunks = c;
    a->capacity += size;
    a->n_system_allocs++;
}

void *ag_arena_alloc(ag_arena *a, size_t bytes) {
    size_t n = (bytes + AG_ALIGN - 1) / AG_ALIGN * AG_ALIGN;
    if (n == 0) n = AG_ALIGN;
    ag_chunk *c = a->chunks;
    if (!c || c->size - c->used < n) {
        size_t size = a->min_chunk;
        if (size < a->capacity) size = a->capacity; // grow geometrically
        if (size < n) size = n;
        add_chunk(a, size);
        c = a->chunks;
    }
    void *p = c->data + c->used;
    c->used += n;
    a->used += n;
    if (a->used > a->peak) a->peak = a->used;
    return p;
}

static void free_chunks(ag_arena *a) {
    for (ag_chunk *c = a->chunks, *next; c; c = next) {
        next = c->next;
        ag_device_free(a->device, c->data);
        free(c);
    }
    a->chunks = NULL;
    a->capacity = 0;
}

void ag_arena_reset(ag_arena *a) {
    if (a->chunks && a->chunks->next) {
        // several chunks: merge into one that holds the peak, so the next step fits at once
        size_t total = a->capacity;
        free_chunks(a);
        add_chunk(a, total);
    } else if (a->chunks) {
        a->chunks->used = 0;
    }
    a->used = 0;
}

void ag_arena_free(ag_arena *a) {
    free_chunks(a);
    a->used = 0;
}
