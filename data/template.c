// template.c: see template.h.
#include "template.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/error.h"

static const char *const placeholders[DS_MEDIA_KINDS] = {"<image>", "<video>", "<sound>"};

const char *ds_media_placeholder(ds_media_kind kind) {
    return placeholders[kind];
}

static ds_piece *push(ds_rendered *r) {
    r->pieces = ag_xgrow(r->pieces, &r->cap, r->n + 1, sizeof *r->pieces, "template");
    ds_piece *p = &r->pieces[r->n++];
    memset(p, 0, sizeof *p);
    return p;
}

static void push_text(ds_rendered *r, bool supervised, const char *fmt, ...) {
    va_list ap, aq;
    va_start(ap, fmt);
    va_copy(aq, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    ds_piece *p = push(r);
    p->text = ag_xmalloc((size_t)n + 1, "template");
    vsnprintf(p->text, (size_t)n + 1, fmt, aq);
    va_end(aq);
    p->supervised = supervised;
    p->starts_sequence = r->n == 1;
}

static void push_media(ds_rendered *r, ds_media_kind kind) {
    ds_piece *p = push(r);
    p->is_media = true;
    p->media = kind;
    r->media_count[kind]++;
}

static bool fail(char *err, int size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, (size_t)size, fmt, ap);
    va_end(ap);
    return false;
}

// The earliest placeholder in s at or after from, or NULL.
static const char *next_placeholder(const char *s, ds_media_kind *kind) {
    const char *best = NULL;
    for (int k = 0; k < DS_MEDIA_KINDS; k++) {
        const char *at = strstr(s, placeholders[k]);
        if (at && (!best || at < best)) {
            best = at;
            *kind = (ds_media_kind)k;
        }
    }
    return best;
}

static bool is_space(char c) {
    return c == ' ' || c == '\n' || c == '\t' || c == '\r';
}

// A human turn: media pieces in order of appearance, then the text without placeholders,
// trimmed (Python's str.strip() on ASCII whitespace).
static void human_turn(ds_rendered *r, const char *text, bool first) {
    size_t n = strlen(text);
    char *rest = ag_xmalloc(n + 1, "template");
    size_t k = 0;
    int media = 0;
    for (const char *s = text; *s;) {
        ds_media_kind kind;
        const char *at = next_placeholder(s, &kind);
        size_t upto = at ? (size_t)(at - s) : strlen(s);
        memcpy(rest + k, s, upto);
        k += upto;
        if (!at) break;
        if (media == 0 && !first) push_text(r, false, " Human: ");
        push_media(r, kind);
        media++;
        s = at + strlen(placeholders[kind]);
    }
    rest[k] = 0;
    char *b = rest, *e = rest + k;
    while (b < e && is_space(*b)) b++;
    while (e > b && is_space(e[-1])) e--;
    *e = 0;
    if (media)
        push_text(r, false, "\n%s\n### Assistant:", b);
    else if (first)
        push_text(r, false, "%s\n### Assistant:", b);
    else
        push_text(r, false, " Human: %s\n### Assistant:", b);
    free(rest);
}

bool ds_render(const ds_turn *turns, int n, ds_rendered *out, char *err, int err_size) {
    memset(out, 0, sizeof *out);
    if (n < 1) return fail(err, err_size, "conversation has no turns");
    push_text(out, false, "%s\n\n### Human: ", DS_SYSTEM_PROMPT);
    // the first human turn's text continues the system piece when it has no media
    for (int i = 0; i < n; i++) {
        bool want_human = i % 2 == 0;
        if (turns[i].from_human != want_human) {
            ds_rendered_free(out);
            return fail(err, err_size, "turn %d is from %s, expected %s", i,
                        turns[i].from_human ? "human" : "gpt", want_human ? "human" : "gpt");
        }
        const char *t = turns[i].text ? turns[i].text : "";
        if (want_human) {
            human_turn(out, t, i == 0);
        } else {
            ds_media_kind kind;
            if (next_placeholder(t, &kind)) {
                ds_rendered_free(out);
                return fail(err, err_size, "turn %d (gpt) contains the placeholder %s", i,
                            placeholders[kind]);
            }
            const char *b = t;
            while (is_space(*b)) b++;
            size_t len = strlen(b);
            while (len && is_space(b[len - 1])) len--;
            if (!len) {
                ds_rendered_free(out);
                return fail(err, err_size, "turn %d (gpt) is empty", i);
            }
            push_text(out, true, " %.*s\n%s", (int)len, b, DS_STOP_MARKER);
        }
    }
    // Merge the system piece with a media-free first human text, so the common prompt is
    // one piece (tokenized as one string, as at inference).
    if (out->n >= 2 && !out->pieces[1].is_media && !out->pieces[1].supervised) {
        ds_piece *a = &out->pieces[0], *b = &out->pieces[1];
        size_t la = strlen(a->text), lb = strlen(b->text);
        a->text = ag_xrealloc(a->text, la + lb + 1, "template");
        memcpy(a->text + la, b->text, lb + 1);
        free(b->text);
        memmove(b, b + 1, sizeof *b * (size_t)(out->n - 2));
        out->n--;
    }
    return true;
}

void ds_rendered_free(ds_rendered *r) {
    for (int i = 0; i < r->n; i++) free(r->pieces[i].text);
    free(r->pieces);
    memset(r, 0, sizeof *r);
}

char *ds_rendered_text(const ds_rendered *r) {
    size_t n = 1;
    for (int i = 0; i < r->n; i++)
        n += r->pieces[i].is_media ? strlen(placeholders[r->pieces[i].media])
                                   : strlen(r->pieces[i].text);
    char *s = ag_xmalloc(n, "template"), *p = s;
    for (int i = 0; i < r->n; i++) {
        const char *t =
            r->pieces[i].is_media ? placeholders[r->pieces[i].media] : r->pieces[i].text;
        size_t l = strlen(t);
        memcpy(p, t, l);
        p += l;
    }
    *p = 0;
    return s;
}
