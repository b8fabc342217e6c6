// h5zstd.c: see h5zstd.h. Chunks are single zstd frames that carry their content size and a
// checksum, so a decoder knows the output size up front and a flipped byte anywhere in the
// frame is detected (zstd alone would happily decode a damaged literal into wrong data).
#include "data/h5zstd.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>
#include <zstd_errors.h>

// HDF5 chunks are limited to 4 GiB; a frame header claiming more is corrupt.
#define DS_H5ZSTD_MAX_CHUNK ((size_t)UINT32_MAX)

// zstd contexts hold workspaces of up to a few MiB; creating them per chunk would make every
// chunk pay for fresh allocations and page faults, so each thread keeps one of each (a filter
// call never re-enters itself, so one per thread is enough). A thread-specific key frees them
// when the thread exits: a loader's reader threads come and go with each loader.
typedef struct {
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
} ds_h5zstd_ctx;

static pthread_key_t ds_h5zstd_key;
static pthread_once_t ds_h5zstd_key_once = PTHREAD_ONCE_INIT;
static bool ds_h5zstd_key_ok;

static void ds_h5zstd_ctx_free(void *p) {
    ds_h5zstd_ctx *c = p;
    ZSTD_freeCCtx(c->cctx);
    ZSTD_freeDCtx(c->dctx);
    free(c);
}

static void ds_h5zstd_key_make(void) {
    ds_h5zstd_key_ok = pthread_key_create(&ds_h5zstd_key, ds_h5zstd_ctx_free) == 0;
}

// This thread's contexts, created on first use; NULL when out of memory (the filter then fails
// the chunk and HDF5 reports the error).
static ds_h5zstd_ctx *ds_h5zstd_this_thread(void) {
    if (pthread_once(&ds_h5zstd_key_once, ds_h5zstd_key_make) || !ds_h5zstd_key_ok) return NULL;
    ds_h5zstd_ctx *c = pthread_getspecific(ds_h5zstd_key);
    if (c) return c;
    if (!(c = calloc(1, sizeof *c))) return NULL;
    if (pthread_setspecific(ds_h5zstd_key, c)) {
        free(c);
        return NULL;
    }
    return c;
}

static ZSTD_CCtx *ds_h5zstd_cctx(void) {
    ds_h5zstd_ctx *c = ds_h5zstd_this_thread();
    if (c && !c->cctx) c->cctx = ZSTD_createCCtx();
    return c ? c->cctx : NULL;
}

static ZSTD_DCtx *ds_h5zstd_dctx(void) {
    ds_h5zstd_ctx *c = ds_h5zstd_this_thread();
    if (c && !c->dctx) c->dctx = ZSTD_createDCtx();
    return c ? c->dctx : NULL;
}

static size_t ds_h5zstd_compress(size_t cd_nelmts, const unsigned int cd_values[], size_t nbytes,
                                 size_t *buf_size, void **buf) {
    // cd_values[0] is a signed int stored as unsigned (negative levels are zstd's fast modes,
    // whose frames keep literals raw and decode several times faster); 0 or no value means
    // zstd's default; anything beyond zstd's range is clamped to it.
    int level = DS_H5ZSTD_DEFAULT_LEVEL;
    if (cd_nelmts > 0 && cd_values[0] != 0) {
        unsigned v = cd_values[0];
        level = v > INT32_MAX ? -(int)~v - 1 : (int)v;
        level = level < ZSTD_minCLevel()   ? ZSTD_minCLevel()
                : level > ZSTD_maxCLevel() ? ZSTD_maxCLevel()
                                           : level;
    }

    ZSTD_CCtx *cctx = ds_h5zstd_cctx();
    if (!cctx) return 0;
    if (ZSTD_isError(ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1)))
        return 0;

    size_t cap = ZSTD_compressBound(nbytes);
    void *out = H5allocate_memory(cap, false);
    if (!out) return 0;
    size_t n = ZSTD_compress2(cctx, out, cap, *buf, nbytes);
    if (ZSTD_isError(n)) {
        H5free_memory(out);
        return 0;
    }
    H5free_memory(*buf);
    *buf = out;
    *buf_size = cap;
    return n;
}

