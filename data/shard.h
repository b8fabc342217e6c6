// shard.h: one HDF5 shard of data/FORMAT.md (schema version 1): a writer that packs samples
// and their media into NAME.h5 atomically and reproducibly (same input, same bytes), and a
// validating reader with random access to samples, token ranges and media rows.
// Every failure is a one-line ag_fail naming the file, the dataset and the sample or row.
// HDF5 is used one thread at a time (the Debian serial library is not thread-safe); a reader
// handle belongs to one thread.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DS_SHARD_SCHEMA_VERSION 1
// The most tokens one sample may hold (a model's context is thousands: 2^24 is a damaged file).
#define DS_MAX_SAMPLE_TOKENS (1 << 24)

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
// the original image's size (> 0). frames is [F, S, S, 3]. fbank is [C, T, M] float32, stored
// as float16 (rounded to nearest even), finite. Durations are seconds, finite and > 0: what
// the reader accepts.
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
typedef struct ds_token_rules ds_token_rules; // below, with ds_sample_check

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

// Opens and validates: schema version, presence, types and shapes of every dataset (a media
// dataset and its per-row metadata may be absent: no rows of that kind), filters this build
// can decode, offsets (start at 0, monotone, end at N_tok), media rows, task, granularity and
// source indices, original image sizes > 0 and durations finite and > 0. A tokenizer digest in
// uppercase hex is taken (header: lowercase).
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
// ds_shard_sample(s, first).start. Fails naming the shard and the sample on a loss_mask value
// other than 0 or 1 or a negative token id (one pass over what was read: cheap).
void ds_shard_read_tokens(ds_shard *s, int64_t first, int64_t count, int32_t *tokens,
                          uint8_t *loss_mask);
// How many of token id appear in the first sample that has an item of media kind (0 image,
// 1 video, 2 audio; a sample has at most one): the patch tokens pack expanded its placeholder
// to, which shards do not record otherwise. -1 when no sample has that kind. With check, that
// sample must pass ds_sample_check (give it tokens -1: the count is what is asked), else it
// fails naming the shard and the sample.
int64_t ds_shard_first_media_tokens(ds_shard *s, int kind, int32_t id, const ds_token_rules *check);
// The sample's JSON metadata, malloc'd (free it).
char *ds_shard_read_meta(ds_shard *s, int64_t i);
// Media rows into caller buffers of the layout's size; audio comes back as float32, and a row
// holding a NaN or an infinity fails (naming the shard, row and element).
void ds_shard_read_image(ds_shard *s, int32_t row, uint8_t *rgb);
void ds_shard_read_video(ds_shard *s, int32_t row, uint8_t *frames);
void ds_shard_read_audio(ds_shard *s, int32_t row, float *fbank);
// Per-row metadata (held in memory): original width, height; durations in seconds.
void ds_shard_image_orig_size(const ds_shard *s, int32_t row, int32_t size[2]);
float ds_shard_video_duration(const ds_shard *s, int32_t row);
float ds_shard_audio_duration(const ds_shard *s, int32_t row);

// ---- token checks (shared by the loader, train's start-up survey and inspect) ----
// What a sample's token stream must look like (FORMAT.md, `tokens`): ids in [0, vocab), and
// for each media kind (0 image, 1 video, 2 audio) exactly one placeholder block
// `start patch x tokens end` when the sample has a row of that kind, no placeholder id of that
// kind when it has none. Only ids and counts: data/ knows nothing else of the model.
struct ds_token_rules {
    int64_t vocab; // > 0: every id must lie in [0, vocab); 0: ids are not checked
    bool media;    // check the placeholder blocks (the ids below)
    int32_t start[3], patch[3], end[3]; // start / end -1: blocks have no such token
    int64_t tokens[3];                  // patch tokens per block; -1: any number
};

// Where a sample's blocks are: kind k occupies tokens [begin[k], end[k]); -1 when it has none.
typedef struct {
    int64_t begin[3], end[3];
} ds_sample_blocks;

// Checks one sample's tokens (len of them; media[k] its row of kind k or -1) against r. True
// and the blocks in *blocks (may be NULL) when it fits; false with the first problem in why
// (one line, positions counted from the sample's first token; no file named: the caller
// knows it). O(len).
bool ds_sample_check(const ds_token_rules *r, const int32_t *tokens, int64_t len,
                     const int32_t media[3], ds_sample_blocks *blocks, char *why, size_t n);

// ---- helpers shared with the manifest ----
// True for 64 lowercase hex digits (how SHA-256 digests appear in shards and manifests).
bool ds_is_sha256_hex(const char *s);
// True for 64 hex digits of either case (digests written by other tools); out (may be in)
// receives them in lowercase, how groundc compares them.
bool ds_sha256_hex_lower(const char *in, char out[65]);
// SHA-256 (lowercase hex) and size of a file, streamed; fails naming the file.
void ds_file_sha256(const char *path, char hex[65], int64_t *bytes);
// IEEE binary16 <-> binary32 (round to nearest even; inf and NaN kept).
uint16_t ds_f16_from_f32(float x);
float ds_f32_from_f16(uint16_t h);

#ifdef __cplusplus
}
#endif
