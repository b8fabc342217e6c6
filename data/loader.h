// loader.h: the streaming loader. It mixes one or more dataset folders (data/FORMAT.md) into
// one deterministic, infinite sample stream, cuts it into data-parallel micro-batches, and
// prepares them ahead of the training loop on background threads: padded ids, shifted
// targets, media rows. Its cursor (positions consumed) resumes the stream exactly, with any
// world size that divides the global batch.
//
// The global stream (fixed by the seed and the dataset list, nothing else):
//   * Weights are made integers q_d with period M = sum q_d: the smallest M <= 65536 for
//     which every w_d / sum(w) * M is within 1e-6 of an integer >= 1 (2:1 gives 2/1, 0.7:0.3
//     gives 7/3); otherwise M = 65536 with largest-remainder rounding (each q_d >= 1).
//   * Position p belongs to dataset schedule[p mod M], where schedule is one period of smooth
//     weighted round-robin over q (nginx's: every dataset's credit grows by q_d, the largest
//     credit wins, ties to the lower index, and the winner pays M). Every window of M
//     consecutive positions holds exactly q_d samples of dataset d, spread evenly.
//   * The k-th position of dataset d (k counted from position 0) is epoch e = k / N_d, slot
//     i = k mod N_d, and reads sample perm(seed, d, e)[i], where perm is a Fisher-Yates
//     shuffle of 0..N_d-1 (samples numbered in shard order) driven by a counter-based
//     generator: draw c is splitmix64's finaliser of key + (c + 1) * 0x9e3779b97f4a7c15 with
//     key = mix(mix(mix(seed) ^ d) ^ e), uniform draws by rejection. Each dataset cycles
//     through its own epochs, each a fresh permutation; nothing depends on earlier draws.
//
// Data parallel batches: G = micro * accumulation * world samples per optimizer step. The
// micro-batch of global step s, accumulation index a, rank r holds the stream positions
// s*G + a*(micro*world) + r*micro + [0, micro). Micro-steps therefore take micro * world
// consecutive positions, every rank an equal contiguous share of each.
//
// A batch (B = micro samples, T = min(max_len, longest sample), at least 1):
//   * ids (B, T): the sample's tokens, padded with pad_id. A sample longer than max_len is
//     truncated to its first max_len tokens (the packer already enforces max_len); with
//     check_media, where that cut would split a media placeholder block, to the tokens before
//     the block's start token instead, and a block cut off takes its media row with it (the
//     sample has no row of that kind in the batch): the model never sees half a block or a
//     row without its block. (train refuses a data.max_len that splits blocks at start-up.)
//   * targets (B, T): the shift happens here. targets[b][t] = ids[b][t + 1] when
//     t + 1 < length and loss_mask[t + 1] == 1 (token t + 1 is predicted from tokens <= t),
//     else -100: on unsupervised tokens, on the last token of the sample and on padding.
//   * media: every sample with an image gets its own row of images (n_images, S, S, 3),
//     image_index[b] is that row or -1, in sample order (likewise videos (n, F, S, S, 3) and
//     audios float32 (n, C, T, M)); n_images is 0 when no sample of the batch has an image.
//     Within one loader every shard holding a media kind must have the same geometry.
//
// Threads: one reader thread makes every HDF5 call of a loader (opening, verifying and
// reading shards, in stream order); `threads` collate workers build the padded arrays
// (threads = 0: the reader does it); `prefetch` batches are prepared ahead. Output does not
// depend on either. Decompressing media is most of the work, so the reader does not do it:
// where a media dataset is stored as FORMAT.md says (one row per chunk, zstd or no filter)
// the workers decompress each row's chunk as stored (and widen float16 audio) straight into
// the batch, reading it from a read-only mapping of the shard file (located once through
// H5Dget_chunk_info_by_coord) or, where the file cannot be mapped, from a copy the reader made
// with H5Dread_chunk; anything else goes through the shard layer. A mapped shard cut short in
// place while a loader reads it is reported like a truncated chunk (the loader catches the
// SIGBUS of reading lost pages; it installs a process-wide handler that passes every other
// SIGBUS on to the previous disposition).
// HDF5 (the Debian serial build) is not thread-safe: the readers of all loaders in a process
// take one process-wide lock around their HDF5 work, but no other code may call HDF5 while a
// loader is open (and a process exiting with a loader open waits for its reader's current
// batch: HDF5 shuts itself down at exit).
// Any failure of the reader (corrupt or truncated shard, a sample that fails the checks above,
// an audio row holding NaN or inf: the message naming file, dataset and sample or row, plus
// the stream position) makes ds_loader_next fail with that one line once it reaches the batch
// that could not be read; batches before it are delivered.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "data/template.h" // ds_media_kind

