#!/usr/bin/env python3
"""caption_metric_reference.py PAIRS.json: corpus BLEU-4 and ROUGE-L of [candidate, reference]
pairs, written from the papers independently of train/caption_metric.c (Counter n-grams, a
full LCS table), for the tests to compare with. Prints JSON {"bleu4", "brevity_penalty",
"precisions", "rouge_l", "rouge_l_each"}.

BLEU (Papineni et al. 2002), corpus level, one reference per candidate: clipped n-gram counts
summed over the corpus, p_n = matches / candidate n-grams, BLEU = BP * exp(sum_n log(p_n) / 4),
BP = 1 if c > r else exp(1 - r / c); no smoothing (0 when some p_n is 0).
ROUGE-L (Lin 2004) as coco-caption's Rouge: F = (1 + b^2) P R / (R + b^2 P), b = 1.2, averaged.
Words: bytes lowercased (ASCII), split at ASCII whitespace, control characters and punctuation.
"""
import json
import math
import re
import sys
from collections import Counter

_SEP = re.compile(rb"[\x00-\x20\x7f!-/:-@\[-`{-~]+")


def words(text):
    return [w for w in _SEP.split(text.encode("utf-8").lower()) if w]


def ngrams(ws, n):
    return Counter(tuple(ws[i:i + n]) for i in range(len(ws) - n + 1))


def bleu4(pairs):
    match, total = [0] * 4, [0] * 4
    c_len = r_len = 0
    for cand, ref in pairs:
        c, r = words(cand), words(ref)
        c_len += len(c)
        r_len += len(r)
        for n in range(1, 5):
            cc, rc = ngrams(c, n), ngrams(r, n)
            match[n - 1] += sum(min(k, rc[g]) for g, k in cc.items())
            total[n - 1] += max(len(c) - n + 1, 0)
    if c_len == 0:
        bp = 0.0
    else:
        bp = 1.0 if c_len >= r_len else math.exp(1 - r_len / c_len)
    precisions = [m / t if t else None for m, t in zip(match, total)]
    if any(m == 0 for m in match):
        return 0.0, bp, precisions
    return bp * math.exp(sum(math.log(m / t) for m, t in zip(match, total)) / 4), bp, precisions


def lcs(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                table[i][j] = table[i - 1][j - 1] + 1
            else:
                table[i][j] = max(table[i - 1][j], table[i][j - 1])
    return table[len(a)][len(b)]


def rouge_l(cand, ref, beta=1.2):
    c, r = words(cand), words(ref)
    l = lcs(c, r)
    if l == 0:
        return 0.0
    p, rec = l / len(c), l / len(r)
    return ((1 + beta ** 2) * p * rec) / (rec + beta ** 2 * p)


def main():
    pairs = json.load(open(sys.argv[1], encoding="utf-8"))
    b, bp, prec = bleu4(pairs)
    each = [rouge_l(c, r) for c, r in pairs]
    print(json.dumps({"bleu4": b, "brevity_penalty": bp, "precisions": prec,
                      "rouge_l": sum(each) / len(each) if each else None,
                      "rouge_l_each": each}))


if __name__ == "__main__":
    main()
