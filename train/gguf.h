// gguf.h: a GGUF (version 3) file writer, as llama.cpp reads them: metadata key/values, then
// tensor infos, then the tensor data, every tensor aligned to 32 bytes. Tensors are added with a
// fill callback that produces their values as f32 when the file is written, so that only one
// tensor's values are in memory at a time; the writer converts them to F32, F16, BF16 or Q8_0.
//
// Shapes are given in ggml's order (ne[0] the contiguous dimension): a PyTorch (out, in) weight
// is ne {in, out}. Q8_0 needs ne[0] % 32 == 0 (blocks of 32 values of one row).
#pragma once
#include <stdbool.h>
#include <stdint.h>

// ggml type numbers (ggml.h's enum ggml_type).
typedef enum {
    TR_GGUF_F32 = 0,
    TR_GGUF_F16 = 1,
    TR_GGUF_Q8_0 = 8,
    TR_GGUF_BF16 = 30,
} tr_gguf_type;

#define TR_GGUF_QK8_0 32 // values per Q8_0 block: an f16 scale and 32 int8

const char *tr_gguf_type_name(tr_gguf_type t); // "f32", "f16", "q8_0", "bf16"
// Bytes of a row of n values (n % 32 == 0 for Q8_0).
uint64_t tr_gguf_row_bytes(tr_gguf_type t, int64_t n);

// f32 -> IEEE half, round to nearest even (overflow gives infinity, as a cast does).
uint16_t tr_gguf_f32_to_f16(float f);
float tr_gguf_f16_to_f32(uint16_t h);
// One Q8_0 block of 32 values as ggml's reference quantizer makes it: scale d = max|x| / 127
// (stored as f16), q = round(x / d) with the unrounded d.
void tr_gguf_quantize_q8_0(const float *x, uint8_t out[2 + TR_GGUF_QK8_0]);

typedef struct tr_gguf tr_gguf;

// Writes the tensor's values, row-major in ggml order (ne[0] fastest), into dst (numel floats).
typedef void (*tr_gguf_fill)(const void *arg, float *dst);

tr_gguf *tr_gguf_new(void);
void tr_gguf_free(tr_gguf *g);

// Metadata, in the order added. Keys must be unique (checked).
void tr_gguf_kv_str(tr_gguf *g, const char *key, const char *value);
void tr_gguf_kv_u32(tr_gguf *g, const char *key, uint32_t value);
void tr_gguf_kv_i32(tr_gguf *g, const char *key, int32_t value);
void tr_gguf_kv_f32(tr_gguf *g, const char *key, float value);
void tr_gguf_kv_bool(tr_gguf *g, const char *key, bool value);
void tr_gguf_kv_arr_str(tr_gguf *g, const char *key, int64_t n, const char *const *values);
void tr_gguf_kv_arr_f32(tr_gguf *g, const char *key, int64_t n, const float *values);
void tr_gguf_kv_arr_i32(tr_gguf *g, const char *key, int64_t n, const int32_t *values);

// A tensor of ndim (1..4) dims ne (ggml order) and type t; fill(arg, dst) gives its values when
// the file is written (arg must stay valid until then). Names are unique (checked).
void tr_gguf_add_tensor(tr_gguf *g, const char *name, int ndim, const int64_t *ne, tr_gguf_type t,
                        tr_gguf_fill fill, const void *arg);

// Writes the file (created or truncated), fsynced and closed. A non-finite value, or a value
// that F16 cannot hold, fails naming the file and the tensor; so does any I/O error.
void tr_gguf_write(tr_gguf *g, const char *path);
