// fuzz_pack_json.c: libFuzzer target for what `groundc pack` reads from a reference-format
// (LLaVA / GroundingGPT) JSON list before any media is touched: ds_records_read_json, then per
// sample ds_json_sample_media, ds_json_sample_turns, ds_render and ds_infer_task. Any bytes
// give records or a one-line error, never a crash or a leak; every reason a sample is refused
// for must be one line too (pack prints it as "FILE: sample INDEX: reason").
// FUZZ_CORPUS: tests/fixtures/fuzz/fuzz_pack_json *.json
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/error.h"
#include "data/jsonl.h"
#include "data/shard.h"
#include "data/template.h"
#include "fuzz_util.h"

static void fz_one_line(const char *why) {
    if (!why || !why[0] || strpbrk(why, "\r\n")) {
        fprintf(stderr, "fuzz_pack_json: reason is not one line: \"%s\"\n", why ? why : "(null)");
        abort();
    }
}

// One record, as the packer's reader and workers see it.
static void fz_sample(const ds_record *r) {
    const cJSON *obj = r->item;
    const char *files[DS_MEDIA_KINDS];
    const char *bad = ds_json_sample_media(obj, files);
    if (bad) {
        fz_one_line(bad);
        return;
    }
    char err[256];
    int task, n;
    ds_turn *turns;
    if (!ds_json_sample_turns(obj, &task, &turns, &n, err, sizeof err)) {
        fz_one_line(err);
        return;
    }
    if (task < -1 || task >= DS_NTASKS) abort();
    ds_rendered rd;
    if (ds_render(turns, n, &rd, err, (int)sizeof err)) {
        free(ds_rendered_text(&rd));
        ds_rendered_free(&rd);
    } else {
        fz_one_line(err);
    }
    int inferred = ds_infer_task(turns, n, files[DS_MEDIA_VIDEO], files[DS_MEDIA_AUDIO]);
    if (inferred < 0 || inferred >= DS_NTASKS) abort();
    free(turns);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_records("fuzz_pack_json", "json", data, size, ds_records_read_json, fz_sample);
    return 0;
}
