// manifest.h: DATASET/manifest.json of data/FORMAT.md: totals, one entry per shard (file,
// counts, size, SHA-256), sample counts per task and per source. Built from the ds_shard_info
// of each finished shard, written atomically (tmp + rename), read back with every field
// checked, and used to verify a dataset folder before training on it.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "data/shard.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DS_MANIFEST_NAME "manifest.json"

typedef struct {
    char *file; // name inside the dataset folder, e.g. "shard_00000.h5"
    int64_t num_samples, num_tokens;
    int64_t bytes; // file size; -1 when the manifest does not record it
    char sha256[65];
} ds_manifest_shard;

typedef struct {
    char *name;
    int64_t count;
} ds_manifest_count;

typedef struct {
    int32_t schema_version;
    char tokenizer_digest[65];
    int64_t num_samples, num_tokens;
    int num_shards;
    ds_manifest_shard *shards;
    int num_tasks; // tasks with at least one sample, in ds_task order
    ds_manifest_count *tasks;
    int num_sources; // in order of first appearance
    ds_manifest_count *sources;
    int64_t shards_cap, tasks_cap, sources_cap; // allocated lengths (ag_xgrow)
} ds_manifest;

// An empty manifest for shards packed with this tokenizer (64-digit hex SHA-256).
void ds_manifest_init(ds_manifest *m, const char *tokenizer_digest);
// Adds one finished shard (file is its name inside the folder) and its task/source counts.
void ds_manifest_add_shard(ds_manifest *m, const char *file, const ds_shard_info *info);
// Writes DIR/manifest.json atomically (ds_write_file_atomic).
void ds_manifest_write(const ds_manifest *m, const char *dir);
// Reads and checks DIR/manifest.json (types, hex digests, totals = sums over shards).
void ds_manifest_read(ds_manifest *m, const char *dir);
// Checks that every listed shard exists with the recorded size and (when checksums) SHA-256,
// opens as a valid shard with the manifest's schema version and tokenizer digest, and holds
// the recorded sample and token counts. Fails on the first problem, naming the file.
void ds_manifest_verify(const ds_manifest *m, const char *dir, bool checksums);
void ds_manifest_free(ds_manifest *m);

#ifdef __cplusplus
}
#endif
