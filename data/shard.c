// shard.c: see shard.h. Layout and names follow data/FORMAT.md exactly.
//
// Writer: media rows go straight into extendible datasets (one row per chunk) as they are
// added, so a shard of large videos never sits in memory; token streams and per-sample
// arrays are small and are written once at finish with fixed sizes. Object-header times are
// off everywhere, so the same calls give the same bytes.
// Reader: everything per-sample (offsets, media rows, task, ...) and per-row (sizes,
// durations) is loaded and checked at open; tokens, meta and media are read on demand with
// hyperslab reads into caller buffers.
#include "data/shard.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <hdf5.h>
#include <openssl/evp.h>
#include <zstd.h>

#include "autograd/error.h"
#include "data/files.h"
#include "data/h5zstd.h"

#define DS_CHUNK_ELEMS 65536      // token streams and per-sample arrays, per chunk
#define DS_TOKEN_CACHE (4u << 20) // chunk cache of tokens / loss_mask: 16 chunks of tokens
#define DS_CACHE_SLOTS 521        // a prime well above the chunks the cache can hold
#define DS_MAX_SOURCES 65535      // sample_source is uint16
#define DS_NMEDIA      3          // images, videos, audios, in this order

static const char *const ds_task_names[DS_NTASKS] = {"caption", "rec",   "reg",
                                                     "tvg",     "sound", "conversation"};

const char *ds_task_name(int task) {
    return task >= 0 && task < DS_NTASKS ? ds_task_names[task] : NULL;
}

int ds_task_from_name(const char *name) {
    for (int i = 0; i < DS_NTASKS; i++)
        if (name && strcmp(name, ds_task_names[i]) == 0) return i;
    return -1;
}

// Names of the three media kinds: row dataset, per-row metadata, per-sample reference.
typedef struct {
    const char *data, *rowmeta, *ref, *kind, *size_attr;
} ds_media_names;
static const ds_media_names ds_media[DS_NMEDIA] = {
    {"images", "image_orig_size", "sample_image", "image", "image_size"},
    {"videos", "video_duration", "sample_video", "video", "video_size"},
    {"audios", "audio_duration", "sample_audio", "audio", "audio_mels"},
};

// ---------------------------------------------------------------------------------------
// float16

uint16_t ds_f16_from_f32(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) // inf stays inf; NaN keeps its top payload bits and stays a NaN
        return (uint16_t)(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u | ((a >> 13) & 0x3ffu) : 0));
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); // rounds to >= 65520: overflow
    if (a < 0x38800000u) { // below 2^-14: a subnormal half (m * 2^-24) or zero
        uint32_t e = a >> 23, mant = (a & 0x7fffffu) | (e ? 0x800000u : 0);
        uint32_t shift = 126 - (e ? e : 1); // value = mant * 2^(e - 150) = m * 2^-24
        if (shift > 24) return (uint16_t)sign;
        uint32_t m = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (m & 1))) m++;
        return (uint16_t)(sign | m);
    }
    uint32_t h = (a - 0x38000000u) >> 13, rem = a & 0x1fffu; // rebias exponent 127 -> 15
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

