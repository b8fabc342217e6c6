// h5zstd_plugin.c: HDF5 dynamic-plugin entry points for the zstd filter of h5zstd.c, built as
// libh5zstd.so (data/h5zstd.cmake) so that any HDF5 program (h5py, h5dump) reads groundc
// shards with HDF5_PLUGIN_PATH=build/hdf5-plugins.
#include <H5PLextern.h>

#include "data/h5zstd.h"

H5PL_type_t H5PLget_plugin_type(void) {
    return H5PL_TYPE_FILTER;
}

const void *H5PLget_plugin_info(void) {
    return ds_h5zstd_class();
}
