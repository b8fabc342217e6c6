// eval.h: evaluation by greedy generation, as ../shared/GROUNDINGGPT.md measures it.
// Each evaluated sample's prompt is its tokens up to its first answer (the first supervised
// target); the model continues it greedily with the KV cache (train/generate.h tr_decode)
// until the stop marker "###", EOS, an added token or max_new tokens. Answer and reference
// are compared up to their stop marker, trimmed:
//   rec            the first box "[x1, y1, x2, y2]": Acc@IoU>=0.5 (and 0.3, 0.7), mean IoU
//   tvg, sound     the first span "{t1, t2}": R@1 at IoU 0.3, 0.5 and 0.7, and mean IoU
//   caption        corpus BLEU-4 and mean ROUGE-L (train/caption_metric.h)
// An answer without a parseable box or span is a miss (IoU 0); a sample whose reference has
// none is not graded, nor is one whose first answer does not end within the model's max_seq
// (the loader cuts it there): those are counted (too_long), warned of and named with
// --verbose. Other tasks (reg, conversation) are skipped. Beside each grounding score stands
// the best constant answer's: a score near it means the media were not used.
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "data/tokenizer.h"
#include "model/groundinggpt.h"
#include "train/caption_metric.h"
#include "train/dist.h"

enum { TR_EVAL_REC, TR_EVAL_TVG, TR_EVAL_SOUND, TR_EVAL_CAPTION, TR_EVAL_TASKS };
#define TR_EVAL_GROUNDING ((1u << TR_EVAL_REC) | (1u << TR_EVAL_TVG) | (1u << TR_EVAL_SOUND))
#define TR_EVAL_ALL       (TR_EVAL_GROUNDING | (1u << TR_EVAL_CAPTION))
#define TR_EVAL_NTHR      3
extern const double tr_eval_thresholds[TR_EVAL_NTHR]; // 0.3, 0.5, 0.7

typedef struct {
    int64_t considered[TR_EVAL_TASKS]; // samples taken (at most limit), graded or not
    int64_t n[TR_EVAL_TASKS];          // samples evaluated
    // samples longer than the model's max_seq through their first answer: not evaluated
    int64_t too_long[TR_EVAL_TASKS];
    int64_t hits[TR_EVAL_TASKS];                  // grounding: IoU >= 0.5
    int64_t hits_at[TR_EVAL_TASKS][TR_EVAL_NTHR]; // IoU >= 0.3, 0.5, 0.7
    int64_t parsed[TR_EVAL_TASKS];                // answers with a box / span
    double iou_sum[TR_EVAL_TASKS];
    // grounding: the best single answer's hit rate at IoU 0.5 (each reference tried as the
    // answer to all): the score of a model that ignores the media. NaN without samples.
    double constant[TR_EVAL_TASKS];
    tr_caption_stats caption;
    int64_t new_tokens;         // generated, all samples
    double prefill_s, decode_s; // wall seconds, summed over samples and ranks
} tr_eval_result;

// Which tasks the data must hold samples of (checked before generating anything).
typedef enum {
    TR_EVAL_NEED_NOTHING, // (training's after-stage eval: a missing task is a NaN score)
    TR_EVAL_NEED_ANY,     // at least one task of `tasks`
    TR_EVAL_NEED_EACH,    // every task of `tasks`
} tr_eval_need;

typedef struct {
    const char *data_dir;       // packed dataset folder
    const char *tokenizer_path; // the tokenizer.model it was packed with (digest checked)
    int64_t limit;              // samples per task: the first `limit` of each task of `tasks`
                                // in stream order (other tasks' samples do not count)
    int64_t max_new;            // tokens generated per answer
    unsigned tasks;             // bits 1 << TR_EVAL_*
    tr_eval_need need;          // fails with "no samples of task X in DIR" otherwise
} tr_eval_opts;

// "rec", "tvg", "sound", "caption".
const char *tr_eval_task_name(int task);

// Fails now, as tr_eval_run would, when the tokenizer or the dataset's manifest cannot be
// read or they do not belong together: training checks its after-stage eval before it trains.
void tr_eval_check_inputs(const char *data_dir, const char *tokenizer_path);
// Evaluates the dataset, split across d's ranks and summed. log (may be NULL) gets one line
// per sample on rank 0 when verbose. samples (may be NULL): on rank 0, a new cJSON array of
// every rank's per-sample records {"sample", "task", "answer", "reference", "iou" or
// "rouge_l"} (the caller deletes it); collective, so every rank passes it or none.
void tr_eval_run(ag_ctx *ctx, gm_groundinggpt *m, const tr_eval_opts *o, const tr_dist *d,
                 tr_eval_result *r, FILE *log, bool verbose, cJSON **samples);
// The grounding tasks (rec, tvg, sound) of tr_eval_run, as training's after-stage eval uses.
void tr_eval_grounding(ag_ctx *ctx, gm_groundinggpt *m, const char *data_dir,
                       const char *tokenizer_path, int64_t limit, int64_t max_new, const tr_dist *d,
                       tr_eval_result *r, FILE *log, bool verbose);
// The answer text up to the stop marker "###", without surrounding whitespace (in place).
char *tr_eval_trim_answer(char *s);
// hits / n at IoU 0.5, or NAN when n is 0.
double tr_eval_rate(const tr_eval_result *r, int task);

// `groundc eval CKPT_DIR --data DIR [--task rec|tvg|sound|caption] [--report F.json]
// [--tokenizer FILE] [--limit N] [--max-new-tokens N] [--verbose]`: the model of the
// checkpoint's config.yaml with its weights, evaluated as above (all tasks without --task;
// several may be given comma-separated); --limit N takes the first N samples of each
// evaluated task. A task named by --task without samples in DIR fails (without --task: when
// DIR holds none of the four), as does a named task none of whose samples could be graded.
// The tokenizer defaults to the config's eval.tokenizer. Prints a markdown table; --report
// writes the counts and metrics as JSON (atomically), with the per-sample answers when
// --verbose. --help prints the options. Returns the exit code.
int tr_eval_main(int argc, char **argv, const tr_dist *d);
