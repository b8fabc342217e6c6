// test_template.c: the conversation template against the layout ../shared/GROUNDINGGPT.md gives for
// the reference ("{system}\n\n### Human: {msg}\n### Assistant: {answer}\n### "), the
// placeholder move of its preprocessing, exact supervision (assistant text + "###" only),
// and the box/span text helpers.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/grounding.h"
#include "data/template.h"
#include "testlib.h"

#define SYS DS_SYSTEM_PROMPT

static void expect_render(const char *what, const ds_turn *turns, int n, const char *want_text,
                          const char *want_supervised) {
    ds_rendered r;
    char err[256];
    bool ok = ds_render(turns, n, &r, err, sizeof err);
    TL_CHECK(ok, "%s: render failed: %s", what, err);
    if (!ok) return;
    char *text = ds_rendered_text(&r);
    TL_CHECK(!strcmp(text, want_text), "%s:\n got  \"%s\"\n want \"%s\"", what, text, want_text);
    // the concatenation of the supervised pieces
    size_t cap = strlen(text) + 1;
    char *sup = calloc(cap, 1);
    for (int i = 0; i < r.n; i++)
        if (r.pieces[i].supervised) strcat(sup, r.pieces[i].text);
    TL_CHECK(!strcmp(sup, want_supervised), "%s: supervised \"%s\", want \"%s\"", what, sup,
             want_supervised);
    TL_CHECK(r.pieces[0].starts_sequence, "%s: first piece does not start the sequence", what);
    for (int i = 1; i < r.n; i++)
        TL_CHECK(!r.pieces[i].starts_sequence, "%s: piece %d starts the sequence", what, i);
    free(sup);
    free(text);
    ds_rendered_free(&r);
}

static void test_template(void) {
    ds_turn one[] = {{true, "<image>\nWhat is in the picture?"}, {false, "A red square."}};
    expect_render("one turn", one, 2,
                  SYS "\n\n### Human: <image>\nWhat is in the picture?\n### Assistant: A red "
                      "square.\n###",
                  " A red square.\n###");

    // the placeholder moves to the start of its turn; surrounding whitespace is stripped
    ds_turn moved[] = {{true, "  Where is the dog? <image> "}, {false, "[0.1, 0.2, 0.3, 0.4]"}};
    expect_render("placeholder moved", moved, 2,
                  SYS "\n\n### Human: <image>\nWhere is the dog?\n### Assistant: [0.1, 0.2, 0.3, "
                      "0.4]\n###",
                  " [0.1, 0.2, 0.3, 0.4]\n###");

    ds_turn multi[] = {{true, "<video>\nDescribe it."},
                       {false, "A ball rolls."},
                       {true, "When does it stop?"},
                       {false, "{0.62, 0.80}"}};
    expect_render("two turns", multi, 4,
                  SYS "\n\n### Human: <video>\nDescribe it.\n### Assistant: A ball rolls.\n### "
                      "Human: When does it stop?\n### Assistant: {0.62, 0.80}\n###",
                  " A ball rolls.\n### {0.62, 0.80}\n###");

    // several modalities in one sample, in order of appearance; media in a later turn
    ds_turn mixed[] = {{true, "Listen <sound> and look <image>"},
                       {false, "A dog barks."},
                       {true, "<video> And here?"},
                       {false, "Nothing."}};
    expect_render("mixed media", mixed, 4,
                  SYS "\n\n### Human: <sound><image>\nListen  and look\n### Assistant: A dog "
                      "barks.\n### Human: <video>\nAnd here?\n### Assistant: Nothing.\n###",
                  " A dog barks.\n### Nothing.\n###");

    // inference prompt: a trailing human turn
    ds_turn prompt[] = {{true, "<image>\nFind the cat."}};
    expect_render("prompt", prompt, 1,
                  SYS "\n\n### Human: <image>\nFind the cat.\n### Assistant:", "");

    ds_rendered r;
    char err[256];
    ds_turn wrong_order[] = {{false, "hi"}};
    TL_CHECK(!ds_render(wrong_order, 1, &r, err, sizeof err) && strstr(err, "expected human"),
             "gpt first accepted (%s)", err);
    ds_turn empty_answer[] = {{true, "q"}, {false, "  "}};
    TL_CHECK(!ds_render(empty_answer, 2, &r, err, sizeof err) && strstr(err, "empty"),
             "empty answer accepted (%s)", err);
    ds_turn media_answer[] = {{true, "q"}, {false, "see <image>"}};
    TL_CHECK(!ds_render(media_answer, 2, &r, err, sizeof err) && strstr(err, "<image>"),
             "placeholder in an answer accepted (%s)", err);
}

