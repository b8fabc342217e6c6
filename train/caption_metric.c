// caption_metric.c: see caption_metric.h.
#include "train/caption_metric.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/error.h"

typedef struct {
    char *text; // lowercased copy, words NUL-separated
    const char **w;
    int64_t n;
} words;

static bool is_sep(unsigned char c) {
    return c <= ' ' || c == 0x7f || (c >= '!' && c <= '/') || (c >= ':' && c <= '@') ||
           (c >= '[' && c <= '`') || (c >= '{' && c <= '~');
}

static words split(const char *s) {
    words r = {0};
    size_t len = strlen(s);
    r.text = ag_xmalloc(len + 1, "caption words");
    r.w = ag_xmalloc(sizeof *r.w * (len / 2 + 1), "caption words");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        r.text[i] = is_sep(c) ? 0 : (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : (char)c;
    }
    r.text[len] = 0;
    for (size_t i = 0; i < len; i++)
        if (r.text[i] && (i == 0 || !r.text[i - 1])) r.w[r.n++] = r.text + i;
    return r;
}

static void words_free(words *w) {
    free(w->text);
    free(w->w);
}

static bool same_gram(const words *a, int64_t i, const words *b, int64_t j, int n) {
    for (int k = 0; k < n; k++)
        if (strcmp(a->w[i + k], b->w[j + k])) return false;
    return true;
}

// Occurrences of the n-gram of a at i in b.
static int64_t count_in(const words *a, int64_t i, int n, const words *b) {
    int64_t c = 0;
    for (int64_t j = 0; j + n <= b->n; j++) c += same_gram(a, i, b, j, n);
    return c;
}

static int64_t lcs(const words *a, const words *b) {
    int64_t *row = ag_xcalloc((size_t)b->n + 1, sizeof *row, "rouge");
    for (int64_t i = 0; i < a->n; i++) {
        int64_t diag = 0; // row[j] of the previous i
        for (int64_t j = 1; j <= b->n; j++) {
            int64_t up = row[j];
            row[j] = !strcmp(a->w[i], b->w[j - 1]) ? diag + 1 : up > row[j - 1] ? up : row[j - 1];
            diag = up;
        }
    }
    int64_t r = row[b->n];
    free(row);
    return r;
}

static double rouge(const words *c, const words *r) {
    int64_t l = lcs(c, r);
    if (l == 0) return 0;
    double p = (double)l / (double)c->n, rec = (double)l / (double)r->n, b2 = 1.2 * 1.2;
    return (1 + b2) * p * rec / (rec + b2 * p);
}

double tr_rouge_l(const char *candidate, const char *reference) {
    words c = split(candidate), r = split(reference);
    double f = rouge(&c, &r);
    words_free(&c);
    words_free(&r);
    return f;
}

void tr_caption_add(tr_caption_stats *s, const char *candidate, const char *reference) {
    words c = split(candidate), r = split(reference);
    for (int n = 1; n <= 4; n++) {
        for (int64_t i = 0; i + n <= c.n; i++) {
            s->total[n - 1] += 1;
            // each distinct n-gram once, at its first occurrence: min(count in c, count in r)
            bool first = true;
            for (int64_t j = 0; j < i && first; j++) first = !same_gram(&c, i, &c, j, n);
            if (!first) continue;
            int64_t in_c = count_in(&c, i, n, &c), in_r = count_in(&c, i, n, &r);
            s->match[n - 1] += (double)(in_c < in_r ? in_c : in_r);
        }
    }
    s->cand_len += (double)c.n;
    s->ref_len += (double)r.n;
    s->rouge_sum += rouge(&c, &r);
    s->n += 1;
    words_free(&c);
    words_free(&r);
}

double tr_caption_bleu4(const tr_caption_stats *s, double *bp) {
    double b = s->cand_len <= 0            ? 0
               : s->cand_len >= s->ref_len ? 1
                                           : exp(1 - s->ref_len / s->cand_len);
    if (bp) *bp = b;
    double logp = 0;
    for (int n = 0; n < 4; n++) {
        if (s->match[n] <= 0) return 0;
        logp += 0.25 * log(s->match[n] / s->total[n]);
    }
    return b * exp(logp);
}

double tr_caption_rouge_l(const tr_caption_stats *s) {
    return s->n > 0 ? s->rouge_sum / s->n : NAN;
}
