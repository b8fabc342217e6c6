// generate.h: decoding with the KV cache, shared by `groundc generate` and `groundc eval`, and
// the generate command itself:
//
//   groundc generate CKPT_DIR [--image F] [--video F] [--audio F] --prompt TEXT
//       [--max-new-tokens N] [--temperature T] [--top-p P] [--seed S] [--tokenizer F]
//       [--raw] [--logits-out F.npy]
//
// The prompt is spliced (encoders run once), run through the decoder once (prefill into the
// cache), then each new token costs one decoder row per layer. Greedy by default; with a
// temperature, sampling from softmax(logits / T) cut to the nucleus of top_p, from a stream
// seeded by seed (the same seed repeats the same answer). Decoding stops at the stop marker
// "###" (the Vicuna v0 separator, its tokens kept in the answer), at EOS or an added (media)
// token (not kept), after max_new tokens, or when the context (the model's max_seq) is full.
//
// The command builds the prompt as training does (data/template.h, data/prompt.h: the Vicuna
// v0 template, one human turn with the media placeholders first, expanded to the model's
// patch counts), preprocesses the media as pack does (data/image.h, video.h, audio.h), prints
// the answer (up to the stop marker, trimmed) and one line per box or span in it, mapped back
// to pixels of the original image (undoing the pad to a square) or to seconds of the video or
// audio. --raw: the prompt is TEXT verbatim after BOS, with <image>, <video> and <audio> (or
// <sound>) expanded to <X_start> <X_patch>xP <X_end> and the whole encoded as one string (each
// stretch of text between added tokens gets its own dummy prefix, as HF's legacy Llama
// tokenizer and llama.cpp do). --logits-out writes the float32 (T, V) logits of every prompt
// position as a .npy file (atomically); with --max-new-tokens 0 nothing is generated.
#pragma once
#include <stdint.h>
#include <stdio.h>

#include "data/grounding.h"
#include "data/template.h"
#include "data/tokenizer.h"
#include "model/groundinggpt.h"

typedef enum {
    TR_STOP_MARKER,  // "###" appeared
    TR_STOP_EOS,     // the tokenizer's </s>
    TR_STOP_ADDED,   // an added token (id >= V0)
    TR_STOP_LENGTH,  // max_new tokens generated
    TR_STOP_CONTEXT, // the cache (context) is full
} tr_stop_reason;

typedef struct {
    int64_t max_new;      // tokens to generate at most (0: prefill only)
    double temperature;   // 0: greedy (argmax, the lowest id on ties)
    double top_p;         // sampling: the smallest set of most likely tokens reaching top_p
    uint64_t seed;        // sampling stream
    float *prompt_logits; // NULL, or room for (T, V0 + 9): the logits of every prompt position
} tr_decode_opts;

typedef struct {
    int32_t *ids; // generated ids (malloc'd; the stop marker's included, EOS / added not)
    int64_t n;
    tr_stop_reason stop;
    double prefill_s, decode_s; // wall time of the prefill, and of the n decode steps
} tr_decode_result;

// "###", "eos", "added token", "max new tokens", "context full".
const char *tr_stop_name(tr_stop_reason r);

// Continues the one-sample prompt b (targets ignored; media as gm_groundinggpt_embed takes
// them) using kv (B 1; reset here, so one cache serves many prompts). The prompt must fit
// kv->max_len; generation stops when the cache is full. tok decodes the answer for the stop
// marker. Runs without a tape and resets ctx's step arena (b's tensors are used first).
void tr_decode(ag_ctx *ctx, gm_groundinggpt *m, gm_llama_kv *kv, const gm_groundinggpt_batch *b,
               const ds_tokenizer *tok, const tr_decode_opts *o, tr_decode_result *r);

// The command (argv without "groundc generate"); returns the exit code.
int tr_generate_main(int argc, char **argv);

// The media an answer's boxes and spans refer to: the files given (NULL: none of that kind),
// the image's original size, the video's and the audio's timelines.
typedef struct {
    const char *file[DS_MEDIA_KINDS];
    int width, height;
    ds_timeline tl[DS_MEDIA_KINDS];
} tr_answer_media;
// One line per box and span of answer (in order): a box in pixels of the original image (the
// pad to a square undone, clamped to the image), a span in seconds of the video and of the
// audio, a line each when both are given (the answer does not say which it means); normalised
// only when no such medium was given. A box or span with its corners reversed, outside 0..1,
// or (a box) in the padding only is printed with a note saying so.
void tr_print_grounding(FILE *out, const char *answer, const tr_answer_media *am);
