// fuzz_gguf_inspect.c: libFuzzer target for the GGUF reader of `groundc inspect`
// (train/inspect_files.h): any bytes must give a report or a one-line error, never a crash,
// a leak or an open descriptor.
// FUZZ_CORPUS: tests/fixtures/fuzz/fuzz_gguf
#include "fuzz_util.h"
#include "train/inspect_files.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/fuzz_gguf_%d.gguf", (int)getpid());
    fz_write_file(path, data, size);
    static FILE *sink;
    if (!sink) sink = fopen("/dev/null", "w");
    if (!sink) abort();
    static fz_fds fds;
    fz_fds_snapshot(&fds);
    ag_set_error_handler(fz_records_on_error);
    if (setjmp(fz_records_jmp) == 0) tr_inspect_gguf(path, sink);
    ag_set_error_handler(NULL);
    fz_no_new_fds("fuzz_gguf_inspect", &fds);
    unlink(path);
    return 0;
}
