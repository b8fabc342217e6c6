// test_grounding_lines.c: tr_print_grounding, the lines `groundc generate` prints under its
// answer. Each expected line is computed here from the definitions (LLaVA's pad to a square:
// offset floor((side - w) / 2); seconds = start + t * duration), not copied from a run:
//   * a box in pixels of a non-square image, clamped to it; reversed corners, a box in the
//     padding only and values above 1 carry a note;
//   * a span in seconds of the video and, when both are given, of the audio too (one line
//     each); a late-starting video says where its frames lie; reversed and past-the-end spans
//     carry a note;
//   * without the medium: the normalised values only; text that is not a box or span: nothing.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/testlib.h"
#include "train/generate.h"

static char buf[4096];

static const char *lines(const char *answer, const tr_answer_media *am) {
    buf[0] = 0; // (fmemopen leaves buf as it was when nothing is written)
    FILE *f = fmemopen(buf, sizeof buf, "w");
    tr_print_grounding(f, answer, am);
    fclose(f);
    return buf;
}

static void expect(const char *answer, const tr_answer_media *am, const char *want) {
    const char *got = lines(answer, am);
    TL_CHECK(!strcmp(got, want), "'%s':\n got  '%s'\n want '%s'", answer, got, want);
}

int main(void) {
    // A 240 x 160 image: side 240, offset (0, 40).
    tr_answer_media img = {.file = {"cat.png", NULL, NULL}, .width = 240, .height = 160};
    char want[512];
    snprintf(want, sizeof want,
             "box [0.250, 0.500, 0.500, 0.750] -> [%.1f, %.1f, %.1f, %.1f] px "
             "of cat.png (240x160)\n",
             0.25 * 240, 0.5 * 240 - 40, 0.5 * 240, 0.75 * 240 - 40);
    expect("It is at [0.25, 0.5, 0.5, 0.75].", &img, want);
    // y2 = 0.9 lies in the bottom padding (0.9 * 240 - 40 = 176 > 160): clamped, no note
    snprintf(want, sizeof want,
             "box [0.100, 0.200, 0.300, 0.900] -> [%.1f, %.1f, %.1f, %.1f] px "
             "of cat.png (240x160)\n",
             0.1 * 240, 0.2 * 240 - 40, 0.3 * 240, 160.0);
    expect("[0.1, 0.2, 0.3, 0.9]", &img, want);
    snprintf(want, sizeof want,
             "box [0.500, 0.600, 0.200, 0.700] -> [%.1f, %.1f, %.1f, %.1f] px "
             "of cat.png (240x160) (reversed corners: not a box)\n",
             0.5 * 240, 0.6 * 240 - 40, 0.2 * 240, 0.7 * 240 - 40);
    expect("[0.5, 0.6, 0.2, 0.7]", &img, want);
    // y in [0.05, 0.1]: 12 - 40 < 0 and 24 - 40 < 0, all in the top padding
    snprintf(want, sizeof want,
             "box [0.100, 0.050, 0.300, 0.100] -> [%.1f, 0.0, %.1f, 0.0] px of "
             "cat.png (240x160) (in the padding only: empty in the image)\n",
             0.1 * 240, 0.3 * 240);
    expect("[0.1, 0.05, 0.3, 0.1]", &img, want);
    snprintf(want, sizeof want,
             "box [0.100, 0.500, 1.200, 0.600] -> [%.1f, %.1f, 240.0, %.1f] px "
             "of cat.png (240x160) (outside 0..1: clamped)\n",
             0.1 * 240, 0.5 * 240 - 40, 0.6 * 240 - 40);
    expect("[0.1, 0.5, 1.2, 0.6]", &img, want);

    // Video of 10 s and audio of 600 s: a span is printed for each.
    tr_answer_media both = {.file = {NULL, "v.mp4", "a.wav"},
                            .tl = {{0, 0}, {0, 10.0}, {0, 600.0}}};
    snprintf(want, sizeof want,
             "span {0.40, 0.70} -> {%.2f, %.2f} s of v.mp4 (10.00 s)\n"
             "span {0.40, 0.70} -> {%.2f, %.2f} s of a.wav (600.00 s)\n",
             0.4 * 10, 0.7 * 10, 0.4 * 600, 0.7 * 600);
    expect("From {0.4, 0.7}.", &both, want);
    tr_answer_media late = {.file = {NULL, "late.mkv", NULL}, .tl = {{0, 0}, {0.6, 0.8}, {0, 0}}};
    snprintf(want, sizeof want,
             "span {0.50, 1.00} -> {%.2f, %.2f} s of late.mkv (frames from 0.60 to 1.40 s)\n",
             0.6 + 0.5 * 0.8, 0.6 + 1.0 * 0.8);
    expect("{0.5, 1.0}", &late, want);
    tr_answer_media vid = {.file = {NULL, "v.mp4", NULL}, .tl = {{0, 0}, {0, 10.0}, {0, 0}}};
    expect("{0.7, 0.4}", &vid,
           "span {0.70, 0.40} -> {7.00, 4.00} s of v.mp4 (10.00 s) (reversed: not a span)\n");
    expect("{0.5, 1.5}", &vid,
           "span {0.50, 1.50} -> {5.00, 15.00} s of v.mp4 (10.00 s) (outside 0..1: past the "
           "medium's ends)\n");

    // Without the medium, and text that is neither.
    tr_answer_media none = {.width = 0};
    expect("[0.1, 0.2, 0.3, 0.4] then {0.1, 0.2}", &none,
           "box [0.100, 0.200, 0.300, 0.400] (normalised; no --image)\n"
           "span {0.10, 0.20} (normalised; no --video or --audio)\n");
    expect("a [word] and {braces} [0.1, 0.2]", &img, "");
    return tl_summary("test_grounding_lines");
}
