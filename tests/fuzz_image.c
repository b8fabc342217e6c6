// fuzz_image.c: libFuzzer target for the image decoders (data/image.h), JPEG, PNG and the
// formats read through FFmpeg (GIF, WebP, BMP, TIFF) alike: any bytes must decode to a whole
// RGB buffer or be refused in one ag_fail line, never a crash, a leak or a sanitizer report.
// FUZZ_CORPUS: tests/fixtures/fuzz/fuzz_image
#include "data/image.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ag_set_error_handler(fz_records_on_error);
    if (setjmp(fz_records_jmp) == 0) {
        int w = 0, h = 0;
        uint8_t *rgb = ds_image_decode_memory(data, size, "fuzz input", &w, &h);
        if (!rgb || w <= 0 || h <= 0) abort();
        volatile uint8_t last = rgb[(size_t)w * h * 3 - 1]; // the whole buffer is there
        (void)last;
        free(rgb);
    }
    ag_set_error_handler(NULL);
    return 0;
}