float ds_f32_from_f16(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, u;
    if (e == 0) {
        float f = (float)m * 0x1p-24f; // subnormal or zero, exact in float32
        memcpy(&u, &f, sizeof u);
        u |= sign;
    } else if (e == 31) {
        u = sign | 0x7f800000u | (m << 13);
    } else {
        u = sign | ((e + 112) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

// ---------------------------------------------------------------------------------------
// HDF5 plumbing shared by writer and reader

static _Thread_local bool ds_h5_ready;
static _Thread_local char ds_h5_msg[256];

// HDF5 prints its whole error stack on every failure unless told not to; groundc reports one
// line instead. The setting is per thread in thread-safe builds, hence the thread flag.
static void ds_h5_init(void) {
    if (ds_h5_ready) return;
    if (H5Eset_auto2(H5E_DEFAULT, NULL, NULL) < 0) ag_fail("HDF5: cannot silence error printing");
    if (ds_h5zstd_register() < 0) ag_fail("HDF5: cannot register the zstd filter (id 32015)");
    ds_h5_ready = true;
}

static herr_t ds_h5_walk(unsigned n, const H5E_error2_t *e, void *data) {
    (void)data;
    if (n != 0) return 0;
    snprintf(ds_h5_msg, sizeof ds_h5_msg, "%s", e->desc && e->desc[0] ? e->desc : e->func_name);
    for (char *p = ds_h5_msg; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    return 0;
}

// Keeps the innermost description of the HDF5 call that just failed: the next HDF5 call,
// even a close, empties the library's error stack.
static void ds_h5_capture(void) {
    ds_h5_msg[0] = 0;
    (void)H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, ds_h5_walk, NULL);
}

// Formats "<prefix>: <message>[ [HDF5: reason]]" into buf, consuming the captured reason.
static void ds_format(char *buf, size_t n, const char *prefix, const char *fmt, va_list ap) {
    int k = snprintf(buf, n, "%s: ", prefix);
    if (k < 0 || (size_t)k >= n) k = 0;
    vsnprintf(buf + k, n - (size_t)k, fmt, ap);
    if (ds_h5_msg[0]) {
        size_t len = strlen(buf);
        snprintf(buf + len, n - len, " [HDF5: %s]", ds_h5_msg);
        ds_h5_msg[0] = 0;
    }
}

// Hands variable-length data read by HDF5 back to its allocator. H5Treclaim replaced
// H5Dvlen_reclaim in 1.12 (1.10 headers declare it, but the Debian 1.10 library lacks it).
static void ds_vlen_reclaim(hid_t type, hid_t space, void *buf) {
#if H5_VERSION_GE(1, 12, 0)
    (void)H5Treclaim(type, space, H5P_DEFAULT, buf);
#else
    (void)H5Dvlen_reclaim(type, space, H5P_DEFAULT, buf);
#endif
}

static void ds_close_id(hid_t *id) {
    if (*id >= 0) (void)H5Oclose(*id); // releasing a valid id cannot fail
    *id = H5I_INVALID_HID;
}

// A 16-bit IEEE float type (HDF5 1.10 has no predefined one): sign bit 15, exponent bits
// 10..14 with bias 15, mantissa bits 0..9. h5py reads it as numpy float16.
static hid_t ds_f16_type(void) {
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    if (t < 0) return H5I_INVALID_HID;
    if (H5Tset_fields(t, 15, 10, 5, 0, 10) < 0 || H5Tset_size(t, 2) < 0 ||
        H5Tset_ebias(t, 15) < 0) {
        (void)H5Tclose(t);
        return H5I_INVALID_HID;
    }
    return t;
}

// Variable-length UTF-8 string type, as h5py writes str.
static hid_t ds_str_type(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return H5I_INVALID_HID;
    if (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
        (void)H5Tclose(t);
        return H5I_INVALID_HID;
    }
    return t;
}

// Row shape (without the leading row dimension) of media kind k; returns its rank.
static int ds_row_dims(int k, int32_t s, int32_t f, int32_t vs, int32_t c, int32_t t, int32_t m,
                       hsize_t *dims) {
    if (k == 0) {
        dims[0] = dims[1] = (hsize_t)s, dims[2] = 3;
        return 3;
    }
    if (k == 1) {
        dims[0] = (hsize_t)f, dims[1] = dims[2] = (hsize_t)vs, dims[3] = 3;
        return 4;
    }
    dims[0] = (hsize_t)c, dims[1] = (hsize_t)t, dims[2] = (hsize_t)m;
    return 3;
}

static size_t ds_row_elems(int rank, const hsize_t *dims) {
    size_t n = 1;
    for (int i = 0; i < rank; i++) n *= (size_t)dims[i];
    return n;
}

bool ds_is_sha256_hex(const char *s) {
    if (!s || strlen(s) != 64) return false;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return true;
}

bool ds_sha256_hex_lower(const char *in, char out[65]) {
    if (!in || strlen(in) != 64) return false;
    char low[65];
    for (int i = 0; i < 64; i++) {
        char c = in[i];
        if (c >= 'A' && c <= 'F') c = (char)(c - 'A' + 'a');
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
        low[i] = c;
    }
    low[64] = 0;
    memcpy(out, low, 65);
    return true;
}

// A float16 whose exponent bits are all ones is an infinity or a NaN.
static bool ds_f16_finite(uint16_t h) {
    return (h & 0x7c00u) != 0x7c00u;
}

// "NaN", "+inf" or "-inf" for a non-finite float16.
static const char *ds_f16_nonfinite_name(uint16_t h) {
    return (h & 0x3ffu) ? "NaN" : (h & 0x8000u) ? "-inf" : "+inf";
}

// ---------------------------------------------------------------------------------------
// SHA-256

// Streams the file through SHA-256; on failure returns false with the reason in err.
static bool ds_sha256(const char *path, char hex[65], int64_t *bytes, char *err, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, n, "cannot open: %s", strerror(errno));
        return false;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char *buf = malloc(1 << 20);
    bool ok = ctx && buf && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
    int64_t total = 0;
    for (;;) {
        size_t got = ok ? fread(buf, 1, 1 << 20, f) : 0;
        if (got > 0 && EVP_DigestUpdate(ctx, buf, got) != 1) ok = false;
        total += (int64_t)got;
        if (got < (1 << 20)) break;
    }
    bool read_error = ferror(f) != 0;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (ok && (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != 32)) ok = false;
    fclose(f);
    EVP_MD_CTX_free(ctx);
    free(buf);
    if (read_error || !ok) {
        snprintf(err, n, "%s",
                 read_error ? "read error while computing SHA-256"
                            : "SHA-256 computation failed (out of memory?)");
        return false;
    }
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    if (bytes) *bytes = total;
    return true;
}

void ds_file_sha256(const char *path, char hex[65], int64_t *bytes) {
    char err[256];
    if (!ds_sha256(path, hex, bytes, err, sizeof err)) ag_fail("%s: %s", path, err);
}

void ds_shard_info_free(ds_shard_info *info) {
    if (!info) return;
    for (int i = 0; i < info->num_sources; i++) free(info->source_names[i]);
    free(info->source_names);
    free(info->source_counts);
    memset(info, 0, sizeof *info);
}

// ---------------------------------------------------------------------------------------
// writer

struct ds_shard_writer {
    char *path, *tmp;
    ds_shard_layout layout;
    char digest[65];
    unsigned level, pixel_level; // zstd levels (two's complement) of pixels and the rest
    hid_t file, f16, str;
    hid_t media[DS_NMEDIA]; // created with the first row of the kind
    int64_t rows[DS_NMEDIA], row_cap[DS_NMEDIA];
    int32_t *img_size; // [rows][2]
    float *duration[DS_NMEDIA];
    uint16_t *half; // one audio row as float16
    int32_t *tokens;
    uint8_t *mask;
    int64_t n_tok, tok_cap;
    int64_t n, cap; // samples
    int64_t *offsets;
    int32_t *ref[DS_NMEDIA];
    uint8_t *task, *gran;
    uint16_t *src;
    char **meta;
    char **sources;
    int64_t *source_counts;
    int n_sources;
    int64_t sources_cap;
};

// Closes every HDF5 object of the writer (the file was opened with strong close degree)
// and removes the temporary file. Safe to call twice.
static void ds_w_release(ds_shard_writer *w) {
    for (int k = 0; k < DS_NMEDIA; k++) ds_close_id(&w->media[k]);
    if (w->f16 >= 0) (void)H5Tclose(w->f16);
    if (w->str >= 0) (void)H5Tclose(w->str);
    w->f16 = w->str = H5I_INVALID_HID;
    if (w->file >= 0) (void)H5Fclose(w->file);
    w->file = H5I_INVALID_HID;
    if (w->tmp) (void)unlink(w->tmp);
}

static void ds_w_free(ds_shard_writer *w) {
    for (int64_t i = 0; i < w->n; i++) free(w->meta[i]);
    for (int i = 0; i < w->n_sources; i++) free(w->sources[i]);
    for (int k = 0; k < DS_NMEDIA; k++) free(w->ref[k]), free(w->duration[k]);
    free(w->img_size), free(w->half), free(w->tokens), free(w->mask), free(w->offsets);
    free(w->task), free(w->gran), free(w->src), free(w->meta), free(w->sources);
    free(w->source_counts), free(w->path), free(w->tmp);
    free(w);
}

// Fails naming the file being written. The writer is gone afterwards: HDF5 objects closed,
// the half-written PATH.tmp removed, memory freed (an error handler that returns control to
// the caller must not touch w again).
__attribute__((noreturn, format(printf, 2, 3))) static void ds_wfail(ds_shard_writer *w,
                                                                     const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    ds_format(msg, sizeof msg, w->tmp, fmt, ap);
    va_end(ap);
    ds_w_release(w);
    ds_w_free(w);
    ag_fail("%s", msg);
}

static void *ds_grow(void *p, int64_t n, size_t elem, const char *what) {
    return ag_xrealloc(p, (size_t)n * elem, what);
}

// Creates a dataset with object times off and, when chunk is given, zstd at `level`.
static hid_t ds_w_create(ds_shard_writer *w, const char *name, hid_t ftype, int rank,
                         const hsize_t *dims, const hsize_t *maxdims, const hsize_t *chunk,
                         unsigned level) {
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE), space = H5I_INVALID_HID, d = H5I_INVALID_HID;
    bool ok = dcpl >= 0 && H5Pset_obj_track_times(dcpl, 0) >= 0;
    if (ok && chunk)
        ok = H5Pset_chunk(dcpl, rank, chunk) >= 0 &&
             H5Pset_filter(dcpl, DS_H5ZSTD_ID, H5Z_FLAG_MANDATORY, 1, &level) >= 0;
    if (ok) ok = (space = H5Screate_simple(rank, dims, maxdims)) >= 0;
    if (ok) ok = (d = H5Dcreate2(w->file, name, ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT)) >= 0;
    if (!ok) ds_h5_capture();
    if (space >= 0) (void)H5Sclose(space);
    if (dcpl >= 0) (void)H5Pclose(dcpl);
    if (!ok) ds_wfail(w, "dataset '%s': cannot create", name);
    return d;
}

// A fixed-size array (rank 1 or 2) written in one go: chunked by 64 Ki rows and compressed,
// or contiguous when empty (HDF5 chunks cannot have a zero dimension) or variable-length
// (HDF5 refuses filters on those: only the heap references would be compressed).
static void ds_w_array(ds_shard_writer *w, const char *name, hid_t ftype, hid_t mtype, int rank,
                       const hsize_t *dims, const void *data) {
    hsize_t chunk[2] = {dims[0] < DS_CHUNK_ELEMS ? dims[0] : DS_CHUNK_ELEMS,
                        rank > 1 ? dims[1] : 1};
    htri_t vlen = H5Tis_variable_str(ftype);
    if (vlen < 0) {
        ds_h5_capture();
        ds_wfail(w, "dataset '%s': bad element type", name);
    }
    bool chunked = dims[0] > 0 && !vlen;
    hid_t d = ds_w_create(w, name, ftype, rank, dims, NULL, chunked ? chunk : NULL, w->level);
    if (dims[0] > 0 && H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
        ds_h5_capture();
        (void)H5Dclose(d);
        ds_wfail(w, "dataset '%s': write failed", name);
    }
    // Closing flushes the chunk cache, i.e. compresses and writes: it can fail.
    if (H5Dclose(d) < 0) {
        ds_h5_capture();
        ds_wfail(w, "dataset '%s': write failed", name);
    }
}

ds_shard_writer *ds_shard_create(const char *path, const ds_shard_layout *layout) {
    ds_h5_init();
    if (!path || !layout) ag_fail("ds_shard_create: NULL path or layout");
    if (!ds_is_sha256_hex(layout->tokenizer_digest))
        ag_fail("%s: tokenizer digest is not a 64-digit lowercase hex SHA-256", path);
    if (layout->image_size < 0 || layout->video_frames < 0 || layout->video_size < 0 ||
        layout->audio_clips < 0 || layout->audio_frames < 0 || layout->audio_mels < 0)
        ag_fail("%s: negative media size in the shard layout", path);
    int level = layout->compression_level;
    if (level && (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel()))
        ag_fail("%s: zstd level %d is outside %d to %d", path, level, ZSTD_minCLevel(),
                ZSTD_maxCLevel());
    ds_shard_writer *w = ag_xcalloc(1, sizeof *w, "shard writer");
    w->file = w->f16 = w->str = H5I_INVALID_HID;
    for (int k = 0; k < DS_NMEDIA; k++) w->media[k] = H5I_INVALID_HID;
    w->path = ag_xstrdup(path);
    size_t n = strlen(path) + 5;
    w->tmp = ag_xmalloc(n, "shard path");
    snprintf(w->tmp, n, "%s.tmp", path);
    w->layout = *layout;
    memcpy(w->digest, layout->tokenizer_digest, 65);
    w->layout.tokenizer_digest = w->digest;
    // A negative level is stored as its two's complement (h5zstd.c)
    w->level = (unsigned)(level ? level : DS_SHARD_ZSTD_LEVEL);
    w->pixel_level = (unsigned)(level ? level : DS_SHARD_ZSTD_PIXEL_LEVEL);
    w->offsets = ag_xcalloc(1, sizeof *w->offsets, "shard offsets");

    // Root-group times are off too (the file-creation list is also a group-creation list).
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE), fapl = H5Pcreate(H5P_FILE_ACCESS);
    bool ok = fcpl >= 0 && fapl >= 0 && H5Pset_obj_track_times(fcpl, 0) >= 0 &&
              H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) >= 0;
    if (ok) ok = (w->file = H5Fcreate(w->tmp, H5F_ACC_TRUNC, fcpl, fapl)) >= 0;
    if (!ok) ds_h5_capture();
    if (fcpl >= 0) (void)H5Pclose(fcpl);
    if (fapl >= 0) (void)H5Pclose(fapl);
    if (!ok) ds_wfail(w, "cannot create the file");
    if ((w->f16 = ds_f16_type()) < 0 || (w->str = ds_str_type()) < 0) {
        ds_h5_capture();
        ds_wfail(w, "cannot build the float16 / string types");
    }
    return w;
}

static void ds_w_row_dims(const ds_shard_writer *w, int k, hsize_t *dims, int *rank) {
    const ds_shard_layout *l = &w->layout;
    *rank = ds_row_dims(k, l->image_size, l->video_frames, l->video_size, l->audio_clips,
                        l->audio_frames, l->audio_mels, dims);
}

