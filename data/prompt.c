// prompt.c: see prompt.h.
#include "data/prompt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/error.h"

static const char *const added_tokens[DS_MEDIA_KINDS][3] = {
    {"<im_patch>", "<im_start>", "<im_end>"},
    {"<vi_patch>", "<vi_start>", "<vi_end>"},
    {"<so_patch>", "<so_start>", "<so_end>"}};

const char *ds_media_token_text(ds_media_kind kind, int which) {
    return added_tokens[kind][which];
}

ds_media_tokens ds_prompt_add_tokens(ds_tokenizer *tok) {
    ds_media_tokens mt;
    for (int k = 0; k < DS_MEDIA_KINDS; k++) {
        mt.patch[k] = ds_tokenizer_add_special(tok, added_tokens[k][0]);
        mt.start[k] = ds_tokenizer_add_special(tok, added_tokens[k][1]);
        mt.end[k] = ds_tokenizer_add_special(tok, added_tokens[k][2]);
    }
    return mt;
}

typedef struct {
    int32_t *ids;
    uint8_t *mask;
    int64_t n, cap;
} buf;

static void push(buf *b, int32_t id, uint8_t mask) {
    if (b->n == b->cap) { // ids pick the capacity; mask, alongside, follows
        b->ids = ag_xgrow(b->ids, &b->cap, b->n + 1, sizeof *b->ids, "prompt tokens");
        b->mask = ag_xrealloc(b->mask, (size_t)b->cap, "prompt tokens");
    }
    b->ids[b->n] = id;
    b->mask[b->n++] = mask;
}

bool ds_prompt_tokenize(const ds_rendered *r, const ds_tokenizer *tok, const ds_media_tokens *mt,
                        const int64_t patches[DS_MEDIA_KINDS], int32_t **ids, uint8_t **mask,
                        int64_t *n, char *err, size_t err_size) {
    const int32_t model_vocab = ds_tokenizer_model_vocab_size(tok);
    buf b = {0};
    for (int i = 0; i < r->n; i++) {
        const ds_piece *pc = &r->pieces[i];
        if (pc->is_media) {
            int k = pc->media;
            push(&b, mt->start[k], 0);
            for (int64_t j = 0; j < patches[k]; j++) push(&b, mt->patch[k], 0);
            push(&b, mt->end[k], 0);
            continue;
        }
        unsigned flags = pc->starts_sequence ? DS_TOK_ADD_BOS : DS_TOK_NO_DUMMY_PREFIX;
        int64_t m;
        int32_t *t = ds_tokenizer_encode_alloc(tok, pc->text, strlen(pc->text), flags, &m);
        for (int64_t j = 0; j < m; j++) {
            if (t[j] >= model_vocab) {
                snprintf(err, err_size, "the text contains the special token %s",
                         ds_tokenizer_id_to_piece(tok, t[j]));
                free(t);
                free(b.ids);
                free(b.mask);
                return false;
            }
            push(&b, t[j], pc->supervised ? 1 : 0);
        }
        free(t);
    }
    *ids = b.ids;
    *n = b.n;
    if (mask)
        *mask = b.mask;
    else
        free(b.mask);
    return true;
}
