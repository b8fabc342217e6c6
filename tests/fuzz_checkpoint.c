// fuzz_checkpoint.c: libFuzzer target for the checkpoint reader: state.json
// (tr_ckpt_read_state) and the model and optimizer files (tr_ckpt_load_model,
// tr_ckpt_load_optim) of a tiny registry. The first input byte picks the file, the rest is
// its content. Any bytes give a loaded checkpoint or a one-line error, never a crash or leak.
// FUZZ_CORPUS: tests/fixtures/fuzz/checkpoint
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/context.h"
#include "autograd/error.h"
#include "fuzz_util.h"
#include "train/checkpoint.h"

static jmp_buf fuzz_jmp;
static void on_error(const char *message) {
    (void)message;
    longjmp(fuzz_jmp, 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    static ag_ctx *ctx;
    static gm_params *reg;
    static ag_adamw *opt;
    static char dir[64];
    if (!ctx) {
        ctx = ag_ctx_new(AG_CPU);
        reg = gm_params_new();
        ag_tensor *ps[2] = {ag_param(ctx, "w", AG_F32, AG_SHAPE(2, 3)),
                            ag_param(ctx, "b", AG_F32, AG_SHAPE(3))};
        for (int i = 0; i < 2; i++) {
            ag_set_trainable(ctx, ps[i], true);
            gm_params_add(reg, ps[i]);
        }
        opt = ag_adamw_new(ctx, ps, 2, NULL, (ag_adamw_config){0.9, 0.999, 1e-8, 0});
        snprintf(dir, sizeof dir, "/tmp/fuzz_ckpt_%d", (int)getpid());
        mkdir(dir, 0700);
    }
    static const char *const files[3] = {"state.json", "model.safetensors",
                                         "optim.rank00000.safetensors"};
    int which = data[0] % 3;
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, files[which]);
    fz_write_file(path, data + 1, size - 1);
    tr_dist d = {.rank = 0, .world = 1};
    tr_ckpt_state st = {0};
    ag_set_error_handler(on_error);
    if (setjmp(fuzz_jmp) == 0) {
        if (which == 0) tr_ckpt_read_state(dir, &st);
        if (which == 1) tr_ckpt_load_model(dir, reg);
        if (which == 2) tr_ckpt_load_optim(dir, &st, opt, &d);
    }
    ag_set_error_handler(NULL);
    unlink(path);
    return 0;
}
