// test_caption_metric.c: the caption metrics of `groundc eval --task caption`
// (train/caption_metric.h): hand-computed cases, then a few hundred random caption pairs (case,
// punctuation, repeated words for clipping, UTF-8, empty texts) compared with the independent
// Python implementation tests/caption_metric_reference.py (skipped when python3 is missing).
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "testlib.h"
#include "train/caption_metric.h"

static bool near(double a, double b) {
    return fabs(a - b) <= 1e-12 * fmax(1, fabs(b));
}

static void hand_cases(void) {
    tr_caption_stats s = {0};
    tr_caption_add(&s, "A red circle, moving LEFT.", "a red circle moving left");
    TL_CHECK(near(tr_caption_bleu4(&s, NULL), 1), "identical words: BLEU %g",
             tr_caption_bleu4(&s, NULL));
    TL_CHECK(near(tr_caption_rouge_l(&s), 1), "identical words: ROUGE-L %g",
             tr_caption_rouge_l(&s));
    TL_CHECK(near(tr_rouge_l("blue square", "red circle"), 0), "no overlap: ROUGE-L 0");
    // "the the the the" against "the cat": unigram matches clipped to 1 of 4, no bigram: 0
    tr_caption_stats c = {0};
    tr_caption_add(&c, "the the the the", "the cat");
    TL_CHECK(c.match[0] == 1 && c.total[0] == 4 && c.match[1] == 0, "clipping: %g/%g", c.match[0],
             c.total[0]);
    TL_CHECK(tr_caption_bleu4(&c, NULL) == 0, "a precision of 0 gives BLEU 0");
    // candidate "a b c d" vs reference "a b c d e f": all precisions 1, BP = exp(1 - 6/4)
    tr_caption_stats b = {0};
    double bp;
    tr_caption_add(&b, "a b c d", "a b c d e f");
    TL_CHECK(near(tr_caption_bleu4(&b, &bp), exp(-0.5)) && near(bp, exp(-0.5)),
             "brevity penalty: %g", bp);
    // LCS 3 of 4 candidate and 5 reference words: P 3/4, R 3/5
    double p = 0.75, r = 0.6, f = (1 + 1.44) * p * r / (r + 1.44 * p);
    TL_CHECK(near(tr_rouge_l("a x b c", "a b y c z"), f), "ROUGE-L %g, want %g",
             tr_rouge_l("a x b c", "a b y c z"), f);
    tr_caption_stats e = {0};
    TL_CHECK(tr_caption_bleu4(&e, NULL) == 0 && isnan(tr_caption_rouge_l(&e)), "empty corpus");
    tr_caption_add(&e, "", "something");
    TL_CHECK(tr_caption_bleu4(&e, NULL) == 0 && tr_caption_rouge_l(&e) == 0, "empty candidate");
}

static const char *const vocab[] = {
    "a",     "red", "green", "circle", "square",  "moves", "to",   "the",  "left", "right",
    "There", "is",  "1",     "shape",  "appears", "and",   "beep", "café", "über", "THE"};
static const char *const seps[] = {" ", " ", " ", ", ", ". ", ": ", "\n", " - ", "!", "  "};

typedef struct {
    int n, w[16], sep[16];
} caption;

static caption random_caption(tl_rng *rng) {
    caption c = {.n = (int)tl_randint(rng, 13)};
    for (int i = 0; i < c.n; i++) {
        c.w[i] = (int)tl_randint(rng, 20);
        c.sep[i] = (int)tl_randint(rng, 10);
    }
    return c;
}

// A variant sharing n-grams with c: a few words replaced, dropped or repeated.
static caption variant(tl_rng *rng, caption c) {
    for (int k = 0; k < 3 && c.n; k++) {
        int i = (int)tl_randint(rng, c.n), op = (int)tl_randint(rng, 3);
        if (op == 0) {
            c.w[i] = (int)tl_randint(rng, 20);
        } else if (op == 1) {
            memmove(c.w + i, c.w + i + 1, sizeof(int) * (size_t)(c.n - i - 1));
            c.n--;
        } else if (c.n < 16) {
            memmove(c.w + i + 1, c.w + i, sizeof(int) * (size_t)(c.n - i));
            c.n++;
        }
    }
    return c;
}

