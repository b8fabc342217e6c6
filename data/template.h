// template.h: the Vicuna v0 conversation template of the reference, one layout for training
// and for inference:
//   "{system}\n\n### Human: {msg}\n### Assistant: {answer}\n### Human: {msg}\n### ..."
// A conversation renders to pieces: text (tokenized piece by piece) and media placeholders
// (expanded to <X_start> <X_patch>×P <X_end> ids). Each piece is supervised or not; only the
// assistant text and its stop marker "###" are, so the loss mask is exact by construction
// (the reference drifts by a token per human turn).
#pragma once
#include <stdbool.h>
#include <stdint.h>

#define DS_SYSTEM_PROMPT                                                                           \
    "A chat between a curious human and an artificial intelligence assistant. The assistant "      \
    "gives helpful, detailed, and polite answers to the human's questions."
#define DS_STOP_MARKER "###"

typedef enum { DS_MEDIA_IMAGE, DS_MEDIA_VIDEO, DS_MEDIA_AUDIO, DS_MEDIA_KINDS } ds_media_kind;

// The placeholder a conversation uses for each kind: "<image>", "<video>", "<sound>".
const char *ds_media_placeholder(ds_media_kind kind);

typedef struct {
    bool from_human; // "human" turns; otherwise "gpt"
    const char *text;
} ds_turn;

typedef struct {
    bool is_media;
    ds_media_kind media; // when is_media
    char *text;          // otherwise: UTF-8, owned
    bool supervised;
    bool starts_sequence; // the first piece: the tokenizer adds BOS and its dummy prefix
} ds_piece;

typedef struct {
    int n;
    int64_t cap;
    ds_piece *pieces;
    int media_count[DS_MEDIA_KINDS];
} ds_rendered;

// Renders turns that alternate human, gpt, human, ... A trailing human turn (no answer yet)
// renders the inference prompt, ending in "### Assistant:". In each human turn the
// placeholders are taken out of the text, which is then trimmed, and put at its start in the
// order they appeared, followed by "\n" (as the reference's preprocessing does). Returns
// false and writes a one-line reason into err when the turns are malformed (order, empty
// answer, a placeholder in an assistant turn).
bool ds_render(const ds_turn *turns, int n, ds_rendered *out, char *err, int err_size);
void ds_rendered_free(ds_rendered *r);
// The rendered text with each media piece written as its placeholder (for tests and logs).
char *ds_rendered_text(const ds_rendered *r);
