// caption_metric.h: caption scores for `groundc eval --task caption`: corpus BLEU-4
// (Papineni et al. 2002: clipped n-gram precisions for n = 1..4 summed over the corpus,
// geometric mean with uniform weights, brevity penalty exp(1 - r/c) when the candidates are
// shorter than the references; one reference per sample, no smoothing, so 0 when some n has
// no match) and ROUGE-L (Lin 2004, as coco-caption computes it: per sample
// F = (1 + b^2) P R / (R + b^2 P) with b = 1.2, P and R the longest common subsequence over
// the candidate's and the reference's lengths; averaged over samples).
// Words: the text lowercased (ASCII), split at ASCII whitespace and punctuation; every other
// byte (letters, digits, UTF-8 sequences) belongs to a word. tests/caption_metric_reference.py
// is an independent Python implementation the tests compare with.
#pragma once
#include <stdint.h>

// Sums over a corpus; every field adds up across samples (and ranks).
typedef struct {
    double match[4], total[4]; // clipped n-gram matches, candidate n-grams (n = 1..4)
    double cand_len, ref_len;  // words
    double rouge_sum;          // sum of per-sample ROUGE-L F
    double n;                  // samples
} tr_caption_stats;

// Adds one candidate / reference pair.
void tr_caption_add(tr_caption_stats *s, const char *candidate, const char *reference);
// ROUGE-L F of one pair.
double tr_rouge_l(const char *candidate, const char *reference);
// Corpus BLEU-4 in [0, 1] (0 for an empty corpus); *bp (may be NULL) gets the brevity penalty.
double tr_caption_bleu4(const tr_caption_stats *s, double *bp);
// Mean ROUGE-L F (NAN for an empty corpus).
double tr_caption_rouge_l(const tr_caption_stats *s);
