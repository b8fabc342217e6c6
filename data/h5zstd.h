// h5zstd.h: the Zstandard HDF5 filter (registered id 32015, the one hdf5plugin and h5py
// users know as "Zstandard"). cd_values[0], when given, is the compression level; chunks are
// stored as plain zstd frames, so files written here are readable by any 32015 decoder and
// vice versa. This file depends on HDF5 and libzstd only: the same code is built into
// groundc_data (registered in-process) and into the dynamic plugin libh5zstd.so.
#pragma once
#include <stddef.h>

#include <hdf5.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DS_H5ZSTD_ID            32015
#define DS_H5ZSTD_DEFAULT_LEVEL 3

// The filter description handed to H5Zregister or returned by an HDF5 plugin.
const H5Z_class2_t *ds_h5zstd_class(void);

// Registers the filter with the HDF5 library of this process (no-op when already there).
// Returns 0 on success, -1 when HDF5 refused (the caller reports it).
int ds_h5zstd_register(void);

// The H5Z_func_t itself, exposed for tests: compresses *buf (nbytes) or, with
// H5Z_FLAG_REVERSE in flags, decompresses it; replaces *buf (and *buf_size) with a new
// buffer from H5allocate_memory and returns the new data size, or 0 on any failure (corrupt
// or truncated frame, out of memory), leaving *buf untouched.
size_t ds_h5zstd_filter(unsigned int flags, size_t cd_nelmts, const unsigned int cd_values[],
                        size_t nbytes, size_t *buf_size, void **buf);

#ifdef __cplusplus
}
#endif
