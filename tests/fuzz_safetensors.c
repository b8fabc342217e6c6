// fuzz_safetensors.c: libFuzzer target for the safetensors reader (checkpoints, HF weights).
// Any bytes must give either a valid file or a one-line error, never a crash or a leak; a
// file that opens is read through ag_st_load_into for every F32/BF16/F16/F64 entry.
// FUZZ_CORPUS: tests/fixtures *.safetensors
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/context.h"
#include "autograd/error.h"
#include "autograd/safetensors.h"

static jmp_buf fuzz_jmp;
static void on_error(const char *message) {
    (void)message;
    longjmp(fuzz_jmp, 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/fuzz_st_%d.safetensors", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f)) abort();
    static ag_ctx *ctx;
    if (!ctx) ctx = ag_ctx_new(AG_CPU);
    ag_st_file *volatile st = NULL;
    ag_set_error_handler(on_error);
    if (setjmp(fuzz_jmp) == 0) {
        st = ag_st_open(path);
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
    unlink(path);
    return 0;
}