// Appends one row to media dataset k (created on first use), one row per chunk.
static int32_t ds_w_add_row(ds_shard_writer *w, int k, hid_t mtype, const void *data) {
    hsize_t dims[5], maxd[5], chunk[5], start[5] = {0};
    int rank;
    ds_w_row_dims(w, k, dims + 1, &rank);
    rank += 1;
    if (ds_row_elems(rank - 1, dims + 1) == 0)
        ds_wfail(w, "dataset '%s': the shard layout has no %ss (a size is 0)", ds_media[k].data,
                 ds_media[k].kind);
    if (!data) ds_wfail(w, "dataset '%s': NULL row data", ds_media[k].data);
    if (w->rows[k] >= INT32_MAX) ds_wfail(w, "dataset '%s': too many rows", ds_media[k].data);
    if (w->media[k] < 0) {
        for (int i = 1; i < rank; i++) maxd[i] = chunk[i] = dims[i];
        dims[0] = 0, maxd[0] = H5S_UNLIMITED, chunk[0] = 1;
        w->media[k] = ds_w_create(w, ds_media[k].data, k == 2 ? w->f16 : H5T_STD_U8LE, rank, dims,
                                  maxd, chunk, k == 2 ? w->level : w->pixel_level);
    }
    int64_t row = w->rows[k];
    dims[0] = (hsize_t)row + 1;
    start[0] = (hsize_t)row;
    hsize_t count[5];
    memcpy(count, dims, sizeof count);
    count[0] = 1;
    hid_t fs = H5I_INVALID_HID, ms = H5I_INVALID_HID;
    bool ok = H5Dset_extent(w->media[k], dims) >= 0 && (fs = H5Dget_space(w->media[k])) >= 0 &&
              H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) >= 0 &&
              (ms = H5Screate_simple(rank, count, NULL)) >= 0 &&
              H5Dwrite(w->media[k], mtype, ms, fs, H5P_DEFAULT, data) >= 0;
    if (!ok) ds_h5_capture();
    if (ms >= 0) (void)H5Sclose(ms);
    if (fs >= 0) (void)H5Sclose(fs);
    if (!ok) ds_wfail(w, "dataset '%s': row %lld: write failed", ds_media[k].data, (long long)row);
    if (row >= w->row_cap[k]) { // durations pick the capacity; image sizes (two a row) follow
        w->duration[k] =
            ag_xgrow(w->duration[k], &w->row_cap[k], row + 1, sizeof(float), "shard rows");
        if (k == 0) w->img_size = ds_grow(w->img_size, 2 * w->row_cap[k], 4, "shard rows");
    }
    w->rows[k]++;
    return (int32_t)row;
}

int32_t ds_shard_add_image(ds_shard_writer *w, const uint8_t *rgb, int32_t width, int32_t height) {
    if (width <= 0 || height <= 0)
        ds_wfail(w, "dataset 'image_orig_size': row %lld: size %dx%d is not positive",
                 (long long)w->rows[0], width, height);
    int32_t row = ds_w_add_row(w, 0, H5T_NATIVE_UINT8, rgb);
    w->img_size[2 * row] = width, w->img_size[2 * row + 1] = height;
    return row;
}

int32_t ds_shard_add_video(ds_shard_writer *w, const uint8_t *frames, float duration) {
    if (!(duration > 0.0f) || !isfinite(duration)) // what the reader accepts
        ds_wfail(w, "dataset 'video_duration': row %lld: duration %g is not a positive number",
                 (long long)w->rows[1], (double)duration);
    int32_t row = ds_w_add_row(w, 1, H5T_NATIVE_UINT8, frames);
    w->duration[1][row] = duration;
    return row;
}

int32_t ds_shard_add_audio(ds_shard_writer *w, const float *fbank, float duration) {
    if (!(duration > 0.0f) || !isfinite(duration))
        ds_wfail(w, "dataset 'audio_duration': row %lld: duration %g is not a positive number",
                 (long long)w->rows[2], (double)duration);
    hsize_t dims[4];
    int rank;
    ds_w_row_dims(w, 2, dims, &rank);
    size_t n = ds_row_elems(rank, dims);
    if (n > 0 && fbank) {
        if (!w->half) w->half = ag_xmalloc(n * sizeof *w->half, "audio row");
        for (size_t i = 0; i < n; i++) w->half[i] = ds_f16_from_f32(fbank[i]);
        // The reader refuses non-finite values, and |x| >= 65520 becomes inf in float16.
        for (size_t i = 0; i < n; i++)
            if (!ds_f16_finite(w->half[i]))
                ds_wfail(w, "dataset 'audios': row %lld: element %zu is %g (%s as float16)",
                         (long long)w->rows[2], i, (double)fbank[i],
                         ds_f16_nonfinite_name(w->half[i]));
    }
    // The converted row is written with the file's own type: no HDF5 conversion happens.
    int32_t row = ds_w_add_row(w, 2, w->f16, fbank ? (const void *)w->half : NULL);
    w->duration[2][row] = duration;
    return row;
}

int64_t ds_shard_add_sample(ds_shard_writer *w, const ds_sample *s) {
    long long i = (long long)w->n;
    if (!s) ds_wfail(w, "sample %lld: NULL sample", i);
    if (s->length < 0 || (s->length > 0 && (!s->tokens || !s->loss_mask)))
        ds_wfail(w, "sample %lld: no tokens or loss mask for length %lld", i, (long long)s->length);
    for (int64_t t = 0; t < s->length; t++) {
        if (s->loss_mask[t] > 1)
            ds_wfail(w, "sample %lld: loss_mask[%lld] is %d (expected 0 or 1)", i, (long long)t,
                     s->loss_mask[t]);
        if (s->tokens[t] < 0)
            ds_wfail(w, "sample %lld: token %lld is %d (ids are >= 0)", i, (long long)t,
                     (int)s->tokens[t]);
    }
    const int32_t refs[DS_NMEDIA] = {s->image, s->video, s->audio};
    for (int k = 0; k < DS_NMEDIA; k++)
        if (refs[k] < -1 || refs[k] >= w->rows[k])
            ds_wfail(w, "sample %lld: %s row %d out of range (%lld rows so far)", i,
                     ds_media[k].kind, refs[k], (long long)w->rows[k]);
    if (s->task < 0 || s->task >= DS_NTASKS)
        ds_wfail(w, "sample %lld: unknown task %d", i, s->task);
    if (s->granularity != 0 && s->granularity != 1)
        ds_wfail(w, "sample %lld: granularity %d is not 0 or 1", i, s->granularity);
    if (!s->source || !s->source[0] || !ds_utf8_valid(s->source))
        ds_wfail(w, "sample %lld: source name missing or not UTF-8", i);
    if (!s->meta || !ds_utf8_valid(s->meta))
        ds_wfail(w, "sample %lld: meta missing or not UTF-8", i);
    cJSON *json = cJSON_ParseWithOpts(s->meta, NULL, 1);
    bool is_object = cJSON_IsObject(json);
    cJSON_Delete(json);
    if (!is_object) ds_wfail(w, "sample %lld: meta is not a JSON object", i);

    int src = 0;
    while (src < w->n_sources && strcmp(w->sources[src], s->source) != 0) src++;
    if (src == w->n_sources) {
        if (src >= DS_MAX_SOURCES) ds_wfail(w, "sample %lld: more than 65535 sources", i);
        if (src == w->sources_cap) { // names pick the capacity; counts, alongside, follow
            w->sources =
                ag_xgrow(w->sources, &w->sources_cap, src + 1, sizeof *w->sources, "shard sources");
            w->source_counts =
                ds_grow(w->source_counts, w->sources_cap, sizeof(int64_t), "shard sources");
        }
        w->sources[src] = ag_xstrdup(s->source);
        w->source_counts[src] = 0;
        w->n_sources++;
    }
    w->source_counts[src]++;

    if (w->n_tok + s->length > w->tok_cap) { // tokens pick the capacity; mask follows
        w->tokens = ag_xgrow(w->tokens, &w->tok_cap, w->n_tok + s->length, sizeof *w->tokens,
                             "shard tokens");
        w->mask = ds_grow(w->mask, w->tok_cap, 1, "shard tokens");
    }
    if (s->length > 0) {
        memcpy(w->tokens + w->n_tok, s->tokens, (size_t)s->length * sizeof *w->tokens);
        memcpy(w->mask + w->n_tok, s->loss_mask, (size_t)s->length);
    }
    w->n_tok += s->length;

    if (w->n == w->cap) { // meta picks the capacity; the other per-sample arrays follow
        w->meta = ag_xgrow(w->meta, &w->cap, w->n + 1, sizeof *w->meta, "shard samples");
        w->offsets = ds_grow(w->offsets, w->cap + 1, sizeof *w->offsets, "shard samples");
        for (int k = 0; k < DS_NMEDIA; k++)
            w->ref[k] = ds_grow(w->ref[k], w->cap, sizeof(int32_t), "shard samples");
        w->task = ds_grow(w->task, w->cap, 1, "shard samples");
        w->gran = ds_grow(w->gran, w->cap, 1, "shard samples");
        w->src = ds_grow(w->src, w->cap, sizeof *w->src, "shard samples");
    }
    int64_t n = w->n;
    w->offsets[n + 1] = w->n_tok;
    for (int k = 0; k < DS_NMEDIA; k++) w->ref[k][n] = refs[k];
    w->task[n] = (uint8_t)s->task;
    w->gran[n] = (uint8_t)s->granularity;
    w->src[n] = (uint16_t)src;
    w->meta[n] = ag_xstrdup(s->meta);
    w->n++;
    return n;
}

static void ds_w_attr(ds_shard_writer *w, const char *name, hid_t ftype, hid_t mtype, int rank,
                      hsize_t n, const void *value) {
    hid_t space = rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, NULL);
    hid_t a = space >= 0 ? H5Acreate2(w->file, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT)
                         : H5I_INVALID_HID;
    bool ok = a >= 0 && (n == 0 || H5Awrite(a, mtype, value) >= 0);
    if (!ok) ds_h5_capture();
    if (a >= 0 && H5Aclose(a) < 0 && ok) ok = false, ds_h5_capture();
    if (space >= 0) (void)H5Sclose(space);
    if (!ok) ds_wfail(w, "attribute '%s': write failed", name);
}

static void ds_w_attr_i32(ds_shard_writer *w, const char *name, int32_t v) {
    ds_w_attr(w, name, H5T_STD_I32LE, H5T_NATIVE_INT32, 0, 1, &v);
}

