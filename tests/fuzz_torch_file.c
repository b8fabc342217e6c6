// fuzz_torch_file.c: libFuzzer target for the PyTorch checkpoint reader (autograd/torch_file.h:
// zip directory, unpickler, storages, strides). Any bytes must give either a valid file or a
// one-line error, never a crash, a leak or an open descriptor; a file that opens is read
// through ag_st_load_into for every F32/BF16/F16/F64 entry (fuzz_util.h).
// FUZZ_CORPUS: tests/fixtures/torch
#include "autograd/torch_file.h"
#include "fuzz_util.h"

static ag_st_file *open_torch(const char *path) {
    (void)ag_pt_is_torch_file(path);
    return ag_pt_open(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_weights("pt", "pth", data, size, open_torch);
    return 0;
}
