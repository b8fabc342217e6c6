// fuzz_safetensors.c: libFuzzer target for the safetensors reader (checkpoints, HF weights).
// Any bytes must give either a valid file or a one-line error, never a crash, a leak or an
// open descriptor; a file that opens is read through ag_st_load_into for every
// F32/BF16/F16/F64 entry (fuzz_util.h).
// FUZZ_CORPUS: tests/fixtures *.safetensors
#include "autograd/safetensors.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_weights("st", "safetensors", data, size, ag_st_open);
    return 0;
}
