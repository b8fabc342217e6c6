// pack.h: `groundc pack`, the packing engine: reference-format JSON and custom grounding JSONL
// -> a folder of HDF5 shards + manifest.json (data/FORMAT.md).
//
// Per sample: the conversation is rendered with the Vicuna v0 template (data/template.h),
// tokenized piece by piece (the first piece with BOS and the dummy prefix, the others without
// a dummy prefix; a media piece becomes <X_start> <X_patch>xP <X_end>), the loss mask is 1
// exactly on the supervised pieces' tokens, and each referenced media file is decoded and
// preprocessed (data/image.h, video.h, audio.h) once per shard: samples that share a file
// share its row.
//
// Task (sample_task): the sample's "task" field when present, else inferred, first rule wins:
//   more than one exchange (human + gpt turn)                  -> conversation
//   a box "[x1, y1, x2, y2]" in the answer, none in the question -> rec
//   a box in the question                                      -> reg
//   a span "{t1, t2}" in the answer, the sample has a video    -> tvg
//   a span in the answer, the sample has a sound               -> sound
//   otherwise                                                  -> caption
// (A conversation with a box in a later answer is no rec sample: eval scores a rec sample by
// its first answer.)
// Granularity: fine for rec, reg, tvg and sound; coarse otherwise. sample_meta:
// {"id": the sample's id (when it has one), "file": input file as given, "index": position in
// the JSON list (from 0) or JSONL line number (from 1), "box": [...] / "span": [...]: the first
// box / span found in an answer, normalised, when there is one}.
//
// Bad samples (missing or undecodable media, a malformed conversation, placeholders that do
// not match the media keys, a JSONL box or span outside its media, more than max_len tokens
// after expansion, text that spells an added token such as "<im_patch>", a NUL character in
// the text, "\u0000") are reported as one line on stderr, "FILE: sample I: reason" for the
// I-th element of a JSON list (from 0) or "FILE:LINE: reason" for a JSONL line, then skipped
// and counted, or (fail_on_error) end the run with that line as the error.
//
// Threads: workers load media and tokenize in parallel; the calling thread is the only one
// that touches HDF5 and writes samples in input order through a bounded reorder buffer, so
// the output is byte-identical for any thread count. Shards are staged in OUT/.pack-staging/
// and published only when the whole run succeeded: moved into OUT under names that OUT's
// current manifest does not use (shard_NNNNN.h5 into a fresh folder; over a dataset that uses
// those, shard_g1_NNNNN.h5, and the other way round), then manifest.json is replaced
// atomically (the commit), then the shards it no longer lists are removed. So a run that
// fails or is killed at any point leaves the dataset that was in OUT whole and usable; a
// failure also takes its own files away again (ds_pack_main: staging, moved shards, an OUT
// it made), what a kill leaves goes with the next successful run.
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

// Model-dependent sizes, with the reference's values as defaults; pack takes them from its
// options (--image-size, ...), which must match the model config the shards are for.
typedef struct {
    int image_size, image_tokens;               // S of the padded square; P of <im_patch>
    int video_frames, video_size, video_tokens; // F frames of S x S; P of <vi_patch>
    int audio_tokens;                           // P of <so_patch>
} ds_pack_sizes;

ds_pack_sizes ds_pack_sizes_reference(void); // 336, 576, 64, 224, 64, 8

typedef struct {
    const char *const *json_files; // reference-format JSON lists
    int n_json;
    const char *const *jsonl_files; // custom grounding JSONL
    int n_jsonl;
    const char *media_root;     // media paths are relative to it; NULL: each input's folder
    const char *tokenizer_path; // tokenizer.model
    const char *out_dir;
    int64_t shard_samples; // samples per shard (default 4096)
    const char *source;    // dataset name of every sample; NULL: the input file's base name
                           // without its extension
    int threads;           // worker threads, >= 1
    bool fail_on_error;    // stop at the first bad sample instead of skipping it
    unsigned task_mask;    // pack only samples of these tasks (bits 1 << ds_task); 0: all
    int64_t max_len;       // tokens per sample after expansion (default 2048)
    int zstd_level;        // of every dataset in the shards; 0: shard.h's defaults
    ds_pack_sizes sizes;
    int progress; // 1 progress bar / lines on stderr, 0 none, -1 auto (bar on a TTY)
} ds_pack_config;

typedef struct {
    int64_t samples, skipped, filtered, tokens, shards; // filtered: of other tasks than asked
    int64_t images, videos, audios; // media rows written (a file shared by shards counts per shard)
    double seconds;
} ds_pack_stats;

// Defaults for everything but the files and folders.
ds_pack_config ds_pack_defaults(void);
// Packs; input order = the JSON files in order, then the JSONL files in order. Fails (ag_fail,
// one line) on unreadable inputs, the first bad sample when fail_on_error, I/O errors, or when
// no sample at all could be packed. stats may be NULL.
void ds_pack(const ds_pack_config *cfg, ds_pack_stats *stats);
// The `groundc pack` command line (argv without "groundc pack"); returns the exit code.
int ds_pack_main(int argc, char **argv);
void ds_pack_usage(FILE *out);