static bool near(double a, double b) {
    return fabs(a - b) < 1e-9;
}

static void test_grounding(void) {
    // 640x480 pads to 640x640 with 80 rows above: y shifts by 80
    ds_box b = ds_box_to_square((ds_box){100, 50, 300, 200}, 640, 480);
    TL_CHECK(near(b.x1, 100.0 / 640) && near(b.y1, 130.0 / 640) && near(b.x2, 300.0 / 640) &&
                 near(b.y2, 280.0 / 640),
             "box to square: %g %g %g %g", b.x1, b.y1, b.x2, b.y2);
    char buf[64];
    TL_CHECK(!strcmp(ds_format_box(b, buf, sizeof buf), "[0.156, 0.203, 0.469, 0.438]"),
             "format %s", buf);
    ds_box back = ds_box_from_square(b, 640, 480);
    TL_CHECK(near(back.x1, 100) && near(back.y1, 50) && near(back.x2, 300) && near(back.y2, 200),
             "box back: %g %g %g %g", back.x1, back.y1, back.x2, back.y2);
    // 37 wide, 100 high: x offset (100 - 37) // 2 = 31
    b = ds_box_to_square((ds_box){0, 0, 37, 100}, 37, 100);
    TL_CHECK(near(b.x1, 0.31) && near(b.x2, 0.68) && near(b.y1, 0) && near(b.y2, 1),
             "odd padding: %g %g", b.x1, b.x2);

    ds_span s = {3.0 / 34.0, 5.1 / 34.0};
    TL_CHECK(!strcmp(ds_format_span(s, buf, sizeof buf), "{0.09, 0.15}"), "span %s", buf);

    ds_box p;
    TL_CHECK(ds_parse_box("The dog is at [0.156, 0.203, 0.469, 0.438].", &p) && near(p.x1, 0.156) &&
                 near(p.y2, 0.438),
             "parse box");
    TL_CHECK(!ds_parse_box("no box [0.1, 0.2, 0.3]", &p), "three numbers parsed as a box");
    TL_CHECK(!ds_parse_box("[0.1,0.2,0.3,0.4]", &p), "the reference pattern needs \", \"");
    TL_CHECK(ds_parse_box("[1.2.3, 0, 0, 0] then [0.5, 0.5, 0.6, 0.7]", &p) && near(p.x1, 0.5),
             "a malformed number skips to the next match");
    ds_span q;
    TL_CHECK(ds_parse_span("It happens at {0.09, 0.15}.", &q) && near(q.t1, 0.09) &&
                 near(q.t2, 0.15),
             "parse span");
    TL_CHECK(!ds_parse_span("{0.09}", &q), "one number parsed as a span");

    TL_CHECK(near(ds_box_iou((ds_box){0, 0, 2, 2}, (ds_box){1, 1, 3, 3}), 1.0 / 7), "box iou");
    TL_CHECK(ds_box_iou((ds_box){0, 0, 1, 1}, (ds_box){2, 2, 3, 3}) == 0, "disjoint iou");
    TL_CHECK(near(ds_span_iou((ds_span){0, 2}, (ds_span){1, 3}), 1.0 / 3), "span iou");
}

int main(void) {
    test_template();
    test_grounding();
    return tl_summary("test_template");
}
