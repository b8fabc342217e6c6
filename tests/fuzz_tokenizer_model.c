// fuzz_tokenizer_model.c: libFuzzer target for the SentencePiece model reader
// (ds_tokenizer_load_mem) and, when the bytes do load, for encode/decode of those same bytes
// as text. Built with GROUNDC_FUZZ=ON (clang) and run briefly by scripts/fuzz.sh:
//   scripts/fuzz.sh                      # every fuzz target, FUZZ_SECONDS each (default 20)
//   build-fuzz/tests/fuzz_tokenizer_model build-fuzz/corpus/fuzz_tokenizer_model -max_len=65536
// FUZZ_CORPUS: tests/fixtures/tokenizer *.model
// FUZZ_OPTIONS: -max_len=65536
//
// ag_fail exits the process; here an error handler longjmps back instead, so refused inputs
// are the normal, expected outcome (the loader frees everything before it fails).
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/error.h"
#include "data/tokenizer.h"

static jmp_buf ds_fuzz_jmp;

static void ds_fuzz_on_error(const char *message) {
    (void)message;
    longjmp(ds_fuzz_jmp, 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ag_set_error_handler(ds_fuzz_on_error);
    if (setjmp(ds_fuzz_jmp) == 0) {
        ds_tokenizer *tok = ds_tokenizer_load_mem(data, size, "fuzz input");
        // A model that loads must tokenize anything without failing: encode the input itself
        // (arbitrary bytes, so malformed UTF-8 too) and decode the ids back.
        int64_t n = 0;
        int32_t *ids =
            ds_tokenizer_encode_alloc(tok, (const char *)data, size < 4096 ? size : 4096, 0, &n);
        size_t len = 0;
        char *text = ds_tokenizer_decode(tok, ids, n, &len);
        if (strlen(text) > len) abort(); // the decoded length must cover the string
        free(text);
        free(ids);
        ds_tokenizer_free(tok);
    }
    ag_set_error_handler(NULL);
    return 0;
}