#ifdef __cplusplus
extern "C" {
#endif

#define DS_LOADER_MAX_DATASETS 4096
#define DS_IGNORE_TARGET       (-100) // targets entry that is not in the loss

typedef struct {
    const char *dir; // dataset folder: manifest.json and its shards
    double weight;   // mixing weight, > 0, relative to the others
} ds_loader_dataset;

// Where the stream stands: save it with a checkpoint, hand it back through the config.
typedef struct {
    uint64_t seed;
    int64_t position; // global stream positions consumed by all ranks together
    char digest[65];  // SHA-256 hex of the dataset list (weights, shards and their checksums)
} ds_cursor;

typedef struct {
    const ds_loader_dataset *datasets;
    int num_datasets;
    uint64_t seed;
    int64_t micro;        // samples per rank and micro-step (the batch's B)
    int64_t accumulation; // micro-steps per optimizer step
    int rank, world;      // this process among world data-parallel ranks
    int64_t max_len;      // cap on T
    int32_t pad_id;       // ids of padding positions
    int prefetch;         // batches prepared ahead, 1..64 (0: 4)
    int threads;          // collate workers, 0..64 (0: the reader thread collates)
    bool checksums;       // check every shard's SHA-256 against its manifest at open
    // Read media rows through the shard layer only, decompressed on the reader thread (slower;
    // for comparisons and tests). Default: direct chunk reads, decompressed by the workers.
    bool no_direct_chunks;
    // Direct chunk reads copy each chunk out of the file (H5Dread_chunk) for the workers,
    // instead of the workers decompressing it from a read-only mapping of the shard (slower;
    // for comparisons and tests). Default: mapped where the file allows it.
    bool no_map;
    // NULL: start at position 0. Otherwise continue from there: seed and digest must match,
    // and position must be a multiple of micro * world.
    const ds_cursor *resume;
    // Where the cursor came from, to name in its errors (a checkpoint's state.json); NULL:
    // "resume cursor".
    const char *resume_from;
    // When set, every shard's first sample of each media kind has its placeholder ids
    // media_patch_id[kind] counted at open (ds_media_geometry.tokens): shards do not record the
    // pack's --image-tokens / --video-tokens / --audio-tokens, their token streams do.
    bool count_media_tokens;
    int32_t media_patch_id[DS_MEDIA_KINDS];
    // Per-sample checks as the reader reads each sample (ds_sample_check), failing with the
    // shard, the sample and the stream position: vocab > 0: every id below vocab; check_media:
    // the placeholder blocks (media_start_id, media_patch_id, media_end_id; -1 start / end: not
    // used) match the sample's media rows, each block holding the patch tokens counted at open
    // (any number unless count_media_tokens). Off (0 / false) by default.
    int64_t vocab;
    bool check_media;
    int32_t media_start_id[DS_MEDIA_KINDS], media_end_id[DS_MEDIA_KINDS];
} ds_loader_config;

typedef struct {
    int64_t B, T;
    int32_t *ids;     // (B, T)
    int32_t *targets; // (B, T), DS_IGNORE_TARGET where not in the loss
    int32_t *lengths; // (B) tokens per sample after truncation
    int64_t step;     // global step s of this micro-batch
    int64_t accum;    // its accumulation index a (the optimizer steps after a = accumulation-1)
    // Per sample, for logging and tests.
    int64_t *positions;          // (B) global stream positions
    int32_t *dataset;            // (B) index into the config's datasets
    int64_t *sample;             // (B) sample index in its dataset (shard order)
    uint8_t *task, *granularity; // (B) ds_task, 0 coarse / 1 fine
    const char **source;         // (B) source name (owned by the loader, valid until close)
    // Media, in sample order. *_index[b] is the sample's row or -1.
    int64_t n_images;
    int32_t image_size; // S (0 when no shard of the loader holds images)
    uint8_t *images;    // (n_images, S, S, 3)
    int32_t *image_index;
    int32_t *image_orig_size; // (n_images, 2): original width, height
    int64_t n_videos;
    int32_t video_frames, video_size;
    uint8_t *videos; // (n_videos, F, S, S, 3)
    int32_t *video_index;
    float *video_duration; // (n_videos) seconds
    int64_t n_audios;
    int32_t audio_clips, audio_frames, audio_mels;
    float *audios; // (n_audios, C, T, M)
    int32_t *audio_index;
    float *audio_duration; // (n_audios) seconds
} ds_batch;

typedef struct ds_loader ds_loader;

// Reads and verifies every manifest and shard (ds_manifest_verify; SHA-256 when
// cfg->checksums), checks the config and the resume cursor, and starts the threads. Any
// problem is one ag_fail line; nothing is left running.
ds_loader *ds_loader_open(const ds_loader_config *cfg);
// The next micro-batch of this rank; blocks until it is ready. It stays valid until the next
// call or ds_loader_close. Fails (ag_fail) with the reader's message if it could not be read.
const ds_batch *ds_loader_next(ds_loader *l);
// Positions consumed after the batches returned so far: start + batches * micro * world.
ds_cursor ds_loader_cursor(const ds_loader *l);
// Stops the threads and frees everything (batches included). NULL is fine.
void ds_loader_close(ds_loader *l);
// Whether a cursor's digest (ds_cursor.digest) is that of the stream these datasets make:
// the same datasets, order, weights and shard contents (either digest version). Reads their
// manifests only (a shard's contents stand for its sha256 there); fails on a bad manifest.
bool ds_stream_matches(const ds_loader_dataset *datasets, int num_datasets, const char *digest);

// The stream itself, without reading anything: the dataset and sample of global position p.
// Not to be called from two threads at once on one loader.
void ds_loader_locate(ds_loader *l, int64_t position, int32_t *dataset, int64_t *sample);
// Samples of dataset d; the integer weights q_d and their period M of the schedule above.
int64_t ds_loader_dataset_samples(const ds_loader *l, int d);
void ds_loader_schedule(const ds_loader *l, int64_t *q, int64_t *period);

// The media geometry of every batch, per kind (DS_MEDIA_IMAGE: S; DS_MEDIA_VIDEO: F, S;
// DS_MEDIA_AUDIO: C, T, M), and the shard that set it; dims all 0 and file NULL when no shard
// holds that kind. Valid until ds_loader_close. tokens: the placeholder (patch) tokens a sample
// carries per item of that kind, the same in every shard (-1 unless cfg.count_media_tokens).
typedef struct {
    int32_t dims[3];
    const char *file;
    int64_t tokens;
} ds_media_geometry;
ds_media_geometry ds_loader_geometry(const ds_loader *l, ds_media_kind kind);

#ifdef __cplusplus
}
#endif