void ds_shard_finish(ds_shard_writer *w, ds_shard_info *out) {
    hsize_t n = (hsize_t)w->n, ntok = (hsize_t)w->n_tok, np1 = n + 1;
    ds_w_array(w, "tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &ntok, w->tokens);
    ds_w_array(w, "loss_mask", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, &ntok, w->mask);
    ds_w_array(w, "offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &np1, w->offsets);
    for (int k = 0; k < DS_NMEDIA; k++)
        ds_w_array(w, ds_media[k].ref, H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &n, w->ref[k]);
    ds_w_array(w, "sample_task", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, &n, w->task);
    ds_w_array(w, "sample_granularity", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, &n, w->gran);
    ds_w_array(w, "sample_source", H5T_STD_U16LE, H5T_NATIVE_UINT16, 1, &n, w->src);
    ds_w_array(w, "sample_meta", w->str, w->str, 1, &n, w->meta);

    hsize_t sizes[2] = {(hsize_t)w->rows[0], 2};
    ds_w_array(w, "image_orig_size", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, sizes, w->img_size);
    for (int k = 1; k < DS_NMEDIA; k++) {
        hsize_t rows = (hsize_t)w->rows[k];
        ds_w_array(w, ds_media[k].rowmeta, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, &rows,
                   w->duration[k]);
    }
    // A kind without rows gets an empty dataset whose row shape is all zeros (images keep
    // their 3 channels), matching the zero sizes in the root attributes.
    for (int k = 0; k < DS_NMEDIA; k++) {
        if (w->media[k] >= 0) {
            if (H5Dclose(w->media[k]) < 0) {
                w->media[k] = H5I_INVALID_HID;
                ds_h5_capture();
                ds_wfail(w, "dataset '%s': write failed", ds_media[k].data);
            }
            w->media[k] = H5I_INVALID_HID;
            continue;
        }
        hsize_t dims[5] = {0};
        int rank = ds_row_dims(k, 0, 0, 0, 0, 0, 0, dims + 1) + 1;
        if (k < 2) dims[rank - 1] = 3;
        hid_t d = ds_w_create(w, ds_media[k].data, k == 2 ? w->f16 : H5T_STD_U8LE, rank, dims, NULL,
                              NULL, 0);
        if (H5Dclose(d) < 0) {
            ds_h5_capture();
            ds_wfail(w, "dataset '%s': write failed", ds_media[k].data);
        }
    }

    const ds_shard_layout *l = &w->layout;
    bool img = w->rows[0] > 0, vid = w->rows[1] > 0, aud = w->rows[2] > 0;
    int64_t ns = w->n;
    ds_w_attr_i32(w, "schema_version", DS_SHARD_SCHEMA_VERSION);
    const char *digest = w->digest;
    ds_w_attr(w, "tokenizer_digest", w->str, w->str, 0, 1, &digest);
    ds_w_attr(w, "num_samples", H5T_STD_I64LE, H5T_NATIVE_INT64, 0, 1, &ns);
    ds_w_attr_i32(w, "image_size", img ? l->image_size : 0);
    ds_w_attr_i32(w, "video_frames", vid ? l->video_frames : 0);
    ds_w_attr_i32(w, "video_size", vid ? l->video_size : 0);
    ds_w_attr_i32(w, "audio_clips", aud ? l->audio_clips : 0);
    ds_w_attr_i32(w, "audio_frames", aud ? l->audio_frames : 0);
    ds_w_attr_i32(w, "audio_mels", aud ? l->audio_mels : 0);
    ds_w_attr(w, "sources", w->str, w->str, 1, (hsize_t)w->n_sources, w->sources);

    (void)H5Tclose(w->f16);
    (void)H5Tclose(w->str);
    w->f16 = w->str = H5I_INVALID_HID;
    herr_t closed = H5Fclose(w->file);
    w->file = H5I_INVALID_HID;
    if (closed < 0) {
        ds_h5_capture();
        ds_wfail(w, "closing the file failed");
    }

    ds_shard_info info = {0};
    char err[256];
    if (!ds_sha256(w->tmp, info.sha256, &info.bytes, err, sizeof err)) ds_wfail(w, "%s", err);
    // Data on disk before the rename, and the rename itself on disk after: a crash leaves
    // either the old PATH or the complete new one.
    int fd = open(w->tmp, O_RDONLY);
    if (fd < 0 || fsync(fd) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        ds_wfail(w, "fsync failed: %s", strerror(e));
    }
    close(fd);
    if (rename(w->tmp, w->path) != 0)
        ds_wfail(w, "rename to %s failed: %s", w->path, strerror(errno));
    ag_sync_parent(w->path);

    if (out) {
        info.num_samples = w->n;
        info.num_tokens = w->n_tok;
        info.num_images = w->rows[0], info.num_videos = w->rows[1], info.num_audios = w->rows[2];
        for (int64_t i = 0; i < w->n; i++) info.task_counts[w->task[i]]++;
        info.num_sources = w->n_sources;
        info.source_names = w->sources; // handed over, not copied
        info.source_counts = w->source_counts;
        w->sources = NULL, w->source_counts = NULL, w->n_sources = 0;
        *out = info;
    }
    free(w->tmp); // renamed: nothing to remove any more
    w->tmp = NULL;
    ds_w_free(w);
}

void ds_shard_abort(ds_shard_writer *w) {
    if (!w) return;
    ds_w_release(w);
    ds_w_free(w);
}

// ---------------------------------------------------------------------------------------
// reader

struct ds_shard {
    char *path;
    bool opening; // failures during open release the handle before reporting
    hid_t file, tokens, mask, meta, f16, str;
    hid_t media[DS_NMEDIA];
    bool absent[DS_NMEDIA]; // the media dataset is not in the file (no rows of that kind)
    ds_shard_header h;
    int64_t *offsets;
    int32_t *ref[DS_NMEDIA];
    uint8_t *task, *gran;
    uint16_t *src;
    int32_t *img_size;
    float *duration[DS_NMEDIA];
    char **sources;
    uint16_t *half; // one audio row, for the float16 -> float32 conversion
};

static int64_t ds_hdr_rows(const ds_shard_header *h, int k) {
    return k == 0 ? h->num_images : k == 1 ? h->num_videos : h->num_audios;
}

static int ds_hdr_row_dims(const ds_shard_header *h, int k, hsize_t *dims) {
    return ds_row_dims(k, h->image_size, h->video_frames, h->video_size, h->audio_clips,
                       h->audio_frames, h->audio_mels, dims);
}

void ds_shard_close(ds_shard *s) {
    if (!s) return;
    ds_close_id(&s->tokens), ds_close_id(&s->mask), ds_close_id(&s->meta);
    for (int k = 0; k < DS_NMEDIA; k++) ds_close_id(&s->media[k]);
    if (s->f16 >= 0) (void)H5Tclose(s->f16);
    if (s->str >= 0) (void)H5Tclose(s->str);
    if (s->file >= 0) (void)H5Fclose(s->file);
    if (s->sources)
        for (int i = 0; i < s->h.num_sources; i++) free(s->sources[i]);
    free(s->sources), free(s->offsets), free(s->task), free(s->gran), free(s->src);
    free(s->img_size), free(s->half);
    for (int k = 0; k < DS_NMEDIA; k++) free(s->ref[k]), free(s->duration[k]);
    free(s->path);
    free(s);
}

// Fails naming the file; during open the handle is released first (the caller never got it).
__attribute__((noreturn, format(printf, 2, 3))) static void ds_rfail(ds_shard *s, const char *fmt,
                                                                     ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    ds_format(msg, sizeof msg, s->path, fmt, ap);
    va_end(ap);
    if (s->opening) ds_shard_close(s);
    ag_fail("%s", msg);
}

// h5py stores numpy bool as an enum of int8 with members FALSE = 0 and TRUE = 1.
static bool ds_is_h5py_bool(hid_t t) {
    if (H5Tget_class(t) != H5T_ENUM || H5Tget_nmembers(t) != 2) return false;
    bool ok = true;
    for (unsigned i = 0; i < 2 && ok; i++) {
        char *name = H5Tget_member_name(t, i);
        ok = name && strcmp(name, i ? "TRUE" : "FALSE") == 0;
        H5free_memory(name);
    }
    return ok;
}

// The element type in words, as numpy / h5py users know them.
static void ds_type_desc(hid_t t, char *buf, size_t n) {
    H5T_class_t c = H5Tget_class(t);
    size_t size = H5Tget_size(t);
    if (c == H5T_INTEGER)
        snprintf(buf, n, "%sint%zu", H5Tget_sign(t) == H5T_SGN_NONE ? "u" : "", 8 * size);
    else if (c == H5T_FLOAT)
        snprintf(buf, n, "float%zu", 8 * size);
    else if (c == H5T_STRING)
        snprintf(buf, n, "%s string",
                 H5Tis_variable_str(t) > 0 ? "variable-length" : "fixed-length");
    else if (c == H5T_ENUM)
        snprintf(buf, n, "%s", ds_is_h5py_bool(t) ? "enum (h5py bool)" : "enum");
    else if (c == H5T_COMPOUND)
        snprintf(buf, n, "compound (numpy structured)");
    else if (c == H5T_BITFIELD)
        snprintf(buf, n, "bitfield");
    else if (c == H5T_OPAQUE)
        snprintf(buf, n, "opaque (raw bytes)");
    else if (c == H5T_REFERENCE)
        snprintf(buf, n, "object reference");
    else if (c == H5T_VLEN)
        snprintf(buf, n, "variable-length sequence");
    else if (c == H5T_ARRAY)
        snprintf(buf, n, "array");
    else
        snprintf(buf, n, "HDF5 class %d", (int)c);
}

// A dataset compressed with a filter this build cannot run fails at open, by name: HDF5 would
// only say "required filter is not registered" at the first read, which looks like damage.
static void ds_r_check_filters(ds_shard *s, hid_t d, const char *name) {
    hid_t dcpl = H5Dget_create_plist(d);
    int nf = dcpl >= 0 ? H5Pget_nfilters(dcpl) : 0;
    char bad[80] = "";
    for (int i = 0; i < nf && !bad[0]; i++) {
        unsigned flags = 0, cd[16];
        size_t ncd = 16;
        char fname[64] = "";
        H5Z_filter_t id =
            H5Pget_filter2(dcpl, (unsigned)i, &flags, &ncd, cd, sizeof fname, fname, NULL);
        if (id >= 0 && H5Zfilter_avail(id) > 0) continue;
        if (fname[0])
            snprintf(bad, sizeof bad, "'%s' (id %d)", fname, (int)id);
        else
            snprintf(bad, sizeof bad, "id %d", (int)id);
    }
    if (dcpl >= 0) (void)H5Pclose(dcpl);
    ds_h5_msg[0] = 0; // H5Zfilter_avail's failed plugin search is no reason to report
    if (!bad[0]) return;
    (void)H5Dclose(d);
    ds_rfail(s,
             "dataset '%s': compressed with filter %s, which groundc does not read (zstd, gzip "
             "or none)",
             name, bad);
}

// Opens dataset `name`, checks its element type (class, size in bytes, signedness for
// integers; size 0 = variable-length string) and rank, and returns its dims.
static hid_t ds_r_open(ds_shard *s, const char *name, H5T_class_t cls, size_t size, bool is_signed,
                       int rank, hsize_t *dims, size_t cache_bytes) {
    htri_t exists = H5Lexists(s->file, name, H5P_DEFAULT);
    if (exists < 0) { // (the lookup itself failed: the file's index is unreadable)
        ds_h5_capture();
        ds_rfail(s, "dataset '%s': cannot look it up in the file's metadata (a damaged shard?)",
                 name);
    }
    if (exists == 0) // (damaged metadata can hide a link without an HDF5 error)
        ds_rfail(s, "dataset '%s' missing (not in the file, or its metadata is damaged)", name);
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS), d = H5I_INVALID_HID;
    bool ok = dapl >= 0;
    if (ok && cache_bytes) ok = H5Pset_chunk_cache(dapl, DS_CACHE_SLOTS, cache_bytes, 1.0) >= 0;
    if (ok) ok = (d = H5Dopen2(s->file, name, dapl)) >= 0;
    if (!ok) ds_h5_capture();
    if (dapl >= 0) (void)H5Pclose(dapl);
    if (!ok) ds_rfail(s, "dataset '%s': cannot open", name);
    ds_r_check_filters(s, d, name);

    hid_t t = H5Dget_type(d), space = H5Dget_space(d);
    if (t < 0 || space < 0) {
        ds_h5_capture();
        if (t >= 0) (void)H5Tclose(t);
        if (space >= 0) (void)H5Sclose(space);
        (void)H5Dclose(d);
        ds_rfail(s, "dataset '%s': cannot read its type or shape", name);
    }
    bool type_ok = H5Tget_class(t) == cls;
    if (type_ok && cls == H5T_STRING)
        type_ok = H5Tis_variable_str(t) > 0;
    else if (type_ok)
        type_ok = H5Tget_size(t) == size;
    if (type_ok && cls == H5T_INTEGER) type_ok = (H5Tget_sign(t) == H5T_SGN_2) == is_signed;
    if (type_ok && cls == H5T_FLOAT && size == 2) { // binary16, not some other 16-bit float
        size_t spos, epos, esize, mpos, msize;
        type_ok = H5Tget_fields(t, &spos, &epos, &esize, &mpos, &msize) >= 0 && spos == 15 &&
                  epos == 10 && esize == 5 && mpos == 0 && msize == 10 && H5Tget_ebias(t) == 15;
    }
    char found[64];
    ds_type_desc(t, found, sizeof found);
    (void)H5Tclose(t);
    int r = H5Sget_simple_extent_ndims(space);
    bool dims_ok = r == rank && H5Sget_simple_extent_dims(space, dims, NULL) == rank;
    (void)H5Sclose(space);
    if (!type_ok || !dims_ok) (void)H5Dclose(d);
    if (!type_ok) {
        char want[64];
        if (cls == H5T_STRING)
            snprintf(want, sizeof want, "variable-length string");
        else if (cls == H5T_FLOAT)
            snprintf(want, sizeof want, "float%zu", 8 * size);
        else
            snprintf(want, sizeof want, "%sint%zu", is_signed ? "" : "u", 8 * size);
        ds_rfail(s, "dataset '%s': element type %s, expected %s", name, found, want);
    }
    if (!dims_ok) ds_rfail(s, "dataset '%s': rank %d, expected %d", name, r, rank);
    return d;
}

static bool ds_r_exists(ds_shard *s, const char *name) {
    htri_t exists = H5Lexists(s->file, name, H5P_DEFAULT);
    if (exists < 0) {
        ds_h5_capture();
        ds_rfail(s, "dataset '%s': cannot look it up", name);
    }
    return exists > 0;
}

static void ds_r_expect_len(ds_shard *s, const char *name, hsize_t got, int64_t want,
                            const char *what) {
    if ((int64_t)got != want)
        ds_rfail(s, "dataset '%s': %lld entries, expected %lld (%s)", name, (long long)got,
                 (long long)want, what);
}

// Reads a whole small dataset into buf (allocated here, n elements of elem bytes) and closes it.
static void *ds_r_all(ds_shard *s, hid_t d, const char *name, hid_t mtype, int64_t n, size_t elem) {
    void *buf = ag_xmalloc(n > 0 ? (size_t)n * elem : 1, name);
    if (n > 0 && H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        ds_h5_capture();
        free(buf);
        (void)H5Dclose(d);
        ds_rfail(s, "dataset '%s': read failed (corrupt or truncated chunk?)", name);
    }
    (void)H5Dclose(d);
    return buf;
}

// One hyperslab of a dataset into buf: start/count per dimension; dxpl may be H5P_DEFAULT.
static bool ds_r_slab_x(hid_t d, hid_t mtype, int rank, const hsize_t *start, const hsize_t *count,
                        hid_t dxpl, void *buf) {
    hid_t fs = H5Dget_space(d), ms = H5I_INVALID_HID;
    bool ok = fs >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) >= 0 &&
              (ms = H5Screate_simple(rank, count, NULL)) >= 0 &&
              H5Dread(d, mtype, ms, fs, dxpl, buf) >= 0;
    if (!ok) ds_h5_capture();
    if (ms >= 0) (void)H5Sclose(ms);
    if (fs >= 0) (void)H5Sclose(fs);
    return ok;
}

