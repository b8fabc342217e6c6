// checked_output.c: see checked_output.h.
#include "train/checked_output.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "autograd/error.h"
#include "data/files.h"

void tr_write_npy_f32(const char *path, const float *x, long long rows, long long cols) {
    const uint16_t probe = 1;
    if (*(const uint8_t *)&probe != 1) ag_fail("%s: .npy writer needs a little-endian host", path);
    // magic, version 1.0, header length (u16 LE), then the dict padded with spaces and ended by
    // '\n' so that the data starts at a multiple of 64 bytes
    char head[256];
    int d =
        snprintf(head + 10, sizeof head - 10,
                 "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %lld), }", rows, cols);
    int total = (10 + d + 1 + 63) / 64 * 64;
    if (d < 0 || total > (int)sizeof head) ag_fail("%s: .npy header too long", path);
    memset(head + 10 + d, ' ', (size_t)(total - 10 - d));
    head[total - 1] = '\n';
    memcpy(head, "\x93NUMPY\x01\x00", 8);
    head[8] = (char)((total - 10) & 0xff);
    head[9] = (char)((total - 10) >> 8);
    ds_file_part parts[2] = {{head, (size_t)total},
                             {x, sizeof(float) * (size_t)rows * (size_t)cols}};
    ds_write_file_atomic(path, parts, 2);
}

void tr_flush_checked(FILE *f, const char *path) {
    errno = 0;
    if (fflush(f) || ferror(f))
        ag_fail("%s: write failed: %s", path, errno ? strerror(errno) : "an earlier write failed");
}

void tr_close_checked(FILE *f, const char *path) {
    errno = 0;
    bool bad = fflush(f) || ferror(f);
    int e = errno;
    if (fclose(f) && !bad) bad = true, e = errno;
    if (bad) ag_fail("%s: write failed: %s", path, e ? strerror(e) : "an earlier write failed");
}
