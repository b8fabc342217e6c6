// eval.h: grounding evaluation by greedy generation, as GROUNDINGGPT.md measures it.
// Each evaluated sample's prompt is its tokens up to its first answer (the first supervised
// target); the model continues it greedily until the stop marker "###", an added token or
// max_new tokens. The first box "[x1, y1, x2, y2]" (REC) or span "{t1, t2}" (temporal video
// grounding, sound localisation) of the answer is compared with the one in the reference
// answer: a hit when IoU >= 0.5 (a missing or malformed box is a miss).
//
// The spliced prompt embeddings (encoders run once per sample) are kept on the host and the
// decoder reruns over prompt + generated tokens at each step: no KV cache, fine for the tiny
// models of tests and the demo, slow for the 7B.
#pragma once
#include <stdint.h>
#include <stdio.h>

#include "data/tokenizer.h"
#include "model/groundinggpt.h"
#include "train/dist.h"

typedef struct {
    int64_t n[3], hits[3]; // REC, TVG, sound: samples evaluated, hits at IoU >= 0.5
    double iou_sum[3];
} tr_eval_result;

enum { TR_EVAL_REC, TR_EVAL_TVG, TR_EVAL_SOUND };

// Evaluates up to limit grounding samples (REC, TVG, sound) of the dataset folder data_dir
// (tokenizer: the tokenizer.model it was packed with; its digest is checked), split across
// d's ranks and summed. log (may be NULL) gets one line per sample on rank 0 when verbose.
void tr_eval_grounding(ag_ctx *ctx, gm_groundinggpt *m, const char *data_dir,
                       const char *tokenizer_path, int64_t limit, int64_t max_new, const tr_dist *d,
                       tr_eval_result *r, FILE *log, bool verbose);
// hits / n, or NAN when n is 0.
double tr_eval_rate(const tr_eval_result *r, int task);

// `groundc eval CKPT_DIR --data DIR [--tokenizer FILE] [--limit N] [--max-new-tokens N]
// [--verbose]`: the model of the checkpoint's config.yaml with its weights, evaluated as
// above; the tokenizer defaults to the config's eval.tokenizer. Prints one table row per
// task. Returns the exit code.
int tr_eval_main(int argc, char **argv, const tr_dist *d);
