// shard.h: one HDF5 shard of data/FORMAT.md (schema version 1): a writer that packs samples
// and their media into NAME.h5 atomically and reproducibly (same input, same bytes), and a
// validating reader with random access to samples, token ranges and media rows.
// Every failure is a one-line ag_fail naming the file, the dataset and the sample or row.
// HDF5 is used one thread at a time (the Debian serial library is not thread-safe); a reader
// handle belongs to one thread.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DS_SHARD_SCHEMA_VERSION 1

// sample_task values (FORMAT.md). Names are the keys of the manifest's "tasks" map.
typedef enum {
    DS_TASK_CAPTION = 0,      // "caption"
    DS_TASK_REC = 1,          // "rec": referring expression, text -> box
    DS_TASK_REG = 2,          // "reg": region description, box -> text
    DS_TASK_TVG = 3,          // "tvg": temporal grounding, text -> span
    DS_TASK_SOUND = 4,        // "sound": sound localisation, text -> span in audio
    DS_TASK_CONVERSATION = 5, // "conversation"
    DS_NTASKS
} ds_task;
const char *ds_task_name(int task);      // NULL when out of range
int ds_task_from_name(const char *name); // -1 when unknown

// The zstd levels shards are written at unless asked otherwise. Pixels (images, videos) at -1,
// zstd's first fast level, whose frames keep literals raw: on packed photos that costs 12 % in
// size (1.53x -> 1.34x) and decodes 5x faster (the loader's samples/s x3, bench/loader.sh).
// Tokens, masks and fbanks at 1: entropy coding halves their size there (fbanks: 1.41x -> 1.0x
// without it), and 1 writes 2.5x faster than zstd's default 3 at a size within 2 %.
#define DS_SHARD_ZSTD_LEVEL       1
#define DS_SHARD_ZSTD_PIXEL_LEVEL (-1)

// Fixed per-shard geometry. A zero size means the shard holds no media of that kind.
typedef struct {
    const char *tokenizer_digest; // SHA-256 hex (64 digits) of tokenizer.model
    int32_t image_size;           // S of images [S, S, 3]
    int32_t video_frames, video_size;
    int32_t audio_clips, audio_frames, audio_mels;
    int compression_level; // zstd level of every dataset; 0: the defaults above
} ds_shard_layout;

// One sample handed to the writer. Media fields are rows returned by ds_shard_add_image /
// _video / _audio of the same writer, or -1.
typedef struct {
    const int32_t *tokens;
    const uint8_t *loss_mask; // 0 or 1 per token
    int64_t length;
    int32_t image, video, audio;
    int task;           // ds_task
    int granularity;    // 0 coarse, 1 fine
    const char *source; // dataset name, e.g. "refcoco"
    const char *meta;   // JSON object (UTF-8 text)
} ds_sample;

// What a finished shard holds; the manifest is built from these.
typedef struct {
    int64_t num_samples, num_tokens, num_images, num_videos, num_audios;
    int64_t bytes;   // file size
    char sha256[65]; // of the file, lowercase hex
    int64_t task_counts[DS_NTASKS];
    int num_sources; // entries of the shard's `sources` list, in index order
    char **source_names;
    int64_t *source_counts;
} ds_shard_info;
void ds_shard_info_free(ds_shard_info *info);

// ---- writer ----
typedef struct ds_shard_writer ds_shard_writer;

// Starts PATH.tmp; nothing appears at PATH until ds_shard_finish.
ds_shard_writer *ds_shard_create(const char *path, const ds_shard_layout *layout);
// Media rows (returned index counts from 0 per kind). rgb is [S, S, 3]; width and height are
// the original image's size. frames is [F, S, S, 3]. fbank is [C, T, M] float32, stored as
// float16 (rounded to nearest even).
int32_t ds_shard_add_image(ds_shard_writer *w, const uint8_t *rgb, int32_t width, int32_t height);
int32_t ds_shard_add_video(ds_shard_writer *w, const uint8_t *frames, float duration);
int32_t ds_shard_add_audio(ds_shard_writer *w, const float *fbank, float duration);
// Returns the sample's index in the shard.
int64_t ds_shard_add_sample(ds_shard_writer *w, const ds_sample *s);
// Writes the remaining datasets and attributes, closes, renames PATH.tmp to PATH and frees w.
// out (may be NULL) receives counts, size and SHA-256; free it with ds_shard_info_free.
// Any writer failure (ag_fail) removes PATH.tmp and frees w: PATH itself is never touched.
void ds_shard_finish(ds_shard_writer *w, ds_shard_info *out);
// Drops an unfinished shard: removes PATH.tmp, frees w; PATH is untouched.
void ds_shard_abort(ds_shard_writer *w);

