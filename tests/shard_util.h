// shard_util.h: what the shard and loader tests (tests/test_shard.c, tests/test_loader.c) and
// bench/loader.c share: the small media sizes of the tests, and writing a dataset folder
// (shards shard_00000.h5 ... and manifest.json) the way `groundc pack` lays it out. Header
// only: bench/ builds every .c file in it as a program of its own.
#pragma once
#include <stdio.h>

#include "data/manifest.h"
#include "data/shard.h"

// Small media, so that the tests stay fast.
#define SU_IS        8 // image side
#define SU_VF        2 // video frames
#define SU_VS        6 // video side
#define SU_AC        2 // audio clips
#define SU_AT        5 // audio frames
#define SU_AM        4 // mel bins
#define SU_IMG_ELEMS (SU_IS * SU_IS * 3)
#define SU_VID_ELEMS (SU_VF * SU_VS * SU_VS * 3)
#define SU_AUD_ELEMS (SU_AC * SU_AT * SU_AM)

// Adds the rows and samples of shard number `shard` through w (arg: the caller's state).
typedef void (*su_fill_fn)(void *arg, int64_t shard, ds_shard_writer *w);

// The existing folder dir <- nshards shards of the given layout, each filled by fill, and
// their manifest (tokenizer digest `digest`). With m, the manifest is left there for the
// caller (ds_manifest_free); else it is freed.
static inline void su_write_dataset(const char *dir, const char *digest,
                                    const ds_shard_layout *layout, int64_t nshards, su_fill_fn fill,
                                    void *arg, ds_manifest *m) {
    ds_manifest own;
    if (!m) m = &own;
    ds_manifest_init(m, digest);
    for (int64_t j = 0; j < nshards; j++) {
        char name[64], path[4096];
        snprintf(name, sizeof name, "shard_%05lld.h5", (long long)j);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        ds_shard_writer *w = ds_shard_create(path, layout);
        fill(arg, j, w);
        ds_shard_info info;
        ds_shard_finish(w, &info);
        ds_manifest_add_shard(m, name, &info);
        ds_shard_info_free(&info);
    }
    ds_manifest_write(m, dir);
    if (m == &own) ds_manifest_free(m);
}