static bool ds_r_slab(hid_t d, hid_t mtype, int rank, const hsize_t *start, const hsize_t *count,
                      void *buf) {
    return ds_r_slab_x(d, mtype, rank, start, count, H5P_DEFAULT, buf);
}

// Fails unless the file has attribute name (a failed lookup: its metadata is damaged).
static void ds_r_need_attr(ds_shard *s, const char *name) {
    htri_t exists = H5Aexists(s->file, name);
    if (exists < 0) {
        ds_h5_capture();
        ds_rfail(s, "attribute '%s': cannot look it up in the file's metadata (a damaged shard?)",
                 name);
    }
    if (exists == 0) ds_rfail(s, "attribute '%s' missing", name);
}

static int64_t ds_r_attr_int(ds_shard *s, const char *name) {
    ds_r_need_attr(s, name);
    hid_t a = H5Aopen(s->file, name, H5P_DEFAULT), t = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    int64_t v = 0;
    bool ok = a >= 0 && (t = H5Aget_type(a)) >= 0 && (sp = H5Aget_space(a)) >= 0;
    bool shape_ok = ok && H5Tget_class(t) == H5T_INTEGER && H5Sget_simple_extent_npoints(sp) == 1;
    if (shape_ok) ok = H5Aread(a, H5T_NATIVE_INT64, &v) >= 0;
    if (!ok) ds_h5_capture();
    if (sp >= 0) (void)H5Sclose(sp);
    if (t >= 0) (void)H5Tclose(t);
    if (a >= 0) (void)H5Aclose(a);
    if (!ok) ds_rfail(s, "attribute '%s': read failed", name);
    if (!shape_ok) ds_rfail(s, "attribute '%s': not a single integer", name);
    return v;
}

static int32_t ds_r_attr_size(ds_shard *s, const char *name) {
    int64_t v = ds_r_attr_int(s, name);
    if (v < 0 || v > INT32_MAX)
        ds_rfail(s, "attribute '%s': %lld out of range", name, (long long)v);
    return (int32_t)v;
}

