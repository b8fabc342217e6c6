// inspect_files.h: `groundc inspect` of what is on disk besides configs (inspect.h dispatches):
//   - a dataset folder (manifest.json): totals, samples per task and per source, the shards,
//     and a check that every shard is present, valid and agrees with the manifest (and its
//     SHA-256, when asked);
//   - a shard (.h5): geometry, media rows, samples per task and granularity, per source,
//     sample lengths and supervised tokens;
//   - weights: a .safetensors or PyTorch (.pth / .bin) file, or a folder as train/import.h
//     opens it (an HF export: its config.json too): tensors grouped by name with layer numbers
//     folded to N, with shapes, dtypes and parameter counts;
//   - a GGUF file (or an export folder of them): version, metadata, tensors by type and group.
// Every report is a heading line and markdown tables; a damaged input is a one-line error.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

void tr_inspect_dataset(const char *dir, bool checksums, FILE *out);
void tr_inspect_shard(const char *path, FILE *out);
// --checksums of one shard: its size, SHA-256 and counts against the manifest.json beside it
// (fails when there is none, or it does not list the shard).
void tr_inspect_shard_checksum(const char *path, FILE *out);
void tr_inspect_weights(const char *path, FILE *out);
void tr_inspect_gguf(const char *path, FILE *out);
// Shared with inspect.c: "6.74 B" / "303.5 M" / "12.3 K"; "1.23 GiB" / "4.5 MiB" / "0.7 KiB";
// a markdown separator row of k columns of these widths, those from `left` on right-aligned.
const char *tr_human_count(char *buf, size_t n, int64_t x);
const char *tr_human_bytes(char *buf, size_t n, int64_t bytes);
void tr_md_rule(FILE *out, const int *widths, int k, int left);
// True when path starts with the GGUF magic / the HDF5 signature / a safetensors header (an
// 8-byte length below the file's size, then '{').
bool tr_is_gguf_file(const char *path);
bool tr_is_hdf5_file(const char *path);
bool tr_is_safetensors_file(const char *path);
