// grounding.c: see grounding.h.
#include "grounding.h"

#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>

#include "autograd/error.h"

// -0.0 becomes 0 too: "-0.000" would not match the reference's [0-9.]+ pattern.
static double clamp01(double v) {
    return v <= 0 ? 0 : v > 1 ? 1 : v;
}

ds_box ds_box_to_square(ds_box p, int w, int h) {
    double side = w > h ? w : h, ox = (side - w) / 2, oy = (side - h) / 2;
    // expand2square pastes at integer offsets ((side - w) // 2)
    ox = floor(ox);
    oy = floor(oy);
    return (ds_box){clamp01((p.x1 + ox) / side), clamp01((p.y1 + oy) / side),
                    clamp01((p.x2 + ox) / side), clamp01((p.y2 + oy) / side)};
}

ds_box ds_box_from_square(ds_box n, int w, int h) {
    double side = w > h ? w : h, ox = floor((side - w) / 2), oy = floor((side - h) / 2);
    double x1 = n.x1 * side - ox, y1 = n.y1 * side - oy, x2 = n.x2 * side - ox,
           y2 = n.y2 * side - oy;
    return (ds_box){fmin(fmax(x1, 0), w), fmin(fmax(y1, 0), h), fmin(fmax(x2, 0), w),
                    fmin(fmax(y2, 0), h)};
}

ds_span ds_span_to_timeline(ds_span t, ds_timeline tl) {
    return (ds_span){clamp01((t.t1 - tl.start) / tl.duration),
                     clamp01((t.t2 - tl.start) / tl.duration)};
}

ds_span ds_span_from_timeline(ds_span n, ds_timeline tl) {
    return (ds_span){tl.start + n.t1 * tl.duration, tl.start + n.t2 * tl.duration};
}

char *ds_format_box(ds_box b, char *buf, size_t n) {
    snprintf(buf, n, "[%.3f, %.3f, %.3f, %.3f]", b.x1, b.y1, b.x2, b.y2);
    return buf;
}

char *ds_format_span(ds_span s, char *buf, size_t n) {
    snprintf(buf, n, "{%.2f, %.2f}", s.t1, s.t2);
    return buf;
}

#define NUM "([0-9.]+)"

// Matches pattern in text; fills v[0..k) with the captured numbers.
// The k numbers of match m in s, into v; false when one does not parse ("1.2.3" matches
// [0-9.]+ but is no number).
static bool match_numbers(const char *s, const regmatch_t *m, int k, double *v) {
    bool ok = true;
    for (int i = 0; i < k; i++) {
        char num[64];
        int len = (int)(m[i + 1].rm_eo - m[i + 1].rm_so);
        if (len >= (int)sizeof num) len = (int)sizeof num - 1;
        snprintf(num, sizeof num, "%.*s", len, s + m[i + 1].rm_so);
        char *end;
        v[i] = strtod(num, &end);
        if (*end || end == num) ok = false;
    }
    return ok;
}

static regex_t compile(const char *pattern) {
    regex_t re;
    int rc = regcomp(&re, pattern, REG_EXTENDED);
    if (rc) ag_fail("grounding: cannot compile pattern %s (error %d)", pattern, rc);
    return re;
}

// The first match of pattern in text whose k numbers parse, into v.
static bool parse(const char *pattern, int k, const char *text, double *v) {
    regex_t re = compile(pattern);
    regmatch_t m[5];
    bool ok = false;
    for (const char *s = text; !ok && regexec(&re, s, (size_t)k + 1, m, 0) == 0; s += m[0].rm_eo)
        ok = match_numbers(s, m, k, v);
    regfree(&re);
    return ok;
}

bool ds_parse_box(const char *text, ds_box *out) {
    double v[4];
    if (!parse("\\[" NUM ", " NUM ", " NUM ", " NUM "\\]", 4, text, v)) return false;
    *out = (ds_box){v[0], v[1], v[2], v[3]};
    return true;
}

bool ds_parse_span(const char *text, ds_span *out) {
    double v[2];
    if (!parse("\\{" NUM ", " NUM "\\}", 2, text, v)) return false;
    *out = (ds_span){v[0], v[1]};
    return true;
}

// Every match of pattern (k numbers) in text: false with why at the first out of [0, 1] or
// reversed. Matches whose numbers do not parse ("1.2.3") are not boxes: skipped.
static bool check_all(const char *pattern, int k, const char *what, const char *text, char *why,
                      size_t why_n) {
    regex_t re = compile(pattern);
    regmatch_t m[5];
    bool ok = true;
    for (const char *s = text; ok && regexec(&re, s, (size_t)k + 1, m, 0) == 0; s += m[0].rm_eo) {
        double v[4];
        if (!match_numbers(s, m, k, v)) continue;
        bool inside = true;
        for (int i = 0; i < k; i++) inside &= v[i] >= 0.0 && v[i] <= 1.0;
        bool ordered = k == 4 ? v[2] >= v[0] && v[3] >= v[1] : v[1] >= v[0];
        if (!inside || !ordered) {
            snprintf(why, why_n, "%s %.*s %s", what, (int)(m[0].rm_eo - m[0].rm_so), s + m[0].rm_so,
                     !inside  ? "is not normalised to [0, 1]"
                     : k == 4 ? "is reversed (x2 < x1 or y2 < y1)"
                              : "is reversed (t2 < t1)");
            ok = false;
        }
    }
    regfree(&re);
    return ok;
}

bool ds_check_normalised(const char *text, bool boxes, bool spans, char *why, size_t n) {
    return (!boxes ||
            check_all("\\[" NUM ", " NUM ", " NUM ", " NUM "\\]", 4, "box", text, why, n)) &&
           (!spans || check_all("\\{" NUM ", " NUM "\\}", 2, "span", text, why, n));
}

double ds_box_iou(ds_box a, ds_box b) {
    double iw = fmin(a.x2, b.x2) - fmax(a.x1, b.x1), ih = fmin(a.y2, b.y2) - fmax(a.y1, b.y1);
    if (iw <= 0 || ih <= 0) return 0;
    double inter = iw * ih;
    double ua = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter;
    return ua > 0 ? inter / ua : 0;
}

double ds_span_iou(ds_span a, ds_span b) {
    double inter = fmin(a.t2, b.t2) - fmax(a.t1, b.t1);
    if (inter <= 0) return 0;
    double uni = fmax(a.t2, b.t2) - fmin(a.t1, b.t1);
    return uni > 0 ? inter / uni : 0;
}
