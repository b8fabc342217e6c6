// tensor.h: the tensor type, dtypes, devices, shapes and (non-copying) layouts.
// A tensor is a view over storage owned by a memory arena (memory.h): shape and strides in
// elements, up to AG_MAX_DIMS dims. Tensors made by ops are contiguous; ag_permute, ag_slice
// and ag_transpose (ops.h) make strided views. Gradients are always contiguous.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AG_MAX_DIMS 4

typedef enum { AG_F32, AG_BF16, AG_F64, AG_I32, AG_U8, AG_NDTYPES } ag_dtype;
typedef enum { AG_CPU, AG_CUDA } ag_device;

typedef struct {
    int ndim;
    int64_t d[AG_MAX_DIMS];
} ag_shape;

// AG_SHAPE(B, T, C) -> an ag_shape with ndim 3.
#define AG_NARGS_(_1, _2, _3, _4, N, ...) N
#define AG_NARGS(...)                     AG_NARGS_(__VA_ARGS__, 4, 3, 2, 1, 0)
#define AG_SHAPE(...)                     ((ag_shape){AG_NARGS(__VA_ARGS__), {__VA_ARGS__}})

typedef struct ag_tensor {
    ag_dtype dtype;
    ag_device device;
    int ndim;
    int64_t shape[AG_MAX_DIMS];
    int64_t stride[AG_MAX_DIMS]; // in elements
    void *data;                  // first element
    bool requires_grad;
    bool is_param;          // lives in the persistent pool; its grad does too
    struct ag_tensor *grad; // contiguous, same shape and dtype; NULL until needed
    struct ag_tensor *base; // for views: the tensor whose storage this shares
    const char *name;       // parameter or input name for messages, may be NULL
} ag_tensor;

size_t ag_dtype_size(ag_dtype dt);
const char *ag_dtype_name(ag_dtype dt);
bool ag_dtype_is_float(ag_dtype dt);
// The arithmetic type of a float dtype: f64 for f64, f32 otherwise (bf16 computes in f32).
ag_dtype ag_compute_dtype(ag_dtype dt);

int64_t ag_numel(const ag_tensor *t);
size_t ag_nbytes(const ag_tensor *t);
bool ag_is_contiguous(const ag_tensor *t);
bool ag_same_shape(const ag_tensor *a, const ag_tensor *b);
ag_shape ag_shape_of(const ag_tensor *t);
int64_t ag_shape_numel(ag_shape s);
// Fills contiguous strides for t's shape.
void ag_set_contiguous_strides(ag_tensor *t);
// Normalises a possibly negative dim index; fails naming op when out of range.
int ag_dim_index(const char *op, const ag_tensor *t, int dim);

// "f32[2,3,5]", "bf16[4,7] view" or, on the GPU, "cuda f32[2,3]"; returns buf.
char *ag_describe(const ag_tensor *t, char *buf, size_t n);
// "[d0,d1,...]" of ndim dims into buf (n bytes, cut short when too small); returns buf.
char *ag_format_dims(char *buf, size_t n, int ndim, const int64_t *dims);
// A label for messages: the tensor name, or the fallback.
const char *ag_label(const ag_tensor *t, const char *fallback);

// bf16 <-> f32, round to nearest even; NaN stays NaN.
static inline float ag_bf16_to_f32(uint16_t h) {
    union {
        uint32_t u;
        float f;
    } v = {.u = (uint32_t)h << 16};
    return v.f;
}
static inline uint16_t ag_f32_to_bf16(float f) {
    union {
        float f;
        uint32_t u;
    } v = {.f = f};
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40); // quiet NaN
    uint32_t rounding = 0x7fffu + ((v.u >> 16) & 1u);
    return (uint16_t)((v.u + rounding) >> 16);
}

#ifdef __cplusplus
}
#endif
