// fuzz_shard.c: libFuzzer target for the HDF5 shard reader (data/shard.h). Any shard must
// either open or be refused with one ag_fail line, and a shard that opens must read every
// sample (tokens one by one and all at once, which must agree; meta; source) and every media
// row without a crash, a leak (memory, file descriptors or HDF5 ids) or a sanitizer report.
//
// Random bytes would almost never get past HDF5's own parsing (a library we do not fuzz), so
// the input is a list of edits to a small valid shard (3 samples, one row of each medium),
// which the target writes with the HDF5 API to a temporary file before opening it. The empty
// input is that valid shard (seeds: tests/fixtures/fuzz/fuzz_shard). Each edit is an opcode byte,
// an object byte (one of the root attributes or datasets of FORMAT.md) and arguments:
//   0 drop or restore the object        4 set an element to a value from a table of extremes
//   1 change its element type           5 storage: contiguous, chunked, zstd
//   2 change its rank and dimensions    6 replace its first zstd chunk with raw input bytes
//   3 set an element from input bytes   7 set a string element from input bytes
// FUZZ_CORPUS: tests/fixtures/fuzz/fuzz_shard *.bin
#include <hdf5.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/error.h"
#include "data/h5zstd.h"
#include "data/shard.h"
#include "fuzz_util.h"

#define FZ_MAX_ELEMS     1024 // per object, so every buffer below stays small
#define FZ_MAX_STR_ELEMS 64
#define FZ_STR           80 // bytes per string element, NUL included (a digest needs 65)
#define FZ_MAX_DIM       8

// Element types; strings are variable-length UTF-8 (what FORMAT.md asks for), variable-length
// ASCII or fixed-length UTF-8.
enum { T_I8, T_U8, T_I16, T_U16, T_I32, T_U32, T_I64, T_U64, T_F16, T_BF16, T_F32, T_F64 };
enum { T_VSTR = T_F64 + 1, T_VSTR_ASCII, T_FSTR, FZ_NTYPES };
static const size_t fz_type_size[FZ_NTYPES] = {1, 1, 2, 2, 4, 4, 8, 8, 2, 2, 4, 8, 0, 0, FZ_STR};

typedef struct {
    const char *name;
    bool attr, present;
    int type, rank;
    hsize_t dims[5];
    int storage; // 0 contiguous, 1 chunked, 2 chunked + zstd, 3 as 2 with a raw first chunk
    const uint8_t *raw;
    size_t raw_len;
    uint8_t num[FZ_MAX_ELEMS * 8]; // little-endian elements of the current type
    char str[FZ_MAX_STR_ELEMS][FZ_STR];
} fz_obj;

enum { FZ_NOBJ = 26 };
static fz_obj fz_base[FZ_NOBJ], fz_cur[FZ_NOBJ];

static size_t fz_elems(const fz_obj *o) {
    size_t n = 1;
    for (int i = 0; i < o->rank; i++) n *= (size_t)o->dims[i];
    return n;
}

static void fz_put(fz_obj *o, size_t i, int64_t v) {
    size_t size = fz_type_size[o->type];
    if (o->type == T_F32) {
        float f = (float)v;
        memcpy(o->num + i * 4, &f, 4);
    } else if (o->type == T_F64) {
        double d = (double)v;
        memcpy(o->num + i * 8, &d, 8);
    } else {
        for (size_t b = 0; b < size; b++) o->num[i * size + b] = (uint8_t)((uint64_t)v >> (8 * b));
    }
}

static fz_obj *fz_add(int *k, const char *name, bool attr, int type, int rank, hsize_t d0,
                      hsize_t d1, hsize_t d2, hsize_t d3, hsize_t d4) {
    fz_obj *o = &fz_base[(*k)++];
    *o = (fz_obj){.name = name,
                  .attr = attr,
                  .present = true,
                  .type = type,
                  .rank = rank,
                  .dims = {d0, d1, d2, d3, d4},
                  .storage = attr ? 0 : 2};
    return o;
}