// Reads a string attribute (scalar or 1-D; variable- or fixed-length) into malloc'd strings.
static char **ds_r_attr_strings(ds_shard *s, const char *name, int64_t *count) {
    ds_r_need_attr(s, name);
    hid_t a = H5Aopen(s->file, name, H5P_DEFAULT), t = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    bool ok = a >= 0 && (t = H5Aget_type(a)) >= 0 && (sp = H5Aget_space(a)) >= 0;
    hssize_t n = ok ? H5Sget_simple_extent_npoints(sp) : -1;
    bool is_str =
        ok && H5Tget_class(t) == H5T_STRING && n >= 0 && H5Sget_simple_extent_ndims(sp) <= 1;
    bool vlen = is_str && H5Tis_variable_str(t) > 0;
    size_t fixed = is_str && !vlen ? H5Tget_size(t) : 0;
    char **out = is_str ? ag_xcalloc((size_t)n + 1, sizeof *out, name) : NULL;
    if (is_str && n > 0) {
        hid_t mt = vlen ? H5Tcopy(s->str) : H5Tcopy(H5T_C_S1);
        // HDF5 has no conversion between character sets: read in the attribute's own set
        if (mt < 0 || (!vlen && H5Tset_size(mt, fixed + 1) < 0) ||
            H5Tset_cset(mt, H5Tget_cset(t)) < 0)
            ok = false;
        if (ok && vlen) {
            ok = H5Aread(a, mt, out) >= 0;
            if (ok) { // copy out of HDF5's allocations, then hand those back
                char **raw = out;
                out = ag_xcalloc((size_t)n + 1, sizeof *out, name);
                for (hssize_t i = 0; i < n; i++) out[i] = ag_xstrdup(raw[i] ? raw[i] : "");
                ds_vlen_reclaim(mt, sp, raw);
                free(raw);
            }
        } else if (ok) {
            char *flat = ag_xcalloc((size_t)n, fixed + 1, name);
            ok = H5Aread(a, mt, flat) >= 0;
            for (hssize_t i = 0; ok && i < n; i++)
                out[i] = ag_xstrdup(flat + (size_t)i * (fixed + 1));
            free(flat);
        }
        if (!ok) ds_h5_capture();
        if (mt >= 0) (void)H5Tclose(mt);
    }
    if (sp >= 0) (void)H5Sclose(sp);
    if (t >= 0) (void)H5Tclose(t);
    if (a >= 0) (void)H5Aclose(a);
    if (!ok || !is_str) {
        if (out)
            for (hssize_t i = 0; i < n; i++) free(out[i]);
        free(out);
        ds_rfail(s, "attribute '%s': %s", name,
                 ok ? "not a string or list of strings" : "read failed");
    }
    *count = n;
    return out;
}

// An integer array with one entry per sample, loaded whole.
static void *ds_r_per_sample(ds_shard *s, const char *name, size_t size, bool is_signed,
                             hid_t mtype) {
    hsize_t dims[1];
    int64_t n = s->h.num_samples;
    hid_t d = ds_r_open(s, name, H5T_INTEGER, size, is_signed, 1, dims, 0);
    if ((int64_t)dims[0] != n) (void)H5Dclose(d);
    ds_r_expect_len(s, name, dims[0], n, "one per sample");
    return ds_r_all(s, d, name, mtype, n, size);
}

ds_shard *ds_shard_open(const char *path) {
    ds_h5_init();
    ds_shard *s = ag_xcalloc(1, sizeof *s, "shard");
    s->path = ag_xstrdup(path);
    s->opening = true;
    s->file = s->tokens = s->mask = s->meta = s->f16 = s->str = H5I_INVALID_HID;
    for (int k = 0; k < DS_NMEDIA; k++) s->media[k] = H5I_INVALID_HID;
    struct stat st;
    if (stat(path, &st) != 0) ds_rfail(s, "cannot open: %s", strerror(errno));
    if (!S_ISREG(st.st_mode)) ds_rfail(s, "not a regular file");

    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    bool ok = fapl >= 0 && H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) >= 0;
    if (ok) ok = (s->file = H5Fopen(path, H5F_ACC_RDONLY, fapl)) >= 0;
    if (!ok) ds_h5_capture();
    if (fapl >= 0) (void)H5Pclose(fapl);
    if (!ok) ds_rfail(s, "cannot open as HDF5 (not a shard, or truncated?)");
    if ((s->f16 = ds_f16_type()) < 0 || (s->str = ds_str_type()) < 0) {
        ds_h5_capture();
        ds_rfail(s, "cannot build the float16 / string types");
    }

    // The version comes first: a newer layout must be refused as such, not as a missing field.
    ds_shard_header *h = &s->h;
    int64_t version = ds_r_attr_int(s, "schema_version");
    if (version != DS_SHARD_SCHEMA_VERSION)
        ds_rfail(s, "schema_version %lld, this build reads %d", (long long)version,
                 DS_SHARD_SCHEMA_VERSION);
    h->schema_version = (int32_t)version;
    int64_t count = 0;
    char **digest = ds_r_attr_strings(s, "tokenizer_digest", &count);
    // Other tools may write uppercase hex; groundc compares lowercase.
    bool digest_ok = count == 1 && ds_sha256_hex_lower(digest[0], h->tokenizer_digest);
    for (int64_t i = 0; i < count; i++) free(digest[i]);
    free(digest);
    if (!digest_ok) ds_rfail(s, "attribute 'tokenizer_digest': not a 64-digit hex SHA-256");
    h->num_samples = ds_r_attr_int(s, "num_samples");
    // offsets holds num_samples + 1 int64 entries: bound it so that count and size cannot overflow
    if (h->num_samples < 0 || h->num_samples >= INT64_MAX / 8)
        ds_rfail(s, "attribute 'num_samples': %lld out of range", (long long)h->num_samples);
    h->image_size = ds_r_attr_size(s, "image_size");
    h->video_frames = ds_r_attr_size(s, "video_frames");
    h->video_size = ds_r_attr_size(s, "video_size");
    h->audio_clips = ds_r_attr_size(s, "audio_clips");
    h->audio_frames = ds_r_attr_size(s, "audio_frames");
    h->audio_mels = ds_r_attr_size(s, "audio_mels");
    // A sample's media row is allocated per batch slot from these: bound it (1 GiB, a thousand
    // times the 7B model's video row) so that no product of them can wrap.
    const int64_t geom[3][4] = {{h->image_size, h->image_size, 3, 1},
                                {h->video_frames, h->video_size, h->video_size, 3},
                                {h->audio_clips, h->audio_frames, h->audio_mels, 4}};
    static const char *const row_names[3] = {"image_size^2 x 3", "video_frames x video_size^2 x 3",
                                             "audio_clips x audio_frames x audio_mels x 4"};
    for (int r = 0; r < 3; r++) {
        uint64_t bytes = 1;
        bool over = false;
        for (int k = 0; k < 4; k++)
            over |= __builtin_mul_overflow(bytes, (uint64_t)geom[r][k], &bytes);
        if (over || bytes > ((uint64_t)1 << 30))
            ds_rfail(s, "attributes %s: more than 1 GiB of media per sample", row_names[r]);
    }
    s->sources = ds_r_attr_strings(s, "sources", &count);
    h->num_sources = (int)count;
    if (count > DS_MAX_SOURCES)
        ds_rfail(s, "attribute 'sources': %lld names (at most 65535)", (long long)count);

    int64_t n = h->num_samples;
    hsize_t dims[5];
    s->tokens = ds_r_open(s, "tokens", H5T_INTEGER, 4, true, 1, dims, DS_TOKEN_CACHE);
    h->num_tokens = (int64_t)dims[0];
    s->mask = ds_r_open(s, "loss_mask", H5T_INTEGER, 1, false, 1, dims, DS_TOKEN_CACHE);
    ds_r_expect_len(s, "loss_mask", dims[0], h->num_tokens, "one per token");
    hid_t d = ds_r_open(s, "offsets", H5T_INTEGER, 8, true, 1, dims, 0);
    if ((int64_t)dims[0] != n + 1) (void)H5Dclose(d);
    ds_r_expect_len(s, "offsets", dims[0], n + 1, "num_samples + 1");
    s->offsets = ds_r_all(s, d, "offsets", H5T_NATIVE_INT64, n + 1, sizeof(int64_t));
    if (s->offsets[0] != 0)
        ds_rfail(s, "dataset 'offsets': starts at %lld, not 0", (long long)s->offsets[0]);
    for (int64_t i = 0; i < n; i++) {
        if (s->offsets[i + 1] < s->offsets[i])
            ds_rfail(s, "dataset 'offsets': sample %lld: not monotone (%lld then %lld)",
                     (long long)i, (long long)s->offsets[i], (long long)s->offsets[i + 1]);
        // (readers hold a sample's tokens in memory: a damaged offset would ask for gigabytes)
        if (s->offsets[i + 1] - s->offsets[i] > DS_MAX_SAMPLE_TOKENS)
            ds_rfail(s, "dataset 'offsets': sample %lld holds %lld tokens, more than %d",
                     (long long)i, (long long)(s->offsets[i + 1] - s->offsets[i]),
                     DS_MAX_SAMPLE_TOKENS);
    }
    if (s->offsets[n] != h->num_tokens)
        ds_rfail(s, "dataset 'offsets': ends at %lld, but 'tokens' holds %lld",
                 (long long)s->offsets[n], (long long)h->num_tokens);

    // Per-sample arrays: small, loaded whole.
    for (int k = 0; k < DS_NMEDIA; k++)
        s->ref[k] = ds_r_per_sample(s, ds_media[k].ref, 4, true, H5T_NATIVE_INT32);
    s->task = ds_r_per_sample(s, "sample_task", 1, false, H5T_NATIVE_UINT8);
    s->gran = ds_r_per_sample(s, "sample_granularity", 1, false, H5T_NATIVE_UINT8);
    s->src = ds_r_per_sample(s, "sample_source", 2, false, H5T_NATIVE_UINT16);
    s->meta = ds_r_open(s, "sample_meta", H5T_STRING, 0, false, 1, dims, 0);
    ds_r_expect_len(s, "sample_meta", dims[0], n, "one per sample");
    hid_t meta_type = H5Dget_type(s->meta); // ASCII or UTF-8: read it in its own set (as above)
    bool cset_ok = meta_type >= 0 && H5Tset_cset(s->str, H5Tget_cset(meta_type)) >= 0;
    if (!cset_ok) ds_h5_capture();
    if (meta_type >= 0) (void)H5Tclose(meta_type);
    if (!cset_ok) ds_rfail(s, "dataset 'sample_meta': cannot read its character set");

    // Media: rows and their per-row metadata. A kind without rows may leave both datasets
    // out (other writers than pack do); its per-sample references must then all be -1.
    int64_t rows[DS_NMEDIA];
    for (int k = 0; k < DS_NMEDIA; k++) {
        hsize_t want[4];
        int rank = ds_hdr_row_dims(h, k, want);
        bool none = ds_row_elems(rank, want) == 0; // the root attributes say: no such media
        s->absent[k] = !ds_r_exists(s, ds_media[k].data);
        if (s->absent[k]) {
            rows[k] = 0;
        } else {
            s->media[k] =
                k == 2 ? ds_r_open(s, ds_media[k].data, H5T_FLOAT, 2, true, rank + 1, dims, 0)
                       : ds_r_open(s, ds_media[k].data, H5T_INTEGER, 1, false, rank + 1, dims, 0);
            rows[k] = (int64_t)dims[0];
        }
        if (rows[k] > 0 && none)
            ds_rfail(s, "dataset '%s': %lld rows but the root attributes give a zero size",
                     ds_media[k].data, (long long)rows[k]);
        for (int i = 0; rows[k] > 0 && i < rank; i++) // an empty dataset may have any row shape
            if (dims[i + 1] != want[i])
                ds_rfail(s, "dataset '%s': dimension %d is %llu, the root attributes say %llu",
                         ds_media[k].data, i + 1, (unsigned long long)dims[i + 1],
                         (unsigned long long)want[i]);
        if (rows[k] > INT32_MAX) ds_rfail(s, "dataset '%s': too many rows", ds_media[k].data);
        if (rows[k] == 0 && !ds_r_exists(s, ds_media[k].rowmeta)) {
            // nothing to load; ds_r_all's buffers stay NULL-free below
            if (k == 0)
                s->img_size = ag_xmalloc(1, "image_orig_size");
            else
                s->duration[k] = ag_xmalloc(1, ds_media[k].rowmeta);
            continue;
        }
        if (k == 0) {
            d = ds_r_open(s, "image_orig_size", H5T_INTEGER, 4, true, 2, dims, 0);
            if ((int64_t)dims[0] != rows[0] || dims[1] != 2) (void)H5Dclose(d);
            ds_r_expect_len(s, "image_orig_size", dims[0], rows[0], "one per image");
            if (dims[1] != 2)
                ds_rfail(s, "dataset 'image_orig_size': rows of %llu, expected 2",
                         (unsigned long long)dims[1]);
            s->img_size = ds_r_all(s, d, "image_orig_size", H5T_NATIVE_INT32, 2 * rows[0], 4);
            // Boxes are mapped back to pixels with these: a zero size maps every box to 0.
            for (int64_t r = 0; r < rows[0]; r++)
                if (s->img_size[2 * r] <= 0 || s->img_size[2 * r + 1] <= 0)
                    ds_rfail(s,
                             "dataset 'image_orig_size': row %lld: %d x %d is not a positive size",
                             (long long)r, s->img_size[2 * r], s->img_size[2 * r + 1]);
        } else {
            d = ds_r_open(s, ds_media[k].rowmeta, H5T_FLOAT, 4, true, 1, dims, 0);
            if ((int64_t)dims[0] != rows[k]) (void)H5Dclose(d);
            ds_r_expect_len(s, ds_media[k].rowmeta, dims[0], rows[k], "one per row");
            s->duration[k] = ds_r_all(s, d, ds_media[k].rowmeta, H5T_NATIVE_FLOAT, rows[k], 4);
            // Spans are normalised by these (seconds = t x duration): NaN or 0 silently
            // breaks every span of the row.
            for (int64_t r = 0; r < rows[k]; r++)
                if (!(s->duration[k][r] > 0.0f) || !isfinite(s->duration[k][r]))
                    ds_rfail(s,
                             "dataset '%s': row %lld: duration %g is not a positive number of "
                             "seconds",
                             ds_media[k].rowmeta, (long long)r, (double)s->duration[k][r]);
        }
    }
    h->num_images = rows[0], h->num_videos = rows[1], h->num_audios = rows[2];

    // Every reference in range.
    for (int64_t i = 0; i < n; i++) {
        for (int k = 0; k < DS_NMEDIA; k++)
            if (s->ref[k][i] < -1 || s->ref[k][i] >= rows[k])
                ds_rfail(s, "dataset '%s': sample %lld: %s row %d out of range (%lld rows%s%s%s)",
                         ds_media[k].ref, (long long)i, ds_media[k].kind, s->ref[k][i],
                         (long long)rows[k], s->absent[k] ? ": the shard has no '" : "",
                         s->absent[k] ? ds_media[k].data : "", s->absent[k] ? "' dataset" : "");
        if (s->task[i] >= DS_NTASKS)
            ds_rfail(s, "dataset 'sample_task': sample %lld: unknown task %d", (long long)i,
                     s->task[i]);
        if (s->gran[i] > 1)
            ds_rfail(s, "dataset 'sample_granularity': sample %lld: %d is not 0 or 1", (long long)i,
                     s->gran[i]);
        if (s->src[i] >= h->num_sources)
            ds_rfail(s, "dataset 'sample_source': sample %lld: source %d out of range (%d sources)",
                     (long long)i, s->src[i], h->num_sources);
    }
    s->opening = false;
    return s;
}

