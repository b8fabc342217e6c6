// fuzz_pack_jsonl.c: libFuzzer target for the custom grounding JSONL input of `groundc pack`
// (data/jsonl.h), without media: ds_records_read_jsonl, then per record
// ds_grounding_record_parse and, for a few media sizes and durations standing in for the
// decoded file, ds_grounding_conversation and ds_render. Never a crash or a leak; reasons are
// one line; an answer written for a record must parse back (ds_parse_box / ds_parse_span) to
// a box or span inside [0, 1] that is not reversed.
// FUZZ_CORPUS: tests/fixtures/fuzz/fuzz_pack_jsonl *.jsonl
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/error.h"
#include "data/grounding.h"
#include "data/jsonl.h"
#include "data/template.h"
#include "fuzz_util.h"

static void fz_check(bool ok, const char *what, const char *text) {
    if (ok) return;
    fprintf(stderr, "fuzz_pack_jsonl: %s: \"%s\"\n", what, text ? text : "(null)");
    abort();
}

static bool fz_unit(double v) {
    return v >= 0 && v <= 1;
}

static void fz_answer(const ds_grounding_record *g, const char *answer) {
    if (g->kind == DS_MEDIA_IMAGE) {
        ds_box b;
        fz_check(ds_parse_box(answer, &b), "the answer is no box", answer);
        fz_check(fz_unit(b.x1) && fz_unit(b.y1) && fz_unit(b.x2) && fz_unit(b.y2) && b.x1 <= b.x2 &&
                     b.y1 <= b.y2,
                 "the box is outside [0, 1] or reversed", answer);
    } else {
        ds_span s;
        fz_check(ds_parse_span(answer, &s), "the answer is no span", answer);
        fz_check(fz_unit(s.t1) && fz_unit(s.t2) && s.t1 <= s.t2,
                 "the span is outside [0, 1] or reversed", answer);
    }
}

static void fz_record(const ds_record *r) {
    char err[256];
    if (!r->item) {
        fz_check(r->error && r->error[0] && !strpbrk(r->error, "\r\n"), "bad line reason",
                 r->error);
        return;
    }
    ds_grounding_record g;
    if (!ds_grounding_record_parse(r->item, &g, err, sizeof err)) {
        fz_check(err[0] && !strpbrk(err, "\r\n"), "reason is not one line", err);
        return;
    }
    // Media the record may land on: landscape, portrait, a single pixel; long and short clips.
    static const int sizes[][2] = {{640, 480}, {480, 640}, {1, 1}};
    static const ds_timeline timelines[] = {{0, 10.0}, {0.5, 0.25}, {0, 3600.0}};
    for (int k = 0; k < 3; k++) {
        char *q, *a;
        if (!ds_grounding_conversation(&g, sizes[k][0], sizes[k][1], timelines[k], &q, &a, err,
                                       sizeof err)) {
            fz_check(err[0] && !strpbrk(err, "\r\n"), "reason is not one line", err);
            continue;
        }
        fz_answer(&g, a);
        ds_turn turns[2] = {{true, q}, {false, a}};
        ds_rendered rd;
        if (ds_render(turns, 2, &rd, err, (int)sizeof err)) ds_rendered_free(&rd);
        free(q);
        free(a);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_records("fuzz_pack_jsonl", "jsonl", data, size, ds_records_read_jsonl, fz_record);
    return 0;
}