// The valid shard every input starts from.
static void fz_init_base(void) {
    int k = 0;
    fz_put(fz_add(&k, "schema_version", true, T_I32, 0, 0, 0, 0, 0, 0), 0, 1);
    snprintf(fz_add(&k, "tokenizer_digest", true, T_VSTR, 0, 0, 0, 0, 0, 0)->str[0], FZ_STR, "%s",
             "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    fz_put(fz_add(&k, "num_samples", true, T_I64, 0, 0, 0, 0, 0, 0), 0, 3);
    static const char *const sizes[] = {"image_size",  "video_frames", "video_size",
                                        "audio_clips", "audio_frames", "audio_mels"};
    for (int i = 0; i < 6; i++)
        fz_put(fz_add(&k, sizes[i], true, T_I32, 0, 0, 0, 0, 0, 0), 0, i == 3 ? 1 : 2);
    fz_obj *o = fz_add(&k, "sources", true, T_VSTR, 1, 2, 0, 0, 0, 0);
    snprintf(o->str[0], FZ_STR, "refcoco");
    snprintf(o->str[1], FZ_STR, "synth-video");

    static const int64_t tokens[6] = {1, 319, 32001, 32000, 32002, 2};
    static const int64_t mask[6] = {0, 0, 0, 0, 1, 1}, offsets[4] = {0, 2, 2, 6};
    static const int64_t refs[3][3] = {{0, -1, 0}, {-1, 0, -1}, {-1, -1, 0}};
    static const int64_t task[3] = {1, 3, 4}, gran[3] = {1, 1, 0}, src[3] = {0, 1, 0};
    o = fz_add(&k, "tokens", false, T_I32, 1, 6, 0, 0, 0, 0);
    for (int i = 0; i < 6; i++) fz_put(o, (size_t)i, tokens[i]);
    o = fz_add(&k, "loss_mask", false, T_U8, 1, 6, 0, 0, 0, 0);
    for (int i = 0; i < 6; i++) fz_put(o, (size_t)i, mask[i]);
    o = fz_add(&k, "offsets", false, T_I64, 1, 4, 0, 0, 0, 0);
    for (int i = 0; i < 4; i++) fz_put(o, (size_t)i, offsets[i]);
    static const char *const ref_names[3] = {"sample_image", "sample_video", "sample_audio"};
    for (int m = 0; m < 3; m++) {
        o = fz_add(&k, ref_names[m], false, T_I32, 1, 3, 0, 0, 0, 0);
        for (int i = 0; i < 3; i++) fz_put(o, (size_t)i, refs[m][i]);
    }
    o = fz_add(&k, "sample_task", false, T_U8, 1, 3, 0, 0, 0, 0);
    for (int i = 0; i < 3; i++) fz_put(o, (size_t)i, task[i]);
    o = fz_add(&k, "sample_granularity", false, T_U8, 1, 3, 0, 0, 0, 0);
    for (int i = 0; i < 3; i++) fz_put(o, (size_t)i, gran[i]);
    o = fz_add(&k, "sample_source", false, T_U16, 1, 3, 0, 0, 0, 0);
    for (int i = 0; i < 3; i++) fz_put(o, (size_t)i, src[i]);
    o = fz_add(&k, "sample_meta", false, T_VSTR, 1, 3, 0, 0, 0, 0);
    o->storage = 0; // HDF5 refuses filters on variable-length data
    snprintf(o->str[0], FZ_STR, "{\"id\": \"a\", \"box\": [0.1, 0.2, 0.3, 0.4]}");
    snprintf(o->str[1], FZ_STR, "{\"span\": [0.25, 0.5]}");

    o = fz_add(&k, "images", false, T_U8, 4, 1, 2, 2, 3, 0);
    for (int i = 0; i < 12; i++) fz_put(o, (size_t)i, 20 * i);
    o = fz_add(&k, "image_orig_size", false, T_I32, 2, 1, 2, 0, 0, 0);
    fz_put(o, 0, 640), fz_put(o, 1, 480);
    o = fz_add(&k, "videos", false, T_U8, 5, 1, 2, 2, 2, 3);
    for (int i = 0; i < 24; i++) fz_put(o, (size_t)i, 10 * i);
    fz_put(fz_add(&k, "video_duration", false, T_F32, 1, 1, 0, 0, 0, 0), 0, 12);
    o = fz_add(&k, "audios", false, T_F16, 4, 1, 1, 2, 2, 0);
    for (int i = 0; i < 4; i++) fz_put(o, (size_t)i, 0x3c00 + 0x100 * i); // 1.0, 1.25, ...
    fz_put(fz_add(&k, "audio_duration", false, T_F32, 1, 1, 0, 0, 0, 0), 0, 3);
    if (k != FZ_NOBJ) abort();
}

// ---- reading the edits ----
typedef struct {
    const uint8_t *p;
    size_t n;
} fz_in;

static uint8_t fz_byte(fz_in *in) {
    if (!in->n) return 0;
    in->n--;
    return *in->p++;
}

static size_t fz_index(fz_in *in, size_t elems) {
    size_t v = fz_byte(in);
    v |= (size_t)fz_byte(in) << 8;
    return elems ? v % elems : 0;
}

static const int64_t fz_extremes[] = {0,
                                      1,
                                      -1,
                                      2,
                                      6,
                                      7,
                                      255,
                                      256,
                                      32767,
                                      65535,
                                      65536,
                                      0x7c00, // float16 inf (as bits)
                                      0x7e00, // float16 NaN
                                      INT32_MAX,
                                      INT32_MIN,
                                      (int64_t)INT32_MAX + 1,
                                      (int64_t)1 << 40,
                                      INT64_MAX / 8,
                                      INT64_MAX - 1,
                                      INT64_MAX,
                                      INT64_MIN};

static void fz_edit(fz_in *in) {
    uint8_t op = fz_byte(in);
    fz_obj *o = &fz_cur[fz_byte(in) % FZ_NOBJ];
    bool is_str = o->type >= T_VSTR;
    size_t elems = fz_elems(o);
    switch (op % 8) {
    case 0:
        o->present = !o->present;
        break;
    case 1: {
        int t = fz_byte(in) % FZ_NTYPES;
        if (t < T_VSTR || elems <= FZ_MAX_STR_ELEMS) o->type = t;
        break;
    }
    case 2: {
        int rank = fz_byte(in) % 6;
        hsize_t dims[5] = {0};
        size_t n = 1;
        for (int i = 0; i < rank; i++) n *= (size_t)(dims[i] = fz_byte(in) % (FZ_MAX_DIM + 1));
        if (n <= (is_str ? FZ_MAX_STR_ELEMS : FZ_MAX_ELEMS)) {
            o->rank = rank;
            memcpy(o->dims, dims, sizeof dims);
        }
        break;
    }
    case 3: {
        size_t i = fz_index(in, elems), size = fz_type_size[o->type];
        if (elems && !is_str)
            for (size_t b = 0; b < size; b++) o->num[i * size + b] = fz_byte(in);
        break;
    }
    case 4: {
        size_t i = fz_index(in, elems);
        int64_t v = fz_extremes[fz_byte(in) % (sizeof fz_extremes / sizeof *fz_extremes)];
        if (elems && !is_str) fz_put(o, i, v);
        break;
    }
    case 5:
        o->storage = fz_byte(in) % 3;
        break;
    case 6:
        o->raw_len = fz_byte(in) % 128;
        if (o->raw_len > in->n) o->raw_len = in->n;
        o->raw = in->p;
        in->p += o->raw_len, in->n -= o->raw_len;
        o->storage = 3;
        break;
    default: {
        size_t i = fz_index(in, elems < FZ_MAX_STR_ELEMS ? elems : FZ_MAX_STR_ELEMS);
        size_t len = fz_byte(in) % FZ_STR;
        if (len > in->n) len = in->n;
        memcpy(o->str[i], in->p, len);
        o->str[i][len] = 0;
        in->p += len, in->n -= len;
    }
    }
}

// ---- writing the shard ----
static hid_t fz_h5_type(int t) {
    static const hid_t *const fixed[] = {&H5T_STD_I8LE_g,  &H5T_STD_U8LE_g,  &H5T_STD_I16LE_g,
                                         &H5T_STD_U16LE_g, &H5T_STD_I32LE_g, &H5T_STD_U32LE_g,
                                         &H5T_STD_I64LE_g, &H5T_STD_U64LE_g};
    if (t < T_F16) return H5Tcopy(*fixed[t]);
    if (t == T_F32) return H5Tcopy(H5T_IEEE_F32LE);
    if (t == T_F64) return H5Tcopy(H5T_IEEE_F64LE);
    hid_t h;
    if (t == T_F16 || t == T_BF16) { // binary16, or bfloat16: 16 bits but not what FORMAT.md says
        h = H5Tcopy(H5T_IEEE_F32LE);
        if (t == T_F16)
            (void)(H5Tset_fields(h, 15, 10, 5, 0, 10) >= 0 && H5Tset_size(h, 2) >= 0 &&
                   H5Tset_ebias(h, 15) >= 0);
        else
            (void)(H5Tset_fields(h, 15, 7, 8, 0, 7) >= 0 && H5Tset_size(h, 2) >= 0);
        return h;
    }
    h = H5Tcopy(H5T_C_S1);
    (void)(H5Tset_size(h, t == T_FSTR ? FZ_STR : H5T_VARIABLE) >= 0 &&
           H5Tset_cset(h, t == T_VSTR_ASCII ? H5T_CSET_ASCII : H5T_CSET_UTF8) >= 0);
    return h;
}

// Transfers with a small conversion buffer: HDF5's default callocs 1 MiB per string write.
static hid_t fz_dxpl;

// Writes one object; one that HDF5 refuses (a chunk shape it does not take, say) is left out.
static void fz_write_obj(hid_t file, const fz_obj *o) {
    size_t elems = fz_elems(o);
    hsize_t maxdims[5], chunk[5];
    bool chunked = !o->attr && o->storage > 0 && o->rank > 0;
    for (int i = 0; i < o->rank; i++) {
        maxdims[i] = i == 0 && chunked ? H5S_UNLIMITED : o->dims[i];
        chunk[i] = o->dims[i] ? o->dims[i] : 1;
    }
    if (chunked) chunk[0] = 1;
    const char *ptrs[FZ_MAX_STR_ELEMS];
    const void *buf = o->num;
    if (o->type == T_FSTR) buf = o->str;
    if (o->type == T_VSTR || o->type == T_VSTR_ASCII) {
        for (size_t i = 0; i < elems && i < FZ_MAX_STR_ELEMS; i++) ptrs[i] = o->str[i];
        buf = ptrs;
    }
    hid_t t = fz_h5_type(o->type), dcpl = H5Pcreate(H5P_DATASET_CREATE), obj = H5I_INVALID_HID;
    hid_t space = o->rank ? H5Screate_simple(o->rank, o->dims, maxdims) : H5Screate(H5S_SCALAR);
    unsigned level = 1;
    if (chunked) {
        (void)H5Pset_chunk(dcpl, o->rank, chunk);
        if (o->storage >= 2 && o->type < T_VSTR)
            (void)H5Pset_filter(dcpl, DS_H5ZSTD_ID, H5Z_FLAG_MANDATORY, 1, &level);
    }
    if (o->attr) {
        obj = H5Acreate2(file, o->name, t, space, H5P_DEFAULT, H5P_DEFAULT);
        if (obj >= 0) (void)H5Awrite(obj, t, buf);
        if (obj >= 0) (void)H5Aclose(obj);
    } else {
        obj = H5Dcreate2(file, o->name, t, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        if (obj >= 0 && elems) (void)H5Dwrite(obj, t, H5S_ALL, H5S_ALL, fz_dxpl, buf);
        if (obj >= 0 && elems && o->storage == 3 && o->raw_len && o->type < T_VSTR) {
            hsize_t at[5] = {0};
            (void)H5Dwrite_chunk(obj, H5P_DEFAULT, 0, at, o->raw_len, o->raw);
        }
        if (obj >= 0) (void)H5Dclose(obj);
    }
    (void)H5Sclose(space);
    (void)H5Pclose(dcpl);
    (void)H5Tclose(t);
}

// ---- reading it back ----
static jmp_buf fz_jmp;
static void fz_on_error(const char *message) {
    (void)message;
    longjmp(fz_jmp, 1);
}

static void *fz_row_buffer(size_t a, size_t b, size_t c, size_t d, size_t elem) {
    size_t n = a * b * c * d * elem;
    return n && n < (1u << 20) ? malloc(n) : NULL;
}

static void fz_read_all(ds_shard *sh, void **bufs) {
    const ds_shard_header *h = ds_shard_get_header(sh);
    int64_t n = ds_shard_num_samples(sh);
    int64_t total = ds_shard_range_tokens(sh, 0, n);
    int32_t *tokens = bufs[0] = malloc((size_t)total * 4 + 4);
    uint8_t *mask = bufs[1] = malloc((size_t)total + 1);
    int32_t *one = bufs[2] = malloc((size_t)total * 4 + 4);
    uint8_t *one_mask = bufs[3] = malloc((size_t)total + 1);
    uint8_t *image = bufs[4] = fz_row_buffer((size_t)h->image_size, (size_t)h->image_size, 3, 1, 1);
    uint8_t *video = bufs[5] =
        fz_row_buffer((size_t)h->video_frames, (size_t)h->video_size, (size_t)h->video_size, 3, 1);
    float *audio = bufs[6] = fz_row_buffer((size_t)h->audio_clips, (size_t)h->audio_frames,
                                           (size_t)h->audio_mels, 1, sizeof(float));
    ds_shard_read_tokens(sh, 0, n, tokens, mask);
    for (int64_t i = 0; i < n; i++) {
        ds_sample_ref r = ds_shard_sample(sh, i);
        if (r.start < 0 || r.length < 0 || r.start + r.length > total) abort();
        ds_shard_read_tokens(sh, i, 1, one, one_mask);
        if (memcmp(one, tokens + r.start, (size_t)r.length * 4) ||
            memcmp(one_mask, mask + r.start, (size_t)r.length))
            abort(); // one sample read alone must be what the whole read gave
        free(ds_shard_read_meta(sh, i));
        (void)ds_shard_source_name(sh, r.source);
        if (r.image >= 0 && image) ds_shard_read_image(sh, r.image, image);
        if (r.video >= 0 && video) ds_shard_read_video(sh, r.video, video);
        if (r.audio >= 0 && audio) ds_shard_read_audio(sh, r.audio, audio);
    }
    int32_t size[2];
    for (int32_t row = 0; row < h->num_images && image; row++) {
        ds_shard_read_image(sh, row, image);
        ds_shard_image_orig_size(sh, row, size);
    }
    for (int32_t row = 0; row < h->num_videos && video; row++) {
        ds_shard_read_video(sh, row, video);
        (void)ds_shard_video_duration(sh, row);
    }
    for (int32_t row = 0; row < h->num_audios && audio; row++) {
        ds_shard_read_audio(sh, row, audio);
        (void)ds_shard_audio_duration(sh, row);
    }
}

// Open HDF5 ids of the kinds a reader creates: a run must give back every one it took.
static int64_t fz_h5_ids(void) {
    static const H5I_type_t kinds[] = {H5I_FILE,    H5I_GROUP, H5I_DATATYPE,   H5I_DATASPACE,
                                       H5I_DATASET, H5I_ATTR,  H5I_GENPROP_LST};
    int64_t total = 0;
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
        hsize_t n = 0;
        (void)H5Inmembers(kinds[k], &n);
        total += (int64_t)n;
    }
    return total;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static bool ready;
    if (!ready) {
        fz_init_base();
        fz_dxpl = H5Pcreate(H5P_DATASET_XFER);
        if (H5Eset_auto2(H5E_DEFAULT, NULL, NULL) < 0 || ds_h5zstd_register() < 0 || fz_dxpl < 0 ||
            H5Pset_buffer(fz_dxpl, 1 << 16, NULL, NULL) < 0)
            abort();
        ready = true;
    }
    memcpy(fz_cur, fz_base, sizeof fz_cur);
    fz_in in = {data, size};
    while (in.n) fz_edit(&in);

    char path[64];
    snprintf(path, sizeof path, "/tmp/fuzz_shard_%d.h5", (int)getpid());
    hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file < 0) {
        fprintf(stderr, "%s: cannot create the fuzz shard\n", path);
        abort();
    }
    for (int k = 0; k < FZ_NOBJ; k++)
        if (fz_cur[k].present) fz_write_obj(file, &fz_cur[k]);
    if (H5Fclose(file) < 0) abort();

    static fz_fds fds;
    fz_fds_snapshot(&fds);
    int64_t ids = fz_h5_ids();
    ds_shard *volatile sh = NULL;
    void *volatile bufs[7] = {0};
    ag_set_error_handler(fz_on_error);
    if (setjmp(fz_jmp) == 0) {
        sh = ds_shard_open(path);
        fz_read_all(sh, (void **)bufs);
    }
    ag_set_error_handler(NULL);
    ds_shard_close(sh);
    for (int i = 0; i < 7; i++) free(bufs[i]);
    if (fz_h5_ids() != ids) {
        fprintf(stderr, "fuzz_shard: the reader left %lld HDF5 ids open\n",
                (long long)(fz_h5_ids() - ids));
        abort();
    }
    if (fz_fds_new(&fds, false)) {
        fprintf(stderr, "fuzz_shard: the reader left a file descriptor open\n");
        abort();
    }
    unlink(path);
    return 0;
}
