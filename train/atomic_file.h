// atomic_file.h: whole-file writes that never leave a half-written file under the final name:
// the bytes go to "<path>.tmp.<pid>" in the same folder, are fsynced, and the file is renamed
// over path (the temporary file is removed when anything fails).
#pragma once
#include <stddef.h>
#include <stdio.h>

typedef struct {
    const void *data;
    size_t size;
} tr_file_part;

// Writes the parts, in order, as path's new content. Fails (ag_fail) naming the file.
void tr_write_file_atomic(const char *path, const tr_file_part *parts, int n);
// Writes a float32 array (rows, cols) as a NumPy .npy file (format 1.0, little-endian '<f4',
// C order), atomically as above.
void tr_write_npy_f32(const char *path, const float *x, long long rows, long long cols);

// For a stream written as it goes (a log such as metrics.jsonl): flushes f and fails naming
// path when the flush or any earlier write on f failed. A write that fails inside fprintf's
// automatic flush sets only the stream's error flag, and a later fflush or fclose can return 0.
void tr_flush_checked(FILE *f, const char *path);
// tr_flush_checked, then fclose (also checked); f is closed either way.
void tr_close_checked(FILE *f, const char *path);
