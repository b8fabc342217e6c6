// prompt.h: conversations to token ids, the one way that pack (training shards) and generate
// (inference prompts) both use: the 9 added GroundingGPT tokens, and a rendered conversation
// (data/template.h) tokenized piece by piece, the first piece with BOS and the dummy prefix,
// the others without a dummy prefix, each media piece expanded to <X_start> <X_patch>xP
// <X_end>.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "data/template.h"
#include "data/tokenizer.h"

// Ids of each media kind's placeholder tokens.
typedef struct {
    int32_t patch[DS_MEDIA_KINDS], start[DS_MEDIA_KINDS], end[DS_MEDIA_KINDS];
} ds_media_tokens;

// The text of an added token: which 0 = patch, 1 = start, 2 = end ("<im_patch>", "<vi_start>",
// "<so_end>", ...).
const char *ds_media_token_text(ds_media_kind kind, int which);
// Adds the 9 tokens to tok in GroundingGPT's order (<im_patch> <im_start> <im_end> <vi_*>
// <so_*>: ids vocab + 0 ... vocab + 8) and returns their ids.
ds_media_tokens ds_prompt_add_tokens(ds_tokenizer *tok);

// Tokenizes r as above; patches[k] patch tokens per media piece of kind k. *ids and *mask
// (malloc'd; mask may be NULL when not wanted) get *n entries, mask 1 exactly on the
// supervised pieces' tokens. Returns false with a one-line reason in err when a text piece
// spells an added token (it would corrupt the media splice); nothing is allocated then.
bool ds_prompt_tokenize(const ds_rendered *r, const ds_tokenizer *tok, const ds_media_tokens *mt,
                        const int64_t patches[DS_MEDIA_KINDS], int32_t **ids, uint8_t **mask,
                        int64_t *n, char *err, size_t err_size);
