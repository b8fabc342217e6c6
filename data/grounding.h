// grounding.h: boxes and time spans as the reference writes them in text.
// Boxes: "[x1, y1, x2, y2]", normalised to [0, 1] relative to the image padded to a square
// (centred, as LLaVA's expand2square pads), 3 decimals. Spans: "{t1, t2}", normalised by
// the duration, 2 decimals. Parsing follows the reference's pattern
// \[[0-9.]+, [0-9.]+, [0-9.]+, [0-9.]+\] (and {[0-9.]+, [0-9.]+} for spans).
#pragma once
#include <stdbool.h>
#include <stddef.h>

typedef struct {
    double x1, y1, x2, y2;
} ds_box;

typedef struct {
    double t1, t2;
} ds_span;

// Where a medium's samples sit on its file's timeline, in seconds: the first decoded video
// frame (or audio sample) is `start` seconds after the file's start and they last `duration`.
// Spans are normalised to this part: 0 is the first frame, 1 the end of the last, which is
// what the model sees; annotations and answers in seconds count from the file's start, as
// players and ffprobe do.
typedef struct {
    double start, duration;
} ds_timeline;

// A box in pixels of a w x h image -> normalised to the padded square, clamped to [0, 1].
ds_box ds_box_to_square(ds_box pixels, int w, int h);
// The inverse: normalised square coordinates -> pixels of the original image, clamped.
ds_box ds_box_from_square(ds_box norm, int w, int h);
// A span in seconds of the file -> normalised to the timeline, clamped to [0, 1]; and back.
ds_span ds_span_to_timeline(ds_span seconds, ds_timeline tl);
ds_span ds_span_from_timeline(ds_span norm, ds_timeline tl);
// Writes "[0.123, 0.456, 0.789, 0.912]" / "{0.09, 0.15}"; returns buf.
char *ds_format_box(ds_box b, char *buf, size_t n);
char *ds_format_span(ds_span s, char *buf, size_t n);
// The first box / span in text; false when there is none.
bool ds_parse_box(const char *text, ds_box *out);
bool ds_parse_span(const char *text, ds_span *out);
// Every box (boxes true) and span (spans true) pattern in text, not only the first: false,
// with the offending one and why in why, when a coordinate lies outside [0, 1] (pixels where
// normalised values belong) or a box or span is reversed (x2 < x1, y2 < y1, t2 < t1).
bool ds_check_normalised(const char *text, bool boxes, bool spans, char *why, size_t n);
// Intersection over union; 0 for degenerate inputs.
double ds_box_iou(ds_box a, ds_box b);
double ds_span_iou(ds_span a, ds_span b);