// Decodes a chunk whose output size is not known in advance (frames written by streaming
// encoders, or several concatenated frames), growing the output as needed.
static size_t ds_h5zstd_stream(ZSTD_DCtx *dctx, const void *in, size_t nbytes, size_t hint,
                               void **result, size_t *result_cap) {
    if (ZSTD_isError(ZSTD_DCtx_reset(dctx, ZSTD_reset_session_only))) return 0;
    size_t cap = hint < 4096 ? 4096 : hint < DS_H5ZSTD_MAX_CHUNK ? hint : DS_H5ZSTD_MAX_CHUNK;
    unsigned char *out = H5allocate_memory(cap, false);
    if (!out) return 0;
    ZSTD_inBuffer ib = {in, nbytes, 0};
    size_t pos = 0;
    for (;;) {
        ZSTD_outBuffer ob = {out, cap, pos};
        size_t ret = ZSTD_decompressStream(dctx, &ob, &ib);
        if (ZSTD_isError(ret)) break;
        pos = ob.pos;
        if (ret == 0 && ib.pos == ib.size) { // every frame complete, all input used
            *result = out;
            *result_cap = cap;
            return pos;
        }
        if (pos == cap) { // output full: grow and go on
            if (cap >= DS_H5ZSTD_MAX_CHUNK) break;
            size_t grown = cap * 2 < DS_H5ZSTD_MAX_CHUNK ? cap * 2 : DS_H5ZSTD_MAX_CHUNK;
            unsigned char *bigger = H5resize_memory(out, grown);
            if (!bigger) break;
            out = bigger;
            cap = grown;
        } else if (ib.pos == ib.size) {
            break; // input used up in the middle of a frame: truncated chunk
        }
    }
    H5free_memory(out);
    return 0;
}

static size_t ds_h5zstd_decompress(size_t nbytes, size_t *buf_size, void **buf) {
    ZSTD_DCtx *dctx = ds_h5zstd_dctx();
    if (!dctx) return 0;
    unsigned long long size = ZSTD_getFrameContentSize(*buf, nbytes);
    if (size == ZSTD_CONTENTSIZE_ERROR) return 0; // not a zstd frame
    void *out = NULL;
    size_t cap = 0, n = 0;
    if (size == ZSTD_CONTENTSIZE_UNKNOWN) {
        n = ds_h5zstd_stream(dctx, *buf, nbytes, 4 * nbytes, &out, &cap);
    } else {
        if (size == 0 || size > DS_H5ZSTD_MAX_CHUNK) return 0;
        cap = (size_t)size;
        if (!(out = H5allocate_memory(cap, false))) return 0;
        n = ZSTD_decompressDCtx(dctx, out, cap, *buf, nbytes);
        if (ZSTD_isError(n) || n != cap) {
            bool several_frames = ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall;
            H5free_memory(out);
            out = NULL;
            n = 0;
            // The first frame's size undercounts a chunk made of several frames.
            if (several_frames) n = ds_h5zstd_stream(dctx, *buf, nbytes, 2 * cap, &out, &cap);
        }
    }
    if (n == 0) return 0;
    H5free_memory(*buf);
    *buf = out;
    *buf_size = cap;
    return n;
}

size_t ds_h5zstd_filter(unsigned int flags, size_t cd_nelmts, const unsigned int cd_values[],
                        size_t nbytes, size_t *buf_size, void **buf) {
    if (!buf || !*buf || !buf_size || nbytes == 0) return 0;
    if (flags & H5Z_FLAG_REVERSE) return ds_h5zstd_decompress(nbytes, buf_size, buf);
    return ds_h5zstd_compress(cd_nelmts, cd_values, nbytes, buf_size, buf);
}

static const H5Z_class2_t ds_h5zstd_cls = {
    .version = H5Z_CLASS_T_VERS,
    .id = DS_H5ZSTD_ID,
    .encoder_present = 1,
    .decoder_present = 1,
    .name = "Zstandard (groundc)",
    .can_apply = NULL,
    .set_local = NULL,
    .filter = ds_h5zstd_filter,
};

const H5Z_class2_t *ds_h5zstd_class(void) {
    return &ds_h5zstd_cls;
}

int ds_h5zstd_register(void) {
    // H5Zregister replaces an entry with the same id, so calling again is harmless (and
    // re-registers after an H5close). Registered in-process, the filter is found before HDF5
    // ever looks for a plugin library for 32015.
    return H5Zregister(&ds_h5zstd_cls) < 0 ? -1 : 0;
}
