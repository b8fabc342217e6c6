// fuzz_util.h: helpers shared by the libFuzzer targets (tests/fuzz_*.c): writing the input to
// a temporary file, and catching file descriptors that the code under test leaves open (a
// leaked descriptor per refused input exhausts the process's limit after a few thousand runs,
// and the next fopen fails far from the leak).
#pragma once
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// path <- data; a failure here is the harness's own problem, so it says why and aborts.
static inline void fz_write_file(const char *path, const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "%s: cannot create the fuzz input file: %s\n", path, strerror(errno));
        abort();
    }
    bool ok = fwrite(data, 1, size, f) == size;
    if (fclose(f) != 0) ok = false;
    if (!ok) {
        fprintf(stderr, "%s: cannot write the fuzz input file: %s\n", path, strerror(errno));
        abort();
    }
}

#define FZ_MAX_FDS 4096

// The descriptors open in this process (below FZ_MAX_FDS).
typedef struct {
    bool open[FZ_MAX_FDS];
} fz_fds;

static inline void fz_fds_snapshot(fz_fds *s) {
    memset(s, 0, sizeof *s);
    DIR *d = opendir("/proc/self/fd");
    if (!d) return;
    int self = dirfd(d);
    for (struct dirent *e; (e = readdir(d));) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] != '.' && fd != self && fd >= 0 && fd < FZ_MAX_FDS) s->open[fd] = true;
    }
    closedir(d);
}

// How many descriptors are open now that were not open in before; close_them closes those.
static inline int fz_fds_new(const fz_fds *before, bool close_them) {
    fz_fds now;
    fz_fds_snapshot(&now);
    int n = 0;
    for (int fd = 0; fd < FZ_MAX_FDS; fd++)
        if (now.open[fd] && !before->open[fd]) {
            n++;
            if (close_them) close(fd);
        }
    return n;
}
