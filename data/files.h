// files.h: file and folder helpers shared by the data tools (pack, synth) and training
// (checkpoints, exports, reports).
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// Whether dir holds an entry called name (of any kind; a symbolic link counts, even broken).
bool ds_dir_has(const char *dir, const char *name);

// mkdir -p: creates path and its missing parents. Fails naming the folder that cannot be made,
// or path when it exists but is not a folder.
void ds_make_dirs(const char *path);

// Reads a whole file into a malloc'd buffer with a NUL after its last byte (length in *n, may
// be NULL). A regular file takes one allocation of its size; anything else (a pipe, a device
// such as /dev/zero) is read in growing steps. A file of more than max bytes, or a folder, is
// refused. Fails (ag_fail) naming the file.
char *ds_read_file_max(const char *path, size_t max, size_t *n);
// The 1-based line and column of byte at of text (a parser's error offset, for messages).
void ds_line_col(const char *text, size_t at, int64_t *line, int64_t *col);
// Whether s is well-formed UTF-8 by structure (lead and continuation bytes): HDF5 stores any
// bytes, but h5py decodes UTF-8 strings and would fail on a bad sequence long after packing.
bool ds_utf8_valid(const char *s);
// At most n - 1 bytes of s for a message: control characters become '?' (a reason must stay
// one line) and a UTF-8 sequence cut short by the limit is left out. Returns buf.
const char *ds_quote(const char *s, char *buf, size_t n);
// Fails ("PATH: is a FIFO, not a regular file") unless path is a regular file (after links):
// media readers call it first, as opening a FIFO waits for a writer and a device never ends.
void ds_require_file(const char *path);
// The same without a limit beyond memory.
char *ds_read_file(const char *path, size_t *n);

typedef struct {
    const void *data;
    size_t size;
} ds_file_part;

// The temporary name ds_write_file_atomic writes path's bytes to first, "<path>.tmp.<pid>",
// into tmp (n bytes); fails naming path when it does not fit.
void ds_atomic_tmp_path(const char *path, char *tmp, size_t n);

// Puts the finished temporary file tmp in place as path: fsync, rename over path, folder sync
// (for writers that must hand a library a file name, such as FFmpeg's). Fails naming path;
// tmp is removed first.
void ds_commit_tmp(const char *tmp, const char *path);

// Writes the parts, in order, as path's new content without ever leaving a half-written file
// under that name: the bytes go to "<path>.tmp.<pid>" in the same folder, are fsynced, the file
// is renamed over path and the folder synced. Fails (ag_fail) naming path; the temporary file
// is removed first.
void ds_write_file_atomic(const char *path, const ds_file_part *parts, int n);
