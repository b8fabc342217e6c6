// checked_output.h: training's outputs with every write error caught: arrays saved whole (no
// half-written file under the final name), and logs written as they go.
#pragma once
#include <stdio.h>

// Writes a float32 array (rows, cols) as a NumPy .npy file (format 1.0, little-endian '<f4',
// C order), atomically (ds_write_file_atomic).
void tr_write_npy_f32(const char *path, const float *x, long long rows, long long cols);

// For a stream written as it goes (a log such as metrics.jsonl): flushes f and fails naming
// path when the flush or any earlier write on f failed. A write that fails inside fprintf's
// automatic flush sets only the stream's error flag, and a later fflush or fclose can return 0.
void tr_flush_checked(FILE *f, const char *path);
// tr_flush_checked, then fclose (also checked); f is closed either way.
void tr_close_checked(FILE *f, const char *path);