static char *render(const caption *c, bool period) {
    char *s = calloc(512, 1);
    for (int i = 0; i < c->n; i++) {
        strcat(s, vocab[c->w[i]]);
        if (i + 1 < c->n) strcat(s, seps[c->sep[i]]);
    }
    if (c->n && period) strcat(s, ".");
    return s;
}

static void python_cases(void) {
    const char *py = "/usr/bin/python3";
    char script[512];
    tl_source_path(script, sizeof script, "tests/caption_metric_reference.py");
    if (access(py, X_OK)) {
        printf("python3 missing: comparison with the Python reference skipped\n");
        return;
    }
    enum { N = 300 };
    tl_rng rng = {7};
    cJSON *pairs = cJSON_CreateArray();
    tr_caption_stats s = {0};
    double rouge_each[N];
    for (int i = 0; i < N; i++) {
        caption rc = random_caption(&rng);
        if (!rc.n) rc.n = 1; // a reference has words
        caption cc = tl_uniform(&rng) < 0.7 ? variant(&rng, rc) : random_caption(&rng);
        char *ref = render(&rc, tl_uniform(&rng) < 0.5),
             *cand = render(&cc, tl_uniform(&rng) < 0.5);
        tr_caption_add(&s, cand, ref);
        rouge_each[i] = tr_rouge_l(cand, ref);
        cJSON *p = cJSON_CreateArray();
        cJSON_AddItemToArray(p, cJSON_CreateString(cand));
        cJSON_AddItemToArray(p, cJSON_CreateString(ref));
        cJSON_AddItemToArray(pairs, p);
        free(ref);
        free(cand);
    }
    char path[] = "/tmp/test_caption_metric_XXXXXX";
    int fd = mkstemp(path);
    TL_CHECK(fd >= 0, "mkstemp");
    char *text = cJSON_Print(pairs);
    FILE *f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    free(text);
    cJSON_Delete(pairs);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "%s %s %s", py, script, path);
    FILE *p = popen(cmd, "r");
    static char out[1 << 16];
    size_t n = p ? fread(out, 1, sizeof out - 1, p) : 0;
    out[n] = 0;
    int rc = p ? pclose(p) : -1;
    unlink(path);
    cJSON *ref = cJSON_Parse(out);
    TL_CHECK(rc == 0 && ref, "the Python reference failed (rc %d): %.200s", rc, out);
    if (!ref) return;
    double bleu_py = cJSON_GetObjectItem(ref, "bleu4")->valuedouble;
    double rouge_py = cJSON_GetObjectItem(ref, "rouge_l")->valuedouble;
    double bp, bleu = tr_caption_bleu4(&s, &bp);
    printf("%d random pairs: BLEU-4 %.6f (Python %.6f), ROUGE-L %.6f (Python %.6f)\n", N, bleu,
           bleu_py, tr_caption_rouge_l(&s), rouge_py);
    TL_CHECK(bleu > 0.05 && near(bleu, bleu_py), "BLEU-4 %.12g, Python %.12g", bleu, bleu_py);
    TL_CHECK(near(bp, cJSON_GetObjectItem(ref, "brevity_penalty")->valuedouble), "brevity penalty");
    TL_CHECK(near(tr_caption_rouge_l(&s), rouge_py), "ROUGE-L %.12g, Python %.12g",
             tr_caption_rouge_l(&s), rouge_py);
    cJSON *each = cJSON_GetObjectItem(ref, "rouge_l_each");
    int bad = 0;
    for (int i = 0; i < N; i++)
        bad += !near(rouge_each[i], cJSON_GetArrayItem(each, i)->valuedouble);
    TL_CHECK(bad == 0, "%d per-pair ROUGE-L values differ from Python's", bad);
    cJSON *prec = cJSON_GetObjectItem(ref, "precisions");
    for (int k = 0; k < 4; k++)
        TL_CHECK(near(s.match[k] / s.total[k], cJSON_GetArrayItem(prec, k)->valuedouble),
                 "%d-gram precision", k + 1);
    cJSON_Delete(ref);
}

int main(void) {
    hand_cases();
    python_cases();
    return tl_summary("test_caption_metric");
}
