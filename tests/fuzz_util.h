// fuzz_util.h: helpers shared by the libFuzzer targets (tests/fuzz_*.c): writing the input to
// a temporary file, catching file descriptors that the code under test leaves open (a
// leaked descriptor per refused input exhausts the process's limit after a few thousand runs,
// and the next fopen fails far from the leak), and running an input through a record-file
// reader of data/jsonl.h or a weight-file reader (safetensors.h, torch_file.h).
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

#include "autograd/context.h"
#include "autograd/error.h"
#include "autograd/safetensors.h"
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

// ag_fail exits in real use; fz_records and fz_weights make it jump back to the harness.
static jmp_buf fz_records_jmp;
static inline void fz_records_on_error(const char *message) {
    (void)message;
    longjmp(fz_records_jmp, 1);
}

// Aborts, naming target, when the code under test left a descriptor open since before.
static inline void fz_no_new_fds(const char *target, const fz_fds *before) {
    if (fz_fds_new(before, false)) {
        fprintf(stderr, "%s: the reader left a file descriptor open\n", target);
        abort();
    }
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
    fz_no_new_fds(target, &fds);
    unlink(path);
}

// One input for a weight-file reader (ag_st_open, ag_pt_open): the bytes as the file
// /tmp/fuzz_TARGET_PID.EXT, opened, and every F32/BF16/F16/F64 entry of up to 2^20 elements
// loaded through ag_st_load_into, until the reader fails (one line, caught); a file
// descriptor left open aborts.
static inline void fz_weights(const char *target, const char *ext, const uint8_t *data, size_t size,
                              ag_st_file *(*open_file)(const char *)) {
    char path[96];
    snprintf(path, sizeof path, "/tmp/fuzz_%s_%d.%s", target, (int)getpid(), ext);
    fz_write_file(path, data, size);
    static ag_ctx *ctx;
    if (!ctx) ctx = ag_ctx_new(AG_CPU);
    static fz_fds fds;
    fz_fds_snapshot(&fds);
    ag_st_file *volatile st = NULL;
    ag_set_error_handler(fz_records_on_error);
    if (setjmp(fz_records_jmp) == 0) {
        st = open_file(path);
        for (int i = 0; i < st->n; i++) {
            const ag_st_entry *e = &st->entries[i];
            if (strcmp(e->dtype, "F32") && strcmp(e->dtype, "BF16") && strcmp(e->dtype, "F16") &&
                strcmp(e->dtype, "F64"))
                continue;
            ag_shape s = {.ndim = e->ndim};
            int64_t n = 1;
            for (int d = 0; d < e->ndim && d < AG_MAX_DIMS; d++) n *= s.d[d] = e->shape[d];
            if (e->ndim > AG_MAX_DIMS || n > (1 << 20)) continue; // keep each run small
            ag_st_load_into(st, e, ag_new(ctx, AG_F32, s));
        }
    }
    ag_set_error_handler(NULL);
    if (st) ag_st_close(st);
    ag_step_reset(ctx);
    fz_no_new_fds(target, &fds);
    unlink(path);
}