const char *ds_shard_path(const ds_shard *s) {
    return s->path;
}

const ds_shard_header *ds_shard_get_header(const ds_shard *s) {
    return &s->h;
}

int64_t ds_shard_num_samples(const ds_shard *s) {
    return s->h.num_samples;
}

static void ds_r_check_sample(const ds_shard *s, int64_t i) {
    if (i < 0 || i >= s->h.num_samples)
        ag_fail("%s: sample %lld out of range (%lld samples)", s->path, (long long)i,
                (long long)s->h.num_samples);
}

ds_sample_ref ds_shard_sample(const ds_shard *s, int64_t i) {
    ds_r_check_sample(s, i);
    ds_sample_ref r = {
        .start = s->offsets[i],
        .length = s->offsets[i + 1] - s->offsets[i],
        .image = s->ref[0][i],
        .video = s->ref[1][i],
        .audio = s->ref[2][i],
        .task = s->task[i],
        .granularity = s->gran[i],
        .source = s->src[i],
    };
    return r;
}

const char *ds_shard_source_name(const ds_shard *s, int source) {
    if (source < 0 || source >= s->h.num_sources)
        ag_fail("%s: source %d out of range (%d sources)", s->path, source, s->h.num_sources);
    return s->sources[source];
}

static void ds_r_check_range(const ds_shard *s, int64_t first, int64_t count) {
    if (first < 0 || count < 0 || first > s->h.num_samples || count > s->h.num_samples - first)
        ag_fail("%s: samples %lld..%lld out of range (%lld samples)", s->path, (long long)first,
                (long long)(first + count - 1), (long long)s->h.num_samples);
}

int64_t ds_shard_range_tokens(const ds_shard *s, int64_t first, int64_t count) {
    ds_r_check_range(s, first, count);
    return s->offsets[first + count] - s->offsets[first];
}

void ds_shard_read_tokens(ds_shard *s, int64_t first, int64_t count, int32_t *tokens,
                          uint8_t *loss_mask) {
    ds_h5_init();
    ds_r_check_range(s, first, count);
    hsize_t start = (hsize_t)s->offsets[first];
    hsize_t n = (hsize_t)(s->offsets[first + count] - s->offsets[first]);
    if (n == 0) return;
    char which[64];
    if (count == 1)
        snprintf(which, sizeof which, "sample %lld", (long long)first);
    else
        snprintf(which, sizeof which, "samples %lld..%lld", (long long)first,
                 (long long)(first + count - 1));
    if (!ds_r_slab(s->tokens, H5T_NATIVE_INT32, 1, &start, &n, tokens))
        ds_rfail(s, "dataset 'tokens': %s: read failed (corrupt or truncated chunk?)", which);
    if (loss_mask && !ds_r_slab(s->mask, H5T_NATIVE_UINT8, 1, &start, &n, loss_mask))
        ds_rfail(s, "dataset 'loss_mask': %s: read failed (corrupt or truncated chunk?)", which);
    // One pass, branch-free, then a second only to name the culprit: a mask of 2 would count
    // as 1 everywhere downstream, and a negative id indexes nothing.
    bool bad = false;
    for (hsize_t t = 0; t < n; t++) bad |= tokens[t] < 0;
    if (loss_mask)
        for (hsize_t t = 0; t < n; t++) bad |= loss_mask[t] > 1;
    if (!bad) return;
    for (hsize_t t = 0; t < n; t++) {
        bool neg = tokens[t] < 0, mask = loss_mask && loss_mask[t] > 1;
        if (!neg && !mask) continue;
        int64_t at = (int64_t)start + (int64_t)t, i = first;
        while (s->offsets[i + 1] <= at) i++; // the sample holding token t (empty ones skipped)
        if (neg)
            ds_rfail(s,
                     "dataset 'tokens': sample %lld: token id %d at position %lld (ids are >= 0)",
                     (long long)i, (int)tokens[t], (long long)(at - s->offsets[i]));
        ds_rfail(s, "dataset 'loss_mask': sample %lld: value %d at position %lld (expected 0 or 1)",
                 (long long)i, loss_mask[t], (long long)(at - s->offsets[i]));
    }
}

