// fuzz_config.c: libFuzzer target for the YAML config loader and the training-config reader:
// any bytes give a config or a one-line error, never a crash. Run without leak detection:
// an error thrown half-way through building the tree abandons what was built (the process
// exits on errors in real use).
// FUZZ_CORPUS: configs *.yaml
// FUZZ_OPTIONS: -detect_leaks=0
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "autograd/error.h"
#include "train/train_lm.h"
#include "train/yaml_tree.h"

static jmp_buf fuzz_jmp;
static void on_error(const char *message) {
    (void)message;
    longjmp(fuzz_jmp, 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/fuzz_cfg_%d.yaml", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f)) abort();
    tr_yaml *volatile root = NULL;
    ag_set_error_handler(on_error);
    if (setjmp(fuzz_jmp) == 0) {
        root = tr_yaml_load(path);
        tr_yaml_set(root, "train.steps=3");
        tr_lm_config cfg;
        tr_lm_config_read(root, &cfg);
    }
    ag_set_error_handler(NULL);
    if (root) tr_yaml_free(root);
    unlink(path);
    return 0;
}
