// atomic_file.c: see atomic_file.h.
#include "train/atomic_file.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "autograd/error.h"

void tr_write_file_atomic(const char *path, const tr_file_part *parts, int n) {
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp)
        ag_fail("%s: path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) ag_fail("%s: cannot write: %s", tmp, strerror(errno));
    bool ok = true;
    for (int i = 0; i < n && ok; i++)
        ok = fwrite(parts[i].data, 1, parts[i].size, f) == parts[i].size;
    ok = ok && !fflush(f) && !fsync(fileno(f));
    int e = errno;
    if (fclose(f)) ok = false, e = errno;
    if (!ok) {
        unlink(tmp);
        ag_fail("%s: write failed: %s", path, strerror(e));
    }
    if (rename(tmp, path)) {
        e = errno;
        unlink(tmp);
        ag_fail("%s: cannot rename %s into place: %s", path, tmp, strerror(e));
    }
}

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
    tr_file_part parts[2] = {{head, (size_t)total},
                             {x, sizeof(float) * (size_t)rows * (size_t)cols}};
    tr_write_file_atomic(path, parts, 2);
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