int64_t ds_shard_first_media_tokens(ds_shard *s, int kind, int32_t id,
                                    const ds_token_rules *check) {
    int64_t n = ds_shard_num_samples(s), i = 0;
    while (i < n && s->ref[kind][i] < 0) i++;
    if (i == n) return -1;
    int64_t len = ds_shard_range_tokens(s, i, 1), count = 0;
    int32_t *tok = ag_xmalloc((size_t)(len ? len : 1) * sizeof *tok, "sample tokens");
    ds_shard_read_tokens(s, i, 1, tok, NULL);
    char why[512];
    const int32_t media[3] = {s->ref[0][i], s->ref[1][i], s->ref[2][i]};
    // A damaged first sample would otherwise pass for a pack with another token count.
    if (check && !ds_sample_check(check, tok, len, media, NULL, why, sizeof why)) {
        free(tok);
        ag_fail("%s: sample %lld: %s", s->path, (long long)i, why);
    }
    for (int64_t t = 0; t < len; t++) count += tok[t] == id;
    free(tok);
    return count;
}

char *ds_shard_read_meta(ds_shard *s, int64_t i) {
    ds_h5_init();
    ds_r_check_sample(s, i);
    hsize_t start = (hsize_t)i, one = 1;
    char *raw = NULL;
    // HDF5 callocs a 1 MiB conversion buffer per read by default; one string needs far less.
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    if (dxpl >= 0 && H5Pset_buffer(dxpl, 4096, NULL, NULL) < 0) {
        (void)H5Pclose(dxpl);
        dxpl = H5I_INVALID_HID;
    }
    bool ok = ds_r_slab_x(s->meta, s->str, 1, &start, &one, dxpl >= 0 ? dxpl : H5P_DEFAULT, &raw);
    if (dxpl >= 0) (void)H5Pclose(dxpl);
    if (!ok)
        ds_rfail(s, "dataset 'sample_meta': sample %lld: read failed (corrupt or truncated chunk?)",
                 (long long)i);
    char *out = ag_xstrdup(raw ? raw : "");
    hid_t ms = H5Screate_simple(1, &one, NULL);
    if (ms >= 0) { // hands the string back to HDF5's allocator
        ds_vlen_reclaim(s->str, ms, &raw);
        (void)H5Sclose(ms);
    }
    return out;
}

static void ds_r_row(ds_shard *s, int k, int32_t row, hid_t mtype, void *buf) {
    ds_h5_init();
    int64_t rows = ds_hdr_rows(&s->h, k);
    if (row < 0 || row >= rows)
        ag_fail("%s: dataset '%s': row %d out of range (%lld rows)", s->path, ds_media[k].data, row,
                (long long)rows);
    hsize_t start[5] = {(hsize_t)row}, count[5] = {1};
    int rank = ds_hdr_row_dims(&s->h, k, count + 1) + 1;
    if (!ds_r_slab(s->media[k], mtype, rank, start, count, buf))
        ds_rfail(s, "dataset '%s': row %d: read failed (corrupt or truncated chunk?)",
                 ds_media[k].data, row);
}

void ds_shard_read_image(ds_shard *s, int32_t row, uint8_t *rgb) {
    ds_r_row(s, 0, row, H5T_NATIVE_UINT8, rgb);
}

void ds_shard_read_video(ds_shard *s, int32_t row, uint8_t *frames) {
    ds_r_row(s, 1, row, H5T_NATIVE_UINT8, frames);
}

void ds_shard_read_audio(ds_shard *s, int32_t row, float *fbank) {
    size_t n = (size_t)s->h.audio_clips * (size_t)s->h.audio_frames * (size_t)s->h.audio_mels;
    if (!s->half && n > 0) s->half = ag_xmalloc(n * sizeof *s->half, "audio row");
    // Read in the file's own 16-bit layout (no HDF5 conversion), then widen here.
    ds_r_row(s, 2, row, s->f16, s->half);
    for (size_t i = 0; i < n; i++) {
        // NaN in an fbank makes every loss NaN: the step is skipped and nobody blames the data.
        if (!ds_f16_finite(s->half[i])) {
            size_t tm = (size_t)s->h.audio_frames * (size_t)s->h.audio_mels;
            ds_rfail(s,
                     "dataset 'audios': row %d: element %zu (clip %zu, frame %zu, mel %zu) is %s "
                     "(fbank values must be finite)",
                     row, i, i / tm, i % tm / (size_t)s->h.audio_mels, i % (size_t)s->h.audio_mels,
                     ds_f16_nonfinite_name(s->half[i]));
        }
        fbank[i] = ds_f32_from_f16(s->half[i]);
    }
}

static void ds_r_check_row(const ds_shard *s, int k, int32_t row) {
    int64_t rows = ds_hdr_rows(&s->h, k);
    if (row < 0 || row >= rows)
        ag_fail("%s: dataset '%s': row %d out of range (%lld rows)", s->path, ds_media[k].rowmeta,
                row, (long long)rows);
}

void ds_shard_image_orig_size(const ds_shard *s, int32_t row, int32_t size[2]) {
    ds_r_check_row(s, 0, row);
    size[0] = s->img_size[2 * row], size[1] = s->img_size[2 * row + 1];
}

float ds_shard_video_duration(const ds_shard *s, int32_t row) {
    ds_r_check_row(s, 1, row);
    return s->duration[1][row];
}

float ds_shard_audio_duration(const ds_shard *s, int32_t row) {
    ds_r_check_row(s, 2, row);
    return s->duration[2][row];
}

// ---------------------------------------------------------------------------------------
// token checks

bool ds_sample_check(const ds_token_rules *r, const int32_t *tokens, int64_t len,
                     const int32_t media[3], ds_sample_blocks *blocks, char *why, size_t n) {
    static const char *const role[3] = {"start", "patch", "end"};
    if (blocks)
        for (int k = 0; k < DS_NMEDIA; k++) blocks->begin[k] = blocks->end[k] = -1;
    // Per kind and role (start, patch, end): how many, the first and the last position.
    int32_t id[DS_NMEDIA][3];
    int64_t count[DS_NMEDIA][3] = {{0}}, first[DS_NMEDIA][3], last[DS_NMEDIA][3];
    int32_t lo = INT32_MAX, hi = INT32_MIN; // the range of placeholder ids: one test per token
    for (int k = 0; k < DS_NMEDIA; k++) {
        id[k][0] = r->media ? r->start[k] : -1;
        id[k][1] = r->media ? r->patch[k] : -1;
        id[k][2] = r->media ? r->end[k] : -1;
        for (int j = 0; j < 3; j++) {
            first[k][j] = last[k][j] = -1;
            if (id[k][j] < 0) continue;
            lo = id[k][j] < lo ? id[k][j] : lo;
            hi = id[k][j] > hi ? id[k][j] : hi;
        }
    }
    for (int64_t t = 0; t < len; t++) {
        int32_t v = tokens[t];
        if (r->vocab > 0 && (v < 0 || v >= r->vocab)) {
            snprintf(why, n, "token id %d at position %lld is outside the vocabulary 0..%lld",
                     (int)v, (long long)t, (long long)r->vocab - 1);
            return false;
        }
        if (v < lo || v > hi) continue;
        for (int k = 0; k < DS_NMEDIA; k++)
            for (int j = 0; j < 3; j++)
                if (v == id[k][j]) {
                    if (!count[k][j]++) first[k][j] = t;
                    last[k][j] = t;
                }
    }
    if (!r->media) return true;
    for (int k = 0; k < DS_NMEDIA; k++) {
        const char *kind = ds_media[k].kind;
        int64_t ns = count[k][0], np = count[k][1], ne = count[k][2];
        if (media[k] < 0) {
            for (int j = 0; j < 3; j++)
                if (count[k][j]) {
                    snprintf(why, n,
                             "%lld %s %s tokens (id %d, the first at position %lld) but no %s "
                             "(%s is -1)",
                             (long long)count[k][j], kind, role[j], (int)id[k][j],
                             (long long)first[k][j], kind, ds_media[k].ref);
                    return false;
                }
            continue;
        }
        if (!np) {
            snprintf(why, n, "%s row %d but no %s patch tokens (id %d)", ds_media[k].kind, media[k],
                     kind, (int)id[k][1]);
            return false;
        }
        if ((id[k][0] >= 0 && ns != 1) || (id[k][2] >= 0 && ne != 1)) {
            snprintf(why, n,
                     "%lld %s start tokens (id %d) and %lld end tokens (id %d): one block per %s "
                     "expected",
                     (long long)ns, kind, (int)id[k][0], (long long)ne, (int)id[k][2], kind);
            return false;
        }
        int64_t p0 = first[k][1], p1 = last[k][1];
        if (p1 - p0 + 1 != np) {
            snprintf(why, n, "the %lld %s patch tokens are not one run (positions %lld..%lld)",
                     (long long)np, kind, (long long)p0, (long long)p1);
            return false;
        }
        if ((id[k][0] >= 0 && first[k][0] != p0 - 1) || (id[k][2] >= 0 && first[k][2] != p1 + 1)) {
            snprintf(why, n,
                     "%s patch tokens at %lld..%lld are not enclosed by the start token %d (at "
                     "%lld) and the end token %d (at %lld)",
                     kind, (long long)p0, (long long)p1, (int)id[k][0], (long long)first[k][0],
                     (int)id[k][2], (long long)first[k][2]);
            return false;
        }
        if (r->tokens[k] >= 0 && np != r->tokens[k]) {
            snprintf(why, n, "the %s block holds %lld patch tokens, expected %lld", kind,
                     (long long)np, (long long)r->tokens[k]);
            return false;
        }
        if (blocks) {
            blocks->begin[k] = id[k][0] >= 0 ? p0 - 1 : p0;
            blocks->end[k] = (id[k][2] >= 0 ? p1 + 1 : p1) + 1;
        }
    }
    return true;
}