// ---- reader ----
typedef struct ds_shard ds_shard;

typedef struct {
    int32_t schema_version;
    char tokenizer_digest[65];
    int64_t num_samples, num_tokens;
    int32_t image_size, video_frames, video_size;
    int32_t audio_clips, audio_frames, audio_mels;
    int64_t num_images, num_videos, num_audios;
    int num_sources;
} ds_shard_header;

// Where a sample's tokens are and what it refers to (all held in memory after open).
typedef struct {
    int64_t start, length;       // tokens[start : start + length]
    int32_t image, video, audio; // rows, -1 for none
    uint8_t task, granularity;
    uint16_t source;
} ds_sample_ref;

// Opens and validates: schema version, presence, types and shapes of every dataset, offsets
// (start at 0, monotone, end at N_tok), media rows, task, granularity and source indices.
ds_shard *ds_shard_open(const char *path);
void ds_shard_close(ds_shard *s);
const char *ds_shard_path(const ds_shard *s);
const ds_shard_header *ds_shard_get_header(const ds_shard *s);
int64_t ds_shard_num_samples(const ds_shard *s);
ds_sample_ref ds_shard_sample(const ds_shard *s, int64_t i);
const char *ds_shard_source_name(const ds_shard *s, int source);
// Tokens of samples [first, first + count) together: what ds_shard_read_tokens fills.
int64_t ds_shard_range_tokens(const ds_shard *s, int64_t first, int64_t count);
// Reads the tokens (and loss mask, unless NULL) of samples [first, first + count) in one
// hyperslab read each: sample first + k starts at ds_shard_sample(s, first + k).start -
// ds_shard_sample(s, first).start.
void ds_shard_read_tokens(ds_shard *s, int64_t first, int64_t count, int32_t *tokens,
                          uint8_t *loss_mask);
// How many of token id appear in the first sample that has an item of media kind (0 image,
// 1 video, 2 audio; a sample has at most one): the patch tokens pack expanded its placeholder
// to, which shards do not record otherwise. -1 when no sample has that kind.
int64_t ds_shard_first_media_tokens(ds_shard *s, int kind, int32_t id);
// The sample's JSON metadata, malloc'd (free it).
char *ds_shard_read_meta(ds_shard *s, int64_t i);
// Media rows into caller buffers of the layout's size; audio comes back as float32.
void ds_shard_read_image(ds_shard *s, int32_t row, uint8_t *rgb);
void ds_shard_read_video(ds_shard *s, int32_t row, uint8_t *frames);
void ds_shard_read_audio(ds_shard *s, int32_t row, float *fbank);
// Per-row metadata (held in memory): original width, height; durations in seconds.
void ds_shard_image_orig_size(const ds_shard *s, int32_t row, int32_t size[2]);
float ds_shard_video_duration(const ds_shard *s, int32_t row);
float ds_shard_audio_duration(const ds_shard *s, int32_t row);

// ---- helpers shared with the manifest ----
// True for 64 lowercase hex digits (how SHA-256 digests appear in shards and manifests).
bool ds_is_sha256_hex(const char *s);
// SHA-256 (lowercase hex) and size of a file, streamed; fails naming the file.
void ds_file_sha256(const char *path, char hex[65], int64_t *bytes);
// IEEE binary16 <-> binary32 (round to nearest even; inf and NaN kept).
uint16_t ds_f16_from_f32(float x);
float ds_f32_from_f16(uint16_t h);

#ifdef __cplusplus
}
#endif
