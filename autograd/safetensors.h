// safetensors.h: read and write tensors in the safetensors format (HF): 8-byte little-endian
// header length, a JSON header {"name": {"dtype", "shape", "data_offsets"}, "__metadata__":
// {str: str}}, then the raw little-endian data. Reading maps the file and checks every
// header field against the file size; any defect is a one-line error naming the file and
// the tensor. Writing goes to a temporary file that is fsynced and renamed into place.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "tensor.h"

typedef struct {
    char *name;
    char dtype[8]; // as in the file: "F32", "BF16", "F16", "F64", "I32", "U8", "I64", ...
    int ndim;
    int64_t shape[8];
    const void *data; // inside the mapping
    size_t nbytes;
} ag_st_entry;

typedef struct {
    char *path;
    void *map;
    size_t map_size;
    int n;
    ag_st_entry *entries; // in file order
    int n_meta;
    char **meta_keys, **meta_values;
    int n_owned;
    void **owned; // buffers entries point into besides the mapping (torch_file.h), freed on close
} ag_st_file;

// Opens and validates; fails (ag_fail) with file and tensor name on any defect.
ag_st_file *ag_st_open(const char *path);
void ag_st_close(ag_st_file *f);
// The entry called name, or NULL.
const ag_st_entry *ag_st_find(const ag_st_file *f, const char *name);
// The metadata value for key, or NULL.
const char *ag_st_meta(const ag_st_file *f, const char *key);
// Maps a file dtype string to ours (F32, BF16, F64, I32, U8); fails naming file and tensor
// for others.
ag_dtype ag_st_dtype(const ag_st_file *f, const ag_st_entry *e);
// Copies entry e into tensor t (contiguous, any device). Shapes must match exactly; F64,
// F32, BF16 and F16 entries convert to a float tensor's dtype (rounding once, to nearest
// even); I32 and U8 load only into i32 and u8. Fails naming the file, the tensor and both
// shapes (or both dtypes) otherwise.
void ag_st_load_into(const ag_st_file *f, const ag_st_entry *e, ag_tensor *t);
// Fails naming the file, the tensor and the element's index when a float entry holds a NaN or
// an infinity (or, with nonneg, a negative value: Adam's second moments); weights and
// optimizer state are checked before they are used.
void ag_st_check_values(const ag_st_file *f, const ag_st_entry *e, bool nonneg);

typedef struct ag_st_writer ag_st_writer;
ag_st_writer *ag_st_writer_new(void);
// Adds a tensor (copied to host now; any device, must be contiguous).
void ag_st_add(ag_st_writer *w, const char *name, const ag_tensor *t);
// Adds raw host data with an explicit dtype string and shape.
void ag_st_add_raw(ag_st_writer *w, const char *name, const char *dtype, int ndim,
                   const int64_t *shape, const void *data, size_t nbytes);
void ag_st_add_meta(ag_st_writer *w, const char *key, const char *value);
// Writes path atomically (path.tmp.<pid>, fsync, rename) and frees the writer.
void ag_st_write(ag_st_writer *w, const char *path);
void ag_st_writer_free(ag_st_writer *w);
