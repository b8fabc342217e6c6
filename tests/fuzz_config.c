// fuzz_config.c: libFuzzer target for the YAML config loader and the training-config reader:
// any bytes give a config or a one-line error, never a crash. Leaks are not checked: an error
// thrown half-way through building the tree abandons what was built (the process exits on
// errors in real use), so LeakSanitizer is told to ignore what a run allocates.
// FUZZ_CORPUS: configs *.yaml
// FUZZ_OPTIONS: -detect_leaks=0
//
// Each input is read as what it looks like: a stage or curriculum-stage config
// (tr_train_config_read, which also reads the model and init blocks), a model file, or the
// copy-task config. A refused input must close every file it opened: a descriptor left open
// fails the run (the loader once leaked its FILE and libyaml parser on each syntax error).
#include <sanitizer/lsan_interface.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "autograd/error.h"
#include "fuzz_util.h"
#include "train/model_config.h"
#include "train/train_config.h"
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
    fz_write_file(path, data, size);
    static fz_fds before;
    fz_fds_snapshot(&before);
    tr_yaml *volatile root = NULL;
    __lsan_disable();
    ag_set_error_handler(on_error);
    if (setjmp(fuzz_jmp) == 0) {
        root = tr_yaml_load(path);
        tr_yaml_set(root, "train.steps=3");
        if (tr_config_is_stage(root)) {
            tr_train_config cfg;
            tr_train_config_read(root, &cfg);
            tr_train_config_free(&cfg);
        } else if (tr_yaml_get(root, "llm")) {
            gm_groundinggpt_config cfg;
            tr_model_config_read(root, &cfg);
            tr_yaml_check_used(root);
        } else {
            tr_lm_config cfg;
            tr_lm_config_read(root, &cfg);
        }
    }
    ag_set_error_handler(NULL);
    if (root) tr_yaml_free(root);
    __lsan_enable();
    if (fz_fds_new(&before, false)) {
        fprintf(stderr, "fuzz_config: this input left a file descriptor open\n");
        abort();
    }
    unlink(path);
    return 0;
}
