// fuzz_util.h: helpers shared by the libFuzzer targets (tests/fuzz_*.c): writing the input to
// a temporary file, catching file descriptors that the code under test leaves open (a
// leaked descriptor per refused input exhausts the process's limit after a few thousand runs,
// and the next fopen fails far from the leak), and running an input through a record-file
// reader of data/jsonl.h.
#pragma once
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/error.h"
#include "data/jsonl.h"

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

// ag_fail exits in real use; fz_records makes it jump back to the harness instead.
static jmp_buf fz_records_jmp;
static inline void fz_records_on_error(const char *message) {
    (void)message;
    longjmp(fz_records_jmp, 1);
}

// One input for a record reader (ds_records_read_json / _jsonl): the bytes as the file
// /tmp/fuzz_pack_PID.EXT, read, each record given to each until the reader or a record fails
// (one line, caught); a file descriptor left open aborts, naming target.
static inline void fz_records(const char *target, const char *ext, const uint8_t *data, size_t size,
                              void (*read)(const char *, ds_record_file *),
                              void (*each)(const ds_record *)) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/fuzz_pack_%d.%s", (int)getpid(), ext);
    fz_write_file(path, data, size);
    static fz_fds fds;
    fz_fds_snapshot(&fds);
    ds_record_file f = {0};
    ag_set_error_handler(fz_records_on_error);
    if (setjmp(fz_records_jmp) == 0) {
        read(path, &f);
        for (int64_t i = 0; i < f.n; i++) each(&f.records[i]);
    }
    ag_set_error_handler(NULL);
    ds_record_file_free(&f);
    if (fz_fds_new(&fds, false)) {
        fprintf(stderr, "%s: the reader left a file descriptor open\n", target);
        abort();
    }
    unlink(path);
}
